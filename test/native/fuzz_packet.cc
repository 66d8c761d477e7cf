// Fuzz target for the packet parser (addon/packet.cc) and the SDP scan of the
// relay's ports (addon/relay_ports.cc).
//
// With libFuzzer:  clang++ -fsanitize=fuzzer,address,undefined -Iaddon fuzz_packet.cc packet.cc
// Without clang:   g++ -DT2CP_STANDALONE_FUZZ -fsanitize=address,undefined ... gives a
//                  bounded mutational driver: fuzz_packet [--seconds S] [--runs N] [DIR...]
//                  (seeds built in, plus every file of each DIR).
//
// Each input is parsed as an Ethernet frame and as an IPv4 packet (at offset
// 0 and after a 14-byte L2 header), each in both payload modes. A parsed segment
// must satisfy the layout invariants and survive build_segment -> parse_ipv4
// with every field intact. A broken invariant aborts with a message.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <bitset>
#include <string>

#include "packet.h"
#include "relay_ports.h"

using namespace t2cp;

namespace {

[[noreturn]] void fail(const char* what, int line) {
  std::fprintf(stderr, "fuzz_packet: invariant broken at line %d: %s\n", line, what);
  std::abort();
}
#define REQUIRE(cond) \
  do {                \
    if (!(cond)) fail(#cond, __LINE__); \
  } while (0)

bool same_options(const TcpOptions& a, const TcpOptions& b) {
  if (a.has_mss != b.has_mss || a.mss != b.mss || a.has_wscale != b.has_wscale ||
      a.wscale != b.wscale || a.sack_permitted != b.sack_permitted || a.has_ts != b.has_ts ||
      a.tsval != b.tsval || a.tsecr != b.tsecr || a.sack_count != b.sack_count)
    return false;
  for (int i = 0; i < a.sack_count; ++i)
    if (a.sack[i].left != b.sack[i].left || a.sack[i].right != b.sack[i].right) return false;
  return true;
}

uint8_t g_out[65536];  // the fuzzer is single-threaded

// Layout invariants of a successful parse of [base, base + size).
void check_layout(const Segment& s, const uint8_t* base, size_t size, bool truncated_ok) {
  const uint8_t* end = base + size;
  REQUIRE(s.ip >= base && s.ip < end);
  REQUIRE(s.ip_hdr_len >= 20 && s.ip_hdr_len <= 60 && s.ip_hdr_len % 4 == 0);
  REQUIRE(s.tcp_hdr_len >= 20 && s.tcp_hdr_len <= 60 && s.tcp_hdr_len % 4 == 0);
  REQUIRE(s.options == s.ip + s.ip_hdr_len + 20);
  REQUIRE(s.options_len == s.tcp_hdr_len - 20);
  REQUIRE(s.options + s.options_len <= end);  // options within the header and the input
  REQUIRE(s.payload == s.ip + s.ip_hdr_len + s.tcp_hdr_len);
  REQUIRE(s.payload <= end);
  REQUIRE(s.ip_len >= static_cast<uint32_t>(s.ip_hdr_len + s.tcp_hdr_len));
  REQUIRE(s.payload_len == s.ip_len - s.ip_hdr_len - s.tcp_hdr_len);
  if (!truncated_ok) {
    REQUIRE(s.payload_len <= static_cast<size_t>(end - s.payload));
    REQUIRE(s.ip_len <= static_cast<size_t>(end - s.ip));
  }
  REQUIRE(s.opt.sack_count <= kMaxSackBlocks);
  REQUIRE(!s.opt.has_wscale || s.opt.wscale <= 14);
  REQUIRE(s.opt.has_wscale || s.opt.wscale == 0);
  REQUIRE(s.opt.has_mss || s.opt.mss == 0);
  REQUIRE(s.opt.has_ts || (s.opt.tsval == 0 && s.opt.tsecr == 0));
  // The IPv4 header checksum was verified by the parser.
  REQUIRE(ipv4_header_checksum_ok(s.ip, s.ip_hdr_len));
  uint16_t stored;
  std::memcpy(&stored, s.ip + 10, 2);
  const uint16_t computed = ipv4_header_checksum(s.ip, s.ip_hdr_len);
  // 0xFFFF is -0, the other one's complement zero: a valid stored form
  // (RFC 1624 3) that the computation itself never produces.
  REQUIRE(computed == stored || (computed == 0 && stored == 0xFFFF));
}

// build_segment from what was parsed, then parse that: same fields.
void check_roundtrip(const Segment& s) {
  if (static_cast<size_t>(20) + s.tcp_hdr_len + s.payload_len > 65535) return;
  SegmentSpec spec;
  spec.saddr = s.saddr; spec.daddr = s.daddr;
  spec.sport = s.sport; spec.dport = s.dport;
  spec.seq = s.seq; spec.ack = s.ack;
  spec.flags = s.flags; spec.window = s.window;
  spec.ttl = s.ttl; spec.tos = s.tos; spec.ip_id = s.ip_id;
  spec.raw_options = s.options; spec.raw_options_len = s.options_len;
  spec.payload = s.payload; spec.payload_len = s.payload_len;
  const size_t n = build_segment(spec, g_out, sizeof g_out);
  REQUIRE(n == 20u + s.tcp_hdr_len + s.payload_len);
  REQUIRE(tcp_checksum_ok_ipv4(g_out));
  Segment r;
  REQUIRE(parse_ipv4(g_out, n, false, &r) == ParseError::kOk);
  REQUIRE(r.ip_len == n && r.ip_hdr_len == 20 && r.tcp_hdr_len == s.tcp_hdr_len);
  REQUIRE(r.saddr == s.saddr && r.daddr == s.daddr && r.sport == s.sport && r.dport == s.dport);
  REQUIRE(r.seq == s.seq && r.ack == s.ack && r.flags == s.flags && r.window == s.window);
  REQUIRE(r.ttl == s.ttl && r.tos == s.tos && r.ip_id == s.ip_id);
  REQUIRE(r.options_len == s.options_len && std::memcmp(r.options, s.options, s.options_len) == 0);
  REQUIRE(r.payload_len == s.payload_len);
  REQUIRE(s.payload_len == 0 || std::memcmp(r.payload, s.payload, s.payload_len) == 0);
  REQUIRE(same_options(r.opt, s.opt));

  // Structured options rebuilt from the parsed ones keep TS and the SACK
  // blocks that fit.
  SegmentSpec st = spec;
  st.raw_options = nullptr; st.raw_options_len = 0;
  st.has_ts = s.opt.has_ts; st.tsval = s.opt.tsval; st.tsecr = s.opt.tsecr;
  st.sack_count = s.opt.sack_count;
  for (int i = 0; i < kMaxSackBlocks; ++i) st.sack[i] = s.opt.sack[i];
  const size_t m = build_segment(st, g_out, sizeof g_out);
  if (m == 0) {
    // Only possible when the payload plus the new options exceed 65535.
    REQUIRE(static_cast<size_t>(40) + 40 + s.payload_len > 65535);
    return;
  }
  REQUIRE(ipv4_header_checksum_ok(g_out, 20) && tcp_checksum_ok_ipv4(g_out));
  REQUIRE(parse_ipv4(g_out, m, false, &r) == ParseError::kOk);
  REQUIRE(r.opt.has_ts == s.opt.has_ts && r.opt.tsval == s.opt.tsval && r.opt.tsecr == s.opt.tsecr);
  const int fit = s.opt.has_ts ? 3 : 4;
  REQUIRE(r.opt.sack_count == (s.opt.sack_count < fit ? s.opt.sack_count : fit));
  for (int i = 0; i < r.opt.sack_count; ++i)
    REQUIRE(r.opt.sack[i].left == s.opt.sack[i].left && r.opt.sack[i].right == s.opt.sack[i].right);
  REQUIRE(!r.opt.has_mss && !r.opt.has_wscale && !r.opt.sack_permitted);
  REQUIRE(r.payload_len == s.payload_len);
}

void fuzz_ip(const uint8_t* ip, size_t size) {
  Segment strict, loose;
  const ParseError es = parse_ipv4(ip, size, false, &strict);
  const ParseError el = parse_ipv4(ip, size, true, &loose);
  REQUIRE(static_cast<int>(es) < static_cast<int>(ParseError::kCount));
  REQUIRE(static_cast<int>(el) < static_cast<int>(ParseError::kCount));
  if (el == ParseError::kOk) check_layout(loose, ip, size, true);
  if (es == ParseError::kOk) {
    check_layout(strict, ip, size, false);
    // A complete packet (not BIG TCP) parses the same in both modes.
    if (strict.ip_len <= 65535) {
      REQUIRE(el == ParseError::kOk && loose.payload_len == strict.payload_len &&
              loose.ip_len == strict.ip_len && same_options(loose.opt, strict.opt));
      // The verifier reads exactly total length bytes: must not overrun.
      (void)tcp_checksum_ok_ipv4(ip);
    }
    check_roundtrip(strict);
  } else if (el == ParseError::kOk) {
    // Only the payload may be missing, or the BIG TCP rule differs.
    REQUIRE(es == ParseError::kTruncatedIp);
  }
}

}  // namespace

// The input as a datagram's payload, and as the SDP of a SIP message naming the VIP: the
// digest's length is within the payload, every port scanned a relay port.
void fuzz_sdp(const uint8_t* data, size_t size) {
  static const std::bitset<65536> relay = [] {
    std::bitset<65536> b;
    for (int p = 1000; p < 60000; p++) b.set(size_t(p));
    return b;
  }();
  auto check = [&](const uint8_t* p, size_t n) {
    SdpRelayScan scan;
    const uint64_t d = relay_digest(p, uint32_t(n), "198.18.1.10", relay, &scan);
    REQUIRE((d & 0xffffffffu) <= n);
    REQUIRE(scan.n >= 0 && scan.n <= SdpRelayScan::kMaxMedia);
    for (int i = 0; i < scan.n; i++) REQUIRE(relay.test(scan.media[i].rtp) && (!scan.media[i].rtcp || relay.test(scan.media[i].rtcp)));
  };
  check(data, size);
  std::string sip = "INVITE sip:x SIP/2.0\r\nContent-Length: 99\r\n\r\nv=0\r\nc=IN IP4 198.18.1.10\r\nm=audio ";
  sip.append(reinterpret_cast<const char*>(data), size);
  check(reinterpret_cast<const uint8_t*>(sip.data()), sip.size());
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Segment s;
  const ParseError e = parse_ethernet(data, size, &s);
  REQUIRE(static_cast<int>(e) < static_cast<int>(ParseError::kCount));
  if (e == ParseError::kOk) {
    check_layout(s, data, size, false);
    check_roundtrip(s);
    // The same packet parsed from its IP header agrees.
    Segment t;
    REQUIRE(parse_ipv4(s.ip, static_cast<size_t>(data + size - s.ip), false, &t) == ParseError::kOk);
    REQUIRE(t.ip_len == s.ip_len && t.payload_len == s.payload_len && same_options(t.opt, s.opt));
  }
  // Allowing a cut payload (the mirror's primary frames) changes only the
  // strict parse's kTruncatedIp for a cut payload.
  Segment l;
  const ParseError le = parse_ethernet(data, size, true, &l);
  REQUIRE(static_cast<int>(le) < static_cast<int>(ParseError::kCount));
  if (le == ParseError::kOk) {
    check_layout(l, data, size, true);
    const bool cut = static_cast<size_t>(l.ip - data) + l.ip_len > size;
    REQUIRE(e == (cut ? ParseError::kTruncatedIp : ParseError::kOk));
    if (!cut) REQUIRE(l.ip_len == s.ip_len && l.payload_len == s.payload_len && same_options(l.opt, s.opt));
  } else {
    REQUIRE(e == le);
  }
  fuzz_ip(data, size);
  if (size >= 14) fuzz_ip(data + 14, size - 14);
  fuzz_sdp(data, size);
  return 0;
}

#ifdef T2CP_STANDALONE_FUZZ
// ---------------------------------------------------------------------------
// Standalone mutational driver, for machines without libFuzzer. Keeps a small
// corpus (seeds plus inputs that produced a new parse outcome), mutates a
// random member, and runs every input from an exactly sized heap copy so
// ASan sees any read past the end.
#include <chrono>
#include <dirent.h>
#include <memory>
#include <string>
#include <vector>

namespace {

using Bytes = std::vector<uint8_t>;
uint64_t g_rng = 0x243F6A8885A308D3ull;
uint32_t rnd() {
  g_rng ^= g_rng >> 12; g_rng ^= g_rng << 25; g_rng ^= g_rng >> 27;
  return static_cast<uint32_t>((g_rng * 0x2545F4914F6CDD1Dull) >> 32);
}
uint32_t below(uint32_t n) { return n ? rnd() % n : 0; }

Bytes frame_of(const SegmentSpec& spec, int vlan_tags) {
  uint8_t ip[65536];
  const size_t n = build_segment(spec, ip, sizeof ip);
  Bytes f = {0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2};
  for (int i = 0; i < vlan_tags; ++i) {
    const uint8_t tag[4] = {static_cast<uint8_t>(i == 0 && vlan_tags == 2 ? 0x88 : 0x81),
                            static_cast<uint8_t>(i == 0 && vlan_tags == 2 ? 0xA8 : 0x00), 0, 7};
    f.insert(f.end(), tag, tag + 4);
  }
  f.push_back(0x08);
  f.push_back(0x00);
  f.insert(f.end(), ip, ip + n);
  return f;
}

std::vector<Bytes> builtin_seeds() {
  std::vector<Bytes> seeds;
  uint8_t payload[1500];
  for (size_t i = 0; i < sizeof payload; ++i) payload[i] = static_cast<uint8_t>(i * 13);
  const uint8_t syn[20] = {2, 4, 0x05, 0xB4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7};
  const uint8_t odd[11] = {30, 6, 1, 2, 3, 4, 1, 3, 3, 15, 0};
  for (int v = 0; v < 3; ++v) {
    SegmentSpec s;
    s.saddr = 0x0100000A; s.daddr = 0x0200000A;
    s.sport = 40000; s.dport = 80; s.seq = 0xFFFFFF00u; s.ack = 5; s.window = 502;
    s.flags = kSyn;
    s.raw_options = syn; s.raw_options_len = sizeof syn;
    seeds.push_back(frame_of(s, v));
    s.raw_options = odd; s.raw_options_len = sizeof odd;
    seeds.push_back(frame_of(s, v));
    s.raw_options = nullptr; s.raw_options_len = 0;
    s.flags = kAck | kPsh;
    s.has_ts = true; s.tsval = 100; s.tsecr = 200;
    s.sack_count = 3;
    s.sack[0] = {1, 2}; s.sack[1] = {3, 4}; s.sack[2] = {5, 6};
    s.payload = payload; s.payload_len = v == 0 ? 0 : v == 1 ? 100 : 1400;
    seeds.push_back(frame_of(s, v));
    s.has_ts = false; s.sack_count = 4; s.sack[3] = {7, 8};
    seeds.push_back(frame_of(s, v));
  }
  return seeds;
}

void add_dir(const char* dir, std::vector<Bytes>* corpus) {
  DIR* d = opendir(dir);
  if (!d) {
    std::fprintf(stderr, "fuzz_packet: cannot read corpus directory '%s'\n", dir);
    return;
  }
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string path = std::string(dir) + "/" + e->d_name;
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) continue;
    Bytes b;
    uint8_t buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0 && b.size() < (1u << 20)) b.insert(b.end(), buf, buf + n);
    std::fclose(f);
    corpus->push_back(std::move(b));
  }
  closedir(d);
}

// Offsets of the length-bearing fields of a frame without VLAN tags:
// IPv4 IHL, total length, TCP data offset, first option length bytes.
const size_t kLengthFields[] = {14, 16, 17, 46, 55, 57, 59, 61, 63};

void mutate(Bytes* b, const std::vector<Bytes>& corpus) {
  const int count = 1 + static_cast<int>(below(4));
  for (int k = 0; k < count; ++k) {
    switch (below(9)) {
      case 0:  // bit flip
        if (!b->empty()) (*b)[below(static_cast<uint32_t>(b->size()))] ^= static_cast<uint8_t>(1u << below(8));
        break;
      case 1: {  // byte set to an interesting value
        static const uint8_t vals[] = {0, 1, 2, 3, 4, 5, 8, 10, 0x0F, 0x40, 0x45, 0x46, 0x4F, 0x50, 0x7F, 0x80, 0xF0, 0xFF};
        if (!b->empty()) (*b)[below(static_cast<uint32_t>(b->size()))] = vals[below(sizeof vals)];
        break;
      }
      case 2:  // random byte
        if (!b->empty()) (*b)[below(static_cast<uint32_t>(b->size()))] = static_cast<uint8_t>(rnd());
        break;
      case 3:  // truncate
        if (!b->empty()) b->resize(below(static_cast<uint32_t>(b->size())));
        break;
      case 4: {  // insert bytes
        const size_t at = below(static_cast<uint32_t>(b->size() + 1));
        const size_t n = 1 + below(8);
        Bytes ins(n);
        for (auto& x : ins) x = static_cast<uint8_t>(rnd());
        b->insert(b->begin() + static_cast<long>(at), ins.begin(), ins.end());
        break;
      }
      case 5: {  // erase bytes
        if (b->empty()) break;
        const size_t at = below(static_cast<uint32_t>(b->size()));
        const size_t n = 1 + below(static_cast<uint32_t>(b->size() - at < 8 ? b->size() - at : 8));
        b->erase(b->begin() + static_cast<long>(at), b->begin() + static_cast<long>(at + n));
        break;
      }
      case 6: {  // length-field tweak, then often a fixed IP checksum so the parser goes deeper
        const size_t off = kLengthFields[below(sizeof kLengthFields / sizeof kLengthFields[0])];
        if (off < b->size()) (*b)[off] = static_cast<uint8_t>((*b)[off] + static_cast<int>(below(9)) - 4);
        break;
      }
      case 7: {  // splice the tail of another corpus member
        const Bytes& o = corpus[below(static_cast<uint32_t>(corpus.size()))];
        if (o.empty()) break;
        const size_t at = below(static_cast<uint32_t>(b->size() + 1));
        const size_t from = below(static_cast<uint32_t>(o.size()));
        b->resize(at);
        b->insert(b->end(), o.begin() + static_cast<long>(from), o.end());
        break;
      }
      default:  // set the IPv4 total length to what is there
        if (b->size() >= 18) {
          const size_t tot = b->size() - 14;
          (*b)[16] = static_cast<uint8_t>(tot >> 8);
          (*b)[17] = static_cast<uint8_t>(tot);
        }
        break;
    }
  }
  // Fix the IPv4 header checksum most of the time: otherwise nearly every
  // mutant stops at bad_ip_checksum.
  if (below(4) != 0 && b->size() >= 34 && (*b)[12] == 0x08 && (*b)[13] == 0x00) {
    const size_t ihl = ((*b)[14] & 0x0F) * 4u;
    if (ihl >= 20 && b->size() >= 14 + ihl) {
      (*b)[24] = (*b)[25] = 0;
      const uint16_t c = ipv4_header_checksum(b->data() + 14, ihl);
      std::memcpy(b->data() + 24, &c, 2);
    }
  }
  if (b->size() > 4096) b->resize(4096);
}

// A coarse outcome signature: which error each of the five parses gave, and
// a few option bits; a new signature adds the input to the corpus.
uint32_t outcome(const uint8_t* d, size_t n) {
  Segment s;
  uint32_t sig = static_cast<uint32_t>(parse_ethernet(d, n, &s));
  if (sig == 0) sig |= (s.opt.has_mss | s.opt.has_wscale << 1 | s.opt.sack_permitted << 2 |
                        s.opt.has_ts << 3 | s.opt.sack_count << 4) << 8;
  sig = sig * 31 + static_cast<uint32_t>(parse_ipv4(d, n, false, &s));
  sig = sig * 31 + static_cast<uint32_t>(parse_ipv4(d, n, true, &s));
  if (n >= 14) sig = sig * 31 + static_cast<uint32_t>(parse_ipv4(d + 14, n - 14, true, &s));
  return sig;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 10;
  unsigned long long max_runs = ~0ull;
  std::vector<Bytes> corpus = builtin_seeds();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) seconds = std::atof(argv[++i]);
    else if (a == "--runs" && i + 1 < argc) max_runs = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--seed" && i + 1 < argc) g_rng = std::strtoull(argv[++i], nullptr, 0) | 1;
    else if (a[0] != '-') add_dir(a.c_str(), &corpus);
    else {
      std::fprintf(stderr, "usage: fuzz_packet [--seconds S] [--runs N] [--seed N] [CORPUS_DIR...]\n");
      return 2;
    }
  }
  std::vector<uint32_t> seen;
  auto run_one = [&](const Bytes& b) {
    std::unique_ptr<uint8_t[]> copy(new uint8_t[b.size() ? b.size() : 1]);
    if (!b.empty()) std::memcpy(copy.get(), b.data(), b.size());
    LLVMFuzzerTestOneInput(copy.get(), b.size());
    return outcome(copy.get(), b.size());
  };
  auto note = [&](uint32_t sig) {
    for (uint32_t x : seen) if (x == sig) return false;
    seen.push_back(sig);
    return true;
  };
  const auto start = std::chrono::steady_clock::now();
  unsigned long long runs = 0;
  for (const Bytes& b : corpus) { note(run_one(b)); ++runs; }
  const size_t seeds = corpus.size();
  while (runs < max_runs) {
    if ((runs & 255) == 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() >= seconds)
      break;
    Bytes b = corpus[below(static_cast<uint32_t>(corpus.size()))];
    mutate(&b, corpus);
    const uint32_t sig = run_one(b);
    ++runs;
    if (note(sig) && corpus.size() < 10000) corpus.push_back(std::move(b));
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("fuzz_packet standalone: %llu runs in %.1f s (%.0f/s), %zu seeds, corpus %zu, %zu outcomes\n",
              runs, secs, runs / (secs > 0 ? secs : 1), seeds, corpus.size(), seen.size());
  return 0;
}
#endif  // T2CP_STANDALONE_FUZZ
