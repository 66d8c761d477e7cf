// `npm run demo`: the whole story on the built-in namespace testbed. A client
// runs request/response sessions, bulk transfers and idle connections through
// the gateway to the primary; `t2cp backup` replays every flow into the
// backup's copy of the service (the live table shows primary vs backup
// progress per flow); then the primary dies (its link goes down), the
// failure detector on the gateway declares it dead, the backup takes over,
// and the sessions finish. At the end: the takeover record, every stream
// checked byte for byte against what the backup's service read and wrote,
// proof that only one server answered, the client-visible stall as the
// interactive client timed it (each connection's longest request→reply after
// the failure, beside the same before it), a check that the detector's verdict followed the failure, and
// a picture of the client's throughput around the failover (SVG, and PNG when
// rsvg-convert exists).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type FlowRow, renderFlows } from './demo-view.js';
import { demoTimeline, writeDemoPicture, type BackupRecord, type ClientTimeline, type DemoFacts, type GatewayRecord } from './demo-timeline.js';
import { HEADERS_SNAPLEN, countPackets, startCapture, wireTimeline } from './capture.js';
import { markPrimaryReplies } from './failures.js';
import { readLog, type ClientLogLine, type ServiceLogLine } from './replica-check.js';
import { STALL_WINDOW_MS, longestReplies } from './reply-times.js';
import { MEASURE_NICE, hostCpus, startClient } from './processes.js';
import { answeredByOne, compareTakeover } from './takeover-check.js';
import { startTakeoverLab } from './takeover-lab.js';
import { createTestbed } from './testbed.js';
import { waitFor } from './wait.js';
import type { Workload } from './client.js';

const MB = 1 << 20;
const PORTS = [7000, 6379];
// Three client processes, as three users: an upload, a download, and
// interactive sessions. A single Node process doing two of them measures its
// own busy event loop, not the failover: one writing an upload stops reading
// its download, whose window closes (seen in a capture: zero windows).
const UPLOAD: Workload = { seed: 7, sessions: [{ kind: 'upload', bytes: 600 * MB }] };
const DOWNLOAD: Workload = { seed: 9, sessions: [{ kind: 'download', bytes: 1200 * MB }] };
const INTERACTIVE: Workload = {
  seed: 8,
  sessions: [
    { kind: 'rr', times: 12, count: 100, intervalMs: 50, reqSize: [16, 2000], respSize: [16, 30000] },
    { kind: 'rr', times: 12, count: 100, intervalMs: 50, reqSize: [16, 2000], respSize: [16, 30000], port: 6379 },
    { kind: 'idle', times: 4, holdMs: 6000 },
  ],
};
const count = (w: Workload): number => w.sessions.reduce((n, s) => n + (s.times ?? 1), 0);
const SESSIONS = count(UPLOAD) + count(DOWNLOAD) + count(INTERACTIVE);
const FAIL_AFTER_MS = 1500;
// The backup's processes (its service and t2cp) on CPUs of their own, as the backup would be a
// host of its own: on one 2-CPU machine the replica otherwise waits for the load's clients and the
// primary, and its lag is this machine's, not t2cp's.
const CPUS = hostCpus();
const DEADLINE_MS = 120_000;
/** Where the picture goes: ./t2cp-demo/ in the directory the demo runs from. */
const OUT_DIR = path.resolve('t2cp-demo');

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo builds network namespaces: run it as root');
  const out = process.stdout;
  out.write('t2cp-ar demo: building the testbed (client, gateway, switch with a mirrored port, primary, backup)...\n');
  const tb = await createTestbed({ offloads: true });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 't2cp-demo-'));
  let keep = false;
  try {
    await markPrimaryReplies(tb); // DSCP CS1 on the primary's segments: the client capture tells who answered
    const pair = await startTakeoverLab(tb, dir, { ports: PORTS, instance: 'demo', hardMisses: 3, backupArgs: ['--flow-stats', '500'], cpus: CPUS });
    out.write(`primary ${tb.addr.primary} holds VIP ${tb.addr.vip}; backup ${tb.addr.backup} replicates ports ${PORTS.join(',')} ` +
      `from its mirror port; failure detector on the gateway (10 ms heartbeats, dead after 3 missed)` +
      (CPUS ? `; the backup's processes on CPU ${CPUS.backup}, everything else on CPU ${CPUS.primary}\n` : '\n'));
    // Headers only: who answered (DSCP) and the bytes per bin (sequence numbers) are all it reads.
    const atClient = await startCapture(tb, tb.ns.client, 'c0', `tcp and src host ${tb.addr.vip}`, `${dir}/client.pcap`,
      { snaplen: HEADERS_SNAPLEN, cpus: CPUS?.primary });
    const upload = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORTS[0]}`, UPLOAD, `${dir}/upload.jsonl`, { deadlineMs: DEADLINE_MS, cpus: CPUS?.primary });
    const download = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORTS[0]}`, DOWNLOAD, `${dir}/download.jsonl`,
      { deadlineMs: DEADLINE_MS, timeline: `${dir}/timeline.json`, cpus: CPUS?.primary });
    const client = startClient(tb, tb.ns.client, `${tb.addr.vip}:${PORTS[0]}`, INTERACTIVE, `${dir}/client.jsonl`,
      { deadlineMs: DEADLINE_MS, cpus: CPUS?.primary, nice: MEASURE_NICE });

    const rows = new Map<string, FlowRow>();
    let seen = 0;
    let drawn = 0;
    let status = 'replicating';
    const redraw = (): void => {
      for (const r of pair.backup.records.slice(seen)) {
        if (typeof r.flow !== 'string') continue;
        const row = rows.get(r.flow) ?? { flow: r.flow, state: 'new', c2sPrimary: 0, c2sBackup: 0, s2cPrimary: 0, s2cBackup: 0 };
        row.state = r.msg === 'flow stats' ? (row.state === 'closed' ? 'closed' : 'live') : r.msg.replace('flow ', '');
        for (const k of ['c2sPrimary', 'c2sBackup', 's2cPrimary', 's2cBackup'] as const) if (typeof r[k] === 'number') row[k] = r[k] as number;
        rows.set(r.flow, row);
      }
      seen = pair.backup.records.length;
      const text = `[${status}]\n` + renderFlows([...rows.values()], {
        synchronised: pair.backup.flows('synchronised').length,
        closed: pair.backup.flows('closed').length,
        unprotected: pair.backup.flows('unprotected').length,
      });
      if (out.isTTY) {
        if (drawn) out.write(`\x1b[${drawn}A\x1b[J`);
        out.write(text);
        drawn = text.split('\n').length - 1;
      } else if (Date.now() % 2000 < 500) {
        out.write(text);
      }
    };
    const timer = setInterval(redraw, 500);
    const say = (s: string): void => {
      if (out.isTTY && drawn) out.write(`\x1b[${drawn}A\x1b[J`);
      drawn = 0;
      out.write(s + '\n');
    };

    await waitFor(() => pair.backup.flows('synchronised').length >= SESSIONS, { timeoutMs: 20_000, what: 'every session replicated' });
    await new Promise((r) => setTimeout(r, FAIL_AFTER_MS));
    status = 'the primary is dead: taking over';
    // The link goes down between these two instants; spawning the command takes most of the time between them.
    const breakingMs = Date.now();
    const failMs = await pair.fail('link-down');
    say(`\n*** ${new Date(failMs).toISOString()}: the primary's link goes down (its host is gone for the clients) ***\n`);
    // The detector writes its record once the backup's final report (with the stall) came.
    const gateway = await waitFor(() => readLog<GatewayRecord>(pair.logs.gatewayReport)[0], { timeoutMs: 15_000, what: 'the takeover record' });
    const record = await waitFor(() => readLog<BackupRecord>(pair.logs.backupReport)[0], { timeoutMs: 5_000, what: 'the backup\'s record' });
    // A verdict from before the link went down is a false one: the detector gave up on a live
    // primary whose heartbeats came late (its agent short of CPU here), and the takeover in the
    // record did not follow this failure.
    const earlyMs = failMs - Date.parse(gateway.verdictAt);
    const falseVerdict = Date.parse(gateway.verdictAt) < breakingMs;
    status = falseVerdict ? 'the backup serves every connection (taken over on a false verdict)' : 'the backup serves every connection';
    say(takeoverSummary(record, gateway));
    if (falseVerdict) say(`!!! the detector declared the primary dead ${earlyMs.toFixed(0)} ms before its link went down: a false verdict, not this failure's\n`);

    const run = await client.finished;
    const bulkRuns = [await upload.finished, await download.finished];
    redraw();
    clearInterval(timer);
    await atClient.stop();
    await pair.stop();

    const clientLog = [`${dir}/upload.jsonl`, `${dir}/download.jsonl`, `${dir}/client.jsonl`].flatMap((f) => readLog<ClientLogLine>(f));
    const check = compareTakeover(clientLog, readLog<ServiceLogLine>(pair.logs.backup));
    const lateFromPrimary = (await answeredByOne(`${dir}/client.pcap`)).lateFromPrimary.length;
    const resets = clientLog.filter((l) => /reset|ECONNRESET/i.test(l.error ?? '')).length;
    const { stalls, acrossMs, beforeMs } = clientStalls(readLog<ClientLogLine>(`${dir}/client.jsonl`), failMs);
    const spread = (xs: number[]): string => {
      const s = [...xs].sort((a, b) => a - b);
      return s.length ? `median ${s[Math.floor((s.length - 1) / 2)].toFixed(1)} ms, max ${s[s.length - 1].toFixed(1)} ms` : 'none answered';
    };
    const footer = [
      ...(falseVerdict ? [`false verdict: the detector declared the live primary dead ${earlyMs.toFixed(0)} ms before its link went down`] : []),
      `${check.exact}/${check.sessions} sessions byte-exact end to end, ${resets} reset; after the takeover ${lateFromPrimary} segments from the old primary`,
      `client-visible stall, timed by the client (its longest wait past the failure): ${spread(stalls.map((s) => s.ms))} ` +
        `over ${stalls.length} connections`,
      `  longest request→reply across the failure ${spread(acrossMs)}; before it, under the same load, ${spread(beforeMs)}`,
    ];
    const timeline = JSON.parse(fs.readFileSync(`${dir}/timeline.json`, 'utf8')) as ClientTimeline;
    const wire = await wireTimeline(`${dir}/client.pcap`, timeline.binMs);
    fs.mkdirSync(OUT_DIR, { recursive: true });
    const files = writeDemoPicture(path.join(OUT_DIR, 'timeline'), demoTimeline({ failMs, timeline, wire, gateway, backup: record, stalls, footer }));

    const last = (r: { stdout: string }): string => r.stdout.trim().split('\n').pop() ?? '';
    out.write(`\nclients finished (exit ${[run, ...bulkRuns].map((r) => r.code).join(', ')}): ${[run, ...bulkRuns].map(last).join(' ')}\n`);
    for (const l of footer) out.write(l + '\n');
    for (const m of check.mismatches.slice(0, 5)) out.write(`  ${m}\n`);
    out.write(`picture: ${files.join(', ')}\n`);
    const ok = !falseVerdict && check.ok && run.code === 0 && bulkRuns.every((r) => r.code === 0) && lateFromPrimary === 0 && (await countPackets(`${dir}/client.pcap`)) > 0;
    out.write(ok ? 'RESULT: the primary died and every connection carried on, byte-exact, answered by the backup alone.\n'
      : falseVerdict ? 'RESULT: FAILED: the takeover came on a false verdict, before the primary failed (see above)\n' : 'RESULT: FAILED (see above)\n');
    if (!ok || process.env.T2CP_KEEP_LAB) {
      if (!ok) process.exitCode = 1;
      // What went wrong stays readable: the roles' logs and records, the client logs, the capture.
      fs.writeFileSync(`${dir}/t2cp-backup.jsonl`, pair.backup.records.map((r) => JSON.stringify(r)).join('\n') + '\n');
      out.write(`the run's files are kept in ${dir} (t2cp-backup.jsonl: the backup's log)\n`);
      keep = true;
    }
  } finally {
    await tb.teardown();
    if (!keep) fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Per connection of the interactive client, as it timed its requests (scripts/reply-times.ts,
 * within STALL_WINDOW_MS of the failure): the stall, the longest its client waited past the
 * failure instant for a reply (∞ for a session that failed); its longest request→reply whose reply
 * came after the failure, which also counts what a request had already waited on the live primary;
 * and the same among the replies before the failure, the round trips under the load of the moment.
 * Connections with no request outstanding near the failure (the idle ones, holding) are left out.
 */
function clientStalls(log: ClientLogLine[], failMs: number): { stalls: DemoFacts['stalls']; acrossMs: number[]; beforeMs: number[] } {
  const stalls: DemoFacts['stalls'] = [];
  const acrossMs: number[] = [];
  const beforeMs: number[] = [];
  for (const l of log) {
    const r = longestReplies(l.requests ?? [], failMs, STALL_WINDOW_MS, Infinity);
    if (r.after) {
      stalls.push({ ms: l.ok ? r.pastFailureMs! : Infinity, firstAfterMs: r.firstAfterMs });
      acrossMs.push(l.ok ? r.after.ms : Infinity);
    }
    if (r.before) beforeMs.push(r.before.ms);
  }
  return { stalls, acrossMs, beforeMs };
}

function takeoverSummary(b: BackupRecord, g: GatewayRecord | undefined): string {
  const ms = (us: number | null | undefined): string => (us === null || us === undefined ? '?' : `${(us / 1000).toFixed(1)} ms`);
  const lines = ['takeover record:'];
  if (g) lines.push(`  detection   ${ms(g.detectionLatencyUs)} from the last heartbeat heard to the verdict`);
  for (const s of b.engine.steps) lines.push(`  step ${s.name.padEnd(12)} ${ms(s.endUs !== undefined ? s.endUs - s.startUs : undefined)}`);
  lines.push(`  takeover    ${ms(b.takeoverUs)} to step 5; ${b.engine.flowsTakenOver} flows taken over (${b.engine.flowsCaughtUp} of them ` +
    `after catching up), ${b.engine.flowsLost} lost, ${b.engine.clientsReset} clients reset, ` +
    `${b.engine.bytesResent} B of the replica's unacknowledged data resent`);
  if (g?.resupplied) lines.push(`  resupplied  ${g.resupplied.bytes} B of client segments the dead primary swallowed (traffic recorder)`);
  if (b.engine.replicaLagBytesMax) lines.push(`  replica lag ${(b.engine.replicaLagBytesMax / (1 << 20)).toFixed(1)} MiB at most: served bytes the backup's copy makes again before its clients see new ones`);
  return lines.join('\n') + '\n';
}

main().catch((e: unknown) => {
  process.stderr.write(`demo failed: ${(e as Error).message}\n`);
  process.exit(1);
});
