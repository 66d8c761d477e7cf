#include "output_compare.h"

#include <algorithm>
#include <cstring>

namespace t2cp {

namespace {

struct Crc32cTable {
  uint32_t t[256];
  Crc32cTable() {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
      t[i] = c;
    }
  }
};

uint32_t crc32c_portable(uint32_t crc, const uint8_t* p, size_t n) {
  static const Crc32cTable table;
  crc = ~crc;
  while (n--) crc = table.t[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(uint32_t crc, const uint8_t* p, size_t n) {
  uint64_t c = ~crc & 0xffffffffu;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = __builtin_ia32_crc32di(c, v);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
  return ~c32;
}
const bool kHaveSse42 = __builtin_cpu_supports("sse4.2");
#endif

}  // namespace

uint32_t crc32c(uint32_t crc, const uint8_t* data, size_t n) {
#if defined(__x86_64__)
  if (kHaveSse42) return crc32c_sse42(crc, data, n);
#endif
  return crc32c_portable(crc, data, n);
}

void OutputComparison::start(CompareSide side, uint32_t seq0) {
  Side& s = s_[idx(side)];
  if (s.started) return;
  s.started = true;
  s.seq0 = seq0;
}

OutputComparison::Result OutputComparison::add(CompareSide side, uint32_t seq, const uint8_t* data, uint32_t len,
                                               uint32_t present) {
  int me = idx(side);
  Side& s = s_[me];
  if (done_ || !s.started || !len) return Result::kOk;
  // Unwrap against the side's own next offset: a segment is within 2^31 of it.
  int64_t off = int64_t(s.next) + int32_t(seq - (s.seq0 + uint32_t(s.next)));
  int64_t end = off + len;
  if (end <= int64_t(s.next)) return Result::kOk;  // a retransmission
  if (!bytes_) {
    s.next = uint64_t(end);
    return check_length();
  }
  present = std::min(present, len);
  if (off < int64_t(s.next)) {
    uint32_t skip = uint32_t(int64_t(s.next) - off);
    data += std::min(skip, present);
    present = present > skip ? present - skip : 0;
  } else if (off > int64_t(s.next)) {
    Result r = feed(me, nullptr, uint64_t(off) - s.next);  // what never reached us
    if (r != Result::kOk) return r;
  }
  uint64_t rest = uint64_t(end) - s.next;
  Result r = feed(me, data, std::min<uint64_t>(present, rest));
  if (r == Result::kOk && rest > present) r = feed(me, nullptr, rest - present);
  return r == Result::kOk ? check_length() : r;
}

OutputComparison::Result OutputComparison::fin(CompareSide side, uint32_t seq) {
  int me = idx(side);
  Side& s = s_[me];
  if (done_ || !s.started || s.fin) return Result::kOk;
  int64_t off = int64_t(s.next) + int32_t(seq - (s.seq0 + uint32_t(s.next)));
  if (off < int64_t(s.next)) return Result::kOk;  // a FIN within what it sent: not where it ends
  if (off > int64_t(s.next)) {
    Result r = feed(me, nullptr, uint64_t(off) - s.next);
    if (r != Result::kOk) return r;
  }
  s.fin = true;
  s.fin_off = uint64_t(off);
  return check_length();
}

// Side me's next n bytes (data, or nullptr: a hole).
OutputComparison::Result OutputComparison::feed(int me, const uint8_t* data, uint64_t n) {
  Side& s = s_[me];
  Side& o = s_[1 - me];
  if (data && !s.history) s.history.reset(new uint8_t[kCompareHistoryBytes]);
  uint64_t pos = s.next;
  const uint64_t end = pos + n;
  while (pos < end) {
    const uint64_t block_end = (pos / kCompareBlockBytes + 1) * kCompareBlockBytes;
    const bool behind = lead_ == 1 - me && !cps_.empty();
    uint64_t stop = std::min(end, block_end);
    if (behind) stop = std::min(stop, cps_.front().off);
    const uint64_t k = stop - pos;
    if (data) {
      s.crc = crc32c(s.crc, data, k);
      remember(s, data, k);
      data += k;
    } else {
      s.tainted = true;
      unverified_ += k;
      s.history_from = stop;
    }
    pos = s.next = stop;
    if (behind && cps_.front().off == pos) {
      const Checkpoint cp = cps_.front();
      cps_.pop_front();
      if (!cp.tainted && !s.tainted) {
        if (cp.crc != s.crc) {
          uint64_t block_start = (pos - 1) / kCompareBlockBytes * kCompareBlockBytes;
          return differ(DivergenceKind::kBytes, std::max(matched_, block_start), pos);
        }
        compared_ += pos - matched_;
      }
      matched_ = pos;
      if (cps_.empty()) lead_ = -1;
    }
    if (pos > o.next) {
      // Ahead of the other side: leave checkpoints for it.
      if (pos == block_end || pos == end) push(me, pos, pos == block_end);
      if (done_) return Result::kGaveUp;
    }
    if (pos == block_end) {
      s.crc = 0;
      s.tainted = false;
    }
  }
  // Behind, short of a checkpoint that stands for a later segment end in
  // this same block (push keeps only the latest): the leader's bytes up to
  // here are still in its history. Compared now rather than when this side
  // reaches that checkpoint, which it may never do (it ends sooner: a
  // refused login, a shorter error).
  if (data && lead_ == 1 - me && !cps_.empty() && !cps_.front().block_end &&
      (cps_.front().off - 1) / kCompareBlockBytes == (pos - 1) / kCompareBlockBytes) {
    const uint64_t from = std::max(matched_, checked_);
    if (pos > from && history_holds(s, from, pos) && history_holds(o, from, pos)) {
      const uint64_t at = first_difference(from, pos);
      if (at < pos) return differ(DivergenceKind::kBytes, at, at + 1);
      checked_ = pos;
    }
  }
  return Result::kOk;
}

// The first offset in [from, to) where the two histories differ, or `to`.
// The caller made sure both hold the range.
uint64_t OutputComparison::first_difference(uint64_t from, uint64_t to) const {
  for (uint64_t i = from; i < to; i++) {
    if (history_at(s_[0], i) != history_at(s_[1], i)) return i;
  }
  return to;
}

void OutputComparison::push(int me, uint64_t off, bool block_end) {
  lead_ = me;
  const Side& s = s_[me];
  if (!cps_.empty()) {
    Checkpoint& back = cps_.back();
    // Only the latest segment end in a block is kept: the block's end, or a
    // later segment end, compares the same bytes and more.
    if (!back.block_end && (back.off - 1) / kCompareBlockBytes == (off - 1) / kCompareBlockBytes) {
      back = Checkpoint{off, s.crc, s.tainted, block_end};
      return;
    }
  }
  if (cps_.size() >= kMaxCheckpoints) {
    done_ = gave_up_ = true;
    cps_.clear();
    cps_.shrink_to_fit();
    return;
  }
  cps_.push_back(Checkpoint{off, s.crc, s.tainted, block_end});
}

OutputComparison::Result OutputComparison::check_length() {
  const Side& p = s_[0];
  const Side& r = s_[1];
  // One side ended where the other sent more, or both ended, elsewhere.
  if (p.fin && (r.next > p.fin_off || (r.fin && r.fin_off != p.fin_off)))
    return differ(DivergenceKind::kLength, std::min(p.fin_off, r.fin ? r.fin_off : r.next), 0);
  if (r.fin && p.next > r.fin_off) return differ(DivergenceKind::kLength, r.fin_off, 0);
  return Result::kOk;
}

// The ring keeps the last kCompareHistoryBytes: of a longer run, only its tail.
void OutputComparison::remember(Side& s, const uint8_t* data, uint64_t n) {
  uint64_t off = s.next;
  if (n > kCompareHistoryBytes) {
    data += n - kCompareHistoryBytes;
    off += n - kCompareHistoryBytes;
    n = kCompareHistoryBytes;
  }
  const size_t at = off & (kCompareHistoryBytes - 1);
  const size_t first = std::min<size_t>(n, kCompareHistoryBytes - at);
  std::memcpy(&s.history[at], data, first);
  std::memcpy(&s.history[0], data + first, n - first);
}

bool OutputComparison::history_holds(const Side& s, uint64_t from, uint64_t to) const {
  if (!s.history || to > s.next) return false;
  uint64_t oldest = std::max(s.history_from, s.next > kCompareHistoryBytes ? s.next - kCompareHistoryBytes : 0);
  return from >= oldest;
}

// The first difference lies in [from, to) for kBytes; for kLength `from` is
// where the shorter side ended.
OutputComparison::Result OutputComparison::differ(DivergenceKind kind, uint64_t from, uint64_t to) {
  done_ = true;
  cps_.clear();
  div_.kind = kind;
  div_.offset = from;
  div_.exact = kind == DivergenceKind::kLength;
  if (kind == DivergenceKind::kBytes && history_holds(s_[0], from, to) && history_holds(s_[1], from, to)) {
    const uint64_t at = first_difference(from, to);
    if (at < to) {
      div_.offset = at;
      div_.exact = true;
    }
  } else if (kind == DivergenceKind::kLength && bytes_) {
    // Before the shorter side's end, the bytes may already differ where no
    // checkpoint told it: the first difference is the one to report.
    const uint64_t start = std::max(matched_, checked_);
    if (from > start && history_holds(s_[0], start, from) && history_holds(s_[1], start, from)) {
      const uint64_t at = first_difference(start, from);
      if (at < from) {
        div_.kind = DivergenceKind::kBytes;
        div_.offset = at;
      }
    }
  }
  for (int side = 0; side < 2; side++) {
    const Side& s = s_[side];
    uint64_t last = std::min(div_.offset + kExcerptBytes, s.next);
    uint64_t n = last > div_.offset ? last - div_.offset : 0;
    div_.excerpt_held[side] = !n || history_holds(s, div_.offset, last);
    div_.excerpt_len[side] = div_.excerpt_held[side] ? uint8_t(n) : 0;
    for (uint64_t i = 0; i < div_.excerpt_len[side]; i++) div_.excerpt[side][i] = history_at(s, div_.offset + i);
  }
  return Result::kDiffers;
}

}  // namespace t2cp
