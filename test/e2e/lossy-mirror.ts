// A lossy SPAN port: the switch's mirror port (sm) drops about one in 32 (or all) of the clients'
// frames of one kind toward the VIP — the primary gets every frame, the backup's capture misses those. An HTB
// class on the mirror port whose queue holds nothing takes the frames whose IP ID ends in five zero
// bits (this kernel has neither netem nor gact; nft's egress hook does not see mirrored frames).
import type { Testbed } from '../../scripts/testbed.js';

/**
 * 'tcp-data': TCP segments with PSH (client data); 'udp': UDP datagrams (a connected socket's IDs
 * count up); 'tcp-ack': every pure ACK (no data, no SYN or FIN), not one in 32 — among them each
 * connection's last ACK, which nothing later on that connection repeats.
 */
export type LossyKind = 'tcp-data' | 'udp' | 'tcp-ack';

export async function lossyMirror(tb: Testbed, kind: LossyKind): Promise<void> {
  const tc = async (...a: string[]) => {
    const r = await tb.exec(tb.ns.sw, ['tc', ...a]);
    if (r.code !== 0) throw new Error(`tc ${a.join(' ')}: ${r.stderr}`);
  };
  const which = { 'tcp-data': ['match', 'u8', '0x08', '0x08', 'at', '33'], 'tcp-ack': ['match', 'u8', '0x10', '0xff', 'at', '33'],
    udp: ['match', 'ip', 'protocol', '17', '0xff'] }[kind];
  const ids = kind === 'tcp-ack' ? '0x0000' : '0x001f';
  await tc('qdisc', 'add', 'dev', 'sm', 'root', 'handle', '1:', 'htb', 'default', '1');
  await tc('class', 'add', 'dev', 'sm', 'parent', '1:', 'classid', '1:1', 'htb', 'rate', '10gbit');
  await tc('class', 'add', 'dev', 'sm', 'parent', '1:', 'classid', '1:2', 'htb', 'rate', '10gbit');
  await tc('qdisc', 'add', 'dev', 'sm', 'parent', '1:2', 'handle', '20:', 'pfifo', 'limit', '0');
  await tc('filter', 'add', 'dev', 'sm', 'parent', '1:', 'protocol', 'ip', 'u32', 'match', 'ip', 'dst', `${tb.addr.vip}/32`,
    ...which, 'match', 'u16', '0x0000', ids, 'at', '4', 'flowid', '1:2');
}

/** Frames the mirror port dropped (the empty queue's drop count). */
export async function droppedOnMirror(tb: Testbed): Promise<number> {
  const r = await tb.exec(tb.ns.sw, ['tc', '-s', 'qdisc', 'show', 'dev', 'sm']);
  const pfifo = r.stdout.split(/\n(?=qdisc )/).find((q) => q.startsWith('qdisc pfifo 20:')) ?? '';
  return Number(/dropped (\d+)/.exec(pfifo)?.[1] ?? 0);
}
