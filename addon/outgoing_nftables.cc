// Outgoing traffic processor, kernel side: the owned nftables tables, written
// as raw nf_tables netlink messages with libmnl (see outgoing_nftables.h).
//
// Every change is one nfnetlink batch (BATCH_BEGIN ... BATCH_END, res_id
// NFNL_SUBSYS_NFTABLES), so the kernel applies all of it or none. Each message
// in a batch asks for an ACK; the kernel queues all of them on our socket
// before sendmsg() returns, and we report the first failing message.
#include "outgoing_nftables.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nf_tables_compat.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/x_tables.h>
#include <linux/netfilter/xt_NFQUEUE.h>
#include <linux/netfilter_arp.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

namespace t2cp {
namespace {

constexpr char kChain[] = "out";
// NF_IP_PRI_MANGLE: before any filter-priority (0) output chain of the host's
// own ruleset can drop or accept the replica's packets.
constexpr int32_t kIpOutPriority = -150;
constexpr int32_t kArpOutPriority = 0;   // NF_IP_PRI_FILTER equivalent for arp
constexpr size_t kMaxPorts = 64;
constexpr size_t kMaxTableName = 31;
// Upper bound for one message we build; the largest (a queue rule) is ~300 B.
constexpr size_t kMaxMsgBytes = 1024;
// The kernel answers a batch synchronously; this only guards against a bug.
constexpr int kReplyTimeoutMs = 2000;
// ARP header (RFC 826) for Ethernet/IPv4: htype 2, ptype 2, hlen 1, plen 1,
// oper 2, sender hardware address 6, then the sender protocol address.
constexpr uint32_t kArpSenderIpOffset = 14;
constexpr uint32_t kIpSaddrOffset = 12;   // RFC 791
constexpr uint32_t kTcpSportOffset = 0;   // RFC 793

// What one batch message does, to name the missing kernel feature on error.
enum class What {
  kBatch,       // the batch as a whole (kernel rejected it before any message)
  kTransport,   // sendmsg/recv on our socket
  kIpTable, kArpTable, kIpChain, kArpChain,
  kMarkRule, kQueueRule, kArpRule, kDelTable,
};

struct Outcome {
  int err = 0;                 // positive errno of the first failure, 0 = ok
  What what = What::kBatch;
};

// One nfnetlink batch under construction. Sequence numbers come from the
// owning NftTables so that replies can be matched to messages.
class Batch {
 public:
  Batch(uint32_t* seq, size_t max_msgs)
      : seq_(seq), buf_((max_msgs + 2) * kMaxMsgBytes) {
    control(NFNL_MSG_BATCH_BEGIN);
  }

  // Starts an nf_tables message that the kernel must ACK.
  nlmsghdr* open(uint16_t nft_msg, uint16_t flags, uint8_t family, What what) {
    nlmsghdr* nlh = header((NFNL_SUBSYS_NFTABLES << 8) | nft_msg,
                           NLM_F_REQUEST | NLM_F_ACK | flags, family, 0);
    sent_.push_back({nlh->nlmsg_seq, what});
    return nlh;
  }
  void close(nlmsghdr* nlh) {
    if (nlh->nlmsg_len > kMaxMsgBytes) abort();   // kMaxMsgBytes too small
    len_ += nlh->nlmsg_len;
  }
  // Appends BATCH_END; returns the bytes to send.
  const char* finish(size_t* len) {
    control(NFNL_MSG_BATCH_END);
    *len = len_;
    return buf_.data();
  }

  struct Sent { uint32_t seq; What what; };
  const std::vector<Sent>& sent() const { return sent_; }

 private:
  nlmsghdr* header(uint16_t type, uint16_t flags, uint8_t family,
                   uint16_t res_id) {
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf_.data() + len_);
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = flags;
    nlh->nlmsg_seq = ++*seq_;
    auto* nfg = static_cast<nfgenmsg*>(
        mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
    nfg->nfgen_family = family;
    nfg->version = NFNETLINK_V0;
    nfg->res_id = htons(res_id);
    return nlh;
  }
  // BATCH_BEGIN/END: not acked; an error on them means the kernel refused
  // the batch as a whole.
  void control(uint16_t type) {
    close(header(type, NLM_F_REQUEST, AF_UNSPEC, NFNL_SUBSYS_NFTABLES));
  }

  uint32_t* seq_;
  std::vector<char> buf_;
  size_t len_ = 0;
  std::vector<Sent> sent_;
};

// ---- socket ---------------------------------------------------------------

int open_socket(uint32_t* portid, int* err) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) { *err = errno; return -1; }
  // Error ACKs then carry only the request's header, not the whole rule.
  int one = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;   // nl_pid 0: the kernel picks our port id
  socklen_t alen = sizeof addr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen) < 0) {
    *err = errno;
    ::close(fd);
    return -1;
  }
  *portid = addr.nl_pid;
  return fd;
}

int64_t now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Waits for one datagram from the kernel into buf; returns its length or
// -errno.
ssize_t recv_reply(int fd, std::vector<char>& buf, int64_t deadline) {
  for (;;) {
    int wait = int(deadline - now_ms());
    if (wait < 0) return -ETIMEDOUT;
    pollfd p{fd, POLLIN, 0};
    int r = poll(&p, 1, wait);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -errno;
    if (r == 0) return -ETIMEDOUT;
    ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    return n;
  }
}

// Discards replies left over from an earlier exchange that ended early, so
// that sequence numbers of the next one match.
void drain(int fd) {
  char junk[8192];
  while (recv(fd, junk, sizeof junk, MSG_DONTWAIT) > 0) {
  }
}

// Sends the batch and reads one ACK per message. Returns the first failing
// message in batch order (a failure makes the kernel abort the whole batch,
// and later messages often fail only as a consequence of the first).
Outcome run_batch(int fd, Batch& b) {
  size_t len = 0;
  const char* data = b.finish(&len);
  drain(fd);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(fd, data, len, 0, reinterpret_cast<sockaddr*>(&kernel),
             sizeof kernel) < 0)
    return {errno, What::kTransport};

  std::set<uint32_t> pending;
  for (const auto& s : b.sent()) pending.insert(s.seq);
  Outcome first;
  uint32_t first_seq = 0;
  std::vector<char> buf(64 * 1024);
  const int64_t deadline = now_ms() + kReplyTimeoutMs;
  while (!pending.empty()) {
    ssize_t n = recv_reply(fd, buf, deadline);
    if (n < 0) return first.err ? first : Outcome{int(-n), What::kTransport};
    int rest = int(n);
    for (auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data());
         mnl_nlmsg_ok(nlh, rest); nlh = mnl_nlmsg_next(nlh, &rest)) {
      if (nlh->nlmsg_type != NLMSG_ERROR) continue;
      auto* e = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
      if (!pending.erase(nlh->nlmsg_seq)) {
        // Not one of our messages: the kernel refused the batch itself
        // (e.g. ENOMEM, or a malformed batch) and acks nothing else.
        if (e->error) return first.err ? first : Outcome{-e->error, What::kBatch};
        continue;
      }
      if (e->error && (!first.err || nlh->nlmsg_seq < first_seq)) {
        first_seq = nlh->nlmsg_seq;
        for (const auto& s : b.sent())
          if (s.seq == first_seq) first = {-e->error, s.what};
      }
    }
  }
  return first;
}

// ---- expressions ----------------------------------------------------------

// One element of NFTA_RULE_EXPRESSIONS: {NFTA_EXPR_NAME, NFTA_EXPR_DATA {..}}.
// The attributes put while it is in scope go into NFTA_EXPR_DATA.
class Expr {
 public:
  Expr(nlmsghdr* nlh, const char* name) : nlh_(nlh) {
    elem_ = mnl_attr_nest_start(nlh, NFTA_LIST_ELEM);
    mnl_attr_put_strz(nlh, NFTA_EXPR_NAME, name);
    data_ = mnl_attr_nest_start(nlh, NFTA_EXPR_DATA);
  }
  ~Expr() {
    mnl_attr_nest_end(nlh_, data_);
    mnl_attr_nest_end(nlh_, elem_);
  }
  Expr(const Expr&) = delete;
  Expr& operator=(const Expr&) = delete;

 private:
  nlmsghdr* nlh_;
  nlattr* elem_;
  nlattr* data_;
};

void put_be32(nlmsghdr* nlh, uint16_t type, uint32_t v) {
  mnl_attr_put_u32(nlh, type, htonl(v));
}

// reg1 == value (len bytes, already in packet byte order).
void put_cmp_eq(nlmsghdr* nlh, const void* value, uint32_t len) {
  Expr e(nlh, "cmp");
  put_be32(nlh, NFTA_CMP_SREG, NFT_REG_1);
  put_be32(nlh, NFTA_CMP_OP, NFT_CMP_EQ);
  nlattr* d = mnl_attr_nest_start(nlh, NFTA_CMP_DATA);
  mnl_attr_put(nlh, NFTA_DATA_VALUE, len, value);
  mnl_attr_nest_end(nlh, d);
}

// "payload load + cmp": the len bytes at base+offset of the packet equal value.
void put_payload_eq(nlmsghdr* nlh, uint32_t base, uint32_t offset,
                    const void* value, uint32_t len) {
  {
    Expr e(nlh, "payload");
    put_be32(nlh, NFTA_PAYLOAD_DREG, NFT_REG_1);
    put_be32(nlh, NFTA_PAYLOAD_BASE, base);
    put_be32(nlh, NFTA_PAYLOAD_OFFSET, offset);
    put_be32(nlh, NFTA_PAYLOAD_LEN, len);
  }
  put_cmp_eq(nlh, value, len);
}

// "meta load + cmp". Meta values are in host byte order (mark, l4proto).
void put_meta_eq(nlmsghdr* nlh, uint32_t key, const void* value, uint32_t len) {
  {
    Expr e(nlh, "meta");
    put_be32(nlh, NFTA_META_DREG, NFT_REG_1);
    put_be32(nlh, NFTA_META_KEY, key);
  }
  put_cmp_eq(nlh, value, len);
}

// Packet and byte counts, for `nft list table` when debugging a deployment.
void put_counter(nlmsghdr* nlh) { Expr e(nlh, "counter"); }

void put_verdict(nlmsghdr* nlh, uint32_t code) {
  Expr e(nlh, "immediate");
  put_be32(nlh, NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
  nlattr* d = mnl_attr_nest_start(nlh, NFTA_IMMEDIATE_DATA);
  nlattr* v = mnl_attr_nest_start(nlh, NFTA_DATA_VERDICT);
  put_be32(nlh, NFTA_VERDICT_CODE, code);
  mnl_attr_nest_end(nlh, v);
  mnl_attr_nest_end(nlh, d);
}

// xtables NFQUEUE revision 3 through nft_compat (this kernel has no nft
// `queue` expression). flags 0 = no bypass: with no listener on the queue the
// kernel drops the packet instead of letting the replica's output leak.
void put_nfqueue_target(nlmsghdr* nlh, uint16_t queue_num) {
  // XT_ALIGN: x_tables stores target data 8-byte aligned; the kernel copies
  // targetsize (6) bytes out of it.
  char info[XT_ALIGN(sizeof(xt_NFQ_info_v3))] = {};
  xt_NFQ_info_v3 nfq{};
  nfq.queuenum = queue_num;   // host order, as iptables writes it
  nfq.queues_total = 1;
  nfq.flags = 0;
  memcpy(info, &nfq, sizeof nfq);
  Expr e(nlh, "target");
  mnl_attr_put_strz(nlh, NFTA_TARGET_NAME, "NFQUEUE");
  put_be32(nlh, NFTA_TARGET_REV, 3);
  mnl_attr_put(nlh, NFTA_TARGET_INFO, sizeof info, info);
}

// ---- messages -------------------------------------------------------------

void put_new_table(Batch& b, uint8_t family, const std::string& name, What w) {
  // NLM_F_EXCL: a table that appeared since our stale check is someone
  // else's (EEXIST or EPERM), never silently shared.
  nlmsghdr* nlh = b.open(NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL, family, w);
  mnl_attr_put_strz(nlh, NFTA_TABLE_NAME, name.c_str());
  put_be32(nlh, NFTA_TABLE_FLAGS, NFT_TABLE_F_OWNER);
  b.close(nlh);
}

void put_del_table(Batch& b, uint8_t family, const std::string& name) {
  nlmsghdr* nlh = b.open(NFT_MSG_DELTABLE, 0, family, What::kDelTable);
  mnl_attr_put_strz(nlh, NFTA_TABLE_NAME, name.c_str());
  b.close(nlh);
}

void put_base_chain(Batch& b, uint8_t family, const std::string& table,
                    uint32_t hooknum, int32_t priority, What w) {
  nlmsghdr* nlh = b.open(NFT_MSG_NEWCHAIN, NLM_F_CREATE, family, w);
  mnl_attr_put_strz(nlh, NFTA_CHAIN_TABLE, table.c_str());
  mnl_attr_put_strz(nlh, NFTA_CHAIN_NAME, kChain);
  nlattr* hook = mnl_attr_nest_start(nlh, NFTA_CHAIN_HOOK);
  put_be32(nlh, NFTA_HOOK_HOOKNUM, hooknum);
  put_be32(nlh, NFTA_HOOK_PRIORITY, uint32_t(priority));
  mnl_attr_nest_end(nlh, hook);
  put_be32(nlh, NFTA_CHAIN_POLICY, NF_ACCEPT);
  mnl_attr_put_strz(nlh, NFTA_CHAIN_TYPE, "filter");
  b.close(nlh);
}

// Starts a rule appended to <table> out; the caller puts expressions, then
// calls end_rule().
nlmsghdr* begin_rule(Batch& b, uint8_t family, const std::string& table,
                     What w, nlattr** exprs) {
  nlmsghdr* nlh = b.open(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, family, w);
  mnl_attr_put_strz(nlh, NFTA_RULE_TABLE, table.c_str());
  mnl_attr_put_strz(nlh, NFTA_RULE_CHAIN, kChain);
  *exprs = mnl_attr_nest_start(nlh, NFTA_RULE_EXPRESSIONS);
  return nlh;
}

void end_rule(Batch& b, nlmsghdr* nlh, nlattr* exprs) {
  mnl_attr_nest_end(nlh, exprs);
  b.close(nlh);
}

// meta mark == kInjectMark -> accept: our own re-sent packets pass untouched.
void put_mark_exempt_rule(Batch& b, const std::string& table) {
  nlattr* exprs;
  nlmsghdr* nlh = begin_rule(b, NFPROTO_IPV4, table, What::kMarkRule, &exprs);
  uint32_t mark = kInjectMark;
  put_meta_eq(nlh, NFT_META_MARK, &mark, sizeof mark);
  put_verdict(nlh, NF_ACCEPT);
  end_rule(b, nlh, exprs);
}

// ip saddr == vip, l4proto tcp, tcp sport == port -> NFQUEUE queue_num.
void put_queue_rule(Batch& b, const std::string& table, uint32_t vip,
                    uint16_t port, uint16_t queue_num) {
  nlattr* exprs;
  nlmsghdr* nlh = begin_rule(b, NFPROTO_IPV4, table, What::kQueueRule, &exprs);
  put_payload_eq(nlh, NFT_PAYLOAD_NETWORK_HEADER, kIpSaddrOffset, &vip, 4);
  uint8_t tcp = IPPROTO_TCP;
  put_meta_eq(nlh, NFT_META_L4PROTO, &tcp, 1);
  uint16_t sport = htons(port);
  put_payload_eq(nlh, NFT_PAYLOAD_TRANSPORT_HEADER, kTcpSportOffset, &sport, 2);
  put_counter(nlh);
  put_nfqueue_target(nlh, queue_num);
  mnl_attr_nest_end(nlh, exprs);
  // nft_compat hands the protocol to the xtables checkentry hook, as the
  // ipt_entry's ip.proto would (iptables-nft sends the same).
  nlattr* compat = mnl_attr_nest_start(nlh, NFTA_RULE_COMPAT);
  put_be32(nlh, NFTA_RULE_COMPAT_PROTO, IPPROTO_TCP);
  put_be32(nlh, NFTA_RULE_COMPAT_FLAGS, 0);
  mnl_attr_nest_end(nlh, compat);
  b.close(nlh);
}

// arp sender-ip == vip -> drop: the backup never announces the VIP.
void put_arp_drop_rule(Batch& b, const std::string& table, uint32_t vip) {
  nlattr* exprs;
  nlmsghdr* nlh = begin_rule(b, NFPROTO_ARP, table, What::kArpRule, &exprs);
  put_payload_eq(nlh, NFT_PAYLOAD_NETWORK_HEADER, kArpSenderIpOffset, &vip, 4);
  put_counter(nlh);
  put_verdict(nlh, NF_DROP);
  end_rule(b, nlh, exprs);
}

// ---- queries ----------------------------------------------------------------

struct TableInfo {
  bool has_owner = false;
  uint32_t owner = 0;   // netlink port id of the owning socket
};

int table_attr_cb(const nlattr* attr, void* data) {
  auto* tb = static_cast<const nlattr**>(data);
  uint16_t type = mnl_attr_get_type(attr);
  if (type <= NFTA_TABLE_MAX) tb[type] = attr;
  return MNL_CB_OK;
}

int table_msg_cb(const nlmsghdr* nlh, void* data) {
  const nlattr* tb[NFTA_TABLE_MAX + 1] = {};
  mnl_attr_parse(nlh, sizeof(nfgenmsg), table_attr_cb, tb);
  auto* info = static_cast<TableInfo*>(data);
  if (tb[NFTA_TABLE_OWNER] &&
      mnl_attr_validate(tb[NFTA_TABLE_OWNER], MNL_TYPE_U32) == 0) {
    info->has_owner = true;
    info->owner = ntohl(mnl_attr_get_u32(tb[NFTA_TABLE_OWNER]));
  }
  return MNL_CB_OK;
}

// GETTABLE (a plain request, not a batch). Returns 0 or a positive errno.
int get_table(int fd, uint32_t* seq, uint32_t portid, uint8_t family,
              const std::string& name, TableInfo* info) {
  char req[kMaxMsgBytes] = {};
  nlmsghdr* nlh = mnl_nlmsg_put_header(req);
  nlh->nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  nlh->nlmsg_seq = ++*seq;
  auto* nfg = static_cast<nfgenmsg*>(
      mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
  nfg->nfgen_family = family;
  nfg->version = NFNETLINK_V0;
  mnl_attr_put_strz(nlh, NFTA_TABLE_NAME, name.c_str());
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  drain(fd);
  if (sendto(fd, nlh, nlh->nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel),
             sizeof kernel) < 0)
    return errno;
  std::vector<char> buf(16 * 1024);
  const int64_t deadline = now_ms() + kReplyTimeoutMs;
  for (;;) {
    ssize_t n = recv_reply(fd, buf, deadline);
    if (n < 0) return int(-n);
    // mnl_cb_run: table message -> callback; ACK -> STOP; error -> -1/errno.
    int r = mnl_cb_run(buf.data(), size_t(n), nlh->nlmsg_seq, portid,
                       table_msg_cb, info);
    if (r == MNL_CB_ERROR) return errno;
    if (r == MNL_CB_STOP) return 0;
  }
}

// Which process holds netlink port `portid` (NETLINK_NETFILTER) in our
// network namespace: /proc/net/netlink gives the socket's inode, /proc/*/fd
// the process. Best effort; only used to word the kBusy message.
std::string describe_owner(uint32_t portid) {
  std::string out = "netlink portid " + std::to_string(portid);
  FILE* f = fopen("/proc/net/netlink", "re");
  if (!f) return out;
  char line[512];
  unsigned long inode = 0;
  while (fgets(line, sizeof line, f)) {
    int proto;
    unsigned int pid;
    unsigned long ino;
    // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
    if (sscanf(line, "%*s %d %u %*s %*s %*s %*s %*s %*s %lu", &proto, &pid,
               &ino) == 3 && proto == NETLINK_NETFILTER && pid == portid) {
      inode = ino;
      break;
    }
  }
  fclose(f);
  if (!inode) return out;
  const std::string want = "socket:[" + std::to_string(inode) + "]";
  DIR* proc = opendir("/proc");
  if (!proc) return out;
  while (dirent* p = readdir(proc)) {
    if (p->d_name[0] < '0' || p->d_name[0] > '9') continue;
    std::string fddir = std::string("/proc/") + p->d_name + "/fd";
    DIR* fds = opendir(fddir.c_str());
    if (!fds) continue;
    bool found = false;
    while (dirent* d = readdir(fds)) {
      char target[64];
      ssize_t n = readlink((fddir + "/" + d->d_name).c_str(), target,
                           sizeof target - 1);
      if (n > 0 && want.compare(0, std::string::npos, target, size_t(n)) == 0) {
        found = true;
        break;
      }
    }
    closedir(fds);
    if (found) {
      out = "pid " + std::string(p->d_name) + ", " + out;
      break;
    }
  }
  closedir(proc);
  return out;
}

const char* family_name(uint8_t family) {
  return family == NFPROTO_ARP ? "arp" : "ip";
}

bool valid_table_name(const std::string& s) {
  if (s.empty() || s.size() > kMaxTableName) return false;
  for (char c : s)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  return true;
}

std::string validate(const NftConfig& cfg) {
  if (!valid_table_name(cfg.table))
    return "nftables: bad table name \"" + cfg.table +
           "\": use 1-31 characters from [A-Za-z0-9_]";
  if (cfg.vip == 0) return "nftables: vip is 0.0.0.0: set the virtual IP";
  if (cfg.ports.empty() || cfg.ports.size() > kMaxPorts)
    return "nftables: " + std::to_string(cfg.ports.size()) +
           " ports given: replicate 1 to 64 ports";
  std::set<uint16_t> seen;
  for (uint16_t p : cfg.ports) {
    if (p == 0) return "nftables: port 0 in the port list: use 1-65535";
    if (!seen.insert(p).second)
      return "nftables: port " + std::to_string(p) + " listed twice";
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
  Batch b(&seq_, 6 + cfg.ports.size());
  put_new_table(b, NFPROTO_IPV4, cfg.table, What::kIpTable);
  put_base_chain(b, NFPROTO_IPV4, cfg.table, NF_INET_LOCAL_OUT, kIpOutPriority,
                 What::kIpChain);
  put_mark_exempt_rule(b, cfg.table);
  for (uint16_t port : cfg.ports)
    put_queue_rule(b, cfg.table, cfg.vip, port, cfg.queue_num);
  put_new_table(b, NFPROTO_ARP, cfg.table, What::kArpTable);
  put_base_chain(b, NFPROTO_ARP, cfg.table, NF_ARP_OUT, kArpOutPriority,
                 What::kArpChain);
  put_arp_drop_rule(b, cfg.table, cfg.vip);
  Outcome o = run_batch(fd, b);
  if (o.err) return fail(map_create_error(o, cfg.table, err));

  fd_ = fd;
  table_ = cfg.table;
  return NftStatus::kOk;
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
