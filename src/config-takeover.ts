// Options of the takeover's control-plane commands — `t2cp gateway` (the
// failure detector), `t2cp primary` (the agent on the primary),
// `t2cp takeover` (a planned switch), `t2cp stand-down` (the primary's
// keepalived hook) and `t2cp status` (a role's state, for a cluster manager's
// monitor) — as tables for the shared option parser (options.ts).
// Shared by all five: --key-file (required), --instance, --json.
import { VRRP_HOOK_STATES, type VrrpHookState } from './control/bodies.js';
import { configError } from './errors.js';
import { checkInstance, eventOptions, metricsOption, type CommandSpec, type Endpoint, type OptionSpec } from './options.js';
import type { HeartbeatMode, HeartbeatTiming } from './detector/heartbeat.js';

export const GATEWAY_PORT = 7390;
export const CONTROL_PORT = 7391;
export const AGENT_PORT = 7392;

interface Shared {
  keyFile: string;
  instance: string;
  json: boolean;
}

function shared<C extends Shared>(): OptionSpec<C>[] {
  return [
    { key: 'keyFile', flag: '--key-file', kind: 'string', arg: 'FILE', required: true,
      help: 'shared key of the control plane: hex (`openssl rand -hex 32`) or raw bytes; the same file on gateway, primary and backup' },
    { key: 'instance', flag: '--instance', kind: 'string', arg: 'NAME', help: 'names this instance in logs and messages; default main' },
    { key: 'json', flag: '--json', kind: 'bool', help: 'log as JSON lines instead of text' },
  ] as OptionSpec<C>[];
}

interface Timing {
  intervalMs: number;
  softMisses: number;
  hardMisses: number;
  /** Absent: interval / 2. */
  probeIntervalMs?: number;
}

function timingOptions<C extends Timing>(): OptionSpec<C>[] {
  return [
    { key: 'intervalMs', flag: '--interval', kind: 'int', arg: 'MS', min: 1, max: 60000,
      help: 'heartbeat interval; the agent and the detector must agree; default 10' },
    { key: 'softMisses', flag: '--soft-misses', kind: 'int', arg: 'N', min: 1, max: 1000,
      help: 'heartbeats missed (each half an interval late) before the primary is suspect and probed; default 1' },
    { key: 'hardMisses', flag: '--hard-misses', kind: 'int', arg: 'N', min: 2, max: 1000,
      help: 'intervals of total silence before the host is dead, and bad service reports in a row before the service is; default 3' },
    { key: 'probeIntervalMs', flag: '--probe-interval', kind: 'int', arg: 'MS', min: 1, max: 60000,
      help: 'probe period while suspect; default interval/2' },
  ] as OptionSpec<C>[];
}

const TIMING_DEFAULTS = { intervalMs: 10, softMisses: 1, hardMisses: 3 };

/** The heartbeat roles' scheduling priority (`t2cp gateway`, `t2cp primary`). */
interface Priority {
  nice: number;
}

// At 10 ms heartbeats and 3 misses, 30 ms in which the agent does not run is a
// dead verdict: on a busy host (measured: the demo's clients starting on two
// CPUs) an ordinary process can wait that long. A raised priority, as
// keepalived's vrrp_priority, not real-time (that could starve the service).
const PRIORITY_DEFAULTS: Priority = { nice: -10 };

function priorityOption<C extends Priority>(): OptionSpec<C>[] {
  return [
    { key: 'nice', flag: '--nice', kind: 'int', arg: 'N', min: -20, max: 19,
      help: `scheduling priority of this process's main thread, as nice(1); default ${PRIORITY_DEFAULTS.nice}: heartbeats and probes must not wait behind the host's other work` },
  ] as OptionSpec<C>[];
}

function checkTiming(c: Timing): void {
  if (c.hardMisses <= c.softMisses)
    throw configError(`--hard-misses ${c.hardMisses} must exceed --soft-misses ${c.softMisses}: the probes between the two timeouts are what tell a loaded network from a dead host`);
  if (c.probeIntervalMs !== undefined && c.probeIntervalMs > c.intervalMs)
    throw configError(`--probe-interval ${c.probeIntervalMs} exceeds --interval ${c.intervalMs}: a suspect primary is probed faster than it heartbeats, or the soft timeout gains nothing`);
}

export function heartbeatTiming(c: Timing): HeartbeatTiming {
  return {
    intervalUs: c.intervalMs * 1000,
    softMisses: c.softMisses,
    hardMisses: c.hardMisses,
    probeIntervalUs: c.probeIntervalMs !== undefined ? c.probeIntervalMs * 1000 : c.intervalMs * 500,
  };
}

// ---- t2cp gateway ----------------------------------------------------------

export interface GatewayConfig extends Shared, Timing, Priority {
  listen: Endpoint;
  metrics?: Endpoint;
  events?: string;
  notify?: string;
  primary: Endpoint;
  backup: Endpoint;
  mode: HeartbeatMode;
  backupTimeoutMs: number;
  takeoverTimeoutMs: number;
  standDownTimeoutMs: number;
  report?: string;
  primaryMac?: string;
  /** Where the cluster state is kept across restarts; absent: not kept. */
  stateDir?: string;
  vip: string;
  ports: number[];
  udpPorts: number[];
  /** The interface toward the servers (traffic recorder, fence); absent: the route to --backup's. */
  lanIf?: string;
  recordWindowMs: number;
  recordMaxBytes: number;
}

export const GATEWAY_COMMAND: CommandSpec<GatewayConfig> = {
  name: 'gateway',
  synopsis: 'usage: t2cp gateway --key-file FILE --primary ADDR[:PORT] --backup ADDR[:PORT] --vip ADDR (--ports LIST | --udp-ports LIST | both) [options]',
  about: [
    'The failure detector, on the gateway in front of the primary and the backup.',
    'It hears the primary agent (`t2cp primary`) every interval, probes it when a',
    'heartbeat is late, and declares it dead only after the hard timeout (or its',
    'service dead after as many bad reports); then it fences the old primary at',
    'the gateway and orders the backup to take over (TAKEOVER, epoch + 1), and',
    'orders the old primary to stand down whenever it is heard again. Every state',
    'transition is logged with its time; each takeover writes one JSON record.',
    'Its traffic recorder keeps the last --record-window of what the clients send',
    'toward the VIP and sends it again to the backup once it took over, so that',
    'nothing the dead primary swallowed waits for a client\'s retransmission timer.',
  ],
  options: [
    ...shared<GatewayConfig>(),
    ...priorityOption<GatewayConfig>(),
    metricsOption<GatewayConfig>('gateway'),
    ...eventOptions<GatewayConfig>(),
    { key: 'listen', flag: '--listen', kind: 'bind', arg: 'ADDR:PORT', defaultPort: GATEWAY_PORT,
      help: `where the detector listens (UDP); default 0.0.0.0:${GATEWAY_PORT}` },
    { key: 'primary', flag: '--primary', kind: 'endpoint', arg: 'ADDR:PORT', defaultPort: AGENT_PORT, required: true,
      help: `the primary agent's address (its --listen); port default ${AGENT_PORT}` },
    { key: 'backup', flag: '--backup', kind: 'endpoint', arg: 'ADDR:PORT', defaultPort: CONTROL_PORT, required: true,
      help: `the backup's control endpoint (its --control-port); port default ${CONTROL_PORT}` },
    { key: 'mode', flag: '--mode', kind: 'choice', arg: 'MODE', choices: ['push', 'pull', 'both'],
      help: 'push: heartbeats only; pull: probe every interval; both: heartbeats, probes when suspect; default both' },
    ...timingOptions<GatewayConfig>(),
    { key: 'backupTimeoutMs', flag: '--backup-timeout', kind: 'int', arg: 'MS', min: 1, max: 600000,
      help: 'the backup is silent (a takeover impossible) when not heard this long; default 1000' },
    { key: 'takeoverTimeoutMs', flag: '--takeover-timeout', kind: 'int', arg: 'MS', min: 1, max: 600000,
      help: 'a takeover not reported done by the backup this long after the verdict has FAILED; default 5000' },
    { key: 'standDownTimeoutMs', flag: '--stand-down-timeout', kind: 'int', arg: 'MS', min: 1, max: 60000,
      help: 'planned takeover: wait this long for the primary to stand down (and for the gateway fence) before ordering the backup anyway; default 500' },
    { key: 'report', flag: '--report', kind: 'string', arg: 'FILE', help: 'append each takeover record (JSON line) to FILE' },
    { key: 'primaryMac', flag: '--primary-mac', kind: 'mac', arg: 'MAC', help: "the primary's MAC for the gateway fence; default: learnt from this host's ARP entry for the VIP" },
    { key: 'stateDir', flag: '--state-dir', kind: 'string', arg: 'DIR',
      help: 'keep the epoch, the serving side and the fenced MAC in DIR/gateway-INSTANCE.json (synced), read at start: a restarted detector re-engages its fence; default: not kept' },
    { key: 'vip', flag: '--vip', kind: 'ipv4', arg: 'ADDR', required: true, help: 'the service address the clients use' },
    { key: 'ports', flag: '--ports', kind: 'ports', arg: 'LIST', help: 'the replicated TCP service ports (as given to t2cp backup); this, --udp-ports or both' },
    { key: 'udpPorts', flag: '--udp-ports', kind: 'port-ranges', arg: 'LIST', help: 'the replicated UDP service ports (as given to t2cp backup); the traffic recorder numbers their datagrams for the backup' },
    { key: 'lanIf', flag: '--lan-if', kind: 'string', arg: 'IF',
      help: "interface toward the servers: the traffic recorder keeps what the clients send there; default: the route to --backup's" },
    { key: 'recordWindowMs', flag: '--record-window', kind: 'int', arg: 'MS', min: 0, max: 600000,
      help: 'how far back the traffic recorder keeps client segments to resupply after a takeover (0: off); default 2000' },
    { key: 'recordMaxBytes', flag: '--record-max', kind: 'bytes', arg: 'BYTES', min: 1 << 20, max: 2 ** 40,
      help: 'bound of the recorder\'s memory; default 256m' },
  ],
  defaults: {
    ...PRIORITY_DEFAULTS,
    instance: 'main', json: false, listen: { address: '0.0.0.0', port: GATEWAY_PORT }, mode: 'both', ...TIMING_DEFAULTS,
    backupTimeoutMs: 1000, takeoverTimeoutMs: 5000, standDownTimeoutMs: 500, recordWindowMs: 2000, recordMaxBytes: 256 << 20,
    ports: [], udpPorts: [],
  },
  validate: (c) => {
    checkInstance(c.instance);
    checkTiming(c);
    checkServicePorts(c);
    if (c.primary.address === c.backup.address && c.primary.port === c.backup.port)
      throw configError('--primary and --backup are the same endpoint: give the agent\'s and the backup\'s own addresses');
  },
};

/** A role names its service by TCP ports, UDP ports or both: one list at least. */
function checkServicePorts(c: { ports: number[]; udpPorts: number[] }): void {
  if (!c.ports.length && !c.udpPorts.length)
    throw configError('missing --ports LIST or --udp-ports LIST: name the service ports, e.g. --ports 7000,6379 or --udp-ports 5060');
}

// ---- t2cp primary ----------------------------------------------------------

export interface PrimaryConfig extends Shared, Priority {
  listen: Endpoint;
  metrics?: Endpoint;
  events?: string;
  notify?: string;
  /** Absent: keepalived decides who serves (see STAND_DOWN_COMMAND). */
  detector?: Endpoint;
  intervalMs: number;
  ports: number[];
  udpPorts: number[];
  vip: string;
  servicePid?: number;
  servicePidfile?: string;
  selfFenceAfterMs: number;
  /** Where standing down is kept across restarts; absent: not kept. */
  stateDir?: string;
}

export const PRIMARY_COMMAND: CommandSpec<PrimaryConfig> = {
  name: 'primary',
  synopsis: 'usage: t2cp primary --key-file FILE --vip ADDR (--ports LIST | --udp-ports LIST | both) [--detector ADDR[:PORT]] [options]',
  about: [
    'The agent on the primary host. With --detector it sends a heartbeat to the',
    'failure detector every interval and answers its probes at once, each saying',
    'whether the service process lives and its ports listen. Told to stand down',
    '(the backup took over), it fences this host off the clients and stays fenced:',
    'only a restart of the agent lifts it, after which the detector is asked who is',
    'active first.',
    '',
    'Without --detector (keepalived decides who serves) it sends nothing and only',
    'listens: `t2cp stand-down` on this host (keepalived\'s notify hooks) makes it',
    'stand down; see `t2cp stand-down --help` for the hooks and the startup rule.',
    'A stand-down from 127.0.0.1 is accepted with a detector too.',
  ],
  options: [
    ...shared<PrimaryConfig>(),
    ...priorityOption<PrimaryConfig>(),
    metricsOption<PrimaryConfig>('primary'),
    ...eventOptions<PrimaryConfig>(),
    { key: 'detector', flag: '--detector', kind: 'endpoint', arg: 'ADDR:PORT', defaultPort: GATEWAY_PORT,
      help: `the failure detector (\`t2cp gateway\`); port default ${GATEWAY_PORT}. Without it: no heartbeats, no status query, no self-fence; only local commands act` },
    { key: 'listen', flag: '--listen', kind: 'bind', arg: 'ADDR:PORT', defaultPort: AGENT_PORT,
      help: `where the agent listens; the detector's --primary, \`t2cp stand-down\`'s --agent; default 0.0.0.0:${AGENT_PORT}` },
    { key: 'intervalMs', flag: '--interval', kind: 'int', arg: 'MS', min: 1, max: 60000, help: 'heartbeat interval, as the detector\'s; default 10' },
    { key: 'ports', flag: '--ports', kind: 'ports', arg: 'LIST',
      help: 'TCP service ports that must be listening (on the VIP or 0.0.0.0) for the service to count as up; this, --udp-ports or both' },
    { key: 'udpPorts', flag: '--udp-ports', kind: 'port-ranges', arg: 'LIST',
      help: 'UDP service ports: each single one must be bound (on the VIP or 0.0.0.0) for the service to count as up; a range (media ports a relay binds per call) is not watched' },
    { key: 'vip', flag: '--vip', kind: 'ipv4', arg: 'ADDR', required: true,
      help: 'service address: the fence silences it when this primary stands down; its listeners (or 0.0.0.0) count as listening' },
    { key: 'servicePid', flag: '--service-pid', kind: 'int', arg: 'N', min: 1, max: 2 ** 22, help: 'the service process; without it (or a pidfile) only the ports count' },
    { key: 'servicePidfile', flag: '--service-pidfile', kind: 'string', arg: 'FILE', help: 'file holding the service pid, read again at every check' },
    { key: 'selfFenceAfterMs', flag: '--self-fence-after', kind: 'int', arg: 'MS', min: 0, max: 600000,
      help: 'fence this host when the detector was not heard this long (it is polled); 0 (default) off; needs --detector. The gateway is on the clients\' path: a primary that cannot hear it cannot serve them either, but the backup may' },
    { key: 'stateDir', flag: '--state-dir', kind: 'string', arg: 'DIR',
      help: 'keep that this primary stood down (and the epoch) in DIR/primary-INSTANCE.json (synced): restarted, it fences again at once; remove the file to serve again; default: not kept' },
  ],
  defaults: { instance: 'main', json: false, listen: { address: '0.0.0.0', port: AGENT_PORT }, intervalMs: 10, selfFenceAfterMs: 0, ...PRIORITY_DEFAULTS,
    ports: [], udpPorts: [] },
  validate: (c) => {
    checkInstance(c.instance);
    checkServicePorts(c);
    if (c.servicePid !== undefined && c.servicePidfile !== undefined)
      throw configError('--service-pid and --service-pidfile exclude each other: give one');
    if (c.selfFenceAfterMs > 0 && c.detector === undefined)
      throw configError(`--self-fence-after ${c.selfFenceAfterMs} needs --detector: it fences when the detector falls silent, and without one nothing is heard; with keepalived, stand down from its hooks (t2cp stand-down)`);
    if (c.selfFenceAfterMs > 0 && c.selfFenceAfterMs < 4 * c.intervalMs)
      throw configError(`--self-fence-after ${c.selfFenceAfterMs} is shorter than 4 intervals (${4 * c.intervalMs} ms): the agent polls the detector 4 times in that time`);
  },
};

// ---- t2cp takeover ---------------------------------------------------------

export interface TakeoverConfig extends Shared {
  control: Endpoint;
  reason: string;
  timeoutMs: number;
  drainMs: number;
}

export const TAKEOVER_COMMAND: CommandSpec<TakeoverConfig> = {
  name: 'takeover',
  synopsis: 'usage: t2cp takeover --key-file FILE [--control ADDR:PORT] [--reason TEXT] [--drain MS] [--timeout MS]',
  about: [
    'Asks the backup to take over now (a planned switch; after a re-protection, the',
    'failback). Run it on the backup host: the backup asks the detector, which has',
    'the primary stand down first. Before it asks, it says how many open connections',
    'the backup cannot continue (their clients are reset), and with --drain waits for',
    "them to close. Prints the backup's takeover report as JSON; exit 0 when it took",
    "over, 1 otherwise. Also the hook for keepalived's notify_master.",
  ],
  options: [
    ...shared<TakeoverConfig>(),
    { key: 'control', flag: '--control', kind: 'endpoint', arg: 'ADDR:PORT', defaultPort: CONTROL_PORT,
      help: `the backup's control endpoint; default 127.0.0.1:${CONTROL_PORT}` },
    { key: 'reason', flag: '--reason', kind: 'string', arg: 'TEXT', help: 'why, for the records; default manual' },
    { key: 'drainMs', flag: '--drain', kind: 'int', arg: 'MS', min: 0, max: 86400000,
      help: 'wait up to MS for the open connections the backup cannot continue to close before asking; default 0' },
    { key: 'timeoutMs', flag: '--timeout', kind: 'int', arg: 'MS', min: 1, max: 600000, help: 'give up without a report after MS (after the drain); default 10000' },
  ],
  defaults: { instance: 'main', json: false, control: { address: '127.0.0.1', port: CONTROL_PORT }, reason: 'manual', timeoutMs: 10000, drainMs: 0 },
  validate: (c) => checkInstance(c.instance),
};

// ---- t2cp stand-down -------------------------------------------------------

export interface StandDownConfig extends Shared {
  agent: Endpoint;
  epoch: number;
  timeoutMs: number;
  vrrpState?: VrrpHookState;
}

export const STAND_DOWN_COMMAND: CommandSpec<StandDownConfig> = {
  name: 'stand-down',
  synopsis: 'usage: t2cp stand-down --key-file FILE [--vrrp-state STATE] [--agent ADDR:PORT] [--epoch N] [--timeout MS]',
  about: [
    'Tells the primary agent (`t2cp primary`) on this host to stand down: it fences',
    'this host off the clients, for good, as when the detector orders it. Sent from',
    '127.0.0.1, again every 100 ms until the agent answers; exit 0 when it answered',
    '(fenced, or the reason it did nothing), 1 otherwise, 2 for a wrong option.',
    '',
    "keepalived as the source of truth: the hooks of the primary host's vrrp_instance",
    "(keepalived runs them as argv, no shell; give t2cp's full path; the backup",
    'host has notify_master "t2cp takeover --key-file K --reason keepalived"):',
    '  notify_master "t2cp stand-down --key-file K --vrrp-state MASTER"',
    '  notify_backup "t2cp stand-down --key-file K --vrrp-state BACKUP"',
    '  notify_fault  "t2cp stand-down --key-file K --vrrp-state FAULT"',
    '  notify_stop   "t2cp stand-down --key-file K --vrrp-state STOP"',
    'The rule: FAULT and STOP stand down; MASTER is only recorded (never fences, never',
    'unfences); BACKUP stands down only when a MASTER of this host, since the agent',
    'started, came before it. keepalived passes every instance through BACKUP once',
    'at startup, before it can be MASTER: that BACKUP is answered "ignored". Order is',
    'when keepalived started each hook, not when its message arrived. An agent',
    'restarted while this host is MASTER ignores BACKUP until the next MASTER.',
    'Use state BACKUP and nopreempt on both hosts: a primary that stood down never',
    'serves again until its agent is restarted, so it must not take mastership back.',
  ],
  options: [
    ...shared<StandDownConfig>(),
    { key: 'vrrpState', flag: '--vrrp-state', kind: 'choice', arg: 'STATE', choices: VRRP_HOOK_STATES,
      help: "the keepalived state this hook reports (MASTER, BACKUP, FAULT, STOP): the agent applies the rule above; without it the agent stands down at once" },
    { key: 'agent', flag: '--agent', kind: 'endpoint', arg: 'ADDR:PORT', defaultPort: AGENT_PORT,
      help: `the agent's --listen, on this host; default 127.0.0.1:${AGENT_PORT}` },
    { key: 'epoch', flag: '--epoch', kind: 'int', arg: 'N', min: 0, max: Number.MAX_SAFE_INTEGER,
      help: 'the epoch to report (the agent keeps the highest it heard); default 0' },
    { key: 'timeoutMs', flag: '--timeout', kind: 'int', arg: 'MS', min: 1, max: 600000, help: 'give up after MS without an answer; default 5000' },
  ],
  defaults: { instance: 'main', json: false, agent: { address: '127.0.0.1', port: AGENT_PORT }, epoch: 0, timeoutMs: 5000 },
  validate: (c) => checkInstance(c.instance),
};

// ---- t2cp status -----------------------------------------------------------

export interface StatusConfig extends Shared {
  role: 'backup' | 'primary' | 'gateway';
  control: Endpoint;
  agent: Endpoint;
  detector: Endpoint;
  timeoutMs: number;
}

export const STATUS_COMMAND: CommandSpec<StatusConfig> = {
  name: 'status',
  synopsis: 'usage: t2cp status --key-file FILE --role backup|primary|gateway [--control ADDR:PORT] [--agent ADDR:PORT] [--detector ADDR:PORT] [--timeout MS]',
  about: [
    'Asks a role on this host what it is doing, through its control socket, and',
    'prints one line (or, with --json, the answer as JSON):',
    '  backup:  standby (replicating), blind (its mirror port is down), taking-over,',
    '           active (serving the VIP), failed',
    '  primary: serving, self-fenced, stood-down (fenced for good); and its service',
    '  gateway: the detector\'s device state, who serves, the backup as it last heard it,',
    '           whether the service is protected (and why not), the backup\'s open',
    '           connections protected and unprotected, the last takeover',
    'Exit 0 when the role answered, 1 when it did not (not running, another key),',
    '2 for a wrong option. Changes nothing: the monitor of a cluster manager',
    '(the Pacemaker resource agent, scripts/ocf/t2cp) calls it.',
  ],
  options: [
    ...shared<StatusConfig>(),
    { key: 'role', flag: '--role', kind: 'choice', arg: 'ROLE', choices: ['backup', 'primary', 'gateway'], required: true,
      help: 'which role to ask: backup (`t2cp backup`), primary (the agent, `t2cp primary`) or gateway (the failure detector, `t2cp gateway`)' },
    { key: 'control', flag: '--control', kind: 'endpoint', arg: 'ADDR:PORT', defaultPort: CONTROL_PORT,
      help: `--role backup: the backup's control endpoint; default 127.0.0.1:${CONTROL_PORT}` },
    { key: 'agent', flag: '--agent', kind: 'endpoint', arg: 'ADDR:PORT', defaultPort: AGENT_PORT,
      help: `--role primary: the agent's --listen; default 127.0.0.1:${AGENT_PORT}` },
    { key: 'detector', flag: '--detector', kind: 'endpoint', arg: 'ADDR:PORT', defaultPort: GATEWAY_PORT,
      help: `--role gateway: the detector's --listen; default 127.0.0.1:${GATEWAY_PORT}` },
    { key: 'timeoutMs', flag: '--timeout', kind: 'int', arg: 'MS', min: 1, max: 600000, help: 'give up without an answer after MS; default 2000' },
  ],
  defaults: {
    instance: 'main', json: false, control: { address: '127.0.0.1', port: CONTROL_PORT }, agent: { address: '127.0.0.1', port: AGENT_PORT },
    detector: { address: '127.0.0.1', port: GATEWAY_PORT }, timeoutMs: 2000,
  },
  validate: (c) => checkInstance(c.instance),
};

export interface EventsConfig {
  socket: string;
  level: 'strong' | 'weak' | 'incremental';
}

export const EVENTS_COMMAND: CommandSpec<EventsConfig> = {
  name: 'events',
  synopsis: 'usage: t2cp events --socket PATH [--level strong|weak|incremental]',
  about: [
    'Follows the events of a role started with --events PATH and prints them, one',
    'JSON object a line, until the role stops (exit 0) or this is interrupted:',
    '  strong:       every change of every flow, and every state change',
    '  weak:         flows new and closed, and state changes',
    '  incremental:  a digest every second (the role\'s figures), and state changes',
    'Any process may read the socket itself: write the level and a newline first.',
  ],
  options: [
    { key: 'socket', flag: '--socket', kind: 'string', arg: 'PATH', required: true, help: 'the role\'s --events PATH' },
    { key: 'level', flag: '--level', kind: 'choice', arg: 'LEVEL', choices: ['strong', 'weak', 'incremental'], help: 'which events; default weak' },
  ],
  defaults: { level: 'weak' },
};
