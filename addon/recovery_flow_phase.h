// Failure recovery, per flow: where each replicated connection stands in a
// takeover, and what its replica can still do for it. The takeover has no
// global barrier: each flow goes active as soon as its replica is shown to
// be able to continue it, the others catch up in the background or are
// reset, one by one (recovery_takeover drives the moves).
//
//   kReplicating --freeze--> kFinishing --complete--> kActive
//                                  |
//                                  +--lost / deadline--> kReset
//                                  +--handshake nobody answered--> kForgotten
//
// What each flow's replica can do at an instant: recovery_readiness.h.
//
// Thread: engine thread only.
#pragma once
#include <cstdint>


namespace t2cp {

enum class TakeoverPhase : uint8_t {
  kReplicating = 0,  // no takeover yet: its replica is fed, its output dropped
  kFinishing = 1,    // takeover begun: its replica is still fed what the primary had
  kActive = 2,       // its replica continues it: translated, served here for the rest of its life
  kReset = 3,        // its replica cannot continue it: replica copy and client reset
  kForgotten = 4,    // a handshake nobody answered: the client's next SYN opens a local connection
};
constexpr int kTakeoverPhases = 5;

// The moves allowed, [from][to].
constexpr bool kPhaseMoves[kTakeoverPhases][kTakeoverPhases] = {
    //            repl   finish active  reset  forgot
    /* repl   */ {false, true,  false, false, false},
    /* finish */ {false, false, true,  true,  true},
    /* active */ {false, false, false, false, false},
    /* reset  */ {false, false, false, false, false},
    /* forgot */ {false, false, false, false, false},
};

inline bool phase_can_move(TakeoverPhase from, TakeoverPhase to) {
  return kPhaseMoves[static_cast<int>(from)][static_cast<int>(to)];
}

inline const char* phase_name(TakeoverPhase p) {
  switch (p) {
    case TakeoverPhase::kReplicating: return "replicating";
    case TakeoverPhase::kFinishing: return "finishing";
    case TakeoverPhase::kActive: return "active";
    case TakeoverPhase::kReset: return "reset";
    case TakeoverPhase::kForgotten: return "forgotten";
  }
  return "?";
}

}  // namespace t2cp
