// The programs of a testbed run as separate processes inside its namespaces:
// the deterministic service, the workload client. Shared by the e2e tests,
// the demo and the benchmarks.
import os from 'node:os';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Workload } from './client.js';
import type { Testbed } from './testbed.js';
import { GiveUp, waitFor } from './wait.js';

function findRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json')) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  return dir + '/';
}

/** The repository root, whether this runs from scripts/ (vitest) or dist/scripts/. */
export const repoRoot = findRoot();
/** Compiled script under dist/scripts (run as separate processes inside namespaces). */
export const distScript = (name: 'service' | 'client'): string => `${repoRoot}dist/scripts/${name}.js`;

/** Live text of a child's stdout and stderr. */
/** CPU seconds (user + system) of a running process. */
export function processCpuSeconds(pid: number): number {
  // /proc/PID/stat fields 14 and 15 (utime, stime) in clock ticks of 1/100 s
  // (USER_HZ is 100 on Linux); the command name may contain spaces, so
  // count fields after its closing parenthesis.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

export function collect(child: ChildProcess): { stdout: string; stderr: string } {
  const out = { stdout: '', stderr: '' };
  child.stdout?.setEncoding('utf8').on('data', (d: string) => { out.stdout += d; });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => { out.stderr += d; });
  return out;
}

export function waitForExit(child: ChildProcess, timeoutMs: number): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`pid ${child.pid} still running after ${timeoutMs} ms`)), timeoutMs);
    child.once('exit', (code) => { clearTimeout(t); resolve(code); });
  });
}

/**
 * `taskset -c CPUS` before a command, or nothing. The benchmarks pin the
 * primary's side and the backup's side to different CPUs so that, on one
 * machine, the backup's work does not slow the primary's path the way it
 * would not on two hosts. `nice` runs the command at that niceness: a client
 * timing its requests while it shares its CPU with the load's clients would
 * not share it with them on a real network.
 */
// Sharing a CPU with the load clients, a client timing its requests runs at
// this niceness: their hashing must not delay its own reads, which would count
// as stall (on client machines of their own it would not).
export const MEASURE_NICE = -5;
export const pinned = (cpus: string | undefined, nice?: number): string[] =>
  [...(cpus ? ['taskset', '-c', cpus] : []), ...(nice !== undefined ? ['nice', '-n', String(nice)] : [])];

/**
 * The machine's CPUs split in two "hosts": the backup's processes on the upper half, everything
 * else (the primary's, the gateway's, the clients) on the lower; nothing pinned on one CPU.
 */
export function hostCpus(): { primary: string; backup: string; gateway: string } | undefined {
  const n = os.cpus().length;
  if (n < 2) return undefined;
  const half = Math.floor(n / 2);
  const range = (from: number, to: number): string => (from === to ? String(from) : `${from}-${to}`);
  return { primary: range(0, half - 1), backup: range(half, n - 1), gateway: range(0, half - 1) };
}

export interface ServiceOptions {
  cpus?: string;
  /** Extra options of the service (scripts/service.ts: --read-pause-ms, --backlog ...). */
  extra?: string[];
  /**
   * 'node' (default): scripts/service.ts, the whole protocol. 'c': the C
   * storm server (bench/storm), the request/response op only, fast enough to
   * offer more new connections per second than t2cp is asked to handle.
   */
  impl?: 'node' | 'c';
}

/** Starts the service in `ns` and resolves once it printed `ready`. */
export async function startService(tb: Testbed, ns: string, ports: number[], log: string, opts: ServiceOptions = {}): Promise<{ child: ChildProcess; output: { stdout: string; stderr: string } }> {
  const program = opts.impl === 'c' ? [`${repoRoot}build/storm/storm_server`] : ['node', distScript('service')];
  const child = tb.spawn(ns, [...pinned(opts.cpus), ...program, ...ports.flatMap((p) => ['--port', String(p)]), '--log', log, ...(opts.extra ?? [])]);
  const output = collect(child);
  await waitFor(() => {
    if (child.exitCode !== null) throw new GiveUp(`service exited ${child.exitCode}: ${output.stderr}`);
    return output.stdout.includes('ready\n');
  }, { timeoutMs: 10_000, what: `service ready in ${ns}` });
  return { child, output };
}

/**
 * scripts/udp-service.ts in `ns` on the VIP (on the backup, once t2cp made it local, or before with
 * net.ipv4.ip_nonlocal_bind), resolved once it listens.
 */
export async function startUdpService(tb: Testbed, ns: string, log: string, o: { port: number; cpus?: string; extra?: string[] }): Promise<ChildProcess> {
  const child = tb.spawn(ns, [...pinned(o.cpus), 'node', `${repoRoot}dist/scripts/udp-service.js`, '--address', tb.addr.vip, '--port', String(o.port),
    '--log', log, ...(o.extra ?? [])]);
  const out = collect(child);
  await waitFor(() => {
    if (child.exitCode !== null) throw new GiveUp(`UDP service in ${ns} exited ${child.exitCode}: ${out.stderr}`);
    return out.stdout.includes('ready');
  }, { timeoutMs: 10_000, what: `the UDP service in ${ns}` });
  return child;
}

/** The processes `pid` forked, and theirs (/proc/PID/task/TID/children). */
function descendants(pid: number): number[] {
  const found: number[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(' ').filter(Boolean).map(Number)) {
        found.push(c, ...descendants(c));
      }
    }
  } catch { /* gone meanwhile */ }
  return found;
}

/**
 * SIGTERM by PID and wait for the exit (a service writes its log as it exits); nothing if it is
 * gone. A service still there after `graceMs` is killed with what it forked (Kamailio's workers
 * once deadlocked on a lock in their SIGTERM handler, their parent waiting for them).
 */
export async function stopChild(child: ChildProcess, graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => {
    for (const pid of child.pid ? descendants(child.pid) : []) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone meanwhile */ }
    }
    child.kill('SIGKILL');
  }, graceMs);
  await exited;
  clearTimeout(t);
}

/** The plain echo service (scripts/echo-service.ts) in `ns`, resolved once it listens: the failover benchmarks' probe target. */
export async function startEcho(tb: Testbed, ns: string, port: number, cpus?: string): Promise<ChildProcess> {
  const child = tb.spawn(ns, [...pinned(cpus), 'node', `${repoRoot}dist/scripts/echo-service.js`, '--port', String(port)]);
  const output = collect(child);
  await waitFor(() => {
    if (child.exitCode !== null) throw new GiveUp(`echo service in ${ns} exited: ${output.stderr}`);
    return output.stdout.includes('ready\n');
  }, { timeoutMs: 10_000, what: `echo service in ${ns}` });
  return child;
}

export interface ClientRun { code: number | null; summary: unknown; stdout: string; stderr: string }

export interface ClientOptions { deadlineMs?: number; local?: string[]; cpus?: string; nice?: number; timeline?: string }

/** Starts the workload client in `ns`; `finished` resolves when it exits (its own deadline, ours 10 s later). */
export function startClient(tb: Testbed, ns: string, server: string, workload: Workload, log: string, opts: ClientOptions = {}): { child: ChildProcess; finished: Promise<ClientRun> } {
  const deadlineMs = opts.deadlineMs ?? 60_000;
  const child = tb.spawn(ns, [...pinned(opts.cpus, opts.nice), 'node', distScript('client'), '--server', server, '--workload', JSON.stringify(workload),
    '--log', log, '--deadline-ms', String(deadlineMs), ...(opts.local ? ['--local', opts.local.join(',')] : []),
    ...(opts.timeline ? ['--timeline', opts.timeline] : [])]);
  return { child, finished: finishClient(child, deadlineMs) };
}

/** Runs the workload client in `ns` to completion. */
export function runClient(tb: Testbed, ns: string, server: string, workload: Workload, log: string, opts: ClientOptions = {}): Promise<ClientRun> {
  return startClient(tb, ns, server, workload, log, opts).finished;
}

/** Waits for a client program (its own deadline, ours 10 s later) and reads its summary line. */
async function finishClient(child: ChildProcess, deadlineMs: number): Promise<ClientRun> {
  const output = collect(child);
  const code = await waitForExit(child, deadlineMs + 10_000);
  const last = output.stdout.trim().split('\n').pop() ?? '';
  let summary: unknown = null;
  try { summary = JSON.parse(last); } catch { /* left for the caller in stdout */ }
  return { code, summary, ...output };
}

export interface StormOptions { connections: number; concurrency: number; local: string[]; seed: number; cpus?: string; deadlineMs?: number }

/**
 * A storm of one-request connections from the C storm client (bench/storm):
 * the same bytes scripts/client.ts would send for that many `rr` sessions of
 * one request of 4-16 bytes with replies of 1-16, and the same log and
 * summary line, at many times the rate.
 */
export async function runStorm(tb: Testbed, ns: string, server: string, log: string, o: StormOptions): Promise<ClientRun> {
  const deadlineMs = o.deadlineMs ?? 120_000;
  const child = tb.spawn(ns, [...pinned(o.cpus), `${repoRoot}build/storm/storm_client`, '--server', server,
    '--connections', String(o.connections), '--concurrency', String(o.concurrency), '--local', o.local.join(','),
    '--req-size', '4,16', '--resp-size', '1,16', '--seed', String(o.seed), '--log', log, '--deadline-ms', String(deadlineMs)]);
  return finishClient(child, deadlineMs);
}
