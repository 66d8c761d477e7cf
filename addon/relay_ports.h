// The ports of a media relay beside the service (rtpengine beside Kamailio):
// per call it binds ports of --relay-ports on the VIP, at random, and the
// service writes them into the SDP of the SIP messages it forwards (m=audio
// 30018, a=rtcp:30019, with c=IN IP4 <vip>). The replica's relay chooses
// other ports than the primary's for the same call, so:
// - the comparison of SIP datagrams leaves those port numbers (and the
//   Content-Length they may lengthen) out of the digest (relay_digest), and
//   when the two copies' datagrams pair, the ports they named pair too, in
//   the order the SDP names them (RelayPorts::pair);
// - the phones' media to a primary's relay port is given to the replica on
//   the paired replica's port, and the replica's media from its port is
//   compared as from the primary's (the engine's UDP paths);
// - at a takeover, each association of a relay port is translated by the
//   kernel (nft rules of outgoing_nftables), so the phones keep the ports
//   they were told and reach the replica's relay.
// The table holds one pair per port either way: a port paired again (the
// relay gave it to a later call) replaces its earlier pair.
//
// Thread: the engine thread only.
#pragma once
#include <bitset>
#include <cstdint>
#include <vector>

namespace t2cp {

// What an SDP body named of the relay: per media section whose connection
// address is the VIP and whose port is a relay port, in order, its RTP port
// and its RTCP port (a=rtcp:, else the next port, RFC 3550; 0 when that is
// not a relay port).
struct SdpRelayScan {
  static constexpr int kMaxMedia = 8;
  struct Media { uint16_t rtp = 0, rtcp = 0; };
  Media media[kMaxMedia];
  int n = 0;
};

// A digest of a datagram (CRC32C << 32 | length) that leaves out of both the
// digits of the relay ports its SDP names, and when it names any, of its
// SIP Content-Length; *scan gets those ports. A datagram with no SDP, or an
// SDP naming no relay port, gets the plain digest of all its bytes.
// `vip_text`: the VIP as an SDP writes it (dotted quad).
uint64_t relay_digest(const uint8_t* payload, uint32_t len, const char* vip_text, const std::bitset<65536>& relay,
                      SdpRelayScan* scan);

class RelayPorts {
 public:
  void configure(const std::vector<uint16_t>& ports) {
    for (uint16_t port : ports) set_.set(port);
    any_ = set_.any();
    if (any_) {
      to_replica_.assign(65536, 0);
      to_primary_.assign(65536, 0);
      paired_us_.assign(65536, 0);
    }
  }
  bool any() const { return any_; }
  bool relay(uint16_t port) const { return set_.test(port); }
  const std::bitset<65536>& set() const { return set_; }
  // The primary's copy named `primary` where the replica's named `replica`, at now_us.
  void pair(uint16_t primary, uint16_t replica, uint64_t now_us) {
    if (!any_ || !primary || !replica) return;
    paired_us_[primary] = now_us;
    if (to_replica_[primary] == replica) return;
    // Either port's earlier pair is over: its relay gave the port to this call.
    if (uint16_t old = to_replica_[primary]) {
      to_primary_[old] = 0;
      pairs_--;
    }
    if (uint16_t old = to_primary_[replica]) {
      to_replica_[old] = 0;
      pairs_--;
    }
    to_replica_[primary] = replica;
    to_primary_[replica] = primary;
    pairs_++;
  }
  // 0: not paired.
  uint16_t replica_of(uint16_t primary) const { return any_ ? to_replica_[primary] : 0; }
  uint16_t primary_of(uint16_t replica) const { return any_ ? to_primary_[replica] : 0; }
  size_t pairs() const { return pairs_; }
  // The media streams whose RTP port (even, RFC 3550; its RTCP the next) the primary's copy
  // named within window_us before now_us, paired with another port of the replica's, and no
  // association uses, RTP or RTCP (`associated`, by the primary's port): calls whose phones have
  // sent and been sent no media yet, still ringing (or given up) — a takeover now has nothing
  // of theirs to translate.
  size_t recent_pairs_without_media(const std::bitset<65536>& associated, uint64_t now_us, uint64_t window_us) const {
    size_t n = 0;
    if (!any_) return n;
    for (size_t p = 0; p + 1 < 65536; p += 2)
      if (to_replica_[p] && to_replica_[p] != p && !associated.test(p) && !associated.test(p + 1) &&
          paired_us_[p] + window_us > now_us)
        n++;
    return n;
  }

 private:
  std::bitset<65536> set_;
  bool any_ = false;
  std::vector<uint16_t> to_replica_, to_primary_;  // 65536 each once configured
  std::vector<uint64_t> paired_us_;                 // by the primary's port: its last SDP pairing
  size_t pairs_ = 0;
};

}  // namespace t2cp
