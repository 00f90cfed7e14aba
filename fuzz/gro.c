/* gro.c: libFuzzer harness of the receive path's TCP merging (native/offload.c
 * tenc_gro_tcp, tenc_gro_tcp_iov) over a run of inner packets as engine_rx.c's
 * inject stage passes them (each in a buffer of exactly its length).
 * Input: 1 byte output capacity choice, then records (u16 length + packet).
 * Invariants: the copy (vnet 1) and the writev form give the same k and the same
 * bytes; a merged frame fits its buffer; the vnet 0 form is one IP packet whose
 * total length is the frame's, with valid IPv4 header and TCP checksums; merging
 * never reads past a packet (ASan). */
#include "fz.h"
#include "csum.h"
#include "offload.h"

#define MAXP 80
#define BIG (65536u + 64u) /* engine_rx.c RX_SLOT */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  uint8_t capsel = fz_u8(&in);
  uint32_t cap = capsel & 1 ? BIG : 100u + (uint32_t)capsel * 64u;
  uint8_t *pkts[MAXP];
  uint32_t lens[MAXP], n = 0;
  while (n < MAXP && (pkts[n] = fz_record(&in, &lens[n])) != NULL) n++;
  uint8_t *out = malloc(cap), *raw = malloc(cap), *hdr = malloc(TENC_GRO_HDR_MAX);
  struct iovec iov[TENC_GRO_MAX_SEGS + 1];
  for (uint32_t i = 0; i < n;) {
    uint32_t olen = 0, rlen = 0, ilen = 0, niov = 0;
    uint32_t k = tenc_gro_tcp(pkts + i, lens + i, n - i, out, cap, 1, &olen);
    /* the same room for the packet: vnet = 1 spends 10 bytes of cap on its header */
    uint32_t k0 = tenc_gro_tcp(pkts + i, lens + i, n - i, raw, cap - 10, 0, &rlen);
    FZ_CHECK(k >= 1 && k <= n - i && k <= TENC_GRO_MAX_SEGS);
    if (k > 1) {
      FZ_CHECK(olen <= cap);
      FZ_CHECK(k0 > 1 && rlen <= cap && rlen + 10 == olen);
      FZ_CHECK(memcmp(out + 10, raw, 20) == 0 || (raw[0] >> 4) == 6);
      int v6 = (raw[0] >> 4) == 6;
      uint32_t ihl = v6 ? 40 : 20;
      if (v6) {
        FZ_CHECK(40u + ((uint32_t)raw[4] << 8 | raw[5]) == rlen);
      } else {
        FZ_CHECK(((uint32_t)raw[2] << 8 | raw[3]) == rlen);
        FZ_CHECK(tenc_csum_fold(tenc_csum_add(0, raw, 20)) == 0xffff);
      }
      uint64_t s = tenc_csum_pseudo(v6, v6 ? raw + 8 : raw + 12, v6 ? raw + 24 : raw + 16, 6, rlen - ihl);
      FZ_CHECK(tenc_csum_fold(tenc_csum_add(s, raw + ihl, rlen - ihl)) == 0xffff);
    }
    if (cap == BIG) {
      uint32_t ki = tenc_gro_tcp_iov(pkts + i, lens + i, n - i, hdr, iov, &niov, &ilen);
      FZ_CHECK(ki == k);
      if (k > 1) {
        FZ_CHECK(niov == k + 1 && ilen == olen && iov[0].iov_base == hdr && iov[0].iov_len <= TENC_GRO_HDR_MAX);
        uint32_t off = 0;
        for (uint32_t j = 0; j < niov; j++) {
          FZ_CHECK(off + iov[j].iov_len <= olen);
          if (j) /* payloads point into their own packets */
            FZ_CHECK((uint8_t *)iov[j].iov_base >= pkts[i + j - 1] &&
                     (uint8_t *)iov[j].iov_base + iov[j].iov_len <= pkts[i + j - 1] + lens[i + j - 1]);
          FZ_CHECK(memcmp(out + off, iov[j].iov_base, iov[j].iov_len) == 0);
          off += (uint32_t)iov[j].iov_len;
        }
        FZ_CHECK(off == olen);
      }
    }
    i += k;
  }
  for (uint32_t i = 0; i < n; i++) free(pkts[i]);
  free(out);
  free(raw);
  free(hdr);
  return 0;
}
