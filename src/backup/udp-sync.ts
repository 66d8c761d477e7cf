// The backup's side of the UDP ledger (addon/udp_ledger.h). UDP has no
// acknowledgement: the backup cannot tell a datagram its mirror lost. The
// gateway's traffic recorder numbers every datagram toward VIP:udp-ports; this
// fetches those records every SYNC_MS (UDP_MANIFEST_REQUEST, UDP_MANIFEST) and
// hands them to the engine, which holds each mirrored datagram until its
// record comes (so the replica gets them in the primary's order) and asks for
// the ones its mirror lost by number (ask() -> UDP_RESUPPLY_REQUEST; they come
// back as RESUPPLY_DATA).
//
// One request outstanding at a time, asked again after REASK_MS without an
// answer. A manifest's records are taken once, in order: numbers below the
// next one wanted are an answer repeated, skipped. A recorder with another
// boot (the gateway restarted) numbers anew: taken from its next number.
// After a takeover it goes on until the recorder says its cut is reached
// (what the clients sent before the new owner announced itself), then stops.
//
// Each request names this host's MAC on the interface that takes the VIP. The
// recorder names back the records whose frame it forwarded to that MAC
// (direct): once the VIP has moved, the clients' datagrams reach this host
// itself, not through the mirror, and its replica has them. Those records
// are not the engine's to wait for, nor to ask for again: they are left out.
//
// Call order: new UdpSync(o), then onManifest()/ask() from the control
// channel and the engine's events, stop(). Node event loop.
import type { Logger } from '../log.js';

/** How often the records are fetched: a mirrored datagram waits about this long for its own, ms. */
export const SYNC_MS = 10;
/** An unanswered request is repeated after this, ms. */
const REASK_MS = 100;
/** No manifest this long after the start: the gateway records no datagram (said once), ms. */
const SILENT_MS = 2000;
/** Record numbers per UDP_RESUPPLY_REQUEST (the detector's bound too). */
const ASK_BATCH = 256;
const RECORD_BYTES = 16;

export interface UdpManifestBody { boot: number; first: number; next: number; lost: number; more: boolean; cut: boolean; records: string; direct?: string }

export interface UdpSyncOptions {
  request(body: { after: number; fromNow: boolean; mac?: string }): void;
  /** This host's MAC on the interface that takes the VIP; none: no record is known to come direct. */
  mac?: string;
  askResupply(records: string): void;
  /** To the engine: records numbered from first (none: the records keep coming). */
  records(first: number, records: Buffer): void;
  /** Whether this backup took over (or is taking over). */
  takenOver(): boolean;
  log: Logger;
}

export class UdpSync {
  readonly stats = { manifests: 0, records: 0, lost: 0, asked: 0, direct: 0 };
  private after = 0;
  private boot: number | undefined;
  private askedAt: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private asks: number[] = [];
  private askPending = false;
  private closed = false;

  constructor(private readonly o: UdpSyncOptions) {
    const startedAt = Date.now();
    let said = false;
    this.timer = setInterval(() => {
      if (this.boot === undefined && !said && Date.now() - startedAt >= SILENT_MS) {
        said = true;
        o.log.warn('no UDP records from the gateway (is `t2cp gateway` given --udp-ports, its recorder on?): ' +
          'datagrams the mirror loses cannot be told or resupplied');
      }
      if (this.askedAt === undefined || Date.now() - this.askedAt >= REASK_MS) this.request();
    }, SYNC_MS);
    this.request();
  }

  onManifest(m: UdpManifestBody): void {
    if (!this.timer) return;
    this.askedAt = undefined;
    this.stats.manifests++;
    const records = Buffer.from(m.records, 'base64');
    if (records.length % RECORD_BYTES) return;
    if (m.boot !== this.boot) {
      if (this.boot !== undefined) this.o.log.warn('the gateway recorder started again: its datagram records begin anew', { next: m.next });
      this.boot = m.boot;
      this.after = m.next;
      this.o.records(m.next, Buffer.alloc(0));
      return;
    }
    if (m.next < this.after) return;  // an answer repeated
    const skip = Math.max(0, this.after - m.first);
    if (m.lost > 0) {
      this.stats.lost += m.lost;
      this.o.log.warn('UDP records evicted before the backup fetched them: those datagrams go to the replica unverified', { lost: m.lost });
    }
    const from = m.first + skip;
    const direct = new Set((m.direct ?? '').split(',').map(Number).filter((n) => Number.isSafeInteger(n) && n >= from && n < m.next));
    // The runs of records between the direct ones, each numbered from its own first; a
    // manifest with none still goes to the engine (it tells that records keep coming).
    let run = from, given = false;
    for (let n = from; n <= m.next; n++) {
      if (n < m.next && !direct.has(n)) continue;
      if (n > run || (n === m.next && !given)) {
        this.o.records(run, records.subarray((run - m.first) * RECORD_BYTES, (n - m.first) * RECORD_BYTES));
        given = true;
      }
      run = n + 1;
    }
    this.stats.records += m.next - from - direct.size;
    this.stats.direct += direct.size;
    this.after = m.next;
    if (m.more) this.request();
    else if (m.cut && this.o.takenOver()) {
      this.o.log.info('UDP records complete up to the takeover', { next: m.next });
      this.stopFetching();  // what is still missing is asked on
    }
  }

  /** The engine misses the datagram recorded under `n`: asked with the others of this turn. */
  ask(n: number): void {
    if (this.closed) return;
    this.asks.push(n);
    if (this.askPending) return;
    this.askPending = true;
    setImmediate(() => {
      this.askPending = false;
      for (let i = 0; i < this.asks.length; i += ASK_BATCH) this.o.askResupply(this.asks.slice(i, i + ASK_BATCH).join(','));
      this.stats.asked += this.asks.length;
      this.asks = [];
    });
  }

  stop(): void {
    this.closed = true;
    this.stopFetching();
  }

  private stopFetching(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private request(): void {
    this.askedAt = Date.now();
    this.o.request({ after: this.after, fromNow: this.boot === undefined, ...(this.o.mac ? { mac: this.o.mac } : {}) });
  }
}
