// Connection storms: twice 20,000 one-request connections, 200 at a time, from
// 16 client addresses (the C storm client and server, bench/storm), the
// client and the primary on one CPU, the replica's service and t2cp on the
// other, as the benchmark runs it, with --log-flows (a JavaScript thread
// busy beside the packet thread). Every connection must be synchronised,
// finished by t2cp and byte-exact on the replica, and nothing lost on the
// way: no frame the capture dropped, no packet of the replica's the kernel
// dropped because t2cp did not read the queue in time. Both happened before
// (libpcap's ring held 1,024 frames; the queue was read 32 packets per pass
// against 512 captured frames): the previous build failed this test 3 times
// out of 3 (thousands of frames lost, hundreds of flows unprotected, flows
// still open a minute later). No timing is asserted.
import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { startBackup } from '../../scripts/backup-process.js';
import { runStorm } from '../../scripts/processes.js';
import { waitFor } from '../../scripts/wait.js';
import { compareReplicas, readLog, startService, type ClientLogLine, type ServiceLogLine } from './harness.js';
import { kernelLeftovers } from './leftovers.js';
import { useLab } from './lab.js';

const PORT = 7000;
const CONNECTIONS = 20_000;
const STORMS = 2;
const QUEUE = 7300; // t2cp's default --queue
const cpus = os.cpus().length;
const [PRIMARY_CPUS, BACKUP_CPUS] = cpus >= 2 ? ['0', String(cpus - 1)] : [undefined, undefined];

describe('replication: connection storms', () => {
  const lab = useLab('storm', { testbed: { offloads: true, clientAddrs: 16 } });

  it('every connection is synchronised and byte-exact, nothing lost by the capture or the queue', async () => {
    const { tb, dir } = lab;
    await startService(tb, tb.ns.primary, [PORT], `${dir}/primary.jsonl`, { impl: 'c', cpus: PRIMARY_CPUS });
    await startService(tb, tb.ns.backup, [PORT], `${dir}/backup.jsonl`, { impl: 'c', cpus: BACKUP_CPUS });
    const backup = await startBackup(tb, { ports: [PORT], instance: 'storm', logFlows: true, cpus: BACKUP_CPUS,
      extra: ['--max-flows', String(STORMS * CONNECTIONS * 2)] });
    // Two storms back to back: the second meets the first's TIME_WAIT sockets
    // and a warm flow table, and lost more often before the fixes.
    const finished = (c: Record<string, number>) => (c.flows_closed ?? 0) + (c.flows_unprotected ?? 0) + (c.flows_refused_max ?? 0);
    let counters: Record<string, number> = {};
    for (let storm = 1; storm <= STORMS; storm++) {
      const run = await runStorm(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, `${dir}/client-${storm}.jsonl`,
        { connections: CONNECTIONS, concurrency: 200, local: tb.addr.clients, seed: 5 + storm, cpus: PRIMARY_CPUS, deadlineMs: 120_000 });
      expect(run.code, run.stderr).toBe(0);
      await waitFor(async () => finished(counters = await backup.counters()) >= storm * CONNECTIONS,
        { timeoutMs: 60_000, intervalMs: 200, what: `t2cp to finish every flow of storm ${storm}` });
    }
    // The kernel's own count, beside t2cp's: replica packets dropped at a full queue.
    const queues = (await tb.exec(tb.ns.backup, ['cat', '/proc/net/netfilter/nfnetlink_queue'])).stdout;
    const kernelQueueFull = queues.trim().split('\n').map((l) => l.trim().split(/\s+/).map(Number)).filter((f) => f[0] === QUEUE)
      .reduce((sum, f) => sum + (f[5] ?? 0), 0);
    counters = await backup.stop();
    const c = (k: string) => counters[k] ?? 0;
    expect({ kernelQueueFull, synchronised: c('flows_synchronised'), closed: c('flows_closed'), unprotected: c('flows_unprotected'),
      captureDrops: c('capture_kernel_drops'), queueFull: c('nfqueue_queue_full'), enobufs: c('nfqueue_enobufs') },
    JSON.stringify(counters)).toEqual({ kernelQueueFull: 0, synchronised: STORMS * CONNECTIONS, closed: STORMS * CONNECTIONS, unprotected: 0, captureDrops: 0, queueFull: 0, enobufs: 0 });
    const clients = Array.from({ length: STORMS }, (_, i) => readLog<ClientLogLine>(`${dir}/client-${i + 1}.jsonl`)).flat();
    const report = compareReplicas(readLog<ServiceLogLine>(`${dir}/primary.jsonl`), readLog<ServiceLogLine>(`${dir}/backup.jsonl`), clients);
    expect(report.mismatches.slice(0, 5)).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.connections.length).toBe(STORMS * CONNECTIONS);
    expect(await kernelLeftovers(tb, 'storm')).toEqual([]);
  });
});
