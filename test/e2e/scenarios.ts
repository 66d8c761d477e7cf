// Replication scenarios as data (conntrackd's tests.yaml habit): what runs,
// not what is asserted. replication.test.ts applies the same checks to each.
import type { Workload } from '../../scripts/client.js';

export interface ReplicationScenario {
  name: string;
  offloads: boolean;
  ports: number[];
  workload: Workload;
  deadlineMs: number;
}

const MB = 1 << 20;

/** Many small request/response sessions, long bulk transfers both ways, idle connections. */
function mixed(seed: number): Workload {
  return {
    seed,
    sessions: [
      { kind: 'upload', bytes: 50 * MB },
      { kind: 'download', bytes: 50 * MB },
      { kind: 'rr', times: 20, count: 25, reqSize: [1, 6000], respSize: [1, 40000] },
      { kind: 'rr', times: 20, count: 25, reqSize: [1, 6000], respSize: [1, 40000], port: 6379 },
      { kind: 'idle', times: 6, holdMs: 1500 },
    ],
  };
}

export const replicationScenarios: ReplicationScenario[] = [
  { name: 'offloads on (GRO/TSO super-frames, partial checksums)', offloads: true, ports: [7000, 6379], workload: mixed(11), deadlineMs: 90_000 },
  { name: 'offloads off (every segment on the wire)', offloads: false, ports: [7000, 6379], workload: mixed(12), deadlineMs: 90_000 },
];
