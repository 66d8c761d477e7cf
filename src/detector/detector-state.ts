// What the failure detector keeps in --state-dir (src/state-file.ts): the
// epoch and the side that serves, whether the hosts' roles are swapped
// (re-protection), and the MAC its fence drops. Written before
// the detector acts on a takeover, and again once its fence holds; read at
// start, so that a restarted detector re-engages the fence and goes on
// telling the old primary to stand down instead of believing it serves.
import type { ActiveSide } from '../control/bodies.js';
import { stateFile, stateRecord, type StateFile } from '../state-file.js';
import { MAC_RE } from '../options.js';

export interface DetectorState {
  version: 1;
  epoch: number;
  active: ActiveSide;
  /** The old primary's MAC, which the gateway fence drops once a takeover began. */
  fencedMac?: string;
  /**
   * The roles are the configuration's swapped (re-protection): --backup's host serves as the
   * primary (its agent on --primary's port), --primary's stands by (on --backup's port).
   */
  swapped?: boolean;
  /** When it was written (ISO), for people. */
  updated: string;
}

function check(v: unknown): DetectorState {
  const o = stateRecord(v);
  if (o.active !== 'primary' && o.active !== 'backup') throw new Error(`active ${String(o.active)}`);
  const mac = o.fencedMac;
  if (mac !== undefined && (typeof mac !== 'string' || !MAC_RE.test(mac))) throw new Error(`fencedMac ${String(mac)}`);
  if (o.swapped !== undefined && typeof o.swapped !== 'boolean') throw new Error(`swapped ${String(o.swapped)}`);
  return { version: 1, epoch: o.epoch, active: o.active, ...(mac ? { fencedMac: mac } : {}), ...(o.swapped ? { swapped: true } : {}),
    updated: String(o.updated ?? '') };
}

/** The detector's state file for `instance` in `dir`. */
export function detectorStateFile(dir: string, instance: string): StateFile<DetectorState> {
  return stateFile(dir, `gateway-${instance}`, check);
}
