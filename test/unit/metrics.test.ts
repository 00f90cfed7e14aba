import { describe, it, expect, afterEach } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { renderPods, dataPlaneLabels, Exposition, type PodSample } from '../../src/metrics/render.js';
import { MAX_PEERS_PER_POD, MAX_REASONS, POD_METRICS, SCRAPE_METRICS, AGENT_METRICS, AGENT_HISTOGRAMS } from '../../src/metrics/names.js';
import { discoverNodePods, discoverPods, gatherStatus } from '../../src/metrics/gather.js';
import { MetricsServer } from '../../src/metrics/server.js';
import { parseListenAddress } from '../../src/metrics/address.js';
import { AgentMetrics, instrumentRegistry } from '../../src/metrics/agent.js';
import { CounterGuard, KEEP_SCRAPES } from '../../src/metrics/monotonic.js';
import { PeerNames } from '../../src/metrics/peer-names.js';
import { agentStatus, formatAgentStatus } from '../../src/metrics/agent-status.js';
import { ControlServer, type ControlHandler } from '../../src/control/socket.js';
import type { StatusReport } from '../../src/control/status.js';
import { keyFingerprint } from '../../src/log.js';
import type { Registry } from '../../src/registry/registry.js';

const key = (): string => randomBytes(32).toString('base64');

function report(peers = 2, extra: Partial<StatusReport> = {}): StatusReport {
  const now = Date.now();
  return {
    interface: 'tenc0',
    publicKey: key(),
    listenPort: 51820,
    fwmark: 0x1234,
    mtu: 1420,
    addresses: ['10.0.0.1'],
    dataPlane: 'native, inject tun, tun offload on, udp gso on, udp gro off, aead direct-avx2',
    peers: Array.from({ length: peers }, (_, i) => ({
      publicKey: key(),
      endpoint: `10.0.0.${i + 2}:51820`,
      allowedIps: [`10.0.0.${i + 2}/32`],
      latestHandshake: i === 0 ? now - 1000 : null,
      rxBytes: 1000 * (i + 1),
      txBytes: 2000 * (i + 1),
      persistentKeepalive: 0,
      drops: {},
    })),
    services: [],
    drops: { plaintext_from_project: 3, no_peer: 2 },
    handshakeFailures: { decrypt_response: 1 },
    dns: {
      domain: 'alpha.svc.cluster.local',
      upstreams: ['10.0.0.53'],
      port: 53,
      counters: { queriesUdp: 5, queriesTcp: 1, answered: 6, rewritten: 2, servfail: 0, routesHeld: 1, drops: { truncated: 1 } },
    },
    pid: 4242,
    startTime: now - 60_000,
    enforce: true,
    ...extra,
  };
}

function promtool(text: string): string {
  // exit status 0 and no lint output: a problem throws with promtool's message
  return execFileSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
}

function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('metric names', () => {
  it('follow Prometheus conventions: tenc_ prefix, counters end in _total, units in the name, no duplicates', () => {
    const all = [...Object.values(POD_METRICS), ...Object.values(SCRAPE_METRICS), ...Object.values(AGENT_METRICS), ...Object.values(AGENT_HISTOGRAMS)];
    const names = all.map((m) => m.name);
    expect(new Set(names).size).toBe(names.length);
    for (const m of all) {
      expect(m.name).toMatch(/^tenc_[a-z_]+[a-z]$/);
      if (m.type === 'counter') expect(m.name).toMatch(/_total$/);
      else expect(m.name).not.toMatch(/_total$/);
    }
  });
});

describe('renderPods', () => {
  it('renders a pod: peers by fingerprint, drops and handshake failures by reason, DNS, data plane; promtool lint passes', () => {
    const r = report();
    const text = renderPods([{ namespace: 'alpha', pod: 'a-1', report: r }]).text();
    expect(promtool(text)).toBe('');
    const fp = keyFingerprint(r.peers[1].publicKey);
    expect(value(text, `tenc_peer_sent_bytes_total{namespace="alpha",pod="a-1",peer="${fp}"}`)).toBe(4000);
    expect(value(text, `tenc_peer_received_bytes_total{namespace="alpha",pod="a-1",peer="${fp}"}`)).toBe(2000);
    expect(value(text, `tenc_peer_latest_handshake_seconds{namespace="alpha",pod="a-1",peer="${fp}"}`)).toBe(0);
    expect(value(text, `tenc_drops_total{namespace="alpha",pod="a-1",reason="plaintext_from_project"}`)).toBe(3);
    expect(value(text, `tenc_plaintext_from_project_total{namespace="alpha",pod="a-1"}`)).toBe(3);
    expect(value(text, `tenc_handshake_failures_total{namespace="alpha",pod="a-1",reason="decrypt_response"}`)).toBe(1);
    expect(value(text, `tenc_dns_queries_total{namespace="alpha",pod="a-1",protocol="udp"}`)).toBe(5);
    expect(value(text, `tenc_pod_start_time_seconds{namespace="alpha",pod="a-1"}`)).toBe(r.startTime! / 1000);
    expect(value(text, `tenc_peers_live{namespace="alpha",pod="a-1"}`)).toBe(1);
    expect(text).toContain(`aead="direct-avx2",inject="tun",tun_offload="on",udp_gso="on",udp_gro="off",enforce="true"`);
    // no public key in full, anywhere
    for (const k of [r.publicKey, ...r.peers.map((p) => p.publicKey)]) {
      expect(text).not.toContain(k);
      expect(text).not.toContain(Buffer.from(k, 'base64').toString('hex'));
    }
  });

  it('caps the peers of a pod: the busiest get series, the rest are summed into peer="_other"', () => {
    const r = report(200);
    const text = renderPods([{ namespace: 'n', pod: 'p', report: r }]).text();
    const sent = text.split('\n').filter((l) => l.startsWith('tenc_peer_sent_bytes_total{'));
    expect(sent.length).toBe(MAX_PEERS_PER_POD);
    const total = r.peers.reduce((n, p) => n + p.txBytes, 0);
    expect(sent.reduce((n, l) => n + Number(l.split(' ')[1]), 0)).toBe(total);
    // the busiest peer (the last one) has its own series
    expect(text).toContain(`peer="${keyFingerprint(r.peers[199].publicKey)}"`);
    expect(text).toContain('peer="_other"');
    expect(promtool(text)).toBe('');
  });

  it(`caps the reasons of a metric and pod at ${MAX_REASONS}: the largest keep theirs, the rest are summed into reason="_other"`, () => {
    const drops = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`reason_${i}`, i + 1]));
    const text = renderPods([{ namespace: 'n', pod: 'p', report: report(1, { drops, handshakeFailures: drops }) }]).text();
    for (const m of ['tenc_drops_total', 'tenc_handshake_failures_total']) {
      const lines = text.split('\n').filter((l) => l.startsWith(`${m}{`));
      expect(lines.length).toBe(MAX_REASONS);
      expect(lines.reduce((n, l) => n + Number(l.split(' ')[1]), 0)).toBe((40 * 41) / 2);
      expect(text).toContain(`${m}{namespace="n",pod="p",reason="reason_39"} 40`);
      expect(text).not.toContain(`${m}{namespace="n",pod="p",reason="reason_0"}`);
      expect(value(text, `${m}{namespace="n",pod="p",reason="_other"}`)).toBe(((40 - MAX_REASONS + 1) * (40 - MAX_REASONS + 2)) / 2);
    }
    expect(promtool(text)).toBe('');
  });

  it('a pod that did not answer is tenc_pod_up 0 with no other series; label values are escaped', () => {
    const samples: PodSample[] = [
      { namespace: 'n', pod: 'down', report: null },
      { namespace: 'n', pod: 'we"ird\\pod\n', report: report(1) },
    ];
    const text = renderPods(samples).text();
    expect(value(text, 'tenc_pod_up{namespace="n",pod="down"}')).toBe(0);
    expect(text).not.toMatch(/tenc_peers\{namespace="n",pod="down"\}/);
    expect(text).toContain('pod="we\\"ird\\\\pod\\n"');
    expect(promtool(text)).toBe('');
  });

  it('reads the data plane description; an unknown one gives "unknown"', () => {
    expect(dataPlaneLabels('reference (TypeScript)')).toEqual({ aead: 'unknown', inject: 'unknown', tun_offload: 'unknown', udp_gso: 'unknown', udp_gro: 'unknown' });
  });
});

describe('gathering and the /metrics server over control sockets', () => {
  const dirs: string[] = [];
  const servers: { close(): Promise<void> | void }[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.close();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  async function pods(n: number, handler: (i: number) => ControlHandler): Promise<string> {
    const dir = mkdtempSync(join(tmpdir(), 'tenc-metrics-'));
    dirs.push(dir);
    for (let i = 0; i < n; i++) {
      const socket = join(dir, `p${i}.sock`);
      servers.push(await ControlServer.start({ path: socket, handler: handler(i), addresses: { v4: '10.0.0.1', v6: null } }));
      writeFileSync(join(dir, `p${i}.json`), JSON.stringify({ controlSocket: socket, addresses: ['10.0.0.1'] }));
    }
    writeFileSync(join(dir, 'garbage.json'), '{not json');
    return dir;
  }

  const handlerOf = (r: StatusReport | (() => Promise<StatusReport>)): ControlHandler => ({
    status: typeof r === 'function' ? r : () => r,
    setPeer: () => {},
    removePeer: () => false,
    setServices: () => {},
  });

  it('discovers pods from the run directory, skipping foreign files with a problem naming them', async () => {
    const dir = await pods(2, () => handlerOf(report()));
    const problems: string[] = [];
    const t = discoverPods(dir, 'alpha', problems);
    expect(t.map((x) => [x.namespace, x.pod])).toEqual([['alpha', 'p0'], ['alpha', 'p1']]);
    expect(problems.length).toBe(1);
    expect(problems[0]).toContain('garbage.json');
    expect(discoverPods(join(dir, 'nope'), null, problems)).toEqual([]);
    expect(problems[1]).toContain('ENOENT');
  });

  it("a node agent's run directory: one subdirectory per project, its state file is not a pod", () => {
    const dir = mkdtempSync(join(tmpdir(), 'tenc-nodepods-'));
    try {
      writeFileSync(join(dir, 'registrations.json'), '{"pods": []}');
      for (const [project, pod] of [['alpha', 'a1'], ['alpha', 'a2'], ['beta', 'b1']]) {
        mkdirSync(join(dir, project), { recursive: true });
        writeFileSync(join(dir, project, `${pod}.json`), JSON.stringify({ controlSocket: `/run/x/${pod}.sock` }));
      }
      const problems: string[] = [];
      expect(discoverNodePods(dir, null, problems).map((x) => [x.namespace, x.pod])).toEqual([['alpha', 'a1'], ['alpha', 'a2'], ['beta', 'b1']]);
      expect(discoverNodePods(dir, 'beta', problems).map((x) => [x.namespace, x.pod])).toEqual([['beta', 'b1']]);
      expect(problems).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a pod that hangs is reported down after the timeout; the others still answer; the cap is kept', async () => {
    const dir = await pods(3, (i) => handlerOf(i === 1 ? () => new Promise<StatusReport>(() => {}) : report()));
    const t = discoverPods(dir, 'ns');
    const g = await gatherStatus(t, { timeoutMs: 200, parallel: 2 });
    expect(g.samples.map((s) => s.report !== null)).toEqual([true, false, true]);
    expect(g.samples[1].error).toContain('200 ms');
    expect(g.seconds).toBeLessThan(5);
    const capped = await gatherStatus(t, { cap: 1 });
    expect(capped.samples.length).toBe(1);
    expect(capped.skipped).toBe(2);
  });

  it('serves /metrics over HTTP (the pods, the agent counters, process metrics) and 404 elsewhere', async () => {
    const dir = await pods(2, () => handlerOf(report()));
    const agent = new AgentMetrics();
    agent.reconciled(true, 0.01);
    agent.proxyStarted('started');
    agent.proxyLost();
    agent.cniRequest('ADD', 'ok', 0.2);
    const server = new MetricsServer({ address: '127.0.0.1:0', targets: () => discoverPods(dir, 'ns'), own: agent.registry, version: '9.9.9' });
    const { port } = await server.listen();
    servers.push(server);
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('version=0.0.4');
    const text = await res.text();
    expect(promtool(text)).toBe('');
    expect(value(text, 'tenc_pod_up{namespace="ns",pod="p0"}')).toBe(1);
    expect(value(text, 'tenc_scrape_pods')).toBe(2);
    expect(value(text, 'tenc_agent_reconciles_total{result="ok"}')).toBe(1);
    expect(value(text, 'tenc_agent_proxies_restarted_total')).toBe(1);
    expect(value(text, 'tenc_cni_requests_total{command="ADD",result="ok"}')).toBe(1);
    expect(text).toMatch(/^process_resident_memory_bytes \d+/m);
    expect(text).toContain('tenc_build_info{version="9.9.9"');
    expect((await fetch(`http://127.0.0.1:${port}/other`)).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST' })).status).toBe(405);
  });

  it('tenc agent status rows: pid, fingerprint, live peers, drops, fail-closed; a dead pod is a row with its error', async () => {
    const r = report(3);
    const dir = await pods(1, () => handlerOf(r));
    writeFileSync(join(dir, 'dead.json'), JSON.stringify({ controlSocket: join(dir, 'dead.sock') }));
    const { rows, problems } = await agentStatus([dir], 'alpha', { timeoutMs: 500 });
    expect(problems.some((p) => p.includes('garbage.json'))).toBe(true);
    const dead = rows.find((x) => x.pod === 'dead')!;
    expect(dead.error).not.toBeNull();
    const row = rows.find((x) => x.pod === 'p0')!;
    expect(row).toMatchObject({ namespace: 'alpha', pid: 4242, fingerprint: keyFingerprint(r.publicKey), peers: 3, livePeers: 1, drops: 5, failClosed: true, error: null });
    const table = formatAgentStatus(rows);
    expect(table.split('\n')[0]).toMatch(/^NAMESPACE\s+POD\s+PID\s+KEY\s+PEERS\s+LIVE\s+LAST HANDSHAKE\s+DROPS\s+FAIL-CLOSED$/);
    expect(table).toMatch(new RegExp(`alpha\\s+p0\\s+4242\\s+${keyFingerprint(r.publicKey).replace(/[-]/g, '\\-')}\\s+3\\s+1\\s+1 second ago\\s+5\\s+yes`));
    expect(table).toContain('not answering');
    expect(table).not.toContain(r.publicKey);
  });
});

describe('the agent metrics', () => {
  it('time and count registry calls by method, errors apart', async () => {
    const m = new AgentMetrics({ processMetrics: false });
    const fake = {
      pods: async () => [],
      peers: async () => {
        throw new Error('etcd down');
      },
    } as unknown as Registry;
    const r = instrumentRegistry(fake, m);
    await r.pods('alpha');
    await expect(r.peers('alpha')).rejects.toThrow('etcd down');
    const text = await m.registry.metrics();
    expect(value(text, 'tenc_agent_registry_requests_total{op="pods",result="ok"}')).toBe(1);
    expect(value(text, 'tenc_agent_registry_errors_total{op="peers"}')).toBe(1);
    expect(value(text, 'tenc_agent_registry_duration_seconds_count{op="peers"}')).toBe(1);
  });

  it('parses --metrics-address and names a bad one', () => {
    expect(parseListenAddress('127.0.0.1:9586')).toEqual({ host: '127.0.0.1', port: 9586 });
    expect(parseListenAddress('[::1]:9586')).toEqual({ host: '::1', port: 9586 });
    expect(parseListenAddress(':9586')).toEqual({ host: '::', port: 9586 });
    expect(() => parseListenAddress('127.0.0.1')).toThrow(/--metrics-address: "127.0.0.1" is not HOST:PORT/);
    expect(() => parseListenAddress('x:70000')).toThrow(/70000/);
  });
});

describe('counters never go backwards while a pod lives', () => {
  it('the guard: a drop is added to an offset; a new epoch (pod restart) starts over; unseen series are forgotten', () => {
    const g = new CounterGuard();
    const step = (raw: number, epoch = 1, key = 'x_total{pod="p"}') => {
      g.begin();
      const v = g.value(key, epoch, raw);
      g.end();
      return v;
    };
    expect([step(10), step(20), step(5), step(30), step(30)]).toEqual([10, 20, 25, 50, 50]);
    expect(step(3, 2)).toBe(3); // a new process: its own values, a reset Prometheus sees once
    expect(step(7, 2)).toBe(7);
    step(1, 1, 'other_total');
    expect(g.size).toBe(2);
    for (let i = 0; i < KEEP_SCRAPES; i++) step(8, 2);
    expect(g.size).toBe(1); // other_total unseen for KEEP_SCRAPES scrapes
  });

  it('through the /metrics server: a peer removed and set again keeps growing; a restarted pod starts over', async () => {
    const peerKey = key();
    let r = report(0);
    const withPeer = (tx: number, startTime: number, drops: number): StatusReport => ({
      ...r,
      startTime,
      drops: { no_peer: drops },
      peers: [{ publicKey: peerKey, endpoint: '10.0.0.2:51820', allowedIps: ['10.0.0.2/32'], latestHandshake: null, rxBytes: tx, txBytes: tx, persistentKeepalive: 0, drops: {} }],
    });
    const server = new MetricsServer({ address: '127.0.0.1:0', targets: () => [{ namespace: 'n', pod: 'p', socket: 'x' }], request: async () => r });
    const fp = keyFingerprint(peerKey);
    const sent = `tenc_peer_sent_bytes_total{namespace="n",pod="p",peer="${fp}"}`;
    const drops = 'tenc_drops_total{namespace="n",pod="p",reason="no_peer"}';
    const seen: [number | undefined, number | undefined][] = [];
    for (const [tx, start, d] of [
      [5000, 1000, 4],
      [6000, 1000, 4],
      [100, 1000, 4], // the peer removed and set again: its counters restart in the engine
      [700, 1000, 6],
      [50, 2000, 1], // the pod restarted: new start time
      [80, 2000, 1],
    ]) {
      r = withPeer(tx, start, d);
      const text = await server.scrape();
      seen.push([value(text, sent), value(text, drops)]);
    }
    expect(seen).toEqual([
      [5000, 4],
      [6000, 4],
      [6100, 4],
      [6700, 6],
      [50, 1],
      [80, 1],
    ]);
  });

  it('a peer of peer="_other" (above the cap) removed does not make _other go backwards', async () => {
    const g = new CounterGuard();
    const r = report(MAX_PEERS_PER_POD + 2);
    const render = (guard: CounterGuard | null) => {
      guard?.begin();
      const t = renderPods([{ namespace: 'n', pod: 'p', report: r }], new Exposition(guard)).text();
      guard?.end();
      return t;
    };
    const other = 'tenc_peer_sent_bytes_total{namespace="n",pod="p",peer="_other"}';
    const before = value(render(g), other)!;
    // the quietest peer (one of the three summed in _other) is removed: the sum drops
    r.peers.shift();
    expect(value(render(null), other)!).toBeLessThan(before);
    expect(value(render(g), other)!).toBeGreaterThanOrEqual(before);
  });
});

describe('tenc_peer_info: the peers\' pod names from the registry as the agent trusts it', () => {
  it('names trusted peers only; a scrape never waits for the registry; a failed refresh keeps the last names', async () => {
    const r = report(3);
    const [k0, k1, k2] = r.peers.map((p) => p.publicKey);
    let fail = false;
    let calls = 0;
    const registry = {
      pods: async () => [
        { name: 'web-1', node: 'n1' },
        { name: 'db-1', node: 'n2' },
      ],
      peers: async () => {
        calls++;
        if (fail) throw new Error('etcd down');
        return [
          { project: 'alpha', pod: 'web-1', node: 'n1', publicKey: k0, endpoint: '10.0.0.2:51820' },
          { project: 'alpha', pod: 'db-1', node: 'n2', publicKey: k1, endpoint: '10.0.0.3:51820' },
          // a forged entry: db-1 runs on n2, this one was published by n1
          { project: 'alpha', pod: 'db-1', node: 'n1', publicKey: k2, endpoint: '10.0.0.4:51820' },
        ];
      },
    } as unknown as Registry;
    const names = new PeerNames(registry, 60_000);
    const server = new MetricsServer({ address: '127.0.0.1:0', targets: () => [{ namespace: 'alpha', pod: 'p', socket: 'x' }], request: async () => r, peerNames: names });
    const first = await server.scrape(); // starts the refresh, does not wait for it
    expect(first).not.toContain('tenc_peer_info{');
    await names.refresh(['alpha']);
    const text = await server.scrape();
    const info = (k: string) => `tenc_peer_info{namespace="alpha",pod="p",peer="${keyFingerprint(k)}",peer_pod=`;
    expect(text).toContain(`${info(k0)}"web-1"} 1`);
    expect(text).toContain(`${info(k1)}"db-1"} 1`);
    expect(text).not.toContain(info(k2));
    expect(promtool(text)).toBe('');
    // the counters' series do not carry the name: learning it later starts no new series
    expect(text.split('\n').filter((l) => l.startsWith('tenc_peer_sent_bytes_total{')).every((l) => !l.includes('peer_pod'))).toBe(true);
    fail = true;
    const before = calls;
    await names.refresh(['alpha']);
    expect(calls).toBe(before + 1);
    expect(await server.scrape()).toContain(`${info(k0)}"web-1"} 1`);
    // within the refresh interval a scrape does not ask the (failing) registry again
    await new Promise((r) => setTimeout(r, 10));
    expect(calls).toBe(before + 1);
  });
});
