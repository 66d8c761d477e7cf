#include "incoming_capture.h"

#include "port_runs.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <net/if_arp.h>
#include <linux/if_ether.h>
#include <net/if.h>
#include <pcap/pcap.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <cstring>
#include <fstream>
#include <iterator>

namespace t2cp {

namespace {

// "tcp and dst host VIP and (dst port P or ...)"; dir "src " for the other
// way. UDP ports go by runs: "dst portrange 10000-10100".
std::string vip_text(const CaptureConfig& cfg) {
  char vip[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &cfg.vip, vip, sizeof vip);
  return vip;
}

// "ip proto 17 and dst host VIP and ip[6:2] & 0x1fff != 0": UDP fragments
// after the first (dir "src " for the other way; proto 6: TCP's). They have no
// UDP or TCP header to match: the engine reassembles them, then matches.
std::string later_fragments(const CaptureConfig& cfg, const char* dir, int proto = 17) {
  return "ip proto " + std::to_string(proto) + " and " + dir + "host " + vip_text(cfg) + " and ip[6:2] & 0x1fff != 0";
}

std::string direction_filter(const CaptureConfig& cfg, const char* dir, const std::vector<uint16_t>& ports,
                             const char* proto = "tcp") {
  std::string f = std::string(proto) + " and " + dir + "host " + vip_text(cfg) + " and (";
  if (std::string(proto) == "udp") {
    const std::vector<PortRun> runs = port_runs(ports);
    for (size_t i = 0; i < runs.size(); i++) {
      if (i) f += " or ";
      f += std::string(dir) + (runs[i].first == runs[i].last ? "port " + std::to_string(runs[i].first)
                                                              : "portrange " + std::to_string(runs[i].first) + "-" +
                                                                    std::to_string(runs[i].last));
    }
    return f + ")";
  }
  for (size_t i = 0; i < ports.size(); i++) {
    if (i) f += " or ";
    f += std::string(dir) + "port " + std::to_string(ports[i]);
  }
  return f + ")";
}

std::string direction_filter(const CaptureConfig& cfg, const char* dir) { return direction_filter(cfg, dir, cfg.ports); }

// "(tcp and dst host VIP and (dst port P or ...)) or (later TCP fragments toward VIP)": the
// clients' segments, also when a narrower link cut them.
std::string client_segments(const CaptureConfig& cfg) {
  return "(" + direction_filter(cfg, "dst ") + ") or (" + later_fragments(cfg, "dst ", 6) + ")";
}

// "(udp and dst host VIP and (dst port P or ...)) or (later fragments toward
// VIP) or ", or "" without UDP ports.
std::string udp_filter(const CaptureConfig& cfg) {
  if (cfg.udp_ports.empty()) return "";
  return "(" + direction_filter(cfg, "dst ", cfg.udp_ports, "udp") + ") or (" + later_fragments(cfg, "dst ") + ") or ";
}

// " or (udp and src host VIP and (src port P or ...)) or (later fragments
// from VIP)": the primary's datagrams compared with the replica's; "" when
// none is.
std::string udp_output_filter(const CaptureConfig& cfg) {
  if (cfg.udp_output_ports.empty()) return "";
  return " or (" + direction_filter(cfg, "src ", cfg.udp_output_ports, "udp") + ") or (" + later_fragments(cfg, "src ") + ")";
}

// The traffic recorder's: what this host sends toward VIP:ports (TCP) and
// VIP:udp_ports (UDP).
std::string outbound_filter(const CaptureConfig& cfg) {
  if (cfg.udp_ports.empty()) return direction_filter(cfg, "dst ");
  const std::string udp = "(" + direction_filter(cfg, "dst ", cfg.udp_ports, "udp") + ") or (" + later_fragments(cfg, "dst ") + ")";
  return cfg.ports.empty() ? udp : "(" + direction_filter(cfg, "dst ") + ") or " + udp;
}

// ICMP errors toward the VIP: fragmentation needed, unreachable, time exceeded.
std::string icmp_errors_filter(const CaptureConfig& cfg) {
  return "icmp and dst host " + vip_text(cfg) + " and (icmp[icmptype] == icmp-unreach or icmp[icmptype] == icmp-timxceed)";
}

// The configuration's ports whose primary output is not kept whole.
std::vector<uint16_t> headers_only_ports(const CaptureConfig& cfg) {
  std::vector<uint16_t> out;
  for (uint16_t p : cfg.ports)
    if (std::find(cfg.whole_output_ports.begin(), cfg.whole_output_ports.end(), p) == cfg.whole_output_ports.end())
      out.push_back(p);
  return out;
}

// libpcap compiles the filter text for Ethernet frames, with kCaptureSnapLen
// as what an accepting path returns.
std::string compile(const std::string& filter, std::vector<sock_filter>* out) {
  pcap_t* dead = pcap_open_dead(DLT_EN10MB, static_cast<int>(kCaptureSnapLen));
  if (!dead) return "cannot compile capture filter: out of memory";
  bpf_program prog{};
  std::string err;
  if (pcap_compile(dead, &prog, filter.c_str(), 1, PCAP_NETMASK_UNKNOWN) < 0) {
    err = "cannot compile capture filter '" + filter + "': " + pcap_geterr(dead);
  } else {
    const sock_filter* insns = reinterpret_cast<const sock_filter*>(prog.bf_insns);  // same layout as struct bpf_insn
    out->assign(insns, insns + prog.bf_len);
    pcap_freecode(&prog);
  }
  pcap_close(dead);
  return err;
}

// A return of a libpcap program: it rejects with 0 and accepts with the
// snaplen it was compiled with.
enum class Return { kNone, kReject, kAccept, kOther };
Return return_kind(const sock_filter& in) {
  if (BPF_CLASS(in.code) != BPF_RET) return Return::kNone;
  if (in.code != (BPF_RET | BPF_K)) return Return::kOther;
  return in.k == 0 ? Return::kReject : in.k == kCaptureSnapLen ? Return::kAccept : Return::kOther;
}

std::string unexpected_return(const std::string& filter) {
  return "cannot build the capture program: libpcap compiled '" + filter + "' to an unexpected return";
}

sock_filter stmt(uint16_t code, uint32_t k) { return BPF_STMT(code, k); }
sock_filter jump(uint16_t code, uint32_t k, uint8_t jt, uint8_t jf) { return BPF_JUMP(code, k, jt, jf); }

// Where the IPv4 total length lies in an untagged Ethernet frame, bytes: the
// second field of the header after the 14-byte Ethernet header. A frame the
// from-VIP program accepted is untagged: it checked EtherType IPv4 at byte 12.
constexpr uint32_t kIpTotalLengthOffset = 14 + 2;

}  // namespace

std::string capture_filter(const CaptureConfig& cfg) {
  if (cfg.outbound) return outbound_filter(cfg);
  if (cfg.ports.empty()) return udp_filter(cfg) + "(" + icmp_errors_filter(cfg) + ")" + udp_output_filter(cfg);
  return client_segments(cfg) + " or " + udp_filter(cfg) + "(" + icmp_errors_filter(cfg) + ") or (" +
         direction_filter(cfg, "src ") + ")" + udp_output_filter(cfg);
}

std::string whole_frames_filter(const CaptureConfig& cfg) {
  if (cfg.outbound) return outbound_filter(cfg);
  const std::string tcp = cfg.ports.empty() ? "" : client_segments(cfg) + " or ";
  std::string f = tcp + udp_filter(cfg) + "(" + icmp_errors_filter(cfg) + ")";
  if (!cfg.whole_output_ports.empty()) f += " or (" + direction_filter(cfg, "src ", cfg.whole_output_ports) + ")";
  return f + udp_output_filter(cfg);
}

std::string header_frames_filter(const CaptureConfig& cfg) {
  const std::vector<uint16_t> headers_only = headers_only_ports(cfg);
  return cfg.outbound || headers_only.empty() ? "" : direction_filter(cfg, "src ", headers_only);
}

std::string capture_program(const CaptureConfig& cfg, std::vector<sock_filter>* prog) {
  prog->clear();
  const std::string to_vip_text = whole_frames_filter(cfg);
  std::vector<sock_filter> to_vip;
  std::string err = compile(to_vip_text, &to_vip);
  if (!err.empty()) return err;
  const std::string from_vip_text = header_frames_filter(cfg);
  if (from_vip_text.empty()) {
    *prog = std::move(to_vip);
    return "";
  }
  std::vector<sock_filter> from_vip;
  err = compile(from_vip_text, &from_vip);
  if (!err.empty()) return err;

  // Layout: to_vip, from_vip, tail. A jump's k counts the instructions after it.
  const size_t start = to_vip.size(), tail = start + from_vip.size();
  for (size_t i = 0; i < to_vip.size(); i++) {
    Return r = return_kind(to_vip[i]);
    if (r == Return::kOther) return unexpected_return(to_vip_text);
    if (r == Return::kReject) to_vip[i] = stmt(BPF_JMP | BPF_JA, static_cast<uint32_t>(start - i - 1));
  }
  for (size_t i = 0; i < from_vip.size(); i++) {
    Return r = return_kind(from_vip[i]);
    if (r == Return::kOther) return unexpected_return(from_vip_text);
    if (r == Return::kAccept) from_vip[i] = stmt(BPF_JMP | BPF_JA, static_cast<uint32_t>(tail - (start + i) - 1));
  }
  const sock_filter tail_insns[] = {
      stmt(BPF_LD | BPF_H | BPF_ABS, kIpTotalLengthOffset),
      jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1),
      stmt(BPF_RET | BPF_K, static_cast<uint32_t>(kCaptureSnapLen)),  // BIG TCP: whole
      stmt(BPF_RET | BPF_K, static_cast<uint32_t>(kHeaderSnapLen)),
  };
  prog->reserve(tail + std::size(tail_insns));
  prog->insert(prog->end(), to_vip.begin(), to_vip.end());
  prog->insert(prog->end(), from_vip.begin(), from_vip.end());
  prog->insert(prog->end(), std::begin(tail_insns), std::end(tail_insns));
  if (prog->size() > BPF_MAXINSNS) {
    prog->clear();
    return "cannot build the capture program: " + std::to_string(cfg.ports.size()) +
           " ports make it longer than the kernel's " + std::to_string(BPF_MAXINSNS) + " instructions";
  }
  return "";
}

// The interface's receive drops (what libpcap reported as ps_ifdrop); 0 when
// sysfs is not readable here.
static uint64_t interface_rx_dropped(const std::string& ifname) {
  std::ifstream in("/sys/class/net/" + ifname + "/statistics/rx_dropped");
  uint64_t v = 0;
  return (in >> v) ? v : 0;
}

// The kernel runs the program on every frame before it is queued to the
// socket, and queues only as many bytes as it returns.
static std::string attach_filter(int fd, const CaptureConfig& cfg) {
  std::vector<sock_filter> prog;
  std::string err = capture_program(cfg, &prog);
  if (!err.empty()) return err;
  sock_fprog fprog{};
  fprog.len = static_cast<unsigned short>(prog.size());
  fprog.filter = prog.data();
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog) < 0)
    err = "cannot install capture filter '" + capture_filter(cfg) + "': " + strerror(errno);
  return err;
}

std::string Capture::open(const CaptureConfig& cfg) {
  unsigned ifindex = if_nametoindex(cfg.ifname.c_str());
  if (ifindex == 0)
    return cfg.outbound ? "interface '" + cfg.ifname + "' does not exist: pass --lan-if with the interface toward the servers"
                        : "mirror interface '" + cfg.ifname + "' does not exist: pass --mirror-if with an interface listed by `ip link`";
  // Protocol 0: the socket receives nothing until bind() below, after the
  // filter is in place, so no unfiltered frame is ever queued.
  fd_ = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    std::string e = "cannot capture on " + cfg.ifname + ": " + strerror(errno);
    if (errno == EPERM || errno == EACCES) e += " (run as root or with CAP_NET_RAW)";
    return e;
  }
  std::string err;
  auto fail = [&](const char* what) {
    if (err.empty()) err = "cannot capture on " + cfg.ifname + " (" + what + ": " + strerror(errno) + ")";
  };
  ifreq ifr{};
  strncpy(ifr.ifr_name, cfg.ifname.c_str(), IFNAMSIZ - 1);
  if (ioctl(fd_, SIOCGIFHWADDR, &ifr) < 0) fail("reading its link type");
  else if (ifr.ifr_hwaddr.sa_family != ARPHRD_ETHER && ifr.ifr_hwaddr.sa_family != ARPHRD_LOOPBACK)
    err = "interface '" + cfg.ifname + "' is not Ethernet";
  if (err.empty() && ioctl(fd_, SIOCGIFFLAGS, &ifr) == 0 && !(ifr.ifr_flags & IFF_UP))
    err = "interface '" + cfg.ifname + "' is down: bring it up with `ip link set " + cfg.ifname + " up`";
  if (err.empty()) err = attach_filter(fd_, cfg);
  // The kernel doubles what it is given (bookkeeping overhead), so the queue
  // holds about --capture-buffer bytes of frames, each charged its real size.
  int half = static_cast<int>(cfg.buffer_bytes / 2);
  if (err.empty() && setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &half, sizeof half) < 0 &&
      setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &half, sizeof half) < 0)
    fail("sizing the socket buffer");
  int on = 1;
  if (err.empty() && setsockopt(fd_, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) < 0) fail("enabling timestamps");
  // The mirror port only receives: frames this host sends never matter
  // (also checked per frame below, for kernels without the option).
  if (err.empty() && !cfg.outbound) setsockopt(fd_, SOL_PACKET, PACKET_IGNORE_OUTGOING, &on, sizeof on);
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = static_cast<int>(ifindex);
  if (err.empty() && bind(fd_, reinterpret_cast<sockaddr*>(&sll), sizeof sll) < 0) fail("binding to it");
  if (err.empty() && !cfg.outbound) {
    // Mirrored frames carry other hosts' MACs. The membership goes with the socket.
    packet_mreq mr{};
    mr.mr_ifindex = static_cast<int>(ifindex);
    mr.mr_type = PACKET_MR_PROMISC;
    if (setsockopt(fd_, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) < 0) fail("making it promiscuous");
  }
  if (!err.empty()) {
    close();
    return err;
  }
  outbound_ = cfg.outbound;
  ifname_ = cfg.ifname;
  kernel_drops_ = 0;
  if_drops_ = 0;
  if_drops_next_ms_ = 0;
  if_drops_at_open_ = interface_rx_dropped(ifname_);
  if (!frames_) frames_.reset(new uint8_t[kBatch * kCaptureSnapLen]);
  return "";
}

void Capture::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

int Capture::dispatch(int max, CaptureHandler cb, void* user) {
  int delivered = 0;
  while (fd_ >= 0 && delivered < max) {
    int want = std::min(kBatch, max - delivered);
    for (int i = 0; i < want; i++) {
      iov_[i] = {frames_.get() + size_t(i) * kCaptureSnapLen, kCaptureSnapLen};
      msgs_[i].msg_hdr = {};
      msgs_[i].msg_hdr.msg_name = &from_[i];
      msgs_[i].msg_hdr.msg_namelen = sizeof from_[i];
      msgs_[i].msg_hdr.msg_iov = &iov_[i];
      msgs_[i].msg_hdr.msg_iovlen = 1;
      msgs_[i].msg_hdr.msg_control = control_[i];
      msgs_[i].msg_hdr.msg_controllen = sizeof control_[i];
    }
    // MSG_TRUNC: msg_len is the frame's real length even when longer than the buffer.
    int n = recvmmsg(fd_, msgs_, static_cast<unsigned>(want), MSG_DONTWAIT | MSG_TRUNC, nullptr);
    if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? delivered : (delivered ? delivered : -1);
    for (int i = 0; i < n; i++) {
      bool sent_here = from_[i].sll_pkttype == PACKET_OUTGOING;
      if (sent_here != outbound_) continue;
      uint64_t ns = 0;  // the kernel's receive time; the clock's now if it gave none
      for (cmsghdr* c = CMSG_FIRSTHDR(&msgs_[i].msg_hdr); c; c = CMSG_NXTHDR(&msgs_[i].msg_hdr, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS) {
          timespec ts;
          memcpy(&ts, CMSG_DATA(c), sizeof ts);
          ns = uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
        }
      }
      if (!ns) {
        timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        ns = uint64_t(now.tv_sec) * 1000000000u + uint64_t(now.tv_nsec);
      }
      size_t caplen = std::min<size_t>(msgs_[i].msg_len, kCaptureSnapLen);
      cb(user, static_cast<const uint8_t*>(iov_[i].iov_base), caplen, ns);
      delivered++;
    }
    if (n < want) break;  // the queue is empty
  }
  return delivered;
}

bool Capture::stats(uint64_t* kernel_drops, uint64_t* if_drops) {
  if (fd_ < 0) return false;
  tpacket_stats st{};
  socklen_t len = sizeof st;
  // The kernel resets its counters at every read: keep the sum.
  if (getsockopt(fd_, SOL_PACKET, PACKET_STATISTICS, &st, &len) < 0) return false;
  kernel_drops_ += st.tp_drops;
  *kernel_drops = kernel_drops_;
  // sysfs at most twice a second: the recorder asks after every wake-up.
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  uint64_t now_ms = uint64_t(t.tv_sec) * 1000u + uint64_t(t.tv_nsec) / 1000000u;
  if (now_ms >= if_drops_next_ms_) {
    uint64_t now = interface_rx_dropped(ifname_);
    if_drops_ = now >= if_drops_at_open_ ? now - if_drops_at_open_ : 0;
    if_drops_next_ms_ = now_ms + 500;
  }
  *if_drops = if_drops_;
  return true;
}

}  // namespace t2cp
