/**
 * How a pod's proxy is started: the command line of `tenc pod` in a pod's netns, the
 * one definition the node agent (proxies.ts, standby.ts) and bench/density.ts use.
 *
 *   nsenter --net=NETNS -- NODE [node flags] MAIN pod --config FILE
 *   NODE [node flags] MAIN pod --standby        (a standby, handed its pod later)
 *   NODE [node flags] MAIN pod --host           (a pod host: agent/host.ts)
 *
 * Node flags go here because some V8 settings are fixed when the isolate is made
 * and cannot be set from inside (control/lean.ts sets the ones V8 reads at each
 * decision). POD_NODE_FLAGS is what the agent passes by default: none so far, as no
 * flag measured by bench density (--max-semi-space-size, --single-threaded-gc,
 * --v8-pool-size, --jitless, --optimize-for-size) saved memory or time worth
 * keeping (README "density").
 * Switch: TENC_POD_NODE_FLAGS in the agent's environment replaces the list: "" or "0"
 * for none (node's defaults), else flags separated by spaces (A/B runs).
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';

/** The node flags a pod's proxy is spawned with, unless TENC_POD_NODE_FLAGS says otherwise. */
export const POD_NODE_FLAGS: readonly string[] = [];

/** The node flags for a pod's proxy: POD_NODE_FLAGS, or TENC_POD_NODE_FLAGS when set ("" or "0": none). */
export function podNodeFlags(env: NodeJS.ProcessEnv = process.env): string[] {
  const v = env.TENC_POD_NODE_FLAGS;
  if (v === undefined) return [...POD_NODE_FLAGS];
  const t = v.trim();
  if (t === '' || t === '0') return [];
  const flags = t.split(/\s+/);
  const bad = flags.find((f) => !f.startsWith('--'));
  if (bad !== undefined) throw new Error(`TENC_POD_NODE_FLAGS: "${bad}" is not a node flag (--name or --name=value, separated by spaces)`);
  return flags;
}

/** The argv of `nsenter` that starts `tenc pod --config CONFIG` in NETNS (a path) with node `execPath` and `flags`. */
export function podSpawnArgs(netns: string, main: string, config: string, flags: readonly string[] = podNodeFlags(), execPath: string = process.execPath): string[] {
  return [`--net=${netns}`, '--', execPath, ...flags, main, 'pod', '--config', config];
}

/** The argv of node (after execPath) for a standby pod proxy (agent/standby.ts), in the agent's own netns. */
export function standbyArgs(main: string, flags: readonly string[] = podNodeFlags()): string[] {
  return [...flags, main, 'pod', '--standby'];
}

/**
 * Spawns a process the agent talks to over its stdin and stdout (a standby, a pod
 * host): detached (a signal to the agent's group does not reach it), unref'd, stderr
 * to `logFile` (created 0600, truncated), EPIPE on its stdin ignored (its death is
 * seen by 'exit').
 */
export function spawnWithLog(execPath: string, args: string[], logFile: string, env: NodeJS.ProcessEnv): ChildProcess {
  const fd = openSync(logFile, 'w', 0o600);
  let child: ChildProcess;
  try {
    child = spawn(execPath, args, { stdio: ['pipe', 'pipe', fd], detached: true, env });
  } finally {
    closeSync(fd);
  }
  child.unref();
  child.stdin!.on('error', () => undefined);
  return child;
}

/** The last 400 characters of a log file, trimmed ('' when it cannot be read): why a standby or a host failed. */
export function logFileTail(file: string): string {
  try {
    return readFileSync(file, 'utf8').slice(-400).trim();
  } catch {
    return '';
  }
}
