/**
 * The registry objects in their Kubernetes shapes (trimmed), read into the
 * registry interface's types. Pure: a backend that stores the objects as JSON
 * (etcd.ts) parses each once, when it arrives. Each reader returns the object, null
 * when it is left out as the Kubernetes backend leaves it out in the ordinary course
 * (a pod not scheduled yet, without an IP yet, finished or being deleted, on the host
 * network; a headless or ExternalName Service; a Service without a selector, reported;
 * an FQDN EndpointSlice), or a string saying why it is refused (the backend reports it
 * with its place and leaves it out).
 *
 * All three backends read their pods, Services and EndpointSlices with these functions
 * (kubernetes.ts too), so they take the same objects and say the same about a bad one,
 * each naming the object its own way (a file, a key, namespace/name).
 *
 * The checks are the Kubernetes API's and the pod's own: a value
 * the pod would refuse (a cluster IP "None", a pod or endpoint address that is not an
 * IP, a port out of 1-65535 or listed twice) would make the agent tell every client
 * pod a set-peer or set-services the pod refuses, at every reconcile.
 */
import { isIP } from 'node:net';
import { parseKey32, type ServicePort } from '../control/config.js';
import { parseEndpoint } from '../net/address.js';
import { DNS_LABEL } from '../net/names.js';
import { show } from '../net/parsed.js';
import type { EndpointsInfo, PeerInfo, PodInfo, PolicyObject, ServiceInfo } from './registry.js';

type Obj = Record<string, any>;
const str = (v: unknown): v is string => typeof v === 'string';

export const NAME = DNS_LABEL;
export const isName = (v: unknown): v is string => str(v) && v.length <= 63 && NAME.test(v);

/** At most this much of a value is quoted in a problem (every agent logs each problem). */
export const QUOTE_MAX = 64;

/** A value as a problem quotes it, cut to QUOTE_MAX characters with its full length (net/parsed.ts show). */
export const quote = (v: unknown): string => show(v, QUOTE_MAX);

export const nonEmpty = (v: unknown): v is string => typeof v === 'string' && v !== '';

/** The shape of a base64 32-byte key (`wg genkey`/`wg genpsk`): 43 characters and "=". */
export const KEY32_SHAPE = /^[A-Za-z0-9+/]{43}=$/;

/**
 * One object read by a reader of this file (podFromObject, serviceFromObject, ...), as
 * every backend reads it: the value; or null, when it is left out in the ordinary course
 * (a finished pod, a headless Service), or refused (`report` says why, "...: ignored"),
 * also when its reading threw (a shape no rule foresaw: that object is skipped, never
 * the project's other objects).
 */
export function readObject<O, T>(project: string, o: O, parse: (project: string, o: O, report: (why: string) => void) => T | string | null, report: (why: string) => void): T | null {
  let v: T | string | null;
  try {
    v = parse(project, o, report);
  } catch (e) {
    report(`cannot be read (${e instanceof Error ? e.message : String(e)}): ignored`);
    return null;
  }
  if (typeof v === 'string') {
    report(`${v}: ignored`);
    return null;
  }
  return v;
}

/**
 * A base64 32-byte key (`wg genkey`/`wg genpsk` form), not all zeros, canonical as
 * the pod's parser wants it (parseKey32: a lenient decoder would take other last
 * characters for the same bytes, and the pod would refuse the key later). For the
 * psk Secrets of the etcd and Kubernetes backends and the Kubernetes TencPeers.
 */
export function isKey32(v: unknown): v is string {
  if (typeof v !== 'string' || !KEY32_SHAPE.test(v)) return false;
  const k = parseKey32(v);
  return k.ok && !k.value.every((b) => b === 0);
}

/** Is the pod left out as finished or going: being deleted, or phase Succeeded or Failed (its IP may be another pod's by now). */
export function podGone(o: Obj): boolean {
  return !!o?.metadata?.deletionTimestamp || o?.status?.phase === 'Succeeded' || o?.status?.phase === 'Failed';
}

/**
 * A pod's IP addresses, primary first (status.podIP, then status.podIPs), each once:
 * `bad` lists the entries that are not IP addresses (left out). Empty strings are no
 * address yet.
 */
export function podAddresses(podIP: unknown, podIPs: unknown): { addresses: string[]; bad: string[] } {
  const raw = [podIP, ...(Array.isArray(podIPs) ? podIPs.map((x: Obj) => x?.ip) : [])].filter(nonEmpty);
  return { addresses: [...new Set(raw.filter((ip) => isIP(ip) !== 0))], bad: raw.filter((ip) => isIP(ip) === 0) };
}

/**
 * A Service's ports as the pod takes them (set-services): TCP or UDP (absent: TCP, the
 * API's default), 1-65535, each protocol and port once; others left out. An entry that
 * is not an object (null, a number, a string) is left out and named through `report`.
 */
export function servicePorts(list: unknown, report: (why: string) => void = () => {}): ServicePort[] {
  const out: ServicePort[] = [];
  const seen = new Set<string>(); // "tcp/80": a long list is read in one pass, not one per entry
  for (const p of Array.isArray(list) ? (list as unknown[]) : []) {
    if (p === null || typeof p !== 'object' || Array.isArray(p)) {
      report(`spec.ports: entry ${quote(p)} is not an object: that port ignored`);
      continue;
    }
    const proto = (p as Obj).protocol ?? 'TCP';
    const n = (p as Obj).port;
    if (proto !== 'TCP' && proto !== 'UDP') {
      report(`spec.ports: protocol ${quote(proto)} of port ${quote(n)} is not TCP or UDP: that port ignored`);
      continue;
    }
    if (!Number.isInteger(n) || n < 1 || n > 65535) {
      report(`spec.ports: port ${quote(n)} is not a port 1..65535: ignored`);
      continue;
    }
    const port: ServicePort = { protocol: proto === 'TCP' ? 'tcp' : 'udp', port: n };
    if (seen.has(`${port.protocol}/${n}`)) continue;
    seen.add(`${port.protocol}/${n}`);
    out.push(port);
  }
  return out;
}

/**
 * A pod's labels as the API holds them, a map of strings: an entry whose value is not a
 * string is left out (selectors compare strings), labels that are not an object are
 * none; both named through `report`.
 */
export function podLabels(v: unknown, report: (why: string) => void = () => {}): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) {
    report(`metadata.labels: ${quote(v)} is not an object: ignored`);
    return {};
  }
  const entries = Object.entries(v as Obj);
  const bad = entries.filter(([, x]) => !str(x)).map(([k]) => k);
  if (bad.length > 0) report(`metadata.labels: the value of ${bad.slice(0, 2).map(quote).join(', ')}${bad.length > 2 ? ` (and ${bad.length - 2} more)` : ''} is not a string: ignored`);
  // fromEntries, not assignment: a key "__proto__" stays a key
  return Object.fromEntries(entries.filter(([, x]) => str(x)));
}

/**
 * A Pod: spec.nodeName, status.podIP (and podIPs), labels. Never a netns: a pod's
 * network namespace comes only from the CNI registration on the node (a registry
 * object, e.g. an annotation, is something a tenant may write). Left out (null): not
 * scheduled yet, no IP yet, finished or being deleted, on the host network. As the
 * Kubernetes backend: an address that is not an IP is left out and named through
 * `report`, the pod kept with its other addresses (refused when it has none).
 */
export function podFromObject(project: string, o: Obj, report: (why: string) => void = () => {}): PodInfo | string | null {
  const m = o?.metadata;
  if (!str(m?.name)) return 'metadata.name: missing or not a string';
  if (!nonEmpty(o?.spec?.nodeName)) return null; // not scheduled yet
  if (podGone(o)) return null;
  // a hostNetwork pod has the node's network, not a namespace of its own: tenc cannot
  // protect it, and its address is the node's (as a member, every pod of the project
  // would route the node's address into tenc0 and refuse plaintext to it)
  if (o.spec.hostNetwork === true) return null;
  const { addresses, bad } = podAddresses(o?.status?.podIP, o?.status?.podIPs);
  if (bad.length > 0) {
    const why = `status.podIP(s): ${bad.slice(0, 2).map(quote).join(', ')} not an IP address`;
    if (addresses.length === 0) return why;
    report(`${why}: those addresses ignored`);
  }
  if (addresses.length === 0) return o?.status?.phase === 'Running' ? 'Running without status.podIP' : null;
  return { project, name: m.name, node: o.spec.nodeName, address: addresses[0], addresses, labels: podLabels(m.labels, report), netns: null };
}

/**
 * A Service: spec.clusterIP (and clusterIPs: dual-stack), spec.ports (TCP/UDP), spec.selector.
 * Left out (null): headless (clusterIP "None") or ExternalName (none): no virtual IP to route;
 * without a selector (as the Kubernetes backend: tenc routes only services that select
 * pods), named through `report`. Refused: spec.ports missing or not a list (the API
 * requires ports on a Service with a cluster IP, and an empty list would tell the pod
 * every port). A port entry that is not an object is named through `report` and left out.
 */
export function serviceFromObject(project: string, o: Obj, report: (why: string) => void = () => {}): ServiceInfo | string | null {
  if (!str(o?.metadata?.name)) return 'metadata.name: missing or not a string';
  const vip = o?.spec?.clusterIP;
  if (!nonEmpty(vip) || vip === 'None') return null;
  if (isIP(vip) === 0) return `spec.clusterIP: ${quote(vip)} is not an IP address`;
  const sel = o.spec.selector;
  if (!sel || typeof sel !== 'object' || Object.keys(sel).length === 0) {
    report('no selector: left out (tenc routes only services that select pods)');
    return null;
  }
  if (!Array.isArray(o.spec.ports)) return 'spec.ports: missing or not a list';
  const ports = servicePorts(o.spec.ports, report);
  // a pod reads no ports as every TCP and UDP port of the VIP: a Service whose ports are
  // all left out (SCTP only, bad entries) is not that Service
  if (ports.length === 0 && o.spec.ports.length > 0) return 'spec.ports: no TCP or UDP port 1..65535';
  const vips = clusterIps(vip, o.spec.clusterIPs);
  return { project, name: o.metadata.name, vip, ...(vips.length > 1 ? { vips } : {}), ports, selector: { ...sel } };
}

/**
 * A Service's cluster IPs, primary first: spec.clusterIP, then the other entries of
 * spec.clusterIPs that are IP addresses (at most one per family, as the API allows).
 */
export function clusterIps(primary: string, list: unknown): string[] {
  const out = [primary];
  for (const ip of Array.isArray(list) ? list : []) {
    if (!str(ip) || isIP(ip) === 0 || out.some((x) => x === ip || isIP(x) === isIP(ip))) continue;
    out.push(ip);
  }
  return out;
}

/**
 * An EndpointSlice (label kubernetes.io/service-name): its ready endpoints (a pod once).
 * Left out (null): an FQDN slice. endpoints null or absent is none (the API sends a slice
 * without endpoints as "endpoints": null, kubernetes/kubernetes#135968); another value
 * is refused. An endpoint whose address is not an IP is left out and named through `report`.
 */
export function endpointsFromObject(project: string, o: Obj, report: (why: string) => void = () => {}): EndpointsInfo | string | null {
  const service = o?.metadata?.labels?.['kubernetes.io/service-name'];
  if (!str(service)) return 'metadata.labels: no kubernetes.io/service-name';
  if (o.addressType !== undefined && o.addressType !== 'IPv4' && o.addressType !== 'IPv6') return null; // FQDN: not pods
  const list: unknown = o.endpoints ?? [];
  if (!Array.isArray(list)) return `endpoints: ${quote(list)} is not a list`;
  const pods: EndpointsInfo['pods'] = [];
  const names = new Set<string>(); // a long list is read in one pass, not one per entry
  for (const e of list as Obj[]) {
    if (e?.conditions?.ready === false) continue; // unknown counts as ready (API reference)
    const address = e?.addresses?.[0];
    const name = e?.targetRef?.kind === 'Pod' || e?.targetRef?.kind === undefined ? e?.targetRef?.name : undefined;
    if (!nonEmpty(address) || !nonEmpty(name)) continue;
    if (isIP(address) === 0) {
      report(`endpoint address ${quote(address)} is not an IP address: that endpoint ignored`);
      continue;
    }
    if (names.has(name)) continue;
    names.add(name);
    pods.push({ name, address, node: nonEmpty(e.nodeName) ? e.nodeName : '' });
  }
  return { project, service, pods };
}

/**
 * A published peer ({pod, publicKey, endpoint}) found at a place that names its
 * project, node and pod: the node is the place's (the authenticated publisher),
 * never a field; a value naming another pod than its place is refused. The key and
 * the endpoint are checked here as the pod's own parsers check them (parseKey32:
 * 44 characters of canonical base64, 32 bytes, not all zeros; parseEndpoint), so a
 * key the pod would refuse in set-peer is skipped where it is read, with the field
 * named, instead of failing later at every reconcile. Returns the peer, or why not
 * (a string naming the field; the backend adds the key's place).
 */
export function peerFromObject(project: string, node: string, pod: string, o: Obj): PeerInfo | string {
  if (o === null || typeof o !== 'object' || Array.isArray(o)) return 'not a JSON object';
  if (!str(o.pod)) return 'pod: missing or not a string';
  if (o.pod !== pod) return `pod: ${quote(o.pod)} differs from its place's name ${pod}`;
  const k = parseKey32(o.publicKey);
  if (!k.ok) return `publicKey: ${k.problem}`;
  if (k.value.every((b) => b === 0)) return 'publicKey: is the all-zero key';
  if (Buffer.from(k.value).toString('base64') !== o.publicKey) return 'publicKey: has characters around the key';
  const e = parseEndpoint(o.endpoint);
  if (!e.ok) return `endpoint: ${e.problem}`;
  return { project, pod, node, publicKey: o.publicKey, endpoint: o.endpoint };
}

/**
 * A TencPolicy found at a place named `name`: kept as it is (the agent validates the
 * whole set, src/policy/policy.ts); a metadata.name other than its place's is a problem.
 */
export function policyFromObject(project: string, name: string, o: Obj): PolicyObject {
  const n = o?.metadata?.name;
  if (n !== undefined && n !== name) return { project, name, object: o, problem: `metadata.name ${quote(n)} differs from its place's name ${name}` };
  return { project, name, object: o };
}
