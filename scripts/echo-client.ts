// The failover probe client: many established connections to an echo service (scripts/echo-service.ts),
// each reply timed and checked byte for byte, to see what a client notices when the server fails.
//
//   node dist/scripts/echo-client.js --server IP:PORT --active N --idle M
//                                    [--interval-ms 10] [--max-unanswered 64] [--window-ms 1000]
//                                    [--deadline-ms 60000] [--local IP[,IP...]]
//
// Active connections send a 16-byte request every interval (at most --max-unanswered, default 64,
// unanswered: 1 makes strict request/response, as a Redis or SSH client waits); idle ones send
// nothing until told to. Commands on stdin, one per line:
//   fail MS   the failure happened at MS (wall clock, ms since the epoch, fractional); from now on a
//             new connection is tried every 20 ms until one is echoed (when the service is back)
//   probe     every idle connection sends one request
//   stop      print the summary and exit 0
// Lines on stdout, JSON: {"ev":"established"} once every connection is up; after `fail`, one
// {"ev":"resolved","id","outcome"} per connection when it is answered (kept) or ends (reset,
// closed, corrupt), {"ev":"restored","atMs"} when a new connection is first echoed; at the end
// {"ev":"summary", failMs, restoredMs, conns: [{id, kind, outcome, lastBeforeMs, firstAfterMs,
// longestReplyMs, longestReplyOpen, longestReplyBeforeMs, replies, error, endMs}]}.
// outcome: kept | reset | closed | corrupt | stalled (no reply after the failure, still open).
// longestReplyMs: the longest request->reply among the requests outstanding within --window-ms
// either side of the failure, whichever side their reply came (longestAround in
// scripts/reply-times.ts); a request never answered counts until the connection ended or the
// summary (longestReplyOpen: true, a lower bound). longestReplyBeforeMs: the same among the
// replies that came before the failure. Null before a `fail`.
// The client exits by itself at the deadline (summary first).

import net from 'node:net';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { longestAround, longestReplies, wallMs as now, type RequestTimes } from './reply-times.js';

const { values } = parseArgs({
  options: {
    server: { type: 'string' }, active: { type: 'string', default: '0' }, idle: { type: 'string', default: '0' },
    'interval-ms': { type: 'string', default: '10' }, 'max-unanswered': { type: 'string', default: '64' }, 'deadline-ms': { type: 'string', default: '60000' },
    'window-ms': { type: 'string', default: '1000' },
    local: { type: 'string' },
  },
});
const [host, portText] = (values.server ?? '').split(':');
const port = Number(portText);
const nActive = Number(values.active);
const nIdle = Number(values.idle);
const intervalMs = Number(values['interval-ms']);
const deadlineMs = Number(values['deadline-ms']);
const MAX_UNANSWERED = Number(values['max-unanswered']);
const windowMs = Number(values['window-ms']);
const locals = values.local ? values.local.split(',') : [undefined];
if (!net.isIPv4(host ?? '') || !(port > 0 && port < 65536) || !(nActive + nIdle >= 1 && nActive + nIdle <= 10_000)
  || !(intervalMs >= 1) || !(deadlineMs >= 1000) || !(Number.isInteger(MAX_UNANSWERED) && MAX_UNANSWERED >= 1) || !(windowMs > 0)) {
  process.stderr.write('usage: echo-client.js --server IP:PORT --active N --idle M [--interval-ms N] [--max-unanswered N] [--window-ms N] [--deadline-ms N] [--local IP,...]\n');
  process.exit(2);
}

const REQ = 16;
const CONNECT_TIMEOUT_MS = 10_000;
const NEW_CONN_EVERY_MS = 20;
const NEW_CONN_TIMEOUT_MS = 2_000;
const MAX_NEW_CONN_ATTEMPTS = 1_000;

const emit = (o: object): void => { process.stdout.write(`${JSON.stringify(o)}\n`); };

/** Request number `seq` of connection `id`: what the echo must give back, byte for byte. */
function request(id: number, seq: number): Buffer {
  const b = Buffer.alloc(REQ);
  b.writeUInt32BE(id, 0);
  b.writeUInt32BE(seq >>> 0, 4);
  b.writeUInt32BE(Math.imul(id + 1, 2654435761) >>> 0, 8);
  b.writeUInt32BE(Math.imul(seq + 1, 40503) >>> 0, 12);
  return b;
}

type Outcome = 'kept' | 'reset' | 'closed' | 'corrupt' | 'stalled';
let failMs: number | null = null;

class Conn {
  sent = 0;
  received = 0;
  private rx: Buffer = Buffer.alloc(0);
  /** Reply times (bounded by the deadline: at most deadline / interval of them). */
  readonly times: number[] = [];
  /** When the request of each reply in `times` was sent. */
  readonly asked: number[] = [];
  /** When each request not yet answered was sent, oldest first. */
  private readonly pending: number[] = [];
  end: { outcome: Outcome; atMs: number; error: string | null } | null = null;
  resolved = false;

  constructor(readonly id: number, readonly kind: 'active' | 'idle', readonly sock: net.Socket) {
    sock.setNoDelay(true);
    sock.on('data', (d: Buffer) => this.onData(d));
    sock.on('error', (e: NodeJS.ErrnoException) => this.finish(e.code === 'ECONNRESET' || e.code === 'EPIPE' ? 'reset' : 'closed', `${e.code ?? e.message}`));
    sock.on('end', () => this.finish('closed', 'server closed'));
    sock.on('close', () => this.finish('closed', 'closed'));
  }

  send(): void {
    if (this.end || this.sent - this.received >= MAX_UNANSWERED) return;
    this.pending.push(now());
    this.sock.write(request(this.id, this.sent++));
  }

  private onData(d: Buffer): void {
    this.rx = this.rx.length ? Buffer.concat([this.rx, d]) : d;
    const t = now();
    while (this.rx.length >= REQ) {
      if (!this.rx.subarray(0, REQ).equals(request(this.id, this.received))) {
        this.finish('corrupt', `reply ${this.received} differs from its request`);
        this.sock.destroy();
        return;
      }
      this.rx = this.rx.subarray(REQ);
      this.received++;
      this.times.push(t);
      this.asked.push(this.pending.shift()!);
      if (failMs !== null && t >= failMs) this.resolve('kept');
    }
  }

  private finish(outcome: Outcome, error: string): void {
    if (this.end) return;
    this.end = { outcome, atMs: now(), error };
    this.resolve(outcome);
  }

  /** Reported once, after the failure: the first thing that decided this connection's fate. */
  resolve(outcome: Outcome): void {
    if (this.resolved || failMs === null) return;
    this.resolved = true;
    emit({ ev: 'resolved', id: this.id, kind: this.kind, outcome, atMs: now() });
  }

  summary(): object {
    const f = failMs ?? Infinity;
    const before = this.times.filter((t) => t < f);
    const after = this.times.find((t) => t >= f);
    const lastBeforeMs = before.at(-1) ?? null;
    const outcome: Outcome = this.end?.outcome ?? (after !== undefined ? 'kept' : 'stalled');
    // The unanswered requests count until the connection ended or now.
    const requests: RequestTimes[] = [...this.asked.map((s, i): RequestTimes => [s, this.times[i]!]), ...this.pending.map((s): RequestTimes => [s, null])];
    const r = failMs === null ? null : longestReplies(requests, failMs, windowMs, this.end?.atMs ?? now());
    const longest = r && longestAround(r);
    return {
      id: this.id, kind: this.kind, outcome, replies: this.received, lastBeforeMs, firstAfterMs: after ?? null,
      longestReplyMs: longest?.ms ?? null, longestReplyOpen: !!longest && longest.answeredMs === null,
      longestReplyBeforeMs: r?.before?.ms ?? null,
      error: this.end?.error ?? null, endMs: this.end?.atMs ?? null,
    };
  }
}

function connect(i: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port, localAddress: locals[i % locals.length] });
    const timer = setTimeout(() => { sock.destroy(); reject(new Error(`connect timed out after ${timeoutMs} ms`)); }, timeoutMs);
    sock.once('connect', () => { clearTimeout(timer); resolve(sock); });
    sock.once('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

const conns: Conn[] = [];
let restoredMs: number | null = null;
let attempts = 0;
let probing: NodeJS.Timeout | null = null;
const trying = new Set<net.Socket>();

/** One new connection: echoed means the service answers at the address again. */
function tryNew(): void {
  if (restoredMs !== null || attempts >= MAX_NEW_CONN_ATTEMPTS) { stopProbing(); return; }
  const sock = net.connect({ host, port, localAddress: locals[attempts++ % locals.length] });
  trying.add(sock);
  const done = (): void => { trying.delete(sock); sock.destroy(); };
  const timer = setTimeout(done, NEW_CONN_TIMEOUT_MS);
  const probe = request(0xffffffff, attempts);
  let got: Buffer = Buffer.alloc(0);
  sock.on('connect', () => sock.write(probe));
  sock.on('data', (d: Buffer) => {
    got = Buffer.concat([got, d]);
    if (got.length >= REQ && restoredMs === null && got.subarray(0, REQ).equals(probe)) {
      restoredMs = now();
      emit({ ev: 'restored', atMs: restoredMs, attempts });
      stopProbing();
    }
    if (got.length >= REQ) { clearTimeout(timer); done(); }
  });
  sock.on('error', () => { clearTimeout(timer); done(); });
}

function stopProbing(): void {
  if (probing) clearInterval(probing);
  probing = null;
}

let ticker: NodeJS.Timeout | null = null;
function finish(reason: string): void {
  if (ticker) clearInterval(ticker);
  stopProbing();
  emit({ ev: 'summary', reason, failMs, restoredMs, conns: conns.map((c) => c.summary()) });
  for (const c of conns) c.sock.destroy();
  for (const s of trying) s.destroy();
  process.exit(0);
}

const deadline = setTimeout(() => finish('deadline'), deadlineMs);
deadline.unref();

try {
  const socks = await Promise.all(Array.from({ length: nActive + nIdle }, (_, i) => connect(i, CONNECT_TIMEOUT_MS)));
  socks.forEach((s, i) => conns.push(new Conn(i, i < nActive ? 'active' : 'idle', s)));
} catch (e) {
  process.stderr.write(`echo-client: ${(e as Error).message}\n`);
  process.exit(1);
}
emit({ ev: 'established', active: nActive, idle: nIdle });
ticker = setInterval(() => { for (const c of conns) if (c.kind === 'active') c.send(); }, intervalMs);

createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, arg] = line.trim().split(/\s+/);
  if (cmd === 'fail' && Number.isFinite(Number(arg)) && failMs === null) {
    failMs = Number(arg);
    // Connections already decided (an error before this line arrived) report now.
    for (const c of conns) if (c.end) c.resolve(c.end.outcome);
    else if (c.times.some((t) => t >= failMs!)) c.resolve('kept');
    probing = setInterval(tryNew, NEW_CONN_EVERY_MS);
    tryNew();
  } else if (cmd === 'probe') {
    for (const c of conns) if (c.kind === 'idle') c.send();
  } else if (cmd === 'stop') {
    finish('stop');
  }
}).on('close', () => finish('stdin closed'));
