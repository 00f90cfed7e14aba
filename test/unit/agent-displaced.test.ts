/**
 * A pod still registered on this node (its namespace here) that the registry now places
 * on another node (a StatefulSet pod force-deleted while its containers still run here,
 * and made again elsewhere) keeps its namespace fail closed (from a review of the pod
 * lifecycle): its proxy is stopped, but tenc's rule, guards and nftables table stay,
 * so the old containers cannot send project traffic in plaintext. Before, the agent
 * released it as a pod gone (cleanNetns). A pod no longer registered is still released
 * and cleaned. One Agent over a fake registry; web-1 and web-2 run (fake control
 * sockets, adopted); cleanNetns is recorded, not run.
 */
import { describe, it, expect, afterEach, vi } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';

const cleaned: string[] = [];
vi.mock('../../src/agent/netns.js', async (orig) => ({
  ...(await orig<typeof import('../../src/agent/netns.js')>()),
  cleanNetns: async (netns: string) => void cleaned.push(netns),
}));

const { Agent } = await import('../../src/agent/agent.js');
import type { Registration } from '../../src/agent/proxies.js';
import type { PodInfo } from '../../src/registry/registry.js';
import { fakePodProxy, stubRegistry, type FakeRequest } from './agent-fakes.js';

const KEY = (c: string) => c.repeat(43) + '=';

describe('agent: a registered pod the registry places on another node', () => {
  const cleanup: (() => void | Promise<void>)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it('has its proxy stopped but its namespace kept fail closed; an unregistered pod is cleaned', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tenc-agent-displaced-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const pod = (name: string, node: string, address: string): PodInfo => ({ project: 'alpha', name, node, address, addresses: [address], labels: {}, netns: null });
    let pods = [pod('web-1', 'n1', '10.128.1.10'), pod('web-2', 'n1', '10.128.1.11')];
    const registry = stubRegistry({ pods: async () => pods });
    const lines: { msg: string; pod?: string }[] = [];
    const log = pino({ level: 'info' }, new Writable({ write: (c, _e, cb) => (lines.push(JSON.parse(String(c))), cb()) }));
    let registrations: Registration[] = [];
    const requests: Record<string, FakeRequest[]> = {};
    const netnsOf: Record<string, string> = {};
    for (const [name, key] of [['web-1', KEY('A')], ['web-2', KEY('B')]] as const) {
      const netns = join(dir, `netns-${name}`);
      netnsOf[name] = netns;
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
      hooks: { reconciled() {}, proxyStarted() {}, proxyLost() {}, proxies() {} },
    });
    cleanup.push(() => agent.stop());
    await agent.start();
    // both adopted: each is told the other as a peer
    const told = (name: string, key: string) => requests[name]!.some((r) => r.op === 'set-peer' && r.peer?.publicKey === key);
    await vi.waitFor(() => expect(told('web-1', KEY('B')) && told('web-2', KEY('A'))).toBe(true), { timeout: 10_000, interval: 20 });

    // web-1 made again on n2 while its containers still run here (still registered)
    pods = [pod('web-1', 'n2', '10.128.2.10'), pod('web-2', 'n1', '10.128.1.11')];
    await vi.waitFor(() => expect(lines.some((l) => l.pod === 'web-1' && l.msg.startsWith('proxy stopped: the pod runs here'))).toBe(true), { timeout: 10_000, interval: 20 });
    expect(requests['web-1']!.some((r) => r.op === 'stop')).toBe(true);
    expect(cleaned).not.toContain(netnsOf['web-1']);
    expect(lines.some((l) => l.pod === 'web-1' && l.msg.startsWith('pod released'))).toBe(false);

    // web-2 no longer registered (its CNI DEL's registration gone): released and cleaned
    registrations = registrations.filter((r) => r.podName !== 'web-2');
    pods = [pod('web-1', 'n2', '10.128.2.10')];
    await vi.waitFor(() => expect(cleaned).toContain(netnsOf['web-2']), { timeout: 10_000, interval: 20 });
    expect(cleaned).not.toContain(netnsOf['web-1']);
  });
});
