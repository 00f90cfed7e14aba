/* engine_rx.c: the receive pipeline (engine.h "Receive"), RX thread, one batch
 * per tenc_rx_cycle: 1 recvmmsg, UDP GRO datagrams split into messages; 2 gate by
 * type and length (handshake messages to engine_hsgate.c, then the control plane);
 * 3 data: receiver index -> keypair, replay check, open, replay commit; 4 inner
 * packet checks (length, source of the same peer, destination of this pod) and
 * DNAT; 5 inject through raw sockets or the TUN device (with TCP merge).
 * The thread loop around tenc_rx_cycle, with the inline reply, is engine_loop.c. */
#include "engine_internal.h"
#include <errno.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include "offload.h"

#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define RX_BATCH 64
#define RX_SLOT (65536u + 64u)

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
  tenc_ipsa *inames;
  tenc_aead *aead;
};

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
      if (tenc_hs_gate(e, m, len, from, now)) tenc_ev_push_handshake(e, m, len, from);
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
  /* Confirmed only once its event is queued: the control plane promotes the next
   * keypair on it, so one refused by a full queue is made again by the next message. */
  if (!kp->confirmed) kp->confirmed = tenc_ev_push(e, TENC_EV_KEYPAIR_CONFIRMED, p->id, kp->local_index, NULL) == 0;
  if (!p->has_ep || !same_ep(&p->ep, from) || p->ep_unreported) {
    pthread_spin_lock(&p->ep_lock);
    p->ep = *from;
    p->has_ep = 1;
    pthread_spin_unlock(&p->ep_lock);
    /* one pending event per peer (engine_events.c); refused: reported by the next message */
    p->ep_unreported = tenc_ev_push_endpoint(e, p, from) != 0;
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
  if (e->nat.nservices) {
    int r = tenc_nat_dnat(&e->nat, pt, iplen, now);
    if (r < 0) { /* a new flow to a VIP that would break a live one (nat.h): refused */
      drop(e, p->id, r == TENC_NAT_CLASH ? TENC_D_NAT_CLASH : TENC_D_NAT_TABLE_FULL, 1);
      return;
    }
  }
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
  m->msg_namelen = tenc_ipsa_set(&x->inames[n], j->family, j->family == 4 ? j->pkt + 16 : j->pkt + 24);
}

static inline void raw_flush(tenc_engine *e, struct tenc_rx *x, int family, uint32_t n) {
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
  tenc_ipsa sa;
  socklen_t sl = tenc_ipsa_set(&sa, family, dst);
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

/* One receive batch: engine_internal.h. */
int tenc_rx_cycle(tenc_engine *e, struct tenc_rx *x, int *more, uint32_t *injected) {
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
  if (injected) *injected = 0;
  if (n <= 0) {
    *more = 0;
    return 0;
  }
  *more = n == RX_BATCH;
  uint64_t now = tenc_now_ms();
  uint32_t flushed = 0; /* injected early, when the list was full */
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
    if (m->msg_flags & MSG_TRUNC) { /* larger than its slot: cut, so it cannot be split or opened */
      drop(e, -1, TENC_D_TOO_BIG, 1);
      continue;
    }
    for (uint32_t off = 0; off < len; off += seg) {
      uint32_t l = len - off < seg ? len - off : seg;
      if (x->ninj + x->npend >= x->inj_cap) {
        /* Full: more messages than RX_BATCH * 64 (a local sender's UDP GSO datagrams
         * carry up to 128 segments since Linux 6.9/5.15.y). Open what waits, write out
         * what is open, and go on with an empty list: no message is lost. */
        if (x->npend) rx_open_pending(e, x, now);
        flushed += x->ninj;
        /* written without the lock, as at the batch's end: a control call waiting to
         * write it (writer first) would otherwise wait for all of them */
        pthread_rwlock_unlock(&e->lock);
        rx_inject(e, x);
        x->ninj = 0;
        pthread_rwlock_rdlock(&e->lock);
        unsigned g2 = atomic_load(&e->key_gen);
        if (g2 != x->key_gen) { /* a keypair was freed meanwhile: as at the batch's start */
          x->key_gen = g2;
          tenc_aead_clear(x->aead);
        }
      }
      if (rx_message(e, x, d + off, l, &x->from[i], now) && x->npend == TENC_AEAD_PREP_MAX) rx_open_pending(e, x, now);
    }
  }
  if (x->npend) rx_open_pending(e, x, now);
  pthread_rwlock_unlock(&e->lock);
  ev_flush(e);
  if (e->rx_quiet && !*more && n <= SPIN_SMALL && x->ninj) { /* its answer is read inline: the TX thread sleeps on */
    tenc_ep_mask(e->tx_ep, e->o.tun_fd, 1);
    e->rx_quieted = 1;
  }
  rx_inject(e, x);
  if (injected) *injected = x->ninj + flushed;
  return n;
}

/* ---- batch state ------------------------------------------------------------ */

void tenc_rx_free(struct tenc_rx *x) {
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

struct tenc_rx *tenc_rx_new(void) {
  struct tenc_rx *x = calloc(1, sizeof *x);
  if (!x) return NULL;
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
  if (!(x->bufs && x->inj && x->gptr && x->glen && x->gro && x->imsgs && x->iiovs && x->inames && x->aead)) {
    tenc_rx_free(x);
    return NULL;
  }
  return x;
}

/* ---- fuzzing hook ----------------------------------------------------------- */

/* Fuzzing hook (fuzz/rx.c): one receive batch, stages 1-5 as the RX thread runs
 * them, on the calling thread of an engine whose threads are not started. Returns
 * the number of datagrams read (0: none waiting). */
int tenc_engine_test_rx(tenc_engine *e) {
  int more;
  pthread_mutex_lock(&e->rx_mu);
  int n = tenc_rx_cycle(e, e->rx, &more, NULL);
  pthread_mutex_unlock(&e->rx_mu);
  return n;
}
