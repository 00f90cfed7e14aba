/**
 * The reference data plane alone, with keys the test knows, so each pipeline stage can be
 * hit on purpose: the receive checks in order, drop accounting by DROP_REASONS, events,
 * the send queue. The native engine must behave the same (see src/dataplane/reference.ts).
 */
import { describe, expect, it } from 'vitest';
import { ReferencePlane } from '../../src/dataplane/reference.js';
import { DROP_REASONS, type PlaneEvent } from '../../src/dataplane/plane.js';
import { FakeNetwork, FakeTun } from '../../src/io/fake.js';
import { makeIpPacket } from '../../src/io/ippacket.js';
import { parseIp } from '../../src/peer/allowedips.js';
import { openTransport, sealTransport } from '../../src/noise/transport.js';
import { ManualClock } from '../../src/noise/timers.js';

const LOCAL = { address: '10.0.0.1', port: 51820 };
const REMOTE = { address: '10.0.0.2', port: 51820 };
const K_OUT = new Uint8Array(32).fill(0x11); // we send with it
const K_IN = new Uint8Array(32).fill(0x22); // the peer sends with it

function setup(queueLimit = 4) {
  const clock = new ManualClock(5_000);
  const net = new FakeNetwork();
  const tun = new FakeTun(1420);
  const bind = net.bind(LOCAL);
  const remote = net.bind(REMOTE);
  const got: Uint8Array[] = [];
  remote.onDatagrams((ds) => ds.forEach((d) => got.push(d.data)));
  const plane = new ReferencePlane({ tun, bind, clock, queueLimit });
  const events: PlaneEvent[] = [];
  plane.onEvents((e) => events.push(...e));
  plane.addPeer(7, REMOTE);
  plane.addAllowedIp(7, '10.1.0.2/32');
  plane.addAllowedIp(7, 'fd00::2/128');
  plane.addPeer(8, null);
  plane.addAllowedIp(8, '10.1.0.3/32');
  plane.addKeypair(7, { localIndex: 100, remoteIndex: 200, sendKey: K_OUT, recvKey: K_IN });
  const fromPeer = (counter: bigint, inner: Uint8Array, index = 100) => sealTransport(K_IN, index, counter, inner, 1420);
  const recv = (data: Uint8Array, from = REMOTE) => {
    net.inject(from, LOCAL, data);
    net.deliver();
  };
  return { clock, net, tun, plane, events, got, fromPeer, recv };
}

const ip = (src: string, dst: string, text = 'x') => makeIpPacket(parseIp(src), parseIp(dst), new TextEncoder().encode(text));
const only = (d: Record<string, number>) => Object.fromEntries(Object.entries(d).filter(([, n]) => n !== 0));

describe('reference plane: receive stages', () => {
  it('delivers an authentic packet without its padding and confirms the keypair once', () => {
    const s = setup();
    const p = ip('10.1.0.2', '10.1.0.1', 'hello');
    s.recv(s.fromPeer(0n, p));
    s.recv(s.fromPeer(1n, p));
    expect(s.tun.take()).toEqual([p, p]);
    expect(s.events).toEqual([{ type: 'keypair_confirmed', peer: 7, localIndex: 100 }]);
    const c = s.plane.peerCounters(7);
    expect(c.rxPackets).toBe(2);
    expect(c.lastRxDataMs).toBe(5_000);
    expect(only(s.plane.drops())).toEqual({});
  });

  it('drops in pipeline order, each under its reason', () => {
    const s = setup();
    const good = ip('10.1.0.2', '10.1.0.1');
    const cases: [string, Uint8Array, string][] = [
      ['short', new Uint8Array(10), 'bad_header'],
      ['unknown index', s.fromPeer(0n, good, 999), 'unknown_index'],
      ['wrong key', sealTransport(K_OUT, 100, 0n, good), 'auth'],
      ['accepted', s.fromPeer(5n, good), ''],
      ['replay', s.fromPeer(5n, good), 'replay'],
      ['not IP', s.fromPeer(6n, new Uint8Array([0x20, 1, 2, 3])), 'bad_inner'],
      ['spoofed', s.fromPeer(7n, ip('10.1.0.3', '10.1.0.1')), 'spoofed_source'],
      ['spoofed v6', s.fromPeer(8n, makeIpPacket(parseIp('fd00::9'), parseIp('fd00::1'), new Uint8Array(3))), 'spoofed_source'],
    ];
    const expected: Record<string, number> = {};
    for (const [name, data, reason] of cases) {
      s.recv(data);
      if (reason) expected[reason] = (expected[reason] ?? 0) + 1;
      expect(only(s.plane.drops()), name).toEqual(expected);
    }
    expect(s.tun.take()).toEqual([good]);
    // Peer-attributable reasons are on the peer; the others only in the total.
    expect(only(s.plane.peerDrops(7))).toEqual({ auth: 1, replay: 1, bad_inner: 1, spoofed_source: 2 });
  });

  it('an authentic keepalive counts as received, is not data, and roams the endpoint', () => {
    const s = setup();
    const moved = { address: '10.0.0.9', port: 1234 };
    s.recv(s.fromPeer(0n, new Uint8Array(0)), moved);
    expect(s.tun.take()).toEqual([]);
    const c = s.plane.peerCounters(7);
    expect([c.rxPackets, c.lastRxMs, c.lastRxDataMs]).toEqual([1, 5_000, 0]);
    expect(s.events).toContainEqual({ type: 'endpoint', peer: 7, endpoint: moved });
    // A forged datagram from elsewhere does not move it.
    s.recv(new Uint8Array(48).fill(4), { address: '10.0.0.66', port: 1 });
    s.plane.setSendKeypair(7, 100);
    s.plane.sendKeepalive(7);
    s.net.deliver();
    expect(s.net.log.at(-1)?.to).toEqual(moved);
  });

  it('handshake messages go up as events', () => {
    const s = setup();
    const init = new Uint8Array(148);
    init[0] = 1;
    s.recv(init);
    expect(s.events).toEqual([{ type: 'handshake', data: init, from: REMOTE }]);
  });
});

describe('reference plane: handshake queue', () => {
  it('passes at most handshakeQueueLimit handshake messages per batch up', () => {
    const clock = new ManualClock(0);
    const net = new FakeNetwork();
    const plane = new ReferencePlane({ tun: new FakeTun(), bind: net.bind(LOCAL), clock, handshakeQueueLimit: 2 });
    const events: PlaneEvent[] = [];
    plane.onEvents((e) => events.push(...e));
    const init = new Uint8Array(148);
    init[0] = 1;
    for (let i = 0; i < 3; i++) net.inject(REMOTE, LOCAL, init);
    net.deliver();
    expect(events.length).toBe(2);
    expect(plane.drops().handshake_queue_full).toBe(1);
  });
});

describe('reference plane: send stages', () => {
  it('no keypair: queue (bounded, new packets dropped when full), one need_handshake, flush in order', () => {
    const s = setup(3);
    const ps = [1, 2, 3, 4].map((i) => ip('10.1.0.1', '10.1.0.2', `p${i}`));
    s.tun.inject(ps.slice(0, 2));
    s.tun.inject(ps.slice(2));
    expect(s.events).toEqual([{ type: 'need_handshake', peer: 7 }]); // once until answered
    expect(s.plane.queued(7)).toBe(3);
    expect(s.plane.peerDrops(7).queue_full).toBe(1); // p4
    s.plane.setSendKeypair(7, 100);
    s.net.deliver();
    const opened = s.got.map((d) => openTransport(K_OUT, d));
    const inner = opened.map((o) => (o.ok ? o.plaintext.subarray(0, ps[0].length) : null));
    expect(inner).toEqual(ps.slice(0, 3));
    expect(opened.map((o) => (o.ok ? o.counter : -1n))).toEqual([0n, 1n, 2n]);
    expect(s.plane.peerCounters(7).txPackets).toBe(3);
    // Keypair gone again: a new episode reports need_handshake again.
    s.plane.setSendKeypair(7, null);
    s.tun.inject([ps[0]]);
    s.tun.inject([ps[1]]);
    expect(s.events.length).toBe(2);
    s.plane.flushQueue(7);
    s.tun.inject([ps[0]]);
    expect(s.events.length).toBe(3);
  });

  it('no route, too big; without an endpoint packets wait even with a keypair', () => {
    const s = setup();
    s.tun.inject([ip('10.1.0.1', '10.9.9.9'), new Uint8Array([1, 2, 3])]);
    expect(s.plane.drops().no_route).toBe(2);
    s.plane.setSendKeypair(7, 100);
    s.tun.inject([makeIpPacket(parseIp('10.1.0.1'), parseIp('10.1.0.2'), new Uint8Array(1500))]);
    expect(s.plane.drops().too_big).toBe(1);
    s.plane.addKeypair(8, { localIndex: 101, remoteIndex: 201, sendKey: K_OUT, recvKey: K_IN });
    s.plane.setSendKeypair(8, 101);
    s.tun.inject([ip('10.1.0.1', '10.1.0.3')]);
    expect(s.plane.queued(8)).toBe(1);
    expect(s.events).toContainEqual({ type: 'need_handshake', peer: 8 });
    s.plane.sendKeepalive(8); // nowhere to send it: nothing happens
    expect(s.plane.peerCounters(8).txPackets).toBe(0);
    s.plane.setEndpoint(8, { address: '10.0.0.3', port: 51820 });
    s.plane.setSendKeypair(8, 101);
    expect(s.plane.queued(8)).toBe(0);
    expect(s.plane.peerCounters(8).txPackets).toBe(1);
  });

  it('flushQueue counts no_session; removeKeypair stops sending; removePeer forgets routes', () => {
    const s = setup();
    s.tun.inject([ip('10.1.0.1', '10.1.0.2'), ip('10.1.0.1', '10.1.0.2')]);
    s.plane.flushQueue(7);
    expect(s.plane.peerDrops(7).no_session).toBe(2);
    s.plane.setSendKeypair(7, 100);
    s.plane.removeKeypair(100);
    s.tun.inject([ip('10.1.0.1', '10.1.0.2')]);
    expect(s.plane.queued(7)).toBe(1);
    s.recv(s.fromPeer(0n, ip('10.1.0.2', '10.1.0.1')));
    expect(s.plane.drops().unknown_index).toBe(1);
    s.plane.removePeer(7);
    s.tun.inject([ip('10.1.0.1', '10.1.0.2')]);
    expect(s.plane.drops().no_route).toBe(1);
    expect(() => s.plane.peerCounters(7)).toThrow();
  });

  it('every drop reason has a counter, and bad arguments are typed errors', () => {
    const s = setup();
    expect(Object.keys(s.plane.drops())).toEqual([...DROP_REASONS]);
    expect(() => s.plane.addPeer(70000, null)).toThrow(RangeError);
    expect(() => s.plane.addPeer('x' as unknown as number, null)).toThrow(TypeError);
    expect(() => s.plane.addKeypair(7, { localIndex: 5, remoteIndex: 6, sendKey: new Uint8Array(3), recvKey: K_IN })).toThrow(RangeError);
    expect(() => s.plane.setEndpoint(7, { address: '10.0.0.2', port: 70000 })).toThrow(RangeError);
  });
});
