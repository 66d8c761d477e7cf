// The UDP ledger: which of the clients' datagrams the replica has, held
// against the gateway recorder's record of them. UDP has no acknowledgement
// and no sequence number, so the backup cannot see a datagram its mirror
// lost; the recorder can: it numbers every datagram toward VIP:udp-ports as
// it forwards them. The backup fetches those numbers with a digest of each
// (UDP_MANIFEST, a few every --udp-sync period) and the ledger pairs them
// with what the mirror showed:
//
// - a mirrored datagram is held until its record comes, then given to the
//   replica in the recorder's order, so the replica sees exactly the
//   primary's datagrams in the primary's order, at the cost of one sync
//   period of extra lag while replicating;
// - a record no mirrored datagram matched within kSettle is missing: asked
//   of the recorder by number (kResupply, UDP), repeated, given up after
//   kGiveUp (lost, counted); a resupplied copy takes its place in the order;
// - at a takeover (release_all) everything held goes to the replica at
//   once; what is still awaited goes when it comes, out of order.
//
// Without records (no recorder, or none heard for kIdle) datagrams go to
// the replica as the mirror shows them, nothing held.
//
// A datagram is named by its association (FlowKey) and a digest of its IPv4
// identification, UDP length and payload (udp_digest): the recorder and the
// mirror see the same frame, so both compute the same value.
//
// Thread: the engine thread only.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <unordered_map>
#include <vector>

#include "flow_table.h"
#include "packet.h"

namespace t2cp {

// A record's phase in the ledger. The transitions (udp_record_may_move):
//   kAwaited -> kHeld     its datagram came from the mirror
//   kAwaited -> kAsked    none came within kSettle: asked of the recorder
//   kAsked   -> kHeld     the recorder resupplied it (or the mirror, late)
//   kAsked   -> kLost     nothing came within kGiveUp
//   kHeld    -> kGiven    given to the replica (in order, or at release_all)
enum class UdpRecordPhase : uint8_t { kAwaited, kAsked, kHeld, kLost, kGiven };
bool udp_record_may_move(UdpRecordPhase from, UdpRecordPhase to);
const char* udp_record_phase_name(UdpRecordPhase p);

// The digest both ends compute of one datagram (d parsed by parse_udp).
uint64_t udp_digest(const Datagram& d);

// One record of a manifest: the association and the digest, as
// UDP_MANIFEST carries them (16 bytes: client address in network order,
// client port, VIP port, digest; big-endian).
constexpr size_t kUdpRecordSize = 16;

struct UdpLedgerTiming {
  uint64_t settle_us = 20000;       // a record waits this long for its mirrored datagram
  uint64_t ask_repeat_us = 100000;  // then asked, again after this ...
  uint64_t give_up_us = 600000;     // ... until this long after the first ask: lost
  uint64_t unrecorded_hold_us = 200000;  // a datagram with no record yet goes to the replica after this
  uint64_t unrecorded_keep_us = 2000000;  // and its digest waits this long for a late record
  uint64_t idle_us = 1000000;       // no manifest for this long: records are not coming
  size_t max_held = 65536;          // datagrams held at most; beyond, given at once (unverified)
};

struct UdpLedgerStats {
  uint64_t records = 0;      // records received
  uint64_t verified = 0;     // records whose datagram the mirror showed
  uint64_t asked = 0;        // requests for missing datagrams (repeats included)
  uint64_t resupplied = 0;   // missing datagrams the recorder sent, given to the replica
  uint64_t duplicates = 0;   // resupplied copies nobody waited for (the mirror's came), dropped
  uint64_t lost = 0;         // records whose datagram never came
  uint64_t unverified = 0;   // datagrams given without their record (none came in time)
};

class UdpLedger {
 public:
  // give: a datagram for the replica (whole IPv4 packet); ask: request the
  // datagram recorded under `index` from the recorder.
  using Give = std::function<void(const uint8_t* ip, size_t len)>;
  using Ask = std::function<void(const FlowKey& k, uint64_t index)>;
  UdpLedger(Give give, Ask ask, UdpLedgerTiming t = {}) : give_(std::move(give)), ask_(std::move(ask)), t_(t) {}

  // Whether records come (a manifest within idle_us): mirrored datagrams are held for them.
  bool pairing(uint64_t now) const { return seen_manifest_ && now - last_manifest_us_ < t_.idle_us; }
  // A client's datagram from the mirror.
  void on_mirrored(const FlowKey& k, uint64_t digest, const uint8_t* ip, size_t len, uint64_t now);
  // A manifest arrived (records may follow through on_record).
  void on_manifest(uint64_t now);
  // The recorder numbered a datagram of k `index` (manifests in order).
  void on_record(const FlowKey& k, uint64_t index, uint64_t digest, uint64_t now);
  // A datagram the recorder sent on request; false when nobody waited for it (dropped).
  bool on_resupplied(const FlowKey& k, uint64_t digest, const uint8_t* ip, size_t len, uint64_t now);
  // Asks, repeats, gives up, releases what waited long enough.
  void on_tick(uint64_t now);
  // A takeover: every held datagram goes to the replica now, in order as far
  // as known; from then on each goes as soon as it comes.
  void release_all(uint64_t now);

  const UdpLedgerStats& stats() const { return stats_; }
  size_t held() const { return held_; }

 private:
  struct Record {
    uint64_t index = 0, digest = 0;
    UdpRecordPhase phase = UdpRecordPhase::kAwaited;
    uint64_t due_us = 0, first_ask_us = 0;
    std::vector<uint8_t> ip;  // kHeld: the datagram
  };
  // A mirrored datagram whose record has not come (given: sent to the
  // replica already, kept so that its late record does not look missing).
  struct Unrecorded {
    uint64_t digest = 0, since_us = 0;
    bool given = false;
    std::vector<uint8_t> ip;
  };
  struct Association {
    std::deque<Record> records;        // oldest first, the recorder's order
    std::deque<Unrecorded> unrecorded;  // oldest first
    bool ordered = true;               // false after release_all: each goes as it comes
  };
  void move(Record& r, UdpRecordPhase to);
  void hold(Record& r, const uint8_t* ip, size_t len);
  void give(std::vector<uint8_t>& ip);
  // Gives what may go now; true when a is empty (may be forgotten).
  bool release(Association& a, uint64_t now);
  void release_unrecorded(Association& a, uint64_t now, bool all);
  void give_everything();

  Give give_;
  Ask ask_;
  UdpLedgerTiming t_;
  UdpLedgerStats stats_;
  std::unordered_map<FlowKey, Association, FlowKeyHash> map_;
  size_t held_ = 0;
  bool seen_manifest_ = false, released_ = false;
  uint64_t last_manifest_us_ = 0;
};

}  // namespace t2cp
