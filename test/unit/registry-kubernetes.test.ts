// The Kubernetes registry backend against the in-test API server (test/k8s/fake-apiserver.ts),
// fed from netns-scripts/cluster-example.json: reads, publish/withdraw through admission,
// trust, psk fail-closed, bad objects, and watches dropped, expired (410), failing and slow.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { validateCluster, type ClusterConfig } from '../../src/agent/cluster-config.js';
import { KubernetesRegistry, PskError, parsePsk } from '../../src/registry/kubernetes.js';
import { trustedPeers } from '../../src/registry/registry.js';
import { openRegistry } from '../../src/registry/open.js';
import { writeFileSync } from 'node:fs';
import { FakeApiServer } from '../k8s/fake-apiserver.js';
import { until as waitUntil } from '../until.js';

const clusterFile = join(__dirname, '../../netns-scripts/cluster-example.json');
const cluster: ClusterConfig = validateCluster(JSON.parse(readFileSync(clusterFile, 'utf8')), clusterFile);
const key = () => randomBytes(32).toString('base64');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits for fn's value (polled every 25 ms), at most ms. */
const until = async <T>(what: string, fn: () => Promise<T | null | false | undefined> | T | null | false | undefined, ms = 8000): Promise<T> => (await waitUntil(what, fn, ms, 25)).value;

let api: FakeApiServer;
let dir: string;
const regs: KubernetesRegistry[] = [];
let warnings: string[];

function open(node: string, o: { informer?: object; pskRefreshMs?: number } = {}): KubernetesRegistry {
  const r = new KubernetesRegistry(api.kubeConfig(api.agentToken(node)), {
    pskDir: join(dir, node, 'psk'),
    node,
    log: { warn: (_f, m) => warnings.push(m), info: () => {} },
    syncTimeoutMs: 5000,
    pskRefreshMs: o.pskRefreshMs ?? 200,
    informer: { backoffMs: 20, backoffMaxMs: 200, minWatchGapMs: 10, ...o.informer },
  });
  regs.push(r);
  return r;
}

beforeEach(async () => {
  api = new FakeApiServer();
  api.bookmarkMs = 200;
  await api.start();
  api.loadCluster(cluster);
  dir = mkdtempSync(join(tmpdir(), 'tenc-k8s-'));
  warnings = [];
});

afterEach(async () => {
  for (const r of regs.splice(0)) await r.close();
  await api.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('kubernetes registry: reads', () => {
  it('maps namespaces, pods, services and endpointslices of the cluster file', async () => {
    const r = open('node1');
    expect(await r.projects()).toEqual(['alpha', 'beta']);
    const pods = await r.pods('alpha');
    expect(pods.map((p) => [p.name, p.node, p.address])).toEqual(
      cluster.pods.filter((p) => p.project === 'alpha').map((p) => [p.name, p.node, p.address]).sort((a, b) => (a[0] < b[0] ? -1 : 1)),
    );
    expect(pods.find((p) => p.name === 'alpha-web-1')).toMatchObject({ labels: { app: 'web' }, addresses: ['10.128.1.10'], netns: null });
    const svcs = await r.services('alpha');
    expect(svcs.map((s) => [s.name, s.vip, s.ports])).toEqual([
      ['db', '10.96.1.20', [{ protocol: 'tcp', port: 5432 }, { protocol: 'udp', port: 5432 }]],
      ['web', '10.96.1.10', [{ protocol: 'tcp', port: 80 }]],
    ]);
    const eps = await r.endpoints('alpha');
    expect(eps.find((e) => e.service === 'web')!.pods).toEqual([{ name: 'alpha-web-1', address: '10.128.1.10', node: 'node1' }]);
  });

  it('a protected namespace that terminates stays protected until it is gone', async () => {
    // a finalizer may hold a namespace terminating for long: a pod sandbox (re)started
    // meanwhile must be protected, never passed through unprotected (it was left out)
    const r = open('node1');
    api.put('namespaces', { metadata: { name: 'delta', labels: { 'tenc.io/protect': 'true' } } });
    await until('delta listed', async () => (await r.projects()).includes('delta'));
    const rv = r.stats().namespaces!.resourceVersion;
    api.put('namespaces', { metadata: { name: 'delta', labels: { 'tenc.io/protect': 'true' }, deletionTimestamp: '2026-12-06T10:00:00Z' } });
    await until('delta terminating seen', async () => r.stats().namespaces!.resourceVersion !== rv);
    expect(await r.projects()).toContain('delta');
    api.put('namespaces', { metadata: { name: 'delta', labels: {} } });
    await until('delta gone', async () => !(await r.projects()).includes('delta'));
  });

  it('a namespace opts in and out with its label; only ready endpoints count; dual-stack pods keep every IP', async () => {
    const r = open('node1');
    let changes = 0;
    r.watch('gamma', () => changes++);
    api.put('namespaces', { metadata: { name: 'gamma', labels: { 'tenc.io/protect': 'true' } } });
    await until('gamma listed', async () => (await r.projects()).includes('gamma'));
    expect(changes).toBeGreaterThan(0);
    api.put('namespaces', { metadata: { name: 'gamma', labels: {} } });
    // the label-selected watch reports the namespace that lost its label as DELETED
    await until('gamma gone', async () => !(await r.projects()).includes('gamma'));
    await expect(r.pskFile('gamma')).rejects.toThrow(/not protected/);

    api.syncSlice('alpha', 'web', [
      { name: 'alpha-web-1', address: '10.128.1.10', node: 'node1', ready: false },
      { name: 'alpha-client-1', address: '10.128.1.11', node: 'node1' },
    ]);
    await until('slice update', async () => (await r.endpoints('alpha')).find((e) => e.service === 'web')!.pods[0]?.name === 'alpha-client-1');
    expect((await r.endpoints('alpha')).find((e) => e.service === 'web')!.pods.map((p) => p.name)).toEqual(['alpha-client-1']);
    // a Service's endpoints in two slices (the controller splits at 100): merged; FQDN slices ignored
    api.put('endpointslices', {
      metadata: { name: 'web-xyz', namespace: 'alpha', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      endpoints: [{ addresses: ['10.128.2.10'], conditions: {}, nodeName: 'node2', targetRef: { kind: 'Pod', name: 'alpha-db-1' } }],
    });
    api.put('endpointslices', {
      metadata: { name: 'web-fqdn', namespace: 'alpha', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'FQDN',
      endpoints: [{ addresses: ['example.com'], conditions: { ready: true } }],
    });
    await until('two slices', async () => (await r.endpoints('alpha')).find((e) => e.service === 'web')!.pods.length === 2);
    expect((await r.endpoints('alpha')).find((e) => e.service === 'web')!.pods.map((p) => p.name).sort()).toEqual(['alpha-client-1', 'alpha-db-1']);

    api.putPod('alpha', 'alpha-ds-1', 'node1', '10.128.1.40', {}, { status: { phase: 'Running', podIP: '10.128.1.40', podIPs: [{ ip: '10.128.1.40' }, { ip: 'fd00::40' }] } });
    await until('dual-stack pod', async () => (await r.pods('alpha')).find((p) => p.name === 'alpha-ds-1'));
    expect((await r.pods('alpha')).find((p) => p.name === 'alpha-ds-1')!.addresses).toEqual(['10.128.1.40', 'fd00::40']);
    // a hostNetwork pod (its IP is the node's): not a member of the project
    api.putPod('alpha', 'alpha-hostnet-1', 'node1', '10.200.0.2', {}, { spec: { nodeName: 'node1', hostNetwork: true, containers: [{ name: 'app', image: 'busybox' }] } });
    api.putPod('alpha', 'alpha-after-1', 'node1', '10.128.1.41');
    await until('the pod after it', async () => (await r.pods('alpha')).some((p) => p.name === 'alpha-after-1'));
    expect((await r.pods('alpha')).map((p) => p.name)).not.toContain('alpha-hostnet-1');
    expect((await r.pods('alpha')).map((p) => p.address)).not.toContain('10.200.0.2');
  });

  it('TencPolicy objects: listed per namespace as stored (the cluster file\'s too), watched (a change reaches the agent)', async () => {
    const r = open('node1');
    const names = async () => (await r.policies('alpha')).map((p) => p.name);
    expect(await names()).toEqual(['db', 'web-metrics']);
    expect(await r.policies('beta')).toEqual([]);
    let changes = 0;
    r.watch('alpha', () => changes++);
    const spec = { service: 'web', ports: [{ protocol: 'TCP', port: 80 }], mode: 'exempt' };
    api.put('tencpolicies', { metadata: { name: 'web-plain', namespace: 'alpha' }, spec });
    api.put('tencpolicies', { metadata: { name: 'other', namespace: 'beta' }, spec });
    await until('policy listed', async () => (await names()).length === 3);
    const p = (await r.policies('alpha')).find((x) => x.name === 'web-plain')!;
    expect(p).toMatchObject({ project: 'alpha', name: 'web-plain', object: { kind: 'TencPolicy', metadata: { name: 'web-plain', namespace: 'alpha' }, spec } });
    expect(changes).toBeGreaterThan(0);
    api.remove('tencpolicies', 'alpha', 'web-plain');
    await until('policy gone', async () => (await names()).join() === 'db,web-metrics');
  });

  it('bad input from the API is left out and logged once, never thrown', async () => {
    const r = open('node1');
    api.putPod('alpha', 'no-ip', 'node1', null);
    api.put('pods', { metadata: { name: 'running-no-ip', namespace: 'alpha' }, spec: { nodeName: 'node1' }, status: { phase: 'Running' } });
    api.put('pods', { metadata: { name: 'unscheduled', namespace: 'alpha' }, spec: {}, status: { phase: 'Pending' } });
    api.put('services', { metadata: { name: 'manual', namespace: 'alpha' }, spec: { clusterIP: '10.96.1.99', ports: [{ port: 80, protocol: 'TCP' }] } });
    api.put('services', { metadata: { name: 'headless', namespace: 'alpha' }, spec: { clusterIP: 'None', selector: { app: 'web' }, ports: [] } });
    api.put('services', { metadata: { name: 'oddports', namespace: 'alpha' }, spec: { clusterIP: '10.96.1.98', selector: { app: 'web' }, ports: [{ port: 'x' }, { port: 70000, protocol: 'TCP' }, { port: 53, protocol: 'SCTP' }, { port: 8080 }] } });
    api.put('tencpeers', { metadata: { name: 'alpha-web-1', namespace: 'alpha' }, spec: { nodeName: 'node1', publicKey: 'short', endpoint: 'nope' } });
    // addresses that are not IPs: a pod's, a Service's cluster IP, an endpoint's
    api.putPod('alpha', 'bad-ip', 'node1', '10.128.1.300');
    api.putPod('alpha', 'half-bad', 'node1', '10.128.1.44', {}, { status: { phase: 'Running', podIP: '10.128.1.44', podIPs: [{ ip: '10.128.1.44' }, { ip: 'fd00::zz' }] } });
    api.put('services', { metadata: { name: 'badvip', namespace: 'alpha' }, spec: { clusterIP: 'ten.ninety-six', selector: { app: 'web' }, ports: [{ port: 80, protocol: 'TCP' }] } });
    api.syncSlice('alpha', 'web', [
      { name: 'alpha-web-1', address: '10.128.1.10', node: 'node1' },
      { name: 'alpha-evil', address: '10.128.1.10; rm -rf /', node: 'node1' },
    ]);
    await until('all seen', async () => (await r.services('alpha')).some((s) => s.name === 'oddports') && (await r.pods('alpha')).length >= 4);
    for (let i = 0; i < 3; i++) {
      const pods = await r.pods('alpha');
      expect(pods.map((p) => p.name)).not.toContain('no-ip');
      expect(pods.map((p) => p.name)).not.toContain('running-no-ip');
      expect(pods.map((p) => p.name)).not.toContain('unscheduled');
      const svcs = await r.services('alpha');
      expect(svcs.map((s) => s.name).sort()).toEqual(['db', 'oddports', 'web']);
      expect(svcs.find((s) => s.name === 'oddports')!.ports).toEqual([{ protocol: 'tcp', port: 8080 }]);
      expect(await r.peers('alpha')).toEqual([]);
      expect(pods.map((p) => p.name)).not.toContain('bad-ip');
      expect(pods.find((p) => p.name === 'half-bad')!.addresses).toEqual(['10.128.1.44']);
      expect((await r.endpoints('alpha')).find((e) => e.service === 'web')!.pods).toEqual([{ name: 'alpha-web-1', address: '10.128.1.10', node: 'node1' }]);
    }
    expect(warnings.filter((w) => w.includes('alpha/bad-ip') && w.includes('not an IP'))).toHaveLength(1);
    expect(warnings.filter((w) => w.includes('alpha/half-bad') && w.includes('"fd00::zz"'))).toHaveLength(1);
    expect(warnings.filter((w) => w.includes('service alpha/badvip') && w.includes('not an IP'))).toHaveLength(1);
    expect(warnings.filter((w) => w.includes('EndpointSlice alpha/web-abcde') && w.includes('not an IP'))).toHaveLength(1);
    expect(warnings.filter((w) => w.includes('running-no-ip'))).toHaveLength(1);
    expect(warnings.filter((w) => w.includes('manual') && w.includes('no selector'))).toHaveLength(1);
    expect(warnings.filter((w) => w.includes('TencPeer alpha/alpha-web-1'))).toHaveLength(1);
    expect(warnings.some((w) => w.includes('alpha/no-ip:') || w.includes('unscheduled'))).toBe(false);
  });
});

describe('kubernetes registry: TencPeers, admission and trust', () => {
  it('publishes, updates and withdraws its own pods; garbage-collected with the pod', async () => {
    const r1 = open('node1');
    const r2 = open('node2');
    const k1 = key();
    await r1.publishPeer({ project: 'alpha', pod: 'alpha-web-1', node: 'node1', publicKey: k1, endpoint: '10.128.1.10:51820' });
    const t = api.get('tencpeers', 'alpha', 'alpha-web-1')!;
    expect(t.spec).toEqual({ nodeName: 'node1', publicKey: k1, endpoint: '10.128.1.10:51820' });
    expect(t.metadata.ownerReferences).toEqual([{ apiVersion: 'v1', kind: 'Pod', name: 'alpha-web-1', uid: api.get('pods', 'alpha', 'alpha-web-1')!.metadata.uid }]);
    const seen = await until('r2 sees the peer', async () => (await r2.peers('alpha')).find((p) => p.pod === 'alpha-web-1'));
    expect(seen).toEqual({ project: 'alpha', pod: 'alpha-web-1', node: 'node1', publicKey: k1, endpoint: '10.128.1.10:51820' });

    // a new key (proxy restart) replaces it; publishing the same again writes nothing
    const k2 = key();
    await until('r1 cache', async () => (await r1.peers('alpha')).length === 1);
    await r1.publishPeer({ project: 'alpha', pod: 'alpha-web-1', node: 'node1', publicKey: k2, endpoint: '10.128.1.10:51820' });
    await until('r2 sees the new key', async () => (await r2.peers('alpha')).find((p) => p.publicKey === k2));
    const rv = api.get('tencpeers', 'alpha', 'alpha-web-1')!.metadata.resourceVersion;
    await until('r1 has k2', async () => (await r1.peers('alpha')).find((p) => p.publicKey === k2));
    await r1.publishPeer({ project: 'alpha', pod: 'alpha-web-1', node: 'node1', publicKey: k2, endpoint: '10.128.1.10:51820' });
    expect(api.get('tencpeers', 'alpha', 'alpha-web-1')!.metadata.resourceVersion).toBe(rv);

    await r1.withdrawPeer('alpha', 'node1', 'alpha-web-1');
    expect(api.get('tencpeers', 'alpha', 'alpha-web-1')).toBeUndefined();
    await r1.withdrawPeer('alpha', 'node1', 'alpha-web-1'); // no-op
    // withdrawn right after the publish, before the watch brought it back: still removed
    const r2b = open('node2');
    await r2b.pods('alpha');
    await r2b.publishPeer({ project: 'alpha', pod: 'alpha-db-1', node: 'node2', publicKey: key(), endpoint: '10.128.2.10:51820' });
    await r2b.withdrawPeer('alpha', 'node2', 'alpha-db-1');
    expect(api.get('tencpeers', 'alpha', 'alpha-db-1')).toBeUndefined();

    await r1.publishPeer({ project: 'alpha', pod: 'alpha-client-1', node: 'node1', publicKey: key(), endpoint: '10.128.1.11:51820' });
    api.remove('pods', 'alpha', 'alpha-client-1');
    expect(api.get('tencpeers', 'alpha', 'alpha-client-1')).toBeUndefined();
    await until('r2 drops it', async () => (await r2.peers('alpha')).length === 0);
  });

  it("a node cannot write another node's TencPeer: refused by admission, and refused by readers if it got in", async () => {
    const r1 = open('node1');
    const r2 = open('node2');
    // node2's agent claims node1's pod (admission: spec.nodeName must be the token's node)
    await expect(r2.publishPeer({ project: 'alpha', pod: 'alpha-web-1', node: 'node1', publicKey: key(), endpoint: '10.200.0.3:51820' })).rejects.toThrow(/HTTP 403.*tenc-peer-node/);
    // ...or publishes under its own name for a pod of node1: admitted (it is its own nodeName), refused by readers
    await r2.publishPeer({ project: 'alpha', pod: 'alpha-web-1', node: 'node2', publicKey: key(), endpoint: '10.200.0.3:51820' });
    const peers = await until('r1 sees the entry', async () => {
      const p = await r1.peers('alpha');
      return p.length ? p : null;
    });
    const rejected: string[] = [];
    expect(trustedPeers(await r1.pods('alpha'), peers, (p, why) => rejected.push(`${p.pod}: ${why}`))).toEqual([]);
    expect(rejected).toEqual(['alpha-web-1: published by node node2, but the pod runs on node1']);
    // node1 cannot overwrite or delete it either (old object's node is node2), nor can node2 delete node1's own
    await expect(r1.publishPeer({ project: 'alpha', pod: 'alpha-web-1', node: 'node1', publicKey: key(), endpoint: '10.128.1.10:51820' })).rejects.toThrow(/HTTP 403/);
    await r2.withdrawPeer('alpha', 'node2', 'alpha-web-1');
    await until('gone for r1', async () => (await r1.peers('alpha')).length === 0);
    await r1.publishPeer({ project: 'alpha', pod: 'alpha-web-1', node: 'node1', publicKey: key(), endpoint: '10.128.1.10:51820' });
    const res = await fetch(`http://127.0.0.1:${api.port}/apis/tenc.io/v1alpha1/namespaces/alpha/tencpeers/alpha-web-1`, { method: 'DELETE', headers: { authorization: `Bearer ${api.agentToken('node2')}` } });
    expect(res.status).toBe(403);
    expect(api.get('tencpeers', 'alpha', 'alpha-web-1')).toBeDefined();
    // a token without the node binding is refused for every write
    const unbound = 'unbound-token';
    api.tokens.set(unbound, { username: 'system:serviceaccount:tenc-system:tenc-agent' });
    const post = await fetch(`http://127.0.0.1:${api.port}/apis/tenc.io/v1alpha1/namespaces/alpha/tencpeers`, {
      method: 'POST',
      headers: { authorization: `Bearer ${unbound}`, 'content-type': 'application/json' },
      body: JSON.stringify({ metadata: { name: 'alpha-db-1' }, spec: { nodeName: 'node2', publicKey: key(), endpoint: '10.128.2.10:51820' } }),
    });
    expect(post.status).toBe(403);
  });

  it('a TencPeer left from an earlier pod of the same name is not believed', async () => {
    const r1 = open('node1');
    await r1.publishPeer({ project: 'alpha', pod: 'alpha-web-1', node: 'node1', publicKey: key(), endpoint: '10.128.1.10:51820' });
    const t = api.get('tencpeers', 'alpha', 'alpha-web-1')!;
    // the pod is replaced by a new one of that name before the garbage collector ran
    api.remove('pods', 'alpha', 'alpha-web-1'); // GC removes the peer...
    api.put('tencpeers', t); // ...but say it was recreated by a lagging writer, owned by the old uid
    api.putPod('alpha', 'alpha-web-1', 'node1', '10.128.1.12', { app: 'web' });
    await until('new pod', async () => (await r1.pods('alpha')).find((p) => p.address === '10.128.1.12'));
    expect(await r1.peers('alpha')).toEqual([]);
    // the agent's next publish replaces it with one owned by the new pod
    const k = key();
    await r1.publishPeer({ project: 'alpha', pod: 'alpha-web-1', node: 'node1', publicKey: k, endpoint: '10.128.1.12:51820' });
    await until('new entry', async () => (await r1.peers('alpha')).find((p) => p.publicKey === k));
  });
});

describe('kubernetes registry: node names as Kubernetes allows them (DNS-1123 subdomains)', () => {
  /** 253 characters, the most a node's name may have: four parts between dots. */
  const LONG = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`;

  it.each([['EKS', 'ip-10-0-1-2.ec2.internal'], ['253 characters', LONG]])(
    "a node named as on %s: its TencPeer is published, read back and believed, then withdrawn; it carries no label the name would overflow",
    async (_what, node) => {
      expect(node.length).toBeLessThanOrEqual(253);
      api.putPod('alpha', 'alpha-dotted-1', node, '10.128.1.50', { app: 'web' });
      const mine = open(node);
      const other = open('node2');
      await until('the pod', async () => (await mine.pods('alpha')).find((p) => p.name === 'alpha-dotted-1'));
      const k = key();
      await mine.publishPeer({ project: 'alpha', pod: 'alpha-dotted-1', node, publicKey: k, endpoint: '10.128.1.50:51820' });
      const t = api.get('tencpeers', 'alpha', 'alpha-dotted-1')!;
      expect(t.spec.nodeName).toBe(node);
      // a label value holds at most 63 characters (the fake refuses more, as the API server does)
      for (const v of Object.values((t.metadata.labels ?? {}) as Record<string, string>)) expect(v.length).toBeLessThanOrEqual(63);
      const seen = await until('node2 reads it', async () => (await other.peers('alpha')).find((p) => p.pod === 'alpha-dotted-1'));
      expect(seen).toEqual({ project: 'alpha', pod: 'alpha-dotted-1', node, publicKey: k, endpoint: '10.128.1.50:51820' });
      const rejected: string[] = [];
      expect(trustedPeers(await other.pods('alpha'), await other.peers('alpha'), (p, why) => rejected.push(`${p.pod}: ${why}`))).toEqual([seen]);
      expect(rejected).toEqual([]);
      await mine.withdrawPeer('alpha', node, 'alpha-dotted-1');
      expect(api.get('tencpeers', 'alpha', 'alpha-dotted-1')).toBeUndefined();
    },
  );

  it('node a is not node a.b (nor a-b): admission refuses a writing as a.b, and what a publishes for a pod of a.b is not believed', async () => {
    api.putPod('alpha', 'alpha-ab-1', 'a.b', '10.128.1.51', { app: 'web' });
    const a = open('a');
    const ab = open('a.b');
    const aDashB = open('a-b');
    await until('the pod', async () => (await a.pods('alpha')).find((p) => p.name === 'alpha-ab-1'));
    for (const r of [a, aDashB]) await expect(r.publishPeer({ project: 'alpha', pod: 'alpha-ab-1', node: 'a.b', publicKey: key(), endpoint: '10.128.1.51:51820' })).rejects.toThrow(/HTTP 403.*tenc-peer-node/);
    // under its own name: admitted, but not believed for a pod of a.b
    await a.publishPeer({ project: 'alpha', pod: 'alpha-ab-1', node: 'a', publicKey: key(), endpoint: '10.128.1.51:51820' });
    const peers = await until('seen', async () => {
      const p = await ab.peers('alpha');
      return p.length ? p : null;
    });
    const rejected: string[] = [];
    expect(trustedPeers(await ab.pods('alpha'), peers, (p, why) => rejected.push(`${p.pod}: ${why}`))).toEqual([]);
    expect(rejected).toEqual(['alpha-ab-1: published by node a, but the pod runs on a.b']);
    // nor may a.b's agent change or delete it (its old object is a's)
    await expect(ab.publishPeer({ project: 'alpha', pod: 'alpha-ab-1', node: 'a.b', publicKey: key(), endpoint: '10.128.1.51:51820' })).rejects.toThrow(/HTTP 403/);
    await a.withdrawPeer('alpha', 'a', 'alpha-ab-1');
    const k = key();
    await ab.publishPeer({ project: 'alpha', pod: 'alpha-ab-1', node: 'a.b', publicKey: k, endpoint: '10.128.1.51:51820' });
    const own = await until('a.b\'s own', async () => (await a.peers('alpha')).find((p) => p.publicKey === k));
    expect(trustedPeers(await a.pods('alpha'), [own])).toEqual([own]);
  });

  it("a TencPeer whose spec.nodeName is not a node's name is left out, logged once; publishing under such a name is refused before the API is asked", async () => {
    const r = open('node1');
    api.put('tencpeers', { metadata: { name: 'alpha-web-1', namespace: 'alpha' }, spec: { nodeName: 'node1..x', publicKey: key(), endpoint: '10.128.1.10:51820' } });
    await until('listed', async () => (await r.pods('alpha')).length > 0);
    for (let i = 0; i < 2; i++) expect(await r.peers('alpha')).toEqual([]);
    expect(warnings.filter((w) => w.includes('TencPeer alpha/alpha-web-1') && w.includes('spec.nodeName is not a node name'))).toHaveLength(1);
    const writes = api.counts.denied;
    for (const node of ['Node1', 'a..b', '-a', 'a/b', `${LONG}x`]) {
      await expect(r.publishPeer({ project: 'alpha', pod: 'alpha-web-1', node, publicKey: key(), endpoint: '10.128.1.10:51820' })).rejects.toThrow(/^publishPeer: node: .* is not a node name/);
    }
    expect(api.counts.denied).toBe(writes);
  });
});

describe('--registry kubernetes[:KUBECONFIG]', () => {
  it('opens the backend from a kubeconfig file; a missing or empty one is named', async () => {
    await expect(openRegistry(`kubernetes:${join(dir, 'nope')}`)).rejects.toThrow(`--registry kubernetes:${join(dir, 'nope')}: kubeconfig ${join(dir, 'nope')} does not exist`);
    // bare `kubernetes`: the default chain ($KUBECONFIG first), not a directory named kubernetes
    const saved = process.env.KUBECONFIG;
    process.env.KUBECONFIG = join(dir, 'nope');
    try {
      await expect(openRegistry('kubernetes')).rejects.toThrow(/^--registry kubernetes: /);
    } finally {
      if (saved === undefined) delete process.env.KUBECONFIG;
      else process.env.KUBECONFIG = saved;
    }
    writeFileSync(join(dir, 'empty.json'), '{}');
    await expect(openRegistry(`kubernetes:${join(dir, 'empty.json')}`)).rejects.toThrow(/no current cluster/);
    const kc = join(dir, 'kc.json');
    writeFileSync(
      kc,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'f', cluster: { server: `http://127.0.0.1:${api.port}`, 'insecure-skip-tls-verify': true } }],
        users: [{ name: 'u', user: { token: api.agentToken('node1') } }],
        contexts: [{ name: 'c', context: { cluster: 'f', user: 'u' } }],
        'current-context': 'c',
      }),
    );
    const r = await openRegistry(`kubernetes:${kc}`, { runDir: join(dir, 'run') });
    try {
      expect(await r.projects()).toEqual(['alpha', 'beta']);
      expect(await r.pskFile('alpha')).toBe(join(dir, 'run', 'psk', 'alpha.psk'));
    } finally {
      await r.close?.();
    }
  });
});

describe('kubernetes registry: health file', () => {
  it('says synced once every informer listed, and is rewritten while the event loop runs', async () => {
    const file = join(dir, 'health');
    api.failLists.set('tencpeers', 2);
    const r = new KubernetesRegistry(api.kubeConfig(api.agentToken('node1')), {
      pskDir: join(dir, 'psk'),
      log: { warn: (_f, m) => warnings.push(m), info: () => {} },
      healthFile: file,
      healthMs: 50,
      informer: { backoffMs: 100, backoffMaxMs: 200 },
    });
    regs.push(r);
    expect(JSON.parse(readFileSync(file, 'utf8')).synced).toBe(false); // tencpeers not listed yet
    await until('synced', () => JSON.parse(readFileSync(file, 'utf8')).synced === true);
    const t1 = JSON.parse(readFileSync(file, 'utf8')).time;
    await until('rewritten', () => JSON.parse(readFileSync(file, 'utf8')).time !== t1);
    expect(JSON.parse(readFileSync(file, 'utf8')).informers.tencpeers.errors).toBe(2);
  });
});

describe('kubernetes registry: psk', () => {
  it('writes the Secret to a 0600 file; missing, short or zero psk: rejected, logged once, recovers', async () => {
    const r = open('node1');
    const f = await r.pskFile('alpha');
    expect(statSync(f).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'node1', 'psk')).mode & 0o777).toBe(0o700);
    expect(readFileSync(f, 'utf8')).toBe(Buffer.from(api.get('secrets', 'alpha', 'tenc-psk')!.data.psk, 'base64').toString());
    api.remove('secrets', 'beta', 'tenc-psk');
    await until('missing', async () => r.pskFile('beta').then(() => null, (e) => e instanceof PskError && /does not exist/.test(e.message)));
    for (let i = 0; i < 3; i++) await expect(r.pskFile('beta')).rejects.toThrow(/tenc-psk does not exist/);
    expect(warnings.filter((w) => w.includes('beta/tenc-psk does not exist'))).toHaveLength(1);
    api.putPsk('beta', randomBytes(16).toString('base64'));
    await until('short', async () => r.pskFile('beta').then(() => null, (e) => /not a 32-byte key/.test(e.message)));
    api.putPsk('beta', Buffer.alloc(32).toString('base64'));
    await until('zero', async () => r.pskFile('beta').then(() => null, (e) => /all zeros/.test(e.message)));
    const good = key();
    api.putPsk('beta', good);
    const fb = await until('recovered', async () => r.pskFile('beta').catch(() => null));
    expect(readFileSync(fb, 'utf8')).toBe(`${good}\n`);
    await expect(r.pskFile('not-protected')).rejects.toThrow(/not protected/);
    // no secret in any log line
    expect(warnings.join('\n')).not.toContain(good);
  });

  it('a missing or short psk Secret records one Warning Event each (never the psk); a failed Event POST is logged once', async () => {
    const r = open('node1');
    await r.pskFile('alpha');
    api.remove('secrets', 'beta', 'tenc-psk');
    await until('missing', async () => r.pskFile('beta').then(() => null, (e) => /does not exist/.test(e.message)));
    const missing = await until('missing event', () => api.events.find((e) => e.reason === 'TencPskMissing'));
    expect(missing).toMatchObject({ type: 'Warning', involvedObject: { kind: 'Namespace', name: 'beta' }, metadata: { namespace: 'beta' }, reportingComponent: 'tenc-agent', source: { component: 'tenc-agent', host: 'node1' } });
    expect(missing.reportingInstance).toContain('node1');
    expect(missing.message).toContain('beta/tenc-psk');
    expect(missing.message).toContain('"psk"');
    const short = randomBytes(16).toString('base64');
    api.putPsk('beta', short);
    const bad = await until('invalid event', () => api.events.find((e) => e.reason === 'TencPskInvalid'));
    expect(bad).toMatchObject({ type: 'Warning', involvedObject: { kind: 'Secret', namespace: 'beta', name: 'tenc-psk' } });
    expect(bad.message).toMatch(/beta\/tenc-psk.*not a 32-byte key/);
    // several more resyncs (200 ms each): still one Event per problem
    await sleep(700);
    expect(api.events.map((e) => e.reason)).toEqual(['TencPskMissing', 'TencPskInvalid']);
    const all = JSON.stringify(api.events);
    expect(all).not.toContain(short);
    expect(all).not.toContain(Buffer.from(`${short}\n`).toString('base64'));
    // the Event POST fails: the psk state still updates, the failure is logged once, nothing throws
    api.failEvents = 10;
    api.putPsk('beta', Buffer.alloc(32).toString('base64'));
    await until('zero', async () => r.pskFile('beta').then(() => null, (e) => /all zeros/.test(e.message)));
    await until('event failure logged', () => warnings.some((w) => w.includes('recording Event TencPskInvalid in namespace beta failed')));
    api.remove('secrets', 'beta', 'tenc-psk');
    await until('missing again', async () => r.pskFile('beta').then(() => null, (e) => /does not exist/.test(e.message)));
    await sleep(300);
    expect(warnings.filter((w) => w.includes('recording Event') )).toHaveLength(1);
    expect(api.events).toHaveLength(2);
    const good = key();
    api.putPsk('beta', good);
    expect(readFileSync(await until('recovered', async () => r.pskFile('beta').catch(() => null)), 'utf8')).toBe(`${good}\n`);
  });

  it('parsePsk names the Secret and the problem', () => {
    expect(() => parsePsk(undefined, 'ns')).toThrow('Secret ns/tenc-psk has no key "psk"');
    expect(() => parsePsk({ psk: Buffer.from('abc').toString('base64') }, 'ns')).toThrow(/not a 32-byte key/);
    const k = key();
    expect(parsePsk({ psk: Buffer.from(k).toString('base64') }, 'ns')).toBe(k);
  });
});

describe('kubernetes registry: watches that fail', () => {
  async function churn(r: KubernetesRegistry, disrupt: (i: number) => void, rounds: number) {
    // pods come and go on node2 while the watches are disrupted; the cache must end equal to the server
    for (let i = 0; i < rounds; i++) {
      api.putPod('alpha', `churn-${i}`, 'node2', `10.128.2.${100 + i}`, { app: 'churn' });
      if (i % 3 === 2) api.remove('pods', 'alpha', `churn-${i - 1}`);
      if (i % 4 === 0) api.putPod('alpha', 'alpha-db-1', 'node2', '10.128.2.10', { app: 'db', round: String(i) });
      disrupt(i);
      await sleep(30);
    }
    const want = () =>
      api
        .list('pods', 'alpha')
        .map((p) => `${p.metadata.name}=${p.status.podIP}/${p.metadata.labels?.round ?? ''}`)
        .sort()
        .join(',');
    const got = async () =>
      (await r.pods('alpha'))
        .map((p) => `${p.name}=${p.address}/${p.labels.round ?? ''}`)
        .sort()
        .join(',');
    await until('cache converged', async () => (await got()) === want(), 10_000);
    expect(await got()).toBe(want());
  }

  it('watches dropped every few events resume from their resourceVersion: nothing missed, no relist', async () => {
    const r = open('node1');
    await r.pods('alpha');
    const listsBefore = api.counts.lists.get('pods');
    let dropped = 0;
    await churn(r, (i) => {
      if (i % 5 === 4) dropped += api.dropWatches();
    }, 30);
    expect(dropped).toBeGreaterThan(5);
    expect(api.counts.lists.get('pods')).toBe(listsBefore); // resumed, not relisted
    expect(api.counts.watchFrom.filter((w) => w.startsWith('pods@')).length).toBeGreaterThan(4);
  });

  it('a watch dropped every few hundred ms, again and again, is resumed at once: the back-off does not climb', async () => {
    // bookmarks every 100 ms: each watch carries data before it is dropped (a healthy watch)
    api.bookmarkMs = 100;
    const r = open('node1', { informer: { backoffMs: 50, backoffMaxMs: 8000 } });
    await r.pods('alpha');
    let dropped = 0;
    for (let i = 0; i < 12; i++) {
      await sleep(250);
      dropped += api.dropWatches();
    }
    expect(dropped).toBeGreaterThanOrEqual(12 * 4); // every informer was watching again each time
    expect(r.stats().pods.errors).toBeGreaterThanOrEqual(10);
    // without the reset, 12 failures in a row would wait up to backoffMaxMs (8 s) here
    for (let i = 0; i < 3; i++) {
      await sleep(250);
      api.dropWatches();
      const t0 = Date.now();
      api.putPod('alpha', `quick-${i}`, 'node1', `10.128.1.${80 + i}`, {});
      await until(`quick-${i}`, async () => (await r.pods('alpha')).some((p) => p.name === `quick-${i}`), 5000);
      expect(Date.now() - t0).toBeLessThan(1000);
    }
  });

  it('410 Gone (ERROR event, and on reconnect) relists and reports what was deleted meanwhile', async () => {
    const r = open('node1');
    await r.pods('alpha');
    const listsBefore = api.counts.lists.get('pods')!;
    await churn(r, (i) => {
      if (i === 10) api.expire(); // open watches get ERROR 410
      if (i === 20) {
        // dropped, then the history is compacted before the reconnect: watch from an old version gets 410
        api.dropWatches();
        api.compact();
      }
    }, 30);
    expect(api.counts.lists.get('pods')!).toBeGreaterThanOrEqual(listsBefore + 1);
    // a pod deleted while the informer was cut off and its history compacted is reported gone
    api.dropWatches();
    api.compact();
    api.remove('pods', 'alpha', 'alpha-client-2');
    await until('deleted pod gone', async () => !(await r.pods('alpha')).some((p) => p.name === 'alpha-client-2'));
    expect(r.stats().pods.expired).toBeGreaterThanOrEqual(1);
  });

  it('list errors back off and retry; a silent (hung) watch is abandoned; a slow server still converges', async () => {
    api.failLists.set('services', 3);
    const r = open('node1', { informer: { timeoutSeconds: 60, idleMs: 400 } });
    expect((await r.services('alpha')).length).toBe(2);
    expect(api.counts.lists.get('services')).toBe(4);
    expect(warnings.filter((w) => w.includes('services') && w.includes('HTTP 500'))).toHaveLength(1); // once per kind of error
    // bookmarks every 200 ms keep a healthy watch alive past idleMs
    api.bookmarkMs = 100;
    await sleep(900);
    const watchesBefore = api.counts.watches.get('pods')!;
    // the server stops sending anything (no bookmarks): the idle timer restarts the watch
    api.bookmarkMs = 60_000;
    api.dropWatches();
    await until('rewatch after idle', () => api.counts.watches.get('pods')! >= watchesBefore + 2, 5000);
    api.delayMs = 150;
    api.putPod('alpha', 'slow-1', 'node1', '10.128.1.77', {});
    await until('slow server', async () => (await r.pods('alpha')).find((p) => p.name === 'slow-1'));
    expect(warnings.some((w) => w.includes('WatchIdle'))).toBe(true);
  });

  it('an unreachable API server: reads fail with a clear error instead of hanging, then recover', async () => {
    const port = api.port;
    await api.stop();
    const r = new KubernetesRegistry(api.kubeConfig(api.agentToken('node1')), {
      pskDir: join(dir, 'psk'),
      log: { warn: (_f, m) => warnings.push(m), info: () => {} },
      syncTimeoutMs: 500,
      informer: { backoffMs: 20, backoffMaxMs: 100 },
    });
    regs.push(r);
    await expect(r.pods('alpha')).rejects.toThrow(/pods: not listed yet after 500 ms \(last error: ECONNREFUSED/);
    const w = warnings.filter((x) => x.includes('kubernetes pods') && x.includes('ECONNREFUSED'));
    expect(w).toHaveLength(1); // many retries, one line
    // the server comes back on the same port
    const api3 = new FakeApiServer();
    for (const [t, u] of api.tokens) api3.tokens.set(t, u);
    api3.loadCluster(cluster);
    await api3.start(port);
    try {
      await until('recovered', async () => (await r.pods('alpha')).length === 4, 8000);
    } finally {
      await r.close();
      await api3.stop();
    }
  });
});

