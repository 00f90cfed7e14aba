/**
 * The local cluster file's "policies": TencPolicy objects in their Kubernetes shape
 * (src/policy/policy.ts), each with metadata.namespace naming a project of the file.
 * Checked at the file's gate like everything else in it (cluster-config.ts), as the
 * agents check them: shape, project, the service it names, overlapping encrypt/exempt,
 * tenc's own port exempt; a problem is reported as `policies[i].FIELD: problem` and
 * nothing is built or synced.
 */
import { resolvePolicies, type PolicyView } from '../policy/policy.js';
import { DEFAULT_LISTEN_PORT } from '../control/config.js';

export interface ClusterPolicy {
  project: string;
  name: string;
  /** The object as the file gives it (what the registry stores). */
  object: Record<string, unknown>;
}

interface ClusterLike {
  projects: { name: string }[];
  pods: { name: string; project: string; address: string; labels: Record<string, string> }[];
  services: { name: string; project: string; vip: string; ports: { protocol: string; port: number }[]; selector: Record<string, string> }[];
}

const isObject = (v: unknown): v is Record<string, any> => typeof v === 'object' && v !== null && !Array.isArray(v);
const selects = (sel: Record<string, string>, labels: Record<string, string>) => Object.keys(sel).length > 0 && Object.entries(sel).every(([k, v]) => labels[k] === v);

/** The registry view of one project of the file, for resolving its policies. */
export function projectPolicyView(c: ClusterLike, project: string): PolicyView {
  const pods = c.pods.filter((p) => p.project === project);
  const services = c.services.filter((s) => s.project === project);
  return {
    pods: pods.map((p) => ({ name: p.name, address: p.address, labels: p.labels })),
    services: services.map((s) => ({ name: s.name, vip: s.vip, ports: s.ports, selector: s.selector })),
    endpoints: services.map((s) => ({ service: s.name, pods: pods.filter((p) => selects(s.selector, p.labels)).map((p) => ({ name: p.name, address: p.address })) })),
  };
}

export function validateClusterPolicies(raw: unknown, c: ClusterLike, add: (field: string, problem: string) => void): ClusterPolicy[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) {
    add('policies', 'must be an array of TencPolicy objects');
    return [];
  }
  const out: ClusterPolicy[] = [];
  const index = new Map<string, number>();
  raw.forEach((o, i) => {
    const f = `policies[${i}]`;
    if (!isObject(o)) return add(f, 'must be a TencPolicy object');
    const ns = o.metadata?.namespace;
    if (typeof ns !== 'string' || !c.projects.some((p) => p.name === ns)) return add(`${f}.metadata.namespace`, `${JSON.stringify(ns)} is not a project in "projects"`);
    const name = typeof o.metadata?.name === 'string' ? o.metadata.name : '';
    if (index.has(`${ns}/${name}`)) return add(`${f}.metadata.name`, `${JSON.stringify(name)} is listed twice in project ${ns}`);
    index.set(`${ns}/${name}`, i);
    out.push({ project: ns, name, object: o });
  });
  for (const pr of c.projects) {
    const mine = out.filter((p) => p.project === pr.name);
    if (mine.length === 0) continue;
    // with the port every agent gives its pods (proxies.ts TENC_PORT): what they refuse, the file refuses
    const r = resolvePolicies(pr.name, mine.map((p) => p.object), projectPolicyView(c, pr.name), { listenPort: DEFAULT_LISTEN_PORT });
    if ('problems' in r) {
      for (const p of r.problems) {
        const name = p.policy.slice(p.policy.lastIndexOf('/') + 1);
        add(`policies[${index.get(`${pr.name}/${name}`) ?? '?'}].${p.field}`, p.problem);
      }
    }
  }
  return out;
}
