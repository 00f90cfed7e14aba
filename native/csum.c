/* csum.c: the Internet checksum (RFC 1071) over large buffers (TSO/USO segment
 * payloads, GRO super-packets), see csum.h. Three variants compute the same sum:
 *  - scalar: 64-bit loads into four independent 64-bit sums, carries counted
 *    (__builtin_add_overflow: add/adc on x86-64, adds/adc on arm64); plain C;
 *  - avx2, avx512 (x86-64 only): each 64-bit lane keeps two sums, S of the whole
 *    lane mod 2^64 and H of its upper 32-bit halves; the exact sum of the lower
 *    halves is then S - (H << 32) mod 2^64, so one shift and two adds per vector
 *    replace the unpack-and-widen of a generic compiler's loop.
 * The first call picks the best one this CPU runs (__builtin_cpu_supports checks
 * the OS saves the vector state too) and stores it for the process.
 * Tests also build it with TENC_CSUM_PORTABLE (no SIMD, as on other architectures). */
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

static inline uint64_t load64(const uint8_t *p) {
  uint64_t w;
  memcpy(&w, p, 8);
  return w;
}

static uint64_t csum_scalar(uint64_t sum, const uint8_t *p, size_t len) {
  /* Four independent sums; c counts their carries (at most 4 per 32 bytes). */
  uint64_t s0 = sum, s1 = 0, s2 = 0, s3 = 0, c = 0;
  for (; len >= 32; len -= 32, p += 32) {
    c += __builtin_add_overflow(s0, load64(p), &s0);
    c += __builtin_add_overflow(s1, load64(p + 8), &s1);
    c += __builtin_add_overflow(s2, load64(p + 16), &s2);
    c += __builtin_add_overflow(s3, load64(p + 24), &s3);
  }
  for (; len >= 8; len -= 8, p += 8) c += __builtin_add_overflow(s0, load64(p), &s0);
  uint64_t s = add_eac(add_eac(add_eac(s0, s1), add_eac(s2, s3)), c);
  return shrink(tail(s, p, len));
}

#if CSUM_X86
/* Bytes per pass of a vector loop: per lane, fewer than 2^31 64-bit words, so the
 * lower halves' sum (< 2^63) and S - (H << 32) + H (< 2^64) stay exact. */
#define CHUNK ((size_t)1 << 30)

/* A sum taken over words that start one byte off the caller's (an odd number of
 * bytes in): every byte sits in the other half of its word, so the true sum is
 * this one times 256 mod 0xffff, its folded value with the bytes swapped
 * (RFC 1071 §2(B)). */
static inline uint64_t swap_sum(uint64_t s) {
  uint64_t f = tenc_csum_fold(s);
  return ((f << 8) | (f >> 8)) & 0xffff;
}

/* Sum of n (a multiple of 32) bytes from p, n <= CHUNK. */
__attribute__((target("avx2"))) static uint64_t avx2_run(const uint8_t *p, size_t n) {
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
  return add_eac(add_eac(l[0], l[1]), add_eac(l[2], l[3]));
}

/* Loads that cross a cache line cost about 1.5x here: a head of up to 31 bytes goes
 * through the inline loop, the rest from a 32-byte boundary. */
__attribute__((target("avx2"))) static uint64_t csum_avx2(uint64_t sum, const uint8_t *p, size_t len) {
  size_t head = (size_t)(-(uintptr_t)p & 31);
  if (len < head + 32) return shrink(tail(sum, p, len));
  uint64_t h = tenc_csum_add(0, p, head), d = 0;
  p += head;
  len -= head;
  while (len >= 32) {
    size_t n = (len < CHUNK ? len : CHUNK) & ~(size_t)31;
    d = add_eac(d, avx2_run(p, n));
    p += n;
    len -= n;
  }
  d = tail(d, p, len);
  if (head & 1) d = swap_sum(d);
  return shrink(add_eac(add_eac(sum, h), d));
}

/* Sums the bytes from the 64-byte boundary a at or below p to p + len, the bytes
 * before p and past the end masked off (masked-off bytes read as zero and never
 * fault), so every load is aligned. */
__attribute__((target("avx512f,avx512bw"))) static uint64_t csum_avx512(uint64_t sum, const uint8_t *p,
                                                                          size_t len) {
  if (len == 0) return shrink(sum);
  size_t off = (uintptr_t)p & 63;
  const uint8_t *a = (const uint8_t *)((uintptr_t)p - off);
  uint64_t m = ~(uint64_t)0 << off;
  if (len < 64 - off) m &= ((uint64_t)1 << (off + len)) - 1;
  __m512i v = _mm512_maskz_loadu_epi8(_cvtu64_mask64(m), (const void *)a);
  __m512i s = v, h = _mm512_srli_epi64(v, 32);
  size_t n = len < 64 - off ? 0 : len - (64 - off); /* bytes after the first block */
  a += 64;
  uint64_t d = 0;
  for (;;) {
    size_t run = n < CHUNK ? n : CHUNK;
    n -= run;
    for (; run >= 256; run -= 256, a += 256) {
      __m512i v0 = _mm512_load_si512((const void *)a);
      __m512i v1 = _mm512_load_si512((const void *)(a + 64));
      __m512i v2 = _mm512_load_si512((const void *)(a + 128));
      __m512i v3 = _mm512_load_si512((const void *)(a + 192));
      s = _mm512_add_epi64(s, _mm512_add_epi64(_mm512_add_epi64(v0, v1), _mm512_add_epi64(v2, v3)));
      __m512i h01 = _mm512_add_epi64(_mm512_srli_epi64(v0, 32), _mm512_srli_epi64(v1, 32));
      __m512i h23 = _mm512_add_epi64(_mm512_srli_epi64(v2, 32), _mm512_srli_epi64(v3, 32));
      h = _mm512_add_epi64(h, _mm512_add_epi64(h01, h23));
    }
    for (; run >= 64; run -= 64, a += 64) {
      v = _mm512_load_si512((const void *)a);
      s = _mm512_add_epi64(s, v);
      h = _mm512_add_epi64(h, _mm512_srli_epi64(v, 32));
    }
    if (run) { /* the last 1..63 bytes */
      v = _mm512_maskz_loadu_epi8(_cvtu64_mask64(((uint64_t)1 << run) - 1), (const void *)a);
      s = _mm512_add_epi64(s, v);
      h = _mm512_add_epi64(h, _mm512_srli_epi64(v, 32));
      a += run;
    }
    __m512i lane = _mm512_add_epi64(_mm512_sub_epi64(s, _mm512_slli_epi64(h, 32)), h);
    uint64_t l[8];
    _mm512_storeu_si512((void *)l, lane);
    for (int i = 0; i < 8; i++) d = add_eac(d, l[i]);
    if (n == 0) break;
    s = h = _mm512_setzero_si512();
  }
  /* Words were taken from a, off bytes before p. */
  if (off & 1) d = swap_sum(d);
  return shrink(add_eac(sum, d));
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

/* Picked when the addon loads (on node's main thread, so getenv races no setenv);
 * if some caller runs first, racing first calls pick the same variant, and the
 * atomics keep the accesses defined. */
__attribute__((constructor)) static void pick_at_load(void) { __atomic_store_n(&chosen, (int)pick(), __ATOMIC_RELAXED); }

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
