// t2cp at its limits: a full flow table and a capture that overflows. What
// it cannot replicate is counted and reported per flow (never hidden), the
// flows it keeps stay byte-exact, and the clients never notice.
import { describe, expect, it } from 'vitest';
import { startBackup, type BackupProcess, type LogRecord } from '../../scripts/backup-process.js';
import { compareReplicas, readLog, runClient, startService, type ClientLogLine, type ServiceLogLine, type Workload } from './harness.js';
import { waitFor } from '../../scripts/wait.js';
import { kernelLeftovers } from './leftovers.js';
import { useLab } from './lab.js';

const PORT = 7000;
const INSTANCE = 'lim';

describe('limits: what cannot be replicated is reported, the rest stays exact', () => {
  const lab = useLab('limits', { perTest: true });

  /** Runs the workload with t2cp started with `args`; `during` acts while the client runs. */
  async function run(workload: Workload, args: string[], during?: (b: BackupProcess) => Promise<void>) {
    const { tb, dir } = lab;
    const primary = await startService(tb, tb.ns.primary, [PORT], `${dir}/primary.jsonl`);
    const replica = await startService(tb, tb.ns.backup, [PORT], `${dir}/backup.jsonl`);
    const backup = await startBackup(tb, { ports: [PORT], instance: INSTANCE, extra: args });
    const client = runClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, workload, `${dir}/client.jsonl`, { deadlineMs: 60_000 });
    if (during) await during(backup);
    const done = await client;
    expect(done.code, done.stderr).toBe(0); // the clients never notice
    const clientLog = readLog<ClientLogLine>(`${dir}/client.jsonl`);
    // Every flow ends up closed (replicated) or unprotected (reported).
    await waitFor(() => backup.flows('closed').length + backup.flows('unprotected').length >= clientLog.length,
      { timeoutMs: 15_000, what: 'every flow closed or reported unprotected' }).catch(() => undefined);
    primary.child.kill('SIGTERM');
    replica.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    expect(backup.child.exitCode).toBeNull(); // alive through all of it
    const counters = await backup.stop();
    expect(backup.child.exitCode).toBe(0);
    const report = compareReplicas(readLog<ServiceLogLine>(`${dir}/primary.jsonl`), readLog<ServiceLogLine>(`${dir}/backup.jsonl`), clientLog);
    expect(report.clientErrors).toEqual([]);
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
    return { backup, counters, report, clientLog };
  }

  /** Each client connection is either replicated byte-exact or reported unprotected for one of `reasons`. */
  function expectExactOrReported(r: Awaited<ReturnType<typeof run>>, reasons: string[]): { exact: number; reported: number } {
    const unprotected = new Map(r.backup.flows('unprotected').map((e: LogRecord) => [String(e.flow).split('->')[0], String(e.reason)]));
    let exact = 0;
    let reported = 0;
    for (const c of r.report.connections) {
      const client = c.key.split('>')[0]!;
      if (unprotected.has(client)) {
        expect(reasons, `${client}: unprotected for ${unprotected.get(client)}`).toContain(unprotected.get(client));
        reported++;
      } else {
        const events = r.backup.records.filter((e) => String(e.flow ?? '').startsWith(`${client}-`)).map((e) => `${e.msg} ${e.reason ?? ''} ${JSON.stringify(e)}`);
        expect(c.onBackup && c.backupRxMatchesPrimary && c.backupTxMatchesPrimary, `${client} (${c.kind}) is neither exact nor reported: ${JSON.stringify(c)} ${events.join('; ')}`).toBe(true);
        exact++;
      }
    }
    return { exact, reported };
  }

  it('a full flow table refuses new flows, counted and reported, and keeps the others exact', async () => {
    const workload: Workload = { seed: 21, sessions: [{ kind: 'rr', times: 30, count: 15, intervalMs: 30, reqSize: [1, 2000], respSize: [1, 9000] }] };
    const r = await run(workload, ['--max-flows', '10']);
    const { exact, reported } = expectExactOrReported(r, ['table-full']);
    expect(reported).toBeGreaterThan(0);
    expect(exact).toBeGreaterThan(0);
    expect(r.counters.flows_refused_max).toBe(reported);
    expect(r.counters.flows_synchronised).toBe(exact);
  }, 90_000);

  it('a capture that overflows (the backup stalls) counts its drops and reports the flows that lost bytes', async () => {
    const workload: Workload = {
      seed: 22,
      sessions: [
        { kind: 'upload', bytes: 40 << 20 },
        { kind: 'rr', times: 10, count: 40, intervalMs: 25, reqSize: [1, 3000], respSize: [1, 9000] },
      ],
    };
    const r = await run(workload, ['--capture-buffer', '1m', '--handshake-timeout', '1000'], async (b) => {
      // Stop t2cp (SIGSTOP, by PID) while traffic flows: the capture queue
      // overflows in the kernel. Then let it run again.
      await waitFor(() => b.flows('synchronised').length >= 5, { timeoutMs: 10_000, what: 'flows synchronised' });
      b.child.kill('SIGSTOP');
      await new Promise((res) => setTimeout(res, 400));
      b.child.kill('SIGCONT');
    });
    expect(r.counters.capture_kernel_drops).toBeGreaterThan(0);
    const { reported } = expectExactOrReported(r, ['gap', 'capture-drop', 'mid-stream', 'handshake-timeout']);
    expect(reported).toBeGreaterThan(0);
  }, 90_000);
});
