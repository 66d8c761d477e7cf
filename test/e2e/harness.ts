// Helpers for the e2e tests: running the service and client in the testbed, reading their logs,
// comparing replicas, and capturing with tcpdump. compareReplicas() is pure, for unit tests.

import { execFile } from 'node:child_process';
import fs from 'node:fs';
import type { ClientLogLine, ServiceLogLine } from '../../scripts/protocol.js';
import type { Testbed } from '../../scripts/testbed.js';
import { waitFor } from '../../scripts/wait.js';
import { collect, waitForExit } from '../../scripts/processes.js';

export { collect, waitForExit, startService, runClient, type ClientRun, type ClientOptions } from '../../scripts/processes.js';

export type { ClientLogLine, ServiceLogLine };
export type { Workload } from '../../scripts/client.js';

export { repoRoot, distScript } from '../../scripts/processes.js';

/** Parses a JSON-lines file; a missing file reads as no lines. */
export function readLog<T = unknown>(file: string): T[] {
  if (!fs.existsSync(file)) return [];
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as T);
}

export interface ConnectionCheck {
  /** `client ip:port>service port`: the key both sides agree on. */
  key: string;
  session: number;
  kind: string;
  clientOk: boolean;
  onPrimary: boolean;
  onBackup: boolean;
  primaryRxMatchesClientTx: boolean;
  primaryTxMatchesClientRx: boolean;
  backupRxMatchesPrimary: boolean;
  backupTxMatchesPrimary: boolean;
}

export interface ReplicaReport {
  connections: ConnectionCheck[];
  /** One line per failed check; backup checks only when a backup log was given. */
  mismatches: string[];
  /** Client sessions that failed by the client's own verification. */
  clientErrors: string[];
  /** Service connections that no client session accounts for. */
  unknownOnPrimary: string[];
  unknownOnBackup: string[];
  ok: boolean;
}

const serviceKey = (l: ServiceLogLine): string => `${l.peer}>${l.port}`;
const same = (aBytes: number, aSha: string, bBytes: number, bSha: string): boolean => aBytes === bBytes && aSha === bSha;

function index(lines: ServiceLogLine[], side: string, mismatches: string[]): Map<string, ServiceLogLine> {
  const m = new Map<string, ServiceLogLine>();
  for (const l of lines) {
    if (m.has(serviceKey(l))) mismatches.push(`${serviceKey(l)}: logged twice on the ${side}`);
    m.set(serviceKey(l), l);
  }
  return m;
}

/**
 * Matches connections by the client's address and the service port (a local port may be reused
 * toward another destination port) and checks every stream digest. Pass `backupLog` null when no
 * backup ran: its checks are then computed but not reported as mismatches.
 */
export function compareReplicas(
  primaryLog: ServiceLogLine[],
  backupLog: ServiceLogLine[] | null,
  clientLog: ClientLogLine[],
): ReplicaReport {
  const mismatches: string[] = [];
  const clientErrors: string[] = [];
  const primary = index(primaryLog, 'primary', mismatches);
  const backup = index(backupLog ?? [], 'backup', mismatches);
  const connections: ConnectionCheck[] = [];
  const seen = new Set<string>();
  for (const c of clientLog) {
    if (!c.ok) clientErrors.push(`session ${c.session} (${c.kind}): ${c.error}`);
    if (c.local === null) continue; // never connected: no server could have seen it
    const key = `${c.local}>${c.remote.split(':').pop()}`;
    seen.add(key);
    const p = primary.get(key);
    const b = backup.get(key);
    const check: ConnectionCheck = {
      key, session: c.session, kind: c.kind, clientOk: c.ok, onPrimary: !!p, onBackup: !!b,
      primaryRxMatchesClientTx: !!p && same(p.rxBytes, p.rxSha256, c.txBytes, c.txSha256),
      primaryTxMatchesClientRx: !!p && same(p.txBytes, p.txSha256, c.rxBytes, c.rxSha256),
      backupRxMatchesPrimary: !!p && !!b && same(b.rxBytes, b.rxSha256, p.rxBytes, p.rxSha256),
      backupTxMatchesPrimary: !!p && !!b && same(b.txBytes, b.txSha256, p.txBytes, p.txSha256),
    };
    connections.push(check);
    const bad = (what: string, detail = ''): number => mismatches.push(`${key} (session ${c.session} ${c.kind}): ${what}${detail}`);
    if (!p) bad('missing on the primary');
    else {
      if (!check.primaryRxMatchesClientTx) bad('primary rx != client tx', ` (${p.rxBytes} vs ${c.txBytes} bytes)`);
      if (!check.primaryTxMatchesClientRx) bad('primary tx != client rx', ` (${p.txBytes} vs ${c.rxBytes} bytes)`);
    }
    if (backupLog === null) continue;
    if (!b) bad('missing on the backup');
    else if (p) {
      if (!check.backupRxMatchesPrimary) bad('backup rx != primary rx', ` (${b.rxBytes} vs ${p.rxBytes} bytes)`);
      if (!check.backupTxMatchesPrimary) bad('backup tx != primary tx', ` (${b.txBytes} vs ${p.txBytes} bytes)`);
    }
  }
  const unknownOnPrimary = [...primary.keys()].filter((k) => !seen.has(k));
  const unknownOnBackup = [...backup.keys()].filter((k) => !seen.has(k));
  return {
    connections, mismatches, clientErrors, unknownOnPrimary, unknownOnBackup,
    ok: mismatches.length === 0 && clientErrors.length === 0,
  };
}

export interface Capture {
  /** Stops tcpdump (SIGTERM by PID) and resolves with its own counts. */
  stop(): Promise<{ captured: number; dropped: number }>;
}

/** tcpdump kernel buffer in KiB: super-frames of 64 KiB fill the 2 MiB default in bursts. */
const CAPTURE_BUFFER_KIB = 32768;

export async function startCapture(tb: Testbed, ns: string, iface: string, bpfFilter: string, file: string): Promise<Capture> {
  // -Z root: tcpdump would otherwise drop to its own user before opening the file.
  const child = tb.spawn(ns, ['tcpdump', '-Z', 'root', '-U', '--immediate-mode', '-B', String(CAPTURE_BUFFER_KIB),
    '-nn', '-i', iface, '-w', file, ...(bpfFilter ? [bpfFilter] : [])]);
  const output = collect(child);
  await waitFor(() => {
    if (child.exitCode !== null) throw new Error(`tcpdump exited ${child.exitCode}: ${output.stderr}`);
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
