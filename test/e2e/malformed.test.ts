// Malformed, truncated and stray frames on the mirror port, in the middle of
// real replicated traffic: each is counted under its reason, t2cp keeps
// running, and every real connection's replica stays byte-exact.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { startBackup } from '../../scripts/backup-process.js';
import { compareReplicas, readLog, repoRoot, runClient, startService, type ClientLogLine, type ServiceLogLine } from './harness.js';
import { kernelLeftovers } from './leftovers.js';
import { useLab } from './lab.js';

const run = promisify(execFile);
const PORT = 7000;
/** Frames of each kind sent (craft_frames.py sends one of each per round). */
const ROUNDS = 200;

describe('malformed frames on the mirror port', () => {
  const lab = useLab('malformed');

  it('are counted per reason, never crash t2cp, never disturb the real flows', async () => {
    const { tb, dir } = lab;
    const primary = await startService(tb, tb.ns.primary, [PORT], `${dir}/primary.jsonl`);
    const replica = await startService(tb, tb.ns.backup, [PORT], `${dir}/backup.jsonl`);
    const backup = await startBackup(tb, { ports: [PORT], instance: 'bad' });
    const client = runClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, {
      seed: 5, sessions: [
        { kind: 'rr', times: 10, count: 60, intervalMs: 20, reqSize: [1, 3000], respSize: [1, 20000] },
        { kind: 'upload', bytes: 8 << 20 },
      ],
    }, `${dir}/client.jsonl`, { deadlineMs: 30_000 });

    // While the sessions run, the switch's mirror port also carries garbage
    // aimed at the replicated service: same MACs as the mirrored frames.
    const [primaryMac, gatewayMac] = await Promise.all([tb.mac(tb.ns.primary, 'e0'), tb.mac(tb.ns.gateway, 'gs')]);
    const sent = await run('ip', ['netns', 'exec', tb.ns.sw, 'python3', `${repoRoot}test/e2e/craft_frames.py`,
      'sm', primaryMac, gatewayMac, tb.addr.clients[0]!, tb.addr.vip, String(PORT), String(ROUNDS)], { timeout: 30_000 });
    expect(sent.stdout.trim().split(' ')).toHaveLength(6);

    const done = await client;
    expect(done.code, done.stderr).toBe(0);
    const clientLog = readLog<ClientLogLine>(`${dir}/client.jsonl`);
    const deadline = Date.now() + 10_000;
    while (backup.flows('closed').length < clientLog.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(backup.child.exitCode).toBeNull(); // still running after all of it
    primary.child.kill('SIGTERM');
    replica.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    const counters = await backup.stop();
    expect(backup.child.exitCode).toBe(0);

    for (const reason of ['truncated_ip', 'bad_ip_checksum', 'bad_tcp_header', 'bad_tcp_options'])
      expect(counters[`mirror_parse_${reason}`], reason).toBe(ROUNDS);
    // A client's segment in fragments is reassembled; this "first fragment" cannot be one.
    expect(counters.tcp_reassembly_failed, 'ip_fragment').toBe(ROUNDS);
    // The stray ACK of a flow never seen open: reported once as unprotected,
    // its later frames absorbed.
    expect(backup.flows('unprotected').map((r) => r.reason)).toEqual(['mid-stream']);

    const report = compareReplicas(readLog<ServiceLogLine>(`${dir}/primary.jsonl`), readLog<ServiceLogLine>(`${dir}/backup.jsonl`), clientLog);
    expect(report.mismatches).toEqual([]);
    expect(report.ok).toBe(true);
    expect(backup.flows('synchronised').length).toBe(clientLog.length);
    expect(await kernelLeftovers(tb, 'bad')).toEqual([]);
  }, 90_000);
});
