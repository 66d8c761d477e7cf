// Percentiles of the addon's histograms (capture to injection, replica lag;
// each bucket named by its lower bound, the last one collecting the rest).
import type { LatencyHistogram } from '../addon.js';

export interface LatencySummary {
  samples: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
}

export function summarizeLatency(h: LatencyHistogram): LatencySummary {
  const total = h.buckets.reduce((a, [, n]) => a + n, 0);
  const at = (q: number): number => {
    if (total === 0) return 0;
    const rank = Math.ceil(q * total);
    let seen = 0;
    for (const [us, n] of h.buckets) {
      seen += n;
      if (seen >= rank) return us;
    }
    return h.buckets[h.buckets.length - 1]![0];
  };
  return { samples: total, p50Us: at(0.5), p99Us: at(0.99), maxUs: Math.round(h.maxNs / 1000) };
}

/** The replicas' output lag by service port, summarised; ports without a sample left out. */
export function summarizeReplicaLag(byPort: Record<string, LatencyHistogram>): Record<string, LatencySummary> {
  const out: Record<string, LatencySummary> = {};
  for (const [port, h] of Object.entries(byPort)) {
    const s = summarizeLatency(h);
    if (s.samples) out[port] = s;
  }
  return out;
}
