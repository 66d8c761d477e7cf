#include "incoming_tun.h"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

namespace t2cp {

// IPv4 maximum: injected segments are cut from the stream buffer up to this
// size, so the device must accept whole 64 KiB packets.
constexpr int kTunMtu = 65535;

static bool write_sysctl(const std::string& path, const char* value) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, value, strlen(value)) == static_cast<ssize_t>(strlen(value));
  ::close(fd);
  return ok;
}

std::string Tun::open(const std::string& name, uint32_t vip) {
  fd_ = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd_ < 0)
    return std::string("cannot open /dev/net/tun (") + strerror(errno) +
           "): load the tun module (modprobe tun) and run as root";
  ifreq ifr{};
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (ioctl(fd_, TUNSETIFF, &ifr) < 0) {
    std::string e = "cannot create TUN device '" + name + "' (" + strerror(errno) + ")";
    e += errno == EBUSY ? ": another t2cp instance uses that name, pick another --instance" : ": run as root";
    close();
    return e;
  }
  name_ = ifr.ifr_name;

  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  std::string err;
  auto fail = [&](const char* what) { err = std::string("cannot ") + what + " on " + name_ + ": " + strerror(errno); };
  ifreq r{};
  strncpy(r.ifr_name, name_.c_str(), IFNAMSIZ - 1);
  r.ifr_mtu = kTunMtu;
  if (ioctl(s, SIOCSIFMTU, &r) < 0) fail("set MTU");
  auto* sin = reinterpret_cast<sockaddr_in*>(&r.ifr_addr);
  if (err.empty()) {
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = vip;
    if (ioctl(s, SIOCSIFADDR, &r) < 0) fail("add the VIP");
  }
  if (err.empty()) {
    sin->sin_addr.s_addr = 0xffffffffu;  // /32: the VIP only, no route to a subnet
    if (ioctl(s, SIOCSIFNETMASK, &r) < 0) fail("set the VIP netmask");
  }
  // Loose reverse-path filtering: the client's address routes via the real
  // interface, not via this device. The effective value is max(all, dev), so
  // 2 here is loose whatever the host's default.
  if (err.empty() && !write_sysctl("/proc/sys/net/ipv4/conf/" + name_ + "/rp_filter", "2"))
    fail("set rp_filter");
  write_sysctl("/proc/sys/net/ipv6/conf/" + name_ + "/disable_ipv6", "1");  // no IPv6 chatter; optional
  if (err.empty() && ioctl(s, SIOCGIFFLAGS, &r) == 0) {
    r.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &r) < 0) fail("bring up");
  }
  ::close(s);
  if (!err.empty()) close();
  return err;
}

void Tun::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool Tun::write(const uint8_t* pkt, size_t len) {
  return ::write(fd_, pkt, len) == static_cast<ssize_t>(len);
}

}  // namespace t2cp
