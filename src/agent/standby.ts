/**
 * The agent's side of the standby handoff (control/handoff.ts): one `tenc pod
 * --standby` started ahead, in the agent's own namespace, and handed the next pod
 * whose proxy starts. The pod's start then waits for the pod's own steps only, not
 * for node's start and the bundle's load (about 130 ms here; README "density").
 *
 * The standby's stdin is a pipe only this agent holds: the handoff line is written to
 * it and it is closed; an agent that goes away closes it too, and the standby, never
 * handed a pod, exits. Its stderr goes to a file of its own under the run directory
 * until the handoff (then to the pod's log): a failed handoff's error is read from it,
 * and it is removed once the pod started, or when the standby exits.
 *
 * Switch: TENC_POD_STANDBY=0 in the agent's environment starts every proxy the old
 * way (nsenter, a new node process per pod).
 */
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { STANDBY_READY_LINE, formatHandoff, type Handoff } from '../control/handoff.js';
import { logFileTail, spawnWithLog, standbyArgs } from './pod-exec.js';

/** TENC_POD_STANDBY=0 turns standby proxies off. */
export function standbyEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.TENC_POD_STANDBY !== '0';
}

export interface StandbyOptions {
  /** tenc's main.js. */
  main: string;
  /** Node flags (agent/pod-exec.ts podNodeFlags). */
  flags: readonly string[];
  /** The standby's stderr until its handoff (created 0600, removed at the handoff or exit). */
  logFile: string;
  /** The standby's environment; default the agent's. */
  env?: NodeJS.ProcessEnv;
  execPath?: string;
  /** A standby not ready within this many ms is killed (ready resolves false); default 15 s (0: no limit). */
  readyTimeoutMs?: number;
}

/** The name of a standby's own log in the run dir: a pod's name cannot start with '.', so no pod's log is ever this file. */
export function standbyLogName(agentPid: number, seq: number): string {
  return `.standby-${agentPid}-${seq}.log`;
}

/** Standby logs of other agent processes in the run dir (left by a killed agent): the agent removes them. */
export function staleStandbyLogs(names: readonly string[], agentPid: number): string[] {
  return names.filter((n) => /^\.standby-\d+-\d+\.log$/.test(n) && !n.startsWith(`.standby-${agentPid}-`));
}

/** One standby pod proxy. */
export class Standby {
  readonly child: ChildProcess;
  /** Resolves true once it printed `standby ready`, false when it exited first. */
  readonly ready: Promise<boolean>;
  /** Resolves with the exit code or signal once it exited. */
  readonly exited: Promise<string>;
  private isReady = false;
  private handed = false;
  /** logTail() as it was when the process exited (the file is removed then). */
  private tail: string | null = null;
  private readonly onData: (d: string) => void;

  constructor(private readonly o: StandbyOptions) {
    this.child = spawnWithLog(o.execPath ?? process.execPath, standbyArgs(o.main, o.flags), o.logFile, o.env ?? process.env);
    let out = '';
    let markReady: (v: boolean) => void = () => undefined;
    this.ready = new Promise((r) => (markReady = r));
    const limit = o.readyTimeoutMs ?? 15_000;
    const timer = limit > 0 ? setTimeout(() => this.kill(), limit) : null;
    timer?.unref();
    this.onData = (d: string) => {
      if (this.isReady) return; // nothing more is expected before the handoff
      out += d;
      if (out.startsWith(STANDBY_READY_LINE)) {
        this.isReady = true;
        if (timer) clearTimeout(timer);
        markReady(true);
      } else if (out.length >= STANDBY_READY_LINE.length) {
        this.kill(); // not a standby's first line
      }
    };
    this.child.stdout!.setEncoding('utf8').on('data', this.onData);
    this.exited = new Promise((resolve) => {
      const gone = (how: string) => {
        if (timer) clearTimeout(timer);
        markReady(false);
        this.tail = this.logTail();
        this.dropLog();
        resolve(how);
      };
      this.child.once('exit', (code, signal) => gone(String(signal ?? code)));
      this.child.once('error', (e) => gone(e.message));
    });
  }

  /** Ready for a handoff: printed `standby ready`, still running, not handed a pod yet. */
  usable(): boolean {
    return this.isReady && !this.handed && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The last bytes of what it wrote to its own log (why a standby or its handoff failed). */
  logTail(): string {
    return this.tail ?? logFileTail(this.o.logFile);
  }

  /**
   * Hands it the pod: the handoff line, then end of stdin. From here its stdout is the
   * pod's (the `public-key` line comes next: control/keyline.ts), its stderr the pod's
   * log, and the process is the pod's proxy.
   */
  handOff(h: Handoff): ChildProcess {
    if (!this.usable()) throw new Error('standby is not ready for a handoff');
    this.handed = true;
    this.child.stdout!.off('data', this.onData);
    this.child.stdout!.pause(); // readPublicKeyLine resumes it
    this.child.stdin!.end(formatHandoff(h));
    return this.child;
  }

  /** Removes its own log file (once the pod it was handed started: its log is the pod's now). */
  dropLog(): void {
    rmSync(this.o.logFile, { force: true });
  }

  /** Stops a standby never handed a pod (SIGKILL: it holds nothing) and removes its log at once (the agent may exit before the child's 'exit'). */
  kill(): void {
    if (this.handed) return;
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    if (this.tail === null) this.tail = this.logTail();
    this.dropLog();
  }
}
