// Fencing (paper 001, "only one server ever answers"): owned nft tables that
// silence a server that was replaced, installed by the program that decides
// it and removed with it (NFT_TABLE_F_OWNER: the kernel deletes them when
// the owning socket closes, even on SIGKILL).
//
//   gateway fence   table ip <name>  chain fwd (forward, -150):
//                       ether saddr <old primary MAC> ip saddr <vip> drop
//                   table arp <name> chain in (input, -150):
//                       arp sha <old primary MAC> spa <vip> drop
//                   The old primary can neither reach the clients with the
//                   VIP nor pull the VIP back by ARP; everyone else passes.
//   primary fence   table ip <name>  chain out (output): ip saddr <vip> drop
//                                    chain in (prerouting): ip daddr <vip> drop
//                   table arp <name> chain out (output): arp spa <vip> drop
//                   The old primary stands down: it neither answers for the
//                   VIP nor sends anything from it.
//
// prepare() creates the tables and chains, empty (slow: registering hooks
// waits for the kernel); engage() adds the drop rules in one batch (fast, at
// the moment it matters); release() flushes them. prepare() removes an
// unowned stale copy of the same name first; a table owned by a live socket
// is kBusy. Thread: one thread at a time.
#pragma once
#include <cstdint>
#include <string>

#include "outgoing_nftables.h"

namespace t2cp {

struct FenceConfig {
  enum class Role { kGateway, kPrimary } role = Role::kPrimary;
  std::string table;      // [A-Za-z0-9_]{1,31}
  uint32_t vip = 0;       // network order
  uint8_t mac[6] = {};    // gateway: the old primary's MAC
};

class FenceTables {
 public:
  FenceTables() = default;
  ~FenceTables() { remove(); }
  FenceTables(const FenceTables&) = delete;
  FenceTables& operator=(const FenceTables&) = delete;

  // All or nothing; *err names the cause and the fix.
  NftStatus prepare(const FenceConfig& cfg, std::string* err);
  // The drop rules (prepare()d first); idempotent. mac: the gateway fence's
  // old primary, when learnt only now (else the configured one).
  NftStatus engage(std::string* err, const uint8_t* mac = nullptr);
  void release();  // flush the rules, keep the tables
  void remove();   // delete the tables; idempotent
  bool prepared() const { return fd_ >= 0; }
  bool engaged() const { return engaged_; }

 private:
  int fd_ = -1;
  uint32_t portid_ = 0, seq_ = 0;
  std::string table_;
  FenceConfig cfg_;
  bool engaged_ = false;
};

}  // namespace t2cp
