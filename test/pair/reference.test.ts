/**
 * The reference data plane alone, with keys the test knows, so each pipeline stage can be
 * hit on purpose: the receive checks in order, drop accounting by DROP_REASONS, events,
 * the send queue. The native engine must behave the same (see src/dataplane/reference.ts).
 */
import { describe, expect, it } from 'vitest';
import { ReferencePlane } from '../../src/dataplane/reference.js';
import { DROP_REASONS, type PlaneEvent } from '../../src/device/plane.js';
import { FakeNetwork, FakeTun } from '../../src/io/fake.js';
import { makeIpPacket } from '../../src/io/ippacket.js';
import { parseIp } from '../../src/peer/allowedips.js';
import { openTransport, sealTransport } from '../../src/noise/transport.js';
import { ManualClock } from '../../src/noise/timers.js';

const LOCAL = { address: '10.0.0.1', port: 51820 };
const REMOTE = { address: '10.0.0.2', port: 51820 };
const K_OUT = new Uint8Array(32).fill(0x11); // we send with it
const K_IN = new Uint8Array(32).fill(0x22); // the peer sends with it

function setup(queueLimit = 4, natMaxFlows?: number) {
  const clock = new ManualClock(5_000);
  const net = new FakeNetwork();
  const tun = new FakeTun(1420);
  const bind = net.bind(LOCAL);
  const remote = net.bind(REMOTE);
  const got: Uint8Array[] = [];
  remote.onDatagrams((ds) => ds.forEach((d) => got.push(d.data)));
  const plane = new ReferencePlane({ tun, bind, clock, queueLimit, natMaxFlows });
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

  it('with local addresses set, delivers only to them or a service local address after DNAT; anything else is bad_destination', () => {
    const s = setup();
    s.plane.setLocalAddresses(['10.1.0.1']);
    s.plane.setLocalServices([{ vip: '10.96.0.7', localAddress: '10.1.0.9', ports: [] }]);
    const toPod = ip('10.1.0.2', '10.1.0.1', 'a');
    s.recv(s.fromPeer(0n, toPod));
    s.recv(s.fromPeer(1n, ip('10.1.0.2', '10.77.0.254', 'relay me'))); // not an address of this pod
    s.recv(s.fromPeer(2n, l4Packet(17, '10.1.0.2', '10.96.0.7', 4000, 53, new Uint8Array(4)))); // DNATed to 10.1.0.9: local
    const got = s.tun.take();
    expect(got.length).toBe(2);
    expect(got[0]).toEqual(toPod);
    expect(Array.from(got[1]!.subarray(16, 20))).toEqual([10, 1, 0, 9]);
    expect(only(s.plane.drops())).toEqual({ bad_destination: 1 });
    expect(only(s.plane.peerDrops(7))).toEqual({ bad_destination: 1 });
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

// ---- DNAT of local services --------------------------------------------------------------

/** RFC 1071 one's-complement sum of 16-bit words. */
function sum16(parts: Uint8Array[]): number {
  let s = 0;
  for (const b of parts) {
    for (let i = 0; i + 1 < b.length; i += 2) s += (b[i] << 8) | b[i + 1];
    if (b.length % 2) s += b[b.length - 1] << 8;
  }
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** A TCP or UDP packet with checksums computed from scratch (RFC 793 §3.1, RFC 768, RFC 8200 §8.1). */
function l4Packet(proto: 6 | 17, src: string, dst: string, sport: number, dport: number, payload: Uint8Array, zeroUdpSum = false): Uint8Array {
  const s = parseIp(src);
  const d = parseIp(dst);
  const hl = proto === 6 ? 20 : 8;
  const seg = new Uint8Array(hl + payload.length);
  seg[0] = sport >> 8;
  seg[1] = sport & 0xff;
  seg[2] = dport >> 8;
  seg[3] = dport & 0xff;
  if (proto === 6) seg[12] = 5 << 4;
  else {
    seg[4] = seg.length >> 8;
    seg[5] = seg.length & 0xff;
  }
  seg.set(payload, hl);
  const pkt = makeIpPacket(s, d, seg);
  const ipHl = s.length === 4 ? 20 : 40;
  if (s.length === 4) {
    pkt[9] = proto;
    const c = ~sum16([pkt.subarray(0, 20)]) & 0xffff;
    pkt[10] = c >> 8;
    pkt[11] = c & 0xff;
  } else pkt[6] = proto;
  if (!(proto === 17 && zeroUdpSum)) {
    const c = ~sum16([s, d, new Uint8Array([0, proto, seg.length >> 8, seg.length & 0xff]), pkt.subarray(ipHl)]) & 0xffff;
    const at = ipHl + (proto === 6 ? 16 : 6);
    const v = proto === 17 && c === 0 ? 0xffff : c;
    pkt[at] = v >> 8;
    pkt[at + 1] = v & 0xff;
  }
  return pkt;
}

/** True when the IPv4 header checksum and the TCP/UDP checksum verify (0 UDP sum over IPv4: none). */
function checksumsOk(pkt: Uint8Array): boolean {
  const v4 = pkt[0] >> 4 === 4;
  const ipHl = v4 ? 20 : 40;
  if (v4 && sum16([pkt.subarray(0, 20)]) !== 0xffff) return false;
  const proto = v4 ? pkt[9] : pkt[6];
  const src = v4 ? pkt.subarray(12, 16) : pkt.subarray(8, 24);
  const dst = v4 ? pkt.subarray(16, 20) : pkt.subarray(24, 40);
  const seg = pkt.subarray(ipHl);
  if (proto === 17 && v4 && seg[6] === 0 && seg[7] === 0) return true;
  return sum16([src, dst, new Uint8Array([0, proto, seg.length >> 8, seg.length & 0xff]), seg]) === 0xffff;
}

const addrOf = (pkt: Uint8Array, which: 'src' | 'dst'): string => {
  const v4 = pkt[0] >> 4 === 4;
  const b = v4 ? pkt.subarray(which === 'src' ? 12 : 16, which === 'src' ? 16 : 20) : pkt.subarray(which === 'src' ? 8 : 24, which === 'src' ? 24 : 40);
  return v4 ? [...b].join('.') : Buffer.from(b).toString('hex');
};

describe('reference plane: local services (DNAT, as native/nat.c)', () => {
  const payload = new TextEncoder().encode('GET / HTTP/1.0\r\n\r\n!');
  function natSetup(natMaxFlows?: number) {
    const s = setup(4, natMaxFlows);
    s.plane.setLocalServices([
      { vip: '10.96.0.10', localAddress: '10.1.0.1', ports: [{ protocol: 'tcp', port: 80 }] },
      { vip: '10.96.0.11', localAddress: '10.1.0.1', ports: [] },
      { vip: 'fd00:96::10', localAddress: 'fd00::1', ports: [{ protocol: 'udp', port: 53 }] },
    ]);
    s.plane.setSendKeypair(7, 100);
    let ctr = 0n;
    const deliver = (inner: Uint8Array): Uint8Array => {
      s.recv(s.fromPeer(ctr++, inner));
      const got = s.tun.take();
      expect(got.length).toBe(1);
      return got[0];
    };
    /** An inner packet the plane must refuse (nothing written to the TUN). */
    const refused = (inner: Uint8Array): void => {
      s.recv(s.fromPeer(ctr++, inner));
      expect(s.tun.take()).toEqual([]);
    };
    const reply = (inner: Uint8Array): Uint8Array => {
      s.got.length = 0;
      s.tun.inject([inner]);
      s.net.deliver();
      expect(s.got.length).toBe(1);
      const o = openTransport(K_OUT, s.got[0]);
      if (!o.ok) throw new Error('reply did not open');
      return o.plaintext.subarray(0, inner.length);
    };
    return { s, deliver, refused, reply };
  }

  it('TCP to VIP:port goes to the local address; the reply comes back from the VIP; checksums stay valid', () => {
    const { deliver, reply } = natSetup();
    const inbound = l4Packet(6, '10.1.0.2', '10.96.0.10', 40000, 80, payload);
    expect(checksumsOk(inbound)).toBe(true);
    const got = deliver(inbound);
    expect(addrOf(got, 'dst')).toBe('10.1.0.1');
    expect(checksumsOk(got)).toBe(true);
    const back = reply(l4Packet(6, '10.1.0.1', '10.1.0.2', 80, 40000, payload));
    expect(addrOf(back, 'src')).toBe('10.96.0.10');
    expect(checksumsOk(back)).toBe(true);
  });

  it('ports not listed, and other protocols, are left alone; an empty list means every TCP/UDP port', () => {
    const { deliver } = natSetup();
    expect(addrOf(deliver(l4Packet(6, '10.1.0.2', '10.96.0.10', 40000, 81, payload)), 'dst')).toBe('10.96.0.10');
    expect(addrOf(deliver(l4Packet(17, '10.1.0.2', '10.96.0.10', 40000, 80, payload)), 'dst')).toBe('10.96.0.10');
    expect(addrOf(deliver(ip('10.1.0.2', '10.96.0.11')), 'dst')).toBe('10.96.0.11'); // protocol 253
    const any = deliver(l4Packet(17, '10.1.0.2', '10.96.0.11', 1234, 9999, payload));
    expect(addrOf(any, 'dst')).toBe('10.1.0.1');
    expect(checksumsOk(any)).toBe(true);
  });

  it('IPv4 UDP without a checksum keeps none; IPv6 UDP checksum is updated', () => {
    const { deliver } = natSetup();
    const nosum = deliver(l4Packet(17, '10.1.0.2', '10.96.0.11', 1234, 53, payload, true));
    expect(addrOf(nosum, 'dst')).toBe('10.1.0.1');
    expect([nosum[26], nosum[27]]).toEqual([0, 0]);
    expect(checksumsOk(nosum)).toBe(true);
    const v6 = deliver(l4Packet(17, 'fd00::2', 'fd00:96::10', 5353, 53, payload));
    expect(addrOf(v6, 'dst')).toBe(Buffer.from(parseIp('fd00::1')).toString('hex'));
    expect(checksumsOk(v6)).toBe(true);
  });

  it('fragments are left alone; replies of unknown flows are not rewritten; new services forget the flows they no longer DNAT', () => {
    const { s, deliver, reply } = natSetup();
    const frag = l4Packet(6, '10.1.0.2', '10.96.0.10', 40000, 80, payload);
    frag[6] = 0x20; // MF
    expect(addrOf(deliver(frag), 'dst')).toBe('10.96.0.10');
    expect(addrOf(reply(l4Packet(6, '10.1.0.1', '10.1.0.2', 80, 40001, payload)), 'src')).toBe('10.1.0.1');
    deliver(l4Packet(6, '10.1.0.2', '10.96.0.10', 40002, 80, payload));
    s.plane.setLocalServices([{ vip: '10.96.0.10', localAddress: '10.1.0.1', ports: [{ protocol: 'tcp', port: 81 }] }]); // its port gone
    expect(addrOf(reply(l4Packet(6, '10.1.0.1', '10.1.0.2', 80, 40002, payload)), 'src')).toBe('10.1.0.1');
    expect(() => s.plane.setLocalServices([{ vip: '10.96.0.10', localAddress: 'fd00::1', ports: [] }])).toThrow(RangeError);
  });

  it('a service update keeps the flows of the services that stay (as native: regression, every update reset all); a removed service\'s are gone', () => {
    const { s, deliver, reply } = natSetup();
    const list = [
      { vip: '10.96.0.10', localAddress: '10.1.0.1', ports: [{ protocol: 'tcp' as const, port: 80 }] },
      { vip: '10.96.0.11', localAddress: '10.1.0.1', ports: [] },
    ];
    s.plane.setLocalServices(list);
    deliver(l4Packet(6, '10.1.0.2', '10.96.0.10', 40000, 80, payload));
    const back = () => addrOf(reply(l4Packet(6, '10.1.0.1', '10.1.0.2', 80, 40000, payload)), 'src');
    s.plane.setLocalServices(list); // the same list again
    expect(back()).toBe('10.96.0.10');
    s.plane.setLocalServices([...list, { vip: '10.96.0.12', localAddress: '10.1.0.1', ports: [] }]);
    expect(back()).toBe('10.96.0.10');
    s.plane.setLocalServices([list[1]!]); // removed
    expect(back()).toBe('10.1.0.1');
  });

  it('one client socket to two VIPs of one local address: the second flow is refused (nat_clash) until the first is idle past its timeout (as native)', () => {
    const { s, deliver, refused, reply } = natSetup();
    const back = () => addrOf(reply(l4Packet(6, '10.1.0.1', '10.1.0.2', 80, 40001, payload)), 'src');
    deliver(l4Packet(6, '10.1.0.2', '10.96.0.10', 40001, 80, payload));
    refused(l4Packet(6, '10.1.0.2', '10.96.0.11', 40001, 80, payload));
    expect(s.plane.peerDrops(7).nat_clash).toBe(1);
    expect(back()).toBe('10.96.0.10');
    s.clock.advance(300_000);
    expect(addrOf(deliver(l4Packet(6, '10.1.0.2', '10.96.0.11', 40001, 80, payload)), 'dst')).toBe('10.1.0.1');
    expect(back()).toBe('10.96.0.11');
    expect(only(s.plane.drops())).toEqual({ nat_clash: 1 });
  });

  it('a full table never drops a live assured flow: the new one is refused (nat_table_full); expired flows, then unassured ones, make room: UDP 30 s, TCP 10 s after FIN/RST, TCP 5 min (as native)', () => {
    const { s, deliver, refused, reply } = natSetup(4);
    s.plane.addAllowedIp(7, '10.1.0.6/32'); // another client behind the peer
    const backF = () => addrOf(reply(l4Packet(6, '10.1.0.1', '10.1.0.2', 80, 40002, payload)), 'src');
    const flow = (port: number, proto: 6 | 17 = 6, flags = 0x10) => {
      const p = l4Packet(proto, '10.1.0.6', proto === 6 ? '10.96.0.10' : '10.96.0.11', port, proto === 6 ? 80 : 5353, payload);
      if (proto === 6) p[33] = flags; // the checksum is not checked on this path
      return p;
    };
    const back = (port: number, proto: 6 | 17 = 6) => addrOf(reply(l4Packet(proto, '10.1.0.1', '10.1.0.6', proto === 6 ? 80 : 5353, port, payload)), 'src');
    // F and three more flows, each answered (and for TCP acknowledged after): assured
    deliver(l4Packet(6, '10.1.0.2', '10.96.0.10', 40002, 80, payload)); // F
    expect(backF()).toBe('10.96.0.10');
    deliver(l4Packet(6, '10.1.0.2', '10.96.0.10', 40002, 80, payload));
    s.clock.advance(1000);
    deliver(flow(50001));
    expect(back(50001)).toBe('10.96.0.10');
    deliver(flow(50001));
    deliver(flow(50002, 17));
    expect(back(50002, 17)).toBe('10.96.0.11');
    deliver(flow(50003, 6, 0x02));
    expect(back(50003)).toBe('10.96.0.10');
    deliver(flow(50003, 6, 0x11)); // FIN|ACK: closing
    refused(flow(50004, 6, 0x02));
    expect(s.plane.peerDrops(7).nat_table_full).toBe(1);
    expect(backF()).toBe('10.96.0.10');
    s.clock.advance(11_000);
    deliver(flow(50004, 6, 0x02)); // the closing flow made room
    deliver(flow(50005, 6, 0x02)); // 50004, never answered, gives way
    expect(back(50004)).toBe('10.1.0.1'); // its flow is gone
    expect(back(50005)).toBe('10.96.0.10');
    deliver(flow(50005)); // assured
    refused(flow(50006, 6, 0x02));
    s.clock.advance(20_000);
    deliver(flow(50006, 6, 0x02)); // the UDP flow made room
    expect(backF()).toBe('10.96.0.10');
    s.clock.advance(300_000);
    deliver(flow(50007, 6, 0x02));
    expect(only(s.plane.drops())).toEqual({ nat_table_full: 2 });
  });

  it("one client's unanswered SYNs cannot fill the table against another: unassured flows give way (as native)", () => {
    const { s, deliver, reply } = natSetup(4);
    s.plane.addAllowedIp(7, '10.1.0.6/32');
    for (let port = 51001; port <= 51008; port++) {
      const p = l4Packet(6, '10.1.0.6', '10.96.0.10', port, 80, payload);
      p[33] = 0x02;
      deliver(p);
    }
    deliver(l4Packet(6, '10.1.0.2', '10.96.0.10', 41000, 80, payload));
    expect(addrOf(reply(l4Packet(6, '10.1.0.1', '10.1.0.2', 80, 41000, payload)), 'src')).toBe('10.96.0.10');
    expect(only(s.plane.drops())).toEqual({});
  });
});
