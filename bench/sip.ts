// (f) SIP: the call rate Kamailio on the VIP sustains (scripts/voip.ts: the e2e test's proxy and
// SIPp scenarios, each call an INVITE, a re-INVITE and a BYE back to back), unreplicated
// (Kamailio on the primary alone) and in the whole deployment with every call replicated, the
// second as a ratio to the first in the same run. SIPp offers calls at a fixed pace for
// STEP_S seconds, on a ladder of paces; a pace is sustained when every call succeeds with no
// SIP retransmission, SIPp keeps the pace, and — in the deployment — the backup's comparison
// (`--divergence`, strict by default) found every datagram its Kamailio sent alike the
// primary's, with no record lost. The figure is the highest pace sustained below the first one
// that is not.
import fs from 'node:fs';
import path from 'node:path';
import { startTakeoverLab } from '../scripts/takeover-lab.js';
import { stopChild } from '../scripts/processes.js';
import type { Testbed } from '../scripts/testbed.js';
import { SIP_PORT, kamailioService, runCallLoad, type CallLoad } from '../scripts/voip.js';
import { median } from './stats.js';

const STEP_S = 3;
/** Calls offered per second, step by step (each about 1.4 times the one before). */
const PACES = [100, 140, 200, 280, 400, 560, 800, 1120, 1600, 2240];

export interface SipBenchOptions { trials: number; cpus: { primary?: string; backup?: string }; backupArgs: string[] }

type Variant = 'unreplicated' | 'deployment';
interface Step extends CallLoad {
  pace: number;
  /** The replica's datagrams: sent, found alike the primary's; associations diverged; records lost; what diverged. */
  replica?: { sent: number; alike: number; diverged: number; lost: number; divergences: unknown[] };
}

const sustained = (s: Step): boolean => s.failed === 0 && s.retransmissions === 0 && s.perS >= 0.95 * s.pace
  && (!s.replica || (s.replica.sent > 0 && s.replica.alike === s.replica.sent && s.replica.diverged === 0 && s.replica.lost === 0));

async function step(tb: Testbed, dir: string, variant: Variant, pace: number, o: SipBenchOptions): Promise<Step> {
  const d = fs.mkdtempSync(path.join(dir, `sip-${variant}-${pace}-`));
  // The testbed's CPUs as the other benches share them: SIPp (the clients) and the primary's
  // Kamailio on the primary's, the backup's Kamailio on the backup's with t2cp.
  const service = kamailioService(tb, d, 'udp', 'direct', o.cpus);
  const calls = pace * STEP_S;
  const load = { calls, rate: pace, cpus: o.cpus.primary };
  if (variant === 'unreplicated') {
    const { child } = await service(tb.ns.primary, 'primary', `${d}/primary.log`);
    try {
      return { pace, ...(await runCallLoad(tb, d, load)) };
    } finally {
      await stopChild(child);
    }
  }
  const lab = await startTakeoverLab(tb, d, { ports: [], udpPorts: [SIP_PORT], instance: 'benchsip', intervalMs: 100, hardMisses: 5, service,
    cpus: { ...o.cpus, gateway: o.cpus.primary }, backupArgs: o.backupArgs });
  try {
    const sipp = await runCallLoad(tb, d, load);
    // The last answers reach the replica within milliseconds; its comparison closes pairs within a second.
    await new Promise((r) => setTimeout(r, 1500));
    const c = await lab.backup.counters();
    const status = await lab.backupStatus(['--json']);
    const divergences = status.code === 0 ? (JSON.parse(status.stdout) as { flows?: { divergences?: unknown[] } }).flows?.divergences ?? [] : [];
    return {
      pace,
      ...sipp,
      replica: { sent: c.udp_replica_datagrams ?? 0, alike: c.udp_compared ?? 0, diverged: c.udp_diverged ?? 0, lost: c.udp_lost ?? 0, divergences },
    };
  } finally {
    await lab.stop();
  }
}

/** Up the ladder until a pace is not sustained: every step run, the last one the first failure. */
async function ladder(tb: Testbed, dir: string, variant: Variant, o: SipBenchOptions): Promise<Step[]> {
  const steps: Step[] = [];
  for (const pace of PACES) {
    process.stderr.write(`sip ${variant}: ${pace} calls/s for ${STEP_S} s\n`);
    steps.push(await step(tb, dir, variant, pace, o));
    if (!sustained(steps[steps.length - 1]!)) break;
  }
  return steps;
}

export async function benchSip(tb: Testbed, dir: string, o: SipBenchOptions, line: (name: string, value: number | string, note?: string) => void): Promise<void> {
  const runs: Record<Variant, Step[][]> = { unreplicated: [], deployment: [] };
  for (let i = 0; i < o.trials; i++)
    for (const v of ['unreplicated', 'deployment'] as const) runs[v].push(await ladder(tb, dir, v, o));
  const best = (steps: Step[]) => Math.max(0, ...steps.filter(sustained).map((s) => s.pace));
  const rate = (v: Variant) => median(runs[v].map(best));
  const why = (s: Step | undefined): string => !s ? 'the ladder\'s top' : sustained(s) ? 'the ladder\'s top'
    : `at ${s.pace}: ${s.failed} failed, ${s.retransmissions} retransmitted, ${s.perS.toFixed(0)}/s kept` +
      (s.replica ? `, replica alike ${s.replica.alike}/${s.replica.sent}, diverged ${s.replica.diverged}, lost ${s.replica.lost}` : '');
  const notes = (v: Variant) => `trials ${runs[v].map(best).join(' ')}; ended ${runs[v].map((steps) => why(steps[steps.length - 1])).join('; ')}`;
  line('sip_unreplicated_calls_per_s', rate('unreplicated'),
    `${notes('unreplicated')}; calls of INVITE, re-INVITE, BYE offered at a pace for ${STEP_S} s, Kamailio on the primary alone`);
  line('sip_deployment_calls_per_s', rate('deployment'),
    `${notes('deployment')}; gateway (on the primary's CPU), agent and backup; every datagram of the backup's Kamailio alike the primary's`);
  // No ratio against a baseline that sustained no pace (Kamailio alone failing at the first one:
  // the machine, not t2cp): the run says so rather than print a figure.
  if (rate('unreplicated') > 0) line('sip_deployment_ratio', rate('deployment') / rate('unreplicated'));
  else line('sip_deployment_ratio', 'none', 'the unreplicated baseline sustained no pace in most trials: this run measured nothing; run it again');
  const divergences = runs.deployment.flat().flatMap((s) => s.replica?.divergences ?? []);
  if (divergences.length) line('sip_deployment_divergences', divergences.length, `where the pace was not sustained: ${JSON.stringify(divergences).slice(0, 1500)}`);
}
