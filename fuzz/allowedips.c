/* allowedips.c: libFuzzer harness of the allowed-IPs table (native/allowedips.c)
 * against a plain model (a list of prefixes, longest match by scanning it).
 * Input: ops of 1 + 1 + 16 + 1 bytes: kind (insert, remove, remove peer, lookup)
 * and family, prefix length, address, peer (few peers and addresses with shared
 * prefixes, so lookups hit, overlap and collide). After every op the table's count
 * and a lookup of the op's address must match the model. */
#include "fz.h"
#include "allowedips.h"

#define MAXE 2048
typedef struct {
  int family, plen;
  uint8_t addr[16];
  uint32_t peer;
} ent;
static ent m[MAXE];
static size_t nm;

static void fz_mask(int family, const uint8_t *in, int plen, uint8_t out[16]) {
  memset(out, 0, 16);
  int n = family == 4 ? 4 : 16;
  for (int i = 0; i < n; i++) {
    int bits = plen - 8 * i;
    out[i] = bits >= 8 ? in[i] : bits > 0 ? (uint8_t)(in[i] & (0xff << (8 - bits))) : 0;
  }
}
static ent *mfind(int family, int plen, const uint8_t a[16]) {
  for (size_t i = 0; i < nm; i++)
    if (m[i].family == family && m[i].plen == plen && !memcmp(m[i].addr, a, 16)) return &m[i];
  return NULL;
}
static void mdel(ent *e) { *e = m[--nm]; }
static int32_t mlookup(int family, const uint8_t *a) {
  int best = -1;
  int32_t peer = -1;
  for (size_t i = 0; i < nm; i++) {
    if (m[i].family != family || m[i].plen <= best) continue;
    uint8_t k[16];
    fz_mask(family, a, m[i].plen, k);
    if (!memcmp(k, m[i].addr, 16)) {
      best = m[i].plen;
      peer = (int32_t)m[i].peer;
    }
  }
  return peer;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  tenc_aips *t = tenc_aips_new();
  FZ_CHECK(t);
  nm = 0;
  while (fz_left(&in) && nm < MAXE) {
    uint8_t kind = fz_u8(&in);
    int family = (kind & 4) ? 6 : 4;
    int maxlen = family == 4 ? 32 : 128;
    int plen = fz_u8(&in) % (maxlen + 1);
    uint8_t raw[16] = {0}, a[16], key[16];
    fz_bytes(&in, raw, family == 4 ? 4 : 16);
    memcpy(a, raw, 16);
    if (family == 4) memset(a + 4, 0, 12);
    uint32_t peer = fz_u8(&in) % 8;
    fz_mask(family, a, plen, key);
    switch (kind & 3) {
      case 0: {
        FZ_CHECK(tenc_aips_insert(t, family, a, plen, peer) == 0);
        ent *e = mfind(family, plen, key);
        if (e)
          e->peer = peer;
        else
          m[nm++] = (ent){family, plen, {0}, peer}, memcpy(m[nm - 1].addr, key, 16);
        break;
      }
      case 1: {
        ent *e = mfind(family, plen, key);
        int want = e && e->peer == peer;
        FZ_CHECK(tenc_aips_remove(t, family, a, plen, peer) == want);
        if (want) mdel(e);
        break;
      }
      case 2:
        tenc_aips_remove_peer(t, peer);
        for (size_t i = 0; i < nm;)
          if (m[i].peer == peer) mdel(&m[i]);
          else i++;
        break;
      default:
        break;
    }
    FZ_CHECK(tenc_aips_count(t) == nm);
    FZ_CHECK(tenc_aips_lookup(t, family, a) == mlookup(family, a));
  }
  /* every stored prefix finds its own owner (or a longer prefix's) */
  for (size_t i = 0; i < nm; i++) FZ_CHECK(tenc_aips_lookup(t, m[i].family, m[i].addr) == mlookup(m[i].family, m[i].addr));
  tenc_aips_free(t);
  return 0;
}
