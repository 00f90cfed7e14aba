#ifndef TENC_AEAD_H
#define TENC_AEAD_H
/* ChaCha20-Poly1305 (RFC 8439) over the OpenSSL that the Node binary exports.
 * One tenc_aead per thread: it owns reusable EVP contexts, so sealing or opening
 * a packet allocates nothing. */
#include <stddef.h>
#include <stdint.h>

#define TENC_AEAD_KEY_LEN 32
#define TENC_AEAD_NONCE_LEN 12
#define TENC_AEAD_TAG_LEN 16

typedef struct tenc_aead tenc_aead;

tenc_aead *tenc_aead_new(void);
void tenc_aead_free(tenc_aead *a);

/* WireGuard transport nonce: 4 zero bytes, then `counter` little-endian (8 bytes). */
void tenc_aead_wg_nonce(uint64_t counter, uint8_t nonce[TENC_AEAD_NONCE_LEN]);

/* Seal buf[0..len) in place and write the 16-byte tag to `tag` (may be buf+len).
 * Returns 0 on success, -1 on an OpenSSL failure. */
int tenc_aead_seal(tenc_aead *a, const uint8_t key[TENC_AEAD_KEY_LEN],
                   const uint8_t nonce[TENC_AEAD_NONCE_LEN],
                   const uint8_t *aad, size_t aad_len,
                   uint8_t *buf, size_t len, uint8_t *tag);

/* Open buf[0..len) in place against `tag`. Returns 0 when authentic, -1 otherwise
 * (then buf's contents are unspecified and must not be used). */
int tenc_aead_open(tenc_aead *a, const uint8_t key[TENC_AEAD_KEY_LEN],
                   const uint8_t nonce[TENC_AEAD_NONCE_LEN],
                   const uint8_t *aad, size_t aad_len,
                   uint8_t *buf, size_t len, const uint8_t *tag);

#endif
