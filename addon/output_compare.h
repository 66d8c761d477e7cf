// Output comparison: what a flow's replica sends against what the primary
// sent, at the same stream offsets, while both arrive (the primary's output
// from the mirror, the replica's from the output queue). A replica whose
// bytes differ cannot continue its client's connection: the client holds the
// primary's bytes, and the replica's service acts on its own.
//
// Bounded: neither side's bytes are kept beyond a short history. Each side
// hashes its stream (CRC32C) in aligned blocks of kCompareBlockBytes; the side
// ahead leaves *checkpoints* (offset, hash of its block up to that offset) at
// every block end and at the end of its latest segment in a block; the side
// behind, passing the same offsets, compares its own hash there. So a short
// answer (a session token that never fills a block) is compared as soon as
// both sides sent it, and a bulk stream costs one checkpoint per block of
// lead. At a mismatch the difference lies after the last matching offset;
// each side's last kCompareHistoryBytes locate the first differing byte and
// give the excerpts, when the side ahead still holds them.
//
// Offsets count stream bytes from 0 (the byte after the SYN) in 64 bits: a
// side's sequence numbers are unwrapped against its own next offset, so
// multi-GiB streams compare across the 2^32 wrap. Bytes before a side's next
// offset are retransmissions (ignored); bytes beyond it leave a hole (the
// capture lost them, or the copy was cut): the blocks a hole touches are not
// compared, and counted as such.
//
// Thread: engine thread only.
#pragma once
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>

namespace t2cp {

// What a divergence means for a flow, per service port (--divergence).
enum class DivergencePolicy : uint8_t {
  kOff = 0,     // not compared; the primary's output is not even captured
  kLength = 1,  // only a different length is a divergence (same-length bytes may differ)
  kStrict = 2,  // any differing byte
};

enum class DivergenceKind : uint8_t {
  kNone = 0,
  kBytes = 1,   // same offset, different bytes
  kLength = 2,  // one side ended (FIN) where the other sent more, or ended elsewhere
};

constexpr uint32_t kCompareBlockBytes = 1024;
constexpr uint32_t kCompareHistoryBytes = 4096;  // per side; a power of two
// Checkpoints of the side ahead: one per block of lead at most, so this many
// allow a lead of 64 MiB. Beyond it the flow's comparison gives up (counted).
constexpr size_t kMaxCheckpoints = 65536;
constexpr uint32_t kExcerptBytes = 32;

enum class CompareSide : uint8_t { kPrimary = 0, kReplica = 1 };

struct Divergence {
  DivergenceKind kind = DivergenceKind::kNone;
  uint64_t offset = 0;        // first differing byte (or where one side ended)
  bool exact = false;         // offset is the byte itself, not the start of the range holding it
  uint32_t within = 0;        // UDP: offset is a datagram's number, this the byte in it (excerpts from there)
  uint8_t excerpt[2][kExcerptBytes];  // [CompareSide]: bytes from offset
  uint8_t excerpt_len[2] = {0, 0};
  bool excerpt_held[2] = {false, false};
};

class OutputComparison {
 public:
  enum class Result : uint8_t {
    kOk,        // nothing differs so far
    kDiffers,   // a difference, the first one: divergence() says where
    kGaveUp,    // the side ahead left more checkpoints than kept: no longer compared
  };

  // Under kLength only where each side ends is compared, not its bytes.
  void set_policy(DivergencePolicy p) { bytes_ = p == DivergencePolicy::kStrict; }
  // The side's sequence number of stream offset 0 (ISN + 1). Before it,
  // add() and fin() of that side are ignored.
  void start(CompareSide side, uint32_t seq0);
  bool started(CompareSide side) const { return s_[idx(side)].started; }

  // Bytes [seq, seq + len) of a side; the first `present` of them are at
  // data (a cut copy holds fewer). Returns kDiffers once, at the first
  // difference (comparison then ends: the flow is what it is).
  Result add(CompareSide side, uint32_t seq, const uint8_t* data, uint32_t len, uint32_t present);
  // The side's FIN, at sequence number seq.
  Result fin(CompareSide side, uint32_t seq);

  bool ended() const { return done_; }
  bool gave_up() const { return gave_up_; }
  const Divergence& divergence() const { return div_; }
  // Bytes both sides sent and this compared; bytes not comparable (holes).
  uint64_t compared_bytes() const { return compared_; }
  uint64_t unverified_bytes() const { return unverified_; }
  size_t checkpoints() const { return cps_.size(); }

 private:
  struct Side {
    bool started = false;
    uint32_t seq0 = 0;
    uint64_t next = 0;          // next offset expected
    uint32_t crc = 0;           // hash of its current block so far
    bool tainted = false;       // its current block has a hole
    bool fin = false;
    uint64_t fin_off = 0;
    uint64_t history_from = 0;  // its history holds no byte before this (a hole)
    std::unique_ptr<uint8_t[]> history;  // kCompareHistoryBytes ring, by offset
  };
  struct Checkpoint {
    uint64_t off;
    uint32_t crc;
    bool tainted;
    bool block_end;
  };
  static int idx(CompareSide s) { return static_cast<int>(s); }

  Result feed(int me, const uint8_t* data, uint64_t n);
  Result check_length();
  Result differ(DivergenceKind kind, uint64_t from, uint64_t to);
  uint64_t first_difference(uint64_t from, uint64_t to) const;
  void remember(Side& s, const uint8_t* data, uint64_t n);
  bool history_holds(const Side& s, uint64_t from, uint64_t to) const;
  uint8_t history_at(const Side& s, uint64_t off) const { return s.history[off & (kCompareHistoryBytes - 1)]; }
  void push(int me, uint64_t off, bool block_end);

  Side s_[2];
  // Checkpoints of side lead_ (offsets beyond the other side's next), oldest first.
  std::deque<Checkpoint> cps_;
  int lead_ = -1;
  bool bytes_ = true;
  bool done_ = false, gave_up_ = false;
  uint64_t matched_ = 0;      // both sides agree up to here (or could not tell: a hole)
  uint64_t checked_ = 0;      // compared byte by byte from the histories up to here (within a block)
  uint64_t compared_ = 0, unverified_ = 0;
  Divergence div_;
};

// CRC32C (Castagnoli) of data, continuing from crc; the SSE4.2 instruction
// where the CPU has it.
uint32_t crc32c(uint32_t crc, const uint8_t* data, size_t n);

}  // namespace t2cp
