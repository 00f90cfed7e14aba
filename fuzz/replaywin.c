/* replaywin.c (not replay.c: a file named after native/replay.h reads as its source):
 * libFuzzer harness of the replay window (native/replay.h) against a
 * plain model: a counter is accepted iff it is below REJECT_AFTER_MESSAGES, not
 * seen before, and above the greatest accepted minus TENC_REPLAY_WINDOW (8128).
 * check() must agree with commit() and change nothing.
 * Input: ops of 1 + 8 bytes: kind (jump relative to the greatest, small step
 * back, or absolute), value. */
#include "fz.h"
#include "replay.h"

#define MAXOPS 4096
static uint64_t accepted_ctr[MAXOPS];
static size_t n_accepted;

static int model_seen(uint64_t c) {
  for (size_t i = 0; i < n_accepted; i++)
    if (accepted_ctr[i] == c) return 1;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  tenc_replay r;
  tenc_replay_init(&r);
  n_accepted = 0;
  uint64_t top = 0;
  int any = 0;
  for (int op = 0; op < MAXOPS && fz_left(&in); op++) {
    uint8_t k = fz_u8(&in);
    uint64_t v = fz_u64(&in), c;
    switch (k % 4) {
      case 0: c = top + (v % 20000); break;                /* ahead, up to a few windows */
      case 1: c = top - (v % 9000); break;                 /* behind, around the window edge */
      case 2: c = v; break;                                /* anywhere, the limit included */
      default: c = TENC_REJECT_AFTER_MESSAGES - 1 - (v % 4); break;
    }
    int fresh = c < TENC_REJECT_AFTER_MESSAGES && !model_seen(c) && (!any || c > top || top - c <= TENC_REPLAY_WINDOW);
    tenc_replay before = r;
    int chk = tenc_replay_check(&r, c);
    FZ_CHECK(memcmp(&before, &r, sizeof r) == 0);
    FZ_CHECK(chk == fresh);
    int com = tenc_replay_commit(&r, c);
    FZ_CHECK(com == fresh);
    FZ_CHECK(!tenc_replay_check(&r, c)); /* never twice */
    if (com) {
      accepted_ctr[n_accepted++] = c;
      if (!any || c > top) top = c;
      any = 1;
    }
    FZ_CHECK(r.top == top);
  }
  return 0;
}
