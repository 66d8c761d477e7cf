// After a takeover the backup served every connection to its end: each
// client session's streams must equal, byte for byte, what the backup's copy
// of the service read and wrote on that connection (the primary's log stops
// at its failure). Pure besides readLog; used by the e2e tests and the demo.
import type { ClientLogLine, ServiceLogLine } from './protocol.js';

export interface TakeoverCheck {
  sessions: number;
  /** Sessions the client verified and the backup served to a clean end with equal digests. */
  exact: number;
  mismatches: string[];
  ok: boolean;
}

export function compareTakeover(clientLog: ClientLogLine[], backupLog: ServiceLogLine[]): TakeoverCheck {
  const byKey = new Map(backupLog.map((l) => [`${l.peer}>${l.port}`, l]));
  const mismatches: string[] = [];
  let exact = 0;
  for (const c of clientLog) {
    const port = Number(c.remote.split(':')[1]);
    const key = `${c.local}>${port}`;
    const b = byKey.get(key);
    const problems: string[] = [];
    if (!c.ok) problems.push(`client: ${c.error}`);
    if (!b) problems.push('no connection on the backup');
    else {
      if (b.rxBytes !== c.txBytes || b.rxSha256 !== c.txSha256) problems.push(`backup read ${b.rxBytes} B, client sent ${c.txBytes} B (digests ${b.rxSha256 === c.txSha256 ? 'equal' : 'differ'})`);
      if (b.txBytes !== c.rxBytes || b.txSha256 !== c.rxSha256) problems.push(`backup wrote ${b.txBytes} B, client got ${c.rxBytes} B (digests ${b.txSha256 === c.rxSha256 ? 'equal' : 'differ'})`);
      if (b.end !== 'fin') problems.push(`backup saw the connection end by ${b.end}`);
    }
    if (problems.length) mismatches.push(`session ${c.session} (${c.kind}, ${key}): ${problems.join('; ')}`);
    else exact++;
  }
  return { sessions: clientLog.length, exact, mismatches, ok: mismatches.length === 0 && clientLog.length > 0 };
}
