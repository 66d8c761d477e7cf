// Incoming traffic processor, capture side: a packet socket on the mirror
// port with a BPF filter compiled from the configuration (by libpcap), both
// directions of the primary's traffic for VIP:ports.
//
// A plain packet socket read with recvmmsg, not a libpcap ring: the ring
// that keeps latency low (TPACKET_V2, immediate mode) has one fixed slot per
// frame, sized for a 64 KiB super-frame, so 128 MiB held 1,024 frames of any
// size and a connection storm's small segments overflowed it within a few
// milliseconds of the packet thread not running (measured: 6 frames lost,
// 2 flows unprotected in 20,000 connections). The socket's queue is charged
// what each frame really takes, and the copy out of it is made by the
// packet thread instead of the softirq that received the frame.
//
// Call order: open() on the JS thread (errors surface as exceptions there),
// then dispatch() and stats() only on the engine thread, close() after the
// engine thread has stopped.
#pragma once
#include <linux/if_packet.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdint>
#include <memory>
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

// One captured frame: Ethernet header first, `caplen` bytes (shorter than
// the frame only beyond kCaptureSnapLen), the kernel's receive timestamp.
using CaptureHandler = void (*)(void* user, const uint8_t* frame, size_t caplen, uint64_t capture_ns);

// Larger than any frame the mirror can deliver: GRO/TSO super-frames reach
// 64 KiB, BIG TCP more. A shorter buffer would truncate payload we need.
constexpr size_t kCaptureSnapLen = 262144;

class Capture {
 public:
  Capture() = default;
  ~Capture() { close(); }
  Capture(const Capture&) = delete;
  Capture& operator=(const Capture&) = delete;
  // Returns "" or a one-line error naming the problem and the fix.
  std::string open(const CaptureConfig& cfg);
  void close();
  // Hand the open socket over (to be closed elsewhere); the object is closed afterwards.
  int release() { int fd = fd_; fd_ = -1; return fd; }
  int fd() const { return fd_; }
  // Deliver up to `max` frames (none once closed) to cb. Returns the count,
  // or -1 on a capture error.
  int dispatch(int max, CaptureHandler cb, void* user);
  // Frames the socket's queue had no room for, and the interface's own
  // receive drops, since open.
  bool stats(uint64_t* kernel_drops, uint64_t* if_drops);

 private:
  static constexpr int kBatch = 32;  // frames per recvmmsg
  int fd_ = -1;
  bool outbound_ = false;
  std::string ifname_;
  uint64_t kernel_drops_ = 0;
  uint64_t if_drops_at_open_ = 0;
  uint64_t if_drops_ = 0;
  uint64_t if_drops_next_ms_ = 0;
  std::unique_ptr<uint8_t[]> frames_;  // kBatch × kCaptureSnapLen, touched only as used
  mmsghdr msgs_[kBatch];
  iovec iov_[kBatch];
  sockaddr_ll from_[kBatch];
  alignas(cmsghdr) char control_[kBatch][64];
};

}  // namespace t2cp
