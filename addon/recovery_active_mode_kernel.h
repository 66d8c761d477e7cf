// Failure recovery, active mode in the kernel: loads the translator
// (recovery_active_mode.bpf.c, built next to the addon) and attaches its two
// programs to the interface that gets the VIP, as tcx links (ingress and
// egress). The links are file descriptors of this process: the kernel
// detaches the programs when the process exits, however it exits, so a crash
// leaves nothing behind (no tc filter, no pinned object).
//
// Loaded and attached at engine start (the verifier's work and the netlink
// calls stay out of the takeover), with an empty flow map: every packet then
// passes untouched. At takeover step 3 the engine adds each taken-over flow
// (add) and from then on the kernel translates them; the engine's timer reads
// their progress (read) to close and expire them (remove).
//
// Needs Linux 6.6 (tcx). open() says why it could not, and the engine falls
// back to the NFQUEUE translator (recovery_active_mode.cc) unless told not to.
//
// After a takeover the links and maps can be pinned (pin(), on a bpffs):
// the taken-over connections then outlive this process, and a later one
// reclaims them (PinnedTranslator) or releases them.
//
// Thread: open() and close() from the thread that starts and stops the
// engine; the rest from the engine thread.
#pragma once
#include <cstdint>
#include <string>

#include "flow_table.h"
#include "recovery_active_mode_maps.h"

struct bpf_object;

namespace t2cp {

class KernelTranslator {
 public:
  KernelTranslator() = default;
  ~KernelTranslator() { close(); }
  KernelTranslator(const KernelTranslator&) = delete;
  KernelTranslator& operator=(const KernelTranslator&) = delete;

  // Load object_path, size the flow map to max_flows, attach to ifname.
  // "" on success, else one line naming the cause.
  std::string open(const std::string& object_path, const std::string& ifname, uint32_t vip, uint32_t max_flows);
  bool ready() const { return link_in_ >= 0; }
  // Translate f from now on (takeover step 3; ActiveMode::enter ran). False
  // when the map is full.
  bool add(const Flow& f);
  // A flow's current entry; false when it is gone (the client opened a new
  // connection on the same port: the program removed it).
  bool read(const FlowKey& k, t2cp_active_flow* out) const;
  void remove(const FlowKey& k);
  // The programs' counters, summed over CPUs.
  void stats(uint64_t out[T2CP_ACTIVE_STAT_COUNT]) const;
  // Pin both links and the flow and counter maps under dir (made, 0700; on a
  // bpffs): the programs stay attached after this process. "" or why not.
  std::string pin(const std::string& dir) const;
  void close();

  // How many tcx programs are attached to ifname (ingress + egress), by
  // anyone; -1 and *err when it cannot be asked. For leftover checks.
  static int attached(const std::string& ifname, std::string* err);

  // For the native test: the loaded programs and maps without attaching
  // them (BPF_PROG_TEST_RUN needs no interface).
  std::string load_only(const std::string& object_path, uint32_t vip, uint32_t max_flows);
  int ingress_fd() const { return prog_in_; }
  int egress_fd() const { return prog_out_; }

 private:
  static t2cp_active_key map_key(const FlowKey& k);

  bpf_object* obj_ = nullptr;
  int prog_in_ = -1, prog_out_ = -1;
  int link_in_ = -1, link_out_ = -1;
  int flows_fd_ = -1, stats_fd_ = -1;
};

// A translator an earlier process pinned (KernelTranslator::pin): its
// programs translate the taken-over connections for as long as the pins
// exist. reclaim() opens its maps; gc() forgets the connections that ended;
// release() removes the pins (the programs detach once nobody holds them).
class PinnedTranslator {
 public:
  PinnedTranslator() = default;
  ~PinnedTranslator() { close(); }
  PinnedTranslator(const PinnedTranslator&) = delete;
  PinnedTranslator& operator=(const PinnedTranslator&) = delete;

  // Whether anything is pinned under dir.
  static bool exists(const std::string& dir);
  // "" or why not (a pin missing: nothing to reclaim).
  std::string reclaim(const std::string& dir);
  bool reclaimed() const { return flows_fd_ >= 0; }
  struct Sweep {
    uint32_t flows = 0;    // left in the map
    uint32_t removed = 0;  // ended (FIN both ways or a RST) more than linger_ns ago, or idle more than idle_ns
  };
  Sweep gc(uint64_t idle_ns, uint64_t linger_ns);
  void stats(uint64_t out[T2CP_ACTIVE_STAT_COUNT]) const;
  // Unlink every pin under dir and the folder; "" or why not.
  static std::string release(const std::string& dir);
  void close();

 private:
  int flows_fd_ = -1, stats_fd_ = -1;
};

}  // namespace t2cp
