// Fast tier of the replication state machine: the incoming and outgoing
// processors on crafted segments, no root and no network. Mirror frames go in
// as the capture would hand them, the replica's packets as the output queue
// would, and what the processors inject to the replica is read back from the
// other end of a socketpair standing in for the TUN device.
//
// A connection per test (Lab::cport picks among several): client
// 198.18.0.2:40000 and up to the VIP's port 7000,
// no TCP options beyond MSS (no window scaling, no timestamps), so windows and
// numbers read as they are.
#include "check.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "active_mode_common.h"
#include "incoming_processor.h"
#include "incoming_timing.h"
#include "outgoing_processor.h"

using namespace t2cp;
using t2cp_test::kClient;
using t2cp_test::kClientPort;
using t2cp_test::kPort;
using t2cp_test::kVip;


namespace {

constexpr uint32_t kC0 = 1000;        // client ISN
constexpr uint32_t kP0 = 500000;      // primary ISN
constexpr uint32_t kB0 = 0xfffffff0;  // replica ISN: its numbers wrap at once
constexpr uint16_t kWindow = 8192;

// A whole IPv4 packet, up to 64 KiB (build_segment computes the checksums).
std::vector<uint8_t> packet(const SegmentSpec& sp) {
  std::vector<uint8_t> b(65536);
  b.resize(build_segment(sp, b.data(), b.size()));
  if (b.empty()) std::abort();
  return b;
}

// The Ethernet frame the mirror port would give for an IPv4 packet.
std::vector<uint8_t> ethernet(const std::vector<uint8_t>& ip) {
  std::vector<uint8_t> frame(14, 0);
  frame[12] = 0x08;  // EtherType IPv4
  frame.insert(frame.end(), ip.begin(), ip.end());
  return frame;
}

// An injected segment, parsed, with its payload copied out.
struct Injected {
  uint8_t flags = 0;
  uint32_t seq = 0, ack = 0;
  uint16_t window = 0;
  std::string payload;
};

struct Lab {
  EngineConfig cfg;
  std::unique_ptr<EngineContext> ctx;
  std::unique_ptr<IncomingProcessor> in;
  std::unique_ptr<ActiveMode> am;
  std::unique_ptr<OutgoingProcessor> out;
  int peer = -1;  // reads what went "into the TUN"
  uint16_t cport = kClientPort;  // the connection the next segments belong to

  explicit Lab(uint64_t memory_limit = 1ull << 30, uint32_t max_lag_ms = 0, bool resupply = false,
               DivergencePolicy divergence = DivergencePolicy::kOff, std::vector<uint16_t> udp_ports = {},
               std::vector<uint16_t> relay_ports = {}) {
    cfg.vip = kVip;
    cfg.ports = {kPort};
    cfg.udp_ports = std::move(udp_ports);
    cfg.relay_ports = std::move(relay_ports);
    cfg.divergence = {divergence};
    cfg.udp_divergence.assign(cfg.udp_ports.size(), divergence);
    cfg.memory_limit = memory_limit;
    cfg.max_lag_ms = max_lag_ms;
    cfg.resupply = resupply;
    ctx = std::make_unique<EngineContext>(cfg);
    in = std::make_unique<IncomingProcessor>(*ctx);
    am = std::make_unique<ActiveMode>(*ctx);
    out = std::make_unique<OutgoingProcessor>(*ctx, *in, *am);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sv) != 0) std::abort();
    ctx->tun.adopt(sv[0]);
    peer = sv[1];
  }
  ~Lab() { ::close(peer); }

  Flow* flow() { return ctx->flows.find(FlowKey{kClient, cport, kPort}); }

  // What the engine does after each batch: pump every flow marked dirty.
  void settle() { ctx->drain_dirty([&](Flow& f) { in->pump(f); }); }

  SegmentSpec spec(bool from_client, uint32_t seq, uint32_t ack, uint8_t flags, const std::string& data,
                          uint16_t window) {
    SegmentSpec sp;
    sp.saddr = from_client ? kClient : kVip;
    sp.daddr = from_client ? kVip : kClient;
    sp.sport = from_client ? cport : kPort;
    sp.dport = from_client ? kPort : cport;
    sp.seq = seq;
    sp.ack = ack;
    sp.flags = flags;
    sp.window = window;
    sp.payload = reinterpret_cast<const uint8_t*>(data.data());
    sp.payload_len = static_cast<uint32_t>(data.size());
    static const uint8_t kMss[4] = {2, 4, 0x05, 0xb4};  // a SYN's only option
    if (flags & kSyn) { sp.raw_options = kMss; sp.raw_options_len = 4; }
    return sp;
  }

  // capture_ns: the frame's capture time (0: the capture gave none).
  void mirror(SegmentSpec sp, uint64_t capture_ns = 0) {
    const std::vector<uint8_t> frame = ethernet(packet(sp));
    in->on_mirror_frame(frame.data(), frame.size(), capture_ns);
    settle();
  }
  void client(uint32_t seq, uint32_t ack, uint8_t flags, const std::string& data = "", uint16_t window = kWindow) {
    mirror(spec(true, seq, ack, flags, data, window));
  }
  void primary(uint32_t seq, uint32_t ack, uint8_t flags, const std::string& data = "", uint64_t capture_ns = 0) {
    mirror(spec(false, seq, ack, flags, data, kWindow), capture_ns);
  }
  // A packet of the replica's, as the output queue hands it over.
  void replica(uint32_t seq, uint32_t ack, uint8_t flags, const std::string& data = "", uint16_t window = kWindow) {
    SegmentSpec sp = spec(false, seq, ack, flags, data, window);
    std::vector<uint8_t> ip = packet(sp);
    out->on_packet(ip.data(), ip.size());
    settle();
  }

  // Everything injected since the last call.
  std::vector<Injected> injected() {
    std::vector<Injected> v;
    uint8_t buf[65536];
    for (;;) {
      ssize_t n = recv(peer, buf, sizeof buf, 0);
      if (n <= 0) break;
      Segment s;
      if (parse_ipv4(buf, size_t(n), false, &s) != ParseError::kOk) std::abort();
      Injected x;
      x.flags = s.flags;
      x.seq = s.seq;
      x.ack = s.ack;
      x.window = s.window;
      x.payload.assign(reinterpret_cast<const char*>(s.payload), s.payload_len);
      v.push_back(x);
    }
    return v;
  }
  std::string injected_data() {
    std::string d;
    for (const Injected& x : injected()) d += x.payload;
    return d;
  }

  // Handshake on both sides; the client's third ACK reaches the replica.
  // Ticks as the engine runs them: then whatever they marked is pumped.
  void tick(uint64_t now) {
    in->on_tick(now);
    settle();
  }

  void connect() {
    client(kC0, 0, kSyn);
    primary(kP0, kC0 + 1, kSyn | kAck);
    replica(kB0, kC0 + 1, kSyn | kAck);
    client(kC0 + 1, kP0 + 1, kAck);
    injected();
  }

  // A connection of one request and its answer that the client closes first:
  // every FIN seen, the replica's too, but the client's last ACK (past the
  // primary's FIN) escaped the capture.
  void closed_but_the_last_ack() {
    connect();
    client(kC0 + 1, kP0 + 1, kAck | kPsh, "Q");
    replica(kB0 + 1, kC0 + 2, kAck | kPsh, "R");
    primary(kP0 + 1, kC0 + 2, kAck | kPsh, "R");
    client(kC0 + 2, kP0 + 2, kAck | kFin);
    primary(kP0 + 2, kC0 + 3, kAck | kFin);
    replica(kB0 + 2, kC0 + 3, kAck | kFin);
    injected();
  }
};

// Client bytes sent after the client received an answer wait for the
// replica's own answer; then they go.
void test_request_waits_for_the_replicas_answer() {
  Lab lab;
  lab.connect();
  CHECK(lab.flow() && lab.flow()->state == FlowState::kSynchronised);
  lab.client(kC0 + 1, kP0 + 1, kAck | kPsh, "REQ1");
  CHECK_BYTES(lab.injected_data(), "REQ1");
  lab.replica(kB0 + 1, kC0 + 5, kAck);
  lab.primary(kP0 + 1, kC0 + 5, kAck | kPsh, "ANSWER0001");
  lab.client(kC0 + 5, kP0 + 11, kAck | kPsh, "REQ2");  // sent after the answer arrived
  CHECK_BYTES(lab.injected_data(), "");
  CHECK(lab.ctx->counters.get(k_causality_held) > 0);
  lab.replica(kB0 + 1, kC0 + 5, kAck | kPsh, "ANSWER0001");
  std::vector<Injected> v = lab.injected();
  CHECK_EQ(v.size(), size_t(1));
  if (v.size() == 1) {
    CHECK_BYTES(v[0].payload, "REQ2");
    CHECK_EQ(v[0].ack, kB0 + 11);  // the replica's numbers: they wrapped
  }
}

// A client's segment cut in two fragments on its way (a sender that clears DF, a narrower
// link): the replica gets it whole once the last came, as the primary's kernel did; a fragment
// alone gives nothing.
void test_a_segment_in_fragments_reaches_the_replica_whole() {
  Lab lab;
  lab.connect();
  const std::string data(1200, 'x');
  std::vector<uint8_t> whole = packet(lab.spec(true, kC0 + 1, kP0 + 1, kAck | kPsh, data, kWindow));
  whole[4] = 0x12, whole[5] = 0x34;  // the datagram's id, as a sender that may fragment sets one
  // The first fragment: the header and 800 bytes (a multiple of 8), MF set; then the rest.
  const size_t ihl = 20, cut = 800;
  auto fragment = [&](size_t from, size_t to, bool more) {
    std::vector<uint8_t> f(whole.begin(), whole.begin() + ihl);
    f.insert(f.end(), whole.begin() + long(ihl + from), whole.begin() + long(ihl + to));
    f[2] = uint8_t(f.size() >> 8), f[3] = uint8_t(f.size());
    const uint16_t off = uint16_t(from / 8) | (more ? 0x2000 : 0);
    f[6] = uint8_t(off >> 8), f[7] = uint8_t(off);
    f[10] = f[11] = 0;
    const uint16_t hc = ipv4_header_checksum(f.data(), 20);
    std::memcpy(&f[10], &hc, 2);
    return ethernet(f);
  };
  const std::vector<uint8_t> first = fragment(0, cut, true), last = fragment(cut, whole.size() - ihl, false);
  lab.in->on_mirror_frame(last.data(), last.size(), 0);  // the last first: reordered on the way
  lab.settle();
  CHECK_BYTES(lab.injected_data(), "");
  lab.in->on_mirror_frame(first.data(), first.size(), 0);
  lab.settle();
  CHECK_BYTES(lab.injected_data(), data);
  lab.tick(realtime_us());
  CHECK_EQ(lab.ctx->counters.get(k_tcp_fragments), uint64_t(2));
  CHECK_EQ(lab.ctx->counters.get(k_tcp_reassembled), uint64_t(1));
}

// Bytes sent before the client saw anything more are not held.
void test_pipelined_requests_are_not_held() {
  Lab lab;
  lab.connect();
  lab.client(kC0 + 1, kP0 + 1, kAck | kPsh, "REQ1");
  lab.client(kC0 + 5, kP0 + 1, kAck | kPsh, "REQ2");
  CHECK_BYTES(lab.injected_data(), "REQ1REQ2");
  CHECK_EQ(lab.ctx->counters.get(k_causality_held), uint64_t(0));
}

// A client that closes after reading the answer: its FIN waits for the
// replica's answer as its bytes would.
void test_fin_waits_for_the_replicas_answer() {
  Lab lab;
  lab.connect();
  lab.client(kC0 + 1, kP0 + 1, kAck | kPsh, "GET");
  lab.replica(kB0 + 1, kC0 + 4, kAck);
  lab.injected();
  lab.primary(kP0 + 1, kC0 + 4, kAck | kPsh, "BODY");
  lab.client(kC0 + 4, kP0 + 5, kAck | kFin);
  for (const Injected& x : lab.injected()) CHECK(!(x.flags & kFin));
  lab.replica(kB0 + 1, kC0 + 4, kAck | kPsh, "BODY");
  bool fin = false;
  for (const Injected& x : lab.injected()) fin = fin || ((x.flags & kFin) && x.seq == kC0 + 4);
  CHECK(fin);
}

// A replica told of a zero window is told when the client's window opens,
// though the client acknowledges nothing more.
void test_window_update_reaches_the_replica() {
  Lab lab;
  lab.connect();
  lab.primary(kP0 + 1, kC0 + 1, kAck | kPsh, "DATA");
  lab.replica(kB0 + 1, kC0 + 1, kAck | kPsh, "DATA");
  lab.client(kC0 + 1, kP0 + 5, kAck, "", 0);
  std::vector<Injected> v = lab.injected();
  CHECK(!v.empty() && v.back().window == 0 && v.back().ack == kB0 + 5);
  lab.client(kC0 + 1, kP0 + 5, kAck, "", 4000);  // the client read: same ack, open window
  v = lab.injected();
  CHECK_EQ(v.size(), size_t(1));
  if (!v.empty()) {
    CHECK_EQ(v[0].window, uint16_t(4000));
    CHECK_EQ(v[0].ack, kB0 + 5);
  }
  lab.client(kC0 + 1, kP0 + 5, kAck, "", 4000);  // nothing new: nothing sent
  CHECK_EQ(lab.injected().size(), size_t(0));
}

// The replica's zero-window probe and its repeat of bytes we acknowledged
// (our ACK was lost) are answered with an ACK; its pure ACKs are not.
void test_probe_and_repeat_are_answered() {
  Lab lab;
  lab.connect();
  lab.primary(kP0 + 1, kC0 + 1, kAck | kPsh, "DATA");
  lab.replica(kB0 + 1, kC0 + 1, kAck | kPsh, "DATA");
  lab.client(kC0 + 1, kP0 + 5, kAck);
  lab.injected();
  lab.replica(kB0 + 5, kC0 + 1, kAck);  // a pure ACK of its own
  CHECK_EQ(lab.injected().size(), size_t(0));
  lab.replica(kB0 + 4, kC0 + 1, kAck);  // a probe: one left of our ack
  std::vector<Injected> v = lab.injected();
  CHECK(v.size() == 1 && v[0].ack == kB0 + 5);
  lab.replica(kB0 + 1, kC0 + 1, kAck | kPsh, "DATA");  // a repeat
  v = lab.injected();
  CHECK(v.size() == 1 && v[0].ack == kB0 + 5);
  CHECK_EQ(lab.ctx->counters.get(k_replica_repeats), uint64_t(2));
}

// A replica that took everything and does not produce the answer its client
// saw is probed halfway, then declared stopped: its copy is reset.
void test_replica_that_stops_short_is_given_up() {
  Lab lab;
  lab.connect();
  lab.client(kC0 + 1, kP0 + 1, kAck | kPsh, "REQ1");
  lab.replica(kB0 + 1, kC0 + 5, kAck);
  lab.primary(kP0 + 1, kC0 + 5, kAck | kPsh, "TOKEN-1234");
  lab.client(kC0 + 5, kP0 + 11, kAck | kPsh, "TOKEN-1234");
  lab.replica(kB0 + 1, kC0 + 5, kAck | kPsh, "TOKEN-99");  // another answer, shorter
  lab.injected();
  uint64_t t = realtime_us();
  lab.tick(t);
  lab.tick(t + kReplicaStoppedUs / 2);
  std::vector<Injected> v = lab.injected();
  CHECK(v.size() == 1 && v[0].seq == kC0 + 4 && v[0].payload.empty());  // the probe
  CHECK(lab.flow()->state != FlowState::kUnprotected);
  lab.tick(t + kReplicaStoppedUs);
  CHECK(lab.flow()->state == FlowState::kUnprotected);
  CHECK_EQ(lab.ctx->counters.get(k_replica_stopped), uint64_t(1));
  bool rst = false;
  for (const Injected& x : lab.injected()) rst = rst || (x.flags & kRst);
  CHECK(rst);
}

// A replica still working on what it was given is lag, never a stop: it has
// not acknowledged it yet, or its window keeps the rest out.
void test_replica_still_reading_is_not_stopped() {
  for (bool window_closed : {false, true}) {
    Lab lab;
    lab.connect();
    if (window_closed) lab.replica(kB0 + 1, kC0 + 1, kAck, "", 0);
    lab.client(kC0 + 1, kP0 + 1, kAck | kPsh, "REQ1");
    lab.primary(kP0 + 1, kC0 + 5, kAck | kPsh, "ANSWER0001");
    lab.client(kC0 + 5, kP0 + 11, kAck | kPsh, "REQ2");
    uint64_t t = realtime_us();
    for (int i = 0; i <= 4; i++) lab.tick(t + i * kReplicaStoppedUs / 2);
    CHECK(lab.flow()->state == FlowState::kSynchronised);
    CHECK_EQ(lab.ctx->counters.get(k_replica_stopped), uint64_t(0));
  }
}

// At the memory limit for all flows, the flow holding the most is given up
// (its replica reset) and the light flow whose bytes did not fit keeps going.
void test_memory_limit_sheds_the_largest_flow() {
  Lab lab(48 * 1024);
  lab.connect();  // the bulk flow: its replica takes a window, then nothing
  const std::string chunk(12 * 1024, 'b');
  for (uint32_t i = 0; i < 3; i++) lab.client(kC0 + 1 + i * 12 * 1024, kP0 + 1, kAck, chunk);
  lab.injected();
  lab.cport = kClientPort + 1;  // a light flow
  lab.connect();
  const std::string request(16 * 1024, 'r');  // 36 KiB held plus this does not fit
  lab.client(kC0 + 1, kP0 + 1, kAck | kPsh, request);
  CHECK(lab.flow()->state == FlowState::kSynchronised);
  CHECK(lab.injected_data().size() > 0);
  lab.cport = kClientPort;
  CHECK(lab.flow()->state == FlowState::kUnprotected);
  CHECK_EQ(lab.ctx->counters.get(k_flows_shed), uint64_t(1));
  CHECK_EQ(lab.ctx->counters.get(k_flow_buffer_full), uint64_t(0));
  CHECK(lab.ctx->stream_memory.used <= lab.ctx->stream_memory.limit);
}

// The flow that holds the most itself hits the limit: it is the one lost.
void test_memory_limit_keeps_the_light_flows() {
  Lab lab(48 * 1024);
  lab.cport = kClientPort + 1;
  lab.connect();
  lab.client(kC0 + 1, kP0 + 1, kAck | kPsh, "REQ1");
  lab.cport = kClientPort;
  lab.connect();
  const std::string chunk(12 * 1024, 'b');
  for (uint32_t i = 0; i < 5; i++) lab.client(kC0 + 1 + i * 12 * 1024, kP0 + 1, kAck, chunk);
  CHECK(lab.flow()->state == FlowState::kUnprotected);
  CHECK_EQ(lab.ctx->counters.get(k_flows_shed), uint64_t(0));
  CHECK_EQ(lab.ctx->counters.get(k_flow_buffer_full), uint64_t(1));
  lab.cport = kClientPort + 1;
  CHECK(lab.flow()->state == FlowState::kSynchronised);
}

// The replica's answer, read 30 ms after the primary's was captured, counts
// 30 ms of lag on its port; an answer the replica gave first counts 0. Of a
// flow far behind, a few offsets are followed, each counted once.
void test_replica_lag_is_timed_per_reply() {
  Lab lab;
  lab.connect();
  const LagHistogram& h = *lab.ctx->lag.at(kPort);
  auto samples = [&] {
    uint64_t n = 0;
    for (const auto& b : h.bucket) n += b.load();
    return n;
  };
  lab.client(kC0 + 1, kP0 + 1, kAck | kPsh, "REQ1");
  lab.primary(kP0 + 1, kC0 + 5, kAck | kPsh, "ANSWER0001", realtime_ns() - 30'000'000);
  CHECK_EQ(samples(), uint64_t(0));
  lab.replica(kB0 + 1, kC0 + 5, kAck | kPsh, "ANSWER0001");
  CHECK_EQ(samples(), uint64_t(1));
  CHECK(h.max_ns.load() >= 30'000'000 && h.max_ns.load() < 1'000'000'000);
  lab.replica(kB0 + 11, kC0 + 5, kAck | kPsh, "ANSWER0002");  // first this time
  lab.primary(kP0 + 11, kC0 + 5, kAck | kPsh, "ANSWER0002", realtime_ns());
  CHECK_EQ(samples(), uint64_t(2));
  CHECK_EQ(h.bucket[0].load(), uint64_t(1));
  for (uint32_t i = 0; i < 10; i++) lab.primary(kP0 + 21 + i * 4, kC0 + 5, kAck, "DATA", realtime_ns());
  lab.replica(kB0 + 21, kC0 + 5, kAck, std::string(40, 'd'));
  CHECK_EQ(samples(), uint64_t(6));
}

// --max-lag: replicas that lack, too long, client bytes the primary had
// acknowledged are given up, the one holding the most first and one at a
// time, so the others get the backup's time; a replica that keeps up, or
// bytes we never captured (a gap, not lag), never count.
void test_max_lag_gives_up_the_largest_lagging_flow() {
  const uint64_t t0 = realtime_us();
  Lab lab(1ull << 30, 1000, /*resupply=*/true);
  // The bulk flow: its replica's window closed, the primary took 40 KiB at t0.
  lab.connect();
  lab.replica(kB0 + 1, kC0 + 1, kAck, "", 0);
  const std::string chunk(8 * 1024, 'b');
  for (uint32_t i = 0; i < 5; i++) lab.client(kC0 + 1 + i * 8 * 1024, kP0 + 1, kAck, chunk);
  lab.primary(kP0 + 1, kC0 + 1 + 40 * 1024, kAck, "", t0 * 1000);
  // A light flow, also behind: its replica has not taken the request the primary did.
  lab.cport = kClientPort + 1;
  lab.connect();
  lab.replica(kB0 + 1, kC0 + 1, kAck, "", 0);
  lab.client(kC0 + 1, kP0 + 1, kAck | kPsh, "REQ1");
  lab.primary(kP0 + 1, kC0 + 5, kAck, "", t0 * 1000);
  // A third flow keeps up all along: the primary and the replica take each request.
  lab.cport = kClientPort + 2;
  lab.connect();
  for (uint32_t i = 0; i < 12; i++) {
    uint32_t at = kC0 + 1 + i * 4;
    lab.client(at, kP0 + 1, kAck | kPsh, "REQ" + std::to_string(i % 10));
    lab.primary(kP0 + 1, at + 4, kAck, "", (t0 + i * 100000) * 1000);
    lab.replica(kB0 + 1, at + 4, kAck);
  }
  // A fourth: the primary acknowledged bytes the capture never gave us; the
  // traffic recorder has longer than --max-lag to resupply them.
  lab.cport = kClientPort + 3;
  lab.connect();
  lab.client(kC0 + 1, kP0 + 1, kAck | kPsh, "REQ1");
  lab.replica(kB0 + 1, kC0 + 5, kAck);
  lab.primary(kP0 + 1, kC0 + 5 + 100, kAck, "", t0 * 1000);
  lab.injected();
  auto state = [&](uint16_t port) {
    lab.cport = port;
    return lab.flow()->state;
  };
  lab.tick(t0 + 900000);
  CHECK_EQ(lab.ctx->counters.get(k_replica_behind), uint64_t(0));
  lab.tick(t0 + 1100000);
  CHECK_EQ(lab.ctx->counters.get(k_replica_behind), uint64_t(1));
  CHECK(state(kClientPort) == FlowState::kUnprotected);  // the bulk one, holding the most
  CHECK(state(kClientPort + 1) == FlowState::kSynchronised);
  bool rst = false;
  for (const Injected& x : lab.injected()) rst = rst || (x.flags & kRst);
  CHECK(rst);  // its replica is reset
  lab.tick(t0 + 1100000 + kBehindShedSpacingUs / 2);  // one at a time
  CHECK(state(kClientPort + 1) == FlowState::kSynchronised);
  lab.tick(t0 + 1100000 + kBehindShedSpacingUs);  // still behind: its turn
  CHECK(state(kClientPort + 1) == FlowState::kUnprotected);
  CHECK_EQ(lab.ctx->counters.get(k_replica_behind), uint64_t(2));
  CHECK(state(kClientPort + 3) == FlowState::kSynchronised);
  lab.tick(t0 + 3000000);
  CHECK(state(kClientPort + 2) == FlowState::kSynchronised);
  CHECK(state(kClientPort + 3) == FlowState::kUnprotected);  // a gap, once the recorder had its time
  CHECK_EQ(lab.ctx->counters.get(k_gaps), uint64_t(1));
  CHECK_EQ(lab.ctx->counters.get(k_replica_behind), uint64_t(2));
}

// A gap the recorder fills in part (its answers lost on the way, say): the
// grace counts again from each part that comes; a gap where nothing more
// comes is given up a grace after the last part.
void test_a_gap_filled_in_part_gets_its_grace_again() {
  Lab lab(1ull << 30, 0, /*resupply=*/true);
  lab.connect();
  const std::string chunk(1000, 'c');
  // The capture lost the first two of three segments the primary acknowledged.
  const uint64_t t0 = realtime_us();
  lab.client(kC0 + 1 + 2000, kP0 + 1, kAck, chunk);
  lab.primary(kP0 + 1, kC0 + 1 + 3000, kAck);
  lab.tick(t0 + kResupplyAskUs + 1000);
  CHECK(lab.ctx->counters.get(k_resupply_asked) >= 1);
  // The first comes back just before the grace ends.
  const uint64_t t1 = t0 + kResupplyGraceUs - 100000;
  lab.client(kC0 + 1, kP0 + 1, kAck, chunk);
  lab.tick(t1);
  CHECK_EQ(lab.ctx->counters.get(k_resupply_progress), uint64_t(1));
  lab.tick(t0 + kResupplyGraceUs + 100000);  // past the first grace, not past the second
  CHECK(lab.flow()->state == FlowState::kSynchronised);
  CHECK_EQ(lab.ctx->counters.get(k_gaps), uint64_t(0));
  lab.tick(t1 + kResupplyGraceUs + 1000);  // nothing more came
  CHECK(lab.flow()->state == FlowState::kUnprotected);
  CHECK_EQ(lab.ctx->counters.get(k_gaps), uint64_t(1));
}

// A replica that answered otherwise and waits, silent, for input causality
// holds back is stopped, not slow: --max-lag leaves it to the stop check,
// which names it (replica-stopped).
void test_a_stopped_replica_is_not_lag() {
  Lab lab(1ull << 30, 1000);
  lab.connect();
  lab.client(kC0 + 1, kP0 + 1, kAck | kPsh, "REQ1");
  lab.replica(kB0 + 1, kC0 + 5, kAck);
  lab.primary(kP0 + 1, kC0 + 5, kAck | kPsh, "TOKEN-1234", realtime_ns());
  lab.client(kC0 + 5, kP0 + 11, kAck | kPsh, "TOKEN-1234");
  lab.primary(kP0 + 11, kC0 + 15, kAck, "", realtime_ns());  // the primary took the next request
  lab.replica(kB0 + 1, kC0 + 5, kAck | kPsh, "TOKEN-99");  // another answer, shorter
  const uint64_t t = realtime_us();
  for (uint64_t at = t; at <= t + kReplicaStoppedUs; at += 100000) lab.tick(at);
  CHECK_EQ(lab.ctx->counters.get(k_replica_behind), uint64_t(0));
  CHECK_EQ(lab.ctx->counters.get(k_replica_stopped), uint64_t(1));
}

// A replica that answers with another token of the same length: with
// --divergence strict its flow is diverged at once (not 5 s later, and not
// only if its stream is shorter), its copy reset, the record kept; under
// `length` the same answer is not a divergence.
void test_a_different_answer_is_diverged_at_once() {
  for (DivergencePolicy policy : {DivergencePolicy::kStrict, DivergencePolicy::kLength}) {
    Lab lab(1ull << 30, 0, false, policy);
    lab.connect();
    lab.client(kC0 + 1, kP0 + 1, kAck | kPsh, "REQ1");
    lab.injected();
    lab.primary(kP0 + 1, kC0 + 5, kAck | kPsh, "TOKEN-1234");
    lab.replica(kB0 + 1, kC0 + 5, kAck | kPsh, "TOKEN-9876");
    const bool strict = policy == DivergencePolicy::kStrict;
    CHECK_EQ(lab.ctx->counters.get(k_flows_diverged), uint64_t(strict ? 1 : 0));
    CHECK_EQ(lab.flow()->state, strict ? FlowState::kUnprotected : FlowState::kSynchronised);
    if (strict) {
      std::vector<Injected> v = lab.injected();
      CHECK(!v.empty() && (v.back().flags & kRst));  // the replica's copy is reset
      CHECK_EQ(lab.ctx->divergences.size(), size_t(1));
      if (!lab.ctx->divergences.empty()) {
        const Divergence& d = lab.ctx->divergences.back().what;
        CHECK_EQ(d.offset, uint64_t(6));
        CHECK(d.exact);
        CHECK_BYTES(std::string(reinterpret_cast<const char*>(d.excerpt[0]), d.excerpt_len[0]), "1234");
        CHECK_BYTES(std::string(reinterpret_cast<const char*>(d.excerpt[1]), d.excerpt_len[1]), "9876");
      }
    }
  }
}

// The same answer, split differently on the two sides and retransmitted
// by the replica, is no divergence.
void test_the_same_answer_is_not_diverged() {
  Lab lab(1ull << 30, 0, false, DivergencePolicy::kStrict);
  lab.connect();
  lab.client(kC0 + 1, kP0 + 1, kAck | kPsh, "REQ1");
  lab.primary(kP0 + 1, kC0 + 5, kAck | kPsh, "HELLO, WORLD");
  lab.replica(kB0 + 1, kC0 + 5, kAck | kPsh, "HELLO");
  lab.replica(kB0 + 1, kC0 + 5, kAck | kPsh, "HELLO");
  lab.replica(kB0 + 6, kC0 + 5, kAck | kPsh, ", WORLD");
  CHECK_EQ(lab.ctx->counters.get(k_flows_diverged), uint64_t(0));
  CHECK_EQ(lab.flow()->state, FlowState::kSynchronised);
  CHECK_EQ(lab.flow()->compare.compared_bytes(), uint64_t(12));
}

// After the capture dropped frames, only a primary ack captured after the
// drops were counted proves the flow intact: one that waited in the socket's
// queue through them does not (the bytes after it may be the ones lost).
void test_only_a_later_ack_clears_a_capture_drop() {
  for (bool later : {false, true}) {
    Lab lab;
    lab.connect();
    lab.client(kC0 + 1, kP0 + 1, kAck | kPsh, "DATA");
    const uint64_t noticed = realtime_us();
    lab.in->on_capture_drops(noticed, noticed - 100000);
    const uint64_t captured_ns = (later ? noticed + 1000 : noticed - 1000) * 1000;
    lab.primary(kP0 + 1, kC0 + 5, kAck, "", captured_ns);  // acks all we hold
    lab.tick(noticed + kDropVerifyUs + 1000);
    CHECK_EQ(lab.flow()->state, later ? FlowState::kSynchronised : FlowState::kUnprotected);
  }
}

// Drops counted after the engine itself stood still (stopped, starved): the
// flows it last saw before the stall are suspects however long ago that was,
// since the drops may have taken their later frames; one that went quiet
// well before the counter's previous read is not.
void test_drops_after_a_stall_suspect_the_flows_seen_before_it() {
  Lab lab;
  lab.connect();
  lab.client(kC0 + 1, kP0 + 1, kAck | kPsh, "DATA");
  lab.cport = kClientPort + 1;
  lab.connect();
  const uint64_t checked = realtime_us();
  lab.flow()->last_seen_us = checked - kDropSuspectWindowUs - 100000;  // quiet before
  const uint64_t noticed = checked + 400000;  // the engine stood still for 400 ms
  lab.in->on_capture_drops(noticed, checked);
  lab.tick(noticed + kDropVerifyUs + 1000);  // no later primary ack came
  CHECK_EQ(lab.flow()->state, FlowState::kSynchronised);
  lab.cport = kClientPort;
  CHECK_EQ(lab.flow()->state, FlowState::kUnprotected);
}

}  // namespace

// A flow first seen mid-stream is unprotected; the primary's segments still
// say where its stream stands (the second RST of a takeover's reset), even
// past the client's last ACK the mirror caught.
void test_a_flow_seen_mid_stream_keeps_the_primarys_edge() {
  Lab lab;
  lab.client(kC0 + 100, kP0 + 500, kAck, "request");
  Flow* f = lab.flow();
  CHECK(f && f->state == FlowState::kUnprotected);
  CHECK(f->client.ack_seen);
  CHECK_EQ(f->client.ack_p, kP0 + 500);
  CHECK(!f->primary.sent_seen);
  lab.primary(kP0 + 500, kC0 + 107, kAck | kPsh, std::string(1250, 'r'));
  CHECK(f->primary.sent_seen);
  CHECK_EQ(f->primary.snd_nxt, kP0 + 1750);
  // A retransmission of older bytes does not move it back.
  lab.primary(kP0 + 500, kC0 + 107, kAck | kPsh, std::string(100, 'r'));
  CHECK_EQ(f->primary.snd_nxt, kP0 + 1750);
  CHECK_EQ(f->client.ack_p, kP0 + 500);
}

// An unprotected flow's connection ends (both FINs and the client's last
// ACK, or a reset): ended, so that it no longer counts as unprotected and a
// takeover has nothing to reset; only the last ACK past the primary's FIN
// ends it, not the FINs alone.
void test_an_unprotected_flow_that_ends_is_ended() {
  {
    Lab lab;
    lab.client(kC0 + 100, kP0 + 500, kAck, "request");
    Flow* f = lab.flow();
    CHECK(f && f->state == FlowState::kUnprotected);
    lab.client(kC0 + 107, kP0 + 500, kAck | kFin);
    lab.primary(kP0 + 500, kC0 + 108, kAck | kFin, "bye");
    CHECK(!f->ended);  // the client has not acknowledged the primary's FIN yet
    lab.client(kC0 + 108, kP0 + 503, kAck);
    CHECK(!f->ended);  // that ACK stops short of the FIN
    lab.client(kC0 + 108, kP0 + 504, kAck);
    CHECK(f->ended && f->state == FlowState::kUnprotected);
    CHECK_EQ(lab.ctx->counters.get(k_flows_unprotected_ended), uint64_t(1));
  }
  {
    Lab lab;
    lab.client(kC0 + 100, kP0 + 500, kAck, "request");
    lab.primary(kP0 + 500, kC0 + 107, kRst);
    CHECK(lab.flow()->ended);
  }
  {
    // The client's last ACK (of the primary's FIN) escaped the capture: the
    // primary's FIN not repeated for kFinalAckGraceUs says it came all the same.
    Lab lab;
    lab.client(kC0 + 100, kP0 + 500, kAck, "request");
    Flow* f = lab.flow();
    lab.primary(kP0 + 500, kC0 + 107, kAck | kPsh, "bye");
    lab.client(kC0 + 107, kP0 + 503, kAck | kFin);
    lab.primary(kP0 + 503, kC0 + 108, kAck | kFin);
    const uint64_t t = realtime_us();
    lab.tick(t + kFinalAckGraceUs / 2);
    CHECK(!f->ended);
    lab.tick(realtime_us() + kFinalAckGraceUs + 1000);
    CHECK(f->ended && f->state == FlowState::kUnprotected);
    CHECK_EQ(lab.ctx->counters.get(k_flows_unprotected_ended), uint64_t(1));
    CHECK_EQ(lab.ctx->counters.get(k_final_ack_implied), uint64_t(1));
  }
}

// RFC 1071 over len bytes: 0 when a checksum they hold is right.
static uint16_t fold(const uint8_t* p, size_t len) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) sum += uint32_t(p[i]) << 8 | p[i + 1];
  if (len & 1) sum += uint32_t(p[len - 1]) << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// An ICMP error (fragmentation needed) to the VIP, from a router, quoting
// `quoted`'s IPv4 header and first 8 TCP bytes, with its checksum right.
static std::vector<uint8_t> icmp_error_frame(const std::vector<uint8_t>& quoted) {
  std::vector<uint8_t> ip(20 + 8 + 28, 0);
  ip[0] = 0x45;
  ip[2] = 0;
  ip[3] = static_cast<uint8_t>(ip.size());
  ip[8] = 64;
  ip[9] = 1;
  const uint32_t router = kClient ^ htonl(0xff);  // another address of the client's network
  std::memcpy(&ip[12], &router, 4);
  std::memcpy(&ip[16], &kVip, 4);
  ip[20] = 3;  // destination unreachable
  ip[21] = 4;  // fragmentation needed
  ip[26] = 0x05;  // next-hop MTU 1400
  ip[27] = 0x78;
  std::memcpy(&ip[28], quoted.data(), 28);
  const uint16_t ic = fold(&ip[20], ip.size() - 20);
  ip[22] = static_cast<uint8_t>(ic >> 8);
  ip[23] = static_cast<uint8_t>(ic);
  const uint16_t hc = ipv4_header_checksum(ip.data(), 20);
  std::memcpy(&ip[10], &hc, 2);
  return ethernet(ip);
}

// An ICMP error to the VIP about a replicated flow reaches the replica, its
// quote in the replica's numbers; beyond what the replica sent, at its oldest
// unacknowledged byte (its kernel heeds no other). Errors about no followed
// flow are counted and not given.
void test_an_icmp_error_reaches_the_replica() {
  Lab lab;
  lab.connect();
  lab.replica(kB0 + 1, kC0 + 1, kAck | kPsh, std::string(1000, 'x'));
  auto given = [&](const std::vector<uint8_t>& frame) {
    lab.in->on_mirror_frame(frame.data(), frame.size(), 0);
    uint8_t buf[2048];
    ssize_t n = recv(lab.peer, buf, sizeof buf, 0);
    return n > 0 ? std::vector<uint8_t>(buf, buf + n) : std::vector<uint8_t>();
  };
  auto quoted_seq = [](const std::vector<uint8_t>& ip) {
    return uint32_t(ip[52]) << 24 | uint32_t(ip[53]) << 16 | uint32_t(ip[54]) << 8 | ip[55];
  };
  // About the primary's byte 500: the replica's byte 500.
  std::vector<uint8_t> got = given(icmp_error_frame(packet(lab.spec(false, kP0 + 500, kC0 + 1, kAck | kPsh, std::string(1400, 'y'), kWindow))));
  CHECK_EQ(got.size(), size_t(56));
  if (got.size() == 56) {
    CHECK_EQ(got[9], 1);
    CHECK_EQ(quoted_seq(got), kB0 + 500);
    CHECK_EQ(fold(&got[20], got.size() - 20), 0);
  }
  // About a byte the replica has not sent yet: its oldest unacknowledged one.
  got = given(icmp_error_frame(packet(lab.spec(false, kP0 + 5000, kC0 + 1, kAck | kPsh, std::string(1400, 'y'), kWindow))));
  CHECK_EQ(got.size(), size_t(56));
  if (got.size() == 56) {
    CHECK_EQ(quoted_seq(got), kB0 + 1);
    CHECK_EQ(fold(&got[20], got.size() - 20), 0);
  }
  CHECK_EQ(lab.ctx->counters.get(k_icmp_errors_injected), uint64_t(2));
  // About another connection: counted, not given.
  lab.cport = kClientPort + 1;
  CHECK(given(icmp_error_frame(packet(lab.spec(false, kP0 + 500, kC0 + 1, kAck, "", kWindow)))).empty());
  CHECK_EQ(lab.ctx->counters.get(k_icmp_errors_ignored), uint64_t(1));
}

// An IPv4/UDP datagram from saddr:sport to daddr:dport carrying `data`, its
// checksum left as a sender's offload leaves it (partial: here, 0x1234).
static std::vector<uint8_t> datagram(uint32_t saddr, uint16_t sport, uint32_t daddr, uint16_t dport, const std::string& data) {
  std::vector<uint8_t> ip(28 + data.size(), 0);
  ip[0] = 0x45;
  ip[2] = static_cast<uint8_t>(ip.size() >> 8);
  ip[3] = static_cast<uint8_t>(ip.size());
  ip[8] = 64;
  ip[9] = 17;
  std::memcpy(&ip[12], &saddr, 4);
  std::memcpy(&ip[16], &daddr, 4);
  ip[20] = static_cast<uint8_t>(sport >> 8);
  ip[21] = static_cast<uint8_t>(sport);
  ip[22] = static_cast<uint8_t>(dport >> 8);
  ip[23] = static_cast<uint8_t>(dport);
  ip[24] = static_cast<uint8_t>((8 + data.size()) >> 8);
  ip[25] = static_cast<uint8_t>(8 + data.size());
  ip[26] = 0x12;
  ip[27] = 0x34;
  std::memcpy(&ip[28], data.data(), data.size());
  const uint16_t hc = ipv4_header_checksum(ip.data(), 20);
  std::memcpy(&ip[10], &hc, 2);
  return ip;
}

// A client's datagram to VIP:udp-port reaches the replica as it came, but
// for its checksum (left out: 0); its association is new once; the replica's
// answer is counted against it; a datagram whose UDP length lies is counted
// by reason and not given; one to another port is not the service's.
void test_a_datagram_reaches_the_replica() {
  constexpr uint16_t kSip = 5060;
  Lab lab(1ull << 30, 0, false, DivergencePolicy::kOff, {kSip});
  auto given = [&](const std::vector<uint8_t>& ip) {
    const std::vector<uint8_t> f = ethernet(ip);
    lab.in->on_mirror_frame(f.data(), f.size(), 0);
    uint8_t buf[2048];
    ssize_t n = recv(lab.peer, buf, sizeof buf, 0);
    return n > 0 ? std::vector<uint8_t>(buf, buf + n) : std::vector<uint8_t>();
  };
  const std::vector<uint8_t> invite = datagram(kClient, 5062, kVip, kSip, "INVITE sip:bob@example.org SIP/2.0");
  std::vector<uint8_t> got = given(invite);
  CHECK_EQ(got.size(), invite.size());
  if (got.size() == invite.size()) {
    CHECK(std::equal(got.begin(), got.begin() + 26, invite.begin()));  // headers as they came
    CHECK_EQ(got[26], 0);
    CHECK_EQ(got[27], 0);  // no checksum
    CHECK(std::equal(got.begin() + 28, got.end(), invite.begin() + 28));
  }
  CHECK(!given(datagram(kClient, 5062, kVip, kSip, "ACK")).empty());
  CHECK_EQ(lab.ctx->counters.get(k_udp_associations_new), uint64_t(1));
  CHECK_EQ(lab.ctx->counters.get(k_udp_datagrams), uint64_t(2));
  // The replica's answer: counted, its association's.
  std::vector<uint8_t> ok = datagram(kVip, kSip, kClient, 5062, "SIP/2.0 200 OK");
  lab.out->on_packet(ok.data(), ok.size());
  CHECK_EQ(lab.ctx->counters.get(k_udp_replica_datagrams), uint64_t(1));
  const UdpAssociation* a = lab.ctx->udp.find(FlowKey{kClient, 5062, kSip});
  CHECK(a && a->client.datagrams == 2 && a->replica.datagrams == 1);
  // A UDP length that is not the packet's: counted, not given.
  std::vector<uint8_t> bad = datagram(kClient, 5062, kVip, kSip, "BYE");
  bad[25] = 200;
  CHECK(given(bad).empty());
  CHECK_EQ(lab.ctx->counters.mirror_parse[static_cast<int>(ParseError::kBadUdpLength)].load(), uint64_t(1));
  // Another port: not the service's.
  CHECK(given(datagram(kClient, 5062, kVip, 5070, "OPTIONS")).empty());
  CHECK_EQ(lab.ctx->counters.get(k_udp_datagrams), uint64_t(2));
}

// A proxy forwarding a request to a callee: the primary's datagram is the association's first
// (no client datagram opened it); it opens it, so that the replica's same datagram, later,
// pairs with it instead of standing unverified.
void test_the_primarys_first_datagram_opens_the_association() {
  constexpr uint16_t kSip = 5060;
  Lab lab(1ull << 30, 0, false, DivergencePolicy::kStrict, {kSip});
  std::vector<uint8_t> invite = datagram(kVip, kSip, kClient, 5070, "INVITE sip:bob@198.18.0.3:5070 SIP/2.0");
  const std::vector<uint8_t> f = ethernet(invite);
  lab.in->on_mirror_frame(f.data(), f.size(), 0);
  CHECK_EQ(lab.ctx->counters.get(k_udp_associations_new), uint64_t(1));
  CHECK(lab.ctx->udp.find(FlowKey{kClient, 5070, kSip}) != nullptr);
  lab.out->on_packet(invite.data(), invite.size());
  CHECK_EQ(lab.ctx->udp_compare.stats().compared, uint64_t(1));
  CHECK_EQ(lab.ctx->udp_compare.stats().unverified, uint64_t(0));
}

// The same, the replica ahead of the primary: its datagram to the callee comes first and opens
// the association; the primary's, later, pairs with it (neither diverged nor unverified).
void test_the_replicas_first_datagram_opens_the_association() {
  constexpr uint16_t kSip = 5060;
  Lab lab(1ull << 30, 0, false, DivergencePolicy::kStrict, {kSip});
  std::vector<uint8_t> invite = datagram(kVip, kSip, kClient, 5070, "INVITE sip:bob@198.18.0.3:5070 SIP/2.0");
  lab.out->on_packet(invite.data(), invite.size());
  CHECK_EQ(lab.ctx->counters.get(k_udp_associations_new), uint64_t(1));
  const std::vector<uint8_t> f = ethernet(invite);
  lab.in->on_mirror_frame(f.data(), f.size(), 0);
  CHECK_EQ(lab.ctx->counters.get(k_udp_associations_new), uint64_t(1));
  CHECK_EQ(lab.ctx->udp_compare.stats().compared, uint64_t(1));
  CHECK_EQ(lab.ctx->udp_compare.stats().unverified, uint64_t(0));
  CHECK_EQ(lab.ctx->udp_compare.stats().diverged, uint64_t(0));
}

// While a takeover is frozen the replica's datagrams are still dropped and compared: one the
// primary had not sent (the answer to a request the dying primary never got, resupplied by the
// recorder) is what the takeover sends; one the primary sent (on the mirror) is not.
void test_a_frozen_replicas_answer_the_primary_never_sent_is_given_to_the_takeover() {
  constexpr uint16_t kSip = 5060;
  Lab lab(1ull << 30, 0, false, DivergencePolicy::kStrict, {kSip});
  const std::vector<uint8_t> answered = datagram(kVip, kSip, kClient, 5062, "SIP/2.0 200 OK 1");
  const std::vector<uint8_t> f = ethernet(answered);
  lab.in->on_mirror_frame(f.data(), f.size(), 0);  // the primary's, before it died
  lab.ctx->mode = EngineMode::kFrozen;
  std::vector<uint8_t> same = answered, other = datagram(kVip, kSip, kClient, 5062, "SIP/2.0 200 OK 2");
  CHECK(lab.out->on_packet(same.data(), same.size()) == NfQueue::Verdict::kDrop);
  CHECK(lab.out->on_packet(other.data(), other.size()) == NfQueue::Verdict::kDrop);
  std::vector<std::string> given;
  lab.ctx->udp_compare.take_unanswered([&](const FlowKey& k, const uint8_t* p, uint32_t len, bool whole) {
    CHECK(k == (FlowKey{kClient, 5062, kSip}) && whole);
    given.emplace_back(reinterpret_cast<const char*>(p), len);
  });
  CHECK(given == std::vector<std::string>{"SIP/2.0 200 OK 2"});
}

// The lab of the media relay tests: SIP on 5060 and a relay's ports 30000-30099, all compared;
// frames as the mirror shows them; an INVITE whose SDP names the VIP and a relay port.
struct RelayLab : Lab {
  static constexpr uint16_t kSip = 5060;
  static std::vector<uint16_t> relay_ports() {
    std::vector<uint16_t> relay;
    for (uint16_t p = 30000; p < 30100; p++) relay.push_back(p);
    return relay;
  }
  static std::vector<uint16_t> udp_ports() {
    std::vector<uint16_t> udp = relay_ports();
    udp.push_back(kSip);
    return udp;
  }
  RelayLab() : Lab(1ull << 30, 0, false, DivergencePolicy::kStrict, udp_ports(), relay_ports()) {}
  void mirror(const std::vector<uint8_t>& ip) {
    const std::vector<uint8_t> f = ethernet(ip);
    in->on_mirror_frame(f.data(), f.size(), 0);
  }
  static std::string invite(uint16_t port) {
    const std::string sdp = "v=0\r\nc=IN IP4 198.18.1.10\r\nm=audio " + std::to_string(port) + " RTP/AVP 0\r\n";
    return "INVITE sip:bob@198.18.0.3:5070 SIP/2.0\r\nContent-Length: " + std::to_string(sdp.size()) + "\r\n\r\n" + sdp;
  }
};

// A media relay beside the service (--relay-ports): a phone's media to the primary's relay port
// waits until the two copies' SDPs naming the ports paired, then reaches the replica on its
// relay's port; the replica's media from that port is compared as from the primary's.
void test_media_to_a_relay_port_reaches_the_replicas_port() {
  constexpr uint16_t kSip = RelayLab::kSip, kPrimaryRtp = 30018, kReplicaRtp = 30042, kPhoneRtp = 6000;
  RelayLab lab;
  auto mirror = [&](const std::vector<uint8_t>& ip) { lab.mirror(ip); };
  auto given = [&]() {
    uint8_t buf[2048];
    ssize_t n = recv(lab.peer, buf, sizeof buf, 0);
    return n > 0 ? std::vector<uint8_t>(buf, buf + n) : std::vector<uint8_t>();
  };
  auto invite = RelayLab::invite;
  // The phone's media comes before the replica's copy of the INVITE: held.
  mirror(datagram(kVip, kSip, kClient, 5070, invite(kPrimaryRtp)));
  mirror(datagram(kClient, kPhoneRtp, kVip, kPrimaryRtp, "rtp 1"));
  CHECK(given().empty());
  CHECK_EQ(lab.ctx->counters.get(k_udp_datagrams), uint64_t(0));
  // The replica's INVITE names its own port: the two pair, and the held datagram goes to it.
  std::vector<uint8_t> replica_invite = datagram(kVip, kSip, kClient, 5070, invite(kReplicaRtp));
  lab.out->on_packet(replica_invite.data(), replica_invite.size());
  CHECK_EQ(lab.ctx->udp_compare.stats().compared, uint64_t(1));
  CHECK_EQ(lab.ctx->relay.replica_of(kPrimaryRtp), kReplicaRtp);
  std::vector<uint8_t> got = given();
  CHECK_EQ(got.size(), size_t(28 + 5));
  if (got.size() == 28 + 5) {
    CHECK_EQ(uint16_t(got[22] << 8 | got[23]), kReplicaRtp);
    CHECK(std::string(got.begin() + 28, got.end()) == "rtp 1");
  }
  // Later media goes at once.
  mirror(datagram(kClient, kPhoneRtp, kVip, kPrimaryRtp, "rtp 2"));
  got = given();
  CHECK(got.size() == 28 + 5 && uint16_t(got[22] << 8 | got[23]) == kReplicaRtp);
  // The relays' output: the primary's from its port, the replica's from its own, alike.
  mirror(datagram(kVip, kPrimaryRtp, kClient, kPhoneRtp, "rtp 9"));
  std::vector<uint8_t> relayed = datagram(kVip, kReplicaRtp, kClient, kPhoneRtp, "rtp 9");
  lab.out->on_packet(relayed.data(), relayed.size());
  CHECK_EQ(lab.ctx->udp_compare.stats().compared, uint64_t(2));
  CHECK(lab.ctx->udp.find(FlowKey{kClient, kPhoneRtp, kReplicaRtp}) == nullptr);
  // The replica's from a port no SDP paired yet (the capture behind the output queue): held,
  // and compared once the two SDPs naming it pair.
  std::vector<uint8_t> early = datagram(kVip, 30077, kClient, kPhoneRtp, "rtp 10");
  lab.out->on_packet(early.data(), early.size());
  CHECK_EQ(lab.ctx->udp_compare.stats().compared, uint64_t(2));
  mirror(datagram(kVip, kSip, kClient, 5070, invite(30060)));
  std::vector<uint8_t> second_invite = datagram(kVip, kSip, kClient, 5070, invite(30077));
  lab.out->on_packet(second_invite.data(), second_invite.size());
  mirror(datagram(kVip, 30060, kClient, kPhoneRtp, "rtp 10"));
  lab.in->udp_tick(realtime_us());
  CHECK_EQ(lab.ctx->udp_compare.stats().compared, uint64_t(4));
  CHECK_EQ(lab.ctx->counters.get(k_udp_relay_unpaired), uint64_t(0));
  // From or to a port no SDP pairs: held, then after kRelayHoldUs dropped, counted.
  std::vector<uint8_t> stray = datagram(kVip, 30079, kClient, kPhoneRtp, "rtp 9");
  lab.out->on_packet(stray.data(), stray.size());
  mirror(datagram(kClient, kPhoneRtp, kVip, 30050, "rtp x"));
  lab.in->udp_tick(realtime_us() + 2000000);
  CHECK(given().empty());
  CHECK_EQ(lab.ctx->counters.get(k_udp_relay_unpaired), uint64_t(2));
}

// The UDP checksum (RFC 768) of a datagram() as the stack would send it.
static void set_udp_checksum(std::vector<uint8_t>& ip) {
  uint8_t pseudo[12];
  std::memcpy(pseudo, &ip[12], 8);
  pseudo[8] = 0;
  pseudo[9] = 17;
  std::memcpy(pseudo + 10, &ip[24], 2);
  ip[26] = ip[27] = 0;
  uint16_t c = csum_fold(csum_partial(&ip[20], ip.size() - 20, csum_partial(pseudo, sizeof pseudo, 0)));
  if (!c) c = 0xffff;
  std::memcpy(&ip[26], &c, 2);
}

// The replica's relay sent media just before step 5 changed the rules: queued then, judged in
// active mode, after the chain it passed had no relay map. It leaves from the primary's port
// the phone was told, its checksum right; what the map would not translate passes untouched.
void test_relay_media_queued_before_the_takeover_leaves_translated() {
  constexpr uint16_t kSip = RelayLab::kSip, kPrimaryRtp = 30018, kReplicaRtp = 30042, kPhoneRtp = 6000;
  RelayLab lab;
  lab.mirror(datagram(kVip, kSip, kClient, 5070, RelayLab::invite(kPrimaryRtp)));
  std::vector<uint8_t> replica_invite = datagram(kVip, kSip, kClient, 5070, RelayLab::invite(kReplicaRtp));
  lab.out->on_packet(replica_invite.data(), replica_invite.size());
  lab.mirror(datagram(kClient, kPhoneRtp, kVip, kPrimaryRtp, "rtp 1"));  // the phone's association
  CHECK_EQ(lab.ctx->relay.replica_of(kPrimaryRtp), kReplicaRtp);
  lab.ctx->mode = EngineMode::kActive;

  std::vector<uint8_t> media = datagram(kVip, kReplicaRtp, kClient, kPhoneRtp, "rtp 2 of the replica's relay");
  set_udp_checksum(media);
  CHECK(lab.out->on_packet(media.data(), media.size()) == NfQueue::Verdict::kAcceptRewritten);
  CHECK_EQ(uint16_t(media[20] << 8 | media[21]), kPrimaryRtp);
  std::vector<uint8_t> recomputed = media;
  set_udp_checksum(recomputed);
  CHECK(media == recomputed);
  CHECK_EQ(lab.ctx->counters.get(k_udp_relay_translated_queued), uint64_t(1));
  // Sent without a checksum: still without one.
  std::vector<uint8_t> bare = datagram(kVip, kReplicaRtp, kClient, kPhoneRtp, "rtp 3");
  bare[26] = bare[27] = 0;
  CHECK(lab.out->on_packet(bare.data(), bare.size()) == NfQueue::Verdict::kAcceptRewritten);
  CHECK(uint16_t(bare[20] << 8 | bare[21]) == kPrimaryRtp && bare[26] == 0 && bare[27] == 0);
  // Not the map's: another phone on that port (a call after the takeover), the service's own port,
  // a relay port no SDP paired.
  for (auto d : {datagram(kVip, kReplicaRtp, kClient, 7000, "rtp"), datagram(kVip, kSip, kClient, 5070, "SIP/2.0 200 OK"),
                 datagram(kVip, 30077, kClient, kPhoneRtp, "rtp")}) {
    const std::vector<uint8_t> before = d;
    CHECK(lab.out->on_packet(d.data(), d.size()) == NfQueue::Verdict::kAccept);
    CHECK(d == before);
  }
  CHECK_EQ(lab.ctx->counters.get(k_udp_relay_translated_queued), uint64_t(2));
}

// The client closes first and opens the 4-tuple again at once, and the
// capture lost its last ACK (past the primary's FIN). Its new SYN says it
// sent it: the replica's FIN is acknowledged, the old generation closes and
// the new one's SYN goes to the replica instead of waiting for good.
void test_a_reuse_implies_the_lost_last_ack() {
  Lab lab;
  lab.closed_but_the_last_ack();
  CHECK(lab.flow() && lab.flow()->state == FlowState::kClosing);
  constexpr uint32_t kC1 = kC0 + 100000;
  lab.client(kC1, 0, kSyn);
  CHECK_EQ(lab.ctx->counters.get(k_final_ack_implied), uint64_t(1));
  bool acked = false;
  for (const Injected& x : lab.injected()) acked = acked || ((x.flags & kAck) && x.ack == kB0 + 3);
  CHECK(acked);
  lab.in->promote_waiting();
  std::vector<Injected> v = lab.injected();
  CHECK(v.size() == 1 && (v[0].flags & kSyn) && v[0].seq == kC1);
  CHECK(lab.flow() && lab.flow()->state == FlowState::kSynSeen && lab.flow()->client.isn == kC1);
}

// The same lost last ACK without a reuse: once the primary stops repeating
// its FIN it has the ACK, and so does the replica then; until then (the
// primary repeats it) nothing is implied.
void test_a_primary_fin_not_repeated_implies_the_last_ack() {
  Lab lab;
  lab.closed_but_the_last_ack();
  uint64_t t0 = realtime_us();
  lab.tick(t0 + kFinalAckGraceUs / 2);
  CHECK_EQ(lab.ctx->counters.get(k_final_ack_implied), uint64_t(0));
  lab.primary(kP0 + 2, kC0 + 3, kAck | kFin);  // repeated: not acknowledged yet
  lab.tick(realtime_us() + kFinalAckGraceUs / 2);
  CHECK_EQ(lab.ctx->counters.get(k_final_ack_implied), uint64_t(0));
  CHECK(lab.flow() && lab.flow()->state == FlowState::kClosing);
  lab.tick(realtime_us() + kFinalAckGraceUs + 100000);
  CHECK_EQ(lab.ctx->counters.get(k_final_ack_implied), uint64_t(1));
  bool acked = false;
  for (const Injected& x : lab.injected()) acked = acked || ((x.flags & kAck) && x.ack == kB0 + 3);
  CHECK(acked);
  CHECK(lab.flow() && lab.flow()->state == FlowState::kClosed);
}

// A flow that expires on idle with a connection waiting behind it on its key
// hands its place over: the waiting one's SYN goes to the replica.
void test_an_expired_flow_hands_over_to_the_one_waiting() {
  Lab lab;
  lab.connect();
  constexpr uint32_t kC1 = kC0 + 100000;
  lab.client(kC1, 0, kSyn);  // the replica still holds the first (it never closed)
  CHECK(lab.flow() && lab.flow()->successor);
  lab.injected();
  lab.tick(realtime_us() + uint64_t(lab.cfg.idle_timeout_s) * 1000000 + 1000000);
  CHECK_EQ(lab.ctx->counters.get(k_flows_expired), uint64_t(1));
  lab.in->promote_waiting();
  std::vector<Injected> v = lab.injected();
  CHECK(v.size() == 1 && (v[0].flags & kSyn) && v[0].seq == kC1);
  CHECK(lab.flow() && lab.flow()->state == FlowState::kSynSeen && lab.flow()->client.isn == kC1);
}

// The client's SYN again once the flow runs (the primary's SYN-ACK came
// late): the same connection, not a successor its later segments would go to.
void test_a_repeated_syn_is_not_a_new_connection() {
  Lab lab;
  lab.connect();
  lab.client(kC0, 0, kSyn);
  CHECK(lab.flow() && !lab.flow()->successor);
  CHECK_EQ(lab.ctx->counters.get(k_flows_reused_tuple), uint64_t(0));
  lab.client(kC0 + 1, kP0 + 1, kAck | kPsh | kFin, "Q");
  CHECK(lab.flow() && lab.flow()->client.fin);
}

// Fragments of `ip` (a whole IPv4 packet, 20-byte header): `at` bytes of its payload each (a
// multiple of 8), the last what is left; id `id`.
static std::vector<std::vector<uint8_t>> fragments(const std::vector<uint8_t>& ip, size_t at, uint16_t id) {
  std::vector<std::vector<uint8_t>> out;
  const size_t n = ip.size() - 20;
  for (size_t off = 0; off < n; off += at) {
    const size_t len = std::min(at, n - off);
    std::vector<uint8_t> f(ip.begin(), ip.begin() + 20);
    f.insert(f.end(), ip.begin() + 20 + long(off), ip.begin() + 20 + long(off + len));
    f[2] = uint8_t(f.size() >> 8);
    f[3] = uint8_t(f.size());
    f[4] = uint8_t(id >> 8);
    f[5] = uint8_t(id);
    const uint16_t fo = uint16_t(off / 8) | (off + len < n ? 0x2000 : 0);
    f[6] = uint8_t(fo >> 8);
    f[7] = uint8_t(fo);
    const uint16_t hc = ipv4_header_checksum(f.data(), 20);
    std::memcpy(&f[10], &hc, 2);
    out.push_back(f);
  }
  return out;
}

// A client's datagram larger than the path MTU comes in fragments, in any
// order, one of them twice: the replica gets it whole, once, when the last
// piece came, as the primary's kernel had it. Fragments that overlap with
// other bytes drop their datagram; one never completed is given up after
// kTimeoutUs; each counted.
void test_a_fragmented_datagram_reaches_the_replica_whole() {
  constexpr uint16_t kSip = 5060;
  Lab lab(1ull << 30, 0, false, DivergencePolicy::kOff, {kSip});
  auto mirror = [&](const std::vector<uint8_t>& ip) {
    const std::vector<uint8_t> f = ethernet(ip);
    lab.in->on_mirror_frame(f.data(), f.size(), 0);
  };
  auto taken = [&]() {
    std::vector<std::vector<uint8_t>> v;
    uint8_t buf[65536];
    for (ssize_t n; (n = recv(lab.peer, buf, sizeof buf, 0)) > 0;) v.emplace_back(buf, buf + n);
    return v;
  };
  std::string sdp(3000, 0);
  for (size_t i = 0; i < sdp.size(); i++) sdp[i] = char('a' + i % 26);
  std::vector<uint8_t> invite = datagram(kClient, 5062, kVip, kSip, "INVITE sip:bob@example.org SIP/2.0\r\n" + sdp);
  invite[4] = 0x12, invite[5] = 0x34;
  const auto pieces = fragments(invite, 1480, 0x1234);
  CHECK_EQ(pieces.size(), size_t(3));
  mirror(pieces[2]);
  mirror(pieces[0]);
  mirror(pieces[0]);  // a copy
  CHECK(taken().empty());
  mirror(pieces[1]);
  std::vector<std::vector<uint8_t>> got = taken();
  CHECK_EQ(got.size(), size_t(1));
  if (got.size() == 1) {
    const std::vector<uint8_t>& g = got[0];
    CHECK_EQ(g.size(), invite.size());
    CHECK(g.size() == invite.size() && std::equal(g.begin() + 28, g.end(), invite.begin() + 28));
    CHECK(g.size() >= 20 && g[4] == 0x12 && g[5] == 0x34 && g[6] == 0 && g[7] == 0);
    CHECK(g.size() >= 20 && ipv4_header_checksum_ok(g.data(), 20));
  }
  CHECK_EQ(lab.ctx->counters.get(k_udp_datagrams), uint64_t(1));
  // Overlapping with other bytes: dropped, nothing given.
  auto other = fragments(invite, 1480, 0x1235);
  std::vector<uint8_t> forged = fragments(invite, 1488, 0x1235)[1];  // starts 8 bytes later, other bytes there
  forged[40] ^= 0xff;
  mirror(other[0]);
  mirror(forged);
  mirror(other[1]);
  mirror(other[2]);
  CHECK(taken().empty());
  // Never completed: given up at the next tick past kTimeoutUs.
  mirror(fragments(invite, 1480, 0x1236)[0]);
  lab.in->udp_tick(realtime_us() + IpReassembly::kTimeoutUs + 1000);
  CHECK_EQ(lab.ctx->counters.get(k_udp_fragments), uint64_t(4 + 4 + 1));
  CHECK_EQ(lab.ctx->counters.get(k_udp_reassembled), uint64_t(1));
  CHECK(lab.ctx->counters.get(k_udp_reassembly_failed) >= 2);  // the overlap, the timeout
  CHECK_EQ(lab.ctx->counters.get(k_udp_datagrams), uint64_t(1));
}

// A datagram the mirror lost, larger than one control message carries: the
// recorder cuts it into fragments of its own (fragment_ipv4, each a valid
// packet of at most the size asked, the last odd-sized), the engine makes
// them whole apart from the mirror's and the ledger gives the replica the
// datagram in its record's place.
void test_a_large_datagram_resupplied_in_fragments_reaches_the_replica_whole() {
  constexpr uint16_t kSip = 5060;
  Lab lab(1ull << 30, 0, /*resupply=*/true, DivergencePolicy::kOff, {kSip});
  std::string body(50000, 0);
  for (size_t i = 0; i < body.size(); i++) body[i] = char('A' + (i * 7) % 26);
  std::vector<uint8_t> big = datagram(kClient, 5062, kVip, kSip, body);
  // What fragment_ipv4 makes of it: valid, bounded, multiples of 8 but the last.
  CHECK(fragment_ipv4(big.data(), big.size() - 1, 920).empty());  // shorter than its total length
  CHECK_EQ(fragment_ipv4(big.data(), big.size(), 65535).size(), size_t(1));  // fits: itself
  const auto pieces = fragment_ipv4(big.data(), big.size(), 920);
  CHECK_EQ(pieces.size(), (big.size() - 20 + 895) / 896);
  size_t payload = 0;
  for (size_t i = 0; i < pieces.size(); i++) {
    const auto& f = pieces[i];
    CHECK(f.size() <= 920 && ipv4_header_checksum_ok(f.data(), 20) && is_ip_fragment(f.data()));
    CHECK_EQ(size_t((f[6] & 0x1f) << 8 | f[7]) * 8, payload);
    CHECK_EQ(bool(f[6] & 0x20), i + 1 < pieces.size());
    if (i + 1 < pieces.size()) CHECK_EQ((f.size() - 20) % 8, size_t(0));
    payload += f.size() - 20;
  }
  CHECK_EQ(payload, big.size() - 20);
  CHECK(fragment_ipv4(pieces[0].data(), pieces[0].size(), 920).empty());  // already a fragment
  // The recorder numbered it (record 1); the mirror never showed it.
  Datagram d;
  const bool parsed = parse_udp(big.data(), big.size(), &d) == ParseError::kOk;
  CHECK(parsed);
  if (!parsed) return;
  uint8_t record[kUdpRecordSize] = {};
  std::memcpy(record, &d.saddr, 4);
  record[4] = uint8_t(d.sport >> 8), record[5] = uint8_t(d.sport);
  record[6] = uint8_t(d.dport >> 8), record[7] = uint8_t(d.dport);
  const uint64_t digest = udp_digest(d);
  for (int b = 0; b < 8; b++) record[8 + b] = uint8_t(digest >> (56 - 8 * b));
  const uint64_t t0 = realtime_us();
  lab.in->on_udp_records(1, record, 1);
  lab.in->udp_tick(t0 + 50000);  // not mirrored: asked for
  CHECK_EQ(lab.ctx->counters.get(k_udp_asked), uint64_t(1));
  // Its fragments come back out of order, one twice.
  for (size_t i = pieces.size(); i-- > 0;) lab.in->on_resupplied(pieces[i].data(), pieces[i].size());
  lab.in->on_resupplied(pieces[3].data(), pieces[3].size());
  lab.in->udp_tick(t0 + 60000);
  std::vector<std::vector<uint8_t>> got;
  uint8_t buf[65536];
  for (ssize_t n; (n = recv(lab.peer, buf, sizeof buf, 0)) > 0;) got.emplace_back(buf, buf + n);
  CHECK_EQ(got.size(), size_t(1));
  // Its payload as sent (the replica gets it with the UDP checksum cleared).
  if (got.size() == 1) CHECK(got[0].size() == big.size() && std::equal(got[0].begin() + 28, got[0].end(), big.begin() + 28));
  CHECK_EQ(lab.ctx->counters.get(k_udp_resupplied), uint64_t(1));
  CHECK_EQ(lab.ctx->counters.get(k_udp_resupplied_fragments), uint64_t(pieces.size() + 1));  // the copy too
  CHECK_EQ(lab.ctx->counters.get(k_udp_reassembled), uint64_t(0));  // the mirror's reassembly untouched
}

int main() {
  run_test("the_primarys_first_datagram_opens_the_association", test_the_primarys_first_datagram_opens_the_association);
  run_test("the_replicas_first_datagram_opens_the_association", test_the_replicas_first_datagram_opens_the_association);
  run_test("media_to_a_relay_port_reaches_the_replicas_port", test_media_to_a_relay_port_reaches_the_replicas_port);
  run_test("relay_media_queued_before_the_takeover_leaves_translated", test_relay_media_queued_before_the_takeover_leaves_translated);
  run_test("a_segment_in_fragments_reaches_the_replica_whole", test_a_segment_in_fragments_reaches_the_replica_whole);
  run_test("a_frozen_replicas_answer_the_primary_never_sent_is_given_to_the_takeover",
           test_a_frozen_replicas_answer_the_primary_never_sent_is_given_to_the_takeover);
  run_test("request_waits_for_the_replicas_answer", test_request_waits_for_the_replicas_answer);
  run_test("pipelined_requests_are_not_held", test_pipelined_requests_are_not_held);
  run_test("fin_waits_for_the_replicas_answer", test_fin_waits_for_the_replicas_answer);
  run_test("window_update_reaches_the_replica", test_window_update_reaches_the_replica);
  run_test("probe_and_repeat_are_answered", test_probe_and_repeat_are_answered);
  run_test("replica_that_stops_short_is_given_up", test_replica_that_stops_short_is_given_up);
  run_test("replica_still_reading_is_not_stopped", test_replica_still_reading_is_not_stopped);
  run_test("memory_limit_sheds_the_largest_flow", test_memory_limit_sheds_the_largest_flow);
  run_test("memory_limit_keeps_the_light_flows", test_memory_limit_keeps_the_light_flows);
  run_test("replica_lag_is_timed_per_reply", test_replica_lag_is_timed_per_reply);
  run_test("max_lag_gives_up_the_largest_lagging_flow", test_max_lag_gives_up_the_largest_lagging_flow);
  run_test("a_stopped_replica_is_not_lag", test_a_stopped_replica_is_not_lag);
  run_test("a_gap_filled_in_part_gets_its_grace_again", test_a_gap_filled_in_part_gets_its_grace_again);
  run_test("a_different_answer_is_diverged_at_once", test_a_different_answer_is_diverged_at_once);
  run_test("the_same_answer_is_not_diverged", test_the_same_answer_is_not_diverged);
  run_test("only_a_later_ack_clears_a_capture_drop", test_only_a_later_ack_clears_a_capture_drop);
  run_test("drops_after_a_stall_suspect_the_flows_seen_before_it", test_drops_after_a_stall_suspect_the_flows_seen_before_it);
  run_test("a_flow_seen_mid_stream_keeps_the_primarys_edge", test_a_flow_seen_mid_stream_keeps_the_primarys_edge);
  run_test("an_unprotected_flow_that_ends_is_ended", test_an_unprotected_flow_that_ends_is_ended);
  run_test("a_reuse_implies_the_lost_last_ack", test_a_reuse_implies_the_lost_last_ack);
  run_test("a_primary_fin_not_repeated_implies_the_last_ack", test_a_primary_fin_not_repeated_implies_the_last_ack);
  run_test("a_repeated_syn_is_not_a_new_connection", test_a_repeated_syn_is_not_a_new_connection);
  run_test("an_expired_flow_hands_over_to_the_one_waiting", test_an_expired_flow_hands_over_to_the_one_waiting);
  run_test("an_icmp_error_reaches_the_replica", test_an_icmp_error_reaches_the_replica);
  run_test("a_datagram_reaches_the_replica", test_a_datagram_reaches_the_replica);
  run_test("a_fragmented_datagram_reaches_the_replica_whole", test_a_fragmented_datagram_reaches_the_replica_whole);
  run_test("a_large_datagram_resupplied_in_fragments_reaches_the_replica_whole",
           test_a_large_datagram_resupplied_in_fragments_reaches_the_replica_whole);
  return finish();
}
