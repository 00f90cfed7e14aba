/**
 * The pods' DNS section as the agent writes it (Proxies.writeConfig): with
 * /etc/netns/<name>/resolv.conf (the local cluster's netns) that file; without one
 * (every pod on Kubernetes: the runtime's netns is /var/run/netns/cni-...) the
 * cluster DNS given with --cluster-dns as the upstreams, so the DNS proxy and the
 * classify ranges run there too; without either, no DNS section (and so no classify
 * ranges), as before.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Proxies, type ProxyOptions } from '../../src/agent/proxies.js';
import type { PodInfo, ProjectView } from '../../src/registry/registry.js';
import { stubRegistry } from './agent-fakes.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function setup(o: Partial<ProxyOptions>): { proxies: Proxies; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'tenc-cluster-dns-'));
  dirs.push(dir);
  const psk = join(dir, 'alpha.psk');
  writeFileSync(psk, 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n', { mode: 0o600 });
  const registry = stubRegistry({ pskFile: async () => psk });
  const proxies = new Proxies({ registry, node: 'n1', project: 'alpha', runDir: join(dir, 'run'), standby: false, podHost: false, ...o }, () => undefined);
  mkdirSync(join(dir, 'run'), { mode: 0o700 });
  return { proxies, dir };
}

const pod: PodInfo = { project: 'alpha', name: 'web-1', node: 'n1', address: '10.244.1.5', addresses: ['10.244.1.5'], labels: {}, netns: null };
const view: ProjectView = { pods: [pod], services: [], endpoints: [], peers: [] };
// a runtime's netns path: no /etc/netns/<name>/resolv.conf belongs to it
const netns = '/var/run/netns/cni-0f0e0d0c-tenc-test';

async function written(proxies: Proxies, dir: string): Promise<{ dns?: Record<string, unknown> }> {
  const r = await proxies.writeConfig(pod, netns, join(dir, 'web-1.sock'), view);
  const file = JSON.parse(readFileSync(join(dir, 'run', 'web-1.json'), 'utf8')) as { dns?: Record<string, unknown> };
  expect(r.dns).toBe(file.dns !== undefined);
  return file;
}

describe('the DNS section of a pod without a resolv.conf of its own', () => {
  it('--cluster-dns: the cluster DNS is the upstream, the domain <project>.svc.<cluster domain>, the classify ranges kept', async () => {
    const { proxies, dir } = setup({ clusterDns: ['10.96.0.10'], classifyCidrs: ['10.244.0.0/16', '10.96.0.0/16'] });
    const c = await written(proxies, dir);
    expect(c.dns).toEqual({ domain: 'alpha.svc.cluster.local', upstreams: ['10.96.0.10'], classifyCidrs: ['10.244.0.0/16', '10.96.0.0/16'], endpoints: [] });
  });

  it('--cluster-domain names the domain', async () => {
    const { proxies, dir } = setup({ clusterDns: ['fd00:96::a'], clusterDomain: 'k8s.example.org' });
    const c = await written(proxies, dir);
    expect(c.dns).toMatchObject({ domain: 'alpha.svc.k8s.example.org', upstreams: ['fd00:96::a'] });
  });

  it('without --cluster-dns: no DNS section, as before', async () => {
    const { proxies, dir } = setup({ classifyCidrs: ['10.244.0.0/16'] });
    const c = await written(proxies, dir);
    expect(c.dns).toBeUndefined();
  });

  it('the DNS proxy turned off (dns: false) wins over --cluster-dns', async () => {
    const { proxies, dir } = setup({ clusterDns: ['10.96.0.10'], dns: false });
    const c = await written(proxies, dir);
    expect(c.dns).toBeUndefined();
  });
});
