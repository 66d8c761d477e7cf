// What a role must remember across its own restarts (--state-dir): one JSON
// file per role and instance, replaced whole and synced before the role acts
// on what it says (write a temporary file, fsync it, rename it over the old
// one, fsync the folder): a crash or a power cut leaves the old state or the
// new one, never half of either. Read once at start.
import fs from 'node:fs';
import path from 'node:path';
import { T2cpError } from './errors.js';

export interface StateFile<T> {
  readonly path: string;
  /** The last state written, or undefined when there is none yet. Throws (T2CP_STATE) on a damaged file. */
  read(): T | undefined;
  /** Replace the state; synced when it returns. Throws (T2CP_STATE) when it cannot be written. */
  write(state: T): void;
}

/**
 * `dir`/`name`.json. `check` turns the parsed JSON into a T, throwing an
 * Error that says what is wrong with it. The folder is made (0700) if absent.
 */
export function stateFile<T>(dir: string, name: string, check: (v: unknown) => T): StateFile<T> {
  const file = path.join(dir, `${name}.json`);
  const damaged = (why: string): T2cpError => new T2cpError(
    `state file ${file} is damaged (${why}): t2cp did not write it so; look at it, then move it away to start without it`, 'T2CP_STATE');
  return {
    path: file,
    read() {
      let text: string;
      try {
        text = fs.readFileSync(file, 'utf8');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw new T2cpError(`cannot read state file ${file}: ${(e as Error).message}`, 'T2CP_STATE');
      }
      let v: unknown;
      try {
        v = JSON.parse(text);
      } catch (e) {
        throw damaged((e as Error).message);
      }
      try {
        return check(v);
      } catch (e) {
        throw damaged((e as Error).message);
      }
    },
    write(state) {
      const tmp = `${file}.tmp`;
      try {
        fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
        const fd = fs.openSync(tmp, 'w', 0o600);
        try {
          fs.writeSync(fd, JSON.stringify(state) + '\n');
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
        fs.renameSync(tmp, file);
        const d = fs.openSync(dir, 'r');
        try {
          fs.fsyncSync(d);
        } finally {
          fs.closeSync(d);
        }
      } catch (e) {
        throw new T2cpError(`cannot write state file ${file}: ${(e as Error).message}`, 'T2CP_STATE');
      }
    },
  };
}

/** What every state file holds: an object, version 1, a whole epoch; throws what is wrong. */
export function stateRecord(v: unknown): Record<string, unknown> & { epoch: number } {
  const o = v as Record<string, unknown> | null;
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new Error('not an object');
  if (o.version !== 1) throw new Error(`version ${String(o.version)}, not 1`);
  if (!Number.isInteger(o.epoch) || (o.epoch as number) < 0) throw new Error(`epoch ${String(o.epoch)}`);
  return o as Record<string, unknown> & { epoch: number };
}
