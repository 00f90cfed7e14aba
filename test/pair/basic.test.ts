/**
 * Two devices over fakes: on-demand handshake, both directions and families, queued
 * packets, key confirmation, status, runtime peer changes, logging hygiene.
 */
import { describe, expect, it } from 'vitest';
import { World, hex, packet } from './harness.js';
import { MESSAGE_INITIATION, MESSAGE_RESPONSE } from '../../src/wire/constants.js';
import { keyFingerprint } from '../../src/log.js';

describe('pair: handshake on demand', () => {
  it('a packet written to A arrives at B after a handshake A started', () => {
    const { w, a, b } = World.pair();
    const p = packet(a, b);
    a.tun.inject([p]);
    expect(a.plane.queued(a.device.peerId(b.publicKey)!)).toBe(1);
    w.settle();
    expect(b.tun.take().map(hex)).toEqual([hex(p)]);
    const types = w.net.log.map((d) => d.data[0]);
    expect(types.filter((t) => t === MESSAGE_INITIATION).length).toBe(1);
    expect(types.filter((t) => t === MESSAGE_RESPONSE).length).toBe(1);
    expect(a.plane.queued(a.device.peerId(b.publicKey)!)).toBe(0);
  });

  it('both directions, IPv4 and IPv6, exact bytes', () => {
    const { w, a, b } = World.pair();
    const sent: Record<string, string[]> = { A: [], B: [] };
    for (let i = 0; i < 5; i++) {
      for (const [src, dst] of [
        [a, b],
        [b, a],
      ] as const) {
        const p = packet(src, dst, i % 2 === 1);
        sent[dst.name].push(hex(p));
        src.tun.inject([p]);
        w.settle();
      }
    }
    expect(b.tun.take().map(hex)).toEqual(sent.B);
    expect(a.tun.take().map(hex)).toEqual(sent.A);
    expect(a.device.handshakeFailures()).toEqual(b.device.handshakeFailures());
    expect(Object.values(a.plane.drops()).every((n) => n === 0)).toBe(true);
    expect(Object.values(b.plane.drops()).every((n) => n === 0)).toBe(true);
  });

  it('packets queued before the handshake are all delivered, in order', () => {
    const { w, a, b } = World.pair();
    const ps = [packet(a, b), packet(a, b, true), packet(a, b)];
    a.tun.inject(ps.slice(0, 2));
    a.tun.inject(ps.slice(2));
    w.settle();
    expect(b.tun.take().map(hex)).toEqual(ps.map(hex));
  });

  it('key confirmation: the responder sends only after the first authentic packet on its new keypair', () => {
    const { w, a, b } = World.pair();
    const aId = b.device.peerId(a.publicKey)!;
    const p = packet(a, b);
    a.tun.inject([p]);
    w.net.step(); // initiation reaches B, B answers (response in flight)
    expect(b.device.status().peers[0].hasSession).toBe(false);
    const q = packet(b, a);
    b.tun.inject([q]); // B holds an unconfirmed keypair: the packet must wait
    expect(b.plane.queued(aId)).toBe(1);
    w.net.step(); // response reaches A: A sends p (and a keepalive) on the new keypair
    expect(b.device.status().peers[0].hasSession).toBe(false);
    w.net.step(); // p reaches B: keypair confirmed, q flushed
    expect(b.device.status().peers[0].hasSession).toBe(true);
    expect(b.plane.queued(aId)).toBe(0);
    w.settle();
    expect(b.tun.take().map(hex)).toEqual([hex(p)]);
    expect(a.tun.take().map(hex)).toEqual([hex(q)]);
    // One handshake only: B did not start its own while waiting for confirmation.
    expect(w.net.log.filter((d) => d.data[0] === MESSAGE_INITIATION).length).toBe(1);
  });

  it('B without A\'s endpoint learns it from the handshake (roaming in)', () => {
    const { w, a, b } = World.pair({ bKnowsAEndpoint: false });
    a.tun.inject([packet(a, b)]);
    w.settle();
    expect(b.device.status().peers[0].endpoint).toEqual(a.endpoint);
    const q = packet(b, a);
    b.tun.inject([q]);
    w.settle();
    expect(a.tun.take().map(hex)).toEqual([hex(q)]);
  });

  it('a packet for a peer without an endpoint waits until one is configured', () => {
    const { w, a, b } = World.pair({ bKnowsAEndpoint: false });
    const q = packet(b, a);
    b.tun.inject([q]);
    w.run(10_000);
    expect(a.tun.take()).toEqual([]);
    expect(w.net.log.length).toBe(0);
    b.device.updatePeer(a.publicKey, { endpoint: a.endpoint });
    w.settle();
    expect(a.tun.take().map(hex)).toEqual([hex(q)]);
  });

  it('roaming: A moves to a new address, B follows authentic data there', () => {
    const { w, a, b } = World.pair();
    a.tun.inject([packet(a, b)]);
    w.settle();
    const moved = { address: '10.0.0.11', port: 40000 };
    a.bind.rebind(moved);
    a.tun.inject([packet(a, b)]);
    w.settle();
    expect(b.device.status().peers[0].endpoint).toEqual(moved);
    const q = packet(b, a);
    b.tun.inject([q]);
    w.settle();
    expect(a.tun.take().map(hex)).toEqual([hex(q)]);
  });
});

describe('pair: status and runtime changes', () => {
  it('status shows endpoint, allowed IPs, latest handshake and byte counters', () => {
    const { w, a, b } = World.pair();
    a.tun.inject([packet(a, b)]);
    w.settle();
    const s = a.device.status();
    expect(s.publicKey).toBe(Buffer.from(a.publicKey).toString('base64'));
    const ps = s.peers[0];
    expect(ps.publicKey).toBe(Buffer.from(b.publicKey).toString('base64'));
    expect(ps.endpoint).toEqual(b.endpoint);
    expect(ps.allowedIps).toEqual(['10.1.0.2/32', 'fd00::2/128']);
    expect(ps.latestHandshakeMs).toBe(w.clock.now());
    expect(ps.handshakesCompleted).toBe(1);
    // One data packet (20 + 9.. bytes padded to 16, + 32 of header and tag) and one keepalive (32).
    const bs = b.device.status().peers[0];
    expect(ps.txBytes).toBe(bs.rxBytes);
    expect(ps.txPackets).toBe(2);
    expect(ps.txBytes).toBeGreaterThan(64);
  });

  it('peers can be added, updated and removed at runtime', () => {
    const { w, a, b } = World.pair();
    a.tun.inject([packet(a, b)]);
    w.settle();
    b.tun.take();
    // Narrow B's allowed IPs on A: IPv6 no longer routes to B.
    a.device.updatePeer(b.publicKey, { allowedIps: ['10.1.0.2/32'] });
    a.tun.inject([packet(a, b, true)]);
    w.settle();
    expect(b.tun.take()).toEqual([]);
    expect(a.plane.drops().no_route).toBe(1);
    // Remove B from A: IPv4 has no route either, B's keys are gone.
    expect(a.device.removePeer(b.publicKey)).toBe(true);
    expect(a.device.removePeer(b.publicKey)).toBe(false);
    a.tun.inject([packet(a, b)]);
    expect(a.plane.drops().no_route).toBe(2);
    expect(a.device.status().peers).toEqual([]);
    // Add it back: a fresh handshake. Its first initiation may carry a TAI64N no newer than
    // the one B saw moments ago (same wall-clock instant, and the fake clock does not move
    // the wall clock), so B may refuse it as a replay; the retry 5 s later carries a greater
    // one (the initiator keeps its own timestamps increasing).
    a.device.addPeer({ publicKey: b.publicKey, endpoint: b.endpoint, allowedIps: ['10.1.0.2/32'] });
    const p = packet(a, b);
    a.tun.inject([p]);
    w.settle();
    w.run(6_000);
    expect(b.tun.take().map(hex)).toEqual([hex(p)]);
  });

  it('an allowed IP given to another peer moves to it', () => {
    const { a } = World.pair();
    const w2 = new World();
    const c = w2.node('C', 3);
    a.device.addPeer({ publicKey: c.publicKey, allowedIps: ['10.1.0.2/32'] });
    const st = a.device.status().peers;
    expect(st[0].allowedIps).toEqual(['fd00::2/128']);
    expect(st[1].allowedIps).toEqual(['10.1.0.2/32']);
  });

  it('bad configuration raises typed errors', () => {
    const { a, b } = World.pair();
    expect(() => a.device.addPeer({ publicKey: new Uint8Array(31) })).toThrow(RangeError);
    expect(() => a.device.addPeer({ publicKey: 5 as unknown as Uint8Array })).toThrow(TypeError);
    expect(() => a.device.addPeer({ publicKey: b.publicKey })).toThrow(/exists/);
    expect(() => a.device.addPeer({ publicKey: a.publicKey })).toThrow(RangeError);
    expect(() => a.device.updatePeer(b.publicKey, { endpoint: { address: '10.0.0.2', port: 0 } })).toThrow(RangeError);
    expect(() => a.device.updatePeer(b.publicKey, { persistentKeepalive: 70000 })).toThrow(RangeError);
    expect(() => a.device.updatePeer(b.publicKey, { allowedIps: ['10.0.0.0/33'] })).toThrow();
    expect(() => a.device.updatePeer(b.publicKey, { psk: new Uint8Array(3) })).toThrow(RangeError);
  });

  it('logs use fixed keys and fingerprints, never a key', () => {
    const { w, a, b, psk } = World.pair();
    a.tun.inject([packet(a, b)]);
    w.settle();
    w.run(200_000, 1_000);
    const text = JSON.stringify([...a.logs, ...b.logs]);
    expect(a.logs.some((r) => (r.obj as { event?: string }).event === 'handshake_complete')).toBe(true);
    expect(text).toContain(keyFingerprint(b.publicKey));
    for (const secret of [a.privateKey, b.privateKey, psk, a.publicKey, b.publicKey]) {
      expect(text).not.toContain(Buffer.from(secret).toString('base64'));
      expect(text).not.toContain(Buffer.from(secret).toString('hex'));
    }
    for (const r of [...a.logs, ...b.logs]) expect(typeof (r.obj as { event?: unknown }).event).toBe('string');
  });
});

describe('pair: keys as text', () => {
  it('peers can be named by wg base64 keys; malformed text is refused with a code', () => {
    const { w, a, b } = World.pair();
    const text = Buffer.from(b.publicKey).toString('base64');
    expect(a.device.peerId(`${text}\n`)).toBe(a.device.peerId(b.publicKey));
    expect(() => a.device.removePeer('not a key')).toThrow(expect.objectContaining({ code: 'bad_length' }));
    a.device.updatePeer(text, { persistentKeepalive: 5 });
    expect(a.device.status().peers[0].persistentKeepalive).toBe(5);
    expect(a.device.removePeer(text)).toBe(true);
    w.settle();
  });
});
