// Failover as a client sees it, t2cp beside IP-only, measured in one run on
// the namespace testbed (`npm run bench`, T2CP_BENCH_ONLY=failover):
//
//   t2cp     the whole deployment (scripts/takeover-lab.ts): 10 ms heartbeats,
//            3 misses, the primary's link goes down (or its host freezes);
//            idle, with bulk transfers both ways running meanwhile, or with
//            one download alone (its rate before and after the takeover).
//   ip-only  keepalived (VRRPv3) moves the VIP by itself (bench/ip-only.ts),
//            nothing replicates.
//
// Both are probed by the same client (scripts/echo-client.ts): N connections
// to an echo service, 3/4 of them sending 16 bytes every 10 ms, strictly one
// at a time (the next only once the previous was answered, as a Redis or SSH
// client waits), every reply checked. Client-visible stall = last reply before the failure to the first
// after, per active connection; a reset connection is not kept (stall ∞).
// For t2cp it is read off a capture at the client (kernel timestamps): under
// bulk load the client process reads replies late, which would blur it.
// Every trial on a fresh testbed, every process fresh. Nothing is asserted.
import fs from 'node:fs';
import path from 'node:path';
import type { Workload } from '../scripts/client.js';
import { failPrimary } from '../scripts/failures.js';
import { silencesAround, startCapture } from '../scripts/capture.js';
import { collect, repoRoot, startClient, waitForExit } from '../scripts/processes.js';
import { readLog } from '../scripts/replica-check.js';
import { startTakeoverLab } from '../scripts/takeover-lab.js';
import type { Testbed } from '../scripts/testbed.js';
import { GiveUp, waitFor } from '../scripts/wait.js';

export interface FailoverTrial {
  mode: 't2cp';
  failure: 'link-down' | 'freeze';
  load: 'idle' | 'bulk' | 'download';
  detectionMs: number;
  takeoverMs: number;
  stallMs: number[];
  kept: number;
  total: number;
  resuppliedBytes: number;
  bulkOk: boolean | null;
  /**
   * Bulk load: the download's rate as the client received it, MB/s: in the second before the
   * failure, 0.15-0.55 s after it (the takeover and catching up), 1-2 s after it (served by the backup).
   */
  download: { before: number; after: number; later: number; t2cpCpu: number } | null;
}

const ECHO_PORT = 7100;
const BULK_PORT = 7000;
const loads: Record<'bulk' | 'download', Workload> = {
  bulk: { seed: 5, sessions: [{ kind: 'download', bytes: 2000 << 20 }, { kind: 'upload', bytes: 400 << 20 }] },
  download: { seed: 5, sessions: [{ kind: 'download', bytes: 2000 << 20 }] },
};

interface EchoSummary { ev: 'summary'; conns: Array<{ kind: string; outcome: string; stallMs: number | null; lastBeforeMs: number | null }> }

/** Time the bulk transfers run before the failure, ms: past their start-up, at their steady rate. */
const BULK_LEAD_MS = 2500;

/** CPU seconds a process used between two wall-clock times (ms) still ahead. */
async function cpuBetween(cpuSeconds: () => number, fromMs: number, toMs: number): Promise<number> {
  await new Promise((r) => setTimeout(r, Math.max(0, fromMs - Date.now())));
  const a = cpuSeconds();
  await new Promise((r) => setTimeout(r, Math.max(0, toMs - Date.now())));
  return cpuSeconds() - a;
}

/** The download's rate as the client received it (--timeline bins), MB/s, around the failure. */
function downloadRates(file: string, failMs: number): { before: number; after: number; later: number } {
  const t = JSON.parse(fs.readFileSync(file, 'utf8')) as { binMs: number; startMs: number; rx: number[] };
  const rate = (from: number, to: number): number =>
    t.rx.reduce((a, b, i) => { const at = t.startMs + i * t.binMs; return at >= failMs + from && at < failMs + to ? a + b : a; }, 0) /
    (1 << 20) / ((to - from) / 1000);
  return { before: rate(-1050, -50), after: rate(150, 550), later: rate(1000, 2000) };
}

export interface FailoverOptions {
  dir: string;
  failure: 'link-down' | 'freeze';
  load: 'idle' | 'bulk' | 'download';
  connections?: number;
  /** false: the gateway's traffic recorder off (--record-window 0), to see what it buys. */
  recorder?: boolean;
  /** `t2cp backup --active-mode`: who translates the taken-over flows (default: the kernel). */
  activeMode?: 'kernel' | 'queue';
}

export async function runT2cpFailover(tb: Testbed, o: FailoverOptions): Promise<FailoverTrial> {
  const dir = fs.mkdtempSync(path.join(o.dir, `t2cp-${o.failure}-${o.load}-`));
  const total = o.connections ?? 20;
  const idle = Math.floor(total / 4);
  const pair = await startTakeoverLab(tb, dir, { ports: [BULK_PORT], echoPort: ECHO_PORT, instance: 'bench', intervalMs: 10, hardMisses: 3,
    gatewayArgs: o.recorder === false ? ['--record-window', '0'] : [], backupArgs: ['--active-mode', o.activeMode ?? 'kernel'] });
  const client = tb.spawn(tb.ns.client, ['node', `${repoRoot}dist/scripts/echo-client.js`, '--server', `${tb.addr.vip}:${ECHO_PORT}`,
    '--active', String(total - idle), '--idle', String(idle), '--interval-ms', '10', '--max-unanswered', '1', '--deadline-ms', '60000'],
  { stdio: ['pipe', 'pipe', 'pipe'] });
  const out = collect(client);
  const cap = await startCapture(tb, tb.ns.client, 'c0', `tcp and src host ${tb.addr.vip} and src port ${ECHO_PORT}`, `${dir}/echo.pcap`);
  let failedAt = 0;
  const events = (): Array<{ ev: string; [k: string]: unknown }> => out.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { ev: string });
  try {
    await waitFor(() => {
      if (client.exitCode !== null) throw new GiveUp(`echo client exited: ${out.stderr}`);
      return events().some((e) => e.ev === 'established');
    }, { timeoutMs: 20_000, what: 'echo connections established' });
    const load = o.load !== 'idle'
      ? startClient(tb, tb.ns.client, `${tb.addr.vip}:${BULK_PORT}`, loads[o.load], `${dir}/bulk.jsonl`, { deadlineMs: 60_000, timeline: `${dir}/bulk-timeline.json` })
      : undefined;
    await new Promise((r) => setTimeout(r, load ? BULK_LEAD_MS : 500));
    const failMs = await failPrimary(tb, o.failure);
    failedAt = failMs;
    client.stdin!.write(`fail ${failMs}\n`);
    // t2cp's own CPU while it serves the taken-over transfers, 1-2 s after the failure.
    const cpuLater = load ? cpuBetween(pair.backup.cpuSeconds, failMs + 1000, failMs + 2000) : Promise.resolve(NaN);
    const rec = await waitFor(() => readLog<{ takeoverUs: number }>(pair.logs.backupReport)[0], { timeoutMs: 15_000, what: 'the takeover record' });
    client.stdin!.write('probe\n');
    await waitFor(() => events().filter((e) => e.ev === 'resolved').length >= total, { timeoutMs: 10_000, what: 'every connection decided' }).catch(() => undefined);
    client.stdin!.write('stop\n');
    await waitForExit(client, 10_000);
    const bulkRun = load ? await load.finished : undefined;
    await cap.stop();
    const summary = events().find((e) => e.ev === 'summary') as EchoSummary | undefined;
    if (!summary) throw new Error(`echo client gave no summary: ${out.stderr}`);
    const gw = await waitFor(() => readLog<{ detectionLatencyUs: number | null; resupplied?: { bytes: number } }>(pair.logs.gatewayReport)[0],
      { timeoutMs: 10_000, what: 'the detector\'s takeover record' });
    const active = summary.conns.filter((c) => c.kind === 'active');
    return {
      mode: 't2cp', failure: o.failure, load: o.load,
      detectionMs: (gw?.detectionLatencyUs ?? NaN) / 1000,
      takeoverMs: rec.takeoverUs / 1000,
      stallMs: active.some((c) => c.outcome !== 'kept') ? active.map((c) => (c.outcome === 'kept' ? 0 : Infinity)).map((x) => x || NaN)
        : await silencesAround(`${dir}/echo.pcap`, failedAt),
      kept: summary.conns.filter((c) => c.outcome === 'kept').length,
      total,
      resuppliedBytes: gw?.resupplied?.bytes ?? 0,
      bulkOk: bulkRun ? bulkRun.code === 0 : null,
      download: bulkRun ? { ...downloadRates(`${dir}/bulk-timeline.json`, failedAt), t2cpCpu: await cpuLater } : null,
    };
  } finally {
    if (client.exitCode === null) client.kill('SIGTERM');
    await pair.stop();
  }
}
