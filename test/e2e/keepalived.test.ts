// keepalived (VRRP) on the testbed: as the external cluster manager whose notify_master triggers a
// takeover (it must leave the VIP alone), and as the IP-only failover baseline (it moves the VIP).
// The primary fails by losing its link (`ip link set e0 down` in its namespace).

import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { formatIpOnly, runIpOnly } from '../../bench/ip-only.js';
import {
  ensureKeepalived, keepalivedConfig, masterDownMs, placeholderVip, startKeepalived, timedLinkDown, type Keepalived,
} from '../../scripts/keepalived.js';
import type { Testbed } from '../../scripts/testbed.js';
import { waitFor } from '../../scripts/wait.js';
import { collect, waitForExit } from './harness.js';
import { useLab } from './lab.js';

const PRIMARY_PRIORITY = 150;
const BACKUP_PRIORITY = 100;
/**
 * What the failover bound allows beyond the master-down interval: the notify script's fork and
 * exec, and scheduling on a shared 2-CPU machine (keepalived, bash and the tests all compete).
 */
const SLACK_MS = 150;
const STARTUP_MS = 15_000;

beforeAll(() => { ensureKeepalived(); }, 320_000);

const addrsOn = async (tb: Testbed, ns: string, dev: string): Promise<string[]> =>
  (await tb.exec(ns, ['ip', '-4', '-o', 'addr', 'show', 'dev', dev])).stdout.split('\n')
    .map((l) => /inet (\S+)/.exec(l)?.[1]).filter((a): a is string => !!a);

describe('keepalived configuration', () => {
  it('writes VRRPv3 with unicast, a placeholder instead of a VIP, and refuses what keepalived would not take', () => {
    const base = { role: 'backup' as const, iface: 'e0', vrid: 7, priority: 100, advertIntMs: 10, peerAddr: '198.18.1.2' };
    const conf = keepalivedConfig({ ...base, preempt: false }, '/x/notify.sh');
    expect(conf).toMatch(/advert_int 0\.01\n/);
    expect(conf).toMatch(/version 3\n/);
    expect(conf).toMatch(/nopreempt\n/);
    expect(conf).toMatch(/check_unicast_src\n\s+unicast_peer \{\n\s+198\.18\.1\.2\n/);
    expect(conf).toContain(`${placeholderVip(7)}/32 dev lo scope host`);
    expect(keepalivedConfig({ ...base, manageVip: '198.18.1.10' }, '/x/n')).toContain('198.18.1.10/32 dev e0');
    expect(() => keepalivedConfig({ ...base, advertIntMs: 15 }, '/x/n')).toThrow(/multiple of 10/);
    expect(() => keepalivedConfig({ ...base, advertIntMs: 0 }, '/x/n')).toThrow(/advertIntMs/);
    expect(() => keepalivedConfig({ ...base, vrid: 256 }, '/x/n')).toThrow(/vrid/);
    expect(() => keepalivedConfig(base, '/x y/n')).toThrow(/plain/);
    expect(masterDownMs(10, 100)).toBeCloseTo(36.09, 2);
  });
});

describe('keepalived as the cluster manager (no VIP)', () => {
  const lab = useLab('keepalived-trigger', { perTest: true });

  it('runs the backup\'s notify_master within 3 x advert + skew of the primary losing its link, and never touches the VIP',
    { timeout: 60_000 }, async () => {
      const { tb, dir } = lab;
      const advertIntMs = 10;
      const marks = { master: path.join(dir, 'backup-master'), standDown: path.join(dir, 'primary-stand-down') };
      // The hooks are argv, not shell text: an argument with blanks and quotes must arrive intact.
      const hook = (file: string, text: string): string[] => ['bash', '-c', 'printf "%s\\n" "$1" >> "$2"', 'hook', text, file];
      const common = { iface: tb.ifaces.primaryLan, vrid: 42, advertIntMs, preempt: false };
      // nopreempt (as a takeover needs: a returning primary must not take the VIP back), so the
      // primary starts first and is master before the backup exists.
      const primary: Keepalived = await startKeepalived(tb, tb.ns.primary, dir, {
        ...common, role: 'primary', priority: PRIMARY_PRIORITY, peerAddr: tb.addr.backup,
        notifyBackup: hook(marks.standDown, 'backup'), notifyFault: hook(marks.standDown, 'fault'),
      });
      await primary.waitForState('MASTER', { timeoutMs: STARTUP_MS });
      const backup: Keepalived = await startKeepalived(tb, tb.ns.backup, dir, {
        ...common, role: 'backup', priority: BACKUP_PRIORITY, peerAddr: tb.addr.primary,
        notifyMaster: hook(marks.master, "take over: it's me"),
      });
      await backup.waitForState('BACKUP', { timeoutMs: STARTUP_MS });
      // Some adverts pass; the backup stays backup, the VIP stays where the testbed put it.
      await new Promise((r) => setTimeout(r, 20 * advertIntMs));
      expect(primary.state()).toBe('MASTER');
      expect(backup.transitions().map((t) => t.state)).toEqual(['BACKUP']);
      expect(fs.existsSync(marks.master)).toBe(false);
      expect(await addrsOn(tb, tb.ns.primary, 'e0')).toContain(`${tb.addr.vip}/24`);
      expect(await addrsOn(tb, tb.ns.primary, 'lo')).toContain(`${placeholderVip(42)}/32`);
      // keepalived enters BACKUP once at startup: the stand-down hook ran then, harmlessly.
      expect(primary.transitions().map((t) => t.state)).toEqual(['BACKUP', 'MASTER']);
      expect(fs.readFileSync(marks.standDown, 'utf8')).toBe('backup\n');

      const { beforeUs, afterUs } = timedLinkDown(tb.ns.primary, 'e0');
      const master = await backup.waitForState('MASTER', { timeoutMs: 5_000, afterUs: beforeUs });
      const fault = await primary.waitForState('FAULT', { timeoutMs: 5_000, afterUs: beforeUs });
      const detectionMs = (master.timeUs - afterUs) / 1000;
      const bound = masterDownMs(advertIntMs, BACKUP_PRIORITY) + SLACK_MS;
      console.log(`keepalived advert ${advertIntMs} ms: backup MASTER ${detectionMs.toFixed(1)} ms after the link went down `
        + `(master-down interval ${masterDownMs(advertIntMs, BACKUP_PRIORITY).toFixed(1)} ms), primary FAULT after `
        + `${((fault.timeUs - afterUs) / 1000).toFixed(1)} ms`);
      expect(detectionMs).toBeLessThanOrEqual(bound);
      expect(master.timeUs).toBeGreaterThan(beforeUs);

      await waitFor(() => fs.existsSync(marks.master) && fs.readFileSync(marks.master, 'utf8') === "take over: it's me\n",
        { timeoutMs: 5_000, what: 'the backup\'s notify_master hook' });
      await waitFor(() => fs.readFileSync(marks.standDown, 'utf8') === 'backup\nfault\n',
        { timeoutMs: 5_000, what: 'the primary\'s notify_fault hook' });
      // keepalived moved no real address: the VIP is still on the primary only; the placeholder moved.
      expect(await addrsOn(tb, tb.ns.backup, 'e0')).toEqual([`${tb.addr.backup}/24`]);
      expect(await addrsOn(tb, tb.ns.primary, 'e0')).toContain(`${tb.addr.vip}/24`);
      expect(await addrsOn(tb, tb.ns.backup, 'lo')).toContain(`${placeholderVip(42)}/32`);

      await backup.stop();
      await primary.stop();
      expect(backup.child.exitCode).toBe(0);
      expect(primary.child.exitCode).toBe(0);
    });
});

describe('keepalived as the IP-only failover', () => {
  const lab = useLab('keepalived-ip-only', { perTest: true });

  it('moves the VIP: after the primary loses its link the backup answers at the VIP', { timeout: 60_000 }, async () => {
    const { tb, dir } = lab;
    const advertIntMs = 100;
    const port = 7200;
    const vip = tb.addr.vip;
    await tb.exec(tb.ns.primary, ['ip', 'addr', 'del', `${vip}/24`, 'dev', 'e0']); // keepalived owns it now
    const common = { iface: 'e0', vrid: 43, advertIntMs, manageVip: vip };
    const primary = await startKeepalived(tb, tb.ns.primary, dir,
      { ...common, role: 'primary', priority: PRIMARY_PRIORITY, peerAddr: tb.addr.backup });
    await primary.waitForState('MASTER', { timeoutMs: STARTUP_MS });
    const backup = await startKeepalived(tb, tb.ns.backup, dir,
      { ...common, role: 'backup', priority: BACKUP_PRIORITY, peerAddr: tb.addr.primary });
    await backup.waitForState('BACKUP', { timeoutMs: STARTUP_MS });
    await waitFor(async () => (await addrsOn(tb, tb.ns.primary, 'e0')).includes(`${vip}/32`), { timeoutMs: 5_000, what: 'the VIP on the primary' });
    expect(await addrsOn(tb, tb.ns.backup, 'e0')).toEqual([`${tb.addr.backup}/24`]);

    // A listener on the backup only: before the failover the VIP is the primary's, which refuses.
    const listener = tb.spawn(tb.ns.backup, [process.execPath, '-e', `
      require('net').createServer((s) => s.end('backup\\n')).listen(${port}, '0.0.0.0', () => console.log('ready'));`]);
    const lout = collect(listener);
    await waitFor(() => lout.stdout.includes('ready'), { timeoutMs: 10_000, what: 'listener on the backup' });
    // Each attempt: connect to the VIP with a 1 s limit and print what came back (or the error).
    const ask = async (): Promise<string> => (await tb.exec(tb.ns.client, [process.execPath, '-e', `
      const s = require('net').connect(${port}, '${vip}'); let got = '';
      const t = setTimeout(() => { console.log('timeout'); process.exit(0); }, 1000);
      s.on('data', (d) => { got += d; }); s.on('end', () => { clearTimeout(t); console.log(got.trim()); process.exit(0); });
      s.on('error', (e) => { clearTimeout(t); console.log(e.code); process.exit(0); });`], { timeoutMs: 5_000 })).stdout.trim();
    expect(await ask()).toBe('ECONNREFUSED');

    const { beforeUs, afterUs } = timedLinkDown(tb.ns.primary, 'e0');
    const master = await backup.waitForState('MASTER', { timeoutMs: 5_000, afterUs: beforeUs });
    const detectionMs = (master.timeUs - afterUs) / 1000;
    console.log(`keepalived advert ${advertIntMs} ms, VIP managed: backup MASTER ${detectionMs.toFixed(1)} ms after the link went down`);
    expect(detectionMs).toBeLessThanOrEqual(masterDownMs(advertIntMs, BACKUP_PRIORITY) + SLACK_MS);
    await waitFor(async () => (await addrsOn(tb, tb.ns.backup, 'e0')).includes(`${vip}/32`), { timeoutMs: 5_000, what: 'the VIP on the backup' });
    let attempts = 0;
    const answer = await waitFor(async () => { attempts++; return (await ask()) === 'backup' && 'backup'; },
      { timeoutMs: 10_000, intervalMs: 50, what: 'the backup answering at the VIP' });
    expect(answer).toBe('backup');
    console.log(`the backup answered at the VIP ${((Date.now() * 1000 - afterUs) / 1000).toFixed(0)} ms after the failure (${attempts} attempts)`);

    listener.kill('SIGTERM');
    await waitForExit(listener, 5_000);
    await backup.stop();
    await primary.stop();
  });

  it('runs the IP-only baseline: the VIP moves, the established connections do not survive', { timeout: 90_000 }, async () => {
    const { tb, dir } = lab;
    const r = await runIpOnly(tb, { dir, connections: 20, advertIntMs: 100 });
    const ended = r.connections.map((c) => c.endedMs ?? Infinity).sort((a, b) => a - b);
    console.log(`${formatIpOnly(r)}\nconnections ended ${ended[0]!.toFixed(0)}..${ended.at(-1)!.toFixed(0)} ms after the failure: `
      + r.connections.map((c) => `${c.kind} ${c.outcome} (${c.error})`).join(', '));
    expect(r.connectionsTotal).toBe(20);
    expect(r.connections).toHaveLength(20);
    expect(r.detectionMs).toBeGreaterThan(0);
    expect(r.detectionMs).toBeLessThanOrEqual(r.masterDownMs + SLACK_MS);
    expect(Number.isFinite(r.serviceRestoredMs)).toBe(true);
    expect(r.serviceRestoredMs).toBeGreaterThan(0);
    // The backup has the VIP but none of the connections: each one's next segment meets an RST.
    expect(r.connections.map((c) => c.outcome)).toEqual(Array(20).fill('reset'));
    expect(r.connectionsKept).toBe(0);
    expect(r.stallMsMedian).toBe(Infinity);
  });
});
