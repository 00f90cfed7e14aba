/* aead.c: ChaCha20-Poly1305 (RFC 8439 §2.8) over the OpenSSL exported by the node
 * binary, and its N-API glue.
 *
 * C core (aead.h): a tenc_aead seals and opens with one of two backends over the
 * same OpenSSL code (see "backends" below): OpenSSL's ChaCha20 and Poly1305 cores
 * called directly (default), or EVP. Nothing is allocated per packet. Tags are
 * compared in constant time (CRYPTO_memcmp, or EVP_DecryptFinal_ex).
 *
 * N-API (one call per batch, never per packet):
 *   aeadSealBatch(slab, offsets, lengths, counters, key, count)        -> undefined
 *   aeadOpenBatch(slab, offsets, lengths, counters, key, count, status) -> number ok
 *   aeadSeal(key, nonce, aad, plaintext) -> Buffer ciphertext || tag
 *   aeadOpen(key, nonce, aad, sealed)    -> Buffer plaintext, or null if not authentic
 *   aeadBackend()                        -> "direct" | "evp"
 * The layouts and status codes are documented at the wrappers in src/native.ts.
 * Argument errors throw before any byte is touched: TypeError code
 * ERR_INVALID_ARG_TYPE, RangeError code ERR_OUT_OF_RANGE. Each packet's bounds are
 * checked again just before it is processed, since offsets/lengths may alias the slab.
 */
#include "aead.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "modules.h"

/* ---- backends ------------------------------------------------------------------
 *
 * direct (default where available): the node binary exports OpenSSL's own ChaCha20
 * and Poly1305 cores (ChaCha20_ctr32, Poly1305_Init/Update/Final: the functions its
 * EVP provider calls, with the same CPU dispatch: AVX-512, AVX2, ...). Calling them
 * straight skips the per-packet EVP work (provider dispatch, OSSL_PARAM lookups by
 * strcmp, IV re-initialisation): about 6% of the machine in an iperf3 profile. They
 * are not public API, so they are looked up at run time (dlsym) and checked once
 * against the EVP implementation and RFC 8439 §2.8.2 before use; if any is missing
 * (e.g. a node linked to a shared libcrypto that does not export them) or the check
 * fails, the EVP backend is used.
 *
 * evp: one EVP_CIPHER_CTX per direction, the cipher fetched once; a packet costs
 * EVP_CipherInit_ex(ctx, NULL, NULL, key-or-NULL, nonce) (the key schedule is redone
 * only when the key changed), the updates, the final and the tag get/set.
 *
 * TENC_AEAD=evp in the environment selects the EVP backend for contexts made after
 * it is read (tests run both). Nothing is allocated per packet by either. */

typedef void (*chacha_ctr32_fn)(unsigned char *out, const unsigned char *in, size_t len, const unsigned int key[8],
                                const unsigned int counter[4]);
typedef size_t (*poly_size_fn)(void);
typedef void (*poly_init_fn)(void *ctx, const unsigned char key[32]);
typedef void (*poly_update_fn)(void *ctx, const unsigned char *in, size_t len);
typedef void (*poly_final_fn)(void *ctx, unsigned char mac[16]);

static struct {
  chacha_ctr32_fn chacha;
  poly_init_fn pinit;
  poly_update_fn pupdate;
  poly_final_fn pfinal;
  size_t poly_size;
  int ok;              /* resolved and checked */
  int final_cleanses;  /* Poly1305_Final zeroes its context (then we need not) */
} ll;
static pthread_once_t ll_once = PTHREAD_ONCE_INIT;

struct tenc_aead {
  int direct;
  void *poly; /* direct: a Poly1305 context (ll.poly_size bytes) */
  /* evp */
  EVP_CIPHER *cipher;
  EVP_CIPHER_CTX *enc;
  EVP_CIPHER_CTX *dec;
  uint8_t enc_key[TENC_AEAD_KEY_LEN];
  uint8_t dec_key[TENC_AEAD_KEY_LEN];
  int enc_keyed;
  int dec_keyed;
};

static inline uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void wr64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static tenc_aead *aead_new(int want_direct);
static void ll_check(void);

static void ll_resolve(void) {
  ll.chacha = (chacha_ctr32_fn)dlsym(RTLD_DEFAULT, "ChaCha20_ctr32");
  poly_size_fn psize = (poly_size_fn)dlsym(RTLD_DEFAULT, "Poly1305_ctx_size");
  ll.pinit = (poly_init_fn)dlsym(RTLD_DEFAULT, "Poly1305_Init");
  ll.pupdate = (poly_update_fn)dlsym(RTLD_DEFAULT, "Poly1305_Update");
  ll.pfinal = (poly_final_fn)dlsym(RTLD_DEFAULT, "Poly1305_Final");
  if (!ll.chacha || !psize || !ll.pinit || !ll.pupdate || !ll.pfinal) return;
  ll.poly_size = psize();
  if (ll.poly_size == 0 || ll.poly_size > 4096) return;
  ll_check();
}

/* ChaCha20 over parts without copying them together: whole 64-byte blocks inside
 * one part go straight to ChaCha20_ctr32; a block that straddles parts (or the
 * last, short one when more parts follow) is gathered into a 64-byte scratch block,
 * processed once and scattered back. out is contiguous; ctr[0] is the next block. */
typedef struct {
  const uint8_t *p;
  size_t n;
} part;

static void chacha_parts(const uint32_t kw[8], uint32_t ctr[4], const part *parts, int nparts, uint8_t *out) {
  uint8_t blk[64];
  int i = 0;
  size_t off = 0; /* into parts[i] */
  while (i < nparts) {
    if (off == parts[i].n) {
      i++;
      off = 0;
      continue;
    }
    size_t avail = parts[i].n - off;
    int last = i == nparts - 1;
    if (avail >= 64 || last) {
      size_t n = last ? avail : avail & ~(size_t)63;
      ll.chacha(out, parts[i].p + off, n, kw, ctr);
      ctr[0] += (uint32_t)((n + 63) / 64);
      out += n;
      off += n;
      continue;
    }
    /* gather one block (or what is left of the input) across parts */
    size_t g = 0;
    int j = i;
    size_t o = off;
    while (g < 64 && j < nparts) {
      size_t take = parts[j].n - o;
      if (take > 64 - g) take = 64 - g;
      memcpy(blk + g, parts[j].p + o, take);
      g += take;
      o += take;
      if (o == parts[j].n) {
        j++;
        o = 0;
      }
    }
    ll.chacha(blk, blk, g, kw, ctr);
    ctr[0]++;
    memcpy(out, blk, g);
    out += g;
    i = j;
    off = o;
  }
  OPENSSL_cleanse(blk, sizeof blk);
}

/* Block 0 of (key, nonce): its first 32 bytes are the Poly1305 key (RFC 8439 §2.6). */
static void direct_begin(tenc_aead *a, const uint8_t key[TENC_AEAD_KEY_LEN], const uint8_t nonce[TENC_AEAD_NONCE_LEN],
                         uint32_t kw[8], uint32_t ctr[4], const uint8_t *aad, size_t aad_len) {
  static const uint8_t zeros[16];
  uint8_t b0[64];
  for (int i = 0; i < 8; i++) kw[i] = rd32(key + 4 * i);
  ctr[0] = 0;
  ctr[1] = rd32(nonce);
  ctr[2] = rd32(nonce + 4);
  ctr[3] = rd32(nonce + 8);
  memset(b0, 0, sizeof b0);
  ll.chacha(b0, b0, sizeof b0, kw, ctr);
  ctr[0] = 1;
  ll.pinit(a->poly, b0);
  OPENSSL_cleanse(b0, sizeof b0);
  if (aad_len) {
    ll.pupdate(a->poly, aad, aad_len);
    if (aad_len % 16) ll.pupdate(a->poly, zeros, 16 - aad_len % 16);
  }
}

/* MAC over the ciphertext, its padding and the lengths block. */
static void direct_finish(tenc_aead *a, const uint8_t *ct, size_t len, size_t aad_len, uint8_t tag[16], uint32_t kw[8]) {
  static const uint8_t zeros[16];
  uint8_t lens[16];
  if (len) ll.pupdate(a->poly, ct, len);
  if (len % 16) ll.pupdate(a->poly, zeros, 16 - len % 16);
  wr64(lens, aad_len);
  wr64(lens + 8, len);
  ll.pupdate(a->poly, lens, sizeof lens);
  ll.pfinal(a->poly, tag);
  if (!ll.final_cleanses) OPENSSL_cleanse(a->poly, ll.poly_size);
  OPENSSL_cleanse(kw, 8 * sizeof(uint32_t));
}

static int direct_seal(tenc_aead *a, const uint8_t *key, const uint8_t *nonce, const uint8_t *aad, size_t aad_len,
                       uint8_t *buf, size_t len, uint8_t *tag) {
  uint32_t kw[8], ctr[4];
  direct_begin(a, key, nonce, kw, ctr, aad, aad_len);
  if (len) ll.chacha(buf, buf, len, kw, ctr);
  direct_finish(a, buf, len, aad_len, tag, kw);
  return 0;
}

static int direct_seal_parts(tenc_aead *a, const uint8_t *key, const uint8_t *nonce, const uint8_t *head,
                             size_t head_len, const uint8_t *body, size_t body_len, size_t pad_len, uint8_t *out) {
  static const uint8_t zeros[16];
  uint32_t kw[8], ctr[4];
  part parts[3];
  int n = 0;
  if (head_len) parts[n++] = (part){head, head_len};
  if (body_len) parts[n++] = (part){body, body_len};
  if (pad_len) parts[n++] = (part){zeros, pad_len};
  size_t total = head_len + body_len + pad_len;
  direct_begin(a, key, nonce, kw, ctr, NULL, 0);
  if (n) chacha_parts(kw, ctr, parts, n, out);
  direct_finish(a, out, total, 0, out + total, kw);
  return 0;
}

static int direct_open(tenc_aead *a, const uint8_t *key, const uint8_t *nonce, const uint8_t *aad, size_t aad_len,
                       uint8_t *buf, size_t len, const uint8_t *tag) {
  uint32_t kw[8], ctr[4];
  uint8_t mac[16];
  direct_begin(a, key, nonce, kw, ctr, aad, aad_len);
  uint32_t kw_keep[8];
  memcpy(kw_keep, kw, sizeof kw_keep);
  direct_finish(a, buf, len, aad_len, mac, kw); /* wipes kw */
  int bad = CRYPTO_memcmp(mac, tag, sizeof mac) != 0;
  OPENSSL_cleanse(mac, sizeof mac);
  if (bad) {
    OPENSSL_cleanse(kw_keep, sizeof kw_keep);
    OPENSSL_cleanse(buf, len); /* as the EVP path: nothing of an unauthentic message is left */
    return -1;
  }
  if (len) ll.chacha(buf, buf, len, kw_keep, ctr);
  OPENSSL_cleanse(kw_keep, sizeof kw_keep);
  return 0;
}

/* ---- EVP backend ---------------------------------------------------------------- */

static int evp_init(tenc_aead *a) {
  a->cipher = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
  a->enc = EVP_CIPHER_CTX_new();
  a->dec = EVP_CIPHER_CTX_new();
  return a->cipher != NULL && a->enc != NULL && a->dec != NULL &&
                 EVP_CipherInit_ex(a->enc, a->cipher, NULL, NULL, NULL, 1) == 1 &&
                 EVP_CipherInit_ex(a->dec, a->cipher, NULL, NULL, NULL, 0) == 1
             ? 0
             : -1;
}

/* Cached-key check without an early exit (the keys are ours, but stay tidy). */
static int same_key(const uint8_t *x, const uint8_t *y) {
  uint8_t d = 0;
  for (int i = 0; i < TENC_AEAD_KEY_LEN; i++) d |= (uint8_t)(x[i] ^ y[i]);
  return d == 0;
}

/* Set the nonce, and the key only if it changed. enc: 1 seal, 0 open. */
static int rekey(EVP_CIPHER_CTX *ctx, uint8_t *cached, int *keyed, const uint8_t *key,
                 const uint8_t *nonce, int enc) {
  if (*keyed && same_key(cached, key)) {
    return EVP_CipherInit_ex(ctx, NULL, NULL, NULL, nonce, enc) == 1 ? 0 : -1;
  }
  *keyed = 0;
  if (EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc) != 1) return -1;
  memcpy(cached, key, TENC_AEAD_KEY_LEN);
  *keyed = 1;
  return 0;
}

static int evp_seal(tenc_aead *a, const uint8_t *key, const uint8_t *nonce, const uint8_t *aad, size_t aad_len,
                    uint8_t *buf, size_t len, uint8_t *tag) {
  int outl = 0;
  if (rekey(a->enc, a->enc_key, &a->enc_keyed, key, nonce, 1) != 0) return -1;
  if (aad_len > 0 && EVP_EncryptUpdate(a->enc, NULL, &outl, aad, (int)aad_len) != 1) return -1;
  if (len > 0 && EVP_EncryptUpdate(a->enc, buf, &outl, buf, (int)len) != 1) return -1;
  if (EVP_EncryptFinal_ex(a->enc, buf + len, &outl) != 1) return -1;
  /* The tag through a prebuilt parameter: EVP_CIPHER_CTX_ctrl(GET_TAG) would build the
   * same OSSL_PARAM after a longer dispatch. */
  OSSL_PARAM params[2] = {OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, TENC_AEAD_TAG_LEN),
                          OSSL_PARAM_END};
  if (EVP_CIPHER_CTX_get_params(a->enc, params) != 1) return -1;
  return 0;
}

static int evp_seal_parts(tenc_aead *a, const uint8_t *key, const uint8_t *nonce, const uint8_t *head,
                          size_t head_len, const uint8_t *body, size_t body_len, size_t pad_len, uint8_t *out) {
  static const uint8_t zeros[16];
  int outl = 0;
  size_t total = head_len + body_len + pad_len;
  if (rekey(a->enc, a->enc_key, &a->enc_keyed, key, nonce, 1) != 0) return -1;
  /* OpenSSL's ChaCha20 and Poly1305 keep partial blocks between updates, so the
   * parts may have any lengths; the keystream and MAC run on as over one buffer. */
  if (head_len > 0 && EVP_EncryptUpdate(a->enc, out, &outl, head, (int)head_len) != 1) return -1;
  if (body_len > 0 && EVP_EncryptUpdate(a->enc, out + head_len, &outl, body, (int)body_len) != 1) return -1;
  if (pad_len > 0 && EVP_EncryptUpdate(a->enc, out + head_len + body_len, &outl, zeros, (int)pad_len) != 1)
    return -1;
  if (EVP_EncryptFinal_ex(a->enc, out + total, &outl) != 1) return -1;
  OSSL_PARAM params[2] = {OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, out + total, TENC_AEAD_TAG_LEN),
                          OSSL_PARAM_END};
  if (EVP_CIPHER_CTX_get_params(a->enc, params) != 1) return -1;
  return 0;
}

static int evp_open(tenc_aead *a, const uint8_t *key, const uint8_t *nonce, const uint8_t *aad, size_t aad_len,
                    uint8_t *buf, size_t len, const uint8_t *tag) {
  int outl = 0;
  if (rekey(a->dec, a->dec_key, &a->dec_keyed, key, nonce, 0) != 0) return -1;
  /* OpenSSL copies the expected tag now, so it may sit anywhere (e.g. buf + len). A
   * prebuilt parameter is the same as EVP_CTRL_AEAD_SET_TAG with less dispatch. */
  OSSL_PARAM params[2] = {OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, (void *)tag, TENC_AEAD_TAG_LEN),
                          OSSL_PARAM_END};
  if (EVP_CIPHER_CTX_set_params(a->dec, params) != 1) return -1;
  if (aad_len > 0 && EVP_DecryptUpdate(a->dec, NULL, &outl, aad, (int)aad_len) != 1) goto fail;
  if (len > 0 && EVP_DecryptUpdate(a->dec, buf, &outl, buf, (int)len) != 1) goto fail;
  if (EVP_DecryptFinal_ex(a->dec, buf + len, &outl) != 1) goto fail;
  return 0;
fail:
  OPENSSL_cleanse(buf, len);
  return -1;
}

/* The one-time check of the direct backend: byte-identical to EVP on every length
 * from 0 to 300 and a few packet sizes, with and without AAD, in place and in parts;
 * the RFC 8439 §2.8.2 tag; opens what it sealed, refuses a flipped bit. Any
 * difference disables it for the process. */
static void ll_check(void) {
  static const uint8_t rfc_pt[] = "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
                                  "the future, sunscreen would be it.";
  static const uint8_t rfc_aad[12] = {0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7};
  static const uint8_t rfc_nonce[12] = {0x07, 0, 0, 0, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47};
  static const uint8_t rfc_tag[16] = {0x1a, 0xe1, 0x0b, 0x59, 0x4f, 0x09, 0xe2, 0x6a,
                                      0x7e, 0x90, 0x2e, 0xcb, 0xd0, 0x60, 0x06, 0x91};
  enum { MAXN = 1500 };
  uint8_t key[32], nonce[12], *x = NULL, *y = NULL, *z = NULL;
  tenc_aead *d = NULL, *e = NULL;
  int good = 0;
  ll.ok = 1; /* tentatively, so aead_new(1) makes a direct context */
  d = aead_new(1);
  e = aead_new(0);
  x = malloc(MAXN + 32);
  y = malloc(MAXN + 32);
  z = malloc(MAXN + 32);
  if (!d || !e || !x || !y || !z || !d->direct || e->direct) goto out;
  /* Does Poly1305_Final wipe its context? (then the direct path skips its own wipe) */
  memset(d->poly, 0xa5, ll.poly_size);
  for (int i = 0; i < 32; i++) key[i] = (uint8_t)(0x80 + i);
  ll.pinit(d->poly, key);
  ll.pupdate(d->poly, key, 32);
  ll.pfinal(d->poly, x);
  ll.final_cleanses = 1;
  for (size_t i = 0; i < ll.poly_size; i++)
    if (((uint8_t *)d->poly)[i]) ll.final_cleanses = 0;
  /* RFC 8439 §2.8.2 */
  size_t rn = sizeof rfc_pt - 1;
  memcpy(x, rfc_pt, rn);
  if (direct_seal(d, key, rfc_nonce, rfc_aad, sizeof rfc_aad, x, rn, x + rn) != 0 || memcmp(x + rn, rfc_tag, 16) != 0)
    goto out;
  if (direct_open(d, key, rfc_nonce, rfc_aad, sizeof rfc_aad, x, rn, x + rn) != 0 || memcmp(x, rfc_pt, rn) != 0)
    goto out;
  /* against EVP */
  for (size_t n = 0; n <= MAXN; n = n < 300 ? n + 1 : n + 97) {
    for (size_t i = 0; i < n; i++) x[i] = (uint8_t)(i * 131 + n);
    for (int i = 0; i < 12; i++) nonce[i] = (uint8_t)(n + i * 7);
    for (int i = 0; i < 32; i++) key[i] = (uint8_t)(n * 3 + i);
    size_t aad_len = n % 3 == 0 ? n % 29 : 0;
    const uint8_t *aad = aad_len ? x + n - aad_len : NULL; /* any bytes */
    memcpy(y, x, n);
    memcpy(z, x, n);
    uint8_t aad_copy[32];
    if (aad_len) memcpy(aad_copy, aad, aad_len);
    if (direct_seal(d, key, nonce, aad_len ? aad_copy : NULL, aad_len, y, n, y + n) != 0 ||
        evp_seal(e, key, nonce, aad_len ? aad_copy : NULL, aad_len, z, n, z + n) != 0 || memcmp(y, z, n + 16) != 0)
      goto out;
    /* in parts: head | body | pad, against the EVP parts path */
    size_t pad = (16 - n % 16) % 16, h = n / 3;
    if (direct_seal_parts(d, key, nonce, x, h, x + h, n - h, pad, y) != 0 ||
        evp_seal_parts(e, key, nonce, x, h, x + h, n - h, pad, z) != 0 || memcmp(y, z, n + pad + 16) != 0)
      goto out;
    memcpy(y, z, n + pad + 16);
    if (direct_open(d, key, nonce, NULL, 0, y, n + pad, y + n + pad) != 0 || memcmp(y, x, n) != 0) goto out;
    if (n) {
      memcpy(y, z, n + pad + 16);
      y[n / 2] ^= 1;
      if (direct_open(d, key, nonce, NULL, 0, y, n + pad, y + n + pad) == 0) goto out;
    }
  }
  good = 1;
out:
  ll.ok = good;
  tenc_aead_free(d);
  tenc_aead_free(e);
  free(x);
  free(y);
  free(z);
}

static tenc_aead *aead_new(int want_direct) {
  tenc_aead *a = calloc(1, sizeof(*a));
  if (a == NULL) return NULL;
  if (want_direct && ll.ok) {
    a->poly = aligned_alloc(64, (ll.poly_size + 63) & ~(size_t)63);
    if (a->poly == NULL) {
      free(a);
      return NULL;
    }
    a->direct = 1;
    return a;
  }
  if (evp_init(a) != 0) {
    tenc_aead_free(a);
    return NULL;
  }
  return a;
}

static int want_direct(void) {
  const char *v = getenv("TENC_AEAD");
  return !(v && strcmp(v, "evp") == 0);
}

tenc_aead *tenc_aead_new(void) {
  int direct = want_direct();
  if (direct) pthread_once(&ll_once, ll_resolve);
  return aead_new(direct);
}

const char *tenc_aead_backend(const tenc_aead *a) { return a && a->direct ? "direct" : "evp"; }

void tenc_aead_clear(tenc_aead *a) {
  if (a == NULL) return;
  if (a->direct) { /* nothing keyed is kept between calls; the Poly1305 state is wiped after each */
    OPENSSL_cleanse(a->poly, ll.poly_size);
    return;
  }
  OPENSSL_cleanse(a->enc_key, sizeof(a->enc_key));
  OPENSSL_cleanse(a->dec_key, sizeof(a->dec_key));
  /* Overwrite the key schedule inside the contexts too: key them with zeros. */
  static const uint8_t zero_key[TENC_AEAD_KEY_LEN];
  if (a->enc_keyed) (void)EVP_CipherInit_ex(a->enc, NULL, NULL, zero_key, NULL, 1);
  if (a->dec_keyed) (void)EVP_CipherInit_ex(a->dec, NULL, NULL, zero_key, NULL, 0);
  a->enc_keyed = 0;
  a->dec_keyed = 0;
}

void tenc_aead_free(tenc_aead *a) {
  if (a == NULL) return;
  tenc_aead_clear(a);
  if (a->poly) {
    OPENSSL_cleanse(a->poly, ll.poly_size);
    free(a->poly);
  }
  EVP_CIPHER_CTX_free(a->enc); /* cleanses the key schedule */
  EVP_CIPHER_CTX_free(a->dec);
  EVP_CIPHER_free(a->cipher);
  free(a);
}

void tenc_aead_wg_nonce(uint64_t counter, uint8_t nonce[TENC_AEAD_NONCE_LEN]) {
  nonce[0] = nonce[1] = nonce[2] = nonce[3] = 0;
  for (int i = 0; i < 8; i++) nonce[4 + i] = (uint8_t)(counter >> (8 * i));
}

int tenc_aead_seal(tenc_aead *a, const uint8_t key[TENC_AEAD_KEY_LEN],
                   const uint8_t nonce[TENC_AEAD_NONCE_LEN], const uint8_t *aad, size_t aad_len,
                   uint8_t *buf, size_t len, uint8_t *tag) {
  if (len > TENC_AEAD_MAX_LEN || aad_len > TENC_AEAD_MAX_LEN) return -1;
  return a->direct ? direct_seal(a, key, nonce, aad, aad_len, buf, len, tag)
                   : evp_seal(a, key, nonce, aad, aad_len, buf, len, tag);
}

int tenc_aead_seal_parts(tenc_aead *a, const uint8_t key[TENC_AEAD_KEY_LEN],
                         const uint8_t nonce[TENC_AEAD_NONCE_LEN], const uint8_t *head, size_t head_len,
                         const uint8_t *body, size_t body_len, size_t pad_len, uint8_t *out) {
  size_t total = head_len + body_len + pad_len;
  if (pad_len >= 16 || total > TENC_AEAD_MAX_LEN || total < head_len) return -1;
  return a->direct ? direct_seal_parts(a, key, nonce, head, head_len, body, body_len, pad_len, out)
                   : evp_seal_parts(a, key, nonce, head, head_len, body, body_len, pad_len, out);
}

int tenc_aead_open(tenc_aead *a, const uint8_t key[TENC_AEAD_KEY_LEN],
                   const uint8_t nonce[TENC_AEAD_NONCE_LEN], const uint8_t *aad, size_t aad_len,
                   uint8_t *buf, size_t len, const uint8_t *tag) {
  if (len > TENC_AEAD_MAX_LEN || aad_len > TENC_AEAD_MAX_LEN) return -1;
  return a->direct ? direct_open(a, key, nonce, aad, aad_len, buf, len, tag)
                   : evp_open(a, key, nonce, aad, aad_len, buf, len, tag);
}

int tenc_aead_wg_seal(tenc_aead *a, const uint8_t key[TENC_AEAD_KEY_LEN], uint64_t counter,
                      uint8_t *buf, size_t len) {
  uint8_t nonce[TENC_AEAD_NONCE_LEN];
  tenc_aead_wg_nonce(counter, nonce);
  return tenc_aead_seal(a, key, nonce, NULL, 0, buf, len, buf + len);
}

int tenc_aead_wg_open(tenc_aead *a, const uint8_t key[TENC_AEAD_KEY_LEN], uint64_t counter,
                      uint8_t *buf, size_t len) {
  uint8_t nonce[TENC_AEAD_NONCE_LEN];
  if (len < TENC_AEAD_TAG_LEN) return -1;
  tenc_aead_wg_nonce(counter, nonce);
  return tenc_aead_open(a, key, nonce, NULL, 0, buf, len - TENC_AEAD_TAG_LEN,
                        buf + len - TENC_AEAD_TAG_LEN);
}

/* ---- N-API glue --------------------------------------------------------------- */

/* Status codes written by aeadOpenBatch (mirrored in src/native.ts AEAD_STATUS). */
enum { ST_OK = 0, ST_AUTH = 1, ST_BAD_LENGTH = 2, ST_INTERNAL = 3 };

/* One tenc_aead per JS thread (main thread, each worker), freed with the last env
 * on that thread. */
static __thread tenc_aead *tls_aead;
static __thread unsigned tls_refs;

static void env_cleanup(void *token) {
  free(token);
  if (tls_refs > 0 && --tls_refs == 0) {
    tenc_aead_free(tls_aead);
    tls_aead = NULL;
  }
}

static tenc_aead *thread_aead(napi_env env) {
  if (tls_aead == NULL) tls_aead = tenc_aead_new();
  if (tls_aead == NULL) napi_throw_error(env, "ERR_TENC_AEAD_INIT", "tenc: cannot create ChaCha20-Poly1305 context");
  return tls_aead;
}

static void *type_error(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

static void *range_error(napi_env env, const char *msg) {
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return NULL;
}

static const char *typed_name(napi_typedarray_type t) {
  switch (t) {
    case napi_uint8_array: return "a Uint8Array";
    case napi_uint32_array: return "a Uint32Array";
    case napi_biguint64_array: return "a BigUint64Array";
    default: return "a typed array";
  }
}

/* Typed array of type `want`; *data (may be NULL when empty) and *len in elements.
 * Throws a TypeError naming `what` and returns -1 otherwise. */
static int get_typed(napi_env env, napi_value v, napi_typedarray_type want, const char *what,
                     void **data, size_t *len) {
  bool is = false;
  napi_typedarray_type type;
  char msg[96];
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, v, &type, len, data, NULL, NULL) != napi_ok || type != want) {
    snprintf(msg, sizeof(msg), "%s must be %s", what, typed_name(want));
    type_error(env, msg);
    return -1;
  }
  return 0;
}

static int get_bytes_exact(napi_env env, napi_value v, const char *what, size_t want, uint8_t **data) {
  size_t len;
  char msg[96];
  if (get_typed(env, v, napi_uint8_array, what, (void **)data, &len) != 0) return -1;
  if (len != want) {
    snprintf(msg, sizeof(msg), "%s must be %zu bytes, got %zu", what, want, len);
    range_error(env, msg);
    return -1;
  }
  return 0;
}

static int get_count(napi_env env, napi_value v, uint32_t *out) {
  napi_valuetype t;
  double d;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) {
    type_error(env, "count must be a number");
    return -1;
  }
  napi_get_value_double(env, v, &d);
  if (!(d >= 0 && d <= 0xffffffffu) || d != (double)(uint32_t)d) {
    range_error(env, "count must be an integer in 0 .. 2^32-1");
    return -1;
  }
  *out = (uint32_t)d;
  return 0;
}

/* The arguments common to both batch calls, validated as a whole before any packet
 * is processed, so a bad batch throws with the slab untouched. */
typedef struct {
  uint8_t *slab;
  size_t slab_len;
  const uint32_t *offsets;
  const uint32_t *lengths;
  const uint64_t *counters;
  uint8_t key[TENC_AEAD_KEY_LEN]; /* a copy: the caller's key may alias the slab */
  uint32_t count;
} batch_args;

static int packet_at(napi_env env, const batch_args *b, uint32_t i, int open, uint32_t *off,
                     uint32_t *len);

static int get_batch(napi_env env, napi_value *argv, int open, batch_args *b) {
  size_t n_off, n_len, n_ctr;
  char msg[160];
  uint8_t *key;
  if (get_typed(env, argv[0], napi_uint8_array, "slab", (void **)&b->slab, &b->slab_len) != 0 ||
      get_typed(env, argv[1], napi_uint32_array, "offsets", (void **)&b->offsets, &n_off) != 0 ||
      get_typed(env, argv[2], napi_uint32_array, "lengths", (void **)&b->lengths, &n_len) != 0 ||
      get_typed(env, argv[3], napi_biguint64_array, "counters", (void **)&b->counters, &n_ctr) != 0 ||
      get_bytes_exact(env, argv[4], "key", TENC_AEAD_KEY_LEN, &key) != 0 ||
      get_count(env, argv[5], &b->count) != 0)
    return -1;
  memcpy(b->key, key, TENC_AEAD_KEY_LEN);
  if (b->count > n_off || b->count > n_len || b->count > n_ctr) {
    snprintf(msg, sizeof(msg), "count %u exceeds offsets (%zu), lengths (%zu) or counters (%zu)",
             b->count, n_off, n_len, n_ctr);
    range_error(env, msg);
    return -1;
  }
  for (uint32_t i = 0; i < b->count; i++) {
    uint32_t off, len;
    if (packet_at(env, b, i, open, &off, &len) != 0) {
      OPENSSL_cleanse(b->key, sizeof(b->key));
      return -1;
    }
  }
  return 0;
}

/* Packet i's offset and length, read once and checked against the slab. Called again
 * while processing, because offsets/lengths may alias the slab being written: a
 * value changed mid-batch then fails this check instead of reaching past the slab. */
static int packet_at(napi_env env, const batch_args *b, uint32_t i, int open, uint32_t *off,
                     uint32_t *len) {
  char msg[160];
  uint64_t end;
  *off = b->offsets[i];
  *len = b->lengths[i];
  /* seal: data then a 16-byte tag; open: the length already includes the tag. */
  end = (uint64_t)*off + *len + (open ? 0 : TENC_AEAD_TAG_LEN);
  if (*len > TENC_AEAD_MAX_LEN) {
    snprintf(msg, sizeof(msg), "packet %u: length %u exceeds the maximum %zu", i, *len, TENC_AEAD_MAX_LEN);
    range_error(env, msg);
    return -1;
  }
  if (end > b->slab_len) {
    snprintf(msg, sizeof(msg), "packet %u does not fit in the slab: offset %u + length %u%s > %zu", i,
             *off, *len, open ? "" : " + 16 (tag)", b->slab_len);
    range_error(env, msg);
    return -1;
  }
  return 0;
}

static napi_value seal_batch(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  batch_args b;
  char msg[96];
  tenc_aead *a;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 6) return type_error(env, "aeadSealBatch(slab, offsets, lengths, counters, key, count)");
  if (get_batch(env, argv, 0, &b) != 0) return NULL;
  if ((a = thread_aead(env)) != NULL) {
    for (uint32_t i = 0; i < b.count; i++) {
      uint32_t off, len;
      if (packet_at(env, &b, i, 0, &off, &len) != 0) break;
      if (tenc_aead_wg_seal(a, b.key, b.counters[i], b.slab + off, len) != 0) {
        snprintf(msg, sizeof(msg), "packet %u: OpenSSL seal failed", i);
        napi_throw_error(env, "ERR_TENC_AEAD_INTERNAL", msg);
        break;
      }
    }
  }
  OPENSSL_cleanse(b.key, sizeof(b.key));
  return NULL; /* undefined */
}

static napi_value open_batch(napi_env env, napi_callback_info info) {
  size_t argc = 7, n_status;
  napi_value argv[7], result;
  batch_args b;
  uint8_t *status;
  uint32_t ok = 0;
  char msg[96];
  tenc_aead *a;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 7) return type_error(env, "aeadOpenBatch(slab, offsets, lengths, counters, key, count, status)");
  if (get_batch(env, argv, 1, &b) != 0) return NULL;
  a = NULL;
  if (get_typed(env, argv[6], napi_uint8_array, "status", (void **)&status, &n_status) != 0) {
    /* threw */
  } else if (n_status < b.count) {
    snprintf(msg, sizeof(msg), "status holds %zu entries, count is %u", n_status, b.count);
    range_error(env, msg);
  } else {
    a = thread_aead(env);
  }
  if (a != NULL) {
    for (uint32_t i = 0; i < b.count; i++) {
      uint32_t off, len;
      if (packet_at(env, &b, i, 1, &off, &len) != 0) {
        a = NULL; /* threw */
        break;
      }
      if (len < TENC_AEAD_TAG_LEN) {
        status[i] = ST_BAD_LENGTH;
      } else if (tenc_aead_wg_open(a, b.key, b.counters[i], b.slab + off, len) == 0) {
        status[i] = ST_OK;
        ok++;
      } else {
        status[i] = ST_AUTH;
      }
    }
  }
  OPENSSL_cleanse(b.key, sizeof(b.key));
  if (a == NULL) return NULL;
  napi_create_uint32(env, ok, &result);
  return result;
}

/* aeadBackend() -> "direct" | "evp": what this thread's context (and the engine's,
 * made with the same environment) uses. */
static napi_value backend(napi_env env, napi_callback_info info) {
  napi_value result;
  tenc_aead *a = thread_aead(env);
  if (a == NULL) return NULL;
  napi_create_string_utf8(env, tenc_aead_backend(a), NAPI_AUTO_LENGTH, &result);
  return result;
}

/* Single-shot calls: (key, nonce, aad, input). */
static int get_single(napi_env env, napi_callback_info info, const char *usage, uint8_t **key,
                      uint8_t **nonce, uint8_t **aad, size_t *aad_len, uint8_t **in, size_t *in_len) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
  if (argc < 4) {
    type_error(env, usage);
    return -1;
  }
  if (get_bytes_exact(env, argv[0], "key", TENC_AEAD_KEY_LEN, key) != 0 ||
      get_bytes_exact(env, argv[1], "nonce", TENC_AEAD_NONCE_LEN, nonce) != 0 ||
      get_typed(env, argv[2], napi_uint8_array, "aad", (void **)aad, aad_len) != 0 ||
      get_typed(env, argv[3], napi_uint8_array, "data", (void **)in, in_len) != 0)
    return -1;
  if (*aad_len > TENC_AEAD_MAX_LEN || *in_len > TENC_AEAD_MAX_LEN) {
    range_error(env, "aad or data too long");
    return -1;
  }
  return 0;
}

static napi_value seal_one(napi_env env, napi_callback_info info) {
  uint8_t *key, *nonce, *aad, *in, *out;
  size_t aad_len, in_len;
  napi_value result;
  tenc_aead *a;
  if (get_single(env, info, "aeadSeal(key, nonce, aad, plaintext)", &key, &nonce, &aad, &aad_len,
                 &in, &in_len) != 0)
    return NULL;
  if ((a = thread_aead(env)) == NULL) return NULL;
  if (napi_create_buffer(env, in_len + TENC_AEAD_TAG_LEN, (void **)&out, &result) != napi_ok) return NULL;
  if (in_len > 0) memmove(out, in, in_len);
  if (tenc_aead_seal(a, key, nonce, aad, aad_len, out, in_len, out + in_len) != 0) {
    napi_throw_error(env, "ERR_TENC_AEAD_INTERNAL", "OpenSSL seal failed");
    return NULL;
  }
  return result;
}

static napi_value open_one(napi_env env, napi_callback_info info) {
  uint8_t *key, *nonce, *aad, *in, *out;
  size_t aad_len, in_len, pt_len;
  uint8_t tag[TENC_AEAD_TAG_LEN];
  napi_value result;
  tenc_aead *a;
  if (get_single(env, info, "aeadOpen(key, nonce, aad, sealed)", &key, &nonce, &aad, &aad_len, &in,
                 &in_len) != 0)
    return NULL;
  if ((a = thread_aead(env)) == NULL) return NULL;
  if (in_len < TENC_AEAD_TAG_LEN) {
    napi_get_null(env, &result);
    return result;
  }
  pt_len = in_len - TENC_AEAD_TAG_LEN;
  memcpy(tag, in + pt_len, TENC_AEAD_TAG_LEN);
  if (napi_create_buffer(env, pt_len, (void **)&out, &result) != napi_ok) return NULL;
  if (pt_len > 0) memmove(out, in, pt_len);
  if (tenc_aead_open(a, key, nonce, aad, aad_len, out, pt_len, tag) != 0) napi_get_null(env, &result);
  return result;
}

napi_status tenc_init_aead(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"aeadSealBatch", NULL, seal_batch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"aeadOpenBatch", NULL, open_batch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"aeadSeal", NULL, seal_one, NULL, NULL, NULL, napi_enumerable, NULL},
      {"aeadOpen", NULL, open_one, NULL, NULL, NULL, napi_enumerable, NULL},
      {"aeadBackend", NULL, backend, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  void *token = malloc(1); /* cleanup hooks must be unique per (fn, arg) */
  napi_status s;
  if (token == NULL) return napi_generic_failure;
  s = napi_add_env_cleanup_hook(env, env_cleanup, token);
  if (s != napi_ok) {
    free(token);
    return s;
  }
  tls_refs++;
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}
