// Flow table: one entry per replicated client connection, keyed by the
// client's address and port and the service port (the server side is always
// the VIP). Bounded: insert() refuses beyond max_flows and the caller counts it.
//
// Sequence spaces, for reading the fields below:
//   client space   the client's own numbers; the primary and the replica see
//                  the same ones (the replica receives the client's real SYN).
//   primary space  the primary's ISN primary.isn and its TCP timestamps.
//   backup space   the replica's ISN replica.isn and its timestamps.
// The client only ever sees primary space, so every acknowledgement, SACK
// block and echoed timestamp it sends is mapped to backup space before the
// replica sees it (incoming_processor), with the deltas fixed at handshake.
//
// Thread: engine thread only.
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <unordered_map>
#include <vector>

#include "events.h"
#include "output_compare.h"
#include "packet.h"
#include "recovery_flow_phase.h"
#include "replica_lag.h"
#include "stream_buffer.h"

namespace t2cp {

enum class FlowState : uint8_t {
  kSynSeen = 1,      // client SYN injected, waiting for both SYN-ACKs
  kSynchronised = 2, // deltas known, replica fed
  kClosing = 3,      // FIN or RST seen; waiting for both ends to finish
  kClosed = 4,       // finished; kept briefly to absorb retransmissions
  kUnprotected = 5,  // cannot be replicated; remembered to report once
};

struct FlowKey {
  uint32_t client_ip;    // network order
  uint16_t client_port;  // host order
  uint16_t server_port;  // host order
  bool operator==(const FlowKey& o) const {
    return client_ip == o.client_ip && client_port == o.client_port && server_port == o.server_port;
  }
};

struct FlowKeyHash {
  size_t operator()(const FlowKey& k) const {
    uint64_t x = (uint64_t(k.client_ip) << 32) | (uint64_t(k.client_port) << 16) | k.server_port;
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33;  // murmur3 fmix64
    return static_cast<size_t>(x);
  }
};

// Client bytes [start, end) and what the client had received when it sent
// them (ack, primary space; a FIN counts as the byte at its number). The
// replica is given them only once it has sent as much (causality: it never
// reads a request before it gave the answer the client was waiting for).
struct ClientMark {
  uint32_t start, end, ack;
};

// The primary acknowledged client bytes up to ack at us (capture time, µs).
struct AckStamp {
  uint32_t ack;
  uint64_t us;
};

// The client, from the mirror (client space).
struct ClientSide {
  uint32_t isn = 0;
  uint8_t syn_options[40]; uint8_t syn_options_len = 0;  // replayed verbatim
  uint16_t syn_window = 0;
  uint16_t mss = 536;                    // its SYN's MSS (RFC 9293 default)
  bool ts_ok = false, ws_ok = false;     // it offered timestamps / wscale
  uint8_t syn_wscale = 0;                // the shift it offered
  uint8_t shift = 0;                     // the shift it applies to its windows (both SYNs had wscale)
  uint32_t tsval = 0;                    // latest TSval (never goes back: PAWS)
  uint16_t window = 0;                   // latest raw window
  uint32_t ack_p = 0; bool ack_seen = false;  // highest ack (primary space)
  SackBlock sack[kMaxSackBlocks]; uint8_t sack_count = 0; bool sack_fresh = false;
  uint32_t tsecr_p = 0;                  // latest echoed primary TSval
  bool fin = false; uint32_t fin_seq = 0;
  bool rst = false;
  StreamBuffer data;                     // its bytes the replica still needs
};

// The primary, from the mirror (primary space).
struct PrimarySide {
  bool synack = false;
  uint32_t isn = 0, synack_tsval = 0;
  uint32_t snd_nxt = 0;                  // highest seq+len it sent
  bool sent_seen = false;                // snd_nxt holds what it sent (its SYN-ACK, or a segment of a flow seen mid-stream)
  uint32_t rcv_nxt = 0;                  // highest ack it sent (client space)
  bool rst = false;
  uint64_t rst_us = 0;
  bool fin = false; uint32_t fin_seq = 0;  // its FIN, seen
  uint64_t fin_us = 0;                   // when its FIN was last seen (it repeats it until acknowledged)
  uint8_t wscale = 0;                    // the shift the client applies to its windows
  uint32_t tsval = 0;                    // latest TSval (the client's ts_recent)
  uint64_t last_data_us = 0;             // last data segment: the client's last byte
  // When its acknowledgements advanced, oldest first, from the first one
  // beyond what the replica acknowledged: the front says how long the
  // replica has lacked bytes the primary had (input_lag_us()).
  std::deque<AckStamp> acks;
  // Progress in bytes, 64-bit so multi-GiB transfers do not wrap (events):
  // client bytes it acknowledged, bytes it sent.
  uint64_t c2s = 0, s2c = 0;
};

// The replica, from the output queue (backup space).
struct ReplicaSide {
  bool synack = false;
  uint32_t isn = 0, synack_tsval = 0, tsval = 0;
  uint8_t wscale = 0;                    // effective shift of its windows
  uint32_t snd_nxt = 0;                  // highest seq+len it sent
  uint32_t rcv_nxt = 0;                  // highest ack it sent (client space)
  uint32_t window = 0;                   // its receive window, bytes (scaled)
  bool fin = false, rst = false;
  uint64_t rst_us = 0;
  uint32_t fin_seq = 0;
  // Its data the client has not acknowledged (backup space): what the
  // primary may never have sent. Resent at takeover so the client does not
  // wait for the replica's retransmission timer.
  StreamBuffer out;
  bool out_incomplete = false;           // some of it could not be kept
  uint64_t c2s = 0, s2c = 0;             // client bytes it acknowledged, bytes it sent
};

struct Flow {
  FlowKey key{};
  uint32_t id = 0;
  FlowState state = FlowState::kSynSeen;
  // Unprotected, and its connection is over (FINs both ways and the last ACK, or a reset): not
  // open any more, nothing to reset at a takeover.
  bool ended = false;
  // The replica still follows it: neither finished nor given up.
  bool replicated() const {
    return state == FlowState::kSynSeen || state == FlowState::kSynchronised || state == FlowState::kClosing;
  }
  uint64_t last_seen_us = 0;
  uint64_t handshake_us = 0;               // the replica's handshake began (again)
  uint8_t handshake_restarts = 0;

  // One struct per party, as conntrack's seen[2]: what the mirror shows of
  // the client and of the primary, what the output queue shows of the replica.
  ClientSide client;
  PrimarySide primary;
  ReplicaSide replica;

  // --- what we gave the replica ---
  uint32_t seq_delta = 0;                  // replica.isn - primary.isn
  uint32_t ts_delta = 0;                   // replica.synack_tsval - primary.synack_tsval
  uint32_t inj_nxt = 0;                    // next client byte to inject
  uint32_t ack_given = 0; bool ack_given_valid = false;  // last ack injected (backup space)
  uint32_t edge_given = 0;                 // ... and the right edge of its window
  bool fin_injected = false, rst_injected = false;
  // Marks of the client bytes not yet acknowledged by the replica, by start.
  std::deque<ClientMark> marks;
  // Causality holds client bytes while the replica, having taken all it was
  // given, sends nothing more (since; 0 none): it may have stopped short.
  uint64_t held_since_us = 0; uint32_t held_made = 0; bool stop_probed = false;
  bool ack_wanted = false;                 // the replica repeated its SYN-ACK: answer it
  uint64_t syn_sent_us = 0;                // last time the client's SYN was injected
  uint64_t last_progress_us = 0;           // last time replica.rcv_nxt moved or we injected fresh data
  uint8_t retries = 0;                     // attempts since the replica last progressed (backoff)
  uint64_t pending_capture_ns = 0;         // capture time of the oldest unserved packet
  bool reported_gap = false;
  uint64_t gap_suspect_us = 0; uint32_t gap_seq = 0;  // primary acked bytes we lack, since
  uint32_t gap_filled_to = 0;              // what we held of them when last some came (resupplied)
  uint64_t resupply_asked_us = 0;          // last request to the recorder for them
  bool lag_reported = false;               // a kLagging event went out; again once it caught up
  uint64_t drop_suspect_us = 0;            // capture dropped frames while active, since
  uint64_t closed_us = 0;
  OutputLag output_lag;                    // the replica's output behind the primary's, in time
  // Its replica's output against the primary's (--divergence, by its port).
  DivergencePolicy divergence = DivergencePolicy::kOff;
  OutputComparison compare;
  bool dirty = false;                      // queued for pump()
  // A new connection on the same key (the client reused the 4-tuple) while
  // the replica still holds this one: it waits, detached from the table,
  // its segments kept, until this one is finished on the replica; then it
  // takes this one's place and its SYN is injected (promote_waiting).
  std::unique_ptr<Flow> successor;

  // --- takeover (recovery_flow_phase.h, recovery_active_mode) ---
  TakeoverPhase phase = TakeoverPhase::kReplicating;
  bool active() const { return phase == TakeoverPhase::kActive; }  // translated for the rest of its life
  bool finishing() const { return phase == TakeoverPhase::kFinishing; }
  bool in_kernel = false;                  // in the kernel translator's map
  uint64_t continuable_us = 0;             // first seen continuable while finishing, 0 not yet
  uint32_t ts_out_delta = 0;               // replica TSval - this = the client's view
  uint32_t p_tsval_at_active = 0;          // echoes up to this are of the primary's clock
  uint64_t first_active_data_us = 0;       // first byte the client got from us
  // The replica's unacknowledged output (out) still to send to the client
  // from here (backup space), while queued in ConnectionTakeover.
  bool resending = false;
  uint32_t resend_next = 0;
};

class FlowTable {
 public:
  explicit FlowTable(uint32_t max_flows) : max_(max_flows) { map_.reserve(max_flows < 65536 ? max_flows : 65536); }

  Flow* find(const FlowKey& k) {
    auto it = map_.find(k);
    return it == map_.end() ? nullptr : it->second.get();
  }
  // nullptr when the table is full.
  Flow* insert(const FlowKey& k);
  // A flow with an id, not in the table (a waiting successor).
  std::unique_ptr<Flow> make_detached(const FlowKey& k);
  // Put f in k's place (the previous flow is destroyed). Not while iterating.
  void replace(const FlowKey& k, std::unique_ptr<Flow> f) { map_[k] = std::move(f); }
  void erase(const FlowKey& k) { map_.erase(k); }
  size_t size() const { return map_.size(); }
  uint32_t max() const { return max_; }

  template <typename Fn> void for_each(Fn fn) {
    for (auto& kv : map_) fn(*kv.second);
  }
  // Erase every flow for which pred returns true.
  template <typename Pred> void erase_if(Pred pred) {
    for (auto it = map_.begin(); it != map_.end();) {
      if (pred(*it->second)) it = map_.erase(it); else ++it;
    }
  }

 private:
  uint32_t max_;
  uint32_t next_id_ = 1;
  std::unordered_map<FlowKey, std::unique_ptr<Flow>, FlowKeyHash> map_;
};

}  // namespace t2cp
