#include "incoming_processor.h"

#include <algorithm>
#include <cstring>
#include <ctime>

#include "sequence_map.h"

namespace t2cp {

// Largest payload cut into one injected segment, bytes: IPv4 maximum 65535
// less IPv4 (20), TCP (20) and timestamp (12) headers, rounded down.
constexpr uint32_t kMaxSegPayload = 65000;
// The replica acknowledges within its delayed-ACK limit (TCP_DELACK_MAX,
// 200 ms); past that, un-acknowledged injected data is sent again, µs.
constexpr uint64_t kReinjectUs = 250000;
// Each further attempt without progress waits twice as long, up to 2^4 x
// (4 s): a replica drowning in work (its accept queue full) must not be
// buried under our retries too, exactly as TCP backs off.
constexpr int kMaxBackoffShift = 4;

static uint64_t retry_after_us(const Flow& f) {
  return kReinjectUs << (f.retries < kMaxBackoffShift ? f.retries : kMaxBackoffShift);
}
// How long a closed flow absorbs retransmissions before it is forgotten, µs.
constexpr uint64_t kLingerUs = 3000000;
// Unprotected flows are remembered this long after their last packet (so
// the event fires once), µs.
constexpr uint64_t kUnprotectedIdleUs = 60000000;
// After the primary resets a flow, the replica gets this long to reset its
// own copy (a deterministic service aborts too) before we reset it; and the
// other way round, after the replica resets, the primary gets this long to
// follow before the replica's copy counts as lost, µs.
constexpr uint64_t kPrimaryRstGraceUs = 1000000;
// How long client bytes the primary acknowledged may be missing from the
// capture before they count as lost (the mirror may deliver them late), µs.
constexpr uint64_t kGapGraceUs = 500000;
// After capture drops: flows seen this recently are suspected, µs (the drop
// counter is read every 100 ms, frames sit in the ring a little longer).
constexpr uint64_t kDropSuspectWindowUs = 300000;
// ... and must show a primary ack within what we hold this soon, µs.
constexpr uint64_t kDropVerifyUs = 1000000;
// Times the replica's handshake is started again after it dropped its
// half-open connection, before the flow is declared unprotected.
constexpr int kMaxHandshakeRestarts = 5;

uint64_t realtime_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

void IncomingProcessor::pcap_callback(u_char* self, const pcap_pkthdr* h, const u_char* bytes) {
  // PCAP_TSTAMP_PRECISION_NANO: tv_usec holds nanoseconds.
  uint64_t ns = uint64_t(h->ts.tv_sec) * 1000000000u + uint64_t(h->ts.tv_usec);
  reinterpret_cast<IncomingProcessor*>(self)->on_mirror_frame(bytes, h->caplen, ns);
}

void IncomingProcessor::on_mirror_frame(const uint8_t* frame, size_t caplen, uint64_t capture_ns) {
  Counters& c = ctx_.counters;
  c.add(k_mirror_packets);
  c.add(k_mirror_bytes, caplen);
  Segment s;
  ParseError e = parse_ethernet(frame, caplen, &s);
  if (e != ParseError::kOk) {
    c.mirror_parse[static_cast<int>(e)].fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (caplen > 1518) c.add(k_mirror_superframes);
  if (s.daddr == ctx_.cfg.vip && ctx_.port_set.test(s.dport)) on_client_segment(s, capture_ns);
  else if (s.saddr == ctx_.cfg.vip && ctx_.port_set.test(s.sport)) on_primary_segment(s);
  else c.add(k_mirror_not_replicated);
}

void IncomingProcessor::start_flow(const FlowKey& k, const Segment& s, uint64_t capture_ns) {
  Flow* f = ctx_.flows.insert(k);
  if (!f) {
    ctx_.counters.add(k_flows_refused_max);
    ctx_.events.emit_key(EventType::kUnprotected, EventReason::kTableFull, k);
    return;
  }
  uint64_t now = realtime_us();
  f->created_us = f->last_seen_us = f->last_progress_us = f->handshake_us = now;
  f->c_isn = s.seq;
  f->syn_options_len = s.options_len;
  std::memcpy(f->syn_options, s.options, s.options_len);
  f->syn_window = s.window;
  f->c_window = s.window;
  f->c_ts_ok = s.opt.has_ts;
  f->c_tsval = s.opt.tsval;
  f->c_ws_ok = s.opt.has_wscale;
  f->data.reset(s.seq + 1, ctx_.cfg.flow_buffer_limit);
  f->inj_nxt = f->b_rcv_nxt = s.seq + 1;
  f->pending_capture_ns = capture_ns;
  ctx_.counters.add(k_flows_new);
  ctx_.events.emit(EventType::kNew, EventReason::kNone, *f);
  inject_syn(*f);
}

void IncomingProcessor::make_unprotected(Flow& f, EventReason why) {
  f.state = FlowState::kUnprotected;
  f.data.clear();
  ctx_.counters.add(k_flows_unprotected);
  ctx_.events.emit(EventType::kUnprotected, why, f);
}

void IncomingProcessor::on_client_segment(const Segment& s, uint64_t capture_ns) {
  FlowKey k{s.saddr, s.sport, s.dport};
  Flow* f = ctx_.flows.find(k);
  bool syn = (s.flags & (kSyn | kAck)) == kSyn;
  if (syn) {
    if (f && f->state == FlowState::kSynSeen && s.seq == f->c_isn) {
      f->pending_capture_ns = capture_ns;  // the client retransmitted its SYN
      inject_syn(*f);
      return;
    }
    if (f) {  // the client reuses the port: the old flow is over
      if (f->state != FlowState::kClosed && f->state != FlowState::kUnprotected)
        ctx_.events.emit(EventType::kClosed, EventReason::kNone, *f);
      ctx_.flows.erase(k);
    }
    start_flow(k, s, capture_ns);
    return;
  }
  if (!f) {
    // First seen mid-stream: the replica never saw it open and cannot join.
    f = ctx_.flows.insert(k);
    if (!f) {
      // Table full: most likely a flow refused at its SYN (already counted
      // and reported once); remembering nothing, count the packet only.
      ctx_.counters.add(k_mirror_unknown_flow);
      return;
    }
    f->created_us = f->last_seen_us = realtime_us();
    make_unprotected(*f, EventReason::kMidStream);
    return;
  }
  f->last_seen_us = realtime_us();
  if (f->state == FlowState::kUnprotected || f->state == FlowState::kClosed) return;

  if (s.opt.has_ts && (f->c_tsval == 0 || !before(s.opt.tsval, f->c_tsval))) {
    f->c_tsval = s.opt.tsval;  // PAWS on the replica: never go back
    f->c_tsecr_p = s.opt.tsecr;
  }
  f->c_window = s.window;
  if ((s.flags & kAck) && (!f->c_ack_seen || after(s.ack, f->c_ack_p))) {
    f->c_ack_p = s.ack;
    f->c_ack_seen = true;
  }
  if (s.opt.sack_count) {
    f->c_sack_count = s.opt.sack_count;
    std::memcpy(f->c_sack, s.opt.sack, sizeof(SackBlock) * s.opt.sack_count);
    f->c_sack_fresh = true;
  }
  if (s.payload_len) {
    switch (f->data.add(s.seq, s.payload, s.payload_len)) {
      case StreamBuffer::AddResult::kAppended: break;
      case StreamBuffer::AddResult::kDuplicate: ctx_.counters.add(k_segments_duplicate); break;
      case StreamBuffer::AddResult::kOutOfOrder: ctx_.counters.add(k_segments_out_of_order); break;
      case StreamBuffer::AddResult::kFull:
        ctx_.counters.add(k_flow_buffer_full);
        lose_flow(*f, EventReason::kBufferFull, f->data.held_bytes());
        return;
    }
  }
  if (s.flags & kFin) {
    f->c_fin = true;
    f->c_fin_seq = s.seq + s.payload_len;
  }
  if (s.flags & kRst) f->c_rst = true;
  if (f->state == FlowState::kSynSeen) ctx_.counters.add(k_segments_held_handshake);
  if (!f->pending_capture_ns) f->pending_capture_ns = capture_ns;
  ctx_.mark_dirty(*f);
}

void IncomingProcessor::on_primary_segment(const Segment& s) {
  FlowKey k{s.daddr, s.dport, s.sport};
  Flow* f = ctx_.flows.find(k);
  if (!f) {
    ctx_.counters.add(k_mirror_unknown_flow);
    return;
  }
  if (f->state == FlowState::kUnprotected || f->state == FlowState::kClosed) return;
  if ((s.flags & (kSyn | kAck)) == (kSyn | kAck)) {
    if (!f->p_synack && s.ack == f->c_isn + 1) {
      f->p_synack = true;
      f->p_isn = s.seq;
      f->p_synack_tsval = s.opt.tsval;
      f->p_snd_nxt = s.seq + 1;
      f->p_rcv_nxt = s.ack;
      try_synchronise(*f);
    }
    return;
  }
  if (!f->p_synack) return;
  uint32_t end = s.seq + s.payload_len + ((s.flags & kFin) ? 1 : 0);
  if (after(end, f->p_snd_nxt)) {
    f->s2c_primary += end - f->p_snd_nxt - ((s.flags & kFin) ? 1 : 0);  // data bytes only
    f->p_snd_nxt = end;
  }
  // After capture drops, a primary ack within what we hold proves this flow
  // lost nothing (the mirror delivers client data before its ack).
  if (f->drop_suspect_us && (s.flags & kAck) && !after(s.ack, captured_end(*f))) f->drop_suspect_us = 0;
  if ((s.flags & kAck) && after(s.ack, f->p_rcv_nxt)) {
    f->c2s_primary += s.ack - f->p_rcv_nxt;
    f->p_rcv_nxt = s.ack;
    // The primary acknowledged client bytes: if we do not hold them yet the
    // capture may have lost them, or the mirror merely delivers them late
    // (it may reorder the two directions). tick_flow decides after a grace.
    if (after(s.ack, captured_end(*f)) && !f->gap_suspect_us) {
      f->gap_suspect_us = realtime_us();
      f->gap_seq = s.ack;
    }
  }
  if (s.flags & kFin) f->p_fin = true;
  if (s.flags & kRst) {
    f->p_rst = true;
    if (!f->primary_rst_us) f->primary_rst_us = realtime_us();
    ctx_.mark_dirty(*f);
  }
}

void IncomingProcessor::try_synchronise(Flow& f) {
  if (f.state != FlowState::kSynSeen || !f.p_synack || !f.b_synack) return;
  f.seq_delta = f.b_isn - f.p_isn;
  f.ts_delta = f.b_synack_tsval - f.p_synack_tsval;
  f.state = FlowState::kSynchronised;
  if (!f.handshake_restarts) {  // a restarted handshake was reported the first time
    ctx_.counters.add(k_flows_synchronised);
    ctx_.events.emit(EventType::kSynchronised, EventReason::kNone, f);
  }
  ctx_.mark_dirty(f);
}

bool IncomingProcessor::replica_ack(Flow& f, uint32_t* ack) {
  if (!f.c_ack_seen || !f.b_synack) return false;
  bool clamped;
  *ack = map_ack(f.c_ack_p, f.seq_delta, f.b_snd_nxt, &clamped);
  if (clamped) ctx_.counters.add(k_ack_clamped);
  return true;
}

void IncomingProcessor::sample_latency(Flow& f) {
  if (!f.pending_capture_ns) return;
  uint64_t now = realtime_ns();
  if (now > f.pending_capture_ns) ctx_.latency.add(now - f.pending_capture_ns);
  f.pending_capture_ns = 0;
}

bool IncomingProcessor::inject(Flow& f, uint32_t seq, uint8_t flags, const uint8_t* payload, uint32_t len,
                               bool with_sack) {
  SegmentSpec sp;
  sp.saddr = f.key.client_ip;
  sp.daddr = ctx_.cfg.vip;
  sp.sport = f.key.client_port;
  sp.dport = f.key.server_port;
  sp.seq = seq;
  sp.window = f.c_window;
  sp.ip_id = ip_id_++;
  uint32_t ack = 0;
  if (replica_ack(f, &ack)) {
    sp.ack = ack;
    flags |= kAck;
    f.ack_given = ack;
    f.ack_given_valid = true;
  } else {
    flags &= static_cast<uint8_t>(~kAck);
  }
  sp.flags = flags;
  if (f.c_ts_ok && f.b_synack) {
    sp.has_ts = true;
    sp.tsval = f.c_tsval;
    // Until the replica's connection is surely established, echo exactly the
    // TSval of its latest SYN-ACK, as the client would: a SYN-cookie
    // SYN-ACK encodes the connection's options in it, and the kernel
    // rebuilds them from our echo.
    sp.tsecr = replica_established(f) ? map_tsecr(f.c_tsecr_p, f.ts_delta, f.b_synack_tsval, f.b_tsval) : f.b_tsval;
  }
  if (with_sack && f.c_sack_count && (flags & kAck)) {
    int dropped;
    sp.sack_count = static_cast<uint8_t>(
        map_sack(f.c_sack, f.c_sack_count, f.seq_delta, sp.ack, f.b_snd_nxt, sp.sack, &dropped));
    ctx_.counters.add(k_sack_blocks_mapped, sp.sack_count);
    ctx_.counters.add(k_sack_blocks_dropped, dropped);
  }
  sp.payload = payload;
  sp.payload_len = len;
  size_t n = build_segment(sp, pkt_, sizeof pkt_);
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
  sp.seq = f.c_isn;
  sp.flags = kSyn;
  sp.window = f.syn_window;
  sp.ip_id = ip_id_++;
  sp.raw_options = f.syn_options;
  sp.raw_options_len = f.syn_options_len;
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
  if (f.state != FlowState::kSynchronised && f.state != FlowState::kClosing) return;
  uint64_t now = realtime_us();
  if (f.c_rst && !f.rst_injected) {
    // RFC 5961: a RST is accepted only at exactly rcv_nxt; inj_nxt is what
    // the replica holds once it processed our last segment.
    f.data.clear();
    inject(f, f.inj_nxt, kRst, nullptr, 0, false);  // a failure is counted
    f.rst_injected = true;
    check_closed(f, now);
    return;
  }
  // Data: from inj_nxt up to what we hold in order and the replica's window.
  uint32_t right = f.b_rcv_nxt + f.b_window;
  uint32_t limit = f.data.contig_end();
  if (after(limit, right)) {
    ctx_.counters.add(k_held_for_window);
    limit = right;
  }
  bool sent = false;
  while (before(f.inj_nxt, limit)) {
    uint32_t len = std::min<uint32_t>(limit - f.inj_nxt, kMaxSegPayload);
    uint8_t flags = kPsh;
    bool with_fin = f.c_fin && !f.fin_injected && f.inj_nxt + len == f.c_fin_seq;
    if (with_fin) flags |= kFin;
    if (!inject(f, f.inj_nxt, flags, f.data.at(f.inj_nxt), len, false)) break;
    f.inj_nxt += len;
    if (with_fin) f.fin_injected = true;
    sent = true;
  }
  if (f.c_fin && !f.fin_injected && f.inj_nxt == f.c_fin_seq) {
    f.fin_injected = inject(f, f.inj_nxt, kFin, nullptr, 0, false);
    sent = sent || f.fin_injected;
  }
  if (!sent) {
    // No data to carry it: a pure ACK when the replica may see a newer ack
    // (the client acked more, or the replica sent what the client had acked).
    uint32_t ack;
    if (replica_ack(f, &ack) && (!f.ack_given_valid || after(ack, f.ack_given) || f.c_sack_fresh || f.ack_wanted)) {
      if (inject(f, f.inj_nxt, 0, nullptr, 0, f.c_sack_fresh)) ctx_.counters.add(k_inject_pure_ack);
    }
  }
  f.c_sack_fresh = false;
  f.ack_wanted = false;
  if (sent) f.last_progress_us = now;
  if (f.c_fin || f.c_rst || f.p_rst || f.b_fin || f.b_rst) check_closed(f, now);
}

void IncomingProcessor::check_closed(Flow& f, uint64_t now_us) {
  if (f.state == FlowState::kClosed) return;
  // A reset ends the flow when the client (we pass it on) or the primary
  // reset it too; the replica resetting alone is a loss (tick_flow).
  bool reset = f.rst_injected || (f.b_rst && (f.p_rst || f.c_rst));
  bool client_done = f.c_fin && after(f.b_rcv_nxt, f.c_fin_seq);           // replica acked the FIN
  bool replica_done = f.b_fin && f.ack_given_valid && after(f.ack_given, f.b_fin_seq);
  if (!reset && !(client_done && replica_done)) {
    if (f.c_fin || f.b_fin || f.p_rst) f.state = FlowState::kClosing;
    return;
  }
  f.state = FlowState::kClosed;
  f.closed_us = now_us;
  f.data.clear();
  ctx_.counters.add(k_flows_closed);
  // Both services wrote the same number of bytes, or the replica diverged.
  bool diverged = f.p_synack && f.b_synack && !reset && f.s2c_primary != f.s2c_backup;
  ctx_.events.emit(EventType::kClosed, reset ? EventReason::kRst : EventReason::kFin, f, diverged ? 1 : 0);
}

uint32_t IncomingProcessor::captured_end(const Flow& f) {
  uint32_t end = f.data.contig_end();
  return end + ((f.c_fin && end == f.c_fin_seq) ? 1 : 0);  // the FIN takes one number
}

void IncomingProcessor::check_gap(Flow& f, uint64_t now) {
  if (!f.gap_suspect_us) return;
  if (!after(f.gap_seq, captured_end(f))) {
    f.gap_suspect_us = 0;  // the bytes arrived: the mirror was only late
    return;
  }
  if (now - f.gap_suspect_us < kGapGraceUs || f.reported_gap) return;
  // Still missing: the capture lost client bytes the primary has. Without the
  // traffic recorder's resupply, the replica cannot get past this point.
  f.reported_gap = true;
  ctx_.counters.add(k_gaps);
  lose_flow(f, EventReason::kGap, captured_end(f) - (f.c_isn + 1));
}

bool IncomingProcessor::replica_established(const Flow& f) {
  return after(f.b_rcv_nxt, f.c_isn + 1) || after(f.b_snd_nxt, f.b_isn + 1);
}

void IncomingProcessor::restart_handshake(Flow& f) {
  if (++f.handshake_restarts > kMaxHandshakeRestarts) {
    make_unprotected(f, EventReason::kBackupRefused);
    return;
  }
  ctx_.counters.add(k_handshake_restarts);
  // The client's bytes are all still held (the replica acknowledged none).
  f.state = FlowState::kSynSeen;
  f.handshake_us = realtime_us();
  f.b_synack = false;
  f.b_window = 0;
  f.b_rcv_nxt = f.inj_nxt = f.c_isn + 1;
  f.fin_injected = f.ack_given_valid = f.ack_wanted = false;
  inject_syn(f);
}

void IncomingProcessor::on_capture_drops(uint64_t now) {
  ctx_.flows.for_each([&](Flow& f) {
    bool live = f.state == FlowState::kSynchronised || f.state == FlowState::kClosing;
    if (live && now - f.last_seen_us < kDropSuspectWindowUs && !f.drop_suspect_us) f.drop_suspect_us = now;
  });
}

void IncomingProcessor::lose_flow(Flow& f, EventReason why, uint64_t detail) {
  ctx_.events.emit(EventType::kAnomaly, why, f, detail);
  // The replica can no longer follow this connection: end its copy with a
  // reset rather than leave its service waiting forever for bytes that will
  // not come. The connection is then unprotected, which is what a takeover
  // must know.
  if ((f.state == FlowState::kSynchronised || f.state == FlowState::kClosing) && !f.b_rst) {
    inject(f, f.inj_nxt, kRst, nullptr, 0, false);
    f.rst_injected = true;
  }
  make_unprotected(f, why);
}

void IncomingProcessor::tick_flow(Flow& f, uint64_t now) {
  switch (f.state) {
    case FlowState::kSynSeen:
      if (now - f.handshake_us > uint64_t(ctx_.cfg.handshake_timeout_ms) * 1000) {
        make_unprotected(f, EventReason::kHandshakeTimeout);
      } else if (!f.b_synack && now - f.syn_sent_us > retry_after_us(f)) {
        // The replica dropped the SYN (its accept queue was full, say) and the
        // client will not send it again: the primary answered. Send it again.
        f.retries++;
        if (inject_syn(f)) ctx_.counters.add(k_inject_reinjected);
      }
      return;
    case FlowState::kSynchronised:
    case FlowState::kClosing:
      check_gap(f, now);
      if (f.state == FlowState::kUnprotected) return;
      if (f.drop_suspect_us && now - f.drop_suspect_us > kDropVerifyUs) {
        lose_flow(f, EventReason::kCaptureDrop, 0);
        return;
      }
      if (f.b_rst && !f.p_rst && !f.c_rst && !f.rst_injected && now - f.b_rst_us > kPrimaryRstGraceUs) {
        lose_flow(f, EventReason::kReplicaReset, 0);  // its service aborted, the primary's did not
        return;
      }
      if (f.p_rst && !f.b_rst && !f.c_rst && now - f.primary_rst_us > kPrimaryRstGraceUs) {
        f.c_rst = true;  // the replica did not follow the primary's reset: end its copy
        ctx_.mark_dirty(f);
        return;
      }
      if (now - f.last_progress_us < retry_after_us(f)) return;
      if (before(f.b_rcv_nxt, f.inj_nxt) || (f.fin_injected && !after(f.b_rcv_nxt, f.c_fin_seq))) {
        // The replica has not acknowledged what we injected: send it again.
        f.retries++;
        f.inj_nxt = f.b_rcv_nxt;
        if (f.fin_injected && !after(f.b_rcv_nxt, f.c_fin_seq)) f.fin_injected = false;
        ctx_.counters.add(k_inject_reinjected);
        f.last_progress_us = now;
        ctx_.mark_dirty(f);
      } else if (before(f.inj_nxt, f.data.contig_end()) && !after(f.b_rcv_nxt + f.b_window, f.inj_nxt)) {
        // Window closed with data waiting: a 1-byte probe at rcv_nxt makes
        // the replica answer with its current window.
        f.retries++;
        if (inject(f, f.b_rcv_nxt, 0, f.data.at(f.b_rcv_nxt), 1, false)) ctx_.counters.add(k_inject_window_probes);
        f.last_progress_us = now;
      }
      return;
    default:
      return;
  }
}

void IncomingProcessor::on_tick(uint64_t now) {
  ctx_.flows.for_each([&](Flow& f) { tick_flow(f, now); });
  uint64_t idle_us = uint64_t(ctx_.cfg.idle_timeout_s) * 1000000;
  ctx_.flows.erase_if([&](Flow& f) {
    switch (f.state) {
      case FlowState::kClosed: return now - f.closed_us > kLingerUs;
      case FlowState::kUnprotected: return now - f.last_seen_us > kUnprotectedIdleUs;
      default:
        if (now - f.last_seen_us <= idle_us) return false;
        ctx_.counters.add(k_flows_expired);
        ctx_.events.emit(EventType::kClosed, EventReason::kIdleTimeout, f);
        return true;
    }
  });
}

}  // namespace t2cp
