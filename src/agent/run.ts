/**
 * `tenc agent`: runs one Agent over a directory registry until SIGINT/SIGTERM.
 * Returns the exit code (0 after a clean stop, 1 when the start failed).
 */
import { createLogger, type LogLevel } from '../log.js';
import { Agent } from './agent.js';
import { openRegistry } from '../registry/open.js';
import type { Registry } from '../registry/registry.js';
import { startAgentMetrics } from '../metrics/start.js';
import { instrumentRegistry } from '../metrics/agent.js';

export interface RunAgentOptions {
  registry: string;
  node: string;
  project: string;
  runDir: string;
  logLevel: LogLevel;
  /** dns.classifyCidrs of the pods' configs (canonical CIDRs). */
  classifyCidrs?: string[];
  /** --metrics-address: serve /metrics there (src/metrics/). */
  metricsAddress?: string;
  version?: string;
}

export async function runAgent(o: RunAgentOptions): Promise<number> {
  const log = createLogger({ level: o.logLevel, base: { agent: `${o.project}@${o.node}` } });
  let registry: Registry;
  try {
    registry = await openRegistry(o.registry, {
      onProblem: (where, why) => log.warn({ where, why }, 'registry object skipped'),
      onEvent: (what, detail) => log.info(detail, `registry: ${what}`),
      runDir: o.runDir,
    });
  } catch (e) {
    process.stderr.write(`tenc agent: ${(e as Error).message}\n`);
    return 1;
  }
  const metrics = o.metricsAddress ? await startAgentMetrics(o.metricsAddress, o.runDir, o.project, o.version, log) : null;
  if (metrics?.error) {
    process.stderr.write(`tenc agent: ${metrics.error}\n`);
    await registry.close?.();
    return 1;
  }
  if (metrics) registry = instrumentRegistry(registry, metrics.agent);
  const agent = new Agent({ hooks: metrics?.agent, registry, node: o.node, project: o.project, runDir: o.runDir, log, classifyCidrs: o.classifyCidrs, podLogLevel: o.logLevel === 'debug' || o.logLevel === 'trace' ? o.logLevel : 'info' });
  let stop: (s: string) => void = () => {};
  const stopped = new Promise<string>((r) => (stop = r));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  try {
    await agent.start();
  } catch (e) {
    process.stderr.write(`tenc agent: ${(e as Error).message}\n`);
    await agent.stop();
    await metrics?.server?.close();
    await registry.close?.();
    return 1;
  }
  log.info({ registry: o.registry, runDir: o.runDir }, 'agent running');
  const why = await stopped;
  log.info({ signal: why }, 'stopping');
  await agent.stop();
  await metrics?.server?.close();
  await registry.close?.();
  return 0;
}
