// Failover as a client sees it, t2cp beside IP-only, measured in one run on
// the namespace testbed (`npm run bench`, T2CP_BENCH_ONLY=failover):
//
//   t2cp     the whole deployment (scripts/takeover-lab.ts): 10 ms heartbeats,
//            3 misses, the primary's link goes down (or its host freezes);
//            idle; 'bulk': a 2000 MB download and a 1000 MB upload at once,
//            running through the failure; 'mixed': those and a second
//            download; 'download': the download alone (its rate before and
//            after the takeover). Each transfer from a client process of its own.
//   ip-only  keepalived (VRRPv3) moves the VIP by itself (bench/ip-only.ts),
//            nothing replicates.
//
// Both are probed by the same client (scripts/echo-client.ts, a process of
// its own, apart from the bulk client's): N connections to an echo service,
// 3/4 of them sending 16 bytes every 10 ms, strictly one at a time (the next
// only once the previous was answered, as a Redis or SSH client waits), every
// reply checked. Client-visible stall, as the echo client times it: per active
// connection, the longest time from sending a request to receiving its whole
// reply, among the requests outstanding within STALL_WINDOW_MS either side of
// the failure. A connection reset, closed or corrupted, or never answered
// after the failure (hung), has no stall (∞) and is counted as such. Under
// load the client shares the CPUs with the transfers, so its figure includes
// its own scheduling delay: what a client program on that host would see.
// Beside it: detection and takeover times from the detector's and the
// backup's records, and the transfers' rates around the failure.
// Every trial on a fresh testbed, every process fresh. Nothing is asserted.
import fs from 'node:fs';
import path from 'node:path';
import type { Workload } from '../scripts/client.js';
import type { NativeTakeoverReport } from '../src/addon.js';
import type { LatencySummary } from '../src/incoming/latency.js';
import { failPrimary } from '../scripts/failures.js';
import { limitCpu, type CpuQuota } from '../scripts/cpu-quota.js';
import { collect, MEASURE_NICE, pinned, repoRoot, startClient, waitForExit } from '../scripts/processes.js';
import { readLog } from '../scripts/replica-check.js';
import { STALL_WINDOW_MS } from '../scripts/reply-times.js';
import { startTakeoverLab } from '../scripts/takeover-lab.js';
import type { Testbed } from '../scripts/testbed.js';
import { GiveUp, waitFor } from '../scripts/wait.js';

export interface FailoverTrial {
  mode: 't2cp';
  failure: 'link-down' | 'freeze';
  load: FailoverOptions['load'];
  detectionMs: number;
  takeoverMs: number;
  /** Per active connection: the longest request->reply time around the failure, ms; ∞ when reset, closed, corrupt or hung. */
  stallMs: number[];
  /** Per active connection: the longest request->reply time in the window before the failure, ms. */
  replyBeforeMs: number[];
  /** Active connections whose longest request was still unanswered at the end (their stall is a lower bound). */
  openStalls: number;
  /** Every connection (active and idle), by its outcome at the client. */
  kept: number;
  reset: number;
  closed: number;
  corrupt: number;
  /** Never answered after the failure, still open when the client stopped. */
  hung: number;
  total: number;
  resuppliedBytes: number;
  bulkOk: boolean | null;
  /** The trial's files: the transfer clients' logs (bulk.jsonl, a line per transfer), the takeover records. */
  dir: string;
  /** When the primary failed (wall ms). */
  failedAtMs: number;
  /** The backup's takeover record, engine part (src/addon.ts NativeTakeoverReport). */
  engine: NativeTakeoverReport;
  /** How far the replicas' output ran behind the primary's before the failure: the echo sessions', the transfers'. */
  replicaLag: { light?: LatencySummary; bulk?: LatencySummary };
  /**
   * Loaded: the transfers' rates as their client moved them, MB/s (download received, upload
   * taken by the socket): in the second before the failure, 0.15-0.55 s after it (the takeover
   * and catching up), 1-2 s after it (served by the backup); t2cp's CPU seconds in those 1-2 s.
   */
  download: { before: number; after: number; later: number; t2cpCpu: number } | null;
  upload: { before: number; after: number; later: number } | null;
}

const ECHO_PORT = 7100;
export const BULK_PORT = 7000;
const loads: Record<Exclude<FailoverOptions['load'], 'idle'>, Workload> = {
  // Both directions at once through the failure: at ~100-150 MB/s each here, the upload too
  // outlasts the 2.5 s lead.
  bulk: { seed: 5, sessions: [{ kind: 'download', bytes: 2000 << 20 }, { kind: 'upload', bytes: 1000 << 20 }] },
  download: { seed: 5, sessions: [{ kind: 'download', bytes: 2000 << 20 }] },
  // Bulk both ways and a second, fast download: the "takeover under load".
  upload: { seed: 5, sessions: [{ kind: 'upload', bytes: 1000 << 20 }] },
  mixed: { seed: 5, sessions: [{ kind: 'download', bytes: 1500 << 20 }, { kind: 'upload', bytes: 1000 << 20 }, { kind: 'download', bytes: 1500 << 20 }] },
};

interface EchoSummary {
  ev: 'summary';
  conns: Array<{ kind: string; outcome: string; longestReplyMs: number | null; longestReplyOpen: boolean; longestReplyBeforeMs: number | null }>;
}


/** Time the bulk transfers run before the failure, ms: past their start-up, at their steady rate. */
const BULK_LEAD_MS = 2500;

/** CPU seconds a process used between two wall-clock times (ms) still ahead. */
async function cpuBetween(cpuSeconds: () => number, fromMs: number, toMs: number): Promise<number> {
  await new Promise((r) => setTimeout(r, Math.max(0, fromMs - Date.now())));
  const a = cpuSeconds();
  await new Promise((r) => setTimeout(r, Math.max(0, toMs - Date.now())));
  return cpuSeconds() - a;
}

/** The transfers' rate in one direction as their clients moved them (--timeline bins, one file each), MB/s, around the failure. */
function transferRates(files: string[], direction: 'rx' | 'tx', failMs: number): { before: number; after: number; later: number } {
  const ts = files.map((f) => JSON.parse(fs.readFileSync(f, 'utf8')) as { binMs: number; startMs: number; rx: number[]; tx: number[] });
  const rate = (from: number, to: number): number =>
    ts.reduce((sum, t) => sum + t[direction].reduce((a, b, i) => {
      const at = t.startMs + i * t.binMs;
      return at >= failMs + from && at < failMs + to ? a + b : a;
    }, 0), 0) / (1 << 20) / ((to - from) / 1000);
  return { before: rate(-1050, -50), after: rate(150, 550), later: rate(1000, 2000) };
}

export interface FailoverOptions {
  dir: string;
  failure: 'link-down' | 'freeze';
  load: 'idle' | 'bulk' | 'download' | 'upload' | 'mixed';
  connections?: number;
  /**
   * Stop the backup's copy of the bulk service (SIGSTOP) this long before the failure and let it
   * go on (SIGCONT) this long after it: its replica falls behind and has to catch up at the takeover.
   */
  pauseReplica?: { beforeFailMs: number; afterFailMs: number };
  /** More options for `t2cp backup`. */
  backupArgs?: string[];
  /**
   * A backup host slower than the primary's: its services (the bulk one and the echo one) get
   * this share of one CPU (a cgroup of their own), t2cp not limited.
   */
  slowBackup?: { cpuPercent: number };
  /** The echo client's request interval, ms (default 10). */
  intervalMs?: number;
  /**
   * Heartbeats the detector misses (10 ms apart) before it takes over (default 3: the 30 ms the
   * bench times). A test that does not time detection gives more: a primary agent sharing a
   * loaded CPU was once silent 30.7 ms and a live primary was taken over.
   */
  hardMisses?: number;
  /**
   * Pin the backup's processes (service, t2cp) to CPUs of their own, as a separate machine would
   * be: everything else (the primary's processes, the gateway's, the clients) runs on `primary`.
   */
  cpus?: { primary?: string; backup?: string };
  /** false: the gateway's traffic recorder off (--record-window 0), to see what it buys. */
  recorder?: boolean;
  /** `t2cp backup --active-mode`: who translates the taken-over flows (default: the kernel). */
  activeMode?: 'kernel' | 'queue';
}

export async function runT2cpFailover(tb: Testbed, o: FailoverOptions): Promise<FailoverTrial> {
  const dir = fs.mkdtempSync(path.join(o.dir, `t2cp-${o.failure}-${o.load}-`));
  const total = o.connections ?? 20;
  const idle = Math.floor(total / 4);
  const pair = await startTakeoverLab(tb, dir, { ports: [BULK_PORT], echoPort: ECHO_PORT, instance: 'bench', intervalMs: 10, hardMisses: o.hardMisses ?? 3,
    gatewayArgs: o.recorder === false ? ['--record-window', '0'] : [], backupArgs: ['--active-mode', o.activeMode ?? 'kernel', ...(o.backupArgs ?? [])],
    cpus: o.cpus && { ...o.cpus, gateway: o.cpus.primary } });
  const clientCpus = o.cpus?.primary;
  const client = tb.spawn(tb.ns.client, [...pinned(clientCpus, clientCpus ? MEASURE_NICE : undefined), 'node', `${repoRoot}dist/scripts/echo-client.js`, '--server', `${tb.addr.vip}:${ECHO_PORT}`,
    '--active', String(total - idle), '--idle', String(idle), '--interval-ms', String(o.intervalMs ?? 10), '--max-unanswered', '1',
    '--window-ms', String(STALL_WINDOW_MS), '--deadline-ms', '60000'],
  { stdio: ['pipe', 'pipe', 'pipe'] });
  const out = collect(client);
  let quota: CpuQuota | undefined;
  const events = (): Array<{ ev: string; [k: string]: unknown }> => out.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { ev: string });
  try {
    if (o.slowBackup) {
      quota = limitCpu(`${tb.prefix}slow-backup`, [pair.services.backup.pid!, pair.services.echo!.backup.pid!], o.slowBackup.cpuPercent);
    }
    await waitFor(() => {
      if (client.exitCode !== null) throw new GiveUp(`echo client exited: ${out.stderr}`);
      return events().some((e) => e.ev === 'established');
    }, { timeoutMs: 20_000, what: 'echo connections established' });
    // One client process per transfer: a process writing an upload does not read its downloads
    // meanwhile (their windows close), and the load would not run.
    const sessions = o.load !== 'idle' ? loads[o.load].sessions : [];
    const timelines = sessions.map((_, i) => `${dir}/bulk-timeline-${i}.json`);
    const clients = sessions.map((session, i) => startClient(tb, tb.ns.client, `${tb.addr.vip}:${BULK_PORT}`,
      { seed: (loads[o.load as keyof typeof loads].seed ?? 0) + i, sessions: [session] }, `${dir}/bulk-${i}.jsonl`,
      { deadlineMs: 60_000, timeline: timelines[i], cpus: clientCpus }));
    const load = clients.length ? Promise.all(clients.map((c) => c.finished)) : undefined;
    // The lead counts from the transfers' connections established: a client slow to start
    // (a loaded machine) would otherwise connect after the failure, to the backup already active.
    if (load) {
      await waitFor(async () => {
        if (clients.some((c) => c.child.exitCode !== null)) throw new GiveUp('a transfer client exited before its connection was established');
        const ss = await tb.exec(tb.ns.client, ['ss', '-Htn', 'state', 'established', `dst ${tb.addr.vip}:${BULK_PORT}`]);
        return ss.stdout.split('\n').filter(Boolean).length >= clients.length;
      }, { timeoutMs: 20_000, intervalMs: 50, what: 'the transfers\' connections established' });
    }
    const lead = load ? BULK_LEAD_MS : 500;
    const pause = o.pauseReplica;
    await new Promise((r) => setTimeout(r, lead - (pause?.beforeFailMs ?? 0)));
    if (pause) {
      pair.services.backup.kill('SIGSTOP');
      await new Promise((r) => setTimeout(r, pause.beforeFailMs));
    }
    const early = pair.takeoverBegun();
    if (early) throw new GiveUp(early);
    const failMs = await failPrimary(tb, o.failure);
    const resumed = pause
      ? new Promise((r) => setTimeout(r, Math.max(0, failMs + pause.afterFailMs - Date.now()))).then(() => pair.services.backup.kill('SIGCONT'))
      : undefined;
    client.stdin!.write(`fail ${failMs}\n`);
    // t2cp's own CPU while it serves the taken-over transfers, 1-2 s after the failure.
    const cpuLater = load ? cpuBetween(pair.backup.cpuSeconds, failMs + 1000, failMs + 2000) : Promise.resolve(NaN);
    const rec = await waitFor(() => readLog<{ takeoverUs: number; engine: NativeTakeoverReport; replicaLag: Record<string, LatencySummary> }>(pair.logs.backupReport)[0], { timeoutMs: 15_000, what: 'the takeover record' });
    client.stdin!.write('probe\n');
    await waitFor(() => events().filter((e) => e.ev === 'resolved').length >= total, { timeoutMs: 10_000, what: 'every connection decided' }).catch(() => undefined);
    // The requests of the whole window after the failure are timed too.
    await new Promise((r) => setTimeout(r, Math.max(0, failMs + STALL_WINDOW_MS - Date.now())));
    client.stdin!.write('stop\n');
    await waitForExit(client, 10_000);
    await resumed;
    const bulkRuns = load ? await load : undefined;
    // Their logs as one file, for the tests (a line per transfer).
    if (bulkRuns) fs.writeFileSync(`${dir}/bulk.jsonl`, sessions.map((_, i) => fs.readFileSync(`${dir}/bulk-${i}.jsonl`, 'utf8')).join(''));
    const summary = events().find((e) => e.ev === 'summary') as EchoSummary | undefined;
    if (!summary) throw new Error(`echo client gave no summary: ${out.stderr}`);
    const gw = await waitFor(() => readLog<{ detectionLatencyUs: number | null; resupplied?: { bytes: number } }>(pair.logs.gatewayReport)[0],
      { timeoutMs: 10_000, what: 'the detector\'s takeover record' });
    const active = summary.conns.filter((c) => c.kind === 'active');
    const count = (outcome: string): number => summary.conns.filter((c) => c.outcome === outcome).length;
    return {
      mode: 't2cp', failure: o.failure, load: o.load,
      detectionMs: (gw?.detectionLatencyUs ?? NaN) / 1000,
      takeoverMs: rec.takeoverUs / 1000,
      stallMs: active.map((c) => (c.outcome === 'kept' ? c.longestReplyMs ?? NaN : Infinity)),
      replyBeforeMs: active.map((c) => c.longestReplyBeforeMs ?? NaN),
      openStalls: active.filter((c) => c.outcome === 'kept' && c.longestReplyOpen).length,
      kept: count('kept'), reset: count('reset'), closed: count('closed'), corrupt: count('corrupt'), hung: count('stalled'),
      total,
      resuppliedBytes: gw?.resupplied?.bytes ?? 0,
      bulkOk: bulkRuns ? bulkRuns.every((r) => r.code === 0) : null,
      dir,
      failedAtMs: failMs,
      engine: rec.engine,
      replicaLag: { light: rec.replicaLag[ECHO_PORT], bulk: rec.replicaLag[BULK_PORT] },
      download: bulkRuns ? { ...transferRates(timelines, 'rx', failMs), t2cpCpu: await cpuLater } : null,
      upload: bulkRuns && o.load === 'bulk' ? transferRates(timelines, 'tx', failMs) : null,
    };
  } finally {
    quota?.release();
    if (o.pauseReplica) pair.services.backup.kill('SIGCONT');
    if (client.exitCode === null) client.kill('SIGTERM');
    await pair.stop();
    // For a look afterwards (T2CP_BENCH_KEEP=1 keeps the files).
    fs.writeFileSync(`${dir}/t2cp-backup.jsonl`, pair.backup.records.map((r) => JSON.stringify(r)).join('\n') + '\n');
  }
}
