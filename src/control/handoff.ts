/**
 * The standby handoff: how a node agent hands a pod to a `tenc pod --standby` it
 * started ahead (cli/standby.ts is the pod's side, agent/standby.ts the agent's).
 *
 * A process started per pod waits about 130 ms on this class of machine before its
 * first own step (node's start, the bundle's load: README "density"), and a CNI ADD
 * waits for it. A standby has done all that while no pod waited: it printed
 * STANDBY_READY_LINE on stdout and reads one line on stdin, the handoff:
 *
 *   {"netns":"/proc/PID/ns/net","config":"/run/tenc/.../pod.json","log":"/run/tenc/.../pod.log"}\n
 *
 * netns and config are required, log is optional (without it stderr stays where the
 * agent pointed it). No other field is accepted. Then it enters the namespace and
 * runs as `tenc pod --config CONFIG` would, its first stdout line the public key.
 * End of stdin before a handoff: the agent is gone; the standby exits 0 and has
 * touched nothing. Only the agent that started it holds that pipe.
 */

/** What a standby prints once it can be handed a pod. */
export const STANDBY_READY_LINE = 'standby ready\n';

/** Longest handoff line accepted (three paths). */
export const HANDOFF_MAX_BYTES = 16 * 1024;

export interface Handoff {
  /** The pod's network namespace: a path of an nsfs file (/run/netns/NAME, /proc/PID/ns/net). */
  netns: string;
  /** The pod's config file (control/config.ts). */
  config: string;
  /** Where the pod's stderr (its log) goes from the handoff on. */
  log?: string;
}

/** The line the agent writes (newline included). */
export function formatHandoff(h: Handoff): string {
  return JSON.stringify({ netns: h.netns, config: h.config, ...(h.log !== undefined ? { log: h.log } : {}) }) + '\n';
}

/** A handoff line that cannot be used; the message names the field at fault. */
export class HandoffError extends Error {}

/** Parses and checks a handoff line (without its newline). */
export function parseHandoff(line: string): Handoff {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (e) {
    throw new HandoffError(`standby handoff: not JSON (${(e as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new HandoffError('standby handoff: not a JSON object');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== 'netns' && k !== 'config' && k !== 'log') throw new HandoffError(`standby handoff: unknown field "${k}" (netns, config, log)`);
  const path = (k: string, required: boolean): string | undefined => {
    const p = o[k];
    if (p === undefined && !required) return undefined;
    if (typeof p !== 'string' || p === '') throw new HandoffError(`standby handoff: "${k}" must be a non-empty path`);
    if (!p.startsWith('/')) throw new HandoffError(`standby handoff: "${k}" must be an absolute path, not ${JSON.stringify(p)}`);
    if (p.includes('\0')) throw new HandoffError(`standby handoff: "${k}" contains a NUL byte`);
    return p;
  };
  const netns = path('netns', true)!;
  const config = path('config', true)!;
  const log = path('log', false);
  return { netns, config, ...(log !== undefined ? { log } : {}) };
}
