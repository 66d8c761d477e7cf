// N-API entry of the addon: the module's exports (the classes come from
// binding_engine.cc and binding_gateway.cc; binding*.cc are the only files
// that include napi.h) and the small functions. Options are validated in
// TypeScript before they get here.
//
// Thread: JS main thread only.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

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

// captureFilter(vip, ports, udpPorts?): the BPF text the engine compiles (for --help and logs).
Napi::Value CaptureFilter(const Napi::CallbackInfo& info) {
  CaptureConfig c;
  c.vip = to_ipv4(info.Env(), info[0].ToString().Utf8Value(), "vip");
  c.ports = to_ports(info.Env(), info[1], "ports");
  if (info.Length() > 2 && info[2].IsArray()) c.udp_ports = to_ports(info.Env(), info[2], "udpPorts");
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

// The pinned translator a takeover left (KernelTranslator::pin), for a
// later process: one open at a time, by this JS thread.
PinnedTranslator& pinned() {
  static PinnedTranslator p;
  return p;
}

// pinnedTranslator(op, dir, ...): 'exists' -> bool; 'reclaim' -> "" or why not;
// 'gc' (idleS, lingerS) -> {flows, removed, inPackets, outPackets};
// 'release' -> "" or why not (closes what was reclaimed, removes the pins).
Napi::Value PinnedTranslatorOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsString()) throw_error(env, "T2CP_CONFIG", "pinnedTranslator(op, dir, ...)");
  std::string op = info[0].As<Napi::String>().Utf8Value();
  std::string dir = info[1].As<Napi::String>().Utf8Value();
  if (op == "exists") return Napi::Boolean::New(env, PinnedTranslator::exists(dir));
  if (op == "reclaim") return Napi::String::New(env, pinned().reclaim(dir));
  if (op == "release") {
    pinned().close();
    return Napi::String::New(env, PinnedTranslator::release(dir));
  }
  if (op == "gc") {
    double idle = info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : 0;
    double linger = info[3].IsNumber() ? info[3].As<Napi::Number>().DoubleValue() : 0;
    PinnedTranslator::Sweep sw = pinned().gc(uint64_t(idle * 1e9), uint64_t(linger * 1e9));
    uint64_t st[T2CP_ACTIVE_STAT_COUNT];
    pinned().stats(st);
    Napi::Object o = Napi::Object::New(env);
    o.Set("flows", sw.flows);
    o.Set("removed", sw.removed);
    o.Set("inPackets", double(st[T2CP_ACTIVE_IN_PACKETS]));
    o.Set("outPackets", double(st[T2CP_ACTIVE_OUT_PACKETS]));
    return o;
  }
  throw_error(env, "T2CP_CONFIG", "pinnedTranslator: unknown op " + op);
  return env.Undefined();
}

// sdNotify(text): sd_notify(3) without libsystemd — one datagram to the
// Unix socket $NOTIFY_SOCKET names (a leading '@': the abstract namespace).
// "" when sent or when no service manager listens (no NOTIFY_SOCKET), else why not.
Napi::Value SdNotify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw_error(env, "T2CP_CONFIG", "sdNotify(text)");
  const std::string text = info[0].As<Napi::String>().Utf8Value();
  const char* path = getenv("NOTIFY_SOCKET");
  if (!path || !*path) return Napi::String::New(env, "");
  sockaddr_un to{};
  to.sun_family = AF_UNIX;
  const size_t n = strlen(path);
  if (n >= sizeof to.sun_path || (path[0] != '/' && path[0] != '@'))
    return Napi::String::New(env, std::string("NOTIFY_SOCKET is not a socket path: ") + path);
  std::memcpy(to.sun_path, path, n);
  if (path[0] == '@') to.sun_path[0] = '\0';
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Napi::String::New(env, std::string("socket: ") + strerror(errno));
  const socklen_t len = socklen_t(offsetof(sockaddr_un, sun_path) + n);
  ssize_t w = sendto(fd, text.data(), text.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&to), len);
  std::string err = w == ssize_t(text.size()) ? "" : std::string("sendto ") + path + ": " + strerror(errno);
  close(fd);
  return Napi::String::New(env, err);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Engine", define_engine(env));
  exports.Set("Fence", define_fence(env));
  exports.Set("Recorder", define_recorder(env));
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass));
  exports.Set("names", Napi::Function::New(env, Names));
  exports.Set("captureFilter", Napi::Function::New(env, CaptureFilter));
  exports.Set("tcxPrograms", Napi::Function::New(env, TcxPrograms));
  exports.Set("pinnedTranslator", Napi::Function::New(env, PinnedTranslatorOp));
  exports.Set("sdNotify", Napi::Function::New(env, SdNotify));
  return exports;
}

}  // namespace
}  // namespace t2cp

static Napi::Object InitT2cp(Napi::Env env, Napi::Object exports) { return t2cp::Init(env, exports); }
NODE_API_MODULE(t2cp, InitT2cp)
