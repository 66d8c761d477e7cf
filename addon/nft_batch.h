// nf_tables over raw netlink (libmnl): the batch, expression and message
// builders that every table the program owns is written with (the backup's
// tables in outgoing_nftables.cc, the fences in recovery_fence.cc).
//
// Every change is one nfnetlink batch (BATCH_BEGIN ... BATCH_END, res_id
// NFNL_SUBSYS_NFTABLES), so the kernel applies all of it or none. Each message
// in a batch asks for an ACK; the kernel queues all of them on our socket
// before sendmsg() returns, and run_batch() reports the first failing message.
//
// Thread: any, one socket per thread at a time. No globals.
#pragma once
#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <sys/types.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace t2cp {
namespace nft {

// Upper bound for one message we build; the largest (a queue rule) is ~300 B.
constexpr size_t kMaxMsgBytes = 1024;
// The kernel answers a batch synchronously; this only guards against a bug.
constexpr int kReplyTimeoutMs = 2000;

// What one batch message does, to name the missing kernel feature on error.
enum class What {
  kBatch,       // the batch as a whole (kernel rejected it before any message)
  kTransport,   // sendmsg/recv on our socket
  kIpTable, kArpTable, kIpChain, kArpChain,
  kMarkRule, kQueueRule, kArpRule, kDelTable,
  kInChain, kFenceTable, kFenceChain, kFenceRule, kFlushChain, kGuardRule, kRelayRule,
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

struct TableInfo {
  bool has_owner = false;
  uint32_t owner = 0;   // netlink port id of the owning socket
};

// ---- socket ----
// A NETLINK_NETFILTER socket bound to a kernel-chosen port id; -1 and *err.
int open_socket(uint32_t* portid, int* err);
// Discards replies left over from an earlier exchange.
void drain(int fd);
Outcome run_batch(int fd, Batch& b);

// ---- expressions ----
void put_be32(nlmsghdr* nlh, uint16_t type, uint32_t v);
void put_cmp_eq(nlmsghdr* nlh, const void* value, uint32_t len);
void put_payload_eq(nlmsghdr* nlh, uint32_t base, uint32_t offset, const void* value, uint32_t len);
void put_payload_range(nlmsghdr* nlh, uint32_t base, uint32_t offset, const void* from, const void* to, uint32_t len);
void put_meta_eq(nlmsghdr* nlh, uint32_t key, const void* value, uint32_t len);
void put_payload_load(nlmsghdr* nlh, uint32_t base, uint32_t offset, uint32_t len, uint32_t reg = NFT_REG_1);
void put_map_lookup(nlmsghdr* nlh, uint32_t set_id, uint32_t sreg, uint32_t dreg);
void put_payload_write(nlmsghdr* nlh, uint32_t base, uint32_t offset, uint32_t len, uint32_t sreg, uint32_t csum_offset);
void put_counter(nlmsghdr* nlh);
void put_verdict(nlmsghdr* nlh, uint32_t code);
void put_nfqueue_target(nlmsghdr* nlh, uint16_t queue_num);

// ---- messages ----
void put_new_table(Batch& b, uint8_t family, const std::string& name, What w);
void put_del_table(Batch& b, uint8_t family, const std::string& name);
void put_base_chain(Batch& b, uint8_t family, const std::string& table, const char* chain,
                    uint32_t hooknum, int32_t priority, What w);
nlmsghdr* begin_rule(Batch& b, uint8_t family, const std::string& table, const char* chain,
                     What w, nlattr** exprs, bool append = true);
void end_rule(Batch& b, nlmsghdr* nlh, nlattr* exprs);
// An anonymous constant map (bound to the rule of the same batch that looks it up by set_id,
// gone with that rule), then its elements, kMapElementsPerMsg per message. Keys and values
// as the registers hold them: a concatenation's parts each padded to 4 bytes. The types are
// nft's own numbers (a concatenation's: the parts' types, 6 bits each, the first highest), so
// that `nft list` shows the elements as addresses and ports.
constexpr uint32_t kNftTypeIpv4Addr = 7, kNftTypeInetService = 13, kNftTypeBits = 6;
constexpr char kAnonymousMap[] = "__map%d";
constexpr size_t kMapElementsPerMsg = 20;
struct MapElement {
  uint8_t key[16] = {}, data[4] = {};
  uint32_t key_len = 0, data_len = 0;
};
void put_new_anonymous_map(Batch& b, uint8_t family, const std::string& table, uint32_t set_id, uint32_t key_type,
                           uint32_t key_len, uint32_t data_type, uint32_t data_len, uint32_t size, What w);
void put_map_elements(Batch& b, uint8_t family, const std::string& table, uint32_t set_id,
                      const std::vector<MapElement>& elements, What w);

// ---- queries ----
// GETTABLE. Returns 0 or a positive errno.
int get_table(int fd, uint32_t* seq, uint32_t portid, uint8_t family, const std::string& name, TableInfo* info);
// Which process holds netlink port `portid`; best effort, for messages.
std::string describe_owner(uint32_t portid);
const char* family_name(uint8_t family);
bool valid_table_name(const std::string& s);

}  // namespace nft
}  // namespace t2cp
