// The primary's fence: engaged, this host no longer answers the clients (its
// packets from the VIP are dropped before they leave). The agent engages it
// when told to STAND_DOWN, when the detector says the backup is active, or
// (with --self-fence-after) when it cannot hear the detector; it releases only
// a self-fence, once the detector confirms this primary is the active one.
// Both calls on the agent's event loop; engage() may throw (the agent then
// does not acknowledge the stand-down, and tries again at the next one).
import { T2cpError } from '../errors.js';
import type { PrimaryConfig } from '../config-takeover.js';
import type { Logger } from '../log.js';

export interface PrimaryFence {
  engage(): void;
  release(): void;
}

/**
 * The one place the CLI gets its primary fence from. NOT WIRED YET: the native
 * implementation replaces this body. No no-op default, on purpose.
 */
export function createPrimaryFence(_cfg: PrimaryConfig, _log: Logger): PrimaryFence {
  throw new T2cpError('the primary fence is not wired yet (src/agent/primary-fence.ts createPrimaryFence): `t2cp primary` cannot run without it', 'T2CP_SYSTEM');
}
