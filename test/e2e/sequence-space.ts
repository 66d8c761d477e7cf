// "Zero packets from the backup at the client": the backup's replica picks
// its own ISN, so any segment it leaked would fall outside the primary's
// sequence space of that connection. Reads a client-side capture of the
// VIP's segments (tcpdump -S: absolute numbers) and lists every segment whose
// sequence number is not within [ISN, ISN + bytes the client received + 2]
// (SYN and FIN count one each), and every second SYN-ACK with another ISN.
import { between } from '../../src/seq.js';
import { readPackets } from './harness.js';

const LINE = /IP (\S+) > (\S+): Flags \[([^\]]*)\], seq (\d+)(?::(\d+))?/;

/**
 * `received` maps "clientip:port>serverport" to the bytes the client read on
 * that connection (the kernel may reuse a client port toward another server
 * port, so the client's address alone is not a connection).
 */
export async function foreignSegments(file: string, received: Map<string, number>): Promise<string[]> {
  const isn = new Map<string, number>();
  const foreign: string[] = [];
  for (const l of await readPackets(file, '', ['-S'])) {
    const m = LINE.exec(l);
    if (!m) continue;
    const conn = `${m[1]}>${m[2]}`;
    const seq = Number(m[4]);
    if (m[3]!.includes('S')) {
      const known = isn.get(conn);
      if (known !== undefined && known !== seq) foreign.push(`second SYN-ACK with another ISN: ${l}`);
      isn.set(conn, seq);
      continue;
    }
    const base = isn.get(conn);
    const client = m[2]!.replace(/\.(\d+):?$/, ':$1');
    const serverPort = m[1]!.slice(m[1]!.lastIndexOf('.') + 1);
    const bytes = received.get(`${client}>${serverPort}`);
    // Segments before the SYN-ACK cannot be judged (capture started late).
    if (base === undefined || bytes === undefined) {
      foreign.push(`unjudged (no SYN-ACK or unknown connection ${client}): ${l}`);
      continue;
    }
    if (!between(seq, base, (base + bytes + 2) >>> 0)) foreign.push(l);
  }
  return foreign;
}
