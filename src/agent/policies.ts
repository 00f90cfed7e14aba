/**
 * The agent's side of TencPolicy (src/policy/policy.ts): one project's policy set,
 * resolved against each view of the registry, all or nothing. A set with one bad
 * policy (unknown field or service, bad port or mode, overlapping encrypt/exempt,
 * unreadable object) is refused whole: the previous set stays in force, and the
 * refusal is logged once per distinct set of problems, naming every field. Before
 * any set was accepted, the set in force is empty: everything encrypted.
 */
import type { Logger } from '../log.js';
import type { PolicyObject, ProjectView } from '../registry/registry.js';
import { podPolicies, resolvePolicies, type PodPolicy, type PolicyProblem, type ResolvedPolicy } from '../policy/policy.js';

export class ProjectPolicies {
  private current: ResolvedPolicy[] = [];
  private currentKey = '[]';
  private lastRefusal = '';
  /** The addresses left out at the last resolve (logged when they change). */
  private lastLeftOut = '';
  /** Accepted and refused updates (tests, status). */
  accepted = 0;
  refused = 0;

  constructor(
    private readonly project: string,
    private readonly listenPort: number,
    private readonly log: Logger,
  ) {}

  private lastReadError = '';

  /**
   * Reads the objects (a registry that cannot, e.g. a cluster without the CRD: the
   * previous set stays in force, logged once per error) and updates the set.
   */
  async refresh(read: (() => Promise<PolicyObject[]>) | undefined, view: Pick<ProjectView, 'pods' | 'services' | 'endpoints'>): Promise<ResolvedPolicy[]> {
    let objects: PolicyObject[];
    try {
      objects = read ? await read() : [];
    } catch (e) {
      const msg = (e as Error).message;
      if (msg !== this.lastReadError) {
        this.lastReadError = msg;
        this.log.warn({ project: this.project, err: msg, inForce: this.current.map((p) => p.name) }, 'cannot read policies: the previous policy set stays in force');
      }
      return this.current;
    }
    this.lastReadError = '';
    return this.update(objects, view);
  }

  /** Resolves the stored objects against the view; returns the set in force afterwards. */
  update(objects: PolicyObject[], view: Pick<ProjectView, 'pods' | 'services' | 'endpoints'>): ResolvedPolicy[] {
    const unreadable: PolicyProblem[] = objects
      .filter((o) => o.problem !== undefined)
      .map((o) => ({ policy: `TencPolicy ${this.project}/${o.name}`, field: '(object)', problem: o.problem! }));
    const leftOut: PolicyProblem[] = [];
    const r =
      unreadable.length > 0
        ? { problems: unreadable }
        : resolvePolicies(this.project, objects.map((o) => o.object), view, { listenPort: this.listenPort, report: (p) => leftOut.push(p) });
    // a registry address no pod can take (a zone id, a mapped IPv4) is left out of its
    // policy, never the set; said once, and again when what is left out changes
    const leftKey = JSON.stringify(leftOut);
    if (leftKey !== this.lastLeftOut) {
      this.lastLeftOut = leftKey;
      if (leftOut.length > 0) this.log.warn({ project: this.project, problems: leftOut.map((p) => `${p.policy}: ${p.field}: ${p.problem}`) }, 'policy addresses left out');
    }
    if ('problems' in r) {
      const key = JSON.stringify(r.problems);
      if (key !== this.lastRefusal) {
        this.lastRefusal = key;
        this.refused++;
        this.log.warn(
          { project: this.project, problems: r.problems.map((p) => `${p.policy}: ${p.field}: ${p.problem}`), inForce: this.current.map((p) => p.name) },
          'policy update refused: the previous policy set stays in force',
        );
      }
      return this.current;
    }
    this.lastRefusal = '';
    const key = JSON.stringify(r.policies);
    if (key !== this.currentKey) {
      this.current = r.policies;
      this.currentKey = key;
      this.accepted++;
      this.log.info({ project: this.project, policies: r.policies.map((p) => `${p.name}:${p.mode}`) }, 'policy set accepted');
    }
    return this.current;
  }

  /** The set in force as one pod is told it. */
  forPod(pod: string): PodPolicy[] {
    return podPolicies(this.current, pod);
  }
}
