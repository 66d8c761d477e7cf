// Checks made before the backup touches the kernel, so a wrong setup fails
// with one line naming the problem and the fix, and nothing installed.
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { T2cpError } from '../errors.js';
import type { BackupConfig } from '../config.js';

// Capability bits (include/uapi/linux/capability.h).
const CAP_NET_ADMIN = 12;
const CAP_NET_RAW = 13;
/** TUN devices of t2cp instances are named t2cp-<instance> (src/config.ts). */
const TUN_PREFIX = 't2cp-';

/** Whether this process holds a capability in its effective set (/proc/self/status CapEff). */
function hasCapability(bit: number): boolean {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m !== null && ((BigInt(`0x${m[1]}`) >> BigInt(bit)) & 1n) === 1n;
}

export function preflight(cfg: BackupConfig): void {
  if (!hasCapability(CAP_NET_ADMIN) || !hasCapability(CAP_NET_RAW)) {
    throw new T2cpError('t2cp backup needs CAP_NET_ADMIN and CAP_NET_RAW: run it as root', 'T2CP_PERMISSION');
  }
  if (!existsSync(`/sys/class/net/${cfg.mirrorIf}`)) {
    throw new T2cpError(
      `mirror interface '${cfg.mirrorIf}' does not exist: pass --mirror-if with an interface listed by \`ip link\``,
      'T2CP_NO_INTERFACE',
    );
  }
  for (const [name, addrs] of Object.entries(os.networkInterfaces())) {
    const held = addrs?.find((a) => a.family === 'IPv4' && a.address === cfg.vip);
    if (!held) continue;
    if (name.startsWith(TUN_PREFIX)) {
      // Another t2cp backup already replicates this VIP on this host.
      throw new T2cpError(
        `VIP ${cfg.vip} is already replicated on this host by t2cp instance '${name.slice(TUN_PREFIX.length)}' ` +
          `(device ${name}): stop that instance first; one instance per VIP`,
        'T2CP_BUSY',
      );
    }
    throw new T2cpError(
      `VIP ${cfg.vip} is already configured on ${name} of this host: while it replicates, the backup must not hold ` +
        `the VIP (the primary does; t2cp makes it local on its own TUN device). Remove it: ip addr del ${held.cidr ?? cfg.vip} dev ${name}`,
      'T2CP_VIP_PLACEMENT',
    );
  }
  if (!existsSync('/dev/net/tun')) {
    throw new T2cpError('no /dev/net/tun: load the tun module (modprobe tun)', 'T2CP_KERNEL_FEATURE');
  }
  // With the control endpoint on, a takeover may come at any time: the
  // interface that gets the VIP must be known now, not found missing then.
  if (cfg.keyFile) {
    const vipIf = cfg.vipIf ?? defaultRouteInterface();
    if (!existsSync(`/sys/class/net/${vipIf}`))
      throw new T2cpError(`--vip-if '${vipIf}' does not exist: give the interface that takes the VIP at takeover (listed by \`ip link\`)`, 'T2CP_NO_INTERFACE');
  }
}

/** The interface of the IPv4 default route (/proc/net/route): where the VIP goes at takeover unless --vip-if says. */
export function defaultRouteInterface(): string {
  let table = '';
  try {
    table = readFileSync('/proc/net/route', 'utf8');
  } catch {
    /* no procfs: fall through */
  }
  for (const line of table.split('\n').slice(1)) {
    const [iface, dest, , , , , , mask] = line.trim().split(/\s+/);
    if (dest === '00000000' && mask === '00000000' && iface) return iface;
  }
  throw new T2cpError('no default route to find the interface the VIP moves to at takeover: give --vip-if IF', 'T2CP_CONFIG');
}
