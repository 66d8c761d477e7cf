// The Debian package (`npm run package`, scripts/package.sh): built with dpkg-shlibdeps and
// dpkg-deb, its control naming the libraries the addon links and the programs t2cp runs, its
// files where a system administrator expects them; unpacked away from this checkout, its own
// files are enough for `t2cp` to run: the help of every command, the manual, and a backup
// replicating on the testbed from the package's addon and modules. Then installed with
// `apt-get install ./t2cp-ar_….deb` and nothing else on a clean Debian 12 root (debootstrap,
// minbase and systemd; its own nodejs, 18), which then boots as each host of the deployment and
// runs that host's unit under its own systemd.
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
import type { LogRecord } from '../../scripts/t2cp-process.js';
import { run, type Testbed } from '../../scripts/testbed.js';
import { waitFor } from '../../scripts/wait.js';
import { flagsToArgv, validBackupArgs } from './cli-run.js';
import { BASE_ROOT, bootRoot, ensureBaseRoot, freezeThread, inRoot, type BootedRoot } from './debian-root.js';
import { readLog, type ClientLogLine, type ServiceLogLine } from './harness.js';
import { kernelLeftovers } from './leftovers.js';
import { useLab } from './lab.js';

const INSTANCE = 'pkg';

/** The package built by scripts/package.sh, its path. */
async function buildPackage(): Promise<string> {
  const built = await run(['bash', `${repoRoot}scripts/package.sh`], 300_000);
  if (built.code !== 0) throw new Error(`scripts/package.sh failed: ${built.stderr}`);
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
    const deb = await buildPackage();
    expect(deb).toMatch(/dist\/t2cp-ar_\d+\.\d+\.\d+_[a-z0-9]+\.deb$/);

    const control = spawnSync('dpkg-deb', ['-f', deb, 'Depends'], { encoding: 'utf8' }).stdout;
    for (const dep of ['libpcap0.8', 'libnetfilter-queue1', 'libmnl0', 'libbpf1', 'nodejs', 'nftables', 'iproute2']) expect(control).toContain(dep);
    const files = spawnSync('dpkg-deb', ['-c', deb], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split(/\s+/).pop()!.replace(/^\./, ''));
    for (const f of ['/usr/bin/t2cp', '/usr/lib/t2cp-ar/build/Release/t2cp.node', '/usr/lib/t2cp-ar/build/Release/recovery_active_mode.bpf.o',
      '/usr/lib/t2cp-ar/dist/src/cli.js', '/usr/lib/t2cp-ar/node_modules/prom-client/package.json',
      '/lib/systemd/system/t2cp-backup@.service', '/lib/systemd/system/t2cp-gateway@.service', '/lib/systemd/system/t2cp-primary@.service',
      '/etc/t2cp/backup-example.json', '/usr/lib/ocf/resource.d/t2cp/t2cp', '/usr/share/t2cp-ar/prometheus/t2cp.rules.yml', '/usr/lib/sysctl.d/60-t2cp-ar.conf',
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

  it('installs with apt-get alone on a clean Debian 12', async () => {
    await ensureBaseRoot();
    const installing = `${lab.dir}/debian12`;
    expect((await run(['cp', '-a', BASE_ROOT, installing], 300_000)).code).toBe(0);
    root = installing;
    const deb = await buildPackage();
    fs.copyFileSync(deb, `${root}/tmp/${path.basename(deb)}`);
    fs.copyFileSync('/etc/resolv.conf', `${root}/etc/resolv.conf`);
    const install = await run(inRoot(root, `chroot ${root} sh -c 'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && ` +
      `apt-get install -y -qq /tmp/${path.basename(deb)} >/dev/null && node --version && t2cp help'`), 300_000);
    expect(install.code, install.stderr.slice(-2000)).toBe(0);
    expect(install.stdout).toMatch(/^v\d+\./m);
    expect(install.stdout).toMatch(/usage: t2cp <command>/);
    console.log(`package: installed on a clean Debian 12 root with its nodejs ${/^v[\d.]+/m.exec(install.stdout)?.[0]}`);
  }, 900_000);

  // That root booted as the three hosts of the deployment (systemd-nspawn in the testbed's
  // gateway, primary and backup namespaces, one overlay each): each host's own systemd runs its
  // role's unit from /etc/t2cp/ROLE-pkg.json, the services run beside them. A unit is active
  // only once its role works (Type=notify: the backup replicating, the detector and the agent
  // listening). The primary fails and the backup takes over. The gateway is killed: systemd
  // starts it again (Restart=on-failure) and it knows from its state file that the backup
  // serves. The backup's packet thread is stopped where it is (ptrace) while the rest of the
  // process runs on: the watchdog starves, systemd kills the process and starts it again, and
  // the new process reclaims the taken-over connections, which carry on byte-exact through all of it.
  it('its units, under each host\'s systemd: ready when working, restarted on a crash and by the watchdog without losing a connection', async () => {
    if (!root) throw new Error('needs the root the previous test installed');
    const { tb, dir } = lab;
    const unit = { gateway: `t2cp-gateway@${INSTANCE}.service`, primary: `t2cp-primary@${INSTANCE}.service`, backup: `t2cp-backup@${INSTANCE}.service` };
    const key = randomBytes(32).toString('hex') + '\n';
    fs.writeFileSync(`${root}/etc/t2cp/control.key`, key, { mode: 0o600 });
    const common = { keyFile: '/etc/t2cp/control.key', vip: tb.addr.vip, ports: [PORT], stateDir: '/var/lib/t2cp', json: true };
    const configs = {
      gateway: { ...common, primary: tb.addr.primary, backup: tb.addr.backup, intervalMs: 20, hardMisses: 3 },
      primary: { ...common, detector: tb.addr.gatewayLan, intervalMs: 20 },
      backup: { ...common, mirrorIf: tb.ifaces.mirror, vipIf: tb.ifaces.backupLan, detector: tb.addr.gatewayLan, heartbeatMs: 20 },
    };
    for (const [role, config] of Object.entries(configs)) fs.writeFileSync(`${root}/etc/t2cp/${role}-${INSTANCE}.json`, JSON.stringify(config, null, 2));
    // What an operator would put with `systemctl edit`: a watchdog the test need not wait 10 s for.
    fs.mkdirSync(`${root}/etc/systemd/system/${unit.backup}.d`, { recursive: true });
    fs.writeFileSync(`${root}/etc/systemd/system/${unit.backup}.d/watchdog.conf`, `[Service]\nWatchdogSec=${WATCHDOG_S}s\n`);

    const primary = await startService(tb, tb.ns.primary, [PORT], `${dir}/primary.jsonl`);
    const replica = await startService(tb, tb.ns.backup, [PORT], `${dir}/replica.jsonl`);
    const booted: BootedRoot[] = [];
    const boot = async (role: keyof typeof unit): Promise<BootedRoot> => {
      const host = await bootRoot(root!, tb.ns[role], `${dir}/bpffs-${role}`, [unit[role]]);
      booted.push(host);
      return host;
    };
    try {
      // The gateway first: the others report to it from their start.
      const gateway = await boot('gateway');
      await activeOnce(gateway, unit.gateway);
      const [agent, backup] = await Promise.all([boot('primary'), boot('backup')]);
      await Promise.all([activeOnce(agent, unit.primary), activeOnce(backup, unit.backup)]);
      // Active means ready: READY=1 came with each role at work.
      expect(backup.property(unit.backup, 'StatusText')).toBe('replicating');
      expect(records(backup, unit.backup).some((r) => r.msg === 'replicating')).toBe(true);
      expect(gateway.property(unit.gateway, 'StatusText')).toMatch(/^detecting: /);
      expect(records(gateway, unit.gateway).some((r) => r.msg === 'failure detector listening')).toBe(true);
      expect(agent.property(unit.primary, 'StatusText')).toMatch(/^watching the service: /);
      await waitFor(() => records(gateway, unit.gateway).some((r) => r.msg === 'backup state' && r.to === 'standby'),
        { timeoutMs: 15_000, what: 'the backup standing by' });

      const client = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, workload, `${dir}/client.jsonl`, { deadlineMs: 60_000 });
      await waitFor(() => protectedNow(backup) >= SESSIONS, { timeoutMs: 15_000, what: 'every session protected' });
      await failPrimary(tb, 'link-down');
      await waitFor(() => records(backup, unit.backup).find((r) => r.msg === 'takeover kept'), { timeoutMs: 15_000, what: 'the takeover kept' });

      // The gateway crashes (SIGKILL): systemd starts it again, and its state file says who serves.
      expect(gateway.exec(['systemctl', 'kill', '--signal=SIGKILL', unit.gateway]).code).toBe(0);
      const known = await waitFor(() => records(gateway, unit.gateway).find((r) => r.msg === 'device state' && r.to === 'BACKUP_ACTIVE' &&
        String(r.cause).startsWith('restored')), { timeoutMs: 20_000, what: `${unit.gateway} started again, the takeover known` });
      expect(known.epoch).toBe(1);
      expect(gateway.property(unit.gateway, 'NRestarts')).toBe('1');
      expect(gateway.journal(unit.gateway).some((l) => /Main process exited, code=killed, status=9\/KILL/.test(l))).toBe(true);

      const before = Number(backup.property(unit.backup, 'MainPID'));
      const frozen = await freezeThread(hostPid(before), 't2cp-engine');
      try {
        await waitFor(() => backup.journal(unit.backup).find((l) => /Watchdog timeout/.test(l)),
          { timeoutMs: WATCHDOG_S * 1000 + 10_000, what: 'systemd\'s watchdog timeout' });
      } finally {
        await frozen.release();
      }
      const restarted = await waitFor(() => {
        const mainPid = Number(backup.property(unit.backup, 'MainPID'));
        return mainPid > 0 && mainPid !== before && backup.property(unit.backup, 'ActiveState') === 'active' ? mainPid : undefined;
      }, { timeoutMs: 20_000, what: `${unit.backup} started again` });
      expect(backup.property(unit.backup, 'NRestarts')).toBe('1');
      const log = backup.journal(unit.backup);
      expect(log.some((l) => /not feeding the systemd watchdog/.test(l))).toBe(true);
      expect(log.some((l) => /Failed with result 'watchdog'/.test(l))).toBe(true);
      const reclaimed = records(backup, unit.backup).find((r) => String(r.msg).startsWith('reclaimed the takeover'));
      expect(reclaimed, log.slice(-20).join('\n')).toMatchObject({ epoch: 1 });
      console.log(`package (systemd): gateway restarted after SIGKILL, ${JSON.stringify(known)}; backup restarted by the watchdog ` +
        `(MainPID ${before} → ${restarted}), ${JSON.stringify(reclaimed)}`);

      const run = await client.finished;
      const check = compareTakeover(readLog<ClientLogLine>(`${dir}/client.jsonl`), readLog<ServiceLogLine>(`${dir}/replica.jsonl`));
      console.log(`package (systemd): exact ${check.exact}/${SESSIONS}; client ${JSON.stringify(run.summary)}`);
      expect(run.code, run.stderr).toBe(0);
      expect(check.mismatches).toEqual([]);
      expect(check.exact).toBe(SESSIONS);

      // Stopped by systemd: STOPPING=1, then each role removes what it installed.
      for (const [host, u] of [[backup, unit.backup], [agent, unit.primary], [gateway, unit.gateway]] as const) {
        expect(host.exec(['systemctl', 'stop', u]).code).toBe(0);
        expect(host.property(u, 'ActiveState')).toBe('inactive');
      }
    } finally {
      for (const host of booted) await host.stop();
      await stopChild(primary.child);
      await stopChild(replica.child);
    }
    // The pins went with the containers' bpffs; the VIP stays where the takeover put it (the host serves).
    await tb.exec(tb.ns.backup, ['ip', 'addr', 'del', `${tb.addr.vip}/32`, 'dev', tb.ifaces.backupLan]);
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  }, 240_000);
});

const PORT = 7000;
const SESSIONS = 4;
const WATCHDOG_S = 3;
// Request/response every 10 ms for ~12 s: under way through the takeover, both restarts.
const workload: Workload = { seed: 23, sessions: [{ kind: 'rr', times: SESSIONS, count: 1200, intervalMs: 10, reqSize: [4, 600], respSize: [1, 3000] }] };

/** The JSON records a unit logged (every role runs with `json: true`). */
function records(host: BootedRoot, unit: string): LogRecord[] {
  return host.journal(unit).filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogRecord);
}

/** Waits for UNIT active on HOST (it started with the boot), and says why not from its journal. */
async function activeOnce(host: BootedRoot, unit: string): Promise<void> {
  await waitFor(() => host.property(unit, 'ActiveState') === 'active' || host.property(unit, 'NRestarts') !== '0',
    { timeoutMs: 30_000, what: `${unit} active` }).catch(() => undefined);
  expect(host.property(unit, 'ActiveState'), host.journal(unit).slice(-30).join('\n')).toBe('active');
  expect(host.property(unit, 'NRestarts')).toBe('0');
}

/** The backup's open connections that a failure now would carry over, as the host's `t2cp status` reports them. */
function protectedNow(backup: BootedRoot): number {
  const r = backup.exec(['t2cp', 'status', '--role', 'backup', '--key-file', '/etc/t2cp/control.key', '--json']);
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
