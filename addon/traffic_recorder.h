// Traffic recorder (paper 001): runs on the gateway, keeps the last
// window_ms of what the clients sent toward the VIP, and sends it again on
// request. After a takeover the new owner thereby gets every client segment
// the dead primary swallowed, at once, instead of when each client's
// retransmission timer fires (200 ms at the least, backed off further during
// the outage). Segments the new owner already has are duplicates its TCP
// drops; the rest fill its holes.
//
// It captures this host's own output on the LAN interface (a packet socket,
// outbound, BPF "tcp and dst host VIP and (dst port P ...)") on its own
// thread, into a ring bounded by time and bytes. request_resupply() has that
// thread re-send the packets captured since a given time through a raw IP
// socket, cut to the interface's MTU (forwarded GSO super-packets are whole
// in the capture) with every checksum computed; the JS thread only asks and
// later reads the resupplied_* counters.
//
// That replay of the outage waits for nobody's report when it need not:
// arm_replay(), as the takeover is ordered, has the recorder thread watch
// the interface's ARP for the new owner's gratuitous ARP for the VIP (from
// any MAC but the old owner's, which the fence drops) and replay at once,
// straight to the MAC that announced itself (a packet socket: no wait for
// this host's neighbour entry to change). The backup's report then finds
// the replay done; without an announcement seen, the report starts it.
//
// While the backup replicates, a segment its mirror capture lost is asked
// for by flow and sequence range (lookup(), from the detector's JS thread):
// the pieces go to the backup over the authenticated control channel.
//
// The clients' datagrams toward VIP:udp_ports are numbered as they are
// recorded (a ring of their own, same bounds): the backup fetches the
// numbers with each datagram's digest (udp_manifest(), udp_ledger.h) and
// asks for the ones its mirror lost by number (udp_lookup()). The outage
// replay leaves them out — a datagram sent twice would reach the service
// twice — and the manifest stops at the replay (the cut): what is recorded
// after it went to the new owner itself. Before the cut too, a datagram
// forwarded once the VIP moved went to the new owner's MAC: each record keeps
// the destination MAC of its frame, and a manifest names the records that
// went to the asking backup's own MAC (direct): its host got those, not
// its mirror, and it must not ask for them.
//
// Call order: start(), then request_resupply()/lookup()/counters() from the
// JS thread at any time, stop() (also the destructor).
#pragma once
#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "incoming_capture.h"
#include "ip_reassembly.h"
#include "packet.h"

namespace t2cp {

struct RecorderConfig {
  std::string ifname;            // the gateway's interface toward the servers
  uint32_t vip = 0;              // network order
  std::vector<uint16_t> ports;
  std::vector<uint16_t> udp_ports;
  uint32_t window_ms = 2000;     // how far back resupply can reach
  uint64_t max_bytes = 256u << 20;
};

struct RecorderCounters {
  std::atomic<uint64_t> recorded_packets{0}, recorded_bytes{0}, evicted_packets{0};
  std::atomic<uint64_t> resupplied_packets{0}, resupplied_bytes{0}, send_errors{0}, malformed{0};
  std::atomic<uint64_t> capture_drops{0};
  std::atomic<uint64_t> udp_recorded{0}, udp_evicted{0}, udp_manifests{0}, udp_looked_up{0};
  std::atomic<uint64_t> udp_reassembled{0};  // datagrams recorded whole from fragments
  std::atomic<uint64_t> udp_direct{0};       // records named forwarded to the asking backup, once each
  std::atomic<uint64_t> lookups{0}, looked_up_packets{0}, looked_up_bytes{0};
  // What started the outage's replay: the new owner's gratuitous ARP, or
  // the backup's report (no announcement seen first).
  std::atomic<uint64_t> replays_on_announcement{0}, replays_on_report{0};
  std::atomic<uint64_t> replay_started_us{0};  // CLOCK_REALTIME µs of the last replay's start
};

class TrafficRecorder {
 public:
  ~TrafficRecorder() { stop(); }
  // "" or a one-line error naming the problem and the fix.
  std::string start(const RecorderConfig& cfg);
  void stop();
  // Have the recorder thread re-send every recorded packet captured at or
  // after since_us (CLOCK_REALTIME µs); counted in resupplied_packets/bytes.
  void request_resupply(uint64_t since_us);
  // The takeover is ordered: replay what was captured at or after since_us
  // as soon as a gratuitous ARP for the VIP comes from another MAC than
  // old_owner_mac, if request_resupply() did not come first.
  // Thread: JS.
  void arm_replay(uint64_t since_us, const uint8_t old_owner_mac[6]);
  // Recorded client segments of one flow (client address network order,
  // ports host order) carrying bytes of [from, to) in client sequence
  // numbers, or its FIN at `to`, cut to at most max_payload bytes each, at
  // most max_total bytes in all: whole IPv4/TCP packets, lengths and
  // checksums right.
  // Thread: JS (the ring's mutex).
  std::vector<std::vector<uint8_t>> lookup(uint32_t client_ip, uint16_t client_port, uint16_t vip_port, uint32_t from,
                                           uint32_t to, uint32_t max_payload, size_t max_total);
  // The records of datagrams numbered `after` and on (kUdpRecordSize bytes
  // each, at most max_records), up to the cut. from_now: none, only where the
  // numbering is (a backup starting; the cut of a past takeover forgotten).
  // asker_mac (may be null): the asking backup's MAC; the numbers of the
  // records whose frame went to it are in `direct`.
  struct UdpManifest {
    uint64_t first = 0, next = 0;  // the records' numbers: [first, next)
    uint64_t lost = 0;             // numbers from `after` already evicted
    bool more = false;             // more records wait (ask again at once)
    bool cut = false;              // the takeover's cut reached: no record will follow
    std::vector<uint8_t> records;
    std::vector<uint64_t> direct;  // numbers in [first, next) forwarded to asker_mac
  };
  UdpManifest udp_manifest(uint64_t after, bool from_now, size_t max_records, const uint8_t* asker_mac = nullptr);
  // The recorded datagrams of these numbers (the ones still held), as forwarded.
  std::vector<std::vector<uint8_t>> udp_lookup(const std::vector<uint64_t>& numbers);
  const RecorderCounters& counters() const { return counters_; }
  uint64_t held_bytes() const;

 private:
  // key: client address and port, VIP port (flow_key()), so that lookup(),
  // on the JS thread and holding the lock the recorder thread needs, skips
  // other flows' segments without parsing them again.
  struct Entry { uint64_t us; uint64_t key; std::vector<uint8_t> ip; };
  static uint64_t flow_key(uint32_t client_ip, uint16_t client_port, uint16_t vip_port) {
    return uint64_t(client_ip) << 32 | uint64_t(client_port) << 16 | vip_port;
  }
  void run();
  static void on_frame(void* self, const uint8_t* frame, size_t caplen, uint64_t capture_ns);
  // One frame this host forwarded: its destination MAC and its IPv4 packet.
  void record(uint64_t us, const uint8_t* to_mac, const uint8_t* ip, size_t len);
  void record_udp(uint64_t us, const uint8_t* to_mac, const uint8_t* ip, size_t len);  // under mu_
  // Replays what was captured since since_us, to mac through the packet
  // socket, else through the raw IP socket (routed).
  void resupply(uint64_t since_us, const uint8_t* mac = nullptr);
  // Reads the ARP socket: an armed replay starts on the announcement.
  void read_arp();
  // Cut one recorded packet to the MTU and send each piece; payload bytes sent.
  uint64_t send_cut(const std::vector<uint8_t>& ip, uint64_t* packets, const uint8_t* mac);
  // Calls fn(piece, length) for the payload of s (its packet at pkt) between
  // offsets [begin, end), in pieces of at most max_payload bytes, each a
  // packet of its own (IP length, id, seq, flags and checksums set).
  template <typename Fn>
  void cut(const uint8_t* pkt, const Segment& s, uint32_t begin, uint32_t end, uint32_t max_payload, Fn fn);

  RecorderConfig cfg_;
  Capture capture_;
  RecorderCounters counters_;
  mutable std::mutex mu_;
  std::deque<Entry> ring_;       // under mu_
  uint64_t ring_bytes_ = 0;      // under mu_
  // The clients' datagrams, numbered from 1 (under mu_).
  struct UdpEntry { uint64_t number, us; uint8_t record[16]; uint8_t to_mac[6]; std::vector<uint8_t> ip; };
  std::deque<UdpEntry> udp_ring_;
  IpReassembly reassembly_;  // the clients' datagrams cut in fragments, recorded whole
  std::vector<uint8_t> reassembled_;
  uint64_t udp_bytes_ = 0, udp_next_ = 1;
  uint64_t udp_cut_us_ = 0;      // the outage's replay began here: no record from then on
  uint64_t udp_direct_counted_ = 0;  // records below this number named direct are counted
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> resupply_since_{0};  // 0: nothing asked
  // The replay armed for the takeover under way (under mu_).
  struct Armed {
    bool armed = false, replayed = false;
    uint64_t since_us = 0;
    uint8_t old_mac[6] = {};
  } armed_;
  int wake_fd_ = -1, raw_fd_ = -1;
  int arp_fd_ = -1;               // AF_PACKET on the interface: its ARP in, the replay out
  int ifindex_ = 0;
  uint32_t mtu_ = 1500;
  uint16_t ip_id_ = 0;
};

}  // namespace t2cp
