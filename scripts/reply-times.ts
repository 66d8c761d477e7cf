// The client-visible stall of a failover, as a client times it: each request
// from the instant it was written to the instant its whole reply was read.
// One measure for every client program that reports it (scripts/echo-client.ts
// for the benchmarks, scripts/client.ts for the demo). Pure.

/** Either side of the failure, ms: the requests outstanding within it are timed. */
export const STALL_WINDOW_MS = 1000;

/** Wall-clock ms, fractional: the same clock as the failure instants (bash's EPOCHREALTIME). */
export const wallMs = (): number => performance.timeOrigin + performance.now();

/** One request: when it was written, and when its whole reply was read (null: never). */
export type RequestTimes = [sentMs: number, answeredMs: number | null];

/** One request's time from written to its whole reply read, and when that reply came (null: never). */
export interface ReplyTime { ms: number; answeredMs: number | null }

/**
 * The longest request->reply times among the requests outstanding at some instant within windowMs
 * either side of the failure, apart by when the reply came: `before` the failure (the round trips
 * under the load of the moment), and at or `after` it (the stall the failure caused; a request
 * never answered counts until untilMs, a lower bound). null where there was no such request.
 */
export interface LongestReplies {
  before: ReplyTime | null;
  after: ReplyTime | null;
  /** When the first reply at or after the failure came, whatever the window: the client resumed then. */
  firstAfterMs: number | null;
  /**
   * The longest a request of the `after` side waited past the failure instant: its reply's time
   * from the later of its writing and the failure. A reply the service was slow to give before
   * the failure counts from the failure on: what the server took while it was alive is its own.
   */
  pastFailureMs: number | null;
}

/** Requests in the order they were written. */
export function longestReplies(requests: Iterable<RequestTimes>, failMs: number, windowMs: number, untilMs: number): LongestReplies {
  const out: LongestReplies = { before: null, after: null, firstAfterMs: null, pastFailureMs: null };
  for (const [sentMs, answeredMs] of requests) {
    if (answeredMs !== null && answeredMs >= failMs) out.firstAfterMs = Math.min(out.firstAfterMs ?? Infinity, answeredMs);
    if (sentMs > failMs + windowMs || (answeredMs !== null && answeredMs < failMs - windowMs)) continue;
    const ms = (answeredMs ?? untilMs) - sentMs;
    const side = answeredMs !== null && answeredMs < failMs ? 'before' : 'after';
    if (out[side] === null || ms > out[side].ms) out[side] = { ms, answeredMs };
    if (side === 'after') out.pastFailureMs = Math.max(out.pastFailureMs ?? 0, (answeredMs ?? untilMs) - Math.max(sentMs, failMs));
  }
  return out;
}

/** The longer of the two: the client's longest wait around the failure, either side. */
export function longestAround(r: LongestReplies): ReplyTime | null {
  return r.before === null || (r.after !== null && r.after.ms >= r.before.ms) ? r.after : r.before;
}
