// One request/answer exchange of a short-lived command (`t2cp takeover`,
// `t2cp stand-down`): open a Channel of its own (sender `<name>:<pid>`, a
// fresh boot each run, on an ephemeral port), send the request, send it again
// every `resendMs` (UDP may lose it or the answer; the peers answer every
// copy), until an answer of the expected type from that peer is final or the
// time is up; close the channel before returning. Never throws on silence:
// the caller turns the result into its own error.
import type { Endpoint } from '../options.js';
import type { BodyOf, MessageTypeName } from './bodies.js';
import { Channel, sameEndpoint } from './channel.js';

export interface ExchangeOptions<Q extends MessageTypeName, A extends MessageTypeName> {
  to: Endpoint;
  key: Buffer;
  /** Sender name prefix; the pid is appended. */
  name: string;
  /** Local address to send from; default 127.0.0.1 for a loopback peer, else 0.0.0.0. */
  bindAddress?: string;
  request: Q;
  body: BodyOf[Q];
  answer: A;
  timeoutMs: number;
  resendMs: number;
  /** Does this answer end the exchange? Default: every one does. Others are kept as `last`, and the request is sent again. */
  final?: (body: BodyOf[A]) => boolean;
}

export interface ExchangeResult<A extends MessageTypeName> {
  /** The final answer; absent at the timeout. */
  answer?: BodyOf[A];
  /** The latest answer that was not final. */
  last?: BodyOf[A];
  /** Datagrams that failed the hmac: a peer holding another key. */
  badHmac: number;
}

export async function exchange<Q extends MessageTypeName, A extends MessageTypeName>(o: ExchangeOptions<Q, A>): Promise<ExchangeResult<A>> {
  const bind = o.bindAddress ?? (o.to.address.startsWith('127.') ? '127.0.0.1' : '0.0.0.0');
  const ch = await Channel.open({ key: o.key, sender: `${o.name}:${process.pid}`, bind: { address: bind, port: 0 } });
  try {
    let last: BodyOf[A] | undefined;
    const answer = await new Promise<BodyOf[A] | undefined>((resolve) => {
      const send = () => ch.send(o.to, o.request, o.body);
      let off = () => {};
      const timers: NodeJS.Timeout[] = [];
      const done = (a: BodyOf[A] | undefined) => {
        for (const t of timers) clearTimeout(t);
        off();
        resolve(a);
      };
      off = ch.onMessage((r) => {
        if (r.msg.type !== o.answer || !sameEndpoint(r.from, o.to)) return;
        const body = r.msg.body as BodyOf[A];
        if (o.final && !o.final(body)) last = body;
        else done(body);
      });
      timers.push(setTimeout(() => done(undefined), o.timeoutMs), setInterval(send, o.resendMs));
      send();
    });
    return { ...(answer !== undefined ? { answer } : {}), ...(last !== undefined ? { last } : {}), badHmac: ch.counters().rejected['bad-hmac'] };
  } finally {
    await ch.close();
  }
}
