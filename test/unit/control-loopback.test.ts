// The control plane over real UDP on 127.0.0.1 (ephemeral ports, no root): a
// real primary agent, a real failure detector, and a small fake backup
// endpoint (a Channel answering TAKEOVER with TAKEOVER_REPORT). Between the
// detector and the backup sits a tap, a UDP relay that keeps a copy of every
// datagram the detector sends, for the replay test. 10 ms heartbeats, 3 misses.
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import type { AgentState } from '../../src/agent/agent-state.js';
import { PrimaryAgent, type PrimaryAgentOptions } from '../../src/agent/primary-node.js';
import type { BackupState } from '../../src/control/bodies.js';
import { Channel, sameEndpoint } from '../../src/control/channel.js';
import { systemClock } from '../../src/control/clock.js';
import { encode } from '../../src/control/messages.js';
import { requestStatus } from '../../src/control/status-request.js';
import { requestTakeover } from '../../src/control/takeover-request.js';
import { statusDetail } from '../../src/cli-control.js';
import type { Transition } from '../../src/detector/device-states.js';
import type { DetectorState } from '../../src/detector/detector-state.js';
import { GatewayNode, type GatewayNodeOptions } from '../../src/detector/gateway-node.js';
import type { Logger } from '../../src/log.js';
import type { Endpoint } from '../../src/options.js';

const key = randomBytes(32);
const LO = '127.0.0.1';
const INTERVAL_MS = 10;
const HARD_US = 3 * INTERVAL_MS * 1000;
/** What a loaded 2-CPU machine may add to the hard timeout before the verdict. */
const SLACK_US = 300_000;
// The old primary's MAC, as --primary-mac gives it (the fake fence learns nothing).
const MAC = '02:00:5e:00:00:0a';
const quiet: Logger = { info: () => {}, warn: () => {}, error: () => {} };
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function waitUntil(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

async function udp(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, LO, r));
  cleanups.push(() => new Promise<void>((r) => s.close(() => r())));
  return s;
}

const endpointOf = (s: dgram.Socket): Endpoint => ({ address: LO, port: s.address().port });

/** Relays detector <-> backup, keeping what the detector sent. */
async function tap(detector: Endpoint, backup: () => Endpoint): Promise<{ at: Endpoint; captured: Buffer[] }> {
  const s = await udp();
  const captured: Buffer[] = [];
  s.on('message', (buf, r) => {
    const from = { address: r.address, port: r.port };
    if (sameEndpoint(from, detector)) {
      captured.push(Buffer.from(buf));
      s.send(buf, backup().port, LO);
    } else s.send(buf, detector.port, LO);
  });
  return { at: endpointOf(s), captured };
}

/** The backup's control endpoint, reduced to what the detector and `t2cp takeover` need. */
class FakeBackup {
  state: BackupState = 'standby';
  epoch = 0;
  /** Its open connections, as its heartbeat says them. */
  flows: { protected: number; unprotected: number; lagging?: number } | undefined;
  readonly epochs = new Set<number>();
  ordersAccepted = 0;
  firstOrderUs = 0;
  private cli: Endpoint | undefined;
  private timer: NodeJS.Timeout;
  constructor(readonly ch: Channel, detector: Endpoint) {
    ch.onMessage(({ msg, from }) => {
      if (msg.type !== 'TAKEOVER') return;
      if (sameEndpoint(from, detector)) {
        this.ordersAccepted++;
        if (this.firstOrderUs === 0) this.firstOrderUs = systemClock.monoUs();
        this.epochs.add(msg.body.epoch);
        this.state = 'active';
        this.epoch = msg.body.epoch;
        const report = { epoch: this.epoch, ok: true, flows: 0 };
        ch.send(from, 'TAKEOVER_REPORT', report);
        if (this.cli) ch.send(this.cli, 'TAKEOVER_REPORT', report);
        this.cli = undefined;
      } else if (msg.body.planned) {
        this.cli = from; // `t2cp takeover`: ask the detector, answer when ordered
        ch.send(detector, 'TAKEOVER', { epoch: 0, reason: msg.body.reason, planned: true });
      }
    });
    this.timer = setInterval(() => ch.send(detector, 'BACKUP_HEARTBEAT', { state: this.state, epoch: this.epoch, ...(this.flows ? { flows: this.flows } : {}) }), INTERVAL_MS);
  }
  stop(): Promise<void> {
    clearInterval(this.timer);
    return this.ch.close();
  }
}

function fence() {
  const f = {
    engaged: 0, released: 0, lifted: 0, engagedAtUs: 0, mac: undefined as string | undefined, hosts: undefined as [string, string] | undefined,
    engage: (_mac?: string) => {}, release: () => {}, lift: () => {}, swapped: (_p: string, _b: string) => {},
  };
  f.engage = (mac?: string) => {
    f.engaged++;
    f.engagedAtUs = systemClock.monoUs();
    f.mac = mac;
  };
  f.release = () => void f.released++;
  f.lift = () => void f.lifted++;
  f.swapped = (p: string, b: string) => void (f.hosts = [p, b]);
  return f;
}

async function pair(agentFence = fence(), detectorExtra: Partial<GatewayNodeOptions> = {}, detectorLog: Logger = quiet) {
  const reserve = await udp(); // the detector's port, reserved then freed
  const detectorAt = endpointOf(reserve);
  await new Promise<void>((r) => reserve.close(() => r()));
  cleanups.pop();
  const backupCh = await Channel.open({ key, sender: 'backup:test', bind: { address: LO, port: 0 } });
  const t = await tap(detectorAt, () => backupCh.address());
  const backup = new FakeBackup(backupCh, t.at);
  cleanups.push(() => backup.stop());
  const newAgent = (port: number, f = agentFence, extra: Partial<PrimaryAgentOptions> = {}) =>
    new PrimaryAgent({ instance: 'test', key, listen: { address: LO, port }, detector: detectorAt, intervalMs: INTERVAL_MS, selfFenceAfterMs: 0, ...extra },
      f, quiet, () => ({ alive: true, listening: true }));
  const agent = newAgent(0);
  await agent.start();
  cleanups.push(() => agent.stop());
  /** A detector on detectorAt (a new one after the first stopped: a restart), with extra options. */
  const agentAt = agent.address();
  const newDetector = (f: ReturnType<typeof fence>, extra: Partial<GatewayNodeOptions>, log: Logger = quiet) => new GatewayNode({
    instance: 'test', key, listen: detectorAt, primary: agentAt, backup: t.at, mode: 'both',
    timing: { intervalUs: INTERVAL_MS * 1000, softMisses: 1, hardMisses: 3, probeIntervalUs: INTERVAL_MS * 500 },
    backupTimeoutUs: 1_000_000, takeoverTimeoutUs: 3_000_000, standDownTimeoutUs: 500_000, ...extra,
  }, f, log);
  const gatewayFence = fence();
  const detector = newDetector(gatewayFence, detectorExtra, detectorLog);
  const transitions: Array<Transition & { monoUs: number }> = [];
  detector.states.subscribe((tr) => transitions.push({ ...tr, monoUs: systemClock.monoUs() }));
  await detector.start();
  cleanups.push(() => detector.stop());
  await waitUntil(() => detector.states.state === 'PRIMARY_ACTIVE' && detector.states.backup === 'standby', 3000, 'primary and backup heard');
  return { detector, agent, agentAt, backup, backupCh, tap: t, agentFence, gatewayFence, transitions, newAgent, newDetector };
}

/** The old primary's agent starts again after a takeover at epoch 1: told to stand down, it fences; `detector` begins no takeover. */
async function returnsAndStandsDown(p: Awaited<ReturnType<typeof pair>>, detector: GatewayNode): Promise<void> {
  const returning = p.newAgent(p.agentAt.port, fence());
  await returning.start();
  cleanups.push(() => returning.stop());
  await waitUntil(() => returning.fenced === 'stand-down', 2000, 'the old primary to stand down');
  expect(returning.epoch).toBe(1);
  expect(detector.takeovers()).toEqual([]);
  expect([...p.backup.epochs]).toEqual([1]);
}

describe('control plane on loopback (10 ms heartbeats)', () => {
  it('a silent primary is declared dead within the hard timeout; the backup gets exactly one epoch; forged and replayed TAKEOVERs are refused', async () => {
    const p = await pair();
    // Steady first: a few dozen heartbeats, and no takeover from jitter alone.
    await waitUntil(() => p.detector.stats.heartbeats >= 30, 3000, '30 heartbeats');
    expect(p.detector.states.state).not.toBe('TAKING_OVER');
    expect(p.detector.takeovers()).toEqual([]);
    const stoppedUs = systemClock.monoUs();
    await p.agent.stop();
    await waitUntil(() => p.detector.states.state === 'BACKUP_ACTIVE', 3000, 'BACKUP_ACTIVE');
    const verdict = p.transitions.find((t) => t.to === 'TAKING_OVER')!;
    expect(verdict.epoch).toBe(1);
    expect(verdict.monoUs - stoppedUs).toBeLessThanOrEqual(HARD_US + SLACK_US);
    const rec = p.detector.takeovers()[0]!;
    expect(rec).toMatchObject({ epoch: 1, cause: 'host', outcome: 'active', fence: { result: 'engaged' }, backupReport: { epoch: 1, ok: true } });
    expect(rec.detectionLatencyUs).toBeGreaterThanOrEqual(HARD_US);
    expect(p.gatewayFence.engaged).toBe(1);
    expect([...p.backup.epochs]).toEqual([1]);

    // A forged TAKEOVER (another key) and a captured real one sent again: refused, counted, no new epoch.
    const captured = p.tap.captured.filter((b) => b[5] === 4 /* TAKEOVER */);
    expect(captured.length).toBeGreaterThan(0);
    const before = p.backup.ordersAccepted;
    const attacker = await udp();
    const to = p.backupCh.address();
    attacker.send(encode(randomBytes(32), 'gateway:test', Date.now() * 1000, 99, 'TAKEOVER', { epoch: 2, reason: 'forged', planned: false }), to.port, LO);
    attacker.send(captured[0]!, to.port, LO);
    attacker.send(captured.at(-1)!, to.port, LO);
    await waitUntil(() => p.backupCh.counters().rejected['bad-hmac'] === 1 && p.backupCh.counters().rejected.replay === 2, 2000, 'refusals counted');
    expect(p.backup.ordersAccepted).toBe(before);
    expect([...p.backup.epochs]).toEqual([1]);

    // The old primary comes back: it asks first, learns it was replaced, and fences at once.
    const fence2 = fence();
    const again = p.newAgent(p.agentAt.port, fence2);
    await again.start();
    cleanups.push(() => again.stop());
    await waitUntil(() => again.fenced === 'stand-down', 2000, 'the old primary to stand down');
    expect(again.epoch).toBe(1);
    expect(fence2.engaged).toBe(1);
    expect(p.detector.states.state).toBe('BACKUP_ACTIVE');
  });

  it('planned (`t2cp takeover` through the backup): the primary stands down before the backup is ordered', async () => {
    const p = await pair();
    const report = await requestTakeover({ control: p.backupCh.address(), key, reason: 'maintenance', timeoutMs: 3000 });
    expect(report).toMatchObject({ epoch: 1, ok: true });
    expect(p.agent.fenced).toBe('stand-down');
    expect(p.agentFence.engaged).toBe(1);
    expect(p.agentFence.engagedAtUs).toBeLessThan(p.backup.firstOrderUs);
    await waitUntil(() => p.detector.states.state === 'BACKUP_ACTIVE', 2000, 'BACKUP_ACTIVE');
    const rec = p.detector.takeovers()[0]!;
    expect(rec).toMatchObject({ cause: 'planned', planned: true, standDown: { acked: true }, outcome: 'active', detectionLatencyUs: null });
    expect(rec.takeoverSentAfterUs!).toBeGreaterThanOrEqual(rec.standDown.afterUs!);
    const decisive = p.transitions.filter((t) => ['TAKING_OVER', 'BACKUP_ACTIVE', 'FAILED'].includes(t.to)).map((t) => t.to);
    expect(decisive).toEqual(['TAKING_OVER', 'BACKUP_ACTIVE']);
    // Well past the hard timeout, the fenced old primary still heartbeating: nothing more happens.
    const heard = p.detector.stats.heartbeats;
    await waitUntil(() => p.detector.stats.heartbeats >= heard + 10, 2000, '10 more heartbeats');
    expect(p.detector.states.state).toBe('BACKUP_ACTIVE');
    expect(p.detector.takeovers()).toHaveLength(1);
    expect([...p.backup.epochs]).toEqual([1]);
  });

  it('planned, but the primary cannot fence: the backup is ordered at --stand-down-timeout, no second verdict meanwhile', async () => {
    const broken = fence();
    broken.engage = () => {
      throw new Error('no nft here');
    };
    const p = await pair(broken);
    const report = await requestTakeover({ control: p.backupCh.address(), key, reason: 'maintenance', timeoutMs: 3000 });
    expect(report).toMatchObject({ epoch: 1, ok: true });
    expect(p.agent.fenced).toBe('none');
    expect(p.agent.stats.fenceErrors).toBeGreaterThan(1); // tried again at every STAND_DOWN
    await waitUntil(() => p.detector.takeovers().length === 1, 2000, 'the record');
    const rec = p.detector.takeovers()[0]!;
    expect(rec.standDown).toEqual({ acked: false, afterUs: null });
    expect(rec.takeoverSentAfterUs!).toBeGreaterThanOrEqual(500_000);
    expect(p.detector.states.history().filter((t) => t.to === 'TAKING_OVER')).toHaveLength(1);
  });

  it('`t2cp takeover` with the wrong key times out and says why', async () => {
    const p = await pair();
    await expect(requestTakeover({ control: p.backupCh.address(), key: randomBytes(32), reason: 'x', timeoutMs: 300, resendMs: 100 }))
      .rejects.toMatchObject({ code: 'T2CP_TIMEOUT' });
    expect(p.backupCh.counters().rejected['bad-hmac']).toBeGreaterThanOrEqual(1);
    expect(p.detector.states.state).toBe('PRIMARY_ACTIVE');
  });


  it('a detector restarted after a takeover restores it from its state file: fenced again, the returning primary stands down', async () => {
    const saved: DetectorState[] = [];
    const p = await pair(fence(), { primaryMac: MAC, saveState: (st) => void saved.push(st) });
    await p.agent.stop();
    await waitUntil(() => p.detector.states.state === 'BACKUP_ACTIVE', 3000, 'BACKUP_ACTIVE');
    // Kept before the backup was ordered, with the MAC the fence drops.
    expect(saved[0]).toMatchObject({ version: 1, epoch: 1, active: 'backup', fencedMac: MAC });
    expect(p.gatewayFence.mac).toBe(MAC);

    // The detector restarts (its fence goes with it), from what it kept.
    await p.detector.stop();
    const fence2 = fence();
    const again = p.newDetector(fence2, { primaryMac: undefined, restored: saved.at(-1), saveState: (st) => void saved.push(st) });
    await again.start();
    cleanups.push(() => again.stop());
    expect(again.states).toMatchObject({ state: 'BACKUP_ACTIVE', epoch: 1, activeSide: 'backup' });
    await waitUntil(() => fence2.engaged === 1, 2000, 'the fence engaged again');
    expect(fence2.mac).toBe(MAC);

    // The old primary comes back: told to stand down, it fences; no new takeover, no new epoch.
    await returnsAndStandsDown(p, again);
  });

  it('a detector restarted without its state adopts the backup\'s higher epoch: fenced, the returning primary stands down', async () => {
    const p = await pair(fence(), { primaryMac: MAC });
    await p.agent.stop();
    await waitUntil(() => p.detector.states.state === 'BACKUP_ACTIVE', 3000, 'BACKUP_ACTIVE');
    await p.detector.stop();
    const fence2 = fence();
    const again = p.newDetector(fence2, { primaryMac: MAC });
    const seen: Transition[] = [];
    again.states.subscribe((tr) => seen.push(tr));
    await again.start();
    cleanups.push(() => again.stop());
    // It starts knowing nothing (epoch 0); the backup's heartbeat says active at epoch 1.
    await waitUntil(() => again.states.state === 'BACKUP_ACTIVE', 2000, 'the takeover adopted');
    expect(again.states.epoch).toBe(1);
    expect(seen.filter((tr) => tr.subject === 'device').map((tr) => tr.to)).toEqual(['BACKUP_ACTIVE']);
    await waitUntil(() => fence2.engaged === 1, 2000, 'the fence engaged');
    expect(fence2.mac).toBe(MAC);
    await returnsAndStandsDown(p, again);
  });

  it('t2cp status --role gateway: the cluster view; a backup with connections it cannot continue is said at warning level', async () => {
    const said: Array<{ level: string; msg: string; fields?: Record<string, unknown> }> = [];
    const log: Logger = {
      info: (msg, fields) => void said.push({ level: 'info', msg, fields }),
      warn: (msg, fields) => void said.push({ level: 'warn', msg, fields }),
      error: (msg, fields) => void said.push({ level: 'error', msg, fields }),
    };
    const p = await pair(fence(), {}, log);
    p.backup.flows = { protected: 3, unprotected: 0 };
    const ask = () => requestStatus({ to: p.detector.address(), role: 'gateway', key, timeoutMs: 2000 });
    await waitUntil(() => p.detector.view().flows?.protected === 3, 2000, 'the backup\'s counts heard');
    expect(await ask()).toMatchObject({
      role: 'gateway', state: 'PRIMARY_ACTIVE', epoch: 0, active: 'primary', backup: 'standby',
      protection: { protected: true, why: 'the backup stands by' }, flows: { protected: 3, unprotected: 0 },
    });
    p.backup.flows = { protected: 3, unprotected: 2 };
    await waitUntil(() => said.some((l) => l.msg.startsWith('connections unprotected')), 2000, 'the warning');
    expect(said.find((l) => l.msg.startsWith('connections unprotected'))).toMatchObject({ level: 'warn', fields: { unprotected: 2, protected: 3 } });
    p.backup.flows = { protected: 5, unprotected: 0 };
    await waitUntil(() => said.some((l) => l.msg === 'every open connection protected again'), 2000, 'protected again');
    // A replica lagging past its --lag-warn: said too, and in the view's why.
    p.backup.flows = { protected: 5, unprotected: 0, lagging: 1 };
    await waitUntil(() => said.some((l) => l.msg.startsWith('replicas lagging')), 2000, 'the lag warning');
    expect(said.find((l) => l.msg.startsWith('replicas lagging'))).toMatchObject({ level: 'warn', fields: { lagging: 1 } });
    expect((await ask()) as { protection: { why: string } }).toMatchObject({ protection: { why: 'the backup stands by; 1 replica(s) lagging past --lag-warn' } });
    p.backup.flows = { protected: 5, unprotected: 0, lagging: 0 };

    await p.agent.stop();
    await waitUntil(() => p.detector.states.state === 'BACKUP_ACTIVE' && p.detector.states.backup === 'active', 3000, 'BACKUP_ACTIVE, the backup heard active');
    const after = await ask();
    expect(after).toMatchObject({
      role: 'gateway', state: 'BACKUP_ACTIVE', epoch: 1, active: 'backup', backup: 'active',
      protection: { protected: false }, lastTakeover: { epoch: 1, outcome: 'active', cause: 'host' },
    });
    expect(statusDetail(after)).toMatch(/^; backup serves from 127\.0\.0\.1 \(primary 127\.0\.0\.1, backup 127\.0\.0\.1\); backup active; UNPROTECTED: the backup took over: no host stands by behind it; last takeover: epoch 1 active \(host\) at /);
  });

  it('an agent restarted after it stood down fences again at start from its state file, whatever a detector without state says', async () => {
    const saved: AgentState[] = [];
    const p = await pair();
    await p.agent.stop();
    // The same agent, keeping its state, stands down at a planned takeover.
    const keeping = p.newAgent(p.agentAt.port, fence(), { saveState: (st) => void saved.push(st) });
    await keeping.start();
    cleanups.push(() => keeping.stop());
    await waitUntil(() => p.detector.states.state === 'PRIMARY_ACTIVE', 2000, 'the agent heard again');
    await requestTakeover({ control: p.backupCh.address(), key, reason: 'maintenance', timeoutMs: 3000 });
    expect(keeping.fenced).toBe('stand-down');
    expect(saved.at(-1)).toMatchObject({ version: 1, epoch: 1, stoodDown: true });

    // Everything restarts; the detector knows nothing and the backup is gone: it will say the primary serves.
    await keeping.stop();
    await p.detector.stop();
    await p.backup.stop();
    const detector = p.newDetector(fence(), {});
    await detector.start();
    cleanups.push(() => detector.stop());
    const agentFence = fence();
    const restarted = p.newAgent(p.agentAt.port, agentFence, { restored: saved.at(-1) });
    await restarted.start();
    cleanups.push(() => restarted.stop());
    // Fenced before it listened, and it stays so though the detector calls it active.
    expect(restarted.fenced).toBe('stand-down');
    expect(agentFence.engaged).toBe(1);
    await waitUntil(() => detector.states.state === 'PRIMARY_ACTIVE', 2000, 'the detector hearing the primary');
    await waitUntil(() => restarted.stats.heartbeats >= 20, 2000, '20 heartbeats');
    expect(restarted.fenced).toBe('stand-down');
    expect(agentFence.released).toBe(0);
  });
});

describe('re-protection (two hosts: 127.0.0.1 and 127.0.0.2)', () => {
  const A = '127.0.0.1';
  const B = '127.0.0.2';
  const healthy = () => ({ alive: true, listening: true });
  const agentOn = (address: string, port: number, detector: Endpoint) =>
    new PrimaryAgent({ instance: 'test', key, listen: { address, port }, detector, intervalMs: INTERVAL_MS, selfFenceAfterMs: 0 }, fence(), quiet, healthy);
  const backupOn = async (address: string, port: number, detector: Endpoint) => {
    const b = new FakeBackup(await Channel.open({ key, sender: `backup:${address}`, bind: { address, port } }), detector);
    cleanups.push(() => b.stop());
    return b;
  };

  it('an agent on the host that took over makes it the primary, the former primary stands by as the backup and takes the next failure', async () => {
    const reserve = await udp();
    const detectorAt = endpointOf(reserve);
    await new Promise<void>((r) => reserve.close(() => r()));
    cleanups.pop();
    const agentA = agentOn(A, 0, detectorAt);
    await agentA.start();
    const backupB = await backupOn(B, 0, detectorAt);
    const [agentPort, backupPort] = [agentA.address().port, backupB.ch.address().port];
    const saved: DetectorState[] = [];
    const gatewayFence = fence();
    const detector = new GatewayNode({
      instance: 'test', key, listen: detectorAt, primary: { address: A, port: agentPort }, backup: { address: B, port: backupPort }, mode: 'both',
      timing: { intervalUs: INTERVAL_MS * 1000, softMisses: 1, hardMisses: 3, probeIntervalUs: INTERVAL_MS * 500 },
      backupTimeoutUs: 1_000_000, takeoverTimeoutUs: 3_000_000, standDownTimeoutUs: 500_000, primaryMac: MAC, saveState: (st) => void saved.push(st),
    }, gatewayFence, quiet);
    await detector.start();
    cleanups.push(() => detector.stop());
    await waitUntil(() => detector.states.state === 'PRIMARY_ACTIVE' && detector.states.backup === 'standby', 3000, 'A primary, B standing by');

    // A fails: B takes over, A's MAC fenced.
    await agentA.stop();
    await waitUntil(() => detector.states.state === 'BACKUP_ACTIVE', 3000, 'the first takeover');
    expect(gatewayFence.mac).toBe(MAC);

    // An agent on B (the primary's port): B is the primary now, A is to stand by as the backup.
    const agentB = agentOn(B, agentPort, detectorAt);
    await agentB.start();
    cleanups.push(() => agentB.stop());
    await waitUntil(() => detector.states.state === 'PRIMARY_ACTIVE', 2000, 're-protection');
    expect(detector.states).toMatchObject({ epoch: 1, activeSide: 'primary', backup: 'unknown' });
    expect(detector.view()).toMatchObject({ serving: B, hosts: { primary: B, backup: A }, swapped: true, protection: { protected: null } });
    expect(saved.at(-1)).toMatchObject({ epoch: 1, active: 'primary', swapped: true, fencedMac: MAC });
    expect(gatewayFence.hosts).toEqual([B, A]);
    await waitUntil(() => agentB.stats.heartbeats >= 10, 2000, 'B heartbeating');
    expect(agentB.fenced).toBe('none');
    expect(gatewayFence.lifted).toBe(0); // A not heard standing by: still fenced

    // t2cp backup on A (the backup's port): standing by, the service protected, A's fence lifted.
    const backupA = await backupOn(A, backupPort, detectorAt);
    await waitUntil(() => detector.states.backup === 'standby', 2000, 'A standing by');
    expect(detector.view().protection).toEqual({ protected: true, why: 'the backup stands by' });
    expect(gatewayFence.lifted).toBe(1);
    expect(saved.at(-1)).toEqual(expect.not.objectContaining({ fencedMac: expect.anything() }));
    expect(backupB.ordersAccepted).toBe(1);

    // B fails: A takes over at epoch 2; the fence drops what it learnt for B, not --primary-mac (A's).
    await agentB.stop();
    await waitUntil(() => detector.states.state === 'BACKUP_ACTIVE' && detector.states.epoch === 2, 3000, 'the second takeover');
    expect([...backupA.epochs]).toEqual([2]);
    expect(gatewayFence.engaged).toBe(2);
    expect(gatewayFence.mac).not.toBe(MAC);
    expect(detector.view()).toMatchObject({ serving: A, hosts: { primary: B, backup: A }, active: 'backup' });
    expect(saved.at(-1)).toMatchObject({ epoch: 2, active: 'backup', swapped: true });

    // A detector restarted from that file knows the roles: B's returning agent is told to stand down.
    await detector.stop();
    const again = new GatewayNode({
      instance: 'test', key, listen: detectorAt, primary: { address: A, port: agentPort }, backup: { address: B, port: backupPort }, mode: 'both',
      timing: { intervalUs: INTERVAL_MS * 1000, softMisses: 1, hardMisses: 3, probeIntervalUs: INTERVAL_MS * 500 },
      backupTimeoutUs: 1_000_000, takeoverTimeoutUs: 3_000_000, standDownTimeoutUs: 500_000, restored: saved.at(-1),
    }, fence(), quiet);
    await again.start();
    cleanups.push(() => again.stop());
    expect(again.view()).toMatchObject({ serving: A, hosts: { primary: B, backup: A }, swapped: true });
    const returning = agentOn(B, agentPort, detectorAt);
    await returning.start();
    cleanups.push(() => returning.stop());
    await waitUntil(() => returning.fenced === 'stand-down', 2000, 'B to stand down');
    expect(again.states).toMatchObject({ state: 'BACKUP_ACTIVE', epoch: 2 });
  });
});
