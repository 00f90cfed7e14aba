/**
 * The peers' pod names for the peer_pod label (the agent's /metrics): which pod of
 * the project a peer key belongs to, from the registry as the agent trusts it
 * (trustedPeers: the key published by the agent of the pod's own node), so a
 * forged entry cannot put a wrong name on a peer's series.
 *
 * A scrape never waits for the registry: it uses the names known now and, when they
 * are older than the refresh interval, starts one refresh in the background. A
 * failed refresh keeps the last names. A key not (or no longer) in the registry
 * gets peer_pod="".
 */
import { trustedPeers, type Registry } from '../registry/registry.js';

export const REFRESH_MS = 10_000;

export class PeerNames {
  /** project -> public key -> pod name. */
  private names = new Map<string, Map<string, string>>();
  private fetchedAt = -Infinity;
  private refreshing: Promise<void> | null = null;
  /** The projects of the latest refresh. */
  private asked = new Set<string>();

  constructor(
    private readonly registry: Pick<Registry, 'pods' | 'peers'>,
    private readonly refreshMs = REFRESH_MS,
    private readonly onError: (project: string, err: Error) => void = () => {},
  ) {}

  /** The names known now for these projects (public key -> pod name); refreshes in the background when stale. */
  lookup(projects: string[]): Map<string, Map<string, string>> {
    // a project not asked for yet (a new one on this node) is read at once; a failing
    // registry is asked again only after the refresh interval
    const missing = projects.some((p) => !this.asked.has(p));
    if ((missing || Date.now() - this.fetchedAt >= this.refreshMs) && !this.refreshing) void this.refresh(projects);
    return this.names;
  }

  /** Reads the projects' pods and peers now (tests await it; scrapes do not). */
  refresh(projects: string[]): Promise<void> {
    if (this.refreshing) return this.refreshing;
    const unique = [...new Set(projects)];
    this.asked = new Set(unique);
    this.refreshing = (async () => {
      const next = new Map(this.names);
      for (const project of unique) {
        try {
          const [pods, peers] = await Promise.all([this.registry.pods(project), this.registry.peers(project)]);
          next.set(project, new Map(trustedPeers(pods, peers).map((p) => [p.publicKey, p.pod])));
        } catch (e) {
          this.onError(project, e as Error);
        }
      }
      // projects no pod of this node is in any more are forgotten
      for (const p of [...next.keys()]) if (!unique.includes(p)) next.delete(p);
      this.names = next;
      this.fetchedAt = Date.now();
    })().finally(() => (this.refreshing = null));
    return this.refreshing;
  }
}
