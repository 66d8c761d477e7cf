// Incoming traffic processor, part 1: what the mirror shows. Parses each
// captured frame, keeps the client's stream and the primary's progress per
// flow, pairs the handshake and decides a flow's fate (synchronised, closed,
// unprotected). Part 2, incoming_injection.cc, gives the replica its segments.
#include "incoming_processor.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "incoming_timing.h"

namespace t2cp {

IncomingProcessor::IncomingProcessor(EngineContext& ctx)
    : ctx_(ctx),
      ledger_([this](const uint8_t* ip, size_t len) { give_udp(ip, len); },
              [this](const FlowKey& k, uint64_t index) {
                static const UdpAssociation kUnknown;  // its first datagram was the one lost
                const UdpAssociation* a = ctx_.udp.find(k);
                ctx_.events.emit_udp(EventType::kResupply, EventReason::kGap, k, a ? *a : kUnknown, index);
              }) {
  ctx_.relay_paired = [this](uint16_t port) { give_relay_held(port); };
}

IncomingProcessor::~IncomingProcessor() {
  ctx_.relay_paired = nullptr;
  if (raw_fd_ >= 0) close(raw_fd_);
}

void IncomingProcessor::capture_callback(void* self, const uint8_t* frame, size_t caplen, uint64_t capture_ns) {
  static_cast<IncomingProcessor*>(self)->on_mirror_frame(frame, caplen, capture_ns);
}

void IncomingProcessor::on_mirror_frame(const uint8_t* frame, size_t caplen, uint64_t capture_ns) {
  Counters& c = ctx_.counters;
  c.add(k_mirror_packets);
  c.add(k_mirror_bytes, caplen);
  Segment s;
  // The capture keeps only the headers of frames from VIP:ports
  // (kHeaderSnapLen): the primary's payload may be cut, anyone else's not.
  ParseError e = parse_ethernet(frame, caplen, true, &s);
  if (e == ParseError::kNotTcp && (on_mirror_udp(frame, caplen) || on_mirror_icmp(frame, caplen))) return;
  if (e == ParseError::kIpFragment && on_mirror_fragment(frame, caplen, capture_ns)) return;
  if (e == ParseError::kOk && size_t(s.ip - frame) + s.ip_len > caplen) {
    bool client = s.daddr == ctx_.cfg.vip && ctx_.port_set.test(s.dport);
    bool primary = s.saddr == ctx_.cfg.vip && ctx_.port_set.test(s.sport);
    if (client || !primary) e = ParseError::kTruncatedIp;
  }
  if (e != ParseError::kOk) {
    c.mirror_parse[static_cast<int>(e)].fetch_add(1, std::memory_order_relaxed);
    return;
  }
  // The frame's length on the wire: a cut one's from its IPv4 header.
  if (std::max(caplen, size_t(s.ip - frame) + s.ip_len) > kMaxPlainFrame) c.add(k_mirror_superframes);
  if (s.daddr == ctx_.cfg.vip && ctx_.port_set.test(s.dport)) on_client_segment(s, capture_ns);
  else if (s.saddr == ctx_.cfg.vip && ctx_.port_set.test(s.sport)) {
    const size_t held = std::min(caplen - size_t(s.ip - frame), size_t(s.ip_len));
    const size_t before_payload = size_t(s.payload - s.ip);
    on_primary_segment(s, uint32_t(held > before_payload ? held - before_payload : 0), capture_ns);
  }
  else c.add(k_mirror_not_replicated);
}

bool IncomingProcessor::on_mirror_udp(const uint8_t* frame, size_t caplen) {
  if (ctx_.cfg.udp_ports.empty()) return false;
  size_t len = 0;
  const uint8_t* ip = ethernet_ipv4(frame, caplen, &len);
  if (!ip || len < 20 || ip[9] != 17) return false;
  return on_mirror_datagram(ip, len);
}

bool IncomingProcessor::on_mirror_fragment(const uint8_t* frame, size_t caplen, uint64_t capture_ns) {
  size_t len = 0;
  const uint8_t* ip = ethernet_ipv4(frame, caplen, &len);
  if (!ip || len < 20) return false;
  if (ip[9] == 6 && !ctx_.cfg.ports.empty() && std::memcmp(ip + 16, &ctx_.cfg.vip, 4) == 0) {
    // A client's segment cut on its way (a sender that clears DF, a narrower link): the
    // primary's kernel made it whole. The primary's own segments set DF: not taken here.
    if (ctx_.mode != EngineMode::kReplicating) return true;
    if (tcp_reassembly_.add(ip, len, realtime_us(), &tcp_reassembled_)) on_mirror_whole_segment(capture_ns);
    return true;
  }
  if (ctx_.cfg.udp_ports.empty()) return false;
  // A client's datagram toward the VIP, cut on its way: the primary's kernel made it whole; or
  // one of the primary's, cut by its kernel, to compare with the replica's (whole at its output).
  if (ip[9] != 17) return false;
  if (std::memcmp(ip + 16, &ctx_.cfg.vip, 4) != 0 && std::memcmp(ip + 12, &ctx_.cfg.vip, 4) != 0) return false;
  if (ctx_.mode != EngineMode::kReplicating) return true;  // a takeover: the new owner's stack takes it
  if (reassembly_.add(ip, len, realtime_us(), &reassembled_)) on_mirror_datagram(reassembled_.data(), reassembled_.size());
  return true;
}

void IncomingProcessor::on_mirror_whole_segment(uint64_t capture_ns) {
  Segment s;
  const ParseError e = parse_ipv4(tcp_reassembled_.data(), tcp_reassembled_.size(), false, &s);
  if (e != ParseError::kOk) {
    ctx_.counters.mirror_parse[static_cast<int>(e)].fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (s.daddr == ctx_.cfg.vip && ctx_.port_set.test(s.dport)) on_client_segment(s, capture_ns);
  else ctx_.counters.add(k_mirror_not_replicated);
}

bool IncomingProcessor::on_mirror_datagram(const uint8_t* ip, size_t len) {
  Datagram d;
  const ParseError e = parse_udp(ip, len, &d);
  if (e != ParseError::kOk) {
    ctx_.counters.mirror_parse[static_cast<int>(e)].fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  if (d.saddr == ctx_.cfg.vip && ctx_.udp_port_set.test(d.sport)) {
    // The primary's: compared with what the replica sends the same peer. Its first datagram to
    // a peer (a proxy forwarding a request to a callee) opens the association, so that the
    // replica's counterpart, which comes later, finds it to pair with.
    if (ctx_.mode != EngineMode::kReplicating) return true;
    const FlowKey k{d.daddr, d.dport, d.sport};
    if (UdpAssociation* a = follow_udp(k)) {
      a->last_seen_us = realtime_us();
      ctx_.udp_compare.add(CompareSide::kPrimary, k, ctx_.udp_divergence_of(d.sport), d.payload, d.payload_len, a->last_seen_us);
    }
    return true;
  }
  if (d.daddr != ctx_.cfg.vip || !ctx_.udp_port_set.test(d.dport)) return false;
  if (ctx_.mode != EngineMode::kReplicating) return true;  // a takeover: the new owner's stack takes it
  if (!note_udp(d)) return true;
  ledger_.on_mirrored(FlowKey{d.saddr, d.sport, d.dport}, udp_digest(d), ip, d.ip_len, realtime_us());
  return true;
}

// Whether a UDP socket of this host (the replica's) bound to `port` holds
// datagrams its program has not read: /proc/net/udp's rx_queue, in the
// engine's network namespace, the replica's.
static bool udp_port_unread(uint16_t port) {
  FILE* f = std::fopen("/proc/net/udp", "re");
  if (!f) return false;
  char line[512];
  bool unread = false;
  while (!unread && std::fgets(line, sizeof line, f)) {
    unsigned local_port = 0, rx_queue = 0;
    if (std::sscanf(line, " %*u: %*x:%x %*x:%*x %*x %*x:%x", &local_port, &rx_queue) == 2)
      unread = local_port == port && rx_queue > 0;
  }
  std::fclose(f);
  return unread;
}

UdpAssociation* IncomingProcessor::follow_udp(const FlowKey& k) {
  bool added = false;
  UdpAssociation* a = ctx_.udp.get(k, &added);
  if (!a) {
    ctx_.counters.add(k_udp_associations_refused);
    return nullptr;
  }
  if (added) {
    a->last_seen_us = realtime_us();
    ctx_.counters.add(k_udp_associations_new);
    ctx_.events.emit_udp(EventType::kNew, EventReason::kNone, k, *a);
  }
  return a;
}

UdpAssociation* IncomingProcessor::note_udp(const Datagram& d) {
  UdpAssociation* a = follow_udp(FlowKey{d.saddr, d.sport, d.dport});
  if (!a) return nullptr;
  a->last_seen_us = realtime_us();
  a->client.datagrams++;
  a->client.bytes += d.payload_len;
  return a;
}

void IncomingProcessor::give_udp(const uint8_t* ip, size_t len) {
  if (len > sizeof pkt_ || len < 28) return;
  std::memcpy(pkt_, ip, len);
  const size_t ihl = size_t(pkt_[0] & 0x0f) * 4;
  if (ihl + 8 > len) return;
  pkt_[ihl + 6] = pkt_[ihl + 7] = 0;
  const uint16_t dport = uint16_t(pkt_[ihl + 2] << 8 | pkt_[ihl + 3]);
  if (ctx_.relay.relay(dport)) {
    const uint16_t to = ctx_.relay.replica_of(dport);
    if (!to) {
      if (ctx_.mode == EngineMode::kReplicating && relay_held_.size() < kRelayHeld) {
        relay_held_.push_back(RelayHeld{realtime_us(), dport, std::vector<uint8_t>(ip, ip + len)});
      } else {
        ctx_.counters.add(k_udp_relay_unpaired);
      }
      return;
    }
    pkt_[ihl + 2] = uint8_t(to >> 8);
    pkt_[ihl + 3] = uint8_t(to);
  }
  bool sent;
  if (ctx_.tun.fd() >= 0) {
    sent = ctx_.tun.write(pkt_, len);
  } else {
    if (raw_fd_ < 0) raw_fd_ = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = ctx_.cfg.vip;
    sent = raw_fd_ >= 0 && sendto(raw_fd_, pkt_, len, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) == ssize_t(len);
  }
  if (!sent) {
    ctx_.counters.add(k_inject_errors);
    return;
  }
  ctx_.counters.add(k_udp_datagrams);
  ctx_.counters.add(k_udp_bytes, len - ihl - 8);
}

void IncomingProcessor::give_relay_held(uint16_t port) {
  if (relay_held_.empty()) return;
  std::deque<RelayHeld> held;
  held.swap(relay_held_);
  for (RelayHeld& h : held) {
    if (h.port == port) give_udp(h.ip.data(), h.ip.size());
    else relay_held_.push_back(std::move(h));
  }
}

void IncomingProcessor::expire_relay_held(uint64_t now_us) {
  while (!relay_held_.empty() && (now_us - relay_held_.front().us >= kRelayHoldUs || ctx_.mode != EngineMode::kReplicating)) {
    relay_held_.pop_front();
    ctx_.counters.add(k_udp_relay_unpaired);
  }
  if (relay_output_held_.empty()) return;
  std::deque<RelayOutputHeld> held;
  held.swap(relay_output_held_);
  for (RelayOutputHeld& h : held) {
    const uint16_t port = ctx_.relay.primary_of(h.replica_port);
    if (port && ctx_.mode == EngineMode::kReplicating) {
      replica_datagram(FlowKey{h.client_ip, h.client_port, port}, h.payload.data(), uint32_t(h.payload.size()), h.us);
    } else if (now_us - h.us >= kRelayHoldUs || ctx_.mode != EngineMode::kReplicating) {
      ctx_.counters.add(k_udp_relay_unpaired);
    } else {
      relay_output_held_.push_back(std::move(h));
    }
  }
}

void IncomingProcessor::replica_datagram(const FlowKey& k, const uint8_t* payload, uint32_t len, uint64_t us) {
  // While the takeover is frozen too: what stays unpaired then, the primary never sent (the
  // takeover sends it: udp_compare.h, take_unanswered).
  const bool replicating = ctx_.mode == EngineMode::kReplicating, frozen = ctx_.mode == EngineMode::kFrozen;
  UdpAssociation* a = replicating ? follow_udp(k) : ctx_.udp.find(k);
  if (!a) return;
  a->replica.datagrams++;
  a->replica.bytes += len;
  if (replicating || frozen) ctx_.udp_compare.add(CompareSide::kReplica, k, ctx_.udp_divergence_of(k.server_port), payload, len, us);
}

void IncomingProcessor::hold_relay_output(const Datagram& d) {
  if (ctx_.mode != EngineMode::kReplicating || relay_output_held_.size() >= kRelayHeld) {
    ctx_.counters.add(k_udp_relay_unpaired);
    return;
  }
  relay_output_held_.push_back(RelayOutputHeld{realtime_us(), d.sport, d.daddr, d.dport,
                                               std::vector<uint8_t>(d.payload, d.payload + d.payload_len)});
}

void IncomingProcessor::on_udp_records(uint64_t first, const uint8_t* records, size_t n) {
  const uint64_t now = realtime_us();
  ledger_.on_manifest(now);
  for (size_t i = 0; i < n; i++) {
    const uint8_t* r = records + i * kUdpRecordSize;
    FlowKey k;
    std::memcpy(&k.client_ip, r, 4);
    k.client_port = uint16_t(r[4] << 8 | r[5]);
    k.server_port = uint16_t(r[6] << 8 | r[7]);
    uint64_t digest = 0;
    for (int b = 0; b < 8; b++) digest = digest << 8 | r[8 + b];
    // A datagram toward a port this backup does not replicate: not ours to pair.
    if (!ctx_.udp_port_set.test(k.server_port)) continue;
    ledger_.on_record(k, first + i, digest, now);
  }
}

void IncomingProcessor::udp_tick(uint64_t now_us) {
  ledger_.on_tick(now_us);
  reassembly_.expire(now_us);
  resupply_reassembly_.expire(now_us);
  Counters& c = ctx_.counters;
  const IpReassemblyStats& rs = reassembly_.stats();
  c.set(k_udp_fragments, rs.fragments);
  c.set(k_udp_reassembled, rs.reassembled);
  c.set(k_udp_reassembly_failed, rs.timed_out + rs.overlapped + rs.refused);
  const IpReassemblyStats& ps = resupply_reassembly_.stats();
  c.set(k_udp_resupplied_fragments, ps.fragments);
  c.set(k_udp_resupply_reassembly_failed, ps.timed_out + ps.overlapped + ps.refused);
  const UdpLedgerStats& st = ledger_.stats();
  c.set(k_udp_records, st.records);
  c.set(k_udp_verified, st.verified);
  c.set(k_udp_asked, st.asked);
  c.set(k_udp_resupplied, st.resupplied);
  c.set(k_udp_resupply_duplicates, st.duplicates);
  c.set(k_udp_lost, st.lost);
  c.set(k_udp_unverified, st.unverified);
  c.set(k_udp_held, ledger_.held());
  if (ctx_.relay.any()) {
    expire_relay_held(now_us);
    c.set(k_udp_relay_held, relay_held_.size() + relay_output_held_.size());
    c.set(k_udp_relay_pairs, ctx_.relay.pairs());
  }
  if (ctx_.mode == EngineMode::kReplicating) {
    std::unordered_map<uint16_t, bool> unread;  // read once a tick, and only when a decision asks
    ctx_.udp_compare.on_tick(now_us, [&](uint16_t port) {
      auto it = unread.find(port);
      return it != unread.end() ? it->second : (unread[port] = udp_port_unread(port));
    });
  }
  const UdpCompareStats& cs = ctx_.udp_compare.stats();
  c.set(k_udp_compared, cs.compared);
  c.set(k_udp_compare_unverified, cs.unverified);
  c.set(k_udp_compare_gave_up, cs.gave_up);
  c.set(k_udp_compare_late, cs.late);
  c.set(k_udp_compare_repeats, cs.repeats);
}

void IncomingProcessor::release_udp(uint64_t now_us) { ledger_.release_all(now_us); }

bool IncomingProcessor::on_mirror_icmp(const uint8_t* frame, size_t caplen) {
  size_t len = 0;
  const uint8_t* ip = ethernet_ipv4(frame, caplen, &len);
  IcmpTcpQuote q;
  if (!ip || !parse_icmp_tcp_error(ip, len, &q) || q.daddr != ctx_.cfg.vip || q.in_saddr != ctx_.cfg.vip ||
      !ctx_.port_set.test(q.in_sport))
    return false;
  // The primary's path toward this client changed (fragmentation needed: a
  // smaller path MTU): the replica must learn it as the primary did, or its
  // first segments after a takeover would meet the same error first.
  Flow* f = ctx_.flows.find(FlowKey{q.in_daddr, q.in_dport, q.in_sport});
  size_t n = std::min<size_t>(len, (size_t(ip[2]) << 8) | ip[3]);
  if (!f || ctx_.mode != EngineMode::kReplicating || f->active() || !f->replica.synack ||
      (f->state != FlowState::kSynchronised && f->state != FlowState::kClosing) || n > sizeof pkt_) {
    ctx_.counters.add(k_icmp_errors_ignored);
    return true;
  }
  // The replica's kernel heeds an error only about a byte it sent and has not
  // had acknowledged; the primary may be ahead of it: then its oldest such byte.
  uint32_t lo = f->ack_given_valid ? f->ack_given : f->replica.isn + 1;
  uint32_t seq = q.in_seq + f->seq_delta;
  if (seq - lo > f->replica.snd_nxt - lo) seq = lo;
  std::memcpy(pkt_, ip, n);
  set_icmp_quoted_seq(pkt_, q, seq);
  if (ctx_.tun.write(pkt_, n)) ctx_.counters.add(k_icmp_errors_injected);
  else ctx_.counters.add(k_inject_errors);
  return true;
}

void IncomingProcessor::start_flow(const FlowKey& k, const Segment& s, uint64_t capture_ns) {
  Flow* f = ctx_.flows.insert(k);
  if (!f) {
    ctx_.counters.add(k_flows_refused_max);
    ctx_.events.emit_key(EventType::kUnprotected, EventReason::kTableFull, k);
    return;
  }
  init_flow(*f, s, capture_ns);
  inject_syn(*f);
}

void IncomingProcessor::init_flow(Flow& fr, const Segment& s, uint64_t capture_ns) {
  Flow* f = &fr;
  uint64_t now = realtime_us();
  f->last_seen_us = f->last_progress_us = f->handshake_us = now;
  f->client.isn = s.seq;
  f->client.syn_options_len = s.options_len;
  std::memcpy(f->client.syn_options, s.options, s.options_len);
  f->client.syn_window = s.window;
  f->client.window = s.window;
  f->client.ts_ok = s.opt.has_ts;
  f->client.tsval = s.opt.tsval;
  f->client.ws_ok = s.opt.has_wscale;
  f->client.syn_wscale = s.opt.has_wscale ? s.opt.wscale : 0;
  if (s.opt.has_mss) f->client.mss = s.opt.mss;
  f->client.data.reset(s.seq + 1, ctx_.cfg.flow_buffer_limit, &ctx_.stream_memory);
  f->inj_nxt = f->replica.rcv_nxt = s.seq + 1;
  f->pending_capture_ns = capture_ns;
  f->output_lag.attach(ctx_.lag_histogram(f->key.server_port));
  ctx_.counters.add(k_flows_new);
  ctx_.events.emit(EventType::kNew, EventReason::kNone, *f);
}

// The client's last ACK, past the primary's FIN, that the capture lost: a
// client that opens the 4-tuple again is done with every older connection on
// it, and a primary that stopped repeating its FIN has that ACK. The
// replica's FIN gets it, or the flow would stay closing until the idle
// timeout, and a new connection on its key wait behind it.
void IncomingProcessor::implied_final_ack(Flow& f) {
  if (!f.client.fin || !f.primary.fin || !f.replicated()) return;
  uint32_t last = f.primary.fin_seq + 1;
  if (f.client.ack_seen && !after(last, f.client.ack_p)) return;
  f.client.ack_p = last;
  f.client.ack_seen = true;
  ctx_.counters.add(k_final_ack_implied);
  if (ctx_.flows.find(f.key) == &f) ctx_.mark_dirty(f);
}

void IncomingProcessor::note_finished(Flow& f) {
  if (f.successor) ctx_.promote.push_back(f.key);
}

void IncomingProcessor::promote_waiting() {
  for (const FlowKey& k : ctx_.promote) {
    Flow* old = ctx_.flows.find(k);
    if (!old || !old->successor) continue;
    if (old->state != FlowState::kClosed && old->state != FlowState::kUnprotected) continue;
    std::unique_ptr<Flow> next = std::move(old->successor);
    next->handshake_us = next->last_progress_us = realtime_us();
    ctx_.flows.replace(k, std::move(next));  // the old flow's linger ends here
    Flow* f = ctx_.flows.find(k);
    inject_syn(*f);
    ctx_.mark_dirty(*f);
  }
  ctx_.promote.clear();
}

void IncomingProcessor::make_unprotected(Flow& f, EventReason why) {
  f.state = FlowState::kUnprotected;
  f.client.data.clear();
  f.marks.clear();
  ctx_.counters.add(k_flows_unprotected);
  ctx_.events.emit(EventType::kUnprotected, why, f);
  note_finished(f);
}

void IncomingProcessor::on_client_segment(const Segment& s, uint64_t capture_ns) {
  FlowKey k{s.saddr, s.sport, s.dport};
  Flow* f = ctx_.flows.find(k);
  bool syn = (s.flags & (kSyn | kAck)) == kSyn;
  if (syn) {
    if (ctx_.mode != EngineMode::kReplicating) {
      // Takeover under way: a connection opened now is the new owner's own,
      // answered by its stack once the VIP moved (the client repeats its SYN).
      ctx_.counters.add(k_takeover_syn_ignored);
      return;
    }
    if (f && f->state == FlowState::kSynSeen && s.seq == f->client.isn) {
      f->pending_capture_ns = capture_ns;  // the client retransmitted its SYN
      inject_syn(*f);
      return;
    }
    if (f && (f->replicated() || f->successor)) {
      // The client reused the 4-tuple (the primary finished the old
      // connection) while the replica still holds it, if only half-open
      // (its SYN given, its SYN-ACK not read yet: one capture batch may
      // hold several generations): a SYN now would hit the old socket.
      // The new connection waits for the old one's end, at the end of the
      // chain of those already waiting.
      if (f->client.isn == s.seq) return;  // its own SYN again (the SYN-ACK came late)
      Flow* last = f;
      for (Flow* g = f;; g = g->successor.get()) {
        if (g != f && g->client.isn == s.seq) return;  // a waiting one's SYN again
        implied_final_ack(*g);
        last = g;
        if (!g->successor) break;
      }
      std::unique_ptr<Flow> next = ctx_.flows.make_detached(k);
      init_flow(*next, s, capture_ns);
      last->successor = std::move(next);
      ctx_.counters.add(k_flows_reused_tuple);
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
  // A segment of a waiting successor: its sequence numbers lie beyond the
  // older connections' (a reusing client starts the new ISN past the old
  // snd_nxt), so the latest generation it does not precede is its own.
  bool detached = false;
  f = generation_of(f, s.seq, &detached);
  if (f && f->state != FlowState::kUnprotected && before(s.seq, f->client.isn)) {
    // A late segment of an older connection on this key (replaced after the
    // replica finished it): its numbers mean nothing to this one.
    ctx_.counters.add(k_segments_older_generation);
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
    make_unprotected(*f, EventReason::kMidStream);  // its ACK is noted below all the same
  }
  f->last_seen_us = realtime_us();
  if (f->state == FlowState::kUnprotected) {
    if ((s.flags & kAck) && (!f->client.ack_seen || after(s.ack, f->client.ack_p))) {
      // Where the client stands, so that a takeover can reset it in numbers it accepts.
      f->client.ack_p = s.ack;
      f->client.ack_seen = true;
    }
    end_unprotected(*f, f->client, s);
    return;
  }
  if (f->state == FlowState::kClosed) return;

  if (s.opt.has_ts && (f->client.tsval == 0 || !before(s.opt.tsval, f->client.tsval))) {
    f->client.tsval = s.opt.tsval;  // PAWS on the replica: never go back
    f->client.tsecr_p = s.opt.tsecr;
  }
  f->client.window = s.window;
  if ((s.flags & kAck) && (!f->client.ack_seen || after(s.ack, f->client.ack_p))) {
    f->client.ack_p = s.ack;
    f->client.ack_seen = true;
    if (f->state != FlowState::kSynSeen) f->replica.out.forget_before(s.ack + f->seq_delta);
  }
  if (s.opt.sack_count) {
    f->client.sack_count = s.opt.sack_count;
    std::memcpy(f->client.sack, s.opt.sack, sizeof(SackBlock) * s.opt.sack_count);
    f->client.sack_fresh = true;
  }
  if (!add_client_bytes(*f, s)) return;
  if (s.flags & kRst) f->client.rst = true;
  if (f->state == FlowState::kSynSeen) ctx_.counters.add(k_segments_held_handshake);
  if (!f->pending_capture_ns && capture_ns) {
    f->pending_capture_ns = capture_ns;
    uint64_t now = realtime_ns();
    if (now > capture_ns) ctx_.dequeue.add(now - capture_ns);
  }
  if (!detached) ctx_.mark_dirty(*f);  // a waiting successor is pumped once promoted
}

bool IncomingProcessor::shed_for(Flow& f, uint32_t need) {
  auto holds = [](const Flow& g) { return uint64_t(g.client.data.held_bytes()) + g.replica.out.held_bytes(); };
  while (ctx_.stream_memory.used + need > ctx_.stream_memory.limit) {
    Flow* victim = nullptr;
    uint64_t most = holds(f);
    ctx_.flows.for_each([&](Flow& g) {
      if (&g != &f && g.replicated() && !g.active() && holds(g) > most) {
        most = holds(g);
        victim = &g;
      }
    });
    if (!victim) return false;
    ctx_.counters.add(k_flows_shed);
    lose_flow(*victim, EventReason::kShed, most);
    victim->replica.out.clear();  // its replica is reset: nothing to resend at a takeover
  }
  return true;
}

Flow* IncomingProcessor::generation_of(Flow* f, uint32_t seq, bool* detached) {
  *detached = false;
  for (Flow* n = f ? f->successor.get() : nullptr; n; n = n->successor.get()) {
    if (before(seq, n->client.isn)) break;
    f = n;
    *detached = true;
  }
  return f;
}

bool IncomingProcessor::add_client_bytes(Flow& f, const Segment& s) {
  if (s.payload_len) {
    switch (f.client.data.add(s.seq, s.payload, s.payload_len)) {
      case StreamBuffer::AddResult::kAppended: break;
      case StreamBuffer::AddResult::kDuplicate: ctx_.counters.add(k_segments_duplicate); break;
      case StreamBuffer::AddResult::kOutOfOrder: ctx_.counters.add(k_segments_out_of_order); break;
      case StreamBuffer::AddResult::kFull:
        // The memory limit, not this flow's: the flows that cost most go
        // first, so that a light flow is not lost to a bulk one's backlog.
        if (f.client.data.held_bytes() + s.payload_len <= ctx_.cfg.flow_buffer_limit && shed_for(f, s.payload_len) &&
            f.client.data.add(s.seq, s.payload, s.payload_len) != StreamBuffer::AddResult::kFull)
          break;
        ctx_.counters.add(k_flow_buffer_full);
        lose_flow(f, EventReason::kBufferFull, f.client.data.held_bytes());
        return false;
    }
  }
  if (s.flags & kFin) {
    f.client.fin = true;
    f.client.fin_seq = s.seq + s.payload_len;
  }
  if ((s.flags & kAck) && (s.payload_len || (s.flags & kFin)))
    add_mark(f, ClientMark{s.seq, s.seq + s.payload_len + ((s.flags & kFin) ? 1u : 0u), s.ack});
  return true;
}

void IncomingProcessor::add_mark(Flow& f, const ClientMark& m) {
  auto& marks = f.marks;
  if (!after(m.end, f.replica.rcv_nxt) && f.replica.synack) return;  // the replica has these bytes
  if (marks.empty() || !before(m.start, marks.back().start)) {
    if (!marks.empty() && marks.back().start == m.start && marks.back().end == m.end) return;  // a repeat
    if (marks.size() >= kMaxClientMarks) {
      // The bytes wait only for the last mark's ack: causality weakened, counted.
      if (after(m.end, marks.back().end)) marks.back().end = m.end;
      ctx_.counters.add(k_causality_marks_merged);
      return;
    }
    marks.push_back(m);
    return;
  }
  // Out of order (a hole filled by a retransmission or the recorder): in place.
  auto at = std::upper_bound(marks.begin(), marks.end(), m.start,
                             [](uint32_t seq, const ClientMark& x) { return before(seq, x.start); });
  marks.insert(at, m);
}

void IncomingProcessor::on_resupplied(const uint8_t* ip, size_t len) {
  Datagram d;
  if (len >= 20 && ip[9] == 17 && is_ip_fragment(ip)) {
    if (std::memcmp(ip + 16, &ctx_.cfg.vip, 4) != 0) {
      ctx_.counters.add(k_resupply_ignored);
      return;
    }
    if (resupply_reassembly_.add(ip, len, realtime_us(), &resupply_reassembled_)) {
      std::vector<uint8_t> whole;
      whole.swap(resupply_reassembled_);
      on_resupplied(whole.data(), whole.size());
    }
    return;
  }
  if (len >= 20 && ip[9] == 17) {
    if (parse_udp(ip, len, &d) != ParseError::kOk || d.daddr != ctx_.cfg.vip || !ctx_.udp_port_set.test(d.dport) ||
        !ledger_.on_resupplied(FlowKey{d.saddr, d.sport, d.dport}, udp_digest(d), ip, d.ip_len, realtime_us())) {
      ctx_.counters.add(k_resupply_ignored);
      return;
    }
    note_udp(d);
    ctx_.counters.add(k_resupply_packets);
    ctx_.counters.add(k_resupply_bytes, d.payload_len);
    return;
  }
  Segment s;
  Flow* f = nullptr;
  bool detached = false;
  if (parse_ipv4(ip, len, false, &s) == ParseError::kOk && s.daddr == ctx_.cfg.vip && ctx_.port_set.test(s.dport))
    f = generation_of(ctx_.flows.find(FlowKey{s.saddr, s.sport, s.dport}), s.seq, &detached);
  // Only for a connection the replica has open and the engine still feeds.
  bool fed = f && !before(s.seq, f->client.isn + 1) && ctx_.mode != EngineMode::kActive && !f->active() &&
             (f->state == FlowState::kSynchronised || f->state == FlowState::kClosing);
  if (!fed) {
    ctx_.counters.add(k_resupply_ignored);
    return;
  }
  ctx_.counters.add(k_resupply_packets);
  ctx_.counters.add(k_resupply_bytes, s.payload_len);
  if (add_client_bytes(*f, s) && !detached) ctx_.mark_dirty(*f);
}

void IncomingProcessor::on_queued_client_segment(const uint8_t* ip, size_t len) {
  Segment s;
  ParseError e = parse_ipv4(ip, len, false, &s);
  if (e != ParseError::kOk) {
    ctx_.counters.backup_parse[static_cast<int>(e)].fetch_add(1, std::memory_order_relaxed);
    return;
  }
  ctx_.counters.add(k_catch_up_client_packets);
  on_client_segment(s, 0);
}

void IncomingProcessor::start_comparison(Flow& f, CompareSide side, uint32_t seq0) {
  f.divergence = ctx_.divergence_of(f.key.server_port);
  if (f.divergence == DivergencePolicy::kOff) return;
  f.compare.set_policy(f.divergence);
  f.compare.start(side, seq0);
}

void IncomingProcessor::restart_comparison(Flow& f) {
  f.compare = OutputComparison();
  if (f.primary.synack) start_comparison(f, CompareSide::kPrimary, f.primary.isn + 1);
}

void IncomingProcessor::compare_output(Flow& f, CompareSide side, const Segment& s, uint32_t present) {
  if (f.divergence == DivergencePolicy::kOff || f.compare.ended() || !f.replicated()) return;
  const uint64_t unverified = f.compare.unverified_bytes();
  OutputComparison::Result r = f.compare.add(side, s.seq, s.payload, s.payload_len, present);
  if (r == OutputComparison::Result::kOk && (s.flags & kFin)) r = f.compare.fin(side, s.seq + s.payload_len);
  ctx_.counters.add(k_compare_unverified_bytes, f.compare.unverified_bytes() - unverified);
  if (r == OutputComparison::Result::kOk) return;
  EngineContext::ComparePort* port = ctx_.compare_port(f.key.server_port);
  if (r == OutputComparison::Result::kGaveUp) {
    ctx_.counters.add(k_compare_gave_up);
    if (port) port->gave_up.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const Divergence& d = f.compare.divergence();
  ctx_.counters.add(k_flows_diverged);
  if (port) port->diverged.fetch_add(1, std::memory_order_relaxed);
  ctx_.record_divergence(f, realtime_us());
  lose_flow(f, EventReason::kDiverged, (uint64_t(d.kind) << 48) | (d.offset & ((1ull << 48) - 1)));
}

void IncomingProcessor::on_primary_segment(const Segment& s, uint32_t present, uint64_t capture_ns) {
  FlowKey k{s.daddr, s.dport, s.sport};
  Flow* f = ctx_.flows.find(k);
  if (!f) {
    ctx_.counters.add(k_mirror_unknown_flow);
    return;
  }
  // The primary's side of a waiting successor acknowledges its client's
  // numbers, beyond the older connections'.
  bool detached = false;
  for (Flow* n = f->successor.get(); n && (s.flags & kAck); n = n->successor.get()) {
    if (before(s.ack, n->client.isn + 1)) break;
    f = n;
    detached = true;
  }
  if ((s.flags & kAck) && f->state != FlowState::kUnprotected && before(s.ack, f->client.isn + 1)) {
    ctx_.counters.add(k_segments_older_generation);  // the primary's side of an older connection
    return;
  }
  if (f->state == FlowState::kUnprotected) {
    // Where the primary's stream stands, so that a takeover resets the
    // client in numbers it accepts even when its last ACK escaped the
    // mirror (the primary's link went down under it).
    uint32_t end = s.seq + s.payload_len + ((s.flags & (kSyn | kFin)) ? 1 : 0);
    if (!f->primary.sent_seen || after(end, f->primary.snd_nxt)) {
      f->primary.snd_nxt = end;
      f->primary.sent_seen = true;
    }
    if (s.flags & kFin) f->primary.fin_us = realtime_us();  // a FIN repeated: its time again
    end_unprotected(*f, f->primary, s);
    return;
  }
  if (f->state == FlowState::kClosed) return;
  if ((s.flags & (kSyn | kAck)) == (kSyn | kAck)) {
    if (!f->primary.synack && s.ack == f->client.isn + 1) {
      f->primary.synack = true;
      f->primary.isn = s.seq;
      f->primary.synack_tsval = s.opt.tsval;
      f->primary.snd_nxt = s.seq + 1;
      f->primary.sent_seen = true;
      f->primary.rcv_nxt = s.ack;
      f->primary.wscale = (f->client.ws_ok && s.opt.has_wscale) ? s.opt.wscale : 0;
      f->primary.tsval = s.opt.tsval;
      start_comparison(*f, CompareSide::kPrimary, s.seq + 1);
      try_synchronise(*f);
    }
    return;
  }
  if (!f->primary.synack) return;
  if (s.opt.has_ts && after(s.opt.tsval, f->primary.tsval)) f->primary.tsval = s.opt.tsval;
  if (s.payload_len) f->primary.last_data_us = realtime_us();
  if (s.flags & kFin) {
    f->primary.fin = true;
    f->primary.fin_seq = s.seq + s.payload_len;
    f->primary.fin_us = realtime_us();
  }
  uint32_t end = s.seq + s.payload_len + ((s.flags & kFin) ? 1 : 0);
  if (after(end, f->primary.snd_nxt)) {
    f->primary.s2c += end - f->primary.snd_nxt - ((s.flags & kFin) ? 1 : 0);  // data bytes only
    f->primary.snd_nxt = end;
    if (s.payload_len && capture_ns && ctx_.mode == EngineMode::kReplicating)
      f->output_lag.primary_sent(f->primary.s2c, capture_ns, f->replica.s2c);
  }
  // After capture drops, a primary ack within what we hold proves this flow
  // lost nothing (the mirror delivers client data before its ack) — if it
  // was captured after the drops were counted: one that waited in the
  // socket's queue through them says nothing of the bytes they took.
  const uint64_t captured_us = capture_ns ? capture_ns / 1000 : realtime_us();
  if (f->drop_suspect_us && captured_us > f->drop_suspect_us && (s.flags & kAck) && !after(s.ack, captured_end(*f)))
    f->drop_suspect_us = 0;
  if ((s.flags & kAck) && after(s.ack, f->primary.rcv_nxt)) {
    f->primary.c2s += s.ack - f->primary.rcv_nxt;
    f->primary.rcv_nxt = s.ack;
    if (ctx_.cfg.max_lag_ms && ctx_.mode == EngineMode::kReplicating)
      stamp_primary_ack(*f, s.ack, capture_ns ? capture_ns / 1000 : realtime_us());
    // The primary acknowledged client bytes: if we do not hold them yet the
    // capture may have lost them, or the mirror merely delivers them late
    // (it may reorder the two directions). tick_flow decides after a grace.
    // The suspicion covers what is missing at its start (the grace counts
    // for those bytes); what the primary acknowledges later gets a suspicion
    // of its own once they are in (check_gap), or a steady trickle of holes
    // would keep one suspicion, and its clock, running for a whole upload.
    if (after(s.ack, captured_end(*f)) && !f->gap_suspect_us) {
      f->gap_suspect_us = realtime_us();
      f->gap_seq = s.ack;
      f->gap_filled_to = captured_end(*f);
    }
  }
  if (s.flags & kRst) {
    f->primary.rst = true;
    if (!f->primary.rst_us) f->primary.rst_us = realtime_us();
    if (!detached) ctx_.mark_dirty(*f);
  } else if (s.payload_len || (s.flags & kFin)) {
    compare_output(*f, CompareSide::kPrimary, s, present);
  }
}

void IncomingProcessor::try_synchronise(Flow& f) {
  if (f.state != FlowState::kSynSeen || !f.primary.synack || !f.replica.synack) return;
  f.seq_delta = f.replica.isn - f.primary.isn;
  f.ts_delta = f.replica.synack_tsval - f.primary.synack_tsval;
  f.replica.out.reset(f.replica.isn + 1, ctx_.cfg.flow_buffer_limit, &ctx_.stream_memory);
  f.state = FlowState::kSynchronised;
  if (!f.handshake_restarts) {  // a restarted handshake was reported the first time
    ctx_.counters.add(k_flows_synchronised);
    ctx_.events.emit(EventType::kSynchronised, EventReason::kNone, f);
  }
  ctx_.mark_dirty(f);
}

void IncomingProcessor::check_closed(Flow& f, uint64_t now_us) {
  if (f.state == FlowState::kClosed) return;
  // A reset ends the flow when the client (we pass it on) or the primary
  // reset it too; the replica resetting alone is a loss (tick_flow).
  bool reset = f.rst_injected || (f.replica.rst && (f.primary.rst || f.client.rst));
  bool client_done = f.client.fin && after(f.replica.rcv_nxt, f.client.fin_seq);           // replica acked the FIN
  bool replica_done = f.replica.fin && f.ack_given_valid && after(f.ack_given, f.replica.fin_seq);
  if (!reset && !(client_done && replica_done)) {
    if (f.client.fin || f.replica.fin || f.primary.rst) f.state = FlowState::kClosing;
    return;
  }
  f.state = FlowState::kClosed;
  f.closed_us = now_us;
  f.client.data.clear();
  f.marks.clear();
  ctx_.counters.add(k_flows_closed);
  note_finished(f);
  // Closed with its output compared to the end, alike.
  if (f.divergence != DivergencePolicy::kOff && !f.compare.ended()) {
    if (EngineContext::ComparePort* port = ctx_.compare_port(f.key.server_port)) {
      port->identical.fetch_add(1, std::memory_order_relaxed);
      port->bytes.fetch_add(f.compare.compared_bytes(), std::memory_order_relaxed);
      port->unverified.fetch_add(f.compare.unverified_bytes(), std::memory_order_relaxed);
    }
  }
  // Both services wrote the same number of bytes, or the replica diverged.
  bool diverged = f.primary.synack && f.replica.synack && !reset && f.primary.s2c != f.replica.s2c;
  ctx_.events.emit(EventType::kClosed, reset ? EventReason::kRst : EventReason::kFin, f, diverged ? 1 : 0);
}

template <class Side>
void IncomingProcessor::end_unprotected(Flow& f, Side& from, const Segment& s) {
  if (s.flags & kFin) {
    from.fin = true;
    from.fin_seq = s.seq + s.payload_len;
  }
  if (s.flags & kRst) from.rst = true;
  if (f.ended) return;
  // Over: a reset either way, or both FINs sent and the client's last ACK (past the primary's FIN) seen.
  bool reset = f.client.rst || f.primary.rst;
  bool finished = f.client.fin && f.primary.fin && f.client.ack_seen && after(f.client.ack_p, f.primary.fin_seq);
  if (!reset && !finished) return;
  ended_unprotected(f);
}

void IncomingProcessor::ended_unprotected(Flow& f) {
  // No longer open: not counted unprotected, nothing to reset at a takeover. Counted, not
  // reported: it was reported unprotected, and `closed` says a replica finished a flow.
  f.ended = true;
  f.closed_us = realtime_us();
  ctx_.counters.add(k_flows_unprotected_ended);
}

uint32_t IncomingProcessor::captured_end(const Flow& f) {
  uint32_t end = f.client.data.contig_end();
  return end + ((f.client.fin && end == f.client.fin_seq) ? 1 : 0);  // the FIN takes one number
}

void IncomingProcessor::check_gap(Flow& f, uint64_t now) {
  if (!f.gap_suspect_us) return;
  if (!after(f.gap_seq, captured_end(f))) {
    f.gap_suspect_us = f.resupply_asked_us = 0;  // the bytes arrived: late on the mirror, or resupplied
    // The primary may have acknowledged more since, all of it missing too:
    // a suspicion of its own (no later ack may come to raise it).
    if (!after(f.primary.rcv_nxt, captured_end(f))) return;
    f.gap_suspect_us = now;
    f.gap_seq = f.primary.rcv_nxt;
    f.gap_filled_to = captured_end(f);
    return;
  }
  if (after(captured_end(f), f.gap_filled_to)) {
    // Part of it came (the recorder's answers, some lost on the way): the
    // grace counts again from here, the rest asked for at the next repeat.
    // It cannot run for ever: the missing part only shrinks.
    f.gap_filled_to = captured_end(f);
    f.gap_suspect_us = now;
    ctx_.counters.add(k_resupply_progress);
  }
  uint64_t waited = now - f.gap_suspect_us;
  uint64_t grace = ctx_.cfg.resupply ? kResupplyGraceUs : kGapGraceUs;
  if (ctx_.cfg.resupply && waited >= kResupplyAskUs && waited < grace &&
      (!f.resupply_asked_us ||
       now - f.resupply_asked_us >= (ctx_.mode == EngineMode::kReplicating ? kResupplyRepeatUs : kResupplyRepeatTakeoverUs))) {
    // Only the holes, all those known: what came out of order is held already.
    for (const auto& [from, end] : f.client.data.holes(f.primary.rcv_nxt, kResupplyMaxHoles)) {
      uint32_t bytes = std::min<uint32_t>(end - from, kResupplyMaxBytes);
      ctx_.events.emit(EventType::kResupply, EventReason::kGap, f, (uint64_t(bytes) << 32) | from);
      ctx_.counters.add(k_resupply_asked);
    }
    f.resupply_asked_us = now;
  }
  if (waited < grace || f.reported_gap) return;
  // Still missing: the capture lost client bytes the primary has, and the
  // traffic recorder (if any) did not have them: the replica cannot get past
  // this point.
  f.reported_gap = true;
  ctx_.counters.add(k_gaps);
  lose_flow(f, EventReason::kGap, captured_end(f) - (f.client.isn + 1));
}

bool IncomingProcessor::replica_established(const Flow& f) {
  return after(f.replica.rcv_nxt, f.client.isn + 1) || after(f.replica.snd_nxt, f.replica.isn + 1);
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
  f.replica.synack = false;
  f.replica.window = 0;
  f.replica.rcv_nxt = f.inj_nxt = f.client.isn + 1;
  f.fin_injected = f.ack_given_valid = f.ack_wanted = false;
  restart_comparison(f);  // its next SYN-ACK brings another ISN
  inject_syn(f);
}

void IncomingProcessor::on_mirror_lost(uint64_t now) {
  ctx_.counters.add(k_mirror_link_lost);
  ctx_.flows.for_each([&](Flow& f) {
    bool live = f.state == FlowState::kSynchronised || f.state == FlowState::kClosing;
    if (live && !f.drop_suspect_us) f.drop_suspect_us = now;
  });
}

void IncomingProcessor::on_capture_drops(uint64_t now, uint64_t checked_us) {
  const uint64_t from = std::min(now, checked_us);
  const uint64_t since = from > kDropSuspectWindowUs ? from - kDropSuspectWindowUs : 0;
  ctx_.flows.for_each([&](Flow& f) {
    bool live = f.state == FlowState::kSynchronised || f.state == FlowState::kClosing;
    if (live && f.last_seen_us >= since && !f.drop_suspect_us) f.drop_suspect_us = now;
  });
}

void IncomingProcessor::stamp_primary_ack(Flow& f, uint32_t ack, uint64_t us) {
  auto& a = f.primary.acks;
  while (!a.empty() && !after(a.front().ack, f.replica.rcv_nxt)) a.pop_front();  // the replica has those
  if (!after(ack, f.replica.rcv_nxt)) return;
  if (!a.empty() && (us < a.back().us + kAckStampUs || a.size() >= kMaxAckStamps)) {
    a.back().ack = ack;
    return;
  }
  a.push_back(AckStamp{ack, us});
}

// How long the replica has lacked client bytes the primary had acknowledged
// and we hold (what we never captured is a gap: check_gap's; a replica
// silent with all it may have, a stop: check_stopped's), µs.
static uint64_t input_lag_us(Flow& f, uint64_t now) {
  auto& a = f.primary.acks;
  while (!a.empty() && !after(a.front().ack, f.replica.rcv_nxt)) a.pop_front();
  if (a.empty() || now < a.front().us || !f.client.data.holds(f.replica.rcv_nxt)) return 0;
  if (f.held_since_us && now - f.held_since_us >= kSilentNotLagUs) return 0;
  return now - a.front().us;
}

void IncomingProcessor::enforce_max_lag(uint64_t now) {
  uint64_t max_us = uint64_t(ctx_.cfg.max_lag_ms) * 1000;
  if (!max_us || now < next_behind_shed_us_) return;
  Flow* victim = nullptr;
  uint64_t most = 0, victim_lag = 0;
  ctx_.flows.for_each([&](Flow& f) {
    if (f.state != FlowState::kSynchronised && f.state != FlowState::kClosing) return;
    uint64_t lag = input_lag_us(f, now);
    if (lag <= max_us) return;
    uint64_t held = uint64_t(f.client.data.held_bytes()) + f.replica.out.held_bytes();
    if (!victim || held > most) {
      victim = &f;
      most = held;
      victim_lag = lag;
    }
  });
  if (!victim) return;
  ctx_.counters.add(k_replica_behind);
  lose_flow(*victim, EventReason::kReplicaBehind, victim_lag / 1000);
  victim->replica.out.clear();  // its replica is reset: nothing to resend at a takeover
  victim->primary.acks.clear();
  next_behind_shed_us_ = now + kBehindShedSpacingUs;
}

void IncomingProcessor::lose_flow(Flow& f, EventReason why, uint64_t detail) {
  ctx_.events.emit(EventType::kAnomaly, why, f, detail);
  // The replica can no longer follow this connection: end its copy with a
  // reset rather than leave its service waiting forever for bytes that will
  // not come. The connection is then unprotected, which is what a takeover
  // must know.
  if ((f.state == FlowState::kSynchronised || f.state == FlowState::kClosing) && !f.replica.rst) {
    inject(f, f.inj_nxt, kRst, 0, false);
    f.rst_injected = true;
  }
  make_unprotected(f, why);
}

}  // namespace t2cp
