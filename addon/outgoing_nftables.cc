// Outgoing traffic processor, kernel side: the backup's owned nftables
// tables (see outgoing_nftables.h), written with nft_batch.h.
#include "outgoing_nftables.h"

#include <netinet/in.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nf_tables_compat.h>
#include <linux/netfilter_arp.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "nft_batch.h"
#include "port_runs.h"

namespace t2cp {
namespace {

using namespace nft;

constexpr char kChain[] = "out";
// NF_IP_PRI_MANGLE: before any filter-priority (0) output chain of the host's
// own ruleset can drop or accept the replica's packets.
constexpr int32_t kIpOutPriority = -150;
constexpr int32_t kArpOutPriority = 0;   // NF_IP_PRI_FILTER equivalent for arp
constexpr size_t kMaxPorts = 64;
// ARP header (RFC 826) for Ethernet/IPv4: htype 2, ptype 2, hlen 1, plen 1,
// oper 2, sender hardware address 6, then the sender protocol address.
constexpr uint32_t kArpSenderIpOffset = 14;
constexpr uint32_t kIpSaddrOffset = 12;   // RFC 791
constexpr uint32_t kIpDaddrOffset = 16;
constexpr uint32_t kTcpSportOffset = 0;   // RFC 793; UDP's ports lie there too (RFC 768)
constexpr uint32_t kTcpDportOffset = 2;
constexpr uint32_t kUdpCsumOffset = 6;
// Active mode: the clients' packets are translated at local input, mangle
// priority, before the input filters: a segment a narrower link cut in
// fragments is whole there (the stack reassembles before the input hook).
constexpr char kInChain[] = "in";
// After chain out: whatever else leaves this host from the VIP while it
// replicates — a connection the replica opens itself (a proxy to a callee over
// TCP), an ICMP error its stack answers — is dropped; the VIP is the
// primary's. Emptied at the takeover.
constexpr char kGuardChain[] = "guard";
constexpr int32_t kIpGuardPriority = -149;
constexpr int32_t kIpInPriority = -150;

// meta mark == kInjectMark -> accept: our own re-sent packets pass untouched.
void put_mark_exempt_rule(Batch& b, const std::string& table, const char* chain = kChain,
                          uint32_t mark = kInjectMark) {
  nlattr* exprs;
  nlmsghdr* nlh = begin_rule(b, NFPROTO_IPV4, table, chain, What::kMarkRule, &exprs);
  put_meta_eq(nlh, NFT_META_MARK, &mark, sizeof mark);
  put_verdict(nlh, NF_ACCEPT);
  end_rule(b, nlh, exprs);
}

// The end of every queue rule: counter, NFQUEUE target, and the protocol
// for the target's checks. nft_compat hands it to the xtables checkentry
// hook, as the ipt_entry's ip.proto would (iptables-nft sends the same).
void end_queue_rule(Batch& b, nlmsghdr* nlh, nlattr* exprs, uint16_t queue_num, uint8_t proto = IPPROTO_TCP) {
  put_counter(nlh);
  put_nfqueue_target(nlh, queue_num);
  mnl_attr_nest_end(nlh, exprs);
  nlattr* compat = mnl_attr_nest_start(nlh, NFTA_RULE_COMPAT);
  put_be32(nlh, NFTA_RULE_COMPAT_PROTO, proto);
  put_be32(nlh, NFTA_RULE_COMPAT_FLAGS, 0);
  mnl_attr_nest_end(nlh, compat);
  b.close(nlh);
}

// ip <saddr|daddr> == vip, l4proto tcp, tcp <sport|dport> in ports ->
// NFQUEUE queue_num, in chain `chain`: the replica's output (out) or, in
// active mode, the clients' input (in). One port: ==; a run: a range.
// proto: IPPROTO_TCP or IPPROTO_UDP (their ports lie at the same offsets).
void put_queue_rule(Batch& b, const std::string& table, const char* chain, bool to_vip,
                    uint32_t vip, PortRun ports, uint16_t queue_num, uint32_t iif = 0, uint8_t proto = IPPROTO_TCP) {
  nlattr* exprs;
  nlmsghdr* nlh = begin_rule(b, NFPROTO_IPV4, table, chain, What::kQueueRule, &exprs);
  if (iif) put_meta_eq(nlh, NFT_META_IIF, &iif, sizeof iif);
  put_payload_eq(nlh, NFT_PAYLOAD_NETWORK_HEADER, to_vip ? kIpDaddrOffset : kIpSaddrOffset, &vip, 4);
  put_meta_eq(nlh, NFT_META_L4PROTO, &proto, 1);
  const uint16_t first = htons(ports.first), last = htons(ports.last);
  const uint32_t at = to_vip ? kTcpDportOffset : kTcpSportOffset;
  if (ports.first == ports.last) put_payload_eq(nlh, NFT_PAYLOAD_TRANSPORT_HEADER, at, &first, 2);
  else put_payload_range(nlh, NFT_PAYLOAD_TRANSPORT_HEADER, at, &first, &last, 2);
  end_queue_rule(b, nlh, exprs, queue_num, proto);
}

// ip daddr == vip, l4proto icmp (arriving on iif) -> NFQUEUE queue_num:
// errors quoting a taken-over flow, for the queue translator (active mode).
void put_icmp_queue_rule(Batch& b, const std::string& table, uint32_t vip, uint16_t queue_num, uint32_t iif) {
  nlattr* exprs;
  nlmsghdr* nlh = begin_rule(b, NFPROTO_IPV4, table, kInChain, What::kQueueRule, &exprs);
  if (iif) put_meta_eq(nlh, NFT_META_IIF, &iif, sizeof iif);
  put_payload_eq(nlh, NFT_PAYLOAD_NETWORK_HEADER, kIpDaddrOffset, &vip, 4);
  uint8_t icmp = IPPROTO_ICMP;
  put_meta_eq(nlh, NFT_META_L4PROTO, &icmp, 1);
  end_queue_rule(b, nlh, exprs, queue_num, IPPROTO_ICMP);
}

// One flow's packets toward the VIP (to_vip: arriving on iif) or from it ->
// NFQUEUE queue_num: a flow still finishing while the kernel translates the
// others (takeover step 6).
void put_flow_queue_rule(Batch& b, const std::string& table, bool to_vip, uint32_t vip, const NftFlow& f,
                         uint16_t queue_num, uint32_t iif) {
  nlattr* exprs;
  nlmsghdr* nlh = begin_rule(b, NFPROTO_IPV4, table, to_vip ? kInChain : kChain, What::kQueueRule, &exprs);
  if (to_vip && iif) put_meta_eq(nlh, NFT_META_IIF, &iif, sizeof iif);
  put_payload_eq(nlh, NFT_PAYLOAD_NETWORK_HEADER, to_vip ? kIpDaddrOffset : kIpSaddrOffset, &vip, 4);
  put_payload_eq(nlh, NFT_PAYLOAD_NETWORK_HEADER, to_vip ? kIpSaddrOffset : kIpDaddrOffset, &f.client_ip, 4);
  uint8_t tcp = IPPROTO_TCP;
  put_meta_eq(nlh, NFT_META_L4PROTO, &tcp, 1);
  uint16_t server = htons(f.server_port), client = htons(f.client_port);
  put_payload_eq(nlh, NFT_PAYLOAD_TRANSPORT_HEADER, to_vip ? kTcpDportOffset : kTcpSportOffset, &server, 2);
  put_payload_eq(nlh, NFT_PAYLOAD_TRANSPORT_HEADER, to_vip ? kTcpSportOffset : kTcpDportOffset, &client, 2);
  end_queue_rule(b, nlh, exprs, queue_num);
}

// The associations of relay ports, one rule first in its chain and an anonymous map: in `in`,
// ip daddr <vip> udp dport set ip saddr . udp sport . udp dport map { <client> . <client port>
// . <primary's> : <replica's> } accept; in `out`, ip saddr <vip> udp sport set ip daddr . udp
// dport . udp sport map { ... . <replica's> : <primary's> } accept. A packet of no association is
// left alone.
void put_relay_rule(Batch& b, const std::string& table, bool to_vip, uint32_t vip, const std::vector<NftRelay>& relay,
                    uint32_t set_id) {
  std::vector<MapElement> elements(relay.size());
  for (size_t i = 0; i < relay.size(); i++) {
    const NftRelay& r = relay[i];
    MapElement& m = elements[i];
    const uint16_t client = htons(r.client_port), from = htons(to_vip ? r.primary_port : r.replica_port),
                   to = htons(to_vip ? r.replica_port : r.primary_port);
    std::memcpy(m.key, &r.client_ip, 4);
    std::memcpy(m.key + 4, &client, 2);  // each part of the key padded to 4 bytes, as in the registers
    std::memcpy(m.key + 8, &from, 2);
    m.key_len = 12;
    std::memcpy(m.data, &to, 2);
    m.data_len = 2;
  }
  // ipv4_addr . inet_service . inet_service : inet_service
  const uint32_t key_type = (kNftTypeIpv4Addr << kNftTypeBits | kNftTypeInetService) << kNftTypeBits | kNftTypeInetService;
  put_new_anonymous_map(b, NFPROTO_IPV4, table, set_id, key_type, 12, kNftTypeInetService, 2, uint32_t(relay.size()), What::kRelayRule);
  put_map_elements(b, NFPROTO_IPV4, table, set_id, elements, What::kRelayRule);
  nlattr* exprs;
  nlmsghdr* nlh = begin_rule(b, NFPROTO_IPV4, table, to_vip ? kInChain : kChain, What::kRelayRule, &exprs, /*append=*/false);
  put_payload_eq(nlh, NFT_PAYLOAD_NETWORK_HEADER, to_vip ? kIpDaddrOffset : kIpSaddrOffset, &vip, 4);
  uint8_t udp = IPPROTO_UDP;
  put_meta_eq(nlh, NFT_META_L4PROTO, &udp, 1);
  const uint32_t port_at = to_vip ? kTcpDportOffset : kTcpSportOffset;
  put_payload_load(nlh, NFT_PAYLOAD_NETWORK_HEADER, to_vip ? kIpSaddrOffset : kIpDaddrOffset, 4, NFT_REG32_00);
  put_payload_load(nlh, NFT_PAYLOAD_TRANSPORT_HEADER, to_vip ? kTcpSportOffset : kTcpDportOffset, 2, NFT_REG32_01);
  put_payload_load(nlh, NFT_PAYLOAD_TRANSPORT_HEADER, port_at, 2, NFT_REG32_02);
  put_map_lookup(nlh, set_id, NFT_REG32_00, NFT_REG32_03);
  put_counter(nlh);
  put_payload_write(nlh, NFT_PAYLOAD_TRANSPORT_HEADER, port_at, 2, NFT_REG32_03, kUdpCsumOffset);
  // Translated, it is not queued too (the queue translator's rules follow in the chain): the
  // engine translates only what was queued before this rule was there.
  put_verdict(nlh, NF_ACCEPT);
  end_rule(b, nlh, exprs);
}

// The 4 bytes at `offset` of the network header == vip -> counter, drop.
void put_vip_drop(Batch& b, uint8_t family, const std::string& table, const char* chain, What what, uint32_t offset,
                  uint32_t vip) {
  nlattr* exprs;
  nlmsghdr* nlh = begin_rule(b, family, table, chain, what, &exprs);
  put_payload_eq(nlh, NFT_PAYLOAD_NETWORK_HEADER, offset, &vip, 4);
  put_counter(nlh);
  put_verdict(nlh, NF_DROP);
  end_rule(b, nlh, exprs);
}

// ip saddr == vip -> drop, in chain guard (kGuardChain).
void put_vip_drop_rule(Batch& b, const std::string& table, uint32_t vip) {
  put_vip_drop(b, NFPROTO_IPV4, table, kGuardChain, What::kGuardRule, kIpSaddrOffset, vip);
}

// arp sender-ip == vip -> drop: the backup never announces the VIP.
void put_arp_drop_rule(Batch& b, const std::string& table, uint32_t vip) {
  put_vip_drop(b, NFPROTO_ARP, table, kChain, What::kArpRule, kArpSenderIpOffset, vip);
}

// ---- queries ----------------------------------------------------------------

std::string validate(const NftConfig& cfg) {
  if (!valid_table_name(cfg.table))
    return "nftables: bad table name \"" + cfg.table +
           "\": use 1-31 characters from [A-Za-z0-9_]";
  if (cfg.vip == 0) return "nftables: vip is 0.0.0.0: set the virtual IP";
  if (cfg.ports.empty() && cfg.udp_ports.empty()) return "nftables: no port given: replicate 1 to 64 TCP ports, UDP ports or both";
  if (cfg.ports.size() > kMaxPorts) return "nftables: " + std::to_string(cfg.ports.size()) + " TCP ports given: at most 64";
  if (port_runs(cfg.udp_ports).size() > kMaxPorts)
    return "nftables: " + std::to_string(port_runs(cfg.udp_ports).size()) + " UDP port ranges given: at most 64";
  for (const std::vector<uint16_t>* list : {&cfg.ports, &cfg.udp_ports}) {
    std::set<uint16_t> seen;
    for (uint16_t p : *list) {
      if (p == 0) return "nftables: port 0 in the port list: use 1-65535";
      if (!seen.insert(p).second)
        return "nftables: port " + std::to_string(p) + " listed twice";
    }
  }
  return {};
}

const char* describe(What w) {
  switch (w) {
    case What::kBatch: return "netlink batch";
    case What::kTransport: return "netlink send/receive";
    case What::kIpTable: return "creating table ip";
    case What::kArpTable: return "creating table arp";
    case What::kIpChain: return "creating chain ip out";
    case What::kArpChain: return "creating chain arp out";
    case What::kMarkRule: return "adding the kInjectMark accept rule";
    case What::kQueueRule: return "adding an NFQUEUE rule";
    case What::kArpRule: return "adding the arp drop rule";
    case What::kDelTable: return "deleting a table";
    case What::kInChain: return "creating chain ip in";
    case What::kFlushChain: return "flushing chain ip out";
    case What::kGuardRule: return "adding the guard's drop rule";
    case What::kRelayRule: return "adding a relay port's translation";
    default: break;
  }
  return "?";
}

// Maps the first failing message of the create batch to a status and a
// one-line message that names the problem and the fix.
NftStatus map_create_error(const Outcome& o, const std::string& table,
                           std::string* err) {
  const int e = o.err;
  const std::string where = "nftables table " + table + ": ";
  const bool missing = e == ENOENT || e == EOPNOTSUPP;
  switch (o.what) {
    case What::kIpTable:
    case What::kArpTable: {
      const bool arp = o.what == What::kArpTable;
      if (e == EEXIST || e == EPERM) {
        *err = where + "created meanwhile by another running t2cp instance; "
                       "stop it first";
        return NftStatus::kBusy;
      }
      if (e == EAFNOSUPPORT) {
        *err = where + (arp ? "kernel lacks nftables arp family "
                              "(enable CONFIG_NF_TABLES_ARP)"
                            : "kernel lacks nftables ip family "
                              "(enable CONFIG_NF_TABLES_IPV4)");
        return NftStatus::kUnsupported;
      }
      if (e == EOPNOTSUPP) {
        *err = where + "kernel lacks owned tables (NFT_TABLE_F_OWNER): "
                       "needs Linux >= 5.13";
        return NftStatus::kUnsupported;
      }
      break;
    }
    case What::kIpChain:
    case What::kArpChain:
      if (missing) {
        *err = where + "kernel lacks the nftables filter chain type for " +
               (o.what == What::kArpChain ? "arp (enable CONFIG_NF_TABLES_ARP)"
                                          : "ip (enable CONFIG_NF_TABLES_IPV4)");
        return NftStatus::kUnsupported;
      }
      break;
    case What::kQueueRule:
      if (missing) {
        *err = where + "kernel lacks nft_compat NFQUEUE target (enable "
                       "CONFIG_NETFILTER_XT_TARGET_NFQUEUE and CONFIG_NFT_COMPAT, "
                       "or modprobe nft_compat xt_NFQUEUE)";
        return NftStatus::kUnsupported;
      }
      break;
    case What::kMarkRule:
    case What::kArpRule:
    case What::kGuardRule:
      if (missing) {
        *err = where + "kernel lacks nftables meta/payload/counter expressions "
                       "(enable CONFIG_NF_TABLES, CONFIG_NFT_COUNTER)";
        return NftStatus::kUnsupported;
      }
      break;
    default:
      break;
  }
  if (e == EPERM || e == EACCES) {
    *err = "nftables: needs root (CAP_NET_ADMIN)";
    return NftStatus::kPermission;
  }
  *err = where + describe(o.what) + " failed: " + strerror(e);
  return NftStatus::kError;
}

}  // namespace

NftTables::~NftTables() { remove(); }

NftStatus NftTables::install(const NftConfig& cfg, std::string* err) {
  std::string scratch;
  if (!err) err = &scratch;
  err->clear();
  removed_stale_ = false;
  if (installed()) {
    *err = "nftables: table " + table_ + " already installed: remove() first";
    return NftStatus::kError;
  }
  std::string bad = validate(cfg);
  if (!bad.empty()) {
    *err = bad;
    return NftStatus::kError;
  }

  int e = 0;
  int fd = open_socket(&portid_, &e);
  if (fd < 0) {
    if (e == EPERM || e == EACCES) {
      *err = "nftables: needs root (CAP_NET_ADMIN)";
      return NftStatus::kPermission;
    }
    *err = std::string("nftables: netlink socket: ") + strerror(e);
    return NftStatus::kError;
  }
  seq_ = uint32_t(time(nullptr));
  auto fail = [&](NftStatus s) {
    ::close(fd);
    return s;
  };

  // 1. Remove a stale copy per family. Each delete is its own batch: ENOENT
  //    for one family must not undo the other.
  for (uint8_t family : {uint8_t(NFPROTO_IPV4), uint8_t(NFPROTO_ARP)}) {
    Batch del(&seq_, 1);
    put_del_table(del, family, cfg.table);
    Outcome o = run_batch(fd, del);
    if (o.err == 0) {
      removed_stale_ = true;
      continue;
    }
    // No such table, or no arp family at all (the create batch names that).
    if (o.err == ENOENT || o.err == EAFNOSUPPORT) continue;
    if (o.err == EPERM || o.err == EACCES || o.err == EBUSY) {
      // EPERM is both "not root" and "owned by another socket". GETTABLE
      // tells them apart: it needs CAP_NET_ADMIN too but ignores ownership.
      TableInfo info;
      int ge = get_table(fd, &seq_, portid_, family, cfg.table, &info);
      if (ge == EPERM || ge == EACCES) {
        *err = "nftables: needs root (CAP_NET_ADMIN)";
        return fail(NftStatus::kPermission);
      }
      *err = "nftables: table " + std::string(family_name(family)) + " " +
             cfg.table + " is owned by another running t2cp instance" +
             (info.has_owner ? " (" + describe_owner(info.owner) + ")" : "") +
             ": stop it, or give this one another --instance";
      return fail(NftStatus::kBusy);
    }
    *err = "nftables: deleting stale table " + std::string(family_name(family)) +
           " " + cfg.table + ": " + strerror(o.err);
    return fail(NftStatus::kError);
  }

  // 2. Create everything in one batch.
  const std::vector<PortRun> udp_runs = port_runs(cfg.udp_ports);
  Batch b(&seq_, 10 + cfg.ports.size() + udp_runs.size());
  put_new_table(b, NFPROTO_IPV4, cfg.table, What::kIpTable);
  put_base_chain(b, NFPROTO_IPV4, cfg.table, kChain, NF_INET_LOCAL_OUT, kIpOutPriority,
                 What::kIpChain);
  put_mark_exempt_rule(b, cfg.table);
  // Empty until a takeover (enter_active): created now so the takeover only
  // adds rules, which is fast.
  put_base_chain(b, NFPROTO_IPV4, cfg.table, kInChain, NF_INET_LOCAL_IN, kIpInPriority, What::kInChain);
  for (uint16_t port : cfg.ports)
    put_queue_rule(b, cfg.table, kChain, false, cfg.vip, PortRun{port, port}, cfg.queue_num);
  for (PortRun run : udp_runs)
    put_queue_rule(b, cfg.table, kChain, false, cfg.vip, run, cfg.queue_num, 0, IPPROTO_UDP);
  put_base_chain(b, NFPROTO_IPV4, cfg.table, kGuardChain, NF_INET_LOCAL_OUT, kIpGuardPriority, What::kIpChain);
  put_mark_exempt_rule(b, cfg.table, kGuardChain);
  put_vip_drop_rule(b, cfg.table, cfg.vip);
  put_new_table(b, NFPROTO_ARP, cfg.table, What::kArpTable);
  put_base_chain(b, NFPROTO_ARP, cfg.table, kChain, NF_ARP_OUT, kArpOutPriority,
                 What::kArpChain);
  put_arp_drop_rule(b, cfg.table, cfg.vip);
  Outcome o = run_batch(fd, b);
  if (o.err) return fail(map_create_error(o, cfg.table, err));

  fd_ = fd;
  table_ = cfg.table;
  cfg_ = cfg;
  return NftStatus::kOk;
}

bool NftTables::enter_active(ActiveRules rules, uint32_t in_ifindex, const std::vector<NftFlow>& flows,
                             const std::vector<NftRelay>& relay, std::string* err) {
  if (fd_ < 0) {
    *err = "nftables: not installed";
    return false;
  }
  // One batch of rule changes only (a table or chain deletion would wait for
  // an RCU grace period, tens of ms on a busy host): the backup may answer
  // ARP for the VIP from now on, and the taken-over flows' packets go either
  // through the interceptor (both directions queued) or, when the kernel
  // translates them, straight out (chain out emptied).
  const size_t relay_msgs = relay.empty() ? 0 : 2 * (2 + (relay.size() + kMapElementsPerMsg - 1) / kMapElementsPerMsg);
  Batch b(&seq_, 7 + cfg_.ports.size() + (rules == ActiveRules::kQueueFlows ? 2 * flows.size() : 0) + relay_msgs);
  auto flush = [&](uint8_t family, const char* chain, What what) {
    nlmsghdr* m = b.open(NFT_MSG_DELRULE, 0, family, what);
    mnl_attr_put_strz(m, NFTA_RULE_TABLE, table_.c_str());
    mnl_attr_put_strz(m, NFTA_RULE_CHAIN, chain);
    b.close(m);
  };
  flush(NFPROTO_ARP, kChain, What::kArpRule);
  flush(NFPROTO_IPV4, kGuardChain, What::kFlushChain);
  flush(NFPROTO_IPV4, kInChain, What::kFlushChain);
  switch (rules) {
    case ActiveRules::kQueueBoth:
      put_mark_exempt_rule(b, table_, kInChain, kTranslatedMark);
      for (uint16_t port : cfg_.ports)
        put_queue_rule(b, table_, kInChain, true, cfg_.vip, PortRun{port, port}, cfg_.queue_num, in_ifindex);
      put_icmp_queue_rule(b, table_, cfg_.vip, cfg_.queue_num, in_ifindex);
      break;
    case ActiveRules::kQueueFlows:
      flush(NFPROTO_IPV4, kChain, What::kFlushChain);
      put_mark_exempt_rule(b, table_, kInChain, kTranslatedMark);
      for (const NftFlow& f : flows) {
        put_flow_queue_rule(b, table_, true, cfg_.vip, f, cfg_.queue_num, in_ifindex);
        put_flow_queue_rule(b, table_, false, cfg_.vip, f, cfg_.queue_num, 0);
      }
      break;
    case ActiveRules::kNone:
      flush(NFPROTO_IPV4, kChain, What::kFlushChain);
      break;
  }
  if (!relay.empty()) {
    put_relay_rule(b, table_, true, cfg_.vip, relay, 1);
    put_relay_rule(b, table_, false, cfg_.vip, relay, 2);
  }
  Outcome o = run_batch(fd_, b);
  if (o.err) {
    *err = std::string("nftables: entering active mode: ") + describe(o.what) + " failed: " + strerror(o.err);
    return false;
  }
  return true;
}

void NftTables::remove() {
  if (fd_ < 0) return;
  // Explicit deletes make removal immediate and visible to the caller;
  // closing the owning socket would also make the kernel drop both tables.
  for (uint8_t family : {uint8_t(NFPROTO_IPV4), uint8_t(NFPROTO_ARP)}) {
    Batch del(&seq_, 1);
    put_del_table(del, family, table_);
    run_batch(fd_, del);   // ENOENT (already gone) is fine; nothing to do else
  }
  ::close(fd_);
  fd_ = -1;
  portid_ = 0;
  table_.clear();
}

}  // namespace t2cp
