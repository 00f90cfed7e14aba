/**
 * What every `tenc` command shares for its arguments and its exit: the usage error,
 * parsing with node's parseArgs, the --metrics-address check, and the exit code and
 * message of a failure (0 ok, 1 run-time failure, 2 usage/config error). cli.ts and
 * pod-main.ts (the pod's own entry, bundled without cli.ts) both use it.
 */
import { parseArgs } from 'node:util';
import { USAGE, COMMAND_HELP } from './help.js';
import { ConfigError } from '../control/config.js';
import { parseListenAddress } from '../metrics/address.js';

/** A bad command line: printed with the command's help (or the general usage). */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message);
  }
}

type Options = NonNullable<Parameters<typeof parseArgs>[0]>['options'];

/** parseArgs, strict, positionals allowed; its errors become UsageErrors of `cmd`. */
export function parseCommandArgs(args: string[], options: Options, cmd: string): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true }) as { values: Record<string, string | boolean | undefined>; positionals: string[] };
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/\. To specify a positional argument.*$/s, ''), cmd);
  }
}

/** --metrics-address checked before anything starts (a UsageError of `cmd`). */
export function metricsAddress(v: string | undefined, cmd: string): string | undefined {
  if (v === undefined) return undefined;
  try {
    parseListenAddress(v);
  } catch (e) {
    throw new UsageError((e as Error).message, cmd);
  }
  return v;
}

/** A command's failure on stderr; returns its exit code. */
export function reportFailure(e: unknown, io: { stderr(text: string): void }): number {
  if (e instanceof UsageError) {
    io.stderr(`tenc: ${e.message}\n\n${e.command ? COMMAND_HELP[e.command] : USAGE}`);
    return 2;
  }
  if (e instanceof ConfigError) {
    io.stderr(e.message + '\n');
    return 2;
  }
  io.stderr(`tenc: ${(e as Error).message}\n`);
  return 1;
}
