// A service that is not deterministic, as many real ones are not (session
// tokens, nonces): each connection gets a random token first, and a request
// is answered in full only if it carries that token.
//
//   node dist/scripts/token-service.js --port 7000
//
// Protocol, one line each way: on connect the service sends "token <hex>\n";
// the client sends "<token> <n>\n" and gets "ok <n> <padding>\n" back, or
// "no\n" when the token is not this connection's. A replica of it draws
// another token, so it refuses every request its client makes: its answers
// are shorter than the primary's.
import crypto from 'node:crypto';
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { port: { type: 'string' } } });
const port = Number(values.port);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  process.stderr.write('usage: token-service.js --port N\n');
  process.exit(2);
}

const PADDING = 'x'.repeat(64);

const server = net.createServer((socket) => {
  const token = crypto.randomBytes(16).toString('hex');
  socket.write(`token ${token}\n`);
  let pending = '';
  socket.on('data', (chunk) => {
    pending += chunk.toString('latin1');
    for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
      const [got, n] = pending.slice(0, nl).split(' ');
      pending = pending.slice(nl + 1);
      socket.write(got === token ? `ok ${n} ${PADDING}\n` : 'no\n');
    }
  });
  socket.on('error', () => socket.destroy());
});
server.listen(port, '0.0.0.0', () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => process.exit(0));
