// UDP associations: what the backup follows of a UDP service. One per client
// address and port and service port (FlowKey, as a TCP flow); the clients'
// datagrams are given to the replica as the mirror shows them and the
// replica's are dropped (a media relay's ports aside: relay_ports.h): an
// association is counted, one struct per party as a TCP flow's sides, and
// forgotten after --idle-timeout without a datagram.
//
// Thread: the engine thread only.
#pragma once
#include <cstdint>
#include <unordered_map>

#include "flow_table.h"

namespace t2cp {

struct UdpAssociation {
  uint32_t id = 0;                 // engine-local, apart from the TCP flows' ids
  uint64_t last_seen_us = 0;
  struct Side { uint64_t datagrams = 0, bytes = 0; };
  Side client;                     // the client's datagrams, given to the replica
  Side replica;                    // the replica's, dropped while it replicates
};

class UdpFlows {
 public:
  explicit UdpFlows(uint32_t max_associations) : max_(max_associations) {}
  UdpAssociation* find(const FlowKey& k) {
    auto it = map_.find(k);
    return it == map_.end() ? nullptr : &it->second;
  }
  const UdpAssociation* find(const FlowKey& k) const {
    auto it = map_.find(k);
    return it == map_.end() ? nullptr : &it->second;
  }
  // The association of k, *added when new; nullptr when the table is full.
  UdpAssociation* get(const FlowKey& k, bool* added) {
    *added = false;
    if (UdpAssociation* a = find(k)) return a;
    if (map_.size() >= max_) return nullptr;
    UdpAssociation& a = map_[k];
    a.id = kFirstId + next_id_++;
    *added = true;
    return &a;
  }
  // Calls gone(key, association) for each one idle longer than idle_us, then forgets it.
  template <class F>
  void expire(uint64_t now_us, uint64_t idle_us, F gone) {
    for (auto it = map_.begin(); it != map_.end();) {
      if (now_us - it->second.last_seen_us <= idle_us) { ++it; continue; }
      gone(it->first, it->second);
      it = map_.erase(it);
    }
  }
  template <class F>
  void each(F f) const {
    for (const auto& [k, a] : map_) f(k, a);
  }
  size_t size() const { return map_.size(); }
  // UDP ids count from here, so that a log names one flow by its id either way.
  static constexpr uint32_t kFirstId = 1u << 31;

 private:
  std::unordered_map<FlowKey, UdpAssociation, FlowKeyHash> map_;
  uint32_t max_;
  uint32_t next_id_ = 0;
};

}  // namespace t2cp
