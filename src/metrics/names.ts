/**
 * Every metric tenc exports, in one place: name, type, help and labels. The pods'
 * metrics are built from their control sockets' status reports (render.ts); the
 * agent's own are prom-client objects made from the AGENT_* entries (agent.ts).
 *
 * Labels: `namespace` and `pod` name the pod (the agent's project and pod name);
 * `peer` is a peer's key fingerprint (src/log.ts keyFingerprint: 8 base64url
 * characters of a hash), never the key; the peer's pod name is in tenc_peer_info
 * (peer_pod), apart from the counters, so a name learned later does not start new
 * counter series. Cardinality is bounded: per pod at most
 * MAX_PEERS_PER_POD peers get series of their own, the rest are summed into
 * peer="_other"; `reason` comes from fixed lists in the engine, the enforcement
 * and the DNS proxy, and at most MAX_REASONS of them are exported per metric and pod
 * (the rest summed into reason="_other").
 */

export const MAX_PEERS_PER_POD = 64;
export const MAX_REASONS = 32;
/** The peer label of the peers beyond MAX_PEERS_PER_POD, summed. */
export const OTHER_PEERS = '_other';
/** A peer counts as having a live session when its latest handshake is younger than this (REJECT_AFTER_TIME). */
export const LIVE_SESSION_SECONDS = 180;

export type MetricType = 'counter' | 'gauge';

export interface MetricDef {
  name: string;
  type: MetricType;
  help: string;
  labels: readonly string[];
}

const POD = ['namespace', 'pod'] as const;
const PEER = ['namespace', 'pod', 'peer'] as const;

function def(name: string, type: MetricType, labels: readonly string[], help: string): MetricDef {
  return { name, type, help, labels };
}

/** The pods' metrics, from their status reports. */
export const POD_METRICS = {
  up: def('tenc_pod_up', 'gauge', POD, '1 when the pod answered the status request of this scrape, 0 when not (timeout, error).'),
  startTime: def('tenc_pod_start_time_seconds', 'gauge', POD, 'Unix time the pod process started; a restart changes it and resets the pod counters.'),
  info: def(
    'tenc_pod_info',
    'gauge',
    [...POD, 'fingerprint', 'aead', 'inject', 'tun_offload', 'udp_gso', 'udp_gro', 'enforce'],
    "Always 1: the pod's public key fingerprint and its data plane (AEAD backend, packet injection, offloads).",
  ),
  peers: def('tenc_peers', 'gauge', POD, 'Peers configured in the pod.'),
  livePeers: def('tenc_peers_live', 'gauge', POD, 'Peers with a handshake in the last 180 s (a live session).'),
  services: def('tenc_services', 'gauge', POD, 'Service VIPs the pod routes into the tunnel.'),
  sent: def('tenc_peer_sent_bytes_total', 'counter', PEER, 'Bytes sent to the peer (encrypted packets on the wire).'),
  received: def('tenc_peer_received_bytes_total', 'counter', PEER, 'Bytes received from the peer (authenticated packets).'),
  peerInfo: def(
    'tenc_peer_info',
    'gauge',
    [...PEER, 'peer_pod'],
    "Always 1: the pod a peer key belongs to, from the registry as the agent trusts it (agent only; a peer not in the registry has none). Join: ... * on (namespace, pod, peer) group_left (peer_pod) tenc_peer_info.",
  ),
  handshake: def('tenc_peer_latest_handshake_seconds', 'gauge', PEER, 'Unix time of the latest completed handshake with the peer, 0 when none (the peer="_other" series: the newest).'),
  drops: def('tenc_drops_total', 'counter', [...POD, 'reason'], 'Packets dropped, by reason.'),
  handshakeFailures: def('tenc_handshake_failures_total', 'counter', [...POD, 'reason'], 'Handshake messages not used, by reason (e.g. decrypt_response: a psk mismatch).'),
  plaintext: def('tenc_plaintext_from_project_total', 'counter', POD, "Plaintext packets from the project's addresses that arrived outside the tunnel and were dropped (enforce)."),
  dnsQueries: def('tenc_dns_queries_total', 'counter', [...POD, 'protocol'], 'DNS queries the pod DNS proxy received, by transport.'),
  dnsAnswers: def('tenc_dns_answers_total', 'counter', POD, 'DNS answers the proxy gave.'),
  dnsRewrites: def('tenc_dns_rewrites_total', 'counter', POD, 'DNS answers with a service VIP rewritten to its endpoints.'),
  dnsErrors: def('tenc_dns_errors_total', 'counter', POD, 'DNS queries answered SERVFAIL (no upstream answer).'),
  dnsDrops: def('tenc_dns_drops_total', 'counter', [...POD, 'reason'], 'DNS messages dropped by the proxy, by reason.'),
  dnsRoutes: def('tenc_dns_learned_routes', 'gauge', POD, 'Routes into the tunnel learned from DNS answers, held now.'),
  routeMisses: def('tenc_route_misses_total', 'counter', POD, 'Packets to an unclassified address in dns.classifyCidrs (classified on first use).'),
  bypassesAdded: def('tenc_route_bypasses_added_total', 'counter', POD, 'Addresses classified as outside the project: routed around the tunnel.'),
  bypasses: def('tenc_route_bypasses', 'gauge', POD, 'Bypass routes held now.'),
  projectUnrouted: def('tenc_route_project_unrouted_total', 'counter', POD, 'Route misses for project addresses no peer serves (kept in the tunnel, dropped).'),
} as const satisfies Record<string, MetricDef>;

/** The exporter's own (agent or pod) metrics, made by the scrape. */
export const SCRAPE_METRICS = {
  buildInfo: def('tenc_build_info', 'gauge', ['version', 'nodejs'], 'Always 1: the tenc version and the Node.js version of the exporter.'),
  scrapePods: def('tenc_scrape_pods', 'gauge', [], 'Pods found for this scrape (at most the cap).'),
  scrapeSkipped: def('tenc_scrape_pods_skipped', 'gauge', [], 'Pods found beyond the cap of pods asked per scrape.'),
  scrapeDuration: def('tenc_scrape_duration_seconds', 'gauge', [], "Time to gather the pods' status reports for this scrape."),
} as const satisfies Record<string, MetricDef>;

/** The agent's own metrics (prom-client objects, agent.ts). */
export const AGENT_METRICS = {
  reconciles: def('tenc_agent_reconciles_total', 'counter', ['result'], 'Reconcile runs of the agent, by result (ok, error).'),
  reconcileDuration: def('tenc_agent_reconcile_duration_seconds', 'gauge', [], 'Duration of the latest reconcile run.'),
  registryRequests: def('tenc_agent_registry_requests_total', 'counter', ['op', 'result'], 'Registry calls of the agent, by operation and result (ok, error).'),
  registryErrors: def('tenc_agent_registry_errors_total', 'counter', ['op'], 'Registry calls that failed, by operation.'),
  proxiesStarted: def('tenc_agent_proxies_started_total', 'counter', ['how'], 'Pod proxies started (how="started") or adopted from a previous agent (how="adopted").'),
  proxiesRestarted: def('tenc_agent_proxies_restarted_total', 'counter', [], 'Pod proxies lost (exited, dead socket, failed start) and so started again.'),
  proxies: def('tenc_agent_proxies', 'gauge', ['namespace'], 'Pod proxies the agent runs now, by project.'),
  podsUnregistered: def('tenc_agent_pods_unregistered', 'gauge', [], 'Pods of protected namespaces on this node running without tenc: their CNI ADD never reached the agent (past a 30 s grace).'),
  peersRejected: def('tenc_agent_peers_rejected_total', 'counter', [], 'Published keys not believed (for a pod another node runs, or a second entry for one pod), each pod, node and reason counted once.'),
  cniRequests: def('tenc_cni_requests_total', 'counter', ['command', 'result'], 'CNI requests the agent served, by command (ADD, DEL, CHECK, STATUS) and result (ok or the error code).'),
} as const satisfies Record<string, MetricDef>;

/** Histograms (prom-client adds _bucket, _sum, _count). */
export const AGENT_HISTOGRAMS = {
  registryDuration: { ...def('tenc_agent_registry_duration_seconds', 'gauge', ['op'], 'Latency of the registry calls of the agent.'), buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5] },
  cniDuration: { ...def('tenc_cni_request_duration_seconds', 'gauge', ['command'], 'Latency of the CNI requests the agent served.'), buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] },
} as const;
