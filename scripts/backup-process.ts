// Runs `t2cp backup` as its own process inside the testbed's backup
// namespace (as a user would), with --json, and collects what it logs:
// flow events, counters at exit. Used by the e2e tests, the demo and bench.
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { distCli, type LogRecord } from './t2cp-process.js';
import { pinned } from './processes.js';
import type { Testbed } from './testbed.js';
import { GiveUp, waitFor } from './wait.js';

export { distCli, type LogRecord };

export interface BackupProcess {
  child: ChildProcess;
  records: LogRecord[];
  stderr: () => string;
  /** Records of one kind, e.g. flow('synchronised'). */
  flows(type: string): LogRecord[];
  /** Asks for the counters now (SIGUSR1) and resolves with them. */
  counters(): Promise<Record<string, number>>;
  /** CPU seconds (user + system) the t2cp process used so far. */
  cpuSeconds(): number;
  /** SIGTERM by PID, wait for exit; resolves with the counters it logged when it stopped. */
  stop(): Promise<Record<string, number>>;
}

export async function startBackup(
  tb: Testbed,
  args: { mirrorIf?: string; vip?: string; ports: number[]; instance: string; logFlows?: boolean; cpus?: string; extra?: string[] },
): Promise<BackupProcess> {
  const cli = distCli();
  const child = tb.spawn(tb.ns.backup, [
    ...pinned(args.cpus), 'node', cli, 'backup', '--json', ...(args.logFlows === false ? [] : ['--log-flows']),
    '--mirror-if', args.mirrorIf ?? tb.ifaces.mirror,
    '--vip', args.vip ?? tb.addr.vip,
    '--ports', args.ports.join(','),
    '--instance', args.instance,
    ...(args.extra ?? []),
  ]);
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
  await waitFor(() => {
    if (child.exitCode !== null) throw new GiveUp(`t2cp backup exited ${child.exitCode}: ${err.trim()}`);
    return records.some((r) => r.msg === 'replicating');
  }, { timeoutMs: 15_000, what: 't2cp backup replicating' });
  return {
    child,
    records,
    stderr: () => err,
    flows: (type) => records.filter((r) => r.msg === `flow ${type}`),
    counters: async () => {
      const seen = records.length;
      child.kill('SIGUSR1');
      const rec = await waitFor(() => records.slice(seen).find((r) => r.msg === 'counters'), { timeoutMs: 5_000, what: 'counters after SIGUSR1' });
      const { t: _t, level: _l, instance: _i, msg: _m, ...counters } = rec;
      return counters as Record<string, number>;
    },
    cpuSeconds: () => {
      // /proc/PID/stat fields 14 and 15 (utime, stime) in clock ticks of 1/100 s
      // (USER_HZ is 100 on Linux); the command name may contain spaces, so
      // count fields after its closing parenthesis.
      const stat = readFileSync(`/proc/${child.pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return (Number(f[11]) + Number(f[12])) / 100;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      }
      const stopped = [...records].reverse().find((r) => r.msg === 'stopped') ?? {};
      const { t: _t, level: _l, instance: _i, msg: _m, ...counters } = stopped as LogRecord;
      return counters as Record<string, number>;
    },
  };
}
