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
  proxies(n: number): void;
  /** One request of the CNI plugin on the node socket (command: ADD, DEL, CHECK, STATUS). */
  cniRequest?(command: string, ok: boolean, seconds: number): void;
}

export class AgentMetrics implements AgentHooks {
  /** prom-client registry: the agent's metrics and the process metrics (process_*, nodejs_*). */
  readonly registry = new PromRegistry();
  private readonly c;

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
      proxies: new Gauge({ name: A.proxies.name, help: A.proxies.help, registers: r }),
      cniRequests: new Counter({ name: A.cniRequests.name, help: A.cniRequests.help, labelNames: A.cniRequests.labels, registers: r }),
      cniDuration: new Histogram({ name: H.cniDuration.name, help: H.cniDuration.help, labelNames: H.cniDuration.labels, buckets: [...H.cniDuration.buckets], registers: r }),
    };
    // zero series, so rate() has a start point before the first event
    for (const result of ['ok', 'error']) this.c.reconciles.inc({ result }, 0);
    for (const how of ['started', 'adopted']) this.c.proxiesStarted.inc({ how }, 0);
    this.c.proxiesRestarted.inc(0);
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
  proxies(n: number): void {
    this.c.proxies.set(n);
  }
  /** For the CNI server: one call per request (command ADD/DEL/CHECK/VERSION). */
  cniRequest(command: string, ok: boolean, seconds: number): void {
    const cmd = ['ADD', 'DEL', 'CHECK', 'VERSION', 'GC', 'STATUS'].includes(command) ? command : 'other';
    this.c.cniRequests.inc({ command: cmd, result: ok ? 'ok' : 'error' });
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
