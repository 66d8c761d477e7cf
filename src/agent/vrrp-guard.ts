// The primary agent's rule for keepalived's notify hooks (`t2cp stand-down
// --vrrp-state STATE`), when keepalived (VRRP) instead of the detector decides
// who serves. Pure apart from the two /proc readers at the end.
//
// keepalived passes every instance through BACKUP once at startup, before it
// can become MASTER, so notify_backup also runs then, on the future master
// too. Standing down then would fence a healthy primary for good. A BACKUP
// notification therefore means "the peer is master now" only when this host
// was MASTER before it, and that is the rule:
//   - FAULT, STOP: stand down (this host gives up mastership: the peer becomes
//     master, and its notify_master makes the backup take over).
//   - MASTER: recorded; never fences (nor unfences: a stand-down is for good).
//   - BACKUP: stands down only when a MASTER hook of this host started before
//     this BACKUP hook (since the agent started); otherwise it is keepalived's
//     startup transition and is ignored (answered, logged, counted).
//   - no state (a person, a script): stand down.
// Order is the order in which keepalived forked the hooks, not the order in
// which their datagrams arrive: the two hooks of a startup (BACKUP, then
// MASTER one advert interval or more later) run concurrently and either may
// reach the agent first. Each hook sends its process's start time (µs since
// boot, from /proc/self/stat: 10 ms steps; a tie counts as BACKUP first, i.e.
// ignored). A MASTER that arrives after a later-started BACKUP that was
// ignored (a quick MASTER -> BACKUP whose datagrams crossed) stands down then.
//
// Limit: the record lives in the agent's memory. An agent restarted while this
// host is MASTER learns it only at the next MASTER notification; until then a
// BACKUP notification is ignored (FAULT and STOP still act).

import { readFileSync } from 'node:fs';
import type { VrrpHookState } from '../control/bodies.js';

export type VrrpVerdict =
  | { act: 'stand-down'; cause: string }
  | { act: 'record'; note: string }
  | { act: 'ignore'; note: string };

export class VrrpGuard {
  /** Start (µs since boot) of the earliest MASTER hook heard. */
  private firstMasterUs: number | undefined;
  /** Start of the latest BACKUP hook ignored for want of an earlier MASTER. */
  private ignoredBackupUs: number | undefined;

  /** Has a MASTER hook of this host been heard since the agent started? */
  get masterSeen(): boolean {
    return this.firstMasterUs !== undefined;
  }

  /** What to do with one local request; `hookStartUs`: when keepalived forked its hook. */
  decide(state: VrrpHookState | undefined, hookStartUs: number): VrrpVerdict {
    switch (state) {
      case undefined:
        return { act: 'stand-down', cause: 'local stand-down request' };
      case 'FAULT':
      case 'STOP':
        return { act: 'stand-down', cause: `keepalived ${state}: this host gave up VRRP mastership` };
      case 'MASTER': {
        this.firstMasterUs = Math.min(this.firstMasterUs ?? hookStartUs, hookStartUs);
        if (this.ignoredBackupUs !== undefined && hookStartUs < this.ignoredBackupUs)
          return { act: 'stand-down', cause: 'keepalived BACKUP after MASTER (their hooks arrived in reverse order): the peer is master' };
        return { act: 'record', note: 'keepalived MASTER recorded: a later BACKUP will stand this primary down' };
      }
      case 'BACKUP':
        if (this.firstMasterUs !== undefined && this.firstMasterUs < hookStartUs)
          return { act: 'stand-down', cause: 'keepalived BACKUP after MASTER: the peer is master' };
        this.ignoredBackupUs = Math.max(this.ignoredBackupUs ?? hookStartUs, hookStartUs);
        return { act: 'ignore', note: "keepalived BACKUP ignored: this host was not MASTER before it (keepalived's startup transition)" };
    }
  }
}

/** USER_HZ: the unit of /proc/<pid>/stat times on every Linux architecture t2cp runs on. */
const TICK_US = 10_000;

/** This process's start, µs since boot: field 22 (starttime) of /proc/self/stat; undefined when unreadable. */
export function processStartBootUs(statText?: string): number | undefined {
  let text = statText;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/stat', 'latin1');
    } catch {
      return undefined;
    }
  }
  // "pid (comm) state ...": comm may hold blanks and parentheses; field 3 follows the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[22 - 3]);
  return Number.isSafeInteger(ticks) && ticks >= 0 ? ticks * TICK_US : undefined;
}

/** Now, µs since boot (/proc/uptime, same clock as processStartBootUs); undefined when unreadable. */
export function bootNowUs(): number | undefined {
  try {
    const s = Number(readFileSync('/proc/uptime', 'latin1').split(' ')[0]);
    return Number.isFinite(s) ? Math.round(s * 1e6) : undefined;
  } catch {
    return undefined;
  }
}
