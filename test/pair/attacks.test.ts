/**
 * Two devices and a hostile network: wrong psk, spoofed inner source, replayed and
 * tampered datagrams, junk, handshake floods answered with cookies (whitepaper §5.3,
 * §5.4.6). Every refused packet must be counted under its DROP_REASONS name.
 */
import { describe, expect, it } from 'vitest';
import { World, hex, packet, transportFrom } from './harness.js';
import { generatePsk } from '../../src/noise/keys.js';
import { makeIpPacket } from '../../src/io/ippacket.js';
import { parseIp } from '../../src/peer/allowedips.js';
import {
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_TRANSPORT,
  MESSAGE_TRANSPORT_HEADER_SIZE,
  REKEY_ATTEMPT_TIME,
} from '../../src/wire/constants.js';

function established() {
  const pair = World.pair();
  const { w, a, b } = pair;
  a.tun.inject([packet(a, b)]);
  w.settle();
  expect(b.tun.take().length).toBe(1);
  return { ...pair, aOnB: b.device.peerId(a.publicKey)!, bOnA: a.device.peerId(b.publicKey)! };
}

describe('pair: wrong psk', () => {
  it('no session, nothing delivered, the queued packets end as dropped', () => {
    const { w, a, b } = World.pair({ pskA: generatePsk(), pskB: generatePsk() });
    const bOnA = a.device.peerId(b.publicKey)!;
    a.tun.inject([packet(a, b), packet(a, b)]);
    w.settle();
    w.run(REKEY_ATTEMPT_TIME + 5_000, 1_000);
    expect(b.tun.take()).toEqual([]);
    expect(a.device.status().peers[0].hasSession).toBe(false);
    expect(b.device.status().peers[0].hasSession).toBe(false);
    // Every response B sent failed to decrypt at A (the psk enters only at the response).
    expect(a.device.handshakeFailures().decrypt_response).toBe(REKEY_ATTEMPT_TIME / 5_000);
    expect(a.plane.peerDrops(bOnA).no_session).toBe(2);
    expect(a.plane.queued(bOnA)).toBe(0);
    expect(transportFrom(w, a)).toEqual([]);
  });

  it('per-peer psk overrides the device psk; fixing it at runtime makes the next handshake work', () => {
    const { w, a, b, psk } = World.pair({ pskA: generatePsk() });
    a.tun.inject([packet(a, b)]);
    w.settle();
    expect(a.device.handshakeFailures().decrypt_response).toBe(1);
    a.device.updatePeer(b.publicKey, { psk }); // now both use the project psk
    w.run(6_000);
    expect(b.tun.take().length).toBe(1);
  });
});

describe('pair: data plane checks', () => {
  it('spoofed inner source: authentic but not from the sender\'s allowed IPs', () => {
    const { w, a, b, aOnB } = established();
    // B also knows a third peer owning 10.1.0.3; A may not send as 10.1.0.3 nor as 10.1.0.99.
    const c = new World().node('C', 3);
    b.device.addPeer({ publicKey: c.publicKey, allowedIps: ['10.1.0.3/32'] });
    const payload = new TextEncoder().encode('spoof');
    a.tun.inject([
      makeIpPacket(parseIp('10.1.0.3'), b.ip4, payload),
      makeIpPacket(parseIp('10.1.0.99'), b.ip4, payload),
      makeIpPacket(parseIp('fd00::1:1'), b.ip6, payload),
    ]);
    w.settle();
    expect(b.tun.take()).toEqual([]);
    expect(b.plane.peerDrops(aOnB).spoofed_source).toBe(3);
    expect(b.device.status().peers.find((p) => p.id === aOnB)?.drops).toEqual({ spoofed_source: 3 });
    // A proper packet still passes.
    const ok = packet(a, b);
    a.tun.inject([ok]);
    w.settle();
    expect(b.tun.take().map(hex)).toEqual([hex(ok)]);
  });

  it('a replayed datagram is dropped and counted as replay', () => {
    const { w, a, b, aOnB } = established();
    const mark = w.net.log.length;
    const p = packet(a, b);
    a.tun.inject([p]);
    w.settle();
    expect(b.tun.take().map(hex)).toEqual([hex(p)]);
    const [sealed] = transportFrom(w, a, mark);
    w.net.inject(a.endpoint, b.endpoint, sealed);
    w.net.inject(a.endpoint, b.endpoint, sealed);
    w.settle();
    expect(b.tun.take()).toEqual([]);
    expect(b.plane.peerDrops(aOnB).replay).toBe(2);
  });

  it('a tampered datagram is counted as auth and does not move the replay window', () => {
    const { w, a, b, aOnB } = established();
    let original: Uint8Array | null = null;
    w.net.filter = (d) => {
      if (original || d.data[0] !== MESSAGE_TRANSPORT || d.data.length <= 32) return 'pass';
      original = Uint8Array.from(d.data);
      const t = Uint8Array.from(d.data);
      t[MESSAGE_TRANSPORT_HEADER_SIZE + 3] ^= 0x01; // one ciphertext bit
      return t;
    };
    const p = packet(a, b);
    a.tun.inject([p]);
    w.settle();
    expect(b.tun.take()).toEqual([]);
    expect(b.plane.peerDrops(aOnB).auth).toBe(1);
    // Its counter was not committed: the genuine datagram is still accepted.
    w.net.filter = null;
    w.net.inject(a.endpoint, b.endpoint, original!);
    w.settle();
    expect(b.tun.take().map(hex)).toEqual([hex(p)]);
    // A forged header (unknown receiver index) is counted apart.
    const forged = Uint8Array.from(original!);
    forged[4] ^= 0xff;
    w.net.inject(a.endpoint, b.endpoint, forged);
    w.settle();
    expect(b.plane.drops().unknown_index).toBe(1);
  });

  it('junk datagrams are counted as bad_header and never reach the TUN', () => {
    const { w, a, b } = established();
    const junk = [new Uint8Array(0), new Uint8Array([4, 0, 0]), new Uint8Array([9, 0, 0, 0, 1, 2]), new Uint8Array([4, 0, 0, 0, 1, 2, 3, 4]), new Uint8Array(148).fill(1)];
    for (const j of junk) w.net.inject(a.endpoint, b.endpoint, j);
    w.settle();
    expect(b.tun.take()).toEqual([]);
    expect(b.plane.drops().bad_header).toBe(junk.length);
  });

  it('a handshake message with a bad mac1 is refused and counted', () => {
    const { w, a, b } = established();
    const msg = new Uint8Array(148);
    msg[0] = MESSAGE_INITIATION;
    w.net.inject(a.endpoint, b.endpoint, msg);
    w.settle();
    expect(b.device.handshakeFailures().bad_mac1).toBe(1);
  });
});

describe('pair: under load', () => {
  it('above the threshold, initiations need a cookie: reply, then the retry gets through', () => {
    const { w, a, b } = World.pair({ b: { underLoadThreshold: 0 } });
    const p = packet(a, b);
    a.tun.inject([p]);
    w.settle();
    expect(b.tun.take()).toEqual([]);
    expect(b.device.handshakeFailures().bad_mac2).toBe(1);
    expect(w.net.log.filter((d) => d.data[0] === MESSAGE_COOKIE_REPLY).length).toBe(1);
    expect(b.device.status().underLoad).toBe(true);
    w.run(5_500);
    expect(b.tun.take().map(hex)).toEqual([hex(p)]);
    expect(b.device.handshakeFailures().bad_mac2).toBe(1);
  });
});
