/**
 * Which pods a node runs, and their status reports, bounded: at most `cap` pods,
 * `parallel` requests at a time, each given `timeoutMs`. A pod that does not answer
 * in time is reported as down (tenc_pod_up 0), never waited for longer.
 *
 * discoverPods is the one function that knows the agent's run directory layout
 * (<runDir>/<pod>.json, the config it started the pod with, naming its
 * controlSocket); `tenc agent status` and the agent's /metrics both use it, so
 * both keep working while the agent is down.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { DEFAULT_SOCKET_DIR } from '../control/config.js';
import { controlRequest } from '../control/socket.js';
import type { StatusReport } from '../control/status.js';
import type { PodSample } from './render.js';
import { DNS_LABEL } from '../net/names.js';

export interface PodTarget {
  namespace: string;
  pod: string;
  /** The pod's control socket. */
  socket: string;
}

export const DEFAULT_CAP = 1000;
export const DEFAULT_PARALLEL = 32;
export const DEFAULT_TIMEOUT_MS = 2000;

/**
 * The pods of an agent's run directory. `namespace` labels them (the agent's
 * project); when null, the project is taken from the pod config's DNS domain
 * (<project>.svc.cluster.local), else from the directory name (agent-<project>-<node>).
 * Unreadable or foreign JSON files are skipped (listed in `problems`).
 */
export function discoverPods(runDir: string, namespace: string | null = null, problems: string[] = []): PodTarget[] {
  let names: string[];
  try {
    names = readdirSync(runDir)
      .filter((n) => n.endsWith('.json') && n !== 'registrations.json') // the node agent's own state file
      .sort();
  } catch (e) {
    problems.push(`${runDir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    return [];
  }
  const out: PodTarget[] = [];
  for (const name of names) {
    const file = join(runDir, name);
    try {
      const c = JSON.parse(readFileSync(file, 'utf8')) as { controlSocket?: unknown; dns?: { domain?: unknown } };
      if (typeof c.controlSocket !== 'string') {
        problems.push(`${file}: controlSocket: missing`);
        continue;
      }
      let ns = namespace;
      if (ns === null && typeof c.dns?.domain === 'string') ns = c.dns.domain.replace(/\.svc\.cluster\.local$/, '');
      if (ns === null) ns = basename(runDir).replace(/^agent-/, '');
      out.push({ namespace: ns, pod: name.slice(0, -'.json'.length), socket: c.controlSocket });
    } catch (e) {
      problems.push(`${file}: ${(e as Error).message}`);
    }
  }
  return out;
}

/**
 * The pods of a node agent's run directory (src/agent/node.ts): one subdirectory per
 * project (<runDir>/<project>/<pod>.json), labelled with the project; `project` picks
 * one. Pod configs at the top (a flat run directory, as one project's agent or a
 * hand-made directory has) are found too, labelled `flatNamespace` (default `project`)
 * or as discoverPods does.
 */
export function discoverNodePods(runDir: string, project: string | null = null, problems: string[] = [], flatNamespace: string | null = project): PodTarget[] {
  const flat = discoverPods(runDir, flatNamespace, problems);
  let dirs: string[] = [];
  try {
    dirs = readdirSync(runDir, { withFileTypes: true })
      .filter((d) => d.isDirectory() && DNS_LABEL.test(d.name) && (project === null || d.name === project))
      .map((d) => d.name)
      .sort();
  } catch {
    // reported by discoverPods
  }
  return [...flat, ...dirs.flatMap((d) => discoverPods(join(runDir, d), d, problems))];
}

/** The longest name a directory entry may have (NAME_MAX). */
const NAME_MAX = 255;

/**
 * A node agent's default run directory: DIR/agent-NODE (NODE a checked node name,
 * net/names.ts). A node's name may be 253 characters, six more than a directory
 * entry holds with "agent-" before it: a name too long keeps its first characters
 * and ends in 16 hex digits of its SHA-256, so each node still has its own directory.
 */
export function agentRunDir(node: string, dir = DEFAULT_SOCKET_DIR): string {
  const name = `agent-${node}`;
  if (name.length <= NAME_MAX) return join(dir, name);
  const hash = createHash('sha256').update(node).digest('hex').slice(0, 16);
  return join(dir, `${name.slice(0, NAME_MAX - hash.length - 1)}-${hash}`);
}

/** Every agent run directory under dir (agent-*), for a node-wide view. */
export function agentRunDirs(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((d) => d.isDirectory() && d.name.startsWith('agent-'))
      .map((d) => join(dir, d.name))
      .sort();
  } catch {
    return [];
  }
}

export interface GatherOptions {
  cap?: number;
  parallel?: number;
  timeoutMs?: number;
  /** The status request; default the control socket's (tests and benches may pass another). */
  request?: (socket: string) => Promise<StatusReport>;
}

export interface Gathered {
  samples: (PodSample & { socket: string; error: string | null })[];
  skipped: number;
  seconds: number;
}

/** Asks every target (up to the cap) for its status, `parallel` at a time. */
export async function gatherStatus(targets: PodTarget[], o: GatherOptions = {}): Promise<Gathered> {
  const t0 = process.hrtime.bigint();
  const cap = o.cap ?? DEFAULT_CAP;
  const parallel = Math.max(1, o.parallel ?? DEFAULT_PARALLEL);
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const request = o.request ?? (async (socket: string) => (await controlRequest(socket, { op: 'status' }, timeoutMs)) as StatusReport);
  const list = targets.slice(0, cap);
  const samples: Gathered['samples'] = new Array(list.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < list.length) {
      const i = next++;
      const t = list[i];
      let timer: NodeJS.Timeout | undefined;
      try {
        const report = await Promise.race([
          request(t.socket),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`no answer in ${timeoutMs} ms`)), timeoutMs);
          }),
        ]);
        samples[i] = { ...t, report, error: null };
      } catch (e) {
        samples[i] = { ...t, report: null, error: (e as Error).message };
      } finally {
        clearTimeout(timer);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, list.length) }, worker));
  return { samples, skipped: targets.length - list.length, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
}
