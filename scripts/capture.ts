// Packet captures with tcpdump inside a testbed namespace, and reading them
// back. Used by the e2e tests (leak and sequence-space checks) and the demo.
import { execFile } from 'node:child_process';
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
