#include "recovery_active_mode.h"

#include <arpa/inet.h>

#include <time.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "sequence_map.h"

namespace t2cp {
namespace {

constexpr uint8_t kOptEol = 0, kOptNop = 1, kOptSack = 5, kOptTs = 8;  // RFC 9293, 2018, 7323

uint32_t load32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return ntohl(v); }
void store32(uint8_t* p, uint32_t v) { v = htonl(v); std::memcpy(p, &v, 4); }
void store16(uint8_t* p, uint16_t v) { v = htons(v); std::memcpy(p, &v, 2); }

// Calls fn(kind, option pointer, length) for each TCP option of a segment
// that parse_ipv4 accepted (so lengths are sane).
template <typename Fn> void for_each_option(uint8_t* tcp, uint32_t tcp_hdr_len, Fn fn) {
  uint32_t i = 20;
  while (i < tcp_hdr_len) {
    uint8_t kind = tcp[i];
    if (kind == kOptEol) return;
    if (kind == kOptNop) { i++; continue; }
    uint8_t len = tcp[i + 1];
    fn(kind, tcp + i, len);
    i += len;
  }
}

void finish_checksum(uint8_t* ip, const Segment& s) {
  uint8_t* tcp = ip + s.ip_hdr_len;
  uint16_t c = tcp_checksum_ipv4(s.saddr, s.daddr, tcp, s.ip_len - s.ip_hdr_len);
  std::memcpy(tcp + 16, &c, 2);
}

}  // namespace

void ActiveMode::enter(Flow& f) {
  f.phase = TakeoverPhase::kActive;
  f.p_tsval_at_active = f.primary.tsval;
  // The client's ts_recent is the primary's latest TSval: the backup's clock
  // must read at least that (PAWS drops older ones). The handshake offset
  // keeps the clock continuous when it suffices.
  uint32_t seen = f.replica.tsval - f.ts_delta;
  f.ts_out_delta = before(seen, f.primary.tsval) ? f.replica.tsval - f.primary.tsval : f.ts_delta;
  f.replica.out_incomplete = f.replica.out_incomplete || f.replica.out.has_out_of_order();
}

uint32_t ActiveMode::client_window(const Flow& f) {
  uint64_t bytes = uint64_t(f.replica.window);  // already scaled by the backup's shift
  uint64_t w = bytes >> f.primary.wscale;
  return w > 65535 ? 65535 : uint32_t(w);
}

// An ICMP error to the VIP quoting a segment of a taken-over flow (as the
// kernel's translator does, recovery_active_mode.bpf.c): the quoted seq back
// into the new owner's numbers, or the kernel ignores the error (tcp_v4_err)
// and a path MTU drop leaves the flow sending too large for ever.
NfQueue::Verdict ActiveMode::on_icmp(uint8_t* ip, size_t len) {
  IcmpTcpQuote q;
  if (!parse_icmp_tcp_error(ip, len, &q) || q.daddr != ctx_.cfg.vip || q.in_saddr != ctx_.cfg.vip) return NfQueue::Verdict::kAccept;
  Flow* f = ctx_.flows.find(FlowKey{q.in_daddr, q.in_dport, q.in_sport});
  if (!f || !f->active()) return NfQueue::Verdict::kAccept;
  set_icmp_quoted_seq(ip, q, q.in_seq + f->seq_delta);
  ctx_.counters.add(k_active_icmp_translated);
  return NfQueue::Verdict::kAcceptRewritten;
}

NfQueue::Verdict ActiveMode::on_relay_datagram(uint8_t* ip, size_t len) {
  Datagram d;
  if (parse_udp(ip, len, &d) != ParseError::kOk || d.saddr != ctx_.cfg.vip || !ctx_.relay.relay(d.sport))
    return NfQueue::Verdict::kAccept;
  // Translated as FailureRecovery::apply_rules chose the map's elements.
  const uint16_t primary = ctx_.relay.primary_of(d.sport);
  if (!primary || primary == d.sport || !ctx_.udp.find(FlowKey{d.daddr, d.dport, primary}))
    return NfQueue::Verdict::kAccept;
  uint8_t* udp = ip + (d.payload - d.ip) - 8;
  uint16_t check;  // as on the wire, as the ports are given
  std::memcpy(&check, udp + 6, 2);
  if (check) {  // 0: sent without a checksum (IPv4)
    check = csum_replace2(check, htons(d.sport), htons(primary));
    if (!check) check = 0xffff;  // a sum of 0 goes as its other form (RFC 768)
    std::memcpy(udp + 6, &check, 2);
  }
  store16(udp, primary);
  ctx_.counters.add(k_udp_relay_translated_queued);
  return NfQueue::Verdict::kAcceptRewritten;
}

NfQueue::Verdict ActiveMode::on_packet(uint8_t* ip, size_t len) {
  Counters& c = ctx_.counters;
  if (!kernel_ && len >= 20 && ip[9] == IPPROTO_ICMP) return on_icmp(ip, len);
  if (len >= 20 && ip[9] == IPPROTO_UDP && ctx_.relay.any()) return on_relay_datagram(ip, len);
  Segment s;
  ParseError e = parse_ipv4(ip, len, /*allow_truncated_payload=*/false, &s);
  // With the kernel translator only the clients' packets it did not mark
  // as translated are ever queued to us (while a takeover catches up), and
  // the replica's output it rewrites on its way out, after the queue.
  if (kernel_ && !(e == ParseError::kOk && s.daddr == ctx_.cfg.vip)) return NfQueue::Verdict::kAccept;
  if (e != ParseError::kOk) {
    // Not ours to judge: the stack decides about a malformed packet.
    if (e == ParseError::kTruncatedIp) c.add(k_active_truncated);
    else c.backup_parse[static_cast<int>(e)].fetch_add(1, std::memory_order_relaxed);
    return NfQueue::Verdict::kAccept;
  }
  bool to_vip = s.daddr == ctx_.cfg.vip && ctx_.port_set.test(s.dport);
  FlowKey k = to_vip ? FlowKey{s.saddr, s.sport, s.dport} : FlowKey{s.daddr, s.dport, s.sport};
  Flow* f = ctx_.flows.find(k);
  if (!f || !f->active()) {
    c.add(k_active_passthrough);
    return NfQueue::Verdict::kAccept;
  }
  if (to_vip && f->client.fin && after(s.seq, f->client.fin_seq + 1)) {
    // Beyond the client's FIN: a newer connection on this key (the client
    // reused the 4-tuple), not the one taken over.
    c.add(k_active_passthrough);
    return NfQueue::Verdict::kAccept;
  }
  if (to_vip && (s.flags & (kSyn | kAck)) == kSyn) {
    // The client reuses the port for a new connection: a local one now.
    ctx_.flows.erase(k);
    c.add(k_active_passthrough);
    return NfQueue::Verdict::kAccept;
  }
  if (to_vip) translate_in(*f, ip, s);
  else translate_out(*f, ip, s);
  finish_checksum(ip, s);
  return NfQueue::Verdict::kAcceptRewritten;
}

void ActiveMode::translate_in(Flow& f, uint8_t* ip, const Segment& s) {
  ctx_.counters.add(k_active_in_packets);
  uint8_t* tcp = ip + s.ip_hdr_len;
  uint64_t now = realtime_us();
  f.last_seen_us = now;
  uint32_t ack_b = f.replica.rcv_nxt;
  if (s.flags & kAck) {
    bool clamped;
    ack_b = map_ack(s.ack, f.seq_delta, f.replica.snd_nxt, &clamped);
    if (clamped) {
      ctx_.counters.add(k_active_ack_clamped);
      store16(tcp + 14, map_window(s.window, f.client.shift, s.ack + f.seq_delta, ack_b));
    }
    store32(tcp + 8, ack_b);
    if (after(s.ack, f.client.ack_p)) f.client.ack_p = s.ack;
  }
  for_each_option(tcp, s.tcp_hdr_len, [&](uint8_t kind, uint8_t* o, uint8_t olen) {
    if (kind == kOptTs) {
      uint32_t tsecr = load32(o + 6);
      uint32_t d = after(tsecr, f.p_tsval_at_active) ? f.ts_out_delta : f.ts_delta;
      store32(o + 6, map_tsecr(tsecr, d, f.replica.synack_tsval, f.replica.tsval));
      f.client.tsval = load32(o + 2);
    } else if (kind == kOptSack) {
      SackBlock in[kMaxSackBlocks], out[kMaxSackBlocks];
      int n = (olen - 2) / 8, dropped = 0;
      for (int i = 0; i < n; i++) in[i] = {load32(o + 2 + 8 * i), load32(o + 6 + 8 * i)};
      int kept = map_sack(in, n, f.seq_delta, ack_b, f.replica.snd_nxt, out, &dropped);
      ctx_.counters.add(k_active_sack_dropped, dropped);
      // Fewer blocks: a shorter option, the freed bytes become NOPs.
      o[1] = kept ? uint8_t(2 + 8 * kept) : 0;
      for (int i = 0; i < kept; i++) { store32(o + 2 + 8 * i, out[i].left); store32(o + 6 + 8 * i, out[i].right); }
      if (!kept) std::memset(o, kOptNop, olen);
      else std::memset(o + 2 + 8 * kept, kOptNop, olen - 2 - 8 * kept);
    }
  });
  f.primary.c2s = f.replica.c2s;  // one server now
  if (s.flags & kFin) { f.client.fin = true; f.client.fin_seq = s.seq + s.payload_len; }
  if (s.flags & kRst) f.client.rst = true;
  note_closing(f, now);
}

void ActiveMode::translate_out(Flow& f, uint8_t* ip, const Segment& s) {
  ctx_.counters.add(k_active_out_packets);
  uint8_t* tcp = ip + s.ip_hdr_len;
  uint64_t now = realtime_us();
  store32(tcp + 4, s.seq - f.seq_delta);
  uint32_t end = s.seq + s.payload_len + ((s.flags & kFin) ? 1 : 0);
  if (after(end, f.replica.snd_nxt)) {
    f.replica.s2c += end - f.replica.snd_nxt - ((s.flags & kFin) ? 1 : 0);
    f.replica.snd_nxt = end;
  }
  if ((s.flags & kAck) && after(s.ack, f.replica.rcv_nxt)) {
    f.replica.c2s += s.ack - f.replica.rcv_nxt;
    f.replica.rcv_nxt = s.ack;
  }
  if (!(s.flags & kSyn)) {
    f.replica.window = uint32_t(s.window) << f.replica.wscale;
    store16(tcp + 14, uint16_t(client_window(f)));
  }
  for_each_option(tcp, s.tcp_hdr_len, [&](uint8_t kind, uint8_t* o, uint8_t) {
    if (kind != kOptTs) return;
    uint32_t tsval = load32(o + 2);
    if (after(tsval, f.replica.tsval)) f.replica.tsval = tsval;
    store32(o + 2, tsval - f.ts_out_delta);
  });
  if (s.payload_len && !f.first_active_data_us) f.first_active_data_us = now;
  f.primary.s2c = f.replica.s2c;
  if (s.flags & kFin) { f.replica.fin = true; f.replica.fin_seq = s.seq + s.payload_len; }
  if (s.flags & kRst) f.replica.rst = true;
  f.last_seen_us = now;
  note_closing(f, now);
}

void ActiveMode::note_closing(Flow& f, uint64_t now_us) {
  if (f.state == FlowState::kClosed) return;
  bool reset = f.client.rst || f.replica.rst;
  if (!reset && !(f.client.fin && f.replica.fin)) {
    if (f.client.fin || f.replica.fin) f.state = FlowState::kClosing;
    return;
  }
  f.state = FlowState::kClosed;
  f.closed_us = now_us;
  ctx_.counters.add(k_flows_closed);
  ctx_.events.emit(EventType::kClosed, reset ? EventReason::kRst : EventReason::kFin, f);
}

// The kernel translator's view of each taken-over flow: what the new owner
// sent and acknowledged, FIN/RST both ways, when it was last seen; and its
// counters into ours.
void ActiveMode::sync_from_kernel(uint64_t now) {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t mono_ns = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
  auto wall_us = [&](uint64_t ns) { return ns >= mono_ns ? now : now - (mono_ns - ns) / 1000; };
  std::vector<FlowKey> reused;
  ctx_.flows.for_each([&](Flow& f) {
    if (!f.active() || !f.in_kernel) return;
    t2cp_active_flow v;
    if (!kernel_->read(f.key, &v)) { reused.push_back(f.key); return; }
    if (after(v.b_snd_nxt, f.replica.snd_nxt)) { f.replica.s2c += v.b_snd_nxt - f.replica.snd_nxt; f.replica.snd_nxt = v.b_snd_nxt; }
    if (after(v.b_rcv_nxt, f.replica.rcv_nxt)) { f.replica.c2s += v.b_rcv_nxt - f.replica.rcv_nxt; f.replica.rcv_nxt = v.b_rcv_nxt; }
    if (after(v.b_tsval, f.replica.tsval)) f.replica.tsval = v.b_tsval;
    f.primary.s2c = f.replica.s2c;
    f.primary.c2s = f.replica.c2s;
    if (v.c_fin && !f.client.fin) { f.client.fin = true; f.client.fin_seq = v.c_fin_seq; }
    f.client.rst = f.client.rst || v.c_rst;
    f.replica.fin = f.replica.fin || v.b_fin;
    f.replica.rst = f.replica.rst || v.b_rst;
    f.last_seen_us = std::max(f.last_seen_us, wall_us(v.last_seen_ns));
    if (v.first_data_ns && !f.first_active_data_us) f.first_active_data_us = wall_us(v.first_data_ns);
    note_closing(f, now);
  });
  // The program let a new connection through on the key and forgot the old one.
  for (const FlowKey& k : reused) ctx_.flows.erase(k);
  uint64_t st[T2CP_ACTIVE_STAT_COUNT];
  kernel_->stats(st);
  Counters& c = ctx_.counters;
  c.set(k_active_in_packets, st[T2CP_ACTIVE_IN_PACKETS]);
  c.set(k_active_out_packets, st[T2CP_ACTIVE_OUT_PACKETS]);
  c.set(k_active_passthrough, st[T2CP_ACTIVE_PASSTHROUGH]);
  c.set(k_active_ack_clamped, st[T2CP_ACTIVE_ACK_CLAMPED]);
  c.set(k_active_sack_dropped, st[T2CP_ACTIVE_SACK_DROPPED]);
  c.set(k_active_unparsed, st[T2CP_ACTIVE_UNPARSED]);
  c.set(k_active_icmp_translated, st[T2CP_ACTIVE_ICMP_TRANSLATED]);
}

void ActiveMode::on_tick(uint64_t now) {
  if (kernel_ && now - kernel_synced_us_ >= kKernelSyncUs) {
    sync_from_kernel(now);
    kernel_synced_us_ = now;
  }
  uint64_t idle_us = uint64_t(ctx_.cfg.idle_timeout_s) * 1000000;
  ctx_.flows.erase_if([&](Flow& f) {
    // While a takeover catches up the incoming processor expires the rest.
    if (!f.active()) return ctx_.mode == EngineMode::kActive && (f.state == FlowState::kClosed || f.state == FlowState::kUnprotected);
    bool expired = f.state == FlowState::kClosed ? now - f.closed_us > kActiveLingerUs : now - f.last_seen_us > idle_us;
    if (!expired) return false;
    if (f.state != FlowState::kClosed) {
      ctx_.counters.add(k_flows_expired);
      ctx_.events.emit(EventType::kClosed, EventReason::kIdleTimeout, f);
    }
    if (kernel_ && f.in_kernel) kernel_->remove(f.key);
    return true;
  });
}

}  // namespace t2cp
