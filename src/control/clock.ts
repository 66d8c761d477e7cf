// Two clocks, in microseconds, as JavaScript numbers (2^53 µs is 285 years:
// exact). Timeouts use the monotonic one (process.hrtime, never steps); only
// messages carry the wall clock (sentUs, boot), compared across hosts by the
// replay guard. Everything that decides on time takes a Clock, so tests drive
// it by hand (FakeClock).

export interface Clock {
  /** Monotonic µs from an arbitrary origin: for timeouts and latencies. */
  monoUs(): number;
  /** Wall clock µs since the Unix epoch: for messages and records. */
  wallUs(): number;
}

const hrUs = (): number => Number(process.hrtime.bigint() / 1000n);

// Date.now() has millisecond resolution. The wall clock here is Date.now()
// anchored once and advanced by the monotonic clock (µs resolution), anchored
// again when the two drift apart by more than 2 ms (NTP stepped the clock).
let anchorWallUs = Date.now() * 1000;
let anchorMonoUs = hrUs();

export const systemClock: Clock = {
  monoUs: hrUs,
  wallUs(): number {
    const mono = hrUs();
    const est = anchorWallUs + (mono - anchorMonoUs);
    const coarse = Date.now() * 1000;
    if (Math.abs(est - coarse) <= 2000) return est;
    anchorWallUs = coarse;
    anchorMonoUs = mono;
    return coarse;
  },
};

/** A clock tests move by hand. */
export class FakeClock implements Clock {
  constructor(
    public mono = 0,
    public wall = 1_700_000_000_000_000,
  ) {}
  monoUs(): number {
    return this.mono;
  }
  wallUs(): number {
    return this.wall;
  }
  advance(us: number): void {
    this.mono += us;
    this.wall += us;
  }
}

export function isoOfUs(wallUs: number): string {
  return new Date(Math.floor(wallUs / 1000)).toISOString();
}
