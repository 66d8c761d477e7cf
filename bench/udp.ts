// (e) UDP: datagrams per second through the UDP service of the tests
// (scripts/udp-service.ts, request/response, every answer checked by the
// client), unreplicated, replicated by `t2cp backup` alone, and replicated in
// the whole deployment (`t2cp gateway` numbering the datagrams, the backup
// holding each for its record: the order kept, losses resupplied), each as a
// ratio to the unreplicated rate of the same run; how long after the client's
// last answer the replica had every datagram (the replica's lag at the end of
// a burst); t2cp's CPU per million datagrams; whether the replica's state is
// the primary's.
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { startBackup, type BackupProcess } from '../scripts/backup-process.js';
import { collect, pinned, processCpuSeconds, repoRoot, startUdpService as startUdpServiceOn, stopChild, waitForExit } from '../scripts/processes.js';
import { median } from './stats.js';
import { readLog } from '../scripts/replica-check.js';
import { startTakeoverLab, type ServiceStarter } from '../scripts/takeover-lab.js';
import type { Testbed } from '../scripts/testbed.js';
import { waitFor } from '../scripts/wait.js';

const UDP_PORT = 5060;
const ASSOCIATIONS = 16;
const COUNT = Number(process.env.T2CP_BENCH_UDP_COUNT ?? 8000);
/** Both copies' socket receive buffer: the replica, sharing a CPU with t2cp, falls behind for moments. */
const RCVBUF = 4 << 20;

export interface UdpBenchOptions { trials: number; cpus: { primary?: string; backup?: string }; backupArgs: string[] }

type Variant = 'unreplicated' | 'backup' | 'deployment';
interface UdpTrial { perS: number; behindMs: number; asks: number; gatewayCpuPerMillion: number; cpuPerMillion: number; exact: boolean; held: number; socketDrops: number }

async function startUdpService(tb: Testbed, ns: string, log: string, cpus?: string): Promise<ChildProcess> {
  // On the backup it binds the VIP before t2cp makes it local.
  if (ns === tb.ns.backup) await tb.exec(ns, ['sysctl', '-qw', 'net.ipv4.ip_nonlocal_bind=1']);
  return startUdpServiceOn(tb, ns, log, { port: UDP_PORT, ...(cpus ? { cpus } : {}), extra: ['--rcvbuf', String(RCVBUF)] });
}

async function trial(tb: Testbed, dir: string, variant: Variant, o: UdpBenchOptions): Promise<UdpTrial> {
  const d = fs.mkdtempSync(path.join(dir, `udp-${variant}-`));
  const logs = { primary: `${d}/primary.jsonl`, backup: `${d}/backup.jsonl`, client: `${d}/client.jsonl` };
  let backup: BackupProcess | undefined;
  let stopLab: (() => Promise<void>) | undefined;
  let gatewayPid: number | undefined;
  let services: ChildProcess[] = [];
  if (variant === 'deployment') {
    const service: ServiceStarter = async (ns, side, log) => ({ child: await startUdpService(tb, ns, log, o.cpus[side]), log });
    const lab = await startTakeoverLab(tb, d, { ports: [], udpPorts: [UDP_PORT], instance: 'benchudp', intervalMs: 100, hardMisses: 5,
      service, cpus: { ...o.cpus, gateway: o.cpus.primary }, backupArgs: o.backupArgs });
    backup = lab.backup;
    services = [lab.services.primary, lab.services.backup];
    logs.primary = lab.logs.primary;
    logs.backup = lab.logs.backup;
    stopLab = () => lab.stop();
    gatewayPid = lab.gateway?.child.pid;
  } else {
    services.push(await startUdpService(tb, tb.ns.primary, logs.primary, o.cpus.primary));
    if (variant === 'backup') {
      services.push(await startUdpService(tb, tb.ns.backup, logs.backup, o.cpus.backup));
      backup = await startBackup(tb, { ports: [], instance: 'benchudp', logFlows: false, cpus: o.cpus.backup,
        extra: ['--udp-ports', String(UDP_PORT), ...o.backupArgs] });
    }
  }
  try {
    const cpuBefore = backup?.cpuSeconds() ?? 0;
    const gatewayBefore = gatewayPid ? processCpuSeconds(gatewayPid) : 0;
    const client = tb.spawn(tb.ns.client, [...pinned(o.cpus.primary), 'node', `${repoRoot}dist/scripts/udp-client.js`, '--server', `${tb.addr.vip}:${UDP_PORT}`,
      '--associations', String(ASSOCIATIONS), '--count', String(COUNT), '--interval-ms', '0', '--retry-ms', '200', '--deadline-ms', '120000', '--log', logs.client]);
    const out = collect(client);
    const code = await waitForExit(client, 150_000);
    if (code !== 0) throw new Error(`udp bench (${variant}): the client failed: ${out.stdout}${out.stderr}`);
    const summary = JSON.parse(out.stdout.trim().split('\n').pop()!) as { ms: number };
    const endedAt = Date.now();
    const total = ASSOCIATIONS * COUNT;
    let behindMs = 0, asks = 0;
    if (backup) {
      const b = backup;
      await waitFor(async () => (asks++, ((await b.counters()).udp_datagrams ?? 0) >= total), { timeoutMs: 30_000, intervalMs: 5, what: 'the replica to have every datagram' })
        .catch(() => undefined);
      behindMs = Date.now() - endedAt;
    }
    const counters = backup ? await backup.counters() : {};
    const cpu = (backup?.cpuSeconds() ?? 0) - cpuBefore;
    const gatewayCpu = gatewayPid ? processCpuSeconds(gatewayPid) - gatewayBefore : 0;
    await new Promise((r) => setTimeout(r, 200));  // the replica's service reads the last ones off its socket
    for (const s of services) await stopChild(s);
    const byPeer = (f: string) => JSON.stringify(readLog<{ peer: string }>(f).sort((a, b) => a.peer.localeCompare(b.peer)));
    return {
      perS: total / (summary.ms / 1000),
      behindMs,
      asks,
      cpuPerMillion: cpu / (total / 1e6),
      gatewayCpuPerMillion: gatewayCpu / (total / 1e6),
      exact: !backup || byPeer(logs.primary) === byPeer(logs.backup),
      held: counters.udp_verified ?? 0,
      socketDrops: counters.replica_udp_rcvbuf_errors ?? 0,
    };
  } finally {
    for (const s of services) await stopChild(s);
    if (stopLab) await stopLab();
    else await backup?.stop();
  }
}


export async function benchUdp(tb: Testbed, dir: string, o: UdpBenchOptions, line: (name: string, value: number | string, note?: string) => void): Promise<void> {
  const runs: Record<Variant, UdpTrial[]> = { unreplicated: [], backup: [], deployment: [] };
  for (let i = 0; i < o.trials; i++)
    for (const v of ['unreplicated', 'backup', 'deployment'] as const) runs[v].push(await trial(tb, dir, v, o));
  const rate = (v: Variant) => median(runs[v].map((t) => t.perS));
  const list = (v: Variant, k: keyof UdpTrial) => `trials ${runs[v].map((t) => Number(t[k]).toFixed(0)).join(' ')}`;
  const what = `${ASSOCIATIONS} associations x ${COUNT} requests, one at a time, 16-1200 bytes`;
  line('udp_unreplicated_dgram_per_s', rate('unreplicated'), `${list('unreplicated', 'perS')}; ${what}`);
  for (const v of ['backup', 'deployment'] as const) {
    const note = v === 'backup' ? '`t2cp backup` alone: each datagram to the replica as the mirror shows it'
      : 'gateway (on the primary\'s CPU), agent and backup: each datagram held for the recorder\'s record, given in its order';
    line(`udp_${v}_dgram_per_s`, rate(v), `${list(v, 'perS')}; ${note}`);
    line(`udp_${v}_ratio`, rate(v) / rate('unreplicated'));
    line(`udp_${v}_replica_behind_ms`, median(runs[v].map((t) => t.behindMs)),
      `${list(v, 'behindMs')}; the replica had every datagram by then after the client's last answer: asked ${runs[v].map((t) => t.asks).join(' ')} time(s), ` +
      'each ask a signal and a log line of the backup (1 ask: it had them all already, the figure is the ask\'s own time)');
    line(`udp_${v}_t2cp_cpu_s_per_million`, median(runs[v].map((t) => t.cpuPerMillion)), 'CPU seconds of `t2cp backup` while the client ran, busy-poll included');
    line(`udp_${v}_replica_exact`, runs[v].every((t) => t.exact) ? 'yes' : 'NO',
      `every association's request count, chain and answers equal the primary's; the backup host's UDP sockets dropped ${runs[v].map((t) => t.socketDrops).join(' ')}`);
  }
  line('udp_deployment_gateway_cpu_s_per_million', median(runs.deployment.map((t) => t.gatewayCpuPerMillion)),
    '`t2cp gateway` (recorder and detector) while the client ran; on this testbed it shares the client\'s CPU');
  line('udp_deployment_verified', median(runs.deployment.map((t) => t.held)), 'datagrams paired with their record (median per trial)');
}
