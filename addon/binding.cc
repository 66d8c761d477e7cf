// N-API surface of the addon: the only file that includes napi.h. Options
// arrive already validated by src/config.ts and are copied once into an
// EngineConfig; nothing on the per-packet path touches a JS value.
//
// Thread: every function here runs on the JS main thread, except the lambda
// given to Engine::set_notify, which runs on the engine thread and only
// queues a call through the ThreadSafeFunction.
#include <napi.h>

#include <arpa/inet.h>

#include <memory>
#include <vector>

#include "counters.h"
#include "engine.h"
#include "incoming_capture.h"
#include "incoming_timing.h"
#include "recovery_fence.h"
#include "traffic_recorder.h"

namespace t2cp {

const char* const kCounterNames[kCounterCount] = {
#define T2CP_COUNTER_NAME(name) #name,
    T2CP_COUNTERS(T2CP_COUNTER_NAME)
#undef T2CP_COUNTER_NAME
};

namespace {

// Payload bytes per resupplied piece: a RESUPPLY_DATA datagram (the packet in
// base64 inside the JSON body, plus the header and MAC) stays within one
// 1500-byte frame, so nothing relies on IP fragments.
constexpr uint32_t kResupplyPiece = 900;

Napi::FunctionReference g_error_class;  // src/errors.ts T2cpError, set at load

[[noreturn]] void throw_error(Napi::Env env, const std::string& code, const std::string& message) {
  if (!g_error_class.IsEmpty()) {
    Napi::Object e = g_error_class.New({Napi::String::New(env, message), Napi::String::New(env, code)});
    throw Napi::Error(env, e);
  }
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  throw e;
}

uint32_t get_u32(const Napi::Object& o, const char* key, uint32_t dflt) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : dflt;
}

std::string get_str(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
}

// An IPv4 address (network order) from a dotted-quad string value; `what`
// names it in the error.
uint32_t to_ipv4(Napi::Env env, const std::string& text, const char* what) {
  uint32_t a = 0;
  if (inet_pton(AF_INET, text.c_str(), &a) != 1) throw_error(env, "T2CP_CONFIG", std::string(what) + " is not an IPv4 address: " + text);
  return a;
}

// A port list from a JS array of numbers; `what` names it in the error.
std::vector<uint16_t> to_ports(Napi::Env env, const Napi::Value& v, const char* what) {
  if (!v.IsArray()) throw_error(env, "T2CP_CONFIG", std::string(what) + " must be an array");
  Napi::Array pa = v.As<Napi::Array>();
  std::vector<uint16_t> ports;
  for (uint32_t i = 0; i < pa.Length(); i++) ports.push_back(static_cast<uint16_t>(pa.Get(i).As<Napi::Number>().Uint32Value()));
  return ports;
}

EngineConfig read_config(Napi::Env env, const Napi::Object& o) {
  EngineConfig c;
  c.mirror_if = get_str(o, "mirrorIf");
  c.vip = to_ipv4(env, get_str(o, "vip"), "vip");
  c.ports = to_ports(env, o.Get("ports"), "ports");
  c.tun_name = get_str(o, "tunName");
  c.nft_table = get_str(o, "nftTable");
  c.queue_num = static_cast<uint16_t>(get_u32(o, "queueNum", 0));
  c.queue_max_len = get_u32(o, "queueMaxLen", c.queue_max_len);
  c.capture_buffer = get_u32(o, "captureBuffer", c.capture_buffer);
  c.max_flows = get_u32(o, "maxFlows", c.max_flows);
  c.flow_buffer_limit = get_u32(o, "flowBufferLimit", c.flow_buffer_limit);
  {
    Napi::Value m = o.Get("memoryLimit");
    if (m.IsNumber()) c.memory_limit = static_cast<uint64_t>(m.As<Napi::Number>().Int64Value());
  }
  c.handshake_timeout_ms = get_u32(o, "handshakeTimeoutMs", c.handshake_timeout_ms);
  c.idle_timeout_s = get_u32(o, "idleTimeoutS", c.idle_timeout_s);
  c.event_batch_ms = get_u32(o, "eventBatchMs", c.event_batch_ms);
  c.rt_priority = get_u32(o, "rtPriority", c.rt_priority);
  c.busy_poll_us = get_u32(o, "busyPollUs", c.busy_poll_us);
  c.slice_us = get_u32(o, "sliceUs", c.slice_us);
  c.resupply = o.Get("resupply").ToBoolean().Value();
  c.active_if = get_str(o, "activeIf");
  c.active_object = get_str(o, "activeObject");
  std::string mode = get_str(o, "activeMode");
  using AT = EngineConfig::ActiveTranslator;
  c.active_translator = mode == "kernel" ? AT::kKernel : mode == "queue" ? AT::kQueue : AT::kAuto;
  return c;
}

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Engine", {
      InstanceMethod<&EngineWrap::Start>("start"),
      InstanceMethod<&EngineWrap::Stop>("stop"),
      InstanceMethod<&EngineWrap::Counters>("counters"),
      InstanceMethod<&EngineWrap::Latency>("latency"),
      InstanceMethod<&EngineWrap::RequestFlowStats>("requestFlowStats"),
      InstanceMethod<&EngineWrap::Supply>("supply"),
      InstanceMethod<&EngineWrap::Takeover>("takeover"),
      InstanceMethod<&EngineWrap::TakeoverReportJs>("takeoverReport"),
    });
  }

  // new Engine(config, onEvents(buffer))
  EngineWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineWrap>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject() || !info[1].IsFunction()) throw_error(env, "T2CP_CONFIG", "new Engine(config, onEvents)");
    engine_ = std::make_unique<Engine>(read_config(env, info[0].As<Napi::Object>()));
    on_events_ = Napi::Persistent(info[1].As<Napi::Function>());
  }

  ~EngineWrap() override {
    if (engine_) engine_->stop();
    if (tsfn_) tsfn_.Release();
  }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (engine_->running()) return env.Undefined();
    tsfn_ = Napi::ThreadSafeFunction::New(env, on_events_.Value(), "t2cp-events", 0, 1);
    Engine* eng = engine_.get();
    Napi::ThreadSafeFunction tsfn = tsfn_;
    // Thread: engine. Only queues a wake-up for the JS thread.
    engine_->set_notify([tsfn, this]() mutable {
      tsfn.NonBlockingCall([this](Napi::Env, Napi::Function) { Deliver(); });
    });
    (void)eng;
    EngineError err;
    if (!engine_->start(&err)) {
      tsfn_.Release();
      tsfn_ = Napi::ThreadSafeFunction();
      throw_error(env, err.code, err.message);
    }
    Napi::Object r = Napi::Object::New(env);
    r.Set("removedStaleTable", Napi::Boolean::New(env, engine_->removed_stale_table()));
    r.Set("realtime", Napi::Boolean::New(env, engine_->realtime()));
    r.Set("activeTranslator", engine_->active_translator());
    if (!engine_->kernel_fallback().empty()) r.Set("kernelFallback", engine_->kernel_fallback());
    return r;
  }

  // Thread: JS. Hands every pending record to onEvents in one Buffer.
  void Deliver() {
    if (!engine_) return;
    std::vector<uint8_t> batch;
    engine_->ctx().events.take(&batch);
    engine_->events_taken();
    if (batch.empty()) return;
    Napi::Env env = on_events_.Env();
    Napi::HandleScope scope(env);
    on_events_.Call({Napi::Buffer<uint8_t>::Copy(env, batch.data(), batch.size())});
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    engine_->stop();
    if (tsfn_) {
      tsfn_.Release();
      tsfn_ = Napi::ThreadSafeFunction();
    }
    Deliver();  // the last records (closed flows) are not lost
    return info.Env().Undefined();
  }

  Napi::Value Counters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    const auto& c = engine_->ctx().counters;
    for (int i = 0; i < kCounterCount; i++)
      o.Set(kCounterNames[i], Napi::Number::New(env, double(c.v[i].load(std::memory_order_relaxed))));
    for (int i = 1; i < kParseReasons; i++) {
      o.Set(std::string("mirror_parse_") + kParseErrorNames[i], Napi::Number::New(env, double(c.mirror_parse[i].load())));
      o.Set(std::string("backup_parse_") + kParseErrorNames[i], Napi::Number::New(env, double(c.backup_parse[i].load())));
    }
    o.Set("flows", Napi::Number::New(env, double(engine_->ctx().flows.size())));
    return o;
  }

  // { buckets: [[µs, count], ...] (non-empty 1 µs buckets), maxNs }
  Napi::Value Latency(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const auto& h = engine_->ctx().latency;
    Napi::Array b = Napi::Array::New(env);
    uint32_t k = 0;
    for (int i = 0; i < kLatencyBuckets; i++) {
      uint64_t n = h.bucket[i].load(std::memory_order_relaxed);
      if (!n) continue;
      Napi::Array pair = Napi::Array::New(env, 2);
      pair.Set(0u, Napi::Number::New(env, i));
      pair.Set(1u, Napi::Number::New(env, double(n)));
      b.Set(k++, pair);
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("buckets", b);
    o.Set("maxNs", Napi::Number::New(env, double(h.max_ns.load())));
    return o;
  }

  // supply(packet: Buffer): a client segment resupplied by the gateway.
  Napi::Value Supply(const Napi::CallbackInfo& info) {
    if (!info[0].IsBuffer()) throw_error(info.Env(), "T2CP_CONFIG", "supply(packet: Buffer)");
    Napi::Buffer<uint8_t> b = info[0].As<Napi::Buffer<uint8_t>>();
    engine_->supply(std::vector<uint8_t>(b.Data(), b.Data() + b.Length()));
    return info.Env().Undefined();
  }

  Napi::Value RequestFlowStats(const Napi::CallbackInfo& info) {
    engine_->request_flow_stats();
    return info.Env().Undefined();
  }

  // takeover({vipIf, finishTimeoutMs, garpCount, garpIntervalMs}): starts
  // failure recovery on the engine thread; progress arrives as events.
  Napi::Value Takeover(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw_error(env, "T2CP_CONFIG", "takeover(options)");
    Napi::Object o = info[0].As<Napi::Object>();
    TakeoverConfig c;
    c.vip_if = get_str(o, "vipIf");
    c.finish_timeout_ms = get_u32(o, "finishTimeoutMs", c.finish_timeout_ms);
    c.garp_count = get_u32(o, "garpCount", c.garp_count);
    c.garp_interval_ms = get_u32(o, "garpIntervalMs", c.garp_interval_ms);
    std::string err;
    if (!engine_->request_takeover(c, &err)) throw_error(env, "T2CP_TAKEOVER", err);
    return env.Undefined();
  }

  Napi::Value TakeoverReportJs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    TakeoverReport r = engine_->takeover_report();
    static const char* const kStates[] = {"idle", "running", "done", "failed"};
    static const char* const kSteps[kTakeoverSteps] = {"freeze", "finish", "active", "ip-takeover", "connections"};
    Napi::Object o = Napi::Object::New(env);
    auto num = [&](const char* k, double v) { o.Set(k, Napi::Number::New(env, v)); };
    o.Set("state", kStates[static_cast<int>(r.state)]);
    if (!r.error.empty()) o.Set("error", r.error);
    num("requestedUs", double(r.requested_us));
    Napi::Array steps = Napi::Array::New(env);
    for (int i = 0; i < kTakeoverSteps; i++) {
      if (!r.step_start_us[i]) continue;
      Napi::Object s = Napi::Object::New(env);
      s.Set("n", i + 1);
      s.Set("name", kSteps[i]);
      s.Set("startUs", double(r.step_start_us[i]));
      if (r.step_end_us[i]) {
        s.Set("endUs", double(r.step_end_us[i]));
        s.Set("us", double(r.step_end_us[i] - r.step_start_us[i]));
      }
      steps.Set(steps.Length(), s);
    }
    o.Set("steps", steps);
    num("flowsTakenOver", r.flows_taken_over);
    if (r.state == TakeoverReport::State::kDone) o.Set("translator", r.translated_in_kernel ? "kernel" : "queue");
    num("flowsLost", r.flows_lost);
    num("flowsUnprotected", r.flows_unprotected);
    num("handshakesDropped", r.handshakes_dropped);
    num("flowsResumedWithData", r.flows_resumed_with_data);
    num("bytesResent", double(r.bytes_resent));
    num("replicaLagBytesTotal", double(r.replica_lag_bytes_total));
    num("replicaLagBytesMax", double(r.replica_lag_bytes_max));
    num("bytesFedWhileFinishing", double(r.bytes_fed_while_finishing));
    if (r.stall_final) {
      Napi::Object s = Napi::Object::New(env);
      s.Set("flows", r.stall_flows);
      s.Set("medianUs", double(r.stall_us_median));
      s.Set("maxUs", double(r.stall_us_max));
      o.Set("stall", s);
    }
    return o;
  }

  std::unique_ptr<Engine> engine_;
  Napi::FunctionReference on_events_;
  Napi::ThreadSafeFunction tsfn_;
};

// new Fence({role: 'gateway'|'primary', table, vip, mac?}): owned nft tables
// that silence a replaced primary (recovery_fence.h). prepare() (tables and
// empty chains: slow), engage() (the drop rules: fast), release(), remove().
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
    unsigned m[6];
    if (sscanf(mac.c_str(), "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) != 6)
      throw_error(env, "T2CP_CONFIG", "gateway fence needs the old primary's MAC (aa:bb:cc:dd:ee:ff), got '" + mac + "'");
    for (int i = 0; i < 6; i++) cfg_.mac[i] = uint8_t(m[i]);
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
      InstanceMethod<&RecorderWrap::Lookup>("lookup"),
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
    o.Set("held_bytes", double(rec_.held_bytes()));
    return o;
  }

  RecorderConfig cfg_;
  TrafficRecorder rec_;
};

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  g_error_class = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Value Names(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  Napi::Array c = Napi::Array::New(env, kCounterCount);
  for (int i = 0; i < kCounterCount; i++) c.Set(uint32_t(i), kCounterNames[i]);
  Napi::Array p = Napi::Array::New(env, kParseReasons);
  for (int i = 0; i < kParseReasons; i++) p.Set(uint32_t(i), kParseErrorNames[i]);
  o.Set("counters", c);
  o.Set("parseErrors", p);
  o.Set("eventSize", Napi::Number::New(env, kEventSize));
  return o;
}

// captureFilter(vip, ports): the BPF text the engine compiles (for --help and logs).
Napi::Value CaptureFilter(const Napi::CallbackInfo& info) {
  CaptureConfig c;
  c.vip = to_ipv4(info.Env(), info[0].ToString().Utf8Value(), "vip");
  c.ports = to_ports(info.Env(), info[1], "ports");
  return Napi::String::New(info.Env(), capture_filter(c));
}

// tcxPrograms(ifname): tc programs attached to it through tcx (ours are the
// active-mode translator's), for leftover checks.
Napi::Value TcxPrograms(const Napi::CallbackInfo& info) {
  std::string err;
  int n = KernelTranslator::attached(info[0].ToString().Utf8Value(), &err);
  if (n < 0) throw_error(info.Env(), "T2CP_BPF", err);
  return Napi::Number::New(info.Env(), n);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Engine", EngineWrap::Define(env));
  exports.Set("Fence", FenceWrap::Define(env));
  exports.Set("Recorder", RecorderWrap::Define(env));
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass));
  exports.Set("names", Napi::Function::New(env, Names));
  exports.Set("captureFilter", Napi::Function::New(env, CaptureFilter));
  exports.Set("tcxPrograms", Napi::Function::New(env, TcxPrograms));
  return exports;
}

}  // namespace
}  // namespace t2cp

static Napi::Object InitT2cp(Napi::Env env, Napi::Object exports) { return t2cp::Init(env, exports); }
NODE_API_MODULE(t2cp, InitT2cp)
