// A service that is not deterministic (scripts/token-service.ts: a random
// token per connection, requests without it refused). Its replica's first
// line already differs from the primary's: with --divergence strict (the
// default) the comparison of their output finds it as soon as both sent it,
// and the flow is reported `diverged` (where, and both sides' bytes) and its
// copy reset. With the comparison off, the other guard still holds: the
// replica's answers are shorter, causality holds the next request back, the
// idle replica stops short (`replica-stopped`). Either way, at the takeover
// no such flow is counted as taken over: every client gets a reset at once,
// none waits on a connection that cannot continue.
import { describe, expect, it } from 'vitest';
import { collect, repoRoot, waitForExit } from '../../scripts/processes.js';
import { readLog } from '../../scripts/replica-check.js';
import { startTakeoverLab, type TakeoverLab } from '../../scripts/takeover-lab.js';
import { GiveUp, waitFor } from '../../scripts/wait.js';
import type { NativeTakeoverReport } from '../../src/addon.js';
import type { FlowCounts } from '../../src/control/index.js';
import { useLab } from './lab.js';

const PORT = 7000;
const CONNECTIONS = 10;

interface Session { conn: number; outcome: string; requests: number; lastReplyMs: number; error?: string }

const variants = [
  { name: '--divergence strict (default)', backupArgs: [] as string[], reason: 'diverged' },
  { name: '--divergence off', backupArgs: ['--divergence', 'off'], reason: 'replica-stopped' },
];

for (const v of variants) describe(`divergence: a service whose replica answers otherwise, ${v.name}`, () => {
  const lab = useLab('div');

  it(`its flows are reported unprotected (${v.reason}) and reset at the takeover, none hangs`, async () => {
    const { tb, dir } = lab;
    let pair: TakeoverLab | undefined;
    const services: Array<{ kill(sig: NodeJS.Signals): boolean }> = [];
    try {
      pair = await startTakeoverLab(tb, dir, {
        ports: [PORT], instance: 'div', backupArgs: v.backupArgs,
        service: async (ns, side) => {
          const child = tb.spawn(ns, ['node', `${repoRoot}dist/scripts/token-service.js`, '--port', String(PORT)]);
          services.push(child);
          const out = collect(child);
          await waitFor(() => {
            if (child.exitCode !== null) throw new GiveUp(`token service exited ${child.exitCode}: ${out.stderr}`);
            return out.stdout.includes('ready\n');
          }, { timeoutMs: 10_000, what: `token service in ${ns}` });
          return { child, log: `${dir}/token-${side}.log` };
        },
      });
      const client = tb.spawn(tb.ns.client, ['node', `${repoRoot}dist/scripts/token-client.js`, '--to', `${tb.addr.vip}:${PORT}`,
        '--connections', String(CONNECTIONS), '--interval-ms', '20', '--run-ms', '15000', '--reply-timeout-ms', '5000']);
      const out = collect(client);
      // Each replica is caught: its first line differs, or it stops short
      // (5 s without output past the one its client saw).
      const backup = pair.backup;
      await waitFor(() => backup.records.filter((r) => r.msg === 'flow unprotected').length >= CONNECTIONS,
        { timeoutMs: 20_000, what: 'every flow reported unprotected' });
      const unprotected = backup.records.filter((r) => r.msg === 'flow unprotected');
      // The detector hears of them from the backup's heartbeat: said at warning level, and in its status.
      const gw = await waitFor(async () => {
        const st = await pair!.gatewayStatus(['--json']);
        const v = st.code === 0 ? JSON.parse(st.stdout) as { flows?: { unprotected: number }; protection: { why: string } } : undefined;
        return v?.flows?.unprotected === CONNECTIONS && v;
      }, { timeoutMs: 5_000, what: 'the detector counting the unprotected connections' });
      expect(gw.protection.why).toContain(`${CONNECTIONS} open connection(s) it cannot continue`);
      expect(pair.gateway!.records.find((r) => String(r.msg).startsWith('connections unprotected'))).toMatchObject({ level: 'warn' });
      await pair.fail('link-down');
      const record = await waitFor(() => readLog<{ engine: NativeTakeoverReport }>(pair!.logs.backupReport)[0],
        { timeoutMs: 15_000, what: 'the backup\'s takeover record' });
      await waitForExit(client, 20_000);
      const sessions = out.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Session);
      const e = record.engine;
      console.log(`divergence ${v.name}: reasons ${JSON.stringify([...new Set(unprotected.map((r) => r.reason))])}; clients ` +
        `${JSON.stringify(sessions.map((s) => s.outcome))}; record: taken over ${e.flowsTakenOver}, unprotected ${e.flowsUnprotected}, ` +
        `lost ${e.flowsLost}, clients reset ${e.clientsReset}`);

      expect(unprotected.map((r) => r.reason)).toEqual(Array(CONNECTIONS).fill(v.reason));
      if (v.reason === 'diverged') {
        // "token <32 hex digits>\n": the first differing byte is one of the
        // token's, and the log shows both sides' from there.
        const anomalies = backup.records.filter((r) => r.msg === 'flow anomaly' && r.reason === 'diverged');
        expect(anomalies).toHaveLength(CONNECTIONS);
        for (const a of anomalies) {
          expect(a.kind).toBe('bytes');
          expect(a.exact).toBe(true);
          expect(a.offset).toBeGreaterThanOrEqual('token '.length);
          expect(a.offset).toBeLessThan('token '.length + 32);
          expect(String(a.primary)).toMatch(/^[0-9a-f]/);
          expect(String(a.replica)).toMatch(/^[0-9a-f]/);
          expect(a.primary).not.toBe(a.replica);
        }
        // The determinism report, as an operator asks the running backup for it.
        const text = await pair.backupStatus();
        console.log(`divergence: t2cp status says\n${text.stdout}`);
        expect(text.stdout).toContain(`port ${PORT} (strict): 0 identical, ${CONNECTIONS} diverged`);
        const st = await pair.backupStatus(['--json']);
        expect(st.code, st.stderr).toBe(0);
        const flows = (JSON.parse(st.stdout) as { flows: FlowCounts }).flows;
        expect(flows.diverged).toBe(CONNECTIONS);
        expect(flows.comparison[String(PORT)]).toMatchObject({ policy: 'strict', diverged: CONNECTIONS, identical: 0, gaveUp: 0 });
        expect(flows.divergences).toHaveLength(5);
        expect(new Set(flows.divergences.map((d) => d.kind))).toEqual(new Set(['bytes']));
      }
      // From the clients' side: every connection reset by the takeover, none left waiting, none given wrong bytes.
      expect(sessions).toHaveLength(CONNECTIONS);
      expect(sessions.map((s) => s.outcome)).toEqual(Array(CONNECTIONS).fill('reset'));
      // The record: nothing taken over, every client reset.
      expect(e.flowsTakenOver).toBe(0);
      expect(e.flowsUnprotected).toBe(CONNECTIONS);
      expect(e.clientsReset).toBe(CONNECTIONS);
    } finally {
      await pair?.stop();
      for (const s of services) s.kill('SIGTERM');
    }
  });
});
