// Pacemaker as the source of truth: a real two-node cluster (corosync + pacemakerd in the
// primary's and the backup's namespaces), the t2cp resource agent (scripts/ocf/t2cp) as a
// promotable clone, a ping clone to the gateway. The primary's link goes down: corosync on the
// backup loses it, Pacemaker promotes the backup's instance (the agent runs `t2cp takeover`), and
// on the cut-off primary the ping fails, Pacemaker demotes its instance (`t2cp stand-down`) while
// it is still cut off. The takeover e2e's checks follow (takeover.test.ts): every protected
// connection carries on to a clean end, byte-exact, no reset, the old primary never answers again
// (the cluster took the VIP off it; it comes back fenced and stays unpromoted), nothing left behind
// once the cluster stopped.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { failPrimary, markPrimaryReplies, restorePrimary } from '../../scripts/failures.js';
import { NODE_NAMES, startPacemakerLab, T2CP_AGENT, t2cpAgentParams, t2cpCibConfiguration, t2cpInstall } from '../../scripts/pacemaker-lab.js';
import { ensurePacemaker, initialCib, runWithAgents } from '../../scripts/pacemaker.js';
import { startClient } from '../../scripts/processes.js';
import { answeredByOne, compareTakeover } from '../../scripts/takeover-check.js';
import { waitFor } from '../../scripts/wait.js';
import { readLog, readPackets, startCapture, type ClientLogLine, type ServiceLogLine } from './harness.js';
import { kernelLeftovers, t2cpTables } from './leftovers.js';
import { useLab } from './lab.js';
import { mixedWorkload } from './takeover-scenarios.js';

const INSTANCE = 'pcmk';
const PORT = 7000;

interface EngineRecord { trigger: { source: string; reason: string }; engine: { flowsTakenOver: number; flowsLost: number; steps: Array<{ name: string; us?: number }> } }
interface DaemonLine { t: string; msg?: string; [k: string]: unknown }

/** A daemon's JSON lines; the resource agent appends the output of the commands it runs (text) to the same file. */
const daemonLog = (file: string): DaemonLine[] => {
  if (!fs.existsSync(file)) return [];
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.startsWith('{"t":')).map((l) => JSON.parse(l) as DaemonLine);
};

beforeAll(() => { ensurePacemaker(); }, 320_000);

describe('Pacemaker decides the takeover (t2cp resource agent)', () => {
  const lab = useLab('pacemaker');

  const vipsOn = async (ns: string): Promise<string[]> =>
    (await lab.tb.exec(ns, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'e0'])).stdout.split('\n')
      .map((l) => /inet (\S+)/.exec(l)?.[1]).filter((a): a is string => !!a && a.startsWith(`${lab.tb.addr.vip}/`));

  it('the primary loses its link: Pacemaker promotes the backup, demotes the cut-off primary, every connection carries on byte-exact', { timeout: 240_000 }, async () => {
    const { tb, dir } = lab;
    await markPrimaryReplies(tb);
    const t0 = Date.now();
    const pcmk = await startPacemakerLab(tb, dir, { ports: [PORT], instance: INSTANCE });
    console.log(`Pacemaker cluster up, t2cp promoted on the primary, backup replicating: ${Date.now() - t0} ms`);

    const atClient = await startCapture(tb, tb.ns.client, 'c0', `tcp and src host ${tb.addr.vip}`, `${dir}/client.pcap`);
    const client = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, mixedWorkload, `${dir}/client.jsonl`, { deadlineMs: 90_000 });
    const sessions = mixedWorkload.sessions.reduce((n, s) => n + (s.times ?? 1), 0);
    await waitFor(() => daemonLog(pcmk.logs.backupDaemon).filter((l) => l.msg === 'flow synchronised').length >= sessions,
      { timeoutMs: 15_000, what: 'every session replicated' });
    await new Promise((r) => setTimeout(r, 800));

    const failedAt = await failPrimary(tb, 'link-down');
    const record = await waitFor(() => readLog<EngineRecord>(pcmk.logs.backupReport)[0], { timeoutMs: 30_000, what: 'the backup\'s takeover record' });
    const tookOverMs = Date.now() - failedAt;
    // Cut off, the primary's ping fails and Pacemaker (its own partition) demotes it: it stands down before it is back.
    await waitFor(async () => (await pcmk.roleStatus('primary'))?.state === 'stood-down', { timeoutMs: 20_000, what: 'the cut-off primary to stand down' });
    const stoodDownMs = Date.now() - failedAt;
    const cutOff = await pcmk.nodes.primary.status();
    await restorePrimary(tb, 'link-down');
    // Back in one cluster: the backup stays promoted, the old primary unpromoted (and not promotable).
    const merged = await waitFor(async () => {
      const s = await pcmk.nodes.backup.status();
      return s.online.length === 2 && s.roles.t2cp?.[NODE_NAMES.backup] === 'Promoted' && s.roles.t2cp?.[NODE_NAMES.primary] === 'Unpromoted' && s;
    }, { timeoutMs: 30_000, intervalMs: 250, what: 'the cluster merged: t2cp promoted on the backup, unpromoted on the old primary' });
    expect((await pcmk.roleStatus('primary'))?.state).toBe('stood-down');
    expect((await pcmk.roleStatus('backup'))?.state).toBe('active');
    // No failback: the old primary's promotion score bars it, the backup's outranks anyone's.
    const score = async (node: string): Promise<string> => (await pcmk.nodes.backup.exec(
      ['crm_attribute', '--node', node, '--name', 'master-t2cp', '--lifetime', 'reboot', '--query', '--quiet'])).stdout.trim();
    expect(await score(NODE_NAMES.primary)).toBe('-INFINITY');
    expect(await score(NODE_NAMES.backup)).toBe('1000');
    // The cluster took the VIP off the old primary before demoting it; t2cp put it on the backup.
    expect(await vipsOn(tb.ns.primary)).toEqual([]);
    expect(await vipsOn(tb.ns.backup)).toEqual([`${tb.addr.vip}/32`]);

    const run = await client.finished;
    await atClient.stop();
    const begin = daemonLog(pcmk.logs.backupDaemon).find((l) => l.msg === 'takeover: begin');
    const rrPauses = readLog<ClientLogLine>(`${dir}/client.jsonl`).filter((l) => l.kind === 'rr').map((l) => l.maxGapMs ?? 0).sort((a, b) => a - b);
    console.log(`Pacemaker takeover: begun ${begin ? Date.parse(String(begin.t)) - failedAt : '?'} ms after the link went down `
      + `(record read after ${tookOverMs} ms), the cut-off primary stood down after ${stoodDownMs} ms; `
      + `steps ${record.engine.steps.map((x) => `${x.name} ${x.us ?? '?'} µs`).join(', ')}; rr sessions' longest pause, ms: ${rrPauses.join(' ')}; `
      + `cut-off primary saw ${JSON.stringify(cutOff.roles.t2cp)}, merged ${JSON.stringify(merged.roles.t2cp)}`);
    // Still as it was after the merge, and nothing flapped meanwhile: one promote of the backup, one takeover, no demote of it.
    expect((await pcmk.nodes.primary.status()).roles.t2cp).toEqual({ [NODE_NAMES.backup]: 'Promoted', [NODE_NAMES.primary]: 'Unpromoted' });
    const clusterLog = pcmk.nodes.primary.log() + pcmk.nodes.backup.log();
    expect(clusterLog.match(/Result of promote operation for t2cp on backup: ok/g)).toHaveLength(1);
    expect(clusterLog).not.toMatch(/demote operation for t2cp on backup|promote operation for t2cp on primary: error/);
    expect(daemonLog(pcmk.logs.backupDaemon).filter((l) => l.msg === 'takeover: begin')).toHaveLength(1);
    const stopped = await pcmk.stop();
    expect(stopped).toEqual({ primary: 0, backup: 0 });

    // The takeover e2e's checks; first what the backup reported of flows it could not protect, if any.
    const unprotected = daemonLog(pcmk.logs.backupDaemon).filter((l) => /unprotected|anomaly/.test(String(l.msg)));
    expect(unprotected.map((l) => `${l.msg} ${String(l.reason)} ${String(l.flow ?? l.client ?? '')}`)).toEqual([]);
    const clientLog = readLog<ClientLogLine>(`${dir}/client.jsonl`);
    const check = compareTakeover(clientLog, readLog<ServiceLogLine>(pcmk.logs.backup));
    expect(check.mismatches).toEqual([]);
    expect(run.code, run.stderr).toBe(0);
    expect(check.exact).toBe(sessions);
    expect(record.engine.flowsTakenOver).toBe(sessions);
    expect(record.engine.flowsLost).toBe(0);
    expect(record.trigger).toMatchObject({ source: 'pacemaker', reason: `pacemaker: promoted on ${NODE_NAMES.backup}` });
    // Pacemaker did it: the demote of the cut-off primary, by the resource agent (its own partition decided).
    expect(pcmk.nodes.primary.log()).toMatch(/Result of demote operation for t2cp on primary: ok/);
    expect(daemonLog(pcmk.logs.primaryDaemon).some((l) => String(l.msg).startsWith('fenced'))).toBe(true);

    // No reset reached a client; once the backup's first segment reached the client, none of the primary's.
    expect(await readPackets(`${dir}/client.pcap`, 'tcp[tcpflags] & tcp-rst != 0')).toEqual([]);
    const answered = await answeredByOne(`${dir}/client.pcap`);
    expect(answered.fromBackup).toBeGreaterThan(0);
    expect(answered.lateFromPrimary).toEqual([]);

    // Nothing left behind: the cluster stopped its resources and itself; no VIP anywhere.
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
    for (const ns of [tb.ns.primary, tb.ns.backup]) {
      expect(await t2cpTables(tb, ns)).toEqual([]);
      expect(await vipsOn(ns), `the VIP in ${ns}`).toEqual([]);
      const left = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number)
        .filter((pid) => ![pcmk.services.primary.pid, pcmk.services.backup.pid].includes(pid));
      expect(left, `processes left in ${ns}`).toEqual([]);
    }
  });
});

describe('Pacemaker\'s own tooling on the resource agent and the configuration', () => {
  const lab = useLab('pacemaker-tools');

  it('crm_verify takes the configuration; crm_resource reads the meta-data and runs validate-all on the testbed\'s backup host', async () => {
    const { tb, dir } = lab;
    const { t2cp, keyFile } = t2cpInstall(dir);
    const p = {
      primaryNode: NODE_NAMES.primary, backupNode: NODE_NAMES.backup, primaryVipIf: 'e0', keyFile, vip: tb.addr.vip, ports: [PORT],
      mirrorIf: tb.ifaces.mirror, vipIf: tb.ifaces.backupLan, t2cp, instance: INSTANCE, logDir: dir, primaryOptions: '', backupOptions: '',
      gateway: tb.addr.gatewayLan, monitorS: [10, 11] as [number, number],
    };
    fs.writeFileSync(`${dir}/cib.xml`, initialCib(t2cpCibConfiguration(p)));
    const verify = await tb.exec(tb.ns.backup, ['crm_verify', '--xml-file', `${dir}/cib.xml`, '-V']);
    expect(verify.code, verify.stderr).toBe(0);
    expect(verify.stderr).not.toMatch(/error/i);

    const agents = { t2cp: { t2cp: T2CP_AGENT } };
    const meta = await runWithAgents(tb, tb.ns.backup, dir, agents, ['crm_resource', '--show-metadata', 'ocf:t2cp:t2cp']);
    expect(meta.code, meta.stderr).toBe(0);
    for (const param of Object.keys(t2cpAgentParams(p))) expect(meta.stdout).toContain(`<parameter name="${param}"`);
    expect(meta.stdout).toMatch(/<action name="promote"/);

    // crm_resource --validate maps the agent's exit code to its own: 0 ok, 5 not installed, 6 not configured.
    const validate = (params: Record<string, string>) => runWithAgents(tb, tb.ns.backup, dir, agents,
      ['crm_resource', '--validate', '--class', 'ocf', '--provider', 't2cp', '--agent', 't2cp', ...Object.entries(params).filter(([, v]) => v !== '').flatMap(([k, v]) => ['--option', `${k}=${v}`])]);
    const good = t2cpAgentParams(p);
    const ok = await validate(good);
    expect(ok.code, `${ok.stdout}${ok.stderr}`).toBe(0);
    const { primary_node: _unused, ...noPrimary } = good;
    const unconfigured = await validate(noPrimary);
    expect(unconfigured.code).toBe(6);
    expect(unconfigured.stdout + unconfigured.stderr).toMatch(/parameter primary_node is required/);
    const noMirror = await validate({ ...good, mirror_if: 'nosuch0' });
    expect(noMirror.code).toBe(5);
    expect(noMirror.stdout + noMirror.stderr).toMatch(/interface nosuch0 \(mirror_if\) does not exist/);
    const withDetector = await validate({ ...good, backup_options: '--detector 198.18.1.1' });
    expect(withDetector.code).toBe(6);
    expect(withDetector.stdout + withDetector.stderr).toMatch(/no --detector/);
  });
});
