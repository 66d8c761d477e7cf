// The ways the primary fails in the takeover tests, demo and benchmark, each
// done inside the testbed's primary namespace (so nothing outside the run is
// touched) and each undoable, to bring the old primary back:
//
//   link-down  its interface goes down: nothing in, nothing out; the switch
//              port loses carrier, so the mirror sees nothing either.
//   freeze     every packet in and out dropped by an nft table of the run
//              (a hung host); the switch still delivers and mirrors what the
//              clients send it.
//   planned    nothing breaks: `t2cp takeover` on the backup asks for the switch.
import type { Testbed } from './testbed.js';

export type FailureKind = 'link-down' | 'freeze' | 'planned' | 'keepalived';

/** The nft table name of a freeze: per run (the testbed prefix), nft's alphabet. */
export const freezeTable = (tb: Testbed): string => `${tb.prefix.replace(/[^A-Za-z0-9_]/g, '_')}freeze`;

async function must(tb: Testbed, ns: string, argv: string[]): Promise<void> {
  const r = await tb.exec(ns, argv);
  if (r.code !== 0) throw new Error(`\`${argv.join(' ')}\` in ${ns} failed: ${r.stderr.trim()}`);
}

/**
 * Breaks the primary; resolves with the wall-clock ms when the break took
 * effect, read by the shell that made it right after the command returned
 * (spawning the command takes far longer than the command itself).
 */
export async function failPrimary(tb: Testbed, kind: 'link-down' | 'freeze'): Promise<number> {
  const table = freezeTable(tb);
  const rules = [
    `add table inet ${table}`,
    `add chain inet ${table} in { type filter hook prerouting priority -500; policy drop; }`,
    `add chain inet ${table} out { type filter hook output priority -500; policy drop; }`,
    `add table arp ${table}`,
    `add chain arp ${table} in { type filter hook input priority 0; policy drop; }`,
    `add chain arp ${table} out { type filter hook output priority 0; policy drop; }`,
  ].join('\n');
  // $1: the rules of a freeze (the script's only argument).
  const cmd = kind === 'link-down' ? `ip link set ${tb.ifaces.primaryLan} down` : `printf '%s\\n' "$1" | nft -f -`;
  const r = await tb.exec(tb.ns.primary, ['bash', '-c', `${cmd} || exit 1; echo \${EPOCHREALTIME/[.,]/}`, 'fail', rules]);
  const afterUs = Number(r.stdout.trim().split('\n').pop());
  if (r.code !== 0 || !afterUs) throw new Error(`${kind} of the primary failed: ${r.stderr.trim()}`);
  return afterUs / 1000;
}

/** Brings the old primary back as it was (link up, or the freeze lifted). */
export async function restorePrimary(tb: Testbed, kind: 'link-down' | 'freeze'): Promise<void> {
  if (kind === 'link-down') {
    await must(tb, tb.ns.primary, ['ip', 'link', 'set', tb.ifaces.primaryLan, 'up']);
    // Down, the link took its routes with it: the host's default route back, as a repaired host has it.
    await must(tb, tb.ns.primary, ['ip', 'route', 'replace', 'default', 'via', tb.addr.gatewayLan]);
  } else {
    await must(tb, tb.ns.primary, ['nft', 'delete', 'table', 'inet', freezeTable(tb)]);
    await must(tb, tb.ns.primary, ['nft', 'delete', 'table', 'arp', freezeTable(tb)]);
  }
}

/**
 * Test instrument: the primary's packets from the VIP leave with DSCP CS1,
 * the backup's with 0, so a capture at the client tells who answered each
 * segment (both speak the same sequence space after a takeover).
 */
export async function markPrimaryReplies(tb: Testbed): Promise<void> {
  const table = `${tb.prefix.replace(/[^A-Za-z0-9_]/g, '_')}mark`;
  await must(tb, tb.ns.primary, ['nft', `add table ip ${table}; add chain ip ${table} post { type filter hook postrouting priority 0; }; ` +
    `add rule ip ${table} post ip saddr ${tb.addr.vip} ip dscp set cs1`]);
}

/** tcpdump filter: IPv4 DSCP CS1 (TOS byte 0x20 in its six high bits). */
export const FROM_PRIMARY = 'ip[1] & 0xfc == 0x20';
