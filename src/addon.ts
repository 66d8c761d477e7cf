// The one door to the native addon (serialport's bindings habit): loads the
// .node file once and exports it typed. Nothing else imports the addon.
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { T2cpError } from './errors.js';

/** What src/config.ts hands the engine; validated before it gets here. */
export interface EngineOptions {
  mirrorIf: string;
  vip: string;
  ports: number[];
  /** UDP service ports: the clients' datagrams replicated, the replica's dropped. */
  udpPorts: number[];
  /** Of udpPorts, a media relay's (relay_ports.h): paired through SDP, translated. */
  relayPorts: number[];
  tunName: string;
  nftTable: string;
  queueNum: number;
  queueMaxLen: number;
  captureBuffer: number;
  maxFlows: number;
  flowBufferLimit: number;
  /** Bytes all flows' buffers may hold together. */
  memoryLimit: number;
  handshakeTimeoutMs: number;
  idleTimeoutS: number;
  eventBatchMs: number;
  /** SCHED_FIFO priority of the engine thread; 0 leaves it an ordinary thread. */
  rtPriority: number;
  /** Microseconds the engine thread spins after work before it sleeps; 0 never spins. */
  busyPollUs: number;
  /** A traffic recorder can resupply what the capture lost: the engine asks ('resupply' events) before it gives a flow up. */
  resupply: boolean;
  /** A replica this many bytes behind the primary, either direction, is reported ('lagging' event); 0: never. */
  lagWarnBytes: number;
  /** A replica that lacked, this long, client bytes the primary had acknowledged is given up (reason 'replica-behind'), ms; 0: never. */
  maxLagMs: number;
  /** Per port of `ports`, in order: 0 not compared, 1 only lengths, 2 every byte (DivergencePolicy). */
  divergence: number[];
  /** Per port of `udpPorts`, in order, the same: the replica's datagrams against the primary's. */
  udpDivergence: number[];
  /** Interface that gets the VIP at a takeover ('' : no takeover configured, no translator attached). */
  activeIf: string;
  /** Active mode's translator: the kernel's (tcx programs on activeIf), the queue's, or the kernel's when it loads. */
  activeMode: 'auto' | 'kernel' | 'queue';
  /** The kernel translator's object file (activeModeObject()). */
  activeObject: string;
}

import type { PortComparison } from './control/bodies.js';

/** Where a flow's replica first sent other bytes than the primary, or ended elsewhere. */
export interface DivergenceRecord {
  flowId: number;
  /** udp: an association's datagrams (offset: the datagram's number in its output, from 0; byte: where in it). */
  protocol: 'tcp' | 'udp';
  byte?: number;
  client: string;
  serverPort: number;
  timeUs: number;
  /** bytes: same offset, different bytes; length: one side ended where the other sent more, or elsewhere. */
  kind: 'bytes' | 'length';
  /** Stream offset (server to client) of the first differing byte or, not exact, of the block holding it. */
  offset: number;
  exact: boolean;
  /** Each side's bytes from offset (up to 32); null where they were no longer held. */
  primary: Buffer | null;
  replica: Buffer | null;
}

/** An excerpt for a log line: printable ASCII kept, anything else as \xNN; null stays null. */
export function excerptText(b: Buffer | null): string | null {
  if (!b) return null;
  let s = '';
  for (const c of b) s += c >= 0x20 && c < 0x7f && c !== 0x5c ? String.fromCharCode(c) : `\\x${c.toString(16).padStart(2, '0')}`;
  return s;
}

export interface LatencyHistogram {
  /** [microseconds, count] for every non-empty bucket (by its lower bound); the last bucket holds the rest. */
  buckets: Array<[number, number]>;
  maxNs: number;
  /** Capture-to-injection's first part: capture timestamp to the engine thread taking the frame. */
  dequeue?: LatencyHistogram;
}

/** Failure recovery's options (addon/recovery_takeover.h). */
export interface TakeoverOptions {
  /** The real interface that gets the VIP. */
  vipIf: string;
  /** A flow whose replica is still behind this long after the freeze is reset. */
  finishTimeoutMs: number;
  garpCount: number;
  garpIntervalMs: number;
}

export interface TakeoverStep { n: number; name: 'freeze' | 'finish' | 'active' | 'ip-takeover' | 'connections' | 'catch-up'; startUs: number; endUs?: number; us?: number }

/** The engine's part of the takeover record (addon/recovery_takeover.h TakeoverReport). */
export interface NativeTakeoverReport {
  state: 'idle' | 'running' | 'done' | 'failed';
  error?: string;
  requestedUs: number;
  steps: TakeoverStep[];
  /** Flows active (their replica continues them): at step 3, or later while catching up (step 6). */
  flowsTakenOver: number;
  /** ... of which went active during step 6. */
  flowsCaughtUp: number;
  /** Flows still finishing when step 5 ended. */
  flowsCatchingUp: number;
  /** Clients sent a RST at the takeover: their flow could not continue (lost) or was unprotected. */
  clientsReset: number;
  /** Who translates the taken-over flows (once done). */
  translator?: 'kernel' | 'queue';
  /** Protected flows whose replica could not continue them: replica copy and client reset. */
  flowsLost: number;
  flowsUnprotected: number;
  handshakesDropped: number;
  /** Associations of a media relay's ports (--relay-ports) whose ports the kernel now translates. */
  relayTranslated: number;
  /**
   * Relay ports the two copies paired in the last 3 minutes with no media seen on them: calls still
   * ringing at the takeover, whose media the new owner's relay will not get (docs/limits.md, UDP).
   */
  relayWithoutMedia: number;
  flowsResumedWithData: number;
  bytesResent: number;
  bytesFedWhileFinishing: number;
  /** Server bytes the primary had sent beyond what the replica had made, over all flows / the worst flow: re-made before clients see new data. */
  replicaLagBytesTotal: number;
  replicaLagBytesMax: number;
  /** Present once measured (2 s after step 5): primary's last data to the new owner's first, per flow. */
  stall?: { flows: number; medianUs: number; maxUs: number };
}

export interface NativeEngine {
  start(): {
    removedStaleTable: boolean;
    realtime: boolean;
    /** Who will translate after a takeover; '' when none is configured. */
    activeTranslator: 'kernel' | 'queue' | '';
    /** Why the kernel translator could not be used (with --active-mode auto). */
    kernelFallback?: string;
  };
  stop(): void;
  counters(): Record<string, number>;
  /** Capture to injection, 1 µs buckets (up to 4 ms). */
  latency(): LatencyHistogram;
  /** The replicas' output lag behind the primary's while replicating, by service port; 0.5 ms buckets (up to 4.1 s). */
  replicaLag(): Record<string, LatencyHistogram>;
  /** The last divergences (at most 256), oldest first. */
  divergences(): DivergenceRecord[];
  /** What the comparison found, by compared service port. */
  comparison(): Record<string, PortComparison>;
  requestFlowStats(): void;
  /** A client segment (IPv4 packet) the gateway's traffic recorder resupplied; fed to its flow like a captured one. */
  supply(packet: Buffer): void;
  /** A manifest of the gateway recorder's records of the clients' datagrams (16 bytes each), numbered from first. */
  udpRecords(first: number, records: Buffer): void;
  /** Passes of the packet thread's loop so far (it wakes at least every 5 ms): not advancing, it is stuck. */
  loops(): number;
  /** Starts the takeover on the engine thread; progress arrives as 'takeover' events. */
  takeover(options: TakeoverOptions): void;
  takeoverReport(): NativeTakeoverReport;
  /** After a takeover with the kernel translator: pin it under `dir` (on a bpffs) so that the taken-over connections outlive this process; '' or why not. Then stop() leaves the VIP. */
  pinTranslator(dir: string): string;
  /** The mirror port lost its link: every live flow is suspect until a primary ack proves it lost nothing (else unprotected, capture-drop). */
  mirrorLost(): void;
}

/** What a sweep of a pinned translator's flow map found. */
export interface PinnedSweep { flows: number; removed: number; inPackets: number; outPackets: number }

/** Owned nft tables that silence a replaced primary (addon/recovery_fence.h). */
export interface FenceOptions { role: 'gateway' | 'primary'; table: string; vip: string; mac?: string }
export interface NativeFence {
  /** Tables and empty chains (slow: hook registration); before it is needed. */
  prepare(): void;
  /** The drop rules, in one fast batch (prepares first if needed); `mac`: a gateway fence's old primary. */
  engage(mac?: string): void;
  release(): void;
  remove(): void;
  engaged(): boolean;
}

/** The gateway's traffic recorder (addon/traffic_recorder.h). */
export interface RecorderOptions { lanIf: string; vip: string; ports: number[]; udpPorts: number[]; windowMs: number; maxBytes: number }
/** The recorder's records of the clients' datagrams numbered [first, next) (addon/traffic_recorder.h udp_manifest). */
export interface UdpManifest {
  first: number; next: number; lost: number; more: boolean; cut: boolean; records: Buffer;
  /** The numbers of the records whose frame went to the asking backup's MAC (the VIP had moved to it). */
  direct: number[];
}
export interface NativeRecorder {
  start(): void;
  stop(): void;
  /** Have the recorder's thread re-send what the clients sent toward the VIP since `sinceUs` (wall clock µs); counters() says what it sent. */
  resupply(sinceUs: number): void;
  /** The takeover is ordered: the recorder's thread replays as soon as a gratuitous ARP for the VIP comes from another MAC than oldOwnerMac (then resupply() does nothing). */
  armReplay(sinceUs: number, oldOwnerMac: string): void;
  /** Recorded client segments of one flow carrying client bytes [from, to), as packets cut to fit one frame each. */
  lookup(q: { client: string; clientPort: number; vipPort: number; from: number; to: number }): Buffer[];
  /**
   * The records of datagrams numbered `after` and on, up to the takeover's cut; fromNow: none, where the numbering
   * is; askerMac: the asking backup's MAC (aa:bb:cc:dd:ee:ff), whose records are named direct. Undefined when the
   * recorder was given no UDP port.
   */
  udpManifest(after: number, fromNow: boolean, askerMac?: string): UdpManifest | undefined;
  /** The recorded datagrams of these numbers still held, as forwarded; one larger than a frame as its IP fragments. */
  udpLookup(numbers: number[]): Buffer[];
  counters(): Record<string, number>;
}

interface Addon {
  Engine: new (options: EngineOptions, onEvents: (batch: Buffer) => void) => NativeEngine;
  Fence: new (options: FenceOptions) => NativeFence;
  Recorder: new (options: RecorderOptions) => NativeRecorder;
  setErrorClass(cls: typeof T2cpError): void;
  names(): { counters: string[]; parseErrors: string[]; eventSize: number };
  captureFilter(vip: string, ports: number[], udpPorts?: number[]): string;
  /** tc programs attached to the interface through tcx (the active-mode translator's, while a backup runs). */
  tcxPrograms(ifname: string): number;
  /** The translator an earlier process pinned under `dir` (NativeEngine.pinTranslator). */
  pinnedTranslator(op: 'exists', dir: string): boolean;
  pinnedTranslator(op: 'reclaim' | 'release', dir: string): string;
  pinnedTranslator(op: 'gc', dir: string, idleS: number, lingerS: number): PinnedSweep;
  /** sd_notify(3): one message to $NOTIFY_SOCKET; '' when sent or when there is none, else why not. */
  sdNotify(text: string): string;
}

function repoRoot(): string {
  // src/addon.ts runs as dist/src/addon.js, or from src/ under vitest.
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return dir;
}

/** This package's version (package.json). */
export function packageVersion(): string {
  try {
    return String((JSON.parse(readFileSync(path.join(repoRoot(), 'package.json'), 'utf8')) as { version?: unknown }).version ?? 'unknown');
  } catch {
    return 'unknown';
  }
}

/** The kernel translator (addon/recovery_active_mode.bpf.c), built next to the addon. */
export function activeModeObject(): string {
  return path.join(repoRoot(), 'build', 'Release', 'recovery_active_mode.bpf.o');
}

function load(): Addon {
  const file = path.join(repoRoot(), 'build', 'Release', 't2cp.node');
  if (!existsSync(file)) {
    throw new T2cpError(`native addon not built (${path.relative(process.cwd(), file)} missing): run npm run setup`, 'T2CP_ADDON');
  }
  const addon = createRequire(import.meta.url)(file) as Addon;
  addon.setErrorClass(T2cpError);
  return addon;
}

let cached: Addon | undefined;
export function addon(): Addon {
  cached ??= load();
  return cached;
}
