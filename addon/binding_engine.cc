// N-API: the backup's engine (new Engine(options, onEvents)). Options arrive
// already validated by src/config.ts and are copied once into an
// EngineConfig; nothing on the per-packet path touches a JS value.
//
// Thread: JS main thread, except the lambda given to Engine::set_notify,
// which runs on the engine thread and only queues a call through the
// ThreadSafeFunction.
#include <arpa/inet.h>

#include <memory>
#include <vector>

#include "binding_util.h"
#include "engine.h"

namespace t2cp {
namespace {

// o[key]: a --divergence policy (0 off, 1 length, 2 strict) per port, in the
// order of a list of n ports; the ports it leaves out are not compared.
std::vector<DivergencePolicy> policies(Napi::Env env, const Napi::Object& o, const char* key, size_t n) {
  std::vector<DivergencePolicy> out;
  Napi::Value d = o.Get(key);
  if (d.IsArray()) {
    Napi::Array a = d.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length() && i < n; i++) {
      uint32_t v = a.Get(i).As<Napi::Number>().Uint32Value();
      if (v > static_cast<uint32_t>(DivergencePolicy::kStrict)) throw Napi::RangeError::New(env, std::string(key) + ": a policy is 0, 1 or 2");
      out.push_back(static_cast<DivergencePolicy>(v));
    }
  }
  out.resize(n, DivergencePolicy::kOff);
  return out;
}

EngineConfig read_config(Napi::Env env, const Napi::Object& o) {
  EngineConfig c;
  c.mirror_if = get_str(o, "mirrorIf");
  c.vip = to_ipv4(env, get_str(o, "vip"), "vip");
  c.ports = to_ports(env, o.Get("ports"), "ports");
  if (o.Has("udpPorts") && o.Get("udpPorts").IsArray()) c.udp_ports = to_ports(env, o.Get("udpPorts"), "udpPorts");
  if (o.Has("relayPorts") && o.Get("relayPorts").IsArray()) c.relay_ports = to_ports(env, o.Get("relayPorts"), "relayPorts");
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
  c.resupply = o.Get("resupply").ToBoolean().Value();
  {
    Napi::Value w = o.Get("lagWarnBytes");
    if (w.IsNumber()) c.lag_warn_bytes = static_cast<uint64_t>(w.As<Napi::Number>().Int64Value());
  }
  c.max_lag_ms = get_u32(o, "maxLagMs", c.max_lag_ms);
  c.divergence = policies(env, o, "divergence", c.ports.size());
  c.udp_divergence = policies(env, o, "udpDivergence", c.udp_ports.size());
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
      InstanceMethod<&EngineWrap::ReplicaLag>("replicaLag"),
      InstanceMethod<&EngineWrap::Divergences>("divergences"),
      InstanceMethod<&EngineWrap::Comparison>("comparison"),
      InstanceMethod<&EngineWrap::RequestFlowStats>("requestFlowStats"),
      InstanceMethod<&EngineWrap::Supply>("supply"),
      InstanceMethod<&EngineWrap::UdpRecords>("udpRecords"),
      InstanceMethod<&EngineWrap::Loops>("loops"),
      InstanceMethod<&EngineWrap::Takeover>("takeover"),
      InstanceMethod<&EngineWrap::TakeoverReportJs>("takeoverReport"),
      InstanceMethod<&EngineWrap::PinTranslator>("pinTranslator"),
      InstanceMethod<&EngineWrap::MirrorLost>("mirrorLost"),
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

  // mirrorLost(): the mirror port lost its link; its flows are suspect.
  Napi::Value MirrorLost(const Napi::CallbackInfo& info) {
    engine_->mirror_lost();
    return info.Env().Undefined();
  }

  // pinTranslator(dir): "" once pinned, else why not.
  Napi::Value PinTranslator(const Napi::CallbackInfo& info) {
    if (!info[0].IsString()) throw_error(info.Env(), "T2CP_CONFIG", "pinTranslator(dir: string)");
    return Napi::String::New(info.Env(), engine_->pin_translator(info[0].As<Napi::String>().Utf8Value()));
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

  // { buckets: [[µs, count], ...] (the non-empty buckets, by lower bound), maxNs }
  template <uint64_t WidthNs, int Buckets>
  static Napi::Object histogram(Napi::Env env, const Histogram<WidthNs, Buckets>& h) {
    Napi::Array b = Napi::Array::New(env);
    uint32_t k = 0;
    for (int i = 0; i < Buckets; i++) {
      uint64_t n = h.bucket[i].load(std::memory_order_relaxed);
      if (!n) continue;
      Napi::Array pair = Napi::Array::New(env, 2);
      pair.Set(0u, Napi::Number::New(env, double(uint64_t(i) * WidthNs / 1000)));
      pair.Set(1u, Napi::Number::New(env, double(n)));
      b.Set(k++, pair);
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("buckets", b);
    o.Set("maxNs", Napi::Number::New(env, double(h.max_ns.load())));
    return o;
  }

  // The capture-to-injection histogram, and its `dequeue` part.
  Napi::Value Latency(const Napi::CallbackInfo& info) {
    Napi::Object o = histogram(info.Env(), engine_->ctx().latency);
    o.Set("dequeue", histogram(info.Env(), engine_->ctx().dequeue));
    return o;
  }

  // { [service port]: histogram } of the replicas' output lag.
  Napi::Value ReplicaLag(const Napi::CallbackInfo& info) {
    Napi::Object o = Napi::Object::New(info.Env());
    for (const auto& [port, h] : engine_->ctx().lag) o.Set(std::to_string(port), histogram(info.Env(), *h));
    return o;
  }

  // The last divergences, oldest first: [{flowId, client, serverPort, timeUs,
  // kind, offset, exact, primary, replica}]; an excerpt is a Buffer, or null
  // when that side's bytes were no longer held.
  Napi::Value Divergences(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EngineContext& ctx = engine_->ctx();
    std::lock_guard<std::mutex> lock(ctx.divergence_mu);
    Napi::Array a = Napi::Array::New(env, ctx.divergences.size());
    uint32_t i = 0;
    for (const auto& r : ctx.divergences) {
      Napi::Object o = Napi::Object::New(env);
      char ip[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &r.key.client_ip, ip, sizeof ip);
      o.Set("flowId", Napi::Number::New(env, r.flow_id));
      o.Set("protocol", Napi::String::New(env, r.flow_id >= UdpFlows::kFirstId ? "udp" : "tcp"));
      o.Set("client", Napi::String::New(env, std::string(ip) + ":" + std::to_string(r.key.client_port)));
      o.Set("serverPort", Napi::Number::New(env, r.key.server_port));
      o.Set("timeUs", Napi::Number::New(env, double(r.time_us)));
      o.Set("kind", Napi::String::New(env, r.what.kind == DivergenceKind::kLength ? "length" : "bytes"));
      o.Set("offset", Napi::Number::New(env, double(r.what.offset)));
      o.Set("exact", Napi::Boolean::New(env, r.what.exact));
      if (r.flow_id >= UdpFlows::kFirstId) o.Set("byte", Napi::Number::New(env, r.what.within));
      const char* side_names[2] = {"primary", "replica"};
      for (int side = 0; side < 2; side++) {
        if (!r.what.excerpt_held[side]) o.Set(side_names[side], env.Null());
        else o.Set(side_names[side], Napi::Buffer<uint8_t>::Copy(env, r.what.excerpt[side], r.what.excerpt_len[side]));
      }
      a.Set(i++, o);
    }
    return a;
  }

  // { [service port]: {policy, identical, diverged, gaveUp, bytesCompared,
  // bytesUnverified, open, bytesOpen} } for the ports whose output is compared.
  Napi::Value Comparison(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    EngineContext& ctx = engine_->ctx();
    Napi::Object o = Napi::Object::New(env);
    for (const auto& [port, p] : ctx.compare_ports) {
      Napi::Object s = Napi::Object::New(env);
      s.Set("policy", Napi::String::New(env, ctx.divergence_of(port) == DivergencePolicy::kStrict ? "strict" : "length"));
      s.Set("identical", Napi::Number::New(env, double(p->identical.load())));
      s.Set("diverged", Napi::Number::New(env, double(p->diverged.load())));
      s.Set("gaveUp", Napi::Number::New(env, double(p->gave_up.load())));
      s.Set("bytesCompared", Napi::Number::New(env, double(p->bytes.load())));
      s.Set("bytesUnverified", Napi::Number::New(env, double(p->unverified.load())));
      s.Set("open", Napi::Number::New(env, double(p->open.load())));
      s.Set("bytesOpen", Napi::Number::New(env, double(p->open_bytes.load())));
      o.Set(std::to_string(port), s);
    }
    return o;
  }

  // supply(packet: Buffer): a client segment resupplied by the gateway.
  Napi::Value Supply(const Napi::CallbackInfo& info) {
    if (!info[0].IsBuffer()) throw_error(info.Env(), "T2CP_CONFIG", "supply(packet: Buffer)");
    Napi::Buffer<uint8_t> b = info[0].As<Napi::Buffer<uint8_t>>();
    engine_->supply(std::vector<uint8_t>(b.Data(), b.Data() + b.Length()));
    return info.Env().Undefined();
  }

  // loops(): passes of the packet thread's loop so far.
  Napi::Value Loops(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(engine_->loops())); }

  // udpRecords(first: number, records: Buffer): a manifest of the gateway
  // recorder's records (udp_ledger.h), numbered from first.
  Napi::Value UdpRecords(const Napi::CallbackInfo& info) {
    if (!info[0].IsNumber() || !info[1].IsBuffer() || info[1].As<Napi::Buffer<uint8_t>>().Length() % kUdpRecordSize)
      throw_error(info.Env(), "T2CP_CONFIG", "udpRecords(first: number, records: Buffer of 16-byte records)");
    Napi::Buffer<uint8_t> b = info[1].As<Napi::Buffer<uint8_t>>();
    engine_->udp_records(uint64_t(info[0].As<Napi::Number>().Int64Value()), std::vector<uint8_t>(b.Data(), b.Data() + b.Length()));
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
    static const char* const kSteps[kTakeoverSteps] = {"freeze", "finish", "active", "ip-takeover", "connections",
                                                            "catch-up"};
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
    num("flowsCaughtUp", r.flows_caught_up);
    num("flowsCatchingUp", r.flows_catching_up);
    num("clientsReset", r.clients_reset);
    if (r.state == TakeoverReport::State::kDone) o.Set("translator", r.translated_in_kernel ? "kernel" : "queue");
    num("flowsLost", r.flows_lost);
    num("flowsUnprotected", r.flows_unprotected);
    num("handshakesDropped", r.handshakes_dropped);
    num("relayTranslated", r.relay_translated);
    num("relayWithoutMedia", r.relay_without_media);
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

}  // namespace

Napi::Function define_engine(Napi::Env env) { return EngineWrap::Define(env); }

}  // namespace t2cp
