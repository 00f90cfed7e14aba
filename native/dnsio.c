/* dnsio.c: a batched UDP socket for the DNS proxy (src/dns/udpbatch.ts is its JS
 * side; names match one to one).
 *
 *   dnsioOpen(opts, onBatch) -> { handle, port }
 *     opts: { family: 4 | 6, address, port, mark, recvBufferBytes,
 *             connectAddress: string | null, connectPort,
 *             rxSlab: Uint8Array, rxSlotBytes, rxMeta: Uint32Array,
 *             txSlab: Uint8Array, txMeta: Uint32Array, stats: Float64Array }
 *     onBatch(count) is called on node's thread once per recvmmsg batch.
 *   dnsioSend(handle, count) -> datagrams the kernel took
 *   dnsioClose(handle)
 *   dnsioLayout() -> { metaWords, stats: { received, ... } }
 *
 * One non-blocking socket watched by a uv_poll on node's own loop. Readable: the
 * socket is drained with recvmmsg into the JS-owned rxSlab (slot i at
 * i * rxSlotBytes) and rxMeta (META_WORDS u32 per slot: bytes stored, real length,
 * family, port, address as 4 u32 in network order), then JS is called once for the
 * batch. A datagram longer than its slot is cut to the slot (real length > stored:
 * counted as truncated, for JS to drop). Sending: JS packs datagrams into txSlab
 * and describes each in txMeta (offset, length, family (0: the connected peer),
 * port, address) and calls dnsioSend once per batch: sendmmsg until done. Errors
 * are counted in stats (a Float64Array JS reads without a native call), never
 * thrown per datagram; a full socket buffer drops the rest of the batch (counted).
 *
 * A socket error (ICMP port unreachable on a connected socket) makes epoll report
 * POLLERR, on which libuv stops the poll: it is read with SO_ERROR, counted, and
 * the poll restarted. Close: uv_close, and the fd is closed and the memory freed
 * in the close callback (so a close from inside onBatch is safe); the slabs stay
 * referenced until then. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>
#include "modules.h"
#include "util.h"

#define META_WORDS 8
#define TX_META_WORDS 8
#define MAX_SLOTS 1024
/* Batches read per readable event before node's loop gets its turn back. */
#define ROUNDS_PER_EVENT 8

enum {
  ST_RECEIVED,
  ST_TRUNCATED,
  ST_RECV_ERRORS,
  ST_BATCHES,
  ST_SENT,
  ST_SEND_ERRORS,
  ST_SEND_DROPPED,
  ST_SOCKET_ERRORS,
  ST_COUNT
};
static const char *const stat_names[ST_COUNT] = {
    "received", "truncated", "recvErrors", "batches", "sent", "sendErrors", "sendDropped", "socketErrors",
};

typedef struct {
  uv_poll_t poll;
  int fd;
  int closing;
  int finalized; /* the JS handle is gone */
  int closed;    /* uv_close finished */
  int env_gone;  /* the environment is being torn down: its references go with it */
  napi_env env;
  napi_async_context actx;
  napi_async_cleanup_hook_handle hook;
  napi_ref cb, rx_slab_ref, rx_meta_ref, tx_slab_ref, tx_meta_ref, stats_ref;
  uint8_t *rx_slab;
  size_t rx_slot_bytes;
  unsigned rx_slots;
  uint32_t *rx_meta;
  uint8_t *tx_slab;
  size_t tx_slab_len;
  uint32_t *tx_meta;
  unsigned tx_slots;
  double *stats;
  struct mmsghdr *rx_msgs;
  struct iovec *rx_iov;
  struct sockaddr_in6 *rx_addr;
  struct mmsghdr *tx_msgs;
  struct iovec *tx_iov;
  struct sockaddr_in6 *tx_addr;
} dnsio;

static void dnsio_free(dnsio *s) {
  free(s->rx_msgs);
  free(s->rx_iov);
  free(s->rx_addr);
  free(s->tx_msgs);
  free(s->tx_iov);
  free(s->tx_addr);
  free(s);
}

static void on_closed(uv_handle_t *h) {
  dnsio *s = h->data;
  close(s->fd);
  s->fd = -1;
  s->closed = 1;
  if (!s->env_gone) {
    napi_ref *refs[] = {&s->cb, &s->rx_slab_ref, &s->rx_meta_ref, &s->tx_slab_ref, &s->tx_meta_ref, &s->stats_ref};
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
      if (*refs[i] != NULL) napi_delete_reference(s->env, *refs[i]);
      *refs[i] = NULL;
    }
    if (s->actx != NULL) napi_async_destroy(s->env, s->actx);
    s->actx = NULL;
  }
  if (s->hook != NULL) {
    napi_async_cleanup_hook_handle hook = s->hook;
    s->hook = NULL;
    napi_remove_async_cleanup_hook(hook); /* on env teardown: tells node the close is done */
  }
  if (s->finalized) dnsio_free(s);
}

static void start_close(dnsio *s) {
  if (s->closing) return;
  s->closing = 1;
  uv_poll_stop(&s->poll);
  uv_close((uv_handle_t *)&s->poll, on_closed);
}

/* The environment is going away (worker exit) with the socket open: close it there;
 * the references die with the environment. */
static void on_env_cleanup(napi_async_cleanup_hook_handle hook, void *arg) {
  dnsio *s = arg;
  s->env_gone = 1;
  start_close(s); /* on_closed removes the hook */
}

static void on_finalize(napi_env env, void *data, void *hint) {
  dnsio *s = data;
  s->finalized = 1;
  if (s->closed) dnsio_free(s);
  else start_close(s);
}

/* Fills rx_meta for the n datagrams just read. */
static void fill_meta(dnsio *s, unsigned n) {
  for (unsigned i = 0; i < n; i++) {
    uint32_t *m = s->rx_meta + (size_t)i * META_WORDS;
    uint32_t real = s->rx_msgs[i].msg_len;
    uint32_t stored = real > s->rx_slot_bytes ? (uint32_t)s->rx_slot_bytes : real;
    if (real > stored) s->stats[ST_TRUNCATED]++;
    m[0] = stored;
    m[1] = real;
    const struct sockaddr_in6 *a6 = &s->rx_addr[i];
    if (a6->sin6_family == AF_INET) {
      const struct sockaddr_in *a4 = (const struct sockaddr_in *)a6;
      m[2] = 4;
      m[3] = ntohs(a4->sin_port);
      memcpy(&m[4], &a4->sin_addr, 4);
      m[5] = m[6] = m[7] = 0;
    } else {
      m[2] = a6->sin6_family == AF_INET6 ? 6 : 0;
      m[3] = ntohs(a6->sin6_port);
      memcpy(&m[4], &a6->sin6_addr, 16);
    }
  }
}

/* Calls onBatch(n) as a node callback (microtasks and ticks run after it). */
static void call_js(dnsio *s, unsigned n) {
  napi_env env = s->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, arg, res;
  if (napi_get_reference_value(env, s->cb, &cb) == napi_ok && cb != NULL && napi_get_global(env, &recv) == napi_ok &&
      napi_create_uint32(env, n, &arg) == napi_ok) {
    if (napi_make_callback(env, s->actx, recv, cb, 1, &arg, &res) == napi_pending_exception) {
      napi_value err;
      napi_get_and_clear_last_exception(env, &err);
      napi_fatal_exception(env, err); /* as an exception thrown in an event handler */
    }
  }
  napi_close_handle_scope(env, scope);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  dnsio *s = h->data;
  if (s->closing) return;
  if (status < 0) {
    /* POLLERR: libuv stopped the poll. Read (and so clear) the socket's error. */
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
      s->stats[ST_SOCKET_ERRORS]++;
      return; /* the descriptor itself is bad: stay stopped */
    }
    s->stats[ST_SOCKET_ERRORS]++;
    uv_poll_start(&s->poll, UV_READABLE, on_poll);
  }
  for (int round = 0; round < ROUNDS_PER_EVENT && !s->closing; round++) {
    for (unsigned i = 0; i < s->rx_slots; i++) {
      s->rx_msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in6);
      s->rx_msgs[i].msg_hdr.msg_flags = 0;
      s->rx_msgs[i].msg_len = 0;
    }
    int n = recvmmsg(s->fd, s->rx_msgs, s->rx_slots, MSG_DONTWAIT | MSG_TRUNC, NULL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      s->stats[ST_RECV_ERRORS]++; /* ECONNREFUSED and the like: reported once, then cleared */
      continue;
    }
    if (n == 0) break;
    fill_meta(s, (unsigned)n);
    s->stats[ST_RECEIVED] += n;
    s->stats[ST_BATCHES]++;
    call_js(s, (unsigned)n);
    if ((unsigned)n < s->rx_slots) break;
  }
}

/* ---- argument helpers ---- */

/* A typed array of the given type; returns its data and element count, and a reference. */
static int get_array_prop(napi_env env, napi_value obj, const char *name, napi_typedarray_type want, void **data,
                          size_t *count, napi_ref *ref) {
  napi_value v;
  if (tenc_get_prop(env, obj, name, &v) < 0) return -1;
  bool is = false;
  napi_is_typedarray(env, v, &is);
  napi_typedarray_type tt;
  napi_value ab;
  size_t off;
  if (is) napi_get_typedarray_info(env, v, &tt, count, data, &ab, &off);
  if (!is || tt != want) {
    static const char *const tn[] = {[napi_uint8_array] = "Uint8Array", [napi_uint32_array] = "Uint32Array",
                                     [napi_float64_array] = "Float64Array"};
    char m[120];
    snprintf(m, sizeof m, "opts.%s must be a %s", name, tn[want] ? tn[want] : "typed array");
    tenc_throw_type(env, m);
    return -1;
  }
  return napi_create_reference(env, v, 1, ref) == napi_ok ? 0 : -1;
}

/* family 4 or 6 and a literal address -> sockaddr; RangeError when it does not parse. */
static int make_addr(napi_env env, int family, napi_value v, int port, struct sockaddr_in6 *sa, socklen_t *len,
                     const char *name) {
  char buf[64];
  if (tenc_get_str(env, v, buf, sizeof buf, name) < 0) return -1;
  memset(sa, 0, sizeof *sa);
  if (family == 4) {
    struct sockaddr_in *a4 = (struct sockaddr_in *)sa;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, buf, &a4->sin_addr) == 1) {
      *len = sizeof *a4;
      return 0;
    }
  } else {
    sa->sin6_family = AF_INET6;
    sa->sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, buf, &sa->sin6_addr) == 1) {
      *len = sizeof *sa;
      return 0;
    }
  }
  char m[160];
  snprintf(m, sizeof m, "%s is not an IPv%d address: %s", name, family, buf);
  tenc_throw_range(env, m);
  return -1;
}

static const napi_type_tag DNSIO_TAG = {0x74656e63646e7331ull, 0x4c0e7a91d3b6f258ull};

static int get_handle(napi_env env, napi_value v, dnsio **out) {
  void *p = NULL;
  if (!tenc_has_tag(env, v, &DNSIO_TAG) || napi_get_value_external(env, v, &p) != napi_ok || !p) {
    tenc_throw_type(env, "handle must be a dnsio handle");
    return -1;
  }
  *out = p;
  return 0;
}

/* ---- exports ---- */

static napi_value dnsio_open(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (tenc_get_opts_cb(env, info, argv, "onBatch") < 0) return NULL;
  napi_value o = argv[0];

  dnsio *s = calloc(1, sizeof *s);
  if (s == NULL) return tenc_throw_errno(env, ENOMEM, "dnsio socket");
  s->fd = -1;
  s->env = env;
  int64_t family, port, mark, rcvbuf, slot_bytes, cport = 0;
  void *p;
  size_t n;
  if (tenc_get_int_prop(env, o, "family", 4, 6, &family) < 0) goto fail;
  if (family != 4 && family != 6) {
    tenc_throw_range(env, "family must be 4 or 6");
    goto fail;
  }
  if (tenc_get_int_prop(env, o, "port", 0, 65535, &port) < 0) goto fail;
  if (tenc_get_int_prop(env, o, "mark", 0, 0xffffffffLL, &mark) < 0) goto fail;
  if (tenc_get_int_prop(env, o, "recvBufferBytes", 0, 1 << 30, &rcvbuf) < 0) goto fail;
  if (tenc_get_int_prop(env, o, "rxSlotBytes", 512, 65536, &slot_bytes) < 0) goto fail;
  struct sockaddr_in6 bind_sa, conn_sa;
  socklen_t bind_len, conn_len = 0;
  napi_value v;
  if (tenc_get_prop(env, o, "address", &v) < 0 || make_addr(env, (int)family, v, (int)port, &bind_sa, &bind_len, "address") < 0)
    goto fail;
  if (tenc_get_prop(env, o, "connectAddress", &v) < 0) goto fail;
  napi_valuetype ct;
  napi_typeof(env, v, &ct);
  if (ct != napi_null) {
    if (tenc_get_int_prop(env, o, "connectPort", 1, 65535, &cport) < 0) goto fail;
    if (make_addr(env, (int)family, v, (int)cport, &conn_sa, &conn_len, "connectAddress") < 0) goto fail;
  }
  if (get_array_prop(env, o, "rxSlab", napi_uint8_array, &p, &n, &s->rx_slab_ref) < 0) goto fail;
  s->rx_slab = p;
  s->rx_slot_bytes = (size_t)slot_bytes;
  if (n < (size_t)slot_bytes || n / (size_t)slot_bytes > MAX_SLOTS) {
    tenc_throw_range(env, "rxSlab must hold 1 to 1024 slots of rxSlotBytes");
    goto fail;
  }
  s->rx_slots = (unsigned)(n / (size_t)slot_bytes);
  if (get_array_prop(env, o, "rxMeta", napi_uint32_array, &p, &n, &s->rx_meta_ref) < 0) goto fail;
  s->rx_meta = p;
  if (n < (size_t)s->rx_slots * META_WORDS) {
    tenc_throw_range(env, "rxMeta must hold 8 words per rx slot");
    goto fail;
  }
  if (get_array_prop(env, o, "txSlab", napi_uint8_array, &p, &n, &s->tx_slab_ref) < 0) goto fail;
  s->tx_slab = p;
  s->tx_slab_len = n;
  if (get_array_prop(env, o, "txMeta", napi_uint32_array, &p, &n, &s->tx_meta_ref) < 0) goto fail;
  s->tx_meta = p;
  s->tx_slots = (unsigned)(n / TX_META_WORDS);
  if (s->tx_slots == 0 || s->tx_slots > MAX_SLOTS) {
    tenc_throw_range(env, "txMeta must hold 1 to 1024 entries of 8 words");
    goto fail;
  }
  if (get_array_prop(env, o, "stats", napi_float64_array, &p, &n, &s->stats_ref) < 0) goto fail;
  s->stats = p;
  if (n < ST_COUNT) {
    tenc_throw_range(env, "stats must hold 8 numbers");
    goto fail;
  }
  if (napi_create_reference(env, argv[1], 1, &s->cb) != napi_ok) goto fail;

  s->rx_msgs = calloc(s->rx_slots, sizeof *s->rx_msgs);
  s->rx_iov = calloc(s->rx_slots, sizeof *s->rx_iov);
  s->rx_addr = calloc(s->rx_slots, sizeof *s->rx_addr);
  s->tx_msgs = calloc(s->tx_slots, sizeof *s->tx_msgs);
  s->tx_iov = calloc(s->tx_slots, sizeof *s->tx_iov);
  s->tx_addr = calloc(s->tx_slots, sizeof *s->tx_addr);
  if (!s->rx_msgs || !s->rx_iov || !s->rx_addr || !s->tx_msgs || !s->tx_iov || !s->tx_addr) {
    tenc_throw_errno(env, ENOMEM, "dnsio buffers");
    goto fail;
  }
  for (unsigned i = 0; i < s->rx_slots; i++) {
    s->rx_iov[i].iov_base = s->rx_slab + (size_t)i * s->rx_slot_bytes;
    s->rx_iov[i].iov_len = s->rx_slot_bytes;
    s->rx_msgs[i].msg_hdr.msg_iov = &s->rx_iov[i];
    s->rx_msgs[i].msg_hdr.msg_iovlen = 1;
    s->rx_msgs[i].msg_hdr.msg_name = &s->rx_addr[i];
  }

  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    tenc_throw_errno(env, errno, "socket udp%d", (int)family);
    goto fail;
  }
  s->fd = fd;
  if (family == 6) {
    int one = 1;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  if (mark != 0) {
    unsigned m = (unsigned)mark;
    if (setsockopt(fd, SOL_SOCKET, SO_MARK, &m, sizeof m) < 0) {
      tenc_throw_errno(env, errno, "SO_MARK 0x%x on a dns udp socket", m);
      goto fail;
    }
  }
  if (rcvbuf > 0) {
    int b = (int)rcvbuf; /* FORCE needs CAP_NET_ADMIN; otherwise capped by rmem_max */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &b, sizeof b) < 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &b, sizeof b);
  }
  if (bind(fd, (struct sockaddr *)&bind_sa, bind_len) < 0) {
    char a[64];
    inet_ntop(family == 4 ? AF_INET : AF_INET6,
              family == 4 ? (void *)&((struct sockaddr_in *)&bind_sa)->sin_addr : (void *)&bind_sa.sin6_addr, a, sizeof a);
    tenc_throw_errno(env, errno, "bind udp %s port %d", a, (int)port);
    goto fail;
  }
  if (conn_len != 0 && connect(fd, (struct sockaddr *)&conn_sa, conn_len) < 0) {
    tenc_throw_errno(env, errno, "connect udp to port %d", (int)cport);
    goto fail;
  }
  struct sockaddr_in6 got;
  socklen_t gl = sizeof got;
  getsockname(fd, (struct sockaddr *)&got, &gl);
  int bound_port = ntohs(family == 4 ? ((struct sockaddr_in *)&got)->sin_port : got.sin6_port);

  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) goto fail;
  napi_value res_name, res_obj;
  napi_create_string_utf8(env, "tenc.dnsio", NAPI_AUTO_LENGTH, &res_name);
  napi_create_object(env, &res_obj);
  if (napi_async_init(env, res_obj, res_name, &s->actx) != napi_ok) goto fail;
  if (uv_poll_init_socket(loop, &s->poll, fd) != 0) {
    tenc_throw_errno(env, EINVAL, "uv_poll_init on a dns udp socket");
    goto fail;
  }
  s->poll.data = s;
  /* From here the struct is freed through uv_close only. */
  if (napi_add_async_cleanup_hook(env, on_env_cleanup, s, &s->hook) != napi_ok) s->hook = NULL;
  napi_value handle, res, pv;
  if (napi_create_external(env, s, on_finalize, NULL, &handle) != napi_ok) {
    s->finalized = 1;
    start_close(s);
    return NULL;
  }
  if (tenc_tag_handle(env, handle, &DNSIO_TAG) < 0) { /* closed now; the external's finalizer frees it */
    start_close(s);
    return tenc_throw_errno(env, ENOMEM, "dnsioOpen: handle");
  }
  uv_poll_start(&s->poll, UV_READABLE, on_poll);
  napi_create_object(env, &res);
  napi_set_named_property(env, res, "handle", handle);
  napi_create_int32(env, bound_port, &pv);
  napi_set_named_property(env, res, "port", pv);
  return res;

fail:
  if (s->fd >= 0) close(s->fd);
  napi_ref *refs[] = {&s->cb, &s->rx_slab_ref, &s->rx_meta_ref, &s->tx_slab_ref, &s->tx_meta_ref, &s->stats_ref};
  for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++)
    if (*refs[i] != NULL) napi_delete_reference(env, *refs[i]);
  if (s->actx != NULL) napi_async_destroy(env, s->actx);
  dnsio_free(s);
  return NULL;
}

static napi_value dnsio_send(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) return tenc_throw_type(env, "dnsioSend(handle, count)");
  dnsio *s;
  if (get_handle(env, argv[0], &s) < 0) return NULL;
  int64_t count;
  if (tenc_get_int(env, argv[1], 0, MAX_SLOTS, "count", &count) < 0) return NULL;
  if (s->closing) {
    napi_value r;
    napi_create_uint32(env, 0, &r);
    return r;
  }
  if ((uint64_t)count > s->tx_slots) return tenc_throw_range(env, "count is above txMeta's entries");
  /* Every entry is checked before anything is sent. */
  for (int64_t i = 0; i < count; i++) {
    const uint32_t *m = s->tx_meta + (size_t)i * TX_META_WORDS;
    if ((uint64_t)m[0] + m[1] > s->tx_slab_len) {
      char msg[120];
      snprintf(msg, sizeof msg, "datagram %lld does not fit in txSlab", (long long)i);
      return tenc_throw_range(env, msg);
    }
    if (m[2] != 0 && m[2] != 4 && m[2] != 6) return tenc_throw_range(env, "family must be 0, 4 or 6");
    if (m[3] > 65535) return tenc_throw_range(env, "port must be in [0, 65535]");
  }
  for (int64_t i = 0; i < count; i++) {
    const uint32_t *m = s->tx_meta + (size_t)i * TX_META_WORDS;
    struct msghdr *h = &s->tx_msgs[i].msg_hdr;
    memset(h, 0, sizeof *h);
    s->tx_iov[i].iov_base = s->tx_slab + m[0];
    s->tx_iov[i].iov_len = m[1];
    h->msg_iov = &s->tx_iov[i];
    h->msg_iovlen = 1;
    struct sockaddr_in6 *sa = &s->tx_addr[i];
    memset(sa, 0, sizeof *sa);
    if (m[2] == 4) {
      struct sockaddr_in *a4 = (struct sockaddr_in *)sa;
      a4->sin_family = AF_INET;
      a4->sin_port = htons((uint16_t)m[3]);
      memcpy(&a4->sin_addr, &m[4], 4);
      h->msg_name = sa;
      h->msg_namelen = sizeof *a4;
    } else if (m[2] == 6) {
      sa->sin6_family = AF_INET6;
      sa->sin6_port = htons((uint16_t)m[3]);
      memcpy(&sa->sin6_addr, &m[4], 16);
      h->msg_name = sa;
      h->msg_namelen = sizeof *sa;
    }
  }
  unsigned done = 0, sent = 0;
  while (done < (unsigned)count) {
    int r = sendmmsg(s->fd, s->tx_msgs + done, (unsigned)count - done, MSG_DONTWAIT);
    if (r > 0) {
      done += (unsigned)r;
      sent += (unsigned)r;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
      s->stats[ST_SEND_DROPPED] += (unsigned)count - done; /* socket buffer full: the rest is lost, as on a wire */
      break;
    }
    s->stats[ST_SEND_ERRORS]++; /* this datagram failed (EMSGSIZE, ECONNREFUSED, EPERM...): skip it */
    done++;
  }
  s->stats[ST_SENT] += sent;
  napi_value r;
  napi_create_uint32(env, sent, &r);
  return r;
}

static napi_value dnsio_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) return tenc_throw_type(env, "dnsioClose(handle)");
  dnsio *s;
  if (get_handle(env, argv[0], &s) < 0) return NULL;
  start_close(s);
  return NULL;
}

static napi_value dnsio_layout(napi_env env, napi_callback_info info) {
  napi_value res, st;
  napi_create_object(env, &res);
  napi_create_object(env, &st);
  tenc_set_int(env, res, "metaWords", META_WORDS);
  tenc_set_int(env, res, "txMetaWords", TX_META_WORDS);
  tenc_set_int(env, res, "maxSlots", MAX_SLOTS);
  for (int i = 0; i < ST_COUNT; i++) tenc_set_int(env, st, stat_names[i], i);
  napi_set_named_property(env, res, "stats", st);
  return res;
}

napi_status tenc_init_dnsio(napi_env env, napi_value exports) {
  napi_status s;
  if ((s = tenc_set_fn(env, exports, "dnsioOpen", dnsio_open)) != napi_ok) return s;
  if ((s = tenc_set_fn(env, exports, "dnsioSend", dnsio_send)) != napi_ok) return s;
  if ((s = tenc_set_fn(env, exports, "dnsioClose", dnsio_close)) != napi_ok) return s;
  return tenc_set_fn(env, exports, "dnsioLayout", dnsio_layout);
}
