// The client's byte stream of one flow, as far as the replica still needs it.
//
// Bytes are kept from `base` (the first byte the replica has not acknowledged)
// to `contig_end` (the end of the in-order data captured so far) in fixed
// chunks of kChunkBytes, taken from the engine's MemoryPool and given back as
// the replica acknowledges them: a flow that holds hundreds of megabytes
// (a replica far behind) never reallocates or copies what it holds, so no
// other flow waits behind it. Data captured after a hole waits in `ooo_`
// until the hole fills.
//
// Thread: engine thread only. Sequence numbers are the client's own.
#pragma once
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <utility>
#include <vector>

#include "packet.h"
#include "seq.h"

namespace t2cp {

// One chunk of a stream, bytes. At least the largest injected segment, so a
// segment lies in at most two chunks.
constexpr uint32_t kChunkBytes = 64 * 1024;

// Bytes held by all the flows' buffers together, against one budget, so many
// lagging flows cannot take more memory than configured (--memory); and the
// chunks they hold them in. Chunks come from slabs mapped already populated:
// memory touched for the first time costs a page fault per 4 KiB, and on
// virtual machines each fault is an exit to the hypervisor (measured here:
// 256 MiB faulted in 0.7-0.9 s, mapped populated in 64 ms). Chunks given
// back are kept for reuse up to kSpareKeepBytes; beyond that, slabs with no
// chunk in use go back to the system.
class MemoryPool {
 public:
  static constexpr uint32_t kSlabChunks = 32;               // 2 MiB slabs
  static constexpr uint64_t kSpareKeepBytes = 64ull << 20;

  MemoryPool() = default;
  MemoryPool(const MemoryPool&) = delete;
  MemoryPool& operator=(const MemoryPool&) = delete;
  ~MemoryPool();

  uint64_t used = 0;   // bytes held
  uint64_t limit = 0;  // --memory

  // nullptr when the system has no memory for a new slab.
  uint8_t* take_chunk();
  void give_chunk(uint8_t* c);
  // Chunks mapped, in use or spare (for the tests).
  size_t chunks_mapped() const { return slabs_.size() * kSlabChunks; }
  size_t chunks_spare() const { return spare_.size(); }

 private:
  void trim();
  struct Slab { uint8_t* base; uint32_t in_use; };
  std::map<uintptr_t, Slab> slabs_;  // by base address
  std::vector<uint8_t*> spare_;
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
  // `seq` lies in [base, contig_end).
  bool holds(uint32_t seq) const { return !before(seq, base_) && before(seq, contig_end()); }
  // Copies [seq, seq+len) to out, as far as it is held in order; returns the
  // bytes copied (0 if seq is not held).
  uint32_t copy(uint32_t seq, uint32_t len, uint8_t* out) const;
  // Points sp's payload at [seq, seq+len) (len <= kChunkBytes): one piece, or
  // two where it spans chunks. False, sp untouched, unless all of it is held
  // in order.
  bool payload(uint32_t seq, uint32_t len, SegmentSpec* sp) const;

  uint32_t base() const { return base_; }
  uint32_t contig_end() const { return base_ + len_; }
  uint32_t held_bytes() const { return len_ + ooo_bytes_; }
  bool has_out_of_order() const { return !ooo_.empty(); }
  // First sequence number after the hole, when out-of-order data waits.
  uint32_t ooo_first() const { return ooo_.empty() ? contig_end() : base_ + ooo_.begin()->first; }
  // The holes in [contig_end, upto) — what is missing before upto — in
  // order, at most max of them: [first, end) each.
  std::vector<std::pair<uint32_t, uint32_t>> holes(uint32_t upto, size_t max) const;
  void clear();

 private:
  // Chunks enough for len more in-order bytes; false (nothing taken) if the
  // pool has none.
  bool reserve(uint32_t len);
  void append(const uint8_t* data, uint32_t len);
  // The byte at offset off from base_, and how many follow it in its chunk.
  uint8_t* byte_at(uint32_t off, uint32_t* run) const;
  MemoryPool& chunks() const;
  template <typename Fn> void for_each_uncovered(uint32_t off, uint32_t len, Fn fn) const;
  void drain_ooo();
  // Adds what held_bytes() changed by since `before` to the pool.
  void account(uint32_t held0);

  MemoryPool* pool_ = nullptr;
  uint32_t base_ = 0;
  uint32_t limit_ = 0;
  std::deque<uint8_t*> chunks_;
  uint32_t head_ = 0;  // offset of base_ in chunks_.front()
  uint32_t len_ = 0;   // in-order bytes from base_
  // Out-of-order segments keyed by an offset from base_ (not by raw sequence
  // number: std::map ordering must not break at the 2^32 wrap). They never
  // overlap each other (add() stores only uncovered parts).
  std::map<uint32_t, std::vector<uint8_t>> ooo_;
  uint32_t ooo_bytes_ = 0;
};

}  // namespace t2cp
