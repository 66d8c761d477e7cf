// Real servers from Debian as the replicated service of a takeover run, each
// driven by its own client: Redis (redis-benchmark), memcached (memcaslap),
// nginx (curl), OpenSSH (ssh); PostgreSQL (pgbench) in scripts/postgres.ts.
// The same server, the same configuration and the same files on the primary
// and on the backup, each in its own namespace and its own folder of the run;
// the clients in the client's namespace through the VIP while the primary's
// link goes down and the failure detector decides. Used by
// test/e2e/compat.test.ts and test/e2e/postgres.test.ts.
//
// Every server runs its packaged binary directly with a configuration of the
// run (never the system's service, its unit or its files under /etc), listens
// on 0.0.0.0 (the backup gets the VIP only at the takeover), and is stopped by
// PID in a finally.
//
// Call order: runServerTakeover() once per testbed, with one of the starters.
import { execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import type { NativeTakeoverReport } from '../src/addon.js';
import type { FlowCounts } from '../src/control/index.js';
import { limitCpu, type CpuQuota } from './cpu-quota.js';
import { collect, waitForExit } from './processes.js';
import { readLog } from './replica-check.js';
import { startTakeoverLab, type TakeoverLab } from './takeover-lab.js';
import type { LogRecord } from './t2cp-process.js';
import type { Testbed } from './testbed.js';
import { GiveUp, waitFor } from './wait.js';

export type Side = 'primary' | 'backup';

export interface RealServer {
  /** The server's process (ip netns exec execs, so its PID is the server's). */
  child: ChildProcess;
  /** Its own log, where it writes one. */
  log: string;
  stop(): Promise<void>;
}

/** Starts one side's copy in `ns`, in its own folder `dir` (made by the caller), and resolves once it serves. */
export type RealServerStarter = (tb: Testbed, ns: string, side: Side, dir: string) => Promise<RealServer>;

/** Ends `child` by its PID with `signal`, then SIGKILL if it outlives `graceMs`. */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  try {
    await waitForExit(child, graceMs);
  } catch {
    child.kill('SIGKILL');
    await waitForExit(child, 5_000);
  }
}

export function tail(file: string, lines = 10): string {
  try {
    return fs.readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Resolves once something in `ns` listens on TCP `port` (ss), or rejects when `child` exited first. */
async function listening(tb: Testbed, ns: string, port: number, child: ChildProcess, what: string, log: string): Promise<void> {
  await waitFor(async () => {
    if (child.exitCode !== null || child.signalCode !== null) throw new GiveUp(`${what} in ${ns} exited ${child.exitCode ?? child.signalCode}: ${tail(log)}`);
    const r = await tb.exec(ns, ['ss', '-Hltn', `sport = :${port}`]);
    return r.code === 0 && r.stdout.trim() !== '';
  }, { timeoutMs: 20_000, what: `${what} listening on ${port} in ${ns}` });
}

/** Spawns `argv` in `ns` with its output appended to `log`; stops it if it does not come to listen on `port`. */
async function spawnServer(tb: Testbed, ns: string, argv: string[], log: string, port: number, what: string,
  stopSignal: NodeJS.Signals = 'SIGTERM', opts: SpawnOptions = {}): Promise<RealServer> {
  const fd = fs.openSync(log, 'a');
  const child = tb.spawn(ns, argv, { stdio: ['ignore', fd, fd], ...opts });
  fs.closeSync(fd);
  const server: RealServer = { child, log, stop: () => stopChild(child, stopSignal) };
  try {
    await listening(tb, ns, port, child, what, log);
  } catch (e) {
    await server.stop();
    throw e;
  }
  return server;
}

/** redis-server, no persistence (nothing on disk differs between the copies), protected mode off for the testbed's clients. */
export const redis = (port: number): RealServerStarter => (tb, ns, _side, dir) =>
  spawnServer(tb, ns, ['redis-server', '--port', String(port), '--bind', '0.0.0.0', '--protected-mode', 'no',
    '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', '--logfile', ''], `${dir}/redis.log`, port, 'redis-server');

/** memcached, TCP only, 64 MB, two worker threads, as user nobody (it refuses to run as root). */
export const memcached = (port: number): RealServerStarter => (tb, ns, _side, dir) =>
  spawnServer(tb, ns, ['memcached', '-p', String(port), '-l', '0.0.0.0', '-U', '0', '-m', '64', '-t', '2', '-u', 'nobody', '-v'],
    `${dir}/memcached.log`, port, 'memcached');

/**
 * nginx serving `www` (the same files, made once by the caller with their
 * times, and copied to each side with them: ETag and Last-Modified are made
 * of the file's time and size), keep-alive of many requests, one worker.
 */
export const nginx = (port: number, www: string, o: { replicaClockAheadS?: number } = {}): RealServerStarter => async (tb, ns, side, dir) => {
  execFileSync('cp', ['-a', www, `${dir}/www`]);
  const conf = `${dir}/nginx.conf`;
  fs.writeFileSync(conf, [
    'daemon off;', 'master_process on;', 'worker_processes 1;', 'user root;',
    `pid ${dir}/nginx.pid;`, `error_log ${dir}/error.log info;`,
    'events { worker_connections 256; }',
    'http {',
    `  access_log ${dir}/access.log;`,
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${dir}/${t}_temp;`),
    '  types { text/html html; application/octet-stream bin; }',
    '  keepalive_requests 100000;', '  keepalive_timeout 60s;',
    `  server { listen ${port}; root ${dir}/www; }`,
    '}', ''].join('\n'));
  // The replica's clock ahead (libfaketime, for this process and its workers): every Date: header differs.
  const env = side === 'backup' && o.replicaClockAheadS
    ? { env: { ...process.env, LD_PRELOAD: faketimeLibrary(), FAKETIME: `+${o.replicaClockAheadS}s`, FAKETIME_DONT_FAKE_MONOTONIC: '1' } }
    : {};
  return spawnServer(tb, ns, ['nginx', '-c', conf, '-p', dir], `${dir}/error.log`, port, 'nginx', 'SIGTERM', env);
};

/** libfaketime's library (package libfaketime), under the machine's multiarch folder. */
function faketimeLibrary(): string {
  for (const arch of fs.readdirSync('/usr/lib')) {
    const lib = `/usr/lib/${arch}/faketime/libfaketime.so.1`;
    if (fs.existsSync(lib)) return lib;
  }
  throw new Error('libfaketime.so.1 not found under /usr/lib/*/faketime (scripts/setup.sh installs the `libfaketime` package)');
}

/**
 * sshd with one host key and one authorized client key, both made once by
 * the caller (`keys`) and shared by the two sides, as a deployment would copy
 * the host key to the backup. Key exchange still draws fresh random numbers
 * on each side (the KEXINIT cookie, the ephemeral keys): no replica of an SSH
 * session can follow the primary's.
 */
export const sshd = (port: number, keys: SshKeys): RealServerStarter => async (tb, ns, _side, dir) => {
  // sshd's privilege separation directory, which the package's unit makes at boot (RuntimeDirectory).
  fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const conf = `${dir}/sshd_config`;
  fs.writeFileSync(conf, [
    `Port ${port}`, 'ListenAddress 0.0.0.0', `HostKey ${keys.hostKey}`, `PidFile ${dir}/sshd.pid`,
    `AuthorizedKeysFile ${keys.authorizedKeys}`, 'StrictModes no', 'UsePAM no', 'PasswordAuthentication no',
    'KbdInteractiveAuthentication no', 'PermitRootLogin prohibit-password', 'LogLevel VERBOSE', ''].join('\n'));
  return spawnServer(tb, ns, ['/usr/sbin/sshd', '-D', '-e', '-f', conf], `${dir}/sshd.log`, port, 'sshd');
};

export interface SshKeys { hostKey: string; clientKey: string; authorizedKeys: string }

/** A host key and a client key (ed25519) in `dir`, the client's public key authorized. */
export function makeSshKeys(dir: string): SshKeys {
  fs.mkdirSync(dir, { mode: 0o700 });
  const keys = { hostKey: `${dir}/host_ed25519`, clientKey: `${dir}/client_ed25519`, authorizedKeys: `${dir}/authorized_keys` };
  for (const k of [keys.hostKey, keys.clientKey]) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 't2cp-test', '-f', k]);
  fs.copyFileSync(`${keys.clientKey}.pub`, keys.authorizedKeys);
  return keys;
}

/** The ssh client's options for a run: the key, no config or known-hosts file of the machine's, no prompts. */
export function sshClientArgs(keys: SshKeys, port: number): string[] {
  return ['ssh', '-F', '/dev/null', '-i', keys.clientKey, '-p', String(port), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR'];
}

export interface ClientProgram {
  /** Its name in the trial and in messages. */
  name: string;
  /** Run in the client's namespace. */
  argv: string[];
  env?: NodeJS.ProcessEnv;
  /** True once the client is far enough into its run for the failure to come in the middle of it. */
  underWay(out: { stdout: string; stderr: string }): boolean;
  /** How long it may take at most after the takeover before it counts as hung, ms. */
  boundMs: number;
  /**
   * Its share of one CPU (a cgroup of its own): a load generator with no rate option of its
   * own kept to a rate the testbed's replica sustains beside everything else on two CPUs.
   */
  cpuPercent?: number;
}

export interface ClientResult { name: string; code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

export interface ServerTakeoverOptions {
  port: number;
  instance: string;
  /** The backup's --divergence; undefined: its default. */
  divergence?: string;
  server: RealServerStarter;
  /** Prepares one side's copy once it serves, before `t2cp backup` starts (pgbench's tables). */
  prepare?: (tb: Testbed, ns: string, server: RealServer) => Promise<void>;
  /** Started together; the primary fails once every one of them is under way. */
  clients: ClientProgram[];
  /**
   * Before the failure, wait until the backup's determinism report counts at
   * least this many open flows compared and alike (it counts them once a second).
   */
  expectOpen?: number;
  /** Run once every client exited, the backup still serving the VIP (a state check through it). */
  afterClients?: (tb: Testbed) => Promise<Record<string, unknown>>;
}

export interface ServerTakeoverTrial {
  clients: ClientResult[];
  /** The backup's takeover record: its trigger and the engine's part. */
  record: { trigger: { source: string }; engine: NativeTakeoverReport };
  /** The detector's takeover record. */
  gateway: Record<string, unknown>;
  /** The backup's flow events before the failure, and all of them at the end. */
  flowsBeforeFailure: LogRecord[];
  /** What `t2cp status --role backup --json` said of the flows just before the failure. */
  statusBeforeFailure: FlowCounts;
  flows: LogRecord[];
  /** What `afterClients` returned. */
  after: Record<string, unknown>;
  servers: Record<Side, { dir: string; log: string }>;
  logs: TakeoverLab['logs'];
}

/**
 * The whole run: both copies started (each in `dir`/`side`) and prepared,
 * the deployment started, the clients through the VIP, the primary's link
 * down once all are under way, the detector's takeover, the clients to their
 * end. Stops everything it started, also on failure.
 */
export async function runServerTakeover(tb: Testbed, dir: string, o: ServerTakeoverOptions): Promise<ServerTakeoverTrial> {
  const servers: Partial<Record<Side, RealServer>> = {};
  const children: ChildProcess[] = [];
  let pair: TakeoverLab | undefined;
  const quotas: CpuQuota[] = [];
  // Servers that drop root (postgres, memcached's nobody) pass through the run's folder to their own.
  fs.chmodSync(dir, fs.statSync(dir).mode | 0o001);
  try {
    pair = await startTakeoverLab(tb, dir, {
      ports: [o.port], instance: o.instance,
      // Not a test of detection speed: 10 ms heartbeats with a 100 ms hard timeout. At 30 ms a
      // primary agent sharing the testbed's two CPUs with both servers starting their clients'
      // backends (pgbench) was once silent long enough for a takeover of a live primary.
      intervalMs: 10, hardMisses: 10,
      backupArgs: o.divergence ? ['--divergence', o.divergence] : [],
      service: async (ns, side) => {
        const own = `${dir}/${side}`;
        fs.mkdirSync(own, { mode: 0o755 });
        const server = await o.server(tb, ns, side, own);
        servers[side] = server;
        await o.prepare?.(tb, ns, server);
        return { child: server.child, log: server.log };
      },
    });
    const runs = o.clients.map((c) => {
      const child = tb.spawn(tb.ns.client, c.argv, c.env ? { env: c.env } : {});
      children.push(child);
      if (c.cpuPercent) quotas.push(limitCpu(`${tb.prefix}${c.name}`, [child.pid!], c.cpuPercent));
      return { c, child, out: collect(child) };
    });
    await waitFor(() => runs.every(({ c, child, out }) => {
      if (child.exitCode !== null || child.signalCode !== null) {
        const early = pair!.takeoverBegun();
        throw new GiveUp(`${c.name} exited ${child.exitCode ?? child.signalCode} before the failure: ${out.stderr.trim().slice(-2000)}${early ? `; ${early}` : ''}`);
      }
      return c.underWay(out);
    }), { timeoutMs: 60_000, what: 'every client under way' });
    const flowsBeforeFailure = pair.backup.records.filter((r) => String(r.msg).startsWith('flow '));
    const askStatus = async (): Promise<FlowCounts> => {
      const status = await pair!.backupStatus(['--json']);
      if (status.code !== 0) throw new GiveUp(`t2cp status failed (${status.code}): ${status.stderr.trim()}`);
      return (JSON.parse(status.stdout) as { flows: FlowCounts }).flows;
    };
    const statusBeforeFailure = o.expectOpen
      ? await waitFor(async () => { const f = await askStatus(); return (f.comparison[String(o.port)]?.open ?? 0) >= o.expectOpen! && f; },
        { timeoutMs: 5_000, intervalMs: 200, what: `${o.expectOpen} open flows alike in the determinism report` })
      : await askStatus();

    await pair.fail('link-down');
    const record = await waitFor(() => readLog<ServerTakeoverTrial['record']>(pair!.logs.backupReport)[0],
      { timeoutMs: 15_000, what: 'the backup\'s takeover record' });
    const clients: ClientResult[] = [];
    for (const { c, child, out } of runs) {
      const code = await waitForExit(child, c.boundMs);
      clients.push({ name: c.name, code, signal: child.signalCode, ...out });
    }
    const after = (await o.afterClients?.(tb)) ?? {};
    const gateway = await waitFor(() => readLog<Record<string, unknown>>(pair!.logs.gatewayReport)[0],
      { timeoutMs: 10_000, what: 'the detector\'s takeover record' });
    return {
      clients, record, gateway, flowsBeforeFailure, statusBeforeFailure, after,
      flows: pair.backup.records.filter((r) => String(r.msg).startsWith('flow ')),
      servers: { primary: { dir: `${dir}/primary`, log: servers.primary!.log }, backup: { dir: `${dir}/backup`, log: servers.backup!.log } },
      logs: pair.logs,
    };
  } finally {
    for (const q of quotas) q.release();
    for (const child of children) await stopChild(child, 'SIGTERM', 5_000);
    await pair?.stop();
    for (const s of [servers.primary, servers.backup]) await s?.stop();
  }
}

/** The backup's flows (by id) with an event of `type` before the failure. */
export function flowsBefore(trial: ServerTakeoverTrial, type: string): Set<unknown> {
  return new Set(trial.flowsBeforeFailure.filter((f) => f.msg === `flow ${type}`).map((f) => f.id));
}

/** The flows open at the failure: synchronised before it and not closed before it. */
export function openAtFailure(trial: ServerTakeoverTrial): unknown[] {
  const closed = flowsBefore(trial, 'closed');
  return [...flowsBefore(trial, 'synchronised')].filter((id) => !closed.has(id));
}
