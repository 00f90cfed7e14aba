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

import { randomBytes } from '@noble/hashes/utils.js';
import type { HandshakePeer, LocalIdentity, SessionKeys } from './types.js';
import {
  CONSTRUCTION,
  HANDSHAKE_INITIATION_RATE,
  IDENTIFIER,
  INITIATION_OFFSET,
  KEY_SIZE,
  MESSAGE_INITIATION,
  MESSAGE_INITIATION_SIZE,
  MESSAGE_RESPONSE,
  MESSAGE_RESPONSE_SIZE,
  RESPONSE_OFFSET,
  TIMESTAMP_SIZE,
} from '../wire/constants.js';
import {
  assertIndex,
  writeHeader,
  writeU32LE,
  type CookieReplyMessage,
  type InitiationMessage,
  type ResponseMessage,
} from '../wire/messages.js';
import { compareTai64n, tai64nIncrement, tai64nNow } from '../wire/tai64n.js';
import { acceptCookieReply, cookieKeyFor, createCookieReply, mac1KeyFor, verifyMac1, verifyMac2, writeMacs } from './cookie.js';
import { EMPTY, aeadOpen, aeadSeal, dh, dhPublic, equalBytes, hash, kdf1, kdf2, kdf3 } from './kdf.js';
import { generatePrivateKey } from './keys.js';

export { endpointBytes } from './cookie.js';

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

const textEncoder = new TextEncoder();
/** Ci = HASH(CONSTRUCTION) */
const INITIAL_CHAINING_KEY = hash(textEncoder.encode(CONSTRUCTION));
/** Hi = HASH(Ci || IDENTIFIER) */
const INITIAL_HASH = hash(INITIAL_CHAINING_KEY, textEncoder.encode(IDENTIFIER));
const ZERO_PSK = new Uint8Array(KEY_SIZE);

/** Zeroes intermediate secrets (chaining keys, AEAD keys, DH results) no longer needed. */
function wipe(...parts: (Uint8Array | null | undefined)[]): void {
  for (const p of parts) p?.fill(0);
}

// ---- argument checks (caller bugs throw) ------------------------------------------------

function assertBytes(v: unknown, len: number, name: string): asserts v is Uint8Array {
  if (!(v instanceof Uint8Array)) throw new TypeError(`${name} must be a Uint8Array`);
  if (v.length !== len) throw new RangeError(`${name} must be ${len} bytes, got ${v.length}`);
}

function assertTime(v: unknown, name: string): asserts v is number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new TypeError(`${name} must be a finite number`);
}

function assertContext(ctx: ReceiveContext): void {
  if (ctx === null || typeof ctx !== 'object') throw new TypeError('ctx must be an object');
  assertTime(ctx.nowMs, 'ctx.nowMs');
  if (ctx.underLoad) {
    if (!(ctx.source instanceof Uint8Array)) throw new TypeError('ctx.source is required when ctx.underLoad');
  }
}

function assertMessage(msg: { type: number; bytes: Uint8Array } | null | undefined, type: number, size: number): void {
  if (msg === null || typeof msg !== 'object' || msg.type !== type || !(msg.bytes instanceof Uint8Array)) {
    throw new TypeError('msg must be a message returned by decodeMessage');
  }
  if (msg.bytes.length !== size) throw new RangeError(`msg must be ${size} bytes`);
}

// ---- identities and peers ------------------------------------------------------------

/** Builds our identity from a 32-byte private key. */
export function makeIdentity(privateKey: Uint8Array, opts?: { random?: (n: number) => Uint8Array }): LocalIdentity {
  assertBytes(privateKey, KEY_SIZE, 'privateKey');
  const random = opts?.random ?? randomBytes;
  if (typeof random !== 'function') throw new TypeError('opts.random must be a function');
  const priv = Uint8Array.from(privateKey);
  const publicKey = dhPublic(priv);
  return {
    privateKey: priv,
    publicKey,
    mac1Key: mac1KeyFor(publicKey),
    cookieKey: cookieKeyFor(publicKey),
    cookieSecret: new Uint8Array(KEY_SIZE),
    cookieSecretBirthMs: null,
    random,
  };
}

/**
 * Creates the handshake record for a peer. Throws RangeError when the peer's public key is
 * low-order (DH with it would be all zeros), TypeError/RangeError on bad arguments.
 */
export function makeHandshakePeer(local: LocalIdentity, remoteStatic: Uint8Array, psk?: Uint8Array): HandshakePeer {
  assertBytes(remoteStatic, KEY_SIZE, 'remoteStatic');
  if (psk !== undefined) assertBytes(psk, KEY_SIZE, 'psk');
  const staticStatic = dh(local.privateKey, remoteStatic);
  if (staticStatic === null) throw new RangeError('peer public key is a low-order point');
  const pub = Uint8Array.from(remoteStatic);
  return {
    remoteStatic: pub,
    psk: psk ? Uint8Array.from(psk) : Uint8Array.from(ZERO_PSK),
    staticStatic,
    mac1Key: mac1KeyFor(pub),
    cookieKey: cookieKeyFor(pub),
    latestTimestamp: null,
    lastSentTimestamp: null,
    lastInitiationConsumedMs: null,
    cookie: null,
    cookieReceivedMs: null,
    lastMac1Sent: null,
    state: { kind: 'none' },
  };
}

/** Forgets any in-progress handshake (zeroes its secrets). */
export function clearHandshake(peer: HandshakePeer): void {
  const s = peer.state;
  if (s.kind === 'initiation_created') {
    s.ephemeralPrivate.fill(0);
    s.hash.fill(0);
    s.chainingKey.fill(0);
  } else if (s.kind === 'initiation_consumed') {
    s.hash.fill(0);
    s.chainingKey.fill(0);
  }
  peer.state = { kind: 'none' };
}

// ---- message 1: initiation (whitepaper §5.4.2) ---------------------------------------------

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
  assertIndex(senderIndex, 'senderIndex');
  assertTime(nowMs, 'nowMs');
  if (opts?.timestamp !== undefined) assertBytes(opts.timestamp, TIMESTAMP_SIZE, 'opts.timestamp');
  if (opts?.ephemeralPrivate !== undefined) assertBytes(opts.ephemeralPrivate, KEY_SIZE, 'opts.ephemeralPrivate');

  let timestamp: Uint8Array;
  if (opts?.timestamp !== undefined) {
    timestamp = Uint8Array.from(opts.timestamp);
  } else {
    // Keep our own timestamps strictly increasing even within one wall-clock tick.
    timestamp = tai64nNow();
    if (peer.lastSentTimestamp !== null && compareTai64n(timestamp, peer.lastSentTimestamp) <= 0) {
      timestamp = tai64nIncrement(peer.lastSentTimestamp);
    }
  }

  const ephemeralPrivate = opts?.ephemeralPrivate
    ? Uint8Array.from(opts.ephemeralPrivate)
    : generatePrivateKey(local.random);
  const ephemeralPublic = dhPublic(ephemeralPrivate);

  let h = hash(INITIAL_HASH, peer.remoteStatic);
  const ck0 = kdf1(INITIAL_CHAINING_KEY, ephemeralPublic);
  h = hash(h, ephemeralPublic);
  const es = dh(ephemeralPrivate, peer.remoteStatic);
  if (es === null) {
    wipe(ck0, ephemeralPrivate);
    throw new Error('unreachable: peer static key is low-order');
  }
  const [ck1, k1] = kdf2(ck0, es);
  wipe(ck0, es);
  const encryptedStatic = aeadSeal(k1, 0n, local.publicKey, h);
  wipe(k1);
  h = hash(h, encryptedStatic);
  const [ck, k2] = kdf2(ck1, peer.staticStatic);
  wipe(ck1);
  const encryptedTimestamp = aeadSeal(k2, 0n, timestamp, h);
  wipe(k2);
  h = hash(h, encryptedTimestamp);

  const msg = new Uint8Array(MESSAGE_INITIATION_SIZE);
  const o = INITIATION_OFFSET;
  writeHeader(msg, MESSAGE_INITIATION);
  writeU32LE(msg, o.senderIndex, senderIndex);
  msg.set(ephemeralPublic, o.ephemeral);
  msg.set(encryptedStatic, o.encryptedStatic);
  msg.set(encryptedTimestamp, o.encryptedTimestamp);
  writeMacs(peer, msg, nowMs);

  clearHandshake(peer);
  peer.state = {
    kind: 'initiation_created',
    localIndex: senderIndex,
    createdMs: nowMs,
    ephemeralPrivate,
    hash: h,
    chainingKey: ck,
  };
  if (peer.lastSentTimestamp === null || compareTai64n(timestamp, peer.lastSentTimestamp) > 0) {
    peer.lastSentTimestamp = timestamp;
  }
  return msg;
}

/** The cookie-reply failure for a message without a valid mac2 while under load. */
function cookieFailure(local: LocalIdentity, bytes: Uint8Array, senderIndex: number, ctx: ReceiveContext): Failure {
  return {
    ok: false,
    reason: 'bad_mac2',
    cookieReply: createCookieReply(local, bytes, senderIndex, ctx.source!, ctx.nowMs),
  };
}

/**
 * Responder, message 1. Checks mac1 (and mac2 under load), decrypts the initiator's static key,
 * looks the peer up by it, checks the timestamp and flood limit, then records the state for
 * createResponse. Nothing is changed on failure (except the cookie secret's rotation).
 */
export function consumeInitiation(
  local: LocalIdentity,
  msg: InitiationMessage,
  lookupPeerByStaticKey: (publicKey: Uint8Array) => HandshakePeer | undefined,
  ctx: ReceiveContext,
): ConsumeInitiationResult {
  assertMessage(msg, MESSAGE_INITIATION, MESSAGE_INITIATION_SIZE);
  assertContext(ctx);
  if (!verifyMac1(local, msg.bytes)) return { ok: false, reason: 'bad_mac1' };
  if (ctx.underLoad && !verifyMac2(local, msg.bytes, ctx.source!, ctx.nowMs)) {
    return cookieFailure(local, msg.bytes, msg.senderIndex, ctx);
  }

  const e = Uint8Array.from(msg.ephemeral);
  let h = hash(INITIAL_HASH, local.publicKey);
  // Every chaining key and key derived here is zeroed on the way out, whatever the outcome,
  // except the final chaining key and hash that a success keeps in the peer's state.
  let ck0: Uint8Array | null = null;
  let ck1: Uint8Array | null = null;
  let ck: Uint8Array | null = null;
  let k1: Uint8Array | null = null;
  let k2: Uint8Array | null = null;
  let committed = false;
  try {
    ck0 = kdf1(INITIAL_CHAINING_KEY, e);
    h = hash(h, e);
    const es = dh(local.privateKey, e);
    if (es === null) return { ok: false, reason: 'low_order' };
    [ck1, k1] = kdf2(ck0, es);
    es.fill(0);
    const remoteStatic = aeadOpen(k1, 0n, msg.encryptedStatic, h);
    if (remoteStatic === null) return { ok: false, reason: 'decrypt_static' };
    h = hash(h, msg.encryptedStatic);

    const peer = lookupPeerByStaticKey(remoteStatic);
    if (peer === undefined || !equalBytes(peer.remoteStatic, remoteStatic)) return { ok: false, reason: 'unknown_peer' };

    [ck, k2] = kdf2(ck1, peer.staticStatic);
    const timestamp = aeadOpen(k2, 0n, msg.encryptedTimestamp, h);
    if (timestamp === null) return { ok: false, reason: 'decrypt_timestamp' };
    h = hash(h, msg.encryptedTimestamp);

    if (peer.latestTimestamp !== null) {
      const cmp = compareTai64n(timestamp, peer.latestTimestamp);
      if (cmp === 0) return { ok: false, reason: 'replayed_timestamp' };
      if (cmp < 0) return { ok: false, reason: 'stale_timestamp' };
    }
    if (peer.lastInitiationConsumedMs !== null && ctx.nowMs - peer.lastInitiationConsumedMs < HANDSHAKE_INITIATION_RATE) {
      return { ok: false, reason: 'flood' };
    }

    // Authentic and fresh: commit.
    peer.latestTimestamp = timestamp;
    if (peer.lastInitiationConsumedMs === null || ctx.nowMs > peer.lastInitiationConsumedMs) {
      peer.lastInitiationConsumedMs = ctx.nowMs;
    }
    clearHandshake(peer);
    peer.state = {
      kind: 'initiation_consumed',
      remoteIndex: msg.senderIndex,
      remoteEphemeral: e,
      hash: h,
      chainingKey: ck,
    };
    committed = true;
    return { ok: true, peer, remoteIndex: msg.senderIndex, timestamp: Uint8Array.from(timestamp) };
  } finally {
    wipe(ck0, ck1, k1, k2);
    if (!committed) wipe(ck, h);
  }
}

// ---- message 2: response (whitepaper §5.4.3) -----------------------------------------------

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
  assertIndex(senderIndex, 'senderIndex');
  assertTime(nowMs, 'nowMs');
  if (opts?.ephemeralPrivate !== undefined) assertBytes(opts.ephemeralPrivate, KEY_SIZE, 'opts.ephemeralPrivate');
  const s = peer.state;
  if (s.kind !== 'initiation_consumed') throw new Error('createResponse: no consumed initiation for this peer');

  const ephemeralPrivate = opts?.ephemeralPrivate
    ? Uint8Array.from(opts.ephemeralPrivate)
    : generatePrivateKey(local.random);
  const ephemeralPublic = dhPublic(ephemeralPrivate);

  const ck0 = kdf1(s.chainingKey, ephemeralPublic);
  let h = hash(s.hash, ephemeralPublic);
  const ee = dh(ephemeralPrivate, s.remoteEphemeral);
  const se = dh(ephemeralPrivate, peer.remoteStatic);
  ephemeralPrivate.fill(0);
  if (ee === null || se === null) {
    wipe(ck0, ee, se, h);
    throw new Error('unreachable: low-order key passed consumeInitiation');
  }
  const ck1 = kdf1(ck0, ee);
  const ck2 = kdf1(ck1, se);
  const [ck, tau, k] = kdf3(ck2, peer.psk);
  wipe(ck0, ck1, ck2, ee, se);
  h = hash(h, tau);
  const encryptedNothing = aeadSeal(k, 0n, EMPTY, h);
  h = hash(h, encryptedNothing);
  wipe(tau, k);

  const msg = new Uint8Array(MESSAGE_RESPONSE_SIZE);
  const o = RESPONSE_OFFSET;
  writeHeader(msg, MESSAGE_RESPONSE);
  writeU32LE(msg, o.senderIndex, senderIndex);
  writeU32LE(msg, o.receiverIndex, s.remoteIndex);
  msg.set(ephemeralPublic, o.ephemeral);
  msg.set(encryptedNothing, o.encryptedNothing);
  writeMacs(peer, msg, nowMs);

  // (T_i^send = T_r^recv, T_i^recv = T_r^send) = KDF2(C, empty)
  const [recvKey, sendKey] = kdf2(ck, EMPTY);
  const keys: SessionKeys = {
    sendKey,
    recvKey,
    localIndex: senderIndex,
    remoteIndex: s.remoteIndex,
    isInitiator: false,
  };
  ck.fill(0);
  h.fill(0);
  clearHandshake(peer);
  return { message: msg, keys };
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
  assertMessage(msg, MESSAGE_RESPONSE, MESSAGE_RESPONSE_SIZE);
  assertContext(ctx);
  if (!verifyMac1(local, msg.bytes)) return { ok: false, reason: 'bad_mac1' };
  if (ctx.underLoad && !verifyMac2(local, msg.bytes, ctx.source!, ctx.nowMs)) {
    return cookieFailure(local, msg.bytes, msg.senderIndex, ctx);
  }
  const peer = lookupPeerByIndex(msg.receiverIndex);
  if (peer === undefined) return { ok: false, reason: 'unknown_index' };
  const s = peer.state;
  if (s.kind !== 'initiation_created' || s.localIndex !== msg.receiverIndex) {
    return { ok: false, reason: 'unexpected_response' };
  }

  // The peer's state (s) stays as it is on failure; what is derived here is zeroed on the way out.
  const e = msg.ephemeral;
  let h = hash(s.hash, e);
  let ck0: Uint8Array | null = null;
  let ck1: Uint8Array | null = null;
  let ck2: Uint8Array | null = null;
  let ck: Uint8Array | null = null;
  let tau: Uint8Array | null = null;
  let k: Uint8Array | null = null;
  let ee: Uint8Array | null = null;
  let se: Uint8Array | null = null;
  try {
    ck0 = kdf1(s.chainingKey, e);
    ee = dh(s.ephemeralPrivate, e);
    if (ee === null) return { ok: false, reason: 'low_order' };
    se = dh(local.privateKey, e);
    if (se === null) return { ok: false, reason: 'low_order' };
    ck1 = kdf1(ck0, ee);
    ck2 = kdf1(ck1, se);
    [ck, tau, k] = kdf3(ck2, peer.psk);
    h = hash(h, tau);
    const nothing = aeadOpen(k, 0n, msg.encryptedNothing, h);
    if (nothing === null) return { ok: false, reason: 'decrypt_response' };

    const [sendKey, recvKey] = kdf2(ck, EMPTY);
    const keys: SessionKeys = {
      sendKey,
      recvKey,
      localIndex: s.localIndex,
      remoteIndex: msg.senderIndex,
      isInitiator: true,
    };
    clearHandshake(peer);
    return { ok: true, peer, keys };
  } finally {
    wipe(ck0, ck1, ck2, ck, tau, k, ee, se, h);
  }
}

// ---- message 3: cookie reply (whitepaper §5.4.7) ---------------------------------------------

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
  if (msg === null || typeof msg !== 'object' || !(msg.bytes instanceof Uint8Array)) {
    throw new TypeError('msg must be a message returned by decodeMessage');
  }
  assertTime(nowMs, 'nowMs');
  const peer = lookupPeerByIndex(msg.receiverIndex);
  if (peer === undefined) return { ok: false, reason: 'unknown_index' };
  const reason = acceptCookieReply(peer, msg, nowMs);
  if (reason !== null) return { ok: false, reason };
  return { ok: true, peer };
}
