// Outgoing traffic processor (paper 001): everything the replica sends on a
// replicated flow arrives here through NFQUEUE (outgoing_nfqueue) and is
// dropped after we learn from it: its SYN-ACK (ISN, timestamp, window scale),
// how far it has sent (snd_nxt), how far it has received (its ack) and its
// receive window. That is what lets the incoming processor keep the replica
// in step.
//
// Thread: engine thread only.
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine_context.h"
#include "incoming_processor.h"

namespace t2cp {

class OutgoingProcessor {
 public:
  OutgoingProcessor(EngineContext& ctx, IncomingProcessor& in) : ctx_(ctx), in_(in) {}

  // One queued packet: IPv4 header onward, `copied` bytes of it present.
  void on_replica_packet(const uint8_t* ip, size_t copied);
  static void nfqueue_callback(void* self, const uint8_t* ip, size_t copied) {
    static_cast<OutgoingProcessor*>(self)->on_replica_packet(ip, copied);
  }

 private:
  EngineContext& ctx_;
  IncomingProcessor& in_;
};

}  // namespace t2cp
