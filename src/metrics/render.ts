/**
 * The pods' status reports as Prometheus text exposition (format 0.0.4), with the
 * names, labels and caps of names.ts. Pure: no I/O, so tests feed it reports.
 * Only public key fingerprints reach a label: the reports carry public keys, and
 * this is the one place that turns them into labels.
 */
import type { StatusReport } from '../control/status.js';
import { keyFingerprint } from '../log.js';
import { LIVE_SESSION_SECONDS, MAX_PEERS_PER_POD, MAX_REASONS, OTHER_PEERS, POD_METRICS, type MetricDef } from './names.js';
import type { CounterGuard } from './monotonic.js';

/** One pod of a scrape: its report, or null when it did not answer. */
export interface PodSample {
  namespace: string;
  pod: string;
  report: StatusReport | null;
}

type Labels = Record<string, string>;

function escapeLabel(v: string): string {
  if (!/[\\\n"]/.test(v)) return v;
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function num(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/**
 * Collects samples per metric, then writes each metric's HELP/TYPE once. With a
 * guard (monotonic.ts), counter values pass through it: `epoch` is the start time
 * of the pod process they come from.
 */
export class Exposition {
  private readonly samples = new Map<MetricDef, string[]>();

  constructor(private readonly guard: CounterGuard | null = null) {}

  add(m: MetricDef, labels: Labels, value: number, epoch = 0): void {
    const parts = m.labels.map((k) => `${k}="${escapeLabel(labels[k] ?? '')}"`);
    const series = `${m.name}${parts.length > 0 ? `{${parts.join(',')}}` : ''}`;
    const v = this.guard !== null && m.type === 'counter' ? this.guard.value(series, epoch, value) : value;
    const line = `${series} ${num(v)}`;
    let list = this.samples.get(m);
    if (!list) this.samples.set(m, (list = []));
    list.push(line);
  }

  /** Declares a metric with no sample yet (so HELP/TYPE appear). */
  declare(m: MetricDef): void {
    if (!this.samples.has(m)) this.samples.set(m, []);
  }

  text(): string {
    const out: string[] = [];
    for (const [m, lines] of this.samples) {
      out.push(`# HELP ${m.name} ${m.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`);
      out.push(`# TYPE ${m.name} ${m.type}`);
      for (const l of lines) out.push(l);
    }
    return out.length > 0 ? out.join('\n') + '\n' : '';
  }
}

/** The data plane description (engine.ts) as labels: "native, inject X, tun offload on, ..., aead Y". */
export function dataPlaneLabels(description: string): { aead: string; inject: string; tun_offload: string; udp_gso: string; udp_gro: string } {
  const get = (re: RegExp): string => re.exec(description)?.[1] ?? 'unknown';
  return {
    aead: get(/\baead ([\w.-]+)/),
    inject: get(/\binject ([\w.-]+)/),
    tun_offload: get(/\btun offload (\w+)/),
    udp_gso: get(/\budp gso (\w+)/),
    udp_gro: get(/\budp gro (\w+)/),
  };
}

/** Fingerprints computed before (a hash each: 1,000 peers a scrape add up); bounded, cleared when full. */
const fingerprints = new Map<string, string>();
const MAX_CACHED_FINGERPRINTS = 100_000;

function safeFingerprint(key: string): string {
  let fp = fingerprints.get(key);
  if (fp !== undefined) return fp;
  try {
    fp = keyFingerprint(key);
  } catch {
    return 'invalid';
  }
  if (fingerprints.size >= MAX_CACHED_FINGERPRINTS) fingerprints.clear();
  fingerprints.set(key, fp);
  return fp;
}

/** Non-zero reasons, at most MAX_REASONS (largest first), the rest summed as "_other". */
function cappedReasons(d: Record<string, number> | undefined): [string, number][] {
  const entries = Object.entries(d ?? {}).filter(([, n]) => typeof n === 'number' && n > 0);
  if (entries.length <= MAX_REASONS) return entries;
  entries.sort((a, b) => b[1] - a[1]);
  const kept = entries.slice(0, MAX_REASONS - 1);
  kept.push(['_other', entries.slice(MAX_REASONS - 1).reduce((s, [, n]) => s + n, 0)]);
  return kept;
}

/**
 * `peerPods`: per namespace, public key -> the peer's pod name (peer-names.ts), for
 * tenc_peer_info; without it (a pod's own /metrics) no tenc_peer_info.
 */
export function renderPods(samples: PodSample[], into = new Exposition(), nowMs = Date.now(), peerPods?: Map<string, Map<string, string>>): Exposition {
  const M = POD_METRICS;
  for (const m of Object.values(M)) into.declare(m);
  for (const s of samples) {
    const pod: Labels = { namespace: s.namespace, pod: s.pod };
    into.add(M.up, pod, s.report ? 1 : 0);
    const r = s.report;
    if (!r) continue;
    // counters of this pod process: through the guard, under its start time
    const epoch = typeof r.startTime === 'number' ? r.startTime : 0;
    const count = (m: MetricDef, l: Labels, v: number) => into.add(m, l, v, epoch);
    if (typeof r.startTime === 'number') into.add(M.startTime, pod, r.startTime / 1000);
    into.add(M.info, { ...pod, fingerprint: safeFingerprint(r.publicKey), ...dataPlaneLabels(r.dataPlane), enforce: r.enforce === undefined ? 'unknown' : String(r.enforce) }, 1);
    into.add(M.peers, pod, r.peers.length);
    into.add(M.livePeers, pod, r.peers.filter((p) => p.latestHandshake !== null && nowMs - p.latestHandshake < LIVE_SESSION_SECONDS * 1000).length);
    into.add(M.services, pod, r.services.length);
    // the busiest peers get series of their own; a peer keeps its series while it
    // stays among them (with fewer peers than the cap: always)
    const peers = [...r.peers];
    if (peers.length > MAX_PEERS_PER_POD) peers.sort((a, b) => b.txBytes + b.rxBytes - (a.txBytes + a.rxBytes));
    const own = peers.slice(0, peers.length > MAX_PEERS_PER_POD ? MAX_PEERS_PER_POD - 1 : peers.length);
    const names = peerPods?.get(s.namespace);
    for (const p of own) {
      const l = { ...pod, peer: safeFingerprint(p.publicKey) };
      const peerPod = names?.get(p.publicKey);
      if (peerPod !== undefined) into.add(M.peerInfo, { ...l, peer_pod: peerPod }, 1);
      count(M.sent, l, p.txBytes);
      count(M.received, l, p.rxBytes);
      into.add(M.handshake, l, p.latestHandshake === null ? 0 : p.latestHandshake / 1000);
    }
    if (own.length < peers.length) {
      const rest = peers.slice(own.length);
      const l = { ...pod, peer: OTHER_PEERS };
      count(M.sent, l, rest.reduce((n, p) => n + p.txBytes, 0));
      count(M.received, l, rest.reduce((n, p) => n + p.rxBytes, 0));
      into.add(M.handshake, l, Math.max(0, ...rest.map((p) => p.latestHandshake ?? 0)) / 1000);
    }
    for (const [reason, n] of cappedReasons(r.drops)) count(M.drops, { ...pod, reason }, n);
    for (const [reason, n] of cappedReasons(r.handshakeFailures)) count(M.handshakeFailures, { ...pod, reason }, n);
    count(M.plaintext, pod, r.drops?.plaintext_from_project ?? 0);
    const d = r.dns;
    if (d) {
      count(M.dnsQueries, { ...pod, protocol: 'udp' }, d.counters.queriesUdp);
      count(M.dnsQueries, { ...pod, protocol: 'tcp' }, d.counters.queriesTcp);
      count(M.dnsAnswers, pod, d.counters.answered);
      count(M.dnsRewrites, pod, d.counters.rewritten);
      count(M.dnsErrors, pod, d.counters.servfail);
      into.add(M.dnsRoutes, pod, d.counters.routesHeld);
      for (const [reason, n] of cappedReasons(d.counters.drops)) count(M.dnsDrops, { ...pod, reason }, n);
      const m = d.routeMisses;
      if (m) {
        count(M.routeMisses, pod, m.misses);
        count(M.bypassesAdded, pod, m.bypassed);
        into.add(M.bypasses, pod, m.bypasses);
        count(M.projectUnrouted, pod, m.projectUnrouted);
      }
    }
  }
  return into;
}
