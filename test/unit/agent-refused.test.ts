/**
 * One request a pod refuses holds up nothing else. A pod's proxy refuses the set-peer
 * of one peer (as it refused "None/32" in allowed IPs, a value a backend let through):
 * before, apply() ended at that request, so for every client pod the remaining peers,
 * the services, endpoints, members and policy stopped updating. Now the other peers,
 * the services and the members are still set, and the refusal is logged once however
 * many reconciles meet it.
 */
import { describe, it, expect, afterEach, vi } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Agent } from '../../src/agent/agent.js';
import type { PeerInfo, PodInfo, Registry } from '../../src/registry/registry.js';
import type { AgentHooks } from '../../src/metrics/agent.js';
import { fakePodProxy, stubRegistry, type FakeRequest } from './agent-fakes.js';

const KEY = (c: string) => c.repeat(43) + '=';

describe('agent: a request the pod refuses', () => {
  const cleanup: (() => void | Promise<void>)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  /**
   * The agent of node n1 for pod web-1 (10.128.1.10) of alpha, over `registry`, its
   * proxy a fake that answers `refuse(request)` as an error when not null; its log lines
   * collected.
   */
  async function startAgent(registry: Registry, refuse: (r: FakeRequest) => string | null, hooks: Partial<AgentHooks> = {}) {
    const dir = mkdtempSync(join(tmpdir(), 'tenc-agent-refused-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const lines: { msg: string; pod?: string; op?: string }[] = [];
    const log = pino({ level: 'info' }, new Writable({ write: (c, _e, cb) => (lines.push(JSON.parse(String(c))), cb()) }));
    const netns = join(dir, 'netns-web-1');
    writeFileSync(netns, '');
    const requests: FakeRequest[] = [];
    await fakePodProxy(netns, KEY('A'), requests, cleanup, refuse);
    const agent = new Agent({
      registry,
      node: 'n1',
      project: 'alpha',
      registrations: () => [{ containerId: 'c-web-1', netns, ifname: 'eth0', podNamespace: 'alpha', podName: 'web-1', podUid: 'u-web-1', addresses: ['10.128.1.10'], proxy: null }],
      runDir: join(dir, 'run'),
      log,
      hooks: { reconciled() {}, proxyStarted() {}, proxyLost() {}, proxies() {}, ...hooks },
    });
    cleanup.push(() => agent.stop());
    await agent.start();
    return { agent, lines, requests };
  }

  it('does not hold up the other peers, the services and the members; logged once', async () => {
    const pod = (name: string, node: string, address: string, labels: Record<string, string> = {}): PodInfo => ({ project: 'alpha', name, node, address, addresses: [address], labels, netns: null });
    // the refused peer first: apply() meets it before the others
    const pods = [pod('a-bad', 'n2', '10.128.2.9'), pod('db-1', 'n2', '10.128.2.10', { app: 'db' }), pod('web-1', 'n1', '10.128.1.10')];
    const peers: PeerInfo[] = [
      { project: 'alpha', pod: 'a-bad', node: 'n2', publicKey: KEY('E'), endpoint: '10.128.2.9:51820' },
      { project: 'alpha', pod: 'db-1', node: 'n2', publicKey: KEY('D'), endpoint: '10.128.2.10:51820' },
    ];
    const registry = stubRegistry({
      pods: async () => pods,
      peers: async () => peers,
      services: async () => [{ project: 'alpha', name: 'db', vip: '10.96.0.20', ports: [{ protocol: 'tcp', port: 5432 }], selector: { app: 'db' } }],
      endpoints: async () => [{ project: 'alpha', service: 'db', pods: [{ name: 'db-1', address: '10.128.2.10', node: 'n2' }] }],
    });
    const reconciles: number[] = [];
    const { lines, requests } = await startAgent(
      registry,
      (r) => (r.op === 'set-peer' && r.peer?.publicKey === KEY('E') ? 'peer.allowedIps[0]: "None/32" is not an IP address or CIDR' : null),
      { reconciled: () => reconciles.push(1) },
    );
    const sent = (op: string, key?: string) => requests.some((r) => r.op === op && (key === undefined || r.peer?.publicKey === key));
    await vi.waitFor(() => expect(sent('set-peer', KEY('D')) && sent('set-services') && sent('set-members')).toBe(true), { timeout: 10_000, interval: 20 });
    // tried again at later reconciles, logged once
    const before = reconciles.length;
    await vi.waitFor(() => expect(reconciles.length).toBeGreaterThanOrEqual(before + 2), { timeout: 10_000, interval: 50 });
    expect(requests.filter((r) => r.op === 'set-peer' && r.peer?.publicKey === KEY('E')).length).toBeGreaterThanOrEqual(2);
    expect(lines.filter((l) => l.msg.startsWith('pod refused a request'))).toHaveLength(1);
    expect(lines.filter((l) => l.msg === 'cannot configure pod proxy')).toHaveLength(0);
  });

  it('a refusal is logged again when it returns after that request succeeded', async () => {
    const pod = (name: string, node: string, address: string): PodInfo => ({ project: 'alpha', name, node, address, addresses: [address], labels: {}, netns: null });
    const pods = [pod('a-bad', 'n2', '10.128.2.9'), pod('web-1', 'n1', '10.128.1.10')];
    let peers: PeerInfo[] = [{ project: 'alpha', pod: 'a-bad', node: 'n2', publicKey: KEY('E'), endpoint: '10.128.2.9:51820' }];
    const registry = stubRegistry({ pods: async () => pods, peers: async () => peers });
    let refusing = true;
    const { agent, lines } = await startAgent(registry, (r) => (refusing && r.op === 'set-peer' && r.peer?.publicKey === KEY('E') ? 'peer.endpoint: refused for this test' : null));
    const refusals = () => lines.filter((l) => l.msg.startsWith('pod refused a request')).length;
    await vi.waitFor(() => expect(refusals()).toBe(1), { timeout: 10_000, interval: 20 });
    // the pod takes it now: set, and the refusal forgotten
    refusing = false;
    await vi.waitFor(() => expect(lines.some((l) => l.msg === 'peer set')).toBe(true), { timeout: 10_000, interval: 20 });
    // the same refusal again (the peer changed, so set-peer is sent again): logged again
    refusing = true;
    peers = [{ ...peers[0]!, endpoint: '10.128.2.9:51821' }];
    agent.kick();
    await vi.waitFor(() => expect(refusals()).toBe(2), { timeout: 10_000, interval: 20 });
  });
});
