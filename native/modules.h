#ifndef TENC_MODULES_H
#define TENC_MODULES_H
#include <node_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One per native/<module>.c; each adds its functions to `exports`. */
napi_status tenc_init_aead(napi_env env, napi_value exports);
napi_status tenc_init_tun(napi_env env, napi_value exports);
napi_status tenc_init_udp(napi_env env, napi_value exports);
napi_status tenc_init_raw(napi_env env, napi_value exports);
napi_status tenc_init_engine(napi_env env, napi_value exports);
napi_status tenc_init_engine_test(napi_env env, napi_value exports);
napi_status tenc_init_sock(napi_env env, napi_value exports);
napi_status tenc_init_dnsio(napi_env env, napi_value exports);
napi_status tenc_init_spawn(napi_env env, napi_value exports);
napi_status tenc_init_netns(napi_env env, napi_value exports);
/* idlemem.cc (C++: V8's memory-reducing collection has no N-API entry) */
napi_status tenc_init_idlemem(napi_env env, napi_value exports);

#ifdef __cplusplus
}
#endif

#endif
