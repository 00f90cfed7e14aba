#ifndef TENC_UTIL_H
#define TENC_UTIL_H
/* util.h: small N-API helpers shared by tun.c, udp.c, raw.c and engine_js*.c,
 * the clocks (tenc_now_ms, tenc_now_ns) of the engine_*.c files, and the raw
 * sockets' destination address (raw.c, engine_rx.c).
 * Errors from system calls become JS Errors whose `code` is the errno name
 * (EPERM, EBUSY, ...) and whose message names the object involved. */
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <node_api.h>

#define TENC_CHECK(env, call)                                                     \
  do {                                                                            \
    if ((call) != napi_ok) return NULL;                                           \
  } while (0)

/* The text of an errno Error, "<what>: <strerror> (<errno name>)", and its code (the
 * errno name); what = fmt, ... */
static inline const char *tenc_errno_text(char *msg, size_t cap, int err, const char *fmt, va_list ap) {
  char what[480];
  vsnprintf(what, sizeof what, fmt, ap);
  const char *name = strerrorname_np(err);
  snprintf(msg, cap, "%s: %s (%s)", what, strerror(err), name ? name : "E?");
  return name ? name : "EUNKNOWN";
}

/* Throws an Error with code = errno name and message "<what>: <strerror> (<name>)". */
/* Handles (napi externals) carry a type tag, so one kind is never taken for another
 * (an engine handle passed where a dnsio handle is expected would be freed as one). */
static inline int tenc_tag_handle(napi_env env, napi_value handle, const napi_type_tag *tag) {
  return napi_type_tag_object(env, handle, tag) == napi_ok ? 0 : -1;
}
static inline int tenc_has_tag(napi_env env, napi_value v, const napi_type_tag *tag) {
  napi_valuetype t;
  bool ok = false;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external) return 0;
  return napi_check_object_type_tag(env, v, tag, &ok) == napi_ok && ok;
}

static inline napi_value tenc_throw_errno(napi_env env, int err, const char *fmt, ...) {
  char msg[600];
  va_list ap;
  va_start(ap, fmt);
  const char *code = tenc_errno_text(msg, sizeof msg, err, fmt, ap);
  va_end(ap);
  napi_throw_error(env, code, msg);
  return NULL;
}

/* The same Error as a value (to reject a promise with); NULL if N-API failed. */
static inline napi_value tenc_errno_error(napi_env env, int err, const char *fmt, ...) {
  char msg[600];
  va_list ap;
  va_start(ap, fmt);
  const char *code = tenc_errno_text(msg, sizeof msg, err, fmt, ap);
  va_end(ap);
  napi_value m, c, e;
  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m) != napi_ok || napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &c) != napi_ok ||
      napi_create_error(env, c, m, &e) != napi_ok)
    return NULL;
  return e;
}

static inline napi_value tenc_throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

static inline napi_value tenc_throw_range(napi_env env, const char *msg) {
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return NULL;
}

/* Reads an integral number in [lo, hi]; throws TypeError / RangeError. */
static inline int tenc_get_int(napi_env env, napi_value v, int64_t lo, int64_t hi, const char *name,
                               int64_t *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) {
    char m[120];
    snprintf(m, sizeof m, "%s must be a number", name);
    tenc_throw_type(env, m);
    return -1;
  }
  double d;
  napi_get_value_double(env, v, &d);
  if (!(d >= (double)lo && d <= (double)hi) || d != (double)(int64_t)d) {
    char m[160];
    snprintf(m, sizeof m, "%s must be an integer in [%lld, %lld]", name, (long long)lo, (long long)hi);
    tenc_throw_range(env, m);
    return -1;
  }
  *out = (int64_t)d;
  return 0;
}

static inline int tenc_get_bool(napi_env env, napi_value v, const char *name, int *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_boolean) {
    char m[120];
    snprintf(m, sizeof m, "%s must be a boolean", name);
    tenc_throw_type(env, m);
    return -1;
  }
  bool b;
  napi_get_value_bool(env, v, &b);
  *out = b;
  return 0;
}

/* Copies a JS string into buf (NUL-terminated); RangeError when longer than cap-1. */
static inline int tenc_get_str(napi_env env, napi_value v, char *buf, size_t cap, const char *name) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) {
    char m[120];
    snprintf(m, sizeof m, "%s must be a string", name);
    tenc_throw_type(env, m);
    return -1;
  }
  size_t len;
  napi_get_value_string_utf8(env, v, NULL, 0, &len);
  if (len >= cap) {
    char m[120];
    snprintf(m, sizeof m, "%s is too long (max %zu bytes)", name, cap - 1);
    tenc_throw_range(env, m);
    return -1;
  }
  napi_get_value_string_utf8(env, v, buf, cap, &len);
  return 0;
}

/* The required property `name` of an options object (TypeError "opts.NAME is required"). */
static inline int tenc_get_prop(napi_env env, napi_value obj, const char *name, napi_value *out) {
  bool has;
  if (napi_has_named_property(env, obj, name, &has) != napi_ok || !has) {
    char m[120];
    snprintf(m, sizeof m, "opts.%s is required", name);
    tenc_throw_type(env, m);
    return -1;
  }
  return napi_get_named_property(env, obj, name, out) == napi_ok ? 0 : -1;
}

/* The (opts, callback) arguments of a constructor-like call into argv[0..1]: an
 * object, then a function (TypeError "opts must be an object" / "<cb> must be a
 * function"). Returns 0, or -1 with the error thrown (or pending). */
static inline int tenc_get_opts_cb(napi_env env, napi_callback_info info, napi_value argv[2], const char *cb) {
  size_t argc = 2;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
  napi_valuetype t0 = napi_undefined, t1 = napi_undefined;
  if (argc >= 1) napi_typeof(env, argv[0], &t0);
  if (argc >= 2) napi_typeof(env, argv[1], &t1);
  if (t0 != napi_object) {
    tenc_throw_type(env, "opts must be an object");
    return -1;
  }
  if (t1 != napi_function) {
    char m[80];
    snprintf(m, sizeof m, "%s must be a function", cb);
    tenc_throw_type(env, m);
    return -1;
  }
  return 0;
}

/* The required integer property `name` of an options object, in [lo, hi]. */
static inline int tenc_get_int_prop(napi_env env, napi_value obj, const char *name, int64_t lo, int64_t hi, int64_t *out) {
  napi_value v;
  if (tenc_get_prop(env, obj, name, &v) < 0) return -1;
  return tenc_get_int(env, v, lo, hi, name, out);
}

/* Gets the bytes of a Uint8Array / Buffer argument. */
static inline int tenc_get_bytes(napi_env env, napi_value v, const char *name, uint8_t **data,
                                 size_t *len) {
  bool is;
  napi_is_typedarray(env, v, &is);
  if (is) {
    napi_typedarray_type tt;
    napi_value ab;
    size_t off;
    void *p;
    napi_get_typedarray_info(env, v, &tt, len, &p, &ab, &off);
    if (tt == napi_uint8_array) {
      *data = p;
      return 0;
    }
  }
  char m[120];
  snprintf(m, sizeof m, "%s must be a Uint8Array", name);
  tenc_throw_type(env, m);
  return -1;
}

static inline napi_status tenc_set_fn(napi_env env, napi_value exports, const char *name,
                                      napi_callback cb) {
  napi_value fn;
  napi_status s = napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  if (s != napi_ok) return s;
  return napi_set_named_property(env, exports, name, fn);
}

static inline void tenc_set_int(napi_env env, napi_value obj, const char *name, int64_t v) {
  napi_value x;
  napi_create_int64(env, v, &x);
  napi_set_named_property(env, obj, name, x);
}

static inline void tenc_set_bool(napi_env env, napi_value obj, const char *name, int v) {
  napi_value x;
  napi_get_boolean(env, v, &x);
  napi_set_named_property(env, obj, name, x);
}

/* The address a raw IP socket sends a packet to: its destination, family 4 or 6
 * (4 or 16 bytes at `dst`). Returns the length to pass with it. */
typedef union {
  struct sockaddr_in v4;
  struct sockaddr_in6 v6;
} tenc_ipsa;
static inline socklen_t tenc_ipsa_set(tenc_ipsa *sa, int family, const uint8_t *dst) {
  if (family == 4) {
    memset(&sa->v4, 0, sizeof sa->v4);
    sa->v4.sin_family = AF_INET;
    memcpy(&sa->v4.sin_addr, dst, 4);
    return sizeof sa->v4;
  }
  memset(&sa->v6, 0, sizeof sa->v6);
  sa->v6.sin6_family = AF_INET6;
  memcpy(&sa->v6.sin6_addr, dst, 16);
  return sizeof sa->v6;
}

/* CLOCK_MONOTONIC in milliseconds: the clock of every *Ms counter. Node's
 * performance.now() is CLOCK_MONOTONIC minus the process time origin, so the
 * TS wrapper converts with one offset measured at start. */
static inline uint64_t tenc_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* CLOCK_MONOTONIC in nanoseconds (vDSO, no system call). */
static inline uint64_t tenc_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
