import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MessageType, type BodyOf, type MessageTypeName } from '../../src/control/bodies.js';
import { loadKey, parseKey } from '../../src/control/key.js';
import { decode, encode, HMAC_LEN, MIN_LEN, type DecodeResult } from '../../src/control/messages.js';
import { ReplayGuard } from '../../src/control/replay.js';
import { T2cpError } from '../../src/errors.js';

const key = Buffer.from('00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff', 'hex');
const other = Buffer.alloc(32, 7);
const NOW = 1_700_000_000_000_000;
const BOOT = NOW - 60_000_000;

const samples: { [K in MessageTypeName]: BodyOf[K] } = {
  HEARTBEAT: { alive: true, listening: true, fenced: false, epoch: 0 },
  PROBE: { seq: 7, epoch: 0, active: 'primary' },
  PROBE_REPLY: { alive: true, listening: false, fenced: false, epoch: 0, seq: 7 },
  TAKEOVER: { epoch: 1, reason: 'host silent for 30 ms', planned: false },
  TAKEOVER_REPORT: { epoch: 1, ok: true, flows: 12, steps: [{ name: 'freeze', us: 150 }] },
  STAND_DOWN: { epoch: 1 },
  STAND_DOWN_ACK: { epoch: 1 },
  BACKUP_HEARTBEAT: { state: 'standby', epoch: 0 },
  STATUS: {},
  STATUS_REPLY: { state: 'PRIMARY_ACTIVE', epoch: 0, active: 'primary', backup: 'standby' },
  NODE_STATUS: { role: 'primary', state: 'stood-down', epoch: 2, service: { alive: true, listening: true } },
  RESUPPLY_REQUEST: { client: '198.18.0.2', clientPort: 40000, vipPort: 7000, from: 4294967000, bytes: 1448 },
  RESUPPLY_DATA: { packet: Buffer.alloc(940, 0x45).toString('base64') },
  UDP_MANIFEST_REQUEST: { after: 12_345, fromNow: false },
  // A full one: 512 records (addon/binding_gateway.cc kUdpManifestRecords).
  UDP_MANIFEST: { boot: BOOT, first: 12_345, next: 12_857, lost: 0, more: true, cut: false, records: Buffer.alloc(512 * 16, 0xa5).toString('base64') },
  UDP_RESUPPLY_REQUEST: { records: '12346,12350' },
};

/** Recompute the MAC, as a key holder who sends something malformed would. */
function resign(buf: Buffer, k = key): Buffer {
  const out = Buffer.from(buf);
  createHmac('sha256', k).update(out.subarray(0, out.length - HMAC_LEN)).digest().copy(out, out.length - HMAC_LEN);
  return out;
}

function reason(r: DecodeResult): string {
  return r.ok ? 'ok' : r.reason;
}

/** A well-signed datagram whose body is `json` verbatim, for type `type`. */
function withBody(type: number, json: string): Buffer {
  const base = encode(key, 'gw', BOOT, 1, 'STATUS', {}, NOW);
  const head = base.subarray(0, base.length - HMAC_LEN - 2 - 2); // up to bodyLen ('{}' is 2 bytes)
  const body = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(2);
  len.writeUInt16BE(body.length);
  const buf = Buffer.concat([head, len, body, Buffer.alloc(HMAC_LEN)]);
  buf[5] = type;
  return resign(buf);
}

describe('control messages', () => {
  it('round-trips every type', () => {
    for (const [type, body] of Object.entries(samples) as [MessageTypeName, never][]) {
      const r = decode(encode(key, 'gateway:main', BOOT, 42, type, body, NOW), key);
      expect(r, type).toEqual({ ok: true, msg: { type, sender: 'gateway:main', boot: BOOT, counter: 42, sentUs: NOW, body } });
    }
  });

  it('a RESUPPLY_DATA datagram with the largest piece fits one 1500-byte frame (no IP fragments)', () => {
    // 900 payload bytes (kResupplyPiece, addon/binding.cc) behind 20 + 60 bytes of headers, the longest sender name.
    const packet = Buffer.alloc(20 + 60 + 900, 0xa5).toString('base64');
    const datagram = encode(key, 'g'.repeat(64), BOOT, 1, 'RESUPPLY_DATA', { packet }, NOW);
    expect(datagram.length).toBeLessThanOrEqual(1500 - 20 - 8);
  });

  it('refuses with each reason', () => {
    const good = encode(key, 'gw', BOOT, 1, 'TAKEOVER', samples.TAKEOVER, NOW);
    expect(reason(decode(good.subarray(0, MIN_LEN - 1), key))).toBe('truncated');
    expect(reason(decode(Buffer.concat([Buffer.from('HTTP'), good.subarray(4)]), key))).toBe('bad-magic');
    const v2 = Buffer.from(good);
    v2[4] = 2;
    expect(reason(decode(v2, key))).toBe('bad-version');
    expect(reason(decode(good, other))).toBe('bad-hmac');
    const t99 = Buffer.from(good);
    t99[5] = 99;
    expect(reason(decode(resign(t99), key))).toBe('unknown-type');
    expect(reason(decode(withBody(MessageType.TAKEOVER, '{"epoch":1,"reason":"x"}'), key))).toBe('bad-body'); // no 'planned'
    expect(reason(decode(withBody(MessageType.TAKEOVER, '{"epoch":-1,"reason":"x","planned":true}'), key))).toBe('bad-body');
    expect(reason(decode(withBody(MessageType.STATUS, '{not json'), key))).toBe('bad-body');
    expect(reason(decode(withBody(MessageType.STATUS, '[]'), key))).toBe('bad-body');
    expect(reason(decode(withBody(MessageType.BACKUP_HEARTBEAT, '{"state":"asleep","epoch":0}'), key))).toBe('bad-body');
    expect(reason(decode(withBody(MessageType.STATUS, '{}'), key))).toBe('ok');
    // Declared lengths that do not match the datagram, under a valid MAC.
    const bodyLenAt = good.length - HMAC_LEN - Buffer.byteLength(JSON.stringify(samples.TAKEOVER)) - 2;
    const long = Buffer.from(good);
    long.writeUInt16BE(long.readUInt16BE(bodyLenAt) + 1, bodyLenAt);
    expect(reason(decode(resign(long), key))).toBe('truncated');
    const short = Buffer.from(good);
    short.writeUInt16BE(short.readUInt16BE(bodyLenAt) - 1, bodyLenAt);
    expect(reason(decode(resign(short), key))).toBe('bad-body');
    const zeroSender = Buffer.from(good);
    zeroSender[6] = 0;
    expect(reason(decode(resign(zeroSender), key))).toBe('bad-body');
  });

  it('a byte changed anywhere past the version, or a datagram cut short, fails the MAC', () => {
    const good = encode(key, 'primary:main', BOOT, 5, 'TAKEOVER', samples.TAKEOVER, NOW);
    for (let i = 0; i < good.length; i++) {
      const bad = Buffer.from(good);
      bad[i]! ^= 0x01;
      expect(reason(decode(bad, key)), `byte ${i}`).toBe(i < 4 ? 'bad-magic' : i === 4 ? 'bad-version' : 'bad-hmac');
    }
    expect(reason(decode(good.subarray(0, good.length - 1), key))).toBe('bad-hmac');
    expect(reason(decode(Buffer.concat([good, Buffer.from([0])]), key))).toBe('bad-hmac');
  });

  it('encode refuses sender names outside 1..64 bytes', () => {
    expect(() => encode(key, '', BOOT, 1, 'STATUS', {})).toThrow(RangeError);
    expect(() => encode(key, 'é'.repeat(33), BOOT, 1, 'STATUS', {})).toThrow(/1\.\.64/);
    expect(() => encode(key, 'x'.repeat(64), BOOT, 1, 'STATUS', {})).not.toThrow();
  });
});

describe('ReplayGuard', () => {
  const stamp = (over: Partial<{ type: MessageTypeName; sender: string; boot: number; counter: number; sentUs: number }> = {}) =>
    ({ type: 'HEARTBEAT' as MessageTypeName, sender: 'primary:main', boot: BOOT, counter: 1, sentUs: NOW, ...over });

  it('refuses an identical datagram the second time (replay)', () => {
    const g = new ReplayGuard(() => NOW);
    const d = decode(encode(key, 'gateway:main', BOOT, 9, 'TAKEOVER', samples.TAKEOVER, NOW), key);
    if (!d.ok) throw new Error('decode');
    expect(g.check(d.msg)).toEqual({ ok: true });
    expect(g.check(d.msg)).toEqual({ ok: false, reason: 'replay' });
    expect(g.check({ ...d.msg, counter: 8 })).toEqual({ ok: false, reason: 'replay' });
    expect(g.check({ ...d.msg, counter: 10 })).toEqual({ ok: true });
    expect(g.rejected).toEqual({ replay: 2, stale: 0, 'old-boot': 0 });
  });

  it('refuses an older boot, accepts a newer fresh one', () => {
    const g = new ReplayGuard(() => NOW);
    expect(g.check(stamp({ counter: 100 })).ok).toBe(true);
    expect(g.check(stamp({ boot: BOOT - 1, counter: 500 }))).toEqual({ ok: false, reason: 'old-boot' });
    expect(g.check(stamp({ boot: BOOT + 5_000_000, counter: 1 }))).toEqual({ ok: true });
    expect(g.check(stamp({ boot: BOOT, counter: 101 }))).toEqual({ ok: false, reason: 'old-boot' });
    expect(g.check(stamp({ boot: BOOT + 9_000_000, counter: 1, sentUs: NOW - 3_000_000 }))).toEqual({ ok: false, reason: 'stale' });
  });

  it('wants freshness from unknown senders, and always for TAKEOVER and STAND_DOWN', () => {
    const g = new ReplayGuard(() => NOW);
    expect(g.check(stamp({ sentUs: NOW - 2_500_000 }))).toEqual({ ok: false, reason: 'stale' });
    expect(g.check(stamp({ sentUs: NOW + 1_900_000 })).ok).toBe(true);
    // Same boot, next counter, but old: a heartbeat passes (clocks may disagree), a TAKEOVER does not.
    expect(g.check(stamp({ counter: 2, sentUs: NOW - 10_000_000 })).ok).toBe(true);
    expect(g.check(stamp({ type: 'TAKEOVER', counter: 3, sentUs: NOW - 10_000_000 }))).toEqual({ ok: false, reason: 'stale' });
    expect(g.check(stamp({ type: 'STAND_DOWN', counter: 4, sentUs: NOW + 10_000_000 }))).toEqual({ ok: false, reason: 'stale' });
    expect(g.check(stamp({ type: 'TAKEOVER', counter: 5, sentUs: NOW - 1_000_000 })).ok).toBe(true);
    expect(g.rejected.stale).toBe(3);
  });
});

describe('key file', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 't2cp-key-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, content: string | Buffer, mode = 0o600) => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, content, { mode });
    fs.chmodSync(f, mode);
    return f;
  };
  const errorOf = (f: () => unknown): T2cpError => {
    try {
      f();
    } catch (e) {
      expect(e).toBeInstanceOf(T2cpError);
      expect((e as T2cpError).code).toBe('T2CP_CONFIG');
      return e as T2cpError;
    }
    throw new Error('expected an error');
  };

  it('reads hex (whitespace around ignored) and raw bytes', () => {
    expect(loadKey(write('hex', `  ${'ab'.repeat(32)}\n`))).toEqual({ key: Buffer.alloc(32, 0xab) });
    const raw = Buffer.from([...Array(20).keys()].map((i) => (i * 37 + 200) & 0xff));
    expect(loadKey(write('raw', raw)).key).toEqual(raw);
  });

  it('refuses short or odd keys and missing files, naming the file and the fix', () => {
    expect(errorOf(() => loadKey(write('short', 'abcd'.repeat(7)))).message).toMatch(/short.*28 hex digits.*openssl rand -hex 32/);
    expect(errorOf(() => loadKey(write('odd', 'a'.repeat(33)))).message).toMatch(/odd/);
    expect(errorOf(() => loadKey(write('tiny', 'not a key'))).message).toMatch(/9 bytes is too short/);
    expect(errorOf(() => loadKey(path.join(dir, 'none'))).message).toMatch(/none cannot be read \(ENOENT\).*chmod 600/);
    expect(() => parseKey(Buffer.alloc(16, 0xff), 'f')).not.toThrow();
  });

  it('warns (does not refuse) when group or others may read the key', () => {
    const r = loadKey(write('loose', 'cd'.repeat(16), 0o644));
    expect(r.key.length).toBe(16);
    expect(r.warning).toMatch(/mode 644.*chmod 600/);
  });
});
