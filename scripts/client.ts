// The workload client: runs every session of a workload concurrently, one TCP connection each,
// checks every reply against the protocol's definition, and logs one JSON line per session.
//
//   node dist/scripts/client.js --server IP:PORT --workload JSON --log FILE
//                               [--deadline-ms N] [--local IP[,IP...]] [--timeline FILE]
//
// Each log line also says the longest pause of the session's progress (bytes received, or the
// socket taking more bytes to send) and when it began, and, for request/response and idle
// sessions, when each request was written and its whole reply read (wall ms: the client-visible
// stall around a failure is computed from these, scripts/reply-times.ts). --timeline writes, at
// exit, the bytes received and sent by all sessions per 10 ms bin (JSON), for pictures and the
// failover benchmark.
//
// Exits 0 only when every session was ok. The workload schema is `Workload` below; sizes come
// from a PRNG seeded per session by (workload seed, session index), so runs are reproducible.

import fs from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import {
  CHUNK, SERVER_OPS, FrameParser, KeyStream, Prng, Tally, answerFor, downloadBody, downloadStream,
  frame, frameHeader, sha256, type ClientLogLine, type FrameHandler,
} from './protocol.js';
import { wallMs, type RequestTimes } from './reply-times.js';

type Range = [number, number];
interface Common { times?: number; port?: number }
export type SessionSpec = Common & (
  | { kind: 'rr'; count?: number; reqSize?: Range; respSize?: Range; intervalMs?: number }
  | { kind: 'upload'; bytes: number }
  | { kind: 'download'; bytes: number }
  | { kind: 'idle'; holdMs: number }
);
/** `concurrency`: sessions open at once (default: all of them). */
export interface Workload { seed?: number; concurrency?: number; sessions: SessionSpec[] }

/** A reply the client waits for; `next(n)` gives the next n bytes its body must hold. */
interface Expectation { op: string; len: number; next(n: number): Buffer; done(): void; fail(e: Error): void }

/** Progress of every session per TIMELINE_BIN_MS bin, since the client started. */
const TIMELINE_BIN_MS = 10;
const timeline = { startMs: Date.now(), rx: [] as number[], tx: [] as number[] };
function binAdd(series: number[], n: number): void {
  const i = Math.floor((Date.now() - timeline.startMs) / TIMELINE_BIN_MS);
  while (series.length <= i) series.push(0);
  series[i] += n;
}

/** The longest pause between two signs of progress of one connection. */
class ProgressGap {
  private last = 0;
  maxMs = 0;
  atMs = 0; // wall clock when the longest pause began
  tick(): void {
    const now = Date.now();
    if (this.last && now - this.last > this.maxMs) {
      this.maxMs = now - this.last;
      this.atMs = this.last;
    }
    this.last = now;
  }
}

class Conn implements FrameHandler {
  readonly tx = new Tally();
  readonly rx = new Tally();
  readonly gap = new ProgressGap();
  /** Request/response sessions: each request's times, in the order written. */
  readonly requests: RequestTimes[] = [];
  local: string | null = null;
  /** When the connection was established (wall ms); null until then. */
  connectedAtMs: number | null = null;
  mismatch: string | null = null;
  private readonly parser = new FrameParser(SERVER_OPS, this);
  private readonly waiting: Expectation[] = [];
  private bodyOffset = 0;
  private replies = 0;
  private closed = false;
  private closing = false;
  private readonly closedP: Promise<void>;
  /** The first error of this connection; later ones are consequences. */
  fatal: Error | null = null;
  /** Aborted with the connection, to cut short the session's pauses. */
  private readonly aborted = new AbortController();
  readonly signal = this.aborted.signal;

  constructor(readonly sock: net.Socket) {
    sock.setNoDelay(true);
    sock.on('data', (c: Buffer) => {
      this.rx.update(c);
      this.gap.tick();
      binAdd(timeline.rx, c.length);
      try { this.parser.push(c); } catch (e) { this.abort(e as Error); }
    });
    sock.on('error', (e) => this.abort(e));
    // The service only closes after our FIN. An early FIN must fail the session now: once Node has
    // read EOF it stops polling the socket, so a later RST would go unnoticed until the deadline.
    sock.on('end', () => { if (!this.closing) this.abort(new Error('server closed the connection first')); });
    this.closedP = new Promise((resolve) => sock.on('close', () => {
      this.closed = true;
      this.abort(this.fatal ?? new Error('connection closed by server'));
      resolve();
    }));
  }

  connected(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.sock.once('connect', () => {
        this.local = `${this.sock.localAddress}:${this.sock.localPort}`;
        this.connectedAtMs = Date.now();
        resolve();
      });
      this.sock.once('close', () => reject(this.fatal ?? new Error('closed before connect')));
    });
  }

  start(op: string, len: number): void {
    const e = this.waiting[0];
    if (!e) throw new Error(`unexpected frame ${op} (${len} bytes)`);
    if (e.op !== op || e.len !== len) throw new Error(`reply ${this.replies}: got ${op}/${len}, want ${e.op}/${e.len}`);
    this.bodyOffset = 0;
  }

  body(chunk: Buffer): void {
    const want = this.waiting[0].next(chunk.length);
    if (this.mismatch === null && !chunk.equals(want)) {
      let i = 0;
      while (chunk[i] === want[i]) i++;
      this.mismatch = `reply ${this.replies} (${this.waiting[0].op}): wrong byte at offset ${this.bodyOffset + i}`;
    }
    this.bodyOffset += chunk.length;
  }

  end(): void {
    this.replies++;
    this.waiting.shift()!.done();
  }

  /** Queues the expectation first, so a reply can never arrive before it is awaited. */
  expect(op: string, len: number, next: (n: number) => Buffer): Promise<void> {
    const p = this.fatal
      ? Promise.reject(this.fatal)
      : new Promise<void>((done, fail) => this.waiting.push({ op, len, next, done, fail }));
    p.catch(() => {}); // the caller may fail elsewhere before it awaits this; not unhandled
    return p;
  }

  /** Writes with backpressure: resolves once the socket can take more. */
  async send(b: Buffer): Promise<void> {
    if (this.fatal) throw this.fatal;
    this.tx.update(b);
    const taken = (): void => {
      this.gap.tick();
      binAdd(timeline.tx, b.length);
    };
    if (this.sock.write(b, (err) => { if (!err) taken(); })) return;
    await new Promise<void>((resolve) => {
      const done = (): void => { this.sock.off('drain', done); this.sock.off('close', done); resolve(); };
      this.sock.on('drain', done);
      this.sock.on('close', done);
    });
    if (this.fatal) throw this.fatal;
  }

  /** Normal close: our FIN after the last reply, then wait for the server's FIN. */
  async close(): Promise<void> {
    this.closing = true;
    this.sock.end();
    this.fatal ??= new Error('closed');
    await this.closedP;
  }

  abort(e: Error): void {
    this.fatal ??= e;
    this.aborted.abort();
    for (const w of this.waiting.splice(0)) w.fail(this.fatal);
    if (!this.closed) this.sock.destroy();
  }
}

function sliceReader(buf: Buffer): (n: number) => Buffer {
  let off = 0;
  return (n) => buf.subarray(off, (off += n));
}

async function rr(c: Conn, prng: Prng, reqSize: Range, respSize: Range): Promise<void> {
  const respLen = prng.int(respSize[0], respSize[1]);
  const body = Buffer.concat([Buffer.alloc(4), prng.bytes(prng.int(Math.max(4, reqSize[0]), Math.max(4, reqSize[1])) - 4)]);
  body.writeUInt32BE(respLen, 0);
  const reply = c.expect('A', respLen, sliceReader(answerFor(body)));
  const times: RequestTimes = [wallMs(), null];
  c.requests.push(times);
  await c.send(frame('Q', body));
  await reply;
  times[1] = wallMs();
}

async function runSession(c: Conn, spec: SessionSpec, prng: Prng, signal: AbortSignal): Promise<void> {
  switch (spec.kind) {
    case 'rr':
      for (let i = 0; i < (spec.count ?? 1); i++) {
        if (i > 0 && spec.intervalMs) await sleep(spec.intervalMs, undefined, { signal });
        await rr(c, prng, spec.reqSize ?? [4, 512], spec.respSize ?? [1, 4096]);
      }
      break;
    case 'upload': {
      // The expected digest is known only once everything is sent; the server cannot answer sooner.
      let want: (n: number) => Buffer = () => { throw new Error('upload answered before it was sent'); };
      const reply = c.expect('K', 32, (n) => want(n));
      await c.send(frameHeader('U', spec.bytes));
      const data = new KeyStream(sha256(prng.bytes(32)));
      const digest = new Tally();
      for (let left = spec.bytes; left > 0; left -= CHUNK) {
        const b = data.next(Math.min(CHUNK, left));
        digest.update(b);
        await c.send(b);
      }
      want = sliceReader(Buffer.from(digest.digest(), 'hex'));
      await reply;
      break;
    }
    case 'download': {
      const seed = prng.bytes(16);
      const stream = downloadStream(seed);
      const reply = c.expect('B', spec.bytes, (n) => stream.next(n));
      await c.send(frame('D', downloadBody(spec.bytes, seed)));
      await reply;
      break;
    }
    case 'idle':
      await rr(c, prng, [16, 64], [16, 64]);
      await sleep(spec.holdMs, undefined, { signal });
      await rr(c, prng, [16, 64], [16, 64]);
      break;
    default:
      throw new Error(`unknown session kind ${(spec as { kind: string }).kind}`);
  }
}

function checkSpec(s: SessionSpec): string | null {
  if (!['rr', 'upload', 'download', 'idle'].includes(s.kind)) return `unknown session kind ${s.kind}`;
  const numbers = Object.values(s).flat().filter((v) => typeof v !== 'string');
  if (numbers.some((v) => !(Number.isSafeInteger(v) && v >= 0))) return `not a count in ${JSON.stringify(s)}`;
  if (s.kind === 'upload' && s.bytes > 0xffffffff) return 'upload over 4 GiB: the U length is a u32';
  return null;
}

const { values } = parseArgs({
  options: {
    server: { type: 'string' }, workload: { type: 'string' }, log: { type: 'string' },
    'deadline-ms': { type: 'string', default: '120000' }, local: { type: 'string' },
    timeline: { type: 'string' },
  },
});
if (!values.server || !values.workload || !values.log) {
  process.stderr.write('usage: client.js --server IP:PORT --workload JSON --log FILE [--deadline-ms N] [--local IP,...]\n');
  process.exit(2);
}
const [host, portText] = values.server.split(':');
const workload = JSON.parse(values.workload) as Workload;
const locals = values.local ? values.local.split(',') : [undefined];
const logFd = fs.openSync(values.log, 'a');
const deadline = new AbortController();
const conns = new Set<Conn>();
const timer = setTimeout(() => {
  deadline.abort();
  for (const c of conns) c.abort(new Error('deadline'));
  // Sessions not yet connected see the aborted signal and fail with 'deadline' too. Should one
  // still hang, the process must end anyway (grace: 5 s).
  setTimeout(() => {
    process.stderr.write('client: sessions still running 5 s after the deadline\n');
    process.exit(1);
  }, 5000).unref();
}, Number(values['deadline-ms']));

const invalid = workload.sessions.map(checkSpec).find((e) => e !== null) ??
  (workload.concurrency !== undefined && !(Number.isSafeInteger(workload.concurrency) && workload.concurrency > 0)
    ? 'concurrency must be a positive integer' : undefined);
if (invalid) {
  process.stderr.write(`client: bad workload: ${invalid}\n`);
  process.exit(2);
}
const specs = workload.sessions.flatMap((s) => Array<SessionSpec>(s.times ?? 1).fill(s));
const started = Date.now();
// A slot per concurrently open session; a session takes one before it connects.
let slots = workload.concurrency ?? specs.length;
const waiting: Array<() => void> = [];
const acquire = (): Promise<void> => (slots > 0 ? (slots--, Promise.resolve()) : new Promise((r) => waiting.push(r)));
const release = (): void => {
  const next = waiting.shift();
  if (next) next();
  else slots++;
};
const results = await Promise.all(specs.map(async (spec, index): Promise<ClientLogLine> => {
  await acquire();
  try {
    return await runOne(spec, index);
  } finally {
    release();
  }
}));

async function runOne(spec: SessionSpec, index: number): Promise<ClientLogLine> {
  const port = spec.port ?? Number(portText);
  const sock = net.connect({ host, port, localAddress: locals[index % locals.length], allowHalfOpen: true });
  const c = new Conn(sock);
  conns.add(c);
  const t0 = Date.now();
  let error: string | null = null;
  try {
    await c.connected();
    const prng = new Prng(`t2cp-workload/${workload.seed ?? 0}/${index}`);
    await runSession(c, spec, prng, AbortSignal.any([deadline.signal, c.signal]));
    await c.close();
  } catch (e) {
    c.abort(e as Error);
    error = c.fatal!.message;
  }
  conns.delete(c);
  error ??= c.mismatch;
  const line: ClientLogLine = {
    session: index, kind: spec.kind, local: c.local, remote: `${host}:${port}`,
    txBytes: c.tx.bytes, txSha256: c.tx.digest(), rxBytes: c.rx.bytes, rxSha256: c.rx.digest(),
    ok: error === null, error, ms: Date.now() - t0, connectedAtMs: c.connectedAtMs, endAtMs: Date.now(), maxGapMs: c.gap.maxMs, maxGapAtMs: c.gap.atMs,
    ...(c.requests.length ? { requests: c.requests } : {}),
  };
  fs.writeSync(logFd, JSON.stringify(line) + '\n');
  return line;
}
clearTimeout(timer);

if (values.timeline) fs.writeFileSync(values.timeline, JSON.stringify({ binMs: TIMELINE_BIN_MS, ...timeline }));
const failed = results.filter((r) => !r.ok);
process.stdout.write(JSON.stringify({
  sessions: results.length, ok: results.length - failed.length, failed: failed.length,
  txBytes: results.reduce((a, r) => a + r.txBytes, 0), rxBytes: results.reduce((a, r) => a + r.rxBytes, 0),
  ms: Date.now() - started, errors: failed.slice(0, 5).map((r) => `${r.session} ${r.kind}: ${r.error}`),
}) + '\n');
process.exit(failed.length === 0 ? 0 : 1);
