// The ways the primary fails in the takeover tests, as data (conntrackd's
// tests.yaml habit); the assertions live in takeover.test.ts.
import type { Workload } from '../../scripts/client.js';

export interface TakeoverScenario {
  name: string;
  failure: 'link-down' | 'freeze' | 'planned';
  /** Who decides: the gateway's detector, keepalived (VRRP hooks), or the test running `t2cp takeover`. */
  trigger: 'detector' | 'keepalived' | 'manual';
  /** The old primary comes back after the takeover and must stand down. */
  comesBack: boolean;
  /** Time the sessions run before the failure, ms. */
  failAfterMs: number;
  workload: Workload;
  /** `t2cp backup --active-mode`: who translates after the takeover (default: the kernel). */
  activeMode?: 'kernel' | 'queue';
}

// Request/response every 10 ms for ~4 s, bulk both ways (large enough to be
// in flight at the failure), idle connections open across it.
export const mixedWorkload: Workload = {
  seed: 3,
  sessions: [
    { kind: 'rr', times: 8, count: 300, intervalMs: 10, reqSize: [4, 600], respSize: [1, 3000] },
    { kind: 'download', times: 2, bytes: 150 << 20 },
    { kind: 'upload', times: 2, bytes: 150 << 20 },
    { kind: 'idle', times: 6, holdMs: 5000 },
  ],
};

export const takeoverScenarios: TakeoverScenario[] = [
  { name: 'link down', failure: 'link-down', trigger: 'detector', comesBack: true, failAfterMs: 800, workload: mixedWorkload },
  { name: 'host freeze', failure: 'freeze', trigger: 'detector', comesBack: true, failAfterMs: 800, workload: mixedWorkload },
  { name: 'planned (t2cp takeover)', failure: 'planned', trigger: 'detector', comesBack: false, failAfterMs: 800, workload: mixedWorkload },
  { name: 'link down, keepalived decides', failure: 'link-down', trigger: 'keepalived', comesBack: true, failAfterMs: 800, workload: mixedWorkload },
  { name: 'host freeze, no detector, manual t2cp takeover, queue translator', failure: 'freeze', trigger: 'manual', comesBack: false, failAfterMs: 800, workload: mixedWorkload, activeMode: 'queue' },
];
