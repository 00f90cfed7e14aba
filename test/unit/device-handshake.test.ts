/**
 * The device's handshake handling against a plane that behaves like the native engine where
 * it matters here (it copies the keys it is given; removing the send keypair leaves the peer
 * without one), with devices wired by hand on one ManualClock:
 *  - handshake load: only initiations and responses with a valid mac1 count toward it;
 *  - slot changes set the new send keypair before removing old ones, and an on-demand request
 *    is dropped when a usable send keypair exists by the time it would be sent;
 *  - session keys are zeroed on this side once the plane holds them.
 */
import { describe, expect, it } from 'vitest';
import { Device } from '../../src/device/device.js';
import type { Endpoint, PeerId, PlaneKeypair } from '../../src/device/plane.js';
import { computeMac1, mac1KeyFor } from '../../src/noise/cookie.js';
import { generatePrivateKey, publicKeyFromPrivate } from '../../src/noise/keys.js';
import { ManualClock } from '../../src/noise/timers.js';
import type { Peer } from '../../src/peer/peer.js';
import type { PeerRegistry } from '../../src/peer/registry.js';
import { StubPlane } from '../pair/stub-plane.js';
import {
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_INITIATION_SIZE,
  MESSAGE_RESPONSE,
  REJECT_AFTER_TIME,
  REKEY_TIMEOUT,
} from '../../src/wire/constants.js';

/** A data plane that keeps its own copy of every key, as the native engine's key vault does. */
class NativeLikePlane extends StubPlane {
  readonly keys = new Map<number, { peer: PeerId; sendKey: Uint8Array; recvKey: Uint8Array }>();
  readonly send = new Map<PeerId, number | null>();
  /** Times removeKeypair took away the send keypair of a peer (the engine then queues and raises need_handshake). */
  sendGaps = 0;

  override addPeer(peer: PeerId, endpoint: Endpoint | null): void {
    super.addPeer(peer, endpoint);
    this.send.set(peer, null);
  }
  override addKeypair(peer: PeerId, kp: PlaneKeypair): void {
    super.addKeypair(peer, kp);
    this.keys.set(kp.localIndex, { peer, sendKey: Uint8Array.from(kp.sendKey), recvKey: Uint8Array.from(kp.recvKey) });
  }
  override setSendKeypair(peer: PeerId, i: number | null): void {
    super.setSendKeypair(peer, i);
    this.send.set(peer, i);
  }
  override removeKeypair(i: number): void {
    super.removeKeypair(i);
    const k = this.keys.get(i);
    if (!k) return;
    if (this.send.get(k.peer) === i) {
      this.send.set(k.peer, null);
      this.sendGaps++;
    }
    this.keys.delete(i);
  }

  /** Handshake messages of `type` sent so far. */
  sentOfType(type: number): Uint8Array[] {
    return this.sent.filter((d) => d[0] === type);
  }
  last(): Uint8Array {
    return this.sent[this.sent.length - 1];
  }
}

const epA = { address: '10.0.0.1', port: 51820 };
const epB = { address: '10.0.0.2', port: 51820 };

/** Two devices that know each other, their planes wired by hand. */
function pair() {
  const clock = new ManualClock(10_000);
  const pa = new NativeLikePlane();
  const pb = new NativeLikePlane();
  const ka = generatePrivateKey();
  const kb = generatePrivateKey();
  const a = new Device({ privateKey: ka, plane: pa, clock, jitter: () => 0 });
  const b = new Device({ privateKey: kb, plane: pb, clock, jitter: () => 0 });
  const idB = a.addPeer({ publicKey: publicKeyFromPrivate(kb), endpoint: epB });
  const idA = b.addPeer({ publicKey: publicKeyFromPrivate(ka), endpoint: epA });
  const toA = (data: Uint8Array, from: Endpoint = epB) => pa.handler!([{ type: 'handshake', data, from }]);
  const toB = (data: Uint8Array, from: Endpoint = epA) => pb.handler!([{ type: 'handshake', data, from }]);
  return { clock, pa, pb, a, b, idA, idB, toA, toB };
}

/** A initiates (a packet waits), B responds, A consumes the response. */
function established() {
  const p = pair();
  p.pa.handler!([{ type: 'need_handshake', peer: p.idB }]);
  p.toB(p.pa.last());
  p.toA(p.pb.last());
  expect(p.a.status().peers[0].hasSession).toBe(true);
  expect(p.pa.sentOfType(MESSAGE_INITIATION).length).toBe(1);
  return p;
}

function peersOf(d: Device): Peer[] {
  return (d as unknown as { registry: PeerRegistry }).registry.peers();
}

const isZero = (b: Uint8Array) => b.every((x) => x === 0);

/** 64 random bytes that decode as a cookie reply (type 3, reserved bytes zero). */
function junkCookieReply(): Uint8Array {
  const m = new Uint8Array(64);
  for (let i = 4; i < 64; i++) m[i] = (Math.random() * 256) | 0;
  m[0] = MESSAGE_COOKIE_REPLY;
  return m;
}

/** 148 random bytes shaped as an initiation, with a valid mac1 for `to`: passes the mac1 check, nothing after. */
function junkInitiation(to: Uint8Array, validMac1: boolean): Uint8Array {
  const m = new Uint8Array(MESSAGE_INITIATION_SIZE);
  for (let i = 4; i < m.length - 32; i++) m[i] = (Math.random() * 256) | 0;
  m[0] = MESSAGE_INITIATION;
  const mac1 = computeMac1(mac1KeyFor(to), m);
  if (!validMac1) mac1[0] ^= 1;
  m.set(mac1, m.length - 32);
  return m;
}

describe('device: handshake load counts only initiations and responses with a valid mac1', () => {
  for (const n of [64, 200]) {
    it(`${n} junk cookie replies in one second leave a real initiation answered with a response`, () => {
      const { a, pa, pb, idA, toA } = pair();
      pb.handler!([{ type: 'need_handshake', peer: idA }]); // B's initiation to A
      const init = pb.last();
      const spoofed = (i: number) => ({ address: `203.0.113.${i % 250}`, port: 1000 + i });
      for (let i = 0; i < n; i++) pa.handler!([{ type: 'handshake', data: junkCookieReply(), from: spoofed(i) }]);
      expect(a.status().underLoad).toBe(false);
      toA(init);
      expect(pa.sent.length).toBe(1);
      expect(pa.last()[0]).toBe(MESSAGE_RESPONSE);
      expect(a.handshakeFailures().unknown_index).toBe(n);
      expect(a.handshakeFailures().bad_mac2).toBe(0);
    });
  }

  it('nor do messages refused before mac1 or by it (bad length, bad reserved bytes, bad mac1)', () => {
    const { a, pa, pb, idA, toA } = pair();
    pb.handler!([{ type: 'need_handshake', peer: idA }]);
    const init = pb.last();
    const from = { address: '203.0.113.9', port: 9 };
    for (let i = 0; i < 100; i++) {
      const reserved = junkCookieReply();
      reserved[1] = 1;
      pa.handler!([
        { type: 'handshake', data: new Uint8Array(100).fill(MESSAGE_INITIATION, 0, 1), from },
        { type: 'handshake', data: reserved, from },
        { type: 'handshake', data: junkInitiation(a.publicKey, false), from },
      ]);
    }
    expect(a.status().handshakeFailures).toEqual({ bad_length: 100, bad_reserved: 100, bad_mac1: 100 });
    toA(init);
    expect(pa.last()[0]).toBe(MESSAGE_RESPONSE);
    expect(a.status().underLoad).toBe(false);
  });

  it('65 initiations with a valid mac1 (junk past it) in one second do put it under load: a real one gets a cookie reply', () => {
    const { a, pa, pb, idA, toA } = pair();
    pb.handler!([{ type: 'need_handshake', peer: idA }]);
    const init = pb.last();
    const from = { address: '203.0.113.7', port: 7 };
    for (let i = 0; i < 65; i++) pa.handler!([{ type: 'handshake', data: junkInitiation(a.publicKey, true), from }]);
    // the 65th is already under load: it gets a cookie reply too
    expect(a.handshakeFailures().decrypt_static).toBe(64);
    expect(a.handshakeFailures().bad_mac2).toBe(1);
    expect(a.status().underLoad).toBe(true);
    toA(init);
    expect(pa.sent.length).toBe(2);
    expect(pa.sentTo[1]).toEqual(epB);
    expect(pa.last()[0]).toBe(MESSAGE_COOKIE_REPLY);
    expect(a.handshakeFailures().bad_mac2).toBe(2);
  });

  it('63 of them plus the real one (the 64th) is still below the threshold, as before', () => {
    const { a, pa, pb, idA, toA } = pair();
    pb.handler!([{ type: 'need_handshake', peer: idA }]);
    const init = pb.last();
    const from = { address: '203.0.113.7', port: 7 };
    for (let i = 0; i < 63; i++) pa.handler!([{ type: 'handshake', data: junkInitiation(a.publicKey, true), from }]);
    toA(init); // the 64th: not yet under load
    expect(pa.last()[0]).toBe(MESSAGE_RESPONSE);
  });
});

describe('device: send keypair changes and on-demand requests', () => {
  it('installing a keypair that drops the send keypair sets the new one first: the plane is never without one', () => {
    const { clock, a, b, pa, pb, idB, toA, toB } = established();
    const first = pa.send.get(idB)!;
    expect(first).not.toBeNull();
    // B starts a handshake; A answers it (an unconfirmed next keypair on A) ...
    clock.advance(REKEY_TIMEOUT + 1);
    b.initiate(peersOf(b)[0].publicKey);
    toA(pb.last());
    expect(pa.last()[0]).toBe(MESSAGE_RESPONSE);
    // ... then A's own initiation completes before B confirmed A's response: A's current
    // (the plane's send keypair) is dropped and the new initiator keypair becomes current.
    a.initiate(peersOf(a)[0].publicKey);
    clock.advance(REKEY_TIMEOUT + 1);
    a.tick();
    expect(pa.last()[0]).toBe(MESSAGE_INITIATION);
    toB(pa.last());
    toA(pb.sentOfType(MESSAGE_RESPONSE).at(-1)!); // (B's own retransmit may have gone out after it)
    expect(a.status().peers[0].handshakesCompleted).toBe(2);
    expect(pa.calls).toContainEqual(['removeKeypair', first]);
    const now = pa.send.get(idB);
    expect(now).not.toBeNull();
    expect(now).not.toBe(first);
    expect(pa.sendGaps).toBe(0);
  });

  it('a need_handshake after the session is established sends no initiation when a usable keypair exists', () => {
    const { clock, a, pa, idB } = established();
    // e.g. raised by the engine in an instant without a send keypair, arriving after the handshake
    pa.handler!([{ type: 'need_handshake', peer: idB }]);
    clock.advance(5_100);
    a.tick();
    expect(pa.sentOfType(MESSAGE_INITIATION).length).toBe(1);
    clock.advance(REKEY_TIMEOUT * 3);
    a.tick();
    expect(pa.sentOfType(MESSAGE_INITIATION).length).toBe(1);
  });

  it('a real need (no usable keypair) still initiates: at first, and once the keypair expired', () => {
    const { clock, a, pa, idB } = established(); // the first initiation was such a need
    clock.advance(REJECT_AFTER_TIME + 1);
    a.tick();
    expect(a.status().peers[0].hasSession).toBe(false);
    expect(pa.sentOfType(MESSAGE_INITIATION).length).toBe(1);
    pa.handler!([{ type: 'need_handshake', peer: idB }]);
    expect(pa.sentOfType(MESSAGE_INITIATION).length).toBe(2);
  });

  it('a need_handshake does not hide a rekey the plane asks for after it', () => {
    const { clock, a, pa, idB } = established();
    const cur = peersOf(a)[0].keypairs.current!;
    pa.handler!([
      { type: 'need_handshake', peer: idB },
      { type: 'rekey_needed', peer: idB, localIndex: cur.localIndex },
    ]);
    clock.advance(5_100);
    a.tick();
    expect(pa.sentOfType(MESSAGE_INITIATION).length).toBe(2);
  });

  it('a forced rekey (initiate) still goes out with a usable keypair', () => {
    const { clock, a, pa } = established();
    clock.advance(REKEY_TIMEOUT + 1);
    a.initiate(peersOf(a)[0].publicKey);
    expect(pa.sentOfType(MESSAGE_INITIATION).length).toBe(2);
  });
});

describe('device: session keys', () => {
  it('once handed to the plane, the keypairs hold zeros on both sides (the plane keeps its own copy)', () => {
    const { a, b, pa, pb, idA, idB } = established();
    // B's keypair is confirmed by A's first transport message
    const bIndex = [...pb.keys.keys()][0];
    pb.handler!([{ type: 'keypair_confirmed', peer: idA, localIndex: bIndex }]);
    for (const d of [a, b]) {
      const kps = peersOf(d)[0].keypairs.all();
      expect(kps.length).toBe(1);
      for (const kp of kps) {
        expect(isZero(kp.sendKey)).toBe(true);
        expect(isZero(kp.recvKey)).toBe(true);
        expect(kp.zeroed).toBe(false); // still the current keypair as far as the slots go
      }
    }
    expect(a.status().peers[0].hasSession).toBe(true);
    expect(b.status().peers[0].hasSession).toBe(true);
    // The planes got the real keys: A's send key is B's receive key and the reverse.
    const ak = pa.keys.get(pa.send.get(idB)!)!;
    const bk = pb.keys.get(pb.send.get(idA)!)!;
    expect(isZero(ak.sendKey)).toBe(false);
    expect(Buffer.from(ak.sendKey).equals(Buffer.from(bk.recvKey))).toBe(true);
    expect(Buffer.from(ak.recvKey).equals(Buffer.from(bk.sendKey))).toBe(true);
  });

  it('keys are zeroed on this side even when the plane refuses the keypair', () => {
    const { pa, pb, idB, toA, toB } = pair();
    let handed: PlaneKeypair | null = null;
    pa.addKeypair = (_peer: PeerId, kp: PlaneKeypair) => {
      handed = kp;
      throw Object.assign(new Error('no room'), { code: 'ENOSPC' });
    };
    pa.handler!([{ type: 'need_handshake', peer: idB }]);
    toB(pa.last());
    toA(pb.last());
    expect(handed).not.toBeNull();
    expect(isZero(handed!.sendKey) && isZero(handed!.recvKey)).toBe(true);
  });
});
