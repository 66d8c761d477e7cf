// Backup node role: wires the configuration, the native engine (incoming and
// outgoing traffic processors) and the log together. Thin on purpose, like
// conntrackd's sync-mode.c: the work is in the addon.
//
// With --state-dir a takeover is kept (backup-state.ts) and its kernel
// translator pinned: started again after it (a crash, systemd's Restart=),
// the node reclaims the taken-over connections — no engine, the pinned programs
// translate, a sweep forgets the connections that ended — and answers as the
// active side. Without a takeover to reclaim, a start removes a pinned
// translator an earlier run left.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { addon, excerptText, type NativeEngine } from '../addon.js';
import { engineOptions, type BackupConfig } from '../config.js';
import { decodeEvents, resupplyRange, type FlowEvent } from '../incoming/events.js';
import { summarizeLatency, summarizeReplicaLag } from '../incoming/latency.js';
import type { Logger } from '../log.js';
import { MAC_RE, portListText } from '../options.js';
import { preflight, defaultRouteInterface } from './preflight.js';
import { BackupControl } from './control.js';
import { TakeoverRun, type TakeoverRecord, type TakeoverTrigger } from './recovery.js';
import { BACKUP_STATES, type BackupState, type FlowCounts, type LiveFlows } from '../control/index.js';
import { stateGauges, type GaugeSample, type MetricsSnapshot } from '../metrics.js';
import { stateChanges } from '../role-outputs.js';
import { advancing } from '../systemd.js';
import { T2cpError } from '../errors.js';
import type { StateFile } from '../state-file.js';
import { backupStateFile, type BackupKept } from './backup-state.js';

/** How often the mirror port's link is read, ms. */
const MIRROR_CHECK_MS = 100;
/** Engine counters that are levels, not counts: gauges in the metrics. */
const LEVELS = new Set(['buffered_bytes', 'udp_held']);
const UDP_SOCKET_CHECK_MS = 1000;
const STATE_WATCH_MS = 100;

/** Udp RcvbufErrors of this network namespace (/proc/net/snmp), or undefined when unreadable. */
function udpRcvbufErrors(): number | undefined {
  try {
    const lines = readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((l) => l.startsWith('Udp: '));
    const [head, values] = lines.map((l) => l.split(/\s+/));
    const i = head?.indexOf('RcvbufErrors') ?? -1;
    const v = i > 0 ? Number(values?.[i]) : NaN;
    return Number.isFinite(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/** Whether `ifname` has a link (operstate up, or unknown with a carrier: some drivers say no operstate). */
function mirrorLinkUp(ifname: string): boolean {
  const read = (f: string): string => {
    try {
      return readFileSync(`/sys/class/net/${ifname}/${f}`, 'utf8').trim();
    } catch {
      return '';
    }
  };
  const state = read('operstate');
  return state === 'up' || (state === 'unknown' && read('carrier') === '1');
}

/** How often a reclaimed translator's flow map is swept, ms; and how long an ended connection stays in it, s. */
const SWEEP_MS = 1000;
const ENDED_LINGER_S = 60;

export class BackupNode {
  private engine: NativeEngine | undefined;
  private timers: NodeJS.Timeout[] = [];
  private listeners: Array<(e: FlowEvent) => void> = [];
  private stateListeners: Array<(from: BackupState, to: BackupState, epoch: number) => void> = [];
  /** Tells the state listeners when state() moved (stateChanges); nothing until one subscribes. */
  private noteState: () => void = () => {};
  private run: TakeoverRun | undefined;
  private control: BackupControl | undefined;
  private failed = false;
  private readonly kept: StateFile<BackupKept> | undefined;
  /** A takeover reclaimed at start (kept by an earlier run). */
  private reclaimed: BackupKept | undefined;
  private reclaimedFlows = 0;
  /** The mirror port has no link: the replicas follow nothing, this backup does not stand by. */
  private blind = false;
  /** Datagrams this host's UDP sockets dropped since the start (watchUdpSockets). */
  private udpSocketDrops = 0;

  constructor(
    readonly cfg: BackupConfig,
    private readonly log: Logger,
  ) {
    this.kept = cfg.stateDir ? backupStateFile(cfg.stateDir, cfg.instance) : undefined;
  }

  /** Where this instance's kernel translator is pinned after a takeover. */
  private pinDir(): string {
    return `${this.cfg.bpffs}/t2cp-${this.cfg.instance}`;
  }

  /** Subscribe to flow events (new, synchronised, unprotected, closed, anomaly, stats). */
  onEvent(fn: (e: FlowEvent) => void): void {
    this.listeners.push(fn);
  }

  /**
   * Subscribe to this backup's state changes (standby, blind, taking-over, active, failed), as
   * state() says it: told where it changes (a takeover's start and end, the mirror's link), and
   * looked at every STATE_WATCH_MS besides.
   */
  onState(fn: (from: BackupState, to: BackupState, epoch: number) => void): void {
    if (!this.stateListeners.length) {
      this.noteState = stateChanges(() => this.state(), (from, to) => {
        const epoch = this.control?.currentEpoch() ?? this.reclaimed?.epoch ?? 0;
        for (const f of this.stateListeners) f(from, to, epoch);
      });
      this.timers.push(setInterval(() => this.noteState(), STATE_WATCH_MS));
    }
    this.stateListeners.push(fn);
  }

  start(): void {
    const kept = this.kept?.read();
    if (kept?.active) return this.reclaim(kept);
    if (addon().pinnedTranslator('exists', this.pinDir())) {
      const err = addon().pinnedTranslator('release', this.pinDir());
      this.log.warn('removed a pinned translator an earlier run left: no takeover to reclaim', { dir: this.pinDir(), ...(err ? { error: err } : {}) });
    }
    preflight(this.cfg);
    const opts = engineOptions(this.cfg, this.cfg.keyFile ? this.vipIf() : '');
    const engine = new (addon().Engine)(opts, (batch) => this.deliver(batch));
    const { removedStaleTable, realtime, activeTranslator, kernelFallback } = engine.start();
    this.engine = engine;
    this.endStaleReplicaConnections();
    if (this.cfg.rtPriority > 0 && !realtime)
      this.log.warn('could not make the packet thread SCHED_FIFO: latency will follow the scheduler', { rtPriority: this.cfg.rtPriority });
    if (removedStaleTable) this.log.warn('removed a stale nft table left by an earlier run', { table: opts.nftTable });
    if (kernelFallback) this.log.warn('the kernel cannot translate taken-over connections: the queue will (slower)', { why: kernelFallback });
    this.log.info('replicating', {
      vip: this.cfg.vip,
      ports: this.cfg.ports.join(','),
      ...(this.cfg.udpPorts.length ? { udpPorts: portListText(this.cfg.udpPorts) } : {}),
      mirror: this.cfg.mirrorIf,
      filter: addon().captureFilter(this.cfg.vip, this.cfg.ports, this.cfg.udpPorts),
      table: opts.nftTable,
      tun: opts.tunName,
      queue: opts.queueNum,
      ...(activeTranslator ? { afterTakeover: activeTranslator, vipIf: opts.activeIf } : {}),
    });
    this.watchMirror();
    if (this.cfg.udpPorts.length) this.watchUdpSockets();
    if (this.cfg.statusIntervalS > 0) {
      this.timers.push(setInterval(() => this.log.info('counters', this.nonZeroCounters()), this.cfg.statusIntervalS * 1000));
    }
    if (this.cfg.flowStatsMs > 0) {
      this.timers.push(setInterval(() => this.engine?.requestFlowStats(), this.cfg.flowStatsMs));
    }
  }

  /**
   * The mirror port's link, every MIRROR_CHECK_MS: without it nothing the
   * primary's clients send reaches the replicas, and a takeover would lose
   * every connection. Said at once; the detector orders no takeover to a
   * backup that is blind (its heartbeat says so); and every live flow is
   * suspect from then on, as after capture drops, until a primary ack
   * proves it lost nothing (or it is reported unprotected, capture-drop).
   */
  private watchMirror(): void {
    const check = () => {
      const blind = !mirrorLinkUp(this.cfg.mirrorIf);
      if (blind === this.blind) return;
      this.blind = blind;
      if (blind) this.engine?.mirrorLost();
      this.noteState();
      if (blind) this.log.warn('the mirror port is down: no replica follows anything; this backup does not stand by', { mirror: this.cfg.mirrorIf });
      else this.log.info('the mirror port is up again: standing by (connections that lost bytes meanwhile are resupplied or reported)', { mirror: this.cfg.mirrorIf });
    };
    check();
    this.timers.push(setInterval(check, MIRROR_CHECK_MS));
  }

  /**
   * UDP has no flow control: a replica that falls behind for a moment (it shares the host with
   * t2cp; the primary's clients pace the primary, not it) loses datagrams at its own socket when
   * the receive buffer is full, and its state then differs from the primary's. The kernel counts
   * those drops for the host (/proc/net/snmp, Udp RcvbufErrors, this network namespace): said
   * when they start (with the fix) and when they stop, counted (replica_udp_rcvbuf_errors).
   */
  private watchUdpSockets(): void {
    const start = udpRcvbufErrors();
    if (start === undefined) return;
    let dropping = false;
    const check = () => {
      const total = (udpRcvbufErrors() ?? start) - start;
      const fresh = total - this.udpSocketDrops;
      this.udpSocketDrops = total;
      if (fresh > 0 && !dropping && this.state() === 'standby')
        this.log.warn("this host's UDP sockets dropped datagrams (receive buffers full): a replicated UDP service may have lost some, its " +
          'copy may then differ (--divergence reports it); give its socket a larger receive buffer (SO_RCVBUF, net.core.rmem_default)',
          { dropped: fresh });
      else if (fresh === 0 && dropping) this.log.info("this host's UDP sockets drop nothing any more", { dropped: total });
      dropping = fresh > 0;
    };
    this.timers.push(setInterval(check, UDP_SOCKET_CHECK_MS));
  }

  /**
   * The replica's connections an earlier run left (it crashed, or was
   * restarted, while replicating): this run never saw them open and no
   * replica follows them, and at a takeover each would answer its client
   * from where that run left it — an acknowledgement the client cannot use,
   * and it would wait. Ended now (ss -K, the kernel's SOCK_DESTROY), once
   * the engine's rules are in place, so the replica's resets stay here.
   */
  private endStaleReplicaConnections(): void {
    if (!this.cfg.ports.length) return; // UDP only: no connection to end
    const filter = ['state', 'connected', 'src', this.cfg.vip, `( ${this.cfg.ports.map((p) => `sport = :${p}`).join(' or ')} )`];
    const kill = spawnSync('ss', ['-K', '-H', '-tn', ...filter], { encoding: 'utf8', timeout: 5000 });
    const ended = (kill.stdout ?? '').split('\n').filter((l) => l.trim()).length;
    const left = (spawnSync('ss', ['-H', '-tn', ...filter], { encoding: 'utf8', timeout: 5000 }).stdout ?? '').split('\n').filter((l) => l.trim()).length;
    if (ended > 0) this.log.warn('ended the replica\'s connections an earlier run left: no replica follows them', { ended });
    if (left > 0)
      this.log.error('the replica still holds connections an earlier run left: at a takeover their clients may wait (the kernel needs CONFIG_INET_DIAG_DESTROY)', { left, error: (kill.stderr ?? '').trim() });
  }

  /**
   * A takeover an earlier run kept: its pinned programs translate the
   * taken-over connections; this process keeps the VIP where it is, sweeps
   * the flow map, and answers as the active side. Nothing replicates.
   */
  private reclaim(kept: BackupKept): void {
    this.reclaimed = kept;
    const err = kept.pinned ? addon().pinnedTranslator('reclaim', kept.pinned) : 'the queue translated them, in the process that ended';
    const ip = spawnSync('ip', ['-4', '-o', 'addr', 'show', 'dev', kept.vipIf], { encoding: 'utf8', timeout: 5000 });
    if (!(ip.stdout ?? '').includes(` ${kept.vip}/`)) {
      const add = spawnSync('ip', ['addr', 'add', `${kept.vip}/32`, 'dev', kept.vipIf], { encoding: 'utf8', timeout: 5000 });
      if (add.status !== 0) throw new T2cpError(`cannot put the VIP ${kept.vip} back on ${kept.vipIf}: ${(add.stderr ?? '').trim()}`, 'T2CP_TAKEOVER');
      this.log.warn('the VIP was gone: added again', { vip: kept.vip, vipIf: kept.vipIf });
    }
    if (err) {
      this.log.error('the connections taken over before this start are gone', { epoch: kept.epoch, why: err });
    } else {
      const sweep = () => {
        const s = addon().pinnedTranslator('gc', kept.pinned!, this.cfg.idleTimeoutS, ENDED_LINGER_S);
        this.reclaimedFlows = s.flows;
        if (s.removed) this.log.info('taken-over connections ended', { removed: s.removed, left: s.flows });
        return s;
      };
      const s = sweep();
      this.timers.push(setInterval(sweep, SWEEP_MS));
      this.log.warn('reclaimed the takeover of an earlier run: its connections go on', { epoch: kept.epoch, pinned: kept.pinned, flows: s.flows, since: kept.updated });
    }
  }

  /** Once a takeover is done: pin the kernel translator and keep that this backup serves (--state-dir). */
  private keep(epoch: number): void {
    if (!this.kept || !this.engine) return;
    const dir = this.pinDir();
    const err = this.engine.pinTranslator(dir);
    if (err) this.log.error('the taken-over connections will not outlive this process', { why: err });
    try {
      this.kept.write({ version: 1, epoch, active: true, pinned: err ? null : dir, vip: this.cfg.vip, vipIf: this.vipIf(), updated: new Date().toISOString() });
      this.log.info('takeover kept', { file: this.kept.path, epoch, ...(err ? {} : { pinned: dir }) });
    } catch (e) {
      this.log.error('cannot keep the takeover: restarted, this backup would replicate again', { error: (e as Error).message });
    }
  }

  /** Open the control endpoint (when a key is configured): TAKEOVER requests, heartbeats to the detector. */
  async startControl(): Promise<void> {
    if (!this.cfg.keyFile) return;
    this.control = await BackupControl.open(
      { keyFile: this.cfg.keyFile, port: this.cfg.controlPort, detector: this.cfg.detector, instance: this.cfg.instance, heartbeatMs: this.cfg.heartbeatMs,
        ...(this.reclaimed ? { epoch: this.reclaimed.epoch } : {}), udp: this.cfg.udpPorts.length > 0,
        ...(this.cfg.udpPorts.length ? this.vipIfMac() : {}) },
      this,
      this.log,
    );
    this.log.info('control endpoint open', { port: this.cfg.controlPort, detector: this.cfg.detector ? `${this.cfg.detector.address}:${this.cfg.detector.port}` : 'none' });
  }

  state(): BackupState {
    if (this.reclaimed) return 'active';
    if (this.failed) return 'failed';
    if (!this.run?.started) return this.blind ? 'blind' : 'standby';
    return this.run.current() ? 'active' : 'taking-over';
  }

  private finalListeners: Array<(r: TakeoverRecord) => void> = [];

  onTakeoverFinal(fn: (r: TakeoverRecord) => void): void {
    this.finalListeners.push(fn);
  }

  /** Failure recovery: start the takeover, or join the one running; resolves with its record. */
  takeover(trigger: TakeoverTrigger): Promise<TakeoverRecord> {
    if (this.run?.started) return this.run.done();
    if (this.reclaimed) return Promise.reject(new T2cpError(`this backup took over at epoch ${this.reclaimed.epoch} before it restarted: it serves already`, 'T2CP_REFUSED'));
    if (!this.engine) return Promise.reject(new Error('the backup is not running'));
    const vipIf = this.vipIf();
    this.run = new TakeoverRun(
      this.engine,
      { vipIf, finishTimeoutMs: this.cfg.finishTimeoutMs, garpCount: this.cfg.garpCount, garpIntervalMs: this.cfg.garpIntervalMs },
      this.log,
      this.cfg.report,
    );
    for (const fn of this.finalListeners) this.run.onFinal(fn);
    this.run.start(trigger);
    this.noteState();
    this.run.done().then(() => {
      this.keep(trigger.epoch);
      this.noteState();
    }, () => {
      this.failed = true;
      this.noteState();
    });
    return this.run.done();
  }

  private vipIf(): string {
    return this.cfg.vipIf ?? defaultRouteInterface();
  }

  /** This host's MAC on the VIP's interface, the one the gateway forwards to once the VIP moved here. */
  private vipIfMac(): { mac?: string } {
    const vipIf = this.vipIf();
    try {
      const mac = readFileSync(`/sys/class/net/${vipIf}/address`, 'utf8').trim();
      if (MAC_RE.test(mac)) return { mac };
    } catch {
      // said below
    }
    this.log.warn(`no MAC on --vip-if ${vipIf}: a datagram the gateway forwards here once the VIP moved may reach the replica twice`);
    return {};
  }

  /**
   * Whether the packet thread moved since the last call (the systemd watchdog's test); true
   * without an engine (a backup that serves after a restart: its event loop is what turns).
   */
  readonly progressing = ((): (() => boolean) => {
    const engineMoved = advancing(() => this.engine?.loops() ?? 0);
    return () => !this.engine || engineMoved();
  })();

  /**
   * The engine's counters, and the control endpoint's (control_accepted, control_rejected_<reason>,
   * udp_records_direct: the recorder's records this host got directly, left out of the ledger).
   */
  counters(): Record<string, number> {
    const c: Record<string, number> = { ...(this.engine?.counters() ?? {}) };
    if (this.cfg.udpPorts.length) c.replica_udp_rcvbuf_errors = this.udpSocketDrops;
    const sync = this.control?.udpSyncStats();
    if (sync) c.udp_records_direct = sync.direct;
    const ctl = this.control?.counters();
    if (ctl) {
      c.control_accepted = ctl.accepted;
      for (const [reason, v] of Object.entries(ctl.rejected)) c[`control_rejected_${reason.replace(/-/g, '_')}`] = v;
    }
    return c;
  }

  flows(): FlowCounts {
    const c = this.engine?.counters() ?? {};
    return {
      synchronised: c.flows_synchronised ?? 0, unprotected: c.flows_unprotected ?? 0,
      shed: c.flows_shed ?? 0, replicaBehind: c.replica_behind ?? 0, replicaStopped: c.replica_stopped ?? 0,
      diverged: (c.flows_diverged ?? 0) + (c.udp_diverged ?? 0),
      comparison: this.engine?.comparison() ?? {},
      divergences: (this.engine?.divergences() ?? []).slice(-5).map((d) => ({
        flow: `${d.client}->:${d.serverPort}${d.protocol === 'udp' ? '/udp' : ''}`, kind: d.kind, offset: d.offset, exact: d.exact,
        primary: excerptText(d.primary), replica: excerptText(d.replica),
      })),
      ...(this.liveFlows() ? { open: this.liveFlows() } : {}),
    };
  }

  liveFlows(): LiveFlows | undefined {
    if (!this.engine || this.state() !== 'standby') return undefined;
    const c = this.engine.counters();
    return { protected: c.flows_protected_now ?? 0, unprotected: c.flows_unprotected_now ?? 0, lagging: c.flows_lagging_now ?? 0 };
  }

  nonZeroCounters(): Record<string, number> {
    return Object.fromEntries(Object.entries(this.counters()).filter(([, v]) => v !== 0));
  }

  stop(): void {
    void this.control?.close();
    this.control = undefined;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    if (this.reclaimed) {
      this.log.info('stopped: the taken-over connections stay with the kernel; start again with the same command to reclaim them',
        { pinned: this.reclaimed.pinned, flows: this.reclaimedFlows });
      return;
    }
    if (!this.engine) return;
    const latency = this.engine.latency();
    this.log.info('latency', { ...summarizeLatency(latency), ...(latency.dequeue ? { dequeue: summarizeLatency(latency.dequeue) } : {}) });
    this.log.info('replica lag', summarizeReplicaLag(this.engine.replicaLag()));
    this.engine.stop();  // delivers the last events, removes tables, queue, TUN
    this.log.info('stopped', this.nonZeroCounters());
    this.engine = undefined;
  }

  /**
   * What --metrics serves (src/metrics.ts): every counter, and as gauges the state, the epoch,
   * the open connections protected and not, the bytes and datagrams held, the replicas' lag by
   * port, and the last takeover's steps.
   */
  metricsSnapshot(): MetricsSnapshot {
    const c = this.counters();
    const counters = Object.fromEntries(Object.entries(c).filter(([k]) => !LEVELS.has(k)));
    const live = this.liveFlows();
    const gauges: GaugeSample[] = [
      ...stateGauges('backup_state', 'this backup: standby (replicating), blind (no mirror), taking-over, active, failed', BACKUP_STATES, this.state()),
      { name: 'epoch', help: 'the takeover epoch this backup knows', value: this.control?.currentEpoch() ?? this.reclaimed?.epoch ?? 0 },
      { name: 'buffered_bytes', help: 'client bytes held for the replicas now', value: c.buffered_bytes ?? 0 },
      { name: 'udp_held_datagrams', help: "clients' datagrams held now for the recorder's record", value: c.udp_held ?? 0 },
    ];
    if (live) {
      const help = 'open connections now, by whether a failure now would carry them over';
      gauges.push(
        { name: 'open_connections', help, value: live.protected, labels: { protection: 'protected' } },
        { name: 'open_connections', help, value: live.unprotected, labels: { protection: 'unprotected' } },
        { name: 'replicas_lagging', help: 'replicas behind the primary by more than --lag-warn now', value: live.lagging ?? 0 },
      );
    }
    const lag = this.engine ? summarizeReplicaLag(this.engine.replicaLag()) : {};
    for (const [port, l] of Object.entries(lag)) {
      for (const [quantile, us] of [['0.5', l.p50Us], ['0.99', l.p99Us], ['1', l.maxUs]] as const)
        gauges.push({ name: 'replica_lag_seconds', help: "how far the replicas' output ran behind the primary's while replicating, by service port (since the start)", value: us / 1e6, labels: { port, quantile } });
    }
    const last = this.run?.current();
    for (const step of last?.engine.steps ?? [])
      if (step.us !== undefined) gauges.push({ name: 'takeover_step_seconds', help: "the last takeover's steps, each's duration", value: step.us / 1e6, labels: { step: step.name } });
    if (last?.takeoverUs !== undefined) gauges.push({ name: 'takeover_seconds', help: 'the last takeover: request to the end of step 5', value: last.takeoverUs / 1e6 });
    if (last) {
      const help = "the last takeover's connections, by outcome";
      gauges.push(
        { name: 'takeover_connections', help, value: last.engine.flowsTakenOver, labels: { outcome: 'taken-over' } },
        { name: 'takeover_connections', help, value: last.engine.clientsReset, labels: { outcome: 'reset' } },
      );
    }
    return { counters, gauges };
  }

  /** A client segment or datagram the gateway's traffic recorder resupplied. */
  supply(packet: Buffer): void {
    this.engine?.supply(packet);
  }

  /** The recorder's records of the clients' datagrams (the engine's UDP ledger). */
  udpRecords(first: number, records: Buffer): void {
    this.engine?.udpRecords(first, records);
  }

  private deliver(batch: Buffer): void {
    for (const e of decodeEvents(batch)) {
      this.run?.onEvent(e);
      if (e.type === 'takeover') continue;
      if (e.type === 'resupply' && e.protocol === 'udp') {
        this.control?.requestUdpResupply(e.detail);
        continue;  // one per datagram the mirror lost: counted, not logged
      } else if (e.type === 'resupply') {
        const [client, port] = e.client.split(':');
        this.control?.requestResupply({ client: client!, clientPort: Number(port), vipPort: e.serverPort, ...resupplyRange(e) });
      }
      this.logEvent(e);
      for (const fn of this.listeners) fn(e);
    }
  }

  /** Where a diverged flow's replica first differed, with both sides' bytes from there. */
  private divergence(e: FlowEvent): Record<string, unknown> {
    const d = this.engine?.divergences().reverse().find((r) => r.flowId === e.flowId);
    if (!d) return { offset: e.detail % 2 ** 48, kind: Math.floor(e.detail / 2 ** 48) === 2 ? 'length' : 'bytes' };
    return { kind: d.kind, offset: d.offset, ...(d.byte !== undefined ? { byte: d.byte } : {}), exact: d.exact,
      primary: excerptText(d.primary), replica: excerptText(d.replica) };
  }

  /** What the log and the event stream say of a flow event. */
  flowFields(e: FlowEvent): Record<string, unknown> {
    const fields: Record<string, unknown> = { flow: `${e.client}->:${e.serverPort}${e.protocol === 'udp' ? '/udp' : ''}`, id: e.flowId };
    if (e.reason !== 'none') fields.reason = e.reason;
    if (e.type === 'closed' || e.type === 'stats' || e.type === 'anomaly') {
      Object.assign(fields, { c2sPrimary: e.c2sPrimary, c2sBackup: e.c2sBackup, s2cPrimary: e.s2cPrimary, s2cBackup: e.s2cBackup });
    }
    if (e.type === 'closed' && e.detail === 1) fields.diverged = true;
    if (e.type === 'lagging') fields.behindBytes = e.detail;
    if (e.reason === 'replica-behind' && e.type === 'anomaly') fields.lagMs = e.detail;
    if (e.reason === 'diverged' && e.type === 'anomaly') Object.assign(fields, this.divergence(e));
    return fields;
  }

  private logEvent(e: FlowEvent): void {
    const level = e.type === 'anomaly' || e.type === 'unprotected' || e.type === 'lagging' ? 'warn' : 'info';
    if (level === 'info' && !this.cfg.logFlows && e.type !== 'stats') return;
    this.log[level](`flow ${e.type}`, this.flowFields(e));
  }
}
