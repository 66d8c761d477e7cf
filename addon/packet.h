// Packet layer: parse Ethernet/IPv4/TCP frames as captured (mirror port) or as
// queued by NFQUEUE (starting at the IP header), build IPv4/TCP segments for
// injection, and compute Internet checksums.
//
// Pure functions, no allocation, no globals: safe from any thread. Callers own
// every buffer. Nothing here throws; malformed input returns a ParseError that
// the caller counts (one counter per reason, see kParseErrorNames).
#pragma once
#include <cstddef>
#include <cstdint>

namespace t2cp {

// TCP flag bits as on the wire (byte 13 of the TCP header).
enum TcpFlag : uint8_t {
  kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10, kUrg = 0x20, kEce = 0x40, kCwr = 0x80,
};

constexpr int kMaxSackBlocks = 4;  // 40 bytes of options hold at most 4 blocks (RFC 2018)

struct SackBlock { uint32_t left, right; };  // [left, right) in sequence space, host order

struct TcpOptions {
  bool has_mss = false;       uint16_t mss = 0;
  bool has_wscale = false;    uint8_t wscale = 0;
  bool sack_permitted = false;
  bool has_ts = false;        uint32_t tsval = 0, tsecr = 0;
  uint8_t sack_count = 0;     SackBlock sack[kMaxSackBlocks];
};

// A parsed IPv4/TCP segment. Pointers point into the caller's buffer.
// Addresses are in network byte order (compare with inet_addr results);
// ports, seq, ack, window are in host byte order.
struct Segment {
  const uint8_t* ip = nullptr;     // start of the IPv4 header
  uint32_t ip_len = 0;             // IPv4 total length actually used (see parse)
  uint8_t ip_hdr_len = 0;          // bytes
  uint8_t tcp_hdr_len = 0;         // bytes
  uint32_t saddr = 0, daddr = 0;   // network order
  uint16_t sport = 0, dport = 0;   // host order
  uint32_t seq = 0, ack = 0;       // host order
  uint8_t flags = 0;               // TcpFlag bits
  uint16_t window = 0;             // raw, unscaled, host order
  uint8_t ttl = 0, tos = 0;
  uint16_t ip_id = 0;              // host order
  const uint8_t* options = nullptr;  // raw TCP options (tcp_hdr_len - 20 bytes)
  uint8_t options_len = 0;
  const uint8_t* payload = nullptr;
  uint32_t payload_len = 0;
  TcpOptions opt;
};

enum class ParseError : uint8_t {
  kOk = 0,
  kTruncatedL2,      // shorter than an Ethernet (+VLAN) header
  kNotIpv4,          // EtherType is not IPv4 (after at most two VLAN tags)
  kTruncatedIp,      // shorter than the IPv4 header it announces
  kBadIpHeader,      // version != 4, IHL < 5, total length < header
  kBadIpChecksum,    // IPv4 header checksum wrong (the stack always fills it, even with offloads)
  kIpFragment,       // MF set or fragment offset != 0: never reassembled here
  kNotTcp,           // IP protocol is not TCP
  kTruncatedTcp,     // capture or total length shorter than the TCP header
  kBadTcpHeader,     // data offset < 5 or beyond the segment
  kBadTcpOptions,    // option length 0/1, running past the header, wrong fixed length
  kBadUdpLength,     // a UDP datagram whose length field disagrees with its packet's
  kCount
};
// Stable snake_case name per reason, used as counter names: "ok",
// "truncated_l2", "not_ipv4", "truncated_ip", "bad_ip_header",
// "bad_ip_checksum", "ip_fragment", "not_tcp", "truncated_tcp",
// "bad_tcp_header", "bad_tcp_options", "bad_udp_length". Never renamed; new
// reasons append.
extern const char* const kParseErrorNames[static_cast<int>(ParseError::kCount)];

// Both parsers: on kOk every Segment field is set; on an error *out is
// partly written and must not be used. Checks run in a fixed order (L2, IP
// header, IP checksum, fragment, protocol, TCP header, TCP options, then the
// payload's presence), so one frame always gets the same single reason.
// VLAN tags: TPID 0x8100 (802.1Q), 0x88A8 (802.1ad) and 0x9100 (old QinQ);
// a third tag is kNotIpv4. IPv4 options are allowed and skipped.
// TCP options are parsed whatever the flags (the caller decides whether a
// non-SYN MSS matters): a repeated option overwrites the earlier one (a later
// SACK option replaces the blocks), wscale > 14 reads as 14 (RFC 7323 2.3,
// as the kernel clamps), unknown kinds are skipped by their length, EOL ends
// the list (bytes after it are padding). Unlike the kernel, which ignores a
// malformed option, any length error fails the segment with kBadTcpOptions:
// length 0/1, past the header, MSS != 4, WS != 3, SACK-permitted != 2,
// TS != 10, SACK not 2+8n with n >= 1.

// Parse one captured Ethernet frame of caplen bytes (the capture uses a
// snaplen larger than any frame). GRO/TSO super-frames (up to 64 KiB, or more with
// BIG TCP where IPv4 total length is 0) are accepted: when total length is 0
// and the frame is larger than 64 KiB, the frame length defines the packet.
// The TCP checksum is NOT checked: CHECKSUM_PARTIAL frames seen on veth and
// real NICs carry only the pseudo-header sum. A capture shorter than the
// packet is kTruncatedTcp if it cuts the TCP header and kTruncatedIp if it
// cuts the payload: replication needs every payload byte. Ethernet padding
// beyond the IPv4 total length is ignored. "Larger than 64 KiB" is judged on
// the bytes after the L2 header (> 65535: what the 16-bit field cannot hold);
// total length 0 on a smaller packet is kBadIpHeader.
ParseError parse_ethernet(const uint8_t* frame, size_t caplen, Segment* out);

// The same, but with allow_truncated_payload a capture that cuts only the
// payload (the mirror keeps the primary's frames to their headers) parses:
// payload_len and ip_len are what the IPv4 header announces, and the payload
// bytes present are min(payload_len, caplen - (payload - frame)). The
// headers must be complete. The BIG TCP rule is unchanged, so a cut copy of
// a frame with total length 0 is kBadIpHeader (its length went with the
// cut). The result is the strict parse's, except that its kTruncatedIp for a
// cut payload is kOk here: a caller that accepts a cut frame only from one
// sender reports kTruncatedIp for the others when (ip - frame) + ip_len > caplen.
ParseError parse_ethernet(const uint8_t* frame, size_t caplen, bool allow_truncated_payload, Segment* out);

// Parse a packet that starts at its IPv4 header (NFQUEUE, TUN). len is the
// number of bytes available; the IPv4 total length must fit in it unless
// allow_truncated_payload (NFQUEUE copies only headers): then payload points
// to what is there and payload_len is still the length the header announces;
// the bytes actually present are min(len, ip_len) - (payload - ip). The
// headers (IP with options, TCP with options) must be complete either way.
// Without allow_truncated_payload the BIG TCP rule of parse_ethernet applies
// (total length 0 and len > 65535); with it, total length 0 is kBadIpHeader
// since a partial copy cannot tell how long the packet is.
ParseError parse_ipv4(const uint8_t* ip, size_t len, bool allow_truncated_payload, Segment* out);

// What build_segment writes. Addresses network order, the rest host order.
struct SegmentSpec {
  uint32_t saddr = 0, daddr = 0;
  uint16_t sport = 0, dport = 0;
  uint32_t seq = 0, ack = 0;
  uint8_t flags = 0;
  uint16_t window = 0;
  uint8_t ttl = 64, tos = 0;
  uint16_t ip_id = 0;
  // Either raw options copied verbatim (padded to 4 bytes with NOP/EOL;
  // used for a SYN so the backup sees the client's exact options), or the
  // structured ones below (timestamps, then SACK blocks), never both.
  const uint8_t* raw_options = nullptr; uint8_t raw_options_len = 0;
  bool has_ts = false; uint32_t tsval = 0, tsecr = 0;
  uint8_t sack_count = 0; SackBlock sack[kMaxSackBlocks];
  const uint8_t* payload = nullptr; uint32_t payload_len = 0;
  // The payload's second piece, copied after the first: bytes that lie
  // across two chunks of a stream buffer (StreamBuffer::payload()).
  const uint8_t* payload2 = nullptr; uint32_t payload2_len = 0;
};

// Write an IPv4+TCP packet (no L2 header) into out with both checksums
// computed in full. DF is set. Returns the bytes written, or 0 if cap is too
// small or the result would exceed 65535 bytes.
// Also 0 for an inconsistent spec: raw options together with structured ones
// (has_ts or sack_count), raw_options_len > 40, or a null pointer with a
// non-zero length (payload or payload2). Raw options are copied verbatim and padded at the end
// with EOL (zero) bytes to a multiple of 4. Structured: NOP,NOP,TS(10) then
// NOP,NOP,SACK(2+8n); SACK blocks that do not fit the 40 option bytes are
// dropped from the end (3 fit with timestamps, 4 without). The payload may
// lie inside out, e.g. already at its final place (it is moved before any
// header byte is written); raw_options must not overlap out.
size_t build_segment(const SegmentSpec& spec, uint8_t* out, size_t cap);

// ---- Internet checksum (RFC 1071), incremental update (RFC 1624) ----
// Sums are in host byte order over 16-bit words as they lie in memory (the
// kernel's convention): a 16-bit result stored with memcpy is in network
// order, and values read from a packet with memcpy can be fed back as is.
// Any alignment works. To sum a buffer in pieces, every piece but the last
// must have an even length.
uint32_t csum_partial(const void* data, size_t len, uint32_t sum);  // 32-bit running sum
uint16_t csum_fold(uint32_t sum);                                   // fold and complement
// Value to store (network order); the stored checksum field (bytes 10-11)
// is skipped, so it need not be zeroed first. ihl_bytes >= 20.
uint16_t ipv4_header_checksum(const uint8_t* ip, size_t ihl_bytes);
// TCP checksum over pseudo-header + tcp header + payload; tcp points to the
// TCP header, tcp_len is header + payload (<= 65515: the pseudo-header holds
// 16 bits). The stored checksum field (bytes 16-17) is skipped. Returns the
// value to store (network order, as ipv4_header_checksum).
uint16_t tcp_checksum_ipv4(uint32_t saddr, uint32_t daddr, const uint8_t* tcp, size_t tcp_len);
bool ipv4_header_checksum_ok(const uint8_t* ip, size_t ihl_bytes);
// An IPv4 fragment: MF set or a non-zero offset. ip must hold 8 bytes.
inline bool is_ip_fragment(const uint8_t* ip) { return ((ip[6] << 8 | ip[7]) & 0x3fff) != 0; }
// Uses the header's total length: ip must hold that many bytes. False when
// total length is shorter than IP + TCP headers (so for BIG TCP frames,
// total length 0, which carry CHECKSUM_PARTIAL sums anyway).
bool tcp_checksum_ok_ipv4(const uint8_t* ip);
// RFC 1624 eqn. 3: new checksum after a 32-bit field changes from `from` to `to`.
// check, from, to as stored in the packet (network order, read with memcpy).
// Agrees bit for bit with a full recompute, including a result of 0x0000.
uint16_t csum_replace4(uint16_t check, uint32_t from, uint32_t to);

// A UDP datagram (RFC 768) in an IPv4 packet.
struct Datagram {
  const uint8_t* ip = nullptr;     // start of the IPv4 header
  uint32_t ip_len = 0;             // IPv4 total length
  uint32_t saddr = 0, daddr = 0;   // network order
  uint16_t sport = 0, dport = 0;   // host order
  const uint8_t* payload = nullptr;
  uint32_t payload_len = 0;
};
// ip: an IPv4 packet, len bytes captured. The IPv4 header is checked as for
// TCP (kTruncatedIp, kBadIpHeader, kBadIpChecksum, kIpFragment: a fragment
// is never reassembled here); kNotTcp when the protocol is not UDP either;
// kTruncatedIp when the capture holds less than the datagram; kBadUdpLength
// when the UDP length is below 8 or disagrees with the IPv4 total length.
// The UDP checksum is not checked (CHECKSUM_PARTIAL, as for TCP).
ParseError parse_udp(const uint8_t* ip, size_t len, Datagram* out);

// An ICMP error (destination unreachable, time exceeded: RFC 792) about a TCP
// segment, as it quotes the segment's IPv4 header and first 8 TCP bytes.
struct IcmpTcpQuote {
  uint32_t daddr = 0;                    // the error's destination, network order
  uint32_t in_saddr = 0, in_daddr = 0;   // the quoted segment's addresses, network order
  uint16_t in_sport = 0, in_dport = 0;   // host order
  uint32_t in_seq = 0;                   // host order
  size_t icmp_off = 0;                   // the ICMP header, from the error's IPv4 header
  size_t seq_off = 0;                    // the quoted sequence number, likewise
};
// ip: an IPv4 packet of len bytes. True for an unfragmented ICMP type 3 or 11
// whose quote holds an IPv4 header and the first 8 bytes of a TCP header.
bool parse_icmp_tcp_error(const uint8_t* ip, size_t len, IcmpTcpQuote* q);
// The quoted sequence number set to seq (host order), the ICMP checksum kept right.
void set_icmp_quoted_seq(uint8_t* ip, const IcmpTcpQuote& q, uint32_t seq);
// The IPv4 packet in an Ethernet frame (after at most two VLAN tags), and its
// length within the capture; nullptr when the frame carries none.
const uint8_t* ethernet_ipv4(const uint8_t* frame, size_t caplen, size_t* len);
uint16_t csum_replace2(uint16_t check, uint16_t from, uint16_t to);

}  // namespace t2cp
