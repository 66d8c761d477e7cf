// Replication scenarios as data (conntrackd's tests.yaml habit): what runs
// and what disturbs it, not what is asserted. replication.test.ts applies
// the same checks to each, plus the scenario's own proof that its
// disturbance really happened (`mustCount`: counters that must be > 0).
import type { Workload } from '../../scripts/client.js';

export interface ReplicationScenario {
  name: string;
  offloads: boolean;
  ports: number[];
  workload: Workload;
  deadlineMs: number;
  /** Extra options of the backup's copy of the service (e.g. a slow reader). */
  replicaService?: string[];
  /**
   * The mirror reorders (frames with an odd IP ID wait in a rate-limited HTB
   * class) and/or duplicates (client frames are mirrored twice). This kernel
   * has no netem; HTB and a second mirred action do it with real qdiscs.
   */
  mirror?: { reorder?: boolean; duplicate?: boolean };
  /** Drop one in N data segments injected into the replica (its kernel "lost" them). */
  replicaDropOneIn?: number;
  mustCount?: string[];
  /** Extra `t2cp backup` options. */
  backupArgs?: string[];
  /**
   * Sessions of these kinds are expected to be lost by the replica (reported
   * as an anomaly with this reason and unprotected, its copy reset), while
   * every other session stays exact and the client never notices.
   */
  expectLost?: { kinds: string[]; reason: string };
}

const MB = 1 << 20;

/** Many small request/response sessions, long bulk transfers both ways, idle connections. */
function mixed(seed: number, bulk = 50 * MB): Workload {
  return {
    seed,
    sessions: [
      { kind: 'upload', bytes: bulk },
      { kind: 'download', bytes: bulk },
      { kind: 'rr', times: 20, count: 25, reqSize: [1, 6000], respSize: [1, 40000] },
      { kind: 'rr', times: 20, count: 25, reqSize: [1, 6000], respSize: [1, 40000], port: 6379 },
      { kind: 'idle', times: 6, holdMs: 1500 },
    ],
  };
}

export const replicationScenarios: ReplicationScenario[] = [
  {
    name: 'offloads on (GRO/TSO super-frames, partial checksums)',
    offloads: true, ports: [7000, 6379], workload: mixed(11), deadlineMs: 90_000,
    mustCount: ['mirror_superframes', 'flows_synchronised'],
  },
  {
    name: 'offloads off (every segment on the wire)',
    offloads: false, ports: [7000, 6379], workload: mixed(12), deadlineMs: 90_000,
    mustCount: ['flows_synchronised'],
  },
  {
    // The replica reads in bursts, far slower than the primary: its window
    // closes and t2cp holds up to a whole upload until it reads again — and
    // reports the replica that far behind (--lag-warn). Reading ~6.5 MB/s,
    // it ends ~3 s behind the client: a lag the scenario must tolerate, so
    // --max-lag (tested in takeover-load) must not give it up.
    name: 'slow replica (its receive window closes)',
    offloads: true, ports: [7000, 6379], workload: mixed(13, 20 * MB), deadlineMs: 90_000,
    replicaService: ['--read-pause-ms', '40', '--pause-every', String(256 * 1024)],
    backupArgs: ['--flow-buffer', '64m', '--lag-warn', '4m', '--max-lag', '30000'],
    mustCount: ['held_for_window', 'replica_lagging'],
  },
  {
    // Too slow for the per-flow buffer: the bytes t2cp cannot hold are lost
    // to the replica. That flow is reported and its copy reset; the others
    // and the client are untouched. (The traffic recorder will resupply.)
    name: 'replica too slow for the flow buffer',
    offloads: true, ports: [7000, 6379], workload: mixed(16, 20 * MB), deadlineMs: 90_000,
    replicaService: ['--read-pause-ms', '40', '--pause-every', String(256 * 1024)],
    backupArgs: ['--flow-buffer', '2m'],
    mustCount: ['flow_buffer_full', 'flows_unprotected'],
    expectLost: { kinds: ['upload'], reason: 'buffer-full' },
  },
  {
    name: 'mirror reorders and duplicates frames',
    offloads: false, ports: [7000, 6379], workload: mixed(14, 10 * MB), deadlineMs: 90_000,
    mirror: { reorder: true, duplicate: true },
    mustCount: ['segments_out_of_order', 'segments_duplicate'],
  },
  {
    // A burst of new connections overflows the replica's accept queue: its
    // kernel drops SYNs and handshake ACKs that the client sends only once
    // (the primary took them). t2cp must send them again. With a backlog of
    // 8 the last of 800 connections may wait 3 s and more (the retries back
    // off): --max-lag would rightly give such a flow up, which is not this
    // scenario's subject.
    name: "replica's accept queue overflows",
    offloads: true, ports: [7000, 6379], deadlineMs: 90_000,
    workload: { seed: 17, concurrency: 150, sessions: [{ kind: 'rr', times: 800, count: 2, reqSize: [4, 200], respSize: [1, 200] }] },
    replicaService: ['--backlog', '8'],
    backupArgs: ['--max-lag', '30000'],
    mustCount: ['inject_reinjected'],
  },
  {
    // Injected data lost inside the backup (as under memory pressure): the
    // replica never acknowledges it and t2cp must send it again.
    name: 'replica loses injected segments',
    offloads: true, ports: [7000, 6379], workload: mixed(15, 5 * MB), deadlineMs: 90_000,
    replicaDropOneIn: 40,
    mustCount: ['inject_reinjected'],
  },
];
