/**
 * Runs a short-lived helper process (ip, nft), in this or a given network namespace,
 * and collects what it printed:
 * per start and per configuration change, never per packet.
 *
 * By default through the addon's runProcess (native/spawn.c): posix_spawnp on a libuv
 * worker thread, which does not copy node's page tables. node's own spawn() forks the
 * whole process, which blocked the event loop 5-7 ms per child on this machine, and a
 * pod's start runs about 18 children (README "density"). `TENC_FAST_SPAWN=0` in the
 * environment uses child_process.spawn instead (A/B; same results).
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { addon } from '../native.js';
import type { NetnsScope } from './netns.js';

export interface RunResult {
  /** Exit code, or null when the child was ended by a signal. */
  code: number | null;
  /** The signal's name (e.g. SIGKILL), or null. */
  signal: string | null;
  stdout: string;
  stderr: string;
  /** Killed because it ran longer than timeoutMs. */
  timedOut: boolean;
}

export interface RunOptions {
  /** Written to the child's stdin, which is then closed (default: an empty stdin). */
  stdin?: string;
  /** Kill the child (SIGKILL) after this long; 0 = never. Default RUN_TIMEOUT_MS. */
  timeoutMs?: number;
  /**
   * Start the child in this network namespace (a path: /proc/PID/ns/net,
   * /run/netns/NAME), as `nsenter --net=PATH` would: by runProcess's worker thread
   * (native/spawn.c) without an nsenter process; with TENC_FAST_SPAWN=0 through nsenter.
   * A pod host's scope (io/netns.ts) is held while the child runs and refused once
   * closed.
   */
  netns?: string | NetnsScope;
}

/** The namespace of a RunOptions.netns for messages: the path, or the path a scope was opened by. */
export function netnsName(netns: string | NetnsScope | undefined): string | undefined {
  return typeof netns === 'object' ? netns.name : netns;
}

/** A helper that runs longer than this is killed: ip and nft answer in milliseconds. */
export const RUN_TIMEOUT_MS = 60_000;

/** Could not start the program at all (ENOENT, EACCES): `code` is the errno name. */
export class RunError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = 'RunError';
  }
}

const signalName = new Map<number, string>(Object.entries(constants.signals).map(([k, v]) => [v, k]));

/** Is the addon's runProcess used (not TENC_FAST_SPAWN=0)? Read per call, so a test can switch. */
export function fastSpawn(): boolean {
  return process.env.TENC_FAST_SPAWN !== '0';
}

/** Runs `file args...`; resolves whatever the exit code (the caller judges it), rejects with RunError if it cannot start. */
export function runProcess(file: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? RUN_TIMEOUT_MS;
  const ns = opts.netns;
  if (typeof ns === 'object') {
    let release: () => void;
    try {
      release = ns.hold();
    } catch (e) {
      return Promise.reject(new RunError(`cannot run ${file}: ${(e as Error).message}`, 'EBADF'));
    }
    return start(file, args, opts.stdin, timeoutMs, ns.path)
      .catch((e: unknown) => {
        // messages name the namespace as the pod knows it, not the host's fd of it
        throw e instanceof RunError ? new RunError(e.message.split(ns.path).join(ns.name), e.code) : e;
      })
      .finally(release);
  }
  return start(file, args, opts.stdin, timeoutMs, ns);
}

function start(file: string, args: string[], stdin: string | undefined, timeoutMs: number, netns: string | undefined): Promise<RunResult> {
  if (fastSpawn()) return runNative(file, args, stdin, timeoutMs, netns);
  if (netns !== undefined) return runSpawn('nsenter', [`--net=${netns}`, '--', file, ...args], stdin, timeoutMs);
  return runSpawn(file, args, stdin, timeoutMs);
}

async function runNative(file: string, args: string[], stdin: string | undefined, timeoutMs: number, netns: string | undefined): Promise<RunResult> {
  let r: { code: number | null; signal: number | null; stdout: string; stderr: string; timedOut: boolean; overflow: boolean };
  try {
    r = await addon.runProcess(file, args, stdin ?? null, timeoutMs, netns ?? null);
  } catch (e) {
    const err = e as Error & { code?: string };
    throw new RunError(err.message, err.code ?? 'EUNKNOWN');
  }
  const stderr = r.overflow ? `${r.stderr}\n(output over 64 MiB: the child was killed)` : r.stderr;
  return { code: r.code, signal: r.signal === null ? null : (signalName.get(r.signal) ?? `signal ${r.signal}`), stdout: r.stdout, stderr, timedOut: r.timedOut };
}

function runSpawn(file: string, args: string[], stdin: string | undefined, timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], timeout: timeoutMs || undefined, killSignal: 'SIGKILL' });
    let out = '';
    let err = '';
    let failed = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', (e: Error & { code?: string }) => {
      failed = true;
      reject(new RunError(`cannot run ${file}: ${e.message.replace(/^spawn \S+ /, '')}`, e.code ?? 'EUNKNOWN'));
    });
    child.on('close', (code, signal) => {
      if (!failed) resolve({ code, signal, stdout: out, stderr: err, timedOut: signal === 'SIGKILL' && child.killed });
    });
    child.stdin.on('error', () => {}); // EPIPE if the child exits early: its exit code tells
    child.stdin.end(stdin ?? '');
  });
}

/**
 * Runs `file args...` and resolves with its stdout when it exits 0. Otherwise rejects
 * with `fail(detail, result)`: detail is why it could not start (result null) or
 * howItEnded(result) for a failed exit; the caller shapes its own error from them.
 */
export async function runOk(file: string, args: string[], opts: RunOptions, fail: (detail: string, r: RunResult | null) => Error): Promise<string> {
  let r: RunResult;
  try {
    r = await runProcess(file, args, opts);
  } catch (e) {
    throw fail((e as Error).message, null);
  }
  if (r.code !== 0) throw fail(howItEnded(r), r);
  return r.stdout;
}

/** One line for an error message: the stderr, else how it ended. */
export function howItEnded(r: RunResult): string {
  const err = r.stderr.trim();
  if (r.timedOut) return `${err ? `${err}; ` : ''}killed after the time limit`;
  if (err) return err;
  return r.signal ? `ended by ${r.signal}` : `exit code ${r.code}`;
}
