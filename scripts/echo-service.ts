// A plain TCP echo service for the failover benchmarks: it writes back every byte it reads.
//
//   node dist/scripts/echo-service.js --port 7100 [--port N ...]
//
// Listens on 0.0.0.0 (so a copy on the backup answers at the VIP once the VIP is there), prints
// `ready` once every port listens, exits 0 on SIGTERM. Deterministic: its output is its input.

import net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { port: { type: 'string', multiple: true } } });
const ports = (values.port ?? []).map(Number);
if (!ports.length || ports.some((p) => !(Number.isInteger(p) && p > 0 && p < 65536))) {
  process.stderr.write('usage: echo-service.js --port N [--port N ...]\n');
  process.exit(2);
}

const sockets = new Set<net.Socket>();
const servers = ports.map((port) => net.createServer((sock) => {
  sockets.add(sock);
  sock.setNoDelay(true);
  sock.on('error', () => { /* the peer went away: nothing to do */ });
  sock.on('close', () => sockets.delete(sock));
  sock.pipe(sock);
}));

let listening = 0;
for (const [i, server] of servers.entries()) {
  server.on('error', (e) => {
    process.stderr.write(`echo-service: port ${ports[i]}: ${e.message}\n`);
    process.exit(1);
  });
  server.listen({ port: ports[i], host: '0.0.0.0', backlog: 1024 }, () => {
    if (++listening === servers.length) process.stdout.write('ready\n');
  });
}

process.on('SIGTERM', () => {
  for (const s of servers) s.close();
  for (const s of sockets) s.destroy();
  process.exit(0);
});
