// Decoder for the addon's event records (layout: addon/events.h; keep both in
// step). One batch is one Buffer of fixed 64-byte records.

export const EVENT_SIZE = 64;

export const EventType = {
  1: 'new',
  2: 'synchronised',
  3: 'unprotected',
  4: 'closed',
  5: 'anomaly',
  6: 'stats',
  7: 'takeover',
  8: 'resupply',
  9: 'lagging',
} as const;
export type EventTypeName = (typeof EventType)[keyof typeof EventType];

export const EventReason = {
  0: 'none',
  1: 'mid-stream',
  2: 'backup-refused',
  3: 'handshake-timeout',
  4: 'table-full',
  5: 'fin',
  6: 'rst',
  7: 'idle-timeout',
  8: 'gap',
  9: 'buffer-full',
  11: 'primary-rst',
  12: 'capture-drop',
  13: 'replica-reset',
  14: 'takeover-incomplete',
  15: 'replica-stopped',
  16: 'shed',
  17: 'replica-behind',
  18: 'diverged',
  // takeover events: the step that ended (detail: its duration, µs)
  21: 'freeze',
  22: 'finish',
  23: 'active',
  24: 'ip-takeover',
  25: 'connections',
  26: 'catch-up',
  30: 'takeover-done',
  31: 'takeover-failed',
  32: 'stall-measured',
} as const;
export type EventReasonName = (typeof EventReason)[keyof typeof EventReason];

export const FlowState = { 0: 'none', 1: 'syn-seen', 2: 'synchronised', 3: 'closing', 4: 'closed', 5: 'unprotected' } as const;

export interface FlowEvent {
  type: EventTypeName;
  reason: EventReasonName;
  client: string;       // "ip:port"
  serverPort: number;
  state: (typeof FlowState)[keyof typeof FlowState];
  /** A TCP flow, or a UDP association (c2sBackup: the client's datagram bytes given to the replica; s2cBackup: the replica's). */
  protocol: 'tcp' | 'udp';
  flowId: number;
  timeUs: number;
  /** Client bytes acknowledged by the primary / by the replica. */
  c2sPrimary: number;
  c2sBackup: number;
  /** Bytes sent by the primary / by the replica (the replica's were dropped). */
  s2cPrimary: number;
  s2cBackup: number;
  detail: number;
}

/** A 'resupply' event's detail: the client bytes [from, from + bytes) wanted (addon/events.h). */
export function resupplyRange(e: FlowEvent): { from: number; bytes: number } {
  return { from: e.detail % 2 ** 32, bytes: Math.floor(e.detail / 2 ** 32) };
}

export function decodeEvents(buf: Buffer): FlowEvent[] {
  const out: FlowEvent[] = [];
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let off = 0; off + EVENT_SIZE <= buf.byteLength; off += EVENT_SIZE) {
    const ip = `${dv.getUint8(off + 4)}.${dv.getUint8(off + 5)}.${dv.getUint8(off + 6)}.${dv.getUint8(off + 7)}`;
    out.push({
      type: EventType[dv.getUint8(off) as keyof typeof EventType] ?? 'anomaly',
      reason: EventReason[dv.getUint8(off + 1) as keyof typeof EventReason] ?? 'none',
      serverPort: dv.getUint16(off + 2, true),
      client: `${ip}:${dv.getUint16(off + 8, true)}`,
      state: FlowState[dv.getUint8(off + 10) as keyof typeof FlowState] ?? 'none',
      protocol: dv.getUint8(off + 11) === 17 ? 'udp' : 'tcp',
      flowId: dv.getUint32(off + 12, true),
      timeUs: Number(dv.getBigUint64(off + 16, true)),
      c2sPrimary: Number(dv.getBigUint64(off + 24, true)),
      c2sBackup: Number(dv.getBigUint64(off + 32, true)),
      s2cPrimary: Number(dv.getBigUint64(off + 40, true)),
      s2cBackup: Number(dv.getBigUint64(off + 48, true)),
      detail: Number(dv.getBigUint64(off + 56, true)),
    });
  }
  return out;
}
