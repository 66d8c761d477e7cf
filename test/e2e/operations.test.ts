// Watching t2cp (docs/operations.md). Prometheus metrics (--metrics): a real Prometheus (Debian's
// `prometheus`) on the gateway host scrapes the three roles — the detector on its own host, the
// agent and the backup over the LAN — every second, with the example alert rules
// (deploy/prometheus/t2cp.rules.yml) loaded; the queries an operator would write answer from its
// database: the device state, the service up, the connections replicated, then the takeover's
// steps after a forced failure. The event streams (--events, `t2cp events`) of the backup and the
// detector, followed through the same failure, and the --notify program's calls. A metrics
// address already in use is a one-line error before anything is installed.
import fs from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { collect, repoRoot, startClient } from '../../scripts/processes.js';
import { startTakeoverLab } from '../../scripts/takeover-lab.js';
import type { Testbed } from '../../scripts/testbed.js';
import { waitFor } from '../../scripts/wait.js';
import type { Workload } from '../../scripts/client.js';
import { flagsToArgv, runBackupCli, validBackupArgs } from './cli-run.js';
import { distCli } from '../../scripts/backup-process.js';
import { kernelLeftovers } from './leftovers.js';
import { useLab } from './lab.js';

const INSTANCE = 'met';
const PORT = 7000;
const PROMETHEUS = '127.0.0.1:19090';
const RULES = `${repoRoot}deploy/prometheus/t2cp.rules.yml`;

interface Sample { metric: Record<string, string>; value: [number, string] }

/** An instant query of the Prometheus on the gateway host, as `curl` asks its HTTP API. */
async function query(tb: Testbed, q: string): Promise<Sample[]> {
  const r = await tb.exec(tb.ns.gateway, ['curl', '-sf', '--get', '--data-urlencode', `query=${q}`, `http://${PROMETHEUS}/api/v1/query`]);
  if (r.code !== 0) return [];
  const body = JSON.parse(r.stdout) as { status: string; data: { result: Sample[] } };
  return body.status === 'success' ? body.data.result : [];
}

/** The single value of a query, or undefined while Prometheus has none. */
async function value(tb: Testbed, q: string): Promise<number | undefined> {
  const [s] = await query(tb, q);
  return s ? Number(s.value[1]) : undefined;
}

async function startPrometheus(tb: Testbed, dir: string, targets: Record<string, string>): Promise<ChildProcess> {
  const config = [
    'global: { scrape_interval: 1s, evaluation_interval: 1s }',
    `rule_files: [ '${RULES}' ]`,
    'scrape_configs:',
    ...Object.entries(targets).map(([role, target]) => `  - { job_name: ${role}, static_configs: [ { targets: [ '${target}' ] } ] }`),
  ].join('\n');
  fs.writeFileSync(`${dir}/prometheus.yml`, config + '\n');
  const child = tb.spawn(tb.ns.gateway, ['prometheus', `--config.file=${dir}/prometheus.yml`, `--storage.tsdb.path=${dir}/prometheus`,
    `--web.listen-address=${PROMETHEUS}`, '--log.level=warn']);
  const out = collect(child);
  await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`prometheus exited ${child.exitCode}: ${out.stderr.slice(-2000)}`);
    return (await tb.exec(tb.ns.gateway, ['curl', '-sf', `http://${PROMETHEUS}/-/ready`])).code === 0;
  }, { timeoutMs: 20_000, what: 'prometheus ready' });
  return child;
}

describe('metrics: Prometheus scrapes the three roles', () => {
  const lab = useLab('metrics');

  it('a metrics address in use is a one-line error, and nothing is installed', async () => {
    const { tb } = lab;
    const holder = tb.spawn(tb.ns.backup, ['python3', '-c',
      'import socket,time\ns=socket.socket()\ns.bind(("127.0.0.1",19465))\ns.listen()\nprint("ready",flush=True)\ntime.sleep(30)']);
    const out = collect(holder);
    try {
      await waitFor(() => out.stdout.includes('ready'), { timeoutMs: 5_000, what: 'the port held' });
      const r = await runBackupCli(tb, flagsToArgv({ ...validBackupArgs(tb, INSTANCE), '--metrics': '127.0.0.1:19465' }));
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/--metrics 127\.0\.0\.1:19465: address in use: give another --metrics ADDR:PORT/);
      expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
    } finally {
      holder.kill('SIGTERM');
    }
  });

  it('answers what an operator asks, before and after a takeover; the events and notifications say it too', async () => {
    const { tb, dir } = lab;
    const targets = { gateway: '127.0.0.1:9466', primary: `${tb.addr.primary}:9467`, backup: `${tb.addr.backup}:9465` };
    const notify = `${dir}/notify.sh`;
    fs.writeFileSync(notify, `#!/bin/sh\necho "$@" >> ${dir}/notify.log\n`, { mode: 0o755 });
    const sockets = { backup: `${dir}/backup.events`, gateway: `${dir}/gateway.events` };
    // Prometheus first: its start takes the CPUs for a moment, which at 10 ms heartbeats can look like
    // a dead primary. Relaxed heartbeats too: the failure here is forced, its timing not measured.
    const prometheus = await startPrometheus(tb, dir, targets);
    const pair = await startTakeoverLab(tb, dir, {
      ports: [PORT], instance: INSTANCE, intervalMs: 50, hardMisses: 4,
      gatewayArgs: ['--metrics', targets.gateway, '--events', sockets.gateway, '--notify', notify],
      agentArgs: ['--metrics', targets.primary, '--notify', notify],
      backupArgs: ['--metrics', targets.backup, '--events', sockets.backup, '--notify', notify],
    });
    const followers: ChildProcess[] = [];
    const follow = (ns: string, socket: string, level: string) => {
      const child = tb.spawn(ns, ['node', distCli(), 'events', '--socket', socket, '--level', level]);
      followers.push(child);
      const out = collect(child);
      return () => out.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    };
    try {
      const backupWeak = follow(tb.ns.backup, sockets.backup, 'weak');
      const backupStrong = follow(tb.ns.backup, sockets.backup, 'strong');
      const gatewayWeak = follow(tb.ns.gateway, sockets.gateway, 'weak');
      const gatewayDigest = follow(tb.ns.gateway, sockets.gateway, 'incremental');
      await waitFor(() => [backupWeak, backupStrong, gatewayWeak, gatewayDigest].every((f) => f().some((l) => l.type === 'subscribed')),
        { timeoutMs: 10_000, what: 'four event followers subscribed' });
      await waitFor(async () => (await value(tb, 'sum(up)')) === 3, { timeoutMs: 20_000, what: 'the three targets up' });
      const workload: Workload = { seed: 7, sessions: [{ kind: 'rr', times: 4, count: 300, intervalMs: 10, reqSize: [4, 400], respSize: [1, 2000] }] };
      const client = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORT}`, workload, `${dir}/client.jsonl`, { deadlineMs: 60_000 });
      await waitFor(async () => (await value(tb, 't2cp_flows_synchronised_total{job="backup"}')) === 4, { timeoutMs: 20_000, what: 'four connections replicated, in Prometheus' });
      expect(await value(tb, 't2cp_device_state{job="gateway",state="PRIMARY_ACTIVE"}')).toBe(1);
      expect(await value(tb, 't2cp_service_up{job="primary"}')).toBe(1);
      expect(await value(tb, 't2cp_primary_state{job="primary",state="serving"}')).toBe(1);
      expect(await value(tb, 't2cp_backup_state{job="backup",state="standby"}')).toBe(1);
      await waitFor(async () => (await value(tb, 't2cp_open_connections{job="backup",protection="protected"}')) === 4,
        { timeoutMs: 10_000, what: 'the open connections counted protected' });
      expect(await value(tb, 't2cp_protected{job="gateway"}')).toBe(1);
      // 50 ms heartbeats: about 20 a second, as Prometheus computes it from two scrapes or more.
      await waitFor(async () => ((await value(tb, 'rate(t2cp_heartbeats_total{job="gateway"}[5s])')) ?? 0) > 10, { timeoutMs: 10_000, what: 'the heartbeat rate' });
      // Every counter has its _total series; the alert rules loaded and evaluate.
      expect((await query(tb, '{__name__=~"t2cp_.*_total",job="backup"}')).length).toBeGreaterThan(50);
      const rules = await tb.exec(tb.ns.gateway, ['curl', '-sf', `http://${PROMETHEUS}/api/v1/rules`]);
      const groups = (JSON.parse(rules.stdout) as { data: { groups: { rules: { name: string; health: string }[] }[] } }).data.groups;
      expect(groups.flatMap((g) => g.rules).filter((r) => r.health === 'ok').map((r) => r.name)).toContain('T2cpBackupNotStandingBy');

      await new Promise((r) => setTimeout(r, 1000));
      await pair.fail('link-down');
      await waitFor(async () => (await value(tb, 't2cp_device_state{job="gateway",state="BACKUP_ACTIVE"}')) === 1,
        { timeoutMs: 20_000, what: 'the takeover, in Prometheus' });
      await waitFor(async () => (await value(tb, 't2cp_backup_state{job="backup",state="active"}')) === 1, { timeoutMs: 10_000, what: 'the backup active' });
      expect(await value(tb, 't2cp_epoch{job="gateway"}')).toBe(1);
      const steps = await query(tb, 't2cp_takeover_step_seconds{job="backup"}');
      expect(steps.map((s) => s.metric.step).sort()).toEqual(['active', 'catch-up', 'connections', 'finish', 'freeze', 'ip-takeover']);
      expect(await value(tb, 't2cp_takeover_connections{job="backup",outcome="taken-over"}')).toBe(4);
      // The dead primary's agent is no longer scraped.
      await waitFor(async () => (await value(tb, 'up{job="primary"}')) === 0, { timeoutMs: 10_000, what: 'the primary down' });
      const run = await client.finished;
      expect(run.code, run.stderr).toBe(0);
      console.log(`metrics: takeover steps ${steps.map((s) => `${s.metric.step} ${(Number(s.value[1]) * 1000).toFixed(2)} ms`).join(', ')}`);

      // The event streams: weak has the four connections new (and closed, the client done), strong
      // every change of theirs too, both the backup's states; the detector's its device states.
      await waitFor(() => backupWeak().filter((l) => l.type === 'flow' && l.event === 'closed').length >= 4, { timeoutMs: 15_000, what: 'the connections closed, in the weak stream' });
      const flowEvents = (f: () => Record<string, unknown>[]) => f().filter((l) => l.type === 'flow').map((l) => l.event as string);
      expect(flowEvents(backupWeak).filter((e) => e === 'new')).toHaveLength(4);
      expect(new Set(flowEvents(backupWeak))).toEqual(new Set(['new', 'closed']));
      expect(flowEvents(backupStrong).filter((e) => e === 'synchronised')).toHaveLength(4);
      const states = (f: () => Record<string, unknown>[], subject: string) => f().filter((l) => l.type === 'state' && l.subject === subject).map((l) => l.to);
      expect(states(backupWeak, 'backup')).toEqual(['taking-over', 'active']);
      expect(states(gatewayWeak, 'device')).toContain('BACKUP_ACTIVE');
      expect(gatewayDigest().filter((l) => l.type === 'digest').length).toBeGreaterThan(2);
      expect(gatewayDigest().filter((l) => l.type === 'flow')).toEqual([]);
      // --notify: ROLE INSTANCE STATE EPOCH, as keepalived calls its notify scripts.
      await waitFor(() => fs.existsSync(`${dir}/notify.log`) && fs.readFileSync(`${dir}/notify.log`, 'utf8').includes(`backup ${INSTANCE} active 1`),
        { timeoutMs: 5_000, what: 'the notify program called' });
      const notified = fs.readFileSync(`${dir}/notify.log`, 'utf8').trim().split('\n');
      expect(notified).toContain(`gateway ${INSTANCE} BACKUP_ACTIVE 1`);
      expect(notified).toContain(`backup ${INSTANCE} taking-over 1`);
      expect(notified).toContain(`backup ${INSTANCE} active 1`);
    } finally {
      for (const f of followers) f.kill('SIGTERM');
      prometheus.kill('SIGTERM');
      await pair.stop();
    }
    // Each role removed its event socket as it stopped.
    expect(fs.existsSync(sockets.backup) || fs.existsSync(sockets.gateway)).toBe(false);
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});
