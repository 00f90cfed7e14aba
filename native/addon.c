/* addon.c: registration only. Each module exports its functions onto `exports`
 * through its own tenc_init_<module>() (declared in native/modules.h). */
#include <node_api.h>
#include "modules.h"

static napi_value init(napi_env env, napi_value exports) {
  if (tenc_init_aead(env, exports) != napi_ok) return NULL;
  if (tenc_init_tun(env, exports) != napi_ok) return NULL;
  if (tenc_init_udp(env, exports) != napi_ok) return NULL;
  if (tenc_init_raw(env, exports) != napi_ok) return NULL;
  if (tenc_init_engine(env, exports) != napi_ok) return NULL;
  if (tenc_init_engine_test(env, exports) != napi_ok) return NULL;
  if (tenc_init_sock(env, exports) != napi_ok) return NULL;
  if (tenc_init_dnsio(env, exports) != napi_ok) return NULL;
  if (tenc_init_spawn(env, exports) != napi_ok) return NULL;
  if (tenc_init_netns(env, exports) != napi_ok) return NULL;
  if (tenc_init_idlemem(env, exports) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
