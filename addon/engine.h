// The engine: owns the backup's kernel state (nft tables, NFQUEUE, TUN,
// capture) and the thread that runs the per-packet path.
//
// Call order (JS thread): construct, set_notify(), start(), then any of
// counters/latency reads, request_flow_stats(), events().take(); stop()
// (or the destructor) joins the thread and removes every kernel object.
// notify runs on the engine thread when events are due; it must only wake
// the JS side (ThreadSafeFunction), never touch the engine.
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <pthread.h>
#include <string>
#include <thread>
#include <vector>

#include "engine_context.h"
#include "incoming_capture.h"
#include "incoming_processor.h"
#include "outgoing_nfqueue.h"
#include "outgoing_nftables.h"
#include "outgoing_processor.h"
#include "recovery_active_mode.h"
#include "recovery_active_mode_kernel.h"
#include "recovery_takeover.h"

namespace t2cp {

struct EngineError {
  std::string code;     // stable: T2CP_CAPTURE, T2CP_TUN, T2CP_NFQUEUE, ...
  std::string message;  // one line: the problem and the fix
};

class Engine {
 public:
  explicit Engine(const EngineConfig& cfg);
  ~Engine();

  void set_notify(std::function<void()> fn) { notify_ = std::move(fn); }
  // All or nothing: on failure nothing stays installed.
  bool start(EngineError* err);
  void stop();
  bool running() const { return thread_.joinable(); }

  void request_flow_stats() { stats_requested_.store(true); wake(); }
  // The mirror port lost its link (the JS side watches it): every live flow
  // is suspect until a primary ack proves it lost nothing. Thread: JS.
  void mirror_lost() { mirror_lost_.store(true); wake(); }
  // JS took the pending events: the next batch may notify again.
  void events_taken() { notified_.store(false); }

  EngineContext& ctx() { return ctx_; }
  // Failure recovery: start the takeover (runs on the engine thread).
  bool request_takeover(const TakeoverConfig& cfg, std::string* err) {
    if (!running()) { *err = "the engine is not running"; return false; }
    if (!recovery_.request(cfg, err)) return false;
    wake();
    return true;
  }
  TakeoverReport takeover_report() const { return recovery_.report(); }
  // A client segment the gateway's traffic recorder resupplied (whole IPv4
  // packet), for the engine thread to feed like a mirrored one.
  // Thread: JS.
  void supply(std::vector<uint8_t> packet) {
    {
      std::lock_guard<std::mutex> g(supply_mu_);
      if (supplied_.size() >= kMaxSupplied) return;  // a flood: the gap's own timeout decides
      supplied_.push_back(std::move(packet));
    }
    wake();
  }
  // A manifest of the gateway recorder's records of the clients' datagrams
  // (kUdpRecordSize bytes each, numbered from first), for the engine thread's
  // UDP ledger. Thread: JS.
  void udp_records(uint64_t first, std::vector<uint8_t> records) {
    {
      std::lock_guard<std::mutex> g(supply_mu_);
      if (manifests_.size() >= kMaxManifests) return;  // the next manifest repeats nothing: counted lost there
      manifests_.push_back({first, std::move(records)});
    }
    wake();
  }
  bool removed_stale_table() const { return removed_stale_; }
  // Passes of the packet thread's loop (it wakes at least every kPollMs):
  // not advancing, the thread is stuck (the systemd watchdog stops being fed).
  uint64_t loops() const { return loops_.load(std::memory_order_relaxed); }
  // Whether the engine thread runs SCHED_FIFO (false if not asked or refused).
  bool realtime() const { return realtime_; }
  // Which translator a takeover would use: "kernel", "queue", or "" (no
  // takeover configured); and why the kernel's could not be used, if not.
  const char* active_translator() const;
  const std::string& kernel_fallback() const { return kernel_fallback_; }
  // After a takeover with the kernel translator: pin its links and maps
  // under dir so that the taken-over connections outlive this process; and
  // from then on stop() leaves the VIP in place. "" or why not. Thread: JS.
  std::string pin_translator(const std::string& dir) {
    if (!kernel_.ready()) return "the taken-over connections are translated in this process (the queue), not by the kernel";
    std::string err = kernel_.pin(dir);
    if (err.empty()) keep_vip_ = true;
    return err;
  }

 private:
  void run();
  void wake();
  void maybe_notify(uint64_t now_us);
  void emit_flow_stats();
  void publish_live_counts();

  EngineContext ctx_;
  IncomingProcessor incoming_;
  ActiveMode active_;
  OutgoingProcessor outgoing_;
  NftTables nft_;
  NfQueue nfq_;
  KernelTranslator kernel_;
  std::string kernel_fallback_;
  Capture capture_;
  FailureRecovery recovery_;
  std::thread thread_;
  int wake_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> loops_{0};
  bool keep_vip_ = false;  // the translator is pinned: the VIP stays with the connections
  std::atomic<bool> stats_requested_{false};
  std::atomic<bool> mirror_lost_{false};
  std::atomic<bool> notified_{false};
  std::function<void()> notify_;
  // Resupplied segments waiting for the engine thread; bounded (1 MiB of
  // requests in ~1 KiB pieces, times a few flows).
  static constexpr size_t kMaxSupplied = 8192;
  std::mutex supply_mu_;
  std::vector<std::vector<uint8_t>> supplied_;
  struct Manifest { uint64_t first; std::vector<uint8_t> records; };
  static constexpr size_t kMaxManifests = 256;
  std::vector<Manifest> manifests_;  // under supply_mu_
  bool udp_released_ = false;        // the UDP ledger let go at the takeover
  bool removed_stale_ = false;
  bool realtime_ = false;  // the packet thread runs SCHED_FIFO when not busy (run())
  bool set_realtime(pthread_t t, bool on);
};

}  // namespace t2cp
