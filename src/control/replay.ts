// ReplayGuard: refuses authenticated messages seen before, or too old to act
// on. Pure: the wall clock is injected. Call check() only after decode()
// verified the hmac (the guard trusts sender, boot and counter), once per
// datagram, from the one event loop that owns the channel.
//
// Per sender it remembers the newest {boot, counter} accepted. A message is
// accepted when
//   - same boot and a higher counter (any age: heartbeats keep flowing between
//     hosts whose clocks disagree, once the first message got through), or
//   - a newer boot (the sender restarted) and fresh, or
//   - an unknown sender and fresh;
// fresh meaning |sentUs - now| <= maxSkewUs (default 2 s: the hosts' clocks
// must agree that well — run NTP). TAKEOVER and STAND_DOWN must always be
// fresh too: they act, and a receiver that restarted has forgotten the
// counters, so freshness is what stops a captured one from acting again.
// The table of senders is not bounded: only key holders reach it.
import type { MessageTypeName } from './bodies.js';

export type ReplayRejection = 'replay' | 'stale' | 'old-boot';
export const REPLAY_REJECTIONS: readonly ReplayRejection[] = ['replay', 'stale', 'old-boot'];

/** Types that must be fresh whatever the counters say. */
const ALWAYS_FRESH: ReadonlySet<MessageTypeName> = new Set(['TAKEOVER', 'STAND_DOWN']);

export const DEFAULT_MAX_SKEW_US = 2_000_000;

export interface Stamped {
  type: MessageTypeName;
  sender: string;
  boot: number;
  counter: number;
  sentUs: number;
}

export type ReplayVerdict = { ok: true } | { ok: false; reason: ReplayRejection };

export class ReplayGuard {
  private readonly seen = new Map<string, { boot: number; counter: number }>();
  readonly rejected: Record<ReplayRejection, number> = { replay: 0, stale: 0, 'old-boot': 0 };

  constructor(
    private readonly nowWallUs: () => number,
    readonly maxSkewUs: number = DEFAULT_MAX_SKEW_US,
  ) {}

  check(m: Stamped): ReplayVerdict {
    const verdict = this.judge(m);
    if (verdict.ok) this.seen.set(m.sender, { boot: m.boot, counter: m.counter });
    else this.rejected[verdict.reason]++;
    return verdict;
  }

  private judge(m: Stamped): ReplayVerdict {
    const fresh = Math.abs(m.sentUs - this.nowWallUs()) <= this.maxSkewUs;
    const last = this.seen.get(m.sender);
    // Replays first: a captured message sent again is a 'replay' however old.
    if (last && m.boot === last.boot && m.counter <= last.counter) return { ok: false, reason: 'replay' };
    if (last && m.boot < last.boot) return { ok: false, reason: 'old-boot' };
    if (!fresh && (ALWAYS_FRESH.has(m.type) || !last || m.boot > last.boot)) return { ok: false, reason: 'stale' };
    return { ok: true };
  }
}
