/**
 * The directory registry: Kubernetes-shaped objects written by the cluster tool,
 * read back by agents; atomic writes; peers published and withdrawn; the watch
 * fires on changes (fs.watch) and on the rescan; bad input is skipped or refused.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DirectoryRegistry, writeJsonAtomic } from '../../src/agent/dir-registry.js';
import { readProjectView } from '../../src/agent/registry.js';
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
    expect(v.pods.map((p) => [p.name, p.node, p.address, p.netns])).toEqual([
      ['a-cli', 'node2', '10.128.2.11', '/run/netns/tc-a-cli'],
      ['a-web-2', 'node2', '10.128.2.10', '/run/netns/tc-a-web-2'],
      ['a-web', 'node1', '10.128.1.10', '/run/netns/tc-a-web'],
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
    expect(await reg.pskFile('alpha')).toBe('/run/psk/alpha');
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
    await reg.withdrawPeer('alpha', 'a-web');
    expect(await reg.peers('alpha')).toEqual([]);
    await reg.withdrawPeer('alpha', 'a-web'); // twice: no error
  });

  it('skips files that do not parse or lack fields, and reports them', async () => {
    const problems: string[] = [];
    const r = new DirectoryRegistry(dir, { onProblem: (f) => problems.push(f) });
    writeFileSync(join(dir, 'pods', 'alpha', 'broken.json'), '{"kind": "Pod", ');
    writeJsonAtomic(join(dir, 'pods', 'alpha', 'partial.json'), { metadata: { name: 'partial' } });
    expect((await r.pods('alpha')).map((p) => p.name)).toEqual(['a-cli', 'a-web-2', 'a-web']);
    expect(problems).toEqual([join(dir, 'pods', 'alpha', 'broken.json')]);
  });

  it('refuses names that could leave the directory, with typed errors', async () => {
    await expect(reg.pods('../etc')).rejects.toThrow(RangeError);
    await expect(reg.withdrawPeer('alpha', 'a/../../x')).rejects.toThrow(RangeError);
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
});
