/**
 * What a node agent needs to know about the cluster, and the one thing it tells
 * it: its pods' public keys and endpoints. Shaped after the Kubernetes API so a
 * backend over it is a straight mapping:
 *
 *   projects()           the protected projects (Namespaces opted in)
 *   pods(project)        Pods of namespace `project` (spec.nodeName, status.podIP,
 *                        metadata.labels; never a netns: that comes only from
 *                        the CNI registration on the node)
 *   services(project)    Services (spec.clusterIP, spec.ports, spec.selector)
 *   endpoints(project)   EndpointSlices (label kubernetes.io/service-name)
 *   pskFile(project)     a per-project Secret, mounted as a file
 *   peers(project)       public keys and endpoints the agents published, each with
 *                        the node whose agent published it (as the backend saw the
 *                        writer, never as the writer claims)
 *   publishPeer / withdrawPeer   write / remove this node's own pods' entries
 *   watch(project, fn)   informers: fn() after any change (level-triggered: the
 *                        agent re-reads everything and reconciles)
 *   policies(project)    TencPolicy objects as stored (optional; src/policy/policy.ts
 *                        validates them, all or nothing); a backend without it: none
 *
 * Only public keys travel through a registry; private keys stay in the pod proxies.
 *
 * Trust: a published key is believed only when it comes from the agent of the
 * pod's own node. Each backend makes the `node` of a PeerInfo the publisher's
 * identity as the store authenticated it (dir.ts: the owner of the node's
 * directory, below directories only root may write), and trustedPeers() drops
 * every entry whose node is not the pod's node, and every entry for a pod listed
 * on two nodes. So one compromised node can only lie about its own pods.
 *
 * Backends: DirectoryRegistry (dir.ts, the embedded default); open.ts picks one
 * from `tenc agent --registry SPEC`.
 */
import type { ServicePort } from '../control/config.js';

export interface PodInfo {
  project: string;
  name: string;
  node: string;
  /** The pod's primary IP (status.podIP): addresses[0]. */
  address: string;
  /** Every pod IP (status.podIPs: one per family on a dual-stack cluster), primary first. */
  addresses: string[];
  labels: Record<string, string>;
  /** Path of the pod's network namespace (/run/netns/NAME or /proc/PID/ns/net); null if unknown. */
  netns: string | null;
}

export interface ServiceInfo {
  project: string;
  name: string;
  /** The primary cluster IP (spec.clusterIP): vips[0]. */
  vip: string;
  /** Every cluster IP (spec.clusterIPs: one per family of a dual-stack service), primary first; absent: [vip]. */
  vips?: string[];
  ports: ServicePort[];
  selector: Record<string, string>;
}

export interface EndpointsInfo {
  project: string;
  service: string;
  /**
   * The ready pods behind the service (a dual-stack service has one EndpointSlice per
   * family: a backend may list the service more than once; mergeEndpoints() joins them).
   */
  pods: { name: string; address: string; node: string }[];
}

export interface PeerInfo {
  project: string;
  pod: string;
  node: string;
  /** Base64 Curve25519 public key of the pod's tenc proxy. */
  publicKey: string;
  /** "ip:port" where the pod's tenc listens. */
  endpoint: string;
}

/**
 * A TencPolicy object as the store holds it, before validation (src/policy/policy.ts):
 * `object` is the parsed JSON; `problem` says why it could not be read (not JSON, its
 * name differs from its place), and then the whole policy set is refused.
 */
export interface PolicyObject {
  project: string;
  /** The name of its place (file, key, metadata.name). */
  name: string;
  object: unknown;
  problem?: string;
}

export interface Watch {
  close(): void;
}

export interface Registry {
  /** The protected projects (Kubernetes: namespaces labelled tenc.io/protect=true), sorted. */
  projects(): Promise<string[]>;
  pods(project: string): Promise<PodInfo[]>;
  services(project: string): Promise<ServiceInfo[]>;
  endpoints(project: string): Promise<EndpointsInfo[]>;
  peers(project: string): Promise<PeerInfo[]>;
  /** A file holding the project's pre-shared key (`wg genpsk` form). */
  pskFile(project: string): Promise<string>;
  publishPeer(peer: PeerInfo): Promise<void>;
  /** Removes what this node published for the pod (a no-op when nothing is there). */
  withdrawPeer(project: string, node: string, pod: string): Promise<void>;
  /** Calls onChange (possibly more than once, possibly spuriously) after a change to the project's objects. */
  watch(project: string, onChange: () => void): Watch;
  /** The project's TencPolicy objects, sorted by name (optional: without it, no policies). */
  policies?(project: string): Promise<PolicyObject[]>;
  /** Releases connections (network backends); the registry is not used afterwards. */
  close?(): Promise<void>;
}

/** Everything one agent reads in one go. */
export interface ProjectView {
  pods: PodInfo[];
  services: ServiceInfo[];
  endpoints: EndpointsInfo[];
  peers: PeerInfo[];
}

/**
 * The published peers an agent may believe: the pod exists and the entry was
 * published by the agent of the pod's node. Anything else (a key for a pod of
 * another node, a pod that does not exist, a second entry for one pod) is
 * dropped and reported through onRejected. A pod name listed on two nodes (two
 * records of one pod that disagree) leaves its node unknown: no key for it is
 * believed, from either node.
 */
export function trustedPeers(pods: PodInfo[], peers: PeerInfo[], onRejected: (p: PeerInfo, why: string) => void = () => {}): PeerInfo[] {
  const nodesOf = new Map<string, string[]>();
  for (const p of pods) {
    const nodes = nodesOf.get(p.name);
    if (!nodes) nodesOf.set(p.name, [p.node]);
    else if (!nodes.includes(p.node)) nodes.push(p.node);
  }
  const out = new Map<string, PeerInfo>();
  for (const k of peers) {
    const nodes = nodesOf.get(k.pod);
    if (nodes === undefined) continue; // a pod being deleted, or not created yet
    if (nodes.length > 1) {
      onRejected(k, `the pod is listed on more than one node (${nodes.join(', ')}): no key for it is believed`);
      continue;
    }
    if (k.node !== nodes[0]) {
      onRejected(k, `published by node ${k.node}, but the pod runs on ${nodes[0]}`);
      continue;
    }
    if (out.has(k.pod)) {
      onRejected(k, 'a second entry for the pod');
      continue;
    }
    out.set(k.pod, k);
  }
  return [...out.values()];
}

/** One entry per service: the pods of every EndpointsInfo of that service, each pod once (first address kept). */
export function mergeEndpoints(list: EndpointsInfo[]): EndpointsInfo[] {
  const by = new Map<string, { e: EndpointsInfo; names: Set<string> }>();
  for (const e of list) {
    let m = by.get(e.service);
    if (!m) by.set(e.service, (m = { e: { ...e, pods: [] }, names: new Set() }));
    for (const p of e.pods) {
      if (m.names.has(p.name)) continue;
      m.names.add(p.name);
      m.e.pods.push(p);
    }
  }
  return [...by.values()].map((m) => m.e);
}

export async function readProjectView(r: Registry, project: string, onRejected?: (p: PeerInfo, why: string) => void): Promise<ProjectView> {
  const [pods, services, endpoints, peers] = await Promise.all([r.pods(project), r.services(project), r.endpoints(project), r.peers(project)]);
  return { pods, services, endpoints, peers: trustedPeers(pods, peers, onRejected) };
}
