/**
 * Node names as Kubernetes allows them (DNS-1123 subdomains: `ip-10-0-1-2.ec2.internal`
 * on EKS, FQDNs on bare metal, up to 253 characters) through every place tenc puts
 * one: the one check (net/names.ts), the directory registry's peers/<project>/<node>/,
 * the etcd registry's /tenc/nodes/<node>/ keys and the prefix a node's role may write,
 * and the trust rule (a key is believed only from the agent of the pod's own node).
 * A node whose name begins another's (a, a.b, a-b) never passes for it. The Kubernetes
 * backend's side is in registry-kubernetes.test.ts, `tenc agent --node` in cli.test.ts.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NODE_NAME_MAX, isNodeName, parseNodeName } from '../../src/net/names.js';
import { DirectoryRegistry, writeJsonAtomic } from '../../src/registry/dir.js';
import { EtcdRegistry, nodePrefix, placeOf } from '../../src/registry/etcd.js';
import { parseEtcdSpec } from '../../src/registry/etcd-client.js';
import { readProjectView, trustedPeers, type PeerInfo, type Registry } from '../../src/registry/registry.js';

const KEY = 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=';
const EKS = 'ip-10-0-1-2.ec2.internal';
/** 253 characters, the most a node's name may have: four parts between dots. */
const LONG = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`;
/** Node names each of which begins another's. */
const PREFIXED = ['a', 'a.b', 'a-b', 'ab', 'a.b.c'];
const BAD: [string, unknown][] = [
  ['empty', ''],
  ['capitals', 'A'],
  ['capitals in a part', 'ip-10-0-1-2.EC2.internal'],
  ['an empty part', 'a..b'],
  ['a leading "-"', '-a'],
  ['a trailing "-"', 'a-'],
  ['a part ending in "-"', 'a-.b'],
  ['a leading "."', '.a'],
  ['a trailing "."', 'a.'],
  ['"."', '.'],
  ['".."', '..'],
  ['a "/"', 'a/b'],
  ['a way out', '../x'],
  ['"_"', 'a_b'],
  ['a space', 'a b'],
  ['254 characters', `${LONG}x`],
  ['254 characters, no dots', 'a'.repeat(254)],
  ['not a string', 42],
];

describe('parseNodeName: a DNS-1123 subdomain, as Kubernetes checks spec.nodeName', () => {
  it.each([['node1'], ['a'], ['0'], [EKS], ['worker-1.example.com'], ['10.0.1.2'], ...PREFIXED.map((n) => [n]), [LONG]])('%s is a node name', (n: string) => {
    expect(parseNodeName(n)).toEqual({ ok: true, value: n });
    expect(isNodeName(n)).toBe(true);
  });

  it.each(BAD)('refuses %s', (_what, v) => {
    const r = parseNodeName(v);
    expect(r.ok).toBe(false);
    expect(isNodeName(v)).toBe(false);
    if (!r.ok) expect(r.problem).toMatch(typeof v === 'string' ? /is not a node name/ : /is not a string/);
  });

  it('names the limit of 253, and quotes a long name cut', () => {
    expect(LONG.length).toBe(NODE_NAME_MAX);
    const r = parseNodeName('a'.repeat(5000));
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.problem).toContain('at most 253 characters');
      expect(r.problem).toContain('(5000 characters)');
      expect(r.problem.length).toBeLessThan(200);
    }
  });
});

/** A pod object on `node` as the cluster tool writes it. */
const podObject = (name: string, node: string, ip: string) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'alpha' }, spec: { nodeName: node }, status: { podIP: ip } });
/** One pod per node: pod-<i> on nodes[i]. */
const podsOn = (nodes: string[]) => new Map(nodes.map((n, i) => [`pod-${i}`, podObject(`pod-${i}`, n, `10.0.0.${i + 1}`)]));
const peer = (pod: string, node: string): PeerInfo => ({ project: 'alpha', pod, node, publicKey: KEY, endpoint: '10.0.0.1:51820' });

/**
 * Each node publishes for its own pod, and node a (then each other) for the pod of
 * every other node: only each node's own key is believed, whatever their names share.
 */
async function ownKeysOnly(reg: Registry, nodes: string[]): Promise<void> {
  for (const [i, n] of nodes.entries()) await reg.publishPeer(peer(`pod-${i}`, n));
  let v = await readProjectView(reg, 'alpha');
  expect(v.peers.map((p) => `${p.pod}@${p.node}`).sort()).toEqual(nodes.map((n, i) => `pod-${i}@${n}`).sort());
  for (const [i, n] of nodes.entries()) await reg.withdrawPeer('alpha', n, `pod-${i}`);
  expect(await reg.peers('alpha')).toEqual([]);
  for (const [i, mine] of nodes.entries()) {
    for (const [j, other] of nodes.entries()) if (i !== j) await reg.publishPeer(peer(`pod-${j}`, mine));
    const rejected: string[] = [];
    v = await readProjectView(reg, 'alpha', (p, why) => rejected.push(`${p.pod}: ${why}`));
    expect(v.peers).toEqual([]);
    expect(rejected.sort()).toEqual(nodes.flatMap((other, j) => (i === j ? [] : [`pod-${j}: published by node ${mine}, but the pod runs on ${other}`])).sort());
    for (const [j] of nodes.entries()) if (i !== j) await reg.withdrawPeer('alpha', mine, `pod-${j}`);
  }
}

describe('directory registry: peers/<project>/<node>/ for every node name', () => {
  let dir: string;
  let reg: DirectoryRegistry;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tenc-nodes-'));
    reg = new DirectoryRegistry(dir);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it.each([['EKS', EKS], ['253 characters', LONG]])('a node named as on %s: published into its own directory, read back with its name, believed for its pod, withdrawn', async (_what, node) => {
    reg.replaceObjects('pods', 'alpha', podsOn([node]));
    await reg.publishPeer(peer('pod-0', node));
    expect(readdirSync(join(dir, 'peers', 'alpha'))).toEqual([node]);
    expect(readdirSync(join(dir, 'peers', 'alpha', node))).toEqual(['pod-0.json']);
    expect((await readProjectView(reg, 'alpha')).peers).toEqual([peer('pod-0', node)]);
    await reg.withdrawPeer('alpha', node, 'pod-0');
    expect(await reg.peers('alpha')).toEqual([]);
  });

  it(`${PREFIXED.join(', ')}: each node's key is believed for its own pod only`, async () => {
    reg.replaceObjects('pods', 'alpha', podsOn(PREFIXED));
    await ownKeysOnly(reg, PREFIXED);
    expect(readdirSync(join(dir, 'peers', 'alpha')).sort()).toEqual([...PREFIXED].sort());
  });

  it('a name that is not a node name is refused before any path is made; a directory so named is not read', async () => {
    for (const [what, v] of BAD) {
      await expect(reg.publishPeer(peer('pod-0', v as string)), what).rejects.toThrow(typeof v === 'string' ? RangeError : TypeError);
      await expect(reg.withdrawPeer('alpha', v as string, 'pod-0'), what).rejects.toThrow(typeof v === 'string' ? RangeError : TypeError);
    }
    expect(readdirSync(dir)).toEqual([]);
    // directories a reader finds that no node could have made (by hand, or by an older tenc)
    reg.replaceObjects('pods', 'alpha', podsOn(['A', 'a..b', '-a']));
    await reg.publishPeer(peer('pod-9', 'a'));
    for (const n of ['A', 'a..b', '-a', '.x']) {
      mkdirSync(join(dir, 'peers', 'alpha', n), { mode: 0o755 });
      writeJsonAtomic(join(dir, 'peers', 'alpha', n, 'pod-0.json'), { pod: 'pod-0', publicKey: KEY, endpoint: '10.0.0.1:51820' });
    }
    expect(await reg.peers('alpha')).toEqual([peer('pod-9', 'a')]);
  });
});

describe('etcd registry: /tenc/nodes/<node>/ keys for every node name', () => {
  let open: EtcdRegistry[] = [];
  afterEach(() => {
    for (const r of open) r.client.close();
    open = [];
  });

  /**
   * An etcd registry over an in-memory key space: what it writes under its lease comes
   * back to it as a watch event would (its parse-on-arrival gate), and its reads are
   * served from its copy at once (no etcd is asked: the first read's snapshot is taken
   * as done).
   */
  function etcdRegistry(): { reg: EtcdRegistry; store: Map<string, string>; problems: string[] } {
    const problems: string[] = [];
    const reg = new EtcdRegistry(parseEtcdSpec('http://127.0.0.1:9'), { onProblem: (key, why) => problems.push(`${key}: ${why}`) });
    open.push(reg);
    const store = new Map<string, string>();
    const inside = reg as unknown as { put(key: string, value: string): void; remove(key: string): void; first: Promise<void> | null; keys: unknown };
    inside.first = Promise.resolve();
    inside.keys = {
      put: async (key: string, value: string) => {
        store.set(key, value);
        inside.put(key, value);
      },
      delete: async (key: string) => {
        store.delete(key);
        inside.remove(key);
      },
    };
    for (const [name, o] of podsOn([EKS, LONG, ...PREFIXED])) inside.put(`/tenc/pods/alpha/${name}`, JSON.stringify(o));
    return { reg, store, problems };
  }

  it.each([['EKS', EKS], ['253 characters', LONG]])('a node named as on %s: its key is /tenc/nodes/<node>/peers/alpha/<pod>, read back with its name, believed for its pod, withdrawn', async (_what, node) => {
    const { reg, store, problems } = etcdRegistry();
    const pod = `pod-${node === EKS ? 0 : 1}`;
    await reg.publishPeer(peer(pod, node));
    expect([...store.keys()]).toEqual([`/tenc/nodes/${node}/peers/alpha/${pod}`]);
    expect(placeOf(`nodes/${node}/peers/alpha/${pod}`)).toEqual({ kind: 'peers', node, project: 'alpha', name: pod });
    expect(trustedPeers(await reg.pods('alpha'), await reg.peers('alpha'))).toEqual([peer(pod, node)]);
    await reg.withdrawPeer('alpha', node, pod);
    expect(store.size).toBe(0);
    expect(await reg.peers('alpha')).toEqual([]);
    expect(problems).toEqual([]);
  });

  it(`${PREFIXED.join(', ')}: each node's key is believed for its own pod only`, async () => {
    const { reg } = etcdRegistry();
    const nodes = [EKS, LONG, ...PREFIXED];
    await ownKeysOnly(reg, nodes);
  });

  it("the prefix a node's role may write (/tenc/nodes/<node>/, ending in \"/\") holds that node's keys and no other's", async () => {
    const { reg, store } = etcdRegistry();
    const nodes = [EKS, LONG, ...PREFIXED];
    for (const n of nodes) expect(nodePrefix('/tenc/', n)).toBe(`/tenc/nodes/${n}/`);
    for (const [i, n] of nodes.entries()) await reg.publishPeer(peer(`pod-${i}`, n));
    expect(store.size).toBe(nodes.length);
    for (const n of nodes) {
      const role = `/tenc/nodes/${n}/`; // README: etcdctl role grant-permission node-<node> --prefix=true readwrite /tenc/nodes/<node>/
      const covered = [...store.keys()].filter((k) => k.startsWith(role));
      expect(covered, n).toHaveLength(1);
      expect(placeOf(covered[0]!.slice('/tenc/'.length)), n).toMatchObject({ kind: 'peers', node: n });
    }
  });

  it('a key whose node is not a node name is reported and skipped; publishing under one is refused', async () => {
    const { reg, store, problems } = etcdRegistry();
    for (const [, v] of BAD) {
      if (typeof v !== 'string' || v.includes('/') || v === '') continue; // a "/" makes another key shape; "" an empty segment
      expect(placeOf(`nodes/${v}/peers/alpha/pod-0`), v).toBe('bad');
      (reg as unknown as { put(key: string, value: string): void }).put(`/tenc/nodes/${v}/peers/alpha/pod-0`, JSON.stringify({ pod: 'pod-0', publicKey: KEY, endpoint: '10.0.0.1:51820' }));
    }
    expect(await reg.peers('alpha')).toEqual([]);
    expect(problems.length).toBeGreaterThan(10);
    for (const p of problems) expect(p).toMatch(/a name in the key is not a valid name/);
    for (const [what, v] of BAD) {
      await expect(reg.publishPeer(peer('pod-0', v as string)), what).rejects.toThrow(RangeError);
      await expect(reg.withdrawPeer('alpha', v as string, 'pod-0'), what).rejects.toThrow(RangeError);
    }
    expect(store.size).toBe(0);
  });
});
