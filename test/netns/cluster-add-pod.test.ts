/**
 * `cluster.sh add-pod` that fails leaves nothing behind. It saved the pod in
 * cluster.json and synced it to the registry before anything was built, so a CNI ADD
 * refused (the node's agent stopped: tenc's plugin answers code 11) left a half-made
 * pod: its registry objects, namespace, /etc/netns files, STATE/pods and
 * STATE/namespaces lines, cluster.json entry and the bridge's address reservation (the
 * same pod could not be added again). Now add-pod takes back all it did.
 *
 *   one node (node1), project alpha, pod alpha-web-1; agents stopped; add-pod alpha-web-2
 *   -> fails, the state as before; agents started; add-pod alpha-web-2 again -> done
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureBuilt } from '../build.js';
import { requireRoot, requireTool, sh } from './lib.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const script = join(root, 'netns-scripts', 'cluster.sh');
const PREFIX = `cp${process.pid % 100000}`;
const STATE = `/run/tenc-cluster/${PREFIX}`;
const env = { ...process.env, CLUSTER_PREFIX: PREFIX };
const file = join('/tmp', `${PREFIX}-cluster.json`);
const web2 = { name: 'alpha-web-2', project: 'alpha', node: 'node1', address: '10.128.1.12', labels: { app: 'web' } };

function cluster(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('bash', [script, ...args], { env, encoding: 'utf8', timeout: 90_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Every file under dir (relative path -> content), sorted; {} when dir is missing. */
function tree(dir: string): Record<string, string> {
  if (!existsSync(dir)) return {};
  const out: Record<string, string> = {};
  for (const f of readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort()) {
    const p = join(dir, f);
    try {
      out[f] = readFileSync(p, 'utf8');
    } catch {
      out[f] = '(directory)';
    }
  }
  return out;
}

/** What add-pod changes: the state files, the registry, the bridge's reservations, namespaces, /etc/netns, the node's links. */
function snapshot() {
  return {
    cluster: readFileSync(join(STATE, 'cluster.json'), 'utf8'),
    pods: readFileSync(join(STATE, 'pods'), 'utf8'),
    namespaces: readFileSync(join(STATE, 'namespaces'), 'utf8'),
    registry: tree(join(STATE, 'registry', 'pods')),
    endpointslices: tree(join(STATE, 'registry', 'endpointslices')),
    // host-local's reservations (not its last_reserved_ip.N, where its next search starts: a DEL leaves that as it is)
    ipam: Object.fromEntries(Object.entries(tree(join(STATE, 'cni', 'ipam'))).filter(([f]) => !/last_reserved_ip/.test(f))),
    cniResults: readdirSync(join(STATE, 'cni')).filter((f) => f.endsWith('.result.json')),
    dnsHosts: readFileSync(join(STATE, 'dns.hosts'), 'utf8'),
    netns: sh('ip', ['netns', 'list']).split('\n').filter((l) => l.startsWith(PREFIX)).map((l) => l.split(' ')[0]).sort(),
    etcNetns: existsSync('/etc/netns') ? readdirSync('/etc/netns').filter((n) => n.startsWith(PREFIX)).sort() : [],
    nodeLinks: sh('ip', ['-n', `${PREFIX}-n-node1`, '-o', 'link', 'show']).split('\n').map((l) => l.split(':')[1]?.trim()).filter(Boolean).sort(),
  };
}

beforeAll(() => {
  requireRoot();
  for (const t of ['ip', 'bridge', 'nft', 'nsenter', 'dnsmasq']) requireTool(t);
  ensureBuilt();
  writeFileSync(
    file,
    JSON.stringify({
      dns: '10.96.0.10',
      nodes: [{ name: 'node1', podCidr: '10.128.1.0/24' }],
      projects: [{ name: 'alpha' }],
      pods: [{ name: 'alpha-web-1', project: 'alpha', node: 'node1', address: '10.128.1.10', labels: { app: 'web' } }],
      services: [{ name: 'web', project: 'alpha', vip: '10.96.1.10', ports: [{ protocol: 'tcp', port: 80 }], selector: { app: 'web' } }],
    }),
  );
  const up = cluster('up', file);
  if (up.status !== 0) throw new Error(`cluster.sh up failed: ${up.stderr}`);
}, 120_000);

afterAll(() => {
  cluster('down');
  rmSync(file, { force: true });
});

describe('cluster.sh add-pod', () => {
  it('a CNI ADD refused (agent stopped) takes back everything add-pod did; the same pod is added once the agent runs', () => {
    expect(cluster('agent-stop').status).toBe(0);
    const before = snapshot();
    expect(before.netns).toContain(`${PREFIX}-alpha-web-1`);

    const r = cluster('add-pod', JSON.stringify(web2));
    expect(r.status, r.stderr).toBe(1);
    expect(snapshot()).toEqual(before);
    expect(r.stderr).toContain('CNI ADD of pod alpha-web-2 failed');
    expect(r.stderr).toContain('add-pod of alpha-web-2 failed: removing what it made');

    expect(cluster('agent-start').status).toBe(0);
    const again = cluster('add-pod', JSON.stringify(web2));
    expect(again.status, again.stderr).toBe(0);
    const after = snapshot();
    expect(after.netns).toContain(`${PREFIX}-alpha-web-2`);
    expect(JSON.parse(after.cluster).pods.map((p: { name: string }) => p.name)).toEqual(['alpha-web-1', 'alpha-web-2']);
    expect(Object.keys(after.registry)).toContain('alpha/alpha-web-2.json');
  });
});
