// The e2e testbed: five network namespaces wired as the paper's deployment.
//
//   client ns  c0 ──── gc  gateway ns  gs ──── sg ┐
//   198.18.0.2/24   198.18.0.1   198.18.1.1       │ switch ns: bridge br0
//                                                 ├ sp ──── e0  primary ns  198.18.1.2 + VIP 198.18.1.10
//                                                 ├ sb ──── e0  backup ns   198.18.1.3
//                   sm (mirror of sp, not bridged) ──── m0  backup ns   (no address)
//
// moveMirror() re-points the switch's mirror for a re-protection: the backup's port sb is mirrored
// to a new port sn, linked to an m0 in the primary's namespace (the former primary stands by).
//
// Every name carries a per-run prefix, interfaces live only inside the namespaces (so their short
// names never collide between runs), and teardown removes everything, also on exit or a signal.
// Call order: createTestbed() -> exec()/spawn()/mac() ... -> teardown() (idempotent).

import { execFile, execFileSync, spawn as spawnChild, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';

export interface TestbedOptions {
  /** Prefix of every namespace name (default `t2` + 4 random hex chars + `-`). */
  prefix?: string;
  /** Number of client addresses, 198.18.0.2 upwards (default 1). */
  clientAddrs?: number;
  /** true (default): kernel offloads plus GRO on every veth; false: all offloads off. */
  offloads?: boolean;
  /** Time a tracked child gets between SIGTERM and SIGKILL at teardown (default 2000 ms). */
  killGraceMs?: number;
}

export interface ExecResult { code: number; stdout: string; stderr: string }

export interface Testbed {
  prefix: string;
  ns: { client: string; gateway: string; sw: string; primary: string; backup: string };
  addr: { clients: string[]; gateway: string; gatewayLan: string; primary: string; backup: string; vip: string };
  ifaces: { mirror: 'm0'; backupLan: 'e0'; primaryLan: 'e0' };
  /** Runs `ip netns exec ns ...argv`; never rejects on a non-zero exit (code -1 on timeout). */
  exec(ns: string, argv: string[], opts?: { timeoutMs?: number }): Promise<ExecResult>;
  /** Starts `ip netns exec ns ...argv` (which execs, so the child's PID is the program's). */
  spawn(ns: string, argv: string[], opts?: SpawnOptions): ChildProcess;
  mac(ns: string, ifname: string): Promise<string>;
  /**
   * The switch's mirror moved (a SPAN session re-pointed): the backup's port is mirrored to a new
   * mirror port whose other end is `m0` in the primary's namespace, and the primary's port is no
   * longer mirrored. For a re-protection, when the host that took over serves.
   */
  moveMirror(): Promise<void>;
  teardown(): Promise<void>;
  teardownSync(): void;
}

const EXEC_TIMEOUT_MS = 10_000; // one ip/tc/sysctl call; they take milliseconds
type Role = keyof Testbed['ns'];
const VETH_ENDS: [Role, string][] = [
  ['client', 'c0'], ['gateway', 'gc'], ['gateway', 'gs'], ['sw', 'sg'], ['sw', 'sp'], ['sw', 'sb'], ['sw', 'sm'],
  ['primary', 'e0'], ['backup', 'e0'], ['backup', 'm0'],
];

/** Runs `argv` on this host; never rejects on a non-zero exit (code -1 on timeout). */
export function run(argv: string[], timeoutMs = EXEC_TIMEOUT_MS): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(argv[0], argv.slice(1), { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr: err && code === -1 ? `${stderr}${err.message}\n` : stderr });
    });
  });
}

async function must(argv: string[]): Promise<string> {
  const r = await run(argv);
  if (r.code !== 0) throw new Error(`testbed: \`${argv.join(' ')}\` failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

function alive(pid: number): boolean {
  try {
    // A child that exited but was not reaped (no event loop in an exit handler) is a zombie.
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

// Testbeds not yet torn down, cleaned synchronously on exit and on SIGINT/SIGTERM.
const live = new Set<TestbedImpl>();
const onExit = (): void => { for (const tb of [...live]) tb.teardownSync(); };
const onSignal = (sig: NodeJS.Signals): void => {
  onExit();
  // Re-raise so the process still dies of the signal, unless someone else handles it.
  if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
};
function track(tb: TestbedImpl, on: boolean): void {
  if (on) live.add(tb);
  else live.delete(tb);
  const installed = process.listeners('exit').includes(onExit);
  if (live.size > 0 && !installed) {
    process.on('exit', onExit);
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  } else if (live.size === 0 && installed) {
    process.off('exit', onExit);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

class TestbedImpl implements Testbed {
  readonly ns: Testbed['ns'];
  readonly addr: Testbed['addr'];
  readonly ifaces = { mirror: 'm0', backupLan: 'e0', primaryLan: 'e0' } as const;
  /** Namespaces actually created, in creation order: only these are deleted. */
  private readonly made: string[] = [];
  private readonly children = new Set<ChildProcess>();
  private done = false;
  private offloads = true;

  constructor(readonly prefix: string, clientAddrs: number, private readonly graceMs: number) {
    const p = prefix;
    this.ns = { client: `${p}cli`, gateway: `${p}gw`, sw: `${p}sw`, primary: `${p}pri`, backup: `${p}bak` };
    this.addr = {
      clients: Array.from({ length: clientAddrs }, (_, i) => `198.18.0.${2 + i}`),
      gateway: '198.18.0.1', gatewayLan: '198.18.1.1',
      primary: '198.18.1.2', backup: '198.18.1.3', vip: '198.18.1.10',
    };
  }

  async build(offloads: boolean): Promise<void> {
    const { client, gateway, sw, primary, backup } = this.ns;
    this.offloads = offloads;
    track(this, true);
    for (const ns of Object.values(this.ns)) {
      await must(['ip', 'netns', 'add', ns]);
      this.made.push(ns);
      // IPv6 off before any link exists, so no DAD or router solicitation ever appears.
      await must(['ip', 'netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
      await must(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
    }
    const pair = (nsA: string, a: string, nsB: string, b: string): Promise<string> =>
      must(['ip', '-n', nsA, 'link', 'add', a, 'type', 'veth', 'peer', 'name', b, 'netns', nsB]);
    await pair(client, 'c0', gateway, 'gc');
    await pair(gateway, 'gs', sw, 'sg');
    await pair(primary, 'e0', sw, 'sp');
    await pair(backup, 'e0', sw, 'sb');
    await pair(backup, 'm0', sw, 'sm');

    await must(['ip', '-n', sw, 'link', 'add', 'br0', 'type', 'bridge', 'stp_state', '0']);
    for (const port of ['sg', 'sp', 'sb']) await must(['ip', '-n', sw, 'link', 'set', port, 'master', 'br0']);
    // Bridged frames must not visit iptables when br_netfilter is loaded on the host (best effort).
    await run(['ip', 'netns', 'exec', sw, 'sysctl', '-qw', 'net.bridge.bridge-nf-call-iptables=0', 'net.bridge.bridge-nf-call-arptables=0']);
    // Port mirroring: every frame entering or leaving the primary's port is copied out of sm.
    await this.mirror('sp', 'sm');

    await must(['ip', 'netns', 'exec', gateway, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    // The backup will hold the VIP locally while replicating: it must never answer ARP for it.
    await must(['ip', 'netns', 'exec', backup, 'sysctl', '-qw', 'net.ipv4.conf.all.arp_ignore=1', 'net.ipv4.conf.all.arp_announce=2']);

    for (const [role, dev] of VETH_ENDS) await this.linkUp(this.ns[role], dev);
    await must(['ip', '-n', sw, 'link', 'set', 'br0', 'up']);
    // A real mirror port's NIC must accept frames for other MACs; a veth does anyway.
    await must(['ip', '-n', backup, 'link', 'set', 'm0', 'promisc', 'on']);

    for (const a of this.addr.clients) await must(['ip', '-n', client, 'addr', 'add', `${a}/24`, 'dev', 'c0']);
    await must(['ip', '-n', client, 'route', 'add', 'default', 'via', this.addr.gateway]);
    await must(['ip', '-n', gateway, 'addr', 'add', `${this.addr.gateway}/24`, 'dev', 'gc']);
    await must(['ip', '-n', gateway, 'addr', 'add', `${this.addr.gatewayLan}/24`, 'dev', 'gs']);
    await must(['ip', '-n', primary, 'addr', 'add', `${this.addr.primary}/24`, 'dev', 'e0']);
    await must(['ip', '-n', primary, 'addr', 'add', `${this.addr.vip}/24`, 'dev', 'e0']); // secondary
    await must(['ip', '-n', primary, 'route', 'add', 'default', 'via', this.addr.gatewayLan]);
    await must(['ip', '-n', backup, 'addr', 'add', `${this.addr.backup}/24`, 'dev', 'e0']);
    await must(['ip', '-n', backup, 'route', 'add', 'default', 'via', this.addr.gatewayLan]);
  }

  /** GRO on a veth turns on its NAPI path, so received frames are merged into super-frames. */
  private async linkUp(ns: string, dev: string): Promise<void> {
    const features = this.offloads ? ['gro', 'on'] : ['tso', 'off', 'gso', 'off', 'gro', 'off', 'tx', 'off', 'rx', 'off'];
    await must(['ip', 'netns', 'exec', ns, 'ethtool', '-K', dev, ...features]);
    await must(['ip', '-n', ns, 'link', 'set', dev, 'up']);
  }

  /** Every frame entering or leaving switch port `port` copied out of `to` (tc mirred, as a SPAN session). */
  private async mirror(port: string, to: string): Promise<void> {
    await must(['tc', '-n', this.ns.sw, 'qdisc', 'add', 'dev', port, 'clsact']);
    for (const dir of ['ingress', 'egress']) {
      await must(['tc', '-n', this.ns.sw, 'filter', 'add', 'dev', port, dir, 'protocol', 'all',
        'u32', 'match', 'u32', '0', '0', 'action', 'mirred', 'egress', 'mirror', 'dev', to]);
    }
  }

  async moveMirror(): Promise<void> {
    const { sw, primary } = this.ns;
    await must(['ip', '-n', primary, 'link', 'add', 'm0', 'type', 'veth', 'peer', 'name', 'sn', 'netns', sw]);
    await this.linkUp(primary, 'm0');
    await this.linkUp(sw, 'sn');
    await must(['ip', '-n', primary, 'link', 'set', 'm0', 'promisc', 'on']);
    await must(['tc', '-n', sw, 'qdisc', 'del', 'dev', 'sp', 'clsact']);
    await this.mirror('sb', 'sn');
  }

  exec(ns: string, argv: string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    return run(['ip', 'netns', 'exec', ns, ...argv], opts.timeoutMs ?? EXEC_TIMEOUT_MS);
  }

  spawn(ns: string, argv: string[], opts: SpawnOptions = {}): ChildProcess {
    if (this.done) throw new Error('testbed: spawn after teardown');
    const child = spawnChild('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    child.once('error', () => this.children.delete(child));
    return child;
  }

  async mac(ns: string, ifname: string): Promise<string> {
    const [link] = JSON.parse(await must(['ip', '-n', ns, '-j', 'link', 'show', 'dev', ifname])) as { address: string }[];
    return link.address;
  }

  /** PIDs to stop: the tracked children, then anything else still inside our namespaces. */
  private pidsSync(): number[] {
    const pids = new Set([...this.children].map((c) => c.pid).filter((p): p is number => p !== undefined));
    for (const ns of this.made) {
      try {
        const out = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', timeout: EXEC_TIMEOUT_MS });
        for (const w of out.split(/\s+/)) if (w) pids.add(Number(w));
      } catch { /* namespace already gone */ }
    }
    pids.delete(process.pid);
    return [...pids].filter(alive);
  }

  private signal(pids: number[], sig: NodeJS.Signals): void {
    for (const pid of pids) {
      try { process.kill(pid, sig); } catch { /* already gone */ }
    }
  }

  async teardown(): Promise<void> {
    if (this.done) return;
    const pids = this.pidsSync();
    this.signal(pids, 'SIGTERM');
    const deadline = Date.now() + this.graceMs;
    while (pids.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    this.signal(pids.filter(alive), 'SIGKILL');
    this.teardownSync(); // nothing left to wait for: delete the namespaces
  }

  teardownSync(): void {
    if (this.done) return;
    const pids = this.pidsSync();
    this.signal(pids, 'SIGTERM');
    const deadline = Date.now() + Math.min(this.graceMs, 1000);
    while (pids.some(alive) && Date.now() < deadline) sleepSync(20);
    this.signal(pids.filter(alive), 'SIGKILL');
    // Deleting a namespace destroys its veths, and with them their peers in the other namespaces.
    for (const ns of this.made.reverse()) {
      try { execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: EXEC_TIMEOUT_MS }); } catch { /* gone */ }
    }
    this.made.length = 0;
    this.done = true;
    track(this, false);
  }
}

export async function createTestbed(opts: TestbedOptions = {}): Promise<Testbed> {
  const prefix = opts.prefix ?? `t2${randomBytes(2).toString('hex')}-`;
  if (!/^[a-zA-Z0-9_-]{1,32}$/.test(prefix)) throw new Error(`testbed: bad prefix ${JSON.stringify(prefix)}`);
  const clientAddrs = opts.clientAddrs ?? 1;
  if (!(Number.isInteger(clientAddrs) && clientAddrs >= 1 && clientAddrs <= 200)) throw new Error('testbed: clientAddrs must be 1..200');
  const tb = new TestbedImpl(prefix, clientAddrs, opts.killGraceMs ?? 2000);
  try {
    await tb.build(opts.offloads ?? true);
  } catch (e) {
    await tb.teardown(); // undo whatever was made before the failing step
    throw e;
  }
  return tb;
}

export { waitFor, type WaitOptions } from './wait.js';
