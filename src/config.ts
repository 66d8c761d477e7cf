// Options of `t2cp backup`: its table for the shared option parser
// (options.ts), which drives flag parsing, the config file, defaults,
// validation and --help, so they cannot drift apart. Every error names the
// option and says how to fix it.
import { configError } from './errors.js';
import { checkInstance, eventOptions, helpText, metricsOption, parseOptions, type CommandSpec, type Endpoint, type OptionSpec } from './options.js';
import { activeModeObject, type EngineOptions } from './addon.js';

export const ACTIVE_MODES = ['auto', 'kernel', 'queue'] as const;
export type ActiveMode = (typeof ACTIVE_MODES)[number];

/** What makes a flow diverged, per service port (the engine's DivergencePolicy, in order). */
export const DIVERGENCE_POLICIES = ['off', 'length', 'strict'] as const;
export type DivergencePolicy = (typeof DIVERGENCE_POLICIES)[number];

/**
 * `--divergence` text: a policy for every port, then PORT=POLICY exceptions
 * ("strict", "length,7000=strict", "80=length"). Returns one policy per port
 * of `ports`, in its order; `known` are the ports an exception may name (a
 * port both TCP and UDP takes its exception for both).
 */
export function parseDivergence(text: string, ports: number[], known: number[] = ports): DivergencePolicy[] {
  const fix = `--divergence: give POLICY or PORT=POLICY items, comma-separated, POLICY one of ${DIVERGENCE_POLICIES.join(', ')} (e.g. strict,80=length)`;
  const isPolicy = (v: string): v is DivergencePolicy => (DIVERGENCE_POLICIES as readonly string[]).includes(v);
  let all: DivergencePolicy = 'strict';
  const byPort = new Map<number, DivergencePolicy>();
  for (const item of text.split(',').map((t) => t.trim())) {
    const eq = item.indexOf('=');
    const policy = eq < 0 ? item : item.slice(eq + 1);
    if (!isPolicy(policy)) throw configError(`${fix}; '${item}' is not one`);
    if (eq < 0) { all = policy; continue; }
    const port = Number(item.slice(0, eq));
    if (!Number.isInteger(port) || !known.includes(port))
      throw configError(`--divergence: '${item}' names port ${item.slice(0, eq)}, which is not in --ports or --udp-ports (${known.join(',')})`);
    byPort.set(port, policy);
  }
  return ports.map((p) => byPort.get(p) ?? all);
}

/**
 * --relay-ports: replicated UDP ports (in --udp-ports), paired through the SDP of another UDP
 * port the backup compares (a SIP port whose --divergence is not off).
 */
function checkRelayPorts(c: { udpPorts: number[]; relayPorts: number[] }, udpPolicies: DivergencePolicy[]): void {
  if (!c.relayPorts.length) return;
  const udp = new Set(c.udpPorts);
  const outside = c.relayPorts.find((p) => !udp.has(p));
  if (outside !== undefined)
    throw configError(`--relay-ports: port ${outside} is not in --udp-ports: a relay's ports are replicated UDP ports; give the range in --udp-ports too`);
  const relay = new Set(c.relayPorts);
  if (!c.udpPorts.some((p, i) => !relay.has(p) && udpPolicies[i] !== 'off'))
    throw configError('--relay-ports: no other UDP port is compared: the relay\'s ports are paired through the SDP of the signalling port (e.g. --udp-ports 5060,30000-30099 with --divergence strict)');
}

export interface BackupConfig {
  mirrorIf: string;
  vip: string;
  ports: number[];
  /** UDP service ports (--udp-ports); none by default. */
  udpPorts: number[];
  /** Of udpPorts, a media relay's beside the service, named in SDP (--relay-ports); none by default. */
  relayPorts: number[];
  /** Where Prometheus metrics are served (--metrics); off when absent. */
  metrics?: Endpoint;
  /** The event stream's Unix socket (--events) and the state-change program (--notify); off when absent. */
  events?: string;
  notify?: string;
  instance: string;
  queue: number;
  maxFlows: number;
  flowBuffer: number;
  memory: number;
  captureBuffer: number;
  queueMaxLen: number;
  handshakeTimeoutMs: number;
  idleTimeoutS: number;
  statusIntervalS: number;
  flowStatsMs: number;
  rtPriority: number;
  busyPollUs: number;
  lagWarnBytes: number;
  maxLagMs: number;
  /** `--divergence` text (parseDivergence). */
  divergence: string;
  logFlows: boolean;
  json: boolean;
  /** Takeover control plane (issue 3): the shared key; without it the control endpoint stays off. */
  keyFile?: string;
  /** UDP port of the control endpoint (TAKEOVER from the detector or `t2cp takeover`), on all addresses. */
  controlPort: number;
  /** The failure detector (`t2cp gateway`), which receives BACKUP_HEARTBEAT. */
  detector?: Endpoint;
  /** BACKUP_HEARTBEAT interval, ms. */
  heartbeatMs: number;
  /** The real interface the VIP moves to at takeover (default: the default route's). */
  vipIf?: string;
  /** Takeover step 2's bound: time the replicas get to take what the mirror caught, ms. */
  finishTimeoutMs: number;
  garpCount: number;
  garpIntervalMs: number;
  /** Who translates the taken-over flows: the kernel (tc programs on --vip-if), the queue (user space), or the kernel when it can. */
  activeMode: ActiveMode;
  /** Takeover records are appended here as JSON lines. */
  report?: string;
  /** Where a takeover is kept across restarts (and its kernel translator pinned); absent: not kept. */
  stateDir?: string;
  /** Where a bpf filesystem is mounted: the kernel translator of a takeover is pinned under it. */
  bpffs: string;
}

const DEFAULTS: Omit<BackupConfig, 'mirrorIf' | 'vip' | 'keyFile' | 'detector' | 'vipIf' | 'report' | 'stateDir'> = {
  ports: [],
  udpPorts: [],
  relayPorts: [],
  instance: 'main',
  queue: 7300,
  maxFlows: 65536,
  flowBuffer: 256 << 20,
  memory: 1 << 30,
  captureBuffer: 128 << 20,
  queueMaxLen: 8192,
  handshakeTimeoutMs: 10000,
  idleTimeoutS: 7200,
  statusIntervalS: 0,
  flowStatsMs: 0,
  rtPriority: 0,
  busyPollUs: 50,
  lagWarnBytes: 32 << 20,
  maxLagMs: 3000,
  divergence: 'strict',
  logFlows: false,
  json: false,
  controlPort: 7391,
  heartbeatMs: 100,
  finishTimeoutMs: 2000,
  garpCount: 5,
  garpIntervalMs: 20,
  activeMode: 'auto',
  bpffs: '/sys/fs/bpf',
};

export const BACKUP_OPTIONS: OptionSpec<BackupConfig>[] = [
  { key: 'mirrorIf', flag: '--mirror-if', kind: 'string', arg: 'IF', required: true,
    help: "interface on the switch's mirror port: receives a copy of the primary's traffic" },
  { key: 'vip', flag: '--vip', kind: 'ipv4', arg: 'ADDR', required: true,
    help: 'service address the clients use (held by the primary)' },
  { key: 'ports', flag: '--ports', kind: 'ports', arg: 'LIST',
    help: 'TCP service ports to replicate, comma-separated (e.g. 7000,6379); this, --udp-ports or both' },
  { key: 'udpPorts', flag: '--udp-ports', kind: 'port-ranges', arg: 'LIST',
    help: 'UDP service ports to replicate, comma-separated, ranges allowed (e.g. 5060,10000-10100), at most 64 ports or ranges; a port may be in both lists' },
  { key: 'relayPorts', flag: '--relay-ports', kind: 'port-ranges', arg: 'LIST',
    help: 'of --udp-ports, those a media relay beside the service (rtpengine) binds per call and names in SDP; the backup pairs its copy\'s ports with the primary\'s and translates them (e.g. 30000-30099)' },
  { key: 'instance', flag: '--instance', kind: 'string', arg: 'NAME',
    help: `names this instance's nft tables (t2cp_NAME) and TUN device (t2cp-NAME); default ${DEFAULTS.instance}` },
  { key: 'queue', flag: '--queue', kind: 'int', arg: 'N', min: 0, max: 65535,
    help: `NFQUEUE number for the replica's output; default ${DEFAULTS.queue}` },
  { key: 'maxFlows', flag: '--max-flows', kind: 'int', arg: 'N', min: 1, max: 4_000_000,
    help: `flows tracked at once; beyond, new flows are refused (counted, reported unprotected); default ${DEFAULTS.maxFlows}` },
  { key: 'flowBuffer', flag: '--flow-buffer', kind: 'bytes', arg: 'BYTES', min: 65536, max: 2 ** 31,
    help: 'client bytes held per flow while the replica lags (k/m/g suffixes); default 256m' },
  { key: 'memory', flag: '--memory', kind: 'bytes', arg: 'BYTES', min: 1 << 20, max: 2 ** 40,
    help: 'client bytes held by all flows together; beyond, the lagging flow is lost (reported); default 1g' },
  { key: 'captureBuffer', flag: '--capture-buffer', kind: 'bytes', arg: 'BYTES', min: 1 << 20, max: 2 ** 31 - 1,
    help: 'kernel queue of the mirror port capture (frames waiting for t2cp, each charged its real size); default 128m' },
  { key: 'queueMaxLen', flag: '--queue-maxlen', kind: 'int', arg: 'N', min: 64, max: 1 << 20,
    help: `replica packets the kernel may hold for us; default ${DEFAULTS.queueMaxLen}` },
  { key: 'handshakeTimeoutMs', flag: '--handshake-timeout', kind: 'int', arg: 'MS', min: 100, max: 600000,
    help: 'time for both SYN-ACKs to appear before a flow is declared unprotected; default 10000' },
  { key: 'idleTimeoutS', flag: '--idle-timeout', kind: 'int', arg: 'S', min: 1, max: 30 * 86400,
    help: 'forget a flow silent this long; default 7200' },
  { key: 'statusIntervalS', flag: '--status-interval', kind: 'int', arg: 'S', min: 0, max: 86400,
    help: 'print counters every S seconds (0: only at exit); default 0' },
  { key: 'flowStatsMs', flag: '--flow-stats', kind: 'int', arg: 'MS', min: 0, max: 3600000,
    help: 'log every live flow\'s progress (primary vs replica bytes) every MS; default 0 (off)' },
  { key: 'rtPriority', flag: '--rt-priority', kind: 'int', arg: 'N', min: 0, max: 99,
    help: 'SCHED_FIFO priority of the packet thread while it is not busy: woken at once, it keeps request/reply replicas in step under bulk load, at some bulk throughput; 0 (default) keeps it ordinary' },
  { key: 'busyPollUs', flag: '--busy-poll', kind: 'int', arg: 'US', min: 0, max: 10000,
    help: 'after work, the packet thread spins this long before sleeping (fewer wake-ups under load); default 50' },
  { key: 'lagWarnBytes', flag: '--lag-warn', kind: 'bytes', arg: 'BYTES', min: 0, max: 2 ** 40,
    help: 'warn when a replica falls this far behind the primary, either direction (a takeover then makes its client wait while it catches up); 0 never; default 32m' },
  { key: 'maxLagMs', flag: '--max-lag', kind: 'int', arg: 'MS', min: 0, max: 3600000,
    help: `give up a flow whose replica has lacked, this long, client bytes the primary had acknowledged (reported unprotected, replica-behind; the one holding the most first, so the others keep up): it could not catch up within --finish-timeout at a takeover; 0 never; default ${DEFAULTS.maxLagMs}` },
  { key: 'divergence', flag: '--divergence', kind: 'string', arg: 'POLICY[,PORT=POLICY...]',
    help: `when a replica's output no longer matches the primary's, the flow is diverged: reported (with where, and both sides' bytes), given up, reset at a takeover. strict: any differing byte; length: only a different length (services whose answers differ harmlessly, e.g. an HTTP Date: header); off: not compared (the primary's output is not captured at all). A UDP port's datagrams are compared one by one (a diverged association is reported; UDP has nothing to reset). A policy for every port, then PORT=POLICY exceptions (a port both TCP and UDP: both); default ${DEFAULTS.divergence}` },
  metricsOption<BackupConfig>('backup'),
  ...eventOptions<BackupConfig>(),
  { key: 'logFlows', flag: '--log-flows', kind: 'bool',
    help: 'log every flow event (new, synchronised, closed); anomalies are always logged' },
  { key: 'json', flag: '--json', kind: 'bool', help: 'log as JSON lines instead of text' },
  { key: 'keyFile', flag: '--key-file', kind: 'string', arg: 'FILE',
    help: 'shared key of the takeover control plane (hex or raw bytes; the same file on gateway, primary and backup); without it the control endpoint is off' },
  { key: 'controlPort', flag: '--control-port', kind: 'int', arg: 'PORT', min: 1, max: 65535,
    help: `UDP port (all addresses) where TAKEOVER requests arrive from the detector and \`t2cp takeover\`; default ${DEFAULTS.controlPort}` },
  { key: 'detector', flag: '--detector', kind: 'endpoint', arg: 'ADDR:PORT', defaultPort: 7390,
    help: 'the failure detector (`t2cp gateway`) that gets this backup\'s heartbeats; needs --key-file' },
  { key: 'heartbeatMs', flag: '--heartbeat', kind: 'int', arg: 'MS', min: 1, max: 60000,
    help: `interval of this backup's heartbeats to the detector; default ${DEFAULTS.heartbeatMs}` },
  { key: 'vipIf', flag: '--vip-if', kind: 'string', arg: 'IF',
    help: 'real interface that receives the VIP at takeover; default: the interface of the default route' },
  { key: 'finishTimeoutMs', flag: '--finish-timeout', kind: 'int', arg: 'MS', min: 0, max: 60000,
    help: `takeover: how long after the freeze a flow whose replica is still behind may catch up before it is reset; default ${DEFAULTS.finishTimeoutMs}` },
  { key: 'garpCount', flag: '--garp-count', kind: 'int', arg: 'N', min: 1, max: 100,
    help: `gratuitous ARPs for the VIP at takeover; default ${DEFAULTS.garpCount}` },
  { key: 'garpIntervalMs', flag: '--garp-interval', kind: 'int', arg: 'MS', min: 1, max: 10000,
    help: `time between them; default ${DEFAULTS.garpIntervalMs}` },
  { key: 'activeMode', flag: '--active-mode', kind: 'choice', arg: 'MODE', choices: ACTIVE_MODES,
    help: 'after a takeover, who translates the taken-over connections: kernel (tc programs on --vip-if, Linux 6.6+), queue (NFQUEUE, in this process), auto (kernel when it loads at start, else queue); default auto' },
  { key: 'report', flag: '--report', kind: 'string', arg: 'FILE',
    help: 'append each takeover record (JSON line) to FILE' },
  { key: 'stateDir', flag: '--state-dir', kind: 'string', arg: 'DIR',
    help: 'keep a takeover in DIR/backup-INSTANCE.json and pin its kernel translator under --bpffs: killed or restarted with the same command after a takeover, this backup reclaims the taken-over connections instead of ending them; default: not kept' },
  { key: 'bpffs', flag: '--bpffs', kind: 'string', arg: 'DIR',
    help: `where a bpf filesystem is mounted (with --state-dir the translator is pinned at DIR/t2cp-INSTANCE); default ${DEFAULTS.bpffs}` },
];

export const BACKUP_COMMAND: CommandSpec<BackupConfig> = {
  name: 'backup',
  synopsis: 'usage: t2cp backup --mirror-if IF --vip ADDR (--ports LIST | --udp-ports LIST | both) [options]',
  about: [
    'Runs on the backup host next to an identical copy of the service. Every TCP',
    "connection a client opens to VIP:port on the primary is also opened, fed and",
    "read by the local copy, byte for byte; nothing the local copy sends on those",
    'connections leaves this host. Stops cleanly on SIGINT/SIGTERM, removing its',
    'nft tables, queue and TUN device (the kernel removes them even on a crash).',
    'SIGUSR1 logs the counters at once.',
    '',
    'With --key-file it also takes over when told (the detector, `t2cp takeover`,',
    "keepalived's notify_master): the VIP moves to --vip-if and every replicated",
    'connection carries on here, its numbers translated for the rest of its life;',
    'keep it running. Stopping it then removes the VIP it added.',
  ],
  options: BACKUP_OPTIONS,
  defaults: DEFAULTS,
  validate: (c) => {
    checkInstance(c.instance);
    if (!c.ports.length && !c.udpPorts.length)
      throw configError('missing --ports LIST or --udp-ports LIST: name the service ports to replicate, e.g. --ports 7000,6379 or --udp-ports 5060');
    const udpPolicies = parseDivergence(c.divergence, c.udpPorts, [...c.ports, ...c.udpPorts]);
    checkRelayPorts(c, udpPolicies);
    if (c.detector && !c.keyFile) throw configError('--detector needs --key-file FILE: the detector only accepts messages signed with the shared key');
  },
};

/** Parse `t2cp backup` arguments (after the subcommand), with an optional --config FILE (JSON, same names in camelCase). */
export function parseBackupArgs(argv: string[]): BackupConfig {
  return parseOptions(BACKUP_COMMAND, argv);
}

export function backupHelp(): string {
  return helpText(BACKUP_COMMAND);
}

/** `activeIf`: where the VIP goes at a takeover ('' when none can happen: no key). */
export function engineOptions(c: BackupConfig, activeIf = ''): EngineOptions {
  return {
    mirrorIf: c.mirrorIf,
    vip: c.vip,
    ports: c.ports,
    udpPorts: c.udpPorts,
    relayPorts: c.relayPorts,
    tunName: `t2cp-${c.instance}`,
    nftTable: `t2cp_${c.instance}`,
    queueNum: c.queue,
    queueMaxLen: c.queueMaxLen,
    captureBuffer: c.captureBuffer,
    maxFlows: c.maxFlows,
    flowBufferLimit: c.flowBuffer,
    memoryLimit: c.memory,
    handshakeTimeoutMs: c.handshakeTimeoutMs,
    idleTimeoutS: c.idleTimeoutS,
    eventBatchMs: 20,
    rtPriority: c.rtPriority,
    busyPollUs: c.busyPollUs,
    resupply: c.detector !== undefined,
    lagWarnBytes: c.lagWarnBytes,
    maxLagMs: c.maxLagMs,
    divergence: parseDivergence(c.divergence, c.ports, [...c.ports, ...c.udpPorts]).map((p) => DIVERGENCE_POLICIES.indexOf(p)),
    udpDivergence: parseDivergence(c.divergence, c.udpPorts, [...c.ports, ...c.udpPorts]).map((p) => DIVERGENCE_POLICIES.indexOf(p)),
    activeIf,
    activeMode: c.activeMode,
    activeObject: activeModeObject(),
  };
}
