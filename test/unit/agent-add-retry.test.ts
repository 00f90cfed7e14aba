/**
 * An ADD retried for a pod whose proxy entry exists but whose proxy does not run (its
 * start failed, a restart waits): prepare() resolved at once because the entry had the
 * same container id, so the node agent answered {protected: true} for a pod nothing had
 * made fail closed. Now only a running proxy (its public key known) is taken as owning
 * the state; otherwise the pod is made fail closed as at a first ADD (here that fails on
 * the missing psk, as the proxy's starts do: the ADD says so instead of "protected").
 * One Agent over a fake registry whose pskFile() throws until the test gives a proxy;
 * the pod's "netns" is a plain file; the running proxy is a fake control socket.
 */
import { describe, it, expect, afterEach, vi } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../../src/agent/agent.js';
import type { AgentHooks } from '../../src/metrics/agent.js';
import { fakePodProxy, stubRegistry } from './agent-fakes.js';

/** Polls until cond holds (vitest's waitFor), at most 15 s. */
const until = (cond: () => boolean) => vi.waitFor(() => expect(cond()).toBe(true), { timeout: 15_000, interval: 20 });

describe('agent: prepare() of a retried ADD', () => {
  const cleanup: (() => void | Promise<void>)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it('a proxy entry whose start failed is not taken for a fail-closed pod; a running proxy is', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tenc-agent-add-retry-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const netns = join(dir, 'netns');
    writeFileSync(netns, '');
    let pskReads = 0;
    const registry = stubRegistry({
      pskFile: async () => {
        pskReads++;
        throw new Error('namespace alpha: no Secret tenc-psk');
      },
    });
    let lost = 0;
    const hooks: AgentHooks = { reconciled: () => {}, proxyStarted: () => {}, proxyLost: () => void lost++, proxies: () => {} };
    const reg = { containerId: 'c1', netns, ifname: 'eth0', podNamespace: 'alpha', podName: 'web-1', podUid: 'u1', addresses: ['10.128.1.10'], proxy: null };
    const agent = new Agent({ registry, node: 'n1', project: 'alpha', registrations: () => [reg], runDir: join(dir, 'run'), hooks });
    cleanup.push(() => agent.stop());
    await agent.start();

    // the reconcile made the pod's proxy entry and its start failed: a restart waits
    await until(() => lost >= 1);
    expect(agent.proxyIds().has('web-1')).toBe(true);
    expect(agent.isReady('web-1')).toBe(false);
    // the runtime's retried ADD (same container): made fail closed as a first ADD, which
    // fails here as the start did (before: resolved at once, "protected")
    const before = pskReads;
    await expect(agent.prepare(reg)).rejects.toThrow('namespace alpha: no Secret tenc-psk');
    expect(pskReads).toBeGreaterThan(before);

    // a proxy runs: the retried ADD is answered at once, nothing written or read
    await fakePodProxy(netns, 'A'.repeat(43) + '=', [], cleanup);
    expect(await agent.whenReady('web-1', 15_000)).toBe(true);
    const reads = pskReads;
    await agent.prepare(reg);
    expect(pskReads).toBe(reads);
    // another container of the pod while that proxy runs: refused, as before
    await expect(agent.prepare({ ...reg, containerId: 'c2' })).rejects.toThrow('the proxy of its container c1 still runs: try again once it is released');
  });
});
