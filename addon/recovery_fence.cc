#include "recovery_fence.h"

#include <netinet/in.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter_arp.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "nft_batch.h"

namespace t2cp {
namespace {

using namespace nft;

constexpr int32_t kPriority = -150;        // before the host's filter chains (0)
constexpr uint32_t kIpSaddrOffset = 12;    // RFC 791
constexpr uint32_t kIpDaddrOffset = 16;
constexpr uint32_t kEtherSaddrOffset = 6;  // link-layer header: dst(6) src(6)
// ARP for Ethernet/IPv4 (RFC 826): sender hardware address at 8, sender
// protocol address at 14.
constexpr uint32_t kArpShaOffset = 8;
constexpr uint32_t kArpSpaOffset = 14;

struct Match { uint32_t base, offset; const void* value; uint32_t len; };

void put_drop_rule(Batch& b, uint8_t family, const std::string& table, const char* chain,
                   const Match* m, int n) {
  nlattr* exprs;
  nlmsghdr* nlh = begin_rule(b, family, table, chain, What::kFenceRule, &exprs);
  for (int i = 0; i < n; i++) put_payload_eq(nlh, m[i].base, m[i].offset, m[i].value, m[i].len);
  put_counter(nlh);
  put_verdict(nlh, NF_DROP);
  end_rule(b, nlh, exprs);
}

void put_table(Batch& b, uint8_t family, const std::string& name) {
  nlmsghdr* nlh = b.open(NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL, family, What::kFenceTable);
  mnl_attr_put_strz(nlh, NFTA_TABLE_NAME, name.c_str());
  put_be32(nlh, NFTA_TABLE_FLAGS, NFT_TABLE_F_OWNER);
  b.close(nlh);
}

}  // namespace

NftStatus FenceTables::prepare(const FenceConfig& cfg, std::string* err) {
  if (prepared()) return NftStatus::kOk;
  if (!valid_table_name(cfg.table)) {
    *err = "fence: bad table name \"" + cfg.table + "\": use 1-31 characters from [A-Za-z0-9_]";
    return NftStatus::kError;
  }
  int e = 0;
  int fd = open_socket(&portid_, &e);
  if (fd < 0) {
    *err = std::string("fence: netlink socket: ") + strerror(e);
    return e == EPERM ? NftStatus::kPermission : NftStatus::kError;
  }
  seq_ = uint32_t(time(nullptr));
  for (uint8_t family : {uint8_t(NFPROTO_IPV4), uint8_t(NFPROTO_ARP)}) {
    Batch del(&seq_, 1);
    put_del_table(del, family, cfg.table);
    Outcome o = run_batch(fd, del);
    if (o.err == 0 || o.err == ENOENT) continue;
    ::close(fd);
    *err = "fence: table " + std::string(family_name(family)) + " " + cfg.table +
           " is held by another running t2cp (" + strerror(o.err) + "): stop it or use another --instance";
    return NftStatus::kBusy;
  }
  Batch b(&seq_, 6);
  put_table(b, NFPROTO_IPV4, cfg.table);
  put_table(b, NFPROTO_ARP, cfg.table);
  if (cfg.role == FenceConfig::Role::kGateway) {
    put_base_chain(b, NFPROTO_IPV4, cfg.table, "fwd", NF_INET_FORWARD, kPriority, What::kFenceChain);
    put_base_chain(b, NFPROTO_ARP, cfg.table, "in", NF_ARP_IN, kPriority, What::kFenceChain);
  } else {
    put_base_chain(b, NFPROTO_IPV4, cfg.table, "out", NF_INET_LOCAL_OUT, kPriority, What::kFenceChain);
    put_base_chain(b, NFPROTO_IPV4, cfg.table, "in", NF_INET_PRE_ROUTING, kPriority, What::kFenceChain);
    put_base_chain(b, NFPROTO_ARP, cfg.table, "out", NF_ARP_OUT, kPriority, What::kFenceChain);
  }
  Outcome o = run_batch(fd, b);
  if (o.err) {
    ::close(fd);
    *err = "fence: creating table " + cfg.table + " failed: " + strerror(o.err) +
           (o.err == EOPNOTSUPP || o.err == ENOENT ? " (kernel lacks nftables ip/arp families or owned tables, Linux >= 5.13)" : "");
    return o.err == EPERM ? NftStatus::kPermission : NftStatus::kError;
  }
  fd_ = fd;
  table_ = cfg.table;
  cfg_ = cfg;
  return NftStatus::kOk;
}

NftStatus FenceTables::engage(std::string* err, const uint8_t* mac) {
  if (!prepared()) {
    *err = "fence: not prepared";
    return NftStatus::kError;
  }
  if (engaged_) return NftStatus::kOk;
  if (mac) std::memcpy(cfg_.mac, mac, 6);
  Batch b(&seq_, 4);
  const uint32_t vip = cfg_.vip;
  if (cfg_.role == FenceConfig::Role::kGateway) {
    Match ip[] = {{NFT_PAYLOAD_LL_HEADER, kEtherSaddrOffset, cfg_.mac, 6},
                  {NFT_PAYLOAD_NETWORK_HEADER, kIpSaddrOffset, &vip, 4}};
    put_drop_rule(b, NFPROTO_IPV4, table_, "fwd", ip, 2);
    Match arp[] = {{NFT_PAYLOAD_NETWORK_HEADER, kArpShaOffset, cfg_.mac, 6},
                   {NFT_PAYLOAD_NETWORK_HEADER, kArpSpaOffset, &vip, 4}};
    put_drop_rule(b, NFPROTO_ARP, table_, "in", arp, 2);
  } else {
    Match out[] = {{NFT_PAYLOAD_NETWORK_HEADER, kIpSaddrOffset, &vip, 4}};
    put_drop_rule(b, NFPROTO_IPV4, table_, "out", out, 1);
    Match in[] = {{NFT_PAYLOAD_NETWORK_HEADER, kIpDaddrOffset, &vip, 4}};
    put_drop_rule(b, NFPROTO_IPV4, table_, "in", in, 1);
    Match arp[] = {{NFT_PAYLOAD_NETWORK_HEADER, kArpSpaOffset, &vip, 4}};
    put_drop_rule(b, NFPROTO_ARP, table_, "out", arp, 1);
  }
  Outcome o = run_batch(fd_, b);
  if (o.err) {
    *err = std::string("fence: adding the drop rules failed: ") + strerror(o.err);
    return NftStatus::kError;
  }
  engaged_ = true;
  return NftStatus::kOk;
}

void FenceTables::release() {
  if (!prepared() || !engaged_) return;
  struct Chain { uint8_t family; const char* name; };
  static const Chain kGateway[] = {{NFPROTO_IPV4, "fwd"}, {NFPROTO_ARP, "in"}};
  static const Chain kPrimary[] = {{NFPROTO_IPV4, "out"}, {NFPROTO_IPV4, "in"}, {NFPROTO_ARP, "out"}};
  const bool gw = cfg_.role == FenceConfig::Role::kGateway;
  Batch b(&seq_, 3);
  for (const Chain& ch : gw ? std::vector<Chain>(kGateway, kGateway + 2) : std::vector<Chain>(kPrimary, kPrimary + 3)) {
    // DELRULE naming only the table and the chain flushes that chain.
    nlmsghdr* nlh = b.open(NFT_MSG_DELRULE, 0, ch.family, What::kFenceRule);
    mnl_attr_put_strz(nlh, NFTA_RULE_TABLE, table_.c_str());
    mnl_attr_put_strz(nlh, NFTA_RULE_CHAIN, ch.name);
    b.close(nlh);
  }
  run_batch(fd_, b);
  engaged_ = false;
}

void FenceTables::remove() {
  if (fd_ < 0) return;
  for (uint8_t family : {uint8_t(NFPROTO_IPV4), uint8_t(NFPROTO_ARP)}) {
    Batch del(&seq_, 1);
    put_del_table(del, family, table_);
    run_batch(fd_, del);
  }
  ::close(fd_);
  fd_ = -1;
  engaged_ = false;
  table_.clear();
}

}  // namespace t2cp
