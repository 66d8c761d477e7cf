// What the primary agent keeps in --state-dir (src/state-file.ts): that this
// primary stood down, and in which epoch. Written as soon as its fence holds,
// before it acknowledges; read at start, so that an agent restarted on a
// replaced primary (a crash, systemd's Restart=, a reboot) fences again before
// anything else instead of serving on a stale view. Only removing the file
// (with the agent stopped) makes the host a primary that serves again.
import { stateFile, stateRecord, type StateFile } from '../state-file.js';

export interface AgentState {
  version: 1;
  epoch: number;
  stoodDown: boolean;
  /** When it was written (ISO), for people. */
  updated: string;
}

function check(v: unknown): AgentState {
  const o = stateRecord(v);
  if (typeof o.stoodDown !== 'boolean') throw new Error(`stoodDown ${String(o.stoodDown)}`);
  return { version: 1, epoch: o.epoch, stoodDown: o.stoodDown, updated: String(o.updated ?? '') };
}

/** The agent's state file for `instance` in `dir`. */
export function agentStateFile(dir: string, instance: string): StateFile<AgentState> {
  return stateFile(dir, `primary-${instance}`, check);
}
