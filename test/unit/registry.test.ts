/**
 * The directory registry: Kubernetes-shaped objects written by the cluster tool,
 * read back by agents; atomic writes; peers published and withdrawn; the watch
 * fires on changes (fs.watch) and on the rescan; bad input is skipped or refused.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { DirectoryRegistry, writeJsonAtomic } from '../../src/registry/dir.js';
import { readProjectView } from '../../src/registry/registry.js';
import { peerFromObject } from '../../src/registry/objects.js';
import { isEndpoint, isKey32 } from '../../src/registry/kubernetes.js';
import { syncRegistry } from '../../src/agent/cluster-tool.js';
import { validateCluster } from '../../src/agent/cluster-config.js';

const example = {
  dns: '10.96.0.10',
  nodes: [
    { name: 'node1', podCidr: '10.128.1.0/24' },
    { name: 'node2', podCidr: '10.128.2.0/24' },
  ],
  projects: [{ name: 'alpha' }, { name: 'beta' }],
  pods: [
    { name: 'a-web', project: 'alpha', node: 'node1', address: '10.128.1.10', labels: { app: 'web' } },
    { name: 'a-web-2', project: 'alpha', node: 'node2', address: '10.128.2.10', labels: { app: 'web' } },
    { name: 'a-cli', project: 'alpha', node: 'node2', address: '10.128.2.11', labels: { app: 'cli' } },
    { name: 'b-web', project: 'beta', node: 'node1', address: '10.128.1.20', labels: { app: 'web' } },
  ],
  services: [{ name: 'web', project: 'alpha', vip: '10.96.1.10', ports: [{ protocol: 'tcp', port: 80 }], selector: { app: 'web' } }],
};

let dir: string;
let reg: DirectoryRegistry;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tenc-reg-'));
  reg = new DirectoryRegistry(dir, { rescanMs: 100 });
  syncRegistry(validateCluster(example, 'x.json'), reg, '/run/psk', 'tc');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('directory registry', () => {
  it('reads back pods, services and endpoint slices as the cluster tool wrote them', async () => {
    const v = await readProjectView(reg, 'alpha');
    // no netns: the agent takes it only from the CNI registration, never from the registry
    expect(v.pods.map((p) => [p.name, p.node, p.address, p.netns])).toEqual([
      ['a-cli', 'node2', '10.128.2.11', null],
      ['a-web-2', 'node2', '10.128.2.10', null],
      ['a-web', 'node1', '10.128.1.10', null],
    ]);
    expect(v.services).toEqual([{ project: 'alpha', name: 'web', vip: '10.96.1.10', ports: [{ protocol: 'tcp', port: 80 }], selector: { app: 'web' } }]);
    expect(v.endpoints).toEqual([
      {
        project: 'alpha',
        service: 'web',
        pods: [
          { name: 'a-web', address: '10.128.1.10', node: 'node1' },
          { name: 'a-web-2', address: '10.128.2.10', node: 'node2' },
        ],
      },
    ]);
    expect(v.peers).toEqual([]);
    expect((await reg.pods('beta')).map((p) => p.name)).toEqual(['b-web']);
    expect(await reg.projects()).toEqual(['alpha', 'beta']);
    expect(await reg.pskFile('alpha')).toBe('/run/psk/alpha');
  });

  it('projects: no projects directory is none; one that cannot be read is an error, never "none protected"', async () => {
    // "none" let a protected pod's CNI ADD through unprotected; an error makes the agent answer try-again
    const empty = mkdtempSync(join(tmpdir(), 'tenc-reg-empty-'));
    try {
      expect(await new DirectoryRegistry(empty).projects()).toEqual([]);
      writeFileSync(join(empty, 'projects'), 'not a directory');
      await expect(new DirectoryRegistry(empty).projects()).rejects.toThrow(/projects: cannot list the projects \(ENOTDIR\)/);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('a removed pod disappears from pods and endpoints; no temp files are left', async () => {
    const c = validateCluster({ ...example, pods: example.pods.filter((p) => p.name !== 'a-web-2') }, 'x.json');
    syncRegistry(c, reg, '/run/psk', 'tc');
    expect((await reg.pods('alpha')).map((p) => p.name)).toEqual(['a-cli', 'a-web']);
    expect((await reg.endpoints('alpha'))[0].pods.map((p) => p.name)).toEqual(['a-web']);
    for (const sub of ['pods/alpha', 'services/alpha', 'endpointslices/alpha']) {
      expect(readdirSync(join(dir, sub)).filter((n) => !n.endsWith('.json'))).toEqual([]);
    }
  });

  it('publishes and withdraws peers (public key and endpoint only)', async () => {
    const key = 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=';
    await reg.publishPeer({ project: 'alpha', pod: 'a-web', node: 'node1', publicKey: key, endpoint: '10.128.1.10:51820' });
    expect(await reg.peers('alpha')).toEqual([{ project: 'alpha', pod: 'a-web', node: 'node1', publicKey: key, endpoint: '10.128.1.10:51820' }]);
    expect(await reg.peers('beta')).toEqual([]);
    await reg.withdrawPeer('alpha', 'node1', 'a-web');
    expect(await reg.peers('alpha')).toEqual([]);
    await reg.withdrawPeer('alpha', 'node1', 'a-web'); // twice: no error
  });

  it('skips files that do not parse or lack fields, and reports them', async () => {
    const problems: string[] = [];
    const r = new DirectoryRegistry(dir, { onProblem: (f) => problems.push(f) });
    writeFileSync(join(dir, 'pods', 'alpha', 'broken.json'), '{"kind": "Pod", ');
    writeJsonAtomic(join(dir, 'pods', 'alpha', 'partial.json'), { metadata: { name: 'partial' } });
    expect((await r.pods('alpha')).map((p) => p.name)).toEqual(['a-cli', 'a-web-2', 'a-web']);
    expect(problems).toEqual([join(dir, 'pods', 'alpha', 'broken.json')]);
  });

  it('reports a bad file once, not on every read, and again when it changes', async () => {
    const problems: string[] = [];
    const r = new DirectoryRegistry(dir, { onProblem: (f, why) => problems.push(`${f}: ${why}`) });
    const file = join(dir, 'peers', 'alpha', 'node1', 'bad.json');
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, '{"pod": ');
    for (let i = 0; i < 3; i++) await r.peers('alpha');
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/bad\.json: /);
    // broken differently (and later): reported again, once
    writeFileSync(file, JSON.stringify({ pod: 'bad', publicKey: 'x', endpoint: '10.0.0.1:1' }));
    utimesSync(file, new Date(), new Date(Date.now() + 5000));
    for (let i = 0; i < 3; i++) await r.peers('alpha');
    expect(problems).toHaveLength(2);
    expect(problems[1]).toMatch(/bad\.json: not a valid peer: publicKey/);
  });

  it('a file with several problems: each said once, not again at every read', async () => {
    const problems: string[] = [];
    const r = new DirectoryRegistry(dir, { onProblem: (f, why) => problems.push(`${f}: ${why}`) });
    const file = join(dir, 'services', 'alpha', 'multi.json');
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, JSON.stringify({ metadata: { name: 'multi' }, spec: { clusterIP: '10.96.1.99', selector: { app: 'web' }, ports: [null, { protocol: 'TCP', port: 80 }, 7] } }));
    for (let i = 0; i < 3; i++) expect((await r.services('alpha')).map((x) => x.name)).toContain('multi');
    expect(problems).toHaveLength(2);
    expect(problems.join('\n')).toMatch(/multi\.json: .*null/);
  });

  it('a peer whose key the pod would refuse (non-canonical base64, wrong length, all zeros) is skipped where it is read, with the file and field named', async () => {
    const key = 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=';
    const nonCanonical = key.slice(0, 42) + 'p='; // same 32 bytes to a lenient decoder, refused by the pod's parseKey
    const problems: string[] = [];
    const r = new DirectoryRegistry(dir, { onProblem: (f, why) => problems.push(`${f}: ${why}`) });
    const peerDir = join(dir, 'peers', 'alpha', 'node1');
    await reg.publishPeer({ project: 'alpha', pod: 'a-web', node: 'node1', publicKey: key, endpoint: '10.128.1.10:51820' });
    writeJsonAtomic(join(peerDir, 'b1.json'), { pod: 'b1', publicKey: nonCanonical, endpoint: '10.128.1.11:51820' });
    writeJsonAtomic(join(peerDir, 'b2.json'), { pod: 'b2', publicKey: key.slice(0, 40) + '==', endpoint: '10.128.1.12:51820' });
    writeJsonAtomic(join(peerDir, 'b3.json'), { pod: 'b3', publicKey: Buffer.alloc(32).toString('base64'), endpoint: '10.128.1.13:51820' });
    writeJsonAtomic(join(peerDir, 'b4.json'), { pod: 'b4', publicKey: key, endpoint: '10.128.1.14' });
    expect((await r.peers('alpha')).map((p) => p.pod)).toEqual(['a-web']);
    expect(problems).toEqual([
      expect.stringMatching(new RegExp(`^${join(peerDir, 'b1.json')}: not a valid peer: publicKey: .*canonical`)),
      expect.stringMatching(new RegExp(`^${join(peerDir, 'b2.json')}: not a valid peer: publicKey: .*(44|padding|one '=')`)),
      expect.stringMatching(new RegExp(`^${join(peerDir, 'b3.json')}: not a valid peer: publicKey: is the all-zero key`)),
      expect.stringMatching(new RegExp(`^${join(peerDir, 'b4.json')}: not a valid peer: endpoint: .*no port`)),
    ]);
  });

  it('peerFromObject: the pod\'s own key and endpoint rules, the field named; the kubernetes backend\'s isKey32 agrees on the key', () => {
    const key = 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=';
    const ok = peerFromObject('alpha', 'node1', 'web', { pod: 'web', publicKey: key, endpoint: '[fd00::1]:51820' });
    expect(ok).toEqual({ project: 'alpha', pod: 'web', node: 'node1', publicKey: key, endpoint: '[fd00::1]:51820' });
    const bad: [unknown, RegExp][] = [
      [null, /^not a JSON object$/],
      [[key], /^not a JSON object$/],
      [{ publicKey: key, endpoint: '10.0.0.1:1' }, /^pod: missing/],
      [{ pod: 'other', publicKey: key, endpoint: '10.0.0.1:1' }, /^pod: "other" differs/],
      [{ pod: 'web', endpoint: '10.0.0.1:1' }, /^publicKey: .*not a string/],
      [{ pod: 'web', publicKey: key.slice(0, 42) + 'p=', endpoint: '10.0.0.1:1' }, /^publicKey: .*canonical/],
      [{ pod: 'web', publicKey: key.slice(0, 43), endpoint: '10.0.0.1:1' }, /^publicKey: .*44/],
      [{ pod: 'web', publicKey: key + 'AAAA', endpoint: '10.0.0.1:1' }, /^publicKey: .*44/],
      [{ pod: 'web', publicKey: key.slice(0, 10) + '!' + key.slice(11), endpoint: '10.0.0.1:1' }, /^publicKey: .*character/],
      [{ pod: 'web', publicKey: ` ${key}\n`, endpoint: '10.0.0.1:1' }, /^publicKey: has characters around the key$/],
      [{ pod: 'web', publicKey: Buffer.alloc(32).toString('base64'), endpoint: '10.0.0.1:1' }, /^publicKey: is the all-zero key$/],
      [{ pod: 'web', publicKey: key, endpoint: '10.0.0.1:0' }, /^endpoint: .*out of range/],
      [{ pod: 'web', publicKey: key, endpoint: 'node1:51820' }, /^endpoint: .*not an IPv4\/IPv6 address/],
    ];
    for (const [o, re] of bad) expect(peerFromObject('alpha', 'node1', 'web', o as Record<string, unknown>)).toMatch(re);
    // the Kubernetes backend (TencPeer spec.publicKey, the psk Secret) checks keys with isKey32: the same rule
    expect(isKey32(key)).toBe(true);
    for (const k of [key.slice(0, 42) + 'p=', key.slice(0, 43), ` ${key}`, Buffer.alloc(32).toString('base64'), 42]) expect(isKey32(k)).toBe(false);
    // ... and TencPeer spec.endpoint with isEndpoint: the pod's endpoint rule (999.1.1.1 and [::g] passed the old regex)
    for (const e of ['10.0.0.1:1', '[fd00::1]:51820', '[::ffff:10.0.0.1]:65535']) expect(isEndpoint(e)).toBe(true);
    for (const e of ['999.1.1.1:51820', '10.0.0.1:0', '10.0.0.1:65536', '[::g]:1', 'fd00::1:51820', '10.0.0.1', 'node1:51820', ' 10.0.0.1:1', 1]) {
      expect(isEndpoint(e), String(e)).toBe(false);
      expect(peerFromObject('alpha', 'node1', 'web', { pod: 'web', publicKey: key, endpoint: e })).toMatch(/^endpoint: /);
    }
  });

  it('refuses names that could leave the directory, with typed errors', async () => {
    await expect(reg.pods('../etc')).rejects.toThrow(RangeError);
    await expect(reg.withdrawPeer('alpha', 'node1', 'a/../../x')).rejects.toThrow(RangeError);
    await expect(reg.withdrawPeer('alpha', '../x', 'a-web')).rejects.toThrow(RangeError);
    await expect(reg.publishPeer({ project: 'alpha', pod: 'A', node: 'n', publicKey: 'k', endpoint: 'e' })).rejects.toThrow(RangeError);
    expect(() => new DirectoryRegistry(42 as unknown as string)).toThrow(TypeError);
    await expect(reg.pskFile('gamma')).rejects.toThrow(/project gamma: cannot read/);
  });

  it('watch fires on a published peer and is silent once closed', async () => {
    let n = 0;
    const w = reg.watch('alpha', () => n++);
    try {
      await reg.publishPeer({ project: 'alpha', pod: 'a-cli', node: 'node2', publicKey: 'k', endpoint: '10.128.2.11:51820' });
      const t0 = Date.now();
      while (n === 0 && Date.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 10));
      expect(n).toBeGreaterThan(0);
    } finally {
      w.close();
    }
    const after = n;
    await new Promise((r) => setTimeout(r, 250));
    expect(n).toBe(after); // closed: no more calls
  });

  it('a key published by another node than the pod\'s is not believed (one compromised node cannot take over a pod of another)', async () => {
    const key = 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=';
    const evil = 'BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=';
    // node2's agent publishes for a-web, which runs on node1
    await reg.publishPeer({ project: 'alpha', pod: 'a-web', node: 'node2', publicKey: evil, endpoint: '10.128.2.99:51820' });
    const rejected: string[] = [];
    let v = await readProjectView(reg, 'alpha', (p, why) => rejected.push(`${p.pod}@${p.node}: ${why}`));
    expect(v.peers).toEqual([]);
    expect(rejected).toEqual(['a-web@node2: published by node node2, but the pod runs on node1']);
    // the real one, from node1, is believed, and the forged one still is not
    await reg.publishPeer({ project: 'alpha', pod: 'a-web', node: 'node1', publicKey: key, endpoint: '10.128.1.10:51820' });
    v = await readProjectView(reg, 'alpha');
    expect(v.peers).toEqual([{ project: 'alpha', pod: 'a-web', node: 'node1', publicKey: key, endpoint: '10.128.1.10:51820' }]);
    // the publisher is the directory, not a field in the file: a "node" field is ignored
    writeJsonAtomic(join(dir, 'peers', 'alpha', 'node2', 'a-cli.json'), { pod: 'a-cli', node: 'node1', publicKey: key, endpoint: '10.128.2.11:1' });
    expect((await reg.peers('alpha')).find((p) => p.pod === 'a-cli')?.node).toBe('node2');
    // a file whose name is not its pod is ignored
    writeJsonAtomic(join(dir, 'peers', 'alpha', 'node1', 'a-cli.json'), { pod: 'a-web', publicKey: evil, endpoint: 'x:1' });
    expect((await reg.peers('alpha')).filter((p) => p.publicKey === evil && p.node === 'node1')).toEqual([]);
  });

  it('ignores a node directory writable by others, and a file not owned by the directory\'s owner', async () => {
    const key = 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=';
    const problems: string[] = [];
    const r = new DirectoryRegistry(dir, { onProblem: (f, why) => problems.push(`${f}: ${why}`) });
    await r.publishPeer({ project: 'alpha', pod: 'a-web', node: 'node1', publicKey: key, endpoint: '10.128.1.10:51820' });
    expect(await r.peers('alpha')).toHaveLength(1);
    const nodeDir = join(dir, 'peers', 'alpha', 'node1');
    chmodSync(nodeDir, 0o777);
    expect(await r.peers('alpha')).toEqual([]);
    expect(problems.at(-1)).toMatch(/node1: writable by group or others \(mode 777\)/);
    chmodSync(nodeDir, 0o755);
    chownSync(join(nodeDir, 'a-web.json'), 12345, 12345);
    expect(await r.peers('alpha')).toEqual([]);
    expect(problems.at(-1)).toMatch(/a-web.json: not owned by the owner of/);
  });
});
