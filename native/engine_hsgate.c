/* engine_hsgate.c: receive stage 2 for handshake messages (types 1-3), between
 * engine_rx.c's type and length gate and the handshake event to the control plane.
 * Before a handshake message costs the control plane anything: mac1 must be made
 * with our public key (types 1 and 2; a cookie reply has none), and under load each
 * source address gets TENC_RL_PER_SECOND messages a second (burst TENC_RL_BURST).
 * The control plane still decides on mac2 and answers with cookie replies under
 * load (src/device/device.ts); this gate keeps what reaches it small and fair.
 * Runs on the RX pipeline (rx_mu held); its state is in tenc_engine (engine.h). */
#include "engine_internal.h"
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>
#include "blake2s.h"

static int mac1_ok(const tenc_engine *e, const uint8_t *m, uint32_t len) {
  uint8_t want[16];
  tenc_b2s_mac16(e->mac1_key, m, len - 32, want);
  const uint8_t *got = m + len - 32;
  uint8_t d = 0;
  for (int i = 0; i < 16; i++) d |= (uint8_t)(want[i] ^ got[i]);
  return d == 0;
}

static uint32_t rl_hash(const tenc_engine *e, const uint8_t key[9]) {
  uint64_t a = e->rl_seed[0], b = e->rl_seed[1];
  uint64_t k0, k1 = 0;
  memcpy(&k0, key, 8);
  k1 = key[8];
  a ^= k0;
  a *= 0x9e3779b97f4a7c15ull;
  a ^= a >> 29;
  b ^= k1 + a;
  b *= 0xbf58476d1ce4e5b9ull;
  b ^= b >> 31;
  a += b;
  a *= 0x94d049bb133111ebull;
  a ^= a >> 32;
  return (uint32_t)a;
}

/* Token bucket of this source (IPv4 address or IPv6 /64). Returns 1 allowed. */
static int rl_allow(tenc_engine *e, const struct sockaddr_in6 *from, uint64_t now) {
  uint8_t key[9] = {0};
  const uint8_t *a = from->sin6_addr.s6_addr;
  if (IN6_IS_ADDR_V4MAPPED(&from->sin6_addr)) {
    key[0] = 4;
    memcpy(key + 1, a + 12, 4);
  } else {
    key[0] = 6;
    memcpy(key + 1, a, 8);
  }
  const uint64_t cost = 1000u / TENC_RL_PER_SECOND, full = cost * TENC_RL_BURST;
  uint32_t h = rl_hash(e, key), m = TENC_RL_SLOTS - 1;
  tenc_rl_slot *free_slot = NULL;
  for (uint32_t i = 0; i < TENC_RL_PROBE; i++) {
    tenc_rl_slot *s = &e->rl[(h + i) & m];
    if (s->used && memcmp(s->key, key, sizeof key) == 0) {
      uint64_t t = s->tokens + (now - s->last_ms);
      s->tokens = t > full ? full : t;
      s->last_ms = now;
      if (s->tokens < cost) return 0;
      s->tokens -= cost;
      return 1;
    }
    /* a slot whose bucket has refilled holds nothing a fresh one would not */
    if (!free_slot && (!s->used || now - s->last_ms >= full)) free_slot = s;
  }
  if (!free_slot) return 0; /* every slot on the probe path is a source still limited */
  if (!free_slot->used) cadd(&e->ctr[TENC_G_RATELIMIT_SOURCES], 1);
  memcpy(free_slot->key, key, sizeof key);
  free_slot->used = 1;
  free_slot->last_ms = now;
  free_slot->tokens = full - cost;
  return 1;
}

/* The gate: engine_internal.h. */
int tenc_hs_gate(tenc_engine *e, const uint8_t *m, uint32_t len, const struct sockaddr_in6 *from, uint64_t now) {
  if (m[0] != 3 && atomic_load_explicit(&e->has_mac1_key, memory_order_acquire) && !mac1_ok(e, m, len)) {
    drop(e, -1, TENC_D_BAD_MAC1, 1);
    return 0;
  }
  if (now - e->hs_window_ms >= 1000) {
    e->hs_window_ms = now;
    e->hs_window_n = 0;
  }
  /* load is what costs the control plane: initiations and responses (mac1 checked
   * above), not cookie replies, which anyone can send (and src/device/device.ts
   * does not count either) */
  if (m[0] != 3) e->hs_window_n++;
  pthread_mutex_lock(&e->ev_mu);
  uint32_t waiting = e->ev_hs;
  pthread_mutex_unlock(&e->ev_mu);
  if (e->hs_window_n > TENC_HS_LOAD_PER_SECOND || waiting >= TENC_HS_QUEUE_MAX / 8) {
    if (now >= e->under_load_until) cadd(&e->ctr[TENC_G_UNDER_LOAD], 1);
    e->under_load_until = now + TENC_UNDER_LOAD_MS;
  }
  if (now < e->under_load_until && !rl_allow(e, from, now)) {
    drop(e, -1, TENC_D_HANDSHAKE_RATELIMITED, 1);
    return 0;
  }
  return 1;
}

void tenc_engine_set_public_key(tenc_engine *e, const uint8_t pub[32]) {
  static const char label[] = "mac1----";
  pthread_mutex_lock(&e->rx_mu); /* the RX pipeline reads the key under it */
  tenc_b2s_hash2((const uint8_t *)label, 8, pub, 32, e->mac1_key);
  atomic_store_explicit(&e->has_mac1_key, 1, memory_order_release);
  pthread_mutex_unlock(&e->rx_mu);
}


int tenc_hs_gate_init(tenc_engine *e) {
  e->rl = calloc(TENC_RL_SLOTS, sizeof *e->rl);
  if (!e->rl) return -1;
  if (getrandom(e->rl_seed, sizeof e->rl_seed, 0) != sizeof e->rl_seed) /* the hash key only spreads sources */
    e->rl_seed[0] = tenc_now_ns() ^ (uintptr_t)e, e->rl_seed[1] = (uint64_t)getpid() << 32 ^ tenc_now_ns();
  return 0;
}

void tenc_hs_gate_free(tenc_engine *e) {
  free(e->rl);
  e->rl = NULL;
  explicit_bzero(e->mac1_key, sizeof e->mac1_key);
}
