// Outgoing traffic processor, user side: the NFQUEUE the owned nft table
// sends the replica's output to (and, after a takeover, the clients' input).
//
// While replicating, every packet is read whole (the payload of data the
// client has not acknowledged yet is kept for the takeover) and dropped: an
// NFQUEUE drop counts as sent for the replica's TCP, unlike an nft drop.
// Consecutive drops share one batch verdict. In active mode the handler
// rewrites packets in place, GSO super-packets whole (one rewrite per 64 KiB,
// not per segment: several times the throughput), with a full TCP checksum,
// and accepts them; the kernel marks a rewritten packet CHECKSUM_NONE, and
// TCP's GSO (tcp4_gso_segment) and receive paths both accept that.
//
// No fail-open flag, on purpose: if the queue overflows the kernel drops the
// packet (TCP retransmits later), it never lets a replica's packet out.
//
// Call order: open() on the JS thread, receive() on the engine thread only, close() after the engine thread stopped (closing
// unbinds the queue).
#pragma once
#include <libmnl/libmnl.h>

#include <cstdint>
#include <string>
#include <vector>

namespace t2cp {

class NfQueue {
 public:
  enum class Verdict : uint8_t { kDrop, kAccept, kAcceptRewritten };
  // Per packet: the IPv4 header and the bytes copied (the whole packet up to
  // 64 KiB; the IPv4 total length says how long it really is). The handler
  // may rewrite the bytes in place, keeping their length, and return
  // kAcceptRewritten to send them back.
  using Handler = Verdict (*)(void* user, uint8_t* ip, size_t copied);

  ~NfQueue() { close(); }
  // Returns "" or a one-line error naming the problem and the fix.
  std::string open(uint16_t queue_num, uint32_t max_len);
  void close();
  int fd() const { return nl_ ? mnl_socket_get_fd(nl_) : -1; }
  // Read every message available now, call h for each packet, issue the
  // verdicts. Returns packets handled; *enobufs counts netlink overruns.
  int receive(Handler h, void* user, uint64_t* enobufs);
  // Packets the kernel dropped since open because --queue-maxlen of them
  // were waiting for us (read from procfs; false if it cannot be read).
  bool kernel_drops(uint64_t* queue_full) const;

  static constexpr uint32_t kCopyBytes = 0xffff;  // the most NFQUEUE copies

 private:
  bool send_config(struct nlmsghdr* nlh, std::string* err);
  void flush_drops();
  static int on_message(const struct nlmsghdr* nlh, void* data);
  void verdict(uint32_t id, Verdict v, const uint8_t* pkt, uint32_t len);
  mnl_socket* nl_ = nullptr;
  uint32_t portid_ = 0;
  uint16_t queue_ = 0;
  std::vector<char> buf_;
  std::vector<char> verdict_buf_;
  bool drop_pending_ = false;
  uint32_t drop_upto_ = 0;         // highest id waiting for the batch drop
};

}  // namespace t2cp
