// A client that reuses one 4-tuple at once, over and over: N connections from the same local
// address and port (libuv binds with SO_REUSEADDR, so connect() takes over the TIME_WAIT left by
// the previous one at once), each one request and its checked answer, the client closing first.
// Prints {"ok":K,"n":N}. Used by test/e2e/reuse.test.ts.
import net from 'node:net';
import { frame, answerFor, Prng } from '../../../dist/scripts/protocol.js';
const [server, port, local, lport, n] = process.argv.slice(2);
let ok = 0;
for (let i = 0; i < Number(n); i++) {
  await new Promise((resolve, reject) => {
    const s = net.connect({ host: server, port: Number(port), localAddress: local, localPort: Number(lport) });
    const body = Buffer.alloc(16 + i); body.writeUInt32BE(100 + i, 0);
    const want = answerFor(body);
    let got = Buffer.alloc(0);
    s.on('connect', () => s.write(frame('Q', body)));
    s.on('data', (d) => { got = Buffer.concat([got, d]); if (got.length >= 5 + 100 + i) { if (got.subarray(5).equals(want.subarray(0, 100 + i))) ok++; s.end(); } });
    s.on('close', resolve); s.on('error', reject);
  }).catch((e) => console.error('conn', i, e.message));
}
console.log(JSON.stringify({ ok, n: Number(n) }));
