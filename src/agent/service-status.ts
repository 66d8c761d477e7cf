// Is the service up? What the primary agent puts in every heartbeat: the
// process lives (not gone, not a zombie: /proc/<pid>/stat), and every
// configured port has a listening TCP socket on the VIP or a wildcard
// (/proc/net/tcp and tcp6). Synchronous reads of /proc, on the agent's event
// loop, once per heartbeat; cheap: the kernel lists listening sockets before
// established ones (net/ipv4/tcp_ipv4.c, tcp_get_idx), so reading stops at
// the first non-listening line instead of walking a busy server's connections.
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import os from 'node:os';
import type { ServiceStatus } from '../detector/heartbeat.js';

export interface ServiceWatch {
  /** The service process; without pid and pidfile, only the ports count. */
  pid?: number;
  /** Read again at each check: a restarted service's new pid is followed. */
  pidfile?: string;
  ports: number[];
  /** UDP ports that must be bound (an unconnected socket on the VIP or a wildcard). */
  udpPorts?: number[];
  /** Listeners on this address count, besides wildcards; without it, any address counts. */
  vip?: string;
  /** For tests. */
  procRoot?: string;
}

const TCP_LISTEN = '0A';
/** An unconnected UDP socket's state in /proc/net/udp (TCP_CLOSE). */
const UDP_UNCONNECTED = '07';
const LE = os.endianness() === 'LE';

/** The kernel prints each 32-bit address word with %08X in host byte order. */
function wordBytes(hex8: string): number[] {
  const b = Buffer.alloc(4);
  const v = parseInt(hex8, 16);
  if (LE) b.writeUInt32LE(v);
  else b.writeUInt32BE(v);
  return [...b];
}

/** Local address (dotted IPv4, or '::' / '::ffff:a.b.c.d' / 'v6' for IPv6) and port of one /proc/net/tcp{,6} line's hex field. */
export function parseProcAddress(field: string): { address: string; port: number } {
  const [hex, portHex] = field.split(':') as [string, string];
  const port = parseInt(portHex, 16);
  if (hex.length === 8) return { address: wordBytes(hex).join('.'), port };
  const bytes = [0, 8, 16, 24].flatMap((i) => wordBytes(hex.slice(i, i + 8)));
  if (bytes.every((x) => x === 0)) return { address: '::', port };
  const mapped = bytes.slice(0, 10).every((x) => x === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  return { address: mapped ? `::ffff:${bytes.slice(12).join('.')}` : 'v6', port };
}

/**
 * Ports with a LISTEN socket whose address counts for `vip` (see ServiceWatch.vip), from the text of
 * /proc/net/tcp{,6}; with `state` UDP_UNCONNECTED, the bound ports of /proc/net/udp{,6}.
 */
export function listeningPorts(text: string, vip?: string, state = TCP_LISTEN): Set<number> {
  const out = new Set<number>();
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4 || f[3] !== state) continue;
    const { address, port } = parseProcAddress(f[1]!);
    const counts = vip === undefined || address === '0.0.0.0' || address === '::' || address === vip || address === `::ffff:${vip}`;
    if (counts) out.add(port);
  }
  return out;
}

/** The head of /proc/net/tcp{,6} up to the first socket that is not listening. */
function readListeningHead(path: string): string {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return ''; // no IPv6 in this kernel
  }
  try {
    const chunk = Buffer.alloc(64 * 1024);
    let text = '';
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, null);
      if (n <= 0) return text;
      text += chunk.toString('latin1', 0, n);
      // Complete lines after the header: stop once one is not LISTEN.
      const lines = text.split('\n');
      if (lines.slice(1, -1).some((l) => l.trim().split(/\s+/)[3] !== TCP_LISTEN)) return text;
    }
  } finally {
    closeSync(fd);
  }
}

/** Alive unless /proc/<pid> is gone or the process is a zombie (Z) or dead (X). */
export function processAlive(pid: number, procRoot = '/proc'): boolean {
  let stat: string;
  try {
    stat = readFileSync(`${procRoot}/${pid}/stat`, 'latin1');
  } catch {
    return false;
  }
  // "pid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ')'.
  const state = stat[stat.lastIndexOf(')') + 2];
  return state !== undefined && state !== 'Z' && state !== 'X';
}

function pidOf(w: ServiceWatch): number | undefined {
  if (w.pid !== undefined) return w.pid;
  if (w.pidfile === undefined) return undefined;
  try {
    const n = Number(readFileSync(w.pidfile, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : -1;
  } catch {
    return -1; // no pidfile: the service is not running
  }
}

export function serviceStatus(w: ServiceWatch): ServiceStatus {
  const root = w.procRoot ?? '/proc';
  const pid = pidOf(w);
  const alive = pid === undefined ? true : pid > 0 && processAlive(pid, root);
  const listening = new Set([
    ...listeningPorts(readListeningHead(`${root}/net/tcp`), w.vip),
    ...listeningPorts(readListeningHead(`${root}/net/tcp6`), w.vip),
  ]);
  const bound = w.udpPorts?.length ? boundUdpPorts(root, w.vip) : new Set<number>();
  return { alive, listening: w.ports.every((p) => listening.has(p)) && (w.udpPorts ?? []).every((p) => bound.has(p)) };
}

/** UDP ports with an unconnected socket on the VIP or a wildcard (a UDP server has few sockets: read whole). */
function boundUdpPorts(root: string, vip?: string): Set<number> {
  const read = (f: string): string => {
    try {
      return readFileSync(f, 'latin1');
    } catch {
      return ''; // no IPv6 in this kernel
    }
  };
  return new Set([...listeningPorts(read(`${root}/net/udp`), vip, UDP_UNCONNECTED), ...listeningPorts(read(`${root}/net/udp6`), vip, UDP_UNCONNECTED)]);
}
