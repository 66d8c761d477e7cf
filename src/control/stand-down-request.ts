// `t2cp stand-down`'s one exchange (request.ts): STAND_DOWN {epoch, vrrp?,
// hookStartUs?} to the primary agent on this host, sent from 127.0.0.1 (the
// agent takes STAND_DOWN from there as a local request, besides the
// detector's), again every `resendMs` (100 ms) until a STAND_DOWN_ACK without
// `error`. An ack with `error` (the agent's fence failed; it tries again at
// each copy) is kept, and named if no better one comes before the timeout.
import { T2cpError } from '../errors.js';
import type { Endpoint } from '../options.js';
import type { BodyOf, VrrpHookState } from './bodies.js';
import { exchange } from './request.js';

export type StandDownAck = BodyOf['STAND_DOWN_ACK'];

export interface StandDownRequestOptions {
  /** The agent's endpoint, on this host. */
  agent: Endpoint;
  key: Buffer;
  epoch: number;
  /** keepalived's state, for a notify hook; absent: stand down unconditionally. */
  vrrp?: VrrpHookState;
  /** When the hook process started, µs since boot (agent/vrrp-guard.ts: processStartBootUs). */
  hookStartUs?: number;
  timeoutMs: number;
  resendMs?: number;
}

/** The agent's final ack (fenced, or a note saying why not); a T2cpError without one. */
export async function requestStandDown(o: StandDownRequestOptions): Promise<StandDownAck> {
  const body: BodyOf['STAND_DOWN'] = {
    epoch: o.epoch, ...(o.vrrp ? { vrrp: o.vrrp } : {}), ...(o.hookStartUs !== undefined ? { hookStartUs: o.hookStartUs } : {}),
  };
  const r = await exchange({
    to: o.agent, key: o.key, name: 'stand-down', bindAddress: '127.0.0.1', request: 'STAND_DOWN', body,
    answer: 'STAND_DOWN_ACK', timeoutMs: o.timeoutMs, resendMs: o.resendMs ?? 100, final: (a) => a.error === undefined,
  });
  if (r.answer) return r.answer;
  const where = `${o.agent.address}:${o.agent.port}`;
  if (r.last?.error !== undefined)
    throw new T2cpError(`the primary agent at ${where} could not stand down within ${o.timeoutMs} ms: ${r.last.error}`, 'T2CP_REFUSED');
  if (r.badHmac > 0)
    throw new T2cpError(`the primary agent at ${where} answered with ${r.badHmac} message(s) that failed authentication: its --key-file holds another key`, 'T2CP_AUTH');
  throw new T2cpError(`no STAND_DOWN_ACK from ${where} within ${o.timeoutMs} ms: is \`t2cp primary\` running on this host, listening there (its --listen), with the same --key-file?`, 'T2CP_TIMEOUT');
}
