/**
 * The registry objects in their Kubernetes shapes (trimmed), read into the
 * registry interface's types. Pure: a backend that stores the objects as JSON
 * (etcd.ts) parses each once, when it arrives; null means "not an object of
 * that kind" and the backend reports it as a problem.
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

/**
 * A Pod: spec.nodeName, status.podIP (and podIPs), labels. Never a netns: a pod's
 * network namespace comes only from the CNI registration on the node (a registry
 * object, e.g. an annotation, is something a tenant may write).
 */
export function podFromObject(project: string, o: Obj): PodInfo | null {
  const m = o?.metadata;
  if (!str(m?.name) || !str(o?.spec?.nodeName) || !str(o?.status?.podIP)) return null;
  // a hostNetwork pod has the node's network, not a namespace of its own: tenc cannot
  // protect it, and its address is the node's (as a member, every pod of the project
  // would route the node's address into tenc0 and refuse plaintext to it)
  if (o.spec.hostNetwork === true) return null;
  const ips: string[] = Array.isArray(o.status.podIPs) ? o.status.podIPs.map((x: Obj) => x?.ip).filter(str) : [];
  return {
    project,
    name: m.name,
    node: o.spec.nodeName,
    address: o.status.podIP,
    addresses: [o.status.podIP, ...ips.filter((ip) => ip !== o.status.podIP)],
    labels: { ...(m.labels ?? {}) },
    netns: null,
  };
}

/** A Service: spec.clusterIP (and clusterIPs: dual-stack), spec.ports (TCP/UDP), spec.selector. */
export function serviceFromObject(project: string, o: Obj): ServiceInfo | null {
  if (!str(o?.metadata?.name) || !str(o?.spec?.clusterIP) || !Array.isArray(o.spec.ports)) return null;
  const ports: ServicePort[] = o.spec.ports
    .filter((p: Obj) => (p?.protocol === 'TCP' || p?.protocol === 'UDP') && Number.isInteger(p.port))
    .map((p: Obj) => ({ protocol: p.protocol.toLowerCase(), port: p.port }));
  const vip: string = o.spec.clusterIP;
  const vips = clusterIps(vip, o.spec.clusterIPs);
  return { project, name: o.metadata.name, vip, ...(vips.length > 1 ? { vips } : {}), ports, selector: { ...(o.spec.selector ?? {}) } };
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

/** An EndpointSlice (label kubernetes.io/service-name): its ready endpoints. */
export function endpointsFromObject(project: string, o: Obj): EndpointsInfo | null {
  const service = o?.metadata?.labels?.['kubernetes.io/service-name'];
  if (!str(service) || !Array.isArray(o.endpoints)) return null;
  const pods = (o.endpoints as Obj[])
    .filter((e) => str(e?.addresses?.[0]) && str(e?.targetRef?.name) && e?.conditions?.ready !== false)
    .map((e) => ({ name: e.targetRef.name as string, address: e.addresses[0] as string, node: str(e.nodeName) ? e.nodeName : '' }));
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
