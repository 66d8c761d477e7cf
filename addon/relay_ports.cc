#include "relay_ports.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <strings.h>

#include "output_compare.h"

namespace t2cp {

namespace {

struct Span { uint32_t at = 0, len = 0; };

// The line of buf[from, end) that starts at `from`: its end (before CR LF or LF) and the next line's start.
void line_at(const uint8_t* p, uint32_t from, uint32_t end, uint32_t* line_end, uint32_t* next) {
  uint32_t i = from;
  while (i < end && p[i] != '\n') i++;
  *next = i < end ? i + 1 : end;
  *line_end = i > from && p[i - 1] == '\r' ? i - 1 : i;
}

bool starts(const uint8_t* p, uint32_t from, uint32_t end, const char* word) {
  const uint32_t n = uint32_t(std::strlen(word));
  return end - from >= n && std::memcmp(p + from, word, n) == 0;
}

// Decimal digits at p[at...]: their span and value (0 and an empty span when none or over 65535).
Span digits(const uint8_t* p, uint32_t at, uint32_t end, uint32_t* value) {
  Span s{at, 0};
  uint32_t v = 0;
  while (at + s.len < end && std::isdigit(p[at + s.len]) && s.len < 6) v = v * 10 + uint32_t(p[at + s.len++] - '0');
  if (v > 65535) s.len = 0;
  *value = s.len ? v : 0;
  return s;
}

// The SIP header Content-Length (or its compact form l) in p[0, end): the span of its value.
Span content_length(const uint8_t* p, uint32_t end) {
  uint32_t from = 0, line_end = 0, next = 0;
  for (; from < end; from = next) {
    line_at(p, from, end, &line_end, &next);
    uint32_t i = from;
    while (i < line_end && p[i] != ':' && p[i] != ' ' && p[i] != '\t') i++;
    const uint32_t name_len = i - from;
    const bool named = (name_len == 14 && strncasecmp(reinterpret_cast<const char*>(p + from), "content-length", 14) == 0) ||
                       (name_len == 1 && std::tolower(p[from]) == 'l');
    if (!named) continue;
    while (i < line_end && (p[i] == ' ' || p[i] == '\t')) i++;
    if (i >= line_end || p[i] != ':') continue;
    i++;
    while (i < line_end && (p[i] == ' ' || p[i] == '\t')) i++;
    uint32_t ignored = 0;
    return digits(p, i, line_end, &ignored);
  }
  return {};
}

}  // namespace

uint64_t relay_digest(const uint8_t* payload, uint32_t len, const char* vip_text, const std::bitset<65536>& relay,
                      SdpRelayScan* scan) {
  scan->n = 0;
  const uint8_t* p = payload;
  const uint8_t* sep = static_cast<const uint8_t*>(memmem(p, len, "\r\n\r\n", 4));
  const uint32_t body = sep ? uint32_t(sep - p) + 4 : len;
  auto plain = [&] { return uint64_t(crc32c(0, p, len)) << 32 | len; };
  if (!sep || !starts(p, body, len, "v=0")) return plain();

  Span masked[2 * SdpRelayScan::kMaxMedia + 1];
  int spans = 0;
  const size_t vip_len = std::strlen(vip_text);
  // c= naming the VIP (an address ends at '/', a multicast TTL, or at the line's end).
  auto names_vip = [&](uint32_t from, uint32_t line_end) {
    if (!starts(p, from, line_end, "c=IN IP4 ")) return false;
    from += 9;
    return line_end - from >= vip_len && std::memcmp(p + from, vip_text, vip_len) == 0 &&
           (from + vip_len == line_end || p[from + vip_len] == '/');
  };
  bool session_vip = false;
  struct Section { bool open = false, has_c = false, vip = false; uint32_t port = 0, rtcp = 0; Span port_at, rtcp_at; } s;
  auto close = [&]() {
    if (!s.open) return;
    const bool vip = s.has_c ? s.vip : session_vip;
    if (vip && s.port && relay.test(s.port) && scan->n < SdpRelayScan::kMaxMedia) {
      SdpRelayScan::Media& m = scan->media[scan->n++];
      m.rtp = uint16_t(s.port);
      masked[spans++] = s.port_at;
      if (s.rtcp_at.len && relay.test(s.rtcp)) {
        m.rtcp = uint16_t(s.rtcp);
        masked[spans++] = s.rtcp_at;
      } else {
        m.rtcp = s.port < 65535 && relay.test(s.port + 1) ? uint16_t(s.port + 1) : 0;
      }
    }
    s = Section{};
  };
  uint32_t line_end = 0, next = 0;
  for (uint32_t from = body; from < len; from = next) {
    line_at(p, from, len, &line_end, &next);
    if (starts(p, from, line_end, "m=")) {
      close();
      s.open = true;
      uint32_t i = from + 2;
      while (i < line_end && p[i] != ' ') i++;
      s.port_at = digits(p, i + 1, line_end, &s.port);
    } else if (starts(p, from, line_end, "c=")) {
      if (s.open) {
        s.has_c = true;
        s.vip = names_vip(from, line_end);
      } else {
        session_vip = names_vip(from, line_end);
      }
    } else if (s.open && starts(p, from, line_end, "a=rtcp:")) {
      s.rtcp_at = digits(p, from + 7, line_end, &s.rtcp);
    }
  }
  close();
  if (!scan->n) return plain();
  const Span cl = content_length(p, body);
  if (cl.len) masked[spans++] = cl;
  std::sort(masked, masked + spans, [](const Span& a, const Span& b) { return a.at < b.at; });
  uint32_t crc = 0, at = 0, kept = 0;
  for (int i = 0; i < spans; i++) {
    crc = crc32c(crc, p + at, masked[i].at - at);
    kept += masked[i].at - at;
    at = masked[i].at + masked[i].len;
  }
  crc = crc32c(crc, p + at, len - at);
  kept += len - at;
  return uint64_t(crc) << 32 | kept;
}

}  // namespace t2cp
