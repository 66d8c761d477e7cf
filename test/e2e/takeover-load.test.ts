// Takeover under load (issue "protection under load"): interactive sessions
// (16 bytes every 5 ms, one at a time, checked), bulk both ways and a second
// fast download at once, the primary's and the backup's processes each on a
// CPU of their own; the primary's link goes down and the detector decides.
// From the client's side: every interactive session is answered after the
// takeover (none reset, none left waiting); each bulk transfer finishes
// byte-exact or is reset (never hangs); and the takeover record tells the
// truth: the flows it counts as taken over are exactly those that carried on,
// the flows it counts as lost exactly those whose clients were reset.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BULK_PORT, runT2cpFailover, type FailoverTrial } from '../../bench/failover.js';
import type { LatencySummary } from '../../src/incoming/latency.js';
import type { ClientLogLine } from './harness.js';
import { useLab } from './lab.js';

const CONNECTIONS = 20;
/** Not a test of detection speed: 10 ms heartbeats, 100 ms before a takeover (the bench: 30 ms). */
const HARD_MISSES = 10;

/** The transfer clients' logs of a trial, a line per transfer. */
const transfers = (trial: { dir: string }): ClientLogLine[] =>
  fs.readFileSync(`${trial.dir}/bulk.jsonl`, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as ClientLogLine);

const lagText = (l: LatencySummary | undefined): string => (l ? `${l.p50Us / 1000}/${l.p99Us / 1000}/${(l.maxUs / 1000).toFixed(1)}` : '-');

describe('takeover under load', () => {
  const lab = useLab('tkl', { perTest: true });
  /** An upload and ten interactive sessions through a link-down failure, the upload's replica paused around it. */
  const pausedUpload = (pauseReplica: { beforeFailMs: number; afterFailMs: number }, backupArgs?: string[]) =>
    runT2cpFailover(lab.tb, { dir: lab.dir, failure: 'link-down', load: 'upload', connections: 10, intervalMs: 5, pauseReplica, backupArgs, hardMisses: HARD_MISSES });

  it('light sessions carry on, bulk flows carry on or are reset, and the record says which', async () => {
    const { tb, dir } = lab;
    const trial = await runT2cpFailover(tb, {
      dir, failure: 'link-down', load: 'mixed', connections: CONNECTIONS, intervalMs: 5, cpus: { primary: '0', backup: '1' }, hardMisses: HARD_MISSES,
    });
    const bulk = transfers(trial);
    const e = trial.engine;
    // A transfer its client finished before the failure was closed, not taken over (a fast machine
    // may move a download within the lead); one connected after it never met the primary: the
    // record counts those that were open at the failure.
    const notOpen = bulk.filter((b) => (b.ok && (b.endAtMs ?? Infinity) < trial.failedAtMs) || (b.connectedAtMs ?? -Infinity) > trial.failedAtMs);
    const stalls = trial.stallMs.slice().sort((a, b) => a - b);
    console.log(`takeover under load: interactive stall (client-timed) median ${stalls[stalls.length >> 1]} ms, max ${stalls[stalls.length - 1]} ms; ` +
      `kept ${trial.kept}/${trial.total}; bulk ${bulk.map((b) => `${b.kind} ${b.ok ? 'exact' : b.error} connected ${(b.connectedAtMs ?? NaN) - trial.failedAtMs} ms and ending ${(b.endAtMs ?? NaN) - trial.failedAtMs} ms after the failure`).join(', ')}; ` +
      `record: taken over ${e.flowsTakenOver} (caught up ${e.flowsCaughtUp}, catching up at step 5 ${e.flowsCatchingUp}), lost ${e.flowsLost}, ` +
      `clients reset ${e.clientsReset}, steps ${e.steps.map((s) => `${s.name} ${s.us ?? '?'} µs`).join(', ')}; ` +
      `replica lag before the failure (p50/p99/max ms): light ${lagText(trial.replicaLag.light)}, bulk ${lagText(trial.replicaLag.bulk)}`);

    // Every interactive session answered after the takeover: none reset, closed, corrupt or waiting.
    expect({ reset: trial.reset, closed: trial.closed, corrupt: trial.corrupt, hung: trial.hung }).toEqual({ reset: 0, closed: 0, corrupt: 0, hung: 0 });
    expect(trial.kept).toBe(CONNECTIONS);
    // Each bulk transfer: byte-exact to its end, or reset (never a hang past the client's deadline, never wrong bytes).
    expect(bulk).toHaveLength(3);
    const bulkReset = bulk.filter((b) => !b.ok);
    for (const b of bulkReset) expect(b.error).toMatch(/ECONNRESET|reset/i);
    // The record: of the flows open at the failure, taken over = what carried on at the client,
    // lost = what was reset there.
    const open = bulk.filter((b) => !notOpen.includes(b));
    expect(e.flowsTakenOver, JSON.stringify(e)).toBe(CONNECTIONS + open.filter((b) => b.ok).length);
    expect(e.flowsLost).toBe(open.filter((b) => !b.ok).length);
    expect(e.clientsReset).toBeGreaterThanOrEqual(bulkReset.length);
    expect(e.flowsUnprotected).toBe(0);
    // The record says how far the sessions' replicas ran behind: each active session's replies
    // before the failure, the replica's timed against the primary's (at least one each).
    expect(trial.replicaLag.light?.samples).toBeGreaterThanOrEqual(CONNECTIONS * 3 / 4);
  });

  it('a replica behind at the failure catches up in the background while light sessions carry on', async () => {
    // Paused long enough that its kernel's receive buffer (up to 6 MiB) cannot hold what the
    // upload sends meanwhile, however fast it runs: the replica is behind at the failure.
    const trial = await pausedUpload({ beforeFailMs: 1000, afterFailMs: 300 });
    const bulk = transfers(trial);
    const e = trial.engine;
    console.log(`catch-up: interactive stall median ${trial.stallMs.slice().sort((a, b) => a - b)[trial.stallMs.length >> 1]} ms; ` +
      `upload ${bulk[0]?.ok ? 'exact' : bulk[0]?.error}; record: taken over ${e.flowsTakenOver}, caught up ${e.flowsCaughtUp}, ` +
      `catching up at step 5 ${e.flowsCatchingUp}, lost ${e.flowsLost}; steps ${e.steps.map((s) => `${s.name} ${s.us ?? '?'} µs`).join(', ')}`);
    expect(trial.kept).toBe(10);
    expect(bulk.map((b) => b.ok)).toEqual([true]);
    // The paused upload's replica catches up; so may light ones whose replica was a request or two
    // behind (causality: each request waits for the replica's answer to the one before).
    expect(e.flowsCatchingUp).toBeGreaterThanOrEqual(1);
    expect(e.flowsCaughtUp).toBe(e.flowsCatchingUp);
    expect(e.flowsTakenOver).toBe(11);
    expect(e.flowsLost).toBe(0);
  });

  it('a replica that cannot catch up in time is reset, and so is its client, at once', async () => {
    const trial = await pausedUpload({ beforeFailMs: 400, afterFailMs: 4000 }, ['--finish-timeout', '600']);
    const bulk = transfers(trial);
    const e = trial.engine;
    console.log(`reset: upload ${bulk[0]?.ok ? 'exact' : bulk[0]?.error} after ${bulk[0]?.ms} ms; record: taken over ${e.flowsTakenOver}, ` +
      `lost ${e.flowsLost}, clients reset ${e.clientsReset}`);
    expect(trial.kept).toBe(10);
    expect(bulk).toHaveLength(1);
    expect(bulk[0].ok).toBe(false);
    expect(bulk[0].error).toMatch(/ECONNRESET|reset/i);
    expect(e.flowsTakenOver).toBe(10);
    expect(e.flowsLost).toBe(1);
    expect(e.clientsReset).toBeGreaterThanOrEqual(1);
  });

  // The upload given up before the failure, for one of `reasons`, and only it: the interactive
  // sessions stay protected and carry on; the upload's client is reset at the takeover rather
  // than left waiting on a connection nobody can continue. `minLagMs`: how far behind it was, at least.
  const expectUploadGivenUp = (trial: FailoverTrial, what: string, reasons: string[], minLagMs?: number): void => {
    const bulk = transfers(trial);
    const log = fs.readFileSync(`${trial.dir}/t2cp-backup.jsonl`, 'utf8').split('\n').filter(Boolean)
      .map((l) => JSON.parse(l) as { msg: string; reason?: string; lagMs?: number; flow?: string });
    const given = log.filter((r) => r.msg === 'flow anomaly' && reasons.includes(r.reason ?? ''));
    const anomalies = log.filter((r) => r.msg === 'flow anomaly').map((r) => `${r.flow} ${r.reason}`);
    const e = trial.engine;
    console.log(`${what}: upload ${bulk[0]?.ok ? 'exact' : bulk[0]?.error} after ${bulk[0]?.ms} ms; ` +
      `given up ${given.map((r) => `${r.flow} ${r.reason}${r.lagMs !== undefined ? ` ${r.lagMs} ms behind` : ''}`).join(', ')}; ` +
      `anomalies ${JSON.stringify(anomalies)}; ` +
      `record: taken over ${e.flowsTakenOver}, unprotected ${e.flowsUnprotected}, lost ${e.flowsLost}, clients reset ${e.clientsReset}; ` +
      `sessions' replica lag (p50/p99/max ms) ${lagText(trial.replicaLag.light)}`);
    expect(given.map((r) => r.flow?.endsWith(`->:${BULK_PORT}`))).toEqual([true]);
    // Given up once past the mark; the event says how far in whole ms, truncated (500.4 ms: 500).
    if (minLagMs !== undefined) expect(given[0]!.lagMs).toBeGreaterThanOrEqual(minLagMs);
    expect(trial.kept).toBe(10);
    expect({ reset: trial.reset, closed: trial.closed, corrupt: trial.corrupt, hung: trial.hung }).toEqual({ reset: 0, closed: 0, corrupt: 0, hung: 0 });
    expect(bulk).toHaveLength(1);
    expect(bulk[0]!.ok).toBe(false);
    expect(bulk[0]!.error).toMatch(/ECONNRESET|reset/i);
    expect(e.flowsUnprotected).toBe(1);
    expect(e.flowsTakenOver).toBe(10);
    expect(e.flowsLost).toBe(0);
    expect(e.clientsReset).toBeGreaterThanOrEqual(1);
  };

  it('a replica that falls more than --max-lag behind is given up before the failure, the others stay protected', async () => {
    const trial = await pausedUpload({ beforeFailMs: 1500, afterFailMs: 300 }, ['--max-lag', '500']);
    expectUploadGivenUp(trial, 'max-lag, the upload\'s replica stopped', ['replica-behind'], 500);
  });

  it('a backup slower than the primary gives up the flow that costs most, the interactive ones stay protected', async () => {
    // The backup's services get a tenth of one CPU: the upload's replica falls behind, the
    // sessions' replicas share what is left with it until it is given up.
    const trial = await runT2cpFailover(lab.tb, {
      dir: lab.dir, failure: 'link-down', load: 'upload', connections: 10, intervalMs: 20,
      slowBackup: { cpuPercent: 10 }, backupArgs: ['--max-lag', '1000'], hardMisses: HARD_MISSES,
    });
    expectUploadGivenUp(trial, 'max-lag, a slow backup', ['replica-behind'], 1000);
  });

  it('at --memory the flow holding the most is given up, the interactive ones stay protected', async () => {
    // The replica paused: the upload's bytes pile up in t2cp past its replica's receive buffer,
    // the sessions' few requests too, until all of them reach --memory (lag far off). The upload,
    // holding the most, goes: `shed` when a session's bytes did not fit, `buffer-full` when its own.
    const trial = await pausedUpload({ beforeFailMs: 1500, afterFailMs: 300 }, ['--memory', '16m', '--max-lag', '30000']);
    expectUploadGivenUp(trial, 'memory, the replica paused', ['shed', 'buffer-full']);
  });
});
