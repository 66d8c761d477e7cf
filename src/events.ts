// The event stream (paper 003, SNE: events other HA software subscribes to):
// a role's changes as JSON lines on a local socket (--events PATH, a Unix
// socket) that any local process may follow (`t2cp events PATH`), at one of
// the paper's three levels, which the subscriber names in its first line:
//   strong       every change of every flow (each flow event) and every
//                state change;
//   weak         flows new and destroyed (closed), and state changes;
//   incremental  a digest every DIGEST_MS (the role's figures now), and
//                state changes.
// Every line: {t, role, instance, level, type: 'flow' | 'state' | 'digest', ...}.
// A subscriber that falls more than MAX_QUEUED bytes behind gets a last
// line {type: 'overrun'} and is closed: it must not hold the role's memory.
//
// With --notify PROGRAM, each state change also runs
// `PROGRAM ROLE INSTANCE STATE EPOCH` (keepalived's notify habit), detached,
// its failure logged.
//
// Call order: `await EventStream.open(...)` before the role installs
// anything (a path in use is a one-line error), publish freely, close().
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { T2cpError } from './errors.js';
import type { Logger } from './log.js';

export const EVENT_LEVELS = ['strong', 'weak', 'incremental'] as const;
export type EventLevel = (typeof EVENT_LEVELS)[number];
/** How often the incremental level's digest goes out, ms. */
export const DIGEST_MS = 1000;
/** A subscriber this far behind (bytes not yet taken by its socket) is closed. */
const MAX_QUEUED = 4 << 20;
/** A subscriber that names no level within this long gets the weak one, ms. */
const LEVEL_WAIT_MS = 1000;

export type Role = 'backup' | 'gateway' | 'primary';

export interface EventStreamOptions {
  role: Role;
  instance: string;
  /** The incremental level's digest: the role's figures now. */
  digest: () => Record<string, unknown>;
  log: Logger;
}

interface Subscriber { socket: net.Socket; level: EventLevel | undefined }

export class EventStream {
  private readonly subscribers = new Set<Subscriber>();
  private readonly timer: NodeJS.Timeout;
  readonly stats = { lines: 0, overruns: 0 };

  private constructor(private readonly server: net.Server, private readonly file: string, private readonly o: EventStreamOptions) {
    server.on('connection', (socket) => this.accept(socket));
    this.timer = setInterval(() => this.digest(), DIGEST_MS);
  }

  /** Listens on the Unix socket `file`; a T2cpError naming the option and the fix when it cannot. */
  static async open(file: string, o: EventStreamOptions): Promise<EventStream> {
    const fail = (why: string): never => {
      throw new T2cpError(`--events ${file}: ${why}`, 'T2CP_CONFIG');
    };
    if (!fs.existsSync(path.dirname(path.resolve(file)))) fail(`no directory ${path.dirname(path.resolve(file))}: create it, or give another --events PATH`);
    if (fs.existsSync(file)) {
      if (!fs.statSync(file).isSocket()) fail('not a socket: give another --events PATH');
      if (await answers(file)) fail('in use by a running process: give another --events PATH, or stop it');
      fs.unlinkSync(file);  // left by a process that died
    }
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new T2cpError(`--events ${file}: ${e.message}: give another --events PATH`, 'T2CP_CONFIG')));
      server.listen(file, () => resolve());
    });
    fs.chmodSync(file, 0o660);
    return new EventStream(server, file, o);
  }

  /** A flow's event; `weak`: a flow new or destroyed (the weak level's too). */
  flow(event: Record<string, unknown>, weak: boolean): void {
    this.publish({ type: 'flow', ...event }, (l) => l === 'strong' || (weak && l === 'weak'));
  }

  /** A state change of the role (every level). */
  state(subject: string, from: string, to: string, epoch: number, cause?: string): void {
    this.publish({ type: 'state', subject, from, to, epoch, ...(cause ? { cause } : {}) }, () => true);
  }

  /** Ends the stream: each subscriber's last line says the role stopped. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    for (const s of this.subscribers) {
      if (s.level) s.socket.end(JSON.stringify(this.envelope(s, { type: 'closed', error: 'the role stopped' })) + '\n', () => s.socket.destroy());
      else s.socket.destroy();
    }
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    fs.rmSync(this.file, { force: true });
  }

  private accept(socket: net.Socket): void {
    const sub: Subscriber = { socket, level: undefined };
    this.subscribers.add(sub);
    let head = '';
    const settle = (level: EventLevel) => {
      if (sub.level) return;
      sub.level = level;
      clearTimeout(wait);
      this.write(sub, { type: 'subscribed', level });
    };
    const wait = setTimeout(() => settle('weak'), LEVEL_WAIT_MS);
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      if (sub.level) return;
      head += d;
      const nl = head.indexOf('\n');
      if (nl < 0 && head.length < 64) return;
      const asked = head.slice(0, nl < 0 ? undefined : nl).trim();
      if ((EVENT_LEVELS as readonly string[]).includes(asked)) return settle(asked as EventLevel);
      this.write(sub, { type: 'error', error: `unknown level '${asked.slice(0, 32)}': give one of ${EVENT_LEVELS.join(', ')}` });
      socket.end();
    });
    const drop = () => {
      clearTimeout(wait);
      this.subscribers.delete(sub);
    };
    socket.on('close', drop);
    socket.on('error', drop);
  }

  private digest(): void {
    if (![...this.subscribers].some((s) => s.level === 'incremental')) return;
    this.publish({ type: 'digest', ...this.o.digest() }, (l) => l === 'incremental');
  }

  private publish(body: Record<string, unknown>, to: (level: EventLevel) => boolean): void {
    for (const s of this.subscribers) if (s.level && to(s.level)) this.write(s, body);
  }

  private write(s: Subscriber, body: Record<string, unknown>): void {
    if (s.socket.writableLength > MAX_QUEUED) {
      this.stats.overruns++;
      s.socket.end(JSON.stringify(this.envelope(s, { type: 'overrun', error: 'this subscriber fell too far behind: closed' })) + '\n');
      this.subscribers.delete(s);
      this.o.log.warn('an event subscriber fell too far behind: closed', { level: s.level });
      return;
    }
    s.socket.write(JSON.stringify(this.envelope(s, body)) + '\n');
    this.stats.lines++;
  }

  private envelope(s: Subscriber, body: Record<string, unknown>): Record<string, unknown> {
    return { t: new Date().toISOString(), role: this.o.role, instance: this.o.instance, level: s.level, ...body };
  }
}

/** Whether a process accepts connections on the Unix socket `file`. */
function answers(file: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(file);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/**
 * --notify PROGRAM: runs `PROGRAM ROLE INSTANCE STATE EPOCH` for a state change, detached from
 * this process's fate (no wait), its failure to start or its non-zero exit logged.
 */
export function notifyProgram(program: string, role: string, instance: string, log: Logger): (state: string, epoch: number) => void {
  return (state, epoch) => {
    const child = spawn(program, [role, instance, state, String(epoch)], { stdio: 'ignore' });
    child.on('error', (e) => log.warn('--notify program could not run', { program, state, error: e.message }));
    child.on('exit', (code, signal) => {
      if (code !== 0) log.warn('--notify program failed', { program, state, epoch, ...(signal ? { signal } : { code }) });
    });
  };
}
