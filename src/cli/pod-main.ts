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
import { isLogLevel, LOG_LEVELS, type LogLevel } from '../log.js';
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
    { config: { type: 'string', short: 'c' }, standby: { type: 'boolean' }, host: { type: 'boolean' }, 'log-level': { type: 'string', short: 'l' }, 'metrics-address': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    'pod',
  );
  const values = parsed.values as { config?: string; standby?: boolean; host?: boolean; 'log-level'?: string; 'metrics-address'?: string; help?: boolean };
  const positionals = parsed.positionals;
  if (values.help) {
    io.stdout(COMMAND_HELP.pod);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`, 'pod');
  let file = values.config;
  if (values.host && (file || values.standby || values['metrics-address'] !== undefined)) {
    throw new UsageError('--host takes no --config, --standby or --metrics-address: each pod comes as a line on stdin', 'pod');
  }
  if (values.standby && file) throw new UsageError('--standby takes no --config: the handoff names it', 'pod');
  if (!file && !values.standby && !values.host) throw new UsageError('--config FILE (or --standby, or --host) is required', 'pod');
  const level = values['log-level'];
  if (level !== undefined && !isLogLevel(level)) {
    throw new UsageError(`--log-level: ${JSON.stringify(level)} is not one of ${LOG_LEVELS.join(', ')}`, 'pod');
  }
  const address = metricsAddress(values['metrics-address'], 'pod');
  await protectSecrets(); // before the config (and its key files) is read
  if (values.host) return await (await import('./host.js')).hostMain(io, entry, level as LogLevel | undefined);
  if (values.standby) {
    // everything a pod may run is loaded before the handoff: none of it after
    const { standBy } = await import('./standby.js');
    const { HandoffError } = await import('../control/handoff.js');
    let h;
    try {
      h = await standBy(io.stdout, async () => void (await (await import('../control/pod.js')).loadDns()));
    } catch (e) {
      if (!(e instanceof HandoffError)) throw e;
      io.stderr(`tenc: ${e.message}\n`);
      return 2;
    }
    if (h === null) return 0; // the agent went away before handing a pod over
    file = h.config;
  }
  const config = loadConfig(file!);
  if (level !== undefined) config.logLevel = level as typeof config.logLevel;
  // Loaded on demand: loadConfig's errors come first.
  const { runPod } = await import('../control/pod.js');
  const standby = values.standby === true;
  if (address === undefined) return await runPod(config, { stdout: io.stdout, entry, standby });
  const { startPodMetrics } = await import('../metrics/start.js');
  const { createLogger } = await import('../log.js');
  let server: { close(): Promise<void> } | null = null;
  const log = createLogger({ level: config.logLevel, base: { ifname: config.interface } });
  const code = await runPod(config, {
    stdout: io.stdout,
    log,
    entry,
    standby,
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
