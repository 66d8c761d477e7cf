// The whole takeover deployment on the testbed, as the README describes it:
// the same service on the primary and the backup, `t2cp backup` next to the
// backup's copy, `t2cp primary` (the agent) next to the primary's, and
// `t2cp gateway` (failure detector + traffic recorder) on the gateway, all
// sharing one key. Used by the takeover e2e tests, the demo and the bench.
//
// Call order: startTakeoverLab() (resolves once the detector sees the
// primary active and the backup standing by), then fail() once, then stop()
// (the roles, then both copies of the service).
import { chmodSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { startBackup, type BackupProcess } from './backup-process.js';
import { failPrimary, type FailureKind } from './failures.js';
import { startEcho, startService, stopChild } from './processes.js';
import { startT2cp, distCli, type T2cpProcess } from './t2cp-process.js';
import type { ExecResult, Testbed } from './testbed.js';
import { ensureKeepalived, startKeepalived, type Keepalived } from './keepalived.js';
import { GiveUp } from './wait.js';

export interface TakeoverLabOptions {
  /** TCP service ports (may be empty with udpPorts). */
  ports: number[];
  /** UDP service ports, given to every role (--udp-ports). */
  udpPorts?: number[];
  /**
   * A media relay's ports beside the service (rtpengine's range): replicated UDP ports for every
   * role, and the backup's --relay-ports.
   */
  relayPorts?: { min: number; max: number };
  /** Heartbeat interval of the agent and the detector, ms (the figure: 10). */
  intervalMs?: number;
  /**
   * Intervals of silence before the primary's host is taken for dead. Default 10: over the stalls
   * an agent shows on a loaded 2-CPU testbed (30.6 ms seen), so a test's takeover is the test's
   * failure; the demo and the bench measure at the 3.
   */
  hardMisses?: number;
  instance?: string;
  /** Extra options for `t2cp backup`. */
  backupArgs?: string[];
  /** Run `t2cp backup` through this command (e.g. nsenter into a mount namespace holding a bpffs). */
  backupWrap?: string[];
  /** Extra options for `t2cp gateway`. */
  gatewayArgs?: string[];
  /** Extra options for `t2cp primary` (the agent, with the detector). */
  agentArgs?: string[];
  /**
   * Pin each host's processes to CPUs: the primary's (its service and agent), the backup's (its
   * service and `t2cp backup`), the gateway's (`t2cp gateway`).
   */
  cpus?: { primary?: string; backup?: string; gateway?: string };
  /**
   * Who decides the takeover: 'detector' (default): `t2cp gateway` and the
   * agent; 'keepalived': VRRP between the two hosts, its notify hooks run
   * `t2cp takeover` on the backup and `t2cp stand-down` on the primary (the
   * agent runs without a detector); 'manual': nothing, the caller runs
   * `t2cp takeover`.
   */
  trigger?: 'detector' | 'keepalived' | 'manual';
  /** Also run the echo service (scripts/echo-service.ts) on both hosts on this port, replicated too. */
  echoPort?: number;
  /**
   * Starts the replicated service on one side, listening on `ports`, and
   * resolves once it serves; `log` is where the default keeps its record.
   * Default: scripts/service.ts. Both sides run before `t2cp backup` starts.
   */
  service?: ServiceStarter;
}

export type ServiceStarter = (ns: string, side: 'primary' | 'backup', log: string) => Promise<{ child: ChildProcess; log: string }>;

export interface TakeoverLab {
  keyFile: string;
  backup: BackupProcess;
  gateway?: T2cpProcess;
  agent?: T2cpProcess;
  keepalived?: { primary: Keepalived; backup: Keepalived };
  services: { primary: ChildProcess; backup: ChildProcess; echo?: { primary: ChildProcess; backup: ChildProcess } };
  logs: { primary: string; backup: string; gatewayReport: string; backupReport: string; rejoinedReport: string };
  /** `t2cp status --role backup` (and `args`) in the backup's namespace (or `ns`: the rejoined one's), as an operator asks it. */
  backupStatus(args?: string[], ns?: string): Promise<ExecResult>;
  /** `t2cp status --role gateway` (and `args`) in the gateway's namespace. */
  gatewayStatus(args?: string[]): Promise<ExecResult>;
  /**
   * Ends `t2cp gateway` by its PID with `signal` (SIGKILL: a crash, SIGTERM: a
   * restart) and starts it again with the same command; `gateway` is the new one.
   */
  restartGateway(signal: NodeJS.Signals): Promise<T2cpProcess>;
  /** The same for `t2cp backup` (ready once it reclaimed a takeover, or replicates); `backup` is the new one. */
  restartBackup(signal: NodeJS.Signals): Promise<BackupProcess>;
  /** The same for `t2cp primary` (the agent; with the detector only); `agent` is the new one. */
  restartAgent(signal: NodeJS.Signals): Promise<T2cpProcess>;
  /**
   * Re-protection after a takeover, as docs/lifecycle.md tells an operator (the old primary's host
   * repaired and reachable): the VIP taken off the old primary's host and its agent stopped;
   * `t2cp primary` started on the host that took over (the detector makes it the primary;
   * `agent` is it); the switch's mirror moved to the old primary's host, where `t2cp backup`
   * starts next to its copy of the service (`rejoined`). Resolves once the detector says the
   * service is protected again.
   */
  reprotect(): Promise<void>;
  /** The backup on the old primary's host, after reprotect(). */
  rejoined?: BackupProcess;
  /** What the detector logged if it began a takeover on its own (a false failover), else null. */
  takeoverBegun(): string | null;
  /** Breaks the primary (or asks for a planned switch); resolves with the wall-clock ms of the failure. Refuses after a takeover the detector began on its own. */
  fail(kind: Exclude<FailureKind, 'keepalived'>): Promise<number>;
  stop(): Promise<void>;
}

export async function startTakeoverLab(tb: Testbed, dir: string, o: TakeoverLabOptions): Promise<TakeoverLab> {
  const instance = o.instance ?? 'tko';
  const interval = String(o.intervalMs ?? 10);
  const keyFile = `${dir}/control.key`;
  writeFileSync(keyFile, randomBytes(32).toString('hex') + '\n');
  chmodSync(keyFile, 0o600);
  const logs = {
    primary: `${dir}/primary.jsonl`, backup: `${dir}/backup.jsonl`, gatewayReport: `${dir}/gateway-report.jsonl`,
    backupReport: `${dir}/backup-report.jsonl`, rejoinedReport: `${dir}/rejoined-report.jsonl`,
  };
  const replicated = o.echoPort ? [...o.ports, o.echoPort] : o.ports;
  // The service ports as every role takes them: --ports, --udp-ports, or both.
  const relay = o.relayPorts ? `${o.relayPorts.min}-${o.relayPorts.max}` : undefined;
  const udpList = [...(o.udpPorts ?? []).map(String), ...(relay ? [relay] : [])].join(',');
  const udpArgs = udpList ? ['--udp-ports', udpList] : [];
  const portArgs = [...(replicated.length ? ['--ports', replicated.join(',')] : []), ...udpArgs];
  const startSide: ServiceStarter = o.service
    ?? (async (ns, side, log) => ({ child: (await startService(tb, ns, o.ports, log, { cpus: o.cpus?.[side] })).child, log }));
  // The hosts start independently, as a deployment's do: both copies of the service at once, then
  // `t2cp backup` beside the detector and the agent.
  const [primary, replica] = await Promise.all([startSide(tb.ns.primary, 'primary', logs.primary), startSide(tb.ns.backup, 'backup', logs.backup)]);
  logs.primary = primary.log;
  logs.backup = replica.log;
  const echo = o.echoPort
    ? { primary: await startEcho(tb, tb.ns.primary, o.echoPort, o.cpus?.primary), backup: await startEcho(tb, tb.ns.backup, o.echoPort, o.cpus?.backup) }
    : undefined;
  const trigger = o.trigger ?? 'detector';
  const withDetector = trigger === 'detector';
  const backupExtra = (report: string): string[] => [...udpArgs, ...(relay ? ['--relay-ports', relay] : []),
    '--key-file', keyFile, '--vip-if', tb.ifaces.backupLan, '--report', report, '--heartbeat', '20',
    ...(withDetector ? ['--detector', tb.addr.gatewayLan] : []), ...(o.backupArgs ?? [])];
  const backupOptions = { ports: replicated, instance, cpus: o.cpus?.backup, wrap: o.backupWrap, extra: backupExtra(logs.backupReport) };
  const backupStarting = startBackup(tb, backupOptions);
  backupStarting.catch(() => {}); // awaited below, once the detector and the agent run
  let gateway: T2cpProcess | undefined;
  let agent: T2cpProcess | undefined;
  let keepalived: TakeoverLab['keepalived'];
  if (trigger === 'keepalived') {
    agent = await startT2cp(tb, tb.ns.primary, ['primary', '--key-file', keyFile, '--instance', instance,
      ...portArgs, '--vip', tb.addr.vip, '--service-pid', String(primary.child.pid)],
    (r) => String(r.msg).startsWith('primary agent started'));
    await backupStarting; // keepalived's notify_master runs `t2cp takeover` on it
    keepalived = await startVrrpPair(tb, dir, keyFile, o.intervalMs ?? 10);
  }
  const gatewayArgs = ['gateway', '--key-file', keyFile, '--instance', instance,
    '--primary', tb.addr.primary, '--backup', tb.addr.backup, '--vip', tb.addr.vip, ...portArgs,
    '--interval', interval, '--hard-misses', String(o.hardMisses ?? 10), '--report', logs.gatewayReport, ...(o.gatewayArgs ?? [])];
  const startAgent = (side: 'primary' | 'backup' = 'primary'): Promise<T2cpProcess> => startT2cp(tb, tb.ns[side], ['primary', '--key-file', keyFile,
    '--instance', instance, '--detector', tb.addr.gatewayLan, ...portArgs, '--vip', tb.addr.vip,
    '--service-pid', String((side === 'primary' ? primary : replica).child.pid), '--interval', interval, ...(o.agentArgs ?? [])],
  (r) => r.msg === 'primary agent started', { cpus: o.cpus?.[side] });
  const startGateway = (): Promise<T2cpProcess> =>
    startT2cp(tb, tb.ns.gateway, gatewayArgs, (r) => r.msg === 'failure detector listening', { cpus: o.cpus?.gateway });
  if (withDetector) {
    gateway = await startGateway();
    agent = await startAgent();
    await gateway.waitForRecord((r) => r.msg === 'device state' && r.to === 'PRIMARY_ACTIVE', 'primary active');
    await gateway.waitForRecord((r) => r.msg === 'backup state' && r.to === 'standby', 'backup standing by');
  }
  const backup = await backupStarting;
  const lab: TakeoverLab = {
    keyFile, backup, gateway, agent, keepalived, logs,
    services: { primary: primary.child, backup: replica.child, ...(echo ? { echo } : {}) },
    backupStatus: (args = [], ns = tb.ns.backup) => tb.exec(ns, ['node', distCli(), 'status', '--role', 'backup', '--key-file', keyFile, ...args]),
    gatewayStatus: (args = []) => tb.exec(tb.ns.gateway, ['node', distCli(), 'status', '--role', 'gateway', '--key-file', keyFile, ...args]),
    takeoverBegun() {
      const r = lab.gateway?.records.find((x) => x.msg === 'takeover begins');
      return r ? `the detector began a takeover before the test's failure: ${JSON.stringify(r)}` : null;
    },
    async fail(kind) {
      const early = lab.takeoverBegun();
      if (early) throw new GiveUp(early);
      if (kind !== 'planned') return failPrimary(tb, kind);
      const t = Date.now();
      const r = await tb.exec(tb.ns.backup, ['node', distCli(), 'takeover', '--key-file', keyFile, '--reason', 'planned by the test'], { timeoutMs: 20_000 });
      if (r.code !== 0) throw new Error(`t2cp takeover failed (${r.code}): ${r.stderr.trim()}`);
      return t;
    },
    async restartGateway(signal) {
      if (!lab.gateway) throw new Error('restartGateway: this lab runs no detector');
      await endBy(lab.gateway, signal);
      lab.gateway = await startGateway();
      return lab.gateway;
    },
    async restartBackup(signal) {
      await endBy(lab.backup, signal);
      lab.backup = await startBackup(tb, { ...backupOptions, ready: (r) => String(r.msg).startsWith('reclaimed the takeover') || r.msg === 'replicating' });
      return lab.backup;
    },
    async reprotect() {
      if (!lab.gateway || !lab.agent) throw new Error('reprotect: this lab runs no detector');
      const gw = lab.gateway;
      const from = gw.records.length;
      // The old primary's host must not answer for the VIP once its agent's fence is gone.
      const del = await tb.exec(tb.ns.primary, ['ip', 'addr', 'del', `${tb.addr.vip}/24`, 'dev', tb.ifaces.primaryLan]);
      if (del.code !== 0) throw new Error(`ip addr del ${tb.addr.vip}: ${del.stderr.trim()}`);
      await lab.agent.stop();
      lab.agent = await startAgent('backup');
      await gw.waitForRecord((r) => String(r.msg).startsWith('re-protection'), 'the roles swapped', 10_000, from);
      await tb.moveMirror();
      lab.rejoined = await startBackup(tb, {
        ports: replicated, instance, cpus: o.cpus?.primary, wrap: o.backupWrap, ns: tb.ns.primary, extra: backupExtra(logs.rejoinedReport),
      });
      await gw.waitForRecord((r) => r.msg === 'service protected', 'protected again', 10_000, from);
    },
    async restartAgent(signal) {
      if (!lab.agent || !withDetector) throw new Error('restartAgent: this lab runs no agent with a detector');
      await endBy(lab.agent, signal);
      lab.agent = await startAgent();
      return lab.agent;
    },
    async stop() {
      await keepalived?.backup.stop();
      await keepalived?.primary.stop();
      await lab.agent?.stop();
      await lab.gateway?.stop();
      await lab.rejoined?.stop();
      await lab.backup.stop();
      // The services the lab started end with it: left running on a testbed that outlives the lab,
      // a UDP one (Kamailio binds with SO_REUSEADDR) shares its port with the next one started there.
      const { primary: p, backup: b, echo: e } = lab.services;
      for (const child of [p, b, ...(e ? [e.primary, e.backup] : [])]) {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGCONT'); // a paused one ends too
        await stopChild(child, 3_000);
      }
    },
  };
  return lab;
}

/**
 * keepalived as the source of truth (VRRPv3, unicast, nopreempt, the given
 * advert interval): the primary (priority 150) becomes master first; its
 * hooks report every state to the agent (`t2cp stand-down --vrrp-state`),
 * which stands down on FAULT, STOP, or BACKUP after MASTER; the backup's
 * notify_master runs `t2cp takeover`.
 */
async function startVrrpPair(tb: Testbed, dir: string, keyFile: string, advertIntMs: number): Promise<{ primary: Keepalived; backup: Keepalived }> {
  ensureKeepalived();
  const t2cp = (...args: string[]): string[] => [process.execPath, distCli(), ...args, '--key-file', keyFile];
  const standDown = (state: string): string[] => t2cp('stand-down', '--vrrp-state', state);
  const common = { iface: tb.ifaces.primaryLan, vrid: 61, advertIntMs, preempt: false };
  const primary = await startKeepalived(tb, tb.ns.primary, dir, {
    ...common, role: 'primary', priority: 150, peerAddr: tb.addr.backup, srcAddr: tb.addr.primary,
    notifyMaster: standDown('MASTER'), notifyBackup: standDown('BACKUP'), notifyFault: standDown('FAULT'),
  });
  await primary.waitForState('MASTER', { timeoutMs: 15_000 });
  const backup = await startKeepalived(tb, tb.ns.backup, dir, {
    ...common, role: 'backup', priority: 100, peerAddr: tb.addr.primary, srcAddr: tb.addr.backup,
    notifyMaster: t2cp('takeover', '--reason', 'keepalived: MASTER'),
  });
  await backup.waitForState('BACKUP', { timeoutMs: 15_000 });
  return { primary, backup };
}

/** Ends a t2cp process by its PID with `signal` and waits for its exit. */
async function endBy(p: { child: ChildProcess }, signal: NodeJS.Signals): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  const exited = new Promise((r) => p.child.once('exit', r));
  p.child.kill(signal);
  await exited;
}
