// How far a replica's output runs behind the primary's, in time: when the
// primary's output reached a stream offset (the capture time of its frame)
// and when the replica's reached the same offset (the engine reading it from
// the output queue, so the queue's own delay counts). A replica that gets
// there first scores 0. A few offsets are followed at a time per flow: a
// bulk flow is sampled, a request/reply flow timed at every reply.
//
// Thread: engine thread (OutputLag); the histograms' atomics are read by JS.
#pragma once
#include <cstdint>

#include "histogram.h"

namespace t2cp {

// 0.5 ms buckets, up to 4.1 s.
using LagHistogram = Histogram<500000, 8192>;

class OutputLag {
 public:
  // Samples go to h (its flow's service port); none while it is null.
  void attach(LagHistogram* h) {
    h_ = h;
    count_ = 0;
  }
  // The primary's output now ends at `offset` (data bytes since the
  // handshake), seen at `at_ns`; the replica's ends at `made`.
  void primary_sent(uint64_t offset, uint64_t at_ns, uint64_t made) {
    if (!h_) return;
    if (made >= offset) {
      h_->add(0);
      return;
    }
    if (count_ == kSlots) return;
    slot_[(head_ + count_) % kSlots] = {offset, at_ns};
    count_++;
  }
  // The replica's output now ends at `made`.
  void replica_sent(uint64_t made, uint64_t now_ns) {
    while (count_ && slot_[head_].offset <= made) {
      h_->add(now_ns > slot_[head_].at_ns ? now_ns - slot_[head_].at_ns : 0);
      head_ = uint8_t((head_ + 1) % kSlots);
      count_--;
    }
  }

 private:
  static constexpr uint8_t kSlots = 4;
  struct Slot { uint64_t offset, at_ns; };
  LagHistogram* h_ = nullptr;
  Slot slot_[kSlots] = {};
  uint8_t head_ = 0, count_ = 0;
};

}  // namespace t2cp
