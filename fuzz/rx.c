/* rx.c: libFuzzer harness of the receive path (native/engine_rx.c stages 1-5:
 * datagram split, header gate, receiver index, replay window, open, inner
 * checks, allowed-IPs source check, DNAT, local destination check, GRO and
 * inject), one batch per input through tenc_engine_test_rx on an engine whose
 * threads are not started. Its UDP socket is a real one on ::1 (with UDP_GRO);
 * the TUN device is /dev/null (writes succeed), raw sockets are absent (-1).
 * The fuzzer gets past authentication: a record with the seal bit set is a
 * plaintext that the harness seals with a keypair's known receive key (AEAD of
 * native/aead.c, the same direct backend as in node, see build.sh).
 * Input: 1 byte engine choice (TUN+vnet+writev GRO, TUN+vnet copy GRO, TUN
 * plain, raw+vnet), then records: 1 byte control (bit 0 seal, bit 1 join the
 * previous datagram as a UDP GSO segment, bits 2-3 keypair: 1, 2, unknown,
 * or the index in the plaintext), u16 length, bytes. Sealed: u16 counter step
 * (counter = previous + step - 256: replays and old counters too), then the
 * plaintext. Invariants: no sanitizer report, every datagram is counted
 * (accepted or a drop reason), and the engine's events and counters stay sane. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/sock_diag.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <unistd.h>
#include "fz.h"
#include "engine.h"
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define NENG 4
#define MAXD 128
static tenc_engine *eng[NENG];
static uint64_t *ctrs[NENG];
static int udp[NENG]; /* each engine's socket: its kernel drop count (SO_MEMINFO) */
static int tx_fd;
static struct sockaddr_in6 to[NENG];
static tenc_aead *aead;
static const uint8_t key1[32] = {1, 2, 3}, key2[32] = {9, 8, 7};

static void nosig(tenc_engine *e) { (void)e; }

static void addr4(uint8_t a[16], uint8_t x, uint8_t y, uint8_t z, uint8_t w) {
  memset(a, 0, 16);
  a[0] = x, a[1] = y, a[2] = z, a[3] = w;
}

static tenc_engine *fz_make(int i) {
  int u = socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  FZ_CHECK(u >= 0);
  struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
  FZ_CHECK(bind(u, (struct sockaddr *)&a, sizeof a) == 0);
  socklen_t sl = sizeof to[i];
  FZ_CHECK(getsockname(u, (struct sockaddr *)&to[i], &sl) == 0);
  int one = 1, buf = 32 << 20;
  FZ_CHECK(setsockopt(u, SOL_UDP, UDP_GRO, &one, sizeof one) == 0);
  if (setsockopt(u, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf) != 0) setsockopt(u, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  udp[i] = u;
  int tun = open("/dev/null", O_WRONLY | O_CLOEXEC);
  FZ_CHECK(tun >= 0);
  tenc_engine_opts o = {.tun_fd = tun, .udp_fd = u, .raw4_fd = -1, .raw6_fd = -1, .udp_gro = 1, .scatter_seal = 1};
  o.mode_tun = i != 3;
  o.vnet_hdr = i != 2;
  o.gro_iov = i == 0;
  ctrs[i] = calloc(tenc_engine_counters_len(), sizeof(uint64_t));
  tenc_engine *e = tenc_engine_new(&o, ctrs[i], nosig, NULL);
  FZ_CHECK(e);
  struct sockaddr_in6 ep = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT, .sin6_port = htons(9)};
  FZ_CHECK(tenc_engine_add_peer(e, 0, &ep) == 0);
  FZ_CHECK(tenc_engine_add_peer(e, 1, NULL) == 0);
  uint8_t x[16];
  addr4(x, 10, 0, 0, 2);
  FZ_CHECK(tenc_engine_allowed_ip(e, 0, 4, x, 32, 1) == 0);
  addr4(x, 10, 1, 0, 0);
  FZ_CHECK(tenc_engine_allowed_ip(e, 1, 4, x, 16, 1) == 0);
  uint8_t v6[16] = {0xfd, 0, [15] = 2};
  FZ_CHECK(tenc_engine_allowed_ip(e, 0, 6, v6, 128, 1) == 0);
  uint8_t fam[2] = {4, 6}, loc[2][16] = {{10, 0, 0, 1}, {0xfd, 0, [15] = 1}};
  tenc_engine_set_local(e, fam, (const uint8_t(*)[16])loc, 2);
  tenc_nat_service *s = calloc(2, sizeof *s);
  s[0].family = 4;
  memcpy(s[0].vip, (uint8_t[]){10, 96, 0, 10}, 4);
  memcpy(s[0].local, loc[0], 4);
  s[1].family = 6;
  memcpy(s[1].vip, (uint8_t[]){0xfd, 0, 0, 0x96, [15] = 0x10}, 16);
  memcpy(s[1].local, loc[1], 16);
  tenc_engine_set_services(e, s, 2);
  return e;
}

static void fresh_keys(tenc_engine *e) {
  tenc_engine_remove_keypair(e, 1);
  tenc_engine_remove_keypair(e, 2);
  /* the peer's send key is our receive key: (send, recv) = (unused, key) */
  FZ_CHECK(tenc_engine_add_keypair(e, 0, 1, 101, key2, key1) == 0);
  FZ_CHECK(tenc_engine_add_keypair(e, 1, 2, 102, key1, key2) == 0);
}

static uint32_t sock_drops(int fd) {
  uint32_t mi[SK_MEMINFO_VARS];
  socklen_t l = sizeof mi;
  FZ_CHECK(getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mi, &l) == 0 && l > SK_MEMINFO_DROPS * sizeof(uint32_t));
  return mi[SK_MEMINFO_DROPS];
}

static void fz_put_le32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24); }

static uint8_t dg[MAXD][65536];
static uint32_t dlen[MAXD], dseg[MAXD], nsegs[MAXD];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!aead) {
    aead = tenc_aead_new();
    FZ_CHECK(aead);
    const char *b = tenc_aead_backend(aead);
    if (strncmp(b, "direct", 6) != 0 && !getenv("TENC_AEAD")) {
      fprintf(stderr, "rx: AEAD backend is %s, not direct as in node: the OpenSSL cores were not linked\n", b);
      abort();
    }
    for (int i = 0; i < NENG; i++) eng[i] = fz_make(i);
    tx_fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    FZ_CHECK(tx_fd >= 0);
    int buf = 8 << 20;
    setsockopt(tx_fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  }
  fz_in in = {data, size};
  int ei = fz_u8(&in) % NENG;
  tenc_engine *e = eng[ei];
  uint64_t *c = ctrs[ei];
  fresh_keys(e);
  uint64_t ctr[2] = {0, 0};
  uint32_t nd = 0, nmsg = 0;
  while (fz_left(&in) && nd < MAXD) {
    uint8_t ctl = fz_u8(&in);
    uint32_t want = fz_u16(&in) % 2048, len;
    uint8_t m[2048 + 64];
    int sealed = ctl & 1, kp = (ctl >> 2) & 3;
    if (sealed) {
      uint32_t step = fz_u16(&in);
      int which = kp == 1 ? 1 : 0;
      ctr[which] = ctr[which] + step - 256;
      uint32_t pl = (uint32_t)fz_bytes(&in, m + 16, want);
      m[0] = 4, m[1] = m[2] = m[3] = 0;
      fz_put_le32(m + 4, kp == 0 ? 1 : kp == 1 ? 2 : kp == 2 ? 0xdeadbeef : (pl >= 4 ? (uint32_t)m[16] : 7));
      for (int i = 0; i < 8; i++) m[8 + i] = (uint8_t)(ctr[which] >> (8 * i));
      FZ_CHECK(tenc_aead_wg_seal(aead, which ? key2 : key1, ctr[which], m + 16, pl) == 0);
      len = 16 + pl + 16;
    } else {
      len = (uint32_t)fz_bytes(&in, m, want);
    }
    /* GSO: append to the previous datagram when the kernel would take it as one
     * (equal segments, only the last shorter, at most 128 of them: UDP_MAX_SEGMENTS
     * since Linux 6.9 and 5.15.y; an older kernel refuses the send, not counted) */
    if ((ctl & 2) && nd && len && len <= dseg[nd - 1] && dlen[nd - 1] % dseg[nd - 1] == 0 && nsegs[nd - 1] < 128 &&
        dlen[nd - 1] + len <= 65000) {
      memcpy(dg[nd - 1] + dlen[nd - 1], m, len);
      dlen[nd - 1] += len;
      nsegs[nd - 1]++;
    } else {
      memcpy(dg[nd], m, len);
      dlen[nd] = dseg[nd] = len;
      nsegs[nd] = 1;
      nd++;
    }
    nmsg++;
  }
  uint64_t before[TENC_GLOBAL_SLOTS + 2 * TENC_PEER_SLOTS];
  memcpy(before, c, sizeof before);
  uint32_t kdrops = sock_drops(udp[ei]);
  uint32_t sent = 0;
  for (uint32_t i = 0; i < nd; i++) {
    struct iovec io = {dg[i], dlen[i]};
    union {
      char b[CMSG_SPACE(sizeof(uint16_t))];
      struct cmsghdr a;
    } cm;
    struct msghdr mh = {.msg_name = &to[ei], .msg_namelen = sizeof to[ei], .msg_iov = &io, .msg_iovlen = 1};
    if (nsegs[i] > 1) {
      mh.msg_control = cm.b;
      mh.msg_controllen = sizeof cm.b;
      struct cmsghdr *ch = CMSG_FIRSTHDR(&mh);
      ch->cmsg_level = SOL_UDP;
      ch->cmsg_type = UDP_SEGMENT;
      ch->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      uint16_t g = (uint16_t)dseg[i];
      memcpy(CMSG_DATA(ch), &g, sizeof g);
    }
    if (sendmsg(tx_fd, &mh, 0) >= 0) sent += nsegs[i];
  }
  while (tenc_engine_test_rx(e) > 0) {
  }
  uint32_t nev = 0;
  tenc_event *ev = tenc_engine_take_events(e, &nev);
  for (uint32_t i = 0; i < nev; i++) {
    FZ_CHECK(ev[i].type <= TENC_EV_ROUTE_MISS);
    FZ_CHECK(ev[i].peer < 2 || ev[i].type == TENC_EV_HANDSHAKE);
    free(ev[i].data);
  }
  free(ev);
  /* Every message that reached the socket was counted once: as a handshake, a
   * keepalive, a peer's received packet, or a global drop reason (the per-peer
   * drops are also counted globally). Empty datagrams count as bad_header. */
  uint64_t counted = 0;
  for (int r = 0; r < TENC_D_COUNT; r++) counted += c[r] - before[r];
  counted += c[TENC_G_HANDSHAKE_RX] - before[TENC_G_HANDSHAKE_RX];
  for (int p = 0; p < 2; p++) {
    uint64_t *pc = c + TENC_GLOBAL_SLOTS + p * TENC_PEER_SLOTS;
    uint64_t *pb = before + TENC_GLOBAL_SLOTS + p * TENC_PEER_SLOTS;
    /* an opened packet counts as received, and may then still drop (bad_inner, a
     * refused NAT flow...) */
    uint64_t opened = pc[TENC_P_RX_PACKETS] - pb[TENC_P_RX_PACKETS], late = 0;
    for (int r = TENC_D_SPOOFED_SOURCE; r <= TENC_D_BAD_INNER; r++) late += pc[TENC_P_DROPS + r] - pb[TENC_P_DROPS + r];
    late += pc[TENC_P_DROPS + TENC_D_BAD_DESTINATION] - pb[TENC_P_DROPS + TENC_D_BAD_DESTINATION];
    for (int r = TENC_D_NAT_TABLE_FULL; r <= TENC_D_NAT_CLASH; r++) late += pc[TENC_P_DROPS + r] - pb[TENC_P_DROPS + r];
    counted += opened - late;
  }
  counted -= c[TENC_D_IO] - before[TENC_D_IO]; /* inject failures count packets already counted */
  /* all of them, unless the kernel dropped some before the engine saw them (the
   * socket's receive buffer overflowed) */
  FZ_CHECK(counted <= sent && (counted == sent || sock_drops(udp[ei]) != kdrops));
  (void)nmsg;
  return 0;
}
