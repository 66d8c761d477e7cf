// Device states of the failure detector, as Duplex (`002_…`) keeps them: one
// explicit machine for the pair, with a fixed table of legal transitions,
// plus the backup's own state as the detector last heard it. Pure (the clock
// is injected); the gateway node drives it from one event loop.
//
//   PROBING ──primary heard──> PRIMARY_ACTIVE <──heard again── SUSPECT
//                                   │ └─────soft timeout──────────>┘ │
//                                   └──hard timeout / service dead / planned──> TAKING_OVER
//   TAKING_OVER ──backup's report──> BACKUP_ACTIVE
//   TAKING_OVER ──no report in time / refused──> FAILED
//   PRIMARY_ACTIVE, SUSPECT ──verdict, but the backup is not standing by──> FAILED
//   FAILED ──primary heard (no takeover issued)──> PRIMARY_ACTIVE
//   FAILED ──backup standing by again / planned──> TAKING_OVER;  ──late report──> BACKUP_ACTIVE
//   PROBING, PRIMARY_ACTIVE, SUSPECT, FAILED ──a takeover this detector did
//     not see (its state file at start; the backup active at a higher epoch)──> BACKUP_ACTIVE
//   BACKUP_ACTIVE ──re-protection: an agent heard on the host that took over──> PRIMARY_ACTIVE
//
// The epoch counts takeovers begun; once one is begun the active side is the
// backup. Re-protection (reprotect()) makes the host that took over the
// primary and the old primary's host the backup: the roles swap, the active
// side is the primary's again, the epoch stays, and the backup is unknown
// until the new one is heard standing by. A detector that restarts takes the
// epoch and side of its state file (--state-dir), and the highest epoch it
// hears: the backup's word that it took over at a higher epoch than this
// detector knows wins (adopt()).
//
// Every transition (device or backup) is recorded with the wall clock (ISO)
// and monotonic µs since the detector started, and its cause; it is logged
// and handed to subscribers (tools, tests) in order.
//
// Protection follows from both: the service is protected while the primary
// serves and the backup stands by. When that stops (the backup silent, failed,
// or serving after a takeover with nothing behind it) a warning says so and
// why; an info line says when it is protected again.
import type { ActiveSide, BackupState, DeviceState } from '../control/bodies.js';
import { isoOfUs, type Clock } from '../control/clock.js';
import type { Logger } from '../log.js';

export type { DeviceState };
/** Whether a failure now would be survived; undefined while it is not known yet (starting, a takeover under way). */
export interface Protection {
  protected: boolean | undefined;
  why: string;
}

/** The backup as the detector knows it: what it last said, or silent (not heard for --backup-timeout). */
export type BackupView = BackupState | 'unknown' | 'silent';

export interface Transition {
  /** 1, 2, ... in the order they happened. */
  seq: number;
  subject: 'device' | 'backup';
  from: string;
  to: string;
  cause: string;
  epoch: number;
  /** Wall clock. */
  at: string;
  wallUs: number;
  /** Monotonic µs since the detector started. */
  sinceStartUs: number;
}

const NEXT: Record<DeviceState, readonly DeviceState[]> = {
  PROBING: ['PRIMARY_ACTIVE', 'TAKING_OVER', 'BACKUP_ACTIVE'],
  PRIMARY_ACTIVE: ['SUSPECT', 'TAKING_OVER', 'FAILED', 'BACKUP_ACTIVE'],
  SUSPECT: ['PRIMARY_ACTIVE', 'TAKING_OVER', 'FAILED', 'BACKUP_ACTIVE'],
  TAKING_OVER: ['BACKUP_ACTIVE', 'FAILED'],
  BACKUP_ACTIVE: ['PRIMARY_ACTIVE'],
  FAILED: ['PRIMARY_ACTIVE', 'TAKING_OVER', 'BACKUP_ACTIVE'],
};

/** Transitions kept for history(); older ones are still logged. */
const HISTORY_MAX = 1000;

export class DeviceStates {
  private current: DeviceState = 'PROBING';
  private backupView: BackupView = 'unknown';
  private epochNo: number;
  private side: ActiveSide = 'primary';
  private seq = 0;
  private readonly startUs: number;
  private readonly past: Transition[] = [];
  private subscribers: Array<(t: Transition) => void> = [];
  private lastProtection: Protection = { protected: undefined, why: 'starting' };

  constructor(
    private readonly clock: Clock,
    private readonly log?: Logger,
    startEpoch = 0,
  ) {
    this.startUs = clock.monoUs();
    this.epochNo = startEpoch;
  }

  get state(): DeviceState {
    return this.current;
  }

  get backup(): BackupView {
    return this.backupView;
  }

  get epoch(): number {
    return this.epochNo;
  }

  /** Who should serve the clients: the backup as soon as a takeover was begun. */
  get activeSide(): ActiveSide {
    return this.side;
  }

  /** Whether the service would survive a failure now, and why not. */
  get protection(): Protection {
    if (this.side === 'backup') {
      if (this.current === 'TAKING_OVER') return { protected: undefined, why: 'a takeover is under way' };
      return { protected: false, why: 'the backup took over: no host stands by behind it' };
    }
    if (this.current === 'PROBING') return { protected: undefined, why: 'the primary is not heard yet' };
    if (this.current === 'FAILED') return { protected: false, why: 'the primary failed and the backup was not standing by' };
    if (this.backupView === 'unknown') return { protected: undefined, why: 'the backup is not heard yet' };
    if (this.backupView === 'silent') return { protected: false, why: 'the backup is silent' };
    if (this.backupView === 'blind') return { protected: false, why: 'the backup\'s mirror port is down: its replicas follow nothing' };
    if (this.backupView !== 'standby') return { protected: false, why: `the backup is ${this.backupView}, not standing by` };
    return { protected: true, why: 'the backup stands by' };
  }

  /** Subscribe to transitions; returns the unsubscribe function. */
  subscribe(fn: (t: Transition) => void): () => void {
    this.subscribers.push(fn);
    return () => {
      this.subscribers = this.subscribers.filter((s) => s !== fn);
    };
  }

  history(): readonly Transition[] {
    return this.past;
  }

  can(to: DeviceState): boolean {
    if (!NEXT[this.current].includes(to)) return false;
    // A FAILED pair goes back to the primary only if no takeover was ever begun; a pair the
    // backup serves, only by re-protection (which makes the side the primary's first).
    if ((this.current === 'FAILED' || this.current === 'BACKUP_ACTIVE') && to === 'PRIMARY_ACTIVE') return this.side === 'primary';
    // The backup serves only after a takeover: this detector's, or one it adopted.
    if (to === 'BACKUP_ACTIVE') return this.side === 'backup';
    return true;
  }

  /** Take a transition; throws on one the table forbids (a bug in the caller). Use beginTakeover() for TAKING_OVER. */
  move(to: Exclude<DeviceState, 'TAKING_OVER'>, cause: string): void {
    this.go(to, cause);
  }

  /** Enter TAKING_OVER with a new epoch, which it returns. */
  beginTakeover(cause: string): number {
    if (!this.can('TAKING_OVER')) throw new Error(`device state ${this.current} -> TAKING_OVER is not a legal transition`);
    this.epochNo++;
    this.side = 'backup';
    this.go('TAKING_OVER', cause);
    return this.epochNo;
  }

  /**
   * A takeover this detector did not see: the backup serves since `epoch`
   * (its state file at start, or the backup's word at a higher epoch than
   * this detector knows). Not while one of its own is under way.
   */
  adopt(epoch: number, cause: string): void {
    if (this.current === 'TAKING_OVER' || this.current === 'BACKUP_ACTIVE')
      throw new Error(`device state ${this.current}: no takeover to adopt (${cause})`);
    if (epoch < this.epochNo) throw new Error(`epoch ${epoch} is older than this detector's ${this.epochNo} (${cause})`);
    this.epochNo = epoch;
    this.side = 'backup';
    this.go('BACKUP_ACTIVE', cause);
  }

  /**
   * Re-protection: the host that took over is the primary from now on and the old primary's
   * host is to stand by as the backup (the caller swaps their addresses). The epoch stays; the
   * backup is unknown until it is heard.
   */
  reprotect(cause: string): void {
    if (this.current !== 'BACKUP_ACTIVE') throw new Error(`device state ${this.current}: nothing to re-protect (${cause})`);
    this.side = 'primary';
    this.setBackup('unknown', 'roles swapped: the new backup is not heard yet');
    this.go('PRIMARY_ACTIVE', cause);
  }

  /** Record what the backup said of itself, or that it fell silent. No-op when unchanged. */
  setBackup(view: BackupView, cause: string): void {
    if (view === this.backupView) return;
    const from = this.backupView;
    this.backupView = view;
    this.record('backup', from, view, cause);
  }

  private noteProtection(): void {
    const p = this.protection;
    const last = this.lastProtection;
    this.lastProtection = p;
    if (p.protected === false && (last.protected !== false || last.why !== p.why)) {
      this.log?.warn('service unprotected', { why: p.why, epoch: this.epochNo });
    } else if (p.protected === true && last.protected !== true) {
      this.log?.info('service protected', { why: p.why, epoch: this.epochNo });
    }
  }

  private go(to: DeviceState, cause: string): void {
    if (!this.can(to)) throw new Error(`device state ${this.current} -> ${to} is not a legal transition (${cause})`);
    const from = this.current;
    this.current = to;
    this.record('device', from, to, cause);
  }

  private record(subject: Transition['subject'], from: string, to: string, cause: string): void {
    const wallUs = this.clock.wallUs();
    const t: Transition = {
      seq: ++this.seq, subject, from, to, cause, epoch: this.epochNo,
      at: isoOfUs(wallUs), wallUs, sinceStartUs: this.clock.monoUs() - this.startUs,
    };
    this.past.push(t);
    if (this.past.length > HISTORY_MAX) this.past.shift();
    const fields = { from, to, cause, epoch: t.epoch, at: t.at, sinceStartUs: t.sinceStartUs };
    if (subject === 'device') this.log?.info('device state', fields);
    else this.log?.info('backup state', fields);
    this.noteProtection();
    for (const fn of [...this.subscribers]) fn(t);
  }
}
