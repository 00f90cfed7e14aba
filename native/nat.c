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
  n->mask = TENC_NAT_SLOTS / TENC_NAT_WAYS - 1;
  /* 4 MiB of slots as anonymous mmap: zero pages that count in RSS only once
   * flows land in them, and that MADV_DONTNEED empties again (forget_all). */
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

/* Forgets every flow (mu held): fresh zero pages (no RSS) instead of writing 4 MiB
 * of zeros. */
static void forget_all(tenc_nat *n) {
  if (madvise(n->flows, FLOWS_BYTES, MADV_DONTNEED) != 0) memset(n->flows, 0, FLOWS_BYTES);
  n->nflows = 0;
}

/* Does the service DNAT this protocol and port (host order): among its ports, or it
 * has none (all of them)? */
static int service_has_port(const tenc_nat_service *s, uint8_t proto, uint16_t port) {
  if (s->nports == 0) return 1;
  for (uint16_t k = 0; k < s->nports; k++)
    if (s->ports[k].proto == proto && s->ports[k].port == port) return 1;
  return 0;
}

/* Does one of the services `s` still DNAT this flow: same family, VIP and local
 * address, and its protocol and port among the service's ports (or all of them)? */
static int flow_kept(const tenc_nat_service *s, uint32_t count, const tenc_nat_flow *f) {
  size_t alen = f->family == 4 ? 4 : 16;
  uint16_t port = (uint16_t)((f->lport >> 8) | (f->lport << 8));
  for (uint32_t i = 0; i < count; i++) {
    if (s[i].family != f->family || memcmp(s[i].vip, f->vip, alen) != 0 || memcmp(s[i].local, f->local, alen) != 0)
      continue;
    if (service_has_port(&s[i], f->proto, port)) return 1;
  }
  return 0;
}

/* Is every service of `old` in `s` as it was (family, VIP, local address, ports in
 * order)? Then no flow needs forgetting: each flow is of a service of the old list
 * (set_services forgot the others). The common updates (the same list again, a
 * service added) skip the walk over the table this way. */
static int all_kept(const tenc_nat_service *old, uint32_t nold, const tenc_nat_service *s, uint32_t count) {
  for (uint32_t i = 0; i < nold; i++) {
    const tenc_nat_service *o = &old[i];
    size_t alen = o->family == 4 ? 4 : 16;
    int same = 0;
    for (uint32_t j = 0; j < count && !same; j++) {
      same = s[j].family == o->family && !memcmp(s[j].vip, o->vip, alen) && !memcmp(s[j].local, o->local, alen) &&
             s[j].nports == o->nports;
      for (uint16_t k = 0; same && k < o->nports; k++)
        same = s[j].ports[k].proto == o->ports[k].proto && s[j].ports[k].port == o->ports[k].port;
    }
    if (!same) return 0;
  }
  return 1;
}

void tenc_nat_set_services(tenc_nat *n, tenc_nat_service *s, uint32_t count) {
  int keep_all = all_kept(n->services, n->nservices, s, count);
  free(n->services);
  n->services = s;
  n->nservices = count;
  pthread_mutex_lock(&n->mu);
  /* The agent sends the whole list whenever any service of the pod changes:
   * forgetting every flow then would break the connections of all the others
   * (their next reply leaves un-SNATed and the client resets). So only the flows
   * no service DNATs any more are forgotten; with no service left, all of them.
   * The walk runs under the engine's write lock: about a millisecond over a full
   * table of a few services (4 MiB read), more with hundreds of them. */
  if (!count) {
    forget_all(n);
  } else if (n->nflows && !keep_all) {
    for (uint32_t i = 0; i < TENC_NAT_SLOTS; i++) {
      tenc_nat_flow *f = &n->flows[i];
      if (f->used && !flow_kept(s, count, f)) {
        memset(f, 0, sizeof *f);
        n->nflows--;
      }
    }
    if (!n->nflows) forget_all(n); /* give the pages back */
  }
  pthread_mutex_unlock(&n->mu);
}

/* TCP flags of the packet (0 for UDP): FIN, SYN and RST decide a flow's timeout. */
enum { TCP_FIN = 0x01, TCP_SYN = 0x02, TCP_RST = 0x04 };
static uint8_t tcp_flags(const view *v) { return v->proto == P_TCP ? v->l4[13] : 0; }

/* A packet of the flow went by at `now` (`reply`: from the local side): it is live
 * again, and a TCP FIN or RST shortens its timeout until a SYN starts a connection on
 * the tuple again. A flow is assured once it is answered (UDP: a reply; TCP: a client
 * packet after a reply, the handshake's ACK); a client's SYN starts over. Only assured
 * flows are safe from a new flow (conntrack's early drop): a peer's unanswered SYNs or
 * datagrams cannot fill the table against everyone else. */
static void flow_touch(tenc_nat_flow *f, uint8_t flags, uint64_t now, int reply) {
  if (now > f->last_ms) f->last_ms = now;
  if (flags & (TCP_FIN | TCP_RST)) f->closing = 1;
  else if ((flags & TCP_SYN) && !reply) f->closing = f->replied = f->assured = 0;
  if (reply) {
    f->replied = 1;
    if (f->proto == P_UDP) f->assured = 1;
  } else if (f->replied) {
    f->assured = 1;
  }
}

/* Was a packet of the flow seen within its idle timeout (nat.h)? `now` may be a
 * little behind last_ms (the other thread's batch started later): live. */
static int flow_live(const tenc_nat_flow *f, uint64_t now) {
  uint64_t idle = f->proto == P_UDP ? TENC_NAT_UDP_IDLE_MS : f->closing ? TENC_NAT_TCP_CLOSING_MS : TENC_NAT_TCP_IDLE_MS;
  return now <= f->last_ms || now - f->last_ms < idle;
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
    if (s->family != v.family || memcmp(s->vip, v.dst, alen) != 0 || !service_has_port(s, (uint8_t)v.proto, dport)) continue;
    /* Remember the flow keyed by what the reply will carry. */
    uint32_t b = (flow_hash(n->seed, v.family, (uint8_t)v.proto, v.src, sport_n, s->local, dport_n) & n->mask) *
                 TENC_NAT_WAYS;
    pthread_mutex_lock(&n->mu);
    now_ms += n->skew_ms;
    tenc_nat_flow *hit = NULL, *unused = NULL, *expired = NULL, *early = NULL;
    for (int w = 0; w < TENC_NAT_WAYS; w++) {
      tenc_nat_flow *f = &n->flows[b + w];
      if (!f->used) {
        if (!unused) unused = f;
      } else if (f->family == v.family && f->proto == v.proto && f->cport == sport_n && f->lport == dport_n &&
                 memcmp(f->client, v.src, alen) == 0 && memcmp(f->local, s->local, alen) == 0) {
        hit = f;
        break;
      } else if (!flow_live(f, now_ms)) {
        if (!expired || f->last_ms < expired->last_ms) expired = f;
      } else if (!f->assured && (!early || f->last_ms < early->last_ms)) {
        early = f; /* live but never answered: the least recently used gives way when nothing else does */
      }
    }
    tenc_nat_flow *to = hit ? hit : unused ? unused : expired ? expired : early;
    int refused = !to ? TENC_NAT_FULL : hit && memcmp(hit->vip, s->vip, alen) != 0 && flow_live(hit, now_ms) ? TENC_NAT_CLASH : 0;
    if (refused) {
      pthread_mutex_unlock(&n->mu);
      return refused;
    }
    if (to != hit) { /* a new flow (an unused way, an expired flow's, or an unassured one's) */
      if (to == unused) n->nflows++;
      memset(to, 0, sizeof *to);
      to->used = 1;
      to->family = (uint8_t)v.family;
      to->proto = (uint8_t)v.proto;
      memcpy(to->client, v.src, alen);
      memcpy(to->local, s->local, alen);
      to->cport = sport_n;
      to->lport = dport_n;
    }
    memcpy(to->vip, s->vip, alen); /* an expired flow of another VIP may be taken over */
    flow_touch(to, tcp_flags(&v), now_ms, 0);
    pthread_mutex_unlock(&n->mu);
    rewrite(pkt, &v, v.dst, s->local);
    return 1;
  }
  return 0;
}

int tenc_nat_unsnat(tenc_nat *n, uint8_t *pkt, uint32_t len, uint64_t now_ms) {
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
  uint32_t b = (flow_hash(n->seed, v.family, (uint8_t)v.proto, v.dst, dport_n, v.src, sport_n) & n->mask) * TENC_NAT_WAYS;
  uint8_t vip[16];
  int found = 0;
  pthread_mutex_lock(&n->mu);
  now_ms += n->skew_ms;
  for (int w = 0; w < TENC_NAT_WAYS; w++) {
    tenc_nat_flow *f = &n->flows[b + w];
    if (f->used && f->family == v.family && f->proto == v.proto && f->cport == dport_n &&
        f->lport == sport_n && memcmp(f->client, v.dst, alen) == 0 && memcmp(f->local, v.src, alen) == 0) {
      memcpy(vip, f->vip, alen);
      flow_touch(f, tcp_flags(&v), now_ms, 1); /* replies keep a flow live too (a server that pushes) */
      found = 1;
      break;
    }
  }
  pthread_mutex_unlock(&n->mu);
  if (!found) return 0;
  rewrite(pkt, &v, v.src, vip);
  return 1;
}

/* ---- test hooks (nat.h) ------------------------------------------------------ */

int tenc_nat_test_buckets(tenc_nat *n, uint32_t buckets) {
  if (!buckets || buckets > TENC_NAT_SLOTS / TENC_NAT_WAYS || (buckets & (buckets - 1))) return -1;
  pthread_mutex_lock(&n->mu);
  forget_all(n); /* the flows' buckets move with the mask */
  n->mask = buckets - 1;
  pthread_mutex_unlock(&n->mu);
  return 0;
}

void tenc_nat_test_age(tenc_nat *n, uint64_t ms) {
  /* The table's clock runs ms ahead rather than every flow going back: a flow older
   * than the machine's uptime would wrap (the tests age by 5 min and more, and CI may
   * run them minutes after boot). */
  pthread_mutex_lock(&n->mu);
  n->skew_ms += ms;
  pthread_mutex_unlock(&n->mu);
}
