/**
 * An in-test Kubernetes API server: just enough of the list/watch protocol and of
 * the TencPeer custom resource for the kubernetes registry backend, over plain
 * HTTP on 127.0.0.1. Shapes follow the API reference:
 *
 *   GET  /api/v1/{namespaces,pods,services}                    List (+ ?labelSelector=k=v)
 *   GET  /apis/discovery.k8s.io/v1/endpointslices               List
 *   GET  /apis/tenc.io/v1alpha1/{tencpeers,tencpolicies}          List (TencPolicy objects are put() by tests)
 *        ...?watch=true&resourceVersion=RV                      watch: one JSON event per line
 *                                                               (ADDED/MODIFIED/DELETED/BOOKMARK/ERROR)
 *   GET  /api/v1/namespaces/NS/secrets/NAME
 *   POST /api/v1/namespaces/NS/events (core/v1 Event; 201 with the object)
 *   POST /apis/tenc.io/v1alpha1/namespaces/NS/tencpeers
 *   GET|PUT|DELETE /apis/tenc.io/v1alpha1/namespaces/NS/tencpeers/NAME
 *
 * resourceVersion is one counter over all objects; a watch from a version older
 * than the compaction point gets the real server's answer (200, then an ERROR
 * event with a Status of code 410 "Expired", then the end). Bearer tokens map
 * to users; a user with a node (node-bound service-account token) carries
 * extra['authentication.kubernetes.io/node-name'], and TencPeer writes go
 * through an emulation of deploy/'s ValidatingAdmissionPolicy (the node of the
 * token must be spec.nodeName of the new and of the old object), of the
 * CRD's schema and of the API server's limits on labels (63 characters a
 * value). Deleting a Pod deletes the TencPeers it owns (the garbage
 * collector). Test handles: dropWatches(), expire(), delayMs (a slow server),
 * failNext (errors), counters.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { serviceEndpoints, type ClusterConfig } from '../../src/agent/cluster-config.js';

type Obj = Record<string, any>;
export type Kind = 'namespaces' | 'pods' | 'services' | 'endpointslices' | 'tencpeers' | 'tencpolicies' | 'secrets';

const META: Record<Kind, { apiVersion: string; kind: string; namespaced: boolean }> = {
  namespaces: { apiVersion: 'v1', kind: 'Namespace', namespaced: false },
  pods: { apiVersion: 'v1', kind: 'Pod', namespaced: true },
  services: { apiVersion: 'v1', kind: 'Service', namespaced: true },
  endpointslices: { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', namespaced: true },
  tencpeers: { apiVersion: 'tenc.io/v1alpha1', kind: 'TencPeer', namespaced: true },
  tencpolicies: { apiVersion: 'tenc.io/v1alpha1', kind: 'TencPolicy', namespaced: true },
  secrets: { apiVersion: 'v1', kind: 'Secret', namespaced: true },
};

export const AGENT_USER = 'system:serviceaccount:tenc-system:tenc-agent';
export const NODE_EXTRA = 'authentication.kubernetes.io/node-name';

export interface User {
  username: string;
  extra?: Record<string, string[]>;
}

interface WatchConn {
  kind: Kind;
  res: ServerResponse;
  selector: Record<string, string>;
  bookmarks: boolean;
  timers: NodeJS.Timeout[];
}

const clone = <T>(o: T): T => JSON.parse(JSON.stringify(o));

function parseSelector(s: string | null): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (s ?? '').split(',').filter(Boolean)) {
    const [k, v] = part.split('=');
    out[k] = v ?? '';
  }
  return out;
}
const matches = (sel: Record<string, string>, o: Obj) => Object.entries(sel).every(([k, v]) => o?.metadata?.labels?.[k] === v);

function status(code: number, reason: string, message: string): Obj {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

export class FakeApiServer {
  private server: Server | null = null;
  private rv = 1000;
  private readonly objects = new Map<string, Obj>();
  private readonly history: { rv: number; kind: Kind; type: string; obj: Obj; old?: Obj }[] = [];
  private compactedRv = 0;
  private readonly watches = new Set<WatchConn>();
  readonly tokens = new Map<string, User>();
  /** Delay before every answer (a slow server). */
  delayMs = 0;
  /** Bookmark interval of watches that ask for bookmarks. */
  bookmarkMs = 1000;
  /** The next N list requests of a kind fail with HTTP 500. */
  readonly failLists = new Map<Kind, number>();
  /** core/v1 Events POSTed (in order), and how many next Event POSTs answer 500. */
  readonly events: Obj[] = [];
  failEvents = 0;
  readonly counts = { lists: new Map<string, number>(), watches: new Map<string, number>(), watchFrom: [] as string[], expired: 0, denied: 0 };
  port = 0;

  // --- store ---------------------------------------------------------------

  private key(kind: Kind, ns: string, name: string): string {
    return `${kind}/${ns}/${name}`;
  }

  get(kind: Kind, ns: string, name: string): Obj | undefined {
    const o = this.objects.get(this.key(kind, META[kind].namespaced ? ns : '', name));
    return o ? clone(o) : undefined;
  }

  list(kind: Kind, ns?: string): Obj[] {
    return [...this.objects.entries()].filter(([k, o]) => k.startsWith(`${kind}/`) && (ns === undefined || o.metadata.namespace === ns)).map(([, o]) => clone(o));
  }

  get resourceVersion(): string {
    return String(this.rv);
  }

  /**
   * Records and sends an event. A label-selected watch sees what the real one
   * does: an object that comes to match is ADDED, one that stops matching DELETED.
   */
  private event(kind: Kind, type: string, obj: Obj, old?: Obj): void {
    this.history.push({ rv: this.rv, kind, type, obj: clone(obj), old: old ? clone(old) : undefined });
    for (const w of this.watches) if (w.kind === kind) this.sendFiltered(w, type, obj, old);
  }

  private sendFiltered(w: WatchConn, type: string, obj: Obj, old?: Obj): void {
    const now = matches(w.selector, obj);
    const was = old ? matches(w.selector, old) : false;
    if (type === 'MODIFIED' && now && !was) this.send(w, 'ADDED', obj);
    else if (type === 'MODIFIED' && !now && was) this.send(w, 'DELETED', obj);
    else if (now) this.send(w, type, obj);
  }

  /** Creates or replaces an object (ADDED or MODIFIED), as a controller would. */
  put(kind: Kind, obj: Obj): Obj {
    const m = META[kind];
    const o = clone(obj);
    o.apiVersion ??= m.apiVersion;
    o.kind ??= m.kind;
    o.metadata ??= {};
    const ns = m.namespaced ? (o.metadata.namespace ?? 'default') : '';
    if (m.namespaced) o.metadata.namespace = ns;
    const k = this.key(kind, ns, o.metadata.name);
    const old = this.objects.get(k);
    o.metadata.uid = old?.metadata.uid ?? o.metadata.uid ?? randomUUID();
    o.metadata.creationTimestamp = old?.metadata.creationTimestamp ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    o.metadata.resourceVersion = String(++this.rv);
    this.objects.set(k, o);
    this.event(kind, old ? 'MODIFIED' : 'ADDED', o, old);
    return clone(o);
  }

  /** Deletes an object (DELETED); a Pod takes the TencPeers it owns with it (garbage collector). */
  remove(kind: Kind, ns: string, name: string): boolean {
    const k = this.key(kind, META[kind].namespaced ? ns : '', name);
    const old = this.objects.get(k);
    if (!old) return false;
    this.objects.delete(k);
    old.metadata.resourceVersion = String(++this.rv);
    this.event(kind, 'DELETED', old);
    if (kind === 'pods') {
      for (const t of this.list('tencpeers', ns)) if ((t.metadata.ownerReferences ?? []).some((r: Obj) => r.uid === old.metadata.uid)) this.remove('tencpeers', ns, t.metadata.name);
    }
    return true;
  }

  /** Forgets the history: every watch from an older version now gets 410 Gone. */
  compact(): void {
    this.compactedRv = this.rv + 1;
    this.history.length = 0;
  }

  /** Closes every open watch abruptly (sockets destroyed, no final chunk). */
  dropWatches(): number {
    const n = this.watches.size;
    for (const w of [...this.watches]) {
      this.closeWatch(w);
      w.res.socket?.destroy();
    }
    return n;
  }

  /** Compacts, then sends every open watch an ERROR 410 event and ends it (as etcd compaction does). */
  expire(): void {
    this.compact();
    for (const w of [...this.watches]) {
      this.counts.expired++;
      w.res.write(JSON.stringify({ type: 'ERROR', object: status(410, 'Expired', 'too old resource version') }) + '\n');
      this.closeWatch(w);
      w.res.end();
    }
  }

  get openWatches(): number {
    return this.watches.size;
  }

  // --- from a cluster file -----------------------------------------------------

  /** The objects of a cluster file (netns-scripts/cluster-example.json), as the API would hold them; a psk Secret per project. */
  loadCluster(c: ClusterConfig, o: { psk?: boolean } = {}): void {
    for (const p of c.projects) {
      this.put('namespaces', { metadata: { name: p.name, labels: { 'tenc.io/protect': 'true', 'kubernetes.io/metadata.name': p.name } } });
      if (o.psk !== false) this.putPsk(p.name, randomBytes(32).toString('base64'));
    }
    for (const p of c.pods) this.putPod(p.project, p.name, p.node, p.address, p.labels);
    for (const s of c.services) {
      this.put('services', {
        metadata: { name: s.name, namespace: s.project },
        spec: { clusterIP: s.vip, clusterIPs: [s.vip], type: 'ClusterIP', selector: s.selector, ports: s.ports.map((p) => ({ name: `${p.protocol}-${p.port}`, protocol: p.protocol.toUpperCase(), port: p.port, targetPort: p.port })) },
      });
      this.syncSlice(s.project, s.name, serviceEndpoints(c, s).map((p) => ({ name: p.name, address: p.address, node: p.node })));
    }
    // the file's TencPolicy objects, as kubectl apply would create them
    for (const p of c.policies ?? []) this.put('tencpolicies', p.object);
  }

  putPsk(ns: string, value: string): void {
    this.put('secrets', { metadata: { name: 'tenc-psk', namespace: ns }, type: 'Opaque', data: { psk: Buffer.from(`${value}\n`).toString('base64') } });
  }

  putPod(ns: string, name: string, node: string, ip: string | null, labels: Record<string, string> = {}, extra: Obj = {}): Obj {
    const cur = this.get('pods', ns, name);
    return this.put('pods', {
      metadata: { name, namespace: ns, labels, uid: cur?.metadata.uid },
      spec: { nodeName: node, containers: [{ name: 'app', image: 'busybox' }] },
      status: ip ? { phase: 'Running', podIP: ip, podIPs: [{ ip }], hostIP: '10.200.0.2' } : { phase: 'Pending' },
      ...extra,
    });
  }

  syncSlice(ns: string, service: string, pods: { name: string; address: string; node: string; ready?: boolean }[]): void {
    this.put('endpointslices', {
      metadata: { name: `${service}-abcde`, namespace: ns, labels: { 'kubernetes.io/service-name': service, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' } },
      addressType: 'IPv4',
      endpoints: pods.map((p) => ({ addresses: [p.address], conditions: { ready: p.ready ?? true, serving: true, terminating: false }, nodeName: p.node, targetRef: { kind: 'Pod', namespace: ns, name: p.name } })),
      ports: [],
    });
  }

  // --- identities ------------------------------------------------------------------

  /** A token of the agent's service account bound to a pod on `node` (node-bound token, Kubernetes >= 1.30). */
  agentToken(node: string): string {
    const t = `agent-${node}-${randomBytes(6).toString('hex')}`;
    this.tokens.set(t, { username: AGENT_USER, extra: { [NODE_EXTRA]: [node] } });
    return t;
  }

  kubeConfig(token: string): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'fake', server: `http://127.0.0.1:${this.port}`, skipTLSVerify: true }],
      users: [{ name: 'u', token }],
      contexts: [{ name: 'c', cluster: 'fake', user: 'u' }],
      currentContext: 'c',
    });
    return kc;
  }

  // --- admission (emulates deploy/admission.yaml) -----------------------------------

  /** null when allowed, else the reason. The rule of ValidatingAdmissionPolicy tenc-peer-node. */
  static admitTencPeer(op: 'CREATE' | 'UPDATE' | 'DELETE', user: User, obj: Obj | null, old: Obj | null): string | null {
    if (!/^system:serviceaccount:[^:]+:tenc-agent$/.test(user.username)) return null; // the policy matches the agent's service account (tenc-agent, any namespace) only
    const node = user.extra?.[NODE_EXTRA]?.[0];
    if (!node) return 'the agent must use a node-bound service-account token';
    if (op !== 'DELETE' && obj?.spec?.nodeName !== node) return `spec.nodeName must be the node of the agent (${node})`;
    if (op !== 'CREATE' && old?.spec?.nodeName !== node) return `only the agent of node ${old?.spec?.nodeName} may change or delete this TencPeer`;
    return null;
  }

  /** The CRD's openAPIV3Schema and the API server's ObjectMeta checks (labels), emulated: null when valid. */
  static validateTencPeer(o: Obj): string | null {
    const labels = FakeApiServer.validateLabels(o?.metadata?.labels);
    if (labels) return labels;
    const s = o?.spec;
    if (!s || typeof s !== 'object') return 'spec: Required value';
    for (const f of ['nodeName', 'publicKey', 'endpoint']) if (typeof s[f] !== 'string' || s[f] === '') return `spec.${f}: Required value`;
    if (s.nodeName.length > 253) return `spec.nodeName: Too long: may not be longer than 253`;
    if (!/^[A-Za-z0-9+/]{43}=$/.test(s.publicKey)) return 'spec.publicKey: should match base64 of 32 bytes';
    return null;
  }

  /**
   * metadata.labels as the API server validates every object's (apimachinery
   * ValidateLabels): a key's name part and every value at most 63 characters of
   * letters, digits, "-", "_" and ".", starting and ending with a letter or digit.
   */
  static validateLabels(labels: unknown): string | null {
    if (labels === undefined || labels === null) return null;
    if (typeof labels !== 'object') return 'metadata.labels: Invalid value';
    const part = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
    for (const [k, v] of Object.entries(labels as Record<string, unknown>)) {
      const name = k.slice(k.lastIndexOf('/') + 1);
      if (name.length > 63 || !part.test(name)) return `metadata.labels: Invalid value: ${JSON.stringify(k)}: name part must be no more than 63 characters`;
      if (typeof v !== 'string') return `metadata.labels: Invalid value: ${JSON.stringify(k)}: not a string`;
      if (v.length > 63) return `metadata.labels: Invalid value: ${JSON.stringify(v)}: must be no more than 63 characters`;
      if (v !== '' && !part.test(v)) return `metadata.labels: Invalid value: ${JSON.stringify(v)}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'`;
    }
    return null;
  }

  // --- HTTP -------------------------------------------------------------------------------

  async start(port = 0): Promise<void> {
    this.server = createServer((req, res) => {
      const go = () => this.handle(req, res).catch((e) => this.json(res, 500, status(500, 'InternalError', (e as Error).message)));
      if (this.delayMs > 0) setTimeout(go, this.delayMs);
      else void go();
    });
    await new Promise<void>((r) => this.server!.listen(port, '127.0.0.1', r));
    this.port = (this.server!.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    for (const w of [...this.watches]) {
      this.closeWatch(w);
      w.res.socket?.destroy();
    }
    this.server?.closeAllConnections();
    await new Promise<void>((r) => this.server?.close(() => r()) ?? r());
  }

  private json(res: ServerResponse, code: number, body: unknown): void {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  private send(w: WatchConn, type: string, obj: Obj): void {
    w.res.write(JSON.stringify({ type, object: obj }) + '\n');
  }

  private closeWatch(w: WatchConn): void {
    for (const t of w.timers) clearTimeout(t);
    this.watches.delete(w);
  }

  private body(req: IncomingMessage): Promise<Obj | null> {
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        const s = Buffer.concat(chunks).toString('utf8');
        try {
          resolve(s ? JSON.parse(s) : null);
        } catch {
          resolve(null);
        }
      });
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const auth = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    const user = auth ? this.tokens.get(auth[1]) : undefined;
    if (!user) return this.json(res, 401, status(401, 'Unauthorized', 'Unauthorized'));
    const p = url.pathname;
    let m: RegExpExecArray | null;
    const collections: Record<string, Kind> = {
      '/api/v1/namespaces': 'namespaces',
      '/api/v1/pods': 'pods',
      '/api/v1/services': 'services',
      '/apis/discovery.k8s.io/v1/endpointslices': 'endpointslices',
      '/apis/tenc.io/v1alpha1/tencpeers': 'tencpeers',
      // written by users (kubectl apply): tests put() them; the agent only lists and watches
      '/apis/tenc.io/v1alpha1/tencpolicies': 'tencpolicies',
    };
    if (req.method === 'GET' && collections[p]) {
      const kind = collections[p];
      const sel = parseSelector(url.searchParams.get('labelSelector'));
      if (url.searchParams.get('watch') === 'true') return this.watch(kind, sel, url, res);
      this.counts.lists.set(kind, (this.counts.lists.get(kind) ?? 0) + 1);
      const fail = this.failLists.get(kind) ?? 0;
      if (fail > 0) {
        this.failLists.set(kind, fail - 1);
        return this.json(res, 500, status(500, 'InternalError', 'etcdserver: request timed out'));
      }
      const items = this.list(kind).filter((o) => matches(sel, o));
      return this.json(res, 200, { kind: `${META[kind].kind}List`, apiVersion: META[kind].apiVersion, metadata: { resourceVersion: String(this.rv) }, items });
    }
    if (req.method === 'GET' && (m = /^\/api\/v1\/namespaces\/([^/]+)\/secrets\/([^/]+)$/.exec(p))) {
      const s = this.get('secrets', m[1], m[2]);
      return s ? this.json(res, 200, s) : this.json(res, 404, status(404, 'NotFound', `secrets "${m[2]}" not found`));
    }
    if (req.method === 'POST' && (m = /^\/api\/v1\/namespaces\/([^/]+)\/events$/.exec(p))) {
      const o = await this.body(req);
      if (this.failEvents > 0) {
        this.failEvents--;
        return this.json(res, 500, status(500, 'InternalError', 'etcdserver: request timed out'));
      }
      if (!o || typeof o.reason !== 'string' || !o.involvedObject) return this.json(res, 422, status(422, 'Invalid', 'Event is invalid: reason or involvedObject missing'));
      const meta = (o.metadata ?? {}) as Obj;
      const name = typeof meta.name === 'string' ? meta.name : `${String(meta.generateName ?? 'event.')}${(++this.rv).toString(36)}`;
      const ev = { ...o, apiVersion: 'v1', kind: 'Event', metadata: { ...meta, name, namespace: m[1], resourceVersion: String(++this.rv) } };
      this.events.push(ev);
      return this.json(res, 201, ev);
    }
    if ((m = /^\/apis\/tenc\.io\/v1alpha1\/namespaces\/([^/]+)\/tencpeers(?:\/([^/]+))?$/.exec(p))) {
      return this.tencpeer(req, res, user, m[1], m[2] ?? null);
    }
    return this.json(res, 404, status(404, 'NotFound', `the server could not find the requested resource (${req.method} ${p})`));
  }

  private watch(kind: Kind, selector: Record<string, string>, url: URL, res: ServerResponse): void {
    this.counts.watches.set(kind, (this.counts.watches.get(kind) ?? 0) + 1);
    const from = url.searchParams.get('resourceVersion') ?? '';
    this.counts.watchFrom.push(`${kind}@${from}`);
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    const w: WatchConn = { kind, res, selector, bookmarks: url.searchParams.get('allowWatchBookmarks') === 'true', timers: [] };
    const rv = Number(from);
    if (from !== '' && from !== '0' && rv < this.compactedRv) {
      this.counts.expired++;
      res.end(JSON.stringify({ type: 'ERROR', object: status(410, 'Expired', `too old resource version: ${from} (${this.compactedRv})`) }) + '\n');
      return;
    }
    if (from === '' || from === '0') {
      for (const o of this.list(kind)) if (matches(selector, o)) this.send(w, 'ADDED', o);
    } else {
      for (const h of this.history) if (h.rv > rv && h.kind === kind) this.sendFiltered(w, h.type, h.obj, h.old);
    }
    this.watches.add(w);
    res.on('close', () => this.closeWatch(w));
    const t = Number(url.searchParams.get('timeoutSeconds') ?? '0');
    if (t > 0)
      w.timers.push(
        setTimeout(() => {
          this.closeWatch(w);
          res.end();
        }, t * 1000),
      );
    if (w.bookmarks) {
      const tick = () => {
        this.send(w, 'BOOKMARK', { kind: META[kind].kind, apiVersion: META[kind].apiVersion, metadata: { resourceVersion: String(this.rv) } });
        w.timers.push(setTimeout(tick, this.bookmarkMs));
      };
      w.timers.push(setTimeout(tick, this.bookmarkMs));
    }
  }

  private async tencpeer(req: IncomingMessage, res: ServerResponse, user: User, ns: string, name: string | null): Promise<void> {
    const old = name ? this.get('tencpeers', ns, name) : undefined;
    const deny = (why: string) => {
      this.counts.denied++;
      const n = name ?? '';
      return this.json(res, 403, status(403, 'Forbidden', `tencpeers.tenc.io "${n}" is forbidden: ValidatingAdmissionPolicy 'tenc-peer-node' with binding 'tenc-peer-node' denied request: ${why}`));
    };
    if (req.method === 'GET' && name) return old ? this.json(res, 200, old) : this.json(res, 404, status(404, 'NotFound', `tencpeers.tenc.io "${name}" not found`));
    if (req.method === 'POST' && !name) {
      const o = await this.body(req);
      if (!o?.metadata?.name) return this.json(res, 422, status(422, 'Invalid', 'metadata.name: Required value'));
      const bad = FakeApiServer.validateTencPeer(o);
      if (bad) return this.json(res, 422, status(422, 'Invalid', `TencPeer.tenc.io "${o.metadata.name}" is invalid: ${bad}`));
      const why = FakeApiServer.admitTencPeer('CREATE', user, o, null);
      if (why) return deny(why);
      if (this.get('tencpeers', ns, o.metadata.name)) return this.json(res, 409, status(409, 'AlreadyExists', `tencpeers.tenc.io "${o.metadata.name}" already exists`));
      delete o.metadata.resourceVersion;
      delete o.metadata.uid;
      o.metadata.namespace = ns;
      return this.json(res, 201, this.put('tencpeers', o));
    }
    if (req.method === 'PUT' && name) {
      const o = await this.body(req);
      if (!old) return this.json(res, 404, status(404, 'NotFound', `tencpeers.tenc.io "${name}" not found`));
      const bad = FakeApiServer.validateTencPeer(o ?? {});
      if (bad) return this.json(res, 422, status(422, 'Invalid', `TencPeer.tenc.io "${name}" is invalid: ${bad}`));
      const why = FakeApiServer.admitTencPeer('UPDATE', user, o, old);
      if (why) return deny(why);
      if (o!.metadata?.resourceVersion !== old.metadata.resourceVersion)
        return this.json(res, 409, status(409, 'Conflict', `Operation cannot be fulfilled on tencpeers.tenc.io "${name}": the object has been modified; please apply your changes to the latest version and try again`));
      o!.metadata.namespace = ns;
      return this.json(res, 200, this.put('tencpeers', o!));
    }
    if (req.method === 'DELETE' && name) {
      const o = await this.body(req);
      if (!old) return this.json(res, 404, status(404, 'NotFound', `tencpeers.tenc.io "${name}" not found`));
      const why = FakeApiServer.admitTencPeer('DELETE', user, null, old);
      if (why) return deny(why);
      const uid = o?.preconditions?.uid;
      if (uid && uid !== old.metadata.uid) return this.json(res, 409, status(409, 'Conflict', `Precondition failed: UID in precondition: ${uid}, UID in object meta: ${old.metadata.uid}`));
      this.remove('tencpeers', ns, name);
      return this.json(res, 200, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name, group: 'tenc.io', kind: 'tencpeers', uid: old.metadata.uid } });
    }
    return this.json(res, 405, status(405, 'MethodNotAllowed', `${req.method} is not supported`));
  }
}
