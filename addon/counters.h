// Counters: one per anomaly, drop reason and milestone (keepalived's
// vrrp_stats habit). Written by the engine thread only, read by the JS thread
// at any time, hence relaxed atomics. Names are stable: they are the keys the
// TypeScript side and the tests see.
#pragma once
#include <atomic>
#include <cstdint>

#include "packet.h"

namespace t2cp {

#define T2CP_COUNTERS(X)                                                          \
  X(mirror_packets)          /* frames read from the mirror port */                \
  X(mirror_bytes)            /* copied out of the capture (the primary's: headers) */\
  X(mirror_superframes)      /* frames longer than one MTU (GRO/TSO) */            \
  X(mirror_unknown_flow)     /* no flow and not a SYN: after an entry expired */   \
  X(mirror_not_replicated)   /* neither end is VIP:port (filter race) */           \
  X(capture_kernel_drops)    /* PACKET_STATISTICS: the socket queue overflowed */  \
  X(capture_if_drops)        /* the mirror interface's own rx_dropped */          \
  X(mirror_link_lost)        /* the mirror port lost its link (flows suspect) */  \
  X(backup_packets)          /* packets of the backup's replica seen on NFQUEUE */ \
  X(backup_dropped)          /* ... and dropped (never reach the network) */       \
  X(backup_unknown_flow)     /* replica output for a flow we do not know */        \
  X(backup_rst)              /* RST sent by the replica */                         \
  X(nfqueue_enobufs)         /* netlink overruns: the kernel dropped queued pkts */\
  X(nfqueue_queue_full)      /* replica packets dropped: --queue-maxlen waiting */ \
  X(inject_packets)          /* segments written to the TUN device */              \
  X(inject_bytes)            /* payload bytes injected */                          \
  X(inject_errors)           /* write() to TUN failed */                           \
  X(inject_syn)                                                                    \
  X(inject_pure_ack)         /* ACK-only segments (acks released later) */         \
  X(inject_reinjected)       /* segments sent again: the replica did not ack */    \
  X(inject_window_probes)    /* 1-byte probes into a closed backup window */       \
  X(held_for_window)         /* times data waited for the backup's window */       \
  X(ack_clamped)             /* client ack beyond the replica's snd_nxt, held */   \
  X(segments_duplicate)      /* client bytes seen before (retransmissions) */      \
  X(segments_out_of_order)   /* client bytes after a hole, kept aside */           \
  X(segments_held_handshake) /* client segments held until both SYN-ACKs known */  \
  X(sack_blocks_mapped)                                                            \
  X(sack_blocks_dropped)     /* outside the replica's sent range */                \
  X(handshake_restarts)      /* replica dropped its half-open connection: SYN again */\
  X(flows_new)                                                                     \
  X(flows_synchronised)                                                            \
  X(flows_unprotected)       /* first seen mid-stream, or handshake failed */      \
  X(flows_refused_max)       /* refused: flow table full */                        \
  X(flows_reused_tuple)      /* new SYN on a key the replica still uses: waits */  \
  X(final_ack_implied)       /* last ACKs implied: a reuse, a FIN not repeated */   \
  X(segments_older_generation) /* late segment of a replaced connection, ignored */\
  X(flows_closed)                                                                  \
  X(flows_expired)           /* idle timeout */                                    \
  X(flow_buffer_full)        /* client bytes lost: flow or memory limit hit */     \
  X(flows_shed)              /* flows given up at the memory limit, largest first */\
  X(buffered_bytes)          /* gauge: client bytes held for lagging replicas */   \
  X(flows_protected_now)     /* gauge: flows open whose replica follows (1 s) */   \
  X(flows_unprotected_now)   /* gauge: flows open and unprotected (1 s) */         \
  X(flows_unprotected_ended) /* unprotected flows whose connection ended (FINs, RST) */ \
  X(flows_lagging_now)       /* gauge: of the protected, replicas past --lag-warn */\
  X(gaps)                    /* primary acked client bytes never captured */       \
  X(causality_held)          /* pumps that held client bytes for the replica's output */\
  X(causality_marks_merged)  /* client segments past the mark limit, merged */       \
  X(replica_stopped)         /* replicas that stopped short of the primary's output */\
  X(replica_behind)          /* flows given up: replica more than --max-lag behind */\
  X(flows_diverged)          /* flows whose replica's output differs from the primary's (--divergence) */\
  X(compare_gave_up)         /* flows no longer compared: the side ahead left too many checkpoints */\
  X(compare_unverified_bytes) /* output bytes not compared: a hole in a side's copy */\
  X(replica_repeats)         /* replica repeats and probes: our ACK repeated */     \
  X(replica_stop_probes)     /* replicas asked for their snd_nxt before a stop */  \
  X(resupply_asked)          /* requests to the gateway's recorder for a gap */     \
  X(resupply_progress)       /* gaps partly filled: their grace counted again */    \
  X(resupply_packets)        /* client segments it resupplied */                   \
  X(resupply_bytes)          /* ... their payload bytes (duplicates included) */   \
  X(resupply_ignored)        /* resupplied for no flow we replicate, or malformed */\
  X(replica_lagging)         /* replica behind by more than --lag-warn (per episode) */\
  X(realtime_yields)         /* real-time packet thread over 50 % busy: turned ordinary */\
  X(events_dropped)          /* event queue to JS full */                         \
  X(out_keep_full)           /* replica data unacked by the client not kept: limit */\
  X(takeover_syn_ignored)    /* client SYNs on the mirror during a takeover */     \
  X(active_in_packets)       /* client packets translated after takeover */       \
  X(active_out_packets)      /* replica packets translated after takeover */      \
  X(active_passthrough)      /* packets of flows not taken over, left untouched */ \
  X(active_ack_clamped)      /* client ack beyond the new owner's snd_nxt, held */ \
  X(active_sack_dropped)     /* SACK blocks outside the new owner's sent range */  \
  X(active_truncated)        /* queued packet not copied whole: left untouched */  \
  X(active_unparsed)         /* VIP packet the kernel translator could not read */ \
  X(active_icmp_translated)  /* ICMP errors quoting a taken-over flow, translated */\
  X(icmp_errors_injected)    /* ICMP errors to the primary about a replicated flow, given the replica */\
  X(icmp_errors_ignored)     /* ICMP errors to the primary about no flow the replica follows */\
  X(udp_datagrams)           /* clients' datagrams to VIP:udp-ports given to the replica */\
  X(udp_bytes)               /* their payload bytes */                             \
  X(udp_replica_datagrams)   /* the replica's datagrams from VIP:udp-ports, dropped */\
  X(udp_associations_new)    /* UDP associations seen first */                     \
  X(udp_associations_expired) /* forgotten after --idle-timeout without a datagram */\
  X(udp_associations_refused) /* not followed: the table was full */              \
  X(udp_records)             /* the gateway recorder's records of datagrams, received */\
  X(udp_verified)            /* records whose datagram the mirror showed */        \
  X(udp_asked)               /* datagrams the mirror lost, asked of the recorder */\
  X(udp_resupplied)          /* ... resupplied by it, given the replica in order */\
  X(udp_resupply_duplicates) /* resupplied copies nobody waited for, dropped */   \
  X(udp_lost)                /* recorded datagrams that never came */             \
  X(udp_unverified)          /* given the replica without their record */         \
  X(udp_held)                /* datagrams held now for their record (a gauge) */  \
  X(udp_compared)            /* replica datagrams found alike the primary's */    \
  X(udp_compare_unverified)  /* replica datagrams with no primary one on the mirror to compare */\
  X(udp_diverged)            /* associations whose replica sent other datagrams than the primary */\
  X(udp_compare_gave_up)     /* associations no longer compared: too much unpaired */\
  X(udp_compare_late)        /* primary datagrams waited for: replica behind on input */\
  X(udp_compare_repeats)     /* datagrams repeating one already paired: not compared */\
  X(udp_relay_pairs)        /* relay ports the two copies' SDPs paired (a gauge) */ \
  X(udp_relay_held)         /* datagrams to a relay port held for its pair (a gauge) */\
  X(udp_relay_unpaired)     /* datagrams to or from a relay port no SDP paired: dropped */\
  X(udp_relay_translated)   /* relay ports' associations translated at the takeover */\
  X(udp_relay_translated_queued) /* relay datagrams queued before the takeover's rules, translated by the engine */\
  X(tcp_fragments)           /* fragments of clients' segments to VIP:ports */     \
  X(tcp_reassembled)         /* segments made whole from them */                   \
  X(tcp_reassembly_failed)   /* fragments given up: timed out, overlapping, bounds */\
  X(udp_takeover_sent)       /* replica datagrams the primary never sent, sent at takeover */\
  X(udp_takeover_dropped)    /* ... larger than what the comparison keeps, or not sent */\
  X(udp_fragments)           /* fragments to and from the VIP (clients', primary's) */  \
  X(udp_reassembled)         /* datagrams made whole from them, both ways */             \
  X(udp_reassembly_failed)   /* fragments given up: timed out, overlapping, bounds */   \
  X(udp_resupplied_fragments) /* fragments of datagrams the recorder resupplied cut */   \
  X(udp_resupply_reassembly_failed) /* ... given up: timed out, overlapping, bounds */ \
  X(resume_segments)         /* kept data sent to clients at takeover */           \
  X(resume_bytes)                                                                  \
  X(resume_acks)             /* ACKs sent to clients at takeover */                \
  X(resume_errors)           /* raw send failed */                                 \
  X(catch_up_client_packets) /* client packets fed to finishing replicas after the IP moved */\
  X(takeover_client_resets)  /* clients of flows that cannot continue, reset at takeover */\
  X(garp_sent)               /* gratuitous ARPs for the VIP */

enum Counter : int {
#define T2CP_COUNTER_ENUM(name) k_##name,
  T2CP_COUNTERS(T2CP_COUNTER_ENUM)
#undef T2CP_COUNTER_ENUM
  kCounterCount
};

// Parse failures get one counter per reason and per source.
constexpr int kParseReasons = static_cast<int>(ParseError::kCount);

struct Counters {
  std::atomic<uint64_t> v[kCounterCount] = {};
  std::atomic<uint64_t> mirror_parse[kParseReasons] = {};
  std::atomic<uint64_t> backup_parse[kParseReasons] = {};

  void add(Counter c, uint64_t n = 1) { v[c].fetch_add(n, std::memory_order_relaxed); }
  void set(Counter c, uint64_t n) { v[c].store(n, std::memory_order_relaxed); }
  uint64_t get(Counter c) const { return v[c].load(std::memory_order_relaxed); }
};

extern const char* const kCounterNames[kCounterCount];

}  // namespace t2cp
