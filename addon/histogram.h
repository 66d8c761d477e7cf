// Timing histograms the engine fills and JavaScript reads (binding_engine.cc).
#pragma once
#include <atomic>
#include <cstdint>

namespace t2cp {

// A timing histogram: Buckets buckets WidthNs wide, the last one holding
// everything slower, and the maximum. Atomics: read from JavaScript.
template <uint64_t WidthNs, int Buckets>
struct Histogram {
  static constexpr uint64_t kWidthNs = WidthNs;
  static constexpr int kBuckets = Buckets;
  std::atomic<uint64_t> bucket[Buckets] = {};
  std::atomic<uint64_t> max_ns{0};
  void add(uint64_t ns) {
    uint64_t i = ns / WidthNs;
    bucket[i < uint64_t(Buckets) ? i : Buckets - 1].fetch_add(1, std::memory_order_relaxed);
    if (ns > max_ns.load(std::memory_order_relaxed)) max_ns.store(ns, std::memory_order_relaxed);
  }
};

}  // namespace t2cp
