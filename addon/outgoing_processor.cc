#include "outgoing_processor.h"

#include <algorithm>

#include "packet.h"
#include "seq.h"

namespace t2cp {

NfQueue::Verdict OutgoingProcessor::on_packet(uint8_t* ip, size_t copied) {
  switch (ctx_.mode) {
    case EngineMode::kReplicating:
    case EngineMode::kFrozen:
      on_replica_packet(ip, copied);
      return NfQueue::Verdict::kDrop;  // every replica packet; never reaches the network
    case EngineMode::kCatchingUp:
      return on_catching_up(ip, copied);
    case EngineMode::kActive:
      break;
  }
  return active_.on_packet(ip, copied);
}

// Takeover steps 3-6: a flow still finishing keeps the replication path (its
// client's segments, which reach this host itself once the VIP moved, are
// fed to its replica; its replica's output is observed and dropped); every
// other packet is active mode's.
NfQueue::Verdict OutgoingProcessor::on_catching_up(uint8_t* ip, size_t copied) {
  Segment s;
  if (parse_ipv4(ip, copied, /*allow_truncated_payload=*/true, &s) == ParseError::kOk) {
    bool to_vip = s.daddr == ctx_.cfg.vip && ctx_.port_set.test(s.dport);
    bool from_vip = s.saddr == ctx_.cfg.vip && ctx_.port_set.test(s.sport);
    Flow* f = to_vip   ? ctx_.flows.find(FlowKey{s.saddr, s.sport, s.dport})
              : from_vip ? ctx_.flows.find(FlowKey{s.daddr, s.dport, s.sport})
                         : nullptr;
    if (f && f->finishing()) {
      if (to_vip) in_.on_queued_client_segment(ip, copied);
      else on_replica_packet(ip, copied);
      return NfQueue::Verdict::kDrop;
    }
  }
  return active_.on_packet(ip, copied);
}

void OutgoingProcessor::keep_unacknowledged(Flow& f, const Segment& s, size_t copied) {
  if (!s.payload_len || f.state == FlowState::kSynSeen) return;
  // What the client acknowledged (mapped) the client has: nothing to keep.
  uint32_t client_has = f.client.ack_seen ? f.client.ack_p + f.seq_delta : f.replica.isn + 1;
  if (!after(s.seq + s.payload_len, client_has)) return;
  size_t present = std::min(copied, size_t(s.ip_len)) - size_t(s.payload - s.ip);
  if (present < s.payload_len) {
    f.replica.out_incomplete = true;
    return;
  }
  if (f.replica.out.add(s.seq, s.payload, s.payload_len) == StreamBuffer::AddResult::kFull && !f.replica.out_incomplete) {
    f.replica.out_incomplete = true;
    ctx_.counters.add(k_out_keep_full);
  }
}

void OutgoingProcessor::on_replica_packet(const uint8_t* ip, size_t copied) {
  Counters& c = ctx_.counters;
  c.add(k_backup_packets);
  c.add(k_backup_dropped);  // every queued packet gets the drop verdict
  Segment s;
  ParseError e = parse_ipv4(ip, copied, /*allow_truncated_payload=*/true, &s);
  if (e == ParseError::kNotTcp && !ctx_.cfg.udp_ports.empty()) {
    // A datagram of the replica's from VIP:udp-port: a reply, or one it sends
    // on its own (a proxy forwarding a request): counted, dropped. Its first
    // to a peer may come before the primary's (a replica ahead): it opens the
    // association then, so that the primary's, later, pairs with it.
    Datagram d;
    e = parse_udp(ip, copied, &d);
    if (e == ParseError::kOk) {
      c.add(k_udp_replica_datagrams);
      // From a media relay's port: compared as from the primary's it is paired with (held for the
      // pair when it has none yet).
      uint16_t port = d.sport;
      if (ctx_.relay.relay(port) && !(port = ctx_.relay.primary_of(d.sport))) {
        in_.hold_relay_output(d);
        return;
      }
      in_.replica_datagram(FlowKey{d.daddr, d.dport, port}, d.payload, d.payload_len, realtime_us());
      return;
    }
  }
  if (e != ParseError::kOk) {
    c.backup_parse[static_cast<int>(e)].fetch_add(1, std::memory_order_relaxed);
    return;
  }
  Flow* f = ctx_.flows.find(FlowKey{s.daddr, s.dport, s.sport});
  if (!f || f->state == FlowState::kUnprotected) {
    c.add(k_backup_unknown_flow);
    return;
  }
  if ((s.flags & kAck) && before(s.ack, f->client.isn + 1)) {
    // The replica's side of an older connection on this key (a FIN or ACK
    // sent again after the flow was replaced by the key's next connection).
    c.add(k_segments_older_generation);
    return;
  }
  if (s.flags & kRst) {
    c.add(k_backup_rst);
    if (f->state == FlowState::kSynSeen) {
      // A RST-ACK of the SYN itself: the replica's service is not listening.
      // (A RST without it answers a segment of a connection the replica
      // dropped before a handshake restart: stale, ignored.)
      if ((s.flags & kAck) && s.ack == f->client.isn + 1) {
        f->replica.rst = true;
        in_.make_unprotected(*f, EventReason::kBackupRefused);
      }
      return;
    }
    if (!f->replica.rst && !in_.replica_established(*f)) {
      // The replica's half-open connection expired (its accept queue stayed
      // full) and it reset what we sent next: open it again from the SYN.
      in_.restart_handshake(*f);
      return;
    }
    f->replica.rst = true;
    if (!f->replica.rst_us) f->replica.rst_us = realtime_us();
    ctx_.mark_dirty(*f);
    return;
  }
  if ((s.flags & (kSyn | kAck)) == (kSyn | kAck)) {
    if (!f->replica.synack) {
      f->replica.synack = true;
      f->replica.isn = s.seq;
      f->replica.synack_tsval = f->replica.tsval = s.opt.tsval;
      f->replica.snd_nxt = s.seq + 1;
      // Window scaling applies only if both SYNs carried the option; the
      // SYN-ACK's own window field is never scaled (RFC 7323 2.2).
      f->replica.wscale = (f->client.ws_ok && s.opt.has_wscale) ? s.opt.wscale : 0;
      f->client.shift = (f->client.ws_ok && s.opt.has_wscale) ? f->client.syn_wscale : 0;
      f->replica.window = s.window;
      f->replica.rcv_nxt = s.ack;
      f->retries = 0;
      in_.start_comparison(*f, CompareSide::kReplica, s.seq + 1);
      in_.try_synchronise(*f);
    } else if (f->state != FlowState::kSynSeen && !in_.replica_established(*f)) {
      // A repeated SYN-ACK: the replica did not get the handshake's ACK (its
      // accept queue was full, say). Answer as the client would, with an ACK,
      // and with the data it holds at once (any segment completes the
      // handshake): the replica is ready now, our retry timer may be far off.
      // With SYN cookies every SYN-ACK is a new cookie: the one to echo is
      // the latest (its TSval carries the options, its ISN may differ).
      if (s.opt.has_ts) f->replica.tsval = s.opt.tsval;
      if (s.seq != f->replica.isn) {
        in_.restart_comparison(*f);
        in_.start_comparison(*f, CompareSide::kReplica, s.seq + 1);
        f->replica.isn = s.seq;
        f->replica.snd_nxt = s.seq + 1;
        f->seq_delta = f->replica.isn - f->primary.isn;
        f->replica.out.reset(f->replica.isn + 1, ctx_.cfg.flow_buffer_limit, &ctx_.stream_memory);
      }
      f->ack_wanted = true;
      f->inj_nxt = f->replica.rcv_nxt;
      f->fin_injected = false;
      f->retries = 0;
      ctx_.mark_dirty(*f);
    }
    return;
  }
  if (!f->replica.synack) return;
  if (s.opt.has_ts && after(s.opt.tsval, f->replica.tsval)) f->replica.tsval = s.opt.tsval;
  uint32_t end = s.seq + s.payload_len + ((s.flags & kFin) ? 1 : 0);
  // The replica sends again what we acknowledged (our ACK did not reach it:
  // the TUN's backlog dropped it), or probes a window we closed or a
  // connection gone quiet (a segment just left of our ack). Answer with an
  // ACK, as a receiver does, or the replica only backs off further.
  if (f->ack_given_valid && before(s.seq, f->ack_given) && !after(end, f->ack_given)) {
    f->ack_wanted = true;
    c.add(k_replica_repeats);
  }
  keep_unacknowledged(*f, s, copied);
  if (after(end, f->replica.snd_nxt)) {
    f->replica.s2c += end - f->replica.snd_nxt - ((s.flags & kFin) ? 1 : 0);  // data bytes only
    f->replica.snd_nxt = end;
    // What a replica re-makes while catching up after a takeover is not replication lag.
    if (s.payload_len && ctx_.mode == EngineMode::kReplicating) f->output_lag.replica_sent(f->replica.s2c, realtime_ns());
  }
  if (s.flags & kFin) {
    f->replica.fin = true;
    f->replica.fin_seq = s.seq + s.payload_len;
  }
  if (s.payload_len || (s.flags & kFin)) {
    size_t held = std::min(copied, size_t(s.ip_len)), before_payload = size_t(s.payload - s.ip);
    in_.compare_output(*f, CompareSide::kReplica, s, uint32_t(held > before_payload ? held - before_payload : 0));
    if (f->state == FlowState::kUnprotected) return;  // it diverged
  }
  if (s.flags & kAck) {
    if (after(s.ack, f->replica.rcv_nxt)) {
      f->replica.c2s += s.ack - f->replica.rcv_nxt;
      f->replica.rcv_nxt = s.ack;
      f->client.data.release(s.ack);
      f->last_progress_us = realtime_us();
      f->retries = 0;
      if (after(f->replica.rcv_nxt, f->inj_nxt)) f->inj_nxt = f->replica.rcv_nxt;
    }
    f->replica.window = uint32_t(s.window) << f->replica.wscale;
  }
  ctx_.mark_dirty(*f);
}

}  // namespace t2cp
