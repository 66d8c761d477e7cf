// The client of scripts/udp-service.ts: N associations (one socket each), each
// sending COUNT requests one at a time (seq 1, 2, ...; random payloads of 16 to
// MAX bytes, 1200 unless --max-bytes: those above the path MTU cross in IP
// fragments), every INTERVAL ms. Each answer is checked against the client's
// own chain of what it sent: the service's count and chain must be its own.
// A request unanswered within RETRY ms is sent again (a datagram lost, a
// server dying and another taking over), until DEADLINE.
//
// With --stream, each association sends its COUNT datagrams (seq 1, 2, ...)
// every INTERVAL ms without waiting for answers and never sends one twice, as
// a media stream does: the service's per-seq counts then tell a datagram lost
// from one delivered twice.
//
//   node dist/scripts/udp-client.js --server ADDR:PORT --associations N --count C
//        [--interval-ms 5] [--retry-ms 100] [--deadline-ms 60000] [--max-bytes 1200] [--stream] --log FILE
//
// Writes one JSON line per association to FILE ({local, sent, answered,
// resent, longestWaitMs, ok, error}) and a summary line on stdout (with ms:
// from the first request to the last answer); exit 0 when
// every association was answered to the end and every answer was right.
import { createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    server: { type: 'string' }, associations: { type: 'string', default: '4' }, count: { type: 'string', default: '100' },
    'interval-ms': { type: 'string', default: '5' }, 'retry-ms': { type: 'string', default: '100' },
    'deadline-ms': { type: 'string', default: '60000' }, 'max-bytes': { type: 'string', default: '1200' }, log: { type: 'string' },
    stream: { type: 'boolean' },
  },
});
const [host, portText] = (values.server ?? '').split(':');
const port = Number(portText);
if (!host || !port || !values.log) {
  process.stderr.write('usage: udp-client.js --server ADDR:PORT --associations N --count C --log FILE\n');
  process.exit(2);
}
const [n, count, intervalMs, retryMs, deadlineMs, maxBytes] =
  [values.associations, values.count, values['interval-ms'], values['retry-ms'], values['deadline-ms'], values['max-bytes']].map(Number) as [number, number, number, number, number, number];
const deadline = Date.now() + deadlineMs;

interface Outcome { local: string; sent: number; answered: number; resent: number; longestWaitMs: number; ok: boolean; error: string | null }

/** The datagram of `seq`: the number, then 16 to maxBytes random bytes. */
function request(seq: number): Buffer {
  const req = Buffer.concat([Buffer.alloc(4), randomBytes(16 + Math.floor(Math.random() * (maxBytes - 15)))]);
  req.writeUInt32BE(seq, 0);
  return req;
}

/** --stream: every datagram once, INTERVAL ms apart; answers are not waited for. */
async function stream(): Promise<Outcome> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.connect(port, host, r));
  const out: Outcome = { local: `${sock.address().address}:${sock.address().port}`, sent: 0, answered: 0, resent: 0, longestWaitMs: 0, ok: false, error: null };
  sock.on('message', () => out.answered++);
  try {
    for (let seq = 1; seq <= count && Date.now() < deadline; seq++) {
      await new Promise<void>((resolve, reject) => sock.send(request(seq), (e) => (e ? reject(e) : resolve())));
      out.sent = seq;
      if (intervalMs > 0) await new Promise((r) => setTimeout(r, intervalMs));
    }
    out.ok = out.sent === count;
    if (!out.ok) out.error = `${out.sent} of ${count} sent at the deadline`;
  } catch (e) {
    out.error = (e as Error).message;
  } finally {
    sock.close();
  }
  return out;
}

async function association(): Promise<Outcome> {
  // Connected: only the service address's answers count, as a SIP phone takes only its proxy's.
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.connect(port, host, r));
  const out: Outcome = { local: `${sock.address().address}:${sock.address().port}`, sent: 0, answered: 0, resent: 0, longestWaitMs: 0, ok: false, error: null };
  let chain = Buffer.alloc(32);
  let waiting: ((b: Buffer) => void) | null = null;
  sock.on('message', (b) => waiting?.(b));
  try {
    for (let seq = 1; seq <= count; seq++) {
      const req = request(seq);
      chain = createHash('sha256').update(chain).update(req.subarray(4)).digest();
      const started = Date.now();
      const reply = await new Promise<Buffer>((resolve, reject) => {
        const send = (): void => {
          if (Date.now() > deadline) return reject(new Error(`request ${seq} unanswered at the deadline`));
          sock.send(req);
          timer = setTimeout(() => { out.resent++; send(); }, retryMs);
        };
        let timer: NodeJS.Timeout | undefined;
        waiting = (b) => {
          if (b.length < 40 || b.readUInt32BE(0) !== seq) return; // a late answer to an earlier request
          clearTimeout(timer);
          resolve(b);
        };
        send();
      });
      out.sent = seq;
      out.longestWaitMs = Math.max(out.longestWaitMs, Date.now() - started);
      if (reply.readUInt32BE(4) !== seq || !reply.subarray(8, 40).equals(chain))
        throw new Error(`answer ${seq}: the service counts ${reply.readUInt32BE(4)} requests or holds another chain`);
      out.answered = seq;
      if (intervalMs > 0) await new Promise((r) => setTimeout(r, intervalMs));
    }
    out.ok = true;
  } catch (e) {
    out.error = (e as Error).message;
  } finally {
    sock.close();
  }
  return out;
}

const started = performance.now();
const outcomes = await Promise.all(Array.from({ length: n }, () => (values.stream ? stream() : association())));
const ms = Math.round(performance.now() - started);
fs.writeFileSync(values.log, outcomes.map((o) => JSON.stringify(o) + '\n').join(''));
const ok = outcomes.filter((o) => o.ok).length;
process.stdout.write(JSON.stringify({ associations: n, ok, failed: n - ok, ms, errors: outcomes.filter((o) => o.error).map((o) => o.error) }) + '\n');
process.exit(ok === n ? 0 : 1);
