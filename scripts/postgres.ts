// PostgreSQL as the replicated service of a takeover run (scripts/real-servers.ts):
// a real `postgres` on the primary and on the backup, each in its own
// namespace with its own data directory made by the same initdb, and pgbench
// in the client's namespace through the VIP while the primary's link goes
// down and the failure detector decides. Used by test/e2e/postgres.test.ts.
//
// Everything lives in the run's folder and the testbed's namespaces: the
// servers run the packaged binaries directly (never pg_wrapper, pg_ctlcluster
// or the system's cluster and its port 5432), as the `postgres` user (the
// server refuses root), with their Unix sockets in their own folders. They
// are stopped by PID (SIGINT: fast shutdown) in a finally.
//
// Call order: runPostgresTakeover() once per testbed; or startPostgres() and
// startupExchange() by themselves.
import { execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { pinned } from './processes.js';
import { runServerTakeover, stopChild, tail, type RealServer, type ServerTakeoverTrial } from './real-servers.js';
import type { Testbed } from './testbed.js';
import { GiveUp, waitFor } from './wait.js';

/** The bin folder of the newest PostgreSQL server Debian's packages installed (postgresql-NN). */
export function postgresBin(): string {
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root)
    ? fs.readdirSync(root).filter((v) => /^\d+$/.test(v) && fs.existsSync(`${root}/${v}/bin/postgres`)).sort((a, b) => Number(b) - Number(a))
    : [];
  if (!versions.length) throw new Error('postgres: no server under /usr/lib/postgresql (scripts/setup.sh installs the `postgresql` package)');
  return `${root}/${versions[0]}/bin`;
}

/** The address range of the testbed's clients and hosts (scripts/testbed.ts), trusted by pg_hba. */
export const TESTBED_NET = '198.18.0.0/15';

/**
 * A command run as `postgres` in folder `cwd` (it may not read the caller's),
 * with a fixed, minimal environment: both servers get the same, so nothing
 * of the caller's (PG*, LANG, TZ) reaches one and not the other.
 */
function asPostgres(cwd: string): string[] {
  return ['setpriv', '--reuid=postgres', '--regid=postgres', '--init-groups', '--',
    'env', '-i', '-C', cwd, 'PATH=/usr/bin:/bin', 'LC_ALL=C'];
}

export interface PostgresServer extends RealServer {
  /** Postmaster (ip netns exec, setpriv and env all exec). */
  child: ChildProcess;
  /** The server's own folder: data/, its Unix socket, its log. */
  dir: string;
  port: number;
  /** Its stderr: the server log (log_connections and log_disconnections on). */
  log: string;
  /** The Unix socket: for local clients (pgbench -i, startupExchange), never through the VIP. */
  socket: string;
  /** SIGINT by PID (fast shutdown: backends ended, no waiting for clients), then SIGKILL after 20 s. */
  stop(): Promise<void>;
}

/** The password of the `postgres` role where the servers ask for one (scram-sha-256). */
export const POSTGRES_PASSWORD = 't2cp-test';

export interface PostgresOptions {
  port: number;
  cpus?: string;
  /**
   * pre_auth_delay, s: each connection's backend sleeps this long after the
   * fork, before it reads anything. A replica made slow this way reads a
   * client's first bytes all at once, as a loaded backup host would.
   */
  preAuthDelayS?: number;
  /**
   * How clients through the network authenticate: 'trust' (default) or
   * 'scram-sha-256' (the role's password POSTGRES_PASSWORD). Over the Unix
   * socket it is always trust.
   */
  auth?: 'trust' | 'scram-sha-256';
}

/**
 * initdb into `dir`/data and starts the server in `ns`; resolves once it
 * accepts connections. Every server made here is made the same way (trust
 * for the testbed's addresses, C locale, UTF8, no TLS): two of them answer a
 * client with the same bytes but for BackendKeyData (startupExchange shows it).
 */
export async function startPostgres(tb: Testbed, ns: string, dir: string, o: PostgresOptions): Promise<PostgresServer> {
  const bin = postgresBin();
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  // The run's folder is root's (0700): postgres needs to pass through it to its own.
  const parent = path.dirname(dir);
  fs.chmodSync(parent, fs.statSync(parent).mode | 0o001);
  fs.mkdirSync(dir, { mode: 0o700 });
  fs.chownSync(dir, uid, gid);
  const data = `${dir}/data`;
  const auth = o.auth ?? 'trust';
  const pwfile = `${dir}/pwfile`;
  if (auth !== 'trust') {
    fs.writeFileSync(pwfile, `${POSTGRES_PASSWORD}\n`, { mode: 0o600 });
    fs.chownSync(pwfile, uid, gid);
  }
  const init = await tb.exec(ns, [...asPostgres(dir), `${bin}/initdb`, '-D', data, '-U', 'postgres', '--auth-local=trust', `--auth-host=${auth}`,
    ...(auth !== 'trust' ? [`--pwfile=${pwfile}`] : []),
    '--encoding=UTF8', '--locale=C', '--no-sync', '--no-instructions'], { timeoutMs: 120_000 });
  if (init.code !== 0) throw new Error(`initdb in ${ns} failed (${init.code}): ${init.stderr.trim()}`);
  fs.appendFileSync(`${data}/pg_hba.conf`, `host all all ${TESTBED_NET} ${auth}\n`);

  const log = `${dir}/postgres.log`;
  const fd = fs.openSync(log, 'a');
  const child = tb.spawn(ns, [...pinned(o.cpus), ...asPostgres(dir), `${bin}/postgres`, '-D', data,
    '-c', `port=${o.port}`,
    // 0.0.0.0, never the VIP: the backup only gets the VIP at the takeover (as scripts/service.ts).
    '-c', 'listen_addresses=0.0.0.0',
    '-c', `unix_socket_directories=${dir}`,
    // The server answers SSLRequest with 'N': a TLS session's keys are random, no replica could follow it.
    '-c', 'ssl=off',
    '-c', 'fsync=off',
    '-c', 'log_connections=on', '-c', 'log_disconnections=on',
    ...(o.preAuthDelayS ? ['-c', `pre_auth_delay=${o.preAuthDelayS}`] : [])],
  { stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  const server: PostgresServer = {
    child, dir, port: o.port, log, socket: `${dir}/.s.PGSQL.${o.port}`,
    stop: () => stopChild(child, 'SIGINT', 20_000),
  };
  try {
    await waitFor(() => {
      if (child.exitCode !== null) throw new GiveUp(`postgres in ${ns} exited ${child.exitCode}: ${tail(log)}`);
      return fs.readFileSync(log, 'utf8').includes('database system is ready to accept connections');
    }, { timeoutMs: 30_000, what: `postgres ready in ${ns}` });
  } catch (e) {
    await server.stop();
    throw e;
  }
  return server;
}

/** pgbench's tables (scale 1: 100 000 accounts), made over the server's Unix socket: the same rows on every server. */
export async function pgbenchInit(tb: Testbed, ns: string, server: PostgresServer): Promise<void> {
  const r = await tb.exec(ns, [`${postgresBin()}/pgbench`, '-i', '-q', '-h', server.dir, '-p', String(server.port), '-U', 'postgres', 'postgres'],
    { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`pgbench -i in ${ns} failed (${r.code}): ${r.stderr.trim()}`);
}

export interface BackendMessage {
  /** The message's type byte ('R' authentication, 'S' ParameterStatus, 'K' BackendKeyData, 'Z' ReadyForQuery...). */
  type: string;
  body: Buffer;
}

/**
 * What a server answers a StartupMessage (protocol 3.0, user and database
 * `postgres`) with, up to ReadyForQuery, over its Unix socket.
 */
export function startupExchange(socket: string, timeoutMs = 10_000): Promise<BackendMessage[]> {
  const params = Buffer.from('user\0postgres\0database\0postgres\0\0');
  const startup = Buffer.alloc(8 + params.length);
  startup.writeInt32BE(startup.length, 0);
  startup.writeInt32BE(3 << 16, 4); // protocol 3.0
  params.copy(startup, 8);
  return new Promise((resolve, reject) => {
    const sock = net.connect({ path: socket }, () => sock.write(startup));
    const timer = setTimeout(() => { sock.destroy(); reject(new Error(`no ReadyForQuery from ${socket} in ${timeoutMs} ms`)); }, timeoutMs);
    const messages: BackendMessage[] = [];
    let buf = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 5 && buf.length >= 1 + buf.readInt32BE(1)) {
        const len = buf.readInt32BE(1);
        messages.push({ type: String.fromCharCode(buf[0]!), body: Buffer.from(buf.subarray(5, 1 + len)) });
        buf = buf.subarray(1 + len);
        if (messages[messages.length - 1]!.type === 'Z') {
          clearTimeout(timer);
          sock.end(Buffer.from([0x58, 0, 0, 0, 4])); // Terminate
          resolve(messages);
        }
      }
    });
    sock.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

export interface PgbenchRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** "number of transactions actually processed: N/M" */
  processed: number | null;
  planned: number | null;
  /** "number of failed transactions: N" */
  failed: number | null;
}

export function parsePgbench(code: number | null, stdout: string, stderr: string): PgbenchRun {
  const processed = /number of transactions actually processed: (\d+)\/(\d+)/.exec(stdout);
  const failed = /number of failed transactions: (\d+)/.exec(stdout);
  return {
    code, stdout, stderr,
    processed: processed ? Number(processed[1]) : null,
    planned: processed ? Number(processed[2]) : null,
    failed: failed ? Number(failed[1]) : null,
  };
}

export interface PostgresTakeoverOptions {
  /** libpq's sslmode for pgbench; undefined: not set at all, libpq's default (prefer). */
  sslmode?: 'disable' | 'allow' | 'prefer';
  /** pgbench -c: its connections, each a flow to be taken over. */
  clients: number;
  /** pgbench -t: transactions per client. */
  transactions: number;
  /** pgbench -R: transactions per second, all clients together; clients × transactions / rate is the run's length, s. */
  rate: number;
  /** The primary fails once pgbench reported this many seconds of progress (-P 1). */
  failAfterProgress: number;
  /** The backup's server only: pre_auth_delay (PostgresOptions.preAuthDelayS). */
  replicaPreAuthDelayS?: number;
  /** Both servers: how network clients authenticate (PostgresOptions.auth). */
  auth?: PostgresOptions['auth'];
  /** pgbench's script: -S (select-only, default), -N (simple-update). */
  script?: '-S' | '-N';
  port?: number;
  instance?: string;
  /** The backup's --divergence; undefined: its default. */
  divergence?: string;
  /** ServerTakeoverOptions.expectOpen: pgbench's connections, alike, before the failure. */
  expectOpen?: number;
}

export interface PostgresTakeoverTrial extends ServerTakeoverTrial {
  pgbench: PgbenchRun;
  /** FATAL and ERROR lines of each server's log. */
  serverErrors: { primary: string[]; backup: string[] };
}

/**
 * The whole run (runServerTakeover): pgbench's tables made on each server
 * over its Unix socket before `t2cp backup` starts (so both databases start
 * equal and nothing of it needs replicating), pgbench through the VIP, the
 * primary's link down once pgbench reported its progress, the detector's
 * takeover, pgbench to its end.
 */
export async function runPostgresTakeover(tb: Testbed, dir: string, o: PostgresTakeoverOptions): Promise<PostgresTakeoverTrial> {
  const port = o.port ?? 7000;
  // Only what libpq reads from its environment by default is left out: no PG* variable but the
  // password where one is asked, so sslmode is libpq's default unless asked for.
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, LC_ALL: 'C', ...(o.sslmode ? { PGSSLMODE: o.sslmode } : {}),
    ...(o.auth && o.auth !== 'trust' ? { PGPASSWORD: POSTGRES_PASSWORD } : {}) };
  const trial = await runServerTakeover(tb, dir, {
    port, instance: o.instance ?? 'pg', divergence: o.divergence, expectOpen: o.expectOpen,
    server: (tb, ns, side, own) => startPostgres(tb, ns, `${own}/pg`,
      { port, auth: o.auth, preAuthDelayS: side === 'backup' ? o.replicaPreAuthDelayS : undefined }),
    prepare: (tb, ns, server) => pgbenchInit(tb, ns, server as PostgresServer),
    clients: [{
      name: 'pgbench', env,
      argv: [`${postgresBin()}/pgbench`, '-h', tb.addr.vip, '-p', String(port), '-U', 'postgres',
        o.script ?? '-S', '-c', String(o.clients), '-j', '2', '-t', String(o.transactions), '-R', String(o.rate), '-P', '1', 'postgres'],
      underWay: (out) => (out.stderr.match(/^progress: /gm) ?? []).length >= o.failAfterProgress,
      // The planned length after the takeover, with room for a slow machine.
      boundMs: 30_000 + (1000 * o.clients * o.transactions) / o.rate,
    }],
  });
  const run = trial.clients[0]!;
  const errors = (log: string): string[] => fs.readFileSync(log, 'utf8').split('\n').filter((l) => /\b(FATAL|ERROR|PANIC):/.test(l));
  return {
    ...trial,
    pgbench: parsePgbench(run.code, run.stdout, run.stderr),
    serverErrors: { primary: errors(trial.servers.primary.log), backup: errors(trial.servers.backup.log) },
  };
}
