// Outgoing traffic processor (paper 001): everything the replica sends on a
// replicated flow arrives here through NFQUEUE (outgoing_nfqueue) and is
// dropped after we learn from it: its SYN-ACK (ISN, timestamp, window scale),
// how far it has sent (snd_nxt), how far it has received (its ack) and its
// receive window. That is what lets the incoming processor keep the replica
// in step. Data the client has not acknowledged yet is kept (Flow::out) for
// the takeover. While a takeover catches up, a flow still finishing keeps
// this path; after it, the queue carries what active mode translates.
//
// Thread: engine thread only.
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine_context.h"
#include "incoming_processor.h"
#include "outgoing_nfqueue.h"
#include "recovery_active_mode.h"

namespace t2cp {

class OutgoingProcessor {
 public:
  OutgoingProcessor(EngineContext& ctx, IncomingProcessor& in, ActiveMode& active)
      : ctx_(ctx), in_(in), active_(active) {}

  // One queued packet: IPv4 header onward, `copied` bytes of it present.
  NfQueue::Verdict on_packet(uint8_t* ip, size_t copied);
  static NfQueue::Verdict nfqueue_callback(void* self, uint8_t* ip, size_t copied) {
    return static_cast<OutgoingProcessor*>(self)->on_packet(ip, copied);
  }

 private:
  void on_replica_packet(const uint8_t* ip, size_t copied);
  NfQueue::Verdict on_catching_up(uint8_t* ip, size_t copied);
  void keep_unacknowledged(Flow& f, const Segment& s, size_t copied);

  EngineContext& ctx_;
  IncomingProcessor& in_;
  ActiveMode& active_;
};

}  // namespace t2cp
