// The programs of a testbed run as separate processes inside its namespaces:
// the deterministic service, the workload client. Shared by the e2e tests,
// the demo and the benchmarks.
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
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
 * would not on two hosts.
 */
export const pinned = (cpus: string | undefined): string[] => (cpus ? ['taskset', '-c', cpus] : []);

/** Starts the service in `ns` and resolves once it printed `ready`. */
export async function startService(tb: Testbed, ns: string, ports: number[], log: string, cpus?: string, extra: string[] = []): Promise<{ child: ChildProcess; output: { stdout: string; stderr: string } }> {
  const child = tb.spawn(ns, [...pinned(cpus), 'node', distScript('service'), ...ports.flatMap((p) => ['--port', String(p)]), '--log', log, ...extra]);
  const output = collect(child);
  await waitFor(() => {
    if (child.exitCode !== null) throw new GiveUp(`service exited ${child.exitCode}: ${output.stderr}`);
    return output.stdout.includes('ready\n');
  }, { timeoutMs: 10_000, what: `service ready in ${ns}` });
  return { child, output };
}

export interface ClientRun { code: number | null; summary: unknown; stdout: string; stderr: string }

export interface ClientOptions { deadlineMs?: number; local?: string[]; cpus?: string }

/** Runs the workload client in `ns` to completion (it has its own deadline; ours is 10 s later). */
export async function runClient(tb: Testbed, ns: string, server: string, workload: Workload, log: string, opts: ClientOptions = {}): Promise<ClientRun> {
  const deadlineMs = opts.deadlineMs ?? 60_000;
  const child = tb.spawn(ns, [...pinned(opts.cpus), 'node', distScript('client'), '--server', server, '--workload', JSON.stringify(workload),
    '--log', log, '--deadline-ms', String(deadlineMs), ...(opts.local ? ['--local', opts.local.join(',')] : [])]);
  const output = collect(child);
  const code = await waitForExit(child, deadlineMs + 10_000);
  const last = output.stdout.trim().split('\n').pop() ?? '';
  let summary: unknown = null;
  try { summary = JSON.parse(last); } catch { /* left for the caller in stdout */ }
  return { code, summary, ...output };
}

