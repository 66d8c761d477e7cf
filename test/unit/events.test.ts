// The event stream (src/events.ts) on a Unix socket in a temporary directory, without root:
// each level gets what the paper's level says, a path in use is refused, a stale one replaced.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { EventStream, type EventLevel } from '../../src/events.js';
import { T2cpError } from '../../src/errors.js';
import type { Logger } from '../../src/log.js';

const log = { info: () => {}, warn: () => {}, error: () => {}, debug: () => {} } as unknown as Logger;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 't2cp-events-'));
const streams: EventStream[] = [];

async function open(file: string): Promise<EventStream> {
  const s = await EventStream.open(file, { role: 'backup', instance: 'unit', digest: () => ({ flows: 3 }), log });
  streams.push(s);
  return s;
}

/** A subscriber at `level`; lines() what it got so far. */
async function follow(file: string, level: EventLevel | string): Promise<{ lines: () => Record<string, unknown>[]; close: () => void }> {
  const c = net.connect(file);
  let text = '';
  c.setEncoding('utf8');
  c.on('data', (d: string) => (text += d));
  await new Promise((r) => c.once('connect', r));
  c.write(`${level}\n`);
  await until(() => text.includes('"subscribed"') || text.includes('"error"'));
  return { lines: () => text.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>), close: () => c.destroy() };
}

async function until(ok: () => boolean): Promise<void> {
  for (let i = 0; i < 300 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
}

describe('event stream', () => {
  afterEach(async () => {
    for (const s of streams.splice(0)) await s.close();
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('strong gets every flow change, weak new and closed flows, every level the state changes', async () => {
    const file = path.join(dir, 'a.sock');
    const s = await open(file);
    const strong = await follow(file, 'strong');
    const weak = await follow(file, 'weak');
    const inc = await follow(file, 'incremental');
    s.flow({ event: 'new', flow: '198.18.0.2:40000->:7000' }, true);
    s.flow({ event: 'synchronised', flow: '198.18.0.2:40000->:7000' }, false);
    s.flow({ event: 'closed', flow: '198.18.0.2:40000->:7000' }, true);
    s.state('backup', 'standby', 'active', 1);
    await until(() => strong.lines().length >= 5 && weak.lines().length >= 4 && inc.lines().some((l) => l.type === 'digest'));
    const events = (f: typeof strong) => f.lines().filter((l) => l.type === 'flow').map((l) => l.event);
    expect(events(strong)).toEqual(['new', 'synchronised', 'closed']);
    expect(events(weak)).toEqual(['new', 'closed']);
    expect(events(inc)).toEqual([]);
    for (const f of [strong, weak, inc]) expect(f.lines().find((l) => l.type === 'state')).toMatchObject({ subject: 'backup', from: 'standby', to: 'active', epoch: 1, role: 'backup', instance: 'unit' });
    expect(inc.lines().find((l) => l.type === 'digest')).toMatchObject({ flows: 3, level: 'incremental' });
    for (const f of [strong, weak, inc]) f.close();
  });

  it('an unknown level is answered with an error line and the end', async () => {
    const file = path.join(dir, 'b.sock');
    await open(file);
    const f = await follow(file, 'loud');
    expect(f.lines()[0]).toMatchObject({ type: 'error' });
    expect(String(f.lines()[0]!.error)).toMatch(/unknown level 'loud': give one of strong, weak, incremental/);
  });

  it('a path in use is refused; a stale socket file is replaced; a missing directory named', async () => {
    const file = path.join(dir, 'c.sock');
    const s = await open(file);
    const err = await EventStream.open(file, { role: 'gateway', instance: 'x', digest: () => ({}), log }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(T2cpError);
    expect((err as T2cpError).message).toBe(`--events ${file}: in use by a running process: give another --events PATH, or stop it`);
    await s.close();
    streams.splice(streams.indexOf(s), 1);
    // A socket file left by a process that died (bound, nobody listening any more).
    const staleFile = path.join(dir, 'd.sock');
    execFileSync('python3', ['-c', `import socket; s=socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(staleFile)})`]);
    fs.writeFileSync(path.join(dir, 'plain'), 'x');
    await open(staleFile);
    const missing = path.join(dir, 'nowhere', 'e.sock');
    await expect(EventStream.open(missing, { role: 'backup', instance: 'x', digest: () => ({}), log })).rejects.toThrow(/no directory .*nowhere: create it/);
    await expect(EventStream.open(path.join(dir, 'plain'), { role: 'backup', instance: 'x', digest: () => ({}), log })).rejects.toThrow(/not a socket/);
  });

  it('the role stopping ends `t2cp events` with exit 1 and the reason; a signal ends it with 0', async () => {
    const file = path.join(dir, 'f.sock');
    const s = await open(file);
    const run = (): { code: Promise<number | null>; out: () => string; err: () => string; kill: () => void } => {
      const child = spawn('node', [path.resolve('dist/src/cli.js'), 'events', '--socket', file, '--level', 'weak']);
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d));
      child.stderr.on('data', (d: Buffer) => (err += d));
      return { code: new Promise((r) => child.once('exit', (c) => r(c))), out: () => out, err: () => err, kill: () => child.kill('SIGTERM') };
    };
    const byRole = run();
    const bySignal = run();
    await until(() => byRole.out().includes('"subscribed"') && bySignal.out().includes('"subscribed"'));
    bySignal.kill();
    expect(await bySignal.code).toBe(0);
    s.state('backup', 'standby', 'active', 1);
    await s.close();
    streams.splice(streams.indexOf(s), 1);
    expect(await byRole.code).toBe(1);
    expect(byRole.out()).toMatch(/"type":"closed"/);
    expect(byRole.err()).toContain(`${file}: the event stream ended: the role stopped (closed); follow it again once the role is back`);
  });
});
