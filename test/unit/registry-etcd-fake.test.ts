/**
 * The etcd registry against a fake etcd member (etcd-fake.ts: etcd3's own rpc.proto
 * over loopback gRPC, keys in memory), for what a real etcd makes hard to arrange:
 *
 *  1. a snapshot larger than gRPC's default 4 MiB receive limit is read (it was
 *     refused: RESOURCE_EXHAUSTED, and the agent learnt nothing at scale);
 *  2. close() leaves the agent's keys published (the lease is left to expire, never
 *     revoked: the agent stops with its proxies running and their keys published);
 *  3. the watch resumes after the last event delivered, not after a response
 *     header's revision (etcd's catch-up sends the current revision with the first
 *     1000 revisions' events: resuming from the header skipped the rest);
 *  4. a watch create that etcd refuses (created + canceled, e.g. an auth token that
 *     expired) does not freeze the copy: etcd3 never sends a later create on that
 *     stream, so the registry opens a new stream (auth token dropped first); a create
 *     that gets no answer at all on an open stream gets a new stream too (watchdog),
 *     counted from the create's request, not from the stream's loss (after an outage
 *     longer than watchCreateMs a healthy stream was reset before etcd could answer);
 *  5. an object the readers did not expect (a Service's port entry null) is reported
 *     and skipped: it threw in etcd3's watch handler (an uncaught exception: the agent
 *     died, and again at each restart's snapshot);
 *  6. a lease lost while etcd refuses grants is lost once: counted and logged once, the
 *     failed re-grants logged once, the success after them once (etcd3 emits 'lost'
 *     for a failed grant too: every re-grant, one a second, was a lease lost); a first
 *     grant that fails is no lost lease either.
 */
import { describe, it, expect, beforeEach, afterEach, vi } from 'vitest';
import { EtcdRegistry } from '../../src/registry/etcd.js';
import { parseEtcdSpec } from '../../src/registry/etcd-client.js';
import { FakeEtcd } from './etcd-fake.js';

const KEY_A = 'A'.repeat(42) + 'E=';
const KEY_B = 'B'.repeat(42) + 'E=';
const KEY_C = 'C'.repeat(42) + 'E=';

const podJson = (name: string, i: number, pad = '') =>
  JSON.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'alpha', labels: { app: name, pad } }, spec: { nodeName: 'n1' }, status: { podIP: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}` } });

describe('etcd registry (fake etcd)', () => {
  let etcd: FakeEtcd;
  const open: EtcdRegistry[] = [];
  const reg = () => {
    const r = new EtcdRegistry(parseEtcdSpec(etcd.endpoint));
    open.push(r);
    return r;
  };
  beforeEach(async () => {
    etcd = new FakeEtcd();
    await etcd.start();
    etcd.put('/tenc/projects/alpha', '{}');
  });
  afterEach(async () => {
    for (const r of open.splice(0)) await r.close();
    await etcd.stop();
  });

  it('a snapshot of more than 4 MiB (gRPC\'s default receive limit) is read', async () => {
    const pad = 'x'.repeat(1000);
    for (let i = 0; i < 5500; i++) etcd.put(`/tenc/pods/alpha/p${i}`, podJson(`p${i}`, i, pad));
    const r = reg();
    expect(await r.projects()).toEqual(['alpha']);
    expect((await r.pods('alpha')).length).toBe(5500);
  });

  it('close() leaves the keys published: the lease is not revoked (it expires by itself)', async () => {
    const r = reg();
    await r.publishPeer({ project: 'alpha', pod: 'web', node: 'n1', publicKey: KEY_A, endpoint: '10.128.1.10:51820' });
    expect(etcd.kvs.has('/tenc/nodes/n1/peers/alpha/web')).toBe(true);
    await r.close();
    expect(etcd.leaseCalls.filter((c) => c.startsWith('revoke'))).toEqual([]);
    expect(etcd.kvs.has('/tenc/nodes/n1/peers/alpha/web')).toBe(true);
  });

  it('the watch resumes after the last event delivered, not after a response header\'s revision', async () => {
    const r = reg();
    expect(await r.pods('alpha')).toEqual([]);
    await vi.waitFor(() => expect(etcd.openWatches).toBe(1), { timeout: 5000, interval: 10 });
    // a catch-up batch: etcd is at revision 5000, the events delivered reach 1000
    etcd.rev = 5000;
    const kv = (name: string, rev: number) => ({ key: Buffer.from(`/tenc/pods/alpha/${name}`), value: Buffer.from(podJson(name, rev)), mod_revision: String(rev), create_revision: String(rev), version: '1', lease: '0' });
    etcd.sendRaw({ header: { cluster_id: '1', member_id: '1', revision: '5000', raft_term: '1' }, events: [{ type: 'PUT', kv: kv('a', 999) }, { type: 'PUT', kv: kv('b', 1000) }] });
    await vi.waitFor(async () => expect((await r.pods('alpha')).length).toBe(2), { timeout: 5000, interval: 10 });
    expect(r.stats.revision).toBe(1000);
    // moved back to the first endpoint (homeCheck): the new watch starts at 1001
    const creates = etcd.creates.length;
    (r as unknown as { watchOn: unknown }).watchOn = null;
    (r as unknown as { homeCheck: () => void }).homeCheck();
    await vi.waitFor(() => expect(etcd.creates.length).toBe(creates + 1), { timeout: 5000, interval: 10 });
    expect(etcd.creates.at(-1)!.start_revision).toBe('1001');
    // the stream breaks: etcd3 creates the watch again, from 1001 too (it took the
    // create answer's and the last header's revision + 1)
    await vi.waitFor(() => expect(etcd.openWatches).toBe(1), { timeout: 5000, interval: 10 });
    etcd.breakWatches();
    await vi.waitFor(() => expect(etcd.creates.length).toBe(creates + 2), { timeout: 10_000, interval: 10 });
    expect(etcd.creates.at(-1)!.start_revision).toBe('1001');
  });

  it('a refused watch create (created + canceled) does not freeze the copy: a new stream, a new create', async () => {
    etcd.refuseCreates = 1;
    const r = reg();
    expect(await r.pods('alpha')).toEqual([]);
    // the first create refused, the snapshot read again, and its watch created on a new stream
    await vi.waitFor(() => expect(etcd.openWatches).toBe(1), { timeout: 10_000, interval: 20 });
    expect(r.stats.watchErrors).toBe(1);
    expect(r.stats.watchStreamResets).toBe(1);
    etcd.put('/tenc/pods/alpha/late', podJson('late', 7));
    await vi.waitFor(async () => expect((await r.pods('alpha')).map((p) => p.name)).toEqual(['late']), { timeout: 5000, interval: 20 });
  });

  it('a watch create with no answer on an open stream: a new stream after watchCreateMs (checked every HOME_CHECK_MS)', async () => {
    etcd.ignoreCreates = 1;
    const r = new EtcdRegistry(parseEtcdSpec(etcd.endpoint), { watchCreateMs: 300 });
    open.push(r);
    expect(await r.pods('alpha')).toEqual([]);
    await vi.waitFor(() => expect(etcd.openWatches).toBe(1), { timeout: 10_000, interval: 20 });
    expect(r.stats.watchStreamResets).toBe(1);
    expect(etcd.creates.length).toBe(2);
    etcd.put('/tenc/pods/alpha/late', podJson('late', 7));
    await vi.waitFor(async () => expect((await r.pods('alpha')).map((p) => p.name)).toEqual(['late']), { timeout: 5000, interval: 20 });
  });

  it('the create watchdog counts from the create request: a long outage, then a slow answer, keeps the stream', async () => {
    const r = new EtcdRegistry(parseEtcdSpec(etcd.endpoint), { watchCreateMs: 500 });
    open.push(r);
    expect(await r.pods('alpha')).toEqual([]);
    await vi.waitFor(() => expect(etcd.openWatches).toBe(1), { timeout: 5000, interval: 10 });
    // the stream breaks and etcd3 opens the next one 800 ms later (its backoff: an
    // outage longer than watchCreateMs); etcd answers that create 200 ms after it
    const manager = (r as unknown as { watcher: { manager: { backoff: unknown } } }).watcher.manager;
    manager.backoff = { duration: 800, next() { return this; } };
    etcd.delayCreatesMs = 200;
    const creates = etcd.creates.length;
    etcd.breakWatches();
    await vi.waitFor(() => expect(etcd.creates.length).toBe(creates + 1), { timeout: 5000, interval: 5 });
    // the create is written, its answer not there yet: the watchdog's tick (every HOME_CHECK_MS) comes now
    (r as unknown as { createCheck: () => void }).createCheck();
    await vi.waitFor(() => expect(etcd.openWatches).toBe(1), { timeout: 5000, interval: 10 });
    expect(r.stats.watchStreamResets).toBe(0);
    expect(etcd.creates.length).toBe(creates + 1);
    etcd.put('/tenc/pods/alpha/late', podJson('late', 7));
    await vi.waitFor(async () => expect((await r.pods('alpha')).map((p) => p.name)).toEqual(['late']), { timeout: 5000, interval: 20 });
  });

  it('a Service whose ports hold null (or a number, a string) is reported and read without it: the watch goes on, a restart reads the snapshot', async () => {
    const service = (name: string, ports: unknown[]) => JSON.stringify({ metadata: { name }, spec: { clusterIP: '10.96.0.9', ports, selector: { app: name } } });
    const problems: string[] = [];
    const r = new EtcdRegistry(parseEtcdSpec(etcd.endpoint), { onProblem: (k, why) => problems.push(`${k}: ${why}`) });
    open.push(r);
    expect(await r.pods('alpha')).toEqual([]);
    await vi.waitFor(() => expect(etcd.openWatches).toBe(1), { timeout: 5000, interval: 10 });
    etcd.put('/tenc/services/alpha/bad', service('bad', [null, { port: 80 }]));
    etcd.put('/tenc/services/alpha/worse', service('worse', [7, 'x']));
    etcd.put('/tenc/pods/alpha/late', podJson('late', 7));
    await vi.waitFor(async () => expect((await r.pods('alpha')).map((p) => p.name)).toEqual(['late']), { timeout: 5000, interval: 20 });
    // worse has no port left: refused (no ports is every port to a pod)
    expect((await r.services('alpha')).map((s) => [s.name, s.ports])).toEqual([['bad', [{ protocol: 'tcp', port: 80 }]]]);
    expect(problems.slice(0, 3)).toEqual([
      '/tenc/services/alpha/bad: spec.ports: entry null is not an object: that port ignored',
      '/tenc/services/alpha/worse: spec.ports: entry 7 is not an object: that port ignored',
      '/tenc/services/alpha/worse: spec.ports: entry "x" is not an object: that port ignored',
    ]);
    expect(problems.slice(3).join('\n')).toMatch(/^\/tenc\/services\/alpha\/worse: .*no TCP or UDP port 1\.\.65535/);
    expect(r.stats.watchErrors).toBe(0);
    // an agent starting now: its snapshot holds the bad Service
    const again = reg();
    expect((await again.services('alpha')).map((s) => s.name)).toEqual(['bad']);
    expect((await again.pods('alpha')).map((p) => p.name)).toEqual(['late']);
  });

  it('a value whose reading throws (any shape not foreseen) is reported and left out, in the snapshot and in the watch', async () => {
    etcd.put('/tenc/pods/alpha/first', podJson('first', 1));
    etcd.put('/tenc/pods/alpha/second', podJson('second', 2));
    const problems: string[] = [];
    const r = new EtcdRegistry(parseEtcdSpec(etcd.endpoint), { onProblem: (k, why) => problems.push(`${k}: ${why}`) });
    open.push(r);
    const reading = r as unknown as { putValue: (key: string, value: string) => void };
    const real = reading.putValue.bind(r);
    const boom = (key: string, value: string) => {
      if (key.endsWith('/first') || key.endsWith('/third')) throw new Error('not foreseen');
      real(key, value);
    };
    reading.putValue = boom;
    expect((await r.pods('alpha')).map((p) => p.name)).toEqual(['second']);
    await vi.waitFor(() => expect(etcd.openWatches).toBe(1), { timeout: 5000, interval: 10 });
    etcd.put('/tenc/pods/alpha/third', podJson('third', 3));
    etcd.put('/tenc/pods/alpha/fourth', podJson('fourth', 4));
    await vi.waitFor(async () => expect((await r.pods('alpha')).map((p) => p.name)).toEqual(['second', 'fourth']), { timeout: 5000, interval: 20 });
    expect(problems).toEqual(['/tenc/pods/alpha/first: cannot be read (not foreseen): ignored', '/tenc/pods/alpha/third: cannot be read (not foreseen): ignored']);
  });

  it('a lease lost while grants are refused is lost once: one "lease lost", one failure logged, one "published again"', async () => {
    const events: { what: string; detail: Record<string, unknown> }[] = [];
    const r = new EtcdRegistry(parseEtcdSpec(`${etcd.endpoint}?ttl=2`), { onEvent: (what, detail) => events.push({ what, detail }) });
    open.push(r);
    for (const [pod, publicKey] of [['web', KEY_A], ['db', KEY_B], ['cache', KEY_C]]) {
      await r.publishPeer({ project: 'alpha', pod, node: 'n1', publicKey, endpoint: '10.128.1.10:51820' });
    }
    const peers = () => [...etcd.kvs.keys()].filter((k) => k.startsWith('/tenc/nodes/n1/peers/')).sort();
    expect(peers()).toHaveLength(3);
    const lease = etcd.kvs.get('/tenc/nodes/n1/peers/alpha/web')!.lease;
    // the lease expires while etcd has no leader: its keys go, every grant is refused
    etcd.refuseGrants = true;
    etcd.expire(lease);
    const named = (what: string) => events.filter((e) => e.what === what);
    // found at the next keep-alive (every TTL/3), then re-grants with backoff (100 ms doubling to 1 s)
    await vi.waitFor(() => expect(named('lease lost: publishing again under a new one')).toHaveLength(1), { timeout: 5000, interval: 10 });
    await r.withdrawPeer('alpha', 'n1', 'cache');
    await new Promise((resolve) => setTimeout(resolve, 1600));
    expect(etcd.leaseCalls.filter((c) => c === 'grant refused').length).toBeGreaterThanOrEqual(3);
    expect(r.stats.leasesLost).toBe(1);
    expect(named('lease lost: publishing again under a new one')).toHaveLength(1);
    expect(named('lease lost: publishing again under a new one')[0].detail).toMatchObject({ keys: 3 });
    expect(named('publishing again failed: retrying')).toHaveLength(1);
    expect(named('publishing again failed: retrying')[0].detail.err).toMatch(/no leader/);
    expect(named('published again under a new lease')).toEqual([]);
    expect(peers()).toEqual([]);
    // a leader again: the keys still owned are written under a new lease, once
    etcd.refuseGrants = false;
    await vi.waitFor(() => expect(named('published again under a new lease')).toHaveLength(1), { timeout: 5000, interval: 10 });
    expect(peers()).toEqual(['/tenc/nodes/n1/peers/alpha/db', '/tenc/nodes/n1/peers/alpha/web']);
    expect(etcd.kvs.get('/tenc/nodes/n1/peers/alpha/web')!.lease).not.toBe(lease);
    const done = named('published again under a new lease')[0].detail;
    expect(done).toMatchObject({ keys: 2 });
    expect(done.attempts).toBeGreaterThanOrEqual(3);
    expect(done.ms).toBeGreaterThanOrEqual(1600);
    expect(r.stats.leasesLost).toBe(1);
    expect(named('lease lost: publishing again under a new one')).toHaveLength(1);
    expect(named('publishing again failed: retrying')).toHaveLength(1);
  });

  it('a first grant that fails is no lost lease: put() fails, nothing counted or logged, the next put works', async () => {
    const events: string[] = [];
    const r = new EtcdRegistry(parseEtcdSpec(`${etcd.endpoint}?ttl=2`), { onEvent: (what) => events.push(what) });
    open.push(r);
    etcd.refuseGrants = true;
    const peer = { project: 'alpha', pod: 'web', node: 'n1', publicKey: KEY_A, endpoint: '10.128.1.10:51820' };
    // "no leader", or the endpoint's circuit breaker open after etcd3's retries of the grant
    await expect(r.publishPeer(peer)).rejects.toThrow(/no leader|circuit breaker/);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(r.stats.leasesLost).toBe(0);
    expect(events.filter((e) => /lease|publish/.test(e))).toEqual([]);
    etcd.refuseGrants = false;
    // the endpoint's circuit breaker (3 failures in a row) lets a call through after ENDPOINT_BREAK_MS
    await vi.waitFor(() => r.publishPeer(peer), { timeout: 5000, interval: 100 });
    expect(etcd.kvs.has('/tenc/nodes/n1/peers/alpha/web')).toBe(true);
    expect(r.stats.leasesLost).toBe(0);
    expect(events.filter((e) => /lease|publish/.test(e))).toEqual([]);
  });
});
