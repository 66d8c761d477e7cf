import { describe, expect, it } from 'vitest';
import { longestAround, longestReplies, type RequestTimes } from '../../scripts/reply-times.js';

const FAIL = 10_000;
const WINDOW = 1000;

describe('longestReplies: the client-visible stall as a client times it', () => {
  it('takes the requests outstanding near the failure, apart by when their reply came', () => {
    const requests: RequestTimes[] = [
      [8_000, 8_400],           // answered before the window: not counted
      [9_500, 9_502],           // answered before the failure, in the window
      [9_990, 10_040],          // outstanding at the failure: the stall
      [10_050, 10_051],
      [11_500, 11_900],         // sent after the window: not counted
    ];
    const r = longestReplies(requests, FAIL, WINDOW, 20_000);
    expect(r).toEqual({ before: { ms: 2, answeredMs: 9_502 }, after: { ms: 50, answeredMs: 10_040 }, firstAfterMs: 10_040, pastFailureMs: 40 });
    expect(longestAround(r)).toEqual({ ms: 50, answeredMs: 10_040 });
  });

  it('keeps a slow reply before the failure out of the stall, not out of the longest around it', () => {
    const r = longestReplies([[9_000, 9_300], [9_990, 10_030]], FAIL, WINDOW, 20_000);
    expect(r.after?.ms).toBe(40);
    expect(longestAround(r)?.ms).toBe(300);
  });

  it('counts a request never answered until the given end, as a lower bound', () => {
    const r = longestReplies([[9_995, 9_996], [9_999, null]], FAIL, WINDOW, 10_300);
    expect(r.after).toEqual({ ms: 301, answeredMs: null });
  });

  it('has nothing for a connection with no request near the failure (an idle one)', () => {
    const r = longestReplies([[1_000, 1_001], [16_000, 16_001]], FAIL, WINDOW, 20_000);
    expect(r).toEqual({ before: null, after: null, firstAfterMs: 16_001, pastFailureMs: null });
    expect(longestAround(r)).toBeNull();
  });

  it('counts a request sent long before the failure but answered inside the window', () => {
    expect(longestReplies([[7_000, 10_100]], FAIL, WINDOW, 20_000).after?.ms).toBe(3_100);
  });

  it('counts the wait past the failure from the failure for a request the service was slow on', () => {
    // Written 700 ms before the failure, unanswered by the live primary, answered 38 ms after it;
    // a later request waited 60 ms, all of it past the failure.
    const r = longestReplies([[9_300, 10_038], [10_040, 10_100]], FAIL, WINDOW, 20_000);
    expect(r.after?.ms).toBe(738);
    expect(r.pastFailureMs).toBe(60);
  });

  it('counts a request never answered past the failure until the given end', () => {
    expect(longestReplies([[9_900, null]], FAIL, WINDOW, 10_500).pastFailureMs).toBe(500);
  });
});
