/**
 * The native engine's DNAT of LocalService VIPs (native/nat.c) through the whole
 * engine, without namespaces or root: inner packets sealed with keys the test knows
 * go in over loopback UDP (receive path: open, DNAT, inject); replies go into the
 * stand-in TUN device (a second UDP socket: each datagram is one frame the send
 * thread reads) and come out sealed to the peer's endpoint, where the test opens them
 * and reads their source address. Pinned here (from a review):
 *   - a service update keeps the flows of the services that stay (it forgot every
 *     flow: the next reply of each live connection through any VIP left with the
 *     local address as its source, and the client reset the connection); the flows of
 *     a removed service, or of a port it no longer has, are gone;
 *   - a live assured flow (answered; TCP: and acknowledged after) is never evicted by
 *     a new one: a new flow whose bucket holds only live assured flows is refused and
 *     counted (nat_table_full), through a test hook that makes the table one bucket of
 *     4 ways; an unassured one (a peer's unanswered SYNs) gives way instead, so one
 *     peer cannot fill a bucket against everyone (from a review of the first version); flows expire after their idle timeouts
 *     (UDP 30 s, TCP 5 min, TCP 10 s after a FIN or RST), through a hook that ages
 *     them instead of the wait;
 *   - a client socket that sends to two VIPs of one local address keeps its first
 *     flow's VIP: the second flow is refused and counted (nat_clash), until the first
 *     has been idle past its timeout.
 * The injected packets go nowhere: the stand-in TUN refuses the write (a UDP socket
 * without a peer), so each counts as an io drop, the test's sign that the receive
 * path is done with it.
 */
import { createSocket, type Socket } from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NativePlane, openUdp, type UdpSocket } from '../../src/dataplane/native.js';
import type { LocalService } from '../../src/device/plane.js';
import { aeadSeal } from '../../src/noise/kdf.js';
import { openTransport } from '../../src/noise/transport.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, pred: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !pred(); i++) await sleep(5);
  if (!pred()) throw new Error(`timed out waiting for ${what}`);
}

/** The Internet checksum (RFC 1071) over the parts, as it goes into the header. */
function checksum(parts: Uint8Array[]): number {
  let s = 0;
  for (const b of parts) for (let i = 0; i < b.length; i += 2) s += (b[i]! << 8) | (b[i + 1] ?? 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

const ip4 = (a: string) => Uint8Array.from(a.split('.').map(Number));

/** An IPv4 TCP (with `flags`) or UDP packet with 8 payload bytes and valid checksums. */
function packet(proto: 6 | 17, src: string, sport: number, dst: string, dport: number, flags = 0x10): Uint8Array {
  const l4len = (proto === 6 ? 20 : 8) + 8;
  const p = new Uint8Array(20 + l4len);
  const dv = new DataView(p.buffer);
  p[0] = 0x45;
  dv.setUint16(2, p.length);
  p[6] = 0x40;
  p[8] = 64;
  p[9] = proto;
  p.set(ip4(src), 12);
  p.set(ip4(dst), 16);
  dv.setUint16(10, checksum([p.subarray(0, 20)]));
  dv.setUint16(20, sport);
  dv.setUint16(22, dport);
  if (proto === 6) {
    p[32] = 5 << 4;
    p[33] = flags;
    dv.setUint16(34, 65535);
  } else {
    dv.setUint16(24, l4len);
  }
  p.fill(0x61, 20 + l4len - 8);
  const pseudo = new Uint8Array(12);
  pseudo.set(p.subarray(12, 20));
  pseudo[9] = proto;
  new DataView(pseudo.buffer).setUint16(10, l4len);
  dv.setUint16(proto === 6 ? 36 : 26, checksum([pseudo, p.subarray(20)]));
  return p;
}

/** A peer of the engine as the test plays it: its socket, its keys, what it received. */
interface Client {
  peer: number;
  address: string;
  sock: Socket;
  /** The engine seals with it, the test opens. */
  engineSend: Uint8Array;
  /** The test seals with it, the engine opens. */
  engineRecv: Uint8Array;
  localIndex: number;
  counter: bigint;
  got: Uint8Array[];
}

function bound(): Promise<Socket> {
  const s = createSocket('udp4');
  return new Promise((res, rej) => {
    s.once('error', rej);
    s.bind(0, '127.0.0.1', () => res(s));
  });
}

function sendTo(sock: Socket, data: Uint8Array, port: number, address: string): Promise<void> {
  return new Promise((res, rej) => sock.send(data, port, address, (err) => (err ? rej(err) : res())));
}

describe('native DNAT of local services: flows survive service updates, are never evicted while live, never change VIP', () => {
  let plane: NativePlane;
  let fake: UdpSocket;
  let tunIn: Socket;
  const clients: Client[] = [];
  const services: LocalService[] = [
    { vip: '10.96.0.10', localAddress: '10.0.0.1', ports: [{ protocol: 'tcp', port: 80 }] },
    { vip: '10.96.0.11', localAddress: '10.0.0.1', ports: [] },
  ];
  /** Inner packets the receive path is done with: injected (io, see above) or refused by the NAT. */
  const handled = () => {
    const d = plane.drops();
    return d.io + d.nat_table_full + d.nat_clash;
  };

  async function addClient(peer: number, address: string): Promise<Client> {
    const sock = await bound();
    const c: Client = {
      peer,
      address,
      sock,
      engineSend: new Uint8Array(32).fill(peer),
      engineRecv: new Uint8Array(32).fill(peer + 100),
      localIndex: peer * 100,
      counter: 0n,
      got: [],
    };
    sock.on('message', (m) => c.got.push(new Uint8Array(m)));
    plane.addPeer(peer, { address: '127.0.0.1', port: sock.address().port });
    plane.addAllowedIp(peer, `${address}/32`);
    plane.addKeypair(peer, { localIndex: c.localIndex, remoteIndex: c.localIndex + 1, sendKey: c.engineSend, recvKey: c.engineRecv });
    plane.setSendKeypair(peer, c.localIndex);
    clients.push(c);
    return c;
  }

  /** The client sends `inner` through the tunnel; resolves once the receive path handled it. */
  async function send(c: Client, inner: Uint8Array): Promise<void> {
    const counter = c.counter++;
    const ct = aeadSeal(c.engineRecv, counter, inner);
    const m = new Uint8Array(16 + ct.length);
    const dv = new DataView(m.buffer);
    m[0] = 4;
    dv.setUint32(4, c.localIndex, true);
    dv.setBigUint64(8, counter, true);
    m.set(ct, 16);
    const before = handled();
    await sendTo(c.sock, m, plane.udp.port, '127.0.0.1');
    await until('the receive path', () => handled() > before);
  }

  /** The pod answers with `reply` (through the TUN device); resolves to its source address as the client gets it. */
  async function replySource(c: Client, reply: Uint8Array): Promise<string> {
    const n = c.got.length;
    await sendTo(tunIn, reply, fake.port, '::1');
    await until('the sealed reply', () => c.got.length > n);
    const o = openTransport(c.engineSend, c.got[n]!);
    if (!o.ok) throw new Error('the reply did not open');
    return [...o.plaintext.subarray(12, 16)].join('.');
  }

  beforeAll(async () => {
    fake = openUdp(0, { gro: false });
    plane = new NativePlane({ tun: { fd: fake.fd, name: 'none', ifindex: 0, vnetHdr: false, offloads: 0 }, udp: openUdp(0, { gro: false }), mode: 'tun' });
    plane.setLocalServices(services);
    tunIn = createSocket('udp6');
    await addClient(1, '10.1.0.5');
    await addClient(2, '10.1.0.6');
  });

  afterAll(async () => {
    for (const c of clients) c.sock.close();
    tunIn.close();
    await plane.close();
  });

  it('a service update keeps the flows of the services that stay; a removed service\'s flows are gone (regression: every update reset all)', async () => {
    const [c1] = clients;
    await send(c1!, packet(6, '10.1.0.5', 40000, '10.96.0.10', 80));
    const reply = () => replySource(c1!, packet(6, '10.0.0.1', 80, '10.1.0.5', 40000));
    expect(await reply()).toBe('10.96.0.10');
    plane.setLocalServices(services); // the same list again (the agent sends it whenever one changes)
    expect(await reply()).toBe('10.96.0.10');
    plane.setLocalServices([...services, { vip: '10.96.0.12', localAddress: '10.0.0.1', ports: [] }]); // another service added
    expect(await reply()).toBe('10.96.0.10');
    plane.setLocalServices([{ ...services[0]!, ports: [{ protocol: 'tcp', port: 81 }] }, services[1]!]); // its port gone
    expect(await reply()).toBe('10.0.0.1');
    plane.setLocalServices(services);
    expect(await reply()).toBe('10.0.0.1'); // forgotten, not hidden
    await send(c1!, packet(6, '10.1.0.5', 40000, '10.96.0.10', 80));
    expect(await reply()).toBe('10.96.0.10');
    plane.setLocalServices([services[1]!]); // the service removed
    expect(await reply()).toBe('10.0.0.1');
    plane.setLocalServices(services);
    expect(plane.drops().nat_table_full + plane.drops().nat_clash).toBe(0);
  });

  it('one client socket to two VIPs of one local address: the second flow is refused (nat_clash), the replies keep the first VIP', async () => {
    const [c1] = clients;
    const reply = () => replySource(c1!, packet(6, '10.0.0.1', 80, '10.1.0.5', 40001));
    await send(c1!, packet(6, '10.1.0.5', 40001, '10.96.0.10', 80));
    const io = plane.drops().io;
    await send(c1!, packet(6, '10.1.0.5', 40001, '10.96.0.11', 80));
    expect(plane.drops().nat_clash).toBe(1);
    expect(plane.peerDrops(1).nat_clash).toBe(1);
    expect(plane.drops().io).toBe(io); // not delivered
    expect(await reply()).toBe('10.96.0.10');
    // idle past its timeout, the first flow gives way
    plane.testAgeFlows(300_500);
    await send(c1!, packet(6, '10.1.0.5', 40001, '10.96.0.11', 80));
    expect(plane.drops().nat_clash).toBe(1);
    expect(await reply()).toBe('10.96.0.11');
  });

  it('a full bucket never evicts a live assured flow: the new flow is refused (nat_table_full); expired flows, then unassured ones, make room (UDP 30 s, TCP FIN/RST 10 s, TCP 5 min)', async () => {
    const [c1, c2] = clients;
    plane.testNatBuckets(1); // one bucket of 4 ways: every flow competes for them
    const replyF = () => replySource(c1!, packet(6, '10.0.0.1', 80, '10.1.0.5', 40002));
    const flow = (port: number, proto: 6 | 17 = 6, flags = 0x10) => packet(proto, '10.1.0.6', port, proto === 6 ? '10.96.0.10' : '10.96.0.11', proto === 6 ? 80 : 5353, flags);
    const reply = (port: number, proto: 6 | 17 = 6, flags = 0x10) => packet(proto, '10.0.0.1', proto === 6 ? 80 : 5353, '10.1.0.6', port, flags);
    // F: a client's idle keep-alive connection (SYN, SYN-ACK, ACK: assured)
    await send(c1!, packet(6, '10.1.0.5', 40002, '10.96.0.10', 80, 0x02));
    expect(await replyF()).toBe('10.96.0.10');
    await send(c1!, packet(6, '10.1.0.5', 40002, '10.96.0.10', 80));
    // another client (another peer) fills the bucket with three answered flows
    await send(c2!, flow(50001, 6, 0x02));
    expect(await replySource(c2!, reply(50001, 6, 0x12))).toBe('10.96.0.10');
    await send(c2!, flow(50001));
    await send(c2!, flow(50002, 17));
    expect(await replySource(c2!, reply(50002, 17))).toBe('10.96.0.11');
    await send(c2!, flow(50003, 6, 0x02));
    expect(await replySource(c2!, reply(50003, 6, 0x12))).toBe('10.96.0.10');
    await send(c2!, flow(50003, 6, 0x11)); // FIN|ACK: closing
    await send(c2!, flow(50004, 6, 0x02)); // the fifth: every way is live and assured: refused
    expect(plane.drops().nat_table_full).toBe(1);
    expect(plane.peerDrops(2).nat_table_full).toBe(1);
    expect(plane.peerDrops(1).nat_table_full).toBe(0);
    expect(await replyF()).toBe('10.96.0.10'); // F still gets its VIP back
    plane.testAgeFlows(11_000); // the closing TCP flow expires
    await send(c2!, flow(50004, 6, 0x02)); // takes its way (unassured: never answered)
    expect(plane.drops().nat_table_full).toBe(1);
    await send(c2!, flow(50005, 6, 0x02)); // F, 50001 and the UDP flow are assured; 50004 gives way
    expect(plane.drops().nat_table_full).toBe(1);
    expect(await replySource(c2!, reply(50004, 6, 0x12))).toBe('10.0.0.1'); // its flow is gone
    expect(await replySource(c2!, reply(50005, 6, 0x12))).toBe('10.96.0.10');
    await send(c2!, flow(50005)); // assured now
    await send(c2!, flow(50006, 6, 0x02)); // four assured, live: refused
    expect(plane.drops().nat_table_full).toBe(2);
    plane.testAgeFlows(20_000); // the UDP flow (31 s idle) expires, the TCP ones (31 s, 20 s) do not
    await send(c2!, flow(50006, 6, 0x02));
    expect(plane.drops().nat_table_full).toBe(2);
    expect(await replyF()).toBe('10.96.0.10');
    plane.testAgeFlows(300_500); // now every flow has been idle past 5 min
    await send(c2!, flow(50007, 6, 0x02));
    expect(plane.drops().nat_table_full).toBe(2);
    expect(plane.peerDrops(2).nat_table_full).toBe(2);
  });

  it("one peer's unanswered SYNs cannot fill a bucket against another client: unassured flows give way (conntrack's early drop)", async () => {
    const [c1, c2] = clients;
    plane.testNatBuckets(1);
    plane.testAgeFlows(400_000); // whatever the tests before left: expired
    const before = plane.drops().nat_table_full;
    for (let port = 51001; port <= 51008; port++) await send(c2!, packet(6, '10.1.0.6', port, '10.96.0.10', 80, 0x02));
    expect(plane.drops().nat_table_full).toBe(before); // each took an unassured one's way
    await send(c1!, packet(6, '10.1.0.5', 41000, '10.96.0.10', 80, 0x02));
    expect(plane.drops().nat_table_full).toBe(before);
    expect(await replySource(c1!, packet(6, '10.0.0.1', 80, '10.1.0.5', 41000, 0x12))).toBe('10.96.0.10');
    plane.testNatBuckets(16384);
    expect(() => plane.testNatBuckets(3)).toThrow(RangeError);
    expect(() => plane.testNatBuckets(32768)).toThrow(RangeError);
  });
});
