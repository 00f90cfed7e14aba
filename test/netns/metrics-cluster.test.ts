/**
 * A real Prometheus scrapes the node AGENTS of the local cluster (cluster.sh, pods
 * made through the CNI chain, CLUSTER_METRICS_PORT: each agent started with
 * --metrics-address 127.0.0.1:P+n), during iperf3 traffic and an attack:
 *
 *   node1: alpha-a 10.128.1.10              node2: alpha-b 10.128.2.10, beta-x 10.128.2.20
 *          agent /metrics 127.0.0.1:P              agent /metrics 127.0.0.1:P+1
 *   (alpha protected; beta not: beta-x is a plain pod, the attacker)
 *   Prometheus on the host's loopback (the agents' namespace), scrape interval 1 s
 *
 *  1. iperf3 TCP alpha-a -> alpha-b across the nodes (VXLAN) for 4 s: node1's agent
 *     exports alpha-a's sent bytes; their increase is iperf3's bytes plus 0-20 %
 *     headers, rate() is within 25 % of iperf3's rate times that factor; node2's
 *     agent exports alpha-b's received bytes increasing
 *  2. the attack, from beta-x: junk UDP to alpha-b's tenc port and plaintext with
 *     alpha-a's address: tenc_drops_total of alpha-b by reason (plaintext_from_project
 *     and an engine reason) appear in Prometheus
 *  3. the agents' own: CNI ADDs through the chain counted per node (and a CHECK run
 *     now), the ADD latency histogram, tenc_agent_proxies{namespace="alpha"} per node,
 *     reconciles and registry calls; tenc_peer_info names alpha-a's peer alpha-b;
 *     `tenc agent status` over node2's run directory; no counter of a living pod
 *     went backwards (PromQL resets() over the whole run is 0)
 *  4. `promtool check metrics` over each agent's scrape passes; no psk and no full
 *     public key (base64, base64url, hex, prefixes) in any scrape
 *  5. kill -9 of alpha-b's proxy: the agent restarts it; Prometheus sees node2's
 *     tenc_agent_proxies_restarted_total rise, alpha-b's start time change and its
 *     counters reset (a new process), and alpha-a's series for alpha-b under its
 *     new key's fingerprint: a new series
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { podProxies, requireRoot, requireTool, sh } from './lib.js';
import { freePortRun } from '../ports.js';
import { ensureBuilt, root } from '../build.js';
import { keyFingerprint } from '../../src/log.js';

const main = join(root, 'dist', 'src', 'cli', 'main.js');
const script = join(root, 'netns-scripts', 'cluster.sh');
const PREFIX = `cm${process.pid % 100000}`;
const STATE = `/run/tenc-cluster/${PREFIX}`;
let env: NodeJS.ProcessEnv;
let dir: string;
let prom: ChildProcess | null = null;
let metricsPort = 0;
let promPort = 0;
const children = new Set<ChildProcess>();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const CLUSTER = {
  underlay: '10.200.0.0/24',
  overlay: '10.201.0.0/24',
  serviceCidr: '10.96.0.0/16',
  dns: '10.96.0.10',
  external: '10.250.0.1',
  nodes: [
    { name: 'node1', podCidr: '10.128.1.0/24' },
    { name: 'node2', podCidr: '10.128.2.0/24' },
  ],
  projects: [{ name: 'alpha' }, { name: 'beta' }],
  pods: [
    { name: 'alpha-a', project: 'alpha', node: 'node1', address: '10.128.1.10', labels: { app: 'a' } },
    { name: 'alpha-b', project: 'alpha', node: 'node2', address: '10.128.2.10', labels: { app: 'b' } },
    { name: 'beta-x', project: 'beta', node: 'node2', address: '10.128.2.20', labels: { app: 'x' } },
  ],
  services: [],
};

function cluster(...args: string[]) {
  return spawnSync('bash', [script, ...args], { env, encoding: 'utf8', timeout: 60_000 });
}
const inPod = (pod: string, cmd: string, ...args: string[]) => spawnSync('ip', ['netns', 'exec', `${PREFIX}-${pod}`, cmd, ...args], { encoding: 'utf8', timeout: 20_000 });

function podStatus(pod: string): { publicKey: string; peers: { publicKey: string; latestHandshake: number | null }[] } | null {
  const r = inPod(pod, 'node', main, 'status', '--json');
  return r.status === 0 ? JSON.parse(r.stdout) : null;
}

/** Two free consecutive loopback ports (the agents'), then one more (Prometheus's). */
async function freePorts(): Promise<[number, number]> {
  const p = await freePortRun(3);
  return [p, p + 2];
}

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}
/** An instant query: every series' value. */
async function queryAll(expr: string, time?: number): Promise<Sample[]> {
  const url = `http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(expr)}${time ? `&time=${time}` : ''}`;
  const r = (await (await fetch(url)).json()) as { status: string; error?: string; data: { result: Sample[] } };
  if (r.status !== 'success') throw new Error(`PromQL ${expr}: ${r.error}`);
  return r.data.result;
}
/** The first series' value, or null. */
async function query(expr: string, time?: number): Promise<number | null> {
  const r = await queryAll(expr, time);
  return r.length > 0 ? Number(r[0].value[1]) : null;
}
/** Polls until `ok(value)` (bounded: 15 s). */
async function waitFor(expr: string, ok: (v: number) => boolean = (v) => v > 0): Promise<number> {
  let v: number | null = null;
  for (let i = 0; i < 60; i++) {
    v = await query(expr);
    if (v !== null && ok(v)) return v;
    await sleep(250);
  }
  throw new Error(`Prometheus: ${expr} stayed ${v}`);
}

const scrape = (n: number) => fetch(`http://127.0.0.1:${metricsPort + n}/metrics`).then((r) => r.text());
let tStart = 0;

beforeAll(async () => {
  requireRoot();
  for (const t of ['ip', 'bridge', 'nft', 'nsenter', 'dnsmasq', 'iperf3', 'prometheus', 'promtool', 'ping', 'python3']) requireTool(t);
  ensureBuilt();
  dir = mkdtempSync(join(tmpdir(), 'tenc-metrics-cluster-'));
  [metricsPort, promPort] = await freePorts();
  env = { ...process.env, CLUSTER_PREFIX: PREFIX, CLUSTER_PROTECT: 'alpha', CLUSTER_METRICS_PORT: String(metricsPort) };
  writeFileSync(join(dir, 'cluster.json'), JSON.stringify(CLUSTER));
  writeFileSync(
    join(dir, 'prometheus.yml'),
    'global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: tenc-agent\n    honor_labels: true\n    static_configs:\n' +
      `      - targets: ["127.0.0.1:${metricsPort}"]\n        labels: {node: node1}\n      - targets: ["127.0.0.1:${metricsPort + 1}"]\n        labels: {node: node2}\n`,
  );
  // Prometheus first: it scrapes the agents from their first second (ADD latency included)
  prom = spawn('prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${promPort}`, '--log.level=warn'], { stdio: 'ignore' });
  tStart = Date.now() / 1000;
  const up = cluster('up', join(dir, 'cluster.json'));
  console.log(`metrics-cluster: cluster.sh up ${(Date.now() / 1000 - tStart).toFixed(1)} s`);
  if (up.status !== 0) throw new Error(`cluster.sh up failed: ${up.stderr}`);
  for (let i = 0; i < 80 && (await fetch(`http://127.0.0.1:${promPort}/-/ready`).then((r) => r.ok, () => false)) === false; i++) await sleep(250);
  // alpha-a and alpha-b peered, a session up
  for (let i = 0; i < 100 && !(podStatus('alpha-a')?.peers.length === 1 && podStatus('alpha-b')?.peers.length === 1); i++) await sleep(200);
  for (let i = 0; i < 20 && inPod('alpha-a', 'ping', '-c', '1', '-W', '1', '10.128.2.10').status !== 0; i++) await sleep(100);
  console.log(`metrics-cluster: ready after ${(Date.now() / 1000 - tStart).toFixed(1)} s`);
}, 90_000);

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  if (prom && prom.exitCode === null) {
    const gone = new Promise((r) => prom!.once('exit', r));
    prom.kill('SIGTERM');
    await Promise.race([gone, sleep(5000)]);
    prom.kill('SIGKILL');
  }
  const t = Date.now();
  const r = cluster('down');
  console.log(`metrics-cluster: cluster.sh down ${((Date.now() - t) / 1000).toFixed(1)} s`);
  if (r.status !== 0) console.error(`cluster.sh down: ${r.stderr}`);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('Prometheus scrapes the node agents of the local cluster', () => {
  it('1. rate() of alpha-a sent bytes (node1 agent) follows iperf3 across the nodes; alpha-b received bytes (node2 agent) increase', async () => {
    const sent = 'tenc_peer_sent_bytes_total{node="node1",namespace="alpha",pod="alpha-a"}';
    await waitFor(sent);
    await sleep(1500); // a scrape from before the run
    const t0 = Date.now() / 1000;
    const server = spawn('ip', ['netns', 'exec', `${PREFIX}-alpha-b`, 'iperf3', '-s', '-1', '-B', '10.128.2.10', '-p', '5301'], { stdio: 'ignore' });
    children.add(server);
    await sleep(400);
    const r = inPod('alpha-a', 'iperf3', '-c', '10.128.2.10', '-p', '5301', '-t', '4', '-J');
    server.kill('SIGTERM');
    expect(r.status, r.stderr).toBe(0);
    const end = (JSON.parse(r.stdout) as { end: { sum_sent: { bits_per_second: number; bytes: number } } }).end;
    const t1 = Date.now() / 1000;
    await sleep(2500); // the last scrapes of the run are in
    // wire bytes over iperf3's payload: per-packet headers inside plus the 32 bytes of tenc's framing
    const overhead = ((await query(sent, t1 + 2))! - (await query(sent, t0 - 0.2))!) / end.sum_sent.bytes;
    const rate = await query(`rate(${sent}[3s])`, t1 - 0.5);
    expect(rate).not.toBeNull();
    const ratio = rate! / ((end.sum_sent.bits_per_second / 8) * overhead);
    console.log(
      `metrics-cluster: rate() ${(rate! / 1e6).toFixed(1)} MB/s, iperf3 ${(end.sum_sent.bits_per_second / 8e6).toFixed(1)} MB/s, wire/payload ${overhead.toFixed(3)}, rate/(iperf3 x wire) ${ratio.toFixed(3)}`,
    );
    expect(overhead).toBeGreaterThan(1);
    expect(overhead).toBeLessThan(1.2);
    expect(ratio).toBeGreaterThan(0.75);
    expect(ratio).toBeLessThan(1.25);
    const received = 'tenc_peer_received_bytes_total{node="node2",namespace="alpha",pod="alpha-b"}';
    expect(await query(`increase(${received}[${Math.ceil(t1 - t0) + 4}s])`)).toBeGreaterThan(end.sum_sent.bytes);
    expect(await query('tenc_peers_live{node="node1",pod="alpha-a"}')).toBe(1);
    expect(await query('time() - tenc_peer_latest_handshake_seconds{pod="alpha-a"}')).toBeLessThan(60);
  }, 40_000);

  it('2. an attack from a beta pod shows up as drops of alpha-b by reason', async () => {
    // junk to alpha-b's tenc port (beta-x is a plain pod: it reaches it directly)
    inPod('beta-x', 'python3', '-c', "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor i in range(20): s.sendto(b'\\x07junk'*8,('10.128.2.10',51820))");
    await waitFor('sum(tenc_drops_total{node="node2",pod="alpha-b",reason!="plaintext_from_project"})', (v) => v >= 20);
    // plaintext with alpha-a's address: not from the tunnel, so enforcement drops it
    inPod('beta-x', 'ip', 'addr', 'add', '10.128.1.10/32', 'dev', 'eth0');
    try {
      inPod('beta-x', 'ping', '-c', '5', '-i', '0.2', '-W', '1', '-I', '10.128.1.10', '10.128.2.10');
    } finally {
      inPod('beta-x', 'ip', 'addr', 'del', '10.128.1.10/32', 'dev', 'eth0');
    }
    expect(await waitFor('tenc_drops_total{node="node2",pod="alpha-b",reason="plaintext_from_project"}', (v) => v >= 5)).toBeGreaterThanOrEqual(5);
    expect(await waitFor('tenc_plaintext_from_project_total{pod="alpha-b"}', (v) => v >= 5)).toBeGreaterThanOrEqual(5);
    const reasons = (await queryAll('tenc_drops_total{pod="alpha-b"} > 0')).map((s) => s.metric.reason);
    expect(reasons.length).toBeGreaterThanOrEqual(2);
  }, 40_000);

  it("3. the agents' own: CNI requests and latency, proxies per project, reconciles; no counter of a living pod went backwards", async () => {
    // the ADDs of cluster.sh up (alpha-b and beta-x on node2: beta passed through, also ok)
    expect(await waitFor('tenc_cni_requests_total{node="node1",command="ADD",result="ok"}')).toBe(1);
    expect(await waitFor('tenc_cni_requests_total{node="node2",command="ADD",result="ok"}')).toBe(2);
    expect(await query('tenc_cni_request_duration_seconds_count{node="node2",command="ADD"}')).toBe(2);
    expect(await query('histogram_quantile(0.99, sum by (le) (tenc_cni_request_duration_seconds_bucket{command="ADD"}))')).toBeGreaterThan(0);
    // the runtime's CHECK through the chain, now
    const check = cluster('cni', 'CHECK', 'alpha-a');
    expect(check.status, check.stderr).toBe(0);
    await waitFor('tenc_cni_requests_total{node="node1",command="CHECK",result="ok"}', (v) => v === 1);
    expect(await query('tenc_agent_proxies{node="node1",namespace="alpha"}')).toBe(1);
    expect(await query('tenc_agent_proxies{node="node2",namespace="alpha"}')).toBe(1);
    expect(await query('tenc_agent_reconciles_total{node="node1",result="ok"}')).toBeGreaterThan(0);
    expect(await query('sum(tenc_agent_registry_requests_total{node="node2",result="ok"})')).toBeGreaterThan(0);
    // alpha-a's peer named: the pod its key belongs to, from node1's agent's registry
    await waitFor(`tenc_peer_info{node="node1",pod="alpha-a",peer="${keyFingerprint(podStatus('alpha-b')!.publicKey)}",peer_pod="alpha-b"}`);
    expect(await query('tenc_pod_up{node="node1",namespace="alpha",pod="alpha-a"}')).toBe(1);
    expect(await query('tenc_pod_up{node="node2",namespace="alpha",pod="alpha-b"}')).toBe(1);
    expect(await queryAll('tenc_pod_up{pod="beta-x"}')).toEqual([]); // not protected: no proxy, no series
    // the node-wide table of node2's agent, from its run directory
    const st = spawnSync('node', [main, 'agent', 'status', '--run-dir', join(STATE, 'agents', 'node2.run'), '--json'], { encoding: 'utf8', timeout: 20_000 });
    expect(st.status, st.stderr).toBe(0);
    const rows = (JSON.parse(st.stdout) as { pods: { namespace: string; pod: string; pid: number; livePeers: number; drops: number; failClosed: boolean }[] }).pods;
    expect(rows).toMatchObject([{ namespace: 'alpha', pod: 'alpha-b', livePeers: 1, failClosed: true }]);
    expect(rows[0].drops).toBeGreaterThanOrEqual(25);
    // over the whole run so far: every counter of every pod only went up
    const range = `${Math.ceil(Date.now() / 1000 - tStart) + 5}s`;
    const counters = ['tenc_peer_sent_bytes_total', 'tenc_peer_received_bytes_total', 'tenc_drops_total', 'tenc_handshake_failures_total', 'tenc_cni_requests_total'];
    expect(await queryAll(`count_over_time(tenc_peer_sent_bytes_total{pod="alpha-a"}[${range}])`).then((r) => Number(r[0].value[1]))).toBeGreaterThan(10);
    for (const c of counters) expect(await queryAll(`resets(${c}[${range}]) > 0`), c).toEqual([]);
  }, 40_000);

  it('4. each agent scrape passes promtool and holds no psk and no full public key', async () => {
    const psk = readFileSync(join(STATE, 'psk', 'alpha'), 'utf8').trim();
    const keys = [podStatus('alpha-a')!.publicKey, podStatus('alpha-b')!.publicKey];
    for (const n of [0, 1]) {
      const text = await scrape(n);
      expect(text).toContain('tenc_peer_sent_bytes_total{');
      const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
      expect(r.status, r.stdout + r.stderr).toBe(0);
      expect(r.stdout + r.stderr).toBe('');
      for (const k of [psk, ...keys]) {
        const raw = Buffer.from(k, 'base64');
        expect(raw.length).toBe(32);
        for (const form of [k, raw.toString('hex'), raw.toString('base64url'), k.slice(0, 16), raw.toString('hex').slice(0, 24)]) expect(text).not.toContain(form);
      }
    }
  }, 20_000);

  it('5. a restarted pod proxy: restart counted, new start time, its counters reset; its peers see it as a new series', async () => {
    const oldKey = podStatus('alpha-b')!.publicKey;
    const startBefore = await query('tenc_pod_start_time_seconds{pod="alpha-b"}');
    expect(startBefore).not.toBeNull();
    // the process serving alpha-b: alpha's pod host on node2 (alpha-b is its only pod there)
    const [proxy, ...more] = podProxies(`/run/netns/${PREFIX}-alpha-b`);
    expect(proxy).toBeDefined();
    expect(more).toEqual([]);
    process.kill(Number(proxy), 'SIGKILL');
    await waitFor('tenc_agent_proxies_restarted_total{node="node2"}', (v) => v >= 1);
    await waitFor('tenc_pod_start_time_seconds{pod="alpha-b"}', (v) => v > startBefore!);
    let newKey = oldKey;
    for (let i = 0; i < 50 && (newKey === oldKey || podStatus('alpha-a')?.peers[0]?.publicKey !== newKey); i++) {
      await sleep(200);
      newKey = podStatus('alpha-b')?.publicKey ?? oldKey;
    }
    expect(newKey).not.toBe(oldKey);
    for (let i = 0; i < 20 && inPod('alpha-a', 'ping', '-c', '1', '-W', '1', '10.128.2.10').status !== 0; i++) await sleep(100);
    // alpha-a's series about alpha-b: one under the new fingerprint, besides the old one
    await waitFor(`tenc_peer_sent_bytes_total{pod="alpha-a",peer="${keyFingerprint(newKey)}"}`);
    expect(await query(`count(count_over_time(tenc_peer_sent_bytes_total{pod="alpha-a"}[1m]))`)).toBe(2);
    // alpha-b's own counters are a new process's: the received bytes restarted (a reset);
    // alpha-a's, a process that lived on, never went backwards
    expect(await query('resets(tenc_peer_received_bytes_total{pod="alpha-b"}[2m])')).toBeGreaterThanOrEqual(1);
    expect(await queryAll('resets(tenc_peer_sent_bytes_total{pod="alpha-a"}[2m]) > 0')).toEqual([]);
  }, 40_000);
});
