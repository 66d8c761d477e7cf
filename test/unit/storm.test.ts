// The C connection-storm pair of bench/storm against each other and against the TypeScript
// definition of the protocol: byte-exact replies, logs that compareReplicas accepts, and the same
// requests as scripts/client.ts. Loopback only (127.0.0.1, a free high port): no namespaces.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Prng, answerFor, frame, frameHeader, sha256 } from '../../scripts/protocol.js';
import { compareReplicas, readLog, type ClientLogLine, type ServiceLogLine } from '../../scripts/replica-check.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const bin = (name: 'storm_server' | 'storm_client'): string => path.join(root, 'build/storm', name);

interface Summary { sessions: number; ok: number; failed: number; txBytes: number; rxBytes: number; ms: number; errors: string[] }
interface Run { code: number | null; summary: Summary | null; stderr: string }

/** A port nobody listens on right now (the kernel's pick, released again). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Polls `ok` every 10 ms until it holds; throws after `ms`. */
async function waitFor(ok: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function exited(child: ChildProcess, ms: number): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`pid ${child.pid} still running after ${ms} ms`)), ms);
    child.once('exit', (code) => { clearTimeout(t); resolve(code); });
  });
}

function runClient(args: string[], ms = 60_000): Promise<Run> {
  const child = spawn(bin('storm_client'), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  return exited(child, ms).then((code) => {
    let summary: Summary | null = null;
    try { summary = JSON.parse(stdout.trim().split('\n').pop() ?? '') as Summary; } catch { /* stays null */ }
    return { code, summary, stderr };
  });
}

/** Sends `wire` in pieces of `piece` bytes, then FIN; resolves with everything read until the server's FIN. */
function exchange(port: number, wire: Buffer, piece: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const got: Buffer[] = [];
    sock.on('data', (d: Buffer) => got.push(d));
    sock.on('error', reject);
    sock.on('end', () => { sock.destroy(); resolve(Buffer.concat(got)); });
    sock.on('connect', () => {
      for (let off = 0; off < wire.length; off += piece) sock.write(wire.subarray(off, off + piece));
      sock.end();
    });
  });
}

/** The body client.ts's rr() sends for session `index` of a workload with this seed and sizes. */
function nodeClientBody(seed: number, index: number, req: [number, number], resp: [number, number]): Buffer {
  const prng = new Prng(`t2cp-workload/${seed}/${index}`);
  const respLen = prng.int(resp[0], resp[1]);
  const body = Buffer.concat([Buffer.alloc(4), prng.bytes(prng.int(Math.max(4, req[0]), Math.max(4, req[1])) - 4)]);
  body.writeUInt32BE(respLen, 0);
  return body;
}

const qBody = (respLen: number, filler: Buffer): Buffer => {
  const b = Buffer.concat([Buffer.alloc(4), filler]);
  b.writeUInt32BE(respLen, 0);
  return b;
};

// Several source addresses, round robin, as the bench uses them (with one address on loopback the
// kernel hands out local ports again within a run: tcp_tw_reuse=2 reuses TIME-WAIT ports there).
const LOCALS = ['127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4'];

describe('bench/storm', () => {
  let dir = '';
  let port = 0;
  let server: ChildProcess | null = null;
  let serverOut = '';
  const serverLog = (): string => path.join(dir, 'server.jsonl');

  beforeAll(async () => {
    // The same build as scripts/setup.sh; make does nothing when the binaries are up to date.
    const make = spawnSync('make', ['-s', '-C', path.join(root, 'bench/storm')], { encoding: 'utf8', timeout: 120_000 });
    if (make.status !== 0) throw new Error(`make -C bench/storm failed:\n${make.stdout}${make.stderr}`);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 't2cp-storm-'));
    port = await freePort();
    server = spawn(bin('storm_server'), ['--port', String(port), '--log', serverLog()], { stdio: ['ignore', 'pipe', 'inherit'] });
    server.stdout!.setEncoding('utf8').on('data', (d: string) => { serverOut += d; });
    await waitFor(() => {
      if (server!.exitCode !== null) throw new Error(`storm_server exited ${server!.exitCode}`);
      return serverOut.includes('ready\n');
    }, 10_000, 'storm_server ready');
  });

  afterAll(async () => {
    if (server && server.exitCode === null && server.signalCode === null) {
      server.kill('SIGTERM');
      await exited(server, 10_000);
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('answers Q frames with the bytes of answerFor, whatever the segmentation', async () => {
    const bodies = [
      qBody(0, Buffer.alloc(0)), // the shortest body, an empty reply
      qBody(1, Buffer.from('x')),
      qBody(70_000, new Prng('storm/filler').bytes(100)), // a reply over one 64 KiB chunk
      qBody(3000, new Prng('storm/big').bytes(200_000)), // a body over many reads
    ];
    const wire = (bs: Buffer[]): Buffer => Buffer.concat(bs.map((b) => frame('Q', b)));
    const replies = (bs: Buffer[]): Buffer => Buffer.concat(bs.map((b) => { const a = answerFor(b); return Buffer.concat([frameHeader('A', a.length), a]); }));
    // All frames in one write, in odd pieces, and the small ones a byte at a time.
    for (const [bs, piece] of [[bodies, 1 << 20], [bodies, 4099], [bodies.slice(0, 2), 1]] as const) {
      const got = await exchange(port, wire(bs), piece);
      const want = replies(bs);
      expect(got.length).toBe(want.length);
      expect(got.equals(want)).toBe(true);
    }
  });

  it('runs 2000 connections, 100 at once, and both logs agree byte for byte', async () => {
    const clientLog = path.join(dir, 'client.jsonl');
    const run = await runClient(['--server', `127.0.0.1:${port}`, '--connections', '2000', '--concurrency', '100',
      '--local', LOCALS.join(','), '--req-size', '4,16', '--resp-size', '1,16', '--seed', '3', '--log', clientLog, '--deadline-ms', '60000']);
    expect(run.stderr).toBe('');
    expect(run.summary?.errors).toEqual([]);
    expect(run.code).toBe(0);
    expect(run.summary).toMatchObject({ sessions: 2000, ok: 2000, failed: 0 });

    const client = readLog<ClientLogLine>(clientLog);
    expect(client).toHaveLength(2000);
    expect(client.every((l) => l.local?.startsWith(`${LOCALS[l.session % LOCALS.length]}:`))).toBe(true);
    // Every line of a connection the client saw closed is already in the server's log.
    const report = compareReplicas(readLog<ServiceLogLine>(serverLog()), null, client);
    expect(report.mismatches).toEqual([]);
    expect(report.clientErrors).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.connections).toHaveLength(2000);
    expect(report.connections.every((c) => c.primaryRxMatchesClientTx && c.primaryTxMatchesClientRx)).toBe(true);

    // The C client sends what scripts/client.ts sends for the same workload and session.
    for (const line of client.filter((l) => l.session % 97 === 0)) {
      const body = nodeClientBody(3, line.session, [4, 16], [1, 16]);
      expect(line.txSha256).toBe(sha256(frame('Q', body)).toString('hex'));
      const a = answerFor(body);
      expect(line.rxSha256).toBe(sha256(Buffer.concat([frameHeader('A', a.length), a])).toString('hex'));
    }
  });

  it('closes on any op but Q and logs it as a protocol error', async () => {
    const before = readLog<ServiceLogLine>(serverLog()).length;
    await new Promise<void>((resolve) => {
      const sock = net.connect(port, '127.0.0.1', () => sock.write('U\0\0\0\x01z'));
      sock.on('error', () => {});
      sock.on('close', () => resolve());
    });
    await waitFor(() => readLog<ServiceLogLine>(serverLog()).length > before, 5000, 'the log line');
    expect(readLog<ServiceLogLine>(serverLog()).slice(before)).toMatchObject([{ end: 'protocol-error', ops: 0, txBytes: 0, open: false }]);
  });

  it('fails every connection when nothing listens, and exits 1', async () => {
    const run = await runClient(['--server', `127.0.0.1:${await freePort()}`, '--connections', '3', '--concurrency', '3',
      '--log', path.join(dir, 'refused.jsonl'), '--deadline-ms', '5000']);
    expect(run.code).toBe(1);
    expect(run.summary).toMatchObject({ sessions: 3, ok: 0, failed: 3 });
    expect(run.summary?.errors[0]).toMatch(/^0 rr: connect ECONNREFUSED /);
  });

  it('stops at the deadline and logs the connections it never finished', async () => {
    // A server that accepts and never answers.
    const mute = net.createServer(() => {});
    await new Promise<void>((r) => mute.listen(0, '127.0.0.1', () => r()));
    try {
      const log = path.join(dir, 'deadline.jsonl');
      const run = await runClient(['--server', `127.0.0.1:${(mute.address() as net.AddressInfo).port}`, '--connections', '20',
        '--concurrency', '5', '--log', log, '--deadline-ms', '300'], 10_000);
      expect(run.code).toBe(1);
      expect(run.summary).toMatchObject({ sessions: 20, ok: 0, failed: 20 });
      const lines = readLog<ClientLogLine>(log);
      expect(lines).toHaveLength(20);
      expect(lines.every((l) => l.error === 'deadline')).toBe(true);
      expect(lines.filter((l) => l.local === null)).toHaveLength(15); // never started
    } finally {
      mute.close();
    }
  });

  it('logs open connections on SIGTERM and exits 0', async () => {
    const sock = net.connect(port, '127.0.0.1');
    sock.on('error', () => {});
    await new Promise<void>((r) => sock.once('connect', () => r()));
    sock.write(frame('Q', qBody(4, Buffer.alloc(0))));
    await new Promise<void>((r) => sock.once('data', () => r()));
    server!.kill('SIGTERM');
    expect(await exited(server!, 10_000)).toBe(0);
    sock.destroy();
    const last = readLog<ServiceLogLine>(serverLog()).at(-1);
    expect(last).toMatchObject({ end: 'sigterm', open: true, ops: 1, rxBytes: 9, txBytes: 9 });
    expect(readLog<ServiceLogLine>(serverLog()).filter((l) => l.open)).toHaveLength(1);
  });
});
