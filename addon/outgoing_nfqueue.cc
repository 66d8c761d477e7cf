#include "outgoing_nfqueue.h"

#include <arpa/inet.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <linux/netfilter.h>
#include <sys/socket.h>
#include <unistd.h>

extern "C" {
#include <libnetfilter_queue/libnetfilter_queue.h>
}

namespace t2cp {

// Socket receive buffer, bytes: a burst of a fast replica's TSO packets,
// copied whole (up to 64 KiB each), must not overrun it.
constexpr int kRcvBuf = 64 << 20;
// One netlink datagram holds at least one whole 64 KiB packet message.
constexpr size_t kRecvBytes = 256 << 10;
// Packets per receive(). nfnetlink_queue sends every packet as a datagram of
// its own, so this is also recvfrom() calls. It was 32 while the capture side
// took 512 frames per pass: in a connection storm the replica's output (a
// SYN-ACK, an answer, a FIN per connection) then piled up in the kernel
// until the queue was full at --queue-maxlen and the kernel dropped the
// replica's packets (33,000 in one storm of 20,000 connections; its FINs
// among them, so flows stayed open until TCP sent them again).
constexpr int kMaxPacketsPerCall = 1024;

bool NfQueue::send_config(nlmsghdr* nlh, std::string* err) {
  nlh->nlmsg_flags |= NLM_F_ACK;
  if (mnl_socket_sendto(nl_, nlh, nlh->nlmsg_len) < 0) {
    *err = std::string("NFQUEUE config send failed: ") + strerror(errno);
    return false;
  }
  char ack[MNL_SOCKET_BUFFER_SIZE];
  ssize_t n = mnl_socket_recvfrom(nl_, ack, sizeof ack);
  if (n < 0 || mnl_cb_run(ack, n, nlh->nlmsg_seq, portid_, nullptr, nullptr) < 0) {
    int e = errno;
    *err = std::string("NFQUEUE ") + std::to_string(queue_) + " refused (" + strerror(e) + ")";
    // The kernel answers EPERM both when another socket owns the queue and
    // when we lack CAP_NET_ADMIN; as root it can only be the former.
    if (e == EBUSY || (e == EPERM && geteuid() == 0))
      *err += ": another program is bound to that queue, choose another --queue";
    else if (e == EPERM) *err += ": run as root (CAP_NET_ADMIN)";
    else if (e == EOPNOTSUPP || e == ENOENT) *err += ": load nfnetlink_queue (modprobe nfnetlink_queue)";
    return false;
  }
  return true;
}

std::string NfQueue::open(uint16_t queue_num, uint32_t max_len) {
  queue_ = queue_num;
  buf_.resize(kRecvBytes);
  verdict_buf_.resize(kCopyBytes + 4096);
  nl_ = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
  if (!nl_) return std::string("cannot open netfilter netlink socket: ") + strerror(errno);
  if (mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0) {
    std::string e = std::string("cannot bind netfilter netlink socket: ") + strerror(errno);
    close();
    return e;
  }
  portid_ = mnl_socket_get_portid(nl_);
  int fd = mnl_socket_get_fd(nl_);
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &kRcvBuf, sizeof kRcvBuf) < 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kRcvBuf, sizeof kRcvBuf);

  std::string err;
  char b[MNL_SOCKET_BUFFER_SIZE];
  nlmsghdr* nlh = nfq_nlmsg_put(b, NFQNL_MSG_CONFIG, queue_);
  nfq_nlmsg_cfg_put_cmd(nlh, AF_INET, NFQNL_CFG_CMD_BIND);
  if (!send_config(nlh, &err)) { close(); return err; }

  nlh = nfq_nlmsg_put(b, NFQNL_MSG_CONFIG, queue_);
  nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, kCopyBytes);
  nfq_nlmsg_cfg_put_qmaxlen(nlh, max_len);
  // GSO: take TSO/GRO super-packets whole: while replicating the kernel need
  // not segment packets that are dropped anyway, after a takeover one rewrite
  // serves up to 64 KiB.
  mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(NFQA_CFG_F_GSO));
  mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(NFQA_CFG_F_GSO));
  if (!send_config(nlh, &err)) { close(); return err; }

  // Overruns stay reported as ENOBUFS (the default) so they are counted.
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
    close();
    return "cannot make the NFQUEUE socket non-blocking";
  }
  return "";
}

bool NfQueue::kernel_drops(uint64_t* queue_full) const {
  // /proc/net/netfilter/nfnetlink_queue, one line per bound queue of this
  // network namespace: queue_num peer_portid queue_total copy_mode
  // copy_range queue_dropped user_dropped id_sequence 1.
  FILE* f = fopen("/proc/net/netfilter/nfnetlink_queue", "re");
  if (!f) return false;
  unsigned num, portid, total, mode, range;
  unsigned long long dropped, user_dropped, seq;
  int one;
  bool found = false;
  while (!found && fscanf(f, "%u %u %u %u %u %llu %llu %llu %d", &num, &portid, &total, &mode, &range, &dropped,
                          &user_dropped, &seq, &one) == 9) {
    if (num == queue_ && portid == portid_) {
      *queue_full = dropped;
      found = true;
    }
  }
  fclose(f);
  return found;
}

void NfQueue::close() {
  if (nl_) mnl_socket_close(nl_);  // closing the socket unbinds the queue
  nl_ = nullptr;
}

void NfQueue::flush_drops() {
  if (!drop_pending_) return;
  // One verdict for every queued packet with an id up to drop_upto_: the
  // ones accepted in between already left the queue.
  char b[MNL_SOCKET_BUFFER_SIZE];
  nlmsghdr* nlh = nfq_nlmsg_put(b, NFQNL_MSG_VERDICT_BATCH, queue_);
  nfq_nlmsg_verdict_put(nlh, drop_upto_, NF_DROP);
  mnl_socket_sendto(nl_, nlh, nlh->nlmsg_len);
  drop_pending_ = false;
}

void NfQueue::verdict(uint32_t id, Verdict v, const uint8_t* pkt, uint32_t len) {
  if (v == Verdict::kDrop) {
    drop_pending_ = true;
    drop_upto_ = id;
    return;
  }
  flush_drops();
  nlmsghdr* nlh = nfq_nlmsg_put(verdict_buf_.data(), NFQNL_MSG_VERDICT, queue_);
  nfq_nlmsg_verdict_put(nlh, int(id), NF_ACCEPT);
  if (v == Verdict::kAcceptRewritten) nfq_nlmsg_verdict_put_pkt(nlh, pkt, len);
  mnl_socket_sendto(nl_, nlh, nlh->nlmsg_len);
}

struct Dispatch {
  NfQueue* q;
  NfQueue::Handler h;
  void* user;
  int count;
};

int NfQueue::on_message(const nlmsghdr* nlh, void* data) {
  auto* d = static_cast<Dispatch*>(data);
  nlattr* attr[NFQA_MAX + 1] = {};
  if (nfq_nlmsg_parse(nlh, attr) < 0 || !attr[NFQA_PACKET_HDR]) return MNL_CB_OK;
  auto* ph = static_cast<nfqnl_msg_packet_hdr*>(mnl_attr_get_payload(attr[NFQA_PACKET_HDR]));
  uint32_t id = ntohl(ph->packet_id);
  d->count++;
  if (!attr[NFQA_PAYLOAD]) {
    d->q->verdict(id, Verdict::kDrop, nullptr, 0);
    return MNL_CB_OK;
  }
  auto* pkt = static_cast<uint8_t*>(mnl_attr_get_payload(attr[NFQA_PAYLOAD]));
  uint32_t len = mnl_attr_get_payload_len(attr[NFQA_PAYLOAD]);
  d->q->verdict(id, d->h(d->user, pkt, len), pkt, len);
  return MNL_CB_OK;
}

int NfQueue::receive(Handler h, void* user, uint64_t* enobufs) {
  Dispatch d{this, h, user, 0};
  // Bounded so a flood on the queue cannot starve the capture side.
  for (int reads = 0; reads < kMaxPacketsPerCall; reads++) {
    ssize_t n = mnl_socket_recvfrom(nl_, buf_.data(), buf_.size());
    if (n < 0) {
      if (errno == ENOBUFS) { (*enobufs)++; continue; }
      break;  // EAGAIN: drained
    }
    mnl_cb_run(buf_.data(), n, 0, portid_, &NfQueue::on_message, &d);
  }
  flush_drops();
  return d.count;
}

}  // namespace t2cp
