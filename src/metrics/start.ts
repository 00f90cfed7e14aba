/** Starting the /metrics server for `tenc agent` and `tenc pod` (their --metrics-address). */
import { hostname } from 'node:os';
import { Registry as PromRegistry } from 'prom-client';
import { AgentMetrics, addProcessMetrics } from './agent.js';
import { discoverNodePods } from './gather.js';
import { MetricsServer } from './server.js';
import { PeerNames } from './peer-names.js';
import type { Registry } from '../registry/registry.js';
import type { StatusReport } from '../control/status.js';
import type { Logger } from '../log.js';

/** The agent's: every pod of its run directory, plus its own counters. */
export async function startAgentMetrics(
  address: string,
  runDir: string,
  /** The namespace label of pod configs at the top of runDir (one project's agent); null: from each config. */
  project: string | null,
  version: string | undefined,
  log: Logger,
  /** The agent's registry (not the instrumented one: the exporter's reads are not the agent's): peer pod names for tenc_peer_info. */
  registry?: Pick<Registry, 'pods' | 'peers'>,
): Promise<{ agent: AgentMetrics; server: MetricsServer | null; error: string | null }> {
  const agent = new AgentMetrics();
  const peerNames = registry ? new PeerNames(registry, undefined, (project, err) => log.debug({ project, err: err.message }, 'metrics: peer names not read')) : undefined;
  const server = new MetricsServer({ address, version, log, own: agent.registry, peerNames, targets: () => discoverNodePods(runDir, null, [], project) });
  try {
    await server.listen();
    return { agent, server, error: null };
  } catch (e) {
    return { agent, server: null, error: (e as Error).message };
  }
}

/**
 * A pod's own, where no agent runs: its status straight from the handler (no
 * socket round trip); labels namespace "" (or TENC_POD_NAMESPACE) and pod = the
 * host name (in Kubernetes the pod name) or TENC_POD_NAME.
 */
export async function startPodMetrics(address: string, status: () => StatusReport | Promise<StatusReport>, version: string | undefined, log: Logger): Promise<MetricsServer> {
  const own = new PromRegistry();
  addProcessMetrics(own);
  const target = { namespace: process.env.TENC_POD_NAMESPACE ?? '', pod: process.env.TENC_POD_NAME ?? hostname(), socket: 'in-process' };
  const server = new MetricsServer({ address, version, log, own, targets: () => [target], request: async () => await status() });
  await server.listen();
  return server;
}
