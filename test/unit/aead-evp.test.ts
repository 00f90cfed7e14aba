/**
 * aead.test.ts again with TENC_AEAD=evp: the EVP backend against the same RFC 8439
 * vectors, noble and argument checks (the default run covers the direct backend).
 * The variable is read when a native context is made, i.e. after this line.
 */
process.env.TENC_AEAD = 'evp';
await import('./aead.test.js');
