// The replication data path end to end: real TCP through the testbed's
// gateway and mirrored switch port, the same deterministic service on the
// primary and the backup, `t2cp backup` as a separate process. For every
// scenario: every stream of the backup's copy equals the primary's, nothing
// the backup sends reaches the network, and t2cp leaves nothing behind.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestbed, type Testbed } from '../../scripts/testbed.js';
import { startBackup } from '../../scripts/backup-process.js';
import { compareReplicas, countPackets, readLog, runClient, startCapture, startService, type ClientLogLine, type ServiceLogLine } from './harness.js';
import { replicationScenarios } from './scenarios.js';
import { kernelLeftovers } from './leftovers.js';
import { foreignSegments } from './sequence-space.js';

for (const sc of replicationScenarios) {
  describe(`replication: ${sc.name}`, () => {
    let tb: Testbed;
    let dir: string;
    beforeAll(async () => {
      tb = await createTestbed({ offloads: sc.offloads });
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 't2cp-e2e-'));
    });
    afterAll(async () => {
      await tb?.teardown();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    it('the backup replays every stream byte-exact and never answers', async () => {
      const instance = 'e2e';
      const primary = await startService(tb, tb.ns.primary, sc.ports, `${dir}/primary.jsonl`);
      const replica = await startService(tb, tb.ns.backup, sc.ports, `${dir}/backup.jsonl`);
      const backup = await startBackup(tb, { ports: sc.ports, instance });
      // Anything the backup host emits toward the gateway is a leak: its MAC
      // identifies it on the LAN (the client behind the router cannot tell).
      const backupMac = await tb.mac(tb.ns.backup, tb.ifaces.backupLan);
      const leak = await startCapture(tb, tb.ns.gateway, 'gs', `tcp and ether src ${backupMac}`, `${dir}/leak.pcap`);
      const client = await startCapture(tb, tb.ns.client, 'c0', `tcp and src host ${tb.addr.vip}`, `${dir}/client.pcap`);

      const run = await runClient(tb, tb.ns.client, `${tb.addr.vip}:${sc.ports[0]}`, sc.workload, `${dir}/client.jsonl`, { deadlineMs: sc.deadlineMs });
      expect(run.code, run.stderr).toBe(0);
      await leak.stop();
      await client.stop();

      // Stop the services first: they log each connection when it ends.
      primary.child.kill('SIGTERM');
      replica.child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 300));
      const counters = await backup.stop();

      const clientLog = readLog<ClientLogLine>(`${dir}/client.jsonl`);
      const report = compareReplicas(readLog<ServiceLogLine>(`${dir}/primary.jsonl`), readLog<ServiceLogLine>(`${dir}/backup.jsonl`), clientLog);
      expect(report.mismatches).toEqual([]);
      expect(report.clientErrors).toEqual([]);
      expect(report.connections.length).toBe(clientLog.length);
      expect(report.connections.every((c) => c.onBackup && c.backupRxMatchesPrimary && c.backupTxMatchesPrimary)).toBe(true);

      // Every connection was synchronised and closed cleanly on the replica.
      expect(backup.flows('synchronised').length).toBe(clientLog.length);
      expect(backup.flows('unprotected')).toEqual([]);
      expect(backup.flows('closed').filter((r) => r.diverged)).toEqual([]);
      expect(counters.flows_synchronised).toBe(clientLog.length);
      expect(counters.backup_dropped).toBeGreaterThan(0);
      expect(counters.inject_errors ?? 0).toBe(0);

      // Zero packets from the backup: none on the LAN, and at the client
      // every segment from the VIP belongs to the primary's sequence space.
      expect(await countPackets(`${dir}/leak.pcap`)).toBe(0);
      expect(await countPackets(`${dir}/client.pcap`)).toBeGreaterThan(0);
      const received = new Map(clientLog.map((c) => [c.local ?? '', c.rxBytes]));
      expect(await foreignSegments(`${dir}/client.pcap`, received)).toEqual([]);

      // t2cp removed its tables, queue binding, TUN device and VIP address.
      expect(await kernelLeftovers(tb, instance)).toEqual([]);
    }, 180_000);
  });
}
