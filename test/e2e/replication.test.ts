// The replication data path end to end: real TCP through the testbed's
// gateway and mirrored switch port, the same deterministic service on the
// primary and the backup, `t2cp backup` as a separate process. For every
// scenario (scenarios.ts): every stream of the backup's copy equals the
// primary's, nothing the backup sends reaches the network, the scenario's
// disturbance really happened, and t2cp leaves nothing behind.
import { describe, expect, it } from 'vitest';
import type { Testbed } from '../../scripts/testbed.js';
import { startBackup } from '../../scripts/backup-process.js';
import { compareReplicas, countPackets, readLog, runClient, startCapture, startService, type ClientLogLine, type ServiceLogLine } from './harness.js';
import { replicationScenarios, type ReplicationScenario } from './scenarios.js';
import { kernelLeftovers } from './leftovers.js';
import { foreignSegments } from './sequence-space.js';
import { useLab } from './lab.js';

const INSTANCE = 'e2e';

/** Disturbances owned by the test: qdiscs on the mirror port, a drop rule in the backup. */
async function disturb(tb: Testbed, sc: ReplicationScenario): Promise<void> {
  const must = async (ns: string, argv: string[]) => {
    const r = await tb.exec(ns, argv);
    if (r.code !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr}`);
  };
  if (sc.mirror?.reorder) {
    // Class 1:1 passes at line rate; frames with an odd IP ID go to class
    // 1:2, behind a rate limit, so later frames overtake them. Its queue is
    // long: delay, never drop (a drop would be capture loss, another matter).
    const tc = (...a: string[]) => must(tb.ns.sw, ['tc', ...a]);
    await tc('qdisc', 'add', 'dev', 'sm', 'root', 'handle', '1:', 'htb', 'default', '1');
    await tc('class', 'add', 'dev', 'sm', 'parent', '1:', 'classid', '1:1', 'htb', 'rate', '10gbit');
    await tc('class', 'add', 'dev', 'sm', 'parent', '1:', 'classid', '1:2', 'htb', 'rate', '300mbit', 'ceil', '300mbit');
    await tc('qdisc', 'add', 'dev', 'sm', 'parent', '1:2', 'pfifo', 'limit', '100000');
    await tc('filter', 'add', 'dev', 'sm', 'parent', '1:', 'protocol', 'ip', 'u32', 'match', 'u16', '0x0001', '0x0001', 'at', '4', 'flowid', '1:2');
  }
  if (sc.mirror?.duplicate) {
    await must(tb.ns.sw, ['tc', 'filter', 'add', 'dev', 'sp', 'ingress', 'protocol', 'all', 'u32', 'match', 'u32', '0', '0', 'action', 'mirred', 'egress', 'mirror', 'dev', 'sm']);
  }
  if (sc.replicaDropOneIn) {
    const table = `${tb.prefix.replace(/\W/g, '')}chaos`;
    await must(tb.ns.backup, ['nft', `add table ip ${table}; add chain ip ${table} in { type filter hook prerouting priority -300; }; ` +
      `add rule ip ${table} in iifname "t2cp-${INSTANCE}" meta length > 200 numgen random mod ${sc.replicaDropOneIn} == 0 counter drop`]);
  }
}

for (const sc of replicationScenarios) {
  describe(`replication: ${sc.name}`, () => {
    const lab = useLab('e2e', { testbed: { offloads: sc.offloads }, setup: ({ tb }) => disturb(tb, sc) });

    it('every protected stream is replayed byte-exact and the backup never answers', async () => {
      const { tb, dir } = lab;
      const primary = await startService(tb, tb.ns.primary, sc.ports, `${dir}/primary.jsonl`);
      const replica = await startService(tb, tb.ns.backup, sc.ports, `${dir}/backup.jsonl`, { extra: sc.replicaService });
      const backup = await startBackup(tb, { ports: sc.ports, instance: INSTANCE, extra: sc.backupArgs });
      // Anything the backup host emits toward the gateway is a leak: its MAC
      // identifies it on the LAN (the client behind the router cannot tell).
      const backupMac = await tb.mac(tb.ns.backup, tb.ifaces.backupLan);
      const leak = await startCapture(tb, tb.ns.gateway, 'gs', `tcp and ether src ${backupMac}`, `${dir}/leak.pcap`);
      const client = await startCapture(tb, tb.ns.client, 'c0', `tcp and src host ${tb.addr.vip}`, `${dir}/client.pcap`);

      const run = await runClient(tb, tb.ns.client, `${tb.addr.vip}:${sc.ports[0]}`, sc.workload, `${dir}/client.jsonl`, { deadlineMs: sc.deadlineMs });
      expect(run.code, run.stderr).toBe(0);
      await leak.stop();
      await client.stop();

      // The replica may still be catching up (slow reader): wait until every
      // flow closed on it, then stop the services (they log at close).
      const clientLog = readLog<ClientLogLine>(`${dir}/client.jsonl`);
      const lostKinds = new Set(sc.expectLost?.kinds ?? []);
      const lost = clientLog.filter((c) => lostKinds.has(c.kind));
      const kept = clientLog.filter((c) => !lostKinds.has(c.kind));
      const settled = () => backup.flows('closed').length + backup.flows('unprotected').length >= clientLog.length;
      const deadline = Date.now() + 30_000;
      while (!settled() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      primary.child.kill('SIGTERM');
      replica.child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 300));
      const counters = await backup.stop();
      const unprotected = backup.flows('unprotected');
      if (unprotected.length) console.log(`${sc.name}: unprotected ${JSON.stringify(backup.records.filter((r) => r.reason && unprotected.some((u) => u.flow === r.flow)))}`);

      // The client never notices the backup, whatever happens to the replica.
      const report = compareReplicas(readLog<ServiceLogLine>(`${dir}/primary.jsonl`), readLog<ServiceLogLine>(`${dir}/backup.jsonl`), clientLog);
      expect(report.clientErrors).toEqual([]);
      expect(report.connections.length).toBe(clientLog.length);
      expect(report.connections.every((c) => c.primaryRxMatchesClientTx && c.primaryTxMatchesClientRx)).toBe(true);
      // Every protected connection's replica is byte-exact.
      const keptKeys = new Set(kept.map((c) => c.local));
      const exact = report.connections.filter((c) => c.onBackup && c.backupRxMatchesPrimary && c.backupTxMatchesPrimary);
      expect(report.connections.filter((c) => keptKeys.has(c.key.split('>')[0]!) && !exact.includes(c))).toEqual([]);

      // Every connection was synchronised; the protected ones closed cleanly.
      expect(backup.flows('synchronised').length).toBe(clientLog.length);
      expect(backup.flows('closed').length).toBe(kept.length);
      expect(backup.flows('closed').filter((r) => r.diverged)).toEqual([]);
      const flowOf = (c: ClientLogLine) => `${c.local}->:${c.remote.split(':')[1]}`;
      expect(backup.flows('unprotected').map((r) => r.flow).sort()).toEqual(lost.map(flowOf).sort());
      expect(backup.flows('anomaly').map((r) => `${r.flow} ${r.reason}`).sort())
        .toEqual(lost.map((c) => `${flowOf(c)} ${sc.expectLost!.reason}`).sort());
      expect(counters.inject_errors ?? 0).toBe(0);
      for (const name of sc.mustCount ?? []) expect(counters[name] ?? 0, `${name} > 0 proves the scenario`).toBeGreaterThan(0);

      // Zero packets from the backup: none on the LAN, and at the client
      // every segment from the VIP belongs to the primary's sequence space.
      expect(await countPackets(`${dir}/leak.pcap`)).toBe(0);
      const received = new Map(clientLog.map((c) => [`${c.local}>${c.remote.split(':')[1]}`, c.rxBytes]));
      expect(await countPackets(`${dir}/client.pcap`)).toBeGreaterThan(0);
      expect(await foreignSegments(`${dir}/client.pcap`, received)).toEqual([]);

      // t2cp removed its tables, queue binding, TUN device and VIP address.
      expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
    }, 180_000);
  });
}
