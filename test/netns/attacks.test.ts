/**
 * Acceptance: crafted datagrams at pod b's tenc port are dropped and counted by
 * reason (`tenc status --json` and the human `tenc status`), and the tunnel keeps
 * working afterwards. Four real `tenc pod` processes:
 *
 *   [tenc-atN-a] 10.77.0.1   [tenc-atN-b] 10.77.0.2   [tenc-atN-c] 10.77.0.3   [tenc-atN-d] 10.77.0.4
 *     peer of b                 peers a, c, d            peer of b                peer of b, but
 *        |                         |                        |                     ANOTHER project's psk
 *      veth-a ------------------ veth-b --- br0 -------- veth-c ------------------ veth-d
 *                     [tenc-atN-br] 10.77.0.254: sends the crafted datagrams;
 *                     tcpdump on veth-b captures genuine ones to b
 *
 *  1. a pings b; the capture keeps a's handshake initiation and transport datagrams
 *  2. one transport datagram of a is held back from b (nft drop in b's namespace,
 *     after the capture saw it): genuine, never delivered, its counter unseen
 *  3. from the bridge namespace: the held one with a flipped ciphertext byte (auth),
 *     a delivered one again (replay), truncated to 20 bytes and a truncated
 *     initiation (bad_header), type bytes 5 and 0 (bad_header), an unknown
 *     receiver index (unknown_index); then the held one intact (accepted: proves
 *     the tampered copy differed only by the flip) and again (replay)
 *  4. c, a legitimate peer of b with allowed IPs 10.77.0.3 and fd00:77::3 only, sends
 *     through its tunnel packets with inner source a's address, IPv4 and IPv6 (a raw
 *     socket in c): b drops them as spoofed_source, counted on peer c
 *  5. d has b as peer and b has d, but d's psk is another project's: no session
 *     (no handshake on either side, ping fails), d counts decrypt_response
 *  6. afterwards a <-> b and c -> b still work; b's endpoint for a is a's again
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  GATEWAY,
  pcapUdp,
  ping,
  pingUntil,
  POD_ADDR,
  prepare,
  projectDir,
  runTool,
  startCapture,
  startPod,
  status,
  tearDown,
  tenc,
  Topology,
  waitFor,
  writeConfig,
  type Netns,
  type PodProc,
  type StatusJson,
  type UdpDatagram,
} from './lib.js';

const PORT = 51820;
const A = POD_ADDR(1);
const B = POD_ADDR(2);
const C = POD_ADDR(3);
const D = POD_ADDR(4);

/**
 * Sends one IPv4 or IPv6 UDP packet with a chosen source through a raw socket
 * (IPPROTO_RAW: header included; for IPv4 the kernel fills length and checksum).
 * The kernel routes it by destination, so it enters the sender's tenc0.
 */
const RAW_SEND = `
import socket, struct, sys
src, dst, payload = sys.argv[1], sys.argv[2], sys.argv[3].encode()
udp = struct.pack('!HHHH', 40000, 9999, 8 + len(payload), 0) + payload
if ':' in dst:
    ip = struct.pack('!IHBB16s16s', 0x60000000, len(udp), 17, 64, socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst))
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
else:
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(ip + udp, (dst, 0))
`;

let topo: Topology;
let a: Netns;
let b: Netns;
let c: Netns;
let d: Netns;
let br: Netns;
let dir: string;
const pods: Record<string, PodProc> = {};

beforeAll(async () => {
  prepare(['ping', 'nft', 'python3']);
  topo = Topology.up(`tenc-at${process.pid % 100000}`);
  a = topo.ns('a');
  b = topo.ns('b');
  br = topo.ns('br');
  c = topo.addPod('c', 3);
  d = topo.addPod('d', 4);
  dir = projectDir('attacks', ['other-psk']); // other-psk: another project
  for (const [name, addr, psk] of [
    ['a', A, 'psk'],
    ['b', B, 'psk'],
    ['c', C, 'psk'],
    ['d', D, 'other-psk'],
  ] as const) {
    // b injects through raw sockets: the mode where a relayed packet would be routed onwards
    const dataPlane = name === 'b' ? { dataPlane: { inject: 'raw' } } : {};
    writeConfig(dir, name, { addresses: [addr.v4, addr.v6], pskFile: psk, listenPort: PORT, ...dataPlane });
  }
  const started = await Promise.all(
    ([['a', a], ['b', b], ['c', c], ['d', d]] as const).map(async ([name, ns]) => [name, await startPod(ns, join(dir, `${name}.json`))] as const),
  );
  for (const [name, p] of started) pods[name] = p;
}, 120_000);

afterAll(() => tearDown(topo, dir));

/** `x` and `y` become peers of each other (IPv4 underlay, their own addresses as allowed IPs). */
function peers(nsX: Netns, x: PodProc, X: { v4: string; v6: string }, nsY: Netns, y: PodProc, Y: { v4: string; v6: string }): void {
  tenc(nsX, 'set-peer', y.publicKey, '--endpoint', `${Y.v4}:${PORT}`, '--allowed-ips', `${Y.v4}/32,${Y.v6}/128`);
  tenc(nsY, 'set-peer', x.publicKey, '--endpoint', `${X.v4}:${PORT}`, '--allowed-ips', `${X.v4}/32,${X.v6}/128`);
}

const drop = (s: StatusJson, reason: string): number => s.drops[reason] ?? 0;
const peerOf = (s: StatusJson, key: string) => {
  const p = s.peers.find((x) => x.publicKey === key);
  if (!p) throw new Error(`no peer ${key} in status`);
  return p;
};
const peerDrop = (s: StatusJson, key: string, reason: string): number => peerOf(s, key).drops[reason] ?? 0;
const hex = (b: Buffer): string => b.toString('hex');

/** Sends the datagrams from the bridge namespace (10.77.0.254) to b's tenc port, 20 ms apart. */
function sendFromBridge(list: Buffer[]): void {
  expect(runTool(br, ['send', B.v4, String(PORT)], JSON.stringify(list.map(hex)))).toEqual({ sent: list.length });
}

describe('attacks on pod b', () => {
  let initiation: Buffer; // a's genuine handshake initiation to b
  let delivered: Buffer; // a genuine transport datagram b already received
  let held: Buffer; // a genuine transport datagram b never received

  it('captures a genuine initiation and transport datagrams of a; holds one back from b', async () => {
    const cap = await startCapture(br, 'veth-b', ['-B', '8192']);
    try {
      peers(a, pods.a!, A, b, pods.b!, B);
      expect(pingUntil(a, B.v4)).toBe(true);
    } finally {
      await cap.stop();
    }
    const first = pcapUdp(readFileSync(cap.file)).filter((x) => x.src === A.v4 && x.dport === PORT);
    cap.remove();
    initiation = first.find((x) => x.payload[0] === 1 && x.payload.length === 148)!.payload;
    expect(initiation).toBeDefined();
    delivered = first.filter((x) => x.payload[0] === 4 && x.payload.length > 32).at(-1)!.payload;
    expect(delivered).toBeDefined();

    // the held-back datagram: captured on veth-b, dropped at b's ingress by nft (counted by the rule)
    const hold = await startCapture(br, 'veth-b', ['-B', '8192']);
    let heldAll: UdpDatagram[];
    try {
      b.exec('nft', 'add table inet accept_hold');
      b.exec('nft', 'add chain inet accept_hold pre { type filter hook prerouting priority -300 ; }');
      b.exec('nft', `add rule inet accept_hold pre ip saddr ${A.v4} udp dport ${PORT} counter drop`);
      expect(ping(a, B.v4, 1)).toBe(false);
    } finally {
      await hold.stop();
    }
    const rule = b.exec('nft', 'list table inet accept_hold');
    b.exec('nft', 'delete table inet accept_hold');
    heldAll = pcapUdp(readFileSync(hold.file)).filter((x) => x.src === A.v4 && x.dport === PORT && x.payload[0] === 4 && x.payload.length > 32);
    hold.remove();
    expect(heldAll).toHaveLength(1); // the one echo request
    expect(rule).toMatch(/counter packets 1 /);
    held = heldAll[0]!.payload;
  });

  it('tampered, replayed, truncated, wrong type and unknown index: dropped and counted by reason', async () => {
    const keyA = pods.a!.publicKey;
    const before = status(b);
    const tampered = Buffer.from(held);
    tampered[16 + 5] ^= 0x01; // one ciphertext bit
    const type5 = Buffer.from(delivered);
    type5[0] = 5;
    const type0 = Buffer.from(delivered);
    type0[0] = 0;
    const unknownIndex = Buffer.from(held);
    unknownIndex.writeUInt32LE((unknownIndex.readUInt32LE(4) ^ 0xffffffff) >>> 0, 4);
    sendFromBridge([tampered, delivered, delivered.subarray(0, 20), initiation.subarray(0, 100), type5, type0, unknownIndex]);
    let after = before;
    const expected = { auth: 1, replay: 1, bad_header: 4, unknown_index: 1 };
    const deltas = () => Object.fromEntries(Object.keys(expected).map((k) => [k, drop(after, k) - drop(before, k)]));
    await waitFor(() => {
      after = status(b);
      return deltas().unknown_index >= 1 && deltas().bad_header >= 4;
    });
    expect(deltas()).toEqual(expected);
    // per peer: what names one of a's keypairs
    expect(peerDrop(after, keyA, 'auth') - peerDrop(before, keyA, 'auth')).toBe(1);
    expect(peerDrop(after, keyA, 'replay') - peerDrop(before, keyA, 'replay')).toBe(1);
    expect(peerOf(after, keyA).rxBytes).toBe(peerOf(before, keyA).rxBytes); // nothing accepted
    // the human form shows the same counts
    const text = tenc(b, 'status');
    expect(text).toMatch(new RegExp(`^  drops: .*auth ${drop(after, 'auth')}`, 'm'));
    expect(text).toMatch(new RegExp(`bad_header ${drop(after, 'bad_header')}`));
    expect(text).toMatch(new RegExp(`unknown_index ${drop(after, 'unknown_index')}`));
    expect(text).toMatch(new RegExp(`peer: ${keyA.replace(/[+/]/g, '\\$&')}[\\s\\S]*?  drops: .*replay ${peerDrop(after, keyA, 'replay')}`));

    // the untampered original is accepted (so the tampered copy failed only for its flipped bit) ...
    sendFromBridge([held]);
    await waitFor(() => {
      after = status(b);
      return peerOf(after, keyA).rxBytes > peerOf(before, keyA).rxBytes;
    });
    expect(peerOf(after, keyA).rxBytes - peerOf(before, keyA).rxBytes).toBeGreaterThanOrEqual(held.length);
    expect(peerOf(after, keyA).endpoint).toMatch(/^10\.77\.0\.254:\d+$/); // authentic: b roamed to the sender
    // ... and once more is a replay
    const mid = status(b);
    sendFromBridge([held]);
    await waitFor(() => {
      after = status(b);
      return drop(after, 'replay') > drop(mid, 'replay');
    });
    expect(drop(after, 'replay') - drop(mid, 'replay')).toBe(1);
    expect(drop(after, 'auth')).toBe(drop(mid, 'auth'));
  });

  it('legit traffic a <-> b works after the attacks; b roams back to a', () => {
    expect(ping(a, B.v4)).toBe(true);
    expect(ping(b, A.v4)).toBe(true);
    expect(ping(a, B.v6)).toBe(true);
    expect(peerOf(status(b), pods.a!.publicKey).endpoint).toBe(`${A.v4}:${PORT}`);
  });

  it('spoofed inner source: c (a legitimate peer) sends as a; b drops it as spoofed_source on peer c', async () => {
    peers(c, pods.c!, C, b, pods.b!, B);
    expect(pingUntil(c, B.v4)).toBe(true);
    const keyC = pods.c!.publicKey;
    const before = status(b);
    c.exec('python3', '-c', RAW_SEND, A.v4, B.v4, 'spoofed-from-c');
    c.exec('python3', '-c', RAW_SEND, A.v6, B.v6, 'spoofed-from-c');
    let after = before;
    await waitFor(() => {
      after = status(b);
      return drop(after, 'spoofed_source') >= drop(before, 'spoofed_source') + 2;
    });
    expect(drop(after, 'spoofed_source') - drop(before, 'spoofed_source')).toBe(2);
    expect(peerDrop(after, keyC, 'spoofed_source') - peerDrop(before, keyC, 'spoofed_source')).toBe(2);
    expect(peerDrop(after, pods.a!.publicKey, 'spoofed_source')).toBe(0);
    expect(peerOf(after, keyC).rxBytes).toBeGreaterThan(peerOf(before, keyC).rxBytes); // it did authenticate
    expect(tenc(b, 'status')).toMatch(new RegExp(`  drops: .*spoofed_source ${drop(after, 'spoofed_source')}`));
    // c's own address still passes
    c.exec('python3', '-c', RAW_SEND, C.v4, B.v4, 'genuine-from-c');
    expect(ping(c, B.v4)).toBe(true);
    expect(drop(status(b), 'spoofed_source')).toBe(drop(after, 'spoofed_source'));
  });

  it('inner destination not of b (regression: raw injection relayed it to the main table in plaintext): dropped as bad_destination', async () => {
    // c, a legitimate peer of b, routes the gateway's addresses into its tunnel to b
    tenc(c, 'set-peer', pods.b!.publicKey, '--allowed-ips', `${B.v4}/32,${B.v6}/128,${GATEWAY.v4}/32,${GATEWAY.v6}/128`);
    expect(c.exec('ip', 'route', 'get', GATEWAY.v4)).toContain('dev tenc0');
    const keyC = pods.c!.publicKey;
    const before = status(b);
    const cap = await startCapture(br, 'veth-b', ['-B', '8192', 'udp', 'port', '9999']);
    try {
      c.exec('python3', '-c', RAW_SEND, C.v4, GATEWAY.v4, 'relay-me-v4');
      c.exec('python3', '-c', RAW_SEND, C.v6, GATEWAY.v6, 'relay-me-v6');
      await waitFor(() => drop(status(b), 'bad_destination') >= drop(before, 'bad_destination') + 2);
      await new Promise((r) => setTimeout(r, 300)); // anything b forwarded would be on the wire by now
    } finally {
      await cap.stop();
    }
    const leaked = cap.read().filter((l) => / IP6? /.test(l));
    cap.remove();
    expect(leaked, 'plaintext relayed by b onto its veth').toEqual([]);
    const after = status(b);
    expect(peerDrop(after, keyC, 'bad_destination') - peerDrop(before, keyC, 'bad_destination')).toBe(2);
    expect(peerOf(after, keyC).rxBytes).toBeGreaterThan(peerOf(before, keyC).rxBytes); // it did authenticate
    // c's traffic to b itself is still delivered
    tenc(c, 'set-peer', pods.b!.publicKey, '--allowed-ips', `${B.v4}/32,${B.v6}/128`);
    expect(ping(c, B.v4)).toBe(true);
  });

  it("a pod with another project's psk gets no session", async () => {
    peers(d, pods.d!, D, b, pods.b!, B);
    expect(ping(d, B.v4, 2)).toBe(false);
    expect(ping(b, D.v4, 1)).toBe(false);
    let sd = status(d);
    await waitFor(() => {
      sd = status(d);
      return (sd.handshakeFailures.decrypt_response ?? 0) > 0;
    });
    expect(sd.handshakeFailures.decrypt_response).toBeGreaterThan(0);
    expect(peerOf(sd, pods.b!.publicKey).latestHandshake).toBeNull();
    expect(peerOf(status(b), pods.d!.publicKey).latestHandshake).toBeNull();
    expect(tenc(d, 'status')).toMatch(/^  handshake failures: .*decrypt_response \d+/m);
    expect(tenc(d, 'status')).not.toMatch(/latest handshake/);
  });

  it('after everything: a <-> b and c -> b still work, all pods alive', () => {
    expect(ping(a, B.v4)).toBe(true);
    expect(ping(b, A.v6)).toBe(true);
    expect(ping(c, B.v4)).toBe(true);
    for (const p of Object.values(pods)) expect(p.child.exitCode).toBeNull();
  });
});
