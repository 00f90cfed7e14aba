/**
 * Dual stack and IPv6 in the local cluster (issue 15 part 2), pure parts: the cluster
 * file's families and their validation table, the plan lines cluster.sh builds IPv6
 * from, the kube-proxy rules and DNS records of both families, the conflist's two
 * host-local ranges and runtimeConfig.ips, the registry objects (podIPs, clusterIPs,
 * one EndpointSlice per family) read back, and the agent's desired state for
 * dual-stack pods and services.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClusterConfigError, clusterFamilies, dnsHosts, kubeProxyRules, validateCluster } from '../../src/agent/cluster-config.js';
import { bigToIp6, ip6ToBig } from '../../src/agent/cluster-ip6.js';
import { classifyCidrs, conflist, plan, runChain, syncRegistry } from '../../src/agent/cluster-tool.js';
import { desiredState } from '../../src/agent/desired.js';
import { DirectoryRegistry } from '../../src/registry/dir.js';
import { readProjectView, type PodInfo, type ServiceInfo } from '../../src/registry/registry.js';
import { serviceFromObject } from '../../src/registry/objects.js';

const root = join(import.meta.dirname, '..', '..');
const dual = {
  dns: '10.96.0.10',
  dns6: 'fd00:96::a',
  nodes: [
    { name: 'node1', podCidr: '10.128.1.0/24', podCidr6: 'fd00:128:1::/64' },
    { name: 'node2', podCidr: '10.128.2.0/24', podCidr6: 'fd00:128:2::/64' },
  ],
  projects: [{ name: 'alpha' }],
  pods: [
    { name: 'p1', project: 'alpha', node: 'node1', address: '10.128.1.10', labels: { app: 'web' } },
    { name: 'p2', project: 'alpha', node: 'node2', address: '10.128.2.10', address6: 'fd00:128:2::99', labels: { app: 'web' } },
    { name: 'c1', project: 'alpha', node: 'node1', address: '10.128.1.11', labels: { app: 'cli' } },
  ],
  services: [{ name: 'web', project: 'alpha', ipFamilies: ['IPv4', 'IPv6'], vip: '10.96.1.10', vip6: 'fd00:96::1:10', ports: [{ protocol: 'tcp', port: 80 }], selector: { app: 'web' } }],
};
const v6only = {
  serviceCidr: 'fd00:96::/108',
  dns: 'fd00:96::a',
  nodes: [{ name: 'node1', podCidr: 'fd00:128:1::/64' }],
  projects: [{ name: 'alpha' }],
  pods: [{ name: 'p1', project: 'alpha', node: 'node1', address: 'fd00:128:1::a', labels: { app: 'web' } }],
  services: [{ name: 'web', project: 'alpha', vip: 'fd00:96::1:10', ports: [{ protocol: 'tcp', port: 80 }], selector: { app: 'web' } }],
};

function problem(c: unknown): string {
  try {
    validateCluster(c, 'c.json');
  } catch (e) {
    expect(e).toBeInstanceOf(ClusterConfigError);
    return (e as Error).message;
  }
  return '(accepted)';
}

describe('IPv6 text', () => {
  it('parses and prints canonical addresses (RFC 5952)', () => {
    expect(bigToIp6(ip6ToBig('FD00:0128:0001:0000:0000:0000:0000:000A')!)).toBe('fd00:128:1::a');
    expect(bigToIp6(ip6ToBig('fd00:0:0:1::')!)).toBe('fd00:0:0:1::');
    expect(bigToIp6(ip6ToBig('fd00:1:0:1:0:1:0:1')!)).toBe('fd00:1:0:1:0:1:0:1');
    expect(ip6ToBig('fd00::1::2')).toBe(null);
    expect(ip6ToBig('::ffff:10.0.0.1')).toBe(null);
    expect(ip6ToBig('10.0.0.1')).toBe(null);
  });
});

describe('cluster file: families', () => {
  it('a dual-stack file: both families, IPv4 primary; address6 defaults to the IPv4 offset in podCidr6', () => {
    const c = validateCluster(dual, 'c.json');
    expect(clusterFamilies(c)).toEqual([4, 6]);
    expect(c.serviceCidr6).toBe('fd00:96::/108');
    expect(c.external6).toBe('fd00:250::1');
    expect(c.pods.map((p) => [p.address, p.address6])).toEqual([
      ['10.128.1.10', 'fd00:128:1::a'],
      ['10.128.2.10', 'fd00:128:2::99'],
      ['10.128.1.11', 'fd00:128:1::b'],
    ]);
    // the saved state validates again to itself (cluster-tool reloads it)
    expect(validateCluster(JSON.parse(JSON.stringify(c)), 's.json')).toEqual(c);
  });

  it('an IPv6-only file: IPv6 everywhere but the IPv4 underlay and overlay', () => {
    const c = validateCluster(v6only, 'c.json');
    expect(clusterFamilies(c)).toEqual([6]);
    expect([c.external, c.underlay, c.overlay]).toEqual(['fd00:250::1', '10.200.0.0/24', '10.201.0.0/24']);
    expect(validateCluster(JSON.parse(JSON.stringify(c)), 's.json')).toEqual(c);
  });

  it('the example files are valid: IPv4, dual-stack, IPv6-only', () => {
    for (const [f, fams] of [['cluster-example.json', [4]], ['cluster-example-dual.json', [4, 6]], ['cluster-example-ipv6.json', [6]]] as const) {
      const file = join(root, 'netns-scripts', f);
      expect(clusterFamilies(validateCluster(JSON.parse(readFileSync(file, 'utf8')), file)), f).toEqual(fams);
    }
  });

  const cases: [string, unknown, (c: any) => void, string][] = [
    ['IPv6 outside fd00::/8', dual, (c) => (c.nodes[0].podCidr6 = 'fc00:1::/64'), 'nodes[0].podCidr6: fc00:1::/64 is not inside fd00::/8'],
    ['IPv4 in podCidr6', dual, (c) => (c.nodes[0].podCidr6 = '10.129.1.0/24'), 'nodes[0].podCidr6: 10.129.1.0/24 is an IPv4 CIDR, but nodes[0].podCidr6 takes IPv6 here'],
    ['a node without podCidr6', dual, (c) => delete c.nodes[1].podCidr6, 'nodes[1].podCidr6: is required: the cluster is dual-stack'],
    ['mixed primary families', dual, (c) => (c.nodes[1].podCidr = 'fd00:128:9::/64'), 'nodes[1].podCidr: fd00:128:9::/64 is IPv6, but nodes[0].podCidr is IPv4'],
    ['overlapping IPv6 pod ranges', dual, (c) => (c.nodes[1].podCidr6 = 'fd00:128:1::/64'), 'nodes[1].podCidr6: overlaps nodes[0].podCidr6'],
    ['podCidr6 too small', dual, (c) => (c.nodes[0].podCidr6 = 'fd00:128:1::/124'), 'nodes[0].podCidr6: fd00:128:1::/124 is too small (at most /120)'],
    ['host bits', dual, (c) => (c.nodes[0].podCidr6 = 'fd00:128:1::1/64'), 'nodes[0].podCidr6: "fd00:128:1::1/64" has host bits set'],
    ['dns6 missing', dual, (c) => delete c.dns6, 'dns6: is required'],
    ['dns6 outside serviceCidr6', dual, (c) => (c.dns6 = 'fd00:97::a'), 'dns6: fd00:97::a is not inside serviceCidr6 fd00:96::/108'],
    ['address6 outside the node range', dual, (c) => (c.pods[0].address6 = 'fd00:128:2::5'), "pods[0].address6: fd00:128:2::5 is not inside node node1's podCidr6 fd00:128:1::/64"],
    ['address6 = gateway', dual, (c) => (c.pods[0].address6 = 'fd00:128:1::1'), 'pods[0].address6: fd00:128:1::1 is reserved (network, gateway fd00:128:1::1)'],
    ['duplicate address6', dual, (c) => (c.pods[2].address6 = 'fd00:128:1::a'), 'pods[2].address6: fd00:128:1::a is also the address of pods[0]'],
    ['not an address', dual, (c) => (c.pods[0].address6 = 'fd00:128:1::g'), 'pods[0].address6: "fd00:128:1::g" is not an IPv6 address'],
    ['vip6 missing', dual, (c) => delete c.services[0].vip6, 'services[0].vip6: is required: ipFamilies lists IPv6'],
    ['vip6 without IPv6 in ipFamilies', dual, (c) => (c.services[0].ipFamilies = ['IPv4']), 'services[0].vip6: is set, but ipFamilies does not list IPv6'],
    ['bad ipFamilies', dual, (c) => (c.services[0].ipFamilies = ['IPv4', 'IPv4']), 'services[0].ipFamilies: ["IPv4","IPv4"] is not ["IPv4"], ["IPv6"], ["IPv4", "IPv6"] or ["IPv6", "IPv4"]'],
    ['vip6 = dns6', dual, (c) => (c.services[0].vip6 = 'fd00:96::a'), 'services[0].vip6: fd00:96::a is also used by dns6'],
    ['reserved slice suffix', dual, (c) => (c.services[0].name = 'web-ipv6'), 'services[0].name: "web-ipv6" ends in "-ipv6"'],
    ['external6 inside a pod range', dual, (c) => (c.external6 = 'fd00:128:1::77'), 'external6: fd00:128:1::77 is inside nodes[0].podCidr6'],
    ['dns6 in a single-stack cluster', v6only, (c) => (c.dns6 = 'fd00:96::b'), 'dns6: is only for a dual-stack cluster'],
    ['podCidr6 in an IPv6-only cluster', v6only, (c) => (c.nodes[0].podCidr6 = 'fd00:129::/64'), 'nodes[0].podCidr6: is only for a dual-stack cluster'],
    ['IPv4 address in an IPv6-only cluster', v6only, (c) => (c.pods[0].address = '10.128.1.10'), 'pods[0].address: 10.128.1.10 is an IPv4 address, but pods[0].address takes IPv6 here'],
    ['IPv4 ipFamilies in an IPv6-only cluster', v6only, (c) => (c.services[0].ipFamilies = ['IPv4']), 'services[0].ipFamilies: lists IPv4, which the cluster does not have'],
    ['IPv4 serviceCidr in an IPv6-only cluster', v6only, (c) => (c.serviceCidr = '10.96.0.0/16'), 'serviceCidr: 10.96.0.0/16 is an IPv4 CIDR, but serviceCidr takes IPv6 here'],
    ['IPv6 underlay', v6only, (c) => (c.underlay = 'fd00:200::/64'), 'underlay: fd00:200::/64 is an IPv6 CIDR, but underlay takes IPv4 here'],
  ];
  for (const [name, base, mutate, message] of cases) {
    it(`rejects: ${name}`, () => {
      const c = structuredClone(base);
      mutate(c);
      expect(problem(c)).toContain(`c.json: ${message}`);
    });
  }
});

describe('cluster file: what it derives for both families', () => {
  const c = validateCluster(dual, 'c.json');

  it('plan: IPv6 over the IPv4 underlay with link-local next hops; pods get both addresses and DNS servers', () => {
    const lines = plan(c, 'tc');
    expect(lines).toContain('infra6 tc-infra fe80::ffff fd00:96::a fd00:250::1');
    expect(lines).toContain('node6 tc-n-node1 fe80::1 fd00:128:1::1/64 fe80::ffff');
    expect(lines).toContain('vxlan-peer6 tc-n-node1 fe80::2 02:00:0a:00:00:02 fd00:128:2::/64');
    expect(lines).toContain('infra-route6 fd00:128:2::/64 fe80::2');
    expect(lines).toContain('pod p1 tc-p1 tc-n-node1 v0a80010a 10.128.1.10/24 10.128.1.1 alpha 10.96.0.10 fd00:128:1::a/64 fd00:128:1::1 fd00:96::a');
    // an IPv6-only cluster: no IPv4 pod routes over the overlay
    const six = plan(validateCluster(v6only, 'c.json'), 'tc');
    expect(six.filter((l) => l.startsWith('infra-route '))).toEqual([]);
    expect(six).toContain('node node1 tc-n-node1 n1 10.200.0.1/24 10.201.0.1/24 02:00:0a:00:00:01 fd00:128:1::/64 fd00:128:1::1/64 10.200.0.254');
  });

  it('kube-proxy: one inet table, each VIP DNATed to the endpoints of its family', () => {
    const r = kubeProxyRules(c, 't');
    expect(r).toContain('table inet t {');
    expect(r).toContain('ip daddr 10.96.1.10 tcp dport 80 dnat ip to numgen random mod 2 map { 0 : 10.128.1.10, 1 : 10.128.2.10 }');
    expect(r).toContain('ip6 daddr fd00:96::1:10 tcp dport 80 dnat ip6 to numgen random mod 2 map { 0 : fd00:128:1::a, 1 : fd00:128:2::99 }');
  });

  it('DNS: AAAA records for VIPs and pods (PTRs follow from them), pod names with "-" for ":"', () => {
    const h = dnsHosts(c);
    expect(h).toContain('fd00:96::1:10 web.alpha.svc.cluster.local\n');
    expect(h).toContain('10.96.1.10 web.alpha.svc.cluster.local\n');
    expect(h).toContain('fd00:128:2::99 fd00-128-2--99.alpha.pod.cluster.local\n');
  });

  it('classification ranges and the conflist cover both families', () => {
    expect(classifyCidrs(c)).toEqual(['10.128.1.0/24', '10.128.2.0/24', '10.96.0.0/16', 'fd00:128:1::/64', 'fd00:128:2::/64', 'fd00:96::/108']);
    const bridge = (conflist(c, '/s', 'node1') as { plugins: Record<string, any>[] }).plugins[0];
    expect(bridge.capabilities).toEqual({ ips: true });
    expect(bridge.ipam.ranges).toEqual([[{ subnet: '10.128.1.0/24', gateway: '10.128.1.1' }], [{ subnet: 'fd00:128:1::/64', gateway: 'fd00:128:1::1' }]]);
    expect(bridge.ipam.routes).toEqual([{ dst: '0.0.0.0/0' }, { dst: '::/0' }]);
  });

  it('runChain hands runtimeConfig only to plugins that declare the capability', () => {
    const d = mkdtempSync(join(tmpdir(), 'tenc-chain-'));
    try {
      // two "plugins" that print their stdin as the result
      const bin = join(d, 'echo-conf');
      writeFileSync(bin, '#!/bin/sh\ncat\n', { mode: 0o700 });
      const list = { cniVersion: '1.0.0', name: 'x', plugins: [{ type: 'echo-conf', capabilities: { ips: true } }, { type: 'echo-conf', n: 2 }] };
      const r = runChain('ADD', list, {}, [d], undefined, { ips: ['10.128.1.10/24', 'fd00:128:1::a/64'] });
      expect(r.ok).toBe(true);
      const last = (r as { result: any }).result;
      expect(last.runtimeConfig).toBeUndefined(); // the second plugin declares nothing
      expect(last.prevResult.runtimeConfig).toEqual({ ips: ['10.128.1.10/24', 'fd00:128:1::a/64'] });
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});

describe('registry objects of a dual-stack cluster', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'tenc-reg6-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('pods carry podIPs, services clusterIPs and ipFamilies, endpoints one slice per family; read back merged', async () => {
    const reg = new DirectoryRegistry(dir, { rescanMs: 100 });
    syncRegistry(validateCluster(dual, 'c.json'), reg, '/run/psk', 'tc');
    const svc = JSON.parse(readFileSync(join(dir, 'services', 'alpha', 'web.json'), 'utf8'));
    expect(svc.spec).toMatchObject({ clusterIP: '10.96.1.10', clusterIPs: ['10.96.1.10', 'fd00:96::1:10'], ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'RequireDualStack' });
    const s6 = JSON.parse(readFileSync(join(dir, 'endpointslices', 'alpha', 'web-ipv6.json'), 'utf8'));
    expect(s6.addressType).toBe('IPv6');
    expect(s6.endpoints.map((e: { addresses: string[] }) => e.addresses[0])).toEqual(['fd00:128:1::a', 'fd00:128:2::99']);
    const v = await readProjectView(reg, 'alpha');
    expect(v.pods.find((p) => p.name === 'p1')!.addresses).toEqual(['10.128.1.10', 'fd00:128:1::a']);
    expect(v.services[0]).toMatchObject({ vip: '10.96.1.10', vips: ['10.96.1.10', 'fd00:96::1:10'] });
    expect(v.endpoints.filter((e) => e.service === 'web')).toHaveLength(2);
  });

  it('serviceFromObject: clusterIPs after clusterIP, one per family, junk ignored', () => {
    const o = (clusterIPs: unknown) => ({ metadata: { name: 's' }, spec: { clusterIP: 'fd00:96::1', clusterIPs, ports: [], selector: { app: 's' } } });
    expect((serviceFromObject('a', o(['fd00:96::1', '10.96.0.1'])) as ServiceInfo).vips).toEqual(['fd00:96::1', '10.96.0.1']);
    expect((serviceFromObject('a', o(['fd00:96::1', 'fd00:96::2', 'x', 7])) as ServiceInfo).vips).toBeUndefined();
    expect((serviceFromObject('a', o(undefined)) as ServiceInfo).vip).toBe('fd00:96::1');
  });
});

describe('agent: desired state of dual-stack pods and services', () => {
  const pod = (name: string, node: string, v4: string, v6: string, app: string): PodInfo => ({ project: 'alpha', name, node, address: v4, addresses: [v4, v6], labels: { app }, netns: null });
  const pods = [pod('web-1', 'n1', '10.128.1.10', 'fd00:128:1::a', 'web'), pod('cli', 'n1', '10.128.1.11', 'fd00:128:1::b', 'cli')];
  const key = (c: string) => c.repeat(43) + '=';
  const view = {
    pods,
    services: [{ project: 'alpha', name: 'web', vip: '10.96.1.10', vips: ['10.96.1.10', 'fd00:96::1:10'], ports: [{ protocol: 'tcp' as const, port: 80 }], selector: { app: 'web' } }],
    // one slice per family, as a dual-stack cluster lists them
    endpoints: [
      { project: 'alpha', service: 'web', pods: [{ name: 'web-1', address: '10.128.1.10', node: 'n1' }] },
      { project: 'alpha', service: 'web', pods: [{ name: 'web-1', address: 'fd00:128:1::a', node: 'n1' }] },
    ],
    peers: [
      { project: 'alpha', pod: 'web-1', node: 'n1', publicKey: key('A'), endpoint: '10.128.1.10:51820' },
      { project: 'alpha', pod: 'cli', node: 'n1', publicKey: key('C'), endpoint: '10.128.1.11:51820' },
    ],
  };

  it('a peer gets both addresses and both VIPs; the DNS proxy each VIP\'s endpoints in its family; members both', () => {
    const d = desiredState(view, pods[1]);
    expect(d.peers).toEqual([{ publicKey: key('A'), endpoint: '10.128.1.10:51820', allowedIps: ['10.128.1.10/32', 'fd00:128:1::a/128', '10.96.1.10/32', 'fd00:96::1:10/128'] }]);
    expect(d.endpoints).toEqual([
      { vip: '10.96.1.10', addresses: ['10.128.1.10'] },
      { vip: 'fd00:96::1:10', addresses: ['fd00:128:1::a'] },
    ]);
    expect(d.members).toContain('fd00:96::1:10/128');
    expect(d.members).toContain('fd00:128:1::b/128');
  });

  it('the endpoint pod serves both VIPs, or only the family it has an address of', () => {
    expect(desiredState(view, pods[0]).services.map((s) => s.vip)).toEqual(['10.96.1.10', 'fd00:96::1:10']);
    const v4only = { ...pods[0], addresses: ['10.128.1.10'] };
    expect(desiredState({ ...view, pods: [v4only, pods[1]] }, v4only).services.map((s) => s.vip)).toEqual(['10.96.1.10']);
  });
});
