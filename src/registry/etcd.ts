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
 * other nodes). <node> is the node's name (net/names.ts: dots allowed, never "/"); the
 * role's prefix is nodePrefix(), ending in "/": node a's role then does not cover the
 * keys of node a.b or a-b.
 *
 * Reading: one consistent snapshot of the whole prefix (a range read at one
 * revision), then one watch from that revision + 1 that keeps an in-memory copy
 * current; every read is served from that copy, parsed once per change. A watch that
 * ends in an error (etcd3 says only "Watcher canceled" when a compaction removed the
 * revision it needed) is dropped and the snapshot is read again, with backoff; a lost
 * connection is retried over the other endpoints in order (inOrder(): own member first),
 * and the watch resumes after the last event it delivered (never after a response
 * header's revision: a catch-up's headers are ahead of its events). A watch create
 * that etcd refuses (e.g. an expired auth token) or leaves unanswered gets a new watch
 * stream, as etcd3 sends no later create on that one. While etcd is unreachable the copy
 * stays as it was: the agent keeps its pods running with what they have, and learns
 * nothing new (new destinations stay fail-closed).
 *
 * Publishing: peers are written under a lease of this agent (TTL a few seconds, kept
 * alive), so the keys of a dead agent vanish by themselves. A lease that is lost
 * (expired while etcd was unreachable) is replaced and everything this agent
 * published is written again under the new one. close() never revokes the lease: the
 * keys of an agent that stops stay until its TTL runs out (the pods keep running).
 *
 * The client layer (the spec, TLS and auth, call deadlines, the endpoint order and
 * its failover, the lease keeper) is etcd-client.ts; this file is the key layout,
 * the copy and the Registry interface over it.
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
import type { Etcd3, Watcher } from 'etcd3';
import { CALL_TIMEOUT_MS, HOME_CHECK_MS, LeasedKeys, RETRY_MAX_MS, RETRY_MIN_MS, SNAPSHOT_TIMEOUT_MS, endpointOrder, etcdClient, type EndpointOrder, type EtcdConnection, type Host } from './etcd-client.js';
import { endpointsFromObject, isKey32, isName, peerFromObject, podFromObject, policyFromObject, serviceFromObject } from './objects.js';
import { isNodeName, parseNodeName } from '../net/names.js';
import type { EndpointsInfo, PeerInfo, PodInfo, PolicyObject, Registry, ServiceInfo, Watch } from './registry.js';


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
      return s.length === 5 && s[2] === 'peers' ? (isNodeName(s[1]) && names(s[3], s[4]) ? { kind: 'peers', node: s[1], project: s[3], name: s[4] } : 'bad') : null;
    default:
      return null;
  }
}

/**
 * Where the agent of `node` writes (PREFIX/nodes/NODE/), and what its etcd role may
 * write (`role grant-permission --prefix=true readwrite`): ending in "/", so no other
 * node's keys start with it (node a's prefix is not one of a.b's or a-b's keys).
 */
export function nodePrefix(prefix: string, node: string): string {
  const n = parseNodeName(node);
  if (!n.ok) throw new RangeError(`node: ${n.problem}`);
  return `${prefix}nodes/${node}/`;
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
  /** A watch whose create is not answered this long on an open stream gets a new stream (default WATCH_CREATE_MS; tests). */
  watchCreateMs?: number;
}

/**
 * Cancels a watch, waiting at most 2 s: etcd3's cancel of a watch whose create is not
 * answered yet waits for that answer (or the stream's end), which may never come.
 */
function cancelWatcher(w: Watcher): Promise<void> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([w.cancel().catch(() => {}), new Promise<void>((r) => (t = setTimeout(r, 2000)))]).finally(() => clearTimeout(t));
}

/** How long a watch create may go unanswered on an open stream (etcd answers at once). */
export const WATCH_CREATE_MS = 10_000;

/** Counters for tests and benchmarks. */
export interface EtcdRegistryStats {
  snapshots: number;
  events: number;
  watchErrors: number;
  leasesLost: number;
  /** The revision the copy is at: of the last event delivered (or the snapshot). */
  revision: number;
  /** etcd3 watch streams given up and opened again (a refused or unanswered create). */
  watchStreamResets: number;
}

export class EtcdRegistry implements Registry {
  readonly client: Etcd3;
  readonly prefix: string;
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
  private readonly order: EndpointOrder;
  /** What this agent published, under its lease. */
  private readonly keys: LeasedKeys;
  /** The endpoint the watch stream was opened on (see homeCheck). */
  private watchOn: Host | null = null;
  private homeTimer: NodeJS.Timeout | null = null;
  private homeProbing = false;
  /** Since when the watch waits for its create's answer (null: created). */
  private watchPendingSince: number | null = null;
  private readonly watchCreateMs: number;
  readonly stats: EtcdRegistryStats = { snapshots: 0, events: 0, watchErrors: 0, leasesLost: 0, revision: 0, watchStreamResets: 0 };

  constructor(
    readonly connection: EtcdConnection,
    opts: EtcdRegistryOptions = {},
  ) {
    this.client = etcdClient(connection);
    this.order = endpointOrder(this.client);
    this.prefix = connection.prefix;
    this.onProblem = opts.onProblem ?? (() => {});
    this.onEvent = opts.onEvent ?? (() => {});
    this.secretDir = opts.secretDir ?? null;
    this.watchCreateMs = opts.watchCreateMs ?? WATCH_CREATE_MS;
    this.keys = new LeasedKeys(this.client, connection.ttl, this.onEvent, () => this.stats.leasesLost++);
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

  /**
   * Watches the prefix from revision `from`. The copy is at stats.revision: the highest
   * revision of an event delivered (or the snapshot's, or a progress notification's),
   * never a response header's: a watch catching up gets etcd's current revision in the
   * header of each batch (at most 1000 revisions of events), so resuming after a header
   * skipped the batches not delivered yet. etcd3 resumes from the header (and from the
   * create response's, etcd's current revision): every (re)create is sent from the
   * copy's revision + 1 instead.
   */
  private startWatch(from: number, gen: number): void {
    this.watcher?.cancel().catch(() => {});
    this.watchOn = this.order.current();
    const w = this.client.watch().prefix(this.prefix).startRevision(String(from)).watcher();
    this.watcher = w;
    this.watchPendingSince = Date.now();
    // (re)connected: on the endpoint calls go to now (the order is deterministic); the
    // create request is written right after this event, so its revision can be set here,
    // and the create watchdog counts from here (not from 'disconnected': after an outage
    // longer than watchCreateMs it would reset a healthy stream before etcd could answer)
    w.on('connecting', () => {
      if (gen !== this.generation || this.watcher !== w) return;
      this.watchPendingSince = Date.now();
      this.watchOn = this.order.current();
      w.request.start_revision = String(this.stats.revision + 1);
    });
    w.on('connected', () => {
      if (this.watcher === w) this.watchPendingSince = null;
    });
    if (!this.homeTimer) {
      this.homeTimer = setInterval(() => {
        this.createCheck();
        this.homeCheck();
      }, HOME_CHECK_MS);
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
      if (gen !== this.generation) return;
      let rev = this.stats.revision;
      for (const ev of res.events ?? []) rev = Math.max(rev, Number(ev.kv?.mod_revision ?? 0));
      // no events, not a create or cancel: a progress notification, which etcd sends only
      // to a watch that has caught up (its header is then the copy's revision)
      if ((res.events ?? []).length === 0 && !res.created && !res.canceled && res.header) rev = Math.max(rev, Number(res.header.revision));
      this.stats.revision = rev;
    });
    // compaction ("Watcher canceled"), auth, anything: read everything again
    w.on('error', (e) => {
      if (gen !== this.generation || this.closed) return;
      this.stats.watchErrors++;
      // refused at its create (etcd answers created + canceled, e.g. permission denied
      // after the auth token expired): etcd3 then waits on that stream for ever for the
      // create's answer and sends no create for a later watch: the copy would freeze
      if (w.id === null) this.resetWatchStream('watch refused at its create: opening a new watch stream', (e as Error).message);
      this.onEvent('watch error: reading the snapshot again', { err: (e as Error).message });
      this.resync(gen);
    });
  }

  /**
   * A watch not created within WATCH_CREATE_MS while its stream is up (etcd answers a
   * create at once, before any catch-up): the stream is given up and opened again.
   * The backstop for a stream on which etcd3 sends no more creates (see the 'error'
   * handler above) however it got there.
   */
  private createCheck(): void {
    const since = this.watchPendingSince;
    const w = this.watcher as unknown as { manager?: { state?: number } } | null;
    if (this.closed || since === null || !w || Date.now() - since < this.watchCreateMs) return;
    if (w.manager?.state !== 2 /* etcd3 WatchManager: State.Connected */) return; // still connecting: etcd3 retries
    this.watchPendingSince = Date.now();
    this.resetWatchStream(`watch not created within ${this.watchCreateMs} ms: opening a new watch stream`);
  }

  /**
   * Ends etcd3's watch stream as a stream error would (its watches are created again on
   * a new stream, from the copy's revision: see 'connecting'), after dropping the cached
   * auth token (a refused create is most often an expired one). Reaches into etcd3
   * (WatchManager.handleError, the pool's authenticator): checked, so an upgrade that
   * changes them is reported, not silently ignored.
   */
  private resetWatchStream(what: string, err?: string): void {
    const auth = (this.client as unknown as { pool?: { authenticator?: { invalidateMetadata?: () => void } } }).pool?.authenticator;
    const manager = (this.watcher as unknown as { manager?: { handleError?: (e: Error) => void } } | null)?.manager;
    if (typeof auth?.invalidateMetadata !== 'function' || typeof manager?.handleError !== 'function') {
      this.onEvent('etcd3 not as expected (upgraded?): cannot open a new watch stream', {});
      return;
    }
    this.stats.watchStreamResets++;
    this.onEvent(what, err === undefined ? {} : { err });
    auth.invalidateMetadata();
    manager.handleError(new Error(what));
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
          await cancelWatcher(w);
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

  /**
   * Takes a key's value into the copy. Never throws: it runs in the snapshot and in
   * etcd3's watch handler, which rethrows outside any catch (an uncaught exception:
   * one bad object would stop the agent, and again at every restart's snapshot). A
   * value the readers did not expect is reported and leaves its object out.
   */
  private put(key: string, value: string): void {
    try {
      this.putValue(key, value);
    } catch (e) {
      const at = placeOf(key.slice(this.prefix.length));
      // never a Secret's message (it may quote part of the psk)
      this.onProblem(key, at !== null && at !== 'bad' && at.kind === 'secrets' ? 'cannot be read: ignored' : `cannot be read (${e instanceof Error ? e.message : String(e)}): ignored`);
      if (at === null || at === 'bad') return;
      this.removePlace(at);
      this.touch(at.project);
    }
  }

  private putValue(key: string, value: string): void {
    const rel = key.slice(this.prefix.length);
    const at = placeOf(rel);
    if (at === null) return;
    if (at === 'bad') {
      this.onProblem(key, 'a name in the key is not a valid name (lowercase letters, digits, "-"; a node\'s name also "." between its parts): ignored');
      return;
    }
    // the value replaces what was there: a bad one removes the object
    this.removePlace(at);
    let o: Obj;
    try {
      o = JSON.parse(value);
    } catch (e) {
      // JSON.parse's message quotes the input (Node 20: ten characters of it): never
      // for a Secret, where that is part of the psk (a raw `wg genpsk` line put there)
      this.onProblem(key, at.kind === 'secrets' ? 'not JSON' : `not JSON: ${(e as Error).message}`);
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
        // never say what the value was; canonical and not all zeros, as the pods take it
        if (isKey32(psk)) p.psk = psk;
        else ok = false;
        break;
      }
      case 'pods':
      case 'services':
      case 'endpointslices': {
        // the parts' problems (an endpoint's or a pod's address that is not an IP, a port
        // that is not an object) are said, the rest kept
        const v =
          at.kind === 'pods'
            ? podFromObject(at.project, o, (why) => this.onProblem(key, why))
            : at.kind === 'services'
              ? serviceFromObject(at.project, o, (why) => this.onProblem(key, why))
              : endpointsFromObject(at.project, o, (why) => this.onProblem(key, why));
        if (v === null) break; // left out in the ordinary course (a finished pod, a headless Service)
        if (typeof v === 'string') {
          this.onProblem(key, `not a valid ${at.kind.replace(/s$/, '')} object: ${v}: ignored`);
          this.touch(at.project);
          return;
        }
        if ('service' in v) p.endpoints.set(at.name, v);
        else if (v.name !== at.name) ok = false;
        else if ('vip' in v) p.services.set(at.name, v);
        else p.pods.set(at.name, v);
        break;
      }
      case 'peers': {
        const v = peerFromObject(at.project, at.node, at.name, o);
        if (typeof v !== 'string') p.peers.set(`${at.node}/${at.name}`, v);
        else {
          this.onProblem(key, `not a valid peer: ${v}: ignored`);
          this.touch(at.project);
          return;
        }
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
    for (const [w, v] of [['project', project], ['pod', pod]]) {
      if (!isName(v)) throw new RangeError(`${w}: ${JSON.stringify(v)} is not a name (lowercase letters, digits, "-")`);
    }
    return `${nodePrefix(this.prefix, node)}peers/${project}/${pod}`;
  }

  async publishPeer(peer: PeerInfo): Promise<void> {
    const key = this.peerKey(peer.project, peer.node, peer.pod);
    await this.keys.put(key, JSON.stringify({ pod: peer.pod, publicKey: peer.publicKey, endpoint: peer.endpoint }));
  }

  /**
   * Deletes the key; when etcd cannot be reached it is deleted later (retried with
   * backoff until it works or this agent publishes it again), so a pod removed during
   * an outage leaves no key behind. Resolves after the first attempt.
   */
  async withdrawPeer(project: string, node: string, pod: string): Promise<void> {
    await this.keys.delete(this.peerKey(project, node, pod));
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

  /**
   * Stops watching, closes the connections. The lease is not revoked: the keys stay
   * published until its TTL runs out (LeasedKeys.close), as the agent leaves its proxies
   * running when it stops.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.generation++;
    this.listeners.clear();
    if (this.homeTimer) clearInterval(this.homeTimer);
    const released = this.keys.close();
    if (this.watcher) await cancelWatcher(this.watcher);
    await released;
    this.client.close();
  }
}

/**
 * Each try of the writer's calls gives up this soon: a write sent while there is no
 * leader is dropped by raft and waits out its deadline, even when a leader is elected
 * a moment later (seen: the pod written during a lost quorum landed 2.7 s after the
 * election with 1.5 s tries); its retries follow 0.1-0.2 s later.
 */
const WRITER_CALL_TIMEOUT_MS = 600;

/**
 * The API server's and controllers' side, for netns-scripts/cluster.sh: puts the
 * objects of the cluster file into etcd. Writes are queued by the synchronous calls
 * cluster-tool.ts's syncRegistry makes, and sent by flush().
 */
export class EtcdRegistryWriter {
  readonly client: Etcd3;
  private readonly ops: (() => Promise<unknown>)[] = [];

  constructor(readonly connection: EtcdConnection) {
    this.client = etcdClient(connection, WRITER_CALL_TIMEOUT_MS);
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
   * Sends the queued writes, all at once (each operation its own keys: a project's
   * Namespace and Secret, or one kind of one project; as separate controllers would,
   * so a whole sync costs about one round trip rather than one per operation, and
   * after a lost quorum everything lands together instead of one after the other).
   * An operation that fails (no quorum, a member down) is tried again for up to
   * `patienceMs`: each call gives up after WRITER_CALL_TIMEOUT_MS and goes to the next
   * endpoint (a member without a leader refuses a write at once), and the pause
   * between tries stays short (0.1 s, then 0.2 s), so a write held back by a lost
   * quorum lands within a few hundred milliseconds of the quorum's return. Rejects
   * with the first operation's error that ran out of patience, after all have ended.
   */
  async flush(patienceMs = 30_000): Promise<void> {
    const until = Date.now() + patienceMs;
    const retried = async (op: () => Promise<unknown>) => {
      for (let delay = 100; ; delay = 200) {
        try {
          await op();
          return;
        } catch (e) {
          if (Date.now() + delay > until) throw e;
          await new Promise((r) => setTimeout(r, delay));
        }
      }
    };
    const results = await Promise.allSettled(this.ops.splice(0).map(retried));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }

  close(): void {
    this.client.close();
  }
}
