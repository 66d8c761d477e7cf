// Native tests of the packet layer (addon/packet.cc) and sequence arithmetic
// (addon/seq.h). No framework (check.h): each TEST is a function, a test fails if any
// CHECK in it fails, and the last line printed is "N passed, N failed".
// Built and run under ASan/UBSan by test/native/run.sh.
//
//   packet_test                   run every test
//   packet_test --seed N          other random seed (default fixed)
//   packet_test --write-corpus D  write fuzzer seed frames into directory D and exit
//   packet_test --bench           print parse/build timings (one figure a line) and exit
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "check.h"
#include "packet.h"
#include "seq.h"

using namespace t2cp;

namespace {

// ---------------------------------------------------------------- harness

#define CHECK_ERR(call, want)                                                              \
  do {                                                                                     \
    const ParseError got_ = (call);                                                        \
    if (got_ != (want)) {                                                                  \
      if (g_check_failures++ < 10)                                                         \
        std::printf("  FAIL %s: %s:%d: %s -> %s, want %s\n", g_test_name, __FILE__,        \
                    __LINE__, #call, kParseErrorNames[static_cast<int>(got_)],             \
                    kParseErrorNames[static_cast<int>(want)]);                             \
    }                                                                                      \
  } while (0)

// ---------------------------------------------------------------- helpers

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
void wr16(uint8_t* p, uint16_t v) { p[0] = static_cast<uint8_t>(v >> 8); p[1] = static_cast<uint8_t>(v); }
void wr32(uint8_t* p, uint32_t v) { wr16(p, static_cast<uint16_t>(v >> 16)); wr16(p + 2, static_cast<uint16_t>(v)); }
// A checksum as returned by the library (host value to memcpy) read as big-endian.
uint16_t stored_be(uint16_t c) { uint8_t b[2]; std::memcpy(b, &c, 2); return rd16(b); }

// Independent RFC 1071 reference: big-endian 16-bit words, one fold per add.
uint32_t naive_sum(const uint8_t* p, size_t n, uint32_t s = 0) {
  for (size_t i = 0; i < n; i += 2) {
    s += static_cast<uint32_t>(p[i]) << 8 | (i + 1 < n ? p[i + 1] : 0);
    s = (s & 0xFFFF) + (s >> 16);
  }
  return s;
}
uint16_t naive_check(const uint8_t* p, size_t n, uint32_t s = 0) {
  return static_cast<uint16_t>(~naive_sum(p, n, s) & 0xFFFF);
}
// Sum of the TCP pseudo-header, big-endian words.
uint32_t naive_pseudo(const uint8_t* ip, size_t tcp_len) {
  uint8_t ph[12];
  std::memcpy(ph, ip + 12, 8);
  ph[8] = 0;
  ph[9] = 6;
  wr16(ph + 10, static_cast<uint16_t>(tcp_len));
  return naive_sum(ph, 12);
}
// Whole packet verification with the reference implementation.
bool naive_ip_ok(const uint8_t* ip) { return naive_sum(ip, (ip[0] & 15) * 4u) == 0xFFFF; }
bool naive_tcp_ok(const uint8_t* ip) {
  const size_t ihl = (ip[0] & 15) * 4u, tot = rd16(ip + 2);
  return naive_sum(ip + ihl, tot - ihl, naive_pseudo(ip, tot - ihl)) == 0xFFFF;
}
// Rewrites the IPv4 header checksum after a crafted edit (reference impl).
void fix_ip_check(uint8_t* ip) {
  const size_t ihl = (ip[0] & 15) * 4u;
  ip[10] = ip[11] = 0;
  wr16(ip + 10, naive_check(ip, ihl));
}

uint32_t addr(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {  // network order, like inet_addr
  const uint8_t bytes[4] = {a, b, c, d};
  uint32_t v;
  std::memcpy(&v, bytes, 4);
  return v;
}

using Bytes = std::vector<uint8_t>;

// An exactly sized heap copy, so ASan reports any read past the end.
std::unique_ptr<uint8_t[]> exact_copy(const uint8_t* p, size_t n) {
  std::unique_ptr<uint8_t[]> b(new uint8_t[n ? n : 1]);
  if (n) std::memcpy(b.get(), p, n);
  return b;
}

// Ethernet header + tags + IP packet.
Bytes ethernet(const uint8_t* ip, size_t n, std::initializer_list<uint16_t> tpids = {}) {
  Bytes f = {0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2};
  for (uint16_t t : tpids) {
    f.push_back(static_cast<uint8_t>(t >> 8));
    f.push_back(static_cast<uint8_t>(t));
    f.push_back(0x00);  // PCP/DEI/VID
    f.push_back(0x2A);
  }
  f.push_back(0x08);
  f.push_back(0x00);
  f.insert(f.end(), ip, ip + n);
  return f;
}

SegmentSpec basic_spec() {
  SegmentSpec s;
  s.saddr = addr(10, 0, 0, 1);
  s.daddr = addr(10, 0, 0, 2);
  s.sport = 40000;
  s.dport = 80;
  s.seq = 1000;
  s.ack = 2000;
  s.flags = kAck | kPsh;
  s.window = 512;
  s.ip_id = 7;
  return s;
}

Bytes build(const SegmentSpec& s) {
  Bytes b(65536);
  const size_t n = build_segment(s, b.data(), b.size());
  b.resize(n);
  return b;
}

// A valid IP packet with timestamps, 2 SACK blocks and a 100-byte payload.
Bytes sample_ip(size_t payload_len = 100) {
  SegmentSpec s = basic_spec();
  s.has_ts = true;
  s.tsval = 0x01020304;
  s.tsecr = 0x05060708;
  s.sack_count = 2;
  s.sack[0] = {5000, 6000};
  s.sack[1] = {7000, 8000};
  Bytes payload(payload_len);
  for (size_t i = 0; i < payload_len; ++i) payload[i] = static_cast<uint8_t>(i * 7);
  s.payload = payload.data();
  s.payload_len = static_cast<uint32_t>(payload_len);
  return build(s);
}

// A packet with the given raw TCP options (length a multiple of 4) and IHL.
Bytes ip_with_options(const Bytes& opts, size_t ip_opt_len = 0, size_t payload_len = 8) {
  SegmentSpec s = basic_spec();
  Bytes payload(payload_len, 0xAB);
  s.payload = payload.data();
  s.payload_len = static_cast<uint32_t>(payload_len);
  Bytes b = build(s);
  // Options spliced in by hand, so that malformed ones and IP options can be
  // made; both checksums recomputed with the reference implementation.
  b.insert(b.begin() + 40, opts.begin(), opts.end());
  b[32] = static_cast<uint8_t>(((20 + opts.size()) / 4) << 4);
  Bytes ipopt(ip_opt_len, 0x01);  // NOP IP options
  b.insert(b.begin() + 20, ipopt.begin(), ipopt.end());
  b[0] = static_cast<uint8_t>(0x40 | (20 + ip_opt_len) / 4);
  wr16(&b[2], static_cast<uint16_t>(b.size()));
  fix_ip_check(b.data());
  const size_t ihl = 20 + ip_opt_len;
  b[ihl + 16] = b[ihl + 17] = 0;
  wr16(&b[ihl + 16], naive_check(&b[ihl], b.size() - ihl, naive_pseudo(b.data(), b.size() - ihl)));
  return b;
}

bool opts_equal(const TcpOptions& a, const TcpOptions& b) {
  if (a.has_mss != b.has_mss || (a.has_mss && a.mss != b.mss)) return false;
  if (a.has_wscale != b.has_wscale || (a.has_wscale && a.wscale != b.wscale)) return false;
  if (a.sack_permitted != b.sack_permitted) return false;
  if (a.has_ts != b.has_ts || (a.has_ts && (a.tsval != b.tsval || a.tsecr != b.tsecr))) return false;
  if (a.sack_count != b.sack_count) return false;
  for (int i = 0; i < a.sack_count; ++i)
    if (a.sack[i].left != b.sack[i].left || a.sack[i].right != b.sack[i].right) return false;
  return true;
}

// Random well-formed raw options (<= 40 bytes) and what parsing them must give.
size_t random_raw_options(uint8_t* o, TcpOptions* want) {
  *want = TcpOptions{};
  const size_t limit = rnd_below(41);
  size_t n = 0;
  while (n < limit) {
    const size_t room = limit - n;
    switch (rnd_below(9)) {
      case 0: o[n++] = 1; break;  // NOP
      case 1:
        if (room < 4) break;
        want->has_mss = true;
        want->mss = static_cast<uint16_t>(rnd32());
        o[n] = 2; o[n + 1] = 4; wr16(o + n + 2, want->mss); n += 4;
        break;
      case 2: {
        if (room < 3) break;
        const uint8_t ws = static_cast<uint8_t>(rnd_below(3) == 0 ? rnd32() : rnd_below(16));
        want->has_wscale = true;
        want->wscale = ws > 14 ? 14 : ws;
        o[n] = 3; o[n + 1] = 3; o[n + 2] = ws; n += 3;
        break;
      }
      case 3:
        if (room < 2) break;
        want->sack_permitted = true;
        o[n] = 4; o[n + 1] = 2; n += 2;
        break;
      case 4:
        if (room < 10) break;
        want->has_ts = true;
        want->tsval = rnd32();
        want->tsecr = rnd32();
        o[n] = 8; o[n + 1] = 10; wr32(o + n + 2, want->tsval); wr32(o + n + 6, want->tsecr); n += 10;
        break;
      case 5: {
        if (room < 10) break;
        const size_t maxb = (room - 2) / 8 < 4 ? (room - 2) / 8 : 4;
        const size_t blocks = 1 + rnd_below(static_cast<uint32_t>(maxb));
        o[n] = 5; o[n + 1] = static_cast<uint8_t>(2 + 8 * blocks);
        want->sack_count = static_cast<uint8_t>(blocks);
        for (size_t b = 0; b < blocks; ++b) {
          want->sack[b] = {rnd32(), rnd32()};
          wr32(o + n + 2 + 8 * b, want->sack[b].left);
          wr32(o + n + 6 + 8 * b, want->sack[b].right);
        }
        n += 2 + 8 * blocks;
        break;
      }
      case 6: {  // unknown kind, skipped by its length
        if (room < 2) break;
        static const uint8_t kinds[] = {6, 7, 19, 28, 29, 30, 34, 69, 253, 254, 255};
        const size_t len = 2 + rnd_below(static_cast<uint32_t>(room - 1));
        o[n] = kinds[rnd_below(sizeof kinds)];
        o[n + 1] = static_cast<uint8_t>(len);
        fill_random(o + n + 2, len - 2);
        n += len;
        break;
      }
      case 7:  // EOL then anything: ignored
        if (rnd_below(4) != 0) break;
        o[n++] = 0;
        fill_random(o + n, limit - n);
        return limit;
      default: break;
    }
  }
  return n;
}

// ---------------------------------------------------------------- tests

void test_error_names() {
  for (int i = 0; i < static_cast<int>(ParseError::kCount); ++i) {
    const char* n = kParseErrorNames[i];
    CHECK(n != nullptr);
    if (!n) continue;
    CHECK(std::strlen(n) > 0);
    for (const char* c = n; *c; ++c) CHECK((*c >= 'a' && *c <= 'z') || *c == '_' || (*c >= '0' && *c <= '9'));
    for (int j = 0; j < i; ++j) CHECK(std::strcmp(n, kParseErrorNames[j]) != 0);
  }
  CHECK(std::strcmp(kParseErrorNames[0], "ok") == 0);
  CHECK(std::strcmp(kParseErrorNames[static_cast<int>(ParseError::kTruncatedL2)], "truncated_l2") == 0);
  CHECK(std::strcmp(kParseErrorNames[static_cast<int>(ParseError::kNotIpv4)], "not_ipv4") == 0);
  CHECK(std::strcmp(kParseErrorNames[static_cast<int>(ParseError::kBadTcpOptions)], "bad_tcp_options") == 0);
}

void test_csum_partial_matches_reference() {
  std::vector<uint8_t> buf(70000 + 16);
  fill_random(buf.data(), buf.size());
  for (int iter = 0; iter < 4000; ++iter) {
    const size_t len = iter < 600 ? static_cast<size_t>(iter) : rnd_below(iter % 10 == 0 ? 70000 : 2000);
    const size_t off = rnd_below(8);  // odd alignment included
    const uint8_t* p = buf.data() + off;
    CHECK_EQ(stored_be(csum_fold(csum_partial(p, len, 0))), naive_check(p, len));
    // In pieces: every piece but the last of even length.
    if (len >= 2) {
      const size_t cut = rnd_below(static_cast<uint32_t>(len / 2 + 1)) * 2;
      const uint32_t s = csum_partial(p + cut, len - cut, csum_partial(p, cut, 0));
      CHECK_EQ(stored_be(csum_fold(s)), naive_check(p, len));
    }
  }
  // Extremes: all-ones and all-zeros data, large running sums.
  std::vector<uint8_t> ones(65537, 0xFF), zeros(65537, 0);
  for (size_t len : {0u, 1u, 2u, 3u, 17u, 65535u, 65536u, 65537u}) {
    CHECK_EQ(stored_be(csum_fold(csum_partial(ones.data(), len, 0))), naive_check(ones.data(), len));
    CHECK_EQ(stored_be(csum_fold(csum_partial(zeros.data(), len, 0))), naive_check(zeros.data(), len));
    CHECK_EQ(stored_be(csum_fold(csum_partial(ones.data(), len, 0xFFFFFFFFu))),
             stored_be(csum_fold(csum_partial(ones.data(), len, 0xFFFFu))));  // 0xFFFFFFFF == 0xFFFF + 0xFFFF*2^16
  }
  CHECK_EQ(csum_fold(0), 0xFFFF);
  CHECK_EQ(csum_fold(0xFFFF), 0x0000);
  CHECK_EQ(csum_fold(0xFFFFFFFFu), 0x0000);
  CHECK_EQ(csum_fold(0x0001FFFEu), 0x0000);
}

// Round trip build -> parse of random segments, checked field by field and
// with the reference checksum.
void test_roundtrip_random() {
  std::vector<uint8_t> payload(65535);
  fill_random(payload.data(), payload.size());
  std::vector<uint8_t> out(65535 + 64);
  for (int iter = 0; iter < 3000; ++iter) {
    SegmentSpec s;
    s.saddr = rnd32();
    s.daddr = rnd32();
    s.sport = static_cast<uint16_t>(rnd32());
    s.dport = static_cast<uint16_t>(rnd32());
    s.seq = rnd32();
    s.ack = rnd32();
    s.flags = static_cast<uint8_t>(rnd32());
    s.window = static_cast<uint16_t>(rnd32());
    s.ttl = static_cast<uint8_t>(rnd32());
    s.tos = static_cast<uint8_t>(rnd32());
    s.ip_id = static_cast<uint16_t>(rnd32());
    uint8_t raw[40];
    TcpOptions want;
    const int mode = iter % 3;
    if (mode == 1) {
      s.has_ts = rnd_below(2);
      s.tsval = rnd32();
      s.tsecr = rnd32();
      s.sack_count = static_cast<uint8_t>(rnd_below(6));  // 5 asks for too many
      for (auto& b : s.sack) b = {rnd32(), rnd32()};
      want.has_ts = s.has_ts;
      want.tsval = s.tsval;
      want.tsecr = s.tsecr;
      const int fit = s.has_ts ? 3 : 4;
      want.sack_count = static_cast<uint8_t>(s.sack_count < fit ? s.sack_count : fit);
      for (int b = 0; b < want.sack_count; ++b) want.sack[b] = s.sack[b];
    } else if (mode == 2) {
      s.raw_options_len = static_cast<uint8_t>(random_raw_options(raw, &want));
      s.raw_options = raw;
    }
    const uint32_t r = rnd_below(10);
    uint32_t plen = r < 5 ? rnd_below(1501) : r < 8 ? rnd_below(65001) : r == 8 ? 0 : 65000;
    const size_t hdr = 40 + (mode == 2 ? (s.raw_options_len + 3u) / 4 * 4 : 0) +
                       (mode == 1 ? (want.has_ts ? 12 : 0) + (want.sack_count ? 4 + 8 * want.sack_count : 0) : 0);
    if (hdr + plen > 65535) plen = static_cast<uint32_t>(65535 - hdr);
    const size_t payload_off = rnd_below(static_cast<uint32_t>(payload.size() - plen + 1));
    s.payload = payload.data() + payload_off;
    s.payload_len = plen;

    const size_t n = build_segment(s, out.data(), out.size());
    CHECK_EQ(n, hdr + plen);
    if (n != hdr + plen) continue;
    CHECK(naive_ip_ok(out.data()));
    CHECK(naive_tcp_ok(out.data()));
    CHECK(ipv4_header_checksum_ok(out.data(), 20));
    CHECK(tcp_checksum_ok_ipv4(out.data()));
    CHECK_EQ(rd16(&out[6]), 0x4000);  // DF, no fragment
    CHECK_EQ(out[0], 0x45);
    CHECK_EQ(out[9], 6);

    // Parse from an exactly sized Ethernet frame, maybe VLAN tagged.
    Bytes frame = rnd_below(3) == 0 ? ethernet(out.data(), n, {0x8100}) : ethernet(out.data(), n);
    auto f = exact_copy(frame.data(), frame.size());
    Segment g;
    CHECK_ERR(parse_ethernet(f.get(), frame.size(), &g), ParseError::kOk);
    auto ipcopy = exact_copy(out.data(), n);
    Segment h;
    CHECK_ERR(parse_ipv4(ipcopy.get(), n, false, &h), ParseError::kOk);
    for (const Segment* seg : {&g, &h}) {
      CHECK_EQ(seg->ip_len, n);
      CHECK_EQ(seg->ip_hdr_len, 20);
      CHECK_EQ(seg->tcp_hdr_len, hdr - 20);
      CHECK_EQ(seg->saddr, s.saddr);
      CHECK_EQ(seg->daddr, s.daddr);
      CHECK_EQ(seg->sport, s.sport);
      CHECK_EQ(seg->dport, s.dport);
      CHECK_EQ(seg->seq, s.seq);
      CHECK_EQ(seg->ack, s.ack);
      CHECK_EQ(seg->flags, s.flags);
      CHECK_EQ(seg->window, s.window);
      CHECK_EQ(seg->ttl, s.ttl);
      CHECK_EQ(seg->tos, s.tos);
      CHECK_EQ(seg->ip_id, s.ip_id);
      CHECK_EQ(seg->options_len, hdr - 40);
      CHECK(seg->options == seg->ip + 40);
      CHECK(seg->payload == seg->ip + hdr);
      CHECK_EQ(seg->payload_len, plen);
      CHECK(plen == 0 || std::memcmp(seg->payload, s.payload, plen) == 0);
      CHECK(opts_equal(seg->opt, want));
      if (mode == 2) {
        CHECK(std::memcmp(seg->options, raw, s.raw_options_len) == 0);
        for (size_t i = s.raw_options_len; i < seg->options_len; ++i) CHECK_EQ(seg->options[i], 0);  // EOL pad
      }
    }
    CHECK(g.ip == f.get() + frame.size() - n);
    CHECK(h.ip == ipcopy.get());
  }
}

// A payload in two pieces (a stream buffer's bytes across two chunks) gives
// the very packet the same bytes in one piece give; its limits count both.
void test_build_two_pieces() {
  std::vector<uint8_t> payload(65535 - 40);
  fill_random(payload.data(), payload.size());
  for (uint32_t len : {1u, 1448u, 65535u - 40}) {
    SegmentSpec whole = basic_spec();
    whole.payload = payload.data();
    whole.payload_len = len;
    const Bytes want = build(whole);
    for (uint32_t cut : {0u, 1u, len / 2, len - 1, len}) {
      SegmentSpec split = basic_spec();
      split.payload = payload.data();
      split.payload_len = cut;
      split.payload2 = payload.data() + cut;
      split.payload2_len = len - cut;
      CHECK(build(split) == want);
    }
  }
  std::vector<uint8_t> out(70000);
  SegmentSpec s = basic_spec();
  s.payload = payload.data();
  s.payload_len = 40000;
  s.payload2 = payload.data();
  s.payload2_len = 65535 - 40 - 40000 + 1;  // one byte beyond the IPv4 maximum
  CHECK_EQ(build_segment(s, out.data(), out.size()), 0u);
  s.payload2 = nullptr;
  s.payload2_len = 1;
  CHECK_EQ(build_segment(s, out.data(), out.size()), 0u);
}

void test_build_limits() {
  SegmentSpec s = basic_spec();
  std::vector<uint8_t> payload(70000, 0x5A);
  std::vector<uint8_t> out(70000);
  s.payload = payload.data();
  s.payload_len = 100;
  CHECK_EQ(build_segment(s, out.data(), 140), 140u);
  CHECK_EQ(build_segment(s, out.data(), 139), 0u);
  CHECK_EQ(build_segment(s, out.data(), 0), 0u);
  s.payload_len = 65535 - 40;
  CHECK_EQ(build_segment(s, out.data(), out.size()), 65535u);
  CHECK(tcp_checksum_ok_ipv4(out.data()));
  CHECK(naive_tcp_ok(out.data()));
  s.payload_len = 65535 - 40 + 1;
  CHECK_EQ(build_segment(s, out.data(), out.size()), 0u);
  s.payload_len = 0xFFFFFFFFu;
  CHECK_EQ(build_segment(s, out.data(), out.size()), 0u);
  s.payload_len = 65535 - 40 - 12;
  s.has_ts = true;
  CHECK_EQ(build_segment(s, out.data(), out.size()), 65535u);
  s.payload_len = 65535 - 40 - 12 + 1;
  CHECK_EQ(build_segment(s, out.data(), out.size()), 0u);

  // Inconsistent specs.
  const uint8_t raw[44] = {2, 4, 5, 0xB4};
  SegmentSpec t = basic_spec();
  t.raw_options = raw;
  t.raw_options_len = 4;
  t.has_ts = true;
  CHECK_EQ(build_segment(t, out.data(), out.size()), 0u);  // raw + structured
  t.has_ts = false;
  t.sack_count = 1;
  CHECK_EQ(build_segment(t, out.data(), out.size()), 0u);
  t.sack_count = 0;
  t.raw_options_len = 41;
  CHECK_EQ(build_segment(t, out.data(), out.size()), 0u);
  t.raw_options_len = 40;
  CHECK_EQ(build_segment(t, out.data(), out.size()), 80u);
  t.raw_options = nullptr;
  CHECK_EQ(build_segment(t, out.data(), out.size()), 0u);
  t.raw_options_len = 0;
  t.payload_len = 1;
  CHECK_EQ(build_segment(t, out.data(), out.size()), 0u);  // null payload

  // Raw options padded with EOL at the end.
  SegmentSpec u = basic_spec();
  const uint8_t mss_ws[7] = {2, 4, 0x05, 0xB4, 3, 3, 7};
  u.raw_options = mss_ws;
  u.raw_options_len = 7;
  CHECK_EQ(build_segment(u, out.data(), out.size()), 48u);
  CHECK(std::memcmp(&out[40], mss_ws, 7) == 0);
  CHECK_EQ(out[47], 0);
  CHECK_EQ(out[32] >> 4, 7);

  // SACK blocks that do not fit are dropped; layout NOP,NOP,TS,NOP,NOP,SACK.
  SegmentSpec v = basic_spec();
  v.has_ts = true;
  v.tsval = 11;
  v.tsecr = 22;
  v.sack_count = 4;
  for (int i = 0; i < 4; ++i) v.sack[i] = {100u * i, 100u * i + 50};
  CHECK_EQ(build_segment(v, out.data(), out.size()), 80u);
  const uint8_t want_prefix[] = {1, 1, 8, 10, 0, 0, 0, 11, 0, 0, 0, 22, 1, 1, 5, 26};
  CHECK(std::memcmp(&out[40], want_prefix, sizeof want_prefix) == 0);
  Segment seg;
  CHECK_ERR(parse_ipv4(out.data(), 80, false, &seg), ParseError::kOk);
  CHECK_EQ(seg.opt.sack_count, 3);
  CHECK_EQ(seg.opt.sack[2].right, 250u);
  v.has_ts = false;
  CHECK_EQ(build_segment(v, out.data(), out.size()), 76u);
  CHECK_ERR(parse_ipv4(out.data(), 76, false, &seg), ParseError::kOk);
  CHECK_EQ(seg.opt.sack_count, 4);
  CHECK(!seg.opt.has_ts);
  v.sack_count = 9;
  CHECK_EQ(build_segment(v, out.data(), out.size()), 76u);

  // Payload already in place (moved, not copied).
  SegmentSpec w = basic_spec();
  for (int i = 0; i < 300; ++i) out[40 + i] = static_cast<uint8_t>(i);
  w.payload = out.data() + 40;
  w.payload_len = 300;
  CHECK_EQ(build_segment(w, out.data(), out.size()), 340u);
  for (int i = 0; i < 300; ++i) CHECK_EQ(out[40 + i], static_cast<uint8_t>(i));
  CHECK(naive_tcp_ok(out.data()));
}

// RFC 1624 incremental updates agree with a full recompute.
void test_incremental_checksum() {
  std::vector<uint8_t> payload(1400);
  for (int iter = 0; iter < 5000; ++iter) {
    SegmentSpec s = basic_spec();
    s.saddr = rnd32();
    s.daddr = rnd32();
    s.seq = rnd32();
    s.ack = rnd32();
    s.has_ts = iter & 1;
    s.tsval = rnd32();
    fill_random(payload.data(), 64);
    s.payload = payload.data();
    s.payload_len = rnd_below(65);
    Bytes b = build(s);
    uint8_t* ip = b.data();
    uint8_t* tcp = ip + 20;
    const size_t tcp_len = b.size() - 20;
    const int field = static_cast<int>(rnd_below(7));
    // Offsets of 32-bit fields: saddr, daddr (IP + TCP pseudo), seq, ack.
    if (field < 4) {
      uint8_t* p = field == 0 ? ip + 12 : field == 1 ? ip + 16 : field == 2 ? tcp + 4 : tcp + 8;
      uint32_t from, to = rnd_below(8) == 0 ? (rnd_below(2) ? 0u : 0xFFFFFFFFu) : rnd32();
      if (rnd_below(16) == 0) std::memcpy(&to, p, 4);  // no change
      std::memcpy(&from, p, 4);
      uint16_t tc, ic;
      std::memcpy(&tc, tcp + 16, 2);
      std::memcpy(&ic, ip + 10, 2);
      std::memcpy(p, &to, 4);
      const uint16_t new_tc = csum_replace4(tc, from, to);
      uint32_t sa, da;
      std::memcpy(&sa, ip + 12, 4);
      std::memcpy(&da, ip + 16, 4);
      CHECK_EQ(new_tc, tcp_checksum_ipv4(sa, da, tcp, tcp_len));
      std::memcpy(tcp + 16, &new_tc, 2);
      CHECK(naive_tcp_ok(ip));
      if (field < 2) {
        const uint16_t new_ic = csum_replace4(ic, from, to);
        CHECK_EQ(new_ic, ipv4_header_checksum(ip, 20));
        std::memcpy(ip + 10, &new_ic, 2);
        CHECK(naive_ip_ok(ip));
      }
    } else {
      // 16-bit fields: sport, dport, window.
      uint8_t* p = field == 4 ? tcp : field == 5 ? tcp + 2 : tcp + 14;
      uint16_t from, to = static_cast<uint16_t>(rnd32()), tc;
      std::memcpy(&from, p, 2);
      std::memcpy(&tc, tcp + 16, 2);
      std::memcpy(p, &to, 2);
      const uint16_t new_tc = csum_replace2(tc, from, to);
      CHECK_EQ(new_tc, tcp_checksum_ipv4(s.saddr, s.daddr, tcp, tcp_len));
    }
  }

  // RFC 1624 corner cases on a 4-word block whose checksum is at words[4]:
  // results of 0x0000 (sum 0xFFFF), 0 <-> 0xFFFF changes, unchanged fields.
  for (int iter = 0; iter < 200000; ++iter) {
    uint8_t blk[10];
    fill_random(blk, 8);
    if (iter % 5 == 0) {  // force the old sum to 0xFFFF: old checksum 0x0000
      const uint32_t rest = naive_sum(blk, 6);
      wr16(blk + 6, static_cast<uint16_t>(0xFFFF - rest));
    }
    blk[8] = blk[9] = 0;
    const uint16_t c0 = naive_check(blk, 8);
    wr16(blk + 8, c0);
    const size_t k = rnd_below(4) * 2;
    uint16_t from, to;
    std::memcpy(&from, blk + k, 2);
    switch (iter % 4) {
      case 0: {  // new sum exactly 0xFFFF: new checksum 0x0000
        uint8_t tmp[8];
        std::memcpy(tmp, blk, 8);
        tmp[k] = tmp[k + 1] = 0;
        const uint32_t rest = naive_sum(tmp, 8);
        uint8_t w[2];
        wr16(w, static_cast<uint16_t>(0xFFFF - rest));
        std::memcpy(&to, w, 2);
        break;
      }
      case 1: to = rnd_below(2) ? 0x0000 : 0xFFFF; break;
      case 2: to = from; break;
      default: to = static_cast<uint16_t>(rnd32()); break;
    }
    uint16_t stored_c;
    std::memcpy(&stored_c, blk + 8, 2);
    std::memcpy(blk + k, &to, 2);
    const uint16_t inc = csum_replace2(stored_c, from, to);
    CHECK_EQ(stored_be(inc), naive_check(blk, 8));
    // Same change seen as a 32-bit field.
    const size_t k4 = k & ~size_t{2};
    uint8_t before4[4];
    std::memcpy(before4, blk + k4, 4);
    std::memcpy(before4 + (k - k4), &from, 2);
    uint32_t f4, t4;
    std::memcpy(&f4, before4, 4);
    std::memcpy(&t4, blk + k4, 4);
    CHECK_EQ(stored_be(csum_replace4(stored_c, f4, t4)), naive_check(blk, 8));
    if (iter % 4 == 0) CHECK_EQ(naive_check(blk, 8), 0x0000);
  }
}

// Every prefix shorter than the packet fails; never reads past the prefix
// (exactly sized heap copies under ASan).
void test_every_truncation() {
  for (int tags = 0; tags <= 2; ++tags) {
    const Bytes ip = ip_with_options({2, 4, 5, 0xB4, 1, 3, 3, 9}, tags * 4, 100);
    const Bytes frame = tags == 0 ? ethernet(ip.data(), ip.size())
                        : tags == 1 ? ethernet(ip.data(), ip.size(), {0x8100})
                                    : ethernet(ip.data(), ip.size(), {0x88A8, 0x8100});
    const size_t l2 = 14 + 4 * tags, ihl = 20 + 4 * tags, thl = 28;
    for (size_t n = 0; n <= frame.size(); ++n) {
      auto f = exact_copy(frame.data(), n);
      Segment seg;
      const ParseError e = parse_ethernet(f.get(), n, &seg);
      if (n == frame.size()) {
        CHECK_ERR(e, ParseError::kOk);
        CHECK_EQ(seg.opt.wscale, 9);
        CHECK_EQ(seg.opt.mss, 1460);
      } else if (n < l2) {
        CHECK_ERR(e, ParseError::kTruncatedL2);
      } else if (n < l2 + ihl) {
        CHECK_ERR(e, ParseError::kTruncatedIp);
      } else if (n < l2 + ihl + thl) {
        CHECK_ERR(e, ParseError::kTruncatedTcp);
      } else {
        CHECK_ERR(e, ParseError::kTruncatedIp);
      }
      // A cut payload parses when allowed, with the announced length; any
      // other cut fails as in the strict parse.
      Segment loose;
      const ParseError le = parse_ethernet(f.get(), n, true, &loose);
      if (n >= l2 + ihl + thl) {
        CHECK_ERR(le, ParseError::kOk);
        CHECK_EQ(loose.payload_len, 100u);
        CHECK_EQ(loose.ip_len, ip.size());
        CHECK(loose.payload == f.get() + l2 + ihl + thl);
        CHECK_EQ(loose.opt.wscale, 9);
      } else {
        CHECK_ERR(le, e);
      }
    }
    for (size_t n = 0; n <= ip.size(); ++n) {
      auto p = exact_copy(ip.data(), n);
      Segment seg;
      const ParseError strict = parse_ipv4(p.get(), n, false, &seg);
      CHECK((strict == ParseError::kOk) == (n == ip.size()));
      const ParseError loose = parse_ipv4(p.get(), n, true, &seg);
      if (n >= ihl + thl) {
        CHECK_ERR(loose, ParseError::kOk);
        CHECK_EQ(seg.payload_len, 100u);  // announced, not present
        CHECK_EQ(seg.ip_len, ip.size());
        CHECK(seg.payload == p.get() + ihl + thl);
      } else {
        CHECK(loose != ParseError::kOk);
      }
    }
  }
}

// One crafted frame per reason.
void test_each_error_reason() {
  const Bytes ip = sample_ip();
  Segment seg;
  auto eth = [&](const Bytes& p) { return ethernet(p.data(), p.size()); };
  auto parse_eth = [&](const Bytes& f) {
    auto c = exact_copy(f.data(), f.size());
    return parse_ethernet(c.get(), f.size(), &seg);
  };
  auto parse_ip = [&](const Bytes& p, bool loose = false) {
    auto c = exact_copy(p.data(), p.size());
    return parse_ipv4(c.get(), p.size(), loose, &seg);
  };
  CHECK_ERR(parse_eth(eth(ip)), ParseError::kOk);
  CHECK_ERR(parse_ip(ip), ParseError::kOk);

  // kTruncatedL2
  CHECK_ERR(parse_eth(Bytes(13, 0)), ParseError::kTruncatedL2);
  {
    Bytes f = eth(ip);
    f[12] = 0x81; f[13] = 0x00;
    f.resize(16);
    CHECK_ERR(parse_eth(f), ParseError::kTruncatedL2);
  }
  // kNotIpv4
  {
    Bytes f = eth(ip);
    f[12] = 0x86; f[13] = 0xDD;
    CHECK_ERR(parse_eth(f), ParseError::kNotIpv4);
    f[12] = 0x08; f[13] = 0x06;  // ARP
    CHECK_ERR(parse_eth(f), ParseError::kNotIpv4);
    CHECK_ERR(parse_eth(ethernet(ip.data(), ip.size(), {0x88A8, 0x8100, 0x8100})), ParseError::kNotIpv4);
    CHECK_ERR(parse_eth(ethernet(ip.data(), ip.size(), {0x88A8, 0x8100})), ParseError::kOk);
    CHECK_ERR(parse_eth(ethernet(ip.data(), ip.size(), {0x9100})), ParseError::kOk);
  }
  // kTruncatedIp
  {
    Bytes f = eth(ip);
    f.resize(14 + 19);
    CHECK_ERR(parse_eth(f), ParseError::kTruncatedIp);
    Bytes p = ip_with_options({}, 8);  // IHL 7
    p.resize(24);
    CHECK_ERR(parse_ip(p), ParseError::kTruncatedIp);
    Bytes q = ip;
    q.pop_back();  // last payload byte missing
    CHECK_ERR(parse_ip(q), ParseError::kTruncatedIp);
    CHECK_ERR(parse_ip(q, true), ParseError::kOk);
  }
  // kBadIpHeader
  {
    Bytes p = ip;
    p[0] = 0x65;  // version 6
    CHECK_ERR(parse_ip(p), ParseError::kBadIpHeader);
    p = ip;
    p[0] = 0x44;  // IHL 4
    fix_ip_check(p.data());
    CHECK_ERR(parse_ip(p), ParseError::kBadIpHeader);
    p = ip;
    wr16(&p[2], 19);  // total length < header
    fix_ip_check(p.data());
    CHECK_ERR(parse_ip(p), ParseError::kBadIpHeader);
    wr16(&p[2], 0);  // total length 0 on a small packet: not BIG TCP
    fix_ip_check(p.data());
    CHECK_ERR(parse_ip(p), ParseError::kBadIpHeader);
    CHECK_ERR(parse_eth(eth(p)), ParseError::kBadIpHeader);
  }
  // kBadIpChecksum
  {
    Bytes p = ip;
    p[10] ^= 0x01;
    CHECK_ERR(parse_ip(p), ParseError::kBadIpChecksum);
    p = ip;
    p[8] = static_cast<uint8_t>(p[8] - 1);  // TTL decremented without fixing the checksum
    CHECK_ERR(parse_eth(eth(p)), ParseError::kBadIpChecksum);
  }
  // Checksum stored as 0xFFFF (-0) where the computed value is 0x0000: valid
  // on the wire, accepted (found by the fuzzer).
  {
    Bytes p = ip;
    for (uint32_t id = 0; id < 0x10000; ++id) {  // find an IP id making the sum 0xFFFF
      wr16(&p[4], static_cast<uint16_t>(id));
      p[10] = p[11] = 0;
      if (naive_check(p.data(), 20) == 0) break;
    }
    CHECK_EQ(stored_be(ipv4_header_checksum(p.data(), 20)), 0x0000);
    wr16(&p[10], 0xFFFF);
    CHECK(ipv4_header_checksum_ok(p.data(), 20));
    CHECK_ERR(parse_ip(p), ParseError::kOk);
    wr16(&p[10], 0x0000);
    CHECK_ERR(parse_ip(p), ParseError::kOk);
  }
  // kIpFragment
  {
    Bytes p = ip;
    wr16(&p[6], 0x2000);  // MF
    fix_ip_check(p.data());
    CHECK_ERR(parse_ip(p), ParseError::kIpFragment);
    wr16(&p[6], 0x4000 | 185);  // DF + offset
    fix_ip_check(p.data());
    CHECK_ERR(parse_ip(p), ParseError::kIpFragment);
    wr16(&p[6], 0x0000);  // no DF is fine
    fix_ip_check(p.data());
    CHECK_ERR(parse_ip(p), ParseError::kOk);
  }
  // kNotTcp
  {
    Bytes p = ip;
    p[9] = 17;
    fix_ip_check(p.data());
    CHECK_ERR(parse_ip(p), ParseError::kNotTcp);
    CHECK_ERR(parse_eth(eth(p)), ParseError::kNotTcp);
  }
  // kTruncatedTcp
  {
    Bytes p = ip;
    p.resize(20 + 19);  // capture cuts the fixed header
    CHECK_ERR(parse_ip(p, true), ParseError::kTruncatedTcp);
    Bytes q = ip;
    q.resize(20 + 30);  // cuts the options
    CHECK_ERR(parse_ip(q, true), ParseError::kTruncatedTcp);
    Bytes r = ip;
    wr16(&r[2], 20 + 10);  // total length shorter than a TCP header
    fix_ip_check(r.data());
    CHECK_ERR(parse_ip(r), ParseError::kTruncatedTcp);
  }
  // kBadTcpHeader
  {
    Bytes p = ip;
    p[32] = 0x40;  // data offset 4
    CHECK_ERR(parse_ip(p), ParseError::kBadTcpHeader);
    Bytes q = sample_ip(0);  // data offset 13 (52 bytes)
    wr16(&q[2], 20 + 40);    // segment only 40 bytes long
    fix_ip_check(q.data());
    CHECK_ERR(parse_ip(q), ParseError::kBadTcpHeader);
  }
  // kBadTcpOptions: each malformed shape.
  const Bytes bad[] = {
      {2, 0, 0, 0},              // length 0
      {2, 1, 0, 0},              // length 1
      {1, 1, 1, 2},              // MSS kind as the last byte: no length
      {1, 2, 4, 5},              // MSS with its value cut (3 bytes of 4)
      {1, 8, 10, 0},             // TS running past the header
      {2, 3, 5, 0},              // MSS len 3
      {2, 5, 5, 0xB4, 0, 0, 0, 0},  // MSS len 5
      {3, 4, 7, 0},              // WS len 4
      {3, 2, 1, 1},              // WS len 2
      {4, 3, 0, 0},              // SACK-permitted len 3
      {8, 8, 0, 0, 0, 0, 0, 0},  // TS len 8
      {5, 2, 1, 1},              // SACK with no block
      {5, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},  // SACK 9
      {30, 9, 0, 0},             // unknown option past the end
  };
  for (const Bytes& o : bad) {
    Bytes opts = o;
    while (opts.size() % 4) opts.push_back(0);
    CHECK_ERR(parse_ip(ip_with_options(opts)), ParseError::kBadTcpOptions);
    // No payload: the options end the buffer, so ASan sees any read past them.
    CHECK_ERR(parse_ip(ip_with_options(opts, 0, 0)), ParseError::kBadTcpOptions);
    CHECK_ERR(parse_eth(eth(ip_with_options(opts))), ParseError::kBadTcpOptions);
  }
}

void test_vlan_tags() {
  const Bytes ip = sample_ip(10);
  struct Case { std::initializer_list<uint16_t> tags; size_t l2; };
  const Case cases[] = {{{}, 14}, {{0x8100}, 18}, {{0x88A8}, 18}, {{0x88A8, 0x8100}, 22}, {{0x8100, 0x8100}, 22}};
  for (const Case& c : cases) {
    const Bytes f = ethernet(ip.data(), ip.size(), c.tags);
    auto b = exact_copy(f.data(), f.size());
    Segment seg;
    CHECK_ERR(parse_ethernet(b.get(), f.size(), &seg), ParseError::kOk);
    CHECK(seg.ip == b.get() + c.l2);
    CHECK_EQ(seg.payload_len, 10u);
    CHECK_EQ(seg.sport, 40000);
    CHECK_EQ(seg.opt.sack_count, 2);
  }
  // A VLAN tag announcing a non-IPv4 payload.
  Bytes f = ethernet(ip.data(), ip.size(), {0x8100});
  f[16] = 0x86; f[17] = 0xDD;
  Segment seg;
  CHECK_ERR(parse_ethernet(f.data(), f.size(), &seg), ParseError::kNotIpv4);
}

// Minimum-size Ethernet frames carry padding past the IPv4 total length.
void test_ethernet_padding() {
  SegmentSpec s = basic_spec();
  s.flags = kAck;
  const Bytes ip = build(s);
  Bytes f = ethernet(ip.data(), ip.size());
  f.resize(60, 0xEE);  // 802.3 minimum without FCS
  Segment seg;
  CHECK_ERR(parse_ethernet(f.data(), f.size(), &seg), ParseError::kOk);
  CHECK_EQ(seg.ip_len, 40u);
  CHECK_EQ(seg.payload_len, 0u);
  CHECK_EQ(seg.flags, kAck);
}

// BIG TCP: IPv4 total length 0 on a packet larger than 64 KiB.
void test_big_tcp_superframe() {
  const size_t plen = 70000;
  SegmentSpec s = basic_spec();
  s.has_ts = true;
  s.tsval = 42;
  Bytes hdr = build(s);  // 52 bytes of headers, no payload
  Bytes ip = hdr;
  ip.resize(hdr.size() + plen);
  for (size_t i = 0; i < plen; ++i) ip[hdr.size() + i] = static_cast<uint8_t>(i ^ (i >> 8));
  wr16(&ip[2], 0);
  fix_ip_check(ip.data());
  const Bytes f = ethernet(ip.data(), ip.size());
  auto b = exact_copy(f.data(), f.size());
  Segment seg;
  CHECK_ERR(parse_ethernet(b.get(), f.size(), &seg), ParseError::kOk);
  CHECK_EQ(seg.ip_len, ip.size());
  CHECK_EQ(seg.payload_len, plen);
  CHECK(seg.payload == b.get() + 14 + 52);
  CHECK(seg.opt.has_ts && seg.opt.tsval == 42);
  CHECK(!tcp_checksum_ok_ipv4(seg.ip));  // no total length: not verifiable
  auto c = exact_copy(ip.data(), ip.size());
  CHECK_ERR(parse_ipv4(c.get(), ip.size(), false, &seg), ParseError::kOk);
  CHECK_EQ(seg.payload_len, plen);
  CHECK_ERR(parse_ipv4(c.get(), ip.size(), true, &seg), ParseError::kBadIpHeader);
  // Exactly 65535 bytes after L2 is not a super-frame.
  CHECK_ERR(parse_ipv4(c.get(), 65535, false, &seg), ParseError::kBadIpHeader);
  CHECK_ERR(parse_ipv4(c.get(), 65536, false, &seg), ParseError::kOk);
  CHECK_ERR(parse_ethernet(b.get(), 14 + 65535, &seg), ParseError::kBadIpHeader);
  // A regular 64 KiB GRO frame with its total length set.
  SegmentSpec g = basic_spec();
  Bytes payload(65535 - 40, 0x77);
  g.payload = payload.data();
  g.payload_len = static_cast<uint32_t>(payload.size());
  const Bytes big = build(g);
  CHECK_EQ(big.size(), 65535u);
  const Bytes bf = ethernet(big.data(), big.size());
  CHECK_ERR(parse_ethernet(bf.data(), bf.size(), &seg), ParseError::kOk);
  CHECK_EQ(seg.payload_len, 65535u - 40);
}

// The mirror keeps the primary's frames to their headers: parsed with
// allow_truncated_payload, every header field and the announced payload
// length are there. The strict parse (a client's frame) of the same bytes is
// kTruncatedIp, exactly when the announced packet runs past the capture.
void test_frame_cut_to_headers() {
  const Bytes ip = sample_ip(1400);  // IPv4 20 + TCP 52 (TS, 2 SACK blocks) + 1400 bytes
  for (int tags = 0; tags <= 2; ++tags) {
    const Bytes f = tags == 0 ? ethernet(ip.data(), ip.size())
                    : tags == 1 ? ethernet(ip.data(), ip.size(), {0x8100})
                                : ethernet(ip.data(), ip.size(), {0x88A8, 0x8100});
    const size_t l2 = 14 + 4 * tags;
    for (size_t n : {l2 + 72, l2 + 73, size_t{142}, f.size() - 1}) {
      auto b = exact_copy(f.data(), n);
      Segment cut, strict;
      CHECK_ERR(parse_ethernet(b.get(), n, true, &cut), ParseError::kOk);
      CHECK_ERR(parse_ethernet(b.get(), n, &strict), ParseError::kTruncatedIp);
      CHECK_EQ(cut.payload_len, 1400u);
      CHECK_EQ(cut.ip_len, ip.size());
      CHECK(size_t(cut.ip - b.get()) + cut.ip_len > n);  // the caller's test for a cut frame
      CHECK(cut.saddr == addr(10, 0, 0, 1) && cut.sport == 40000 && cut.dport == 80);
      CHECK(cut.seq == 1000 && cut.ack == 2000 && cut.window == 512 && cut.flags == (kAck | kPsh));
      CHECK(cut.opt.has_ts && cut.opt.tsval == 0x01020304 && cut.opt.sack_count == 2);
    }
  }
  // Whole frames parse the same either way; padding is not payload.
  SegmentSpec a = basic_spec();
  a.flags = kAck;
  const Bytes ack = build(a);
  Bytes padded = ethernet(ack.data(), ack.size());
  padded.resize(60, 0xEE);
  Segment s;
  CHECK_ERR(parse_ethernet(padded.data(), padded.size(), true, &s), ParseError::kOk);
  CHECK_EQ(s.payload_len, 0u);
  CHECK(size_t(s.ip - padded.data()) + s.ip_len <= padded.size());
  // A BIG TCP frame (total length 0) cut short has lost its length.
  Bytes big = sample_ip(0);
  big.resize(big.size() + 70000, 0x55);
  wr16(&big[2], 0);
  fix_ip_check(big.data());
  const Bytes bf = ethernet(big.data(), big.size());
  auto whole = exact_copy(bf.data(), bf.size());
  CHECK_ERR(parse_ethernet(whole.get(), bf.size(), true, &s), ParseError::kOk);
  CHECK_EQ(s.payload_len, 70000u);
  auto cut = exact_copy(bf.data(), 142);
  CHECK_ERR(parse_ethernet(cut.get(), 142, true, &s), ParseError::kBadIpHeader);
}

// Allowing a cut payload changes nothing but a cut payload's kTruncatedIp:
// on_mirror_frame relies on it to report a client's cut frame as before.
void test_cut_allowance_matches_strict_parse() {
  const Bytes ips[] = {sample_ip(0), sample_ip(1), sample_ip(300), ip_with_options({2, 4, 5, 0xB4}, 12, 40)};
  for (const Bytes& ip : ips) {
    const Bytes f = ethernet(ip.data(), ip.size(), {0x8100});
    for (size_t n = 0; n <= f.size(); ++n) {
      auto b = exact_copy(f.data(), n);
      Segment strict, loose;
      const ParseError se = parse_ethernet(b.get(), n, &strict);
      const ParseError le = parse_ethernet(b.get(), n, true, &loose);
      const bool cut = le == ParseError::kOk && size_t(loose.ip - b.get()) + loose.ip_len > n;
      CHECK_ERR(cut ? ParseError::kTruncatedIp : le, se);
    }
  }
}

// CHECKSUM_PARTIAL frames (veth, NIC offload): the TCP checksum field holds
// only the pseudo-header sum. They must parse.
void test_checksum_partial_frames_parse() {
  Bytes ip = sample_ip(500);
  const uint32_t ph = naive_pseudo(ip.data(), ip.size() - 20);
  wr16(&ip[36], static_cast<uint16_t>(ph));
  CHECK(!tcp_checksum_ok_ipv4(ip.data()));
  Segment seg;
  CHECK_ERR(parse_ipv4(ip.data(), ip.size(), false, &seg), ParseError::kOk);
  const Bytes f = ethernet(ip.data(), ip.size());
  CHECK_ERR(parse_ethernet(f.data(), f.size(), &seg), ParseError::kOk);
  CHECK_EQ(seg.payload_len, 500u);
  wr16(&ip[36], 0);
  CHECK_ERR(parse_ipv4(ip.data(), ip.size(), false, &seg), ParseError::kOk);
}

void test_tcp_option_parsing() {
  Segment seg;
  auto parse = [&](const Bytes& opts, size_t ip_opts = 0) {
    const Bytes p = ip_with_options(opts, ip_opts);
    auto c = exact_copy(p.data(), p.size());
    const ParseError e = parse_ipv4(c.get(), p.size(), false, &seg);
    seg.ip = seg.options = seg.payload = nullptr;  // c dies here
    return e;
  };
  // A SYN's options as Linux sends them.
  CHECK_ERR(parse({2, 4, 0x05, 0xB4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7}), ParseError::kOk);
  CHECK(seg.opt.has_mss && seg.opt.mss == 1460);
  CHECK(seg.opt.sack_permitted);
  CHECK(seg.opt.has_ts && seg.opt.tsval == 1 && seg.opt.tsecr == 0);
  CHECK(seg.opt.has_wscale && seg.opt.wscale == 7);
  CHECK_EQ(seg.options_len, 20);
  CHECK_EQ(seg.tcp_hdr_len, 40);
  // Window scale clamp (RFC 7323 2.3).
  for (int ws : {0, 7, 14, 15, 16, 200, 255}) {
    CHECK_ERR(parse({1, 3, 3, static_cast<uint8_t>(ws)}), ParseError::kOk);
    CHECK_EQ(seg.opt.wscale, (ws > 14 ? 14 : ws));
  }
  // TS + 3 SACK blocks = 40 bytes.
  Bytes ts_sack = {1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 2, 0, 1, 1, 5, 26};
  for (uint32_t b = 0; b < 3; ++b) {
    const uint32_t l = 0xFFFFFF00u + b * 0x100, r = l + 0x80;  // across the wrap
    for (uint32_t v : {l, r}) for (int k = 3; k >= 0; --k) ts_sack.push_back(static_cast<uint8_t>(v >> (8 * k)));
  }
  CHECK_EQ(ts_sack.size(), 40u);
  CHECK_ERR(parse(ts_sack), ParseError::kOk);
  CHECK(seg.opt.has_ts && seg.opt.tsval == 256 && seg.opt.tsecr == 512);
  CHECK_EQ(seg.opt.sack_count, 3);
  CHECK_EQ(seg.opt.sack[0].left, 0xFFFFFF00u);
  CHECK_EQ(seg.opt.sack[2].left, 0x00000100u);
  CHECK_EQ(seg.opt.sack[2].right, 0x00000180u);
  // Four SACK blocks (34 bytes) without timestamps.
  Bytes sack4 = {1, 1, 5, 34};
  for (int i = 0; i < 32; ++i) sack4.push_back(static_cast<uint8_t>(i));
  CHECK_ERR(parse(sack4), ParseError::kOk);
  CHECK_EQ(seg.opt.sack_count, 4);
  CHECK_EQ(seg.opt.sack[3].right, 0x1C1D1E1Fu);
  CHECK(!seg.opt.has_ts);
  // Unknown options are skipped by length; EOL ends parsing.
  CHECK_ERR(parse({30, 6, 9, 9, 9, 9, 2, 4, 0x01, 0x00, 0, 0}), ParseError::kOk);
  CHECK(seg.opt.has_mss && seg.opt.mss == 256);
  CHECK_ERR(parse({1, 0, 2, 0}), ParseError::kOk);  // garbage after EOL ignored
  CHECK(!seg.opt.has_mss);
  CHECK_ERR(parse({0, 0, 0, 0}), ParseError::kOk);
  // Options after IPv4 options (IHL 15: 40 bytes of IP options).
  CHECK_ERR(parse({2, 4, 0x23, 0x28}, 40), ParseError::kOk);
  CHECK_EQ(seg.ip_hdr_len, 60);
  CHECK_EQ(seg.opt.mss, 9000);
  CHECK_EQ(seg.payload_len, 8u);
  // 40 bytes of options, the most a header holds.
  Bytes nops(40, 1);
  CHECK_ERR(parse(nops), ParseError::kOk);
  CHECK_EQ(seg.tcp_hdr_len, 60);
}

void test_seq_wrap() {
  CHECK(before(0xFFFFFFF0u, 0x10u));
  CHECK(!before(0x10u, 0xFFFFFFF0u));
  CHECK(after(0x10u, 0xFFFFFFF0u));
  CHECK(!after(0xFFFFFFF0u, 0x10u));
  CHECK(!before(5u, 5u));
  CHECK(!after(5u, 5u));
  CHECK(before(0xFFFFFFFFu, 0u));
  CHECK(after(0u, 0xFFFFFFFFu));
  CHECK(before(1u, 2u));
  CHECK(before(0x7FFFFFFFu, 0x80000000u));
  // Half the space apart: before(a, a + 2^31) holds, and so does its mirror
  // (int32 minimum), as in the kernel.
  CHECK(before(0u, 0x80000000u));
  CHECK(before(0x80000000u, 0u));
  CHECK(between(0u, 0xFFFFFFF0u, 0x10u));
  CHECK(between(0xFFFFFFF0u, 0xFFFFFFF0u, 0x10u));
  CHECK(between(0x10u, 0xFFFFFFF0u, 0x10u));
  CHECK(between(0xFFFFFFFFu, 0xFFFFFFF0u, 0x10u));
  CHECK(!between(0x11u, 0xFFFFFFF0u, 0x10u));
  CHECK(!between(0xFFFFFFEFu, 0xFFFFFFF0u, 0x10u));
  CHECK(!between(0x80000000u, 0xFFFFFFF0u, 0x10u));
  CHECK(between(5u, 5u, 5u));
  CHECK(!between(6u, 5u, 5u));
  CHECK_EQ(seq_max(0xFFFFFFF0u, 0x10u), 0x10u);
  CHECK_EQ(seq_max(0x10u, 0xFFFFFFF0u), 0x10u);
  CHECK_EQ(seq_min(0xFFFFFFF0u, 0x10u), 0xFFFFFFF0u);
  CHECK_EQ(seq_min(0x10u, 0xFFFFFFF0u), 0xFFFFFFF0u);
  CHECK_EQ(seq_max(7u, 7u), 7u);
  // Random pairs: the relation is the one of offsets within +-2^31.
  for (int i = 0; i < 100000; ++i) {
    const uint32_t a = rnd32();
    const uint32_t d = 1 + rnd_below(0x7FFFFFFFu);  // 1 .. 2^31-1
    const uint32_t b = a + d;                       // may wrap
    CHECK(before(a, b));
    CHECK(after(b, a));
    CHECK(!before(b, a));
    CHECK_EQ(seq_max(a, b), b);
    CHECK_EQ(seq_min(b, a), a);
    const uint32_t m = a + rnd_below(d + 1);
    CHECK(between(m, a, b));
    CHECK(!between(b + 1, a, b));
  }
}

// ---------------------------------------------------------------- corpus, bench

int write_corpus(const char* dir) {
  int n = 0;
  auto put = [&](const Bytes& f) {
    const std::string path = std::string(dir) + "/seed-" + std::to_string(n++);
    FILE* fp = std::fopen(path.c_str(), "wb");
    if (!fp) return false;
    const bool ok = std::fwrite(f.data(), 1, f.size(), fp) == f.size();
    return std::fclose(fp) == 0 && ok;
  };
  bool ok = true;
  const Bytes syn_opts = {2, 4, 0x05, 0xB4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7};
  const Bytes ips[] = {
      sample_ip(0),
      sample_ip(64),
      sample_ip(1400),
      ip_with_options(syn_opts),
      ip_with_options({1, 1, 5, 34, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0,
                       0, 6, 0, 0, 0, 7, 0, 0, 0, 8, 1, 1, 1, 1}),
      ip_with_options({30, 6, 1, 2, 3, 4, 0, 0}, 8),
      ip_with_options({}, 40, 0),
      build(basic_spec()),
  };
  for (const Bytes& ip : ips) {
    ok &= put(ethernet(ip.data(), ip.size()));
    ok &= put(ethernet(ip.data(), ip.size(), {0x88A8, 0x8100}));
  }
  Bytes padded = ethernet(ips[7].data(), ips[7].size());
  padded.resize(60, 0);
  ok &= put(padded);
  if (!ok) std::fprintf(stderr, "packet_test: cannot write corpus into %s\n", dir);
  return ok ? 0 : 1;
}

int bench() {
  using clock = std::chrono::steady_clock;
  const Bytes ip = sample_ip(1400);
  const Bytes f = ethernet(ip.data(), ip.size());
  Segment seg;
  const int n = 2000000;
  unsigned sink = 0;
  auto t0 = clock::now();
  for (int i = 0; i < n; ++i) {
    sink += static_cast<unsigned>(parse_ethernet(f.data(), f.size(), &seg));
    sink += seg.payload_len;
  }
  auto t1 = clock::now();
  std::printf("parse_ethernet 1400B TS+SACK: %.1f ns\n",
              std::chrono::duration<double, std::nano>(t1 - t0).count() / n);
  std::vector<uint8_t> payload(65535 - 52, 0x42), out(65536);
  SegmentSpec s = basic_spec();
  s.has_ts = true;
  s.payload = payload.data();
  s.payload_len = static_cast<uint32_t>(payload.size());
  const int m = 20000;
  t0 = clock::now();
  for (int i = 0; i < m; ++i) {
    s.seq = static_cast<uint32_t>(i);
    sink += static_cast<unsigned>(build_segment(s, out.data(), out.size()));
  }
  t1 = clock::now();
  std::printf("build_segment 64KiB: %.2f us\n", std::chrono::duration<double, std::micro>(t1 - t0).count() / m);
  t0 = clock::now();
  uint32_t cs = 0;
  for (int i = 0; i < m; ++i) cs += csum_partial(payload.data() + (i & 1), payload.size() - 1, 0);
  t1 = clock::now();
  std::printf("csum_partial 64KiB: %.2f us\n", std::chrono::duration<double, std::micro>(t1 - t0).count() / m);
  return (sink + cs) == 1 ? 1 : 0;  // keep the results alive
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--write-corpus" && i + 1 < argc) return write_corpus(argv[i + 1]);
    if (a == "--bench") return bench();
    if (a == "--seed" && i + 1 < argc) {
      set_seed(argv[++i]);
      continue;
    }
    std::fprintf(stderr, "usage: packet_test [--seed N] [--write-corpus DIR] [--bench]\n");
    return 2;
  }
  print_seed("packet_test");
  run_test("parse error names are stable snake_case", test_error_names);
  run_test("csum_partial matches the RFC 1071 reference", test_csum_partial_matches_reference);
  run_test("build then parse random segments", test_roundtrip_random);
  run_test("build_segment limits and option layout", test_build_limits);
  run_test("build_segment: a payload in two pieces", test_build_two_pieces);
  run_test("incremental checksum equals full recompute", test_incremental_checksum);
  run_test("every truncation of a valid frame fails cleanly", test_every_truncation);
  run_test("each parse error reason", test_each_error_reason);
  run_test("VLAN tags", test_vlan_tags);
  run_test("Ethernet padding ignored", test_ethernet_padding);
  run_test("BIG TCP super-frame with total length 0", test_big_tcp_superframe);
  run_test("CHECKSUM_PARTIAL frames parse", test_checksum_partial_frames_parse);
  run_test("a frame cut to its headers parses when allowed", test_frame_cut_to_headers);
  run_test("allowing a cut payload changes only its kTruncatedIp", test_cut_allowance_matches_strict_parse);
  run_test("TCP option parsing", test_tcp_option_parsing);
  run_test("sequence arithmetic across the 2^32 wrap", test_seq_wrap);
  return finish();
}
