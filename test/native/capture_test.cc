// Native tests of the mirror capture's BPF program (addon/incoming_capture.cc,
// capture_program): crafted Ethernet frames run through it by libpcap's
// interpreter (bpf_filter) and by the kernel's own (the program attached to
// one end of an AF_UNIX datagram socketpair: the kernel checks it as it
// would on the packet socket, runs it on every datagram and keeps as many
// bytes as it returns, with no privilege needed). Then the frames the kernel
// cut are parsed as the engine parses them. No framework (check.h); the last
// line printed is "N passed, N failed". Built and run under ASan/UBSan by
// test/native/run.sh.
//
//   capture_test                      run every test
//   capture_test --dump VIP PORT...   print the mirror program for VIP:PORTs and exit
#include <arpa/inet.h>
#include <linux/filter.h>
#include <pcap/pcap.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "check.h"
#include "incoming_capture.h"
#include "packet.h"

using namespace t2cp;

namespace {

#define CHECK_OK(call)                                                                     \
  do {                                                                                     \
    const ParseError got_ = (call);                                                        \
    if (got_ != ParseError::kOk && g_check_failures++ < 10)                                \
      std::printf("  FAIL %s: %s:%d: %s -> %s\n", g_test_name, __FILE__, __LINE__, #call,  \
                  kParseErrorNames[static_cast<int>(got_)]);                               \
  } while (0)

using Bytes = std::vector<uint8_t>;
using Program = std::vector<sock_filter>;

uint32_t addr(const char* dotted) { return inet_addr(dotted); }  // network order

const uint32_t kVip = addr("198.18.1.10");
const uint32_t kClient = addr("198.18.0.5");
const uint32_t kOther = addr("198.18.0.9");

CaptureConfig mirror_config(std::vector<uint16_t> ports) {
  CaptureConfig c;
  c.ifname = "mirror0";
  c.vip = kVip;
  c.ports = std::move(ports);
  return c;
}

void wr16(uint8_t* p, uint16_t v) { p[0] = static_cast<uint8_t>(v >> 8); p[1] = static_cast<uint8_t>(v); }

void fix_ip_check(uint8_t* ip) {
  const size_t ihl = (ip[0] & 15) * 4u;
  ip[10] = ip[11] = 0;
  const uint16_t c = ipv4_header_checksum(ip, ihl);
  std::memcpy(ip + 10, &c, 2);
}

// An IPv4/TCP segment with timestamps and `payload_len` bytes.
Bytes segment(uint32_t saddr, uint16_t sport, uint32_t daddr, uint16_t dport, size_t payload_len,
              uint8_t flags = kAck | kPsh) {
  SegmentSpec s;
  s.saddr = saddr; s.daddr = daddr;
  s.sport = sport; s.dport = dport;
  s.seq = 0xFFFFFF00u; s.ack = 12345;
  s.flags = flags;
  s.window = 501;
  s.has_ts = true; s.tsval = 77; s.tsecr = 66;
  Bytes payload(payload_len);
  for (size_t i = 0; i < payload_len; ++i) payload[i] = static_cast<uint8_t>(i * 13);
  s.payload = payload.data();
  s.payload_len = static_cast<uint32_t>(payload_len);
  Bytes b(65536);
  b.resize(build_segment(s, b.data(), b.size()));
  return b;
}

// The same segment with IPv4 and TCP headers at their largest (60 bytes each).
Bytes longest_headers(Bytes ip) {
  Bytes tcp_opts(28, 1);  // NOPs after the 12 bytes of timestamps: 40 bytes of options
  ip.insert(ip.begin() + 20 + 32, tcp_opts.begin(), tcp_opts.end());
  ip[20 + 12] = static_cast<uint8_t>(15 << 4);
  Bytes ip_opts(40, 1);  // NOP IP options
  ip.insert(ip.begin() + 20, ip_opts.begin(), ip_opts.end());
  ip[0] = 0x4F;
  wr16(&ip[2], static_cast<uint16_t>(ip.size()));
  fix_ip_check(ip.data());
  return ip;
}

// BIG TCP: the same segment with `payload_len` > 64 KiB and total length 0.
Bytes big_tcp(uint32_t saddr, uint16_t sport, uint32_t daddr, uint16_t dport, size_t payload_len) {
  Bytes ip = segment(saddr, sport, daddr, dport, 0);
  const size_t hdrs = ip.size();
  ip.resize(hdrs + payload_len);
  for (size_t i = 0; i < payload_len; ++i) ip[hdrs + i] = static_cast<uint8_t>(i);
  wr16(&ip[2], 0);
  fix_ip_check(ip.data());
  return ip;
}

Bytes ethernet(const Bytes& ip, std::initializer_list<uint16_t> tpids = {}, uint16_t type = 0x0800) {
  Bytes f = {0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2};
  for (uint16_t t : tpids) {
    f.push_back(static_cast<uint8_t>(t >> 8));
    f.push_back(static_cast<uint8_t>(t));
    f.push_back(0x00);
    f.push_back(0x2A);
  }
  f.push_back(static_cast<uint8_t>(type >> 8));
  f.push_back(static_cast<uint8_t>(type));
  f.insert(f.end(), ip.begin(), ip.end());
  return f;
}

Program program(const CaptureConfig& cfg) {
  Program p;
  const std::string err = capture_program(cfg, &p);
  if (!err.empty()) std::printf("  capture_program: %s\n", err.c_str());
  return p;
}

// libpcap's program for a filter text, as the capture compiles it.
Program compiled(const std::string& text) {
  Program p;
  pcap_t* dead = pcap_open_dead(DLT_EN10MB, static_cast<int>(kCaptureSnapLen));
  bpf_program bp{};
  if (dead && pcap_compile(dead, &bp, text.c_str(), 1, PCAP_NETMASK_UNKNOWN) == 0) {
    const sock_filter* in = reinterpret_cast<const sock_filter*>(bp.bf_insns);
    p.assign(in, in + bp.bf_len);
    pcap_freecode(&bp);
  }
  if (dead) pcap_close(dead);
  return p;
}

const bpf_insn* insns(const Program& p) { return reinterpret_cast<const bpf_insn*>(p.data()); }

// What libpcap's interpreter returns for a frame (0: dropped).
uint32_t run_pcap(const Program& p, const Bytes& f) {
  return bpf_filter(insns(p), f.data(), static_cast<u_int>(f.size()), static_cast<u_int>(f.size()));
}

// The kernel's interpreter: a socketpair with the program on its receiving end.
class KernelFilter {
 public:
  explicit KernelFilter(const Program& p) {
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, fd_) < 0) {
      error_ = std::string("socketpair: ") + std::strerror(errno);
      return;
    }
    int buf = 1 << 20;  // room for a BIG TCP frame in one datagram
    setsockopt(fd_[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    sock_fprog fprog{static_cast<unsigned short>(p.size()), const_cast<sock_filter*>(p.data())};
    if (setsockopt(fd_[1], SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog) < 0)
      error_ = std::string("SO_ATTACH_FILTER: ") + std::strerror(errno);
  }
  ~KernelFilter() {
    for (int fd : fd_)
      if (fd >= 0) close(fd);
  }
  const std::string& error() const { return error_; }
  // The bytes the kernel kept of f: empty when the program dropped it.
  Bytes run(const Bytes& f) {
    Bytes got(f.size() + 1);
    if (send(fd_[0], f.data(), f.size(), 0) != static_cast<ssize_t>(f.size())) {
      std::printf("  send %zu bytes: %s\n", f.size(), std::strerror(errno));
      return {};
    }
    const ssize_t n = recv(fd_[1], got.data(), got.size(), MSG_DONTWAIT);
    got.resize(n < 0 ? 0 : static_cast<size_t>(n));
    return got;
  }

 private:
  int fd_[2] = {-1, -1};
  std::string error_;
};

struct Case {
  const char* name;
  Bytes frame;
  uint32_t want;  // the program's return: 0, kHeaderSnapLen or kCaptureSnapLen
};

// The frames of the tests for VIP:port and VIP:other_port (a port of the
// configuration and one outside it).
std::vector<Case> cases(uint16_t port, uint16_t other_port) {
  const uint32_t whole = static_cast<uint32_t>(kCaptureSnapLen), head = static_cast<uint32_t>(kHeaderSnapLen);
  Bytes udp = segment(kClient, 40000, kVip, port, 100);
  udp[9] = 17;
  fix_ip_check(udp.data());
  // ICMP errors toward the VIP quoting the primary's segment (RFC 792: its IPv4 header and 8 bytes).
  auto icmp = [](uint8_t type, uint8_t code, const Bytes& quoted) {
    Bytes ip(20 + 8 + 28, 0);
    ip[0] = 0x45;
    wr16(&ip[2], static_cast<uint16_t>(ip.size()));
    ip[8] = 64;
    ip[9] = 1;
    std::memcpy(&ip[12], &kOther, 4);
    std::memcpy(&ip[16], &kVip, 4);
    ip[20] = type;
    ip[21] = code;
    std::memcpy(&ip[28], quoted.data(), 28);
    fix_ip_check(ip.data());
    return ip;
  };
  const Bytes quoted = segment(kVip, port, kClient, 40000, 1400);
  Bytes later_fragment = segment(kVip, port, kClient, 40000, 1400);
  wr16(&later_fragment[6], 185);  // fragment offset 1480 bytes
  fix_ip_check(later_fragment.data());
  return {
      {"client data to VIP:port", ethernet(segment(kClient, 40000, kVip, port, 1400)), whole},
      {"client SYN to VIP:port", ethernet(segment(kClient, 40001, kVip, port, 0, kSyn)), whole},
      {"client data to VIP:port, longest headers", ethernet(longest_headers(segment(kClient, 40000, kVip, port, 1000))), whole},
      {"client 64 KiB GRO frame to VIP:port", ethernet(segment(kClient, 40000, kVip, port, 65535 - 52)), whole},
      {"client BIG TCP frame to VIP:port", ethernet(big_tcp(kClient, 40000, kVip, port, 70000)), whole},
      {"primary data from VIP:port", ethernet(segment(kVip, port, kClient, 40000, 1400)), head},
      {"primary pure ACK from VIP:port", ethernet(segment(kVip, port, kClient, 40000, 0, kAck)), head},
      {"primary data from VIP:port, longest headers", ethernet(longest_headers(segment(kVip, port, kClient, 40000, 1000))), head},
      {"primary 64 KiB GRO frame from VIP:port", ethernet(segment(kVip, port, kClient, 40000, 65535 - 52)), head},
      {"primary BIG TCP frame from VIP:port", ethernet(big_tcp(kVip, port, kClient, 40000, 70000)), whole},
      {"client to VIP:other port", ethernet(segment(kClient, 40000, kVip, other_port, 100)), 0},
      {"client from port to VIP:other port", ethernet(segment(kClient, port, kVip, other_port, 100)), 0},
      {"VIP:other port to client port", ethernet(segment(kVip, other_port, kClient, port, 100)), 0},
      {"between two other hosts on port", ethernet(segment(kClient, 40000, kOther, port, 100)), 0},
      {"UDP to VIP:port", ethernet(udp), 0},
      {"ICMP fragmentation needed to VIP", ethernet(icmp(3, 4, quoted)), whole},
      {"ICMP time exceeded to VIP", ethernet(icmp(11, 0, quoted)), whole},
      {"ICMP echo request to VIP", ethernet(icmp(8, 0, quoted)), 0},
      {"later IPv4 fragment from VIP:port", ethernet(later_fragment), 0},
      {"ARP", ethernet(Bytes(28, 0), {}, 0x0806), 0},
      {"802.1Q-tagged client data to VIP:port", ethernet(segment(kClient, 40000, kVip, port, 1400), {0x8100}), 0},
      {"802.1Q-tagged primary data from VIP:port", ethernet(segment(kVip, port, kClient, 40000, 1400), {0x8100}), 0},
      {"802.1ad+802.1Q-tagged primary data", ethernet(segment(kVip, port, kClient, 40000, 1400), {0x88A8, 0x8100}), 0},
  };
}

const std::vector<std::vector<uint16_t>> kPortLists = {
    {7000}, {7000, 6379}, {6379, 7000, 80, 443, 8080, 11211, 5432, 3306, 27017, 9092, 1, 65535}};

// ---------------------------------------------------------------- tests

void test_header_snaplen_covers_headers() {
  // The longest header stack parse_ethernet accepts.
  CHECK_EQ(kHeaderSnapLen, 14u + 2 * 4 + 60 + 60);
  CHECK(kHeaderSnapLen < kCaptureSnapLen);
}

// The outbound (traffic recorder) program is libpcap's, untouched.
void test_outbound_program_is_libpcaps() {
  CaptureConfig c = mirror_config({7000, 6379});
  c.outbound = true;
  CHECK(capture_filter(c) == "tcp and dst host 198.18.1.10 and (dst port 7000 or dst port 6379)");
  const Program p = program(c), want = compiled(capture_filter(c));
  CHECK(!p.empty());
  CHECK_EQ(p.size(), want.size());
  CHECK(p.size() == want.size() && std::memcmp(p.data(), want.data(), p.size() * sizeof(sock_filter)) == 0);
  // With UDP ports the recorder keeps the clients' datagrams too; with them alone, those only.
  c.udp_ports = {5060};
  CHECK_BYTES(capture_filter(c), "(tcp and dst host 198.18.1.10 and (dst port 7000 or dst port 6379)) or "
                                 "(udp and dst host 198.18.1.10 and (dst port 5060)) or "
                                 "(ip proto 17 and dst host 198.18.1.10 and ip[6:2] & 0x1fff != 0)");
  CHECK(!program(c).empty());
  c.ports.clear();
  CHECK_BYTES(capture_filter(c), "(udp and dst host 198.18.1.10 and (dst port 5060)) or "
                                 "(ip proto 17 and dst host 198.18.1.10 and ip[6:2] & 0x1fff != 0)");
  CHECK(!program(c).empty());
}

// The mirror program: libpcap's to-VIP program with its rejections turned
// into jumps to the from-VIP program, whose acceptances jump to the tail.
void test_mirror_program_layout() {
  for (const auto& ports : kPortLists) {
    const CaptureConfig c = mirror_config(ports);
    const Program p = program(c);
    CHECK(bpf_validate(insns(p), static_cast<int>(p.size())) != 0);
    const size_t to_vip = compiled(whole_frames_filter(c)).size();
    const std::string from_vip_text = header_frames_filter(c);
    CHECK(from_vip_text.rfind("tcp and src host 198.18.1.10 and (src port ", 0) == 0);
    const size_t from_vip = compiled(from_vip_text).size();
    CHECK_EQ(p.size(), to_vip + from_vip + 4);
    for (size_t i = 0; i < p.size(); ++i) {
      const sock_filter& in = p[i];
      if (in.code == (BPF_JMP | BPF_JA)) {
        // Every added jump lands at a block's start: the from-VIP program or the tail.
        const size_t to = i + 1 + in.k;
        CHECK(i < to_vip ? to == to_vip : to == to_vip + from_vip);
      }
      if (BPF_CLASS(in.code) == BPF_RET) {
        CHECK_EQ(in.code, BPF_RET | BPF_K);
        if (i < to_vip) CHECK_EQ(in.k, kCaptureSnapLen);  // its rejections continue
        else if (i < to_vip + from_vip) CHECK_EQ(in.k, 0u);  // its acceptances go to the tail
      }
    }
    CHECK_EQ(p[p.size() - 4].code, BPF_LD | BPF_H | BPF_ABS);
    CHECK_EQ(p[p.size() - 4].k, 16u);  // the IPv4 total length of an untagged frame
    CHECK_EQ(p[p.size() - 2].k, kCaptureSnapLen);
    CHECK_EQ(p[p.size() - 1].k, kHeaderSnapLen);
  }
}

// libpcap's interpreter: whole frames toward VIP:ports, headers of those
// from VIP:ports, nothing else; the same frames as the filter text says.
void test_mirror_program_in_libpcap() {
  for (const auto& ports : kPortLists) {
    const CaptureConfig c = mirror_config(ports);
    const Program p = program(c);
    const Program text = compiled(capture_filter(c));
    std::string single = "tcp and host 198.18.1.10 and (";  // the one filter the capture had before
    for (size_t i = 0; i < ports.size(); ++i) single += (i ? " or port " : "port ") + std::to_string(ports[i]);
    const Program before = compiled(single + ")");
    CHECK(!before.empty());
    for (uint16_t port : ports) {
      for (const Case& k : cases(port, 7001)) {
        const int failures = g_check_failures;
        const uint32_t got = run_pcap(p, k.frame);
        CHECK_EQ(got, k.want);
        CHECK_EQ(run_pcap(text, k.frame) != 0, got != 0);
        // Tagged frames: dropped, as by the single filter the capture had before.
        if (std::strstr(k.name, "tagged")) CHECK_EQ(run_pcap(before, k.frame), 0u);
        if (g_check_failures != failures) NOTE("%s, port %u\n", k.name, port);
      }
    }
  }
}

// The kernel accepts the program and keeps exactly min(return, frame) bytes.
void test_mirror_program_in_kernel() {
  for (const auto& ports : kPortLists) {
    const Program p = program(mirror_config(ports));
    KernelFilter kf(p);
    CHECK(kf.error().empty());
    if (!kf.error().empty()) {
      std::printf("  %s\n", kf.error().c_str());
      return;
    }
    for (uint16_t port : ports) {
      for (const Case& k : cases(port, 7001)) {
        const int failures = g_check_failures;
        const Bytes got = kf.run(k.frame);
        CHECK_EQ(got.size(), std::min<size_t>(k.want, k.frame.size()));
        CHECK(std::equal(got.begin(), got.end(), k.frame.begin()));
        if (g_check_failures != failures) NOTE("%s, port %u: %zu of %zu bytes\n", k.name, port, got.size(), k.frame.size());
      }
    }
  }
}

// Ports whose primary output is compared (whole_output_ports): their
// primary's frames are kept whole, the other ports' still cut to headers; in
// libpcap's interpreter and in the kernel alike.
void test_compared_ports_keep_the_primarys_output() {
  const uint32_t whole = static_cast<uint32_t>(kCaptureSnapLen), head = static_cast<uint32_t>(kHeaderSnapLen);
  const std::vector<std::vector<uint16_t>> compared_lists = {{7000}, {7000, 6379}};
  for (const auto& compared : compared_lists) {
    CaptureConfig c = mirror_config({7000, 6379});
    c.whole_output_ports = compared;
    const Program p = program(c);
    CHECK(!p.empty() && bpf_validate(insns(p), static_cast<int>(p.size())) != 0);
    KernelFilter kf(p);
    CHECK(kf.error().empty());
    for (uint16_t port : {7000, 6379}) {
      const bool kept = std::find(compared.begin(), compared.end(), port) != compared.end();
      for (const Case& k : cases(port, 7001)) {
        const int failures = g_check_failures;
        // A frame the plain program cuts to headers is kept whole on a compared port.
        const uint32_t want = (k.want == head && kept) ? whole : k.want;
        CHECK_EQ(run_pcap(p, k.frame), want);
        if (kf.error().empty()) CHECK_EQ(kf.run(k.frame).size(), std::min<size_t>(want, k.frame.size()));
        if (g_check_failures != failures) NOTE("%s, port %u, %zu compared\n", k.name, port, compared.size());
      }
    }
  }
}

// What the kernel keeps of the primary's frames parses as on_mirror_frame
// parses it: every header field, the payload length from the IPv4 total
// length; a client's frame cut the same way is still an error.
void test_cut_frames_parse() {
  const uint16_t port = 6379;
  KernelFilter kf(program(mirror_config({7000, port})));
  CHECK(kf.error().empty());
  for (const Case& k : cases(port, 7001)) {
    if (k.want == 0 || std::strncmp(k.name, "ICMP", 4) == 0) continue;
    const Bytes got = kf.run(k.frame);
    Segment whole, cut;
    CHECK_OK(parse_ethernet(k.frame.data(), k.frame.size(), &whole));
    std::vector<uint8_t> exact(got);  // exactly sized: ASan sees a read past the cut
    const ParseError e = parse_ethernet(exact.data(), exact.size(), true, &cut);
    CHECK_OK(e);
    if (e != ParseError::kOk) {
      NOTE("%s: %zu of %zu bytes\n", k.name, got.size(), k.frame.size());
      continue;
    }
    CHECK_EQ(cut.payload_len, whole.payload_len);
    CHECK_EQ(cut.ip_len, whole.ip_len);
    CHECK(cut.saddr == whole.saddr && cut.daddr == whole.daddr && cut.sport == whole.sport &&
          cut.dport == whole.dport);
    CHECK(cut.seq == whole.seq && cut.ack == whole.ack && cut.flags == whole.flags && cut.window == whole.window);
    CHECK(cut.opt.has_ts && cut.opt.tsval == 77 && cut.opt.tsecr == 66);
    const bool is_cut = size_t(cut.ip - exact.data()) + cut.ip_len > exact.size();
    CHECK_EQ(is_cut, got.size() < k.frame.size());
    // The strict parse (a client's frame) of the same bytes.
    Segment strict;
    const ParseError se = parse_ethernet(exact.data(), exact.size(), &strict);
    CHECK(se == (is_cut ? ParseError::kTruncatedIp : ParseError::kOk));
  }
  // A client's data frame cut to kHeaderSnapLen is kTruncatedIp, whichever way parsed.
  Bytes client = ethernet(segment(kClient, 40000, kVip, port, 1400));
  client.resize(kHeaderSnapLen);
  Segment s;
  CHECK(parse_ethernet(client.data(), client.size(), &s) == ParseError::kTruncatedIp);
  CHECK_OK(parse_ethernet(client.data(), client.size(), true, &s));
  CHECK(size_t(s.ip - client.data()) + s.ip_len > client.size());  // what on_mirror_frame counts as kTruncatedIp
}

// Many ports still fit the kernel's limit, or open() says why.
// UDP ports: the clients' datagrams toward them kept whole, as the TCP
// clients' segments; with no TCP port at all (a UDP service alone) the
// program still compiles, keeps those and the ICMP errors, and nothing else;
// the primary's datagrams only from the ports whose output is compared.
void test_udp_ports() {
  const uint32_t whole = static_cast<uint32_t>(kCaptureSnapLen);
  for (const auto& tcp_ports : std::vector<std::vector<uint16_t>>{{7000}, {}}) {
    CaptureConfig c = mirror_config(tcp_ports);
    c.udp_ports = {5060, 10000};
    const Program p = program(c);
    CHECK(!p.empty() && bpf_validate(insns(p), static_cast<int>(p.size())) != 0);
    Bytes to_sip = segment(kClient, 5062, kVip, 5060, 300);
    to_sip[9] = 17;
    fix_ip_check(to_sip.data());
    Bytes from_sip = segment(kVip, 5060, kClient, 5062, 300);
    from_sip[9] = 17;
    fix_ip_check(from_sip.data());
    Bytes other = segment(kClient, 5062, kVip, 5070, 300);
    other[9] = 17;
    fix_ip_check(other.data());
    CHECK_EQ(run_pcap(p, ethernet(to_sip)), whole);
    CHECK_EQ(run_pcap(p, ethernet(from_sip)), 0u);  // the primary's answers: not needed yet
    CHECK_EQ(run_pcap(p, ethernet(other)), 0u);
    CHECK_EQ(run_pcap(p, ethernet(segment(kClient, 40000, kVip, 7000, 100))), tcp_ports.empty() ? 0u : whole);
    CHECK_EQ(run_pcap(p, ethernet(segment(kClient, 40000, kVip, 5060, 100))), 0u);  // TCP to a UDP port
    // A datagram cut in fragments: the first (its UDP header) by its port, those after it (no
    // header: reassembled, then matched) toward the VIP whatever they hold; a TCP segment's
    // too when TCP ports are replicated.
    Bytes first = to_sip, later = segment(kClient, 0, kVip, 0, 300);
    first[6] = 0x20;  // MF, offset 0
    fix_ip_check(first.data());
    later[9] = 17;
    later[6] = 0x00, later[7] = 0xb9;  // offset 1480, the last
    fix_ip_check(later.data());
    CHECK_EQ(run_pcap(p, ethernet(first)), whole);
    CHECK_EQ(run_pcap(p, ethernet(later)), whole);
    later[9] = 6;
    fix_ip_check(later.data());
    CHECK_EQ(run_pcap(p, ethernet(later)), tcp_ports.empty() ? 0u : whole);
    // The primary's datagrams of a compared port (udp_output_ports) kept whole, another's not.
    c.udp_output_ports = {5060};
    const Program q = program(c);
    CHECK(!q.empty() && bpf_validate(insns(q), static_cast<int>(q.size())) != 0);
    CHECK_EQ(run_pcap(q, ethernet(from_sip)), whole);
    Bytes from_other = segment(kVip, 10000, kClient, 5062, 300);
    from_other[9] = 17;
    fix_ip_check(from_other.data());
    CHECK_EQ(run_pcap(q, ethernet(from_other)), 0u);
    CHECK_EQ(run_pcap(q, ethernet(to_sip)), whole);
    // A media range: one portrange term, its ends in, the next port out.
    c.udp_ports = {5060};
    for (uint16_t port = 10000; port <= 10100; port++) c.udp_ports.push_back(port);
    c.udp_output_ports.clear();
    CHECK(whole_frames_filter(c).find("dst portrange 10000-10100") != std::string::npos);
    const Program m = program(c);
    CHECK(!m.empty() && bpf_validate(insns(m), static_cast<int>(m.size())) != 0);
    for (uint16_t port : {10000, 10050, 10100, 10101}) {
      Bytes rtp = segment(kClient, 30000, kVip, port, 172);
      rtp[9] = 17;
      fix_ip_check(rtp.data());
      CHECK_EQ(run_pcap(m, ethernet(rtp)), port <= 10100 ? whole : 0u);
    }
  }
}

void test_many_ports() {
  std::vector<uint16_t> ports;
  for (uint16_t p = 1000; p < 1400; ++p) ports.push_back(p);
  const Program p = program(mirror_config(ports));
  CHECK(!p.empty() && p.size() <= BPF_MAXINSNS);
  KernelFilter kf(p);
  CHECK(kf.error().empty());
  CHECK_EQ(kf.run(ethernet(segment(kVip, 1399, kClient, 40000, 1400))).size(), kHeaderSnapLen);
  CHECK_EQ(kf.run(ethernet(segment(kClient, 40000, kVip, 1000, 1400))).size(), 14u + 52 + 1400);
  CHECK(kf.run(ethernet(segment(kClient, 40000, kVip, 1400, 1400))).empty());
  // 1,200 ports (each TCP port its own test; libpcap's optimizer takes seconds on such a
  // filter, growing with the square of its length).
  for (uint32_t p = 1400; p < 2200; ++p) ports.push_back(static_cast<uint16_t>(p));
  Program too_long;
  const std::string err = capture_program(mirror_config(ports), &too_long);
  CHECK(!err.empty() && too_long.empty());
}

int dump(int argc, char** argv) {
  CaptureConfig c;
  if (argc < 2 || inet_pton(AF_INET, argv[0], &c.vip) != 1) {
    std::fprintf(stderr, "usage: capture_test --dump VIP PORT...\n");
    return 2;
  }
  for (int i = 1; i < argc; ++i) c.ports.push_back(static_cast<uint16_t>(std::atoi(argv[i])));
  Program p;
  const std::string err = capture_program(c, &p);
  if (!err.empty()) {
    std::fprintf(stderr, "%s\n", err.c_str());
    return 1;
  }
  std::printf("%s\n", capture_filter(c).c_str());
  for (size_t i = 0; i < p.size(); ++i)
    std::printf("%s\n", bpf_image(insns(p) + i, static_cast<int>(i)));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "--dump") return dump(argc - 2, argv + 2);
  if (argc != 1) {
    std::fprintf(stderr, "usage: capture_test [--dump VIP PORT...]\n");
    return 2;
  }
  run_test("header snaplen covers the longest headers", test_header_snaplen_covers_headers);
  run_test("outbound program is libpcap's", test_outbound_program_is_libpcaps);
  run_test("mirror program: two libpcap programs and a tail", test_mirror_program_layout);
  run_test("mirror program in libpcap: whole to VIP, headers from VIP, else dropped", test_mirror_program_in_libpcap);
  run_test("compared ports keep the primary's output whole", test_compared_ports_keep_the_primarys_output);
  run_test("mirror program in the kernel keeps what it returns", test_mirror_program_in_kernel);
  run_test("cut primary frames parse, cut client frames do not", test_cut_frames_parse);
  run_test("UDP ports, with and without TCP ports", test_udp_ports);
  run_test("many ports", test_many_ports);
  return finish();
}
