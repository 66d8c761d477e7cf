// The systemd units (deploy/systemd): `systemd-analyze verify` accepts each (its program mapped
// to this checkout's CLI), and the roles speak systemd's notify protocol as Type=notify and
// WatchdogSec= expect: READY=1 once their work is under way, WATCHDOG=1 every half of
// $WATCHDOG_USEC while they make progress, STOPPING=1 as they stop, every role read through a
// Unix datagram socket standing in for the manager's $NOTIFY_SOCKET. The backup's unit under a
// real systemd (readiness, the watchdog's restart of a stuck packet thread, a takeover that
// outlives it) is in package.test.ts, on the clean Debian 12 root the package is installed in.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { distCli } from '../../scripts/backup-process.js';
import { collect, repoRoot } from '../../scripts/processes.js';
import type { Testbed } from '../../scripts/testbed.js';
import { waitFor } from '../../scripts/wait.js';
import { kernelLeftovers } from './leftovers.js';
import { useLab } from './lab.js';

const ROLES = ['backup', 'gateway', 'primary'] as const;
const WATCHDOG_USEC = 200_000;

/** A stand-in for systemd's notify socket in `ns`: what it received, one message a line. */
function notifySocket(tb: Testbed, ns: string, file: string): { messages: () => string[]; child: ChildProcess } {
  const child = tb.spawn(ns, ['python3', '-u', '-c', [
    'import socket, sys',
    's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
    `s.bind(${JSON.stringify(file)})`,
    'print("ready", flush=True)',
    'while True:',
    '    m = s.recv(4096).decode()',
    '    print(m.replace("\\n", " "), flush=True)',
  ].join('\n')]);
  const out = collect(child);
  return { child, messages: () => out.stdout.split('\n').filter((l) => l && l !== 'ready') };
}

describe('systemd: the units and the notify protocol', () => {
  const lab = useLab('systemd');

  it('systemd-analyze verify accepts every unit', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 't2cp-units-'));
    try {
      for (const role of ROLES) {
        const unit = fs.readFileSync(`${repoRoot}deploy/systemd/t2cp-${role}@.service`, 'utf8');
        expect(unit).toMatch(/^Type=notify$/m);
        expect(unit).toMatch(/^WatchdogSec=\d+s$/m);
        expect(unit).toMatch(/^Restart=on-failure$/m);
        expect(unit).toMatch(/^RestartPreventExitStatus=2$/m); // a wrong option: exit 2, not retried
        expect(unit).toMatch(new RegExp(`^ExecStart=/usr/bin/t2cp ${role} --config /etc/t2cp/${role}-%i.json --instance %i$`, 'm'));
        // The instance `main`, its program this checkout's CLI (the package installs /usr/bin/t2cp).
        fs.writeFileSync(path.join(dir, `t2cp-${role}@main.service`), unit.replace('/usr/bin/t2cp', `/usr/bin/node ${distCli()}`));
      }
      const r = spawnSync('systemd-analyze', ['verify', '--man=no', ...ROLES.map((role) => path.join(dir, `t2cp-${role}@main.service`))], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr.split('\n').filter((l) => l.includes('t2cp-'))).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a role says READY=1, feeds the watchdog, says STOPPING=1; a missing config file is named', async () => {
    const { tb, dir } = lab;
    const env = (sock: string) => ({ env: { ...process.env, NOTIFY_SOCKET: sock, WATCHDOG_USEC: String(WATCHDOG_USEC) } });
    // The backup: ready once it replicates; fed while its packet thread passes its loop.
    const backupSock = `${dir}/backup.notify`;
    const manager = notifySocket(tb, tb.ns.backup, backupSock);
    const agentSock = `${dir}/primary.notify`;
    const agentManager = notifySocket(tb, tb.ns.primary, agentSock);
    await waitFor(() => fs.existsSync(backupSock) && fs.existsSync(agentSock), { timeoutMs: 5_000, what: 'the notify sockets' });
    const backup = tb.spawn(tb.ns.backup, ['node', distCli(), 'backup', '--mirror-if', tb.ifaces.mirror, '--vip', tb.addr.vip, '--ports', '7000',
      '--instance', 'sysd'], env(backupSock));
    const backupOut = collect(backup);
    const key = `${dir}/key`;
    fs.writeFileSync(key, 'ab'.repeat(32) + '\n', { mode: 0o600 });
    const agent = tb.spawn(tb.ns.primary, ['node', distCli(), 'primary', '--key-file', key, '--vip', tb.addr.vip, '--ports', '7000',
      '--listen', '127.0.0.1:17392', '--instance', 'sysd'], env(agentSock));
    try {
      await waitFor(() => manager.messages().some((m) => m.startsWith('READY=1')) && agentManager.messages().some((m) => m.startsWith('READY=1')),
        { timeoutMs: 15_000, what: `READY=1 from both (backup: ${backupOut.stderr.slice(-500)})` });
      expect(backupOut.stdout).toMatch(/replicating/);
      expect(manager.messages().find((m) => m.startsWith('READY=1'))).toMatch(/STATUS=replicating MAINPID=\d+/);
      // Every half of WATCHDOG_USEC: about 10 feeds in a second.
      const before = manager.messages().filter((m) => m === 'WATCHDOG=1').length;
      await new Promise((r) => setTimeout(r, 1000));
      expect(manager.messages().filter((m) => m === 'WATCHDOG=1').length - before).toBeGreaterThanOrEqual(5);
      expect(agentManager.messages().filter((m) => m === 'WATCHDOG=1').length).toBeGreaterThanOrEqual(5);
      for (const [child, m] of [[backup, manager], [agent, agentManager]] as const) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
        await waitFor(() => m.messages().includes('STOPPING=1'), { timeoutMs: 5_000, what: 'STOPPING=1' });
      }
    } finally {
      for (const c of [backup, agent, manager.child, agentManager.child]) if (c.exitCode === null) c.kill('SIGTERM');
    }
    expect(await kernelLeftovers(tb, 'sysd')).toEqual([]);

    // As the unit starts it, with no configuration written yet: the file it wanted is named.
    const missing = await tb.exec(tb.ns.backup, ['node', distCli(), 'backup', '--config', '/etc/t2cp/backup-nowhere.json', '--instance', 'nowhere']);
    expect(missing.code).toBe(2);
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);
    expect(missing.stderr).toMatch(/config file \/etc\/t2cp\/backup-nowhere\.json: ENOENT: no such file or directory/);
  });
});
