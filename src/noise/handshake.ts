/**
 * Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s handshake exactly as WireGuard (whitepaper §5.4).
 * Pure: no I/O, time is passed in (`nowMs`, a monotonic clock in ms), randomness can be
 * injected for known-answer tests.
 *
 * One create/consume pair per message:
 *   initiator: createInitiation  -> (peer) consumeInitiation -> createResponse
 *   initiator: consumeResponse   -> SessionKeys on both sides
 *   either side, when under load: a cookie reply instead (createCookieReply inside
 *   consume*, consumeCookieReply on the other side, then the next message carries mac2).
 *
 * Bad peer input yields `{ ok: false, reason }` and leaves all state untouched; a caller's
 * bug (wrong argument type/length, createResponse without a consumed initiation) throws.
 */

import type { SessionKeys } from './types.js';
import type { CookieReplyMessage, InitiationMessage, ResponseMessage } from '../wire/messages.js';

/** Why a handshake message was refused. One reason per check, in check order. */
export const HANDSHAKE_REASONS = [
  'bad_mac1', // mac1 does not match our public key: not for us, or corrupted
  'bad_mac2', // under load and mac2 missing/stale/wrong: a cookie reply is returned instead
  'unknown_peer', // the initiator's static key is not one of our peers
  'unknown_index', // no handshake/peer for the receiver index of a response or cookie reply
  'decrypt_static', // initiation's static key does not decrypt (wrong responder key)
  'decrypt_timestamp', // initiation's timestamp does not decrypt
  'replayed_timestamp', // timestamp equal to the greatest accepted one (replayed initiation)
  'stale_timestamp', // timestamp older than the greatest accepted one
  'flood', // initiations from this peer less than HANDSHAKE_INITIATION_RATE ms apart
  'low_order', // a Diffie-Hellman result is all zeros (low-order point)
  'unexpected_response', // response for an index whose initiation is no longer pending
  'decrypt_response', // response does not decrypt: wrong psk, wrong keys, or forged
  'unexpected_cookie', // cookie reply although we sent no message with a mac1 to that index
  'decrypt_cookie', // cookie reply does not decrypt
] as const;
export type HandshakeReason = (typeof HANDSHAKE_REASONS)[number];

export type Failure = {
  ok: false;
  reason: HandshakeReason;
  /** Set with reason 'bad_mac2': the 64-byte cookie reply to send back to the source. */
  cookieReply?: Uint8Array;
};

/** Our static identity, plus what is derived from it once (mac1/cookie keys, cookie secret). */
export interface LocalIdentity {
  readonly privateKey: Uint8Array;
  readonly publicKey: Uint8Array;
  /** HASH(LABEL_MAC1 || our public key): checks mac1 of messages sent to us. */
  readonly mac1Key: Uint8Array;
  /** HASH(LABEL_COOKIE || our public key): encrypts the cookie replies we send. */
  readonly cookieKey: Uint8Array;
  /** Rotating secret for the cookies we hand out (regenerated every COOKIE_REFRESH_TIME). */
  cookieSecret: Uint8Array;
  /** Clock ms when cookieSecret was made; null before the first use. */
  cookieSecretBirthMs: number | null;
  /** Random source (defaults to crypto randomBytes); injectable for tests. */
  readonly random: (n: number) => Uint8Array;
}

/** The in-progress handshake with one peer. */
export type HandshakeState =
  | { kind: 'none' }
  | {
      kind: 'initiation_created';
      localIndex: number;
      createdMs: number;
      ephemeralPrivate: Uint8Array;
      hash: Uint8Array;
      chainingKey: Uint8Array;
    }
  | {
      kind: 'initiation_consumed';
      remoteIndex: number;
      remoteEphemeral: Uint8Array;
      hash: Uint8Array;
      chainingKey: Uint8Array;
    };

/** Per-peer handshake record. Create with makeHandshakePeer. */
export interface HandshakePeer {
  readonly remoteStatic: Uint8Array;
  /** Pre-shared key (32 bytes; all zeros when none). May be replaced (same length). */
  psk: Uint8Array;
  /** DH(our static private, peer static public), computed once. */
  readonly staticStatic: Uint8Array;
  /** HASH(LABEL_MAC1 || peer public key): mac1 of messages we send to the peer. */
  readonly mac1Key: Uint8Array;
  /** HASH(LABEL_COOKIE || peer public key): decrypts cookie replies from the peer. */
  readonly cookieKey: Uint8Array;
  /** Greatest TAI64N accepted from this peer (12 bytes), null if none yet. */
  latestTimestamp: Uint8Array | null;
  /** Greatest TAI64N we sent to this peer, to keep our own initiations increasing. */
  lastSentTimestamp: Uint8Array | null;
  /** Clock ms of the last initiation consumed from this peer (flood limit), null if none. */
  lastInitiationConsumedMs: number | null;
  /** Cookie from the peer's last cookie reply (16 bytes), and when we got it. */
  cookie: Uint8Array | null;
  cookieReceivedMs: number | null;
  /** mac1 of the last handshake message we sent (AAD of the peer's cookie reply), or null. */
  lastMac1Sent: Uint8Array | null;
  state: HandshakeState;
}

/** Context of a received handshake message. */
export interface ReceiveContext {
  /** Monotonic clock, ms. */
  nowMs: number;
  /** When true, mac2 must be valid; otherwise the failure carries a cookie reply. */
  underLoad?: boolean;
  /** Opaque bytes naming the sender's outer address (see endpointBytes); needed when underLoad. */
  source?: Uint8Array;
}

export interface InitiationOptions {
  /** 12-byte TAI64N to send instead of the wall clock (tests, known answers). */
  timestamp?: Uint8Array;
  /** 32-byte ephemeral private key instead of a random one (known answers). */
  ephemeralPrivate?: Uint8Array;
}

export interface ResponseOptions {
  /** 32-byte ephemeral private key instead of a random one (known answers). */
  ephemeralPrivate?: Uint8Array;
}

export type ConsumeInitiationResult =
  | {
      ok: true;
      peer: HandshakePeer;
      /** The initiator's sender index, our future remoteIndex. */
      remoteIndex: number;
      /** The accepted TAI64N (already recorded as the peer's latestTimestamp). */
      timestamp: Uint8Array;
    }
  | Failure;

export type ConsumeResponseResult = { ok: true; peer: HandshakePeer; keys: SessionKeys } | Failure;

export type ConsumeCookieReplyResult = { ok: true; peer: HandshakePeer } | Failure;

/** Builds our identity from a 32-byte private key (clamping as X25519 does). */
export function makeIdentity(privateKey: Uint8Array, opts?: { random?: (n: number) => Uint8Array }): LocalIdentity {
  void privateKey;
  void opts;
  throw new Error('not yet');
}

/**
 * Creates the handshake record for a peer. Throws RangeError when the peer's public key is
 * low-order (DH with it would be all zeros), TypeError/RangeError on bad arguments.
 */
export function makeHandshakePeer(local: LocalIdentity, remoteStatic: Uint8Array, psk?: Uint8Array): HandshakePeer {
  void local;
  void remoteStatic;
  void psk;
  throw new Error('not yet');
}

/** Forgets any in-progress handshake (zeroes its secrets). */
export function clearHandshake(peer: HandshakePeer): void {
  void peer;
  throw new Error('not yet');
}

/**
 * Initiator, message 1 (whitepaper §5.4.2). `senderIndex` is our fresh local index, chosen by
 * the caller. Returns the 148-byte message with mac1 (and mac2 when we hold a fresh cookie).
 * Replaces any in-progress handshake with this peer.
 */
export function createInitiation(
  local: LocalIdentity,
  peer: HandshakePeer,
  senderIndex: number,
  nowMs: number,
  opts?: InitiationOptions,
): Uint8Array {
  void local;
  void peer;
  void senderIndex;
  void nowMs;
  void opts;
  throw new Error('not yet');
}

/**
 * Responder, message 1. Checks mac1 (and mac2 under load), decrypts the initiator's static key,
 * looks the peer up by it, checks the timestamp and flood limit, then records the state for
 * createResponse. Nothing is changed on failure.
 */
export function consumeInitiation(
  local: LocalIdentity,
  msg: InitiationMessage,
  lookupPeerByStaticKey: (publicKey: Uint8Array) => HandshakePeer | undefined,
  ctx: ReceiveContext,
): ConsumeInitiationResult {
  void local;
  void msg;
  void lookupPeerByStaticKey;
  void ctx;
  throw new Error('not yet');
}

/**
 * Responder, message 2 (whitepaper §5.4.3), after a successful consumeInitiation for `peer`.
 * Returns the 92-byte message and the session keys (unconfirmed until the initiator's first
 * transport message arrives). Throws when no consumed initiation is pending (caller bug).
 */
export function createResponse(
  local: LocalIdentity,
  peer: HandshakePeer,
  senderIndex: number,
  nowMs: number,
  opts?: ResponseOptions,
): { message: Uint8Array; keys: SessionKeys } {
  void local;
  void peer;
  void senderIndex;
  void nowMs;
  void opts;
  throw new Error('not yet');
}

/**
 * Initiator, message 2. `lookupPeerByIndex` maps the response's receiver index (our local
 * index) to a peer. On success the session keys are returned (confirmed for the initiator) and
 * the in-progress handshake is cleared.
 */
export function consumeResponse(
  local: LocalIdentity,
  msg: ResponseMessage,
  lookupPeerByIndex: (localIndex: number) => HandshakePeer | undefined,
  ctx: ReceiveContext,
): ConsumeResponseResult {
  void local;
  void msg;
  void lookupPeerByIndex;
  void ctx;
  throw new Error('not yet');
}

/**
 * Either side: a cookie reply (whitepaper §5.4.7) answering a message we sent to the peer that
 * `lookupPeerByIndex` finds. On success the cookie is stored; the next message we send to the
 * peer carries mac2. The caller decides when to resend (WireGuard waits for the retry timer).
 */
export function consumeCookieReply(
  msg: CookieReplyMessage,
  lookupPeerByIndex: (localIndex: number) => HandshakePeer | undefined,
  nowMs: number,
): ConsumeCookieReplyResult {
  void msg;
  void lookupPeerByIndex;
  void nowMs;
  throw new Error('not yet');
}
