// The IP-only failover baseline: keepalived (VRRP) moves the VIP from the primary to the backup by
// itself, nothing replicates. What does a client see? Run once on a fresh testbed:
//
//   1. the VIP comes off the primary's e0: keepalived owns it from now on;
//   2. an echo service (scripts/echo-service.ts) on the primary and on the backup; keepalived on
//      both (primary priority 150, backup 100, manageVip = the VIP); wait for MASTER / BACKUP and
//      the VIP on the primary;
//   3. the client opens N connections to VIP:port (a quarter idle, the rest sending a 16-byte
//      request every 10 ms, strictly one at a time, every reply checked: the same client and
//      settings as bench/failover.ts, so the two report the same client-timed stall);
//   4. the primary fails: its e0 goes down (`ip link set e0 down` in its namespace, timed to the
//      microsecond around the command: the failure instant is its end);
//   5. wait for the backup's MASTER, tell the idle connections to send one request, wait until
//      every connection is decided (answered after the failure, or reset/closed) and a new
//      connection to the VIP is echoed again, or the deadline;
//   6. stop everything started here (by PID).
//
// The testbed is used up: the primary's link stays down (tear it down afterwards). Nothing is
// printed; the caller gets the figures.

import fs from 'node:fs';
import path from 'node:path';
import { ensureKeepalived, masterDownMs, startKeepalived, timedLinkDown, type Keepalived } from '../scripts/keepalived.js';
import { collect, pinned, repoRoot, waitForExit } from '../scripts/processes.js';
import { STALL_WINDOW_MS } from '../scripts/reply-times.js';
import type { Testbed } from '../scripts/testbed.js';
import { GiveUp, waitFor } from '../scripts/wait.js';
import { median } from './stats.js';

export interface IpOnlyOptions {
  /** Scratch directory (keepalived's files go in a subdirectory). */
  dir: string;
  /** Client connections in all (default 20); a quarter of them idle. */
  connections?: number;
  /** Idle connections among them (default floor(connections / 4)). */
  idle?: number;
  /** VRRP advertisement interval (default 100 ms; a multiple of 10). */
  advertIntMs?: number;
  /** The echo service's port (default 7100). */
  port?: number;
  /** Request interval of the active connections (default 10 ms). */
  intervalMs?: number;
  /** How long to wait after the failure for every connection to be decided (default 15 s). */
  settleMs?: number;
  /** VRID (default 51). */
  vrid?: number;
  /** `taskset -c` CPU lists as bench/run.ts uses them: the client and the primary's service on one, the backup's on the other. */
  primaryCpus?: string;
  backupCpus?: string;
}

export interface ConnectionFate {
  id: number;
  kind: 'active' | 'idle';
  outcome: 'kept' | 'reset' | 'closed' | 'corrupt' | 'stalled';
  /**
   * Active connections, timed by the client: the longest request->reply among the requests
   * outstanding within STALL_WINDOW_MS of the failure (ms); Infinity when not kept (reset, closed,
   * corrupt, or never answered again).
   */
  stallMs: number;
  /** From the failure to the connection's end (its RST or close), ms; null while it lives. */
  endedMs: number | null;
  error: string | null;
}

export interface IpOnlyResult {
  advertIntMs: number;
  /** From the failure (primary's link down) to the backup's notify_master (ms). */
  detectionMs: number;
  /** Over the active connections' stallMs (Infinity: reset). */
  stallMsMedian: number;
  stallMsMax: number;
  connectionsKept: number;
  connectionsTotal: number;
  /** Connections that ended with an RST (ECONNRESET/EPIPE). */
  connectionsReset: number;
  /**
   * From the failure until a new connection to the VIP was echoed by the backup (ms), timed by the
   * client: the outage a client that reconnects sees. Infinity if not within settleMs.
   */
  serviceRestoredMs: number;
  /** From the failure to the primary's FAULT (its keepalived saw the link go down), ms. */
  primaryFaultMs: number;
  /** The VRRPv3 master-down interval the backup waits (3 × advert + skew), ms. */
  masterDownMs: number;
  connections: ConnectionFate[];
}

const PRIMARY_PRIORITY = 150;
const BACKUP_PRIORITY = 100;
const STARTUP_TIMEOUT_MS = 15_000;

interface SummaryConn {
  id: number; kind: 'active' | 'idle'; outcome: ConnectionFate['outcome']; longestReplyMs: number | null; error: string | null; endMs: number | null;
  lastBeforeMs: number | null;
}
interface Summary { ev: 'summary'; failMs: number; restoredMs: number | null; conns: SummaryConn[] }

export async function runIpOnly(tb: Testbed, opts: IpOnlyOptions): Promise<IpOnlyResult> {
  ensureKeepalived();
  const total = opts.connections ?? 20;
  const idle = opts.idle ?? Math.floor(total / 4);
  const advertIntMs = opts.advertIntMs ?? 100;
  const port = opts.port ?? 7100;
  const settleMs = opts.settleMs ?? 15_000;
  const vrid = opts.vrid ?? 51;
  if (!(Number.isInteger(total) && total >= 1 && total <= 10_000 && Number.isInteger(idle) && idle >= 0 && idle <= total)) {
    throw new Error(`ip-only: need 1..10000 connections with 0..connections idle, not ${total} / ${idle}`);
  }
  const vip = tb.addr.vip;
  const dir = fs.mkdtempSync(path.join(opts.dir, 'ip-only-'));
  const echo = `${repoRoot}dist/scripts/echo-service.js`;

  const started: { stop(): Promise<void> }[] = [];
  const startChild = (ns: string, argv: string[], stdin = false): ReturnType<Testbed['spawn']> => {
    const child = tb.spawn(ns, argv, { stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    started.push({
      async stop() {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM');
        await waitForExit(child, 5_000).catch(() => { child.kill('SIGKILL'); });
      },
    });
    return child;
  };

  try {
    // 1. keepalived owns the VIP: take the testbed's static copy off the primary.
    const del = await tb.exec(tb.ns.primary, ['ip', 'addr', 'del', `${vip}/24`, 'dev', tb.ifaces.primaryLan]);
    if (del.code !== 0 && !/Cannot assign/.test(del.stderr)) throw new Error(`ip addr del ${vip}: ${del.stderr}`);

    // 2. The echo service on both hosts, keepalived on both.
    for (const [ns, cpus] of [[tb.ns.primary, opts.primaryCpus], [tb.ns.backup, opts.backupCpus]] as const) {
      const child = startChild(ns, [...pinned(cpus), 'node', echo, '--port', String(port)]);
      const out = collect(child);
      await waitFor(() => {
        if (child.exitCode !== null) throw new GiveUp(`echo service in ${ns} exited: ${out.stderr}`);
        return out.stdout.includes('ready\n');
      }, { timeoutMs: 10_000, what: `echo service in ${ns}` });
    }
    const common = { iface: tb.ifaces.primaryLan, vrid, advertIntMs, manageVip: `${vip}/32` };
    const primary: Keepalived = await startKeepalived(tb, tb.ns.primary, dir,
      { ...common, role: 'primary', priority: PRIMARY_PRIORITY, peerAddr: tb.addr.backup, srcAddr: tb.addr.primary });
    started.push(primary);
    await primary.waitForState('MASTER', { timeoutMs: STARTUP_TIMEOUT_MS });
    const backup: Keepalived = await startKeepalived(tb, tb.ns.backup, dir,
      { ...common, role: 'backup', priority: BACKUP_PRIORITY, peerAddr: tb.addr.primary, srcAddr: tb.addr.backup });
    started.push(backup);
    await backup.waitForState('BACKUP', { timeoutMs: STARTUP_TIMEOUT_MS });
    const hasVip = async (ns: string): Promise<boolean> =>
      (await tb.exec(ns, ['ip', '-4', '-o', 'addr', 'show', 'dev', tb.ifaces.primaryLan])).stdout.includes(` ${vip}/`);
    await waitFor(() => hasVip(tb.ns.primary), { timeoutMs: 5_000, what: 'the VIP on the primary' });
    if (await hasVip(tb.ns.backup)) throw new Error('the VIP is on the backup before the failure');

    // 3. The client's connections, warmed up (every active one must have been answered: checked below).
    const client = startChild(tb.ns.client, [...pinned(opts.primaryCpus), 'node', `${repoRoot}dist/scripts/echo-client.js`, '--server', `${vip}:${port}`,
      '--active', String(total - idle), '--idle', String(idle), '--interval-ms', String(opts.intervalMs ?? 10), '--max-unanswered', '1',
      '--window-ms', String(STALL_WINDOW_MS), '--deadline-ms', String(settleMs + 60_000)], true);
    const out = collect(client);
    const events = (): { ev: string; [k: string]: unknown }[] =>
      out.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { ev: string });
    const clientGone = (): boolean => client.exitCode !== null || client.signalCode !== null;
    await waitFor(() => {
      if (clientGone()) throw new GiveUp(`echo client exited ${client.exitCode}: ${out.stderr}`);
      return events().some((e) => e.ev === 'established');
    }, { timeoutMs: 20_000, what: 'client connections established' });
    await new Promise((r) => setTimeout(r, 300)); // ~30 replies on every active connection

    // 4. The failure.
    const { beforeUs, afterUs } = timedLinkDown(tb.ns.primary, tb.ifaces.primaryLan);
    const failUs = afterUs;
    client.stdin!.write(`fail ${failUs / 1000}\n`);

    // 5. Detection, then every connection's fate and the service back at the VIP.
    const master = await backup.waitForState('MASTER', { timeoutMs: 10_000, afterUs: beforeUs });
    client.stdin!.write('probe\n');
    await waitFor(() => {
      if (clientGone()) throw new GiveUp(`echo client exited ${client.exitCode}: ${out.stderr}`);
      const ev = events();
      return ev.filter((e) => e.ev === 'resolved').length >= total && ev.some((e) => e.ev === 'restored');
    }, { timeoutMs: settleMs, what: 'every connection decided and the service back' }).catch(() => undefined);
    client.stdin!.write('stop\n');
    await waitForExit(client, 10_000);
    const summary = events().find((e) => e.ev === 'summary') as Summary | undefined;
    if (!summary) throw new Error(`echo client gave no summary: ${out.stderr}`);
    const silent = summary.conns.filter((c) => c.kind === 'active' && c.lastBeforeMs === null).map((c) => c.id);
    if (silent.length) throw new Error(`ip-only: active connections ${silent.join(',')} had no reply before the failure`);
    const fault = primary.transitions().find((t) => t.state === 'FAULT' && t.timeUs >= beforeUs);

    const connections: ConnectionFate[] = summary.conns.map((c) => ({
      id: c.id, kind: c.kind, outcome: c.outcome, error: c.error,
      endedMs: c.endMs !== null ? c.endMs - failUs / 1000 : null,
      stallMs: c.outcome === 'kept' && c.longestReplyMs !== null ? c.longestReplyMs : Infinity,
    }));
    const stalls = connections.filter((c) => c.kind === 'active').map((c) => c.stallMs);
    return {
      advertIntMs,
      detectionMs: (master.timeUs - failUs) / 1000,
      stallMsMedian: median(stalls),
      stallMsMax: stalls.length ? Math.max(...stalls) : NaN,
      connectionsKept: connections.filter((c) => c.outcome === 'kept').length,
      connectionsTotal: total,
      connectionsReset: connections.filter((c) => c.outcome === 'reset').length,
      serviceRestoredMs: summary.restoredMs !== null ? summary.restoredMs - failUs / 1000 : Infinity,
      primaryFaultMs: fault ? (fault.timeUs - failUs) / 1000 : NaN,
      masterDownMs: masterDownMs(advertIntMs, BACKUP_PRIORITY),
      connections,
    };
  } finally {
    for (const s of started.reverse()) await s.stop().catch(() => undefined);
  }
}

/** One line per figure, as bench/run.ts prints them (not called here: importing this module prints nothing). */
export function formatIpOnly(r: IpOnlyResult): string {
  const f = (x: number): string => (Number.isFinite(x) ? String(+x.toFixed(1)) : String(x));
  const row = (name: string, value: string, note = ''): string => `${name.padEnd(40)} ${value}${note ? `  ${note}` : ''}`;
  return [
    row('ip_only_advert_int_ms', String(r.advertIntMs)),
    row('ip_only_detection_ms', f(r.detectionMs), `master-down interval ${f(r.masterDownMs)}`),
    row('ip_only_service_restored_ms', f(r.serviceRestoredMs), 'until a new connection to the VIP is echoed'),
    row('ip_only_stall_ms_median', f(r.stallMsMedian), `client-timed: per active connection the longest request->reply within ${STALL_WINDOW_MS} ms of the failure (Infinity: reset)`),
    row('ip_only_stall_ms_max', f(r.stallMsMax)),
    row('ip_only_connections_kept', `${r.connectionsKept}/${r.connectionsTotal}`, `reset ${r.connectionsReset}`),
  ].join('\n');
}
