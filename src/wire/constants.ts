/**
 * Every WireGuard constant under its spec name.
 *
 * Sources: WireGuard whitepaper (Donenfeld, NDSS 2017) §5.4 (messages), §6 (timers and
 * limits, table in §6.1), §5.4.7 (cookies); the replay window follows RFC 6479 as used by
 * WireGuard (8192-bit bitmap, one 64-bit word kept free for the sliding step).
 *
 * Times are milliseconds (numbers); 64-bit counters are bigint.
 */

// ---- Noise protocol identifiers (whitepaper §5.4) ------------------------------------

export const CONSTRUCTION = 'Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s';
export const IDENTIFIER = 'WireGuard v1 zx2c4 Jason@zx2c4.com';
export const LABEL_MAC1 = 'mac1----';
export const LABEL_COOKIE = 'cookie--';

// ---- Message types (whitepaper §5.4.2 - §5.4.6), u8 followed by 3 zero bytes ---------

export const MESSAGE_INITIATION = 1;
export const MESSAGE_RESPONSE = 2;
export const MESSAGE_COOKIE_REPLY = 3;
export const MESSAGE_TRANSPORT = 4;

// ---- Field sizes ---------------------------------------------------------------------

/** X25519 public/private key, BLAKE2s hash, ChaCha20 key, psk. */
export const KEY_SIZE = 32;
export const HASH_SIZE = 32;
/** Poly1305 tag appended by every AEAD. */
export const AEAD_TAG_SIZE = 16;
/** mac1 and mac2 fields (keyed BLAKE2s, 16-byte output). */
export const MAC_SIZE = 16;
/** A cookie (keyed BLAKE2s of the source address, 16-byte output). */
export const COOKIE_SIZE = 16;
/** XChaCha20-Poly1305 nonce of a cookie reply. */
export const COOKIE_NONCE_SIZE = 24;
/** TAI64N timestamp: 8 bytes big-endian seconds (TAI64 label) + 4 bytes big-endian nanoseconds. */
export const TIMESTAMP_SIZE = 12;
/** Zero padding of transport plaintext to a multiple of this many bytes (capped at the MTU). */
export const MESSAGE_PADDING_MULTIPLE = 16;

// ---- Message sizes -------------------------------------------------------------------

export const MESSAGE_INITIATION_SIZE = 148;
export const MESSAGE_RESPONSE_SIZE = 92;
export const MESSAGE_COOKIE_REPLY_SIZE = 64;
/** type u8, 3 reserved zero bytes, receiver index u32 LE, counter u64 LE. */
export const MESSAGE_TRANSPORT_HEADER_SIZE = 16;
/** Header plus the tag of an empty (keepalive) payload. */
export const MESSAGE_TRANSPORT_MIN_SIZE = MESSAGE_TRANSPORT_HEADER_SIZE + AEAD_TAG_SIZE;
/** Largest UDP payload; anything larger cannot have come off the wire. */
export const MESSAGE_MAX_SIZE = 65535;

// ---- Field offsets -------------------------------------------------------------------

/** Handshake initiation (148 bytes). */
export const INITIATION_OFFSET = {
  type: 0,
  senderIndex: 4,
  ephemeral: 8,
  encryptedStatic: 40, // 32 + 16
  encryptedTimestamp: 88, // 12 + 16
  mac1: 116,
  mac2: 132,
} as const;

/** Handshake response (92 bytes). */
export const RESPONSE_OFFSET = {
  type: 0,
  senderIndex: 4,
  receiverIndex: 8,
  ephemeral: 12,
  encryptedNothing: 44, // 0 + 16
  mac1: 60,
  mac2: 76,
} as const;

/** Cookie reply (64 bytes). */
export const COOKIE_REPLY_OFFSET = {
  type: 0,
  receiverIndex: 4,
  nonce: 8,
  encryptedCookie: 32, // 16 + 16
} as const;

/** Transport data (16-byte header, then ciphertext and tag). */
export const TRANSPORT_OFFSET = {
  type: 0,
  receiverIndex: 4,
  counter: 8,
  packet: 16,
} as const;

// ---- Limits and timers (whitepaper §6.1), milliseconds ----------------------------------

export const REKEY_AFTER_MESSAGES = 1n << 60n;
export const REJECT_AFTER_MESSAGES = (1n << 64n) - (1n << 13n) - 1n;
export const REKEY_AFTER_TIME = 120_000;
export const REJECT_AFTER_TIME = 180_000;
export const REKEY_ATTEMPT_TIME = 90_000;
export const REKEY_TIMEOUT = 5_000;
export const KEEPALIVE_TIMEOUT = 10_000;
/** Lifetime of the responder's cookie secret, and of a cookie held by an initiator. */
export const COOKIE_REFRESH_TIME = 120_000;
/**
 * An initiator stops using a cookie this long before COOKIE_REFRESH_TIME so it is never
 * used after the responder rotated its secret (as the Linux implementation does).
 */
export const COOKIE_SECRET_LATENCY = 5_000;
/** Random jitter (0 .. this) added to REKEY_TIMEOUT between initiation retries. */
export const REKEY_TIMEOUT_JITTER_MAX = 334;
/** Most initiations accepted per peer per second (flood protection); 1000/50 ms apart. */
export const INITIATIONS_PER_SECOND = 50;
export const HANDSHAKE_INITIATION_RATE = 1000 / INITIATIONS_PER_SECOND;
/** Retries before giving up on a handshake: REKEY_ATTEMPT_TIME / REKEY_TIMEOUT. */
export const MAX_TIMER_HANDSHAKES = REKEY_ATTEMPT_TIME / REKEY_TIMEOUT;
/** How long a device stays "under load" after its handshake queue was last busy. */
export const UNDER_LOAD_AFTER_TIME = 1_000;

// ---- Replay window (RFC 6479 as in WireGuard) ---------------------------------------------

/** Bitmap size in bits. */
export const REPLAY_WINDOW_BITS = 8192;
/** Bits per bitmap word. */
export const REPLAY_WINDOW_WORD_BITS = 64;
/** Usable window: the bitmap minus one word (8128). */
export const REPLAY_WINDOW_SIZE = REPLAY_WINDOW_BITS - REPLAY_WINDOW_WORD_BITS;
