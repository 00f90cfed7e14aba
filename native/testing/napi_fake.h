/* napi_fake.h (native/testing/: test doubles of N-API for fuzz/, never part of the
 * addon: binding.gyp does not list this folder): a small stand-in for node's N-API, enough to call dnsio.c's
 * exported functions from a libFuzzer harness without node (fuzz/dnsio.c). Values
 * live until fake_reset(); functions are C callbacks. Only what dnsio.c and the
 * util.h helpers it uses need. */
#ifndef TENC_NAPI_FAKE_H
#define TENC_NAPI_FAKE_H
#include <node_api.h>
#include <uv.h>

typedef void (*fake_js_fn)(napi_value *argv, size_t argc, void *ctx);

napi_env fake_env(uv_loop_t *loop);
void fake_reset(void); /* frees every value made since the last reset */
napi_value fake_object(void);
napi_value fake_number(double d);
napi_value fake_string(const char *s);
napi_value fake_null(void);
napi_value fake_typed(napi_typedarray_type t, void *data, size_t count);
napi_value fake_js_function(fake_js_fn fn, void *ctx);
void fake_set(napi_value obj, const char *name, napi_value v);
napi_value fake_get(napi_value obj, const char *name); /* NULL when absent */
/* Calls a function made by napi_create_function (an export) with these arguments. */
napi_value fake_call(napi_value fn, napi_value *argv, size_t argc);
/* The pending exception's message (NULL: none) and clearing it. */
const char *fake_exception(void);
void fake_clear_exception(void);
double fake_get_number(napi_value v);
/* Runs the finalizer of an external, as the garbage collector would. */
void fake_finalize(napi_value external);
int fake_live_refs(void);
#endif
