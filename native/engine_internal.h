#ifndef TENC_ENGINE_INTERNAL_H
#define TENC_ENGINE_INTERNAL_H
/* engine_internal.h: what the engine's files share (engine.h is the public side
 * and the pipeline overview). One file per stage:
 *
 *   engine_loop.c    lifecycle (new, start, stop, free) and the two threads'
 *                    loops: poll, busy poll, inline reply
 *   engine_tx.c      send pipeline: TUN read -> classify -> queue or seal -> send,
 *                    and the node thread's sends (keepalive, handshake, queue flush)
 *   engine_rx.c      receive pipeline: recvmmsg -> gate -> replay -> open -> inner
 *                    checks, DNAT -> inject
 *   engine_hsgate.c  receive stage 2 for handshake messages: mac1, under-load rate limit
 *   engine_peers.c   peers, keypairs (index table, key vault), allowed IPs, the
 *                    pod's addresses and services: the control calls that edit them
 *   engine_events.c  events to the node thread (engine_js.c turns them into JS calls)
 *
 * Helpers a per-packet path calls are static inline here, so that each stage's
 * translation unit inlines them as when the engine was one file. Calls between the
 * files are per batch (tenc_tx_cycle, tenc_rx_cycle) or per event (tenc_ev_*,
 * tenc_hs_gate for a handshake message), never per data packet. */
#include <sys/epoll.h>
#include "engine.h"
#include <linux/virtio_net.h>
#include <string.h>
#include "util.h"

#define MSG_DATA 4
#define MSG_DATA_MIN 32 /* header 16 + tag 16 */
#define VNET_LEN ((uint32_t)sizeof(struct virtio_net_hdr))
#define KP_DELETED ((tenc_keypair *)1)

/* ---- counters (engine.h "Counters") --------------------------------------- */

static inline uint64_t *pctr(tenc_engine *e, uint32_t peer) {
  return e->ctr + TENC_GLOBAL_SLOTS + (size_t)peer * TENC_PEER_SLOTS;
}
static inline void cadd(uint64_t *c, uint64_t v) { __atomic_fetch_add(c, v, __ATOMIC_RELAXED); }
static inline void cset(uint64_t *c, uint64_t v) { __atomic_store_n(c, v, __ATOMIC_RELAXED); }

/* Counts a drop globally and, when attributable (peer >= 0), for the peer. */
static inline void drop(tenc_engine *e, int64_t peer, enum tenc_drop why, uint64_t n) {
  cadd(&e->ctr[why], n);
  if (peer >= 0) cadd(&pctr(e, (uint32_t)peer)[TENC_P_DROPS + why], n);
}

/* ---- wire helpers ---------------------------------------------------------- */

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

/* A plaintext's length once padded (whitepaper §5.4.6, as Linux and paddingSize in
 * src/noise/transport.ts do it): to a multiple of 16, but never past the tunnel MTU
 * (0: no MTU), so a full-size packet's message fits the path the MTU was made for. */
static inline uint32_t padded_len(uint32_t len, uint32_t mtu) {
  if (!mtu) return pad16(len);
  uint32_t last = len > mtu ? len % mtu : len;
  uint32_t p = pad16(last);
  if (p > mtu) p = mtu;
  return len + (p - last);
}

/* Room a plaintext of `len` bytes needs for sealing in place. */
static inline uint32_t sealed_room(uint32_t len) { return TENC_HEADROOM + pad16(len) + TENC_AEAD_TAG_LEN; }

static inline int same_ep(const struct sockaddr_in6 *a, const struct sockaddr_in6 *b) {
  return a->sin6_port == b->sin6_port && memcmp(&a->sin6_addr, &b->sin6_addr, 16) == 0;
}

/* REJECT_AFTER_TIME (whitepaper §6.1): a keypair this old seals and opens nothing,
 * whatever the control plane still holds. `now` is the batch's tenc_now_ms(). */
static inline int kp_expired(const tenc_keypair *kp, uint64_t now) {
  return now - kp->birth_ms >= TENC_REJECT_AFTER_TIME_MS && now >= kp->birth_ms;
}

/* ---- keypair index (local index -> keypair), open addressing --------------
 * Looked up per received data message (engine_rx.c), edited by the control calls
 * (engine_peers.c) under the write lock. */

static inline uint32_t khash(uint32_t k) {
  k ^= k >> 16;
  k *= 0x7feb352d;
  k ^= k >> 15;
  k *= 0x846ca68b;
  k ^= k >> 16;
  return k;
}

static inline tenc_keypair *kmap_get(const tenc_engine *e, uint32_t key) {
  uint32_t m = e->kcap - 1;
  for (uint32_t i = khash(key) & m, n = 0; n < e->kcap; i = (i + 1) & m, n++) {
    tenc_kslot *s = &e->kmap[i];
    if (!s->kp) return NULL;
    if (s->kp != KP_DELETED && s->key == key) return s->kp;
  }
  return NULL;
}

/* ---- events (engine_events.c) ---------------------------------------------- */

/* An event of a peer or keypair: 0, or -1 when the queue is full (counted in
 * TENC_G_EVENTS_LOST; the caller sets its "signaled" flag only on 0, so the next
 * packet tries again). */
int tenc_ev_push(tenc_engine *e, uint8_t type, uint32_t peer, uint32_t local_index, const struct sockaddr_in6 *ep);
/* The peer's endpoint moved to `ep` (RX pipeline, read lock): one pending event per
 * peer, a later address replaces the one it carries. 0, or -1 (full, counted). */
int tenc_ev_push_endpoint(tenc_engine *e, tenc_peer *p, const struct sockaddr_in6 *ep);
/* Handshake message: bounded by TENC_HS_QUEUE_MAX pending. */
void tenc_ev_push_handshake(tenc_engine *e, const uint8_t *data, uint32_t len, const struct sockaddr_in6 *from);
/* A route miss: the destination (in ep, IPv4 mapped) and, when it fits, a copy of
 * the packet. Bounded by TENC_MISS_QUEUE_MAX pending; beyond that it is not reported. */
void tenc_ev_push_miss(tenc_engine *e, int v, const uint8_t *dst, const uint8_t *pkt, uint32_t len);

/* A batch of at most this many records is small: the busy poll, the inline reply and
 * the sibling poll follow it (engine_loop.c). */
#define SPIN_SMALL 16

/* The back-off of an optional try after a small batch (the busy poll, the inline
 * reply, the sibling's inline reply): once `limit` tries in a row caught nothing
 * (one-way traffic), only every 16th chance tries, so a try that keeps finding
 * nothing is not a wasted system call per batch. */
static inline int tenc_backoff_try(tenc_backoff *b, uint32_t limit) {
  return b->misses < limit || ++b->skip % 16 == 0;
}

static inline void tenc_backoff_caught(tenc_backoff *b, int caught) {
  b->misses = caught ? 0 : b->misses + 1;
}

/* Masks (masked = 1) or unmasks fd in the epoll set ep (engine.h, tx_ep/rx_ep): a
 * masked fd wakes nobody; unmasking wakes the waiter if the fd is ready. */
static inline void tenc_ep_mask(int ep, int fd, int masked) {
  struct epoll_event ev = {.events = masked ? 0 : EPOLLIN, .data.fd = fd};
  (void)epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

/* Sibling batches this thread is running (engine_loop.c's sibling poll; defined in
 * engine_tx.c): their sends never block. */
extern __thread int tenc_sib_depth;

/* Once per batch: wakes the node thread if there is something new. */
static inline void ev_flush(tenc_engine *e) {
  pthread_mutex_lock(&e->ev_mu);
  int sig = e->ev_len > 0 && !e->ev_signaled;
  if (sig) e->ev_signaled = 1;
  pthread_mutex_unlock(&e->ev_mu);
  if (sig && e->signal) e->signal(e);
}

/* ---- send pipeline (engine_tx.c) ------------------------------------------- */

/* The TX pipeline's batch state, NULL on allocation failure. */
struct tenc_tx *tenc_tx_new(const tenc_engine_opts *o);
void tenc_tx_free(struct tenc_tx *t);
/* One send batch (tx_mu held): stages 1-5. Returns the number of records read
 * (0: the device was empty) and sets *more when the batch was full; -1 on a read
 * error (counted). */
int tenc_tx_cycle(tenc_engine *e, struct tenc_tx *t, int *more);
/* Frees a peer's queued packets, counted as no_session drops when `count`. */
void tenc_queue_free_all(tenc_engine *e, tenc_peer *p, int count);
/* Seals and sends the peer's queue through its send keypair (write lock held). */
void tenc_queue_flush_through(tenc_engine *e, tenc_peer *p);

/* ---- receive pipeline (engine_rx.c, engine_hsgate.c) ------------------------ */

struct tenc_rx *tenc_rx_new(void);
void tenc_rx_free(struct tenc_rx *x);
/* One receive batch (rx_mu held): stages 1-5 for one recvmmsg. Returns the number
 * of datagrams (0: none waiting), sets *more when the batch was full and, when
 * `injected` is not NULL, the number of inner packets it injected. */
int tenc_rx_cycle(tenc_engine *e, struct tenc_rx *x, int *more, uint32_t *injected);
/* The handshake gate's table (tenc_engine.rl, rl_seed): 0 or -1 (ENOMEM). */
int tenc_hs_gate_init(tenc_engine *e);
void tenc_hs_gate_free(tenc_engine *e);
/* Returns 1 when a handshake message may go to the control plane (counted drops
 * otherwise). RX pipeline (rx_mu held). */
int tenc_hs_gate(tenc_engine *e, const uint8_t *m, uint32_t len, const struct sockaddr_in6 *from, uint64_t now);

/* ---- peers and keys (engine_peers.c) ---------------------------------------- */

/* Frees a peer, its queue (counted when `count_queue`) and its keypairs (write lock). */
void tenc_peer_free(tenc_engine *e, tenc_peer *p, int count_queue);
/* Wipes and unmaps the session-key vault. */
void tenc_vault_destroy(tenc_engine *e);

#endif
