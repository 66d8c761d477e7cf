// What the demo prints: a live table of flows (primary vs backup progress)
// and the final verdict. Pure text functions, no I/O.
import type { ReplicaReport } from './replica-check.js';

export interface FlowRow {
  flow: string;
  state: string;
  c2sPrimary: number;
  c2sBackup: number;
  s2cPrimary: number;
  s2cBackup: number;
}

const BAR = 24;
/** Flows drawn one per line; the others are summed. */
const SHOWN = 6;

function size(n: number): string {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)}M`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)}k`;
  return `${n}`;
}

/** A bar of the primary's bytes with the backup's position marked: equal means in step. */
function bar(primary: number, backup: number, scale: number): string {
  const p = scale > 0 ? Math.round((primary / scale) * BAR) : 0;
  const b = scale > 0 ? Math.round((backup / scale) * BAR) : 0;
  let s = '';
  for (let i = 0; i < BAR; i++) s += i < Math.min(p, b) ? '█' : i < Math.max(p, b) ? '░' : ' ';
  return s;
}

export function renderFlows(rows: FlowRow[], totals: { synchronised: number; closed: number; unprotected: number }): string {
  // The largest flows get a line each; the rest are summed in one line.
  const volume = (r: FlowRow) => Math.max(r.c2sPrimary, r.s2cPrimary);
  const big = [...rows].sort((a, b) => volume(b) - volume(a)).slice(0, SHOWN).sort((a, b) => a.flow.localeCompare(b.flow));
  const small = rows.filter((r) => !big.includes(r));
  const lines: string[] = [];
  lines.push(`flows: ${rows.length} seen, ${totals.synchronised} synchronised, ${totals.closed} closed, ${totals.unprotected} unprotected`);
  lines.push(`${'flow'.padEnd(26)} ${'client→server  primary / backup'.padEnd(44)} ${'server→client  primary / backup'}`);
  for (const r of big) {
    const scale = Math.max(r.c2sPrimary, r.c2sBackup, r.s2cPrimary, r.s2cBackup);
    lines.push(
      `${r.flow.padEnd(26)} ${bar(r.c2sPrimary, r.c2sBackup, scale)} ${`${size(r.c2sPrimary)}/${size(r.c2sBackup)}`.padEnd(19)} ` +
        `${bar(r.s2cPrimary, r.s2cBackup, scale)} ${size(r.s2cPrimary)}/${size(r.s2cBackup)}`,
    );
  }
  const sum = (k: keyof FlowRow) => small.reduce((a, r) => a + (r[k] as number), 0);
  const inStep = small.filter((r) => r.c2sPrimary === r.c2sBackup && r.s2cPrimary === r.s2cBackup).length;
  lines.push(
    `${`${small.length} other flows`.padEnd(26)} c→s ${size(sum('c2sPrimary'))}/${size(sum('c2sBackup'))}  ` +
      `s→c ${size(sum('s2cPrimary'))}/${size(sum('s2cBackup'))}  in step now: ${inStep}/${small.length}`,
  );
  return lines.join('\n') + '\n';
}

export function verdict(report: ReplicaReport, leaked: number, counters: Record<string, number>): string {
  const n = report.connections.length;
  const exact = report.connections.filter((c) => c.onBackup && c.backupRxMatchesPrimary && c.backupTxMatchesPrimary).length;
  const lines = [
    '',
    `connections: ${n}; client sessions ok: ${n - report.clientErrors.length}/${n}`,
    `backup's streams identical to the primary's (sha256 of every byte read and written): ${exact}/${n}`,
    `packets from the backup seen on the LAN: ${leaked}`,
    `t2cp: ${counters.inject_packets ?? 0} segments injected (${size(counters.inject_bytes ?? 0)}B), ` +
      `${counters.backup_dropped ?? 0} replica packets dropped, ${counters.mirror_superframes ?? 0} super-frames, ` +
      `${counters.inject_reinjected ?? 0} re-injections, capture drops ${counters.capture_kernel_drops ?? 0}`,
    exact === n && leaked === 0 && report.ok ? 'RESULT: the backup kept an exact replica of every connection.' : 'RESULT: MISMATCH (see above)',
  ];
  for (const m of report.mismatches.slice(0, 5)) lines.push(`  ${m}`);
  return lines.join('\n') + '\n';
}
