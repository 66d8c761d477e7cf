// The Debian package (`npm run package`, scripts/package.sh): built with dpkg-shlibdeps and
// dpkg-deb, its control naming the libraries the addon links and the programs t2cp runs, its
// files where a system administrator expects them; unpacked away from this checkout, its own
// files are enough for `t2cp` to run: the help of every command, the manual, and a backup
// replicating on the testbed from the package's addon and modules. Then installed with
// `apt-get install ./t2cp-ar_….deb` and nothing else on a clean Debian 12 root (debootstrap,
// minbase and systemd; its own nodejs, 18), which then boots as the backup host and runs the
// backup's unit under its own systemd.
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Workload } from '../../scripts/client.js';
import { failPrimary } from '../../scripts/failures.js';
import { collect, repoRoot, startClient, startService, stopChild } from '../../scripts/processes.js';
import { compareTakeover } from '../../scripts/takeover-check.js';
import { distCli, startT2cp, type LogRecord, type T2cpProcess } from '../../scripts/t2cp-process.js';
import type { Testbed } from '../../scripts/testbed.js';
import { waitFor } from '../../scripts/wait.js';
import { flagsToArgv, validBackupArgs } from './cli-run.js';
import { BASE_ROOT, bootRoot, ensureBaseRoot, freezeThread, inRoot, type BootedRoot } from './debian-root.js';
import { readLog, type ClientLogLine, type ServiceLogLine } from './harness.js';
import { kernelLeftovers } from './leftovers.js';
import { useLab } from './lab.js';

const INSTANCE = 'pkg';

/** The package built by scripts/package.sh, its path. */
function buildPackage(): string {
  const built = spawnSync('bash', [`${repoRoot}scripts/package.sh`], { encoding: 'utf8', cwd: repoRoot });
  if (built.status !== 0) throw new Error(`scripts/package.sh failed: ${built.stderr}`);
  return path.join(repoRoot, built.stdout.trim());
}

/**
 * `t2cp backup` as `command(args)` runs it, in the testbed's backup namespace: it replicates and
 * serves its metrics (prom-client), then stops on SIGTERM leaving nothing installed.
 */
async function replicatesWithMetrics(tb: Testbed, command: (args: string[]) => string[], what: string): Promise<void> {
  const backup = tb.spawn(tb.ns.backup, command(flagsToArgv({ ...validBackupArgs(tb, INSTANCE), '--metrics': '127.0.0.1:19465' })));
  const out = collect(backup);
  try {
    await waitFor(() => out.stdout.includes('replicating'), { timeoutMs: 20_000, what: `${what} replicating (${out.stderr.slice(-500)})` });
    const metrics = await tb.exec(tb.ns.backup, ['curl', '-sf', 'http://127.0.0.1:19465/metrics']);
    expect(metrics.stdout).toMatch(/^t2cp_backup_state\{state="standby"\} 1$/m);
  } finally {
    await stopChild(backup);
  }
  expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
}

describe('package: t2cp-ar_VERSION_ARCH.deb', () => {
  const lab = useLab('package');

  it('declares its dependencies, holds the files, and runs from them alone', async () => {
    const { tb } = lab;
    const deb = buildPackage();
    expect(deb).toMatch(/dist\/t2cp-ar_\d+\.\d+\.\d+_[a-z0-9]+\.deb$/);

    const control = spawnSync('dpkg-deb', ['-f', deb, 'Depends'], { encoding: 'utf8' }).stdout;
    for (const dep of ['libpcap0.8', 'libnetfilter-queue1', 'libmnl0', 'libbpf1', 'nodejs', 'nftables', 'iproute2']) expect(control).toContain(dep);
    const files = spawnSync('dpkg-deb', ['-c', deb], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split(/\s+/).pop()!.replace(/^\./, ''));
    for (const f of ['/usr/bin/t2cp', '/usr/lib/t2cp-ar/build/Release/t2cp.node', '/usr/lib/t2cp-ar/build/Release/recovery_active_mode.bpf.o',
      '/usr/lib/t2cp-ar/dist/src/cli.js', '/usr/lib/t2cp-ar/node_modules/prom-client/package.json',
      '/lib/systemd/system/t2cp-backup@.service', '/lib/systemd/system/t2cp-gateway@.service', '/lib/systemd/system/t2cp-primary@.service',
      '/etc/t2cp/backup-example.json', '/usr/lib/ocf/resource.d/t2cp/t2cp', '/usr/share/t2cp-ar/prometheus/t2cp.rules.yml',
      '/usr/share/man/man8/t2cp.8.gz', '/usr/share/doc/t2cp-ar/copyright']) expect(files).toContain(f);
    // Nothing of the build, the tests or the lab: the program and its runtime modules only.
    expect(files.filter((f) => /node-addon-api|node_modules\/vitest|\/t2cp-ar\/dist\/(test|scripts|bench)\//.test(f))).toEqual([]);
    expect(spawnSync('dpkg-deb', ['-I', deb, 'conffiles'], { encoding: 'utf8' }).stdout.trim().split('\n').sort())
      .toEqual(['/etc/t2cp/backup-example.json', '/etc/t2cp/gateway-example.json', '/etc/t2cp/primary-example.json']);

    // Unpacked outside the checkout: module resolution cannot fall back on its node_modules.
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 't2cp-deb-root-'));
    try {
      expect(spawnSync('dpkg-deb', ['-x', deb, root]).status).toBe(0);
      const cli = path.join(root, 'usr/lib/t2cp-ar/dist/src/cli.js');
      for (const cmd of ['backup', 'gateway', 'primary', 'takeover', 'stand-down', 'status', 'events']) {
        const r = spawnSync('node', [cli, cmd, '--help'], { encoding: 'utf8' });
        expect(r.status, r.stderr).toBe(0);
        expect(r.stdout).toMatch(new RegExp(`^usage: t2cp ${cmd} `));
      }
      const man = spawnSync('man', ['-l', path.join(root, 'usr/share/man/man8/t2cp.8.gz')], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '100' } });
      expect(man.status, man.stderr).toBe(0);
      for (const section of ['NAME', 'SYNOPSIS', 'COMMANDS', 'FILES', 'EXIT STATUS']) expect(man.stdout).toMatch(new RegExp(`^${section}$`, 'm'));
      expect(man.stdout).toMatch(/--udp-ports LIST/);

      // The packaged addon and modules run a backup on the testbed, with its metrics (prom-client).
      await replicatesWithMetrics(tb, (args) => ['node', cli, 'backup', ...args], 'the packaged backup');
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  // The clean root with the package installed, shared by the two tests below, removed after.
  let root: string | undefined;
  afterAll(() => { if (root) spawnSync('rm', ['-rf', '--one-file-system', root]); });

  it('installs with apt-get alone on a clean Debian 12', () => {
    ensureBaseRoot();
    const installing = `${lab.dir}/debian12`;
    expect(spawnSync('cp', ['-a', BASE_ROOT, installing]).status).toBe(0);
    root = installing;
    const deb = buildPackage();
    fs.copyFileSync(deb, `${root}/tmp/${path.basename(deb)}`);
    fs.copyFileSync('/etc/resolv.conf', `${root}/etc/resolv.conf`);
    const [program, ...args] = inRoot(root, `chroot ${root} sh -c 'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && ` +
      `apt-get install -y -qq /tmp/${path.basename(deb)} >/dev/null && node --version && t2cp help'`);
    const install = spawnSync(program!, args, { encoding: 'utf8', timeout: 300_000 });
    expect(install.status, install.stderr.slice(-2000)).toBe(0);
    expect(install.stdout).toMatch(/^v\d+\./m);
    expect(install.stdout).toMatch(/usage: t2cp <command>/);
    console.log(`package: installed on a clean Debian 12 root with its nodejs ${/^v[\d.]+/m.exec(install.stdout)?.[0]}`);
  }, 900_000);

  // That root booted as the backup host (systemd-nspawn in the testbed's backup namespace): its
  // own systemd runs t2cp-backup@pkg.service from /etc/t2cp/backup-pkg.json, beside the copy of
  // the service; the gateway's detector and the primary's agent run as in the other tests. The
  // unit is active only once the backup replicates (Type=notify); the primary fails and the
  // backup takes over; then its packet thread is stopped where it is (ptrace) while the rest of
  // the process runs on: the watchdog starves, systemd kills the process and starts it again
  // (Restart=on-failure), and the new process reclaims the taken-over connections, which carry
  // on byte-exact through all of it.
  it('its unit, under that host\'s systemd: ready when replicating, restarted by the watchdog without losing a connection', async () => {
    if (!root) throw new Error('needs the root the previous test installed');
    const { tb, dir } = lab;
    const unit = `t2cp-backup@${INSTANCE}.service`;
    const key = randomBytes(32).toString('hex') + '\n';
    fs.writeFileSync(`${dir}/control.key`, key, { mode: 0o600 });
    fs.writeFileSync(`${root}/etc/t2cp/control.key`, key, { mode: 0o600 });
    fs.writeFileSync(`${root}/etc/t2cp/backup-${INSTANCE}.json`, JSON.stringify({
      mirrorIf: tb.ifaces.mirror, vip: tb.addr.vip, ports: [PORT], vipIf: tb.ifaces.backupLan, keyFile: '/etc/t2cp/control.key',
      detector: tb.addr.gatewayLan, heartbeatMs: 20, stateDir: '/var/lib/t2cp', json: true,
    }, null, 2));
    // What an operator would put with `systemctl edit`: a watchdog the test need not wait 10 s for.
    fs.mkdirSync(`${root}/etc/systemd/system/${unit}.d`, { recursive: true });
    fs.writeFileSync(`${root}/etc/systemd/system/${unit}.d/watchdog.conf`, `[Service]\nWatchdogSec=${WATCHDOG_S}s\n`);
    expect(spawnSync('systemctl', ['--root', root, 'enable', unit], { encoding: 'utf8' }).status).toBe(0);

    const primary = await startService(tb, tb.ns.primary, [PORT], `${dir}/primary.jsonl`);
    const replica = await startService(tb, tb.ns.backup, [PORT], `${dir}/replica.jsonl`);
    const host = await bootRoot(root, tb.ns.backup, `${dir}/bpffs`);
    const started: T2cpProcess[] = [];
    try {
      await waitFor(() => host.property(unit, 'ActiveState') === 'active' || host.property(unit, 'NRestarts') !== '0',
        { timeoutMs: 30_000, what: `${unit} active` }).catch(() => undefined);
      expect(host.property(unit, 'ActiveState'), host.journal(unit).slice(-30).join('\n')).toBe('active');
      expect(host.property(unit, 'NRestarts')).toBe('0');
      // Active means ready: READY=1 came with the data path installed.
      expect(host.property(unit, 'StatusText')).toBe('replicating');
      expect(records(host, unit).some((r) => r.msg === 'replicating')).toBe(true);

      const keyFile = `${dir}/control.key`;
      const gateway = await startT2cp(tb, tb.ns.gateway, ['gateway', '--key-file', keyFile, '--instance', INSTANCE, '--primary', tb.addr.primary,
        '--backup', tb.addr.backup, '--vip', tb.addr.vip, '--ports', String(PORT), '--interval', '20', '--hard-misses', '3'],
      (r) => r.msg === 'failure detector listening');
      started.push(gateway);
      started.push(await startT2cp(tb, tb.ns.primary, ['primary', '--key-file', keyFile, '--instance', INSTANCE, '--detector', tb.addr.gatewayLan,
        '--ports', String(PORT), '--vip', tb.addr.vip, '--service-pid', String(primary.child.pid), '--interval', '20'],
      (r) => r.msg === 'primary agent started'));
      await gateway.waitForRecord((r) => r.msg === 'backup state' && r.to === 'standby', 'the backup standing by');

      const client = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, workload, `${dir}/client.jsonl`, { deadlineMs: 60_000 });
      await waitFor(async () => (await protectedNow(tb, keyFile)) >= SESSIONS, { timeoutMs: 15_000, what: 'every session protected' });
      await failPrimary(tb, 'link-down');
      await waitFor(() => records(host, unit).find((r) => r.msg === 'takeover kept'), { timeoutMs: 15_000, what: 'the takeover kept' });

      const before = Number(host.property(unit, 'MainPID'));
      const pid = hostPid(before);
      const frozen = await freezeThread(pid, 't2cp-engine');
      try {
        await waitFor(() => host.journal(unit).find((l) => /Watchdog timeout/.test(l)),
          { timeoutMs: WATCHDOG_S * 1000 + 10_000, what: 'systemd\'s watchdog timeout' });
      } finally {
        await frozen.release();
      }
      const restarted = await waitFor(() => {
        const mainPid = Number(host.property(unit, 'MainPID'));
        return mainPid > 0 && mainPid !== before && host.property(unit, 'ActiveState') === 'active' ? mainPid : undefined;
      }, { timeoutMs: 20_000, what: `${unit} started again` });
      expect(host.property(unit, 'NRestarts')).toBe('1');
      const log = host.journal(unit);
      expect(log.some((l) => /not feeding the systemd watchdog/.test(l))).toBe(true);
      expect(log.some((l) => /Failed with result 'watchdog'/.test(l))).toBe(true);
      const reclaimed = records(host, unit).find((r) => String(r.msg).startsWith('reclaimed the takeover'));
      expect(reclaimed, log.slice(-20).join('\n')).toMatchObject({ epoch: 1 });
      console.log(`package (systemd): restarted by the watchdog (MainPID ${before} → ${restarted}); ${JSON.stringify(reclaimed)}`);

      const run = await client.finished;
      const check = compareTakeover(readLog<ClientLogLine>(`${dir}/client.jsonl`), readLog<ServiceLogLine>(`${dir}/replica.jsonl`));
      console.log(`package (systemd): exact ${check.exact}/${SESSIONS}; client ${JSON.stringify(run.summary)}`);
      expect(run.code, run.stderr).toBe(0);
      expect(check.mismatches).toEqual([]);
      expect(check.exact).toBe(SESSIONS);

      // Stopped by systemd: STOPPING=1, then the backup removes what it installed.
      expect(host.exec(['systemctl', 'stop', unit]).code).toBe(0);
      expect(host.property(unit, 'ActiveState')).toBe('inactive');
    } finally {
      for (const p of started) await p.stop();
      await host.stop();
      await stopChild(primary.child);
      await stopChild(replica.child);
    }
    // The pins went with the container's bpffs; the VIP stays where the takeover put it (the host serves).
    await tb.exec(tb.ns.backup, ['ip', 'addr', 'del', `${tb.addr.vip}/32`, 'dev', tb.ifaces.backupLan]);
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  }, 180_000);
});

const PORT = 7000;
const SESSIONS = 4;
const WATCHDOG_S = 3;
// Request/response every 10 ms for ~8 s: under way through the takeover, the freeze and the restart.
const workload: Workload = { seed: 23, sessions: [{ kind: 'rr', times: SESSIONS, count: 800, intervalMs: 10, reqSize: [4, 600], respSize: [1, 3000] }] };

/** The JSON records a unit logged (the backup runs with `json: true`). */
function records(host: BootedRoot, unit: string): LogRecord[] {
  return host.journal(unit).filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogRecord);
}

/** The backup's open connections that a failure now would carry over, as `t2cp status` reports them. */
async function protectedNow(tb: Testbed, keyFile: string): Promise<number> {
  const r = await tb.exec(tb.ns.backup, ['node', distCli(), 'status', '--role', 'backup', '--key-file', keyFile, '--json']);
  return r.code === 0 ? Number((JSON.parse(r.stdout) as { flows?: { open?: { protected?: number } } }).flows?.open?.protected ?? 0) : 0;
}

/** This host's number of a process the container numbers `pid` (its NSpid line). */
function hostPid(pid: number): number {
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const nspid = /^NSpid:\s+(\d+)\s+(\d+)$/m.exec(fs.readFileSync(`/proc/${entry}/status`, 'utf8'));
      if (nspid && Number(nspid[2]) === pid && /cli\.js\0backup/.test(fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8'))) return Number(nspid[1]);
    } catch { /* gone meanwhile */ }
  }
  throw new Error(`no process numbered ${pid} in the container`);
}
