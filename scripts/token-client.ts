// Client of scripts/token-service.ts: `--connections N` connections, each
// reads its token and then sends one request every `--interval-ms`, the next
// only once the previous is answered, until `--run-ms` passed. A reply must
// come within `--reply-timeout-ms`, or the connection counts as hung.
//
//   node dist/scripts/token-client.js --to 198.18.1.10:7000 --connections 10 --run-ms 8000
//
// Prints one JSON line per connection as it ends:
//   {"conn","outcome","requests","lastReplyMs","error"}
// outcome: done (every reply right) | refused (a "no" reply) | reset | closed | hung.
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    to: { type: 'string' }, connections: { type: 'string', default: '10' }, 'interval-ms': { type: 'string', default: '20' },
    'run-ms': { type: 'string', default: '8000' }, 'reply-timeout-ms': { type: 'string', default: '5000' },
  },
});
const [host, portText] = (values.to ?? '').split(':');
const connections = Number(values.connections);
const intervalMs = Number(values['interval-ms']);
const runMs = Number(values['run-ms']);
const replyTimeoutMs = Number(values['reply-timeout-ms']);
if (!host || !portText) {
  process.stderr.write('usage: token-client.js --to HOST:PORT [--connections N] [--interval-ms MS] [--run-ms MS]\n');
  process.exit(2);
}

type Outcome = 'done' | 'refused' | 'reset' | 'closed' | 'hung';

function session(conn: number): Promise<void> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = net.connect(Number(portText), host);
    let token = '';
    let pending = '';
    let requests = 0;
    let lastReply = started;
    let ended = false;
    let timer: NodeJS.Timeout | undefined;
    const end = (outcome: Outcome, error?: string): void => {
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      process.stdout.write(`${JSON.stringify({ conn, outcome, requests, lastReplyMs: lastReply - started, error })}\n`);
      socket.destroy();
      resolve();
    };
    const expectReply = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => end('hung'), replyTimeoutMs);
    };
    const send = (): void => {
      if (Date.now() - started >= runMs) return end('done');
      requests++;
      socket.write(`${token} ${requests}\n`);
      expectReply();
    };
    expectReply();
    socket.on('data', (chunk) => {
      pending += chunk.toString('latin1');
      for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        lastReply = Date.now();
        clearTimeout(timer);
        if (!token) {
          token = line.split(' ')[1] ?? '';
        } else if (line !== `ok ${requests} ${'x'.repeat(64)}`) {
          return end('refused', line);
        }
        timer = setTimeout(send, intervalMs);
      }
    });
    socket.on('error', (e: NodeJS.ErrnoException) => end(e.code === 'ECONNRESET' ? 'reset' : 'closed', e.code ?? e.message));
    socket.on('close', () => end('closed'));
  });
}

await Promise.all(Array.from({ length: connections }, (_, i) => session(i)));
