/* engine.c: the native data plane's pipelines and control calls; see engine.h for
 * the stages, locking and counters. N-API glue lives in engine_js.c. */
#include "engine.h"
#include <arpa/inet.h>
#include <errno.h>
#include <linux/virtio_net.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include "blake2s.h"
#include "offload.h"
#include "util.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define MSG_DATA 4
#define MSG_DATA_MIN 32 /* header 16 + tag 16 */
#define TX_ARENA (4u << 20)
#define TX_MAX_RECS 2048
#define TX_READ_ROOM (160u << 10) /* arena room needed before one more TUN read */
#define GSO_MAX_SEGS 64
#define GSO_MAX_BYTES 65000
#define RX_BATCH 64
#define RX_SLOT (65536u + 64u)
#define VNET_LEN ((uint32_t)sizeof(struct virtio_net_hdr))

#define KP_DELETED ((tenc_keypair *)1)

/* ---- counters ---------------------------------------------------------- */

size_t tenc_engine_counters_len(void) { return TENC_GLOBAL_SLOTS + (size_t)TENC_MAX_PEERS * TENC_PEER_SLOTS; }

static inline uint64_t *pctr(tenc_engine *e, uint32_t peer) {
  return e->ctr + TENC_GLOBAL_SLOTS + (size_t)peer * TENC_PEER_SLOTS;
}
static inline void cadd(uint64_t *c, uint64_t v) { __atomic_fetch_add(c, v, __ATOMIC_RELAXED); }
static inline void cset(uint64_t *c, uint64_t v) { __atomic_store_n(c, v, __ATOMIC_RELAXED); }

/* Counts a drop globally and, when attributable (peer >= 0), for the peer. */
static void drop(tenc_engine *e, int64_t peer, enum tenc_drop why, uint64_t n) {
  cadd(&e->ctr[why], n);
  if (peer >= 0) cadd(&pctr(e, (uint32_t)peer)[TENC_P_DROPS + why], n);
}

/* ---- events ------------------------------------------------------------ */

/* Appends an event (ev_mu held by the caller). Returns 0, -1 when full. */
static int ev_push_locked(tenc_engine *e, const tenc_event *ev) {
  if (e->ev_len == e->ev_cap) {
    uint32_t nc = e->ev_cap ? e->ev_cap * 2 : 64;
    if (nc > 65536) return -1;
    tenc_event *n = realloc(e->ev, nc * sizeof *n);
    if (!n) return -1;
    e->ev = n;
    e->ev_cap = nc;
  }
  e->ev[e->ev_len++] = *ev;
  return 0;
}

static void ev_push(tenc_engine *e, uint8_t type, uint32_t peer, uint32_t local_index,
                    const struct sockaddr_in6 *ep) {
  tenc_event ev = {.type = type, .peer = peer, .local_index = local_index};
  if (ep) ev.ep = *ep;
  pthread_mutex_lock(&e->ev_mu);
  ev_push_locked(e, &ev);
  pthread_mutex_unlock(&e->ev_mu);
}

/* Handshake message: bounded by TENC_HS_QUEUE_MAX pending. */
static void ev_push_handshake(tenc_engine *e, const uint8_t *data, uint32_t len, const struct sockaddr_in6 *from) {
  pthread_mutex_lock(&e->ev_mu);
  int ok = e->ev_hs < TENC_HS_QUEUE_MAX;
  uint8_t *copy = ok ? malloc(len) : NULL;
  if (copy) {
    memcpy(copy, data, len);
    tenc_event ev = {.type = TENC_EV_HANDSHAKE, .ep = *from, .data = copy, .len = len};
    if (ev_push_locked(e, &ev) == 0)
      e->ev_hs++;
    else {
      free(copy);
      copy = NULL;
    }
  }
  pthread_mutex_unlock(&e->ev_mu);
  if (!copy) drop(e, -1, TENC_D_HANDSHAKE_QUEUE_FULL, 1);
  else cadd(&e->ctr[TENC_G_HANDSHAKE_RX], 1);
}

/* Once per batch: wakes the node thread if there is something new. */
static void ev_flush(tenc_engine *e) {
  pthread_mutex_lock(&e->ev_mu);
  int sig = e->ev_len > 0 && !e->ev_signaled;
  if (sig) e->ev_signaled = 1;
  pthread_mutex_unlock(&e->ev_mu);
  if (sig && e->signal) e->signal(e);
}

/* A route miss: the destination (in ep, IPv4 mapped) and, when it fits, a copy of
 * the packet. Bounded by TENC_MISS_QUEUE_MAX pending; beyond that it is not reported. */
static void ev_push_miss(tenc_engine *e, int v, const uint8_t *dst, const uint8_t *pkt, uint32_t len) {
  tenc_event ev = {.type = TENC_EV_ROUTE_MISS};
  ev.ep.sin6_family = AF_INET6;
  if (v == 4) {
    ev.ep.sin6_addr.s6_addr[10] = ev.ep.sin6_addr.s6_addr[11] = 0xff;
    memcpy(&ev.ep.sin6_addr.s6_addr[12], dst, 4);
  } else {
    memcpy(&ev.ep.sin6_addr, dst, 16);
  }
  pthread_mutex_lock(&e->ev_mu);
  if (e->ev_miss < TENC_MISS_QUEUE_MAX) {
    if (len <= TENC_MISS_COPY_MAX && (ev.data = malloc(len ? len : 1)) != NULL) {
      memcpy(ev.data, pkt, len);
      ev.len = len;
    }
    if (ev_push_locked(e, &ev) == 0) {
      e->ev_miss++;
    } else if (ev.data) {
      explicit_bzero(ev.data, ev.len); /* the pod's plaintext */
      free(ev.data);
    }
  }
  pthread_mutex_unlock(&e->ev_mu);
}

void tenc_engine_report_misses(tenc_engine *e, int on) { atomic_store(&e->report_misses, on ? 1 : 0); }

tenc_event *tenc_engine_take_events(tenc_engine *e, uint32_t *n) {
  pthread_mutex_lock(&e->ev_mu);
  tenc_event *ev = e->ev;
  *n = e->ev_len;
  e->ev = NULL;
  e->ev_len = e->ev_cap = e->ev_hs = e->ev_miss = 0;
  e->ev_signaled = 0;
  pthread_mutex_unlock(&e->ev_mu);
  return ev;
}

/* ---- keypair index (local index -> keypair), open addressing ------------ */

static inline uint32_t khash(uint32_t k) {
  k ^= k >> 16;
  k *= 0x7feb352d;
  k ^= k >> 15;
  k *= 0x846ca68b;
  k ^= k >> 16;
  return k;
}

static tenc_keypair *kmap_get(const tenc_engine *e, uint32_t key) {
  uint32_t m = e->kcap - 1;
  for (uint32_t i = khash(key) & m, n = 0; n < e->kcap; i = (i + 1) & m, n++) {
    tenc_kslot *s = &e->kmap[i];
    if (!s->kp) return NULL;
    if (s->kp != KP_DELETED && s->key == key) return s->kp;
  }
  return NULL;
}

static int kmap_rehash(tenc_engine *e, uint32_t cap) {
  tenc_kslot *ns = calloc(cap, sizeof *ns);
  if (!ns) return -ENOMEM;
  for (uint32_t i = 0; i < e->kcap; i++) {
    tenc_kslot *s = &e->kmap[i];
    if (!s->kp || s->kp == KP_DELETED) continue;
    uint32_t j = khash(s->key) & (cap - 1);
    while (ns[j].kp) j = (j + 1) & (cap - 1);
    ns[j] = *s;
  }
  free(e->kmap);
  e->kmap = ns;
  e->kcap = cap;
  e->kdead = 0;
  return 0;
}

static int kmap_put(tenc_engine *e, tenc_keypair *kp) {
  if ((e->kused + e->kdead + 1) * 2 > e->kcap) {
    uint32_t nc = e->kcap;
    while ((e->kused + 1) * 4 > nc) nc *= 2;
    int r = kmap_rehash(e, nc);
    if (r) return r;
  }
  uint32_t m = e->kcap - 1, i = khash(kp->local_index) & m;
  while (e->kmap[i].kp && e->kmap[i].kp != KP_DELETED) i = (i + 1) & m;
  if (e->kmap[i].kp == KP_DELETED) e->kdead--;
  e->kmap[i].key = kp->local_index;
  e->kmap[i].kp = kp;
  e->kused++;
  return 0;
}

static void kmap_del(tenc_engine *e, uint32_t key) {
  uint32_t m = e->kcap - 1;
  for (uint32_t i = khash(key) & m, n = 0; n < e->kcap; i = (i + 1) & m, n++) {
    tenc_kslot *s = &e->kmap[i];
    if (!s->kp) return;
    if (s->kp != KP_DELETED && s->key == key) {
      s->kp = KP_DELETED;
      e->kused--;
      e->kdead++;
      return;
    }
  }
}

/* ---- wire helpers -------------------------------------------------------- */

static inline uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }
static inline void put_le32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}
static inline uint32_t pad16(uint32_t n) { return (n + 15u) & ~15u; }

/* Room a plaintext of `len` bytes needs for sealing in place. */
static inline uint32_t sealed_room(uint32_t len) { return TENC_HEADROOM + pad16(len) + TENC_AEAD_TAG_LEN; }

/* Seals buf[16 .. 16+len) in place as a transport message (whitepaper §5.4.6):
 * type 4, receiver, counter, then the plaintext zero-padded to a multiple of 16
 * and its tag. Returns the message length, or 0 on a cipher failure. */
static void seal_header(const tenc_keypair *kp, uint64_t ctr, uint8_t *buf) {
  buf[0] = MSG_DATA;
  buf[1] = buf[2] = buf[3] = 0;
  put_le32(buf + 4, kp->remote_index);
  put_le32(buf + 8, (uint32_t)ctr);
  put_le32(buf + 12, (uint32_t)(ctr >> 32));
}

static uint32_t seal(tenc_aead *a, const tenc_keypair *kp, uint64_t ctr, uint8_t *buf, uint32_t len) {
  uint32_t plen = pad16(len);
  memset(buf + TENC_HEADROOM + len, 0, plen - len);
  seal_header(kp, ctr, buf);
  uint8_t nonce[TENC_AEAD_NONCE_LEN];
  tenc_aead_wg_nonce(ctr, nonce);
  if (tenc_aead_seal(a, kp->send_key, nonce, NULL, 0, buf + TENC_HEADROOM, plen, buf + TENC_HEADROOM + plen) != 0)
    return 0;
  return TENC_HEADROOM + plen + TENC_AEAD_TAG_LEN;
}

/* The same message when the plaintext is buf[16 .. 16+hlen) followed by `body`
 * (len - hlen bytes in the super-packet: a TSO/USO segment's payload): the
 * ciphertext lands in buf exactly as seal() would leave it, without first copying
 * the body next to the header (scatter seal). The header is put right in front of
 * the body inside the super-packet instead (hlen bytes over the end of the
 * previous segment's payload, already sealed: records are sealed in order), so the
 * cipher sees one contiguous input: one keystream run, as for a copied segment. */
static uint32_t seal_scatter(tenc_aead *a, const tenc_keypair *kp, uint64_t ctr, uint8_t *buf, uint32_t hlen,
                             const uint8_t *body, uint32_t len) {
  uint32_t plen = pad16(len);
  uint8_t *src = (uint8_t *)body - hlen;
  memcpy(src, buf + TENC_HEADROOM, hlen);
  seal_header(kp, ctr, buf);
  uint8_t nonce[TENC_AEAD_NONCE_LEN];
  tenc_aead_wg_nonce(ctr, nonce);
  if (tenc_aead_seal_parts(a, kp->send_key, nonce, src, len, NULL, 0, plen - len, buf + TENC_HEADROOM) != 0)
    return 0;
  return TENC_HEADROOM + plen + TENC_AEAD_TAG_LEN;
}

/* REJECT_AFTER_TIME (whitepaper §6.1): a keypair this old seals and opens nothing,
 * whatever the control plane still holds. `now` is the batch's tenc_now_ms(). */
static inline int kp_expired(const tenc_keypair *kp, uint64_t now) {
  return now - kp->birth_ms >= TENC_REJECT_AFTER_TIME_MS && now >= kp->birth_ms;
}

/* Takes the next send counter; drops/flags per REJECT/REKEY_AFTER_MESSAGES.
 * Returns 0 and the counter, or -1 when exhausted. */
static int next_counter(tenc_engine *e, tenc_keypair *kp, uint64_t *ctr) {
  uint64_t c = atomic_fetch_add_explicit(&kp->send_counter, 1, memory_order_relaxed);
  if (c >= TENC_REKEY_AFTER_MESSAGES && !atomic_exchange(&kp->rekey_signaled, 1))
    ev_push(e, TENC_EV_REKEY_NEEDED, kp->peer->id, kp->local_index, NULL);
  if (c >= TENC_REJECT_AFTER_MESSAGES) {
    atomic_store(&kp->send_counter, TENC_REJECT_AFTER_MESSAGES); /* never wraps */
    drop(e, kp->peer->id, TENC_D_COUNTER_EXHAUSTED, 1);
    return -1;
  }
  *ctr = c;
  return 0;
}

static void peer_ep(tenc_peer *p, struct sockaddr_in6 *out, int *has) {
  pthread_spin_lock(&p->ep_lock);
  *out = p->ep;
  *has = p->has_ep;
  pthread_spin_unlock(&p->ep_lock);
}

static void count_tx(tenc_engine *e, uint32_t peer, uint32_t bytes, int data, uint64_t now) {
  uint64_t *c = pctr(e, peer);
  cadd(&c[TENC_P_TX_BYTES], bytes);
  cadd(&c[TENC_P_TX_PACKETS], 1);
  cset(&c[TENC_P_LAST_TX_MS], now);
  if (data) cset(&c[TENC_P_LAST_TX_DATA_MS], now);
}


/* ---- queue --------------------------------------------------------------- */

static void queue_free_all(tenc_engine *e, tenc_peer *p, int count) {
  if (count && p->qlen) drop(e, p->id, TENC_D_NO_SESSION, p->qlen);
  for (uint32_t i = 0; i < p->qlen; i++) {
    tenc_qpkt *q = &p->q[(p->qhead + i) % TENC_QUEUE_MAX];
    explicit_bzero(q->buf, sealed_room(q->len));
    free(q->buf);
  }
  p->qhead = p->qlen = 0;
}

/* TX thread (read lock): keeps a copy of a packet until the peer has a session. */
static void queue_packet(tenc_engine *e, tenc_peer *p, const uint8_t *pkt, uint32_t len) {
  if (!p->need_hs_signaled) {
    p->need_hs_signaled = 1;
    ev_push(e, TENC_EV_NEED_HANDSHAKE, p->id, 0, NULL);
  }
  if (p->qlen == TENC_QUEUE_MAX) {
    drop(e, p->id, TENC_D_QUEUE_FULL, 1);
    return;
  }
  uint8_t *b = malloc(sealed_room(len));
  if (!b) {
    drop(e, p->id, TENC_D_QUEUE_FULL, 1);
    return;
  }
  memcpy(b + TENC_HEADROOM, pkt, len);
  p->q[(p->qhead + p->qlen) % TENC_QUEUE_MAX] = (tenc_qpkt){b, len};
  p->qlen++;
}

/* ---- send (TX thread) ------------------------------------------------------ */

typedef struct {
  uint8_t *buf; /* headroom start */
  uint32_t len; /* plaintext length, then message length */
  uint32_t hlen; /* body != NULL: only the first hlen plaintext bytes are in buf */
  const uint8_t *body; /* NULL, or the rest of the plaintext (a TSO segment's payload) */
} txrec;

typedef struct {
  uint8_t *buf;
  uint32_t len;
  uint32_t peer;
  struct sockaddr_in6 ep;
  /* until sealed (seal_outs) */
  txrec *rec;
  tenc_keypair *kp;
  uint64_t ctr;
} txout;

/* Last route_miss report per destination hash (TX thread only). */
typedef struct {
  uint8_t fam;
  uint8_t addr[16];
  uint8_t n; /* reports in the interval that began at `at` */
  uint64_t at;
} miss_slot;

struct tenc_tx {
  unsigned key_gen;
  int scatter; /* seal TSO/USO segments straight out of the super-packet */
  uint32_t spin_misses, spin_skip; /* busy polls in a row that caught nothing */
  uint32_t tcp_align, tcp_max; /* TSO segment sizes (tenc_gso_split) */
  miss_slot miss[TENC_MISS_SLOTS];
  uint8_t *arena;
  uint32_t used;
  txrec *recs;
  uint32_t nrecs;
  txout *out;
  uint32_t nout;
  struct mmsghdr *msgs;
  struct iovec *iovs;
  uint8_t (*cms)[CMSG_SPACE(sizeof(uint16_t))];
  uint32_t *first; /* index into out of each msg */
  uint32_t *count; /* outs per msg */
  tenc_aead *aead;
};

static uint8_t *tx_reserve(struct tenc_tx *t, uint32_t len) {
  uint32_t need = (sealed_room(len) + 15u) & ~15u;
  if (t->nrecs >= TX_MAX_RECS || t->used + need > TX_ARENA) return NULL;
  uint8_t *b = t->arena + t->used;
  t->used += need;
  t->recs[t->nrecs++] = (txrec){b, len, 0, NULL};
  return b + TENC_HEADROOM;
}

/* A segment's room is reserved whole (the ciphertext fills it); with scatter seal
 * only its header is written now and the payload is read from the super-packet
 * when sealing. */
static uint8_t *tx_seg_alloc(void *ctx, uint32_t seglen, const uint8_t *body, uint32_t hlen) {
  struct tenc_tx *t = ctx;
  uint8_t *p = tx_reserve(t, seglen);
  if (p && t->scatter) {
    t->recs[t->nrecs - 1].body = body;
    t->recs[t->nrecs - 1].hlen = hlen;
  }
  return p;
}

/* Puts a scattered record's payload next to its header (before a copy of the
 * whole packet is taken: queue, route miss). */
static void tx_gather(txrec *r) {
  if (!r->body) return;
  memcpy(r->buf + TENC_HEADROOM + r->hlen, r->body, r->len - r->hlen);
  r->body = NULL;
}

/* One frame read with IFF_VNET_HDR: the virtio header is the VNET_LEN bytes before
 * `pkt`, which sits at t->arena + t->used + TENC_HEADROOM; n counts both. */
static void tx_frame(tenc_engine *e, struct tenc_tx *t, uint8_t *pkt, uint32_t n) {
  if (n <= VNET_LEN) return;
  struct virtio_net_hdr h;
  memcpy(&h, pkt - VNET_LEN, VNET_LEN);
  uint32_t len = n - VNET_LEN;
  if (h.gso_type == VIRTIO_NET_HDR_GSO_NONE) {
    if ((h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) && tenc_offload_csum(&h, pkt, len) < 0) {
      drop(e, -1, TENC_D_TOO_BIG, 1);
      return;
    }
    tx_reserve(t, len);
    return;
  }
  /* Super-packet: keep it where it is, append its segments after it. */
  t->used += (len + TENC_HEADROOM + 15u) & ~15u;
  uint32_t lost;
  int nseg = tenc_gso_split(&h, pkt, len, tx_seg_alloc, t, &lost, !t->scatter, t->tcp_align, t->tcp_max);
  if (nseg < 0) drop(e, -1, TENC_D_TOO_BIG, 1);
  else if (lost) drop(e, -1, TENC_D_TOO_BIG, lost); /* out of room: the rest is counted, not silently lost */
}

/* Stage 1: reads packets from the TUN device. Returns 1 when the device has
 * more (batch full), 0 when drained, -1 on a fatal error. */
static int tx_read(tenc_engine *e, struct tenc_tx *t) {
  t->used = 0;
  t->nrecs = 0;
  uint32_t limit = e->tx_batch && e->tx_batch < TX_ARENA - TX_READ_ROOM ? e->tx_batch : TX_ARENA - TX_READ_ROOM;
  while (t->nrecs + 300 < TX_MAX_RECS && t->used < limit) {
    uint8_t *base = t->arena + t->used;
    if (!e->o.vnet_hdr) {
      ssize_t n = read(e->o.tun_fd, base + TENC_HEADROOM, 65535);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN ? 0 : -1;
      }
      if (n == 0) return 0;
      tx_reserve(t, (uint32_t)n);
      continue;
    }
    /* vnet header lands in the headroom, just before the packet. */
    uint8_t *pkt = base + TENC_HEADROOM;
    ssize_t n = read(e->o.tun_fd, pkt - VNET_LEN, 65535 + VNET_LEN);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN ? 0 : -1;
    }
    if (n == 0) return 0;
    tx_frame(e, t, pkt, (uint32_t)n);
  }
  return 1;
}

/* An outgoing packet no peer claims: reported (route_miss) at most TENC_MISS_BURST
 * times per destination per TENC_MISS_INTERVAL_MS while reporting is on. The hash only
 * spreads destinations over the slots: a collision costs an extra report, bounded
 * by the pending limit. */
static void tx_miss(tenc_engine *e, struct tenc_tx *t, int v, const uint8_t *dst, const uint8_t *pkt, uint32_t len,
                    uint64_t now) {
  size_t alen = v == 4 ? 4 : 16;
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < alen; i++) h = (h ^ dst[i]) * 16777619u;
  miss_slot *s = &t->miss[(h ^ (h >> 16)) & (TENC_MISS_SLOTS - 1)];
  if (s->fam == v && memcmp(s->addr, dst, alen) == 0 && now - s->at < TENC_MISS_INTERVAL_MS) {
    if (s->n >= TENC_MISS_BURST) return;
    s->n++;
  } else {
    s->fam = (uint8_t)v;
    memcpy(s->addr, dst, alen);
    s->at = now;
    s->n = 1;
  }
  ev_push_miss(e, v, dst, pkt, len);
}

/* Stage 4: seals the records routed to a peer (t->out), 16 at a time: their
 * Poly1305 keys and short keystream are made side by side first
 * (tenc_aead_prepare), then each record is sealed in order. Records that fail are
 * counted and dropped from t->out. Under the read lock (the keypairs stay). */
static void seal_outs(tenc_engine *e, struct tenc_tx *t, uint64_t now) {
  uint32_t kept = 0;
  for (uint32_t i = 0; i < t->nout; i += TENC_AEAD_PREP_MAX) {
    uint32_t m = t->nout - i < TENC_AEAD_PREP_MAX ? t->nout - i : TENC_AEAD_PREP_MAX;
    const uint8_t *keys[TENC_AEAD_PREP_MAX];
    uint8_t nonces[TENC_AEAD_PREP_MAX][TENC_AEAD_NONCE_LEN];
    uint32_t lens[TENC_AEAD_PREP_MAX];
    for (uint32_t j = 0; j < m; j++) {
      keys[j] = t->out[i + j].kp->send_key;
      tenc_aead_wg_nonce(t->out[i + j].ctr, nonces[j]);
      lens[j] = pad16(t->out[i + j].rec->len); /* what seal and seal_scatter encrypt */
    }
    tenc_aead_prepare(t->aead, m, keys, (const uint8_t(*)[TENC_AEAD_NONCE_LEN])nonces, lens);
    for (uint32_t j = 0; j < m; j++) {
      txout *o = &t->out[i + j];
      txrec *r = o->rec;
      uint32_t mlen = r->body ? seal_scatter(t->aead, o->kp, o->ctr, r->buf, r->hlen, r->body, r->len)
                              : seal(t->aead, o->kp, o->ctr, r->buf, r->len);
      if (!mlen) {
        drop(e, o->peer, TENC_D_IO, 1);
        continue;
      }
      o->len = mlen;
      count_tx(e, o->peer, mlen, 1, now);
      if (kept != i + j) t->out[kept] = *o; /* kept <= i + j: only entries already sealed are overwritten */
      kept++;
    }
  }
  tenc_aead_prepare(t->aead, 0, NULL, NULL, NULL); /* wipes keys left unused */
  t->nout = kept;
}

/* Stages 2-4 under the read lock: classify, queue or seal. */
static void tx_seal(tenc_engine *e, struct tenc_tx *t) {
  uint64_t now = tenc_now_ms();
  t->nout = 0;
  pthread_rwlock_rdlock(&e->lock);
  int nat = e->nat.nservices > 0;
  int32_t last_peer = -1;
  uint8_t last_dst[16];
  int last_v = 0;
  for (uint32_t i = 0; i < t->nrecs; i++) {
    txrec *r = &t->recs[i];
    uint8_t *pkt = r->buf + TENC_HEADROOM;
    uint32_t iplen;
    int v = tenc_inner_check(pkt, r->len, &iplen);
    if (!v) {
      drop(e, -1, TENC_D_NO_ROUTE, 1);
      continue;
    }
    if (e->o.mtu && r->len > e->o.mtu) {
      drop(e, -1, TENC_D_TOO_BIG, 1);
      continue;
    }
    if (nat) tenc_nat_unsnat(&e->nat, pkt, iplen);
    const uint8_t *dst = v == 4 ? pkt + 16 : pkt + 24;
    size_t alen = v == 4 ? 4 : 16;
    int32_t pid;
    if (v == last_v && memcmp(dst, last_dst, alen) == 0) {
      pid = last_peer;
    } else {
      pid = tenc_aips_lookup(e->aips, v, dst);
      last_v = v;
      memcpy(last_dst, dst, alen);
      last_peer = pid;
    }
    tenc_peer *p = pid >= 0 ? e->peers[pid] : NULL;
    if (!p) {
      drop(e, -1, TENC_D_NO_ROUTE, 1);
      if (atomic_load_explicit(&e->report_misses, memory_order_relaxed)) {
        tx_gather(r);
        tx_miss(e, t, v, dst, pkt, r->len, now);
      }
      continue;
    }
    txout *o = &t->out[t->nout];
    int has_ep;
    peer_ep(p, &o->ep, &has_ep);
    tenc_keypair *kp = p->send;
    if (kp && kp_expired(kp, now)) kp = NULL; /* as without one: queued, need_handshake */
    if (!kp || !has_ep) {
      tx_gather(r);
      queue_packet(e, p, pkt, r->len);
      continue;
    }
    if (next_counter(e, kp, &o->ctr) < 0) continue;
    o->rec = r;
    o->kp = kp;
    o->buf = r->buf;
    o->peer = p->id;
    t->nout++;
  }
  seal_outs(e, t, now);
  pthread_rwlock_unlock(&e->lock);
  ev_flush(e);
}

static inline int same_ep(const struct sockaddr_in6 *a, const struct sockaddr_in6 *b) {
  return a->sin6_port == b->sin6_port && memcmp(&a->sin6_addr, &b->sin6_addr, 16) == 0;
}

/* Stage 5: sendmmsg, with runs of equal-size messages to one endpoint as GSO. */
static void tx_send(tenc_engine *e, struct tenc_tx *t, int gso) {
  uint32_t nm = 0;
  for (uint32_t i = 0; i < t->nout;) {
    txout *o = &t->out[i];
    uint32_t j = i + 1, bytes = o->len;
    if (gso)
      while (j < t->nout && j - i < GSO_MAX_SEGS && same_ep(&t->out[j].ep, &o->ep) && t->out[j].len <= o->len &&
             bytes + t->out[j].len <= GSO_MAX_BYTES) {
        bytes += t->out[j].len;
        if (t->out[j++].len < o->len) break; /* a shorter one ends the run */
      }
    struct msghdr *m = &t->msgs[nm].msg_hdr;
    memset(m, 0, sizeof *m);
    m->msg_name = &o->ep;
    m->msg_namelen = sizeof o->ep;
    m->msg_iov = &t->iovs[i];
    m->msg_iovlen = j - i;
    for (uint32_t k = i; k < j; k++) t->iovs[k] = (struct iovec){t->out[k].buf, t->out[k].len};
    if (j - i > 1) {
      m->msg_control = t->cms[nm];
      m->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
      struct cmsghdr *c = CMSG_FIRSTHDR(m);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      uint16_t seg = (uint16_t)o->len;
      memcpy(CMSG_DATA(c), &seg, sizeof seg);
    }
    t->first[nm] = i;
    t->count[nm] = j - i;
    nm++;
    i = j;
  }
  for (uint32_t k = 0; k < nm;) {
    int r = sendmmsg(e->o.udp_fd, &t->msgs[k], nm - k, 0);
    if (r > 0) {
      k += (uint32_t)r;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    int err = errno;
    uint32_t f = t->first[k], c = t->count[k];
    if (c > 1 && (err == EINVAL || err == EMSGSIZE || err == EIO)) {
      /* GSO refused (e.g. segment above the path MTU): send them one by one. */
      for (uint32_t q = f; q < f + c; q++)
        if (sendto(e->o.udp_fd, t->out[q].buf, t->out[q].len, 0, (struct sockaddr *)&t->out[q].ep,
                   sizeof t->out[q].ep) < 0)
          drop(e, t->out[q].peer, TENC_D_IO, 1);
    } else {
      for (uint32_t q = f; q < f + c; q++) drop(e, t->out[q].peer, TENC_D_IO, 1);
    }
    k++;
  }
}

/* One send batch (tx_mu held): stages 1-5. Returns the number of records read
 * (0: the device was empty) and sets *more when the batch was full; -1 on a read
 * error (counted). */
static int tx_cycle(tenc_engine *e, struct tenc_tx *t, int *more) {
  unsigned g = atomic_load(&e->key_gen);
  if (g != t->key_gen) { /* a keypair was freed: forget the key cached in the cipher context */
    t->key_gen = g;
    tenc_aead_clear(t->aead);
  }
  int r = tx_read(e, t);
  *more = r > 0;
  if (r < 0) {
    drop(e, -1, TENC_D_IO, 1);
    return -1;
  }
  if (!t->nrecs) return 0;
  tx_seal(e, t);
  if (t->nout) tx_send(e, t, e->o.udp_gso);
  return (int)t->nrecs;
}

static int rx_cycle(tenc_engine *e, struct tenc_rx *x, int *more);

/* Busy poll (TENC_BUSY_POLL_US): after sending a small batch, instead of sleeping
 * in poll() at once, the TX thread keeps checking both the TUN device and the UDP
 * socket for up to busy_poll_us, and runs whichever pipeline has work (under its
 * mutex; when the other thread is running it, it is skipped). The answer to a
 * request just sent (a ping's reply) is then handled without the RX thread's
 * wake-up on the critical path. Activity restarts the budget; it is bounded by
 * busy_poll_us of idle time. (The RX side has the inline reply instead.) */
#define SPIN_SMALL 16

static int busy_poll(tenc_engine *e) {
  uint64_t budget = (uint64_t)e->busy_poll_us * 1000u, start = tenc_now_ns();
  int any = 0;
  struct pollfd pf[3] = {{.fd = e->o.tun_fd, .events = POLLIN},
                         {.fd = e->o.udp_fd, .events = POLLIN},
                         {.fd = e->stop_fd, .events = POLLIN}};
  while (!atomic_load_explicit(&e->stopping, memory_order_relaxed)) {
    int r = poll(pf, 3, 0);
    if (r < 0 && errno != EINTR) return any;
    if (pf[2].revents) return any;
    int did = 0, more = 0;
    if ((pf[0].revents & POLLIN) && pthread_mutex_trylock(&e->tx_mu) == 0) {
      did += tx_cycle(e, e->tx, &more) > 0;
      pthread_mutex_unlock(&e->tx_mu);
    }
    if ((pf[1].revents & POLLIN) && pthread_mutex_trylock(&e->rx_mu) == 0) {
      did += rx_cycle(e, e->rx, &more) > 0;
      pthread_mutex_unlock(&e->rx_mu);
    }
    uint64_t now = tenc_now_ns();
    any |= did;
    if (did) start = now;
    else if (now - start >= budget) return any;
    else sched_yield(); /* on 2 cores the woken application must not wait for us */
  }
  return any;
}

static void *tx_main(void *arg) {
  tenc_engine *e = arg;
  struct tenc_tx *t = e->tx;
  struct pollfd pf[2] = {{.fd = e->o.tun_fd, .events = POLLIN}, {.fd = e->stop_fd, .events = POLLIN}};
  int more = 0;
  while (!atomic_load(&e->stopping)) {
    if (!more) {
      int r = poll(pf, 2, -1);
      if (r < 0 && errno != EINTR) break;
      if (pf[1].revents) break;
      if (r <= 0 || !(pf[0].revents & (POLLIN | POLLERR | POLLHUP))) continue;
    }
    pthread_mutex_lock(&e->tx_mu);
    int n = tx_cycle(e, t, &more);
    pthread_mutex_unlock(&e->tx_mu);
    if (n < 0) {
      usleep(1000);
      continue;
    }
    /* Adaptive: after 8 spins in a row that caught nothing (nothing answers what
     * this pod sends), only every 16th small batch spins. */
    if (!more && n > 0 && n <= SPIN_SMALL && e->busy_poll_us && (t->spin_misses < 8 || ++t->spin_skip % 16 == 0))
      t->spin_misses = busy_poll(e) ? 0 : t->spin_misses + 1;
  }
  return NULL;
}

/* ---- receive (RX thread) --------------------------------------------------- */

typedef struct {
  uint8_t *m; /* the message */
  uint32_t len;
  tenc_keypair *kp;
  uint64_t ctr;
  const struct sockaddr_in6 *from;
} rxpend;

typedef struct {
  uint8_t *pkt; /* inner packet; TENC_HEADROOM bytes before it are free */
  uint32_t len;
  int family;
} rxinj;

struct tenc_rx {
  unsigned key_gen;
  uint32_t inline_misses, inline_skip; /* inline reply attempts that found nothing, in a row */
  uint8_t *bufs;
  struct mmsghdr msgs[RX_BATCH];
  struct iovec iovs[RX_BATCH];
  struct sockaddr_in6 from[RX_BATCH];
  uint8_t cms[RX_BATCH][CMSG_SPACE(sizeof(int))];
  rxinj *inj;
  uint32_t ninj, inj_cap;
  uint8_t **gptr; /* TUN GRO: the inject list as pointer/length arrays */
  uint32_t *glen;
  uint8_t *gro;   /* one merged frame */
  uint8_t gro_hdr[TENC_GRO_HDR_MAX]; /* or its headers, for a writev */
  struct iovec gro_iov[TENC_GRO_MAX_SEGS + 1];
  rxpend pend[TENC_AEAD_PREP_MAX]; /* data messages waiting to be opened */
  uint32_t npend;
  struct mmsghdr *imsgs;
  struct iovec *iiovs;
  union {
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
  } *inames;
  tenc_aead *aead;
};

static int dst_is_local(const tenc_engine *e, const uint8_t *pkt, int v);

/* ---- handshake gate (RX pipeline) ------------------------------------------
 * Before a handshake message costs the control plane anything: mac1 must be made
 * with our public key (types 1 and 2; a cookie reply has none), and under load each
 * source address gets TENC_RL_PER_SECOND messages a second (burst TENC_RL_BURST).
 * The control plane still decides on mac2 and answers with cookie replies under
 * load (src/device/device.ts); this gate keeps what reaches it small and fair. */

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

/* Returns 1 when the message may go to the control plane (counted drops otherwise). */
static int hs_gate(tenc_engine *e, const uint8_t *m, uint32_t len, const struct sockaddr_in6 *from, uint64_t now) {
  if (m[0] != 3 && atomic_load_explicit(&e->has_mac1_key, memory_order_acquire) && !mac1_ok(e, m, len)) {
    drop(e, -1, TENC_D_BAD_MAC1, 1);
    return 0;
  }
  if (now - e->hs_window_ms >= 1000) {
    e->hs_window_ms = now;
    e->hs_window_n = 0;
  }
  e->hs_window_n++;
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

/* Stage 2 for one message: handshake messages go to JS; a data message with a known
 * index and a counter inside the replay window is queued in x->pend for opening
 * (returns 1). */
static int rx_message(tenc_engine *e, struct tenc_rx *x, uint8_t *m, uint32_t len, const struct sockaddr_in6 *from,
                      uint64_t now) {
  if (len < 4 || m[1] || m[2] || m[3]) {
    drop(e, -1, TENC_D_BAD_HEADER, 1);
    return 0;
  }
  switch (m[0]) {
    case 1:
    case 2:
    case 3:
      if (len != (m[0] == 1 ? 148u : m[0] == 2 ? 92u : 64u)) {
        drop(e, -1, TENC_D_BAD_HEADER, 1);
        return 0;
      }
      if (hs_gate(e, m, len, from, now)) ev_push_handshake(e, m, len, from);
      return 0;
    case MSG_DATA:
      if (len >= MSG_DATA_MIN) break;
      /* fallthrough */
    default:
      drop(e, -1, TENC_D_BAD_HEADER, 1);
      return 0;
  }
  tenc_keypair *kp = kmap_get(e, le32(m + 4));
  if (!kp) {
    drop(e, -1, TENC_D_UNKNOWN_INDEX, 1);
    return 0;
  }
  if (kp_expired(kp, now)) {
    drop(e, kp->peer->id, TENC_D_KEYPAIR_EXPIRED, 1);
    return 0;
  }
  uint64_t ctr = le64(m + 8);
  if (!tenc_replay_check(&kp->replay, ctr)) {
    drop(e, kp->peer->id, TENC_D_REPLAY, 1);
    return 0;
  }
  x->pend[x->npend++] = (rxpend){m, len, kp, ctr, from};
  return 1;
}

/* Stages 3-4 for a queued data message: open, replay commit, endpoint, inner checks,
 * DNAT; the packet joins the inject list. */
static void rx_open(tenc_engine *e, struct tenc_rx *x, const rxpend *q, uint64_t now) {
  uint8_t *m = q->m;
  uint32_t len = q->len;
  tenc_keypair *kp = q->kp;
  tenc_peer *p = kp->peer;
  uint64_t ctr = q->ctr;
  const struct sockaddr_in6 *from = q->from;
  uint8_t nonce[TENC_AEAD_NONCE_LEN];
  tenc_aead_wg_nonce(ctr, nonce);
  uint32_t clen = len - MSG_DATA_MIN;
  uint8_t *pt = m + TENC_HEADROOM;
  if (tenc_aead_open(x->aead, kp->recv_key, nonce, NULL, 0, pt, clen, pt + clen) != 0) {
    drop(e, p->id, TENC_D_AUTH, 1);
    return;
  }
  if (!tenc_replay_commit(&kp->replay, ctr)) {
    drop(e, p->id, TENC_D_REPLAY, 1);
    return;
  }
  if (!kp->confirmed) {
    kp->confirmed = 1;
    ev_push(e, TENC_EV_KEYPAIR_CONFIRMED, p->id, kp->local_index, NULL);
  }
  if (!p->has_ep || !same_ep(&p->ep, from)) {
    pthread_spin_lock(&p->ep_lock);
    p->ep = *from;
    p->has_ep = 1;
    pthread_spin_unlock(&p->ep_lock);
    ev_push(e, TENC_EV_ENDPOINT, p->id, 0, from);
  }
  uint64_t *c = pctr(e, p->id);
  cadd(&c[TENC_P_RX_BYTES], len);
  cadd(&c[TENC_P_RX_PACKETS], 1);
  cset(&c[TENC_P_LAST_RX_MS], now);
  if (clen == 0) {
    cadd(&e->ctr[TENC_G_KEEPALIVE_RX], 1);
    return;
  }
  uint32_t iplen;
  int v = tenc_inner_check(pt, clen, &iplen);
  if (!v) {
    drop(e, p->id, TENC_D_BAD_INNER, 1);
    return;
  }
  if (tenc_aips_lookup(e->aips, v, v == 4 ? pt + 12 : pt + 8) != (int32_t)p->id) {
    drop(e, p->id, TENC_D_SPOOFED_SOURCE, 1);
    return;
  }
  cset(&c[TENC_P_LAST_RX_DATA_MS], now);
  if (e->nat.nservices) tenc_nat_dnat(&e->nat, pt, iplen, now);
  if (e->nlocal && !dst_is_local(e, pt, v)) {
    drop(e, p->id, TENC_D_BAD_DESTINATION, 1);
    return;
  }
  x->inj[x->ninj++] = (rxinj){pt, iplen, v};
}

/* Opens the queued data messages, their Poly1305 keys made side by side first. */
static void rx_open_pending(tenc_engine *e, struct tenc_rx *x, uint64_t now) {
  const uint8_t *keys[TENC_AEAD_PREP_MAX];
  uint8_t nonces[TENC_AEAD_PREP_MAX][TENC_AEAD_NONCE_LEN];
  uint32_t lens[TENC_AEAD_PREP_MAX];
  for (uint32_t j = 0; j < x->npend; j++) {
    keys[j] = x->pend[j].kp->recv_key;
    tenc_aead_wg_nonce(x->pend[j].ctr, nonces[j]);
    lens[j] = x->pend[j].len - MSG_DATA_MIN; /* the ciphertext rx_open opens */
  }
  tenc_aead_prepare(x->aead, x->npend, keys, (const uint8_t(*)[TENC_AEAD_NONCE_LEN])nonces, lens);
  for (uint32_t j = 0; j < x->npend; j++) rx_open(e, x, &x->pend[j], now);
  tenc_aead_prepare(x->aead, 0, NULL, NULL, NULL); /* wipes keys left unused */
  x->npend = 0;
}

/* Raw inject helpers: one message per packet, addressed to its destination. */
static void raw_add(struct tenc_rx *x, uint32_t n, const rxinj *j) {
  struct msghdr *m = &x->imsgs[n].msg_hdr;
  memset(m, 0, sizeof *m);
  x->iiovs[n] = (struct iovec){j->pkt, j->len};
  m->msg_iov = &x->iiovs[n];
  m->msg_iovlen = 1;
  m->msg_name = &x->inames[n];
  if (j->family == 4) {
    struct sockaddr_in *s = &x->inames[n].v4;
    memset(s, 0, sizeof *s);
    s->sin_family = AF_INET;
    memcpy(&s->sin_addr, j->pkt + 16, 4);
    m->msg_namelen = sizeof *s;
  } else {
    struct sockaddr_in6 *s = &x->inames[n].v6;
    memset(s, 0, sizeof *s);
    s->sin6_family = AF_INET6;
    memcpy(&s->sin6_addr, j->pkt + 24, 16);
    m->msg_namelen = sizeof *s;
  }
}

static void raw_flush(tenc_engine *e, struct tenc_rx *x, int family, uint32_t n) {
  int fd = family == 4 ? e->o.raw4_fd : e->o.raw6_fd;
  for (uint32_t k = 0; k < n;) {
    int r = fd >= 0 ? sendmmsg(fd, &x->imsgs[k], n - k, 0) : -1;
    if (r > 0) {
      k += (uint32_t)r;
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else {
      drop(e, -1, TENC_D_IO, 1); /* this one failed: skip it */
      k++;
    }
  }
}

static int raw_send_one(tenc_engine *e, int family, const uint8_t *pkt, uint32_t len, const uint8_t *dst) {
  union {
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
  } sa;
  memset(&sa, 0, sizeof sa);
  socklen_t sl;
  if (family == 4) {
    sa.v4.sin_family = AF_INET;
    memcpy(&sa.v4.sin_addr, dst, 4);
    sl = sizeof sa.v4;
  } else {
    sa.v6.sin6_family = AF_INET6;
    memcpy(&sa.v6.sin6_addr, dst, 16);
    sl = sizeof sa.v6;
  }
  int fd = family == 4 ? e->o.raw4_fd : e->o.raw6_fd;
  ssize_t r;
  do
    r = fd >= 0 ? sendto(fd, pkt, len, 0, (struct sockaddr *)&sa, sl) : -1;
  while (r < 0 && errno == EINTR);
  return r < 0 ? -1 : 0;
}

/* Stage 5: inject the batch (raw sockets per family, or TUN writes). */
static void rx_inject(tenc_engine *e, struct tenc_rx *x) {
  if (e->o.mode_tun) {
    if (e->o.vnet_hdr)
      for (uint32_t i = 0; i < x->ninj; i++) {
        x->gptr[i] = x->inj[i].pkt;
        x->glen[i] = x->inj[i].len;
      }
    for (uint32_t i = 0; i < x->ninj;) {
      rxinj *j = &x->inj[i];
      uint8_t *w = j->pkt;
      uint32_t wl = j->len, k = 1;
      if (e->o.vnet_hdr) {
        if (e->o.gro_iov) {
          /* The merged frame's headers in gro_hdr, the payloads where they were
           * opened: one writev, no copy of the payload in user space. */
          uint32_t niov;
          k = tenc_gro_tcp_iov(x->gptr + i, x->glen + i, x->ninj - i, x->gro_hdr, x->gro_iov, &niov, &wl);
          if (k > 1) {
            if (writev(e->o.tun_fd, x->gro_iov, (int)niov) < 0) drop(e, -1, TENC_D_IO, k);
            i += k;
            continue;
          }
        } else {
          k = tenc_gro_tcp(x->gptr + i, x->glen + i, x->ninj - i, x->gro, RX_SLOT, 1, &wl);
        }
        if (k > 1) {
          w = x->gro;
        } else {
          /* Authenticated, so the checksums are the sender's: DATA_VALID skips
           * verifying them again (as the kernel WireGuard does). */
          struct virtio_net_hdr h = {.flags = VIRTIO_NET_HDR_F_DATA_VALID};
          w -= VNET_LEN;
          wl = j->len + VNET_LEN;
          memcpy(w, &h, VNET_LEN);
        }
      }
      if (write(e->o.tun_fd, w, wl) < 0) drop(e, -1, TENC_D_IO, k);
      i += k;
    }
    return;
  }
  /* Raw sockets: a batch per family through sendmmsg; with offloads, TCP runs are
   * merged into one large packet (the local route is lo, 64 KiB MTU). */
  int gro = e->o.vnet_hdr;
  if (gro)
    for (uint32_t i = 0; i < x->ninj; i++) {
      x->gptr[i] = x->inj[i].pkt;
      x->glen[i] = x->inj[i].len;
    }
  uint32_t n = 0;
  int fam = 0;
  for (uint32_t i = 0; i < x->ninj;) {
    rxinj *j = &x->inj[i];
    uint32_t wl = 0, k = gro ? tenc_gro_tcp(x->gptr + i, x->glen + i, x->ninj - i, x->gro, RX_SLOT, 0, &wl) : 1;
    if (n && (k > 1 || j->family != fam)) {
      raw_flush(e, x, fam, n);
      n = 0;
    }
    if (k > 1) {
      uint8_t *dst = j->family == 4 ? x->gro + 16 : x->gro + 24;
      if (raw_send_one(e, j->family, x->gro, wl, dst) == 0) {
        i += k;
        continue;
      }
      /* e.g. EMSGSIZE (not a local destination): the rest of the batch unmerged. */
      gro = 0;
    }
    raw_add(x, n++, j);
    fam = j->family;
    i++;
    if (n == RX_BATCH * 4) {
      raw_flush(e, x, fam, n);
      n = 0;
    }
  }
  if (n) raw_flush(e, x, fam, n);
}

/* One receive batch (rx_mu held): stages 1-5 for one recvmmsg. Returns the number
 * of datagrams (0: none waiting) and sets *more when the batch was full. */
static int rx_cycle(tenc_engine *e, struct tenc_rx *x, int *more) {
  unsigned g = atomic_load(&e->key_gen);
  if (g != x->key_gen) { /* a keypair was freed: forget the key cached in the cipher context */
    x->key_gen = g;
    tenc_aead_clear(x->aead);
  }
  for (int i = 0; i < RX_BATCH; i++) {
    x->iovs[i] = (struct iovec){x->bufs + (size_t)i * RX_SLOT + TENC_HEADROOM, RX_SLOT - TENC_HEADROOM};
    struct msghdr *m = &x->msgs[i].msg_hdr;
    memset(m, 0, sizeof *m);
    m->msg_name = &x->from[i];
    m->msg_namelen = sizeof x->from[i];
    m->msg_iov = &x->iovs[i];
    m->msg_iovlen = 1;
    m->msg_control = x->cms[i];
    m->msg_controllen = sizeof x->cms[i];
  }
  int n = recvmmsg(e->o.udp_fd, x->msgs, RX_BATCH, MSG_DONTWAIT, NULL);
  if (n <= 0) {
    *more = 0;
    return 0;
  }
  *more = n == RX_BATCH;
  uint64_t now = tenc_now_ms();
  x->ninj = 0;
  pthread_rwlock_rdlock(&e->lock);
  for (int i = 0; i < n; i++) {
    struct msghdr *m = &x->msgs[i].msg_hdr;
    uint32_t len = x->msgs[i].msg_len, seg = len;
    if (m->msg_namelen != sizeof(struct sockaddr_in6)) continue;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c))
      if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
        int g;
        memcpy(&g, CMSG_DATA(c), sizeof g);
        if (g > 0) seg = (uint32_t)g;
      }
    uint8_t *d = x->iovs[i].iov_base;
    if (len == 0) { /* an empty datagram is a message too short for any header */
      drop(e, -1, TENC_D_BAD_HEADER, 1);
      continue;
    }
    for (uint32_t off = 0; off < len; off += seg) {
      uint32_t l = len - off < seg ? len - off : seg;
      if (x->ninj + x->npend >= x->inj_cap) break;
      if (rx_message(e, x, d + off, l, &x->from[i], now) && x->npend == TENC_AEAD_PREP_MAX) rx_open_pending(e, x, now);
    }
  }
  if (x->npend) rx_open_pending(e, x, now);
  pthread_rwlock_unlock(&e->lock);
  ev_flush(e);
  rx_inject(e, x);
  return n;
}

static void *rx_main(void *arg) {
  tenc_engine *e = arg;
  struct tenc_rx *x = e->rx;
  struct pollfd pf[2] = {{.fd = e->o.udp_fd, .events = POLLIN}, {.fd = e->stop_fd, .events = POLLIN}};
  int more = 0;
  while (!atomic_load(&e->stopping)) {
    if (!more) {
      int r = poll(pf, 2, -1);
      if (r < 0 && errno != EINTR) break;
      if (pf[1].revents) break;
      if (r <= 0) continue;
    }
    pthread_mutex_lock(&e->rx_mu);
    int n = rx_cycle(e, x, &more);
    uint32_t injected = x->ninj;
    pthread_mutex_unlock(&e->rx_mu);
    if (more || n <= 0 || n > SPIN_SMALL) continue;
    /* Inline reply (TENC_INLINE_TX): a small batch just written to the TUN device
     * is usually answered within that write (the kernel runs the local stack in
     * it: an echo reply, a TCP ACK, a request's response). Read and send it from
     * here instead of waking the TX thread for it. */
    /* When the device had nothing the last few times (one-way traffic: a UDP
     * stream), only every 16th batch tries, so the read is not a wasted system
     * call per batch. */
    if (e->inline_tx && e->o.mode_tun && injected && (x->inline_misses < 4 || ++x->inline_skip % 16 == 0) &&
        pthread_mutex_trylock(&e->tx_mu) == 0) {
      int m;
      int got = tx_cycle(e, e->tx, &m);
      pthread_mutex_unlock(&e->tx_mu);
      x->inline_misses = got > 0 ? 0 : x->inline_misses + 1;
    }
  }
  return NULL;
}

/* ---- lifecycle ----------------------------------------------------------- */

static void tx_free(struct tenc_tx *t) {
  if (!t) return;
  if (t->arena) explicit_bzero(t->arena, TX_ARENA);
  free(t->arena);
  free(t->recs);
  free(t->out);
  free(t->msgs);
  free(t->iovs);
  free(t->cms);
  free(t->first);
  free(t->count);
  tenc_aead_free(t->aead);
  free(t);
}

static void rx_free(struct tenc_rx *x) {
  if (!x) return;
  if (x->bufs) explicit_bzero(x->bufs, (size_t)RX_BATCH * RX_SLOT);
  free(x->bufs);
  free(x->inj);
  free(x->gptr);
  free(x->glen);
  if (x->gro) explicit_bzero(x->gro, RX_SLOT);
  free(x->gro);
  free(x->imsgs);
  free(x->iiovs);
  free(x->inames);
  tenc_aead_free(x->aead);
  free(x);
}

tenc_engine *tenc_engine_new(const tenc_engine_opts *o, uint64_t *ctr, tenc_event_signal sig, void *js) {
  tenc_engine *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  e->o = *o;
  e->ctr = ctr;
  e->signal = sig;
  e->js = js;
  e->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  /* Writer preference: two data threads holding read locks back to back must not
   * starve the control calls. */
  pthread_rwlockattr_t ra;
  pthread_rwlockattr_init(&ra);
  pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&e->lock, &ra);
  pthread_rwlockattr_destroy(&ra);
  pthread_mutex_init(&e->ev_mu, NULL);
  pthread_mutex_init(&e->tx_mu, NULL);
  pthread_mutex_init(&e->rx_mu, NULL);
  e->busy_poll_us = o->busy_poll_us;
  e->inline_tx = o->inline_tx;
  e->tx_batch = o->tx_batch_kb << 10;
  e->peers = calloc(TENC_MAX_PEERS, sizeof *e->peers);
  e->kcap = 64;
  e->kmap = calloc(e->kcap, sizeof *e->kmap);
  e->aips = tenc_aips_new();
  e->ctl_aead = tenc_aead_new();
  e->rl = calloc(TENC_RL_SLOTS, sizeof *e->rl);
  if (getrandom(e->rl_seed, sizeof e->rl_seed, 0) != sizeof e->rl_seed) /* the hash key only spreads sources */
    e->rl_seed[0] = tenc_now_ns() ^ (uintptr_t)e, e->rl_seed[1] = (uint64_t)getpid() << 32 ^ tenc_now_ns();
  struct tenc_tx *t = e->tx = calloc(1, sizeof *t);
  struct tenc_rx *x = e->rx = calloc(1, sizeof *x);
  int ok = e->stop_fd >= 0 && e->peers && e->kmap && e->aips && e->ctl_aead && e->rl && t && x && tenc_nat_init(&e->nat) == 0;
  if (ok) {
    t->arena = aligned_alloc(64, TX_ARENA);
    t->recs = calloc(TX_MAX_RECS, sizeof *t->recs);
    t->out = calloc(TX_MAX_RECS, sizeof *t->out);
    t->msgs = calloc(TX_MAX_RECS, sizeof *t->msgs);
    t->iovs = calloc(TX_MAX_RECS, sizeof *t->iovs);
    t->cms = calloc(TX_MAX_RECS, sizeof *t->cms);
    t->first = calloc(TX_MAX_RECS, sizeof *t->first);
    t->count = calloc(TX_MAX_RECS, sizeof *t->count);
    t->aead = tenc_aead_new();
    t->scatter = o->scatter_seal;
    t->tcp_align = o->tso_align;
    t->tcp_max = o->tso_max;
    x->bufs = aligned_alloc(64, (size_t)RX_BATCH * RX_SLOT);
    x->inj_cap = RX_BATCH * 64; /* GRO: up to 64 messages per datagram */
    x->inj = calloc(x->inj_cap, sizeof *x->inj);
    x->gptr = calloc(x->inj_cap, sizeof *x->gptr);
    x->glen = calloc(x->inj_cap, sizeof *x->glen);
    x->gro = malloc(RX_SLOT);
    x->imsgs = calloc(x->inj_cap, sizeof *x->imsgs);
    x->iiovs = calloc(x->inj_cap, sizeof *x->iiovs);
    x->inames = calloc(x->inj_cap, sizeof *x->inames);
    x->aead = tenc_aead_new();
    ok = t->arena && t->recs && t->out && t->msgs && t->iovs && t->cms && t->first && t->count && t->aead &&
         x->bufs && x->inj && x->gptr && x->glen && x->gro && x->imsgs && x->iiovs && x->inames && x->aead;
  }
  if (!ok) {
    e->o.tun_fd = e->o.udp_fd = e->o.raw4_fd = e->o.raw6_fd = -1; /* still the caller's */
    tenc_engine_free(e);
    errno = ENOMEM;
    return NULL;
  }
  return e;
}

int tenc_engine_start(tenc_engine *e) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int r = pthread_create(&e->tx_thr, NULL, tx_main, e);
  if (r == 0) {
    pthread_setname_np(e->tx_thr, "tenc-tx");
    r = pthread_create(&e->rx_thr, NULL, rx_main, e);
    if (r == 0) pthread_setname_np(e->rx_thr, "tenc-rx");
    if (r != 0) {
      atomic_store(&e->stopping, 1);
      uint64_t one = 1;
      (void)!write(e->stop_fd, &one, sizeof one);
      pthread_join(e->tx_thr, NULL);
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (r != 0) return -r;
  e->threads_started = 1;
  return 0;
}

/* Called on the node thread (under the write lock). The TX/RX threads wipe the key
 * their AEAD contexts cached at their next batch (key_gen); the node thread's own
 * context is wiped here. */
/* ---- key vault (engine.h tenc_vault; write lock) ---- */

#define VAULT_CHUNK (64u << 10)
#define VAULT_SLOT 64u

static uint8_t *vault_alloc(tenc_engine *e) {
  tenc_vault *v = &e->vault;
  if (!v->free) {
    uint8_t **nc = realloc(v->chunks, (v->nchunks + 1) * sizeof *nc);
    if (!nc) return NULL;
    v->chunks = nc;
    uint8_t *c = mmap(NULL, VAULT_CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (c == MAP_FAILED) return NULL;
    (void)madvise(c, VAULT_CHUNK, MADV_DONTDUMP); /* never in a core file */
    (void)madvise(c, VAULT_CHUNK, MADV_DONTFORK); /* nor in a child (spawned helpers) */
    if (mlock(c, VAULT_CHUNK) == 0) /* never in swap; RLIMIT_MEMLOCK may refuse: still usable */
      cadd(&e->ctr[TENC_G_KEY_LOCKED], VAULT_CHUNK);
    else
      cadd(&e->ctr[TENC_G_KEY_UNLOCKED], VAULT_CHUNK);
    v->chunks[v->nchunks++] = c;
    for (uint32_t off = VAULT_CHUNK; off >= VAULT_SLOT; off -= VAULT_SLOT) {
      uint8_t *slot = c + off - VAULT_SLOT;
      memcpy(slot, &v->free, sizeof(void *));
      v->free = slot;
    }
  }
  uint8_t *slot = v->free;
  memcpy(&v->free, slot, sizeof(void *));
  memset(slot, 0, VAULT_SLOT);
  return slot;
}

static void vault_put(tenc_engine *e, uint8_t *slot) {
  explicit_bzero(slot, VAULT_SLOT);
  memcpy(slot, &e->vault.free, sizeof(void *));
  e->vault.free = slot;
}

static void vault_destroy(tenc_engine *e) {
  tenc_vault *v = &e->vault;
  for (uint32_t i = 0; i < v->nchunks; i++) {
    explicit_bzero(v->chunks[i], VAULT_CHUNK);
    munmap(v->chunks[i], VAULT_CHUNK);
  }
  free(v->chunks);
  memset(v, 0, sizeof *v);
}

static void keypair_free(tenc_engine *e, tenc_keypair *kp) {
  if (kp->send_key) vault_put(e, kp->send_key); /* recv_key is the same slot's second half */
  explicit_bzero(kp, sizeof *kp);
  free(kp);
  tenc_aead_clear(e->ctl_aead);
  atomic_fetch_add(&e->key_gen, 1);
}

static void peer_free(tenc_engine *e, tenc_peer *p, int count_queue) {
  queue_free_all(e, p, count_queue);
  for (int i = 0; i < p->nkps; i++) {
    kmap_del(e, p->kps[i]->local_index);
    keypair_free(e, p->kps[i]);
  }
  pthread_spin_destroy(&p->ep_lock);
  free(p);
}

void tenc_engine_stop(tenc_engine *e) {
  if (e->threads_started) {
    atomic_store(&e->stopping, 1);
    uint64_t one = 1;
    (void)!write(e->stop_fd, &one, sizeof one);
    pthread_join(e->tx_thr, NULL);
    pthread_join(e->rx_thr, NULL);
    e->threads_started = 0;
  }
  pthread_rwlock_wrlock(&e->lock);
  if (e->peers)
    for (uint32_t i = 0; i < TENC_MAX_PEERS; i++)
      if (e->peers[i]) {
        peer_free(e, e->peers[i], 0);
        e->peers[i] = NULL;
      }
  pthread_rwlock_unlock(&e->lock);
  int *fds[] = {&e->o.tun_fd, &e->o.udp_fd, &e->o.raw4_fd, &e->o.raw6_fd, &e->stop_fd};
  for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
    if (*fds[i] >= 0) {
      close(*fds[i]);
      *fds[i] = -1;
    }
}

void tenc_engine_free(tenc_engine *e) {
  if (!e) return;
  tenc_engine_stop(e);
  free(e->peers);
  free(e->kmap);
  tenc_aips_free(e->aips);
  if (e->nat.flows) tenc_nat_destroy(&e->nat);
  tenc_aead_free(e->ctl_aead);
  vault_destroy(e);
  free(e->rl);
  explicit_bzero(e->mac1_key, sizeof e->mac1_key);
  tx_free(e->tx);
  rx_free(e->rx);
  uint32_t n;
  tenc_event *ev = tenc_engine_take_events(e, &n);
  for (uint32_t i = 0; i < n; i++) {
    if (ev[i].data) explicit_bzero(ev[i].data, ev[i].len); /* route_miss copies are the pod's plaintext */
    free(ev[i].data);
  }
  free(ev);
  pthread_rwlock_destroy(&e->lock);
  pthread_mutex_destroy(&e->ev_mu);
  pthread_mutex_destroy(&e->tx_mu);
  pthread_mutex_destroy(&e->rx_mu);
  free(e);
}

/* ---- control calls (node thread) ------------------------------------------ */

int tenc_engine_add_peer(tenc_engine *e, uint32_t id, const struct sockaddr_in6 *ep) {
  if (id >= TENC_MAX_PEERS) return -ERANGE;
  pthread_rwlock_wrlock(&e->lock);
  tenc_peer *p = e->peers[id];
  if (!p) {
    p = calloc(1, sizeof *p);
    if (!p) {
      pthread_rwlock_unlock(&e->lock);
      return -ENOMEM;
    }
    p->id = id;
    pthread_spin_init(&p->ep_lock, PTHREAD_PROCESS_PRIVATE);
    memset(pctr(e, id), 0, TENC_PEER_SLOTS * sizeof(uint64_t));
    e->peers[id] = p;
  }
  if (ep) {
    p->ep = *ep;
    p->has_ep = 1;
  }
  pthread_rwlock_unlock(&e->lock);
  return 0;
}

int tenc_engine_remove_peer(tenc_engine *e, uint32_t id) {
  if (id >= TENC_MAX_PEERS) return -ERANGE;
  pthread_rwlock_wrlock(&e->lock);
  tenc_peer *p = e->peers[id];
  if (p) {
    tenc_aips_remove_peer(e->aips, id);
    e->peers[id] = NULL;
    peer_free(e, p, 1);
  }
  pthread_rwlock_unlock(&e->lock);
  return p ? 0 : -ENOENT;
}

int tenc_engine_set_endpoint(tenc_engine *e, uint32_t id, const struct sockaddr_in6 *ep) {
  if (id >= TENC_MAX_PEERS) return -ERANGE;
  pthread_rwlock_wrlock(&e->lock);
  tenc_peer *p = e->peers[id];
  if (p) {
    p->ep = *ep;
    p->has_ep = 1;
  }
  pthread_rwlock_unlock(&e->lock);
  return p ? 0 : -ENOENT;
}

int tenc_engine_allowed_ip(tenc_engine *e, uint32_t id, int family, const uint8_t *addr, int plen, int add) {
  if (id >= TENC_MAX_PEERS) return -ERANGE;
  int r = 0;
  pthread_rwlock_wrlock(&e->lock);
  if (!e->peers[id])
    r = -ENOENT;
  else if (add)
    r = tenc_aips_insert(e->aips, family, addr, plen, id) < 0 ? -ENOMEM : 0;
  else
    tenc_aips_remove(e->aips, family, addr, plen, id);
  pthread_rwlock_unlock(&e->lock);
  return r;
}

int tenc_engine_add_keypair(tenc_engine *e, uint32_t id, uint32_t local, uint32_t remote, const uint8_t *send_key,
                            const uint8_t *recv_key) {
  if (id >= TENC_MAX_PEERS) return -ERANGE;
  int r = 0;
  pthread_rwlock_wrlock(&e->lock);
  tenc_peer *p = e->peers[id];
  tenc_keypair *kp = NULL;
  if (!p)
    r = -ENOENT;
  else if (kmap_get(e, local))
    r = -EEXIST;
  else if (p->nkps == TENC_PEER_MAX_KEYPAIRS)
    r = -ENOSPC;
  else if (!(kp = calloc(1, sizeof *kp)))
    r = -ENOMEM;
  else if (!(kp->send_key = vault_alloc(e))) {
    free(kp);
    kp = NULL;
    r = -ENOMEM;
  }
  if (!r) {
    kp->recv_key = kp->send_key + 32;
    kp->birth_ms = tenc_now_ms();
    kp->local_index = local;
    kp->remote_index = remote;
    memcpy(kp->send_key, send_key, 32);
    memcpy(kp->recv_key, recv_key, 32);
    kp->peer = p;
    tenc_replay_init(&kp->replay);
    r = kmap_put(e, kp);
    if (r)
      keypair_free(e, kp);
    else
      p->kps[p->nkps++] = kp;
  }
  pthread_rwlock_unlock(&e->lock);
  return r;
}

/* Seals and sends the peer's queue through its send keypair (write lock held). */
static void flush_through(tenc_engine *e, tenc_peer *p) {
  uint64_t now = tenc_now_ms();
  while (p->qlen) {
    tenc_qpkt *q = &p->q[p->qhead];
    uint64_t ctr;
    if (kp_expired(p->send, now))
      drop(e, p->id, TENC_D_KEYPAIR_EXPIRED, 1);
    else if (next_counter(e, p->send, &ctr) == 0) {
      uint32_t mlen = seal(e->ctl_aead, p->send, ctr, q->buf, q->len);
      if (mlen && sendto(e->o.udp_fd, q->buf, mlen, MSG_DONTWAIT, (struct sockaddr *)&p->ep, sizeof p->ep) >= 0)
        count_tx(e, p->id, mlen, 1, now);
      else
        drop(e, p->id, TENC_D_IO, 1);
    }
    explicit_bzero(q->buf, sealed_room(q->len));
    free(q->buf);
    p->qhead = (p->qhead + 1) % TENC_QUEUE_MAX;
    p->qlen--;
  }
  p->qhead = 0;
}

int tenc_engine_set_send_keypair(tenc_engine *e, uint32_t id, int has, uint32_t local) {
  if (id >= TENC_MAX_PEERS) return -ERANGE;
  int r = 0;
  pthread_rwlock_wrlock(&e->lock);
  tenc_peer *p = e->peers[id];
  tenc_keypair *kp = has ? kmap_get(e, local) : NULL;
  if (!p)
    r = -ENOENT;
  else if (has && (!kp || kp->peer != p))
    r = -ENOKEY;
  else {
    p->send = kp;
    if (kp) {
      p->need_hs_signaled = 0;
      if (p->has_ep) flush_through(e, p);
    }
  }
  pthread_rwlock_unlock(&e->lock);
  return r;
}

int tenc_engine_remove_keypair(tenc_engine *e, uint32_t local) {
  pthread_rwlock_wrlock(&e->lock);
  tenc_keypair *kp = kmap_get(e, local);
  if (kp) {
    tenc_peer *p = kp->peer;
    kmap_del(e, local);
    if (p->send == kp) p->send = NULL;
    for (int i = 0; i < p->nkps; i++)
      if (p->kps[i] == kp) {
        p->kps[i] = p->kps[--p->nkps];
        break;
      }
    keypair_free(e, kp);
  }
  pthread_rwlock_unlock(&e->lock);
  return kp ? 0 : -ENOENT;
}

int tenc_engine_send_handshake(tenc_engine *e, const struct sockaddr_in6 *to, const uint8_t *data, size_t len) {
  if (sendto(e->o.udp_fd, data, len, MSG_DONTWAIT, (const struct sockaddr *)to, sizeof *to) < 0) {
    int err = errno;
    drop(e, -1, TENC_D_IO, 1);
    return -err;
  }
  return 0;
}

int tenc_engine_send_keepalive(tenc_engine *e, uint32_t id) {
  if (id >= TENC_MAX_PEERS) return -ERANGE;
  int r = 0;
  uint8_t buf[MSG_DATA_MIN];
  struct sockaddr_in6 ep;
  pthread_rwlock_rdlock(&e->lock);
  tenc_peer *p = e->peers[id];
  uint32_t mlen = 0;
  if (!p) {
    r = -ENOENT;
  } else {
    int has_ep;
    peer_ep(p, &ep, &has_ep);
    uint64_t ctr;
    if (p->send && has_ep && kp_expired(p->send, tenc_now_ms()))
      drop(e, id, TENC_D_KEYPAIR_EXPIRED, 1);
    else if (p->send && has_ep && next_counter(e, p->send, &ctr) == 0)
      mlen = seal(e->ctl_aead, p->send, ctr, buf, 0);
  }
  pthread_rwlock_unlock(&e->lock);
  ev_flush(e);
  if (r || !mlen) return r;
  if (sendto(e->o.udp_fd, buf, mlen, MSG_DONTWAIT, (struct sockaddr *)&ep, sizeof ep) < 0) {
    int err = errno;
    drop(e, id, TENC_D_IO, 1);
    return -err;
  }
  count_tx(e, id, mlen, 0, tenc_now_ms());
  return 1;
}

int tenc_engine_flush_queue(tenc_engine *e, uint32_t id) {
  if (id >= TENC_MAX_PEERS) return -ERANGE;
  pthread_rwlock_wrlock(&e->lock);
  tenc_peer *p = e->peers[id];
  if (p) {
    queue_free_all(e, p, 1);
    p->need_hs_signaled = 0;
  }
  pthread_rwlock_unlock(&e->lock);
  return p ? 0 : -ENOENT;
}

int tenc_engine_set_send_counter(tenc_engine *e, uint32_t local, uint64_t counter) {
  pthread_rwlock_wrlock(&e->lock);
  tenc_keypair *kp = kmap_get(e, local);
  if (kp) atomic_store(&kp->send_counter, counter);
  pthread_rwlock_unlock(&e->lock);
  return kp ? 0 : -ENOENT;
}

int tenc_engine_test_age_keypair(tenc_engine *e, uint32_t local, uint64_t ms) {
  pthread_rwlock_wrlock(&e->lock);
  tenc_keypair *kp = kmap_get(e, local);
  if (kp) kp->birth_ms -= ms;
  pthread_rwlock_unlock(&e->lock);
  return kp ? 0 : -ENOENT;
}

int32_t tenc_engine_route(tenc_engine *e, int family, const uint8_t *addr) {
  pthread_rwlock_rdlock(&e->lock);
  int32_t r = tenc_aips_lookup(e->aips, family, addr);
  pthread_rwlock_unlock(&e->lock);
  return r;
}

void tenc_engine_set_local(tenc_engine *e, const uint8_t *family, const uint8_t (*addr)[16], uint32_t n) {
  if (n > TENC_MAX_LOCAL) n = TENC_MAX_LOCAL;
  pthread_rwlock_wrlock(&e->lock);
  for (uint32_t i = 0; i < n; i++) {
    e->local_family[i] = family[i];
    memcpy(e->local_addr[i], addr[i], 16);
  }
  e->nlocal = n;
  pthread_rwlock_unlock(&e->lock);
}

/* Is the (post-DNAT) destination of this inner packet an address of the pod? Called
 * with the engine lock held. Anything else would be relayed by the kernel (raw mode:
 * routed like a local packet; tun mode: forwarded if the pod forwards), so it is dropped. */
static int dst_is_local(const tenc_engine *e, const uint8_t *pkt, int v) {
  const uint8_t *dst = v == 4 ? pkt + 16 : pkt + 24;
  size_t alen = v == 4 ? 4 : 16;
  for (uint32_t i = 0; i < e->nlocal; i++)
    if (e->local_family[i] == v && memcmp(e->local_addr[i], dst, alen) == 0) return 1;
  for (uint32_t i = 0; i < e->nat.nservices; i++)
    if (e->nat.services[i].family == v && memcmp(e->nat.services[i].local, dst, alen) == 0) return 1;
  return 0;
}

void tenc_engine_set_services(tenc_engine *e, tenc_nat_service *s, uint32_t n) {
  pthread_rwlock_wrlock(&e->lock);
  tenc_nat_set_services(&e->nat, s, n);
  pthread_rwlock_unlock(&e->lock);
}

/* Test hook (engineTestSeal): the send path's stage 1 and seal for one TUN frame
 * (virtio_net_hdr + packet), without threads or sockets: the frame is split as
 * tx_read would, then each record sealed with `key`, receiver index `remote` and
 * counters from ctr0, as tx_seal would. Messages are written to out as
 * [u32 length, native order][message]... Returns the number of messages, or -1. */
int tenc_engine_test_seal(const uint8_t *frame, uint32_t flen, int scatter, uint32_t tcp_align, const uint8_t *key,
                          uint32_t remote, uint64_t ctr0, uint8_t *out, uint32_t cap, uint32_t *used) {
  uint64_t *ctr = calloc(tenc_engine_counters_len(), sizeof *ctr);
  tenc_engine e;
  memset(&e, 0, sizeof e);
  e.ctr = ctr;
  e.o.vnet_hdr = 1;
  struct tenc_tx t;
  memset(&t, 0, sizeof t);
  t.scatter = scatter;
  t.tcp_align = tcp_align;
  t.arena = aligned_alloc(64, TX_ARENA);
  t.recs = calloc(TX_MAX_RECS, sizeof *t.recs);
  t.out = calloc(TX_MAX_RECS, sizeof *t.out);
  t.aead = tenc_aead_new();
  tenc_keypair kp;
  uint8_t keys[64];
  memset(&kp, 0, sizeof kp);
  kp.remote_index = remote;
  kp.send_key = keys;
  kp.recv_key = keys + 32;
  memcpy(kp.send_key, key, 32);
  int r = -1;
  *used = 0;
  if (ctr && t.arena && t.recs && t.out && t.aead && flen <= 65535 + VNET_LEN) {
    uint8_t *pkt = t.arena + TENC_HEADROOM;
    memcpy(pkt - VNET_LEN, frame, flen);
    tx_frame(&e, &t, pkt, flen);
    /* sealed as tx_seal does: every record to peer 0, counters from ctr0 */
    for (uint32_t i = 0; i < t.nrecs; i++)
      t.out[t.nout++] = (txout){.buf = t.recs[i].buf, .peer = 0, .rec = &t.recs[i], .kp = &kp, .ctr = ctr0 + i};
    seal_outs(&e, &t, 0);
    r = t.nout == t.nrecs ? 0 : -1;
    for (uint32_t i = 0; r >= 0 && i < t.nout; i++) {
      uint32_t mlen = t.out[i].len;
      if (*used + 4 + mlen > cap) {
        r = -1;
        break;
      }
      memcpy(out + *used, &mlen, 4);
      memcpy(out + *used + 4, t.out[i].buf, mlen);
      *used += 4 + mlen;
      r++;
    }
  }
  explicit_bzero(&kp, sizeof kp);
  explicit_bzero(keys, sizeof keys);
  if (t.arena) explicit_bzero(t.arena, TX_ARENA);
  free(t.arena);
  free(t.recs);
  free(t.out);
  free(ctr);
  tenc_aead_free(t.aead);
  return r;
}

/* Fuzzing hook (fuzz/rx.c): one receive batch, stages 1-5 as the RX thread runs
 * them, on the calling thread of an engine whose threads are not started. Returns
 * the number of datagrams read (0: none waiting). */
int tenc_engine_test_rx(tenc_engine *e) {
  int more;
  pthread_mutex_lock(&e->rx_mu);
  int n = rx_cycle(e, e->rx, &more);
  pthread_mutex_unlock(&e->rx_mu);
  return n;
}
