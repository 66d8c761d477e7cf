#include "recovery_connection_takeover.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>

#include "outgoing_nftables.h"
#include "recovery_active_mode.h"

namespace t2cp {
namespace {

constexpr uint32_t kTsOptionBytes = 12;   // NOP NOP TS(10), RFC 7323 appendix A
constexpr uint32_t kMinSegment = 88;      // 536 less headers would do; never below this

}  // namespace

ConnectionTakeover::~ConnectionTakeover() {
  if (fd_ >= 0) close(fd_);
}

std::string ConnectionTakeover::open() {
  if (fd_ >= 0) return "";
  fd_ = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);  // IP_HDRINCL implied
  if (fd_ < 0) return std::string("cannot open a raw socket: ") + strerror(errno);
  uint32_t mark = kInjectMark;
  if (setsockopt(fd_, SOL_SOCKET, SO_MARK, &mark, sizeof mark) < 0)
    return std::string("cannot mark the raw socket: ") + strerror(errno);
  return "";
}

bool ConnectionTakeover::send(const SegmentSpec& sp) {
  size_t n = build_segment(sp, pkt_, sizeof pkt_);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = sp.daddr;
  if (n == 0 || sendto(fd_, pkt_, n, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) != ssize_t(n)) {
    ctx_.counters.add(k_resume_errors);
    return false;
  }
  return true;
}

bool ConnectionTakeover::send_datagram(const FlowKey& k, const uint8_t* payload, uint32_t len) {
  if (len > sizeof pkt_ - 28) return false;
  std::memset(pkt_, 0, 28);
  const uint32_t total = 28 + len;
  pkt_[0] = 0x45;
  pkt_[2] = uint8_t(total >> 8), pkt_[3] = uint8_t(total);
  pkt_[6] = 0x40;  // DF; the id and the header checksum the kernel fills in
  pkt_[8] = 64;
  pkt_[9] = IPPROTO_UDP;
  std::memcpy(pkt_ + 12, &ctx_.cfg.vip, 4);
  std::memcpy(pkt_ + 16, &k.client_ip, 4);
  pkt_[20] = uint8_t(k.server_port >> 8), pkt_[21] = uint8_t(k.server_port);
  pkt_[22] = uint8_t(k.client_port >> 8), pkt_[23] = uint8_t(k.client_port);
  pkt_[24] = uint8_t((8 + len) >> 8), pkt_[25] = uint8_t(8 + len);
  std::memcpy(pkt_ + 28, payload, len);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = k.client_ip;
  return sendto(fd_, pkt_, total, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) == ssize_t(total);
}

SegmentSpec ConnectionTakeover::to_client(const Flow& f) const {
  SegmentSpec sp;
  sp.saddr = ctx_.cfg.vip;
  sp.daddr = f.key.client_ip;
  sp.sport = f.key.server_port;
  sp.dport = f.key.client_port;
  return sp;
}

SegmentSpec ConnectionTakeover::resume_base(const Flow& f) const {
  SegmentSpec base = to_client(f);
  base.ack = f.replica.rcv_nxt;
  base.flags = kAck;
  base.window = uint16_t(ActiveMode::client_window(f));
  if (f.client.ts_ok) {
    base.has_ts = true;
    base.tsval = ActiveMode::client_tsval(f);
    base.tsecr = f.client.tsval;
  }
  return base;
}

uint32_t ConnectionTakeover::resume(Flow& f) {
  if (fd_ < 0) return 0;
  // Data: from what the client acknowledged to what the replica produced.
  uint32_t from = f.client.ack_p + f.seq_delta, end = f.replica.out.contig_end();
  bool have_from = f.replica.out.holds(from);
  if (!have_from) {
    send_final_ack(f);
    return 0;
  }
  // The client learns at once what the replica has of its data; the replica's
  // data follows in pump(). At the client's rcv_nxt: acceptable whatever
  // the client holds.
  SegmentSpec ack = resume_base(f);
  ack.seq = f.client.ack_p;
  ack.ip_id = ip_id_++;
  if (send(ack)) ctx_.counters.add(k_resume_acks);
  f.resending = true;
  f.resend_next = from;
  queue_.push_back(f.key);
  sorted_ = false;
  return end - from;
}

void ConnectionTakeover::send_final_ack(Flow& f) {
  SegmentSpec ack = resume_base(f);
  // The replica's FIN, if the client has not acknowledged it.
  bool fin_due = f.replica.fin && !after(f.client.ack_p + f.seq_delta, f.replica.fin_seq);
  uint32_t snd = f.replica.snd_nxt - f.seq_delta - (f.replica.fin ? 1 : 0);
  // A pure ACK below the client's rcv_wup is discarded as old: never go
  // below what the client acknowledged.
  ack.seq = before(snd, f.client.ack_p) ? f.client.ack_p : snd;
  if (fin_due) {
    ack.seq = f.replica.fin_seq - f.seq_delta;
    ack.flags |= kFin;
  }
  ack.ip_id = ip_id_++;
  if (send(ack)) ctx_.counters.add(k_resume_acks);
  f.resending = false;
  f.replica.out.clear();  // the replica's own stack retransmits from here on
}

bool ConnectionTakeover::pump(uint32_t budget) {
  if (queue_.empty()) return false;
  auto left = [&](const FlowKey& k) -> uint32_t {
    const Flow* f = ctx_.flows.find(k);
    return f && f->resending ? f->replica.out.contig_end() - f->resend_next : 0;
  };
  if (!sorted_) {
    std::stable_sort(queue_.begin(), queue_.end(), [&](const FlowKey& a, const FlowKey& b) { return left(a) < left(b); });
    sorted_ = true;
  }
  size_t done = 0;
  uint32_t sent = 0;
  for (; done < queue_.size() && sent < budget; done++) {
    Flow* f = ctx_.flows.find(queue_[done]);
    if (!f || !f->resending) continue;  // closed, or reset, meanwhile
    SegmentSpec base = resume_base(*f);
    uint32_t end = f->replica.out.contig_end();
    uint32_t mss = f->client.mss > kMinSegment ? f->client.mss : kMinSegment;
    if (f->client.ts_ok) mss -= kTsOptionBytes;
    bool failed = false;
    while (before(f->resend_next, end) && sent < budget) {
      uint32_t seq = f->resend_next;
      uint32_t len = end - seq < mss ? end - seq : mss;
      SegmentSpec sp = base;
      if (!f->replica.out.payload(seq, len, &sp)) break;  // given back meanwhile: the replica's timer resends
      sp.seq = seq - f->seq_delta;
      sp.ip_id = ip_id_++;
      if (!before(seq + len, end)) sp.flags |= kPsh;
      if (!send(sp)) { failed = true; break; }
      f->resend_next = seq + len;
      sent += len;
      ctx_.counters.add(k_resume_segments);
      ctx_.counters.add(k_resume_bytes, len);
      if (!f->first_active_data_us) f->first_active_data_us = realtime_us();
    }
    // A send that fails (counted) leaves the rest to the replica's own timer.
    if (!failed && before(f->resend_next, end) && f->replica.out.holds(f->resend_next)) break;  // the budget ran out here
    send_final_ack(*f);
  }
  queue_.erase(queue_.begin(), queue_.begin() + done);
  return !queue_.empty();
}

bool ConnectionTakeover::reset_client(const Flow& f) {
  if (fd_ < 0 || !f.client.ack_seen) return false;
  SegmentSpec sp = to_client(f);
  sp.flags = kRst;
  // Where the client acknowledged, and where the primary had sent to (what
  // a client that delays its ACKs holds already).
  sp.seq = f.client.ack_p;
  sp.ip_id = ip_id_++;
  bool sent = send(sp);
  if (f.primary.sent_seen && after(f.primary.snd_nxt, f.client.ack_p)) {
    sp.seq = f.primary.snd_nxt;
    sp.ip_id = ip_id_++;
    sent = send(sp) || sent;
  }
  if (sent) ctx_.counters.add(k_takeover_client_resets);
  return sent;
}

}  // namespace t2cp
