// UDP output comparison: the datagrams the replica sends from VIP:udp-ports
// (the output queue) against the primary's (the mirror), association by
// association, under the port's --divergence policy (strict: the payload,
// length: its length). The TCP comparison (output_compare.h) compares byte
// streams; here each datagram is a unit, named by a digest of its payload.
//
// A datagram of one side is paired with the first of the other side's
// unpaired ones, among the oldest kPairWindow, that has the same digest; so
// the lead may change hands and a retransmission or a reordering nearby
// pairs all the same. The oldest unpaired datagram, once kSettleUs old,
// decides:
// - the other side holds an unpaired one that came within kNearUs after it
//   (either side may come first: the mirror can show the primary's after the
//   replica's): the replica sent something else (kBytes, or kLength when only
//   the length differs under strict, and under length): diverged, the first
//   unpaired of each as the excerpts;
// - a primary's with nothing near: the replica never sent it (kLength, no
//   replica excerpt): diverged — its copy is out of step; unless the
//   replica's service has not read all its input yet (`unread`: datagrams
//   in its socket's queue, a copy paused or starved of CPU): late, not
//   different, and the decision waits, up to kLateUs after the datagram;
// - a replica's with nothing near: the mirror may have lost the primary's
//   (or showed it before the association was followed): unverified, dropped
//   from the comparison (counted), never a divergence — a primary's datagram
//   long after it belongs to a later exchange.
// Under strict, a datagram that pairs with nothing but repeats one of the
// association's last kRepeatMemory paired ones is a repeat (a request sent
// again on a timer, which a copy behind or ahead may fire where the other
// did not: SIP's retransmissions). The other side's same repeat pairs with it
// as any datagram; alone, once settled, it is counted and dropped, and it is
// never the counterpart that makes another datagram diverge.
// With a media relay beside the service (relay_ports.h), the relay ports an
// SDP names are left out of its digest, and a pair of datagrams pairs the
// ports each copy named (`relay_paired`).
// A diverged association is no longer compared (it stays diverged until
// forgotten: the association expired, forget()). More than kMaxUnpaired
// unpaired on one side: no longer compared (gave up, counted). Only the
// associations the engine follows are added (UdpFlows), so forget() bounds it.
//
// Thread: the engine thread only.
#pragma once
#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "flow_table.h"
#include "output_compare.h"
#include "relay_ports.h"

namespace t2cp {

struct UdpCompareStats {
  uint64_t compared = 0;     // datagrams paired, alike
  uint64_t unverified = 0;   // replica datagrams whose primary counterpart the mirror never showed
  uint64_t diverged = 0;     // associations found different
  uint64_t gave_up = 0;      // associations no longer compared: too much unpaired
  uint64_t late = 0;         // primary datagrams whose decision waited for a replica behind on its input
  uint64_t repeats = 0;      // datagrams that repeat one already paired (strict): not compared
};

class UdpOutputComparison {
 public:
  static constexpr uint64_t kSettleUs = 1000000;
  static constexpr uint64_t kNearUs = kSettleUs / 2;
  static constexpr uint64_t kLateUs = 5 * kSettleUs;
  static constexpr size_t kPairWindow = 64;
  static constexpr size_t kMaxUnpaired = 1024;
  static constexpr size_t kRepeatMemory = 32;
  // Bytes of an unpaired datagram kept to locate the first difference in it: a whole datagram
  // of a 1500-byte MTU (a SIP INVITE's SDP, where a relay's port differs, lies past 512).
  static constexpr uint32_t kHeadBytes = 1472;
  // An association found different: its key, and where (offset: the
  // datagram's number among the primary's output of the association, from
  // 0; within: the first differing byte in it, when both kept it).
  using Diverged = std::function<void(const FlowKey& k, const Divergence& d)>;
  explicit UdpOutputComparison(Diverged diverged) : diverged_(std::move(diverged)) {}
  // The relay's ports, the VIP as an SDP writes it, and who learns each pair of ports.
  using RelayPaired = std::function<void(uint16_t primary, uint16_t replica)>;
  void compare_relay_ports(const RelayPorts* relay, std::string vip_text, RelayPaired paired) {
    relay_ = relay;
    vip_text_ = std::move(vip_text);
    relay_paired_ = std::move(paired);
  }

  // One datagram the side sent to the association's client (payload, its length).
  void add(CompareSide side, const FlowKey& k, DivergencePolicy policy, const uint8_t* payload, uint32_t len,
           uint64_t now_us);
  // Whether the replica's service on this port has datagrams it has not read yet.
  using Unread = std::function<bool(uint16_t server_port)>;
  // Decides what stayed unpaired kSettleUs (asking `unread` before a primary's alone diverges).
  void on_tick(uint64_t now_us, const Unread& unread = {});
  // At a takeover, once the mirror showed all it will: each replica datagram no primary one
  // paired (a repeat aside), oldest first: what the dying primary never sent (the answer to a
  // datagram it never got, which the recorder resupplied). f(key, payload, len, whole): whole
  // when the kept head is all of it. Every association's unpaired are forgotten.
  using Unanswered = std::function<void(const FlowKey& k, const uint8_t* payload, uint32_t len, bool whole)>;
  void take_unanswered(const Unanswered& f);
  // The association expired: its state (a divergence too) is forgotten.
  void forget(const FlowKey& k) { map_.erase(k); }
  bool diverged(const FlowKey& k) const {
    auto it = map_.find(k);
    return it != map_.end() && it->second.done && it->second.diverged;
  }
  const UdpCompareStats& stats() const { return stats_; }

 private:
  struct Out {
    uint64_t digest = 0, us = 0, number = 0;
    uint32_t len = 0;
    bool late = false;          // its decision waited for the replica (counted once)
    bool repeat = false;        // repeats a datagram already paired
    SdpRelayScan relay;         // the relay ports its SDP named
    std::vector<uint8_t> head;  // the first kHeadBytes
  };
  struct Association {
    std::deque<Out> unpaired[2];  // [CompareSide], oldest first
    uint64_t sent[2] = {0, 0};    // datagrams each side sent
    // Digests of the last kRepeatMemory pairs, a ring: pair n at n % kRepeatMemory.
    std::array<uint64_t, kRepeatMemory> paired{};
    uint64_t pairs = 0;
    DivergencePolicy policy = DivergencePolicy::kStrict;
    bool done = false, diverged = false;
  };
  void diverge(const FlowKey& k, Association& a, DivergenceKind kind);
  // The oldest of a side's unpaired that is not a repeat; null when none.
  static const Out* first_sent(const std::deque<Out>& unpaired);
  // The two copies' SDPs named these relay ports for the same media.
  void pair_relay_ports(CompareSide side, const SdpRelayScan& mine, const SdpRelayScan& theirs);

  Diverged diverged_;
  const RelayPorts* relay_ = nullptr;
  std::string vip_text_;
  RelayPaired relay_paired_;
  UdpCompareStats stats_;
  std::unordered_map<FlowKey, Association, FlowKeyHash> map_;
};

}  // namespace t2cp
