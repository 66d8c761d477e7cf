// The backup's fetching of the recorder's UDP records (src/backup/udp-sync.ts):
// what it asks, what it hands the engine, and when it stops.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SYNC_MS, UdpSync, type UdpManifestBody } from '../../src/backup/udp-sync.js';
import type { Logger } from '../../src/log.js';

const BOOT = 1_700_000_000_000_000;

function records(n: number): string {
  return Buffer.alloc(n * 16, 1).toString('base64');
}

function lab(takenOver = () => false, mac?: string) {
  const requests: { after: number; fromNow: boolean; mac?: string }[] = [];
  const given: { first: number; count: number }[] = [];
  const asked: string[] = [];
  const warnings: string[] = [];
  const log = { info: () => {}, warn: (m: string) => warnings.push(m), error: () => {}, debug: () => {} } as unknown as Logger;
  const sync = new UdpSync({
    request: (b) => requests.push(b),
    askResupply: (r) => asked.push(r),
    records: (first, r) => given.push({ first, count: r.length / 16 }),
    takenOver,
    ...(mac ? { mac } : {}),
    log,
  });
  const manifest = (m: Partial<UdpManifestBody>) =>
    sync.onManifest({ boot: BOOT, first: 1, next: 1, lost: 0, more: false, cut: false, records: '', ...m });
  return { sync, requests, given, asked, warnings, manifest };
}

describe('udp sync: the recorder\'s records of the datagrams, fetched for the engine', () => {
  beforeEach(() => { vi.useFakeTimers(); });
  afterEach(() => { vi.useRealTimers(); });

  it('starts where the recorder\'s numbering is, then takes each record once, in order', () => {
    const l = lab();
    expect(l.requests).toEqual([{ after: 0, fromNow: true }]);
    l.manifest({ first: 40, next: 40 });
    expect(l.given).toEqual([{ first: 40, count: 0 }]);
    vi.advanceTimersByTime(SYNC_MS);
    expect(l.requests.at(-1)).toEqual({ after: 40, fromNow: false });
    l.manifest({ first: 40, next: 43, records: records(3) });
    expect(l.given.at(-1)).toEqual({ first: 40, count: 3 });
    // The same answer again (a request repeated): nothing twice.
    l.manifest({ first: 40, next: 43, records: records(3) });
    expect(l.given.at(-1)).toEqual({ first: 43, count: 0 });
    // An answer overlapping what was taken: only the new part.
    l.manifest({ first: 42, next: 45, records: records(3) });
    expect(l.given.at(-1)).toEqual({ first: 43, count: 2 });
    l.sync.stop();
  });

  it('asks again at once while more records wait, and repeats an unanswered request', () => {
    const l = lab();
    l.manifest({ first: 1, next: 1 });
    vi.advanceTimersByTime(SYNC_MS);
    const before = l.requests.length;
    l.manifest({ first: 1, next: 65, more: true, records: records(64) });
    expect(l.requests.length).toBe(before + 1);
    expect(l.requests.at(-1)).toEqual({ after: 65, fromNow: false });
    // No answer: not asked every period, but again after the wait.
    const n = l.requests.length;
    vi.advanceTimersByTime(5 * SYNC_MS);
    expect(l.requests.length).toBe(n);
    vi.advanceTimersByTime(100);
    expect(l.requests.length).toBeGreaterThan(n);
    l.sync.stop();
  });

  it('says when records were evicted before it fetched them', () => {
    const l = lab();
    l.manifest({ first: 1, next: 1 });
    l.manifest({ first: 10, next: 12, lost: 9, records: records(2) });
    expect(l.given.at(-1)).toEqual({ first: 10, count: 2 });
    expect(l.sync.stats.lost).toBe(9);
    expect(l.warnings.join()).toMatch(/evicted/);
    l.sync.stop();
  });

  it('a restarted recorder numbers anew: taken from its next number', () => {
    const l = lab();
    l.manifest({ first: 500, next: 500 });
    l.manifest({ boot: BOOT + 1, first: 3, next: 3 });
    expect(l.warnings.join()).toMatch(/started again/);
    l.manifest({ boot: BOOT + 1, first: 3, next: 5, records: records(2) });
    expect(l.given.at(-1)).toEqual({ first: 3, count: 2 });
    l.sync.stop();
  });

  it('after a takeover, stops fetching at the cut but still asks for what is missing', () => {
    let taken = false;
    const l = lab(() => taken);
    l.manifest({ first: 1, next: 1 });
    l.manifest({ first: 1, next: 2, cut: true, records: records(1) });
    vi.advanceTimersByTime(SYNC_MS);
    const n = l.requests.length;
    expect(n).toBe(2);  // replicating: a cut (an earlier takeover's) does not stop it
    taken = true;
    l.manifest({ first: 2, next: 3, cut: true, records: records(1) });
    vi.advanceTimersByTime(10 * SYNC_MS + 200);
    expect(l.requests.length).toBe(n);
    l.sync.ask(2);
    l.sync.ask(7);
    vi.runAllTicks();
    vi.advanceTimersByTime(1);
    expect(l.asked).toEqual(['2,7']);
    l.sync.stop();
  });

  it('names this host\'s MAC; the records the gateway forwarded to it go nowhere, the others in runs by number', () => {
    const mac = '02:00:00:00:00:0b';
    const l = lab(() => true, mac);
    expect(l.requests).toEqual([{ after: 0, fromNow: true, mac }]);
    l.manifest({ first: 1, next: 1 });
    // 1..8 recorded; 4, 5 and 8 went to this host itself once the VIP moved.
    l.manifest({ first: 1, next: 9, records: records(8), direct: '4,5,8' });
    expect(l.given.slice(1)).toEqual([{ first: 1, count: 3 }, { first: 6, count: 2 }]);
    expect(l.sync.stats).toMatchObject({ records: 5, direct: 3 });
    // Every record direct: the engine still hears that records come.
    l.manifest({ first: 9, next: 11, records: records(2), direct: '9,10' });
    expect(l.given.at(-1)).toEqual({ first: 11, count: 0 });
    // Numbers outside the records taken (repeated, or not numbers) are not counted.
    l.manifest({ first: 10, next: 12, records: records(2), direct: '10,x,12' });
    expect(l.given.at(-1)).toEqual({ first: 11, count: 1 });
    expect(l.sync.stats).toMatchObject({ records: 6, direct: 5 });
    l.sync.stop();
  });
});
