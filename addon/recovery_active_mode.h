// Failure recovery, active mode (paper 001, "active mode entry"): after a
// takeover the backup's own TCP talks to the clients, but every flow it took
// over keeps the primary's numbers on the client's side for as long as it
// lives. The owned nft table queues both directions of the service ports
// (outgoing_nftables enter_active); this rewrites the taken-over flows' packets
// in place and accepts them, and lets every other packet (connections opened
// after the takeover) pass untouched.
//
//   client -> backup   ack, SACK blocks: primary space -> backup space (ack
//                      clamped to what the backup sent: the kernel drops a
//                      segment acking unsent data, payload included; the
//                      window then widened to keep the client's right edge);
//                      TSecr: the client's view of the clock -> the backup's.
//   backup -> client   seq: backup space -> primary space; TSval: the
//                      backup's clock, shifted so the client's PAWS check
//                      never sees it go back; window: rescaled from the
//                      backup's window shift to the primary's (the one the
//                      client applies).
//
// The same translation runs in the kernel when it can
// (recovery_active_mode.bpf.c, attached by recovery_active_mode_kernel): the
// queue then carries nothing of the taken-over flows (but the replica's last
// packets queued before step 3, passed on to the kernel's translator), and
// on_tick() reads their progress from the kernel's map instead.
//
// Thread: engine thread only.
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine_context.h"
#include "outgoing_nfqueue.h"
#include "recovery_active_mode_kernel.h"

namespace t2cp {

// How long a taken-over flow that closed keeps being translated, µs: the
// backup's side may sit in TIME_WAIT (60 s, TCP_TIMEWAIT_LEN) and answer a
// retransmitted FIN, which must still carry the primary's numbers.
constexpr uint64_t kActiveLingerUs = 60000000;
// How often the kernel translator's map is read back, µs: one map lookup
// (a syscall) per taken-over flow, so not at every 20 ms timer pass; what it
// feeds (closing, expiry, counters, the stall estimate 2 s after step 5) can
// be this late.
constexpr uint64_t kKernelSyncUs = 500000;

class ActiveMode {
 public:
  explicit ActiveMode(EngineContext& ctx) : ctx_(ctx) {}

  // Takeover, per flow (recovery_readiness.h says when): translate it from now on.
  void enter(Flow& f);
  // One queued packet (whole, from its IPv4 header).
  NfQueue::Verdict on_packet(uint8_t* ip, size_t len);
  // A datagram of the replica's media relay queued before step 3 changed the
  // rules and judged after: it passed chain out before the relay map was
  // there, so it leaves translated here, as the map would have (from the
  // primary's port its client was told).
  NfQueue::Verdict on_relay_datagram(uint8_t* ip, size_t len);
  // Expiry of taken-over flows (closed + linger, or idle).
  void on_tick(uint64_t now_us);
  // From step 3 on, the kernel translates (kernel is ready and has every
  // taken-over flow).
  void use_kernel(KernelTranslator* kernel) { kernel_ = kernel; }
  bool in_kernel() const { return kernel_ != nullptr; }

  // The client's view of the replica's state, for packets built at takeover.
  static uint32_t client_window(const Flow& f);
  static uint32_t client_tsval(const Flow& f) { return f.replica.tsval - f.ts_out_delta; }

 private:
  NfQueue::Verdict on_icmp(uint8_t* ip, size_t len);
  void translate_in(Flow& f, uint8_t* ip, const Segment& s);
  void translate_out(Flow& f, uint8_t* ip, const Segment& s);
  void note_closing(Flow& f, uint64_t now_us);
  void sync_from_kernel(uint64_t now_us);

  EngineContext& ctx_;
  KernelTranslator* kernel_ = nullptr;
  uint64_t kernel_synced_us_ = 0;
};

}  // namespace t2cp
