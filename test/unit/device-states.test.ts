import { describe, expect, it } from 'vitest';
import { FakeClock } from '../../src/control/clock.js';
import { DeviceStates, type Transition } from '../../src/detector/device-states.js';
import { TakeoverCoordinator, type CoordinatorAction } from '../../src/detector/takeover.js';
import type { Logger } from '../../src/log.js';

const MS = 1000;

function memoryLog(): Logger & { lines: Array<{ msg: string; fields: Record<string, unknown> }> } {
  const lines: Array<{ msg: string; fields: Record<string, unknown> }> = [];
  const push = (msg: string, fields: Record<string, unknown> = {}) => lines.push({ msg, fields });
  return { lines, info: push, warn: push, error: push };
}

describe('device states', () => {
  it('logs and emits every transition in order, with wall time, monotonic time and cause; the epoch counts takeovers', () => {
    const clock = new FakeClock(5_000 * MS, Date.UTC(2026, 0, 2, 3, 4, 5) * 1000);
    const log = memoryLog();
    const s = new DeviceStates(clock, log);
    const seen: Transition[] = [];
    s.subscribe((t) => seen.push(t));
    clock.advance(20 * MS);
    s.move('PRIMARY_ACTIVE', 'primary heard');
    s.setBackup('standby', 'heard');
    clock.advance(15 * MS);
    s.move('SUSPECT', 'soft timeout');
    clock.advance(15 * MS);
    expect(s.beginTakeover('hard timeout')).toBe(1);
    expect(s.activeSide).toBe('backup');
    clock.advance(3 * MS);
    s.move('BACKUP_ACTIVE', 'report');
    expect(seen.map((t) => [t.seq, t.subject, t.from, t.to, t.cause, t.epoch, t.sinceStartUs])).toEqual([
      [1, 'device', 'PROBING', 'PRIMARY_ACTIVE', 'primary heard', 0, 20 * MS],
      [2, 'backup', 'unknown', 'standby', 'heard', 0, 20 * MS],
      [3, 'device', 'PRIMARY_ACTIVE', 'SUSPECT', 'soft timeout', 0, 35 * MS],
      [4, 'device', 'SUSPECT', 'TAKING_OVER', 'hard timeout', 1, 50 * MS],
      [5, 'device', 'TAKING_OVER', 'BACKUP_ACTIVE', 'report', 1, 53 * MS],
    ]);
    expect(seen[0]!.at).toBe('2026-01-02T03:04:05.020Z');
    expect(s.history()).toEqual(seen);
    expect(log.lines.map((l) => [l.msg, l.fields.to ?? l.fields.why])).toEqual([
      ['device state', 'PRIMARY_ACTIVE'], ['backup state', 'standby'], ['service protected', 'the backup stands by'],
      ['device state', 'SUSPECT'], ['device state', 'TAKING_OVER'], ['device state', 'BACKUP_ACTIVE'],
      ['service unprotected', 'the backup took over: no host stands by behind it'],
    ]);
    expect(log.lines[4]!.fields).toMatchObject({ cause: 'hard timeout', epoch: 1, sinceStartUs: 50 * MS });
  });

  it('says at warning level when the service is unprotected and why, once per cause; and when it is protected again', () => {
    const log = memoryLog();
    const s = new DeviceStates(new FakeClock(), log);
    s.move('PRIMARY_ACTIVE', 'primary heard');
    expect(s.protection).toEqual({ protected: undefined, why: 'the backup is not heard yet' });
    s.setBackup('silent', 'not heard for 3000 ms');
    s.setBackup('failed', 'heard');
    s.setBackup('standby', 'heard');
    s.move('SUSPECT', 'soft timeout');  // still protected: nothing logged
    s.setBackup('silent', 'not heard for 3000 ms');
    s.move('FAILED', 'hard timeout, backup silent');
    const protection = log.lines.filter((l) => l.msg.startsWith('service'));
    expect(protection.map((l) => [l.msg, l.fields.why])).toEqual([
      ['service unprotected', 'the backup is silent'],
      ['service unprotected', 'the backup is failed, not standing by'],
      ['service protected', 'the backup stands by'],
      ['service unprotected', 'the backup is silent'],
      ['service unprotected', 'the primary failed and the backup was not standing by'],
    ]);
  });

  it('refuses transitions the table forbids', () => {
    const s = new DeviceStates(new FakeClock());
    expect(() => s.move('SUSPECT', 'x')).toThrow(/PROBING -> SUSPECT/);
    s.move('PRIMARY_ACTIVE', 'heard');
    expect(() => s.move('BACKUP_ACTIVE', 'x')).toThrow();
    s.move('FAILED', 'backup silent');
    expect(s.can('PRIMARY_ACTIVE')).toBe(true); // no takeover was begun: the primary may come back
    expect(s.can('BACKUP_ACTIVE')).toBe(false);
    s.beginTakeover('backup back');
    s.move('FAILED', 'no report');
    expect(s.can('PRIMARY_ACTIVE')).toBe(false); // once begun, never back to the primary
    expect(s.can('BACKUP_ACTIVE')).toBe(true); // a late report
    s.move('BACKUP_ACTIVE', 'late report');
    expect(s.can('TAKING_OVER')).toBe(false);
    expect(s.can('FAILED')).toBe(false);
    expect(s.can('PRIMARY_ACTIVE')).toBe(false); // only by re-protection
    expect(() => s.move('PRIMARY_ACTIVE', 'x')).toThrow(/BACKUP_ACTIVE -> PRIMARY_ACTIVE/);
  });

  it('re-protection: the host that took over is the primary at the same epoch; the new backup unknown until heard', () => {
    const s = new DeviceStates(new FakeClock());
    expect(() => s.reprotect('x')).toThrow(/nothing to re-protect/);
    s.move('PRIMARY_ACTIVE', 'heard');
    s.setBackup('standby', 'heard');
    s.beginTakeover('hard timeout');
    expect(() => s.reprotect('x')).toThrow(/TAKING_OVER: nothing to re-protect/);
    s.move('BACKUP_ACTIVE', 'report');
    s.setBackup('active', 'heard');
    s.reprotect('agent heard on the host that took over');
    expect(s).toMatchObject({ state: 'PRIMARY_ACTIVE', epoch: 1, activeSide: 'primary', backup: 'unknown' });
    expect(s.protection).toEqual({ protected: undefined, why: 'the backup is not heard yet' });
    s.setBackup('standby', 'heard');
    expect(s.protection.protected).toBe(true);
    expect(s.beginTakeover('the new primary silent')).toBe(2); // the next failure
  });
});

describe('takeover coordinator', () => {
  const timing = { resendUs: 10 * MS, standDownTimeoutUs: 500 * MS, takeoverTimeoutUs: 2_000 * MS };
  const kinds = (a: CoordinatorAction[]) => a.map((x) => x.kind);

  it('planned: stand-down first, TAKEOVER only after the ACK (and the fence)', () => {
    const clock = new FakeClock();
    const c = new TakeoverCoordinator(clock, timing);
    const log: Array<[number, string]> = [];
    const note = (a: CoordinatorAction[]) => a.forEach((x) => log.push([clock.mono / MS, x.kind]));
    note(c.start({ epoch: 3, cause: 'planned', reason: 'maintenance' }));
    note(c.fenceDone());
    for (let t = 1; t <= 25; t++) {
      clock.advance(MS);
      note(c.tick());
    }
    note(c.standDownAck(3));
    clock.advance(2 * MS);
    note(c.report({ epoch: 3, ok: true }));
    expect(log).toEqual([
      [0, 'send-stand-down'], [0, 'engage-fence'], [10, 'send-stand-down'], [20, 'send-stand-down'],
      [25, 'send-takeover'], [27, 'finished'],
    ]);
    const rec = c.record!;
    expect(rec).toMatchObject({
      epoch: 3, cause: 'planned', planned: true, outcome: 'active', detectionLatencyUs: null,
      fence: { result: 'engaged', afterUs: 0 }, standDown: { acked: true, afterUs: 25 * MS },
      takeoverSentAfterUs: 25 * MS, takeoverMessages: 1, reportAfterUs: 27 * MS, backupReport: { epoch: 3, ok: true },
    });
  });

  it('planned, primary never answers: TAKEOVER at the stand-down timeout, recorded as not acknowledged', () => {
    const clock = new FakeClock();
    const c = new TakeoverCoordinator(clock, timing);
    c.start({ epoch: 1, cause: 'planned', reason: 'x' });
    c.fenceDone();
    let first = -1;
    for (let t = 1; t <= 600 && first < 0; t++) {
      clock.advance(MS);
      if (kinds(c.tick()).includes('send-takeover')) first = t;
    }
    expect(first).toBe(500);
    expect(c.record!.standDown).toEqual({ acked: false, afterUs: null });
  });

  it('unplanned: TAKEOVER once the fence is done, repeated until the report; a stale report is ignored', () => {
    const clock = new FakeClock();
    const c = new TakeoverCoordinator(clock, timing);
    clock.advance(100 * MS);
    expect(kinds(c.start({ epoch: 1, cause: 'host', reason: 'silent', lastHeardUs: 70 * MS }))).toEqual(['send-stand-down', 'engage-fence']);
    clock.advance(2 * MS);
    expect(c.fenceDone()).toEqual([{ kind: 'send-takeover', body: { epoch: 1, reason: 'silent', planned: false } }]);
    let sent = 1;
    for (let t = 1; t <= 35; t++) {
      clock.advance(MS);
      sent += kinds(c.tick()).filter((k) => k === 'send-takeover').length;
    }
    expect(sent).toBe(4); // at 2, 12, 22, 32 ms
    expect(c.report({ epoch: 0, ok: true })).toEqual([]);
    expect(c.staleReports).toBe(1);
    const fin = c.report({ epoch: 1, ok: true, flows: 3 });
    expect(kinds(fin)).toEqual(['finished']);
    expect(c.record).toMatchObject({ detectionLatencyUs: 30 * MS, fence: { result: 'engaged', afterUs: 2 * MS }, takeoverMessages: 4, outcome: 'active' });
    expect(c.report({ epoch: 1, ok: true })).toEqual([]); // a repeat
  });

  it('no report in time: failed; a late report still confirms; the old primary is told to stand down while heard', () => {
    const clock = new FakeClock();
    const c = new TakeoverCoordinator(clock, timing);
    c.start({ epoch: 2, cause: 'service', reason: 'port closed', lastHeardUs: 0 });
    c.fenceDone('nft: permission denied');
    let fin: CoordinatorAction[] = [];
    while (fin.length === 0 && clock.mono < 3_000 * MS) {
      clock.advance(MS);
      fin = c.tick().filter((a) => a.kind === 'finished');
    }
    expect(clock.mono).toBe(2_000 * MS);
    expect(fin[0]).toMatchObject({ record: { outcome: 'failed', fence: { result: 'error', error: 'nft: permission denied' } } });
    expect(c.nextDueUs()).toBe(Infinity);
    const agent = { alive: true, listening: false, fenced: false, epoch: 0 };
    expect(kinds(c.primaryHeard(agent))).toEqual(['send-stand-down']);
    expect(c.primaryHeard(agent)).toEqual([]); // spaced by the resend interval
    clock.advance(10 * MS);
    expect(kinds(c.primaryHeard(agent))).toEqual(['send-stand-down']);
    expect(c.primaryHeard({ ...agent, fenced: true, epoch: 2 })).toEqual([]); // fenced in this epoch: as good as an ACK
    clock.advance(10 * MS);
    expect(c.primaryHeard(agent)).toEqual([]);
    expect(c.report({ epoch: 2, ok: true })).toMatchObject([{ kind: 'finished', record: { outcome: 'active-late' } }]);
  });
});
