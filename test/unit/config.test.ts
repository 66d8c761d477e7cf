import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { backupHelp, engineOptions, parseBackupArgs } from '../../src/config.js';
import { T2cpError } from '../../src/errors.js';

const base = ['--mirror-if', 'eth1', '--vip', '198.18.1.10', '--ports', '7000,6379'];

function errorOf(argv: string[]): T2cpError {
  try {
    parseBackupArgs(argv);
  } catch (e) {
    expect(e).toBeInstanceOf(T2cpError);
    return e as T2cpError;
  }
  throw new Error('expected an error');
}

describe('t2cp backup options', () => {
  it('parses the issue example with defaults', () => {
    const c = parseBackupArgs(base);
    expect(c).toMatchObject({ mirrorIf: 'eth1', vip: '198.18.1.10', ports: [7000, 6379], instance: 'main', queue: 7300 });
    const e = engineOptions(c);
    expect(e.nftTable).toBe('t2cp_main');
    expect(e.tunName).toBe('t2cp-main');
    expect(e.tunName.length).toBeLessThanOrEqual(15);
  });
  it('--divergence: a policy for every port, then PORT=POLICY exceptions; strict by default', () => {
    expect(engineOptions(parseBackupArgs(base)).divergence).toEqual([2, 2]);
    expect(engineOptions(parseBackupArgs([...base, '--divergence', 'length'])).divergence).toEqual([1, 1]);
    expect(engineOptions(parseBackupArgs([...base, '--divergence', 'off,6379=strict'])).divergence).toEqual([0, 2]);
    expect(engineOptions(parseBackupArgs([...base, '--divergence', '7000=length'])).divergence).toEqual([1, 2]);
    const bad = errorOf([...base, '--divergence', 'loose']);
    expect(bad.code).toBe('T2CP_CONFIG');
    expect(bad.message).toMatch(/--divergence: .*one of off, length, strict.*'loose' is not one/);
    expect(errorOf([...base, '--divergence', '80=length']).message).toMatch(/--divergence: '80=length' names port 80, which is not in --ports \(7000,6379\)/);
    expect(errorOf([...base, '--divergence', '']).message).toMatch(/--divergence/);
  });
  it('accepts --flag=value, sizes with suffixes, and dedups ports', () => {
    const c = parseBackupArgs([...base, '--flow-buffer=4m', '--ports', '7000,7000', '--json']);
    expect(c.flowBuffer).toBe(4 << 20);
    expect(c.ports).toEqual([7000]);
    expect(c.json).toBe(true);
  });
  it('names the wrong option and the fix', () => {
    expect(errorOf([...base, '--bogus']).message).toMatch(/unknown option '--bogus'.*--help/);
    expect(errorOf(['--mirror-if', 'eth1', '--vip', '198.18.1.10', '--ports', '']).message).toMatch(/--ports is empty.*e\.g\./);
    expect(errorOf(['--mirror-if', 'eth1', '--vip', '198.18.1.10']).message).toMatch(/missing --ports/);
    expect(errorOf([...base, '--ports', '70000']).message).toMatch(/'70000' is not a TCP port/);
    expect(errorOf([...base, '--vip', '1.2.3']).message).toMatch(/not an IPv4 address/);
    expect(errorOf([...base, '--vip', '224.0.0.1']).message).toMatch(/multicast/);
    expect(errorOf([...base, '--max-flows', '0']).message).toMatch(/out of range/);
    expect(errorOf([...base, '--instance', 'much-too-long-name']).message).toMatch(/--instance/);
    expect(errorOf([...base, '--queue']).message).toMatch(/--queue needs a value/);
  });
  it('reads a config file, flags win, unknown keys are named', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 't2cp-cfg-'));
    try {
      const f = path.join(dir, 'c.json');
      fs.writeFileSync(f, JSON.stringify({ mirrorIf: 'eth2', vip: '198.18.1.11', ports: [80], maxFlows: 10 }));
      expect(parseBackupArgs(['--config', f, '--max-flows', '20'])).toMatchObject({ mirrorIf: 'eth2', ports: [80], maxFlows: 20 });
      fs.writeFileSync(f, JSON.stringify({ mirrorIf: 'eth2', vip: '198.18.1.11', ports: [80], maxflows: 10 }));
      expect(errorOf(['--config', f]).message).toMatch(/unknown key 'maxflows'/);
      fs.writeFileSync(f, '{not json');
      expect(errorOf(['--config', f]).message).toMatch(/config file .*c\.json/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  it('--help lists every option', () => {
    const h = backupHelp();
    for (const flag of ['--mirror-if', '--vip', '--ports', '--instance', '--queue', '--max-flows', '--flow-buffer', '--config'])
      expect(h).toContain(flag);
  });
});
