// The ways the primary fails in the takeover tests, as data (conntrackd's
// tests.yaml habit); the assertions live in takeover.test.ts.
import type { Workload } from '../../scripts/client.js';

export interface TakeoverScenario {
  name: string;
  failure: 'link-down' | 'freeze' | 'planned';
  /** Time the sessions run before the failure, ms. */
  failAfterMs: number;
  workload: Workload;
}

// Request/response every 10 ms for ~4 s, bulk both ways (large enough to be
// in flight at the failure), idle connections open across it.
const mixed: Workload = {
  seed: 3,
  sessions: [
    { kind: 'rr', times: 8, count: 300, intervalMs: 10, reqSize: [4, 600], respSize: [1, 3000] },
    { kind: 'download', times: 2, bytes: 150 << 20 },
    { kind: 'upload', times: 2, bytes: 150 << 20 },
    { kind: 'idle', times: 6, holdMs: 5000 },
  ],
};

export const takeoverScenarios: TakeoverScenario[] = [
  { name: 'host freeze, manual takeover', failure: 'freeze', failAfterMs: 800, workload: mixed },
  { name: 'link down, manual takeover', failure: 'link-down', failAfterMs: 800, workload: mixed },
];
