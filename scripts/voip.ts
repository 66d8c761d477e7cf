// The papers' VoIP use case on the testbed, shared by test/e2e/sip.test.ts and
// `npm run demo:voip`: Kamailio (Debian's `kamailio`) as a stateful SIP proxy
// and registrar with record-routing, the same configuration on the primary
// and the backup, on the VIP over UDP (scripts/sip/kamailio.cfg); SIPp
// (`sip-tester`) as the callee, which registers, and as callers
// (scripts/sip/*.xml: a call is an INVITE, a re-INVITE after HOLD_MS and a BYE
// after another HOLD_MS). The calls run while the primary's link goes down;
// new calls follow the takeover. With media relayed by rtpengine, runMediaCalls
// plays RTP through the relay to the callee, which echoes it, and
// checkRelayedMedia follows every packet of the capture both ways.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { collect, pinned, repoRoot, waitForExit } from './processes.js';
import type { ServiceStarter, TakeoverLab } from './takeover-lab.js';
import type { Testbed } from './testbed.js';
import { waitFor } from './wait.js';
import { readLog } from './replica-check.js';
import { startCapture, readUdpDatagrams, type Datagram } from './capture.js';

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
 * SIPp in the client's namespace with a scenario of scripts/sip/ (__HOLD_MS__ filled in: `holdMs`;
 * other words in double underscores: `fill`), ended by its own -timeout after `timeoutS` whatever
 * is left under way.
 */
function sipp(tb: Testbed, dir: string, name: string, scenario: string, args: string[], holdMs = HOLD_MS, timeoutS = 60, cpus?: string,
  fill: Record<string, string> = {}): Promise<SippRun> {
  let xml = fs.readFileSync(path.join(SIP_DIR, scenario), 'utf8').replaceAll('__HOLD_MS__', String(holdMs));
  for (const [word, value] of Object.entries(fill)) xml = xml.replaceAll(`__${word}__`, value);
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

// Media: calls whose RTP rtpengine relays (kamailioService(..., 'rtpengine')), captured where the
// phones are and compared packet by packet, so that a takeover can be judged by what the callee
// heard and what came back, not by SIPp's call counts alone.

/** sip-tester's 7 s of A-law RTP (236 packets of 30 ms): the audio the callers play. */
const G711A_PCAP = '/usr/share/sip-tester/g711a.pcap';
/** The phones' RTP ports (SIPp's -mp), on their own addresses. */
const CALLER_MEDIA_PORT = 6000;
const CALLEE_MEDIA_PORT = 6010;
/** Between the end of a caller's stream and its BYE: the callee's echo of the last packets comes back before rtpengine ends the call. */
const MEDIA_DRAIN_MS = 500;

/** The payload of G711A_PCAP's RTP packets, as the raw A-law file SIPp's rtp_stream plays (it writes its own RTP headers). */
function writeAlaw(file: string): void {
  const chunks = readUdpDatagrams(G711A_PCAP).datagrams.map(({ data }) => {
    // RTP header: 12 bytes, 4 per CSRC, and an extension header with its own length when flagged.
    let at = 12 + 4 * (data[0]! & 0x0f);
    if (data[0]! & 0x10) at += 4 + 4 * data.readUInt16BE(at + 2);
    return data.subarray(at);
  });
  fs.writeFileSync(file, Buffer.concat(chunks));
}

export interface MediaRun {
  caller: SippRun;
  callee: SippRun;
  /** The capture in the client's namespace: SIP and the relay's ports on the VIP, whole frames; and tcpdump's own counts. */
  capture: string;
  captured: { captured: number; dropped: number };
}

/**
 * On a lab (or a lone Kamailio) with rtpengine media: the callee registers and answers with
 * SIPp's -rtp_echo (every RTP datagram it gets goes back to its sender, the relay); `calls`
 * calls at once, each playing `mediaMs` ms of A-law RTP (uac-media.xml: its own SSRC, sequence
 * numbers from 0); all of it captured on the clients' link (checkRelayedMedia reads it).
 * `ringMs`: how long the callee rings before it answers (0).
 * `name` keeps the files of several runs in one `dir` apart; `during`, once the calls started,
 * runs beside them (a failure of the primary), its end awaited before returning.
 */
export async function runMediaCalls(tb: Testbed, dir: string,
  o: { calls: number; mediaMs: number; name?: string; ringMs?: number; during?: () => Promise<void> }): Promise<MediaRun> {
  const [caller, callee] = tb.addr.clients as [string, string];
  const name = o.name ?? 'media';
  await register(tb, dir, `${callee}:${CALLEE_PORT}`);
  const audio = path.join(dir, 'g711a.alaw');
  if (!fs.existsSync(audio)) writeAlaw(audio);
  const capture = path.join(dir, `${name}.pcap`);
  const cap = await startCapture(tb, tb.ns.client, 'c0',
    `udp and host ${tb.addr.vip} and (port ${SIP_PORT} or portrange ${RTPENGINE_PORTS.min}-${RTPENGINE_PORTS.max})`, capture);
  // The callee's timeout covers the caller's, which covers the media, its drain and the signalling.
  const timeoutS = Math.ceil((o.mediaMs + (o.ringMs ?? 0) + MEDIA_DRAIN_MS) / 1000) + 20;
  const calleeRun = sipp(tb, dir, `${name}-callee`, 'uas-media.xml', ['-i', callee, '-p', String(CALLEE_PORT), '-mp', String(CALLEE_MEDIA_PORT),
    '-rtp_echo', '-m', String(o.calls), '-d', String(o.ringMs ?? 0)], 0, timeoutS + 10);
  let callerRun: SippRun;
  let captured: MediaRun['captured'];
  try {
    const calling = sipp(tb, dir, `${name}-caller`, 'uac-media.xml', [`${tb.addr.vip}:${SIP_PORT}`, '-s', 'bob', '-i', caller, '-p', '5066',
      '-mp', String(CALLER_MEDIA_PORT), '-m', String(o.calls), '-l', String(o.calls), '-r', '10'], 0, timeoutS, undefined,
    { MEDIA_MS: String(o.mediaMs), DRAIN_MS: String(MEDIA_DRAIN_MS), AUDIO: audio });
    // Both awaited whichever fails first: SIPp ends by its own timeout, the caller's `during` by its.
    const [called, happened] = await Promise.allSettled([calling, o.during?.()]);
    if (called.status === 'rejected') throw called.reason;
    if (happened.status === 'rejected') throw happened.reason;
    callerRun = called.value;
  } finally {
    // The caller has had the answers to its BYEs, after the drain: nothing of the calls is left to capture.
    captured = await cap.stop();
  }
  return { caller: callerRun, callee: await calleeRun, capture, captured };
}

/** One RTP packet of a capture; `digest`: SHA-1 of the RTP header and payload, `data` those bytes. */
export interface RtpPacket { tsMs: number; src: string; sport: number; dst: string; dport: number; ssrc: number; seq: number; digest: string; data: Buffer }

/** An SDP body a phone got from the VIP (SIP over UDP): the message's first line, its Call-ID, and the connection address and audio port it names. */
export interface SdpSeen { tsMs: number; to: string; firstLine: string; callId: string; addr: string; port: number }

export interface MediaCapture { rtp: RtpPacket[]; sdps: SdpSeen[]; /** Datagrams on the relay's ports that are not RTP (RTCP, STUN...); frames not read. */ notRtp: number; skipped: number }

const inRelayRange = (port: number) => port >= RTPENGINE_PORTS.min && port <= RTPENGINE_PORTS.max;

/** RTP on the VIP's relay ports, and the SDPs the phones got, from a capture of runMediaCalls. */
export function readMediaCapture(file: string, vip: string): MediaCapture {
  const { datagrams, skipped } = readUdpDatagrams(file);
  const rtp: RtpPacket[] = [];
  const sdps: SdpSeen[] = [];
  let notRtp = 0;
  for (const d of datagrams) {
    if ((d.src === vip && inRelayRange(d.sport)) || (d.dst === vip && inRelayRange(d.dport))) {
      const p = rtpPacket(d);
      if (p) rtp.push(p);
      else notRtp++;
    } else if (d.src === vip && d.sport === SIP_PORT) {
      const sdp = sdpOf(d);
      if (sdp) sdps.push(sdp);
    }
  }
  return { rtp, sdps, notRtp, skipped };
}

/** RTP version 2, not RTCP (payload types 72-76 with the marker bit, i.e. RTCP packet types 200-204: RFC 5761 4). */
function rtpPacket(d: Datagram): RtpPacket | null {
  const b = d.data;
  if (b.length < 12 || b[0]! >> 6 !== 2 || (b[1]! >= 200 && b[1]! <= 204)) return null;
  return { tsMs: d.tsMs, src: d.src, sport: d.sport, dst: d.dst, dport: d.dport, ssrc: b.readUInt32BE(8), seq: b.readUInt16BE(2),
    digest: createHash('sha1').update(b).digest('hex'), data: b };
}

function sdpOf(d: Datagram): SdpSeen | null {
  const text = d.data.toString('latin1');
  const [head, body] = [text.slice(0, text.indexOf('\r\n\r\n')), text.slice(text.indexOf('\r\n\r\n') + 4)];
  if (!/^content-type:\s*application\/sdp/im.test(head)) return null;
  return { tsMs: d.tsMs, to: `${d.dst}:${d.dport}`, firstLine: head.split('\r\n')[0]!, callId: /^(?:call-id|i):\s*(\S+)/im.exec(head)?.[1] ?? '',
    addr: /^c=IN IP4 (\S+)/m.exec(body)?.[1] ?? '', port: Number(/^m=audio (\d+)/m.exec(body)?.[1] ?? NaN) };
}

/** One hop of one stream: what one end sent and the other end got, matched by (SSRC, seq). */
export interface HopCheck {
  /** The 5-tuples the packets went by, sent and received ("a:p>b:q"): one each unless the relay moved. */
  sentBy: string[];
  receivedBy: string[];
  sent: number;
  received: number;
  /** Received with the bytes sent. */
  identical: number;
  /** Received with the SSRC and seq of a packet sent but other bytes: the relay changed it. */
  altered: number;
  /** The first altered packet's bytes, both ways, in hex (the first 32). */
  firstAltered?: { seq: number; sent: string; received: string };
  /** Received more than once, and received with a seq never sent. */
  duplicates: number;
  unexpected: number;
  /** Sent, never received: how many, and the runs of seq, in the order sent. */
  missing: number;
  missingSeqs: Array<[number, number]>;
  /**
   * The longest silence between two packets received, ms, and when it began (capture time, epoch
   * ms); and the sender's own longest (SIPp's rtp_stream sends in bursts: up to ~40 ms apart).
   */
  largestGap: Gap;
  largestSendGap: Gap;
}

export interface Gap { ms: number; atMs: number }

function largestGap(ps: RtpPacket[]): Gap {
  let gap: Gap = { ms: 0, atMs: NaN };
  for (let i = 1; i < ps.length; i++) if (ps[i]!.tsMs - ps[i - 1]!.tsMs > gap.ms) gap = { ms: ps[i]!.tsMs - ps[i - 1]!.tsMs, atMs: ps[i - 1]!.tsMs };
  return gap;
}

export interface StreamCheck {
  ssrc: number;
  /** The caller's RTP to the callee, and the callee's echo of it to the caller. */
  toCallee: HopCheck;
  toCaller: HopCheck;
}

export interface MediaCheck {
  streams: StreamCheck[];
  /** RTP on the relay's ports with an SSRC no caller sent. */
  strays: number;
  /** SDPs the phones got from the proxy that do not name the VIP and a relay port. */
  sdpsOffRelay: SdpSeen[];
}

/**
 * Every RTP stream the caller sent to the relay, followed to the callee and, echoed, back: per
 * packet, by (SSRC, seq), whether it arrived and with the same bytes (rtpengine relays RTP
 * without rewriting it, as this checks). An SSRC's sequence numbers must not wrap within the
 * capture (65536 packets: 21 minutes of 20 ms packets).
 */
export function checkRelayedMedia(capture: MediaCapture, at: { caller: string; callee: string; vip: string }): MediaCheck {
  const { rtp } = capture;
  const leg = (src: string, dst: string) => rtp.filter((p) => p.src === src && p.dst === dst);
  const [callerSent, calleeGot, calleeSent, callerGot] = [leg(at.caller, at.vip), leg(at.vip, at.callee), leg(at.callee, at.vip), leg(at.vip, at.caller)];
  const ssrcs = [...new Set(callerSent.map((p) => p.ssrc))];
  const of = (ps: RtpPacket[], ssrc: number) => ps.filter((p) => p.ssrc === ssrc);
  const streams = ssrcs.map((ssrc): StreamCheck => {
    const [a, b, c, d] = [of(callerSent, ssrc), of(calleeGot, ssrc), of(calleeSent, ssrc), of(callerGot, ssrc)];
    return {
      ssrc,
      toCallee: compareHop(a, b),
      toCaller: compareHop(c, d),
    };
  });
  const known = new Set(ssrcs);
  const offRelay = capture.sdps.filter((s) => s.addr !== at.vip || !inRelayRange(s.port));
  return { streams, strays: rtp.filter((p) => !known.has(p.ssrc)).length, sdpsOffRelay: offRelay };
}

function compareHop(sent: RtpPacket[], received: RtpPacket[]): HopCheck {
  const tuple = (p: RtpPacket) => `${p.src}:${p.sport}>${p.dst}:${p.dport}`;
  const bySeq = new Map(sent.map((p) => [p.seq, p]));
  const got = new Map<number, RtpPacket>();
  const hop: HopCheck = { sentBy: [...new Set(sent.map(tuple))], receivedBy: [...new Set(received.map(tuple))], sent: sent.length, received: received.length,
    identical: 0, altered: 0, duplicates: 0, unexpected: 0, missing: 0, missingSeqs: [], largestGap: largestGap(received), largestSendGap: largestGap(sent) };
  for (const p of received) {
    const s = bySeq.get(p.seq);
    if (!s) { hop.unexpected++; continue; }
    if (got.has(p.seq)) { hop.duplicates++; continue; }
    got.set(p.seq, p);
    if (s.digest === p.digest) hop.identical++;
    else {
      hop.altered++;
      hop.firstAltered ??= { seq: p.seq, sent: s.data.subarray(0, 32).toString('hex'), received: p.data.subarray(0, 32).toString('hex') };
    }
  }
  let run: [number, number] | null = null;
  for (const p of sent) {
    if (got.has(p.seq)) { run = null; continue; }
    hop.missing++;
    if (run) run[1] = p.seq;
    else hop.missingSeqs.push(run = [p.seq, p.seq]);
  }
  return hop;
}
