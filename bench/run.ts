// `npm run bench`: the replication data path's speed, measured side by side
// with a baseline in the same run on the namespace testbed (these machines
// are shared and noisy, so only ratios within one run mean anything).
//
//   (a) bulk client→server throughput with the backup replicating, as a ratio
//       to the same transfer with replication off; interceptor losses.
//   (b) capture-to-injection latency p50/p99 from the addon's own timestamps.
//   (c) new connections per second with every one synchronised on the
//       backup, as a ratio to the same storm with replication off.
//
// Every trial runs the client (and t2cp) as fresh processes; one figure per
// line. Nothing here is a test assertion.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startBackup, type BackupProcess } from '../scripts/backup-process.js';
import type { Workload } from '../scripts/client.js';
import { runClient, startService } from '../scripts/processes.js';
import { compareReplicas, readLog, type ClientLogLine, type ServiceLogLine } from '../scripts/replica-check.js';
import { createTestbed, type Testbed } from '../scripts/testbed.js';

const MB = 1 << 20;
const PORT = 7000;
const TRIALS = Number(process.env.T2CP_BENCH_TRIALS ?? 3);
const BULK_BYTES = Number(process.env.T2CP_BENCH_BULK_MB ?? 200) * MB;
const STORM_CONNECTIONS = Number(process.env.T2CP_BENCH_CONNECTIONS ?? 12000);
const CLIENT_ADDRS = 8; // spreads the storm over 8 × 28k ephemeral ports
// Two hosts on one machine: the client and the primary on one CPU, the
// backup's service and t2cp on the other (see pinned() in scripts/processes.ts).
const CPUS = os.cpus().length;
const PRIMARY_CPUS = CPUS >= 2 ? '0' : undefined;
const BACKUP_CPUS = CPUS >= 2 ? String(CPUS - 1) : undefined;

interface Trial {
  ms: number;
  sessions: number;
  exact: boolean;
  counters: Record<string, number>;
  /** CPU seconds of the t2cp process (0 without replication). */
  cpu: number;
  latency?: { p50Us: number; p99Us: number; maxUs: number; samples: number };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : NaN;
};
const line = (name: string, value: number | string, note = ''): void => {
  process.stdout.write(`${name.padEnd(40)} ${typeof value === 'number' ? +value.toFixed(3) : value}${note ? '  ' + note : ''}\n`);
};

async function trial(tb: Testbed, dir: string, name: string, workload: Workload, replicate: boolean): Promise<Trial> {
  const d = fs.mkdtempSync(path.join(dir, `${name}-`));
  const primary = await startService(tb, tb.ns.primary, [PORT], `${d}/primary.jsonl`, PRIMARY_CPUS);
  const replica = await startService(tb, tb.ns.backup, [PORT], `${d}/backup.jsonl`, BACKUP_CPUS);
  let backup: BackupProcess | undefined;
  if (replicate) {
    backup = await startBackup(tb, { ports: [PORT], instance: 'bench', logFlows: false, cpus: BACKUP_CPUS,
      extra: ['--max-flows', String(STORM_CONNECTIONS * 2)] });
  }
  const run = await runClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, workload, `${d}/client.jsonl`,
    { deadlineMs: 300_000, local: tb.addr.clients, cpus: PRIMARY_CPUS });
  await new Promise((r) => setTimeout(r, 500)); // the replica finishes the last flows
  primary.child.kill('SIGTERM');
  replica.child.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 300));
  const cpu = backup?.cpuSeconds() ?? 0;
  const counters = backup ? await backup.stop() : {};
  const latencyRec = backup?.records.find((r) => r.msg === 'latency');
  const clientLog = readLog<ClientLogLine>(`${d}/client.jsonl`);
  const report = compareReplicas(readLog<ServiceLogLine>(`${d}/primary.jsonl`), replicate ? readLog<ServiceLogLine>(`${d}/backup.jsonl`) : null, clientLog);
  if (run.code !== 0) throw new Error(`${name}: client failed: ${run.stderr || JSON.stringify(run.summary)}`);
  const summary = run.summary as { ms: number; sessions: number };
  return {
    ms: summary.ms,
    sessions: summary.sessions,
    exact: report.ok,
    counters,
    cpu,
    latency: latencyRec as Trial['latency'],
  };
}

/** Segments the interceptor lost: capture and queue overruns, gaps, buffer overflows. */
const losses = (c: Record<string, number>): number =>
  (c.capture_kernel_drops ?? 0) + (c.gaps ?? 0) + (c.nfqueue_enobufs ?? 0) + (c.flow_buffer_full ?? 0);

/** T2CP_BENCH_ONLY=bulk,latency,conn runs a subset. */
const ONLY = new Set((process.env.T2CP_BENCH_ONLY ?? 'bulk,latency,conn').split(','));

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the benchmark builds network namespaces: run it as root');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 't2cp-bench-'));
  const tb = await createTestbed({ offloads: true, clientAddrs: CLIENT_ADDRS });
  try {
    process.stdout.write(`# t2cp-ar bench: ${TRIALS} trials each, alternating baseline and replicated; ${CPUS} CPUs; ` +
      `client+primary on CPU ${PRIMARY_CPUS ?? 'any'}, backup service+t2cp on CPU ${BACKUP_CPUS ?? 'any'}\n`);
    // (a) bulk client→server
    const lat: Trial['latency'][] = [];
    if (ONLY.has('bulk')) {
    const bulk: Workload = { seed: 1, sessions: [{ kind: 'upload', bytes: BULK_BYTES }] };
    const off: number[] = [], on: number[] = [];
    let lost = 0, exact = true;
    const cpuPerGiB: number[] = [];
    for (let i = 0; i < TRIALS; i++) {
      off.push(BULK_BYTES / MB / ((await trial(tb, dir, `bulk-off-${i}`, bulk, false)).ms / 1000));
      const t = await trial(tb, dir, `bulk-on-${i}`, bulk, true);
      on.push(BULK_BYTES / MB / (t.ms / 1000));
      lost += losses(t.counters);
      cpuPerGiB.push(t.cpu / (BULK_BYTES / (1 << 30)));
      exact &&= t.exact;
      lat.push(t.latency);
    }
    line('bulk_c2s_unreplicated_MBps', median(off), `trials ${off.map((x) => x.toFixed(0)).join(' ')}`);
    line('bulk_c2s_replicated_MBps', median(on), `trials ${on.map((x) => x.toFixed(0)).join(' ')}`);
    line('bulk_c2s_ratio', median(on) / median(off), 'target >= 0.95');
    line('bulk_interceptor_lost', lost, 'target 0');
    line('bulk_t2cp_cpu_s_per_GiB', median(cpuPerGiB), 'CPU of the t2cp process, whole run');
    line('bulk_backup_byte_exact', exact ? 'yes' : 'NO');
    }

    // (b) latency, from paced request/response sessions (small segments, the
    // machine not saturated: on 2 shared CPUs an unpaced load measures the
    // scheduler, not the interceptor) and from the bulk runs (saturated).
    const rr: Workload = { seed: 2, sessions: [{ kind: 'rr', times: 20, count: 300, intervalMs: 5, reqSize: [16, 1400], respSize: [16, 1400] }] };
    const rrLat: Trial['latency'][] = [];
    if (ONLY.has('latency')) {
    for (let i = 0; i < TRIALS; i++) rrLat.push((await trial(tb, dir, `rr-on-${i}`, rr, true)).latency);
    const m = (xs: Trial['latency'][], k: 'p50Us' | 'p99Us') => median(xs.map((x) => x?.[k] ?? NaN));
    line('latency_rr_p50_us', m(rrLat, 'p50Us'), `samples/trial ${rrLat.map((x) => x?.samples).join(' ')}`);
    line('latency_rr_p99_us', m(rrLat, 'p99Us'), 'target <= 50');
    if (lat.length) line('latency_bulk_p50_us', m(lat, 'p50Us'));
    if (lat.length) line('latency_bulk_p99_us', m(lat, 'p99Us'));
    }

    // (c) new-connection storm
    if (ONLY.has('conn')) {
    const storm: Workload = { seed: 3, concurrency: 200, sessions: [{ kind: 'rr', times: STORM_CONNECTIONS, count: 1, reqSize: [4, 16], respSize: [1, 16] }] };
    const cOff: number[] = [], cOn: number[] = [];
    let synced = 0, total = 0, stormExact = true;
    const stormCpu: number[] = [];
    for (let i = 0; i < TRIALS; i++) {
      const a = await trial(tb, dir, `storm-off-${i}`, storm, false);
      cOff.push(a.sessions / (a.ms / 1000));
      const b = await trial(tb, dir, `storm-on-${i}`, storm, true);
      cOn.push(b.sessions / (b.ms / 1000));
      synced += b.counters.flows_synchronised ?? 0;
      stormExact &&= b.exact;
      stormCpu.push((b.cpu / b.sessions) * 1e6);
      total += b.sessions;
    }
    line('conn_rate_unreplicated_per_s', median(cOff), `trials ${cOff.map((x) => x.toFixed(0)).join(' ')}`);
    line('conn_rate_replicated_per_s', median(cOn), `trials ${cOn.map((x) => x.toFixed(0)).join(' ')}`);
    line('conn_rate_ratio', median(cOn) / median(cOff));
    line('conn_synchronised', `${synced}/${total}`, 'target: all');
    line('conn_backup_byte_exact', stormExact ? 'yes' : 'NO');
    line('conn_t2cp_cpu_us_per_connection', median(stormCpu), 'bounds the one-core rate: 1e6 / this');
    }
  } finally {
    await tb.teardown();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
