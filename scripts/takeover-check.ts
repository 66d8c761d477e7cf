// After a takeover the backup served every connection to its end: each
// client session's streams must equal, byte for byte, what the backup's copy
// of the service read and wrote on that connection (the primary's log stops
// at its failure). And only one server answered: after the backup's first
// segment reached the client, none of the primary's did (answeredByOne, from
// a capture at the client). Used by the e2e tests and the demo.
import { readPackets } from './capture.js';
import { FROM_PRIMARY } from './failures.js';
import type { ClientLogLine, ServiceLogLine } from './protocol.js';

/**
 * Segments a capture at the client holds from the backup, and the primary's (marked by
 * markPrimaryReplies) that arrived at or after the backup's first: none, if one server answers.
 */
export async function answeredByOne(pcap: string): Promise<{ fromBackup: number; lateFromPrimary: string[] }> {
  const fromBackup = await readPackets(pcap, `not (${FROM_PRIMARY})`, ['-tt']);
  const firstBackup = fromBackup.length ? Number(fromBackup[0]!.split(' ')[0]) : Infinity;
  const lateFromPrimary = (await readPackets(pcap, FROM_PRIMARY, ['-tt'])).filter((l) => Number(l.split(' ')[0]) >= firstBackup);
  return { fromBackup: fromBackup.length, lateFromPrimary };
}

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
