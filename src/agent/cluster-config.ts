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
 * Families. The nodes' podCidr decides the cluster's primary family: IPv4 (inside
 * 10.0.0.0/8) or IPv6 (inside fd00::/8; then serviceCidr, dns, external, the pods'
 * address and the services' vip are IPv6 too). A dual-stack cluster is IPv4-primary:
 * every node adds "podCidr6", the file adds "serviceCidr6" (default fd00:96::/108),
 * "dns6" and optionally "external6" (default fd00:250::1); a pod's "address6" is
 * optional (default: its IPv4 address's offset in the node's podCidr6); a service is
 * dual-stack with "vip6" ("ipFamilies": ["IPv4", "IPv6"], or ["IPv6", "IPv4"] to make
 * the IPv6 VIP its primary cluster IP). The underlay and the VXLAN overlay stay IPv4
 * in every cluster: IPv6 pod traffic between nodes rides the IPv4 VXLAN.
 *
 * Every problem is reported as `FILE: field: problem`.
 */
import type { ServicePort } from '../control/config.js';
import { validateClusterPolicies, type ClusterPolicy } from './cluster-policies.js';
import { FD00, bigToIp6, ip6ToBig, parseCidr6, podDnsLabel } from './cluster-ip6.js';
import { DNS_LABEL as NAME } from '../net/names.js';

export interface ClusterNode {
  name: string;
  /** The node's pod range of the cluster's primary family. */
  podCidr: string;
  /** Dual-stack: the node's IPv6 pod range. */
  podCidr6?: string;
}
export interface ClusterPod {
  name: string;
  project: string;
  node: string;
  /** The pod's address of the primary family. */
  address: string;
  /** Dual-stack: the pod's IPv6 address. */
  address6?: string;
  labels: Record<string, string>;
}
export interface ClusterService {
  name: string;
  project: string;
  /** The VIP of the primary family. */
  vip: string;
  /** Dual-stack: the service's IPv6 VIP. */
  vip6?: string;
  /** As given (Service.spec.ipFamilies); absent: the families of vip and vip6, primary first. */
  ipFamilies?: ('IPv4' | 'IPv6')[];
  ports: ServicePort[];
  selector: Record<string, string>;
}
export interface ClusterConfig {
  underlay: string;
  overlay: string;
  serviceCidr: string;
  /** Dual-stack only (its presence makes the cluster dual-stack). */
  serviceCidr6?: string;
  dns: string;
  dns6?: string;
  external: string;
  external6?: string;
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

const TEN = { net: 10 << 24, len: 8, size: 2 ** 24 };

// --- both families -------------------------------------------------------------

/** An address family of the cluster: IPv4 (inside 10.0.0.0/8) or IPv6 (inside fd00::/8). */
export type Family = 4 | 6;

/** A CIDR of either family, as bigints. */
export interface Net {
  fam: Family;
  net: bigint;
  len: number;
  size: bigint;
}

const ALLOWED: Record<Family, { net: Net; text: string }> = {
  4: { net: { fam: 4, net: BigInt(TEN.net), len: 8, size: BigInt(TEN.size) }, text: '10.0.0.0/8' },
  6: { net: { fam: 6, ...FD00 }, text: 'fd00::/8' },
};

/** The family of an address or CIDR string (by its form; not validated). */
export function familyOf(v: string): Family {
  return v.includes(':') ? 6 : 4;
}

export function parseAddr(v: string): { fam: Family; n: bigint } | null {
  const n4 = ip4ToInt(v);
  if (n4 !== null) return { fam: 4, n: BigInt(n4) };
  const n6 = ip6ToBig(v);
  return n6 === null ? null : { fam: 6, n: n6 };
}

export function addrText(fam: Family, n: bigint): string {
  return fam === 4 ? intToIp4(Number(n)) : bigToIp6(n);
}

export function parseNet(v: string): Net | string {
  if (familyOf(v) === 6) {
    const c = parseCidr6(v);
    return typeof c === 'string' ? c : { fam: 6, ...c };
  }
  const c = parseCidr4(v);
  return typeof c === 'string' ? c : { fam: 4, net: BigInt(c.net), len: c.len, size: BigInt(c.size) };
}

const netText = (c: Net) => `${addrText(c.fam, c.net)}/${c.len}`;
const within = (c: Net) => c.net >= ALLOWED[c.fam].net.net && c.net + c.size <= ALLOWED[c.fam].net.net + ALLOWED[c.fam].net.size;
const holds = (c: Net, a: { fam: Family; n: bigint }) => c.fam === a.fam && a.n >= c.net && a.n < c.net + c.size;
const netsOverlap = (a: Net, b: Net) => a.fam === b.fam && a.net < b.net + b.size && b.net < a.net + a.size;

// --- validation ---------------------------------------------------------------

const LABEL_KEY = /^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;
/** Pod names become namespace names (with a prefix) and /etc/netns directories. */
const MAX_POD_NAME = 40;
const MAX_NODE_NAME = 20;
/** cluster.sh names its own namespaces <prefix>-ul, <prefix>-infra, <prefix>-n-<node>. */
const RESERVED_POD_NAME = /^(ul|infra|n-.*)$/;
/** A dual-stack service's IPv6 EndpointSlice is named <service>-ipv6. */
const SLICE6_SUFFIX = '-ipv6';

const DEFAULTS = {
  serviceCidr: { 4: '10.96.0.0/16', 6: 'fd00:96::/108' },
  external: { 4: '10.250.0.1', 6: 'fd00:250::1' },
} as const;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
const show = (v: unknown) => JSON.stringify(v) ?? String(v);

/** The families of a validated cluster, primary first: [4], [6] or [4, 6]. */
export function clusterFamilies(c: ClusterConfig): Family[] {
  return c.serviceCidr6 !== undefined ? [4, 6] : [familyOf(c.serviceCidr)];
}

export function validateCluster(raw: unknown, file: string): ClusterConfig {
  const problems: { field: string; problem: string }[] = [];
  const add = (field: string, problem: string) => void problems.push({ field, problem });
  const unknown = (o: Record<string, unknown>, prefix: string, known: string[]) => {
    for (const k of Object.keys(o)) if (!known.includes(k)) add(prefix + k, `unknown field (known: ${known.join(', ')})`);
  };
  if (!isObject(raw)) throw new ClusterConfigError(file, [{ field: '(top level)', problem: 'must be a JSON object' }]);
  unknown(raw, '', ['underlay', 'overlay', 'serviceCidr', 'serviceCidr6', 'dns', 'dns6', 'external', 'external6', 'nodes', 'projects', 'pods', 'services', 'policies']);

  // the families, from the nodes' pod ranges: podCidr's family is the cluster's primary
  // one; podCidr6 (next to an IPv4 podCidr) makes it dual-stack
  const nodesPeek = Array.isArray(raw.nodes) ? raw.nodes.filter(isObject) : [];
  const firstCidr = nodesPeek.map((n) => n.podCidr).find((v): v is string => typeof v === 'string');
  const primary: Family = firstCidr !== undefined ? familyOf(firstCidr) : 4;
  const dual = primary === 4 && nodesPeek.some((n) => n.podCidr6 !== undefined);
  const families: Family[] = dual ? [4, 6] : [primary];
  const secondaryOnly = (field: string) => {
    if (raw[field] !== undefined && !dual) add(field, `is only for a dual-stack cluster (nodes with an IPv4 podCidr and an IPv6 podCidr6); in an IPv${primary}-only cluster use ${field.slice(0, -1)}`);
  };
  secondaryOnly('serviceCidr6');
  secondaryOnly('dns6');
  secondaryOnly('external6');

  /** A CIDR of family fam inside the cluster's allowed range; null after a problem. */
  const cidrOf = (field: string, v: unknown, fam: Family): Net | null => {
    if (typeof v !== 'string') return (add(field, `${show(v)} is not a CIDR string`), null);
    if (familyOf(v) !== fam) return (add(field, `${v} is an IPv${familyOf(v)} CIDR, but ${field} takes IPv${fam} here`), null);
    const c = parseNet(v);
    if (typeof c === 'string') return (add(field, c), null);
    if (!within(c)) return (add(field, `${v} is not inside ${ALLOWED[fam].text}`), null);
    return c;
  };
  const ranges: [string, Net][] = [];
  const range = (field: string, c: Net | null): boolean => {
    if (!c) return false;
    const clash = ranges.find(([, o]) => netsOverlap(o, c));
    if (clash) {
      add(field, `overlaps ${clash[0]}`);
      return false;
    }
    ranges.push([field, c]);
    return true;
  };
  // a field left out takes its default; any other value (null too) is checked, and named when wrong
  const underlay = typeof raw.underlay === 'string' ? raw.underlay : raw.underlay === undefined ? '10.200.0.0/24' : '';
  const overlay = typeof raw.overlay === 'string' ? raw.overlay : raw.overlay === undefined ? '10.201.0.0/24' : '';
  // the nodes' own network and VXLAN stay IPv4 in every cluster (IPv6 pod traffic rides the IPv4 VXLAN)
  const ul = cidrOf('underlay', raw.underlay === undefined ? underlay : raw.underlay, 4);
  const ol = cidrOf('overlay', raw.overlay === undefined ? overlay : raw.overlay, 4);
  range('underlay', ul);
  range('overlay', ol);
  const serviceCidr = typeof raw.serviceCidr === 'string' ? raw.serviceCidr : DEFAULTS.serviceCidr[primary];
  const sc = cidrOf('serviceCidr', raw.serviceCidr === undefined ? serviceCidr : raw.serviceCidr, primary);
  range('serviceCidr', sc);
  let serviceCidr6: string | undefined;
  let sc6: Net | null = null;
  if (dual) {
    serviceCidr6 = typeof raw.serviceCidr6 === 'string' ? raw.serviceCidr6 : DEFAULTS.serviceCidr[6];
    sc6 = cidrOf('serviceCidr6', raw.serviceCidr6 === undefined ? serviceCidr6 : raw.serviceCidr6, 6);
    range('serviceCidr6', sc6);
  }

  /** An address of family fam inside the allowed range, canonical; null after a problem. */
  const addrField = (field: string, v: unknown, fam: Family): { fam: Family; n: bigint } | null => {
    if (typeof v !== 'string') return (add(field, `${show(v)} is not an IPv${fam} address string`), null);
    const a = parseAddr(v);
    if (a === null) return (add(field, `${show(v)} is not an IPv${fam} address`), null);
    if (a.fam !== fam) return (add(field, `${v} is an IPv${a.fam} address, but ${field} takes IPv${fam} here`), null);
    if (!holds(ALLOWED[fam].net, a)) return (add(field, `${v} is not inside ${ALLOWED[fam].text}`), null);
    return a;
  };
  const dnsField = (field: string, fam: Family, c: Net | null, cText: string, cField: string): string => {
    if (raw[field] === undefined) return (add(field, `is required (the cluster DNS's IPv${fam} address, inside ${cField})`), '');
    const a = addrField(field, raw[field], fam);
    if (a === null) return '';
    const text = addrText(fam, a.n);
    if (c && !holds(c, a)) add(field, `${text} is not inside ${cField} ${cText}`);
    return text;
  };
  const dns = dnsField('dns', primary, sc, serviceCidr, 'serviceCidr');
  const dns6 = dual ? dnsField('dns6', 6, sc6, serviceCidr6!, 'serviceCidr6') : undefined;
  const externalField = (field: string, fam: Family): string => {
    if (raw[field] === undefined) return DEFAULTS.external[fam];
    const a = addrField(field, raw[field], fam);
    return a === null ? DEFAULTS.external[fam] : addrText(fam, a.n);
  };
  const external = externalField('external', primary);
  const external6 = dual ? externalField('external6', 6) : undefined;

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
  const nodeCidrs = new Map<string, { [F in Family]?: Net }>();
  const nodesRaw = list('nodes');
  if (ul && nodesRaw.length > Number(ul.size) - 3) add('nodes', `${nodesRaw.length} nodes do not fit into underlay ${underlay}`);
  if (ol && nodesRaw.length > Number(ol.size) - 2) add('nodes', `${nodesRaw.length} nodes do not fit into overlay ${overlay}`);
  if (Array.isArray(raw.nodes) && nodesRaw.length === 0) add('nodes', 'must list at least one node');
  const podCidrOf = (field: string, v: unknown, fam: Family): Net | null => {
    if (typeof v !== 'string') return (add(field, v === undefined ? 'is required' : `${show(v)} is not a CIDR string`), null);
    const c = cidrOf(field, v, fam);
    if (!c) return null;
    if (c.fam === 4 && c.len > 29) return (add(field, `${v} is too small (at most /29)`), null);
    if (c.fam === 6 && c.len > 120) return (add(field, `${v} is too small (at most /120)`), null);
    return range(field, c) ? c : null;
  };
  nodesRaw.forEach((n, i) => {
    const p = `nodes[${i}]`;
    if (!isObject(n)) return add(p, 'must be an object like {"name": "node1", "podCidr": "10.128.1.0/24"}');
    unknown(n, `${p}.`, ['name', 'podCidr', 'podCidr6']);
    const name = nameOf(`${p}.name`, n.name, MAX_NODE_NAME);
    if (name && nodes.some((x) => x.name === name)) add(`${p}.name`, `${show(name)} is listed twice`);
    const before = problems.length;
    if (typeof n.podCidr === 'string' && familyOf(n.podCidr) !== primary) {
      return add(`${p}.podCidr`, `${n.podCidr} is IPv${familyOf(n.podCidr)}, but nodes[0].podCidr is IPv${primary}: every node has the cluster's families (a second family goes into podCidr6)`);
    }
    const c = podCidrOf(`${p}.podCidr`, n.podCidr, primary);
    let c6: Net | null = null;
    if (dual) {
      if (n.podCidr6 === undefined) add(`${p}.podCidr6`, 'is required: the cluster is dual-stack (another node has podCidr6), so every node has an IPv6 pod range');
      else c6 = podCidrOf(`${p}.podCidr6`, n.podCidr6, 6);
    } else if (n.podCidr6 !== undefined) {
      add(`${p}.podCidr6`, `is only for a dual-stack cluster, whose podCidr is IPv4; this cluster is IPv${primary}-only`);
    }
    if (name && c && problems.length === before) {
      nodes.push({ name, podCidr: netText(c), ...(c6 ? { podCidr6: netText(c6) } : {}) });
      nodeCidrs.set(name, { [primary]: c, ...(c6 ? { 6: c6 } : {}) });
    }
  });
  for (const [field, v] of [['external', external], ['external6', external6]] as const) {
    if (v === undefined) continue;
    const a = parseAddr(v)!;
    const inside = ranges.find(([, c]) => holds(c, a));
    if (inside) add(field, `${v} is inside ${inside[0]}: it must be outside the cluster`);
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
  const used = new Map<string, string>();
  /** A pod address inside the node's range of its family, not reserved, not taken; canonical text or ''. */
  const podAddr = (field: string, a: { fam: Family; n: bigint } | null, node: string, i: number): string => {
    if (a === null || !node) return '';
    const c = nodeCidrs.get(node)?.[a.fam];
    const cf = a.fam === primary ? 'podCidr' : 'podCidr6';
    const text = addrText(a.fam, a.n);
    if (!c) return (add(field, `node ${node} has no IPv${a.fam} pod range`), '');
    if (!holds(c, a)) return (add(field, `${text} is not inside node ${node}'s ${cf} ${netText(c)}`), '');
    const reserved = [c.net, c.net + 1n, ...(a.fam === 4 ? [c.net + c.size - 1n] : [])];
    if (reserved.includes(a.n)) {
      return (add(field, `${text} is reserved (network, gateway ${addrText(a.fam, c.net + 1n)}${a.fam === 4 ? ' or broadcast' : ''})`), '');
    }
    if (used.has(text)) return (add(field, `${text} is also the address of ${used.get(text)}`), '');
    used.set(text, `pods[${i}]`);
    return text;
  };
  list('pods').forEach((pd, i) => {
    const p = `pods[${i}]`;
    if (!isObject(pd)) return add(p, 'must be an object');
    unknown(pd, `${p}.`, ['name', 'project', 'node', 'address', 'address6', 'labels']);
    const before = problems.length;
    const name = nameOf(`${p}.name`, pd.name, MAX_POD_NAME);
    if (name && pods.some((x) => x.name === name)) add(`${p}.name`, `${show(name)} is listed twice (pod names are cluster-wide here)`);
    if (name && RESERVED_POD_NAME.test(name)) add(`${p}.name`, `${show(name)} is reserved for the cluster's own namespaces (ul, infra, n-*)`);
    const project = typeof pd.project === 'string' && projectNames.includes(pd.project) ? pd.project : '';
    if (!project) add(`${p}.project`, `${show(pd.project)} is not a project in "projects"`);
    const node = typeof pd.node === 'string' && nodeCidrs.has(pd.node) ? pd.node : '';
    if (!node) add(`${p}.node`, `${show(pd.node)} is not a node in "nodes"`);
    let address = '';
    let address6: string | undefined;
    if (pd.address === undefined) add(`${p}.address`, 'is required');
    else {
      const a = addrField(`${p}.address`, pd.address, primary);
      address = podAddr(`${p}.address`, a, node, i);
      if (dual) {
        if (pd.address6 !== undefined) address6 = podAddr(`${p}.address6`, addrField(`${p}.address6`, pd.address6, 6), node, i);
        else if (a !== null && address && node) {
          // the same host offset in the node's IPv6 range as in its IPv4 range
          const c4 = nodeCidrs.get(node)![4]!;
          const c6 = nodeCidrs.get(node)![6]!;
          const off = a.n - c4.net;
          if (off >= c6.size) add(`${p}.address6`, `is required: ${address}'s offset in ${netText(c4)} does not fit into ${netText(c6)}`);
          else address6 = podAddr(`${p}.address6`, { fam: 6, n: c6.net + off }, node, i);
        }
      } else if (pd.address6 !== undefined) add(`${p}.address6`, `is only for a dual-stack cluster; this cluster is IPv${primary}-only (its pods' address is IPv${primary})`);
    }
    const labels = labelsOf(`${p}.labels`, pd.labels);
    if (problems.length === before) pods.push({ name, project, node, address, ...(address6 ? { address6 } : {}), labels });
  });

  // services
  const services: ClusterService[] = [];
  const vips = new Map<string, string>();
  if (dns) vips.set(dns, 'dns');
  if (dns6) vips.set(dns6, 'dns6');
  const vipField = (field: string, v: unknown, fam: Family, c: Net | null, cText: string, cField: string, p: string): string => {
    const a = addrField(field, v, fam);
    if (a === null) return '';
    const text = addrText(fam, a.n);
    if (c && !holds(c, a)) return (add(field, `${text} is not inside ${cField} ${cText}`), '');
    if (vips.has(text)) return (add(field, `${text} is also used by ${vips.get(text)}`), '');
    vips.set(text, p);
    return text;
  };
  list('services').forEach((s, i) => {
    const p = `services[${i}]`;
    if (!isObject(s)) return add(p, 'must be an object');
    unknown(s, `${p}.`, ['name', 'project', 'vip', 'vip6', 'ipFamilies', 'ports', 'selector']);
    const before = problems.length;
    const name = nameOf(`${p}.name`, s.name, 40);
    if (name.endsWith(SLICE6_SUFFIX)) add(`${p}.name`, `${show(name)} ends in "${SLICE6_SUFFIX}", the suffix of the dual-stack services' IPv6 EndpointSlices`);
    const project = typeof s.project === 'string' && projectNames.includes(s.project) ? s.project : '';
    if (!project) add(`${p}.project`, `${show(s.project)} is not a project in "projects"`);
    if (name && project && services.some((x) => x.name === name && x.project === project)) add(`${p}.name`, `${show(name)} is listed twice in project ${project}`);
    // ipFamilies (Kubernetes' Service.spec.ipFamilies): the families of its VIPs, primary first
    let ipFamilies: Family[] = s.vip6 !== undefined ? [4, 6] : [primary];
    if (s.ipFamilies !== undefined) {
      const ok = Array.isArray(s.ipFamilies) && s.ipFamilies.length >= 1 && s.ipFamilies.length <= 2 && s.ipFamilies.every((f) => f === 'IPv4' || f === 'IPv6') && new Set(s.ipFamilies).size === s.ipFamilies.length;
      if (!ok) add(`${p}.ipFamilies`, `${show(s.ipFamilies)} is not ["IPv4"], ["IPv6"], ["IPv4", "IPv6"] or ["IPv6", "IPv4"]`);
      else {
        ipFamilies = (s.ipFamilies as string[]).map((f) => (f === 'IPv4' ? 4 : 6));
        const missing = ipFamilies.filter((f) => !families.includes(f));
        if (missing.length > 0) add(`${p}.ipFamilies`, `lists IPv${missing[0]}, which the cluster does not have (its families: ${families.map((f) => `IPv${f}`).join(', ')})`);
        else if (dual && !ipFamilies.includes(4)) add(`${p}.ipFamilies`, 'an IPv6-only service in a dual-stack cluster is not supported here: list IPv4 too (vip and vip6)');
      }
    }
    let vip = '';
    if (s.vip === undefined) add(`${p}.vip`, 'is required');
    else vip = vipField(`${p}.vip`, s.vip, primary, sc, serviceCidr, 'serviceCidr', p);
    let vip6: string | undefined;
    if (dual && ipFamilies.includes(6)) {
      if (s.vip6 === undefined) add(`${p}.vip6`, 'is required: ipFamilies lists IPv6');
      else vip6 = vipField(`${p}.vip6`, s.vip6, 6, sc6, serviceCidr6!, 'serviceCidr6', p);
    } else if (s.vip6 !== undefined) {
      add(`${p}.vip6`, dual ? 'is set, but ipFamilies does not list IPv6' : `is only for a dual-stack cluster; this cluster is IPv${primary}-only (its services' vip is IPv${primary})`);
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
    if (problems.length === before) {
      const fams = s.ipFamilies !== undefined ? { ipFamilies: ipFamilies.map((f) => `IPv${f}` as const) } : {};
      services.push({ name, project, vip, ...(vip6 ? { vip6 } : {}), ...fams, ports, selector });
    }
  });

  // policies: after pods and services (a policy names a service or selects pods)
  const policies = validateClusterPolicies(
    Array.isArray(raw.policies) ? raw.policies.map((p) => (p && typeof p === 'object' && 'object' in p && 'project' in p ? (p as ClusterPolicy).object : p)) : raw.policies,
    { projects, pods, services },
    add,
  );

  if (problems.length > 0) throw new ClusterConfigError(file, problems);
  return {
    underlay: netText(ul!),
    overlay: netText(ol!),
    serviceCidr: netText(sc!),
    ...(sc6 ? { serviceCidr6: netText(sc6) } : {}),
    dns,
    ...(dns6 ? { dns6 } : {}),
    external,
    ...(external6 ? { external6 } : {}),
    nodes,
    projects,
    pods,
    services,
    policies,
  };
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
  /** Dual-stack: the IPv6 pod range and the pods' IPv6 gateway with prefix (fd00:128:1::1/64). */
  podCidr6?: string;
  gateway6?: string;
  /**
   * The node's IPv6 link-local address on the underlay and on the VXLAN link (fe80::N):
   * the next hop of IPv6 routes, since neither link has IPv6 addresses of its own.
   */
  linkLocal: string;
}

/** The infrastructure namespace's IPv6 link-local address on the underlay. */
export const INFRA_LINK_LOCAL = 'fe80::ffff';

const gatewayOf = (cidr: string) => {
  const c = parseNet(cidr) as Net;
  return `${addrText(c.fam, c.net + 1n)}/${c.len}`;
};

export function nodeLayouts(c: ClusterConfig): NodeLayout[] {
  const ul = parseCidr4(c.underlay) as Cidr4;
  const ol = parseCidr4(c.overlay) as Cidr4;
  return c.nodes.map((n, i) => ({
    name: n.name,
    index: i + 1,
    underlay: `${intToIp4(ul.net + i + 1)}/${ul.len}`,
    overlay: `${intToIp4(ol.net + i + 1)}/${ol.len}`,
    podCidr: n.podCidr,
    gateway: gatewayOf(n.podCidr),
    ...(n.podCidr6 ? { podCidr6: n.podCidr6, gateway6: gatewayOf(n.podCidr6) } : {}),
    linkLocal: `fe80::${(i + 1).toString(16)}`,
  }));
}

/** The infrastructure namespace's underlay address (cluster DNS and the external host live there). */
export function infraUnderlay(c: ClusterConfig): string {
  const ul = parseCidr4(c.underlay) as Cidr4;
  return `${intToIp4(ul.net + ul.size - 2)}/${ul.len}`;
}

/** Every address of a pod, primary first (Pod.status.podIPs). */
export function podAddresses(p: ClusterPod): string[] {
  return p.address6 ? [p.address, p.address6] : [p.address];
}

/** Every VIP of a service, primary first by its ipFamilies (Service.spec.clusterIPs). */
export function serviceVips(s: ClusterService): string[] {
  if (!s.vip6) return [s.vip];
  return s.ipFamilies?.[0] === 'IPv6' ? [s.vip6, s.vip] : [s.vip, s.vip6];
}

/** The cluster DNS addresses, primary first (the pods' resolv.conf nameservers). */
export function dnsAddresses(c: ClusterConfig): string[] {
  return c.dns6 ? [c.dns, c.dns6] : [c.dns];
}

export function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  const keys = Object.keys(selector);
  return keys.length > 0 && keys.every((k) => labels[k] === selector[k]);
}

/** The pods behind each service (the endpoints controller's job), sorted by name. */
export function serviceEndpoints(c: ClusterConfig, s: ClusterService): ClusterPod[] {
  return c.pods.filter((p) => p.project === s.project && selects(s.selector, p.labels)).sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * The kube-proxy rules of one node: each VIP:port DNATed to its endpoints' address of
 * the VIP's family, both families in one inet table, one transaction.
 */
export function kubeProxyRules(c: ClusterConfig, table: string): string {
  const lines = [`table inet ${table} {}`, `delete table inet ${table}`, `table inet ${table} {`, '  chain prerouting {', '    type nat hook prerouting priority dstnat; policy accept;'];
  for (const s of c.services) {
    for (const vip of serviceVips(s)) {
      const fam = familyOf(vip);
      const eps = serviceEndpoints(c, s).flatMap((p) => podAddresses(p).filter((a) => familyOf(a) === fam));
      if (eps.length === 0) continue;
      const ip = fam === 4 ? 'ip' : 'ip6';
      for (const port of s.ports) {
        const to = eps.length === 1 ? eps[0] : `numgen random mod ${eps.length} map { ${eps.map((a, i) => `${i} : ${a}`).join(', ')} }`;
        lines.push(`    ${ip} daddr ${vip} ${port.protocol} dport ${port.port} dnat ${ip} to ${to}`);
      }
    }
  }
  lines.push('  }', '}');
  return lines.join('\n') + '\n';
}

/**
 * The cluster DNS records in hosts-file form: dnsmasq answers A, AAAA and both
 * families' PTRs (in-addr.arpa, ip6.arpa) from it. A pod's name is its address with
 * "-" for "." or ":" (Kubernetes' <address>.<namespace>.pod.cluster.local).
 */
export function dnsHosts(c: ClusterConfig): string {
  const lines: string[] = [];
  for (const s of c.services) for (const vip of serviceVips(s)) lines.push(`${vip} ${s.name}.${s.project}.svc.cluster.local`);
  for (const p of c.pods) for (const a of podAddresses(p)) lines.push(`${a} ${podDnsLabel(a)}.${p.project}.pod.cluster.local`);
  return lines.join('\n') + '\n';
}
