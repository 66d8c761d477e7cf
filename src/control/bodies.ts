// The vocabulary of the control plane: message types, their codes on the wire
// and the JSON body each carries. decode() (messages.ts) checks every body
// against its type here, after the hmac: an authenticated message whose body
// does not fit its type is rejected as 'bad-body'. Extra fields are allowed
// (a newer peer may add some); missing or mistyped ones are not.

/** Type codes on the wire (one byte). Arrows say who sends to whom. */
export const MessageType = {
  HEARTBEAT: 1,        // primary agent -> detector, every interval (push)
  PROBE: 2,            // detector -> primary agent (pull)
  PROBE_REPLY: 3,      // primary agent -> detector, at once
  TAKEOVER: 4,         // detector or `t2cp takeover` -> backup; backup -> detector for a planned one
  TAKEOVER_REPORT: 5,  // backup -> whoever sent the TAKEOVER
  STAND_DOWN: 6,       // detector, or `t2cp stand-down` on the primary's host -> primary agent
  STAND_DOWN_ACK: 7,   // primary agent -> whoever sent the STAND_DOWN (the detector: once fenced)
  BACKUP_HEARTBEAT: 8, // backup -> detector
  STATUS: 9,           // anyone -> detector
  STATUS_REPLY: 10,    // detector -> asker
  NODE_STATUS: 11,     // backup or primary agent -> whoever sent it a STATUS (`t2cp status`)
  RESUPPLY_REQUEST: 12, // backup -> detector: client bytes of a flow the mirror capture lost
  RESUPPLY_DATA: 13,   // detector -> backup: one recorded client segment (traffic recorder)
  UDP_MANIFEST_REQUEST: 14, // backup -> detector: the recorder's records of datagrams from a number on
  UDP_MANIFEST: 15,    // detector -> backup: those records (addon/udp_ledger.h)
  UDP_RESUPPLY_REQUEST: 16, // backup -> detector: datagrams the mirror lost, by record number
} as const;

export type MessageTypeName = keyof typeof MessageType;
export type MessageTypeCode = (typeof MessageType)[MessageTypeName];

export const MESSAGE_TYPE_NAMES: ReadonlyMap<number, MessageTypeName> = new Map(
  (Object.entries(MessageType) as [MessageTypeName, number][]).map(([n, c]) => [c, n]),
);

/** The device states of the detector (device-states.ts), as STATUS_REPLY carries them. */
export const DEVICE_STATES = ['PROBING', 'PRIMARY_ACTIVE', 'SUSPECT', 'TAKING_OVER', 'BACKUP_ACTIVE', 'FAILED'] as const;
export type DeviceState = (typeof DEVICE_STATES)[number];

/** What a backup says of itself in BACKUP_HEARTBEAT. */
export const BACKUP_STATES = ['standby', 'blind', 'taking-over', 'active', 'failed'] as const;
export type BackupState = (typeof BACKUP_STATES)[number];

/** What a primary agent says of itself in NODE_STATUS: its fence (agent/primary-node.ts FenceState). */
export const PRIMARY_STATES = ['serving', 'self-fenced', 'stood-down'] as const;
export type PrimaryState = (typeof PRIMARY_STATES)[number];

/** The keepalived states a local hook reports in STAND_DOWN (`t2cp stand-down --vrrp-state`). */
export const VRRP_HOOK_STATES = ['MASTER', 'BACKUP', 'FAULT', 'STOP'] as const;
export type VrrpHookState = (typeof VRRP_HOOK_STATES)[number];

/** Which side the detector holds to be serving the clients. */
export type ActiveSide = 'primary' | 'backup';

/** The primary agent's view of itself, in HEARTBEAT and PROBE_REPLY. */
export interface AgentReport {
  /** The service process lives (not gone, not a zombie). */
  alive: boolean;
  /** Every configured service port has a listening socket. */
  listening: boolean;
  /** The agent's fence is engaged: this primary does not answer clients. */
  fenced: boolean;
  /** Latest epoch the agent knows (0 before any takeover). */
  epoch: number;
}

export interface TakeoverRequest {
  /** The epoch this takeover creates; 0 from a requester that does not know it (`t2cp takeover`, a backup asking). */
  epoch: number;
  reason: string;
  /** Planned: the primary is alive and is asked to stand down first. */
  planned: boolean;
}

/** The backup's account of a takeover. Keep it a summary: a datagram holds < 64 KiB. */
export interface TakeoverReport {
  epoch: number;
  ok: boolean;
  error?: string;
  [field: string]: unknown;
}

/** The backup's flows since it started: how many it protected, and why the others are not. */
export interface FlowCounts {
  /** Flows whose replica completed its handshake. */
  synchronised: number;
  /** Flows reported unprotected, for any reason; of them: */
  unprotected: number;
  /** given up at the memory limit, the largest first (`shed`), */
  shed: number;
  /** given up for a replica more than --max-lag behind, the largest first (`replica-behind`), */
  replicaBehind: number;
  /** replicas that stopped short of the primary's output (`replica-stopped`), */
  replicaStopped: number;
  /** and replicas whose output differed from the primary's (`diverged`, --divergence). */
  diverged: number;
  /** The determinism report: what the comparison found, by service port (compared ports only). */
  comparison: Record<string, PortComparison>;
  /** The last divergences (at most 5), oldest first. */
  divergences: DivergenceSeen[];
  /** Its open connections now (counted once a second), while it replicates. */
  open?: LiveFlows;
}

export interface PortComparison {
  policy: 'strict' | 'length';
  /** Flows closed with their whole output compared and alike, */
  identical: number;
  /** flows that diverged, */
  diverged: number;
  /** and flows no longer compared (one side 64 MiB ahead). */
  gaveUp: number;
  /** Bytes compared in the identical flows, and of theirs not comparable (a hole in a copy). */
  bytesCompared: number;
  bytesUnverified: number;
  /** Flows open, compared and alike so far (counted once a second), and their bytes compared. */
  open: number;
  bytesOpen: number;
}

export interface DivergenceSeen {
  flow: string;
  kind: 'bytes' | 'length';
  offset: number;
  exact: boolean;
  /** Each side's bytes from offset (printable ASCII, else \xNN); null: no longer held. */
  primary: string | null;
  replica: string | null;
}

/**
 * The connections open on the backup now: those whose replica follows (and
 * of them, those whose replica lags past its --lag-warn), and those it cannot continue.
 */
export interface LiveFlows { protected: number; unprotected: number; lagging?: number }

/** The detector's view of the pair (`t2cp status --role gateway`). */
export interface ClusterView {
  /** Who should answer the clients: the primary, or the backup once a takeover began. */
  active: ActiveSide;
  /** The address of the host that should answer the clients. */
  serving?: string;
  /** The hosts by role now: the configuration's, or swapped by a re-protection. */
  hosts?: { primary: string; backup: string };
  swapped?: boolean;
  /** The backup as the detector last heard it, or silent. */
  backup: string;
  /** Whether a failure now would be survived, and why not; null while not known yet. */
  protection: { protected: boolean | null; why: string };
  /** The backup's connections as its last heartbeat counted them (while it replicates). */
  flows?: LiveFlows;
  /** The last takeover this detector ran, or adopted after a restart. */
  lastTakeover?: { epoch: number; outcome: string; cause?: string; verdictAt?: string; adopted?: boolean; flowsTakenOver?: number; flowsLost?: number; clientsReset?: number };
}

/** A role's answer to STATUS (`t2cp status`, a cluster manager's monitor). */
export type NodeStatus =
  | { role: 'backup'; state: BackupState; epoch: number; flows: FlowCounts }
  | { role: 'primary'; state: PrimaryState; epoch: number; service: { alive: boolean; listening: boolean } }
  | ({ role: 'gateway'; state: DeviceState; epoch: number } & ClusterView);

export interface BodyOf {
  HEARTBEAT: AgentReport;
  PROBE: { seq: number; epoch: number; active: ActiveSide };
  PROBE_REPLY: AgentReport & { seq: number };
  TAKEOVER: TakeoverRequest;
  TAKEOVER_REPORT: TakeoverReport;
  /** vrrp and hookStartUs only from a local hook (the agent checks them; see agent/vrrp-guard.ts). */
  STAND_DOWN: { epoch: number; vrrp?: VrrpHookState; hookStartUs?: number };
  /**
   * To a local request also: fenced (the agent's fence after the request), note (why nothing
   * changed), error (the fence failed: the agent tries again at the next STAND_DOWN).
   */
  STAND_DOWN_ACK: { epoch: number; fenced?: boolean; note?: string; error?: string };
  /** flows: its live counts while it replicates. */
  BACKUP_HEARTBEAT: { state: BackupState; epoch: number; flows?: LiveFlows };
  STATUS: Record<string, unknown>;
  STATUS_REPLY: { state: DeviceState; epoch: number; active: ActiveSide; backup: string };
  NODE_STATUS: NodeStatus;
  /** The flow (client address and port, service port) and the client sequence numbers [from, from + bytes). */
  RESUPPLY_REQUEST: { client: string; clientPort: number; vipPort: number; from: number; bytes: number };
  /** The segment as the gateway forwarded it (IPv4 + TCP, base64), cut to fit one frame. */
  RESUPPLY_DATA: { packet: string };
  /**
   * after: the first record number wanted; fromNow: none, only where the numbering is (a backup starting);
   * mac: the backup's own, on the interface that takes the VIP (its records come back as direct).
   */
  UDP_MANIFEST_REQUEST: { after: number; fromNow: boolean; mac?: string };
  /**
   * Records [first, next) as 16-byte records in base64 (client address, client port, VIP port, digest);
   * boot: the recorder's start (its numbering); lost: numbers from `after` evicted before asked; more: ask
   * again at once; cut: the takeover's cut is reached, no record follows; direct: the numbers (comma-separated) of
   * the records whose datagram the gateway forwarded to the asking backup's mac itself, once the VIP had moved.
   */
  UDP_MANIFEST: { boot: number; first: number; next: number; lost: number; more: boolean; cut: boolean; records: string; direct?: string };
  /** Record numbers, comma-separated. */
  UDP_RESUPPLY_REQUEST: { records: string };
}

type FieldKind = 'bool' | 'uint' | 'string' | readonly string[];
type Schema = Record<string, FieldKind>;

const agent: Schema = { alive: 'bool', listening: 'bool', fenced: 'bool', epoch: 'uint' };
const SCHEMAS: Record<MessageTypeName, Schema> = {
  HEARTBEAT: agent,
  PROBE: { seq: 'uint', epoch: 'uint', active: ['primary', 'backup'] },
  PROBE_REPLY: { ...agent, seq: 'uint' },
  TAKEOVER: { epoch: 'uint', reason: 'string', planned: 'bool' },
  TAKEOVER_REPORT: { epoch: 'uint', ok: 'bool' },
  STAND_DOWN: { epoch: 'uint' },
  STAND_DOWN_ACK: { epoch: 'uint' },
  BACKUP_HEARTBEAT: { state: BACKUP_STATES, epoch: 'uint' },
  STATUS: {},
  STATUS_REPLY: { state: DEVICE_STATES, epoch: 'uint', active: ['primary', 'backup'], backup: 'string' },
  NODE_STATUS: { role: ['primary', 'backup', 'gateway'], state: [...BACKUP_STATES, ...PRIMARY_STATES, ...DEVICE_STATES], epoch: 'uint' },
  RESUPPLY_REQUEST: { client: 'string', clientPort: 'uint', vipPort: 'uint', from: 'uint', bytes: 'uint' },
  RESUPPLY_DATA: { packet: 'string' },
  UDP_MANIFEST_REQUEST: { after: 'uint', fromNow: 'bool' },
  UDP_MANIFEST: { boot: 'uint', first: 'uint', next: 'uint', lost: 'uint', more: 'bool', cut: 'bool', records: 'string' },
  UDP_RESUPPLY_REQUEST: { records: 'string' },
};

function fits(v: unknown, kind: FieldKind): boolean {
  if (kind === 'bool') return typeof v === 'boolean';
  if (kind === 'uint') return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  if (kind === 'string') return typeof v === 'string';
  return typeof v === 'string' && kind.includes(v);
}

/** Does `body` (parsed JSON) carry what a message of `type` must? */
export function bodyFits(type: MessageTypeName, body: unknown): boolean {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return false;
  const b = body as Record<string, unknown>;
  for (const [field, kind] of Object.entries(SCHEMAS[type])) if (!fits(b[field], kind)) return false;
  return true;
}
