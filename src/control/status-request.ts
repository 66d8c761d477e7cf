// `t2cp status`'s one exchange (request.ts): STATUS to a role — the backup's
// control endpoint, the primary agent, or the failure detector — and its
// NODE_STATUS.
// Sender `status:<pid>`. Sent again every `resendMs` until answered; a query
// changes nothing, so repeats are harmless. An answer from another role than
// the one asked for (a wrong port) is an error, not a status.
import { T2cpError } from '../errors.js';
import type { Endpoint } from '../options.js';
import { BACKUP_STATES, DEVICE_STATES, PRIMARY_STATES, type NodeStatus } from './bodies.js';
import { exchange } from './request.js';

export type StatusRole = NodeStatus['role'];

export interface StatusRequestOptions {
  /** The role's endpoint: the backup's --control-port, the agent's or the detector's --listen. */
  to: Endpoint;
  role: StatusRole;
  key: Buffer;
  timeoutMs: number;
  resendMs?: number;
}

/** What `role` says of itself; a T2cpError (T2CP_TIMEOUT, T2CP_AUTH, T2CP_REFUSED) without a fitting answer. */
export async function requestStatus(o: StatusRequestOptions): Promise<NodeStatus> {
  const r = await exchange({
    to: o.to, key: o.key, name: 'status', request: 'STATUS', body: {}, answer: 'NODE_STATUS',
    timeoutMs: o.timeoutMs, resendMs: o.resendMs ?? 200,
  });
  const where = `${o.to.address}:${o.to.port}`;
  if (r.answer) {
    const states: readonly string[] = { backup: BACKUP_STATES, primary: PRIMARY_STATES, gateway: DEVICE_STATES }[r.answer.role];
    if (r.answer.role !== o.role || !states.includes(r.answer.state))
      throw new T2cpError(`${where} answered as a ${r.answer.role} in state '${r.answer.state}', not as the ${o.role} asked for: check --control / --agent`, 'T2CP_REFUSED');
    return r.answer;
  }
  if (r.badHmac > 0)
    throw new T2cpError(`the ${o.role} at ${where} answered with ${r.badHmac} message(s) that failed authentication: its --key-file holds another key`, 'T2CP_AUTH');
  const what = {
    backup: '`t2cp backup` running with --key-file (the same key) and its --control-port',
    primary: '`t2cp primary` running with the same --key-file, listening there (its --listen)',
    gateway: '`t2cp gateway` running with the same --key-file, listening there (its --listen)',
  }[o.role];
  throw new T2cpError(`no status from the ${o.role} at ${where} within ${o.timeoutMs} ms: is ${what}?`, 'T2CP_TIMEOUT');
}
