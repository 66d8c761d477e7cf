// The papers' VoIP use case (000_…: AR + FT-FW) with Debian's own software:
// Kamailio as a stateful SIP proxy and registrar (record-routing, users in
// memory), the same configuration on the primary and the backup, over UDP
// (--udp-ports 5060); SIPp as caller and callee. The callee registers; calls
// are set up through the VIP; the primary's link goes down in the middle of
// the calls; their re-INVITEs, ACKs and BYEs, and new calls, are answered by
// the backup's Kamailio, which got every datagram the primary's got
// (registrations included). No TCP at all: every role runs with --udp-ports
// only, and the primary's agent counts the service up while Kamailio is bound.
// SIPp must report every call successful; the SIP retransmissions it counted
// say how long signalling stalled.
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { collect, repoRoot, waitForExit } from '../../scripts/processes.js';
import { startTakeoverLab } from '../../scripts/takeover-lab.js';
import type { Testbed } from '../../scripts/testbed.js';
import { waitFor } from '../../scripts/wait.js';
import { readLog } from './harness.js';
import { kernelLeftovers } from './leftovers.js';
import { useLab } from './lab.js';

const INSTANCE = 'sip';
const SIP = 5060;
const CALLEE_PORT = 5070;
const KAMAILIO = '/usr/sbin/kamailio';
const SIPP = '/usr/bin/sipp';
const SIP_DIR = path.join(repoRoot, 'test', 'e2e', 'sip');
const HOLD_MS = 2000;

/** Kamailio's module folder (multiarch), or an error naming the package. */
function kamailioModules(): string {
  for (const base of ['/usr/lib', ...fs.readdirSync('/usr/lib').map((d) => path.join('/usr/lib', d))]) {
    const dir = path.join(base, 'kamailio', 'modules');
    if (fs.existsSync(path.join(dir, 'tm.so'))) return dir;
  }
  throw new Error('kamailio modules not found under /usr/lib/*/kamailio/modules (scripts/setup.sh installs the `kamailio` package)');
}

/**
 * Kamailio in `ns` on the VIP, from test/e2e/sip/kamailio.cfg; resolved once it listens. On the
 * backup it starts before t2cp makes the VIP local: it binds it as a non-local address
 * (net.ipv4.ip_nonlocal_bind, as the README says).
 */
async function startKamailio(tb: Testbed, ns: string, dir: string, name: string): Promise<ChildProcess> {
  if (ns === tb.ns.backup) await tb.exec(ns, ['sysctl', '-qw', 'net.ipv4.ip_nonlocal_bind=1']);
  const cfg = fs.readFileSync(path.join(SIP_DIR, 'kamailio.cfg'), 'utf8').replaceAll('__VIP__', tb.addr.vip).replaceAll('__MPATH__', kamailioModules());
  const file = path.join(dir, `kamailio-${name}.cfg`);
  const run = path.join(dir, `kamailio-${name}`);
  fs.mkdirSync(run, { recursive: true });
  fs.writeFileSync(file, cfg);
  const child = tb.spawn(ns, [KAMAILIO, '-f', file, '-DD', '-E', '-Y', run, '-w', run]);
  const out = collect(child);
  await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`kamailio (${name}) exited ${child.exitCode}: ${out.stderr.slice(-2000)}`);
    const r = await tb.exec(ns, ['ss', '-Hulpn', `sport = :${SIP}`]);
    return r.stdout.includes('kamailio');
  }, { timeoutMs: 15_000, what: `kamailio listening on the ${name}` });
  return child;
}

/** SIPp in the client's namespace with a scenario of test/e2e/sip/ (__HOLD_MS__ filled in); resolves with its exit and statistics. */
function sipp(tb: Testbed, dir: string, name: string, scenario: string, args: string[]): { child: ChildProcess; done: Promise<{ code: number | null; stat: string; out: string }> } {
  const xml = fs.readFileSync(path.join(SIP_DIR, scenario), 'utf8').replaceAll('__HOLD_MS__', String(HOLD_MS));
  const file = path.join(dir, `${name}-${scenario}`);
  fs.writeFileSync(file, xml);
  const stat = path.join(dir, `${name}-stat.csv`);
  const child = tb.spawn(tb.ns.client, [SIPP, ...args, '-sf', file, '-nostdin', '-trace_stat', '-stf', stat, '-fd', '1', '-trace_err',
    '-error_file', path.join(dir, `${name}-errors.log`), '-timeout', '60s']);
  const out = collect(child);
  return {
    child,
    done: waitForExit(child, 70_000).then((code) => ({ code, stat: fs.existsSync(stat) ? fs.readFileSync(stat, 'utf8') : '', out: out.stdout + out.stderr })),
  };
}

/** The last row of SIPp's statistics file, by column name. */
function lastStats(csv: string): Record<string, string> {
  const rows = csv.trim().split('\n').map((l) => l.split(';'));
  const [head, last] = [rows[0] ?? [], rows[rows.length - 1] ?? []];
  return Object.fromEntries(head.map((h, i) => [h, last[i] ?? '']));
}

describe('sip: a Kamailio proxy over UDP, its primary dying in the middle of the calls', () => {
  const lab = useLab('sip', { testbed: { clientAddrs: 2 } });

  it('every call SIPp makes succeeds: in-dialog requests and new calls answered by the backup', async () => {
    const { tb, dir } = lab;
    for (const bin of [KAMAILIO, SIPP]) if (!fs.existsSync(bin)) throw new Error(`${bin} not found (scripts/setup.sh installs the kamailio and sip-tester packages)`);
    const [caller, callee] = tb.addr.clients as [string, string];
    // A UDP service alone: every role with --udp-ports only; the agent counts Kamailio up while it is bound.
    const pair = await startTakeoverLab(tb, dir, {
      ports: [], udpPorts: [SIP], instance: INSTANCE,
      service: async (ns, side, log) => ({ child: await startKamailio(tb, ns, dir, side), log }),
    });
    const calls = 10;
    try {
      const reg = sipp(tb, dir, 'register', 'register.xml', [`${tb.addr.vip}:${SIP}`, '-s', 'bob', '-set', 'contact', `${callee}:${CALLEE_PORT}`,
        '-i', callee, '-p', '5071', '-m', '1']);
      expect((await reg.done).code, (await reg.done).out).toBe(0);
      const uas = sipp(tb, dir, 'callee', 'uas.xml', ['-i', callee, '-p', String(CALLEE_PORT), '-m', String(calls + 5)]);
      const uac = sipp(tb, dir, 'caller', 'uac.xml', [`${tb.addr.vip}:${SIP}`, '-s', 'bob', '-i', caller, '-p', '5062',
        '-m', String(calls), '-l', String(calls), '-r', '10']);
      // The calls are up (their first ACK sent), their re-INVITEs still to come: the primary dies.
      await new Promise((r) => setTimeout(r, HOLD_MS / 2 + 1000));
      await pair.fail('link-down');
      await waitFor(() => readLog(pair.logs.backupReport)[0], { timeoutMs: 15_000, what: 'the takeover' });
      // New calls once the backup serves: the callee's registration is in its Kamailio too.
      const after = sipp(tb, dir, 'after', 'uac.xml', [`${tb.addr.vip}:${SIP}`, '-s', 'bob', '-i', caller, '-p', '5064', '-m', '5', '-l', '5', '-r', '10']);
      const [first, second, calleeRun] = [await uac.done, await after.done, await uas.done];
      const [s1, s2, s3] = [lastStats(first.stat), lastStats(second.stat), lastStats(calleeRun.stat)];
      const counters = await pair.backup.counters();
      console.log(`sip: calls during the failure ${s1['SuccessfulCall(C)']}/${s1.TotalCallCreated} successful, retransmissions ${s1['Retransmissions(C)']}; ` +
        `calls after it ${s2['SuccessfulCall(C)']}/${s2.TotalCallCreated}, retransmissions ${s2['Retransmissions(C)']}; ` +
        `callee: exit ${calleeRun.code}, retransmissions ${s3['Retransmissions(C)']}; mean call length ${s1['CallLength(C)']} (nominal ${2 * HOLD_MS} ms); ` +
        `backup: udp datagrams ${counters.udp_datagrams}, associations ${counters.udp_associations_new}, replica's dropped ${counters.udp_replica_datagrams}`);
      expect(first.code, first.out.slice(-3000)).toBe(0);
      expect(second.code, second.out.slice(-3000)).toBe(0);
      expect(Number(s1['SuccessfulCall(C)'])).toBe(calls);
      expect(Number(s2['SuccessfulCall(C)'])).toBe(5);
      expect(Number(s1['FailedCall(C)'])).toBe(0);
    } finally {
      await pair.stop();
    }
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  }, 120_000);
});
