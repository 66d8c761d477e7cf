// `t2cp status`: a role's state through its control socket — the primary
// agent (no detector, as under a cluster manager) and the backup's control
// endpoint (over a stand-in for the backup node: the engine needs root). Real
// UDP on 127.0.0.1, ephemeral ports; the CLI itself as a process.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PrimaryAgent } from '../../src/agent/primary-node.js';
import { BackupControl, type TakeoverTarget } from '../../src/backup/control.js';
import type { TakeoverRecord } from '../../src/backup/recovery.js';
import type { BackupState } from '../../src/control/bodies.js';
import { requestStandDown } from '../../src/control/stand-down-request.js';
import { requestStatus } from '../../src/control/status-request.js';
import type { Logger } from '../../src/log.js';
import type { Endpoint } from '../../src/options.js';
import { rejectionOf } from './rejection.js';

const LO = '127.0.0.1';
const quiet: Logger = { info: () => {}, warn: () => {}, error: () => {} };
const cli = path.resolve('dist/src/cli.js');
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function keyFile(): { file: string; key: Buffer } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 't2cp-status-'));
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  const key = randomBytes(32);
  const file = path.join(dir, 'key');
  fs.writeFileSync(file, key.toString('hex') + '\n', { mode: 0o600 });
  return { file, key };
}

async function agent(key: Buffer, service = { alive: true, listening: true }): Promise<{ agent: PrimaryAgent; at: Endpoint }> {
  const a = new PrimaryAgent({ instance: 'test', key, listen: { address: LO, port: 0 }, intervalMs: 10, selfFenceAfterMs: 0 },
    { engage: () => {}, release: () => {} }, quiet, () => service);
  await a.start();
  cleanups.push(() => a.stop());
  return { agent: a, at: a.address() };
}

const flows = {
  synchronised: 3, unprotected: 2, shed: 1, replicaBehind: 1, replicaStopped: 0, diverged: 1,
  comparison: { 7000: { policy: 'strict' as const, identical: 1, diverged: 1, gaveUp: 0, bytesCompared: 5120, bytesUnverified: 0, open: 2, bytesOpen: 300 } },
  divergences: [{ flow: '198.18.0.2:40000->:7000', kind: 'bytes' as const, offset: 12, exact: true, primary: '4f2a\\x0a', replica: null }],
};

/** The backup node as the control endpoint sees it: a state, and a takeover that makes it active. */
function backupNode(): TakeoverTarget & { current: BackupState } {
  const node = {
    current: 'standby' as BackupState,
    state: () => node.current,
    takeover: async () => {
      node.current = 'active';
      return { record: 'takeover' } as unknown as TakeoverRecord;
    },
    flows: () => flows,
    liveFlows: () => undefined,
    onTakeoverFinal: () => {},
    supply: () => {},
    udpRecords: () => {},
  };
  return node;
}

/** The CLI as its own process; asynchronous, so the agent in this process can answer it. */
function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, 'status', ...args], { encoding: 'utf8', timeout: 10_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
  });
}

describe('t2cp status', () => {
  it('the primary agent says serving, then stood-down after a stand-down, with its service and epoch', async () => {
    const { key } = keyFile();
    const { at } = await agent(key, { alive: true, listening: false });
    expect(await requestStatus({ to: at, role: 'primary', key, timeoutMs: 2000 }))
      .toEqual({ role: 'primary', state: 'serving', epoch: 0, service: { alive: true, listening: false } });
    await requestStandDown({ agent: at, key, epoch: 4, timeoutMs: 2000 });
    expect(await requestStatus({ to: at, role: 'primary', key, timeoutMs: 2000 })).toMatchObject({ state: 'stood-down', epoch: 4 });
  });

  it('the backup says standby, then active after a takeover', async () => {
    const { file, key } = keyFile();
    const node = backupNode();
    const control = await BackupControl.open({ keyFile: file, port: 0, instance: 'test', heartbeatMs: 1000 }, node, quiet);
    cleanups.push(() => control.close());
    const to = { address: LO, port: control.address().port };
    expect(await requestStatus({ to, role: 'backup', key, timeoutMs: 2000 })).toEqual({ role: 'backup', state: 'standby', epoch: 0, flows });
    node.current = 'active';
    expect(await requestStatus({ to, role: 'backup', key, timeoutMs: 2000 })).toEqual({ role: 'backup', state: 'active', epoch: 0, flows });
    const line = await runCli(['--key-file', file, '--role', 'backup', '--control', `${LO}:${to.port}`, '--timeout', '2000']);
    // With the determinism report: a line per compared port, one per recent divergence.
    expect(line.stdout).toBe('t2cp: backup active (epoch 0; flows synchronised 3, unprotected 2 (shed 1, replica behind 1, replica stopped 0, diverged 1))\n' +
      '  port 7000 (strict): 1 identical, 1 diverged, 0 no longer compared, 2 open and alike so far; 5420 bytes compared\n' +
      '  diverged 198.18.0.2:40000->:7000 at 12 (bytes): primary "4f2a\\x0a", replica not held\n');
  });

  it('asking the wrong role is refused; the wrong key or nobody listening times out and says why', async () => {
    const { key } = keyFile();
    const { at } = await agent(key);
    const wrongRole = await rejectionOf(requestStatus({ to: at, role: 'backup', key, timeoutMs: 2000 }));
    expect(wrongRole.code).toBe('T2CP_REFUSED');
    expect(wrongRole.message).toMatch(/answered as a primary in state 'serving', not as the backup asked for/);
    const wrongKey = await rejectionOf(requestStatus({ to: at, role: 'primary', key: randomBytes(32), timeoutMs: 300 }));
    expect(wrongKey.code).toBe('T2CP_TIMEOUT');
    expect(wrongKey.message).toMatch(/no status from the primary at 127\.0\.0\.1:\d+ within 300 ms/);
  });

  it('the command prints one line, or JSON, and exits 1 with a stable code when nobody answers', async () => {
    const { file, key } = keyFile();
    const { at } = await agent(key);
    const line = await runCli(['--key-file', file, '--role', 'primary', '--agent', `${LO}:${at.port}`]);
    expect(line.stderr).toBe('');
    expect(line.code).toBe(0);
    expect(line.stdout).toBe('t2cp: primary serving (epoch 0; service alive, listening)\n');
    const json = await runCli(['--key-file', file, '--role', 'primary', '--agent', `${LO}:${at.port}`, '--json']);
    expect(JSON.parse(json.stdout)).toEqual({ role: 'primary', state: 'serving', epoch: 0, service: { alive: true, listening: true } });
    // Nobody on the backup's port: the agent's port is free again once it stopped.
    await cleanups.pop()!();
    const none = await runCli(['--key-file', file, '--role', 'backup', '--control', `${LO}:${at.port}`, '--timeout', '300']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no status from the backup at 127\.0\.0\.1:\d+ within 300 ms: is `t2cp backup` running .* \[T2CP_TIMEOUT\]\n$/);
    expect((await runCli(['--key-file', file, '--role', 'detector'])).code).toBe(2);
  });
});
