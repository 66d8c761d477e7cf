// A dead service is not a dead host: the primary's agent reports its service
// process gone, the detector declares the *service* dead after as many bad
// reports in a row as the hard timeout's misses (the host still answers),
// and the backup takes over. What cannot be kept: the dying process's own
// connections, which the primary's kernel closes (FIN/RST) at once — only
// host and link failures keep connections. New connections go to the backup.
import { describe, expect, it } from 'vitest';
import { FROM_PRIMARY, markPrimaryReplies } from '../../scripts/failures.js';
import { runClient } from '../../scripts/processes.js';
import { startTakeoverLab } from '../../scripts/takeover-lab.js';
import { waitFor } from '../../scripts/wait.js';
import { readLog, readPackets, startCapture } from './harness.js';
import { t2cpTables } from './leftovers.js';
import { useLab } from './lab.js';

const PORT = 7000;

describe('takeover: the primary\'s service dies, its host lives', () => {
  const lab = useLab('tkosvc');

  it('is told from a dead host, and the backup serves the VIP', async () => {
    const { tb, dir } = lab;
    await markPrimaryReplies(tb);
    const pair = await startTakeoverLab(tb, dir, { ports: [PORT], instance: 'tko' });
    const before = await runClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, { seed: 1, sessions: [{ kind: 'rr', times: 2, count: 5 }] }, `${dir}/before.jsonl`);
    expect(before.code, before.stderr).toBe(0);

    pair.services.primary.kill('SIGKILL');
    const record = await waitFor(() => readLog<{ cause: string; outcome: string; reason: string }>(pair.logs.gatewayReport)[0],
      { timeoutMs: 15_000, what: 'the detector\'s takeover record' });
    expect(record.cause).toBe('service');
    expect(record.outcome).toBe('active');

    // After the takeover a new connection to the VIP is served by the backup alone.
    const atClient = await startCapture(tb, tb.ns.client, 'c0', `tcp and src host ${tb.addr.vip}`, `${dir}/after.pcap`);
    const after = await runClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, { seed: 2, sessions: [{ kind: 'rr', times: 3, count: 20, intervalMs: 5 }] }, `${dir}/after.jsonl`);
    await atClient.stop();
    await pair.stop();
    expect(after.code, after.stderr).toBe(0);
    expect(await readPackets(`${dir}/after.pcap`, FROM_PRIMARY)).toEqual([]);
    expect((await readPackets(`${dir}/after.pcap`)).length).toBeGreaterThan(0);
  });
});

describe('takeover: a crash of the detector or the agent leaves nothing behind', () => {
  const lab = useLab('tkocrash');

  it('their fence tables go with them (SIGKILL)', async () => {
    const { tb, dir } = lab;
    const pair = await startTakeoverLab(tb, dir, { ports: [PORT], instance: 'tko' });
    // Prepared at start (tables and empty chains), so a takeover only adds rules.
    expect(await t2cpTables(tb, tb.ns.gateway)).not.toEqual([]);
    expect(await t2cpTables(tb, tb.ns.primary)).not.toEqual([]);
    pair.gateway!.child.kill('SIGKILL');
    pair.agent!.child.kill('SIGKILL');
    await waitFor(async () => (await t2cpTables(tb, tb.ns.gateway)).length === 0 && (await t2cpTables(tb, tb.ns.primary)).length === 0,
      { timeoutMs: 5_000, what: 'the kernel removing the owned tables' });
    await pair.stop();
  });
});
