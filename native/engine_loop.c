/* engine_loop.c: the engine's life and its two threads. tenc_engine_new builds
 * the tables and both pipelines' batch state; tenc_engine_start spawns the TX
 * thread (waits for the TUN device -> tenc_tx_cycle, engine_tx.c) and the RX thread
 * (waits for the UDP socket -> tenc_rx_cycle, engine_rx.c), each in its epoll set.
 * After a small batch each thread may run the other pipeline instead of waking its
 * thread: the TX thread's busy poll, the RX thread's inline reply; and after a small
 * batch sent to another engine of this process, a thread runs that engine's receive
 * (the sibling poll).
 * tenc_engine_stop joins them, tenc_engine_free wipes keys and frees everything. */
#include "engine_internal.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- threads ------------------------------------------------------------------ */

/* Waits for fd in the thread's epoll set ep (poll() without one): 1 = ready, 0 = again, -1 = stop. */
static int wait_ready(tenc_engine *e, int ep, int fd) {
  if (ep >= 0) {
    struct epoll_event ev[2];
    int r = epoll_wait(ep, ev, 2, -1);
    if (r < 0) return errno == EINTR ? 0 : -1;
    int ready = 0;
    for (int i = 0; i < r; i++) {
      if (ev[i].data.fd == e->stop_fd) return -1;
      if (ev[i].data.fd == fd) ready = 1;
    }
    return ready;
  }
  struct pollfd pf[2] = {{.fd = fd, .events = POLLIN}, {.fd = e->stop_fd, .events = POLLIN}};
  int r = poll(pf, 2, -1);
  if (r < 0) return errno == EINTR ? 0 : -1;
  if (pf[1].revents) return -1;
  return r > 0 && (pf[0].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
}

/* ---- sibling poll (TENC_SIBLING_POLL) ------------------------------------------ */

/* The pods of a pod host are engines of one process. A small batch one of them sends
 * to another (a ping, a request) crosses the namespaces' veths inside the sender's
 * sendmmsg and lands in the receiver's socket before it returns; the receiver's RX
 * thread would then be woken only to do what the sender's thread can do at once.
 * So the sender masks the receiver's socket in its RX thread's set, sends, and runs
 * the receiver's batch (under the receiver's rx_mu, tried, never waited for) with its
 * inline reply, whose answer to the sender comes back the same way. Each pipeline
 * still does all its own checks: only the thread differs. At most two levels deep
 * on one thread (the request, then its answer). */
#define SIB_MAX 1024
static pthread_rwlock_t sib_lock; /* the list; writer first, so a stop is not starved by busy pods */
static pthread_once_t sib_once = PTHREAD_ONCE_INIT;
static tenc_engine *sibs[SIB_MAX];
static uint32_t nsibs;
static __thread int sib_held;  /* this thread's holds of the list's read lock (taken once, never twice) */

/* A rwlock whose waiting writer goes before new readers (the engine's lock, the list's). */
static void rwlock_init_writer_first(pthread_rwlock_t *l) {
  pthread_rwlockattr_t ra;
  pthread_rwlockattr_init(&ra);
  pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(l, &ra);
  pthread_rwlockattr_destroy(&ra);
}

static void sib_init(void) {
  rwlock_init_writer_first(&sib_lock);
}

static void sib_hold(void) {
  if (sib_held++ == 0) pthread_rwlock_rdlock(&sib_lock);
}

static void sib_release(void) {
  if (--sib_held == 0) pthread_rwlock_unlock(&sib_lock);
}

/* Under the list's lock: no engine's own lock is taken for a match. */
static int sib_owns(const tenc_engine *s, const struct sockaddr_in6 *ep) {
  if (s->udp_port != ep->sin6_port) return 0;
  const uint8_t *a = ep->sin6_addr.s6_addr;
  static const uint8_t v4map[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  int mapped = memcmp(a, v4map, 12) == 0;
  for (uint32_t k = 0; k < s->sib_nlocal; k++) {
    if (s->sib_family[k] == 4 && mapped && memcmp(a + 12, s->sib_addr[k], 4) == 0) return 1;
    if (s->sib_family[k] == 6 && !mapped && memcmp(a, s->sib_addr[k], 16) == 0) return 1;
  }
  return 0;
}

/* The node thread is the only writer of local_*: it reads them here without the engine's lock. */
static void sib_copy_local(tenc_engine *e) {
  memcpy(e->sib_family, e->local_family, sizeof e->sib_family);
  memcpy(e->sib_addr, e->local_addr, sizeof e->sib_addr);
  e->sib_nlocal = e->nlocal;
}

static void sibling_local(tenc_engine *e) {
  pthread_rwlock_wrlock(&sib_lock);
  sib_copy_local(e);
  pthread_rwlock_unlock(&sib_lock);
}

static tenc_engine *sibling_find(tenc_engine *e, const struct sockaddr_in6 *ep) {
  if (tenc_sib_depth >= 2) return NULL;
  sib_hold();
  for (uint32_t i = 0; i < nsibs; i++) {
    tenc_engine *s = sibs[i];
    if (s != e && sib_owns(s, ep)) {
      tenc_ep_mask(s->rx_ep, s->o.udp_fd, 1);
      return s;
    }
  }
  sib_release();
  return NULL;
}

static void sibling_run(tenc_engine *s) {
  if (pthread_mutex_trylock(&s->rx_mu) == 0) {
    tenc_sib_depth++;
    /* The inline reply: only with its TX pipeline in hand (this thread may hold it
     * further up: the answer to its own request), and backing off on one-way traffic
     * as the RX thread does. */
    int reply = s->inline_tx && tenc_backoff_try(&s->sib_reply, 4) && pthread_mutex_trylock(&s->tx_mu) == 0;
    int more = 0;
    uint32_t injected = 0;
    s->rx_quiet = reply;
    int n = tenc_rx_cycle(s, s->rx, &more, &injected);
    int quieted = s->rx_quieted;
    s->rx_quiet = s->rx_quieted = 0;
    if (n > 0) cadd(&s->ctr[TENC_G_SIBLING_RX], 1);
    if (reply) {
      int got = 0, m;
      if (injected && n <= SPIN_SMALL && !more) got = tenc_tx_cycle(s, s->tx, &m);
      tenc_backoff_caught(&s->sib_reply, got > 0);
      pthread_mutex_unlock(&s->tx_mu);
    }
    pthread_mutex_unlock(&s->rx_mu);
    if (quieted) tenc_ep_mask(s->tx_ep, s->o.tun_fd, 0);
    tenc_sib_depth--;
  }
  tenc_ep_mask(s->rx_ep, s->o.udp_fd, 0); /* wakes its RX thread if anything is left */
  sib_release();
}

static void sibling_add(tenc_engine *e) {
  struct sockaddr_in6 a;
  socklen_t l = sizeof a;
  if (!e->sibling_find) return;
  if (getsockname(e->o.udp_fd, (struct sockaddr *)&a, &l) != 0 || a.sin6_family != AF_INET6) return;
  e->udp_port = a.sin6_port;
  pthread_rwlock_wrlock(&sib_lock);
  sib_copy_local(e);
  if (nsibs < SIB_MAX) {
    sibs[nsibs++] = e;
    e->sibling = 1;
  }
  pthread_rwlock_unlock(&sib_lock);
}

/* Waits for any thread running this engine's batch as a sibling. */
static void sibling_del(tenc_engine *e) {
  if (!e->sibling) return;
  pthread_rwlock_wrlock(&sib_lock);
  for (uint32_t i = 0; i < nsibs; i++)
    if (sibs[i] == e) {
      sibs[i] = sibs[--nsibs];
      break;
    }
  e->sibling = 0;
  pthread_rwlock_unlock(&sib_lock);
}

/* ---- the threads ----------------------------------------------------------------- */

/* Busy poll (TENC_BUSY_POLL_US): after sending a small batch, instead of sleeping
 * at once, the TX thread keeps checking both the TUN device and the UDP
 * socket for up to busy_poll_us, and runs whichever pipeline has work (under its
 * mutex; when the other thread is running it, it is skipped). The answer to a
 * request just sent (a ping's reply) is then handled without the RX thread's
 * wake-up on the critical path. Activity restarts the budget; it is bounded by
 * busy_poll_us of idle time. (The RX side has the inline reply instead.) */
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
      did += tenc_tx_cycle(e, e->tx, &more) > 0;
      pthread_mutex_unlock(&e->tx_mu);
    }
    if ((pf[1].revents & POLLIN) && pthread_mutex_trylock(&e->rx_mu) == 0) {
      did += tenc_rx_cycle(e, e->rx, &more, NULL) > 0;
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
  int more = 0;
  tenc_backoff spin = {0, 0}; /* the busy poll's */
  while (!atomic_load(&e->stopping)) {
    if (!more) {
      int r = wait_ready(e, e->tx_ep, e->o.tun_fd);
      if (r < 0) break;
      if (r == 0) continue;
    }
    pthread_mutex_lock(&e->tx_mu);
    int n = tenc_tx_cycle(e, t, &more);
    pthread_mutex_unlock(&e->tx_mu);
    if (n < 0) {
      usleep(1000);
      continue;
    }
    /* Backing off after 8 spins in a row that caught nothing (nothing answers
     * what this pod sends). */
    if (!more && n > 0 && n <= SPIN_SMALL && e->busy_poll_us && tenc_backoff_try(&spin, 8))
      tenc_backoff_caught(&spin, busy_poll(e));
  }
  return NULL;
}

static void *rx_main(void *arg) {
  tenc_engine *e = arg;
  struct tenc_rx *x = e->rx;
  int more = 0;
  tenc_backoff inl = {0, 0}; /* the inline reply's */
  while (!atomic_load(&e->stopping)) {
    if (!more) {
      int r = wait_ready(e, e->rx_ep, e->o.udp_fd);
      if (r < 0) break;
      if (r == 0) continue;
    }
    pthread_mutex_lock(&e->rx_mu);
    uint32_t injected;
    int n = tenc_rx_cycle(e, x, &more, &injected);
    pthread_mutex_unlock(&e->rx_mu);
    if (more || n <= 0 || n > SPIN_SMALL) continue;
    /* Inline reply (TENC_INLINE_TX): a small batch just written to the TUN device
     * is usually answered within that write (the kernel runs the local stack in
     * it: an echo reply, a TCP ACK, a request's response). Read and send it from
     * here instead of waking the TX thread for it. */
    /* Backing off when the device had nothing the last few times (one-way
     * traffic: a UDP stream). */
    if (e->inline_tx && e->o.mode_tun && injected && tenc_backoff_try(&inl, 4) &&
        pthread_mutex_trylock(&e->tx_mu) == 0) {
      int m;
      int got = tenc_tx_cycle(e, e->tx, &m);
      pthread_mutex_unlock(&e->tx_mu);
      tenc_backoff_caught(&inl, got > 0);
    }
  }
  return NULL;
}

/* ---- lifecycle ----------------------------------------------------------- */

static int ep_add(int ep, int fd) {
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
  return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0;
}

static void set_nonblock(int fd) {
  if (fd < 0) return;
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0 && !(fl & O_NONBLOCK)) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

tenc_engine *tenc_engine_new(const tenc_engine_opts *o, uint64_t *ctr, tenc_event_signal sig, void *js) {
  tenc_engine *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  e->o = *o;
  e->ctr = ctr;
  /* The TX thread reads the device until EAGAIN: a blocking fd handed in would keep it
   * in read() past close. tun.c opens it non-blocking; this makes any other so. (The
   * UDP socket stays as it is: its sends block on a full buffer on purpose, and its
   * receives ask MSG_DONTWAIT.) */
  set_nonblock(o->tun_fd);
  e->signal = sig;
  e->js = js;
  e->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  /* Writer preference: two data threads holding read locks back to back must not
   * starve the control calls. */
  rwlock_init_writer_first(&e->lock);
  pthread_mutex_init(&e->ev_mu, NULL);
  e->ev_max = TENC_EV_QUEUE_MAX;
  e->ev_gen = 1; /* a new peer's ep_ev_gen (0) names no pending event */
  pthread_mutex_init(&e->tx_mu, NULL);
  pthread_mutex_init(&e->rx_mu, NULL);
  e->busy_poll_us = o->busy_poll_us;
  e->inline_tx = o->inline_tx;
  e->tx_ep = e->rx_ep = -1; /* without the sets the threads poll() instead: no masking, no sibling poll */
  if (o->data_epoll) {
    e->tx_ep = epoll_create1(EPOLL_CLOEXEC);
    e->rx_ep = epoll_create1(EPOLL_CLOEXEC);
    if (e->tx_ep < 0 || e->rx_ep < 0 || e->stop_fd < 0 || !ep_add(e->tx_ep, o->tun_fd) || !ep_add(e->tx_ep, e->stop_fd) ||
        !ep_add(e->rx_ep, o->udp_fd) || !ep_add(e->rx_ep, e->stop_fd)) {
      if (e->tx_ep >= 0) close(e->tx_ep);
      if (e->rx_ep >= 0) close(e->rx_ep);
      e->tx_ep = e->rx_ep = -1;
    }
  }
  if (o->sibling_poll && o->mode_tun && e->tx_ep >= 0) { /* before the threads: they read these unlocked */
    pthread_once(&sib_once, sib_init); /* the list's lock, before any of the steps below can run */
    e->sibling_find = sibling_find;
    e->sibling_run = sibling_run;
    e->sibling_local = sibling_local;
  }
  e->tx_batch = o->tx_batch_kb << 10;
  e->peers = calloc(TENC_MAX_PEERS, sizeof *e->peers);
  e->kcap = 64;
  e->kmap = calloc(e->kcap, sizeof *e->kmap);
  e->aips = tenc_aips_new();
  e->ctl_aead = tenc_aead_new();
  e->tx = tenc_tx_new(o);
  e->rx = tenc_rx_new();
  int ok = e->stop_fd >= 0 && e->peers && e->kmap && e->aips && e->ctl_aead && tenc_hs_gate_init(e) == 0 && e->tx &&
           e->rx && tenc_nat_init(&e->nat) == 0;
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
  sibling_add(e);
  return 0;
}

void tenc_engine_stop(tenc_engine *e) {
  sibling_del(e);
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
        tenc_peer_free(e, e->peers[i], 0);
        e->peers[i] = NULL;
      }
  pthread_rwlock_unlock(&e->lock);
  int *fds[] = {&e->o.tun_fd, &e->o.udp_fd, &e->o.raw4_fd, &e->o.raw6_fd, &e->stop_fd, &e->tx_ep, &e->rx_ep};
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
  tenc_vault_destroy(e);
  tenc_hs_gate_free(e);
  tenc_tx_free(e->tx);
  tenc_rx_free(e->rx);
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

