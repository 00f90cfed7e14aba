/**
 * TencPolicy: which traffic of a project is encrypted and which is explicitly
 * plaintext (StarlingX-style policies, issue 15). Pure: parsing, validation and
 * resolution against the registry's view; no I/O.
 *
 *   apiVersion: tenc.io/v1alpha1
 *   kind: TencPolicy
 *   metadata: { name: metrics, namespace: alpha }        namespace = the project
 *   spec:
 *     service: web                  a Service of the project, or
 *     podSelector: { matchLabels: { app: web } }          pods by labels (exactly one of the two)
 *     ports: [{ protocol: TCP, port: 9100, endPort: 9102 }]   protocol TCP (default) or UDP
 *     mode: exempt                  encrypt (default) or exempt
 *
 * Semantics (README "Policies"): no policy, everything project-internal is
 * encrypted (as before policies existed). With policies, `exempt` ports of the
 * selected pods (and of the service's VIP) are plaintext in both directions; every
 * other project destination and port stays encrypted: the fail-safe default, so a
 * policy can only ever exempt explicitly, never downgrade by omission. `encrypt`
 * policies state the default for their ports: validated, shown in `tenc status`,
 * and they make an overlapping `exempt` an error (refused, both named).
 *
 * A policy set is all or nothing: one bad policy refuses the whole update and the
 * previous set stays in force (the agent logs that). An address of the registry's view
 * is not a policy's fault: one a pod could not take (a zone, an IPv4-mapped form) is
 * left out of the set and reported, so it never holds the previous set in force.
 */
import { parseAddress } from '../net/address.js';
import { DNS_LABEL as NAME } from '../net/names.js';
import { bad, ok, type Parsed } from '../net/parsed.js';

export const POLICY_API_VERSION = 'tenc.io/v1alpha1';
export const POLICY_KIND = 'TencPolicy';
export type PolicyMode = 'encrypt' | 'exempt';
export const POLICY_MODES: readonly PolicyMode[] = ['encrypt', 'exempt'];
export type PolicyProtocol = 'tcp' | 'udp';
export const POLICY_PROTOCOLS: readonly PolicyProtocol[] = ['tcp', 'udp'];
/** At most this many ports entries in one policy, and policies in one project (bounded rules). */
export const MAX_POLICY_PORTS = 64;
export const MAX_POLICIES = 256;

export interface PolicyPort {
  protocol: PolicyProtocol;
  port: number;
  /** Last port of the range (= port for a single port). */
  endPort: number;
}

export interface TencPolicy {
  project: string;
  name: string;
  /** A Service name of the project, or null (then podSelector). */
  service: string | null;
  /** matchLabels, or null (then service). */
  podSelector: Record<string, string> | null;
  ports: PolicyPort[];
  mode: PolicyMode;
}

export interface PolicyProblem {
  /** The object ("TencPolicy alpha/metrics") and the field ("spec.ports[0].endPort"). */
  policy: string;
  field: string;
  problem: string;
}

export class PolicyError extends Error {
  readonly code = 'ERR_TENC_POLICY';
  constructor(readonly problems: PolicyProblem[]) {
    super(problems.map((p) => `${p.policy}: ${p.field}: ${p.problem}`).join('; '));
    this.name = 'PolicyError';
  }
}

type Obj = Record<string, unknown>;
const isObject = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const show = (v: unknown) => JSON.stringify(v) ?? String(v);
const LABEL_KEY = /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;
/** The fields of metadata a Kubernetes object may carry (all but name and namespace ignored). */
const METADATA_FIELDS = ['name', 'namespace', 'uid', 'resourceVersion', 'generation', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'labels', 'annotations', 'ownerReferences', 'finalizers', 'managedFields', 'generateName', 'selfLink'];

/** "TencPolicy alpha/metrics" (or the name the object gives, or "(no name)"). */
function label(project: string, o: unknown): string {
  const n = isObject(o) && isObject(o.metadata) && typeof o.metadata.name === 'string' ? o.metadata.name : '(no name)';
  return `${POLICY_KIND} ${project}/${n}`;
}

/**
 * Parses one TencPolicy object (the Kubernetes shape). Unknown fields, a bad mode,
 * a port outside 1..65535, endPort < port, both or neither of service/podSelector:
 * each is a problem naming its field. The service's existence is checked by
 * resolvePolicies (it needs the registry's view).
 */
export function parsePolicy(project: string, o: unknown): { policy: TencPolicy } | { problems: PolicyProblem[] } {
  const who = label(project, o);
  const problems: PolicyProblem[] = [];
  const add = (field: string, problem: string) => void problems.push({ policy: who, field, problem });
  const unknown = (v: Obj, prefix: string, known: string[]) => {
    for (const k of Object.keys(v)) if (!known.includes(k)) add(prefix + k, `unknown field (known: ${known.join(', ')})`);
  };
  if (!isObject(o)) return { problems: [{ policy: who, field: '(object)', problem: 'must be a JSON object' }] };
  unknown(o, '', ['apiVersion', 'kind', 'metadata', 'spec', 'status']);
  if (o.apiVersion !== undefined && o.apiVersion !== POLICY_API_VERSION) add('apiVersion', `${show(o.apiVersion)} is not ${POLICY_API_VERSION}`);
  if (o.kind !== undefined && o.kind !== POLICY_KIND) add('kind', `${show(o.kind)} is not ${POLICY_KIND}`);
  let name = '';
  if (!isObject(o.metadata)) add('metadata', 'is required (an object with name)');
  else {
    unknown(o.metadata, 'metadata.', METADATA_FIELDS);
    const n = o.metadata.name;
    if (typeof n !== 'string' || !NAME.test(n) || n.length > 63) add('metadata.name', `${show(n)} is not a name (lowercase letters, digits, "-", at most 63)`);
    else name = n;
    if (o.metadata.namespace !== undefined && o.metadata.namespace !== project) add('metadata.namespace', `${show(o.metadata.namespace)} is not the project ${project}`);
  }
  const spec = o.spec;
  if (!isObject(spec)) {
    add('spec', 'is required (an object with service or podSelector, and ports)');
    return { problems };
  }
  unknown(spec, 'spec.', ['service', 'podSelector', 'ports', 'mode']);
  let service: string | null = null;
  let podSelector: Record<string, string> | null = null;
  if (spec.service !== undefined) {
    if (typeof spec.service !== 'string' || !NAME.test(spec.service) || spec.service.length > 63) add('spec.service', `${show(spec.service)} is not a Service name`);
    else service = spec.service;
  }
  if (spec.podSelector !== undefined) {
    const s = spec.podSelector;
    if (!isObject(s)) add('spec.podSelector', 'must be an object like {"matchLabels": {"app": "web"}}');
    else {
      unknown(s, 'spec.podSelector.', ['matchLabels']);
      if (!isObject(s.matchLabels) || Object.keys(s.matchLabels).length === 0) add('spec.podSelector.matchLabels', 'is required: at least one label (an empty selector would select every pod)');
      else {
        podSelector = {};
        for (const [k, v] of Object.entries(s.matchLabels)) {
          if (!LABEL_KEY.test(k) || k.length > 316) add(`spec.podSelector.matchLabels.${k}`, 'is not a label key');
          else if (typeof v !== 'string' || !LABEL_VALUE.test(v) || v.length > 63) add(`spec.podSelector.matchLabels.${k}`, `${show(v)} is not a label value`);
          else podSelector[k] = v;
        }
      }
    }
  }
  if (spec.service !== undefined && spec.podSelector !== undefined) add('spec', 'give service or podSelector, not both');
  if (spec.service === undefined && spec.podSelector === undefined) add('spec', 'needs service (a Service name) or podSelector (matchLabels)');
  let mode: PolicyMode = 'encrypt';
  if (spec.mode !== undefined) {
    if (!POLICY_MODES.includes(spec.mode as PolicyMode)) add('spec.mode', `${show(spec.mode)} is not one of ${POLICY_MODES.join(', ')}`);
    else mode = spec.mode as PolicyMode;
  }
  const ports: PolicyPort[] = [];
  if (!Array.isArray(spec.ports) || spec.ports.length === 0) add('spec.ports', 'is required: a non-empty array of {"protocol", "port", "endPort"}');
  else if (spec.ports.length > MAX_POLICY_PORTS) add('spec.ports', `${spec.ports.length} entries: at most ${MAX_POLICY_PORTS}`);
  else {
    spec.ports.forEach((q: unknown, i: number) => {
      const f = `spec.ports[${i}]`;
      if (!isObject(q)) return add(f, 'must be an object like {"protocol": "TCP", "port": 9100}');
      unknown(q, `${f}.`, ['protocol', 'port', 'endPort']);
      const proto = q.protocol === undefined ? 'tcp' : typeof q.protocol === 'string' ? q.protocol.toLowerCase() : '';
      if (!POLICY_PROTOCOLS.includes(proto as PolicyProtocol)) return add(`${f}.protocol`, `${show(q.protocol)} is not TCP or UDP`);
      const okPort = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535;
      if (!okPort(q.port)) return add(`${f}.port`, `${show(q.port)} is not a port 1..65535`);
      let end = q.port;
      if (q.endPort !== undefined) {
        if (!okPort(q.endPort)) return add(`${f}.endPort`, `${show(q.endPort)} is not a port 1..65535`);
        if (q.endPort < q.port) return add(`${f}.endPort`, `${q.endPort} is below port ${q.port}`);
        end = q.endPort;
      }
      const p: PolicyPort = { protocol: proto as PolicyProtocol, port: q.port, endPort: end };
      const dup = ports.findIndex((x) => x.protocol === p.protocol && x.port <= p.endPort && p.port <= x.endPort);
      if (dup >= 0) return add(f, `${formatPort(p)} overlaps spec.ports[${dup}]`);
      ports.push(p);
    });
  }
  if (problems.length > 0) return { problems };
  return { policy: { project, name, service, podSelector, ports, mode } };
}

/** "tcp/80" or "tcp/9100-9102". */
export function formatPort(p: PolicyPort): string {
  return `${p.protocol}/${p.port}${p.endPort !== p.port ? `-${p.endPort}` : ''}`;
}

/** The parts of the registry's view policies are resolved against. */
export interface PolicyView {
  pods: { name: string; address: string; addresses?: string[]; labels: Record<string, string> }[];
  services: { name: string; vip: string; ports: { protocol: string; port: number }[]; selector: Record<string, string> }[];
  endpoints: { service: string; pods: { name: string; address: string }[] }[];
}

/** One policy as the pods apply it: the addresses it covers and the pods it selects. */
export interface ResolvedPolicy {
  name: string;
  mode: PolicyMode;
  /** "service web" or "pods app=web". */
  target: string;
  /** Host CIDRs: the service VIP and its endpoints' addresses, or the selected pods' addresses; sorted. */
  addresses: string[];
  /** The pods that serve the ports (their server side): names, sorted. */
  pods: string[];
  ports: PolicyPort[];
}

/**
 * A registry address as the host CIDR a pod's set-policy takes (its gate: parseCidr's
 * canonical "a.b.c.d/32" or "x::y/128", lower case, compressed), or why it cannot be one.
 * The registry checks addresses with node's isIP, which also takes a zone
 * ("fe80::1%eth0", no address of a pod's project) and an IPv4-mapped form
 * ("::ffff:10.0.0.5": a pod's address never is; the IPv4 address is not read into it,
 * so no exemption reaches an address the registry did not give as such).
 */
export function hostCidr(address: string): Parsed<string> {
  if (address.includes('%')) return bad('has a zone');
  const a = parseAddress(address);
  if (!a.ok) return bad('is not an IPv4/IPv6 address');
  if (/^::ffff:[0-9a-f]{1,4}:[0-9a-f]{1,4}$/.test(a.value)) return bad('is IPv4-mapped');
  return ok(`${a.value}/${a.value.includes(':') ? 128 : 32}`);
}

const selects = (sel: Record<string, string>, labels: Record<string, string>) => Object.entries(sel).every(([k, v]) => labels[k] === v);

/** At most this many left-out addresses a report quotes (a message, not a list). */
const LEFT_OUT_SHOWN = 3;

/**
 * Resolves a project's policy objects against its view, all or nothing: every
 * object parsed, every service known, each service policy's port ranges within the
 * service's ports, no exempt port of tenc's own listen port, the limits a pod takes,
 * no address + port both encrypt and exempt. Returns the set sorted by name, or every
 * problem found. The view's addresses become canonical host CIDRs (hostCidr); one
 * that cannot is left out of its policy and named through `report` (a problem of the
 * registry's, not of the set). Work is linear in the view and the set (Maps and Sets,
 * the limits checked before the overlap): it runs on the agent's event loop.
 */
export function resolvePolicies(
  project: string,
  objects: unknown[],
  view: PolicyView,
  opts: { listenPort?: number; report?: (p: PolicyProblem) => void } = {},
): { policies: ResolvedPolicy[] } | { problems: PolicyProblem[] } {
  const problems: PolicyProblem[] = [];
  const parsed = new Map<string, TencPolicy>();
  if (objects.length > MAX_POLICIES) return { problems: [{ policy: `project ${project}`, field: '(policies)', problem: `${objects.length} policies: at most ${MAX_POLICIES}` }] };
  for (const o of objects) {
    const r = parsePolicy(project, o);
    if ('problems' in r) problems.push(...r.problems);
    else if (parsed.has(r.policy.name)) problems.push({ policy: `${POLICY_KIND} ${project}/${r.policy.name}`, field: 'metadata.name', problem: 'listed twice' });
    else parsed.set(r.policy.name, r.policy);
  }
  const hosts = new Map<string, Parsed<string>>(); // each address parsed once, however many policies name it
  const hostOf = (a: string) => hosts.get(a) ?? hosts.set(a, hostCidr(a)).get(a)!;
  const services = firstByKey(view.services, (s) => s.name);
  const endpoints = firstByKey(view.endpoints, (e) => e.service);
  // the view's pods by name (their places in view.pods, in order), made on first use
  let podPlaces: Map<string, number[]> | null = null;
  const placesOf = (name: string): number[] => {
    if (podPlaces === null) {
      podPlaces = new Map();
      view.pods.forEach((x, i) => void (podPlaces!.get(x.name) ?? podPlaces!.set(x.name, []).get(x.name)!).push(i));
    }
    return podPlaces.get(name) ?? [];
  };
  // what a target selects, worked out once however many policies name it: [address,
  // whose] as the view gives them become host CIDRs, or are left out (why, whose)
  const targets = new Map<string, { pods: string[]; addresses: string[]; leftOut: string[] }>();
  const select = (target: string, given: () => { pods: string[]; given: [string, string][] }) => {
    const known = targets.get(target);
    if (known) return known;
    const g = given();
    const addresses = new Set<string>();
    const leftOut = new Map<string, string>();
    for (const [a, whose] of g.given) {
      const h = hostOf(a);
      if (h.ok) addresses.add(h.value);
      else if (!leftOut.has(a)) leftOut.set(a, `${JSON.stringify(a)} (${whose}) ${h.problem}`);
    }
    const t = { pods: [...new Set(g.pods)].sort(), addresses: [...addresses].sort(), leftOut: [...leftOut.values()] };
    targets.set(target, t);
    return t;
  };
  const out: ResolvedPolicy[] = [];
  for (const p of parsed.values()) {
    const who = `${POLICY_KIND} ${project}/${p.name}`;
    const add = (field: string, problem: string) => void problems.push({ policy: who, field, problem });
    let target: string;
    let chosen: { pods: string[]; addresses: string[]; leftOut: string[] };
    if (p.service !== null) {
      target = `service ${p.service}`;
      const s = services.get(p.service);
      if (!s) {
        add('spec.service', `${p.service}: no such Service in project ${project} (known: ${view.services.map((x) => x.name).join(', ') || 'none'})`);
        continue;
      }
      const refused = servicePortProblems(p, s);
      for (const [field, problem] of refused) add(field, problem);
      if (refused.length > 0) continue;
      chosen = select(target, () => {
        const eps = endpoints.get(s.name)?.pods ?? [];
        const named = new Set(eps.map((e) => e.name));
        const given: [string, string][] = [[s.vip, `service ${s.name}`], ...eps.map((e): [string, string] => [e.address, `endpoint ${e.name}`])];
        // the endpoints' pods in the view's order, found by name (not a scan of the view per service)
        const places = [...named].flatMap(placesOf).sort((a, b) => a - b);
        for (const i of places) for (const a of view.pods[i]!.addresses ?? [view.pods[i]!.address]) given.push([a, `pod ${view.pods[i]!.name}`]);
        return { pods: [...named], given };
      });
    } else {
      const sel = p.podSelector!;
      target = `pods ${Object.entries(sel).map(([k, v]) => `${k}=${v}`).join(',')}`;
      chosen = select(target, () => {
        const list = view.pods.filter((x) => selects(sel, x.labels));
        return { pods: list.map((x) => x.name), given: list.flatMap((x) => (x.addresses ?? [x.address]).map((a): [string, string] => [a, `pod ${x.name}`])) };
      });
    }
    const n = chosen.leftOut.length;
    if (n > 0 && opts.report) {
      const more = n > LEFT_OUT_SHOWN ? ` (and ${n - LEFT_OUT_SHOWN} more)` : '';
      opts.report({ policy: who, field: '(addresses)', problem: `left out ${n} address(es) a pod cannot take as a host CIDR: ${chosen.leftOut.slice(0, LEFT_OUT_SHOWN).join(', ')}${more}` });
    }
    if (p.mode === 'exempt' && opts.listenPort !== undefined) {
      p.ports.forEach((q, i) => {
        if (q.protocol === 'udp' && q.port <= opts.listenPort! && opts.listenPort! <= q.endPort) add(`spec.ports[${i}]`, `${formatPort(q)} holds udp/${opts.listenPort}, tenc's own port: it cannot be exempt`);
      });
    }
    out.push({ name: p.name, mode: p.mode, target, addresses: [...chosen.addresses], pods: [...chosen.pods], ports: p.ports });
  }
  // what a pod's set-policy would refuse, refused here (the previous set stays in force)
  // rather than by every pod at every reconcile; first, as they bound the overlap's work
  const limits: PolicyProblem[] = [];
  for (const p of out) {
    if (p.addresses.length > MAX_POLICY_ADDRESSES) limits.push({ policy: `${POLICY_KIND} ${project}/${p.name}`, field: 'spec', problem: `selects ${p.addresses.length} addresses: at most ${MAX_POLICY_ADDRESSES}` });
  }
  const pairs = exemptPairs(out);
  if (pairs > MAX_POLICY_PAIRS) limits.push({ policy: `project ${project}`, field: '(policies)', problem: `${pairs} exempt address x port pairs: at most ${MAX_POLICY_PAIRS} (each is a routing rule in every pod)` });
  const bytes = JSON.stringify(out).length;
  if (bytes > MAX_POLICY_SET_BYTES) limits.push({ policy: `project ${project}`, field: '(policies)', problem: `${bytes} bytes as sent to a pod: at most ${MAX_POLICY_SET_BYTES} (one control request)` });
  if (limits.length > 0) return { problems: [...problems, ...limits] };
  problems.push(...overlaps(project, out));
  if (problems.length > 0) return { problems };
  return { policies: out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)) };
}

/** The first item of each key (as Array.find would give it), by key. */
function firstByKey<T>(list: readonly T[], key: (x: T) => string): Map<string, T> {
  const m = new Map<string, T>();
  for (const x of list) if (!m.has(key(x))) m.set(key(x), x);
  return m;
}

/**
 * A service policy's ports: each range within the service's ports (every port of it
 * one of theirs), else [field, problem]. Refused rather than cut down to the service's
 * ports: a range wider than the service is a podSelector policy's business (it exempts
 * every port of the endpoint pods, their own outgoing connections' included), and the
 * set in force stays what the object says.
 */
function servicePortProblems(p: TencPolicy, s: PolicyView['services'][number]): [string, string][] {
  const ports = s.ports.map((sp) => `${sp.protocol}/${sp.port}`);
  const have = new Set(ports);
  const list = ports.join(', ') || 'none';
  const out: [string, string][] = [];
  p.ports.forEach((q, i) => {
    // the first port of the range the service lacks (at most |s.ports| + 1 steps)
    let missing = q.port;
    while (missing <= q.endPort && have.has(`${q.protocol}/${missing}`)) missing++;
    if (missing > q.endPort) return;
    const some = s.ports.some((sp) => sp.protocol === q.protocol && sp.port >= q.port && sp.port <= q.endPort);
    out.push([
      `spec.ports[${i}]`,
      some
        ? `${formatPort(q)} reaches beyond the ports of service ${s.name} (${list}): ${q.protocol}/${missing} is not one of them (name the service's ports; a podSelector policy covers other ports of its pods)`
        : `${formatPort(q)} is not a port of service ${s.name} (${list})`,
    ]);
  });
  return out;
}

/**
 * Overlapping encrypt/exempt: a shared address (or pod) and a shared port of one
 * protocol, one problem per exempt port range and encrypt policy, naming the first
 * shared address in the exempt policy's order. Indexed: the encrypt policies by
 * address and by pod, each one's ranges of a protocol sorted for a binary search
 * (a policy's ranges never overlap each other, parsePolicy).
 */
function overlaps(project: string, set: readonly ResolvedPolicy[]): PolicyProblem[] {
  const encrypts = set.filter((p) => p.mode === 'encrypt');
  if (encrypts.length === 0) return [];
  const byAddress = new Map<string, number[]>();
  const byPod = new Map<string, number[]>();
  const index = (m: Map<string, number[]>, key: string, k: number) => {
    const l = m.get(key);
    if (l) l.push(k);
    else m.set(key, [k]);
  };
  const ranges = encrypts.map((e, k) => {
    for (const a of e.addresses) index(byAddress, a, k);
    for (const n of e.pods) index(byPod, n, k);
    const of = (proto: PolicyProtocol) => e.ports.filter((r) => r.protocol === proto).sort((a, b) => a.port - b.port);
    return { tcp: of('tcp'), udp: of('udp') };
  });
  const out: PolicyProblem[] = [];
  for (const x of set) {
    if (x.mode !== 'exempt') continue;
    const shared = new Map<number, string>(); // encrypt policy -> what x shares with it
    for (const a of x.addresses) for (const k of byAddress.get(a) ?? []) if (!shared.has(k)) shared.set(k, a);
    for (const n of x.pods) {
      if (shared.size === encrypts.length) break;
      for (const k of byPod.get(n) ?? []) if (!shared.has(k)) shared.set(k, '(a shared pod)');
    }
    for (const [k, e] of encrypts.entries()) {
      const on = shared.get(k);
      if (on === undefined) continue;
      x.ports.forEach((q, i) => {
        const o = firstOverlap(ranges[k][q.protocol], q);
        if (o) out.push({ policy: `${POLICY_KIND} ${project}/${x.name}`, field: `spec.ports[${i}]`, problem: `${formatPort(q)} overlaps ${formatPort(o)} of encrypt policy ${e.name} on ${on}: a port is either encrypted or exempt` });
      });
    }
  }
  return out;
}

/** The lowest range of `sorted` (disjoint, by port) that overlaps q, or undefined. */
function firstOverlap(sorted: readonly PolicyPort[], q: PolicyPort): PolicyPort | undefined {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid].endPort < q.port) lo = mid + 1;
    else hi = mid;
  }
  const r = sorted[lo];
  return r !== undefined && r.port <= q.endPort ? r : undefined;
}

/** What one pod is told (control op set-policy): each policy, and whether this pod serves its ports. */
export interface PodPolicy {
  name: string;
  mode: PolicyMode;
  target: string;
  addresses: string[];
  ports: PolicyPort[];
  /** This pod is selected: the ports are its own (server side). */
  local: boolean;
}

export function podPolicies(resolved: ResolvedPolicy[], pod: string): PodPolicy[] {
  return resolved.map((r) => ({ name: r.name, mode: r.mode, target: r.target, addresses: r.addresses, ports: r.ports, local: r.pods.includes(pod) }));
}

/** At most this many addresses in one policy as sent to a pod. */
export const MAX_POLICY_ADDRESSES = 4096;
/**
 * At most this many address x port-range pairs in a pod's whole set: each is a policy
 * routing rule, added one by one and walked by every packet (4096 addresses x 64 ports
 * would be 262,144 of them).
 */
export const MAX_POLICY_PAIRS = 4096;
/** At most this much of a set as one pod's set-policy carries it (the control socket takes lines up to 1 MiB). */
export const MAX_POLICY_SET_BYTES = 900_000;

/** The routing rules a set asks for at most: an exempt policy's addresses x port ranges (encrypt ones add none). */
function exemptPairs(set: readonly { mode: PolicyMode; addresses: readonly string[]; ports: readonly unknown[] }[]): number {
  return set.reduce((n, p) => n + (p.mode === 'exempt' ? p.addresses.length * p.ports.length : 0), 0);
}

/**
 * Checks a set-policy request's `policies` (the control socket's gate): an array of
 * PodPolicy, every field present and well-formed, unknown fields refused. Returns
 * the trusted value or the first problem with its field.
 */
export function validatePodPolicies(v: unknown, isHostCidr: (c: string) => boolean): { policies: PodPolicy[] } | { field: string; problem: string } {
  if (!Array.isArray(v)) return { field: 'policies', problem: 'must be an array' };
  if (v.length > MAX_POLICIES) return { field: 'policies', problem: `at most ${MAX_POLICIES}` };
  const out: PodPolicy[] = [];
  for (const [i, p] of v.entries()) {
    const f = `policies[${i}]`;
    if (!isObject(p)) return { field: f, problem: 'must be an object' };
    for (const k of Object.keys(p)) if (!['name', 'mode', 'target', 'addresses', 'ports', 'local'].includes(k)) return { field: `${f}.${k}`, problem: 'unknown field' };
    if (typeof p.name !== 'string' || !NAME.test(p.name) || p.name.length > 63) return { field: `${f}.name`, problem: `${show(p.name)} is not a name` };
    if (!POLICY_MODES.includes(p.mode as PolicyMode)) return { field: `${f}.mode`, problem: `${show(p.mode)} is not one of ${POLICY_MODES.join(', ')}` };
    if (typeof p.target !== 'string' || p.target.length > 400) return { field: `${f}.target`, problem: 'must be a string' };
    if (typeof p.local !== 'boolean') return { field: `${f}.local`, problem: 'must be true or false' };
    if (!Array.isArray(p.addresses) || p.addresses.length > MAX_POLICY_ADDRESSES) return { field: `${f}.addresses`, problem: `must be an array of at most ${MAX_POLICY_ADDRESSES} host CIDRs` };
    for (const [j, a] of p.addresses.entries()) if (typeof a !== 'string' || !isHostCidr(a)) return { field: `${f}.addresses[${j}]`, problem: `${show(a)} is not a host CIDR (a.b.c.d/32 or x::y/128, canonical)` };
    if (!Array.isArray(p.ports) || p.ports.length === 0 || p.ports.length > MAX_POLICY_PORTS) return { field: `${f}.ports`, problem: `must be an array of 1..${MAX_POLICY_PORTS} ports` };
    const ports: PolicyPort[] = [];
    for (const [j, q] of p.ports.entries()) {
      const g = `${f}.ports[${j}]`;
      if (!isObject(q)) return { field: g, problem: 'must be an object' };
      for (const k of Object.keys(q)) if (!['protocol', 'port', 'endPort'].includes(k)) return { field: `${g}.${k}`, problem: 'unknown field' };
      if (!POLICY_PROTOCOLS.includes(q.protocol as PolicyProtocol)) return { field: `${g}.protocol`, problem: `${show(q.protocol)} is not tcp or udp` };
      const ok = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x) && x >= 1 && x <= 65535;
      if (!ok(q.port)) return { field: `${g}.port`, problem: `${show(q.port)} is not a port 1..65535` };
      if (!ok(q.endPort) || q.endPort < q.port) return { field: `${g}.endPort`, problem: `${show(q.endPort)} is not a port from ${q.port} to 65535` };
      ports.push({ protocol: q.protocol as PolicyProtocol, port: q.port, endPort: q.endPort });
    }
    out.push({ name: p.name, mode: p.mode as PolicyMode, target: p.target, addresses: [...(p.addresses as string[])], ports, local: p.local });
  }
  const pairs = exemptPairs(out);
  if (pairs > MAX_POLICY_PAIRS) return { field: 'policies', problem: `${pairs} exempt address x port pairs, at most ${MAX_POLICY_PAIRS} (each is a routing rule)` };
  return { policies: out };
}
