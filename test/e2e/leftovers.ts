// What `t2cp backup` may leave in the backup's kernel, listed so a test can
// assert there is none: its nft tables, its TUN device, the VIP as a local
// address, a bound NFQUEUE, the active-mode translator's tc programs.
import { fileURLToPath } from 'node:url';
import type { Testbed } from '../../scripts/testbed.js';

const addonModule = fileURLToPath(new URL('../../dist/src/addon.js', import.meta.url));

/** The nft tables of any t2cp instance in a namespace (`t2cp_*`: the backup's, the fences). */
export async function t2cpTables(tb: Testbed, ns: string): Promise<string[]> {
  return (await tb.exec(ns, ['nft', 'list', 'tables'])).stdout.split('\n').filter((l) => l.includes('t2cp_'));
}

export async function kernelLeftovers(tb: Testbed, instance: string): Promise<string[]> {
  const found: string[] = [];
  const tables = await tb.exec(tb.ns.backup, ['nft', 'list', 'tables']);
  for (const l of tables.stdout.split('\n')) if (l.includes(`t2cp_${instance}`)) found.push(`nft: ${l.trim()}`);
  const links = await tb.exec(tb.ns.backup, ['ip', '-o', 'link', 'show']);
  for (const l of links.stdout.split('\n')) if (l.includes(`t2cp-${instance}`)) found.push(`link: ${l.trim()}`);
  const addrs = await tb.exec(tb.ns.backup, ['ip', '-o', '-4', 'addr', 'show']);
  for (const l of addrs.stdout.split('\n')) if (l.includes(` ${tb.addr.vip}/`)) found.push(`address: ${l.trim()}`);
  const queues = await tb.exec(tb.ns.backup, ['cat', '/proc/net/netfilter/nfnetlink_queue']);
  for (const l of queues.stdout.split('\n')) if (l.trim()) found.push(`nfqueue: ${l.trim()}`);
  const tcx = await tb.exec(tb.ns.backup, ['node', '--input-type=module', '-e',
    `import { addon } from '${addonModule}'; console.log(addon().tcxPrograms('${tb.ifaces.backupLan}'))`]);
  if (tcx.code !== 0) found.push(`tcx query failed: ${tcx.stderr.trim()}`);
  else if (tcx.stdout.trim() !== '0') found.push(`tcx: ${tcx.stdout.trim()} program(s) on ${tb.ifaces.backupLan}`);
  return found;
}
