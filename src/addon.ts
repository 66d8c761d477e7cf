// The one door to the native addon (serialport's bindings habit): loads the
// .node file once and exports it typed. Nothing else imports the addon.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { T2cpError } from './errors.js';

/** What src/config.ts hands the engine; validated before it gets here. */
export interface EngineOptions {
  mirrorIf: string;
  vip: string;
  ports: number[];
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
}

export interface LatencyHistogram {
  /** [microseconds, count] for every non-empty 1 µs bucket; the last bucket (4095) holds the rest. */
  buckets: Array<[number, number]>;
  maxNs: number;
}

export interface NativeEngine {
  start(): { removedStaleTable: boolean; realtime: boolean };
  stop(): void;
  counters(): Record<string, number>;
  latency(): LatencyHistogram;
  requestFlowStats(): void;
}

interface Addon {
  Engine: new (options: EngineOptions, onEvents: (batch: Buffer) => void) => NativeEngine;
  setErrorClass(cls: typeof T2cpError): void;
  names(): { counters: string[]; parseErrors: string[]; eventSize: number };
  captureFilter(vip: string, ports: number[]): string;
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
