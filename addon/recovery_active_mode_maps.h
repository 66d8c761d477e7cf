// Failure recovery, active mode in the kernel: the layout of the BPF maps
// that recovery_active_mode.bpf.c (tc programs) and
// recovery_active_mode_kernel.cc (the engine) share. Plain C, fixed-size
// fields, no padding surprises: both compilers see the same bytes.
//
// Byte order: addresses and ports in network order (as on the wire),
// sequence numbers, timestamps and deltas in host order (as computed).
#ifndef T2CP_RECOVERY_ACTIVE_MODE_MAPS_H
#define T2CP_RECOVERY_ACTIVE_MODE_MAPS_H

#include <linux/types.h>

// One taken-over flow, seen from the client: (client address, client port,
// service port). The VIP is the other end.
struct t2cp_active_key {
  __u32 client_addr;
  __u16 client_port;
  __u16 vip_port;
};

// Written once at takeover step 3 by the engine (the mapping) and then kept
// current by the programs (the new owner's progress). The engine reads the
// second half on its timer to close and expire flows.
struct t2cp_active_flow {
  // The mapping, fixed from step 3 on (see recovery_active_mode.h).
  __u32 seq_delta;          // replica ISN - primary ISN
  __u32 ts_delta;           // replica SYN-ACK TSval - primary SYN-ACK TSval
  __u32 ts_out_delta;       // replica TSval - this = the client's view
  __u32 p_tsval_at_active;  // the primary's last TSval: newer echoes are ours
  __u32 b_synack_tsval;     // the replica's first TSval
  __u8 p_wscale;            // the shift the client applies to our windows
  __u8 b_wscale;            // the replica's own shift
  __u8 c_shift;             // the client's shift of its own windows
  __u8 pad0;
  // The new owner's progress, kept by the programs.
  __u32 b_snd_nxt;          // highest seq+len sent (egress)
  __u32 b_rcv_nxt;          // highest ack sent (egress)
  __u32 b_tsval;            // latest TSval sent (egress)
  __u32 c_fin_seq;          // the client's FIN (ingress)
  __u8 c_fin, c_rst, b_fin, b_rst;
  __u64 last_seen_ns;       // CLOCK_MONOTONIC, either direction
  __u64 first_data_ns;      // first payload the new owner sent, 0 none yet
};

struct t2cp_active_config {
  __u32 vip;                // network order
  __u32 inject_mark;        // packets we send ourselves (kInjectMark): untouched
  __u32 translated_mark;    // put on client packets translated (kTranslatedMark)
};

// Per-CPU counters; the engine sums them into the counters of the same
// meaning (counters.h, active_*).
enum t2cp_active_stat {
  T2CP_ACTIVE_IN_PACKETS,
  T2CP_ACTIVE_OUT_PACKETS,
  T2CP_ACTIVE_PASSTHROUGH,
  T2CP_ACTIVE_ACK_CLAMPED,
  T2CP_ACTIVE_SACK_DROPPED,
  T2CP_ACTIVE_UNPARSED,     // VIP traffic the program could not read: left untouched
  T2CP_ACTIVE_ICMP_TRANSLATED,  // ICMP errors quoting a taken-over flow's segment, put in the new owner's numbers
  T2CP_ACTIVE_STAT_COUNT,
};

#endif
