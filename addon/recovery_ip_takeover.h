// Failure recovery, IP takeover (paper 001; keepalived's vrrp_ipaddress.c and
// vrrp_arp.c): the VIP moves to the backup's real interface, and gratuitous
// ARP with repeats tells the gateway and the switch at once instead of when
// their caches expire.
//
// add_vip() adds VIP/32 through rtnetlink (an ioctl would replace the
// interface's own address); remove_vip() deletes it only if we added it. A
// gratuitous ARP is a broadcast request with sender = target = VIP (RFC 5227
// "ARP announcement"), which Linux neighbours accept even inside their
// locktime.
//
// Thread: engine thread during a takeover; remove_vip() after it stopped.
#pragma once
#include <cstdint>
#include <string>

namespace t2cp {

class IpTakeover {
 public:
  ~IpTakeover();
  // "" or a one-line error naming the problem and the fix.
  std::string add_vip(const std::string& ifname, uint32_t vip);
  void remove_vip();
  // One announcement; false if the send failed.
  bool send_garp();

 private:
  std::string ifname_;
  int ifindex_ = 0;
  uint32_t vip_ = 0;
  uint8_t mac_[6] = {};
  bool added_ = false;
  int arp_fd_ = -1;
};

}  // namespace t2cp
