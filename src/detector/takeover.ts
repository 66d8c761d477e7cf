// The detector's side of one takeover, in a fixed order. Pure: the clock is
// injected, the caller (gateway-node.ts) performs the returned actions on its
// event loop and feeds back what happened. One coordinator serves the
// detector's life; start() begins each takeover (a new epoch).
//
//  1. STAND_DOWN {epoch} to the primary agent (planned: repeated every resend
//     interval until STAND_DOWN_ACK; unplanned: once, and again whenever the
//     agent is heard — a dead service's host still hears us).
//  2. Engage the gateway fence (packets from the old primary with source VIP
//     dropped at the gateway). Requested after step 1 is queued.
//  3. When the fence is done and, for a planned takeover, the agent has
//     acknowledged — or --stand-down-timeout has passed for either, which is
//     recorded — TAKEOVER {epoch, reason, planned} to the backup, every resend
//     interval until its TAKEOVER_REPORT for this epoch arrives.
//  4. The report: ok -> confirmed; ok false -> refused; nothing within
//     --takeover-timeout of the start -> failed (a later report still
//     confirms, as 'active-late').
// Ever after, whenever the old primary's agent is heard without having
// acknowledged (or reported itself fenced in) this epoch, STAND_DOWN again.
// A takeover this detector did not run (adopt(): its state file after a
// restart, or the backup's word) has no steps and no record, only that.
import { appendFileSync } from 'node:fs';
import type { AgentReport, TakeoverReport, TakeoverRequest } from '../control/bodies.js';
import { isoOfUs, type Clock } from '../control/clock.js';
import type { Logger } from '../log.js';

export type TakeoverCause = 'host' | 'service' | 'planned';

export interface TakeoverStart {
  epoch: number;
  cause: TakeoverCause;
  reason: string;
  /** Monotonic µs the primary was last heard (healthy, for 'service'); absent for a planned takeover. */
  lastHeardUs?: number;
}

export interface TakeoverTiming {
  resendUs: number;
  standDownTimeoutUs: number;
  takeoverTimeoutUs: number;
}

/** One takeover, as logged and appended to --report FILE. */
export interface TakeoverRecord {
  event: 'takeover';
  epoch: number;
  cause: TakeoverCause;
  reason: string;
  planned: boolean;
  outcome: 'pending' | 'active' | 'active-late' | 'refused' | 'failed';
  verdictAt: string;
  /** Primary last heard (last healthy report, for 'service') -> verdict, µs; null when planned. */
  detectionLatencyUs: number | null;
  fence: { result: 'pending' | 'engaged' | 'error' | 'timeout'; afterUs: number | null; error?: string };
  standDown: { acked: boolean; afterUs: number | null };
  /** Verdict -> first TAKEOVER sent, µs. */
  takeoverSentAfterUs: number | null;
  takeoverMessages: number;
  /** Verdict -> the backup's report, µs. */
  reportAfterUs: number | null;
  failure?: string;
  backupReport: TakeoverReport | null;
  /** What the traffic recorder sent the new owner again once it was active (client segments the old primary swallowed). */
  resupplied?: {
    packets: number; bytes: number; sinceUs: number;
    /** What started it: the new owner's gratuitous ARP, or its report; and when, after the verdict. */
    trigger?: 'announcement' | 'report'; startedAfterUs?: number;
  };
}

export type CoordinatorAction =
  | { kind: 'send-takeover'; body: TakeoverRequest }
  | { kind: 'send-stand-down'; body: { epoch: number } }
  | { kind: 'engage-fence' }
  | { kind: 'finished'; record: TakeoverRecord };

type Phase = 'idle' | 'preparing' | 'requesting' | 'finished';

export class TakeoverCoordinator {
  private phase: Phase = 'idle';
  private rec?: TakeoverRecord;
  private startUs = 0;
  private fenceDoneFlag = false;
  private standDownAcked = false;
  private nextStandDownUs = Infinity;
  private nextTakeoverUs = Infinity;
  /** The epoch of a takeover adopted, not run (adopt()). */
  private adopted: number | undefined;
  /** Reports whose epoch is not the current takeover's. */
  staleReports = 0;

  constructor(
    private readonly clock: Clock,
    private readonly timing: TakeoverTiming,
  ) {}

  get record(): TakeoverRecord | undefined {
    return this.rec;
  }

  get inProgress(): boolean {
    return this.phase === 'preparing' || this.phase === 'requesting';
  }

  start(s: TakeoverStart): CoordinatorAction[] {
    const now = this.clock.monoUs();
    this.phase = 'preparing';
    this.adopted = undefined;
    this.startUs = now;
    this.fenceDoneFlag = false;
    this.standDownAcked = false;
    this.nextTakeoverUs = Infinity;
    this.rec = {
      event: 'takeover', epoch: s.epoch, cause: s.cause, reason: s.reason, planned: s.cause === 'planned', outcome: 'pending',
      verdictAt: isoOfUs(this.clock.wallUs()),
      detectionLatencyUs: s.lastHeardUs === undefined ? null : now - s.lastHeardUs,
      fence: { result: 'pending', afterUs: null }, standDown: { acked: false, afterUs: null },
      takeoverSentAfterUs: null, takeoverMessages: 0, reportAfterUs: null, backupReport: null,
    };
    const out = this.standDown(now);
    out.push({ kind: 'engage-fence' });
    return out;
  }

  /** A takeover done before this detector knew of it: from now on the old primary is only told to stand down. */
  adopt(epoch: number): void {
    this.phase = 'finished';
    this.rec = undefined;
    this.adopted = epoch;
    this.standDownAcked = false;
    this.nextStandDownUs = 0;
    this.nextTakeoverUs = Infinity;
  }

  /** The fence's engage() returned or settled; `error` when it threw or rejected. */
  fenceDone(error?: string): CoordinatorAction[] {
    if (!this.rec || this.fenceDoneFlag) return [];
    this.fenceDoneFlag = true;
    const afterUs = this.clock.monoUs() - this.startUs;
    // After a 'timeout' the result stays so; afterUs then says when it did finish.
    const result = this.rec.fence.result === 'timeout' ? 'timeout' : error === undefined ? 'engaged' : 'error';
    this.rec.fence = { result, afterUs, ...(error === undefined ? {} : { error }) };
    return this.proceed(false);
  }

  standDownAck(epoch: number): CoordinatorAction[] {
    const current = this.epoch;
    if (current === undefined || epoch < current || this.standDownAcked) return [];
    this.standDownAcked = true;
    if (!this.rec) return [];
    this.rec.standDown = { acked: true, afterUs: this.clock.monoUs() - this.startUs };
    return this.proceed(false);
  }

  /** The old primary's agent was heard (HEARTBEAT or PROBE_REPLY) during or after a takeover. */
  primaryHeard(r: AgentReport): CoordinatorAction[] {
    const current = this.epoch;
    if (current === undefined) return [];
    if (r.fenced && r.epoch >= current) return this.standDownAck(r.epoch);
    const now = this.clock.monoUs();
    return !this.standDownAcked && now >= this.nextStandDownUs ? this.standDown(now) : [];
  }

  /** Whether the old primary acknowledged (or reported itself fenced in) the current epoch. */
  get primaryStoodDown(): boolean {
    return this.standDownAcked;
  }

  /** The epoch of the takeover run or adopted last; undefined before any. */
  private get epoch(): number | undefined {
    return this.rec?.epoch ?? this.adopted;
  }

  report(body: TakeoverReport): CoordinatorAction[] {
    const rec = this.rec;
    if (!rec || body.epoch !== rec.epoch) {
      this.staleReports++;
      return [];
    }
    if (this.phase === 'finished' && rec.outcome !== 'failed') return []; // a repeat
    const late = this.phase === 'finished';
    this.phase = 'finished';
    this.nextTakeoverUs = Infinity;
    rec.backupReport = body;
    rec.reportAfterUs = this.clock.monoUs() - this.startUs;
    rec.outcome = body.ok ? (late ? 'active-late' : 'active') : 'refused';
    if (body.ok) delete rec.failure;
    else rec.failure = `the backup refused: ${body.error ?? 'no reason given'}`;
    return [{ kind: 'finished', record: { ...rec } }];
  }

  nextDueUs(): number {
    if (this.phase === 'preparing') {
      const repeat = this.rec!.planned && !this.standDownAcked ? this.nextStandDownUs : Infinity;
      return Math.min(repeat, this.startUs + this.timing.standDownTimeoutUs);
    }
    if (this.phase === 'requesting') return Math.min(this.nextTakeoverUs, this.startUs + this.timing.takeoverTimeoutUs);
    return Infinity;
  }

  tick(): CoordinatorAction[] {
    const now = this.clock.monoUs();
    const rec = this.rec;
    if (!rec) return [];
    if (this.phase === 'preparing') {
      const out = rec.planned && !this.standDownAcked && now >= this.nextStandDownUs ? this.standDown(now) : [];
      return [...out, ...this.proceed(now >= this.startUs + this.timing.standDownTimeoutUs)];
    }
    if (this.phase !== 'requesting') return [];
    if (now >= this.startUs + this.timing.takeoverTimeoutUs) {
      this.phase = 'finished';
      this.nextTakeoverUs = Infinity;
      rec.outcome = 'failed';
      rec.failure = `no TAKEOVER_REPORT from the backup within ${Math.round(this.timing.takeoverTimeoutUs / 1000)} ms`;
      return [{ kind: 'finished', record: { ...rec } }];
    }
    return now >= this.nextTakeoverUs ? this.sendTakeover(now) : [];
  }

  /** nextStandDownUs spaces STAND_DOWNs: repeated by tick() while a planned takeover waits, else only as the agent is heard. */
  private standDown(now: number): CoordinatorAction[] {
    this.nextStandDownUs = now + this.timing.resendUs;
    return [{ kind: 'send-stand-down', body: { epoch: this.epoch! } }];
  }

  /** Step 3, once its conditions hold (or `timedOut`). */
  private proceed(timedOut: boolean): CoordinatorAction[] {
    const rec = this.rec!;
    if (this.phase !== 'preparing') return [];
    const ready = this.fenceDoneFlag && (!rec.planned || this.standDownAcked);
    if (!ready && !timedOut) return [];
    if (!this.fenceDoneFlag) rec.fence = { result: 'timeout', afterUs: null };
    this.phase = 'requesting';
    const now = this.clock.monoUs();
    rec.takeoverSentAfterUs = now - this.startUs;
    return this.sendTakeover(now);
  }

  private sendTakeover(now: number): CoordinatorAction[] {
    const rec = this.rec!;
    this.nextTakeoverUs = now + this.timing.resendUs;
    rec.takeoverMessages++;
    return [{ kind: 'send-takeover', body: { epoch: rec.epoch, reason: rec.reason, planned: rec.planned } }];
  }
}

/** Append one record to --report FILE as a JSON line; a failure is logged, never thrown (the takeover goes on). */
export function appendRecord(file: string, rec: TakeoverRecord, log: Logger): void {
  try {
    appendFileSync(file, JSON.stringify(rec) + '\n');
  } catch (e) {
    log.error('cannot append the takeover record', { file, error: (e as Error).message });
  }
}
