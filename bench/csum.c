/* bench/csum.c: Internet checksum throughput, the loop csum.h had before native/csum.c
 * (32-bit loads into one 64-bit sum, which gcc -O2 vectorizes with SSE2) against
 * tenc_csum_add (inline below 256 bytes, else the variant picked at run time) and
 * each variant forced. Ad hoc, not part of npm run bench:
 *   cc -O2 -std=gnu11 -Inative bench/csum.c native/csum.c -o /tmp/csum-bench
 *   flock /tmp/tenc-bench.lock /tmp/csum-bench
 * Prints GB/s and bytes per core cycle: from perf's cycle counter when readable,
 * else (VMs) at a clock measured with a chain of dependent adds (x86-64 only). */
#include <linux/perf_event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "csum.h"

/* The pre-csum.c loop (unchanged, csum.h's short-sum path). Every function is
 * called through a pointer, not inlined into the timing loop. */
__attribute__((noinline)) static uint64_t old_add(uint64_t sum, const uint8_t *p, size_t len) {
  return tenc_csum_add_small(sum, p, len); /* the old loop, kept in csum.h for short sums */
}

__attribute__((noinline)) static uint64_t inline_add(uint64_t sum, const uint8_t *p, size_t len) { return tenc_csum_add(sum, p, len); }

static int cycles_fd = -1;

static void open_cycles(void) {
  struct perf_event_attr a;
  memset(&a, 0, sizeof a);
  a.type = PERF_TYPE_HARDWARE;
  a.size = sizeof a;
  a.config = PERF_COUNT_HW_CPU_CYCLES;
  a.exclude_kernel = 1;
  a.exclude_hv = 1;
  cycles_fd = (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
}

static uint64_t read_cycles(void) {
  uint64_t c = 0;
  if (cycles_fd < 0 || read(cycles_fd, &c, sizeof c) != sizeof c) return 0;
  return c;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static volatile uint16_t sink;

/* Core clock in GHz: 4 dependent adds (1 cycle each) per loop iteration. */
static double measure_ghz(void) {
#if defined(__x86_64__)
  double best = 0;
  for (int round = 0; round < 3; round++) {
    uint64_t x = 0;
    const long n = 25000000;
    double t0 = now();
    for (long i = 0; i < n; i++) __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
    double g = 4.0 * (double)n / (now() - t0) / 1e9;
    if (g > best) best = g;
  }
  return best;
#else
  return 0;
#endif
}

static double ghz;

/* Sums of len bytes at p, about 0.08 s per round; best of 5 rounds. */
__attribute__((noinline, noclone)) static void measure(const char *name, tenc_csum_fn f, const uint8_t *p, size_t len) {
  size_t iters = (size_t)(1.6e8 / (double)(len + 16)) + 1;
  double best_gbs = 0, best_bpc = 0;
  for (int round = 0; round < 5; round++) {
    uint64_t acc = 0;
    uint64_t c0 = read_cycles();
    double t0 = now();
    for (size_t i = 0; i < iters; i++) {
      acc += tenc_csum_fold(f(i & 1, p, len));
      __asm__ volatile("" ::: "memory"); /* no hoisting the sum out of the loop */
    }
    double t = now() - t0;
    uint64_t c = read_cycles() - c0;
    sink = (uint16_t)acc;
    double bytes = (double)iters * (double)len;
    if (bytes / t / 1e9 > best_gbs) best_gbs = bytes / t / 1e9;
    if (c && bytes / (double)c > best_bpc) best_bpc = bytes / (double)c;
  }
  if (cycles_fd < 0 && ghz > 0) best_bpc = best_gbs / ghz;
  if (best_bpc > 0)
    printf("  %-14s %8.2f GB/s %7.2f B/cycle\n", name, best_gbs, best_bpc);
  else
    printf("  %-14s %8.2f GB/s\n", name, best_gbs);
}

int main(void) {
  open_cycles();
  if (cycles_fd >= 0 && read_cycles() == 0) cycles_fd = -1;
  static const size_t sizes[] = {20, 1400, 65536};
  static const size_t offsets[] = {0, 1, 2};
  uint8_t *buf = aligned_alloc(64, 65536 + 128);
  if (!buf) return 1;
  for (size_t i = 0; i < 65536 + 128; i++) buf[i] = (uint8_t)(i * 131 + 7);
  if (cycles_fd < 0) ghz = measure_ghz();
  printf("dispatch picks %s; cycles %s", tenc_csum_impl(), cycles_fd >= 0 ? "counted\n" : "");
  if (cycles_fd < 0) printf("at a measured %.2f GHz\n", ghz);
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
    for (size_t o = 0; o < sizeof offsets / sizeof offsets[0]; o++) {
      size_t len = sizes[s];
      if (len < TENC_CSUM_LARGE && o) continue;
      printf("%zu bytes at 64-byte boundary + %zu\n", len, offsets[o]);
      const uint8_t *p = buf + offsets[o];
      measure("old loop", old_add, p, len);
      measure("tenc_csum_add", inline_add, p, len);
      if (len < TENC_CSUM_LARGE) continue;
      for (unsigned i = 0;; i++) {
        const char *name;
        int ok;
        tenc_csum_fn f = tenc_csum_variant(i, &name, &ok);
        if (!f) break;
        if (ok) measure(name, f, p, len);
      }
    }
  free(buf);
  return 0;
}
