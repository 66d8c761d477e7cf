// UDP replication (--udp-ports): the clients' datagrams toward VIP:udp-port,
// seen on the mirror, enter the backup's stack as the primary got them, so
// its copy of a UDP service keeps the same state; everything the replica
// sends from that port is counted and dropped while it replicates. Here a
// service that chains every distinct request into a hash and answers with
// the count and the chain (scripts/udp-service.ts): a client that checks
// each answer against its own chain notices any datagram the copy missed,
// got twice or out of order once that copy answers.
import type { ChildProcess } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { startBackup, type BackupProcess } from '../../scripts/backup-process.js';
import { collect, repoRoot, startClient, startUdpService as startUdpServiceOn, stopChild } from '../../scripts/processes.js';
import { compareTakeover } from '../../scripts/takeover-check.js';
import { startTakeoverLab } from '../../scripts/takeover-lab.js';
import type { Testbed } from '../../scripts/testbed.js';
import { waitFor } from '../../scripts/wait.js';
import type { Workload } from '../../scripts/client.js';
import { countPackets, readLog, startCapture, type ClientLogLine, type ServiceLogLine } from './harness.js';
import { kernelLeftovers } from './leftovers.js';
import { droppedOnMirror, lossyMirror } from './lossy-mirror.js';
import { useLab } from './lab.js';

const INSTANCE = 'udp';
const TCP_PORT = 7000;
const UDP_PORT = 5060;

interface UdpServiceLine { peer: string; requests: number; chain: string; answers: number; answersSha256: string; datagrams: number; distinct: number }
interface UdpClientLine { local: string; sent: number; answered: number; resent: number; longestWaitMs: number; ok: boolean; error: string | null }

/** The UDP service on UDP_PORT (or `port`) in `ns`. */
const startUdpService = (tb: Testbed, ns: string, log: string, extra: string[] = [], port = UDP_PORT): Promise<ChildProcess> =>
  startUdpServiceOn(tb, ns, log, { port, extra });

/** scripts/udp-client.ts in the client's namespace; resolves with its exit code and summary. */
function runUdpClient(tb: Testbed, log: string, o: { associations: number; count: number; intervalMs: number; port?: number; maxBytes?: number; stream?: boolean }): Promise<{ code: number | null; stdout: string }> {
  const child = tb.spawn(tb.ns.client, ['node', `${repoRoot}dist/scripts/udp-client.js`, '--server', `${tb.addr.vip}:${o.port ?? UDP_PORT}`,
    '--associations', String(o.associations), '--count', String(o.count), '--interval-ms', String(o.intervalMs), '--retry-ms', '100',
    '--deadline-ms', '60000', '--max-bytes', String(o.maxBytes ?? 1200), ...(o.stream ? ['--stream'] : []), '--log', log]);
  const out = collect(child);
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout: out.stdout })));
}

interface UdpPair {
  backup: BackupProcess;
  primary: ChildProcess;
  replica: ChildProcess;
  /** Stops both copies of the service (they write their logs as they exit): the primary's, the replica's. */
  logs(): Promise<[UdpServiceLine[], UdpServiceLine[]]>;
  /** Stops everything, the replica woken first if it was stopped (SIGSTOP). */
  stop(): Promise<void>;
}

/** `t2cp backup --udp-ports UDP_PORT` (and `backupArgs`) alone, the UDP service (with `serviceArgs`) on both hosts. */
async function udpPair(tb: Testbed, dir: string, o: { backupArgs?: string[]; serviceArgs?: string[] } = {}): Promise<UdpPair> {
  const backup = await startBackup(tb, { ports: [], instance: INSTANCE, extra: ['--udp-ports', String(UDP_PORT), ...(o.backupArgs ?? [])] });
  const primary = await startUdpService(tb, tb.ns.primary, `${dir}/udp-primary.jsonl`, o.serviceArgs);
  const replica = await startUdpService(tb, tb.ns.backup, `${dir}/udp-replica.jsonl`, o.serviceArgs);
  const stopServices = async () => {
    replica.kill('SIGCONT');
    await stopChild(primary);
    await stopChild(replica);
  };
  return {
    backup, primary, replica,
    async logs() {
      await stopServices();
      return [readLog<UdpServiceLine>(`${dir}/udp-primary.jsonl`), readLog<UdpServiceLine>(`${dir}/udp-replica.jsonl`)];
    },
    async stop() {
      await stopServices();
      await backup.stop();
    },
  };
}

/** The counters of UDP (`udp_…`, `replica_udp_…`), for the log. */
const udpCounters = (counters: Record<string, number>) => JSON.stringify(Object.fromEntries(Object.entries(counters).filter(([k]) => k.includes('udp_'))));
/**
 * Answers paired: one per datagram the service got, a client's repeat of a request it waited
 * 100 ms for answered again too. A repeat answer either pairs with the other copy's (compared) or,
 * the copies a second apart, each copy's is counted a repeat (udp_compare_repeats, two a pair).
 */
const pairedAnswers = (c: Record<string, number>) => (c.udp_compared ?? 0) + (c.udp_compare_repeats ?? 0) / 2;
const byPeer = (ls: UdpServiceLine[]) => Object.fromEntries(ls.map((l) => [l.peer, l]));


for (const offloads of [true, false]) describe(`udp: a UDP service replicated, offloads ${offloads ? 'on' : 'off'}`, () => {
  const lab = useLab('udp', { perTest: true, testbed: { offloads } });

  it('the replica gets every datagram in order and answers alike; its answers leave nowhere', async () => {
    const { tb, dir } = lab;
    const pair = await startTakeoverLab(tb, dir, { ports: [TCP_PORT], instance: INSTANCE, backupArgs: ['--udp-ports', String(UDP_PORT)] });
    const primary = await startUdpService(tb, tb.ns.primary, `${dir}/udp-primary.jsonl`);
    const replica = await startUdpService(tb, tb.ns.backup, `${dir}/udp-replica.jsonl`);
    try {
      // Whatever leaves the backup from port 5060, from any of its addresses, would be the replica's answers
      // escaping; anything else from the VIP, what the replica's host sends on its own (a connection a proxy
      // opens to a callee, an ICMP error), which the guard chain drops while it replicates.
      const leak = await startCapture(tb, tb.ns.backup, tb.ifaces.backupLan, `(udp and src port ${UDP_PORT}) or src host ${tb.addr.vip}`, `${dir}/leak.pcap`);
      const own = tb.exec(tb.ns.backup, ['node', '-e', `const s = require('dgram').createSocket('udp4');
        s.bind({ address: '${tb.addr.vip}', port: 40001 }, () => { let n = 0; const t = setInterval(() => {
          s.send('from the replica host', 9, '${tb.addr.clients[0]}'); if (++n === 20) { clearInterval(t); s.close(); } }, 20); });`]);
      const run = await runUdpClient(tb, `${dir}/udp-client.jsonl`, { associations: 4, count: 300, intervalMs: 2 });
      expect((await own).code, 'datagrams sent from the VIP on the backup').toBe(0);
      await new Promise((r) => setTimeout(r, 300)); // the last datagrams reach the replica
      await leak.stop();
      // The gateway was not told the UDP port: the backup says what that costs.
      await waitFor(() => pair.backup.records.some((r) => String(r.msg).startsWith('no UDP records from the gateway')),
        { timeoutMs: 5000, what: 'the backup to say no UDP record comes' });
      const counters = await pair.backup.counters();
      await stopChild(primary);
      await stopChild(replica);
      const [onPrimary, onReplica] = [readLog<UdpServiceLine>(`${dir}/udp-primary.jsonl`), readLog<UdpServiceLine>(`${dir}/udp-replica.jsonl`)];
      console.log(`udp: ${run.stdout.trim()}; associations on the primary ${onPrimary.length}, on the replica ${onReplica.length}; ` +
        `counters ${udpCounters(counters)}`);
      expect(run.code, run.stdout).toBe(0);
      expect(onPrimary).toHaveLength(4);
      // The same requests, in the same order, and the same answers, association by association.
      expect(byPeer(onReplica)).toEqual(byPeer(onPrimary));
      for (const l of onPrimary) expect(l.requests).toBe(300);
      expect(await countPackets(`${dir}/leak.pcap`)).toBe(0);
      const datagrams = onPrimary.reduce((n, l) => n + l.requests, 0);
      expect(counters.udp_associations_new).toBe(4);
      // The gateway was not told the UDP port: no record, each datagram given as the mirror showed it.
      expect(counters.udp_records ?? 0).toBe(0);
      expect(counters.udp_unverified ?? 0).toBe(0);
      expect(counters.udp_datagrams ?? 0).toBeGreaterThanOrEqual(datagrams);
      expect(counters.udp_replica_datagrams ?? 0).toBeGreaterThanOrEqual(datagrams);
      // Every answer of the replica's compared with the primary's (--divergence strict by default), alike.
      expect(pairedAnswers(counters)).toBe(counters.udp_datagrams);
      expect(counters.udp_diverged ?? 0).toBe(0);
      expect(pair.backup.records.filter((r) => r.msg === 'flow new' && String(r.flow).endsWith(`:${UDP_PORT}/udp`))).toHaveLength(4);
    } finally {
      await stopChild(primary);
      await stopChild(replica);
      await pair.stop();
    }
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });

});

// The mirror loses one in 32 of the clients' datagrams. With the gateway's recorder, the backup
// learns which from the recorder's records, gets them resupplied and gives every datagram to its
// copy in the primary's order: the same chain per association. Without it, nothing can tell the
// backup what it missed: its copy falls behind the primary's state. With datagrams larger than
// the MTU, up to 60,000 bytes, the recorder records them whole (it reassembles them too) and
// resupplies each as fragments of its own cutting, which the backup makes whole again.
for (const [recorder, fragmented] of [[true, false], [false, false], [true, true]] as const) describe(`udp: a lossy mirror, recorder ${recorder ? 'on' : 'off'}${fragmented ? ', datagrams in fragments' : ''}`, () => {
  const lab = useLab(fragmented ? 'udprspfrag' : recorder ? 'udprsp' : 'udpnorsp');

  it(recorder ? "the recorder resupplies what the mirror lost, in order: the replica's state is the primary's"
    : 'without the recorder the replica misses datagrams', async () => {
    const { tb, dir } = lab;
    await lossyMirror(tb, 'udp');
    // Datagrams of up to 60 KB, given to the replica in bursts (those held behind a lost one
    // once it came): its socket must hold a burst, as the bench's do (else replica_udp_rcvbuf_errors).
    const serviceArgs = fragmented ? ['--rcvbuf', String(8 << 20)] : [];
    const primary = await startUdpService(tb, tb.ns.primary, `${dir}/udp-primary.jsonl`, serviceArgs);
    // Relaxed heartbeats: no failover is tested here, and a loaded machine must not fake one.
    const pair = await startTakeoverLab(tb, dir, { ports: [TCP_PORT], udpPorts: [UDP_PORT], instance: INSTANCE, intervalMs: 100, hardMisses: 5,
      gatewayArgs: recorder ? [] : ['--record-window', '0'] });
    const replica = await startUdpService(tb, tb.ns.backup, `${dir}/udp-replica.jsonl`, serviceArgs);
    try {
      const count = fragmented ? 100 : 600;
      const run = await runUdpClient(tb, `${dir}/udp-client.jsonl`, fragmented ? { associations: 4, count, intervalMs: 5, maxBytes: 60_000 }
        : { associations: 4, count, intervalMs: 2 });
      // The last datagrams' records come, the last missing ones are asked and given.
      await new Promise((r) => setTimeout(r, 1000));
      const counters = await pair.backup.counters();
      await stopChild(primary);
      await stopChild(replica);
      const dropped = await droppedOnMirror(tb);
      const [onPrimary, onReplica] = [readLog<UdpServiceLine>(`${dir}/udp-primary.jsonl`), readLog<UdpServiceLine>(`${dir}/udp-replica.jsonl`)];
      console.log(`udp lossy mirror, recorder ${recorder ? 'on' : 'off'}: ${dropped} datagrams lost on the mirror; requests on the replica ` +
        `${onReplica.map((l) => l.requests).join(', ')} of ${onPrimary.map((l) => l.requests).join(', ')}; ` +
        `counters ${udpCounters(counters)}`);
      expect(run.code, run.stdout).toBe(0);
      expect(dropped, 'the mirror really lost datagrams').toBeGreaterThan(0);
      expect(onPrimary).toHaveLength(4);
      for (const l of onPrimary) expect(l.requests).toBe(count);
      if (recorder) {
        // Every request, in the primary's order (the chain), and the same answers.
        expect(byPeer(onReplica)).toEqual(byPeer(onPrimary));
        // A datagram lost on the mirror is one frame, or all the fragments of one (they share its IP ID).
        expect(counters.udp_asked ?? 0).toBeGreaterThanOrEqual(fragmented ? 1 : dropped);
        expect(counters.udp_resupplied ?? 0).toBeGreaterThanOrEqual(fragmented ? 1 : dropped);
        if (fragmented) {
          expect(counters.udp_reassembled ?? 0).toBeGreaterThan(0);
          expect(counters.udp_resupplied_fragments ?? 0).toBeGreaterThan(0);
        }
        expect(counters.udp_lost ?? 0).toBe(0);
        expect(counters.udp_held ?? 0).toBe(0);
        expect(counters.udp_verified ?? 0).toBeGreaterThan(0);
      } else {
        // Its copy got what the mirror showed, and fell out of step at the first datagram it missed.
        expect(counters.udp_datagrams).toBe(2400 - dropped);
        expect(onReplica.some((l) => l.requests < 600)).toBe(true);
        expect(counters.udp_records ?? 0).toBe(0);
      }
    } finally {
      await stopChild(primary);
      await stopChild(replica);
      await pair.stop();
    }
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

// A service whose answers carry a random token: the replica's datagrams are compared with the
// primary's one by one, and each association is found diverged at its first answer, with both
// sides' bytes; under --divergence length (same lengths) it is not.
for (const policy of ['strict', 'length'] as const) describe(`udp: a service that is not deterministic, --divergence ${policy}`, () => {
  const lab = useLab(policy === 'strict' ? 'udpdiv' : 'udpdivlen');

  it(policy === 'strict' ? 'every association is reported diverged, with where and both answers' : 'nothing is reported: the lengths are alike', async () => {
    const { tb, dir } = lab;
    const pair = await udpPair(tb, dir, { backupArgs: ['--divergence', policy], serviceArgs: ['--nonce'] });
    const { backup } = pair;
    try {
      const run = await runUdpClient(tb, `${dir}/udp-client.jsonl`, { associations: 3, count: 50, intervalMs: 2 });
      expect(run.code, run.stdout).toBe(0);
      // A difference is decided once the other side's datagram had a second to come.
      const diverged = () => backup.records.filter((r) => r.msg === 'flow anomaly' && r.reason === 'diverged');
      if (policy === 'strict') await waitFor(() => diverged().length >= 3, { timeoutMs: 10_000, what: 'three associations found diverged' });
      else await new Promise((r) => setTimeout(r, 1500));
      const counters = await backup.counters();
      console.log(`udp divergence (${policy}): ${JSON.stringify(diverged()[0] ?? null)}; ` +
        `counters ${udpCounters(counters)}`);
      if (policy === 'strict') {
        expect(counters.udp_diverged).toBe(3);
        for (const r of diverged()) {
          expect(String(r.flow)).toMatch(new RegExp(`:${UDP_PORT}/udp$`));
          // The first answer, from its token on (seq, count and chain alike before it: 40 bytes).
          expect(r).toMatchObject({ kind: 'bytes', offset: 0 });
          expect(Number(r.byte)).toBeGreaterThanOrEqual(40);
          expect(Number(r.byte)).toBeLessThan(44);
          expect(String(r.primary)).not.toBe(String(r.replica));
        }
      } else {
        expect(diverged()).toEqual([]);
        expect(counters.udp_diverged ?? 0).toBe(0);
        expect(counters.udp_compared ?? 0).toBe(150);
      }
    } finally {
      await pair.stop();
    }
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

// Datagrams larger than the path MTU (1500 on the testbed: a SIP INVITE with a long SDP) cross
// the network in IP fragments, both the clients' and the service's answers. The backup
// reassembles the clients' as the primary's kernel does, so its copy gets every datagram whole,
// in order, and the primary's too, to compare with the replica's (whole at its output).
describe('udp: datagrams larger than the MTU, in fragments', () => {
  const lab = useLab('udpfrag');

  it('reach the replica whole and in order; its answers compare alike with the primary\'s', async () => {
    const { tb, dir } = lab;
    const pair = await udpPair(tb, dir);
    try {
      const run = await runUdpClient(tb, `${dir}/udp-client.jsonl`, { associations: 2, count: 150, intervalMs: 5, maxBytes: 6000 });
      expect(run.code, run.stdout).toBe(0);
      await new Promise((r) => setTimeout(r, 1500)); // the last answers, and a second to settle their comparison
      const counters = await pair.backup.counters();
      const [onPrimary, onReplica] = await pair.logs();
      console.log(`udp, fragments: counters ${udpCounters(counters)}`);
      expect(onPrimary).toHaveLength(2);
      expect(byPeer(onReplica)).toEqual(byPeer(onPrimary));
      const answers = onPrimary.reduce((n, l) => n + l.answers, 0);
      // Most of the requests (16 to 6000 bytes) and their answers (as long) were cut.
      expect(counters.udp_reassembled ?? 0).toBeGreaterThan(answers);
      expect(counters.udp_reassembly_failed ?? 0).toBe(0);
      expect(counters.udp_datagrams ?? 0).toBeGreaterThanOrEqual(onPrimary.reduce((n, l) => n + l.requests, 0));
      expect(pairedAnswers(counters)).toBe(counters.udp_datagrams);
      expect(counters.udp_compare_unverified ?? 0).toBe(0);
      expect(counters.udp_diverged ?? 0).toBe(0);
    } finally {
      await pair.stop();
    }
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

// A replica stopped for two seconds (as a copy starved of CPU, or in a long pause, would be)
// answers late, not otherwise: its socket holds what it has not read yet, so the comparison waits
// for its answers instead of reporting its associations diverged, and they pair when it goes on.
describe('udp: a replica paused for two seconds', () => {
  const lab = useLab('udplate');

  it('is late, not diverged: its answers pair with the primary\'s when it goes on', async () => {
    const { tb, dir } = lab;
    // Room in the paused copy's socket for what comes meanwhile (~400 datagrams): a datagram it
    // dropped would make it really different.
    const pair = await udpPair(tb, dir, { serviceArgs: ['--rcvbuf', String(4 << 20)] });
    const { backup, replica } = pair;
    try {
      const running = runUdpClient(tb, `${dir}/udp-client.jsonl`, { associations: 2, count: 300, intervalMs: 10 });
      await new Promise((r) => setTimeout(r, 500));
      replica.kill('SIGSTOP');
      await new Promise((r) => setTimeout(r, 2000));
      replica.kill('SIGCONT');
      const run = await running;
      expect(run.code, run.stdout).toBe(0);
      await new Promise((r) => setTimeout(r, 1500)); // the replica's last answers, and a second to settle
      const counters = await backup.counters();
      const [onPrimary, onReplica] = await pair.logs();
      console.log(`udp, a replica paused 2 s: counters ${udpCounters(counters)}`);
      expect(onPrimary).toHaveLength(2);
      expect(byPeer(onReplica)).toEqual(byPeer(onPrimary));
      expect(backup.records.filter((r) => r.msg === 'flow anomaly')).toEqual([]);
      expect(counters.udp_diverged ?? 0).toBe(0);
      expect(counters.udp_compare_late ?? 0).toBeGreaterThan(0); // the case really happened
      expect(counters.udp_datagrams ?? 0).toBeGreaterThanOrEqual(onPrimary.reduce((n, l) => n + l.requests, 0));
      expect(pairedAnswers(counters)).toBe(counters.udp_datagrams);
    } finally {
      await pair.stop();
    }
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

describe('udp: a UDP service alone (--udp-ports, no --ports), on a port of a range', () => {
  const lab = useLab('udponly');

  it('is replicated as well; the range is one rule, the replica\'s answers leave nowhere', async () => {
    const { tb, dir } = lab;
    const MEDIA = 10050;  // in 10000-10100: a hundred and one ports, one of the 64 entries
    const backup = await startBackup(tb, { ports: [], instance: INSTANCE, extra: ['--udp-ports', `${UDP_PORT},10000-10100`] });
    const primary = await startUdpService(tb, tb.ns.primary, `${dir}/udp-primary.jsonl`, [], MEDIA);
    const replica = await startUdpService(tb, tb.ns.backup, `${dir}/udp-replica.jsonl`, [], MEDIA);
    try {
      const leak = await startCapture(tb, tb.ns.backup, tb.ifaces.backupLan, `udp and src port ${MEDIA}`, `${dir}/leak.pcap`);
      const run = await runUdpClient(tb, `${dir}/udp-client.jsonl`, { associations: 2, count: 200, intervalMs: 2, port: MEDIA });
      await new Promise((r) => setTimeout(r, 300));
      await leak.stop();
      const rules = await tb.exec(tb.ns.backup, ['nft', 'list', 'table', 'ip', `t2cp_${INSTANCE}`]);
      await stopChild(primary);
      await stopChild(replica);
      expect(run.code, run.stdout).toBe(0);
      const byPeer = (f: string) => Object.fromEntries(readLog<UdpServiceLine>(f).map((l) => [l.peer, l]));
      expect(Object.keys(byPeer(`${dir}/udp-primary.jsonl`))).toHaveLength(2);
      expect(byPeer(`${dir}/udp-replica.jsonl`)).toEqual(byPeer(`${dir}/udp-primary.jsonl`));
      expect(await countPackets(`${dir}/leak.pcap`)).toBe(0);
      expect(rules.stdout).toMatch(/udp sport 10000-10100/);
      expect(backup.records.find((r) => r.msg === 'replicating')).toMatchObject({ ports: '', udpPorts: `${UDP_PORT},10000-10100` });
    } finally {
      await stopChild(primary);
      await stopChild(replica);
      await backup.stop();
    }
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

describe('udp: a takeover with UDP and TCP at once', () => {
  const lab = useLab('udptko');

  it('the associations go on with the same state, the sessions byte-exact', async () => {
    const { tb, dir } = lab;
    // Every role told the UDP port: the agent watches it, the recorder numbers its datagrams.
    const primary = await startUdpService(tb, tb.ns.primary, `${dir}/udp-primary.jsonl`);
    const pair = await startTakeoverLab(tb, dir, { ports: [TCP_PORT], udpPorts: [UDP_PORT], instance: INSTANCE });
    const replica = await startUdpService(tb, tb.ns.backup, `${dir}/udp-replica.jsonl`);
    try {
      const workload: Workload = { seed: 51, sessions: [{ kind: 'rr', times: 3, count: 400, intervalMs: 10, reqSize: [4, 600], respSize: [1, 3000] }] };
      const tcp = startClient(tb, tb.ns.client, `${tb.addr.vip}:${TCP_PORT}`, workload, `${dir}/client.jsonl`, { deadlineMs: 60_000 });
      const udp = runUdpClient(tb, `${dir}/udp-client.jsonl`, { associations: 4, count: 800, intervalMs: 5 });
      await waitFor(() => pair.backup.flows('synchronised').length >= 3 && pair.backup.flows('new').length >= 7,
        { timeoutMs: 15_000, what: 'the sessions and the associations followed' });
      await new Promise((r) => setTimeout(r, 1000));
      await pair.fail('link-down');
      const record = await waitFor(() => readLog<{ engine: { flowsTakenOver: number } }>(pair.logs.backupReport)[0], { timeoutMs: 15_000, what: 'the takeover' });
      const [tcpRun, udpRun] = [await tcp.finished, await udp];
      const check = compareTakeover(readLog<ClientLogLine>(`${dir}/client.jsonl`), readLog<ServiceLogLine>(pair.logs.backup));
      const clients = readLog<UdpClientLine>(`${dir}/udp-client.jsonl`);
      const counters = await pair.backup.counters();
      console.log(`udp takeover: ${udpRun.stdout.trim()}; longest waits ${clients.map((c) => c.longestWaitMs).join(', ')} ms, resent ${clients.map((c) => c.resent).join(', ')}; ` +
        `TCP exact ${check.exact}/3, taken over ${record.engine.flowsTakenOver}; ` +
        `counters ${udpCounters(counters)}`);
      expect(counters.udp_records ?? 0, 'the recorder numbered the datagrams').toBeGreaterThan(0);
      expect(counters.udp_held ?? 0, 'nothing left held after the takeover').toBe(0);
      // Every association answered to its end by a copy whose count and chain were the client's:
      // the backup's copy had every datagram the primary had, in order.
      expect(udpRun.code, udpRun.stdout).toBe(0);
      expect(clients.every((c) => c.ok && c.answered === 800)).toBe(true);
      expect(tcpRun.code, tcpRun.stderr).toBe(0);
      expect(check.exact).toBe(3);
    } finally {
      await stopChild(primary);
      await stopChild(replica);
      await pair.stop();
    }
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

describe('udp: a stream through a takeover', () => {
  const lab = useLab('udpstr');

  it('every datagram reaches the copy that serves once: none lost, none twice', async () => {
    const { tb, dir } = lab;
    // Both copies keep up with the burst the ledger releases at the takeover.
    const rcvbuf = ['--rcvbuf', String(8 << 20)];
    const primary = await startUdpService(tb, tb.ns.primary, `${dir}/udp-primary.jsonl`, rcvbuf);
    const pair = await startTakeoverLab(tb, dir, { ports: [TCP_PORT], udpPorts: [UDP_PORT], instance: INSTANCE });
    const replica = await startUdpService(tb, tb.ns.backup, `${dir}/udp-replica.jsonl`, rcvbuf);
    try {
      // Streams as media sends them: each datagram once, one a millisecond per
      // stream, so some are on the wire at the moment the VIP moves.
      const streams = 12, count = 3000;
      const udp = runUdpClient(tb, `${dir}/udp-client.jsonl`, { associations: streams, count, intervalMs: 1, maxBytes: 100, stream: true });
      await waitFor(() => pair.backup.flows('new').length >= streams, { timeoutMs: 15_000, what: 'the streams followed' });
      await new Promise((r) => setTimeout(r, 1000));
      await pair.fail('link-down');
      await waitFor(() => readLog(pair.logs.backupReport)[0], { timeoutMs: 15_000, what: 'the takeover' });
      const udpRun = await udp;
      // The last datagrams, sent as the client ended, read before the copy writes its log.
      await waitFor(async () => (await pair.backup.counters()).udp_held === undefined, { timeoutMs: 5_000, what: 'nothing held' });
      await new Promise((r) => setTimeout(r, 200));
      await stopChild(replica);
      const served = byPeer(readLog<UdpServiceLine>(`${dir}/udp-replica.jsonl`));
      const clients = readLog<UdpClientLine>(`${dir}/udp-client.jsonl`);
      const counters = await pair.backup.counters();
      console.log(`udp stream takeover: ${udpRun.stdout.trim()}; at the copy that serves ` +
        `${clients.map((c) => `${served[c.local]?.distinct ?? 0} distinct of ${served[c.local]?.datagrams ?? 0}`).join(', ')}; counters ${udpCounters(counters)}`);
      expect(udpRun.code, udpRun.stdout).toBe(0);
      for (const c of clients) {
        expect(served[c.local]?.distinct, `${c.local}: every datagram reached the copy that serves`).toBe(count);
        expect(served[c.local]?.datagrams, `${c.local}: no datagram reached it twice`).toBe(count);
      }
    } finally {
      await stopChild(primary);
      await stopChild(replica);
      await pair.stop();
    }
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});
