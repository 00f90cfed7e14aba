/**
 * The native data plane (native/engine_*.c via src/dataplane/native.ts) between two
 * real network namespaces, with STATIC keypairs (no handshake: that is the control
 * plane's job and tested elsewhere). Root only; fails (never skips) when a tool is
 * missing after netns-scripts/deps.sh.
 *
 *   ns A (tenc-eng-a-PID)                         ns B (tenc-eng-b-PID)
 *   tenc0 10.202.0.1/32 fd00:202::1/128           tenc0 10.202.0.2/32 fd00:202::2/128
 *     |  engine-child.ts: engine, peer 1            |  engine-child.ts: engine, peer 7
 *     |  UDP :51820                                 |  UDP :51820
 *   veA 10.201.0.1/24  <-------- veth -------->   veB 10.201.0.2/24
 *   (tcpdump -i veA)
 *   Both: policy routing as wg-quick does it (not fwmark 0x1e7d -> table 51820:
 *   default dev tenc0), so the engine's own UDP only escapes because of SO_MARK.
 *
 * For each inject mode ('raw', 'tun') with offloads off and on:
 *   1. ping IPv4 and IPv6 in both directions (payload pattern = a marker)
 *   2. TCP transfer IPv4 and IPv6 in both directions, sha256 compared
 *   3. the capture on the veth holds only UDP between the two tenc ports (and
 *      ARP), and never the marker bytes
 *   4. crafted datagrams sent from B's engine socket: bad header, unknown index,
 *      tampered, replayed, spoofed inner source, bad inner packet, keepalive,
 *      handshake message -> counted by reason on A (global and per peer), event
 *   5. counters: A's tx equals B's rx exactly, and the other way round
 *   6. DNAT: B connects to a LocalService VIP of A (TCP port-listed over IPv4, all
 *      ports over IPv6); A's server listens on its own address
 * Then once (raw mode): a peer without a send keypair queues (128, then
 * queue_full), asks for one handshake, flushQueue drops as no_session, and
 * setSendKeypair sends the queue.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildConfig } from './engine-child.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const NS_A = `tenc-eng-a-${process.pid}`;
const NS_B = `tenc-eng-b-${process.pid}`;
const PORT = 51820;
const OUTER = { a: '10.201.0.1', b: '10.201.0.2' };
const OUTER6 = { a: 'fd00:201::1', b: 'fd00:201::2' };
const INNER4 = { a: '10.202.0.1', b: '10.202.0.2' };
const INNER6 = { a: 'fd00:202::1', b: 'fd00:202::2' };
const PING_MARKER = 'tenc-mark'; // ping -p fills the payload with it
const TCP_MARKER = 'TENC-PLAINTEXT-MARKER-';
const PEER_ON_A = 1;
const PEER_ON_B = 7;
const CRAFT_INDEX = 0x1000; // receive-only keypair on A for crafted datagrams
const FWMARK = 0x1e7d;
const VIP4 = '10.203.0.10';
const VIP6 = 'fd00:203::10';

function sh(cmd: string, args: string[], opts: { timeout?: number } = {}): string {
  return execFileSync(cmd, args, {
    encoding: 'utf8',
    timeout: opts.timeout ?? 20_000,
    maxBuffer: 1 << 28,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}
const inNs = (ns: string, args: string[], timeout?: number): string => sh('ip', ['netns', 'exec', ns, ...args], { timeout });

function requireTools(): void {
  const tools = ['ip', 'ping', 'tcpdump', 'sysctl', 'python3'];
  const missing = () => tools.filter((t) => !['/usr/sbin', '/usr/bin', '/sbin', '/bin'].some((d) => existsSync(join(d, t))));
  if (missing().length) sh('bash', [join(root, 'netns-scripts', 'deps.sh')], { timeout: 300_000 });
  const still = missing();
  if (still.length) throw new Error(`engine netns test needs ${still.join(', ')} (netns-scripts/deps.sh did not install them)`);
  if (process.getuid?.() !== 0) throw new Error('engine netns test must run as root');
}

/** A line-oriented JSON child (engine-child.ts, tcp.mjs, tcpdump). */
class Proc {
  readonly p: ChildProcess;
  private lines: string[] = [];
  private waiters: (() => void)[] = [];
  stderr = '';
  exited: Promise<number | null>;
  private closed = false;

  constructor(ns: string, argv: string[]) {
    this.p = spawn('ip', ['netns', 'exec', ns, ...argv], { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] });
    let buf = '';
    this.p.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        this.lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
        this.waiters.splice(0).forEach((w) => w());
      }
    });
    this.p.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr += d;
      this.waiters.splice(0).forEach((w) => w());
    });
    this.exited = new Promise((res) => this.p.on('exit', (code) => {
      this.waiters.splice(0).forEach((w) => w());
      res(code);
    }));
    // 'exit' can come before the last stdout data: a child is done once its pipes have closed too
    this.p.once('close', () => {
      this.closed = true;
      this.waiters.splice(0).forEach((w) => w());
    });
  }

  /** Next stdout line parsed as JSON. */
  async next<T = Record<string, unknown>>(timeoutMs = 15_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    while (!this.lines.length) {
      if (this.closed) throw new Error(`child exited ${this.p.exitCode}: ${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`child timed out; stderr: ${this.stderr}`);
      await new Promise<void>((res) => {
        this.waiters.push(res);
        setTimeout(res, 200);
      });
    }
    return JSON.parse(this.lines.shift()!) as T;
  }

  async waitStderr(text: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.stderr.includes(text)) {
      if (Date.now() > deadline || this.p.exitCode !== null) throw new Error(`no "${text}" in: ${this.stderr}`);
      await new Promise((res) => setTimeout(res, 50));
    }
  }

  async cmd<T = Record<string, unknown>>(m: object): Promise<T> {
    this.p.stdin!.write(JSON.stringify(m) + '\n');
    const r = await this.next<T & { error?: string }>();
    if (r.error) throw new Error(r.error);
    return r;
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.p.exitCode !== null || this.p.signalCode !== null) return;
    this.p.kill(signal);
    const t = setTimeout(() => this.p.kill('SIGKILL'), 3000);
    await this.exited;
    clearTimeout(t);
  }
}

interface Stats {
  peer: { txBytes: number; rxBytes: number; txPackets: number; rxPackets: number; lastRxDataMs: number; lastTxDataMs: number };
  drops: Record<string, number>;
  peerDrops: Record<string, number>;
  stats: { handshakesReceived: number; keepalivesReceived: number };
  events: { type: string; peer?: number; localIndex?: number; data?: string; from?: { address: string; port: number } }[];
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** A transport data message (WireGuard whitepaper §5.4.6) sealed with `key`. */
function transport(receiver: number, counter: bigint, key: Uint8Array, plaintext: Uint8Array): Buffer {
  const padded = Buffer.alloc(Math.ceil(plaintext.length / 16) * 16);
  padded.set(plaintext);
  const nonce = Buffer.alloc(12);
  nonce.writeBigUInt64LE(counter, 4);
  const sealed = chacha20poly1305(key, nonce).encrypt(padded);
  const hdr = Buffer.alloc(16);
  hdr[0] = 4;
  hdr.writeUInt32LE(receiver, 4);
  hdr.writeBigUInt64LE(counter, 8);
  return Buffer.concat([hdr, sealed]);
}

/** An IPv4/UDP packet src -> dst:9 (RFC 791 header with checksum, UDP checksum 0). */
function udp4(src: string, dst: string, payload: string): Buffer {
  const data = Buffer.from(payload);
  const p = Buffer.alloc(28 + data.length);
  p[0] = 0x45;
  p.writeUInt16BE(p.length, 2);
  p[8] = 64;
  p[9] = 17;
  src.split('.').forEach((o, i) => (p[12 + i] = Number(o)));
  dst.split('.').forEach((o, i) => (p[16 + i] = Number(o)));
  let s = 0;
  for (let i = 0; i < 20; i += 2) s += p.readUInt16BE(i);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  p.writeUInt16BE(~s & 0xffff, 10);
  p.writeUInt16BE(40000, 20);
  p.writeUInt16BE(9, 22);
  p.writeUInt16BE(8 + data.length, 24);
  data.copy(p, 28);
  return p;
}

const tmp = mkdtempSync(join(tmpdir(), 'tenc-engine-test-'));

beforeAll(() => {
  requireTools();
  for (const ns of [NS_A, NS_B]) {
    sh('ip', ['netns', 'add', ns]);
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }
  sh('ip', ['link', 'add', 'veA', 'netns', NS_A, 'type', 'veth', 'peer', 'name', 'veB', 'netns', NS_B]);
  for (const [ns, dev, addr] of [
    [NS_A, 'veA', OUTER.a],
    [NS_B, 'veB', OUTER.b],
  ] as const) {
    inNs(ns, ['sysctl', '-qw', `net.ipv6.conf.${dev}.disable_ipv6=1`]);
    sh('ip', ['-n', ns, 'addr', 'add', `${addr}/24`, 'dev', dev]);
    sh('ip', ['-n', ns, 'link', 'set', dev, 'up']);
    for (const fam of ['-4', '-6']) {
      sh('ip', [fam, '-n', ns, 'rule', 'add', 'not', 'fwmark', String(FWMARK), 'table', '51820']);
      sh('ip', [fam, '-n', ns, 'rule', 'add', 'table', 'main', 'suppress_prefixlength', '0']);
    }
  }
});

afterAll(() => {
  for (const ns of [NS_A, NS_B]) {
    try {
      sh('ip', ['netns', 'del', ns]);
    } catch {
      /* already gone */
    }
  }
  rmSync(tmp, { recursive: true, force: true });
  const left = sh('ip', ['netns', 'list']);
  expect(left).not.toContain(NS_A);
  expect(left).not.toContain(NS_B);
});

interface Keys {
  ab: Buffer; // A sends, B receives
  ba: Buffer;
  craft: Buffer; // B -> A, crafted by the test
}

type Outer = { a: string; b: string };

function childConfig(side: 'a' | 'b', mode: 'raw' | 'tun', offloads: boolean, keys: Keys, noSend: boolean, outer: Outer): ChildConfig {
  const other = side === 'a' ? 'b' : 'a';
  return {
    mode,
    offloads,
    listenPort: PORT,
    fwmark: FWMARK,
    peer: {
      id: side === 'a' ? PEER_ON_A : PEER_ON_B,
      endpoint: { address: outer[other], port: PORT },
      // B reaches A's service VIPs through A.
      allowedIps: [`${INNER4[other]}/32`, `${INNER6[other]}/128`, ...(side === 'b' ? [`${VIP4}/32`, `${VIP6}/128`] : [])],
    },
    keypair:
      side === 'a'
        ? { localIndex: 0x111, remoteIndex: 0x222, sendKey: hex(keys.ab), recvKey: hex(keys.ba) }
        : { localIndex: 0x222, remoteIndex: 0x111, sendKey: hex(keys.ba), recvKey: hex(keys.ab) },
    extra: side === 'a' ? [{ localIndex: CRAFT_INDEX, remoteIndex: 0x333, sendKey: hex(randomBytes(32)), recvKey: hex(keys.craft) }] : [],
    noSend,
  };
}

/** Starts both engine children, then addresses and routes tenc0 on both sides. */
async function startPair(mode: 'raw' | 'tun', offloads: boolean, keys: Keys, noSendA = false, outer: Outer = OUTER): Promise<[Proc, Proc]> {
  const child = (ns: string, side: 'a' | 'b') =>
    new Proc(ns, [
      'node',
      '--import',
      './test/netns/engine-register.mjs',
      'test/netns/engine-child.ts',
      JSON.stringify(childConfig(side, mode, offloads, keys, side === 'a' && noSendA, outer)),
    ]);
  const a = child(NS_A, 'a');
  const b = child(NS_B, 'b');
  const [ra, rb] = await Promise.all([a.next<{ ready: boolean; tun: { vnetHdr: boolean } }>(30_000), b.next(30_000)]);
  expect(ra.ready && rb.ready).toBe(true);
  expect(ra.tun.vnetHdr).toBe(offloads);
  for (const [ns, side, other] of [
    [NS_A, 'a', 'b'],
    [NS_B, 'b', 'a'],
  ] as const) {
    sh('ip', ['-n', ns, 'addr', 'add', `${INNER4[side]}/32`, 'dev', 'tenc0']);
    sh('ip', ['-n', ns, 'addr', 'add', `${INNER6[side]}/128`, 'dev', 'tenc0', 'nodad']);
    sh('ip', ['-n', ns, 'link', 'set', 'tenc0', 'mtu', '1420', 'up']);
    sh('ip', ['-n', ns, 'route', 'add', `${INNER4[other]}/32`, 'dev', 'tenc0']);
    sh('ip', ['-n', ns, 'route', 'add', `${INNER6[other]}/128`, 'dev', 'tenc0']);
    sh('ip', ['-4', '-n', ns, 'route', 'add', 'default', 'dev', 'tenc0', 'table', '51820']);
    sh('ip', ['-6', '-n', ns, 'route', 'add', 'default', 'dev', 'tenc0', 'table', '51820']);
  }
  sh('ip', ['-n', NS_B, 'route', 'add', `${VIP4}/32`, 'dev', 'tenc0']);
  sh('ip', ['-n', NS_B, 'route', 'add', `${VIP6}/128`, 'dev', 'tenc0']);
  return [a, b];
}

async function stopPair(procs: (Proc | undefined)[]): Promise<void> {
  for (const p of procs) {
    if (!p) continue;
    try {
      p.p.stdin!.write(JSON.stringify({ cmd: 'close' }) + '\n');
      await Promise.race([p.exited, new Promise((r) => setTimeout(r, 3000))]);
    } finally {
      await p.stop('SIGKILL');
    }
  }
}

const runs = [
  { mode: 'raw', offloads: false },
  { mode: 'tun', offloads: false },
  { mode: 'raw', offloads: true },
  { mode: 'tun', offloads: true },
] as const;

describe.each(runs)('engine between namespaces: $mode mode, offloads $offloads', ({ mode, offloads }) => {
  const keys: Keys = { ab: randomBytes(32), ba: randomBytes(32), craft: randomBytes(32) };
  const keyCraft = keys.craft;
  let a: Proc;
  let b: Proc;
  let dump: Proc;
  const pcap = join(tmp, `${mode}-${offloads}.pcap`);

  beforeAll(async () => {
    dump = new Proc(NS_A, ['tcpdump', '-i', 'veA', '-s', '0', '-B', '32768', '-U', '-n', '-w', pcap]);
    await dump.waitStderr('listening on');
    [a, b] = await startPair(mode, offloads, keys);
    await a.cmd({
      cmd: 'services',
      services: [
        { vip: VIP4, localAddress: INNER4.a, ports: [{ protocol: 'tcp', port: 5002 }] },
        { vip: VIP6, localAddress: INNER6.a, ports: [] },
      ],
    });
  }, 60_000);

  afterAll(async () => {
    await stopPair([a, b]);
    await dump?.stop('SIGTERM');
  });

  it.each([
    ['A -> B', INNER4.b, NS_A],
    ['B -> A', INNER4.a, NS_B],
    ['A -> B', INNER6.b, NS_A],
    ['B -> A', INNER6.a, NS_B],
  ])('ping %s %s', (_dir, dst, ns) => {
    const out = inNs(ns, ['ping', '-c', '3', '-i', '0.2', '-W', '2', '-p', Buffer.from(PING_MARKER).toString('hex'), dst]);
    expect(out).toMatch(/3 received/);
  });

  it.each([
    ['A -> B', INNER4.b, NS_A, NS_B],
    ['B -> A', INNER4.a, NS_B, NS_A],
    ['A -> B', INNER6.b, NS_A, NS_B],
    ['B -> A', INNER6.a, NS_B, NS_A],
  ])('TCP transfer %s to %s', async (_dir, dst, from, to) => {
    const server = new Proc(to, ['node', join(here, 'tcp.mjs'), 'server', dst, '5001']);
    try {
      expect(await server.next()).toEqual({ listening: true });
      const client = new Proc(from, ['node', join(here, 'tcp.mjs'), 'client', dst, '5001', String(4 << 20), '0', TCP_MARKER]);
      const sent = await client.next<{ bytes: number; sha256: string }>(20_000);
      const got = await server.next<{ bytes: number; sha256: string }>(20_000);
      expect(got).toEqual(sent);
      expect(sent.bytes).toBe(4 << 20);
    } finally {
      await server.stop();
    }
  });

  it.each([
    ['A -> B', INNER4.b, NS_A, NS_B],
    ['B -> A', INNER6.a, NS_B, NS_A],
    ['B -> A service VIP (all ports DNAT)', VIP6, NS_B, NS_A, INNER6.a],
  ])('UDP with UDP_SEGMENT (a USO super-packet into the TUN device) %s %s', async (_dir, dst, from, to, listen = dst) => {
    const server = new Proc(to, ['python3', join(here, 'engine-udp.py'), 'server', listen, '5003', '80']);
    try {
      expect(await server.next()).toEqual({ listening: true });
      const client = new Proc(from, ['python3', join(here, 'engine-udp.py'), 'client', dst, '5003', '1000', '8000', '10']);
      const sent = await client.next<{ count: number; bytes: number; digest: string }>(20_000);
      expect(sent.count).toBe(80);
      expect(await server.next(20_000)).toEqual(sent);
    } finally {
      await server.stop();
    }
  });

  it.each([
    [VIP4, INNER4.a],
    [VIP6, INNER6.a],
  ])('DNAT: B -> service VIP %s reaches A\'s server on %s and the replies come back from the VIP', async (vip, local) => {
    const server = new Proc(NS_A, ['node', join(here, 'tcp.mjs'), 'server', local, '5002']);
    try {
      expect(await server.next()).toEqual({ listening: true });
      const client = new Proc(NS_B, ['node', join(here, 'tcp.mjs'), 'client', vip, '5002', String(1 << 20), '0', TCP_MARKER]);
      const sent = await client.next<{ bytes: number; sha256: string }>(20_000);
      expect(await server.next(20_000)).toEqual(sent);
    } finally {
      await server.stop();
    }
  });

  it('counts crafted datagrams by reason on the receiving side', async () => {
    const before = await a.cmd<Stats>({ cmd: 'stats' });
    const send = (m: Uint8Array) => b.cmd({ cmd: 'send', hex: hex(m) });
    const good = udp4(INNER4.b, INNER4.a, 'crafted');
    await send(Buffer.from([9, 0, 0, 0, ...randomBytes(40)])); // bad_header: type 9
    await send(transport(CRAFT_INDEX, 1n, keyCraft, good).subarray(0, 20)); // bad_header: short
    await send(transport(0xdeadbeef, 1n, keyCraft, good)); // unknown_index
    const tampered = transport(CRAFT_INDEX, 5n, keyCraft, good);
    tampered[20] ^= 1;
    await send(tampered); // auth
    await send(transport(CRAFT_INDEX, 5n, keyCraft, good)); // accepted
    await send(transport(CRAFT_INDEX, 5n, keyCraft, good)); // replay
    await send(transport(CRAFT_INDEX, 6n, keyCraft, udp4('10.202.0.99', INNER4.a, 'spoof'))); // spoofed_source
    await send(transport(CRAFT_INDEX, 7n, keyCraft, Buffer.from('not an ip packet!'))); // bad_inner
    await send(transport(CRAFT_INDEX, 8n, keyCraft, new Uint8Array(0))); // keepalive
    const initiation = Buffer.concat([Buffer.from([1, 0, 0, 0]), randomBytes(144)]);
    await send(initiation); // handshake event
    let after = before;
    for (let i = 0; i < 50; i++) {
      after = await a.cmd<Stats>({ cmd: 'stats' });
      // Events reach JS after the counters move: wait for both.
      const seen = after.events.some((e) => e.type === 'handshake' && e.data === hex(initiation));
      if (seen && after.stats.keepalivesReceived > before.stats.keepalivesReceived) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const delta = (k: string) => after.drops[k]! - before.drops[k]!;
    const peerDelta = (k: string) => after.peerDrops[k]! - before.peerDrops[k]!;
    expect({
      bad_header: delta('bad_header'),
      unknown_index: delta('unknown_index'),
      auth: delta('auth'),
      replay: delta('replay'),
      spoofed_source: delta('spoofed_source'),
      bad_inner: delta('bad_inner'),
    }).toEqual({ bad_header: 2, unknown_index: 1, auth: 1, replay: 1, spoofed_source: 1, bad_inner: 1 });
    // Per peer: only what authenticates or names one of its keypairs.
    expect([peerDelta('auth'), peerDelta('replay'), peerDelta('spoofed_source'), peerDelta('bad_inner'), peerDelta('bad_header')]).toEqual([1, 1, 1, 1, 0]);
    expect(after.stats.keepalivesReceived - before.stats.keepalivesReceived).toBe(1);
    // accepted + spoofed + bad_inner + keepalive authenticate: 4 messages
    expect(after.peer.rxPackets - before.peer.rxPackets).toBe(4);
    expect(after.events).toContainEqual({ type: 'keypair_confirmed', peer: PEER_ON_A, localIndex: CRAFT_INDEX });
    expect(after.events).toContainEqual({ type: 'handshake', data: hex(initiation), from: { address: OUTER.b, port: PORT } });
    expect(after.events.filter((e) => e.type === 'endpoint')).toEqual([]);
  });

  it('keepalive from the control plane arrives as a keepalive', async () => {
    const before = await b.cmd<Stats>({ cmd: 'stats' });
    expect(await a.cmd({ cmd: 'keepalive' })).toEqual({ sent: true });
    let after = before;
    for (let i = 0; i < 40 && after.stats.keepalivesReceived === before.stats.keepalivesReceived; i++) {
      await new Promise((r) => setTimeout(r, 50));
      after = await b.cmd<Stats>({ cmd: 'stats' });
    }
    expect(after.stats.keepalivesReceived - before.stats.keepalivesReceived).toBe(1);
    expect(after.peer.lastRxDataMs).toBe(before.peer.lastRxDataMs);
  });

  it("counters: A's transmit equals B's receive exactly, and back", async () => {
    await new Promise((r) => setTimeout(r, 300)); // let in-flight packets land
    const sa = await a.cmd<Stats>({ cmd: 'stats' });
    const sb = await b.cmd<Stats>({ cmd: 'stats' });
    expect(sa.peer.txPackets).toBeGreaterThan(3000); // 4 MiB each way at most 1420 B per packet
    expect(sb.peer.rxPackets).toBe(sa.peer.txPackets);
    expect(sb.peer.rxBytes).toBe(sa.peer.txBytes);
    // B's receive also saw nothing crafted; A's receive = B's sends + the crafted ones.
    expect(sa.peer.rxPackets).toBe(sb.peer.txPackets + 4);
    expect(sa.peer.lastRxDataMs).toBeGreaterThan(0);
    expect(sa.drops.io).toBe(0);
    expect(sb.drops.io).toBe(0);
  });

  it('the veth carried only UDP between the tenc ports, never the markers', async () => {
    await dump.stop('SIGTERM');
    const text = sh('tcpdump', ['-n', '-r', pcap], { timeout: 20_000 });
    const lines = text.split('\n').filter((l) => l.trim());
    // The capture saw the transfers (4 x 4 MiB; GSO datagrams count whole). A busy
    // machine can make tcpdump drop some, hence half.
    const bytes = lines.reduce((n, l) => n + Number(/length (\d+)$/.exec(l)?.[1] ?? 0), 0);
    expect(bytes).toBeGreaterThan(8 << 20);
    const udp = new RegExp(`IP (${OUTER.a}|${OUTER.b})\\.${PORT} > (${OUTER.a}|${OUTER.b})\\.${PORT}: UDP, length \\d+$`);
    const bad = lines.filter((l) => !udp.test(l) && !/ ARP, /.test(l));
    expect(bad).toEqual([]);
    const raw = readFileSync(pcap);
    expect(raw.includes(Buffer.from(PING_MARKER))).toBe(false);
    expect(raw.includes(Buffer.from(TCP_MARKER))).toBe(false);
    expect(raw.includes(Buffer.from('crafted'))).toBe(false);
  });
});

describe('engine between namespaces: a peer without a send keypair (outer IPv6)', () => {
  const keys: Keys = { ab: randomBytes(32), ba: randomBytes(32), craft: randomBytes(32) };
  let a: Proc;
  let b: Proc;
  const ping = (count: number): void => {
    try {
      inNs(NS_A, ['ping', '-c', String(count), '-i', '0.002', '-W', '1', '-q', INNER4.b]);
    } catch {
      /* no replies while queued: ping exits 1 */
    }
  };
  const stats = async (p: Proc) => p.cmd<Stats>({ cmd: 'stats' });

  beforeAll(async () => {
    // The outer addresses are IPv6 here: the dual-stack socket with native IPv6 peers.
    for (const [ns, dev, addr] of [
      [NS_A, 'veA', OUTER6.a],
      [NS_B, 'veB', OUTER6.b],
    ] as const) {
      inNs(ns, ['sysctl', '-qw', `net.ipv6.conf.${dev}.disable_ipv6=0`]);
      sh('ip', ['-n', ns, 'addr', 'add', `${addr}/64`, 'dev', dev, 'nodad']);
    }
    [a, b] = await startPair('raw', true, keys, true, OUTER6);
  }, 60_000);

  afterAll(async () => {
    await stopPair([a, b]);
  });

  it('queues 128 packets, counts the rest queue_full, asks for one handshake', async () => {
    ping(200);
    const s = await stats(a);
    expect(s.peer.txPackets).toBe(0);
    expect(s.peerDrops.queue_full).toBe(200 - 128);
    expect(s.events.filter((e) => e.type === 'need_handshake')).toEqual([{ type: 'need_handshake', peer: PEER_ON_A }]);
  });

  it('flushQueue drops the queue as no_session; the next packet asks again', async () => {
    await a.cmd({ cmd: 'flush' });
    expect((await stats(a)).peerDrops.no_session).toBe(128);
    ping(5);
    const s = await stats(a);
    expect(s.events.filter((e) => e.type === 'need_handshake')).toHaveLength(2);
    expect(s.peer.txPackets).toBe(0);
  });

  it('setSendKeypair sends the queued packets, then traffic flows', async () => {
    const before = await stats(b);
    await a.cmd({ cmd: 'setSend', localIndex: 0x111 });
    expect((await stats(a)).peer.txPackets).toBe(5);
    let after = before;
    for (let i = 0; i < 40 && after.peer.rxPackets < before.peer.rxPackets + 5; i++) {
      await new Promise((r) => setTimeout(r, 50));
      after = await stats(b);
    }
    expect(after.peer.rxPackets - before.peer.rxPackets).toBe(5);
    const out = inNs(NS_A, ['ping', '-c', '3', '-i', '0.2', '-W', '2', INNER4.b]);
    expect(out).toMatch(/3 received/);
    expect((await stats(a)).events.filter((e) => e.type === 'need_handshake')).toHaveLength(2);
  });

  it('an authentic datagram from a new port moves the endpoint (event); setEndpoint moves it back', async () => {
    const msg = transport(CRAFT_INDEX, 1n, keys.craft, udp4(INNER4.b, INNER4.a, 'roam'));
    const js = `const s=require('dgram').createSocket('udp6');s.bind(40000,()=>s.send(Buffer.from('${hex(msg)}','hex'),${PORT},'${OUTER6.a}',()=>s.close()))`;
    inNs(NS_B, ['node', '-e', js]);
    const moved = { type: 'endpoint', peer: PEER_ON_A, endpoint: { address: OUTER6.b, port: 40000 } };
    let s = await stats(a);
    for (let i = 0; i < 40 && !s.events.some((e) => JSON.stringify(e) === JSON.stringify(moved)); i++) {
      await new Promise((r) => setTimeout(r, 50));
      s = await stats(a);
    }
    expect(s.events).toContainEqual(moved);
    // A now sends to port 40000, where nobody listens.
    expect(() => inNs(NS_A, ['ping', '-c', '2', '-i', '0.2', '-W', '1', INNER4.b])).toThrow();
    await a.cmd({ cmd: 'setEndpoint', address: OUTER6.b, port: PORT });
    expect(inNs(NS_A, ['ping', '-c', '3', '-i', '0.2', '-W', '2', INNER4.b])).toMatch(/3 received/);
  });
});
