/**
 * Runs iproute2's `ip` (per flow / per configuration change, never per packet).
 * Every call can target a named namespace (`ip -n NAME`), which the netns tests use;
 * the pod itself runs inside its namespace and passes none.
 */
import { howItEnded, runProcess, type RunResult } from '../io/run.js';

export type Family = 4 | 6;

export class IpCommandError extends Error {
  readonly code = 'ERR_TENC_IP';
  constructor(
    readonly args: string[],
    readonly stderr: string,
    readonly exitCode: number | null,
    /** For batches: how many lines succeeded before the failing one. */
    readonly linesDone = 0,
  ) {
    super(`ip ${args.join(' ')}: ${stderr.trim() || `exit code ${exitCode}`}`);
    this.name = 'IpCommandError';
  }
}

export interface IpCommandOptions {
  /** Named network namespace (ip -n); undefined = the current one. */
  netns?: string;
  /** Path of the ip binary; default "ip" from PATH. */
  binary?: string;
  /**
   * Runs ip through this command, e.g. ["nsenter", "--net=/proc/PID/ns/net", "--"]:
   * a namespace given by path (the node agent, for a pod's CNI_NETNS).
   */
  via?: string[];
}

export class IpCommand {
  private readonly prefix: string[];
  private readonly binary: string;

  constructor(opts: IpCommandOptions = {}) {
    const own = opts.netns ? ['-n', opts.netns] : [];
    const via = opts.via ?? [];
    this.binary = via.length > 0 ? via[0] : (opts.binary ?? 'ip');
    this.prefix = via.length > 0 ? [...via.slice(1), opts.binary ?? 'ip', ...own] : own;
  }

  /** Runs one command; resolves with stdout, rejects with IpCommandError. */
  async run(args: string[], stdin?: string): Promise<string> {
    const full = [...this.prefix, ...args];
    let r: RunResult;
    try {
      r = await runProcess(this.binary, full, { stdin });
    } catch (e) {
      throw new IpCommandError(full, (e as Error).message, null);
    }
    if (r.code === 0) return r.stdout;
    throw new IpCommandError(full, r.code === null ? howItEnded(r) : r.stderr, r.code);
  }

  /** `ip -j ARGS` parsed; an empty dump (or a table that does not exist) is []. */
  async json(args: string[]): Promise<any[]> {
    let out: string;
    try {
      out = await this.run(['-j', ...args]);
    } catch (e) {
      if (e instanceof IpCommandError && /does not exist|No such file|Cannot find device/i.test(e.stderr)) return [];
      throw e;
    }
    const t = out.trim();
    if (t === '') return [];
    const parsed = JSON.parse(t);
    return Array.isArray(parsed) ? parsed : [parsed];
  }

  /**
   * Runs `ip -4|-6 -batch -` over the lines; stops at the first failing line.
   * On failure the error's linesDone tells how many lines took effect.
   */
  async batch(family: Family, lines: string[]): Promise<void> {
    if (lines.length === 0) return;
    try {
      await this.run([`-${family}`, '-batch', '-'], lines.join('\n') + '\n');
    } catch (e) {
      if (!(e instanceof IpCommandError)) throw e;
      const m = /Command failed -:(\d+)/.exec(e.stderr);
      const failedLine = m ? Number(m[1]) : 1;
      const detail = e.stderr.replace(/\n?Command failed -:\d+\s*$/, '').trim();
      throw new IpCommandError([`-${family}`, lines[failedLine - 1] ?? '-batch'], detail, e.exitCode, failedLine - 1);
    }
  }
}
