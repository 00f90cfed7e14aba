/**
 * The local cluster's declarative file (netns-scripts/cluster.sh): validation at one
 * gate, then everything derived from it: the build plan cluster.sh executes, the
 * kube-proxy nftables rules of each node, the cluster DNS records and the objects
 * of the registry (as the Kubernetes API would describe pods, services and
 * endpoints). Pure: no I/O here (see cluster-tool.ts).
 *
 *   {
 *     "underlay": "10.200.0.0/24",     optional: the nodes' network (node i = .i+1, infra = last)
 *     "overlay": "10.201.0.0/24",      optional: VXLAN addresses of the nodes
 *     "serviceCidr": "10.96.0.0/16",   optional: service VIPs and the DNS address live here
 *     "dns": "10.96.0.10",             the cluster DNS address
 *     "external": "10.250.0.1",        optional: a host outside the cluster (demo, tests)
 *     "nodes":    [{"name": "node1", "podCidr": "10.128.1.0/24"}],
 *     "projects": [{"name": "alpha"}],
 *     "pods":     [{"name": "alpha-web-1", "project": "alpha", "node": "node1", "address": "10.128.1.10", "labels": {"app": "web"}}],
 *     "services": [{"name": "web", "project": "alpha", "vip": "10.96.1.10", "ports": [{"protocol": "tcp", "port": 80}], "selector": {"app": "web"}}],
 *     "policies": [{"apiVersion": "tenc.io/v1alpha1", "kind": "TencPolicy", "metadata": {"name": "metrics", "namespace": "alpha"},
 *                   "spec": {"service": "web", "ports": [{"protocol": "TCP", "port": 9100}], "mode": "exempt"}}]   optional (cluster-policies.ts)
 *   }
 *
 * IPv4 only (10.0.0.0/8). Every problem is reported as `FILE: field: problem`.
 */
import type { ServicePort } from '../control/config.js';
import { validateClusterPolicies, type ClusterPolicy } from './cluster-policies.js';

export interface ClusterNode {
  name: string;
  podCidr: string;
}
export interface ClusterPod {
  name: string;
  project: string;
  node: string;
  address: string;
  labels: Record<string, string>;
}
export interface ClusterService {
  name: string;
  project: string;
  vip: string;
  ports: ServicePort[];
  selector: Record<string, string>;
}
export interface ClusterConfig {
  underlay: string;
  overlay: string;
  serviceCidr: string;
  dns: string;
  external: string;
  nodes: ClusterNode[];
  projects: { name: string }[];
  pods: ClusterPod[];
  services: ClusterService[];
  /** TencPolicy objects (cluster-policies.ts); [] when the file has none. */
  policies?: ClusterPolicy[];
}

export class ClusterConfigError extends Error {
  readonly code = 'ERR_TENC_CLUSTER';
  constructor(
    readonly file: string,
    readonly problems: { field: string; problem: string }[],
  ) {
    super(problems.map((p) => `${file}: ${p.field}: ${p.problem}`).join('\n'));
    this.name = 'ClusterConfigError';
  }
}

// --- IPv4 arithmetic --------------------------------------------------------

export function ip4ToInt(a: string): number | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(a);
  if (!m) return null;
  const parts = m.slice(1).map(Number);
  if (parts.some((p, i) => p > 255 || (m[i + 1].length > 1 && m[i + 1].startsWith('0')))) return null;
  return ((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]) >>> 0;
}

export function intToIp4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export interface Cidr4 {
  net: number;
  len: number;
  /** Number of addresses. */
  size: number;
}

export function parseCidr4(v: string): Cidr4 | string {
  const [a, l, ...rest] = v.split('/');
  const net = ip4ToInt(a);
  if (net === null || l === undefined || rest.length > 0 || !/^\d{1,2}$/.test(l) || Number(l) > 32) {
    return `${JSON.stringify(v)} is not an IPv4 CIDR like "10.128.1.0/24"`;
  }
  const len = Number(l);
  const size = 2 ** (32 - len);
  if (net % size !== 0) return `${JSON.stringify(v)} has host bits set`;
  return { net, len, size };
}

function inCidr(addr: number, c: Cidr4): boolean {
  return addr >= c.net && addr < c.net + c.size;
}

function overlaps(a: Cidr4, b: Cidr4): boolean {
  return a.net < b.net + b.size && b.net < a.net + a.size;
}

const TEN = { net: 10 << 24, len: 8, size: 2 ** 24 };

// --- validation ---------------------------------------------------------------

const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_KEY = /^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;
/** Pod names become namespace names (with a prefix) and /etc/netns directories. */
const MAX_POD_NAME = 40;
const MAX_NODE_NAME = 20;
/** cluster.sh names its own namespaces <prefix>-ul, <prefix>-infra, <prefix>-n-<node>. */
const RESERVED_POD_NAME = /^(ul|infra|n-.*)$/;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
const show = (v: unknown) => JSON.stringify(v) ?? String(v);

export function validateCluster(raw: unknown, file: string): ClusterConfig {
  const problems: { field: string; problem: string }[] = [];
  const add = (field: string, problem: string) => void problems.push({ field, problem });
  const unknown = (o: Record<string, unknown>, prefix: string, known: string[]) => {
    for (const k of Object.keys(o)) if (!known.includes(k)) add(prefix + k, `unknown field (known: ${known.join(', ')})`);
  };
  if (!isObject(raw)) throw new ClusterConfigError(file, [{ field: '(top level)', problem: 'must be a JSON object' }]);
  unknown(raw, '', ['underlay', 'overlay', 'serviceCidr', 'dns', 'external', 'nodes', 'projects', 'pods', 'services', 'policies']);

  const cidrField = (field: string, dflt: string): [string, Cidr4 | null] => {
    const v = raw[field] ?? dflt;
    if (typeof v !== 'string') return (add(field, `${show(v)} is not a CIDR string`), [dflt, null]);
    const c = parseCidr4(v);
    if (typeof c === 'string') return (add(field, c), [v, null]);
    if (!(c.net >= TEN.net && c.net + c.size <= TEN.net + TEN.size)) return (add(field, `${v} is not inside 10.0.0.0/8`), [v, null]);
    return [v, c];
  };
  const [underlay, ul] = cidrField('underlay', '10.200.0.0/24');
  const [overlay, ol] = cidrField('overlay', '10.201.0.0/24');
  const [serviceCidr, sc] = cidrField('serviceCidr', '10.96.0.0/16');
  const ranges: [string, Cidr4][] = [];
  for (const [f, c] of [['underlay', ul], ['overlay', ol], ['serviceCidr', sc]] as const) {
    if (!c) continue;
    const clash = ranges.find(([, o]) => overlaps(o, c));
    if (clash) add(f, `overlaps ${clash[0]}`);
    ranges.push([f, c]);
  }

  const addrField = (field: string, v: unknown): number | null => {
    if (typeof v !== 'string') return (add(field, `${show(v)} is not an IPv4 address string`), null);
    const n = ip4ToInt(v);
    if (n === null) return (add(field, `${show(v)} is not an IPv4 address`), null);
    if (!inCidr(n, TEN)) return (add(field, `${v} is not inside 10.0.0.0/8`), null);
    return n;
  };
  let dns = '';
  if (raw.dns === undefined) add('dns', 'is required (the cluster DNS address, inside serviceCidr)');
  else {
    const n = addrField('dns', raw.dns);
    if (n !== null) {
      dns = intToIp4(n);
      if (sc && !inCidr(n, sc)) add('dns', `${dns} is not inside serviceCidr ${serviceCidr}`);
    }
  }
  let external = '10.250.0.1';
  if (raw.external !== undefined) {
    const n = addrField('external', raw.external);
    if (n !== null) external = intToIp4(n);
  }
  {
    const n = ip4ToInt(external)!;
    const inside = ranges.find(([, c]) => inCidr(n, c));
    if (inside) add('external', `${external} is inside ${inside[0]}: it must be outside the cluster`);
  }

  const list = (field: string): unknown[] => {
    const v = raw[field];
    if (v === undefined) return (add(field, 'is required (an array)'), []);
    if (!Array.isArray(v)) return (add(field, 'must be an array'), []);
    return v;
  };
  const nameOf = (field: string, v: unknown, max: number): string => {
    if (typeof v !== 'string' || !NAME.test(v) || v.length > max) {
      add(field, `${show(v)} is not a name (lowercase letters, digits and "-", 1..${max} characters)`);
      return '';
    }
    return v;
  };
  const labelsOf = (field: string, v: unknown): Record<string, string> => {
    if (v === undefined) return {};
    if (!isObject(v)) return (add(field, 'must be an object of strings'), {});
    const out: Record<string, string> = {};
    for (const [k, x] of Object.entries(v)) {
      if (!LABEL_KEY.test(k) || k.length > 63) add(`${field}.${k}`, 'is not a label key');
      else if (typeof x !== 'string' || !LABEL_VALUE.test(x) || x.length > 63) add(`${field}.${k}`, `${show(x)} is not a label value`);
      else out[k] = x;
    }
    return out;
  };

  // nodes
  const nodes: ClusterNode[] = [];
  const nodeCidrs = new Map<string, Cidr4>();
  const nodesRaw = list('nodes');
  if (ul && nodesRaw.length > ul.size - 3) add('nodes', `${nodesRaw.length} nodes do not fit into underlay ${underlay}`);
  if (ol && nodesRaw.length > ol.size - 2) add('nodes', `${nodesRaw.length} nodes do not fit into overlay ${overlay}`);
  if (Array.isArray(raw.nodes) && nodesRaw.length === 0) add('nodes', 'must list at least one node');
  nodesRaw.forEach((n, i) => {
    const p = `nodes[${i}]`;
    if (!isObject(n)) return add(p, 'must be an object like {"name": "node1", "podCidr": "10.128.1.0/24"}');
    unknown(n, `${p}.`, ['name', 'podCidr']);
    const name = nameOf(`${p}.name`, n.name, MAX_NODE_NAME);
    if (name && nodes.some((x) => x.name === name)) add(`${p}.name`, `${show(name)} is listed twice`);
    if (typeof n.podCidr !== 'string') return add(`${p}.podCidr`, n.podCidr === undefined ? 'is required' : `${show(n.podCidr)} is not a CIDR string`);
    const c = parseCidr4(n.podCidr);
    if (typeof c === 'string') return add(`${p}.podCidr`, c);
    if (c.len > 29) return add(`${p}.podCidr`, `${n.podCidr} is too small (at most /29)`);
    if (!overlaps(c, TEN) || c.net + c.size > TEN.net + TEN.size) return add(`${p}.podCidr`, `${n.podCidr} is not inside 10.0.0.0/8`);
    const clash = ranges.find(([, o]) => overlaps(o, c));
    if (clash) return add(`${p}.podCidr`, `${n.podCidr} overlaps ${clash[0]}`);
    ranges.push([`${p}.podCidr`, c]);
    if (name) {
      nodes.push({ name, podCidr: n.podCidr });
      nodeCidrs.set(name, c);
    }
  });
  {
    const n = ip4ToInt(external)!;
    const inside = ranges.find(([f, c]) => f.startsWith('nodes') && inCidr(n, c));
    if (inside) add('external', `${external} is inside ${inside[0]}: it must be outside the cluster`);
  }

  // projects
  const projects: { name: string }[] = [];
  list('projects').forEach((pr, i) => {
    const p = `projects[${i}]`;
    if (!isObject(pr)) return add(p, 'must be an object like {"name": "alpha"}');
    unknown(pr, `${p}.`, ['name']);
    const name = nameOf(`${p}.name`, pr.name, 20);
    if (name && projects.some((x) => x.name === name)) add(`${p}.name`, `${show(name)} is listed twice`);
    else if (name) projects.push({ name });
  });
  const projectNames = projects.map((x) => x.name);

  // pods
  const pods: ClusterPod[] = [];
  const used = new Map<number, string>();
  list('pods').forEach((pd, i) => {
    const p = `pods[${i}]`;
    if (!isObject(pd)) return add(p, 'must be an object');
    unknown(pd, `${p}.`, ['name', 'project', 'node', 'address', 'labels']);
    const before = problems.length;
    const name = nameOf(`${p}.name`, pd.name, MAX_POD_NAME);
    if (name && pods.some((x) => x.name === name)) add(`${p}.name`, `${show(name)} is listed twice (pod names are cluster-wide here)`);
    if (name && RESERVED_POD_NAME.test(name)) add(`${p}.name`, `${show(name)} is reserved for the cluster's own namespaces (ul, infra, n-*)`);
    const project = typeof pd.project === 'string' && projectNames.includes(pd.project) ? pd.project : '';
    if (!project) add(`${p}.project`, `${show(pd.project)} is not a project in "projects"`);
    const node = typeof pd.node === 'string' && nodeCidrs.has(pd.node) ? pd.node : '';
    if (!node) add(`${p}.node`, `${show(pd.node)} is not a node in "nodes"`);
    let address = '';
    if (pd.address === undefined) add(`${p}.address`, 'is required');
    else {
      const n = addrField(`${p}.address`, pd.address);
      if (n !== null && node) {
        const c = nodeCidrs.get(node)!;
        if (!inCidr(n, c)) add(`${p}.address`, `${intToIp4(n)} is not inside node ${node}'s podCidr ${intToIp4(c.net)}/${c.len}`);
        else if (n === c.net || n === c.net + 1 || n === c.net + c.size - 1) {
          add(`${p}.address`, `${intToIp4(n)} is reserved (network, gateway ${intToIp4(c.net + 1)} or broadcast)`);
        } else if (used.has(n)) add(`${p}.address`, `${intToIp4(n)} is also the address of ${used.get(n)}`);
        else {
          used.set(n, `pods[${i}]`);
          address = intToIp4(n);
        }
      }
    }
    const labels = labelsOf(`${p}.labels`, pd.labels);
    if (problems.length === before) pods.push({ name, project, node, address, labels });
  });

  // services
  const services: ClusterService[] = [];
  const vips = new Map<number, string>();
  if (dns) vips.set(ip4ToInt(dns)!, 'dns');
  list('services').forEach((s, i) => {
    const p = `services[${i}]`;
    if (!isObject(s)) return add(p, 'must be an object');
    unknown(s, `${p}.`, ['name', 'project', 'vip', 'ports', 'selector']);
    const before = problems.length;
    const name = nameOf(`${p}.name`, s.name, 40);
    const project = typeof s.project === 'string' && projectNames.includes(s.project) ? s.project : '';
    if (!project) add(`${p}.project`, `${show(s.project)} is not a project in "projects"`);
    if (name && project && services.some((x) => x.name === name && x.project === project)) add(`${p}.name`, `${show(name)} is listed twice in project ${project}`);
    let vip = '';
    if (s.vip === undefined) add(`${p}.vip`, 'is required');
    else {
      const n = addrField(`${p}.vip`, s.vip);
      if (n !== null) {
        if (sc && !inCidr(n, sc)) add(`${p}.vip`, `${intToIp4(n)} is not inside serviceCidr ${serviceCidr}`);
        else if (vips.has(n)) add(`${p}.vip`, `${intToIp4(n)} is also used by ${vips.get(n)}`);
        else {
          vips.set(n, p);
          vip = intToIp4(n);
        }
      }
    }
    const ports: ServicePort[] = [];
    if (!Array.isArray(s.ports) || s.ports.length === 0) add(`${p}.ports`, 'must be a non-empty array of {"protocol": "tcp"|"udp", "port": N}');
    else {
      s.ports.forEach((q, j) => {
        const pp = `${p}.ports[${j}]`;
        if (!isObject(q)) return add(pp, 'must be an object like {"protocol": "tcp", "port": 80}');
        unknown(q, `${pp}.`, ['protocol', 'port']);
        if (q.protocol !== 'tcp' && q.protocol !== 'udp') return add(`${pp}.protocol`, `${show(q.protocol)} is not "tcp" or "udp"`);
        if (typeof q.port !== 'number' || !Number.isInteger(q.port) || q.port < 1 || q.port > 65535) return add(`${pp}.port`, `${show(q.port)} is not a port 1..65535`);
        if (ports.some((x) => x.protocol === q.protocol && x.port === q.port)) return add(pp, `${q.protocol}/${q.port} is listed twice`);
        ports.push({ protocol: q.protocol, port: q.port });
      });
    }
    const selector = labelsOf(`${p}.selector`, s.selector);
    if (s.selector === undefined || Object.keys(selector).length === 0) {
      if (!problems.some((x) => x.field.startsWith(`${p}.selector`))) add(`${p}.selector`, 'is required (labels the service\'s pods carry)');
    }
    if (problems.length === before) services.push({ name, project, vip, ports, selector });
  });

  // policies: after pods and services (a policy names a service or selects pods)
  const policies = validateClusterPolicies(
    Array.isArray(raw.policies) ? raw.policies.map((p) => (p && typeof p === 'object' && 'object' in p && 'project' in p ? (p as ClusterPolicy).object : p)) : raw.policies,
    { projects, pods, services },
    add,
  );

  if (problems.length > 0) throw new ClusterConfigError(file, problems);
  return { underlay, overlay, serviceCidr, dns, external, nodes, projects, pods, services, policies };
}

// --- derived values -----------------------------------------------------------

export interface NodeLayout {
  name: string;
  index: number;
  /** The node's underlay address with prefix, e.g. 10.200.0.1/24. */
  underlay: string;
  overlay: string;
  podCidr: string;
  /** The pods' default gateway on the node bridge, with prefix, e.g. 10.128.1.1/24. */
  gateway: string;
}

export function nodeLayouts(c: ClusterConfig): NodeLayout[] {
  const ul = parseCidr4(c.underlay) as Cidr4;
  const ol = parseCidr4(c.overlay) as Cidr4;
  return c.nodes.map((n, i) => {
    const pc = parseCidr4(n.podCidr) as Cidr4;
    return {
      name: n.name,
      index: i + 1,
      underlay: `${intToIp4(ul.net + i + 1)}/${ul.len}`,
      overlay: `${intToIp4(ol.net + i + 1)}/${ol.len}`,
      podCidr: n.podCidr,
      gateway: `${intToIp4(pc.net + 1)}/${pc.len}`,
    };
  });
}

/** The infrastructure namespace's underlay address (cluster DNS and the external host live there). */
export function infraUnderlay(c: ClusterConfig): string {
  const ul = parseCidr4(c.underlay) as Cidr4;
  return `${intToIp4(ul.net + ul.size - 2)}/${ul.len}`;
}

export function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  const keys = Object.keys(selector);
  return keys.length > 0 && keys.every((k) => labels[k] === selector[k]);
}

/** The pods behind each service (the endpoints controller's job), sorted by name. */
export function serviceEndpoints(c: ClusterConfig, s: ClusterService): ClusterPod[] {
  return c.pods.filter((p) => p.project === s.project && selects(s.selector, p.labels)).sort((a, b) => a.name.localeCompare(b.name));
}

/** The kube-proxy rules of one node: each VIP:port DNATed to its endpoints, one transaction. */
export function kubeProxyRules(c: ClusterConfig, table: string): string {
  const lines = [`table ip ${table} {}`, `delete table ip ${table}`, `table ip ${table} {`, '  chain prerouting {', '    type nat hook prerouting priority dstnat; policy accept;'];
  for (const s of c.services) {
    const eps = serviceEndpoints(c, s).map((p) => p.address);
    if (eps.length === 0) continue;
    for (const port of s.ports) {
      const to = eps.length === 1 ? eps[0] : `numgen random mod ${eps.length} map { ${eps.map((a, i) => `${i} : ${a}`).join(', ')} }`;
      lines.push(`    ip daddr ${s.vip} ${port.protocol} dport ${port.port} dnat to ${to}`);
    }
  }
  lines.push('  }', '}');
  return lines.join('\n') + '\n';
}

/** The cluster DNS records in hosts-file form (dnsmasq answers A and PTR from it). */
export function dnsHosts(c: ClusterConfig): string {
  const lines: string[] = [];
  for (const s of c.services) lines.push(`${s.vip} ${s.name}.${s.project}.svc.cluster.local`);
  for (const p of c.pods) lines.push(`${p.address} ${p.address.replace(/\./g, '-')}.${p.project}.pod.cluster.local`);
  return lines.join('\n') + '\n';
}

