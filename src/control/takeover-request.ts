// `t2cp takeover`'s one exchange: TAKEOVER {planned: true, reason} to the
// backup's control endpoint, then wait for its TAKEOVER_REPORT. Opens its own
// Channel (sender `takeover:<pid>`, a fresh boot each run), closes it before
// returning. The request is sent again every `resendMs` until a report comes:
// UDP may lose it, and the backup answers every copy with the report of the
// one takeover under way. epoch 0 in the request: the requester does not know
// it; the detector assigns it.
import { T2cpError } from '../errors.js';
import type { Endpoint } from '../options.js';
import type { TakeoverReport } from './bodies.js';
import { Channel, sameEndpoint } from './channel.js';

export interface TakeoverRequestOptions {
  control: Endpoint;
  key: Buffer;
  reason: string;
  timeoutMs: number;
  resendMs?: number;
}

/** The backup's report (ok or not); a T2cpError T2CP_TIMEOUT (or T2CP_AUTH, when what came back failed the MAC) without one. */
export async function requestTakeover(o: TakeoverRequestOptions): Promise<TakeoverReport> {
  const loopback = o.control.address.startsWith('127.');
  const ch = await Channel.open({ key: o.key, sender: `takeover:${process.pid}`, bind: { address: loopback ? '127.0.0.1' : '0.0.0.0', port: 0 } });
  try {
    const send = () => ch.send(o.control, 'TAKEOVER', { epoch: 0, reason: o.reason, planned: true });
    send();
    const resend = setInterval(send, o.resendMs ?? 1000);
    const got = await ch.waitFor('TAKEOVER_REPORT', o.timeoutMs, (r) => sameEndpoint(r.from, o.control)).finally(() => clearInterval(resend));
    if (got) return got.msg.body;
    const where = `${o.control.address}:${o.control.port}`;
    const badMac = ch.counters().rejected['bad-mac'];
    if (badMac > 0)
      throw new T2cpError(`the backup at ${where} answered with ${badMac} message(s) that failed authentication: its --key-file holds another key`, 'T2CP_AUTH');
    throw new T2cpError(`no takeover report from ${where} within ${o.timeoutMs} ms: is \`t2cp backup\` running there with --key-file (the same key) and --control-port ${o.control.port}?`, 'T2CP_TIMEOUT');
  } finally {
    await ch.close();
  }
}
