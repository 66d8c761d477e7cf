// Event records waiting for JavaScript (layout in events.h). The engine
// thread appends; the JS thread takes the whole batch at once. Bounded: past
// kMaxPendingEvents records, new ones are dropped and counted.
//
// Thread: emit*() engine thread; take() any thread (normally JS via the
// engine's flush). The mutex is held for a memcpy, never across I/O.
#pragma once
#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

#include "counters.h"
#include "events.h"
#include "flow_table.h"
#include "udp_flows.h"

namespace t2cp {

// Records, not bytes: one minute of a 10k conn/s burst at 3 events per flow
// would be 1.8M; JS drains every few ms, so this only bounds a stalled loop.
constexpr size_t kMaxPendingEvents = 1u << 20;

// CLOCK_REALTIME, the clock of the capture timestamps (latency samples).
uint64_t realtime_ns();
uint64_t realtime_us();

class EventQueue {
 public:
  explicit EventQueue(Counters& c) : counters_(c) {}

  void emit(EventType t, EventReason r, const Flow& f, uint64_t detail = 0);
  // A UDP association's (byte 11, the state's high byte: 17, the IP protocol;
  // c2s: the client's datagram bytes given to the replica, s2c: the replica's).
  void emit_udp(EventType t, EventReason r, const FlowKey& k, const UdpAssociation& a, uint64_t detail = 0);
  // Failure recovery progress: not about one flow.
  void emit_takeover(EventReason r, uint64_t detail);
  // For refusals where no Flow exists (table full).
  void emit_key(EventType t, EventReason r, const FlowKey& k);

  // Swap the pending records out; returns how many.
  size_t take(std::vector<uint8_t>* out);
  size_t pending() const { return count_.load(std::memory_order_relaxed); }
  // A takeover event waits: deliver without the batching delay.
  bool urgent() const { return urgent_.load(std::memory_order_relaxed); }
  uint64_t oldest_us() const { return oldest_us_.load(std::memory_order_relaxed); }

 private:
  uint8_t* slot();
  // A new event's slot, zeroed, with its type, reason, key and time; nullptr when full. mu_ held.
  uint8_t* keyed_slot(EventType t, EventReason r, const FlowKey& k);
  Counters& counters_;
  std::mutex mu_;
  std::vector<uint8_t> buf_;
  std::atomic<size_t> count_{0};
  std::atomic<uint64_t> oldest_us_{0};
  std::atomic<bool> urgent_{false};
};

}  // namespace t2cp
