// The backup's control endpoint: one authenticated Channel (src/control) on
// --control-port. It answers TAKEOVER — from the failure detector, or from
// `t2cp takeover` on this host (planned switch, manual, or keepalived's
// notify_master hook) — and STATUS (`t2cp status`: NODE_STATUS with its
// state and epoch, to anyone holding the key), and sends BACKUP_HEARTBEAT to
// the detector.
//
// A planned request from `t2cp takeover` goes to the detector when one is
// configured, so that the primary stands down first (the detector orders
// it); without a detector (keepalived is the source of truth) the backup
// takes over at once. A TAKEOVER repeated for the same epoch (UDP repeats)
// gets the same answer: the takeover runs once. ~2 s after it, a final
// TAKEOVER_REPORT (final: true, with the client-visible stall) goes to the
// detector, which writes its one record of the takeover then.
//
// While replicating, client bytes the mirror capture lost are asked of the
// detector's traffic recorder (RESUPPLY_REQUEST); the segments it had come
// back one per datagram (RESUPPLY_DATA) and go to the engine as captured.
// With UDP ports, the recorder's records of the clients' datagrams are
// fetched too (udp-sync.ts), and the datagrams the mirror lost asked for.
//
// Call order: await BackupControl.open(), then close(). Node event loop.
import { T2cpError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Endpoint } from '../options.js';
import { Channel, loadKey, sameEndpoint, type BackupState, type FlowCounts, type LiveFlows, type Received } from '../control/index.js';
import type { TakeoverRecord, TakeoverTrigger } from './recovery.js';
import { UdpSync } from './udp-sync.js';

/**
 * The control socket's receive buffer, bytes. The recorder answers a capture hole with a burst of
 * RESUPPLY_DATA datagrams (~1.3 KB on the wire, ~2.3 KB of buffer each, 32 a millisecond) that
 * the event loop reads one by one: a system's default (208 KiB, ~90 of them) overflows within
 * a few milliseconds of the loop being busy, and what it drops must be asked again. 8 MiB holds
 * ~3,600 (some 3 MB of client bytes, ~110 ms of the recorder's pace).
 */
const RECV_BUFFER_BYTES = 8 << 20;

export interface ControlOptions {
  keyFile: string;
  port: number;
  detector?: Endpoint;
  instance: string;
  heartbeatMs: number;
  /** The epoch this backup took over at, when it starts after one (reclaimed). */
  epoch?: number;
  /** UDP ports are replicated: fetch the recorder's records of their datagrams (udp-sync.ts). */
  udp?: boolean;
  /** This host's MAC on the interface that takes the VIP (udp-sync.ts: direct records). */
  mac?: string;
}

/** What the control endpoint needs from the backup node. */
export interface TakeoverTarget {
  state(): BackupState;
  /** Its flows so far, for `t2cp status`. */
  flows(): FlowCounts;
  /** Its open connections now, protected and not, while it replicates (for the detector). */
  liveFlows(): LiveFlows | undefined;
  /** Start (or join) the takeover; resolves with its record. */
  takeover(trigger: TakeoverTrigger): Promise<TakeoverRecord>;
  /** Called with the final record (the client-visible stall measured). */
  onTakeoverFinal(fn: (r: TakeoverRecord) => void): void;
  /** A client segment or datagram the traffic recorder resupplied (IPv4 packet). */
  supply(packet: Buffer): void;
  /** The recorder's records of the clients' datagrams, numbered from first. */
  udpRecords(first: number, records: Buffer): void;
}

/** The flow and client bytes a resupply request asks for. */
export interface ResupplyWanted { client: string; clientPort: number; vipPort: number; from: number; bytes: number }

/** A local request names its cluster manager first in its reason (the keepalived hook, the Pacemaker resource agent). */
function localSource(reason: string): TakeoverTrigger['source'] {
  if (reason.startsWith('keepalived')) return 'keepalived';
  if (reason.startsWith('pacemaker')) return 'pacemaker';
  return 'cli';
}

export class BackupControl {
  private timer: NodeJS.Timeout | undefined;
  private epoch = 0;
  private planned: Received<'TAKEOVER'> | undefined;
  private readonly udpSync: UdpSync | undefined;

  private constructor(
    private readonly ch: Channel,
    private readonly opts: ControlOptions,
    private readonly node: TakeoverTarget,
    private readonly log: Logger,
  ) {
    this.epoch = opts.epoch ?? 0;
    ch.onMessage((r) => this.onMessage(r));
    // The detector writes one record per takeover: it waits for this final report.
    node.onTakeoverFinal((rec) => {
      if (opts.detector) ch.send(opts.detector, 'TAKEOVER_REPORT', { epoch: this.epoch, ok: true, final: true, report: rec } as never);
    });
    if (opts.detector) {
      const beat = () => {
        const flows = node.liveFlows();
        ch.send(opts.detector!, 'BACKUP_HEARTBEAT', { state: node.state(), epoch: this.epoch, ...(flows ? { flows } : {}) });
      };
      beat();
      this.timer = setInterval(beat, opts.heartbeatMs);
    }
    if (opts.detector && opts.udp) {
      const detector = opts.detector;
      this.udpSync = new UdpSync({
        request: (body) => ch.send(detector, 'UDP_MANIFEST_REQUEST', body),
        askResupply: (records) => ch.send(detector, 'UDP_RESUPPLY_REQUEST', { records }),
        records: (first, records) => node.udpRecords(first, records),
        takenOver: () => node.state() === 'taking-over' || node.state() === 'active',
        ...(opts.mac ? { mac: opts.mac } : {}),
        log,
      });
    }
  }

  static async open(opts: ControlOptions, node: TakeoverTarget, log: Logger): Promise<BackupControl> {
    const { key, warning } = loadKey(opts.keyFile);
    if (warning) log.warn(warning);
    const ch = await Channel.open({ key, sender: `backup:${opts.instance}`, bind: { address: '0.0.0.0', port: opts.port }, recvBufferBytes: RECV_BUFFER_BYTES });
    if (opts.detector && ch.recvBufferBytes() < RECV_BUFFER_BYTES) {
      log.warn('the control socket\'s receive buffer is smaller than asked (net.core.rmem_max caps it): a burst of resupplied segments ' +
        'may overflow it, and a flow whose capture holes stay unfilled is given up (gap); raise net.core.rmem_max', {
        bytes: ch.recvBufferBytes(), wanted: RECV_BUFFER_BYTES, fix: `sysctl -w net.core.rmem_max=${RECV_BUFFER_BYTES}` });
    }
    return new BackupControl(ch, opts, node, log);
  }

  address(): Endpoint {
    return this.ch.address();
  }

  counters(): ReturnType<Channel['counters']> {
    return this.ch.counters();
  }

  /** Ask the detector's traffic recorder for client bytes the capture lost; false without a detector. */
  requestResupply(w: ResupplyWanted): boolean {
    if (!this.opts.detector) return false;
    this.ch.send(this.opts.detector, 'RESUPPLY_REQUEST', w);
    return true;
  }

  /** The takeover epoch this backup knows. */
  currentEpoch(): number {
    return this.epoch;
  }

  /** Ask the recorder for the datagram it numbered n (the mirror lost it). */
  requestUdpResupply(n: number): void {
    this.udpSync?.ask(n);
  }

  /** The UDP records fetched so far (status, logs). */
  udpSyncStats(): UdpSync['stats'] | undefined {
    return this.udpSync?.stats;
  }

  private fromDetector(r: Received): boolean {
    return !!this.opts.detector && sameEndpoint(r.from, this.opts.detector);
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.udpSync?.stop();
    await this.ch.close();
  }

  private fromLocalCli(r: Received): boolean {
    return r.from.address === '127.0.0.1' && !this.fromDetector(r);
  }

  private onMessage(r: Received): void {
    if (r.msg.type === 'RESUPPLY_DATA' && this.fromDetector(r)) return this.node.supply(Buffer.from(r.msg.body.packet, 'base64'));
    if (r.msg.type === 'UDP_MANIFEST' && this.fromDetector(r)) return this.udpSync?.onManifest(r.msg.body);
    if (r.msg.type === 'STATUS') {
      this.ch.send(r.from, 'NODE_STATUS', { role: 'backup', state: this.node.state(), epoch: this.epoch, flows: this.node.flows() });
      return;
    }
    if (r.msg.type !== 'TAKEOVER') return;
    const m = r as Received<'TAKEOVER'>;
    const body = m.msg.body as typeof m.msg.body & { lastHeardUs?: unknown; decidedUs?: unknown };
    const local = this.fromLocalCli(r);
    if (local && body.planned && this.opts.detector && this.node.state() === 'standby') {
      // Planned: the detector makes the primary stand down, then sends us
      // the TAKEOVER that we execute (and answer the CLI then).
      this.planned = m;
      this.ch.send(this.opts.detector, 'TAKEOVER', { epoch: body.epoch, reason: body.reason, planned: true });
      this.log.info('takeover: planned request passed to the detector', { reason: body.reason });
      return;
    }
    if (body.epoch > this.epoch) this.epoch = body.epoch;
    const trigger: TakeoverTrigger = {
      source: local ? localSource(body.reason) : 'detector',
      reason: body.reason,
      epoch: body.epoch,
      planned: body.planned,
      lastHeardUs: typeof body.lastHeardUs === 'number' ? body.lastHeardUs : undefined,
      decidedUs: typeof body.decidedUs === 'number' ? body.decidedUs : m.msg.sentUs,
    };
    const answer = (to: Endpoint, rec: TakeoverRecord | undefined, error?: string) =>
      this.ch.send(to, 'TAKEOVER_REPORT', { epoch: this.epoch, ok: !!rec, ...(rec ? { report: rec } : {}), ...(error ? { error } : {}) } as never);
    this.node.takeover(trigger).then(
      (rec) => {
        answer(r.from, rec);
        if (this.planned) answer(this.planned.from, rec);
        this.planned = undefined;
      },
      (e: unknown) => {
        const msg = e instanceof T2cpError ? e.message : String(e);
        answer(r.from, undefined, msg);
        if (this.planned) answer(this.planned.from, undefined, msg);
        this.planned = undefined;
      },
    );
  }
}
