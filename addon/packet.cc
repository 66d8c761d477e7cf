// Packet layer: Ethernet/IPv4/TCP parsing, segment building, Internet
// checksums. Pure functions on caller-owned buffers; see packet.h.
#include "packet.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace t2cp {

// A missing name would be a null entry: packet_test checks every one.
const char* const kParseErrorNames[static_cast<int>(ParseError::kCount)] = {
    "ok",              "truncated_l2",   "not_ipv4",      "truncated_ip",
    "bad_ip_header",   "bad_ip_checksum", "ip_fragment",  "not_tcp",
    "truncated_tcp",   "bad_tcp_header", "bad_tcp_options", "bad_udp_length",
};

namespace {

constexpr size_t kEthHdrLen = 14;         // dst, src, EtherType
constexpr size_t kVlanTagLen = 4;         // TCI + inner EtherType (802.1Q)
constexpr int kMaxVlanTags = 2;           // 802.1ad outer + 802.1Q inner
constexpr uint16_t kEthIpv4 = 0x0800;
constexpr uint16_t kEth8021Q = 0x8100;
constexpr uint16_t kEth8021AD = 0x88A8;
constexpr uint16_t kEthQinQ = 0x9100;     // pre-802.1ad QinQ, still emitted by some switches
constexpr size_t kIpMinHdr = 20;
constexpr size_t kIpMaxLen = 65535;       // IPv4 total length field limit
constexpr uint8_t kIpProtoTcp = 6;
constexpr uint16_t kIpDf = 0x4000;
constexpr size_t kTcpMinHdr = 20;
constexpr size_t kTcpMaxOpts = 40;        // data offset 15 * 4 - 20
constexpr uint8_t kMaxWscale = 14;        // RFC 7323 2.3; the kernel clamps to TCP_MAX_WSCALE

enum : uint8_t {  // TCP option kinds (IANA)
  kOptEol = 0, kOptNop = 1, kOptMss = 2, kOptWscale = 3, kOptSackPerm = 4, kOptSack = 5, kOptTs = 8,
};

inline uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t be32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | p[3];
}
inline void put16(uint8_t* p, uint16_t v) { p[0] = static_cast<uint8_t>(v >> 8); p[1] = static_cast<uint8_t>(v); }
inline void put32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24); p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);  p[3] = static_cast<uint8_t>(v);
}
inline uint32_t ld32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
inline uint16_t ld16(const uint8_t* p) { uint16_t v; std::memcpy(&v, p, 2); return v; }

inline uint32_t fold64(uint64_t s) {
  s = (s & 0xFFFFFFFFu) + (s >> 32);
  s = (s & 0xFFFFFFFFu) + (s >> 32);
  return static_cast<uint32_t>(s);
}

// Pseudo-header sum (RFC 793 3.1). Only the low 16 bits of tcp_len fit the
// field; a single IPv4 packet never needs more.
inline uint32_t pseudo_sum(uint32_t saddr, uint32_t daddr, size_t tcp_len) {
  uint8_t ph[12];
  std::memcpy(ph, &saddr, 4);
  std::memcpy(ph + 4, &daddr, 4);
  ph[8] = 0;
  ph[9] = kIpProtoTcp;
  put16(ph + 10, static_cast<uint16_t>(tcp_len));
  return csum_partial(ph, sizeof ph, 0);
}

// Options of one TCP header. Length rules follow RFC 9293 3.2 and the
// kernel's tcp_parse_options, except that a malformed option fails the
// whole segment instead of being skipped silently.
ParseError parse_tcp_options(const uint8_t* p, size_t len, TcpOptions* o) {
  *o = TcpOptions{};
  size_t i = 0;
  while (i < len) {
    const uint8_t kind = p[i];
    if (kind == kOptEol) break;  // the rest is padding
    if (kind == kOptNop) { ++i; continue; }
    if (i + 1 >= len) return ParseError::kBadTcpOptions;  // no room for the length byte
    const uint8_t olen = p[i + 1];
    if (olen < 2 || olen > len - i) return ParseError::kBadTcpOptions;
    const uint8_t* v = p + i + 2;
    switch (kind) {
      case kOptMss:
        if (olen != 4) return ParseError::kBadTcpOptions;
        o->has_mss = true;
        o->mss = be16(v);
        break;
      case kOptWscale:
        if (olen != 3) return ParseError::kBadTcpOptions;
        o->has_wscale = true;
        o->wscale = v[0] > kMaxWscale ? kMaxWscale : v[0];
        break;
      case kOptSackPerm:
        if (olen != 2) return ParseError::kBadTcpOptions;
        o->sack_permitted = true;
        break;
      case kOptSack: {
        // 2 + 8n bytes, n >= 1; 40 bytes of options bound n to 4.
        if (olen < 10 || (olen - 2) % 8 != 0) return ParseError::kBadTcpOptions;
        const int n = (olen - 2) / 8;
        o->sack_count = static_cast<uint8_t>(n);  // a later SACK option replaces an earlier one
        for (int b = 0; b < n; ++b) {
          o->sack[b].left = be32(v + 8 * b);
          o->sack[b].right = be32(v + 8 * b + 4);
        }
        break;
      }
      case kOptTs:
        if (olen != 10) return ParseError::kBadTcpOptions;
        o->has_ts = true;
        o->tsval = be32(v);
        o->tsecr = be32(v + 4);
        break;
      default:
        break;  // unknown: skipped by its length
    }
    i += olen;
  }
  return ParseError::kOk;
}

// Shared by both entry points. big_tcp: an IPv4 total length of 0 means
// "the buffer length" when the buffer exceeds what the field can express.
// The IPv4 header's checks, shared by TCP and UDP: its length (*ihl) and the
// packet's (*ip_len), or the first reason it fails (length, version, checksum,
// fragment), in that order.
ParseError ipv4_header(const uint8_t* ip, size_t len, bool big_tcp, size_t* ihl_out, size_t* ip_len_out) {
  if (len < kIpMinHdr) return ParseError::kTruncatedIp;
  const uint8_t vihl = ip[0];
  const size_t ihl = static_cast<size_t>(vihl & 0x0F) * 4;
  if ((vihl >> 4) != 4 || ihl < kIpMinHdr) return ParseError::kBadIpHeader;
  if (len < ihl) return ParseError::kTruncatedIp;
  size_t ip_len = be16(ip + 2);
  if (ip_len == 0 && big_tcp && len > kIpMaxLen && len <= UINT32_MAX) ip_len = len;  // BIG TCP super-frame
  if (ip_len < ihl) return ParseError::kBadIpHeader;
  if (!ipv4_header_checksum_ok(ip, ihl)) return ParseError::kBadIpChecksum;
  if (is_ip_fragment(ip)) return ParseError::kIpFragment;
  *ihl_out = ihl;
  *ip_len_out = ip_len;
  return ParseError::kOk;
}

ParseError parse_ip(const uint8_t* ip, size_t len, bool allow_truncated_payload, bool big_tcp,
                    Segment* out) {
  size_t ihl = 0, ip_len = 0;
  const ParseError he = ipv4_header(ip, len, big_tcp, &ihl, &ip_len);
  if (he != ParseError::kOk) return he;
  if (ip[9] != kIpProtoTcp) return ParseError::kNotTcp;

  // TCP header: first the fixed part, then the announced one.
  if (ip_len < ihl + kTcpMinHdr || len < ihl + kTcpMinHdr) return ParseError::kTruncatedTcp;
  const uint8_t* tcp = ip + ihl;
  const size_t thl = static_cast<size_t>(tcp[12] >> 4) * 4;
  if (thl < kTcpMinHdr || thl > ip_len - ihl) return ParseError::kBadTcpHeader;
  if (len < ihl + thl) return ParseError::kTruncatedTcp;
  const ParseError oe = parse_tcp_options(tcp + kTcpMinHdr, thl - kTcpMinHdr, &out->opt);
  if (oe != ParseError::kOk) return oe;
  if (len < ip_len && !allow_truncated_payload) return ParseError::kTruncatedIp;

  out->ip = ip;
  out->ip_len = static_cast<uint32_t>(ip_len);
  out->ip_hdr_len = static_cast<uint8_t>(ihl);
  out->tcp_hdr_len = static_cast<uint8_t>(thl);
  std::memcpy(&out->saddr, ip + 12, 4);
  std::memcpy(&out->daddr, ip + 16, 4);
  out->tos = ip[1];
  out->ip_id = be16(ip + 4);
  out->ttl = ip[8];
  out->sport = be16(tcp);
  out->dport = be16(tcp + 2);
  out->seq = be32(tcp + 4);
  out->ack = be32(tcp + 8);
  out->flags = tcp[13];
  out->window = be16(tcp + 14);
  out->options = tcp + kTcpMinHdr;
  out->options_len = static_cast<uint8_t>(thl - kTcpMinHdr);
  out->payload = tcp + thl;
  out->payload_len = static_cast<uint32_t>(ip_len - ihl - thl);
  return ParseError::kOk;
}

}  // namespace

ParseError parse_ethernet(const uint8_t* frame, size_t caplen, Segment* out) {
  return parse_ethernet(frame, caplen, false, out);
}

namespace {

// Where the IPv4 header starts in an Ethernet frame, after at most two VLAN tags.
ParseError l2_offset(const uint8_t* frame, size_t caplen, size_t* off_out) {
  if (caplen < kEthHdrLen) return ParseError::kTruncatedL2;
  size_t off = kEthHdrLen;
  uint16_t type = be16(frame + 12);
  for (int tags = 0; type == kEth8021Q || type == kEth8021AD || type == kEthQinQ; ++tags) {
    if (tags == kMaxVlanTags) return ParseError::kNotIpv4;
    if (caplen < off + kVlanTagLen) return ParseError::kTruncatedL2;
    type = be16(frame + off + 2);
    off += kVlanTagLen;
  }
  if (type != kEthIpv4) return ParseError::kNotIpv4;
  *off_out = off;
  return ParseError::kOk;
}

}  // namespace

ParseError parse_ethernet(const uint8_t* frame, size_t caplen, bool allow_truncated_payload, Segment* out) {
  size_t off = 0;
  const ParseError e = l2_offset(frame, caplen, &off);
  if (e != ParseError::kOk) return e;
  return parse_ip(frame + off, caplen - off, allow_truncated_payload, true, out);
}

const uint8_t* ethernet_ipv4(const uint8_t* frame, size_t caplen, size_t* len) {
  size_t off = 0;
  if (l2_offset(frame, caplen, &off) != ParseError::kOk) return nullptr;
  *len = caplen - off;
  return frame + off;
}

ParseError parse_udp(const uint8_t* ip, size_t len, Datagram* out) {
  constexpr uint8_t kIpProtoUdp = 17;
  constexpr size_t kUdpHdr = 8;
  size_t ihl = 0, ip_len = 0;
  const ParseError he = ipv4_header(ip, len, false, &ihl, &ip_len);
  if (he != ParseError::kOk) return he;
  if (ip[9] != kIpProtoUdp) return ParseError::kNotTcp;
  if (len < ip_len) return ParseError::kTruncatedIp;
  if (ip_len < ihl + kUdpHdr) return ParseError::kBadUdpLength;
  const uint8_t* udp = ip + ihl;
  if (be16(udp + 4) != ip_len - ihl) return ParseError::kBadUdpLength;
  out->ip = ip;
  out->ip_len = static_cast<uint32_t>(ip_len);
  std::memcpy(&out->saddr, ip + 12, 4);
  std::memcpy(&out->daddr, ip + 16, 4);
  out->sport = be16(udp);
  out->dport = be16(udp + 2);
  out->payload = udp + kUdpHdr;
  out->payload_len = static_cast<uint32_t>(ip_len - ihl - kUdpHdr);
  return ParseError::kOk;
}

bool parse_icmp_tcp_error(const uint8_t* ip, size_t len, IcmpTcpQuote* q) {
  constexpr uint8_t kIcmpProto = 1, kDestUnreach = 3, kTimeExceeded = 11;
  constexpr size_t kIcmpHdr = 8, kQuotedTcp = 8;
  if (len < kIpMinHdr || (ip[0] >> 4) != 4) return false;
  const size_t ihl = size_t(ip[0] & 0x0f) * 4;
  if (ihl < kIpMinHdr || ip[9] != kIcmpProto || is_ip_fragment(ip)) return false;
  const size_t ip_len = std::min<size_t>(be16(ip + 2), len);
  if (ip_len < ihl + kIcmpHdr + kIpMinHdr) return false;
  const uint8_t* icmp = ip + ihl;
  if (icmp[0] != kDestUnreach && icmp[0] != kTimeExceeded) return false;
  const uint8_t* in = icmp + kIcmpHdr;
  const size_t in_ihl = size_t(in[0] & 0x0f) * 4;
  if ((in[0] >> 4) != 4 || in_ihl < kIpMinHdr || in[9] != kIpProtoTcp || ip_len < ihl + kIcmpHdr + in_ihl + kQuotedTcp) return false;
  const uint8_t* tcp = in + in_ihl;
  std::memcpy(&q->daddr, ip + 16, 4);
  std::memcpy(&q->in_saddr, in + 12, 4);
  std::memcpy(&q->in_daddr, in + 16, 4);
  q->in_sport = be16(tcp);
  q->in_dport = be16(tcp + 2);
  q->in_seq = be32(tcp + 4);
  q->icmp_off = ihl;
  q->seq_off = size_t(tcp + 4 - ip);
  return true;
}

void set_icmp_quoted_seq(uint8_t* ip, const IcmpTcpQuote& q, uint32_t seq) {
  uint32_t from, to = htonl(seq);
  std::memcpy(&from, ip + q.seq_off, 4);
  std::memcpy(ip + q.seq_off, &to, 4);
  uint16_t check;
  std::memcpy(&check, ip + q.icmp_off + 2, 2);
  check = csum_replace4(check, from, to);
  std::memcpy(ip + q.icmp_off + 2, &check, 2);
}

ParseError parse_ipv4(const uint8_t* ip, size_t len, bool allow_truncated_payload, Segment* out) {
  // A truncated copy cannot tell a super-frame from a bad header.
  return parse_ip(ip, len, allow_truncated_payload, !allow_truncated_payload, out);
}

size_t build_segment(const SegmentSpec& spec, uint8_t* out, size_t cap) {
  const bool structured = spec.has_ts || spec.sack_count > 0;
  if (spec.raw_options_len > 0 && (structured || spec.raw_options == nullptr)) return 0;
  if (spec.raw_options_len > kTcpMaxOpts) return 0;
  if (spec.payload_len > 0 && spec.payload == nullptr) return 0;
  if (spec.payload2_len > 0 && spec.payload2 == nullptr) return 0;
  const size_t payload_len = size_t(spec.payload_len) + spec.payload2_len;

  // Structured options: NOP,NOP,TS then NOP,NOP,SACK; blocks that do not fit
  // in 40 bytes are dropped (3 with timestamps, 4 without).
  size_t opt_len;
  int sacks = 0;
  if (spec.raw_options_len > 0) {
    opt_len = (spec.raw_options_len + 3u) & ~3u;
  } else {
    opt_len = spec.has_ts ? 12 : 0;
    sacks = spec.sack_count > kMaxSackBlocks ? kMaxSackBlocks : spec.sack_count;
    while (sacks > 0 && opt_len + 4 + 8 * static_cast<size_t>(sacks) > kTcpMaxOpts) --sacks;
    if (sacks > 0) opt_len += 4 + 8 * static_cast<size_t>(sacks);
  }
  const size_t thl = kTcpMinHdr + opt_len;
  const size_t hdr = kIpMinHdr + thl;
  if (payload_len > kIpMaxLen - hdr) return 0;
  const size_t total = hdr + payload_len;
  if (total > cap) return 0;

  // Payload first: memmove lets the caller have placed it in out already.
  if (spec.payload_len > 0) std::memmove(out + hdr, spec.payload, spec.payload_len);
  if (spec.payload2_len > 0) std::memcpy(out + hdr + spec.payload_len, spec.payload2, spec.payload2_len);

  uint8_t* ip = out;
  ip[0] = 0x45;
  ip[1] = spec.tos;
  put16(ip + 2, static_cast<uint16_t>(total));
  put16(ip + 4, spec.ip_id);
  put16(ip + 6, kIpDf);
  ip[8] = spec.ttl;
  ip[9] = kIpProtoTcp;
  ip[10] = ip[11] = 0;
  std::memcpy(ip + 12, &spec.saddr, 4);
  std::memcpy(ip + 16, &spec.daddr, 4);
  const uint16_t ipc = ipv4_header_checksum(ip, kIpMinHdr);
  std::memcpy(ip + 10, &ipc, 2);

  uint8_t* tcp = out + kIpMinHdr;
  put16(tcp, spec.sport);
  put16(tcp + 2, spec.dport);
  put32(tcp + 4, spec.seq);
  put32(tcp + 8, spec.ack);
  tcp[12] = static_cast<uint8_t>((thl / 4) << 4);
  tcp[13] = spec.flags;
  put16(tcp + 14, spec.window);
  tcp[16] = tcp[17] = 0;  // checksum
  tcp[18] = tcp[19] = 0;  // urgent pointer
  uint8_t* o = tcp + kTcpMinHdr;
  if (spec.raw_options_len > 0) {
    std::memcpy(o, spec.raw_options, spec.raw_options_len);
    std::memset(o + spec.raw_options_len, kOptEol, opt_len - spec.raw_options_len);
  } else {
    if (spec.has_ts) {
      o[0] = kOptNop; o[1] = kOptNop; o[2] = kOptTs; o[3] = 10;
      put32(o + 4, spec.tsval);
      put32(o + 8, spec.tsecr);
      o += 12;
    }
    if (sacks > 0) {
      o[0] = kOptNop; o[1] = kOptNop; o[2] = kOptSack; o[3] = static_cast<uint8_t>(2 + 8 * sacks);
      for (int b = 0; b < sacks; ++b) {
        put32(o + 4 + 8 * b, spec.sack[b].left);
        put32(o + 8 + 8 * b, spec.sack[b].right);
      }
    }
  }
  const uint16_t tc = tcp_checksum_ipv4(spec.saddr, spec.daddr, tcp, total - kIpMinHdr);
  std::memcpy(tcp + 16, &tc, 2);
  return total;
}

// ---- checksums ----
// Sums are kept in the machine's byte order, as the kernel does: the one's
// complement sum is byte-order independent up to a final byte swap, so a
// result stored with memcpy lands in network order on any host.

uint32_t csum_partial(const void* data, size_t len, uint32_t sum) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint64_t total = sum;
  // Four independent 64-bit accumulators of 32-bit words: no carry chain,
  // and 2^32 additions fit before any can overflow; chunks of 1 GiB keep
  // that bound for any len.
  constexpr size_t kChunk = size_t{1} << 30;
  while (len >= 16) {
    size_t n = len < kChunk ? len & ~size_t{15} : kChunk;
    len -= n;
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (; n; n -= 16, p += 16) {
      a0 += ld32(p);
      a1 += ld32(p + 4);
      a2 += ld32(p + 8);
      a3 += ld32(p + 12);
    }
    total = static_cast<uint64_t>(fold64(total)) + fold64(a0 + a1) + fold64(a2 + a3);
  }
  for (; len >= 4; len -= 4, p += 4) total += ld32(p);
  if (len >= 2) { total += ld16(p); p += 2; len -= 2; }
  if (len) {  // trailing byte is the high-address-zero-padded 16-bit word
    uint16_t w = 0;
    std::memcpy(&w, p, 1);
    total += w;
  }
  return fold64(total);
}

uint16_t csum_fold(uint32_t sum) {
  sum = (sum & 0xFFFF) + (sum >> 16);
  sum = (sum & 0xFFFF) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

uint16_t ipv4_header_checksum(const uint8_t* ip, size_t ihl_bytes) {
  if (ihl_bytes < 12) return csum_fold(csum_partial(ip, ihl_bytes, 0));
  // Skip the checksum field itself (bytes 10-11) instead of requiring it zeroed.
  uint32_t s = csum_partial(ip, 10, 0);
  return csum_fold(csum_partial(ip + 12, ihl_bytes - 12, s));
}

uint16_t tcp_checksum_ipv4(uint32_t saddr, uint32_t daddr, const uint8_t* tcp, size_t tcp_len) {
  uint32_t s = pseudo_sum(saddr, daddr, tcp_len);
  if (tcp_len < 18) return csum_fold(csum_partial(tcp, tcp_len, s));
  // Skip the checksum field (bytes 16-17).
  s = csum_partial(tcp, 16, s);
  return csum_fold(csum_partial(tcp + 18, tcp_len - 18, s));
}

bool ipv4_header_checksum_ok(const uint8_t* ip, size_t ihl_bytes) {
  return csum_fold(csum_partial(ip, ihl_bytes, 0)) == 0;
}

bool tcp_checksum_ok_ipv4(const uint8_t* ip) {
  const size_t ihl = static_cast<size_t>(ip[0] & 0x0F) * 4;
  const size_t tot = be16(ip + 2);
  if (ihl < kIpMinHdr || tot < ihl + kTcpMinHdr) return false;
  uint32_t saddr, daddr;
  std::memcpy(&saddr, ip + 12, 4);
  std::memcpy(&daddr, ip + 16, 4);
  const uint32_t s = pseudo_sum(saddr, daddr, tot - ihl);
  return csum_fold(csum_partial(ip + ihl, tot - ihl, s)) == 0;
}

// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'). Unlike eqn. 2 it never yields
// 0xFFFF (-0) for a header whose full checksum is 0x0000, so it agrees with
// a full recompute bit for bit.
uint16_t csum_replace4(uint16_t check, uint32_t from, uint32_t to) {
  uint64_t s = static_cast<uint16_t>(~check);
  s += static_cast<uint32_t>(~from);
  s += to;
  return csum_fold(fold64(s));
}

uint16_t csum_replace2(uint16_t check, uint16_t from, uint16_t to) {
  uint32_t s = static_cast<uint16_t>(~check);
  s += static_cast<uint16_t>(~from);
  s += to;
  return csum_fold(s);
}

}  // namespace t2cp
