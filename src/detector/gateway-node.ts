// Gateway node role: the failure detector's wiring (thin, like conntrackd's
// sync-mode.c). One Channel on --listen; the heartbeat monitor watches the
// primary agent, the device states say where the pair stands, the takeover
// coordinator runs each takeover; this file moves messages and timer ticks
// between them and the socket, and performs their actions.
//
// Call order: new GatewayNode(opts, fence, log), await start(), ... await
// stop(). Everything on the Node event loop; nothing blocks it but appending
// a takeover record to --report.
//
// Peers are known by address: messages from --primary are the agent's, from
// --backup the backup control endpoint's (it must send from its control
// socket). STATUS is answered to anyone holding the key. Re-protection swaps
// the hosts: once the backup took over, an agent heard on its host (at
// --primary's port) makes it the primary, and the old primary's host (at
// --backup's port) the backup to be heard; the fence on the old primary holds
// until that backup stands by.
//
// Timers: one timeout, set for the earliest thing due (monitor, coordinator,
// backup silence). When it fires, the work runs from setImmediate, i.e. after
// the event loop's poll phase: datagrams already in the socket are read
// before silence is judged.
import { Channel, sameEndpoint, type ChannelCounters, type Received } from '../control/channel.js';
import { systemClock, type Clock } from '../control/clock.js';
import type { Message, MessageOf } from '../control/messages.js';
import type { ClusterView, LiveFlows, TakeoverReport } from '../control/bodies.js';
import type { Logger } from '../log.js';
import type { UdpManifest } from '../addon.js';
import { MAC_RE, type Endpoint } from '../options.js';
import type { DetectorState } from './detector-state.js';
import { DeviceStates } from './device-states.js';
import { engageFence, type GatewayFence } from './gateway-fence.js';
import { HeartbeatMonitor, type DeadVerdict, type HeartbeatAction, type HeartbeatMode, type HeartbeatTiming } from './heartbeat.js';
import { appendRecord, TakeoverCoordinator, type CoordinatorAction, type TakeoverRecord, type TakeoverStart } from './takeover.js';

/** RESUPPLY_DATA datagrams sent per millisecond at most (~29 MB/s of client bytes in 900-byte pieces). */
const RESUPPLY_BURST = 32;
/** Datagrams one UDP_RESUPPLY_REQUEST may ask for. */
const UDP_RESUPPLY_MAX = 256;

export interface GatewayNodeOptions {
  instance: string;
  key: Buffer;
  listen: Endpoint;
  primary: Endpoint;
  backup: Endpoint;
  mode: HeartbeatMode;
  timing: HeartbeatTiming;
  backupTimeoutUs: number;
  takeoverTimeoutUs: number;
  standDownTimeoutUs: number;
  reportFile?: string;
  primaryMac?: string;
  clock?: Clock;
  /** What this detector knew when it last stopped (--state-dir), read at start. */
  restored?: DetectorState;
  /** Keep the state (synced before it returns); throws when it cannot. */
  saveState?: (s: DetectorState) => void;
  /** The traffic recorder: re-sends (on its own thread) what the clients sent toward the VIP since a wall-clock µs. */
  recorder?: {
    resupply(sinceWallUs: number): void;
    /** The takeover is ordered: replay since sinceWallUs as soon as the VIP is announced from another MAC than the old owner's. */
    armReplay(sinceWallUs: number, oldOwnerMac: string): void;
    /** Recorded segments of one flow carrying client bytes [from, to), one frame each. */
    lookup(q: { client: string; clientPort: number; vipPort: number; from: number; to: number }): Buffer[];
    /** The records of the clients' datagrams numbered `after` and on, up to the takeover's cut (undefined: no UDP port). */
    udpManifest(after: number, fromNow: boolean, askerMac?: string): UdpManifest | undefined;
    /** The recorded datagrams of these numbers still held; one larger than a frame as its IP fragments. */
    udpLookup(numbers: number[]): Buffer[];
    counters(): Record<string, number>;
  };
}

const ms = (us: number): number => Math.round(us / 100) / 10;
/** How long a takeover record waits for the backup's final report (its stall figure comes ~2 s after step 5), ms. */
const FINAL_REPORT_WAIT_MS = 4000;

export class GatewayNode {
  readonly states: DeviceStates;
  readonly stats = { heartbeats: 0, probeReplies: 0, probes: 0, unexpected: 0, plannedIgnored: 0, resupplyRequests: 0, resupplySegments: 0, udpManifests: 0, udpResupplied: 0 };
  private ch: Channel | undefined;
  private readonly clock: Clock;
  /** The hosts' roles are the configuration's swapped, by re-protection (kept in the state file). */
  private swapped: boolean;
  /** Re-protected with the fence on the new backup's host, lifted once it is heard standing by. */
  private fenceOnNewBackup = false;
  private readonly monitor: HeartbeatMonitor;
  private readonly takeover: TakeoverCoordinator;
  private timer: NodeJS.Timeout | undefined;
  private timerDueUs = Infinity;
  private stopped = false;
  private backupHeardUs: number;
  private probeSeq = 0;
  /** A verdict that found no backup standing by: begun when one is heard again. */
  private pending: Omit<TakeoverStart, 'epoch'> | undefined;
  private fenceEngaged = false;
  /** The MAC the fence drops, or is to drop (kept in the state file). */
  private fencedMac: string | undefined;
  /** The backup's open connections, from its last heartbeat while it replicated. */
  private backupFlows: LiveFlows | undefined;
  /** The epoch of a takeover adopted (restored, or the backup's word). */
  private adoptedEpoch: number | undefined;
  /** The takeover under way replays what was captured since then (wall clock µs). */
  private replaySinceUs: number | undefined;
  private verdictWallUs: number | undefined;
  /** The recorder's replays_on_announcement when the last record was written. */
  private replaysOnAnnouncement = 0;
  private readonly records: TakeoverRecord[] = [];
  private recordListeners: Array<(r: TakeoverRecord) => void> = [];
  /** A takeover done whose record waits for the backup's final report. */
  private unwritten: TakeoverRecord | undefined;
  private readonly resupplyQueue: Array<{ packet: Buffer; doneKey?: string }> = [];
  /** Requests whose pieces are still queued. */
  private readonly resupplyPending = new Set<string>();
  private resupplyTimer: NodeJS.Timeout | undefined;
  private finalTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly opts: GatewayNodeOptions,
    private readonly fence: GatewayFence,
    private readonly log: Logger,
  ) {
    this.clock = opts.clock ?? systemClock;
    this.swapped = opts.restored?.swapped === true;
    // A restored takeover is adopted at start(); a restored epoch without one is where counting goes on.
    this.states = new DeviceStates(this.clock, log, opts.restored?.active === 'primary' ? opts.restored.epoch : 0);
    this.monitor = new HeartbeatMonitor(opts.timing, opts.mode, this.clock.monoUs());
    this.takeover = new TakeoverCoordinator(this.clock, {
      resendUs: opts.timing.intervalUs, standDownTimeoutUs: opts.standDownTimeoutUs, takeoverTimeoutUs: opts.takeoverTimeoutUs,
    });
    this.backupHeardUs = this.clock.monoUs();
  }

  /** The hosts by role: the configuration's, or swapped. */
  private get peers(): { primary: Endpoint; backup: Endpoint } {
    return this.swapped ? swap(this.opts) : { primary: this.opts.primary, backup: this.opts.backup };
  }

  async start(): Promise<void> {
    this.ch = await Channel.open({ key: this.opts.key, sender: `gateway:${this.opts.instance}`, bind: this.opts.listen, clock: this.clock });
    this.ch.onMessage((r) => this.onMessage(r));
    const now = this.clock.monoUs();
    this.monitor.rearm(now);
    this.backupHeardUs = now;
    const a = this.ch.address();
    this.log.info('failure detector listening', {
      listen: `${a.address}:${a.port}`, primary: `${this.peers.primary.address}:${this.peers.primary.port}`,
      backup: `${this.peers.backup.address}:${this.peers.backup.port}`, swapped: this.swapped, mode: this.opts.mode, intervalUs: this.opts.timing.intervalUs,
    });
    if (this.swapped) this.fence.swapped?.(this.peers.primary.address, this.peers.backup.address);
    const r = this.opts.restored;
    if (r?.active === 'backup') this.adoptTakeover(r.epoch, r.fencedMac, `restored: the backup took over at epoch ${r.epoch} (state file of ${r.updated})`);
    else if (r?.fencedMac) {
      // Re-protected, the new backup not heard standing by yet: its host stays fenced until it is.
      this.fencedMac = r.fencedMac;
      this.fenceOnNewBackup = true;
      void engageFence(this.fence, r.fencedMac).then((error) => {
        if (error === undefined) this.fenceEngaged = true;
        else this.log.error('gateway fence failed: the former primary is not fenced while it is not standing by', { error });
      });
    }
    this.schedule();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.resupplyTimer);
    if (this.unwritten) this.writeRecord(this.unwritten); // stopped before the final report: write what there is
    await this.ch?.close();
    if (this.fenceEngaged) {
      try {
        this.fence.release();
      } catch (e) {
        this.log.error('gateway fence release failed', { error: (e as Error).message });
      }
    }
    this.log.info('failure detector stopped', { ...this.stats, stalls: this.monitor.stalls, ...this.ch?.counters().rejected });
  }

  address(): Endpoint {
    return this.ch!.address();
  }

  channelCounters(): ChannelCounters | undefined {
    return this.ch?.counters();
  }

  takeovers(): readonly TakeoverRecord[] {
    return this.records;
  }

  /** Called with each takeover record once its outcome is known. */
  onTakeover(fn: (r: TakeoverRecord) => void): void {
    this.recordListeners.push(fn);
  }

  /** The cluster as this detector sees it (`t2cp status --role gateway`). */
  view(): ClusterView {
    const s = this.states;
    const p = s.protection;
    const rec = this.records.at(-1);
    const engine = (rec?.backupReport as { report?: { engine?: Record<string, unknown> } } | null | undefined)?.report?.engine;
    const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined);
    const lastTakeover = rec
      ? {
        epoch: rec.epoch, outcome: rec.outcome, cause: rec.cause, verdictAt: rec.verdictAt,
        ...(engine ? { flowsTakenOver: num(engine.flowsTakenOver), flowsLost: num(engine.flowsLost), clientsReset: num(engine.clientsReset) } : {}),
      }
      : this.adoptedEpoch !== undefined ? { epoch: this.adoptedEpoch, outcome: 'active', adopted: true } : undefined;
    const lost = this.backupFlows?.unprotected ?? 0;
    const lagging = this.backupFlows?.lagging ?? 0;
    const why = p.why + (lost > 0 ? `; ${lost} open connection(s) it cannot continue` : '') +
      (lagging > 0 ? `; ${lagging} replica(s) lagging past --lag-warn` : '');
    return {
      active: s.activeSide, serving: s.activeSide === 'primary' ? this.peers.primary.address : this.peers.backup.address,
      hosts: { primary: this.peers.primary.address, backup: this.peers.backup.address }, swapped: this.swapped,
      backup: s.backup, protection: { protected: p.protected ?? null, why },
      ...(this.backupFlows ? { flows: this.backupFlows } : {}), ...(lastTakeover ? { lastTakeover } : {}),
    };
  }

  private onMessage({ msg, from, atUs }: Received): void {
    // An agent on the host that took over: re-protection, before it is answered as the primary.
    // (Hosts are told apart by address: with both roles on one address, as in a test, there is none.)
    if (this.states.state === 'BACKUP_ACTIVE' && ['STATUS', 'HEARTBEAT', 'PROBE_REPLY'].includes(msg.type) &&
        this.peers.primary.address !== this.peers.backup.address &&
        sameEndpoint(from, { address: this.peers.backup.address, port: this.peers.primary.port })) this.reprotect(atUs);
    if (msg.type === 'STATUS') {
      const s = this.states;
      // The primary's agent asks who is active; anyone else (t2cp status) gets the whole view.
      if (sameEndpoint(from, this.peers.primary)) this.ch!.send(from, 'STATUS_REPLY', { state: s.state, epoch: s.epoch, active: s.activeSide, backup: s.backup });
      else this.ch!.send(from, 'NODE_STATUS', { role: 'gateway', state: s.state, epoch: s.epoch, ...this.view() });
    } else if (sameEndpoint(from, this.peers.primary)) this.fromPrimary(msg, atUs);
    else if (sameEndpoint(from, this.peers.backup)) this.fromBackup(msg, atUs);
    else this.stats.unexpected++;
    this.schedule();
  }

  /**
   * Re-protection: the backup took over and an agent now runs on its host, so that host is the
   * primary from here on, watched like the first one, and the old primary's host is the backup
   * (the mirror port moved to it). Its fence holds until it is heard standing by: a host that
   * still holds the VIP must not answer for it meanwhile.
   */
  private reprotect(now: number): void {
    const old = this.peers;
    this.swapped = !this.swapped;
    this.fence.swapped?.(this.peers.primary.address, this.peers.backup.address);
    this.fenceOnNewBackup = this.fenceEngaged;
    this.pending = undefined;
    this.backupFlows = undefined;
    this.states.reprotect(`re-protection: an agent on ${old.backup.address}, which took over, makes it the primary; ` +
      `${old.primary.address} is to stand by as the backup`);
    this.monitor.rearm(now);
    this.backupHeardUs = now;
    this.saveState();
    this.log.warn('re-protection: the host that took over is the primary, the former primary to stand by', {
      epoch: this.states.epoch, primary: this.peers.primary.address, backup: this.peers.backup.address, fenced: this.fencedMac ?? null,
    });
  }

  private fromPrimary(msg: Message, now: number): void {
    if (msg.type === 'HEARTBEAT' || msg.type === 'PROBE_REPLY') {
      if (msg.type === 'HEARTBEAT') this.stats.heartbeats++;
      else this.stats.probeReplies++;
      // Once a takeover is begun the old primary is only ever told to stand down.
      if (this.states.activeSide === 'backup') return this.run(this.takeover.primaryHeard(msg.body));
      if (this.monitor.liveness === 'dead' && this.states.state === 'FAILED') this.monitor.rearm(now);
      this.onMonitor(msg.type === 'HEARTBEAT' ? this.monitor.heartbeat(now, msg.body) : this.monitor.probeReply(now, msg.body));
    } else if (msg.type === 'STAND_DOWN_ACK') this.run(this.takeover.standDownAck(msg.body.epoch));
    else this.stats.unexpected++;
  }

  private fromBackup(msg: Message, now: number): void {
    if (msg.type === 'BACKUP_HEARTBEAT') {
      this.backupHeardUs = now;
      const before = this.states.backup;
      this.states.setBackup(msg.body.state, 'heard');
      if (this.fenceOnNewBackup && msg.body.state === 'standby') this.liftFence();
      this.noteFlows(msg.body.state === 'standby' ? msg.body.flows : undefined);
      const s = this.states;
      if (msg.body.state === 'active' && s.activeSide === 'primary' && s.state !== 'TAKING_OVER') {
        // The highest epoch wins: a takeover this detector did not see (it restarted without its state).
        if (msg.body.epoch > s.epoch)
          this.adoptTakeover(msg.body.epoch, undefined, `the backup says it took over at epoch ${msg.body.epoch}, above this detector's ${s.epoch}`);
        else if (before !== 'active')
          this.log.error('the backup says it is active, but this detector ordered no takeover: two servers may answer', { epoch: msg.body.epoch });
      }
      if (this.pending && msg.body.state === 'standby' && this.states.state === 'FAILED' && this.states.activeSide === 'primary') {
        const p = this.pending;
        this.pending = undefined;
        this.begin(p, `${p.reason}; the backup is standing by again`);
      }
    } else if (msg.type === 'RESUPPLY_REQUEST') this.resupplyBackup(msg.body);
    else if (msg.type === 'UDP_MANIFEST_REQUEST') this.udpManifest(msg.body);
    else if (msg.type === 'UDP_RESUPPLY_REQUEST') this.udpResupply(msg.body.records);
    else if (msg.type === 'TAKEOVER' && msg.body.planned) this.planned(msg.body.reason);
    else if (msg.type === 'TAKEOVER_REPORT' && (msg.body as { final?: unknown }).final === true) this.finalReport(msg.body);
    else if (msg.type === 'TAKEOVER_REPORT') this.run(this.takeover.report(msg.body));
    else this.stats.unexpected++;
  }

  /**
   * The backup's open connections, as its heartbeat counts them while it
   * replicates: a connection it cannot continue is one a failure would end,
   * said at warning level as soon as there is one (and when none is left).
   */
  private noteFlows(flows: LiveFlows | undefined): void {
    const before = this.backupFlows;
    this.backupFlows = flows;
    const epoch = this.states.epoch;
    const [was, now] = [before?.unprotected ?? 0, flows?.unprotected ?? 0];
    if (now > 0 && was === 0)
      this.log.warn('connections unprotected: a failure now would end them', { unprotected: now, protected: flows?.protected ?? 0, epoch });
    else if (now === 0 && was > 0 && flows) this.log.info('every open connection protected again', { protected: flows.protected, epoch });
    // A replica far behind: a failure now would make its client wait while it catches up, or reset it.
    const [lagWas, lagNow] = [before?.lagging ?? 0, flows?.lagging ?? 0];
    if (lagNow > 0 && lagWas === 0) this.log.warn('replicas lagging: a failure now would stall or reset their connections', { lagging: lagNow, epoch });
    else if (lagNow === 0 && lagWas > 0 && flows) this.log.info('no replica lagging any more', { epoch });
  }

  /** The backup's capture lost client bytes of a flow: send it what the recorder has of them. */
  private resupplyBackup(q: MessageOf<'RESUPPLY_REQUEST'>['body']): void {
    this.stats.resupplyRequests++;
    if (!this.opts.recorder) return;
    // A request repeated while its answer still waits in the queue adds nothing.
    const key = `${q.client}:${q.clientPort}:${q.vipPort}:${q.from}:${q.bytes}`;
    if (this.resupplyPending.has(key)) return;
    const to = (q.from + q.bytes) % 2 ** 32;
    const pieces = this.opts.recorder.lookup({ client: q.client, clientPort: q.clientPort, vipPort: q.vipPort, from: q.from, to });
    if (!pieces.length) return;
    this.resupplyPending.add(key);
    pieces.forEach((packet, i) => this.resupplyQueue.push({ packet, doneKey: i === pieces.length - 1 ? key : undefined }));
    if (!this.resupplyTimer) this.sendResupply();
  }

  /** The recorder's records of the clients' datagrams, for the backup's UDP ledger (addon/udp_ledger.h). */
  private udpManifest(q: MessageOf<'UDP_MANIFEST_REQUEST'>['body']): void {
    if (!this.opts.recorder || !this.ch) return;
    // A backup that does not name its MAC (or names none readable) gets no direct records.
    const mac = typeof q.mac === 'string' && MAC_RE.test(q.mac) ? q.mac : undefined;
    const m = this.opts.recorder.udpManifest(q.after, q.fromNow, mac);
    if (!m) return;  // not told the UDP ports: the backup's datagrams go unpaired
    this.stats.udpManifests++;
    this.ch.send(this.peers.backup, 'UDP_MANIFEST', {
      boot: this.ch.boot, first: m.first, next: m.next, lost: m.lost, more: m.more, cut: m.cut, records: m.records.toString('base64'),
      ...(m.direct.length ? { direct: m.direct.join(',') } : {}),
    });
  }

  /** Datagrams the backup's mirror lost, by record number: resupplied as the segments are. */
  private udpResupply(records: string): void {
    if (!this.opts.recorder) return;
    const numbers = records.split(',').map(Number).filter((n) => Number.isSafeInteger(n) && n > 0);
    const found = this.opts.recorder.udpLookup(numbers.slice(0, UDP_RESUPPLY_MAX));
    // Datagrams, not the fragments a large one goes as: those whose offset is 0.
    this.stats.udpResupplied += found.filter((p) => (p.readUInt16BE(6) & 0x1fff) === 0).length;
    for (const packet of found) this.resupplyQueue.push({ packet, doneKey: undefined });
    if (found.length && !this.resupplyTimer) this.sendResupply();
  }

  /**
   * RESUPPLY_DATA, paced: a burst of thousands of datagrams would overflow the backup's UDP receive
   * buffer (what is lost there is asked for again, but the flow's time runs).
   */
  private sendResupply(): void {
    this.resupplyTimer = undefined;
    for (const { packet, doneKey } of this.resupplyQueue.splice(0, RESUPPLY_BURST)) {
      this.ch?.send(this.peers.backup, 'RESUPPLY_DATA', { packet: packet.toString('base64') });
      this.stats.resupplySegments++;
      if (doneKey) this.resupplyPending.delete(doneKey);
    }
    if (this.resupplyQueue.length && !this.stopped) this.resupplyTimer = setTimeout(() => this.sendResupply(), 1);
  }

  private planned(reason: string): void {
    const s = this.states.state;
    if (s === 'TAKING_OVER' || s === 'BACKUP_ACTIVE') {
      this.stats.plannedIgnored++;
      this.log.info('planned takeover request ignored: one is under way or done', { state: s, epoch: this.states.epoch });
      return;
    }
    this.pending = undefined;
    this.begin({ cause: 'planned', reason }, `planned: ${reason}`);
  }

  private onMonitor(actions: HeartbeatAction[]): void {
    const s = this.states;
    for (const a of actions) {
      if (a.kind === 'alive' && (s.state === 'PROBING' || s.state === 'FAILED')) {
        this.pending = undefined;
        s.move('PRIMARY_ACTIVE', s.state === 'PROBING' ? 'primary heard' : 'primary heard again; no takeover was begun');
      } else if (a.kind === 'recovered' && s.state === 'SUSPECT') s.move('PRIMARY_ACTIVE', `heard again after ${ms(a.silentUs)} ms`);
      else if (a.kind === 'suspect' && s.state === 'PRIMARY_ACTIVE') s.move('SUSPECT', `nothing heard for ${ms(a.silentUs)} ms (soft timeout)`);
      else if (a.kind === 'probe') {
        this.stats.probes++;
        this.ch!.send(this.peers.primary, 'PROBE', { seq: ++this.probeSeq, epoch: s.epoch, active: s.activeSide });
      } else if (a.kind === 'dead') this.verdict(a);
    }
  }

  private verdict(a: DeadVerdict): void {
    const reason = a.cause === 'host'
      ? `primary host silent for ${ms(a.detectionUs)} ms (hard timeout)`
      : `primary service down in ${this.opts.timing.hardMisses} reports in a row`;
    const start = { cause: a.cause, reason, lastHeardUs: a.cause === 'host' ? a.lastHeardUs : a.lastHealthyUs };
    if (this.states.backup !== 'standby') {
      this.pending = start;
      if (this.states.can('FAILED')) this.states.move('FAILED', `takeover impossible, the backup is ${this.states.backup}: ${reason}`);
      return;
    }
    this.begin(start, reason);
  }

  private begin(start: Omit<TakeoverStart, 'epoch'>, cause: string): void {
    this.monitor.halt(); // the old primary is only told to stand down from now on
    // The outage's replay reaches back to a little before the primary was
    // last heard (or, planned, the verdict): what the clients sent since
    // may have died with it.
    const heardAgoUs = start.lastHeardUs === undefined ? 0 : this.clock.monoUs() - start.lastHeardUs;
    this.verdictWallUs = this.clock.wallUs();
    this.replaySinceUs = this.verdictWallUs - heardAgoUs - (2 * this.opts.timing.intervalUs + 10_000);
    const epoch = this.states.beginTakeover(cause);
    this.fencedMac = this.primaryMac() ?? this.fence.candidateMac?.(false);
    this.saveState(); // before anyone is told: a restart from here on knows the backup serves
    this.log.warn('takeover begins', { epoch, cause: start.cause, reason: start.reason });
    this.run(this.takeover.start({ ...start, epoch }));
  }

  /**
   * A takeover this detector did not run: restored from its state file, or
   * the backup's word at a higher epoch. The old primary is fenced (with
   * `mac`, else --primary-mac, else what this host resolves the primary
   * host's own address to: the VIP may already be the backup's) and told to
   * stand down whenever heard, as after a takeover of its own.
   */
  private adoptTakeover(epoch: number, mac: string | undefined, cause: string): void {
    this.pending = undefined;
    this.monitor.halt();
    this.states.adopt(epoch, cause);
    this.takeover.adopt(epoch);
    this.adoptedEpoch = epoch;
    this.fencedMac = mac ?? this.primaryMac() ?? this.fence.candidateMac?.(true);
    this.saveState();
    this.log.warn('takeover adopted: the old primary is fenced and told to stand down', { epoch, cause, mac: this.fencedMac ?? null });
    if (!this.fencedMac) {
      this.log.error('gateway fence not engaged: the old primary\'s MAC is unknown (give --primary-mac); it is still told to stand down', { epoch });
      return;
    }
    void engageFence(this.fence, this.fencedMac).then((error) => {
      if (error === undefined) this.fenceEngaged = true;
      else this.log.error('gateway fence failed: the old primary is only told to stand down', { error });
    });
  }

  /** --primary-mac names the configured primary's host: not the one that serves once the roles swapped. */
  private primaryMac(): string | undefined {
    return this.swapped ? undefined : this.opts.primaryMac;
  }

  /** The new backup stands by: it holds no VIP (t2cp backup refuses to start with one), its fence goes. */
  private liftFence(): void {
    this.fenceOnNewBackup = false;
    if (this.fenceEngaged) {
      try {
        this.fence.lift?.();
        this.fenceEngaged = false;
      } catch (e) {
        this.log.error('gateway fence could not be lifted: a takeover by the new backup would be dropped at the gateway', { error: (e as Error).message });
        return;
      }
    }
    this.log.info('the former primary stands by as the backup: its gateway fence is lifted', { mac: this.fencedMac ?? null, epoch: this.states.epoch });
    this.fencedMac = undefined;
    this.saveState();
  }

  private saveState(): void {
    if (!this.opts.saveState) return;
    const s = this.states;
    try {
      this.opts.saveState({ version: 1, epoch: s.epoch, active: s.activeSide, ...(this.fencedMac ? { fencedMac: this.fencedMac } : {}),
        ...(this.swapped ? { swapped: true } : {}), updated: new Date(this.clock.wallUs() / 1000).toISOString() });
    } catch (e) {
      this.log.error('cannot keep the cluster state: a restart of this detector would not know it', { error: (e as Error).message });
    }
  }

  private run(actions: CoordinatorAction[]): void {
    for (const a of actions) {
      if (a.kind === 'send-stand-down') this.ch?.send(this.peers.primary, 'STAND_DOWN', a.body);
      else if (a.kind === 'send-takeover') this.ch?.send(this.peers.backup, 'TAKEOVER', a.body);
      else if (a.kind === 'engage-fence') this.engageFence();
      else this.finished(a.record);
    }
  }

  private engageFence(): void {
    void engageFence(this.fence, this.fencedMac).then((error) => {
      if (error === undefined) {
        this.fenceEngaged = true;
        const mac = this.fence.fencedMac?.();
        if (mac && mac !== this.fencedMac) {
          this.fencedMac = mac;
          this.saveState();
        }
      } else this.log.error('gateway fence failed: the takeover goes on without it', { error });
      // Fenced, the old owner cannot announce the VIP: the next announcement
      // is the new owner's, and the recorder replays the outage at once.
      const oldOwner = error === undefined ? this.fence.fencedMac?.() : undefined;
      if (oldOwner && this.opts.recorder && this.replaySinceUs !== undefined) this.opts.recorder.armReplay(this.replaySinceUs, oldOwner);
      this.run(this.takeover.fenceDone(error));
      this.schedule();
    });
  }

  private finished(rec: TakeoverRecord): void {
    const s = this.states;
    const ok = rec.outcome === 'active' || rec.outcome === 'active-late';
    if (ok && this.opts.recorder && this.replaySinceUs !== undefined) {
      // Done already if the recorder saw the new owner's announcement.
      this.opts.recorder.resupply(this.replaySinceUs);
      rec.resupplied = { packets: 0, bytes: 0, sinceUs: this.replaySinceUs }; // filled in when the record is written
    }
    if (ok && s.can('BACKUP_ACTIVE')) s.move('BACKUP_ACTIVE', `the backup reports the takeover done (epoch ${rec.epoch})`);
    else if (!ok && s.can('FAILED')) s.move('FAILED', rec.failure ?? rec.outcome);
    this.records.push(rec);
    for (const fn of [...this.recordListeners]) fn(rec);
    if (!ok) return this.writeRecord(rec);
    // The backup measures the client-visible stall ~2 s after its step 5 and
    // sends its final report then: one record with everything is written
    // when it arrives (or without it after FINAL_REPORT_WAIT_MS).
    this.unwritten = rec;
    this.finalTimer = setTimeout(() => this.writeRecord(rec), FINAL_REPORT_WAIT_MS);
  }

  private finalReport(body: TakeoverReport): void {
    const rec = this.unwritten;
    if (!rec || body.epoch !== rec.epoch) return;
    rec.backupReport = body;
    this.writeRecord(rec);
  }

  private writeRecord(rec: TakeoverRecord): void {
    if (this.unwritten === rec) {
      this.unwritten = undefined;
      clearTimeout(this.finalTimer);
    }
    if (rec.resupplied && this.opts.recorder) {
      // Sent by then (the recorder's thread took ms; the record waits seconds).
      const c = this.opts.recorder.counters();
      rec.resupplied = {
        ...rec.resupplied, packets: c.resupplied_packets ?? 0, bytes: c.resupplied_bytes ?? 0,
        trigger: (c.replays_on_announcement ?? 0) > this.replaysOnAnnouncement ? 'announcement' : 'report',
        ...(c.replay_started_us && this.verdictWallUs !== undefined ? { startedAfterUs: c.replay_started_us - this.verdictWallUs } : {}),
      };
      this.replaysOnAnnouncement = c.replays_on_announcement ?? 0;
    }
    const ok = rec.outcome === 'active' || rec.outcome === 'active-late';
    if (ok) this.log.info('takeover record', { ...rec });
    else this.log.error('takeover record', { ...rec });
    if (this.opts.reportFile) appendRecord(this.opts.reportFile, rec, this.log);
  }

  private tick(): void {
    if (this.stopped) return;
    const now = this.clock.monoUs();
    this.onMonitor(this.monitor.tick(now));
    this.run(this.takeover.tick());
    if (this.states.backup !== 'silent' && now - this.backupHeardUs >= this.opts.backupTimeoutUs) {
      this.states.setBackup('silent', `not heard for ${ms(now - this.backupHeardUs)} ms`);
      this.backupFlows = undefined; // what it counted is no longer known
    }
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    const backupDue = this.states.backup === 'silent' ? Infinity : this.backupHeardUs + this.opts.backupTimeoutUs;
    const due = Math.min(this.monitor.nextDueUs(), this.takeover.nextDueUs(), backupDue);
    if (due === Infinity || (this.timer && due >= this.timerDueUs)) return;
    clearTimeout(this.timer);
    this.timerDueUs = due;
    const delayMs = Math.max(0, Math.ceil((due - this.clock.monoUs()) / 1000));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerDueUs = Infinity;
      setImmediate(() => this.tick());
    }, delayMs);
  }
}

/** The hosts' roles swapped, each keeping its role's port: the agent's (--primary's) and the backup's (--backup's). */
function swap(p: { primary: Endpoint; backup: Endpoint }): { primary: Endpoint; backup: Endpoint } {
  return { primary: { address: p.backup.address, port: p.primary.port }, backup: { address: p.primary.address, port: p.backup.port } };
}
