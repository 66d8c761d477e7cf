// One error class with stable codes (undici's habit): tools match on `code`,
// people read `message`, which names the problem and the fix in one line.
// The addon throws this same class (handed to it in addon.ts).

const kBrand = Symbol.for('t2cp-ar.error');

export type ErrorCode =
  | 'T2CP_CONFIG'          // a wrong option or config file entry
  | 'T2CP_PERMISSION'      // not root / lacking CAP_NET_ADMIN
  | 'T2CP_NO_INTERFACE'    // the mirror interface does not exist
  | 'T2CP_VIP_PLACEMENT'   // the VIP is where it must not be
  | 'T2CP_KERNEL_FEATURE'  // NFQUEUE, TUN, nft_compat missing
  | 'T2CP_BUSY'            // another instance holds the table, queue or TUN name
  | 'T2CP_NFTABLES'
  | 'T2CP_NFQUEUE'
  | 'T2CP_TUN'
  | 'T2CP_CAPTURE'
  | 'T2CP_ADDON'           // the native addon is missing or does not load
  | 'T2CP_AUTH'            // control messages refused: the peers' keys differ
  | 'T2CP_TIMEOUT'         // a control request got no answer in time
  | 'T2CP_TAKEOVER'        // the takeover could not run or failed midway
  | 'T2CP_REFUSED'         // the peer answered that it will not (e.g. a takeover report with ok: false)
  | 'T2CP_STATE'           // the --state-dir file cannot be read, is damaged, or cannot be written
  | 'T2CP_SYSTEM';

export class T2cpError extends Error {
  readonly code: ErrorCode;
  constructor(message: string, code: ErrorCode) {
    super(message);
    this.name = 'T2cpError';
    this.code = code;
  }
  get [kBrand](): true {
    return true;
  }
  static override [Symbol.hasInstance](x: unknown): boolean {
    return typeof x === 'object' && x !== null && (x as Record<symbol, unknown>)[kBrand] === true;
  }
}

export function configError(message: string): T2cpError {
  return new T2cpError(message, 'T2CP_CONFIG');
}
