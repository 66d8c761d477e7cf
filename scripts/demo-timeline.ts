// The demo's picture: the bulk client's download throughput over time (from
// its --timeline bins) with the failover's events and spans (from the gateway's
// and the backup's takeover records), as an SVG, and a PNG beside it when
// rsvg-convert is installed. Pure but for writing the files.
import { spawnSync } from 'node:child_process';
import { writeTimelineSvg, type TimelineEvent, type TimelineInput, type TimelineOptions, type TimelineSpan } from './timeline-svg.js';

export interface ClientTimeline { binMs: number; startMs: number; rx: number[]; tx: number[] }
export interface GatewayRecord { verdictAt: string; detectionLatencyUs: number | null; reportAfterUs: number | null; resupplied?: { bytes: number } }
export interface BackupRecord {
  takeoverUs?: number;
  engine: { requestedUs: number; steps: Array<{ name: string; startUs: number; endUs?: number }>; flowsTakenOver: number; flowsCaughtUp: number; flowsLost: number; clientsReset: number; bytesResent: number; replicaLagBytesMax?: number };
}

export interface DemoFacts {
  failMs: number;
  /** What the bulk client program read (its --timeline). */
  timeline: ClientTimeline;
  /** What reached the client's interface from the service (capture, new bytes only). */
  wire?: { startMs: number; binMs: number; rx: number[] };
  gateway?: GatewayRecord;
  backup: BackupRecord;
  /**
   * Client-visible stall per request/response connection, as its client timed it: the longest it
   * waited past the failure for a reply (ms; ∞: the session failed), and when its first reply
   * after the failure came (it resumed).
   */
  stalls: Array<{ ms: number; firstAfterMs: number | null }>;
  footer: string[];
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)] ?? NaN;

const series = (label: string, t: { startMs: number; binMs: number }, bins: number[]) => ({
  label,
  points: bins.map((b, i) => ({ tMs: t.startMs + i * t.binMs, bytesPerS: (b * 1000) / t.binMs })),
});

/** The failure, the detector's verdict and the takeover's steps as markers and spans (from the records). */
function failoverMarks(f: { failMs: number; gateway?: GatewayRecord; backup: BackupRecord }): { events: TimelineEvent[]; spans: TimelineSpan[] } {
  const events: TimelineEvent[] = [{ tMs: f.failMs, label: 'primary\'s link down', kind: 'failure' }];
  const spans: TimelineSpan[] = [];
  if (f.gateway) {
    const verdictMs = Date.parse(f.gateway.verdictAt);
    events.push({ tMs: verdictMs, label: 'detector: primary dead', kind: 'detection' });
    if (f.gateway.detectionLatencyUs) spans.push({ fromMs: verdictMs - f.gateway.detectionLatencyUs / 1000, toMs: verdictMs, label: 'detection (last heartbeat → verdict)' });
  }
  for (const s of f.backup.engine.steps) events.push({ tMs: (s.endUs ?? s.startUs) / 1000, label: `step ${s.name}`, kind: 'step' });
  // Steps 1-5 (the clients resume); step 6, catch-up, apart: it goes on in the background.
  const resumed = f.backup.engine.steps.find((s) => s.name === 'connections');
  if (resumed?.endUs) spans.push({ fromMs: f.backup.engine.requestedUs / 1000, toMs: resumed.endUs / 1000, label: 'takeover (steps 1-5)' });
  const catchUp = f.backup.engine.steps.find((s) => s.name === 'catch-up');
  if (catchUp?.endUs && catchUp.endUs - catchUp.startUs >= 1000)
    spans.push({ fromMs: catchUp.startUs / 1000, toMs: catchUp.endUs / 1000, label: 'catch-up of the flows still finishing' });
  return { events, spans };
}

export function demoTimeline(f: DemoFacts): TimelineInput {
  const { events, spans } = failoverMarks(f);
  // The clients resume with their first reply after the failure (median over connections); their
  // stall, each one's longest wait past the failure, is in the footer: under load it can be a
  // later request's, not the one the takeover held up.
  const resumedMs = median(f.stalls.map((s) => s.firstAfterMs ?? Infinity));
  if (Number.isFinite(resumedMs)) events.push({ tMs: resumedMs, label: 'clients resume (first replies)', kind: 'resumed' });
  return {
    title: 't2cp-ar: the primary dies, its clients carry on',
    subtitle: `${f.backup.engine.flowsTakenOver} connections taken over, ${f.backup.engine.flowsLost} lost; detection ${((f.gateway?.detectionLatencyUs ?? 0) / 1000).toFixed(1)} ms, takeover ${((f.backup.takeoverUs ?? 0) / 1000).toFixed(1)} ms`,
    // Received bytes only: the client counts what it sends when the socket
    // takes it, in bursts that would draw spikes no wire ever carried. The
    // wire shows the network; the program's reads lag it when the client's
    // CPU is busy (it is shared with everything here).
    series: [
      ...(f.wire ? [series('service → client, on the wire', f.wire, f.wire.rx)] : []),
      series('bulk download, read by the client', f.timeline, f.timeline.rx),
    ],
    events,
    spans,
    footer: f.footer,
  };
}

export interface VoipFacts {
  failMs: number;
  /** SIP bytes per bin on the phones' interface, each way (capture). */
  sip: { startMs: number; binMs: number; toProxy: number[]; fromProxy: number[] };
  gateway?: GatewayRecord;
  backup: BackupRecord;
  footer: string[];
}

/**
 * `npm run demo:voip`'s picture: the calls' signalling each way, with the failover marked. Drawn
 * without the zoom panel (writeDemoPicture's `{ zoom: false }`): signalling comes in bursts a call
 * step apart, and bins fine enough for a zoom would draw single datagrams.
 */
export function voipTimeline(f: VoipFacts): TimelineInput {
  const { events, spans } = failoverMarks(f);
  return {
    title: 't2cp-ar: the SIP proxy dies in the middle of the calls, the calls carry on',
    subtitle: `detection ${((f.gateway?.detectionLatencyUs ?? 0) / 1000).toFixed(1)} ms, takeover ${((f.backup.takeoverUs ?? 0) / 1000).toFixed(1)} ms; ` +
      'the re-INVITEs and BYEs after the failure answered by the backup\'s Kamailio',
    series: [series('SIP, phones → proxy (VIP)', f.sip, f.sip.toProxy), series('SIP, proxy (VIP) → phones', f.sip, f.sip.fromProxy)],
    events,
    spans,
    footer: f.footer,
  };
}

/** Writes file.svg, and file.png if rsvg-convert is there; returns the files written. */
export function writeDemoPicture(base: string, input: TimelineInput, opts?: TimelineOptions): string[] {
  writeTimelineSvg(`${base}.svg`, input, opts);
  const png = spawnSync('rsvg-convert', ['-o', `${base}.png`, `${base}.svg`], { timeout: 30_000 });
  return png.status === 0 ? [`${base}.svg`, `${base}.png`] : [`${base}.svg`];
}
