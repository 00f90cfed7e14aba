/* napi_fake.c: see napi_fake.h. */
#include "napi_fake.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct napi_env__ {
  uv_loop_t *loop;
};
typedef struct prop {
  char *name;
  napi_value v;
  struct prop *next;
} prop;
struct napi_value__ {
  napi_valuetype type;
  double num;
  char *str;
  prop *props;
  napi_typedarray_type tt;
  void *data;
  size_t count;
  napi_callback cb;      /* an export */
  fake_js_fn js;         /* a "JS" function of the harness */
  void *ctx;
  napi_finalize fin;
  int finalized;
  const napi_type_tag *tag; /* napi_type_tag_object */
  struct napi_value__ *all_next;
};
struct napi_ref__ {
  napi_value v;
  int live;
};
struct napi_callback_info__ {
  napi_value *argv;
  size_t argc;
};

static struct napi_env__ env_;
static napi_value all;
static char exc[400];
static int has_exc, live_refs;

static napi_value mk(napi_valuetype t) {
  napi_value v = calloc(1, sizeof *v);
  v->type = t;
  v->all_next = all;
  all = v;
  return v;
}
napi_env fake_env(uv_loop_t *loop) {
  env_.loop = loop;
  return &env_;
}
void fake_reset(void) {
  while (all) {
    napi_value n = all->all_next;
    for (prop *p = all->props; p;) {
      prop *q = p->next;
      free(p->name);
      free(p);
      p = q;
    }
    free(all->str);
    free(all);
    all = n;
  }
  has_exc = 0;
}
napi_value fake_object(void) { return mk(napi_object); }
napi_value fake_number(double d) {
  napi_value v = mk(napi_number);
  v->num = d;
  return v;
}
napi_value fake_string(const char *s) {
  napi_value v = mk(napi_string);
  v->str = strdup(s);
  return v;
}
napi_value fake_null(void) { return mk(napi_null); }
napi_value fake_typed(napi_typedarray_type t, void *data, size_t count) {
  napi_value v = mk(napi_object);
  v->tt = t;
  v->data = data;
  v->count = count;
  v->num = 1; /* marks a typed array */
  return v;
}
napi_value fake_js_function(fake_js_fn fn, void *ctx) {
  napi_value v = mk(napi_function);
  v->js = fn;
  v->ctx = ctx;
  return v;
}
void fake_set(napi_value obj, const char *name, napi_value v) {
  for (prop *p = obj->props; p; p = p->next)
    if (!strcmp(p->name, name)) {
      p->v = v;
      return;
    }
  prop *p = calloc(1, sizeof *p);
  p->name = strdup(name);
  p->v = v;
  p->next = obj->props;
  obj->props = p;
}
napi_value fake_get(napi_value obj, const char *name) {
  for (prop *p = obj->props; p; p = p->next)
    if (!strcmp(p->name, name)) return p->v;
  return NULL;
}
napi_value fake_call(napi_value fn, napi_value *argv, size_t argc) {
  struct napi_callback_info__ info = {argv, argc};
  return fn->cb(&env_, &info);
}
const char *fake_exception(void) { return has_exc ? exc : NULL; }
void fake_clear_exception(void) { has_exc = 0; }
double fake_get_number(napi_value v) { return v->num; }
void fake_finalize(napi_value v) {
  if (v->fin && !v->finalized) {
    v->finalized = 1;
    v->fin(&env_, v->data, NULL);
  }
}
int fake_live_refs(void) { return live_refs; }

static napi_status thrown(const char *kind, const char *code, const char *msg) {
  if (has_exc) {
    fprintf(stderr, "napi_fake: %s thrown while an exception is pending (%s)\n", msg, exc);
    abort(); /* node would report this as a bug too */
  }
  snprintf(exc, sizeof exc, "%s %s: %s", kind, code ? code : "", msg);
  has_exc = 1;
  return napi_ok;
}
napi_status napi_throw_error(napi_env e, const char *code, const char *msg) { return thrown("Error", code, msg); }
napi_status napi_throw_type_error(napi_env e, const char *code, const char *msg) { return thrown("TypeError", code, msg); }
napi_status napi_throw_range_error(napi_env e, const char *code, const char *msg) { return thrown("RangeError", code, msg); }

napi_status napi_get_cb_info(napi_env e, napi_callback_info info, size_t *argc, napi_value *argv, napi_value *this_arg,
                             void **data) {
  for (size_t i = 0; i < *argc; i++) argv[i] = i < info->argc ? info->argv[i] : mk(napi_undefined);
  *argc = info->argc;
  if (this_arg) *this_arg = NULL;
  if (data) *data = NULL;
  return napi_ok;
}
napi_status napi_typeof(napi_env e, napi_value v, napi_valuetype *t) {
  *t = v ? v->type : napi_undefined;
  return napi_ok;
}
napi_status napi_get_value_double(napi_env e, napi_value v, double *d) {
  if (v->type != napi_number) return napi_number_expected;
  *d = v->num;
  return napi_ok;
}
napi_status napi_has_named_property(napi_env e, napi_value o, const char *n, bool *has) {
  *has = fake_get(o, n) != NULL;
  return napi_ok;
}
napi_status napi_get_named_property(napi_env e, napi_value o, const char *n, napi_value *out) {
  napi_value v = fake_get(o, n);
  *out = v ? v : mk(napi_undefined);
  return napi_ok;
}
napi_status napi_set_named_property(napi_env e, napi_value o, const char *n, napi_value v) {
  fake_set(o, n, v);
  return napi_ok;
}
napi_status napi_get_value_string_utf8(napi_env e, napi_value v, char *buf, size_t cap, size_t *len) {
  if (v->type != napi_string) return napi_string_expected;
  size_t n = strlen(v->str);
  if (!buf) {
    *len = n;
    return napi_ok;
  }
  if (cap == 0) return napi_ok;
  size_t k = n < cap - 1 ? n : cap - 1;
  memcpy(buf, v->str, k);
  buf[k] = 0;
  if (len) *len = k;
  return napi_ok;
}
napi_status napi_is_typedarray(napi_env e, napi_value v, bool *is) {
  *is = v->type == napi_object && v->num == 1;
  return napi_ok;
}
napi_status napi_get_typedarray_info(napi_env e, napi_value v, napi_typedarray_type *t, size_t *len, void **data,
                                     napi_value *ab, size_t *off) {
  if (t) *t = v->tt;
  if (len) *len = v->count;
  if (data) *data = v->data;
  if (ab) *ab = NULL;
  if (off) *off = 0;
  return napi_ok;
}
napi_status napi_create_reference(napi_env e, napi_value v, uint32_t n, napi_ref *r) {
  *r = calloc(1, sizeof **r);
  (*r)->v = v;
  (*r)->live = 1;
  live_refs++;
  return napi_ok;
}
napi_status napi_delete_reference(napi_env e, napi_ref r) {
  if (!r->live) abort();
  live_refs--;
  free(r);
  return napi_ok;
}
napi_status napi_get_reference_value(napi_env e, napi_ref r, napi_value *v) {
  *v = r->v;
  return napi_ok;
}
napi_status napi_async_init(napi_env e, napi_value res, napi_value name, napi_async_context *c) {
  *c = (napi_async_context)calloc(1, 1);
  return napi_ok;
}
napi_status napi_async_destroy(napi_env e, napi_async_context c) {
  free(c);
  return napi_ok;
}
napi_status napi_get_uv_event_loop(napi_env e, struct uv_loop_s **loop) {
  *loop = e->loop;
  return napi_ok;
}
napi_status napi_create_string_utf8(napi_env e, const char *s, size_t n, napi_value *out) {
  *out = fake_string(s);
  return napi_ok;
}
napi_status napi_create_object(napi_env e, napi_value *out) {
  *out = fake_object();
  return napi_ok;
}
napi_status napi_add_async_cleanup_hook(napi_env e, napi_async_cleanup_hook hook, void *arg,
                                        napi_async_cleanup_hook_handle *h) {
  *h = (napi_async_cleanup_hook_handle)calloc(1, 1);
  return napi_ok;
}
napi_status napi_remove_async_cleanup_hook(napi_async_cleanup_hook_handle h) {
  free(h);
  return napi_ok;
}
napi_status napi_create_external(napi_env e, void *data, napi_finalize fin, void *hint, napi_value *out) {
  napi_value v = mk(napi_external);
  v->data = data;
  v->fin = fin;
  *out = v;
  return napi_ok;
}
napi_status napi_get_value_external(napi_env e, napi_value v, void **data) {
  *data = v->data;
  return napi_ok;
}
napi_status napi_type_tag_object(napi_env e, napi_value v, const napi_type_tag *tag) {
  if (v->tag) return napi_invalid_arg; /* once, as node */
  v->tag = tag;
  return napi_ok;
}
napi_status napi_check_object_type_tag(napi_env e, napi_value v, const napi_type_tag *tag, bool *result) {
  *result = v->tag && v->tag->lower == tag->lower && v->tag->upper == tag->upper;
  return napi_ok;
}
napi_status napi_create_int32(napi_env e, int32_t x, napi_value *out) {
  *out = fake_number(x);
  return napi_ok;
}
napi_status napi_create_uint32(napi_env e, uint32_t x, napi_value *out) {
  *out = fake_number(x);
  return napi_ok;
}
napi_status napi_create_int64(napi_env e, int64_t x, napi_value *out) {
  *out = fake_number((double)x);
  return napi_ok;
}
napi_status napi_open_handle_scope(napi_env e, napi_handle_scope *s) {
  *s = NULL;
  return napi_ok;
}
napi_status napi_close_handle_scope(napi_env e, napi_handle_scope s) { return napi_ok; }
napi_status napi_get_global(napi_env e, napi_value *out) {
  *out = fake_object();
  return napi_ok;
}
napi_status napi_make_callback(napi_env e, napi_async_context c, napi_value recv, napi_value fn, size_t argc,
                               const napi_value *argv, napi_value *res) {
  if (fn->type != napi_function || !fn->js) abort();
  fn->js((napi_value *)argv, argc, fn->ctx);
  if (res) *res = mk(napi_undefined);
  return has_exc ? napi_pending_exception : napi_ok;
}
napi_status napi_get_and_clear_last_exception(napi_env e, napi_value *out) {
  *out = fake_string(has_exc ? exc : "");
  has_exc = 0;
  return napi_ok;
}
napi_status napi_fatal_exception(napi_env e, napi_value err) {
  fprintf(stderr, "napi_fake: uncaught exception from a callback: %s\n", err->str);
  abort();
}
napi_status napi_create_function(napi_env e, const char *name, size_t len, napi_callback cb, void *data,
                                 napi_value *out) {
  napi_value v = mk(napi_function);
  v->cb = cb;
  *out = v;
  return napi_ok;
}
