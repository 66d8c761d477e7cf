// The UDP ledger (addon/udp_ledger.h) on its own: mirrored datagrams,
// manifest records and resupplied copies in every order a lossy mirror, a
// slow manifest or a takeover can bring them; what the replica is given, in
// which order, and what is asked of the recorder.
#include "check.h"

#include <string>
#include <vector>

#include "udp_ledger.h"

using namespace t2cp;

namespace {

const FlowKey kA{0x020012c6, 40000, 5060};  // 198.18.0.2:40000 -> :5060
const FlowKey kB{0x030012c6, 40001, 5060};

// A "datagram" here is one byte naming it; its digest is that byte.
struct Lab {
  std::string given;                   // the names, in the order the replica got them
  std::vector<uint64_t> asked;         // the record numbers asked of the recorder
  UdpLedgerTiming t;
  UdpLedger ledger;
  uint64_t now = 1000000;
  Lab()
      : ledger([this](const uint8_t* ip, size_t len) { given.append(reinterpret_cast<const char*>(ip), len); },
               [this](const FlowKey&, uint64_t index) { asked.push_back(index); }) {}
  void mirror(char name, const FlowKey& k = kA) { ledger.on_mirrored(k, uint64_t(name), p(name), 1, now); }
  void record(uint64_t index, char name, const FlowKey& k = kA) {
    ledger.on_manifest(now);
    ledger.on_record(k, index, uint64_t(name), now);
  }
  bool resupply(char name, const FlowKey& k = kA) { return ledger.on_resupplied(k, uint64_t(name), p(name), 1, now); }
  void pass(uint64_t us) {
    // The engine ticks every few ms; the ledger sees each tick.
    for (uint64_t end = now + us; now < end;) {
      now += std::min<uint64_t>(2000, end - now);
      ledger.on_manifest(now);  // the manifests keep coming
      ledger.on_tick(now);
    }
  }
  static const uint8_t* p(char name) {
    static uint8_t bytes[256];
    bytes[uint8_t(name)] = uint8_t(name);
    return &bytes[uint8_t(name)];
  }
};

void test_without_records_each_goes_at_once() {
  Lab l;
  l.mirror('a');
  l.mirror('b');
  CHECK_BYTES(l.given, "ab");
  l.pass(5000);
  CHECK(l.asked.empty());
}

void test_held_until_recorded_then_in_order() {
  Lab l;
  l.record(1, 'a');  // pairing on; the first record comes before its datagram
  CHECK_BYTES(l.given, "");
  l.mirror('a');
  CHECK_BYTES(l.given, "a");
  l.mirror('b');
  l.mirror('c');
  CHECK_BYTES(l.given, "a");  // held for their records
  l.record(2, 'b');
  l.record(3, 'c');
  CHECK_BYTES(l.given, "abc");
  CHECK_EQ(l.ledger.stats().verified, uint64_t(3));
  CHECK_EQ(l.ledger.held(), size_t(0));
}

void test_a_lost_datagram_is_asked_and_takes_its_place() {
  Lab l;
  l.record(1, 'a');
  l.mirror('a');
  l.mirror('c');  // b lost on the mirror
  l.record(2, 'b');
  l.record(3, 'c');
  CHECK_BYTES(l.given, "a");
  l.pass(l.t.settle_us - 2000);
  CHECK(l.asked.empty());  // not yet: the mirror may be late
  l.pass(4000);
  CHECK_EQ(l.asked.size(), size_t(1));
  if (!l.asked.empty()) CHECK_EQ(l.asked[0], uint64_t(2));
  CHECK(l.resupply('b'));
  CHECK_BYTES(l.given, "abc");  // b before c, as the primary got them
  CHECK_EQ(l.ledger.stats().resupplied, uint64_t(1));
  CHECK(!l.resupply('b'));  // a repeat answer is dropped
  CHECK_EQ(l.ledger.stats().duplicates, uint64_t(1));
  CHECK_BYTES(l.given, "abc");
}

void test_the_mirror_late_after_the_ask_wins_and_the_copy_is_dropped() {
  Lab l;
  l.record(1, 'a');
  l.pass(l.t.settle_us + 2000);
  CHECK_EQ(l.asked.size(), size_t(1));
  l.mirror('a');  // the mirror was only slow
  CHECK_BYTES(l.given, "a");
  CHECK(!l.resupply('a'));
  CHECK_BYTES(l.given, "a");
}

void test_asked_again_then_given_up() {
  Lab l;
  l.record(1, 'a');
  l.mirror('a');
  l.record(2, 'b');
  l.mirror('c');
  l.record(3, 'c');
  l.pass(l.t.settle_us + l.t.ask_repeat_us + 2000);
  CHECK_EQ(l.asked.size(), size_t(2));  // asked, then again
  CHECK_BYTES(l.given, "a");
  l.pass(l.t.give_up_us);
  CHECK_EQ(l.ledger.stats().lost, uint64_t(1));
  CHECK_BYTES(l.given, "ac");  // c no longer waits for b
}

void test_associations_do_not_wait_for_each_other() {
  Lab l;
  l.record(1, 'a', kA);
  l.record(2, 'x', kB);  // x lost on the mirror
  l.mirror('y', kB);
  l.record(3, 'y', kB);
  l.mirror('a', kA);
  CHECK_BYTES(l.given, "a");  // kB's y waits for x, kA's a does not
  l.pass(l.t.settle_us + 2000);
  CHECK(l.resupply('x', kB));
  CHECK_BYTES(l.given, "axy");
}

void test_identical_datagrams_count_one_each() {
  Lab l;
  l.record(1, 'a');
  l.mirror('a');
  l.mirror('a');  // the same bytes again (a retransmission)
  l.record(2, 'a');
  CHECK_BYTES(l.given, "aa");
  l.record(3, 'a');  // a third the mirror lost
  l.pass(l.t.settle_us + 2000);
  CHECK_EQ(l.asked.size(), size_t(1));
  CHECK(l.resupply('a'));
  CHECK_BYTES(l.given, "aaa");
}

void test_no_record_in_time_goes_unverified_and_its_late_record_asks_nothing() {
  Lab l;
  l.record(1, 'a');
  l.mirror('a');
  l.mirror('b');
  l.pass(l.t.unrecorded_hold_us + 2000);
  CHECK_BYTES(l.given, "ab");
  CHECK_EQ(l.ledger.stats().unverified, uint64_t(1));
  l.record(2, 'b');
  l.pass(l.t.settle_us + 2000);
  CHECK(l.asked.empty());
  CHECK_BYTES(l.given, "ab");
}

void test_a_takeover_releases_everything_held() {
  Lab l;
  l.record(1, 'a');
  l.mirror('a');
  l.record(2, 'b');  // lost on the mirror
  l.mirror('c');
  l.record(3, 'c');
  l.mirror('d');      // no record yet
  CHECK_BYTES(l.given, "a");
  l.ledger.release_all(l.now);
  CHECK_BYTES(l.given, "acd");  // no longer waiting for b
  l.record(4, 'd');   // its record after all: nothing to ask
  l.record(5, 'e');   // one the mirror never showed
  l.pass(l.t.settle_us + 2000);
  CHECK_EQ(l.asked.size(), size_t(2));  // b and e
  CHECK(l.resupply('e'));
  CHECK(l.resupply('b'));
  CHECK_BYTES(l.given, "acdeb");  // each as it came
}

void test_records_that_stop_coming_release_everything() {
  Lab l;
  l.record(1, 'a');
  l.mirror('b');
  l.mirror('c');
  CHECK_BYTES(l.given, "");
  // No manifest any more: ticks alone.
  for (int i = 0; i < 600; i++) {
    l.now += 2000;
    l.ledger.on_tick(l.now);
  }
  CHECK_BYTES(l.given, "bc");
  CHECK(!l.ledger.pairing(l.now));
  l.mirror('d');
  CHECK_BYTES(l.given, "bcd");
}

void test_the_transition_table() {
  using P = UdpRecordPhase;
  CHECK(udp_record_may_move(P::kAwaited, P::kHeld));
  CHECK(udp_record_may_move(P::kAwaited, P::kAsked));
  CHECK(udp_record_may_move(P::kAsked, P::kHeld));
  CHECK(udp_record_may_move(P::kAsked, P::kLost));
  CHECK(udp_record_may_move(P::kHeld, P::kGiven));
  CHECK(!udp_record_may_move(P::kAwaited, P::kLost));
  CHECK(!udp_record_may_move(P::kHeld, P::kAsked));
  CHECK(!udp_record_may_move(P::kLost, P::kHeld));
  CHECK(!udp_record_may_move(P::kGiven, P::kHeld));
}

void test_digest_names_payload_id_and_length() {
  uint8_t a[40] = {0x45, 0, 0, 40, 0x12, 0x34};
  uint8_t b[40] = {0x45, 0, 0, 40, 0x12, 0x35};
  Datagram da, db;
  da.ip = a; db.ip = b;
  da.payload = a + 28; db.payload = b + 28;
  da.payload_len = db.payload_len = 12;
  CHECK(udp_digest(da) != udp_digest(db));  // another identification
  b[5] = 0x34;
  CHECK_EQ(udp_digest(da), udp_digest(db));
  b[30] = 1;
  CHECK(udp_digest(da) != udp_digest(db));  // another byte
}

}  // namespace

int main() {
  run_test("without_records_each_goes_at_once", test_without_records_each_goes_at_once);
  run_test("held_until_recorded_then_in_order", test_held_until_recorded_then_in_order);
  run_test("a_lost_datagram_is_asked_and_takes_its_place", test_a_lost_datagram_is_asked_and_takes_its_place);
  run_test("the_mirror_late_after_the_ask_wins_and_the_copy_is_dropped",
           test_the_mirror_late_after_the_ask_wins_and_the_copy_is_dropped);
  run_test("asked_again_then_given_up", test_asked_again_then_given_up);
  run_test("associations_do_not_wait_for_each_other", test_associations_do_not_wait_for_each_other);
  run_test("identical_datagrams_count_one_each", test_identical_datagrams_count_one_each);
  run_test("no_record_in_time_goes_unverified_and_its_late_record_asks_nothing",
           test_no_record_in_time_goes_unverified_and_its_late_record_asks_nothing);
  run_test("a_takeover_releases_everything_held", test_a_takeover_releases_everything_held);
  run_test("records_that_stop_coming_release_everything", test_records_that_stop_coming_release_everything);
  run_test("the_transition_table", test_the_transition_table);
  run_test("digest_names_payload_id_and_length", test_digest_names_payload_id_and_length);
  return finish();
}
