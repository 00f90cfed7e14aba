/**
 * `tenc agent`: runs the node agent (node.ts) until SIGINT/SIGTERM.
 * Returns the exit code (0 after a clean stop, 1 when the start failed).
 * A stop leaves the pods' proxies running (fail-closed): the next agent adopts them.
 */
import { createLogger, type LogLevel } from '../log.js';
import { NodeAgent } from './node.js';
import { openRegistry, REGISTRY_SCHEMES } from '../registry/open.js';
import { EtcdSpecError, parseEtcdSpec, redactCredentials } from '../registry/etcd-client.js';
import type { Registry } from '../registry/registry.js';
import { startAgentMetrics } from '../metrics/start.js';
import { instrumentRegistry } from '../metrics/agent.js';

export interface RunAgentOptions {
  registry: string;
  node: string;
  /** Only these projects; default every protected project. */
  projects?: string[];
  socket?: string;
  runDir: string;
  logLevel: LogLevel;
  /** dns.classifyCidrs of the pods' configs (canonical CIDRs). */
  classifyCidrs?: string[];
  /** The cluster DNS service's addresses: DNS upstreams of pods without a resolv.conf of their own (Kubernetes). */
  clusterDns?: string[];
  /** The cluster domain (default cluster.local): projects' DNS domains are <project>.svc.<it>. */
  clusterDomain?: string;
  /** --cni-wait: when ADD answers (NodeAgentOptions.cniWait). */
  cniWait?: 'fail-closed' | 'proxy';
  /** --metrics-address: serve /metrics there (src/metrics/). */
  metricsAddress?: string;
  version?: string;
}

/**
 * What is wrong with the form of a --registry SPEC (a usage error: exit 2), or null.
 * What a well-formed SPEC names (a directory, files, a server) is openRegistry's to find
 * when the agent starts (exit 1). The problem shows no credential the SPEC may carry.
 */
export function registrySpecProblem(spec: string): string | null {
  // as openRegistry reads SPEC: `kubernetes`, SCHEME:REST, else a directory's path
  const m = spec === 'kubernetes' ? null : /^([a-z]+):(.*)$/s.exec(spec);
  if (!m) return null;
  const [, scheme, rest] = m;
  if (!(REGISTRY_SCHEMES as readonly string[]).includes(scheme)) return `unknown backend "${scheme}" (known: ${REGISTRY_SCHEMES.join(', ')})`;
  if (scheme === 'dir' && rest === '') return 'dir: needs a directory';
  if (scheme === 'etcd') {
    try {
      parseEtcdSpec(rest);
    } catch (e) {
      if (e instanceof EtcdSpecError) return e.message;
      throw e;
    }
  }
  return null;
}

export async function runAgent(o: RunAgentOptions): Promise<number> {
  const log = createLogger({ level: o.logLevel, base: { agent: o.node } });
  let registry: Registry;
  try {
    registry = await openRegistry(o.registry, {
      onProblem: (where, why) => log.warn({ where, why }, 'registry object skipped'),
      onEvent: (what, detail) => log.info(detail, `registry: ${what}`),
      runDir: o.runDir,
    });
  } catch (e) {
    // the message names the spec: its credentials masked
    process.stderr.write(`tenc agent: ${redactCredentials((e as Error).message)}\n`);
    return 1;
  }
  const metrics = o.metricsAddress ? await startAgentMetrics(o.metricsAddress, o.runDir, o.projects?.length === 1 ? o.projects[0] : null, o.version, log, registry) : null;
  if (metrics?.error) {
    process.stderr.write(`tenc agent: ${metrics.error}\n`);
    await registry.close?.();
    return 1;
  }
  if (metrics) registry = instrumentRegistry(registry, metrics.agent);
  const agent = new NodeAgent({
    registry,
    node: o.node,
    projects: o.projects,
    socket: o.socket,
    runDir: o.runDir,
    log,
    classifyCidrs: o.classifyCidrs,
    clusterDns: o.clusterDns,
    clusterDomain: o.clusterDomain,
    cniWait: o.cniWait,
    podLogLevel: o.logLevel === 'debug' || o.logLevel === 'trace' ? o.logLevel : 'info',
    hooks: metrics?.agent,
  });
  let stop: (s: string) => void = () => {};
  const stopped = new Promise<string>((r) => (stop = r));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  try {
    await agent.start();
  } catch (e) {
    process.stderr.write(`tenc agent: ${(e as Error).message}\n`);
    await agent.stop().catch(() => {});
    await metrics?.server?.close();
    await registry.close?.();
    return 1;
  }
  log.info({ registry: redactCredentials(o.registry), runDir: o.runDir, socket: o.socket, clusterDns: o.clusterDns ?? [] }, 'agent running');
  if ((o.classifyCidrs ?? []).length > 0 && (o.clusterDns ?? []).length === 0)
    // on Kubernetes no pod has /etc/netns/<name>/resolv.conf: the ranges would reach none of them
    log.warn('--classify-cidrs without --cluster-dns: only pods with /etc/netns/<netns>/resolv.conf (the local cluster) get the DNS proxy and the ranges; on Kubernetes give --cluster-dns (the cluster DNS service address, e.g. 10.96.0.10)');
  const why = await stopped;
  log.info({ signal: why }, 'stopping');
  await agent.stop();
  await metrics?.server?.close();
  await registry.close?.();
  return 0;
}
