#include "nft_batch.h"

#include <dirent.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nf_tables_compat.h>
#include <linux/netfilter/x_tables.h>
#include <linux/netfilter/xt_NFQUEUE.h>
#include <linux/netfilter_arp.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

namespace t2cp {
namespace nft {

constexpr size_t kMaxTableName = 31;
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

// "payload load": the len bytes at base+offset of the packet into reg (reg1 unless named; a
// 32-bit register's unused tail is zeroed, as a concatenation's key wants).
void put_payload_load(nlmsghdr* nlh, uint32_t base, uint32_t offset, uint32_t len, uint32_t reg) {
  Expr e(nlh, "payload");
  put_be32(nlh, NFTA_PAYLOAD_DREG, reg);
  put_be32(nlh, NFTA_PAYLOAD_BASE, base);
  put_be32(nlh, NFTA_PAYLOAD_OFFSET, offset);
  put_be32(nlh, NFTA_PAYLOAD_LEN, len);
}

// "payload load + cmp": the len bytes at base+offset of the packet equal value.
void put_payload_eq(nlmsghdr* nlh, uint32_t base, uint32_t offset,
                    const void* value, uint32_t len) {
  put_payload_load(nlh, base, offset, len);
  put_cmp_eq(nlh, value, len);
}

// "payload load + range": the len bytes at base+offset lie in [from, to]
// (network order, compared as big-endian numbers).
void put_payload_range(nlmsghdr* nlh, uint32_t base, uint32_t offset, const void* from, const void* to,
                       uint32_t len) {
  put_payload_load(nlh, base, offset, len);
  Expr e(nlh, "range");
  put_be32(nlh, NFTA_RANGE_SREG, NFT_REG_1);
  put_be32(nlh, NFTA_RANGE_OP, NFT_RANGE_EQ);
  nlattr* d = mnl_attr_nest_start(nlh, NFTA_RANGE_FROM_DATA);
  mnl_attr_put(nlh, NFTA_DATA_VALUE, len, from);
  mnl_attr_nest_end(nlh, d);
  d = mnl_attr_nest_start(nlh, NFTA_RANGE_TO_DATA);
  mnl_attr_put(nlh, NFTA_DATA_VALUE, len, to);
  mnl_attr_nest_end(nlh, d);
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

// "lookup" in the map of this batch's set id: the key from sreg on, the value into dreg; no
// element, no match.
void put_map_lookup(nlmsghdr* nlh, uint32_t set_id, uint32_t sreg, uint32_t dreg) {
  Expr e(nlh, "lookup");
  mnl_attr_put_strz(nlh, NFTA_LOOKUP_SET, kAnonymousMap);
  put_be32(nlh, NFTA_LOOKUP_SET_ID, set_id);
  put_be32(nlh, NFTA_LOOKUP_SREG, sreg);
  put_be32(nlh, NFTA_LOOKUP_DREG, dreg);
}

// "payload write": the len bytes of sreg written at base+offset, the Internet checksum at
// base+csum_offset updated for the change.
void put_payload_write(nlmsghdr* nlh, uint32_t base, uint32_t offset, uint32_t len, uint32_t sreg, uint32_t csum_offset) {
  Expr e(nlh, "payload");
  put_be32(nlh, NFTA_PAYLOAD_SREG, sreg);
  put_be32(nlh, NFTA_PAYLOAD_BASE, base);
  put_be32(nlh, NFTA_PAYLOAD_OFFSET, offset);
  put_be32(nlh, NFTA_PAYLOAD_LEN, len);
  put_be32(nlh, NFTA_PAYLOAD_CSUM_TYPE, NFT_PAYLOAD_CSUM_INET);
  put_be32(nlh, NFTA_PAYLOAD_CSUM_OFFSET, csum_offset);
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

void put_base_chain(Batch& b, uint8_t family, const std::string& table, const char* chain,
                    uint32_t hooknum, int32_t priority, What w) {
  nlmsghdr* nlh = b.open(NFT_MSG_NEWCHAIN, NLM_F_CREATE, family, w);
  mnl_attr_put_strz(nlh, NFTA_CHAIN_TABLE, table.c_str());
  mnl_attr_put_strz(nlh, NFTA_CHAIN_NAME, chain);
  nlattr* hook = mnl_attr_nest_start(nlh, NFTA_CHAIN_HOOK);
  put_be32(nlh, NFTA_HOOK_HOOKNUM, hooknum);
  put_be32(nlh, NFTA_HOOK_PRIORITY, uint32_t(priority));
  mnl_attr_nest_end(nlh, hook);
  put_be32(nlh, NFTA_CHAIN_POLICY, NF_ACCEPT);
  mnl_attr_put_strz(nlh, NFTA_CHAIN_TYPE, "filter");
  b.close(nlh);
}

// Starts a rule appended to (or, !append, put first in) <table> <chain>; the
// caller puts expressions, then calls end_rule().
nlmsghdr* begin_rule(Batch& b, uint8_t family, const std::string& table, const char* chain,
                     What w, nlattr** exprs, bool append) {
  nlmsghdr* nlh = b.open(NFT_MSG_NEWRULE, NLM_F_CREATE | (append ? NLM_F_APPEND : 0), family, w);
  mnl_attr_put_strz(nlh, NFTA_RULE_TABLE, table.c_str());
  mnl_attr_put_strz(nlh, NFTA_RULE_CHAIN, chain);
  *exprs = mnl_attr_nest_start(nlh, NFTA_RULE_EXPRESSIONS);
  return nlh;
}

void end_rule(Batch& b, nlmsghdr* nlh, nlattr* exprs) {
  mnl_attr_nest_end(nlh, exprs);
  b.close(nlh);
}

void put_new_anonymous_map(Batch& b, uint8_t family, const std::string& table, uint32_t set_id, uint32_t key_type,
                           uint32_t key_len, uint32_t data_type, uint32_t data_len, uint32_t size, What w) {
  nlmsghdr* nlh = b.open(NFT_MSG_NEWSET, NLM_F_CREATE, family, w);
  mnl_attr_put_strz(nlh, NFTA_SET_TABLE, table.c_str());
  mnl_attr_put_strz(nlh, NFTA_SET_NAME, kAnonymousMap);
  put_be32(nlh, NFTA_SET_ID, set_id);
  put_be32(nlh, NFTA_SET_FLAGS, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_MAP);
  put_be32(nlh, NFTA_SET_KEY_TYPE, key_type);
  put_be32(nlh, NFTA_SET_KEY_LEN, key_len);
  put_be32(nlh, NFTA_SET_DATA_TYPE, data_type);
  put_be32(nlh, NFTA_SET_DATA_LEN, data_len);
  nlattr* desc = mnl_attr_nest_start(nlh, NFTA_SET_DESC);
  put_be32(nlh, NFTA_SET_DESC_SIZE, size);
  mnl_attr_nest_end(nlh, desc);
  b.close(nlh);
}

void put_map_elements(Batch& b, uint8_t family, const std::string& table, uint32_t set_id,
                      const std::vector<MapElement>& elements, What w) {
  for (size_t from = 0; from < elements.size(); from += kMapElementsPerMsg) {
    nlmsghdr* nlh = b.open(NFT_MSG_NEWSETELEM, NLM_F_CREATE, family, w);
    mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, table.c_str());
    mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, kAnonymousMap);
    put_be32(nlh, NFTA_SET_ELEM_LIST_SET_ID, set_id);
    nlattr* list = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_LIST_ELEMENTS);
    for (size_t i = from; i < std::min(elements.size(), from + kMapElementsPerMsg); i++) {
      const MapElement& m = elements[i];
      nlattr* el = mnl_attr_nest_start(nlh, NFTA_LIST_ELEM);
      nlattr* key = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_KEY);
      mnl_attr_put(nlh, NFTA_DATA_VALUE, m.key_len, m.key);
      mnl_attr_nest_end(nlh, key);
      nlattr* data = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_DATA);
      mnl_attr_put(nlh, NFTA_DATA_VALUE, m.data_len, m.data);
      mnl_attr_nest_end(nlh, data);
      mnl_attr_nest_end(nlh, el);
    }
    mnl_attr_nest_end(nlh, list);
    b.close(nlh);
  }
}

static int table_attr_cb(const nlattr* attr, void* data) {
  auto* tb = static_cast<const nlattr**>(data);
  uint16_t type = mnl_attr_get_type(attr);
  if (type <= NFTA_TABLE_MAX) tb[type] = attr;
  return MNL_CB_OK;
}

static int table_msg_cb(const nlmsghdr* nlh, void* data) {
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

}  // namespace nft
}  // namespace t2cp
