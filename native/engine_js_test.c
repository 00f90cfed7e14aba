/* engine_js_test.c: the engine's test hooks (names as in src/dataplane/native.ts),
 * apart from engine_js.c's glue that the data plane runs on. Each drives one
 * stage alone, without threads or sockets, or moves state a test could not wait for:
 *   engineTestSetSendCounter(h, localIndex, counter: bigint)   the keypair's next
 *     send counter (REKEY/REJECT_AFTER_MESSAGES tests)
 *   engineTestAgeKeypair(h, localIndex, ms)   the keypair is `ms` older
 *     (REJECT_AFTER_TIME tests)
 *   engineTestNatBuckets(h, buckets)   the NAT flow table as `buckets` buckets of 4
 *     ways (a power of two; its flows forgotten), so a test can fill one
 *   engineTestAgeFlows(h, ms)   every NAT flow `ms` older (idle timeout tests)
 *   engineTestEventCap(h, max)   at most `max` events wait for the control plane
 *     (0..65536; full-queue tests)
 *   engineTestHoldEvents(h, hold)   while held, the events stay queued in C (as
 *     when the node thread is busy); released, they are delivered
 *   engineTestSeal(frame, key, scatter, remoteIndex, counter: bigint, tcpAlign = 0, mtu = 0) -> Buffer
 *     the send path's split and seal of one TUN frame (virtio_net_hdr + packet)
 *     with scatter seal on or off: messages as [u32 LE length][message]...
 *   engineTestGro(packets, iov) -> Buffer[]   the TUN frames of the receive path's
 *     TCP merge, copied or gathered from the writev's iovecs
 *   replayRun(counters: BigUint64Array) -> Uint8Array  a fresh replay window fed the
 *     counters in order (check, then commit, as the receive path does): 1 accepted
 *   backoffRun(limit, caught: Uint8Array) -> Uint8Array  a fresh back-off of the
 *     optional tries after a small batch (engine_internal.h) given one chance per
 *     element: 1 where it tried; a try then catches (caught[i] != 0) or misses
 * Errors as in engine_js.c. */
#include <errno.h>
#include <stdlib.h>
#include <sys/uio.h>
#include "engine_internal.h"
#include "engine_js.h"
#include "modules.h"
#include "offload.h"

static napi_value engine_test_set_send_counter(napi_env env, napi_callback_info info) {
  ARGS(3);
  uint32_t local;
  if (tenc_js_u32(env, argv[1], "localIndex", &local) < 0) return NULL;
  uint64_t c;
  bool lossless;
  if (napi_get_value_bigint_uint64(env, argv[2], &c, &lossless) != napi_ok || !lossless)
    return tenc_throw_type(env, "counter must be a bigint in u64 range");
  int r = tenc_engine_set_send_counter(j->e, local, c);
  if (r == -EINVAL) return tenc_throw_errno(env, EINVAL, "setSendCounter: keypair %u's counter only moves forward", local);
  return tenc_js_result(env, r, "setSendCounter: no keypair", local);
}

static napi_value engine_test_seal(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t *frame, *key;
  int64_t align = 0, mtu = 0;
  size_t flen, klen;
  int scatter;
  uint32_t remote;
  uint64_t ctr0;
  bool lossless = false;
  if (argc < 5 || tenc_get_bytes(env, argv[0], "frame", &frame, &flen) < 0 ||
      tenc_get_bytes(env, argv[1], "key", &key, &klen) < 0 || tenc_get_bool(env, argv[2], "scatter", &scatter) < 0 ||
      tenc_js_u32(env, argv[3], "remoteIndex", &remote) < 0)
    return NULL;
  if (napi_get_value_bigint_uint64(env, argv[4], &ctr0, &lossless) != napi_ok || !lossless)
    return tenc_throw_type(env, "counter must be a bigint in u64 range");
  if (argc >= 6 && tenc_get_int(env, argv[5], 0, 1024, "tcpAlign", &align) < 0) return NULL;
  if (argc >= 7 && tenc_get_int(env, argv[6], 0, 65535, "mtu", &mtu) < 0) return NULL;
  if (klen != 32) return tenc_throw_range(env, "key must be 32 bytes");
  if (flen > 65535 + 10) return tenc_throw_range(env, "frame too long");
  size_t cap = 8u << 20; /* above any split of a 64 KiB frame (TX_MAX_RECS records) */
  uint8_t *out = malloc(cap);
  if (!out) return tenc_throw_errno(env, ENOMEM, "engineTestSeal");
  uint32_t used = 0;
  int n = tenc_engine_test_seal(frame, (uint32_t)flen, scatter, (uint32_t)align, (uint32_t)mtu, key, remote, ctr0, out,
                                (uint32_t)cap, &used);
  napi_value res;
  if (n < 0) {
    free(out);
    return tenc_throw_errno(env, EIO, "engineTestSeal");
  }
  void *data;
  napi_create_buffer_copy(env, used, out, &data, &res);
  free(out);
  return res;
}

/* engineTestGro(packets: Uint8Array[], iov: boolean) -> Buffer[]: the TUN frames
 * rx_inject would write for these inner packets (vnet header mode): merged runs
 * through tenc_gro_tcp (copy) or tenc_gro_tcp_iov (the writev's bytes gathered),
 * other packets as themselves without a header. Test hook. */
static napi_value engine_test_gro(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool arr = false;
  int iov;
  if (argc >= 1) napi_is_array(env, argv[0], &arr);
  if (!arr) return tenc_throw_type(env, "packets must be an array");
  if (argc < 2 || tenc_get_bool(env, argv[1], "iov", &iov) < 0) return NULL;
  uint32_t n;
  napi_get_array_length(env, argv[0], &n);
  if (n > 4096) return tenc_throw_range(env, "at most 4096 packets");
  uint8_t **ptrs = calloc(n ? n : 1, sizeof *ptrs);
  uint32_t *lens = calloc(n ? n : 1, sizeof *lens);
  uint8_t *frame = malloc(65536 + 256);
  napi_value out;
  napi_create_array(env, &out);
  uint32_t nout = 0;
  if (!ptrs || !lens || !frame) {
    free(ptrs), free(lens), free(frame);
    return tenc_throw_errno(env, ENOMEM, "engineTestGro");
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    size_t l;
    napi_get_element(env, argv[0], i, &v);
    if (tenc_get_bytes(env, v, "packet", &ptrs[i], &l) < 0) goto done;
    lens[i] = (uint32_t)l;
  }
  for (uint32_t i = 0; i < n;) {
    uint32_t wl = 0, k, niov = 0;
    uint8_t hdr[TENC_GRO_HDR_MAX];
    struct iovec iv[TENC_GRO_MAX_SEGS + 1];
    napi_value b;
    void *d;
    if (iov) {
      k = tenc_gro_tcp_iov(ptrs + i, lens + i, n - i, hdr, iv, &niov, &wl);
      if (k > 1) {
        uint32_t off = 0;
        for (uint32_t q = 0; q < niov; q++) {
          memcpy(frame + off, iv[q].iov_base, iv[q].iov_len);
          off += (uint32_t)iv[q].iov_len;
        }
        if (off != wl) {
          tenc_throw_errno(env, EIO, "engineTestGro: iov length");
          goto done;
        }
      }
    } else {
      k = tenc_gro_tcp(ptrs + i, lens + i, n - i, frame, 65536 + 256, 1, &wl);
    }
    if (k > 1) {
      napi_create_buffer_copy(env, wl, frame, &d, &b);
    } else {
      napi_create_buffer_copy(env, lens[i], ptrs[i], &d, &b);
      k = 1;
    }
    napi_set_element(env, out, nout++, b);
    i += k;
  }
done:
  free(ptrs);
  free(lens);
  free(frame);
  return out;
}

static napi_value replay_run(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool is = false;
  if (argc >= 1) napi_is_typedarray(env, argv[0], &is);
  napi_typedarray_type tt = napi_int8_array;
  size_t n = 0;
  void *data = NULL;
  if (is) napi_get_typedarray_info(env, argv[0], &tt, &n, &data, NULL, NULL);
  if (!is || tt != napi_biguint64_array) return tenc_throw_type(env, "counters must be a BigUint64Array");
  tenc_replay *r = malloc(sizeof *r);
  if (!r) return tenc_throw_errno(env, ENOMEM, "replayRun");
  tenc_replay_init(r);
  napi_value ab, out;
  void *res;
  napi_create_arraybuffer(env, n, &res, &ab);
  napi_create_typedarray(env, napi_uint8_array, n, ab, 0, &out);
  const uint64_t *c = data;
  for (size_t i = 0; i < n; i++)
    ((uint8_t *)res)[i] = (uint8_t)(tenc_replay_check(r, c[i]) && tenc_replay_commit(r, c[i]));
  free(r);
  return out;
}

static napi_value backoff_run(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t limit;
  if (argc < 2) return tenc_throw_type(env, "backoffRun(limit, caught)");
  uint8_t *caught;
  size_t n;
  if (tenc_get_int(env, argv[0], 0, 1 << 20, "limit", &limit) < 0 || tenc_get_bytes(env, argv[1], "caught", &caught, &n) < 0)
    return NULL;
  napi_value ab, out;
  void *res;
  napi_create_arraybuffer(env, n, &res, &ab);
  napi_create_typedarray(env, napi_uint8_array, n, ab, 0, &out);
  tenc_backoff b = {0, 0};
  for (size_t i = 0; i < n; i++) {
    int tried = tenc_backoff_try(&b, (uint32_t)limit);
    if (tried) tenc_backoff_caught(&b, caught[i] != 0);
    ((uint8_t *)res)[i] = (uint8_t)tried;
  }
  return out;
}

static napi_value engine_test_age_keypair(napi_env env, napi_callback_info info) {
  ARGS(3);
  uint32_t local;
  int64_t ms;
  if (tenc_js_u32(env, argv[1], "localIndex", &local) < 0 || tenc_get_int(env, argv[2], 0, 1ll << 40, "ms", &ms) < 0)
    return NULL;
  int r = tenc_engine_test_age_keypair(j->e, local, (uint64_t)ms);
  if (r == -EINVAL) return tenc_throw_errno(env, EINVAL, "testAgeKeypair: keypair %u would be older than the clock", local);
  return tenc_js_result(env, r, "testAgeKeypair: no keypair", local);
}

static napi_value engine_test_nat_buckets(napi_env env, napi_callback_info info) {
  ARGS(2);
  int64_t b;
  if (tenc_get_int(env, argv[1], 1, TENC_NAT_SLOTS / TENC_NAT_WAYS, "buckets", &b) < 0) return NULL;
  if (tenc_engine_test_nat_buckets(j->e, (uint32_t)b) < 0) return tenc_throw_range(env, "buckets must be a power of two");
  return NULL;
}

static napi_value engine_test_age_flows(napi_env env, napi_callback_info info) {
  ARGS(2);
  int64_t ms;
  if (tenc_get_int(env, argv[1], 0, 1ll << 40, "ms", &ms) < 0) return NULL;
  tenc_engine_test_age_flows(j->e, (uint64_t)ms);
  return NULL;
}

static napi_value engine_test_event_cap(napi_env env, napi_callback_info info) {
  ARGS(2);
  int64_t max;
  if (tenc_get_int(env, argv[1], 0, TENC_EV_QUEUE_MAX, "max", &max) < 0) return NULL;
  tenc_engine_test_event_cap(j->e, (uint32_t)max);
  return NULL;
}

/* Held: call_js leaves the events queued (engine_js.c). Released: the node thread
 * is woken to take what piled up meanwhile. */
static napi_value engine_test_hold_events(napi_env env, napi_callback_info info) {
  ARGS(2);
  int hold;
  if (tenc_get_bool(env, argv[1], "hold", &hold) < 0) return NULL;
  int was = j->hold_events;
  j->hold_events = hold;
  if (was && !hold) tenc_js_signal(j->e);
  return NULL;
}

napi_status tenc_init_engine_test(napi_env env, napi_value exports) {
  static const tenc_js_fn fns[] = {
      {"engineTestSetSendCounter", engine_test_set_send_counter},
      {"engineTestAgeKeypair", engine_test_age_keypair},
      {"engineTestNatBuckets", engine_test_nat_buckets},
      {"engineTestAgeFlows", engine_test_age_flows},
      {"engineTestEventCap", engine_test_event_cap},
      {"engineTestHoldEvents", engine_test_hold_events},
      {"replayRun", replay_run},
      {"backoffRun", backoff_run},
      {"engineTestSeal", engine_test_seal},
      {"engineTestGro", engine_test_gro},
  };
  return tenc_js_export(env, exports, fns, sizeof fns / sizeof fns[0]);
}
