/**
 * A pod of a protected namespace that the registry places on this node and that never
 * registered (its CNI ADD did not reach tenc: the tenc entry dropped from the node's
 * conflist, a pod that ran before its namespace was protected) runs without tenc:
 * past the grace it is logged once and counted in tenc_agent_pods_unregistered. A
 * registered pod, another node's pod, a pod of a namespace tenc does not protect and
 * one still within the grace are not; a project with no reconciler on this node is
 * looked at too; once the pod is gone the gauge is back at 0. A real NodeAgent (its
 * socket in a temp directory) over a fake registry, with fake reconcilers.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { NodeAgent } from '../../src/agent/node.js';
import { AgentMetrics } from '../../src/metrics/agent.js';
import type { PodInfo } from '../../src/registry/registry.js';
import { nodeRequest, stubRegistry } from './agent-fakes.js';

describe('node agent: pods of this node that never registered', () => {
  const cleanup: (() => void | Promise<void>)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it('are logged once and counted past the grace, in every protected project; registered, other nodes\', unprotected and gone pods are not', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tenc-node-unreg-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const pod = (project: string, name: string, node: string, address: string): PodInfo => ({ project, name, node, address, addresses: [address], labels: {}, netns: null });
    let pods: PodInfo[] = [
      pod('alpha', 'web-1', 'n1', '10.128.1.10'), // registered below
      pod('alpha', 'stray-1', 'n1', '10.128.1.11'),
      pod('alpha', 'db-1', 'n2', '10.128.2.10'), // another node
      pod('beta', 'old-1', 'n1', '10.128.1.20'), // beta: protected, no reconciler here (no pod of it registered)
      pod('plain', 'free-1', 'n1', '10.128.1.30'), // not protected
    ];
    const lines: { msg: string; pod?: string }[] = [];
    const log = pino({ level: 'info' }, new Writable({ write: (c, _e, cb) => (lines.push(JSON.parse(String(c))), cb()) }));
    const metrics = new AgentMetrics({ processMetrics: false });
    const gauge = async () => Number((await metrics.registry.metrics()).split('\n').find((l) => l.startsWith('tenc_agent_pods_unregistered '))?.split(' ')[1]);
    let now = 0;
    const node = new NodeAgent({
      registry: stubRegistry({ projects: async () => ['alpha', 'beta'], pods: async (project) => pods.filter((p) => p.project === project) }),
      node: 'n1',
      socket: join(dir, 'agent.sock'),
      runDir: join(dir, 'run'),
      log,
      hooks: metrics,
      unregisteredGraceMs: 1000,
      unregisteredEveryMs: 3_600_000, // looked at by the test
      makeAgent: () => ({ start: async () => {}, stop: async () => {}, prepare: async () => {}, release: async () => {}, whenReady: async () => true, check: async () => null, proxyIds: () => new Map() }),
    });
    await node.start();
    cleanup.push(() => node.stop());
    const add = (containerId: string, podName: string, netns: string) =>
      nodeRequest(join(dir, 'agent.sock'), { op: 'cni-add', containerId, netns, ifname: 'eth0', podNamespace: 'alpha', podName, addresses: ['10.128.1.12'] });
    // web-1's ADD
    expect(await add('c-web', 'web-1', `/proc/${process.pid}/ns/net`)).toMatchObject({ ok: true, result: { protected: true } });
    // gone-1: registered with a sandbox that is then gone (its DEL never reached tenc); the
    // pod's next sandbox runs without tenc: its stale registration must not hide it
    const sandbox = spawn('sleep', ['60']);
    cleanup.push(() => void sandbox.kill('SIGKILL'));
    expect(await add('c-gone', 'gone-1', `/proc/${sandbox.pid}/ns/net`)).toMatchObject({ ok: true, result: { protected: true } });
    pods.push(pod('alpha', 'gone-1', 'n1', '10.128.1.12'));
    sandbox.kill('SIGKILL');
    await new Promise((r) => sandbox.once('exit', r));
    const warned = () => lines.filter((l) => l.msg.startsWith('pod runs on this node without tenc')).map((l) => l.pod);
    const realNow = Date.now;
    Date.now = () => realNow() + now;
    cleanup.push(() => void (Date.now = realNow));
    // first look: within the grace
    expect(await node.checkUnregistered()).toBe(0);
    expect(await gauge()).toBe(0);
    now = 1500;
    expect(await node.checkUnregistered()).toBe(3);
    expect(await gauge()).toBe(3);
    expect(warned().sort()).toEqual(['alpha/gone-1', 'alpha/stray-1', 'beta/old-1']);
    // looked at again: still three, still one warning each
    expect(await node.checkUnregistered()).toBe(3);
    expect(warned()).toHaveLength(3);
    // the pods are gone (or restarted through tenc): back at 0
    pods = pods.filter((p) => p.name !== 'stray-1' && p.name !== 'old-1' && p.name !== 'gone-1');
    expect(await node.checkUnregistered()).toBe(0);
    expect(await gauge()).toBe(0);
  });
});
