// What the failure detector keeps in --state-dir (src/state-file.ts): the
// epoch and the side that serves, and the MAC its fence drops. Written before
// the detector acts on a takeover, and again once its fence holds; read at
// start, so that a restarted detector re-engages the fence and goes on
// telling the old primary to stand down instead of believing it serves.
import type { ActiveSide } from '../control/bodies.js';
import { stateFile, type StateFile } from '../state-file.js';

export interface DetectorState {
  version: 1;
  epoch: number;
  active: ActiveSide;
  /** The old primary's MAC, which the gateway fence drops once a takeover began. */
  fencedMac?: string;
  /** When it was written (ISO), for people. */
  updated: string;
}

function check(v: unknown): DetectorState {
  const o = v as Partial<DetectorState> | null;
  if (typeof o !== 'object' || o === null) throw new Error('not an object');
  if (o.version !== 1) throw new Error(`version ${String(o.version)}, not 1`);
  if (!Number.isInteger(o.epoch) || o.epoch! < 0) throw new Error(`epoch ${String(o.epoch)}`);
  if (o.active !== 'primary' && o.active !== 'backup') throw new Error(`active ${String(o.active)}`);
  if (o.fencedMac !== undefined && !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(o.fencedMac)) throw new Error(`fencedMac ${String(o.fencedMac)}`);
  return { version: 1, epoch: o.epoch!, active: o.active, ...(o.fencedMac ? { fencedMac: o.fencedMac } : {}), updated: String(o.updated ?? '') };
}

/** The detector's state file for `instance` in `dir`. */
export function detectorStateFile(dir: string, instance: string): StateFile<DetectorState> {
  return stateFile(dir, `gateway-${instance}`, check);
}
