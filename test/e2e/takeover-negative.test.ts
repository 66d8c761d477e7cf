// What must NOT cause a takeover, on the testbed with the whole deployment
// running (detector, agent, backup) and sessions flowing through the primary:
// forged, stale (replayed from long ago) and replayed-counter TAKEOVER
// messages sent to the backup's control port, and heartbeats delayed by a
// paused agent within the hard timeout. The primary keeps serving (its
// segments carry DSCP CS1 here) and the sessions end byte-exact.
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { FROM_PRIMARY, markPrimaryReplies } from '../../scripts/failures.js';
import { startClient } from '../../scripts/processes.js';
import { startTakeoverLab } from '../../scripts/takeover-lab.js';
import { distCli } from '../../scripts/t2cp-process.js';
import { compareReplicas, countPackets, readLog, startCapture, type ClientLogLine, type ServiceLogLine } from './harness.js';
import { useLab } from './lab.js';

const PORT = 7000;
const sessions = { seed: 9, sessions: [{ kind: 'rr' as const, times: 4, count: 250, intervalMs: 10 }] };

/** Sends crafted control datagrams from inside the backup namespace (node + the compiled control module). */
async function sendCrafted(tb: Parameters<typeof startTakeoverLab>[0], keyFile: string, port: number): Promise<string> {
  const ctl = distCli().replace(/cli\.js$/, 'control/index.js');
  const script = `
import dgram from 'node:dgram';
import { encode, loadKey } from '${ctl}';
const { key } = loadKey(${JSON.stringify(keyFile)});
const wrong = Buffer.from('${randomBytes(32).toString('hex')}', 'hex');
const s = dgram.createSocket('udp4');
const send = (b) => new Promise((r) => s.send(b, ${port}, '127.0.0.1', r));
const now = Date.now() * 1000, boot = now - 5_000_000;
const body = { epoch: 7, reason: 'attack', planned: false };
await send(encode(wrong, 'gateway:tko', boot, 1, 'TAKEOVER', body));                 // forged
await send(encode(key, 'gateway:tko', boot, 2, 'TAKEOVER', body, now - 10_000_000));  // captured 10 s ago
const status = encode(key, 'intruder', boot, 5, 'STATUS', {});
await send(status);                                                                  // valid, harmless
await send(status);                                                                  // the same bytes again
await send(encode(key, 'intruder', boot, 5, 'TAKEOVER', body));                      // a counter used already
s.close();
console.log('sent');`;
  const r = await tb.exec(tb.ns.backup, ['node', '--input-type=module', '-e', script]);
  if (r.code !== 0) throw new Error(`crafting failed: ${r.stderr}`);
  return r.stdout.trim();
}

describe('takeover: what must not trigger one', () => {
  const lab = useLab('tkoneg');

  it('forged, stale and replayed messages are refused; a delayed heartbeat within the hard timeout is tolerated', async () => {
    const { tb, dir } = lab;
    await markPrimaryReplies(tb);
    // 10 ms heartbeats, dead only after 20 silent intervals (200 ms).
    const pair = await startTakeoverLab(tb, dir, { ports: [PORT], instance: 'tko', intervalMs: 10, hardMisses: 20 });
    const atClient = await startCapture(tb, tb.ns.client, 'c0', `tcp and src host ${tb.addr.vip}`, `${dir}/client.pcap`);
    const client = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, sessions, `${dir}/client.jsonl`, { deadlineMs: 30_000 });
    await new Promise((r) => setTimeout(r, 500));

    expect(await sendCrafted(tb, pair.keyFile, 7391)).toBe('sent');
    // The heartbeat roles run at a raised priority (--nice, default -10): a busy host must not
    // hold their heartbeats and probes back (field 19 of /proc/PID/stat).
    const niceOf = (pid: number | undefined): number => Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[16]);
    expect(niceOf(pair.agent!.child.pid)).toBe(-10);
    expect(niceOf(pair.gateway!.child.pid)).toBe(-10);
    // The agent paused for 80 ms: heartbeats late beyond the soft timeout, well within the hard one.
    const pause = await tb.exec(tb.ns.primary, ['sh', '-c', `kill -STOP ${pair.agent!.child.pid}; sleep 0.08; kill -CONT ${pair.agent!.child.pid}`]);
    expect(pause.code).toBe(0);

    const run = await client.finished;
    await atClient.stop();
    const counters = await pair.backup.counters();
    const states = pair.gateway!.records.filter((r) => r.msg === 'device state').map((r) => r.to);
    await pair.stop();

    expect(run.code, run.stderr).toBe(0);
    expect(pair.backup.records.filter((r) => String(r.msg).startsWith('takeover'))).toEqual([]);
    expect(counters.control_rejected_bad_hmac).toBeGreaterThanOrEqual(1);
    expect(counters.control_rejected_stale).toBeGreaterThanOrEqual(1);
    expect(counters.control_rejected_replay).toBeGreaterThanOrEqual(2);
    // The detector suspected the primary (and probed it), then heard it again: no takeover.
    expect(states).toContain('SUSPECT');
    expect(states).not.toContain('TAKING_OVER');
    expect(states[states.length - 1]).toBe('PRIMARY_ACTIVE');
    // The primary answered everything, the backup nothing; the replica stayed exact.
    expect(await countPackets(`${dir}/client.pcap`, `not (${FROM_PRIMARY})`)).toBe(0);
    const report = compareReplicas(readLog<ServiceLogLine>(pair.logs.primary), readLog<ServiceLogLine>(pair.logs.backup), readLog<ClientLogLine>(`${dir}/client.jsonl`));
    expect(report.mismatches).toEqual([]);
  });
});
