/**
 * What `tenc status` shows, and its text form (modelled on `wg show`). The
 * report carries public keys only: private keys and the psk never leave the pod.
 */
import type { RouteMissCounters } from '../dns/misses.js';

export interface PeerStatus {
  publicKey: string;
  /** "ip:port" / "[v6]:port", or null while unknown. */
  endpoint: string | null;
  allowedIps: string[];
  /** Unix time (ms) of the latest completed handshake, null if none. */
  latestHandshake: number | null;
  rxBytes: number;
  txBytes: number;
  /** Seconds, 0 = off. */
  persistentKeepalive: number;
  /** Drop counts attributed to this peer, non-zero reasons only. */
  drops: Record<string, number>;
}

export interface ServiceStatus {
  vip: string;
  localAddress: string;
  ports: string[];
}

export interface StatusReport {
  interface: string;
  publicKey: string;
  listenPort: number;
  fwmark: number;
  mtu: number;
  addresses: string[];
  dataPlane: string;
  peers: PeerStatus[];
  services: ServiceStatus[];
  /** All drops by reason (non-zero only). */
  drops: Record<string, number>;
  /** Handshake messages not used, by reason (non-zero only): e.g. decrypt_response for a psk mismatch. */
  handshakeFailures: Record<string, number>;
  /** The data plane's counts (native engine: handshakesReceived, keepalivesReceived, underLoadEpisodes, siblingBatches, eventsLost, ...). */
  plane?: Record<string, number>;
  /** The native data plane's switches as it runs them (README switch table: TENC_BUSY_POLL_US -> busyPollUs, ...; 1/0 on/off). */
  switches?: Record<string, number>;
  /** The DNS proxy, when enabled (src/dns/service.ts DnsStatus has more counters). */
  dns?: DnsStatusReport;
  /** The pod process's pid (for `tenc agent status`); absent from older pods. */
  pid?: number;
  /** Unix time (ms) the pod started: a restarted pod has a new one (metrics: tenc_pod_start_time_seconds). */
  startTime?: number;
  /** Plaintext from the project's addresses outside tenc0 is dropped (config "enforce"). */
  enforce?: boolean;
  /** The project's TencPolicy set as this pod applies it; absent until the agent sent one. */
  policies?: PolicyStatusReport;
}

export interface PolicyStatusReport {
  /** What every project destination and port not named by an exempt policy follows. */
  default: 'encrypt';
  /** ip rules in force for exempt ports. */
  rules: number;
  entries: { name: string; mode: 'encrypt' | 'exempt'; target: string; addresses: string[]; ports: string[]; local: boolean }[];
}

export interface DnsStatusReport {
  domain: string;
  upstreams: string[];
  port: number;
  counters: {
    queriesUdp: number;
    queriesTcp: number;
    answered: number;
    rewritten: number;
    servfail: number;
    routesHeld: number;
    drops: Record<string, number>;
  };
  /** First-use classification of dns.classifyCidrs (src/dns/misses.ts), when configured. */
  routeMisses?: { ranges: string[]; bypasses: number } & RouteMissCounters;
}

function plural(n: number, unit: string): string {
  return `${n} ${unit}${n === 1 ? '' : 's'}`;
}

/** "1 hour, 2 minutes, 3 seconds ago" like wg(8). */
export function formatAgo(thenMs: number, nowMs: number): string {
  let s = Math.max(0, Math.floor((nowMs - thenMs) / 1000));
  if (s === 0) return 'Now';
  const parts: string[] = [];
  const units: [number, string][] = [
    [365 * 86400, 'year'],
    [86400, 'day'],
    [3600, 'hour'],
    [60, 'minute'],
    [1, 'second'],
  ];
  for (const [size, name] of units) {
    if (s >= size) {
      parts.push(plural(Math.floor(s / size), name));
      s %= size;
    }
  }
  return `${parts.join(', ')} ago`;
}

/** 1536 -> "1.50 KiB" like wg(8). */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  if (n < 1024) return `${n} B`;
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(2)} ${units[i]}`;
}

function formatDrops(d: Record<string, number>): string {
  return Object.entries(d)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
}

export function formatStatus(r: StatusReport, nowMs = Date.now()): string {
  const out: string[] = [];
  out.push(`interface: ${r.interface}`);
  out.push(`  public key: ${r.publicKey}`);
  out.push(`  listening port: ${r.listenPort}`);
  out.push(`  fwmark: 0x${r.fwmark.toString(16)}`);
  out.push(`  mtu: ${r.mtu}`);
  out.push(`  addresses: ${r.addresses.join(', ') || '(none)'}`);
  out.push(`  data plane: ${r.dataPlane}`);
  const drops = formatDrops(r.drops);
  if (drops) out.push(`  drops: ${drops}`);
  const hf = formatDrops(r.handshakeFailures ?? {});
  if (hf) out.push(`  handshake failures: ${hf}`);
  if (r.dns) {
    const c = r.dns.counters;
    out.push(`  dns: ${r.dns.domain} via ${r.dns.upstreams.join(', ')}, proxy port ${r.dns.port}`);
    out.push(`  dns queries: ${c.queriesUdp} udp, ${c.queriesTcp} tcp; ${c.answered} answered, ${c.rewritten} rewritten, ${c.servfail} servfail; ${c.routesHeld} learned routes`);
    const dd = formatDrops(c.drops);
    if (dd) out.push(`  dns drops: ${dd}`);
    const m = r.dns.routeMisses;
    if (m) {
      out.push(`  classified on first use: ${m.ranges.join(', ')}`);
      out.push(
        `  route misses: ${m.misses}; ${m.bypasses} bypasses held (${m.bypassed} added, ${m.evicted} evicted), ` +
          `${m.released} packets released (${m.releaseErrors} failed), ${m.projectUnrouted} project without a peer, ` +
          `${m.undecided} undecided (reverse lookup unanswered), ${m.busy} busy, ${m.errors} errors`,
      );
    }
  }
  if (r.policies) {
    const n = r.policies.entries.length;
    out.push(`  policies: ${n === 0 ? 'none' : n}; every other project destination and port: ${r.policies.default} (the default)`);
    for (const e of r.policies.entries) {
      const side = e.local ? ' (served here: its replies too)' : '';
      out.push(`  policy ${e.name}: ${e.mode}, ${e.target}: ${e.ports.join(', ')} to ${e.addresses.join(', ') || '(no pods yet)'}${side}`);
    }
  }
  for (const s of r.services) {
    out.push('');
    out.push(`service: ${s.vip}`);
    out.push(`  local address: ${s.localAddress}`);
    out.push(`  ports: ${s.ports.length > 0 ? s.ports.join(', ') : 'all tcp and udp'}`);
  }
  for (const p of r.peers) {
    out.push('');
    out.push(`peer: ${p.publicKey}`);
    if (p.endpoint) out.push(`  endpoint: ${p.endpoint}`);
    out.push(`  allowed ips: ${p.allowedIps.length > 0 ? p.allowedIps.join(', ') : '(none)'}`);
    if (p.latestHandshake !== null) out.push(`  latest handshake: ${formatAgo(p.latestHandshake, nowMs)}`);
    if (p.rxBytes > 0 || p.txBytes > 0) out.push(`  transfer: ${formatBytes(p.rxBytes)} received, ${formatBytes(p.txBytes)} sent`);
    if (p.persistentKeepalive > 0) out.push(`  persistent keepalive: every ${plural(p.persistentKeepalive, 'second')}`);
    const pd = formatDrops(p.drops);
    if (pd) out.push(`  drops: ${pd}`);
  }
  return out.join('\n') + '\n';
}
