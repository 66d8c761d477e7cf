// keepalived as the source of truth, primary side: `t2cp primary` without a
// detector, `t2cp stand-down` (a local STAND_DOWN from 127.0.0.1) and the
// keepalived startup rule (agent/vrrp-guard.ts). Real UDP on 127.0.0.1,
// ephemeral ports, a fake fence; no root.
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { PrimaryAgent } from '../../src/agent/primary-node.js';
import { bootNowUs, processStartBootUs, VrrpGuard } from '../../src/agent/vrrp-guard.js';
import { PRIMARY_COMMAND, STAND_DOWN_COMMAND } from '../../src/config-takeover.js';
import type { BodyOf, VrrpHookState } from '../../src/control/bodies.js';
import { decode, encode } from '../../src/control/messages.js';
import { requestStandDown } from '../../src/control/stand-down-request.js';
import { T2cpError } from '../../src/errors.js';
import type { Logger } from '../../src/log.js';
import { helpText, parseOptions, type Endpoint } from '../../src/options.js';
import { rejectionOf } from './rejection.js';

const key = randomBytes(32);
const LO = '127.0.0.1';
const quiet: Logger = { info: () => {}, warn: () => {}, error: () => {} };
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function fence() {
  const f = { engaged: 0, released: 0, engage: () => {}, release: () => {} };
  f.engage = () => void f.engaged++;
  f.release = () => void f.released++;
  return f;
}

async function agentWithout(f = fence(), detector?: Endpoint) {
  const agent = new PrimaryAgent(
    { instance: 'test', key, listen: { address: LO, port: 0 }, ...(detector ? { detector } : {}), intervalMs: 10, selfFenceAfterMs: 0 },
    f, quiet, () => ({ alive: true, listening: true }));
  await agent.start();
  cleanups.push(() => agent.stop());
  return { agent, fence: f, at: agent.address() };
}

const ask = (agent: Endpoint, extra: { vrrp?: VrrpHookState; hookStartUs?: number; epoch?: number; key?: Buffer; timeoutMs?: number } = {}) =>
  requestStandDown({ agent, key: extra.key ?? key, epoch: extra.epoch ?? 0, timeoutMs: extra.timeoutMs ?? 3000, ...extra });

describe('primary agent without a detector, `t2cp stand-down` on loopback', () => {
  it('sends nothing, and a local stand-down engages the fence and is acknowledged, again for every copy', async () => {
    const { agent, fence: f, at } = await agentWithout();
    await new Promise((r) => setTimeout(r, 100));
    expect(agent.stats.heartbeats).toBe(0);
    expect(agent.channelCounters()!.sent).toBe(0);

    const ack = await ask(at, { epoch: 3 });
    expect(ack).toEqual({ epoch: 3, fenced: true });
    expect(agent.fenced).toBe('stand-down');
    expect(agent.epoch).toBe(3);
    expect(f.engaged).toBe(1);

    expect(await ask(at)).toEqual({ epoch: 3, fenced: true, note: 'already stood down' });
    expect(f.engaged).toBe(1);
    expect(f.released).toBe(0);
    expect(agent.stats).toMatchObject({ standDowns: 2, localStandDowns: 2, unexpected: 0 });
  });

  it('a STAND_DOWN with the wrong key is refused and counted; a replayed one too; the fence stays off', async () => {
    const { agent, fence: f, at } = await agentWithout();
    const e = await rejectionOf(ask(at, { key: randomBytes(32), timeoutMs: 350 }));
    expect(e.code).toBe('T2CP_TIMEOUT');
    expect(e.message).toMatch(/no STAND_DOWN_ACK from 127\.0\.0\.1:\d+ within 350 ms: is `t2cp primary` running/);
    expect(agent.channelCounters()!.rejected['bad-hmac']).toBeGreaterThanOrEqual(3); // sent again every 100 ms
    expect(agent.stats.standDowns).toBe(0);
    expect(f.engaged).toBe(0);
    expect(agent.fenced).toBe('none');

    // A copy of a good one sent again (same sender, boot and counter): a replay.
    const s = dgram.createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, LO, r));
    cleanups.push(() => new Promise<void>((r) => s.close(() => r())));
    const acks: BodyOf['STAND_DOWN_ACK'][] = [];
    s.on('message', (buf) => {
      const d = decode(buf, key);
      if (d.ok && d.msg.type === 'STAND_DOWN_ACK') acks.push(d.msg.body);
    });
    const good = encode(key, 'stand-down:1', Date.now() * 1000, 1, 'STAND_DOWN', { epoch: 0 });
    s.send(good, at.port, LO);
    await waitUntil(() => acks.length === 1, 2000, 'the ack');
    s.send(good, at.port, LO);
    await waitUntil(() => agent.channelCounters()!.rejected.replay === 1, 2000, 'the replay counted');
    expect(acks).toHaveLength(1);
    expect(f.engaged).toBe(1);
  });

  it('a fence that fails is not acknowledged as done: tried again at every copy, then a one-line error', async () => {
    const broken = fence();
    broken.engage = () => {
      throw new Error('no nft here');
    };
    const { agent, at } = await agentWithout(broken);
    const e = await rejectionOf(ask(at, { timeoutMs: 350 }));
    expect(e.code).toBe('T2CP_REFUSED');
    expect(e.message).toMatch(/could not stand down within 350 ms: the fence failed: no nft here/);
    expect(agent.stats.fenceErrors).toBeGreaterThan(1);
    expect(agent.fenced).toBe('none');
  });

  it('keepalived startup rule: BACKUP before any MASTER is ignored; BACKUP after MASTER, FAULT, STOP stand down', async () => {
    // The primary host's keepalived starting: BACKUP (init) at t, MASTER one advert or more later.
    const a = await agentWithout();
    expect(await ask(a.at, { vrrp: 'BACKUP', hookStartUs: 1_000_000 })).toMatchObject({ fenced: false, note: expect.stringMatching(/BACKUP ignored.*startup/) });
    expect(await ask(a.at, { vrrp: 'MASTER', hookStartUs: 1_030_000 })).toMatchObject({ fenced: false, note: expect.stringMatching(/MASTER recorded/) });
    expect(a.fence.engaged).toBe(0);
    expect(a.agent.stats.vrrpIgnored).toBe(1);
    // Later the peer preempts: BACKUP after MASTER.
    expect(await ask(a.at, { vrrp: 'BACKUP', hookStartUs: 9_000_000 })).toEqual({ epoch: 0, fenced: true });
    expect(a.fence.engaged).toBe(1);
    // MASTER again (preempting back): recorded, still fenced.
    expect(await ask(a.at, { vrrp: 'MASTER', hookStartUs: 9_500_000 })).toMatchObject({ fenced: true });
    expect(a.agent.fenced).toBe('stand-down');

    // The startup hooks arrive in reverse order (MASTER's datagram first): still ignored.
    const b = await agentWithout();
    await ask(b.at, { vrrp: 'MASTER', hookStartUs: 2_030_000 });
    expect(await ask(b.at, { vrrp: 'BACKUP', hookStartUs: 2_000_000 })).toMatchObject({ fenced: false, note: expect.stringMatching(/ignored/) });
    // Same 10 ms tick: taken as the startup order, ignored.
    expect(await ask(b.at, { vrrp: 'BACKUP', hookStartUs: 2_030_000 })).toMatchObject({ fenced: false });
    expect(b.fence.engaged).toBe(0);

    // MASTER -> BACKUP whose datagrams crossed: the BACKUP is ignored first, the MASTER stands down.
    const c = await agentWithout();
    expect(await ask(c.at, { vrrp: 'BACKUP', hookStartUs: 5_000_000 })).toMatchObject({ fenced: false });
    expect(await ask(c.at, { vrrp: 'MASTER', hookStartUs: 4_000_000 })).toMatchObject({ fenced: true });
    expect(c.fence.engaged).toBe(1);

    // FAULT and STOP need no MASTER first; no state at all stands down too.
    for (const vrrp of ['FAULT', 'STOP', undefined] as const) {
      const d = await agentWithout();
      expect(await ask(d.at, { ...(vrrp ? { vrrp } : {}), hookStartUs: 1 })).toEqual({ epoch: 0, fenced: true });
      expect(d.fence.engaged).toBe(1);
    }
  });

  it('with a detector the agent heartbeats as before and takes a local stand-down too', async () => {
    const det = dgram.createSocket('udp4');
    await new Promise<void>((r) => det.bind(0, LO, r));
    cleanups.push(() => new Promise<void>((r) => det.close(() => r())));
    const heard: string[] = [];
    det.on('message', (buf) => {
      const d = decode(buf, key);
      if (d.ok) heard.push(d.msg.type);
    });
    const { agent, fence: f, at } = await agentWithout(fence(), { address: LO, port: det.address().port });
    await waitUntil(() => heard.includes('HEARTBEAT') && heard.includes('STATUS'), 2000, 'heartbeat and status');
    expect(await ask(at, { vrrp: 'FAULT', hookStartUs: 1 })).toEqual({ epoch: 0, fenced: true });
    expect(f.engaged).toBe(1);
    await waitUntil(() => agent.stats.heartbeats > 5, 2000, 'more heartbeats');
  });

  it('a heartbeat sent more than two intervals after the last is counted and said, once per ten seconds', async () => {
    const det = dgram.createSocket('udp4');
    await new Promise<void>((r) => det.bind(0, LO, r));
    cleanups.push(() => new Promise<void>((r) => det.close(() => r())));
    // The host's clock as the agent reads it, moved on by hand: the agent "kept from running".
    let skipUs = 0;
    const clock = { monoUs: () => Number(process.hrtime.bigint() / 1000n) + skipUs, wallUs: () => Date.now() * 1000 };
    const warned: Array<Record<string, unknown>> = [];
    const log: Logger = { ...quiet, warn: (msg, fields) => void (msg.startsWith('heartbeat late') && warned.push(fields ?? {})) };
    const agent = new PrimaryAgent({ instance: 'test', key, listen: { address: LO, port: 0 }, detector: { address: LO, port: det.address().port },
      intervalMs: 10, selfFenceAfterMs: 0, clock }, fence(), log, () => ({ alive: true, listening: true }));
    await agent.start();
    cleanups.push(() => agent.stop());
    await waitUntil(() => agent.stats.heartbeats > 3, 2000, 'heartbeats');
    const before = agent.stats.heartbeatsLate;  // 0 but for a stall of this machine's own
    for (const gap of [50_000, 80_000]) {
      const n = agent.stats.heartbeats;
      skipUs += gap;
      await waitUntil(() => agent.stats.heartbeats > n + 1, 2000, 'the next heartbeats');
    }
    expect(agent.stats.heartbeatsLate - before).toBeGreaterThanOrEqual(2);
    expect(warned).toHaveLength(1);
    expect(warned.at(-1)!.gapMs).toBeGreaterThanOrEqual(20);
  });
});

describe('keepalived rule and hook clock', () => {
  it('VrrpGuard, pure', () => {
    const g = new VrrpGuard();
    expect(g.decide('BACKUP', 100).act).toBe('ignore');
    expect(g.masterSeen).toBe(false);
    expect(g.decide('MASTER', 200).act).toBe('record');
    expect(g.masterSeen).toBe(true);
    expect(g.decide('BACKUP', 150).act).toBe('ignore'); // a startup BACKUP arriving late
    expect(g.decide('BACKUP', 300).act).toBe('stand-down');
    expect(new VrrpGuard().decide('FAULT', 0).act).toBe('stand-down');
    expect(new VrrpGuard().decide(undefined, 0).act).toBe('stand-down');
  });

  it('process start from /proc/self/stat, in µs since boot (10 ms ticks), on the same clock as /proc/uptime', () => {
    const stat = '4242 (a) b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10 18446744073709551615';
    expect(processStartBootUs(stat)).toBe(123456 * 10_000);
    expect(processStartBootUs('garbage')).toBeUndefined();
    const mine = processStartBootUs()!;
    const now = bootNowUs()!;
    expect(mine).toBeGreaterThan(0);
    expect(mine).toBeLessThanOrEqual(now + 10_000);
    expect(now - mine).toBeLessThan(process.uptime() * 1e6 + 1_000_000);
  });
});

describe('t2cp primary / stand-down options', () => {
  const base = ['--key-file', 'k', '--vip', '198.18.1.10', '--ports', '7000'];
  const configError = (f: () => unknown): string => {
    try {
      f();
    } catch (e) {
      expect((e as T2cpError).code).toBe('T2CP_CONFIG');
      return (e as Error).message;
    }
    throw new Error('expected an error');
  };

  it('primary: --detector is optional; --self-fence-after needs it', () => {
    const c = parseOptions(PRIMARY_COMMAND, base);
    expect(c.detector).toBeUndefined();
    expect(c).toMatchObject({ listen: { address: '0.0.0.0', port: 7392 }, selfFenceAfterMs: 0 });
    expect(configError(() => parseOptions(PRIMARY_COMMAND, [...base, '--self-fence-after', '1000']))).toMatch(/--self-fence-after 1000 needs --detector/);
    expect(parseOptions(PRIMARY_COMMAND, [...base, '--detector', '10.0.0.1', '--self-fence-after', '1000']).selfFenceAfterMs).toBe(1000);
    expect(() => new PrimaryAgent({ instance: 't', key, listen: { address: LO, port: 0 }, intervalMs: 10, selfFenceAfterMs: 100 }, fence(), quiet,
      () => ({ alive: true, listening: true }))).toThrow(/needs a detector/);
  });

  it('stand-down: defaults, states, help', () => {
    expect(parseOptions(STAND_DOWN_COMMAND, ['--key-file', 'k'])).toMatchObject({
      agent: { address: '127.0.0.1', port: 7392 }, epoch: 0, timeoutMs: 5000,
    });
    expect(parseOptions(STAND_DOWN_COMMAND, ['--key-file', 'k', '--vrrp-state', 'BACKUP', '--epoch', '4', '--agent', '127.0.0.1:9000']))
      .toMatchObject({ vrrpState: 'BACKUP', epoch: 4, agent: { port: 9000 } });
    expect(configError(() => parseOptions(STAND_DOWN_COMMAND, ['--key-file', 'k', '--vrrp-state', 'backup']))).toMatch(/not one of MASTER, BACKUP, FAULT, STOP/);
    expect(configError(() => parseOptions(STAND_DOWN_COMMAND, ['--key-file', 'k', '--timeout', '0']))).toMatch(/--timeout 0 is out of range/);
    const h = helpText(STAND_DOWN_COMMAND);
    for (const o of STAND_DOWN_COMMAND.options) expect(h).toContain(o.flag);
    expect(h).toMatch(/notify_backup "t2cp stand-down --key-file K --vrrp-state BACKUP"/);
    expect(h).toMatch(/through BACKUP once/);
    expect(helpText(PRIMARY_COMMAND)).toMatch(/Without --detector/);
  });
});

async function waitUntil(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
