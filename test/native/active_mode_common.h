// What the two active-mode test programs share (active_mode_test: the
// engine's translator; active_mode_kernel_test: the kernel's against it): the
// one taken-over flow's addresses, the engine around it, a segment builder
// and an ICMP error quoting a segment. Include after check.h.
#pragma once
#include <arpa/inet.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "engine_context.h"
#include "packet.h"
#include "recovery_active_mode.h"

namespace t2cp_test {

constexpr uint32_t kVip = 0x0a0112c6;     // 198.18.1.10 in network order (little-endian host)
constexpr uint32_t kClient = 0x020012c6;  // 198.18.0.2
constexpr uint16_t kPort = 7000, kClientPort = 40000;

// A fresh engine context with the one flow in it, synchronised (both
// SYN-ACKs seen); each test sets the flow's numbers, then enters active mode.
struct OneFlow {
  t2cp::EngineConfig cfg;
  std::unique_ptr<t2cp::EngineContext> ctx;
  std::unique_ptr<t2cp::ActiveMode> am;
  t2cp::Flow* f = nullptr;
  OneFlow() {
    cfg.vip = kVip;
    cfg.ports = {kPort};
    ctx = std::make_unique<t2cp::EngineContext>(cfg);
    am = std::make_unique<t2cp::ActiveMode>(*ctx);
    f = ctx->flows.insert(t2cp::FlowKey{kClient, kClientPort, kPort});
    f->state = t2cp::FlowState::kSynchronised;
    f->primary.synack = f->replica.synack = true;
  }
};

// A whole IPv4 packet as build_segment() makes it (checksums computed).
inline std::vector<uint8_t> segment(const t2cp::SegmentSpec& sp) {
  std::vector<uint8_t> b(2048);
  b.resize(t2cp::build_segment(sp, b.data(), b.size()));
  return b;
}

// Internet checksum of n bytes (RFC 1071).
inline uint16_t inet_sum(const uint8_t* p, size_t n) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < n; i += 2) sum += uint32_t(p[i]) << 8 | p[i + 1];
  if (n & 1) sum += uint32_t(p[n - 1]) << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return uint16_t(~sum);
}

// An ICMP error from a router on the way (fragmentation needed) quoting a
// segment the new owner sent, as the router saw it: in the primary's numbers.
inline std::vector<uint8_t> frag_needed(const std::vector<uint8_t>& quoted, uint32_t vip_dst) {
  std::vector<uint8_t> ip(20 + 8 + 28);
  ip[0] = 0x45; ip[8] = 64; ip[9] = 1;  // ICMP
  uint16_t total = uint16_t(ip.size());
  ip[2] = uint8_t(total >> 8); ip[3] = uint8_t(total);
  const uint32_t router = htonl(0xc6120101);  // 198.18.1.1
  std::memcpy(&ip[12], &router, 4);
  std::memcpy(&ip[16], &vip_dst, 4);
  uint8_t* icmp = &ip[20];
  icmp[0] = 3; icmp[1] = 4; icmp[6] = 0x05; icmp[7] = 0x78;  // next-hop MTU 1400
  std::memcpy(icmp + 8, quoted.data(), 28);  // its IP header and the first 8 bytes of TCP
  uint16_t c = inet_sum(icmp, 8 + 28);
  icmp[2] = uint8_t(c >> 8); icmp[3] = uint8_t(c);
  uint16_t h = inet_sum(ip.data(), 20);
  ip[10] = uint8_t(h >> 8); ip[11] = uint8_t(h);
  return ip;
}

}  // namespace t2cp_test
