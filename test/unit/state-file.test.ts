// --state-dir files (src/state-file.ts, the detector's in
// src/detector/detector-state.ts): absent is no state, a write replaces the
// whole file, a damaged file is refused naming itself and the fix.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { detectorStateFile } from '../../src/detector/detector-state.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 't2cp-state-'));
  dirs.push(d);
  return d;
}

describe('state files', () => {
  it('none yet, then what was written last; the folder made, the file 0600, no temporary left', () => {
    const dir = path.join(tmp(), 'state');
    const f = detectorStateFile(dir, 'main');
    expect(f.read()).toBeUndefined();
    f.write({ version: 1, epoch: 1, active: 'backup', fencedMac: '02:00:5e:00:00:0a', updated: '2026-12-06T00:00:00.000Z' });
    f.write({ version: 1, epoch: 2, active: 'backup', updated: '2026-12-06T00:00:01.000Z' });
    expect(f.read()).toEqual({ version: 1, epoch: 2, active: 'backup', updated: '2026-12-06T00:00:01.000Z' });
    expect(f.path).toBe(path.join(dir, 'gateway-main.json'));
    expect(fs.statSync(f.path).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(dir)).toEqual(['gateway-main.json']);
  });

  it('a damaged file is refused, naming the file and what to do', () => {
    const dir = tmp();
    const f = detectorStateFile(dir, 'main');
    for (const [text, why] of [['{"version":1,"epoch":', /Unexpected end|JSON/], ['{"version":2,"epoch":1,"active":"backup"}', /version 2/],
      ['{"version":1,"epoch":-1,"active":"backup"}', /epoch -1/], ['{"version":1,"epoch":1,"active":"gateway"}', /active gateway/],
      ['{"version":1,"epoch":1,"active":"backup","fencedMac":"nope"}', /fencedMac nope/]] as const) {
      fs.writeFileSync(f.path, text);
      let err: unknown;
      try {
        f.read();
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ code: 'T2CP_STATE' });
      expect((err as Error).message).toContain(f.path);
      expect((err as Error).message).toMatch(why);
      expect((err as Error).message).toContain('move it away');
    }
  });

  it('a folder that cannot be written says so', () => {
    const dir = tmp();
    fs.writeFileSync(path.join(dir, 'file'), '');
    const f = detectorStateFile(path.join(dir, 'file'), 'main'); // a file where the folder should be
    expect(() => f.write({ version: 1, epoch: 1, active: 'backup', updated: '' })).toThrow(/cannot write state file/);
  });
});
