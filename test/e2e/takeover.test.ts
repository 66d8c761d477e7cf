// Transparent takeover end to end: client sessions through the VIP (request/
// response every 10 ms checked byte by byte, bulk both ways, idle-but-open
// connections), the primary fails, the backup takes over, and every
// protected connection carries on to a clean end with no reset and
// byte-exact data both ways, never answered by two servers (the primary's
// segments carry DSCP CS1 here, so the client's capture tells them apart),
// the old primary stands down when it comes back, nothing is left behind.
// One describe per way of failing (takeover-scenarios.ts).
import { describe, expect, it } from 'vitest';
import { markPrimaryReplies, restorePrimary } from '../../scripts/failures.js';
import { startClient } from '../../scripts/processes.js';
import { answeredByOne, compareTakeover } from '../../scripts/takeover-check.js';
import { startTakeoverLab } from '../../scripts/takeover-lab.js';
import { distCli } from '../../scripts/t2cp-process.js';
import { waitFor } from '../../scripts/wait.js';
import { readLog, startCapture, type ClientLogLine, type ServiceLogLine } from './harness.js';
import { kernelLeftovers, t2cpTables } from './leftovers.js';
import { useLab } from './lab.js';
import { takeoverScenarios } from './takeover-scenarios.js';

const INSTANCE = 'tko';
const PORT = 7000;

interface EngineRecord { trigger: { source: string }; engine: { flowsTakenOver: number; flowsLost: number; state: string; translator?: string; stall?: { medianUs: number } } }

for (const sc of takeoverScenarios) {
  describe(`takeover: ${sc.name}`, () => {
    const lab = useLab('tko');

    it('every protected connection carries on byte-exact, answered by one server only', async () => {
      const { tb, dir } = lab;
      await markPrimaryReplies(tb);
      const activeMode = sc.activeMode ?? 'kernel';
      const pair = await startTakeoverLab(tb, dir, { ports: [PORT], instance: INSTANCE, trigger: sc.trigger, backupArgs: ['--active-mode', activeMode] });
      const atClient = await startCapture(tb, tb.ns.client, 'c0', `tcp and src host ${tb.addr.vip}`, `${dir}/client.pcap`);
      const client = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, sc.workload, `${dir}/client.jsonl`,
        { deadlineMs: 60_000, timeline: `${dir}/timeline.json` });
      const sessions = sc.workload.sessions.reduce((n, s) => n + (s.times ?? 1), 0);
      await waitFor(() => pair.backup.flows('synchronised').length >= sessions, { timeoutMs: 15_000, what: 'every session replicated' });
      await new Promise((r) => setTimeout(r, sc.failAfterMs));

      await pair.fail(sc.failure);
      if (sc.trigger === 'manual') {
        const r = await tb.exec(tb.ns.backup, ['node', distCli(), 'takeover', '--key-file', pair.keyFile, '--reason', 'manual'], { timeoutMs: 20_000 });
        expect(r.code, r.stderr).toBe(0);
      }
      const record = await waitFor(() => readLog<EngineRecord>(pair.logs.backupReport)[0], { timeoutMs: 15_000, what: 'the backup\'s takeover record' });
      if (sc.comesBack) {
        await restorePrimary(tb, sc.failure as 'link-down' | 'freeze');
        await pair.agent!.waitForRecord((r) => String(r.msg).startsWith('fenced'), 'the old primary stands down', 10_000);
      }

      const run = await client.finished;
      await atClient.stop();
      const gatewayRecord = sc.trigger === 'detector'
        ? await waitFor(() => readLog<Record<string, unknown>>(pair.logs.gatewayReport)[0], { timeoutMs: 10_000, what: 'the detector\'s record' })
        : undefined;
      await pair.stop();

      const clientLog = readLog<ClientLogLine>(`${dir}/client.jsonl`);
      const rrGaps = clientLog.filter((l) => l.kind === 'rr').map((l) => l.maxGapMs ?? 0).sort((a, b) => a - b);
      const steps = (record as unknown as { engine: { steps: Array<{ name: string; us?: number }> } }).engine.steps.map((s) => `${s.name} ${s.us ?? '?'} µs`).join(', ');
      console.log(`takeover ${sc.name}: ${steps}; rr sessions' longest pause, ms: ${rrGaps.join(' ')}` +
        (gatewayRecord ? `; detection ${gatewayRecord.detectionLatencyUs} µs, resupplied ${JSON.stringify(gatewayRecord.resupplied)}` : ''));
      const check = compareTakeover(clientLog, readLog<ServiceLogLine>(pair.logs.backup));
      expect(check.mismatches).toEqual([]);
      expect(run.code, run.stderr).toBe(0);
      expect(check.exact).toBe(sessions);
      expect(record.engine.flowsTakenOver).toBe(sessions);
      expect(record.engine.translator).toBe(activeMode);
      expect(record.engine.flowsLost).toBe(0);
      if (sc.trigger === 'detector') {
        // One record with everything: detection, the backup's steps and flows, and its final stall figure.
        expect(gatewayRecord?.outcome).toBe('active');
        expect(typeof gatewayRecord?.detectionLatencyUs === 'number' || sc.failure === 'planned').toBe(true);
        const final = gatewayRecord?.backupReport as { final?: boolean; report?: { engine?: { stall?: unknown; steps?: unknown[] } } } | undefined;
        expect(final?.final).toBe(true);
        expect(final?.report?.engine?.steps).toHaveLength(6);
        expect(final?.report?.engine?.stall).toBeDefined();
        // A planned switch: the primary stood down before the backup was told to take over.
        if (sc.failure === 'planned') expect((gatewayRecord?.standDown as { acked?: boolean } | undefined)?.acked).toBe(true);
        expect((gatewayRecord?.fence as { result?: string } | undefined)?.result).toBe('engaged');
        // The recorder replayed the outage on the new owner's gratuitous ARP (not on its report,
        // which comes later or not at all; which came first is timing, not asserted).
        const replay = gatewayRecord?.resupplied as { trigger?: string; startedAfterUs?: number } | undefined;
        expect(replay?.trigger).toBe('announcement');
      }
      expect(record.trigger.source).toBe({ detector: 'detector', keepalived: 'keepalived', manual: 'cli' }[sc.trigger]);

      // One server answers: once the backup's first segment reached the client, none of the primary's.
      const answered = await answeredByOne(`${dir}/client.pcap`);
      expect(answered.fromBackup).toBeGreaterThan(0);
      expect(answered.lateFromPrimary).toEqual([]);
      expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
      // The fences went with the detector and the agent.
      for (const ns of [tb.ns.gateway, tb.ns.primary]) expect(await t2cpTables(tb, ns)).toEqual([]);
    });
  });
}
