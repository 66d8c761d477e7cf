// A CPU quota for some of a test's processes — a backup host slower than the
// primary's: a cgroup of their own under the cpu controller (cgroup v2's
// cpu.max, or v1's CFS quota where the cpu hierarchy is mounted apart),
// named with the testbed's per-run prefix. release() moves any process still
// in it back to the root and removes it; call it before the testbed's
// teardown, also on failure.
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';

const ROOT = '/sys/fs/cgroup';
const PERIOD_US = 100_000;

export interface CpuQuota {
  dir: string;
  release(): void;
}

/** Where cgroups with a CPU quota go: cgroup v2's unified tree, or v1's cpu hierarchy. */
function hierarchy(): { root: string; v2: boolean } {
  if (existsSync(`${ROOT}/cgroup.controllers`)) {
    if (!readFileSync(`${ROOT}/cgroup.controllers`, 'utf8').split(/\s+/).includes('cpu'))
      throw new Error(`cpu quota: cgroup v2 at ${ROOT} has no cpu controller`);
    if (!readFileSync(`${ROOT}/cgroup.subtree_control`, 'utf8').split(/\s+/).includes('cpu'))
      writeFileSync(`${ROOT}/cgroup.subtree_control`, '+cpu');
    return { root: ROOT, v2: true };
  }
  if (existsSync(`${ROOT}/cpu/cpu.cfs_quota_us`)) return { root: `${ROOT}/cpu`, v2: false };
  throw new Error(`cpu quota: neither cgroup v2 nor a v1 cpu hierarchy under ${ROOT}`);
}

/** Limits `pids` (whole processes) to `percent` of one CPU. */
export function limitCpu(name: string, pids: number[], percent: number): CpuQuota {
  if (!(percent > 0 && percent <= 100)) throw new Error(`cpu quota: ${percent}% is not within (0, 100]`);
  const { root, v2 } = hierarchy();
  const dir = `${root}/${name}`;
  mkdirSync(dir);
  const quota = Math.round(PERIOD_US * percent / 100);
  if (v2) {
    writeFileSync(`${dir}/cpu.max`, `${quota} ${PERIOD_US}`);
  } else {
    writeFileSync(`${dir}/cpu.cfs_period_us`, String(PERIOD_US));
    writeFileSync(`${dir}/cpu.cfs_quota_us`, String(quota));
  }
  for (const pid of pids) writeFileSync(`${dir}/cgroup.procs`, String(pid));
  return {
    dir,
    release() {
      if (!existsSync(dir)) return;
      for (const pid of readFileSync(`${dir}/cgroup.procs`, 'utf8').split('\n').filter(Boolean)) {
        try {
          writeFileSync(`${root}/cgroup.procs`, pid);
        } catch {
          // exited meanwhile
        }
      }
      rmdirSync(dir);
    },
  };
}
