// Runs `t2cp backup` as its own process inside the testbed's backup
// namespace (as a user would), with --json, and collects what it logs:
// flow events, counters at exit. Used by the e2e tests, the demo and bench.
import type { ChildProcess } from 'node:child_process';
import { processCpuSeconds } from './processes.js';
import { distCli, startT2cp, type LogRecord } from './t2cp-process.js';
import type { Testbed } from './testbed.js';

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
  args: {
    mirrorIf?: string; vip?: string; ports: number[]; instance: string; logFlows?: boolean; cpus?: string; extra?: string[]; wrap?: string[];
    /** The host it runs on: the backup's (default), or the primary's once it stands by in its place. */
    ns?: string;
    /** The record that says it is up; default: 'replicating'. */
    ready?: (r: LogRecord) => boolean;
  },
): Promise<BackupProcess> {
  const p = await startT2cp(tb, args.ns ?? tb.ns.backup, [
    'backup', ...(args.logFlows === false ? [] : ['--log-flows']),
    '--mirror-if', args.mirrorIf ?? tb.ifaces.mirror,
    '--vip', args.vip ?? tb.addr.vip,
    ...(args.ports.length ? ['--ports', args.ports.join(',')] : []),
    '--instance', args.instance,
    ...(args.extra ?? []),
  ], args.ready ?? ((r) => r.msg === 'replicating'), { cpus: args.cpus, wrap: args.wrap });
  const { child, records } = p;
  const countersOf = (rec: LogRecord): Record<string, number> => {
    const { t: _t, level: _l, instance: _i, msg: _m, ...counters } = rec;
    return counters as Record<string, number>;
  };
  return {
    child,
    records,
    stderr: p.stderr,
    flows: (type) => records.filter((r) => r.msg === `flow ${type}`),
    counters: async () => {
      const seen = records.length;
      child.kill('SIGUSR1');
      return countersOf(await p.waitForRecord((r) => r.msg === 'counters', 'counters after SIGUSR1', 5_000, seen));
    },
    cpuSeconds: () => processCpuSeconds(child.pid!),
    async stop() {
      await p.stop();
      const stopped = [...records].reverse().find((r) => r.msg === 'stopped');
      return stopped ? countersOf(stopped) : {};
    },
  };
}
