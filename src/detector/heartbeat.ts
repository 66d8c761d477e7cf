// Heartbeat monitor of the failure detector: watches one primary agent. Pure:
// no I/O, no timers; the caller passes monotonic µs to every input and acts on
// the returned actions (gateway-node.ts sends the probes, the device state
// machine takes the verdicts). Call tick(now) at nextDueUs() or later.
//
// Push and pull heartbeats as the survey (`004_…`) names them: the agent
// announces itself every interval (HEARTBEAT) and answers probes at once
// (PROBE -> PROBE_REPLY). Modes: 'push' never probes; 'pull' probes every
// interval, and every probe interval when suspect; 'both' (default) relies on
// push and probes only when suspect. Whatever the mode, any heartbeat or probe
// reply counts as hearing the primary.
//
// Two-level timeout as in Duplex (`002_…`): after softMisses heartbeats missed
// the primary is SUSPECT and the detector pulls at the faster probe interval,
// so a congested path gets several chances to answer; only when nothing at all
// was heard for the hard timeout is the host declared dead. A heartbeat counts
// as missed when half an interval late, because at 10 ms intervals the timers
// of two busy hosts jitter by a millisecond or two:
//   soft timeout = (softMisses + 1/2) x interval, hard timeout = hardMisses x interval.
// (Duplex makes the hard timeout grow with load; here it is fixed, and the
// probes between the two timeouts are what tell load from death.)
//
// Service death: a host that answers but reports its service dead (process
// gone or a port not listening) in hardMisses consecutive reports is declared
// service-dead. Only a service once seen healthy can die: a primary still
// starting its service is not a failure.
//
// The detector's own pauses (GC, a starved CPU) are not the primary's
// silence: a tick arriving more than an interval after it was due moves the
// last-heard time forward by the delay (counted in `stalls`).

export type HeartbeatMode = 'push' | 'pull' | 'both';
export type DeadCause = 'host' | 'service';
export type Liveness = 'waiting' | 'alive' | 'suspect' | 'dead';

export interface HeartbeatTiming {
  /** Expected time between heartbeats, µs. */
  intervalUs: number;
  /** Heartbeats missed before SUSPECT (>= 1). */
  softMisses: number;
  /** Intervals of total silence before the host is dead; consecutive bad reports before the service is dead (> softMisses). */
  hardMisses: number;
  /** Time between probes while suspect, µs (default interval / 2). */
  probeIntervalUs: number;
}

export interface ServiceStatus {
  alive: boolean;
  listening: boolean;
}

export interface DeadVerdict {
  kind: 'dead';
  cause: DeadCause;
  atUs: number;
  lastHeardUs: number;
  lastHealthyUs: number;
  /** Last heard (host) or last healthy report (service) to the verdict, µs. */
  detectionUs: number;
}

export type HeartbeatAction =
  | { kind: 'alive' } // first heard
  | { kind: 'probe' }
  | { kind: 'suspect'; silentUs: number }
  | { kind: 'recovered'; silentUs: number }
  | DeadVerdict;

export function softTimeoutUs(t: HeartbeatTiming): number {
  return t.softMisses * t.intervalUs + t.intervalUs / 2;
}

export function hardTimeoutUs(t: HeartbeatTiming): number {
  return t.hardMisses * t.intervalUs;
}

export class HeartbeatMonitor {
  private level: Liveness = 'waiting';
  private lastHeardUs: number;
  private lastHealthyUs: number;
  private healthySeen = false;
  private badReports = 0;
  private nextProbeUs: number;
  private readonly softUs: number;
  private readonly hardUs: number;
  /** Ticks that came more than an interval late (the detector itself stalled). */
  stalls = 0;

  constructor(
    readonly timing: HeartbeatTiming,
    readonly mode: HeartbeatMode,
    startUs: number,
  ) {
    this.softUs = softTimeoutUs(timing);
    this.hardUs = hardTimeoutUs(timing);
    this.lastHeardUs = this.lastHealthyUs = this.nextProbeUs = startUs;
  }

  get liveness(): Liveness {
    return this.level;
  }

  get lastHeard(): number {
    return this.lastHeardUs;
  }

  /** A HEARTBEAT arrived (push). */
  heartbeat(nowUs: number, s: ServiceStatus): HeartbeatAction[] {
    return this.heard(nowUs, s);
  }

  /** A PROBE_REPLY arrived (pull). */
  probeReply(nowUs: number, s: ServiceStatus): HeartbeatAction[] {
    return this.heard(nowUs, s);
  }

  /** Inert from now on, without a verdict: a takeover was begun by other means (planned). */
  halt(): void {
    this.level = 'dead';
  }

  /** After a verdict (or halt) the monitor is inert; rearm() watches afresh (a primary back after a failed takeover). */
  rearm(nowUs: number): void {
    this.level = 'waiting';
    this.healthySeen = false;
    this.badReports = 0;
    this.lastHeardUs = this.lastHealthyUs = this.nextProbeUs = nowUs;
  }

  /** When tick() next has something to do (Infinity: only an input can change anything). */
  nextDueUs(): number {
    let due = Infinity;
    if (this.level === 'alive') due = this.lastHeardUs + this.softUs;
    else if (this.level === 'suspect') due = this.lastHeardUs + this.hardUs;
    if (this.probing()) due = Math.min(due, this.nextProbeUs);
    return due;
  }

  tick(nowUs: number): HeartbeatAction[] {
    if (this.level === 'dead') return [];
    const late = nowUs - this.nextDueUs();
    if (late > this.timing.intervalUs && this.level !== 'waiting') {
      this.stalls++;
      this.lastHeardUs = Math.min(nowUs, this.lastHeardUs + late);
    }
    const out: HeartbeatAction[] = [];
    const silentUs = nowUs - this.lastHeardUs;
    if (this.level === 'alive' && silentUs >= this.softUs) {
      this.level = 'suspect';
      out.push({ kind: 'suspect', silentUs });
      this.nextProbeUs = nowUs; // pull at once
    }
    if (this.level === 'suspect' && silentUs >= this.hardUs) {
      this.level = 'dead';
      out.push(this.verdict('host', nowUs));
      return out;
    }
    if (this.probing() && nowUs >= this.nextProbeUs) {
      out.push({ kind: 'probe' });
      const period = this.level === 'suspect' ? this.timing.probeIntervalUs : this.timing.intervalUs;
      this.nextProbeUs += period;
      if (this.nextProbeUs <= nowUs) this.nextProbeUs = nowUs + period;
    }
    return out;
  }

  private probing(): boolean {
    return this.mode === 'pull' ? this.level !== 'dead' : this.mode === 'both' && this.level === 'suspect';
  }

  private heard(nowUs: number, s: ServiceStatus): HeartbeatAction[] {
    if (this.level === 'dead') return [];
    const out: HeartbeatAction[] = [];
    if (this.level === 'waiting') out.push({ kind: 'alive' });
    else if (this.level === 'suspect') out.push({ kind: 'recovered', silentUs: nowUs - this.lastHeardUs });
    this.level = 'alive';
    this.lastHeardUs = Math.max(this.lastHeardUs, nowUs);
    if (s.alive && s.listening) {
      this.healthySeen = true;
      this.badReports = 0;
      this.lastHealthyUs = nowUs;
    } else if (this.healthySeen && ++this.badReports >= this.timing.hardMisses) {
      this.level = 'dead';
      out.push(this.verdict('service', nowUs));
    }
    return out;
  }

  private verdict(cause: DeadCause, nowUs: number): DeadVerdict {
    const since = cause === 'host' ? this.lastHeardUs : this.lastHealthyUs;
    return { kind: 'dead', cause, atUs: nowUs, lastHeardUs: this.lastHeardUs, lastHealthyUs: this.lastHealthyUs, detectionUs: nowUs - since };
  }
}
