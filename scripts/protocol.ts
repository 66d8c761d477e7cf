// Wire protocol of the deterministic test service, shared by scripts/service.ts and
// scripts/client.ts. Everything here is a pure function of the bytes given to it, so a primary and
// a backup that read the same bytes write the same bytes, whatever the segment boundaries.
//
// Client -> server frames: op (1 byte ASCII) | len (u32 BE) | body (len bytes)
//   'Q' request   body = respLen (u32 BE) | filler       reply 'A' | u32 respLen | stream(sha256(body))
//   'U' upload    body = data                            reply 'K' | u32 32 | sha256(data)
//   'D' download  body = size (u64 BE) | seed (16 bytes)  reply 'B' | u64 size | stream(sha256(seed))
// stream(s) = AES-128-CTR over zeros, key = s[0..16), iv = s[16..32).

import { createCipheriv, createHash, type Cipher, type Hash } from 'node:crypto';
import type { RequestTimes } from './reply-times.js';

/** Width in bytes of the length field that follows each op byte. */
export type OpTable = Readonly<Record<string, 4 | 8>>;
export const CLIENT_OPS: OpTable = { Q: 4, U: 4, D: 4 };
export const SERVER_OPS: OpTable = { A: 4, K: 4, B: 8 };

/** Body of a 'D' frame: u64 size + 16-byte seed. */
export const DOWNLOAD_BODY_LEN = 24;
/** Largest 'Q' body or requested response the service buffers whole (16 MiB, our own limit). */
export const MAX_BUFFERED = 16 * 1024 * 1024;
/** Chunk size for generated streams (64 KiB: big enough for throughput, small for memory). */
export const CHUNK = 64 * 1024;

export class ProtocolError extends Error {
  readonly code = 'T2CP_PROTOCOL';
}

export interface FrameHandler {
  /** A frame header was read; `len` is the body length announced by it. */
  start(op: string, len: number): void;
  /** Part of the body of the current frame (a view into the pushed chunk). */
  body(chunk: Buffer): void;
  /** The body of the current frame is complete. */
  end(op: string): void;
}

/**
 * Incremental framer: push() any slicing of the byte stream, handler calls come out identical.
 * After a ProtocolError the parser stays failed and every further push() throws.
 */
export class FrameParser {
  private readonly header = Buffer.alloc(9);
  private headerHave = 0;
  private op = '';
  private remaining = 0;
  private inBody = false;
  private failed: ProtocolError | null = null;

  constructor(
    private readonly ops: OpTable,
    private readonly handler: FrameHandler,
  ) {}

  /** True between frames (nothing of a frame has been read). */
  get idle(): boolean {
    return !this.inBody && this.headerHave === 0;
  }

  push(chunk: Buffer): void {
    if (this.failed) throw this.failed;
    let off = 0;
    while (off < chunk.length) {
      if (this.inBody) {
        const n = Math.min(this.remaining, chunk.length - off);
        this.remaining -= n;
        this.handler.body(chunk.subarray(off, off + n));
        off += n;
        if (this.remaining === 0) this.finishFrame();
        continue;
      }
      if (this.headerHave === 0) {
        const op = String.fromCharCode(chunk[off]);
        if (!(op in this.ops)) return this.fail(`unknown op 0x${chunk[off].toString(16)}`);
        this.op = op;
      }
      const need = 1 + this.ops[this.op];
      const n = Math.min(need - this.headerHave, chunk.length - off);
      chunk.copy(this.header, this.headerHave, off, off + n);
      this.headerHave += n;
      off += n;
      if (this.headerHave < need) break;
      const len = need === 5 ? this.header.readUInt32BE(1) : Number(this.header.readBigUInt64BE(1));
      if (!Number.isSafeInteger(len)) return this.fail(`length of op ${this.op} too large`);
      this.headerHave = 0;
      this.inBody = true;
      this.remaining = len;
      this.handler.start(this.op, len);
      if (len === 0) this.finishFrame();
    }
  }

  private finishFrame(): void {
    this.inBody = false;
    this.handler.end(this.op);
  }

  private fail(msg: string): never {
    this.failed = new ProtocolError(msg);
    throw this.failed;
  }
}

/** Frame header: op byte and a big-endian length of the given width. */
export function frameHeader(op: string, len: number, width: 4 | 8 = 4): Buffer {
  const h = Buffer.alloc(1 + width);
  h.write(op, 0, 'latin1');
  if (width === 4) h.writeUInt32BE(len, 1);
  else h.writeBigUInt64BE(BigInt(len), 1);
  return h;
}

export function frame(op: string, body: Buffer): Buffer {
  return Buffer.concat([frameHeader(op, body.length), body]);
}

export function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

const ZEROS = Buffer.alloc(CHUNK);

/** The deterministic byte stream of a 32-byte seed, read in pieces of any size. */
export class KeyStream {
  private readonly cipher: Cipher;

  constructor(seed32: Buffer) {
    if (seed32.length !== 32) throw new RangeError('KeyStream seed must be 32 bytes');
    this.cipher = createCipheriv('aes-128-ctr', seed32.subarray(0, 16), seed32.subarray(16, 32));
  }

  next(n: number): Buffer {
    if (n <= CHUNK) return this.cipher.update(ZEROS.subarray(0, n));
    const parts: Buffer[] = [];
    for (let left = n; left > 0; left -= CHUNK) parts.push(this.cipher.update(ZEROS.subarray(0, Math.min(CHUNK, left))));
    return Buffer.concat(parts, n);
  }
}

/** Response body to a 'Q' request body (respLen is its first 4 bytes). */
export function answerFor(requestBody: Buffer): Buffer {
  if (requestBody.length < 4) throw new ProtocolError('Q body shorter than 4 bytes');
  const respLen = requestBody.readUInt32BE(0);
  if (respLen > MAX_BUFFERED) throw new ProtocolError(`Q asks for ${respLen} bytes`);
  return new KeyStream(sha256(requestBody)).next(respLen);
}

/** The stream a 'D' frame with this 16-byte seed downloads. */
export function downloadStream(seed16: Buffer): KeyStream {
  return new KeyStream(sha256(seed16));
}

export function downloadBody(size: number, seed16: Buffer): Buffer {
  const b = Buffer.alloc(DOWNLOAD_BODY_LEN);
  b.writeBigUInt64BE(BigInt(size), 0);
  seed16.copy(b, 8, 0, 16);
  return b;
}

/** Running byte count and sha256 of one direction of a connection. */
export class Tally {
  bytes = 0;
  private readonly hash: Hash = createHash('sha256');
  private final: string | null = null;

  update(b: Buffer): void {
    if (this.final !== null) throw new Error('Tally already digested');
    this.bytes += b.length;
    this.hash.update(b);
  }

  /** Hex digest; later calls return the same value. */
  digest(): string {
    this.final ??= this.hash.digest('hex');
    return this.final;
  }
}

/** Reproducible pseudo-random numbers: the KeyStream of sha256(label). */
export class Prng {
  private readonly ks: KeyStream;
  private buf: Buffer = Buffer.alloc(0);
  private off = 0;

  constructor(label: string) {
    this.ks = new KeyStream(sha256(Buffer.from(label)));
  }

  bytes(n: number): Buffer {
    return this.ks.next(n);
  }

  u32(): number {
    if (this.off + 4 > this.buf.length) {
      this.buf = this.ks.next(4096);
      this.off = 0;
    }
    const v = this.buf.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }

  /** Integer in [min, max], both inclusive (the small modulo bias is irrelevant for sizes). */
  int(min: number, max: number): number {
    if (max < min) throw new RangeError(`empty range [${min}, ${max}]`);
    const r53 = this.u32() * 0x200000 + (this.u32() >>> 11); // 53 random bits: exact in a double
    return min + (r53 % (max - min + 1));
  }
}

/** How a service connection ended, as logged. */
export type EndReason = 'fin' | 'rst' | 'error' | 'protocol-error' | 'sigterm';

/** One line of the service log: one connection, as the service saw it. */
export interface ServiceLogLine {
  peer: string; // client ip:port
  port: number; // service port
  rxBytes: number;
  rxSha256: string;
  txBytes: number;
  txSha256: string;
  ops: number; // complete frames read
  end: EndReason;
  open: boolean; // still open when logged (SIGTERM)
}

/** One line of the client log: one session (= one connection), as the client saw it. */
export interface ClientLogLine {
  session: number;
  kind: string;
  local: string | null; // ip:port, null when it never connected
  remote: string;
  txBytes: number;
  txSha256: string;
  rxBytes: number;
  rxSha256: string;
  ok: boolean;
  error: string | null;
  ms: number;
  /** When its connection was established at the client (wall ms; null: never). */
  connectedAtMs?: number | null;
  /** When the session ended at the client (wall ms). */
  endAtMs?: number;
  /** Longest pause of progress (received bytes or bytes taken by the socket), and its start (wall ms). */
  maxGapMs?: number;
  maxGapAtMs?: number;
  /** Request/response and idle sessions: when each request was written and its whole reply read (wall ms; null: never). */
  requests?: RequestTimes[];
}
