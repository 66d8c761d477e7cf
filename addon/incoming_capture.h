// Incoming traffic processor, capture side: libpcap on the mirror port with a
// BPF filter compiled from the configuration, both directions of the
// primary's traffic for VIP:ports.
//
// Call order: open() on the JS thread (errors surface as exceptions there),
// then dispatch() and stats() only on the engine thread, close() after the
// engine thread has stopped.
#pragma once
#include <pcap/pcap.h>

#include <cstdint>
#include <string>
#include <vector>

namespace t2cp {

struct CaptureConfig {
  std::string ifname;
  uint32_t vip = 0;                // network order
  std::vector<uint16_t> ports;
  uint32_t buffer_bytes = 64u << 20;
  // false: what arrives (the mirror port, promiscuous); true: what this host
  // sends toward the VIP (the gateway's traffic recorder).
  bool outbound = false;
};

// The BPF filter text for a configuration, e.g.
// "tcp and host 198.18.1.10 and (port 7000 or port 6379)"; outbound:
// "tcp and dst host 198.18.1.10 and (dst port 7000 or dst port 6379)".
std::string capture_filter(const CaptureConfig& cfg);

class Capture {
 public:
  ~Capture() { close(); }
  // Returns "" or a one-line error naming the problem and the fix.
  std::string open(const CaptureConfig& cfg);
  void close();
  // Hand the open handle over (to be closed elsewhere: unmapping a large
  // ring takes tens of ms); the object is closed afterwards.
  pcap_t* release() { pcap_t* p = p_; p_ = nullptr; fd_ = -1; return p; }
  int fd() const { return fd_; }
  // Deliver up to `max` frames (none once closed) to cb(user, header, bytes). Returns the count,
  // or -1 on a capture error.
  int dispatch(int max, pcap_handler cb, u_char* user) { return p_ ? pcap_dispatch(p_, max, cb, user) : 0; }
  // Kernel drop counters since open.
  bool stats(uint64_t* kernel_drops, uint64_t* if_drops);

 private:
  pcap_t* p_ = nullptr;
  int fd_ = -1;
};

}  // namespace t2cp
