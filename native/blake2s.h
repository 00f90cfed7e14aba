#ifndef TENC_BLAKE2S_H
#define TENC_BLAKE2S_H
/* blake2s.h: keyed BLAKE2s (RFC 7693) for WireGuard's mac1 check in the receive
 * path (engine_hsgate.c): MAC(key, msg) = BLAKE2s(key, msg) with a 16-byte
 * output (whitepaper §5.4.4). Header-only (static functions) so every build that
 * links the engine (addon, fuzz harnesses) has it without another source file.
 * Per handshake message only: plain portable code, no SIMD. */
#include <stdint.h>
#include <string.h>

static const uint32_t tenc_b2s_iv[8] = {0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
                                        0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u};

static const uint8_t tenc_b2s_sigma[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4}, {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13}, {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11}, {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5}, {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
};

typedef struct {
  uint32_t h[8];
  uint32_t t; /* bytes compressed so far (messages here are far below 4 GiB) */
  uint8_t buf[64];
  uint32_t fill;
  uint32_t outlen;
} tenc_b2s;

static inline uint32_t tenc_b2s_rotr(uint32_t x, int n) { return x >> n | x << (32 - n); }

static void tenc_b2s_compress(tenc_b2s *s, const uint8_t blk[64], int last) {
  uint32_t m[16], v[16];
  for (int i = 0; i < 16; i++)
    m[i] = (uint32_t)blk[4 * i] | (uint32_t)blk[4 * i + 1] << 8 | (uint32_t)blk[4 * i + 2] << 16 |
           (uint32_t)blk[4 * i + 3] << 24;
  for (int i = 0; i < 8; i++) {
    v[i] = s->h[i];
    v[i + 8] = tenc_b2s_iv[i];
  }
  v[12] ^= s->t;
  if (last) v[14] = ~v[14];
#define TENC_B2S_G(a, b, c, d, x, y)            \
  do {                                          \
    v[a] = v[a] + v[b] + (x);                   \
    v[d] = tenc_b2s_rotr(v[d] ^ v[a], 16);      \
    v[c] = v[c] + v[d];                         \
    v[b] = tenc_b2s_rotr(v[b] ^ v[c], 12);      \
    v[a] = v[a] + v[b] + (y);                   \
    v[d] = tenc_b2s_rotr(v[d] ^ v[a], 8);       \
    v[c] = v[c] + v[d];                         \
    v[b] = tenc_b2s_rotr(v[b] ^ v[c], 7);       \
  } while (0)
  for (int r = 0; r < 10; r++) {
    const uint8_t *z = tenc_b2s_sigma[r];
    TENC_B2S_G(0, 4, 8, 12, m[z[0]], m[z[1]]);
    TENC_B2S_G(1, 5, 9, 13, m[z[2]], m[z[3]]);
    TENC_B2S_G(2, 6, 10, 14, m[z[4]], m[z[5]]);
    TENC_B2S_G(3, 7, 11, 15, m[z[6]], m[z[7]]);
    TENC_B2S_G(0, 5, 10, 15, m[z[8]], m[z[9]]);
    TENC_B2S_G(1, 6, 11, 12, m[z[10]], m[z[11]]);
    TENC_B2S_G(2, 7, 8, 13, m[z[12]], m[z[13]]);
    TENC_B2S_G(3, 4, 9, 14, m[z[14]], m[z[15]]);
  }
#undef TENC_B2S_G
  for (int i = 0; i < 8; i++) s->h[i] ^= v[i] ^ v[i + 8];
}

static void tenc_b2s_update(tenc_b2s *s, const uint8_t *in, size_t len) {
  while (len) {
    if (s->fill == 64) { /* a full block is compressed only once more input follows */
      s->t += 64;
      tenc_b2s_compress(s, s->buf, 0);
      s->fill = 0;
    }
    uint32_t n = 64 - s->fill;
    if (n > len) n = (uint32_t)len;
    memcpy(s->buf + s->fill, in, n);
    s->fill += n;
    in += n;
    len -= n;
  }
}

/* outlen 1..32, keylen 0..32 */
static void tenc_b2s_init(tenc_b2s *s, uint32_t outlen, const uint8_t *key, uint32_t keylen) {
  memcpy(s->h, tenc_b2s_iv, sizeof s->h);
  s->h[0] ^= 0x01010000u ^ keylen << 8 ^ outlen;
  s->t = 0;
  s->fill = 0;
  s->outlen = outlen;
  if (keylen) {
    uint8_t blk[64] = {0};
    memcpy(blk, key, keylen);
    tenc_b2s_update(s, blk, 64);
    memset(blk, 0, sizeof blk);
  }
}

static void tenc_b2s_final(tenc_b2s *s, uint8_t *out) {
  s->t += s->fill;
  memset(s->buf + s->fill, 0, 64 - s->fill);
  tenc_b2s_compress(s, s->buf, 1);
  uint8_t full[32];
  for (int i = 0; i < 8; i++) {
    full[4 * i] = (uint8_t)s->h[i];
    full[4 * i + 1] = (uint8_t)(s->h[i] >> 8);
    full[4 * i + 2] = (uint8_t)(s->h[i] >> 16);
    full[4 * i + 3] = (uint8_t)(s->h[i] >> 24);
  }
  memcpy(out, full, s->outlen);
  memset(full, 0, sizeof full);
  memset(s, 0, sizeof *s);
}

/* out = BLAKE2s-128(key[0..32), msg): WireGuard's MAC. */
static inline void tenc_b2s_mac16(const uint8_t key[32], const uint8_t *msg, size_t len, uint8_t out[16]) {
  tenc_b2s s;
  tenc_b2s_init(&s, 16, key, 32);
  tenc_b2s_update(&s, msg, len);
  tenc_b2s_final(&s, out);
}

/* out = BLAKE2s-256(a || b): WireGuard's HASH of two parts (mac1 key = HASH(LABEL_MAC1 || Spub)). */
static inline void tenc_b2s_hash2(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen, uint8_t out[32]) {
  tenc_b2s s;
  tenc_b2s_init(&s, 32, NULL, 0);
  tenc_b2s_update(&s, a, alen);
  tenc_b2s_update(&s, b, blen);
  tenc_b2s_final(&s, out);
}

#endif
