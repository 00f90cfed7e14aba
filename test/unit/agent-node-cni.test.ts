/**
 * The node socket's ADD and DEL around a project's reconciler: a real NodeAgent (its
 * socket and state file in a temp directory) with a fake reconciler per project, so
 * nothing is started and no namespace is touched.
 *  - a pod of an unprotected namespace is passed through whatever its name or
 *    addresses (tenc's rules for a pod are not that pod's); in a protected one a name
 *    with a dot is refused, naming the field and the rule;
 *  - a DEL retried while the first DEL's release still runs waits for that release,
 *    and an ADD of the pod's next sandbox is refused (EEXIST: the runtime retries)
 *    until it is done: before, the retry answered at once and the new sandbox was
 *    "protected" by a proxy being stopped.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeAgent, type ProjectAgent } from '../../src/agent/node.js';
import { nodeLine, nodeRequest, stubRegistry, type NodeAnswer } from './agent-fakes.js';

let dir: string;
let node: NodeAgent;
let made: string[];
let prepared: string[];
let releases: { pod: string; done: () => void }[];

type Answer = NodeAnswer;

/** One request line on the node socket; the answer line, parsed. */
const request = (m: Record<string, unknown>, socket = join(dir, 'agent.sock')): Promise<Answer> => nodeRequest(socket, m);

/** Whether the promise settles within ms. */
const settles = (p: Promise<unknown>, ms: number) => Promise.race([p.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);

const pod = (containerId: string, over: Record<string, unknown> = {}) => ({
  op: 'cni-add',
  containerId,
  netns: `/proc/${process.pid}/ns/net`,
  ifname: 'eth0',
  podNamespace: 'alpha',
  podName: 'web-1',
  addresses: ['10.128.1.10'],
  timeoutMs: 1000,
  ...over,
});

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tenc-node-cni-'));
  made = [];
  prepared = [];
  releases = [];
  const fake = (project: string): ProjectAgent => ({
    start: async () => {},
    stop: async () => {},
    prepare: async (reg) => {
      prepared.push(`${reg.podName}/${reg.containerId}`);
    },
    // a release that ends when the test says so (a proxy slow to stop)
    release: (p: string) => new Promise<void>((done) => releases.push({ pod: p, done })),
    whenReady: async () => true,
    check: async () => null,
    proxyIds: () => new Map(),
    ...{ project },
  });
  node = new NodeAgent({
    registry: stubRegistry(),
    node: 'n1',
    socket: join(dir, 'agent.sock'),
    runDir: join(dir, 'run'),
    makeAgent: (o) => {
      made.push(o.project);
      return fake(o.project);
    },
  });
  await node.start();
});

afterEach(async () => {
  for (const r of releases) r.done();
  await node.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('node socket: ADD of pods tenc does not protect', () => {
  it('an unprotected namespace passes a pod through whatever its name, addresses or netns', async () => {
    const odd = pod('c1', { podNamespace: 'plain', podName: 'web.v2', addresses: ['10.0.0.1', 'fd00::1', '10.0.0.2'], netns: '/etc/passwd' });
    expect(await request(odd)).toEqual({ id: 1, ok: true, result: { protected: false } });
    expect(made).toEqual([]);
    // a namespace that is not a name is still an error: it names the field
    const bad = await request(pod('c2', { podNamespace: 'Not_A_Namespace' }));
    expect(bad.error?.code).toBe('EINVAL');
    expect(bad.error?.message).toMatch(/^podNamespace: "Not_A_Namespace" is not a namespace name/);
    expect((await request(pod('c3', { podNamespace: undefined }))).error?.code).toBe('EINVAL');
  });

  it('a protected namespace refuses a pod name with dots, naming the field and the rule; a long one is as before', async () => {
    const r = await request(pod('c1', { podName: 'web.v2' }));
    expect(r.ok).toBe(false);
    expect(r.error?.code).toBe('EINVAL');
    expect(r.error?.message).toBe('podName: "web.v2" has characters other than lowercase letters, digits and "-": tenc protects only pods named so');
    expect(prepared).toEqual([]);
    // a long name (a bare pod's, up to 253) is as before: protected
    expect((await request(pod('c2', { podName: 'a'.repeat(100) }))).result).toEqual({ protected: true });
    expect((await request(pod('c3', { addresses: ['10.0.0.1', 'fd00::1', '10.0.0.2'] }))).error?.code).toBe('EINVAL');
    // the same pod, named so: protected
    expect(await request(pod('c4'))).toEqual({ id: 1, ok: true, result: { protected: true } });
    expect(prepared).toEqual([`${'a'.repeat(100)}/c2`, 'web-1/c4']);
  });
});

describe('node socket: a DEL whose release is slow', () => {
  it('a retried DEL waits for the first one\'s release; the next sandbox\'s ADD is refused until it is done', async () => {
    expect((await request(pod('old'))).result).toEqual({ protected: true });
    // the first DEL: its release does not end (the plugin gives up waiting and answers 11)
    const first = request({ op: 'cni-del', containerId: 'old' });
    await expect.poll(() => releases.length).toBe(1);
    expect(await settles(first, 100)).toBe(false);
    // the runtime's retry: no answer while the release runs
    const retry = request({ op: 'cni-del', containerId: 'old' });
    expect(await settles(retry, 200)).toBe(false);
    // the pod's next sandbox: refused, its old proxy not gone yet
    const next = await request(pod('new', { netns: `/proc/${process.pid}/ns/net` }));
    expect(next.ok).toBe(false);
    expect(next.error?.code).toBe('EEXIST');
    expect(next.error?.message).toBe('pod alpha/web-1: its container old is still being released: try again');
    // the same container ADDed again after its DEL: refused too (the release would clean what it put in place)
    expect((await request(pod('old'))).error?.code).toBe('EEXIST');
    expect(prepared).toEqual(['web-1/old']);
    // another pod is not held up
    expect((await request(pod('other', { podName: 'web-2' }))).result).toEqual({ protected: true });
    // the release ends: both DELs answer, and the next sandbox is protected
    releases[0]!.done();
    expect(await first).toEqual({ id: 1, ok: true, result: {} });
    expect(await retry).toEqual({ id: 1, ok: true, result: {} });
    expect(releases).toHaveLength(1);
    expect((await request(pod('new'))).result).toEqual({ protected: true });
    expect(prepared).toEqual(['web-1/old', 'web-2/other', 'web-1/new']);
    // a DEL after that: nothing registered under the old id, answered at once
    expect(await request({ op: 'cni-del', containerId: 'old' })).toEqual({ id: 1, ok: true, result: {} });
  });
});

describe('node socket: --cni-wait proxy', () => {
  it('the proxy wait gets what is left of timeoutMs after the fail-closed step, not timeoutMs again', async () => {
    const waits: number[] = [];
    const sock = join(dir, 'proxy-wait.sock');
    const n = new NodeAgent({
      registry: stubRegistry(),
      node: 'n1',
      socket: sock,
      runDir: join(dir, 'run2'),
      cniWait: 'proxy',
      makeAgent: () => ({
        start: async () => {},
        stop: async () => {},
        prepare: () => new Promise<void>((r) => setTimeout(r, 600)), // fail-closed took 0.6 s
        release: async () => {},
        whenReady: async (_pod: string, ms: number) => (waits.push(ms), false),
        check: async () => null,
        proxyIds: () => new Map(),
      }),
    });
    await n.start();
    try {
      const r = await request(pod('c1'), sock);
      expect(r.error?.code).toBe('ETIMEDOUT');
      expect(r.error?.message).toBe('pod alpha/web-1: proxy not running within 1000 ms');
      expect(waits).toHaveLength(1);
      // at most 1000 - 600 ms were left for it (before: the whole 1000 again)
      expect(waits[0]).toBeLessThanOrEqual(400);
    } finally {
      await n.stop();
    }
  });
});

describe('node socket: bad request lines', () => {
  it('an id that is not a plain value is refused, and the agent lives on (a deeply nested one parsed, then threw writing the answer)', async () => {
    const deep = '['.repeat(200_000) + ']'.repeat(200_000);
    // under the line limit: 64 KiB
    const r = await nodeLine(join(dir, 'agent.sock'), `{"op":"cni-status","id":${deep.slice(0, 30_000)}${deep.slice(-30_000)}}`);
    expect(r).toEqual({ ok: false, error: { code: 'EINVAL', message: 'id: must be a number, a string (at most 256 characters) or null' } });
    expect((await request({ op: 'cni-status', id: 'x' })).ok).toBe(true);
  });
});
