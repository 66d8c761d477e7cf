// Incoming traffic processor, capture side: a packet socket on the mirror
// port with a classic BPF program built from the configuration (compiled by
// libpcap), both directions of the primary's traffic for VIP:ports: the
// clients' frames whole; the primary's whole on the ports where its output
// is compared with the replicas' (--divergence), elsewhere cut to their
// headers in the kernel (kHeaderSnapLen), so a payload the engine never
// reads is never copied out.
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
// engine thread has stopped. capture_filter() and capture_program() keep no
// state: any thread (open() calls them on the JS thread).
#pragma once
#include <linux/if_packet.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

struct sock_filter;  // <linux/filter.h>: one classic BPF instruction

namespace t2cp {

struct CaptureConfig {
  std::string ifname;
  uint32_t vip = 0;                // network order
  std::vector<uint16_t> ports;
  uint32_t buffer_bytes = 64u << 20;
  // false: what arrives (the mirror port, promiscuous); true: what this host
  // sends toward the VIP (the gateway's traffic recorder).
  bool outbound = false;
  // Mirror: ports whose primary output is kept whole (its replicas' output
  // is compared with it); the others' is cut to its headers.
  std::vector<uint16_t> whole_output_ports;
  // UDP service ports; the clients' datagrams toward VIP:udp_ports are kept
  // whole (mirror) or recorded (outbound).
  std::vector<uint16_t> udp_ports;
  // Mirror: UDP ports whose primary output is kept (compared with the replica's).
  std::vector<uint16_t> udp_output_ports;
};

// The BPF filter text of what a configuration captures (for logs and
// tcpdump). Outbound, frames toward VIP:ports:
// "tcp and dst host 198.18.1.10 and (dst port 7000 or dst port 6379)", and
// with UDP ports "(that) or (udp and dst host 198.18.1.10 and (dst port 5060))";
// mirror, those, the ICMP errors toward the VIP (the primary's path to a
// client changed: the replica must learn it too), and the frames from VIP:ports:
// "(tcp and dst host 198.18.1.10 and (dst port 7000 or dst port 6379)) or
//  (icmp and dst host 198.18.1.10 and (icmp[icmptype] == icmp-unreach or
//  icmp[icmptype] == icmp-timxceed)) or
//  (tcp and src host 198.18.1.10 and (src port 7000 or src port 6379))".
std::string capture_filter(const CaptureConfig& cfg);
// Its two parts as the mirror program splices them: what it keeps whole
// (toward VIP:ports, the datagrams toward VIP:udp_ports, the ICMP errors,
// from VIP:whole_output_ports), and what
// it cuts to headers (from the other VIP:ports; "" when none).
std::string whole_frames_filter(const CaptureConfig& cfg);
std::string header_frames_filter(const CaptureConfig& cfg);

// Larger than any frame the mirror can deliver: GRO/TSO super-frames reach
// 64 KiB, BIG TCP more. A shorter buffer would truncate payload we need.
constexpr size_t kCaptureSnapLen = 262144;

// Bytes the mirror capture keeps of a frame from VIP:ports: the longest
// header stack parse_ethernet accepts, Ethernet 14 + two VLAN tags 2 x 4 +
// IPv4 with options 60 + TCP with options 60. The engine reads the primary's
// headers only; the payload's length is the IPv4 total length's.
constexpr size_t kHeaderSnapLen = 14 + 2 * 4 + 60 + 60;

// The classic BPF program the capture attaches, into *prog. Outbound: the
// capture_filter text compiled by libpcap, frames kept whole. Mirror with
// every port in whole_output_ports: the same for both directions. Mirror
// otherwise: two libpcap programs spliced into one. The first, frames toward
// VIP:ports (and from VIP:whole_output_ports), keeps them whole (returns
// kCaptureSnapLen); each of its rejections jumps to the second, frames from
// the other VIP:ports, whose acceptances jump to a tail
// that returns kHeaderSnapLen, or kCaptureSnapLen when the IPv4 total length
// is 0 (BIG TCP: only the frame's own length tells the payload's, and a cut
// copy would lose it). Anything else returns 0 (dropped).
// Returns "" or a one-line error.
std::string capture_program(const CaptureConfig& cfg, std::vector<sock_filter>* prog);

// One captured frame: Ethernet header first, `caplen` bytes (shorter than
// the frame beyond kCaptureSnapLen, and on the mirror beyond kHeaderSnapLen
// for a frame from VIP:ports), the kernel's receive timestamp.
using CaptureHandler = void (*)(void* user, const uint8_t* frame, size_t caplen, uint64_t capture_ns);

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
