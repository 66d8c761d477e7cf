// ICMP that concerns the service. Echo requests to the VIP are answered by
// the primary alone, then by the backup alone once it took over. And the
// path to the clients is narrower
// than the servers' links (the gateway's client side at MTU 1400): the
// primary's full-size segments meet "fragmentation needed" at the gateway,
// and its TCP lowers its path MTU. The replica learns it at the same time,
// from those errors on the mirror (given to it in its own numbers), so its
// segments fit the path from the first after a takeover. Were one to meet an
// error still, it quotes the segment as the client would see it: in the
// primary's numbers. The backup must learn from those too.
import { describe, expect, it } from 'vitest';
import { FROM_PRIMARY, markPrimaryReplies } from '../../scripts/failures.js';
import { startClient } from '../../scripts/processes.js';
import { compareTakeover } from '../../scripts/takeover-check.js';
import { startTakeoverLab } from '../../scripts/takeover-lab.js';
import { waitFor } from '../../scripts/wait.js';
import type { Workload } from '../../scripts/client.js';
import { readPackets, startCapture, readLog, type ClientLogLine, type ServiceLogLine } from './harness.js';
import { kernelLeftovers } from './leftovers.js';
import { useLab } from './lab.js';

const INSTANCE = 'icmp';
const PORT = 7000;

const workload: Workload = {
  seed: 31,
  sessions: [
    { kind: 'download', times: 2, bytes: 60 << 20 },
    { kind: 'rr', times: 2, count: 500, intervalMs: 10, reqSize: [4, 600], respSize: [2000, 8000] },
  ],
};
const SESSIONS = 4;

// The path narrows while the backup replicates (the replica must learn it then), or once it
// took over (its translator gives it the errors about the primary's numbers).
const mtuCases = [
  { translator: 'kernel', narrowed: 'while replicating' },
  { translator: 'kernel', narrowed: 'after the takeover' },
  { translator: 'queue', narrowed: 'after the takeover' },
] as const;

for (const c of mtuCases) describe(`icmp: a path MTU below the servers' ${c.narrowed}, the ${c.translator} translating`, () => {
  const lab = useLab('icmp');

  it('every session carries on byte-exact: the backup learns the path MTU from the errors', async () => {
    const { tb, dir } = lab;
    const narrow = () => tb.exec(tb.ns.gateway, ['ip', 'link', 'set', 'gc', 'mtu', '1400']);
    if (c.narrowed === 'while replicating') await narrow();
    const pair = await startTakeoverLab(tb, dir, { ports: [PORT], instance: INSTANCE, backupArgs: ['--active-mode', c.translator] });
    try {
      const client = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, workload, `${dir}/client.jsonl`, { deadlineMs: 60_000 });
      await waitFor(() => pair.backup.flows('synchronised').length >= SESSIONS, { timeoutMs: 15_000, what: 'every session replicated' });
      await new Promise((r) => setTimeout(r, 1000));
      if (c.narrowed === 'while replicating') {
        // The replica's path to the client is the primary's: learnt from the errors the primary got.
        const learnt = await tb.exec(tb.ns.backup, ['ip', 'route', 'get', tb.addr.clients[0]!]);
        const replicating = await pair.backup.counters();
        console.log(`icmp (${c.translator}, ${c.narrowed}): before the failure, the backup's route: ${learnt.stdout.replace(/\s+/g, ' ').trim()}; ` +
          `injected ${replicating.icmp_errors_injected ?? 0}, ignored ${replicating.icmp_errors_ignored ?? 0}`);
        expect(learnt.stdout).toMatch(/mtu 1400/);
        expect(replicating.icmp_errors_injected ?? 0).toBeGreaterThan(0);
      }
      await pair.fail('link-down');
      const record = await waitFor(() => readLog<{ engine: { flowsTakenOver: number; translator: string } }>(pair.logs.backupReport)[0], { timeoutMs: 15_000, what: 'the takeover' });
      if (c.narrowed === 'after the takeover') await narrow();
      const run = await client.finished;
      const check = compareTakeover(readLog<ClientLogLine>(`${dir}/client.jsonl`), readLog<ServiceLogLine>(pair.logs.backup));
      const counters = await pair.backup.counters();
      console.log(`icmp (${c.translator}, ${c.narrowed}): exact ${check.exact}/${SESSIONS}, taken over ${record.engine.flowsTakenOver}; client ${JSON.stringify(run.summary)}; ` +
        `icmp counters ${JSON.stringify(Object.fromEntries(Object.entries(counters).filter(([k]) => k.includes('icmp'))))}`);
      expect(record.engine.translator).toBe(c.translator);
      expect(run.code, run.stderr).toBe(0);
      expect(check.mismatches).toEqual([]);
      expect(check.exact).toBe(SESSIONS);
      // Narrowed after the takeover: the gateway's errors reached the new owner in its own numbers.
      if (c.narrowed === 'after the takeover') expect(counters.active_icmp_translated).toBeGreaterThan(0);
    } finally {
      await pair.stop();
    }
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

// A client that clears DF (net.ipv4.ip_no_pmtu_disc) behind a link narrower than the servers
// advertise (the gateway's server side at MTU 1000, the servers' routes to the clients at 1000
// with an advertised MSS of 1460): its segments reach the primary in fragments, which the
// primary's kernel makes whole. The backup must make them whole too, and carry the sessions
// through a takeover, under either translator.
const uploads: Workload = {
  seed: 37,
  sessions: [
    { kind: 'upload', times: 2, bytes: 8 << 20 },
    { kind: 'rr', times: 2, count: 300, intervalMs: 10, reqSize: [1200, 6000], respSize: [2, 600] },
  ],
};

for (const translator of ['kernel', 'queue'] as const) describe(`icmp: a client's segments in fragments, the ${translator} translating`, () => {
  const lab = useLab('tcpfrag');

  it('every session is replicated from the fragments and carries on byte-exact', async () => {
    const { tb, dir } = lab;
    await tb.exec(tb.ns.client, ['sysctl', '-qw', 'net.ipv4.ip_no_pmtu_disc=1']);
    await tb.exec(tb.ns.gateway, ['ip', 'link', 'set', 'gs', 'mtu', '1000']);
    for (const ns of [tb.ns.primary, tb.ns.backup])
      await tb.exec(ns, ['ip', 'route', 'replace', 'default', 'via', tb.addr.gatewayLan, 'mtu', '1000', 'advmss', '1460']);
    const pair = await startTakeoverLab(tb, dir, { ports: [PORT], instance: INSTANCE, backupArgs: ['--active-mode', translator] });
    try {
      const client = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, uploads, `${dir}/client.jsonl`, { deadlineMs: 60_000 });
      await waitFor(() => pair.backup.flows('synchronised').length >= SESSIONS, { timeoutMs: 15_000, what: 'every session replicated' });
      await waitFor(async () => ((await pair.backup.counters()).tcp_reassembled ?? 0) > 100, { timeoutMs: 15_000, what: 'segments made whole from fragments' });
      await pair.fail('link-down');
      const record = await waitFor(() => readLog<{ engine: { flowsTakenOver: number; translator: string } }>(pair.logs.backupReport)[0], { timeoutMs: 15_000, what: 'the takeover' });
      const run = await client.finished;
      const check = compareTakeover(readLog<ClientLogLine>(`${dir}/client.jsonl`), readLog<ServiceLogLine>(pair.logs.backup));
      const counters = await pair.backup.counters();
      console.log(`tcp fragments (${translator}): exact ${check.exact}/${SESSIONS}, taken over ${record.engine.flowsTakenOver}; client ${JSON.stringify(run.summary)}; ` +
        `fragments ${counters.tcp_fragments ?? 0}, made whole ${counters.tcp_reassembled ?? 0}, failed ${counters.tcp_reassembly_failed ?? 0}, ` +
        `parse ${JSON.stringify(Object.fromEntries(Object.entries(counters).filter(([k]) => k.startsWith('mirror_parse'))))}`);
      expect(record.engine.translator).toBe(translator);
      expect(run.code, run.stderr).toBe(0);
      expect(check.mismatches).toEqual([]);
      expect(check.exact).toBe(SESSIONS);
      expect(record.engine.flowsTakenOver).toBe(SESSIONS);
    } finally {
      await pair.stop();
    }
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

describe('icmp: echo requests to the VIP', () => {
  const lab = useLab('icmpecho');

  // Counted at the client: one reply per request, by the primary before the
  // takeover (its packets carry DSCP CS1 here) and by the backup after.
  it('are answered by the primary alone, then by the backup alone', async () => {
    const { tb, dir } = lab;
    await markPrimaryReplies(tb);
    const pair = await startTakeoverLab(tb, dir, { ports: [PORT], instance: INSTANCE });
    try {
      const ping = async (name: string): Promise<{ replies: number; fromPrimary: number }> => {
        const cap = await startCapture(tb, tb.ns.client, 'c0', `icmp[icmptype] == icmp-echoreply and src host ${tb.addr.vip}`, `${dir}/${name}.pcap`);
        const r = await tb.exec(tb.ns.client, ['ping', '-c', '5', '-i', '0.2', '-W', '2', tb.addr.vip], { timeoutMs: 20_000 });
        await cap.stop();
        expect(r.stdout).not.toMatch(/DUP!/);
        return { replies: (await readPackets(`${dir}/${name}.pcap`)).length, fromPrimary: (await readPackets(`${dir}/${name}.pcap`, FROM_PRIMARY)).length };
      };
      expect(await ping('before')).toEqual({ replies: 5, fromPrimary: 5 });
      await pair.fail('link-down');
      await waitFor(() => readLog(pair.logs.backupReport)[0], { timeoutMs: 15_000, what: 'the takeover' });
      expect(await ping('after')).toEqual({ replies: 5, fromPrimary: 0 });
    } finally {
      await pair.stop();
    }
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});
