// A clean Debian 12 for the package's tests, as a server has it (debootstrap's minbase plus
// systemd), made once a week per machine and copied afresh for each run; the package goes in with
// `apt-get install` alone. Booted with systemd-nspawn inside a testbed namespace, it is a host
// of the deployment whose own systemd runs t2cp's units: readiness, the watchdog and Restart=
// are systemd's, not a stand-in's. One installed root boots as several hosts at once: each boot
// writes to a tmpfs overlay of its own (--volatile=overlay), the root stays as installed.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { run } from '../../scripts/testbed.js';
import { waitFor } from '../../scripts/wait.js';

/**
 * Outside the checkout, as apt keeps its downloads: every clone on the machine (CI's among them)
 * copies the same untouched root rather than spend a minute making its own.
 */
const CACHE = '/var/cache/t2cp-ar-tests';
export const BASE_ROOT = `${CACHE}/debian12-systemd-root`;
/** Older than this, BASE_ROOT is made again: the clean Debian 12 follows the point releases. */
const MAX_AGE_MS = 7 * 24 * 3600_000;

/**
 * Makes BASE_ROOT when the machine has none, or an old one (debootstrap from Debian's mirror,
 * ~1 min). Made aside and renamed into place, so another checkout's run never copies half a root.
 * Long commands here run asynchronously: a test worker blocked for a minute misses its runner's calls.
 */
export async function ensureBaseRoot(): Promise<void> {
  // What a run killed while making one left (an hour old: not another run's still at work).
  for (const name of fs.existsSync(CACHE) ? fs.readdirSync(CACHE) : []) {
    const left = `${CACHE}/${name}`;
    if (name.startsWith('debian12-systemd-root.making-') && Date.now() - fs.statSync(left).mtimeMs > 3600_000)
      await run(['rm', '-rf', '--one-file-system', left]);
  }
  const made = fs.statSync(`${BASE_ROOT}/etc/debian_version`, { throwIfNoEntry: false });
  if (made && Date.now() - fs.statSync(BASE_ROOT).mtimeMs < MAX_AGE_MS) return;
  fs.mkdirSync(CACHE, { recursive: true });
  const making = fs.mkdtempSync(`${BASE_ROOT}.making-`);
  try {
    const r = await run(['debootstrap', '--variant=minbase', '--include=systemd,systemd-sysv', 'bookworm', making, 'http://deb.debian.org/debian'], 600_000);
    if (r.code !== 0) throw new Error(`debootstrap failed (${r.code}): ${r.stderr.slice(-2000)}`);
    if (made) fs.renameSync(BASE_ROOT, `${making}.old`);
    fs.renameSync(making, BASE_ROOT);
    const now = new Date();
    fs.utimesSync(BASE_ROOT, now, now);
  } finally {
    await run(['rm', '-rf', '--one-file-system', making, `${making}.old`]);
  }
}

/** sh -c `script` in a mount namespace of its own where `root` has /proc, /dev, /sys and bpffs. */
export function inRoot(root: string, script: string): string[] {
  return ['unshare', '--mount', 'sh', '-c',
    `mount -t proc proc ${root}/proc && mount --rbind /dev ${root}/dev && mount -t sysfs sysfs ${root}/sys && ` +
    `mount -t bpf bpf ${root}/sys/fs/bpf && ${script}`];
}

export interface BootedRoot {
  /** The container's init (systemd), as this host numbers it. */
  init: number;
  /** `argv` inside the container (all its namespaces): systemctl, journalctl... */
  exec(argv: string[]): { code: number | null; stdout: string; stderr: string };
  /** `systemctl show UNIT -p NAME`'s value. */
  property(unit: string, name: string): string;
  /** What UNIT logged, a line each (`journalctl -o cat`). */
  journal(unit: string): string[];
  /** Powers the container off (its systemd stops every unit), SIGKILL after 30 s. */
  stop(): Promise<void>;
}

/**
 * Boots `root` under its own systemd (systemd-nspawn --boot) in the network namespace `netns`,
 * with a bpf filesystem of its own at /sys/fs/bpf (gone with the container), starting `units`
 * with the boot (`systemd.wants=` on init's command line: this host's units, where the shared
 * root enables none). Its writes go to a tmpfs overlay, gone with it. nspawn is not started
 * through `ip netns exec`, which remounts /sys without the cgroup hierarchy systemd needs: it
 * joins the namespace with nsenter.
 */
export async function bootRoot(root: string, netns: string, bpffs: string, units: string[] = []): Promise<BootedRoot> {
  fs.mkdirSync(bpffs, { recursive: true });
  const nspawn: ChildProcess = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c',
    `mount -t bpf t2cp-test-bpffs ${bpffs} && exec nsenter --net=/run/netns/${netns} systemd-nspawn --quiet --directory=${root} --boot ` +
    `--volatile=overlay --register=no --keep-unit --capability=all --system-call-filter='bpf perf_event_open' --bind=${bpffs}:/sys/fs/bpf` +
    units.map((u) => ` systemd.wants=${u}`).join('')],
  { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  for (const s of [nspawn.stdout, nspawn.stderr]) s?.setEncoding('utf8').on('data', (d: string) => { output = (output + d).slice(-4000); });
  const exited = new Promise<void>((r) => nspawn.once('exit', () => r()));
  const running = () => nspawn.exitCode === null && nspawn.signalCode === null;
  const stop = async (): Promise<void> => {
    if (!running()) return;
    nspawn.kill('SIGTERM'); // nspawn asks the container's systemd to power off
    const t = setTimeout(() => nspawn.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(t);
  };
  try {
    // nspawn's child sets the container up, then execs systemd as its init: taken once it runs
    // systemd, it is in the container's namespaces for good.
    const init = await waitFor(() => {
      if (!running()) throw new Error(`systemd-nspawn exited: ${output.trim()}`);
      const children = fs.readFileSync(`/proc/${nspawn.pid}/task/${nspawn.pid}/children`, 'utf8').trim().split(' ').filter(Boolean).map(Number);
      return children.find((c) => {
        try {
          return fs.readFileSync(`/proc/${c}/comm`, 'utf8').trim() === 'systemd';
        } catch {
          return false; // gone meanwhile
        }
      });
    }, { timeoutMs: 20_000, what: 'the container\'s init (systemd)' });
    const exec = (argv: string[]) => {
      const r = spawnSync('nsenter', ['-t', String(init), '-a', ...argv], { encoding: 'utf8', timeout: 30_000 });
      return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
    };
    // Up once its manager answers and has left `initializing` (`starting` while jobs of the boot
    // still run: the unit under test is one of them, or started apart). What it said last, and
    // its jobs, if it never does.
    let state = '';
    await waitFor(() => {
      state = exec(['systemctl', 'is-system-running']).stdout.trim();
      return /^(starting|running|degraded)$/.test(state);
    }, { timeoutMs: 60_000, what: 'the container\'s systemd' }).catch((e: Error) => {
      const jobs = exec(['systemctl', 'list-jobs', '--no-pager']).stdout.trim();
      throw new Error(`${e.message}: is-system-running said '${state}'; jobs: ${jobs.slice(0, 1500)}; nspawn: ${output.slice(-500)}`);
    });
    return {
      init,
      exec,
      property: (unit, name) => exec(['systemctl', 'show', unit, '-p', name, '--value']).stdout.trim(),
      journal: (unit) => exec(['journalctl', '-u', unit, '-o', 'cat', '--no-pager']).stdout.split('\n').filter(Boolean),
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/**
 * Stops one thread of a process where it is (ptrace: PTRACE_SEIZE, PTRACE_INTERRUPT), the rest
 * of the process running on, as a thread stuck in a loop or a lock would be. The thread goes on
 * when release() ends the tracer, or dies with its process.
 */
export async function freezeThread(pid: number, name: string): Promise<{ tid: number; release: () => Promise<void> }> {
  const tid = fs.readdirSync(`/proc/${pid}/task`).map(Number)
    .find((t) => fs.readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim() === name);
  if (!tid) throw new Error(`no thread named ${name} in process ${pid}`);
  const tracer = spawn('python3', ['-u', '-c', [
    'import ctypes, sys',
    'libc = ctypes.CDLL(None, use_errno=True)',
    `tid = ${tid}`,
    'if libc.ptrace(0x4206, tid, 0, 0) != 0 or libc.ptrace(0x4207, tid, 0, 0) != 0:',
    '    sys.exit(f"ptrace {tid}: errno {ctypes.get_errno()}")',
    'print("frozen", flush=True)',
    'sys.stdin.read()',
  ].join('\n')], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  for (const s of [tracer.stdout, tracer.stderr]) s?.setEncoding('utf8').on('data', (d: string) => { out += d; });
  await waitFor(() => {
    if (tracer.exitCode !== null) throw new Error(`the tracer exited: ${out.trim()}`);
    return out.includes('frozen');
  }, { timeoutMs: 5_000, what: `thread ${name} frozen` });
  return {
    tid,
    release: async () => {
      if (tracer.exitCode !== null || tracer.signalCode !== null) return;
      const gone = new Promise((r) => tracer.once('exit', r));
      tracer.stdin?.end(); // the tracer exits; the kernel detaches it
      await gone;
    },
  };
}
