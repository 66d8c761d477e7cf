// The deterministic test service, run identically on the primary and the backup.
//
//   node dist/scripts/service.js --port 7000 [--port 6379 ...] --log FILE
//                                [--read-pause-ms N --pause-every BYTES] [--backlog N]
//
// --read-pause-ms makes a slow reader: after every BYTES read it stops reading for N ms, so its
// receive window closes (the tests run the backup's copy this way to check the replica keeps step).
//
// Listens on 0.0.0.0 (never on the VIP, which the backup only gets later), prints `ready` once
// every port listens, and answers the frames of scripts/protocol.ts. Its output is a function of
// the bytes it read only: replies are queued in request order and generated from the request.
// One JSON line per connection goes to FILE when the connection ends, or on SIGTERM while open:
//   {"peer","port","rxBytes","rxSha256","txBytes","txSha256","ops","end","open"}
// end is fin | rst | error | protocol-error | sigterm.

import fs from 'node:fs';
import net from 'node:net';
import { createHash, type Hash } from 'node:crypto';
import { parseArgs } from 'node:util';
import {
  CHUNK, CLIENT_OPS, DOWNLOAD_BODY_LEN, MAX_BUFFERED, FrameParser, ProtocolError, Tally,
  answerFor, downloadStream, frameHeader, type EndReason, type FrameHandler, type ServiceLogLine,
} from './protocol.js';

const { values } = parseArgs({
  options: {
    port: { type: 'string', multiple: true }, log: { type: 'string' },
    'read-pause-ms': { type: 'string', default: '0' }, 'pause-every': { type: 'string', default: '1048576' },
    backlog: { type: 'string', default: '1024' },
  },
});
// A tiny --backlog makes the accept queue overflow under a burst of connections (the kernel then
// drops SYNs and handshake ACKs): the tests run the backup's copy this way.
const backlog = Number(values.backlog);
const readPauseMs = Number(values['read-pause-ms']);
const pauseEvery = Number(values['pause-every']);
if (!values.port?.length || !values.log) {
  process.stderr.write('usage: service.js --port N [--port N ...] --log FILE\n');
  process.exit(2);
}
// Synchronous appends: a SIGTERM right after a connection closes must not lose its line.
const logFd = fs.openSync(values.log, 'a');
const open = new Set<Connection>();

class Connection implements FrameHandler {
  private readonly rx = new Tally();
  private readonly tx = new Tally();
  private readonly parser = new FrameParser(CLIENT_OPS, this);
  private readonly peer: string;
  private ops = 0;
  private logged = false;
  private peerEnded = false;
  private failure: EndReason | null = null;
  // Replies go out strictly in request order, each after the previous one finished.
  private replies: Promise<void> = Promise.resolve();
  private downloadsQueued = 0;
  // State of the frame being read.
  private reqParts: Buffer[] = [];
  private upload: Hash | null = null;
  // Slow-reader mode (--read-pause-ms): bytes read since the last rest, and whether resting.
  private sinceRest = 0;
  private resting = false;

  constructor(
    private readonly sock: net.Socket,
    private readonly port: number,
  ) {
    this.peer = `${sock.remoteAddress}:${sock.remotePort}`;
    sock.setNoDelay(true);
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('end', () => {
      this.peerEnded = true;
      // Our FIN follows the last reply, as a function of the input like everything else.
      this.enqueue(() => { if (!sock.destroyed) sock.end(); });
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      this.failure ??= e.code === 'ECONNRESET' || e.code === 'EPIPE' ? 'rst' : 'error';
    });
    sock.on('close', () => this.log(this.failure ?? (this.peerEnded ? 'fin' : 'error'), false));
    open.add(this);
  }

  private onData(chunk: Buffer): void {
    this.rx.update(chunk);
    if (readPauseMs > 0 && (this.sinceRest += chunk.length) >= pauseEvery) this.rest();
    try {
      this.parser.push(chunk);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.failure = 'protocol-error';
      this.sock.destroy();
    }
  }

  private rest(): void {
    this.sinceRest = 0;
    this.resting = true;
    this.sock.pause();
    setTimeout(() => {
      this.resting = false;
      if (this.downloadsQueued === 0 && !this.sock.destroyed) this.sock.resume();
    }, readPauseMs);
  }

  start(op: string, len: number): void {
    if (op === 'Q' && len > MAX_BUFFERED) throw new ProtocolError(`Q body of ${len} bytes`);
    if (op === 'D' && len !== DOWNLOAD_BODY_LEN) throw new ProtocolError(`D body of ${len} bytes`);
    if (op === 'U') this.upload = createHash('sha256');
    this.reqParts = [];
  }

  body(chunk: Buffer): void {
    // Uploads are hashed as they stream past; only small Q/D bodies are kept.
    if (this.upload) this.upload.update(chunk);
    else this.reqParts.push(Buffer.from(chunk));
  }

  end(op: string): void {
    this.ops++;
    if (op === 'U') {
      const digest = this.upload!.digest();
      this.upload = null;
      this.enqueue(() => void this.write(Buffer.concat([frameHeader('K', 32), digest])));
      return;
    }
    const body = Buffer.concat(this.reqParts);
    this.reqParts = [];
    if (op === 'Q') {
      const answer = answerFor(body);
      this.enqueue(() => void this.write(Buffer.concat([frameHeader('A', answer.length), answer])));
    } else {
      const size = Number(body.readBigUInt64BE(0));
      if (!Number.isSafeInteger(size)) throw new ProtocolError('D size too large');
      // Stop reading while a download streams: the client's window then holds back its input.
      if (this.downloadsQueued++ === 0) this.sock.pause();
      this.enqueue(async () => {
        await this.streamDownload(size, body.subarray(8, 24));
        if (--this.downloadsQueued === 0 && !this.resting && !this.sock.destroyed) this.sock.resume();
      });
    }
  }

  private async streamDownload(size: number, seed16: Buffer): Promise<void> {
    this.write(frameHeader('B', size, 8));
    const stream = downloadStream(seed16);
    for (let left = size; left > 0 && !this.sock.destroyed; ) {
      const n = Math.min(CHUNK, left);
      left -= n;
      if (!this.write(stream.next(n))) await this.drained();
    }
  }

  private drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.sock.off('drain', done);
        this.sock.off('close', done);
        resolve();
      };
      this.sock.on('drain', done);
      this.sock.on('close', done);
    });
  }

  /** tx counts what the application handed to its socket, the quantity replicas must agree on. */
  private write(b: Buffer): boolean {
    if (this.sock.destroyed) return true;
    this.tx.update(b);
    return this.sock.write(b);
  }

  private enqueue(job: () => void | Promise<void>): void {
    this.replies = this.replies.then(job).catch((e: unknown) => {
      process.stderr.write(`service: ${this.peer}: ${String(e)}\n`);
      this.sock.destroy();
    });
  }

  log(end: EndReason, stillOpen: boolean): void {
    if (this.logged) return;
    this.logged = true;
    open.delete(this);
    const line: ServiceLogLine = {
      peer: this.peer, port: this.port,
      rxBytes: this.rx.bytes, rxSha256: this.rx.digest(),
      txBytes: this.tx.bytes, txSha256: this.tx.digest(),
      ops: this.ops, end, open: stillOpen,
    };
    fs.writeSync(logFd, JSON.stringify(line) + '\n');
  }
}

function shutdown(): void {
  for (const c of [...open]) c.log('sigterm', true);
  fs.fsyncSync(logFd);
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

const ports = values.port.map(Number);
await Promise.all(
  ports.map((port) => new Promise<void>((resolve, reject) => {
    const server = net.createServer({ allowHalfOpen: true }, (sock) => new Connection(sock, port));
    server.once('error', reject);
    server.listen({ port, host: '0.0.0.0', backlog }, () => resolve());
  })),
).catch((e: unknown) => {
  process.stderr.write(`service: listen failed: ${String(e)}\n`);
  process.exit(1);
});
process.stdout.write('ready\n');
