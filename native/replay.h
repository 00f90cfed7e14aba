#ifndef TENC_REPLAY_H
#define TENC_REPLAY_H
/* replay.h: the receive-side sliding window over transport counters (WireGuard
 * whitepaper §5.4.6, window design of RFC 6479): 8192 bits in 64-bit blocks used
 * as a ring, so the last 8192-64 counters are tracked. check() runs before
 * decryption and changes nothing; commit() runs after authentication. Only the
 * engine's receive thread touches a window. */
#include <stdint.h>
#include <string.h>

#define TENC_REPLAY_BITS 8192u
#define TENC_REPLAY_BLOCKS (TENC_REPLAY_BITS / 64u)
#define TENC_REPLAY_WINDOW (TENC_REPLAY_BITS - 64u) /* 8128: a counter this far behind the greatest is still tracked */
/* WireGuard whitepaper §6.4 (messages.h): REJECT_AFTER_MESSAGES = 2^64 - 2^13 - 1. */
#define TENC_REJECT_AFTER_MESSAGES (UINT64_MAX - 8192u)
#define TENC_REKEY_AFTER_MESSAGES (1ull << 60)

typedef struct {
  uint64_t top; /* highest committed counter */
  uint64_t bits[TENC_REPLAY_BLOCKS];
} tenc_replay;

static inline void tenc_replay_init(tenc_replay *r) { memset(r, 0, sizeof *r); }

/* 1 when `c` may be new, 0 when it is a replay, too old or beyond the limit. */
static inline int tenc_replay_check(const tenc_replay *r, uint64_t c) {
  if (c >= TENC_REJECT_AFTER_MESSAGES) return 0;
  if (c > r->top) return 1;
  if (r->top - c > TENC_REPLAY_WINDOW) return 0; /* as the kernel: greatest - 8128 still fits */
  return !((r->bits[(c / 64) % TENC_REPLAY_BLOCKS] >> (c % 64)) & 1);
}

/* Marks `c` seen. Returns 1 when it was new, 0 when it was already seen/too old. */
static inline int tenc_replay_commit(tenc_replay *r, uint64_t c) {
  if (!tenc_replay_check(r, c)) return 0;
  if (c > r->top) {
    uint64_t cur = r->top / 64, next = c / 64;
    uint64_t diff = next - cur;
    if (diff > TENC_REPLAY_BLOCKS) diff = TENC_REPLAY_BLOCKS;
    for (uint64_t i = 1; i <= diff; i++) r->bits[(cur + i) % TENC_REPLAY_BLOCKS] = 0;
    r->top = c;
  }
  r->bits[(c / 64) % TENC_REPLAY_BLOCKS] |= 1ull << (c % 64);
  return 1;
}

#endif
