// Packet captures with tcpdump inside a testbed namespace, and reading them
// back. Used by the e2e tests (leak and sequence-space checks, RTP compared
// byte for byte) and the demo.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import type { Testbed } from './testbed.js';
import { collect, pinned, waitForExit } from './processes.js';
import { GiveUp, waitFor } from './wait.js';

export interface Capture {
  /** Stops tcpdump (SIGTERM by PID) and resolves with its own counts. */
  stop(): Promise<{ captured: number; dropped: number }>;
}

/** tcpdump kernel buffer in KiB: super-frames of 64 KiB fill the 2 MiB default in bursts. */
const CAPTURE_BUFFER_KIB = 32768;

/** Headers only (Ethernet, IP and TCP with options, at most 94 bytes): `snaplen` for a capture that reads no payload. */
export const HEADERS_SNAPLEN = 128;

/** `snaplen`: bytes kept per frame (whole frames by default); `cpus`: where tcpdump runs (taskset). */
export interface CaptureOptions { snaplen?: number; cpus?: string }

export async function startCapture(tb: Testbed, ns: string, iface: string, bpfFilter: string, file: string, o: CaptureOptions = {}): Promise<Capture> {
  // -Z root: tcpdump would otherwise drop to its own user before opening the file.
  const child = tb.spawn(ns, [...pinned(o.cpus), 'tcpdump', '-Z', 'root', '-U', '--immediate-mode', '-B', String(CAPTURE_BUFFER_KIB),
    ...(o.snaplen ? ['-s', String(o.snaplen)] : []), '-nn', '-i', iface, '-w', file, ...(bpfFilter ? [bpfFilter] : [])]);
  const output = collect(child);
  await waitFor(() => {
    if (child.exitCode !== null) throw new GiveUp(`tcpdump exited ${child.exitCode}: ${output.stderr}`);
    return output.stderr.includes('listening on');
  }, { timeoutMs: 10_000, what: `tcpdump on ${ns}/${iface}` });
  return {
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await waitForExit(child, 5_000).catch(() => { child.kill('SIGKILL'); });
      }
      const num = (what: string): number => Number(new RegExp(`(\\d+) packets? ${what}`).exec(output.stderr)?.[1] ?? NaN);
      return { captured: num('captured'), dropped: num('dropped by kernel') };
    },
  };
}

/** `tcpdump -r file -nn [extra] filter`, one string per packet. Reading a file needs no namespace. */
export function readPackets(file: string, filter = '', extra: string[] = []): Promise<string[]> {
  return new Promise((resolve, reject) => {
    execFile('tcpdump', ['-r', file, '-nn', ...extra, ...(filter ? [filter] : [])], { maxBuffer: 1 << 30, timeout: 60_000 },
      (err, stdout, stderr) => (err ? reject(new Error(`tcpdump -r: ${stderr || err.message}`)) : resolve(stdout.split('\n').filter((l) => l !== ''))));
  });
}

export async function countPackets(file: string, filter = ''): Promise<number> {
  return (await readPackets(file, filter)).length;
}

/** Link-layer length of every matching frame (from `tcpdump -e`). */
export async function frameLengths(file: string, filter = ''): Promise<number[]> {
  return (await readPackets(file, filter, ['-e'])).map((l) => Number(/length (\d+)/.exec(l)?.[1] ?? NaN));
}

/**
 * New payload bytes per bin in a capture, all connections together (a retransmitted byte counts
 * once), by kernel timestamp: what the wire carried, as opposed to what a busy client program
 * got around to reading. Relies on tcpdump's relative sequence numbers (transfers below 4 GiB).
 */
export async function wireTimeline(file: string, binMs: number): Promise<{ startMs: number; binMs: number; rx: number[] }> {
  const sent = new Map<string, number>();
  const rx: number[] = [];
  let startMs = NaN;
  for (const l of await readPackets(file, '', ['-tt'])) {
    const m = /^(\d+\.\d+) IP (\S+ > \S+): .* seq (\d+):(\d+)/.exec(l);
    if (!m) continue;
    const t = Number(m[1]) * 1000;
    if (Number.isNaN(startMs)) startMs = t;
    const from = Number(m[3]), to = Number(m[4]);
    const had = sent.get(m[2]!) ?? from;
    if (to <= had) continue;
    sent.set(m[2]!, to);
    const i = Math.floor((t - startMs) / binMs);
    while (rx.length <= i) rx.push(0);
    rx[i]! += to - Math.max(had, from);
  }
  return { startMs, binMs, rx };
}

/** UDP payload bytes per bin in a capture, to `host` and from it, by kernel timestamp. */
export async function udpTimeline(file: string, binMs: number, host: string): Promise<{ startMs: number; binMs: number; toHost: number[]; fromHost: number[] }> {
  const toHost: number[] = [];
  const fromHost: number[] = [];
  let startMs = NaN;
  for (const l of await readPackets(file, 'udp', ['-tt', '-q'])) {
    const m = /^(\d+\.\d+) IP (\d+\.\d+\.\d+\.\d+)\.\d+ > (\d+\.\d+\.\d+\.\d+)\.\d+: UDP, length (\d+)/.exec(l);
    if (!m) continue;
    const t = Number(m[1]) * 1000;
    if (Number.isNaN(startMs)) startMs = t;
    const i = Math.floor((t - startMs) / binMs);
    for (const bins of [toHost, fromHost]) while (bins.length <= i) bins.push(0);
    if (m[3] === host) toHost[i]! += Number(m[4]);
    else if (m[2] === host) fromHost[i]! += Number(m[4]);
  }
  return { startMs, binMs, toHost, fromHost };
}

/** One IPv4 UDP datagram of a capture: the kernel's timestamp, its addresses and its payload. */
export interface Datagram { tsMs: number; src: string; sport: number; dst: string; dport: number; data: Buffer }

/** Where the IPv4 header starts in a frame of each pcap link type: Ethernet (1), Linux cooked v1 (113) and v2 (276), raw IP (101). */
const LINK_HEADER: Record<number, (frame: Buffer) => number> = {
  1: (f) => (f.length >= 14 && f.readUInt16BE(12) === 0x0800 ? 14 : -1),
  113: (f) => (f.length >= 16 && f.readUInt16BE(14) === 0x0800 ? 16 : -1),
  276: (f) => (f.length >= 20 && f.readUInt16BE(0) === 0x0800 ? 20 : -1),
  101: () => 0,
};

/**
 * Every whole IPv4 UDP datagram of a pcap file, in capture order. Frames of other protocols,
 * fragments and frames cut by the snap length are counted in `skipped`, not returned: a check
 * of payload bytes must not read half a datagram. Read in this process (no tcpdump), so the
 * bytes compared are the bytes on the wire.
 */
export function readUdpDatagrams(file: string): { datagrams: Datagram[]; skipped: number } {
  const b = fs.readFileSync(file);
  if (b.length < 24) throw new Error(`${file}: not a pcap file (${b.length} bytes)`);
  // The magic number says the byte order and the timestamps' unit (micro- or nanoseconds).
  const magic = b.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && magic !== 0xd4c3b2a1 && magic !== 0x4d3cb2a1) throw new Error(`${file}: not a pcap file (magic ${magic.toString(16)})`);
  const u32 = (at: number) => (le ? b.readUInt32LE(at) : b.readUInt32BE(at));
  const subUnitsPerMs = magic === 0xa1b23c4d || magic === 0x4d3cb2a1 ? 1e6 : 1e3;
  const linkType = u32(20) & 0xffff;
  const ipStart = LINK_HEADER[linkType];
  if (!ipStart) throw new Error(`${file}: link type ${linkType} not read here`);
  const datagrams: Datagram[] = [];
  let skipped = 0;
  for (let at = 24; at + 16 <= b.length;) {
    const tsMs = u32(at) * 1000 + u32(at + 4) / subUnitsPerMs;
    const [caplen, len] = [u32(at + 8), u32(at + 12)];
    const frame = b.subarray(at + 16, at + 16 + caplen);
    at += 16 + caplen;
    const ip = ipStart(frame);
    const ihl = ip >= 0 && frame.length >= ip + 20 ? (frame[ip]! & 0x0f) * 4 : 0;
    // Whole frames only: IPv4, UDP, not a fragment (more-fragments flag or an offset).
    if (caplen < len || ihl < 20 || frame[ip]! >> 4 !== 4 || frame[ip + 9] !== 17 || (frame.readUInt16BE(ip + 6) & 0x3fff) !== 0) { skipped++; continue; }
    const udp = ip + ihl;
    const end = ip + frame.readUInt16BE(ip + 2);
    if (end > frame.length || udp + 8 > end || udp + frame.readUInt16BE(udp + 4) > end) { skipped++; continue; }
    const addr = (o: number) => `${frame[o]}.${frame[o + 1]}.${frame[o + 2]}.${frame[o + 3]}`;
    datagrams.push({ tsMs, src: addr(ip + 12), sport: frame.readUInt16BE(udp), dst: addr(ip + 16), dport: frame.readUInt16BE(udp + 2),
      data: Buffer.from(frame.subarray(udp + 8, udp + frame.readUInt16BE(udp + 4))) });
  }
  return { datagrams, skipped };
}
