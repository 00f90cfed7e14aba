/* napi_stub.c (native/testing/: test doubles of N-API for fuzz/, never part of the
 * addon: binding.gyp does not list this folder): aead.c holds both the AEAD and its N-API bindings (for node). The
 * receive harness links aead.c as it is and calls only the AEAD; these stand in
 * for the N-API functions the bindings reference, and abort if ever called. */
#include <stdio.h>
#include <stdlib.h>
#define STUB(name)                                                   \
  void name(void);                                                   \
  void name(void) {                                                  \
    fprintf(stderr, "napi_stub: %s called in a fuzz harness\n", #name); \
    abort();                                                         \
  }
STUB(napi_add_env_cleanup_hook)
STUB(napi_create_buffer)
STUB(napi_define_properties)
STUB(napi_get_cb_info)
STUB(napi_get_null)
STUB(napi_get_typedarray_info)
STUB(napi_get_value_double)
STUB(napi_is_typedarray)
STUB(napi_throw_error)
STUB(napi_throw_range_error)
STUB(napi_throw_type_error)
STUB(napi_typeof)
STUB(napi_create_uint32)
STUB(napi_create_string_utf8)
