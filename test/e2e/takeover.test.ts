// Transparent takeover end to end: client sessions through the VIP (request/
// response every 10 ms checked byte by byte, bulk both ways, idle-but-open
// connections), the primary fails, the backup takes over, and every
// protected connection carries on to a clean end with no reset and
// byte-exact data both ways, never answered by two servers, nothing left
// behind. One describe per way of failing (takeover-scenarios.ts).
import { chmodSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { startBackup } from '../../scripts/backup-process.js';
import { failPrimary } from '../../scripts/failures.js';
import { startClient } from '../../scripts/processes.js';
import { compareTakeover } from '../../scripts/takeover-check.js';
import { readLog, readPackets, startCapture, startService, type ClientLogLine, type ServiceLogLine } from './harness.js';
import { waitFor } from '../../scripts/wait.js';
import { kernelLeftovers } from './leftovers.js';
import { useLab } from './lab.js';
import { takeoverScenarios } from './takeover-scenarios.js';
import { requestTakeover } from '../../scripts/control-client.js';

const INSTANCE = 'tko';
const PORT = 7000;

for (const sc of takeoverScenarios) {
  describe(`takeover: ${sc.name}`, () => {
    const lab = useLab('tko');

    it('every protected connection carries on byte-exact, answered by one server only', async () => {
      const { tb, dir } = lab;
      const keyFile = `${dir}/key`;
      writeFileSync(keyFile, randomBytes(32).toString('hex'));
      chmodSync(keyFile, 0o600);
      await startService(tb, tb.ns.primary, [PORT], `${dir}/primary.jsonl`);
      await startService(tb, tb.ns.backup, [PORT], `${dir}/backup.jsonl`);
      const backup = await startBackup(tb, {
        ports: [PORT], instance: INSTANCE,
        extra: ['--key-file', keyFile, '--vip-if', tb.ifaces.backupLan, '--report', `${dir}/report.jsonl`],
      });
      const primaryMac = await tb.mac(tb.ns.primary, tb.ifaces.primaryLan);
      const backupMac = await tb.mac(tb.ns.backup, tb.ifaces.backupLan);
      const gw = await startCapture(tb, tb.ns.gateway, 'gs', `src host ${tb.addr.vip}`, `${dir}/gw.pcap`);

      const client = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, sc.workload, `${dir}/client.jsonl`,
        { deadlineMs: 60_000, timeline: `${dir}/timeline.json` });
      const sessions = sc.workload.sessions.reduce((n, s) => n + (s.times ?? 1), 0);
      await waitFor(() => backup.flows('synchronised').length >= sessions, { timeoutMs: 15_000, what: 'every session replicated' });
      await new Promise((r) => setTimeout(r, sc.failAfterMs));

      const failedAt = sc.failure === 'planned' ? Date.now() : await failPrimary(tb, sc.failure);
      const answer = await requestTakeover({ keyFile, port: 7391, ns: tb.ns.backup, tb, reason: `test ${sc.name}` });
      if (!answer.ok) console.log(backup.records.filter((r) => !String(r.msg).startsWith('flow')).slice(-30), backup.stderr());
      expect(answer.ok, JSON.stringify(answer)).toBe(true);

      const run = await client.finished;
      await gw.stop();
      await backup.stop();
      const report = await waitFor(() => readLog<{ engine: { flowsTakenOver: number; flowsLost: number; steps: Array<{ n: number; endUs: number }> } }>(`${dir}/report.jsonl`)[0],
        { timeoutMs: 1, what: 'the takeover record' }).catch(() => undefined);

      const clientLog = readLog<ClientLogLine>(`${dir}/client.jsonl`);
      const rrGaps = clientLog.filter((l) => l.kind === 'rr').map((l) => l.maxGapMs ?? 0).sort((a, b) => a - b);
      console.log(`takeover ${sc.name}: record ${JSON.stringify(report)}; rr sessions' longest pause, ms: ${rrGaps.join(' ')}`);
      const check = compareTakeover(clientLog, readLog<ServiceLogLine>(`${dir}/backup.jsonl`));
      expect(check.mismatches).toEqual([]);
      expect(run.code, run.stderr).toBe(0);
      expect(check.exact).toBe(sessions);

      // One server answers: after the backup's first packet from the VIP, none from the primary.
      const fromBackup = await readPackets(`${dir}/gw.pcap`, `ether src ${backupMac}`, ['-tt']);
      expect(fromBackup.length).toBeGreaterThan(0);
      const firstBackup = Number(fromBackup[0]!.split(' ')[0]);
      const lateFromPrimary = (await readPackets(`${dir}/gw.pcap`, `ether src ${primaryMac}`, ['-tt']))
        .filter((l) => Number(l.split(' ')[0]) >= firstBackup);
      expect(lateFromPrimary).toEqual([]);
      expect(firstBackup * 1000).toBeGreaterThan(failedAt);

      expect(report?.engine.flowsTakenOver).toBe(sessions);
      expect(report?.engine.flowsLost).toBe(0);
      expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
    });
  });
}
