import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { GATEWAY_COMMAND, heartbeatTiming, PRIMARY_COMMAND, STAND_DOWN_COMMAND, TAKEOVER_COMMAND } from '../../src/config-takeover.js';
import { T2cpError } from '../../src/errors.js';
import { parseBackupArgs } from '../../src/config.js';
import { helpText, parseOptions, portListText, portRuns, type CommandSpec } from '../../src/options.js';

function errorOf<C>(cmd: CommandSpec<C>, argv: string[]): T2cpError {
  try {
    parseOptions(cmd, argv);
  } catch (e) {
    expect(e).toBeInstanceOf(T2cpError);
    expect((e as T2cpError).code).toBe('T2CP_CONFIG');
    return e as T2cpError;
  }
  throw new Error('expected an error');
}

const gw = ['--key-file', 'k', '--primary', '10.0.0.2', '--backup', '10.0.0.3', '--vip', '198.18.1.10', '--ports', '7000'];

describe('t2cp gateway / primary / takeover options', () => {
  it('gateway: defaults, ports filled in, timing in µs with probe interval = interval / 2', () => {
    const c = parseOptions(GATEWAY_COMMAND, gw);
    expect(c).toMatchObject({
      keyFile: 'k', instance: 'main', json: false, mode: 'both', intervalMs: 10, softMisses: 1, hardMisses: 3,
      listen: { address: '0.0.0.0', port: 7390 }, primary: { address: '10.0.0.2', port: 7392 }, backup: { address: '10.0.0.3', port: 7391 },
      backupTimeoutMs: 1000, takeoverTimeoutMs: 5000, standDownTimeoutMs: 500, nice: -10,
    });
    expect(heartbeatTiming(c)).toEqual({ intervalUs: 10_000, softMisses: 1, hardMisses: 3, probeIntervalUs: 5_000 });
    const d = parseOptions(GATEWAY_COMMAND, [...gw, '--interval=1', '--probe-interval', '1', '--mode', 'pull', '--listen', '127.0.0.1:0', '--primary-mac', '02:00:00:00:00:0A']);
    expect(heartbeatTiming(d)).toEqual({ intervalUs: 1_000, softMisses: 1, hardMisses: 3, probeIntervalUs: 1_000 });
    expect(d).toMatchObject({ mode: 'pull', listen: { address: '127.0.0.1', port: 0 }, primaryMac: '02:00:00:00:00:0a' });
  });

  it('gateway: errors name the option and the fix', () => {
    expect(errorOf(GATEWAY_COMMAND, gw.slice(2)).message).toMatch(/missing --key-file FILE.*openssl rand/);
    expect(errorOf(GATEWAY_COMMAND, [...gw, '--interval', '0']).message).toMatch(/--interval 0 is out of range: use 1\.\./);
    expect(errorOf(GATEWAY_COMMAND, [...gw, '--hard-misses', '2', '--soft-misses', '2']).message).toMatch(/--hard-misses 2 must exceed --soft-misses 2/);
    expect(errorOf(GATEWAY_COMMAND, [...gw, '--probe-interval', '20']).message).toMatch(/--probe-interval 20 exceeds --interval 10/);
    expect(errorOf(GATEWAY_COMMAND, [...gw, '--nice', '-21']).message).toMatch(/--nice -21 is out of range: use -20\.\.19/);
    expect(errorOf(GATEWAY_COMMAND, [...gw, '--mode', 'poll']).message).toMatch(/'poll' is not one of push, pull, both/);
    expect(errorOf(GATEWAY_COMMAND, [...gw, '--primary', '10.0.0.2:99999']).message).toMatch(/port 99999 is out of range/);
    expect(errorOf(GATEWAY_COMMAND, [...gw, '--backup', 'backup.lan:7391']).message).toMatch(/'backup\.lan' is not an IPv4 address/);
    expect(errorOf(GATEWAY_COMMAND, [...gw, '--backup', '0.0.0.0']).message).toMatch(/unspecified address/);
    expect(errorOf(GATEWAY_COMMAND, [...gw, '--backup', '10.0.0.2:7392']).message).toMatch(/same endpoint/);
    expect(errorOf(GATEWAY_COMMAND, [...gw, '--primary-mac', 'zz']).message).toMatch(/not a MAC address/);
    expect(errorOf(GATEWAY_COMMAND, [...gw, '--vipp', '1.2.3.4']).message).toMatch(/unknown option '--vipp': see t2cp gateway --help/);
  });

  it('primary: defaults and checks', () => {
    const base = ['--key-file', 'k', '--detector', '10.0.0.1', '--ports', '7000', '--vip', '198.18.1.10'];
    expect(parseOptions(PRIMARY_COMMAND, base)).toMatchObject({
      detector: { address: '10.0.0.1', port: 7390 }, listen: { address: '0.0.0.0', port: 7392 }, ports: [7000], intervalMs: 10, selfFenceAfterMs: 0,
    });
    expect(errorOf(PRIMARY_COMMAND, [...base, '--service-pid', '1', '--service-pidfile', 'f']).message).toMatch(/exclude each other/);
    expect(errorOf(PRIMARY_COMMAND, [...base, '--self-fence-after', '20']).message).toMatch(/shorter than 4 intervals/);
    expect(errorOf(PRIMARY_COMMAND, ['--key-file', 'k', '--detector', '10.0.0.1', '--vip', '198.18.1.10']).message).toMatch(/missing --ports LIST or --udp-ports LIST/);
    expect(parseOptions(PRIMARY_COMMAND, ['--key-file', 'k', '--vip', '198.18.1.10', '--udp-ports', '5060'])).toMatchObject({ ports: [], udpPorts: [5060] });
    const udpOnly = [...gw.slice(0, -2), '--udp-ports', '5060'];
    expect(parseOptions(GATEWAY_COMMAND, udpOnly)).toMatchObject({ ports: [], udpPorts: [5060] });
    expect(errorOf(GATEWAY_COMMAND, gw.slice(0, -2)).message).toMatch(/missing --ports LIST or --udp-ports LIST/);
    // A media range counts as one of the 64 entries, on every role.
    expect(parseOptions(GATEWAY_COMMAND, [...gw.slice(0, -2), '--udp-ports', '5060,10000-10100']).udpPorts).toHaveLength(102);
  });

  it('the example configurations under deploy/etc parse; a config file lacking a required key names the file and the key', () => {
    const here = path.join(path.dirname(new URL(import.meta.url).pathname), '..', '..');
    expect(parseOptions(GATEWAY_COMMAND, ['--config', path.join(here, 'deploy/etc/gateway-main.json')])).toMatchObject({ ports: [7000], metrics: { port: 9466 } });
    expect(parseOptions(PRIMARY_COMMAND, ['--config', path.join(here, 'deploy/etc/primary-main.json')])).toMatchObject({ vip: '198.18.1.10' });
    expect(parseBackupArgs(['--config', path.join(here, 'deploy/etc/backup-main.json')])).toMatchObject({ mirrorIf: 'eth1', events: '/run/t2cp/backup-main.events' });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 't2cp-cfg-'));
    const file = path.join(dir, 'primary-x.json');
    fs.writeFileSync(file, JSON.stringify({ keyFile: 'k', ports: [7000] }));
    expect(errorOf(PRIMARY_COMMAND, ['--config', file]).message).toBe(
      `missing --vip ADDR (or key 'vip' in config file ${file}): service address: the fence silences it when this primary stands down; its listeners (or 0.0.0.0) count as listening`);
    fs.writeFileSync(file, JSON.stringify({ keyFile: 'k', vip: '198.18.1.10', ports: [7000], metric: '0.0.0.0' }));
    expect(errorOf(PRIMARY_COMMAND, ['--config', file]).message).toMatch(new RegExp(`config file ${file}: unknown key 'metric' \\(known: .*metrics`));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('port runs: consecutive ports as one range, in any order, duplicates once', () => {
    expect(portRuns([10002, 5060, 10000, 10001, 10001, 7000])).toEqual([[5060, 5060], [7000, 7000], [10000, 10002]]);
    expect(portListText([5060, ...Array.from({ length: 101 }, (_, i) => 10000 + i)])).toBe('5060,10000-10100');
    expect(portRuns([])).toEqual([]);
  });

  it('takeover: loopback control endpoint by default; --config works for every command', () => {
    expect(parseOptions(TAKEOVER_COMMAND, ['--key-file', 'k'])).toMatchObject({ control: { address: '127.0.0.1', port: 7391 }, reason: 'manual', timeoutMs: 10000, drainMs: 0 });
    expect(parseOptions(TAKEOVER_COMMAND, ['--key-file', 'k', '--drain', '30000'])).toMatchObject({ drainMs: 30000 });
    expect(errorOf(TAKEOVER_COMMAND, ['--key-file', 'k', '--drain', 'soon']).message).toMatch(/--drain/);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 't2cp-cfg-'));
    try {
      const f = path.join(dir, 'g.json');
      fs.writeFileSync(f, JSON.stringify({ keyFile: '/etc/t2cp.key', primary: '10.0.0.2:8000', backup: { address: '10.0.0.3', port: 8001 }, hardMisses: 5, vip: '198.18.1.10', ports: [7000] }));
      expect(parseOptions(GATEWAY_COMMAND, ['--config', f, '--hard-misses', '4'])).toMatchObject({
        keyFile: '/etc/t2cp.key', primary: { port: 8000 }, backup: { port: 8001 }, hardMisses: 4,
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('--help lists every option of each command', () => {
    for (const cmd of [GATEWAY_COMMAND, PRIMARY_COMMAND, TAKEOVER_COMMAND, STAND_DOWN_COMMAND] as CommandSpec<unknown>[]) {
      const h = helpText(cmd);
      expect(h).toMatch(new RegExp(`^usage: t2cp ${cmd.name}`));
      for (const o of cmd.options) expect(h).toContain(o.flag);
      expect(h).toContain('--config FILE');
    }
  });
});
