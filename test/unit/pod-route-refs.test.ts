/**
 * A set-peer or set-services whose route step failed part way (an `ip -batch` that
 * failed at a line, or could not run at all) is sent again by the agent: the retry
 * converges to exactly the routes asked for, each held once, so a later removal
 * deletes them (review of the pod lifecycle). The pod diffs against the route
 * references it holds per owner (a peer's key, the services), not against the peer
 * or service list it recorded; routing tells which references a failed call took.
 * Real PolicyRouting over a fake `ip` that keeps the table as a set and fails on demand.
 */
import { describe, it, expect, afterAll } from 'vitest';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pod } from '../../src/control/pod.js';
import { validateConfig, type ServiceConfig } from '../../src/control/config.js';
import type { PodEngine } from '../../src/control/engine.js';
import { PolicyRouting } from '../../src/routing/policy.js';
import { IpCommandError, type IpCommand } from '../../src/routing/ip.js';
import { silentLogger } from '../../src/log.js';

const dir = mkdtempSync(join(tmpdir(), 'tenc-pod-route-refs-'));
writeFileSync(join(dir, 'psk'), Buffer.alloc(32, 7).toString('base64') + '\n', { mode: 0o600 });
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const KEY_A = 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=';
const KEY_B = '3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=';

/** How the next batch fails: at line `at` (the lines before it took effect), or the process never ran (nothing did). */
type Failure = { at: number } | { spawn: true };

/** A fake `ip` over a model of table T: `route X` (dev tenc0) and `guard X` (unreachable) entries. */
function kernelIp() {
  const table = new Set<string>();
  const failures: Failure[] = [];
  const batches: string[][] = [];
  const apply = (line: string) => {
    let m = /^route (replace|del) unreachable (\S+) /.exec(line);
    if (m) return void (m[1] === 'replace' ? table.add(`guard ${m[2]}`) : table.delete(`guard ${m[2]}`));
    m = /^route (replace|del) (\S+) dev tenc0 /.exec(line);
    if (m) return void (m[1] === 'replace' ? table.add(`route ${m[2]}`) : table.delete(`route ${m[2]}`));
  };
  const ip = {
    async json(args: string[]) {
      return args[0] === 'link' ? [{ mtu: 1500, flags: [] }] : [];
    },
    async run() {
      return '';
    },
    async batch(fam: 4 | 6, lines: string[]) {
      if (lines.length === 0) return;
      batches.push(lines);
      await new Promise((r) => setTimeout(r, 1));
      const f = failures.shift();
      if (f && 'spawn' in f) throw new Error('spawn ip: timed out after 10000 ms');
      for (let i = 0; i < lines.length; i++) {
        if (f && i === f.at) throw new IpCommandError([`-${fam}`, lines[i]], 'RTNETLINK answers: No buffer space available', 2, i);
        apply(lines[i]);
      }
    },
  };
  /** The table's entries for these cidrs, sorted. */
  const of = (...cidrs: string[]) => [...table].filter((e) => cidrs.includes(e.split(' ')[1])).sort();
  return { ip: ip as unknown as IpCommand, table, failures, batches, of };
}

async function setup() {
  const k = kernelIp();
  const routing = new PolicyRouting({ ifname: 'tenc0', table: 52100, priority: 5210, fwmark: 0xcb84, addresses: { v4: '10.77.0.1', v6: null }, ip: k.ip });
  await routing.install(1420, []);
  const engine = {
    description: 'fake',
    setPeer: () => undefined,
    removePeer: () => true,
    setServices: () => undefined,
    peerStatuses: () => new Map(),
    drops: () => ({}),
    handshakeFailures: () => ({}),
    close: async () => {},
  } satisfies PodEngine;
  const config = validateConfig({ addresses: ['10.77.0.1'], pskFile: 'psk' }, join(dir, 'pod.json'));
  const pod = new Pod(config, KEY_A, 1420, engine, routing, silentLogger);
  return { ...k, routing, pod };
}

const A = '10.80.0.1/32';
const B = '10.80.1.0/24';
const svc = (vip: string): ServiceConfig => ({ vip, localAddress: '10.77.0.1', ports: [] });

describe('pod: a set-peer sent again after its routes failed part way', () => {
  it('a batch that failed at its last line (one route missing): the retry adds it, the removal deletes both', async () => {
    const { pod, routing, failures, of } = await setup();
    failures.push({ at: 3 }); // guard A, guard B, route A in; route B not
    await expect(pod.setPeer({ publicKey: KEY_B, allowedIps: [A, B] })).rejects.toThrow(/No buffer space/);
    expect(of(A, B)).toEqual([`guard ${A}`, `guard ${B}`, `route ${A}`]);
    await pod.setPeer({ publicKey: KEY_B, allowedIps: [A, B] });
    expect(of(A, B)).toEqual([`guard ${A}`, `guard ${B}`, `route ${A}`, `route ${B}`]);
    expect(routing.routes().sort()).toEqual([A, B]);
    expect(await pod.removePeer(KEY_B)).toBe(true);
    expect(of(A, B)).toEqual([]); // each held once: the one removal deletes route and guard
    expect(routing.routes()).toEqual([]);
  });

  it('an ip that never ran (spawn failed, timed out: nothing known to have taken effect): the retry adds both', async () => {
    const { pod, routing, failures, of, batches } = await setup();
    failures.push({ spawn: true });
    await expect(pod.setPeer({ publicKey: KEY_B, allowedIps: [A, B] })).rejects.toThrow(/spawn ip/);
    batches.length = 0;
    await pod.setPeer({ publicKey: KEY_B, allowedIps: [A, B] });
    expect(batches.flat().filter((l) => l.includes('dev tenc0'))).toEqual([expect.stringContaining(`replace ${A} dev`), expect.stringContaining(`replace ${B} dev`)]);
    expect(of(A, B)).toEqual([`guard ${A}`, `guard ${B}`, `route ${A}`, `route ${B}`]);
    await pod.removePeer(KEY_B);
    expect(of(A, B)).toEqual([]);
    expect(routing.routes()).toEqual([]);
  });

  it('an update that failed: a retry takes no second reference on a route it already holds', async () => {
    const { pod, routing, failures, of } = await setup();
    await pod.setPeer({ publicKey: KEY_B, allowedIps: [A] });
    failures.push({ spawn: true });
    await expect(pod.setPeer({ publicKey: KEY_B, allowedIps: [A, B] })).rejects.toThrow(/spawn ip/);
    await pod.setPeer({ publicKey: KEY_B, allowedIps: [A, B] });
    expect(of(A, B)).toEqual([`guard ${A}`, `guard ${B}`, `route ${A}`, `route ${B}`]);
    await pod.setPeer({ publicKey: KEY_B, allowedIps: [B] });
    expect(of(A)).toEqual([]); // A's one reference went with the update
    await pod.removePeer(KEY_B);
    expect(routing.routes()).toEqual([]);
    expect(of(A, B)).toEqual([]);
  });

  it('a removal that failed part way is finished by its retry', async () => {
    const { pod, routing, failures, of } = await setup();
    await pod.setPeer({ publicKey: KEY_B, allowedIps: [A, B] });
    failures.push({ at: 0 }); // A's route delete fails (B not reached)
    await expect(pod.removePeer(KEY_B)).rejects.toThrow(/No buffer space/);
    expect(pod.peers.has(KEY_B)).toBe(true); // routes out first: the engine still knows the peer
    expect(await pod.removePeer(KEY_B)).toBe(true);
    expect(of(A, B)).toEqual([]);
    expect(routing.routes()).toEqual([]);
  });

  it('a route another source holds too (a DNS answer) keeps that reference through a failed set-peer and the removal', async () => {
    const { pod, routing, failures, of } = await setup();
    await pod.addDestinations([A]); // the DNS answer's reference
    failures.push({ spawn: true }); // B's batch; A only took a reference (no ip)
    await expect(pod.setPeer({ publicKey: KEY_B, allowedIps: [A, B] })).rejects.toThrow(/spawn ip/);
    await pod.setPeer({ publicKey: KEY_B, allowedIps: [A, B] });
    expect(of(B)).toEqual([`guard ${B}`, `route ${B}`]);
    await pod.removePeer(KEY_B);
    expect(routing.routes()).toEqual([A]); // the DNS answer's, once
    expect(of(A, B)).toEqual([`guard ${A}`, `route ${A}`]);
    await pod.removeDestination(A);
    expect(routing.routes()).toEqual([]);
  });

  it('two set-peers of one peer at once hold each route once', async () => {
    const { pod, routing, of } = await setup();
    await Promise.all([pod.setPeer({ publicKey: KEY_B, allowedIps: [A] }), pod.setPeer({ publicKey: KEY_B, allowedIps: [A] })]);
    await pod.removePeer(KEY_B);
    expect(routing.routes()).toEqual([]);
    expect(of(A)).toEqual([]);
  });
});

describe('pod: a set-services sent again after its routes failed part way', () => {
  it("a batch that failed after one new VIP's route: the retry holds each VIP once; removing the services deletes every route", async () => {
    const { pod, routing, failures, of } = await setup();
    const [V1, V2, V3] = ['10.96.0.1', '10.96.0.2', '10.96.0.3'];
    const [C1, C2, C3] = [V1, V2, V3].map((v) => `${v}/32`);
    await pod.setServices([svc(V1)]);
    failures.push({ at: 3 }); // guard V2, guard V3, route V2 in; route V3 not (and V1 not removed yet)
    await expect(pod.setServices([svc(V2), svc(V3)])).rejects.toThrow(/No buffer space/);
    await pod.setServices([svc(V2), svc(V3)]);
    expect(routing.routes().sort()).toEqual([C2, C3]);
    expect(of(C1, C2, C3)).toEqual([`guard ${C2}`, `guard ${C3}`, `route ${C2}`, `route ${C3}`]);
    await pod.setServices([]);
    expect(routing.routes()).toEqual([]); // V2's count back to zero: its route went
    expect(of(C1, C2, C3)).toEqual([]);
  });

  it('a removal whose route delete failed is done by the retry', async () => {
    const { pod, routing, failures, of } = await setup();
    const C1 = '10.96.0.1/32';
    await pod.setServices([svc('10.96.0.1')]);
    failures.push({ at: 0 });
    await expect(pod.setServices([])).rejects.toThrow(/No buffer space/);
    await pod.setServices([]);
    expect(routing.routes()).toEqual([]);
    expect(of(C1)).toEqual([]);
  });
});

describe('PolicyRouting: which references a failed call took', () => {
  it('addRoutes tells each reference as it is taken, also when the call then fails; removeRoute when it is dropped', async () => {
    const { routing, failures } = await setup();
    await routing.addRoutes([A]);
    const taken: string[] = [];
    failures.push({ at: 3 }); // B and 10.80.2.0/24: both guards and B's route in, the other route not; A only counted
    await expect(routing.addRoutes([A, B, '10.80.2.0/24'], { onRef: (c) => taken.push(c) })).rejects.toThrow(/No buffer space/);
    expect(taken.sort()).toEqual([A, B]);
    const released: string[] = [];
    failures.push({ at: 1 }); // route deleted, guard not: the reference is gone all the same
    await expect(routing.removeRoute(B, { onRelease: () => released.push(B) })).rejects.toThrow(/No buffer space/);
    expect(released).toEqual([B]);
    failures.push({ at: 0 }); // nothing deleted: still held
    await routing.removeRoute(A); // A: 2 -> 1, no ip
    await expect(routing.removeRoute(A, { onRelease: () => released.push(A) })).rejects.toThrow(/No buffer space/);
    expect(released).toEqual([B]);
    expect(routing.routes()).toEqual([A]);
  });
});
