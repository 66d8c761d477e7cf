// Failure recovery, per flow: what a flow's replica can do for it at this
// instant of a takeover (recovery_flow_phase.h has the phases this decides).
// Pure functions of a Flow, testable without root (test/native).
//
// Thread: engine thread only.
#pragma once
#include <cstdint>

#include "flow_table.h"
#include "seq.h"

namespace t2cp {

// What a flow's replica can do for it at this instant of a takeover.
enum class Readiness : uint8_t {
  kComplete,     // it acknowledged every client byte held and every one the primary acknowledged
  kContinuable,  // it has every byte the primary acknowledged; bytes the primary never
                 // acknowledged are still being fed (the client would send them again anyway)
  kBehind,       // it lacks bytes the primary acknowledged (the client will not send them
                 // again), or capture drops left the flow unverified: not yet continuable
  kLost,         // the primary answered the client's SYN, the replica never paired: never continuable
  kUnanswered,   // nobody answered the client's SYN yet
  kOver,         // the connection ended by a reset: nothing to continue
  kUnprotected,  // known unprotected (mid-stream, gap, buffer full, ...)
};

// End of the client data held in order (its FIN included).
inline uint32_t held_end(const Flow& f) {
  uint32_t end = f.client.data.contig_end();
  return end + ((f.client.fin && end == f.client.fin_seq) ? 1 : 0);
}

inline Readiness readiness(const Flow& f) {
  switch (f.state) {
    case FlowState::kUnprotected: return Readiness::kUnprotected;
    case FlowState::kSynSeen: return f.primary.synack ? Readiness::kLost : Readiness::kUnanswered;
    case FlowState::kClosed: return f.rst_injected ? Readiness::kOver : Readiness::kComplete;
    case FlowState::kSynchronised:
    case FlowState::kClosing: break;
  }
  if (f.drop_suspect_us || before(f.replica.rcv_nxt, f.primary.rcv_nxt)) return Readiness::kBehind;
  if (before(f.replica.rcv_nxt, held_end(f)) || f.client.data.has_out_of_order()) return Readiness::kContinuable;
  return Readiness::kComplete;
}

}  // namespace t2cp
