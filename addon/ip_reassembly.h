// IPv4 reassembly of what reaches the VIP in fragments, as the primary's
// kernel reassembles it: a UDP datagram larger than the path MTU (a SIP
// INVITE with a long SDP) reaches the replica whole, in the same place among
// the others as the primary got it (when its last fragment came); so does a
// client's TCP segment cut by a narrower link (a sender that clears DF).
// RFC 791's algorithm with RFC 5722's rule: fragments that overlap with other
// bytes drop the whole datagram (a copy of one already held, a retransmission
// on the path, is ignored).
//
// Bounded: kMaxDatagrams in reassembly and kMaxBytes held at once (beyond,
// the new datagram is dropped), each given kTimeoutUs from its first
// fragment (then dropped, counted). Each outcome is counted.
//
// Thread: the engine thread only.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <unordered_map>
#include <vector>

namespace t2cp {

struct IpReassemblyStats {
  uint64_t fragments = 0;    // fragments taken
  uint64_t reassembled = 0;  // datagrams made whole
  uint64_t timed_out = 0;    // datagrams still incomplete after kTimeoutUs
  uint64_t overlapped = 0;   // datagrams dropped for fragments that overlap with other bytes
  uint64_t refused = 0;      // fragments refused: malformed, beyond 64 KiB, or the bounds full
};

class IpReassembly {
 public:
  static constexpr size_t kMaxDatagrams = 256;
  static constexpr size_t kMaxBytes = 4u << 20;
  static constexpr uint64_t kTimeoutUs = 1000000;

  // ip: an IPv4 fragment (MF set or a non-zero offset) of len bytes whose
  // header is valid. True when it completed its datagram: *whole holds the
  // datagram as one IPv4 packet (the first fragment's header, no MF, offset 0,
  // the total length and header checksum set).
  bool add(const uint8_t* ip, size_t len, uint64_t now_us, std::vector<uint8_t>* whole);
  // Drops the datagrams older than kTimeoutUs.
  void expire(uint64_t now_us);

  const IpReassemblyStats& stats() const { return stats_; }
  size_t pending() const { return map_.size(); }

 private:
  struct Key {
    uint32_t saddr, daddr;
    uint16_t id;
    uint8_t proto;
    bool operator==(const Key& o) const {
      return saddr == o.saddr && daddr == o.daddr && id == o.id && proto == o.proto;
    }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      uint64_t h = (uint64_t(k.saddr) << 32 | k.daddr) * 0x9e3779b97f4a7c15ull;
      return size_t(h ^ (uint64_t(k.id) << 8 | k.proto));
    }
  };
  struct Pending {
    uint64_t since_us = 0;
    std::vector<uint8_t> header;                      // the first fragment's, once it came
    uint32_t total = 0;                               // payload bytes, once the last fragment came
    std::map<uint32_t, std::vector<uint8_t>> pieces;  // by offset, none overlapping
    size_t bytes = 0;
  };
  void drop(std::unordered_map<Key, Pending, KeyHash>::iterator it);

  std::unordered_map<Key, Pending, KeyHash> map_;
  size_t bytes_ = 0;
  IpReassemblyStats stats_;
};

// The inverse, for the recorder's resupply of a datagram too large for one
// control message (RFC 791, section 3.2): the IPv4 packet ip of len bytes
// (its total length; not itself a fragment) cut into fragments of at most
// max_bytes each, header included, every one but the last carrying a multiple
// of 8 payload bytes, each with the datagram's header (options too: the
// reassembly keeps the first's), its offset, MF, total length and header
// checksum. The packet itself, alone, when it fits; nothing when it is not an
// unfragmented IPv4 packet or max_bytes leaves no room for 8 payload bytes.
std::vector<std::vector<uint8_t>> fragment_ipv4(const uint8_t* ip, size_t len, size_t max_bytes);

}  // namespace t2cp
