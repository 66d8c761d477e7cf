// Native tier: the outgoing traffic processor's owned nftables tables
// (addon/outgoing_nftables.cc), built under ASan/UBSan and run as root in a
// scratch network namespace by nftables_test.sh.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const script = fileURLToPath(new URL('./nftables_test.sh', import.meta.url));
const isRoot = process.getuid?.() === 0;

describe('outgoing nftables (native)', () => {
  it.skipIf(!isRoot)(
    'installs, owns and removes the ip and arp tables',
    () => {
      const r = spawnSync('bash', [script], { encoding: 'utf8', timeout: 110_000 });
      const out = `${r.stdout}${r.stderr}`;
      expect(r.error, out).toBeUndefined();
      expect(out).toContain(' 0 failed');
      expect(r.status, out).toBe(0);
    },
    120_000,
  );
});
