#ifndef TENC_NAT_H
#define TENC_NAT_H
/* nat.h: DNAT of LocalService VIPs (src/dataplane/plane.ts LocalService).
 *
 * Receive: an inner packet to vip[:port] has its destination rewritten to
 * localAddress and its IP/TCP/UDP checksums updated incrementally (RFC 1624); the
 * flow (client addr:port -> local addr:port, protocol, and the VIP) is remembered
 * in a bounded table. Send: a reply from local addr:port to that client gets its
 * source rewritten back to the VIP. IPv4 fragments and non-TCP/UDP packets are
 * left alone.
 * The table has TENC_NAT_SLOTS entries in 4-way buckets. A flow is live while a
 * packet went either way within its idle timeout (below); a live assured flow's
 * entry (answered; TCP: and acknowledged after) is never taken by another flow,
 * since its next reply would then leave with the local address as its source and
 * the client would reset the connection. A new flow takes a free way, else the least
 * recently used expired one, else the least recently used unassured one (never
 * answered: conntrack's early drop, so one peer's unanswered SYNs cannot fill a
 * bucket); when all four are live and assured it is refused (TENC_NAT_FULL, the
 * engine's nat_table_full drop). A
 * new flow whose reply tuple (client, local address, ports, protocol) is that of
 * a live flow of another VIP is refused too (TENC_NAT_CLASH, nat_clash, as
 * conntrack refuses a clash): its replies could not be told apart. New services
 * keep the flows they still DNAT (same VIP, local address, protocol and port).
 * Services are swapped under the engine's write lock; the flow table has its own
 * mutex (receive inserts, both paths look up and refresh). */
#include <pthread.h>
#include <stdint.h>

#define TENC_NAT_MAX_SERVICES 256
#define TENC_NAT_MAX_PORTS 64
#define TENC_NAT_SLOTS 65536
#define TENC_NAT_WAYS 4
/* Idle timeouts (since the last packet either way). TCP 5 minutes: the idle
 * timeouts clients already live with behind cloud NATs and load balancers are 4 to
 * 6 minutes, so a pool keeps its idle connections alive within that; and a TCP flow
 * still costs its way that long after it ended without a FIN or RST we saw. Once a
 * FIN or RST went either way: 10 s (conntrack's CLOSE), so closed connections free
 * their ways fast. UDP 30 s (conntrack's nf_conntrack_udp_timeout). An expired
 * flow stays usable until a new flow needs its way. */
#define TENC_NAT_TCP_IDLE_MS 300000u
#define TENC_NAT_TCP_CLOSING_MS 10000u
#define TENC_NAT_UDP_IDLE_MS 30000u
/* tenc_nat_dnat's refusals (the packet is left as it was and must be dropped) */
#define TENC_NAT_FULL (-1)  /* every way of the flow's bucket holds a live assured flow */
#define TENC_NAT_CLASH (-2) /* a live flow with the same reply tuple is another VIP's */

typedef struct {
  uint8_t family;
  uint8_t vip[16], local[16];
  uint16_t nports;
  struct { uint8_t proto; uint16_t port; } ports[TENC_NAT_MAX_PORTS];
} tenc_nat_service;

typedef struct {
  uint8_t used, family, proto;
  uint8_t closing; /* TCP: a FIN or RST went either way since the last SYN */
  uint8_t replied; /* a reply went back since the last SYN */
  uint8_t assured; /* UDP: replied; TCP: a client packet after a reply (the handshake done) */
  uint8_t client[16], local[16], vip[16];
  uint16_t cport, lport; /* network order */
  uint64_t last_ms; /* the last packet either way */
} tenc_nat_flow;

typedef struct {
  tenc_nat_service *services;
  uint32_t nservices;
  pthread_mutex_t mu;
  tenc_nat_flow *flows;
  uint32_t nflows; /* used entries (mu) */
  uint32_t mask;   /* buckets - 1 (TENC_NAT_SLOTS / TENC_NAT_WAYS - 1; a test hook makes the table smaller) */
  uint64_t seed; /* random per engine: a peer cannot aim its flows at one bucket to fill it */
  uint64_t skew_ms; /* added to the clock (mu): tenc_nat_test_age only, 0 otherwise */
} tenc_nat;

int tenc_nat_init(tenc_nat *n);
void tenc_nat_destroy(tenc_nat *n);
/* Replaces the services (takes ownership of `s`, frees the old ones) and forgets
 * the flows none of them DNATs any more: a service update leaves the connections
 * through unchanged services alone. */
void tenc_nat_set_services(tenc_nat *n, tenc_nat_service *s, uint32_t count);
/* Receive side: pkt is a validated inner packet of `len` bytes. Returns 1
 * rewritten, 0 not to a service, or TENC_NAT_FULL / TENC_NAT_CLASH: refused, the
 * packet left alone (the caller drops it). */
int tenc_nat_dnat(tenc_nat *n, uint8_t *pkt, uint32_t len, uint64_t now_ms);
/* Send side: rewrites the source of replies of known flows (and keeps them live).
 * Returns 1 rewritten. */
int tenc_nat_unsnat(tenc_nat *n, uint8_t *pkt, uint32_t len, uint64_t now_ms);
/* Test hooks: the table as `buckets` buckets (a power of two, at most
 * TENC_NAT_SLOTS / TENC_NAT_WAYS; its flows forgotten), so a test can fill one
 * (-1 for a bad argument); every flow `ms` older (idle timeout tests: the table's
 * clock runs ahead, so it cannot fail). */
int tenc_nat_test_buckets(tenc_nat *n, uint32_t buckets);
void tenc_nat_test_age(tenc_nat *n, uint64_t ms);

/* The receive and send paths' gate for an inner packet (engine_rx.c, engine_tx.c;
 * the NAT functions rely on it): returns the IP version and sets *iplen to the
 * packet's own length (<= len), or 0 when it is not a valid IPv4/IPv6 packet (IPv4
 * header length and total length, IPv6 payload length). */
static inline int tenc_inner_check(const uint8_t *p, uint32_t len, uint32_t *iplen) {
  if (len < 1) return 0;
  int v = p[0] >> 4;
  if (v == 4) {
    if (len < 20) return 0;
    uint32_t ihl = (p[0] & 15) * 4u, tot = (uint32_t)p[2] << 8 | p[3];
    if (ihl < 20 || tot < ihl || tot > len) return 0;
    *iplen = tot;
    return 4;
  }
  if (v == 6) {
    if (len < 40) return 0;
    uint32_t tot = 40u + ((uint32_t)p[4] << 8 | p[5]);
    if (tot > len) return 0;
    *iplen = tot;
    return 6;
  }
  return 0;
}

#endif
