// Runs one `t2cp <role>` as its own process inside a testbed namespace, as a
// user would, with --json, and collects what it logs. The backup, the
// gateway's failure detector and the primary agent are all started this way
// by the e2e tests, the demo and the benchmark.
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pinned } from './processes.js';
import type { Testbed } from './testbed.js';
import { GiveUp, waitFor } from './wait.js';

export interface LogRecord {
  t: string;
  level: string;
  instance: string;
  msg: string;
  [k: string]: unknown;
}

export interface T2cpProcess {
  child: ChildProcess;
  records: LogRecord[];
  stderr: () => string;
  /** The first record (from index `from`) that `match` accepts, waited for. */
  waitForRecord(match: (r: LogRecord) => boolean, what: string, timeoutMs?: number, from?: number): Promise<LogRecord>;
  /** SIGTERM by PID and wait for the exit (SIGKILL after 10 s). */
  stop(): Promise<void>;
}

/** The compiled CLI, whether this module runs from scripts/ (vitest) or dist/scripts/. */
export function distCli(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json')) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  return path.join(dir, 'dist', 'src', 'cli.js');
}

/** `wrap`: a command the CLI runs under (e.g. setpriv dropping capabilities). */
export async function startT2cp(tb: Testbed, ns: string, args: string[], ready: (r: LogRecord) => boolean,
  opts: { cpus?: string; what?: string; wrap?: string[] } = {}): Promise<T2cpProcess> {
  const child = tb.spawn(ns, [...pinned(opts.cpus), ...(opts.wrap ?? []), 'node', distCli(), ...args, '--json']);
  const records: LogRecord[] = [];
  let partial = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    partial += d;
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) if (l.trim()) records.push(JSON.parse(l) as LogRecord);
  });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const what = opts.what ?? `t2cp ${args[0]}`;
  const waitForRecord = (match: (r: LogRecord) => boolean, w: string, timeoutMs = 15_000, from = 0) =>
    waitFor(() => {
      const r = records.slice(from).find(match);
      if (!r && child.exitCode !== null) throw new GiveUp(`${what} exited ${child.exitCode}: ${err.trim()}`);
      return r;
    }, { timeoutMs, what: `${what}: ${w}` });
  await waitForRecord(ready, 'ready');
  return {
    child,
    records,
    stderr: () => err,
    waitForRecord,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    },
  };
}
