// Real servers from Debian through a takeover, each driven by its own client
// (scripts/real-servers.ts): the rows of the compatibility table of docs/divergence.md.
// Each: the same server and configuration on both hosts, its clients through
// the VIP, the primary's link down in the middle of their run, the
// detector's takeover, the clients to their end. Checked from the clients'
// side (their own verdict, and what they received against what the server
// holds) and from the backup's record.
//
// Deterministic servers (Redis, memcached, nginx under --divergence length)
// must show no divergence and every connection taken over, byte-exact. A
// server that cannot be replicated (OpenSSH: key exchange draws random
// numbers) must be caught as diverged before the failure and its client
// reset at the takeover, never left waiting.
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { makeSshKeys, memcached, nginx, openAtFailure, redis, runServerTakeover, sshClientArgs, sshd, type ClientProgram, type ServerTakeoverTrial } from '../../scripts/real-servers.js';
import { kernelLeftovers } from './leftovers.js';
import { useLab } from './lab.js';

const PORT = 7000;
const INSTANCE = 'cmp';

/** What every row prints: the record's counts and the backup's flow events that matter. */
function summary(name: string, trial: ServerTakeoverTrial): string {
  const e = trial.record.engine;
  const anomalies = trial.flows.filter((f) => f.msg === 'flow anomaly');
  const unprotected = trial.flows.filter((f) => f.msg === 'flow unprotected');
  return `${name}: clients ${trial.clients.map((c) => `${c.name} exit ${c.code ?? c.signal}`).join(', ')}; ` +
    `record: taken over ${e.flowsTakenOver}, lost ${e.flowsLost}, unprotected ${e.flowsUnprotected}, clients reset ${e.clientsReset}, ` +
    `stall median ${e.stall ? Math.round(e.stall.medianUs / 1000) : '?'} ms; anomalies ${JSON.stringify(anomalies.map((a) => ({ reason: a.reason, kind: a.kind, offset: a.offset, primary: a.primary, replica: a.replica })))}; ` +
    `unprotected ${JSON.stringify(unprotected.map((f) => f.reason))}; after ${JSON.stringify(trial.after)}`;
}

/** A deterministic server's takeover: nothing diverged, nothing lost, unprotected or reset. */
function expectEveryFlowTakenOver(trial: ServerTakeoverTrial, atLeast: number): void {
  const e = trial.record.engine;
  // The determinism report before the failure: the open flows compared and alike, none diverged.
  expect(trial.statusBeforeFailure.comparison[String(PORT)]).toMatchObject({ diverged: 0, gaveUp: 0 });
  expect(trial.statusBeforeFailure.comparison[String(PORT)]!.open).toBeGreaterThanOrEqual(atLeast);
  expect(trial.flows.filter((f) => f.msg === 'flow anomaly')).toEqual([]);
  expect(trial.flows.filter((f) => f.msg === 'flow unprotected')).toEqual([]);
  expect(trial.record.trigger.source).toBe('detector');
  expect(trial.gateway.outcome).toBe('active');
  expect(openAtFailure(trial).length).toBeGreaterThanOrEqual(atLeast);
  expect(e.flowsTakenOver).toBeGreaterThanOrEqual(openAtFailure(trial).length);
  expect(e.flowsLost).toBe(0);
  expect(e.flowsUnprotected).toBe(0);
  expect(e.clientsReset).toBe(0);
}

const REDIS_REQUESTS = 150_000;

/** redis-benchmark through the VIP: 4 connections, REDIS_REQUESTS requests of `command` in all. */
function redisBenchmark(vip: string, ...command: string[]): ClientProgram {
  return {
    name: 'redis-benchmark',
    argv: ['redis-benchmark', '-h', vip, '-p', String(PORT), '-c', '4', '-n', String(REDIS_REQUESTS), ...command],
    // Its progress line ("INCR ...: rps=...") every 250 ms: a second into the run.
    underWay: (out) => (out.stdout.match(/rps=/g) ?? []).length >= 4,
    boundMs: 120_000,
  };
}

describe('compat: Redis with redis-benchmark, a key per request', () => {
  const lab = useLab('cmpredis');

  // INCR of random keys (-r: 10^8 of them, so two connections' requests
  // meet on a key only one after the other): after the takeover the
  // backup's copy holds, summed over every key, the count of INCRs the
  // clients were answered, no more, no less; redis-benchmark saw no error.
  it('every connection is taken over and no INCR is lost or repeated', async () => {
    const { tb, dir } = lab;
    const trial = await runServerTakeover(tb, dir, {
      port: PORT, instance: INSTANCE, server: redis(PORT),
      clients: [redisBenchmark(tb.addr.vip, '-r', '100000000', 'INCR', 'counter:__rand_int__')], expectOpen: 4,
      afterClients: async (tb) => {
        const sum = "local s = 0 for _, k in ipairs(redis.call('KEYS', 'counter:*')) do s = s + tonumber(redis.call('GET', k)) end return s";
        const r = await tb.exec(tb.ns.client, ['redis-cli', '-h', tb.addr.vip, '-p', String(PORT), 'EVAL', sum, '0'], { timeoutMs: 30_000 });
        return { incrs: r.stdout.trim(), code: r.code };
      },
    });
    console.log(summary('redis', trial));
    const bench = trial.clients[0]!;
    console.log(`redis-benchmark: ${bench.stdout.split(/[\r\n]/).filter((l) => /requests completed|throughput summary/.test(l)).join(' | ')}`);
    expect(bench.code, bench.stderr).toBe(0);
    expect(bench.stderr).toBe('');
    expect(bench.stdout).toContain(`${REDIS_REQUESTS} requests completed`);
    expect(trial.after).toEqual({ incrs: String(REDIS_REQUESTS), code: 0 });
    expectEveryFlowTakenOver(trial, 4);
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

describe('compat: Redis with redis-benchmark, one key written by every connection', () => {
  const lab = useLab('cmpredis1');

  // redis-benchmark -t incr: 4 connections INCR the same key. Each server
  // serves the four in its own interleaving, so each connection's replies
  // (the counter's values) differ between the primary and the replica: not
  // a service a replica can follow. Caught as it happens, and the clients
  // of the flows caught are reset at the takeover, none left waiting.
  it('is caught as diverged and its clients reset at the takeover', async () => {
    const { tb, dir } = lab;
    const trial = await runServerTakeover(tb, dir, {
      port: PORT, instance: INSTANCE, server: redis(PORT),
      clients: [redisBenchmark(tb.addr.vip, '-t', 'incr')],
    });
    console.log(summary('redis one key', trial));
    const bench = trial.clients[0]!;
    const anomalies = trial.flowsBeforeFailure.filter((f) => f.msg === 'flow anomaly');
    expect(anomalies.length).toBeGreaterThanOrEqual(1);
    for (const a of anomalies) expect(a).toMatchObject({ reason: 'diverged', kind: 'bytes', exact: true });
    // From the client's side: ended by a reset, not by its own bound.
    expect(bench.code).not.toBe(0);
    expect(bench.stderr).toMatch(/reset by peer/);
    const e = trial.record.engine;
    expect(e.flowsUnprotected).toBeGreaterThanOrEqual(anomalies.length);
    expect(e.clientsReset).toBeGreaterThanOrEqual(e.flowsUnprotected);
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

describe('compat: memcached with memcaslap', () => {
  const lab = useLab('cmpmemc');

  // memcaslap's own verification of every get (-v 1) against what it set. Its rate option (-P)
  // is not honoured: unbounded it runs ~20,000 operations a second, which the replica on the
  // testbed's shared CPUs once trailed by over --max-lag (3 s, the flows given up, reported):
  // a fifth of a CPU keeps it to a rate a replica sustains here.
  it('every connection is taken over and every value read back is the one set', async () => {
    const { tb, dir } = lab;
    const trial = await runServerTakeover(tb, dir, {
      port: PORT, instance: INSTANCE, server: memcached(PORT), expectOpen: 4,
      clients: [{
        name: 'memcaslap',
        argv: ['memcaslap', '-s', `${tb.addr.vip}:${PORT}`, '-T', '1', '-c', '4', '-t', '8s', '-v', '1.0', '-S', '1s', '-b'],
        underWay: (out) => (out.stdout.match(/Get Statistics/g) ?? []).length >= 2,
        boundMs: 60_000,
        cpuPercent: 20,
      }],
    });
    console.log(summary('memcached', trial));
    const slap = trial.clients[0]!;
    console.log(`memcaslap: ${slap.stdout.split('\n').filter((l) => /^(cmd_get|cmd_set|get_misses|verify_\w+|Run time):/.test(l)).slice(-6).join(' | ')} ${slap.stderr}`);
    expect(slap.code, slap.stderr).toBe(0);
    // Its final statistics (the last of each): every get found its key, and the value it had set.
    const stat = (name: string): number => Number([...slap.stdout.matchAll(new RegExp(`^${name}: (\\d+)`, 'gm'))].pop()?.[1]);
    expect(stat('cmd_get')).toBeGreaterThan(0);
    expect(stat('get_misses')).toBe(0);
    expect(stat('verify_misses')).toBe(0);
    expect(stat('verify_failed')).toBe(0);
    expectEveryFlowTakenOver(trial, 4);
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

const PAGES = 200;

/**
 * PAGES pages of 0.7-54 KB and a 48 MB file, with one time for every file
 * (the two copies' ETag and Last-Modified agree), and the two curl clients:
 * the pages over one keep-alive connection at 40 a second, the file at
 * 6 MB/s, each under way within 1-2 s and running for 5-8 s.
 */
function site(dir: string, vip: string): { www: string; got: string; files: string[]; clients: ClientProgram[] } {
  const www = `${dir}/www`;
  const got = `${dir}/got`;
  fs.mkdirSync(www);
  fs.mkdirSync(got);
  const files: string[] = [];
  for (let i = 1; i <= PAGES; i++) {
    fs.writeFileSync(`${www}/page-${i}.html`, randomBytes(512 + ((i * 7919) % 40_000)).toString('base64'));
    files.push(`page-${i}.html`);
  }
  fs.writeFileSync(`${www}/big.bin`, randomBytes(48 << 20));
  files.push('big.bin');
  const t = new Date('2026-01-01T00:00:00Z');
  for (const f of files) fs.utimesSync(`${www}/${f}`, t, t);
  const report = ['-w', '%{http_code} %{size_download} %{num_connects} %{time_total}\\n'];
  return {
    www, got, files,
    clients: [
      {
        name: 'curl keep-alive',
        argv: ['curl', '-sS', '--fail', '--rate', '40/s', ...report, '-o', `${got}/page-#1.html`, `http://${vip}:${PORT}/page-[1-${PAGES}].html`],
        // Its -w lines wait in stdio's buffer until it exits: the pages on disk tell its progress.
        underWay: () => fs.readdirSync(got).filter((f) => f.startsWith('page-')).length > 40,
        boundMs: 60_000,
      },
      {
        name: 'curl download',
        argv: ['curl', '-sS', '--fail', '--limit-rate', '6M', ...report, '-o', `${got}/big.bin`, `http://${vip}:${PORT}/big.bin`],
        underWay: () => fs.existsSync(`${got}/big.bin`) && fs.statSync(`${got}/big.bin`).size > 8 << 20,
        boundMs: 60_000,
      },
    ],
  };
}

/** The files curl wrote whose bytes are not the server's. */
function wrongFiles(www: string, got: string, files: string[]): string[] {
  const sha = (f: string): string => createHash('sha256').update(fs.readFileSync(f)).digest('hex');
  return files.filter((f) => fs.existsSync(`${got}/${f}`) && sha(`${www}/${f}`) !== sha(`${got}/${f}`));
}

describe('compat: nginx with curl, --divergence length', () => {
  const lab = useLab('cmpnginx');

  // Both clients under way at the failure: every byte they wrote to disk is
  // the file's, and neither reconnected (curl reconnects by itself when a
  // keep-alive connection dies: num_connects).
  it('a keep-alive connection and a long download carry on byte-exact', async () => {
    const { tb, dir } = lab;
    const { www, got, files, clients } = site(dir, tb.addr.vip);
    const trial = await runServerTakeover(tb, dir, { port: PORT, instance: INSTANCE, server: nginx(PORT, www), divergence: 'length', clients, expectOpen: 2 });
    console.log(summary('nginx', trial));
    // Client-measured: the longest page of the keep-alive connection (one is under way at the failure).
    const pageTimes = trial.clients[0]!.stdout.trim().split('\n').map((l) => Number(l.split(' ')[3]));
    console.log(`nginx: longest page ${Math.round(Math.max(...pageTimes) * 1000)} ms, median ${Math.round(pageTimes.sort((a, b) => a - b)[pageTimes.length >> 1]! * 1000)} ms`);
    for (const c of trial.clients) expect(c.code, `${c.name}: ${c.stderr}`).toBe(0);
    const transfers = trial.clients.flatMap((c) => c.stdout.trim().split('\n').map((l) => l.split(' ').map(Number)));
    expect(transfers).toHaveLength(PAGES + 1);
    for (const [status] of transfers) expect(status).toBe(200);
    // One connection per curl, through the takeover.
    expect(trial.clients.map((c) => c.stdout.trim().split('\n').reduce((n, l) => n + Number(l.split(' ')[2]), 0))).toEqual([1, 1]);
    expect(files.filter((f) => !fs.existsSync(`${got}/${f}`))).toEqual([]);
    expect(wrongFiles(www, got, files)).toEqual([]);
    expectEveryFlowTakenOver(trial, 2);
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

describe('compat: nginx with curl, --divergence strict, the replica\'s clock a second ahead', () => {
  const lab = useLab('cmpnginxs');

  // What --divergence length is for: the two servers answer in different
  // seconds (here always: libfaketime sets the replica's clock 1 s ahead),
  // so each response's Date: header differs, at the same length. strict
  // reports both connections diverged there, and their clients are reset
  // at the takeover: the download ends short, not hung.
  it('reports each connection diverged in its first Date: header', async () => {
    const { tb, dir } = lab;
    const { www, got, files, clients } = site(dir, tb.addr.vip);
    const trial = await runServerTakeover(tb, dir, { port: PORT, instance: INSTANCE, server: nginx(PORT, www, { replicaClockAheadS: 1 }), clients });
    console.log(summary('nginx strict', trial));
    for (const c of trial.clients) console.log(`${c.name}: exit ${c.code}, ${JSON.stringify(c.stderr.trim())}`);
    const anomalies = trial.flowsBeforeFailure.filter((f) => f.msg === 'flow anomaly');
    expect(anomalies).toHaveLength(2);
    for (const a of anomalies) {
      expect(a).toMatchObject({ reason: 'diverged', kind: 'bytes' });
      // In the first response's first block, where its Date: header is (at ~45). Exact where
      // both sides' bytes were still held (a side more than 4 KiB ahead gives the block): then
      // from the first differing digit of the time, "...:05 GMT\r\n" (as logged, CR LF escaped).
      expect(Number(a.offset)).toBeLessThan(1024);
      if (a.exact) for (const side of [a.primary, a.replica]) expect(String(side)).toMatch(/^[0-9:]* GMT\\x0d\\x0a/);
    }
    // The pages: curl sent its next request again on a new connection when the reset came
    // before any of its answer, or ended (56) when it came within one.
    const pages = trial.clients[0]!;
    const connects = pages.stdout.trim().split('\n').reduce((n, l) => n + Number(l.split(' ')[2]), 0);
    console.log(`nginx strict: the pages' curl made ${connects} connections`);
    if (pages.code === 0) expect(connects).toBe(2);
    else expect(pages.code).toBe(56);
    // The download was reset in the middle (curl: 56, failure receiving network data).
    const download = trial.clients[1]!;
    expect(download.code).toBe(56);
    expect(fs.statSync(`${got}/big.bin`).size).toBeLessThan(48 << 20);
    // Whatever curl wrote came from the primary, or from a new connection to the backup: the files' bytes.
    expect(wrongFiles(www, got, files.filter((f) => f !== 'big.bin'))).toEqual([]);
    const e = trial.record.engine;
    expect(e.flowsTakenOver).toBe(0);
    expect(e.flowsUnprotected).toBe(2);
    expect(e.clientsReset).toBe(2);
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

describe('compat: OpenSSH with ssh', () => {
  const lab = useLab('cmpssh');

  // The same host key on both hosts; key exchange still differs from its
  // first packet (KEXINIT's random cookie, right after the version line).
  it('is caught as diverged at key exchange and its client reset at the takeover, not left waiting', async () => {
    const { tb, dir } = lab;
    const keys = makeSshKeys(`${dir}/keys`);
    const trial = await runServerTakeover(tb, dir, {
      port: PORT, instance: INSTANCE, server: sshd(PORT, keys),
      clients: [{
        name: 'ssh',
        argv: [...sshClientArgs(keys, PORT), `root@${tb.addr.vip}`, 'for i in $(seq 1 40); do echo tick $i; sleep 0.25; done'],
        underWay: (out) => out.stdout.includes('tick 4\n'),
        boundMs: 20_000,
      }],
      // The version line sshd sends first, as ssh-keyscan quotes it ("# host:port SSH-2.0-..."),
      // from the primary's copy over its loopback.
      afterClients: async (tb) => {
        const scan = await tb.exec(tb.ns.primary, ['ssh-keyscan', '-p', String(PORT), '127.0.0.1']);
        return { banner: /^# \S+ (SSH-2\.0-.*)$/m.exec(scan.stderr)?.[1] };
      },
    });
    console.log(summary('ssh', trial));
    const banner = `${String(trial.after.banner)}\r\n`;
    expect(banner).toMatch(/^SSH-2\.0-OpenSSH/);
    const ssh = trial.clients[0]!;
    console.log(`ssh: exit ${ssh.code}, last line ${JSON.stringify(ssh.stdout.trim().split('\n').pop())}, stderr ${JSON.stringify(ssh.stderr.trim())}`);
    const anomalies = trial.flowsBeforeFailure.filter((f) => f.msg === 'flow anomaly');
    expect(anomalies).toHaveLength(1);
    expect(anomalies[0]).toMatchObject({ reason: 'diverged', kind: 'bytes', exact: true });
    // In the cookie: the packet length (4 bytes), padding length, SSH_MSG_KEXINIT, then 16 random bytes.
    expect(Number(anomalies[0]!.offset)).toBeGreaterThanOrEqual(banner.length + 6);
    expect(Number(anomalies[0]!.offset)).toBeLessThan(banner.length + 6 + 16);
    // From the client's side: reset by the takeover, in the middle of its run.
    expect(ssh.code).toBe(255);
    // A reset met on a read ("reset by peer") or on a write (EPIPE once the socket took the RST).
    expect(ssh.stderr).toMatch(/reset by peer|Broken pipe/);
    expect(ssh.stdout).not.toContain('tick 40\n');
    const e = trial.record.engine;
    expect(e.flowsTakenOver).toBe(0);
    expect(e.flowsUnprotected).toBe(1);
    expect(e.clientsReset).toBe(1);
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

