// Outgoing traffic processor, kernel side: the one nftables table set that the
// program owns on the backup host.
//
//   table ip  <name>  (flags owner)  chain out: hook output, priority -150
//       ip saddr <vip> tcp sport <port>  ->  xt NFQUEUE num <queue> (no bypass)
//       (one rule per port), and ip saddr <vip> udp sport <port> likewise for
//       the UDP ports (the replica's datagrams are counted and dropped). Every packet the backup's replica sends on a
//       replicated flow is queued to the interceptor, which learns from it and
//       drops it: an NFQUEUE drop counts as sent for the backup's TCP, an nft
//       drop would fail the send with EPERM and desynchronise the replica.
//       Packets carrying kInjectMark are exempt (the recovery path re-sends
//       through the stack with it).
//                      chain in: hook input, priority -150, empty; after
//       a takeover: meta mark == kTranslatedMark -> accept, then
//       iif <vip-if> ip daddr <vip> tcp dport <port> -> the same queue.
//   table arp <name>  (flags owner)  chain out: hook output, priority 0
//       arp sender-ip == <vip>  ->  drop. The VIP is a local address on the
//       backup while it replicates; without this the backup would answer ARP
//       for it and steal the primary's traffic.
//
// This kernel has no nft `queue` expression (CONFIG_NFT_QUEUE unset), so the
// queue verdict is the xtables NFQUEUE target (revision 3) through nft_compat,
// written with libmnl straight into our own table.
//
// Both tables carry NFT_TABLE_F_OWNER: they belong to the netlink socket that
// created them and the kernel deletes them when it closes, so even a SIGKILL
// leaves no rule behind. install() first deletes an unowned stale table of the
// same name (from an older build or a manual `nft -f`); a table owned by a live
// socket cannot be deleted and is reported as kBusy (another instance runs).
//
// Call order: install() once (again only after remove()); remove() any
// number of times; the destructor calls remove(). The object owns one
// NETLINK_NETFILTER socket from a successful install() until remove(): that
// socket IS the tables' owner, so keep the object alive exactly as long as the
// rules must stay. Not copyable.
//
// Thread: all calls from one thread (the JS main thread in practice).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace t2cp {

// Mark on packets the program itself sends through the stack, exempted by the
// output rules (cf. libsoccr's SOCCR_MARK). Value: "T2" in ASCII.
constexpr uint32_t kInjectMark = 0x5432;
// Mark the kernel translator (recovery_active_mode.bpf.c, tc ingress) puts on
// the client packets it translated, so that the queue rules of a takeover
// still catching up leave them alone. Value: "T3" in ASCII.
constexpr uint32_t kTranslatedMark = 0x5433;

// One client connection to the VIP (host order ports, network order address).
struct NftFlow {
  uint32_t client_ip = 0;
  uint16_t client_port = 0, server_port = 0;
};

// One association of a media relay's port (relay_ports.h) translated after a
// takeover: the client's datagrams to the primary's relay port go to the
// replica's, and the replica's from its port leave as from the primary's
// (host order ports, network order address).
struct NftRelay {
  uint32_t client_ip = 0;
  uint16_t client_port = 0, primary_port = 0, replica_port = 0;
};

struct NftConfig {
  std::string table;             // e.g. "t2cp_backup"; [A-Za-z0-9_]{1,31}
  uint32_t vip = 0;              // network byte order
  std::vector<uint16_t> ports;   // host order, 1..64 entries
  std::vector<uint16_t> udp_ports;  // host order, 0..64 entries: the replica's datagrams, queued too
  uint16_t queue_num = 0;        // NFQUEUE number the interceptor binds
};

enum class NftStatus { kOk, kBusy, kUnsupported, kPermission, kError };

class NftTables {
 public:
  NftTables() = default;
  ~NftTables();                  // remove() if installed
  NftTables(const NftTables&) = delete;
  NftTables& operator=(const NftTables&) = delete;

  // Create both tables in one netlink batch (all or nothing). On failure,
  // *err gets one line naming the cause and nothing stays installed.
  NftStatus install(const NftConfig& cfg, std::string* err);
  // Takeover (failure recovery, steps 3 and 6), in one batch: flush the arp
  // chain and chain `in` (hook input, priority -150), then
  //   kQueueBoth   (the queue translates) fill `in` with rules queueing what
  //                arrives on interface in_ifindex for ip daddr <vip> tcp
  //                dport <port> to the same queue, unless marked
  //                kTranslatedMark; `out` keeps queueing the replica's output;
  //   kQueueFlows  (the kernel translates; `flows` still finish) flush `out`
  //                and queue both directions of each listed flow only, so
  //                the taken-over flows never wait behind them in the queue;
  //   kNone        (the kernel translates every flow) flush `out` too;
  // and first in `in` and `out`, one rule each rewriting the port of every
  // association in `relay`, looked up in a map (stateless: conntrack sees
  // one flow either way).
  // Callable again to change. False and *err on failure.
  // Thread: the caller of install() or, while that thread leaves the object
  // alone, the engine thread.
  enum class ActiveRules { kQueueBoth, kQueueFlows, kNone };
  bool enter_active(ActiveRules rules, uint32_t in_ifindex, const std::vector<NftFlow>& flows,
                    const std::vector<NftRelay>& relay, std::string* err);
  // Delete both tables and close the owning socket. Idempotent.
  void remove();
  bool installed() const { return fd_ >= 0; }
  // True when the last install() deleted an unowned table of the same name
  // (ip or arp) left by an older run; the caller logs it.
  bool removed_stale() const { return removed_stale_; }

 private:
  int fd_ = -1;                  // owning NETLINK_NETFILTER socket
  std::string table_;
  NftConfig cfg_;
  uint32_t portid_ = 0;          // fd_'s netlink port id = NFTA_TABLE_OWNER
  uint32_t seq_ = 0;             // last netlink sequence number used on fd_
  bool removed_stale_ = false;
};

}  // namespace t2cp
