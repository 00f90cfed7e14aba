/* aead.c: ChaCha20-Poly1305 (RFC 8439 §2.8) over the OpenSSL exported by the node
 * binary, and its N-API glue.
 *
 * C core (aead.h): a tenc_aead owns one EVP_CIPHER_CTX per direction. The cipher is
 * fetched once when the context is made; after that a packet costs only
 * EVP_CipherInit_ex(ctx, NULL, NULL, key-or-NULL, nonce) (the key schedule is redone
 * only when the key differs from the cached one), the updates, the final and the
 * tag get/set. Nothing is allocated per packet. The tag comparison on open is
 * OpenSSL's (constant time, in EVP_DecryptFinal_ex).
 *
 * N-API (one call per batch, never per packet):
 *   aeadSealBatch(slab, offsets, lengths, counters, key, count)        -> undefined
 *   aeadOpenBatch(slab, offsets, lengths, counters, key, count, status) -> number ok
 *   aeadSeal(key, nonce, aad, plaintext) -> Buffer ciphertext || tag
 *   aeadOpen(key, nonce, aad, sealed)    -> Buffer plaintext, or null if not authentic
 * The layouts and status codes are documented at the wrappers in src/native.ts.
 * Argument errors throw before any byte is touched: TypeError code
 * ERR_INVALID_ARG_TYPE, RangeError code ERR_OUT_OF_RANGE. Each packet's bounds are
 * checked again just before it is processed, since offsets/lengths may alias the slab.
 */
#include "aead.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "modules.h"

struct tenc_aead {
  EVP_CIPHER *cipher;
  EVP_CIPHER_CTX *enc;
  EVP_CIPHER_CTX *dec;
  uint8_t enc_key[TENC_AEAD_KEY_LEN];
  uint8_t dec_key[TENC_AEAD_KEY_LEN];
  int enc_keyed;
  int dec_keyed;
};

tenc_aead *tenc_aead_new(void) {
  tenc_aead *a = calloc(1, sizeof(*a));
  if (a == NULL) return NULL;
  a->cipher = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
  a->enc = EVP_CIPHER_CTX_new();
  a->dec = EVP_CIPHER_CTX_new();
  if (a->cipher == NULL || a->enc == NULL || a->dec == NULL ||
      EVP_CipherInit_ex(a->enc, a->cipher, NULL, NULL, NULL, 1) != 1 ||
      EVP_CipherInit_ex(a->dec, a->cipher, NULL, NULL, NULL, 0) != 1) {
    tenc_aead_free(a);
    return NULL;
  }
  return a;
}

void tenc_aead_clear(tenc_aead *a) {
  if (a == NULL) return;
  OPENSSL_cleanse(a->enc_key, sizeof(a->enc_key));
  OPENSSL_cleanse(a->dec_key, sizeof(a->dec_key));
  /* Overwrite the key schedule inside the contexts too: key them with zeros. */
  static const uint8_t zero_key[TENC_AEAD_KEY_LEN];
  if (a->enc_keyed) (void)EVP_CipherInit_ex(a->enc, NULL, NULL, zero_key, NULL, 1);
  if (a->dec_keyed) (void)EVP_CipherInit_ex(a->dec, NULL, NULL, zero_key, NULL, 0);
  a->enc_keyed = 0;
  a->dec_keyed = 0;
}

void tenc_aead_free(tenc_aead *a) {
  if (a == NULL) return;
  tenc_aead_clear(a);
  EVP_CIPHER_CTX_free(a->enc); /* cleanses the key schedule */
  EVP_CIPHER_CTX_free(a->dec);
  EVP_CIPHER_free(a->cipher);
  free(a);
}

void tenc_aead_wg_nonce(uint64_t counter, uint8_t nonce[TENC_AEAD_NONCE_LEN]) {
  nonce[0] = nonce[1] = nonce[2] = nonce[3] = 0;
  for (int i = 0; i < 8; i++) nonce[4 + i] = (uint8_t)(counter >> (8 * i));
}

/* Cached-key check without an early exit (the keys are ours, but stay tidy). */
static int same_key(const uint8_t *x, const uint8_t *y) {
  uint8_t d = 0;
  for (int i = 0; i < TENC_AEAD_KEY_LEN; i++) d |= (uint8_t)(x[i] ^ y[i]);
  return d == 0;
}

/* Set the nonce, and the key only if it changed. enc: 1 seal, 0 open. */
static int rekey(EVP_CIPHER_CTX *ctx, uint8_t *cached, int *keyed, const uint8_t *key,
                 const uint8_t *nonce, int enc) {
  if (*keyed && same_key(cached, key)) {
    return EVP_CipherInit_ex(ctx, NULL, NULL, NULL, nonce, enc) == 1 ? 0 : -1;
  }
  *keyed = 0;
  if (EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc) != 1) return -1;
  memcpy(cached, key, TENC_AEAD_KEY_LEN);
  *keyed = 1;
  return 0;
}

int tenc_aead_seal(tenc_aead *a, const uint8_t key[TENC_AEAD_KEY_LEN],
                   const uint8_t nonce[TENC_AEAD_NONCE_LEN], const uint8_t *aad, size_t aad_len,
                   uint8_t *buf, size_t len, uint8_t *tag) {
  int outl = 0;
  if (len > TENC_AEAD_MAX_LEN || aad_len > TENC_AEAD_MAX_LEN) return -1;
  if (rekey(a->enc, a->enc_key, &a->enc_keyed, key, nonce, 1) != 0) return -1;
  if (aad_len > 0 && EVP_EncryptUpdate(a->enc, NULL, &outl, aad, (int)aad_len) != 1) return -1;
  if (len > 0 && EVP_EncryptUpdate(a->enc, buf, &outl, buf, (int)len) != 1) return -1;
  if (EVP_EncryptFinal_ex(a->enc, buf + len, &outl) != 1) return -1;
  /* The tag through a prebuilt parameter: EVP_CIPHER_CTX_ctrl(GET_TAG) would build the
   * same OSSL_PARAM after a longer dispatch. */
  OSSL_PARAM params[2] = {OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, TENC_AEAD_TAG_LEN),
                          OSSL_PARAM_END};
  if (EVP_CIPHER_CTX_get_params(a->enc, params) != 1) return -1;
  return 0;
}

int tenc_aead_seal_parts(tenc_aead *a, const uint8_t key[TENC_AEAD_KEY_LEN],
                         const uint8_t nonce[TENC_AEAD_NONCE_LEN], const uint8_t *head, size_t head_len,
                         const uint8_t *body, size_t body_len, size_t pad_len, uint8_t *out) {
  static const uint8_t zeros[16];
  int outl = 0;
  size_t total = head_len + body_len + pad_len;
  if (pad_len >= sizeof zeros || total > TENC_AEAD_MAX_LEN || total < head_len) return -1;
  if (rekey(a->enc, a->enc_key, &a->enc_keyed, key, nonce, 1) != 0) return -1;
  /* OpenSSL's ChaCha20 and Poly1305 keep partial blocks between updates, so the
   * parts may have any lengths; the keystream and MAC run on as over one buffer. */
  if (head_len > 0 && EVP_EncryptUpdate(a->enc, out, &outl, head, (int)head_len) != 1) return -1;
  if (body_len > 0 && EVP_EncryptUpdate(a->enc, out + head_len, &outl, body, (int)body_len) != 1) return -1;
  if (pad_len > 0 && EVP_EncryptUpdate(a->enc, out + head_len + body_len, &outl, zeros, (int)pad_len) != 1)
    return -1;
  if (EVP_EncryptFinal_ex(a->enc, out + total, &outl) != 1) return -1;
  OSSL_PARAM params[2] = {OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, out + total, TENC_AEAD_TAG_LEN),
                          OSSL_PARAM_END};
  if (EVP_CIPHER_CTX_get_params(a->enc, params) != 1) return -1;
  return 0;
}

int tenc_aead_open(tenc_aead *a, const uint8_t key[TENC_AEAD_KEY_LEN],
                   const uint8_t nonce[TENC_AEAD_NONCE_LEN], const uint8_t *aad, size_t aad_len,
                   uint8_t *buf, size_t len, const uint8_t *tag) {
  int outl = 0;
  if (len > TENC_AEAD_MAX_LEN || aad_len > TENC_AEAD_MAX_LEN) return -1;
  if (rekey(a->dec, a->dec_key, &a->dec_keyed, key, nonce, 0) != 0) return -1;
  /* OpenSSL copies the expected tag now, so it may sit anywhere (e.g. buf + len). A
   * prebuilt parameter is the same as EVP_CTRL_AEAD_SET_TAG with less dispatch. */
  OSSL_PARAM params[2] = {OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, (void *)tag, TENC_AEAD_TAG_LEN),
                          OSSL_PARAM_END};
  if (EVP_CIPHER_CTX_set_params(a->dec, params) != 1) return -1;
  if (aad_len > 0 && EVP_DecryptUpdate(a->dec, NULL, &outl, aad, (int)aad_len) != 1) goto fail;
  if (len > 0 && EVP_DecryptUpdate(a->dec, buf, &outl, buf, (int)len) != 1) goto fail;
  if (EVP_DecryptFinal_ex(a->dec, buf + len, &outl) != 1) goto fail;
  return 0;
fail:
  OPENSSL_cleanse(buf, len);
  return -1;
}

int tenc_aead_wg_seal(tenc_aead *a, const uint8_t key[TENC_AEAD_KEY_LEN], uint64_t counter,
                      uint8_t *buf, size_t len) {
  uint8_t nonce[TENC_AEAD_NONCE_LEN];
  tenc_aead_wg_nonce(counter, nonce);
  return tenc_aead_seal(a, key, nonce, NULL, 0, buf, len, buf + len);
}

int tenc_aead_wg_open(tenc_aead *a, const uint8_t key[TENC_AEAD_KEY_LEN], uint64_t counter,
                      uint8_t *buf, size_t len) {
  uint8_t nonce[TENC_AEAD_NONCE_LEN];
  if (len < TENC_AEAD_TAG_LEN) return -1;
  tenc_aead_wg_nonce(counter, nonce);
  return tenc_aead_open(a, key, nonce, NULL, 0, buf, len - TENC_AEAD_TAG_LEN,
                        buf + len - TENC_AEAD_TAG_LEN);
}

/* ---- N-API glue --------------------------------------------------------------- */

/* Status codes written by aeadOpenBatch (mirrored in src/native.ts AEAD_STATUS). */
enum { ST_OK = 0, ST_AUTH = 1, ST_BAD_LENGTH = 2, ST_INTERNAL = 3 };

/* One tenc_aead per JS thread (main thread, each worker), freed with the last env
 * on that thread. */
static __thread tenc_aead *tls_aead;
static __thread unsigned tls_refs;

static void env_cleanup(void *token) {
  free(token);
  if (tls_refs > 0 && --tls_refs == 0) {
    tenc_aead_free(tls_aead);
    tls_aead = NULL;
  }
}

static tenc_aead *thread_aead(napi_env env) {
  if (tls_aead == NULL) tls_aead = tenc_aead_new();
  if (tls_aead == NULL) napi_throw_error(env, "ERR_TENC_AEAD_INIT", "tenc: cannot create ChaCha20-Poly1305 context");
  return tls_aead;
}

static void *type_error(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

static void *range_error(napi_env env, const char *msg) {
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return NULL;
}

static const char *typed_name(napi_typedarray_type t) {
  switch (t) {
    case napi_uint8_array: return "a Uint8Array";
    case napi_uint32_array: return "a Uint32Array";
    case napi_biguint64_array: return "a BigUint64Array";
    default: return "a typed array";
  }
}

/* Typed array of type `want`; *data (may be NULL when empty) and *len in elements.
 * Throws a TypeError naming `what` and returns -1 otherwise. */
static int get_typed(napi_env env, napi_value v, napi_typedarray_type want, const char *what,
                     void **data, size_t *len) {
  bool is = false;
  napi_typedarray_type type;
  char msg[96];
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, v, &type, len, data, NULL, NULL) != napi_ok || type != want) {
    snprintf(msg, sizeof(msg), "%s must be %s", what, typed_name(want));
    type_error(env, msg);
    return -1;
  }
  return 0;
}

static int get_bytes_exact(napi_env env, napi_value v, const char *what, size_t want, uint8_t **data) {
  size_t len;
  char msg[96];
  if (get_typed(env, v, napi_uint8_array, what, (void **)data, &len) != 0) return -1;
  if (len != want) {
    snprintf(msg, sizeof(msg), "%s must be %zu bytes, got %zu", what, want, len);
    range_error(env, msg);
    return -1;
  }
  return 0;
}

static int get_count(napi_env env, napi_value v, uint32_t *out) {
  napi_valuetype t;
  double d;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) {
    type_error(env, "count must be a number");
    return -1;
  }
  napi_get_value_double(env, v, &d);
  if (!(d >= 0 && d <= 0xffffffffu) || d != (double)(uint32_t)d) {
    range_error(env, "count must be an integer in 0 .. 2^32-1");
    return -1;
  }
  *out = (uint32_t)d;
  return 0;
}

/* The arguments common to both batch calls, validated as a whole before any packet
 * is processed, so a bad batch throws with the slab untouched. */
typedef struct {
  uint8_t *slab;
  size_t slab_len;
  const uint32_t *offsets;
  const uint32_t *lengths;
  const uint64_t *counters;
  uint8_t key[TENC_AEAD_KEY_LEN]; /* a copy: the caller's key may alias the slab */
  uint32_t count;
} batch_args;

static int packet_at(napi_env env, const batch_args *b, uint32_t i, int open, uint32_t *off,
                     uint32_t *len);

static int get_batch(napi_env env, napi_value *argv, int open, batch_args *b) {
  size_t n_off, n_len, n_ctr;
  char msg[160];
  uint8_t *key;
  if (get_typed(env, argv[0], napi_uint8_array, "slab", (void **)&b->slab, &b->slab_len) != 0 ||
      get_typed(env, argv[1], napi_uint32_array, "offsets", (void **)&b->offsets, &n_off) != 0 ||
      get_typed(env, argv[2], napi_uint32_array, "lengths", (void **)&b->lengths, &n_len) != 0 ||
      get_typed(env, argv[3], napi_biguint64_array, "counters", (void **)&b->counters, &n_ctr) != 0 ||
      get_bytes_exact(env, argv[4], "key", TENC_AEAD_KEY_LEN, &key) != 0 ||
      get_count(env, argv[5], &b->count) != 0)
    return -1;
  memcpy(b->key, key, TENC_AEAD_KEY_LEN);
  if (b->count > n_off || b->count > n_len || b->count > n_ctr) {
    snprintf(msg, sizeof(msg), "count %u exceeds offsets (%zu), lengths (%zu) or counters (%zu)",
             b->count, n_off, n_len, n_ctr);
    range_error(env, msg);
    return -1;
  }
  for (uint32_t i = 0; i < b->count; i++) {
    uint32_t off, len;
    if (packet_at(env, b, i, open, &off, &len) != 0) {
      OPENSSL_cleanse(b->key, sizeof(b->key));
      return -1;
    }
  }
  return 0;
}

/* Packet i's offset and length, read once and checked against the slab. Called again
 * while processing, because offsets/lengths may alias the slab being written: a
 * value changed mid-batch then fails this check instead of reaching past the slab. */
static int packet_at(napi_env env, const batch_args *b, uint32_t i, int open, uint32_t *off,
                     uint32_t *len) {
  char msg[160];
  uint64_t end;
  *off = b->offsets[i];
  *len = b->lengths[i];
  /* seal: data then a 16-byte tag; open: the length already includes the tag. */
  end = (uint64_t)*off + *len + (open ? 0 : TENC_AEAD_TAG_LEN);
  if (*len > TENC_AEAD_MAX_LEN) {
    snprintf(msg, sizeof(msg), "packet %u: length %u exceeds the maximum %zu", i, *len, TENC_AEAD_MAX_LEN);
    range_error(env, msg);
    return -1;
  }
  if (end > b->slab_len) {
    snprintf(msg, sizeof(msg), "packet %u does not fit in the slab: offset %u + length %u%s > %zu", i,
             *off, *len, open ? "" : " + 16 (tag)", b->slab_len);
    range_error(env, msg);
    return -1;
  }
  return 0;
}

static napi_value seal_batch(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  batch_args b;
  char msg[96];
  tenc_aead *a;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 6) return type_error(env, "aeadSealBatch(slab, offsets, lengths, counters, key, count)");
  if (get_batch(env, argv, 0, &b) != 0) return NULL;
  if ((a = thread_aead(env)) != NULL) {
    for (uint32_t i = 0; i < b.count; i++) {
      uint32_t off, len;
      if (packet_at(env, &b, i, 0, &off, &len) != 0) break;
      if (tenc_aead_wg_seal(a, b.key, b.counters[i], b.slab + off, len) != 0) {
        snprintf(msg, sizeof(msg), "packet %u: OpenSSL seal failed", i);
        napi_throw_error(env, "ERR_TENC_AEAD_INTERNAL", msg);
        break;
      }
    }
  }
  OPENSSL_cleanse(b.key, sizeof(b.key));
  return NULL; /* undefined */
}

static napi_value open_batch(napi_env env, napi_callback_info info) {
  size_t argc = 7, n_status;
  napi_value argv[7], result;
  batch_args b;
  uint8_t *status;
  uint32_t ok = 0;
  char msg[96];
  tenc_aead *a;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 7) return type_error(env, "aeadOpenBatch(slab, offsets, lengths, counters, key, count, status)");
  if (get_batch(env, argv, 1, &b) != 0) return NULL;
  a = NULL;
  if (get_typed(env, argv[6], napi_uint8_array, "status", (void **)&status, &n_status) != 0) {
    /* threw */
  } else if (n_status < b.count) {
    snprintf(msg, sizeof(msg), "status holds %zu entries, count is %u", n_status, b.count);
    range_error(env, msg);
  } else {
    a = thread_aead(env);
  }
  if (a != NULL) {
    for (uint32_t i = 0; i < b.count; i++) {
      uint32_t off, len;
      if (packet_at(env, &b, i, 1, &off, &len) != 0) {
        a = NULL; /* threw */
        break;
      }
      if (len < TENC_AEAD_TAG_LEN) {
        status[i] = ST_BAD_LENGTH;
      } else if (tenc_aead_wg_open(a, b.key, b.counters[i], b.slab + off, len) == 0) {
        status[i] = ST_OK;
        ok++;
      } else {
        status[i] = ST_AUTH;
      }
    }
  }
  OPENSSL_cleanse(b.key, sizeof(b.key));
  if (a == NULL) return NULL;
  napi_create_uint32(env, ok, &result);
  return result;
}

/* Single-shot calls: (key, nonce, aad, input). */
static int get_single(napi_env env, napi_callback_info info, const char *usage, uint8_t **key,
                      uint8_t **nonce, uint8_t **aad, size_t *aad_len, uint8_t **in, size_t *in_len) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
  if (argc < 4) {
    type_error(env, usage);
    return -1;
  }
  if (get_bytes_exact(env, argv[0], "key", TENC_AEAD_KEY_LEN, key) != 0 ||
      get_bytes_exact(env, argv[1], "nonce", TENC_AEAD_NONCE_LEN, nonce) != 0 ||
      get_typed(env, argv[2], napi_uint8_array, "aad", (void **)aad, aad_len) != 0 ||
      get_typed(env, argv[3], napi_uint8_array, "data", (void **)in, in_len) != 0)
    return -1;
  if (*aad_len > TENC_AEAD_MAX_LEN || *in_len > TENC_AEAD_MAX_LEN) {
    range_error(env, "aad or data too long");
    return -1;
  }
  return 0;
}

static napi_value seal_one(napi_env env, napi_callback_info info) {
  uint8_t *key, *nonce, *aad, *in, *out;
  size_t aad_len, in_len;
  napi_value result;
  tenc_aead *a;
  if (get_single(env, info, "aeadSeal(key, nonce, aad, plaintext)", &key, &nonce, &aad, &aad_len,
                 &in, &in_len) != 0)
    return NULL;
  if ((a = thread_aead(env)) == NULL) return NULL;
  if (napi_create_buffer(env, in_len + TENC_AEAD_TAG_LEN, (void **)&out, &result) != napi_ok) return NULL;
  if (in_len > 0) memmove(out, in, in_len);
  if (tenc_aead_seal(a, key, nonce, aad, aad_len, out, in_len, out + in_len) != 0) {
    napi_throw_error(env, "ERR_TENC_AEAD_INTERNAL", "OpenSSL seal failed");
    return NULL;
  }
  return result;
}

static napi_value open_one(napi_env env, napi_callback_info info) {
  uint8_t *key, *nonce, *aad, *in, *out;
  size_t aad_len, in_len, pt_len;
  uint8_t tag[TENC_AEAD_TAG_LEN];
  napi_value result;
  tenc_aead *a;
  if (get_single(env, info, "aeadOpen(key, nonce, aad, sealed)", &key, &nonce, &aad, &aad_len, &in,
                 &in_len) != 0)
    return NULL;
  if ((a = thread_aead(env)) == NULL) return NULL;
  if (in_len < TENC_AEAD_TAG_LEN) {
    napi_get_null(env, &result);
    return result;
  }
  pt_len = in_len - TENC_AEAD_TAG_LEN;
  memcpy(tag, in + pt_len, TENC_AEAD_TAG_LEN);
  if (napi_create_buffer(env, pt_len, (void **)&out, &result) != napi_ok) return NULL;
  if (pt_len > 0) memmove(out, in, pt_len);
  if (tenc_aead_open(a, key, nonce, aad, aad_len, out, pt_len, tag) != 0) napi_get_null(env, &result);
  return result;
}

napi_status tenc_init_aead(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"aeadSealBatch", NULL, seal_batch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"aeadOpenBatch", NULL, open_batch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"aeadSeal", NULL, seal_one, NULL, NULL, NULL, napi_enumerable, NULL},
      {"aeadOpen", NULL, open_one, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  void *token = malloc(1); /* cleanup hooks must be unique per (fn, arg) */
  napi_status s;
  if (token == NULL) return napi_generic_failure;
  s = napi_add_env_cleanup_hook(env, env_cleanup, token);
  if (s != napi_ok) {
    free(token);
    return s;
  }
  tls_refs++;
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}
