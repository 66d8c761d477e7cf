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
    expect(errorOf([...base, '--divergence', '80=length']).message).toMatch(/--divergence: '80=length' names port 80, which is not in --ports or --udp-ports \(7000,6379\)/);
    // UDP ports: policies of their own, an exception naming one of them.
    const udp = engineOptions(parseBackupArgs([...base, '--udp-ports', '5060,5070', '--divergence', 'length,5070=off']));
    expect(udp.divergence).toEqual([1, 1]);
    expect(udp.udpDivergence).toEqual([1, 0]);
    expect(errorOf([...base, '--divergence', '']).message).toMatch(/--divergence/);
  });
  it('--udp-ports: a list with ranges, apart from the TCP ports; empty or wrong ranges are one-line errors', () => {
    expect(parseBackupArgs(base).udpPorts).toEqual([]);
    // A UDP service alone: no --ports.
    expect(parseBackupArgs(['--mirror-if', 'eth1', '--vip', '198.18.1.10', '--udp-ports', '5060'])).toMatchObject({ ports: [], udpPorts: [5060] });
    const c = parseBackupArgs([...base, '--udp-ports', '5060,10000-10003,7000']);
    expect(c.udpPorts).toEqual([5060, 10000, 10001, 10002, 10003, 7000]); // 7000 is in --ports too: TCP and UDP are apart
    expect(engineOptions(c).udpPorts).toEqual(c.udpPorts);
    // A media range is one entry of the 64: a hundred and one ports and a SIP port pass.
    expect(parseBackupArgs([...base, '--udp-ports', '5060,10000-10100']).udpPorts).toHaveLength(102);
    for (const [arg, want] of [
      ['', /--udp-ports is empty/],
      ['10003-10000', /--udp-ports: '10003-10000' is not a range: give LOW-HIGH, LOW <= HIGH/],
      ['5060-', /--udp-ports: '5060-' is not a port \(1-65535\) or a range of them/],
      ['1-2-3', /--udp-ports: '1-2-3' is not a range/],
      ['0', /'0' is not a port/],
      [Array.from({ length: 65 }, (_, i) => String(20000 + 2 * i)).join(','), /--udp-ports: 65 ports or ranges of consecutive ports, at most 64/],
    ] as const) {
      const e = errorOf([...base, '--udp-ports', arg]);
      expect(e.code).toBe('T2CP_CONFIG');
      expect(e.message).toMatch(want);
      expect(e.message.split('\n')).toHaveLength(1);
    }
  });
  it('--relay-ports: of --udp-ports, paired through a compared signalling port; else a one-line error naming the fix', () => {
    const c = parseBackupArgs([...base, '--udp-ports', '5060,30000-30099', '--relay-ports', '30000-30099']);
    expect(engineOptions(c).relayPorts).toHaveLength(100);
    expect(engineOptions(parseBackupArgs(base)).relayPorts).toEqual([]);
    for (const [args, want] of [
      [['--udp-ports', '5060,30000-30049', '--relay-ports', '30000-30099'], /--relay-ports: port 30050 is not in --udp-ports: .* give the range in --udp-ports too/],
      [['--udp-ports', '30000-30099', '--relay-ports', '30000-30099'], /--relay-ports: no other UDP port is compared: .*signalling port/],
      [['--udp-ports', '5060,30000-30099', '--relay-ports', '30000-30099', '--divergence', 'strict,5060=off'], /--relay-ports: no other UDP port is compared/],
    ] as const) {
      const e = errorOf([...base, ...args]);
      expect(e.code).toBe('T2CP_CONFIG');
      expect(e.message).toMatch(want);
      expect(e.message.split('\n')).toHaveLength(1);
    }
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
    expect(errorOf([...base, '--ports', '70000']).message).toMatch(/--ports: '70000' is not a port \(1-65535\)/);
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
