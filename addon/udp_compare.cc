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
  // SDP is looked for on the other ports only: a relay's own carry media.
  if (relay_ && relay_->any() && !relay_->relay(k.server_port)) {
    o.digest = relay_digest(payload, len, vip_text_.c_str(), relay_->set(), &o.relay);
    if (policy != DivergencePolicy::kStrict) o.digest &= 0xffffffffu;  // the length without the relay ports
  } else {
    o.digest = policy == DivergencePolicy::kStrict ? uint64_t(crc32c(0, payload, len)) << 32 | len : len;
  }
  std::deque<Out>& theirs = a.unpaired[other];
  const size_t window = std::min(theirs.size(), kPairWindow);
  for (size_t i = 0; i < window; i++) {
    if (theirs[i].digest != o.digest) continue;
    if (o.relay.n) pair_relay_ports(side, o.relay, theirs[i].relay);
    theirs.erase(theirs.begin() + long(i));
    stats_.compared++;
    a.paired[a.pairs++ % kRepeatMemory] = o.digest;
    return;
  }
  const auto held = a.paired.begin() + long(std::min<uint64_t>(a.pairs, kRepeatMemory));
  o.repeat = policy == DivergencePolicy::kStrict && std::find(a.paired.begin(), held, o.digest) != held;
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

void UdpOutputComparison::on_tick(uint64_t now_us, const Unread& unread) {
  for (auto it = map_.begin(); it != map_.end();) {
    if (it->second.done) {
      ++it;
      continue;
    }
    Association& a = it->second;
    auto settled = [&](int side) { return !a.unpaired[side].empty() && now_us - a.unpaired[side].front().us >= kSettleUs; };
    const int p = int(CompareSide::kPrimary), r = int(CompareSide::kReplica);
    // A repeat nothing paired with: one copy's timer fired, not the other's.
    for (int side : {p, r}) {
      while (settled(side) && a.unpaired[side].front().repeat) {
        a.unpaired[side].pop_front();
        stats_.repeats++;
      }
    }
    // The other side's oldest unpaired (a repeat aside) came near `side`'s oldest: the two were
    // each other's counterparts, and differ.
    auto near = [&](int side) {
      const Out* other = first_sent(a.unpaired[1 - side]);
      return other && other->us <= a.unpaired[side].front().us + kNearUs;
    };
    // The replica's settled with no counterpart near: the mirror lost the primary's, or showed it
    // before the association was followed — unverified. A primary's datagram long after it (a
    // later exchange, waiting for the lagging replica's) is no evidence against it.
    while (settled(r) && !near(r) && !(settled(p) && a.unpaired[p].front().us < a.unpaired[r].front().us)) {
      a.unpaired[r].pop_front();
      stats_.unverified++;
    }
    const bool decide_p = settled(p), decide_r = settled(r);
    if (!decide_p && !decide_r) {
      ++it;
      continue;
    }
    // The older settled one decides: with its counterpart near, the two differ; a primary's alone,
    // the replica never sent it.
    const int side = decide_p && (!decide_r || a.unpaired[p].front().us <= a.unpaired[r].front().us) ? p : r;
    if (near(side)) {
      const bool same_length = first_sent(a.unpaired[p])->len == first_sent(a.unpaired[r])->len;
      diverge(it->first, a, same_length && a.policy == DivergencePolicy::kStrict ? DivergenceKind::kBytes : DivergenceKind::kLength);
    } else if (side == p) {
      Out& o = a.unpaired[p].front();
      if (now_us - o.us < kLateUs && unread && unread(it->first.server_port)) {
        if (!o.late) stats_.late++;
        o.late = true;  // the replica has not read what it would answer yet
      } else {
        diverge(it->first, a, DivergenceKind::kLength);
      }
    }
    ++it;
  }
}

void UdpOutputComparison::pair_relay_ports(CompareSide side, const SdpRelayScan& mine, const SdpRelayScan& theirs) {
  const bool primary = side == CompareSide::kPrimary;
  for (int i = 0; i < std::min(mine.n, theirs.n); i++) {
    const SdpRelayScan::Media &p = primary ? mine.media[i] : theirs.media[i], &r = primary ? theirs.media[i] : mine.media[i];
    relay_paired_(p.rtp, r.rtp);
    if (p.rtcp && r.rtcp) relay_paired_(p.rtcp, r.rtcp);
  }
}

void UdpOutputComparison::take_unanswered(const Unanswered& f) {
  std::vector<std::pair<const FlowKey*, const Out*>> all;
  for (const auto& [k, a] : map_)
    for (const Out& o : a.unpaired[int(CompareSide::kReplica)])
      if (!o.repeat) all.push_back({&k, &o});
  std::stable_sort(all.begin(), all.end(), [](const auto& x, const auto& y) { return x.second->us < y.second->us; });
  for (const auto& [k, o] : all) f(*k, o->head.data(), o->len, o->head.size() == o->len);
  for (auto& [k, a] : map_) {
    a.unpaired[0].clear();
    a.unpaired[1].clear();
  }
}

const UdpOutputComparison::Out* UdpOutputComparison::first_sent(const std::deque<Out>& unpaired) {
  for (const Out& o : unpaired)
    if (!o.repeat) return &o;
  return nullptr;
}

void UdpOutputComparison::diverge(const FlowKey& k, Association& a, DivergenceKind kind) {
  Divergence d;
  d.kind = kind;
  d.exact = true;
  const Out* primary = first_sent(a.unpaired[int(CompareSide::kPrimary)]);
  const Out* replica = first_sent(a.unpaired[int(CompareSide::kReplica)]);
  d.offset = primary ? primary->number : replica ? replica->number : 0;
  // The first byte where the two differ (or where the shorter ends), within what both kept.
  if (primary && replica) {
    const std::vector<uint8_t>&x = primary->head, &y = replica->head;
    const size_t n = std::min(x.size(), y.size());
    size_t i = 0;
    while (i < n && x[i] == y[i]) i++;
    d.within = uint32_t(i);
  }
  for (int side = 0; side < 2; side++) {
    const Out* first = side == int(CompareSide::kPrimary) ? primary : replica;
    if (!first) continue;
    const std::vector<uint8_t>& h = first->head;
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
