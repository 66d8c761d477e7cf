// Incoming traffic processor (paper 001): reads the primary's traffic off
// the mirror port and feeds the replica's TCP stack through the TUN device.
//
// It does not forward captured packets one for one. It keeps, per flow, the
// client's byte stream (StreamBuffer) and acts toward the replica the way the
// client would: cuts segments from the stream within the replica's receive
// window, acknowledges the replica's data as far as the client acknowledged
// the primary's (mapped to the replica's sequence space, clamped to what the
// replica has sent), re-sends what the replica did not acknowledge, probes a
// closed window. So the replica's stream is exactly the primary's whatever
// the relative speed of the two services, and super-frames, duplicates and
// reordering on the mirror do not matter.
//
// Thread: engine thread only.
#pragma once

#include <cstdint>

#include "engine_context.h"
#include "ip_reassembly.h"
#include "packet.h"
#include "udp_ledger.h"

namespace t2cp {

class IncomingProcessor {
 public:
  explicit IncomingProcessor(EngineContext& ctx);
  ~IncomingProcessor();

  // One frame from the mirror port; capture_ns is the kernel's timestamp.
  void on_mirror_frame(const uint8_t* frame, size_t caplen, uint64_t capture_ns);
  // Both SYN-ACKs known: fix the deltas. Called by either processor.
  void try_synchronise(Flow& f);
  // The association k, followed from now if new (counted, its `new` event); null when the table
  // is full. Called by either processor: the first datagram to a peer may be the replica's.
  UdpAssociation* follow_udp(const FlowKey& k);
  // The replica's datagram (its payload) to the client of k: counted against the association
  // and, while replicating or frozen, compared.
  void replica_datagram(const FlowKey& k, const uint8_t* payload, uint32_t len, uint64_t us);
  // The replica's datagram from relay port d.sport, not paired yet: held for the pair.
  void hold_relay_output(const Datagram& d);
  // Inject whatever is due for f now.
  void pump(Flow& f);
  // The capture dropped frames (Capture::stats), counted since the counter was
  // last read at checked_us: every flow seen from kDropSuspectWindowUs before
  // that must prove it lost nothing (a primary ack within what we hold), or it
  // is reported and unprotected. From the last read, not from now: an engine
  // that was itself stalled (the drops' usual cause) last saw its flows then.
  void on_capture_drops(uint64_t now_us, uint64_t checked_us);
  // The mirror port lost its link: any live flow may have missed bytes
  // meanwhile, as after capture drops, whenever it was last seen.
  void on_mirror_lost(uint64_t now_us);
  // A client segment the gateway's traffic recorder sent again (whole IPv4
  // packet): fills a gap the capture left, as the mirror would have.
  void on_resupplied(const uint8_t* ip, size_t len);
  // The gateway recorder's records of the clients' datagrams (kUdpRecordSize
  // bytes each, numbered from first; none: a manifest with nothing new).
  void on_udp_records(uint64_t first, const uint8_t* records, size_t n);
  // The UDP ledger's asks and releases; its figures into the counters.
  void udp_tick(uint64_t now_us);
  // Replication ended (a takeover): every datagram held goes to the replica.
  void release_udp(uint64_t now_us);
  // A client segment that reached this host itself after the IP takeover
  // (whole IPv4 packet, from NFQUEUE) for a flow still catching up: fed to
  // its replica like a mirrored one.
  void on_queued_client_segment(const uint8_t* ip, size_t len);
  // Periodic: re-injection, window probes, timeouts, expiry.
  void on_tick(uint64_t now_us);
  // Successors whose predecessor finished on the replica take its place and
  // get their SYN injected. Call outside any iteration over the flows.
  void promote_waiting();

  static void capture_callback(void* self, const uint8_t* frame, size_t caplen, uint64_t capture_ns);

  void make_unprotected(Flow& f, EventReason why);
  // The replica lost bytes it can never get: report, reset its copy, unprotect.
  void lose_flow(Flow& f, EventReason why, uint64_t detail);
  // A side's stream (primary, replica) starts at seq0 (ISN + 1): compared
  // from there if the flow's port asks it (--divergence).
  void start_comparison(Flow& f, CompareSide side, uint32_t seq0);
  // The replica's connection starts again with another ISN (it sent nothing
  // on the one it dropped): compare from scratch, the replica's side once
  // its SYN-ACK is seen.
  void restart_comparison(Flow& f);
  // A side's output (s, the first `present` payload bytes at hand) against
  // the other's: a difference loses the flow (diverged).
  void compare_output(Flow& f, CompareSide side, const Segment& s, uint32_t present);
  // Whether the replica's connection certainly completed its handshake: it
  // acknowledged client bytes or sent its own.
  static bool replica_established(const Flow& f);
  // The replica lost its half-open connection: forget its side and send the
  // client's SYN again (bounded; then the flow is unprotected).
  void restart_handshake(Flow& f);

 private:
  void on_client_segment(const Segment& s, uint64_t capture_ns);
  // The generation of f's key that s belongs to (waiting successors lie
  // beyond the older connections' numbers); *detached if not f itself.
  static Flow* generation_of(Flow* f, uint32_t seq, bool* detached);
  // s's payload and FIN into f's stream; false if f was lost (buffer full).
  bool add_client_bytes(Flow& f, const Segment& s);
  // All flows together hold --memory: gives up the flows holding more
  // than f, largest first, until need more bytes fit. False if none is left
  // to give up (f itself holds the most).
  bool shed_for(Flow& f, uint32_t need);
  // Remembers what the client had received when it sent these bytes.
  void add_mark(Flow& f, const ClientMark& m);
  // The first client sequence number (a FIN's included) the replica may not
  // be given yet: its output has not reached what the client had received
  // when it sent it. *held false: nothing is held.
  uint32_t causal_end(Flow& f, bool* held);
  // A replica that stopped short of the output causality waits for.
  void check_stopped(Flow& f, uint64_t now);
  // present: payload bytes the capture kept (the rest was cut).
  void on_primary_segment(const Segment& s, uint32_t present, uint64_t capture_ns);
  void start_flow(const FlowKey& k, const Segment& s, uint64_t capture_ns);
  // A flow's client-side state from its SYN; reports it new.
  void init_flow(Flow& f, const Segment& s, uint64_t capture_ns);
  // The client's last ACK of f, past the primary's FIN, taken as sent (the capture lost it).
  void implied_final_ack(Flow& f);
  // After its predecessor on the same key is done on the replica.
  void note_finished(Flow& f);
  // An ICMP error to the VIP about a flow the replica follows, given to the replica in its own
  // numbers; false when the frame is not such an error (it is counted with the others).
  bool on_mirror_icmp(const uint8_t* frame, size_t caplen);
  // A client's datagram to VIP:udp-port: to the ledger, which gives it to the
  // replica in the recorder's order; false when the frame is no such datagram
  // (counted with the others).
  bool on_mirror_udp(const uint8_t* frame, size_t caplen);
  // A client's UDP datagram toward the VIP (or the primary's from it), whole.
  bool on_mirror_datagram(const uint8_t* ip, size_t len);
  // A fragment of one (on_mirror_datagram once reassembled), or of a client's TCP segment to
  // the VIP (on_mirror_whole_segment); false when not ours.
  bool on_mirror_fragment(const uint8_t* frame, size_t caplen, uint64_t capture_ns);
  // The client's segment tcp_reassembled_ made whole: as if it had come in one frame.
  void on_mirror_whole_segment(uint64_t capture_ns);
  // The TCP reassembly's figures into the counters, its expired segments dropped.
  void tcp_fragments_tick(uint64_t now_us);
  // The association of d, counted (new: reported); nullptr when the table is full.
  UdpAssociation* note_udp(const Datagram& d);
  // A datagram the ledger released: to the replica, its checksum left out
  // (0: none, which IPv4 allows; a sender's offloaded checksum may be only
  // partial on the mirror); through the TUN, or once a takeover removed it
  // through a raw socket to the VIP, now this host's.
  // To a media relay's port (relay_ports.h), it goes to the replica's relay port paired with
  // the primary's it was sent to; held up to kRelayHoldUs until the two SDPs naming them paired.
  void give_udp(const uint8_t* ip, size_t len);
  // The datagrams held for the primary's relay port `port`, now paired: to the replica.
  void give_relay_held(uint16_t port);
  // Held datagrams kRelayHoldUs old: dropped, counted. The replica's held ones whose port paired
  // since: compared.
  void expire_relay_held(uint64_t now_us);
  // A segment of an unprotected flow from one side (client or primary): its FIN or RST noted;
  // ended once its connection is over (FINs both ways and the last ACK, or a reset).
  template <class Side>
  void end_unprotected(Flow& f, Side& from, const Segment& s);
  void ended_unprotected(Flow& f);
  void tick_flow(Flow& f, uint64_t now_us);
  void check_gap(Flow& f, uint64_t now_us);
  void check_lag(Flow& f);
  // The primary acknowledged client bytes up to ack, captured at us.
  void stamp_primary_ack(Flow& f, uint32_t ack, uint64_t us);
  // --max-lag: the flows whose replica lacks client bytes the primary had
  // acknowledged longer ago than that are given up, the one holding the most
  // first, one per kBehindShedSpacingUs.
  void enforce_max_lag(uint64_t now_us);
  // End of the client data captured in order (FIN included).
  static uint32_t captured_end(const Flow& f);
  void check_closed(Flow& f, uint64_t now_us);

  // A segment to the replica at seq, with len bytes of the client's stream
  // from f.data (which must hold them) as payload.
  bool inject(Flow& f, uint32_t seq, uint8_t flags, uint32_t len, bool with_sack);
  bool inject_syn(Flow& f);
  // Capture-to-injection time of the packet that made this injection due.
  void sample_latency(Flow& f);
  // The ack the replica may see now; false before the client acked anything.
  bool replica_ack(Flow& f, uint32_t* ack);
  // The right edge of the window an ACK of ack would give the replica.
  static uint32_t replica_edge(const Flow& f, uint32_t ack);

  EngineContext& ctx_;
  UdpLedger ledger_;
  IpReassembly reassembly_;
  std::vector<uint8_t> reassembled_;  // the last datagram made whole
  // The recorder's resupply of a datagram too large for one control message comes as
  // fragments of its own cutting: made whole apart from the mirror's, whose cuts differ.
  IpReassembly resupply_reassembly_;
  IpReassembly tcp_reassembly_;          // the clients' segments cut in fragments
  std::vector<uint8_t> tcp_reassembled_;  // the last segment made whole
  std::vector<uint8_t> resupply_reassembled_;
  int raw_fd_ = -1;  // give_udp() after the TUN is gone
  // Datagrams to a primary's relay port the comparison has not paired yet (the replica's copy
  // of the SDP naming it not sent yet), oldest first, at most kRelayHeld.
  struct RelayHeld {
    uint64_t us;
    uint16_t port;
    std::vector<uint8_t> ip;
  };
  static constexpr size_t kRelayHeld = 1024;
  static constexpr uint64_t kRelayHoldUs = 1000000;
  std::deque<RelayHeld> relay_held_;
  // The replica's datagrams from a relay port not paired yet (the mirror had not shown the
  // primary's SDP naming it when the replica's relay sent: the capture behind the output queue),
  // oldest first, at most kRelayHeld: compared once the port pairs.
  struct RelayOutputHeld {
    uint64_t us;
    uint16_t replica_port;
    uint32_t client_ip;
    uint16_t client_port;
    std::vector<uint8_t> payload;
  };
  std::deque<RelayOutputHeld> relay_output_held_;
  uint64_t next_behind_shed_us_ = 0;
  uint16_t ip_id_ = 0;
  uint8_t pkt_[65536];
};

}  // namespace t2cp
