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
 *   aeadBackend()                        -> "direct, lanes avx512" | ... | "direct" | "evp"
 * The layouts and status codes are documented at the wrappers in src/native.ts.
 * Argument errors throw before any byte is touched: TypeError code
 * ERR_INVALID_ARG_TYPE, RangeError code ERR_OUT_OF_RANGE. Each packet's bounds are
 * checked again just before it is processed, since offsets/lengths may alias the slab.
 *
 * One file above the 700-line mark, on purpose: it is one algorithm in its
 * variants (OpenSSL's cores called directly, the 16-lane keystream compiled for
 * AVX-512, AVX2 and the baseline, and EVP), which share the private tenc_aead
 * context and are checked against each other once at start (ll_check) before one
 * is used; split, that context and the check would have to be exported to every
 * part. Its N-API glue (the last third) follows the core, as in tun.c or udp.c.
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
  /* direct: Poly1305 keys made ahead by tenc_aead_prepare, used in order */
  uint32_t pk_n, pk_i;
  const uint8_t *pk_key[TENC_AEAD_PREP_MAX];
  uint8_t pk_nonce[TENC_AEAD_PREP_MAX][TENC_AEAD_NONCE_LEN];
  uint32_t pk_len[TENC_AEAD_PREP_MAX];
  uint8_t pk[TENC_AEAD_PREP_MAX][32];
  uint8_t (*ks)[16 * 64]; /* per slot: keystream after the record's whole KiBs */
  /* evp */
  EVP_CIPHER *cipher;
  EVP_CIPHER_CTX *enc;
  EVP_CIPHER_CTX *dec;
  uint8_t enc_key[TENC_AEAD_KEY_LEN];
  uint8_t dec_key[TENC_AEAD_KEY_LEN];
  int enc_keyed;
  int dec_keyed;
};

/* Per-packet wipe of small secrets on the stack: an inlined memset the compiler
 * may not drop (the asm makes the zeroed memory observable). */
static inline void wipe(void *p, size_t n) {
  memset(p, 0, n);
  __asm__ __volatile__("" : : "r"(p) : "memory");
}

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
  wipe(blk, sizeof blk);
}

/* ---- keystream for many records at once -----------------------------------------
 *
 * OpenSSL's ChaCha20 works in whole passes: above 512 bytes 16 blocks (1 KiB) at a
 * time, below it 4 blocks, and one lone block costs about as much as four. A
 * 1408-byte record costs as much as 2 KiB (measured: 445 ns for 1408 bytes, 402 ns
 * for 2048, 209 ns for 1024), and each record needs block 0 on its own for its
 * Poly1305 key. So for a run of up to 16 records (tenc_aead_prepare) the blocks
 * that do not fill a 1 KiB pass are made here instead, side by side: block 0 of
 * every record and each record's blocks after its last whole KiB (6 for 1408
 * bytes), any mix of records, one block per vector lane (RFC 8439 §2.3 block
 * function; word i of 16 states in one vector), from one source compiled for
 * AVX-512 and the baseline (GCC vector extensions split the 512-bit vectors as the
 * target needs), and for AVX2 the same in 8 lanes twice (DEFINE_LANES8 below). The
 * whole KiBs stay with OpenSSL. */
typedef uint32_t v16u __attribute__((vector_size(64)));

#define LANE_QR(a, b, c, d)     \
  a += b;                       \
  d ^= a;                       \
  d = (d << 16) | (d >> 16);    \
  c += d;                       \
  b ^= c;                       \
  b = (b << 12) | (b >> 20);    \
  a += b;                       \
  d ^= a;                       \
  d = (d << 8) | (d >> 24);     \
  c += d;                       \
  b ^= c;                       \
  b = (b << 7) | (b >> 25);

/* 16x16 transpose of 32-bit words in 16 vectors (rows <-> lanes): four stages that
 * swap the off-diagonal s x s blocks, s = 8, 4, 2, 1 (one two-source permute per
 * output row and stage; vpermt2d on AVX-512). */
typedef int32_t v16i __attribute__((vector_size(64)));
#define TM_LO_L(s) 0 & s ? 16 + 0 - s : 0, 1 & s ? 16 + 1 - s : 1, 2 & s ? 16 + 2 - s : 2, 3 & s ? 16 + 3 - s : 3, \
                  4 & s ? 16 + 4 - s : 4, 5 & s ? 16 + 5 - s : 5, 6 & s ? 16 + 6 - s : 6, 7 & s ? 16 + 7 - s : 7, \
                  8 & s ? 16 + 8 - s : 8, 9 & s ? 16 + 9 - s : 9, 10 & s ? 16 + 10 - s : 10, 11 & s ? 16 + 11 - s : 11, \
                  12 & s ? 16 + 12 - s : 12, 13 & s ? 16 + 13 - s : 13, 14 & s ? 16 + 14 - s : 14, 15 & s ? 16 + 15 - s : 15
#define TM_HI_L(s) 0 & s ? 16 + 0 : 0 + s, 1 & s ? 16 + 1 : 1 + s, 2 & s ? 16 + 2 : 2 + s, 3 & s ? 16 + 3 : 3 + s, \
                  4 & s ? 16 + 4 : 4 + s, 5 & s ? 16 + 5 : 5 + s, 6 & s ? 16 + 6 : 6 + s, 7 & s ? 16 + 7 : 7 + s, \
                  8 & s ? 16 + 8 : 8 + s, 9 & s ? 16 + 9 : 9 + s, 10 & s ? 16 + 10 : 10 + s, 11 & s ? 16 + 11 : 11 + s, \
                  12 & s ? 16 + 12 : 12 + s, 13 & s ? 16 + 13 : 13 + s, 14 & s ? 16 + 14 : 14 + s, 15 & s ? 16 + 15 : 15 + s
/* Swaps the off-diagonal s x s blocks of rows x and y (vectors of type VU; VI the
 * matching signed index vector; LO and HI the index-list macros of that width).
 * gcc: __builtin_shuffle with mask vectors; clang (the fuzz harnesses,
 * fuzz/build.sh): __builtin_shufflevector with the same indices as constants. */
#ifdef __clang__
#define TSWAP(VU, VI, LO, HI, x, y, s)          \
  {                                             \
    VU a_ = x, b_ = y;                          \
    x = __builtin_shufflevector(a_, b_, LO(s)); \
    y = __builtin_shufflevector(a_, b_, HI(s)); \
  }
#else
#define TSWAP(VU, VI, LO, HI, x, y, s)    \
  {                                       \
    const VI lo = {LO(s)}, hi = {HI(s)};  \
    VU a_ = x, b_ = y;                    \
    x = __builtin_shuffle(a_, b_, lo);    \
    y = __builtin_shuffle(a_, b_, hi);    \
  }
#endif
#define TSW(x, y, s) TSWAP(v16u, v16i, TM_LO_L, TM_HI_L, x, y, s)
#define TRANSPOSE16(r)                                                                                          \
  TSW(r##0, r##8, 8) TSW(r##1, r##9, 8) TSW(r##2, r##10, 8) TSW(r##3, r##11, 8) TSW(r##4, r##12, 8)          \
  TSW(r##5, r##13, 8) TSW(r##6, r##14, 8) TSW(r##7, r##15, 8)                                                \
  TSW(r##0, r##4, 4) TSW(r##1, r##5, 4) TSW(r##2, r##6, 4) TSW(r##3, r##7, 4) TSW(r##8, r##12, 4)            \
  TSW(r##9, r##13, 4) TSW(r##10, r##14, 4) TSW(r##11, r##15, 4)                                              \
  TSW(r##0, r##2, 2) TSW(r##1, r##3, 2) TSW(r##4, r##6, 2) TSW(r##5, r##7, 2) TSW(r##8, r##10, 2)            \
  TSW(r##9, r##11, 2) TSW(r##12, r##14, 2) TSW(r##13, r##15, 2)                                              \
  TSW(r##0, r##1, 1) TSW(r##2, r##3, 1) TSW(r##4, r##5, 1) TSW(r##6, r##7, 1) TSW(r##8, r##9, 1)             \
  TSW(r##10, r##11, 1) TSW(r##12, r##13, 1) TSW(r##14, r##15, 1)

/* The block function on state words x0..x15 (vectors of type V, one state per
 * lane): 20 rounds (10 column + diagonal double rounds), then the input added. */
#define LANE_BLOCK(V)                                                                                   \
  V i0 = x0, i1 = x1, i2 = x2, i3 = x3, i4 = x4, i5 = x5, i6 = x6, i7 = x7, i8 = x8, i9 = x9, i10 = x10, \
    i11 = x11, i12 = x12, i13 = x13, i14 = x14, i15 = x15;                                              \
  for (int r = 0; r < 10; r++) {                                                                        \
    LANE_QR(x0, x4, x8, x12) LANE_QR(x1, x5, x9, x13) LANE_QR(x2, x6, x10, x14) LANE_QR(x3, x7, x11, x15) \
    LANE_QR(x0, x5, x10, x15) LANE_QR(x1, x6, x11, x12) LANE_QR(x2, x7, x8, x13) LANE_QR(x3, x4, x9, x14) \
  }                                                                                                     \
  x0 += i0, x1 += i1, x2 += i2, x3 += i3, x4 += i4, x5 += i5, x6 += i6, x7 += i7;                       \
  x8 += i8, x9 += i9, x10 += i10, x11 += i11, x12 += i12, x13 += i13, x14 += i14, x15 += i15;

/* A 64-byte block, or its first 32 bytes; fixed sizes, so each is one store. */
#define LANE_OUT(p, v, n)                \
  if ((n) == 64) memcpy((p), &(v), 64);  \
  else memcpy((p), &(v), 32)

/* in[lane][word]: the 16 input states (lane-major); the output block of lane l goes
 * to out[l] (64 bytes, or the first `bytes[l]`). Little-endian hosts (the words are
 * stored as they are). */
#define DEFINE_LANES16(NAME, ATTR)                                                            \
  ATTR static void NAME(const uint32_t in[16][16], uint8_t *const out[16], const uint8_t bytes[16]) { \
    v16u x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15;                 \
    memcpy(&x0, in[0], 64), memcpy(&x1, in[1], 64), memcpy(&x2, in[2], 64), memcpy(&x3, in[3], 64); \
    memcpy(&x4, in[4], 64), memcpy(&x5, in[5], 64), memcpy(&x6, in[6], 64), memcpy(&x7, in[7], 64); \
    memcpy(&x8, in[8], 64), memcpy(&x9, in[9], 64), memcpy(&x10, in[10], 64), memcpy(&x11, in[11], 64); \
    memcpy(&x12, in[12], 64), memcpy(&x13, in[13], 64), memcpy(&x14, in[14], 64), memcpy(&x15, in[15], 64); \
    TRANSPOSE16(x)                                                                            \
    LANE_BLOCK(v16u)                                                                          \
    TRANSPOSE16(x)                                                                            \
    LANE_OUT(out[0], x0, bytes[0]);                                                        \
    LANE_OUT(out[1], x1, bytes[1]);                                                        \
    LANE_OUT(out[2], x2, bytes[2]);                                                        \
    LANE_OUT(out[3], x3, bytes[3]);                                                        \
    LANE_OUT(out[4], x4, bytes[4]);                                                        \
    LANE_OUT(out[5], x5, bytes[5]);                                                        \
    LANE_OUT(out[6], x6, bytes[6]);                                                        \
    LANE_OUT(out[7], x7, bytes[7]);                                                        \
    LANE_OUT(out[8], x8, bytes[8]);                                                        \
    LANE_OUT(out[9], x9, bytes[9]);                                                        \
    LANE_OUT(out[10], x10, bytes[10]);                                                     \
    LANE_OUT(out[11], x11, bytes[11]);                                                     \
    LANE_OUT(out[12], x12, bytes[12]);                                                     \
    LANE_OUT(out[13], x13, bytes[13]);                                                     \
    LANE_OUT(out[14], x14, bytes[14]);                                                     \
    LANE_OUT(out[15], x15, bytes[15]);                                                                                                             \
  }

/* The same for 8 lanes in 256-bit vectors (AVX2). Split from 512 bits, the 16-lane
 * code needs 32 ymm registers for its 16 state words and 16 exist: GCC spilled, and
 * the two-source 16-word permutes became chains of cross-half shuffles (26% of the
 * machine in a one-stream profile on an AVX2-only EPYC, against 10% for OpenSSL's
 * ChaCha20_8x making twice the blocks). Eight lanes fill the 16 registers exactly;
 * a lane's 16 words are two 8x8 transposes (words 0-7, words 8-15). */
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
#define T8_LO_L(s) 0 & s ? 8 + 0 - s : 0, 1 & s ? 8 + 1 - s : 1, 2 & s ? 8 + 2 - s : 2, 3 & s ? 8 + 3 - s : 3, \
                   4 & s ? 8 + 4 - s : 4, 5 & s ? 8 + 5 - s : 5, 6 & s ? 8 + 6 - s : 6, 7 & s ? 8 + 7 - s : 7
#define T8_HI_L(s) 0 & s ? 8 + 0 : 0 + s, 1 & s ? 8 + 1 : 1 + s, 2 & s ? 8 + 2 : 2 + s, 3 & s ? 8 + 3 : 3 + s, \
                   4 & s ? 8 + 4 : 4 + s, 5 & s ? 8 + 5 : 5 + s, 6 & s ? 8 + 6 : 6 + s, 7 & s ? 8 + 7 : 7 + s
#define TSW8(x, y, s) TSWAP(v8u, v8i, T8_LO_L, T8_HI_L, x, y, s)
#define TRANSPOSE8(a, b, c, d, e, f, g, h)                                                              \
  TSW8(a, e, 4) TSW8(b, f, 4) TSW8(c, g, 4) TSW8(d, h, 4) TSW8(a, c, 2) TSW8(b, d, 2) TSW8(e, g, 2)      \
  TSW8(f, h, 2) TSW8(a, b, 1) TSW8(c, d, 1) TSW8(e, f, 1) TSW8(g, h, 1)

/* Lanes 0-7 of in/out/bytes, as the 16-lane functions do for 16. */
#define DEFINE_LANES8(NAME, ATTR)                                                                       \
  ATTR static void NAME(const uint32_t in[8][16], uint8_t *const out[8], const uint8_t bytes[8]) {      \
    v8u x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15;                           \
    memcpy(&x0, in[0], 32), memcpy(&x1, in[1], 32), memcpy(&x2, in[2], 32), memcpy(&x3, in[3], 32);     \
    memcpy(&x4, in[4], 32), memcpy(&x5, in[5], 32), memcpy(&x6, in[6], 32), memcpy(&x7, in[7], 32);     \
    memcpy(&x8, in[0] + 8, 32), memcpy(&x9, in[1] + 8, 32), memcpy(&x10, in[2] + 8, 32);                \
    memcpy(&x11, in[3] + 8, 32), memcpy(&x12, in[4] + 8, 32), memcpy(&x13, in[5] + 8, 32);              \
    memcpy(&x14, in[6] + 8, 32), memcpy(&x15, in[7] + 8, 32);                                           \
    TRANSPOSE8(x0, x1, x2, x3, x4, x5, x6, x7)                                                          \
    TRANSPOSE8(x8, x9, x10, x11, x12, x13, x14, x15)                                                    \
    LANE_BLOCK(v8u)                                                                                     \
    TRANSPOSE8(x0, x1, x2, x3, x4, x5, x6, x7)                                                          \
    TRANSPOSE8(x8, x9, x10, x11, x12, x13, x14, x15)                                                    \
    const v8u lo[8] = {x0, x1, x2, x3, x4, x5, x6, x7}, hi[8] = {x8, x9, x10, x11, x12, x13, x14, x15};  \
    for (int l = 0; l < 8; l++) {                                                                       \
      memcpy(out[l], &lo[l], 32);                                                                       \
      if (bytes[l] == 64) memcpy(out[l] + 32, &hi[l], 32);                                              \
    }                                                                                                   \
  }

DEFINE_LANES16(lanes16_base, )
#if defined(__x86_64__)
DEFINE_LANES8(lanes8_avx2, __attribute__((target("avx2"))))
/* 16 lanes as two runs of 8 (the lanes16_fn the rest calls). */
__attribute__((target("avx2"))) static void lanes16_avx2(const uint32_t in[16][16], uint8_t *const out[16],
                                                          const uint8_t bytes[16]) {
  lanes8_avx2(in, out, bytes);
  lanes8_avx2(in + 8, out + 8, bytes + 8);
}
DEFINE_LANES16(lanes16_avx512, __attribute__((target("avx512f"))))
#endif

typedef void (*lanes16_fn)(const uint32_t in[16][16], uint8_t *const out[16], const uint8_t bytes[16]);

static lanes16_fn lanes_impl(int which) {
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
  return NULL; /* the lanes store words as they are */
#endif
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (which == TENC_AEAD_B0_AVX512 || which == TENC_AEAD_B0_AUTO) {
    if (__builtin_cpu_supports("avx512f")) return lanes16_avx512;
    if (which == TENC_AEAD_B0_AVX512) return NULL;
  }
  if (which == TENC_AEAD_B0_AVX2 || which == TENC_AEAD_B0_AUTO) {
    if (__builtin_cpu_supports("avx2")) return lanes16_avx2;
    if (which == TENC_AEAD_B0_AVX2) return NULL;
  }
#else
  if (which == TENC_AEAD_B0_AVX512 || which == TENC_AEAD_B0_AVX2) return NULL;
#endif
  return lanes16_base;
}

/* One block to make: keystream block `ctr` of (key, nonce), written to `out` (64
 * bytes, or the first 32 when half is set: a Poly1305 key). */
typedef struct {
  const uint8_t *key;
  const uint8_t *nonce;
  uint32_t ctr;
  int half;
  uint8_t *out;
} lane_job;

static void run_lanes(lanes16_fn f, const lane_job *jobs, uint32_t n) {
  static const uint32_t sigma[4] = {0x61707865, 0x3320646e, 0x79622d32, 0x6b206574}; /* "expand 32-byte k" */
  uint32_t in[16][16] __attribute__((aligned(64)));
  uint8_t *outs[16];
  uint8_t bytes[16];
  uint8_t sink[64]; /* idle lanes */
  for (uint32_t base = 0; base < n; base += 16) {
    uint32_t m = n - base < 16 ? n - base : 16;
    for (uint32_t l = 0; l < 16; l++) {
      const lane_job *j = &jobs[base + (l < m ? l : 0)]; /* idle lanes repeat the first */
      memcpy(in[l], sigma, 16);
      memcpy(in[l] + 4, j->key, 32);
      in[l][12] = j->ctr;
      memcpy(in[l] + 13, j->nonce, 12);
      outs[l] = l < m ? j->out : sink;
      bytes[l] = j->half ? 32 : 64;
    }
    f((const uint32_t(*)[16])in, outs, bytes);
  }
  wipe(in, sizeof in);
  wipe(sink, sizeof sink);
}

/* Block ctrs[i] (or 0 when ctrs is NULL, then only the first 32 bytes: a Poly1305
 * key) of n (key, nonce) pairs, to out + i * each. */
static int lanes_test(int which, uint32_t n, const uint8_t *const keys[], const uint8_t (*nonces)[TENC_AEAD_NONCE_LEN],
                      const uint32_t *ctrs, uint8_t *out, size_t each) {
  lanes16_fn f = lanes_impl(which);
  if (f == NULL) return -1;
  lane_job jobs[16];
  for (uint32_t base = 0; base < n; base += 16) {
    uint32_t m = n - base < 16 ? n - base : 16;
    for (uint32_t l = 0; l < m; l++) {
      uint32_t i = base + l;
      jobs[l] = (lane_job){keys[i], nonces[i], ctrs ? ctrs[i] : 0, !ctrs, out + i * each};
    }
    run_lanes(f, jobs, m);
  }
  return 0;
}

int tenc_aead_block0(int which, uint32_t n, const uint8_t *const keys[], const uint8_t (*nonces)[TENC_AEAD_NONCE_LEN],
                     uint8_t (*out)[32]) {
  return lanes_test(which, n, keys, nonces, NULL, out[0], 32);
}

int tenc_aead_keystream(int which, uint32_t n, const uint8_t *const keys[],
                        const uint8_t (*nonces)[TENC_AEAD_NONCE_LEN], const uint32_t *ctrs, uint8_t (*out)[64]) {
  return lanes_test(which, n, keys, nonces, ctrs, out[0], 64);
}

static lanes16_fn lanes_auto; /* set by ll_check when the lanes agree with OpenSSL */

/* Bytes [0, head) of a record go through OpenSSL in whole KiB passes; the rest
 * (under 1 KiB, at most KS_BLOCKS blocks) comes from the lanes. */
#define KS_BLOCKS 16
static inline size_t lane_head(size_t len) { return len & ~(size_t)1023; }

void tenc_aead_prepare(tenc_aead *a, uint32_t n, const uint8_t *const keys[],
                       const uint8_t (*nonces)[TENC_AEAD_NONCE_LEN], const uint32_t *lens) {
  if (a->pk_i < a->pk_n) { /* unused ones */
    wipe(a->pk[a->pk_i], (a->pk_n - a->pk_i) * sizeof a->pk[0]);
    wipe(a->ks[a->pk_i], (a->pk_n - a->pk_i) * sizeof a->ks[0]);
  }
  a->pk_n = a->pk_i = 0;
  if (!a->direct || !lanes_auto || n == 0 || n > TENC_AEAD_PREP_MAX) return;
  lane_job jobs[TENC_AEAD_PREP_MAX * (1 + KS_BLOCKS)];
  uint32_t nj = 0;
  for (uint32_t i = 0; i < n; i++) {
    size_t h = lane_head(lens[i]);
    uint32_t first = (uint32_t)(h / 64), end = (uint32_t)((lens[i] + 63) / 64); /* data blocks, from 0 */
    a->pk_key[i] = keys[i];
    memcpy(a->pk_nonce[i], nonces[i], TENC_AEAD_NONCE_LEN);
    a->pk_len[i] = lens[i];
    jobs[nj++] = (lane_job){keys[i], nonces[i], 0, 1, a->pk[i]};
    for (uint32_t b = first; b < end; b++) /* data block b is keystream block b + 1 */
      jobs[nj++] = (lane_job){keys[i], nonces[i], b + 1, 0, a->ks[i] + 64 * (b - first)};
  }
  run_lanes(lanes_auto, jobs, nj);
  a->pk_n = n;
}

/* The prepared record for (key, nonce, len) if it is the next one, else NULL. */
static inline int prepared(tenc_aead *a, const uint8_t *key, const uint8_t *nonce, size_t len) {
  uint32_t i = a->pk_i;
  return i < a->pk_n && a->pk_key[i] == key && a->pk_len[i] == len &&
         memcmp(a->pk_nonce[i], nonce, TENC_AEAD_NONCE_LEN) == 0;
}

/* out[i] = in[i] ^ ks[i] */
static void xor_ks(uint8_t *out, const uint8_t *in, const uint8_t *ks, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x, k;
    memcpy(&x, in + i, 8);
    memcpy(&k, ks + i, 8);
    x ^= k;
    memcpy(out + i, &x, 8);
  }
  for (; i < n; i++) out[i] = in[i] ^ ks[i];
}

/* Block 0 of (key, nonce): its first 32 bytes are the Poly1305 key (RFC 8439 §2.6).
 * Returns the prepared slot in use (then *ks is its tail keystream), or -1. */
static int direct_begin(tenc_aead *a, const uint8_t key[TENC_AEAD_KEY_LEN], const uint8_t nonce[TENC_AEAD_NONCE_LEN],
                        size_t len, uint32_t kw[8], uint32_t ctr[4], const uint8_t *aad, size_t aad_len) {
  static const uint8_t zeros[16];
  uint8_t b0[64];
  int slot = -1;
  for (int i = 0; i < 8; i++) kw[i] = rd32(key + 4 * i);
  ctr[0] = 0;
  ctr[1] = rd32(nonce);
  ctr[2] = rd32(nonce + 4);
  ctr[3] = rd32(nonce + 8);
  if (prepared(a, key, nonce, len)) {
    slot = (int)a->pk_i++;
    ll.pinit(a->poly, a->pk[slot]); /* made ahead by tenc_aead_prepare */
    wipe(a->pk[slot], sizeof a->pk[slot]);
  } else {
    memset(b0, 0, sizeof b0);
    ll.chacha(b0, b0, sizeof b0, kw, ctr);
    ll.pinit(a->poly, b0);
    wipe(b0, sizeof b0);
  }
  ctr[0] = 1;
  if (aad_len) {
    ll.pupdate(a->poly, aad, aad_len);
    if (aad_len % 16) ll.pupdate(a->poly, zeros, 16 - aad_len % 16);
  }
  return slot;
}

/* MAC over the ciphertext, its padding and the lengths block. */
static void direct_finish(tenc_aead *a, const uint8_t *ct, size_t len, size_t aad_len, uint8_t tag[16]) {
  static const uint8_t zeros[16];
  uint8_t lens[16];
  if (len) ll.pupdate(a->poly, ct, len);
  if (len % 16) ll.pupdate(a->poly, zeros, 16 - len % 16);
  wr64(lens, aad_len);
  wr64(lens + 8, len);
  ll.pupdate(a->poly, lens, sizeof lens);
  ll.pfinal(a->poly, tag);
  if (!ll.final_cleanses) wipe(a->poly, ll.poly_size);
}

/* Encrypts (or decrypts) in[0..len) to out: with a prepared slot, the whole KiBs
 * through OpenSSL and the rest from the slot's keystream; else all through OpenSSL. */
static void direct_crypt(tenc_aead *a, int slot, const uint32_t kw[8], uint32_t ctr[4], uint8_t *out,
                         const uint8_t *in, size_t len) {
  if (slot < 0) {
    if (len) ll.chacha(out, in, len, kw, ctr);
    return;
  }
  size_t h = lane_head(len);
  if (h) ll.chacha(out, in, h, kw, ctr);
  xor_ks(out + h, in + h, a->ks[slot], len - h);
  wipe(a->ks[slot], (len - h + 63) & ~(size_t)63);
}

static int direct_seal(tenc_aead *a, const uint8_t *key, const uint8_t *nonce, const uint8_t *aad, size_t aad_len,
                       uint8_t *buf, size_t len, uint8_t *tag) {
  uint32_t kw[8], ctr[4];
  int slot = direct_begin(a, key, nonce, len, kw, ctr, aad, aad_len);
  direct_crypt(a, slot, kw, ctr, buf, buf, len);
  direct_finish(a, buf, len, aad_len, tag);
  wipe(kw, sizeof kw);
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
  int slot = direct_begin(a, key, nonce, total, kw, ctr, NULL, 0);
  if (slot < 0) {
    if (n) chacha_parts(kw, ctr, parts, n, out);
  } else {
    /* whole KiBs through OpenSSL (a block boundary: no partial block at the cut),
     * the rest from the prepared keystream, part by part */
    size_t h = lane_head(total), pos = 0;
    part cut[3];
    int nc = 0;
    for (int i = 0; i < n && pos < h; i++) {
      size_t take = parts[i].n < h - pos ? parts[i].n : h - pos;
      cut[nc++] = (part){parts[i].p, take};
      pos += take;
    }
    if (nc) chacha_parts(kw, ctr, cut, nc, out);
    const uint8_t *ks = a->ks[slot];
    pos = 0;
    for (int i = 0; i < n; i++) {
      size_t lo = pos, hi = pos + parts[i].n;
      pos = hi;
      if (hi <= h) continue;
      size_t from = lo > h ? lo : h;
      xor_ks(out + from, parts[i].p + (from - lo), ks + (from - h), hi - from);
    }
    wipe(a->ks[slot], (total - h + 63) & ~(size_t)63);
  }
  direct_finish(a, out, total, 0, out + total);
  wipe(kw, sizeof kw);
  return 0;
}

static int direct_open(tenc_aead *a, const uint8_t *key, const uint8_t *nonce, const uint8_t *aad, size_t aad_len,
                       uint8_t *buf, size_t len, const uint8_t *tag) {
  uint32_t kw[8], ctr[4];
  uint8_t mac[16];
  int slot = direct_begin(a, key, nonce, len, kw, ctr, aad, aad_len);
  direct_finish(a, buf, len, aad_len, mac);
  int bad = CRYPTO_memcmp(mac, tag, sizeof mac) != 0;
  wipe(mac, sizeof mac);
  if (bad) {
    if (slot >= 0) wipe(a->ks[slot], sizeof a->ks[slot]);
    wipe(kw, sizeof kw);
    wipe(buf, len); /* as the EVP path: nothing of an unauthentic message is left */
    return -1;
  }
  direct_crypt(a, slot, kw, ctr, buf, buf, len);
  wipe(kw, sizeof kw);
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
  /* The lanes against OpenSSL: block 0 and keystream blocks of 1..40 records; then
   * runs of prepared records of many lengths (under, at and over 1 KiB and 2 KiB),
   * sealed whole and in parts, opened, against EVP. */
  {
    enum { NR = 40 };
    const uint8_t *keys[NR];
    uint8_t nonces[NR][TENC_AEAD_NONCE_LEN], pks[NR][32], ks[NR][64], b0[64];
    uint32_t ctrs[NR];
    uint8_t kbuf[NR * 32];
    for (int i = 0; i < NR * 32; i++) kbuf[i] = (uint8_t)(i * 7 + 3);
    for (int i = 0; i < NR; i++) {
      keys[i] = kbuf + 32 * i;
      ctrs[i] = (uint32_t)(i * 977u + (i == 7 ? 0xffffffffu - 977u * 7u : 0)); /* one counter at 2^32-1 */
      for (int j = 0; j < 12; j++) nonces[i][j] = (uint8_t)(i * 13 + j * 5);
    }
    for (uint32_t n = 1; n <= NR; n += n < 17 ? 1 : 23) {
      if (tenc_aead_block0(TENC_AEAD_B0_AUTO, n, keys, (const uint8_t(*)[12])nonces, pks) != 0 ||
          tenc_aead_keystream(TENC_AEAD_B0_AUTO, n, keys, (const uint8_t(*)[12])nonces, ctrs, ks) != 0)
        goto lanes_out;
      for (uint32_t i = 0; i < n; i++) {
        uint32_t kw[8], ctr[4] = {0, rd32(nonces[i]), rd32(nonces[i] + 4), rd32(nonces[i] + 8)};
        for (int w = 0; w < 8; w++) kw[w] = rd32(keys[i] + 4 * w);
        memset(b0, 0, sizeof b0);
        ll.chacha(b0, b0, sizeof b0, kw, ctr);
        if (memcmp(b0, pks[i], 32) != 0) goto lanes_out;
        ctr[0] = ctrs[i];
        memset(b0, 0, sizeof b0);
        ll.chacha(b0, b0, sizeof b0, kw, ctr);
        if (memcmp(b0, ks[i], 64) != 0) goto lanes_out;
      }
    }
    lanes_auto = lanes_impl(TENC_AEAD_B0_AUTO);
    static const uint32_t lens[] = {0, 1, 15, 16, 63, 64, 65, 100, 511, 512, 513, 1000, 1023, 1024, 1025,
                                    1088, 1100, 1408, 1420, 1424, 1500};
    enum { NL = sizeof lens / sizeof lens[0] };
    for (uint32_t start = 0; start < NL; start += 7) {
      uint32_t m = NL - start < 7 ? NL - start : 7, plens[7];
      for (uint32_t i = 0; i < m; i++) plens[i] = lens[start + i];
      for (int mode = 0; mode < 3; mode++) { /* seal, seal in parts, open */
        tenc_aead_prepare(d, m, keys, (const uint8_t(*)[12])nonces, plens);
        for (uint32_t i = 0; i < m; i++) {
          size_t n = plens[i];
          size_t pad = mode == 1 && n >= 16 ? n % 7 : 0; /* parts: zeros at the end */
          for (size_t k = 0; k < n; k++) x[k] = k < n - pad ? (uint8_t)(k * 31 + i + mode) : 0;
          memcpy(z, x, n);
          if (evp_seal(e, keys[i], nonces[i], NULL, 0, z, n, z + n) != 0) goto lanes_bad;
          memcpy(y, x, n);
          if (mode == 0 && direct_seal(d, keys[i], nonces[i], NULL, 0, y, n, y + n) != 0) goto lanes_bad;
          if (mode == 1 && direct_seal_parts(d, keys[i], nonces[i], x, n / 3, x + n / 3, n - n / 3 - pad, pad, y) != 0)
            goto lanes_bad;
          if (mode == 2) {
            memcpy(y, z, n + 16);
            if (direct_open(d, keys[i], nonces[i], NULL, 0, y, n, y + n) != 0 || memcmp(y, x, n) != 0) goto lanes_bad;
            continue;
          }
          if (memcmp(y, z, n + 16) != 0) goto lanes_bad;
        }
        if (d->pk_i != m) goto lanes_bad; /* every record used its prepared slot */
      }
    }
    goto lanes_out;
  lanes_bad:
    lanes_auto = NULL;
  lanes_out:
    tenc_aead_prepare(d, 0, NULL, NULL, NULL);
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
    a->ks = aligned_alloc(64, TENC_AEAD_PREP_MAX * sizeof a->ks[0]);
    if (a->poly == NULL || a->ks == NULL) {
      free(a->poly);
      free(a->ks);
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

const char *tenc_aead_backend(const tenc_aead *a) {
  if (!a || !a->direct) return "evp";
#if defined(__x86_64__)
  if (lanes_auto == lanes16_avx512) return "direct, lanes avx512";
  if (lanes_auto == lanes16_avx2) return "direct, lanes avx2";
#endif
  return lanes_auto ? "direct, lanes base" : "direct";
}

void tenc_aead_clear(tenc_aead *a) {
  if (a == NULL) return;
  if (a->direct) { /* nothing keyed is kept between calls but keys made ahead */
    OPENSSL_cleanse(a->poly, ll.poly_size);
    OPENSSL_cleanse(a->pk, sizeof a->pk);
    OPENSSL_cleanse(a->ks, TENC_AEAD_PREP_MAX * sizeof a->ks[0]);
    a->pk_n = a->pk_i = 0;
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
  if (a->ks) {
    OPENSSL_cleanse(a->ks, TENC_AEAD_PREP_MAX * sizeof a->ks[0]);
    free(a->ks);
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

/* Makes ahead the next run of up to 16 packets from `i` (as the engine does); a
 * packet whose offset or length changes before it is processed just does not match. */
static void prepare_run(tenc_aead *a, const batch_args *b, uint32_t i, int open) {
  const uint8_t *keys[TENC_AEAD_PREP_MAX];
  uint8_t nonces[TENC_AEAD_PREP_MAX][TENC_AEAD_NONCE_LEN];
  uint32_t lens[TENC_AEAD_PREP_MAX], m = 0;
  for (; m < TENC_AEAD_PREP_MAX && i + m < b->count; m++) {
    uint32_t len = b->lengths[i + m];
    keys[m] = b->key;
    tenc_aead_wg_nonce(b->counters[i + m], nonces[m]);
    lens[m] = open ? (len >= TENC_AEAD_TAG_LEN ? len - TENC_AEAD_TAG_LEN : 0) : len;
  }
  tenc_aead_prepare(a, m, keys, (const uint8_t(*)[TENC_AEAD_NONCE_LEN])nonces, lens);
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
      if (i % TENC_AEAD_PREP_MAX == 0) prepare_run(a, &b, i, 0);
      if (packet_at(env, &b, i, 0, &off, &len) != 0) break;
      if (tenc_aead_wg_seal(a, b.key, b.counters[i], b.slab + off, len) != 0) {
        snprintf(msg, sizeof(msg), "packet %u: OpenSSL seal failed", i);
        napi_throw_error(env, "ERR_TENC_AEAD_INTERNAL", msg);
        break;
      }
    }
  }
  if (a != NULL) tenc_aead_prepare(a, 0, NULL, NULL, NULL);
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
  tenc_aead *ctx = a;
  if (a != NULL) {
    for (uint32_t i = 0; i < b.count; i++) {
      uint32_t off, len;
      if (i % TENC_AEAD_PREP_MAX == 0) prepare_run(a, &b, i, 1);
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
  if (ctx != NULL) tenc_aead_prepare(ctx, 0, NULL, NULL, NULL); /* wipes what a throw left unused */
  OPENSSL_cleanse(b.key, sizeof(b.key));
  if (a == NULL) return NULL;
  napi_create_uint32(env, ok, &result);
  return result;
}

/* aeadBackend() -> "evp", "direct" (OpenSSL's cores, records one by one) or "direct,
 * lanes X" (runs of records made ahead with lane code X): what this thread's context
 * (and the engine's, made with the same environment) uses. */
static napi_value backend(napi_env env, napi_callback_info info) {
  napi_value result;
  tenc_aead *a = thread_aead(env);
  if (a == NULL) return NULL;
  napi_create_string_utf8(env, tenc_aead_backend(a), NAPI_AUTO_LENGTH, &result);
  return result;
}

/* aeadTestBlock0(which, keys, nonces[, counters]) -> Buffer of 32-byte Poly1305 keys
 * (block 0), or with counters (Uint32Array) of 64-byte keystream blocks, with
 * implementation `which` (0 auto, 1 baseline, 2 AVX2, 3 AVX-512; RangeError
 * with code ERR_TENC_CPU when this CPU lacks it). For tests. */
static napi_value test_block0(napi_env env, napi_callback_info info) {
  size_t argc = 4, klen, nlen, clen = 0;
  napi_value argv[4], result;
  uint8_t *keys, *nonces, *out;
  uint32_t which, *ctrs = NULL;
  napi_valuetype t4 = napi_undefined;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 3) return type_error(env, "aeadTestBlock0(which, keys, nonces[, counters])");
  if (argc > 3) napi_typeof(env, argv[3], &t4);
  if (t4 != napi_undefined && get_typed(env, argv[3], napi_uint32_array, "counters", (void **)&ctrs, &clen) != 0)
    return NULL;
  if (get_count(env, argv[0], &which) != 0) return NULL;
  if (which > TENC_AEAD_B0_AVX512) return range_error(env, "which must be 0..3");
  if (get_typed(env, argv[1], napi_uint8_array, "keys", (void **)&keys, &klen) != 0 ||
      get_typed(env, argv[2], napi_uint8_array, "nonces", (void **)&nonces, &nlen) != 0)
    return NULL;
  uint32_t n = (uint32_t)(klen / 32);
  if (klen % 32 || nlen != (size_t)n * 12 || n > 4096 || (ctrs && clen != n))
    return range_error(env, "keys must be n*32 bytes, nonces n*12, counters n, n <= 4096");
  size_t each = ctrs ? 64 : 32;
  const uint8_t **kp = malloc((n ? n : 1) * sizeof *kp);
  if (kp == NULL) return NULL;
  for (uint32_t i = 0; i < n; i++) kp[i] = keys + 32 * i;
  if (napi_create_buffer(env, (size_t)n * each, (void **)&out, &result) != napi_ok) {
    free(kp);
    return NULL;
  }
  int r = ctrs ? tenc_aead_keystream((int)which, n, kp, (const uint8_t(*)[12])nonces, ctrs, (uint8_t(*)[64])out)
               : tenc_aead_block0((int)which, n, kp, (const uint8_t(*)[12])nonces, (uint8_t(*)[32])out);
  free(kp);
  if (r != 0) {
    napi_throw_range_error(env, "ERR_TENC_CPU", "this CPU lacks that implementation");
    return NULL;
  }
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
      {"aeadTestBlock0", NULL, test_block0, NULL, NULL, NULL, napi_enumerable, NULL},
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
