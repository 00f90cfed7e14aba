#ifndef TENC_MODULES_H
#define TENC_MODULES_H
#include <node_api.h>

/* One per native/<module>.c; each adds its functions to `exports`. */
napi_status tenc_init_aead(napi_env env, napi_value exports);
napi_status tenc_init_tun(napi_env env, napi_value exports);
napi_status tenc_init_udp(napi_env env, napi_value exports);
napi_status tenc_init_raw(napi_env env, napi_value exports);
napi_status tenc_init_engine(napi_env env, napi_value exports);
napi_status tenc_init_engine_test(napi_env env, napi_value exports);
napi_status tenc_init_sock(napi_env env, napi_value exports);
napi_status tenc_init_dnsio(napi_env env, napi_value exports);

#endif
