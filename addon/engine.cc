#include "engine.h"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace t2cp {

// Poll timeout, ms: bounds how late timers and event batches can be.
constexpr int kPollMs = 5;
// Timer pass over every flow (re-injection, probes, expiry), µs.
constexpr uint64_t kTickUs = 20000;
// Capture::stats() refresh for the kernel drop counters, µs: often, because a
// new drop puts the flows active just before under suspicion (on_capture_drops).
constexpr uint64_t kStatsUs = 100000;
// How often the open flows are counted (protected, unprotected, compared), µs.
constexpr uint64_t kLiveCountsUs = 1000000;
// Frames taken from the capture socket per dispatch call; the loop alternates
// with the queue so neither side starves the other.
constexpr int kCaptureBatch = 512;
// The real-time packet thread's duty: measured over windows of kDutyWindowUs,
// it turns ordinary after a window where it used more than kDutyMaxPct % of
// its CPU, and real-time again after one under kDutyMinPct % (see run()).
constexpr uint64_t kDutyWindowUs = 10000;
constexpr uint64_t kDutyMaxPct = 50;
constexpr uint64_t kDutyMinPct = 25;

// CPU time of the calling thread, µs.
static uint64_t thread_cpu_us() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return uint64_t(ts.tv_sec) * 1000000u + uint64_t(ts.tv_nsec) / 1000u;
}

Engine::Engine(const EngineConfig& cfg)
    : ctx_(cfg), incoming_(ctx_), active_(ctx_), outgoing_(ctx_, incoming_, active_),
      recovery_(ctx_, incoming_, active_, kernel_, nfq_, nft_, capture_) {}

Engine::~Engine() { stop(); }

bool Engine::start(EngineError* err) {
  if (running()) return true;
  auto fail = [&](const char* code, std::string msg) {
    err->code = code;
    err->message = std::move(msg);
    capture_.close();
    ctx_.tun.close();
    kernel_.close();
    nfq_.close();
    nft_.remove();
    return false;
  };
  // Order matters: the ARP guard and the output queue rules exist before the
  // VIP becomes local (TUN), so the backup never answers for the VIP and its
  // replica never sends a packet unobserved.
  NftConfig nc{ctx_.cfg.nft_table, ctx_.cfg.vip, ctx_.cfg.ports, ctx_.cfg.udp_ports, ctx_.cfg.queue_num};
  std::string msg;
  switch (nft_.install(nc, &msg)) {
    case NftStatus::kOk: break;
    case NftStatus::kBusy: return fail("T2CP_BUSY", msg);
    case NftStatus::kUnsupported: return fail("T2CP_KERNEL_FEATURE", msg);
    case NftStatus::kPermission: return fail("T2CP_PERMISSION", msg);
    default: return fail("T2CP_NFTABLES", msg);
  }
  removed_stale_ = nft_.removed_stale();
  msg = nfq_.open(ctx_.cfg.queue_num, ctx_.cfg.queue_max_len);
  if (!msg.empty()) return fail("T2CP_NFQUEUE", msg);
  msg = ctx_.tun.open(ctx_.cfg.tun_name, ctx_.cfg.vip);
  if (!msg.empty()) return fail("T2CP_TUN", msg);
  CaptureConfig cc{ctx_.cfg.mirror_if, ctx_.cfg.vip, ctx_.cfg.ports, ctx_.cfg.capture_buffer, false, {}, ctx_.cfg.udp_ports, {}};
  // Only a byte-for-byte comparison reads the primary's payload.
  for (size_t i = 0; i < ctx_.cfg.ports.size() && i < ctx_.cfg.divergence.size(); i++)
    if (ctx_.cfg.divergence[i] == DivergencePolicy::kStrict) cc.whole_output_ports.push_back(ctx_.cfg.ports[i]);
  for (uint16_t p : ctx_.cfg.udp_ports)
    if (ctx_.udp_divergence_of(p) != DivergencePolicy::kOff) cc.udp_output_ports.push_back(p);
  msg = capture_.open(cc);
  if (!msg.empty()) return fail(msg.find("does not exist") != std::string::npos ? "T2CP_NO_INTERFACE" : "T2CP_CAPTURE", msg);
  // The active-mode translator is loaded (verified by the kernel) and
  // attached now, with no flow: the takeover only fills its map.
  using AT = EngineConfig::ActiveTranslator;
  if (!ctx_.cfg.active_if.empty() && ctx_.cfg.active_translator != AT::kQueue) {
    msg = kernel_.open(ctx_.cfg.active_object, ctx_.cfg.active_if, ctx_.cfg.vip, ctx_.cfg.max_flows);
    if (!msg.empty() && ctx_.cfg.active_translator == AT::kKernel) return fail("T2CP_KERNEL_FEATURE", msg + " (or --active-mode queue)");
    kernel_fallback_ = msg;
  }
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) return fail("T2CP_SYSTEM", "eventfd failed");
  stopping_.store(false);
  thread_ = std::thread([this] { run(); });
  // Named for top -H, perf and ps: the per-packet path is this thread.
  pthread_setname_np(thread_.native_handle(), "t2cp-engine");
  // A woken SCHED_FIFO thread preempts ordinary tasks at once: without it, a
  // busy host (the replica's own service competes for the same CPUs) delays
  // the per-packet path by whole scheduler slices (conntrackd's Scheduler
  // option, keepalived's vrrp_rt_priority). The thread sleeps in poll() when
  // idle; busy without a pause it turns ordinary (run()).
  if (ctx_.cfg.rt_priority > 0) realtime_ = set_realtime(thread_.native_handle(), true);
  return true;
}

bool Engine::set_realtime(pthread_t t, bool on) {
  sched_param sp{};
  sp.sched_priority = on ? static_cast<int>(ctx_.cfg.rt_priority) : 0;
  return pthread_setschedparam(t, on ? SCHED_FIFO : SCHED_OTHER, &sp) == 0;
}

void Engine::stop() {
  if (thread_.joinable()) {
    stopping_.store(true);
    wake();
    thread_.join();
  }
  if (wake_fd_ >= 0) close(wake_fd_);
  wake_fd_ = -1;
  // Reverse order of start: stop observing, drop the VIP, then the rules.
  // After a takeover the VIP added to the real interface goes too: without
  // the translation nothing could serve the taken-over flows anyway; unless
  // the translator is pinned (pin_translator): then both stay.
  capture_.close();
  ctx_.tun.close();
  if (!keep_vip_) recovery_.release_vip();
  kernel_.close();
  nfq_.close();
  nft_.remove();
}

const char* Engine::active_translator() const {
  if (ctx_.cfg.active_if.empty()) return "";
  return kernel_.ready() ? "kernel" : "queue";
}

void Engine::wake() {
  if (wake_fd_ < 0) return;
  uint64_t one = 1;
  ssize_t r = write(wake_fd_, &one, sizeof one);
  (void)r;
}

void Engine::maybe_notify(uint64_t now_us) {
  size_t n = ctx_.events.pending();
  if (n == 0 || notified_.load()) return;
  if (!ctx_.events.urgent() && now_us - ctx_.events.oldest_us() < uint64_t(ctx_.cfg.event_batch_ms) * 1000 && n < 1024)
    return;
  notified_.store(true);
  if (notify_) notify_();
}

void Engine::emit_flow_stats() {
  ctx_.flows.for_each([&](Flow& f) {
    if (f.state != FlowState::kUnprotected) ctx_.events.emit(EventType::kStats, EventReason::kNone, f);
  });
}

// What is open now, once a second: the flows protected (and of them those
// whose replica lags past --lag-warn) and unprotected (the detector's view of
// the service, through the backup's heartbeat), and, as
// the determinism report counts a flow identical only once it closed, the
// long-lived ones (a pool's connection, a session) compared and alike so far.
void Engine::publish_live_counts() {
  for (auto& kv : ctx_.compare_ports) kv.second->open_count = kv.second->open_count_bytes = 0;
  uint64_t protected_now = 0, unprotected_now = 0, lagging_now = 0;
  ctx_.flows.for_each([&](Flow& f) {
    if (f.state == FlowState::kUnprotected && !f.ended) unprotected_now++;
    if (f.state != FlowState::kSynchronised && f.state != FlowState::kClosing) return;
    protected_now++;
    if (f.lag_reported) lagging_now++;
    if (f.divergence == DivergencePolicy::kOff || f.compare.ended()) return;
    if (EngineContext::ComparePort* port = ctx_.compare_port(f.key.server_port)) {
      port->open_count++;
      port->open_count_bytes += f.compare.compared_bytes();
    }
  });
  ctx_.counters.set(k_flows_protected_now, protected_now);
  ctx_.counters.set(k_flows_unprotected_now, unprotected_now);
  ctx_.counters.set(k_flows_lagging_now, lagging_now);
  for (auto& kv : ctx_.compare_ports) {
    kv.second->open.store(kv.second->open_count, std::memory_order_relaxed);
    kv.second->open_bytes.store(kv.second->open_count_bytes, std::memory_order_relaxed);
  }
}

// Thread: engine.
void Engine::run() {
  pollfd fds[3] = {
      {capture_.fd(), POLLIN, 0},
      {nfq_.fd(), POLLIN, 0},
      {wake_fd_, POLLIN, 0},
  };
  uint64_t next_tick = realtime_us() + kTickUs, next_stats = 0, next_live_counts = 0;
  uint64_t drops_checked_us = realtime_us();  // when the capture's drop counter was last read
  uint64_t last_work_us = 0;
  // Real time buys a prompt wake-up, never a CPU: a thread that used more
  // than half its CPU over the last window (a connection storm, a saturating
  // upload) turns ordinary and shares the CPU fairly with the replica's
  // service — which must keep up too — until its load falls. Real-time
  // throughout, it left that service the kernel's 5 % and replicas fell behind.
  bool rt_now = realtime_;
  uint64_t window_start_us = realtime_us(), window_cpu_us = thread_cpu_us();
  while (!stopping_.load(std::memory_order_relaxed)) {
    // Busy-poll for a moment after work before sleeping: a flow's packets
    // come in bursts (the replica answers within microseconds, the mirror
    // delivers the primary's answer just after), and every sleep/wake pair
    // costs far more than the spin, above all on virtual CPUs.
    bool spin = ctx_.cfg.busy_poll_us > 0 && realtime_us() - last_work_us < ctx_.cfg.busy_poll_us;
    // Pumps carried over from the last pass, a takeover's resend under way.
    bool due = !ctx_.dirty.empty() || !ctx_.carry.empty() || recovery_.busy();
    if (realtime_) {
      uint64_t t = realtime_us();
      if (t - window_start_us >= kDutyWindowUs) {
        uint64_t cpu = thread_cpu_us();
        uint64_t pct = (cpu - window_cpu_us) * 100 / (t - window_start_us);
        if (rt_now && pct > kDutyMaxPct && set_realtime(pthread_self(), false)) {
          rt_now = false;
          ctx_.counters.add(k_realtime_yields);
        } else if (!rt_now && pct < kDutyMinPct) {
          rt_now = set_realtime(pthread_self(), true);
        }
        window_start_us = t;
        window_cpu_us = cpu;
      }
    }
    loops_.fetch_add(1, std::memory_order_relaxed);
    int rc = poll(fds, 3, spin || due ? 0 : kPollMs);
    if (rc > 0 && (fds[2].revents & POLLIN)) {
      uint64_t v;
      ssize_t r = read(wake_fd_, &v, sizeof v);
      (void)r;
    }
    // Resupplied client segments (gaps the capture left), fed as captured.
    std::vector<std::vector<uint8_t>> supplied;
    std::vector<Manifest> manifests;
    {
      std::lock_guard<std::mutex> g(supply_mu_);
      supplied.swap(supplied_);
      manifests.swap(manifests_);
    }
    for (const Manifest& m : manifests) incoming_.on_udp_records(m.first, m.records.data(), m.records.size() / kUdpRecordSize);
    for (const auto& p : supplied) incoming_.on_resupplied(p.data(), p.size());
    // Drain both sources; the replica's output first, so acks and windows
    // are current when captured client data is pumped.
    for (int round = 0; round < 64; round++) {
      uint64_t enobufs = 0;
      int q = nfq_.receive(&OutgoingProcessor::nfqueue_callback, &outgoing_, &enobufs);
      if (enobufs) ctx_.counters.add(k_nfqueue_enobufs, enobufs);
      int m = ctx_.mode == EngineMode::kActive
                  ? 0
                  : capture_.dispatch(kCaptureBatch, &IncomingProcessor::capture_callback, &incoming_);
      ctx_.capture_idle = m <= 0;
      // Latency is sampled only for packets served in the pass that captured
      // them: what waits on purpose (for a SYN-ACK, the replica's window or
      // its output) is not interceptor latency.
      ctx_.drain_dirty([&](Flow& f) {
        incoming_.pump(f);
        f.pending_capture_ns = 0;
      });
      if (!ctx_.promote.empty()) incoming_.promote_waiting();
      bool carried = !ctx_.carry.empty();
      ctx_.carry_to_dirty();
      if (q <= 0 && m <= 0 && !carried) break;
      last_work_us = realtime_us();
    }
    uint64_t now = realtime_us();
    recovery_.poll(now);
    if (ctx_.mode != EngineMode::kReplicating && !udp_released_) {
      incoming_.release_udp(now);  // the mirror shows nothing more worth waiting for
      udp_released_ = true;
    }
    if (ctx_.mode == EngineMode::kActive) fds[0].fd = -1;  // the capture is not read any more
    if (now >= next_tick) {
      // While catching up both run: each skips the other's flows.
      if (ctx_.mode == EngineMode::kActive || ctx_.mode == EngineMode::kCatchingUp) active_.on_tick(now);
      if (ctx_.mode != EngineMode::kActive) {
        incoming_.on_tick(now);
        ctx_.drain_dirty([&](Flow& f) { incoming_.pump(f); });
        if (!ctx_.promote.empty()) incoming_.promote_waiting();
      }
      if (!ctx_.cfg.udp_ports.empty()) incoming_.udp_tick(now);
      next_tick = now + kTickUs;
    }
    if (now >= next_stats) {
      uint64_t kd, id;
      if (ctx_.mode != EngineMode::kActive && capture_.stats(&kd, &id)) {
        if (kd > ctx_.counters.get(k_capture_kernel_drops)) incoming_.on_capture_drops(now, drops_checked_us);
        drops_checked_us = now;
        ctx_.counters.set(k_capture_kernel_drops, kd);
        ctx_.counters.set(k_capture_if_drops, id);
      }
      uint64_t full;
      if (nfq_.kernel_drops(&full)) ctx_.counters.set(k_nfqueue_queue_full, full);
      ctx_.counters.set(k_buffered_bytes, ctx_.stream_memory.used);
      next_stats = now + kStatsUs;
    }
    if (now >= next_live_counts && ctx_.mode == EngineMode::kReplicating) {
      publish_live_counts();
      next_live_counts = now + kLiveCountsUs;
    }
    if (stats_requested_.exchange(false)) emit_flow_stats();
    if (mirror_lost_.exchange(false) && ctx_.mode == EngineMode::kReplicating) incoming_.on_mirror_lost(realtime_us());
    maybe_notify(now);
  }
}

}  // namespace t2cp
