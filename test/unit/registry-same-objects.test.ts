/**
 * One table of pods, Services and EndpointSlices, good, edge and bad, fed to the
 * Kubernetes backend (through the in-test API server's watch) and to the directory
 * backend (files): both must take the same objects, read them the same, and say the
 * same about each bad one (objects.ts's words, each backend naming the object its
 * own way). Regression tests of the rules kubernetes.ts kept beside objects.ts:
 *  - a Service with a cluster IP and a selector but no spec.ports (or ports that are
 *    not a list): the Kubernetes backend took it with ports [], which the pod reads as
 *    every tcp and udp port; the others refused it;
 *  - a port entry that is not an object: dropped silently by the Kubernetes backend;
 *  - an EndpointSlice with "endpoints": null (how the API sends a slice without
 *    endpoints): refused by the others; one whose endpoints are not a list: taken as
 *    no endpoints by the Kubernetes backend;
 *  - an EndpointSlice without addressType: left out by the Kubernetes backend only;
 *    one without the kubernetes.io/service-name label: left out silently by it;
 *  - a pod label whose value is not a string: kept by the others (a selector compares
 *    strings), dropped silently by the Kubernetes backend.
 * And, for every backend: lists of tens of thousands of endpoints or ports come out
 * deduplicated, in order.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { validateCluster, type ClusterConfig } from '../../src/agent/cluster-config.js';
import { DirectoryRegistry } from '../../src/registry/dir.js';
import { KubernetesRegistry } from '../../src/registry/kubernetes.js';
import { endpointsFromObject, servicePorts } from '../../src/registry/objects.js';
import { mergeEndpoints, type EndpointsInfo } from '../../src/registry/registry.js';
import { FakeApiServer } from '../k8s/fake-apiserver.js';
import { until } from '../until.js';

const clusterFile = join(__dirname, '../../netns-scripts/cluster-example.json');
const cluster: ClusterConfig = validateCluster(JSON.parse(readFileSync(clusterFile, 'utf8')), clusterFile);

type Obj = Record<string, unknown>;
type Kind = 'pods' | 'services' | 'endpointslices';

const pod = (name: string, status: Obj | null, spec: Obj | null = { nodeName: 'node1' }, meta: Obj = {}) => ({ metadata: { name, ...meta }, spec, status });
const running = (podIP: string, podIPs?: unknown) => ({ phase: 'Running', podIP, ...(podIPs === undefined ? {} : { podIPs }) });
const svc = (name: string, spec: Obj) => ({ metadata: { name }, spec: { clusterIP: '10.96.0.10', selector: { app: name }, ports: [{ protocol: 'TCP', port: 80 }], ...spec } });
const ep = (pod: string, address: unknown, more: Obj = {}) => ({ addresses: [address], conditions: { ready: true }, nodeName: 'node1', targetRef: { kind: 'Pod', name: pod }, ...more });
const slice = (name: string, service: string | null, more: Obj) => ({
  metadata: { name, ...(service === null ? {} : { labels: { 'kubernetes.io/service-name': service } }) },
  addressType: 'IPv4',
  ...more,
});

/** [kind, object, what every backend says about it (objects.ts's words), or nothing]. */
const TABLE: [Kind, Obj, (string | string[])?][] = [
  // pods
  ['pods', pod('web', running('10.128.0.1', [{ ip: '10.128.0.1' }, { ip: 'fd00::1' }]), undefined, { labels: { app: 'web' } })],
  ['pods', pod('odd-labels', running('10.128.0.2'), undefined, { labels: { app: 'web', n: 5, b: true } }), 'metadata.labels: the value of "n", "b" is not a string: ignored'],
  ['pods', pod('str-labels', running('10.128.0.3'), undefined, { labels: 'app=web' }), 'metadata.labels: "app=web" is not an object: ignored'],
  ['pods', pod('null-labels', running('10.128.0.4'), undefined, { labels: null })],
  ['pods', pod('junk-ips', running('10.128.0.5', [null, 7, { ip: 5 }, 'x', { ip: '' }]))],
  ['pods', pod('str-ips', running('10.128.0.6', '10.128.0.7'))],
  ['pods', pod('half-bad', running('10.128.0.8', [{ ip: '10.128.0.8' }, { ip: 'fd00::zz' }])), 'status.podIP(s): "fd00::zz" not an IP address: those addresses ignored'],
  ['pods', pod('bad-ip', running('10.128.0.300')), 'status.podIP(s): "10.128.0.300" not an IP address: ignored'],
  ['pods', pod('running-no-ip', { phase: 'Running' }), 'Running without status.podIP: ignored'],
  ['pods', pod('pending', { phase: 'Pending', podIP: '' })],
  ['pods', pod('unscheduled', { phase: 'Pending' }, {})],
  ['pods', pod('null-spec', null, null)],
  ['pods', pod('null-status', null)],
  ['pods', pod('hostnet', running('10.200.0.2'), { nodeName: 'node1', hostNetwork: true })],
  ['pods', pod('done', { phase: 'Succeeded', podIP: '10.128.0.9' })],
  ['pods', pod('failed', { phase: 'Failed', podIP: '10.128.0.10' })],
  ['pods', pod('going', running('10.128.0.11'), undefined, { deletionTimestamp: '2025-01-01T00:00:00Z' })],
  // Services
  ['services', svc('web', {})],
  ['services', svc('dual', { clusterIP: '10.96.0.11', clusterIPs: ['10.96.0.11', 'fd00:96::11', 'x', 7] })],
  ['services', svc('odd-ports', { ports: [{ port: 'x' }, { port: 70000, protocol: 'TCP' }, { port: 8080 }, { port: 8080, protocol: 'TCP' }, { port: 53, protocol: 'UDP' }] }), [
    'spec.ports: port "x" is not a port 1..65535: ignored',
    'spec.ports: port 70000 is not a port 1..65535: ignored',
  ]],
  // no port left: refused (no ports is every port to a pod)
  ['services', svc('sctp-only', { ports: [{ port: 3868, protocol: 'SCTP' }] }), [
    'spec.ports: protocol "SCTP" of port 3868 is not TCP or UDP: that port ignored',
    'spec.ports: no TCP or UDP port 1..65535: ignored',
  ]],
  ['services', svc('null-port', { ports: [null, { protocol: 'UDP', port: 53 }] }), 'spec.ports: entry null is not an object: that port ignored'],
  ['services', svc('no-ports', { ports: undefined }), 'spec.ports: missing or not a list: ignored'],
  ['services', svc('null-ports', { ports: null }), 'spec.ports: missing or not a list: ignored'],
  ['services', svc('str-ports', { ports: '80' }), 'spec.ports: missing or not a list: ignored'],
  ['services', svc('headless', { clusterIP: 'None' })],
  ['services', svc('extname', { clusterIP: undefined, type: 'ExternalName', externalName: 'example.com' })],
  ['services', svc('bad-vip', { clusterIP: 'ten.ninety-six' }), 'spec.clusterIP: "ten.ninety-six" is not an IP address: ignored'],
  ['services', svc('no-selector', { selector: undefined }), 'no selector: left out (tenc routes only services that select pods)'],
  ['services', svc('empty-selector', { selector: {} }), 'no selector: left out (tenc routes only services that select pods)'],
  // EndpointSlices
  [
    'endpointslices',
    slice('web-1', 'web', {
      endpoints: [ep('web', '10.128.0.1'), ep('not-ready', '10.128.0.2', { conditions: { ready: false } }), null, ep('evil', '10.128.0.1; rm -rf /'), ep('node', '10.200.0.2', { targetRef: { kind: 'Node', name: 'node1' } }), ep('web', '10.128.0.99')],
    }),
    'endpoint address "10.128.0.1; rm -rf /" is not an IP address: that endpoint ignored',
  ],
  ['endpointslices', slice('web-2', 'web', { endpoints: [ep('odd-labels', '10.128.0.2'), ep('web', '10.128.0.98')] })],
  ['endpointslices', slice('idle', 'idle', { endpoints: null })],
  ['endpointslices', slice('no-type', 'no-type', { addressType: undefined, endpoints: [ep('web', '10.128.0.1')] })],
  ['endpointslices', slice('fqdn', 'web', { addressType: 'FQDN', endpoints: [ep('web', 'example.com')] })],
  ['endpointslices', slice('no-label', null, { endpoints: [ep('web', '10.128.0.1')] }), 'metadata.labels: no kubernetes.io/service-name: ignored'],
  ['endpointslices', slice('str-eps', 'str-eps', { endpoints: 'x' }), 'endpoints: "x" is not a list: ignored'],
  // last of each kind: the Kubernetes backend has seen every object of the kind once it sees these
  ['pods', pod('zz-last', running('10.128.0.12'))],
  ['services', svc('zz-last', { clusterIP: '10.96.0.12' })],
  ['endpointslices', slice('zz-last', 'zz-last', { endpoints: [] })],
];

/** What every backend takes from TABLE (the agent's view: slices of one service merged). */
const PODS = [
  ['half-bad', ['10.128.0.8'], {}],
  ['junk-ips', ['10.128.0.5'], {}],
  ['null-labels', ['10.128.0.4'], {}],
  ['odd-labels', ['10.128.0.2'], { app: 'web' }],
  ['str-ips', ['10.128.0.6'], {}],
  ['str-labels', ['10.128.0.3'], {}],
  ['web', ['10.128.0.1', 'fd00::1'], { app: 'web' }],
  ['zz-last', ['10.128.0.12'], {}],
];
const tcp = (port: number) => ({ protocol: 'tcp', port });
const SERVICES = [
  { name: 'dual', vip: '10.96.0.11', vips: ['10.96.0.11', 'fd00:96::11'], ports: [tcp(80)], selector: { app: 'dual' } },
  { name: 'null-port', vip: '10.96.0.10', ports: [{ protocol: 'udp', port: 53 }], selector: { app: 'null-port' } },
  { name: 'odd-ports', vip: '10.96.0.10', ports: [tcp(8080), { protocol: 'udp', port: 53 }], selector: { app: 'odd-ports' } },
  { name: 'web', vip: '10.96.0.10', ports: [tcp(80)], selector: { app: 'web' } },
  { name: 'zz-last', vip: '10.96.0.12', ports: [tcp(80)], selector: { app: 'zz-last' } },
].map((s) => ({ project: 'gamma', ...s }));
const ENDPOINTS = [
  ['idle', []],
  ['no-type', [['web', '10.128.0.1']]],
  ['web', [['odd-labels', '10.128.0.2'], ['web', '10.128.0.1']]],
  ['zz-last', []],
];
const PROBLEMS = TABLE.flatMap(([kind, o, why]) => (why === undefined ? [] : [why].flat()).map((w) => `${kind} ${(o.metadata as Obj).name}: ${w}`)).sort();

/** The agent's view of one backend's reads, in one shape for comparing. */
async function view(r: DirectoryRegistry | KubernetesRegistry) {
  const pods = (await r.pods('gamma')).map((p) => {
    expect(p).toMatchObject({ project: 'gamma', node: 'node1', address: p.addresses[0], netns: null });
    return [p.name, p.addresses, p.labels];
  });
  const eps = mergeEndpoints(await r.endpoints('gamma'))
    .map((e: EndpointsInfo) => [e.service, e.pods.map((p) => [p.name, p.address]).sort()])
    .sort();
  return { pods: pods.sort(), services: await r.services('gamma'), eps };
}

let api: FakeApiServer;
let dir: string;
const regs: KubernetesRegistry[] = [];

beforeEach(async () => {
  api = new FakeApiServer();
  await api.start();
  api.loadCluster(cluster);
  dir = mkdtempSync(join(tmpdir(), 'tenc-same-'));
});

afterEach(async () => {
  for (const r of regs.splice(0)) await r.close();
  await api.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('the Kubernetes and directory backends take the same objects', () => {
  it('one table of good, edge and bad pods, Services and EndpointSlices: the same taken, the same said', async () => {
    // the directory backend
    for (const [kind, o] of TABLE) {
      mkdirSync(join(dir, 'reg', kind, 'gamma'), { recursive: true });
      writeFileSync(join(dir, 'reg', kind, 'gamma', `${(o.metadata as Obj).name}.json`), JSON.stringify(o));
    }
    const dirProblems: string[] = [];
    const d = new DirectoryRegistry(join(dir, 'reg'), { onProblem: (f, why) => dirProblems.push(`${f.slice(join(dir, 'reg').length + 1)}: ${why}`) });

    // the Kubernetes backend: every object through the watch, as the API server sends it
    const warnings: string[] = [];
    const k = new KubernetesRegistry(api.kubeConfig(api.agentToken('node1')), { pskDir: join(dir, 'psk'), log: { warn: (_f, m) => warnings.push(m), info: () => {} }, syncTimeoutMs: 5000 });
    regs.push(k);
    await Promise.all([k.pods('gamma'), k.services('gamma'), k.endpoints('gamma')]);
    for (const [kind, o] of TABLE) api.put(kind, { ...o, metadata: { ...(o.metadata as Obj), namespace: 'gamma' } });
    const seen = async () => (await k.pods('gamma')).some((p) => p.name === 'zz-last') && (await k.services('gamma')).some((s) => s.name === 'zz-last') && (await k.endpoints('gamma')).some((e) => e.service === 'zz-last');
    await until('the Kubernetes backend has every object', seen, 8000, 25);

    // soft: a failure shows every backend's difference, not the first one's
    const want = { pods: PODS, services: SERVICES, eps: ENDPOINTS };
    expect.soft(await view(d), 'directory').toEqual(want);
    expect.soft(await view(k), 'kubernetes').toEqual(want);
    await view(k); // read again: nothing said twice

    const kinds: Record<string, Kind> = { pod: 'pods', service: 'services', EndpointSlice: 'endpointslices' };
    const said = warnings
      .filter((w) => / gamma\//.test(w))
      .map((w) => {
        const m = /^kubernetes (pod|service|EndpointSlice) gamma\/([^:]+): (.*) \(logged once\)$/.exec(w);
        expect(m, w).not.toBeNull();
        return `${kinds[m![1]]} ${m![2]}: ${m![3]}`;
      });
    expect.soft(said.sort(), 'kubernetes said').toEqual(PROBLEMS);
    expect.soft(dirProblems.map((p) => p.replace(/^(\w+)\/gamma\/([^/]+)\.json: /, '$1 $2: ')).sort(), 'directory said').toEqual(PROBLEMS);
  });
});

describe('long lists', () => {
  // Their reading is one pass now (a Set, where each entry was compared with every
  // other: 20,000 endpoints took 2.8 s, at every read of the directory backend); the
  // time is the bench's business, this checks what comes out.
  it('30,000 endpoints of a slice, 40,000 ports of a Service, 60,000 endpoints merged: duplicates removed, first seen kept in order', () => {
    const eps = Array.from({ length: 30_000 }, (_, i) => ep(`p${i}`, `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`));
    const e = endpointsFromObject('gamma', slice('big', 'big', { endpoints: [...eps, ...eps] })) as EndpointsInfo;
    expect(e.pods).toHaveLength(30_000);
    expect(e.pods[29_999]!.name).toBe('p29999');

    const ports = Array.from({ length: 40_000 }, (_, i) => ({ protocol: i & 1 ? 'UDP' : 'TCP', port: (i >> 1) + 1 }));
    const read = servicePorts([...ports, ...ports]);
    expect(read).toHaveLength(40_000);
    expect(read[1]).toMatchObject({ protocol: 'udp', port: 1 });

    const merged = mergeEndpoints([e, { ...e, pods: e.pods.map((p) => ({ ...p, name: `q${p.name}` })) }, e])[0]!.pods;
    expect(merged).toHaveLength(60_000);
    expect(merged[30_000]!.name).toBe('qp0');
  });
});
