// Failure recovery, the backup's side as JavaScript sees it: starts the
// engine's numbered steps (addon/recovery_takeover.h), follows them through
// the 'takeover' events, and writes the one structured record each takeover
// leaves (logged, and appended as a JSON line to --report FILE).
//
// Call order: new TakeoverRun(engine, ...) then start(trigger) once; feed
// every decoded event to onEvent(); done() resolves with the record when
// step 5 ended (or rejects when a step failed).
import { appendFileSync } from 'node:fs';
import type { NativeEngine, NativeTakeoverReport, TakeoverOptions } from '../addon.js';
import { T2cpError } from '../errors.js';
import type { FlowEvent } from '../incoming/events.js';
import { summarizeReplicaLag, type LatencySummary } from '../incoming/latency.js';
import type { Logger } from '../log.js';

/** What asked for the takeover, and what it knows about the failure. */
export interface TakeoverTrigger {
  source: 'detector' | 'cli' | 'keepalived' | 'pacemaker' | 'local';
  reason: string;
  epoch: number;
  planned: boolean;
  /** Wall-clock µs of the last sign of life of the primary, if the trigger knows it. */
  lastHeardUs?: number;
  /** Wall-clock µs when the trigger decided. */
  decidedUs?: number;
}

export interface TakeoverRecord {
  record: 'takeover';
  trigger: TakeoverTrigger;
  /** Last sign of life of the primary to the decision, µs (detector triggers only). */
  detectionUs?: number;
  /** Decision to the request reaching the engine, µs. */
  signallingUs?: number;
  /** Request to the end of step 5, µs. */
  takeoverUs?: number;
  /** How far the replicas' output ran behind the primary's while replicating, by service port (src/incoming/latency.ts). */
  replicaLag: Record<string, LatencySummary>;
  engine: NativeTakeoverReport;
}

const STEP_EVENTS = new Set(['freeze', 'finish', 'active', 'ip-takeover', 'connections', 'catch-up']);

export class TakeoverRun {
  private resolve!: (r: TakeoverRecord) => void;
  private reject!: (e: Error) => void;
  private readonly finished: Promise<TakeoverRecord>;
  private trigger: TakeoverTrigger | undefined;
  private record: TakeoverRecord | undefined;
  private finalListeners: Array<(r: TakeoverRecord) => void> = [];

  constructor(
    private readonly engine: NativeEngine,
    private readonly options: TakeoverOptions,
    private readonly log: Logger,
    private readonly reportFile?: string,
  ) {
    this.finished = new Promise((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
    this.finished.catch(() => {}); // a failure is also reported through done()
  }

  get started(): boolean {
    return this.trigger !== undefined;
  }

  /** Throws a T2CP_TAKEOVER error if the engine refuses (not running, already done). */
  start(trigger: TakeoverTrigger): void {
    this.trigger = trigger;
    this.log.info('takeover: begin', { source: trigger.source, reason: trigger.reason, epoch: trigger.epoch, planned: trigger.planned });
    this.engine.takeover(this.options);
  }

  done(): Promise<TakeoverRecord> {
    return this.finished;
  }

  /** Called once with the final record (client-visible stall included), ~2 s after step 5. */
  onFinal(fn: (r: TakeoverRecord) => void): void {
    this.finalListeners.push(fn);
  }

  /** The record so far (undefined before step 5 ended). */
  current(): TakeoverRecord | undefined {
    return this.record;
  }

  onEvent(e: FlowEvent): void {
    if (e.type !== 'takeover' || !this.trigger) return;
    if (STEP_EVENTS.has(e.reason)) {
      this.log.info(`takeover: step ${e.reason} done`, { us: e.detail });
      return;
    }
    if (e.reason === 'takeover-failed') {
      const report = this.engine.takeoverReport();
      this.log.error('takeover: failed', { error: report.error, steps: report.steps.length });
      this.reject(new T2cpError(`takeover failed: ${report.error ?? 'unknown'}`, 'T2CP_TAKEOVER'));
      return;
    }
    if (e.reason === 'takeover-done') {
      this.record = this.build(this.engine.takeoverReport());
      this.log.info('takeover: done', { takeoverUs: this.record.takeoverUs, flows: this.record.engine.flowsTakenOver, lost: this.record.engine.flowsLost });
      const ringing = this.record.engine.relayWithoutMedia;
      if (ringing) {
        this.log.warn('takeover: relay ports paired for calls with no media yet (still ringing?): their audio will not reach this host\'s relay ' +
          '(docs/limits.md, UDP)', { relayWithoutMedia: ringing });
      }
      this.resolve(this.record);
      return;
    }
    if (e.reason === 'stall-measured' && this.record) {
      // The final record: with the client-visible stall the engine measured.
      this.record = this.build(this.engine.takeoverReport());
      this.log.info('takeover report', { ...this.record });
      if (this.reportFile) appendFileSync(this.reportFile, JSON.stringify(this.record) + '\n');
      for (const fn of this.finalListeners) fn(this.record);
    }
  }

  private build(engine: NativeTakeoverReport): TakeoverRecord {
    const t = this.trigger!;
    const last = engine.steps.find((s) => s.n === 5)?.endUs;  // clients resume; step 6 goes on in the background
    return {
      record: 'takeover',
      trigger: t,
      detectionUs: t.lastHeardUs && t.decidedUs ? t.decidedUs - t.lastHeardUs : undefined,
      signallingUs: t.decidedUs ? engine.requestedUs - t.decidedUs : undefined,
      takeoverUs: last ? last - engine.requestedUs : undefined,
      replicaLag: summarizeReplicaLag(this.engine.replicaLag()),
      engine,
    };
  }
}
