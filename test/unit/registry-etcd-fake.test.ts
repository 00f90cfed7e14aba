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
 *     that gets no answer at all on an open stream gets a new stream too (watchdog).
 */
import { describe, it, expect, beforeEach, afterEach, vi } from 'vitest';
import { EtcdRegistry } from '../../src/registry/etcd.js';
import { parseEtcdSpec } from '../../src/registry/etcd-client.js';
import { FakeEtcd } from './etcd-fake.js';

const KEY_A = 'A'.repeat(42) + 'E=';

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
});
