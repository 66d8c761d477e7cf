// Stream-by-stream comparison of what the client, the primary and the
// backup's replica read and wrote, from their JSON-lines logs. Pure (no I/O
// besides readLog) so it is unit-tested; used by the e2e tests and the demo.
import fs from 'node:fs';
import type { ClientLogLine, ServiceLogLine } from './protocol.js';

export type { ClientLogLine, ServiceLogLine };

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

/** Log lines by connection key; a key holds several when a client reused its 4-tuple. */
function index(lines: ServiceLogLine[]): Map<string, ServiceLogLine[]> {
  const m = new Map<string, ServiceLogLine[]>();
  for (const l of lines) m.set(serviceKey(l), [...(m.get(serviceKey(l)) ?? []), l]);
  return m;
}

/** Takes the line of `key` that `fits` (else the first left): each line answers one connection. */
function take(m: Map<string, ServiceLogLine[]>, key: string, fits: (l: ServiceLogLine) => boolean): ServiceLogLine | undefined {
  const lines = m.get(key);
  if (!lines?.length) return undefined;
  const i = Math.max(0, lines.findIndex(fits));
  return lines.splice(i, 1)[0];
}

/**
 * Matches connections by the client's address and the service port (a local port may be reused
 * toward another destination port; a 4-tuple reused at once — tcp_tw_reuse — gives one key to
 * several connections, told apart by what the client sent) and checks every stream digest. Pass
 * `backupLog` null when no backup ran: its checks are then computed but not reported as
 * mismatches. Log lines no client connection claims are listed as unknown.
 */
export function compareReplicas(
  primaryLog: ServiceLogLine[],
  backupLog: ServiceLogLine[] | null,
  clientLog: ClientLogLine[],
): ReplicaReport {
  const mismatches: string[] = [];
  const clientErrors: string[] = [];
  const primary = index(primaryLog);
  const backup = index(backupLog ?? []);
  const connections: ConnectionCheck[] = [];
  const seen = new Set<string>();
  for (const c of clientLog) {
    if (!c.ok) clientErrors.push(`session ${c.session} (${c.kind}): ${c.error}`);
    if (c.local === null) continue; // never connected: no server could have seen it
    const key = `${c.local}>${c.remote.split(':').pop()}`;
    seen.add(key);
    const p = take(primary, key, (l) => same(l.rxBytes, l.rxSha256, c.txBytes, c.txSha256));
    const b = take(backup, key, (l) => same(l.rxBytes, l.rxSha256, p?.rxBytes ?? c.txBytes, p?.rxSha256 ?? c.txSha256));
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
  const left = (m: Map<string, ServiceLogLine[]>): string[] => [...m.values()].flat().map(serviceKey);
  const unknownOnPrimary = left(primary);
  const unknownOnBackup = left(backup);
  return {
    connections, mismatches, clientErrors, unknownOnPrimary, unknownOnBackup,
    ok: mismatches.length === 0 && clientErrors.length === 0,
  };
}
