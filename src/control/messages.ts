// Control messages on the wire: one UDP datagram each, authenticated with
// HMAC-SHA256 under the shared key. Pure functions; callers own the socket
// (channel.ts). Layout, integers big-endian:
//
//   'T2CP'(4) | version u8 = 1 | type u8 | senderLen u8 | sender utf8 (1..64)
//   | boot u64 (sender's start, µs since epoch) | counter u64 (per boot, from 1)
//   | sentUs u64 (µs since epoch) | bodyLen u16 | body (JSON object) | HMAC (32)
//
// The hmac covers every byte before it and is the datagram's last 32 bytes.
// decode() looks at nothing but the magic and the version before checking the
// hmac, so no byte an attacker chose is parsed: a datagram changed anywhere past
// the version byte, or cut short, is 'bad-hmac'. Only a datagram shorter than
// the smallest message is 'truncated' before the hmac; after it, 'truncated',
// 'unknown-type' and 'bad-body' mean a key holder sent something malformed.
// Freshness and replays are the ReplayGuard's business (replay.ts).
import { createHmac, timingSafeEqual } from 'node:crypto';
import { bodyFits, MESSAGE_TYPE_NAMES, MessageType, type BodyOf, type MessageTypeName } from './bodies.js';

export const MAGIC = Buffer.from('T2CP', 'ascii');
export const VERSION = 1;
export const HMAC_LEN = 32;
export const MAX_SENDER_BYTES = 64;
const FIXED = 4 + 1 + 1 + 1; // magic, version, type, senderLen
const NUMBERS = 8 + 8 + 8 + 2; // boot, counter, sentUs, bodyLen
/** The smallest message: one-byte sender, empty body. */
export const MIN_LEN = FIXED + 1 + NUMBERS + HMAC_LEN;
/** Largest UDP payload over IPv4 (65535 - 20 - 8). */
export const MAX_DATAGRAM = 65507;

export type DecodeRejection = 'truncated' | 'bad-magic' | 'bad-version' | 'unknown-type' | 'bad-hmac' | 'bad-body';
export const DECODE_REJECTIONS: readonly DecodeRejection[] = ['truncated', 'bad-magic', 'bad-version', 'unknown-type', 'bad-hmac', 'bad-body'];

interface Envelope {
  sender: string;
  /** Sender's start time, µs since epoch: a new boot restarts the counter. */
  boot: number;
  counter: number;
  /** Wall clock µs since epoch when sent. */
  sentUs: number;
}

/** A decoded message; `type` tells the body's shape (`if (m.type === 'TAKEOVER') m.body.epoch`). */
export type Message = { [K in MessageTypeName]: Envelope & { type: K; body: BodyOf[K] } }[MessageTypeName];
export type MessageOf<K extends MessageTypeName> = Extract<Message, { type: K }>;

export type DecodeResult = { ok: true; msg: Message } | { ok: false; reason: DecodeRejection };

function hmac(key: Buffer, data: Buffer): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

function writeU64(buf: Buffer, value: number, at: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${what} ${value} is not a non-negative safe integer`);
  buf.writeBigUInt64BE(BigInt(value), at);
}

/**
 * One signed datagram. `sentUs` defaults to now (wall clock); tests pass an old
 * one to make a stale message. Throws RangeError for a sender name outside
 * 1..64 UTF-8 bytes or a body too large for a datagram (a programming error).
 */
export function encode<K extends MessageTypeName>(
  key: Buffer, sender: string, boot: number, counter: number, type: K, body: BodyOf[K], sentUs: number = Date.now() * 1000,
): Buffer {
  const senderBytes = Buffer.from(sender, 'utf8');
  if (senderBytes.length < 1 || senderBytes.length > MAX_SENDER_BYTES)
    throw new RangeError(`sender name '${sender}' must be 1..${MAX_SENDER_BYTES} UTF-8 bytes`);
  const bodyBytes = Buffer.from(JSON.stringify(body), 'utf8');
  const len = FIXED + senderBytes.length + NUMBERS + bodyBytes.length + HMAC_LEN;
  if (len > MAX_DATAGRAM) throw new RangeError(`${type} message of ${len} bytes does not fit a datagram (max ${MAX_DATAGRAM})`);
  const buf = Buffer.alloc(len);
  MAGIC.copy(buf, 0);
  buf[4] = VERSION;
  buf[5] = MessageType[type];
  buf[6] = senderBytes.length;
  senderBytes.copy(buf, FIXED);
  let at = FIXED + senderBytes.length;
  writeU64(buf, boot, at, 'boot');
  writeU64(buf, counter, at + 8, 'counter');
  writeU64(buf, sentUs, at + 16, 'sentUs');
  buf.writeUInt16BE(bodyBytes.length, at + 24);
  at += NUMBERS;
  bodyBytes.copy(buf, at);
  hmac(key, buf.subarray(0, len - HMAC_LEN)).copy(buf, len - HMAC_LEN);
  return buf;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function readU64(buf: Buffer, at: number): number | undefined {
  const v = buf.readBigUInt64BE(at);
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : undefined;
}

/** Check and parse one datagram. Never throws: a bad datagram is a reason, for a counter. */
export function decode(buf: Buffer, key: Buffer): DecodeResult {
  const no = (reason: DecodeRejection): DecodeResult => ({ ok: false, reason });
  if (buf.length < MIN_LEN) return no('truncated');
  if (!buf.subarray(0, 4).equals(MAGIC)) return no('bad-magic');
  if (buf[4] !== VERSION) return no('bad-version');
  const hmacAt = buf.length - HMAC_LEN;
  if (!timingSafeEqual(hmac(key, buf.subarray(0, hmacAt)), buf.subarray(hmacAt))) return no('bad-hmac');
  // Authenticated from here on.
  const type = MESSAGE_TYPE_NAMES.get(buf[5]!);
  if (type === undefined) return no('unknown-type');
  const senderLen = buf[6]!;
  if (senderLen < 1 || senderLen > MAX_SENDER_BYTES) return no('bad-body');
  const numbersAt = FIXED + senderLen;
  const bodyAt = numbersAt + NUMBERS;
  if (bodyAt > hmacAt) return no('truncated');
  const bodyLen = buf.readUInt16BE(numbersAt + 24);
  if (bodyAt + bodyLen > hmacAt) return no('truncated');
  if (bodyAt + bodyLen < hmacAt) return no('bad-body'); // bytes between body and hmac
  let sender: string;
  let body: unknown;
  try {
    sender = utf8.decode(buf.subarray(FIXED, numbersAt));
    body = JSON.parse(utf8.decode(buf.subarray(bodyAt, hmacAt)));
  } catch {
    return no('bad-body');
  }
  const boot = readU64(buf, numbersAt);
  const counter = readU64(buf, numbersAt + 8);
  const sentUs = readU64(buf, numbersAt + 16);
  if (boot === undefined || counter === undefined || sentUs === undefined || counter < 1) return no('bad-body');
  if (!bodyFits(type, body)) return no('bad-body');
  return { ok: true, msg: { type, sender, boot, counter, sentUs, body } as Message };
}
