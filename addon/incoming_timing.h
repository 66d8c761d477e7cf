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
// Most client bytes one flow is given per pass of the engine loop, bytes:
// the replica's TCP processes them on the engine thread (the TUN write), so
// a bulk flow given its whole window at once (megabytes) would hold back
// every other flow's segments and the replica's queued output for that long.
// Four full segments: the bulk rate stays that of the largest writes.
constexpr uint32_t kPumpQuantum = 4 * kMaxSegPayload;
// The replica acknowledges within its delayed-ACK limit (TCP_DELACK_MAX,
// 200 ms); past that, un-acknowledged injected data is sent again, µs.
constexpr uint64_t kReinjectUs = 250000;
// Each further attempt without progress waits twice as long, up to 2^4 x
// (4 s): a replica drowning in work must not be buried under our retries
// too, exactly as TCP backs off.
constexpr int kMaxBackoffShift = 4;
// ... but only up to 2^1 x (500 ms) while the replica has taken no byte of
// the flow at all: then its connection is not there yet (the handshake's ACK
// or a SYN-cookie's first segment dropped because its accept queue was full
// at that instant), and each attempt costs it one lookup and a drop. Backed
// off to 4 s, the last flows of a burst took 1–40 s to reach a replica with
// a backlog of 8 (the e2e scenario, twelve runs); capped at 500 ms, 1–5 s.
constexpr int kMaxBackoffShiftUnopened = 1;

inline uint64_t retry_after_us(const Flow& f) {
  int cap = f.replica.rcv_nxt == f.client.isn + 1 ? kMaxBackoffShiftUnopened : kMaxBackoffShift;
  return kReinjectUs << (f.retries < cap ? f.retries : cap);
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
// The primary retransmits its FIN until the client acknowledges it (its
// RTO is 200 ms at least): a FIN not seen again this long after, with the
// client's ACK of it missing from the capture, was acknowledged all the
// same, µs.
constexpr uint64_t kFinalAckGraceUs = 1000000;
// Both FINs seen, the client's ACK of all the primary sent before its FIN, and
// that FIN not repeated for kFinalAckGraceUs: only the client's last ACK is
// missing (the capture lost it), and the primary has it.
inline bool last_ack_implied(const Flow& f, uint64_t now) {
  return f.client.fin && f.primary.fin && f.client.ack_seen && f.client.ack_p == f.primary.fin_seq &&
         now - f.primary.fin_us > kFinalAckGraceUs;
}
// How long client bytes the primary acknowledged may be missing from the
// capture before they count as lost (the mirror may deliver them late), µs.
constexpr uint64_t kGapGraceUs = 500000;
// Meanwhile (with a traffic recorder at the gateway) the missing bytes are
// asked for this long after the primary acknowledged them — the mirror is
// rarely later — and again every kResupplyRepeatUs until they came, for at
// most kResupplyGraceUs (within the recorder's default 2 s window), µs.
constexpr uint64_t kResupplyAskUs = 20000;
constexpr uint64_t kResupplyRepeatUs = 200000;
// ... but every kResupplyRepeatTakeoverUs once a takeover began: the flow's
// client waits until its replica has the bytes (recovery_takeover, step 6).
constexpr uint64_t kResupplyRepeatTakeoverUs = 40000;
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
// Causality: the most marks one flow keeps (a client this many segments,
// each with a newer ack, ahead of its replica); past it a segment joins the
// last mark and waits only for that mark's ack (counted).
constexpr size_t kMaxClientMarks = 4096;
// Causality holds client bytes and the replica, having taken all it was
// given, sends none of the output they wait for this long, µs: it stopped
// short of the primary (a service whose answers differ between the two
// copies), and its copy of the connection is given up. A replica still
// working shows progress; a slow request's answer arrives on the primary
// before its client can send the next, so the replica's is not much later.
// Long enough for a replica's TCP to come back from a few retransmission
// timeouts (0.2 + 0.4 + 0.8 + 1.6 s) after losing segments to a full TUN
// backlog.
constexpr uint64_t kReplicaStoppedUs = 5000000;
// --max-lag: the primary's acknowledgements within this long of the last
// one kept are merged into it (each flow keeps at most about one per this
// over its lag), µs; with more than kMaxAckStamps kept, every one is.
constexpr uint64_t kAckStampUs = 1000;
constexpr size_t kMaxAckStamps = 8192;
// ... and a flow is given up for its lag at most this often: the others get
// time to recover once the costliest is gone, µs.
constexpr uint64_t kBehindShedSpacingUs = 100000;
// A replica that took everything causality let it have and has sent nothing
// since, this long, is not slow but stopped short (a service that answered
// otherwise): its lag is check_stopped's (replica-stopped), not --max-lag's, µs.
constexpr uint64_t kSilentNotLagUs = 500000;
// Times the replica's handshake is started again after it dropped its
// half-open connection, before the flow is declared unprotected.
constexpr int kMaxHandshakeRestarts = 5;

}  // namespace t2cp
