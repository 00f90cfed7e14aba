/* offload.c: see offload.h. */
#include "offload.h"
#include <string.h>
#include "csum.h"

int tenc_offload_csum(const struct virtio_net_hdr *h, uint8_t *pkt, uint32_t len) {
  uint32_t start = h->csum_start, off = h->csum_offset;
  if (start >= len || start + off + 2 > len) return -1;
  uint8_t *field = pkt + start + off;
  /* The field holds the (uncomplemented) pseudo-header sum: include it, then store. */
  uint16_t c = tenc_csum_finish(tenc_csum_add(0, pkt + start, len - start));
  memcpy(field, &c, 2);
  return 0;
}

static inline uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}
static inline void put16(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

int tenc_gso_split(const struct virtio_net_hdr *h, const uint8_t *pkt, uint32_t len, tenc_seg_alloc alloc,
                   void *ctx) {
  int gt = h->gso_type & ~VIRTIO_NET_HDR_GSO_ECN;
  uint32_t gso = h->gso_size;
  if (len < 20 || gso == 0) return -1;
  int v6 = (pkt[0] >> 4) == 6;
  uint32_t ihl;
  uint8_t proto;
  if (v6) {
    if (len < 40) return -1;
    ihl = 40;
    proto = pkt[6];
  } else {
    if ((pkt[0] >> 4) != 4) return -1;
    ihl = (pkt[0] & 15) * 4u;
    if (ihl < 20 || len < ihl) return -1;
    proto = pkt[9];
  }
  uint32_t l4h;
  if (gt == VIRTIO_NET_HDR_GSO_TCPV4 || gt == VIRTIO_NET_HDR_GSO_TCPV6) {
    if (proto != 6 || len < ihl + 20) return -1;
    l4h = (pkt[ihl + 12] >> 4) * 4u;
    if (l4h < 20) return -1;
  } else if (gt == VIRTIO_NET_HDR_GSO_UDP_L4) {
    if (proto != 17) return -1;
    l4h = 8;
  } else {
    return -1;
  }
  uint32_t hlen = ihl + l4h;
  if (len < hlen) return -1;
  uint32_t payload = len - hlen;
  uint32_t seq = proto == 6 ? get32(pkt + ihl + 4) : 0;
  uint32_t id = v6 ? 0 : (uint32_t)pkt[4] << 8 | pkt[5];
  int n = 0;
  for (uint32_t off = 0; off < payload || (payload == 0 && n == 0); off += gso, n++) {
    uint32_t plen = payload - off < gso ? payload - off : gso;
    int last = off + plen >= payload;
    uint32_t seglen = hlen + plen;
    uint8_t *s = alloc(ctx, seglen);
    if (!s) return n;
    memcpy(s, pkt, hlen);
    memcpy(s + hlen, pkt + hlen + off, plen);
    if (v6) {
      put16(s + 4, seglen - 40);
    } else {
      put16(s + 2, seglen);
      put16(s + 4, (id + (uint32_t)n) & 0xffff);
      tenc_ipv4_csum(s, ihl);
    }
    uint8_t *l4 = s + ihl;
    uint8_t *field;
    if (proto == 6) {
      put32(l4 + 4, seq + off);
      if (!last) l4[13] &= (uint8_t)~0x09; /* FIN, PSH */
      if (n > 0) l4[13] &= (uint8_t)~0x80;  /* CWR */
      field = l4 + 16;
    } else {
      put16(l4 + 4, l4h + plen);
      field = l4 + 6;
    }
    field[0] = field[1] = 0;
    uint64_t sum = tenc_csum_pseudo(v6, v6 ? s + 8 : s + 12, v6 ? s + 24 : s + 16, proto, l4h + plen);
    uint16_t c = tenc_csum_finish(tenc_csum_add(sum, l4, l4h + plen));
    if (proto == 17 && c == 0) c = 0xffff;
    memcpy(field, &c, 2);
    if (payload == 0) return 1;
  }
  return n;
}
