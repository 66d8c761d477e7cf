// Native tests of the kernel's active-mode translator
// (addon/recovery_active_mode.bpf.c) against the engine's own
// (addon/recovery_active_mode.cc), which active_mode_test checks field by
// field: the same flows, the same segments, through both. The programs run
// in the real kernel with BPF_PROG_TEST_RUN (root; no interface needed), so
// what is compared is what the verifier accepted and the JIT runs.
//
//   active_mode_kernel_test <recovery_active_mode.bpf.o> [--seed S]
//
// Every rewritten segment must equal the engine's byte for byte (but the TCP
// checksum, adjusted incrementally by one and recomputed by the other, and
// valid in both), and the map entry must end where the engine's flow ends.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <linux/bpf.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#define CHECK_EQ_HEX
#include "check.h"
#include "engine_context.h"
#include "outgoing_nftables.h"
#include "packet.h"
#include "recovery_active_mode.h"
#include "recovery_active_mode_kernel.h"
#include "active_mode_common.h"

using namespace t2cp;
using namespace t2cp_test;

namespace {

constexpr size_t kEth = 14;

// Loaded once (the verifier's work): every Pair rewrites the one map entry.
KernelTranslator g_kt;

struct Pair : OneFlow {
  KernelTranslator& kt = g_kt;

  // A taken-over flow with random numbers (both spaces anywhere on the
  // circle, either clock ahead, any window shifts), in both translators.
  Pair() {
    f->primary.isn = rnd32();
    f->replica.isn = chance(20) ? f->primary.isn - 1 - rnd_below(4096) : rnd32();
    f->seq_delta = f->replica.isn - f->primary.isn;
    f->replica.snd_nxt = f->replica.isn + 1 + rnd_below(1 << 20);
    f->primary.snd_nxt = f->primary.isn + 1 + rnd_below(1 << 20);
    f->replica.rcv_nxt = rnd32();
    f->client.ts_ok = true;
    f->primary.synack_tsval = rnd32();
    f->replica.synack_tsval = rnd32();
    f->ts_delta = f->replica.synack_tsval - f->primary.synack_tsval;
    f->replica.tsval = f->replica.synack_tsval + rnd_below(100000);
    f->primary.tsval = f->primary.synack_tsval + rnd_below(100000);
    f->replica.wscale = uint8_t(rnd_below(15));
    f->primary.wscale = uint8_t(rnd_below(15));
    f->client.shift = uint8_t(rnd_below(15));
    am->enter(*f);
    CHECK(kt.add(*f));
  }
};

SegmentSpec random_from_backup(const Flow& f) {
  static uint8_t payload[1400];
  SegmentSpec sp;
  sp.saddr = kVip; sp.daddr = kClient; sp.sport = kPort; sp.dport = kClientPort;
  sp.seq = f.replica.snd_nxt - 4000 + rnd_below(8000);
  sp.ack = f.replica.rcv_nxt + rnd_below(3000);
  sp.flags = kAck | (chance(50) ? kPsh : 0) | (chance(4) ? kFin : 0) | (chance(1) ? kRst : 0);
  sp.window = uint16_t(rnd_below(65536));
  sp.has_ts = chance(90);
  sp.tsval = f.replica.tsval - 100 + rnd_below(1000);
  sp.tsecr = rnd32();
  sp.payload = payload;
  sp.payload_len = chance(30) ? 0 : rnd_below(1400);
  return sp;
}

SegmentSpec random_from_client(const Flow& f) {
  static uint8_t payload[900];
  SegmentSpec sp;
  sp.saddr = kClient; sp.daddr = kVip; sp.sport = kClientPort; sp.dport = kPort;
  sp.seq = f.replica.rcv_nxt - 2000 + rnd_below(6000);
  uint32_t sent_p = f.replica.snd_nxt - f.seq_delta;  // the new owner's snd_nxt, primary space
  sp.ack = sent_p - 6000 + rnd_below(9000);     // a third beyond it: clamped
  sp.flags = (chance(97) ? kAck : 0) | (chance(4) ? kFin : 0) | (chance(1) ? kRst : 0);
  sp.window = uint16_t(rnd_below(65536));
  sp.has_ts = chance(90);
  sp.tsval = rnd32();
  sp.tsecr = f.primary.tsval - 500 + rnd_below(1000) + (chance(30) ? f.replica.tsval - f.ts_out_delta - f.primary.tsval : 0);
  sp.sack_count = uint8_t(rnd_below(sp.has_ts ? 4 : 5));
  for (int i = 0; i < sp.sack_count; i++) {
    // Edges on the ack and on the new owner's snd_nxt now and then: the
    // bounds' off-by-ones.
    uint32_t l = chance(10) ? sp.ack : sp.ack - 2000 + rnd_below(10000);
    uint32_t r = chance(10) ? sent_p : l + (chance(10) ? 0 : 1 + rnd_below(3000));
    sp.sack[i] = {l, chance(10) ? r + 1 : r};
  }
  sp.payload = payload;
  sp.payload_len = chance(60) ? 0 : rnd_below(900);
  return sp;
}

// Runs a program on an IPv4 packet in an Ethernet frame (destination MAC
// all zero: the test device's, so the frame is PACKET_HOST unless told).
std::vector<uint8_t> run_prog(int prog_fd, const std::vector<uint8_t>& ip, uint32_t mark = 0, bool other_host = false) {
  std::vector<uint8_t> frame(kEth + ip.size()), out(frame.size() + 256);
  std::memset(frame.data(), 0, kEth);
  if (other_host) frame[0] = 0x02;
  frame[12] = 0x08;
  std::memcpy(frame.data() + kEth, ip.data(), ip.size());
  __sk_buff ctx{};
  ctx.mark = mark;
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(), .data_out = out.data(),
              .data_size_in = uint32_t(frame.size()), .data_size_out = uint32_t(out.size()),
              .ctx_in = &ctx, .ctx_size_in = sizeof ctx);
  int rc = bpf_prog_test_run_opts(prog_fd, &opts);
  CHECK_EQ(rc, 0);
  CHECK_EQ(opts.retval, 0u);  // TC_ACT_OK: the translator never drops
  if (rc != 0 || opts.data_size_out < kEth) return {};
  return std::vector<uint8_t>(out.begin() + kEth, out.begin() + opts.data_size_out);
}

// Equal but the TCP checksum (offset ip_hdr_len + 16), which must be valid.
bool same_but_checksum(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size() || a.size() < 40) return false;
  size_t sum_at = size_t(a[0] & 0x0f) * 4 + 16;
  for (size_t i = 0; i < a.size(); i++)
    if (a[i] != b[i] && i != sum_at && i != sum_at + 1) return false;
  return tcp_checksum_ok_ipv4(b.data());
}

void test_same_rewrite_as_the_engine() {
  uint64_t segments = 0, differ = 0;
  for (int flow = 0; flow < 200; flow++) {
    Pair p;
    for (int i = 0; i < 60; i++) {
      bool out = chance(50);
      std::vector<uint8_t> b = segment(out ? random_from_backup(*p.f) : random_from_client(*p.f));
      std::vector<uint8_t> engine = b;
      p.am->on_packet(engine.data(), engine.size());
      std::vector<uint8_t> kernel = run_prog(out ? p.kt.egress_fd() : p.kt.ingress_fd(), b);
      segments++;
      if (!same_but_checksum(engine, kernel)) {
        if (differ++ < 3) NOTE("flow %d segment %d (%s)\n", flow, i, out ? "egress" : "ingress");
        CHECK(same_but_checksum(engine, kernel));
      }
    }
    t2cp_active_flow v;
    CHECK(p.kt.read(p.f->key, &v));
    CHECK_EQ(v.b_snd_nxt, p.f->replica.snd_nxt);
    CHECK_EQ(v.b_rcv_nxt, p.f->replica.rcv_nxt);
    CHECK_EQ(v.b_tsval, p.f->replica.tsval);
    CHECK_EQ(bool(v.c_fin), p.f->client.fin);
    if (p.f->client.fin) CHECK_EQ(v.c_fin_seq, p.f->client.fin_seq);
    CHECK_EQ(bool(v.c_rst), p.f->client.rst);
    CHECK_EQ(bool(v.b_fin), p.f->replica.fin);
    CHECK_EQ(bool(v.b_rst), p.f->replica.rst);
  }
  std::printf("  %llu segments through both translators\n", static_cast<unsigned long long>(segments));
}

void test_untouched_packets() {
  Pair p;
  uint64_t st0[T2CP_ACTIVE_STAT_COUNT];
  p.kt.stats(st0);
  // Our own resent segments (kInjectMark) are already in the primary's numbers.
  std::vector<uint8_t> resent = segment(random_from_backup(*p.f));
  CHECK(run_prog(p.kt.egress_fd(), resent, kInjectMark) == resent);
  // A mirrored frame for another host's MAC is not ours.
  std::vector<uint8_t> mirrored = segment(random_from_client(*p.f));
  CHECK(run_prog(p.kt.ingress_fd(), mirrored, 0, true) == mirrored);
  // Another client's connection (opened after the takeover) passes as it is.
  SegmentSpec other = random_from_client(*p.f);
  other.sport = kClientPort + 1;
  std::vector<uint8_t> o = segment(other);
  CHECK(run_prog(p.kt.ingress_fd(), o) == o);
  // A new SYN on the taken-over port: passes, and the flow is forgotten.
  SegmentSpec syn = random_from_client(*p.f);
  syn.flags = kSyn;
  syn.ack = 0;
  syn.sack_count = 0;
  syn.payload_len = 0;
  std::vector<uint8_t> s = segment(syn);
  CHECK(run_prog(p.kt.ingress_fd(), s) == s);
  t2cp_active_flow v;
  CHECK(!p.kt.read(p.f->key, &v));
  uint64_t st[T2CP_ACTIVE_STAT_COUNT];
  p.kt.stats(st);
  CHECK_EQ(st[T2CP_ACTIVE_PASSTHROUGH] - st0[T2CP_ACTIVE_PASSTHROUGH], 2u);
  CHECK_EQ(st[T2CP_ACTIVE_IN_PACKETS] + st[T2CP_ACTIVE_OUT_PACKETS], st0[T2CP_ACTIVE_IN_PACKETS] + st0[T2CP_ACTIVE_OUT_PACKETS]);
}

void test_icmp_errors_quote_the_new_owners_numbers() {
  Pair p;
  uint64_t st0[T2CP_ACTIVE_STAT_COUNT];
  p.kt.stats(st0);
  SegmentSpec sp = random_from_backup(*p.f);
  std::vector<uint8_t> sent = segment(sp);                    // as the new owner sent it
  std::vector<uint8_t> wire = run_prog(p.kt.egress_fd(), sent);  // as it left: primary numbers
  std::vector<uint8_t> err = frag_needed(wire, kVip);
  std::vector<uint8_t> in = run_prog(p.kt.ingress_fd(), err);
  CHECK_EQ(in.size(), err.size());
  // The quoted seq is the new owner's again; the rest of the error as it was; its checksum valid.
  // Outer IP (20), ICMP (8), the quoted IP header (20), then TCP: its seq at 4.
  uint32_t quoted_seq = uint32_t(in[52]) << 24 | uint32_t(in[53]) << 16 | uint32_t(in[54]) << 8 | in[55];
  CHECK_EQ(quoted_seq, sp.seq);
  for (size_t i = 0; i < in.size(); i++)
    if (i != 22 && i != 23 && (i < 52 || i > 55)) CHECK_EQ(in[i], err[i]);
  CHECK_EQ(inet_sum(&in[20], in.size() - 20), 0);
  uint64_t st[T2CP_ACTIVE_STAT_COUNT];
  p.kt.stats(st);
  CHECK_EQ(st[T2CP_ACTIVE_ICMP_TRANSLATED] - st0[T2CP_ACTIVE_ICMP_TRANSLATED], 1u);
  // An error quoting another connection's segment passes as it is.
  SegmentSpec other = sp;
  other.dport = kClientPort + 1;
  std::vector<uint8_t> e2 = frag_needed(segment(other), kVip);
  CHECK(run_prog(p.kt.ingress_fd(), e2) == e2);
}

void test_mutated_segments_never_misrewrite() {
  // Whatever the bytes, a packet comes out (the verifier proved the rest);
  // a segment the program rewrote keeps a valid checksum when it had one.
  auto p = std::make_unique<Pair>();
  uint64_t broken = 0;
  for (int i = 0; i < 3000; i++) {
    bool out = chance(50);
    std::vector<uint8_t> b = segment(out ? random_from_backup(*p->f) : random_from_client(*p->f));
    size_t tcp = size_t(b[0] & 0x0f) * 4;
    // Mutate the TCP header's options and flags only, then make the checksum valid again.
    for (int k = 0; k < 3; k++) b[tcp + 12 + rnd_below(uint32_t(std::min<size_t>(b.size() - tcp - 12, 48)))] ^= uint8_t(1u << rnd_below(8));
    uint16_t zero = 0;
    std::memcpy(b.data() + tcp + 16, &zero, 2);
    uint32_t saddr, daddr;
    std::memcpy(&saddr, b.data() + 12, 4);
    std::memcpy(&daddr, b.data() + 16, 4);
    uint16_t c = tcp_checksum_ipv4(saddr, daddr, b.data() + tcp, uint32_t(b.size() - tcp));
    std::memcpy(b.data() + tcp + 16, &c, 2);
    std::vector<uint8_t> k = run_prog(out ? p->kt.egress_fd() : p->kt.ingress_fd(), b);
    if (k.size() != b.size() || !tcp_checksum_ok_ipv4(k.data())) broken++;
    t2cp_active_flow v;
    if (!p->kt.read(p->f->key, &v)) p = std::make_unique<Pair>();  // a mutated SYN closed it: start over
  }
  CHECK_EQ(broken, 0u);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::printf("usage: %s recovery_active_mode.bpf.o [--seed S]\n", argv[0]);
    return 2;
  }
  std::string err = g_kt.load_only(argv[1], kVip, 1024);
  if (!err.empty()) {
    std::printf("active_mode_kernel_test: %s\n", err.c_str());
    return 1;
  }
  if (argc == 4 && std::strcmp(argv[2], "--seed") == 0) set_seed(argv[3]);
  print_seed("active_mode_kernel_test");
  run_test("kernel: the same rewrite as the engine's translator, both ways, map state included", test_same_rewrite_as_the_engine);
  run_test("kernel: own resent segments, mirrored frames, other flows, a new SYN pass untouched", test_untouched_packets);
  run_test("kernel: segments with mutated headers come out whole with a valid checksum", test_mutated_segments_never_misrewrite);
  run_test("kernel: an ICMP error quoting a taken-over segment quotes the new owner's numbers", test_icmp_errors_quote_the_new_owners_numbers);
  return finish();
}
