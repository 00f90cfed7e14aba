/**
 * A pod host: several pods run by one node process, each in a network namespace of
 * its own (`tenc pod --host`). One V8 isolate and one node runtime for k pods instead
 * of k: the memory a node process costs before any pod (README "density": about 7.7
 * MiB PSS for a bare node) is paid once per host.
 *
 * The host itself stays in the namespace it was started in and makes each pod's
 * TUN, sockets and child processes in the pod's namespace (io/netns.ts); a pod is
 * what `tenc pod --config` runs (control/pod.ts runPod), with its own log, stop and
 * exit code. Its input is a line protocol on stdin (parseHostLine), its output one
 * JSON object per line on stdout (HostEvent).
 *
 * What it shares: the pods of one host share the process's memory, so a host serves
 * one project's pods (the project's psk already binds all of them together), and a
 * throw that escapes a pod's code ends the host: every pod of it then stays fail
 * closed (its rule, guards and enforcement stay in its namespace, as after any crash)
 * until it is started again.
 *
 * A start line may carry "seq" (the agent numbers its starts, agent/host.ts): the
 * pod's events echo it, so an event of an earlier copy of the same config (one the
 * agent stopped waiting for) is never taken for the new copy's.
 */
import { closeSync, constants, fstatSync, openSync, writeSync } from 'node:fs';
import { createLogger, type Logger } from '../log.js';
import { loadConfig } from './config.js';
import { HandoffError, parseHandoff, type Handoff } from './handoff.js';
import { openNetns, type OpenNetns } from '../io/netns.js';
import type { RunPodOptions } from './pod.js';
import type { PodConfig } from './config.js';

/** What a host prints once it reads its input. */
export const HOST_READY_LINE = 'host ready\n';

/** A pod to start: a handoff, and the agent's number of this start (echoed in the pod's events). */
export type HostStart = Handoff & { seq?: number };

/** A line of a host's input: a pod to start (a handoff) or one to stop (by its config path). */
export type HostLine = { start: HostStart } | { stop: string };

/** The start line the agent writes (newline included): the handoff with its "seq". */
export function formatHostStart(h: Handoff, seq: number): string {
  return JSON.stringify({ netns: h.netns, config: h.config, ...(h.log !== undefined ? { log: h.log } : {}), seq }) + '\n';
}

/** Parses a host's input line: a handoff (control/handoff.ts) with an optional "seq", or {"stop":"CONFIG"}. */
export function parseHostLine(line: string): HostLine {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (e) {
    throw new HandoffError(`pod host: not JSON (${(e as Error).message})`);
  }
  if (typeof v === 'object' && v !== null && !Array.isArray(v) && 'stop' in v) {
    const o = v as Record<string, unknown>;
    const extra = Object.keys(o).find((k) => k !== 'stop');
    if (extra !== undefined) throw new HandoffError(`pod host: unknown field "${extra}" in a stop line (stop)`);
    if (typeof o.stop !== 'string' || !o.stop.startsWith('/') || o.stop.includes('\0')) throw new HandoffError('pod host: "stop" must be the absolute path of a running pod\'s config');
    return { stop: o.stop };
  }
  if (typeof v === 'object' && v !== null && !Array.isArray(v) && 'seq' in v) {
    const { seq, ...handoff } = v as Record<string, unknown>;
    if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) throw new HandoffError('pod host: "seq" must be a non-negative integer');
    return { start: { ...parseHandoff(JSON.stringify(handoff)), seq } };
  }
  return { start: parseHandoff(line) };
}

/** One line of a host's output; a pod's events carry its start's seq when the start line had one. */
export type HostEvent =
  | { pod: string; seq?: number; publicKey: string }
  | { pod: string; seq?: number; exited: number; error?: string }
  | { error: string };

/** An event of the pod of start line `h`: its config and, when the line had one, its seq. */
export function podEvent(h: HostStart, e: { publicKey: string } | { exited: number; error?: string }): HostEvent {
  return { pod: h.config, ...(h.seq !== undefined ? { seq: h.seq } : {}), ...e };
}

type RunPod = (config: PodConfig, opts: RunPodOptions) => Promise<number>;

interface Hosted {
  stop: (why: string) => void;
  done: Promise<number>;
}

export class PodHost {
  private readonly pods = new Map<string, Hosted>();
  private readonly namespaces = new Set<string>();

  constructor(
    private readonly emit: (e: HostEvent) => void,
    private readonly runPod: RunPod,
    private readonly opts: { entry?: RunPodOptions['entry']; logLevel?: PodConfig['logLevel'] } = {},
  ) {}

  /** Pods started and not yet exited. */
  get size(): number {
    return this.pods.size;
  }

  /**
   * Starts the pod of a handoff. A handoff that cannot be used (its config running
   * already, its namespace in use by another pod of this host, a path that is no
   * namespace, a config with errors) is answered with an exited event (code 2) naming
   * what is at fault; nothing of it was started. Resolves when the pod has exited.
   */
  async start(h: HostStart): Promise<number> {
    const refuse = (error: string): number => {
      this.emit(podEvent(h, { exited: 2, error }));
      return 2;
    };
    if (this.pods.has(h.config)) return refuse(`pod host: a pod with config ${h.config} is running in this host`);
    let netns: OpenNetns;
    try {
      netns = openNetns(h.netns);
    } catch (e) {
      return refuse(`pod host: ${(e as Error).message}`);
    }
    // the namespace the opened fd is (a stat of the path could find another by now)
    const nsKey = `${netns.dev}:${netns.ino}`;
    if (this.namespaces.has(nsKey)) {
      netns.close();
      return refuse(`pod host: netns ${h.netns} has a pod of this host already`);
    }
    let config: PodConfig;
    let logFd: number | null = null;
    let closed = false;
    const writeLog = (t: string): void => {
      if (logFd !== null) {
        if (closed) return; // a late line of a pod that has exited (its fd may be another file's by now)
        try {
          writeAll(logFd, t); // the pod's start failure line goes to its own log
        } catch {
          /* a log that cannot be written loses the line, never the pod */
        }
      } else process.stderr.write(`pod ${h.config}: ${t}`);
    };
    let log: Logger;
    try {
      config = loadConfig(h.config);
      if (this.opts.logLevel !== undefined) config.logLevel = this.opts.logLevel;
      if (h.log !== undefined) {
        logFd = openSync(h.log, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
        if (!fstatSync(logFd).isFile()) throw new Error(`log ${h.log}: not a regular file`);
      }
      log = createLogger({
        level: config.logLevel,
        base: { ifname: config.interface, pod: h.config },
        ...(logFd !== null ? { write: writeLog } : {}),
      });
    } catch (e) {
      // refused, and neither fd is kept (a held netns fd would keep the agent from starting the pod again)
      netns.close();
      if (logFd !== null) closeSync(logFd);
      return refuse((e as Error).message);
    }
    let stop: (why: string) => void = () => {};
    const stopSignal = new Promise<string>((resolve) => (stop = resolve));
    const hosted: Hosted = { stop, done: Promise.resolve(0) };
    this.pods.set(h.config, hosted);
    this.namespaces.add(nsKey);
    hosted.done = (async () => {
      let code: number;
      let error: string | undefined;
      try {
        code = await this.runPod(config, {
          netns,
          log,
          stopSignal,
          stderr: writeLog,
          entry: this.opts.entry,
          standby: true,
          stdout: (t) => {
            const m = /^public-key (\S+)\n$/.exec(t);
            if (m) this.emit(podEvent(h, { publicKey: m[1] }));
          },
        });
      } catch (e) {
        code = 1;
        error = (e as Error).message;
      }
      this.pods.delete(h.config);
      this.namespaces.delete(nsKey);
      closed = true;
      if (logFd !== null) closeSync(logFd);
      // the exit is told before the namespace is let go: an agent that sees the namespace
      // free has read the exit too (and its next start of the pod is not refused as running)
      try {
        this.emit(podEvent(h, { exited: code, ...(error !== undefined ? { error } : {}) }));
      } finally {
        netns.close();
      }
      return code;
    })();
    return hosted.done;
  }

  /** Stops the pod whose config is `config`; false when no such pod runs here. */
  stop(config: string, why = 'stop'): boolean {
    const p = this.pods.get(config);
    if (!p) return false;
    p.stop(why);
    return true;
  }

  /** Stops every pod; resolves when all have exited, with the worst exit code (0 when none). */
  async stopAll(why: string): Promise<number> {
    const all = [...this.pods.values()];
    for (const p of all) p.stop(why);
    const codes = await Promise.all(all.map((p) => p.done));
    return codes.reduce((a, b) => Math.max(a, b), 0);
  }
}

/** All of `t` to fd (a log opened O_APPEND): one line per call, as the logger's own writes. */
function writeAll(fd: number, t: string): void {
  const b = Buffer.from(t);
  let off = 0;
  while (off < b.length) off += writeSync(fd, b, off);
}
