#ifndef TENC_ENGINE_JS_H
#define TENC_ENGINE_JS_H
/* engine_js.h: what the engine's N-API glue files share: engine_js.c (the engine's
 * life, its events as JS calls, the control calls) and engine_js_test.c (test hooks). */
#include <node_api.h>
#include <stdint.h>
#include "engine.h"
#include "util.h"

typedef struct {
  tenc_engine *e;
  napi_threadsafe_function tsfn;
  napi_ref ctr_ref;
  int closed;
  int hold_events; /* test hook: the events stay queued in C until released */
  int refs; /* the external handle and the tsfn each hold one */
} js_engine;

/* Argument readers: each returns -1 (or NULL) with a JS exception pending. */
js_engine *tenc_js_handle(napi_env env, napi_value v);
/* Parses an IPv4/IPv6 literal into 4/16 bytes; returns the family or -1 (thrown). */
int tenc_js_ip(napi_env env, napi_value v, const char *name, uint8_t out[16]);
int tenc_js_peer(napi_env env, napi_value v, uint32_t *out);
int tenc_js_u32(napi_env env, napi_value v, const char *name, uint32_t *out);
/* Wakes the node thread to take the engine's events (its event signal). */
void tenc_js_signal(tenc_engine *e);
/* A control call's result: r < 0 throws the errno -r naming `what` and `id`. */
napi_value tenc_js_result(napi_env env, int r, const char *what, uint32_t id);

/* Adds the functions of a table to `exports` (one tenc_init_* of modules.h). */
typedef struct {
  const char *name;
  napi_callback cb;
} tenc_js_fn;
napi_status tenc_js_export(napi_env env, napi_value exports, const tenc_js_fn *fns, size_t n);

/* The first n arguments, argv[0] the engine handle as `j` (returns if missing). */
#define ARGS(n)                                                                   \
  size_t argc = n;                                                                \
  napi_value argv[n];                                                             \
  TENC_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));          \
  if (argc < n) return tenc_throw_type(env, "missing arguments");                 \
  js_engine *j = tenc_js_handle(env, argv[0]);                                    \
  if (!j) return NULL;

#endif
