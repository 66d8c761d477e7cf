import { describe, expect, it } from 'vitest';
import { hardTimeoutUs, HeartbeatMonitor, softTimeoutUs, type HeartbeatAction, type HeartbeatMode, type HeartbeatTiming } from '../../src/detector/heartbeat.js';

const MS = 1000;
const timing: HeartbeatTiming = { intervalUs: 10 * MS, softMisses: 1, hardMisses: 3, probeIntervalUs: 5 * MS };
const TICK = 1 * MS; // the fake clock's step
const up = { alive: true, listening: true };

interface Seen { atUs: number; a: HeartbeatAction }

/**
 * Drive a monitor on a fake clock from 0 to endUs in 1 ms ticks; `beats(t)`
 * says whether the agent's heartbeat (or, when `replies`, the answer to a
 * probe sent at the previous tick) arrives at t.
 */
function drive(mode: HeartbeatMode, endUs: number, beats: (t: number) => boolean, opts: { replies?: (t: number) => boolean; status?: (t: number) => typeof up } = {}): Seen[] {
  const m = new HeartbeatMonitor(timing, mode, 0);
  const seen: Seen[] = [];
  let probeAt = -1;
  for (let t = 0; t <= endUs; t += TICK) {
    const status = opts.status?.(t) ?? up;
    if (beats(t)) for (const a of m.heartbeat(t, status)) seen.push({ atUs: t, a });
    if (probeAt >= 0 && opts.replies?.(t)) for (const a of m.probeReply(t, status)) seen.push({ atUs: t, a });
    probeAt = -1;
    for (const a of m.tick(t)) {
      seen.push({ atUs: t, a });
      if (a.kind === 'probe') probeAt = t;
    }
  }
  return seen;
}

const kinds = (s: Seen[], kind: HeartbeatAction['kind']) => s.filter((x) => x.a.kind === kind);

describe('heartbeat monitor (two-level timeout)', () => {
  it('timeouts: soft (softMisses + 1/2) x interval, hard hardMisses x interval', () => {
    expect(softTimeoutUs(timing)).toBe(15 * MS);
    expect(hardTimeoutUs(timing)).toBe(30 * MS);
  });

  it('push, then silence: suspect at the soft timeout raises the probe rate; dead at the hard timeout (± one tick)', () => {
    const lastBeat = 100 * MS;
    const seen = drive('both', 300 * MS, (t) => t % (10 * MS) === 0 && t <= lastBeat);
    expect(seen[0]).toEqual({ atUs: 0, a: { kind: 'alive' } });
    const probes = kinds(seen, 'probe').map((p) => p.atUs);
    expect(probes.every((t) => t > lastBeat), 'no probe while heartbeats flow (mode both)').toBe(true);
    const suspect = kinds(seen, 'suspect')[0]!;
    expect(suspect.atUs).toBe(lastBeat + 15 * MS);
    // Probes from the suspect verdict on, at the probe interval (5 ms), faster than the 10 ms heartbeats.
    expect(probes).toEqual([115, 120, 125].map((x) => x * MS));
    const dead = kinds(seen, 'dead');
    expect(dead).toHaveLength(1);
    expect(Math.abs(dead[0]!.atUs - (lastBeat + 30 * MS))).toBeLessThanOrEqual(TICK);
    expect(dead[0]!.a).toMatchObject({ cause: 'host', lastHeardUs: lastBeat, detectionUs: 30 * MS });
    expect(seen.at(-1)!.a.kind).toBe('dead'); // nothing after the verdict
  });

  it('a heartbeat delayed beyond the soft timeout but within the hard one causes no verdict', () => {
    // Heartbeats every 10 ms, except a gap from 100 ms to 125 ms (25 ms of silence: 15 < 25 < 30).
    const seen = drive('both', 400 * MS, (t) => t % (10 * MS) === 0 && (t <= 100 * MS || t >= 130 * MS) || t === 125 * MS);
    expect(kinds(seen, 'suspect').map((s) => s.atUs)).toEqual([115 * MS]);
    expect(kinds(seen, 'recovered')).toEqual([{ atUs: 125 * MS, a: { kind: 'recovered', silentUs: 25 * MS } }]);
    expect(kinds(seen, 'dead')).toEqual([]);
  });

  it('a host that stops pushing but answers probes is not declared dead', () => {
    const seen = drive('both', 400 * MS, (t) => t % (10 * MS) === 0 && t <= 100 * MS, { replies: () => true });
    expect(kinds(seen, 'dead')).toEqual([]);
    expect(kinds(seen, 'suspect').length).toBeGreaterThan(1); // suspect, probed, heard, and again
  });

  it('pull mode probes every interval, and at the probe interval once suspect', () => {
    const seen = drive('pull', 200 * MS, () => false, { replies: (t) => t <= 101 * MS });
    const probes = kinds(seen, 'probe').map((p) => p.atUs / MS);
    expect(probes.filter((t) => t <= 100)).toEqual([0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    // Last reply at 101 ms (to the probe of 100 ms); suspect at 116, probes 116, 121, 126; dead at 131.
    expect(kinds(seen, 'suspect').map((s) => s.atUs / MS)).toEqual([116]);
    expect(probes.filter((t) => t > 100)).toEqual([110, 116, 121, 126]);
    expect(kinds(seen, 'dead').map((s) => s.atUs / MS)).toEqual([131]);
  });

  it('push mode never probes', () => {
    const seen = drive('push', 200 * MS, (t) => t % (10 * MS) === 0 && t <= 50 * MS);
    expect(kinds(seen, 'probe')).toEqual([]);
    expect(kinds(seen, 'dead').map((s) => s.atUs / MS)).toEqual([80]);
  });

  it('a service reported dead hardMisses times in a row is service-dead; a never-healthy one is not', () => {
    const down = { alive: true, listening: false };
    const seen = drive('both', 200 * MS, (t) => t % (10 * MS) === 0, { status: (t) => (t < 100 * MS ? up : down) });
    const dead = kinds(seen, 'dead');
    expect(dead.map((d) => d.atUs / MS)).toEqual([120]); // reports at 100, 110, 120
    expect(dead[0]!.a).toMatchObject({ cause: 'service', lastHealthyUs: 90 * MS, detectionUs: 30 * MS });
    // One bad report between good ones resets the count.
    expect(kinds(drive('both', 300 * MS, (t) => t % (10 * MS) === 0, { status: (t) => (t % (30 * MS) === 0 && t > 0 ? down : up) }), 'dead')).toEqual([]);
    // Starting: never healthy, no verdict.
    expect(kinds(drive('both', 200 * MS, (t) => t % (10 * MS) === 0, { status: () => down }), 'dead')).toEqual([]);
  });

  it('nothing heard yet: no timeout (PROBING), and the detector\'s own stall is not the primary\'s silence', () => {
    const m = new HeartbeatMonitor(timing, 'both', 0);
    expect(m.tick(1_000 * MS)).toEqual([]);
    expect(m.nextDueUs()).toBe(Infinity);
    m.heartbeat(1_000 * MS, up);
    expect(m.nextDueUs()).toBe(1_015 * MS);
    // The detector did not run for 100 ms: the first tick after judges as of when it was due
    // (soft timeout: suspect, probe), not as if the primary had been silent all along.
    const after = m.tick(1_100 * MS);
    expect(after.map((a) => a.kind)).toEqual(['suspect', 'probe']);
    expect(m.stalls).toBe(1);
    // Really silent afterwards: suspect then dead, in their time.
    const seen: Seen[] = [];
    for (let t = 1_101 * MS; t <= 1_200 * MS; t += TICK) for (const a of m.tick(t)) seen.push({ atUs: t, a });
    expect(kinds(seen, 'dead')).toHaveLength(1);
  });
});
