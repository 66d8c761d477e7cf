// storm_server: the deterministic test service of scripts/service.ts, 'Q' op only, in C, for the
// new-connection storm of bench/run.ts (the Node service tops out near 3,000 connections/s; this
// one is not the limit of the bench).
//
//   storm_server --port N --log FILE [--backlog N]
//
// One thread, one epoll, non-blocking sockets. Listens on 0.0.0.0:N, prints `ready` once it
// listens, and answers every frame `'Q' | u32 BE len | body` with `'A' | u32 BE respLen |
// stream(sha256(body))`, where respLen is the body's first 4 bytes and stream(s) is AES-128-CTR
// over zeros with key s[0..16) and IV s[16..32) (scripts/protocol.ts, answerFor). Replies are a
// function of the bytes read only. Any other op, a body shorter than 4 bytes, or a body or reply
// over 16 MiB closes the connection as "protocol-error".
//
// When the peer's FIN has been read and every reply written, the connection is closed (our FIN).
// One JSON line per connection goes to FILE when it ends, in the field order of ServiceLogLine:
//   {"peer","port","rxBytes","rxSha256","txBytes","txSha256","ops","end","open"}
// end is fin | rst | error | protocol-error | sigterm. Lines are written through a large stdio
// buffer that is flushed after every epoll batch that finished a connection, and the sockets of
// that batch are closed only then: once a client sees our FIN, its line is in FILE. On SIGTERM
// or SIGINT the still-open connections are logged with "open":true, the file is flushed and
// fsync'ed, and the server exits 0.

#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
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
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "storm_common.h"

#define MAX_BUFFERED (16u * 1024 * 1024) /* largest Q body or reply -- MAX_BUFFERED in protocol.ts */
#define READ_CHUNK (64 * 1024)           /* bytes per read(); CHUNK in protocol.ts */
#define OUT_HIGH (4u * 1024 * 1024)      /* unsent reply bytes above which we stop reading (our own) */
#define MAX_EVENTS 256                   /* epoll events per wait */

enum end_reason { END_NONE, END_FIN, END_RST, END_ERROR, END_PROTOCOL, END_SIGTERM };
static const char *const end_names[] = { "", "fin", "rst", "error", "protocol-error", "sigterm" };

struct conn {
  int fd;
  struct conn *prev, *next; // the open list, for SIGTERM
  char peer[INET_ADDRSTRLEN + 8];
  EVP_MD_CTX *rx, *tx;
  uint64_t rx_bytes, tx_bytes, ops;
  // Frame parser: header bytes so far, or the body being collected.
  uint8_t hdr[5];
  unsigned hdr_have;
  bool in_body;
  uint32_t body_len;
  uint8_t *body;
  size_t body_have, body_cap;
  // Replies not yet written: out[out_off, out_len).
  uint8_t *out;
  size_t out_off, out_len, out_cap;
  bool peer_ended; // read returned 0
  bool paused;     // stopped reading: too much unsent output
};

static const char tag_listen, tag_signal; // epoll data.ptr of the two non-connection fds
static struct conn *open_list;
static FILE *log_file;
static bool log_dirty;
static int listen_port;
static EVP_MD *sha256_md;
static EVP_CIPHER *aes_ctr;
static EVP_MD_CTX *scratch_md;     // one-shot sha256 of a request body
static EVP_CIPHER_CTX *keystream;  // one reply at a time
static uint8_t read_buf[READ_CHUNK];
// Sockets finished in this epoll batch: closed only after the log is flushed, so that a client
// that has seen our FIN (or RST) finds the connection's line in FILE.
static int closing[MAX_EVENTS];
static int n_closing;

static void die(const char *what) {
  fprintf(stderr, "storm_server: %s: %s\n", what, strerror(errno));
  if (log_file) fflush(log_file);
  exit(1);
}

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n);
  if (!q) {
    fprintf(stderr, "storm_server: out of memory (%zu bytes)\n", n);
    if (log_file) fflush(log_file);
    exit(1);
  }
  return q;
}

static void log_conn(struct conn *c, enum end_reason end, bool still_open) {
  char rx[65], tx[65];
  hex_digest(c->rx, rx);
  hex_digest(c->tx, tx);
  fprintf(log_file,
          "{\"peer\":\"%s\",\"port\":%d,\"rxBytes\":%llu,\"rxSha256\":\"%s\",\"txBytes\":%llu,"
          "\"txSha256\":\"%s\",\"ops\":%llu,\"end\":\"%s\",\"open\":%s}\n",
          c->peer, listen_port, (unsigned long long)c->rx_bytes, rx, (unsigned long long)c->tx_bytes, tx,
          (unsigned long long)c->ops, end_names[end], still_open ? "true" : "false");
  log_dirty = true;
}

/** Flushes the log, then closes the sockets finished since the last call. */
static void flush_log_and_close(void) {
  if (log_dirty && fflush(log_file) != 0) die("log");
  log_dirty = false;
  for (int i = 0; i < n_closing; i++) close(closing[i]); // also leaves the epoll set
  n_closing = 0;
}

/** Logs and frees a connection; its socket is closed at the end of the batch. */
static void finish(struct conn *c, enum end_reason end) {
  log_conn(c, end, false);
  if (n_closing == MAX_EVENTS) flush_log_and_close(); // one finish per event: does not happen
  closing[n_closing++] = c->fd;
  if (c->prev) c->prev->next = c->next;
  else open_list = c->next;
  if (c->next) c->next->prev = c->prev;
  EVP_MD_CTX_free(c->rx);
  EVP_MD_CTX_free(c->tx);
  free(c->body);
  free(c->out);
  free(c);
}

/** Appends the reply to a complete Q body; false on a protocol error. */
static bool answer(struct conn *c) {
  if (c->body_have < 4) return false;
  uint32_t resp_len = (uint32_t)c->body[0] << 24 | (uint32_t)c->body[1] << 16 | (uint32_t)c->body[2] << 8 | c->body[3];
  if (resp_len > MAX_BUFFERED) return false;
  uint8_t seed[32];
  EVP_DigestInit_ex(scratch_md, sha256_md, NULL);
  EVP_DigestUpdate(scratch_md, c->body, c->body_have);
  EVP_DigestFinal_ex(scratch_md, seed, NULL);
  size_t need = c->out_len + 5 + resp_len;
  if (need > c->out_cap) {
    c->out_cap = need < 256 ? 256 : need * 2;
    c->out = xrealloc(c->out, c->out_cap);
  }
  uint8_t *p = c->out + c->out_len;
  p[0] = 'A';
  p[1] = resp_len >> 24, p[2] = resp_len >> 16, p[3] = resp_len >> 8, p[4] = resp_len;
  memset(p + 5, 0, resp_len);
  int n = 0;
  EVP_EncryptInit_ex2(keystream, aes_ctr, seed, seed + 16, NULL);
  EVP_EncryptUpdate(keystream, p + 5, &n, p + 5, (int)resp_len);
  // tx counts what is handed to the socket, as service.ts does: the quantity replicas agree on.
  EVP_DigestUpdate(c->tx, p, 5 + resp_len);
  c->tx_bytes += 5 + resp_len;
  c->out_len = need;
  return true;
}

/** Feeds bytes read to the frame parser; false on a protocol error. */
static bool parse(struct conn *c, const uint8_t *b, size_t n) {
  while (n > 0) {
    if (!c->in_body) {
      if (c->hdr_have == 0 && b[0] != 'Q') return false;
      size_t k = 5 - c->hdr_have < n ? 5 - c->hdr_have : n;
      memcpy(c->hdr + c->hdr_have, b, k);
      c->hdr_have += k, b += k, n -= k;
      if (c->hdr_have < 5) return true;
      c->hdr_have = 0;
      c->body_len = (uint32_t)c->hdr[1] << 24 | (uint32_t)c->hdr[2] << 16 | (uint32_t)c->hdr[3] << 8 | c->hdr[4];
      if (c->body_len > MAX_BUFFERED) return false;
      if (c->body_len > c->body_cap) {
        c->body_cap = c->body_len < 64 ? 64 : c->body_len;
        c->body = xrealloc(c->body, c->body_cap);
      }
      c->body_have = 0;
      c->in_body = true;
    }
    size_t k = c->body_len - c->body_have < n ? c->body_len - c->body_have : n;
    memcpy(c->body + c->body_have, b, k);
    c->body_have += k, b += k, n -= k;
    if (c->body_have == c->body_len) {
      c->in_body = false;
      c->ops++;
      if (!answer(c)) return false;
    }
  }
  return true;
}

/** Writes what is queued; false when the connection was finished. */
static bool flush_out(struct conn *c) {
  while (c->out_off < c->out_len) {
    ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return true;
      finish(c, errno == EPIPE || errno == ECONNRESET ? END_RST : END_ERROR);
      return false;
    }
    c->out_off += (size_t)n;
  }
  c->out_off = c->out_len = 0;
  if (c->out_cap > 1 << 20) { // give back the memory of a large reply
    free(c->out);
    c->out = NULL, c->out_cap = 0;
  }
  return true;
}

/** Reads until EAGAIN, EOF or the output limit; false when the connection was finished. */
static bool read_in(struct conn *c) {
  while (!c->peer_ended) {
    if (c->out_len - c->out_off > OUT_HIGH) {
      c->paused = true;
      return true;
    }
    ssize_t n = read(c->fd, read_buf, sizeof read_buf);
    if (n > 0) {
      EVP_DigestUpdate(c->rx, read_buf, (size_t)n);
      c->rx_bytes += (uint64_t)n;
      if (!parse(c, read_buf, (size_t)n)) {
        finish(c, END_PROTOCOL);
        return false;
      }
    } else if (n == 0) {
      c->peer_ended = true;
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN) {
      return true;
    } else {
      finish(c, errno == ECONNRESET ? END_RST : END_ERROR);
      return false;
    }
  }
  return true;
}

static void on_conn_event(struct conn *c) {
  // Edge-triggered: each step runs until EAGAIN. Output first, so that a paused reader resumes.
  if (!flush_out(c)) return;
  c->paused = false;
  for (;;) {
    if (!read_in(c)) return;
    if (!flush_out(c)) return;
    if (!c->paused || c->out_len - c->out_off > OUT_HIGH) break;
    c->paused = false; // drained below the limit without blocking: read on
  }
  // The peer's FIN was read and every reply written: our FIN follows, as a function of the input.
  if (c->peer_ended && c->out_off == c->out_len) finish(c, END_FIN);
}

static void on_accept(int lfd, int ep) {
  for (;;) {
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int fd = accept4(lfd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN) return;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Level-triggered listener: the connection waits in the queue until a close frees an fd.
        fprintf(stderr, "storm_server: accept: %s\n", strerror(errno));
        return;
      }
      die("accept");
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = calloc(1, sizeof *c);
    if (!c) die("calloc");
    c->fd = fd;
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof ip);
    snprintf(c->peer, sizeof c->peer, "%s:%u", ip, ntohs(sa.sin_port));
    c->rx = EVP_MD_CTX_new();
    c->tx = EVP_MD_CTX_new();
    if (!c->rx || !c->tx) die("EVP_MD_CTX_new");
    EVP_DigestInit_ex(c->rx, sha256_md, NULL);
    EVP_DigestInit_ex(c->tx, sha256_md, NULL);
    c->next = open_list;
    if (open_list) open_list->prev = c;
    open_list = c;
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
  }
}

static void on_signal(void) {
  while (open_list) {
    struct conn *c = open_list;
    log_conn(c, END_SIGTERM, true);
    open_list = c->next;
  }
  if (fflush(log_file) != 0 || fsync(fileno(log_file)) != 0) die("log");
  exit(0);
}

static void usage(void) {
  fputs("usage: storm_server --port N --log FILE [--backlog N]\n", stderr);
  exit(2);
}

static long number(const char *s, long min, long max) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || end == s || v < min || v > max) usage();
  return v;
}

int main(int argc, char **argv) {
  const char *log_path = NULL, *v;
  long backlog = 1024; // service.ts's default
  for (int i = 1; i < argc; i++) {
    if ((v = option(argv, argc, &i, "--port"))) listen_port = (int)number(v, 1, 65535);
    else if ((v = option(argv, argc, &i, "--log"))) log_path = v;
    else if ((v = option(argv, argc, &i, "--backlog"))) backlog = number(v, 0, 1 << 20);
    else usage();
  }
  if (!listen_port || !log_path) usage();

  raise_nofile_limit(); // as many fds as we may: every open connection holds one
  log_file = open_log(log_path);

  if (!fetch_crypto(&sha256_md, &aes_ctr, &scratch_md, &keystream)) {
    fputs("storm_server: libcrypto has no SHA256 or AES-128-CTR\n", stderr);
    return 1;
  }

  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigprocmask(SIG_BLOCK, &sigs, NULL);
  int sfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) die("signalfd");
  signal(SIGPIPE, SIG_IGN);

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket");
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)listen_port), .sin_addr.s_addr = htonl(INADDR_ANY) };
  if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
  if (listen(lfd, (int)backlog) < 0) die("listen");

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  struct epoll_event ev = { .events = EPOLLIN, .data.ptr = (void *)&tag_listen };
  if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0) die("epoll_ctl");
  ev.data.ptr = (void *)&tag_signal;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev) < 0) die("epoll_ctl");

  fputs("ready\n", stdout);
  fflush(stdout);

  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    int n = epoll_wait(ep, events, MAX_EVENTS, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    bool signalled = false, accept_ready = false;
    for (int i = 0; i < n; i++) {
      void *p = events[i].data.ptr;
      if (p == &tag_listen) accept_ready = true;
      else if (p == &tag_signal) signalled = true;
      else on_conn_event(p);
    }
    // Accept once the batch's events are handled; the sockets finished by them close after.
    if (accept_ready) on_accept(lfd, ep);
    flush_log_and_close();
    if (signalled) on_signal();
  }
}
