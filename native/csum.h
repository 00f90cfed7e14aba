#ifndef TENC_CSUM_H
#define TENC_CSUM_H
/* csum.h: the Internet checksum (RFC 1071) and its incremental update (RFC 1624
 * eqn. 3: HC' = ~(~HC + ~m + m')), used by NAT rewrites and by TSO/USO
 * segmentation. Sums are accumulated in 64 bits over network-order 16-bit words. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Buffers of at least this many bytes go to tenc_csum_add_large (csum.c), which
 * picks a SIMD variant once per process; shorter ones (IP and L4 headers, NAT
 * rewrites) stay inline, with no call or dispatch. */
#define TENC_CSUM_LARGE 256

typedef uint64_t (*tenc_csum_fn)(uint64_t sum, const uint8_t *p, size_t len);

/* The large-buffer path: same contract as tenc_csum_add, any `sum` accepted
 * (additions carry end-around, so no 64-bit overflow), result at most 2^32. */
uint64_t tenc_csum_add_large(uint64_t sum, const uint8_t *p, size_t len);

/* Its variants, for tests and benchmarks. tenc_csum_variant(i) returns the i-th
 * (NULL past the last); *name is set, *usable to whether this CPU runs it. The
 * first is the portable scalar one; x86-64 builds add "avx2" and "avx512". */
tenc_csum_fn tenc_csum_variant(unsigned i, const char **name, int *usable);
/* The name of the variant tenc_csum_add_large uses (TENC_CSUM=scalar|avx2|avx512
 * in the environment forces one, if this CPU runs it). */
const char *tenc_csum_impl(void);

/* Adds data to a running one's-complement sum (not folded, not complemented):
 * 16-bit words in memory order from p (any alignment), an odd last byte padded
 * with a zero byte (RFC 1071 §4.1). Sums of native-order 32-bit loads are
 * congruent mod 0xffff to the sum of their 16-bit words, which is all folding
 * needs. */
static inline uint64_t tenc_csum_add_small(uint64_t sum, const uint8_t *p, size_t len);
static inline uint64_t tenc_csum_add(uint64_t sum, const uint8_t *p, size_t len) {
  if (len >= TENC_CSUM_LARGE) return tenc_csum_add_large(sum, p, len);
  return tenc_csum_add_small(sum, p, len);
}

/* The same sum by a plain loop of 32-bit loads, any length: the inline path for
 * short buffers (headers, NAT rewrites), and what the old code used for all. */
static inline uint64_t tenc_csum_add_small(uint64_t sum, const uint8_t *p, size_t len) {
  while (len >= 8) {
    uint32_t a, b;
    memcpy(&a, p, 4);
    memcpy(&b, p + 4, 4);
    sum += (uint64_t)a + b;
    p += 8;
    len -= 8;
  }
  if (len >= 4) {
    uint32_t a;
    memcpy(&a, p, 4);
    sum += a;
    p += 4;
    len -= 4;
  }
  if (len >= 2) {
    uint16_t a;
    memcpy(&a, p, 2);
    sum += a;
    p += 2;
    len -= 2;
  }
  if (len) {
    uint8_t last[2] = {p[0], 0};
    uint16_t a;
    memcpy(&a, last, 2);
    sum += a;
  }
  return sum;
}

/* Folds to 16 bits (still in the memory byte order of the words summed). */
static inline uint16_t tenc_csum_fold(uint64_t sum) {
  sum = (sum & 0xffffffffu) + (sum >> 32);
  sum = (sum & 0xffffffffu) + (sum >> 32);
  sum = (sum & 0xffffu) + (sum >> 16);
  sum = (sum & 0xffffu) + (sum >> 16);
  return (uint16_t)sum;
}

/* The checksum field value (complemented) for the bytes summed. */
static inline uint16_t tenc_csum_finish(uint64_t sum) { return (uint16_t)~tenc_csum_fold(sum); }

/* Pseudo-header sum for TCP/UDP over IPv4 (RFC 793 §3.1) or IPv6 (RFC 8200 §8.1). */
static inline uint64_t tenc_csum_pseudo(int v6, const uint8_t *src, const uint8_t *dst, uint8_t proto,
                                        uint32_t l4len) {
  uint64_t s = 0;
  size_t alen = v6 ? 16 : 4;
  s = tenc_csum_add(s, src, alen);
  s = tenc_csum_add(s, dst, alen);
  uint8_t tail[8] = {0, 0, 0, 0, 0, 0, 0, proto};
  tail[0] = (uint8_t)(l4len >> 24);
  tail[1] = (uint8_t)(l4len >> 16);
  tail[2] = (uint8_t)(l4len >> 8);
  tail[3] = (uint8_t)l4len;
  return tenc_csum_add(s, tail, 8);
}

/* RFC 1624 update of a checksum field (in packet memory) when `len` bytes (even)
 * change from `old` to `new`. */
static inline void tenc_csum_replace(uint8_t *field, const uint8_t *old, const uint8_t *new_, size_t len) {
  uint16_t hc;
  memcpy(&hc, field, 2);
  uint64_t s = (uint16_t)~hc;
  for (size_t i = 0; i + 1 < len; i += 2) {
    uint16_t o, n;
    memcpy(&o, old + i, 2);
    memcpy(&n, new_ + i, 2);
    s += (uint16_t)~o;
    s += n;
  }
  hc = (uint16_t)~tenc_csum_fold(s);
  memcpy(field, &hc, 2);
}

/* IPv4 header checksum (RFC 791): recomputes the field at hdr+10. */
static inline void tenc_ipv4_csum(uint8_t *hdr, size_t ihl_bytes) {
  hdr[10] = hdr[11] = 0;
  uint16_t c = tenc_csum_finish(tenc_csum_add(0, hdr, ihl_bytes));
  memcpy(hdr + 10, &c, 2);
}

#endif
