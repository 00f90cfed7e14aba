/**
 * `tenc agent status`: one row per pod of the node's agents (like `cilium encrypt
 * status`), from the pods' control sockets found by discoverNodePods, so it works while
 * the agent is down. Keys appear as fingerprints only.
 */
import { keyFingerprint } from '../log.js';
import { formatAgo } from '../control/status.js';
import { discoverNodePods, gatherStatus, type GatherOptions } from './gather.js';
import { LIVE_SESSION_SECONDS } from './names.js';

export interface AgentStatusRow {
  namespace: string;
  pod: string;
  socket: string;
  /** Null when the pod did not answer (error says why). */
  pid: number | null;
  fingerprint: string | null;
  peers: number;
  /** Peers with a handshake in the last 180 s. */
  livePeers: number;
  /** Unix time (ms) of the newest handshake with any peer, null if none. */
  latestHandshake: number | null;
  /** Every drop, all reasons. */
  drops: number;
  dropsByReason: Record<string, number>;
  /** Enforcement on: plaintext from the project's addresses outside the tunnel is dropped. Null when unknown. */
  failClosed: boolean | null;
  error: string | null;
}

export async function agentStatus(runDirs: string[], namespace: string | null, o: GatherOptions = {}, nowMs = Date.now()): Promise<{ rows: AgentStatusRow[]; problems: string[] }> {
  const problems: string[] = [];
  const targets = runDirs.flatMap((d) => discoverNodePods(d, namespace, problems));
  const g = await gatherStatus(targets, o);
  const rows = g.samples.map((s): AgentStatusRow => {
    const r = s.report;
    if (!r) return { namespace: s.namespace, pod: s.pod, socket: s.socket, pid: null, fingerprint: null, peers: 0, livePeers: 0, latestHandshake: null, drops: 0, dropsByReason: {}, failClosed: null, error: s.error };
    const hs = r.peers.map((p) => p.latestHandshake).filter((t): t is number => t !== null);
    let fp: string;
    try {
      fp = keyFingerprint(r.publicKey);
    } catch {
      fp = 'invalid';
    }
    return {
      namespace: s.namespace,
      pod: s.pod,
      socket: s.socket,
      pid: r.pid ?? null,
      fingerprint: fp,
      peers: r.peers.length,
      livePeers: hs.filter((t) => nowMs - t < LIVE_SESSION_SECONDS * 1000).length,
      latestHandshake: hs.length > 0 ? Math.max(...hs) : null,
      drops: Object.values(r.drops).reduce((a, b) => a + b, 0),
      dropsByReason: r.drops,
      failClosed: r.enforce ?? null,
      error: null,
    };
  });
  if (g.skipped > 0) problems.push(`${g.skipped} pods beyond the cap not shown`);
  return { rows, problems };
}

export function formatAgentStatus(rows: AgentStatusRow[], nowMs = Date.now()): string {
  const head = ['NAMESPACE', 'POD', 'PID', 'KEY', 'PEERS', 'LIVE', 'LAST HANDSHAKE', 'DROPS', 'FAIL-CLOSED'];
  const table = rows.map((r) =>
    r.error !== null
      ? [r.namespace, r.pod, '-', '-', '-', '-', `not answering: ${r.error}`, '-', '-']
      : [
          r.namespace,
          r.pod,
          r.pid === null ? '?' : String(r.pid),
          r.fingerprint ?? '-',
          String(r.peers),
          String(r.livePeers),
          r.latestHandshake === null ? 'never' : formatAgo(r.latestHandshake, nowMs),
          String(r.drops),
          r.failClosed === null ? '?' : r.failClosed ? 'yes' : 'no',
        ],
  );
  const all = [head, ...table];
  const widths = head.map((_, i) => Math.max(...all.map((row) => row[i].length)));
  const lines = all.map((row) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd());
  if (rows.length === 0) lines.push('(no pods found)');
  return lines.join('\n') + '\n';
}
