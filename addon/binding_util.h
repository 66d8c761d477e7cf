// Helpers shared by the addon's N-API files (binding*.cc, the only files
// that include napi.h): errors with stable codes thrown as src/errors.ts's
// T2cpError, and reading validated options out of JS objects.
//
// Thread: JS main thread only.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

namespace t2cp {

// src/errors.ts T2cpError, handed over once at load (setErrorClass).
void set_error_class(const Napi::Function& cls);
[[noreturn]] void throw_error(Napi::Env env, const std::string& code, const std::string& message);
uint32_t get_u32(const Napi::Object& o, const char* key, uint32_t dflt);
std::string get_str(const Napi::Object& o, const char* key);
// An IPv4 address (network order) from a dotted-quad string; `what` names it in the error.
uint32_t to_ipv4(Napi::Env env, const std::string& text, const char* what);
// A port list from a JS array of numbers; `what` names it in the error.
std::vector<uint16_t> to_ports(Napi::Env env, const Napi::Value& v, const char* what);

// The classes the module exports (binding_engine.cc, binding_gateway.cc).
Napi::Function define_engine(Napi::Env env);
Napi::Function define_fence(Napi::Env env);
Napi::Function define_recorder(Napi::Env env);

}  // namespace t2cp
