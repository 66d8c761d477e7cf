// Primary agent role (`t2cp primary`): the monitored side of the failure
// detector's heartbeat. Thin wiring: one Channel on --listen, a heartbeat
// timer, the service check (service-status.ts) and the fence.
//
// Call order: new PrimaryAgent(opts, fence, log, service), await start(), ...
// await stop(). All on the Node event loop. stop() ends heartbeats and closes
// the socket; it leaves the fence as it is (the fence's own lifetime decides:
// an owned kernel table goes with the process).
//
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
import type { ActiveSide, AgentReport } from '../control/bodies.js';
import { Channel, sameEndpoint, type ChannelCounters, type Received } from '../control/channel.js';
import { systemClock, type Clock } from '../control/clock.js';
import type { ServiceStatus } from '../detector/heartbeat.js';
import type { Logger } from '../log.js';
import type { Endpoint } from '../options.js';
import type { PrimaryFence } from './primary-fence.js';

export interface PrimaryAgentOptions {
  instance: string;
  key: Buffer;
  listen: Endpoint;
  detector: Endpoint;
  intervalMs: number;
  /** 0: off. */
  selfFenceAfterMs: number;
  clock?: Clock;
}

/** none; self: this agent's own choice, lifted by the detector's word; stand-down: for good. */
export type FenceState = 'none' | 'self' | 'stand-down';

/** STATUS retry period until the detector first answers, ms. */
const STATUS_RETRY_MS = 100;

export class PrimaryAgent {
  readonly stats = { heartbeats: 0, probes: 0, standDowns: 0, unexpected: 0, fenceErrors: 0 };
  private ch: Channel | undefined;
  private readonly clock: Clock;
  private timers: NodeJS.Timeout[] = [];
  private fence: FenceState = 'none';
  private epochNo = 0;
  private statusAnswered = false;
  private lastDetectorUs = 0;
  private lastPollUs = 0;

  constructor(
    private readonly opts: PrimaryAgentOptions,
    private readonly fenceImpl: PrimaryFence,
    private readonly log: Logger,
    private readonly service: () => ServiceStatus,
  ) {
    this.clock = opts.clock ?? systemClock;
  }

  get fenced(): FenceState {
    return this.fence;
  }

  get epoch(): number {
    return this.epochNo;
  }

  address(): Endpoint {
    return this.ch!.address();
  }

  channelCounters(): ChannelCounters | undefined {
    return this.ch?.counters();
  }

  async start(): Promise<void> {
    this.ch = await Channel.open({ key: this.opts.key, sender: `primary:${this.opts.instance}`, bind: this.opts.listen, clock: this.clock });
    this.ch.onMessage((r) => this.onMessage(r));
    this.lastDetectorUs = this.clock.monoUs();
    const a = this.ch.address();
    this.log.info('primary agent started', { listen: `${a.address}:${a.port}`, detector: `${this.opts.detector.address}:${this.opts.detector.port}`, intervalMs: this.opts.intervalMs });
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
    this.ch?.send(this.opts.detector, 'HEARTBEAT', this.report());
  }

  private askStatus(): void {
    this.ch?.send(this.opts.detector, 'STATUS', {});
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
    if (!sameEndpoint(from, this.opts.detector)) {
      this.stats.unexpected++;
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

  private engage(kind: 'self' | 'stand-down', cause: string): void {
    if (this.fence === 'none') {
      try {
        this.fenceImpl.engage();
      } catch (e) {
        this.stats.fenceErrors++;
        this.log.error('fence failed', { cause, error: (e as Error).message });
        return;
      }
    }
    this.fence = kind;
    this.log.warn('fenced: this primary no longer answers clients', { fence: kind, cause, epoch: this.epochNo });
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
