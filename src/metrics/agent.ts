/**
 * The agent's own metrics as prom-client objects (names in names.ts), the hooks
 * the agent calls, and a registry wrapper that times and counts every registry call.
 * CNI: the agent's CNI server calls cniRequest(command, ok, seconds) per request.
 */
import { Counter, Gauge, Histogram, Registry as PromRegistry, collectDefaultMetrics } from 'prom-client';
import type { Registry } from '../registry/registry.js';
import { AGENT_HISTOGRAMS, AGENT_METRICS } from './names.js';

/**
 * prom-client's process_* and nodejs_* metrics, less the three gauges named
 * *_total that promtool's lint rejects (nodejs_active_{handles,requests,resources}
 * without the suffix stay).
 */
export function addProcessMetrics(registry: PromRegistry): void {
  collectDefaultMetrics({ register: registry });
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);
}

/** What the agent reports; every method optional to call, cheap, never throws. */
export interface AgentHooks {
  reconciled(ok: boolean, seconds: number): void;
  proxyStarted(how: 'started' | 'adopted'): void;
  proxyLost(): void;
  /** The proxies one project's reconciler runs now (a node agent runs one reconciler per project). */
  proxies(n: number, project?: string): void;
  /**
   * One request of the CNI plugin on the node socket (command: ADD, DEL, CHECK,
   * STATUS), its result ("ok" or the error code the agent answered: EINVAL, ENOENT,
   * EEXIST, ETIMEDOUT, EIO, ...) and how long it took.
   */
  cniRequest?(command: string, result: string, seconds: number): void;
  /** A published key the agent does not believe (registry.ts trustedPeers), once per pod, node and reason. */
  peerRejected?(): void;
  /** Pods of protected namespaces on this node running without a CNI registration (past the grace), as last looked at. */
  unregistered?(n: number): void;
}

/** CNI commands with series of their own; anything else is command="other". */
export const CNI_COMMANDS = ['ADD', 'DEL', 'CHECK', 'STATUS', 'VERSION', 'GC'] as const;
/** Results with series of their own: ok and the node socket's error codes; anything else is result="other". */
export const CNI_RESULTS = ['ok', 'EINVAL', 'ENOENT', 'EEXIST', 'ETIMEDOUT', 'EIO', 'E2BIG'] as const;
/** Projects with a tenc_agent_proxies series of their own; the rest are summed into namespace="_other". */
export const MAX_PROJECTS = 256;

export class AgentMetrics implements AgentHooks {
  /** prom-client registry: the agent's metrics and the process metrics (process_*, nodejs_*). */
  readonly registry = new PromRegistry();
  private readonly c;
  /** Proxies per project, as the projects' reconcilers last reported them. */
  private readonly proxyCounts = new Map<string, number>();

  constructor(o: { processMetrics?: boolean } = {}) {
    const A = AGENT_METRICS;
    const H = AGENT_HISTOGRAMS;
    const r = [this.registry];
    this.c = {
      reconciles: new Counter({ name: A.reconciles.name, help: A.reconciles.help, labelNames: A.reconciles.labels, registers: r }),
      reconcileDuration: new Gauge({ name: A.reconcileDuration.name, help: A.reconcileDuration.help, registers: r }),
      registryRequests: new Counter({ name: A.registryRequests.name, help: A.registryRequests.help, labelNames: A.registryRequests.labels, registers: r }),
      registryErrors: new Counter({ name: A.registryErrors.name, help: A.registryErrors.help, labelNames: A.registryErrors.labels, registers: r }),
      registryDuration: new Histogram({ name: H.registryDuration.name, help: H.registryDuration.help, labelNames: H.registryDuration.labels, buckets: [...H.registryDuration.buckets], registers: r }),
      proxiesStarted: new Counter({ name: A.proxiesStarted.name, help: A.proxiesStarted.help, labelNames: A.proxiesStarted.labels, registers: r }),
      proxiesRestarted: new Counter({ name: A.proxiesRestarted.name, help: A.proxiesRestarted.help, registers: r }),
      proxies: new Gauge({ name: A.proxies.name, help: A.proxies.help, labelNames: A.proxies.labels, registers: r }),
      peersRejected: new Counter({ name: A.peersRejected.name, help: A.peersRejected.help, registers: r }),
      podsUnregistered: new Gauge({ name: A.podsUnregistered.name, help: A.podsUnregistered.help, registers: r }),
      cniRequests: new Counter({ name: A.cniRequests.name, help: A.cniRequests.help, labelNames: A.cniRequests.labels, registers: r }),
      cniDuration: new Histogram({ name: H.cniDuration.name, help: H.cniDuration.help, labelNames: H.cniDuration.labels, buckets: [...H.cniDuration.buckets], registers: r }),
    };
    // zero series, so rate() has a start point before the first event
    for (const result of ['ok', 'error']) this.c.reconciles.inc({ result }, 0);
    for (const how of ['started', 'adopted']) this.c.proxiesStarted.inc({ how }, 0);
    this.c.proxiesRestarted.inc(0);
    this.c.peersRejected.inc(0);
    this.c.podsUnregistered.set(0);
    if (o.processMetrics !== false) addProcessMetrics(this.registry);
  }

  reconciled(ok: boolean, seconds: number): void {
    this.c.reconciles.inc({ result: ok ? 'ok' : 'error' });
    this.c.reconcileDuration.set(seconds);
  }
  proxyStarted(how: 'started' | 'adopted'): void {
    this.c.proxiesStarted.inc({ how });
  }
  proxyLost(): void {
    this.c.proxiesRestarted.inc();
  }
  peerRejected(): void {
    this.c.peersRejected.inc();
  }
  unregistered(n: number): void {
    this.c.podsUnregistered.set(n);
  }
  /**
   * Each project's reconciler reports its own count; the gauge has one series per
   * project (label namespace), so reconcilers of several projects on one node do
   * not overwrite each other. Beyond MAX_PROJECTS projects the rest are summed
   * into namespace="_other".
   */
  proxies(n: number, project = ''): void {
    this.proxyCounts.set(project, n);
    const all = [...this.proxyCounts].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const own = all.length <= MAX_PROJECTS ? all : all.slice(0, MAX_PROJECTS - 1);
    this.c.proxies.reset();
    for (const [p, k] of own) this.c.proxies.set({ namespace: p }, k);
    if (own.length < all.length) this.c.proxies.set({ namespace: '_other' }, all.slice(own.length).reduce((s, [, k]) => s + k, 0));
  }
  /** For the node socket: one call per CNI request. */
  cniRequest(command: string, result: string, seconds: number): void {
    const cmd = (CNI_COMMANDS as readonly string[]).includes(command) ? command : 'other';
    const res = (CNI_RESULTS as readonly string[]).includes(result) ? result : 'other';
    this.c.cniRequests.inc({ command: cmd, result: res });
    this.c.cniDuration.observe({ command: cmd }, seconds);
  }
  registryCall(op: string, ok: boolean, seconds: number): void {
    this.c.registryRequests.inc({ op, result: ok ? 'ok' : 'error' });
    if (!ok) this.c.registryErrors.inc({ op });
    this.c.registryDuration.observe({ op }, seconds);
  }
}

/** The registry with every method call timed and counted (op = method name). */
export function instrumentRegistry<R extends Registry>(registry: R, m: AgentMetrics): R {
  return new Proxy(registry, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== 'function' || typeof prop !== 'string' || prop === 'watch' || prop === 'close') return typeof v === 'function' ? v.bind(target) : v;
      return (...args: unknown[]) => {
        const t0 = performance.now();
        let out: unknown;
        try {
          out = v.apply(target, args);
        } catch (e) {
          m.registryCall(prop, false, (performance.now() - t0) / 1000);
          throw e;
        }
        if (out instanceof Promise) {
          return out.then(
            (x) => (m.registryCall(prop, true, (performance.now() - t0) / 1000), x),
            (e) => {
              m.registryCall(prop, false, (performance.now() - t0) / 1000);
              throw e;
            },
          );
        }
        m.registryCall(prop, true, (performance.now() - t0) / 1000);
        return out;
      };
    },
  });
}
