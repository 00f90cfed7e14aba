#ifndef TENC_OFFLOAD_H
#define TENC_OFFLOAD_H
/* offload.h: what the TUN device's offloads (IFF_VNET_HDR + TUNSETOFFLOAD) ask of
 * the data plane on the send path, before encryption:
 *  - a packet flagged VIRTIO_NET_HDR_F_NEEDS_CSUM carries only the pseudo-header
 *    sum in its L4 checksum: finish it (RFC 1071 over csum_start..end);
 *  - a TSO/USO super-packet (gso_type TCPV4, TCPV6, UDP_L4) is cut into segments
 *    of gso_size payload bytes, each with its own IP header (total length, IPv4
 *    ID + i, header checksum), TCP sequence number and flags (CWR only on the
 *    first, FIN/PSH only on the last) or UDP length, and a full L4 checksum. */
#include <linux/virtio_net.h>
#include <stdint.h>
#include <sys/uio.h>

#ifndef VIRTIO_NET_HDR_GSO_UDP_L4
#define VIRTIO_NET_HDR_GSO_UDP_L4 5
#endif

/* Returns 0, or -1 when the offsets do not fit the packet. */
int tenc_offload_csum(const struct virtio_net_hdr *h, uint8_t *pkt, uint32_t len);

/* Returns a place for a segment of `seglen` bytes, or NULL to stop. The segment is
 * its `hlen` header bytes followed by seglen - hlen payload bytes, which are `body`
 * (a slice of the super-packet, valid while it is). */
typedef uint8_t *(*tenc_seg_alloc)(void *ctx, uint32_t seglen, const uint8_t *body, uint32_t hlen);

/* Splits a GSO packet; returns the number of segments written, or -1 when the
 * packet is malformed (nothing useful written). When `alloc` runs out of room,
 * *lost is the number of segments that were not written (else 0).
 * copy_body = 1: each place gets the whole segment. copy_body = 0: only its header
 * (the first hlen bytes, checksums final); the payload stays in `pkt`, where the
 * caller reads it (scatter seal).
 * TCP segments may be cut smaller than gso_size: at most tcp_max bytes of IP packet
 * (0 = no limit), and with tcp_align != 0 the IP length rounded down to a multiple
 * of it (ChaCha20 works in 64-byte blocks: a 1408-byte segment needs no extra
 * keystream call for a partial last block). */
int tenc_gso_split(const struct virtio_net_hdr *h, const uint8_t *pkt, uint32_t len, tenc_seg_alloc alloc,
                   void *ctx, uint32_t *lost, int copy_body, uint32_t tcp_align, uint32_t tcp_max);

/* Receive direction, 'tun' inject with IFF_VNET_HDR (what the kernel's GRO does
 * for a NIC): merges the longest run pkts[0..k) of TCP segments of one flow
 * (equal IP/TCP headers and options, contiguous sequence numbers, plain ACK
 * segments of equal payload size, only the last shorter or with PSH) into one
 * TSO frame: virtio_net_hdr (GSO_TCPV4/6, NEEDS_CSUM) + one IP packet. Writes the
 * frame to `out` (cap bytes) and returns k >= 2 with *outlen set, or returns 1
 * when pkts[0] cannot start a run (then nothing is written).
 * vnet = 0 ('raw' inject to a local address, whose route is lo with a 64 KiB MTU):
 * no virtio header, one large IP packet with a complete TCP checksum. */
#define TENC_GRO_MAX_SEGS 64
uint32_t tenc_gro_tcp(uint8_t *const *pkts, const uint32_t *lens, uint32_t n, uint8_t *out, uint32_t cap, int vnet,
                      uint32_t *outlen);

/* The same merge for a TUN writev, without copying the payload: the virtio header
 * and the merged IP + TCP header go to `hdr` (at least TENC_GRO_HDR_MAX bytes), and
 * iov[0] = hdr, iov[1..k] = each segment's payload where it lies. iov needs room for
 * TENC_GRO_MAX_SEGS + 1 entries. The bytes are those tenc_gro_tcp(vnet = 1) writes.
 * Returns k >= 2 with *niov and *outlen (bytes in all) set, or 1 (nothing written). */
#define TENC_GRO_HDR_MAX (10 + 60 + 60)
uint32_t tenc_gro_tcp_iov(uint8_t *const *pkts, const uint32_t *lens, uint32_t n, uint8_t *hdr, struct iovec *iov,
                          uint32_t *niov, uint32_t *outlen);

#endif
