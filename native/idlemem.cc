/* idlemem.cc: gives an idle pod proxy's start garbage back to the kernel at once,
 * in one call (idleMemorySettle), made once by control/lean.ts a few seconds after
 * 'pod running'; never on a packet's path.
 *
 * V8's memory-reducing collection (Isolate::LowMemoryNotification: full collections
 * that compact old space, shrink the young generation to its minimum and unmap the
 * freed pages) has no N-API or JavaScript entry: gc() of --expose-gc is a plain
 * full collection and gave nothing back (measured: README "density"). So this one
 * file of the addon is C++ and uses V8's API, which node's headers ship; the rest
 * of the addon stays N-API C. V8's own memory reducer reaches about the same heap
 * 10-30 s after the start; this gets there ~2 s after it. Then malloc_trim(0)
 * returns the free pages of every malloc arena (the start's parsing, the ip/nft
 * children's buffers), which V8 never does.
 *
 * Returns { ms, trimmed }: the time both took, and whether malloc_trim released
 * memory. Must run on the JavaScript thread (it does: an N-API callback). */
#include <malloc.h>
#include <time.h>
#include <node_api.h>
#include <v8.h>
#include "modules.h"

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static napi_value idle_memory_settle(napi_env env, napi_callback_info info) {
  double t0 = now_ms();
  v8::Isolate *iso = v8::Isolate::GetCurrent();
  if (iso != nullptr) iso->LowMemoryNotification();
  int trimmed = malloc_trim(0);
  napi_value o, ms, tr;
  if (napi_create_object(env, &o) != napi_ok) return nullptr;
  napi_create_double(env, now_ms() - t0, &ms);
  napi_get_boolean(env, trimmed != 0, &tr);
  napi_set_named_property(env, o, "ms", ms);
  napi_set_named_property(env, o, "trimmed", tr);
  return o;
}

napi_status tenc_init_idlemem(napi_env env, napi_value exports) {
  napi_value fn;
  napi_status s = napi_create_function(env, "idleMemorySettle", NAPI_AUTO_LENGTH, idle_memory_settle, nullptr, &fn);
  if (s != napi_ok) return s;
  return napi_set_named_property(env, exports, "idleMemorySettle", fn);
}
