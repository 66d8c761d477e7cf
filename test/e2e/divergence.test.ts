// A service that is not deterministic (scripts/token-service.ts: a random
// token per connection, requests without it refused). Its replica answers
// every request differently from the primary, and shorter: what its client
// had received when it sent the next request is more than the replica ever
// sends. Causality holds that request back; the replica, idle, stops short;
// the flow is reported unprotected (`replica-stopped`) and its copy reset.
// At the takeover no such flow is counted as taken over: every client gets a
// reset at once, none waits on a connection that cannot continue.
import { describe, expect, it } from 'vitest';
import { collect, repoRoot, waitForExit } from '../../scripts/processes.js';
import { readLog } from '../../scripts/replica-check.js';
import { startTakeoverLab, type TakeoverLab } from '../../scripts/takeover-lab.js';
import { GiveUp, waitFor } from '../../scripts/wait.js';
import type { NativeTakeoverReport } from '../../src/addon.js';
import { useLab } from './lab.js';

const PORT = 7000;
const CONNECTIONS = 10;

interface Session { conn: number; outcome: string; requests: number; lastReplyMs: number; error?: string }

describe('divergence: a service whose replica answers otherwise', () => {
  const lab = useLab('div');

  it('its flows are reported unprotected (replica-stopped) and reset at the takeover, none hangs', async () => {
    const { tb, dir } = lab;
    let pair: TakeoverLab | undefined;
    const services: Array<{ kill(sig: NodeJS.Signals): boolean }> = [];
    try {
      pair = await startTakeoverLab(tb, dir, {
        ports: [PORT], instance: 'div',
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
      // Each replica is caught stopping short (5 s without output past the one its client saw).
      const backup = pair.backup;
      await waitFor(() => backup.records.filter((r) => r.msg === 'flow unprotected').length >= CONNECTIONS,
        { timeoutMs: 20_000, what: 'every flow reported unprotected' });
      const unprotected = backup.records.filter((r) => r.msg === 'flow unprotected');
      await pair.fail('link-down');
      const record = await waitFor(() => readLog<{ engine: NativeTakeoverReport }>(pair!.logs.backupReport)[0],
        { timeoutMs: 15_000, what: 'the backup\'s takeover record' });
      await waitForExit(client, 20_000);
      const sessions = out.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Session);
      const e = record.engine;
      console.log(`divergence: reasons ${JSON.stringify([...new Set(unprotected.map((r) => r.reason))])}; clients ` +
        `${JSON.stringify(sessions.map((s) => s.outcome))}; record: taken over ${e.flowsTakenOver}, unprotected ${e.flowsUnprotected}, ` +
        `lost ${e.flowsLost}, clients reset ${e.clientsReset}`);

      expect(unprotected.map((r) => r.reason)).toEqual(Array(CONNECTIONS).fill('replica-stopped'));
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
