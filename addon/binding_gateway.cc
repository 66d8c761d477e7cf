// N-API: what the gateway and the primary's agent use — the fences
// (new Fence(options)) and the traffic recorder (new Recorder(options)).
//
// Thread: JS main thread only.
#include <memory>
#include <vector>

#include "binding_util.h"
#include "incoming_timing.h"
#include "ip_reassembly.h"
#include "recovery_fence.h"
#include "traffic_recorder.h"

namespace t2cp {
namespace {

// Payload bytes per resupplied piece: a RESUPPLY_DATA datagram (the packet in
// base64 inside the JSON body, plus the header and hmac) stays within one
// 1500-byte frame, so nothing relies on IP fragments.
constexpr uint32_t kResupplyPiece = 900;
// Records per UDP_MANIFEST: 512 of 16 bytes, ~11 KB in base64 (a few frames
// on the LAN); fewer, larger manifests cost both ends less per datagram.
constexpr size_t kUdpManifestRecords = 512;

// An Ethernet address written aa:bb:cc:dd:ee:ff.
bool parse_mac(const std::string& s, uint8_t out[6]) {
  unsigned m[6];
  char end;
  if (sscanf(s.c_str(), "%x:%x:%x:%x:%x:%x%c", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5], &end) != 6) return false;
  for (int i = 0; i < 6; i++) {
    if (m[i] > 0xff) return false;
    out[i] = uint8_t(m[i]);
  }
  return true;
}

class FenceWrap : public Napi::ObjectWrap<FenceWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Fence", {
      InstanceMethod<&FenceWrap::Prepare>("prepare"),
      InstanceMethod<&FenceWrap::Engage>("engage"),
      InstanceMethod<&FenceWrap::Release>("release"),
      InstanceMethod<&FenceWrap::Remove>("remove"),
      InstanceMethod<&FenceWrap::Engaged>("engaged"),
    });
  }

  FenceWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FenceWrap>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw_error(env, "T2CP_CONFIG", "new Fence(options)");
    Napi::Object o = info[0].As<Napi::Object>();
    std::string role = get_str(o, "role");
    if (role != "gateway" && role != "primary") throw_error(env, "T2CP_CONFIG", "fence role must be gateway or primary");
    cfg_.role = role == "gateway" ? FenceConfig::Role::kGateway : FenceConfig::Role::kPrimary;
    cfg_.table = get_str(o, "table");
    cfg_.vip = to_ipv4(env, get_str(o, "vip"), "fence vip");
    std::string mac = get_str(o, "mac");
    if (!mac.empty()) set_mac(env, mac);
  }

 private:
  void set_mac(Napi::Env env, const std::string& mac) {
    if (!parse_mac(mac, cfg_.mac))
      throw_error(env, "T2CP_CONFIG", "gateway fence needs the old primary's MAC (aa:bb:cc:dd:ee:ff), got '" + mac + "'");
    has_mac_ = true;
  }
  void check(Napi::Env env, NftStatus s, const std::string& err) {
    if (s != NftStatus::kOk)
      throw_error(env, s == NftStatus::kBusy ? "T2CP_BUSY" : s == NftStatus::kPermission ? "T2CP_PERMISSION" : "T2CP_NFTABLES", err);
  }
  Napi::Value Prepare(const Napi::CallbackInfo& info) {
    std::string err;
    check(info.Env(), fence_.prepare(cfg_, &err), err);
    return info.Env().Undefined();
  }
  // engage(mac?): a gateway fence may learn the MAC only now.
  Napi::Value Engage(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string err;
    if (info[0].IsString()) set_mac(env, info[0].As<Napi::String>().Utf8Value());
    else if (cfg_.role == FenceConfig::Role::kGateway && !has_mac_)
      throw_error(env, "T2CP_CONFIG", "gateway fence: the old primary's MAC is unknown");
    check(env, fence_.prepare(cfg_, &err), err);
    check(env, fence_.engage(&err, cfg_.role == FenceConfig::Role::kGateway ? cfg_.mac : nullptr), err);
    return env.Undefined();
  }
  Napi::Value Release(const Napi::CallbackInfo& info) {
    fence_.release();
    return info.Env().Undefined();
  }
  Napi::Value Remove(const Napi::CallbackInfo& info) {
    fence_.remove();
    return info.Env().Undefined();
  }
  Napi::Value Engaged(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), fence_.engaged()); }

  FenceConfig cfg_;
  bool has_mac_ = false;
  FenceTables fence_;
};

// new Recorder({lanIf, vip, ports, windowMs, maxBytes}): the gateway's
// traffic recorder (traffic_recorder.h). start(), resupply(sinceUs) (done
// on the recorder's thread; counters() says what it sent), stop().
class RecorderWrap : public Napi::ObjectWrap<RecorderWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Recorder", {
      InstanceMethod<&RecorderWrap::Start>("start"),
      InstanceMethod<&RecorderWrap::Stop>("stop"),
      InstanceMethod<&RecorderWrap::Resupply>("resupply"),
      InstanceMethod<&RecorderWrap::ArmReplay>("armReplay"),
      InstanceMethod<&RecorderWrap::Lookup>("lookup"),
      InstanceMethod<&RecorderWrap::UdpManifest>("udpManifest"),
      InstanceMethod<&RecorderWrap::UdpLookup>("udpLookup"),
      InstanceMethod<&RecorderWrap::CountersJs>("counters"),
    });
  }

  RecorderWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RecorderWrap>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw_error(env, "T2CP_CONFIG", "new Recorder(options)");
    Napi::Object o = info[0].As<Napi::Object>();
    cfg_.ifname = get_str(o, "lanIf");
    cfg_.vip = to_ipv4(env, get_str(o, "vip"), "recorder vip");
    cfg_.ports = to_ports(env, o.Get("ports"), "recorder ports");
    if (o.Has("udpPorts")) cfg_.udp_ports = to_ports(env, o.Get("udpPorts"), "recorder udpPorts");
    cfg_.window_ms = get_u32(o, "windowMs", cfg_.window_ms);
    Napi::Value mb = o.Get("maxBytes");
    if (mb.IsNumber()) cfg_.max_bytes = static_cast<uint64_t>(mb.As<Napi::Number>().Int64Value());
  }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) {
    std::string err = rec_.start(cfg_);
    if (!err.empty()) throw_error(info.Env(), err.find("does not exist") != std::string::npos ? "T2CP_NO_INTERFACE" : "T2CP_CAPTURE", err);
    return info.Env().Undefined();
  }
  Napi::Value Stop(const Napi::CallbackInfo& info) {
    rec_.stop();
    return info.Env().Undefined();
  }
  Napi::Value Resupply(const Napi::CallbackInfo& info) {
    rec_.request_resupply(info[0].IsNumber() ? uint64_t(info[0].As<Napi::Number>().Int64Value()) : 0);
    return info.Env().Undefined();
  }
  // armReplay(sinceUs, oldOwnerMac): replay at the new owner's announcement.
  Napi::Value ArmReplay(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint8_t mac[6];
    if (!info[0].IsNumber() || !info[1].IsString() || !parse_mac(info[1].As<Napi::String>().Utf8Value(), mac))
      throw_error(env, "T2CP_CONFIG", "armReplay(sinceUs, oldOwnerMac 'aa:bb:cc:dd:ee:ff')");
    rec_.arm_replay(uint64_t(info[0].As<Napi::Number>().Int64Value()), mac);
    return env.Undefined();
  }
  // lookup({client, clientPort, vipPort, from, to}): recorded client
  // segments carrying [from, to) of that flow, as packets (Buffers).
  Napi::Value Lookup(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw_error(env, "T2CP_CONFIG", "lookup({client, clientPort, vipPort, from, to})");
    Napi::Object o = info[0].As<Napi::Object>();
    uint32_t client = to_ipv4(env, get_str(o, "client"), "client");
    auto pieces = rec_.lookup(client, uint16_t(get_u32(o, "clientPort", 0)), uint16_t(get_u32(o, "vipPort", 0)),
                              get_u32(o, "from", 0), get_u32(o, "to", 0), kResupplyPiece, kResupplyMaxBytes);
    Napi::Array a = Napi::Array::New(env, pieces.size());
    for (size_t i = 0; i < pieces.size(); i++) a.Set(uint32_t(i), Napi::Buffer<uint8_t>::Copy(env, pieces[i].data(), pieces[i].size()));
    return a;
  }

  // udpManifest(after, fromNow, askerMac?): {first, next, lost, more, cut,
  // records: Buffer of 16-byte records, direct: numbers forwarded to
  // askerMac} (TrafficRecorder::udp_manifest); undefined when the recorder
  // was given no UDP port.
  Napi::Value UdpManifest(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint8_t mac[6];
    const bool has_mac = info[2].IsString();
    if (!info[0].IsNumber() || (has_mac && !parse_mac(info[2].As<Napi::String>().Utf8Value(), mac)))
      throw_error(env, "T2CP_CONFIG", "udpManifest(after: number, fromNow: boolean, askerMac?: 'aa:bb:cc:dd:ee:ff')");
    if (cfg_.udp_ports.empty()) return env.Undefined();
    TrafficRecorder::UdpManifest m = rec_.udp_manifest(uint64_t(info[0].As<Napi::Number>().Int64Value()),
                                                       info[1].ToBoolean().Value(), kUdpManifestRecords,
                                                       has_mac ? mac : nullptr);
    Napi::Object o = Napi::Object::New(env);
    o.Set("first", double(m.first));
    o.Set("next", double(m.next));
    o.Set("lost", double(m.lost));
    o.Set("more", m.more);
    o.Set("cut", m.cut);
    o.Set("records", Napi::Buffer<uint8_t>::Copy(env, m.records.data(), m.records.size()));
    Napi::Array direct = Napi::Array::New(env, m.direct.size());
    for (size_t i = 0; i < m.direct.size(); i++) direct.Set(uint32_t(i), double(m.direct[i]));
    o.Set("direct", direct);
    return o;
  }
  // udpLookup(numbers: number[]): the recorded datagrams still held, as packets.
  Napi::Value UdpLookup(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsArray()) throw_error(env, "T2CP_CONFIG", "udpLookup(numbers: number[])");
    Napi::Array in = info[0].As<Napi::Array>();
    std::vector<uint64_t> numbers;
    for (uint32_t i = 0; i < in.Length(); i++) {
      Napi::Value v = in.Get(i);
      if (v.IsNumber()) numbers.push_back(uint64_t(v.As<Napi::Number>().Int64Value()));
    }
    // A datagram larger than a piece goes as fragments, made whole again by the backup's engine.
    std::vector<std::vector<uint8_t>> pieces;
    for (const auto& d : rec_.udp_lookup(numbers))
      for (auto& f : fragment_ipv4(d.data(), d.size(), kResupplyPiece + 20)) pieces.push_back(std::move(f));
    Napi::Array a = Napi::Array::New(env, pieces.size());
    for (size_t i = 0; i < pieces.size(); i++) a.Set(uint32_t(i), Napi::Buffer<uint8_t>::Copy(env, pieces[i].data(), pieces[i].size()));
    return a;
  }

  Napi::Value CountersJs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const RecorderCounters& c = rec_.counters();
    Napi::Object o = Napi::Object::New(env);
    o.Set("recorded_packets", double(c.recorded_packets.load()));
    o.Set("recorded_bytes", double(c.recorded_bytes.load()));
    o.Set("evicted_packets", double(c.evicted_packets.load()));
    o.Set("resupplied_packets", double(c.resupplied_packets.load()));
    o.Set("resupplied_bytes", double(c.resupplied_bytes.load()));
    o.Set("send_errors", double(c.send_errors.load()));
    o.Set("malformed", double(c.malformed.load()));
    o.Set("capture_drops", double(c.capture_drops.load()));
    o.Set("lookups", double(c.lookups.load()));
    o.Set("looked_up_packets", double(c.looked_up_packets.load()));
    o.Set("looked_up_bytes", double(c.looked_up_bytes.load()));
    o.Set("replays_on_announcement", double(c.replays_on_announcement.load()));
    o.Set("replays_on_report", double(c.replays_on_report.load()));
    o.Set("replay_started_us", double(c.replay_started_us.load()));
    o.Set("udp_recorded", double(c.udp_recorded.load()));
    o.Set("udp_evicted", double(c.udp_evicted.load()));
    o.Set("udp_manifests", double(c.udp_manifests.load()));
    o.Set("udp_looked_up", double(c.udp_looked_up.load()));
    o.Set("udp_reassembled", double(c.udp_reassembled.load()));
    o.Set("udp_direct", double(c.udp_direct.load()));
    o.Set("held_bytes", double(rec_.held_bytes()));
    return o;
  }

  RecorderConfig cfg_;
  TrafficRecorder rec_;
};

}  // namespace

Napi::Function define_fence(Napi::Env env) { return FenceWrap::Define(env); }
Napi::Function define_recorder(Napi::Env env) { return RecorderWrap::Define(env); }

}  // namespace t2cp
