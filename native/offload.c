/* offload.c: see offload.h. */
#include "offload.h"
#include <string.h>
#include "csum.h"

int tenc_offload_csum(const struct virtio_net_hdr *h, uint8_t *pkt, uint32_t len) {
  uint32_t start = h->csum_start, off = h->csum_offset;
  if (start >= len || start + off + 2 > len) return -1;
  uint8_t *field = pkt + start + off;
  /* The field holds the (uncomplemented) pseudo-header sum: include it, then store.
   * A sum of 0 is written as 0xffff, as the kernel does (CSUM_MANGLED_0): to UDP, 0
   * means "no checksum" (IPv4) or is invalid (IPv6); to TCP both mean the same. */
  uint16_t c = tenc_csum_finish(tenc_csum_add(0, pkt + start, len - start));
  if (c == 0) c = 0xffff;
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
                   void *ctx, uint32_t *lost, int copy_body, uint32_t tcp_align, uint32_t tcp_max) {
  *lost = 0;
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
  /* The IP header's length is the frame's: a frame cut short by the read (or one
   * whose header lies) is not split into segments with fresh, valid checksums. */
  if ((v6 ? 40u + ((uint32_t)pkt[4] << 8 | pkt[5]) : (uint32_t)pkt[2] << 8 | pkt[3]) != len) return -1;
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
  if (proto == 6) {
    /* TCP only (UDP segments are the application's datagrams): smaller segments
     * than the kernel asked for are still valid TCP. */
    if (tcp_max > hlen && hlen + gso > tcp_max) gso = tcp_max - hlen;
    /* aligned only where the cut is at most an eighth of the segment: a small MSS
     * (the peer's SYN chooses it) is left as it is, never cut to a few bytes */
    if (tcp_align && hlen + gso >= 8 * tcp_align && (hlen + gso) / tcp_align * tcp_align > hlen)
      gso = (hlen + gso) / tcp_align * tcp_align - hlen; /* >= 1: never 0, never wrapped */
  }
  uint32_t payload = len - hlen;
  uint32_t seq = proto == 6 ? get32(pkt + ihl + 4) : 0;
  uint32_t id = v6 ? 0 : (uint32_t)pkt[4] << 8 | pkt[5];
  int n = 0;
  for (uint32_t off = 0; off < payload || (payload == 0 && n == 0); off += gso, n++) {
    uint32_t plen = payload - off < gso ? payload - off : gso;
    int last = off + plen >= payload;
    uint32_t seglen = hlen + plen;
    const uint8_t *body = pkt + hlen + off;
    uint8_t *s = alloc(ctx, seglen, body, hlen);
    if (!s) {
      *lost = payload == 0 ? 1 : (payload - off + gso - 1) / gso;
      return n;
    }
    memcpy(s, pkt, hlen);
    if (copy_body) memcpy(s + hlen, body, plen);
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
    /* Header from the segment, payload from the super-packet (the same bytes in
     * both modes; l4h is a multiple of 4, so the word alignment carries on). */
    uint16_t c = tenc_csum_finish(tenc_csum_add(tenc_csum_add(sum, l4, l4h), body, plen));
    if (proto == 17 && c == 0) c = 0xffff;
    memcpy(field, &c, 2);
    if (payload == 0) return 1;
  }
  return n;
}

typedef struct {
  int v6;
  uint32_t ihl, hlen, payload, seq;
  uint8_t flags;
} tcpseg;

/* A TCP segment eligible for merging: no IP options/extension headers, not a
 * fragment, flags ACK or ACK|PSH, some payload. */
static int gro_parse(const uint8_t *p, uint32_t len, tcpseg *s) {
  if (len < 40) return 0;
  if ((p[0] >> 4) == 4) {
    if (p[0] != 0x45 || p[9] != 6 || (p[6] & 0x3f) || p[7] || (((uint32_t)p[2] << 8) | p[3]) != len) return 0;
    s->v6 = 0;
    s->ihl = 20;
  } else if ((p[0] >> 4) == 6) {
    if (p[6] != 6 || 40u + (((uint32_t)p[4] << 8) | p[5]) != len || len < 60) return 0;
    s->v6 = 1;
    s->ihl = 40;
  } else {
    return 0;
  }
  const uint8_t *t = p + s->ihl;
  uint32_t th = (t[12] >> 4) * 4u;
  s->flags = t[13];
  if (th < 20 || s->ihl + th >= len || (s->flags & ~0x08) != 0x10) return 0;
  s->hlen = s->ihl + th;
  s->payload = len - s->hlen;
  s->seq = get32(t + 4);
  return 1;
}

/* Same flow and same header fields, except IPv4 length/ID/checksum and TCP
 * sequence/flags/checksum. The TCP flags (byte 13) may differ only in PSH
 * (gro_parse lets ACK or ACK|PSH through); byte 12 (data offset, the reserved bits
 * and AE) must be equal, as Linux's tcp_gro_receive compares the whole flag word. */
static int gro_same(const uint8_t *a, const tcpseg *sa, const uint8_t *b, const tcpseg *sb) {
  if (sa->v6 != sb->v6 || sa->hlen != sb->hlen) return 0;
  if (sa->v6) {
    if (memcmp(a, b, 4) || memcmp(a + 6, b + 6, 34)) return 0;
  } else {
    if (a[1] != b[1] || memcmp(a + 6, b + 6, 4) || memcmp(a + 12, b + 12, 8)) return 0;
  }
  const uint8_t *ta = a + sa->ihl, *tb = b + sb->ihl;
  return !memcmp(ta, tb, 4) && !memcmp(ta + 8, tb + 8, 4) && ta[12] == tb[12] && !memcmp(ta + 14, tb + 14, 2) &&
         !memcmp(ta + 18, tb + 18, 2) && !memcmp(ta + 20, tb + 20, sa->hlen - sa->ihl - 20);
}

/* The run that can be merged from pkts[0]: its length k (1 = none), the merged IP
 * packet's length and the last segment's TCP flags. */
typedef struct {
  tcpseg f;
  uint32_t k, total;
  uint8_t last_flags;
} gro_run;

static void gro_plan(uint8_t *const *pkts, const uint32_t *lens, uint32_t n, uint32_t room, gro_run *r) {
  tcpseg s;
  r->k = 1;
  if (n < 2 || !gro_parse(pkts[0], lens[0], &r->f) || (r->f.flags & 0x08)) return;
  const tcpseg *f = &r->f;
  uint32_t total = lens[0], k = 1, seq = f->seq + f->payload;
  uint8_t last_flags = f->flags;
  uint32_t max = f->v6 ? 65535u + 40u : 65535u;
  while (k < n && k < TENC_GRO_MAX_SEGS) {
    if (!gro_parse(pkts[k], lens[k], &s) || !gro_same(pkts[0], f, pkts[k], &s) || s.seq != seq ||
        s.payload > f->payload || total + s.payload > max || total + s.payload > room)
      break;
    total += s.payload;
    seq += s.payload;
    last_flags = s.flags;
    k++;
    if (s.payload < f->payload || (s.flags & 0x08)) break; /* a short or PSH segment ends the run */
  }
  r->k = k;
  r->total = total;
  r->last_flags = last_flags;
}

/* Writes the merged packet's headers (virtio_net_hdr when vnet, then IP + TCP) to
 * out; with vnet the TCP checksum field gets the pseudo-header sum (NEEDS_CSUM). */
static uint8_t *gro_header(uint8_t *const *pkts, const gro_run *r, int vnet, uint8_t *out) {
  const tcpseg *f = &r->f;
  struct virtio_net_hdr h = {
      .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM,
      .gso_type = f->v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4,
      .hdr_len = (uint16_t)f->hlen,
      .gso_size = (uint16_t)f->payload,
      .csum_start = (uint16_t)f->ihl,
      .csum_offset = 16,
  };
  if (vnet) {
    memcpy(out, &h, sizeof h);
    out += sizeof h;
  }
  uint8_t *p = out;
  memcpy(p, pkts[0], f->hlen);
  p[f->ihl + 13] = r->last_flags;
  if (f->v6) {
    put16(p + 4, r->total - 40);
  } else {
    put16(p + 2, r->total);
    tenc_ipv4_csum(p, 20);
  }
  if (vnet) {
    uint64_t ps = tenc_csum_pseudo(f->v6, f->v6 ? p + 8 : p + 12, f->v6 ? p + 24 : p + 16, 6, r->total - f->ihl);
    uint16_t c = tenc_csum_fold(ps); /* NEEDS_CSUM: folded pseudo-header sum, not complemented */
    memcpy(p + f->ihl + 16, &c, 2);
  }
  return p;
}

uint32_t tenc_gro_tcp(uint8_t *const *pkts, const uint32_t *lens, uint32_t n, uint8_t *out, uint32_t cap, int vnet,
                      uint32_t *outlen) {
  uint32_t vlen = vnet ? (uint32_t)sizeof(struct virtio_net_hdr) : 0;
  gro_run r;
  gro_plan(pkts, lens, n, cap > vlen ? cap - vlen : 0, &r);
  if (r.k < 2) return 1;
  const tcpseg *f = &r.f;
  uint8_t *p = gro_header(pkts, &r, vnet, out);
  uint32_t off = f->hlen;
  for (uint32_t i = 0; i < r.k; i++) {
    uint32_t pl = lens[i] - f->hlen;
    memcpy(p + off, pkts[i] + f->hlen, pl);
    off += pl;
  }
  if (!vnet) {
    p[f->ihl + 16] = p[f->ihl + 17] = 0;
    uint64_t ps = tenc_csum_pseudo(f->v6, f->v6 ? p + 8 : p + 12, f->v6 ? p + 24 : p + 16, 6, r.total - f->ihl);
    uint16_t c = tenc_csum_finish(tenc_csum_add(ps, p + f->ihl, r.total - f->ihl));
    memcpy(p + f->ihl + 16, &c, 2);
  }
  *outlen = vlen + r.total;
  return r.k;
}

uint32_t tenc_gro_tcp_iov(uint8_t *const *pkts, const uint32_t *lens, uint32_t n, uint8_t *hdr, struct iovec *iov,
                          uint32_t *niov, uint32_t *outlen) {
  gro_run r;
  gro_plan(pkts, lens, n, 65535u + 40u, &r);
  if (r.k < 2) return 1;
  const tcpseg *f = &r.f;
  gro_header(pkts, &r, 1, hdr);
  iov[0] = (struct iovec){hdr, sizeof(struct virtio_net_hdr) + f->hlen};
  for (uint32_t i = 0; i < r.k; i++) iov[1 + i] = (struct iovec){pkts[i] + f->hlen, lens[i] - f->hlen};
  *niov = r.k + 1;
  *outlen = (uint32_t)sizeof(struct virtio_net_hdr) + r.total;
  return r.k;
}
