#include "traffic_recorder.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unordered_map>

#include "event_queue.h"
#include "packet.h"
#include "seq.h"
#include "udp_ledger.h"

namespace t2cp {
namespace {

constexpr size_t kEthHeader = 14;
constexpr int kBatch = 256;       // frames per Capture::dispatch
constexpr int kPollMs = 50;       // bounds how late stop() is seen
constexpr uint64_t kCoalesceUs = 300;  // wake-ups closer than this wait this long first
constexpr uint64_t kStatsUs = 100000;  // capture drops read this often

void store16(uint8_t* p, uint16_t v) { v = htons(v); std::memcpy(p, &v, 2); }
void store32(uint8_t* p, uint32_t v) { v = htonl(v); std::memcpy(p, &v, 4); }

}  // namespace

std::string TrafficRecorder::start(const RecorderConfig& cfg) {
  cfg_ = cfg;
  CaptureConfig cc{cfg.ifname, cfg.vip, cfg.ports, 64u << 20, /*outbound=*/true, {}, cfg.udp_ports, {}};
  std::string err = capture_.open(cc);
  if (!err.empty()) return err;
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq r{};
  std::strncpy(r.ifr_name, cfg.ifname.c_str(), IFNAMSIZ - 1);
  if (s >= 0 && ioctl(s, SIOCGIFMTU, &r) == 0 && r.ifr_mtu >= 576) mtu_ = uint32_t(r.ifr_mtu);
  if (s >= 0) close(s);
  raw_fd_ = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);  // IP_HDRINCL implied
  if (raw_fd_ < 0) {
    capture_.close();
    return std::string("traffic recorder: cannot open a raw socket: ") + strerror(errno) + " (run as root)";
  }
  ifindex_ = int(if_nametoindex(cfg.ifname.c_str()));
  arp_fd_ = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ARP));
  sockaddr_ll ll{};
  ll.sll_family = AF_PACKET;
  ll.sll_protocol = htons(ETH_P_ARP);
  ll.sll_ifindex = ifindex_;
  if (arp_fd_ < 0 || bind(arp_fd_, reinterpret_cast<sockaddr*>(&ll), sizeof ll) != 0) {
    std::string why = strerror(errno);
    capture_.close();
    close(raw_fd_);
    if (arp_fd_ >= 0) close(arp_fd_);
    raw_fd_ = arp_fd_ = -1;
    return "traffic recorder: cannot watch ARP on " + cfg.ifname + ": " + why + " (run as root)";
  }
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  stopping_.store(false);
  thread_ = std::thread([this] { run(); });
  return "";
}

void TrafficRecorder::stop() {
  if (thread_.joinable()) {
    stopping_.store(true);
    uint64_t one = 1;
    ssize_t w = write(wake_fd_, &one, sizeof one);
    (void)w;
    thread_.join();
  }
  capture_.close();
  if (wake_fd_ >= 0) close(wake_fd_);
  if (raw_fd_ >= 0) close(raw_fd_);
  if (arp_fd_ >= 0) close(arp_fd_);
  wake_fd_ = raw_fd_ = arp_fd_ = -1;
  std::lock_guard<std::mutex> g(mu_);
  ring_.clear();
  ring_bytes_ = 0;
  udp_ring_.clear();
  udp_bytes_ = 0;
}

// Thread: recorder.
void TrafficRecorder::run() {
  pollfd fds[3] = {{capture_.fd(), POLLIN, 0}, {wake_fd_, POLLIN, 0}, {arp_fd_, POLLIN, 0}};
  uint64_t last_wake_us = 0, next_stats_us = 0;
  while (!stopping_.load()) {
    poll(fds, 3, kPollMs);
    // Under a stream of small frames (UDP), a wake-up per frame costs more
    // than the frame: a little wait lets one pass take many.
    const uint64_t now = realtime_us();
    if ((fds[0].revents & POLLIN) && now - last_wake_us < kCoalesceUs) usleep(kCoalesceUs);
    last_wake_us = now;
    if (fds[1].revents & POLLIN) {
      uint64_t v;
      ssize_t r = read(wake_fd_, &v, sizeof v);
      (void)r;
    }
    // What was captured goes into the ring before any replay reads it.
    while (capture_.dispatch(kBatch, &TrafficRecorder::on_frame, this) > 0) {
    }
    if (fds[2].revents & POLLIN) read_arp();
    if (uint64_t since = resupply_since_.exchange(0)) {
      bool done;
      {
        std::lock_guard<std::mutex> g(mu_);
        done = armed_.replayed;  // the announcement came first
        armed_.armed = false;
        armed_.replayed = true;
      }
      if (!done) {
        counters_.replays_on_report.fetch_add(1);
        resupply(since);
      }
    }
    uint64_t kd, id;
    if (now >= next_stats_us && capture_.stats(&kd, &id)) {
      counters_.capture_drops.store(kd + id);
      next_stats_us = now + kStatsUs;
    }
  }
}

void TrafficRecorder::on_frame(void* self, const uint8_t* frame, size_t caplen, uint64_t capture_ns) {
  auto* r = static_cast<TrafficRecorder*>(self);
  if (caplen <= kEthHeader) {
    r->counters_.malformed.fetch_add(1);
    return;
  }
  r->record(capture_ns / 1000u, frame, frame + kEthHeader, caplen - kEthHeader);
}

void TrafficRecorder::record(uint64_t us, const uint8_t* to_mac, const uint8_t* ip, size_t len) {
  if (len >= 20 && ip[9] == 17) {
    std::lock_guard<std::mutex> g(mu_);
    if (ip[6] & 0x3f || ip[7]) {
      // A fragment (MF, or an offset): recorded once its datagram is whole, as the primary gets it.
      reassembly_.expire(us);
      if (!reassembly_.add(ip, len, us, &reassembled_)) return;
      counters_.udp_reassembled.fetch_add(1, std::memory_order_relaxed);
      ip = reassembled_.data();
      len = reassembled_.size();
    }
    record_udp(us, to_mac, ip, len);
    return;
  }
  Segment s;
  if (parse_ipv4(ip, len, false, &s) != ParseError::kOk) {
    counters_.malformed.fetch_add(1);
    return;
  }
  // Pure ACKs carry nothing to resupply; a FIN alone does (it takes a number).
  if (s.payload_len == 0 && !(s.flags & kFin)) return;
  std::lock_guard<std::mutex> g(mu_);
  ring_.push_back({us, flow_key(s.saddr, s.sport, s.dport), std::vector<uint8_t>(ip, ip + s.ip_len)});
  ring_bytes_ += s.ip_len;
  counters_.recorded_packets.fetch_add(1, std::memory_order_relaxed);
  counters_.recorded_bytes.fetch_add(s.payload_len, std::memory_order_relaxed);
  uint64_t oldest_ok = us > uint64_t(cfg_.window_ms) * 1000 ? us - uint64_t(cfg_.window_ms) * 1000 : 0;
  while (!ring_.empty() && (ring_bytes_ > cfg_.max_bytes || ring_.front().us < oldest_ok)) {
    ring_bytes_ -= ring_.front().ip.size();
    ring_.pop_front();
    counters_.evicted_packets.fetch_add(1, std::memory_order_relaxed);
  }
}

void TrafficRecorder::record_udp(uint64_t us, const uint8_t* to_mac, const uint8_t* ip, size_t len) {
  Datagram d;
  if (parse_udp(ip, len, &d) != ParseError::kOk) {
    counters_.malformed.fetch_add(1);
    return;
  }
  UdpEntry e{udp_next_++, us, {}, {}, std::vector<uint8_t>(ip, ip + d.ip_len)};
  std::memcpy(e.to_mac, to_mac, 6);
  std::memcpy(e.record, &d.saddr, 4);
  store16(e.record + 4, d.sport);
  store16(e.record + 6, d.dport);
  const uint64_t digest = udp_digest(d);
  store32(e.record + 8, uint32_t(digest >> 32));
  store32(e.record + 12, uint32_t(digest));
  udp_bytes_ += e.ip.size();
  udp_ring_.push_back(std::move(e));
  counters_.udp_recorded.fetch_add(1, std::memory_order_relaxed);
  const uint64_t oldest_ok = us > uint64_t(cfg_.window_ms) * 1000 ? us - uint64_t(cfg_.window_ms) * 1000 : 0;
  while (!udp_ring_.empty() && (udp_bytes_ > cfg_.max_bytes || udp_ring_.front().us < oldest_ok)) {
    udp_bytes_ -= udp_ring_.front().ip.size();
    udp_ring_.pop_front();
    counters_.udp_evicted.fetch_add(1, std::memory_order_relaxed);
  }
}

TrafficRecorder::UdpManifest TrafficRecorder::udp_manifest(uint64_t after, bool from_now, size_t max_records,
                                                           const uint8_t* asker_mac) {
  std::lock_guard<std::mutex> g(mu_);
  counters_.udp_manifests.fetch_add(1, std::memory_order_relaxed);
  UdpManifest m;
  // A backup starting, or one whose numbers are not this recorder's (it restarted).
  if (from_now || after > udp_next_) {
    if (from_now) udp_cut_us_ = 0;
    m.first = m.next = udp_next_;
    return m;
  }
  const uint64_t oldest = udp_ring_.empty() ? udp_next_ : udp_ring_.front().number;
  m.first = std::max(after, oldest);
  m.lost = m.first - after;
  m.next = m.first;
  for (size_t i = m.first - oldest; i < udp_ring_.size(); i++) {
    const UdpEntry& e = udp_ring_[i];
    if (udp_cut_us_ && e.us >= udp_cut_us_) {
      m.cut = true;
      return m;
    }
    if (m.next - m.first >= max_records) {
      m.more = true;
      return m;
    }
    m.records.insert(m.records.end(), e.record, e.record + sizeof e.record);
    if (asker_mac && std::memcmp(e.to_mac, asker_mac, 6) == 0) {
      m.direct.push_back(e.number);
      if (e.number >= udp_direct_counted_) {  // a manifest asked again names it again: counted once
        counters_.udp_direct.fetch_add(1, std::memory_order_relaxed);
        udp_direct_counted_ = e.number + 1;
      }
    }
    m.next = e.number + 1;
  }
  m.cut = udp_cut_us_ != 0;
  return m;
}

std::vector<std::vector<uint8_t>> TrafficRecorder::udp_lookup(const std::vector<uint64_t>& numbers) {
  std::vector<std::vector<uint8_t>> out;
  std::lock_guard<std::mutex> g(mu_);
  if (udp_ring_.empty()) return out;
  const uint64_t oldest = udp_ring_.front().number;
  for (uint64_t n : numbers)
    if (n >= oldest && n < udp_next_) out.push_back(udp_ring_[n - oldest].ip);
  counters_.udp_looked_up.fetch_add(out.size(), std::memory_order_relaxed);
  return out;
}

uint64_t TrafficRecorder::held_bytes() const {
  std::lock_guard<std::mutex> g(mu_);
  return ring_bytes_ + udp_bytes_;
}

template <typename Fn>
void TrafficRecorder::cut(const uint8_t* pkt, const Segment& s, uint32_t begin, uint32_t end, uint32_t max_payload,
                          Fn fn) {
  const uint32_t hdrs = s.ip_hdr_len + s.tcp_hdr_len;
  uint8_t out[65536];
  uint32_t off = begin;
  do {  // a FIN alone (begin == end) is one piece too
    uint32_t n = end - off < max_payload ? end - off : max_payload;
    bool last = off + n >= s.payload_len;
    std::memcpy(out, pkt, hdrs);
    std::memcpy(out + hdrs, s.payload + off, n);
    uint8_t* tcp = out + s.ip_hdr_len;
    store16(out + 2, uint16_t(hdrs + n));
    store16(out + 4, ip_id_++);
    store32(tcp + 4, s.seq + off);
    uint8_t flags = s.flags;
    if (!last) flags &= uint8_t(~(kFin | kPsh));
    if (off) flags &= uint8_t(~kCwr);
    tcp[13] = flags;
    uint16_t c = ipv4_header_checksum(out, s.ip_hdr_len);
    std::memcpy(out + 10, &c, 2);
    c = tcp_checksum_ipv4(s.saddr, s.daddr, tcp, s.tcp_hdr_len + n);
    std::memcpy(tcp + 16, &c, 2);
    fn(out, hdrs + n, n);
    off += n;
  } while (off < end);
}

uint64_t TrafficRecorder::send_cut(const std::vector<uint8_t>& pkt, uint64_t* packets, const uint8_t* mac) {
  Segment s;
  if (parse_ipv4(pkt.data(), pkt.size(), false, &s) != ParseError::kOk) return 0;
  const uint32_t hdrs = s.ip_hdr_len + s.tcp_hdr_len;
  uint64_t sent = 0;
  cut(pkt.data(), s, 0, s.payload_len, mtu_ > hdrs + 8 ? mtu_ - hdrs : 8, [&](uint8_t* out, uint32_t len, uint32_t n) {
    ssize_t w;
    if (mac) {
      sockaddr_ll to{};
      to.sll_family = AF_PACKET;
      to.sll_protocol = htons(ETH_P_IP);
      to.sll_ifindex = ifindex_;
      to.sll_halen = 6;
      std::memcpy(to.sll_addr, mac, 6);
      w = sendto(arp_fd_, out, len, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    } else {
      sockaddr_in to{};
      to.sin_family = AF_INET;
      to.sin_addr.s_addr = s.daddr;
      w = sendto(raw_fd_, out, len, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    }
    if (w != ssize_t(len)) {
      counters_.send_errors.fetch_add(1);
      return;
    }
    sent += n;
    (*packets)++;
  });
  return sent;
}

std::vector<std::vector<uint8_t>> TrafficRecorder::lookup(uint32_t client_ip, uint16_t client_port, uint16_t vip_port,
                                                          uint32_t from, uint32_t to, uint32_t max_payload,
                                                          size_t max_total) {
  counters_.lookups.fetch_add(1);
  if (max_payload == 0) max_payload = 1;
  std::vector<std::vector<uint8_t>> pieces;
  size_t total = 0;
  const uint64_t key = flow_key(client_ip, client_port, vip_port);
  std::lock_guard<std::mutex> g(mu_);
  for (const Entry& e : ring_) {
    if (e.key != key) continue;
    Segment s;
    if (parse_ipv4(e.ip.data(), e.ip.size(), false, &s) != ParseError::kOk) continue;
    // The part of [from, to) this segment carries, as offsets into its payload.
    uint32_t seg_end = s.seq + s.payload_len;
    uint32_t lo = after(from, s.seq) ? from : s.seq, hi = before(to, seg_end) ? to : seg_end;
    bool fin_wanted = (s.flags & kFin) && !before(seg_end, from) && !after(seg_end, to);
    if (!before(lo, hi) && !fin_wanted) continue;
    if (!before(lo, hi)) lo = hi = seg_end;
    cut(e.ip.data(), s, lo - s.seq, hi - s.seq, max_payload, [&](uint8_t* out, uint32_t len, uint32_t n) {
      if (total + n > max_total) return;
      pieces.emplace_back(out, out + len);
      total += n;
    });
    if (total >= max_total) break;
  }
  counters_.looked_up_packets.fetch_add(pieces.size());
  counters_.looked_up_bytes.fetch_add(total);
  return pieces;
}

// Thread: JS.
void TrafficRecorder::arm_replay(uint64_t since_us, const uint8_t old_owner_mac[6]) {
  std::lock_guard<std::mutex> g(mu_);
  armed_.armed = true;
  armed_.replayed = false;
  armed_.since_us = since_us;
  std::memcpy(armed_.old_mac, old_owner_mac, 6);
}

// Thread: recorder.
void TrafficRecorder::read_arp() {
  uint8_t b[64];
  for (;;) {
    sockaddr_ll from{};
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(arp_fd_, b, sizeof b, 0, reinterpret_cast<sockaddr*>(&from), &fl);
    if (n < 0) return;
    // Ethernet/IPv4 ARP (RFC 826), a request or a reply, received: its
    // sender's addresses at 8 (MAC) and 14 (IP).
    if (from.sll_pkttype == PACKET_OUTGOING || n < 28 || b[0] != 0 || b[1] != 1 || b[2] != 0x08 || b[3] != 0 ||
        b[4] != 6 || b[5] != 4 || b[6] != 0 || (b[7] != 1 && b[7] != 2))
      continue;
    uint32_t spa;
    std::memcpy(&spa, b + 14, 4);
    uint64_t since;
    {
      std::lock_guard<std::mutex> g(mu_);
      if (!armed_.armed || spa != cfg_.vip || std::memcmp(b + 8, armed_.old_mac, 6) == 0) continue;
      armed_.armed = false;
      armed_.replayed = true;
      since = armed_.since_us;
    }
    counters_.replays_on_announcement.fetch_add(1);
    resupply(since, b + 8);
  }
}

// Thread: JS. The sending happens on the recorder thread.
void TrafficRecorder::request_resupply(uint64_t since_us) {
  resupply_since_.store(since_us ? since_us : 1);
  uint64_t one = 1;
  ssize_t w = write(wake_fd_, &one, sizeof one);
  (void)w;
}

// Thread: recorder (the only one touching the ring besides record()).
void TrafficRecorder::resupply(uint64_t since_us, const uint8_t* mac) {
  const uint64_t started = realtime_us();
  counters_.replay_started_us.store(started);
  std::vector<const Entry*> todo;
  std::vector<Entry> copy;
  {
    std::lock_guard<std::mutex> g(mu_);
    udp_cut_us_ = started;
    for (const Entry& e : ring_)
      if (e.us >= since_us) copy.push_back(e);
  }
  // The flows with the least to resend first, each in capture order: a light
  // session's one lost request is not sent behind megabytes of a bulk
  // upload's (the new owner holds most of those already).
  std::unordered_map<uint64_t, uint64_t> flow_bytes;
  for (const Entry& e : copy) flow_bytes[e.key] += e.ip.size();
  for (const Entry& e : copy) todo.push_back(&e);
  std::stable_sort(todo.begin(), todo.end(), [&](const Entry* a, const Entry* b) {
    uint64_t x = flow_bytes[a->key], y = flow_bytes[b->key];
    return x != y ? x < y : a->key < b->key;
  });
  uint64_t bytes = 0, packets = 0;
  for (const Entry* e : todo) bytes += send_cut(e->ip, &packets, mac);
  counters_.resupplied_packets.fetch_add(packets);
  counters_.resupplied_bytes.fetch_add(bytes);
}

}  // namespace t2cp
