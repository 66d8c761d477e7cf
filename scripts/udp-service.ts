// A deterministic UDP service for the UDP replication tests: per association
// (client address and port) it keeps a chain of the distinct requests it got,
//   h(n) = sha256(h(n-1) || payload of request n),
// and answers request n with seq (4 bytes), n (4 bytes) and h(n) (32 bytes),
// padded to the request's length; with --nonce, 4 random bytes follow (a
// token, as a service that is not deterministic would send: the client does
// not check them, a comparison of two copies' answers finds them). A request repeated (the same seq: a client
// retrying after a lost answer) gets the same answer again and changes
// nothing, so two copies fed the same datagrams in the same order hold the
// same state and answer alike.
//
//   node dist/scripts/udp-service.js --address VIP --port 5060 --log FILE [--nonce] [--rcvbuf BYTES]
//
// Listens on ADDRESS:PORT (the VIP, as a UDP service must: an unconnected
// socket on 0.0.0.0 answers from the host's own address, not the one the
// request came to), prints `ready`; on SIGTERM writes one JSON line per
// association to FILE ({peer, requests, chain, answers, answersSha256,
// datagrams, distinct}: datagrams is every one it got, distinct the seqs
// among them; a datagram delivered twice shows as datagrams > distinct when
// its client sends each seq once, udp-client.ts --stream) and exits 0.
import { createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { address: { type: 'string' }, port: { type: 'string' }, log: { type: 'string' }, nonce: { type: 'boolean' }, rcvbuf: { type: 'string' } } });
const port = Number(values.port);
if (!Number.isInteger(port) || port < 1 || port > 65535 || !values.log || !values.address) {
  process.stderr.write('usage: udp-service.js --address ADDR --port N --log FILE [--nonce]\n');
  process.exit(2);
}

interface Association {
  lastSeq: number; requests: number; chain: Buffer; last: Buffer | null; answers: number; answersHash: ReturnType<typeof createHash>;
  datagrams: number; seqs: Set<number>;
}
const associations = new Map<string, Association>();

/** The answer to request `seq` after `requests` distinct ones whose chain is `chain`, `len` bytes long. */
function answer(seq: number, requests: number, chain: Buffer, len: number): Buffer {
  const b = Buffer.alloc(Math.max(values.nonce ? 44 : 40, len));
  b.writeUInt32BE(seq, 0);
  b.writeUInt32BE(requests, 4);
  chain.copy(b, 8);
  if (values.nonce) randomBytes(4).copy(b, 40);
  return b;
}

const sock = dgram.createSocket('udp4');
sock.on('message', (msg, from) => {
  if (msg.length < 4) return;
  const peer = `${from.address}:${from.port}`;
  let a = associations.get(peer);
  if (!a) {
    a = { lastSeq: 0, requests: 0, chain: Buffer.alloc(32), last: null, answers: 0, answersHash: createHash('sha256'), datagrams: 0, seqs: new Set() };
    associations.set(peer, a);
  }
  const seq = msg.readUInt32BE(0);
  a.datagrams++;
  a.seqs.add(seq);
  if (seq === a.lastSeq && a.last) {
    sock.send(a.last, from.port, from.address);
    return;
  }
  if (seq !== a.lastSeq + 1) return; // out of order: the client resends until answered
  a.lastSeq = seq;
  a.requests++;
  a.chain = createHash('sha256').update(a.chain).update(msg.subarray(4)).digest();
  a.last = answer(seq, a.requests, a.chain, msg.length);
  a.answers++;
  a.answersHash.update(a.last);
  sock.send(a.last, from.port, from.address);
});
sock.on('error', (e) => {
  process.stderr.write(`udp-service: ${e.message}\n`);
  process.exit(1);
});
sock.bind(port, values.address, () => {
  // A copy that falls behind for a moment must not lose datagrams at its socket (UDP has no flow control).
  if (values.rcvbuf) sock.setRecvBufferSize(Number(values.rcvbuf));
  process.stdout.write('ready\n');
});

process.on('SIGTERM', () => {
  const lines = [...associations].map(([peer, a]) => JSON.stringify({
    peer, requests: a.requests, chain: a.chain.toString('hex'), answers: a.answers, answersSha256: a.answersHash.digest('hex'),
    datagrams: a.datagrams, distinct: a.seqs.size,
  }));
  fs.writeFileSync(values.log!, lines.map((l) => l + '\n').join(''));
  sock.close();
  process.exit(0);
});
