// Failure recovery, active mode in the kernel: the same translation as
// recovery_active_mode.cc (read its header for the why of every field), run
// as two tc programs on the interface that holds the VIP after the takeover
// (tcx ingress: client -> new owner; tcx egress: new owner -> client), so a
// taken-over flow's packets never leave the kernel. Flows not in the map
// (connections opened after the takeover, other traffic) pass untouched.
//
// The whole TCP header (20..60 bytes) is read into a buffer, rewritten there,
// written back, and the checksum is adjusted by the difference of the two
// buffers: bpf_l4_csum_replace leaves a CHECKSUM_PARTIAL packet (our own
// output, GSO super-packets included) to the device and keeps a
// CHECKSUM_COMPLETE one (GRO) consistent.
//
// Built by binding.gyp with clang -target bpf; loaded and attached by
// recovery_active_mode_kernel.cc.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "recovery_active_mode_maps.h"

#define TCP_MAX_HDR 60
#define OPT_EOL 0
#define OPT_NOP 1
#define OPT_SACK 5   /* RFC 2018 */
#define OPT_TS 8     /* RFC 7323 */
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
// RFC 792 (linux/icmp.h pulls in libc headers a BPF target has not).
#define ICMP_DEST_UNREACH 3
#define ICMP_TIME_EXCEEDED 11
struct icmp_header {
  __u8 type, code;
  __u16 checksum;
  __u32 rest;  // unused, or the next hop's MTU (fragmentation needed)
};

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 65536);  // set to --max-flows before loading
  __type(key, struct t2cp_active_key);
  __type(value, struct t2cp_active_flow);
} t2cp_flows SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct t2cp_active_config);
} t2cp_config SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, T2CP_ACTIVE_STAT_COUNT);
  __type(key, __u32);
  __type(value, __u64);
} t2cp_stats SEC(".maps");

// include/net/tcp.h
static __always_inline int before(__u32 a, __u32 b) { return (__s32)(a - b) < 0; }
static __always_inline int after(__u32 a, __u32 b) { return before(b, a); }

static __always_inline void count(__u32 stat) {
  __u64* v = bpf_map_lookup_elem(&t2cp_stats, &stat);
  if (v) *v += 1;  // per-CPU slot: no other writer
}

static __always_inline __u32 get32(const __u8* p) {
  return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
}
static __always_inline void put32(__u8* p, __u32 v) {
  p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

struct segment {
  __u32 saddr, daddr;          // network order
  __u16 sport, dport;          // network order
  __u32 l4;                    // offset of the TCP header in the frame
  __u32 hdr_len;               // TCP header length, 20..60, a multiple of 4
  __u32 payload;               // in this frame: a first fragment's, not the segment's
  int first_fragment;          // the segment's header and its first bytes; the rest follows
  // The TCP header, rewritten in place; the slack past 60 bytes lets the
  // verifier see every option access (offset < 60, option <= 40 bytes) in
  // bounds without a check per byte.
  __u8 hdr[TCP_MAX_HDR + 40];
};

// Reads an IPv4/TCP frame's headers; 0 on success. With first_fragments, the
// first fragment of a segment a narrower link cut (its whole header: what is
// translated; the fragments after it carry payload only, which needs none)
// is read too. Later fragments and anything else are not ours.
static __always_inline int read_segment(struct __sk_buff* skb, struct segment* s, int first_fragments) {
  if (skb->protocol != bpf_htons(ETH_P_IP)) return -1;
  struct iphdr ip;
  if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof ip)) return -1;
  if (ip.version != 4 || ip.ihl < 5 || ip.protocol != IPPROTO_TCP) return -1;
  if (ip.frag_off & bpf_htons(0x1fff)) return -1;                       // a later fragment
  s->first_fragment = (ip.frag_off & bpf_htons(0x2000)) != 0;           // MF at offset 0
  if (s->first_fragment && !first_fragments) return -1;
  s->saddr = ip.saddr;
  s->daddr = ip.daddr;
  s->l4 = ETH_HLEN + ip.ihl * 4;
  __u8 doff;
  if (bpf_skb_load_bytes(skb, s->l4 + 12, &doff, 1)) return 1;
  __u32 len = (doff >> 4) * 4;
  if (len < 20) return 1;
  s->hdr_len = len;
  // Bounds the verifier can follow: len - 4 is 16..56, so this is len, and
  // the buffer's slack covers what the mask allows (4..67).
  asm volatile("" : "+r"(len));
  if (bpf_skb_load_bytes(skb, s->l4, s->hdr, ((len - 4) & 0x3f) + 4)) return 1;
  __u32 ip_len = bpf_ntohs(ip.tot_len);
  __u32 headers = ip.ihl * 4 + s->hdr_len;
  s->payload = ip_len > headers ? ip_len - headers : 0;
  __builtin_memcpy(&s->sport, s->hdr, 2);
  __builtin_memcpy(&s->dport, s->hdr + 2, 2);
  return 0;
}

// Writes the rewritten header back and adjusts the checksum by the
// difference; the checksum field itself is left as it was in both buffers.
static __always_inline int write_segment(struct __sk_buff* skb, struct segment* s, const __u8* orig) {
  __u32 len = s->hdr_len;
  if (len < 20 || len > TCP_MAX_HDR) return -1;
  __s64 diff = bpf_csum_diff((__be32*)orig, len, (__be32*)s->hdr, len, 0);
  if (diff < 0) return -1;
  if (bpf_skb_store_bytes(skb, s->l4, s->hdr, len, 0)) return -1;
  return bpf_l4_csum_replace(skb, s->l4 + 16, 0, (__u32)diff, 0);
}

static __always_inline const struct t2cp_active_config* config(void) {
  __u32 zero = 0;
  return bpf_map_lookup_elem(&t2cp_config, &zero);
}

// The client's echo of a primary TSval, in the new owner's clock: never
// beyond what it sent, never before its first (sequence_map.h map_tsecr).
static __always_inline __u32 map_tsecr(const struct t2cp_active_flow* f, __u32 tsecr) {
  __u32 d = after(tsecr, f->p_tsval_at_active) ? f->ts_out_delta : f->ts_delta;
  __u32 t = tsecr + d;
  if (after(t, f->b_tsval)) return f->b_tsval;
  if (before(t, f->b_synack_tsval)) return f->b_synack_tsval;
  return t;
}

// SACK blocks: mapped, kept only above the ack and within what the new owner
// sent; a shorter option is padded with NOPs (sequence_map.h map_sack).
static __always_inline void map_sack(const struct t2cp_active_flow* f, __u8* o, __u32 olen, __u32 ack_b) {
  __u8 kept[32];
  int n = 0;
  for (int i = 0; i < 4; i++) {
    if (2 + 8 * i + 8 > olen) break;
    __u32 l = get32(o + 2 + 8 * i) + f->seq_delta, r = get32(o + 6 + 8 * i) + f->seq_delta;
    if (after(r, l) && after(l, ack_b) && !after(r, f->b_snd_nxt)) {
      put32(kept + 8 * (n & 3), l);
      put32(kept + 8 * (n & 3) + 4, r);
      n++;
    } else {
      count(T2CP_ACTIVE_SACK_DROPPED);
    }
  }
  for (int i = 2; i < 34; i++) {
    if (i >= olen) break;
    __u32 j = i - 2;
    o[i] = j < 8 * (__u32)n ? kept[j & 31] : OPT_NOP;
  }
  if (n) {
    o[1] = 2 + 8 * n;
  } else {
    o[0] = OPT_NOP;
    o[1] = OPT_NOP;
  }
}

// Calls the option rewriters on every option of the header buffer.
static __always_inline void each_option(struct segment* s, struct t2cp_active_flow* f, int inbound, __u32 ack_b) {
  __u32 i = 20;
  for (int guard = 0; guard < 40; guard++) {
    if (i >= s->hdr_len) return;
    __u32 at = i & 63;  // == i (below 60); the mask keeps the verifier's bounds
    __u8 kind = s->hdr[at];
    if (kind == OPT_EOL) return;
    if (kind == OPT_NOP) { i = at + 1; continue; }
    __u8 len = s->hdr[at + 1];
    if (len < 2 || at + len > s->hdr_len) return;
    __u8* o = s->hdr + at;
    if (kind == OPT_TS && len == 10) {
      if (inbound) {
        put32(o + 6, map_tsecr(f, get32(o + 6)));
      } else {
        __u32 tsval = get32(o + 2);
        if (after(tsval, f->b_tsval)) f->b_tsval = tsval;
        put32(o + 2, tsval - f->ts_out_delta);
      }
    } else if (kind == OPT_SACK && inbound) {
      map_sack(f, o, len, ack_b);
    }
    i = at + len;
  }
}

// An ICMP error to the VIP (destination unreachable, fragmentation needed
// among them; time exceeded) quotes the start of a segment the new owner
// sent, as it left: in the primary's numbers. The kernel checks the quoted
// sequence number against what the socket sent (tcp_v4_err) and ignores an
// error outside it: a path MTU drop after a takeover would leave the flow
// sending segments too large for ever. The quoted seq is put back in the new
// owner's numbers (the ICMP checksum adjusted); anything else passes as is.
static __noinline void translate_icmp_error(struct __sk_buff* skb, const struct t2cp_active_config* cfg) {
  struct iphdr ip;
  if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof ip)) return;
  if (ip.version != 4 || ip.ihl < 5 || ip.protocol != IPPROTO_ICMP || ip.daddr != cfg->vip || (ip.frag_off & bpf_htons(0x3fff))) return;
  __u32 icmp_off = ETH_HLEN + ip.ihl * 4;
  struct icmp_header icmp;
  if (bpf_skb_load_bytes(skb, icmp_off, &icmp, sizeof icmp)) return;
  if (icmp.type != ICMP_DEST_UNREACH && icmp.type != ICMP_TIME_EXCEEDED) return;
  struct iphdr in;
  __u32 in_off = icmp_off + sizeof icmp;
  if (bpf_skb_load_bytes(skb, in_off, &in, sizeof in)) return;
  if (in.version != 4 || in.ihl < 5 || in.protocol != IPPROTO_TCP || in.saddr != cfg->vip) return;
  __u32 tcp_off = in_off + in.ihl * 4;
  __u8 quoted[8];  // source port, destination port, sequence number: what an error must quote
  if (bpf_skb_load_bytes(skb, tcp_off, quoted, sizeof quoted)) return;
  struct t2cp_active_key k = {in.daddr, 0, 0};
  __builtin_memcpy(&k.vip_port, quoted, 2);
  __builtin_memcpy(&k.client_port, quoted + 2, 2);
  struct t2cp_active_flow* f = bpf_map_lookup_elem(&t2cp_flows, &k);
  if (!f) return;
  __u32 seq_p = get32(quoted + 4);
  __u32 old_be = bpf_htonl(seq_p), new_be = bpf_htonl(seq_p + f->seq_delta);
  if (bpf_skb_store_bytes(skb, tcp_off + 4, &new_be, 4, 0)) return;
  bpf_l4_csum_replace(skb, icmp_off + 2, old_be, new_be, 4);
  count(T2CP_ACTIVE_ICMP_TRANSLATED);
}

// client -> new owner: ack, SACK, TSecr into the new owner's numbers.
SEC("tc")
int t2cp_active_ingress(struct __sk_buff* skb) {
  if (skb->pkt_type != PACKET_HOST) return TC_ACT_OK;  // a mirrored frame, not for us
  const struct t2cp_active_config* cfg = config();
  if (!cfg) return TC_ACT_OK;
  struct segment s = {};
  int r = read_segment(skb, &s, 1);
  if (r < 0) {
    // Not TCP: only an ICMP error about a taken-over flow is ours (off the TCP path).
    if (skb->protocol == bpf_htons(ETH_P_IP)) translate_icmp_error(skb, cfg);
    return TC_ACT_OK;
  }
  if (r > 0 || s.daddr != cfg->vip) {
    if (r > 0 && s.daddr == cfg->vip) count(T2CP_ACTIVE_UNPARSED);
    return TC_ACT_OK;
  }
  struct t2cp_active_key k = {s.saddr, s.sport, s.dport};
  struct t2cp_active_flow* f = bpf_map_lookup_elem(&t2cp_flows, &k);
  if (!f) { count(T2CP_ACTIVE_PASSTHROUGH); return TC_ACT_OK; }
  __u8 flags = s.hdr[13];
  __u32 seq = get32(s.hdr + 4);
  if ((flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
    // The client reuses the port for a new connection: a local one now.
    bpf_map_delete_elem(&t2cp_flows, &k);
    count(T2CP_ACTIVE_PASSTHROUGH);
    return TC_ACT_OK;
  }
  if (f->c_fin && after(seq, f->c_fin_seq + 1)) {  // a newer connection on this key
    count(T2CP_ACTIVE_PASSTHROUGH);
    return TC_ACT_OK;
  }
  __u8 orig[TCP_MAX_HDR];
  __builtin_memcpy(orig, s.hdr, TCP_MAX_HDR);
  __u32 ack_b = f->b_rcv_nxt;
  if (flags & TCP_ACK) {
    __u32 ack_mapped = get32(s.hdr + 8) + f->seq_delta;
    ack_b = ack_mapped;
    if (after(ack_b, f->b_snd_nxt)) {
      ack_b = f->b_snd_nxt;
      count(T2CP_ACTIVE_ACK_CLAMPED);
      // The same right edge (sequence_map.h map_window).
      __u32 w = ((__u32)s.hdr[14] << 8 | s.hdr[15]) + ((ack_mapped - ack_b) >> (f->c_shift & 15));
      if (w > 65535) w = 65535;
      s.hdr[14] = w >> 8;
      s.hdr[15] = w;
    }
    put32(s.hdr + 8, ack_b);
  }
  each_option(&s, f, 1, ack_b);
  // A FIN's sequence number needs the whole segment's length: a cut one's FIN is left to the
  // next (the client sends it again, or acks past it).
  if ((flags & TCP_FIN) && !s.first_fragment) { f->c_fin = 1; f->c_fin_seq = seq + s.payload; }
  if (flags & TCP_RST) f->c_rst = 1;
  f->last_seen_ns = bpf_ktime_get_ns();
  count(T2CP_ACTIVE_IN_PACKETS);
  if (write_segment(skb, &s, orig)) count(T2CP_ACTIVE_UNPARSED);
  else skb->mark = cfg->translated_mark;  // the catch-up queue rules leave it alone
  return TC_ACT_OK;
}

// new owner -> client: seq into the primary's numbers, TSval shifted,
// window rescaled to the shift the client applies.
SEC("tc")
int t2cp_active_egress(struct __sk_buff* skb) {
  const struct t2cp_active_config* cfg = config();
  if (!cfg || skb->mark == cfg->inject_mark) return TC_ACT_OK;  // resent by us, already in primary numbers
  struct segment s = {};
  int r = read_segment(skb, &s, 0);  // the new owner's TCP sets DF: its segments are never cut
  if (r < 0) return TC_ACT_OK;
  if (r > 0 || s.saddr != cfg->vip) {
    if (r > 0 && s.saddr == cfg->vip) count(T2CP_ACTIVE_UNPARSED);
    return TC_ACT_OK;
  }
  struct t2cp_active_key k = {s.daddr, s.dport, s.sport};
  struct t2cp_active_flow* f = bpf_map_lookup_elem(&t2cp_flows, &k);
  if (!f) { count(T2CP_ACTIVE_PASSTHROUGH); return TC_ACT_OK; }
  __u8 orig[TCP_MAX_HDR];
  __builtin_memcpy(orig, s.hdr, TCP_MAX_HDR);
  __u8 flags = s.hdr[13];
  __u32 seq = get32(s.hdr + 4);
  put32(s.hdr + 4, seq - f->seq_delta);
  __u32 end = seq + s.payload + ((flags & TCP_FIN) ? 1 : 0);
  if (after(end, f->b_snd_nxt)) f->b_snd_nxt = end;
  __u32 ack = get32(s.hdr + 8);
  if ((flags & TCP_ACK) && after(ack, f->b_rcv_nxt)) f->b_rcv_nxt = ack;
  if (!(flags & TCP_SYN)) {
    __u32 bytes = ((__u32)s.hdr[14] << 8 | s.hdr[15]) << (f->b_wscale & 15);
    __u32 w = bytes >> (f->p_wscale & 15);
    if (w > 65535) w = 65535;
    s.hdr[14] = w >> 8;
    s.hdr[15] = w;
  }
  each_option(&s, f, 0, 0);
  __u64 now = bpf_ktime_get_ns();
  if (s.payload && !f->first_data_ns) f->first_data_ns = now;
  if (flags & TCP_FIN) f->b_fin = 1;
  if (flags & TCP_RST) f->b_rst = 1;
  f->last_seen_ns = now;
  count(T2CP_ACTIVE_OUT_PACKETS);
  if (write_segment(skb, &s, orig)) count(T2CP_ACTIVE_UNPARSED);
  return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
