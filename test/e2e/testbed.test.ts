// The testbed itself: real TCP through the VIP, the mirror port's copy on the backup, and
// cleanup that leaves no namespace behind, also when the process dies.

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createTestbed, type Testbed } from '../../scripts/testbed.js';
import { waitFor } from '../../scripts/wait.js';
import {
  compareReplicas, countPackets, frameLengths, readLog, repoRoot, runClient, startCapture, startService,
  waitForExit, type ClientLogLine, type ServiceLogLine, type Workload,
} from './harness.js';

/** Scenario: 20 request/response sessions, 5 MB each way, one idle connection. */
const WORKLOAD: Workload = {
  seed: 7,
  sessions: [
    { kind: 'rr', count: 20, reqSize: [4, 4000], respSize: [1, 20000], times: 20 },
    { kind: 'upload', bytes: 5_000_000 },
    { kind: 'download', bytes: 5_000_000 },
    { kind: 'idle', holdMs: 300 },
  ],
};
const SESSIONS = 23;
const ETH_MAX_FRAME = 1514; // 1500-byte MTU + 14-byte Ethernet header, as tcpdump counts it

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 't2cp-testbed-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function namespacesWith(prefix: string): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith(prefix));
}

/** A dead orphan stays a zombie until init gets round to reaping it: that counts as gone. */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

describe.each([
  { offloads: true, clientAddrs: 1 },
  { offloads: false, clientAddrs: 2 },
])('testbed with offloads=$offloads', ({ offloads, clientAddrs }) => {
  it('carries a workload through the VIP, mirrored to the backup', { timeout: 60_000 }, async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'run-'));
    const tb: Testbed = await createTestbed({ offloads, clientAddrs });
    try {
      expect(tb.addr.clients).toHaveLength(clientAddrs);
      expect(await tb.mac(tb.ns.backup, tb.ifaces.mirror)).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
      const primaryLog = path.join(dir, 'primary.log');
      const clientLog = path.join(dir, 'client.log');
      const pcap = path.join(dir, 'm0.pcap');
      await startService(tb, tb.ns.primary, [7000], primaryLog);
      const capture = await startCapture(tb, tb.ns.backup, tb.ifaces.mirror, 'tcp port 7000', pcap);

      const run = await runClient(tb, tb.ns.client, `${tb.addr.vip}:7000`, WORKLOAD, clientLog,
        { deadlineMs: 40_000, local: tb.addr.clients });
      expect(run.code, `${run.stdout}${run.stderr}`).toBe(0);
      const clients = readLog<ClientLogLine>(clientLog);
      expect(clients).toHaveLength(SESSIONS);
      expect(new Set(clients.map((c) => c.local!.split(':')[0]))).toEqual(new Set(tb.addr.clients));

      // The service logs a connection when it closes, which may trail the client's exit a little.
      const primary = await waitFor(() => {
        const l = readLog<ServiceLogLine>(primaryLog);
        return l.length >= SESSIONS && l;
      }, { timeoutMs: 10_000, what: 'primary log lines' });
      const report = compareReplicas(primary, null, clients);
      expect(report.mismatches).toEqual([]);
      expect(report.clientErrors).toEqual([]);
      expect(report.unknownOnPrimary).toEqual([]);
      expect(primary.every((l) => l.end === 'fin' && !l.open)).toBe(true);

      // Wait for the last FIN/ACK exchange to reach the mirror, then check both directions.
      const closes = 2 * SESSIONS;
      await waitFor(async () => (await countPackets(pcap, 'tcp[tcpflags] & tcp-fin != 0')) >= closes,
        { timeoutMs: 10_000, what: 'FINs on the mirror' });
      const stats = await capture.stop();
      expect(stats.captured).toBeGreaterThan(0);
      expect(await countPackets(pcap, `src host ${tb.addr.vip}`)).toBeGreaterThan(0);
      expect(await countPackets(pcap, `dst host ${tb.addr.vip}`)).toBeGreaterThan(0);
      expect(await countPackets(pcap, `tcp[tcpflags] & tcp-syn != 0 and dst host ${tb.addr.vip}`)).toBe(SESSIONS);
      const longest = Math.max(...await frameLengths(pcap));
      // With offloads the mirror sees GSO super-frames; without, nothing beyond one MTU.
      if (offloads) expect(longest).toBeGreaterThan(ETH_MAX_FRAME);
      else expect(longest).toBeLessThanOrEqual(ETH_MAX_FRAME);
    } finally {
      await tb.teardown();
    }
    await tb.teardown(); // idempotent
    expect(namespacesWith(tb.prefix)).toEqual([]);
  });
});

describe('testbed cleanup', () => {
  it('undoes a half-built testbed and keeps what it did not make', { timeout: 30_000 }, async () => {
    const prefix = `t2${process.pid.toString(16).slice(-4)}x-`;
    execFileSync('ip', ['netns', 'add', `${prefix}pri`]); // makes the fourth step fail
    try {
      await expect(createTestbed({ prefix })).rejects.toThrow(/netns add .*pri/);
      expect(namespacesWith(prefix)).toEqual([`${prefix}pri`]);
    } finally {
      execFileSync('ip', ['netns', 'del', `${prefix}pri`]);
    }
  });

  // A child process builds a testbed, starts a process in it, and then dies in one of these ways.
  const deaths = [
    { how: 'SIGTERM', kill: 'SIGTERM' as const, exit: { code: null, signal: 'SIGTERM' } },
    { how: 'SIGINT', kill: 'SIGINT' as const, exit: { code: null, signal: 'SIGINT' } },
    { how: 'an uncaught exception', kill: null, exit: { code: 1, signal: null } },
  ];
  it.each(deaths)('leaves nothing behind when the process dies of $how', { timeout: 30_000 }, async ({ kill, exit }) => {
    const prefix = `t2${process.pid.toString(16).slice(-3)}${kill ? kill.slice(3, 4) : 'u'}-`.toLowerCase();
    const module = new URL('dist/scripts/testbed.js', `file://${repoRoot}`).href;
    const script = `
      const { createTestbed } = await import(${JSON.stringify(module)});
      const tb = await createTestbed({ prefix: ${JSON.stringify(prefix)} });
      const sleeper = tb.spawn(tb.ns.primary, ['sleep', '60']);
      console.log('up', sleeper.pid);
      ${kill ? 'setTimeout(() => {}, 30000);' : "setTimeout(() => { throw new Error('crash'); }, 100);"}`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    try {
      await waitFor(() => out.includes('up') || child.exitCode !== null, { timeoutMs: 15_000, what: 'child testbed' });
      expect(namespacesWith(prefix)).toHaveLength(5);
      if (kill) child.kill(kill);
      await waitForExit(child, 15_000);
      expect({ code: child.exitCode, signal: child.signalCode }).toEqual(exit);
      expect(namespacesWith(prefix)).toEqual([]);
      const sleeper = Number(/up (\d+)/.exec(out)?.[1]);
      await waitFor(() => !running(sleeper), { timeoutMs: 5_000, what: `pid ${sleeper} to go` });
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      for (const ns of namespacesWith(prefix)) execFileSync('ip', ['netns', 'del', ns]);
    }
  });
});

describe('service in the testbed', () => {
  it('logs a malformed op as protocol-error and open connections on SIGTERM', { timeout: 30_000 }, async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'svc-'));
    const tb = await createTestbed({ offloads: false });
    try {
      const log = path.join(dir, 'service.log');
      const { child: service } = await startService(tb, tb.ns.primary, [7000, 6379], log);
      // One raw connection sends an unknown op; the client holds another open on the second port.
      const raw = await tb.exec(tb.ns.client, [process.execPath, '-e', `
        const s = require('net').connect(7000, '${tb.addr.vip}', () => s.write('Zjunk'));
        s.on('close', () => process.exit(0)); s.on('error', () => {});`], { timeoutMs: 10_000 });
      expect(raw.code, raw.stderr).toBe(0);
      const clientLog = path.join(dir, 'client.log');
      const idle = runClient(tb, tb.ns.client, `${tb.addr.vip}:6379`, { sessions: [{ kind: 'idle', holdMs: 20_000 }] },
        clientLog, { deadlineMs: 25_000 });
      // Established, and its first op read by the service (bytes arrived, none left unread):
      // a SIGTERM before that would log it with no op.
      await waitFor(() => readLog<ServiceLogLine>(log).length === 1 && tb.exec(tb.ns.primary, ['ss', '-Htni', 'state', 'established', 'sport = :6379'])
        .then((r) => /bytes_received:[1-9]/.test(r.stdout) && /^0\s/.test(r.stdout.trim())), { timeoutMs: 10_000, what: 'the idle connection and its first op read' });
      service.kill('SIGTERM');
      expect(await waitForExit(service, 5_000)).toBe(0);
      const lines = readLog<ServiceLogLine>(log);
      expect(lines.map((l) => [l.port, l.end, l.open, l.ops])).toEqual([[7000, 'protocol-error', false, 0], [6379, 'sigterm', true, 1]]);
      const run = await idle;
      expect(run.code).toBe(1); // the service went away under it
      expect(readLog<ClientLogLine>(clientLog)[0].error).toMatch(/closed|ECONNRESET/);
    } finally {
      await tb.teardown();
    }
  });
});
