// Unit tests of the pure parts of the e2e tooling: the protocol framer and streams, and
// compareReplicas. No root, no network.

import { describe, expect, it } from 'vitest';
import {
  CLIENT_OPS, SERVER_OPS, FrameParser, KeyStream, Prng, ProtocolError, answerFor, downloadBody,
  frame, frameHeader, sha256, type ClientLogLine, type FrameHandler, type OpTable, type ServiceLogLine,
} from '../../scripts/protocol.js';
import { compareReplicas } from '../e2e/harness.js';

/** Feeds `pieces` to a parser and returns its calls, bodies joined per frame. */
function parse(ops: OpTable, pieces: Buffer[]): string[] {
  const calls: string[] = [];
  let body: Buffer[] = [];
  const h: FrameHandler = {
    start: (op, len) => { calls.push(`start ${op} ${len}`); body = []; },
    body: (c) => { body.push(Buffer.from(c)); },
    end: (op) => { calls.push(`end ${op} ${sha256(Buffer.concat(body)).toString('hex').slice(0, 16)}`); },
  };
  const p = new FrameParser(ops, h);
  for (const piece of pieces) p.push(piece);
  expect(p.idle).toBe(true);
  return calls;
}

const reqBody = (respLen: number, filler: string): Buffer => {
  const b = Buffer.concat([Buffer.alloc(4), Buffer.from(filler)]);
  b.writeUInt32BE(respLen, 0);
  return b;
};

const clientStream = Buffer.concat([
  frame('Q', reqBody(10, 'hello')),
  frame('U', Buffer.alloc(0)), // empty body: start and end back to back
  frame('U', new Prng('upload').bytes(300)),
  frame('D', downloadBody(1 << 20, Buffer.alloc(16, 7))),
  frame('Q', reqBody(0, '')),
]);

describe('FrameParser', () => {
  const whole = parse(CLIENT_OPS, [clientStream]);

  it('reads every frame of a stream fed whole', () => {
    expect(whole.filter((c) => c.startsWith('start'))).toEqual(['start Q 9', 'start U 0', 'start U 300', 'start D 24', 'start Q 4']);
    expect(whole).toHaveLength(10);
  });

  it('gives the same calls for a split at every byte boundary', () => {
    for (let i = 1; i < clientStream.length; i++) {
      expect(parse(CLIENT_OPS, [clientStream.subarray(0, i), clientStream.subarray(i)]), `split at ${i}`).toEqual(whole);
    }
  });

  it('gives the same calls fed one byte at a time and in random slices', () => {
    expect(parse(CLIENT_OPS, [...clientStream].map((b) => Buffer.from([b])))).toEqual(whole);
    const rnd = new Prng('slices');
    for (let trial = 0; trial < 50; trial++) {
      const pieces: Buffer[] = [];
      for (let off = 0; off < clientStream.length; ) {
        const n = rnd.int(0, 40); // zero-length pushes included
        pieces.push(clientStream.subarray(off, off + n));
        off += n;
      }
      expect(parse(CLIENT_OPS, pieces)).toEqual(whole);
    }
  });

  it('reads the 64-bit length of a B frame across a split header', () => {
    const b = Buffer.concat([frameHeader('B', 5, 8), Buffer.from('abcde'), frameHeader('K', 0)]);
    const want = parse(SERVER_OPS, [b]);
    expect(want[0]).toBe('start B 5');
    for (let i = 1; i < b.length; i++) expect(parse(SERVER_OPS, [b.subarray(0, i), b.subarray(i)])).toEqual(want);
  });

  it('fails on an unknown op and stays failed', () => {
    const p = new FrameParser(CLIENT_OPS, { start() {}, body() {}, end() {} });
    p.push(frame('Q', reqBody(1, '')).subarray(0, 3));
    expect(() => p.push(Buffer.concat([frame('Q', reqBody(1, '')).subarray(3), Buffer.from('X')]))).toThrow(ProtocolError);
    expect(() => p.push(frame('Q', reqBody(1, '')))).toThrow(ProtocolError);
  });

  it('rejects a server op on the client side', () => {
    expect(() => parse(CLIENT_OPS, [frameHeader('A', 0)])).toThrow(/unknown op 0x41/);
  });
});

describe('deterministic streams', () => {
  it('KeyStream gives the same bytes however it is read', () => {
    const seed = sha256(Buffer.from('seed'));
    const once = new KeyStream(seed).next(200_000);
    const ks = new KeyStream(seed);
    const pieces = Buffer.concat([ks.next(1), ks.next(65_535), ks.next(70_000), ks.next(64_464)]);
    expect(pieces.equals(once)).toBe(true); // Buffer.equals: toEqual walks 200 kB element by element
  });

  it('answerFor honours respLen and depends on the whole body', () => {
    expect(answerFor(reqBody(1000, 'a'))).toHaveLength(1000);
    expect(answerFor(reqBody(0, 'a'))).toHaveLength(0);
    expect(answerFor(reqBody(64, 'a'))).toEqual(answerFor(reqBody(64, 'a')));
    expect(answerFor(reqBody(64, 'a'))).not.toEqual(answerFor(reqBody(64, 'b')));
    expect(() => answerFor(Buffer.alloc(3))).toThrow(ProtocolError);
  });

  it('Prng is reproducible per label and stays in range', () => {
    const a = new Prng('x');
    const b = new Prng('x');
    const xs = Array.from({ length: 1000 }, () => a.int(3, 9));
    expect(xs).toEqual(Array.from({ length: 1000 }, () => b.int(3, 9)));
    expect(Math.min(...xs)).toBe(3);
    expect(Math.max(...xs)).toBe(9);
    expect(new Prng('y').int(0, 1e9)).not.toBe(new Prng('x').int(0, 1e9));
  });
});

describe('compareReplicas', () => {
  const h = (s: string): string => sha256(Buffer.from(s)).toString('hex');
  const client = (session: number, local: string, port = 7000, ok = true): ClientLogLine => ({
    session, kind: 'rr', local, remote: `198.18.1.10:${port}`, txBytes: 10 + session, txSha256: h(`up${session}`),
    rxBytes: 20 + session, rxSha256: h(`down${session}`), ok, error: ok ? null : 'boom', ms: 1,
  });
  const server = (c: ClientLogLine, patch: Partial<ServiceLogLine> = {}): ServiceLogLine => ({
    peer: c.local!, port: Number(c.remote.split(':')[1]), rxBytes: c.txBytes, rxSha256: c.txSha256,
    txBytes: c.rxBytes, txSha256: c.rxSha256, ops: 1, end: 'fin', open: false, ...patch,
  });
  const clients = [client(0, '198.18.0.2:40000'), client(1, '198.18.0.2:40001'), client(2, '198.18.0.2:40000', 6379)];

  it('is ok when all three agree, and tells a reused local port apart by service port', () => {
    const r = compareReplicas(clients.map((c) => server(c)), clients.map((c) => server(c)), clients);
    expect(r.mismatches).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.connections.map((c) => c.key)).toEqual(['198.18.0.2:40000>7000', '198.18.0.2:40001>7000', '198.18.0.2:40000>6379']);
    expect(r.connections.every((c) => c.onBackup && c.backupRxMatchesPrimary && c.backupTxMatchesPrimary)).toBe(true);
  });

  it('reports each kind of divergence', () => {
    const primary = [server(clients[0]), server(clients[1], { rxSha256: h('other') }), server(clients[2], { txBytes: 1 })];
    const backup = [server(clients[0], { txSha256: h('late') }), server(clients[1])];
    const r = compareReplicas(primary, backup, clients);
    expect(r.ok).toBe(false);
    expect(r.mismatches).toEqual([
      '198.18.0.2:40000>7000 (session 0 rr): backup tx != primary tx (20 vs 20 bytes)',
      '198.18.0.2:40001>7000 (session 1 rr): primary rx != client tx (11 vs 11 bytes)',
      '198.18.0.2:40001>7000 (session 1 rr): backup rx != primary rx (11 vs 11 bytes)',
      '198.18.0.2:40000>6379 (session 2 rr): primary tx != client rx (1 vs 22 bytes)',
      '198.18.0.2:40000>6379 (session 2 rr): missing on the backup',
    ]);
  });

  it('tells apart connections that reused a 4-tuple by what each client sent, in any log order', () => {
    const first = client(5, '198.18.0.2:40100'), second = client(6, '198.18.0.2:40100');
    const backupLines = [server(second), server(first)]; // closed in another order on the backup
    const r = compareReplicas([server(first), server(second)], backupLines, [second, first]);
    expect(r.mismatches).toEqual([]);
    expect(r.unknownOnPrimary).toEqual([]);
    expect(r.connections.every((c) => c.onBackup && c.backupRxMatchesPrimary && c.backupTxMatchesPrimary)).toBe(true);
    // One of them diverged on the backup: named, not hidden by the other.
    const bad = compareReplicas([server(first), server(second)], [server(first), server(second, { txSha256: h('late') })], [first, second]);
    expect(bad.mismatches).toEqual(['198.18.0.2:40100>7000 (session 6 rr): backup tx != primary tx (26 vs 26 bytes)']);
  });

  it('without a backup log checks only the primary', () => {
    const r = compareReplicas(clients.map((c) => server(c)), null, clients);
    expect(r.ok).toBe(true);
    expect(r.connections.every((c) => !c.onBackup)).toBe(true);
  });

  it('lists connections missing, unknown, logged once too many, and client failures', () => {
    const failed = client(3, '198.18.0.3:40003', 7000, false);
    const stranger = server(client(9, '198.18.0.9:1'));
    const never: ClientLogLine = { ...client(4, 'x'), local: null, ok: false, error: 'connect ECONNREFUSED' };
    const r = compareReplicas([server(clients[0]), server(clients[0]), stranger, server(failed)], [], [clients[0], failed, never]);
    expect(r.mismatches).toEqual([
      '198.18.0.2:40000>7000 (session 0 rr): missing on the backup',
      '198.18.0.3:40003>7000 (session 3 rr): missing on the backup',
    ]);
    // The second line of 198.18.0.2:40000>7000 answers no client connection.
    expect(r.unknownOnPrimary).toEqual(['198.18.0.2:40000>7000', '198.18.0.9:1>7000']);
    expect(r.clientErrors).toEqual(['session 3 (rr): boom', 'session 4 (rr): connect ECONNREFUSED']);
    expect(r.connections).toHaveLength(2);
  });
});
