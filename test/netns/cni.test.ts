/**
 * tenc as a chained CNI plugin, through the real chain (Debian's /usr/lib/cni bridge
 * with host-local, loopback, then tenc's launcher) run as a runtime would, on a one-node
 * cluster of cluster.sh (prefix cq, project alpha protected, beta not):
 *
 *  1. the spec: ADD prints prevResult, CHECK, DEL, DEL again; ADD with a 0.4.0 chain;
 *     bad stdin (not JSON, unknown field, no prevResult, no CNI_NETNS) gives the error
 *     JSON with the spec's code and changes nothing; an unprotected namespace passes
 *  2. first packet: when ADD returns, the agent has put the pod's rule, guards and nft
 *     table in place itself (before the proxy runs; the proxy adopts them); an app
 *     started right after ADD sends to a project peer at once: no plaintext on the node
 *     bridge, and it reaches the peer (encrypted) once known
 *  2b. unchained, as Multus calls tenc on OpenShift: the pod's default network first
 *     (the conflist without tenc: bridge + host-local, loopback), then tenc's launcher
 *     alone with a NetworkAttachmentDefinition's config ("unchained": true, 0.4.0),
 *     CNI_IFNAME net1, no prevResult: the empty result; the agent registers the pod with
 *     the address the bridge gave it, read in its netns, and the pod is fail-closed and
 *     protected as in 2 (the same checks); CHECK, DEL (tenc first, then the default
 *     network); a netns with no network yet: code 11 naming it, nothing registered
 *  2c. the agent's reading of a pod's addresses (podAddressesIn) with the real `ip` on a
 *     dual-stack netns: the default route's interface, one address per family
 *  3. agent down during ADD: code 11; the runtime's DEL + ADD after the agent is back works;
 *     agent killed between ADD and DEL: DEL still cleans up
 *  4. 50 pods added and deleted in a loop (5 at a time): nothing leaks, the agent's RSS
 *     grows by less than a bound
 *  5. `cluster.sh down` leaves no process of the cluster (agent, proxy) and no netns
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Netns, describeProcess, podProxies, processesUnder, requireRoot, requireTool, sh, startCapture, readCaptureBytes, until } from './lib.js';
import { podAddressesIn, PodAddressError } from '../../src/agent/netns.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const main = join(root, 'dist', 'src', 'cli', 'main.js');
const tool = join(root, 'dist', 'src', 'agent', 'cluster-tool.js');
const script = join(root, 'netns-scripts', 'cluster.sh');
const PREFIX = 'cq';
const STATE = `/run/tenc-cluster/${PREFIX}`;
const NODE = `${PREFIX}-n-node1`;
const env = { ...process.env, CLUSTER_PREFIX: PREFIX, CLUSTER_PROTECT: 'alpha' };
const clusterFile = `/tmp/${PREFIX}-cluster-${process.pid}.json`;
const launcher = join(STATE, 'cni', 'bin', 'tenc');
const agentSock = join(STATE, 'agents', 'node1.sock');

function cluster(...args: string[]) {
  return spawnSync('bash', [script, ...args], { env, encoding: 'utf8', timeout: 60_000 });
}
const nsName = (pod: string) => `${PREFIX}-${pod}`;

/** Makes the pod's empty netns (as the runtime does) with its resolv.conf. */
function makeNs(pod: string): void {
  const ns = nsName(pod);
  sh('ip', ['netns', 'add', ns]);
  sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  mkdirSync(`/etc/netns/${ns}`, { recursive: true });
  writeFileSync(`/etc/netns/${ns}/resolv.conf`, 'search alpha.svc.cluster.local\nnameserver 10.96.0.10\n');
}
function removeNs(pod: string): void {
  spawnSync('ip', ['netns', 'del', nsName(pod)]);
  rmSync(`/etc/netns/${nsName(pod)}`, { recursive: true, force: true });
}
/** The runtime: the node's conflist chain for a pod outside the cluster file. */
function chain(cmd: 'ADD' | 'DEL' | 'CHECK', pod: string, address: string, project = 'alpha') {
  return spawnSync('ip', ['netns', 'exec', NODE, 'node', tool, 'cni', cmd, STATE, PREFIX, pod, JSON.stringify({ node: 'node1', project, address })], { encoding: 'utf8', timeout: 30_000 });
}
function chainAsync(cmd: 'ADD' | 'DEL', pod: string, address: string): Promise<number | null> {
  const c = spawn('ip', ['netns', 'exec', NODE, 'node', tool, 'cni', cmd, STATE, PREFIX, pod, JSON.stringify({ node: 'node1', project: 'alpha', address })], { stdio: 'ignore' });
  return new Promise((r) => c.on('exit', (code) => r(code)));
}
/** tenc's launcher alone, as the runtime calls it. */
function plugin(cniEnv: Record<string, string>, stdin: string) {
  const r = spawnSync(launcher, [], { input: stdin, encoding: 'utf8', env: { PATH: process.env.PATH, CNI_PATH: join(STATE, 'cni', 'bin'), CNI_IFNAME: 'eth0', ...cniEnv } });
  return { status: r.status, out: r.stdout ? JSON.parse(r.stdout) : null };
}
/** The proxies serving the pod: a process in its netns, or the pod host holding it. */
const proxies = (pod: string) => podProxies(`/run/netns/${nsName(pod)}`);
const registrations = () => JSON.parse(readFileSync(join(STATE, 'agents', 'node1.run', 'registrations.json'), 'utf8')).registrations as { podName: string; containerId: string; ifname: string; addresses: string[] }[];
const agentPid = () => Number(readFileSync(join(STATE, 'agents', 'node1.pid'), 'utf8'));
const agentLog = () => readFileSync(join(STATE, 'agents', 'node1.log'), 'utf8');
/** Processes of this cluster: its agents and proxies (their command lines name the state dir). */
const clusterProcesses = () => processesUnder(STATE);
/** The pod proxies of this cluster (a standby not yet handed a pod is not one). */
const clusterProxies = () => processesUnder(`${STATE}/agents`, { proxiesOnly: true });
const rssKiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);

beforeAll(() => {
  requireRoot();
  for (const t of ['ip', 'nft', 'nsenter', 'dnsmasq', 'tcpdump']) requireTool(t);
  for (const p of ['bridge', 'host-local', 'loopback']) if (!existsSync(`/usr/lib/cni/${p}`)) throw new Error(`/usr/lib/cni/${p} missing: run netns-scripts/deps.sh`);
  if (!existsSync(tool)) throw new Error(`${tool} missing: npm run build`);
  writeFileSync(
    clusterFile,
    JSON.stringify({
      underlay: '10.200.0.0/24',
      overlay: '10.201.0.0/24',
      serviceCidr: '10.96.0.0/16',
      dns: '10.96.0.10',
      external: '10.250.0.1',
      nodes: [{ name: 'node1', podCidr: '10.128.1.0/24' }],
      projects: [{ name: 'alpha' }, { name: 'beta' }],
      pods: [{ name: 'alpha-srv', project: 'alpha', node: 'node1', address: '10.128.1.10', labels: { app: 'srv' } }],
      services: [],
    }),
  );
  cluster('down');
  const up = cluster('up', clusterFile);
  if (up.status !== 0) throw new Error(`cluster.sh up: ${up.stderr}`);
}, 60_000);

afterAll(() => {
  cluster('down');
  // a failed test may leave a proxy of a pod outside the cluster file (test 5 reports it): stop it
  for (const pid of clusterProxies()) spawnSync('kill', [pid]);
  rmSync(clusterFile, { force: true });
  for (const n of sh('ip', ['netns', 'list']).split('\n')) if (n.startsWith(`${PREFIX}-`)) spawnSync('ip', ['netns', 'del', n.split(' ')[0]]);
});

/**
 * Test 2's checks for a pod `name` of alpha at `address` whose sandbox `add` makes (the
 * runtime's CNI ADD into the empty netns made here) and `del` takes down: the registry
 * knows the pod first; when add returns the pod is fail-closed (the agent's rule, the
 * peer's guard, the nft table, before its proxy starts); an app started at once sends to
 * the project peer alpha-srv, reaches it, and no plaintext of it crosses the node bridge;
 * the proxy adopted the agent's state.
 */
async function firstPacket(name: string, address: string, add: () => void, del: () => void): Promise<void> {
  const marker = `TENC-FIRST-PACKET-${process.pid}-${name}`;
  const srv = spawn('ip', ['netns', 'exec', nsName('alpha-srv'), 'node', '-e', `
    const s = require('dgram').createSocket('udp4'); s.bind(7000);
    s.on('message', (m) => { if (String(m).includes('${marker}')) { console.log('got'); process.exit(0); } });`], { stdio: ['ignore', 'pipe', 'inherit'] });
  const got = new Promise<boolean>((r) => srv.on('exit', (c) => r(c === 0)));
  // the API server knows the pod before its sandbox is made: only then do peers trust its key
  const pod = { name, project: 'alpha', node: 'node1', address, labels: { app: 'cli' } };
  expect(spawnSync('node', [tool, 'add-pod', STATE, PREFIX, JSON.stringify(pod)]).status).toBe(0);
  expect(spawnSync('node', [tool, 'sync', STATE, PREFIX]).status).toBe(0);
  const cap = await startCapture(Netns.attach(NODE), 'br0');
  makeNs(name);
  add();
  // fail-closed when ADD returns: the agent made the rule, the peer's guard and the nft
  // table itself (the proxy is still starting: its TUN comes later)
  const n = Netns.attach(nsName(name));
  const tun = n.ip('-o', 'link').includes('tenc0');
  expect(n.ip('rule', 'show')).toMatch(/not from all fwmark 0xcb84 lookup 52100/);
  expect(n.ip('route', 'show', 'table', '52100')).toMatch(/unreachable 10\.128\.1\.10 .*metric 4294967295/);
  expect(n.exec('nft', 'list', 'set', 'inet', 'tenc_tenc0', 'project4')).toContain('10.128.1.10');
  expect(agentLog()).toMatch(new RegExp(`"pod":"${name}".*before its proxy starts`));
  console.log(`${name}: tenc0 ${tun ? 'already there' : 'not there yet'} when ADD returned`);
  const app = spawn('ip', ['netns', 'exec', nsName(name), 'node', '-e', `
    const s = require('dgram').createSocket('udp4');
    setInterval(() => s.send('${marker}', 7000, '10.128.1.10', () => {}), 20);`], { stdio: 'ignore' });
  const ok = await Promise.race([got, new Promise<boolean>((r) => setTimeout(() => r(false), 15_000))]);
  app.kill('SIGKILL');
  srv.kill('SIGKILL');
  await new Promise((r) => setTimeout(r, 200));
  await cap.stop();
  const bytes = readCaptureBytes(cap);
  cap.remove();
  expect(ok).toBe(true); // reached the peer (through tenc: the plaintext never crossed the bridge)
  expect(bytes.length).toBeGreaterThan(100); // the capture saw traffic (tenc's)
  expect(bytes.includes(Buffer.from(marker))).toBe(false);
  // the proxy took the agent's state over: it adopted the rule and the guards
  const podLog = readFileSync(join(STATE, 'agents', 'node1.run', 'alpha', `${name}.log`), 'utf8');
  expect(podLog).toMatch(/"residue":\{"rules":1,"guards":[1-9]/);
  expect(podLog).not.toMatch(/File exists/);
  del();
  removeNs(name);
  spawnSync('node', [tool, 'remove-pod', STATE, PREFIX, name]);
  spawnSync('node', [tool, 'sync', STATE, PREFIX]);
}

describe('tenc cni (real chain)', () => {
  it('1. spec: ADD, CHECK, DEL, DEL again; a 0.4.0 chain; bad stdin changes nothing; unprotected passes', async () => {
    makeNs('alpha-a');
    const add = chain('ADD', 'alpha-a', '10.128.1.30');
    expect(add.status, add.stderr).toBe(0);
    const res = JSON.parse(add.stdout);
    expect(res.cniVersion).toBe('1.0.0');
    expect(res.ips[0].address).toBe('10.128.1.30/24'); // the bridge's result, unchanged
    const n = Netns.attach(nsName('alpha-a'));
    expect(n.ip('rule', 'show')).toContain('lookup 52100');
    expect(n.exec('nft', 'list', 'tables')).toContain('tenc_tenc0');
    // CHECK waits for the proxy ADD started in the background
    const check = chain('CHECK', 'alpha-a', '10.128.1.30');
    expect(check.status, check.stderr).toBe(0);
    expect(proxies('alpha-a')).toHaveLength(1);
    // what a proxy killed -9 would leave besides its own: TencPolicy exempt rules one pref
    // below tenc's, and a second rule at tenc's; DEL cleans the namespace (agent/netns.ts cleanNetns)
    for (const fam of ['-4', '-6']) for (const t of ['100', '101']) n.ip(fam, 'rule', 'add', 'pref', '5209', 'table', t);
    n.ip('-4', 'rule', 'add', 'pref', '5210', 'table', '102');
    const del = chain('DEL', 'alpha-a', '10.128.1.30');
    expect(del.status, del.stderr).toBe(0);
    expect(proxies('alpha-a')).toEqual([]);
    expect(n.exec('nft', 'list', 'ruleset')).toBe('');
    expect(n.ip('rule', 'show')).not.toContain('52100');
    for (const fam of ['-4', '-6']) expect(n.ip(fam, 'rule', 'show').split('\n').filter((l) => /^52(09|10):/.test(l))).toEqual([]);
    expect(chain('DEL', 'alpha-a', '10.128.1.30').status).toBe(0); // DEL again
    expect(registrations().map((r) => r.podName)).toEqual(['alpha-srv']); // the cluster file's pod only

    // a 0.4.0 chain: the bridge returns the 0.4.0 form (ips[].version), tenc passes it on
    const conf = join(STATE, 'cni', 'node1.conflist');
    const orig = readFileSync(conf, 'utf8');
    writeFileSync(conf, JSON.stringify({ ...JSON.parse(orig), cniVersion: '0.4.0' }));
    try {
      const a2 = chain('ADD', 'alpha-a', '10.128.1.31');
      expect(a2.status, a2.stderr).toBe(0);
      expect(JSON.parse(a2.stdout).ips[0]).toMatchObject({ version: '4', address: '10.128.1.31/24' });
      await until('proxy of alpha-a', () => proxies('alpha-a').length === 1, 10_000);
      expect(chain('DEL', 'alpha-a', '10.128.1.31').status).toBe(0);
      expect(proxies('alpha-a')).toEqual([]);
    } finally {
      writeFileSync(conf, orig);
    }

    // bad input to tenc itself: the spec's error JSON, nothing registered or started
    const base = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'bad1', CNI_NETNS: `/run/netns/${nsName('alpha-a')}`, CNI_ARGS: 'K8S_POD_NAMESPACE=alpha;K8S_POD_NAME=alpha-a' };
    const good = { cniVersion: '1.0.0', name: 'x', type: 'tenc', agentSocket: agentSock, prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.128.1.32/24' }] } };
    const cases: [Record<string, string>, string, number, RegExp][] = [
      [base, 'not json', 6, /not JSON/],
      [base, JSON.stringify({ ...good, colour: 'red' }), 7, /colour/],
      [base, JSON.stringify({ ...good, prevResult: undefined }), 7, /^prevResult: missing .*"unchained": true/],
      [{ ...base, CNI_NETNS: '' }, JSON.stringify(good), 4, /CNI_NETNS/],
      [{ ...base, CNI_NETNS: '/etc/passwd' }, JSON.stringify(good), 7, /netns/],
    ];
    for (const [e, stdin, code, msg] of cases) {
      const r = plugin(e, stdin);
      expect(r.status).toBe(1);
      expect(r.out).toMatchObject({ cniVersion: '1.0.0', code });
      expect(r.out.msg).toMatch(msg);
    }
    expect(registrations().map((r) => r.podName)).toEqual(['alpha-srv']); // the cluster file's pod only
    expect(proxies('alpha-a')).toEqual([]);
    const v = plugin({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}');
    expect(v.out.supportedVersions).toContain('1.0.0');

    // beta is not protected: prevResult straight through, no proxy
    makeNs('beta-b');
    const b = chain('ADD', 'beta-b', '10.128.1.40', 'beta');
    expect(b.status, b.stderr).toBe(0);
    expect(proxies('beta-b')).toEqual([]);
    expect(chain('DEL', 'beta-b', '10.128.1.40', 'beta').status).toBe(0);
    removeNs('beta-b');
    removeNs('alpha-a');
  }, 60_000);

  it('2. first packet: an app started right after ADD never sends plaintext to a project pod, and reaches it once the peer is known', async () => {
    await firstPacket(
      'alpha-c',
      '10.128.1.50',
      () => {
        const add = chain('ADD', 'alpha-c', '10.128.1.50');
        expect(add.status, add.stderr).toBe(0);
      },
      () => expect(chain('DEL', 'alpha-c', '10.128.1.50').status).toBe(0),
    );
  }, 60_000);

  it('2b. unchained (Multus: the default network first, then tenc alone, net1, no prevResult): registered with the address found in the netns, fail-closed and protected as in 2', async () => {
    const conf = join(STATE, 'cni', 'node1.conflist');
    const orig = readFileSync(conf, 'utf8');
    // the pod's default network (OpenShift: OVN-Kubernetes through Multus' 00-multus.conf): the node's chain without tenc
    const list = JSON.parse(orig);
    writeFileSync(conf, JSON.stringify({ ...list, plugins: list.plugins.filter((p: { type: string }) => p.type !== 'tenc') }));
    // deploy/openshift/nad.yaml's config, as Multus hands it to the plugin (the agent's socket and a test's timeout added)
    const nad = JSON.stringify({ cniVersion: '0.4.0', name: 'tenc', type: 'tenc', unchained: true, agentSocket: agentSock, timeoutMs: 15_000 });
    const multus = (cmd: string, pod: string) => ({
      CNI_COMMAND: cmd,
      CNI_CONTAINERID: `${PREFIX}-${pod}`,
      CNI_NETNS: `/run/netns/${nsName(pod)}`,
      CNI_IFNAME: 'net1',
      CNI_ARGS: `IgnoreUnknown=true;K8S_POD_NAMESPACE=alpha;K8S_POD_NAME=${pod};K8S_POD_UID=${PREFIX}-${pod}`,
    });
    const empty = { cniVersion: '0.4.0', interfaces: [], ips: [], routes: [], dns: {} };
    try {
      // a netns whose default network is not there (yet): code 11 (the runtime retries) naming it, nothing registered
      makeNs('alpha-v');
      const early = plugin(multus('ADD', 'alpha-v'), nad);
      expect(early.status).toBe(1);
      expect(early.out).toMatchObject({ cniVersion: '0.4.0', code: 11 });
      expect(early.out.msg).toBe(`tenc agent: netns /run/netns/${nsName('alpha-v')}: no pod address (no IPv4 default route; no IPv6 default route): is the pod's network set up?`);
      expect(registrations().map((r) => r.podName)).toEqual(['alpha-srv']);
      expect(proxies('alpha-v')).toEqual([]);
      expect(plugin(multus('DEL', 'alpha-v'), nad).status).toBe(0); // the runtime's DEL of the failed sandbox
      removeNs('alpha-v');

      await firstPacket(
        'alpha-u',
        '10.128.1.51',
        () => {
          const def = chain('ADD', 'alpha-u', '10.128.1.51');
          expect(def.status, def.stderr).toBe(0);
          expect(JSON.parse(def.stdout).ips[0].address).toBe('10.128.1.51/24');
          const add = plugin(multus('ADD', 'alpha-u'), nad);
          expect(add.status, JSON.stringify(add.out)).toBe(0);
          expect(add.out).toEqual(empty);
          expect(registrations().find((r) => r.podName === 'alpha-u')).toMatchObject({ containerId: `${PREFIX}-alpha-u`, ifname: 'net1', addresses: ['10.128.1.51'] });
          expect(agentLog()).toMatch(/"pod":"alpha\/alpha-u".*"addresses":\["10\.128\.1\.51"\].*ADD without addresses \(unchained\)/);
        },
        () => {
          // CHECK with what libcni cached of the ADD (the empty result)
          const check = plugin(multus('CHECK', 'alpha-u'), JSON.stringify({ ...JSON.parse(nad), prevResult: empty }));
          expect([check.status, check.out]).toEqual([0, null]);
          expect(proxies('alpha-u')).toHaveLength(1);
          // DEL: Multus' extra attachments first, then the default network
          expect(plugin(multus('DEL', 'alpha-u'), nad).status).toBe(0);
          expect(proxies('alpha-u')).toEqual([]);
          const n = Netns.attach(nsName('alpha-u'));
          expect(n.exec('nft', 'list', 'ruleset')).toBe('');
          expect(n.ip('rule', 'show')).not.toContain('52100');
          expect(chain('DEL', 'alpha-u', '10.128.1.51').status).toBe(0);
          expect(registrations().map((r) => r.podName)).toEqual(['alpha-srv']);
        },
      );
    } finally {
      writeFileSync(conf, orig);
      removeNs('alpha-v');
    }
  }, 60_000);

  it('2c. podAddressesIn with the real ip: the global addresses of the default routes\' interface, one per family, IPv4 first', async () => {
    const ns = Netns.create('addrs');
    try {
      const path = `/run/netns/${ns.name}`;
      // two interfaces with a carrier: veth pairs inside the namespace
      for (const d of ['d0', 'd1']) {
        ns.ip('link', 'add', d, 'type', 'veth', 'peer', 'name', `${d}p`);
        for (const l of [d, `${d}p`]) ns.ip('link', 'set', l, 'up');
      }
      ns.addAddresses('d1', ['192.0.2.9/24', 'fd00:99::9/64']); // global, but no default route through it
      ns.addAddresses('d0', ['10.9.0.5/24', '10.9.0.6/24', 'fd00:9::5/64']);
      await expect(podAddressesIn(path)).rejects.toThrow(new PodAddressError(`netns ${path}: no pod address (no IPv4 default route; no IPv6 default route): is the pod's network set up?`));
      ns.ip('-6', 'route', 'add', 'default', 'via', 'fd00:9::1', 'dev', 'd0');
      expect(await podAddressesIn(path)).toEqual(['fd00:9::5']);
      ns.ip('route', 'add', 'default', 'via', '10.9.0.1', 'dev', 'd0');
      expect(await podAddressesIn(path)).toEqual(['10.9.0.5', 'fd00:9::5']);
      // two IPv4 defaults: the one the kernel takes (the lower metric) names the interface
      ns.ip('route', 'add', 'default', 'via', '192.0.2.1', 'dev', 'd1', 'metric', '10');
      expect(await podAddressesIn(path)).toEqual(['10.9.0.5', 'fd00:9::5']);
      ns.ip('route', 'del', 'default', 'via', '10.9.0.1', 'dev', 'd0');
      ns.ip('route', 'add', 'default', 'via', '10.9.0.1', 'dev', 'd0', 'metric', '20');
      expect(await podAddressesIn(path)).toEqual(['192.0.2.9', 'fd00:9::5']);
      expect(ns.ip('route', 'get', '10.200.0.1')).toContain('dev d1');
      await expect(podAddressesIn('/run/netns/tenc-no-such-netns')).rejects.toThrow(/^netns \/run\/netns\/tenc-no-such-netns: cannot read the pod's addresses: /);
    } finally {
      ns.destroy();
    }
  });

  it('3. agent down during ADD: code 11, retry after it is back works; agent killed between ADD and DEL: DEL cleans up', async () => {
    expect(cluster('agent-stop').status).toBe(0);
    makeNs('alpha-d');
    const failed = chain('ADD', 'alpha-d', '10.128.1.60');
    expect(failed.status).not.toBe(0);
    expect(failed.stderr).toMatch(/"code":11/);
    expect(proxies('alpha-d')).toEqual([]);
    expect(cluster('agent-start').status).toBe(0);
    // the runtime: DEL of the failed sandbox, then ADD again
    expect(chain('DEL', 'alpha-d', '10.128.1.60').status).toBe(0);
    const retry = chain('ADD', 'alpha-d', '10.128.1.60');
    expect(retry.status, retry.stderr).toBe(0);
    expect(chain('CHECK', 'alpha-d', '10.128.1.60').status).toBe(0); // the proxy runs (and its pid is saved)
    expect(proxies('alpha-d')).toHaveLength(1);
    // kill -9 the agent, start a new one: it adopts, DEL stops the proxy and cleans
    process.kill(agentPid(), 'SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    expect(cluster('agent-start').status).toBe(0);
    const del = chain('DEL', 'alpha-d', '10.128.1.60');
    expect(del.status, del.stderr).toBe(0);
    expect(proxies('alpha-d')).toEqual([]);
    const n = Netns.attach(nsName('alpha-d'));
    expect(n.exec('nft', 'list', 'ruleset')).toBe('');
    expect(n.ip('rule', 'show')).not.toContain('52100');
    expect(registrations().map((r) => r.podName)).toEqual(['alpha-srv']);
    removeNs('alpha-d');

    // killed while the proxy starts (right after ADD returned): the next agent still stops it at DEL
    makeNs('alpha-e');
    const add = chain('ADD', 'alpha-e', '10.128.1.61');
    expect(add.status, add.stderr).toBe(0);
    await until('proxy of alpha-e spawned', () => proxies('alpha-e').length === 1, 5000);
    process.kill(agentPid(), 'SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    expect(cluster('agent-start').status).toBe(0);
    expect(chain('DEL', 'alpha-e', '10.128.1.61').status).toBe(0);
    expect(proxies('alpha-e')).toEqual([]);
    removeNs('alpha-e');
    // nothing of this test left: one proxy (the cluster file's alpha-srv), no pod netns
    const left = clusterProxies();
    expect(left, left.map((p) => `${p}: ${describeProcess(p)}`).join('; ')).toHaveLength(1);
    expect(sh('ip', ['netns', 'list']).split('\n').filter((l) => /^cq-alpha-[de]\b/.test(l))).toEqual([]);
  }, 60_000);

  it('4. 50 pods ADD/DEL in a loop: no leaked namespace, process, socket, route, nft table or state; agent RSS bounded', async () => {
    const snap = () => ({
      netns: sh('ip', ['netns', 'list']).split('\n').filter((l) => l.startsWith(`${PREFIX}-l`)).length,
      sockets: readdirSync('/run/tenc').length,
      nodeLinks: sh('ip', ['-n', NODE, '-o', 'link']).split('\n').length,
      nodeRoutes: sh('ip', ['-n', NODE, 'route']),
      nodeNft: sh('ip', ['netns', 'exec', NODE, 'nft', 'list', 'tables']),
      ipam: readdirSync(join(STATE, 'cni', 'ipam'), { recursive: true }).length,
      regs: registrations().length,
      // a standby's and a pod host's own logs come and go with them (agent/standby.ts, agent/host.ts)
      runFiles: readdirSync(join(STATE, 'agents', 'node1.run', 'alpha')).filter((f) => !f.startsWith('.standby-') && !f.startsWith('.host-')).length,
      proxies: processesUnder(`${STATE}/agents/node1.run`, { proxiesOnly: true }).length,
    });
    const round = async (from: number, n: number) => {
      const names = Array.from({ length: n }, (_, i) => [`l${from + i}`, `10.128.1.${100 + ((from + i) % 10)}`]);
      for (const [p] of names) makeNs(p);
      const adds = await Promise.all(names.map(([p, a]) => chainAsync('ADD', p, a)));
      expect(adds).toEqual(names.map(() => 0));
      const dels = await Promise.all(names.map(([p, a]) => chainAsync('DEL', p, a)));
      expect(dels).toEqual(names.map(() => 0));
      for (const [p] of names) removeNs(p);
    };
    const before = snap();
    await round(0, 5); // warm-up
    const rss0 = rssKiB(agentPid());
    for (let i = 5; i < 50; i += 5) await round(i, 5);
    const rss1 = rssKiB(agentPid());
    expect(snap()).toEqual(before);
    // flat: less than 16 MiB over 45 pods (a leak of a proxy's state would be far more)
    expect(rss1 - rss0).toBeLessThan(16 * 1024);
    console.log(`agent RSS after 5 pods ${rss0} KiB, after 50 ${rss1} KiB`);
  }, 300_000);

  it('5. cluster.sh down: no agent, no proxy, no netns of the cluster left', () => {
    expect(clusterProcesses().length).toBeGreaterThan(0); // the check sees them while the cluster runs
    expect(cluster('down').status).toBe(0);
    expect(clusterProcesses()).toEqual([]);
    expect(sh('ip', ['netns', 'list']).split('\n').filter((l) => l.startsWith(`${PREFIX}-`))).toEqual([]);
  }, 60_000);
});
