// TCP sequence-space comparisons, exactly as the kernel's include/net/tcp.h
// defines them (conntrackd copies them verbatim). Every offset translation in
// the addon is written with these; nothing else compares sequence numbers.
#pragma once
#include <cstdint>

namespace t2cp {

// seq1 is strictly earlier than seq2 in modulo-2^32 sequence space.
static inline bool before(uint32_t seq1, uint32_t seq2) {
  return static_cast<int32_t>(seq1 - seq2) < 0;
}
static inline bool after(uint32_t seq2, uint32_t seq1) { return before(seq1, seq2); }

// seq2 <= seq1 <= seq3 in sequence space.
static inline bool between(uint32_t seq1, uint32_t seq2, uint32_t seq3) {
  return seq3 - seq2 >= seq1 - seq2;
}

// The later of two sequence numbers (used for "highest seen" trackers).
static inline uint32_t seq_max(uint32_t a, uint32_t b) { return after(a, b) ? a : b; }
static inline uint32_t seq_min(uint32_t a, uint32_t b) { return before(a, b) ? a : b; }

}  // namespace t2cp
