/**
 * The per-pod process (`tenc pod`). Start is a list of init steps, each with its
 * uninit; a failing step undoes the earlier ones in reverse order. Stop (SIGINT or
 * SIGTERM) undoes them all in reverse order:
 *
 *   0. no other pod answers on our control socket path    -
 *   1. private key (memory only), public key on stdout   uninit: zero the key
 *   2. psk file                                           uninit: zero the psk
 *   3. MTU from the egress interface                      -
 *   4. residue of a crashed earlier run: its dead TUN's   uninit: routing teardown; the rule and
 *      routes/addresses removed, its rule and guards              guards stay after a failed start, and
 *      adopted; rule + unreachable guards for the                 after a stop with failClosedOnStop
 *      config's destinations (fail closed, no tenc0 yet)
 *   4b. enforcement: nftables table (output chain always,  uninit: table deleted only when the
 *      input chain when enforce) replacing an earlier             guards are removed too; else it stays
 *      run's in one transaction                                   with them (fail closed)
 *   4c. policy rules: residue (ip rules at pref P-1)      uninit: the exempt rules deleted only when
 *      deleted; TencPolicy exemptions come later by               the guards are removed too
 *      control op set-policy (policy-rules.ts)
 *   5. engine: TUN, UDP socket, data plane, device        uninit: close (plane, then TUN)
 *   6. routing: MTU/up, tenc0 routes, rules               (uninit in 4)
 *   7. DNS proxy (when dns.enabled): sockets, nftables    uninit: interception out, proxy stop,
 *      redirect of port 53 to it                                   learned routes removed
 *   8. control socket                                     uninit: close, unlink
 *   9. V8 lean mode ends once the event loop is busy      uninit: stop watching
 *      (when src/cli/main.ts entered it: control/lean.ts)
 */
import { writeSync } from 'node:fs';
import { codeCacheState, leanState, settleIdleMemory, watchLoad } from './lean.js';
import { createLogger, keyFingerprint, type Logger } from '../log.js';
import { readPskFile, type PeerConfig, type PodConfig, type ServiceConfig } from './config.js';
import { formatEndpoint, projectDestinationOf } from '../net/address.js';
import { openEngine as openRealEngine, type EngineOpener, type PodEngine } from './engine.js';
import { ControlServer, defaultSocketPath, socketIsLive, type ControlHandler, type PeerChange, type RekeyResult } from './socket.js';
import type { DnsStatusReport, StatusReport } from './status.js';
import { IpCommand } from '../routing/ip.js';
import { computeMtu } from '../routing/mtu.js';
import { readRoutingSnapshot } from '../routing/snapshot.js';
import { PolicyRouting } from '../routing/policy.js';
import { Enforcement, DROP_REASON, EGRESS_DROP_REASON, tableName as enforcementTable } from '../routing/enforce.js';
import { failClosedState } from './failclosed.js';
import { generatePrivateKey, publicKeyFromPrivate, formatKey } from '../noise/keys.js';
import type { DnsService, ServiceEndpoints } from '../dns/service.js';
import type { CidrSet } from '../dns/classify.js';
import type { RouteMisses } from '../dns/misses.js';
import { interceptTable, removeDnsResidue } from '../dns/intercept.js';
import { PolicyRules, exemptOf } from '../routing/policy-rules.js';
import { formatPort, type PodPolicy } from '../policy/policy.js';
import { publicKeyLine } from './keyline.js';
import type { NetnsScope } from '../io/netns.js';

export interface RunPodOptions {
  /** Where the `public-key <base64>` line goes; default stdout. */
  stdout?: (text: string) => void;
  log?: Logger;
  openEngine?: EngineOpener;
  ip?: IpCommand;
  /** Resolves when the pod should stop; default: the first SIGINT or SIGTERM. */
  stopSignal?: Promise<unknown>;
  /**
   * The pod's namespace when this process is a pod host (control/host.ts), not in it:
   * its ip and nft run there, its TUN and sockets are made there (io/netns.ts), and its
   * default control socket is named after that namespace's inode.
   */
  netns?: NetnsScope;
  /** Where a start failure's one line goes; default stderr. */
  stderr?: (text: string) => void;
  /** Called once the pod serves (tests). */
  onReady?: (pod: Pod) => void;
  /** Where the pod's code was loaded from (cli/pod-bundle.ts), logged in 'pod running'. */
  entry?: 'bundle' | 'dist';
  /** Started as a standby and handed this pod (cli/standby.ts), logged in 'pod running'. */
  standby?: boolean;
}

/** The DNS proxy's modules (dns/service.js, classify.js, misses.js and dns-packet behind them). */
interface DnsModules {
  service: typeof import('../dns/service.js');
  classify: typeof import('../dns/classify.js');
  misses: typeof import('../dns/misses.js');
}
let dnsModules: DnsModules | null = null;

/**
 * Loads the DNS proxy's modules on first use: a pod without dns.enabled never loads
 * them (about 0.5 MiB of V8 heap and 60 ms of start; README "density").
 * TENC_LAZY_DNS=0 loads them at start all the same (A/B runs).
 */
export async function loadDns(): Promise<DnsModules> {
  dnsModules ??= {
    service: await import('../dns/service.js'),
    classify: await import('../dns/classify.js'),
    misses: await import('../dns/misses.js'),
  };
  return dnsModules;
}

/** The loaded DNS modules; only DNS code paths call this, after loadDns(). */
function dnsLoaded(): DnsModules {
  if (!dnsModules) throw new Error('the DNS modules are not loaded (dns.enabled is off)');
  return dnsModules;
}

/** The owner of a peer's route references (Pod.held). */
const peerOwner = (publicKey: string): string => `peer ${publicKey}`;
/** The owner of the service VIPs' route references (Pod.held). */
const SERVICES = 'services';
/** A service VIP's route: the host prefix of its address. */
const vipCidr = (s: ServiceConfig): string => `${s.vip}/${s.vip.includes(':') ? 128 : 32}`;

/** The running pod: the control handler over the engine and the routing. */
export class Pod implements ControlHandler {
  readonly peers = new Map<string, PeerConfig>();
  /** The nftables table: egress to project destinations outside tenc0 always, plaintext input from them with "enforce"; null until installed. */
  enforcement: Enforcement | null = null;
  services: ServiceConfig[] = [];
  dns: DnsService | null = null;
  /** First-use classification of dns.classifyCidrs, when configured. */
  misses: RouteMisses | null = null;
  /** Unix time (ms) this pod was created (status startTime). */
  readonly startTime = Date.now();
  /** The control socket's stop op (set by runPod). */
  stop?: () => void;
  /** The kernel side of TencPolicy exemptions; null until installed. */
  policyRules: PolicyRules | null = null;
  /** The project's policies as they concern this pod (control op set-policy); null: none received. */
  policies: PodPolicy[] | null = null;

  /**
   * The route references this pod holds in the routing, per owner (a peer's key, the
   * services): exactly those routing took for it (PolicyRouting addRoutes onRef,
   * removeRoute onRelease), also from a change that failed part way. A change diffs
   * against these, not against the peer or service list it recorded, so the agent's
   * retry of a failed change adds what is missing and takes no reference twice.
   */
  private readonly held = new Map<string, Set<string>>();
  /** Per owner, its changes one after the other: a diff against held is read and applied before the next. */
  private readonly ownerChains = new Map<string, Promise<unknown>>();

  constructor(
    readonly config: PodConfig,
    readonly publicKey: string,
    readonly mtu: number,
    private readonly engine: PodEngine,
    private readonly routing: PolicyRouting,
    private readonly log: Logger,
  ) {
    this.members = [...config.members];
  }

  /** The destinations routed into the tunnel: every peer's allowed IPs and the services' VIPs. */
  destinations(): string[] {
    const out: string[] = [];
    for (const p of this.peers.values()) out.push(...p.allowedIps);
    for (const s of this.services) out.push(vipCidr(s));
    return out;
  }

  /**
   * Start: the routing's install with the routes of the peers and services recorded so
   * far (the engine has them) and `extra` (dns.classifyCidrs, held by no owner); from
   * then on this pod holds the peers' and services' references.
   */
  async installRoutes(mtu: number, extra: string[]): Promise<void> {
    const claims = new Map<string, string[]>();
    for (const p of this.peers.values()) claims.set(peerOwner(p.publicKey), [...new Set(p.allowedIps)]);
    claims.set(SERVICES, [...new Set(this.services.map(vipCidr))]);
    await this.routing.install(mtu, [...[...claims.values()].flat(), ...extra]);
    for (const [owner, cidrs] of claims) if (cidrs.length > 0) this.held.set(owner, new Set(cidrs));
  }

  /** Runs fn after the owner's earlier changes have settled. */
  private serialFor<T>(owner: string, fn: () => Promise<T>): Promise<T> {
    const run = (this.ownerChains.get(owner) ?? Promise.resolve()).then(fn, fn);
    const tail = run.catch(() => undefined);
    this.ownerChains.set(owner, tail);
    void tail.then(() => {
      if (this.ownerChains.get(owner) === tail) this.ownerChains.delete(owner);
    });
    return run;
  }

  /** What the owner must add and drop to hold exactly `want`. */
  private routeDiff(owner: string, want: readonly string[]): { add: string[]; drop: string[] } {
    const held = this.held.get(owner) ?? new Set<string>();
    const wanted = new Set(want);
    return { add: [...wanted].filter((c) => !held.has(c)), drop: [...held].filter((c) => !wanted.has(c)) };
  }

  /** Routes (and their guards) in for the owner; what a failed call took is held all the same. */
  private async holdRoutes(owner: string, cidrs: string[]): Promise<void> {
    if (cidrs.length === 0) return;
    let held = this.held.get(owner);
    if (!held) this.held.set(owner, (held = new Set()));
    const h = held;
    await this.routing.addRoutes(cidrs, { onRef: (c) => void h.add(c) });
    for (const c of cidrs) h.add(c); // routing that does not tell (a test's): a call that resolved took them all
  }

  /** One of the owner's routes out (its reference dropped), told also by a call that failed after dropping it. */
  private async releaseRoute(owner: string, cidr: string): Promise<void> {
    const drop = () => {
      const held = this.held.get(owner);
      held?.delete(cidr);
      if (held?.size === 0) this.held.delete(owner);
    };
    await this.routing.removeRoute(cidr, { onRelease: drop });
    drop();
  }

  async status(): Promise<StatusReport> {
    const c = this.config;
    const enforcementDrops = this.enforcement ? await this.enforcement.dropped() : null;
    const live = this.engine.peerStatuses();
    const switches = this.engine.planeSwitches?.();
    return {
      interface: c.interface,
      publicKey: this.publicKey,
      listenPort: c.listenPort,
      fwmark: c.fwmark,
      mtu: this.mtu,
      addresses: [c.addresses.v4, c.addresses.v6].filter((a): a is string => a !== null),
      dataPlane: this.engine.description,
      peers: [...this.peers.values()].map((p) => {
        const s = live.get(p.publicKey);
        return {
          publicKey: p.publicKey,
          endpoint: s?.endpoint ?? (p.endpoint ? formatEndpoint(p.endpoint) : null),
          allowedIps: p.allowedIps,
          latestHandshake: s?.latestHandshake ?? null,
          rxBytes: s?.rxBytes ?? 0,
          txBytes: s?.txBytes ?? 0,
          persistentKeepalive: p.persistentKeepalive,
          drops: s?.drops ?? {},
        };
      }),
      services: this.services.map((s) => ({
        vip: s.vip,
        localAddress: s.localAddress,
        ports: s.ports.map((p) => `${p.protocol}/${p.port}`),
      })),
      drops: this.withEnforcementDrops(this.engine.drops(), enforcementDrops),
      handshakeFailures: this.engine.handshakeFailures(),
      ...(this.engine.planeStats ? { plane: this.engine.planeStats() } : {}),
      ...(switches ? { switches } : {}),
      ...(this.dns ? { dns: { ...this.dns.status(), ...(this.misses ? { routeMisses: this.missStatus(this.misses) } : {}) } } : {}),
      pid: process.pid,
      startTime: this.startTime,
      enforce: this.config.enforce,
      ...(this.policies !== null ? { policies: this.policyStatus(this.policies) } : {}),
    };
  }

  private policyStatus(list: PodPolicy[]): NonNullable<StatusReport['policies']> {
    return {
      default: 'encrypt',
      rules: this.policyRules?.ruleCount() ?? 0,
      entries: list.map((p) => ({ name: p.name, mode: p.mode, target: p.target, addresses: p.addresses, ports: p.ports.map(formatPort), local: p.local })),
    };
  }

  /**
   * The project's TencPolicy set as it concerns this pod (control op set-policy): the
   * exempt destinations and own ports go into the kernel (policy-rules.ts); the
   * agent has validated the whole set, so this replaces the previous one at once.
   */
  async setPolicy(policies: PodPolicy[]): Promise<void> {
    if (!this.policyRules) throw new Error('policy rules are not installed');
    const own = [this.config.addresses.v4, this.config.addresses.v6].filter((a): a is string => a !== null);
    const exempt = exemptOf(policies, own);
    await this.policyRules.apply(exempt);
    this.policies = policies;
    this.log.info({ policies: policies.length, exemptDestinations: exempt.to.length, exemptLocalPorts: exempt.local.length }, 'policies set');
  }

  private missStatus(m: RouteMisses): NonNullable<DnsStatusReport['routeMisses']> {
    return { ranges: this.config.dns.classifyCidrs, bypasses: m.list().length, ...m.counters };
  }

  /**
   * Engine first, then routes in: no packet is routed to tenc0 for a peer the engine
   * does not know. A change whose route step failed is recorded (the engine has it)
   * and answered with the error; its retry adds what the peer does not hold yet.
   */
  setPeer(change: PeerChange): Promise<void> {
    return this.serialFor(peerOwner(change.publicKey), () => this.setPeerNow(change));
  }

  private async setPeerNow(change: PeerChange): Promise<void> {
    const old = this.peers.get(change.publicKey);
    const peer: PeerConfig = {
      publicKey: change.publicKey,
      endpoint: change.endpoint !== undefined ? change.endpoint : (old?.endpoint ?? null),
      allowedIps: change.allowedIps ?? old?.allowedIps ?? [],
      persistentKeepalive: change.persistentKeepalive ?? old?.persistentKeepalive ?? 0,
    };
    for (const [key, other] of this.peers) {
      if (key === peer.publicKey) continue;
      const clash = peer.allowedIps.find((ip) => other.allowedIps.includes(ip));
      if (clash) throw new Error(`allowedIps: ${clash} is already claimed by peer ${keyFingerprint(key)}`);
    }
    const leak = this.upstreamLeak([peer], []);
    if (leak) throw new Error(`allowedIps: ${leak}`);
    await this.engine.setPeer(peer);
    this.peers.set(peer.publicKey, peer);
    this.membershipChanged();
    const owner = peerOwner(peer.publicKey);
    const { add, drop } = this.routeDiff(owner, peer.allowedIps);
    if (drop.length === 0) {
      // only additions: the routes (guard then route, one ip -batch) and the enforcement's
      // project set (one nft -f) both close, so they go in at once; neither opens anything
      // (both settled before the answer: a retry never runs beside this one's leftovers)
      const results = await Promise.allSettled([this.holdRoutes(owner, add), this.enforcement?.setProject(this.projectSources())]);
      for (const r of results) if (r.status === 'rejected') throw r.reason;
    } else {
      await this.holdRoutes(owner, add);
      for (const c of drop) await this.releaseRoute(owner, c);
      await this.enforcement?.setProject(this.projectSources());
    }
    this.log.info({ peer: keyFingerprint(peer.publicKey), allowedIps: peer.allowedIps.length, update: old !== undefined }, 'peer set');
  }

  /** The project's addresses enforcement protects: every peer's allowed IPs, the service VIPs, the members (set-members). */
  projectSources(): string[] {
    return [...this.destinations(), ...this.members];
  }

  private withEnforcementDrops(drops: Record<string, number>, d: Awaited<ReturnType<Enforcement['dropped']>> | null): Record<string, number> {
    if (!d) return drops;
    const out = { ...drops };
    if (d[DROP_REASON] > 0) out[DROP_REASON] = d[DROP_REASON];
    if (d[EGRESS_DROP_REASON] > 0) out[EGRESS_DROP_REASON] = d[EGRESS_DROP_REASON];
    return out;
  }

  /** Routes out first (every one the peer holds), then the engine forgets the peer. */
  removePeer(publicKey: string): Promise<boolean> {
    return this.serialFor(peerOwner(publicKey), () => this.removePeerNow(publicKey));
  }

  private async removePeerNow(publicKey: string): Promise<boolean> {
    const old = this.peers.get(publicKey);
    if (!old) return false;
    const owner = peerOwner(publicKey);
    for (const c of [...(this.held.get(owner) ?? [])]) await this.releaseRoute(owner, c);
    this.held.delete(owner);
    this.peers.delete(publicKey);
    this.membershipChanged();
    await this.enforcement?.setProject(this.projectSources());
    await this.engine.removePeer(publicKey);
    this.log.info({ peer: keyFingerprint(publicKey) }, 'peer removed');
    return true;
  }

  /** A new handshake with one peer (null: every peer) now, or as soon as the protocol allows. */
  rekey(publicKey: string | null): RekeyResult[] {
    const rekey = this.engine.rekey?.bind(this.engine);
    if (!rekey) throw new Error('the data plane cannot rekey');
    const keys = publicKey === null ? [...this.peers.keys()] : this.peers.has(publicKey) ? [publicKey] : [];
    return keys.map((key) => {
      const initiation = rekey(key) ? 'sent' : 'pending';
      this.log.info({ peer: keyFingerprint(key), initiation }, 'rekey requested');
      return { publicKey: key, initiation };
    });
  }

  /**
   * Extra destinations routed into the tunnel (e.g. DNS answers while their TTL
   * lasts). Reference counted with the peers' and services' routes: removing one
   * never removes a route another source still needs.
   */
  /** A DNS answer's routes in; onRef: each route whose reference was taken, also by a call that then failed. */
  async addDestinations(cidrs: string[], onRef?: (cidr: string) => void): Promise<void> {
    await this.routing.addRoutes(cidrs, { onRef });
  }

  async removeDestination(cidr: string): Promise<void> {
    await this.routing.removeRoute(cidr, { keepGuard: true }); // a cached answer's address fails closed, never plaintext
  }

  /** The DNS proxy's VIP -> ready endpoints map (control op set-endpoints). */
  setEndpoints(endpoints: ServiceEndpoints[]): void {
    if (!this.dns) throw new Error('this pod runs no DNS proxy (dns.enabled)');
    this.dns.setEndpoints(endpoints);
    this.log.info({ services: endpoints.length }, 'endpoints set');
  }

  /** The project's member addresses (config members, then control op set-members): project whatever DNS says. */
  private members: string[] = [];
  /** destinations() + members as one set, built on first use after a change. */
  private memberSet: CidrSet | null = null;

  /** Is the address a project member: a peer's allowed IPs, a service VIP, a member (DNS address classification)? */
  isMember(address: string): boolean {
    this.memberSet ??= new (dnsLoaded().classify.CidrSet)([...this.destinations(), ...this.members]);
    return this.memberSet.has(address);
  }

  /** Peers, services or members changed: the member set and cached verdicts are stale. */
  private membershipChanged(): void {
    this.memberSet = null;
    this.dns?.membershipChanged();
  }

  /**
   * The project's member addresses (control op set-members; the agent sends every
   * project pod and VIP): DNS classification, and enforcement drops plaintext from
   * and to them outside tenc0 even before their key is known.
   */
  async setMembers(cidrs: string[]): Promise<void> {
    this.members = [...cidrs];
    this.membershipChanged();
    await this.enforcement?.setProject(this.projectSources());
    this.log.info({ members: cidrs.length }, 'members set');
  }

  /** The DNS proxy's verdict on an address (control op classify-address). */
  async classifyAddress(address: string): Promise<{ verdict: string; reason: string }> {
    if (!this.dns) throw new Error('this pod runs no DNS proxy (dns.enabled)');
    return this.dns.classifyAddress(address);
  }

  /** The transmit byte counter of the peer whose allowed IPs hold `address` (DNS route grace). */
  peerActivity(address: string): number | null {
    for (const p of this.peers.values()) {
      if (p.allowedIps.length > 0 && new (dnsLoaded().classify.CidrSet)(p.allowedIps).has(address)) return this.engine.peerStatuses().get(p.publicKey)?.txBytes ?? null;
    }
    return null;
  }

  /**
   * A DNS upstream that these peers/services would make a project destination: the
   * proxy's upstream sockets carry the fwmark, so its queries would bypass the tunnel.
   * (The config refuses dns.upstreams like that; this covers resolv.conf and run time.)
   */
  upstreamLeak(peers: readonly PeerConfig[], services: readonly ServiceConfig[]): string | null {
    for (const u of this.dns?.upstreams ?? []) {
      const address = u.slice(0, u.lastIndexOf(':')); // "address:port", IPv6 unbracketed
      const why = projectDestinationOf(address, peers, services);
      if (why !== null) return `DNS upstream ${address} would be a project destination (${why.replace(/^\w+\[\d+\]\./, '')}): its queries carry the fwmark and would bypass the tunnel in plaintext`;
    }
    return null;
  }

  /** The engine first, then the new VIPs' routes in, then the old ones' out; a retry after a failure adds and drops what is still to do. */
  setServices(services: ServiceConfig[]): Promise<void> {
    return this.serialFor(SERVICES, () => this.setServicesNow(services));
  }

  private async setServicesNow(services: ServiceConfig[]): Promise<void> {
    const leak = this.upstreamLeak([], services);
    if (leak) throw new Error(`services: ${leak}`);
    this.engine.setServices(services);
    const { add, drop } = this.routeDiff(SERVICES, services.map(vipCidr));
    await this.holdRoutes(SERVICES, add);
    for (const c of drop) await this.releaseRoute(SERVICES, c);
    this.services = services;
    this.membershipChanged();
    await this.enforcement?.setProject(this.projectSources());
    this.log.info({ services: services.length }, 'services set');
  }
}

function waitForSignal(): { promise: Promise<string>; dispose: () => void } {
  let onSig: (s: NodeJS.Signals) => void = () => {};
  const promise = new Promise<string>((resolveP) => {
    onSig = (s) => resolveP(s);
  });
  process.on('SIGINT', onSig);
  process.on('SIGTERM', onSig);
  return {
    promise,
    dispose: () => {
      process.off('SIGINT', onSig);
      process.off('SIGTERM', onSig);
    },
  };
}

/**
 * Runs the pod until SIGINT/SIGTERM (or opts.stopSignal). Returns the exit code:
 * 0 after a clean stop, 1 when start failed (after undoing what was done).
 */
export async function runPod(config: PodConfig, opts: RunPodOptions = {}): Promise<number> {
  const log = opts.log ?? createLogger({ level: config.logLevel, base: { ifname: config.interface } });
  const stdout = opts.stdout ?? ((t: string) => void writeSync(1, t));
  const ip = opts.ip ?? new IpCommand({ netnsPath: opts.netns });
  const open = opts.openEngine ?? openRealEngine;
  const uninit: { what: string; run: () => void | Promise<void> }[] = [];
  // Signals that arrive during start stop the pod right after start.
  const signals = opts.stopSignal ? null : waitForSignal();
  // the control socket's stop op (what the agent sends a pod of a pod host) stops it as a signal would
  let stopOp: () => void = () => {};
  const stopped = new Promise<string>((resolve) => (stopOp = () => resolve('stop op')));
  const stop = Promise.race([opts.stopSignal ?? signals!.promise, stopped]);

  const undoAll = async (): Promise<boolean> => {
    let clean = true;
    while (uninit.length > 0) {
      const u = uninit.pop()!;
      try {
        await u.run();
      } catch (e) {
        clean = false;
        log.error({ step: u.what, err: (e as Error).message }, 'teardown step failed');
      }
    }
    return clean;
  };

  const socketPath = config.controlSocket ?? defaultSocketPath(config.interface, undefined, opts.netns?.ino);
  let step = '';
  // the start's concurrent steps (early() below): a failed start waits for them before it
  // undoes anything and returns, so none of its ip/nft runs in the namespace after that
  const pending: Promise<unknown>[] = [];
  let guarded = false; // the routing guards are (being) installed
  let started = false; // start completed: a stop removes the guards unless failClosedOnStop
  try {
    if (process.env.TENC_LAZY_DNS === '0') await loadDns(); // switch: the DNS modules at start, as before
    // Before touching anything: a live pod with this socket owns these rules and routes.
    step = 'single instance';
    if (await socketIsLive(socketPath)) throw new Error(`another tenc pod is running (control socket ${socketPath} answers)`);

    step = 'private key';
    const privateKey = generatePrivateKey();
    uninit.push({ what: 'private key', run: () => void privateKey.fill(0) });
    const publicKey = formatKey(publicKeyFromPrivate(privateKey));
    stdout(publicKeyLine(publicKey));
    log.info({ publicKey, fingerprint: keyFingerprint(publicKey) }, 'public key');

    step = 'psk';
    const psk = readPskFile(config.pskFile);
    uninit.push({ what: 'psk', run: () => void psk.fill(0) });

    // The start's read-mostly steps run at once (each an ip/nft child process): the MTU,
    // the routing residue, the policy rules' residue (ip rules at pref P-1, apart from the
    // routing's at P) and, without DNS, the DNS interception residue (its own nftables
    // table). Awaited below in the order of the steps, so a failure names its step; none
    // of them adds a route or rule, so the fail-closed order (guards -> enforcement ->
    // routes) is as before. TENC_START_CONCURRENT=0 runs them one after another (A/B).
    const concurrent = process.env.TENC_START_CONCURRENT !== '0';
    const early = <T>(run: () => Promise<T>): (() => Promise<T>) => {
      if (!concurrent) return run;
      const p = run();
      p.catch(() => {}); // handled where awaited; never an unhandled rejection meanwhile
      pending.push(p);
      return () => p;
    };
    // One read of the routing state (two `ip` processes: snapshot.ts) for the MTU, both
    // residue steps and the routing's install; TENC_START_SNAPSHOT=0 (or
    // TENC_START_CONCURRENT=0): each step dumps for itself, as before.
    const snapshotOn = concurrent && process.env.TENC_START_SNAPSHOT !== '0';
    const snapStep = snapshotOn
      ? early(() => readRoutingSnapshot(ip, { table: config.table, fwmark: config.fwmark, endpoints: config.peers.map((p) => p.endpoint) }))
      : async () => null;
    const mtuStep = early(async () =>
      computeMtu(
        ip,
        config.peers.map((p) => p.endpoint),
        config.fwmark,
        [config.addresses.v4, config.addresses.v6].filter((a): a is string => a !== null),
        await snapStep(),
      ),
    );
    const routing = new PolicyRouting({
      ifname: config.interface,
      table: config.table,
      priority: config.rulePriority,
      fwmark: config.fwmark,
      addresses: config.addresses,
      bypassRanges: config.dns.enabled ? config.dns.classifyCidrs : [],
      ip,
      log,
    });
    const residueStep = early(async () => routing.removeResidue(await snapStep()));
    // its setChains is used only once the enforcement is installed (apply, by set-policy)
    let enforcementRef: Enforcement | null = null;
    const policyRules = new PolicyRules({
      priority: config.rulePriority - 1,
      addresses: config.addresses,
      ip,
      setChains: (rules) => (enforcementRef ? enforcementRef.setPolicyChains(rules) : Promise.reject(new Error('enforcement is not installed'))),
    });
    const policyResidueStep = early(async () => policyRules.removeResidue(await snapStep()));
    // Without DNS, a crashed run's DNS interception table goes: with the snapshot, in the
    // enforcement's own transaction below (no `nft` process of its own); else a listing first.
    const dnsResidueInEnforcement = !config.dns.enabled && snapshotOn;
    const dnsResidueStep = config.dns.enabled || dnsResidueInEnforcement ? null : early(() => removeDnsResidue(config.interface, log, opts.netns));

    step = 'mtu';
    const mtuChoice = await mtuStep();
    log.info(mtuChoice, 'mtu');

    step = 'routing residue';
    await residueStep();
    // The guards first: project traffic never finds the main table while tenc starts.
    step = 'routing guards';
    uninit.push({ what: 'routing', run: () => routing.teardown({ keepGuards: !started || config.failClosedOnStop }) });
    guarded = true;
    // dns.classifyCidrs: the whole ranges go into tenc0 (and fail closed) until classified
    const closed = failClosedState(config);
    const classifyRanges = closed.classify;
    // Enforcement lives exactly as long as the guards: egress outside tenc0 to project
    // destinations dropped from now on (and plaintext input from them with "enforce").
    // It replaces the table an earlier run left, in one transaction. The guards (one
    // ip -batch per family) and the table (one nft -f) go in at once: each only closes,
    // neither removes anything the other holds, and the routes into tenc0 come only
    // after both (TENC_START_CONCURRENT=0: one after the other, as before).
    const enforcement = new Enforcement({ ifname: config.interface, listenPort: config.listenPort, fwmark: config.fwmark, input: config.enforce, netnsPath: opts.netns });
    uninit.push({
      what: 'enforcement',
      run: () => (started && !config.failClosedOnStop ? enforcement.teardown() : enforcement.abandon()),
    });
    const enforcementStep = early(() => enforcement.install({ project: closed.project, classify: classifyRanges }, dnsResidueInEnforcement ? [interceptTable(config.interface)] : []));
    try {
      await routing.guard(closed.guards);
    } catch (e) {
      await enforcementStep().catch(() => {}); // settled before the undo starts
      throw e;
    }
    step = 'enforcement';
    await enforcementStep();
    enforcementRef = enforcement;
    log.info({ enforce: config.enforce }, 'fail closed');

    // TencPolicy exemptions: an earlier run's rules go (fail safe: encrypted until the
    // agent sends the policy again); they live as long as the guards
    step = 'policy rules';
    const stale = await policyResidueStep();
    if (stale > 0) log.info({ rules: stale }, 'removed exempt policy rules of an earlier run');
    uninit.push({ what: 'policy rules', run: () => policyRules.teardown({ keepRules: !started || config.failClosedOnStop }) });

    step = 'data plane';
    const engine = await open({ config, privateKey, psk, mtu: mtuChoice.mtu, log, netns: opts.netns });
    uninit.push({ what: 'data plane', run: () => engine.close() });

    step = 'peers';
    const pod = new Pod(config, publicKey, mtuChoice.mtu, engine, routing, log);
    // after the answer is written: the stop closes the control socket
    pod.stop = () => void setTimeout(stopOp, 20);
    for (const p of config.peers) {
      await engine.setPeer(p);
      pod.peers.set(p.publicKey, p);
    }
    engine.setServices(config.services);
    pod.services = config.services;

    pod.enforcement = enforcement;
    pod.policyRules = policyRules;

    step = 'routing';
    await pod.installRoutes(mtuChoice.mtu, classifyRanges);

    if (config.dns.enabled) {
      step = 'dns proxy';
      const { service, classify, misses: missesMod } = await loadDns();
      pod.dns = await service.DnsService.start({
        config: config.dns,
        fwmark: config.fwmark,
        table: interceptTable(config.interface),
        routes: { add: (c, onRef) => pod.addDestinations(c, onRef), remove: (c) => pod.removeDestination(c) },
        activity: (a) => pod.peerActivity(a),
        isMember: (a) => pod.isMember(a),
        log,
        netns: opts.netns,
      });
      const dns = pod.dns;
      uninit.push({ what: 'dns proxy', run: () => dns.stop() });
      const leak = pod.upstreamLeak([...pod.peers.values()], pod.services);
      if (leak) throw new Error(leak);
      if (classifyRanges.length > 0) {
        step = 'route misses';
        const onRouteMiss = engine.onRouteMiss?.bind(engine);
        const release = engine.releasePacket?.bind(engine);
        if (!onRouteMiss || !release) throw new Error('dns.classifyCidrs: this data plane cannot report route misses');
        const ranges = new classify.CidrSet(classifyRanges);
        const misses = new missesMod.RouteMisses({
          inRange: (a) => ranges.has(a),
          classify: async (a) => {
            const v = await dns.classifyAddress(a);
            log.debug({ address: a, ...v }, 'route miss classified');
            return v;
          },
          // the output chain lets a bypass out before its throw route exists, and stops it after the route is gone
          addBypass: async (c) => {
            await enforcement.addBypass(c);
            const ok = await routing.addBypass(c);
            if (!ok) await enforcement.removeBypass(c);
            return ok;
          },
          removeBypass: async (c) => {
            await routing.removeBypass(c);
            await enforcement.removeBypass(c);
          },
          hasBypass: (c) => routing.hasBypass(c),
          // a tunnel route took the bypass over: its accept in the output chain goes too
          // (unless a new bypass of the address went in meanwhile)
          forgetBypass: async (c) => {
            if (!routing.hasBypass(c)) await enforcement.removeBypass(c);
          },
          release,
          now: Date.now,
          holdMs: Math.max(config.dns.maxTtl, 5) * 1000,
          onError: (what, err) => log.warn({ what, err: (err as Error).message }, 'route miss handling failed'),
        });
        const timer = setInterval(() => void misses.expire(), 1000);
        timer.unref();
        uninit.push({
          what: 'route misses',
          run: () => {
            clearInterval(timer);
            onRouteMiss(null);
            misses.stop();
          },
        });
        onRouteMiss((destination, packet) => void misses.miss(destination, packet));
        pod.misses = misses;
        dns.attachMisses(misses); // membership changes revoke bypasses of new members at once
        log.info({ ranges: classifyRanges }, 'classifying unknown addresses of these ranges on first use');
      }
    } else await dnsResidueStep?.();

    step = 'control socket';
    const server = await ControlServer.start({
      path: socketPath,
      handler: pod,
      addresses: config.addresses,
      log,
    });
    uninit.push({ what: 'control socket', run: () => server.close() });

    step = 'load watch';
    const load = watchLoad({ onBusy: (u) => log.info({ eventLoopUtilization: Math.round(u * 100) / 100 }, 'busy: V8 lean mode ends (TurboFan on)') });
    uninit.push({ what: 'load watch', run: () => load.stop() });
    const settle = settleIdleMemory({ onSettled: (r) => log.info({ ms: Math.round(r.ms * 10) / 10, trimmed: r.trimmed, rssMiB: [r.rssBefore, r.rssAfter].map((b) => Math.round(b / 104857.6) / 10) }, 'idle memory settled'), onError: (e) => log.warn({ err: String(e) }, 'idle memory not settled') });
    uninit.push({ what: 'idle memory settle', run: () => settle.stop() });

    log.info({ peers: config.peers.length, services: config.services.length, listenPort: config.listenPort, v8: leanState(), entry: opts.entry ?? 'dist', codeCache: codeCacheState(), standby: opts.standby === true }, 'pod running');
    started = true;
    opts.onReady?.(pod);
  } catch (e) {
    const message = (e as Error).message;
    const closed = guarded
      ? ` (fail closed: the ip rule pref ${config.rulePriority}, the unreachable guards in table ${config.table} and the` +
        ` nftables table ${enforcementTable(config.interface)} stay, so project destinations are unreachable until tenc starts again)`
      : '';
    log.error({ step, err: message, failClosed: guarded }, 'pod start failed');
    (opts.stderr ?? ((t: string) => void process.stderr.write(t)))(`tenc pod: ${step}: ${message}${closed}\n`);
    await Promise.allSettled(pending); // the steps still running (a residue removal, a dump) end first
    await undoAll();
    signals?.dispose();
    return 1;
  }

  const why = await stop;
  log.info({ signal: why }, 'stopping');
  const clean = await undoAll();
  signals?.dispose();
  log.info({ clean }, 'stopped');
  return clean ? 0 : 1;
}
