// Failure recovery at the backup (paper 001): the takeover as a numbered,
// timed state machine run on the engine thread, in a fixed order
// (keepalived's vrrp_state_become_master habit). It has no global barrier:
// each flow moves through its own phases (recovery_flow_phase.h) and goes
// active as soon as its replica is shown able to continue it
// (recovery_readiness.h); the engine serves those while the others catch up.
//
//   1 freeze       no new flow is replicated (a SYN now belongs to the new
//                  owner's stack); the replica's output is still dropped, so
//                  nothing is answered twice. Every flow starts finishing.
//   2 finish       the mirror frames captured before the failure are read
//                  and fed (until the capture is empty, at most
//                  kDrainMaxUs); meanwhile the replicas take what they are
//                  given. No wait beyond that for any replica.
//   3 active       each flow is judged: complete -> active (the kernel's map
//                  gets it, or the queue translates it); a handshake the
//                  primary answered but the replica never paired -> reset;
//                  nobody answered -> forgotten; the rest keep finishing. The
//                  table stops hiding the VIP from ARP; while flows finish it
//                  queues their packets (with the kernel translator: only
//                  theirs) so that their clients' segments still feed their
//                  replicas, and their replicas' output is dropped.
//   4 ip takeover  VIP/32 on the real interface, gratuitous ARP now and
//                  garp_count-1 more times every garp_interval_ms.
//   5 connections  every active flow resumes (recovery_connection_takeover):
//                  its ACK now, the replica's unacknowledged output the
//                  least first, within a budget, the rest in the background;
//                  every client whose flow cannot continue is reset now.
//   6 catch-up     (background) each finishing flow goes active once its
//                  replica is complete — or continuable for kContinuableWaitUs
//                  — and is reset once its replica lost what it needs, or at
//                  finish_timeout_ms after step 1. When none is left, the
//                  queue rules go (kernel translator), the TUN and the capture
//                  are closed on a thread of their own: unregistering the TUN
//                  device takes tens of ms, which the engine thread (now
//                  translating packets) must not wait for.
//
// Each step's start and end are recorded (CLOCK_REALTIME µs) and reported
// as an event; the report is read by JS through report().
//
// Call order: request() from the JS thread; poll() on the engine thread
// each loop; report() from any thread.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine_context.h"
#include "incoming_capture.h"
#include "incoming_processor.h"
#include "outgoing_nfqueue.h"
#include "outgoing_nftables.h"
#include "recovery_active_mode.h"
#include "recovery_connection_takeover.h"
#include "recovery_flow_phase.h"
#include "recovery_ip_takeover.h"

namespace t2cp {

struct TakeoverConfig {
  std::string vip_if;             // the real interface that gets the VIP
  uint32_t finish_timeout_ms = 2000;  // a flow still finishing this long after step 1 is reset
  uint32_t garp_count = 5;
  uint32_t garp_interval_ms = 20;
};

constexpr int kTakeoverSteps = 6;
// How long a call may ring: a proxy gives up an INVITE no one answered after
// 3 minutes (RFC 3261, Timer C). A relay port paired that recently with no
// media seen is taken for a call still ringing at the takeover.
constexpr uint64_t kRingingUs = 180000000;

struct TakeoverReport {
  enum class State : uint8_t { kIdle, kRunning, kDone, kFailed } state = State::kIdle;
  std::string error;
  uint64_t requested_us = 0;
  uint64_t step_start_us[kTakeoverSteps] = {}, step_end_us[kTakeoverSteps] = {};
  uint32_t flows_taken_over = 0;      // active: at step 3, or later while catching up
  uint32_t flows_caught_up = 0;       // ... of which went active during step 6
  uint32_t flows_catching_up = 0;     // still finishing when step 5 ended
  bool translated_in_kernel = false;  // by recovery_active_mode.bpf.c, else the queue
  uint32_t flows_lost = 0;            // protected, but the replica could not continue them: reset
  uint32_t clients_reset = 0;         // clients sent a RST at takeover (lost or unprotected flows)
  uint32_t flows_unprotected = 0;     // known unprotected when it began
  uint32_t handshakes_dropped = 0;    // not yet paired: the client's SYN goes to the new owner
  uint32_t relay_translated = 0;      // associations of a media relay's ports, translated by the kernel
  uint32_t relay_without_media = 0;   // relay ports paired within kRingingUs with no association: not translated
  uint32_t flows_resumed_with_data = 0;  // at step 5 or catching up: had output to resend
  uint64_t bytes_resent = 0;             // so far (the resend goes on in the background)
  // Server bytes the primary had sent that the replica had not produced yet:
  // the clients get no new byte on such a flow until the new owner has made
  // them again (the deterministic service replays them).
  uint64_t replica_lag_bytes_total = 0, replica_lag_bytes_max = 0;
  uint64_t bytes_fed_while_finishing = 0;
  // Client-visible stall per taken-over flow that got data after the
  // takeover within kStallWindowUs: the primary's last data segment (mirror)
  // to our first one. Computed once, kStallWindowUs after step 5.
  bool stall_final = false;
  uint32_t stall_flows = 0;
  uint64_t stall_us_median = 0, stall_us_max = 0;
};

class FailureRecovery {
 public:
  FailureRecovery(EngineContext& ctx, IncomingProcessor& in, ActiveMode& active, KernelTranslator& kernel,
                  NfQueue& nfq, NftTables& nft, Capture& capture)
      : ctx_(ctx), in_(in), active_(active), kernel_(kernel), nfq_(nfq), nft_(nft), capture_(capture), conn_(ctx) {}

  // False (and *err) if a takeover already ran or runs.
  bool request(const TakeoverConfig& cfg, std::string* err);
  // Advance the steps (engine thread, every loop).
  void poll(uint64_t now_us);
  TakeoverReport report() const;
  // Work queued for the next pass (a resend): the engine loop must not sleep.
  bool busy() const { return conn_.pending(); }
  // After the engine thread stopped: wait for the cleanup thread, give the
  // VIP back if we added it.
  void release_vip() {
    if (cleanup_.joinable()) cleanup_.join();
    ip_.remove_vip();
  }
  ~FailureRecovery() { if (cleanup_.joinable()) cleanup_.join(); }

 private:
  void begin_step(int n, uint64_t now_us);
  void end_step(int n, uint64_t now_us);
  bool all_complete();
  // Step 3: every flow's fate now; the keys still finishing go to finishing_.
  bool settle(std::string* err);
  // A flow goes active: translated from now on (kernel map or queue).
  bool activate(Flow& f);
  // A flow's replica cannot continue it: reset its copy and its client.
  void give_up(Flow& f, EventReason why);
  // Step 6, every loop: move the finishing flows on; true once none is left.
  bool catch_up(uint64_t now_us);
  bool leave_catch_up(std::string* err);
  // The queue rules for the flows finishing now (outgoing_nftables).
  bool apply_rules(std::string* err);
  // Resends the replicas' output to the clients, up to budget bytes.
  void resend(uint32_t budget);
  void after_ip_takeover(uint64_t now_us);
  void fail(const std::string& why, uint64_t now_us);
  void finalize_stall();

  EngineContext& ctx_;
  IncomingProcessor& in_;
  ActiveMode& active_;
  KernelTranslator& kernel_;
  NfQueue& nfq_;
  NftTables& nft_;
  Capture& capture_;
  ConnectionTakeover conn_;
  IpTakeover ip_;

  mutable std::mutex mu_;
  bool requested_ = false;          // under mu_
  TakeoverConfig cfg_;              // under mu_ until taken by poll()
  TakeoverReport report_;           // written under mu_

  int step_ = 0;                    // engine thread: the step running, 0 none, 7 done
  uint64_t freeze_us_ = 0;
  uint64_t drain_deadline_us_ = 0;
  uint64_t next_catch_up_us_ = 0;
  uint64_t finish_deadline_us_ = 0;
  uint32_t vip_ifindex_ = 0;
  std::vector<FlowKey> finishing_;  // flows still finishing after step 3
  size_t rules_for_ = 0;            // finishing_.size() when the rules were last set
  // The associations of a media relay's ports the kernel translates from the takeover on
  // (relay_ports.h), taken when the rules are first set.
  std::vector<NftRelay> relay_;
  bool relay_taken_ = false;
  std::vector<FlowKey> reset_due_;  // clients to reset once the VIP is here (step 5)
  uint32_t garp_left_ = 0;
  uint64_t next_garp_us_ = 0;
  uint64_t stall_due_us_ = 0;
  uint64_t fed_at_freeze_ = 0;
  uint64_t resent_at_step5_ = 0;
  std::thread cleanup_;
};

}  // namespace t2cp
