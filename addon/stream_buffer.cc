#include "stream_buffer.h"

#include <cstring>

namespace t2cp {

// Buffer capacity an idle flow may keep, bytes: one 64 KiB injection slice
// plus headroom, so request/response flows do not reallocate per request.
constexpr size_t kKeepIdleBytes = 256 * 1024;

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
  std::vector<uint8_t>().swap(buf_);
  start_ = end_ = 0;
  ooo_.clear();
  ooo_bytes_ = 0;
  account(held0);
}

void StreamBuffer::append(const uint8_t* data, uint32_t len) {
  if (end_ + len > buf_.size()) {
    // Compact first: live bytes move to the front, then grow geometrically.
    size_t live = end_ - start_;
    if (start_ > 0) {
      std::memmove(buf_.data(), buf_.data() + start_, live);
      start_ = 0;
      end_ = live;
    }
    if (end_ + len > buf_.size()) {
      size_t want = buf_.empty() ? 65536 : buf_.size();
      while (want < end_ + len) want *= 2;
      buf_.resize(want);
    }
  }
  std::memcpy(buf_.data() + end_, data, len);
  end_ += len;
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
  start_ += n;
  base_ = upto;
  if (start_ == end_) {
    start_ = end_ = 0;
    // An idle flow gives back a large buffer (bulk transfers grow it).
    if (buf_.size() > kKeepIdleBytes && ooo_.empty()) std::vector<uint8_t>().swap(buf_);
  }
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
  if (end_ == start_ && ooo_.empty() && after(upto, base_)) base_ = upto;
}

const uint8_t* StreamBuffer::at(uint32_t seq) const {
  if (before(seq, base_) || !before(seq, contig_end())) return nullptr;
  return buf_.data() + start_ + (seq - base_);
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
