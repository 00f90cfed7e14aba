#ifndef TENC_ENGINE_H
#define TENC_ENGINE_H
/* engine.h: the native data plane (src/dataplane/plane.ts DataPlane, driven by
 * src/dataplane/native.ts through engine_js.c).
 *
 * Two threads per engine; the node main thread only makes per-flow control calls.
 * One file per stage (engine_internal.h has the list and what they share):
 * engine_loop.c (lifecycle, thread loops), engine_tx.c (send), engine_rx.c
 * (receive), engine_hsgate.c (handshake gate), engine_peers.c (peers, keypairs,
 * key vault, tables), engine_events.c (events to the node thread).
 *
 * Send (TX thread, engine_tx.c), per batch of packets read from the TUN device:
 *   1. read: up to TX_MAX_RECS packets; with IFF_VNET_HDR, TSO/USO super-packets
 *      are segmented and partial checksums finished (offload.c); with scatter
 *      seal (default) only each segment's header is written here, its payload
 *      stays in the super-packet until stage 4 seals it from there
 *   2. classify: inner destination -> allowed-IPs longest prefix -> peer
 *      (no peer: drop no_route, and with reporting on a route_miss event carrying
 *      the packet, once per destination per second); replies of DNATed flows get
 *      the VIP back (nat.c)
 *   3. no send keypair or endpoint: bounded per-peer queue + one need_handshake
 *   4. counter = keypair.send_counter++ (drop at REJECT_AFTER_MESSAGES,
 *      rekey_needed once past REKEY_AFTER_MESSAGES); pad to 16; seal in place
 *      behind the 16-byte header that sits in the headroom
 *   5. send: sendmmsg, runs of same-endpoint same-size messages as one UDP GSO
 *      datagram (UDP_SEGMENT)
 * Receive (RX thread, engine_rx.c), per recvmmsg batch:
 *   1. split UDP GRO datagrams into messages
 *   2. gate: type and length (bad_header); types 1-3 -> mac1 and rate limit
 *      (engine_hsgate.c) -> `handshake` event
 *   3. type 4: receiver index -> keypair (unknown_index); replay check (replay);
 *      open (auth); replay commit; keypair_confirmed / endpoint events
 *   4. empty plaintext = keepalive; inner IPv4/IPv6 header and length (bad_inner);
 *      inner source must map to the same peer (spoofed_source)
 *   5. DNAT of LocalService VIPs (nat.c); inject: raw sockets (sendmmsg per
 *      family) or TUN writes. With offloads (vnet_hdr), runs of TCP segments of one
 *      flow are first merged (offload.c tenc_gro_tcp): into one TSO frame for the
 *      TUN device, or into one large IP packet for the raw socket (local
 *      destinations route via lo, MTU 64 KiB; EMSGSIZE falls back to segments).
 *      Single packets written to TUN carry VIRTIO_NET_HDR_F_DATA_VALID: they were
 *      authenticated, so their checksums are the sender's (as kernel WireGuard).
 *      A merged frame goes out as one writev of its headers and the payloads
 *      where they were decrypted (TENC_GRO_IOV, default on).
 *   6. inline reply: after a small batch written to TUN, the RX thread reads the
 *      device once and sends what the kernel answered within that write (echo
 *      reply, ACK) itself, instead of a TX thread wake-up (TENC_INLINE_TX;
 *      engine_loop.c, as the TX thread's busy poll)
 * Each pipeline's batch state is guarded by its mutex (tx_mu, rx_mu): its own
 * thread, or with trylock the other one (inline reply, busy poll) or a thread of
 * another engine of this process (the sibling poll, engine_loop.c).
 *
 * Locking: one rwlock over peers, keypairs, allowed IPs and services. Each thread
 * holds it for reading per batch; control calls take it for writing. A peer's
 * endpoint also has a spinlock (the RX thread updates it while TX reads). Send
 * counters are atomic; counters in the shared array use relaxed atomics.
 *
 * Counters: one array of uint64 (exposed to JS as an ArrayBuffer):
 *   [0 .. TENC_GLOBAL_SLOTS)   global: drops by reason (DROP_REASONS order), then
 *                              TENC_G_HANDSHAKE_RX, TENC_G_KEEPALIVE_RX
 *   per peer p at TENC_GLOBAL_SLOTS + p * TENC_PEER_SLOTS: TENC_P_* fields, then
 *                              drops by reason from TENC_P_DROPS.
 * Byte counters count UDP payload bytes (whole transport messages). Times are
 * CLOCK_MONOTONIC milliseconds (tenc_now_ms), 0 = never. */
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include "aead.h"
#include "allowedips.h"
#include "nat.h"
#include "replay.h"

#define TENC_MAX_PEERS 65536
#define TENC_QUEUE_MAX 128
#define TENC_PEER_MAX_KEYPAIRS 8
#define TENC_HS_QUEUE_MAX 1024
/* Route misses (an outgoing packet no peer claims), when reporting is on: up to
 * TENC_MISS_BURST events per destination per TENC_MISS_INTERVAL_MS (the first
 * packets of a flow, which the control plane can release once it has classified the
 * address), at most TENC_MISS_QUEUE_MAX waiting for the control plane, each
 * carrying the packet (up to TENC_MISS_COPY_MAX). */
#define TENC_MISS_INTERVAL_MS 1000
#define TENC_MISS_BURST 16
#define TENC_MISS_QUEUE_MAX 64
#define TENC_MISS_COPY_MAX 2048
#define TENC_MISS_SLOTS 256
/* Events waiting for the control plane, all kinds together (engine_events.c). */
#define TENC_EV_QUEUE_MAX 65536
#define TENC_HEADROOM 16

enum tenc_drop {
  TENC_D_BAD_HEADER,
  TENC_D_UNKNOWN_INDEX,
  TENC_D_REPLAY,
  TENC_D_AUTH,
  TENC_D_SPOOFED_SOURCE,
  TENC_D_BAD_INNER,
  TENC_D_NO_SESSION,
  TENC_D_NO_ROUTE,
  TENC_D_QUEUE_FULL,
  TENC_D_COUNTER_EXHAUSTED,
  TENC_D_HANDSHAKE_QUEUE_FULL,
  TENC_D_TOO_BIG,
  TENC_D_IO,
  TENC_D_BAD_DESTINATION, /* authentic, but the inner destination is not an address of this pod */
  TENC_D_BAD_MAC1,        /* handshake message whose mac1 is not made with our public key */
  TENC_D_HANDSHAKE_RATELIMITED, /* under load: its source address is over its handshake rate */
  TENC_D_KEYPAIR_EXPIRED, /* keypair older than REJECT_AFTER_TIME (sent nothing / opened nothing) */
  TENC_D_NAT_TABLE_FULL,  /* a new flow to a service VIP whose bucket holds only live flows (nat.h) */
  TENC_D_NAT_CLASH,       /* a new flow to a service VIP with the reply tuple of a live flow of another VIP */
  TENC_D_COUNT
};

enum {
  TENC_G_HANDSHAKE_RX = TENC_D_COUNT, /* handshake messages handed to the control plane */
  TENC_G_KEEPALIVE_RX,
  TENC_G_UNDER_LOAD,       /* times the receive path entered the handshake under-load state */
  TENC_G_KEY_LOCKED,       /* bytes of session-key memory locked in RAM (mlock) */
  TENC_G_KEY_UNLOCKED,     /* bytes of session-key memory mlock refused (RLIMIT_MEMLOCK): still MADV_DONTDUMP */
  TENC_G_RATELIMIT_SOURCES, /* source addresses the handshake rate limiter tracks now */
  TENC_G_SIBLING_RX,       /* receive batches of this engine run by a sibling engine's thread (TENC_SIBLING_POLL) */
  TENC_G_EVENTS_LOST,      /* events the full event queue refused (engine_events.c; one made again counts each try) */
  TENC_GLOBAL_SLOTS = 32
};
_Static_assert(TENC_G_EVENTS_LOST < TENC_GLOBAL_SLOTS, "global counter slots overflow");
enum {
  TENC_P_TX_BYTES,
  TENC_P_RX_BYTES,
  TENC_P_TX_PACKETS,
  TENC_P_RX_PACKETS,
  TENC_P_LAST_TX_MS,
  TENC_P_LAST_RX_MS,
  TENC_P_LAST_TX_DATA_MS,
  TENC_P_LAST_RX_DATA_MS,
  TENC_P_DROPS,
  TENC_PEER_SLOTS = 32
};
_Static_assert(TENC_P_DROPS + TENC_D_COUNT <= TENC_PEER_SLOTS, "per-peer counter slots overflow");

/* Addresses of the pod: an authentic inner packet is injected only when its
 * destination (after DNAT) is one of these or a service's local address. */
#define TENC_MAX_LOCAL 16

enum tenc_event_type { TENC_EV_HANDSHAKE, TENC_EV_NEED_HANDSHAKE, TENC_EV_KEYPAIR_CONFIRMED,
                       TENC_EV_REKEY_NEEDED, TENC_EV_ENDPOINT, TENC_EV_ROUTE_MISS };

typedef struct {
  uint8_t type;
  uint32_t peer, local_index;
  struct sockaddr_in6 ep;
  uint8_t *data; /* handshake bytes or the missed packet (malloc) */
  uint32_t len;
} tenc_event;

struct tenc_peer;

/* Keypairs die REJECT_AFTER_TIME after their birth (whitepaper §6.1): no message is
 * sealed or opened with them after that, whatever the control plane does. */
#define TENC_REJECT_AFTER_TIME_MS 180000u

typedef struct tenc_keypair {
  uint32_t local_index, remote_index;
  uint8_t *send_key, *recv_key; /* 32 bytes each, in the key vault (locked, not dumped) */
  uint64_t birth_ms; /* tenc_now_ms() at add_keypair */
  struct tenc_peer *peer;
  _Atomic uint64_t send_counter;
  atomic_int rekey_signaled;
  int confirmed; /* RX thread only */
  tenc_replay replay; /* RX thread only */
} tenc_keypair;

typedef struct {
  uint8_t *buf; /* TENC_HEADROOM bytes, plaintext, room for padding and tag */
  uint32_t len;
} tenc_qpkt;

typedef struct tenc_peer {
  uint32_t id;
  pthread_spinlock_t ep_lock;
  struct sockaddr_in6 ep;
  int has_ep;
  tenc_keypair *send;
  tenc_keypair *kps[TENC_PEER_MAX_KEYPAIRS];
  int nkps;
  tenc_qpkt q[TENC_QUEUE_MAX];
  uint32_t qhead, qlen;
  int need_hs_signaled;
  int ep_unreported;        /* RX pipeline: the endpoint moved, but the full queue refused its event */
  uint64_t ep_ev_gen; /* ev_mu: while it is the engine's ev_gen, e->ev[ep_ev] is this peer's pending */
  uint32_t ep_ev;     /* endpoint event (one per peer: a later address updates it) */
} tenc_peer;

typedef struct {
  uint32_t key;
  tenc_keypair *kp; /* NULL = empty, (void*)1 = deleted */
} tenc_kslot;

typedef struct {
  int tun_fd, udp_fd, raw4_fd, raw6_fd;
  int mode_tun;       /* inject by writing to the TUN device instead of raw sockets */
  int vnet_hdr;       /* the TUN fd carries virtio_net_hdr */
  int udp_gso, udp_gro;
  uint32_t mtu;       /* 0 = no check; else plaintext larger than this is too_big */
  int scatter_seal;   /* seal TSO/USO segments out of the super-packet (no copy first) */
  uint32_t busy_poll_us; /* 0 = off; else idle budget of the busy poll after a small batch */
  int inline_tx;      /* RX thread: after a small TUN write, read and send the answer itself */
  int sibling_poll;   /* a small batch sent to another engine of this process: run its receive here */
  int data_epoll;     /* the data threads wait in epoll sets (0: in poll(), the fallback; no sibling poll) */
  uint32_t tso_align;  /* TCP segments cut so their IP length is a multiple of this (0 = off) */
  uint32_t tso_max;    /* TCP segments at most this many bytes of IP packet (0 = as the kernel asks) */
  int gro_iov;        /* TUN GRO: writev of headers + payloads in place instead of a merged copy */
  uint32_t tx_batch_kb;  /* 0 = the whole arena; else stop reading the TUN device past this much */
} tenc_engine_opts;

/* Session-key memory: 64 KiB chunks of 64-byte slots (a keypair's send and receive
 * key), mmap'ed apart from the heap, MADV_DONTDUMP, mlock'ed where RLIMIT_MEMLOCK
 * allows (counted in TENC_G_KEY_LOCKED / TENC_G_KEY_UNLOCKED), wiped on free. */
typedef struct {
  uint8_t **chunks;
  uint32_t nchunks;
  void *free; /* free slots, linked through their first bytes */
} tenc_vault;

/* Handshake rate limit per source address under load (as the kernel's
 * ratelimiter.c and wireguard-go's ratelimiter): a token bucket of
 * TENC_RL_PER_SECOND messages a second, TENC_RL_BURST at once, per IPv4 address or
 * IPv6 /64, in a fixed table (TENC_RL_SLOTS, keyed hash, probed TENC_RL_PROBE deep).
 * A source that finds no free or refilled slot is refused: memory stays bounded. */
#define TENC_RL_PER_SECOND 20u
#define TENC_RL_BURST 5u
#define TENC_RL_SLOTS 8192u
#define TENC_RL_PROBE 8u
/* Under load: more than TENC_HS_LOAD_PER_SECOND handshake messages with a valid mac1 in
 * one second, or TENC_HS_QUEUE_MAX / 8 waiting for the control plane; it lasts
 * TENC_UNDER_LOAD_MS after the last such moment. */
#define TENC_HS_LOAD_PER_SECOND 64u
#define TENC_UNDER_LOAD_MS 1000u
typedef struct {
  uint8_t key[9]; /* family, then 4 (IPv4) or 8 (IPv6 /64) address bytes */
  uint8_t used;
  uint64_t last_ms;
  uint64_t tokens; /* ms of credit: each message costs 1000 / TENC_RL_PER_SECOND */
} tenc_rl_slot;

/* An optional try's misses in a row (engine_internal.h, tenc_backoff_try). */
typedef struct {
  uint32_t misses, skip;
} tenc_backoff;

typedef struct tenc_engine tenc_engine;
typedef void (*tenc_event_signal)(tenc_engine *e); /* called once per batch with new events */

struct tenc_engine {
  tenc_engine_opts o;
  int stop_fd;
  pthread_rwlock_t lock;
  tenc_peer **peers;
  tenc_kslot *kmap;
  uint32_t kcap, kused, kdead;
  tenc_aips *aips;
  tenc_nat nat;
  uint8_t local_family[TENC_MAX_LOCAL];
  uint8_t local_addr[TENC_MAX_LOCAL][16];
  uint32_t nlocal; /* 0 = not configured: no destination check (engine tests only) */
  uint64_t *ctr;
  tenc_vault vault; /* session keys (write lock) */
  /* handshake gate (RX pipeline, rx_mu) */
  uint8_t mac1_key[32]; /* HASH(LABEL_MAC1 || our public key) */
  atomic_int has_mac1_key; /* 0: no mac1 check (engine tests that send raw handshake bytes) */
  uint64_t hs_window_ms, under_load_until;
  uint32_t hs_window_n;
  uint64_t rl_seed[2];
  tenc_rl_slot *rl;
  /* events */
  pthread_mutex_t ev_mu;
  tenc_event *ev;
  uint32_t ev_len, ev_cap, ev_hs, ev_miss;
  uint32_t ev_max; /* TENC_EV_QUEUE_MAX (a test hook lowers it) */
  uint64_t ev_gen; /* bumped by every take: tells a peer's pending endpoint event from a taken one */
  atomic_int report_misses; /* route_miss events on (set by the control plane) */
  int ev_signaled;
  tenc_event_signal signal;
  void *js; /* engine_js.c state */
  /* threads */
  pthread_t tx_thr, rx_thr;
  pthread_mutex_t tx_mu, rx_mu; /* a pipeline's batch state: its thread, or the other one busy polling */
  uint32_t busy_poll_us;
  int inline_tx;
  int threads_started;
  /* The threads wait in epoll sets (poll() if they could not be made): the TX thread's
   * holds the TUN device, the RX thread's the UDP socket, both the stop eventfd. A
   * thread about to do the other's work masks its fd there (a masked fd wakes nobody;
   * unmasking wakes the waiter if the fd is ready). */
  int tx_ep, rx_ep;
  int rx_quiet, rx_quieted; /* under rx_mu: mask the TX thread before injecting a small batch / it is masked */
  uint16_t udp_port;        /* the UDP socket's port (network order), for siblings */
  int sibling;              /* in the process's list of siblings */
  /* the local addresses as siblings match them: a copy under the list's lock (engine_loop.c) */
  uint8_t sib_family[TENC_MAX_LOCAL];
  uint8_t sib_addr[TENC_MAX_LOCAL][16];
  uint32_t sib_nlocal;
  tenc_backoff sib_reply;   /* under rx_mu: the sibling inline reply's back-off */
  /* The sibling poll's steps (engine_loop.c), called through these by the pipelines
   * and the local-address setter: find the engine that owns an endpoint (its socket
   * masked, the list held) or NULL; run its batch, unmask, release; copy e's local
   * addresses for the matching. NULL when the engine takes no part. */
  tenc_engine *(*sibling_find)(tenc_engine *e, const struct sockaddr_in6 *ep);
  void (*sibling_run)(tenc_engine *s);
  void (*sibling_local)(tenc_engine *e);
  atomic_int stopping;
  atomic_uint key_gen; /* bumped when a keypair is freed: threads then wipe their AEAD contexts' cached key */
  uint32_t tx_batch;   /* arena bytes read from the TUN device per batch (about; 0 = all) */
  tenc_aead *ctl_aead; /* node thread */
  struct tenc_tx *tx;
  struct tenc_rx *rx;
};

/* Creates the engine over the given fds (ownership passes on success) with
 * counters in `ctr` (caller-owned, zeroed, counters_len() uint64). Returns NULL
 * and sets errno on failure. tenc_engine_start spawns the threads. */
static inline size_t tenc_engine_counters_len(void) { return TENC_GLOBAL_SLOTS + (size_t)TENC_MAX_PEERS * TENC_PEER_SLOTS; }
tenc_engine *tenc_engine_new(const tenc_engine_opts *o, uint64_t *ctr, tenc_event_signal sig, void *js);
int tenc_engine_start(tenc_engine *e);
/* Stops and joins the threads, zeroes keys, frees state, closes fds. */
void tenc_engine_stop(tenc_engine *e);
void tenc_engine_free(tenc_engine *e);

/* Control calls (node thread). Return 0 or a negative errno. */
int tenc_engine_add_peer(tenc_engine *e, uint32_t id, const struct sockaddr_in6 *ep);
int tenc_engine_remove_peer(tenc_engine *e, uint32_t id);
int tenc_engine_set_endpoint(tenc_engine *e, uint32_t id, const struct sockaddr_in6 *ep);
int tenc_engine_allowed_ip(tenc_engine *e, uint32_t id, int family, const uint8_t *addr, int plen, int add);
int tenc_engine_add_keypair(tenc_engine *e, uint32_t id, uint32_t local, uint32_t remote, const uint8_t *send_key,
                            const uint8_t *recv_key);
int tenc_engine_set_send_keypair(tenc_engine *e, uint32_t id, int has, uint32_t local);
int tenc_engine_remove_keypair(tenc_engine *e, uint32_t local);
int tenc_engine_send_handshake(tenc_engine *e, const struct sockaddr_in6 *to, const uint8_t *data, size_t len);
/* Returns 1 sent, 0 no send keypair or endpoint, or a negative errno. */
int tenc_engine_send_keepalive(tenc_engine *e, uint32_t id);
int tenc_engine_flush_queue(tenc_engine *e, uint32_t id);
void tenc_engine_set_services(tenc_engine *e, tenc_nat_service *s, uint32_t n);
/* Replaces the pod's own addresses (family 4 or 6, address in the first 4 or 16 bytes). */
void tenc_engine_set_local(tenc_engine *e, const uint8_t *family, const uint8_t (*addr)[16], uint32_t n);
/* Sets our static public key: handshake messages (types 1, 2) must then carry a mac1
 * made with it, or they are dropped as bad_mac1 before the control plane sees them. */
void tenc_engine_set_public_key(tenc_engine *e, const uint8_t pub[32]);
/* Test hook: makes a keypair `ms` older (REJECT_AFTER_TIME tests). */
int tenc_engine_test_age_keypair(tenc_engine *e, uint32_t local, uint64_t ms);
/* Test hook: moves a keypair's next send counter (REKEY/REJECT_AFTER_MESSAGES tests). */
int tenc_engine_set_send_counter(tenc_engine *e, uint32_t local, uint64_t counter);
/* Test hooks of the NAT flow table (nat.h): `buckets` buckets (flows forgotten; 0,
 * or -EINVAL for a bad argument); every flow `ms` older. */
int tenc_engine_test_nat_buckets(tenc_engine *e, uint32_t buckets);
void tenc_engine_test_age_flows(tenc_engine *e, uint64_t ms);
/* Test hook: at most `max` events wait for the control plane (TENC_EV_QUEUE_MAX). */
void tenc_engine_test_event_cap(tenc_engine *e, uint32_t max);
/* The peer the allowed-IPs table sends `addr` to, or -1. */
int32_t tenc_engine_route(tenc_engine *e, int family, const uint8_t *addr);
/* Turns route_miss events on or off. */
void tenc_engine_report_misses(tenc_engine *e, int on);
/* Test hook: stage 1 + seal of one TUN frame, see engine_tx.c. */
int tenc_engine_test_seal(const uint8_t *frame, uint32_t flen, int scatter, uint32_t tcp_align, uint32_t mtu,
                          const uint8_t *key, uint32_t remote, uint64_t ctr0, uint8_t *out, uint32_t cap, uint32_t *used);
/* Fuzzing hook: one receive batch on the calling thread (threads not started), see engine_rx.c. */
int tenc_engine_test_rx(tenc_engine *e);
/* Takes the pending events (caller frees each data and the array). */
tenc_event *tenc_engine_take_events(tenc_engine *e, uint32_t *n);

#endif
