/* engine_events.c: where the pipelines hand something to the control plane. The
 * TX and RX threads (and control calls) append events under ev_mu; once per batch
 * ev_flush (engine_internal.h) wakes the node thread, which takes them all
 * (tenc_engine_take_events, from engine_js.c's thread-safe function). Each kind
 * is bounded: handshakes by TENC_HS_QUEUE_MAX, route misses by TENC_MISS_QUEUE_MAX,
 * endpoint changes to one pending per peer (a later address updates it: an on-path
 * relay from two alternating addresses makes one event, not one per packet),
 * need_handshake, rekey_needed and keypair_confirmed to one per peer or keypair
 * (their flags), and all of them together by ev_max (TENC_EV_QUEUE_MAX). An event
 * the full queue refuses is counted (TENC_G_EVENTS_LOST); those of the last four
 * kinds are made again by the next packet that would have made them (their flag
 * is set only once the event is queued; each try counts); a refused handshake
 * message is counted as the handshake_queue_full drop instead. */
#include "engine_internal.h"
#include <stdlib.h>

/* Appends an event (ev_mu held by the caller). Returns 0, -1 when full. */
static int ev_push_locked(tenc_engine *e, const tenc_event *ev) {
  if (e->ev_len >= e->ev_max) return -1;
  if (e->ev_len == e->ev_cap) {
    uint32_t nc = e->ev_cap ? e->ev_cap * 2 : 64;
    tenc_event *n = realloc(e->ev, nc * sizeof *n);
    if (!n) return -1;
    e->ev = n;
    e->ev_cap = nc;
  }
  e->ev[e->ev_len++] = *ev;
  return 0;
}

int tenc_ev_push(tenc_engine *e, uint8_t type, uint32_t peer, uint32_t local_index, const struct sockaddr_in6 *ep) {
  tenc_event ev = {.type = type, .peer = peer, .local_index = local_index};
  if (ep) ev.ep = *ep;
  pthread_mutex_lock(&e->ev_mu);
  int r = ev_push_locked(e, &ev);
  pthread_mutex_unlock(&e->ev_mu);
  if (r) cadd(&e->ctr[TENC_G_EVENTS_LOST], 1);
  return r;
}

int tenc_ev_push_endpoint(tenc_engine *e, tenc_peer *p, const struct sockaddr_in6 *ep) {
  int r = 0;
  pthread_mutex_lock(&e->ev_mu);
  if (p->ep_ev_gen == e->ev_gen && p->ep_ev < e->ev_len) {
    e->ev[p->ep_ev].ep = *ep; /* not taken yet: the latest address replaces the one it carried */
  } else {
    tenc_event ev = {.type = TENC_EV_ENDPOINT, .peer = p->id, .ep = *ep};
    r = ev_push_locked(e, &ev);
    if (r == 0) {
      p->ep_ev_gen = e->ev_gen;
      p->ep_ev = e->ev_len - 1;
    }
  }
  pthread_mutex_unlock(&e->ev_mu);
  if (r) cadd(&e->ctr[TENC_G_EVENTS_LOST], 1);
  return r;
}

void tenc_ev_push_handshake(tenc_engine *e, const uint8_t *data, uint32_t len, const struct sockaddr_in6 *from) {
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

void tenc_ev_push_miss(tenc_engine *e, int v, const uint8_t *dst, const uint8_t *pkt, uint32_t len) {
  tenc_event ev = {.type = TENC_EV_ROUTE_MISS};
  ev.ep.sin6_family = AF_INET6;
  if (v == 4) {
    ev.ep.sin6_addr.s6_addr[10] = ev.ep.sin6_addr.s6_addr[11] = 0xff;
    memcpy(&ev.ep.sin6_addr.s6_addr[12], dst, 4);
  } else {
    memcpy(&ev.ep.sin6_addr, dst, 16);
  }
  int lost = 0;
  pthread_mutex_lock(&e->ev_mu);
  if (e->ev_miss < TENC_MISS_QUEUE_MAX) {
    if (len <= TENC_MISS_COPY_MAX && (ev.data = malloc(len ? len : 1)) != NULL) {
      memcpy(ev.data, pkt, len);
      ev.len = len;
    }
    if (ev_push_locked(e, &ev) == 0) {
      e->ev_miss++;
    } else {
      lost = 1;
      if (ev.data) {
        explicit_bzero(ev.data, ev.len); /* the pod's plaintext */
        free(ev.data);
      }
    }
  }
  pthread_mutex_unlock(&e->ev_mu);
  if (lost) cadd(&e->ctr[TENC_G_EVENTS_LOST], 1);
}

void tenc_engine_report_misses(tenc_engine *e, int on) { atomic_store(&e->report_misses, on ? 1 : 0); }

void tenc_engine_test_event_cap(tenc_engine *e, uint32_t max) {
  pthread_mutex_lock(&e->ev_mu);
  e->ev_max = max > TENC_EV_QUEUE_MAX ? TENC_EV_QUEUE_MAX : max;
  pthread_mutex_unlock(&e->ev_mu);
}

tenc_event *tenc_engine_take_events(tenc_engine *e, uint32_t *n) {
  pthread_mutex_lock(&e->ev_mu);
  tenc_event *ev = e->ev;
  *n = e->ev_len;
  e->ev = NULL;
  e->ev_len = e->ev_cap = e->ev_hs = e->ev_miss = 0;
  e->ev_gen++; /* the peers' pending endpoint events are taken (64 bits: never wraps) */
  e->ev_signaled = 0;
  pthread_mutex_unlock(&e->ev_mu);
  return ev;
}
