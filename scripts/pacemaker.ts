// A real Pacemaker + corosync cluster on the namespace testbed: one cluster node per testbed host
// (the primary's and the backup's namespaces), each with its own corosync and pacemakerd, so that
// Pacemaker is the source of truth of who serves, as it would be on two machines.
//
// Call order: ensurePacemaker() -> startPacemakerNode(tb, node, dir, files) for each node ->
// node.exec([...]) / node.status() ... -> node.stop() (each node; the testbed's teardown ends
// whatever is left in its namespaces, by PID).
//
// Two nodes on one machine need separate state. Each node runs one shell (nodeScript) started as
// `ip netns exec NS unshare --mount --uts sh node.sh DIR NAME`: its own network namespace (corosync's
// ring address; libqb's IPC uses abstract unix sockets, which are per network namespace), its own
// mount namespace and host name. In it the shell mounts fresh tmpfs over /run and /dev/shm (libqb's
// ring buffers live there) and binds the node's own directories over /var/lib/pacemaker,
// /var/log/pacemaker, /var/lib/corosync, /var/log/corosync and /etc/corosync, lays the run's OCF
// resource agents over /usr/lib/ocf/resource.d (overlay, read-only: the system's agents stay
// visible), then starts corosync and pacemakerd and waits. SIGTERM stops pacemakerd (which stops
// the cluster's resources on this node first), then corosync. Nothing is written outside the run's
// directory; the mounts go with the namespace when its last process ends. Commands that must see the
// node (crm_mon, cibadmin, crm_attribute) enter its namespaces with nsenter by the shell's PID.
//
// The initial CIB carries the whole configuration, so both nodes start with it: cluster options
// (no STONITH here: the testbed has no fence device), dc-deadtime 2 s (the default 20 s is how long a
// starting node waits for a DC), and the resources and constraints the caller gives.

import { execFile, execFileSync, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { collect, waitForExit } from './processes.js';
import type { ExecResult, Testbed } from './testbed.js';
import { GiveUp, waitFor } from './wait.js';

/** Debian packages: the cluster, its command-line tools, the OCF shell library and agents (ping), ping's binary. */
export const PACEMAKER_PACKAGES = ['pacemaker', 'corosync', 'pacemaker-cli-utils', 'resource-agents', 'iputils-ping'] as const;

const APT_TIMEOUT_MS = 300_000;
/** Debian's hook that maintainer scripts ask before starting a service (exit 101: forbidden). */
const POLICY_RC_D = '/usr/sbin/policy-rc.d';
const OCF_RA_DIR = '/usr/lib/ocf/resource.d';

function missingPackages(): string[] {
  return PACEMAKER_PACKAGES.filter((p) => {
    const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', p], { encoding: 'utf8', timeout: 10_000 });
    return !/install ok installed/.test(r.stdout ?? '');
  });
}

/** `Pacemaker 2.1.5`'s version, or null when pacemakerd is not installed. */
export function pacemakerVersion(): string | null {
  const r = spawnSync('pacemakerd', ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') return null;
  return /Pacemaker (\S+)/.exec(`${r.stdout ?? ''}${r.stderr ?? ''}`)?.[1] ?? 'unknown';
}

/**
 * Makes sure the packages are installed (apt-get, as scripts/setup.sh does, when one is missing and
 * we are root) and returns Pacemaker's version. Nothing here starts the system's own cluster.
 */
export function ensurePacemaker(): string {
  const missing = missingPackages();
  if (missing.length > 0) {
    const cmd = `apt-get install -y --no-install-recommends ${missing.join(' ')}`;
    if (process.getuid?.() !== 0) throw new Error(`Pacemaker is not installed: run as root: ${cmd}`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    const apt = (args: string[]): void => {
      execFileSync('apt-get', ['-o', 'DPkg::Lock::Timeout=120', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'], timeout: APT_TIMEOUT_MS });
    };
    const install = ['install', '-y', '-qq', '--no-install-recommends', ...missing];
    // As scripts/setup.sh: no service starts during this install (the system's own cluster stays down).
    const guard = fs.existsSync(POLICY_RC_D) ? undefined : POLICY_RC_D;
    if (guard) fs.writeFileSync(guard, '#!/bin/sh\n# t2cp test: no service starts during its apt-get install\nexit 101\n', { mode: 0o755 });
    try {
      apt(install);
    } catch {
      apt(['update', '-qq']); // a fresh machine's package lists may be missing or stale
      apt(install);
    } finally {
      if (guard) fs.rmSync(guard, { force: true });
    }
    if (missingPackages().length > 0) throw new Error(`still missing after: ${cmd}`);
  }
  const v = pacemakerVersion();
  if (!v) throw new Error('pacemakerd missing after installing pacemaker');
  return v;
}

export interface ClusterNode {
  /** Cluster node name (also the node's host name in its UTS namespace). */
  name: string;
  /** Testbed namespace the node runs in. */
  ns: string;
  /** corosync ring address: the node's address in that namespace. */
  addr: string;
}

const NAME = /^[a-z][a-z0-9-]{0,30}$/;

/**
 * corosync.conf of a two-node cluster: knet, no crypto (the testbed's links are private), `token`
 * ms before a silent node is lost (consensus is 1.2 x token by default), two_node quorum (each
 * node alone stays quorate once both were seen: wait_for_all). Pure.
 */
export function corosyncConfig(cluster: string, nodes: ClusterNode[], tokenMs: number): string {
  if (!NAME.test(cluster)) throw new Error(`corosync: bad cluster name ${JSON.stringify(cluster)}`);
  if (nodes.length !== 2) throw new Error('corosync: two_node needs exactly two nodes');
  if (!(Number.isInteger(tokenMs) && tokenMs >= 100 && tokenMs <= 10_000)) throw new Error(`corosync: token ${tokenMs} ms out of 100..10000`);
  for (const n of nodes) if (!NAME.test(n.name)) throw new Error(`corosync: bad node name ${JSON.stringify(n.name)}`);
  return [
    'totem {', '  version: 2', `  cluster_name: ${cluster}`, '  transport: knet', `  token: ${tokenMs}`,
    '  crypto_cipher: none', '  crypto_hash: none', '}',
    'nodelist {',
    ...nodes.flatMap((n, i) => ['  node {', `    ring0_addr: ${n.addr}`, `    name: ${n.name}`, `    nodeid: ${i + 1}`, '  }']),
    '}',
    'quorum {', '  provider: corosync_votequorum', '  two_node: 1', '}',
    'logging {', '  to_logfile: yes', '  logfile: /var/log/corosync/corosync.log', '  to_stderr: no', '  to_syslog: no', '  timestamp: on', '}',
    '',
  ].join('\n');
}

/** The initial cib.xml: the given resources and constraints (XML), STONITH off, a short dc-deadtime. Pure. */
export function initialCib(o: { resources: string; constraints: string; dcDeadtime?: string }): string {
  return [
    '<cib crm_feature_set="3.16.1" validate-with="pacemaker-3.9" epoch="1" num_updates="0" admin_epoch="0">',
    '  <configuration>',
    '    <crm_config>',
    '      <cluster_property_set id="cib-bootstrap-options">',
    '        <nvpair id="cib-bootstrap-options-stonith-enabled" name="stonith-enabled" value="false"/>',
    `        <nvpair id="cib-bootstrap-options-dc-deadtime" name="dc-deadtime" value="${o.dcDeadtime ?? '2s'}"/>`,
    '      </cluster_property_set>',
    '    </crm_config>',
    '    <nodes/>',
    `    <resources>${o.resources}</resources>`,
    `    <constraints>${o.constraints}</constraints>`,
    '  </configuration>',
    '  <status/>',
    '</cib>',
    '',
  ].join('\n');
}

/** The shell that owns one node's mounts and daemons ($1: the node's directory, $2: its name). Pure. */
export function nodeScript(): string {
  return `#!/bin/sh
# One Pacemaker node of the t2cp-ar testbed (scripts/pacemaker.ts). Runs in its own mount and UTS namespace.
set -eu
R=$1
hostname "$2"
mount --make-rprivate /
mount -t tmpfs -o mode=0755 t2cp-run /run
mount -t tmpfs -o mode=1777 t2cp-shm /dev/shm
for d in lib/pacemaker log/pacemaker lib/corosync log/corosync; do mount --bind "$R/var/$d" "/var/$d"; done
mount --bind "$R/etc/corosync" /etc/corosync
mount -t overlay t2cp-ocf -o "lowerdir=$R/ocf:${OCF_RA_DIR}" ${OCF_RA_DIR}
mkdir -p /run/crm /run/resource-agents
corosync -f >"$R/corosync.out" 2>&1 &
echo $! >"$R/corosync.pid"
stop() {
  [ -s "$R/pacemakerd.pid" ] && kill -TERM "$(cat "$R/pacemakerd.pid")" 2>/dev/null && wait "$(cat "$R/pacemakerd.pid")" || true
  kill -TERM "$(cat "$R/corosync.pid")" 2>/dev/null && wait "$(cat "$R/corosync.pid")" || true
  exit 0
}
trap stop TERM INT
i=0
until corosync-cfgtool -s >/dev/null 2>&1; do
  i=$((i + 1)); [ $i -lt 100 ] || { echo "corosync did not come up" >&2; exit 1; }
  sleep 0.1
done
pacemakerd >"$R/pacemakerd.out" 2>&1 &
echo $! >"$R/pacemakerd.pid"
echo "node up"
wait
`;
}

/** Lays the agents into `dir/ocf/PROVIDER/NAME` (mode 0755) and returns `dir/ocf`, the overlay's upper layer. */
function layAgents(dir: string, agents: Record<string, Record<string, string>>): string {
  const root = path.join(dir, 'ocf');
  for (const [provider, byName] of Object.entries(agents)) {
    fs.mkdirSync(path.join(root, provider), { recursive: true });
    for (const [name, src] of Object.entries(byName)) {
      fs.copyFileSync(src, path.join(root, provider, name));
      fs.chmodSync(path.join(root, provider, name), 0o755);
    }
  }
  return root;
}

/**
 * Runs argv in namespace `ns` with the given agents visible under /usr/lib/ocf/resource.d (a mount
 * namespace of its own, gone when argv exits): Pacemaker's tools outside a cluster
 * (crm_resource --validate / --force-*, --show-metadata) against the real testbed.
 */
export async function runWithAgents(tb: Testbed, ns: string, dir: string, agents: Record<string, Record<string, string>>, argv: string[]): Promise<ExecResult> {
  const lower = layAgents(fs.mkdtempSync(path.join(dir, 'agents-')), agents);
  return tb.exec(ns, ['unshare', '--mount', 'sh', '-c',
    `mount --make-rprivate / && mount -t overlay t2cp-ocf -o "lowerdir=$1:${OCF_RA_DIR}" ${OCF_RA_DIR} && shift && exec "$@"`,
    'with-agents', lower, ...argv], { timeoutMs: 60_000 });
}

export interface NodeFiles {
  corosyncConf: string;
  cib: string;
  /** Resource agents to add, by provider: { t2cp: { t2cp: '/path/to/scripts/ocf/t2cp' } }. */
  agents: Record<string, Record<string, string>>;
}

/** Per node and resource: its role as crm_mon reports it (Started, Promoted, Unpromoted, Stopped...). */
export interface ClusterStatus {
  dc: string | null;
  online: string[];
  /** resource id (the primitive's, e.g. `t2cp`) -> node -> role; failed instances carry `failed`. */
  roles: Record<string, Record<string, string>>;
}

/** crm_mon --output-as=xml, reduced to what the tests ask. Pure. */
export function parseCrmMon(xml: string): ClusterStatus {
  const dc = /<current_dc [^>]*present="true"[^>]*name="([^"]+)"/.exec(xml)?.[1] ?? null;
  const online = [...xml.matchAll(/<node name="([^"]+)"[^>]*online="true"/g)].map((m) => m[1]!);
  const roles: ClusterStatus['roles'] = {};
  for (const m of xml.matchAll(/<resource id="([^"]+)"[^>]*role="([^"]+)"[^>]*failed="(true|false)"[^>]*>\s*(?:<node name="([^"]+)")?/g)) {
    const [, id, role, failed, node] = m;
    if (!node) continue;
    (roles[id!] ??= {})[node] = failed === 'true' ? `${role} failed` : role!;
  }
  return { dc, online, roles };
}

export interface PacemakerNode {
  readonly node: ClusterNode;
  readonly dir: string;
  /** PID of the node's shell; its namespaces are the node's. */
  readonly pid: number;
  /** Runs argv inside the node (its network, mount and UTS namespaces). Never rejects on a non-zero exit. */
  exec(argv: string[], opts?: { timeoutMs?: number; env?: Record<string, string> }): Promise<ExecResult>;
  status(): Promise<ClusterStatus>;
  /** Pacemaker's log on this node. */
  log(): string;
  /** SIGTERM to the node's shell (pacemakerd stops the resources here, then corosync stops); resolves with its exit code. */
  stop(timeoutMs?: number): Promise<number | null>;
}

const START_TIMEOUT_MS = 20_000;

/** Lays out the node's directory (owned by hacluster where Pacemaker writes) and starts the node; resolves once its daemons run. */
export async function startPacemakerNode(tb: Testbed, node: ClusterNode, dir: string, files: NodeFiles): Promise<PacemakerNode> {
  const own = fs.mkdtempSync(path.join(dir, `pcmk-${node.name}-`));
  const sub = (p: string): string => {
    const d = path.join(own, p);
    fs.mkdirSync(d, { recursive: true });
    return d;
  };
  for (const p of ['var/lib/corosync', 'var/log/corosync', 'etc/corosync']) sub(p);
  const hacluster = ['hacluster', 'haclient'];
  const pcmkDirs = ['var/lib/pacemaker/cib', 'var/lib/pacemaker/pengine', 'var/lib/pacemaker/blackbox', 'var/lib/pacemaker/cores', 'var/log/pacemaker'].map(sub);
  fs.writeFileSync(path.join(own, 'etc/corosync/corosync.conf'), files.corosyncConf);
  fs.writeFileSync(path.join(own, 'var/lib/pacemaker/cib/cib.xml'), files.cib, { mode: 0o600 });
  execFileSync('chown', ['-R', hacluster.join(':'), path.join(own, 'var/lib/pacemaker'), path.join(own, 'var/log/pacemaker')]);
  for (const d of pcmkDirs) fs.chmodSync(d, 0o770);
  layAgents(own, files.agents);
  const script = path.join(own, 'node.sh');
  fs.writeFileSync(script, nodeScript(), { mode: 0o700 });

  const child: ChildProcess = tb.spawn(node.ns, ['unshare', '--mount', '--uts', 'sh', script, own, node.name]);
  const output = collect(child);
  const exited = (): boolean => child.exitCode !== null || child.signalCode !== null;
  const logFile = path.join(own, 'var/log/pacemaker/pacemaker.log');
  const self: PacemakerNode = {
    node, dir: own, pid: child.pid!,
    exec: (argv, opts = {}) => new Promise((resolve) => {
      execFile('nsenter', ['-t', String(child.pid), '-n', '-m', '-u', '--', ...argv],
        { timeout: opts.timeoutMs ?? 20_000, maxBuffer: 16 << 20, env: { ...process.env, ...opts.env } }, (err, stdout, stderr) => {
          const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
          resolve({ code, stdout, stderr: err && code === -1 ? `${stderr}${err.message}\n` : stderr });
        });
    }),
    async status() {
      const r = await self.exec(['crm_mon', '-1', '--output-as=xml']);
      if (r.code !== 0) throw new Error(`crm_mon on ${node.name} failed (${r.code}): ${r.stderr.trim()}`);
      return parseCrmMon(r.stdout);
    },
    log: () => { try { return fs.readFileSync(logFile, 'utf8'); } catch { return ''; } },
    async stop(timeoutMs = 60_000) {
      if (exited()) return child.exitCode;
      child.kill('SIGTERM');
      return waitForExit(child, timeoutMs);
    },
  };
  try {
    await waitFor(() => {
      if (exited()) throw new GiveUp(`Pacemaker node ${node.name} exited (${child.exitCode ?? child.signalCode}): ${output.stderr.trim()}`);
      return output.stdout.includes('node up');
    }, { timeoutMs: START_TIMEOUT_MS, what: `corosync and pacemakerd on ${node.name}` });
  } catch (e) {
    await self.stop(10_000).catch(() => undefined);
    throw e;
  }
  return self;
}
