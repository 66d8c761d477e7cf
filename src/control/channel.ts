// Channel: the one transport of the control plane, a UDP (IPv4) socket that
// signs what it sends and checks what it receives. Gateway, primary agent,
// backup control endpoint and `t2cp takeover` each own one.
//
// Call order: `await Channel.open(opts)` (binds), then onMessage(fn) and
// send() freely, then `await close()`. Everything runs on the Node event loop
// that opened it; listeners are called synchronously from the socket's
// 'message' event, in subscription order.
//
// Outgoing: own sender name, boot = the channel's start time (wall clock µs),
// a counter from 1, +1 per message (over all peers). Incoming: decode() (hmac,
// format, body) then the ReplayGuard; a refused datagram only increments
// counters().rejected[reason] — never an exception, never a log line (a
// flood of forgeries must not flood the log). Sending is fire-and-forget: UDP
// may lose a message, so every protocol step repeats until answered.
import dgram from 'node:dgram';
import { T2cpError } from '../errors.js';
import type { Endpoint } from '../options.js';
import type { BodyOf, MessageTypeName } from './bodies.js';
import { systemClock, type Clock } from './clock.js';
import { decode, encode, type DecodeRejection, type MessageOf } from './messages.js';
import { ReplayGuard, type ReplayRejection } from './replay.js';

export interface ChannelOptions {
  /** The shared key (key.ts). */
  key: Buffer;
  /** This end's name in every message, 1..64 UTF-8 bytes, e.g. 'gateway:main'. */
  sender: string;
  /** Local address and port; port 0 picks a free one. */
  bind: Endpoint;
  clock?: Clock;
  /** Freshness window of the replay guard, µs; default 2 s. */
  maxSkewUs?: number;
  /** The socket's receive buffer to ask for (SO_RCVBUF), bytes; the kernel caps it at net.core.rmem_max. Default: the system's. */
  recvBufferBytes?: number;
}

export interface Received<K extends MessageTypeName = MessageTypeName> {
  msg: MessageOf<K>;
  from: Endpoint;
  /** Monotonic µs when the datagram was handled. */
  atUs: number;
}

export type Rejection = DecodeRejection | ReplayRejection;

export interface ChannelCounters {
  sent: number;
  accepted: number;
  sendErrors: number;
  socketErrors: number;
  rejected: Record<Rejection, number>;
}

export function sameEndpoint(a: Endpoint, b: Endpoint): boolean {
  return a.address === b.address && a.port === b.port;
}

export class Channel {
  readonly boot: number;
  private counter = 0;
  private closed = false;
  private listeners: Array<(r: Received) => void> = [];
  private readonly guard: ReplayGuard;
  private readonly stats = { sent: 0, accepted: 0, sendErrors: 0, socketErrors: 0 };
  private readonly decodeRejected: Record<DecodeRejection, number> = {
    truncated: 0, 'bad-magic': 0, 'bad-version': 0, 'unknown-type': 0, 'bad-hmac': 0, 'bad-body': 0,
  };

  private constructor(
    private readonly socket: dgram.Socket,
    private readonly opts: ChannelOptions,
    private readonly clock: Clock,
  ) {
    this.boot = clock.wallUs();
    this.guard = new ReplayGuard(() => clock.wallUs(), opts.maxSkewUs);
    socket.on('message', (buf, rinfo) => this.receive(buf, { address: rinfo.address, port: rinfo.port }));
    socket.on('error', () => this.stats.socketErrors++);
  }

  /** Bind and return the channel; a T2cpError names the address when it cannot. */
  static open(opts: ChannelOptions): Promise<Channel> {
    encode(opts.key, opts.sender, 1, 1, 'STATUS', {}); // a bad sender name throws here, before any socket exists
    const socket = dgram.createSocket({ type: 'udp4', ...(opts.recvBufferBytes ? { recvBufferSize: opts.recvBufferBytes } : {}) });
    return new Promise((resolve, reject) => {
      const onError = (e: NodeJS.ErrnoException) => {
        socket.close();
        const where = `${opts.bind.address}:${opts.bind.port}`;
        if (e.code === 'EADDRINUSE') reject(new T2cpError(`control port ${where} is in use: another t2cp (or another program) holds it; stop it or pick another port`, 'T2CP_BUSY'));
        else if (e.code === 'EADDRNOTAVAIL') reject(new T2cpError(`cannot listen on ${where}: the address is not on this host; give one of its addresses or 0.0.0.0`, 'T2CP_CONFIG'));
        else reject(new T2cpError(`cannot listen on ${where}: ${e.message}`, 'T2CP_SYSTEM'));
      };
      socket.once('error', onError);
      socket.bind(opts.bind.port, opts.bind.address, () => {
        socket.off('error', onError);
        resolve(new Channel(socket, opts, opts.clock ?? systemClock));
      });
    });
  }

  get sender(): string {
    return this.opts.sender;
  }

  address(): Endpoint {
    const a = this.socket.address();
    return { address: a.address, port: a.port };
  }

  /** The receive buffer the kernel gave the socket, bytes (what SO_RCVBUF asked, at most net.core.rmem_max). */
  recvBufferBytes(): number {
    return this.socket.getRecvBufferSize() / 2; // Linux reports twice the size set: its bookkeeping's share
  }

  /** Subscribe to accepted messages; returns the unsubscribe function. */
  onMessage(fn: (r: Received) => void): () => void {
    this.listeners.push(fn);
    return () => {
      this.listeners = this.listeners.filter((l) => l !== fn);
    };
  }

  /** Sign and send one message. Does nothing once closed. */
  send<K extends MessageTypeName>(to: Endpoint, type: K, body: BodyOf[K]): void {
    if (this.closed) return;
    const buf = encode(this.opts.key, this.opts.sender, this.boot, ++this.counter, type, body, this.clock.wallUs());
    this.stats.sent++;
    this.socket.send(buf, to.port, to.address, (err) => {
      if (err) this.stats.sendErrors++;
    });
  }

  /** The next accepted message of `type` (that `match` accepts) within timeoutMs, or undefined. */
  waitFor<K extends MessageTypeName>(type: K, timeoutMs: number, match: (r: Received<K>) => boolean = () => true): Promise<Received<K> | undefined> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        off();
        resolve(undefined);
      }, timeoutMs);
      const off = this.onMessage((r) => {
        const rk = r as unknown as Received<K>;
        if (r.msg.type !== type || !match(rk)) return;
        clearTimeout(timer);
        off();
        resolve(rk);
      });
    });
  }

  counters(): ChannelCounters {
    return { ...this.stats, rejected: { ...this.decodeRejected, ...this.guard.rejected } };
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    this.listeners = [];
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }

  private receive(buf: Buffer, from: Endpoint): void {
    if (this.closed) return;
    const d = decode(buf, this.opts.key);
    if (!d.ok) {
      this.decodeRejected[d.reason]++;
      return;
    }
    if (!this.guard.check(d.msg).ok) return;
    this.stats.accepted++;
    const r: Received = { msg: d.msg, from, atUs: this.clock.monoUs() };
    for (const fn of [...this.listeners]) fn(r);
  }
}
