/**
 * Two real `tenc pod` processes (node dist/src/cli/main.js, native data plane):
 *
 *   [ ns "a" ]  eth0 10.77.0.1/24 ---veth--- eth0 10.77.0.2/24  [ ns "b" ]
 *               tenc0 (tenc pod)                 tenc0 (tenc pod)
 *
 *  1. start both, exchange public keys with `tenc set-peer`, ping through the
 *     tunnel; the wire carries only UDP to port 51820, no ICMP in the clear;
 *     `tenc status` shows the peer with a handshake and transfer
 *  2. SIGKILL pod a (a crash), start it again: the residue is removed, the
 *     tunnel works again
 *  3. SIGINT one, SIGTERM the other: exit 0, each namespace equals its snapshot
 *     from before
 *  4. the other data-plane options: IPv6 underlay, raw injection, offloads off,
 *     IPv4 and IPv6 inside; the MTU follows the IPv6 underlay
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  Netns,
  ping,
  projectDir,
  requireRoot,
  requireTool,
  snapshot,
  startCapture,
  startPod,
  tearDown,
  tenc,
  vethPair,
  writeConfig,
  type NetSnapshot,
} from './lib.js';
import { ensureBuilt } from '../build.js';

let a: Netns;
let b: Netns;
let dir: string;
function expectSame(after: NetSnapshot, before: NetSnapshot): void {
  for (const k of Object.keys(before) as (keyof NetSnapshot)[]) expect(after[k], `snapshot field ${k}`).toBe(before[k]);
}

beforeAll(() => {
  requireRoot();
  for (const t of ['ip', 'ping', 'tcpdump', 'nft']) requireTool(t);
  ensureBuilt();
  [a, b] = vethPair('a', 'b');
  dir = projectDir('procs');
  writeConfig(dir, 'a', { addresses: ['10.77.0.1'], pskFile: 'psk' });
  writeConfig(dir, 'b', { addresses: ['10.77.0.2'], pskFile: 'psk' });
}, 120_000);

// a failed test may leave pods running: stop them (TERM, then KILL) before the namespaces go
afterAll(() => tearDown(undefined, dir));

describe('two tenc pod processes', () => {
  it('tunnel, crash and restart, clean stop', async () => {
    const beforeA = snapshot(a);
    const beforeB = snapshot(b);
    let podA = await startPod(a, join(dir, 'a.json'));
    const podB = await startPod(b, join(dir, 'b.json'));
    tenc(b, 'set-peer', podA.publicKey, '--endpoint', '10.77.0.1:51820', '--allowed-ips', '10.77.0.1/32');
    tenc(a, 'set-peer', podB.publicKey, '--endpoint', '10.77.0.2:51820', '--allowed-ips', '10.77.0.2/32');

    const cap = await startCapture(b, 'eth0');
    try {
      expect(ping(a, '10.77.0.2')).toBe(true);
    } finally {
      await cap.stop();
    }
    const lines = cap.read();
    cap.remove();
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines.filter((x) => / IP /.test(x))) expect(l).toMatch(/\.51820 > 10\.77\.0\.\d\.51820: UDP/);
    expect(lines.some((l) => /ICMP echo/.test(l))).toBe(false); // no ping in the clear

    const st = JSON.parse(tenc(a, 'status', '--json'));
    expect(st.peers[0].publicKey).toBe(podB.publicKey);
    expect(st.peers[0].latestHandshake).toBeGreaterThan(0);
    expect(st.peers[0].txBytes).toBeGreaterThan(0);
    expect(tenc(a, 'status')).toContain(`peer: ${podB.publicKey}`);

    // crash: no teardown at all
    const oldKeyA = podA.publicKey;
    podA.child.kill('SIGKILL');
    await podA.exit;
    expect(a.ip('-4', 'rule', 'show')).toContain('lookup 52100');
    podA = await startPod(a, join(dir, 'a.json'));
    expect(podA.stderr()).toContain('removed residue of an earlier run');
    expect(podA.stderr()).toContain('removed stale control socket');
    // a restarted pod has a new key: b forgets the old one first (allowed IPs belong to one peer)
    tenc(b, 'remove-peer', oldKeyA);
    tenc(b, 'set-peer', podA.publicKey, '--endpoint', '10.77.0.1:51820', '--allowed-ips', '10.77.0.1/32');
    tenc(a, 'set-peer', podB.publicKey, '--endpoint', '10.77.0.2:51820', '--allowed-ips', '10.77.0.2/32');
    expect(ping(a, '10.77.0.2')).toBe(true);

    podA.child.kill('SIGINT'); // Ctrl-C
    podB.child.kill('SIGTERM'); // kubelet
    expect(await podA.exit).toBe(0);
    expect(await podB.exit).toBe(0);
    expectSame(snapshot(a), beforeA);
    expectSame(snapshot(b), beforeB);
  });

  it('IPv6 underlay, raw injection, offloads off, both families inside', async () => {
    const beforeA = snapshot(a);
    const beforeB = snapshot(b);
    const opts = { inject: 'raw', tunOffload: false, udpGso: false, udpGro: false };
    writeFileSync(join(dir, 'a6.json'), JSON.stringify({ addresses: ['10.77.0.1', 'fd00:77::1'], pskFile: 'psk', listenPort: 51821, dataPlane: opts }));
    writeFileSync(join(dir, 'b6.json'), JSON.stringify({ addresses: ['10.77.0.2', 'fd00:77::2'], pskFile: 'psk', listenPort: 51821, dataPlane: opts }));
    const podA = await startPod(a, join(dir, 'a6.json'));
    const podB = await startPod(b, join(dir, 'b6.json'));
    tenc(a, 'set-peer', podB.publicKey, '-e', '[fd00:77::2]:51821', '-a', '10.77.0.2/32,fd00:77::2/128');
    tenc(b, 'set-peer', podA.publicKey, '-e', '[fd00:77::1]:51821', '-a', '10.77.0.1/32,fd00:77::1/128');

    const cap = await startCapture(b, 'eth0');
    try {
      expect(ping(a, '10.77.0.2')).toBe(true);
      expect(ping(a, 'fd00:77::2')).toBe(true);
    } finally {
      await cap.stop();
    }
    // the underlay's own neighbor discovery aside, only tunnel datagrams; no echo in the clear
    const all = cap.read();
    cap.remove();
    expect(all.some((l) => /echo/.test(l))).toBe(false);
    const lines = all.filter((l) => / IP6? /.test(l) && !/ICMP6, (neighbor|router) (solicitation|advertisement)/.test(l));
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) expect(l).toMatch(/IP6 fd00:77::[12]\.51821 > fd00:77::[12]\.51821: UDP/);

    const st = JSON.parse(tenc(a, 'status', '--json'));
    const cpu = readFileSync('/proc/cpuinfo', 'utf8');
    const lanes = /^flags\s*:.*\bavx512f\b/m.test(cpu) ? 'avx512' : /^flags\s*:.*\bavx2\b/m.test(cpu) ? 'avx2' : 'base';
    expect(st.dataPlane).toBe(`native, inject raw, tun offload off, udp gso off, udp gro off, aead direct, lanes ${lanes}`);
    expect(st.mtu).toBe(1420); // 1500 - 80, no peer endpoint at start
    expect(st.peers[0].endpoint).toBe('[fd00:77::2]:51821');

    podA.child.kill('SIGTERM');
    podB.child.kill('SIGTERM');
    expect(await podA.exit).toBe(0);
    expect(await podB.exit).toBe(0);
    expectSame(snapshot(a), beforeA);
    expectSame(snapshot(b), beforeB);
  });
});
