/* allowedips.c: see allowedips.h. */
#include "allowedips.h"
#include <stdlib.h>
#include <string.h>

enum { SLOT_EMPTY = 0, SLOT_USED = 1, SLOT_DEAD = 2 };

typedef struct {
  uint8_t state, family, plen, pad;
  uint32_t peer;
  uint8_t addr[16];
} slot;

struct tenc_aips {
  slot *slots;
  uint32_t cap, used, dead;
  uint32_t count4[33], count6[129];
  uint8_t lens4[33], lens6[129]; /* descending prefix lengths in use */
  uint8_t nlens4, nlens6;
};

static void mask_addr(int family, const uint8_t *in, int plen, uint8_t out[16]) {
  int n = family == 4 ? 4 : 16;
  memset(out, 0, 16);
  for (int i = 0; i < n; i++) {
    int bits = plen - 8 * i;
    if (bits >= 8)
      out[i] = in[i];
    else if (bits > 0)
      out[i] = in[i] & (uint8_t)(0xff << (8 - bits));
  }
}

static uint32_t hash_key(int family, int plen, const uint8_t a[16]) {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ ((uint64_t)family << 8 | (uint64_t)plen);
  uint64_t w[2];
  memcpy(w, a, 16);
  h ^= w[0];
  h *= 0xff51afd7ed558ccdull;
  h ^= w[1] + (h >> 29);
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 32;
  return (uint32_t)h;
}

static slot *find(const tenc_aips *t, int family, int plen, const uint8_t a[16]) {
  uint32_t m = t->cap - 1;
  for (uint32_t i = hash_key(family, plen, a) & m, n = 0; n < t->cap; i = (i + 1) & m, n++) {
    slot *s = &t->slots[i];
    if (s->state == SLOT_EMPTY) return NULL;
    if (s->state == SLOT_USED && s->family == family && s->plen == plen && memcmp(s->addr, a, 16) == 0)
      return s;
  }
  return NULL;
}

static void rebuild_lens(tenc_aips *t) {
  t->nlens4 = t->nlens6 = 0;
  for (int l = 32; l >= 0; l--)
    if (t->count4[l]) t->lens4[t->nlens4++] = (uint8_t)l;
  for (int l = 128; l >= 0; l--)
    if (t->count6[l]) t->lens6[t->nlens6++] = (uint8_t)l;
}

static int resize(tenc_aips *t, uint32_t cap) {
  slot *ns = calloc(cap, sizeof(slot));
  if (!ns) return -1;
  slot *old = t->slots;
  uint32_t ocap = t->cap;
  t->slots = ns;
  t->cap = cap;
  t->used = t->dead = 0;
  for (uint32_t i = 0; i < ocap; i++) {
    if (old[i].state != SLOT_USED) continue;
    uint32_t m = cap - 1;
    uint32_t j = hash_key(old[i].family, old[i].plen, old[i].addr) & m;
    while (ns[j].state == SLOT_USED) j = (j + 1) & m;
    ns[j] = old[i];
    t->used++;
  }
  free(old);
  return 0;
}

tenc_aips *tenc_aips_new(void) {
  tenc_aips *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  if (resize(t, 64) < 0) {
    free(t);
    return NULL;
  }
  return t;
}

void tenc_aips_free(tenc_aips *t) {
  if (!t) return;
  free(t->slots);
  free(t);
}

int tenc_aips_insert(tenc_aips *t, int family, const uint8_t *addr, int plen, uint32_t peer) {
  uint8_t a[16];
  mask_addr(family, addr, plen, a);
  slot *s = find(t, family, plen, a);
  if (s) {
    s->peer = peer;
    return 0;
  }
  if ((t->used + t->dead + 1) * 2 > t->cap) {
    uint32_t nc = t->cap;
    while ((t->used + 1) * 4 > nc) nc *= 2;
    if (resize(t, nc) < 0) return -1;
  }
  uint32_t m = t->cap - 1;
  uint32_t i = hash_key(family, plen, a) & m;
  while (t->slots[i].state == SLOT_USED) i = (i + 1) & m;
  if (t->slots[i].state == SLOT_DEAD) t->dead--;
  s = &t->slots[i];
  s->state = SLOT_USED;
  s->family = (uint8_t)family;
  s->plen = (uint8_t)plen;
  s->peer = peer;
  memcpy(s->addr, a, 16);
  t->used++;
  if (family == 4 ? t->count4[plen]++ == 0 : t->count6[plen]++ == 0) rebuild_lens(t);
  return 0;
}

static void kill(tenc_aips *t, slot *s) {
  s->state = SLOT_DEAD;
  t->used--;
  t->dead++;
  if (s->family == 4 ? --t->count4[s->plen] == 0 : --t->count6[s->plen] == 0) rebuild_lens(t);
}

int tenc_aips_remove(tenc_aips *t, int family, const uint8_t *addr, int plen, uint32_t peer) {
  uint8_t a[16];
  mask_addr(family, addr, plen, a);
  slot *s = find(t, family, plen, a);
  if (!s || s->peer != peer) return 0;
  kill(t, s);
  return 1;
}

void tenc_aips_remove_peer(tenc_aips *t, uint32_t peer) {
  for (uint32_t i = 0; i < t->cap; i++)
    if (t->slots[i].state == SLOT_USED && t->slots[i].peer == peer) kill(t, &t->slots[i]);
}

int32_t tenc_aips_lookup(const tenc_aips *t, int family, const uint8_t *addr) {
  const uint8_t *lens = family == 4 ? t->lens4 : t->lens6;
  int n = family == 4 ? t->nlens4 : t->nlens6;
  uint8_t a[16];
  for (int k = 0; k < n; k++) {
    mask_addr(family, addr, lens[k], a);
    const slot *s = find(t, family, lens[k], a);
    if (s) return (int32_t)s->peer;
  }
  return -1;
}

uint32_t tenc_aips_count(const tenc_aips *t) { return t->used; }
