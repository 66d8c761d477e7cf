// keepalived (VRRP) on the namespace testbed, for two uses:
//  - the external cluster manager that triggers a takeover: keepalived runs in the primary's and
//    the backup's namespaces and only decides who is master; the hooks given as notifyMaster /
//    notifyBackup / notifyFault run on its state changes, and the VIP is left alone (t2cp moves it);
//  - the IP-only failover baseline: keepalived moves the VIP itself (manageVip), nothing replicates.
//
// Call order: ensureKeepalived() -> startKeepalived(tb, ns, dir, opts) -> transitions() /
// waitForState() ... -> stop(). The testbed's teardown also ends every process in its namespaces.
//
// What keepalived 2.2.7 (Debian 12) imposes, and what is done about it:
//  - advert_int: VRRPv3 takes 0.01 s to 40.95 s in steps of 10 ms; VRRPv2 rounds to whole seconds.
//    So every instance here is VRRPv3 and advertIntMs must be a multiple of 10.
//  - A VRRPv3 instance needs at least one virtual_ipaddress ("No VIP specified; at least one is
//    required" is a fatal config error; only VRRPv2 allows none, at whole-second adverts). Without
//    manageVip, the instance therefore carries a placeholder: a /32 from 198.19.255.0/24 (the VRID
//    picks the last byte) on `lo` with scope host, added on the master and removed elsewhere. Its
//    gratuitous ARPs go out on lo, i.e. nowhere; nothing routes to it; the real VIP is never touched.
//    (Never give manageVip or the placeholder an address in use: keepalived deletes its VIPs from
//    the interface whenever it is not master, at startup too.)
//  - Scripts: with `enable_script_security` and `script_user root` keepalived runs the notify
//    script as root, and refuses ("Unsafe permissions found for script ... - disabling", checked at
//    startup here) a script that a non-root user could change. The script lives in a fresh
//    directory of mode 0700 (under /tmp, sticky and world-writable, which it accepts).
//  - unicast_peer, not multicast: the adverts go to the peer's address only, so they cross just the
//    two switch ports involved (multicast floods every port, the gateway's included), nothing
//    depends on the bridge's multicast snooping, and with check_unicast_src a host only accepts
//    adverts from the listed peer.
//
// Every state change runs one notify script of ours (`notify`, arguments INSTANCE name STATE
// priority). It appends `STATE time_us priority` to the instance's states file (time_us: wall
// clock in microseconds when the script started, a few milliseconds after keepalived decided), then
// execs the hook of that state, if any, with its output appended to hooks.log. Note: keepalived
// enters BACKUP once at startup (before it can become MASTER), so notifyBackup also runs then.

import { execFileSync, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { isIPv4 } from 'node:net';
import path from 'node:path';
import { collect, waitForExit } from './processes.js';
import type { Testbed } from './testbed.js';
import { GiveUp, waitFor } from './wait.js';

/** The Debian package that provides /usr/sbin/keepalived. */
export const KEEPALIVED_PACKAGE = 'keepalived';

/** VRRPv3 advertisement interval limits in keepalived (centisecond field, 12 bits). */
export const ADVERT_MIN_MS = 10;
export const ADVERT_MAX_MS = 40_950;

const APT_TIMEOUT_MS = 300_000;

/** The version keepalived reports (`2.2.7`), or null when it is not installed. */
export function keepalivedVersion(): string | null {
  // keepalived prints its version on stderr.
  const r = spawnSync('keepalived', ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') return null;
  return /Keepalived v(\S+)/.exec(`${r.stdout ?? ''}${r.stderr ?? ''}`)?.[1] ?? 'unknown';
}

/**
 * Makes sure keepalived is installed and returns its version: installs the Debian package with
 * apt-get (as scripts/setup.sh does for the others) when it is missing and `install` is not false.
 * Debian's keepalived.service only starts with a non-empty /etc/keepalived/keepalived.conf, which
 * this never writes: installing starts no daemon.
 */
export function ensureKeepalived(opts: { install?: boolean } = {}): string {
  const have = keepalivedVersion();
  if (have) return have;
  const cmd = `apt-get install -y --no-install-recommends ${KEEPALIVED_PACKAGE}`;
  if (opts.install === false || process.getuid?.() !== 0) {
    throw new Error(`keepalived is not installed: run as root: ${cmd}`);
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const apt = (args: string[]): void => {
    execFileSync('apt-get', ['-o', 'DPkg::Lock::Timeout=120', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'], timeout: APT_TIMEOUT_MS });
  };
  const install = ['install', '-y', '-qq', '--no-install-recommends', KEEPALIVED_PACKAGE];
  try {
    apt(install);
  } catch {
    apt(['update', '-qq']); // a fresh machine's package lists may be missing or stale
    apt(install);
  }
  const v = keepalivedVersion();
  if (!v) throw new Error(`keepalived still missing after: ${cmd}`);
  return v;
}

export type VrrpRole = 'primary' | 'backup';
export type VrrpState = 'MASTER' | 'BACKUP' | 'FAULT' | 'STOP' | 'DELETED';

export interface KeepalivedOptions {
  /** primary: initial state MASTER (unless preempt is false; keepalived 2.2.7 still passes through BACKUP at startup); backup: BACKUP. */
  role: VrrpRole;
  /** The interface VRRP runs on (the testbed's e0). */
  iface: string;
  /** Virtual router id, 1..255, the same on both hosts. */
  vrid: number;
  /** 1..254; the higher one becomes master. */
  priority: number;
  /** Advertisement interval: a multiple of 10 ms, 10..40950 (VRRPv3). */
  advertIntMs: number;
  /** The other host's address on iface: adverts go there by unicast (see the header). */
  peerAddr: string;
  /** This host's source address for the adverts (default: iface's primary address). */
  srcAddr?: string;
  /**
   * IP-only mode: the address keepalived itself puts on iface when master and removes otherwise
   * ('198.18.1.10' or '198.18.1.10/24'; without a length /32). Absent: keepalived manages no real
   * address (a placeholder on lo, see the header).
   */
  manageVip?: string;
  /** false: `nopreempt` (and initial state BACKUP on both): a returning higher-priority host stays backup. Default true. */
  preempt?: boolean;
  /** Commands (argv, run as root, not through a shell) for entering MASTER / BACKUP / FAULT. */
  notifyMaster?: string[];
  notifyBackup?: string[];
  notifyFault?: string[];
}

export interface KeepalivedFiles {
  /** The instance's own directory (mode 0700): everything below lives there. */
  dir: string;
  conf: string;
  notify: string;
  /** One `STATE time_us priority` line per state change. */
  states: string;
  /** stdout and stderr of the hooks. */
  hooksLog: string;
  pid: string;
  vrrpPid: string;
}

export interface VrrpTransition {
  state: VrrpState;
  /** Wall-clock time (µs since the epoch) when the notify script started. */
  timeUs: number;
  priority: number;
}

/** The VRRPv3 master-down interval a backup of this priority waits: 3 × advert + skew (RFC 5798). */
export function masterDownMs(advertIntMs: number, backupPriority: number): number {
  return 3 * advertIntMs + ((256 - backupPriority) * advertIntMs) / 256;
}

/** The placeholder address of an instance without manageVip. */
export function placeholderVip(vrid: number): string {
  return `198.19.255.${vrid}`;
}

const SAFE_PATH = /^\/[A-Za-z0-9._\/-]+$/; // keepalived's config tokenizer splits at blanks and quotes

function validate(o: KeepalivedOptions): void {
  const bad = (what: string): never => { throw new Error(`keepalived: ${what}`); };
  if (o.role !== 'primary' && o.role !== 'backup') bad(`role must be primary or backup, not ${String(o.role)}`);
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(o.iface)) bad(`bad interface name ${JSON.stringify(o.iface)}`);
  if (!(Number.isInteger(o.vrid) && o.vrid >= 1 && o.vrid <= 255)) bad(`vrid must be 1..255, not ${o.vrid}`);
  if (!(Number.isInteger(o.priority) && o.priority >= 1 && o.priority <= 254)) bad(`priority must be 1..254, not ${o.priority}`);
  if (!(Number.isInteger(o.advertIntMs) && o.advertIntMs % 10 === 0 && o.advertIntMs >= ADVERT_MIN_MS && o.advertIntMs <= ADVERT_MAX_MS)) {
    bad(`advertIntMs must be a multiple of 10 in ${ADVERT_MIN_MS}..${ADVERT_MAX_MS} (VRRPv3), not ${o.advertIntMs}`);
  }
  if (!isIPv4(o.peerAddr)) bad(`peerAddr must be an IPv4 address, not ${JSON.stringify(o.peerAddr)}`);
  if (o.srcAddr !== undefined && !isIPv4(o.srcAddr)) bad(`srcAddr must be an IPv4 address, not ${JSON.stringify(o.srcAddr)}`);
  if (o.manageVip !== undefined) {
    const [a, len, extra] = o.manageVip.split('/');
    if (!isIPv4(a) || extra !== undefined || (len !== undefined && !(/^\d+$/.test(len) && Number(len) <= 32))) {
      bad(`manageVip must be IPv4[/len], not ${JSON.stringify(o.manageVip)}`);
    }
  }
  for (const [name, argv] of [['notifyMaster', o.notifyMaster], ['notifyBackup', o.notifyBackup], ['notifyFault', o.notifyFault]] as const) {
    if (argv !== undefined && (argv.length === 0 || argv.some((a) => typeof a !== 'string' || a.includes('\0')))) bad(`${name} must be a non-empty argv`);
  }
}

/** The keepalived.conf text of one instance. Pure: writes nothing. */
export function keepalivedConfig(o: KeepalivedOptions, notifyScript: string): string {
  validate(o);
  if (!SAFE_PATH.test(notifyScript)) throw new Error(`keepalived: notify script path must be plain: ${notifyScript}`);
  const preempt = o.preempt ?? true;
  const state = o.role === 'primary' && preempt ? 'MASTER' : 'BACKUP';
  const vip = o.manageVip !== undefined
    ? `${o.manageVip.includes('/') ? o.manageVip : `${o.manageVip}/32`} dev ${o.iface}`
    : `${placeholderVip(o.vrid)}/32 dev lo scope host`;
  const advert = (o.advertIntMs / 1000).toFixed(2);
  return [
    `# t2cp-ar testbed: ${o.role}, VRID ${o.vrid}, ${o.manageVip !== undefined ? `manages ${o.manageVip}` : 'manages no real address (placeholder on lo)'}`,
    'global_defs {',
    `  router_id t2cp_${o.role}_${o.vrid}`,
    '  script_user root',
    '  enable_script_security',
    '}',
    `vrrp_instance t2cp_${o.vrid} {`,
    `  state ${state}`,
    `  interface ${o.iface}`,
    `  virtual_router_id ${o.vrid}`,
    `  priority ${o.priority}`,
    `  advert_int ${advert}`,
    '  version 3',
    ...(preempt ? [] : ['  nopreempt']),
    ...(o.srcAddr ? [`  unicast_src_ip ${o.srcAddr}`] : []),
    '  check_unicast_src',
    '  unicast_peer {',
    `    ${o.peerAddr}`,
    '  }',
    '  virtual_ipaddress {',
    `    ${vip}`,
    '  }',
    `  notify ${notifyScript}`,
    '}',
    '',
  ].join('\n');
}

const shq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** The notify script's text: record the transition, then exec that state's hook. Pure. */
export function notifyScriptText(statesFile: string, hooksLog: string, hooks: Pick<KeepalivedOptions, 'notifyMaster' | 'notifyBackup' | 'notifyFault'>): string {
  const arm = (state: string, argv: string[] | undefined): string[] =>
    argv ? [`  ${state}) exec >>${shq(hooksLog)} 2>&1 </dev/null; exec ${argv.map(shq).join(' ')} ;;`] : [];
  return [
    '#!/bin/bash',
    '# keepalived notify: $1 INSTANCE|GROUP, $2 name, $3 state, $4 priority',
    't=${EPOCHREALTIME/[.,]/}',
    `printf '%s %s %s\\n' "$3" "$t" "$4" >> ${shq(statesFile)}`,
    'case "$3" in',
    ...arm('MASTER', hooks.notifyMaster),
    ...arm('BACKUP', hooks.notifyBackup),
    ...arm('FAULT', hooks.notifyFault),
    'esac',
    'exit 0',
    '',
  ].join('\n');
}

/** The transitions recorded in a states file so far (a partly written last line is skipped). */
export function readTransitions(statesFile: string): VrrpTransition[] {
  let text: string;
  try { text = fs.readFileSync(statesFile, 'utf8'); } catch { return []; }
  const out: VrrpTransition[] = [];
  for (const line of text.split('\n')) {
    const m = /^(MASTER|BACKUP|FAULT|STOP|DELETED) (\d+) (\d+)$/.exec(line);
    if (m) out.push({ state: m[1] as VrrpState, timeUs: Number(m[2]), priority: Number(m[3]) });
  }
  return out;
}

export interface Keepalived {
  readonly role: VrrpRole;
  readonly ns: string;
  readonly options: KeepalivedOptions;
  readonly files: KeepalivedFiles;
  readonly child: ChildProcess;
  /** PID of keepalived's main process (the spawned child: `ip netns exec` execs it). */
  readonly pid: number;
  /** keepalived's own log (-l -D: console, detailed). */
  readonly output: { stdout: string; stderr: string };
  transitions(): VrrpTransition[];
  /** The state of the last transition, or null before the first. */
  state(): VrrpState | null;
  /**
   * Resolves with the first transition into `state` at or after `afterUs` (default: any time);
   * rejects at the deadline or when keepalived exits.
   */
  waitForState(state: VrrpState, opts: { timeoutMs: number; afterUs?: number }): Promise<VrrpTransition>;
  /** SIGTERM by PID, wait (then SIGKILL); also its VRRP child if it outlived it. Idempotent. */
  stop(timeoutMs?: number): Promise<void>;
}

const STARTUP_TIMEOUT_MS = 10_000;

function pidOf(file: string): number | null {
  try {
    const n = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

/** Is `pid` a live keepalived started with this configuration file (so never someone else's)? */
function ours(pid: number, conf: string): boolean {
  try {
    if (/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))) return false;
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv.includes(conf) && path.basename(argv[0] ?? '') === 'keepalived';
  } catch {
    return false;
  }
}

/**
 * Writes the configuration and the notify script into a new directory under `dir` and starts
 * keepalived in the foreground in namespace `ns` (VRRP subsystem only, own pid files, so several
 * instances on one host never collide). Resolves once keepalived reports its startup complete.
 */
export async function startKeepalived(tb: Testbed, ns: string, dir: string, opts: KeepalivedOptions): Promise<Keepalived> {
  validate(opts);
  const own = fs.mkdtempSync(path.join(dir, `keepalived-${opts.role}-${opts.vrid}-`));
  fs.chmodSync(own, 0o700);
  const files: KeepalivedFiles = {
    dir: own,
    conf: path.join(own, 'keepalived.conf'),
    notify: path.join(own, 'notify.sh'),
    states: path.join(own, 'states'),
    hooksLog: path.join(own, 'hooks.log'),
    pid: path.join(own, 'keepalived.pid'),
    vrrpPid: path.join(own, 'vrrp.pid'),
  };
  if (!SAFE_PATH.test(own)) throw new Error(`keepalived: directory path must be plain (no blanks or quotes): ${own}`);
  fs.writeFileSync(files.notify, notifyScriptText(files.states, files.hooksLog, opts), { mode: 0o700 });
  fs.writeFileSync(files.conf, keepalivedConfig(opts, files.notify), { mode: 0o600 });
  fs.writeFileSync(files.states, '', { mode: 0o600 });

  const child = tb.spawn(ns, ['keepalived', '--dont-fork', '--log-console', '--log-detail', '--no-syslog', '--vrrp',
    '--dont-respawn', '-f', files.conf, '-p', files.pid, '-r', files.vrrpPid, '-c', path.join(own, 'checkers.pid')]);
  const output = collect(child);
  const log = (): string => `${output.stdout}${output.stderr}`;
  const exited = (): boolean => child.exitCode !== null || child.signalCode !== null;
  let vrrpPid: number | null = null;

  const stop = async (timeoutMs = 5_000): Promise<void> => {
    vrrpPid ??= pidOf(files.vrrpPid);
    if (!exited()) {
      child.kill('SIGTERM');
      await waitForExit(child, timeoutMs).catch(async () => {
        child.kill('SIGKILL');
        await waitForExit(child, 2_000).catch(() => undefined);
      });
    }
    // The VRRP child ends with its parent; only if it did not, end it (checked to be this one).
    if (vrrpPid !== null && ours(vrrpPid, files.conf)) {
      await waitFor(() => !ours(vrrpPid!, files.conf), { timeoutMs: 2_000, what: 'keepalived VRRP child to exit' })
        .catch(() => { try { process.kill(vrrpPid!, 'SIGKILL'); } catch { /* gone */ } });
    }
  };

  try {
    await waitFor(() => {
      if (exited()) throw new GiveUp(`keepalived in ${ns} exited (${child.exitCode ?? child.signalCode}):\n${log().slice(-4000)}`);
      return /Startup complete/.test(log());
    }, { timeoutMs: STARTUP_TIMEOUT_MS, what: `keepalived (${opts.role}) startup in ${ns}` });
    vrrpPid = pidOf(files.vrrpPid);
    // keepalived logs configuration problems and carries on: refuse them here, a test must not run on a surprise.
    const problems = log().split('\n').filter((l) => /SECURITY VIOLATION|not valid|outside range|rounding|No VIP|unsafe|WARNING - default user/i.test(l));
    if (problems.length) throw new Error(`keepalived (${opts.role}) reported:\n${problems.join('\n')}`);
  } catch (e) {
    await stop();
    throw e;
  }

  const transitions = (): VrrpTransition[] => readTransitions(files.states);
  return {
    role: opts.role, ns, options: opts, files, child, output,
    pid: child.pid!,
    transitions,
    state: () => transitions().at(-1)?.state ?? null,
    waitForState: (state, w) => waitFor(() => {
      const t = transitions().find((x) => x.state === state && x.timeUs >= (w.afterUs ?? 0));
      if (t) return t;
      if (exited()) throw new GiveUp(`keepalived (${opts.role}) exited before ${state}:\n${log().slice(-2000)}`);
      return null;
    }, { timeoutMs: w.timeoutMs, intervalMs: 5, what: `keepalived (${opts.role}) in ${state}` }),
    stop,
  };
}

/** Wall clock in microseconds, comparable with the notify script's times. */
export function nowUs(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

/**
 * The failure used by the tests and the benchmark: `ip link set IFACE down` inside namespace `ns`
 * (the caller's testbed's), bracketed by wall-clock readings in µs taken in the same shell right
 * before and after the command (bash's EPOCHREALTIME: no fork, the same clock as the notify
 * script's). The link is surely down at afterUs; beforeUs - afterUs is about a millisecond.
 */
export function timedLinkDown(ns: string, iface: string): { beforeUs: number; afterUs: number } {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(iface)) throw new Error(`bad interface name ${JSON.stringify(iface)}`);
  const r = spawnSync('ip', ['netns', 'exec', ns, 'bash', '-c',
    `echo \${EPOCHREALTIME/[.,]/}; ip link set ${iface} down || exit 1; echo \${EPOCHREALTIME/[.,]/}`],
  { encoding: 'utf8', timeout: 10_000 });
  const [b, a] = (r.stdout ?? '').trim().split('\n').map(Number);
  if (r.status !== 0 || !b || !a) throw new Error(`ip link set ${iface} down in ${ns} failed: ${r.stderr ?? r.error?.message}`);
  return { beforeUs: b, afterUs: a };
}
