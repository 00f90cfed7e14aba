/* nat.c: see nat.h. */
#include <sys/random.h>
#include "nat.h"
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "csum.h"

enum { P_TCP = 6, P_UDP = 17 };

typedef struct {
  int family, proto;
  uint32_t ihl;   /* bytes of IP header before the L4 header */
  uint8_t *src, *dst;
  uint8_t *l4;    /* TCP/UDP header, ports at [0..4) */
  uint8_t *l4sum; /* checksum field */
} view;

/* Parses an already validated inner packet. 0 when it is unfragmented TCP/UDP. */
static int parse(uint8_t *p, uint32_t len, view *v) {
  if ((p[0] >> 4) == 4) {
    v->family = 4;
    v->ihl = (p[0] & 15) * 4u;
    if ((p[6] & 0x3f) || p[7]) return -1; /* MF or fragment offset */
    v->proto = p[9];
    v->src = p + 12;
    v->dst = p + 16;
  } else {
    v->family = 6;
    v->ihl = 40;
    v->proto = p[6]; /* extension headers are left alone */
    v->src = p + 8;
    v->dst = p + 24;
  }
  if (v->proto == P_TCP) {
    if (len < v->ihl + 20) return -1;
    v->l4sum = p + v->ihl + 16;
  } else if (v->proto == P_UDP) {
    if (len < v->ihl + 8) return -1;
    v->l4sum = p + v->ihl + 6;
  } else {
    return -1;
  }
  v->l4 = p + v->ihl;
  return 0;
}

/* Rewrites one address of the packet (dst or src) and updates checksums. */
static void rewrite(uint8_t *pkt, view *v, uint8_t *field, const uint8_t *to) {
  size_t alen = v->family == 4 ? 4 : 16;
  uint8_t old[16];
  memcpy(old, field, alen);
  memcpy(field, to, alen);
  if (v->family == 4) tenc_csum_replace(pkt + 10, old, to, 4);
  uint16_t cur;
  memcpy(&cur, v->l4sum, 2);
  if (v->proto == P_UDP && v->family == 4 && cur == 0) return; /* no UDP checksum */
  tenc_csum_replace(v->l4sum, old, to, alen);
  if (v->proto == P_UDP) {
    memcpy(&cur, v->l4sum, 2);
    if (cur == 0) memset(v->l4sum, 0xff, 2);
  }
}

static uint32_t flow_hash(uint64_t seed, int family, uint8_t proto, const uint8_t *client, uint16_t cport,
                          const uint8_t *local, uint16_t lport) {
  uint64_t h = (1469598103934665603ull ^ seed ^ ((uint64_t)family << 8) ^ proto) * 1099511628211ull;
  size_t alen = family == 4 ? 4 : 16;
  for (size_t i = 0; i < alen; i++) h = (h ^ client[i]) * 1099511628211ull;
  for (size_t i = 0; i < alen; i++) h = (h ^ local[i]) * 1099511628211ull;
  h = (h ^ cport) * 1099511628211ull;
  h = (h ^ lport) * 1099511628211ull;
  return (uint32_t)(h ^ (h >> 32));
}

#define FLOWS_BYTES ((size_t)TENC_NAT_SLOTS * sizeof(tenc_nat_flow))

int tenc_nat_init(tenc_nat *n) {
  memset(n, 0, sizeof *n);
  pthread_mutex_init(&n->mu, NULL);
  /* 4 MiB of slots as anonymous mmap: zero pages that count in RSS only once
   * flows land in them, and that MADV_DONTNEED empties again (set_services). */
  void *f = mmap(NULL, FLOWS_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  n->flows = f == MAP_FAILED ? NULL : f;
  if (getrandom(&n->seed, sizeof n->seed, 0) != (ssize_t)sizeof n->seed) n->seed = (uint64_t)(uintptr_t)f ^ 0x9e3779b97f4a7c15ull;
  return n->flows ? 0 : -1;
}

void tenc_nat_destroy(tenc_nat *n) {
  free(n->services);
  if (n->flows) munmap(n->flows, FLOWS_BYTES);
  pthread_mutex_destroy(&n->mu);
  memset(n, 0, sizeof *n);
}

void tenc_nat_set_services(tenc_nat *n, tenc_nat_service *s, uint32_t count) {
  free(n->services);
  n->services = s;
  n->nservices = count;
  pthread_mutex_lock(&n->mu);
  /* Forget every flow: fresh zero pages (no RSS) instead of writing 4 MiB of zeros. */
  if (madvise(n->flows, FLOWS_BYTES, MADV_DONTNEED) != 0) memset(n->flows, 0, FLOWS_BYTES);
  pthread_mutex_unlock(&n->mu);
}

int tenc_nat_dnat(tenc_nat *n, uint8_t *pkt, uint32_t len, uint64_t now_ms) {
  if (!n->nservices) return 0;
  view v;
  if (parse(pkt, len, &v) < 0) return 0;
  size_t alen = v.family == 4 ? 4 : 16;
  uint16_t dport_n, sport_n;
  memcpy(&sport_n, v.l4, 2);
  memcpy(&dport_n, v.l4 + 2, 2);
  uint16_t dport = (uint16_t)((dport_n >> 8) | (dport_n << 8));
  for (uint32_t i = 0; i < n->nservices; i++) {
    tenc_nat_service *s = &n->services[i];
    if (s->family != v.family || memcmp(s->vip, v.dst, alen) != 0) continue;
    int ok = s->nports == 0;
    for (uint16_t k = 0; !ok && k < s->nports; k++)
      ok = s->ports[k].proto == v.proto && s->ports[k].port == dport;
    if (!ok) continue;
    /* Remember the flow keyed by what the reply will carry. */
    uint32_t b = (flow_hash(n->seed, v.family, (uint8_t)v.proto, v.src, sport_n, s->local, dport_n) %
                  (TENC_NAT_SLOTS / TENC_NAT_WAYS)) * TENC_NAT_WAYS;
    pthread_mutex_lock(&n->mu);
    tenc_nat_flow *victim = NULL;
    for (int w = 0; w < TENC_NAT_WAYS; w++) {
      tenc_nat_flow *f = &n->flows[b + w];
      if (f->used && f->family == v.family && f->proto == v.proto && f->cport == sport_n &&
          f->lport == dport_n && memcmp(f->client, v.src, alen) == 0 && memcmp(f->local, s->local, alen) == 0) {
        victim = f;
        break;
      }
      if (!victim || !f->used || (victim->used && f->last_ms < victim->last_ms)) victim = f;
    }
    victim->used = 1;
    victim->family = (uint8_t)v.family;
    victim->proto = (uint8_t)v.proto;
    memcpy(victim->client, v.src, alen);
    memcpy(victim->local, s->local, alen);
    memcpy(victim->vip, s->vip, alen);
    victim->cport = sport_n;
    victim->lport = dport_n;
    victim->last_ms = now_ms;
    pthread_mutex_unlock(&n->mu);
    rewrite(pkt, &v, v.dst, s->local);
    return 1;
  }
  return 0;
}

int tenc_nat_unsnat(tenc_nat *n, uint8_t *pkt, uint32_t len) {
  if (!n->nservices) return 0;
  view v;
  if (parse(pkt, len, &v) < 0) return 0;
  size_t alen = v.family == 4 ? 4 : 16;
  int local = 0;
  for (uint32_t i = 0; i < n->nservices && !local; i++)
    local = n->services[i].family == v.family && memcmp(n->services[i].local, v.src, alen) == 0;
  if (!local) return 0;
  uint16_t sport_n, dport_n;
  memcpy(&sport_n, v.l4, 2);
  memcpy(&dport_n, v.l4 + 2, 2);
  uint32_t b = (flow_hash(n->seed, v.family, (uint8_t)v.proto, v.dst, dport_n, v.src, sport_n) %
                (TENC_NAT_SLOTS / TENC_NAT_WAYS)) * TENC_NAT_WAYS;
  uint8_t vip[16];
  int found = 0;
  pthread_mutex_lock(&n->mu);
  for (int w = 0; w < TENC_NAT_WAYS; w++) {
    tenc_nat_flow *f = &n->flows[b + w];
    if (f->used && f->family == v.family && f->proto == v.proto && f->cport == dport_n &&
        f->lport == sport_n && memcmp(f->client, v.dst, alen) == 0 && memcmp(f->local, v.src, alen) == 0) {
      memcpy(vip, f->vip, alen);
      found = 1;
      break;
    }
  }
  pthread_mutex_unlock(&n->mu);
  if (!found) return 0;
  rewrite(pkt, &v, v.src, vip);
  return 1;
}
