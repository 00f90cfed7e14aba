/* engine_js.c: N-API glue of the engine (engine.h): its life, its events as JS
 * calls, the control calls and the switches read at engineCreate; names match
 * src/dataplane/native.ts one to one. Test hooks are in engine_js_test.c.
 *
 *   engineCreate(opts, onEvents) -> { handle, counters: ArrayBuffer }
 *     opts: { tunFd, udpFd, raw4Fd, raw6Fd (-1 = none), mode: 'raw' | 'tun',
 *             vnetHdr, udpGso, udpGro: boolean, mtu: number (0 = no check) }
 *     The fds belong to the engine from then on (closed by engineClose).
 *     onEvents(events[]) is called on the node thread once per batch of events.
 *   engineAddPeer(h, peer, address|null, port)      engineRemovePeer(h, peer)
 *   engineSetEndpoint(h, peer, address, port)
 *   engineAllowedIp(h, peer, cidr, add)
 *   engineAddKeypair(h, peer, localIndex, remoteIndex, sendKey, recvKey)
 *   engineSetSendKeypair(h, peer, localIndex|null)  engineRemoveKeypair(h, localIndex)
 *   engineSendHandshake(h, address, port, data)     engineSendKeepalive(h, peer) -> bool
 *   engineFlushQueue(h, peer)                       engineSetLocalServices(h, services)
 *   engineRoute(h, address) -> peer | -1             (allowed-IPs lookup, for tests/debugging)
 *   engineSwitches(h) -> { scatterSeal, groIov, inlineTx, siblingPoll, dataEpoll,
 *     busyPollUs, tsoAlign, tsoMax, txBatchKb }   the switches below as the engine runs them
 *   engineSetPublicKey(h, publicKey)   our static public key: handshake messages
 *     without a mac1 made with it are dropped in C (bad_mac1)
 *   processProtect() -> { dumpable }   prctl(PR_SET_DUMPABLE, 0), read back
 * Switches read from the environment at engineCreate (unset = default):
 *   TENC_SCATTER_SEAL=0|1 (default 1): seal TSO/USO segments straight out of the
 *     super-packet instead of copying each segment first
 *   TENC_BUSY_POLL_US=N (0..2000, default 150; 0 = off): after sending a batch of
 *     at most 16 packets the TX thread polls both the TUN device and the UDP
 *     socket for up to N microseconds of idle time before sleeping (engine_loop.c
 *     busy_poll; after 8 fruitless spins in a row only every 16th batch spins)
 *   TENC_INLINE_TX=0|1 (default 1): after writing a small batch (at most 16
 *     datagrams) to the TUN device, the RX thread reads the device once and sends
 *     what it holds (usually the answer: echo reply, ACK) instead of a TX wake-up
 *   TENC_SIBLING_POLL=0|1 (default 1): a small batch sent to another engine of this
 *     process (a pod of the same pod host) has its receive and inline reply run by
 *     the sending thread (engine_loop.c)
 *   TENC_DATA_EPOLL=0|1 (default 1): the two data threads wait in epoll sets, in
 *     which the sibling poll masks the receiving engine's fds while it runs that
 *     engine's receive; 0 = they wait in poll(), as when the sets cannot be made
 *     (then no sibling poll)
 *   TENC_GRO_IOV=0|1 (default 1): a merged TCP run is written to the TUN device
 *     with writev (its headers + each payload where it was decrypted) instead of
 *     being copied into one frame first
 *   TENC_TSO_ALIGN=N (default 64 = ChaCha20's block; 0 = off): TCP segments cut
 *     from a TSO super-packet get an IP length that is a multiple of N (at most
 *     N-1 bytes smaller than the kernel asked), so the sealed record has no
 *     partial last keystream block (OpenSSL makes a separate keystream call for
 *     it: a 1408-byte record seals ~15% faster than a 1424-byte one);
 *     TENC_TSO_MAX=N caps their IP length (default 0 = as the kernel asks)
 *   TENC_TX_BATCH_KB=N (0..4096, default 0 = the whole 4 MiB arena): a send batch
 *     stops reading the TUN device once N KiB of its arena are used (smaller,
 *     more cache-friendly batches and UDP bursts)
 *   engineClose(h)                                  engineLayout()  engineNow()
 * Errors: system/lookup failures throw Error with code = errno name (ENOENT for an
 * unknown peer or keypair, EEXIST for a local index in use, ENOKEY for a keypair of
 * another peer); bad argument types TypeError, bad ranges RangeError. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <errno.h>
#include "engine_js.h"
#include "modules.h"

static void js_unref(js_engine *j) {
  if (--j->refs == 0) free(j);
}

/* A create that fails leaves the fds with the caller (which closes them): the engine's free must not. */
static void give_fds_back(js_engine *j) {
  if (j->e) j->e->o.tun_fd = j->e->o.udp_fd = j->e->o.raw4_fd = j->e->o.raw6_fd = -1;
}

static void js_close(napi_env env, js_engine *j) {
  if (j->closed) return;
  j->closed = 1;
  tenc_engine_free(j->e); /* joins the threads, zeroes keys, closes fds */
  j->e = NULL;
  if (j->ctr_ref) napi_delete_reference(env, j->ctr_ref);
  j->ctr_ref = NULL;
  napi_release_threadsafe_function(j->tsfn, napi_tsfn_abort);
}

static void handle_finalize(napi_env env, void *data, void *hint) {
  js_engine *j = data;
  js_close(env, j);
  js_unref(j);
}

static void tsfn_finalize(napi_env env, void *data, void *hint) { js_unref(hint); }

/* The engine's event signal (engine.h tenc_event_signal): call_js runs on the node
 * thread and takes the events. */
void tenc_js_signal(tenc_engine *e) {
  js_engine *j = e->js;
  napi_call_threadsafe_function(j->tsfn, NULL, napi_tsfn_nonblocking);
}

static napi_value ep_object(napi_env env, const struct sockaddr_in6 *sa) {
  char buf[INET6_ADDRSTRLEN];
  if (IN6_IS_ADDR_V4MAPPED(&sa->sin6_addr))
    inet_ntop(AF_INET, &sa->sin6_addr.s6_addr[12], buf, sizeof buf);
  else
    inet_ntop(AF_INET6, &sa->sin6_addr, buf, sizeof buf);
  napi_value o, v;
  napi_create_object(env, &o);
  napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, o, "address", v);
  tenc_set_int(env, o, "port", ntohs(sa->sin6_port));
  return o;
}

static void call_js(napi_env env, napi_value cb, void *context, void *data) {
  js_engine *j = context;
  if (!env || j->closed || j->hold_events) return; /* held: released by engineTestHoldEvents, which signals */
  uint32_t n;
  tenc_event *ev = tenc_engine_take_events(j->e, &n);
  if (!n) {
    free(ev);
    return;
  }
  static const char *names[] = {"handshake", "need_handshake", "keypair_confirmed", "rekey_needed", "endpoint",
                                "route_miss"};
  napi_value arr;
  napi_create_array_with_length(env, n, &arr);
  for (uint32_t i = 0; i < n; i++) {
    napi_value o, v;
    napi_create_object(env, &o);
    napi_create_string_utf8(env, names[ev[i].type], NAPI_AUTO_LENGTH, &v);
    napi_set_named_property(env, o, "type", v);
    switch (ev[i].type) {
      case TENC_EV_HANDSHAKE: {
        void *p;
        napi_create_buffer_copy(env, ev[i].len, ev[i].data, &p, &v);
        napi_set_named_property(env, o, "data", v);
        napi_set_named_property(env, o, "from", ep_object(env, &ev[i].ep));
        break;
      }
      case TENC_EV_ENDPOINT:
        tenc_set_int(env, o, "peer", ev[i].peer);
        napi_set_named_property(env, o, "endpoint", ep_object(env, &ev[i].ep));
        break;
      case TENC_EV_NEED_HANDSHAKE:
        tenc_set_int(env, o, "peer", ev[i].peer);
        break;
      case TENC_EV_ROUTE_MISS: {
        napi_value ep = ep_object(env, &ev[i].ep);
        napi_get_named_property(env, ep, "address", &v);
        napi_set_named_property(env, o, "destination", v);
        if (ev[i].data) {
          void *p;
          napi_create_buffer_copy(env, ev[i].len, ev[i].data, &p, &v);
          explicit_bzero(ev[i].data, ev[i].len); /* the pod's plaintext */
        } else {
          napi_get_null(env, &v);
        }
        napi_set_named_property(env, o, "packet", v);
        break;
      }
      default:
        tenc_set_int(env, o, "peer", ev[i].peer);
        tenc_set_int(env, o, "localIndex", ev[i].local_index);
    }
    napi_set_element(env, arr, i, o);
    free(ev[i].data);
  }
  free(ev);
  napi_value undef;
  napi_get_undefined(env, &undef);
  napi_call_function(env, undef, cb, 1, &arr, NULL);
}

/* ---- argument helpers ---- */

static int opt_bool(napi_env env, napi_value obj, const char *name, int *out) {
  napi_value v;
  if (tenc_get_prop(env, obj, name, &v) < 0) return -1;
  return tenc_get_bool(env, v, name, out);
}

/* Parses an IPv4/IPv6 literal into 4/16 bytes; returns the family or -1 (thrown). */
int tenc_js_ip(napi_env env, napi_value v, const char *name, uint8_t out[16]) {
  char s[64];
  if (tenc_get_str(env, v, s, sizeof s, name) < 0) return -1;
  if (inet_pton(AF_INET, s, out) == 1) return 4;
  if (inet_pton(AF_INET6, s, out) == 1) return 6;
  char m[128];
  snprintf(m, sizeof m, "%s is not an IPv4 or IPv6 address: %s", name, s);
  tenc_throw_type(env, m);
  return -1;
}

static int get_endpoint(napi_env env, napi_value addr, napi_value port, struct sockaddr_in6 *sa) {
  uint8_t a[16];
  int64_t p;
  int fam = tenc_js_ip(env, addr, "address", a);
  if (fam < 0 || tenc_get_int(env, port, 1, 65535, "port", &p) < 0) return -1;
  memset(sa, 0, sizeof *sa);
  sa->sin6_family = AF_INET6;
  sa->sin6_port = htons((uint16_t)p);
  if (fam == 4) {
    sa->sin6_addr.s6_addr[10] = sa->sin6_addr.s6_addr[11] = 0xff;
    memcpy(&sa->sin6_addr.s6_addr[12], a, 4);
  } else {
    memcpy(&sa->sin6_addr, a, 16);
  }
  return 0;
}

static const napi_type_tag ENGINE_TAG = {0x74656e63656e6731ull, 0x9b1d3c7e55a2f041ull};

js_engine *tenc_js_handle(napi_env env, napi_value v) {
  void *p = NULL;
  if (!tenc_has_tag(env, v, &ENGINE_TAG) || napi_get_value_external(env, v, &p) != napi_ok || !p) {
    tenc_throw_type(env, "handle must be an engine handle");
    return NULL;
  }
  js_engine *j = p;
  if (j->closed) {
    napi_throw_error(env, "ERR_ENGINE_CLOSED", "the engine is closed");
    return NULL;
  }
  return j;
}

int tenc_js_peer(napi_env env, napi_value v, uint32_t *out) {
  int64_t x;
  if (tenc_get_int(env, v, 0, TENC_MAX_PEERS - 1, "peer", &x) < 0) return -1;
  *out = (uint32_t)x;
  return 0;
}

int tenc_js_u32(napi_env env, napi_value v, const char *name, uint32_t *out) {
  int64_t x;
  if (tenc_get_int(env, v, 0, 0xffffffffLL, name, &x) < 0) return -1;
  *out = (uint32_t)x;
  return 0;
}

napi_value tenc_js_result(napi_env env, int r, const char *what, uint32_t id) {
  if (r < 0) return tenc_throw_errno(env, -r, "%s %u", what, id);
  return NULL;
}

/* ---- functions ---- */

static void counters_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  munmap(data, tenc_engine_counters_len() * sizeof(uint64_t));
}

/* Data-path switches from the environment (for A/B runs: bench iperf --tenc-env):
 * unset = the default chosen by measurement, "0" = off, "1" = on. */
static int env_switch(const char *name, int dflt) {
  const char *v = getenv(name);
  if (!v || !*v) return dflt;
  return strcmp(v, "0") != 0;
}

/* A number in 0..max from the environment; unset or not a number = dflt. */
static uint32_t env_uint(const char *name, uint32_t dflt, uint32_t max) {
  const char *v = getenv(name);
  char *end;
  if (!v || *v < '0' || *v > '9') return dflt; /* strtoul would take " 5", "+5" and "-1" (= ULONG_MAX) */
  unsigned long n = strtoul(v, &end, 10);
  if (*end) return dflt;
  return n > max ? max : (uint32_t)n;
}

static napi_value engine_create(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (tenc_get_opts_cb(env, info, argv, "onEvents") < 0) return NULL;
  tenc_engine_opts o;
  int64_t tun, udp, r4, r6, mtu;
  char mode[8];
  napi_value mv;
  if (tenc_get_int_prop(env, argv[0], "tunFd", 0, 1 << 30, &tun) < 0 || tenc_get_int_prop(env, argv[0], "udpFd", 0, 1 << 30, &udp) < 0 ||
      tenc_get_int_prop(env, argv[0], "raw4Fd", -1, 1 << 30, &r4) < 0 || tenc_get_int_prop(env, argv[0], "raw6Fd", -1, 1 << 30, &r6) < 0 ||
      tenc_get_int_prop(env, argv[0], "mtu", 0, 65535, &mtu) < 0 || opt_bool(env, argv[0], "vnetHdr", &o.vnet_hdr) < 0 ||
      opt_bool(env, argv[0], "udpGso", &o.udp_gso) < 0 || opt_bool(env, argv[0], "udpGro", &o.udp_gro) < 0 ||
      tenc_get_prop(env, argv[0], "mode", &mv) < 0 || tenc_get_str(env, mv, mode, sizeof mode, "mode") < 0)
    return NULL;
  if (strcmp(mode, "raw") && strcmp(mode, "tun")) return tenc_throw_range(env, "mode must be 'raw' or 'tun'");
  o.mode_tun = strcmp(mode, "tun") == 0;
  o.tun_fd = (int)tun;
  o.udp_fd = (int)udp;
  o.raw4_fd = (int)r4;
  o.raw6_fd = (int)r6;
  o.mtu = (uint32_t)mtu;
  o.scatter_seal = env_switch("TENC_SCATTER_SEAL", 1);
  o.busy_poll_us = env_uint("TENC_BUSY_POLL_US", 150, 2000);
  o.inline_tx = env_switch("TENC_INLINE_TX", 1);
  o.sibling_poll = env_switch("TENC_SIBLING_POLL", 1);
  o.data_epoll = env_switch("TENC_DATA_EPOLL", 1);
  o.tx_batch_kb = env_uint("TENC_TX_BATCH_KB", 0, 4096);
  o.gro_iov = env_switch("TENC_GRO_IOV", 1);
  o.tso_align = env_uint("TENC_TSO_ALIGN", 64, 1024);
  o.tso_max = env_uint("TENC_TSO_MAX", 0, 65535);

  js_engine *j = calloc(1, sizeof *j);
  if (!j) return tenc_throw_errno(env, ENOMEM, "engineCreate");
  /* The counters (12 MiB for TENC_MAX_PEERS) are anonymous mmap: zero pages that
   * only count in RSS once a peer's slots are written, instead of a memset
   * touching all of them. JS gets them as an external ArrayBuffer. */
  size_t ctr_bytes = tenc_engine_counters_len() * sizeof(uint64_t);
  void *ctr = mmap(NULL, ctr_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  napi_value ab, name, handle;
  if (ctr == MAP_FAILED) {
    free(j);
    return tenc_throw_errno(env, errno, "engineCreate: counters");
  }
  if (napi_create_external_arraybuffer(env, ctr, ctr_bytes, counters_finalize, NULL, &ab) != napi_ok) {
    munmap(ctr, ctr_bytes);
    free(j);
    return NULL;
  }
  napi_create_reference(env, ab, 1, &j->ctr_ref);
  napi_create_string_utf8(env, "tenc-engine", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[1], NULL, name, 0, 1, NULL, tsfn_finalize, j, call_js, &j->tsfn) !=
      napi_ok) {
    napi_delete_reference(env, j->ctr_ref);
    free(j);
    return NULL;
  }
  j->refs = 2;
  j->e = tenc_engine_new(&o, ctr, tenc_js_signal, j);
  int err = j->e ? -tenc_engine_start(j->e) : errno;
  if (err) {
    give_fds_back(j);
    js_close(env, j);
    js_unref(j);
    return tenc_throw_errno(env, err, "engineCreate (tun fd %d, udp fd %d)", o.tun_fd, o.udp_fd);
  }
  /* on a failure below the fds stay with the caller (it closes them), as for a failed create */
  if (napi_create_external(env, j, handle_finalize, NULL, &handle) != napi_ok) {
    give_fds_back(j);
    js_close(env, j); /* no handle, no finalizer: closed and released here */
    js_unref(j);
    return tenc_throw_errno(env, ENOMEM, "engineCreate: handle");
  }
  if (tenc_tag_handle(env, handle, &ENGINE_TAG) < 0) {
    give_fds_back(j);
    js_close(env, j); /* released by the handle's finalizer */
    return tenc_throw_errno(env, ENOMEM, "engineCreate: handle");
  }
  napi_value res;
  napi_create_object(env, &res);
  napi_set_named_property(env, res, "handle", handle);
  napi_set_named_property(env, res, "counters", ab);
  return res;
}

static napi_value engine_add_peer(napi_env env, napi_callback_info info) {
  ARGS(4);
  uint32_t id;
  if (tenc_js_peer(env, argv[1], &id) < 0) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[2], &t);
  struct sockaddr_in6 sa;
  int has = t != napi_null && t != napi_undefined;
  if (has && get_endpoint(env, argv[2], argv[3], &sa) < 0) return NULL;
  return tenc_js_result(env, tenc_engine_add_peer(j->e, id, has ? &sa : NULL), "addPeer", id);
}

static napi_value engine_remove_peer(napi_env env, napi_callback_info info) {
  ARGS(2);
  uint32_t id;
  if (tenc_js_peer(env, argv[1], &id) < 0) return NULL;
  return tenc_js_result(env, tenc_engine_remove_peer(j->e, id), "removePeer: no peer", id);
}

static napi_value engine_set_endpoint(napi_env env, napi_callback_info info) {
  ARGS(4);
  uint32_t id;
  struct sockaddr_in6 sa;
  if (tenc_js_peer(env, argv[1], &id) < 0 || get_endpoint(env, argv[2], argv[3], &sa) < 0) return NULL;
  return tenc_js_result(env, tenc_engine_set_endpoint(j->e, id, &sa), "setEndpoint: no peer", id);
}

static napi_value engine_allowed_ip(napi_env env, napi_callback_info info) {
  ARGS(4);
  uint32_t id;
  int add;
  char s[80];
  if (tenc_js_peer(env, argv[1], &id) < 0 || tenc_get_str(env, argv[2], s, sizeof s, "cidr") < 0 ||
      tenc_get_bool(env, argv[3], "add", &add) < 0)
    return NULL;
  char *slash = strchr(s, '/');
  uint8_t a[16];
  int fam = 0;
  char *end = NULL;
  long plen = -1;
  if (slash) {
    *slash = 0;
    plen = strtol(slash + 1, &end, 10);
    if (inet_pton(AF_INET, s, a) == 1)
      fam = 4;
    else if (inet_pton(AF_INET6, s, a) == 1)
      fam = 6;
  }
  if (!fam || !end || *end || end == slash + 1) return tenc_throw_type(env, "cidr must look like 10.1.0.5/32 or fd00::5/128");
  if (plen < 0 || plen > (fam == 4 ? 32 : 128)) return tenc_throw_range(env, "cidr prefix length out of range");
  return tenc_js_result(env, tenc_engine_allowed_ip(j->e, id, fam, a, (int)plen, add), "allowedIp: no peer", id);
}

static napi_value engine_add_keypair(napi_env env, napi_callback_info info) {
  ARGS(6);
  uint32_t id, local, remote;
  uint8_t *sk, *rk;
  size_t skl, rkl;
  if (tenc_js_peer(env, argv[1], &id) < 0 || tenc_js_u32(env, argv[2], "localIndex", &local) < 0 ||
      tenc_js_u32(env, argv[3], "remoteIndex", &remote) < 0 || tenc_get_bytes(env, argv[4], "sendKey", &sk, &skl) < 0 ||
      tenc_get_bytes(env, argv[5], "recvKey", &rk, &rkl) < 0)
    return NULL;
  if (skl != 32 || rkl != 32) return tenc_throw_range(env, "sendKey and recvKey must be 32 bytes");
  int r = tenc_engine_add_keypair(j->e, id, local, remote, sk, rk);
  if (r == -EEXIST) return tenc_throw_errno(env, EEXIST, "addKeypair: local index %u in use", local);
  return tenc_js_result(env, r, "addKeypair: peer", id);
}

static napi_value engine_set_send_keypair(napi_env env, napi_callback_info info) {
  ARGS(3);
  uint32_t id, local = 0;
  if (tenc_js_peer(env, argv[1], &id) < 0) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[2], &t);
  int has = t != napi_null;
  if (has && tenc_js_u32(env, argv[2], "localIndex", &local) < 0) return NULL;
  int r = tenc_engine_set_send_keypair(j->e, id, has, local);
  if (r == -ENOKEY) return tenc_throw_errno(env, ENOKEY, "setSendKeypair: no keypair %u for peer %u", local, id);
  return tenc_js_result(env, r, "setSendKeypair: no peer", id);
}

static napi_value engine_remove_keypair(napi_env env, napi_callback_info info) {
  ARGS(2);
  uint32_t local;
  if (tenc_js_u32(env, argv[1], "localIndex", &local) < 0) return NULL;
  return tenc_js_result(env, tenc_engine_remove_keypair(j->e, local), "removeKeypair: no keypair", local);
}

static napi_value engine_send_handshake(napi_env env, napi_callback_info info) {
  ARGS(4);
  struct sockaddr_in6 sa;
  uint8_t *d;
  size_t n;
  if (get_endpoint(env, argv[1], argv[2], &sa) < 0 || tenc_get_bytes(env, argv[3], "data", &d, &n) < 0) return NULL;
  if (n == 0 || n > 65507) return tenc_throw_range(env, "data must be 1..65507 bytes");
  /* A failed send (ENETUNREACH, EPERM, EAGAIN, ...) is the network's doing, not the
   * caller's: it is counted as an io drop and reported as false; the protocol's
   * retransmit timer tries again. Only argument errors throw. */
  int r = tenc_engine_send_handshake(j->e, &sa, d, n);
  napi_value b;
  napi_get_boolean(env, r == 0, &b);
  return b;
}

static napi_value engine_send_keepalive(napi_env env, napi_callback_info info) {
  ARGS(2);
  uint32_t id;
  if (tenc_js_peer(env, argv[1], &id) < 0) return NULL;
  int r = tenc_engine_send_keepalive(j->e, id);
  /* unknown peer: a caller bug; a failed send: counted as io, reported as false */
  if (r == -ENOENT || r == -ERANGE) return tenc_throw_errno(env, -r, "sendKeepalive to peer %u", id);
  napi_value b;
  napi_get_boolean(env, r == 1, &b);
  return b;
}

static napi_value engine_flush_queue(napi_env env, napi_callback_info info) {
  ARGS(2);
  uint32_t id;
  if (tenc_js_peer(env, argv[1], &id) < 0) return NULL;
  return tenc_js_result(env, tenc_engine_flush_queue(j->e, id), "flushQueue: no peer", id);
}

static napi_value engine_report_misses(napi_env env, napi_callback_info info) {
  ARGS(2);
  bool on;
  if (napi_get_value_bool(env, argv[1], &on) != napi_ok) return tenc_throw_type(env, "reportMisses: on must be a boolean");
  tenc_engine_report_misses(j->e, on);
  return NULL;
}

static napi_value engine_set_local_services(napi_env env, napi_callback_info info) {
  ARGS(2);
  bool is;
  napi_is_array(env, argv[1], &is);
  if (!is) return tenc_throw_type(env, "services must be an array");
  uint32_t n;
  napi_get_array_length(env, argv[1], &n);
  if (n > TENC_NAT_MAX_SERVICES) return tenc_throw_range(env, "too many services");
  tenc_nat_service *s = calloc(n ? n : 1, sizeof *s);
  if (!s) return tenc_throw_errno(env, ENOMEM, "setLocalServices");
  for (uint32_t i = 0; i < n; i++) {
    napi_value o, vip, loc, ports;
    napi_get_element(env, argv[1], i, &o);
    napi_valuetype t;
    napi_typeof(env, o, &t);
    if (t != napi_object) {
      free(s);
      return tenc_throw_type(env, "each service must be an object");
    }
    if (tenc_get_prop(env, o, "vip", &vip) < 0 || tenc_get_prop(env, o, "localAddress", &loc) < 0 ||
        tenc_get_prop(env, o, "ports", &ports) < 0)
      goto fail;
    int f1 = tenc_js_ip(env, vip, "vip", s[i].vip);
    if (f1 < 0) goto fail;
    int f2 = tenc_js_ip(env, loc, "localAddress", s[i].local);
    if (f2 < 0) goto fail;
    if (f1 != f2) {
      free(s);
      return tenc_throw_type(env, "vip and localAddress must be of the same family");
    }
    s[i].family = (uint8_t)f1;
    napi_is_array(env, ports, &is);
    if (!is) {
      free(s);
      return tenc_throw_type(env, "ports must be an array");
    }
    uint32_t np;
    napi_get_array_length(env, ports, &np);
    if (np > TENC_NAT_MAX_PORTS) {
      free(s);
      return tenc_throw_range(env, "too many ports in a service");
    }
    s[i].nports = (uint16_t)np;
    for (uint32_t k = 0; k < np; k++) {
      napi_value po, pv, pr;
      char proto[8];
      int64_t port;
      napi_get_element(env, ports, k, &po);
      if (tenc_get_prop(env, po, "protocol", &pr) < 0 || tenc_get_str(env, pr, proto, sizeof proto, "protocol") < 0 ||
          tenc_get_prop(env, po, "port", &pv) < 0 || tenc_get_int(env, pv, 1, 65535, "port", &port) < 0)
        goto fail;
      if (strcmp(proto, "tcp") && strcmp(proto, "udp")) {
        free(s);
        return tenc_throw_range(env, "protocol must be 'tcp' or 'udp'");
      }
      s[i].ports[k].proto = proto[0] == 't' ? 6 : 17;
      s[i].ports[k].port = (uint16_t)port;
    }
  }
  tenc_engine_set_services(j->e, s, n);
  return NULL;
fail:
  free(s);
  return NULL;
}

static napi_value engine_set_local_addresses(napi_env env, napi_callback_info info) {
  ARGS(2);
  bool is;
  napi_is_array(env, argv[1], &is);
  if (!is) return tenc_throw_type(env, "addresses must be an array");
  uint32_t n;
  napi_get_array_length(env, argv[1], &n);
  if (n > TENC_MAX_LOCAL) return tenc_throw_range(env, "too many local addresses");
  uint8_t fam[TENC_MAX_LOCAL];
  uint8_t addr[TENC_MAX_LOCAL][16];
  memset(addr, 0, sizeof addr);
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    napi_get_element(env, argv[1], i, &v);
    int f = tenc_js_ip(env, v, "address", addr[i]);
    if (f < 0) return NULL;
    fam[i] = (uint8_t)f;
  }
  tenc_engine_set_local(j->e, fam, (const uint8_t(*)[16])addr, n);
  return NULL;
}

static napi_value engine_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *p = NULL;
  if (argc < 1 || !tenc_has_tag(env, argv[0], &ENGINE_TAG) || napi_get_value_external(env, argv[0], &p) != napi_ok || !p)
    return tenc_throw_type(env, "handle must be an engine handle");
  js_close(env, p);
  return NULL;
}

static napi_value engine_route(napi_env env, napi_callback_info info) {
  ARGS(2);
  uint8_t a[16];
  int fam = tenc_js_ip(env, argv[1], "address", a);
  if (fam < 0) return NULL;
  napi_value v;
  napi_create_int32(env, tenc_engine_route(j->e, fam, a), &v);
  return v;
}

static napi_value engine_set_public_key(napi_env env, napi_callback_info info) {
  ARGS(2);
  uint8_t *k;
  size_t kl;
  if (tenc_get_bytes(env, argv[1], "publicKey", &k, &kl) < 0) return NULL;
  if (kl != 32) return tenc_throw_range(env, "publicKey must be 32 bytes");
  tenc_engine_set_public_key(j->e, k);
  return NULL;
}

/* processProtect() -> { dumpable: 0|1 }: prctl(PR_SET_DUMPABLE, 0) for the whole
 * process (no core file, no ptrace or /proc/PID/mem by other non-root processes of
 * the same user), read back. */
static napi_value process_protect(napi_env env, napi_callback_info info) {
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return tenc_throw_errno(env, errno, "prctl(PR_SET_DUMPABLE)");
  int d = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
  napi_value o;
  napi_create_object(env, &o);
  tenc_set_int(env, o, "dumpable", d);
  return o;
}

/* engineSwitches(h) -> the data-path switches as this engine runs them (the
 * environment's values after their checks; as in effect where the engine's mode
 * decides: inlineTx and siblingPoll need TUN injection, groIov TUN offloads too,
 * and siblingPoll the epoll sets), 0/1 or a number. */
static napi_value engine_switches(napi_env env, napi_callback_info info) {
  ARGS(1);
  const tenc_engine *e = j->e;
  napi_value o;
  napi_create_object(env, &o);
  tenc_set_int(env, o, "scatterSeal", e->o.scatter_seal != 0);
  tenc_set_int(env, o, "groIov", e->o.gro_iov && e->o.mode_tun && e->o.vnet_hdr); /* merged runs only with TUN offloads */
  tenc_set_int(env, o, "inlineTx", e->o.inline_tx && e->o.mode_tun);
  tenc_set_int(env, o, "siblingPoll", e->sibling_find != NULL);
  tenc_set_int(env, o, "dataEpoll", e->tx_ep >= 0);
  tenc_set_int(env, o, "busyPollUs", e->o.busy_poll_us);
  tenc_set_int(env, o, "tsoAlign", e->o.tso_align);
  tenc_set_int(env, o, "tsoMax", e->o.tso_max);
  tenc_set_int(env, o, "txBatchKb", e->o.tx_batch_kb);
  return o;
}

static napi_value engine_layout(napi_env env, napi_callback_info info) {
  napi_value o;
  napi_create_object(env, &o);
  tenc_set_int(env, o, "globalSlots", TENC_GLOBAL_SLOTS);
  tenc_set_int(env, o, "peerSlots", TENC_PEER_SLOTS);
  tenc_set_int(env, o, "maxPeers", TENC_MAX_PEERS);
  tenc_set_int(env, o, "dropCount", TENC_D_COUNT);
  tenc_set_int(env, o, "peerDrops", TENC_P_DROPS);
  tenc_set_int(env, o, "handshakeRx", TENC_G_HANDSHAKE_RX);
  tenc_set_int(env, o, "keepaliveRx", TENC_G_KEEPALIVE_RX);
  tenc_set_int(env, o, "underLoad", TENC_G_UNDER_LOAD);
  tenc_set_int(env, o, "keyLocked", TENC_G_KEY_LOCKED);
  tenc_set_int(env, o, "keyUnlocked", TENC_G_KEY_UNLOCKED);
  tenc_set_int(env, o, "ratelimitSources", TENC_G_RATELIMIT_SOURCES);
  tenc_set_int(env, o, "siblingRx", TENC_G_SIBLING_RX);
  tenc_set_int(env, o, "eventsLost", TENC_G_EVENTS_LOST);
  tenc_set_int(env, o, "eventQueueMax", TENC_EV_QUEUE_MAX);
  tenc_set_int(env, o, "queueMax", TENC_QUEUE_MAX);
  tenc_set_int(env, o, "handshakeQueueMax", TENC_HS_QUEUE_MAX);
  return o;
}

static napi_value engine_now(napi_env env, napi_callback_info info) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  napi_value v;
  napi_create_double(env, (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6, &v);
  return v;
}

napi_status tenc_js_export(napi_env env, napi_value exports, const tenc_js_fn *fns, size_t n) {
  for (size_t i = 0; i < n; i++) {
    napi_status s = tenc_set_fn(env, exports, fns[i].name, fns[i].cb);
    if (s != napi_ok) return s;
  }
  return napi_ok;
}

napi_status tenc_init_engine(napi_env env, napi_value exports) {
  /* glibc gives each thread that allocates an arena of its own (up to 8 per core)
   * and keeps freed memory there: an idle pod proxy held about 8 MiB more RSS
   * with the default than with 2 (README Benchmarks). The data threads allocate
   * only when they start. An explicit MALLOC_ARENA_MAX still wins. */
  if (!getenv("MALLOC_ARENA_MAX")) mallopt(M_ARENA_MAX, 2);
  static const tenc_js_fn fns[] = {
      {"engineCreate", engine_create},
      {"engineAddPeer", engine_add_peer},
      {"engineRemovePeer", engine_remove_peer},
      {"engineSetEndpoint", engine_set_endpoint},
      {"engineAllowedIp", engine_allowed_ip},
      {"engineAddKeypair", engine_add_keypair},
      {"engineSetSendKeypair", engine_set_send_keypair},
      {"engineRemoveKeypair", engine_remove_keypair},
      {"engineSendHandshake", engine_send_handshake},
      {"engineSendKeepalive", engine_send_keepalive},
      {"engineFlushQueue", engine_flush_queue},
      {"engineSetLocalServices", engine_set_local_services},
      {"engineReportMisses", engine_report_misses},
      {"engineSetLocalAddresses", engine_set_local_addresses},
      {"engineClose", engine_close},
      {"engineLayout", engine_layout},
      {"engineSwitches", engine_switches},
      {"engineRoute", engine_route},
      {"engineSetPublicKey", engine_set_public_key},
      {"processProtect", process_protect},
      {"engineNow", engine_now},
  };
  return tenc_js_export(env, exports, fns, sizeof fns / sizeof fns[0]);
}
