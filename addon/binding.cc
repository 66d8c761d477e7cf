// N-API entry of the addon: the module's exports (the classes come from
// binding_engine.cc and binding_gateway.cc; binding*.cc are the only files
// that include napi.h) and the small functions. Options are validated in
// TypeScript before they get here.
//
// Thread: JS main thread only.
#include "binding_util.h"
#include "counters.h"
#include "incoming_capture.h"
#include "recovery_active_mode_kernel.h"

namespace t2cp {

const char* const kCounterNames[kCounterCount] = {
#define T2CP_COUNTER_NAME(name) #name,
    T2CP_COUNTERS(T2CP_COUNTER_NAME)
#undef T2CP_COUNTER_NAME
};

namespace {

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  set_error_class(info[0].As<Napi::Function>());
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
  exports.Set("Engine", define_engine(env));
  exports.Set("Fence", define_fence(env));
  exports.Set("Recorder", define_recorder(env));
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
