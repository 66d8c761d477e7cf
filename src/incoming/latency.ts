// Percentiles of the addon's capture-to-injection histogram (1 µs buckets;
// the last bucket collects everything slower).
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
