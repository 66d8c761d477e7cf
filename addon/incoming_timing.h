// Timers and sizes of the incoming traffic processor, shared by its two
// files (incoming_processor.cc: what the mirror shows; incoming_injection.cc:
// what the replica is given). Each constant carries its unit and its reason.
#pragma once
#include <cstddef>
#include <cstdint>

#include "flow_table.h"

namespace t2cp {

// Longest frame one MTU makes, bytes: 1500 + Ethernet header 14 + VLAN tag 4.
// Anything longer on the mirror is a GRO/TSO super-frame (counted).
constexpr size_t kMaxPlainFrame = 1518;

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

inline uint64_t retry_after_us(const Flow& f) {
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
// Meanwhile (with a traffic recorder at the gateway) the missing bytes are
// asked for this long after the primary acknowledged them — the mirror is
// rarely later — and again every kResupplyRepeatUs until they came, for at
// most kResupplyGraceUs (within the recorder's default 2 s window), µs.
constexpr uint64_t kResupplyAskUs = 20000;
constexpr uint64_t kResupplyRepeatUs = 200000;
constexpr uint64_t kResupplyGraceUs = 1500000;
// The most one request asks for, bytes (a few lost GRO super-frames), and
// the most holes of one flow asked for at once.
constexpr uint32_t kResupplyMaxBytes = 1u << 20;
constexpr size_t kResupplyMaxHoles = 16;
// After capture drops: flows seen this recently are suspected, µs (the drop
// counter is read every 100 ms, frames sit in the ring a little longer).
constexpr uint64_t kDropSuspectWindowUs = 300000;
// ... and must show a primary ack within what we hold this soon, µs.
constexpr uint64_t kDropVerifyUs = 1000000;
// Times the replica's handshake is started again after it dropped its
// half-open connection, before the flow is declared unprotected.
constexpr int kMaxHandshakeRestarts = 5;

}  // namespace t2cp
