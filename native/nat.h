#ifndef TENC_NAT_H
#define TENC_NAT_H
/* nat.h: DNAT of LocalService VIPs (src/dataplane/plane.ts LocalService).
 *
 * Receive: an inner packet to vip[:port] has its destination rewritten to
 * localAddress and its IP/TCP/UDP checksums updated incrementally (RFC 1624); the
 * flow (client addr:port -> local addr:port, protocol) is remembered in a bounded
 * table. Send: a reply from local addr:port to that client gets its source
 * rewritten back to the VIP. IPv4 fragments and non-TCP/UDP packets are left alone.
 * The table has TENC_NAT_SLOTS entries in 4-way buckets; when a bucket is full the
 * least recently used entry is replaced. Services are swapped under the engine's
 * write lock; the flow table has its own mutex (receive inserts, send looks up). */
#include <pthread.h>
#include <stdint.h>

#define TENC_NAT_MAX_SERVICES 256
#define TENC_NAT_MAX_PORTS 64
#define TENC_NAT_SLOTS 65536
#define TENC_NAT_WAYS 4

typedef struct {
  uint8_t family;
  uint8_t vip[16], local[16];
  uint16_t nports;
  struct { uint8_t proto; uint16_t port; } ports[TENC_NAT_MAX_PORTS];
} tenc_nat_service;

typedef struct {
  uint8_t used, family, proto;
  uint8_t client[16], local[16], vip[16];
  uint16_t cport, lport; /* network order */
  uint64_t last_ms;
} tenc_nat_flow;

typedef struct {
  tenc_nat_service *services;
  uint32_t nservices;
  pthread_mutex_t mu;
  tenc_nat_flow *flows;
  uint64_t seed; /* random per engine: a peer cannot aim its flows at one bucket to evict others' */
} tenc_nat;

int tenc_nat_init(tenc_nat *n);
void tenc_nat_destroy(tenc_nat *n);
/* Replaces the services (takes ownership of `s`) and forgets all flows. */
void tenc_nat_set_services(tenc_nat *n, tenc_nat_service *s, uint32_t count);
/* Receive side: pkt is a validated inner packet of `len` bytes. Returns 1 rewritten. */
int tenc_nat_dnat(tenc_nat *n, uint8_t *pkt, uint32_t len, uint64_t now_ms);
/* Send side: rewrites the source of replies of known flows. Returns 1 rewritten. */
int tenc_nat_unsnat(tenc_nat *n, uint8_t *pkt, uint32_t len);

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
