#include "recovery_takeover.h"

#include <unistd.h>

#include <algorithm>
#include <vector>

namespace t2cp {
namespace {

// How long after step 5 the client-visible stall is measured: flows that get
// data from the new owner within it count, µs.
constexpr uint64_t kStallWindowUs = 2000000;

const EventReason kStepReason[kTakeoverSteps] = {EventReason::kStepFreeze, EventReason::kStepFinish,
                                                 EventReason::kStepActive, EventReason::kStepIpTakeover,
                                                 EventReason::kStepConnections};

}  // namespace

bool FailureRecovery::request(const TakeoverConfig& cfg, std::string* err) {
  std::lock_guard<std::mutex> g(mu_);
  if (requested_) {
    *err = "a takeover already ran on this engine";
    return false;
  }
  requested_ = true;
  cfg_ = cfg;
  report_.state = TakeoverReport::State::kRunning;
  report_.requested_us = realtime_us();
  return true;
}

TakeoverReport FailureRecovery::report() const {
  std::lock_guard<std::mutex> g(mu_);
  return report_;
}

void FailureRecovery::begin_step(int n, uint64_t now_us) {
  step_ = n;
  std::lock_guard<std::mutex> g(mu_);
  report_.step_start_us[n - 1] = now_us;
}

void FailureRecovery::end_step(int n, uint64_t now_us) {
  uint64_t start;
  {
    std::lock_guard<std::mutex> g(mu_);
    report_.step_end_us[n - 1] = now_us;
    start = report_.step_start_us[n - 1];
  }
  ctx_.events.emit_takeover(kStepReason[n - 1], now_us - start);
}

void FailureRecovery::fail(const std::string& why, uint64_t now_us) {
  {
    std::lock_guard<std::mutex> g(mu_);
    report_.state = TakeoverReport::State::kFailed;
    report_.error = why;
  }
  step_ = -1;
  ctx_.events.emit_takeover(EventReason::kTakeoverFailed, now_us - report_.requested_us);
}

// Every flow the replica can still complete has all captured client bytes
// acknowledged by it.
bool FailureRecovery::all_finished() {
  bool done = true;
  ctx_.flows.for_each([&](Flow& f) {
    if (!done || f.state == FlowState::kUnprotected || f.state == FlowState::kClosed) return;
    if (f.state == FlowState::kSynSeen) return;  // settled at the end of the step
    if (before(f.b_rcv_nxt, f.data.contig_end()) || f.data.has_out_of_order()) done = false;
  });
  return done;
}

void FailureRecovery::settle_unfinished() {
  uint32_t lost = 0, dropped = 0, unprotected = 0;
  std::vector<FlowKey> forget;
  ctx_.flows.for_each([&](Flow& f) {
    // Connections waiting for the replica to finish an older one on the same
    // key never reached the replica: lost if the primary answered them.
    for (Flow* n = f.successor.get(); n; n = n->successor.get()) {
      if (n->p_synack) {
        lost++;
        ctx_.counters.add(k_flows_unprotected);
        ctx_.events.emit(EventType::kUnprotected, EventReason::kTakeoverIncomplete, *n);
      } else {
        dropped++;
      }
    }
    f.successor.reset();
    if (f.state == FlowState::kUnprotected) { unprotected++; return; }
    if (f.state == FlowState::kSynSeen) {
      if (f.p_synack) {
        // The client has the primary's ISN, the replica never paired: lost.
        in_.make_unprotected(f, EventReason::kTakeoverIncomplete);
        lost++;
      } else {
        // Nobody answered the client yet: its next SYN opens a local
        // connection (the replica's half-open one answers it as its own).
        forget.push_back(f.key);
        dropped++;
      }
      return;
    }
    if (f.state != FlowState::kClosed && before(f.b_rcv_nxt, f.p_rcv_nxt)) {
      in_.lose_flow(f, EventReason::kTakeoverIncomplete, f.p_rcv_nxt - f.b_rcv_nxt);
      lost++;
    }
  });
  for (const FlowKey& k : forget) ctx_.flows.erase(k);
  std::lock_guard<std::mutex> g(mu_);
  report_.flows_lost = lost;
  report_.handshakes_dropped = dropped;
  report_.flows_unprotected = unprotected;
}

bool FailureRecovery::go_active(std::string* err) {
  bool in_kernel = kernel_.ready();
  uint32_t n = 0;
  uint64_t lag_total = 0, lag_max = 0;
  bool added = true;
  ctx_.flows.for_each([&](Flow& f) {
    if (!ActiveMode::can_take_over(f)) return;
    active_.enter(f);
    // The map holds max_flows entries: as many as the table.
    if (in_kernel) added = kernel_.add(f) && added;
    n++;
    uint32_t made = f.b_snd_nxt - f.seq_delta;  // the replica's snd_nxt in the primary's numbers
    if (after(f.p_snd_nxt, made)) {
      uint64_t lag = f.p_snd_nxt - made;
      lag_total += lag;
      lag_max = std::max(lag_max, lag);
    }
  });
  if (!added) {
    *err = "the kernel translator's flow map refused a flow";
    return false;
  }
  // The kernel has every flow before the queue rules go: no packet of a
  // taken-over flow leaves untranslated.
  if (!nft_.enter_active(in_kernel ? NftTables::ActiveRules::kNone : NftTables::ActiveRules::kQueueBoth, err))
    return false;
  if (in_kernel) active_.use_kernel(&kernel_);
  ctx_.mode = EngineMode::kActive;  // the mirror is ignored from now on (it shows a dead primary)
  std::lock_guard<std::mutex> g(mu_);
  report_.flows_taken_over = n;
  report_.translated_in_kernel = in_kernel;
  report_.replica_lag_bytes_total = lag_total;
  report_.replica_lag_bytes_max = lag_max;
  return true;
}

void FailureRecovery::finalize_stall() {
  std::vector<uint64_t> stalls;
  ctx_.flows.for_each([&](Flow& f) {
    if (f.active && f.first_active_data_us && f.p_last_data_us && f.first_active_data_us > f.p_last_data_us)
      stalls.push_back(f.first_active_data_us - f.p_last_data_us);
  });
  std::sort(stalls.begin(), stalls.end());
  {
    std::lock_guard<std::mutex> g(mu_);
    report_.stall_final = true;
    report_.stall_flows = uint32_t(stalls.size());
    report_.stall_us_median = stalls.empty() ? 0 : stalls[stalls.size() / 2];
    report_.stall_us_max = stalls.empty() ? 0 : stalls.back();
  }
  ctx_.events.emit_takeover(EventReason::kStallMeasured, stalls.empty() ? 0 : stalls[stalls.size() / 2]);
}

void FailureRecovery::poll(uint64_t now) {
  if (step_ == 0) {
    TakeoverConfig cfg;
    {
      std::lock_guard<std::mutex> g(mu_);
      if (!requested_) return;
      cfg = cfg_;
    }
    cfg_ = cfg;
    // 1. freeze
    begin_step(1, now);
    ctx_.mode = EngineMode::kFrozen;
    fed_at_freeze_ = ctx_.counters.get(k_inject_bytes);
    end_step(1, realtime_us());
    begin_step(2, realtime_us());
    finish_deadline_us_ = now + uint64_t(cfg_.finish_timeout_ms) * 1000;
    // Unless every replica has all it needs already, the loop feeds them and
    // poll() checks again next time.
  }
  if (step_ == 2) {
    if (!all_finished() && now < finish_deadline_us_) return;
    settle_unfinished();
    {
      std::lock_guard<std::mutex> g(mu_);
      report_.bytes_fed_while_finishing = ctx_.counters.get(k_inject_bytes) - fed_at_freeze_;
    }
    end_step(2, realtime_us());
    // 3. active mode
    begin_step(3, realtime_us());
    std::string err = conn_.open();
    if (err.empty()) go_active(&err);
    if (!err.empty()) return fail(err, realtime_us());
    end_step(3, realtime_us());
    // 4. IP takeover
    begin_step(4, realtime_us());
    err = ip_.add_vip(cfg_.vip_if, ctx_.cfg.vip);
    if (!err.empty()) return fail(err, realtime_us());
    if (ip_.send_garp()) ctx_.counters.add(k_garp_sent);
    garp_left_ = cfg_.garp_count > 0 ? cfg_.garp_count - 1 : 0;
    next_garp_us_ = realtime_us() + uint64_t(cfg_.garp_interval_ms) * 1000;
    end_step(4, realtime_us());
    // 5. connection takeover
    begin_step(5, realtime_us());
    uint32_t with_data = 0;
    uint64_t resent0 = ctx_.counters.get(k_resume_bytes);
    ctx_.flows.for_each([&](Flow& f) {
      if (!f.active) return;
      uint64_t before_bytes = ctx_.counters.get(k_resume_bytes);
      conn_.resume(f);
      if (ctx_.counters.get(k_resume_bytes) != before_bytes) with_data++;
    });
    uint64_t end = realtime_us();
    {
      std::lock_guard<std::mutex> g(mu_);
      report_.flows_resumed_with_data = with_data;
      report_.bytes_resent = ctx_.counters.get(k_resume_bytes) - resent0;
      report_.state = TakeoverReport::State::kDone;
    }
    end_step(5, end);
    ctx_.events.emit_takeover(EventReason::kTakeoverDone, end - report_.requested_us);
    step_ = 6;
    stall_due_us_ = end + kStallWindowUs;
    // The TUN goes, its VIP with it (the real interface holds the VIP
    // already), and the capture, off this thread (see the header).
    int tun_fd = ctx_.tun.release();
    int cap_fd = capture_.release();
    cleanup_ = std::thread([tun_fd, cap_fd] {
      if (cap_fd >= 0) close(cap_fd);
      if (tun_fd >= 0) close(tun_fd);
    });
    return;
  }
  if (step_ == 6) {
    if (garp_left_ && now >= next_garp_us_) {
      if (ip_.send_garp()) ctx_.counters.add(k_garp_sent);
      garp_left_--;
      next_garp_us_ = now + uint64_t(cfg_.garp_interval_ms) * 1000;
    }
    if (stall_due_us_ && now >= stall_due_us_) {
      finalize_stall();
      stall_due_us_ = 0;
    }
  }
}

}  // namespace t2cp
