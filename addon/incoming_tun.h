// Incoming traffic processor, injection side: a TUN device (IFF_TUN |
// IFF_NO_PI) whose writes enter the backup's own IP stack as if received.
//
// The device carries the VIP as a /32: that makes the VIP local on the backup
// (so the replica's socket accepts the injected flows) and satisfies reverse
// path filtering, which rejects packets on an address-less TUN even in loose
// mode. The device is not persistent: the kernel deletes it, its address and
// its per-device sysctls when the descriptor closes, so a crash leaves
// nothing behind. The `arp` table of outgoing_nftables keeps the backup from
// answering ARP for the VIP meanwhile.
//
// Call order: open() on the JS thread, write() on the engine thread only,
// close() after the engine thread stopped.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace t2cp {

class Tun {
 public:
  ~Tun() { close(); }
  // Returns "" or a one-line error naming the problem and the fix.
  std::string open(const std::string& name, uint32_t vip);
  void close();
  // Hand the descriptor over (closing it unregisters the device: slow).
  int release() { int fd = fd_; fd_ = -1; name_.clear(); return fd; }
  // Write to fd instead of a device (the fast tier: one end of a socketpair).
  void adopt(int fd) { close(); fd_ = fd; }
  // One IPv4 packet in; false if the kernel refused it (errno kept).
  bool write(const uint8_t* pkt, size_t len);
  const std::string& name() const { return name_; }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  std::string name_;
};

}  // namespace t2cp
