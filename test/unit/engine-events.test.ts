/**
 * The native engine's events to the control plane when they pile up
 * (native/engine_events.c), without namespaces or root. Pinned here (from a review):
 *   - endpoint changes coalesce to one pending event per peer, carrying the latest
 *     address: an on-path relay that sends a peer's authentic messages from two
 *     alternating addresses made one event per message, without bound until the
 *     queue was full and other events were lost;
 *   - an event the full queue refuses is counted (stats().eventsLost), and
 *     keypair_confirmed, need_handshake and endpoint are made again by the next
 *     packet (keypair_confirmed was marked sent before the push: once lost, the
 *     device never promoted the next keypair).
 * Test hooks: engineTestHoldEvents keeps the events queued in C (as while the node
 * thread is busy elsewhere), engineTestEventCap lowers the queue's bound.
 * As in engine-tables.test.ts, a second UDP socket stands in for the TUN device.
 */
import { createSocket, type Socket } from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeFd, NativePlane, openUdp, type UdpSocket } from '../../src/dataplane/native.js';
import type { PlaneEvent } from '../../src/device/plane.js';
import { aeadSeal } from '../../src/noise/kdf.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, pred: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !pred(); i++) await sleep(5);
  if (!pred()) throw new Error(`timed out waiting for ${what}`);
}

function bound(family: 'udp4' | 'udp6', address: string): Promise<Socket> {
  const s = createSocket(family);
  return new Promise((res, rej) => {
    s.once('error', rej);
    s.bind(0, address, () => res(s));
  });
}

function sendTo(sock: Socket, data: Uint8Array, port: number, address: string): Promise<void> {
  return new Promise((res, rej) => sock.send(data, port, address, (err) => (err ? rej(err) : res())));
}

/** A keepalive (empty transport message) to receiver index `index`, sealed with `key`. */
function keepalive(index: number, key: Uint8Array, counter: bigint): Uint8Array {
  const m = new Uint8Array(32);
  const dv = new DataView(m.buffer);
  m[0] = 4;
  dv.setUint32(4, index, true);
  dv.setBigUint64(8, counter, true);
  m.set(aeadSeal(key, counter, new Uint8Array(0)), 16);
  return m;
}

describe('native engine events: bounded, coalesced, and nothing the control plane waits for is lost', () => {
  let plane: NativePlane;
  let fake: UdpSocket;
  let sink: UdpSocket;
  let a: Socket;
  let b: Socket;
  let tunIn: Socket;
  const events: PlaneEvent[] = [];
  const of = <T extends PlaneEvent['type']>(type: T, peer: number) =>
    events.filter((e): e is Extract<PlaneEvent, { type: T }> => e.type === type && 'peer' in e && e.peer === peer);

  beforeAll(async () => {
    fake = openUdp(0, { gro: false });
    sink = openUdp(0, { gro: false });
    plane = new NativePlane({ tun: { fd: fake.fd, name: 'none', ifindex: 0, vnetHdr: false, offloads: 0 }, udp: openUdp(0, { gro: false }), mode: 'tun' });
    plane.onEvents((e) => events.push(...e));
    a = await bound('udp4', '127.0.0.1');
    b = await bound('udp4', '127.0.0.1');
    tunIn = createSocket('udp6');
  });

  afterAll(async () => {
    a.close();
    b.close();
    tunIn.close();
    closeFd(sink.fd);
    await plane.close();
  });

  it('a peer relayed from two alternating addresses makes one endpoint event (the latest address), not one per message', async () => {
    const key = new Uint8Array(32).fill(3);
    plane.addPeer(3, { address: '127.0.0.1', port: sink.port });
    plane.addKeypair(3, { localIndex: 300, remoteIndex: 301, sendKey: key, recvKey: key });
    const k0 = plane.stats().keepalivesReceived;
    plane.testHoldEvents(true);
    for (let i = 0; i < 40; i++) await sendTo(i % 2 ? b : a, keepalive(300, key, BigInt(i)), plane.udp.port, '127.0.0.1');
    await until('40 keepalives', () => plane.stats().keepalivesReceived >= k0 + 40);
    expect(events.length).toBe(0); // held in C
    plane.testHoldEvents(false);
    await until('the events', () => of('endpoint', 3).length > 0);
    await sleep(30); // and nothing more arrives
    expect(of('endpoint', 3)).toEqual([{ type: 'endpoint', peer: 3, endpoint: { address: '127.0.0.1', port: b.address().port } }]);
    expect(of('keypair_confirmed', 3)).toHaveLength(1);
    // taken: the next change is a new event
    await sendTo(a, keepalive(300, key, 40n), plane.udp.port, '127.0.0.1');
    await until('the next endpoint event', () => of('endpoint', 3).length > 1);
    expect(of('endpoint', 3)[1]!.endpoint.port).toBe(a.address().port);
    expect(plane.stats().eventsLost).toBe(0);
  });

  it('a full event queue: the refused events are counted, and keypair_confirmed, endpoint and need_handshake come with the next packet', async () => {
    const key = new Uint8Array(32).fill(4);
    plane.addPeer(4, { address: '127.0.0.1', port: sink.port });
    plane.addKeypair(4, { localIndex: 400, remoteIndex: 401, sendKey: key, recvKey: key });
    plane.addPeer(5, null); // no keypair: its packets wait, need_handshake
    plane.addAllowedIp(5, '10.2.0.5/32');
    const k0 = plane.stats().keepalivesReceived;
    const lost0 = plane.stats().eventsLost;
    plane.testHoldEvents(true);
    plane.testEventCap(0); // no room at all
    await sendTo(a, keepalive(400, key, 0n), plane.udp.port, '127.0.0.1');
    await until('the keepalive', () => plane.stats().keepalivesReceived > k0);
    expect(plane.stats().eventsLost).toBe(lost0 + 2); // keypair_confirmed and endpoint
    const toPeer5 = Uint8Array.from([0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 253, 0, 0, 10, 0, 0, 1, 10, 2, 0, 5]);
    await sendTo(tunIn, toPeer5, fake.port, '::1');
    await until('need_handshake refused', () => plane.stats().eventsLost > lost0 + 2);
    expect(plane.stats().eventsLost).toBe(lost0 + 3);
    plane.testEventCap(plane.layout.eventQueueMax);
    await sendTo(a, keepalive(400, key, 1n), plane.udp.port, '127.0.0.1'); // same address: still reported
    await until('the second keepalive', () => plane.stats().keepalivesReceived > k0 + 1);
    await sendTo(tunIn, toPeer5, fake.port, '::1');
    plane.testHoldEvents(false);
    await until('the events', () => of('keypair_confirmed', 4).length > 0 && of('endpoint', 4).length > 0 && of('need_handshake', 5).length > 0);
    await sleep(30);
    expect(of('keypair_confirmed', 4)).toEqual([{ type: 'keypair_confirmed', peer: 4, localIndex: 400 }]);
    expect(of('endpoint', 4)).toEqual([{ type: 'endpoint', peer: 4, endpoint: { address: '127.0.0.1', port: a.address().port } }]);
    expect(of('need_handshake', 5)).toEqual([{ type: 'need_handshake', peer: 5 }]);
    expect(plane.stats().eventsLost).toBe(lost0 + 3);
    plane.flushQueue(5);
    expect(() => plane.testEventCap(65537)).toThrow(RangeError);
  });
});
