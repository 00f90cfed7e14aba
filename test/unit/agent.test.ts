/**
 * The agent's decisions (pure): which peers and services each pod gets from one
 * registry view, and the control requests that move a pod from what was applied to
 * what is wanted (removals first). Plus the cluster file's validation table and the
 * enforcement rules' text.
 */
import { describe, it, expect } from 'vitest';
import { desiredState, peerChanges, type DesiredPeer } from '../../src/agent/desired.js';
import { processAlive } from '../../src/agent/proxies.js';
import { podResolvConf } from '../../src/agent/netns.js';
import type { PodInfo, ProjectView } from '../../src/registry/registry.js';
import { validateCluster, kubeProxyRules, dnsHosts, ClusterConfigError } from '../../src/agent/cluster-config.js';
import { plan } from '../../src/agent/cluster-tool.js';
import { installScript, tableName } from '../../src/routing/enforce.js';

const pod = (name: string, node: string, address: string, app: string): PodInfo => ({
  project: 'alpha',
  name,
  node,
  address,
  addresses: [address],
  labels: { app },
  netns: `/run/netns/${name}`,
});
const key = (c: string) => c.repeat(43) + '=';

const pods = [pod('web-1', 'n1', '10.128.1.10', 'web'), pod('web-2', 'n2', '10.128.2.10', 'web'), pod('cli', 'n1', '10.128.1.11', 'cli'), pod('db', 'n2', '10.128.2.20', 'db')];
const view: ProjectView = {
  pods,
  services: [
    { project: 'alpha', name: 'web', vip: '10.96.1.10', ports: [{ protocol: 'tcp', port: 80 }], selector: { app: 'web' } },
    { project: 'alpha', name: 'db', vip: '10.96.1.20', ports: [], selector: { app: 'db' } },
  ],
  endpoints: [
    { project: 'alpha', service: 'web', pods: [{ name: 'web-1', address: '10.128.1.10', node: 'n1' }, { name: 'web-2', address: '10.128.2.10', node: 'n2' }] },
    { project: 'alpha', service: 'db', pods: [{ name: 'db', address: '10.128.2.20', node: 'n2' }] },
  ],
  peers: [
    { project: 'alpha', pod: 'web-1', node: 'n1', publicKey: key('A'), endpoint: '10.128.1.10:51820' },
    { project: 'alpha', pod: 'web-2', node: 'n2', publicKey: key('B'), endpoint: '10.128.2.10:51820' },
    { project: 'alpha', pod: 'cli', node: 'n1', publicKey: key('C'), endpoint: '10.128.1.11:51820' },
    { project: 'alpha', pod: 'db', node: 'n2', publicKey: key('D'), endpoint: '10.128.2.20:51820' },
    // a key left by a pod that is gone: ignored
    { project: 'alpha', pod: 'old', node: 'n2', publicKey: key('E'), endpoint: '10.128.2.99:51820' },
  ],
};

describe('agent: desired state', () => {
  it('every other keyed pod is a peer; each VIP goes to exactly one endpoint; endpoints serve their VIPs', () => {
    const cli = desiredState(view, pods[2]);
    expect(cli.peers.map((p) => p.publicKey).sort()).toEqual([key('A'), key('B'), key('D')]);
    const vipOwners = cli.peers.filter((p) => p.allowedIps.includes('10.96.1.10/32'));
    expect(vipOwners).toHaveLength(1);
    expect(cli.peers.find((p) => p.publicKey === key('D'))!.allowedIps).toEqual(['10.128.2.20/32', '10.96.1.20/32']);
    expect(cli.services).toEqual([]);
    const db = desiredState(view, pods[3]);
    expect(db.services).toEqual([{ vip: '10.96.1.20', ports: [] }]);
    expect(db.peers.some((p) => p.allowedIps.includes('10.96.1.20/32'))).toBe(false); // never its own VIP
    expect(db.peers.every((p) => p.publicKey !== key('E'))).toBe(true);
  });

  it('gives the DNS proxy each VIP\'s keyed endpoints', () => {
    expect(desiredState(view, pods[2]).endpoints).toEqual([
      { vip: '10.96.1.10', addresses: ['10.128.1.10', '10.128.2.10'] },
      { vip: '10.96.1.20', addresses: ['10.128.2.20'] },
    ]);
    const v = { ...view, peers: view.peers.filter((k) => k.pod !== 'db' && k.pod !== 'web-2') };
    expect(desiredState(v, pods[2]).endpoints).toEqual([{ vip: '10.96.1.10', addresses: ['10.128.1.10'] }]);
  });

  it('gives the DNS proxy every project pod and VIP as members, keyed or not', () => {
    const v = { ...view, peers: view.peers.filter((k) => k.pod !== 'db') };
    expect(desiredState(v, pods[2]).members).toEqual(['10.128.1.10/32', '10.128.1.11/32', '10.128.2.10/32', '10.128.2.20/32', '10.96.1.10/32', '10.96.1.20/32']);
  });

  it('an endpoint without a published key is not routed to; the pod itself is never its own peer', () => {
    const v = { ...view, peers: view.peers.filter((k) => k.pod !== 'db') };
    const cli = desiredState(v, pods[2]);
    expect(cli.peers.some((p) => p.allowedIps.includes('10.96.1.20/32'))).toBe(false);
    expect(desiredState(view, pods[0]).peers.map((p) => p.publicKey)).not.toContain(key('A'));
  });

  it('the same view gives the same answer (the VIP choice is stable)', () => {
    expect(desiredState(view, pods[2])).toEqual(desiredState(structuredClone(view), pods[2]));
  });
});

describe('agent: helpers', () => {
  it('processAlive: this process yes, a reaped child no', async () => {
    expect(processAlive(process.pid)).toBe(true);
    const { spawnSync } = await import('node:child_process');
    const r = spawnSync('true');
    expect(processAlive(r.pid!)).toBe(false);
  });
  it('podResolvConf: only for /run/netns/NAME with an /etc/netns/NAME/resolv.conf', () => {
    expect(podResolvConf('/proc/1/ns/net')).toBe(null);
    expect(podResolvConf('/run/netns/tenc-no-such-netns-here')).toBe(null);
  });
});

describe('agent: peer changes', () => {
  const d = (k: string, ips: string[]): DesiredPeer => ({ publicKey: key(k), endpoint: '10.0.0.1:51820', allowedIps: ips });
  it('removes unknown keys first, sets new and changed peers, leaves equal ones alone', () => {
    const applied = new Map([
      [key('A'), JSON.stringify(d('A', ['10.128.1.10/32']))],
      [key('B'), JSON.stringify(d('B', ['10.128.2.10/32']))],
      [key('E'), JSON.stringify(d('E', ['10.128.2.99/32']))],
    ]);
    const r = peerChanges(applied, [d('A', ['10.128.1.10/32']), d('B', ['10.128.2.10/32', '10.96.1.10/32']), d('F', ['10.128.2.99/32'])]);
    expect(r.remove).toEqual([key('E')]);
    expect(r.set.map((p) => p.publicKey)).toEqual([key('B'), key('F')]);
  });
});

describe('cluster file', () => {
  const base = {
    dns: '10.96.0.10',
    nodes: [{ name: 'node1', podCidr: '10.128.1.0/24' }],
    projects: [{ name: 'alpha' }],
    pods: [{ name: 'p1', project: 'alpha', node: 'node1', address: '10.128.1.10', labels: { app: 'web' } }],
    services: [{ name: 'web', project: 'alpha', vip: '10.96.1.10', ports: [{ protocol: 'tcp', port: 80 }], selector: { app: 'web' } }],
  };
  const cases: [string, (c: any) => void, string][] = [
    ['unknown node', (c) => (c.pods[0].node = 'node9'), 'pods[0].node: "node9" is not a node in "nodes"'],
    ['address outside podCidr', (c) => (c.pods[0].address = '10.128.2.10'), "pods[0].address: 10.128.2.10 is not inside node node1's podCidr 10.128.1.0/24"],
    ['gateway address', (c) => (c.pods[0].address = '10.128.1.1'), 'pods[0].address: 10.128.1.1 is reserved'],
    ['not 10/8', (c) => (c.nodes[0].podCidr = '192.168.1.0/24'), 'nodes[0].podCidr: 192.168.1.0/24 is not inside 10.0.0.0/8'],
    ['host bits', (c) => (c.nodes[0].podCidr = '10.128.1.1/24'), 'nodes[0].podCidr: "10.128.1.1/24" has host bits set'],
    ['vip outside serviceCidr', (c) => (c.services[0].vip = '10.97.0.1'), 'services[0].vip: 10.97.0.1 is not inside serviceCidr 10.96.0.0/16'],
    ['vip = dns', (c) => (c.services[0].vip = '10.96.0.10'), 'services[0].vip: 10.96.0.10 is also used by dns'],
    ['bad port', (c) => (c.services[0].ports[0].port = 70000), 'services[0].ports[0].port: 70000 is not a port'],
    ['no selector', (c) => delete c.services[0].selector, 'services[0].selector: is required'],
    ['unknown field', (c) => (c.pods[0].ip = 'x'), 'pods[0].ip: unknown field'],
    ['bad name', (c) => (c.pods[0].name = 'P_1'), 'pods[0].name: "P_1" is not a name'],
    ['reserved name', (c) => (c.pods[0].name = 'infra'), 'pods[0].name: "infra" is reserved'],
    ['duplicate address', (c) => c.pods.push({ ...c.pods[0], name: 'p2' }), 'pods[1].address: 10.128.1.10 is also the address of pods[0]'],
    ['missing dns', (c) => delete c.dns, 'dns: is required'],
    ['unknown project', (c) => (c.services[0].project = 'gamma'), 'services[0].project: "gamma" is not a project'],
  ];
  for (const [name, mutate, message] of cases) {
    it(`rejects: ${name}`, () => {
      const c = structuredClone(base);
      mutate(c);
      let err: unknown;
      try {
        validateCluster(c, 'c.json');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ClusterConfigError);
      expect((err as Error).message).toContain(`c.json: ${message}`);
    });
  }

  it('derives the plan, the kube-proxy DNAT and the DNS records', () => {
    const c = validateCluster({ ...base, pods: [...base.pods, { name: 'p2', project: 'alpha', node: 'node1', address: '10.128.1.11', labels: { app: 'web' } }] }, 'c.json');
    expect(plan(c, 'tc')).toContain('pod p1 tc-p1 tc-n-node1 v0a80010a 10.128.1.10/24 10.128.1.1 alpha 10.96.0.10');
    expect(kubeProxyRules(c, 't')).toContain('ip daddr 10.96.1.10 tcp dport 80 dnat ip to numgen random mod 2 map { 0 : 10.128.1.10, 1 : 10.128.1.11 }');
    expect(dnsHosts(c)).toContain('10.96.1.10 web.alpha.svc.cluster.local\n');
  });
});

describe('enforcement rules', () => {
  it('accept tenc0, lo and the tenc port; drop and count project sources', () => {
    const s = installScript({ ifname: 'tenc0', listenPort: 51820, fwmark: 0xcb84, input: true }, { project: ['10.128.1.10/32', 'fd00::1/128'], classify: [] });
    expect(s).toContain('iifname { "tenc0", "lo" } accept');
    expect(s).toContain('udp dport 51820 accept');
    expect(s).toContain('ip saddr @project4 counter name plaintext_from_project drop');
    expect(s).toContain('add element inet tenc_tenc0 project4 { 10.128.1.10/32 }');
    expect(s).toContain('add element inet tenc_tenc0 project6 { fd00::1/128 }');
    expect(tableName('my-if.0')).toBe('tenc_my_if_0');
    expect(() => tableName('')).toThrow(RangeError);
    expect(() => tableName(3 as unknown as string)).toThrow(TypeError);
  });
});
