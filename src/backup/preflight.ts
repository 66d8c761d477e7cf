// Checks made before the backup touches the kernel, so a wrong setup fails
// with one line naming the problem and the fix, and nothing installed.
import { existsSync } from 'node:fs';
import os from 'node:os';
import { T2cpError } from '../errors.js';
import type { BackupConfig } from '../config.js';

export function preflight(cfg: BackupConfig): void {
  if (process.getuid?.() !== 0) {
    throw new T2cpError('t2cp backup needs root (CAP_NET_ADMIN and CAP_NET_RAW): run it as root', 'T2CP_PERMISSION');
  }
  if (!existsSync(`/sys/class/net/${cfg.mirrorIf}`)) {
    throw new T2cpError(
      `mirror interface '${cfg.mirrorIf}' does not exist: pass --mirror-if with an interface listed by \`ip link\``,
      'T2CP_NO_INTERFACE',
    );
  }
  for (const [name, addrs] of Object.entries(os.networkInterfaces())) {
    if (addrs?.some((a) => a.family === 'IPv4' && a.address === cfg.vip)) {
      throw new T2cpError(
        `VIP ${cfg.vip} is already configured on ${name} of this host: while it replicates, the backup must not hold ` +
          `the VIP (the primary does; t2cp makes it local on its own TUN device). Remove it: ip addr del ${cfg.vip}/32 dev ${name}`,
        'T2CP_VIP_PLACEMENT',
      );
    }
  }
  if (!existsSync('/dev/net/tun')) {
    throw new T2cpError('no /dev/net/tun: load the tun module (modprobe tun)', 'T2CP_KERNEL_FEATURE');
  }
}
