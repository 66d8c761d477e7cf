// Runs `t2cp backup` to completion inside the testbed's backup namespace, as
// an operator would type it, for tests of what it refuses. The process is
// expected to exit by itself: a refused start takes milliseconds, so the
// deadline only catches a CLI that started when it should have refused.
import { distCli } from '../../scripts/backup-process.js';
import type { ExecResult, Testbed } from '../../scripts/testbed.js';

/** A refused start returns at once; one that wrongly runs is stopped (SIGTERM) after this, in ms. */
const REFUSAL_DEADLINE_MS = 8_000;

/** Options of a valid start on the testbed; a case overrides or drops some of them. */
export function validBackupArgs(tb: Testbed, instance: string): Record<string, string> {
  return { '--mirror-if': tb.ifaces.mirror, '--vip': tb.addr.vip, '--ports': '7000', '--instance': instance };
}

export function flagsToArgv(flags: Record<string, string>): string[] {
  return Object.entries(flags).flatMap(([flag, value]) => [flag, value]);
}

/**
 * `[...wrap, 'node', cli, 'backup', ...args]` in the backup namespace. `wrap`
 * runs the CLI under another program (setpriv, unshare ...) which must exec it.
 */
export function runBackupCli(tb: Testbed, args: string[], wrap: string[] = []): Promise<ExecResult> {
  return tb.exec(tb.ns.backup, [...wrap, 'node', distCli(), 'backup', ...args], { timeoutMs: REFUSAL_DEADLINE_MS });
}

/** `nft list tables` of the backup namespace, one `family name` per entry. */
export async function nftTables(tb: Testbed): Promise<string[]> {
  const r = await tb.exec(tb.ns.backup, ['nft', 'list', 'tables']);
  return r.stdout.split('\n').map((l) => l.replace(/^table\s+/, '').trim()).filter(Boolean);
}

/** Names of the links in the backup namespace. */
export async function linkNames(tb: Testbed): Promise<string[]> {
  const r = await tb.exec(tb.ns.backup, ['ip', '-j', 'link', 'show']);
  return (JSON.parse(r.stdout) as { ifname: string }[]).map((l) => l.ifname);
}
