/**
 * The local cluster's acceptance checks with the Kubernetes registry backend: the
 * namespaces, bridge, VXLAN, kube-proxy DNAT and DNS of netns-scripts/cluster.sh, pods
 * made through the CNI chain, one `tenc agent --registry kubernetes:KUBECONFIG` per node
 * (`cluster.sh up FILE --registry kubernetes`), all against the in-test API server
 * (test/k8s/fake-apiserver.ts) fed from the same cluster file: protected namespaces,
 * Pods (nodeName, podIPs), Services, EndpointSlices, the psk Secrets. Each agent has a
 * node-bound token of its node; TencPeer writes go through the admission emulation.
 * The server drops every watch every 2 s for the whole run, and expires them (410) once.
 *
 *  1. service traffic within node1 and node1 <-> node2: ciphertext only on the node
 *     bridge and the underlay; one TencPeer per pod, written by its node's agent, owned
 *     by its Pod, holding the key the proxy runs with; watches resumed, not relisted
 *  2. a foreign node's agent cannot write, replace or delete another node's TencPeer;
 *     a beta pod gets no session with an alpha pod
 *  3. churn with a 410 in the middle: a pod removed and one added (Pending, CNI ADD
 *     through the static launcher cni/tenc-cni, then its IP): peers within 5 s, an open
 *     connection survives, the removed pod's TencPeer garbage-collected
 *  4. kill -9 of a proxy (new key re-published), then of an agent: traffic back in 5 s
 *  5. bad API input (pod without IP, malformed TencPeer, Service without selector, a
 *     short psk): logged once, no crash; the short psk's namespace stays fail-closed
 *  6. CHECK and DEL through the static launcher; cluster.sh down leaves no namespace
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateCluster, type ClusterConfig } from '../../src/agent/cluster-config.js';
import { ensureBuilt } from '../build.js';
import { FakeApiServer, type Kind } from '../k8s/fake-apiserver.js';
import { syncApiFromCluster, writeKubeconfig } from '../k8s/cluster-api.js';
import { Netns, echoConnection, podProxies, readCaptureBytes, requireRoot, requireTool, startCapture, until } from './lib.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const main = join(root, 'dist', 'src', 'cli', 'main.js');
const script = join(root, 'netns-scripts', 'cluster.sh');
const example = join(root, 'netns-scripts', 'cluster-example.json');
const PREFIX = `ck${process.pid % 100000}`;
const STATE = `/run/tenc-cluster/${PREFIX}`;
const marker = `TENC-K8S-MARKER-${process.pid}`;
const ns = (pod: string) => `${PREFIX}-${pod}`;
const stateCluster = (): ClusterConfig => validateCluster(JSON.parse(readFileSync(join(STATE, 'cluster.json'), 'utf8')), 'cluster.json');

let api: FakeApiServer;
let tmp: string;
let env: Record<string, string>;
let dropper: NodeJS.Timeout | undefined;
let drops = 0;
const children = new Set<ChildProcess>();

/** A command, without blocking the event loop (the API server lives in this process). */
function run(cmd: string, args: string[], timeoutMs = 30_000): Promise<{ status: number | null; stdout: string; stderr: string }> {
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
const cluster = (...args: string[]) => run('bash', [script, ...args], 90_000);
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
const peersOf = async (pod: string) => (await status(pod)).peers as { publicKey: string; allowedIps: string[] }[];
/** An HTTP server in the pod answering "<pod> got: <body>", and a TCP echo on port + 10000. */
function serve(pod: string, port: number): void {
  const c = spawn('ip', ['netns', 'exec', ns(pod), 'node', '-e', `
    require('http').createServer((q, r) => { let b = ''; q.on('data', (d) => (b += d)); q.on('end', () => r.end('${pod} got: ' + b)); }).listen(${port});
    require('net').createServer((s) => s.pipe(s)).listen(${port + 10000});`], { stdio: 'ignore' });
  children.add(c);
}
const agentLog = (node: string) => readFileSync(join(STATE, 'agents', `${node}.log`), 'utf8');
const count = (s: string, needle: string) => s.split(needle).length - 1;
/** The process serving the pod: the project's pod host on its node (or a process of its own in its netns). */
async function proxyPids(pod: string): Promise<string[]> {
  return podProxies(`/run/netns/${ns(pod)}`);
}

beforeAll(async () => {
  requireRoot();
  for (const t of ['ip', 'bridge', 'nft', 'nsenter', 'dnsmasq', 'tcpdump', 'curl', 'cc']) requireTool(t);
  ensureBuilt();
  tmp = mkdtempSync(join(tmpdir(), 'tenc-ck-'));
  const built = await run('sh', [join(root, 'cni', 'build.sh'), join(tmp, 'tenc-cni')]);
  if (built.status !== 0) throw new Error(`cni/build.sh failed: ${built.stderr}`);
  api = new FakeApiServer();
  await api.start();
  const c = validateCluster(JSON.parse(readFileSync(example, 'utf8')), example);
  api.loadCluster(c);
  const kube = join(tmp, 'kube');
  mkdirSync(kube, { mode: 0o700 });
  for (const n of c.nodes) writeKubeconfig(join(kube, `${n.name}.kubeconfig`), api, api.agentToken(n.name));
  env = { ...(process.env as Record<string, string>), CLUSTER_PREFIX: PREFIX, CLUSTER_KUBECONFIGS: kube };
  // every watch of every agent dropped every 2 s, for the whole run
  dropper = setInterval(() => (drops += api.dropWatches()), 2000);
  const up = await cluster('up', example, '--registry', 'kubernetes');
  if (up.status !== 0) throw new Error(`cluster.sh up --registry kubernetes failed: ${up.stderr}`);
  serve('alpha-web-1', 80);
  serve('alpha-db-1', 5432);
  serve('beta-web-1', 80);
  const pods: [string, number][] = [['alpha-web-1', 3], ['alpha-client-1', 3], ['alpha-db-1', 3], ['alpha-client-2', 3], ['beta-web-1', 1], ['beta-client-1', 1]];
  await until('every pod proxy configured', async () => (await Promise.all(pods.map(async ([p, n]) => (await status(p)).peers.length === n))).every(Boolean), 30_000);
  const through = async () => (await curl('alpha-client-1', 'http://web/', 'x', 1)) && curl('alpha-client-1', 'http://db:5432/', 'x', 1);
  const t0 = Date.now();
  try {
    await until('alpha web and db through tenc', through);
  } catch (e) {
    // as in cluster.test.ts (README "Known limits": a session that stalls after its
    // handshake, seen recovering by WireGuard's rule): print what decides it, wait it out once
    const peers = await Promise.all(pods.slice(0, 4).map(async ([p]) => `${p}: ${JSON.stringify((await status(p)).peers.map((x: { allowedIps: string[]; endpoint: string; latestHandshake: number | null; rxBytes: number; txBytes: number }) => [x.allowedIps[0], x.endpoint, x.latestHandshake === null ? 'never' : Date.now() - x.latestHandshake, x.rxBytes, x.txBytes]))}`));
    console.error(`${(e as Error).message}\n${peers.join('\n')}`);
    await until('alpha web and db through tenc, after the stall', through, 30_000);
    console.error(`cluster setup: web and db answered ${Date.now() - t0} ms after the proxies were configured`);
  }
}, 180_000);

afterAll(async () => {
  clearInterval(dropper);
  for (const c of children) c.kill('SIGKILL');
  if (existsSync(STATE)) {
    // the agents' logs stay for a failed run to read
    for (const n of ['node1', 'node2']) if (existsSync(join(STATE, 'agents', `${n}.log`))) copyFileSync(join(STATE, 'agents', `${n}.log`), join(tmpdir(), `tenc-ck-agent-${n}.log`));
    await cluster('down');
  }
  await api?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
}, 120_000);

describe('local cluster through CNI, agents on the Kubernetes API (watches dropped every 2 s)', () => {
  it('1. service traffic is ciphertext on the bridge and the underlay; one TencPeer per pod from its node, with the running key', async () => {
    const bridge = await startCapture(Netns.attach(`${PREFIX}-n-node1`), 'br0');
    const underlay = await startCapture(Netns.attach(`${PREFIX}-ul`), 'ul0');
    try {
      expect(await curl('alpha-client-1', 'http://web/')).toBe(`alpha-web-1 got: ${marker}`); // node1 -> node1
      expect(await curl('alpha-client-1', 'http://db.alpha.svc.cluster.local:5432/')).toBe(`alpha-db-1 got: ${marker}`); // node1 -> node2
      expect(await curl('alpha-client-2', 'http://web.alpha/')).toBe(`alpha-web-1 got: ${marker}`); // node2 -> node1
    } finally {
      await bridge.stop();
      await underlay.stop();
    }
    const alphaPods = 'host 10.128.1.11 or host 10.128.1.10 or host 10.128.2.10 or host 10.128.2.11';
    expect(bridge.read([`(${alphaPods}) and udp port 51820`]).length).toBeGreaterThan(0);
    const clear = bridge.read([`(${alphaPods}) and not udp port 51820 and not udp port 53 and not arp`]);
    expect(clear, clear.join('\n')).toEqual([]);
    const inner = underlay.read(['udp port 4789']).filter((l) => !l.includes('VXLAN'));
    expect(inner.length).toBeGreaterThan(0);
    expect(inner.filter((l) => !/\.51820 > .*\.51820: UDP/.test(l) && !/ARP/.test(l))).toEqual([]);
    for (const c of [bridge, underlay]) {
      expect(readCaptureBytes(c).includes(Buffer.from(marker))).toBe(false);
      c.remove();
    }
    // key publication: one TencPeer per protected pod, by the agent of the pod's node
    const c = stateCluster();
    for (const project of ['alpha', 'beta']) {
      const peers = api.list('tencpeers', project);
      expect(peers.map((t) => `${t.metadata.name}@${t.spec.nodeName}`).sort()).toEqual(c.pods.filter((p) => p.project === project).map((p) => `${p.name}@${p.node}`).sort());
      for (const t of peers) {
        expect(t.metadata.ownerReferences).toEqual([{ apiVersion: 'v1', kind: 'Pod', name: t.metadata.name, uid: api.get('pods', project, t.metadata.name)!.metadata.uid }]);
        expect(t.spec.publicKey).toBe((await status(t.metadata.name)).publicKey);
        expect(t.spec.endpoint).toBe(`${c.pods.find((p) => p.name === t.metadata.name)!.address}:51820`);
      }
    }
    expect(api.counts.denied).toBe(0);
    // the watches were dropped again and again, and resumed from their resourceVersion:
    // a relist happens only at the start (and after a 410, test 3)
    expect(drops).toBeGreaterThan(10);
    expect(api.counts.watchFrom.filter((w) => !w.endsWith('@') && !w.endsWith('@0')).length).toBeGreaterThan(10);
    for (const kind of ['namespaces', 'pods', 'services', 'endpointslices', 'tencpeers'] as Kind[]) expect(api.counts.lists.get(kind), kind).toBeLessThanOrEqual(4);
  });

  it("2. a foreign node's agent cannot write another node's TencPeer; a beta pod gets no session with alpha", async () => {
    const token = api.agentToken('node2'); // node2's agent, as admission sees it
    const url = (name = '') => `http://127.0.0.1:${api.port}/apis/tenc.io/v1alpha1/namespaces/alpha/tencpeers${name ? `/${name}` : ''}`;
    const req = (method: string, name: string, body?: unknown) =>
      fetch(url(name), { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    const orig = api.get('tencpeers', 'alpha', 'alpha-web-1')!; // node1's pod
    const forged = (nodeName: string) => ({ ...orig, spec: { ...orig.spec, nodeName, publicKey: Buffer.alloc(32, 7).toString('base64') } });
    const tries = [await req('PUT', 'alpha-web-1', forged('node2')), await req('PUT', 'alpha-web-1', forged('node1')), await req('DELETE', 'alpha-web-1', {})];
    expect(tries.map((r) => r.status)).toEqual([403, 403, 403]);
    expect(await tries[0].json()).toMatchObject({ reason: 'Forbidden', message: expect.stringContaining('tenc-peer-node') });
    expect(api.get('tencpeers', 'alpha', 'alpha-web-1')!.spec).toEqual(orig.spec);
    expect(api.counts.denied).toBe(3);
    // beta-client-1's own tenc (beta psk) told to peer with alpha-db-1: no session
    const db = await status('alpha-db-1');
    const hf = (s: any) => Object.values(s.handshakeFailures as Record<string, number>).reduce((a, b) => a + b, 0);
    expect((await inPod('beta-client-1', 'node', main, 'set-peer', db.publicKey, '--endpoint', '10.128.2.10:51820', '--allowed-ips', '10.128.2.10/32')).status).toBe(0);
    expect((await inPod('beta-client-1', 'ping', '-c', '2', '-i', '0.3', '-W', '1', '10.128.2.10')).status).not.toBe(0);
    const after = await status('alpha-db-1');
    expect(hf(after)).toBeGreaterThan(hf(db));
    expect(after.peers.map((p: { publicKey: string }) => p.publicKey)).not.toContain((await status('beta-client-1')).publicKey);
    await inPod('beta-client-1', 'node', main, 'remove-peer', db.publicKey);
  });

  it('3. churn with a 410 in the middle: peers updated within 5 s, an open connection survives, the TencPeer goes with its pod', async () => {
    // node2's CNI plugin installed as the DaemonSet's init container does it: deploy/cni-install.sh
    // puts the static launcher into the bin dir and chains the tenc entry into the node's conflist
    const conf = join(tmp, 'net.d');
    mkdirSync(conf, { mode: 0o700 });
    const list = JSON.parse(readFileSync(join(STATE, 'cni', 'node2.conflist'), 'utf8'));
    const entry = list.plugins.pop(); // the cluster's own tenc entry (agentSocket of node2's agent)
    expect(entry.type).toBe('tenc');
    writeFileSync(join(conf, '10-node2.conflist'), JSON.stringify(list));
    const installed = await new Promise<{ status: number | null; stderr: string }>((resolve) => {
      const c = spawn('bash', [join(root, 'deploy', 'cni-install.sh'), 'install'], {
        env: { ...env, CNI_BIN_DIR: join(STATE, 'cni', 'bin'), CNI_CONF_DIR: conf, TENC_CNI_SRC: join(tmp, 'tenc-cni'), TENC_CNI_ENTRY: JSON.stringify(entry), CNI_WAIT: '1' },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      c.stderr!.setEncoding('utf8').on('data', (d) => (stderr += d));
      c.on('close', (status) => resolve({ status, stderr }));
    });
    expect(installed.status, installed.stderr).toBe(0);
    expect(readFileSync(join(STATE, 'cni', 'bin', 'tenc'))).toEqual(readFileSync(join(tmp, 'tenc-cni')));
    const chained = JSON.parse(readFileSync(join(conf, '10-node2.conflist'), 'utf8'));
    expect(chained.plugins.map((p: { type: string }) => p.type)).toEqual(['bridge', 'loopback', 'tenc']);
    writeFileSync(join(STATE, 'cni', 'node2.conflist'), JSON.stringify(chained));
    const conn = echoConnection(ns('alpha-client-1'), '10.128.2.10', 15432);
    children.add(conn.child);
    await until('echo', () => conn.echoed().includes('ping 3'));

    const gone = api.get('tencpeers', 'alpha', 'alpha-client-2')!.spec.publicKey;
    expect((await peersOf('alpha-client-1')).map((p) => p.publicKey)).toContain(gone);
    const rm = await cluster('remove-pod', 'alpha-client-2'); // CNI DEL, then the namespace
    expect(rm.status, rm.stderr).toBe(0);
    syncApiFromCluster(api, stateCluster()); // the pod object deleted, its endpoints too
    const removed = await until('alpha-client-2 removed from alpha-client-1', async () => !(await peersOf('alpha-client-1')).some((p) => p.publicKey === gone), 10_000);
    expect(api.get('tencpeers', 'alpha', 'alpha-client-2')).toBeUndefined(); // garbage-collected with its pod

    const listsBefore = api.counts.lists.get('pods') ?? 0;
    api.expire(); // 410 Gone on every watch: the agents relist
    const pod = { name: 'alpha-web-2', project: 'alpha', node: 'node2', address: '10.128.2.30', labels: { app: 'web' } };
    // as the scheduler and kubelet do: the Pod exists (Pending, no IP) before the sandbox's CNI ADD
    api.putPod('alpha', pod.name, pod.node, null, pod.labels);
    const t0 = Date.now();
    const add = await cluster('add-pod', JSON.stringify(pod)); // CNI ADD through the static launcher
    expect(add.status, add.stderr).toBe(0);
    syncApiFromCluster(api, stateCluster()); // then its IP, and the web Service's endpoints
    const added = await until('alpha-web-2 peer in alpha-client-1', async () => (await peersOf('alpha-client-1')).some((p) => p.allowedIps.includes('10.128.2.30/32')), 10_000);
    expect(removed.elapsed).toBeLessThan(5000);
    expect(added.elapsed).toBeLessThan(5000);
    expect(api.counts.lists.get('pods')).toBeGreaterThan(listsBefore);
    expect(api.get('tencpeers', 'alpha', pod.name)!.spec.nodeName).toBe('node2');
    expect(Date.now() - t0).toBeLessThan(15_000);
    serve('alpha-web-2', 80);
    await until('alpha-client-1 -> alpha-web-2 through tenc', () => curl('alpha-client-1', 'http://10.128.2.30/', 'x', 1));
    const n = conn.pings();
    await until('more echoes on the open connection', () => conn.pings() > n + 5, 5000);
    expect(conn.child.exitCode).toBe(null);
    conn.child.kill('SIGKILL');
  });

  it('4. kill -9 of a pod proxy (its new key re-published), then of an agent: traffic back within 5 s', async () => {
    const [pid] = await proxyPids('alpha-db-1');
    expect(pid).toBeDefined();
    const oldKey = (await status('alpha-db-1')).publicKey;
    process.kill(Number(pid), 'SIGKILL');
    const t0 = Date.now();
    await until('db back after the proxy was killed', () => curl('alpha-client-1', 'http://db:5432/', 'x', 1), 10_000);
    expect(Date.now() - t0).toBeLessThan(5000);
    const newKey = (await status('alpha-db-1')).publicKey;
    expect(newKey).not.toBe(oldKey);
    expect(api.get('tencpeers', 'alpha', 'alpha-db-1')!.spec.publicKey).toBe(newKey);

    const keys = () => api.list('tencpeers', 'alpha').map((t) => `${t.metadata.name}=${t.spec.publicKey}`).sort().join();
    const before = keys();
    process.kill(Number(readFileSync(join(STATE, 'agents', 'node1.pid'), 'utf8')), 'SIGKILL');
    const t1 = Date.now();
    expect((await cluster('agent-start')).status).toBe(0); // the DaemonSet's restart
    await until('the new agent adopted the proxies of node1', () => count(agentLog('node1'), 'running proxy adopted') >= 3);
    await until('web and db after the agent was killed', async () => (await curl('alpha-client-1', 'http://web/', 'x', 1)) && curl('alpha-client-1', 'http://db:5432/', 'x', 1), 10_000);
    expect(Date.now() - t1).toBeLessThan(5000);
    expect(keys()).toBe(before); // adopted, not restarted: the same keys
  });

  it('5. bad API input is logged once and crashes nothing; a short psk keeps its namespace fail-closed', async () => {
    api.put('pods', { metadata: { name: 'alpha-noip', namespace: 'alpha', labels: { app: 'web' } }, spec: { nodeName: 'node1' }, status: { phase: 'Running' } });
    api.put('tencpeers', { metadata: { name: 'alpha-ghost', namespace: 'alpha' }, spec: { nodeName: 'node1', publicKey: 'not-a-key', endpoint: '10.128.1.99' } });
    api.put('services', { metadata: { name: 'manual', namespace: 'alpha' }, spec: { clusterIP: '10.96.1.99', ports: [{ port: 80, protocol: 'TCP' }] } });
    const goodPsk = api.get('secrets', 'beta', 'tenc-psk')!;
    api.putPsk('beta', Buffer.alloc(16, 1).toString('base64'));
    // the psk is read with get (RBAC: that one Secret, no watch): any change of the namespace reads it again
    api.put('namespaces', { metadata: { name: 'beta', labels: { 'tenc.io/protect': 'true' }, annotations: { touched: '1' } } });
    await until('both agents logged the short psk', () => ['node1', 'node2'].every((n) => agentLog(n).includes('beta/tenc-psk key \\"psk\\" is not a 32-byte key')), 10_000);
    // now beta-web-1's proxy dies: it cannot be started again without a valid psk
    const refusedBefore = count(agentLog('node1'), 'proxy start failed');
    const [betaPid] = await proxyPids('beta-web-1');
    process.kill(Number(betaPid), 'SIGKILL');
    await until('the proxy start refused', () => count(agentLog('node1'), 'proxy start failed') > refusedBefore, 10_000);
    // more events, more reconciles: still logged once
    for (let i = 0; i < 5; i++) api.putPod('alpha', 'alpha-noip', 'node1', null, { app: 'web', round: String(i) }, { status: { phase: 'Running' } });
    expect(await curl('alpha-client-1', 'http://web/')).toBe(`alpha-web-1 got: ${marker}`);
    expect(await curl('alpha-web-2', 'http://db:5432/')).toBe(`alpha-db-1 got: ${marker}`); // node2 -> node2
    // beta-web-1 without its proxy: fail-closed, nothing reaches it in the clear
    expect(await proxyPids('beta-web-1')).toEqual([]);
    expect(await curl('beta-client-1', 'http://web.beta/', 'x', 2)).toBe(null);
    expect((await run('ip', ['-n', ns('beta-web-1'), 'rule', 'show'])).stdout).toContain('lookup 52100');
    // retried all along (about every 0.2-1 s), logged once (issue 12)
    expect(count(agentLog('node1'), 'proxy start failed')).toBe(refusedBefore + 1);
    const recoveredBefore = count(agentLog('node1'), 'proxy start recovered');
    for (const n of ['node1', 'node2']) {
      const log = agentLog(n);
      expect(count(log, 'alpha/alpha-noip: Running without status.podIP'), n).toBe(1);
      expect(count(log, 'TencPeer alpha/alpha-ghost'), n).toBe(1);
      expect(count(log, 'service alpha/manual: no selector'), n).toBe(1);
      // the registry's line (node1's one 'proxy start failed' line also names the psk error)
      expect(count(log, 'the pods of namespace beta stay closed'), n).toBe(1);
      expect(log).not.toContain(Buffer.from(goodPsk.data.psk, 'base64').toString().trim());
      expect(existsSync(join(STATE, 'agents', `${n}.pid`)) && process.kill(Number(readFileSync(join(STATE, 'agents', `${n}.pid`), 'utf8')), 0)).toBe(true);
    }
    // the Secret fixed: the proxy comes back with the old psk, beta works again
    api.put('secrets', goodPsk);
    api.put('namespaces', { metadata: { name: 'beta', labels: { 'tenc.io/protect': 'true' }, annotations: { touched: '2' } } });
    await until('beta web back', () => curl('beta-client-1', 'http://web.beta/', 'x', 1), 15_000);
    await until('node1 logged the recovery', () => count(agentLog('node1'), 'proxy start recovered') === recoveredBefore + 1, 10_000);
    for (const [kind, name] of [['pods', 'alpha-noip'], ['tencpeers', 'alpha-ghost'], ['services', 'manual']] as [Kind, string][]) api.remove(kind, 'alpha', name);
  });

  it('6. CHECK and DEL through the static launcher; the TencPeer withdrawn; cluster.sh down removes everything', async () => {
    for (const c of children) c.kill('SIGKILL');
    const check = await cluster('cni', 'CHECK', 'alpha-web-2');
    expect(check.status, check.stderr + check.stdout).toBe(0);
    const del = await cluster('cni', 'DEL', 'alpha-web-2');
    expect(del.status, del.stderr).toBe(0);
    expect(await proxyPids('alpha-web-2')).toEqual([]);
    await until('alpha-web-2 TencPeer withdrawn', () => api.get('tencpeers', 'alpha', 'alpha-web-2') === undefined, 5000);
    expect((await cluster('cni', 'DEL', 'alpha-web-2')).status).toBe(0); // DEL again: success
    expect(api.counts.denied).toBe(3); // test 2's, none from the agents
    const down = await cluster('down');
    expect(down.status, down.stderr).toBe(0);
    expect((await run('ip', ['netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith(PREFIX))).toEqual([]);
    expect(existsSync(STATE)).toBe(false);
  });
});
