/**
 * A pod the registry places on this node that never registered (its CNI ADD did not
 * reach tenc: the tenc entry dropped from the node's conflist, a pod that ran before
 * its namespace was protected) runs without tenc: after the grace it is logged once
 * and counted in tenc_agent_pods_unregistered; a registered pod, another node's pod
 * and one still within the grace are not; once it is gone the gauge goes back to 0.
 * One Agent over a fake registry; web-1 runs (a fake control socket, adopted).
 */
import { describe, it, expect, afterEach, vi } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Agent } from '../../src/agent/agent.js';
import { podSocket } from '../../src/agent/netns.js';
import type { Registration } from '../../src/agent/proxies.js';
import { AgentMetrics } from '../../src/metrics/agent.js';
import type { PodInfo } from '../../src/registry/registry.js';
import { fakeProxy, stubRegistry } from './agent-fakes.js';

describe('agent: pods of this node that never registered', () => {
  const cleanup: (() => void | Promise<void>)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it('are logged once and counted after the grace; registered, other nodes\' and gone pods are not', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tenc-agent-unreg-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const pod = (name: string, node: string, address: string): PodInfo => ({ project: 'alpha', name, node, address, addresses: [address], labels: {}, netns: null });
    let pods = [pod('web-1', 'n1', '10.128.1.10'), pod('stray-1', 'n1', '10.128.1.11'), pod('db-1', 'n2', '10.128.2.10')];
    const netns = join(dir, 'netns-web');
    writeFileSync(netns, '');
    const socket = podSocket(netns);
    mkdirSync(join(socket, '..'), { recursive: true });
    rmSync(socket, { force: true });
    const server = await fakeProxy(socket, 'A'.repeat(43) + '=');
    cleanup.push(() => new Promise<void>((r) => server.close(() => r())));
    cleanup.push(() => rmSync(socket, { force: true }));
    const registrations: Registration[] = [{ containerId: 'c-web', netns, ifname: 'eth0', podNamespace: 'alpha', podName: 'web-1', podUid: 'u', addresses: ['10.128.1.10'], proxy: null }];
    const lines: { msg: string; pod?: string }[] = [];
    const log = pino({ level: 'info' }, new Writable({ write: (c, _e, cb) => (lines.push(JSON.parse(String(c))), cb()) }));
    const metrics = new AgentMetrics({ processMetrics: false });
    const gauge = async () => Number((await metrics.registry.metrics()).split('\n').find((l) => l.startsWith('tenc_agent_pods_unregistered '))?.split(' ')[1]);
    const agent = new Agent({
      registry: stubRegistry({ pods: async () => pods }),
      node: 'n1',
      project: 'alpha',
      registrations: () => registrations,
      runDir: join(dir, 'run'),
      log,
      hooks: metrics,
      unregisteredGraceMs: 1500,
    });
    cleanup.push(() => agent.stop());
    await agent.start();
    expect(await gauge()).toBe(0); // within the grace
    const warned = () => lines.filter((l) => l.msg.startsWith('pod runs on this node without tenc'));
    await vi.waitFor(async () => expect(await gauge()).toBe(1), { timeout: 10_000, interval: 100 });
    expect(warned().map((l) => l.pod)).toEqual(['stray-1']);
    // more reconciles: still one warning
    await new Promise((r) => setTimeout(r, 2500));
    expect(warned()).toHaveLength(1);
    expect(await gauge()).toBe(1);
    // the pod is gone: the gauge goes back to 0
    pods = pods.filter((p) => p.name !== 'stray-1');
    await vi.waitFor(async () => expect(await gauge()).toBe(0), { timeout: 10_000, interval: 100 });
  });
});
