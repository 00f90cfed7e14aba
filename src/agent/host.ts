/**
 * The agent's side of a pod host (control/host.ts, `tenc pod --host`): one node
 * process, in the agent's own namespace, that runs the project's pods on this node,
 * each in its own namespace. A node then pays node's runtime once per project
 * instead of once per pod (README "Pod host": the memory per idle pod).
 *
 * The host's stdin is a pipe only this agent holds: a start line per pod and a stop
 * line per pod stopped. An agent that goes away closes it: the host runs its pods on
 * and exits after its last one (the next agent adopts them through their control
 * sockets and stops them with the socket's stop op). Its stdout is one JSON event per
 * line, dispatched here by the pod's config path and the start's number (seq, which
 * each start line carries and the pod's events echo: a late event of a copy whose
 * waiter was dropped, forget, never reaches the next start of that config); its
 * stderr goes to a file of its own under the run directory (removed when it exits).
 *
 * Switch: TENC_POD_HOST=0 in the agent's environment runs each pod in a process of
 * its own (a standby handed the pod, or nsenter), as before.
 */
import type { ChildProcess } from 'node:child_process';
import { readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Handoff } from '../control/handoff.js';
import { HOST_READY_LINE, formatHostStart, type HostEvent } from '../control/host.js';
import { logFileTail, podNodeFlags, spawnWithLog } from './pod-exec.js';

/** TENC_POD_HOST=0 turns pod hosts off. */
export function podHostEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.TENC_POD_HOST !== '0';
}

/** The argv of node (after execPath) for a pod host, in the agent's own netns. */
export function hostArgs(main: string, flags: readonly string[] = podNodeFlags()): string[] {
  return [...flags, main, 'pod', '--host'];
}

/** The name of a host's own log in the run dir (a pod's name cannot start with '.'). */
export function hostLogName(agentPid: number, seq: number): string {
  return `.host-${agentPid}-${seq}.log`;
}

/**
 * Host logs of other agent processes in `dir` that no process writes any more (their
 * host exited after the agent that started it: nobody removed them). A host an
 * earlier agent left running keeps its log: it is its stderr (fd 2).
 */
export function staleHostLogs(dir: string, agentPid: number): string[] {
  const names = readdirSync(dir).filter((n) => /^\.host-\d+-\d+\.log$/.test(n) && !n.startsWith(`.host-${agentPid}-`));
  if (names.length === 0) return [];
  const written = new Set<string>();
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const st = statSync(`/proc/${pid}/fd/2`);
      written.add(`${st.dev}:${st.ino}`);
    } catch {
      // gone, or not ours to look at
    }
  }
  return names.filter((n) => {
    try {
      const st = statSync(join(dir, n));
      return !written.has(`${st.dev}:${st.ino}`);
    } catch {
      return false;
    }
  });
}

export interface HostProcessOptions {
  main: string;
  flags?: readonly string[];
  /** The host's own stderr (0600, removed when it exits). */
  logFile: string;
  env?: NodeJS.ProcessEnv;
  execPath?: string;
  /** Not ready within this many ms: killed (ready resolves false); default 15 s. */
  readyTimeoutMs?: number;
  /** Starts the process (tests: a fake child); default spawnWithLog. */
  spawn?: typeof spawnWithLog;
}

interface PodWaiter {
  key: (publicKey: string) => void;
  exit: (code: number, error?: string) => void;
}

/** One `tenc pod --host` the agent started. */
export class HostProcess {
  readonly child: ChildProcess;
  /** true once it printed `host ready`; false when it exited first. */
  readonly ready: Promise<boolean>;
  /** The exit code or signal, once it exited. */
  readonly exited: Promise<string>;
  private isReady = false;
  private closed = false;
  private tail: string | null = null;
  /** Waiters by config, each with the seq of its start line. */
  private readonly pods = new Map<string, PodWaiter & { seq: number }>();
  /** The last start's seq. */
  private seq = 0;

  constructor(private readonly o: HostProcessOptions) {
    this.child = (o.spawn ?? spawnWithLog)(o.execPath ?? process.execPath, hostArgs(o.main, o.flags ?? podNodeFlags()), o.logFile, o.env ?? process.env);
    let markReady: (v: boolean) => void = () => undefined;
    this.ready = new Promise((r) => (markReady = r));
    const limit = o.readyTimeoutMs ?? 15_000;
    const timer = limit > 0 ? setTimeout(() => this.kill(), limit) : null;
    timer?.unref();
    let out = '';
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      for (let nl = out.indexOf('\n'); nl >= 0; nl = out.indexOf('\n')) {
        const line = out.slice(0, nl + 1);
        out = out.slice(nl + 1);
        if (!this.isReady) {
          if (line !== HOST_READY_LINE) return this.kill(); // not a host's first line
          this.isReady = true;
          if (timer) clearTimeout(timer);
          markReady(true);
          continue;
        }
        this.onEvent(line);
      }
    });
    this.exited = new Promise((resolve) => {
      const gone = (how: string) => {
        if (timer) clearTimeout(timer);
        markReady(false);
        this.tail = this.logTail();
        rmSync(this.o.logFile, { force: true });
        // every pod it ran is gone with it
        for (const [, w] of this.pods) w.exit(-1, `pod host exited (${how})`);
        this.pods.clear();
        resolve(how);
      };
      this.child.once('exit', (code, signal) => gone(String(signal ?? code)));
      this.child.once('error', (e) => gone(e.message));
    });
  }

  private onEvent(line: string): void {
    let e: HostEvent;
    try {
      e = JSON.parse(line) as HostEvent;
    } catch {
      return; // not an event: ignored (the host writes nothing else on stdout)
    }
    if (!('pod' in e) || typeof e.pod !== 'string') return;
    const w = this.pods.get(e.pod);
    if (!w) return;
    // an event of another start of this config (a copy forgotten); one without seq (the
    // host's own refusal of a start line, cli/host.ts) goes by the config as before
    if (e.seq !== undefined && e.seq !== w.seq) return;
    if ('publicKey' in e) w.key(e.publicKey);
    else if ('exited' in e) {
      this.pods.delete(e.pod);
      w.exit(e.exited, e.error);
    }
  }

  /** Ready, running, and its stdin still open. */
  usable(): boolean {
    return this.isReady && !this.closed && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Pods started here and not yet exited. */
  get size(): number {
    return this.pods.size;
  }

  /**
   * Starts a pod: its public key comes to `key`, its exit (code, error) to `exit`
   * (-1: the host itself exited). One pod per config at a time.
   */
  start(h: Handoff, w: PodWaiter): void {
    if (!this.usable()) throw new Error('pod host is not ready');
    if (this.pods.has(h.config)) throw new Error(`pod host: ${h.config} is running here already`);
    const seq = ++this.seq;
    this.pods.set(h.config, { ...w, seq });
    this.child.stdin!.write(formatHostStart(h, seq));
  }

  /** Asks the host to stop the pod of that config (its exit comes as the pod's exit). */
  stop(config: string): void {
    if (this.pods.has(config) && this.usable()) this.child.stdin!.write(JSON.stringify({ stop: config }) + '\n');
  }

  /**
   * Drops the waiter of a pod whose exit was not seen (agent/proxies.ts stopHosted): the
   * config can be started here again; a late event of the dropped start (its seq) is ignored.
   */
  forget(config: string): void {
    this.pods.delete(config);
  }

  /** No more pods: stdin ends; the host exits once its last pod has (at once with none). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.child.stdin!.end();
  }

  /** SIGKILL: only for a host that never got ready (it runs no pod). */
  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }

  /** The last bytes of its own stderr (why it failed). */
  logTail(): string {
    return this.tail ?? logFileTail(this.o.logFile);
  }
}
