// Flow events handed to JavaScript in batches: fixed 64-byte little-endian
// records in one buffer (node_pcap's fixed-offset habit), decoded in
// src/incoming/events.ts with a DataView. Keep both files in step.
//
//  off size field
//   0   1   type        EventType
//   1   1   reason      EventReason
//   2   2   server_port host order
//   4   4   client_ip   network order, as on the wire
//   8   2   client_port host order
//  10   1   state       FlowState
//  11   1   protocol    0: TCP; 17: UDP (an association: c2s_backup the
//                       client's datagram bytes given, s2c_backup the replica's)
//  12   4   flow_id     engine-local id, unique while the engine runs
//  16   8   time_us     CLOCK_REALTIME microseconds
//  24   8   c2s_primary client bytes the primary acknowledged
//  32   8   c2s_backup  client bytes the replica acknowledged
//  40   8   s2c_primary bytes the primary sent
//  48   8   s2c_backup  bytes the replica sent (and we dropped)
//  56   8   detail      reason-specific (e.g. gap start offset; for
//                       kResupply: length << 32 | first client seq, length
//                       at most 2^20 so the value stays below 2^53; for
//                       UDP the recorder's number of the datagram wanted)
#pragma once
#include <cstdint>

namespace t2cp {

constexpr int kEventSize = 64;

enum class EventType : uint8_t {
  kNew = 1,           // client SYN seen and injected
  kSynchronised = 2,  // both SYN-ACKs paired, handshake completed on the replica
  kUnprotected = 3,   // cannot be replicated (see reason)
  kClosed = 4,        // FIN/RST on both sides or timeout; flow forgotten
  kAnomaly = 5,       // something the operator should see (see reason)
  kStats = 6,         // answer to requestFlowStats(): one per live flow
  kTakeover = 7,      // failure recovery progress (reason: step; detail: µs)
  kResupply = 8,      // ask the traffic recorder (reason kGap; detail: bytes << 32 | first seq,
                      // or for UDP the datagram's record number, udp_ledger.h)
  kLagging = 9,       // the replica is behind the primary by detail bytes (either direction)
};

enum class EventReason : uint8_t {
  kNone = 0,
  kMidStream = 1,        // first packet seen was not a SYN
  kBackupRefused = 2,    // the replica answered the SYN with RST (service down?)
  kHandshakeTimeout = 3, // no SYN-ACK from primary or replica in time
  kTableFull = 4,        // max flows reached
  kFin = 5,
  kRst = 6,
  kIdleTimeout = 7,
  kGap = 8,              // client bytes the primary has but we never captured
  kBufferFull = 9,       // per-flow buffer limit: the replica lost bytes
  // 10 was 'diverged': a closed event's detail = 1 says it instead
  kPrimaryRst = 11,      // primary reset; replica reset by us
  kCaptureDrop = 12,     // the capture dropped frames while this flow was active
                         // and nothing since proved the flow intact
  kReplicaReset = 13,    // the replica reset its copy, the primary did not
  kTakeoverIncomplete = 14,  // at takeover the replica lacked acknowledged bytes
  kReplicaStopped = 15,  // the replica stopped short of output the client had
                         // received and waits for input: it diverged
  kShed = 16,            // the backup ran out of memory for all flows: this one,
                         // holding the most, was given up so the others stay
  kReplicaBehind = 17,   // its replica lacked client bytes the primary had acknowledged
                         // more than --max-lag ago (detail: ms): given up, the
                         // one holding the most first, so the others keep up
  kDiverged = 18,        // its replica's output differs from the primary's (detail:
                         // kind << 48 | stream offset of the first difference;
                         // DivergenceKind; the excerpts: Engine::divergences())
  // Takeover steps (type kTakeover; detail = the step's duration, µs).
  kStepFreeze = 21, kStepFinish = 22, kStepActive = 23, kStepIpTakeover = 24, kStepConnections = 25, kStepCatchUp = 26,
  kTakeoverDone = 30,    // detail: µs from request to the end of step 5
  kTakeoverFailed = 31,
  kStallMeasured = 32,   // the report's client-visible stall figures are final
};

}  // namespace t2cp
