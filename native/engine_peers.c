/* engine_peers.c: the tables both pipelines read under the engine's read lock,
 * and the control calls (node thread, write lock) that edit them: peers and their
 * endpoints, keypairs (the local index table engine_rx.c looks messages up in, the
 * key vault their keys live in), allowed IPs, the pod's own addresses and its
 * LocalServices (nat.c). Sending through a peer is engine_tx.c. */
#include "engine_internal.h"
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

/* ---- keypair index (kmap_get is in engine_internal.h) ------------------------ */

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

/* ---- key vault (engine.h tenc_vault; write lock) ---------------------------- */

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

void tenc_vault_destroy(tenc_engine *e) {
  tenc_vault *v = &e->vault;
  for (uint32_t i = 0; i < v->nchunks; i++) {
    explicit_bzero(v->chunks[i], VAULT_CHUNK);
    munmap(v->chunks[i], VAULT_CHUNK);
  }
  free(v->chunks);
  memset(v, 0, sizeof *v);
}
/* Called on the node thread (under the write lock). The TX/RX threads wipe the key
 * their AEAD contexts cached at their next batch (key_gen); the node thread's own
 * context is wiped here. */
static void keypair_free(tenc_engine *e, tenc_keypair *kp) {
  if (kp->send_key) vault_put(e, kp->send_key); /* recv_key is the same slot's second half */
  explicit_bzero(kp, sizeof *kp);
  free(kp);
  tenc_aead_clear(e->ctl_aead);
  atomic_fetch_add(&e->key_gen, 1);
}

void tenc_peer_free(tenc_engine *e, tenc_peer *p, int count_queue) {
  tenc_queue_free_all(e, p, count_queue);
  for (int i = 0; i < p->nkps; i++) {
    kmap_del(e, p->kps[i]->local_index);
    keypair_free(e, p->kps[i]);
  }
  pthread_spin_destroy(&p->ep_lock);
  free(p);
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
    tenc_peer_free(e, p, 1);
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
      if (p->has_ep) tenc_queue_flush_through(e, p);
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

int tenc_engine_set_send_counter(tenc_engine *e, uint32_t local, uint64_t counter) {
  pthread_rwlock_wrlock(&e->lock);
  tenc_keypair *kp = kmap_get(e, local);
  int r = kp ? 0 : -ENOENT;
  /* only forward: a counter set back would seal again under nonces already used */
  if (kp && counter < atomic_load(&kp->send_counter)) r = -EINVAL;
  else if (kp) atomic_store(&kp->send_counter, counter);
  pthread_rwlock_unlock(&e->lock);
  return r;
}

int tenc_engine_test_age_keypair(tenc_engine *e, uint32_t local, uint64_t ms) {
  pthread_rwlock_wrlock(&e->lock);
  tenc_keypair *kp = kmap_get(e, local);
  int r = kp ? 0 : -ENOENT;
  if (kp && ms > kp->birth_ms) r = -EINVAL; /* before the clock's start: wrapped, it would never expire */
  else if (kp) kp->birth_ms -= ms;
  pthread_rwlock_unlock(&e->lock);
  return r;
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
  if (e->sibling_local) e->sibling_local(e);
}

void tenc_engine_set_services(tenc_engine *e, tenc_nat_service *s, uint32_t n) {
  pthread_rwlock_wrlock(&e->lock);
  tenc_nat_set_services(&e->nat, s, n); /* keeps the flows of the services that stay */
  pthread_rwlock_unlock(&e->lock);
}

/* Test hook (engine.h): the NAT table as `buckets` buckets. The write lock, since
 * both pipelines read the bucket mask before they take the table's mutex. */
int tenc_engine_test_nat_buckets(tenc_engine *e, uint32_t buckets) {
  pthread_rwlock_wrlock(&e->lock);
  int r = tenc_nat_test_buckets(&e->nat, buckets);
  pthread_rwlock_unlock(&e->lock);
  return r ? -EINVAL : 0;
}

/* Test hook (engine.h): every NAT flow `ms` older (idle timeout tests without the wait). */
void tenc_engine_test_age_flows(tenc_engine *e, uint64_t ms) {
  tenc_nat_test_age(&e->nat, ms);
}

