#include "stream_buffer.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>

namespace t2cp {

MemoryPool::~MemoryPool() {
  for (auto& kv : slabs_) munmap(kv.second.base, size_t(kSlabChunks) * kChunkBytes);
}

uint8_t* MemoryPool::take_chunk() {
  if (spare_.empty()) {
    size_t bytes = size_t(kSlabChunks) * kChunkBytes;
    void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    uint8_t* base = static_cast<uint8_t*>(m);
    slabs_.emplace(reinterpret_cast<uintptr_t>(base), Slab{base, 0});
    // Taken from the front first: the slab's chunks in address order.
    for (uint32_t i = kSlabChunks; i-- > 0;) spare_.push_back(base + size_t(i) * kChunkBytes);
  }
  uint8_t* c = spare_.back();
  spare_.pop_back();
  auto it = std::prev(slabs_.upper_bound(reinterpret_cast<uintptr_t>(c)));
  it->second.in_use++;
  return c;
}

void MemoryPool::give_chunk(uint8_t* c) {
  auto it = std::prev(slabs_.upper_bound(reinterpret_cast<uintptr_t>(c)));
  it->second.in_use--;
  spare_.push_back(c);
  if (spare_.size() * uint64_t(kChunkBytes) > 2 * kSpareKeepBytes) trim();
}

void MemoryPool::trim() {
  // Slabs with no chunk in use go, until what is spare fits the keep.
  size_t spare_bytes = spare_.size() * size_t(kChunkBytes);
  std::vector<uintptr_t> gone;
  for (auto& [addr, slab] : slabs_) {
    if (spare_bytes <= kSpareKeepBytes) break;
    if (slab.in_use) continue;
    gone.push_back(addr);
    spare_bytes -= size_t(kSlabChunks) * kChunkBytes;
  }
  if (gone.empty()) return;
  std::sort(gone.begin(), gone.end());
  auto in_gone = [&](uint8_t* c) {
    auto g = std::upper_bound(gone.begin(), gone.end(), reinterpret_cast<uintptr_t>(c));
    return g != gone.begin() && reinterpret_cast<uintptr_t>(c) < *std::prev(g) + size_t(kSlabChunks) * kChunkBytes;
  };
  spare_.erase(std::remove_if(spare_.begin(), spare_.end(), in_gone), spare_.end());
  for (uintptr_t a : gone) {
    munmap(slabs_[a].base, size_t(kSlabChunks) * kChunkBytes);
    slabs_.erase(a);
  }
}

// Buffers reset without a pool (tests) take their chunks here.
MemoryPool& StreamBuffer::chunks() const {
  static MemoryPool unbounded;
  return pool_ ? *pool_ : unbounded;
}

void StreamBuffer::reset(uint32_t base_seq, uint32_t limit_bytes, MemoryPool* pool) {
  clear();
  base_ = base_seq;
  limit_ = limit_bytes;
  pool_ = pool;
}

void StreamBuffer::account(uint32_t held0) {
  if (pool_) pool_->used = pool_->used + held_bytes() - held0;
}

void StreamBuffer::clear() {
  uint32_t held0 = held_bytes();
  for (uint8_t* c : chunks_) chunks().give_chunk(c);
  chunks_.clear();
  head_ = len_ = 0;
  ooo_.clear();
  ooo_bytes_ = 0;
  account(held0);
}

bool StreamBuffer::reserve(uint32_t len) {
  uint64_t room = uint64_t(chunks_.size()) * kChunkBytes - head_ - len_;
  size_t taken = 0;
  for (; room < len; room += kChunkBytes, taken++) {
    uint8_t* c = chunks().take_chunk();
    if (!c) {
      for (; taken > 0; taken--) {
        chunks().give_chunk(chunks_.back());
        chunks_.pop_back();
      }
      return false;
    }
    chunks_.push_back(c);
  }
  return true;
}

void StreamBuffer::append(const uint8_t* data, uint32_t len) {
  while (len > 0) {
    uint32_t run;
    uint8_t* dst = byte_at(len_, &run);
    uint32_t n = len < run ? len : run;
    std::memcpy(dst, data, n);
    len_ += n;
    data += n;
    len -= n;
  }
}

uint8_t* StreamBuffer::byte_at(uint32_t off, uint32_t* run) const {
  size_t pos = size_t(head_) + off;
  uint32_t in = uint32_t(pos % kChunkBytes);
  *run = kChunkBytes - in;
  return chunks_[pos / kChunkBytes] + in;
}

// Calls fn(offset, length) for every part of [off, off+len) (offsets from
// base_) that no out-of-order segment covers yet, in order.
template <typename Fn> void StreamBuffer::for_each_uncovered(uint32_t off, uint32_t len, Fn fn) const {
  uint32_t cur = off, end = off + len;
  auto it = ooo_.upper_bound(off);
  if (it != ooo_.begin()) --it;  // the segment starting at or before off may cover its start
  for (; it != ooo_.end() && it->first < end; ++it) {
    uint32_t s = it->first, e = s + static_cast<uint32_t>(it->second.size());
    if (e <= cur) continue;
    if (s > cur) fn(cur, s - cur);
    if (e > cur) cur = e;
  }
  if (cur < end) fn(cur, end - cur);
}

StreamBuffer::AddResult StreamBuffer::add(uint32_t seq, const uint8_t* data, uint32_t len) {
  uint32_t end = contig_end();
  uint32_t seg_end = seq + len;
  if (len == 0 || !after(seg_end, end)) return AddResult::kDuplicate;
  if (before(seq, end)) {  // overlaps what we hold: keep only the new tail
    uint32_t skip = end - seq;
    data += skip;
    len -= skip;
    seq = end;
  }
  // Only bytes held nowhere yet count against the limit, so a retransmission
  // of data already waiting out of order is a duplicate, never "full".
  uint32_t off = seq - base_;
  uint32_t fresh = 0;
  for_each_uncovered(off, len, [&](uint32_t, uint32_t n) { fresh += n; });
  if (fresh == 0) return AddResult::kDuplicate;
  if (held_bytes() + fresh > limit_ || (pool_ && pool_->used + fresh > pool_->limit)) return AddResult::kFull;
  uint32_t held0 = held_bytes();
  if (seq == end) {
    // Room for the segment and for what waited out of order behind it.
    uint32_t after_it = ooo_.empty() ? 0 : ooo_bytes_;
    if (!reserve(len + after_it)) return AddResult::kFull;
    append(data, len);
    drain_ooo();  // drops the out-of-order copies the append covered
    account(held0);
    return AddResult::kAppended;
  }
  // After a hole: keep aside only the uncovered parts, so out-of-order
  // segments never overlap and held_bytes() counts each byte once.
  struct Piece { uint32_t off, len; };
  std::vector<Piece> pieces;
  for_each_uncovered(off, len, [&](uint32_t o, uint32_t n) { pieces.push_back({o, n}); });
  for (const Piece& p : pieces) {
    const uint8_t* src = data + (p.off - off);
    ooo_.emplace(p.off, std::vector<uint8_t>(src, src + p.len));
    ooo_bytes_ += p.len;
  }
  account(held0);
  return AddResult::kOutOfOrder;
}

void StreamBuffer::drain_ooo() {
  while (!ooo_.empty()) {
    auto it = ooo_.begin();
    uint32_t seq = base_ + it->first;
    uint32_t len = static_cast<uint32_t>(it->second.size());
    uint32_t end = contig_end();
    if (after(seq, end)) return;  // the hole is still open
    ooo_bytes_ -= len;
    std::vector<uint8_t> seg = std::move(it->second);
    ooo_.erase(it);
    uint32_t seg_end = seq + len;
    if (after(seg_end, end)) {
      uint32_t skip = end - seq;
      append(seg.data() + skip, len - skip);
    }
  }
}

void StreamBuffer::release(uint32_t upto) {
  uint32_t end = contig_end();
  if (!after(upto, base_)) return;
  if (after(upto, end)) upto = end;  // cannot release what we never held
  uint32_t held0 = held_bytes();
  uint32_t n = upto - base_;
  head_ += n;
  len_ -= n;
  base_ = upto;
  // Chunks the replica acknowledged go back to the pool; all of them once
  // nothing is held in order (an idle flow holds no memory).
  while (!chunks_.empty() && (head_ >= kChunkBytes || len_ == 0)) {
    chunks().give_chunk(chunks_.front());
    chunks_.pop_front();
    head_ = head_ >= kChunkBytes ? head_ - kChunkBytes : 0;
  }
  if (chunks_.empty()) head_ = 0;
  // Out-of-order keys are offsets from base_: shift them.
  if (!ooo_.empty() && n > 0) {
    std::map<uint32_t, std::vector<uint8_t>> shifted;
    for (auto& kv : ooo_) shifted.emplace(kv.first - n, std::move(kv.second));
    ooo_.swap(shifted);
  }
  account(held0);
}

void StreamBuffer::forget_before(uint32_t upto) {
  release(upto);
  if (len_ == 0 && ooo_.empty() && after(upto, base_)) base_ = upto;
}

uint32_t StreamBuffer::copy(uint32_t seq, uint32_t len, uint8_t* out) const {
  if (!holds(seq)) return 0;
  uint32_t off = seq - base_;
  if (len > len_ - off) len = len_ - off;
  for (uint32_t done = 0; done < len;) {
    uint32_t run;
    const uint8_t* p = byte_at(off + done, &run);
    uint32_t n = len - done < run ? len - done : run;
    std::memcpy(out + done, p, n);
    done += n;
  }
  return len;
}

bool StreamBuffer::payload(uint32_t seq, uint32_t len, SegmentSpec* sp) const {
  if (len == 0 || len > kChunkBytes || !holds(seq) || len > len_ - (seq - base_)) return false;
  uint32_t run;
  const uint8_t* p = byte_at(seq - base_, &run);
  sp->payload = p;
  sp->payload_len = len < run ? len : run;
  sp->payload2 = len > run ? byte_at(seq - base_ + run, &run) : nullptr;
  sp->payload2_len = len - sp->payload_len;
  return true;
}

std::vector<std::pair<uint32_t, uint32_t>> StreamBuffer::holes(uint32_t upto, size_t max) const {
  std::vector<std::pair<uint32_t, uint32_t>> out;
  uint32_t at = contig_end();
  for (const auto& [off, bytes] : ooo_) {
    if (out.size() >= max || !before(at, upto)) return out;
    uint32_t first = base_ + off, end = first + uint32_t(bytes.size());
    if (after(first, at)) out.emplace_back(at, before(first, upto) ? first : upto);
    if (after(end, at)) at = end;
  }
  if (out.size() < max && before(at, upto)) out.emplace_back(at, upto);
  return out;
}

}  // namespace t2cp
