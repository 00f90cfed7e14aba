/* engine_tx.c: the send pipeline (engine.h "Send"), TX thread, one batch per
 * tenc_tx_cycle: 1 read the TUN device (segmenting TSO/USO super-packets),
 * 2 classify by inner destination (allowed IPs; route misses reported), 3 queue
 * for a peer without session, 4 take counters and seal, 5 sendmmsg with UDP GSO.
 * Also the node thread's own sends on the same socket: keepalives and a peer's
 * queue once it has a session (tenc_queue_flush_through), sealed as in stage 4,
 * and handshake messages as the control plane made them.
 * The thread loop around tenc_tx_cycle is engine_loop.c. */
#include "engine_internal.h"
#include <errno.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include "offload.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

#define TX_ARENA (4u << 20)
#define TX_MAX_RECS 2048
#define TX_READ_ROOM (160u << 10) /* arena room needed before one more TUN read */
#define GSO_MAX_SEGS 64
#define GSO_MAX_BYTES 65000

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

/* ---- seal ------------------------------------------------------------------ */

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

static uint32_t seal(tenc_aead *a, const tenc_keypair *kp, uint64_t ctr, uint8_t *buf, uint32_t len, uint32_t mtu) {
  uint32_t plen = padded_len(len, mtu);
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
                             const uint8_t *body, uint32_t len, uint32_t mtu) {
  uint32_t plen = padded_len(len, mtu);
  uint8_t *src = (uint8_t *)body - hlen;
  memcpy(src, buf + TENC_HEADROOM, hlen);
  seal_header(kp, ctr, buf);
  uint8_t nonce[TENC_AEAD_NONCE_LEN];
  tenc_aead_wg_nonce(ctr, nonce);
  if (tenc_aead_seal_parts(a, kp->send_key, nonce, src, len, NULL, 0, plen - len, buf + TENC_HEADROOM) != 0)
    return 0;
  return TENC_HEADROOM + plen + TENC_AEAD_TAG_LEN;
}

/* Takes the next send counter; drops/flags per REJECT/REKEY_AFTER_MESSAGES.
 * Returns 0 and the counter, or -1 when exhausted. */
static int next_counter(tenc_engine *e, tenc_keypair *kp, uint64_t *ctr) {
  uint64_t c = atomic_fetch_add_explicit(&kp->send_counter, 1, memory_order_relaxed);
  if (c >= TENC_REKEY_AFTER_MESSAGES && !atomic_exchange(&kp->rekey_signaled, 1) &&
      tenc_ev_push(e, TENC_EV_REKEY_NEEDED, kp->peer->id, kp->local_index, NULL) != 0)
    atomic_store(&kp->rekey_signaled, 0); /* the queue was full: the next message tries again */
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

static inline void count_tx(tenc_engine *e, uint32_t peer, uint32_t bytes, int data, uint64_t now) {
  uint64_t *c = pctr(e, peer);
  cadd(&c[TENC_P_TX_BYTES], bytes);
  cadd(&c[TENC_P_TX_PACKETS], 1);
  cset(&c[TENC_P_LAST_TX_MS], now);
  if (data) cset(&c[TENC_P_LAST_TX_DATA_MS], now);
}

/* ---- per-peer queue (no session yet) ---------------------------------------- */

void tenc_queue_free_all(tenc_engine *e, tenc_peer *p, int count) {
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
  if (!p->need_hs_signaled) /* set once the event is queued: after a full queue, the next packet asks again */
    p->need_hs_signaled = tenc_ev_push(e, TENC_EV_NEED_HANDSHAKE, p->id, 0, NULL) == 0;
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

/* ---- stages 1-5 ------------------------------------------------------------ */

static inline uint8_t *tx_reserve(struct tenc_tx *t, uint32_t len) {
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
  if (n <= VNET_LEN) { /* a header without a packet: the kernel never sends one */
    drop(e, -1, TENC_D_BAD_INNER, 1);
    return;
  }
  struct virtio_net_hdr h;
  memcpy(&h, pkt - VNET_LEN, VNET_LEN);
  uint32_t len = n - VNET_LEN;
  if (h.gso_type == VIRTIO_NET_HDR_GSO_NONE) {
    if ((h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) && tenc_offload_csum(&h, pkt, len) < 0) {
      drop(e, -1, TENC_D_BAD_INNER, 1); /* checksum offsets outside the packet */
      return;
    }
    tx_reserve(t, len);
    return;
  }
  /* Super-packet: keep it where it is, append its segments after it. */
  t->used += (len + TENC_HEADROOM + 15u) & ~15u;
  uint32_t lost;
  int nseg = tenc_gso_split(&h, pkt, len, tx_seg_alloc, t, &lost, !t->scatter, t->tcp_align, t->tcp_max);
  if (nseg < 0) drop(e, -1, TENC_D_BAD_INNER, 1); /* not a super-packet its header describes */
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
  tenc_ev_push_miss(e, v, dst, pkt, len);
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
      lens[j] = padded_len(t->out[i + j].rec->len, e->o.mtu); /* what seal and seal_scatter encrypt */
    }
    tenc_aead_prepare(t->aead, m, keys, (const uint8_t(*)[TENC_AEAD_NONCE_LEN])nonces, lens);
    for (uint32_t j = 0; j < m; j++) {
      txout *o = &t->out[i + j];
      txrec *r = o->rec;
      uint32_t mlen = r->body ? seal_scatter(t->aead, o->kp, o->ctr, r->buf, r->hlen, r->body, r->len, e->o.mtu)
                              : seal(t->aead, o->kp, o->ctr, r->buf, r->len, e->o.mtu);
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
    if (nat) tenc_nat_unsnat(&e->nat, pkt, iplen, now);
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

__thread int tenc_sib_depth; /* engine_internal.h */

/* Stage 5: sendmmsg, with runs of equal-size messages to one endpoint as GSO. */
static void tx_send(tenc_engine *e, struct tenc_tx *t, int gso, int nonblock) {
  /* A send to a sibling (or by one) never blocks: the sibling list is held and the
   * receiver's socket masked meanwhile. A full send buffer drops it (io). */
  int flags = nonblock || tenc_sib_depth ? MSG_DONTWAIT : 0;
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
    int r = sendmmsg(e->o.udp_fd, &t->msgs[k], nm - k, flags);
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
        if (sendto(e->o.udp_fd, t->out[q].buf, t->out[q].len, flags, (struct sockaddr *)&t->out[q].ep,
                   sizeof t->out[q].ep) < 0)
          drop(e, t->out[q].peer, TENC_D_IO, 1);
    } else {
      for (uint32_t q = f; q < f + c; q++) drop(e, t->out[q].peer, TENC_D_IO, 1);
    }
    k++;
  }
}

/* One send batch: engine_internal.h. */
int tenc_tx_cycle(tenc_engine *e, struct tenc_tx *t, int *more) {
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
  /* A small batch to a pod of this process: its receive runs here, after the send (TENC_SIBLING_POLL). */
  tenc_engine *sib = t->nout && t->nout <= SPIN_SMALL && e->sibling_find ? e->sibling_find(e, &t->out[0].ep) : NULL;
  if (t->nout) tx_send(e, t, e->o.udp_gso, sib != NULL);
  if (sib) sib->sibling_run(sib);
  return (int)t->nrecs;
}

/* ---- batch state ------------------------------------------------------------ */

void tenc_tx_free(struct tenc_tx *t) {
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

struct tenc_tx *tenc_tx_new(const tenc_engine_opts *o) {
  struct tenc_tx *t = calloc(1, sizeof *t);
  if (!t) return NULL;
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
  if (!(t->arena && t->recs && t->out && t->msgs && t->iovs && t->cms && t->first && t->count && t->aead)) {
    tenc_tx_free(t);
    return NULL;
  }
  return t;
}

/* ---- the node thread's sends ------------------------------------------------ */

/* A peer's queue once it has a session: engine_internal.h. */
void tenc_queue_flush_through(tenc_engine *e, tenc_peer *p) {
  uint64_t now = tenc_now_ms();
  while (p->qlen) {
    tenc_qpkt *q = &p->q[p->qhead];
    uint64_t ctr;
    if (kp_expired(p->send, now))
      drop(e, p->id, TENC_D_KEYPAIR_EXPIRED, 1);
    else if (next_counter(e, p->send, &ctr) == 0) {
      uint32_t mlen = seal(e->ctl_aead, p->send, ctr, q->buf, q->len, e->o.mtu);
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
      mlen = seal(e->ctl_aead, p->send, ctr, buf, 0, e->o.mtu);
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
    tenc_queue_free_all(e, p, 1);
    p->need_hs_signaled = 0;
  }
  pthread_rwlock_unlock(&e->lock);
  return p ? 0 : -ENOENT;
}

/* ---- test hook ------------------------------------------------------------- */

/* Test hook (engineTestSeal): the send path's stage 1 and seal for one TUN frame
 * (virtio_net_hdr + packet), without threads or sockets: the frame is split as
 * tx_read would, then each record sealed with `key`, receiver index `remote` and
 * counters from ctr0, as tx_seal would. Messages are written to out as
 * [u32 length, native order][message]... Returns the number of messages, or -1. */
int tenc_engine_test_seal(const uint8_t *frame, uint32_t flen, int scatter, uint32_t tcp_align, uint32_t mtu,
                          const uint8_t *key, uint32_t remote, uint64_t ctr0, uint8_t *out, uint32_t cap, uint32_t *used) {
  uint64_t *ctr = calloc(tenc_engine_counters_len(), sizeof *ctr);
  tenc_engine e;
  memset(&e, 0, sizeof e);
  e.ctr = ctr;
  e.o.vnet_hdr = 1;
  e.o.mtu = mtu;
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
    /* sealed as tx_seal does: every record to peer 0, counters from ctr0; a record over
     * the MTU is dropped as tx_seal drops it (too_big), never padded past its room */
    for (uint32_t i = 0; i < t.nrecs; i++)
      if (!mtu || t.recs[i].len <= mtu)
        t.out[t.nout++] = (txout){.buf = t.recs[i].buf, .peer = 0, .rec = &t.recs[i], .kp = &kp, .ctr = ctr0 + i};
    uint32_t picked = t.nout;
    seal_outs(&e, &t, 0);
    r = t.nout == picked ? 0 : -1;
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
