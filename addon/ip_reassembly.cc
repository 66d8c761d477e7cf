#include "ip_reassembly.h"

#include <algorithm>
#include <cstring>
#include <iterator>

#include "packet.h"

namespace t2cp {

bool IpReassembly::add(const uint8_t* ip, size_t len, uint64_t now_us, std::vector<uint8_t>* whole) {
  constexpr uint16_t kMoreFragments = 0x2000, kOffset = 0x1fff;
  constexpr size_t kIpMaxLen = 65535;
  const size_t ihl = size_t(ip[0] & 0x0f) * 4;
  const size_t total_len = size_t(ip[2]) << 8 | ip[3];
  const uint16_t frag = uint16_t(ip[6] << 8 | ip[7]);
  const bool more = frag & kMoreFragments;
  const uint32_t off = uint32_t(frag & kOffset) * 8;
  // A fragment holds some bytes, all but the last a multiple of 8, and none past 64 KiB.
  if (ihl < 20 || total_len > len || total_len <= ihl) {
    stats_.refused++;
    return false;
  }
  const uint32_t n = uint32_t(total_len - ihl);
  if ((more && n % 8) || off + n > kIpMaxLen - ihl) {
    stats_.refused++;
    return false;
  }
  Key k{};
  std::memcpy(&k.saddr, ip + 12, 4);
  std::memcpy(&k.daddr, ip + 16, 4);
  k.id = uint16_t(ip[4] << 8 | ip[5]);
  k.proto = ip[9];
  auto it = map_.find(k);
  if (bytes_ + n > kMaxBytes || (it == map_.end() && map_.size() >= kMaxDatagrams)) {
    stats_.refused++;
    return false;
  }
  if (it == map_.end()) {
    it = map_.emplace(k, Pending{}).first;
    it->second.since_us = now_us;
  }
  Pending& p = it->second;
  stats_.fragments++;
  const uint8_t* data = ip + ihl;
  // The last fragment sets the length; one that disagrees, or bytes past it, overlap.
  bool overlap = (!more && p.total && p.total != off + n) || (p.total && off + n > p.total);
  auto next = p.pieces.lower_bound(off);
  if (!overlap && next != p.pieces.end() && next->first == off && next->second.size() == n &&
      std::memcmp(next->second.data(), data, n) == 0)
    return false;  // a copy of one held
  if (next != p.pieces.end() && next->first < off + n) overlap = true;
  if (next != p.pieces.begin() && std::prev(next)->first + std::prev(next)->second.size() > off) overlap = true;
  if (overlap) {
    stats_.overlapped++;
    drop(it);
    return false;
  }
  if (!more) p.total = off + n;
  if (off == 0) p.header.assign(ip, ip + ihl);
  p.pieces.emplace_hint(next, off, std::vector<uint8_t>(data, data + n));
  p.bytes += n;
  bytes_ += n;
  if (!p.total || p.header.empty()) return false;
  uint32_t at = 0;
  for (const auto& [o, d] : p.pieces) {
    if (o != at) return false;  // a hole still
    at += uint32_t(d.size());
  }
  if (at != p.total) return false;
  whole->assign(p.header.begin(), p.header.end());
  for (const auto& [o, d] : p.pieces) whole->insert(whole->end(), d.begin(), d.end());
  uint8_t* h = whole->data();
  const size_t whole_len = whole->size();
  h[2] = uint8_t(whole_len >> 8);
  h[3] = uint8_t(whole_len);
  h[6] = h[7] = 0;  // no MF, offset 0 (no DF: it was fragmented)
  const uint16_t c = ipv4_header_checksum(h, p.header.size());
  std::memcpy(h + 10, &c, 2);
  stats_.reassembled++;
  bytes_ -= p.bytes;
  map_.erase(it);
  return true;
}

void IpReassembly::expire(uint64_t now_us) {
  for (auto it = map_.begin(); it != map_.end();) {
    auto here = it++;
    if (now_us - here->second.since_us < kTimeoutUs) continue;
    stats_.timed_out++;
    drop(here);
  }
}

void IpReassembly::drop(std::unordered_map<Key, Pending, KeyHash>::iterator it) {
  bytes_ -= it->second.bytes;
  map_.erase(it);
}

std::vector<std::vector<uint8_t>> fragment_ipv4(const uint8_t* ip, size_t len, size_t max_bytes) {
  std::vector<std::vector<uint8_t>> out;
  if (len < 20 || (ip[0] >> 4) != 4) return out;
  const size_t ihl = size_t(ip[0] & 0x0f) * 4;
  const size_t total = size_t(ip[2]) << 8 | ip[3];
  if (ihl < 20 || total < ihl || total > len || is_ip_fragment(ip)) return out;
  if (total <= max_bytes) {
    out.emplace_back(ip, ip + total);
    return out;
  }
  const size_t step = max_bytes > ihl ? (max_bytes - ihl) / 8 * 8 : 0;
  if (!step) return out;
  for (size_t at = 0; at < total - ihl; at += step) {
    const size_t n = std::min(step, total - ihl - at);
    std::vector<uint8_t> f(ip, ip + ihl);
    f.insert(f.end(), ip + ihl + at, ip + ihl + at + n);
    uint8_t* h = f.data();
    h[2] = uint8_t((ihl + n) >> 8);
    h[3] = uint8_t(ihl + n);
    const uint16_t frag = uint16_t((at + n < total - ihl ? 0x2000 : 0) | (at / 8));  // DF cleared
    h[6] = uint8_t(frag >> 8);
    h[7] = uint8_t(frag);
    h[10] = h[11] = 0;
    const uint16_t c = ipv4_header_checksum(h, ihl);
    std::memcpy(h + 10, &c, 2);
    out.push_back(std::move(f));
  }
  return out;
}

}  // namespace t2cp
