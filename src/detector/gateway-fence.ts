// The gateway fence: at takeover, packets from the old primary with source VIP
// are dropped at the gateway, so that a primary that is not quite dead (hung,
// partitioned, slow to hear STAND_DOWN) cannot answer the clients the backup
// now serves. The detector calls engage() when a takeover starts (before it
// orders the backup when the fence is quick, see takeover.ts) and release()
// when it stops. engage() may throw or reject: the takeover then goes on
// without it and the record says so — a broken fence must not keep a dead
// primary's clients waiting; the primary agent's own fence is the second line.
// Both are called on the detector's event loop.
import { readFileSync } from 'node:fs';
import { addon, type NativeFence } from '../addon.js';
import { T2cpError } from '../errors.js';
import type { GatewayConfig } from '../config-takeover.js';
import type { Logger } from '../log.js';

export interface GatewayFence {
  engage(oldPrimaryMac?: string): Promise<void> | void;
  /** The drop rules off, the tables kept: the host fenced stands by as the backup now. */
  lift?(): void;
  /**
   * The hosts' roles swapped (re-protection): the MAC to fence at the next takeover is learnt
   * from the VIP again (--primary-mac named the other host), never the new backup's.
   */
  swapped?(primary: string, backup: string): void;
  /** At the detector's stop: the tables removed. */
  release(): void;
  /** The MAC the engaged fence drops (the old owner of the VIP). */
  fencedMac?(): string | undefined;
  /**
   * The primary's MAC as this host knows it now: learnt from the VIP's entry
   * while the primary served; `afterTakeover`, from the primary host's own
   * address (the VIP's entry may be the backup's by then).
   */
  candidateMac?(afterTakeover: boolean): string | undefined;
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

/** This host's ARP entry for `ip` (/proc/net/arp), when complete. */
export function arpEntry(ip: string, table = readArpTable()): string | undefined {
  for (const line of table.split('\n').slice(1)) {
    const [addr, , flags, mac] = line.trim().split(/\s+/);
    // Flags 0x2 (ATF_COM): resolved; 00:00:... is an incomplete entry.
    if (addr === ip && mac && (Number(flags) & 2) && mac !== '00:00:00:00:00:00') return mac;
  }
  return undefined;
}

function readArpTable(): string {
  try {
    return readFileSync('/proc/net/arp', 'utf8');
  } catch {
    return '';
  }
}

// How often the primary's MAC is read from the ARP table while it serves, ms.
const LEARN_MS = 200;

/**
 * The gateway fence: owned nft tables (addon/recovery_fence.h) dropping
 * what the old primary's MAC sends from the VIP, forwarded or ARP. The MAC
 * is --primary-mac, or the one this gateway resolved the VIP (else the
 * primary agent's address) to while the primary served (learnt every
 * LEARN_MS: at takeover the entry may already be stale or failed).
 */
export function createGatewayFence(cfg: GatewayConfig, log: Logger): GatewayFence {
  // The hosts by role: the configuration's, until a re-protection swaps them.
  let primary = cfg.primary.address;
  let backup = cfg.backup.address;
  let primaryMac = cfg.primaryMac;
  // The VIP's entry, or else the agent's: the VIP lives on the primary host
  // (an entry for the VIP exists only once clients were routed to it).
  const lookup = (): string | undefined => arpEntry(cfg.vip) ?? arpEntry(primary);
  let learnt = primaryMac ?? lookup();
  let fenced: string | undefined;
  let timer: NodeJS.Timeout | undefined;
  const learn = (): void => {
    clearInterval(timer);
    timer = primaryMac ? undefined : setInterval(() => { learnt = lookup() ?? learnt; }, LEARN_MS);
    timer?.unref();
  };
  learn();
  // Tables and chains now, the rules at takeover: adding rules is fast.
  const fence: NativeFence = new (addon().Fence)({ role: 'gateway', table: `t2cp_gw_${cfg.instance}`, vip: cfg.vip });
  fence.prepare();
  return {
    engage(oldPrimaryMac?: string) {
      clearInterval(timer);
      const mac = oldPrimaryMac ?? learnt;
      if (!mac) throw new T2cpError(`gateway fence: the primary's MAC is unknown (no ARP entry for ${cfg.vip} yet): give --primary-mac`, 'T2CP_CONFIG');
      // Never the new owner's: fencing the backup would cut the clients off the service.
      if (mac === arpEntry(backup))
        throw new T2cpError(`gateway fence: ${mac} is the backup's MAC, not the old primary's: give --primary-mac`, 'T2CP_CONFIG');
      if (fenced !== mac) fence.release(); // rules for another MAC (a host that stood by since) go first
      fence.engage(mac);
      fenced = mac;
      log.info('gateway fence engaged', { mac, vip: cfg.vip });
    },
    fencedMac: () => fenced,
    candidateMac: (afterTakeover) => primaryMac ?? (afterTakeover ? arpEntry(primary) : learnt),
    lift() {
      fence.release();
      log.info('gateway fence lifted', { mac: fenced ?? null, vip: cfg.vip });
      fenced = undefined;
    },
    swapped(p: string, b: string) {
      [primary, backup, primaryMac] = [p, b, undefined];
      learnt = lookup();
      learn();
    },
    release() {
      clearInterval(timer);
      fence.remove();
    },
  };
}
