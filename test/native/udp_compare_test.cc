// The UDP output comparison (addon/udp_compare.h): the replica's datagrams
// against the primary's, either side first, under strict and length.
#include "check.h"

#include <string>
#include <vector>

#include "udp_compare.h"

using namespace t2cp;

namespace {

const FlowKey kA{0x020012c6, 40000, 5060};
const FlowKey kB{0x030012c6, 40001, 5060};
constexpr CompareSide P = CompareSide::kPrimary, R = CompareSide::kReplica;
constexpr uint64_t kSettle = UdpOutputComparison::kSettleUs;

struct Lab {
  std::vector<std::pair<FlowKey, Divergence>> found;
  UdpOutputComparison c{[this](const FlowKey& k, const Divergence& d) { found.push_back({k, d}); }};
  uint64_t now = 1000000;
  DivergencePolicy policy = DivergencePolicy::kStrict;
  void send(CompareSide side, const std::string& s, const FlowKey& k = kA) {
    c.add(side, k, policy, reinterpret_cast<const uint8_t*>(s.data()), uint32_t(s.size()), now);
  }
  void pass(uint64_t us) {
    now += us;
    c.on_tick(now);
  }
  static std::string excerpt(const Divergence& d, CompareSide side) {
    return d.excerpt_held[int(side)] ? std::string(reinterpret_cast<const char*>(d.excerpt[int(side)]), d.excerpt_len[int(side)]) : "(none)";
  }
};

void test_alike_in_either_order() {
  Lab l;
  l.send(P, "200 OK a");
  l.send(R, "200 OK a");
  l.send(R, "200 OK b");  // the replica ahead
  l.send(P, "200 OK b");
  l.pass(kSettle + 1);
  CHECK(l.found.empty());
  CHECK_EQ(l.c.stats().compared, uint64_t(2));
}

void test_reordered_nearby_pairs_all_the_same() {
  Lab l;
  l.send(P, "one");
  l.send(P, "two");
  l.send(R, "two");
  l.send(R, "one");
  l.pass(kSettle + 1);
  CHECK(l.found.empty());
  CHECK_EQ(l.c.stats().compared, uint64_t(2));
}

void test_a_different_datagram_diverges_with_both_excerpts() {
  Lab l;
  l.send(P, "INVITE branch=z9hG4bK1111");
  l.send(R, "INVITE branch=z9hG4bK2222");
  l.pass(kSettle - 1);
  CHECK(l.found.empty());  // not before it settled: the other may come
  l.pass(2);
  CHECK_EQ(l.found.size(), size_t(1));
  if (l.found.empty()) return;
  const Divergence& d = l.found[0].second;
  CHECK_EQ(int(d.kind), int(DivergenceKind::kBytes));
  CHECK_EQ(d.offset, uint64_t(0));
  CHECK_EQ(d.within, uint32_t(21));  // the excerpts from the first byte that differs
  CHECK_BYTES(Lab::excerpt(d, P), "1111");
  CHECK_BYTES(Lab::excerpt(d, R), "2222");
  CHECK(l.c.diverged(kA));
  // No second report for the same association.
  l.send(P, "x");
  l.send(R, "y");
  l.pass(kSettle + 1);
  CHECK_EQ(l.found.size(), size_t(1));
}

void test_the_offset_is_the_datagram_number() {
  Lab l;
  for (int i = 0; i < 5; i++) {
    l.send(P, "same " + std::to_string(i));
    l.send(R, "same " + std::to_string(i));
  }
  l.send(P, "six");
  l.send(R, "6");
  l.pass(kSettle + 1);
  CHECK_EQ(l.found.size(), size_t(1));
  if (!l.found.empty()) {
    CHECK_EQ(l.found[0].second.offset, uint64_t(5));
    CHECK_EQ(int(l.found[0].second.kind), int(DivergenceKind::kLength));
  }
}

void test_the_replica_never_answering_diverges() {
  Lab l;
  l.send(P, "answer");
  l.pass(kSettle + 1);
  CHECK_EQ(l.found.size(), size_t(1));
  if (!l.found.empty()) {
    CHECK_EQ(int(l.found[0].second.kind), int(DivergenceKind::kLength));
    CHECK_BYTES(Lab::excerpt(l.found[0].second, R), "(none)");
  }
}

void test_the_primarys_lost_on_the_mirror_is_unverified() {
  Lab l;
  l.send(R, "answer the mirror did not show");
  l.send(P, "next");
  l.send(R, "next");
  l.pass(kSettle + 1);
  CHECK(l.found.empty());
  CHECK_EQ(l.c.stats().unverified, uint64_t(1));
  CHECK_EQ(l.c.stats().compared, uint64_t(1));
}

void test_an_unverified_replica_datagram_is_no_divergence_beside_a_young_primary_one() {
  // The replica's first datagram of an association the primary opened (a proxy's INVITE to the
  // callee) has no counterpart: the primary's went by before the association was followed.
  // Settled while a later datagram of the primary's waits for the lagging replica's: unverified.
  Lab l;
  l.send(R, "INVITE call 1");
  l.pass(kSettle - 1000);
  l.send(P, "INVITE call 100");
  l.pass(1001);
  CHECK(l.found.empty());
  CHECK_EQ(l.c.stats().unverified, uint64_t(1));
  l.send(R, "INVITE call 100");
  l.pass(kSettle + 1);
  CHECK(l.found.empty());
  CHECK_EQ(l.c.stats().compared, uint64_t(1));
}

void test_a_replica_answer_before_the_mirrors_primary_one_still_diverges_at_the_first() {
  // The replica's answer reached the comparison a few ms before the mirror showed the primary's,
  // and they differ: the first answer is the divergence, both excerpts kept.
  Lab l;
  l.send(R, "token AAAA");
  l.pass(15000);
  l.send(P, "token BBBB");
  for (int i = 0; i < 120; i++) l.pass(10000);  // a tick after the replica's settled, before the primary's
  CHECK_EQ(l.found.size(), size_t(1));
  if (l.found.empty()) return;
  CHECK_EQ(int(l.found[0].second.kind), int(DivergenceKind::kBytes));
  CHECK_EQ(l.found[0].second.offset, uint64_t(0));
  CHECK_BYTES(Lab::excerpt(l.found[0].second, P), "BBBB");
  CHECK_BYTES(Lab::excerpt(l.found[0].second, R), "AAAA");
  CHECK_EQ(l.c.stats().unverified, uint64_t(0));
}

void test_length_policy_ignores_bytes() {
  Lab l;
  l.policy = DivergencePolicy::kLength;
  l.send(P, "branch=1111");
  l.send(R, "branch=2222");
  l.send(P, "12345");
  l.send(R, "1234");
  l.pass(kSettle + 1);
  CHECK_EQ(l.found.size(), size_t(1));  // only the second, whose length differs
  if (!l.found.empty()) CHECK_EQ(l.found[0].second.offset, uint64_t(1));
}

void test_off_compares_nothing() {
  Lab l;
  l.policy = DivergencePolicy::kOff;
  l.send(P, "a");
  l.send(R, "b");
  l.pass(kSettle + 1);
  CHECK(l.found.empty());
  CHECK_EQ(l.c.stats().compared, uint64_t(0));
}

void test_associations_apart_and_forgotten() {
  Lab l;
  l.send(P, "a", kA);
  l.send(R, "a", kB);  // not the same association: no pair
  l.pass(kSettle + 1);
  CHECK_EQ(l.found.size(), size_t(1));  // kA's answer never came from the replica
  if (!l.found.empty()) CHECK(l.found[0].first == kA);
  CHECK(!l.c.diverged(kB));
  l.c.forget(kA);
  CHECK(!l.c.diverged(kA));
}

void test_too_much_unpaired_gives_up() {
  Lab l;
  for (size_t i = 0; i <= UdpOutputComparison::kMaxUnpaired; i++) l.send(P, "p" + std::to_string(i));
  CHECK_EQ(l.c.stats().gave_up, uint64_t(1));
  l.pass(kSettle + 1);
  CHECK(l.found.empty());
}

}  // namespace

// A copy behind (or ahead) fires a retransmission timer the other did not: under strict, its
// repeat of a datagram already paired is counted, not compared, and no divergence, even beside
// the other's next datagram; a new datagram that pairs with nothing still diverges.
void test_a_repeat_of_a_paired_datagram_is_no_divergence() {
  Lab l;
  l.send(P, "INVITE sip:bob branch=1");
  l.send(R, "INVITE sip:bob branch=1");
  l.send(R, "INVITE sip:bob branch=1");  // the replica's T1 fired: sent again
  l.pass(kSettle / 4);
  l.send(P, "ACK sip:bob branch=1");
  l.pass(kSettle - kSettle / 4);  // the repeat settled beside the primary's next, not the replica's yet
  CHECK(l.found.empty());
  l.send(R, "ACK sip:bob branch=1");
  l.pass(kSettle + 1);
  CHECK(l.found.empty());
  CHECK_EQ(l.c.stats().compared, uint64_t(2));
  CHECK_EQ(l.c.stats().repeats, uint64_t(1));
  l.send(P, "BYE branch=2");
  l.send(R, "INFO branch=3");
  l.pass(kSettle + 1);
  CHECK_EQ(l.found.size(), size_t(1));
  // Under length a digest is a length: a repeat cannot be told from another datagram.
  Lab m;
  m.policy = DivergencePolicy::kLength;
  m.send(P, "aaaa");
  m.send(R, "aaaa");
  m.send(R, "aaaa");
  m.pass(kSettle + 1);
  CHECK_EQ(m.c.stats().repeats, uint64_t(0));
}

// A primary's datagram the replica has not answered while its service has
// input still unread (paused, starved of CPU): late, not diverged; its answer
// pairs when it comes. Up to kLateUs: then the replica is out of step.
void test_a_replica_behind_on_its_input_is_late_not_diverged() {
  Lab l;
  bool unread = true;
  auto tick = [&](uint64_t us) {
    l.now += us;
    l.c.on_tick(l.now, [&](uint16_t port) { return port == kA.server_port && unread; });
  };
  l.send(P, "200 OK a");
  tick(kSettle + 1);
  tick(kSettle);
  CHECK(l.found.empty());
  CHECK_EQ(l.c.stats().late, uint64_t(1));  // counted once
  unread = false;
  l.send(R, "200 OK a");  // it read and answered
  tick(kSettle);
  CHECK(l.found.empty());
  CHECK_EQ(l.c.stats().compared, uint64_t(1));
  // Behind for longer than kLateUs: diverged all the same.
  unread = true;
  l.send(P, "200 OK b");
  for (uint64_t t = kSettle; t < UdpOutputComparison::kLateUs; t += kSettle) tick(kSettle);
  CHECK(l.found.empty());
  tick(kSettle);
  CHECK_EQ(l.found.size(), size_t(1));
  // Nothing unread: the replica answered everything it got, not this: diverged at kSettle.
  Lab m;
  m.send(P, "200 OK c", kB);
  m.now += kSettle + 1;
  m.c.on_tick(m.now, [](uint16_t) { return false; });
  CHECK_EQ(m.found.size(), size_t(1));
}

// A SIP message whose SDP names the relay's ports on the VIP (198.18.1.10), as rtpengine writes them.
std::string invite(int port, const std::string& c = "198.18.1.10", const std::string& tail = "") {
  const std::string sdp = "v=0\r\no=caller 1 1 IN IP4 198.18.0.2\r\ns=-\r\nc=IN IP4 " + c + "\r\nt=0 0\r\nm=audio " +
                          std::to_string(port) + " RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp:" + std::to_string(port + 1) +
                          "\r\n" + tail;
  return "INVITE sip:bob@198.18.0.3:5070 SIP/2.0\r\nCall-ID: 1-1@198.18.0.2\r\nContent-Type: application/sdp\r\nContent-Length: " +
         std::to_string(sdp.size()) + "\r\n\r\n" + sdp;
}

struct RelayLab : Lab {
  RelayPorts relay;
  std::vector<std::pair<uint16_t, uint16_t>> pairs;
  RelayLab() {
    std::vector<uint16_t> ports;
    for (int p = 9990; p <= 10099; p++) ports.push_back(uint16_t(p));
    relay.configure(ports);
    c.compare_relay_ports(&relay, "198.18.1.10", [this](uint16_t p, uint16_t r) {
      pairs.push_back({p, r});
      relay.pair(p, r, 0);
    });
  }
};

// What a takeover says of calls whose media has not started: the streams paired in the last
// window, on two different ports, whose RTP and RTCP no association uses.
void test_recent_pairs_without_media_are_counted() {
  RelayPorts relay;
  std::vector<uint16_t> ports;
  for (uint16_t p = 30000; p < 30020; p++) ports.push_back(p);
  relay.configure(ports);
  constexpr uint64_t kWindow = 180000000, kNow = 1000000000;
  auto stream = [&](uint16_t primary, uint16_t replica, uint64_t at) {  // RTP, and RTCP the next port
    relay.pair(primary, replica, at);
    relay.pair(primary + 1, replica + 1, at);
  };
  stream(30000, 30004, kNow - 1000);          // a call whose media flows
  stream(30002, 30006, kNow - 2000);          // a call ringing
  stream(30008, 30008, kNow - 3000);          // the same ports on both: nothing to translate
  stream(30010, 30012, kNow - kWindow - 1);   // paired long ago, no media: over, not ringing
  stream(30014, 30016, kNow - 4000);          // only its RTCP seen
  std::bitset<65536> associated;
  associated.set(30000);
  associated.set(30015);
  CHECK_EQ(relay.recent_pairs_without_media(associated, kNow, kWindow), size_t(1));
  // Its SDP seen again (a re-INVITE): recent again.
  stream(30010, 30012, kNow);
  CHECK_EQ(relay.recent_pairs_without_media(associated, kNow, kWindow), size_t(2));
  CHECK_EQ(relay.recent_pairs_without_media(associated, kNow + kWindow, kWindow), size_t(0));
}

void test_relay_ports_named_in_sdp_pair_and_leave_the_digest() {
  RelayLab l;
  // The two relays chose other ports, of another number of digits too (Content-Length differs).
  l.send(P, invite(10018));
  l.send(R, invite(9996));
  l.pass(kSettle + 1);
  CHECK(l.found.empty());
  CHECK_EQ(l.c.stats().compared, uint64_t(1));
  CHECK_EQ(l.pairs.size(), size_t(2));  // RTP, and RTCP from a=rtcp
  CHECK_EQ(l.relay.replica_of(10018), uint16_t(9996));
  CHECK_EQ(l.relay.replica_of(10019), uint16_t(9997));
  CHECK_EQ(l.relay.primary_of(9996), uint16_t(10018));
  // The relay gave the primary's port to a later call: the earlier pair is over.
  l.send(P, invite(10018));
  l.send(R, invite(10040));
  CHECK_EQ(l.relay.replica_of(10018), uint16_t(10040));
  CHECK_EQ(l.relay.primary_of(9996), uint16_t(0));
  CHECK_EQ(l.relay.pairs(), size_t(2));  // 10018/10040 and 10019/10041: the old pairs replaced
}

void test_only_relay_ports_on_the_vip_leave_the_digest() {
  RelayLab l;
  // Elsewhere in the SDP, a difference is one.
  l.send(P, invite(10018, "198.18.1.10", "a=sendrecv\r\n"));
  l.send(R, invite(10020, "198.18.1.10", "a=recvonly\r\n"));
  l.pass(kSettle + 1);
  CHECK_EQ(l.found.size(), size_t(1));
  CHECK(l.pairs.empty());
  // A port on another address (a phone's own, in the relay's range by chance) is compared.
  RelayLab m;
  m.send(P, invite(10018, "198.18.0.2"));
  m.send(R, invite(10020, "198.18.0.2"));
  m.pass(kSettle + 1);
  CHECK_EQ(m.found.size(), size_t(1));
  CHECK(m.pairs.empty());
  CHECK_EQ(m.relay.replica_of(10018), uint16_t(0));
}

// At a takeover: the replica's datagrams no primary one paired, oldest first, a repeat aside;
// then nothing is left to decide.
void test_the_unanswered_go_to_the_takeover_oldest_first() {
  Lab l;
  l.send(P, "200 OK a");
  l.send(R, "200 OK a");   // paired: the primary sent it
  l.now += 10;
  l.send(R, "200 OK b", kB);
  l.now += 10;
  l.send(R, "200 OK a");   // a repeat of a pair
  l.send(R, "200 OK c");
  std::vector<std::string> given;
  l.c.take_unanswered([&](const FlowKey&, const uint8_t* p, uint32_t len, bool whole) {
    CHECK(whole);
    given.emplace_back(reinterpret_cast<const char*>(p), len);
  });
  CHECK((given == std::vector<std::string>{"200 OK b", "200 OK c"}));
  l.pass(kSettle + 1);
  CHECK(l.found.empty());
  CHECK_EQ(l.c.stats().unverified, uint64_t(0));
}

int main() {
  run_test("the_unanswered_go_to_the_takeover_oldest_first", test_the_unanswered_go_to_the_takeover_oldest_first);
  run_test("relay_ports_named_in_sdp_pair_and_leave_the_digest", test_relay_ports_named_in_sdp_pair_and_leave_the_digest);
  run_test("recent_pairs_without_media_are_counted", test_recent_pairs_without_media_are_counted);
  run_test("only_relay_ports_on_the_vip_leave_the_digest", test_only_relay_ports_on_the_vip_leave_the_digest);
  run_test("a_replica_behind_on_its_input_is_late_not_diverged", test_a_replica_behind_on_its_input_is_late_not_diverged);
  run_test("alike_in_either_order", test_alike_in_either_order);
  run_test("a_repeat_of_a_paired_datagram_is_no_divergence", test_a_repeat_of_a_paired_datagram_is_no_divergence);
  run_test("reordered_nearby_pairs_all_the_same", test_reordered_nearby_pairs_all_the_same);
  run_test("a_different_datagram_diverges_with_both_excerpts", test_a_different_datagram_diverges_with_both_excerpts);
  run_test("the_offset_is_the_datagram_number", test_the_offset_is_the_datagram_number);
  run_test("the_replica_never_answering_diverges", test_the_replica_never_answering_diverges);
  run_test("the_primarys_lost_on_the_mirror_is_unverified", test_the_primarys_lost_on_the_mirror_is_unverified);
  run_test("an_unverified_replica_datagram_is_no_divergence_beside_a_young_primary_one",
           test_an_unverified_replica_datagram_is_no_divergence_beside_a_young_primary_one);
  run_test("a_replica_answer_before_the_mirrors_primary_one_still_diverges_at_the_first",
           test_a_replica_answer_before_the_mirrors_primary_one_still_diverges_at_the_first);
  run_test("length_policy_ignores_bytes", test_length_policy_ignores_bytes);
  run_test("off_compares_nothing", test_off_compares_nothing);
  run_test("associations_apart_and_forgotten", test_associations_apart_and_forgotten);
  run_test("too_much_unpaired_gives_up", test_too_much_unpaired_gives_up);
  return finish();
}
