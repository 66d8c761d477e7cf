import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { listeningPorts, parseProcAddress, processAlive, serviceStatus } from '../../src/agent/service-status.js';

const LE = os.endianness() === 'LE';
const HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
/** How this host's kernel prints an IPv4 address in /proc/net/tcp. */
function word(bytes: number[]): string {
  const b = Buffer.from(bytes);
  return (LE ? b.readUInt32LE() : b.readUInt32BE()).toString(16).toUpperCase().padStart(8, '0');
}
const hex4 = (addr: string): string => word(addr.split('.').map(Number));
const line = (local: string, st: string) => `   0: ${local} 00000000:0000 ${st} 00000000:00000000 00:00000000 00000000     0        0 1 1\n`;

describe('service status from /proc', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 't2cp-proc-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('parses IPv4 and IPv6 local addresses as the kernel prints them', () => {
    expect(parseProcAddress(`${hex4('198.18.1.10')}:1B58`)).toEqual({ address: '198.18.1.10', port: 7000 });
    expect(parseProcAddress('00000000000000000000000000000000:1F90')).toEqual({ address: '::', port: 8080 });
    const mapped = `${word([0, 0, 0, 0])}${word([0, 0, 0, 0])}${word([0, 0, 0xff, 0xff])}${hex4('10.0.0.5')}`;
    expect(parseProcAddress(`${mapped}:0050`)).toEqual({ address: '::ffff:10.0.0.5', port: 80 });
  });

  it('counts LISTEN sockets on the VIP or a wildcard only', () => {
    const text = HEADER
      + line(`${hex4('198.18.1.10')}:1B58`, '0A')   // 7000 on the VIP
      + line(`${hex4('0.0.0.0')}:18EB`, '0A')       // 6379 on any
      + line(`${hex4('10.9.9.9')}:0050`, '0A')      // 80 on another address
      + line(`${hex4('198.18.1.10')}:01BB`, '01');  // 443 established, not listening
    expect([...listeningPorts(text, '198.18.1.10')].sort()).toEqual([6379, 7000]);
    expect([...listeningPorts(text)].sort((a, b) => a - b)).toEqual([80, 6379, 7000]);
  });

  it('a zombie or vanished process is dead; a pidfile is read at each check', () => {
    fs.mkdirSync(path.join(dir, '42'));
    fs.writeFileSync(path.join(dir, '42', 'stat'), '42 (my (odd) svc) S 1 42 42 0 -1');
    fs.mkdirSync(path.join(dir, '43'));
    fs.writeFileSync(path.join(dir, '43', 'stat'), '43 (svc) Z 1 43 43 0 -1');
    fs.mkdirSync(path.join(dir, 'net'));
    fs.writeFileSync(path.join(dir, 'net', 'tcp'), HEADER + line(`${hex4('0.0.0.0')}:1B58`, '0A') + line(`${hex4('1.2.3.4')}:1B58`, '01'));
    expect(processAlive(42, dir)).toBe(true);
    expect(processAlive(43, dir)).toBe(false);
    expect(processAlive(44, dir)).toBe(false);
    const pidfile = path.join(dir, 'svc.pid');
    const watch = { pidfile, ports: [7000], procRoot: dir };
    expect(serviceStatus(watch)).toEqual({ alive: false, listening: true }); // no pidfile yet
    fs.writeFileSync(pidfile, '42\n');
    expect(serviceStatus(watch)).toEqual({ alive: true, listening: true });
    fs.writeFileSync(pidfile, '43\n');
    expect(serviceStatus(watch)).toEqual({ alive: false, listening: true });
    expect(serviceStatus({ ports: [7000, 7001], procRoot: dir })).toEqual({ alive: true, listening: false });
  });

  it('UDP ports count when bound (unconnected) on the VIP or a wildcard', () => {
    const udp = path.join(dir, 'udp-root');
    fs.mkdirSync(path.join(udp, 'net'), { recursive: true });
    fs.writeFileSync(path.join(udp, 'net', 'tcp'), HEADER + line(`${hex4('0.0.0.0')}:1B58`, '0A'));
    fs.writeFileSync(path.join(udp, 'net', 'udp'), HEADER
      + line(`${hex4('198.18.1.10')}:13C4`, '07')   // 5060 bound on the VIP
      + line(`${hex4('10.9.9.9')}:2710`, '07')      // 10000 on another address
      + line(`${hex4('198.18.1.10')}:2711`, '01')); // 10001 connected: not a server's
    const watch = { ports: [7000], vip: '198.18.1.10', procRoot: udp };
    expect(serviceStatus({ ...watch, udpPorts: [5060] })).toEqual({ alive: true, listening: true });
    expect(serviceStatus({ ...watch, udpPorts: [5060, 10000] })).toEqual({ alive: true, listening: false });
    expect(serviceStatus({ ...watch, udpPorts: [10001] })).toEqual({ alive: true, listening: false });
    expect(serviceStatus({ ports: [], udpPorts: [5060], vip: '198.18.1.10', procRoot: udp })).toEqual({ alive: true, listening: true });
  });

  it('sees a real listening socket on this host (IPv4 and dual-stack)', async () => {
    const v4 = net.createServer();
    const v6 = net.createServer();
    await new Promise<void>((r) => v4.listen(0, '127.0.0.1', r));
    await new Promise<void>((r) => v6.listen(0, r)); // '::' when the host has IPv6, else 0.0.0.0
    try {
      const p4 = (v4.address() as net.AddressInfo).port;
      const p6 = (v6.address() as net.AddressInfo).port;
      expect(serviceStatus({ ports: [p4, p6], pid: process.pid })).toEqual({ alive: true, listening: true });
      expect(serviceStatus({ ports: [p4], vip: '198.18.1.10' }).listening).toBe(false); // bound to 127.0.0.1 only
      expect(serviceStatus({ ports: [p6], vip: '198.18.1.10' }).listening).toBe(true); // wildcard
    } finally {
      v4.close();
      v6.close();
    }
  });
});
