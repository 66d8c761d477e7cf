// The primary's fence: engaged, this host no longer answers the clients (its
// packets from the VIP are dropped before they leave). The agent engages it
// when told to STAND_DOWN, when the detector says the backup is active, or
// (with --self-fence-after) when it cannot hear the detector; it releases only
// a self-fence, once the detector confirms this primary is the active one.
// Both calls on the agent's event loop; engage() may throw (the agent then
// does not acknowledge the stand-down, and tries again at the next one).
import { addon, type NativeFence } from '../addon.js';
import type { PrimaryConfig } from '../config-takeover.js';
import type { Logger } from '../log.js';

export interface PrimaryFence {
  engage(): void;
  release(): void;
}

/**
 * The primary's fence: owned nft tables (addon/recovery_fence.h) dropping
 * everything from and to the VIP on this host, and its ARP announcements.
 * Owned by the agent's process: the kernel removes them when it exits, and
 * the agent asks the detector who is active at its next start.
 */
export function createPrimaryFence(cfg: PrimaryConfig, log: Logger): PrimaryFence {
  // Tables and chains now, the rules when told to stand down: adding rules is fast.
  const fence: NativeFence = new (addon().Fence)({ role: 'primary', table: `t2cp_pri_${cfg.instance}`, vip: cfg.vip });
  fence.prepare();
  return {
    engage() {
      if (fence.engaged()) return;
      fence.engage();
      log.warn('fence engaged: this host no longer answers for the VIP', { vip: cfg.vip });
    },
    release() {
      if (!fence.engaged()) return;
      fence.release();
      log.info('fence released', { vip: cfg.vip });
    },
  };
}
