/* dnsio.c: libFuzzer harness of native/dnsio.c, the DNS proxy's batched UDP
 * socket, called as src/dns/udpbatch.ts calls it (dnsioOpen, dnsioSend,
 * dnsioClose) through a small fake N-API (napi_fake.c) and a real libuv loop and
 * real sockets on loopback. Every buffer JS would pass (rxSlab, rxMeta, txSlab,
 * txMeta, stats) is malloc'd with exactly its size, so ASan catches any access past
 * it. Input: options (family, connected or not, rxSlotBytes, rx slots, rxMeta,
 * txSlab and txMeta sizes, stats length, sometimes out of range), datagram lengths
 * sent to the socket (some longer than a slot), txMeta entries (any offsets,
 * lengths, families and ports; addresses are always loopback), the send count,
 * and the close order (close then finalize, finalize first, or close from inside
 * onBatch). Invariants: bad options throw (never crash), a good open reports its
 * port; onBatch(n) gets n <= slots and per datagram stored = min(length, slot),
 * the real length, the family, the sender's port and address, and the bytes sent;
 * dnsioSend throws for any out-of-range entry before sending anything and
 * otherwise returns at most count; every reference is released after close. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include "fz.h"
#include "testing/napi_fake.h"

napi_status tenc_init_dnsio(napi_env env, napi_value exports);

static uv_loop_t loop;
static napi_env env;
static napi_value exports_;

typedef struct {
  uint32_t *meta;
  uint8_t *slab;
  uint32_t slot, slots, expect_n, got, fam;
  uint32_t lens[256];
  uint16_t cport;
  int close_in_cb, closed;
  napi_value handle;
} rxctx;

static void fz_fill(uint8_t *p, uint32_t n, uint32_t tag) {
  for (uint32_t i = 0; i < n; i++) p[i] = (uint8_t)(tag * 31 + i);
}

static void on_batch(napi_value *argv, size_t argc, void *p) {
  rxctx *c = p;
  FZ_CHECK(argc == 1);
  uint32_t n = (uint32_t)fake_get_number(argv[0]);
  FZ_CHECK(n >= 1 && n <= c->slots);
  for (uint32_t i = 0; i < n; i++, c->got++) {
    const uint32_t *m = c->meta + (size_t)i * 8;
    FZ_CHECK(c->got < c->expect_n);
    uint32_t real = c->lens[c->got], stored = real < c->slot ? real : c->slot;
    FZ_CHECK(m[0] == stored && m[1] == real && m[2] == c->fam && m[3] == c->cport);
    if (c->fam == 4) FZ_CHECK(m[4] == htonl(INADDR_LOOPBACK));
    uint8_t *want = malloc(stored ? stored : 1);
    fz_fill(want, stored, c->got);
    FZ_CHECK(memcmp(c->slab + (size_t)i * c->slot, want, stored) == 0);
    free(want);
  }
  if (c->close_in_cb && !c->closed) {
    napi_value a[1] = {c->handle};
    fake_call(fake_get(exports_, "dnsioClose"), a, 1);
    FZ_CHECK(!fake_exception());
    c->closed = 1;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int loop_ready;
  if (!loop_ready) {
    FZ_CHECK(uv_loop_init(&loop) == 0);
    loop_ready = 1;
  }
  if (!env) {
    env = fake_env(&loop);
    exports_ = fake_object();
    FZ_CHECK(tenc_init_dnsio(env, exports_) == napi_ok);
  }
  fz_in in = {data, size};
  uint8_t mode = fz_u8(&in);
  int fam = mode & 1 ? 6 : 4, connected = mode & 2, junk = (mode & 0x1c) == 0x1c;
  uint32_t slot = fz_u16(&in), slots = 1 + fz_u8(&in) % 64, metaless = fz_u8(&in) % 8;
  if (!junk) slot = 512 + slot % 3585;
  uint32_t txlen = fz_u16(&in) % 4097, txn = fz_u8(&in) % 65, nstats = 8 - (junk ? fz_u8(&in) % 3 : 0);
  if (!junk && txn == 0) txn = 1;
  if (metaless && !junk) metaless = 0;

  /* the peer: a client socket on loopback */
  int cfd = socket(fam == 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  FZ_CHECK(cfd >= 0);
  struct sockaddr_in6 ca = {0};
  socklen_t cl;
  if (fam == 4) {
    struct sockaddr_in *a = (struct sockaddr_in *)&ca;
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cl = sizeof *a;
  } else {
    ca.sin6_family = AF_INET6;
    ca.sin6_addr = in6addr_loopback;
    cl = sizeof ca;
  }
  FZ_CHECK(bind(cfd, (struct sockaddr *)&ca, cl) == 0);
  FZ_CHECK(getsockname(cfd, (struct sockaddr *)&ca, &cl) == 0);
  uint16_t cport = ntohs(fam == 4 ? ((struct sockaddr_in *)&ca)->sin_port : ca.sin6_port);

  size_t rxbytes = (size_t)slot * slots;
  uint8_t *rx = malloc(rxbytes ? rxbytes : 1), *tx = malloc(txlen ? txlen : 1);
  size_t rxmw = (size_t)slots * 8 - metaless;
  uint32_t *rxm = malloc(rxmw * 4 + 1), *txm = calloc((size_t)txn * 8 + 1, 4);
  double *stats = calloc(nstats + 1, sizeof *stats);
  fz_fill(tx, txlen, 7);

  napi_value o = fake_object();
  fake_set(o, "family", fake_number(fam));
  fake_set(o, "address", fake_string(fam == 4 ? "127.0.0.1" : "::1"));
  fake_set(o, "port", fake_number(0));
  fake_set(o, "mark", fake_number(0));
  fake_set(o, "recvBufferBytes", fake_number(1 << 20));
  fake_set(o, "connectAddress", connected ? fake_string(fam == 4 ? "127.0.0.1" : "::1") : fake_null());
  fake_set(o, "connectPort", fake_number(cport));
  fake_set(o, "rxSlab", fake_typed(napi_uint8_array, rx, rxbytes));
  fake_set(o, "rxSlotBytes", fake_number(slot));
  fake_set(o, "rxMeta", fake_typed(napi_uint32_array, rxm, rxmw));
  fake_set(o, "txSlab", fake_typed(napi_uint8_array, tx, txlen));
  fake_set(o, "txMeta", fake_typed(napi_uint32_array, txm, (size_t)txn * 8));
  fake_set(o, "stats", fake_typed(napi_float64_array, stats, nstats));
  rxctx c = {.meta = rxm, .slab = rx, .slot = slot, .slots = slots, .fam = (uint32_t)fam, .cport = cport};
  c.close_in_cb = (mode & 0x60) == 0x60;
  napi_value argv[2] = {o, fake_js_function(on_batch, &c)};
  napi_value res = fake_call(fake_get(exports_, "dnsioOpen"), argv, 2);
  int bad_opts = junk && (slot < 512 || slot > 65536 || rxbytes < slot || metaless || txn == 0 || nstats < 8);
  if (!res) {
    FZ_CHECK(fake_exception() != NULL);
    FZ_CHECK(bad_opts || junk); /* good options open */
    fake_clear_exception();
  } else {
    FZ_CHECK(!bad_opts && !fake_exception());
    napi_value handle = fake_get(res, "handle");
    c.handle = handle;
    uint16_t port = (uint16_t)fake_get_number(fake_get(res, "port"));
    FZ_CHECK(port != 0);
    struct sockaddr_in6 sa = ca;
    if (fam == 4) ((struct sockaddr_in *)&sa)->sin_port = htons(port);
    else sa.sin6_port = htons(port);
    /* datagrams to it */
    uint32_t nd = fz_u8(&in) % 200;
    uint8_t *buf = malloc(65536);
    uint32_t queued = 0;
    for (uint32_t i = 0; i < nd; i++) {
      uint16_t r = fz_u16(&in);
      uint32_t len = r == 0xffff ? 65507 : r % 9001;
      /* stay well inside the receive buffer (loopback drops what does not fit) */
      if (queued + len + 2048 > (512u << 10)) break;
      queued += len + 2048;
      fz_fill(buf, len, c.expect_n);
      if (sendto(cfd, buf, len, 0, (struct sockaddr *)&sa, cl) == (ssize_t)len) c.lens[c.expect_n++] = len;
    }
    free(buf);
    /* 8 batches per readable event (ROUNDS_PER_EVENT): a few loop turns for the rest */
    for (int k = 0; k < 64 && !c.closed && c.got < c.expect_n; k++) uv_run(&loop, UV_RUN_NOWAIT);
    if (!c.closed) FZ_CHECK(c.got == c.expect_n);
    FZ_CHECK(stats[0] == c.got || c.closed);
    /* a send batch */
    if (!c.closed) {
      int bad = 0;
      for (uint32_t i = 0; i < txn; i++) {
        uint32_t *m = txm + (size_t)i * 8;
        m[0] = fz_u32(&in) % (txlen + 64);
        m[1] = fz_u32(&in) % (txlen + 64);
        m[2] = fz_u8(&in) % 8;
        m[3] = fz_u8(&in) & 1 ? cport : 70000u;
        if (m[2] == 4) m[4] = htonl(INADDR_LOOPBACK);
        else if (m[2] == 6) memcpy(&m[4], &in6addr_loopback, 16);
        else memset(&m[4], 0, 16); /* never an address outside loopback */
      }
      uint32_t count = fz_u8(&in) % (txn + 3);
      for (uint32_t i = 0; i < count && i < txn; i++) {
        uint32_t *m = txm + (size_t)i * 8;
        bad |= (uint64_t)m[0] + m[1] > txlen || (m[2] != 0 && m[2] != 4 && m[2] != 6) || m[3] > 65535;
      }
      bad |= count > txn;
      napi_value a[2] = {handle, fake_number(count)};
      napi_value r = fake_call(fake_get(exports_, "dnsioSend"), a, 2);
      if (bad) {
        FZ_CHECK(!r && fake_exception());
        fake_clear_exception();
      } else {
        FZ_CHECK(r && !fake_exception());
        FZ_CHECK(fake_get_number(r) <= count);
      }
    }
    if (mode & 0x80) {
      fake_finalize(handle); /* the handle was dropped without a close */
    } else {
      if (!c.closed) {
        napi_value a[1] = {handle};
        fake_call(fake_get(exports_, "dnsioClose"), a, 1);
        FZ_CHECK(!fake_exception());
      }
      for (int k = 0; k < 3; k++) uv_run(&loop, UV_RUN_NOWAIT);
      fake_finalize(handle);
    }
    for (int k = 0; k < 3; k++) uv_run(&loop, UV_RUN_NOWAIT);
  }
  FZ_CHECK(fake_live_refs() == 0);
  close(cfd);
  free(rx);
  free(tx);
  free(rxm);
  free(txm);
  free(stats);
  fake_reset();
  exports_ = NULL;
  env = NULL; /* fake_reset freed the exports: made again next time */
  return 0;
}
