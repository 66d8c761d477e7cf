// The Debian package (`npm run package`, scripts/package.sh): built with dpkg-shlibdeps and
// dpkg-deb, its control naming the libraries the addon links and the programs t2cp runs, its
// files where a system administrator expects them; unpacked away from this checkout, its own
// files are enough for `t2cp` to run: the help of every command, the manual, and a backup
// replicating on the testbed from the package's addon and modules. Then installed with
// `apt-get install ./t2cp-ar_….deb` and nothing else on a clean Debian 12 root (debootstrap,
// minbase; its own nodejs, 18), from which a backup replicates on the testbed.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { collect, repoRoot, stopChild } from '../../scripts/processes.js';
import type { Testbed } from '../../scripts/testbed.js';
import { waitFor } from '../../scripts/wait.js';
import { flagsToArgv, validBackupArgs } from './cli-run.js';
import { kernelLeftovers } from './leftovers.js';
import { useLab } from './lab.js';

const INSTANCE = 'pkg';
/** A minimal Debian 12 made once per checkout (debootstrap, ~30 s), copied afresh for each run. */
const BASE_ROOT = `${repoRoot}build/debian12-root`;

/** The package built by scripts/package.sh, its path. */
function buildPackage(): string {
  const built = spawnSync('bash', [`${repoRoot}scripts/package.sh`], { encoding: 'utf8', cwd: repoRoot });
  if (built.status !== 0) throw new Error(`scripts/package.sh failed: ${built.stderr}`);
  return path.join(repoRoot, built.stdout.trim());
}

/** sh -c `script` in a mount namespace of its own where `root` has /proc, /dev, /sys and bpffs. */
function inRoot(root: string, script: string): string[] {
  return ['unshare', '--mount', 'sh', '-c',
    `mount -t proc proc ${root}/proc && mount --rbind /dev ${root}/dev && mount -t sysfs sysfs ${root}/sys && ` +
    `mount -t bpf bpf ${root}/sys/fs/bpf && ${script}`];
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

  it('installs with apt-get alone on a clean Debian 12 and replicates from there', async () => {
    const { tb, dir } = lab;
    if (!fs.existsSync(`${BASE_ROOT}/etc/debian_version`)) {
      const making = `${BASE_ROOT}.making`;
      fs.rmSync(making, { recursive: true, force: true });
      const made = spawnSync('debootstrap', ['--variant=minbase', 'bookworm', making, 'http://deb.debian.org/debian'], { encoding: 'utf8', timeout: 600_000 });
      expect(made.status, made.stderr.slice(-2000)).toBe(0);
      fs.renameSync(making, BASE_ROOT);
    }
    const root = `${dir}/debian12`;
    expect(spawnSync('cp', ['-a', BASE_ROOT, root]).status).toBe(0);
    try {
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

      await replicatesWithMetrics(tb, (args) => inRoot(root, `exec chroot ${root} t2cp backup ${args.join(' ')}`), 'the installed backup');
    } finally {
      spawnSync('rm', ['-rf', '--one-file-system', root]);
    }
  }, 900_000);
});
