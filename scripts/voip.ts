// The papers' VoIP use case on the testbed, shared by test/e2e/sip.test.ts and
// `npm run demo:voip`: Kamailio (Debian's `kamailio`) as a stateful SIP proxy
// and registrar with record-routing, the same configuration on the primary
// and the backup, on the VIP over UDP (scripts/sip/kamailio.cfg); SIPp
// (`sip-tester`) as the callee, which registers, and as callers
// (scripts/sip/*.xml: a call is an INVITE, a re-INVITE after HOLD_MS and a BYE
// after another HOLD_MS). The calls run while the primary's link goes down;
// new calls follow the takeover.
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { collect, pinned, repoRoot, waitForExit } from './processes.js';
import type { ServiceStarter, TakeoverLab } from './takeover-lab.js';
import type { Testbed } from './testbed.js';
import { waitFor } from './wait.js';
import { readLog } from './replica-check.js';

export const SIP_PORT = 5060;
/**
 * How the calls' signalling travels: 'udp'; or 'tcp': the callers over TCP to the proxy, which
 * opens its own TCP connection to the callee (the callee registers over UDP, its contact TCP).
 */
export type SipTransport = 'udp' | 'tcp';
const CALLEE_PORT = 5070;
const KAMAILIO = '/usr/sbin/kamailio';
const SIPP = '/usr/bin/sipp';
const SIP_DIR = path.join(repoRoot, 'scripts', 'sip');
/** Between a call's answer and its re-INVITE, and between that and its BYE. */
export const HOLD_MS = 2000;

/** Kamailio's and SIPp's programs, or an error naming the packages. */
export function checkVoipSoftware(): void {
  for (const bin of [KAMAILIO, SIPP]) if (!fs.existsSync(bin)) throw new Error(`${bin} not found (scripts/setup.sh installs the kamailio and sip-tester packages)`);
}

/** Kamailio's module folder (multiarch), or an error naming the package. */
function kamailioModules(): string {
  for (const base of ['/usr/lib', ...fs.readdirSync('/usr/lib').map((d) => path.join('/usr/lib', d))]) {
    const dir = path.join(base, 'kamailio', 'modules');
    if (fs.existsSync(path.join(dir, 'tm.so'))) return dir;
  }
  throw new Error('kamailio modules not found under /usr/lib/*/kamailio/modules (scripts/setup.sh installs the `kamailio` package)');
}

/**
 * Kamailio in `ns` on the VIP, from scripts/sip/kamailio.cfg; resolved once it listens. On the
 * backup it starts before t2cp makes the VIP local: it binds it as a non-local address
 * (net.ipv4.ip_nonlocal_bind, as the README says).
 */
async function startKamailio(tb: Testbed, ns: string, dir: string, name: string, transport: SipTransport, media: Media, cpus?: string): Promise<ChildProcess> {
  if (ns === tb.ns.backup) await tb.exec(ns, ['sysctl', '-qw', 'net.ipv4.ip_nonlocal_bind=1']);
  if (media === 'rtpengine') await startRtpengine(tb, ns, dir, name);
  const cfg = fs.readFileSync(path.join(SIP_DIR, 'kamailio.cfg'), 'utf8').replaceAll('__VIP__', tb.addr.vip).replaceAll('__MPATH__', kamailioModules())
    .replaceAll('__TCP_LISTEN__', transport === 'tcp' ? `listen=tcp:${tb.addr.vip}:${SIP_PORT}` : '')
    .replaceAll('__RTPENGINE__', media === 'rtpengine' ? `loadmodule "rtpengine.so"\nmodparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:${RTPENGINE_NG_PORT}")` : '')
    .replaceAll('__MEDIA__', media === 'rtpengine' ? 'if (has_body("application/sdp") || is_method("BYE")) rtpengine_manage();' : '')
    .replaceAll('__MEDIA_REPLY_ROUTE__', media === 'rtpengine' ? 'onreply_route {\n\tif (has_body("application/sdp")) rtpengine_manage();\n}' : '');
  const file = path.join(dir, `kamailio-${name}.cfg`);
  const run = path.join(dir, `kamailio-${name}`);
  fs.mkdirSync(run, { recursive: true });
  fs.writeFileSync(file, cfg);
  // -m: shared memory (MB) for the transactions of a few thousand calls a second (the default 64 runs out near 500).
  const child = tb.spawn(ns, [...pinned(cpus), KAMAILIO, '-f', file, '-DD', '-E', '-m', '512', '-Y', run, '-w', run]);
  const out = collect(child);
  await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`kamailio (${name}) exited ${child.exitCode}: ${out.stderr.slice(-2000)}`);
    const r = await tb.exec(ns, ['ss', '-Hulpn', `sport = :${SIP_PORT}`]);
    return r.stdout.includes('kamailio');
  }, { timeoutMs: 15_000, what: `kamailio listening on the ${name}` });
  return child;
}

/**
 * Where the calls' media goes: 'direct', phone to phone (the proxy carries signalling only); or
 * 'rtpengine', relayed by Debian's rtpengine on each proxy host, Kamailio rewriting every SDP to
 * the relay's ports on the VIP (RTPENGINE_PORTS).
 */
export type Media = 'direct' | 'rtpengine';
const RTPENGINE = '/usr/bin/rtpengine';
const RTPENGINE_NG_PORT = 2223;
export const RTPENGINE_PORTS = { min: 30000, max: 30099 };

/**
 * rtpengine in `ns`, relaying on the VIP, its control (ng) on loopback; resolved once it listens.
 * Not the system's /etc/rtpengine/rtpengine.conf: its CLI and HTTP ports on `localhost`, which
 * Debian's /etc/hosts also names ::1, fail where the testbed has no IPv6.
 */
async function startRtpengine(tb: Testbed, ns: string, dir: string, name: string): Promise<ChildProcess> {
  if (!fs.existsSync(RTPENGINE)) throw new Error(`${RTPENGINE} not found (scripts/setup.sh installs the rtpengine-daemon package)`);
  const child = tb.spawn(ns, [RTPENGINE, '--config-file=none', `--interface=${tb.addr.vip}`, `--listen-ng=127.0.0.1:${RTPENGINE_NG_PORT}`, `--port-min=${RTPENGINE_PORTS.min}`,
    `--port-max=${RTPENGINE_PORTS.max}`, '--table=-1', '--foreground', '--log-stderr', `--pidfile=${path.join(dir, `rtpengine-${name}.pid`)}`]);
  const out = collect(child);
  await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`rtpengine (${name}) exited ${child.exitCode}: ${out.stderr.slice(-2000)}`);
    return (await tb.exec(ns, ['ss', '-Hulpn', `sport = :${RTPENGINE_NG_PORT}`])).stdout.includes('rtpengine');
  }, { timeoutMs: 15_000, what: `rtpengine listening on the ${name}` });
  return child;
}

/** The takeover lab's service: Kamailio on each host (startTakeoverLab's `service`), rtpengine beside it for 'rtpengine' media. */
export const kamailioService = (tb: Testbed, dir: string, transport: SipTransport = 'udp', media: Media = 'direct',
  cpus: { primary?: string; backup?: string } = {}): ServiceStarter =>
  async (ns, side, log) => ({ child: await startKamailio(tb, ns, dir, side, transport, media, cpus[side]), log });

export interface SippRun { code: number | null; stats: Record<string, string>; out: string }

/**
 * SIPp in the client's namespace with a scenario of scripts/sip/ (__HOLD_MS__ filled in: `holdMs`),
 * ended by its own -timeout after `timeoutS` whatever is left under way.
 */
function sipp(tb: Testbed, dir: string, name: string, scenario: string, args: string[], holdMs = HOLD_MS, timeoutS = 60, cpus?: string): Promise<SippRun> {
  const xml = fs.readFileSync(path.join(SIP_DIR, scenario), 'utf8').replaceAll('__HOLD_MS__', String(holdMs));
  const file = path.join(dir, `${name}-${scenario}`);
  fs.writeFileSync(file, xml);
  const stat = path.join(dir, `${name}-stat.csv`);
  const child = tb.spawn(tb.ns.client, [...pinned(cpus), SIPP, ...args, '-sf', file, '-nostdin', '-trace_stat', '-stf', stat, '-fd', '1', '-trace_err',
    '-error_file', path.join(dir, `${name}-errors.log`), '-timeout', `${timeoutS}s`]);
  const out = collect(child);
  const stats = () => lastStats(fs.existsSync(stat) ? fs.readFileSync(stat, 'utf8') : '');
  return waitForExit(child, (timeoutS + 5) * 1000).then((code) => ({ code, stats: stats(), out: out.stdout + out.stderr }), async () => {
    // Overloaded past its own -timeout: ended by its PID, its last statistics what it counted.
    child.kill('SIGKILL');
    await waitForExit(child, 5_000);
    return { code: null, stats: stats(), out: `${out.stdout}${out.stderr}\n(sipp ${name} ended after ${timeoutS + 5} s)` };
  });
}

/** The last row of SIPp's statistics file, by column name. */
function lastStats(csv: string): Record<string, string> {
  const rows = csv.trim().split('\n').map((l) => l.split(';'));
  const [head, last] = [rows[0] ?? [], rows[rows.length - 1] ?? []];
  return Object.fromEntries(head.map((h, i) => [h, last[i] ?? '']));
}

/** The callee (client 198.18.0.3) registers as bob at `contact` through the proxy on the VIP. */
async function register(tb: Testbed, dir: string, contact: string): Promise<SippRun> {
  const registered = await sipp(tb, dir, 'register', 'register.xml', [`${tb.addr.vip}:${SIP_PORT}`, '-s', 'bob', '-set', 'contact', contact,
    '-i', tb.addr.clients[1]!, '-p', '5071', '-m', '1']);
  if (registered.code !== 0) throw new Error(`the callee's REGISTER failed (sipp exit ${registered.code}): ${registered.out.slice(-2000)}`);
  return registered;
}

export interface CallLoad {
  /** SIPp's counts at the end: calls successful, not (failed or never ended), retransmissions of caller and callee. */
  successful: number;
  failed: number;
  retransmissions: number;
  /** Calls completed per second, as the caller's SIPp timed the run (its start and end times). */
  perS: number;
}

/**
 * `calls` calls, each the INVITE, re-INVITE and BYE of runCallsThroughFailure back to back, `rate`
 * new calls a second (SIPp's pace: open loop, whether or not the proxy keeps up). On a lab (or a
 * lone Kamailio) on the VIP; the callee registers first. A failed call is counted, not thrown.
 */
export async function runCallLoad(tb: Testbed, dir: string, o: { calls: number; rate: number; cpus?: string }): Promise<CallLoad> {
  const [caller, callee] = tb.addr.clients as [string, string];
  await register(tb, dir, `${callee}:${CALLEE_PORT}`);
  // Twice the time the pace takes, and 10 s for the last calls: then what is left under way fails.
  const timeoutS = Math.ceil((2 * o.calls) / o.rate) + 10;
  const calleeRun = sipp(tb, dir, 'load-callee', 'uas.xml', ['-i', callee, '-p', String(CALLEE_PORT), '-m', String(o.calls)], 0, timeoutS + 5, o.cpus);
  const callerRun = await sipp(tb, dir, 'load-caller', 'uac.xml', [`${tb.addr.vip}:${SIP_PORT}`, '-s', 'bob', '-i', caller, '-p', '5062',
    '-m', String(o.calls), '-l', String(o.calls), '-r', String(o.rate)], 0, timeoutS, o.cpus);
  const calleeDone = await calleeRun;
  const count = (r: SippRun, k: string) => Number(r.stats[k] ?? NaN);
  // StartTime and CurrentTime (of the last row: the end) are `date<TAB>time<TAB>epoch seconds`.
  const epoch = (k: string) => Number((callerRun.stats[k] ?? '').split('\t').pop());
  const successful = count(callerRun, 'SuccessfulCall(C)');
  return {
    successful,
    failed: o.calls - (Number.isFinite(successful) ? successful : 0),
    retransmissions: count(callerRun, 'Retransmissions(C)') + count(calleeDone, 'Retransmissions(C)'),
    perS: successful / (epoch('CurrentTime') - epoch('StartTime')),
  };
}

export interface VoipRun {
  registered: SippRun;
  /** The calls under way at the failure, and the calls made after the takeover. */
  during: SippRun;
  after: SippRun;
  callee: SippRun;
  /** Wall-clock ms the primary's link went down. */
  failMs: number;
}

/**
 * On a lab whose service is kamailioService (clients 198.18.0.2, the caller, and .3, the callee):
 * the callee registers, `calls` calls start at 10 a second, the primary's link goes down once they
 * are answered (before their re-INVITEs), and `callsAfter` calls follow the takeover. `say`: progress.
 */
export async function runCallsThroughFailure(tb: Testbed, dir: string, pair: TakeoverLab,
  o: { calls: number; callsAfter: number; say?: (s: string) => void; transport?: SipTransport }): Promise<VoipRun> {
  const say = o.say ?? (() => {});
  const [caller, callee] = tb.addr.clients as [string, string];
  const vip = `${tb.addr.vip}:${SIP_PORT}`;
  const tcp = o.transport === 'tcp' ? ['-t', 't1'] : [];
  const contact = `${callee}:${CALLEE_PORT}${o.transport === 'tcp' ? ';transport=tcp' : ''}`;
  const registered = await register(tb, dir, contact);
  say(`callee bob registered at ${contact} through the proxy at ${vip}`);
  const calleeRun = sipp(tb, dir, 'callee', 'uas.xml', [...tcp, '-i', callee, '-p', String(CALLEE_PORT), '-m', String(o.calls + o.callsAfter)]);
  const during = sipp(tb, dir, 'caller', 'uac.xml', [vip, ...tcp, '-s', 'bob', '-i', caller, '-p', '5062', '-m', String(o.calls), '-l', String(o.calls), '-r', '10']);
  say(`${o.calls} calls from ${caller}: each INVITE, a re-INVITE ${HOLD_MS} ms later, a BYE ${HOLD_MS} ms after that`);
  await new Promise((r) => setTimeout(r, HOLD_MS / 2 + 1000));
  const failMs = await pair.fail('link-down');
  say(`the primary's link goes down, the calls answered and waiting for their re-INVITEs`);
  await waitFor(() => readLog(pair.logs.backupReport)[0], { timeoutMs: 15_000, what: 'the takeover' });
  say('the backup took over: its Kamailio answers at the VIP');
  const after = sipp(tb, dir, 'after', 'uac.xml', [vip, ...tcp, '-s', 'bob', '-i', caller, '-p', '5064', '-m', String(o.callsAfter), '-l', String(o.callsAfter), '-r', '10']);
  say(`${o.callsAfter} new calls through the backup`);
  return { registered, during: await during, after: await after, callee: await calleeRun, failMs };
}
