/**
 * mac1 / mac2 / cookie replies (whitepaper §5.4.4, §5.4.7), recomputed here independently from
 * the formulas with @noble primitives: which bytes each MAC covers, which key, the cookie
 * reply's XChaCha20-Poly1305 with mac1 as AAD, secret rotation and cookie freshness boundaries.
 */
import { describe, it, expect } from 'vitest';
import { blake2s } from '@noble/hashes/blake2.js';
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import {
  computeMac1,
  createCookieReply,
  currentCookie,
  endpointBytes,
  hasFreshCookie,
  verifyMac1,
  verifyMac2,
  writeMacs,
} from '../../src/noise/cookie.js';
import { createInitiation, makeHandshakePeer, makeIdentity } from '../../src/noise/handshake.js';
import { generatePrivateKey } from '../../src/noise/keys.js';
import { decodeMessage } from '../../src/wire/messages.js';
import { COOKIE_REFRESH_TIME, COOKIE_SECRET_LATENCY, MESSAGE_COOKIE_REPLY } from '../../src/wire/constants.js';

const enc = new TextEncoder();
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
/** Counter-based deterministic "random" for reproducible secrets and nonces. */
function counterRandom(): (n: number) => Uint8Array {
  let c = 0;
  return (n) => {
    c++;
    return new Uint8Array(n).fill(c);
  };
}

function setup() {
  const responder = makeIdentity(generatePrivateKey(), { random: counterRandom() });
  const initiatorId = makeIdentity(generatePrivateKey());
  const peerOfInitiator = makeHandshakePeer(initiatorId, responder.publicKey);
  return { responder, initiatorId, peerOfInitiator };
}

describe('mac1', () => {
  it('= BLAKE2s-128 keyed with HASH("mac1----" || responder public) over bytes 0..115', () => {
    const { responder, initiatorId, peerOfInitiator } = setup();
    const msg = createInitiation(initiatorId, peerOfInitiator, 1, 0);
    const key = blake2s(new Uint8Array([...enc.encode('mac1----'), ...responder.publicKey]));
    const expected = blake2s(msg.subarray(0, 116), { key, dkLen: 16 });
    expect(hex(msg.subarray(116, 132))).toBe(hex(expected));
    expect(verifyMac1(responder, msg)).toBe(true);
    expect(hex(computeMac1(peerOfInitiator.mac1Key, msg))).toBe(hex(expected));
  });

  it('covers every byte before it and none after it', () => {
    const { responder, initiatorId, peerOfInitiator } = setup();
    const msg = createInitiation(initiatorId, peerOfInitiator, 1, 0);
    for (const off of [0, 4, 8, 40, 88, 115]) {
      const m = Uint8Array.from(msg);
      m[off] ^= 1;
      expect(verifyMac1(responder, m)).toBe(false);
    }
    const m = Uint8Array.from(msg);
    m[140] ^= 1; // mac2 is not covered by mac1
    expect(verifyMac1(responder, m)).toBe(true);
  });
});

describe('mac2 and cookie replies', () => {
  it('cookie reply = XChaCha20-Poly1305(HASH("cookie--" || responder public), nonce, cookie, AAD = mac1)', () => {
    const { responder, initiatorId, peerOfInitiator } = setup();
    const msg = createInitiation(initiatorId, peerOfInitiator, 0x01020304, 0);
    const source = endpointBytes('fd00::1', 443);
    const nonce = new Uint8Array(24).fill(0x42);
    const reply = createCookieReply(responder, msg, 0x01020304, source, 1000, nonce);
    expect(reply.length).toBe(64);
    expect(hex(reply.subarray(0, 8))).toBe('0300000004030201');
    expect(hex(reply.subarray(8, 32))).toBe(hex(nonce));

    const key = blake2s(new Uint8Array([...enc.encode('cookie--'), ...responder.publicKey]));
    const cookie = xchacha20poly1305(key, nonce, msg.subarray(116, 132)).decrypt(reply.subarray(32, 64));
    expect(hex(cookie)).toBe(hex(blake2s(source, { key: responder.cookieSecret, dkLen: 16 })));

    // The initiator's mac2 with that cookie covers bytes 0..131 and passes verifyMac2.
    peerOfInitiator.cookie = cookie;
    peerOfInitiator.cookieReceivedMs = 1000;
    const msg2 = createInitiation(initiatorId, peerOfInitiator, 5, 2000);
    expect(hex(msg2.subarray(132))).toBe(hex(blake2s(msg2.subarray(0, 132), { key: cookie, dkLen: 16 })));
    expect(verifyMac2(responder, msg2, source, 2000)).toBe(true);
    expect(verifyMac2(responder, msg2, endpointBytes('fd00::2', 443), 2000)).toBe(false);

    const d = decodeMessage(reply);
    expect(d.ok && d.message.type).toBe(MESSAGE_COOKIE_REPLY);
  });

  it('the responder secret lives exactly COOKIE_REFRESH_TIME', () => {
    const { responder } = setup();
    const src = endpointBytes('10.0.0.9', 1);
    const c0 = hex(currentCookie(responder, src, 1000));
    expect(hex(currentCookie(responder, src, 1000 + COOKIE_REFRESH_TIME - 1))).toBe(c0);
    const c1 = hex(currentCookie(responder, src, 1000 + COOKIE_REFRESH_TIME));
    expect(c1).not.toBe(c0);
    expect(responder.cookieSecretBirthMs).toBe(1000 + COOKIE_REFRESH_TIME);
  });

  it('the initiator uses a cookie for COOKIE_REFRESH_TIME - COOKIE_SECRET_LATENCY', () => {
    const { peerOfInitiator: p } = setup();
    expect(hasFreshCookie(p, 0)).toBe(false);
    p.cookie = new Uint8Array(16).fill(3);
    p.cookieReceivedMs = 500;
    const limit = 500 + COOKIE_REFRESH_TIME - COOKIE_SECRET_LATENCY;
    expect(hasFreshCookie(p, limit - 1)).toBe(true);
    expect(hasFreshCookie(p, limit)).toBe(false);
    const m = new Uint8Array(148);
    writeMacs(p, m, limit);
    expect(m.subarray(132).every((b) => b === 0)).toBe(true);
    writeMacs(p, m, limit - 1);
    expect(m.subarray(132).some((b) => b !== 0)).toBe(true);
    expect(hex(p.lastMac1Sent!)).toBe(hex(m.subarray(116, 132)));
  });

  it('endpointBytes: distinct per address and port; typed argument errors', () => {
    expect(hex(endpointBytes('10.0.0.1', 1))).not.toBe(hex(endpointBytes('10.0.0.1', 2)));
    expect(hex(endpointBytes('FD00::1', 1))).toBe(hex(endpointBytes('fd00::1', 1)));
    expect(() => endpointBytes('10.0.0.1', 70000)).toThrow(RangeError);
    expect(() => endpointBytes(1 as unknown as string, 1)).toThrow(TypeError);
  });
});
