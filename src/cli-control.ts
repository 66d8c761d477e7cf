// The control-plane subcommands of `t2cp` (cli.ts dispatches here):
// `gateway` (failure detector), `primary` (agent), `takeover` (planned switch),
// `stand-down` (the primary's keepalived hook), `status` (a role's state).
// Each parses its options, loads the key, builds its role and runs it until
// SIGINT/SIGTERM (the last three: one request, one answer); errors propagate
// to cli.ts, which prints one line and exits.
import { agentStateFile, type AgentState } from './agent/agent-state.js';
import { PrimaryAgent, type PrimaryAgentOptions } from './agent/primary-node.js';
import { createPrimaryFence } from './agent/primary-fence.js';
import { serviceStatus } from './agent/service-status.js';
import { bootNowUs, processStartBootUs } from './agent/vrrp-guard.js';
import {
  EVENTS_COMMAND, GATEWAY_COMMAND, heartbeatTiming, PRIMARY_COMMAND, STAND_DOWN_COMMAND, STATUS_COMMAND, TAKEOVER_COMMAND,
  type GatewayConfig, type PrimaryConfig, type StandDownConfig, type TakeoverConfig,
} from './config-takeover.js';
import { DEVICE_STATES, PRIMARY_STATES, type ChannelCounters, type NodeStatus } from './control/index.js';
import { loadKey } from './control/key.js';
import { requestStandDown } from './control/stand-down-request.js';
import { requestStatus } from './control/status-request.js';
import { requestTakeover } from './control/takeover-request.js';
import { detectorStateFile, type DetectorState } from './detector/detector-state.js';
import { createGatewayFence } from './detector/gateway-fence.js';
import { GatewayNode, type GatewayNodeOptions } from './detector/gateway-node.js';
import { configError, T2cpError } from './errors.js';
import { createLogger, type Logger } from './log.js';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import { addon, type NativeRecorder } from './addon.js';
import { stateGauges, type MetricsSnapshot } from './metrics.js';
import { openRoleOutputs, stateChanges } from './role-outputs.js';
import { SystemdNotifier } from './systemd.js';
import { endpointText, helpText, parseOptions, portRuns, type CommandSpec } from './options.js';

export function gatewayNodeOptions(c: GatewayConfig, key: Buffer): GatewayNodeOptions {
  return {
    instance: c.instance, key, listen: c.listen, primary: c.primary, backup: c.backup, mode: c.mode, timing: heartbeatTiming(c),
    backupTimeoutUs: c.backupTimeoutMs * 1000, takeoverTimeoutUs: c.takeoverTimeoutMs * 1000, standDownTimeoutUs: c.standDownTimeoutMs * 1000,
    ...(c.report ? { reportFile: c.report } : {}), ...(c.primaryMac ? { primaryMac: c.primaryMac } : {}),
  };
}

export function primaryAgentOptions(c: PrimaryConfig, key: Buffer): PrimaryAgentOptions {
  return { instance: c.instance, key, listen: c.listen, ...(c.detector ? { detector: c.detector } : {}), intervalMs: c.intervalMs, selfFenceAfterMs: c.selfFenceAfterMs };
}

function wantsHelp<C>(cmd: CommandSpec<C>, argv: string[]): boolean {
  if (!argv.includes('--help') && !argv.includes('-h')) return false;
  process.stdout.write(helpText(cmd) + '\n');
  return true;
}

function untilSignal(log: Logger, stop: () => Promise<void>, counters: () => Record<string, unknown>): void {
  let stopping = false;
  const onSignal = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('signal', { signal });
    stop().finally(() => process.exit(0));
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGUSR1', () => log.info('counters', counters()));
}

/**
 * A long-running heartbeat role's start: its options, its logger, the shared key (a warning about
 * the key file logged) and its scheduling priority (--nice; a refusal is logged, not fatal).
 */
function startRole<C extends { instance: string; json: boolean; keyFile: string; nice: number }>(cmd: CommandSpec<C>, argv: string[]): { cfg: C; log: Logger; key: Buffer } {
  const cfg = parseOptions(cmd, argv);
  const log = createLogger(cfg.instance, cfg.json);
  const { key, warning } = loadKey(cfg.keyFile);
  if (warning) log.warn(warning);
  try {
    os.setPriority(cfg.nice);
  } catch (e) {
    log.warn('cannot raise this process\'s priority: heartbeats may wait behind other work on a busy host', { nice: cfg.nice, error: (e as Error).message });
  }
  return { cfg, log, key };
}

/** The control channel's counts: accepted, and rejected by reason. */
function channelCounts(c: ChannelCounters | undefined): Record<string, number> {
  if (!c) return {};
  return { control_accepted: c.accepted, control_sent: c.sent, ...Object.fromEntries(Object.entries(c.rejected).map(([r, n]) => [`control_rejected_${r.replace(/-/g, '_')}`, n])) };
}

/** The detector's metrics: its counts and its recorder's, the device state, the backup's connections. */
function gatewayMetrics(node: GatewayNode, recorder: NativeRecorder | undefined): MetricsSnapshot {
  const rec = recorder?.counters() ?? {};
  const { held_bytes: held = 0, replay_started_us: _started, ...recorded } = rec;
  const view = node.view();
  const flowsHelp = "the backup's open connections as its last heartbeat counted them, by whether a failure now would carry them over";
  return {
    counters: { ...node.stats, ...channelCounts(node.channelCounters()), ...Object.fromEntries(Object.entries(recorded).map(([k, v]) => [`recorder_${k}`, v])) },
    gauges: [
      ...stateGauges('device_state', "the detector's device state (the papers' state machine)", DEVICE_STATES, node.states.state),
      { name: 'epoch', help: 'the takeover epoch', value: node.states.epoch },
      { name: 'protected', help: 'whether a failure now would be survived (1), not (0), or not known yet (-1)', value: view.protection.protected === null ? -1 : view.protection.protected ? 1 : 0 },
      { name: 'swapped', help: "the hosts' roles swapped by a re-protection (1) or as configured (0)", value: view.swapped ? 1 : 0 },
      ...(view.flows ? [
        { name: 'backup_open_connections', help: flowsHelp, value: view.flows.protected, labels: { protection: 'protected' } },
        { name: 'backup_open_connections', help: flowsHelp, value: view.flows.unprotected, labels: { protection: 'unprotected' } },
        { name: 'backup_replicas_lagging', help: "the backup's replicas behind the primary by more than its --lag-warn", value: view.flows.lagging ?? 0 },
      ] : []),
      { name: 'recorder_held_bytes', help: "what the traffic recorder holds now (its window's client segments and datagrams)", value: held },
    ],
  };
}

export async function runGateway(argv: string[]): Promise<void> {
  if (wantsHelp(GATEWAY_COMMAND, argv)) return;
  const { cfg, log, key } = startRole(GATEWAY_COMMAND, argv);
  let node: GatewayNode | undefined;
  let recorder: NativeRecorder | undefined;
  const outputs = await openRoleOutputs('gateway', cfg, log, {
    metrics: () => (node ? gatewayMetrics(node, recorder) : { counters: {}, gauges: [] }),
    digest: () => (node ? { state: node.states.state, epoch: node.states.epoch, ...node.view(), stats: node.stats } : {}),
  });
  const state = cfg.stateDir ? detectorStateFile(cfg.stateDir, cfg.instance) : undefined;
  const restored = state?.read();
  if (state) log.info('cluster state', { file: state.path, ...(restored ? { restored } : { restored: 'none yet' }) });
  recorder = startRecorder(cfg, log);
  const gateway = new GatewayNode({
    ...gatewayNodeOptions(cfg, key), ...(recorder ? { recorder } : {}),
    ...(restored ? { restored } : {}), ...(state ? { saveState: (s: DetectorState) => state.write(s) } : {}),
  }, createGatewayFence(cfg, log), log);
  gateway.states.subscribe((t) => outputs.stateChanged(t.subject, t.from, t.to, t.epoch, t.cause));
  try {
    await gateway.start();
  } catch (e) {
    recorder?.stop();
    await outputs.close();
    throw e;
  }
  node = gateway;
  outputs.announce();
  const systemd = new SystemdNotifier(log);
  systemd.ready(`detecting: ${gateway.states.state}`, () => true);
  untilSignal(log, async () => {
    systemd.stopping();
    await gateway.stop();
    recorder?.stop();
    await outputs.close();
  }, () => ({ ...gateway.stats, state: gateway.states.state, epoch: gateway.states.epoch, rejected: gateway.channelCounters()?.rejected, recorder: recorder?.counters() }));
}

/** The traffic recorder on the interface toward the servers, unless --record-window 0. */
function startRecorder(cfg: GatewayConfig, log: Logger): NativeRecorder | undefined {
  if (cfg.recordWindowMs === 0) return undefined;
  const lanIf = cfg.lanIf ?? routeInterface(cfg.backup.address);
  const rec = new (addon().Recorder)({ lanIf, vip: cfg.vip, ports: cfg.ports, udpPorts: cfg.udpPorts, windowMs: cfg.recordWindowMs, maxBytes: cfg.recordMaxBytes });
  rec.start();
  log.info('traffic recorder on', { lanIf, windowMs: cfg.recordWindowMs });
  return rec;
}

/** The interface this host reaches `addr` through (`ip route get`). */
function routeInterface(addr: string): string {
  const r = spawnSync('ip', ['-o', 'route', 'get', addr], { encoding: 'utf8', timeout: 5000 });
  const dev = / dev (\S+)/.exec(r.stdout ?? '')?.[1];
  if (!dev) throw new T2cpError(`cannot tell the interface toward ${addr} (ip route get: ${(r.stderr ?? '').trim() || 'no route'}): give --lan-if IF`, 'T2CP_CONFIG');
  return dev;
}

export async function runPrimary(argv: string[]): Promise<void> {
  if (wantsHelp(PRIMARY_COMMAND, argv)) return;
  const { cfg, log, key } = startRole(PRIMARY_COMMAND, argv);
  const watch = {
    ports: cfg.ports,
    // A range is media ports a relay binds per call: only the single ports must be bound.
    udpPorts: portRuns(cfg.udpPorts).filter(([a, b]) => a === b).map(([a]) => a),
    ...(cfg.vip ? { vip: cfg.vip } : {}),
    ...(cfg.servicePid ? { pid: cfg.servicePid } : {}),
    ...(cfg.servicePidfile ? { pidfile: cfg.servicePidfile } : {}),
  };
  const state = cfg.stateDir ? agentStateFile(cfg.stateDir, cfg.instance) : undefined;
  const restored = state?.read();
  if (state) log.info('primary state', { file: state.path, ...(restored ? { restored } : { restored: 'none yet' }) });
  const agent = new PrimaryAgent({
    ...primaryAgentOptions(cfg, key), ...(restored ? { restored } : {}), ...(state ? { saveState: (s: AgentState) => state.write(s) } : {}),
  }, createPrimaryFence(cfg, log), log, () => serviceStatus(watch));
  const outputs = await openRoleOutputs('primary', cfg, log, { metrics: () => {
    const service = serviceStatus(watch);
    return {
      counters: { ...agent.stats, ...channelCounts(agent.channelCounters()) },
      gauges: [
        ...stateGauges('primary_state', 'this primary: serving, self-fenced or stood-down', PRIMARY_STATES, agent.state),
        { name: 'epoch', help: 'the takeover epoch this primary knows', value: agent.epoch },
        { name: 'service_up', help: 'the service counts up: its process alive and its ports listening (bound)', value: service.alive && service.listening ? 1 : 0 },
      ],
    };
  }, digest: () => ({ state: agent.state, epoch: agent.epoch, service: serviceStatus(watch), stats: agent.stats }) });
  // The agent's state (serving, self-fenced, stood-down), looked at as often as it beats.
  const noteState = stateChanges(() => agent.state, (from, to) => outputs.stateChanged('primary', from, to, agent.epoch));
  const watchState = setInterval(noteState, Math.min(cfg.intervalMs, 100));
  try {
    await agent.start();
  } catch (e) {
    clearInterval(watchState);
    await outputs.close();
    throw e;
  }
  outputs.announce();
  const systemd = new SystemdNotifier(log);
  systemd.ready(`watching the service: ${agent.state}`, () => true);
  untilSignal(log, async () => {
    systemd.stopping();
    clearInterval(watchState);
    await agent.stop();
    await outputs.close();
  }, () => ({ ...agent.stats, fence: agent.fenced, epoch: agent.epoch, rejected: agent.channelCounters()?.rejected }));
}

/** `t2cp events`: a role's event stream (src/events.ts) to stdout, one JSON object a line. */
export async function runEvents(argv: string[]): Promise<void> {
  if (wantsHelp(EVENTS_COMMAND, argv)) return;
  const cfg = parseOptions(EVENTS_COMMAND, argv);
  const socket = net.connect(cfg.socket);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', (e) => reject(new T2cpError(`cannot follow ${cfg.socket}: ${e.message}: is the role running with --events ${cfg.socket}?`, 'T2CP_SYSTEM')));
  });
  socket.write(`${cfg.level}\n`);
  socket.pipe(process.stdout);
  // The last line the role sent: why it ended the stream ('closed', 'overrun', 'error').
  let last = '';
  let partial = '';
  socket.on('data', (d: Buffer) => {
    const lines = (partial + d.toString('utf8')).split('\n');
    partial = lines.pop()!;
    for (let i = lines.length - 1; i >= 0; i--) {
      if (lines[i]) {
        last = lines[i]!;
        break;
      }
    }
  });
  let stopped = false;
  const stop = () => {
    stopped = true;
    socket.destroy();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  await new Promise<void>((resolve) => socket.once('close', () => resolve()));
  if (stopped) return;
  // Ended by the other side: a follower (a script, a supervisor) must know, and follow again.
  let why = 'the role closed the stream without a word (it died?)';
  try {
    const l = JSON.parse(last) as { type?: string; error?: string };
    if (l.error) why = `${l.error} (${l.type})`;
  } catch { /* a partial line: the connection broke mid-line */ }
  throw new T2cpError(`${cfg.socket}: the event stream ended: ${why}; follow it again once the role is back`, 'T2CP_SYSTEM');
}

export async function runTakeover(argv: string[]): Promise<void> {
  if (wantsHelp(TAKEOVER_COMMAND, argv)) return;
  const cfg = parseOptions(TAKEOVER_COMMAND, argv);
  const { key, warning } = loadKey(cfg.keyFile);
  if (warning) process.stderr.write(`t2cp: warning: ${warning}\n`);
  await drainBeforeTakeover(cfg, key);
  const report = await requestTakeover({ control: cfg.control, key, reason: cfg.reason, timeoutMs: cfg.timeoutMs });
  process.stdout.write(JSON.stringify(report, null, cfg.json ? undefined : 2) + '\n');
  if (!report.ok) throw new T2cpError(`the backup did not take over (epoch ${report.epoch}): ${report.error ?? 'no reason given'}`, 'T2CP_REFUSED');
}

/**
 * Before a planned takeover: how many open connections the backup cannot continue (first seen
 * mid-stream, given up, diverged: their clients are reset), said on stderr; with --drain, waits
 * up to that long for them to close. A backup that does not answer the count is said so, and
 * the takeover asked all the same (it answers, or refuses, for itself).
 */
async function drainBeforeTakeover(cfg: TakeoverConfig, key: Buffer): Promise<void> {
  const say = (s: string): boolean => process.stderr.write(`t2cp: ${s}\n`);
  const unprotected = async (): Promise<number | undefined> => {
    try {
      const s = await requestStatus({ to: cfg.control, role: 'backup', key, timeoutMs: 2000 });
      return s.role === 'backup' ? s.flows.open?.unprotected : undefined;
    } catch {
      return undefined;
    }
  };
  let left = await unprotected();
  if (left === undefined) {
    say('the backup did not say how many open connections it cannot continue (not replicating?): asking it to take over all the same');
    return;
  }
  say(`this takeover ends ${left} open connection(s) the backup cannot continue: their clients are reset`);
  if (left === 0 || cfg.drainMs === 0) return;
  say(`waiting up to ${cfg.drainMs} ms for them to close (--drain)`);
  const deadline = Date.now() + cfg.drainMs;
  while (left !== undefined && left > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, Math.min(DRAIN_POLL_MS, Math.max(0, deadline - Date.now()))));
    left = await unprotected() ?? left;
  }
  say(left === 0 ? 'drained: none is left' : `${left} still open after ${cfg.drainMs} ms: taking over, they are reset`);
}

/** How often --drain asks the backup again (it counts its connections once a second). */
const DRAIN_POLL_MS = 250;

/** `t2cp stand-down`: one STAND_DOWN to the agent on this host, one line (or the ack as JSON) on stdout. */
export async function runStandDown(argv: string[]): Promise<void> {
  if (wantsHelp(STAND_DOWN_COMMAND, argv)) return;
  const cfg = parseOptions(STAND_DOWN_COMMAND, argv);
  checkLocal(cfg);
  const { key, warning } = loadKey(cfg.keyFile);
  if (warning) process.stderr.write(`t2cp: warning: ${warning}\n`);
  // When keepalived started this hook: orders it against the other hooks (agent/vrrp-guard.ts).
  const hookStartUs = processStartBootUs() ?? bootNowUs();
  const ack = await requestStandDown({
    agent: cfg.agent, key, epoch: cfg.epoch, timeoutMs: cfg.timeoutMs,
    ...(cfg.vrrpState ? { vrrp: cfg.vrrpState } : {}), ...(hookStartUs !== undefined ? { hookStartUs } : {}),
  });
  const line = cfg.json ? JSON.stringify(ack)
    : `t2cp: ${ack.note ?? (ack.fenced ? 'stood down: this primary no longer answers for the VIP' : 'answered')} (fence ${ack.fenced ? 'engaged' : 'not engaged'}, epoch ${ack.epoch})`;
  process.stdout.write(line + '\n');
}

/** `t2cp status`: one STATUS to the backup, the agent or the detector, its answer as one line (or JSON) on stdout. */
export async function runStatus(argv: string[]): Promise<void> {
  if (wantsHelp(STATUS_COMMAND, argv)) return;
  const cfg = parseOptions(STATUS_COMMAND, argv);
  const { key, warning } = loadKey(cfg.keyFile);
  if (warning) process.stderr.write(`t2cp: warning: ${warning}\n`);
  const to = { backup: cfg.control, primary: cfg.agent, gateway: cfg.detector }[cfg.role];
  const s = await requestStatus({ to, role: cfg.role, key, timeoutMs: cfg.timeoutMs });
  process.stdout.write((cfg.json ? JSON.stringify(s) : `t2cp: ${s.role} ${s.state} (epoch ${s.epoch}${statusDetail(s)})` + comparisonText(s)) + '\n');
}

/** What follows a role's state on its status line. */
export function statusDetail(s: NodeStatus): string {
  if (s.role === 'primary') return `; service ${s.service.alive ? 'alive' : 'dead'}, ${s.service.listening ? 'listening' : 'not listening'}`;
  if (s.role === 'backup') {
    return `; flows synchronised ${s.flows.synchronised}, unprotected ${s.flows.unprotected}` +
      ` (shed ${s.flows.shed}, replica behind ${s.flows.replicaBehind}, replica stopped ${s.flows.replicaStopped}, diverged ${s.flows.diverged})`;
  }
  const p = s.protection;
  const t = s.lastTakeover;
  const hosts = s.hosts ? ` (primary ${s.hosts.primary}, backup ${s.hosts.backup}${s.swapped ? ', roles swapped by re-protection' : ''})` : '';
  return `; ${s.active} serves${s.serving ? ` from ${s.serving}` : ''}${hosts}; backup ${s.backup}; ${p.protected === null ? 'protection unknown' : p.protected ? 'protected' : 'UNPROTECTED'}: ${p.why}` +
    (s.flows ? `; connections protected ${s.flows.protected} (lagging ${s.flows.lagging ?? 0}), unprotected ${s.flows.unprotected}` : '') +
    (t ? `; last takeover: epoch ${t.epoch} ${t.adopted ? 'adopted after a restart' : `${t.outcome}${t.cause ? ` (${t.cause})` : ''}${t.verdictAt ? ` at ${t.verdictAt}` : ''}`}` +
      (t.flowsTakenOver !== undefined ? `, ${t.flowsTakenOver} taken over, ${t.flowsLost ?? 0} lost, ${t.clientsReset ?? 0} clients reset` : '') : '');
}

/** The backup's determinism report: per compared port, then its last divergences. */
function comparisonText(s: NodeStatus): string {
  if (s.role !== 'backup') return '';
  const lines = Object.entries(s.flows.comparison ?? {}).map(([port, c]) =>
    `\n  port ${port} (${c.policy}): ${c.identical} identical, ${c.diverged} diverged, ${c.gaveUp} no longer compared, ` +
    `${c.open} open and alike so far; ${c.bytesCompared + c.bytesOpen} bytes compared${c.bytesUnverified ? `, ${c.bytesUnverified} not comparable` : ''}`);
  const quote = (x: string | null): string => (x === null ? 'not held' : `"${x}"`);
  for (const d of s.flows.divergences ?? [])
    lines.push(`\n  diverged ${d.flow} at ${d.exact ? '' : 'the block from '}${d.offset} (${d.kind}): primary ${quote(d.primary)}, replica ${quote(d.replica)}`);
  return lines.join('');
}

/** The agent takes a stand-down only from 127.0.0.1: it must be on this host. */
function checkLocal(cfg: StandDownConfig): void {
  const a = cfg.agent.address;
  const own = Object.values(os.networkInterfaces()).flat().some((i) => i?.family === 'IPv4' && i.address === a);
  if (!a.startsWith('127.') && !own)
    throw configError(`--agent ${endpointText(cfg.agent)} is not on this host: run t2cp stand-down on the primary, where the agent takes it from 127.0.0.1`);
}
