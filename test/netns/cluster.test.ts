/**
 * The local cluster, dual-stack (netns-scripts/cluster.sh up netns-scripts/cluster-example-dual.json):
 * every pod made through the CNI chain (bridge + host-local with an IPv4 and an IPv6
 * range, loopback, tenc), one `tenc agent` per node protecting alpha (and beta, as the
 * attacker's own tenant):
 *
 *   node1: alpha-web-1 (svc web.alpha)  alpha-client-1  beta-web-1 (svc web.beta)
 *   node2: alpha-db-1  (svc db.alpha)   alpha-client-2  beta-client-1
 *          nodes joined by VXLAN over the (IPv4) underlay; VIPs of both families DNATed on the nodes
 *
 * Steps 1-5 run once per family on the same cluster (a dual-stack cluster is what carries
 * both): IPv6 first (curl -6, AAAA answers, IPv6 VIPs and raw IPv6 addresses), then IPv4.
 *
 *  1. by service name, within node1 and from node1 to node2: works; the node bridge
 *     and the underlay carry only tenc UDP between alpha pods, never the marker
 *  2. beta: no session with an alpha pod (handshake refused and counted), junk to an
 *     alpha pod's tenc port is dropped and counted, plaintext from a beta pod that
 *     spoofs an alpha pod's address is dropped and counted (plaintext_from_project)
 *  3. to beta's service and to the external host: works, in the clear (not tunnelled)
 *  4. churn: a pod removed and one added anywhere: peers updated within 5 s, an open
 *     TCP connection to another pod survives; the added pod runs in node2's pod host
 *  5. kill -9 a pod proxy (alpha's pod host on node2: all its pods), then an agent:
 *     traffic back within 5 s
 *  6. (once) agents stopped: proxies keep running, pods stay fail-closed and published; CNI DEL
 *     (remove-pod) cleans a pod; cluster.sh down: the machine as before
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { ensureBuilt } from '../build.js';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Netns, echoConnection, podProxies, requireRoot, requireTool, sh, startCapture, readCaptureBytes, until } from './lib.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const main = join(root, 'dist', 'src', 'cli', 'main.js');
const script = join(root, 'netns-scripts', 'cluster.sh');
const example = join(root, 'netns-scripts', 'cluster-example-dual.json');
const cfg = JSON.parse(readFileSync(example, 'utf8'));
/** A pod's address of the file: 0 IPv4, 1 IPv6. */
const podAddr = (pod: string, i: 0 | 1): string => {
  const p = cfg.pods.find((x: { name: string }) => x.name === pod);
  if (!p) throw new Error(`no pod ${pod} in ${example}`);
  return i === 0 ? p.address : p.address6;
};
const PREFIX = `ct${process.pid % 100000}`;
const STATE = `/run/tenc-cluster/${PREFIX}`;
const env = { ...process.env, CLUSTER_PREFIX: PREFIX };
const marker = `TENC-CLUSTER-MARKER-${process.pid}`;
const children = new Set<ChildProcess>();

function cluster(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('bash', [script, ...args], { env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const ns = (pod: string) => `${PREFIX}-${pod}`;
/** Every peer file the agents published for alpha (registry/peers/alpha/<node>/<pod>.json). */
function peerFiles(): string[] {
  const root = join(STATE, 'registry', 'peers', 'alpha');
  return readdirSync(root).flatMap((node) => readdirSync(join(root, node)).filter((f) => f.endsWith('.json')).map((f) => join(root, node, f)));
}

/** The public key an agent published for the pod. */
const keyOf = (pod: string) => JSON.parse(readFileSync(peerFiles().find((f) => f.endsWith(`/${pod}.json`))!, 'utf8')).publicKey as string;

function inPod(pod: string, cmd: string, ...args: string[]) {
  return spawnSync('ip', ['netns', 'exec', ns(pod), cmd, ...args], { encoding: 'utf8', timeout: 20_000 });
}

function curl(pod: string, url: string, body = marker, timeout = 3, family: '-4' | '-6' = '-4'): string | null {
  const r = inPod(pod, 'curl', family, '-g', '-s', '-m', String(timeout), '--data', body, url);
  return r.status === 0 ? r.stdout : null;
}

/** An HTTP server in the pod answering "<pod> got: <body>". */
function serve(pod: string, port: number): void {
  const c = spawn('ip', ['netns', 'exec', ns(pod), 'node', '-e', `
    require('http').createServer((q, r) => { let b = ''; q.on('data', (d) => (b += d)); q.on('end', () => r.end('${pod} got: ' + b)); })
      .listen(${port});
    require('net').createServer((s) => s.pipe(s)).listen(${port + 10000});`], { stdio: 'ignore' });
  children.add(c);
}

/** `tenc status` run in the pod's namespace finds the pod's socket like for any pod. */
function status(pod: string, _node: string, _project = 'alpha'): any {
  const r = inPod(pod, 'node', main, 'status', '--json');
  if (r.status !== 0) throw new Error(`status ${pod}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

function tryStatus(pod: string, node: string, project: string): any {
  try {
    return status(pod, node, project);
  } catch {
    return null;
  }
}

interface MachineState {
  netns: string;
  etcNetns: string;
  runCluster: boolean;
  links: string;
  nft: string;
  procs: string;
}

function machine(): MachineState {
  const procs = spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' })
    .stdout.split('\n')
    .filter((l) => l.includes(PREFIX))
    .filter((l) => !l.includes('vitest') && !l.includes('ps -eo'))
    .sort()
    .join('\n');
  return {
    netns: sh('ip', ['netns', 'list']).split('\n').filter((l) => l.startsWith(PREFIX)).join('\n'),
    etcNetns: existsSync('/etc/netns') ? readdirSync('/etc/netns').filter((n) => n.startsWith(PREFIX)).sort().join(',') : '',
    runCluster: existsSync(STATE),
    links: sh('ip', ['-o', 'link', 'show']).replace(/^\d+: /gm, '').split('\n').sort().join('\n'),
    nft: sh('nft', ['list', 'ruleset']),
    procs,
  };
}

let before: MachineState;

beforeAll(async () => {
  requireRoot();
  for (const t of ['ip', 'bridge', 'nft', 'nsenter', 'dnsmasq', 'tcpdump', 'curl']) requireTool(t);
  // not tsc alone: its rewritten outputs would make the pod bundle stale for every later test (cli/pod-bundle.ts)
  ensureBuilt();
  before = machine();
  const up = cluster('up', example);
  if (up.status !== 0) throw new Error(`cluster.sh up failed: ${up.stderr}`);
  serve('alpha-web-1', 80);
  serve('alpha-db-1', 5432);
  serve('beta-web-1', 80);
  // every proxy up with all its peers (before that, VIP traffic would take the nodes' DNAT in the clear)
  const pods: [string, string, string, number][] = [
    ['alpha-web-1', 'node1', 'alpha', 3],
    ['alpha-client-1', 'node1', 'alpha', 3],
    ['alpha-db-1', 'node2', 'alpha', 3],
    ['alpha-client-2', 'node2', 'alpha', 3],
    ['beta-web-1', 'node1', 'beta', 1],
    ['beta-client-1', 'node2', 'beta', 1],
  ];
  const tUp = Date.now();
  await until('every pod proxy configured', () => pods.every(([p, n, pr, peers]) => tryStatus(p, n, pr)?.peers.length === peers), 30_000);
  const t0 = Date.now();
  const through = () => curl('alpha-client-1', 'http://web/', 'x', 1) && curl('alpha-client-1', 'http://db:5432/', 'x', 1);
  try {
    const { elapsed } = await until('alpha web and db through tenc', through);
    console.log(`cluster setup: proxies configured after ${t0 - tUp} ms, web and db answered ${elapsed} ms later`);
  } catch (e) {
    // README "Known limits": a session that stalls after its handshake, unexplained, seen
    // recovering by WireGuard's own rule (a new handshake after KEEPALIVE + REKEY_TIMEOUT
    // without an answer). What decides it is printed; the setup then waits that out once.
    console.error(`${(e as Error).message}\n${diagnose()}`);
    const { elapsed } = await until('alpha web and db through tenc, after the stall', through, 30_000);
    console.error(`cluster setup: web and db answered ${Date.now() - t0} ms after the proxies were configured (${elapsed} ms after the diagnostics)`);
  }
}, 180_000);

/** The kernel's counters (nstat) a lost tunnel datagram would be in. */
const KERNEL_COUNTERS = ['UdpInDatagrams', 'UdpOutDatagrams', 'UdpInErrors', 'UdpRcvbufErrors', 'UdpSndbufErrors', 'UdpNoPorts', 'UdpInCsumErrors', 'IpInDiscards', 'IpOutDiscards', 'IpInAddrErrors', 'IpOutNoRoutes'];

/**
 * What a failed setup wait shows: each alpha pod's peers and handshakes, the name lookups,
 * the kernel's counters and neighbours of the pods and nodes on the cross-node path, the
 * agents' and pods' logs.
 */
function diagnose(): string {
  const out: string[] = [];
  const names = new Map<string, string>();
  for (const f of peerFiles()) names.set(JSON.parse(readFileSync(f, 'utf8')).publicKey, f.split('/').pop()!.replace(/\.json$/, ''));
  for (const pod of ['alpha-client-1', 'alpha-web-1', 'alpha-db-1', 'alpha-client-2']) {
    const st = tryStatus(pod, '', 'alpha');
    if (!st) {
      out.push(`${pod}: no status`);
      continue;
    }
    out.push(`${pod} (${names.get(st.publicKey) ?? 'key not published'}): drops ${JSON.stringify(st.drops)} handshakeFailures ${JSON.stringify(st.handshakeFailures)} dns ${JSON.stringify(st.dns?.counters ?? null)}`);
    for (const p of st.peers)
      out.push(`  peer ${names.get(p.publicKey) ?? p.publicKey.slice(0, 8)} ${p.endpoint} ${p.allowedIps.join(',')} handshake ${p.latestHandshake === null ? 'never' : `${Date.now() - p.latestHandshake} ms ago`} rx ${p.rxBytes} tx ${p.txBytes} drops ${JSON.stringify(p.drops)}`);
  }
  for (const name of ['web', 'db']) out.push(`getent hosts ${name}: ${inPod('alpha-client-1', 'getent', 'ahosts', name).stdout.split('\n')[0] ?? ''}`);
  out.push(`curl web: ${inPod('alpha-client-1', 'curl', '-s', '-m', '3', '-w', ' %{http_code} dns %{time_namelookup} connect %{time_connect} total %{time_total}', 'http://web/').stdout}`);
  out.push(`curl db: ${inPod('alpha-client-1', 'curl', '-s', '-m', '3', '-w', ' %{http_code} dns %{time_namelookup} connect %{time_connect} total %{time_total}', 'http://db:5432/').stdout}`);
  // where a sealed packet the peer never counted was lost: the kernel's UDP counters and
  // the links of both pods, and the nodes' neighbours and VXLAN forwarding entries
  for (const pod of ['alpha-client-1', 'alpha-db-1']) {
    out.push(`${pod} nstat: ${inPod(pod, 'nstat', '-asz', ...KERNEL_COUNTERS).stdout.replace(/\s+/g, ' ').trim()}`);
    out.push(`${pod} eth0: ${inPod(pod, 'ip', '-s', '-s', 'link', 'show', 'eth0').stdout.replace(/\s+/g, ' ').trim()}`);
    out.push(`${pod} neigh: ${inPod(pod, 'ip', 'neigh', 'show').stdout.replace(/\n/g, '; ')}`);
  }
  for (const node of ['node1', 'node2']) {
    const nodeNs = `${PREFIX}-n-${node}`;
    const inNode = (...a: string[]) => spawnSync('ip', ['netns', 'exec', nodeNs, ...a], { encoding: 'utf8', timeout: 20_000 }).stdout ?? '';
    out.push(`${node} neigh: ${inNode('ip', 'neigh', 'show').replace(/\n/g, '; ')}`);
    out.push(`${node} fdb vxlan0: ${inNode('bridge', 'fdb', 'show', 'dev', 'vxlan0').replace(/\n/g, '; ')}`);
    out.push(`${node} nstat: ${inNode('nstat', '-asz', ...KERNEL_COUNTERS).replace(/\s+/g, ' ').trim()}`);
  }
  const logs = (dir: string): string[] =>
    existsSync(dir) ? readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.log')).map((f) => join(dir, f)) : [];
  for (const f of logs(join(STATE, 'agents'))) out.push(`--- ${f}\n${readFileSync(f, 'utf8').split('\n').slice(-200).join('\n')}`);
  return out.join('\n');
}

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  cluster('down');
});

/** One family's view of the dual-stack cluster: its addresses, curl's flag, its host length. */
interface Family {
  name: 'IPv4' | 'IPv6';
  curl: '-4' | '-6';
  ping: '-4' | '-6';
  host: number;
  addr: (pod: string) => string;
  url: (addr: string, port?: number) => string;
  external: string;
  /** The pod added and removed by this family's churn, on node2 (IPv4: added; IPv6: added, then removed). */
  churn: { name: string; address: string; address6: string };
  /** The udp socket type. */
  udp: 'udp4' | 'udp6';
}

/** IPv6 first: its churn adds and removes a pod, so the IPv4 run finds the cluster as the original suite did. */
const FAMILIES: Family[] = [
  {
    name: 'IPv6', curl: '-6', ping: '-6', host: 128, addr: (pod) => podAddr(pod, 1), url: (a, port) => `http://[${a}]${port ? `:${port}` : ''}/`,
    external: cfg.external6, churn: { name: 'alpha-web-3', address: '10.128.2.31', address6: 'fd00:128:2::1f' }, udp: 'udp6',
  },
  {
    name: 'IPv4', curl: '-4', ping: '-4', host: 32, addr: (pod) => podAddr(pod, 0), url: (a, port) => `http://${a}${port ? `:${port}` : ''}/`,
    external: cfg.external, churn: { name: 'alpha-web-2', address: '10.128.2.30', address6: 'fd00:128:2::1e' }, udp: 'udp4',
  },
];

for (const F of FAMILIES) {
  describe(`local cluster with tenc agents over ${F.name}`, () => {
    const get = (pod: string, url: string, body = marker, timeout = 3) => curl(pod, url, body, timeout, F.curl);
    const alphaHosts = (fam: Family) => ['alpha-client-1', 'alpha-web-1', 'alpha-db-1', 'alpha-client-2'].map((p) => `host ${fam.addr(p)}`).join(' or ');

    it('1. project traffic by service name within a node and across nodes is ciphertext on the node bridge and the underlay', async () => {
      const bridge = await startCapture(Netns.attach(`${PREFIX}-n-node1`), 'br0');
      const underlay = await startCapture(Netns.attach(`${PREFIX}-ul`), 'ul0');
      try {
        expect(get('alpha-client-1', 'http://web/')).toBe(`alpha-web-1 got: ${marker}`); // node1 -> node1
        expect(get('alpha-client-1', 'http://db.alpha.svc.cluster.local:5432/')).toBe(`alpha-db-1 got: ${marker}`); // node1 -> node2
        expect(get('alpha-client-2', 'http://web.alpha/')).toBe(`alpha-web-1 got: ${marker}`); // node2 -> node1
        // the pods' DNS proxy answered the project names with the endpoints (issue 4), A and AAAA
        expect(status('alpha-client-1', 'node1').dns.counters.rewritten).toBeGreaterThan(0);
        expect(inPod('alpha-client-1', 'getent', F.name === 'IPv4' ? 'ahostsv4' : 'ahostsv6', 'db').stdout).toContain(F.addr('alpha-db-1'));
      } finally {
        await bridge.stop();
        await underlay.stop();
      }
      // the tunnel's outer packets are between the pods' primary (IPv4) addresses in both runs
      const tunnel = bridge.read([`(${alphaHosts(FAMILIES.find((f) => f.name === 'IPv4')!)}) and udp port 51820`]);
      // DNS to the cluster DNS is not project traffic (the DNS proxy of issue 4 is not in this test);
      // neither is IPv6 neighbour discovery with the gateway
      const clear = bridge.read([`(${alphaHosts(F)}) and not udp port 51820 and not udp port 53 and not arp and not (icmp6 and (ip6[40] == 135 or ip6[40] == 136))`]);
      expect(tunnel.length).toBeGreaterThan(0);
      expect(clear, clear.join('\n')).toEqual([]);
      // the underlay: VXLAN (UDP 4789) whose inner packets are tenc UDP only
      // (tcpdump prints each VXLAN header line followed by its inner packet's line)
      const vx = underlay.read(['udp port 4789']);
      const inner = vx.filter((l) => !l.includes('VXLAN'));
      expect(inner.length).toBeGreaterThan(0);
      const notTenc = inner.filter((l) => !/\.51820 > .*\.51820: UDP/.test(l) && !/ARP/.test(l));
      expect(notTenc, notTenc.join('\n')).toEqual([]);
      for (const c of [bridge, underlay]) {
        expect(readCaptureBytes(c).includes(Buffer.from(marker))).toBe(false);
        c.remove();
      }
    });

    it('2. a beta pod gets no session with alpha, cannot inject into its tenc port, and its plaintext as an alpha address is dropped', async () => {
      const dbAddr = F.addr('alpha-db-1');
      const spoofed = F.addr('alpha-client-2');
      const db = status('alpha-db-1', 'node2');
      const dropsBefore = db.drops.plaintext_from_project ?? 0;
      const hfBefore = Object.values(db.handshakeFailures as Record<string, number>).reduce((a, b) => a + b, 0);
      const junkBefore = Object.values(db.drops as Record<string, number>).reduce((a, b) => a + b, 0) - dropsBefore;
      // (a) beta-client-1's own tenc (beta psk) told to peer with alpha-db-1's public key
      const endpoint = F.name === 'IPv4' ? `${dbAddr}:51820` : `[${dbAddr}]:51820`;
      expect(inPod('beta-client-1', 'node', main, 'set-peer', db.publicKey, '--endpoint', endpoint, '--allowed-ips', `${dbAddr}/${F.host}`).status).toBe(0);
      expect(inPod('beta-client-1', 'ping', F.ping, '-c', '2', '-i', '0.3', '-W', '1', dbAddr).status).not.toBe(0);
      const after = status('alpha-db-1', 'node2');
      const hfAfter = Object.values(after.handshakeFailures as Record<string, number>).reduce((a, b) => a + b, 0);
      expect(hfAfter).toBeGreaterThan(hfBefore);
      const betaKey = status('beta-client-1', 'node2', 'beta').publicKey;
      expect(after.peers.map((p: { publicKey: string }) => p.publicKey)).not.toContain(betaKey);
      inPod('beta-client-1', 'node', main, 'remove-peer', db.publicKey);
      // (b) junk to alpha-db-1's tenc port. beta's tenc classifies alpha-db-1's address on first
      // use (its range is in beta's --classify-cidrs, its PTR is alpha's): one ping first, so
      // the burst below leaves through the bypass and all 20 datagrams arrive
      await until('beta bypass to alpha-db-1', () => inPod('beta-client-1', 'ping', F.ping, '-c', '1', '-W', '1', dbAddr).status === 0);
      inPod('beta-client-1', 'node', '-e', `const s = require('dgram').createSocket('${F.udp}'); let n = 0;
        const go = () => s.send(Buffer.from('${marker}-junk-' + n), 51820, '${dbAddr}', () => (++n < 20 ? go() : s.close())); go();`);
      await until('junk counted', () => {
        const s = status('alpha-db-1', 'node2');
        const all = Object.values(s.drops as Record<string, number>).reduce((a, b) => a + b, 0) - (s.drops.plaintext_from_project ?? 0);
        return all >= junkBefore + 20;
      }, 5000);
      // (c) plaintext from beta-client-1 with alpha-client-2's address
      inPod('beta-client-1', 'ip', 'addr', 'add', `${spoofed}/${F.host}`, 'dev', 'eth0', ...(F.name === 'IPv6' ? ['nodad'] : []));
      try {
        const r = inPod('beta-client-1', 'curl', '-s', '-g', '-m', '2', '--interface', spoofed, '--data', marker, F.url(dbAddr, 5432));
        expect(r.status).not.toBe(0);
      } finally {
        inPod('beta-client-1', 'ip', 'addr', 'del', `${spoofed}/${F.host}`, 'dev', 'eth0');
      }
      expect(status('alpha-db-1', 'node2').drops.plaintext_from_project ?? 0).toBeGreaterThan(dropsBefore);
      // the beta pod's own address is not a project address: its plaintext is not enforcement's business
      expect(get('beta-client-1', 'http://web.beta/')).toBe(`beta-web-1 got: ${marker}`);
    });

    it('3. traffic to another project and outside the cluster works and is not tunnelled', async () => {
      const client = F.addr('alpha-client-1');
      const betaWeb = F.addr('beta-web-1');
      const bridge = await startCapture(Netns.attach(`${PREFIX}-n-node1`), 'br0');
      try {
        expect(get('alpha-client-1', 'http://web.beta/')).toBe(`beta-web-1 got: ${marker}`);
        expect(inPod('alpha-client-1', 'ping', F.ping, '-c', '1', '-W', '2', F.external).status).toBe(0);
      } finally {
        await bridge.stop();
      }
      expect(bridge.read([`tcp port 80 and host ${client}`]).length).toBeGreaterThan(0);
      expect(bridge.read([`${F.name === 'IPv4' ? 'icmp' : 'icmp6'} and host ${F.external}`]).length).toBeGreaterThan(0);
      expect(readCaptureBytes(bridge).includes(Buffer.from(marker))).toBe(true); // in the clear: not tenc's traffic
      bridge.remove();
      // beta-web-1 by raw IP: inside the pod range, so it enters tenc0 until classified
      // (tenc agent --classify-cidrs); its PTR is beta's, so it is bypassed, not tunnelled
      const route = () => inPod('alpha-client-1', 'ip', F.ping, 'route', 'get', betaWeb).stdout;
      expect(route()).toContain('dev tenc0');
      expect(inPod('alpha-client-1', 'ping', F.ping, '-c', '1', '-W', '2', betaWeb).status).toBe(0);
      expect(route()).toContain('dev eth0');
      expect(status('alpha-client-1', 'node1').dns.routeMisses).toMatchObject({
        ranges: ['10.128.1.0/24', '10.128.2.0/24', '10.96.0.0/16', 'fd00:128:1::/64', 'fd00:128:2::/64', 'fd00:96::/108'],
        projectUnrouted: 0,
      });
    });

    it('4. churn: a pod removed and one added update the peers within 5 s; an open connection survives', async () => {
      // an open TCP connection alpha-client-1 -> alpha-db-1 (node2), echoing a line every 100 ms
      const conn = echoConnection(ns('alpha-client-1'), F.addr('alpha-db-1'), 15432);
      children.add(conn.child);
      await until('echo', () => conn.echoed().includes('ping 3'));
      const peersOf1 = () => (status('alpha-client-1', 'node1').peers as { publicKey: string; allowedIps: string[] }[]);
      const add = async () => {
        const p = F.churn;
        expect(cluster('add-pod', JSON.stringify({ name: p.name, project: 'alpha', node: 'node2', address: p.address, address6: p.address6, labels: { app: 'web' } })).status).toBe(0);
        const a = F.name === 'IPv4' ? p.address : p.address6;
        const added = await until(`${p.name} peer in alpha-client-1`, () => peersOf1().some((x) => x.allowedIps.includes(`${a}/${F.host}`)), 10_000);
        expect(added.elapsed).toBeLessThan(5000);
        serve(p.name, 80);
        await until(`alpha-client-1 -> ${p.name} through tenc`, () => curl('alpha-client-1', F.url(a), 'x', 1, F.curl));
        // node2's agent runs alpha's pods in its pod host (agent/host.ts): the new pod went there, not into a process of its own
        const started = readFileSync(join(STATE, 'agents', 'node2.log'), 'utf8')
          .split('\n')
          .filter((l) => l.includes('"msg":"proxy started"') && l.includes(`"pod":"${p.name}"`))
          .map((l) => JSON.parse(l) as { host?: boolean });
        expect(started.at(-1)?.host, `node2's agent started ${p.name} outside its pod host`).toBe(true);
        expect(podProxies(`/run/netns/${ns(p.name)}`)).toEqual(podProxies(`/run/netns/${ns('alpha-db-1')}`)); // the same process
      };
      const remove = async (pod: string) => {
        const gone = keyOf(pod);
        expect(peersOf1().map((x) => x.publicKey)).toContain(gone);
        expect(cluster('remove-pod', pod).status).toBe(0);
        const removed = await until(`${pod} removed from alpha-client-1`, () => !peersOf1().some((x) => x.publicKey === gone), 10_000);
        expect(removed.elapsed).toBeLessThan(5000);
      };
      if (F.name === 'IPv4') {
        await remove('alpha-client-2');
        await add();
      } else {
        await add();
        await remove(F.churn.name);
      }
      const n = conn.pings();
      await until('more echoes on the open connection', () => conn.pings() > n + 5, 5000);
      expect(conn.child.exitCode).toBe(null);
      conn.child.kill('SIGKILL');
    });

    it('5. kill -9 of a pod proxy (the pod host of alpha on node2), then of an agent: traffic back within 5 s', async () => {
      const [tencPid, ...more] = podProxies(`/run/netns/${ns('alpha-db-1')}`);
      expect(tencPid).toBeDefined();
      expect(more).toEqual([]);
      const oldKey = status('alpha-db-1', 'node2').publicKey;
      process.kill(Number(tencPid), 'SIGKILL');
      const t0 = Date.now();
      await until('db back after the proxy was killed', () => get('alpha-client-1', 'http://db:5432/', 'x', 1), 10_000);
      expect(Date.now() - t0).toBeLessThan(5000);
      expect(status('alpha-db-1', 'node2').publicKey).not.toBe(oldKey);
      // the crashed run's enforcement table was replaced, not doubled
      expect(Netns.attach(ns('alpha-db-1')).exec('nft', 'list', 'tables').split('\n').filter((l) => l.includes('tenc_tenc0'))).toEqual(['table inet tenc_tenc0']);

      const keys = () => peerFiles().map((f) => readFileSync(f, 'utf8')).join();
      const keysBefore = keys();
      const adopted = () => (readFileSync(join(STATE, 'agents', 'node1.log'), 'utf8').match(/running proxy adopted/g) ?? []).length;
      const adoptedBefore = adopted();
      const agentPid = Number(readFileSync(join(STATE, 'agents', 'node1.pid'), 'utf8'));
      process.kill(agentPid, 'SIGKILL');
      const t1 = Date.now();
      expect(cluster('agent-start').status).toBe(0); // the supervisor's restart
      // node1 runs alpha-web-1, alpha-client-1 and beta-web-1
      await until('the new agent adopted the proxies of node1', () => adopted() >= adoptedBefore + 3);
      await until('web and db after the agent was killed', () => get('alpha-client-1', 'http://web/', 'x', 1) && get('alpha-client-1', 'http://db:5432/', 'x', 1), 10_000);
      expect(Date.now() - t1).toBeLessThan(5000);
      expect(keys()).toBe(keysBefore); // the restarted agent adopted the running proxies
    });
  });
}

describe('local cluster with tenc agents: stop and teardown', () => {
  it('6. agents stopped: proxies run on, fail-closed and published; remove-pod (CNI DEL) cleans; down leaves the machine as it was', async () => {
    for (const c of children) c.kill('SIGKILL');
    const keysBefore = peerFiles().length;
    // the process serving the pod: the project's pod host on its node (or a process of its own in its netns)
    const proxies = (pod: string) => podProxies(`/run/netns/${ns(pod)}`);
    expect(cluster('agent-stop').status).toBe(0);
    for (const pod of ['alpha-web-1', 'alpha-client-1', 'alpha-db-1', 'alpha-web-2']) {
      expect(proxies(pod), pod).toHaveLength(1);
      expect(Netns.attach(ns(pod)).exec('nft', 'list', 'tables'), pod).toContain('tenc_tenc0');
    }
    expect(peerFiles().length).toBe(keysBefore);
    // a proxy (alpha's pod host on node2) stopped while no agent runs: its pods stay fail-closed (rule and guards kept)
    process.kill(Number(proxies('alpha-db-1')[0]), 'SIGTERM');
    await until('db proxy gone', () => proxies('alpha-db-1').length === 0, 10_000);
    const db = Netns.attach(ns('alpha-db-1'));
    expect(db.ip('rule', 'show')).toContain('lookup 52100');
    expect(db.exec('nft', 'list', 'tables')).toContain('tenc_tenc0');
    // agents back: they adopt what runs and restart the dead proxy; DEL cleans a pod
    expect(cluster('agent-start').status).toBe(0);
    await until('db proxy restarted', () => proxies('alpha-db-1').length === 1, 15_000);
    const web2 = Netns.attach(ns('alpha-web-2'));
    const del = cluster('cni', 'DEL', 'alpha-web-2');
    expect(del.status, del.stderr).toBe(0);
    expect(proxies('alpha-web-2')).toEqual([]);
    expect(web2.exec('nft', 'list', 'ruleset')).toBe('');
    expect(web2.ip('rule', 'show').trim().split('\n')).toHaveLength(3); // local, main, default
    expect(peerFiles().some((f) => f.endsWith('/alpha-web-2.json'))).toBe(false);
    expect(cluster('cni', 'DEL', 'alpha-web-2').status).toBe(0); // DEL again: success
    const r = cluster('down');
    expect(r.status, r.stderr).toBe(0);
    const after = machine();
    expect(after).toEqual(before);
  });
});

describe('cluster.sh up with an invalid file', () => {
  it('names the field and builds nothing', () => {
    const bad = join('/tmp', `${PREFIX}-bad.json`);
    const cfg = JSON.parse(readFileSync(example, 'utf8'));
    cfg.pods[2].node = 'node9';
    spawnSync('sh', ['-c', `cat > ${bad}`], { input: JSON.stringify(cfg) });
    const snap = machine();
    const r = spawnSync('bash', [script, 'up', bad], { env: { ...env, CLUSTER_PREFIX: `${PREFIX}b` }, encoding: 'utf8' });
    spawnSync('rm', ['-f', bad]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('pods[2].node: "node9" is not a node in "nodes"');
    expect(sh('ip', ['netns', 'list'])).not.toContain(`${PREFIX}b-`);
    expect(machine()).toEqual(snap);
  });
});
