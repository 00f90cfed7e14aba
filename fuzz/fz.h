/* fz.h: input reading shared by the libFuzzer harnesses in this folder. Each
 * harness links the addon's own C files from native/ (see build.sh); nothing here
 * is a copy of them. A harness aborts (FZ_CHECK) when an invariant of the code
 * under test fails, so libFuzzer saves the input as a crash. */
#ifndef TENC_FZ_H
#define TENC_FZ_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const uint8_t *p;
  size_t n;
} fz_in;

static inline int fz_left(const fz_in *in) { return in->n > 0; }
static inline uint8_t fz_u8(fz_in *in) {
  if (!in->n) return 0;
  in->n--;
  return *in->p++;
}
static inline uint16_t fz_u16(fz_in *in) { return (uint16_t)(fz_u8(in) | fz_u8(in) << 8); }
static inline uint32_t fz_u32(fz_in *in) { return (uint32_t)fz_u16(in) | (uint32_t)fz_u16(in) << 16; }
static inline uint64_t fz_u64(fz_in *in) { return (uint64_t)fz_u32(in) | (uint64_t)fz_u32(in) << 32; }
/* Up to `want` bytes (fewer at the end of the input); returns how many. */
static inline size_t fz_bytes(fz_in *in, uint8_t *out, size_t want) {
  size_t k = want < in->n ? want : in->n;
  memcpy(out, in->p, k);
  in->p += k;
  in->n -= k;
  return k;
}
/* A length-prefixed record (u16 length): returns a malloc'd copy of exactly that
 * many bytes (ASan catches any access past it), NULL when the input is done. */
static inline uint8_t *fz_record(fz_in *in, uint32_t *len) {
  if (in->n < 2) return NULL;
  uint32_t want = fz_u16(in);
  if (want > in->n) want = (uint32_t)in->n;
  uint8_t *r = malloc(want ? want : 1);
  *len = (uint32_t)fz_bytes(in, r, want);
  return r;
}

#define FZ_CHECK(cond)                                                                   \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);        \
      abort();                                                                           \
    }                                                                                    \
  } while (0)
#endif
