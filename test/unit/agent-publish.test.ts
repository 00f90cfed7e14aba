/**
 * One pod's key the registry refuses holds up nothing else, and keys the agent does
 * not believe are reported. One Agent over a fake registry; web-1 and web-2 run (fake
 * control sockets, adopted); the registry refuses web-1's publish (as the API server's
 * admission does for a TencPeer another node holds).
 *  - web-2's key is published and both pods get db-1 (another node's pod) as a peer:
 *    before, the refused publish ended every reconcile before the peers were set;
 *  - web-1's publish is tried again (back-off), its failure logged once;
 *  - a key for web-1 published by node n2 (web-1 runs on n1) is not believed: logged
 *    once and counted once (peerRejected), however many reconciles see it.
 */
import { describe, it, expect, afterEach, vi } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Agent, publishFailure, publishWaits } from '../../src/agent/agent.js';
import type { Registration } from '../../src/agent/proxies.js';
import type { PeerInfo, PodInfo } from '../../src/registry/registry.js';
import { fakePodProxy, stubRegistry, type FakeRequest } from './agent-fakes.js';

const KEY = (c: string) => c.repeat(43) + '=';

describe('agent: a refused publish', () => {
  const cleanup: (() => void | Promise<void>)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it('does not hold up the other pods\' keys, peers and services; a foreign key is reported once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tenc-agent-publish-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const pod = (name: string, node: string, address: string): PodInfo => ({ project: 'alpha', name, node, address, addresses: [address], labels: {}, netns: null });
    const pods = [pod('web-1', 'n1', '10.128.1.10'), pod('web-2', 'n1', '10.128.1.11'), pod('db-1', 'n2', '10.128.2.10')];
    const peers: PeerInfo[] = [
      { project: 'alpha', pod: 'db-1', node: 'n2', publicKey: KEY('D'), endpoint: '10.128.2.10:51820' },
      // n2 publishing for n1's pod: never believed
      { project: 'alpha', pod: 'web-1', node: 'n2', publicKey: KEY('E'), endpoint: '10.128.2.99:51820' },
    ];
    const publishes: string[] = [];
    const registry = stubRegistry({
      pods: async () => pods,
      peers: async () => peers,
      publishPeer: async (p) => {
        publishes.push(p.pod);
        if (p.pod === 'web-1') throw new Error('tencpeers "web-1" is forbidden: held by node n2');
      },
    });
    const lines: { msg: string; pod?: string; why?: string }[] = [];
    const log = pino({ level: 'info' }, new Writable({ write: (c, _e, cb) => (lines.push(JSON.parse(String(c))), cb()) }));
    const rejected: number[] = [];
    const registrations: Registration[] = [];
    const requests: Record<string, FakeRequest[]> = {};
    for (const [name, key] of [['web-1', KEY('A')], ['web-2', KEY('B')]] as const) {
      const netns = join(dir, `netns-${name}`);
      writeFileSync(netns, '');
      requests[name] = [];
      await fakePodProxy(netns, key, requests[name], cleanup);
      registrations.push({ containerId: `c-${name}`, netns, ifname: 'eth0', podNamespace: 'alpha', podName: name, podUid: `u-${name}`, addresses: [pods.find((p) => p.name === name)!.address], proxy: null });
    }
    const agent = new Agent({
      registry,
      node: 'n1',
      project: 'alpha',
      registrations: () => registrations,
      runDir: join(dir, 'run'),
      log,
      hooks: { reconciled() {}, proxyStarted() {}, proxyLost() {}, proxies() {}, peerRejected: () => rejected.push(1) },
    });
    cleanup.push(() => agent.stop());
    await agent.start();
    // both pods are told db-1's key, web-2's key is published
    const told = (name: string) => requests[name]!.some((r) => r.op === 'set-peer' && r.peer?.publicKey === KEY('D'));
    await vi.waitFor(() => expect(told('web-1') && told('web-2')).toBe(true), { timeout: 10_000, interval: 20 });
    expect(publishes).toContain('web-2');
    // web-1's publish is tried again, and its failure logged once
    await vi.waitFor(() => expect(publishes.filter((p) => p === 'web-1').length).toBeGreaterThanOrEqual(2), { timeout: 10_000, interval: 50 });
    expect(lines.filter((l) => l.msg.startsWith('cannot publish') && l.pod === 'web-1')).toHaveLength(1);
    // n2's key for web-1: reported once, never a peer of web-2
    expect(rejected).toHaveLength(1);
    const warn = lines.filter((l) => l.msg === 'published key not believed');
    expect(warn).toHaveLength(1);
    expect(warn[0]).toMatchObject({ pod: 'web-1', node: 'n2', why: 'published by node n2, but the pod runs on n1' });
    expect(requests['web-2']!.some((r) => r.op === 'set-peer' && r.peer?.publicKey === KEY('E'))).toBe(false);
  });
});

describe('agent: the publish back-off', () => {
  it('doubles from 1 s to 60 s for one key and endpoint; a new key (a restarted proxy) does not wait', () => {
    const A = 'keyA 10.0.0.1:51820';
    const B = 'keyB 10.0.0.1:51820';
    let f = publishFailure(undefined, A, 'HTTP 403', 0);
    expect(f).toEqual({ mine: A, message: 'HTTP 403', retryAt: 1000, delayMs: 1000 });
    const delays = [f.delayMs];
    for (let i = 0; i < 8; i++) delays.push((f = publishFailure(f, A, 'HTTP 403', 0)).delayMs);
    expect(delays).toEqual([1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
    expect(publishWaits(f, A, 59_999)).toBe(true);
    expect(publishWaits(f, A, 60_000)).toBe(false);
    // the proxy restarted with a new key: published at once, its own back-off from 1 s
    expect(publishWaits(f, B, 1)).toBe(false);
    expect(publishFailure(f, B, 'HTTP 403', 5).delayMs).toBe(1000);
    expect(publishWaits(undefined, A, 0)).toBe(false);
  });
});
