#include "binding_util.h"

#include <arpa/inet.h>

namespace t2cp {

// The error class is the environment's instance data, released with it: a
// global reference would be deleted after its environment is gone, at exit
// (Node 18 crashed there, after the program's work was done).
void set_error_class(const Napi::Function& cls) {
  cls.Env().SetInstanceData<Napi::FunctionReference>(new Napi::FunctionReference(Napi::Persistent(cls)));
}

[[noreturn]] void throw_error(Napi::Env env, const std::string& code, const std::string& message) {
  if (Napi::FunctionReference* cls = env.GetInstanceData<Napi::FunctionReference>(); cls && !cls->IsEmpty()) {
    Napi::Object e = cls->New({Napi::String::New(env, message), Napi::String::New(env, code)});
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

uint32_t to_ipv4(Napi::Env env, const std::string& text, const char* what) {
  uint32_t a = 0;
  if (inet_pton(AF_INET, text.c_str(), &a) != 1) throw_error(env, "T2CP_CONFIG", std::string(what) + " is not an IPv4 address: " + text);
  return a;
}

std::vector<uint16_t> to_ports(Napi::Env env, const Napi::Value& v, const char* what) {
  if (!v.IsArray()) throw_error(env, "T2CP_CONFIG", std::string(what) + " must be an array");
  Napi::Array pa = v.As<Napi::Array>();
  std::vector<uint16_t> ports;
  for (uint32_t i = 0; i < pa.Length(); i++) ports.push_back(static_cast<uint16_t>(pa.Get(i).As<Napi::Number>().Uint32Value()));
  return ports;
}

}  // namespace t2cp
