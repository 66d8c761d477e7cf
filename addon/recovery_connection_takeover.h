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
// No flow waits behind another's resend: resume() sends each flow's ACK at
// once and queues its data; pump() sends the queue, the flows with the least
// to send first, up to a byte budget per call — the takeover's step 5 gives
// it one budget, the engine loop one per pass after that — so an
// interactive session's lost reply is not sent behind a bulk flow's
// megabytes, and the engine thread goes on translating in between.
//
// Packets leave through a raw IP socket carrying kInjectMark, which the
// owned output chain lets pass untouched.
//
// Thread: engine thread only.
#pragma once
#include <cstdint>
#include <vector>

#include "engine_context.h"

namespace t2cp {

class ConnectionTakeover {
 public:
  explicit ConnectionTakeover(EngineContext& ctx) : ctx_(ctx) {}
  ~ConnectionTakeover();
  // "" or a one-line error.
  std::string open();
  // Step 5 for one taken-over flow: an ACK now, telling the client what the
  // replica has; its data waits for pump(). Returns the bytes queued.
  uint32_t resume(Flow& f);
  // Sends queued data, flows with the least left first, up to about
  // `budget` bytes; a flow done gets its closing ACK (and FIN) and gives
  // its copy back. True while some remain.
  bool pump(uint32_t budget);
  bool pending() const { return !queue_.empty(); }
  // A flow whose replica cannot continue it: reset the client now, in the
  // primary's numbers, rather than leave it waiting on a connection nobody
  // serves. False if its numbers are unknown (never seen acknowledging).
  // A RST within the client's window but not at its exact rcv_nxt draws a
  // challenge ACK (RFC 5961), which this host's stack, holding no socket for
  // the flow, answers with a RST at exactly that point.
  bool reset_client(const Flow& f);
  // A datagram from VIP:k.server_port to the client of k (no checksum: IPv4 allows it).
  bool send_datagram(const FlowKey& k, const uint8_t* payload, uint32_t len);

 private:
  bool send(const SegmentSpec& sp);
  // A segment from VIP:port to the flow's client, the rest to fill in.
  SegmentSpec to_client(const Flow& f) const;
  // The segment every resume segment copies: ack, window, timestamps.
  SegmentSpec resume_base(const Flow& f) const;
  // The ACK that ends a flow's resume, with the replica's FIN if due.
  void send_final_ack(Flow& f);

  EngineContext& ctx_;
  int fd_ = -1;
  uint16_t ip_id_ = 0;
  uint8_t pkt_[2048];
  std::vector<FlowKey> queue_;  // flows with data to resend, least left first
  bool sorted_ = true;
};

}  // namespace t2cp
