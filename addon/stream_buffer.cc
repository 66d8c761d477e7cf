#include "stream_buffer.h"

#include <cstring>

namespace t2cp {

// Buffer capacity an idle flow may keep, bytes: one 64 KiB injection slice
// plus headroom, so request/response flows do not reallocate per request.
constexpr size_t kKeepIdleBytes = 256 * 1024;

void StreamBuffer::reset(uint32_t base_seq, uint32_t limit_bytes) {
  clear();
  base_ = base_seq;
  limit_ = limit_bytes;
}

void StreamBuffer::clear() {
  std::vector<uint8_t>().swap(buf_);
  start_ = end_ = 0;
  ooo_.clear();
  ooo_bytes_ = 0;
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
  if (held_bytes() + len > limit_) return AddResult::kFull;
  if (seq == end) {
    append(data, len);
    drain_ooo();
    return AddResult::kAppended;
  }
  // After a hole: keep aside, keyed by offset from base_. A later segment at
  // the same offset replaces a shorter one.
  uint32_t off = seq - base_;
  auto it = ooo_.find(off);
  if (it != ooo_.end()) {
    if (it->second.size() >= len) return AddResult::kDuplicate;
    ooo_bytes_ -= static_cast<uint32_t>(it->second.size());
  }
  ooo_[off].assign(data, data + len);
  ooo_bytes_ += len;
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
}

const uint8_t* StreamBuffer::at(uint32_t seq) const {
  if (before(seq, base_) || !before(seq, contig_end())) return nullptr;
  return buf_.data() + start_ + (seq - base_);
}

}  // namespace t2cp
