/**
 * Runs iproute2's `ip` (per flow / per configuration change, never per packet).
 * Every call can target a named namespace (`ip -n NAME`), which the netns tests use;
 * the pod itself runs inside its namespace and passes none.
 */
import { howItEnded, runOk, runProcess, type RunResult } from '../io/run.js';
import type { NetnsScope } from '../io/netns.js';

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
   * Runs ip in the network namespace of this path (e.g. /proc/PID/ns/net: the node
   * agent, for a pod's CNI_NETNS), as `nsenter --net=PATH ip` would (io/run.ts:
   * runProcess's netns, no nsenter process).
   */
  netnsPath?: string | NetnsScope;
}

export class IpCommand {
  private readonly prefix: string[];
  private readonly binary: string;
  private readonly netnsPath: string | NetnsScope | undefined;

  constructor(opts: IpCommandOptions = {}) {
    this.prefix = opts.netns ? ['-n', opts.netns] : [];
    this.binary = opts.binary ?? 'ip';
    this.netnsPath = opts.netnsPath;
  }

  /** Runs one command; resolves with stdout, rejects with IpCommandError. */
  run(args: string[], stdin?: string): Promise<string> {
    const full = [...this.prefix, ...args];
    // an exit code keeps ip's own stderr (batch() reads the failing line from it)
    return runOk(this.binary, full, { stdin, netns: this.netnsPath }, (detail, r) => new IpCommandError(full, r && r.code !== null ? r.stderr : detail, r?.code ?? null));
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

  /**
   * Runs `ip -j -4|-6 -force -batch -` over read-only lines (dumps) in ONE process and
   * returns each line's parsed JSON array, or null for a line that failed (a route get
   * without a route): ip prints one JSON line per command that succeeded and names the
   * failed ones on stderr ("Command failed -:N"). Throws IpCommandError if ip could not
   * run or its output does not line up with the lines (the caller then dumps one by one).
   */
  async dumps(family: Family, lines: string[]): Promise<(any[] | null)[]> {
    if (lines.length === 0) return [];
    const full = [...this.prefix, '-j', `-${family}`, '-force', '-batch', '-'];
    let r: RunResult;
    try {
      r = await runProcess(this.binary, full, { stdin: lines.join('\n') + '\n', netns: this.netnsPath });
    } catch (e) {
      throw new IpCommandError(full, (e as Error).message, null);
    }
    if (r.code === null) throw new IpCommandError(full, howItEnded(r), null);
    const failed = new Set([...r.stderr.matchAll(/Command failed -:(\d+)/g)].map((m) => Number(m[1]) - 1));
    const out = r.stdout.split('\n').filter((l) => l.trim() !== '');
    if (out.length !== lines.length - failed.size || (r.code !== 0 && failed.size === 0)) {
      throw new IpCommandError(full, `dump batch: ${out.length} outputs for ${lines.length} lines, ${failed.size} failed: ${r.stderr.trim()}`, r.code);
    }
    const result: (any[] | null)[] = [];
    let k = 0;
    for (let i = 0; i < lines.length; i++) {
      if (failed.has(i)) {
        result.push(null);
        continue;
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(out[k++]);
      } catch {
        throw new IpCommandError(full, `dump batch: line ${i + 1} (${lines[i]}) printed no JSON`, r.code);
      }
      result.push(Array.isArray(parsed) ? parsed : [parsed]);
    }
    return result;
  }
}
