// t2cp under Pacemaker on the testbed, as docs/deployment.md's Pacemaker section configures it: a
// two-node cluster (the primary's and the backup's namespaces, scripts/pacemaker.ts), the t2cp
// resource agent (scripts/ocf/t2cp) as a promotable clone that runs `t2cp primary` on the primary
// and `t2cp backup` on the backup, a ping clone to the gateway that bans the promoted role from
// a node cut off from it, and the VIP on the primary as an IPaddr2 resource that follows the
// promoted role there (never on the backup). The same service runs on both hosts (started here,
// not by the cluster).
//
// Call order: startPacemakerLab() (resolves once the primary is promoted and serving and the backup
// replicates) ... stop() (the cluster stops its resources, then itself; idempotent).
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { repoRoot, startService } from './processes.js';
import { corosyncConfig, ensurePacemaker, initialCib, startPacemakerNode, type ClusterNode, type ClusterStatus, type PacemakerNode } from './pacemaker.js';
import { distCli } from './t2cp-process.js';
import type { Testbed } from './testbed.js';
import { waitFor } from './wait.js';

/** The resource agent, as installed under /usr/lib/ocf/resource.d/t2cp/t2cp. */
export const T2CP_AGENT = path.join(repoRoot, 'scripts', 'ocf', 't2cp');

/** Node names in the cluster (docs/deployment.md's example uses node1/node2; these say which host is which). */
export const NODE_NAMES = { primary: 'primary', backup: 'backup' } as const;

export interface T2cpResourceParams {
  primaryNode: string;
  backupNode: string;
  /** The primary's interface for the VIP (ocf:heartbeat:IPaddr2's nic). */
  primaryVipIf: string;
  keyFile: string;
  vip: string;
  ports: number[];
  mirrorIf: string;
  vipIf: string;
  t2cp: string;
  instance: string;
  logDir: string;
  primaryOptions: string;
  backupOptions: string;
  /** Address the ping clone checks: the gateway toward the clients. */
  gateway: string;
  /** Monitor intervals, s (promoted, unpromoted). */
  monitorS: [number, number];
}

/** The resource agent's parameters (instance attributes) from the lab's. Pure. */
export function t2cpAgentParams(p: Pick<T2cpResourceParams, 'primaryNode' | 'keyFile' | 'vip' | 'ports' | 'mirrorIf' | 'vipIf' | 't2cp' | 'instance' | 'logDir' | 'primaryOptions' | 'backupOptions'>): Record<string, string> {
  return {
    primary_node: p.primaryNode, key_file: p.keyFile, vip: p.vip, ports: p.ports.join(','), mirror_if: p.mirrorIf, vip_if: p.vipIf,
    t2cp: p.t2cp, instance: p.instance, log_dir: p.logDir, primary_options: p.primaryOptions, backup_options: p.backupOptions,
  };
}

/** The `t2cp` command as installed (a wrapper running this checkout's CLI) and a fresh key, in `dir`. */
export function t2cpInstall(dir: string): { t2cp: string; keyFile: string } {
  const keyFile = path.join(dir, 'control.key');
  writeFileSync(keyFile, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
  const bin = path.join(dir, 'bin');
  mkdirSync(bin, { recursive: true });
  const t2cp = path.join(bin, 't2cp');
  writeFileSync(t2cp, `#!/bin/sh\nexec '${process.execPath}' '${distCli()}' "$@"\n`);
  chmodSync(t2cp, 0o755);
  return { t2cp, keyFile };
}

const attr = (v: string): string => v.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
const nvpairs = (prefix: string, pairs: Record<string, string>): string =>
  Object.entries(pairs).map(([k, v]) => `<nvpair id="${prefix}-${k}" name="${k}" value="${attr(v)}"/>`).join('');

/**
 * docs/deployment.md's Pacemaker configuration as CIB XML (what its pcs commands create): the t2cp
 * promotable clone `t2cp-clone`, the ping clone `gateway-ping-clone` and the rule that bans the
 * promoted role where the gateway does not answer, and the primary's VIP `primary-vip`. Pure.
 */
export function t2cpCibConfiguration(p: T2cpResourceParams): { resources: string; constraints: string } {
  const params = t2cpAgentParams(p);
  const op = (name: string, extra: string): string => `<op id="t2cp-${name}" ${extra}/>`;
  const resources: string[] = [
    '<clone id="t2cp-clone">',
    `<meta_attributes id="t2cp-clone-meta">${nvpairs('t2cp-clone-meta', { promotable: 'true', 'promoted-max': '1', 'clone-max': '2', 'clone-node-max': '1' })}</meta_attributes>`,
    '<primitive id="t2cp" class="ocf" provider="t2cp" type="t2cp">',
    `<instance_attributes id="t2cp-params">${nvpairs('t2cp-params', params)}</instance_attributes>`,
    '<operations>',
    op('monitor-promoted', `name="monitor" interval="${p.monitorS[0]}s" role="Promoted" timeout="20s"`),
    op('monitor-unpromoted', `name="monitor" interval="${p.monitorS[1]}s" role="Unpromoted" timeout="20s"`),
    ...['start', 'stop', 'promote', 'demote'].map((a) => op(a, `name="${a}" interval="0s" timeout="30s"`)),
    '</operations>',
    '</primitive>',
    '</clone>',
    '<clone id="gateway-ping-clone">',
    '<primitive id="gateway-ping" class="ocf" provider="pacemaker" type="ping">',
    `<instance_attributes id="gateway-ping-params">${nvpairs('gateway-ping-params', { host_list: p.gateway, attempts: '2', timeout: '1', dampen: '0s' })}</instance_attributes>`,
    '<operations><op id="gateway-ping-monitor" name="monitor" interval="1s" timeout="10s"/></operations>',
    '</primitive>',
    '</clone>',
  ];
  // The VIP on the primary is the cluster's: up with the promoted instance there, never on the
  // backup (t2cp adds it there itself at the takeover), down before a demote, so a stopped or
  // stood-down primary holds no VIP whatever happens to its agent.
  resources.push(
    '<primitive id="primary-vip" class="ocf" provider="heartbeat" type="IPaddr2">',
    // critical=false: the VIP follows the promoted role but never pulls it (its ban from the backup
    // must not make Pacemaker prefer the old primary for promotion).
    `<meta_attributes id="primary-vip-meta">${nvpairs('primary-vip-meta', { critical: 'false' })}</meta_attributes>`,
    `<instance_attributes id="primary-vip-params">${nvpairs('primary-vip-params', { ip: p.vip, cidr_netmask: '32', nic: p.primaryVipIf })}</instance_attributes>`,
    '<operations><op id="primary-vip-monitor" name="monitor" interval="5s" timeout="20s"/></operations>',
    '</primitive>',
  );
  const constraints = [
    '<rsc_location id="t2cp-promoted-needs-gateway" rsc="t2cp-clone">',
    '<rule id="t2cp-promoted-needs-gateway-rule" role="Promoted" score="-INFINITY" boolean-op="or">',
    '<expression id="t2cp-promoted-needs-gateway-undefined" attribute="pingd" operation="not_defined"/>',
    '<expression id="t2cp-promoted-needs-gateway-zero" attribute="pingd" operation="lte" value="0" type="number"/>',
    '</rule>',
    '</rsc_location>',
    `<rsc_location id="primary-vip-never-on-backup" rsc="primary-vip" node="${p.backupNode}" score="-INFINITY"/>`,
    '<rsc_colocation id="primary-vip-with-promoted" rsc="primary-vip" with-rsc="t2cp-clone" with-rsc-role="Promoted" score="INFINITY"/>',
    '<rsc_order id="primary-vip-after-promote" first="t2cp-clone" first-action="promote" then="primary-vip" then-action="start"/>',
  ].join('');
  return { resources: resources.join(''), constraints };
}

export interface PacemakerLabOptions {
  ports: number[];
  instance: string;
  /**
   * corosync token, ms: how long a silent node takes to be lost (plus consensus, 1.2 x token).
   * Default 1000: on this shared 2-CPU machine corosync was seen unscheduled for 530 ms under load
   * ("Corosync main process was not scheduled ... Consider token timeout increase"), and at 400 ms
   * that made the backup take over from a live primary.
   */
  tokenMs?: number;
}

export interface PacemakerLab {
  keyFile: string;
  nodes: { primary: PacemakerNode; backup: PacemakerNode };
  services: { primary: ChildProcess; backup: ChildProcess };
  logs: {
    /** The services' logs (scripts/service.ts). */
    primary: string; backup: string;
    /** What the resource agent's daemons wrote (JSON lines), and the backup's takeover records. */
    backupDaemon: string; primaryDaemon: string; backupReport: string;
  };
  /** The t2cp wrapper the resource agent runs (`t2cp` parameter). */
  t2cp: string;
  /** `t2cp status --role ROLE` on that host, parsed (`--json`); null when it does not answer. */
  roleStatus(role: 'primary' | 'backup'): Promise<Record<string, unknown> | null>;
  /** Both nodes' view of the cluster. */
  status(): Promise<{ primary: ClusterStatus; backup: ClusterStatus }>;
  /** Stops the cluster, the primary's node first (its instance is unpromoted or stopping), then the backup's; resolves with their exit codes. */
  stop(): Promise<{ primary: number | null; backup: number | null }>;
}

const READY_TIMEOUT_MS = 60_000;
const DEFAULT_TOKEN_MS = 1000;

export async function startPacemakerLab(tb: Testbed, dir: string, o: PacemakerLabOptions): Promise<PacemakerLab> {
  ensurePacemaker();
  const { t2cp, keyFile } = t2cpInstall(dir);
  const logs = {
    primary: path.join(dir, 'primary.jsonl'), backup: path.join(dir, 'backup.jsonl'),
    backupDaemon: path.join(dir, 't2cp-backup.log'), primaryDaemon: path.join(dir, 't2cp-primary.log'), backupReport: path.join(dir, 'backup-report.jsonl'),
  };
  // The testbed puts the VIP on the primary statically; here the cluster holds it (primary-vip).
  const unstatic = await tb.exec(tb.ns.primary, ['ip', 'addr', 'del', `${tb.addr.vip}/24`, 'dev', tb.ifaces.primaryLan]);
  if (unstatic.code !== 0) throw new Error(`removing the testbed's static VIP failed: ${unstatic.stderr.trim()}`);
  const primaryService = await startService(tb, tb.ns.primary, o.ports, logs.primary);
  const backupService = await startService(tb, tb.ns.backup, o.ports, logs.backup);

  const config = t2cpCibConfiguration({
    primaryNode: NODE_NAMES.primary, backupNode: NODE_NAMES.backup, primaryVipIf: tb.ifaces.primaryLan, keyFile, vip: tb.addr.vip, ports: o.ports, mirrorIf: tb.ifaces.mirror, vipIf: tb.ifaces.backupLan,
    t2cp, instance: o.instance, logDir: dir,
    primaryOptions: `--json --service-pid ${primaryService.child.pid}`,
    backupOptions: `--json --log-flows --report ${logs.backupReport}`,
    gateway: tb.addr.gatewayLan, monitorS: [3, 4],
  });
  const members: ClusterNode[] = [
    { name: NODE_NAMES.primary, ns: tb.ns.primary, addr: tb.addr.primary },
    { name: NODE_NAMES.backup, ns: tb.ns.backup, addr: tb.addr.backup },
  ];
  const files = {
    corosyncConf: corosyncConfig(`t2cp-${tb.prefix.replace(/[^a-z0-9]/g, '')}`, members, o.tokenMs ?? DEFAULT_TOKEN_MS),
    cib: initialCib(config),
    agents: { t2cp: { t2cp: T2CP_AGENT } },
  };
  const started: PacemakerNode[] = [];
  const stopAll = async (): Promise<{ primary: number | null; backup: number | null }> => {
    const codes: (number | null)[] = [];
    for (const n of started.splice(0)) codes.push(await n.stop());
    return { primary: codes[0] ?? null, backup: codes[1] ?? null };
  };
  try {
    for (const m of members) started.push(await startPacemakerNode(tb, m, dir, files));
  } catch (e) {
    await stopAll();
    throw e;
  }
  const [primary, backup] = started as [PacemakerNode, PacemakerNode];
  const status = async () => ({ primary: await primary.status(), backup: await backup.status() });
  const roleStatus = async (role: 'primary' | 'backup'): Promise<Record<string, unknown> | null> => {
    const r = await tb.exec(role === 'primary' ? tb.ns.primary : tb.ns.backup, [t2cp, 'status', '--key-file', keyFile, '--role', role, '--json', '--timeout', '1000']);
    return r.code === 0 ? JSON.parse(r.stdout) as Record<string, unknown> : null;
  };
  const lab: PacemakerLab = {
    keyFile, t2cp, logs, nodes: { primary, backup }, roleStatus, status, stop: stopAll,
    services: { primary: primaryService.child, backup: backupService.child },
  };
  try {
    await waitFor(async () => {
      const s = await primary.status();
      return s.roles.t2cp?.[NODE_NAMES.primary] === 'Promoted' && s.roles.t2cp?.[NODE_NAMES.backup] === 'Unpromoted'
        && s.roles['primary-vip']?.[NODE_NAMES.primary] === 'Started';
    }, { timeoutMs: READY_TIMEOUT_MS, intervalMs: 250, what: 'Pacemaker: t2cp promoted on the primary, unpromoted on the backup, the VIP on the primary' });
    await waitFor(async () => (await roleStatus('primary'))?.state === 'serving' && (await roleStatus('backup'))?.state === 'standby',
      { timeoutMs: 10_000, what: 'the primary serving and the backup standing by' });
  } catch (e) {
    await stopAll();
    throw e;
  }
  return lab;
}
