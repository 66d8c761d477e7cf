// Fast tier of the output comparison (output_compare.h): the primary's and
// the replica's streams fed as segments would arrive (mirror and output
// queue), in every order the two paths allow: one side far ahead, the lead
// changing hands, retransmissions, segments larger than a block (GSO),
// holes, copies cut short, sequence numbers that wrap.
#include "check.h"

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "output_compare.h"

using namespace t2cp;
using R = OutputComparison::Result;


namespace {

constexpr CompareSide P = CompareSide::kPrimary;
constexpr CompareSide B = CompareSide::kReplica;

// A side's stream and its sequence numbers (offset 0 at seq0).
struct Stream {
  uint32_t seq0;
  std::string bytes;
  R send(OutputComparison& c, CompareSide side, size_t from, size_t n) const {
    n = std::min(n, bytes.size() - from);
    return c.add(side, seq0 + uint32_t(from), reinterpret_cast<const uint8_t*>(bytes.data()) + from, uint32_t(n),
                 uint32_t(n));
  }
};

std::string pattern(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& ch : s) ch = char('a' + rng() % 26);
  return s;
}

OutputComparison started(uint32_t p0, uint32_t b0) {
  OutputComparison c;
  c.start(P, p0);
  c.start(B, b0);
  return c;
}

std::string excerpt(const OutputComparison& c, CompareSide side) {
  const Divergence& d = c.divergence();
  int i = static_cast<int>(side);
  return std::string(reinterpret_cast<const char*>(d.excerpt[i]), d.excerpt_len[i]);
}

void test_crc32c_known_value() {
  // The check value of CRC-32C (RFC 3720 B.4): "123456789" -> 0xe3069283.
  const char* v = "123456789";
  CHECK_EQ(crc32c(0, reinterpret_cast<const uint8_t*>(v), 9), 0xe3069283u);
  // Fed in pieces, the same.
  uint32_t c = crc32c(0, reinterpret_cast<const uint8_t*>(v), 4);
  CHECK_EQ(crc32c(c, reinterpret_cast<const uint8_t*>(v) + 4, 5), 0xe3069283u);
}

void test_identical_streams_in_any_segmentation() {
  const std::string data = pattern(200000, 1);
  std::mt19937 rng(7);
  for (int trial = 0; trial < 50; trial++) {
    // The replica's numbers wrap within the stream; the primary's do not.
    Stream p{uint32_t(rng()), data}, b{0xffffffffu - 5000, data};
    OutputComparison c = started(p.seq0, b.seq0);
    size_t pi = 0, bi = 0;
    R r = R::kOk;
    while ((pi < data.size() || bi < data.size()) && r == R::kOk) {
      // Either side moves next, by a segment of 1 byte to 64 KiB (GSO).
      bool primary = bi >= data.size() || (pi < data.size() && rng() % 2);
      size_t n = rng() % 4 == 0 ? 1 + rng() % 65536 : 1 + rng() % 1500;
      if (primary) { r = p.send(c, P, pi, n); pi = std::min(data.size(), pi + n); }
      else { r = b.send(c, B, bi, n); bi = std::min(data.size(), bi + n); }
      // Now and then a retransmission of something already sent.
      if (r == R::kOk && pi > 3000 && rng() % 10 == 0) r = p.send(c, P, pi - 3000, 2000);
    }
    CHECK(r == R::kOk);
    CHECK_EQ(c.fin(P, p.seq0 + uint32_t(data.size())), R::kOk);
    CHECK_EQ(c.fin(B, b.seq0 + uint32_t(data.size())), R::kOk);
    CHECK_EQ(c.compared_bytes(), uint64_t(data.size()));
    CHECK_EQ(c.unverified_bytes(), uint64_t(0));
  }
}

void test_any_flipped_byte_is_found() {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; trial++) {
    const size_t size = 1 + rng() % 20000, at = rng() % size;
    std::string same = pattern(size, trial), other = same;
    other[at] ^= char(1 + rng() % 255);
    const bool flip_primary = rng() % 2;
    Stream p{uint32_t(rng()), flip_primary ? other : same}, b{uint32_t(rng()), flip_primary ? same : other};
    OutputComparison c = started(p.seq0, b.seq0);
    size_t pi = 0, bi = 0;
    R r = R::kOk;
    while ((pi < size || bi < size) && r == R::kOk) {
      bool primary = bi >= size || (pi < size && rng() % 2);
      size_t n = 1 + rng() % 3000;
      if (primary) { r = p.send(c, P, pi, n); pi = std::min(size, pi + n); }
      else { r = b.send(c, B, bi, n); bi = std::min(size, bi + n); }
    }
    if (r == R::kOk) r = c.fin(P, p.seq0 + uint32_t(size));
    if (r == R::kOk) r = c.fin(B, b.seq0 + uint32_t(size));
    NOTE("trial %d size %zu at %zu", trial, size, at);
    CHECK_EQ(r, R::kDiffers);
    const Divergence& d = c.divergence();
    CHECK_EQ(d.kind, DivergenceKind::kBytes);
    CHECK(d.offset <= at && d.offset >= at / kCompareBlockBytes * kCompareBlockBytes);
    if (d.exact) CHECK_EQ(d.offset, uint64_t(at));
  }
}

void test_a_token_in_a_short_answer_differs_at_once() {
  // A session token, far shorter than a block: compared as soon as both sent it.
  Stream p{100, "HELLO token=4f2a9c\r\n"}, b{900, "HELLO token=77e01b\r\n"};
  OutputComparison c = started(p.seq0, b.seq0);
  CHECK_EQ(p.send(c, P, 0, 100), R::kOk);
  CHECK_EQ(b.send(c, B, 0, 100), R::kDiffers);
  const Divergence& d = c.divergence();
  CHECK_EQ(d.kind, DivergenceKind::kBytes);
  CHECK(d.exact);
  CHECK_EQ(d.offset, uint64_t(12));
  CHECK_BYTES(excerpt(c, P), "4f2a9c\r\n");
  CHECK_BYTES(excerpt(c, B), "77e01b\r\n");
}

void test_the_replica_ahead_is_compared_too() {
  // The replica's output reaches the queue before the mirror shows the primary's.
  std::string same = pattern(5000, 2), other = same;
  other[4321] ^= 1;
  Stream p{7, same}, b{70000, other};
  OutputComparison c = started(p.seq0, b.seq0);
  CHECK_EQ(b.send(c, B, 0, 5000), R::kOk);
  CHECK_EQ(p.send(c, P, 0, 3000), R::kOk);
  CHECK_EQ(p.send(c, P, 3000, 2000), R::kDiffers);
  CHECK_EQ(c.divergence().offset, uint64_t(4321));
  CHECK(c.divergence().exact);
}

void test_far_behind_the_range_is_given_not_the_byte() {
  // The primary is 100 KB ahead: its history no longer holds the block that
  // differs. The block is still known, and the replica's bytes are shown.
  std::string same = pattern(100000, 3), other = same;
  other[2500] = '#';
  Stream p{1, same}, b{2, other};
  OutputComparison c = started(p.seq0, b.seq0);
  CHECK_EQ(p.send(c, P, 0, 100000), R::kOk);
  CHECK_EQ(c.checkpoints(), size_t(100000 / kCompareBlockBytes + 1));
  CHECK_EQ(b.send(c, B, 0, 1448), R::kOk);
  CHECK_EQ(b.send(c, B, 1448, 1448), R::kOk);  // its block is not complete yet
  CHECK_EQ(b.send(c, B, 2896, 1448), R::kDiffers);
  const Divergence& d = c.divergence();
  CHECK(!d.exact);
  CHECK_EQ(d.offset, uint64_t(2048));  // the block holding it
  CHECK(!d.excerpt_held[0]);
  CHECK(d.excerpt_held[1]);
  CHECK_BYTES(excerpt(c, B), other.substr(2048, kExcerptBytes));
}

void test_different_length() {
  {
    // The replica's answer is longer: it sent beyond the primary's FIN.
    Stream p{10, "OK\r\n"}, b{20, "OK, and more\r\n"};
    OutputComparison c = started(p.seq0, b.seq0);
    c.set_policy(DivergencePolicy::kLength);
    CHECK_EQ(p.send(c, P, 0, 4), R::kOk);
    CHECK_EQ(c.fin(P, p.seq0 + 4), R::kOk);
    CHECK_EQ(b.send(c, B, 0, 100), R::kDiffers);
    CHECK_EQ(c.divergence().kind, DivergenceKind::kLength);
    CHECK_EQ(c.divergence().offset, uint64_t(4));
  }
  {
    // Both ended, at different offsets; under kLength the bytes do not matter.
    Stream p{10, "Date: Sat 10:00:00\r\n"}, b{20, "Date: Sat 10:00:01\r\n"};
    OutputComparison c = started(p.seq0, b.seq0);
    c.set_policy(DivergencePolicy::kLength);
    CHECK_EQ(p.send(c, P, 0, 100), R::kOk);
    CHECK_EQ(b.send(c, B, 0, 100), R::kOk);
    CHECK_EQ(c.fin(B, b.seq0 + 20), R::kOk);
    CHECK_EQ(c.fin(P, p.seq0 + 20), R::kOk);
    OutputComparison d = started(p.seq0, b.seq0);
    d.set_policy(DivergencePolicy::kLength);
    CHECK_EQ(p.send(d, P, 0, 100), R::kOk);
    CHECK_EQ(d.fin(P, p.seq0 + 20), R::kOk);
    CHECK_EQ(b.send(d, B, 0, 18), R::kOk);
    CHECK_EQ(d.fin(B, b.seq0 + 18), R::kDiffers);
    CHECK_EQ(d.divergence().offset, uint64_t(18));
  }
}

void test_a_difference_short_of_the_leaders_segment_end() {
  // A login: the server's challenge (a random nonce at 60), then, once the
  // client answered, the primary's welcome; the replica refuses the answer
  // (made for the primary's nonce) and ends with a shorter error. The
  // primary's checkpoint at the challenge's end is merged into the
  // welcome's, which the replica never reaches: its challenge is compared
  // from the histories as soon as it is sent.
  std::string challenge = pattern(93, 11), other = challenge;
  other[60] = char(other[60] ^ 0x20);
  Stream p{100, challenge + pattern(400, 12)}, b{200, other + "FATAL: invalid response"};
  OutputComparison c = started(p.seq0, b.seq0);
  CHECK_EQ(p.send(c, P, 0, 24), R::kOk);
  CHECK_EQ(p.send(c, P, 24, 69), R::kOk);
  CHECK_EQ(p.send(c, P, 93, 400), R::kOk);
  CHECK_EQ(b.send(c, B, 0, 24), R::kOk);
  CHECK_EQ(b.send(c, B, 24, 69), R::kDiffers);
  CHECK_EQ(c.divergence().kind, DivergenceKind::kBytes);
  CHECK_EQ(c.divergence().offset, uint64_t(60));
  CHECK(c.divergence().exact);
  // The same, the replica first: the primary's challenge is the one compared.
  OutputComparison d = started(p.seq0, b.seq0);
  CHECK_EQ(b.send(d, B, 0, 24), R::kOk);
  CHECK_EQ(b.send(d, B, 24, 69), R::kOk);
  CHECK_EQ(b.send(d, B, 93, 100), R::kOk);
  CHECK_EQ(d.fin(B, b.seq0 + uint32_t(b.bytes.size())), R::kOk);
  CHECK_EQ(p.send(d, P, 0, 93), R::kDiffers);
  CHECK_EQ(d.divergence().kind, DivergenceKind::kBytes);
  CHECK_EQ(d.divergence().offset, uint64_t(60));
}

void test_a_length_difference_reports_an_earlier_byte() {
  // The primary a whole block ahead (its checkpoint a block end); the
  // replica ends early, its bytes already different: the report gives the
  // first different byte, not where the replica ended.
  std::string data = pattern(1500, 13), other = data.substr(0, 227);
  other[100] = char(other[100] ^ 1);
  Stream p{5, data}, b{6, other};
  OutputComparison c = started(p.seq0, b.seq0);
  CHECK_EQ(p.send(c, P, 0, 1500), R::kOk);
  CHECK_EQ(b.send(c, B, 0, 227), R::kOk);
  CHECK_EQ(c.fin(B, b.seq0 + 227), R::kDiffers);
  CHECK_EQ(c.divergence().kind, DivergenceKind::kBytes);
  CHECK_EQ(c.divergence().offset, uint64_t(100));
  // Under kLength the bytes are not looked at: where it ended.
  OutputComparison d = started(p.seq0, b.seq0);
  d.set_policy(DivergencePolicy::kLength);
  CHECK_EQ(p.send(d, P, 0, 1500), R::kOk);
  CHECK_EQ(b.send(d, B, 0, 227), R::kOk);
  CHECK_EQ(d.fin(B, b.seq0 + 227), R::kDiffers);
  CHECK_EQ(d.divergence().kind, DivergenceKind::kLength);
  CHECK_EQ(d.divergence().offset, uint64_t(227));
}

void test_a_hole_is_not_compared_and_not_a_divergence() {
  // The mirror lost a segment of the primary's: that block cannot be told,
  // the next ones are compared again.
  std::string data = pattern(8192, 4);
  Stream p{1, data}, b{2, data};
  OutputComparison c = started(p.seq0, b.seq0);
  CHECK_EQ(p.send(c, P, 0, 1000), R::kOk);
  CHECK_EQ(p.send(c, P, 1500, 8192), R::kOk);  // 1000..1500 never arrived
  CHECK_EQ(b.send(c, B, 0, 8192), R::kOk);
  CHECK_EQ(c.unverified_bytes(), uint64_t(500));
  CHECK_EQ(c.compared_bytes(), uint64_t(8192 - 2 * 1024));  // all but the two blocks the hole touches
  // A copy cut short (the queue's copy range) is a hole too.
  OutputComparison d = started(p.seq0, b.seq0);
  CHECK_EQ(p.send(d, P, 0, 8192), R::kOk);
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(data.data());
  CHECK_EQ(d.add(B, b.seq0, bytes, 8192, 3000), R::kOk);
  CHECK_EQ(d.unverified_bytes(), uint64_t(8192 - 3000));
}

void test_a_difference_after_a_hole_is_found() {
  std::string same = pattern(6000, 5), other = same;
  other[5000] = '!';
  Stream p{1, same}, b{2, other};
  OutputComparison c = started(p.seq0, b.seq0);
  CHECK_EQ(p.send(c, P, 0, 100), R::kOk);
  CHECK_EQ(p.send(c, P, 200, 6000), R::kOk);
  CHECK_EQ(b.send(c, B, 0, 6000), R::kDiffers);
  CHECK_EQ(c.divergence().offset, uint64_t(5000));
}

void test_a_lead_beyond_the_checkpoints_gives_up() {
  OutputComparison c = started(1, 2);
  std::string block(kCompareBlockBytes, 'x');
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(block.data());
  R r = R::kOk;
  for (size_t i = 0; i <= kMaxCheckpoints && r == R::kOk; i++)
    r = c.add(P, 1 + uint32_t(i * kCompareBlockBytes), bytes, kCompareBlockBytes, kCompareBlockBytes);
  CHECK_EQ(r, R::kGaveUp);
  CHECK(c.gave_up());
  CHECK_EQ(c.checkpoints(), size_t(0));
  CHECK_EQ(c.add(B, 2, bytes, kCompareBlockBytes, kCompareBlockBytes), R::kOk);  // no longer compared
}

void test_sides_not_started_are_ignored() {
  OutputComparison c;
  c.start(P, 1);
  const uint8_t x[4] = {1, 2, 3, 4};
  CHECK_EQ(c.add(B, 99, x, 4, 4), R::kOk);  // the replica's SYN-ACK not seen yet
  CHECK_EQ(c.add(P, 1, x, 4, 4), R::kOk);
  c.start(B, 50);
  CHECK_EQ(c.add(B, 50, x, 4, 4), R::kOk);
  CHECK_EQ(c.compared_bytes(), uint64_t(4));
}

}  // namespace

int main() {
  run_test("crc32c_known_value", test_crc32c_known_value);
  run_test("identical_streams_in_any_segmentation", test_identical_streams_in_any_segmentation);
  run_test("any_flipped_byte_is_found", test_any_flipped_byte_is_found);
  run_test("a_token_in_a_short_answer_differs_at_once", test_a_token_in_a_short_answer_differs_at_once);
  run_test("the_replica_ahead_is_compared_too", test_the_replica_ahead_is_compared_too);
  run_test("far_behind_the_range_is_given_not_the_byte", test_far_behind_the_range_is_given_not_the_byte);
  run_test("different_length", test_different_length);
  run_test("a_difference_short_of_the_leaders_segment_end", test_a_difference_short_of_the_leaders_segment_end);
  run_test("a_length_difference_reports_an_earlier_byte", test_a_length_difference_reports_an_earlier_byte);
  run_test("a_hole_is_not_compared_and_not_a_divergence", test_a_hole_is_not_compared_and_not_a_divergence);
  run_test("a_difference_after_a_hole_is_found", test_a_difference_after_a_hole_is_found);
  run_test("a_lead_beyond_the_checkpoints_gives_up", test_a_lead_beyond_the_checkpoints_gives_up);
  run_test("sides_not_started_are_ignored", test_sides_not_started_are_ignored);
  return finish();
}
