/**
 * What each pod of a project should be told, from one view of the registry (pure):
 * its peers (every other keyed project pod, with the VIPs it reaches through that
 * pod), the VIPs it serves, and for its DNS proxy the keyed endpoints and the
 * project's members; and the control requests that move a pod from what was applied
 * to what is wanted (removals first). Below agent.ts (the reconciler that sends
 * them) and proxies.ts (the configs the proxies start with); above the registry's types.
 */
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import type { ServiceConfig } from '../control/config.js';
import { mergeEndpoints, type PodInfo, type ProjectView, type ServiceInfo } from '../registry/registry.js';

export interface DesiredPeer {
  publicKey: string;
  endpoint: string;
  allowedIps: string[];
}

export interface DesiredPod {
  peers: DesiredPeer[];
  services: { vip: string; ports: ServiceConfig['ports'] }[];
  /** For the pod's DNS proxy: each VIP's endpoints that have a key (the pod itself included). */
  endpoints: { vip: string; addresses: string[] }[];
  /**
   * For the pod's DNS proxy: every project pod address and service VIP, with a key or
   * not (set-members), so first-use classification never takes one for another
   * project's: without a peer it is dropped, not bypassed in plaintext.
   */
  members: string[];
}

/** An address as a host route: /32 for IPv4, /128 for IPv6. */
export function host(addr: string): string {
  return `${addr}/${addr.includes(':') ? 128 : 32}`;
}

/** Every address of a pod (dual-stack: one per family), primary first. */
function podAddresses(p: PodInfo): string[] {
  return p.addresses && p.addresses.length > 0 ? p.addresses : [p.address];
}

function pick<T>(client: string, service: string, items: T[]): T {
  const h = createHash('sha256').update(`${client}/${service}`).digest();
  return items[h.readUInt32BE(0) % items.length];
}

/**
 * What each pod of the project should be told, from one view of the registry. Pure.
 * A service VIP is routed, per client, to one of its endpoints that has a key
 * (spread by a hash of client and service); a pod never routes its own VIP.
 */
export function desiredState(view: ProjectView, pod: PodInfo): DesiredPod {
  const podNames = new Set(view.pods.map((p) => p.name));
  const keyed = new Map(view.peers.filter((k) => podNames.has(k.pod)).map((k) => [k.pod, k]));
  const peers = new Map<string, DesiredPeer>();
  for (const p of view.pods) {
    const k = keyed.get(p.name);
    if (!k || p.name === pod.name) continue;
    peers.set(p.name, { publicKey: k.publicKey, endpoint: k.endpoint, allowedIps: podAddresses(p).map(host) });
  }
  const byName = new Map(view.pods.map((p) => [p.name, p]));
  const services: DesiredPod['services'] = [];
  const endpoints: DesiredPod['endpoints'] = [];
  for (const s of view.services) {
    const eps = mergeEndpoints(view.endpoints.filter((e) => e.service === s.name))[0]?.pods ?? [];
    const vips = serviceVips(s);
    // each VIP's endpoints in its own family (a dual-stack service: the IPv6 VIP leads to the pods' IPv6 addresses)
    for (const vip of vips) {
      const fam = isIP(vip);
      const keyedEps = eps
        .filter((e) => keyed.has(e.name))
        .flatMap((e) => [e.address, ...(byName.get(e.name) ? podAddresses(byName.get(e.name)!) : [])].filter((a) => isIP(a) === fam).slice(0, 1))
        .sort();
      if (keyedEps.length > 0) endpoints.push({ vip, addresses: keyedEps });
    }
    if (eps.some((e) => e.name === pod.name)) {
      // a VIP the pod has no address of its family for is not served (the pod could not answer it)
      for (const vip of vips) if (podAddresses(pod).some((a) => isIP(a) === isIP(vip))) services.push({ vip, ports: s.ports });
      continue;
    }
    const usable = eps.filter((e) => peers.has(e.name)).sort((a, b) => a.name.localeCompare(b.name));
    if (usable.length === 0) continue;
    // every VIP of the service through the same endpoint pod
    peers.get(pick(pod.name, s.name, usable).name)!.allowedIps.push(...vips.map(host));
  }
  const members = [...new Set([...view.pods.flatMap((p) => podAddresses(p).map(host)), ...view.services.flatMap((s) => serviceVips(s).map(host))])].sort();
  return { peers: [...peers.values()].sort((a, b) => a.publicKey.localeCompare(b.publicKey)), services, endpoints, members };
}

/** Every cluster IP of a service, primary first. */
export function serviceVips(s: ServiceInfo): string[] {
  return s.vips && s.vips.length > 0 ? s.vips : [s.vip];
}

/** The control requests that turn `applied` into `desired`: removals first. */
export function peerChanges(applied: Map<string, string>, desired: DesiredPeer[]): { remove: string[]; set: DesiredPeer[] } {
  const want = new Map(desired.map((d) => [d.publicKey, d]));
  const remove = [...applied.keys()].filter((k) => !want.has(k));
  const set = desired.filter((d) => applied.get(d.publicKey) !== JSON.stringify(d));
  return { remove, set };
}
