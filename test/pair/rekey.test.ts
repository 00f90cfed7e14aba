/**
 * Forced rekey (`tenc rekey` -> Device.initiate): a new handshake while the session is
 * current, without losing packets; the one-initiation-per-REKEY_TIMEOUT limit
 * (WireGuard whitepaper §6.1) still holds; either side may force it; bad arguments fail.
 * And the control socket's `rekey` request: validated before the handler sees it.
 */
import { describe, expect, it } from 'vitest';
import { World, hex, packet, transportFrom, type Node } from './harness.js';
import { MESSAGE_INITIATION, REKEY_TIMEOUT } from '../../src/wire/constants.js';
import { dispatch, type ControlHandler } from '../../src/control/socket.js';

/** Receiver indices (bytes 4..8 of a transport message) of `from`'s transport datagrams since `start`. */
function receiverIndices(w: World, from: Node, start: number): Set<number> {
  return new Set(transportFrom(w, from, start).map((d) => Buffer.from(d).readUInt32LE(4)));
}

function initiationsFrom(w: World, from: Node, start = 0): number {
  return w.net.log.slice(start).filter((d) => d.from.address === from.endpoint.address && d.data[0] === MESSAGE_INITIATION).length;
}

/** A session A started, then a packet each way so both sides use it. */
function established() {
  const { w, a, b } = World.pair();
  a.tun.inject([packet(a, b)]);
  w.settle();
  b.tun.inject([packet(b, a)]);
  w.settle();
  a.tun.take();
  b.tun.take();
  expect(a.device.status().peers[0].handshakesCompleted).toBe(1);
  return { w, a, b };
}

describe('pair: forced rekey', () => {
  it('the initiator forces a new handshake: new keys both ways, nothing lost', () => {
    const { w, a, b } = established();
    w.run(REKEY_TIMEOUT); // past the rate limit of the first handshake
    const mark = w.net.log.length;
    b.tun.inject([packet(b, a)]);
    w.settle();
    const oldToB = receiverIndices(w, a, mark); // nothing from A yet
    const oldToA = receiverIndices(w, b, mark);
    expect(oldToB.size).toBe(0);
    expect(oldToA.size).toBe(1);
    a.tun.take();

    a.device.initiate(b.publicKey);
    expect(a.device.status().peers[0].initiationsSent).toBe(2); // at once
    const afterInit = w.net.log.length;
    w.settle();
    expect(a.device.status().peers[0].handshakesCompleted).toBe(2);
    expect(b.device.status().peers[0].handshakesCompleted).toBe(2);

    const sentToB: string[] = [];
    const sentToA: string[] = [];
    for (let i = 0; i < 4; i++) {
      const p = packet(a, b);
      const q = packet(b, a, true);
      sentToB.push(hex(p));
      sentToA.push(hex(q));
      a.tun.inject([p]);
      b.tun.inject([q]);
      w.settle();
    }
    expect(b.tun.take().map(hex)).toEqual(sentToB);
    expect(a.tun.take().map(hex)).toEqual(sentToA);
    // Both now send with the new keypair: receiver indices differ from the old one.
    const newToA = receiverIndices(w, b, afterInit);
    expect(newToA.size).toBe(1);
    expect([...newToA][0]).not.toBe([...oldToA][0]);
    expect(receiverIndices(w, a, afterInit).size).toBe(1);
    for (const n of [a, b]) expect(Object.values(n.plane.drops()).every((x) => x === 0)).toBe(true);
    expect(a.device.handshakeFailures()).toEqual(b.device.handshakeFailures());
  });

  it('the responder can force it too and becomes the initiator', () => {
    const { w, a, b } = established();
    w.run(REKEY_TIMEOUT);
    const mark = w.net.log.length;
    b.device.initiate(a.publicKey);
    w.settle();
    expect(initiationsFrom(w, b, mark)).toBe(1);
    expect(initiationsFrom(w, a, mark)).toBe(0);
    expect(b.device.status().peers[0].handshakesCompleted).toBe(2);
    const p = packet(a, b);
    a.tun.inject([p]);
    w.settle();
    expect(b.tun.take().map(hex)).toEqual([hex(p)]);
    expect(a.device.status().peers[0].handshakesCompleted).toBe(2); // confirmed by B's keepalive
  });

  it('within REKEY_TIMEOUT of the last handshake it waits, then goes out once', () => {
    const { w, a, b } = established();
    const mark = w.net.log.length;
    a.device.initiate(b.publicKey);
    a.device.initiate(b.publicKey); // asking twice does not make two
    expect(a.device.status().peers[0].initiationsSent).toBe(1);
    w.run(REKEY_TIMEOUT - 500);
    expect(initiationsFrom(w, a, mark)).toBe(0);
    w.run(1_000);
    expect(initiationsFrom(w, a, mark)).toBe(1);
    expect(a.device.status().peers[0].handshakesCompleted).toBe(2);
    w.run(REKEY_TIMEOUT * 2);
    expect(initiationsFrom(w, a, mark)).toBe(1);
  });

  it('without an endpoint it waits for one', () => {
    const { w, a, b } = World.pair({ bKnowsAEndpoint: false });
    b.device.initiate(a.publicKey);
    w.run(REKEY_TIMEOUT);
    expect(initiationsFrom(w, b)).toBe(0);
    b.device.updatePeer(a.publicKey, { endpoint: a.endpoint });
    w.settle();
    expect(initiationsFrom(w, b)).toBe(1);
    expect(b.device.status().peers[0].handshakesCompleted).toBe(1);
  });

  it('an unknown or malformed key is an error', () => {
    const { a } = World.pair();
    expect(() => a.device.initiate('hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=')).toThrow('no such peer');
    expect(() => a.device.initiate(new Uint8Array(31))).toThrow(RangeError);
    expect(() => a.device.initiate(42 as unknown as string)).toThrow(TypeError);
  });
});

describe('control op rekey (request validation)', () => {
  const KEY = 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo='; // RFC 7748 §6.1 Alice's public key
  const addrs = { v4: '10.77.0.1', v6: null };
  const calls: (string | null)[] = [];
  const handler: ControlHandler = {
    status: () => {
      throw new Error('not used');
    },
    setPeer: () => {},
    removePeer: () => false,
    setServices: () => {},
    rekey: (k) => {
      calls.push(k);
      return k === null || k === KEY ? [{ publicKey: KEY, initiation: 'sent' }] : [];
    },
  };
  const codeOf = (p: Promise<unknown>) => p.then(() => 'ok', (e: { code?: string; message: string }) => `${e.code ?? 'EIO'}: ${e.message}`);

  it('one peer, every peer, and the errors', async () => {
    expect(await dispatch(handler, addrs, { op: 'rekey', publicKey: KEY })).toEqual({ peers: [{ publicKey: KEY, initiation: 'sent' }] });
    expect(await dispatch(handler, addrs, { op: 'rekey' })).toEqual({ peers: [{ publicKey: KEY, initiation: 'sent' }] });
    expect(calls).toEqual([KEY, null]);
    const other = Buffer.alloc(32, 7).toString('base64');
    expect(await codeOf(dispatch(handler, addrs, { op: 'rekey', publicKey: other }))).toBe('ENOENT: publicKey: no such peer');
    expect(await codeOf(dispatch(handler, addrs, { op: 'rekey', publicKey: 'xyz' }))).toMatch(/^EINVAL: publicKey: /);
    expect(await codeOf(dispatch(handler, addrs, { op: 'rekey', peer: KEY }))).toBe('EINVAL: peer: unknown field for op rekey');
    expect(calls).toEqual([KEY, null, other]);
    const { rekey: _, ...without } = handler;
    expect(await codeOf(dispatch(without, addrs, { op: 'rekey' }))).toBe('EIO: this pod cannot rekey');
  });
});
