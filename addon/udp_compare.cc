#include "udp_compare.h"

#include <algorithm>
#include <cstring>

namespace t2cp {

void UdpOutputComparison::add(CompareSide side, const FlowKey& k, DivergencePolicy policy, const uint8_t* payload,
                              uint32_t len, uint64_t now_us) {
  if (policy == DivergencePolicy::kOff) return;
  Association& a = map_[k];
  a.policy = policy;
  const int me = int(side), other = 1 - me;
  const uint64_t number = a.sent[me]++;
  if (a.done) return;
  Out o;
  o.len = len;
  o.us = now_us;
  o.number = number;
  o.digest = policy == DivergencePolicy::kStrict ? uint64_t(crc32c(0, payload, len)) << 32 | len : len;
  std::deque<Out>& theirs = a.unpaired[other];
  const size_t window = std::min(theirs.size(), kPairWindow);
  for (size_t i = 0; i < window; i++) {
    if (theirs[i].digest != o.digest) continue;
    theirs.erase(theirs.begin() + long(i));
    stats_.compared++;
    return;
  }
  if (a.unpaired[me].size() >= kMaxUnpaired) {
    a.done = true;
    a.unpaired[0].clear();
    a.unpaired[1].clear();
    stats_.gave_up++;
    return;
  }
  o.head.assign(payload, payload + std::min(len, kHeadBytes));
  a.unpaired[me].push_back(std::move(o));
}

void UdpOutputComparison::on_tick(uint64_t now_us) {
  for (auto it = map_.begin(); it != map_.end();) {
    if (it->second.done) {
      ++it;
      continue;
    }
    Association& a = it->second;
    auto settled = [&](int side) { return !a.unpaired[side].empty() && now_us - a.unpaired[side].front().us >= kSettleUs; };
    const int p = int(CompareSide::kPrimary), r = int(CompareSide::kReplica);
    if (settled(p)) {
      // The primary's, unpaired this long: the replica sent something else, or nothing.
      if (a.unpaired[r].empty()) {
        diverge(it->first, a, DivergenceKind::kLength);
      } else {
        const bool same_length = a.unpaired[p].front().len == a.unpaired[r].front().len;
        diverge(it->first, a, same_length && a.policy == DivergencePolicy::kStrict ? DivergenceKind::kBytes : DivergenceKind::kLength);
      }
    } else {
      // The replica's, with nothing of the primary's to pair this long: the mirror lost that, or
      // showed it before the association was followed. A primary's datagram still in flight
      // (younger than kSettleUs: the replica's may yet come) is no evidence against it.
      while (settled(r)) {
        a.unpaired[r].pop_front();
        stats_.unverified++;
      }
    }
    ++it;
  }
}

void UdpOutputComparison::diverge(const FlowKey& k, Association& a, DivergenceKind kind) {
  Divergence d;
  d.kind = kind;
  d.exact = true;
  const std::deque<Out>& primary = a.unpaired[int(CompareSide::kPrimary)];
  const std::deque<Out>& replica = a.unpaired[int(CompareSide::kReplica)];
  d.offset = primary.empty() ? replica.front().number : primary.front().number;
  // The first byte where the two differ (or where the shorter ends), within what both kept.
  if (!primary.empty() && !replica.empty()) {
    const std::vector<uint8_t>&x = primary.front().head, &y = replica.front().head;
    const size_t n = std::min(x.size(), y.size());
    size_t i = 0;
    while (i < n && x[i] == y[i]) i++;
    d.within = uint32_t(i);
  }
  for (int side = 0; side < 2; side++) {
    if (a.unpaired[side].empty()) continue;
    const std::vector<uint8_t>& h = a.unpaired[side].front().head;
    const size_t from = std::min<size_t>(d.within, h.size());
    d.excerpt_len[side] = uint8_t(std::min<size_t>(h.size() - from, kExcerptBytes));
    std::memcpy(d.excerpt[side], h.data() + from, d.excerpt_len[side]);
    d.excerpt_held[side] = true;
  }
  a.done = a.diverged = true;
  a.unpaired[0].clear();
  a.unpaired[1].clear();
  stats_.diverged++;
  diverged_(k, d);
}

}  // namespace t2cp
