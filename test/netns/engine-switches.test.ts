/**
 * The engine netns suite (engine.test.ts: ping, TCP with sha256, captures, crafted
 * datagrams, exact counters, DNAT, queueing) once more with every data-path switch
 * at its non-default value, so both sides of each switch are tested:
 *   TENC_SCATTER_SEAL=0  TSO/USO segments copied before sealing
 *   TENC_GRO_IOV=0       merged TCP runs copied into one frame before the TUN write
 *   TENC_BUSY_POLL_US=0  the TX thread sleeps at once after a small send
 *   TENC_INLINE_TX=0     the TX thread alone sends (no read after a TUN write)
 *   TENC_TX_BATCH_KB=256 small send batches
 *   TENC_TSO_ALIGN=0     TCP segments as large as the kernel asked
 *   TENC_AEAD=evp        ChaCha20-Poly1305 through OpenSSL's EVP API, not its cores
 *   TENC_CSUM=scalar     the portable checksum loop for TSO/USO segments
 *   TENC_DATA_EPOLL=0    the data threads wait in poll() (the fallback when the
 *                        epoll sets cannot be made), not in their epoll sets
 * The engine children inherit this environment (engineCreate reads it).
 */
process.env.TENC_SCATTER_SEAL = '0';
process.env.TENC_GRO_IOV = '0';
process.env.TENC_BUSY_POLL_US = '0';
process.env.TENC_INLINE_TX = '0';
process.env.TENC_TX_BATCH_KB = '256';
process.env.TENC_TSO_ALIGN = '0';
process.env.TENC_AEAD = 'evp';
process.env.TENC_CSUM = 'scalar';
process.env.TENC_DATA_EPOLL = '0';
await import('./engine.test.js');
