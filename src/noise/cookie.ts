/**
 * mac1, mac2 and cookie replies (whitepaper §5.4.4 and §5.4.7).
 *
 *   mac1 = MAC(HASH(LABEL_MAC1 || receiver's static public), msg up to mac1)
 *   mac2 = MAC(cookie, msg up to mac2), or 16 zero bytes without a fresh cookie
 *   cookie = MAC(Rm, sender's outer address), Rm a random secret renewed every COOKIE_REFRESH_TIME
 *   cookie reply = XAEAD(HASH(LABEL_COOKIE || responder's static public), random nonce,
 *                        cookie, AAD = mac1 of the message being answered)
 *
 * Responder side: verifyMac1, verifyMac2, createCookieReply (state in LocalIdentity).
 * Initiator side: writeMacs when sending, acceptCookieReply (state in HandshakePeer).
 */

import {
  COOKIE_NONCE_SIZE,
  COOKIE_REFRESH_TIME,
  COOKIE_REPLY_OFFSET,
  COOKIE_SECRET_LATENCY,
  COOKIE_SIZE,
  KEY_SIZE,
  LABEL_COOKIE,
  LABEL_MAC1,
  MAC_SIZE,
  MESSAGE_COOKIE_REPLY,
  MESSAGE_COOKIE_REPLY_SIZE,
} from '../wire/constants.js';
import { type CookieReplyMessage, writeHeader, writeU32LE } from '../wire/messages.js';
import type { HandshakePeer, LocalIdentity } from './types.js';
import { equalBytes, hash, mac, xaeadOpen, xaeadSeal } from './kdf.js';

const textEncoder = new TextEncoder();
const LABEL_MAC1_BYTES = textEncoder.encode(LABEL_MAC1);
const LABEL_COOKIE_BYTES = textEncoder.encode(LABEL_COOKIE);

/** HASH(LABEL_MAC1 || public key). */
export function mac1KeyFor(publicKey: Uint8Array): Uint8Array {
  return hash(LABEL_MAC1_BYTES, publicKey);
}

/** HASH(LABEL_COOKIE || public key). */
export function cookieKeyFor(publicKey: Uint8Array): Uint8Array {
  return hash(LABEL_COOKIE_BYTES, publicKey);
}

/** Offset of mac1 in a handshake message (initiation or response): 32 bytes from the end. */
function mac1Offset(msg: Uint8Array): number {
  return msg.length - 2 * MAC_SIZE;
}

function mac2Offset(msg: Uint8Array): number {
  return msg.length - MAC_SIZE;
}

/** mac1 of a whole initiation or response message (covers everything before mac1). */
export function computeMac1(mac1Key: Uint8Array, msg: Uint8Array): Uint8Array {
  return mac(mac1Key, msg.subarray(0, mac1Offset(msg)));
}

/** mac2 of a whole initiation or response message (covers everything before mac2). */
export function computeMac2(cookie: Uint8Array, msg: Uint8Array): Uint8Array {
  return mac(cookie, msg.subarray(0, mac2Offset(msg)));
}

/** Responder: is mac1 of this received message made with our public key? */
export function verifyMac1(local: LocalIdentity, msg: Uint8Array): boolean {
  const off = mac1Offset(msg);
  return equalBytes(computeMac1(local.mac1Key, msg), msg.subarray(off, off + MAC_SIZE));
}

/**
 * Bytes naming a sender's outer address for its cookie. Only this responder ever recomputes
 * it, so any stable encoding works; the caller must pass the same form each time.
 */
export function endpointBytes(address: string, port: number): Uint8Array {
  if (typeof address !== 'string') throw new TypeError('address must be a string');
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError('port must be 0..65535');
  return textEncoder.encode(`${address.toLowerCase()}|${port}`);
}

/** Responder: the cookie for `source` under the current secret, renewing an expired secret. */
export function currentCookie(local: LocalIdentity, source: Uint8Array, nowMs: number): Uint8Array {
  if (local.cookieSecretBirthMs === null || nowMs - local.cookieSecretBirthMs >= COOKIE_REFRESH_TIME) {
    local.cookieSecret.fill(0);
    local.cookieSecret = Uint8Array.from(local.random(KEY_SIZE));
    local.cookieSecretBirthMs = nowMs;
  }
  return mac(local.cookieSecret, source);
}

/** Responder: is mac2 of this received message made with the cookie we would give `source` now? */
export function verifyMac2(local: LocalIdentity, msg: Uint8Array, source: Uint8Array, nowMs: number): boolean {
  const cookie = currentCookie(local, source, nowMs);
  const off = mac2Offset(msg);
  const ok = equalBytes(computeMac2(cookie, msg), msg.subarray(off, off + MAC_SIZE));
  cookie.fill(0);
  return ok;
}

/**
 * Responder: the 64-byte cookie reply to a received initiation or response `msg`, addressed to
 * `receiverIndex` (the sender index of `msg`). `nonce` (24 bytes) defaults to random.
 */
export function createCookieReply(
  local: LocalIdentity,
  msg: Uint8Array,
  receiverIndex: number,
  source: Uint8Array,
  nowMs: number,
  nonce?: Uint8Array,
): Uint8Array {
  const n = nonce ?? local.random(COOKIE_NONCE_SIZE);
  if (n.length !== COOKIE_NONCE_SIZE) throw new RangeError(`nonce must be ${COOKIE_NONCE_SIZE} bytes`);
  const cookie = currentCookie(local, source, nowMs);
  const off = mac1Offset(msg);
  const sealed = xaeadSeal(local.cookieKey, n, cookie, msg.subarray(off, off + MAC_SIZE));
  cookie.fill(0);
  const out = new Uint8Array(MESSAGE_COOKIE_REPLY_SIZE);
  writeHeader(out, MESSAGE_COOKIE_REPLY);
  writeU32LE(out, COOKIE_REPLY_OFFSET.receiverIndex, receiverIndex);
  out.set(n, COOKIE_REPLY_OFFSET.nonce);
  out.set(sealed, COOKIE_REPLY_OFFSET.encryptedCookie);
  return out;
}

/** Sender: does the peer's cookie still count (stops a little before the peer renews its secret)? */
export function hasFreshCookie(peer: HandshakePeer, nowMs: number): boolean {
  return (
    peer.cookie !== null &&
    peer.cookieReceivedMs !== null &&
    nowMs - peer.cookieReceivedMs < COOKIE_REFRESH_TIME - COOKIE_SECRET_LATENCY
  );
}

/**
 * Sender: fills mac1 and mac2 of an outgoing initiation or response (in place) and remembers
 * mac1 for the cookie reply that may answer it.
 */
export function writeMacs(peer: HandshakePeer, msg: Uint8Array, nowMs: number): void {
  const m1 = computeMac1(peer.mac1Key, msg);
  msg.set(m1, mac1Offset(msg));
  peer.lastMac1Sent = m1;
  if (hasFreshCookie(peer, nowMs)) {
    msg.set(computeMac2(peer.cookie!, msg), mac2Offset(msg));
  } else {
    msg.fill(0, mac2Offset(msg));
  }
}

/**
 * Sender: decrypts a cookie reply from `peer` and stores the cookie. Returns the failure reason
 * or null. Nothing changes on failure.
 */
export function acceptCookieReply(
  peer: HandshakePeer,
  msg: CookieReplyMessage,
  nowMs: number,
): 'unexpected_cookie' | 'decrypt_cookie' | null {
  if (peer.lastMac1Sent === null) return 'unexpected_cookie';
  const cookie = xaeadOpen(peer.cookieKey, msg.nonce, msg.encryptedCookie, peer.lastMac1Sent);
  if (cookie === null || cookie.length !== COOKIE_SIZE) return 'decrypt_cookie';
  peer.cookie = cookie;
  peer.cookieReceivedMs = nowMs;
  peer.lastMac1Sent = null;
  return null;
}
