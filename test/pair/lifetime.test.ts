/**
 * Two devices over time (hand-moved clock): rekey after REKEY_AFTER_TIME without loss,
 * REJECT_AFTER_TIME stops sending, passive keepalive, giving up, persistent keepalive
 * (WireGuard whitepaper §6).
 */
import { describe, expect, it } from 'vitest';
import { World, hex, packet, transportFrom } from './harness.js';
import {
  KEEPALIVE_TIMEOUT,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  MESSAGE_TRANSPORT_MIN_SIZE,
  REJECT_AFTER_TIME,
  REKEY_AFTER_TIME,
  REKEY_ATTEMPT_TIME,
} from '../../src/wire/constants.js';

describe('pair: key lifetimes', () => {
  it('rekeys after REKEY_AFTER_TIME of traffic both ways, losing nothing', () => {
    const { w, a, b } = World.pair();
    const first = packet(a, b);
    a.tun.inject([first]); // A starts: A is the initiator of the first keypair
    w.settle();
    const sentToB: string[] = [hex(first)];
    const sentToA: string[] = [];
    const t0 = w.clock.now();
    const handshakeTimes: number[] = [0];
    let lastHandshakes = 1;
    // One packet each way every 500 ms for 200 s.
    w.run(200_000, 500, () => {
      const p = packet(a, b);
      const q = packet(b, a, true);
      sentToB.push(hex(p));
      sentToA.push(hex(q));
      a.tun.inject([p]);
      b.tun.inject([q]);
      const n = a.device.status().peers[0].handshakesCompleted;
      if (n !== lastHandshakes) {
        handshakeTimes.push(w.clock.now() - t0);
        lastHandshakes = n;
      }
    });
    expect(b.tun.take().map(hex)).toEqual(sentToB);
    expect(a.tun.take().map(hex)).toEqual(sentToA);
    // First handshake on demand at the start, the second once the first keypair is
    // REKEY_AFTER_TIME old (seen at the next step).
    expect(handshakeTimes.length).toBe(2);
    expect(handshakeTimes[1]).toBeGreaterThanOrEqual(REKEY_AFTER_TIME);
    expect(handshakeTimes[1]).toBeLessThanOrEqual(REKEY_AFTER_TIME + 1_000);
    // A initiated both; B only answered.
    expect(a.device.status().peers[0].initiationsSent).toBe(2);
    expect(b.device.status().peers[0].initiationsSent).toBe(0);
    expect(b.device.status().peers[0].handshakesCompleted).toBe(2);
    for (const n of [a, b]) expect(Object.values(n.plane.drops()).every((x) => x === 0)).toBe(true);
  });

  it('both sides start a handshake at the same instant: they converge, nothing is lost', () => {
    const { w, a, b } = World.pair();
    const sentToB: string[] = [];
    const sentToA: string[] = [];
    w.run(20_000, 500, () => {
      const p = packet(a, b);
      const q = packet(b, a);
      sentToB.push(hex(p));
      sentToA.push(hex(q));
      a.tun.inject([p]);
      b.tun.inject([q]);
    });
    expect(b.tun.take().map(hex)).toEqual(sentToB);
    expect(a.tun.take().map(hex)).toEqual(sentToA);
    // The crossing initiations cancel each other; the retries (different jitter) settle it
    // within one REKEY_TIMEOUT.
    expect(a.device.status().peers[0].latestHandshakeMs).toBeLessThanOrEqual(1_000 + 500 + 5_000 + 100);
  });

  it('without a new handshake, REJECT_AFTER_TIME stops sending', () => {
    const { w, a, b } = World.pair();
    a.tun.inject([packet(a, b)]);
    w.settle();
    expect(b.tun.take().length).toBe(1);
    const start = w.clock.now();
    // From now on every handshake message is lost.
    w.net.filter = (d) => (d.data[0] === MESSAGE_INITIATION || d.data[0] === MESSAGE_RESPONSE ? 'drop' : 'pass');
    let delivered = 0;
    w.run(REJECT_AFTER_TIME - 1_000, 1_000, () => {
      a.tun.inject([packet(a, b)]);
    });
    delivered = b.tun.take().length;
    expect(delivered).toBe(179); // every packet until the keypair is REJECT_AFTER_TIME old
    expect(w.clock.now() - start).toBe(REJECT_AFTER_TIME - 1_000);
    w.run(1_000); // the keypair is REJECT_AFTER_TIME old now
    const logMark = w.net.log.length;
    w.run(30_000, 1_000, () => {
      a.tun.inject([packet(a, b)]);
    });
    expect(b.tun.take()).toEqual([]);
    expect(transportFrom(w, a, logMark)).toEqual([]); // nothing sealed with an expired key
    expect(a.device.status().peers[0].hasSession).toBe(false);
    expect(w.net.log.slice(logMark).some((d) => d.data[0] === MESSAGE_INITIATION)).toBe(true); // still trying
  });

  it('passive keepalive: B answers one-way traffic after KEEPALIVE_TIMEOUT', () => {
    const { w, a, b } = World.pair();
    a.tun.inject([packet(a, b)]);
    w.settle();
    const mark = w.net.log.length;
    w.run(KEEPALIVE_TIMEOUT - 200);
    expect(transportFrom(w, b, mark)).toEqual([]);
    w.run(400);
    const ka = transportFrom(w, b, mark);
    expect(ka.length).toBe(1);
    expect(ka[0].length).toBe(MESSAGE_TRANSPORT_MIN_SIZE);
    // A keepalive is not data: it does not make A answer with its own keepalive.
    const mark2 = w.net.log.length;
    w.run(3 * KEEPALIVE_TIMEOUT);
    expect(transportFrom(w, a, mark2)).toEqual([]);
    expect(transportFrom(w, b, mark2)).toEqual([]);
  });

  it('no keepalive when traffic flows both ways', () => {
    const { w, a, b } = World.pair();
    a.tun.inject([packet(a, b)]);
    w.settle();
    const mark = w.net.log.length;
    w.run(30_000, 1_000, () => {
      a.tun.inject([packet(a, b)]);
      b.tun.inject([packet(b, a)]);
    });
    const small = w.net.log.slice(mark).filter((d) => d.data.length === MESSAGE_TRANSPORT_MIN_SIZE);
    expect(small).toEqual([]);
  });

  it('persistent keepalive keeps an idle session visible', () => {
    const { w, a, b } = World.pair();
    a.tun.inject([packet(a, b)]);
    w.settle();
    a.device.updatePeer(b.publicKey, { persistentKeepalive: 25 });
    const mark = w.net.log.length;
    w.run(60_000, 1_000);
    const ka = transportFrom(w, a, mark);
    expect(ka.length).toBe(2);
    expect(ka.every((d) => d.length === MESSAGE_TRANSPORT_MIN_SIZE)).toBe(true);
  });

  it('an unreachable peer: retries every 5 s, gives up after REKEY_ATTEMPT_TIME, drops the queue', () => {
    const { w, a, b } = World.pair();
    w.net.filter = () => 'drop';
    const bId = a.device.peerId(b.publicKey)!;
    a.tun.inject([packet(a, b), packet(a, b)]);
    w.settle();
    w.run(REKEY_ATTEMPT_TIME + 10_000, 1_000);
    const inits = w.net.log.filter((d) => d.data[0] === MESSAGE_INITIATION).length;
    expect(inits).toBe(REKEY_ATTEMPT_TIME / 5_000);
    expect(a.plane.queued(bId)).toBe(0);
    expect(a.plane.peerDrops(bId).no_session).toBe(2);
    expect(b.tun.take()).toEqual([]);
  });

  it('zeroes everything REJECT_AFTER_TIME * 3 after the last handshake', () => {
    const { w, a, b } = World.pair();
    a.tun.inject([packet(a, b)]);
    w.settle();
    expect(a.device.status().peers[0].hasSession).toBe(true);
    expect(b.tun.take().length).toBe(1);
    w.run(REJECT_AFTER_TIME * 3 + 1_000, 5_000);
    expect(a.logs.some((r) => (r.obj as { event?: string }).event === 'keys_zeroed')).toBe(true);
    // A new packet still gets through after a fresh handshake.
    const p = packet(a, b);
    a.tun.inject([p]);
    w.settle();
    expect(b.tun.take().map(hex)).toEqual([hex(p)]);
  });
});
