// Shared harness of the native test programs (packet_test, replication_test).
// No framework: each test is a function run by run_test(), a test fails if
// any CHECK in it fails, and finish() prints the last line "N passed, N
// failed" (run.sh and native.test.ts read that line). Header-only; include it
// once per program.
//
// CHECK_EQ prints the two values in decimal; define CHECK_EQ_HEX before
// including this header to print them in hex (0x...) instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

// ---------------------------------------------------------------- harness

inline int g_check_failures = 0;  // in the current test
inline int g_tests_passed = 0, g_tests_failed = 0;
inline const char* g_test_name = "";

#define CHECK(cond)                                                                        \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      if (g_check_failures++ < 10)                                                         \
        std::printf("  FAIL %s: %s:%d: %s\n", g_test_name, __FILE__, __LINE__, #cond);     \
    }                                                                                      \
  } while (0)

#ifdef CHECK_EQ_HEX
#define CHECK_EQ_FORMAT_ "  FAIL %s: %s:%d: %s == %s (0x%llx vs 0x%llx)\n"
#else
#define CHECK_EQ_FORMAT_ "  FAIL %s: %s:%d: %s == %s (%llu vs %llu)\n"
#endif

#define CHECK_EQ(a, b)                                                                     \
  do {                                                                                     \
    const auto va_ = (a);                                                                  \
    const auto vb_ = (b);                                                                  \
    if (!(va_ == vb_)) {                                                                   \
      if (g_check_failures++ < 10)                                                         \
        std::printf(CHECK_EQ_FORMAT_, g_test_name, __FILE__, __LINE__, #a, #b,             \
                    static_cast<unsigned long long>(va_),                                  \
                    static_cast<unsigned long long>(vb_));                                 \
    }                                                                                      \
  } while (0)

// Byte strings compared and both printed on a failure.
#define CHECK_BYTES(a, b)                                                                   \
  do {                                                                                      \
    const std::string va_ = (a), vb_ = (b);                                                 \
    if (va_ != vb_ && g_check_failures++ < 10)                                              \
      std::printf("  FAIL %s: %s:%d: %s == \"%s\" (got \"%s\")\n", g_test_name, __FILE__, __LINE__, #a, \
                  vb_.c_str(), va_.c_str());                                                \
  } while (0)

// Context for the next failures of a randomized test (seed, iteration, step).
#define NOTE(...)                                                                          \
  do {                                                                                     \
    if (g_check_failures > 0 && g_check_failures <= 10) std::printf("    at " __VA_ARGS__); \
  } while (0)

inline void run_test(const char* name, void (*fn)()) {
  g_test_name = name;
  g_check_failures = 0;
  fn();
  if (g_check_failures == 0) {
    ++g_tests_passed;
    std::printf("ok   %s\n", name);
  } else {
    ++g_tests_failed;
    std::printf("FAIL %s (%d failed checks)\n", name, g_check_failures);
  }
}

// Prints the summary line and returns the program's exit status.
inline int finish() {
  std::printf("%d passed, %d failed\n", g_tests_passed, g_tests_failed);
  return g_tests_failed ? 1 : 0;
}

// ---------------------------------------------------------------- random

// xorshift64*: deterministic, seedable.
inline uint64_t g_rng = 0x9E3779B97F4A7C15ull;
inline void set_seed(const char* text) { g_rng = std::strtoull(text, nullptr, 0) | 1; }
// "<program>: seed 0x...", the first line a test program prints.
inline void print_seed(const char* program) {
  std::printf("%s: seed 0x%llx\n", program, static_cast<unsigned long long>(g_rng));
}

inline uint64_t rnd() {
  g_rng ^= g_rng >> 12;
  g_rng ^= g_rng << 25;
  g_rng ^= g_rng >> 27;
  return g_rng * 0x2545F4914F6CDD1Dull;
}
inline uint32_t rnd32() { return static_cast<uint32_t>(rnd() >> 32); }
inline uint32_t rnd_below(uint32_t n) { return n ? static_cast<uint32_t>((rnd() >> 32) % n) : 0; }
inline bool chance(uint32_t percent) { return rnd_below(100) < percent; }
inline void fill_random(uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(rnd() >> 56);
}
