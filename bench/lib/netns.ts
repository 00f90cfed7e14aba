/**
 * Network namespaces for the benches, made and removed by the shell library the
 * scripts and tests share (netns-scripts/lib.sh: ns_up, ns_remove), so a bench's
 * namespace is set up like a pod's of pods.sh or cluster.sh. Pods on pods.sh's bridge
 * come from `pods.sh add` (bench/flood.ts). Root only; a failure throws with the
 * command's stderr.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const LIB_SH = fileURLToPath(new URL('../../../netns-scripts/lib.sh', import.meta.url));

/** Runs one lib.sh function with its arguments. */
function libSh(fn: string, ...args: string[]): void {
  const r = spawnSync('bash', ['-c', `set -eu; . "$0"; ${fn} "$@"`, LIB_SH, ...args], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`netns-scripts/lib.sh ${fn} ${args.join(' ')}: ${r.stderr.trim() || r.error?.message || `exit ${r.status ?? r.signal}`}`);
}

/** A namespace with lo up and IPv6 duplicate address detection off (lib.sh ns_up); kept if it exists. */
export function nsUp(ns: string): void {
  libSh('ns_up', ns);
}

/** Stops what runs in the namespace, removes its stale tenc sockets and deletes it (lib.sh ns_remove); nothing if absent. */
export function nsRemove(ns: string): void {
  libSh('ns_remove', ns);
}
