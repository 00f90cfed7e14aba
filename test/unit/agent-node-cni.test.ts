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
 *    "protected" by a proxy being stopped;
 *  - an unchained ADD (no addresses: Multus calls the plugin alone, without prevResult)
 *    is registered with the addresses read in the pod's netns, then goes the chained
 *    ADD's way; none there is EADDRNOTAVAIL (code 11: the runtime retries), nothing
 *    registered. podAddressesFrom, the reading of `ip -j` dumps, on their real forms;
 *  - a leftover registration blocked the pod's name for good: the ADD's deadline began
 *    only after the registry answered, so an ADD the plugin gave up on (its DEL found
 *    nothing) registered late, and every later sandbox was refused (EEXIST) even once
 *    the old netns was gone. Now one deadline from the ADD's arrival, a DEL makes an ADD
 *    not registered yet give up, and an earlier sandbox whose netns is gone is released;
 *  - a DEL whose release failed forgot the pod first: its retry answered {} and nothing
 *    was released again. Now the registration stays until the release succeeded;
 *  - an over-long request line's E2BIG answer was lost (the socket destroyed at once).
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import { join } from 'node:path';
import { NodeAgent, type ProjectAgent } from '../../src/agent/node.js';
import { podAddressesFrom, PodAddressError } from '../../src/agent/netns.js';
import type { Registration } from '../../src/agent/proxies.js';
import { ControlClientError, controlRequest } from '../../src/control/client.js';
import { nodeLine, nodeRequest, stubRegistry, type NodeAnswer } from './agent-fakes.js';

let dir: string;
let node: NodeAgent;
let made: string[];
let prepared: string[];
let releases: { pod: string; netns?: string; done: () => void; fail: (e: Error) => void }[];
/** What registry.projects() answers (the ADD asks it first); `asked` counts the calls. */
let projects: () => Promise<string[]>;
let asked: number;
/** The registrations the project's reconciler is given (AgentOptions.registrations). */
let reconciled: () => Registration[];
/** The registrations prepare() got. */
let preparedRegs: Registration[];
/** What the agent finds in a pod's netns for an unchained ADD (the netns paths it was asked about in `read`). */
let inNetns: (netns: string) => Promise<string[]>;
let read: string[];

type Answer = NodeAnswer;

/** One request line on the node socket; the answer line, parsed. */
const request = (m: Record<string, unknown>, socket = join(dir, 'agent.sock')): Promise<Answer> => nodeRequest(socket, m);

/** The state file's registrations (none before the first one is saved). */
const saved = () => (existsSync(join(dir, 'run', 'registrations.json')) ? (JSON.parse(readFileSync(join(dir, 'run', 'registrations.json'), 'utf8')).registrations as Registration[]) : []);

/** A promise and its resolve. */
function gate<T>(): { promise: Promise<T>; open: (v: T) => void } {
  let open!: (v: T) => void;
  const promise = new Promise<T>((r) => (open = r));
  return { promise, open };
}

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
  preparedRegs = [];
  read = [];
  projects = async () => ['alpha'];
  asked = 0;
  inNetns = async () => {
    throw new Error('not asked in this test');
  };
  const fake = (project: string): ProjectAgent => ({
    start: async () => {},
    stop: async () => {},
    prepare: async (reg) => {
      prepared.push(`${reg.podName}/${reg.containerId}`);
      preparedRegs.push(reg);
    },
    // a release that ends (or fails) when the test says so (a proxy slow to stop)
    release: (p: string, reg?: { netns: string }) => new Promise<void>((done, fail) => releases.push({ pod: p, netns: reg?.netns, done, fail })),
    whenReady: async () => true,
    check: async () => null,
    proxyIds: () => new Map(),
    ...{ project },
  });
  node = new NodeAgent({
    registry: stubRegistry({ projects: () => (asked++, projects()) }),
    node: 'n1',
    socket: join(dir, 'agent.sock'),
    runDir: join(dir, 'run'),
    podAddresses: (netns) => (read.push(netns), inNetns(netns)),
    makeAgent: (o) => {
      made.push(o.project);
      reconciled = o.registrations;
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

describe('node socket: an ADD late from the registry leaves no registration behind (the pod\'s name blocked for good)', () => {
  it('the deadline counts from the ADD\'s arrival: a registry slow to answer is ETIMEDOUT within timeoutMs, nothing registered when it answers', async () => {
    // the Kubernetes registry waits up to 10 s for its first sync; it answers after 1.5 s here
    const slow = gate<string[]>();
    projects = () => slow.promise;
    setTimeout(() => slow.open(['alpha']), 1500);
    const t0 = Date.now();
    const r = await request(pod('c1')); // timeoutMs 1000
    expect(r.error?.code).toBe('ETIMEDOUT');
    expect(r.error?.message).toBe('pod alpha/web-1 not registered within 1000 ms (the registry or the pod\'s netns slow to answer): nothing registered');
    expect(Date.now() - t0).toBeLessThan(1400);
    // the registry answers: the ADD that gave up registers nothing
    projects = async () => ['alpha'];
    await slow.promise;
    await new Promise((r) => setTimeout(r, 100));
    expect([prepared, saved()]).toEqual([[], []]);
    // the runtime's DEL, then the pod's next sandbox: protected
    expect(await request({ op: 'cni-del', containerId: 'c1' })).toEqual({ id: 1, ok: true, result: {} });
    expect((await request(pod('c2'))).result).toEqual({ protected: true });
  });

  it('a DEL of a container whose ADD still waits for the registry makes that ADD give up (ECANCELED): the next sandbox is not refused', async () => {
    const slow = gate<string[]>();
    projects = () => slow.promise;
    const add = request(pod('c1', { timeoutMs: 10_000 }));
    await expect.poll(() => asked).toBe(1);
    // the plugin gave up (code 11); the runtime DELs the sandbox: nothing registered yet
    expect(await request({ op: 'cni-del', containerId: 'c1' })).toEqual({ id: 1, ok: true, result: {} });
    expect(releases).toEqual([]);
    // the registry answers: the ADD does not register after its DEL
    slow.open(['alpha']);
    projects = async () => ['alpha'];
    const r = await add;
    expect(r.error?.code).toBe('ECANCELED');
    expect(r.error?.message).toBe('container c1: DELeted before its ADD registered it: not registered');
    expect([prepared, saved()]).toEqual([[], []]);
    // the pod's next sandbox: protected (before: EEXIST, "registered with container c1", for good)
    expect((await request(pod('c2'))).result).toEqual({ protected: true });
    expect(prepared).toEqual(['web-1/c2']);
  });

  it('an earlier sandbox still registered whose netns is gone is released as a DEL would, and the new sandbox protected; one whose netns exists still refuses it', async () => {
    // the earlier sandbox's netns: a process's, gone when it exits
    const sandbox = spawn('sleep', ['30'], { stdio: 'ignore' });
    const oldNetns = `/proc/${sandbox.pid}/ns/net`;
    try {
      expect((await request(pod('old', { netns: oldNetns }))).result).toEqual({ protected: true });
      // its netns exists: the new sandbox waits for the old one's DEL
      expect((await request(pod('new'))).error).toEqual({ code: 'EEXIST', message: 'pod alpha/web-1 is registered with container old: DEL it first' });
    } finally {
      sandbox.kill('SIGKILL');
    }
    if (sandbox.exitCode === null && sandbox.signalCode === null) await once(sandbox, 'exit');
    expect(existsSync(oldNetns)).toBe(false);
    // its DEL never came: the ADD of the new sandbox releases the old one first
    const add = request(pod('new'));
    await expect.poll(() => releases.length).toBe(1);
    expect(releases[0]).toMatchObject({ pod: 'web-1', netns: oldNetns });
    releases[0]!.done();
    expect((await add).result).toEqual({ protected: true });
    expect(saved().map((r) => r.containerId)).toEqual(['new']);
    expect(prepared).toEqual(['web-1/old', 'web-1/new']);
    // the old container's DEL, if it comes after all: nothing registered, nothing released
    expect(await request({ op: 'cni-del', containerId: 'old' })).toEqual({ id: 1, ok: true, result: {} });
    expect(releases).toHaveLength(1);
  });
});

describe('node socket: a DEL whose release fails', () => {
  it('keeps the registration (saved, out of the reconciler\'s pods) until a retried DEL released it', async () => {
    expect((await request(pod('c1'))).result).toEqual({ protected: true });
    expect(reconciled().map((r) => r.containerId)).toEqual(['c1']);
    const first = request({ op: 'cni-del', containerId: 'c1' });
    await expect.poll(() => releases.length).toBe(1);
    // being released: no longer the reconciler's (it would start its proxy again), still saved
    expect(reconciled()).toEqual([]);
    expect(saved().map((r) => r.containerId)).toEqual(['c1']);
    // the release fails (the registry down while withdrawing the key): the DEL says so (code 11)
    releases[0]!.fail(new Error('registry down'));
    const r = await first;
    expect(r.error).toEqual({ code: 'EIO', message: 'registry down' });
    // still registered (a restarted agent would adopt the proxy), still not the reconciler's
    expect(saved().map((x) => x.containerId)).toEqual(['c1']);
    expect(reconciled()).toEqual([]);
    // the pod's next sandbox waits for it
    expect((await request(pod('c2'))).error?.code).toBe('EEXIST');
    // the runtime's retried DEL releases again (before: answered {} at once, nothing released)
    const retry = request({ op: 'cni-del', containerId: 'c1' });
    await expect.poll(() => releases.length).toBe(2);
    releases[1]!.done();
    expect(await retry).toEqual({ id: 1, ok: true, result: {} });
    expect(saved()).toEqual([]);
    expect((await request(pod('c2'))).result).toEqual({ protected: true });
    expect(reconciled().map((x) => x.containerId)).toEqual(['c2']);
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

  it('a request line over 64 KiB is answered E2BIG, also to a client whose earlier answers are still queued (before: destroyed with them)', async () => {
    const sock = join(dir, 'agent.sock');
    // one request a connection, as the plugin sends: the answer is read
    const e = await controlRequest(sock, { op: 'cni-status', pad: 'x'.repeat(200_000) }, 3000).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ControlClientError);
    expect(e).toMatchObject({ code: 'E2BIG', message: 'request over 65536 bytes', answered: true });
    // a client that sent many requests and has not read their answers yet (they fill the
    // socket's buffers and queue in the agent), then an over-long line
    const c = connect(sock);
    c.on('error', () => {});
    await once(c, 'connect');
    c.pause();
    c.write(Array.from({ length: 10_000 }, (_, i) => JSON.stringify({ id: i, op: 'cni-status' }) + '\n').join(''));
    await new Promise((r) => setTimeout(r, 300));
    c.write('x'.repeat(70_000));
    await new Promise((r) => setTimeout(r, 100));
    let answers = '';
    c.setEncoding('utf8').on('data', (d: string) => (answers += d));
    const closed = once(c, 'close');
    c.resume();
    // closed by the agent once the answers are read (it gives a client a second for that)
    expect(await settles(closed, 3000)).toBe(true);
    const last = answers.trimEnd().split('\n').at(-1)!;
    expect(JSON.parse(last)).toEqual({ ok: false, error: { code: 'E2BIG', message: 'request over 65536 bytes' } });
    expect((await request({ op: 'cni-status' })).ok).toBe(true);
  });
});

describe('node socket: an unchained ADD (no addresses: Multus, no prevResult)', () => {
  const netns = `/proc/${process.pid}/ns/net`;
  const unchained = (containerId: string, over: Record<string, unknown> = {}) => pod(containerId, { addresses: undefined, ifname: 'net1', ...over });

  it('is registered with the addresses found in the pod\'s netns (canonical, IPv4 first) and made fail-closed as a chained ADD', async () => {
    inNetns = async () => ['10.128.1.10', 'FD00:0:0:0::A'];
    expect(await request(unchained('c1'))).toEqual({ id: 1, ok: true, result: { protected: true } });
    expect(read).toEqual([netns]);
    expect(prepared).toEqual(['web-1/c1']);
    expect(preparedRegs[0]).toMatchObject({ containerId: 'c1', netns, ifname: 'net1', podNamespace: 'alpha', podName: 'web-1', addresses: ['10.128.1.10', 'fd00::a'] });
    expect(saved().map((r) => [r.containerId, r.addresses])).toEqual([['c1', ['10.128.1.10', 'fd00::a']]]);
    // the same ADD again (the runtime's retry): the same registration, as a chained one
    expect((await request(unchained('c1'))).result).toEqual({ protected: true });
    expect(saved()).toHaveLength(1);
    // a second sandbox of the pod: refused as for a chained ADD (EEXIST: the runtime retries)
    expect((await request(unchained('c2'))).error?.code).toBe('EEXIST');
    // CHECK and DEL as ever
    expect((await request({ op: 'cni-check', containerId: 'c1', podNamespace: 'alpha', timeoutMs: 500 })).ok).toBe(true);
    const del = request({ op: 'cni-del', containerId: 'c1' });
    await expect.poll(() => releases.length).toBe(1);
    releases[0]!.done();
    expect((await del).ok).toBe(true);
    expect(saved()).toEqual([]);
  });

  it('no address in the netns yet: EADDRNOTAVAIL naming the netns, nothing registered or prepared; the retry once it has one works', async () => {
    inNetns = async (ns) => {
      throw new PodAddressError(`netns ${ns}: no pod address (no IPv4 default route; no IPv6 default route): is the pod's network set up?`);
    };
    const r = await request(unchained('c1'));
    expect(r.error).toEqual({ code: 'EADDRNOTAVAIL', message: `netns ${netns}: no pod address (no IPv4 default route; no IPv6 default route): is the pod's network set up?` });
    expect([prepared, saved()]).toEqual([[], []]);
    inNetns = async () => ['10.128.1.10'];
    expect((await request(unchained('c1'))).result).toEqual({ protected: true });
    expect(preparedRegs.map((x) => x.addresses)).toEqual([['10.128.1.10']]);
  });

  it('the found addresses are checked as a chained ADD\'s; everything else is checked before the netns is read; an unprotected namespace is not read', async () => {
    inNetns = async () => ['10.128.1.10', 'fd00::a', '10.128.1.11'];
    expect((await request(unchained('c1'))).error).toEqual({ code: 'EINVAL', message: 'addresses: one or two pod addresses expected' });
    inNetns = async () => ['10.128.1.300'];
    expect((await request(unchained('c1'))).error?.message).toMatch(/^addresses\[0\]: /);
    expect(prepared).toEqual([]);
    read.length = 0;
    expect((await request(unchained('c1', { netns: '/etc/passwd' }))).error?.code).toBe('EINVAL');
    expect((await request(unchained('c1', { podName: 'web.v2' }))).error?.code).toBe('EINVAL');
    expect((await request(unchained('c1', { podNamespace: 'plain' }))).result).toEqual({ protected: false });
    expect(read).toEqual([]);
    // a chained ADD's empty or missing list is still refused: only an absent one is read
    expect((await request(pod('c1', { addresses: [] }))).error?.code).toBe('EINVAL');
    expect((await request(pod('c1', { addresses: null }))).error?.code).toBe('EINVAL');
    expect(read).toEqual([]);
  });
});

describe('podAddressesFrom: the pod\'s addresses in `ip -j` dumps of its netns', () => {
  const ns = '/proc/4242/ns/net';
  /** `ip -j address show scope global` as iproute2 prints it (the trailing {} included). */
  const link = (ifname: string, ...addrs: Record<string, unknown>[]) => ({ ifindex: 3, ifname, flags: ['UP'], addr_info: [...addrs, {}] });
  const v4 = (local: string, o: Record<string, unknown> = {}) => ({ family: 'inet', local, prefixlen: 23, scope: 'global', label: 'eth0', ...o });
  const v6 = (local: string, o: Record<string, unknown> = {}) => ({ family: 'inet6', local, prefixlen: 64, scope: 'global', ...o });
  const def = (dev: string, o: Record<string, unknown> = {}) => ({ dst: 'default', gateway: '10.128.0.1', dev, flags: [], ...o });

  it('the global address of the default route\'s interface, per family, IPv4 first; other interfaces and families do not count', () => {
    const links = [link('net9', v4('192.168.7.7'), v6('fd99::7')), link('eth0', v4('10.128.1.10'), v4('10.128.1.99'), v6('FD00:10:128:1::A'))];
    expect(podAddressesFrom(ns, { 4: [def('eth0')], 6: [def('eth0', { gateway: 'fd00:10:128:1::1', metric: 1024, pref: 'medium' })] }, links)).toEqual(['10.128.1.10', 'fd00:10:128:1::a']);
    // IPv4 only, IPv6 only
    expect(podAddressesFrom(ns, { 4: [def('eth0')], 6: [] }, links)).toEqual(['10.128.1.10']);
    expect(podAddressesFrom(ns, { 4: [], 6: [def('eth0')] }, links)).toEqual(['fd00:10:128:1::a']);
    // each family its own interface
    expect(podAddressesFrom(ns, { 4: [def('net9')], 6: [def('eth0')] }, links)).toEqual(['192.168.7.7', 'fd00:10:128:1::a']);
    // two defaults: the lowest metric's (no metric is 0), whatever the dump's order
    expect(podAddressesFrom(ns, { 4: [def('eth0', { metric: 20 }), def('net9', { metric: 10 })], 6: [] }, links)).toEqual(['192.168.7.7']);
    expect(podAddressesFrom(ns, { 4: [def('net9', { metric: 10 }), def('eth0')], 6: [] }, links)).toEqual(['10.128.1.10']);
  });

  it('a blackhole or unreachable default is passed over; a multipath one counts by its first hop; a DAD-failed address does not count', () => {
    const links = [link('eth0', v6('fd00::bad', { dadfailed: true, tentative: true }), v6('fd00::a')), link('eth1', v4('10.1.0.5'))];
    const r4 = [{ type: 'blackhole', dst: 'default', flags: [] }, { dst: 'default', flags: [], nexthops: [{ gateway: '10.1.0.1', dev: 'eth1', weight: 1, flags: [] }] }];
    const r6 = [{ type: 'unreachable', dst: 'default', dev: 'lo', metric: 1024, flags: [] }, def('eth0')];
    expect(podAddressesFrom(ns, { 4: r4, 6: r6 }, links)).toEqual(['10.1.0.5', 'fd00::a']);
  });

  it('no default route, or no global address on its interface: a PodAddressError naming the netns and why, per family', () => {
    expect(() => podAddressesFrom(ns, { 4: [], 6: [] }, [link('eth0', v4('10.128.1.10'))])).toThrow(
      new PodAddressError(`netns ${ns}: no pod address (no IPv4 default route; no IPv6 default route): is the pod's network set up?`),
    );
    // link-local only (scope link is not dumped by "scope global", nor counted if it were)
    expect(() => podAddressesFrom(ns, { 4: [def('eth0')], 6: [def('eth0')] }, [link('eth0', v6('fe80::1', { scope: 'link' }))])).toThrow(
      `netns ${ns}: no pod address (no global IPv4 address on eth0, the interface of its default route; no global IPv6 address on eth0, the interface of its default route): is the pod's network set up?`,
    );
    expect(() => podAddressesFrom(ns, { 4: [def('eth0')], 6: [] }, [])).toThrow(PodAddressError);
  });
});
