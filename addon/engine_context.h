// What the incoming and outgoing processors share on the engine thread: the
// configuration copied once from JavaScript, the flow table, the injector,
// counters, events, the latency histogram and the list of flows to pump.
//
// Thread: engine thread only, except `counters`, `latency`, `dequeue`, `lag`
// (atomics read by JS) and `events` (own mutex).
#pragma once
#include <arpa/inet.h>

#include <atomic>
#include <bitset>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "counters.h"
#include "event_queue.h"
#include "flow_table.h"
#include "relay_ports.h"
#include "udp_compare.h"
#include "udp_flows.h"
#include "histogram.h"
#include "incoming_tun.h"
#include "replica_lag.h"

namespace t2cp {

// What the engine does with the replicated flows.
enum class EngineMode : uint8_t {
  kReplicating,  // feed the replica, drop its output
  kFrozen,       // takeover steps 1-2: no new flows, finish feeding the rest
  kCatchingUp,   // takeover steps 3-6: the flows whose replica is complete are
                 // translated, the others still fed (per flow: Flow::phase)
  kActive,       // every flow settled: translate both directions, never inject
};

struct EngineConfig {
  std::string mirror_if;
  uint32_t vip = 0;                       // network order
  std::vector<uint16_t> ports;
  std::vector<uint16_t> udp_ports;        // UDP service ports: datagrams replicated
  std::vector<uint16_t> relay_ports;      // of udp_ports, a media relay's (relay_ports.h): translated
  std::string tun_name;
  std::string nft_table;
  uint16_t queue_num = 0;
  uint32_t queue_max_len = 8192;          // packets
  uint32_t capture_buffer = 128u << 20;   // bytes
  uint32_t max_flows = 65536;
  uint32_t flow_buffer_limit = 256u << 20; // bytes per flow
  uint64_t memory_limit = 1ull << 30;      // bytes held by all flows together
  uint32_t handshake_timeout_ms = 10000;
  uint32_t idle_timeout_s = 7200;
  uint32_t event_batch_ms = 20;
  uint32_t rt_priority = 0;               // SCHED_FIFO priority of the engine thread, 0: none
  uint32_t busy_poll_us = 50;             // spin this long after work before sleeping, 0: never
  bool resupply = false;                  // a traffic recorder can resupply gaps (kResupply events)
  uint64_t lag_warn_bytes = 32ull << 20;  // a replica this far behind either way is reported, 0: never
  uint32_t max_lag_ms = 0;                // a replica this far behind in time is given up, 0: never
  std::vector<DivergencePolicy> divergence;  // per port of ports, in order
  std::vector<DivergencePolicy> udp_divergence;  // per port of udp_ports, in order
  // Active mode after a takeover: the kernel translator on active_if (tcx),
  // or the NFQUEUE one in the engine. kAuto: the kernel's when it loads.
  enum class ActiveTranslator : uint8_t { kAuto, kKernel, kQueue } active_translator = ActiveTranslator::kAuto;
  std::string active_if;                  // empty: no takeover configured, nothing attached
  std::string active_object;              // path of recovery_active_mode.bpf.o
};

// Capture to injection: 1 µs buckets, up to 4 ms.
using LatencyHistogram = Histogram<1000, 4096>;

struct EngineContext {
  explicit EngineContext(const EngineConfig& c)
      : cfg(c), flows(c.max_flows), udp(c.max_flows), events(counters),
        udp_compare([this](const FlowKey& k, const Divergence& d) { on_udp_diverged(k, d); }) {
    stream_memory.limit = c.memory_limit;
    for (size_t i = 0; i < c.ports.size(); i++) {
      const uint16_t p = c.ports[i];
      divergence[p] = i < c.divergence.size() ? c.divergence[i] : DivergencePolicy::kOff;
      if (divergence[p] != DivergencePolicy::kOff && !compare_ports.count(p))
        compare_ports.emplace(p, std::make_unique<ComparePort>());
      port_set.set(p);
      if (!lag.count(p)) lag.emplace(p, std::make_unique<LagHistogram>());
    }
    for (size_t i = 0; i < c.udp_ports.size(); i++) {
      udp_port_set.set(c.udp_ports[i]);
      udp_divergence[c.udp_ports[i]] = i < c.udp_divergence.size() ? c.udp_divergence[i] : DivergencePolicy::kOff;
    }
    relay.configure(c.relay_ports);
    if (relay.any()) {
      char vip_text[INET_ADDRSTRLEN] = "";
      inet_ntop(AF_INET, &c.vip, vip_text, sizeof vip_text);
      udp_compare.compare_relay_ports(&relay, vip_text, [this](uint16_t primary, uint16_t replica) {
        relay.pair(primary, replica, realtime_us());
        if (relay_paired) relay_paired(primary);
      });
    }
  }
  EngineConfig cfg;
  EngineMode mode = EngineMode::kReplicating;
  // The capture socket was empty at its last read (set by the engine loop).
  bool capture_idle = false;
  std::bitset<65536> port_set;
  std::bitset<65536> udp_port_set;
  std::unordered_map<uint16_t, DivergencePolicy> divergence;  // by service port
  std::unordered_map<uint16_t, DivergencePolicy> udp_divergence;  // by UDP service port
  Counters counters;
  MemoryPool stream_memory;               // before flows: their buffers return bytes to it
  FlowTable flows;
  UdpFlows udp;
  EventQueue events;
  // The replica's datagrams against the primary's (both processors add).
  UdpOutputComparison udp_compare;
  // The media relay's ports the two copies' SDPs paired; who waits for a pair (the incoming
  // processor, holding datagrams to a primary's port not paired yet).
  RelayPorts relay;
  std::function<void(uint16_t primary)> relay_paired;
  LatencyHistogram latency;
  // Its first part: capture timestamp to the engine thread taking the frame
  // (wake-up and the copy out of the socket), for client segments that
  // start a sample.
  LatencyHistogram dequeue;
  // The replicas' output lag behind the primary's (replica_lag.h), by
  // service port. Built once: JavaScript reads it while the engine runs.
  std::unordered_map<uint16_t, std::unique_ptr<LagHistogram>> lag;
  Tun tun;
  // Flows touched since the last pump, by key: a flow may be erased (port
  // reuse) while listed, so no pointers are kept.
  std::vector<FlowKey> dirty;
  // Flows whose pump used up its quantum with more due: pumped again at the
  // next pass of the loop (by key, as `dirty`).
  std::vector<FlowKey> carry;
  // Flows finished on the replica whose key has a waiting successor.
  std::vector<FlowKey> promote;

  // The last divergences, newest last (JavaScript reads them for the log and
  // the determinism report: divergences()); guarded by divergence_mu.
  struct DivergenceRecord {
    uint32_t flow_id;
    FlowKey key;
    uint64_t time_us;
    Divergence what;
  };
  static constexpr size_t kDivergenceRecords = 256;
  // What the comparison found, by service port (ports not compared have
  // none): the determinism report. Built once; JavaScript reads it live.
  struct ComparePort {
    std::atomic<uint64_t> identical{0};   // flows closed with every compared byte alike
    std::atomic<uint64_t> diverged{0};
    std::atomic<uint64_t> gave_up{0};     // no longer compared: too far apart (kMaxCheckpoints)
    std::atomic<uint64_t> bytes{0};       // compared bytes of the identical flows
    std::atomic<uint64_t> unverified{0};  // of their bytes, not comparable (holes)
    // Flows open now, compared and alike so far, and their bytes compared
    // (Engine::publish_live_counts, once a second).
    std::atomic<uint64_t> open{0};
    std::atomic<uint64_t> open_bytes{0};
    uint64_t open_count = 0, open_count_bytes = 0;  // engine thread: the count under way
  };
  std::unordered_map<uint16_t, std::unique_ptr<ComparePort>> compare_ports;
  ComparePort* compare_port(uint16_t port) {
    auto it = compare_ports.find(port);
    return it == compare_ports.end() ? nullptr : it->second.get();
  }
  std::mutex divergence_mu;
  std::deque<DivergenceRecord> divergences;
  void record_divergence(const Flow& f, uint64_t now_us) {
    std::lock_guard<std::mutex> lock(divergence_mu);
    if (divergences.size() == kDivergenceRecords) divergences.pop_front();
    divergences.push_back(DivergenceRecord{f.id, f.key, now_us, f.compare.divergence()});
  }
  void on_udp_diverged(const FlowKey& k, const Divergence& d) {
    static const UdpAssociation kUnknown;
    const UdpAssociation* a = udp.find(k);
    {
      std::lock_guard<std::mutex> lock(divergence_mu);
      if (divergences.size() == kDivergenceRecords) divergences.pop_front();
      divergences.push_back(DivergenceRecord{a ? a->id : 0, k, realtime_us(), d});
    }
    counters.add(k_udp_diverged);
    events.emit_udp(EventType::kAnomaly, EventReason::kDiverged, k, a ? *a : kUnknown,
                    uint64_t(d.kind) << 48 | d.offset);
  }
  DivergencePolicy udp_divergence_of(uint16_t port) const {
    auto it = udp_divergence.find(port);
    return it == udp_divergence.end() ? DivergencePolicy::kOff : it->second;
  }
  DivergencePolicy divergence_of(uint16_t port) const {
    auto it = divergence.find(port);
    return it == divergence.end() ? DivergencePolicy::kOff : it->second;
  }

  // The lag histogram of a service port (none for a port not replicated).
  LagHistogram* lag_histogram(uint16_t port) {
    auto it = lag.find(port);
    return it == lag.end() ? nullptr : it->second.get();
  }

  void mark_dirty(Flow& f) {
    if (!f.dirty) { f.dirty = true; dirty.push_back(f.key); }
  }
  // Call fn on every listed flow that still exists, then clear the list.
  template <typename Fn> void drain_dirty(Fn fn) {
    for (size_t i = 0; i < dirty.size(); i++) {  // fn may append: index, not iterator
      Flow* f = flows.find(dirty[i]);
      if (f && f->dirty) { f->dirty = false; fn(*f); }
    }
    dirty.clear();
  }
  // The carried-over flows become due again.
  void carry_to_dirty() {
    for (const FlowKey& k : carry)
      if (Flow* f = flows.find(k)) mark_dirty(*f);
    carry.clear();
  }
};


}  // namespace t2cp
