#include "incoming_capture.h"

#include <arpa/inet.h>
#include <net/if.h>

namespace t2cp {

// Larger than any frame the mirror can deliver: GRO/TSO super-frames reach
// 64 KiB, BIG TCP more. A shorter snaplen would truncate payload we need.
constexpr int kSnapLen = 262144;

std::string capture_filter(const CaptureConfig& cfg) {
  char vip[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &cfg.vip, vip, sizeof vip);
  const char* dir = cfg.outbound ? "dst " : "";
  std::string f = std::string("tcp and ") + dir + "host ";
  f += vip;
  f += " and (";
  for (size_t i = 0; i < cfg.ports.size(); i++) {
    if (i) f += " or ";
    f += std::string(dir) + "port " + std::to_string(cfg.ports[i]);
  }
  return f + ")";
}

std::string Capture::open(const CaptureConfig& cfg) {
  if (if_nametoindex(cfg.ifname.c_str()) == 0)
    return cfg.outbound ? "interface '" + cfg.ifname + "' does not exist: pass --lan-if with the interface toward the servers"
                        : "mirror interface '" + cfg.ifname + "' does not exist: pass --mirror-if with an interface listed by `ip link`";
  char errbuf[PCAP_ERRBUF_SIZE] = "";
  p_ = pcap_create(cfg.ifname.c_str(), errbuf);
  if (!p_) return std::string("cannot capture on ") + cfg.ifname + ": " + errbuf;
  pcap_set_snaplen(p_, kSnapLen);
  pcap_set_promisc(p_, cfg.outbound ? 0 : 1);  // mirrored frames carry other hosts' MACs
  pcap_set_immediate_mode(p_, 1);      // latency: no block timeout batching
  pcap_set_buffer_size(p_, static_cast<int>(cfg.buffer_bytes));
  pcap_set_tstamp_precision(p_, PCAP_TSTAMP_PRECISION_NANO);
  int rc = pcap_activate(p_);
  if (rc < 0) {
    std::string e = std::string("cannot capture on ") + cfg.ifname + ": " + pcap_geterr(p_);
    if (rc == PCAP_ERROR_PERM_DENIED) e += " (run as root or with CAP_NET_RAW)";
    close();
    return e;
  }
  if (pcap_datalink(p_) != DLT_EN10MB) {
    close();
    return "interface '" + cfg.ifname + "' is not Ethernet";
  }
  // The mirror port only receives: frames we might send never matter. The
  // recorder wants only what this host sends toward the servers.
  pcap_setdirection(p_, cfg.outbound ? PCAP_D_OUT : PCAP_D_IN);
  bpf_program prog;
  std::string filter = capture_filter(cfg);
  if (pcap_compile(p_, &prog, filter.c_str(), 1, PCAP_NETMASK_UNKNOWN) < 0 || pcap_setfilter(p_, &prog) < 0) {
    std::string e = "cannot install capture filter '" + filter + "': " + pcap_geterr(p_);
    close();
    return e;
  }
  pcap_freecode(&prog);
  if (pcap_setnonblock(p_, 1, errbuf) < 0) {
    close();
    return std::string("cannot make capture non-blocking: ") + errbuf;
  }
  fd_ = pcap_get_selectable_fd(p_);
  if (fd_ < 0) {
    close();
    return "capture on " + cfg.ifname + " has no pollable descriptor";
  }
  return "";
}

void Capture::close() {
  if (p_) pcap_close(p_);
  p_ = nullptr;
  fd_ = -1;
}

bool Capture::stats(uint64_t* kernel_drops, uint64_t* if_drops) {
  pcap_stat st{};
  if (!p_ || pcap_stats(p_, &st) < 0) return false;
  *kernel_drops = st.ps_drop;
  *if_drops = st.ps_ifdrop;
  return true;
}

}  // namespace t2cp
