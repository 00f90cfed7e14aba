/* nat.c: libFuzzer harness of the LocalService DNAT (native/nat.c) on inner
 * packets as the receive path hands them over (validated by the engine's own
 * gate, tenc_inner_check in nat.h: IPv4 header length and total length, IPv6 payload length).
 * Services: 10.96.0.10 tcp/80 and udp/53 -> 10.0.0.1, 10.96.0.11 any port ->
 * 10.0.0.1, fd00:96::10 tcp/80 -> fd00::1.
 * Input: records (u16 length, then the packet), each copied into a buffer of
 * exactly its length; the record length's parity picks the direction: receive
 * (dnat) or send (unsnat). Invariants: a rewritten packet keeps a valid IPv4 header
 * checksum and a valid TCP/UDP checksum when it had them; a rewritten destination
 * is the service's local address, and the reply the harness derives from it
 * (addresses and ports swapped) is rewritten back to the VIP; fragments and
 * non-TCP/UDP packets (ICMP errors too) are left alone, byte for byte; a refused
 * packet (bucket full, or a clash) too. A shadow model of the input's flows: at the
 * end every flow DNATed earlier in the input still gets its own VIP back on its
 * reply (each is answered and acknowledged, so assured, and no flow is taken by
 * another while live: the clock moves 1 ms a record, so none expires), and a clash is refused only where the shadow holds a flow of the
 * same reply tuple to another VIP. */
#include "fz.h"
#include "csum.h"
#include "nat.h"

static tenc_nat nat;
static int ready;


static int ip4_ok(const uint8_t *p) { return tenc_csum_fold(tenc_csum_add(0, p, (p[0] & 15) * 4u)) == 0xffff; }
/* -1: not checkable (not TCP/UDP, fragment, UDP/IPv4 without checksum) */
static int l4_ok(const uint8_t *p, uint32_t len) {
  int v6 = (p[0] >> 4) == 6;
  uint32_t ihl = v6 ? 40 : (p[0] & 15) * 4u;
  uint8_t proto = v6 ? p[6] : p[9];
  if (proto != 6 && proto != 17) return -1;
  if (!v6 && ((p[6] & 0x3f) || p[7])) return -1;
  if (len < ihl + (proto == 6 ? 20u : 8u)) return -1;
  if (proto == 17 && !v6 && !p[ihl + 6] && !p[ihl + 7]) return -1;
  uint64_t s = tenc_csum_pseudo(v6, v6 ? p + 8 : p + 12, v6 ? p + 24 : p + 16, proto, len - ihl);
  return tenc_csum_fold(tenc_csum_add(s, p + ihl, len - ihl)) == 0xffff;
}

static void fz_services(void) {
  tenc_nat_service *s = calloc(3, sizeof *s);
  s[0].family = 4;
  memcpy(s[0].vip, (uint8_t[]){10, 96, 0, 10}, 4);
  memcpy(s[0].local, (uint8_t[]){10, 0, 0, 1}, 4);
  s[0].nports = 2;
  s[0].ports[0].proto = 6, s[0].ports[0].port = 80;
  s[0].ports[1].proto = 17, s[0].ports[1].port = 53;
  s[1].family = 4;
  memcpy(s[1].vip, (uint8_t[]){10, 96, 0, 11}, 4);
  memcpy(s[1].local, (uint8_t[]){10, 0, 0, 1}, 4);
  s[2].family = 6;
  memcpy(s[2].vip, (uint8_t[]){0xfd, 0, 0, 0x96, [15] = 0x10}, 16);
  memcpy(s[2].local, (uint8_t[]){0xfd, 0, [15] = 1}, 16);
  s[2].nports = 1;
  s[2].ports[0].proto = 6, s[2].ports[0].port = 80;
  tenc_nat_set_services(&nat, s, 3);
}

/* The input's DNATed flows: the packet before DNAT and the reply derived from it. */
#define SHADOW_MAX 512
typedef struct {
  uint8_t *rep;
  uint32_t len;
  int v;
  uint8_t proto, client[16], vip[16];
  uint8_t cport[2], lport[2];
} shadow;
static shadow sh[SHADOW_MAX];
static uint32_t nsh, shadow_full;

/* Remembers a flow the harness saw DNATed (its packet `before`, its reply `rep`). */
static void shadow_add(int v, const uint8_t *before, const uint8_t *rep, uint32_t len) {
  if (nsh == SHADOW_MAX) {
    shadow_full = 1;
    return;
  }
  shadow *f = &sh[nsh++];
  uint32_t alen = v == 4 ? 4 : 16, ihl = v == 4 ? (before[0] & 15) * 4u : 40;
  f->rep = malloc(len);
  memcpy(f->rep, rep, len);
  f->len = len;
  f->v = v;
  f->proto = v == 4 ? before[9] : before[6];
  memcpy(f->client, before + (v == 4 ? 12 : 8), alen);
  memcpy(f->vip, before + (v == 4 ? 16 : 24), alen);
  memcpy(f->cport, before + ihl, 2);
  memcpy(f->lport, before + ihl + 2, 2);
}

/* Is there a flow in the shadow with the reply tuple of `p` (same client, ports and
 * protocol; both IPv4 services share one local address) to another VIP? */
static int shadow_clash(int v, const uint8_t *p) {
  uint32_t alen = v == 4 ? 4 : 16, ihl = v == 4 ? (p[0] & 15) * 4u : 40;
  uint8_t proto = v == 4 ? p[9] : p[6];
  for (uint32_t i = 0; i < nsh; i++) {
    shadow *f = &sh[i];
    if (f->v == v && f->proto == proto && !memcmp(f->client, p + (v == 4 ? 12 : 8), alen) &&
        !memcmp(f->cport, p + ihl, 2) && !memcmp(f->lport, p + ihl + 2, 2) && memcmp(f->vip, p + (v == 4 ? 16 : 24), alen))
      return 1;
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!ready) {
    FZ_CHECK(tenc_nat_init(&nat) == 0);
    ready = 1;
  }
  tenc_nat_set_services(&nat, NULL, 0); /* no service: forgets the flows of the previous input */
  fz_services();
  nsh = shadow_full = 0;
  fz_in in = {data, size};
  uint32_t rlen;
  uint8_t *pkt;
  uint64_t now = 1;
  while ((pkt = fz_record(&in, &rlen)) != NULL) {
    uint32_t len;
    int v = tenc_inner_check(pkt, rlen, &len);
    if (v && len) {
      uint8_t *before = malloc(len);
      memcpy(before, pkt, len);
      int had4 = v == 4 && ip4_ok(pkt), had4l = l4_ok(pkt, len);
      int send = (int)(rlen & 1); /* direction from the record length's parity: any packet in both */
      int r = send ? tenc_nat_unsnat(&nat, pkt, len, now++) : tenc_nat_dnat(&nat, pkt, len, now++);
      if (r <= 0) {
        FZ_CHECK(memcmp(before, pkt, len) == 0);
        FZ_CHECK(r == 0 || r == TENC_NAT_FULL || r == TENC_NAT_CLASH);
        if (r == TENC_NAT_CLASH && !shadow_full && now < TENC_NAT_TCP_CLOSING_MS) FZ_CHECK(shadow_clash(v, pkt));
      } else {
        if (had4) FZ_CHECK(ip4_ok(pkt));
        if (had4l == 1) FZ_CHECK(l4_ok(pkt, len) == 1);
        uint32_t alen = v == 4 ? 4 : 16, so = v == 4 ? 12 : 8, dof = v == 4 ? 16 : 24;
        uint32_t ihl = v == 4 ? (pkt[0] & 15) * 4u : 40;
        FZ_CHECK(memcmp(pkt + (send ? so : dof), before + (send ? so : dof), alen) != 0);
        if (!send) {
          /* the reply of this flow, from the local address, gets the VIP back */
          uint8_t *rep = malloc(len);
          memcpy(rep, pkt, len);
          memcpy(rep + so, pkt + dof, alen);
          memcpy(rep + dof, pkt + so, alen);
          memcpy(rep + ihl, pkt + ihl + 2, 2);
          memcpy(rep + ihl + 2, pkt + ihl, 2);
          if (now < TENC_NAT_TCP_CLOSING_MS) shadow_add(v, before, rep, len); /* none of them can expire */
          FZ_CHECK(tenc_nat_unsnat(&nat, rep, len, now) == 1);
          FZ_CHECK(memcmp(rep + so, before + dof, alen) == 0); /* source = the VIP it was sent to */
          if (v == 4 && had4) FZ_CHECK(ip4_ok(rep));
          free(rep);
          /* the client's next packet (no SYN: not a new connection): answered and then
           * acknowledged, the flow is assured, and no new flow may take its way
           * (`before` itself: not read again, shadow_add copied what it needs) */
          if ((v == 4 ? before[9] : before[6]) == 6 && len >= ihl + 14) before[ihl + 13] &= (uint8_t)~0x02;
          FZ_CHECK(tenc_nat_dnat(&nat, before, len, now) == 1);
        }
      }
      free(before);
    }
    free(pkt);
  }
  /* every flow of the input still maps back to its own VIP */
  for (uint32_t i = 0; i < nsh; i++) {
    shadow *f = &sh[i];
    uint32_t alen = f->v == 4 ? 4 : 16;
    FZ_CHECK(tenc_nat_unsnat(&nat, f->rep, f->len, now) == 1);
    FZ_CHECK(memcmp(f->rep + (f->v == 4 ? 12 : 8), f->vip, alen) == 0);
    free(f->rep);
  }
  return 0;
}
