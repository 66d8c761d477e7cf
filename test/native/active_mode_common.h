// What the two active-mode test programs share (active_mode_test: the
// engine's translator; active_mode_kernel_test: the kernel's against it): the
// one taken-over flow's addresses, the engine around it and a segment
// builder. Include after check.h.
#pragma once
#include <cstdint>
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

}  // namespace t2cp_test
