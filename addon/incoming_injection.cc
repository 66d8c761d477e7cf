// Incoming traffic processor, part 2: what the replica is given. Cuts
// segments from the client's stream within the replica's window, maps
// acknowledgements and timestamps into its sequence space, sends again what
// it did not acknowledge (with backoff) and runs the per-flow timers.
#include "incoming_processor.h"

#include <algorithm>

#include "incoming_timing.h"
#include "sequence_map.h"

namespace t2cp {

bool IncomingProcessor::replica_ack(Flow& f, uint32_t* ack) {
  if (!f.client.ack_seen || !f.replica.synack) return false;
  bool clamped;
  *ack = map_ack(f.client.ack_p, f.seq_delta, f.replica.snd_nxt, &clamped);
  if (clamped) ctx_.counters.add(k_ack_clamped);
  return true;
}

uint32_t IncomingProcessor::replica_edge(const Flow& f, uint32_t ack) {
  return ack + (uint32_t(map_window(f.client.window, f.client.shift, f.client.ack_p + f.seq_delta, ack)) << f.client.shift);
}

void IncomingProcessor::sample_latency(Flow& f) {
  if (!f.pending_capture_ns) return;
  uint64_t now = realtime_ns();
  if (now > f.pending_capture_ns) ctx_.latency.add(now - f.pending_capture_ns);
  f.pending_capture_ns = 0;
}

bool IncomingProcessor::inject(Flow& f, uint32_t seq, uint8_t flags, uint32_t len, bool with_sack) {
  SegmentSpec sp;
  sp.saddr = f.key.client_ip;
  sp.daddr = ctx_.cfg.vip;
  sp.sport = f.key.client_port;
  sp.dport = f.key.server_port;
  sp.seq = seq;
  sp.window = f.client.window;
  sp.ip_id = ip_id_++;
  uint32_t ack = 0;
  if (replica_ack(f, &ack)) {
    sp.ack = ack;
    sp.window = map_window(f.client.window, f.client.shift, f.client.ack_p + f.seq_delta, ack);
    flags |= kAck;
    f.ack_given = ack;
    f.ack_given_valid = true;
    f.edge_given = replica_edge(f, ack);
  } else {
    flags &= static_cast<uint8_t>(~kAck);
  }
  sp.flags = flags;
  if (f.client.ts_ok && f.replica.synack) {
    sp.has_ts = true;
    sp.tsval = f.client.tsval;
    // Until the replica's connection is surely established, echo exactly the
    // TSval of its latest SYN-ACK, as the client would: a SYN-cookie
    // SYN-ACK encodes the connection's options in it, and the kernel
    // rebuilds them from our echo.
    sp.tsecr = replica_established(f) ? map_tsecr(f.client.tsecr_p, f.ts_delta, f.replica.synack_tsval, f.replica.tsval) : f.replica.tsval;
  }
  if (with_sack && f.client.sack_count && (flags & kAck)) {
    int dropped;
    sp.sack_count = static_cast<uint8_t>(
        map_sack(f.client.sack, f.client.sack_count, f.seq_delta, sp.ack, f.replica.snd_nxt, sp.sack, &dropped));
    ctx_.counters.add(k_sack_blocks_mapped, sp.sack_count);
    ctx_.counters.add(k_sack_blocks_dropped, dropped);
  }
  size_t n = len && !f.client.data.payload(seq, len, &sp) ? 0 : build_segment(sp, pkt_, sizeof pkt_);
  if (n == 0 || !ctx_.tun.write(pkt_, n)) {
    ctx_.counters.add(k_inject_errors);
    return false;
  }
  ctx_.counters.add(k_inject_packets);
  ctx_.counters.add(k_inject_bytes, len);
  sample_latency(f);
  return true;
}

bool IncomingProcessor::inject_syn(Flow& f) {
  // The client's SYN as it was: same ISN, window and options, so the replica
  // negotiates exactly what the primary negotiated with the client.
  SegmentSpec sp;
  sp.saddr = f.key.client_ip;
  sp.daddr = ctx_.cfg.vip;
  sp.sport = f.key.client_port;
  sp.dport = f.key.server_port;
  sp.seq = f.client.isn;
  sp.flags = kSyn;
  sp.window = f.client.syn_window;
  sp.ip_id = ip_id_++;
  sp.raw_options = f.client.syn_options;
  sp.raw_options_len = f.client.syn_options_len;
  f.syn_sent_us = realtime_us();
  size_t n = build_segment(sp, pkt_, sizeof pkt_);
  if (n == 0 || !ctx_.tun.write(pkt_, n)) {
    ctx_.counters.add(k_inject_errors);
    return false;
  }
  ctx_.counters.add(k_inject_packets);
  ctx_.counters.add(k_inject_syn);
  sample_latency(f);
  return true;
}

void IncomingProcessor::pump(Flow& f) {
  if (ctx_.mode == EngineMode::kActive || f.active()) return;  // the replica talks to the client itself now
  if (f.state != FlowState::kSynchronised && f.state != FlowState::kClosing) return;
  uint64_t now = realtime_us();
  if (f.client.rst && !f.rst_injected) {
    // RFC 5961: a RST is accepted only at exactly rcv_nxt; inj_nxt is what
    // the replica holds once it processed our last segment.
    f.client.data.clear();
    inject(f, f.inj_nxt, kRst, 0, false);  // a failure is counted
    f.rst_injected = true;
    check_closed(f, now);
    return;
  }
  // Data: from inj_nxt up to what we hold in order, the replica's window
  // and what its output allows.
  uint32_t right = f.replica.rcv_nxt + f.replica.window;
  uint32_t limit = f.client.data.contig_end();
  if (after(limit, right)) {
    ctx_.counters.add(k_held_for_window);
    limit = right;
  }
  bool held;
  uint32_t causal = causal_end(f, &held);
  if (held && before(causal, limit)) {
    ctx_.counters.add(k_causality_held);
    limit = causal;
  }
  bool sent = false;
  uint32_t budget = kPumpQuantum;
  while (before(f.inj_nxt, limit)) {
    if (!budget) {
      // The rest at the next pass, after the queue and the capture were
      // read again and every other flow had its turn.
      ctx_.carry.push_back(f.key);
      break;
    }
    uint32_t len = std::min<uint32_t>(limit - f.inj_nxt, kMaxSegPayload);
    uint8_t flags = kPsh;
    bool with_fin = f.client.fin && !f.fin_injected && f.inj_nxt + len == f.client.fin_seq && !(held && causal == f.client.fin_seq);
    if (with_fin) flags |= kFin;
    if (!inject(f, f.inj_nxt, flags, len, false)) break;
    f.inj_nxt += len;
    budget = len < budget ? budget - len : 0;
    if (with_fin) f.fin_injected = true;
    sent = true;
  }
  if (f.client.fin && !f.fin_injected && f.inj_nxt == f.client.fin_seq && !(held && causal == f.client.fin_seq)) {
    f.fin_injected = inject(f, f.inj_nxt, kFin, 0, false);
    sent = sent || f.fin_injected;
  }
  if (!sent) {
    // No data to carry it: a pure ACK when the replica may see a newer ack
    // (the client acked more, or the replica sent what the client had acked)
    // or a wider window (the client read: a replica told of a zero window
    // has nothing else to wait for but its persist timer).
    uint32_t ack;
    if (replica_ack(f, &ack) && (!f.ack_given_valid || after(ack, f.ack_given) || f.client.sack_fresh || f.ack_wanted ||
                                 after(replica_edge(f, ack), f.edge_given))) {
      if (inject(f, f.inj_nxt, 0, 0, f.client.sack_fresh)) ctx_.counters.add(k_inject_pure_ack);
    }
  }
  f.client.sack_fresh = false;
  f.ack_wanted = false;
  if (sent) f.last_progress_us = now;
  if (f.client.fin || f.client.rst || f.primary.rst || f.replica.fin || f.replica.rst) check_closed(f, now);
}

uint32_t IncomingProcessor::causal_end(Flow& f, bool* held) {
  *held = false;
  auto& marks = f.marks;
  while (!marks.empty() && !after(marks.front().end, f.replica.rcv_nxt)) marks.pop_front();
  uint32_t made = f.replica.snd_nxt - f.seq_delta;  // the replica's output, primary space
  for (const ClientMark& m : marks) {
    if (!after(m.end, f.inj_nxt)) continue;  // given already
    if (after(m.ack, made)) {
      *held = true;
      return after(m.start, f.inj_nxt) ? m.start : f.inj_nxt;
    }
  }
  return 0;
}

void IncomingProcessor::check_stopped(Flow& f, uint64_t now) {
  bool held;
  uint32_t causal = causal_end(f, &held);
  // Held while the replica still works on what it was given, or while its
  // window keeps out bytes causality lets through, is lag, not a stop.
  if (!held || f.replica.rcv_nxt != f.inj_nxt || before(f.inj_nxt, causal)) {
    f.held_since_us = 0;
    return;
  }
  uint32_t made = f.replica.snd_nxt - f.seq_delta;  // primary space
  if (!f.held_since_us || made != f.held_made) {
    f.held_since_us = now;
    f.held_made = made;
    f.stop_probed = false;
    return;
  }
  if (now - f.held_since_us >= kReplicaStoppedUs / 2 && !f.stop_probed) {
    // Halfway: a segment left of its window makes the replica answer with an
    // ACK from its own snd_nxt. Output we never saw (its queue overflowed)
    // then counts, and it is not taken for a stop.
    f.stop_probed = true;
    inject(f, f.inj_nxt - 1, 0, 0, false);
    ctx_.counters.add(k_replica_stop_probes);
  }
  if (now - f.held_since_us < kReplicaStoppedUs) return;
  ctx_.counters.add(k_replica_stopped);
  // Detail: how much of the primary's output it lacks, bytes.
  lose_flow(f, EventReason::kReplicaStopped, f.primary.snd_nxt - made);
}

// How far the replica is behind the primary, the worse direction: client
// bytes the primary acknowledged and the replica not yet (a takeover's step 2
// must feed them), and server bytes the primary sent and the replica has not
// made yet (after a takeover the client waits while it makes them again).
// Reported once per episode: again after it came back under half the mark.
void IncomingProcessor::check_lag(Flow& f) {
  uint64_t warn = ctx_.cfg.lag_warn_bytes;
  if (!warn) return;
  uint32_t made = f.replica.snd_nxt - f.seq_delta;  // primary space
  uint64_t c2s = after(f.primary.rcv_nxt, f.replica.rcv_nxt) ? f.primary.rcv_nxt - f.replica.rcv_nxt : 0;
  uint64_t s2c = after(f.primary.snd_nxt, made) ? f.primary.snd_nxt - made : 0;
  uint64_t lag = std::max(c2s, s2c);
  if (!f.lag_reported && lag > warn) {
    f.lag_reported = true;
    ctx_.counters.add(k_replica_lagging);
    ctx_.events.emit(EventType::kLagging, EventReason::kNone, f, lag);
  } else if (f.lag_reported && lag < warn / 2) {
    f.lag_reported = false;
  }
}

void IncomingProcessor::tick_flow(Flow& f, uint64_t now) {
  if (f.active()) return;  // active mode's (recovery_active_mode)
  switch (f.state) {
    case FlowState::kSynSeen:
      if (now - f.handshake_us > uint64_t(ctx_.cfg.handshake_timeout_ms) * 1000) {
        make_unprotected(f, EventReason::kHandshakeTimeout);
      } else if (!f.replica.synack && now - f.syn_sent_us > retry_after_us(f)) {
        // The replica dropped the SYN (its accept queue was full, say) and the
        // client will not send it again: the primary answered. Send it again.
        f.retries++;
        if (inject_syn(f)) ctx_.counters.add(k_inject_reinjected);
      }
      return;
    case FlowState::kSynchronised:
    case FlowState::kClosing: {
      check_gap(f, now);
      if (f.state == FlowState::kUnprotected) return;
      check_stopped(f, now);
      if (f.state == FlowState::kUnprotected) return;
      check_lag(f);
      if (f.drop_suspect_us && now - f.drop_suspect_us > kDropVerifyUs) {
        lose_flow(f, EventReason::kCaptureDrop, 0);
        return;
      }
      if (f.replica.rst && !f.primary.rst && !f.client.rst && !f.rst_injected && now - f.replica.rst_us > kPrimaryRstGraceUs) {
        lose_flow(f, EventReason::kReplicaReset, 0);  // its service aborted, the primary's did not
        return;
      }
      if (f.replica.fin && last_ack_implied(f, now)) implied_final_ack(f);
      if (f.primary.rst && !f.replica.rst && !f.client.rst && now - f.primary.rst_us > kPrimaryRstGraceUs) {
        f.client.rst = true;  // the replica did not follow the primary's reset: end its copy
        ctx_.mark_dirty(f);
        return;
      }
      if (now - f.last_progress_us < retry_after_us(f)) return;
      bool held;
      uint32_t causal = causal_end(f, &held);
      if (before(f.replica.rcv_nxt, f.inj_nxt) || (f.fin_injected && !after(f.replica.rcv_nxt, f.client.fin_seq))) {
        // The replica has not acknowledged what we injected: send it again.
        f.retries++;
        f.inj_nxt = f.replica.rcv_nxt;
        if (f.fin_injected && !after(f.replica.rcv_nxt, f.client.fin_seq)) f.fin_injected = false;
        ctx_.counters.add(k_inject_reinjected);
        f.last_progress_us = now;
        ctx_.mark_dirty(f);
      } else if (before(f.inj_nxt, f.client.data.contig_end()) && !after(f.replica.rcv_nxt + f.replica.window, f.inj_nxt) &&
                 !(held && causal == f.inj_nxt)) {
        // Window closed with data waiting (that causality lets through): a
        // 1-byte probe at rcv_nxt makes the replica answer with its window.
        f.retries++;
        if (inject(f, f.replica.rcv_nxt, 0, 1, false)) ctx_.counters.add(k_inject_window_probes);
        f.last_progress_us = now;
      }
      return;
    }
    case FlowState::kUnprotected:
      // Over, its last ACK missed (else it stays counted open, and --drain waits on it, for
      // kUnprotectedIdleUs).
      if (!f.ended && last_ack_implied(f, now)) {
        ctx_.counters.add(k_final_ack_implied);
        ended_unprotected(f);
      }
      return;
    default:
      return;
  }
}

void IncomingProcessor::tcp_fragments_tick(uint64_t now_us) {
  tcp_reassembly_.expire(now_us);
  const IpReassemblyStats& rs = tcp_reassembly_.stats();
  ctx_.counters.set(k_tcp_fragments, rs.fragments);
  ctx_.counters.set(k_tcp_reassembled, rs.reassembled);
  ctx_.counters.set(k_tcp_reassembly_failed, rs.timed_out + rs.overlapped + rs.refused);
}

void IncomingProcessor::on_tick(uint64_t now) {
  ctx_.flows.for_each([&](Flow& f) { tick_flow(f, now); });
  if (!ctx_.cfg.ports.empty()) tcp_fragments_tick(now);
  ctx_.udp.expire(now, uint64_t(ctx_.cfg.idle_timeout_s) * 1000000, [&](const FlowKey& k, const UdpAssociation& a) {
    ctx_.counters.add(k_udp_associations_expired);
    ctx_.events.emit_udp(EventType::kClosed, EventReason::kIdleTimeout, k, a);
    ctx_.udp_compare.forget(k);
  });
  if (ctx_.mode == EngineMode::kReplicating) enforce_max_lag(now);
  uint64_t idle_us = uint64_t(ctx_.cfg.idle_timeout_s) * 1000000;
  ctx_.flows.erase_if([&](Flow& f) {
    if (f.active()) return false;  // active mode expires it
    switch (f.state) {
      case FlowState::kClosed: return now - f.closed_us > kLingerUs;
      case FlowState::kUnprotected: return f.ended ? now - f.closed_us > kLingerUs : now - f.last_seen_us > kUnprotectedIdleUs;
      default:
        if (now - f.last_seen_us <= idle_us) return false;
        ctx_.counters.add(k_flows_expired);
        ctx_.events.emit(EventType::kClosed, EventReason::kIdleTimeout, f);
        if (!f.successor) return true;
        // Connections wait behind it on its key: the first takes its place (promote_waiting).
        f.state = FlowState::kClosed;
        f.closed_us = now;
        note_finished(f);
        return false;
    }
  });
}

}  // namespace t2cp
