/**
 * The DNS proxy as a pod lifecycle step: config + resolv.conf -> proxy sockets and
 * the nftables interception. start() undoes what it did on failure; stop() undoes
 * everything in reverse (interception first, so no query is redirected to a
 * closed port, then the proxy and its learned routes).
 */
import { readFileSync } from 'node:fs';
import type { Endpoint } from '../net/address.js';
import type { Logger } from '../log.js';
import type { NetnsScope } from '../io/netns.js';
import { AddressClassifier, CidrSet, canonicalAddress, type AddressVerdict } from './classify.js';
import { DnsIntercept } from './intercept.js';
import { DnsProxy, type DnsCounters, type RouteSink } from './proxy.js';
import { parseResolvConf, projectDomainFrom } from './resolv.js';
import { LearnedRoutes } from './routes.js';
import type { RouteMisses } from './misses.js';

/** The DNS proxy's settings, as src/control/config.ts parses them from the config file (README "DNS proxy"). */
export interface DnsConfig {
  enabled: boolean;
  /** The project domain, normalized (e.g. "alpha.svc.cluster.local"); null: from the resolv.conf search list. */
  domain: string | null;
  /** The real cluster DNS; empty: the nameservers of resolvConf. */
  upstreams: Endpoint[];
  neverTunnelNames: string[];
  /** Canonical CIDRs. */
  neverTunnelCidrs: string[];
  /**
   * Canonical CIDRs (the cluster's pod and service ranges) routed into tenc0 as a
   * whole: an address in them that no peer claims is classified on first use
   * (src/dns/misses.ts); not project traffic gets a bypass route, project traffic
   * without a peer is dropped. Empty (default): only known destinations are routed.
   */
  classifyCidrs: string[];
  /** Seconds: TTLs of project answers are capped at this. */
  maxTtl: number;
  /** Seconds a learned route stays after its TTL (and again while its peer still sends). */
  routeGrace: number;
  /** Milliseconds before an unanswered query gets SERVFAIL. */
  upstreamTimeout: number;
  /** The proxy's port on 127.0.0.1 / ::1. */
  listenPort: number;
  /** Absolute path. */
  resolvConf: string;
  /** Ready endpoints of project service VIPs (A/AAAA of a VIP are rewritten to them). */
  endpoints: ServiceEndpoints[];
}

export interface ServiceEndpoints {
  vip: string;
  addresses: string[];
}

export interface DnsServiceDeps {
  config: DnsConfig;
  fwmark: number;
  /** nftables table name, unique per pod namespace. */
  table: string;
  routes: RouteSink;
  /** Is the address a known project member (a peer's allowed IPs, a service VIP)? */
  isMember: (address: string) => boolean;
  /** Transmit counter of the peer carrying an address (route grace), or null. */
  activity: (address: string) => number | null;
  log: Logger;
  /** The pod's namespace in a pod host (io/netns.ts): sockets and nftables go there. */
  netns?: NetnsScope;
}

export interface DnsStatus {
  domain: string;
  upstreams: string[];
  port: number;
  counters: DnsCounters;
}

function canonical(address: string): string {
  return canonicalAddress(address) ?? address;
}

export class DnsService {
  private endpointMap = new Map<string, string[]>();
  private classifier: AddressClassifier | null = null;
  private misses: RouteMisses | null = null;
  private isMember: (address: string) => boolean = () => false;

  private constructor(
    private readonly proxy: DnsProxy,
    private readonly intercept: DnsIntercept,
    readonly domain: string,
    readonly upstreams: string[],
  ) {}

  static async start(d: DnsServiceDeps): Promise<DnsService> {
    const c = d.config;
    let resolv = { nameservers: [] as string[], search: [] as string[] };
    try {
      resolv = parseResolvConf(readFileSync(c.resolvConf, 'utf8'));
    } catch (e) {
      if (c.upstreams.length === 0 || c.domain === null) throw new Error(`cannot read ${c.resolvConf}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const domain = c.domain ?? projectDomainFrom(resolv.search);
    if (domain === null) throw new Error(`no project domain: set dns.domain or a "<project>.svc.<cluster domain>" search entry in ${c.resolvConf}`);
    const servers = c.upstreams.length > 0 ? c.upstreams : resolv.nameservers.slice(0, 3).map((address) => ({ address, port: 53 }));
    if (servers.length === 0) throw new Error(`no upstream DNS: set dns.upstreams or a nameserver in ${c.resolvConf}`);

    let svc: DnsService | null = null;
    const endpoints = (vip: string) => svc?.endpointMap.get(canonical(vip));
    const learned = new LearnedRoutes({ graceMs: c.routeGrace * 1000, maxRoutes: 4096, activity: d.activity });
    const proxy = await DnsProxy.start({
      listen: servers.some((s) => s.address.includes(':')) ? ['127.0.0.1', '::1'] : ['127.0.0.1'],
      port: c.listenPort,
      upstream: { servers, mark: d.fwmark, timeoutMs: c.upstreamTimeout, maxInflight: 4096, netns: d.netns },
      policy: { domain, neverNames: c.neverTunnelNames },
      neverCidrs: new CidrSet(c.neverTunnelCidrs),
      maxTtl: c.maxTtl,
      endpoints,
      routes: {
        sink: d.routes,
        learned,
      },
      log: d.log,
      netns: d.netns,
    });
    // only servers on port 53 are what the pod's resolver talks to
    const intercept = new DnsIntercept({
      table: d.table,
      fwmark: d.fwmark,
      servers: servers.filter((s) => s.port === 53).map((s) => s.address),
      port: proxy.port,
      netns: d.netns,
    });
    try {
      if (await intercept.removeResidue()) d.log.warn({ table: d.table }, 'dns: removed the nftables table of an earlier run');
      await intercept.install();
    } catch (e) {
      await proxy.stop();
      throw e;
    }
    svc = new DnsService(proxy, intercept, domain, servers.map((s) => `${s.address}:${s.port}`));
    svc.isMember = d.isMember;
    svc.setEndpoints(c.endpoints);
    const s = svc;
    svc.classifier = new AddressClassifier({
      policy: { domain, neverNames: c.neverTunnelNames },
      neverCidrs: new CidrSet(c.neverTunnelCidrs),
      isMember: (a) => d.isMember(a) || s.isEndpointOrVip(a),
      // a project answer named it (route held or recently expired): never a bypass
      learned: (a) => learned.known(a, Date.now()),
      reverse: (ptr) => proxy.lookupPtr(ptr),
      now: Date.now,
      cacheSeconds: c.maxTtl,
    });
    d.log.info({ domain, upstreams: svc.upstreams, port: proxy.port }, 'dns proxy running');
    return svc;
  }

  /** Replaces the VIP -> ready endpoints map. */
  setEndpoints(list: ServiceEndpoints[]): void {
    const m = new Map<string, string[]>();
    for (const e of list) m.set(canonical(e.vip), e.addresses.map(canonical));
    this.endpointMap = m;
    this.proxy.clearCache();
    this.classifier?.clear();
    this.revokeBypasses();
  }

  /**
   * Peers, services or members changed: cached address verdicts are stale, and the
   * bypasses of addresses that are now members go at once (not when their verdict
   * time ends), so their next packet is tunnelled or dropped, never sent in plaintext.
   */
  membershipChanged(): void {
    this.classifier?.clear();
    this.revokeBypasses();
  }

  /** The first-use classification whose bypasses membership changes revoke. */
  attachMisses(misses: RouteMisses): void {
    this.misses = misses;
  }

  private revokeBypasses(): void {
    void this.misses?.revoke((a) => this.isMember(a) || this.isEndpointOrVip(a));
  }

  /** Classifies an address not learned through DNS (a client dialing a raw IP). */
  classifyAddress(address: string): Promise<AddressVerdict> {
    return this.classifier!.classify(address);
  }

  /** Is the address a known endpoint or VIP of the project's services? */
  isEndpointOrVip(address: string): boolean {
    const a = canonical(address);
    if (this.endpointMap.has(a)) return true;
    for (const eps of this.endpointMap.values()) if (eps.includes(a)) return true;
    return false;
  }

  status(): DnsStatus {
    return { domain: this.domain, upstreams: this.upstreams, port: this.proxy.port, counters: this.proxy.counters() };
  }

  async stop(): Promise<void> {
    let err: unknown = null;
    await this.intercept.remove().catch((e) => (err = e));
    await this.proxy.stop();
    if (err) throw err;
  }
}
