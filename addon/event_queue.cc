#include "event_queue.h"

#include <ctime>

namespace t2cp {

uint64_t realtime_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

uint64_t realtime_us() { return realtime_ns() / 1000u; }

template <typename T> static void put(uint8_t* p, size_t off, T v) { std::memcpy(p + off, &v, sizeof v); }

uint8_t* EventQueue::slot() {
  if (count_.load(std::memory_order_relaxed) >= kMaxPendingEvents) {
    counters_.add(k_events_dropped);
    return nullptr;
  }
  size_t off = buf_.size();
  buf_.resize(off + kEventSize);
  if (count_.fetch_add(1, std::memory_order_relaxed) == 0) oldest_us_.store(realtime_us(), std::memory_order_relaxed);
  return buf_.data() + off;
}

uint8_t* EventQueue::keyed_slot(EventType t, EventReason r, const FlowKey& k) {
  uint8_t* p = slot();
  if (!p) return nullptr;
  std::memset(p, 0, kEventSize);
  put<uint8_t>(p, 0, static_cast<uint8_t>(t));
  put<uint8_t>(p, 1, static_cast<uint8_t>(r));
  put<uint16_t>(p, 2, k.server_port);
  put<uint32_t>(p, 4, k.client_ip);
  put<uint16_t>(p, 8, k.client_port);
  put<uint64_t>(p, 16, realtime_us());
  return p;
}

void EventQueue::emit_key(EventType t, EventReason r, const FlowKey& k) {
  std::lock_guard<std::mutex> g(mu_);
  keyed_slot(t, r, k);
}

void EventQueue::emit_takeover(EventReason r, uint64_t detail) {
  std::lock_guard<std::mutex> g(mu_);
  uint8_t* p = slot();
  if (!p) return;
  std::memset(p, 0, kEventSize);
  urgent_.store(true, std::memory_order_relaxed);
  put<uint8_t>(p, 0, static_cast<uint8_t>(EventType::kTakeover));
  put<uint8_t>(p, 1, static_cast<uint8_t>(r));
  put<uint64_t>(p, 16, realtime_us());
  put<uint64_t>(p, 56, detail);
}

void EventQueue::emit(EventType t, EventReason r, const Flow& f, uint64_t detail) {
  std::lock_guard<std::mutex> g(mu_);
  uint8_t* p = slot();
  if (!p) return;
  put<uint8_t>(p, 0, static_cast<uint8_t>(t));
  put<uint8_t>(p, 1, static_cast<uint8_t>(r));
  put<uint16_t>(p, 2, f.key.server_port);
  put<uint32_t>(p, 4, f.key.client_ip);
  put<uint16_t>(p, 8, f.key.client_port);
  put<uint16_t>(p, 10, static_cast<uint16_t>(f.state));
  put<uint32_t>(p, 12, f.id);
  put<uint64_t>(p, 16, realtime_us());
  put<uint64_t>(p, 24, f.primary.c2s);
  put<uint64_t>(p, 32, f.replica.c2s);
  put<uint64_t>(p, 40, f.primary.s2c);
  put<uint64_t>(p, 48, f.replica.s2c);
  put<uint64_t>(p, 56, detail);
}

void EventQueue::emit_udp(EventType t, EventReason r, const FlowKey& k, const UdpAssociation& a, uint64_t detail) {
  constexpr uint16_t kUdpInHighByte = 17u << 8;
  std::lock_guard<std::mutex> g(mu_);
  uint8_t* p = keyed_slot(t, r, k);
  if (!p) return;
  put<uint16_t>(p, 10, kUdpInHighByte);
  put<uint32_t>(p, 12, a.id);
  put<uint64_t>(p, 32, a.client.bytes);
  put<uint64_t>(p, 48, a.replica.bytes);
  put<uint64_t>(p, 56, detail);
}

size_t EventQueue::take(std::vector<uint8_t>* out) {
  std::lock_guard<std::mutex> g(mu_);
  out->clear();
  out->swap(buf_);
  urgent_.store(false, std::memory_order_relaxed);
  return count_.exchange(0, std::memory_order_relaxed);
}

}  // namespace t2cp
