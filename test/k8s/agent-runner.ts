/**
 * `tenc agent` with the kubernetes backend, for the netns acceptance test
 * (test/netns/cluster-k8s.test.ts), until the agent finds pods' namespaces
 * through the CNI registration: the same Agent as `tenc agent`, over a
 * KubernetesRegistry whose pods' netns is /run/netns/<NETNS_PREFIX>-<pod>
 * (the local cluster's names). Run from dist/:
 *
 *   node dist/test/k8s/agent-runner.js KUBECONFIG NODE PROJECT RUN_DIR NETNS_PREFIX [CLASSIFY_CIDRS]
 */
import { Agent } from '../../src/agent/agent.js';
import { createLogger } from '../../src/log.js';
import { KubernetesRegistry, loadKubeConfig } from '../../src/registry/kubernetes.js';
import { join } from 'node:path';

const [kubeconfig, node, project, runDir, prefix, cidrs] = process.argv.slice(2);
if (!prefix) {
  process.stderr.write('usage: agent-runner.js KUBECONFIG NODE PROJECT RUN_DIR NETNS_PREFIX [CLASSIFY_CIDRS]\n');
  process.exit(2);
}
const log = createLogger({ level: 'info', base: { agent: `${project}@${node}` } });
const registry = new KubernetesRegistry(loadKubeConfig(kubeconfig), {
  pskDir: join(runDir, 'psk'),
  log: { warn: (f, m) => log.warn(f, m), info: (f, m) => log.info(f, m) },
  informer: { backoffMs: 100, backoffMaxMs: 1000 },
  netnsOf: (p) => `/run/netns/${prefix}-${p.name}`,
});
const agent = new Agent({ registry, node, project, runDir, log, classifyCidrs: cidrs ? cidrs.split(',') : undefined });
let stopping = false;
const stop = async (sig: string) => {
  if (stopping) return;
  stopping = true;
  log.info({ signal: sig }, 'stopping');
  await agent.stop();
  await registry.close();
  process.exit(0);
};
process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => void stop('SIGINT'));
await agent.start();
log.info({ registry: 'kubernetes', runDir }, 'agent running');
