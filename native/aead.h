#ifndef TENC_AEAD_H
#define TENC_AEAD_H
/* ChaCha20-Poly1305 (RFC 8439) over the OpenSSL that the Node binary exports:
 * its ChaCha20 and Poly1305 cores called directly, or EVP (see aead.c).
 * One tenc_aead per thread: it owns reusable contexts, so sealing or opening
 * a packet allocates nothing. */
#include <stddef.h>
#include <stdint.h>

#define TENC_AEAD_KEY_LEN 32
#define TENC_AEAD_NONCE_LEN 12
#define TENC_AEAD_TAG_LEN 16
/* Largest `len` accepted by seal/open (OpenSSL takes int lengths). */
#define TENC_AEAD_MAX_LEN ((size_t)0x7fffffef)

typedef struct tenc_aead tenc_aead;

/* A context on the backend TENC_AEAD selects ("evp"; anything else: direct when
 * available and checked, else evp). NULL when out of memory or OpenSSL fails. */
tenc_aead *tenc_aead_new(void);
/* Runs of records made ahead (direct backend; a no-op for evp): for record i of
 * key keys[i], nonce nonces[i] and cipher length lens[i] (the bytes seal, seal_parts
 * or open will process), its Poly1305 key and the keystream after its whole KiBs
 * are computed for all n records side by side. The next n seal/open calls whose
 * key pointer, nonce and length match, in that order, use them (the whole KiBs
 * still go through OpenSSL). A call that does not match the next one computes
 * everything itself (nothing is wrong, only slower). n <= 16; n = 0 wipes what is
 * left unused. The keys must stay where they are until used. */
#define TENC_AEAD_PREP_MAX 16
void tenc_aead_prepare(tenc_aead *a, uint32_t n, const uint8_t *const keys[],
                       const uint8_t (*nonces)[TENC_AEAD_NONCE_LEN], const uint32_t *lens);

/* For tests: ChaCha20 block 0 (first 32 bytes; the Poly1305 key) or keystream block
 * ctrs[i] of n (key, nonce) pairs, 16 side by side, with a chosen implementation:
 * returns -1 if this CPU lacks it. */
enum { TENC_AEAD_B0_AUTO = 0, TENC_AEAD_B0_BASE = 1, TENC_AEAD_B0_AVX2 = 2, TENC_AEAD_B0_AVX512 = 3 };
int tenc_aead_block0(int which, uint32_t n, const uint8_t *const keys[], const uint8_t (*nonces)[TENC_AEAD_NONCE_LEN],
                     uint8_t (*out)[32]);
int tenc_aead_keystream(int which, uint32_t n, const uint8_t *const keys[],
                        const uint8_t (*nonces)[TENC_AEAD_NONCE_LEN], const uint32_t *ctrs, uint8_t (*out)[64]);

/* "evp", "direct", or "direct, lanes avx512|avx2|base" (tenc_aead_prepare active). */
const char *tenc_aead_backend(const tenc_aead *a);
void tenc_aead_free(tenc_aead *a);

/* Forget the cached keys (zeroed) without freeing the contexts; the next call
 * re-keys. Call it when a keypair is removed. */
void tenc_aead_clear(tenc_aead *a);

/* WireGuard transport nonce: 4 zero bytes, then `counter` little-endian (8 bytes). */
void tenc_aead_wg_nonce(uint64_t counter, uint8_t nonce[TENC_AEAD_NONCE_LEN]);

/* Seal buf[0..len) in place and write the 16-byte tag to `tag` (may be buf+len).
 * Returns 0 on success, -1 on an OpenSSL failure or len > TENC_AEAD_MAX_LEN. */
int tenc_aead_seal(tenc_aead *a, const uint8_t key[TENC_AEAD_KEY_LEN],
                   const uint8_t nonce[TENC_AEAD_NONCE_LEN],
                   const uint8_t *aad, size_t aad_len,
                   uint8_t *buf, size_t len, uint8_t *tag);

/* Open buf[0..len) in place against `tag`. Returns 0 when authentic, -1 otherwise
 * (then buf's contents are unspecified and must not be used; this implementation
 * zeroes buf[0..len) so no unauthenticated plaintext is left behind). */
int tenc_aead_open(tenc_aead *a, const uint8_t key[TENC_AEAD_KEY_LEN],
                   const uint8_t nonce[TENC_AEAD_NONCE_LEN],
                   const uint8_t *aad, size_t aad_len,
                   uint8_t *buf, size_t len, const uint8_t *tag);

/* Scatter seal: the plaintext is head[0..head_len) || body[0..body_len) || pad_len
 * zero bytes; the ciphertext goes to out[0..head_len+body_len+pad_len) and the tag
 * right after it. `head` may equal `out` (in place); `body` must not overlap out
 * except exactly at out + head_len (then it is in place too). The result is
 * byte-identical to copying the parts together and calling tenc_aead_seal; it saves
 * the copy (a TSO segment's payload is sealed straight out of the super-packet).
 * pad_len < 16. Returns 0, or -1 as tenc_aead_seal. */
int tenc_aead_seal_parts(tenc_aead *a, const uint8_t key[TENC_AEAD_KEY_LEN],
                         const uint8_t nonce[TENC_AEAD_NONCE_LEN], const uint8_t *head, size_t head_len,
                         const uint8_t *body, size_t body_len, size_t pad_len, uint8_t *out);

/* WireGuard transport helpers: nonce from `counter`, no AAD, tag right after the
 * data. seal: buf[0..len) -> ciphertext, tag at buf[len..len+16).
 * open: buf[0..len) is ciphertext || tag (len >= 16); plaintext is buf[0..len-16).
 * Return 0 on success, -1 on failure (open: also when len < 16). */
int tenc_aead_wg_seal(tenc_aead *a, const uint8_t key[TENC_AEAD_KEY_LEN],
                      uint64_t counter, uint8_t *buf, size_t len);
int tenc_aead_wg_open(tenc_aead *a, const uint8_t key[TENC_AEAD_KEY_LEN],
                      uint64_t counter, uint8_t *buf, size_t len);

#endif
