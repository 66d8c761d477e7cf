// Mapping between the primary's and the replica's views of one flow, written
// only with before/after/between (seq.h). Pure functions: unit-tested across
// the 2^32 wrap in test/native.
#pragma once
#include <cstdint>

#include "packet.h"
#include "seq.h"

namespace t2cp {

// The acknowledgement the replica may see for a client ack in primary space:
// shifted by delta = b_isn - p_isn, never beyond what the replica has sent
// (the kernel discards a segment, payload included, whose ack is beyond
// snd_nxt: TCP_ACK_UNSENT_DATA). *clamped tells whether it was held back.
inline uint32_t map_ack(uint32_t ack_p, uint32_t delta, uint32_t b_snd_nxt, bool* clamped) {
  uint32_t a = ack_p + delta;
  *clamped = after(a, b_snd_nxt);
  return *clamped ? b_snd_nxt : a;
}

// The client's window for the replica when its ack was held back (ack_given
// before ack_mapped): the same right edge, so a replica behind the primary
// may send as far as the client could take, not only a window beyond its own
// snd_nxt — else a lagging replica crawls a client window per round trip.
// Raw field in, raw field out (the client's shift), at most 65535.
inline uint16_t map_window(uint16_t window, uint8_t shift, uint32_t ack_mapped, uint32_t ack_given) {
  if (!after(ack_mapped, ack_given)) return window;
  uint64_t w = uint64_t(window) + ((ack_mapped - ack_given) >> shift);
  return w > 65535 ? 65535 : uint16_t(w);
}

// The TSecr the replica may see for a client's echo of a primary TSval: the
// primary's clock shifted to the replica's by the SYN-ACK pair, kept within
// [replica's SYN-ACK TSval, replica's latest TSval] so it never echoes a
// value the replica did not send yet (nor one from before the connection).
inline uint32_t map_tsecr(uint32_t tsecr_p, uint32_t ts_delta, uint32_t b_first, uint32_t b_latest) {
  uint32_t t = tsecr_p + ts_delta;
  if (after(t, b_latest)) return b_latest;
  if (before(t, b_first)) return b_first;
  return t;
}

// SACK blocks of the client (primary space) mapped to the replica's space.
// A block is kept only if it lies above the cumulative ack and within what
// the replica has sent; returns how many were written to out.
inline int map_sack(const SackBlock* in, int n, uint32_t delta, uint32_t b_ack, uint32_t b_snd_nxt,
                    SackBlock* out, int* dropped) {
  int k = 0;
  *dropped = 0;
  for (int i = 0; i < n; i++) {
    uint32_t l = in[i].left + delta, r = in[i].right + delta;
    if (after(r, l) && after(l, b_ack) && !after(r, b_snd_nxt)) out[k++] = {l, r};
    else (*dropped)++;
  }
  return k;
}

}  // namespace t2cp
