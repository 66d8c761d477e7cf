#include "udp_ledger.h"

#include <algorithm>

#include "output_compare.h"

namespace t2cp {

bool udp_record_may_move(UdpRecordPhase from, UdpRecordPhase to) {
  using P = UdpRecordPhase;
  static constexpr struct { P from, to; } kMoves[] = {
      {P::kAwaited, P::kHeld}, {P::kAwaited, P::kAsked}, {P::kAsked, P::kHeld},
      {P::kAsked, P::kLost},   {P::kHeld, P::kGiven},
  };
  for (const auto& m : kMoves)
    if (m.from == from && m.to == to) return true;
  return false;
}

const char* udp_record_phase_name(UdpRecordPhase p) {
  switch (p) {
    case UdpRecordPhase::kAwaited: return "awaited";
    case UdpRecordPhase::kAsked: return "asked";
    case UdpRecordPhase::kHeld: return "held";
    case UdpRecordPhase::kLost: return "lost";
    case UdpRecordPhase::kGiven: return "given";
  }
  return "?";
}

uint64_t udp_digest(const Datagram& d) {
  const uint32_t crc = crc32c(0, d.payload, d.payload_len);
  const uint16_t ip_id = uint16_t(d.ip[4] << 8 | d.ip[5]);
  return uint64_t(crc) << 32 | uint64_t(ip_id) << 16 | ((d.payload_len + 8) & 0xffff);
}

void UdpLedger::move(Record& r, UdpRecordPhase to) {
  if (!udp_record_may_move(r.phase, to)) std::abort();  // a bug here, never input
  r.phase = to;
}

void UdpLedger::hold(Record& r, const uint8_t* ip, size_t len) {
  move(r, UdpRecordPhase::kHeld);
  r.ip.assign(ip, ip + len);
  held_++;
}

void UdpLedger::give(std::vector<uint8_t>& ip) {
  give_(ip.data(), ip.size());
  ip.clear();
  ip.shrink_to_fit();
}

void UdpLedger::on_mirrored(const FlowKey& k, uint64_t digest, const uint8_t* ip, size_t len, uint64_t now) {
  if (!pairing(now) || released_ || held_ >= t_.max_held) {
    if (pairing(now)) stats_.unverified++;
    give_(ip, len);
    return;
  }
  Association& a = map_[k];
  for (Record& r : a.records) {
    if (r.digest != digest || (r.phase != UdpRecordPhase::kAwaited && r.phase != UdpRecordPhase::kAsked)) continue;
    hold(r, ip, len);
    stats_.verified++;
    if (release(a, now)) map_.erase(k);
    return;
  }
  a.unrecorded.push_back({digest, now, false, std::vector<uint8_t>(ip, ip + len)});
  held_++;
}

void UdpLedger::on_manifest(uint64_t now) {
  seen_manifest_ = true;
  last_manifest_us_ = now;
}

void UdpLedger::on_record(const FlowKey& k, uint64_t index, uint64_t digest, uint64_t now) {
  stats_.records++;
  auto [it, added] = map_.try_emplace(k);
  Association& a = it->second;
  if (added) a.ordered = !released_;
  auto u = std::find_if(a.unrecorded.begin(), a.unrecorded.end(), [&](const Unrecorded& x) { return x.digest == digest; });
  Record r;
  r.index = index;
  r.digest = digest;
  if (u != a.unrecorded.end()) {
    stats_.verified++;
    if (!u->given) {
      r.phase = UdpRecordPhase::kHeld;  // held since the mirror showed it
      r.ip = std::move(u->ip);
      a.records.push_back(std::move(r));
    }
    a.unrecorded.erase(u);
  } else {
    r.due_us = now + t_.settle_us;
    a.records.push_back(std::move(r));
  }
  if (release(a, now)) map_.erase(it);
}

bool UdpLedger::on_resupplied(const FlowKey& k, uint64_t digest, const uint8_t* ip, size_t len, uint64_t now) {
  auto it = map_.find(k);
  if (it != map_.end()) {
    for (Record& r : it->second.records) {
      if (r.digest != digest || r.phase != UdpRecordPhase::kAsked) continue;
      hold(r, ip, len);
      stats_.resupplied++;
      if (release(it->second, now)) map_.erase(it);
      return true;
    }
  }
  stats_.duplicates++;
  return false;
}

bool UdpLedger::release(Association& a, uint64_t now) {
  if (a.ordered) {
    while (!a.records.empty()) {
      Record& r = a.records.front();
      if (r.phase == UdpRecordPhase::kHeld) {
        give(r.ip);
        held_--;
      } else if (r.phase != UdpRecordPhase::kLost) {
        break;  // the next in order has not come
      }
      a.records.pop_front();
    }
  } else {
    for (Record& r : a.records) {
      if (r.phase != UdpRecordPhase::kHeld) continue;
      give(r.ip);
      held_--;
      move(r, UdpRecordPhase::kGiven);
    }
    a.records.erase(std::remove_if(a.records.begin(), a.records.end(),
                                   [](const Record& r) {
                                     return r.phase == UdpRecordPhase::kGiven || r.phase == UdpRecordPhase::kLost;
                                   }),
                    a.records.end());
  }
  release_unrecorded(a, now, !a.ordered);
  return a.records.empty() && a.unrecorded.empty();
}

void UdpLedger::release_unrecorded(Association& a, uint64_t now, bool all) {
  // They came after every record of theirs: in order, they wait for those.
  if (!all && !a.records.empty()) return;
  for (Unrecorded& u : a.unrecorded) {
    if (u.given) continue;
    if (!all && now - u.since_us < t_.unrecorded_hold_us) break;
    give(u.ip);
    held_--;
    u.given = true;
    stats_.unverified++;
  }
  while (!a.unrecorded.empty() && a.unrecorded.front().given && now - a.unrecorded.front().since_us >= t_.unrecorded_keep_us)
    a.unrecorded.pop_front();
}

void UdpLedger::on_tick(uint64_t now) {
  if (seen_manifest_ && !pairing(now)) {
    give_everything();  // the records stopped: nothing can be asked or confirmed
    seen_manifest_ = false;
    return;
  }
  for (auto it = map_.begin(); it != map_.end();) {
    Association& a = it->second;
    for (Record& r : a.records) {
      if ((r.phase != UdpRecordPhase::kAwaited && r.phase != UdpRecordPhase::kAsked) || now < r.due_us) continue;
      if (r.phase == UdpRecordPhase::kAwaited) {
        move(r, UdpRecordPhase::kAsked);
        r.first_ask_us = now;
      } else if (now - r.first_ask_us >= t_.give_up_us) {
        move(r, UdpRecordPhase::kLost);
        stats_.lost++;
        continue;
      }
      r.due_us = now + t_.ask_repeat_us;
      stats_.asked++;
      ask_(it->first, r.index);
    }
    it = release(a, now) ? map_.erase(it) : std::next(it);
  }
}

void UdpLedger::release_all(uint64_t now) {
  released_ = true;
  for (auto it = map_.begin(); it != map_.end();) {
    it->second.ordered = false;
    it = release(it->second, now) ? map_.erase(it) : std::next(it);
  }
}

void UdpLedger::give_everything() {
  for (auto& [k, a] : map_) {
    for (Record& r : a.records) {
      if (r.phase == UdpRecordPhase::kHeld) give(r.ip);
      else if (r.phase == UdpRecordPhase::kAwaited || r.phase == UdpRecordPhase::kAsked) stats_.lost++;
    }
    for (Unrecorded& u : a.unrecorded) {
      if (u.given) continue;
      give(u.ip);
      stats_.unverified++;
    }
  }
  map_.clear();
  held_ = 0;
}

}  // namespace t2cp
