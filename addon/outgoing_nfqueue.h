// Outgoing traffic processor, user side: the NFQUEUE the owned nft table
// sends the replica's output to. Every packet is read (headers only), handed
// to the caller, and dropped with one batch verdict per read burst. An
// NFQUEUE drop counts as sent for the replica's TCP, unlike an nft drop.
//
// No fail-open flag, on purpose: if the queue overflows the kernel drops the
// packet (the replica retransmits later), it never lets it out.
//
// Call order: open() on the JS thread, receive() on the engine thread only,
// close() after the engine thread stopped (closing unbinds the queue).
#pragma once
#include <libmnl/libmnl.h>

#include <cstdint>
#include <string>
#include <vector>

namespace t2cp {

class NfQueue {
 public:
  // Per packet: pointer to the IPv4 header and the bytes copied (at most
  // kCopyBytes; the IPv4 total length says how long the packet really is).
  using Handler = void (*)(void* user, const uint8_t* ip, size_t copied);

  ~NfQueue() { close(); }
  // Returns "" or a one-line error naming the problem and the fix.
  std::string open(uint16_t queue_num, uint32_t max_len);
  void close();
  int fd() const { return nl_ ? mnl_socket_get_fd(nl_) : -1; }
  // Read every message available now, call h for each packet, issue the
  // drop verdict. Returns packets handled; *enobufs counts netlink overruns.
  int receive(Handler h, void* user, uint64_t* enobufs);

  // Headers are all the outgoing processor needs: 60 (IPv4) + 60 (TCP).
  static constexpr uint32_t kCopyBytes = 128;

 private:
  bool send_config(struct nlmsghdr* nlh, std::string* err);
  mnl_socket* nl_ = nullptr;
  uint32_t portid_ = 0;
  uint16_t queue_ = 0;
  std::vector<char> buf_;
};

}  // namespace t2cp
