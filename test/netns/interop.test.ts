/**
 * Interop with another WireGuard implementation: a `tenc pod` against Debian's
 * wireguard-go (0.0.20220316), with matching keys and psk.
 *
 *   [ ns "a" ]  eth0 10.77.0.1/24, fd00:77::1/64 ---veth--- eth0 10.77.0.2/24, fd00:77::2/64  [ ns "b" ]
 *               tenc0  10.88.0.1, fd00:88::1                  wgiNNNNN-N  10.88.0.2/32, fd00:88::2/128
 *               (tenc pod; peer: wg's key,                    (wireguard-go -f; peer: tenc's key,
 *                endpoint 10.77.0.2, allowed                   endpoint 10.77.0.1, allowed
 *                10.88.0.2/32, fd00:88::2/128)                 10.88.0.1/32, fd00:88::1/128;
 *                                                              routes to 10.88.0.1, fd00:88::1)
 *
 * The inner addresses are not the underlay ones: tenc's pod addresses are on no other
 * interface, so tenc puts them on tenc0 and uses them as the source of tunnelled traffic;
 * wireguard-go has no fwmark policy routing, so its tunnel routes must not cover the
 * underlay endpoint.
 *
 *  1. tenc initiates (the first datagram on the wire is tenc's 148-byte initiation):
 *     ping, TCP both ways with a checksum; `tenc status` and `wg show dump` agree
 *  2. wireguard-go initiates (fresh processes, traffic from b first)
 *  3. forced rekey: `tenc rekey` makes a new handshake on both sides while TCP passes
 *     both ways; a second one within 5 s waits; then wireguard-go forgets tenc (`wg set
 *     peer remove`, set again) and traffic from b starts a new session
 *  4. mismatched psk: no session either way, no traffic, tenc counts decrypt_response
 *  5. case 1 over the IPv6 underlay, IPv4 and IPv6 inside
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  destroyAll,
  Netns,
  requireRoot,
  requireTool,
  sh,
  startCapture,
  startPod,
  stopAllPods,
  stopPod,
  vethPair,
  until,
  type PodProc,
} from './lib.js';
import { ensureBuilt } from '../build.js';
import { WireguardGo, stopAllWireguardGo } from './interop-wg.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const main = join(root, 'dist', 'src', 'cli', 'main.js');
const tcpHelper = fileURLToPath(new URL('./tcp.mjs', import.meta.url));
const MiB = 1 << 20;

let a: Netns;
let b: Netns;
let dir: string;
let wgPub: string;
let wgCount = 0;


/** The roles of tenc's completed handshakes, in order, from its log. */
function rolesNow(pod: PodProc): string[] {
  return pod
    .stderr()
    .split('\n')
    .filter((l) => l.includes('"msg":"session established"'))
    .map((l) => JSON.parse(l).role as string);
}

/**
 * The roles once the log has `n` of them (synchronous helpers block this process, so a
 * line the pod wrote may still wait in the pipe), and after a moment for any extra one.
 */
async function roles(pod: PodProc, n: number): Promise<string[]> {
  await until(`${n} handshakes in tenc's log`, () => rolesNow(pod).length >= n, 2000).catch(() => {});
  await new Promise((r) => setTimeout(r, 100));
  return rolesNow(pod);
}

/** wireguard-go's log once it has `line` (or after 2 s). */
async function wgLog(wg: WireguardGo, line: string): Promise<string> {
  await until(`"${line}" in wireguard-go's log`, () => wg.log().includes(line), 2000).catch(() => {});
  return wg.log();
}

function tenc(ns: Netns, ...args: string[]): string {
  return ns.exec('node', main, ...args);
}

interface TencPeer {
  publicKey: string;
  endpoint: string | null;
  latestHandshake: number | null;
  rxBytes: number;
  txBytes: number;
}

function tencStatus(): { peers: TencPeer[]; handshakeFailures: Record<string, number>; mtu: number } {
  return JSON.parse(tenc(a, 'status', '--json'));
}

function ping(ns: Netns, dst: string, count = 2): boolean {
  return ns.tryExec('ping', '-c', String(count), '-i', '0.2', '-W', '1', dst).status === 0;
}

/** Collects a child's stdout; resolves with it at exit, rejects on a non-zero exit. */
function output(child: ChildProcess, what: string): { text: () => string; done: Promise<string> } {
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const done = new Promise<string>((resolve, reject) =>
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${what} exited ${code}: ${err}`)))),
  );
  return { text: () => out, done };
}

/** Sends `bytes` random bytes over TCP from `from` to addr:port (a server in `to`); the checksums must match. */
async function tcp(from: Netns, to: Netns, addr: string, port: number, bytes = 4 * MiB): Promise<void> {
  const server = output(to.spawn('node', [tcpHelper, 'server', addr, String(port)]), `server ${addr}:${port}`);
  await until(`server on ${addr}:${port}`, () => server.text().includes('"listening":true'), 5000);
  const client = output(from.spawn('node', [tcpHelper, 'client', addr, String(port), String(bytes), '10000']), `client to ${addr}:${port}`);
  const sent = JSON.parse(await client.done);
  const got = JSON.parse((await server.done).trim().split('\n').pop()!);
  expect(got, `TCP to ${addr}:${port}`).toEqual(sent);
  expect(sent.bytes).toBe(bytes);
}

interface Pair {
  pod: PodProc;
  wg: WireguardGo;
}
let current: Pair | null = null;

/**
 * tenc in a, wireguard-go in b, each knowing the other's key and endpoint; the psk of
 * wireguard-go's side is `psk` (default: the same as tenc's).
 */
async function setup(opts: { port: number; v6?: boolean; psk?: string }): Promise<Pair> {
  const port = opts.port;
  const [epA, epB] = opts.v6 ? [`[fd00:77::1]:${port}`, `[fd00:77::2]:${port}`] : [`10.77.0.1:${port}`, `10.77.0.2:${port}`];
  const config = join(dir, `tenc-${port}.json`);
  writeFileSync(
    config,
    JSON.stringify({
      addresses: ['10.88.0.1', 'fd00:88::1'],
      pskFile: 'psk',
      listenPort: port,
      peers: [{ publicKey: wgPub, endpoint: epB, allowedIps: ['10.88.0.2/32', 'fd00:88::2/128'] }],
    }),
  );
  const pod = await startPod(a, config);
  const name = `wgi${process.pid % 100000}-${wgCount++}`;
  const wg = await WireguardGo.start(b, name);
  current = { pod, wg };
  wg.set('private-key', join(dir, 'wg.key'), 'listen-port', String(port));
  setWgPeer(wg, pod.publicKey, epA, opts.psk ?? 'psk');
  b.ip('addr', 'add', '10.88.0.2/32', 'dev', name);
  b.ip('-6', 'addr', 'add', 'fd00:88::2/128', 'dev', name, 'nodad');
  b.ip('link', 'set', 'dev', name, 'mtu', '1420', 'up');
  b.ip('route', 'add', '10.88.0.1/32', 'dev', name);
  b.ip('-6', 'route', 'add', 'fd00:88::1/128', 'dev', name);
  return current;
}

function setWgPeer(wg: WireguardGo, key: string, endpoint: string, pskFile: string): void {
  wg.set('peer', key, 'preshared-key', join(dir, pskFile), 'endpoint', endpoint, 'allowed-ips', '10.88.0.1/32,fd00:88::1/128');
}

/** Stops both; tenc must exit 0 (clean teardown). */
async function teardown(): Promise<void> {
  if (!current) return;
  const { pod, wg } = current;
  current = null;
  await wg.stop();
  expect(await stopPod(pod)).toBe(0);
}

/** The first tunnel datagram in a capture (tcpdump -n lines, filter udp). */
function firstDatagram(lines: string[]): string {
  expect(lines.length).toBeGreaterThan(0);
  return lines[0].replace(/^[\d.]+ /, '');
}

function wgKeyFile(name: string, cmd: 'genkey' | 'genpsk'): void {
  writeFileSync(join(dir, name), sh('wg', [cmd]), { mode: 0o600 });
}

beforeAll(() => {
  requireRoot();
  for (const t of ['ip', 'ping', 'tcpdump', 'wg', 'wireguard-go']) requireTool(t);
  ensureBuilt();
  [a, b] = vethPair('ia', 'ib');
  dir = mkdtempSync(join(tmpdir(), 'tenc-interop-'));
  chmodSync(dir, 0o700);
  wgKeyFile('wg.key', 'genkey');
  wgKeyFile('psk', 'genpsk');
  wgKeyFile('other-psk', 'genpsk');
  wgPub = sh('wg', ['pubkey'], readFileSync(join(dir, 'wg.key'), 'utf8')).trim();
}, 120_000);

afterEach(async () => {
  // a failed test leaves its processes: stop them before the next one starts
  current = null;
  await stopAllWireguardGo();
  await stopAllPods();
});

afterAll(async () => {
  await stopAllWireguardGo();
  await stopAllPods();
  destroyAll();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('tenc pod <-> wireguard-go', () => {
  it('tenc initiates: handshake, TCP both ways, status on both sides', async () => {
    const cap = await startCapture(b, 'eth0', ['udp']);
    const { pod, wg } = await setup({ port: 51820 });
    try {
      expect(ping(a, '10.88.0.2')).toBe(true);
    } finally {
      await cap.stop();
    }
    expect(firstDatagram(cap.read())).toBe('IP 10.77.0.1.51820 > 10.77.0.2.51820: UDP, length 148');
    cap.remove();
    expect(await roles(pod, 1)).toEqual(['initiator']);
    expect(await wgLog(wg, 'Received handshake initiation')).toContain('Received handshake initiation');
    expect(wg.log()).not.toContain('Sending handshake initiation');

    await tcp(a, b, '10.88.0.2', 5201);
    await tcp(b, a, '10.88.0.1', 5202);

    const st = tencStatus();
    expect(st.mtu).toBe(1440); // 1500 - 60: IPv4 underlay
    expect(st.handshakeFailures).toEqual({});
    const tp = st.peers[0];
    expect(tp.publicKey).toBe(wgPub);
    expect(tp.endpoint).toBe('10.77.0.2:51820');
    expect(tp.latestHandshake).toBeGreaterThan(Date.now() - 30_000);
    expect(tp.rxBytes).toBeGreaterThan(4 * MiB);
    expect(tp.txBytes).toBeGreaterThan(4 * MiB);
    const wp = wg.peer(pod.publicKey);
    expect(wp.endpoint).toBe('10.77.0.1:51820');
    expect(wp.latestHandshake).toBeGreaterThan(Date.now() / 1000 - 30);
    expect(wp.rxBytes).toBeGreaterThan(4 * MiB);
    expect(wp.txBytes).toBeGreaterThan(4 * MiB);
    await teardown();
  });

  it('wireguard-go initiates: traffic from b first', async () => {
    const cap = await startCapture(a, 'eth0', ['udp']);
    const { pod, wg } = await setup({ port: 51820 });
    try {
      expect(ping(b, '10.88.0.1')).toBe(true);
    } finally {
      await cap.stop();
    }
    expect(firstDatagram(cap.read())).toBe('IP 10.77.0.2.51820 > 10.77.0.1.51820: UDP, length 148');
    cap.remove();
    expect(await roles(pod, 1)).toEqual(['responder']);
    expect(await wgLog(wg, 'Received handshake response')).toContain('Sending handshake initiation');
    expect(wg.log()).toContain('Received handshake response');

    await tcp(b, a, '10.88.0.1', 5203);
    await tcp(a, b, '10.88.0.2', 5204);
    const tp = tencStatus().peers[0];
    expect(tp.latestHandshake).toBeGreaterThan(Date.now() - 30_000);
    expect(tp.rxBytes).toBeGreaterThan(4 * MiB);
    expect(wg.peer(pod.publicKey).latestHandshake).toBeGreaterThan(0);
    await teardown();
  });

  it('forced rekey: tenc rekey, then wireguard-go forgets and re-adds tenc', async () => {
    const { pod, wg } = await setup({ port: 51820 });
    expect(ping(a, '10.88.0.2')).toBe(true);
    await tcp(a, b, '10.88.0.2', 5205);
    const first = tencStatus().peers[0].latestHandshake!;
    const wgFirst = wg.peer(pod.publicKey).latestHandshake;
    expect(first).toBeGreaterThan(0);
    expect(wgFirst).toBeGreaterThan(0);

    // past the one-initiation-per-5-s limit: the initiation goes out at once
    await new Promise((r) => setTimeout(r, Math.max(0, first + 5_300 - Date.now())));
    expect(tenc(a, 'rekey', wgPub)).toBe(`${wgPub}: initiation sent\n`);
    await until('a new handshake on both sides', () => {
      const t = tencStatus().peers[0].latestHandshake!;
      return t > first && wg.peer(pod.publicKey).latestHandshake > wgFirst;
    }, 5000);
    expect(await roles(pod, 2)).toEqual(['initiator', 'initiator']);
    const second = tencStatus().peers[0].latestHandshake!;
    const wgSecond = wg.peer(pod.publicKey).latestHandshake;

    // again at once: it waits for the limit, and TCP passes both ways meanwhile
    expect(tenc(a, 'rekey')).toBe(`${wgPub}: initiation pending (at most one per 5 s, or no endpoint yet)\n`);
    expect(tencStatus().peers[0].latestHandshake).toBe(second);
    await tcp(a, b, '10.88.0.2', 5206);
    await tcp(b, a, '10.88.0.1', 5207);
    await until('the pending rekey', () => wg.peer(pod.publicKey).latestHandshake > wgSecond, 10_000);
    expect(tencStatus().peers[0].latestHandshake!).toBeGreaterThan(second);
    expect(await roles(pod, 3)).toEqual(['initiator', 'initiator', 'initiator']);
    await tcp(b, a, '10.88.0.1', 5208, MiB);
    await tcp(a, b, '10.88.0.2', 5209, MiB);

    // the CLI's errors: unknown peer (exit 1), not a key (exit 2)
    const unknown = a.tryExec('node', main, 'rekey', 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=');
    expect(unknown.status).toBe(1);
    expect(unknown.stderr).toContain('no such peer');
    const bad = a.tryExec('node', main, 'rekey', 'xyz');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('publicKey: is not a base64 32-byte key');

    // the other side forces it: wireguard-go drops the peer (and its keys) and gets it back
    wg.set('peer', pod.publicKey, 'remove');
    expect(wg.peers()).toEqual([]);
    setWgPeer(wg, pod.publicKey, '10.77.0.1:51820', 'psk');
    expect(wg.peer(pod.publicKey).latestHandshake).toBe(0);
    expect(ping(b, '10.88.0.1')).toBe(true);
    expect(await roles(pod, 4)).toEqual(['initiator', 'initiator', 'initiator', 'responder']);
    expect(wg.peer(pod.publicKey).latestHandshake).toBeGreaterThan(0);
    await tcp(b, a, '10.88.0.1', 5210, MiB);
    await tcp(a, b, '10.88.0.2', 5211, MiB);
    expect(tencStatus().handshakeFailures).toEqual({});
    await teardown();
  }, 60_000);

  it('mismatched psk: no session, no traffic, tenc counts decrypt_response', async () => {
    const { pod, wg } = await setup({ port: 51820, psk: 'other-psk' });
    // b first: wireguard-go initiates, tenc answers, the answer does not decrypt there
    expect(ping(b, '10.88.0.1')).toBe(false);
    expect(await wgLog(wg, 'Received invalid response message')).toContain('Sending handshake initiation');
    expect(wg.log()).toContain('Received invalid response message');
    // wireguard-go keeps retrying for b's queued ping every 5 s, and its retries can
    // cross tenc's initiation in every round (then tenc answers instead and the
    // response to its own is unknown_index): give it the peer afresh, nothing queued
    wg.set('peer', pod.publicKey, 'remove');
    setWgPeer(wg, pod.publicKey, '10.77.0.1:51820', 'other-psk');
    // then a: tenc initiates (once 5 s after its response), wireguard-go's answer does not decrypt here
    expect(ping(a, '10.88.0.2')).toBe(false);
    await until('decrypt_response in tenc status', () => (tencStatus().handshakeFailures.decrypt_response ?? 0) >= 1, 8000);
    const st = tencStatus();
    // wireguard-go's retries cross tenc's initiation: a response to an initiation tenc gave
    // up for the crossing one is unknown_index (as the kernel drops it); nothing else fails
    for (const k of Object.keys(st.handshakeFailures)) expect(['decrypt_response', 'unknown_index']).toContain(k);
    expect(st.peers[0].latestHandshake).toBeNull();
    expect(st.peers[0].rxBytes).toBe(0);
    expect(st.peers[0].txBytes).toBe(0);
    expect(await roles(pod, 0)).toEqual([]);
    expect(wg.peer(pod.publicKey).latestHandshake).toBe(0);
    expect(wg.log()).not.toContain('Received handshake response');
    await teardown();
  });

  it('tenc initiates over the IPv6 underlay, IPv4 and IPv6 inside', async () => {
    const cap = await startCapture(b, 'eth0', ['udp']);
    const { pod, wg } = await setup({ port: 51821, v6: true });
    try {
      expect(ping(a, 'fd00:88::2')).toBe(true);
      expect(ping(a, '10.88.0.2')).toBe(true);
    } finally {
      await cap.stop();
    }
    expect(firstDatagram(cap.read())).toBe('IP6 fd00:77::1.51821 > fd00:77::2.51821: UDP, length 148');
    cap.remove();
    expect(await roles(pod, 1)).toEqual(['initiator']);
    await tcp(a, b, 'fd00:88::2', 5212);
    await tcp(b, a, 'fd00:88::1', 5213);
    const st = tencStatus();
    expect(st.mtu).toBe(1420); // 1500 - 80: IPv6 underlay
    expect(st.peers[0].endpoint).toBe('[fd00:77::2]:51821');
    expect(wg.peer(pod.publicKey).endpoint).toBe('[fd00:77::1]:51821');
    expect(st.peers[0].rxBytes).toBeGreaterThan(4 * MiB);
    await teardown();
  });
});
