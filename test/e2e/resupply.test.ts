// The traffic recorder resupplies what the backup's mirror capture lost, while
// it replicates: the switch's mirror port drops about one in 32 of the
// clients' data frames toward the VIP (the primary gets every frame, the
// backup's capture misses those).
// With the gateway's recorder, every replica stays byte-exact and nothing is
// unprotected; with it off (--record-window 0) the same losses leave flows
// unprotected with reason `gap` — which is what the recorder saves.
import { describe, expect, it } from 'vitest';
import { startClient } from '../../scripts/processes.js';
import { startTakeoverLab } from '../../scripts/takeover-lab.js';
import type { Workload } from '../../scripts/client.js';
import { compareReplicas, readLog, type ClientLogLine, type ServiceLogLine } from './harness.js';
import { kernelLeftovers } from './leftovers.js';
import { droppedOnMirror, lossyMirror } from './lossy-mirror.js';
import { useLab } from './lab.js';
import { waitFor } from '../../scripts/wait.js';
import type { Testbed } from '../../scripts/testbed.js';

const PORT = 7000;

/** UDP datagrams a namespace dropped for a full socket receive buffer (/proc/net/snmp, Udp: RcvbufErrors). */
async function udpRcvbufErrors(tb: Testbed, ns: string): Promise<number> {
  const lines = (await tb.exec(ns, ['cat', '/proc/net/snmp'])).stdout.split('\n').filter((l) => l.startsWith('Udp: '));
  const [names, values] = lines.map((l) => l.split(/\s+/));
  return Number(values?.[names?.indexOf('RcvbufErrors') ?? -1] ?? NaN);
}

const workload: Workload = {
  seed: 11,
  sessions: [
    { kind: 'upload', times: 3, bytes: 20 << 20 },
    { kind: 'rr', times: 6, count: 150, intervalMs: 5, reqSize: [200, 6000], respSize: [1, 2000] },
  ],
};
const sessions = workload.sessions.reduce((n, s) => n + (s.times ?? 1), 0);

for (const recorder of [true, false]) {
  describe(`resupply while replicating: mirror capture loses frames, recorder ${recorder ? 'on' : 'off'}`, () => {
    const lab = useLab('rsp');

    it(recorder ? 'every replica stays byte-exact: the recorder sends the backup what its capture lost'
      : 'without the recorder the same losses leave flows unprotected (gap)', async () => {
      const { tb, dir } = lab;
      await lossyMirror(tb, 'tcp-data');
      // Relaxed heartbeats: no failover is tested here, and a loaded machine must not fake one.
      const pair = await startTakeoverLab(tb, dir, { ports: [PORT], instance: 'rsp', intervalMs: 100, hardMisses: 5,
        gatewayArgs: recorder ? [] : ['--record-window', '0'] });
      const client = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, workload, `${dir}/client.jsonl`, { deadlineMs: 60_000 });
      const run = await client.finished;
      expect(run.code, run.stderr).toBe(0);
      const settled = () => pair.backup.flows('closed').length + pair.backup.flows('unprotected').length >= sessions;
      await waitFor(settled, { timeoutMs: 20_000, what: 'every flow closed or given up on the backup' });
      const counters = await pair.backup.counters();
      const rcvbufErrors = await udpRcvbufErrors(tb, tb.ns.backup);
      await pair.stop();

      const dropped = await droppedOnMirror(tb);
      console.log(`resupply, recorder ${recorder ? 'on' : 'off'}: ${dropped} frames lost on the mirror; backup asked ${counters.resupply_asked ?? 0} times, ` +
        `got ${counters.resupply_packets ?? 0} segments (${counters.resupply_bytes ?? 0} bytes), ${rcvbufErrors} datagrams lost to its full receive buffer; gaps ${counters.gaps ?? 0}`);
      expect(dropped, 'the mirror really lost frames').toBeGreaterThan(0);
      expect(pair.backup.records.some((r) => r.msg === 'takeover: done')).toBe(false);
      const clientLog = readLog<ClientLogLine>(`${dir}/client.jsonl`);
      const report = compareReplicas(readLog<ServiceLogLine>(pair.logs.primary), readLog<ServiceLogLine>(pair.logs.backup), clientLog);
      expect(report.clientErrors).toEqual([]);
      expect(pair.backup.flows('synchronised').length).toBe(sessions);
      if (recorder) {
        expect(pair.backup.flows('unprotected')).toEqual([]);
        expect(report.connections.filter((c) => !(c.onBackup && c.backupRxMatchesPrimary && c.backupTxMatchesPrimary))).toEqual([]);
        expect(counters.gaps ?? 0).toBe(0);
        expect(counters.resupply_asked ?? 0).toBeGreaterThan(0);
        expect(counters.resupply_packets ?? 0).toBeGreaterThan(0);
      } else {
        const lost = pair.backup.flows('unprotected');
        expect(lost.length).toBeGreaterThan(0);
        expect(new Set(lost.map((r) => r.reason))).toEqual(new Set(['gap']));
        expect(counters.resupply_packets ?? 0).toBe(0);
      }
      expect(await kernelLeftovers(tb, 'rsp')).toEqual([]);
    }, 120_000);
  });
}
