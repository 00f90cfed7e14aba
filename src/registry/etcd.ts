/**
 * The etcd registry (`--registry etcd:ENDPOINTS[?OPTIONS]`): the same objects as the
 * directory backend (dir.ts), one JSON value per key, below a prefix (default /tenc/):
 *
 *   /tenc/projects/<project>                       Namespace (a protected project)
 *   /tenc/secrets/<project>/psk                    Secret: data.psk is the base64 of the
 *                                                  project's psk file (`wg genpsk` form)
 *   /tenc/pods/<project>/<pod>                     Pod (spec.nodeName, status.podIP(s),
 *                                                  labels)
 *   /tenc/services/<project>/<service>             Service
 *   /tenc/endpointslices/<project>/<service>       EndpointSlice of the service
 *   /tenc/policies/<project>/<name>                TencPolicy (src/policy/policy.ts validates the
 *                                                  project's set, all or nothing)
 *   /tenc/nodes/<node>/peers/<project>/<pod>       what the agent of <node> published for
 *                                                  its pod: {pod, publicKey, endpoint},
 *                                                  under that agent's lease
 *
 * The publisher of a peer is the <node> of its key, never a field: with etcd auth on,
 * each node's agent has a role that may write below /tenc/nodes/<node>/ only, so one
 * node cannot publish for another's pods (trustedPeers() then drops keys for pods of
 * other nodes).
 *
 * Reading: one consistent snapshot of the whole prefix (a range read at one
 * revision), then one watch from that revision + 1 that keeps an in-memory copy
 * current; every read is served from that copy, parsed once per change. A watch that
 * ends in an error (etcd3 says only "Watcher canceled" when a compaction removed the
 * revision it needed) is dropped and the snapshot is read again, with backoff; a lost
 * connection is retried over the other endpoints in order (inOrder(): own member first),
 * and the watch resumes from its last revision. While etcd is unreachable the copy
 * stays as it was: the agent keeps its pods running with what they have, and learns
 * nothing new (new destinations stay fail-closed).
 *
 * Publishing: peers are written under a lease of this agent (TTL a few seconds, kept
 * alive), so the keys of a dead agent vanish by themselves. A lease that is lost
 * (expired while etcd was unreachable) is replaced and everything this agent
 * published is written again under the new one.
 *
 * The psk: kept in etcd like a Kubernetes Secret (readable only by roles that may
 * read the prefix); pskFile() writes it to a mode-0600 file in a 0700 directory of
 * the agent (never logged), because the pod proxies read their psk from a file.
 *
 * EtcdRegistryWriter is the API server's side for netns-scripts/cluster.sh (through
 * cluster-tool.ts): projects, psk secrets, pods, services and endpoint slices.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { Etcd3, EtcdLeaseInvalidError, type IOptions, type Lease, type Watcher } from 'etcd3';
import { endpointsFromObject, isName, peerFromObject, podFromObject, policyFromObject, serviceFromObject } from './objects.js';
import type { EndpointsInfo, PeerInfo, PodInfo, PolicyObject, Registry, ServiceInfo, Watch } from './registry.js';

export const DEFAULT_PREFIX = '/tenc/';
/** Seconds: the keys of a dead agent vanish this long after its last keep-alive. */
export const LEASE_TTL_S = 5;
/** Backoff of the snapshot re-read after a watch error, and of lease re-grants. */
const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 1000;
/**
 * A unary call that takes longer fails, so the next endpoint is tried: a member that
 * lost quorum holds a write until it fails, and a partitioned one never answers. The
 * snapshot (a range of the whole prefix) gets longer.
 */
export const CALL_TIMEOUT_MS = 1500;
const SNAPSHOT_TIMEOUT_MS = 5000;
/** How often a watch away from the first endpoint checks whether it can go back. */
const HOME_CHECK_MS = 2000;

export class EtcdSpecError extends Error {
  override name = 'EtcdSpecError';
}

export interface EtcdConnection {
  /** Client URLs: http://host:port or https://host:port. */
  endpoints: string[];
  /** Key prefix, starting and ending with "/". */
  prefix: string;
  /** TLS files (PEM): the CA that signed the members' certificates, this client's certificate and key. */
  ca?: string;
  cert?: string;
  key?: string;
  /** etcd auth user and the file holding its password (or the client certificate's CN, with client-cert-auth). */
  user?: string;
  passwordFile?: string;
  /** Lease TTL of published peers, seconds. */
  ttl: number;
}

const SPEC_OPTIONS = ['ca', 'cert', 'key', 'prefix', 'user', 'password-file', 'ttl'];

/**
 * Parses the part after `etcd:`: ENDPOINTS[?ca=FILE&cert=FILE&key=FILE&prefix=/tenc/&user=NAME&password-file=FILE&ttl=S]
 * with ENDPOINTS comma-separated URLs. Errors name the part that is wrong.
 */
export function parseEtcdSpec(rest: string): EtcdConnection {
  const q = rest.indexOf('?');
  const hosts = (q < 0 ? rest : rest.slice(0, q)).split(',').filter((h) => h !== '');
  const params = new URLSearchParams(q < 0 ? '' : rest.slice(q + 1));
  if (hosts.length === 0) throw new EtcdSpecError('etcd: needs at least one endpoint (etcd:https://HOST:2379,...)');
  for (const k of params.keys()) if (!SPEC_OPTIONS.includes(k)) throw new EtcdSpecError(`etcd: unknown option "${k}" (known: ${SPEC_OPTIONS.join(', ')})`);
  const endpoints = hosts.map((h) => {
    let u: URL;
    try {
      u = new URL(h);
    } catch {
      throw new EtcdSpecError(`etcd: endpoint "${h}" is not a URL (http://HOST:PORT or https://HOST:PORT)`);
    }
    if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.port === '' || (u.pathname !== '/' && u.pathname !== '') || u.search || u.username) {
      throw new EtcdSpecError(`etcd: endpoint "${h}" must be http(s)://HOST:PORT`);
    }
    return `${u.protocol}//${u.host}`;
  });
  const tls = endpoints.filter((e) => e.startsWith('https:')).length;
  if (tls !== 0 && tls !== endpoints.length) throw new EtcdSpecError('etcd: endpoints mix http and https');
  const c: EtcdConnection = { endpoints, prefix: params.get('prefix') ?? DEFAULT_PREFIX, ttl: LEASE_TTL_S };
  if (!/^\/([-a-zA-Z0-9_.]+\/)*$/.test(c.prefix)) throw new EtcdSpecError(`etcd: prefix "${c.prefix}" must start and end with "/" (e.g. /tenc/)`);
  for (const [opt, field] of [['ca', 'ca'], ['cert', 'cert'], ['key', 'key'], ['user', 'user'], ['password-file', 'passwordFile']] as const) {
    const v = params.get(opt);
    if (v === null) continue;
    if (v === '') throw new EtcdSpecError(`etcd: option ${opt} is empty`);
    c[field] = v;
  }
  if ((c.cert === undefined) !== (c.key === undefined)) throw new EtcdSpecError('etcd: cert and key go together');
  if ((c.ca || c.cert) && tls === 0) throw new EtcdSpecError('etcd: TLS files given but the endpoints are http://');
  if ((c.user === undefined) !== (c.passwordFile === undefined)) throw new EtcdSpecError('etcd: user and password-file go together');
  if (c.user && tls === 0 && !endpoints.every((e) => /^http:\/\/(127\.|\[::1\]|localhost)/.test(e))) {
    throw new EtcdSpecError('etcd: a password is not sent over http:// to another host (use https:// endpoints with ca=)');
  }
  const ttl = params.get('ttl');
  if (ttl !== null) {
    if (!/^[0-9]+$/.test(ttl) || Number(ttl) < 2 || Number(ttl) > 600) throw new EtcdSpecError(`etcd: ttl "${ttl}" must be 2..600 seconds`);
    c.ttl = Number(ttl);
  }
  return c;
}

function readFile(what: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new EtcdSpecError(`etcd: cannot read the ${what} file ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** An etcd3 client for the connection: TLS and auth as given, unary calls time out. */
export function etcdClient(c: EtcdConnection): Etcd3 {
  const o: IOptions = {
    hosts: c.endpoints,
    dialTimeout: CALL_TIMEOUT_MS,
    // a member that vanished without a reset (host down, partition) is noticed by
    // HTTP/2 pings, so the watch moves to another endpoint (etcd allows one per 5 s)
    grpcOptions: { 'grpc.keepalive_time_ms': 10_000, 'grpc.keepalive_timeout_ms': 5000, 'grpc.keepalive_permit_without_calls': 1 },
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + CALL_TIMEOUT_MS }),
  };
  if (c.ca || c.cert) {
    o.credentials = {
      rootCertificate: c.ca ? readFile('ca', c.ca) : (undefined as unknown as Buffer),
      ...(c.cert ? { certChain: readFile('cert', c.cert), privateKey: readFile('key', c.key!) } : {}),
    };
  }
  if (c.user) o.auth = { username: c.user, password: readFile('password', c.passwordFile!).toString('utf8').trim() };
  const client = new Etcd3(o);
  orders.set(client, inOrder(client));
  return client;
}

/** An endpoint whose call or stream failed is tried after the others for this long. */
const FAILED_ENDPOINT_MS = 5000;

/**
 * etcd3 spreads calls and streams over the endpoints at random. A node's agent should
 * use its own member (the spec lists it first) and go to the others only when it
 * fails: with a random one, a partition of a third node leaves the agents of the two
 * healthy nodes with their watch or lease stream on the cut-off member, where it
 * stalls silently until HTTP/2 pings notice (15 s), their leases expire meanwhile and
 * the pods of healthy nodes lose their peers. So every call and stream starts at the
 * first endpoint that has not failed in the last FAILED_ENDPOINT_MS (a refused
 * connection, a deadline, a stream error), then the next ones; the failed ones come
 * last. (etcd3's own circuit breaker does not count the errors of streams, so a watch
 * would go back to a dead first member for ever.)
 */
type Host = { resetAllServices: () => void };

/** Where a client's calls go: the first endpoint, and the one used now. */
export interface EndpointOrder {
  /** The spec's first endpoint (the node's own member). */
  readonly primary: Host;
  /** The endpoint the next call or stream goes to. */
  current(): Host;
  /** Did the endpoint fail in the last FAILED_ENDPOINT_MS? */
  failed(h: Host): boolean;
  /** Marks an endpoint failed (a call to it timed out). */
  fail(h: Host): void;
}

const orders = new WeakMap<Etcd3, EndpointOrder>();

function inOrder(client: Etcd3): EndpointOrder {
  const pool = (client as unknown as { pool: { hosts: Host[]; shuffledHosts: () => Generator<Host>; markFailed: (h: Host, e: Error) => void } }).pool;
  if (!Array.isArray(pool?.hosts) || typeof pool.shuffledHosts !== 'function' || typeof pool.markFailed !== 'function') {
    throw new Error('etcd3: connection pool not as expected (etcd3 upgraded?): cannot order the endpoints');
  }
  const failedAt = new Map<Host, number>();
  const markFailed = pool.markFailed.bind(pool);
  pool.markFailed = (h, e) => {
    failedAt.set(h, Date.now());
    markFailed(h, e);
  };
  for (const h of pool.hosts) {
    // called by etcd3 when a unary call on the host failed in a way worth another host
    const reset = h.resetAllServices.bind(h);
    h.resetAllServices = () => {
      failedAt.set(h, Date.now());
      reset();
    };
  }
  const failed = (h: Host) => Date.now() - (failedAt.get(h) ?? -Infinity) < FAILED_ENDPOINT_MS;
  const order = () => [...pool.hosts.filter((h) => !failed(h)), ...pool.hosts.filter(failed)];
  pool.shuffledHosts = function* () {
    for (;;) yield* order();
  };
  return {
    primary: pool.hosts[0],
    current: () => order()[0],
    failed,
    fail: (h) => failedAt.set(h, Date.now()),
  };
}

type Obj = Record<string, any>;

/** Where a key (relative to the prefix) puts its object. */
type Place =
  | { kind: 'projects'; project: string }
  | { kind: 'secrets'; project: string }
  | { kind: 'pods' | 'services' | 'endpointslices' | 'policies'; project: string; name: string }
  | { kind: 'peers'; project: string; node: string; name: string };

/** The place of a relative key, or null (not one of ours, or a bad name: reported). */
export function placeOf(rel: string): Place | null | 'bad' {
  const s = rel.split('/');
  const names = (...xs: string[]) => xs.every(isName);
  switch (s[0]) {
    case 'projects':
      return s.length === 2 ? (names(s[1]) ? { kind: 'projects', project: s[1] } : 'bad') : null;
    case 'secrets':
      return s.length === 3 && s[2] === 'psk' ? (names(s[1]) ? { kind: 'secrets', project: s[1] } : 'bad') : null;
    case 'pods':
    case 'services':
    case 'endpointslices':
    case 'policies':
      return s.length === 3 ? (names(s[1], s[2]) ? { kind: s[0], project: s[1], name: s[2] } : 'bad') : null;
    case 'nodes':
      return s.length === 5 && s[2] === 'peers' ? (names(s[1], s[3], s[4]) ? { kind: 'peers', node: s[1], project: s[3], name: s[4] } : 'bad') : null;
    default:
      return null;
  }
}

/** The project's objects as read from etcd, parsed. */
interface ProjectCopy {
  namespace: boolean;
  psk: string | null;
  pods: Map<string, PodInfo>;
  services: Map<string, ServiceInfo>;
  endpoints: Map<string, EndpointsInfo>;
  /** node/pod -> peer */
  peers: Map<string, PeerInfo>;
  /** name -> TencPolicy as stored */
  policies: Map<string, PolicyObject>;
}

export interface EtcdRegistryOptions {
  /** A key whose value was skipped (not JSON, wrong shape, bad name): the key and why. */
  onProblem?: (key: string, why: string) => void;
  /** Connection events (snapshot read, watch error, lease lost), for the agent's log. */
  onEvent?: (what: string, detail: Record<string, unknown>) => void;
  /** Directory (created 0700) for the psk files pskFile() writes (mode 0600). */
  secretDir?: string;
}

/** Counters for tests and benchmarks. */
export interface EtcdRegistryStats {
  snapshots: number;
  events: number;
  watchErrors: number;
  leasesLost: number;
  revision: number;
}

const PSK = /^[A-Za-z0-9+/]{43}=$/;

export class EtcdRegistry implements Registry {
  readonly client: Etcd3;
  readonly prefix: string;
  private readonly ttl: number;
  private readonly onProblem: (key: string, why: string) => void;
  private readonly onEvent: (what: string, detail: Record<string, unknown>) => void;
  private readonly secretDir: string | null;
  private copy = new Map<string, ProjectCopy>();
  /** The first snapshot (reads wait for it); replaced while it has not succeeded. */
  private first: Promise<void> | null = null;
  private watcher: Watcher | null = null;
  private generation = 0;
  private closed = false;
  private readonly listeners = new Map<string, Set<() => void>>();
  private dirty = new Set<string>();
  private flushing = false;
  private lease: Promise<Lease> | null = null;
  private readonly order: EndpointOrder;
  /** The endpoint the watch stream was opened on (see homeCheck). */
  private watchOn: Host | null = null;
  private homeTimer: NodeJS.Timeout | null = null;
  private homeProbing = false;
  private republishing = false;
  /** What this agent published (full key -> value), written again under a new lease. */
  private readonly owned = new Map<string, string>();
  readonly stats: EtcdRegistryStats = { snapshots: 0, events: 0, watchErrors: 0, leasesLost: 0, revision: 0 };

  constructor(
    readonly connection: EtcdConnection,
    opts: EtcdRegistryOptions = {},
  ) {
    this.client = etcdClient(connection);
    this.order = orders.get(this.client)!;
    this.prefix = connection.prefix;
    this.ttl = connection.ttl;
    this.onProblem = opts.onProblem ?? (() => {});
    this.onEvent = opts.onEvent ?? (() => {});
    this.secretDir = opts.secretDir ?? null;
  }

  // --- the copy: snapshot, then watch -------------------------------------------

  /** Resolves once the copy holds a snapshot (the first read waits; later ones do not). */
  private ready(): Promise<void> {
    if (this.closed) return Promise.reject(new Error('registry closed'));
    if (!this.first) {
      this.first = this.snapshot().catch((e) => {
        this.first = null;
        throw new Error(`registry: etcd ${this.connection.endpoints.join(',')} unreachable: ${(e as Error).message}`);
      });
    }
    return this.first;
  }

  /** Reads the whole prefix at one revision, replaces the copy, watches from revision + 1. */
  private async snapshot(): Promise<void> {
    const gen = ++this.generation;
    const res = await this.client.getAll().prefix(this.prefix).options({ deadline: Date.now() + SNAPSHOT_TIMEOUT_MS }).exec();
    if (this.closed || gen !== this.generation) return;
    const rev = Number(res.header.revision);
    const before = new Set(this.copy.keys());
    this.copy = new Map();
    for (const kv of res.kvs) this.put(kv.key.toString('utf8'), kv.value.toString('utf8'));
    this.stats.snapshots++;
    this.stats.revision = rev;
    this.onEvent('snapshot', { revision: rev, keys: res.kvs.length });
    for (const p of new Set([...before, ...this.copy.keys()])) this.touch(p);
    this.startWatch(rev + 1, gen);
  }

  private startWatch(from: number, gen: number): void {
    this.watcher?.cancel().catch(() => {});
    this.watchOn = this.order.current();
    const w = this.client.watch().prefix(this.prefix).startRevision(String(from)).watcher();
    this.watcher = w;
    // (re)connected: on the endpoint calls go to now (the order is deterministic)
    w.on('connecting', () => {
      if (gen === this.generation && this.watcher === w) this.watchOn = this.order.current();
    });
    if (!this.homeTimer) {
      this.homeTimer = setInterval(() => this.homeCheck(), HOME_CHECK_MS);
      this.homeTimer.unref();
    }
    w.on('put', (kv) => {
      if (gen !== this.generation) return;
      this.stats.events++;
      this.put(kv.key.toString('utf8'), kv.value.toString('utf8'));
    });
    w.on('delete', (kv) => {
      if (gen !== this.generation) return;
      this.stats.events++;
      this.remove(kv.key.toString('utf8'));
    });
    w.on('data', (res) => {
      if (gen === this.generation && res.header) this.stats.revision = Math.max(this.stats.revision, Number(res.header.revision));
    });
    // compaction ("Watcher canceled"), auth, anything: read everything again
    w.on('error', (e) => {
      if (gen !== this.generation || this.closed) return;
      this.stats.watchErrors++;
      this.onEvent('watch error: reading the snapshot again', { err: (e as Error).message });
      this.resync(gen);
    });
  }

  /**
   * A watch that moved to another endpoint when the first one failed stays there after
   * the first is back, and would stall with that endpoint if it is cut off later. So
   * when the first endpoint answers again, the watch moves back to it, resuming from
   * the last revision seen (nothing is read twice or missed).
   */
  private homeCheck(): void {
    const w = this.watcher;
    const gen = this.generation;
    if (this.closed || !w || this.homeProbing || this.watchOn === this.order.primary || this.order.failed(this.order.primary)) return;
    this.homeProbing = true;
    this.client.maintenance
      .status({ deadline: Date.now() + CALL_TIMEOUT_MS })
      .then(
        async () => {
          // answered by the first endpoint (had it failed, the probe would have marked it)
          if (this.closed || gen !== this.generation || this.watcher !== w || this.order.failed(this.order.primary)) return;
          this.onEvent('watch back on the first endpoint', { fromRevision: this.stats.revision + 1 });
          this.watcher = null;
          await w.cancel().catch(() => {});
          if (!this.closed && gen === this.generation && this.watcher === null) this.startWatch(this.stats.revision + 1, gen);
        },
        () => {},
      )
      .finally(() => (this.homeProbing = false));
  }

  private resync(gen: number, delay = RETRY_MIN_MS): void {
    if (this.watcher) {
      this.watcher.cancel().catch(() => {});
      this.watcher = null;
    }
    setTimeout(() => {
      if (this.closed || gen !== this.generation) return;
      this.snapshot().catch((e) => {
        this.onEvent('snapshot failed: retrying', { err: (e as Error).message, inMs: Math.min(delay * 2, RETRY_MAX_MS) });
        this.resync(this.generation, Math.min(delay * 2, RETRY_MAX_MS));
      });
    }, delay).unref();
  }

  private project(name: string): ProjectCopy {
    let p = this.copy.get(name);
    if (!p) {
      p = { namespace: false, psk: null, pods: new Map(), services: new Map(), endpoints: new Map(), peers: new Map(), policies: new Map() };
      this.copy.set(name, p);
    }
    return p;
  }

  private put(key: string, value: string): void {
    const rel = key.slice(this.prefix.length);
    const at = placeOf(rel);
    if (at === null) return;
    if (at === 'bad') {
      this.onProblem(key, 'a name in the key is not a valid name (lowercase letters, digits, "-"): ignored');
      return;
    }
    // the value replaces what was there: a bad one removes the object
    this.removePlace(at);
    let o: Obj;
    try {
      o = JSON.parse(value);
    } catch (e) {
      this.onProblem(key, `not JSON: ${(e as Error).message}`);
      // a policy that cannot be read refuses the project's whole set (never half of it)
      if (at.kind === 'policies') this.project(at.project).policies.set(at.name, { project: at.project, name: at.name, object: null, problem: `${key}: not JSON` });
      this.touch(at.project);
      return;
    }
    const p = this.project(at.project);
    let ok = true;
    switch (at.kind) {
      case 'projects':
        p.namespace = true;
        break;
      case 'secrets': {
        const b64 = o?.data?.psk;
        const psk = typeof b64 === 'string' ? Buffer.from(b64, 'base64').toString('utf8').trim() : '';
        // never say what the value was
        if (PSK.test(psk)) p.psk = psk;
        else ok = false;
        break;
      }
      case 'pods': {
        const v = podFromObject(at.project, o);
        if (v && v.name === at.name) p.pods.set(at.name, v);
        else ok = false;
        break;
      }
      case 'services': {
        const v = serviceFromObject(at.project, o);
        if (v && v.name === at.name) p.services.set(at.name, v);
        else ok = false;
        break;
      }
      case 'endpointslices': {
        const v = endpointsFromObject(at.project, o);
        if (v) p.endpoints.set(at.name, v);
        else ok = false;
        break;
      }
      case 'peers': {
        const v = peerFromObject(at.project, at.node, at.name, o);
        if (v) p.peers.set(`${at.node}/${at.name}`, v);
        else ok = false;
        break;
      }
      case 'policies':
        p.policies.set(at.name, policyFromObject(at.project, at.name, o));
        break;
    }
    if (!ok) this.onProblem(key, `not a valid ${at.kind === 'secrets' ? 'psk Secret (data.psk: base64 of a wg genpsk key)' : at.kind.replace(/s$/, '')} object (or its name differs from its key): ignored`);
    this.touch(at.project);
  }

  private remove(key: string): void {
    const at = placeOf(key.slice(this.prefix.length));
    if (at === null || at === 'bad') return;
    this.removePlace(at);
    this.touch(at.project);
  }

  private removePlace(at: Place): void {
    const p = this.copy.get(at.project);
    if (!p) return;
    switch (at.kind) {
      case 'projects':
        p.namespace = false;
        break;
      case 'secrets':
        p.psk = null;
        break;
      case 'pods':
        p.pods.delete(at.name);
        break;
      case 'services':
        p.services.delete(at.name);
        break;
      case 'endpointslices':
        p.endpoints.delete(at.name);
        break;
      case 'peers':
        p.peers.delete(`${at.node}/${at.name}`);
        break;
      case 'policies':
        p.policies.delete(at.name);
        break;
    }
  }

  /** Marks a project changed; its watchers are called once per batch of events. */
  private touch(project: string): void {
    this.dirty.add(project);
    if (this.flushing) return;
    this.flushing = true;
    setImmediate(() => {
      this.flushing = false;
      const dirty = this.dirty;
      this.dirty = new Set();
      for (const p of dirty) for (const fn of this.listeners.get(p) ?? []) fn();
    });
  }

  // --- Registry ----------------------------------------------------------------

  async projects(): Promise<string[]> {
    await this.ready();
    return [...this.copy.entries()]
      .filter(([, p]) => p.namespace)
      .map(([n]) => n)
      .sort();
  }

  private async of(project: string): Promise<ProjectCopy | undefined> {
    if (!isName(project)) throw new RangeError(`project: ${JSON.stringify(project)} is not a name (lowercase letters, digits, "-")`);
    await this.ready();
    return this.copy.get(project);
  }

  async pods(project: string): Promise<PodInfo[]> {
    return [...((await this.of(project))?.pods.values() ?? [])].map((p) => ({ ...p, addresses: [...p.addresses], labels: { ...p.labels } }));
  }

  async services(project: string): Promise<ServiceInfo[]> {
    return [...((await this.of(project))?.services.values() ?? [])].map((s) => ({ ...s, ports: s.ports.map((x) => ({ ...x })), selector: { ...s.selector } }));
  }

  async endpoints(project: string): Promise<EndpointsInfo[]> {
    return [...((await this.of(project))?.endpoints.values() ?? [])].map((e) => ({ ...e, pods: e.pods.map((x) => ({ ...x })) }));
  }

  async peers(project: string): Promise<PeerInfo[]> {
    return [...((await this.of(project))?.peers.values() ?? [])].map((k) => ({ ...k }));
  }

  async policies(project: string): Promise<PolicyObject[]> {
    const all = [...((await this.of(project))?.policies.values() ?? [])];
    return all.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)).map((x) => ({ ...x, object: structuredClone(x.object) }));
  }

  /** Writes the project's psk (from its Secret) to SECRETDIR/<project>.psk, mode 0600, and returns that path. */
  async pskFile(project: string): Promise<string> {
    const p = await this.of(project);
    const key = `${this.prefix}secrets/${project}/psk`;
    if (!p?.psk) throw new Error(`registry: project ${project}: no valid psk Secret at ${key}`);
    if (!this.secretDir) throw new Error('registry: etcd backend opened without a secret directory: cannot hand out the psk');
    mkdirSync(this.secretDir, { recursive: true, mode: 0o700 });
    chmodSync(this.secretDir, 0o700);
    const file = join(this.secretDir, `${project}.psk`);
    let same = false;
    try {
      same = readFileSync(file, 'utf8') === p.psk + '\n';
    } catch {
      // not written yet
    }
    if (!same) {
      const tmp = `${file}.tmp-${process.pid}`;
      writeFileSync(tmp, p.psk + '\n', { mode: 0o600 });
      renameSync(tmp, file);
    }
    return file;
  }

  private peerKey(project: string, node: string, pod: string): string {
    for (const [w, v] of [['project', project], ['node', node], ['pod', pod]]) {
      if (!isName(v)) throw new RangeError(`${w}: ${JSON.stringify(v)} is not a name (lowercase letters, digits, "-")`);
    }
    return `${this.prefix}nodes/${node}/peers/${project}/${pod}`;
  }

  async publishPeer(peer: PeerInfo): Promise<void> {
    const key = this.peerKey(peer.project, peer.node, peer.pod);
    const value = JSON.stringify({ pod: peer.pod, publicKey: peer.publicKey, endpoint: peer.endpoint });
    this.owned.set(key, value);
    // a grant started while etcd had no quorum may fail just after it is back: one
    // more (fresh) grant then, rather than the agent's next reconcile a second later
    const lease = await this.getLease().catch(() => this.getLease());
    await lease.put(key).value(value).exec();
  }

  /**
   * Deletes the key; when etcd cannot be reached it is deleted later (retried with
   * backoff until it works or this agent publishes it again), so a pod removed during
   * an outage leaves no key behind. Resolves after the first attempt.
   */
  async withdrawPeer(project: string, node: string, pod: string): Promise<void> {
    const key = this.peerKey(project, node, pod);
    this.owned.delete(key);
    const attempt = (delay: number): Promise<void> =>
      this.client
        .delete()
        .key(key)
        .exec()
        .then(
          () => {},
          (e) => {
            if (this.closed || this.owned.has(key)) return;
            if (delay === RETRY_MIN_MS) this.onEvent('withdraw failed: retrying', { key, err: (e as Error).message });
            setTimeout(() => void attempt(Math.min(delay * 2, RETRY_MAX_MS)), delay).unref();
          },
        );
    await attempt(RETRY_MIN_MS);
  }

  watch(project: string, onChange: () => void): Watch {
    if (!isName(project)) throw new RangeError(`project: ${JSON.stringify(project)} is not a name`);
    let set = this.listeners.get(project);
    if (!set) this.listeners.set(project, (set = new Set()));
    const fn = () => onChange();
    set.add(fn);
    // start reading now; a failure is retried by the reads the agent makes
    this.ready().catch(() => {});
    return { close: () => set!.delete(fn) };
  }

  // --- the lease ---------------------------------------------------------------

  private getLease(): Promise<Lease> {
    if (this.closed) return Promise.reject(new Error('registry closed'));
    if (!this.lease) {
      // kept alive here, one short stream per keep-alive (keepLease), not by etcd3's one
      // long stream: a long stream stays on the endpoint it was opened on
      const l = this.client.lease(this.ttl, { autoKeepAlive: false });
      const p: Promise<Lease> = l.grant().then(
        () => {
          this.keepLease(l, p);
          return l;
        },
        (e) => {
          if (this.lease === p) this.lease = null;
          l.release();
          throw e;
        },
      );
      this.lease = p;
      l.on('lost', (e) => {
        if (this.lease !== p || this.closed) return;
        this.lease = null;
        this.stats.leasesLost++;
        this.onEvent('lease lost: publishing again under a new one', { err: (e as Error).message, keys: this.owned.size });
        this.republish();
      });
    }
    return this.lease;
  }

  /**
   * Keeps the lease alive: a keep-alive every TTL/3 on the endpoint calls go to now
   * (the node's own member while it answers), each with its own deadline; one that
   * fails marks its endpoint failed and is tried again at once on the next. etcd
   * answering that the lease expired fires 'lost' (getLease: a new lease, everything
   * published again). While no keep-alive gets through (no quorum, this node cut off)
   * the lease is kept trying: etcd extends leases when a leader is elected again.
   */
  private keepLease(l: Lease, p: Promise<Lease>): void {
    const tick = () => {
      if (this.lease !== p || this.closed || l.revoked()) return;
      const on = this.order.current();
      l.keepaliveOnce({ deadline: Date.now() + CALL_TIMEOUT_MS }).then(
        () => setTimeout(tick, (this.ttl * 1000) / 3).unref(),
        (e) => {
          if (e instanceof EtcdLeaseInvalidError) return; // 'lost' was emitted
          this.order.fail(on);
          setTimeout(tick, RETRY_MIN_MS).unref();
        },
      );
    };
    setTimeout(tick, (this.ttl * 1000) / 3).unref();
  }

  /** Writes every owned key under a (new) lease, retrying with backoff until it works. */
  private republish(delay = RETRY_MIN_MS): void {
    if (this.republishing || this.closed) return;
    this.republishing = true;
    const run = async () => {
      const lease = await this.getLease();
      for (const [k, v] of [...this.owned]) if (this.owned.get(k) === v) await lease.put(k).value(v).exec();
    };
    run().then(
      () => {
        this.republishing = false;
      },
      () => {
        this.republishing = false;
        setTimeout(() => this.republish(Math.min(delay * 2, RETRY_MAX_MS)), delay).unref();
      },
    );
  }

  /** Stops watching; revokes the lease (its keys go at once), closes the connections. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.generation++;
    this.listeners.clear();
    if (this.homeTimer) clearInterval(this.homeTimer);
    await this.watcher?.cancel().catch(() => {});
    const lease = this.lease;
    this.lease = null;
    if (lease) {
      await lease
        .then((l) => l.revoke({ deadline: Date.now() + 2000 }))
        .catch(() => {});
    }
    this.client.close();
  }
}

/**
 * The API server's and controllers' side, for netns-scripts/cluster.sh: puts the
 * objects of the cluster file into etcd. Writes are queued by the synchronous calls
 * cluster-tool.ts's syncRegistry makes, and sent by flush().
 */
export class EtcdRegistryWriter {
  readonly client: Etcd3;
  private readonly ops: (() => Promise<unknown>)[] = [];

  constructor(readonly connection: EtcdConnection) {
    this.client = etcdClient(connection);
  }

  /** The project's Namespace and its psk Secret (the content of `pskFile`, base64). */
  putProject(project: string, pskFile: string): void {
    if (!isName(project)) throw new RangeError(`project: ${JSON.stringify(project)} is not a name`);
    const p = this.connection.prefix;
    this.ops.push(async () => {
      await this.client.put(`${p}projects/${project}`).value(JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: project, labels: { 'tenc.io/protect': 'true' } } }));
      let psk: Buffer;
      try {
        psk = readFileSync(pskFile);
      } catch {
        return; // no psk yet (cluster.sh writes it after the first sync)
      }
      const secret = { apiVersion: 'v1', kind: 'Secret', type: 'Opaque', metadata: { name: 'tenc-psk', namespace: project }, data: { psk: psk.toString('base64') } };
      await this.client.put(`${p}secrets/${project}/psk`).value(JSON.stringify(secret));
    });
  }

  /** Makes the kind's keys of the project exactly `objects`: puts what changed, deletes the rest. */
  replaceObjects(kind: 'pods' | 'services' | 'endpointslices' | 'policies', project: string, objects: Map<string, unknown>): void {
    if (!isName(project)) throw new RangeError(`project: ${JSON.stringify(project)} is not a name`);
    for (const name of objects.keys()) if (!isName(name)) throw new RangeError(`${kind}: ${JSON.stringify(name)} is not a name`);
    const dir = `${this.connection.prefix}${kind}/${project}/`;
    this.ops.push(async () => {
      const now = await this.client.getAll().prefix(dir).strings();
      const writes: Promise<unknown>[] = [];
      for (const [name, o] of objects) {
        const v = JSON.stringify(o);
        if (now[dir + name] !== v) writes.push(this.client.put(dir + name).value(v).exec());
      }
      for (const k of Object.keys(now)) if (!objects.has(k.slice(dir.length))) writes.push(this.client.delete().key(k).exec());
      await Promise.all(writes);
    });
  }

  /**
   * Sends the queued writes in order; an operation that fails (no quorum, a member
   * down) is tried again for up to `patienceMs`, as a controller would: each call
   * gives up after CALL_TIMEOUT_MS and goes to the next endpoint (a member without
   * a leader refuses a write at once), and the pause between tries stays short
   * (0.1 s, then 0.2 s), so a write held back by a lost quorum lands within a few
   * hundred milliseconds of the quorum's return.
   */
  async flush(patienceMs = 30_000): Promise<void> {
    const until = Date.now() + patienceMs;
    for (const op of this.ops.splice(0)) {
      for (let delay = 100; ; delay = 200) {
        try {
          await op();
          break;
        } catch (e) {
          if (Date.now() + delay > until) throw e;
          await new Promise((r) => setTimeout(r, delay));
        }
      }
    }
  }

  close(): void {
    this.client.close();
  }
}
