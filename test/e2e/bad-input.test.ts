// What `t2cp backup` does with a wrong setup, as an operator meets it: one
// line on stderr that names the problem and the fix with its [CODE], exit 2
// for a wrong option and 1 otherwise, and nothing installed in the kernel.
// Also: a second instance never disturbs a running one, and a crash (SIGKILL)
// leaves nothing behind, restarts cleanly and does not disturb the primary.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor, type ExecResult, type Testbed } from '../../scripts/testbed.js';
import { startBackup, type BackupProcess } from '../../scripts/backup-process.js';
import type { ErrorCode } from '../../src/errors.js';
import { runClient, startService, waitForExit, type Workload } from './harness.js';
import { kernelLeftovers } from './leftovers.js';
import { useLab } from './lab.js';
import { flagsToArgv, linkNames, nftTables, runBackupCli, validBackupArgs } from './cli-run.js';

const PORT = 7000;
/** A second service address (unused by the testbed) for instances that must get past the VIP check. */
const OTHER_VIP = '198.18.1.11';
/** The kernel drops owner tables, the queue binding and the TUN when the descriptors close, in ms. */
const CRASH_CLEANUP_MS = 3_000;

interface Refusal { exit: 1 | 2; code: ErrorCode; says: RegExp[] }

/** One line `t2cp: <message> [<CODE>]`, the right exit code, and the words a reader needs. */
function expectRefused(r: ExecResult, want: Refusal): void {
  expect(r.code, `exit code; stderr: ${r.stderr}`).toBe(want.exit);
  expect(r.stderr, 'stderr is exactly one line').toMatch(/^t2cp: [^\n]+ \[T2CP_[A-Z_]+\]\n$/);
  expect(r.stderr).toContain(` [${want.code}]\n`);
  for (const re of want.says) expect(r.stderr).toMatch(re);
}

async function expectNothingLeft(tb: Testbed, instance: string): Promise<void> {
  expect(await kernelLeftovers(tb, instance)).toEqual([]);
}

/** Option errors, as data: the arguments (from a valid start) and what the one line must say. */
const optionErrors: { name: string; change: (flags: Record<string, string>) => string[]; says: RegExp[] }[] = [
  { name: 'an empty port list', change: (f) => flagsToArgv({ ...f, '--ports': '' }),
    says: [/--ports/, /empty/, /e\.g\. --ports \d+/] },
  { name: 'a port out of range', change: (f) => flagsToArgv({ ...f, '--ports': '7000,99999' }),
    says: [/--ports/, /'99999'/, /1-65535/] },
  { name: 'an unknown option', change: (f) => [...flagsToArgv(f), '--mirror-iface', 'm0'],
    says: [/unknown option '--mirror-iface'/, /t2cp backup --help/] },
  { name: 'an unknown active mode', change: (f) => [...flagsToArgv(f), '--active-mode', 'fast'],
    says: [/--active-mode/, /'fast'/, /auto, kernel, queue/] },
  { name: 'a missing required option', change: (f) => { const { '--vip': _vip, ...rest } = f; return flagsToArgv(rest); },
    says: [/missing --vip/, /ADDR/] },
];

describe('bad input: a clear one-line error and nothing installed', () => {
  // The same service on the primary and on the backup (its replica), for the
  // cases where a running instance must keep replicating.
  const lab = useLab('bad-input', {
    setup: async ({ tb, dir }) => {
      await startService(tb, tb.ns.primary, [PORT], `${dir}/primary.jsonl`);
      await startService(tb, tb.ns.backup, [PORT], `${dir}/replica.jsonl`);
    },
  });
  let tb: Testbed;
  let dir: string;
  beforeAll(() => ({ tb, dir } = lab)); // runs after the lab's own hook

  /** A few short sessions through the VIP; resolves when the client finished. */
  const workload = (sessions: number, count: number, intervalMs: number): Workload => ({
    seed: 7, sessions: [{ kind: 'rr', times: sessions, count, intervalMs, reqSize: [1, 2000], respSize: [1, 8000] }],
  });
  const runWorkload = (w: Workload, log: string) => runClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, w, `${dir}/${log}`, { deadlineMs: 20_000 });

  it('without CAP_NET_ADMIN and CAP_NET_RAW it refuses with T2CP_PERMISSION before touching the kernel', async () => {
    const instance = 'perm';
    const r = await runBackupCli(tb, flagsToArgv(validBackupArgs(tb, instance)),
      ['setpriv', '--bounding-set=-all', '--inh-caps=-all']);
    expectRefused(r, { exit: 1, code: 'T2CP_PERMISSION', says: [/needs CAP_NET_ADMIN and CAP_NET_RAW/, /run it as root/] });
    await expectNothingLeft(tb, instance);
  });

  /** A control key for the backup (takeover on: the active-mode translator is attached at start). */
  const controlKey = async (): Promise<string> => {
    const keyFile = `${dir}/control.key`;
    await tb.exec(tb.ns.backup, ['sh', '-c', `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > ${keyFile}; chmod 600 ${keyFile}`]);
    return keyFile;
  };
  const withTakeover = async (): Promise<string[]> => ['--key-file', await controlKey(), '--vip-if', tb.ifaces.backupLan];

  it('with takeover on, a --vip-if that does not exist is refused at start, not at the takeover (T2CP_NO_INTERFACE)', async () => {
    const instance = 'novipif';
    const keyFile = await controlKey();
    const r = await runBackupCli(tb, [...flagsToArgv(validBackupArgs(tb, instance)), '--key-file', keyFile, '--vip-if', 'nosuch1']);
    expectRefused(r, { exit: 1, code: 'T2CP_NO_INTERFACE', says: [/--vip-if 'nosuch1'/, /does not exist/, /takeover/] });
    await expectNothingLeft(tb, instance);
  });

  it('a mirror interface that does not exist is named, with where to look (T2CP_NO_INTERFACE)', async () => {
    const instance = 'noif';
    // With --metrics too: a backup refused at start says nothing of serving them (one line).
    const r = await runBackupCli(tb, flagsToArgv({ ...validBackupArgs(tb, instance), '--mirror-if': 'nosuch0', '--metrics': '127.0.0.1:19391' }));
    expectRefused(r, { exit: 1, code: 'T2CP_NO_INTERFACE', says: [/'nosuch0'/, /does not exist/, /--mirror-if/, /ip link/] });
    expect(r.stdout).not.toMatch(/metrics served/);
    await expectNothingLeft(tb, instance);
  });

  it('a mirror interface that is down is refused with the command that brings it up (T2CP_CAPTURE)', async () => {
    const instance = 'down';
    const must = async (argv: string[]) => expect((await tb.exec(tb.ns.backup, argv)).code).toBe(0);
    await must(['ip', 'link', 'add', 'dn0', 'type', 'veth', 'peer', 'name', 'dn1']);
    try {
      const r = await runBackupCli(tb, flagsToArgv({ ...validBackupArgs(tb, instance), '--mirror-if': 'dn0' }));
      expectRefused(r, { exit: 1, code: 'T2CP_CAPTURE', says: [/'dn0' is down/, /ip link set dn0 up/] });
      await expectNothingLeft(tb, instance);
    } finally {
      await tb.exec(tb.ns.backup, ['ip', 'link', 'del', 'dn0']);
    }
  });

  it('the VIP already on a real interface of the backup is refused with the command that removes it (T2CP_VIP_PLACEMENT)', async () => {
    const instance = 'vip';
    const onE0 = `${tb.addr.vip}/32`;
    let r: ExecResult;
    const add = await tb.exec(tb.ns.backup, ['ip', 'addr', 'add', onE0, 'dev', tb.ifaces.backupLan]);
    expect(add.code, add.stderr).toBe(0);
    try {
      r = await runBackupCli(tb, flagsToArgv(validBackupArgs(tb, instance)));
    } finally {
      await tb.exec(tb.ns.backup, ['ip', 'addr', 'del', onE0, 'dev', tb.ifaces.backupLan]);
    }
    expectRefused(r, { exit: 1, code: 'T2CP_VIP_PLACEMENT',
      says: [new RegExp(`VIP ${tb.addr.vip.replaceAll('.', '\\.')}`), /\be0\b/, new RegExp(`ip addr del ${tb.addr.vip.replaceAll('.', '\\.')}/32 dev e0`)] });
    await expectNothingLeft(tb, instance);
  });

  for (const c of optionErrors) {
    it(`${c.name} is an option error naming the option (exit 2, T2CP_CONFIG)`, async () => {
      const instance = 'opt';
      const r = await runBackupCli(tb, c.change(validBackupArgs(tb, instance)));
      expectRefused(r, { exit: 2, code: 'T2CP_CONFIG', says: c.says });
      await expectNothingLeft(tb, instance);
    });
  }

  // Without CAP_BPF (and CAP_SYS_ADMIN) the kernel refuses to load the active-mode translator.
  const noBpf = ['setpriv', '--bounding-set=-bpf,-sys_admin'];

  it('without BPF, --active-mode kernel is refused at start with the way out (T2CP_KERNEL_FEATURE)', async () => {
    const instance = 'nobpf';
    const r = await runBackupCli(tb, [...flagsToArgv(validBackupArgs(tb, instance)), ...await withTakeover(), '--active-mode', 'kernel'], noBpf);
    expectRefused(r, { exit: 1, code: 'T2CP_KERNEL_FEATURE', says: [/active-mode translator/, /CAP_BPF/, /--active-mode queue/] });
    await expectNothingLeft(tb, instance);
  });

  it('without BPF, --active-mode auto replicates and says the queue will translate after a takeover', async () => {
    const instance = 'autoq';
    const b = await startBackup(tb, { ports: [PORT], instance, extra: await withTakeover(), wrap: noBpf });
    try {
      expect(b.records.find((r) => r.msg === 'replicating')?.afterTakeover).toBe('queue');
      expect(b.records.some((r) => /the kernel cannot translate/.test(r.msg) && /CAP_BPF/.test(String(r.why)))).toBe(true);
      const run = await runWorkload(workload(2, 3, 0), 'autoq.jsonl');
      expect(run.code, run.stderr).toBe(0);
      await waitFor(() => b.flows('closed').length >= 2, { timeoutMs: 10_000, what: 'both sessions replicated and closed' });
    } finally {
      await b.stop();
    }
    expect(b.child.exitCode).toBe(0);
    await expectNothingLeft(tb, instance);
  });

  it('a kernel without TUN is refused with `modprobe tun` (T2CP_KERNEL_FEATURE)', async () => {
    const instance = 'notun';
    // A tmpfs over /dev/net in a private mount namespace hides /dev/net/tun
    // from this one process only; the host's /dev is untouched.
    const r = await runBackupCli(tb, flagsToArgv(validBackupArgs(tb, instance)),
      ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs none /dev/net && exec "$@"', 'sh']);
    expectRefused(r, { exit: 1, code: 'T2CP_KERNEL_FEATURE', says: [/tun/, /modprobe tun/] });
    await expectNothingLeft(tb, instance);
  });

  describe('a second instance never disturbs a running one', () => {
    let first: BackupProcess;
    beforeAll(async () => { first = await startBackup(tb, { ports: [PORT], instance: 'a' }); });
    afterAll(async () => { await first?.stop(); });

    const firstStillReplicates = async (log: string): Promise<void> => {
      expect(first.child.exitCode).toBeNull();
      expect(first.child.signalCode).toBeNull();
      const tables = await nftTables(tb);
      expect(tables).toContain('ip t2cp_a');
      expect(tables).toContain('arp t2cp_a');
      expect(await linkNames(tb)).toContain('t2cp-a');
      // And it still does its job: a new connection is synchronised on the replica.
      const before = first.flows('synchronised').length;
      const run = await runWorkload(workload(1, 3, 0), log);
      expect(run.code, run.stderr).toBe(0);
      await waitFor(() => first.flows('synchronised').length > before, { timeoutMs: 5_000, what: "instance a's next synchronised flow" });
    };

    it('a second instance for the same VIP is refused as busy (T2CP_BUSY), naming the running one', async () => {
      const r = await runBackupCli(tb, flagsToArgv(validBackupArgs(tb, 'b')));
      expectRefused(r, { exit: 1, code: 'T2CP_BUSY', says: [/already replicated/, /instance 'a'/, /stop that instance/] });
      await firstStillReplicates('client-vip.jsonl');
    });

    it('the same --instance (another VIP) is refused as busy (T2CP_BUSY) and the running one keeps its tables', async () => {
      const r = await runBackupCli(tb, flagsToArgv({ ...validBackupArgs(tb, 'a'), '--vip': OTHER_VIP }));
      expectRefused(r, { exit: 1, code: 'T2CP_BUSY', says: [/t2cp_a/, /another running t2cp instance/, /another --instance/] });
      await firstStillReplicates('client-busy.jsonl');
    });

    it('another instance on the same --queue is refused (T2CP_NFQUEUE) and leaves nothing of its own', async () => {
      const r = await runBackupCli(tb, flagsToArgv({ ...validBackupArgs(tb, 'b'), '--vip': OTHER_VIP, '--queue': '7300' }));
      expectRefused(r, { exit: 1, code: 'T2CP_NFQUEUE', says: [/NFQUEUE 7300/, /another program is bound/, /--queue/] });
      expect((await nftTables(tb)).filter((t) => t.endsWith(' t2cp_b'))).toEqual([]);
      expect(await linkNames(tb)).not.toContain('t2cp-b');
      await firstStillReplicates('client-queue.jsonl');
    });

    it('stopping the running instance leaves nothing behind', async () => {
      await first.stop();
      expect(first.child.exitCode).toBe(0);
      await expectNothingLeft(tb, 'a');
      await expectNothingLeft(tb, 'b');
    });
  });

  it('a crash (SIGKILL) leaves nothing behind, and the same instance restarts cleanly', async () => {
    const instance = 'crash';
    // Takeover on: the active-mode translator's tc programs are attached too.
    const crashed = await startBackup(tb, { ports: [PORT], instance, extra: await withTakeover() });
    expect(crashed.records.find((r) => r.msg === 'replicating')?.afterTakeover).toBe('kernel');
    expect((await kernelLeftovers(tb, instance)).filter((l) => l.startsWith('tcx:'))).toEqual([`tcx: 2 program(s) on ${tb.ifaces.backupLan}`]);
    crashed.child.kill('SIGKILL');
    await waitForExit(crashed.child, 5_000);
    expect(crashed.child.signalCode).toBe('SIGKILL');
    await waitFor(async () => (await kernelLeftovers(tb, instance)).length === 0,
      { timeoutMs: CRASH_CLEANUP_MS, what: 'the kernel to drop what the killed t2cp held' });

    const again = await startBackup(tb, { ports: [PORT], instance });
    expect(again.records.filter((r) => /stale/.test(r.msg))).toEqual([]); // the kernel already removed everything
    await again.stop();
    expect(again.child.exitCode).toBe(0);
    expect(again.stderr()).toBe('');
    await expectNothingLeft(tb, instance);
  });

  it('a crash during replication does not disturb the clients of the primary', async () => {
    const instance = 'crashrun';
    const backup = await startBackup(tb, { ports: [PORT], instance });
    // ~1 s of traffic: 10 sessions of 50 requests 20 ms apart.
    let clientDone = false;
    const client = runWorkload(workload(10, 50, 20), 'client-crash.jsonl').finally(() => { clientDone = true; });
    await waitFor(() => backup.flows('synchronised').length > 0, { timeoutMs: 5_000, what: 'a synchronised flow before the crash' });
    expect(clientDone, 'the crash happens mid-workload').toBe(false);
    backup.child.kill('SIGKILL');
    await waitForExit(backup.child, 5_000);
    const run = await client;
    expect(run.code, run.stderr).toBe(0);
    await waitFor(async () => (await kernelLeftovers(tb, instance)).length === 0,
      { timeoutMs: CRASH_CLEANUP_MS, what: 'the kernel to drop what the killed t2cp held' });
  });
});
