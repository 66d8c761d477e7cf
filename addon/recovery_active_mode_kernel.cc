#include "recovery_active_mode_kernel.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <net/if.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "outgoing_nftables.h"  // kInjectMark

namespace t2cp {
namespace {

// enum bpf_attach_type, Linux 6.6 (include/uapi/linux/bpf.h): Debian 12's
// headers predate tcx, the running kernel decides.
constexpr int kTcxIngress = 46, kTcxEgress = 47;

std::string errno_text(int e) { return std::strerror(e < 0 ? -e : e); }

int find_prog(bpf_object* obj, const char* name) {
  bpf_program* p = bpf_object__find_program_by_name(obj, name);
  return p ? bpf_program__fd(p) : -1;
}

int find_map(bpf_object* obj, const char* name) {
  bpf_map* m = bpf_object__find_map_by_name(obj, name);
  return m ? bpf_map__fd(m) : -1;
}

// The pins under a folder: the two links, then the maps.
const char* const kPins[] = {"ingress", "egress", "flows", "stats"};

void sum_stats(int stats_fd, uint64_t out[T2CP_ACTIVE_STAT_COUNT]) {
  int cpus = libbpf_num_possible_cpus();
  std::vector<uint64_t> per_cpu(cpus > 0 ? cpus : 1);
  for (uint32_t i = 0; i < T2CP_ACTIVE_STAT_COUNT; i++) {
    out[i] = 0;
    if (stats_fd < 0 || bpf_map_lookup_elem(stats_fd, &i, per_cpu.data()) != 0) continue;
    for (uint64_t v : per_cpu) out[i] += v;
  }
}

}  // namespace

t2cp_active_key KernelTranslator::map_key(const FlowKey& k) {
  t2cp_active_key m{};
  m.client_addr = k.client_ip;
  m.client_port = htons(k.client_port);
  m.vip_port = htons(k.server_port);
  return m;
}

std::string KernelTranslator::load_only(const std::string& object_path, uint32_t vip, uint32_t max_flows) {
  close();
  libbpf_set_print(nullptr);  // the addon never prints; failures come back as text
  obj_ = bpf_object__open_file(object_path.c_str(), nullptr);
  if (!obj_) {
    int e = errno;
    return "cannot open the active-mode translator " + object_path + ": " + errno_text(e) + " (rebuild: npm run build)";
  }
  bpf_map* flows = bpf_object__find_map_by_name(obj_, "t2cp_flows");
  if (!flows || bpf_map__set_max_entries(flows, max_flows) != 0) {
    close();
    return "the active-mode translator " + object_path + " has no flow map (rebuild: npm run build)";
  }
  int rc = bpf_object__load(obj_);
  if (rc != 0) {
    close();
    return "the kernel refused the active-mode translator (BPF): " + errno_text(rc) +
           " (needs CAP_BPF and CONFIG_BPF_SYSCALL)";
  }
  prog_in_ = find_prog(obj_, "t2cp_active_ingress");
  prog_out_ = find_prog(obj_, "t2cp_active_egress");
  flows_fd_ = find_map(obj_, "t2cp_flows");
  stats_fd_ = find_map(obj_, "t2cp_stats");
  int config_fd = find_map(obj_, "t2cp_config");
  t2cp_active_config cfg{vip, kInjectMark, kTranslatedMark};
  uint32_t zero = 0;
  if (prog_in_ < 0 || prog_out_ < 0 || flows_fd_ < 0 || stats_fd_ < 0 || config_fd < 0 ||
      bpf_map_update_elem(config_fd, &zero, &cfg, BPF_ANY) != 0) {
    close();
    return "the active-mode translator " + object_path + " is incomplete (rebuild: npm run build)";
  }
  return "";
}

std::string KernelTranslator::open(const std::string& object_path, const std::string& ifname, uint32_t vip,
                                   uint32_t max_flows) {
  std::string err = load_only(object_path, vip, max_flows);
  if (!err.empty()) return err;
  unsigned ifindex = if_nametoindex(ifname.c_str());
  if (!ifindex) {
    close();
    return "interface " + ifname + " does not exist (check --vip-if)";
  }
  link_in_ = bpf_link_create(prog_in_, int(ifindex), bpf_attach_type(kTcxIngress), nullptr);
  int e = errno;
  if (link_in_ >= 0) {
    link_out_ = bpf_link_create(prog_out_, int(ifindex), bpf_attach_type(kTcxEgress), nullptr);
    e = errno;
  }
  if (link_in_ < 0 || link_out_ < 0) {
    close();
    return "cannot attach the active-mode translator to " + ifname + " (tcx, Linux 6.6+): " + errno_text(e);
  }
  return "";
}

bool KernelTranslator::add(const Flow& f) {
  t2cp_active_flow v{};
  v.seq_delta = f.seq_delta;
  v.ts_delta = f.ts_delta;
  v.ts_out_delta = f.ts_out_delta;
  v.p_tsval_at_active = f.p_tsval_at_active;
  v.b_synack_tsval = f.replica.synack_tsval;
  v.p_wscale = f.primary.wscale;
  v.b_wscale = f.replica.wscale;
  v.c_shift = f.client.shift;
  v.b_snd_nxt = f.replica.snd_nxt;
  v.b_rcv_nxt = f.replica.rcv_nxt;
  v.b_tsval = f.replica.tsval;
  v.c_fin_seq = f.client.fin_seq;
  v.c_fin = f.client.fin;
  v.c_rst = f.client.rst;
  v.b_fin = f.replica.fin;
  v.b_rst = f.replica.rst;
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);  // bpf_ktime_get_ns's clock
  v.last_seen_ns = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
  t2cp_active_key k = map_key(f.key);
  return bpf_map_update_elem(flows_fd_, &k, &v, BPF_ANY) == 0;
}

bool KernelTranslator::read(const FlowKey& k, t2cp_active_flow* out) const {
  t2cp_active_key m = map_key(k);
  return bpf_map_lookup_elem(flows_fd_, &m, out) == 0;
}

void KernelTranslator::remove(const FlowKey& k) {
  t2cp_active_key m = map_key(k);
  bpf_map_delete_elem(flows_fd_, &m);
}

void KernelTranslator::stats(uint64_t out[T2CP_ACTIVE_STAT_COUNT]) const { sum_stats(stats_fd_, out); }

std::string KernelTranslator::pin(const std::string& dir) const {
  if (link_in_ < 0 || link_out_ < 0) return "the kernel translator is not attached";
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return "cannot make " + dir + ": " + errno_text(errno);
  const int fds[] = {link_in_, link_out_, flows_fd_, stats_fd_};
  for (size_t i = 0; i < 4; i++) {
    std::string path = dir + "/" + kPins[i];
    unlink(path.c_str());  // a leftover of an earlier run
    if (bpf_obj_pin(fds[i], path.c_str()) != 0) {
      int e = errno;
      PinnedTranslator::release(dir);
      return "cannot pin the kernel translator at " + path + ": " + errno_text(e) +
             (e == EPERM || e == EINVAL ? " (is a bpf filesystem mounted there?)" : "");
    }
  }
  return "";
}

int KernelTranslator::attached(const std::string& ifname, std::string* err) {
  unsigned ifindex = if_nametoindex(ifname.c_str());
  if (!ifindex) {
    *err = "interface " + ifname + " does not exist";
    return -1;
  }
  int total = 0;
  for (int type : {kTcxIngress, kTcxEgress}) {
    uint32_t ids[64], count = 64, flags = 0;
    if (bpf_prog_query(int(ifindex), bpf_attach_type(type), 0, &flags, ids, &count) != 0) {
      *err = "cannot query the tcx programs of " + ifname + ": " + errno_text(errno);
      return -1;
    }
    total += int(count);
  }
  return total;
}

void KernelTranslator::close() {
  for (int* fd : {&link_in_, &link_out_}) {
    if (*fd >= 0) ::close(*fd);  // closing the link detaches the program
    *fd = -1;
  }
  if (obj_) bpf_object__close(obj_);
  obj_ = nullptr;
  prog_in_ = prog_out_ = flows_fd_ = stats_fd_ = -1;
}

bool PinnedTranslator::exists(const std::string& dir) {
  for (const char* name : kPins) {
    struct stat st;
    if (stat((dir + "/" + name).c_str(), &st) == 0) return true;
  }
  return false;
}

std::string PinnedTranslator::reclaim(const std::string& dir) {
  close();
  for (const char* name : {"ingress", "egress"}) {
    int fd = bpf_obj_get((dir + "/" + name).c_str());
    if (fd < 0) return "no pinned translator link at " + dir + "/" + name + ": " + errno_text(errno);
    ::close(fd);  // the pin holds the link
  }
  flows_fd_ = bpf_obj_get((dir + "/flows").c_str());
  stats_fd_ = bpf_obj_get((dir + "/stats").c_str());
  if (flows_fd_ < 0 || stats_fd_ < 0) {
    int e = errno;
    close();
    return "no pinned translator maps under " + dir + ": " + errno_text(e);
  }
  return "";
}

PinnedTranslator::Sweep PinnedTranslator::gc(uint64_t idle_ns, uint64_t linger_ns) {
  Sweep s;
  if (flows_fd_ < 0) return s;
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);  // bpf_ktime_get_ns's clock
  uint64_t now = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
  std::vector<t2cp_active_key> ended;
  t2cp_active_key key{}, next{};
  const void* prev = nullptr;
  while (bpf_map_get_next_key(flows_fd_, prev, &next) == 0) {
    key = next;
    prev = &key;
    t2cp_active_flow v;
    if (bpf_map_lookup_elem(flows_fd_, &key, &v) != 0) continue;
    bool closed = (v.c_fin && v.b_fin) || v.c_rst || v.b_rst;
    uint64_t quiet = now > v.last_seen_ns ? now - v.last_seen_ns : 0;
    if (quiet > (closed ? linger_ns : idle_ns)) ended.push_back(key);
    else s.flows++;
  }
  for (const t2cp_active_key& k : ended) {
    if (bpf_map_delete_elem(flows_fd_, &k) == 0) s.removed++;
  }
  return s;
}

void PinnedTranslator::stats(uint64_t out[T2CP_ACTIVE_STAT_COUNT]) const { sum_stats(stats_fd_, out); }

std::string PinnedTranslator::release(const std::string& dir) {
  std::string err;
  for (const char* name : kPins) {
    std::string path = dir + "/" + name;
    if (unlink(path.c_str()) != 0 && errno != ENOENT && err.empty()) err = "cannot remove " + path + ": " + errno_text(errno);
  }
  if (rmdir(dir.c_str()) != 0 && errno != ENOENT && err.empty()) err = "cannot remove " + dir + ": " + errno_text(errno);
  return err;
}

void PinnedTranslator::close() {
  for (int* fd : {&flows_fd_, &stats_fd_}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
}

}  // namespace t2cp
