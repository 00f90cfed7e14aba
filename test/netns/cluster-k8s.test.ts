/**
 * The local cluster's acceptance checks with the kubernetes registry backend: the
 * namespaces, bridge, VXLAN, kube-proxy and DNS of netns-scripts/cluster.sh, but the
 * agents read and publish through the in-test API server (test/k8s/fake-apiserver.ts,
 * fed from the same cluster file) instead of the registry directory, while that
 * server drops every watch every 2 s and expires them (410) once.
 *
 * Until the agent learns pods' namespaces from the CNI registration, the agents are
 * test/k8s/agent-runner.ts: `tenc agent`'s Agent over a KubernetesRegistry whose
 * netns is the cluster's /run/netns/<prefix>-<pod>.
 *
 *  1. by service name within node1 and node1 <-> node2: works, the underlay carries
 *     no plaintext; one TencPeer per pod, written by its node's agent
 *  2. churn: a pod removed and one added: peers updated within 5 s
 *  3. kill -9 of a pod proxy, then of an agent: traffic back within 5 s
 *  4. agents stop: every TencPeer withdrawn; cluster.sh down leaves no namespace
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateCluster } from '../../src/agent/cluster-config.js';
import { FakeApiServer } from '../k8s/fake-apiserver.js';
import { Netns, readCaptureBytes, requireRoot, requireTool, startCapture } from './lib.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const main = join(root, 'dist', 'src', 'cli', 'main.js');
const runner = join(root, 'dist', 'test', 'k8s', 'agent-runner.js');
const script = join(root, 'netns-scripts', 'cluster.sh');
const example = join(root, 'netns-scripts', 'cluster-example.json');
const PREFIX = `ck${process.pid % 100000}`;
const STATE = `/run/tenc-cluster/${PREFIX}`;
const env = { ...process.env, CLUSTER_PREFIX: PREFIX };
const marker = `TENC-K8S-MARKER-${process.pid}`;
const cluster = validateCluster(JSON.parse(readFileSync(example, 'utf8')), example);
const ns = (pod: string) => `${PREFIX}-${pod}`;

let api: FakeApiServer;
let tmp: string;
let cidrs = '';
const agents = new Map<string, ChildProcess>();
const children = new Set<ChildProcess>();
let churn: NodeJS.Timeout | undefined;

/** Runs a command without blocking the event loop (the API server lives in this process). */
function run(cmd: string, args: string[], timeoutMs = 20_000): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout!.setEncoding('utf8').on('data', (d) => (stdout += d));
    c.stderr!.setEncoding('utf8').on('data', (d) => (stderr += d));
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('close', (status) => {
      clearTimeout(t);
      resolve({ status, stdout, stderr });
    });
  });
}
const inPod = (pod: string, cmd: string, ...args: string[]) => run('ip', ['netns', 'exec', ns(pod), cmd, ...args]);
async function curl(pod: string, url: string, body = marker, timeout = 3): Promise<string | null> {
  const r = await inPod(pod, 'curl', '-s', '-m', String(timeout), '--data', body, url);
  return r.status === 0 ? r.stdout : null;
}
async function status(pod: string): Promise<any> {
  const r = await inPod(pod, 'node', main, 'status', '--json');
  if (r.status !== 0) throw new Error(`status ${pod}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}
async function until<T>(what: string, fn: () => Promise<T | null | undefined | false>, ms = 15_000): Promise<{ value: T; elapsed: number }> {
  const t0 = Date.now();
  for (;;) {
    const v = await fn().catch(() => null);
    if (v) return { value: v, elapsed: Date.now() - t0 };
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
function serve(pod: string, port: number): void {
  const c = spawn('ip', ['netns', 'exec', ns(pod), 'node', '-e', `
    require('http').createServer((q, r) => { let b = ''; q.on('data', (d) => (b += d)); q.on('end', () => r.end('${pod} got: ' + b)); }).listen(${port});`], { stdio: 'ignore' });
  children.add(c);
}

function kubeconfig(node: string): string {
  const token = api.agentToken(node);
  const f = join(tmp, `kubeconfig-${node}.json`);
  writeFileSync(
    f,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'fake', cluster: { server: `http://127.0.0.1:${api.port}`, 'insecure-skip-tls-verify': true } }],
      users: [{ name: node, user: { token } }],
      contexts: [{ name: 'c', context: { cluster: 'fake', user: node } }],
      'current-context': 'c',
    }),
    { mode: 0o600 },
  );
  return f;
}

function startAgent(node: string): void {
  const log = join(tmp, `agent-${node}.log`);
  const c = spawn('bash', ['-c', `exec node "$0" "$@" >>${log} 2>&1`, runner, kubeconfig(node), node, 'alpha', join(tmp, `run-${node}`), PREFIX, cidrs], { stdio: 'ignore', detached: true });
  agents.set(node, c);
}
const agentLog = (node: string) => readFileSync(join(tmp, `agent-${node}.log`), 'utf8');
const peersIn = (pod: string) => status(pod).then((s) => s.peers as { publicKey: string; allowedIps: string[] }[]);

beforeAll(async () => {
  requireRoot();
  for (const t of ['ip', 'nft', 'curl', 'tcpdump', 'dnsmasq']) requireTool(t);
  tmp = mkdtempSync(join(tmpdir(), 'tenc-ck-'));
  const up = await run('bash', [script, 'up', example], 90_000);
  expect(up.status, up.stderr).toBe(0);
  cidrs = (await run('node', [join(root, 'dist/src/agent/cluster-tool.js'), 'classify-cidrs', STATE])).stdout.trim();
  api = new FakeApiServer();
  await api.start();
  api.loadCluster(cluster);
  for (const p of ['alpha-web-1', 'alpha-db-1']) serve(p, p === 'alpha-web-1' ? 80 : 5432);
  startAgent('node1');
  startAgent('node2');
  // every watch dropped every 2 s for the whole suite (resume from resourceVersion)
  churn = setInterval(() => api.dropWatches(), 2000);
  await until('four TencPeers', async () => api.list('tencpeers', 'alpha').length === 4, 30_000);
}, 150_000);

afterAll(async () => {
  clearInterval(churn);
  for (const c of children) c.kill('SIGKILL');
  for (const c of agents.values()) if (c.exitCode === null) c.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 1500));
  for (const c of agents.values()) if (c.exitCode === null) c.kill('SIGKILL');
  await run('bash', [script, 'down'], 60_000);
  await api?.stop();
  // the agents' logs stay for a failed run to read
  for (const n of ['node1', 'node2']) {
    try {
      writeFileSync(join(tmpdir(), `tenc-ck-agent-${n}.log`), agentLog(n));
    } catch {
      /* never started */
    }
  }
  rmSync(tmp, { recursive: true, force: true });
}, 120_000);

describe('local cluster, kubernetes backend (in-test API server, watches dropped every 2 s)', () => {
  it('1. service traffic works within and across nodes, not in the clear on the underlay; one TencPeer per pod from its node', async () => {
    const underlay = await startCapture(Netns.attach(`${PREFIX}-ul`), 'ul0');
    try {
      expect((await until('web', () => curl('alpha-client-1', 'http://web/'))).value).toBe(`alpha-web-1 got: ${marker}`);
      expect((await until('db', () => curl('alpha-client-1', 'http://db:5432/'))).value).toBe(`alpha-db-1 got: ${marker}`);
      expect((await until('web from node2', () => curl('alpha-client-2', 'http://web.alpha/'))).value).toBe(`alpha-web-1 got: ${marker}`);
    } finally {
      await underlay.stop();
    }
    expect(readCaptureBytes(underlay).includes(Buffer.from(marker))).toBe(false);
    expect(underlay.read(['udp port 4789']).length).toBeGreaterThan(0);
    underlay.remove();
    const peers = api.list('tencpeers', 'alpha');
    expect(peers.map((t) => `${t.metadata.name}@${t.spec.nodeName}`).sort()).toEqual(cluster.pods.filter((p) => p.project === 'alpha').map((p) => `${p.name}@${p.node}`).sort());
    for (const t of peers) expect(t.metadata.ownerReferences[0].uid).toBe(api.get('pods', 'alpha', t.metadata.name)!.metadata.uid);
    expect((await status('alpha-web-1')).publicKey).toBe(api.get('tencpeers', 'alpha', 'alpha-web-1')!.spec.publicKey);
    expect(api.counts.denied).toBe(0);
  });

  it('2. churn: a pod removed and one added update the peers within 5 s (with a 410 in between)', async () => {
    const gone = api.get('tencpeers', 'alpha', 'alpha-client-2')!.spec.publicKey;
    expect((await peersIn('alpha-client-1')).map((p) => p.publicKey)).toContain(gone);
    expect((await run('bash', [script, 'remove-pod', 'alpha-client-2'])).status).toBe(0);
    api.remove('pods', 'alpha', 'alpha-client-2');
    const removed = await until('alpha-client-2 removed from alpha-client-1', async () => !(await peersIn('alpha-client-1')).some((p) => p.publicKey === gone), 10_000);
    expect(api.get('tencpeers', 'alpha', 'alpha-client-2')).toBeUndefined(); // garbage-collected with its pod
    api.expire();
    const add = { name: 'alpha-web-2', project: 'alpha', node: 'node2', address: '10.128.2.30', labels: { app: 'web' } };
    expect((await run('bash', [script, 'add-pod', JSON.stringify(add)])).status).toBe(0);
    api.putPod('alpha', add.name, add.node, add.address, add.labels);
    api.syncSlice('alpha', 'web', [
      { name: 'alpha-web-1', address: '10.128.1.10', node: 'node1' },
      { name: 'alpha-web-2', address: '10.128.2.30', node: 'node2' },
    ]);
    const added = await until('alpha-web-2 peer in alpha-client-1', async () => (await peersIn('alpha-client-1')).some((p) => p.allowedIps.includes('10.128.2.30/32')), 10_000);
    expect(removed.elapsed).toBeLessThan(5000);
    expect(added.elapsed).toBeLessThan(5000);
    serve('alpha-web-2', 80);
    await until('alpha-client-1 -> alpha-web-2 through tenc', () => curl('alpha-client-1', 'http://10.128.2.30/', 'x', 1));
    expect(api.get('tencpeers', 'alpha', 'alpha-web-2')!.spec.nodeName).toBe('node2');
  });

  it('3. kill -9 of a pod proxy, then of an agent: traffic back within 5 s', async () => {
    const pids = (await run('ip', ['netns', 'pids', ns('alpha-db-1')])).stdout.split('\n').filter(Boolean);
    const tencPid = pids.find((p) => readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('\0pod\0--config'));
    expect(tencPid).toBeDefined();
    const oldKey = (await status('alpha-db-1')).publicKey;
    process.kill(Number(tencPid), 'SIGKILL');
    const t0 = Date.now();
    await until('db back after the proxy was killed', () => curl('alpha-client-1', 'http://db:5432/', 'x', 1), 10_000);
    expect(Date.now() - t0).toBeLessThan(5000);
    const newKey = (await status('alpha-db-1')).publicKey;
    expect(newKey).not.toBe(oldKey);
    expect(api.get('tencpeers', 'alpha', 'alpha-db-1')!.spec.publicKey).toBe(newKey); // re-published

    const before = api.list('tencpeers', 'alpha').map((t) => t.spec.publicKey).sort().join();
    const a1 = agents.get('node1')!;
    process.kill(a1.pid!, 'SIGKILL');
    await new Promise((r) => a1.once('close', r));
    const t1 = Date.now();
    startAgent('node1');
    await until('the new agent adopted the proxies of node1', async () => (agentLog('node1').match(/running proxy adopted/g) ?? []).length >= 2);
    await until('web and db after the agent was killed', async () => (await curl('alpha-client-1', 'http://web/', 'x', 1)) && curl('alpha-client-1', 'http://db:5432/', 'x', 1), 10_000);
    expect(Date.now() - t1).toBeLessThan(5000);
    expect(api.list('tencpeers', 'alpha').map((t) => t.spec.publicKey).sort().join()).toBe(before);
  });

  it('4. agents stop cleanly: every TencPeer withdrawn; cluster.sh down leaves no namespace', async () => {
    for (const c of agents.values()) c.kill('SIGTERM');
    await Promise.all([...agents.values()].map((c) => (c.exitCode !== null ? null : new Promise((r) => c.once('close', r)))));
    expect(api.list('tencpeers', 'alpha')).toEqual([]);
    expect((await run('bash', [script, 'down'], 60_000)).status).toBe(0);
    expect(spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.startsWith(PREFIX))).toEqual([]);
    expect(agentLog('node1') + agentLog('node2')).not.toMatch(/reconcile failed/);
  });
});
