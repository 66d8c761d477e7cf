// storm_client: the workload client of scripts/client.ts for one workload only -- N connections,
// each one 'Q' request and its verified reply -- in C, for the new-connection storm of
// bench/run.ts (the Node client tops out near 3,000 connections/s).
//
//   storm_client --server IP:PORT --connections N --concurrency C [--local IP[,IP...]]
//                [--req-size MIN,MAX] [--resp-size MIN,MAX] [--seed S] --log FILE
//                [--deadline-ms D]
//
// One thread, one epoll, non-blocking connects. C connections are in flight at once; connection i
// binds to local address i mod (number of --local addresses) before it connects (the kernel picks
// the port at connect time: IP_BIND_ADDRESS_NO_PORT, so a port is only unique per 4-tuple). Each
// connection sends one frame 'Q' | u32 len | body, reads the reply and checks every byte of it
// against answerFor(body) of scripts/protocol.ts, then sends its FIN, waits for the server's FIN
// and closes.
//
// The request of connection i is the one client.ts sends for session i of the workload
// {"seed":S,"sessions":[{"kind":"rr","times":N,"count":1,"reqSize":[..],"respSize":[..]}]}:
// the same Prng("t2cp-workload/S/i") draws, so both clients put the same bytes on the wire.
//
// One JSON line per connection goes to FILE (ClientLogLine of scripts/protocol.ts, same field
// order), and at the end one summary line to stdout as client.ts prints it:
//   {"sessions","ok","failed","txBytes","rxBytes","ms","errors":[first 5 failures]}
//
// Logs key a connection by its local ip:port (compareReplicas tells a reused port's connections
// apart by their digests). On loopback, give several --local addresses (127.0.0.1,127.0.0.2,...):
// with one, the kernel reuses TIME-WAIT ports within a run past about 14k connections
// (tcp_tw_reuse=2 applies to loopback). Inside the testbed's namespaces (veth, no reuse) ports
// stay unique until ~28k connections per local address within 60 s; past that, connect fails
// EADDRNOTAVAIL.
//
// Exits 0 iff every connection was ok. At the deadline (default 120000 ms) every connection still
// open or not yet started is logged with error "deadline" and the client exits 1.

#define _GNU_SOURCE /* strerrorname_np */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "storm_common.h"

#define MAX_BUFFERED (16u * 1024 * 1024) /* largest Q body or reply -- MAX_BUFFERED in protocol.ts */
#define PRNG_U32_BLOCK 4096              /* Prng.u32() refills by this many stream bytes -- protocol.ts */
#define READ_CHUNK (64 * 1024)           /* bytes per read() */
#define MAX_EVENTS 256                   /* epoll events per wait */
#define MAX_LOCALS 64                    /* --local addresses */
#define SUMMARY_ERRORS 5                 /* failures listed in the summary -- client.ts */

enum state { CONNECTING, SENDING, AWAIT_REPLY, AWAIT_FIN };

struct sess {
  struct sess *prev, *next; // the open list, for the deadline
  uint32_t index;
  int fd;
  enum state state;
  EVP_MD_CTX *rx, *tx;
  uint64_t rx_bytes, tx_bytes;
  uint8_t *req; // the whole Q frame
  size_t req_len, req_off;
  uint8_t *want; // the whole expected A frame
  size_t want_len, got;
  char mismatch[96]; // first wrong byte: reported at close, as client.ts does
  char local[INET_ADDRSTRLEN + 8];
  bool connected;
  double t0_ms;
};

static uint32_t n_conns, concurrency;
static uint64_t seed;
static uint32_t req_min = 4, req_max = 512, resp_min = 1, resp_max = 4096; // client.ts's rr defaults
static struct sockaddr_in server;
static char server_text[80];
static struct in_addr locals[MAX_LOCALS];
static unsigned n_locals;
static FILE *log_file;
static int ep;
static EVP_MD *sha256_md;
static EVP_CIPHER *aes_ctr;
static EVP_MD_CTX *scratch_md;
static EVP_CIPHER_CTX *cipher;
static uint8_t read_buf[READ_CHUNK];
static struct sess *open_list;
// Totals for the summary; the lowest-numbered failures, in session order.
static uint32_t n_done, n_ok;
static uint64_t total_tx, total_rx;
static struct { uint32_t index; char text[160]; } first_errors[SUMMARY_ERRORS];
static unsigned n_first_errors;

static void die(const char *what) {
  fprintf(stderr, "storm_client: %s: %s\n", what, strerror(errno));
  exit(2);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sha256(const void *b, size_t n, uint8_t out[32]) {
  EVP_DigestInit_ex(scratch_md, sha256_md, NULL);
  EVP_DigestUpdate(scratch_md, b, n);
  EVP_DigestFinal_ex(scratch_md, out, NULL);
}

/** n bytes of stream(seed32) starting at block `block` (16 bytes each): AES-128-CTR over zeros. */
static void stream_bytes(const uint8_t seed32[32], uint32_t block, uint8_t *out, size_t n) {
  uint8_t iv[16];
  memcpy(iv, seed32 + 16, 16);
  // The IV is a 128-bit big-endian counter (OpenSSL's CTR, as Node's createCipheriv uses).
  uint64_t carry = block;
  for (int i = 15; i >= 0 && carry; i--) {
    carry += iv[i];
    iv[i] = (uint8_t)carry;
    carry >>= 8;
  }
  memset(out, 0, n);
  int outl = 0;
  EVP_EncryptInit_ex2(cipher, aes_ctr, seed32, iv, NULL);
  EVP_EncryptUpdate(cipher, out, &outl, out, (int)n);
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static void put_be32(uint8_t *p, uint32_t v) { p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = v; }

/** Prng.int(min, max) of protocol.ts from two u32 draws. */
static uint32_t prng_int(uint32_t min, uint32_t max, const uint8_t *two_u32) {
  uint64_t r53 = (uint64_t)be32(two_u32) * 0x200000 + (be32(two_u32 + 4) >> 11);
  return min + (uint32_t)(r53 % ((uint64_t)max - min + 1));
}

/**
 * The request and the expected reply of session i, as client.ts's rr() draws them from
 * Prng(`t2cp-workload/${seed}/${i}`): respLen and the body length from the first four u32s
 * (stream bytes [0, 16) of the u32 buffer refilled in 4096-byte blocks), then the filler from
 * Prng.bytes(), which continues the stream after that first 4096-byte block.
 */
static void make_request(struct sess *s) {
  char label[64];
  int ln = snprintf(label, sizeof label, "t2cp-workload/%llu/%u", (unsigned long long)seed, s->index);
  uint8_t prng_seed[32], draws[16];
  sha256(label, (size_t)ln, prng_seed);
  stream_bytes(prng_seed, 0, draws, sizeof draws);
  uint32_t resp_len = prng_int(resp_min, resp_max, draws);
  uint32_t body_len = prng_int(req_min < 4 ? 4 : req_min, req_max < 4 ? 4 : req_max, draws + 8);
  s->req_len = 5 + (size_t)body_len;
  s->req = malloc(s->req_len);
  s->want_len = 5 + (size_t)resp_len;
  s->want = malloc(s->want_len);
  if (!s->req || !s->want) die("malloc");
  uint8_t *body = s->req + 5;
  s->req[0] = 'Q';
  put_be32(s->req + 1, body_len);
  put_be32(body, resp_len);
  stream_bytes(prng_seed, PRNG_U32_BLOCK / 16, body + 4, body_len - 4);
  uint8_t answer_seed[32];
  sha256(body, body_len, answer_seed);
  s->want[0] = 'A';
  put_be32(s->want + 1, resp_len);
  stream_bytes(answer_seed, 0, s->want + 5, resp_len);
}

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
    else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
    else fputc(ch, f);
  }
  fputc('"', f);
}

static void note_error(uint32_t index, const char *error) {
  unsigned at = n_first_errors;
  while (at > 0 && first_errors[at - 1].index > index) at--;
  if (at >= SUMMARY_ERRORS) return;
  if (n_first_errors < SUMMARY_ERRORS) n_first_errors++;
  memmove(&first_errors[at + 1], &first_errors[at], (n_first_errors - 1 - at) * sizeof first_errors[0]);
  first_errors[at].index = index;
  snprintf(first_errors[at].text, sizeof first_errors[at].text, "%u rr: %s", index, error);
}

/** Ends a session: closes its socket, logs its line, counts it. error NULL means ok. */
static void finish(struct sess *s, const char *error, double now) {
  if (s->fd >= 0) close(s->fd); // also removes it from the epoll set
  if (s->prev) s->prev->next = s->next;
  else if (open_list == s) open_list = s->next;
  if (s->next) s->next->prev = s->prev;
  if (!error && s->mismatch[0]) error = s->mismatch;
  char rx[65], tx[65];
  hex_digest(s->rx, rx);
  hex_digest(s->tx, tx);
  fprintf(log_file, "{\"session\":%u,\"kind\":\"rr\",\"local\":", s->index);
  if (s->connected) json_string(log_file, s->local);
  else fputs("null", log_file);
  fprintf(log_file, ",\"remote\":\"%s\",\"txBytes\":%llu,\"txSha256\":\"%s\",\"rxBytes\":%llu,\"rxSha256\":\"%s\",\"ok\":%s,\"error\":",
          server_text, (unsigned long long)s->tx_bytes, tx, (unsigned long long)s->rx_bytes, rx, error ? "false" : "true");
  if (error) json_string(log_file, error);
  else fputs("null", log_file);
  fprintf(log_file, ",\"ms\":%lld}\n", (long long)(now - s->t0_ms));
  n_done++;
  total_tx += s->tx_bytes;
  total_rx += s->rx_bytes;
  if (error) note_error(s->index, error);
  else n_ok++;
  EVP_MD_CTX_free(s->rx);
  EVP_MD_CTX_free(s->tx);
  free(s->req);
  free(s->want);
  free(s);
}

static void fail_errno(struct sess *s, const char *syscall, int err) {
  char msg[128];
  const char *name = strerrorname_np(err);
  if (strcmp(syscall, "connect") == 0) snprintf(msg, sizeof msg, "connect %s %s", name ? name : strerror(err), server_text);
  else snprintf(msg, sizeof msg, "%s %s", syscall, name ? name : strerror(err));
  finish(s, msg, now_ms());
}

static struct sess *new_sess(uint32_t index) {
  struct sess *s = calloc(1, sizeof *s);
  if (!s) die("calloc");
  s->index = index;
  s->fd = -1;
  s->t0_ms = now_ms();
  s->rx = EVP_MD_CTX_new();
  s->tx = EVP_MD_CTX_new();
  if (!s->rx || !s->tx) die("EVP_MD_CTX_new");
  EVP_DigestInit_ex(s->rx, sha256_md, NULL);
  EVP_DigestInit_ex(s->tx, sha256_md, NULL);
  return s;
}

/** Starts session i: false when it failed at once (and was finished). */
static bool start(uint32_t index) {
  struct sess *s = new_sess(index);
  make_request(s);
  s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s->fd < 0) return fail_errno(s, "socket", errno), false;
  int one = 1;
  setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (n_locals > 0) {
    setsockopt(s->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in la = { .sin_family = AF_INET, .sin_addr = locals[index % n_locals] };
    if (bind(s->fd, (struct sockaddr *)&la, sizeof la) < 0) return fail_errno(s, "bind", errno), false;
  }
  if (connect(s->fd, (struct sockaddr *)&server, sizeof server) < 0 && errno != EINPROGRESS)
    return fail_errno(s, "connect", errno), false;
  s->state = CONNECTING;
  s->next = open_list;
  if (open_list) open_list->prev = s;
  open_list = s;
  struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = s };
  if (epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev) < 0) die("epoll_ctl");
  return true;
}

/** Checks bytes of the reply; returns an error that ends the session, or NULL. */
static const char *check_reply(struct sess *s, const uint8_t *b, size_t n, char *err, size_t errlen) {
  // Whatever follows the one reply is a frame nobody asked for.
  if (s->got + n > s->want_len) {
    size_t extra = s->got >= s->want_len ? 0 : s->want_len - s->got;
    uint8_t op = b[extra];
    if (op != 'A' && op != 'K' && op != 'B') snprintf(err, errlen, "unknown op 0x%x", op);
    else snprintf(err, errlen, "unexpected frame %c", op);
    return err;
  }
  for (size_t i = 0; i < n; i++, s->got++) {
    if (b[i] == s->want[s->got]) continue;
    if (s->got == 0) {
      if (b[i] != 'K' && b[i] != 'B') return snprintf(err, errlen, "unknown op 0x%x", b[i]), err;
      return snprintf(err, errlen, "reply 0: got %c, want A/%zu", b[i], s->want_len - 5), err;
    }
    if (s->got < 5) return snprintf(err, errlen, "reply 0: wrong length, want A/%zu", s->want_len - 5), err;
    if (!s->mismatch[0]) snprintf(s->mismatch, sizeof s->mismatch, "reply 0 (A): wrong byte at offset %zu", s->got - 5);
  }
  return NULL;
}

/** Advances a session as far as its socket allows; false when it was finished. */
static bool step(struct sess *s, uint32_t events) {
  char err[128];
  if (s->state == CONNECTING) {
    // tcp_poll reports nothing for a socket still in SYN-SENT: any of these means done, or failed.
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return true;
    int e = 0;
    socklen_t el = sizeof e;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0) e = errno;
    if (e) return fail_errno(s, "connect", e), false;
    struct sockaddr_in la;
    socklen_t ll = sizeof la;
    if (getsockname(s->fd, (struct sockaddr *)&la, &ll) < 0) return fail_errno(s, "getsockname", errno), false;
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &la.sin_addr, ip, sizeof ip);
    snprintf(s->local, sizeof s->local, "%s:%u", ip, ntohs(la.sin_port));
    s->connected = true;
    s->state = SENDING;
    // tx counts what is handed to the socket, as client.ts does.
    EVP_DigestUpdate(s->tx, s->req, s->req_len);
    s->tx_bytes = s->req_len;
  }
  if (s->state == SENDING) {
    while (s->req_off < s->req_len) {
      ssize_t n = send(s->fd, s->req + s->req_off, s->req_len - s->req_off, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        return fail_errno(s, "write", errno), false;
      }
      s->req_off += (size_t)n;
    }
    if (s->req_off == s->req_len) s->state = AWAIT_REPLY;
  }
  // Read in every state after connect: an early reply, an early FIN or a reset must end it now.
  for (;;) {
    ssize_t n = read(s->fd, read_buf, sizeof read_buf);
    if (n > 0) {
      EVP_DigestUpdate(s->rx, read_buf, (size_t)n);
      s->rx_bytes += (uint64_t)n;
      const char *e = check_reply(s, read_buf, (size_t)n, err, sizeof err);
      if (e) return finish(s, e, now_ms()), false;
      if (s->got == s->want_len && s->state == AWAIT_REPLY) {
        // Normal close: our FIN after the reply, then the server's FIN.
        if (shutdown(s->fd, SHUT_WR) < 0) return fail_errno(s, "shutdown", errno), false;
        s->state = AWAIT_FIN;
      }
    } else if (n == 0) {
      if (s->state != AWAIT_FIN) return finish(s, "server closed the connection first", now_ms()), false;
      return finish(s, NULL, now_ms()), false;
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN) {
      return true;
    } else {
      return fail_errno(s, "read", errno), false;
    }
  }
}

static void usage(void) {
  fputs("usage: storm_client --server IP:PORT --connections N --concurrency C [--local IP[,IP...]]\n"
        "                    [--req-size MIN,MAX] [--resp-size MIN,MAX] [--seed S] --log FILE [--deadline-ms D]\n",
        stderr);
  exit(2);
}

static unsigned long long number(const char *s, const char **rest, unsigned long long max) {
  char *end;
  errno = 0;
  if (*s == '-') usage();
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || v > max || (rest ? false : *end != '\0')) usage();
  if (rest) *rest = end;
  return v;
}

static void range(const char *s, uint32_t *min, uint32_t *max) {
  const char *rest;
  *min = (uint32_t)number(s, &rest, MAX_BUFFERED);
  if (*rest != ',') usage();
  *max = (uint32_t)number(rest + 1, NULL, MAX_BUFFERED);
  if (*max < *min) usage();
}

int main(int argc, char **argv) {
  const char *server_arg = NULL, *local_arg = NULL, *log_path = NULL, *v;
  unsigned long long deadline_ms = 120000; // client.ts's default
  for (int i = 1; i < argc; i++) {
    if ((v = option(argv, argc, &i, "--server"))) server_arg = v;
    else if ((v = option(argv, argc, &i, "--connections"))) n_conns = (uint32_t)number(v, NULL, 100000000);
    else if ((v = option(argv, argc, &i, "--concurrency"))) concurrency = (uint32_t)number(v, NULL, 1000000);
    else if ((v = option(argv, argc, &i, "--local"))) local_arg = v;
    else if ((v = option(argv, argc, &i, "--req-size"))) range(v, &req_min, &req_max);
    else if ((v = option(argv, argc, &i, "--resp-size"))) range(v, &resp_min, &resp_max);
    else if ((v = option(argv, argc, &i, "--seed"))) seed = number(v, NULL, (1ull << 53) - 1);
    else if ((v = option(argv, argc, &i, "--log"))) log_path = v;
    else if ((v = option(argv, argc, &i, "--deadline-ms"))) deadline_ms = number(v, NULL, 86400000);
    else usage();
  }
  if (!server_arg || !log_path || n_conns == 0 || concurrency == 0) usage();
  if (concurrency > n_conns) concurrency = n_conns;

  char host[64];
  const char *colon = strrchr(server_arg, ':');
  if (!colon || (size_t)(colon - server_arg) >= sizeof host) usage();
  memcpy(host, server_arg, (size_t)(colon - server_arg));
  host[colon - server_arg] = '\0';
  server.sin_family = AF_INET;
  server.sin_port = htons((uint16_t)number(colon + 1, NULL, 65535));
  if (inet_pton(AF_INET, host, &server.sin_addr) != 1) usage();
  snprintf(server_text, sizeof server_text, "%s:%u", host, ntohs(server.sin_port));
  if (local_arg) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", local_arg);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
      if (n_locals == MAX_LOCALS || inet_pton(AF_INET, tok, &locals[n_locals]) != 1) usage();
      n_locals++;
    }
  }

  raise_nofile_limit();
  signal(SIGPIPE, SIG_IGN);
  log_file = open_log(log_path);
  if (!fetch_crypto(&sha256_md, &aes_ctr, &scratch_md, &cipher)) {
    fputs("storm_client: libcrypto has no SHA256 or AES-128-CTR\n", stderr);
    return 2;
  }
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");

  uint32_t next = 0, in_flight = 0;
  const double started = now_ms(), deadline = started + (double)deadline_ms;
  struct epoll_event events[MAX_EVENTS];
  while (n_done < n_conns) {
    // Keep `concurrency` sessions in flight; one that fails at once frees its slot again.
    while (in_flight < concurrency && next < n_conns) {
      if (start(next++)) in_flight++;
    }
    if (in_flight == 0) continue;
    double left = deadline - now_ms();
    if (left <= 0) break;
    int n = epoll_wait(ep, events, MAX_EVENTS, left > 1000 ? 1000 : (int)left + 1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      if (!step(events[i].data.ptr, events[i].events)) in_flight--;
    }
  }
  // Deadline: the open sessions fail, and so do those never started (never connected).
  while (open_list) finish(open_list, "deadline", now_ms());
  while (next < n_conns) finish(new_sess(next++), "deadline", now_ms());
  fflush(log_file);
  printf("{\"sessions\":%u,\"ok\":%u,\"failed\":%u,\"txBytes\":%llu,\"rxBytes\":%llu,\"ms\":%lld,\"errors\":[",
         n_conns, n_ok, n_conns - n_ok, (unsigned long long)total_tx, (unsigned long long)total_rx,
         (long long)(now_ms() - started));
  for (unsigned i = 0; i < n_first_errors; i++) {
    if (i) fputc(',', stdout);
    json_string(stdout, first_errors[i].text);
  }
  puts("]}");
  return n_ok == n_conns ? 0 : 1;
}
