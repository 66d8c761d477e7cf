#include "recovery_takeover.h"

#include <net/if.h>
#include <unistd.h>

#include <algorithm>
#include <bitset>
#include <vector>

#include "recovery_readiness.h"

namespace t2cp {
namespace {

// How long after step 5 the client-visible stall is measured: flows that get
// data from the new owner within it count, µs.
constexpr uint64_t kStallWindowUs = 2000000;

// Step 2 reads the capture until it is empty, but at least this long (the
// replicas take what the last frames fed them) and at most kDrainMaxUs (a
// mirror that keeps delivering: a planned switch, a primary still alive), µs.
constexpr uint64_t kDrainMinUs = 1000;
constexpr uint64_t kDrainMaxUs = 50000;
// A finishing flow whose replica has everything the primary acknowledged but
// not yet every byte held (a request just fed, its ACK delayed by the
// replica's TCP) goes active after this long anyway: the client sends the
// rest again, µs.
constexpr uint64_t kContinuableWaitUs = 10000;
// With the kernel translator, up to this many finishing flows get queue
// rules of their own (two each); more, and everything for the VIP is queued
// while they finish.
constexpr size_t kMaxFlowRules = 256;
// Step 6 looks at the finishing flows at most this often, µs.
constexpr uint64_t kCatchUpPassUs = 500;
// The replicas' unacknowledged output resent to the clients (least first):
// up to this much within step 5, then this much per pass of the engine loop
// (about 3 ms of a veth's sending each), bytes.
constexpr uint32_t kResendStepBytes = 64 << 10;
constexpr uint32_t kResendPassBytes = 64 << 10;

const EventReason kStepReason[kTakeoverSteps] = {EventReason::kStepFreeze,      EventReason::kStepFinish,
                                                 EventReason::kStepActive,      EventReason::kStepIpTakeover,
                                                 EventReason::kStepConnections, EventReason::kStepCatchUp};

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

bool FailureRecovery::all_complete() {
  bool done = true;
  ctx_.flows.for_each([&](Flow& f) {
    if (!done || !f.finishing()) return;
    Readiness r = readiness(f);
    if (r == Readiness::kContinuable || r == Readiness::kBehind) done = false;
  });
  return done;
}

bool FailureRecovery::activate(Flow& f) {
  if (!phase_can_move(f.phase, TakeoverPhase::kActive)) return false;
  active_.enter(f);
  if (kernel_.ready()) {
    // The map holds max_flows entries: as many as the table. A flow it
    // refuses would go untranslated: it cannot continue.
    f.in_kernel = kernel_.add(f);
    if (!f.in_kernel) {
      f.phase = TakeoverPhase::kFinishing;
      give_up(f, EventReason::kTakeoverIncomplete);
      return false;
    }
  }
  uint32_t made = f.replica.snd_nxt - f.seq_delta;  // the replica's snd_nxt in the primary's numbers
  uint64_t lag = after(f.primary.snd_nxt, made) ? f.primary.snd_nxt - made : 0;
  std::lock_guard<std::mutex> g(mu_);
  report_.flows_taken_over++;
  report_.replica_lag_bytes_total += lag;
  report_.replica_lag_bytes_max = std::max(report_.replica_lag_bytes_max, lag);
  return true;
}

void FailureRecovery::give_up(Flow& f, EventReason why) {
  if (f.state == FlowState::kSynchronised || f.state == FlowState::kClosing) {
    in_.lose_flow(f, why, after(f.primary.rcv_nxt, f.replica.rcv_nxt) ? f.primary.rcv_nxt - f.replica.rcv_nxt : 0);
  } else if (f.state != FlowState::kUnprotected) {
    in_.make_unprotected(f, why);
  }
  f.phase = TakeoverPhase::kReset;
  {
    std::lock_guard<std::mutex> g(mu_);
    report_.flows_lost++;
  }
  // Before step 5 the VIP is not here yet: the client is reset then.
  if (step_ < 5) reset_due_.push_back(f.key);
  else if (conn_.reset_client(f)) { std::lock_guard<std::mutex> g(mu_); report_.clients_reset++; }
}

bool FailureRecovery::settle(std::string* err) {
  uint32_t dropped = 0, unprotected = 0, lost_waiting = 0;
  std::vector<FlowKey> forget;
  std::vector<Flow*> lost, complete;
  ctx_.flows.for_each([&](Flow& f) {
    // Connections waiting for the replica to finish an older one on the same
    // key never reached the replica: lost if the primary answered them
    // (their clients are not reset: the key is the older connection's).
    for (Flow* n = f.successor.get(); n; n = n->successor.get()) {
      if (n->primary.synack) {
        lost_waiting++;
        ctx_.counters.add(k_flows_unprotected);
        ctx_.events.emit(EventType::kUnprotected, EventReason::kTakeoverIncomplete, *n);
      } else {
        dropped++;
      }
    }
    f.successor.reset();
    if (!f.finishing()) {
      if (f.ended) return;  // over before the takeover: nothing to continue, nobody to reset
      // Unprotected before the takeover: its client is reset at step 5 too.
      unprotected++;
      if (f.state == FlowState::kUnprotected) reset_due_.push_back(f.key);
      return;
    }
    switch (readiness(f)) {
      case Readiness::kComplete: complete.push_back(&f); break;
      case Readiness::kContinuable:
      case Readiness::kBehind: finishing_.push_back(f.key); break;
      case Readiness::kLost: lost.push_back(&f); break;
      case Readiness::kUnanswered:
        // Nobody answered the client yet: its next SYN opens a local
        // connection (the replica's half-open one answers it as its own).
        f.phase = TakeoverPhase::kForgotten;
        forget.push_back(f.key);
        dropped++;
        break;
      case Readiness::kOver:
      case Readiness::kUnprotected:
        f.phase = TakeoverPhase::kForgotten;
        break;
    }
  });
  for (Flow* f : lost) give_up(*f, EventReason::kTakeoverIncomplete);
  for (Flow* f : complete) activate(*f);
  for (const FlowKey& k : forget) ctx_.flows.erase(k);
  {
    std::lock_guard<std::mutex> g(mu_);
    report_.flows_lost += lost_waiting;
    report_.handshakes_dropped = dropped;
    report_.flows_unprotected = unprotected;
    report_.flows_catching_up = uint32_t(finishing_.size());
    report_.translated_in_kernel = kernel_.ready();
  }
  // The kernel has every active flow before the queue rules change: no
  // packet of a taken-over flow leaves untranslated.
  if (!apply_rules(err)) return false;
  if (kernel_.ready()) active_.use_kernel(&kernel_);
  ctx_.mode = finishing_.empty() ? EngineMode::kActive : EngineMode::kCatchingUp;
  return true;
}

bool FailureRecovery::apply_rules(std::string* err) {
  using R = NftTables::ActiveRules;
  std::vector<NftFlow> flows;
  R rules = R::kQueueBoth;  // the queue translates: it sees everything
  if (kernel_.ready()) {
    // The finishing flows' packets, and only theirs, are queued to us.
    if (finishing_.empty()) rules = R::kNone;
    else if (finishing_.size() <= kMaxFlowRules) rules = R::kQueueFlows;
    if (rules == R::kQueueFlows)
      for (const FlowKey& k : finishing_) flows.push_back({k.client_ip, k.client_port, k.server_port});
  } else if (ctx_.mode != EngineMode::kFrozen) {
    return true;  // the queue translator's rules are in place already
  }
  if (!relay_taken_) {
    relay_taken_ = true;
    // Each client of a relay port the two copies paired keeps the primary's port it was told;
    // a pair of equal ports needs nothing.
    std::bitset<65536> associated;
    ctx_.udp.each([&](const FlowKey& k, const UdpAssociation&) {
      if (!ctx_.relay.relay(k.server_port)) return;
      associated.set(k.server_port);
      const uint16_t replica = ctx_.relay.replica_of(k.server_port);
      if (replica && replica != k.server_port) relay_.push_back({k.client_ip, k.client_port, k.server_port, replica});
    });
    ctx_.counters.set(k_udp_relay_translated, relay_.size());
    const size_t without_media = ctx_.relay.recent_pairs_without_media(associated, realtime_us(), kRingingUs);
    std::lock_guard<std::mutex> g(mu_);
    report_.relay_translated = uint32_t(relay_.size());
    report_.relay_without_media = uint32_t(without_media);
  }
  rules_for_ = finishing_.size();
  return nft_.enter_active(rules, vip_ifindex_, flows, relay_, err);
}

bool FailureRecovery::catch_up(uint64_t now) {
  bool deadline = now >= finish_deadline_us_;
  size_t kept = 0;
  for (size_t i = 0; i < finishing_.size(); i++) {
    Flow* f = ctx_.flows.find(finishing_[i]);
    if (!f || !f->finishing()) continue;
    bool resume = false;
    switch (readiness(*f)) {
      case Readiness::kComplete:
        resume = activate(*f);
        break;
      case Readiness::kContinuable:
        if (!f->continuable_us) f->continuable_us = now;
        if (deadline || now - f->continuable_us >= kContinuableWaitUs) resume = activate(*f);
        break;
      case Readiness::kBehind:
        f->continuable_us = 0;
        if (deadline) give_up(*f, EventReason::kTakeoverIncomplete);
        break;
      case Readiness::kLost:
      case Readiness::kUnprotected:  // a gap, a full buffer, the replica reset it, ...
        give_up(*f, EventReason::kTakeoverIncomplete);
        break;
      case Readiness::kUnanswered:
      case Readiness::kOver:
        f->phase = TakeoverPhase::kForgotten;
        break;
    }
    if (resume) {
      bool with_data = conn_.resume(*f) > 0;
      std::lock_guard<std::mutex> g(mu_);
      report_.flows_caught_up++;
      report_.flows_resumed_with_data += with_data;
    }
    if (f->finishing()) finishing_[kept++] = finishing_[i];
  }
  finishing_.resize(kept);
  return finishing_.empty();
}

bool FailureRecovery::leave_catch_up(std::string* err) {
  if (!apply_rules(err)) return false;
  ctx_.mode = EngineMode::kActive;  // the mirror is ignored from now on (it shows a dead primary)
  // The TUN goes, its VIP with it (the real interface holds the VIP
  // already), and the capture, off this thread (see the header).
  int tun_fd = ctx_.tun.release();
  int cap_fd = capture_.release();
  cleanup_ = std::thread([tun_fd, cap_fd] {
    if (cap_fd >= 0) close(cap_fd);
    if (tun_fd >= 0) close(tun_fd);
  });
  return true;
}

void FailureRecovery::finalize_stall() {
  std::vector<uint64_t> stalls;
  ctx_.flows.for_each([&](Flow& f) {
    if (f.active() && f.first_active_data_us && f.primary.last_data_us && f.first_active_data_us > f.primary.last_data_us)
      stalls.push_back(f.first_active_data_us - f.primary.last_data_us);
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

void FailureRecovery::resend(uint32_t budget) {
  if (!conn_.pending()) return;
  conn_.pump(budget);
  std::lock_guard<std::mutex> g(mu_);
  report_.bytes_resent = ctx_.counters.get(k_resume_bytes) - resent_at_step5_;
}

void FailureRecovery::after_ip_takeover(uint64_t now) {
  if (garp_left_ && now >= next_garp_us_) {
    if (ip_.send_garp()) ctx_.counters.add(k_garp_sent);
    garp_left_--;
    next_garp_us_ = now + uint64_t(cfg_.garp_interval_ms) * 1000;
  }
}

void FailureRecovery::poll(uint64_t now) {
  // What step 5 left to resend, a budget per pass of the engine loop.
  if (step_ >= 6) resend(kResendPassBytes);
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
    freeze_us_ = now;
    ctx_.mode = EngineMode::kFrozen;
    fed_at_freeze_ = ctx_.counters.get(k_inject_bytes);
    ctx_.flows.for_each([&](Flow& f) {
      if (f.state != FlowState::kUnprotected) f.phase = TakeoverPhase::kFinishing;
    });
    end_step(1, realtime_us());
    begin_step(2, realtime_us());
    drain_deadline_us_ = now + kDrainMaxUs;
    finish_deadline_us_ = now + uint64_t(cfg_.finish_timeout_ms) * 1000;
    // The loop reads the capture and feeds; poll() looks again next time.
  }
  if (step_ == 2) {
    bool drained = ctx_.capture_idle && now - freeze_us_ >= kDrainMinUs;
    if (!drained && now < drain_deadline_us_ && !all_complete()) return;
    {
      std::lock_guard<std::mutex> g(mu_);
      report_.bytes_fed_while_finishing = ctx_.counters.get(k_inject_bytes) - fed_at_freeze_;
    }
    end_step(2, realtime_us());
    // 3. active mode, flow by flow
    begin_step(3, realtime_us());
    vip_ifindex_ = if_nametoindex(cfg_.vip_if.c_str());
    std::string err = conn_.open();
    if (err.empty()) settle(&err);
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
    uint32_t with_data = 0, resets = 0;
    resent_at_step5_ = ctx_.counters.get(k_resume_bytes);
    ctx_.flows.for_each([&](Flow& f) {
      if (f.active() && conn_.resume(f) > 0) with_data++;
    });
    for (const FlowKey& k : reset_due_) {
      Flow* f = ctx_.flows.find(k);
      if (f && conn_.reset_client(*f)) resets++;
    }
    reset_due_.clear();
    // The replica's answers to what the dying primary never got (its copy got them from the
    // recorder), dropped as the primary's until now.
    ctx_.udp_compare.take_unanswered([&](const FlowKey& k, const uint8_t* payload, uint32_t len, bool whole) {
      ctx_.counters.add(whole && conn_.send_datagram(k, payload, len) ? k_udp_takeover_sent : k_udp_takeover_dropped);
    });
    // The ACKs and resets are out; the data, the least first, as far as one
    // budget goes — the rest in the background (step 6 on).
    conn_.pump(kResendStepBytes);
    uint64_t end = realtime_us();
    {
      std::lock_guard<std::mutex> g(mu_);
      report_.flows_resumed_with_data = with_data;
      report_.bytes_resent = ctx_.counters.get(k_resume_bytes) - resent_at_step5_;
      report_.clients_reset += resets;
      report_.state = TakeoverReport::State::kDone;
    }
    end_step(5, end);
    ctx_.events.emit_takeover(EventReason::kTakeoverDone, end - report_.requested_us);
    stall_due_us_ = end + kStallWindowUs;
    // 6. catch-up, in the background
    begin_step(6, end);
    step_ = 6;
    next_catch_up_us_ = 0;
  }
  if (step_ == 6) {
    after_ip_takeover(now);
    if (now < next_catch_up_us_) return;
    next_catch_up_us_ = now + kCatchUpPassUs;
    std::string err;
    bool none_left = catch_up(now);
    // Fewer flows finish: the queue rules follow (kernel translator).
    if (!none_left && kernel_.ready() && finishing_.size() < rules_for_ && !apply_rules(&err))
      return fail(err, realtime_us());
    if (!none_left) return;
    if (!leave_catch_up(&err)) return fail(err, realtime_us());
    end_step(6, realtime_us());
    step_ = 7;
  }
  if (step_ == 7) {
    after_ip_takeover(now);
    if (stall_due_us_ && now >= stall_due_us_) {
      finalize_stall();
      stall_due_us_ = 0;
    }
  }
}

}  // namespace t2cp
