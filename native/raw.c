/* raw.c: placeholder until the module lands; exports nothing yet. */
#include "modules.h"

napi_status tenc_init_raw(napi_env env, napi_value exports) {
  (void)env;
  (void)exports;
  return napi_ok;
}
