/**
 * A proxy that is slow to start does not hold up the node's other pods: while one
 * pod's start hangs (its project psk never comes), another pod of the node, already
 * running, is still told its peers. One Agent over a fake registry; web-1's proxy is a
 * fake control socket (adopted), slow-1's start waits in pskFile() until the test lets
 * it fail; the pods' "netns" are plain files (only their paths and inodes are used).
 */
import { describe, it, expect, afterEach, vi } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../../src/agent/agent.js';
import { podSocket } from '../../src/agent/netns.js';
import type { PeerInfo, PodInfo } from '../../src/registry/registry.js';
import { fakeProxy, stubRegistry, type FakeRequest } from './agent-fakes.js';

const KEY_WEB = 'A'.repeat(43) + '=';
const KEY_DB = 'B'.repeat(43) + '=';


describe('agent: a proxy start does not block the other pods', () => {
  const cleanup: (() => void | Promise<void>)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it('a running pod gets its new peer while another pod of the node is still starting', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tenc-agent-start-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const netnsWeb = join(dir, 'netns-web');
    const netnsSlow = join(dir, 'netns-slow');
    writeFileSync(netnsWeb, '');
    writeFileSync(netnsSlow, '');
    const pod = (name: string, node: string, address: string): PodInfo => ({ project: 'alpha', name, node, address, addresses: [address], labels: {}, netns: null });
    const pods = [pod('web-1', 'n1', '10.128.1.10'), pod('slow-1', 'n1', '10.128.1.11'), pod('db-1', 'n2', '10.128.2.10')];
    let peers: PeerInfo[] = [];
    // slow-1's start waits here until the test lets it fail
    let failPsk: (e: Error) => void = () => {};
    let pskCalls = 0;
    const pskHangs = new Promise<string>((_, reject) => (failPsk = reject));
    let released = false;
    const registry = stubRegistry({
      pods: async () => pods,
      peers: async () => peers,
      pskFile: () => {
        pskCalls++;
        return released ? Promise.reject(new Error('no psk (test over)')) : pskHangs;
      },
    });
    const reg = (name: string, netns: string) => ({ containerId: `c-${name}`, netns, ifname: 'eth0', podNamespace: 'alpha', podName: name, podUid: `u-${name}`, addresses: [pods.find((p) => p.name === name)!.address], proxy: null });
    const registrations = [reg('web-1', netnsWeb), reg('slow-1', netnsSlow)];

    const socket = podSocket(netnsWeb);
    mkdirSync(join(socket, '..'), { recursive: true });
    rmSync(socket, { force: true });
    const requests: FakeRequest[] = [];
    const server = await fakeProxy(socket, KEY_WEB, requests);
    cleanup.push(() => new Promise<void>((r) => server.close(() => r())));
    cleanup.push(() => rmSync(socket, { force: true }));

    const agent = new Agent({ registry, node: 'n1', project: 'alpha', registrations: () => registrations, runDir: join(dir, 'run') });
    cleanup.push(() => agent.stop());
    cleanup.push(() => {
      released = true;
      failPsk(new Error('no psk (test over)'));
    });
    await agent.start();
    expect(await agent.whenReady('web-1', 10_000)).toBe(true);
    await vi.waitFor(() => expect(pskCalls).toBeGreaterThan(0), { timeout: 10_000, interval: 20 });

    // db-1 (another node) publishes its key while slow-1 is still starting
    peers = [{ project: 'alpha', pod: 'db-1', node: 'n2', publicKey: KEY_DB, endpoint: '10.128.2.10:51820' }];
    const t0 = Date.now();
    await vi.waitFor(() => expect(requests.some((r) => r.op === 'set-peer' && r.peer?.publicKey === KEY_DB)).toBe(true), { timeout: 10_000, interval: 20 });
    console.log(`agent start: web-1 got db-1's key ${Date.now() - t0} ms after it was published, slow-1 still starting`);
    expect(agent.isReady('slow-1')).toBe(false);
    // the rekey for the new key follows the set-peer's answer (agent.ts apply): wait for it
    await vi.waitFor(() => expect(requests.some((r) => r.op === 'rekey' && r.publicKey === KEY_DB)).toBe(true), { timeout: 10_000, interval: 20 });
    expect(agent.isReady('slow-1')).toBe(false);
  });
});
