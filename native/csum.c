/* csum.c: the Internet checksum (RFC 1071) over large buffers (TSO/USO segment
 * payloads, GRO super-packets), see csum.h. Three variants compute the same sum:
 *  - scalar: 64-bit loads added with carry into 128-bit accumulators (add/adc on
 *    x86-64, adds/adc on arm64), four independent chains; plain C, any 64-bit target
 *    (32-bit targets without __int128 add 32-bit loads to 64-bit accumulators);
 *  - avx2, avx512 (x86-64 only): each 64-bit lane keeps two sums, S of the whole
 *    lane mod 2^64 and H of its upper 32-bit halves; the exact sum of the lower
 *    halves is then S - (H << 32) mod 2^64, so one shift and two adds per vector
 *    replace the unpack-and-widen of a generic compiler's loop.
 * The first call picks the best one this CPU runs (__builtin_cpu_supports checks
 * the OS saves the vector state too) and stores it for the process.
 * Tests build it with TENC_CSUM_PORTABLE (no SIMD, as on other architectures) and
 * TENC_CSUM_NO_INT128 (the 32-bit targets' scalar loop) too. */
#include "csum.h"
#include <stdlib.h>
#if defined(__x86_64__) && !defined(TENC_CSUM_PORTABLE)
#define CSUM_X86 1
#include <immintrin.h>
#else
#define CSUM_X86 0
#endif

/* a + b with end-around carry (one's-complement addition on 64 bits: 2^64 - 1 is a
 * multiple of 0xffff). Never 0 unless both are. */
static inline uint64_t add_eac(uint64_t a, uint64_t b) {
  uint64_t s = a + b;
  return s + (s < b);
}

/* Folds to at most 2^32, keeping the value mod 0xffff and its non-zeroness, so
 * callers may keep adding to it in the inline path. */
static inline uint64_t shrink(uint64_t s) {
  s = (s & 0xffffffffu) + (s >> 32);
  return (s & 0xffffffffu) + (s >> 32);
}

/* The bytes left after a wide loop (fewer than TENC_CSUM_LARGE): the inline path. */
static inline uint64_t tail(uint64_t sum, const uint8_t *p, size_t len) {
  return add_eac(sum, tenc_csum_add(0, p, len));
}

static uint64_t csum_scalar(uint64_t sum, const uint8_t *p, size_t len) {
#if defined(__SIZEOF_INT128__) && !defined(TENC_CSUM_NO_INT128)
  /* Each accumulator's high half grows by at most 1 per add: no overflow before 2^64 adds. */
  unsigned __int128 a0 = sum, a1 = 0, a2 = 0, a3 = 0;
  while (len >= 32) {
    uint64_t w[4];
    memcpy(w, p, 32);
    a0 += w[0];
    a1 += w[1];
    a2 += w[2];
    a3 += w[3];
    p += 32;
    len -= 32;
  }
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    a0 += w;
    p += 8;
    len -= 8;
  }
  /* Four sums below 2^128 / 4: their total does not overflow. */
  unsigned __int128 t = a0 + a1 + a2 + a3;
  uint64_t s = add_eac((uint64_t)t, (uint64_t)(t >> 64));
#else
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, s = sum;
  while (len >= 16) {
    size_t n = len / 16 < (1u << 30) ? len / 16 : (1u << 30); /* 2^30 adds below 2^32 each: no overflow */
    for (size_t i = 0; i < n; i++) {
      uint32_t w[4];
      memcpy(w, p, 16);
      a0 += w[0];
      a1 += w[1];
      a2 += w[2];
      a3 += w[3];
      p += 16;
    }
    len -= n * 16;
    s = add_eac(s, add_eac(add_eac(a0, a1), add_eac(a2, a3)));
    a0 = a1 = a2 = a3 = 0;
  }
#endif
  return shrink(tail(s, p, len));
}

#if CSUM_X86
/* Bytes per pass of a vector loop: per lane, fewer than 2^31 64-bit words, so the
 * lower halves' sum (< 2^63) and S - (H << 32) + H (< 2^64) stay exact. */
#define CHUNK ((size_t)1 << 30)

__attribute__((target("avx2"))) static uint64_t csum_avx2(uint64_t sum, const uint8_t *p, size_t len) {
  while (len >= 32) {
    size_t n = len < CHUNK ? len : CHUNK;
    len -= n & ~(size_t)31;
    __m256i s = _mm256_setzero_si256(), h = _mm256_setzero_si256();
    for (; n >= 128; n -= 128, p += 128) {
      __m256i v0 = _mm256_loadu_si256((const __m256i *)p);
      __m256i v1 = _mm256_loadu_si256((const __m256i *)(p + 32));
      __m256i v2 = _mm256_loadu_si256((const __m256i *)(p + 64));
      __m256i v3 = _mm256_loadu_si256((const __m256i *)(p + 96));
      s = _mm256_add_epi64(s, _mm256_add_epi64(_mm256_add_epi64(v0, v1), _mm256_add_epi64(v2, v3)));
      __m256i h01 = _mm256_add_epi64(_mm256_srli_epi64(v0, 32), _mm256_srli_epi64(v1, 32));
      __m256i h23 = _mm256_add_epi64(_mm256_srli_epi64(v2, 32), _mm256_srli_epi64(v3, 32));
      h = _mm256_add_epi64(h, _mm256_add_epi64(h01, h23));
    }
    for (; n >= 32; n -= 32, p += 32) {
      __m256i v = _mm256_loadu_si256((const __m256i *)p);
      s = _mm256_add_epi64(s, v);
      h = _mm256_add_epi64(h, _mm256_srli_epi64(v, 32));
    }
    /* Per lane: lower halves + upper halves. */
    __m256i lane = _mm256_add_epi64(_mm256_sub_epi64(s, _mm256_slli_epi64(h, 32)), h);
    uint64_t l[4];
    _mm256_storeu_si256((__m256i *)l, lane);
    sum = add_eac(add_eac(sum, add_eac(l[0], l[1])), add_eac(l[2], l[3]));
  }
  return shrink(tail(sum, p, len));
}

__attribute__((target("avx512f,avx512bw"))) static uint64_t csum_avx512(uint64_t sum, const uint8_t *p,
                                                                          size_t len) {
  while (len) {
    size_t n = len < CHUNK ? len : CHUNK;
    len -= n;
    __m512i s = _mm512_setzero_si512(), h = _mm512_setzero_si512();
    for (; n >= 256; n -= 256, p += 256) {
      __m512i v0 = _mm512_loadu_si512((const void *)p);
      __m512i v1 = _mm512_loadu_si512((const void *)(p + 64));
      __m512i v2 = _mm512_loadu_si512((const void *)(p + 128));
      __m512i v3 = _mm512_loadu_si512((const void *)(p + 192));
      s = _mm512_add_epi64(s, _mm512_add_epi64(_mm512_add_epi64(v0, v1), _mm512_add_epi64(v2, v3)));
      __m512i h01 = _mm512_add_epi64(_mm512_srli_epi64(v0, 32), _mm512_srli_epi64(v1, 32));
      __m512i h23 = _mm512_add_epi64(_mm512_srli_epi64(v2, 32), _mm512_srli_epi64(v3, 32));
      h = _mm512_add_epi64(h, _mm512_add_epi64(h01, h23));
    }
    for (; n >= 64; n -= 64, p += 64) {
      __m512i v = _mm512_loadu_si512((const void *)p);
      s = _mm512_add_epi64(s, v);
      h = _mm512_add_epi64(h, _mm512_srli_epi64(v, 32));
    }
    if (n) {
      /* The last 1..63 bytes in one masked load: the bytes past the end read as zero
       * (and never fault), which is the RFC's padding of an odd last byte too. */
      __m512i v = _mm512_maskz_loadu_epi8(_cvtu64_mask64(((uint64_t)1 << n) - 1), (const void *)p);
      s = _mm512_add_epi64(s, v);
      h = _mm512_add_epi64(h, _mm512_srli_epi64(v, 32));
      p += n;
    }
    __m512i lane = _mm512_add_epi64(_mm512_sub_epi64(s, _mm512_slli_epi64(h, 32)), h);
    uint64_t l[8];
    _mm512_storeu_si512((void *)l, lane);
    for (int i = 0; i < 8; i++) sum = add_eac(sum, l[i]);
  }
  return shrink(sum);
}
#endif

static const struct {
  const char *name;
  tenc_csum_fn fn;
} variants[] = {
    {"scalar", csum_scalar},
#if CSUM_X86
    {"avx2", csum_avx2},
    {"avx512", csum_avx512},
#endif
};
#define NVARIANTS (sizeof(variants) / sizeof(variants[0]))

static int usable(unsigned i) {
#if CSUM_X86
  __builtin_cpu_init();
  if (variants[i].fn == csum_avx2) return __builtin_cpu_supports("avx2");
  if (variants[i].fn == csum_avx512) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#else
  (void)i;
#endif
  return 1;
}

tenc_csum_fn tenc_csum_variant(unsigned i, const char **name, int *ok) {
  if (i >= NVARIANTS) return NULL;
  *name = variants[i].name;
  *ok = usable(i);
  return variants[i].fn;
}

/* The variant in use: index into variants, -1 until the first call picks it. */
static int chosen = -1;

static unsigned pick(void) {
  const char *force = getenv("TENC_CSUM");
  if (force) {
    for (unsigned i = 0; i < NVARIANTS; i++)
      if (strcmp(force, variants[i].name) == 0 && usable(i)) return i;
  }
  /* Later entries are faster; take the last this CPU runs. */
  unsigned best = 0;
  for (unsigned i = 1; i < NVARIANTS; i++)
    if (usable(i)) best = i;
  return best;
}

/* Racing first calls pick the same variant; the atomics only keep the accesses defined. */
static inline unsigned current(void) {
  int c = __atomic_load_n(&chosen, __ATOMIC_RELAXED);
  if (c < 0) {
    c = (int)pick();
    __atomic_store_n(&chosen, c, __ATOMIC_RELAXED);
  }
  return (unsigned)c;
}

uint64_t tenc_csum_add_large(uint64_t sum, const uint8_t *p, size_t len) {
  return variants[current()].fn(sum, p, len);
}

const char *tenc_csum_impl(void) { return variants[current()].name; }
