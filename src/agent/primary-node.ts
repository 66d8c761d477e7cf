// Primary agent role (`t2cp primary`): the monitored side of the failure
// detector's heartbeat, and the primary's end of keepalived's notify hooks.
// Thin wiring: one Channel on --listen, a heartbeat timer, the service check
// (service-status.ts), the fence and the keepalived rule (vrrp-guard.ts).
//
// Call order: new PrimaryAgent(opts, fence, log, service), await start(), ...
// await stop(). All on the Node event loop. stop() ends heartbeats and closes
// the socket; it leaves the fence as it is (the fence's own lifetime decides:
// an owned kernel table goes with the process).
//
// With a detector (--detector):
// - HEARTBEAT to the detector every interval (push); PROBE answered at once
//   with PROBE_REPLY (pull). Both carry {alive, listening, fenced, epoch}.
// - STAND_DOWN {epoch}: engage the fence, log, answer STAND_DOWN_ACK, and
//   answer every later STAND_DOWN the same way. Never unfenced by the agent.
// - At start, and until answered, STATUS to the detector: a reply saying the
//   backup is active in a newer epoch fences at once, as a STAND_DOWN would
//   (an agent restarted on a replaced primary must not serve).
// - Self-fencing (--self-fence-after, default off): the gateway is on the
//   clients' path, so a primary that cannot hear the detector for that long
//   probably cannot reach the clients either, while the backup may be taking
//   over: fence until the detector confirms (STATUS_REPLY) that this primary
//   is still the active one in the current epoch. With it on, the agent polls
//   STATUS four times per period, since in push mode the detector says nothing
//   to a healthy primary. Off by default: with it, a detector outage fences a
//   healthy primary and stops the service for everyone.
//
// Without a detector (keepalived decides who serves): no heartbeat, no STATUS,
// no self-fence (the configuration refuses --self-fence-after); the agent only
// listens for commands.
//
// With --state-dir, standing down is kept (agent-state.ts) and a restarted
// agent that finds it fences at start, before it listens.
//
// In both modes: STATUS from anyone but the detector (`t2cp status`, a
// cluster manager's monitor; authenticated like every message) is answered
// with NODE_STATUS {role: 'primary', state: the fence, epoch, service}.
// STAND_DOWN from 127.0.0.1 (other than the detector's own
// endpoint) is a local request, from `t2cp stand-down` (a person, or one of
// keepalived's notify hooks), signed with the same key; the Channel checks
// the hmac and refuses replays and stale copies as for the detector. Without
// `vrrp` in the body it stands down at once. With it (--vrrp-state), the
// keepalived rule of vrrp-guard.ts decides: FAULT and STOP stand down; MASTER
// is recorded; BACKUP stands down only when a MASTER of this host came before
// it, since keepalived passes every instance through BACKUP once at startup.
// Every local request is answered with STAND_DOWN_ACK {epoch, fenced, note?,
// error?}: error when the fence failed (tried again at the next copy, which
// the CLI sends every 100 ms). STAND_DOWN from anywhere else: counted
// (stats.unexpected), not answered.
import { VRRP_HOOK_STATES, type ActiveSide, type AgentReport, type PrimaryState } from '../control/bodies.js';
import { Channel, sameEndpoint, type ChannelCounters, type Received } from '../control/channel.js';
import { systemClock, type Clock } from '../control/clock.js';
import type { MessageOf } from '../control/messages.js';
import type { ServiceStatus } from '../detector/heartbeat.js';
import type { Logger } from '../log.js';
import type { Endpoint } from '../options.js';
import type { AgentState } from './agent-state.js';
import type { PrimaryFence } from './primary-fence.js';
import { bootNowUs, VrrpGuard } from './vrrp-guard.js';

export interface PrimaryAgentOptions {
  instance: string;
  key: Buffer;
  listen: Endpoint;
  /** Absent: keepalived decides who serves; no heartbeat, no STATUS, no self-fence. */
  detector?: Endpoint;
  intervalMs: number;
  /** 0: off. Needs a detector. */
  selfFenceAfterMs: number;
  clock?: Clock;
  /** What this agent knew when it last stopped (--state-dir), read at start. */
  restored?: AgentState;
  /** Keep the state (synced before it returns); throws when it cannot. */
  saveState?: (s: AgentState) => void;
}

/** none; self: this agent's own choice, lifted by the detector's word; stand-down: for good. */
export type FenceState = 'none' | 'self' | 'stand-down';

/** The fence as NODE_STATUS names it. */
const STATUS_OF_FENCE: Record<FenceState, PrimaryState> = { none: 'serving', self: 'self-fenced', 'stand-down': 'stood-down' };

/** STATUS retry period until the detector first answers, ms. */
const STATUS_RETRY_MS = 100;
/** A late heartbeat is logged at most this often, µs (each is counted). */
const LATE_LOG_EVERY_US = 10_000_000;

export class PrimaryAgent {
  readonly stats = { heartbeats: 0, heartbeatsLate: 0, probes: 0, standDowns: 0, localStandDowns: 0, vrrpIgnored: 0, unexpected: 0, fenceErrors: 0 };
  /** When the last heartbeat went, and when a late one was last logged (monotonic µs). */
  private lastBeatUs = 0;
  private lateLoggedUs = -Infinity;
  /** The keepalived rule for local requests with a VRRP state. */
  readonly vrrp = new VrrpGuard();
  private ch: Channel | undefined;
  private readonly clock: Clock;
  private timers: NodeJS.Timeout[] = [];
  private fence: FenceState = 'none';
  private epochNo = 0;
  private statusAnswered = false;
  private lastDetectorUs = 0;
  private lastPollUs = 0;
  private lastFenceError = '';

  constructor(
    private readonly opts: PrimaryAgentOptions,
    private readonly fenceImpl: PrimaryFence,
    private readonly log: Logger,
    private readonly service: () => ServiceStatus,
  ) {
    this.clock = opts.clock ?? systemClock;
    if (opts.selfFenceAfterMs > 0 && !opts.detector) throw new Error('self-fencing needs a detector');
  }

  get fenced(): FenceState {
    return this.fence;
  }

  get epoch(): number {
    return this.epochNo;
  }

  /** What `t2cp status` says of this primary: serving, self-fenced or stood-down. */
  get state(): PrimaryState {
    return STATUS_OF_FENCE[this.fence];
  }

  address(): Endpoint {
    return this.ch!.address();
  }

  channelCounters(): ChannelCounters | undefined {
    return this.ch?.counters();
  }

  async start(): Promise<void> {
    const r = this.opts.restored;
    if (r) this.epochNo = r.epoch;
    if (r?.stoodDown && !this.engage('stand-down', `restored: this primary stood down at epoch ${r.epoch} (state file of ${r.updated})`))
      throw new Error(`this primary stood down at epoch ${r.epoch} and cannot fence again: ${this.lastFenceError}`);
    this.ch = await Channel.open({ key: this.opts.key, sender: `primary:${this.opts.instance}`, bind: this.opts.listen, clock: this.clock });
    this.ch.onMessage((r) => this.onMessage(r));
    this.lastDetectorUs = this.clock.monoUs();
    const a = this.ch.address();
    const d = this.opts.detector;
    if (!d) {
      this.log.info('primary agent started without a detector: only local commands (t2cp stand-down) act', { listen: `${a.address}:${a.port}` });
      return;
    }
    this.log.info('primary agent started', { listen: `${a.address}:${a.port}`, detector: `${d.address}:${d.port}`, intervalMs: this.opts.intervalMs });
    this.askStatus();
    this.beat();
    this.timers.push(setInterval(() => this.beat(), this.opts.intervalMs));
    const pollMs = this.opts.selfFenceAfterMs > 0 ? Math.max(1, Math.floor(this.opts.selfFenceAfterMs / 4)) : STATUS_RETRY_MS;
    this.timers.push(setInterval(() => this.poll(), Math.min(pollMs, STATUS_RETRY_MS)));
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    await this.ch?.close();
    this.log.info('primary agent stopped', { ...this.stats, fence: this.fence, epoch: this.epochNo });
  }

  private report(): AgentReport {
    const s = this.service();
    return { alive: s.alive, listening: s.listening, fenced: this.fence !== 'none', epoch: this.epochNo };
  }

  private beat(): void {
    this.stats.heartbeats++;
    // A timer that fires more than an interval late: this host kept the agent from running (a
    // starved CPU, a swapped-out page). The detector cannot tell that silence from death: said
    // here, at most every ten seconds, so an operator sees how close a false takeover came.
    const now = this.clock.monoUs();
    const gapUs = this.lastBeatUs ? now - this.lastBeatUs : 0;
    this.lastBeatUs = now;
    if (gapUs > 2 * this.opts.intervalMs * 1000) {
      this.stats.heartbeatsLate++;
      if (now - this.lateLoggedUs >= LATE_LOG_EVERY_US) {
        this.lateLoggedUs = now;
        this.log.warn('heartbeat late: this host kept the agent from running; the detector takes a silence of --interval x --hard-misses for death',
          { gapMs: Math.round(gapUs / 100) / 10, intervalMs: this.opts.intervalMs, late: this.stats.heartbeatsLate });
      }
    }
    if (this.opts.detector) this.ch?.send(this.opts.detector, 'HEARTBEAT', this.report());
  }

  private askStatus(): void {
    if (this.opts.detector) this.ch?.send(this.opts.detector, 'STATUS', {});
  }

  /** STATUS until first answered, then (self-fencing on) every quarter period; and the self-fence check. */
  private poll(): void {
    const now = this.clock.monoUs();
    const period = this.opts.selfFenceAfterMs * 1000;
    if (!this.statusAnswered || (period > 0 && now - this.lastPollUs >= period / 4)) {
      this.lastPollUs = now;
      this.askStatus();
    }
    if (period > 0 && this.fence === 'none' && now - this.lastDetectorUs > period)
      this.engage('self', `the detector was not heard for ${Math.round((now - this.lastDetectorUs) / 1000)} ms`);
  }

  private onMessage({ msg, from }: Received): void {
    if (!this.opts.detector || !sameEndpoint(from, this.opts.detector)) {
      if (msg.type === 'STAND_DOWN' && from.address === '127.0.0.1') this.localStandDown(msg, from);
      else if (msg.type === 'STATUS') this.answerStatus(from);
      else this.stats.unexpected++;
      return;
    }
    if (msg.type === 'PROBE') {
      this.stats.probes++;
      this.heard(msg.body.epoch, msg.body.active);
      this.ch!.send(from, 'PROBE_REPLY', { ...this.report(), seq: msg.body.seq });
    } else if (msg.type === 'STATUS_REPLY') {
      this.statusAnswered = true;
      this.heard(msg.body.epoch, msg.body.active);
    } else if (msg.type === 'STAND_DOWN') {
      this.stats.standDowns++;
      this.lastDetectorUs = this.clock.monoUs();
      this.epochNo = Math.max(this.epochNo, msg.body.epoch);
      if (this.fence !== 'stand-down') this.engage('stand-down', `STAND_DOWN for epoch ${msg.body.epoch}: the backup takes over`);
      // Acknowledge only a fence that holds; a failed engage is tried again at the next STAND_DOWN.
      if (this.fence === 'stand-down') this.ch!.send(from, 'STAND_DOWN_ACK', { epoch: this.epochNo });
    } else this.stats.unexpected++;
  }

  /** STAND_DOWN from this host (`t2cp stand-down`): the keepalived rule, then always an answer. */
  private localStandDown(msg: MessageOf<'STAND_DOWN'>, from: Endpoint): void {
    const { epoch, vrrp, hookStartUs } = msg.body;
    const startOk = hookStartUs === undefined || (Number.isSafeInteger(hookStartUs) && hookStartUs >= 0);
    if ((vrrp !== undefined && !VRRP_HOOK_STATES.includes(vrrp)) || !startOk) {
      this.stats.unexpected++; // a newer CLI's state, or garbage from a key holder: no action, no answer
      return;
    }
    this.stats.standDowns++;
    this.stats.localStandDowns++;
    this.epochNo = Math.max(this.epochNo, epoch);
    const verdict = this.vrrp.decide(vrrp, hookStartUs ?? bootNowUs() ?? Number.MAX_SAFE_INTEGER);
    const answer = (extra: { note?: string; error?: string }) =>
      this.ch!.send(from, 'STAND_DOWN_ACK', { epoch: this.epochNo, fenced: this.fence !== 'none', ...extra });
    if (verdict.act === 'ignore') {
      this.stats.vrrpIgnored++;
      this.log.info('local stand-down ignored', { vrrp, note: verdict.note, fence: this.fence });
      answer({ note: verdict.note });
    } else if (verdict.act === 'record') {
      if (this.fence === 'stand-down')
        this.log.warn('keepalived says this host is MASTER, but this primary stood down for good: it does not serve; the backup does', { epoch: this.epochNo });
      else this.log.info('keepalived MASTER recorded', { fence: this.fence });
      answer({ note: verdict.note });
    } else if (this.fence === 'stand-down') {
      answer({ note: 'already stood down' });
    } else if (this.engage('stand-down', `${verdict.cause} (t2cp stand-down${vrrp ? ` --vrrp-state ${vrrp}` : ''})`)) {
      answer({});
    } else {
      answer({ error: `the fence failed: ${this.lastFenceError}` });
    }
  }

  private answerStatus(to: Endpoint): void {
    const { alive, listening } = this.service();
    this.ch!.send(to, 'NODE_STATUS', { role: 'primary', state: STATUS_OF_FENCE[this.fence], epoch: this.epochNo, service: { alive, listening } });
  }

  /** The detector spoke, saying which side is active in which epoch. */
  private heard(epoch: number, active: ActiveSide): void {
    this.lastDetectorUs = this.clock.monoUs();
    if (active === 'backup') {
      // Replaced: whatever epoch this agent knew (0 after a restart), the backup serves now.
      this.epochNo = Math.max(this.epochNo, epoch);
      if (this.fence !== 'stand-down') this.engage('stand-down', `the detector says the backup is active (epoch ${epoch})`);
    } else {
      // The detector's epoch is the current one (it starts again at 0 when the detector restarts).
      this.epochNo = epoch;
      if (this.fence === 'self') this.release(`the detector confirms this primary is active (epoch ${epoch})`);
    }
  }

  /** False when the fence failed (logged, counted, its message in lastFenceError). */
  private engage(kind: 'self' | 'stand-down', cause: string): boolean {
    if (this.fence === 'none') {
      try {
        this.fenceImpl.engage();
      } catch (e) {
        this.stats.fenceErrors++;
        this.lastFenceError = (e as Error).message;
        this.log.error('fence failed', { cause, error: this.lastFenceError });
        return false;
      }
    }
    const was = this.fence;
    this.fence = kind;
    // Kept first (synced), then said: whoever reads the log line finds the file.
    if (kind === 'stand-down' && was !== 'stand-down') this.saveState();
    this.log.warn('fenced: this primary no longer answers clients', { fence: kind, cause, epoch: this.epochNo });
    return true;
  }

  private saveState(): void {
    if (!this.opts.saveState) return;
    try {
      this.opts.saveState({ version: 1, epoch: this.epochNo, stoodDown: this.fence === 'stand-down', updated: new Date(this.clock.wallUs() / 1000).toISOString() });
    } catch (e) {
      this.log.error('cannot keep that this primary stood down: restarted, it would serve again until told otherwise', { error: (e as Error).message });
    }
  }

  private release(cause: string): void {
    try {
      this.fenceImpl.release();
    } catch (e) {
      this.stats.fenceErrors++;
      this.log.error('fence release failed', { cause, error: (e as Error).message });
      return;
    }
    this.fence = 'none';
    this.log.info('fence released', { cause, epoch: this.epochNo });
  }
}
