/* offload.c: libFuzzer harness of the send path's offload code (native/offload.c,
 * native/csum.c): tenc_offload_csum (NEEDS_CSUM) and tenc_gso_split (TSO/USO) on a
 * virtio_net_hdr + packet as the TUN device hands them over.
 * Input: 10-byte virtio_net_hdr, 1 byte mode (copy_body, tcp_align 0/64/4..19, tcp_max),
 * then the packet. Each segment place is malloc'd with exactly the bytes the split
 * may write (ASan catches one more); the split must hand out `body` inside the
 * packet, and every segment must carry a valid IPv4 header checksum, its own
 * length, a valid L4 checksum, and together the original payload. */
#include "fz.h"
#include "csum.h"
#include "offload.h"

#define MAXSEGS 256
typedef struct {
  const uint8_t *pkt;
  uint32_t len;
  int copy_body;
  uint32_t n;
  uint8_t *seg[MAXSEGS];
  uint32_t seglen[MAXSEGS], hlen[MAXSEGS];
  const uint8_t *body[MAXSEGS];
} ctx;

static uint8_t *fz_alloc(void *p, uint32_t seglen, const uint8_t *body, uint32_t hlen) {
  ctx *c = p;
  FZ_CHECK(hlen <= seglen);
  FZ_CHECK(body >= c->pkt && body + (seglen - hlen) <= c->pkt + c->len);
  if (c->n == MAXSEGS) return NULL;
  uint32_t room = c->copy_body ? seglen : hlen;
  c->seg[c->n] = malloc(room ? room : 1);
  c->seglen[c->n] = seglen;
  c->hlen[c->n] = hlen;
  c->body[c->n] = body;
  return c->seg[c->n++];
}

static uint16_t sum_of(uint64_t s) { return tenc_csum_fold(s); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  struct virtio_net_hdr h;
  if (size < sizeof h + 1) return 0;
  fz_bytes(&in, (uint8_t *)&h, sizeof h);
  uint8_t mode = fz_u8(&in);
  uint32_t len = (uint32_t)in.n;
  if (len > 65535) return 0;
  uint8_t *pkt = malloc(len ? len : 1);
  fz_bytes(&in, pkt, len);

  if (h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, pkt, len);
    if (tenc_offload_csum(&h, copy, len) == 0 && h.csum_offset % 2 == 0) {
      /* field = ~S where S is the range's sum with the old field F in it: the sum
       * with the new field plus F is all ones (one's complement zero). */
      uint64_t s = tenc_csum_add(0, copy + h.csum_start, len - h.csum_start);
      s += (uint16_t)(pkt[h.csum_start + h.csum_offset] | pkt[h.csum_start + h.csum_offset + 1] << 8);
      uint16_t f = sum_of(s);
      FZ_CHECK(f == 0xffff || f == 0);
      /* never 0: "no checksum" to IPv4 UDP, invalid to IPv6 (CSUM_MANGLED_0) */
      FZ_CHECK((copy[h.csum_start + h.csum_offset] | copy[h.csum_start + h.csum_offset + 1]) != 0);
    }
    free(copy);
  }
  if ((h.gso_type & ~VIRTIO_NET_HDR_GSO_ECN) != VIRTIO_NET_HDR_GSO_NONE) {
    ctx c = {.pkt = pkt, .len = len, .copy_body = mode & 1};
    /* align: 64 (the default), or a small one (4..19) with bit 3: a cut must never reach 0 or wrap */
    uint32_t lost = 0, align = (mode & 2) ? ((mode & 8) ? 4 + (mode >> 4) : 64) : 0, tmax = (mode & 4) ? 1280 + (mode >> 3) * 8 : 0;
    int n = tenc_gso_split(&h, pkt, len, fz_alloc, &c, &lost, c.copy_body, align, tmax);
    if (n >= 0) {
      FZ_CHECK((uint32_t)n == c.n);
      /* only a packet whose IP length is the frame's is split */
      FZ_CHECK(((pkt[0] >> 4) == 6 ? 40u + ((uint32_t)pkt[4] << 8 | pkt[5]) : (uint32_t)pkt[2] << 8 | pkt[3]) == len);
      uint32_t hlen = c.n ? c.hlen[0] : 0, off = 0;
      for (uint32_t i = 0; i < c.n; i++) {
        uint8_t *s = c.seg[i];
        uint32_t sl = c.seglen[i];
        FZ_CHECK(c.hlen[i] == hlen);
        FZ_CHECK(c.body[i] == pkt + hlen + off); /* payloads in order, none skipped */
        off += sl - hlen;
        /* the alignment cuts a segment by an eighth at most, never to a few bytes */
        if (!tmax && i + 1 < c.n) FZ_CHECK(sl - hlen + 63 >= h.gso_size);
        int v6 = (s[0] >> 4) == 6;
        if (v6) {
          FZ_CHECK(40u + ((uint32_t)s[4] << 8 | s[5]) == sl);
        } else {
          uint32_t ihl = (s[0] & 15) * 4u;
          FZ_CHECK(((uint32_t)s[2] << 8 | s[3]) == sl);
          FZ_CHECK(sum_of(tenc_csum_add(0, s, ihl)) == 0xffff);
        }
        if (c.copy_body) {
#ifdef FZ_SELFTEST_BREAK
          s[hlen - 1] ^= 0x40; /* a wrong segment: the checks below must catch it */
#endif
          FZ_CHECK(memcmp(s + hlen, c.body[i], sl - hlen) == 0);
          uint32_t ihl = v6 ? 40 : (s[0] & 15) * 4u;
          uint8_t proto = v6 ? s[6] : s[9];
          uint64_t ps = tenc_csum_pseudo(v6, v6 ? s + 8 : s + 12, v6 ? s + 24 : s + 16, proto, sl - ihl);
          FZ_CHECK(sum_of(tenc_csum_add(ps, s + ihl, sl - ihl)) == 0xffff);
        }
      }
      if (!lost) FZ_CHECK(hlen + off == len || c.n == 0);
    }
    for (uint32_t i = 0; i < c.n; i++) free(c.seg[i]);
  }
  free(pkt);
  return 0;
}
