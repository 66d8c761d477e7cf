// The failure detector restarts (a gateway reboot, a crash, systemd's
// Restart=) and the pair's story goes on: after a takeover the restarted
// detector knows the backup serves — from its --state-dir, or, without one,
// from the backup's word at a higher epoch than it knows — engages its fence
// again and tells the returning old primary to stand down, so that nothing of
// the old primary's reaches the clients (its segments carry DSCP CS1 here);
// restarted during replication, it carries on and the takeover after it works.
// Every session byte-exact, answered by one server only.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { markPrimaryReplies, restorePrimary } from '../../scripts/failures.js';
import { startClient } from '../../scripts/processes.js';
import { answeredByOne, compareTakeover } from '../../scripts/takeover-check.js';
import { startTakeoverLab } from '../../scripts/takeover-lab.js';
import { distCli } from '../../scripts/t2cp-process.js';
import { waitFor } from '../../scripts/wait.js';
import type { Workload } from '../../scripts/client.js';
import { readLog, startCapture, type ClientLogLine, type ServiceLogLine } from './harness.js';
import { kernelLeftovers } from './leftovers.js';
import { useLab } from './lab.js';

const INSTANCE = 'life';
const PORT = 7000;

// Request/response every 10 ms for ~6 s: under way through the failure, the restart and the
// return (about 3 s on two CPUs).
const workload: Workload = { seed: 11, sessions: [{ kind: 'rr', times: 6, count: 500, intervalMs: 10, reqSize: [4, 600], respSize: [1, 3000] }] };
const SESSIONS = 6;

const cases = [
  { name: 'crashes after a takeover and restarts from its state file', stateDir: true, restart: 'after-takeover', signal: 'SIGKILL' },
  { name: 'crashes after a takeover and restarts without its state', stateDir: false, restart: 'after-takeover', signal: 'SIGKILL' },
  { name: 'restarts during replication, then the primary fails', stateDir: true, restart: 'before-failure', signal: 'SIGTERM' },
] as const;

for (const c of cases) {
  describe(`lifecycle: the detector ${c.name}`, () => {
    const lab = useLab('life');

    it('the old primary stands down when it returns; every session carries on, answered by one server', async () => {
      const { tb, dir } = lab;
      await markPrimaryReplies(tb);
      const stateDir = `${dir}/state`;
      const pair = await startTakeoverLab(tb, dir, { ports: [PORT], instance: INSTANCE, gatewayArgs: c.stateDir ? ['--state-dir', stateDir] : [] });
      const primaryMac = await tb.mac(tb.ns.primary, tb.ifaces.primaryLan);
      try {
        const atClient = await startCapture(tb, tb.ns.client, 'c0', `tcp and src host ${tb.addr.vip}`, `${dir}/client.pcap`);
        const client = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, workload, `${dir}/client.jsonl`, { deadlineMs: 60_000 });
        await waitFor(() => pair.backup.flows('synchronised').length >= SESSIONS, { timeoutMs: 15_000, what: 'every session replicated' });

        if (c.restart === 'before-failure') {
          const gw = await pair.restartGateway(c.signal);
          await gw.waitForRecord((r) => r.msg === 'device state' && r.to === 'PRIMARY_ACTIVE', 'primary active again');
          await gw.waitForRecord((r) => r.msg === 'backup state' && r.to === 'standby', 'backup standing by again');
        }
        await pair.fail('link-down');
        const record = await waitFor(() => readLog<{ engine: { flowsTakenOver: number; flowsLost: number } }>(pair.logs.backupReport)[0],
          { timeoutMs: 15_000, what: 'the backup\'s takeover record' });
        // The record is written once the takeover is done (or when the detector stops).
        await waitFor(() => readLog(pair.logs.gatewayReport).length > 0, { timeoutMs: 10_000, what: 'the detector\'s record' });

        if (c.restart === 'after-takeover') {
          if (c.stateDir) {
            const kept = JSON.parse(fs.readFileSync(`${stateDir}/gateway-${INSTANCE}.json`, 'utf8')) as Record<string, unknown>;
            expect(kept).toMatchObject({ version: 1, epoch: 1, active: 'backup', fencedMac: primaryMac });
          }
          const gw = await pair.restartGateway(c.signal);
          const restored = await gw.waitForRecord((r) => r.msg === 'device state' && r.to === 'BACKUP_ACTIVE', 'the takeover known again');
          expect(restored.epoch).toBe(1);
          expect(String(restored.cause)).toMatch(c.stateDir ? /^restored/ : /the backup says it took over at epoch 1/);
          const fenced = await gw.waitForRecord((r) => r.msg === 'gateway fence engaged', 'the fence engaged again');
          expect(fenced.mac).toBe(primaryMac);
          // What an operator asks the restarted detector.
          const st = await pair.gatewayStatus(['--json']);
          expect(st.code, st.stderr).toBe(0);
          expect(JSON.parse(st.stdout)).toMatchObject({
            role: 'gateway', state: 'BACKUP_ACTIVE', epoch: 1, active: 'backup',
            protection: { protected: false }, lastTakeover: { epoch: 1, outcome: 'active', adopted: true },
          });
          const line = await pair.gatewayStatus();
          console.log(`lifecycle (${c.name}): ${line.stdout.trim()}`);
          expect(line.stdout).toMatch(/^t2cp: gateway BACKUP_ACTIVE \(epoch 1; backup serves from 198\.18\.1\.3 \(primary 198\.18\.1\.2, backup 198\.18\.1\.3\); .*UNPROTECTED: the backup took over: no host stands by behind it; last takeover: epoch 1 adopted after a restart\)/);
        }
        // The old primary's link comes back: it is told to stand down (its agent fences itself).
        await restorePrimary(tb, 'link-down');
        await pair.agent!.waitForRecord((r) => String(r.msg).startsWith('fenced'), 'the old primary stands down', 10_000);

        const run = await client.finished;
        await atClient.stop();
        const check = compareTakeover(readLog<ClientLogLine>(`${dir}/client.jsonl`), readLog<ServiceLogLine>(pair.logs.backup));
        console.log(`lifecycle (${c.name}): exact ${check.exact}/${SESSIONS}, taken over ${record.engine.flowsTakenOver}, lost ${record.engine.flowsLost}; ` +
          `detector's device states ${JSON.stringify(pair.gateway!.records.filter((r) => r.msg === 'device state').map((r) => `${r.to} (${r.cause})`))}`);
        expect(run.code, run.stderr).toBe(0);
        expect(check.mismatches).toEqual([]);
        expect(check.exact).toBe(SESSIONS);
        expect(record.engine.flowsTakenOver).toBe(SESSIONS);
        expect(record.engine.flowsLost).toBe(0);
        // One server answers: once the backup's first segment reached the client, none of the primary's.
        const answered = await answeredByOne(`${dir}/client.pcap`);
        expect(answered.fromBackup).toBeGreaterThan(0);
        expect(answered.lateFromPrimary).toEqual([]);
        // One takeover, one epoch: the restarted detector began none of its own.
        expect(pair.gateway!.records.filter((r) => r.msg === 'takeover begins')).toHaveLength(c.restart === 'before-failure' ? 1 : 0);
      } finally {
        await pair.stop();
      }
      expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
    });
  });
}

describe('lifecycle: the old primary\'s agent is killed after it stood down and starts again', () => {
  const lab = useLab('lifeagent');

  // With --state-dir the agent kept that it stood down: started again (as
  // systemd's Restart= would), it fences before it listens, from its file,
  // not from what a detector tells it later.
  it('fences at start from its state file; every session carries on, answered by one server', async () => {
    const { tb, dir } = lab;
    await markPrimaryReplies(tb);
    const stateDir = `${dir}/agent-state`;
    const pair = await startTakeoverLab(tb, dir, { ports: [PORT], instance: INSTANCE, agentArgs: ['--state-dir', stateDir] });
    try {
      const atClient = await startCapture(tb, tb.ns.client, 'c0', `tcp and src host ${tb.addr.vip}`, `${dir}/client.pcap`);
      const client = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, workload, `${dir}/client.jsonl`, { deadlineMs: 60_000 });
      await waitFor(() => pair.backup.flows('synchronised').length >= SESSIONS, { timeoutMs: 15_000, what: 'every session replicated' });
      await pair.fail('link-down');
      await waitFor(() => readLog(pair.logs.backupReport).length > 0, { timeoutMs: 15_000, what: 'the backup\'s takeover record' });
      await restorePrimary(tb, 'link-down');
      await pair.agent!.waitForRecord((r) => String(r.msg).startsWith('fenced'), 'the old primary stands down', 10_000);
      const kept = JSON.parse(fs.readFileSync(`${stateDir}/primary-${INSTANCE}.json`, 'utf8')) as Record<string, unknown>;
      expect(kept).toMatchObject({ version: 1, epoch: 1, stoodDown: true });

      const agent = await pair.restartAgent('SIGKILL');
      const fenced = agent.records.findIndex((r) => String(r.msg).startsWith('fenced'));
      const started = agent.records.findIndex((r) => r.msg === 'primary agent started');
      expect(fenced).toBeGreaterThanOrEqual(0);
      expect(fenced).toBeLessThan(started);
      expect(String(agent.records[fenced]!.cause)).toMatch(/^restored: this primary stood down at epoch 1/);

      const run = await client.finished;
      await atClient.stop();
      const check = compareTakeover(readLog<ClientLogLine>(`${dir}/client.jsonl`), readLog<ServiceLogLine>(pair.logs.backup));
      expect(run.code, run.stderr).toBe(0);
      expect(check.mismatches).toEqual([]);
      expect(check.exact).toBe(SESSIONS);
      const answered = await answeredByOne(`${dir}/client.pcap`);
      expect(answered.lateFromPrimary).toEqual([]);
    } finally {
      await pair.stop();
    }
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

describe('lifecycle: t2cp backup is killed after a takeover and starts again', () => {
  const lab = useLab('lifebackup');

  // With --state-dir the backup kept its takeover and pinned its kernel
  // translator: SIGKILLed and started again with the same command (as
  // systemd's Restart= would), it reclaims the taken-over connections, which
  // carry on byte-exact. The bpffs lives in a mount namespace of the test's
  // own (a holder process); both backup processes enter it.
  it('reclaims the taken-over connections, which carry on byte-exact', async () => {
    const { tb, dir } = lab;
    const holder = tb.spawn(tb.ns.backup, ['unshare', '--mount', 'sh', '-c',
      'mount -t bpf t2cp-test-bpffs /sys/fs/bpf && echo ready && exec sleep 600']);
    let out = '';
    holder.stdout?.setEncoding('utf8').on('data', (d: string) => { out += d; });
    await waitFor(() => out.includes('ready'), { timeoutMs: 5_000, what: 'the bpffs holder' });
    const wrap = ['nsenter', '-t', String(holder.pid), '-m', '--'];
    const pair = await startTakeoverLab(tb, dir, { ports: [PORT], instance: INSTANCE, backupArgs: ['--state-dir', `${dir}/backup-state`], backupWrap: wrap });
    try {
      const client = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, workload, `${dir}/client.jsonl`, { deadlineMs: 60_000 });
      await waitFor(() => pair.backup.flows('synchronised').length >= SESSIONS, { timeoutMs: 15_000, what: 'every session replicated' });
      await pair.fail('link-down');
      const kept = await waitFor(() => pair.backup.records.find((r) => r.msg === 'takeover kept'),
        { timeoutMs: 15_000, what: 'the takeover kept' });
      expect(kept.pinned).toBe(`/sys/fs/bpf/t2cp-${INSTANCE}`);

      const again = await pair.restartBackup('SIGKILL');
      const reclaimed = again.records.find((r) => String(r.msg).startsWith('reclaimed the takeover'))!;
      console.log(`lifecycle (backup restart): ${JSON.stringify(reclaimed)}`);
      expect(reclaimed).toMatchObject({ epoch: 1, pinned: `/sys/fs/bpf/t2cp-${INSTANCE}` });
      expect(Number(reclaimed.flows)).toBeGreaterThanOrEqual(1);
      // It answers as the side that serves, at the takeover's epoch.
      const st = await pair.backupStatus(['--json']);
      expect(st.code, st.stderr).toBe(0);
      expect(JSON.parse(st.stdout)).toMatchObject({ role: 'backup', state: 'active', epoch: 1 });

      const run = await client.finished;
      const check = compareTakeover(readLog<ClientLogLine>(`${dir}/client.jsonl`), readLog<ServiceLogLine>(pair.logs.backup));
      console.log(`lifecycle (backup restart): exact ${check.exact}/${SESSIONS}; client ${JSON.stringify(run.summary)}`);
      expect(run.code, run.stderr).toBe(0);
      expect(check.mismatches).toEqual([]);
      expect(check.exact).toBe(SESSIONS);
    } finally {
      await pair.stop();
      // The pins go with the holder's mount namespace, and the programs with them.
      holder.kill('SIGTERM');
      await new Promise((r) => (holder.exitCode !== null || holder.signalCode !== null ? r(null) : holder.once('exit', r)));
    }
    // The backup that reclaimed leaves the VIP where the takeover put it: the host serves.
    await tb.exec(tb.ns.backup, ['ip', 'addr', 'del', `${tb.addr.vip}/32`, 'dev', tb.ifaces.backupLan]);
    expect(await waitFor(async () => { const l = await kernelLeftovers(tb, INSTANCE); return l.length === 0 ? 'none' : false; },
      { timeoutMs: 5_000, what: 'nothing left once the pins went' })).toBe('none');
  });
});

describe('lifecycle: the backup dies and comes back', () => {
  const lab = useLab('lifebkdown');

  // Paper 003's "backup fails and comes back": the detector says the service
  // is unprotected while the backup is silent, and protected again once it
  // stands by. Connections opened after its return are protected and survive
  // a takeover; those open across its absence were seen mid-stream by the new
  // copy and are not: at the takeover their clients are reset, none hangs.
  it('is said unprotected, then protected; new sessions survive the takeover, the old ones are reset', async () => {
    const { tb, dir } = lab;
    const pair = await startTakeoverLab(tb, dir, { ports: [PORT], instance: INSTANCE });
    try {
      const view = async (): Promise<{ protection: { protected: boolean | null; why: string } }> => JSON.parse((await pair.gatewayStatus(['--json'])).stdout);
      const older: Workload = { seed: 21, sessions: [{ kind: 'rr', times: 3, count: 1500, intervalMs: 10, reqSize: [4, 600], respSize: [1, 3000] }] };
      const before = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, older, `${dir}/before.jsonl`, { deadlineMs: 60_000 });
      await waitFor(() => pair.backup.flows('synchronised').length >= 3, { timeoutMs: 15_000, what: 'the first sessions replicated' });

      pair.backup.child.kill('SIGKILL');
      const silent = await pair.gateway!.waitForRecord((r) => r.msg === 'service unprotected', 'the backup said silent');
      expect(silent).toMatchObject({ level: 'warn', why: 'the backup is silent' });
      expect((await view()).protection).toEqual({ protected: false, why: 'the backup is silent' });

      const seen = pair.gateway!.records.length;
      const again = await pair.restartBackup('SIGKILL');
      // The replica's copies of the first sessions, left by the run that died: ended, not left to answer at a takeover.
      expect(again.records.find((r) => String(r.msg).startsWith('ended the replica\'s connections'))).toMatchObject({ ended: 3 });
      await pair.gateway!.waitForRecord((r) => r.msg === 'service protected', 'protected again', 15_000, seen);
      expect((await view()).protection.protected).toBe(true);

      const after = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, workload, `${dir}/after.jsonl`, { deadlineMs: 60_000 });
      await waitFor(() => pair.backup.flows('synchronised').length >= SESSIONS, { timeoutMs: 15_000, what: 'the new sessions replicated' });
      await pair.fail('link-down');
      const record = await waitFor(() => readLog<{ engine: { flowsTakenOver: number; flowsLost: number; clientsReset: number } }>(pair.logs.backupReport)[0],
        { timeoutMs: 15_000, what: 'the backup\'s takeover record' });

      const [old, fresh] = [await before.finished, await after.finished];
      const check = compareTakeover(readLog<ClientLogLine>(`${dir}/after.jsonl`), readLog<ServiceLogLine>(pair.logs.backup));
      console.log(`lifecycle (backup dies and comes back): new sessions exact ${check.exact}/${SESSIONS}; old ones ${JSON.stringify(old.summary)}; ` +
        `record: taken over ${record.engine.flowsTakenOver}, lost ${record.engine.flowsLost}`);
      // The new sessions: protected, taken over, byte-exact.
      expect(fresh.code, fresh.stderr).toBe(0);
      expect(check.mismatches).toEqual([]);
      expect(check.exact).toBe(SESSIONS);
      expect(record.engine.flowsTakenOver).toBe(SESSIONS);
      expect(record.engine.flowsLost).toBe(0);
      // The old ones: never known to the new copy; reset by the backup's kernel at their next segment, not left waiting.
      const summary = old.summary as { sessions: number; failed: number; errors: string[]; ms: number };
      expect(old.code).toBe(1);
      expect(summary.failed).toBe(3);
      for (const e of summary.errors) expect(e).toMatch(/ECONNRESET/);
      expect(record.engine.clientsReset).toBeGreaterThanOrEqual(3);
    } finally {
      await pair.stop();
    }
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

describe('lifecycle: the backup dies and stays dead', () => {
  const lab = useLab('lifebkdead');

  // Paper 003's "backup fails and stays dead": the service is said unprotected
  // (at warning level, in the status) and the primary serves on; no takeover is
  // begun, the clients notice nothing.
  it('is said unprotected; the primary serves on, every session completes', async () => {
    const { tb, dir } = lab;
    const pair = await startTakeoverLab(tb, dir, { ports: [PORT], instance: INSTANCE });
    try {
      const client = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, workload, `${dir}/client.jsonl`, { deadlineMs: 60_000 });
      await waitFor(() => pair.backup.flows('synchronised').length >= SESSIONS, { timeoutMs: 15_000, what: 'every session replicated' });
      pair.backup.child.kill('SIGKILL');
      const silent = await pair.gateway!.waitForRecord((r) => r.msg === 'service unprotected', 'the backup said silent');
      expect(silent).toMatchObject({ level: 'warn', why: 'the backup is silent' });
      const run = await client.finished;
      const view = JSON.parse((await pair.gatewayStatus(['--json'])).stdout) as Record<string, unknown>;
      console.log(`lifecycle (backup stays dead): ${JSON.stringify(run.summary)}; ${(await pair.gatewayStatus()).stdout.trim()}`);
      // Every session answered and verified by the client, served by the primary to its end.
      expect(run.code, run.stderr).toBe(0);
      expect((run.summary as { ok: number }).ok).toBe(SESSIONS);
      expect(view).toMatchObject({ state: 'PRIMARY_ACTIVE', epoch: 0, active: 'primary', backup: 'silent', protection: { protected: false, why: 'the backup is silent' } });
      expect(pair.gateway!.records.filter((r) => r.msg === 'takeover begins')).toEqual([]);
    } finally {
      await pair.stop();
    }
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

describe('lifecycle: the replicas fall behind', () => {
  const lab = useLab('lifelag');

  // A replica far behind is a connection a failure now would stall or reset:
  // the backup's heartbeat counts the replicas past --lag-warn, the detector
  // says so at warning level and in its status, and says when none is left.
  it('is said at warning level and in the status, then cleared when they catch up', async () => {
    const { tb, dir } = lab;
    const pair = await startTakeoverLab(tb, dir, { ports: [PORT], instance: INSTANCE, backupArgs: ['--lag-warn', '256k', '--max-lag', '30000'] });
    try {
      const client = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, workload, `${dir}/client.jsonl`, { deadlineMs: 60_000 });
      await waitFor(() => pair.backup.flows('synchronised').length >= SESSIONS, { timeoutMs: 15_000, what: 'every session replicated' });
      const seen = pair.gateway!.records.length;
      pair.services.backup.kill('SIGSTOP'); // the replica's service stops reading and answering
      const said = await pair.gateway!.waitForRecord((r) => String(r.msg).startsWith('replicas lagging'), 'the lag said', 10_000, seen);
      const view = JSON.parse((await pair.gatewayStatus(['--json'])).stdout) as { flows?: { lagging?: number }; protection: { why: string } };
      console.log(`lifecycle (lagging): ${JSON.stringify(said)}; ${(await pair.gatewayStatus()).stdout.trim()}`);
      pair.services.backup.kill('SIGCONT');
      expect(said).toMatchObject({ level: 'warn' });
      expect(said.lagging).toBeGreaterThanOrEqual(1);
      expect(view.flows?.lagging ?? 0).toBeGreaterThanOrEqual(1);
      expect(view.protection.why).toMatch(/replica\(s\) lagging past --lag-warn/);
      await pair.gateway!.waitForRecord((r) => r.msg === 'no replica lagging any more', 'the lag cleared', 15_000, seen);
      const run = await client.finished;
      expect(run.code, run.stderr).toBe(0);
    } finally {
      pair.services.backup.kill('SIGCONT');
      await pair.stop();
    }
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

describe('lifecycle: the backup loses its mirror', () => {
  const lab = useLab('lifeblind');

  // Without its mirror port the backup's replicas follow nothing: it says
  // it is blind, the detector says the service unprotected and orders no
  // takeover when the primary dies then; once the mirror is back and the
  // backup stands by again, the takeover it held back runs. Each session
  // then ends byte-exact, or with a reset: none waits.
  it('is said blind, no takeover is ordered to it; once it sees again the takeover runs and no client waits', async () => {
    const { tb, dir } = lab;
    const pair = await startTakeoverLab(tb, dir, { ports: [PORT], instance: INSTANCE });
    try {
      const client = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, workload, `${dir}/client.jsonl`, { deadlineMs: 60_000 });
      await waitFor(() => pair.backup.flows('synchronised').length >= SESSIONS, { timeoutMs: 15_000, what: 'every session replicated' });

      await tb.exec(tb.ns.sw, ['ip', 'link', 'set', 'sm', 'down']);
      await waitFor(() => pair.backup.records.find((r) => String(r.msg).startsWith('the mirror port is down')), { timeoutMs: 5_000, what: 'the backup blind' });
      await pair.gateway!.waitForRecord((r) => r.msg === 'backup state' && r.to === 'blind', 'the detector hearing it blind');
      const st = JSON.parse((await pair.gatewayStatus(['--json'])).stdout) as { protection: { protected: boolean; why: string } };
      expect(st.protection).toEqual({ protected: false, why: 'the backup\'s mirror port is down: its replicas follow nothing' });

      await pair.fail('link-down');
      const failed = await pair.gateway!.waitForRecord((r) => r.msg === 'device state' && r.to === 'FAILED', 'no takeover: FAILED');
      expect(String(failed.cause)).toMatch(/^takeover impossible, the backup is blind/);
      expect(readLog(pair.logs.backupReport)).toEqual([]);

      await tb.exec(tb.ns.sw, ['ip', 'link', 'set', 'sm', 'up']);
      const record = await waitFor(() => readLog<{ engine: { flowsTakenOver: number; clientsReset: number; flowsUnprotected: number } }>(pair.logs.backupReport)[0],
        { timeoutMs: 15_000, what: 'the takeover once the backup sees again' });
      const run = await client.finished;
      const sessions = readLog<ClientLogLine>(`${dir}/client.jsonl`);
      const check = compareTakeover(sessions, readLog<ServiceLogLine>(pair.logs.backup));
      const reset = sessions.filter((c) => !c.ok && /ECONNRESET/.test(String(c.error)));
      console.log(`lifecycle (blind backup): exact ${check.exact}, reset ${reset.length} of ${SESSIONS}; record: taken over ${record.engine.flowsTakenOver}, ` +
        `unprotected ${record.engine.flowsUnprotected}, clients reset ${record.engine.clientsReset}; client ${JSON.stringify(run.summary)}`);
      // None waited: every session byte-exact or reset, and the record counts the same.
      expect(check.exact + reset.length).toBe(SESSIONS);
      expect(record.engine.flowsTakenOver).toBeGreaterThanOrEqual(check.exact);
      expect(record.engine.clientsReset).toBeGreaterThanOrEqual(reset.length);
    } finally {
      await pair.stop();
    }
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

describe('lifecycle: the backup loses its link to the detector', () => {
  const lab = useLab('lifedeaf');

  // The detector no longer hears the backup (its control traffic dropped at
  // the gateway): the service is said unprotected and, when the primary
  // dies then, no takeover is ordered to a backup that may not be there;
  // once it is heard again the takeover held back runs.
  it('is said silent, no takeover is ordered to it; heard again, the takeover runs and no client waits', async () => {
    const { tb, dir } = lab;
    const pair = await startTakeoverLab(tb, dir, { ports: [PORT], instance: INSTANCE });
    const table = `${tb.prefix.replace(/[^A-Za-z0-9_]/g, '_')}deaf`;
    try {
      const client = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, workload, `${dir}/client.jsonl`, { deadlineMs: 60_000 });
      await waitFor(() => pair.backup.flows('synchronised').length >= SESSIONS, { timeoutMs: 15_000, what: 'every session replicated' });
      // What the backup sends the detector, dropped at the gateway's input.
      const nft = await tb.exec(tb.ns.gateway, ['nft', `add table ip ${table}; add chain ip ${table} in { type filter hook input priority -10; }; ` +
        `add rule ip ${table} in ip saddr ${tb.addr.backup} udp dport 7390 drop`]);
      expect(nft.code, nft.stderr).toBe(0);
      const silent = await pair.gateway!.waitForRecord((r) => r.msg === 'backup state' && r.to === 'silent', 'the backup silent', 10_000);
      expect(silent).toBeDefined();
      expect(JSON.parse((await pair.gatewayStatus(['--json'])).stdout)).toMatchObject({ protection: { protected: false, why: 'the backup is silent' } });

      await pair.fail('link-down');
      const failed = await pair.gateway!.waitForRecord((r) => r.msg === 'device state' && r.to === 'FAILED', 'no takeover: FAILED');
      expect(String(failed.cause)).toMatch(/^takeover impossible, the backup is silent/);
      expect(readLog(pair.logs.backupReport)).toEqual([]);

      await tb.exec(tb.ns.gateway, ['nft', 'delete', 'table', 'ip', table]);
      const record = await waitFor(() => readLog<{ engine: { flowsTakenOver: number; clientsReset: number } }>(pair.logs.backupReport)[0],
        { timeoutMs: 15_000, what: 'the takeover once the backup is heard again' });
      const run = await client.finished;
      const sessions = readLog<ClientLogLine>(`${dir}/client.jsonl`);
      const check = compareTakeover(sessions, readLog<ServiceLogLine>(pair.logs.backup));
      const reset = sessions.filter((c) => !c.ok && /ECONNRESET/.test(String(c.error)));
      console.log(`lifecycle (backup unheard): exact ${check.exact}, reset ${reset.length} of ${SESSIONS}; record: taken over ${record.engine.flowsTakenOver}, ` +
        `clients reset ${record.engine.clientsReset}; client ${JSON.stringify(run.summary)}`);
      expect(check.exact + reset.length).toBe(SESSIONS);
      expect(record.engine.flowsTakenOver).toBeGreaterThanOrEqual(check.exact);
    } finally {
      await tb.exec(tb.ns.gateway, ['nft', 'delete', 'table', 'ip', table]);
      await pair.stop();
    }
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

describe('lifecycle: the former primary rejoins as the backup, then the new primary fails', () => {
  const lab = useLab('lifereprot');

  // Paper 003's "former primary comes back": after a takeover the host that
  // took over becomes the primary (an agent started next to its service) and
  // the repaired old primary stands by as the new backup, the switch's mirror
  // moved to it. Connections opened after that are protected: when the new
  // primary fails they carry on, byte-exact, on the former primary. Those the
  // first takeover carried were first seen mid-stream by the new backup:
  // unprotected, said so, and reset at the second takeover, none left waiting.
  it('is said protected again; the second takeover keeps the new sessions and resets the older ones', async () => {
    const { tb, dir } = lab;
    const pair = await startTakeoverLab(tb, dir, { ports: [PORT], instance: INSTANCE, gatewayArgs: ['--state-dir', `${dir}/state`] });
    try {
      const view = async (): Promise<Record<string, unknown>> => JSON.parse((await pair.gatewayStatus(['--json'])).stdout);
      const older: Workload = { seed: 31, sessions: [{ kind: 'rr', times: 3, count: 4000, intervalMs: 10, reqSize: [4, 600], respSize: [1, 3000] }] };
      const before = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, older, `${dir}/before.jsonl`, { deadlineMs: 90_000 });
      await waitFor(() => pair.backup.flows('synchronised').length >= 3, { timeoutMs: 15_000, what: 'the first sessions replicated' });
      await pair.fail('link-down');
      await waitFor(() => readLog(pair.logs.backupReport).length > 0, { timeoutMs: 15_000, what: 'the first takeover\'s record' });
      await restorePrimary(tb, 'link-down');
      await pair.agent!.waitForRecord((r) => String(r.msg).startsWith('fenced'), 'the old primary stands down', 10_000);

      await pair.reprotect();
      const reprotected = await view();
      console.log(`lifecycle (re-protection): ${(await pair.gatewayStatus()).stdout.trim()}`);
      expect(reprotected).toMatchObject({
        state: 'PRIMARY_ACTIVE', epoch: 1, active: 'primary', serving: tb.addr.backup, hosts: { primary: tb.addr.backup, backup: tb.addr.primary },
        swapped: true, backup: 'standby',
      });
      expect(pair.gateway!.records.find((r) => String(r.msg).startsWith('the former primary stands by'))).toBeDefined();
      // The sessions the first takeover carried are mid-stream for the new backup: said unprotected.
      await waitFor(async () => ((await view()).flows as { unprotected: number } | undefined)?.unprotected === 3,
        { timeoutMs: 10_000, what: 'the older sessions counted unprotected' });
      expect(((await view()).protection as { why: string }).why).toMatch(/3 open connection\(s\) it cannot continue/);
      const kept = JSON.parse(fs.readFileSync(`${dir}/state/gateway-${INSTANCE}.json`, 'utf8')) as Record<string, unknown>;
      expect(kept).toMatchObject({ epoch: 1, active: 'primary', swapped: true });
      expect(kept.fencedMac).toBeUndefined();

      const after = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, workload, `${dir}/after.jsonl`, { deadlineMs: 60_000 });
      await waitFor(() => pair.rejoined!.flows('synchronised').length >= SESSIONS, { timeoutMs: 15_000, what: 'the new sessions replicated on the former primary' });
      // The new primary's link goes down.
      const down = await tb.exec(tb.ns.backup, ['ip', 'link', 'set', tb.ifaces.backupLan, 'down']);
      expect(down.code, down.stderr).toBe(0);
      const record = await waitFor(() => readLog<{ trigger: { epoch: number }; engine: { flowsTakenOver: number; flowsLost: number; flowsUnprotected: number; clientsReset: number } }>(pair.logs.rejoinedReport)[0],
        { timeoutMs: 15_000, what: 'the second takeover\'s record' });
      const [old, fresh] = [await before.finished, await after.finished];
      const check = compareTakeover(readLog<ClientLogLine>(`${dir}/after.jsonl`), readLog<ServiceLogLine>(pair.logs.primary));
      console.log(`lifecycle (re-protection): new sessions exact ${check.exact}/${SESSIONS}; older ones ${JSON.stringify(old.summary)}; ` +
        `second record: epoch ${record.trigger.epoch}, taken over ${record.engine.flowsTakenOver}, lost ${record.engine.flowsLost}, ` +
        `unprotected ${record.engine.flowsUnprotected}, clients reset ${record.engine.clientsReset}`);
      expect(record.trigger.epoch).toBe(2);
      // The new sessions: protected, taken over by the former primary, byte-exact.
      expect(fresh.code, fresh.stderr).toBe(0);
      expect(check.mismatches).toEqual([]);
      expect(check.exact).toBe(SESSIONS);
      expect(record.engine.flowsTakenOver).toBe(SESSIONS);
      expect(record.engine.flowsLost).toBe(0);
      // The older ones: reset at the takeover, not left waiting.
      const summary = old.summary as { failed: number; errors: string[] };
      expect(old.code).toBe(1);
      expect(summary.failed).toBe(3);
      for (const e of summary.errors) expect(e).toMatch(/ECONNRESET/);
      expect(record.engine.clientsReset).toBeGreaterThanOrEqual(3);
      expect(await view()).toMatchObject({ state: 'BACKUP_ACTIVE', epoch: 2, active: 'backup', serving: tb.addr.primary });
    } finally {
      await pair.stop();
    }
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

for (const drain of [true, false]) {
  describe(`lifecycle: failback once the former primary stands by again, ${drain ? 'with' : 'without'} --drain`, () => {
    const lab = useLab('lifeback');

    // A planned switch back to the former primary after re-protection. Before it
    // asks, `t2cp takeover` says how many open connections the new backup cannot
    // continue (the ones the first takeover carried); with --drain it waits for
    // them to close and nobody is reset, without it their clients are reset at
    // once. The sessions opened since carry on either way.
    it(drain ? '--drain waits for the connections the backup cannot continue; nothing is reset'
      : 'says which connections end; their clients are reset, the newer sessions carry on', async () => {
      const { tb, dir } = lab;
      const pair = await startTakeoverLab(tb, dir, { ports: [PORT], instance: INSTANCE });
      try {
        // Long enough to outlast the first takeover and the re-protection, short enough to end within the drain.
        const older: Workload = { seed: 41, sessions: [{ kind: 'rr', times: 3, count: 900, intervalMs: 10, reqSize: [4, 600], respSize: [1, 3000] }] };
        const before = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, older, `${dir}/before.jsonl`, { deadlineMs: 90_000 });
        await waitFor(() => pair.backup.flows('synchronised').length >= 3, { timeoutMs: 15_000, what: 'the first sessions replicated' });
        await pair.fail('link-down');
        await waitFor(() => readLog(pair.logs.backupReport).length > 0, { timeoutMs: 15_000, what: 'the first takeover\'s record' });
        await restorePrimary(tb, 'link-down');
        await pair.agent!.waitForRecord((r) => String(r.msg).startsWith('fenced'), 'the old primary stands down', 10_000);
        await pair.reprotect();
        // Still under way after the switch (with --drain, once the older ones have closed).
        const newer: Workload = { seed: 42, sessions: [{ kind: 'rr', times: SESSIONS, count: drain ? 1400 : 800, intervalMs: 10, reqSize: [4, 600], respSize: [1, 3000] }] };
        const after = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, newer, `${dir}/after.jsonl`, { deadlineMs: 90_000 });
        await waitFor(() => pair.rejoined!.flows('synchronised').length >= SESSIONS, { timeoutMs: 15_000, what: 'the new sessions replicated on the former primary' });
        // The backup counts its open connections once a second: the older ones, unprotected, are counted.
        await waitFor(async () => {
          const st = await pair.backupStatus(['--json'], tb.ns.primary);
          return (JSON.parse(st.stdout) as { flows: { open?: { unprotected: number } } }).flows.open?.unprotected === 3;
        }, { timeoutMs: 10_000, what: 'the older sessions counted unprotected on the former primary' });

        const failback = await tb.exec(tb.ns.primary, ['node', distCli(), 'takeover', '--key-file', pair.keyFile, '--reason', 'failback',
          ...(drain ? ['--drain', '60000'] : []), '--json'], { timeoutMs: 90_000 });
        // How the former primary's backup saw the older ones end (or not): a last ACK its capture
        // missed is implied once the FIN is not repeated (final_ack_implied).
        const seen = await pair.rejoined!.counters();
        console.log(`lifecycle (failback${drain ? ', --drain' : ''}): ${failback.stderr.trim().replace(/\n/g, ' | ')}; former primary's backup: ` +
          `${JSON.stringify(Object.fromEntries(['flows_unprotected_ended', 'final_ack_implied', 'capture_kernel_drops'].map((k) => [k, seen[k] ?? 0])))}`);
        expect(failback.code, failback.stderr).toBe(0);
        expect(failback.stderr).toMatch(/t2cp: this takeover ends 3 open connection\(s\) the backup cannot continue/);
        if (drain) expect(failback.stderr).toMatch(/t2cp: drained: none is left/);
        else expect(failback.stderr).not.toMatch(/waiting/);
        expect(JSON.parse(failback.stdout)).toMatchObject({ ok: true, epoch: 2 });

        const [old, fresh] = [await before.finished, await after.finished];
        const record = await waitFor(() => readLog<{ engine: { flowsTakenOver: number; flowsLost: number; clientsReset: number } }>(pair.logs.rejoinedReport)[0],
          { timeoutMs: 15_000, what: 'the failback\'s record' });
        const check = compareTakeover(readLog<ClientLogLine>(`${dir}/after.jsonl`), readLog<ServiceLogLine>(pair.logs.primary));
        console.log(`lifecycle (failback${drain ? ', --drain' : ''}): older ${JSON.stringify(old.summary)}; new exact ${check.exact}/${SESSIONS}; ` +
          `record: taken over ${record.engine.flowsTakenOver}, lost ${record.engine.flowsLost}, clients reset ${record.engine.clientsReset}`);
        expect(fresh.code, fresh.stderr).toBe(0);
        expect(check.mismatches).toEqual([]);
        expect(check.exact).toBe(SESSIONS);
        expect(record.engine.flowsTakenOver).toBe(SESSIONS);
        expect(record.engine.flowsLost).toBe(0);
        if (drain) {
          expect(old.code, old.stderr).toBe(0);
          expect(record.engine.clientsReset).toBe(0);
        } else {
          const summary = old.summary as { failed: number; errors: string[] };
          expect(summary.failed).toBe(3);
          for (const e of summary.errors) expect(e).toMatch(/ECONNRESET/);
          expect(record.engine.clientsReset).toBeGreaterThanOrEqual(3);
        }
        // The planned switch: the new primary stood down; the former primary serves.
        const view = JSON.parse((await pair.gatewayStatus(['--json'])).stdout) as Record<string, unknown>;
        expect(view).toMatchObject({ state: 'BACKUP_ACTIVE', epoch: 2, serving: tb.addr.primary, lastTakeover: { epoch: 2, cause: 'planned' } });
        await pair.agent!.waitForRecord((r) => String(r.msg).startsWith('fenced'), 'the new primary stood down', 5_000);
      } finally {
        await pair.stop();
      }
      expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
    });
  });
}
