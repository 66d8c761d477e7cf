#include "recovery_ip_takeover.h"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/if_packet.h>
#include <linux/rtnetlink.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace t2cp {
namespace {

// RTM_NEWADDR / RTM_DELADDR for ip/32 on ifindex; 0 or a positive errno.
int change_address(uint16_t type, uint16_t flags, int ifindex, uint32_t ip) {
  mnl_socket* nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
  if (!nl) return errno;
  int err = 0;
  if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
    err = errno;
  } else {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    nlh->nlmsg_seq = uint32_t(time(nullptr));
    auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifaddrmsg)));
    ifa->ifa_family = AF_INET;
    ifa->ifa_prefixlen = 32;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    ifa->ifa_index = unsigned(ifindex);
    mnl_attr_put_u32(nlh, IFA_LOCAL, ip);
    mnl_attr_put_u32(nlh, IFA_ADDRESS, ip);
    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
      err = errno;
    } else {
      ssize_t n = mnl_socket_recvfrom(nl, buf, sizeof buf);
      if (n < 0 || mnl_cb_run(buf, size_t(n), nlh->nlmsg_seq, mnl_socket_get_portid(nl), nullptr, nullptr) < 0)
        err = errno;
    }
  }
  mnl_socket_close(nl);
  return err;
}

}  // namespace

IpTakeover::~IpTakeover() {
  remove_vip();
}

std::string IpTakeover::add_vip(const std::string& ifname, uint32_t vip) {
  ifname_ = ifname;
  vip_ = vip;
  ifindex_ = int(if_nametoindex(ifname.c_str()));
  if (!ifindex_) return "takeover interface " + ifname + " does not exist: check --vip-if";
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq r{};
  std::strncpy(r.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  bool got_mac = s >= 0 && ioctl(s, SIOCGIFHWADDR, &r) == 0;
  if (s >= 0) close(s);
  if (!got_mac) return "cannot read the MAC address of " + ifname;
  std::memcpy(mac_, r.ifr_hwaddr.sa_data, 6);
  int e = change_address(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, ifindex_, vip);
  if (e == EEXIST) {
    added_ = false;  // already there (put by someone else): not ours to remove
  } else if (e) {
    return std::string("adding the VIP to ") + ifname + " failed: " + strerror(e);
  } else {
    added_ = true;
  }
  arp_fd_ = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ARP));
  if (arp_fd_ < 0) return std::string("cannot open a packet socket for gratuitous ARP: ") + strerror(errno);
  return "";
}

void IpTakeover::remove_vip() {
  if (arp_fd_ >= 0) close(arp_fd_);
  arp_fd_ = -1;
  if (!added_) return;
  change_address(RTM_DELADDR, 0, ifindex_, vip_);
  added_ = false;
}

bool IpTakeover::send_garp() {
  if (arp_fd_ < 0) return false;
  uint8_t f[42] = {};
  std::memset(f, 0xff, 6);                       // broadcast
  std::memcpy(f + 6, mac_, 6);
  f[12] = 0x08; f[13] = 0x06;                    // ARP
  f[14] = 0x00; f[15] = 0x01;                    // Ethernet
  f[16] = 0x08; f[17] = 0x00;                    // IPv4
  f[18] = 6; f[19] = 4;
  f[20] = 0x00; f[21] = 0x01;                    // request
  std::memcpy(f + 22, mac_, 6);
  std::memcpy(f + 28, &vip_, 4);                 // sender = VIP
  std::memcpy(f + 38, &vip_, 4);                 // target = VIP, target MAC 0
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_protocol = htons(ETH_P_ARP);
  to.sll_ifindex = ifindex_;
  to.sll_halen = 6;
  std::memset(to.sll_addr, 0xff, 6);
  return sendto(arp_fd_, f, sizeof f, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) == ssize_t(sizeof f);
}

}  // namespace t2cp
