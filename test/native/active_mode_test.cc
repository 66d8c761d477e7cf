// Native tests of active mode (addon/recovery_active_mode.cc): after a
// takeover every segment of a taken-over flow is rewritten between the
// primary's numbers (what the client knows) and the replica's. Built and run
// under ASan/UBSan by test/native/run.sh; same harness (check.h).
//
// Segments are built with build_segment(), passed through
// ActiveMode::on_packet() as NFQUEUE would hand them over, and parsed again:
// every field must be mapped, the checksum valid, and nothing else touched.
// The flows' sequence spaces cross the 2^32 wrap. A last test throws mutated
// segments at it (must never crash, never break a checksum it rewrote).
#include <cstring>
#include <vector>

#define CHECK_EQ_HEX
#include "check.h"
#include "engine_context.h"
#include "packet.h"
#include "recovery_active_mode.h"
#include "active_mode_common.h"

using namespace t2cp;
using namespace t2cp_test;

namespace {


struct Fixture : OneFlow {
  Fixture() {
    f->primary.isn = 0xFFFFFF00u;               // the primary's numbers cross the wrap
    f->replica.isn = 0x12345678u;
    f->seq_delta = f->replica.isn - f->primary.isn;
    f->replica.snd_nxt = f->replica.isn + 1 + 5000;   // the replica sent 5000 bytes
    f->replica.rcv_nxt = 0x700;                 // client space
    f->client.ack_p = f->primary.isn + 1 + 3000;     // the client acknowledged 3000 of them
    f->client.ts_ok = true;
    f->primary.synack_tsval = 1000;
    f->replica.synack_tsval = 0xFFFFFFF0u;      // the replica's clock crosses the wrap too
    f->ts_delta = f->replica.synack_tsval - f->primary.synack_tsval;
    f->replica.tsval = f->replica.synack_tsval + 400;
    f->primary.tsval = 1000 + 400;
    f->replica.wscale = 7;
    f->primary.wscale = 9;
    f->replica.window = 1000u << 7;
    am->enter(*f);
  }
};

SegmentSpec from_backup(const Flow& f, uint32_t offset, uint32_t len) {
  static uint8_t payload[1400];
  SegmentSpec sp;
  sp.saddr = kVip; sp.daddr = kClient; sp.sport = kPort; sp.dport = kClientPort;
  sp.seq = f.replica.isn + 1 + offset; sp.ack = f.replica.rcv_nxt; sp.flags = kAck | kPsh; sp.window = 1000;
  sp.has_ts = true; sp.tsval = f.replica.tsval + 5; sp.tsecr = 777;
  sp.payload = payload; sp.payload_len = len;
  return sp;
}

SegmentSpec from_client(const Flow& f) {
  SegmentSpec sp;
  sp.saddr = kClient; sp.daddr = kVip; sp.sport = kClientPort; sp.dport = kPort;
  sp.seq = f.replica.rcv_nxt; sp.ack = f.client.ack_p + 1000; sp.flags = kAck; sp.window = 500;
  sp.has_ts = true; sp.tsval = 888; sp.tsecr = f.primary.tsval;
  return sp;
}

Segment parse(std::vector<uint8_t>& b) {
  Segment s;
  CHECK(parse_ipv4(b.data(), b.size(), false, &s) == ParseError::kOk);
  CHECK(tcp_checksum_ok_ipv4(b.data()));
  return s;
}

void test_out_rewrites_seq_ts_window() {
  Fixture x;
  auto b = segment(from_backup(*x.f, 3000, 1000));
  CHECK(x.am->on_packet(b.data(), b.size()) == NfQueue::Verdict::kAcceptRewritten);
  Segment s = parse(b);
  CHECK_EQ(s.seq, x.f->primary.isn + 1 + 3000);               // primary space, across the wrap
  CHECK_EQ(s.ack, 0x700u);                              // client space: untouched
  CHECK(!before(s.opt.tsval, 1400u));                   // never behind the client's ts_recent
  CHECK_EQ(s.opt.tsecr, 777u);                          // the client's own clock: untouched
  CHECK_EQ(s.window, uint16_t((1000u << 7) >> 9));      // rescaled to the primary's shift
  CHECK_EQ(s.payload_len, 1000u);
  CHECK_EQ(x.ctx->counters.get(k_active_out_packets), 1u);
}

void test_in_maps_ack_tsecr_and_sack() {
  Fixture x;
  SegmentSpec sp = from_client(*x.f);
  sp.sack_count = 2;
  sp.sack[0] = {x.f->primary.isn + 1 + 4200, x.f->primary.isn + 1 + 4600};  // within what the replica sent
  sp.sack[1] = {x.f->primary.isn + 1 + 6000, x.f->primary.isn + 1 + 7000};  // beyond it: must go
  auto b = segment(sp);
  CHECK(x.am->on_packet(b.data(), b.size()) == NfQueue::Verdict::kAcceptRewritten);
  Segment s = parse(b);
  CHECK_EQ(s.ack, x.f->replica.isn + 1 + 4000);
  CHECK_EQ(s.opt.sack_count, uint8_t(1));
  CHECK_EQ(s.opt.sack[0].left, x.f->replica.isn + 1 + 4200);
  CHECK_EQ(s.opt.sack[0].right, x.f->replica.isn + 1 + 4600);
  CHECK_EQ(s.opt.tsecr, x.f->replica.synack_tsval + 400);     // the primary's echo in the replica's clock
  CHECK_EQ(s.opt.tsval, 888u);
  CHECK_EQ(s.seq, 0x700u);
  CHECK_EQ(x.ctx->counters.get(k_active_sack_dropped), 1u);
}

void test_in_ack_beyond_replica_is_clamped() {
  Fixture x;
  SegmentSpec sp = from_client(*x.f);
  sp.ack = x.f->primary.isn + 1 + 9000;  // the primary sent more than the replica has
  auto b = segment(sp);
  x.am->on_packet(b.data(), b.size());
  Segment s = parse(b);
  CHECK_EQ(s.ack, x.f->replica.snd_nxt);
  CHECK_EQ(x.ctx->counters.get(k_active_ack_clamped), 1u);
  // The window keeps the client's right edge: 4000 bytes held back, shift 0.
  CHECK_EQ(s.window, uint16_t(sp.window + 4000));
}

void test_unknown_flow_and_new_syn_pass_untouched() {
  Fixture x;
  SegmentSpec sp = from_client(*x.f);
  sp.sport = 40001;  // not taken over: a connection opened after the takeover
  auto b = segment(sp);
  auto copy = b;
  CHECK(x.am->on_packet(b.data(), b.size()) == NfQueue::Verdict::kAccept);
  CHECK(b == copy);
  SegmentSpec syn = from_client(*x.f);
  syn.flags = kSyn;
  syn.ack = 0;
  auto s = segment(syn);
  CHECK(x.am->on_packet(s.data(), s.size()) == NfQueue::Verdict::kAccept);
  CHECK(x.ctx->flows.find(FlowKey{kClient, kClientPort, kPort}) == nullptr);  // the port is reused
}

void test_enter_keeps_paws() {
  Fixture x;
  // The replica's clock lags the primary's by 50 ms in the handshake offset's terms.
  x.f->replica.tsval = x.f->ts_delta + x.f->primary.tsval - 50;
  x.am->enter(*x.f);
  CHECK_EQ(ActiveMode::client_tsval(*x.f), x.f->primary.tsval);
  // A clock that runs ahead keeps the handshake offset (continuity).
  Fixture y;
  y.f->replica.tsval = y.f->ts_delta + y.f->primary.tsval + 50;
  y.am->enter(*y.f);
  CHECK_EQ(y.f->ts_out_delta, y.f->ts_delta);
}

void test_fin_then_fin_closes() {
  Fixture x;
  SegmentSpec fin = from_backup(*x.f, 5000, 0);
  fin.flags = kAck | kFin;
  auto a = segment(fin);
  x.am->on_packet(a.data(), a.size());
  SegmentSpec cfin = from_client(*x.f);
  cfin.flags = kAck | kFin;
  auto b = segment(cfin);
  x.am->on_packet(b.data(), b.size());
  CHECK(x.f->state == FlowState::kClosed);
  CHECK_EQ(x.ctx->counters.get(k_flows_closed), 1u);
}

// An ICMP error quoting a segment the new owner sent (primary numbers, as
// it left): the quoted seq back in the new owner's, the checksum valid.
void test_icmp_error_quotes_the_new_owners_numbers() {
  Fixture x;
  SegmentSpec sp = from_backup(*x.f, 3000, 1000);
  auto wire = segment(sp);
  CHECK(x.am->on_packet(wire.data(), wire.size()) == NfQueue::Verdict::kAcceptRewritten);
  std::vector<uint8_t> err = frag_needed(wire, kVip), orig = err;
  CHECK(x.am->on_packet(err.data(), err.size()) == NfQueue::Verdict::kAcceptRewritten);
  uint32_t quoted = uint32_t(err[52]) << 24 | uint32_t(err[53]) << 16 | uint32_t(err[54]) << 8 | err[55];
  CHECK_EQ(quoted, sp.seq);
  CHECK_EQ(inet_sum(&err[20], err.size() - 20), 0);
  CHECK_EQ(x.ctx->counters.get(k_active_icmp_translated), 1u);
  // Another connection's: left alone.
  SegmentSpec other = sp;
  other.dport = kClientPort + 1;
  std::vector<uint8_t> e2 = frag_needed(segment(other), kVip), e2_orig = e2;
  CHECK(x.am->on_packet(e2.data(), e2.size()) == NfQueue::Verdict::kAccept);
  CHECK(e2 == e2_orig);
}

void test_malformed_and_mutated_never_crash() {
  Fixture x;
  uint64_t rewritten_bad = 0;
  for (int i = 0; i < 20000; i++) {
    auto b = segment(i % 2 ? from_backup(*x.f, uint32_t(rnd() % 6000), uint32_t(rnd() % 1400))
                           : from_client(*x.f));
    int flips = 1 + int(rnd() % 4);
    for (int k = 0; k < flips; k++) b[rnd() % b.size()] ^= uint8_t(1u << (rnd() % 8));
    if (rnd() % 4 == 0) b.resize(rnd() % b.size());
    if (x.am->on_packet(b.data(), b.size()) == NfQueue::Verdict::kAcceptRewritten && !tcp_checksum_ok_ipv4(b.data()))
      rewritten_bad++;
    if (!x.ctx->flows.find(FlowKey{kClient, kClientPort, kPort})) {
      x = Fixture();  // a mutated SYN reopened the port: start over
    }
  }
  CHECK_EQ(rewritten_bad, 0u);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--seed") == 0) set_seed(argv[2]);
  print_seed("active_mode_test");
  run_test("active: replica -> client: seq, TSval, window rescaled; checksum valid", test_out_rewrites_seq_ts_window);
  run_test("active: client -> replica: ack, TSecr, SACK blocks (one dropped)", test_in_maps_ack_tsecr_and_sack);
  run_test("active: a client ack beyond the replica's snd_nxt is clamped", test_in_ack_beyond_replica_is_clamped);
  run_test("active: other flows and a new SYN pass untouched", test_unknown_flow_and_new_syn_pass_untouched);
  run_test("active: entering keeps the client's PAWS check happy", test_enter_keeps_paws);
  run_test("active: FIN both ways closes the flow", test_fin_then_fin_closes);
  run_test("active: mutated and truncated segments never crash or leave a bad checksum", test_malformed_and_mutated_never_crash);
  run_test("active: an ICMP error quoting a taken-over segment quotes the new owner's numbers", test_icmp_error_quotes_the_new_owners_numbers);
  return finish();
}
