// `t2cp takeover`'s one exchange (request.ts): TAKEOVER {planned: true,
// reason} to the backup's control endpoint, then wait for its
// TAKEOVER_REPORT. Sender `takeover:<pid>`. The request is sent again every
// `resendMs` until a report comes: the backup answers every copy with the
// report of the one takeover under way. epoch 0 in the request: the requester
// does not know it; the detector assigns it.
import { T2cpError } from '../errors.js';
import type { Endpoint } from '../options.js';
import type { TakeoverReport } from './bodies.js';
import { exchange } from './request.js';

export interface TakeoverRequestOptions {
  control: Endpoint;
  key: Buffer;
  reason: string;
  timeoutMs: number;
  resendMs?: number;
}

/** The backup's report (ok or not); a T2cpError T2CP_TIMEOUT (or T2CP_AUTH, when what came back failed the hmac) without one. */
export async function requestTakeover(o: TakeoverRequestOptions): Promise<TakeoverReport> {
  const r = await exchange({
    to: o.control, key: o.key, name: 'takeover', request: 'TAKEOVER', body: { epoch: 0, reason: o.reason, planned: true },
    answer: 'TAKEOVER_REPORT', timeoutMs: o.timeoutMs, resendMs: o.resendMs ?? 1000,
  });
  if (r.answer) return r.answer;
  const where = `${o.control.address}:${o.control.port}`;
  if (r.badHmac > 0)
    throw new T2cpError(`the backup at ${where} answered with ${r.badHmac} message(s) that failed authentication: its --key-file holds another key`, 'T2CP_AUTH');
  throw new T2cpError(`no takeover report from ${where} within ${o.timeoutMs} ms: is \`t2cp backup\` running there with --key-file (the same key) and --control-port ${o.control.port}?`, 'T2CP_TIMEOUT');
}
