// The client's byte stream of one flow, as far as the replica still needs it.
//
// Bytes are kept from `base` (the first byte the replica has not acknowledged)
// to `contig_end` (the end of the in-order data captured so far) in one linear
// buffer, so a segment to inject is always one contiguous slice. Data captured
// after a hole waits in `ooo_` until the hole fills. release() drops what the
// replica acknowledged; the buffer compacts when half of it is dead space.
//
// Thread: engine thread only. Sequence numbers are the client's own.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "seq.h"

namespace t2cp {

// Bytes held by all the flows' buffers together, against one budget, so many
// lagging flows cannot take more memory than configured (--memory).
struct MemoryPool {
  uint64_t used = 0;
  uint64_t limit = 0;
};

class StreamBuffer {
 public:
  enum class AddResult { kAppended, kDuplicate, kOutOfOrder, kFull };

  StreamBuffer() = default;
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;
  ~StreamBuffer() { clear(); }  // gives its bytes back to the pool

  // limit_bytes bounds this flow; pool, when given, bounds all flows.
  void reset(uint32_t base_seq, uint32_t limit_bytes, MemoryPool* pool = nullptr);
  // Store [seq, seq+len). Parts already held are ignored (duplicates).
  AddResult add(uint32_t seq, const uint8_t* data, uint32_t len);
  // Forget everything before `upto` (the replica acknowledged it).
  void release(uint32_t upto);
  // release(upto), and when nothing is held move the start to upto even
  // beyond what was held: bytes before it will never be wanted.
  void forget_before(uint32_t upto);
  // Pointer to the byte at `seq` if it lies in [base, contig_end), else null.
  const uint8_t* at(uint32_t seq) const;

  uint32_t base() const { return base_; }
  uint32_t contig_end() const { return base_ + static_cast<uint32_t>(end_ - start_); }
  uint32_t held_bytes() const { return static_cast<uint32_t>(end_ - start_) + ooo_bytes_; }
  bool has_out_of_order() const { return !ooo_.empty(); }
  // First sequence number after the hole, when out-of-order data waits.
  uint32_t ooo_first() const { return ooo_.empty() ? contig_end() : base_ + ooo_.begin()->first; }
  // The holes in [contig_end, upto) — what is missing before upto — in
  // order, at most max of them: [first, end) each.
  std::vector<std::pair<uint32_t, uint32_t>> holes(uint32_t upto, size_t max) const;
  void clear();

 private:
  void append(const uint8_t* data, uint32_t len);
  template <typename Fn> void for_each_uncovered(uint32_t off, uint32_t len, Fn fn) const;
  void drain_ooo();
  // Adds what held_bytes() changed by since `before` to the pool.
  void account(uint32_t held0);

  MemoryPool* pool_ = nullptr;
  uint32_t base_ = 0;
  uint32_t limit_ = 0;
  std::vector<uint8_t> buf_;
  size_t start_ = 0, end_ = 0;  // live bytes are buf_[start_, end_)
  // Out-of-order segments keyed by an offset from base_ (not by raw sequence
  // number: std::map ordering must not break at the 2^32 wrap). They never
  // overlap each other (add() stores only uncovered parts).
  std::map<uint32_t, std::vector<uint8_t>> ooo_;
  uint32_t ooo_bytes_ = 0;
};

}  // namespace t2cp
