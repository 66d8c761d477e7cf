// Failure recovery, TCP connection takeover (paper 001): make every client
// resume at once instead of waiting out a retransmission timer.
//
// Two timers would otherwise hold a client back. The replica's: what it sent
// while the primary was dying never left this host (we dropped it), and it
// would send it again only when its RTO fires (200 ms at the least, backed
// off further). So we send that data ourselves, from the copy kept while
// replicating (Flow::out), in the primary's numbers. And the client's: what
// it sent during the outage is acknowledged by the replica if the mirror
// caught it; an ACK carrying the replica's rcv_nxt and window tells the
// client so now.
//
// Packets leave through a raw IP socket carrying kInjectMark, which the
// owned output chain lets pass untouched.
//
// Thread: engine thread only.
#pragma once
#include <cstdint>

#include "engine_context.h"

namespace t2cp {

class ConnectionTakeover {
 public:
  explicit ConnectionTakeover(EngineContext& ctx) : ctx_(ctx) {}
  ~ConnectionTakeover();
  // "" or a one-line error.
  std::string open();
  // Step 5 for one taken-over flow.
  void resume(Flow& f);
  // A flow whose replica cannot continue it: reset the client now, in the
  // primary's numbers, rather than leave it waiting on a connection nobody
  // serves. False if its numbers are unknown (never seen acknowledging).
  // A RST within the client's window but not at its exact rcv_nxt draws a
  // challenge ACK (RFC 5961), which this host's stack, holding no socket for
  // the flow, answers with a RST at exactly that point.
  bool reset_client(const Flow& f);

 private:
  bool send(const SegmentSpec& sp);
  // A segment from VIP:port to the flow's client, the rest to fill in.
  SegmentSpec to_client(const Flow& f) const;

  EngineContext& ctx_;
  int fd_ = -1;
  uint16_t ip_id_ = 0;
  uint8_t pkt_[2048];
};

}  // namespace t2cp
