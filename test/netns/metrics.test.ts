/**
 * A real Prometheus scrapes a real `tenc pod --metrics-address` during traffic and
 * an attack:
 *
 *   [ ns "a": tenc pod (enforce), /metrics on 127.0.0.1:9586, prometheus on 127.0.0.1:9090 ]
 *        eth0 10.79.0.1/24 ---veth--- eth0 10.79.0.2/24
 *   [ ns "b": tenc pod, iperf3 server; the "attacker" sends with tenc's fwmark ]
 *
 *  1. iperf3 TCP a -> b for 5 s: the counter's increase over the run is iperf3's
 *     bytes plus 0-20 % headers; PromQL rate() of a's tenc_peer_sent_bytes_total
 *     is within 25 % of iperf3's rate times that factor; bytes increase
 *  2. plaintext from b's address that bypasses b's tunnel (ping -m FWMARK): a's
 *     tenc_drops_total{reason="plaintext_from_project"} appears in Prometheus;
 *     junk UDP to a's port: a drop reason from the engine appears too
 *  3. `promtool check metrics` over a scrape passes; the scrape holds neither the
 *     psk (base64, hex) nor either pod's public key (base64, hex)
 *  4. the test dir as an agent run directory: `tenc agent status --json` lists both
 *     pods (pid, fingerprint, live peer, drops, fail-closed); a real `tenc agent
 *     --metrics-address` on the host's loopback (empty registry) serves both pods
 *     and its own counters
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { main, Netns, projectDir, requireRoot, requireTool, startPod, tearDown, tenc, vethPair, type PodProc } from './lib.js';
import { ensureBuilt } from '../build.js';
import { keyFingerprint } from '../../src/log.js';

let a: Netns;
let b: Netns;
let dir: string;
let prom: ChildProcess | null = null;
let podA: PodProc;
let podB: PodProc;
const FWMARK = 0xcb84;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An instant query in ns a's Prometheus: the first result's value, or null. */
function query(expr: string, time?: number): number | null {
  const url = `http://127.0.0.1:9090/api/v1/query?query=${encodeURIComponent(expr)}${time ? `&time=${time}` : ''}`;
  const out = a.exec('curl', '-sf', url);
  const r = JSON.parse(out) as { status: string; data: { result: { value: [number, string] }[] } };
  expect(r.status).toBe('success');
  return r.data.result.length > 0 ? Number(r.data.result[0].value[1]) : null;
}

/** Polls until the query has a value > 0 (bounded: 20 s). */
async function waitFor(expr: string): Promise<number> {
  for (let i = 0; i < 80; i++) {
    const v = query(expr);
    if (v !== null && v > 0) return v;
    await sleep(250);
  }
  throw new Error(`Prometheus never had ${expr} > 0`);
}

beforeAll(async () => {
  requireRoot();
  for (const t of ['ip', 'iperf3', 'curl', 'prometheus', 'promtool', 'ping', 'python3']) requireTool(t);
  ensureBuilt();
  [a, b] = vethPair('a', 'b', ['10.79.0.1/24'], ['10.79.0.2/24']);
  dir = projectDir('metrics');
  // dir doubles as an agent run directory: <pod>.json naming each pod's control socket
  writeFileSync(join(dir, 'a.json'), JSON.stringify({ addresses: ['10.79.0.1'], pskFile: 'psk', enforce: true, controlSocket: join(dir, 'a.sock') }));
  writeFileSync(join(dir, 'b.json'), JSON.stringify({ addresses: ['10.79.0.2'], pskFile: 'psk', controlSocket: join(dir, 'b.sock') }));
  podA = await startPod(a, join(dir, 'a.json'), ['--metrics-address', '127.0.0.1:9586']);
  podB = await startPod(b, join(dir, 'b.json'));
  tenc(b, 'set-peer', podA.publicKey, '--endpoint', '10.79.0.1:51820', '--allowed-ips', '10.79.0.1/32', '--socket', join(dir, 'b.sock'));
  tenc(a, 'set-peer', podB.publicKey, '--endpoint', '10.79.0.2:51820', '--allowed-ips', '10.79.0.2/32', '--socket', join(dir, 'a.sock'));
  writeFileSync(
    join(dir, 'prometheus.yml'),
    'global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: tenc\n    static_configs:\n      - targets: ["127.0.0.1:9586"]\n',
  );
  prom = a.spawn('prometheus', [
    `--config.file=${join(dir, 'prometheus.yml')}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    '--web.listen-address=127.0.0.1:9090',
    '--log.level=warn',
  ], { stdio: 'ignore' });
  for (let i = 0; i < 80 && a.tryExec('curl', '-sf', 'http://127.0.0.1:9090/-/ready').status !== 0; i++) await sleep(250);
}, 120_000);

afterAll(async () => {
  if (prom && prom.exitCode === null) {
    const gone = new Promise((r) => prom!.once('exit', r));
    prom.kill('SIGTERM');
    await Promise.race([gone, sleep(5000)]);
    prom.kill('SIGKILL');
  }
  await tearDown(undefined, dir);
});

describe('Prometheus scrapes tenc pod --metrics-address', () => {
  it('rate() of sent bytes follows iperf3; bytes increase', async () => {
    expect(a.tryExec('ping', '-c', '1', '-W', '2', '10.79.0.2').status).toBe(0);
    await waitFor('tenc_peer_sent_bytes_total');
    await sleep(1500); // a scrape from before the run
    const tStart = Date.now() / 1000;
    const server = b.spawn('iperf3', ['-s', '-1', '-B', '10.79.0.2', '-p', '5301'], { stdio: 'ignore' });
    await sleep(500);
    const r = a.tryExec('iperf3', '-c', '10.79.0.2', '-B', '10.79.0.1', '-p', '5301', '-t', '5', '-J');
    server.kill('SIGTERM');
    expect(r.status, r.stderr).toBe(0);
    const end = (JSON.parse(r.stdout) as { end: { sum_sent: { bits_per_second: number; bytes: number } } }).end;
    const iperfBytesPerSec = end.sum_sent.bits_per_second / 8;
    const tEnd = Date.now() / 1000;
    await sleep(2500); // the last scrapes of the run are in
    // the wire carries iperf3's payload plus per-packet headers (IP/TCP inside, the
    // 16-byte message header and 16-byte tag): the counter's increase over the run
    // against iperf3's bytes gives that factor, between 1 and 1.2
    const before = query('tenc_peer_sent_bytes_total', tStart - 0.2);
    const after = query('tenc_peer_sent_bytes_total', tEnd + 2);
    const overhead = (after! - before!) / end.sum_sent.bytes;
    const rate = query('rate(tenc_peer_sent_bytes_total[4s])', tEnd - 0.5);
    expect(rate).not.toBeNull();
    const ratio = rate! / (iperfBytesPerSec * overhead);
    console.log(`metrics: rate() ${(rate! / 1e6).toFixed(1)} MB/s, iperf3 ${(iperfBytesPerSec / 1e6).toFixed(1)} MB/s, wire/payload ${overhead.toFixed(3)}, rate/(iperf3 x wire) ${ratio.toFixed(3)}`);
    expect(overhead).toBeGreaterThan(1);
    expect(overhead).toBeLessThan(1.2);
    expect(ratio).toBeGreaterThan(0.75);
    expect(ratio).toBeLessThan(1.25);
    expect(query('increase(tenc_peer_received_bytes_total[10s])')).toBeGreaterThan(0);
    expect(query('tenc_peer_latest_handshake_seconds')).toBeGreaterThan(Date.now() / 1000 - 60);
    expect(query('tenc_peers_live')).toBe(1);
  }, 60_000);

  it('an attack shows up as drops by reason', async () => {
    // plaintext from b's address, marked so that it bypasses b's tunnel
    b.tryExec('ping', '-c', '5', '-i', '0.2', '-W', '1', '-m', String(FWMARK), '10.79.0.1');
    const plain = await waitFor('tenc_drops_total{reason="plaintext_from_project"}');
    expect(plain).toBeGreaterThanOrEqual(5);
    expect(await waitFor('tenc_plaintext_from_project_total')).toBeGreaterThanOrEqual(5);
    // junk to a's WireGuard port: the engine counts it under a reason of its own
    b.exec('python3', '-c', `import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.SOL_SOCKET,36,${FWMARK})\nfor i in range(20): s.sendto(b'\\x07junk'*8,('10.79.0.1',51820))`);
    await waitFor('sum(tenc_drops_total{reason!="plaintext_from_project"})');
  }, 60_000);

  it('a scrape passes promtool and holds no secret and no full key', () => {
    const text = a.exec('curl', '-sf', 'http://127.0.0.1:9586/metrics');
    const r = a.tryExec('sh', '-c', `curl -sf http://127.0.0.1:9586/metrics | promtool check metrics`);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout + r.stderr).toBe('');
    expect(text).toContain('tenc_peer_sent_bytes_total{');
    const psk = readFileSync(join(dir, 'psk'), 'utf8').trim();
    for (const k of [psk, podA.publicKey, podB.publicKey]) {
      const raw = Buffer.from(k, 'base64');
      expect(raw.length).toBe(32);
      for (const form of [k, raw.toString('hex'), raw.toString('base64url'), k.slice(0, 16), raw.toString('hex').slice(0, 24)]) expect(text).not.toContain(form);
    }
  });

  it('tenc agent status and the agent /metrics over a run directory', async () => {
    const st = spawnSync('node', [main, 'agent', 'status', '--run-dir', dir, '--json'], { encoding: 'utf8', timeout: 20_000 });
    expect(st.status, st.stderr).toBe(0);
    const rows = (JSON.parse(st.stdout) as { pods: { pod: string; pid: number; fingerprint: string; livePeers: number; drops: number; failClosed: boolean }[] }).pods;
    expect(rows.map((r) => r.pod)).toEqual(['a', 'b']);
    expect(rows[0]).toMatchObject({ pid: podA.pid, fingerprint: keyFingerprint(podA.publicKey), livePeers: 1, failClosed: true });
    expect(rows[0].drops).toBeGreaterThanOrEqual(5);
    expect(rows[1]).toMatchObject({ pid: podB.pid, failClosed: false });
    const table = spawnSync('node', [main, 'agent', 'status', '--run-dir', dir], { encoding: 'utf8', timeout: 20_000 }).stdout;
    expect(table).toMatch(new RegExp(`\\sa\\s+${podA.pid}\\s+\\S+\\s+1\\s+1\\s+(.*ago|Now)\\s+\\d+\\s+yes`));

    mkdirSync(join(dir, 'registry'));
    const port = 20000 + (process.pid % 20000);
    const agent = spawn('node', [main, 'agent', '--registry', join(dir, 'registry'), '--node', 'n1', '--project', 'alpha', '--run-dir', dir, '--metrics-address', `127.0.0.1:${port}`, '--log-level', 'warn'], { stdio: 'ignore' });
    const gone = new Promise((r) => agent.once('exit', r));
    try {
      let text = '';
      // the node agent runs a project's reconciler from the project's first CNI
      // registration on (none here: its counters are covered by test/unit/metrics.test.ts
      // and the cluster); here: the run directory's pods and the agent's own families
      for (let i = 0; i < 40 && !text.includes('tenc_pod_up{namespace="alpha",pod="b"} 1'); i++) {
        await sleep(250);
        text = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text(), () => '');
      }
      expect(text).toContain('tenc_pod_up{namespace="alpha",pod="a"} 1');
      expect(text).toContain('tenc_pod_up{namespace="alpha",pod="b"} 1');
      expect(text).toContain('# TYPE tenc_agent_reconciles_total counter');
      expect(text).toContain('# TYPE tenc_agent_registry_requests_total counter');
      expect(text).toMatch(/^process_resident_memory_bytes \d+/m);
    } finally {
      agent.kill('SIGTERM');
      await Promise.race([gone, sleep(5000)]);
      agent.kill('SIGKILL');
    }
  }, 60_000);
});
