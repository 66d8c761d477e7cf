// What `t2cp backup` keeps in --state-dir (src/state-file.ts): that it took
// over, at which epoch, and where its kernel translator is pinned. Written
// once the takeover is done and the translator pinned; read at start, so that
// a backup killed or restarted after a takeover (systemd's Restart=) reclaims
// the taken-over connections — the pinned programs go on translating them —
// instead of starting to replicate again.
import { stateFile, stateRecord, type StateFile } from '../state-file.js';

export interface BackupKept {
  version: 1;
  epoch: number;
  active: boolean;
  /** Where the kernel translator is pinned; null: the queue translated, in the process that ended. */
  pinned: string | null;
  vip: string;
  vipIf: string;
  /** When it was written (ISO), for people. */
  updated: string;
}

function check(v: unknown): BackupKept {
  const o = stateRecord(v);
  if (typeof o.active !== 'boolean') throw new Error(`active ${String(o.active)}`);
  if (o.pinned !== null && typeof o.pinned !== 'string') throw new Error(`pinned ${String(o.pinned)}`);
  if (typeof o.vip !== 'string' || typeof o.vipIf !== 'string') throw new Error('vip or vipIf missing');
  return { version: 1, epoch: o.epoch, active: o.active, pinned: o.pinned, vip: o.vip, vipIf: o.vipIf, updated: String(o.updated ?? '') };
}

/** The backup's state file for `instance` in `dir`. */
export function backupStateFile(dir: string, instance: string): StateFile<BackupKept> {
  return stateFile(dir, `backup-${instance}`, check);
}
