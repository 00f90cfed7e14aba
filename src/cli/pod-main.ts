/**
 * `tenc pod`: the per-pod proxy's command, apart from the other commands (cli.ts) so
 * that a pod's process loads only the modules it runs. It is the entry of the pod
 * bundle (dist/bundle/pod.cjs: these modules and their libraries in one file, made by
 * scripts/bundle-pod.mjs in `npm run build`), which main.ts runs for `tenc pod`
 * (cli/pod-bundle.ts: unless TENC_POD_BUNDLE=0, or the bundle is missing or stale).
 * runCli(['pod', ...]) comes here too. Exit codes as runCli's: 2 usage or config
 * error, 1 failure at run time.
 */
import { COMMAND_HELP } from './help.js';
import { loadConfig } from '../control/config.js';
import { isLogLevel, LOG_LEVELS } from '../log.js';
import { UsageError, metricsAddress, parseCommandArgs, reportFailure } from './usage.js';
import { protectSecrets } from './protect.js';
import { version } from './version.js';

/** Where the pod command writes (the public-key line, help, errors). */
export interface PodIo {
  stdout(text: string): void;
  stderr(text: string): void;
}

const processIo: PodIo = {
  stdout: (t) => void process.stdout.write(t),
  stderr: (t) => void process.stderr.write(t),
};

/** Which file the pod's code was loaded from, logged in 'pod running' (cli/pod-bundle.ts). */
export type PodEntry = 'bundle' | 'dist';

/** `tenc pod ARGS`; returns the exit code. */
export async function podMain(args: string[], io: PodIo = processIo, entry: PodEntry = 'dist'): Promise<number> {
  try {
    return await pod(args, io, entry);
  } catch (e) {
    return reportFailure(e, io);
  }
}

async function pod(args: string[], io: PodIo, entry: PodEntry): Promise<number> {
  const parsed = parseCommandArgs(
    args,
    { config: { type: 'string', short: 'c' }, 'log-level': { type: 'string', short: 'l' }, 'metrics-address': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    'pod',
  );
  const values = parsed.values as { config?: string; 'log-level'?: string; 'metrics-address'?: string; help?: boolean };
  const positionals = parsed.positionals;
  if (values.help) {
    io.stdout(COMMAND_HELP.pod);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`, 'pod');
  const file = values.config;
  if (!file) throw new UsageError('--config FILE is required', 'pod');
  const level = values['log-level'];
  if (level !== undefined && !isLogLevel(level)) {
    throw new UsageError(`--log-level: ${JSON.stringify(level)} is not one of ${LOG_LEVELS.join(', ')}`, 'pod');
  }
  await protectSecrets(); // before the config (and its key files) is read
  const config = loadConfig(file);
  if (level !== undefined) config.logLevel = level as typeof config.logLevel;
  const address = metricsAddress(values['metrics-address'], 'pod');
  // Loaded on demand: loadConfig's errors come first.
  const { runPod } = await import('../control/pod.js');
  if (address === undefined) return await runPod(config, { stdout: io.stdout, entry });
  const { startPodMetrics } = await import('../metrics/start.js');
  const { createLogger } = await import('../log.js');
  let server: { close(): Promise<void> } | null = null;
  const log = createLogger({ level: config.logLevel, base: { ifname: config.interface } });
  const code = await runPod(config, {
    stdout: io.stdout,
    log,
    entry,
    onReady: (p) => {
      startPodMetrics(address, () => p.status(), version(), log).then(
        (s) => (server = s),
        (e) => log.error({ err: (e as Error).message }, 'metrics server failed'),
      );
    },
  });
  await (server as { close(): Promise<void> } | null)?.close();
  return code;
}
