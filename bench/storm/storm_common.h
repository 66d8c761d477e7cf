// storm_common.h: the pieces storm_client.c and storm_server.c share, as static inline functions.
// Each program defines its own usage(), which option() calls on a missing value, and its own
// die(), which open_log() calls when the log cannot be opened.
#ifndef STORM_COMMON_H
#define STORM_COMMON_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#define LOG_BUFFER (1 << 20) /* stdio buffer of the log, bytes */

static void usage(void);
static void die(const char *what);

/** Value of option `name` at argv[*i] (`--name V` or `--name=V`), else NULL. */
static inline const char *option(char **argv, int argc, int *i, const char *name) {
  size_t n = strlen(name);
  if (strncmp(argv[*i], name, n) != 0) return NULL;
  if (argv[*i][n] == '=') return argv[*i] + n + 1;
  if (argv[*i][n] != '\0') return NULL;
  if (*i + 1 >= argc) usage();
  return argv[++*i];
}

/** Finishes a SHA-256 context into 64 lowercase hex digits and a NUL. */
static inline void hex_digest(EVP_MD_CTX *md, char out[65]) {
  uint8_t d[32];
  EVP_DigestFinal_ex(md, d, NULL);
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) out[2 * i] = digits[d[i] >> 4], out[2 * i + 1] = digits[d[i] & 15];
  out[64] = '\0';
}

/** As many fds as we may: every open connection holds one. */
static inline void raise_nofile_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/** Opens the log for appending, with a LOG_BUFFER-byte stdio buffer; die(path) on failure. */
static inline FILE *open_log(const char *path) {
  FILE *f = fopen(path, "a");
  if (!f) die(path);
  setvbuf(f, NULL, _IOFBF, LOG_BUFFER);
  return f;
}

/** Fetches SHA256 and AES-128-CTR and makes a digest and a cipher context; false if any is missing. */
static inline bool fetch_crypto(EVP_MD **md, EVP_CIPHER **aes, EVP_MD_CTX **md_ctx, EVP_CIPHER_CTX **cipher_ctx) {
  *md = EVP_MD_fetch(NULL, "SHA256", NULL);
  *aes = EVP_CIPHER_fetch(NULL, "AES-128-CTR", NULL);
  *md_ctx = EVP_MD_CTX_new();
  *cipher_ctx = EVP_CIPHER_CTX_new();
  return *md && *aes && *md_ctx && *cipher_ctx;
}

#endif
