/**
 * Addresses not learned through DNS, classified on first use (issue 4: a client
 * dialing a raw IP). Pod a (project alpha) runs tenc with the DNS proxy and
 * dns.classifyCidrs = the pod network (10.77.0.0/24, fd00:77::/64), so every
 * address in it goes into tenc0 until classified:
 *
 *   10.77.0.2 / fd00:77::2  pod b, alpha, a peer         -> tunnel (member)
 *   10.77.0.3 / fd00:77::3  pod c, project beta          -> PTR web.beta... -> bypass, plaintext
 *   10.77.0.4               pod d, alpha but no peer     -> PTR db.alpha... -> stays in tenc0, dropped
 *   10.77.0.254             bridge: dnsmasq (cluster DNS, PTR records), no PTR for itself -> bypass
 *
 * Checks: curl by raw IP to beta works (its first packet is released, not lost), a
 * throw route appears in tenc's table; plaintext never reaches pod d; pod b's
 * traffic is ciphertext on the wire; status reports the counters; a stop removes
 * the bypasses with everything else.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  control,
  httpServer,
  main,
  Netns,
  pairUp,
  prepare,
  projectDir,
  readCaptureBytes,
  snapshot,
  spawnHelper,
  startCapture,
  startPod,
  stopAllPods,
  stopHelpers,
  stopPod,
  tenc,
  Topology,
  waitFor,
  writeConfig,
  type NetSnapshot,
  type PodProc,
} from './lib.js';

const PREFIX = `tcls${process.pid % 100000}`;
const TABLE = 52100; // the config default
let topo: Topology;
let a: Netns, b: Netns, c: Netns, d: Netns, e: Netns, br: Netns;
let dir: string;
let podA: PodProc, podB: PodProc;
let beforeA: NetSnapshot;
function curl(ns: Netns, url: string, maxTime = 5): { ok: boolean; body: string } {
  const r = ns.tryExec('curl', '-sS', '-g', '--max-time', String(maxTime), url);
  return { ok: r.status === 0, body: r.stdout };
}

function podStatus(): any {
  return JSON.parse(tenc(a, 'status', '--json'));
}

beforeAll(async () => {
  prepare(['nft', 'dnsmasq', 'curl', 'dig']);
  topo = Topology.up(PREFIX);
  a = topo.ns('a');
  b = topo.ns('b');
  br = topo.ns('br');
  c = topo.addPod('c', 3);
  d = topo.addPod('d', 4);
  e = topo.addPod('e', 5);
  mkdirSync(`/etc/netns/${a.name}`, { recursive: true });
  writeFileSync(`/etc/netns/${a.name}/resolv.conf`, 'nameserver 10.77.0.254\nsearch alpha.svc.cluster.local svc.cluster.local cluster.local\n');
  spawnHelper(br, 'dnsmasq', [
    '--conf-file=/dev/null',
    '--no-resolv',
    '--no-hosts',
    '--keep-in-foreground',
    '--pid-file=',
    '--listen-address=10.77.0.254',
    '--bind-interfaces',
    '--local-ttl=5',
    '--local=/alpha.svc.cluster.local/',
    '--local=/77.10.in-addr.arpa/',
    '--local=/0.0.0.0.0.0.0.0.7.7.0.0.0.0.d.f.ip6.arpa/',
    '--ptr-record=3.0.77.10.in-addr.arpa,web.beta.svc.cluster.local',
    `--ptr-record=3.${'0.'.repeat(23)}7.7.0.0.0.0.d.f.ip6.arpa,web.beta.svc.cluster.local`,
    '--ptr-record=4.0.77.10.in-addr.arpa,db.alpha.svc.cluster.local',
    // e: a beta pod by its PTR, whose address an alpha name comes to carry (a reused IP)
    '--ptr-record=5.0.77.10.in-addr.arpa,api.beta.svc.cluster.local',
    '--host-record=reused.alpha.svc.cluster.local,10.77.0.5',
  ]);
  httpServer(b, 'alpha-b-6d1e');
  httpServer(c, 'beta-c-90f2');
  httpServer(d, 'alpha-d-c47a');
  dir = projectDir('classify');
  writeConfig(dir, 'a', {
    addresses: ['10.77.0.1', 'fd00:77::1'],
    pskFile: 'psk',
    dns: { maxTtl: 5, upstreamTimeout: 500, classifyCidrs: ['10.77.0.0/24', 'fd00:77::/64'] },
  });
  writeConfig(dir, 'b', { addresses: ['10.77.0.2', 'fd00:77::2'], pskFile: 'psk' });
  beforeA = snapshot(a);
  podA = await startPod(a, join(dir, 'a.json'));
  podB = await startPod(b, join(dir, 'b.json'));
  pairUp(a, podA, 1, b, podB, 2);
}, 120_000);

afterAll(async () => {
  await Promise.all([stopAllPods(), stopHelpers()]);
  topo?.down();
  rmSync(`/etc/netns/${PREFIX}-a`, { recursive: true, force: true });
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('raw IPs classified on first use (dns.classifyCidrs)', () => {
  it('the ranges are routed into tenc0, with fail-closed guards', () => {
    const t = a.exec('ip', 'route', 'show', 'table', String(TABLE));
    expect(t).toMatch(/^10\.77\.0\.0\/24 dev tenc0/m);
    expect(t).toMatch(/^unreachable 10\.77\.0\.0\/24 .*metric 4294967295/m);
    expect(a.exec('ip', '-6', 'route', 'show', 'table', String(TABLE))).toMatch(/^fd00:77::\/64 dev tenc0/m);
  });

  it('a beta pod by raw IP: bypassed after a PTR lookup, in plaintext, its first packet released', async () => {
    // one echo request, no retry: it arrives only if the reported packet is released after the bypass
    expect(a.tryExec('ping', '-c', '1', '-W', '3', '10.77.0.3').status).toBe(0);
    const r = curl(a, 'http://10.77.0.3/');
    expect(r.body).toBe('beta-c-90f2');
    expect(a.exec('ip', 'route', 'show', 'table', String(TABLE))).toMatch(/^throw 10\.77\.0\.3 /m);
    const m = podStatus().dns.routeMisses;
    expect(m.ranges).toEqual(['10.77.0.0/24', 'fd00:77::/64']);
    expect(m.bypassed).toBeGreaterThanOrEqual(1);
    expect(m.released).toBeGreaterThanOrEqual(1); // the SYN that found no peer, sent again after the bypass
    expect(m.releaseErrors).toBe(0);
    // the verdict is the DNS proxy's: the same through the control operation
    expect(control(a, { op: 'classify-address', address: '10.77.0.3' })).toMatchObject({ ok: true, result: { verdict: 'other', reason: 'none' } });
  });

  it('IPv6: a beta pod by raw IP is bypassed too, its first packet released', () => {
    expect(a.tryExec('ping', '-6', '-c', '1', '-W', '3', 'fd00:77::3').status).toBe(0);
    expect(curl(a, 'http://[fd00:77::3]/').body).toBe('beta-c-90f2');
    expect(a.exec('ip', '-6', 'route', 'show', 'table', String(TABLE))).toMatch(/^throw fd00:77::3 /m);
  });

  it('an address without a PTR record (NXDOMAIN) is other: ping works, its first echo released', () => {
    const before = podStatus().dns.routeMisses.released;
    expect(a.tryExec('ping', '-c', '1', '-W', '3', '10.77.0.254').status).toBe(0);
    expect(a.exec('ip', 'route', 'show', 'table', String(TABLE))).toMatch(/^throw 10\.77\.0\.254 /m);
    expect(podStatus().dns.routeMisses.released).toBeGreaterThan(before);
  });

  it('an alpha address without a peer stays in the tunnel: nothing reaches it in plaintext', async () => {
    const cap = await startCapture(d, 'eth0', ['tcp', 'port', '80']);
    const r = curl(a, 'http://10.77.0.4/', 2);
    await cap.stop();
    const packets = cap.read();
    cap.remove();
    expect(r.ok).toBe(false);
    expect(packets).toEqual([]);
    expect(a.exec('ip', 'route', 'show', 'table', String(TABLE))).not.toMatch(/throw 10\.77\.0\.4 /);
    expect(podStatus().dns.routeMisses.projectUnrouted).toBeGreaterThanOrEqual(1);
    expect(podStatus().drops.no_route).toBeGreaterThanOrEqual(1);
  });

  it('a member the agent named (set-members) stays in the tunnel whatever its PTR says', async () => {
    expect(control(a, { op: 'set-members', members: ['10.77.0.6/32'] })).toMatchObject({ ok: true });
    const cap = await startCapture(br, 'br0', ['host', '10.77.0.6']);
    const before = podStatus().dns.routeMisses.projectUnrouted;
    expect(a.tryExec('ping', '-c', '2', '-i', '0.3', '-W', '1', '10.77.0.6').status).not.toBe(0);
    await cap.stop();
    const lines = cap.read();
    cap.remove();
    expect(lines).toEqual([]);
    expect(podStatus().dns.routeMisses.projectUnrouted).toBeGreaterThan(before);
    expect(control(a, { op: 'classify-address', address: '10.77.0.6' })).toMatchObject({ result: { verdict: 'project', reason: 'member' } });
  });

  it('an address that becomes a member loses its bypass at once, not when its verdict time ends: no plaintext after set-members (issue 19.6)', async () => {
    const table = () => a.exec('ip', 'route', 'show', 'table', String(TABLE));
    if (!/^throw 10\.77\.0\.254 /m.test(table())) expect(a.tryExec('ping', '-c', '1', '-W', '3', '10.77.0.254').status).toBe(0);
    expect(table()).toMatch(/^throw 10\.77\.0\.254 /m);
    const cap = await startCapture(br, 'br0', ['icmp', 'and', 'host', '10.77.0.254']);
    let ping: ReturnType<Netns['tryExec']>;
    try {
      expect(control(a, { op: 'set-members', members: ['10.77.0.6/32', '10.77.0.254/32'] })).toMatchObject({ ok: true });
      expect(await waitFor(() => !/^throw 10\.77\.0\.254 /m.test(table()), 1000)).toBe(true); // maxTtl is 5 s
      ping = a.tryExec('ping', '-c', '2', '-i', '0.3', '-W', '1', '10.77.0.254');
    } finally {
      await cap.stop();
      expect(control(a, { op: 'set-members', members: ['10.77.0.6/32'] })).toMatchObject({ ok: true });
    }
    const lines = cap.read();
    cap.remove();
    expect(ping.status).not.toBe(0);
    expect(lines.filter((l) => /10\.77\.0\.1 > 10\.77\.0\.254: ICMP/.test(l))).toEqual([]);
    expect(podStatus().dns.routeMisses.revoked).toBeGreaterThanOrEqual(1);
  });

  it('a peer by raw IP is tunneled: ciphertext on the wire, no bypass', async () => {
    const cap = await startCapture(br, 'br0', ['ip', 'host', '10.77.0.2']);
    expect(curl(a, 'http://10.77.0.2/').body).toBe('alpha-b-6d1e');
    await cap.stop();
    const bytes = readCaptureBytes(cap);
    const lines = cap.read();
    cap.remove();
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.filter((l) => !/UDP/.test(l))).toEqual([]); // only the tunnel's datagrams
    expect(bytes.includes(Buffer.from('alpha-b-6d1e'))).toBe(false);
    expect(a.exec('ip', 'route', 'show', 'table', String(TABLE))).not.toMatch(/throw 10\.77\.0\.2 /);
  });

  it('a bypass outlives its verdict time while the verdict holds (the flow is not cut)', async () => {
    // maxTtl 5 s: after it the address is classified again and keeps its bypass
    const before = podStatus().dns.routeMisses.rechecked;
    await new Promise((r) => setTimeout(r, 6500));
    expect(podStatus().dns.routeMisses.rechecked).toBeGreaterThan(before);
    expect(a.exec('ip', 'route', 'show', 'table', String(TABLE))).toMatch(/^throw 10\.77\.0\.3 /m);
    expect(curl(a, 'http://10.77.0.3/').body).toBe('beta-c-90f2');
  }, 20_000);

  it('a peer whose wider allowed IPs cover a bypassed address takes it into the tunnel; after remove-peer it is bypassed again', async () => {
    const key = spawnSync('node', [main, 'genkey'], { encoding: 'utf8' }).stdout;
    const pub = spawnSync('node', [main, 'pubkey'], { input: key, encoding: 'utf8' }).stdout.trim();
    const bypass4 = () => a.exec('nft', 'list', 'set', 'inet', 'tenc_tenc0', 'bypass4');
    expect(bypass4()).toMatch(/10\.77\.0\.3\b/);
    tenc(a, 'set-peer', pub, '--allowed-ips', '10.77.0.0/29'); // no endpoint: its packets wait for a handshake
    expect(a.exec('ip', 'route', 'get', '10.77.0.3')).toContain('dev tenc0');
    expect(a.exec('ip', 'route', 'show', 'table', String(TABLE))).not.toMatch(/throw 10\.77\.0\.3 /);
    // the output chain's accept of the bypass goes with its route (it accepted the
    // address's plaintext, ahead of the classify drop, for anything the routing sends
    // past tenc0: a socket bound to eth0)
    expect(await waitFor(() => !/10\.77\.0\.3\b/.test(bypass4()), 3000)).toBe(true);
    const cap = await startCapture(c, 'eth0', ['tcp', 'port', '80']);
    expect(curl(a, 'http://10.77.0.3/', 2).ok).toBe(false);
    expect(a.tryExec('curl', '-sS', '--interface', 'eth0', '--max-time', '2', 'http://10.77.0.3/').status).not.toBe(0);
    await cap.stop();
    const lines = cap.read();
    cap.remove();
    expect(lines).toEqual([]); // nothing in plaintext to the address the peer claims
    tenc(a, 'remove-peer', pub);
    expect(a.tryExec('ping', '-c', '1', '-W', '3', '10.77.0.3').status).toBe(0); // classified afresh, bypassed, released
    expect(a.exec('ip', 'route', 'show', 'table', String(TABLE))).toMatch(/^throw 10\.77\.0\.3 /m);
  });

  it('a bypassed address a project answer comes to name: the route of the answer takes over, and the accept of the bypass in the output chain goes too (nothing of it in plaintext)', async () => {
    const bypass4 = () => a.exec('nft', 'list', 'set', 'inet', 'tenc_tenc0', 'bypass4');
    const table = () => a.exec('ip', 'route', 'show', 'table', String(TABLE));
    expect(a.tryExec('ping', '-c', '1', '-W', '3', '10.77.0.5').status).toBe(0); // beta by PTR: bypassed
    expect(table()).toMatch(/^throw 10\.77\.0\.5 /m);
    expect(bypass4()).toMatch(/10\.77\.0\.5\b/);
    expect(a.tryExec('dig', '+tries=1', '+timeout=3', '+short', 'reused.alpha.svc.cluster.local').stdout.trim()).toBe('10.77.0.5');
    expect(a.exec('ip', 'route', 'get', '10.77.0.5')).toContain('dev tenc0');
    expect(table()).not.toMatch(/^throw 10\.77\.0\.5 /m);
    // the accept ahead of the classify drop let its plaintext out for anything the
    // routing sends past tenc0 (a socket bound to eth0): it goes with the throw route
    expect(await waitFor(() => !/10\.77\.0\.5\b/.test(bypass4()), 3000)).toBe(true);
    const cap = await startCapture(e, 'eth0', ['icmp']);
    expect(a.tryExec('ping', '-c', '1', '-W', '1', '-I', 'eth0', '10.77.0.5').status).not.toBe(0);
    await cap.stop();
    const lines = cap.read();
    cap.remove();
    expect(lines).toEqual([]);
  });

  it('kill -9 leaves the bypasses behind the guards; the next start deletes them; a stop leaves the namespace as it was', async () => {
    expect(tenc(a, 'status')).toMatch(/route misses: \d+; \d+ bypasses held/);
    podA.child.kill('SIGKILL');
    await podA.exit;
    const left = a.exec('ip', 'route', 'show', 'table', String(TABLE));
    expect(left).toMatch(/^throw 10\.77\.0\.3 /m);
    expect(left).toMatch(/^unreachable 10\.77\.0\.0\/24 /m);
    podA = await startPod(a, join(dir, 'a.json'));
    expect(a.exec('ip', 'route', 'show', 'table', String(TABLE))).not.toMatch(/throw/);
    expect(a.exec('ip', '-6', 'route', 'show', 'table', String(TABLE))).not.toMatch(/throw/);
    expect(await stopPod(podA)).toBe(0);
    expect(await waitFor(() => !a.exec('ip', 'route', 'show', 'table', String(TABLE)).includes('throw'), 3000)).toBe(true);
    expect(snapshot(a)).toEqual(beforeA);
  });
});
