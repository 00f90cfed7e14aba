#ifndef TENC_ALLOWEDIPS_H
#define TENC_ALLOWEDIPS_H
/* allowedips.h: the allowed-IPs table (longest-prefix match, IPv4 and IPv6) that
 * maps a destination to the peer it is sent to, and checks that an authentic
 * packet's source belongs to the peer it came from (WireGuard whitepaper §2).
 *
 * One hash table keyed by (family, prefix length, masked address) plus, per
 * family, the descending list of prefix lengths in use: a lookup probes one hash
 * slot per distinct length (typically /32 and /128 only), independent of the
 * number of peers. Not thread-safe: the engine guards it with its rwlock. */
#include <stdint.h>

typedef struct tenc_aips tenc_aips;

tenc_aips *tenc_aips_new(void);
void tenc_aips_free(tenc_aips *t);
/* family 4 or 6; addr 4 or 16 bytes; host bits are masked off. An existing
 * prefix changes owner. Returns 0, or -1 on allocation failure. */
int tenc_aips_insert(tenc_aips *t, int family, const uint8_t *addr, int plen, uint32_t peer);
/* Removes the prefix when `peer` owns it. Returns 1 removed, 0 not found. */
int tenc_aips_remove(tenc_aips *t, int family, const uint8_t *addr, int plen, uint32_t peer);
void tenc_aips_remove_peer(tenc_aips *t, uint32_t peer);
/* The owner of the longest prefix containing addr, or -1. */
int32_t tenc_aips_lookup(const tenc_aips *t, int family, const uint8_t *addr);
/* Number of prefixes stored. */
uint32_t tenc_aips_count(const tenc_aips *t);

#endif
