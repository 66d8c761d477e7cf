// A client that reuses a 4-tuple at once (a busy client with
// net.ipv4.tcp_tw_reuse, or one binding its port): the primary has finished
// the old connection, the replica may still hold it. The new connection must
// wait for the old one's end on the replica (a SYN now would hit the old
// socket), then be replicated like any other: every one of the reused
// connections byte-exact on the backup, in order, none unprotected, each closed — also when the
// mirror loses the client's last ACK of each.
import { describe, expect, it } from 'vitest';
import { startBackup } from '../../scripts/backup-process.js';
import { repoRoot } from '../../scripts/processes.js';
import { readLog, startService, type ServiceLogLine } from './harness.js';
import { kernelLeftovers } from './leftovers.js';
import { droppedOnMirror, lossyMirror } from './lossy-mirror.js';
import { useLab } from './lab.js';

const PORT = 7000;
const CONNECTIONS = 60;

for (const lossy of [false, true]) {
  describe(`replication: a client reusing its 4-tuple at once${lossy ? ', its last ACKs lost on the mirror' : ''}`, () => {
    const lab = useLab('reuse');

    it('replicates every generation of the connection, in order', async () => {
      const { tb, dir } = lab;
      // Lossy: the mirror drops every pure ACK of the clients' — each connection's last ACK among
      // them. The next connection's SYN says the client sent it; the last connection's, that the
      // primary stopped repeating its FIN.
      if (lossy) await lossyMirror(tb, 'tcp-ack');
      await startService(tb, tb.ns.primary, [PORT], `${dir}/primary.jsonl`);
      // The replica reads slowly, so it is still on a connection when its successor arrives.
      await startService(tb, tb.ns.backup, [PORT], `${dir}/backup.jsonl`, { extra: ['--read-pause-ms', '20', '--pause-every', '16'] });
      const backup = await startBackup(tb, { ports: [PORT], instance: 'reuse' });
      const r = await tb.exec(tb.ns.client, ['node', `${repoRoot}test/e2e/clients/reuse-client.mjs`, tb.addr.vip, String(PORT), tb.addr.clients[0]!, '45000', String(CONNECTIONS)], { timeoutMs: 60_000 });
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout.trim())).toEqual({ ok: CONNECTIONS, n: CONNECTIONS });
      const peer = `${tb.addr.clients[0]}:45000`;
      const settled = async () => readLog<ServiceLogLine>(`${dir}/backup.jsonl`).filter((l) => l.peer === peer).length >= CONNECTIONS &&
        (await backup.counters()).flows_closed === CONNECTIONS;
      const deadline = Date.now() + 30_000;
      while (!(await settled()) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 100));
      const counters = await backup.stop();

      const primary = readLog<ServiceLogLine>(`${dir}/primary.jsonl`).filter((l) => l.peer === peer);
      const replica = readLog<ServiceLogLine>(`${dir}/backup.jsonl`).filter((l) => l.peer === peer);
      expect(primary).toHaveLength(CONNECTIONS);
      // Short of some: the counters tell a stalled generation (capture drops, older-generation
      // segments, handshake timeouts) from a slow one.
      expect(replica.map((l) => [l.rxSha256, l.txSha256, l.end]), JSON.stringify(counters)).toEqual(primary.map((l) => [l.rxSha256, l.txSha256, l.end]));
      expect(counters.flows_unprotected ?? 0, JSON.stringify(counters)).toBe(0);
      // Every generation closed on the backup, the last one too: none left closing.
      expect(counters.flows_closed, JSON.stringify(counters)).toBe(CONNECTIONS);
      expect(counters.flows_reused_tuple ?? 0).toBeGreaterThan(0); // the case really happened
      if (lossy) {
        expect(await droppedOnMirror(tb)).toBeGreaterThanOrEqual(CONNECTIONS);
        expect(counters.final_ack_implied, JSON.stringify(counters)).toBe(CONNECTIONS);
      }
      expect(await kernelLeftovers(tb, 'reuse')).toEqual([]);
    });
  });
}
