// Polling with a deadline: tests wait for a condition, never for a fixed time.

export interface WaitOptions {
  /** Give up after this many milliseconds. */
  timeoutMs: number;
  /** Pause between two polls, in milliseconds (default 50). */
  intervalMs?: number;
  /** What is awaited, for the timeout message. */
  what?: string;
}

/** What a truthy result can be: `cond && value` predicates resolve to `value`'s type. */
export type Truthy<T> = Exclude<T, false | null | undefined | 0 | ''>;

/** Thrown by a predicate when waiting longer is pointless (the awaited process exited). */
export class GiveUp extends Error {}

/**
 * Calls `predicate` until it returns a truthy value (or a promise of one) and resolves to that
 * value. A predicate that throws is treated as "not yet" (the last error is quoted on timeout),
 * except a GiveUp, which ends the wait at once.
 */
export async function waitFor<T>(
  predicate: () => T | Promise<T>,
  opts: WaitOptions,
): Promise<Truthy<T>> {
  const interval = opts.intervalMs ?? 50;
  const deadline = Date.now() + opts.timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await predicate();
      if (v) return v as Truthy<T>;
    } catch (e) {
      if (e instanceof GiveUp) throw e;
      lastError = e;
    }
    if (Date.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, Math.min(interval, Math.max(0, deadline - Date.now()))));
  }
  const why = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
  throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${opts.what ?? 'condition'}${why}`);
}
