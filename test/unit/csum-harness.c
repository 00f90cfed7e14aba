/* csum-harness.c: checks every checksum variant in native/csum.c, each forced in
 * turn, and the inline tenc_csum_add, against a naive RFC 1071 (§1, §4.1) sum of
 * big-endian 16-bit words. Built and run by csum.test.ts; prints one JSON line.
 *   random lengths 0..9000 at every start alignment 0..63, every length 0..1100,
 *   random bytes and all-0xff bytes (every word 0xffff: the most carries), initial
 *   sums 0, small, and (variants only) any 64-bit value, and buffers ending right
 *   before a PROT_NONE page (an over-read faults).
 * With argument "broken" it runs the same checks on a deliberately wrong sum (the
 * odd last byte dropped) and must report failures: the checks can fail. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "csum.h"

#define MAXLEN 9000

static uint64_t rng = 0x9e3779b97f4a7c15u;
static uint64_t next(void) { /* xorshift64 */
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/* RFC 1071: 16-bit big-endian words, an odd last byte as the high byte of a word,
 * then the 16-bit one's-complement sum. Result in network order. */
static uint16_t ref_sum(const uint8_t *p, size_t len) {
  uint64_t s = 0;
  for (size_t i = 0; i + 1 < len; i += 2) s += (uint32_t)p[i] << 8 | p[i + 1];
  if (len & 1) s += (uint32_t)p[len - 1] << 8;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint16_t)s;
}

/* What tenc_csum_fold(f(init, p, len)) must be: the one's-complement sum of the
 * initial sum and the data, in memory order. */
static uint16_t expected(uint64_t init, const uint8_t *p, size_t len) {
  uint16_t net = ref_sum(p, len);
  uint8_t b[2] = {(uint8_t)(net >> 8), (uint8_t)net};
  uint16_t mem;
  memcpy(&mem, b, 2);
  uint64_t s = init;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  s += mem;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint16_t)s;
}

static uint64_t inline_add(uint64_t sum, const uint8_t *p, size_t len) { return tenc_csum_add(sum, p, len); }

/* Wrong on purpose: ignores an odd last byte. */
static uint64_t broken(uint64_t sum, const uint8_t *p, size_t len) { return tenc_csum_add(sum, p, len & ~(size_t)1); }

struct result {
  unsigned long cases, failures;
};

/* bounded: f promises a result of at most 2^32 (the variants do). */
static void check(tenc_csum_fn f, const char *name, int bounded, uint64_t init, const uint8_t *p, size_t len,
                  struct result *r) {
  uint16_t want = expected(init, p, len);
  uint64_t got64 = f(init, p, len);
  uint16_t got = tenc_csum_fold(got64);
  r->cases++;
  if (got != want || (bounded && got64 > ((uint64_t)1 << 32))) {
    if (r->failures < 5)
      fprintf(stderr, "%s: len %zu addr%%64 %u init %#llx: got %#x (raw %#llx), want %#x\n", name, len,
              (unsigned)((uintptr_t)p & 63), (unsigned long long)init, got, (unsigned long long)got64, want);
    r->failures++;
  }
}

/* full64: f accepts any 64-bit initial sum and returns at most 2^32 (the variants
 * do; the inline path, like the loop it replaced, wants sums well below 2^63). */
static void run(tenc_csum_fn f, const char *name, int full64, uint8_t *buf, uint8_t *guard_end, struct result *r) {
  for (int fill = 0; fill < 2; fill++) {
    if (fill == 0)
      for (size_t i = 0; i < MAXLEN + 64; i++) buf[i] = (uint8_t)next();
    else
      memset(buf, 0xff, MAXLEN + 64);
    uint64_t inits[4] = {0, next() >> 24, fill ? ~(uint64_t)0 : next(), 0xffff};
    int ninit = full64 ? 4 : 2;
    for (unsigned align = 0; align < 64; align++)
      for (int k = 0; k < 200; k++) {
        size_t len = next() % (MAXLEN + 1);
        check(f, name, full64, inits[k % ninit], buf + align, len, r);
      }
    for (size_t len = 0; len <= 1100; len++) check(f, name, full64, inits[len % ninit], buf + (len * 7) % 64, len, r);
    /* Ending at the guard page. */
    uint8_t *g = guard_end - (MAXLEN + 64);
    memcpy(g, buf, MAXLEN + 64);
    for (size_t len = 0; len <= 1100; len++) check(f, name, full64, inits[len % ninit], guard_end - len, len, r);
    for (int k = 0; k < 200; k++) {
      size_t len = next() % (MAXLEN + 1);
      check(f, name, full64, inits[k % ninit], guard_end - len, len, r);
    }
  }
}

int main(int argc, char **argv) {
  long page = sysconf(_SC_PAGESIZE);
  size_t span = ((MAXLEN + 64 + (size_t)page - 1) / (size_t)page) * (size_t)page;
  uint8_t *map = mmap(NULL, span + (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED || mprotect(map + span, (size_t)page, PROT_NONE) != 0) {
    perror("mmap");
    return 2;
  }
  uint8_t *guard_end = map + span;
  uint8_t *buf = malloc(MAXLEN + 64);
  if (!buf) return 2;

  if (argc > 1 && strcmp(argv[1], "broken") == 0) {
    struct result r = {0, 0};
    run(broken, "broken", 0, buf, guard_end, &r);
    printf("{\"broken\":{\"cases\":%lu,\"failures\":%lu}}\n", r.cases, r.failures);
    free(buf);
    munmap(map, span + (size_t)page);
    return 0;
  }

  int bad = 0;
  printf("{\"impl\":\"%s\",\"variants\":[", tenc_csum_impl());
  for (unsigned i = 0;; i++) {
    const char *name;
    int usable;
    tenc_csum_fn f = tenc_csum_variant(i, &name, &usable);
    if (!f) break;
    struct result r = {0, 0};
    if (usable) run(f, name, 1, buf, guard_end, &r);
    bad |= r.failures != 0;
    printf("%s{\"name\":\"%s\",\"usable\":%s,\"cases\":%lu,\"failures\":%lu}", i ? "," : "", name,
           usable ? "true" : "false", r.cases, r.failures);
  }
  struct result r = {0, 0};
  run(inline_add, "tenc_csum_add", 0, buf, guard_end, &r);
  bad |= r.failures != 0;
  printf("],\"inline\":{\"cases\":%lu,\"failures\":%lu}}\n", r.cases, r.failures);
  free(buf);
  munmap(map, span + (size_t)page);
  return bad;
}
