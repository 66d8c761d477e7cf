// The gateway fence: at takeover, packets from the old primary with source VIP
// are dropped at the gateway, so that a primary that is not quite dead (hung,
// partitioned, slow to hear STAND_DOWN) cannot answer the clients the backup
// now serves. The detector calls engage() when a takeover starts (before it
// orders the backup when the fence is quick, see takeover.ts) and release()
// when it stops. engage() may throw or reject: the takeover then goes on
// without it and the record says so — a broken fence must not keep a dead
// primary's clients waiting; the primary agent's own fence is the second line.
// Both are called on the detector's event loop.
import { T2cpError } from '../errors.js';
import type { GatewayConfig } from '../config-takeover.js';
import type { Logger } from '../log.js';

export interface GatewayFence {
  engage(oldPrimaryMac?: string): Promise<void> | void;
  release(): void;
}

/** engage() as a promise of its error message (undefined: engaged), whether it returns, throws or rejects. */
export async function engageFence(f: GatewayFence, oldPrimaryMac?: string): Promise<string | undefined> {
  try {
    await f.engage(oldPrimaryMac);
    return undefined;
  } catch (e) {
    return String((e as Error)?.message ?? e);
  }
}

/**
 * The one place the CLI gets its gateway fence from. NOT WIRED YET: the
 * native implementation (nftables on the gateway) replaces this body. There
 * is deliberately no no-op default: a detector without a fence must not look
 * as safe as one with it.
 */
export function createGatewayFence(_cfg: GatewayConfig, _log: Logger): GatewayFence {
  throw new T2cpError('the gateway fence is not wired yet (src/detector/gateway-fence.ts createGatewayFence): `t2cp gateway` cannot run without it', 'T2CP_SYSTEM');
}
