/**
 * The registry on the Kubernetes API (`tenc agent --registry kubernetes[:KUBECONFIG]`).
 *
 *   projects()   Namespaces labelled tenc.io/protect=true (informer with that label selector)
 *   pods()       Pods (informer over all namespaces): spec.nodeName, status.podIPs, labels;
 *                a pod without an IP yet, being deleted, or finished is left out
 *   services()   Services with a selector and a cluster IP (headless: left out)
 *   endpoints()  EndpointSlices (discovery.k8s.io/v1, label kubernetes.io/service-name),
 *                ready endpoints only, the slices of one Service merged
 *                (these three are read by objects.ts, as the etcd and directory backends
 *                read theirs: the same objects taken, the same problems said)
 *   peers()      TencPeer custom resources (tenc.io/v1alpha1), one per pod, named after
 *                the pod, in its namespace, owned by the Pod (garbage-collected with it):
 *                spec.nodeName, spec.publicKey, spec.endpoint
 *   pskFile()    Secret tenc-psk (key psk) of the namespace, written to a 0600 file
 *   policies()   TencPolicy custom resources (tenc.io/v1alpha1, deploy/crd-tencpolicy.yaml)
 *                of the namespace, as stored: the CRD's schema refused malformed ones at
 *                admission, the agent validates the set again (src/policy/policy.ts)
 *
 * Why a custom resource and not annotations on the Pod: the agent then needs no
 * cluster-wide `patch pods` (which would let a node rewrite any pod's labels, the
 * very thing selectors and policies trust), the TencPeer's owner reference cleans
 * it up with its pod, and the API server itself checks who wrote it: the
 * ValidatingAdmissionPolicy in deploy/ lets an agent create, update or delete a
 * TencPeer only when spec.nodeName is the node its (node-bound) service-account
 * token belongs to. So `PeerInfo.node` = spec.nodeName is the authenticated
 * publisher, and trustedPeers() then keeps only the entries whose node is the
 * pod's node. A TencPeer whose owner is not the current pod of that name (left
 * from a previous pod with the same name) is not returned either.
 *
 * The pods' network namespaces do not come from here (netns: null): the agent
 * learns them from the CNI registration. Tests may pass netnsOf.
 *
 * Bad objects (a malformed TencPeer, a Service without selector, a pod, cluster or
 * endpoint address that is not an IP, a short psk...) are logged once per object and
 * problem and left out (a TencPeer once per problem, not once per revision); a psk
 * that is missing or malformed keeps its namespace's pods fail-closed (pskFile
 * rejects), never plaintext.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import {
  CoreV1Api,
  CustomObjectsApi,
  DiscoveryV1Api,
  KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  type V1EndpointSlice,
  type CoreV1Event,
  type V1Namespace,
  type V1Pod,
  type V1Service,
} from '@kubernetes/client-node';
import { parseEndpoint } from '../net/address.js';
import { isNodeName, NAMESPACE_NAME, parseNodeName } from '../net/names.js';
import { Informer, describeError as describe, errorKind, type InformerLog, type InformerOptions } from './kubernetes-informer.js';
import { endpointsFromObject, isKey32, KEY32_SHAPE, nonEmpty, podFromObject, readObject, serviceFromObject } from './objects.js';
import { mergeEndpoints, type EndpointsInfo, type PeerInfo, type PodInfo, type PolicyObject, type Registry, type ServiceInfo, type Watch } from './registry.js';

export const PROTECT_LABEL = 'tenc.io/protect';
export const PSK_SECRET = 'tenc-psk';
export const PSK_KEY = 'psk';
/** source.component / reportingComponent of the Events the agent records. */
export const EVENT_COMPONENT = 'tenc-agent';
export const PEER_GROUP = 'tenc.io';
export const PEER_VERSION = 'v1alpha1';
export const PEER_PLURAL = 'tencpeers';
export const PEER_KIND = 'TencPeer';
export const POLICY_PLURAL = 'tencpolicies';

export interface TencPeer extends KubernetesObject {
  spec?: { nodeName?: unknown; publicKey?: unknown; endpoint?: unknown };
}

export interface KubernetesRegistryOptions {
  log?: InformerLog;
  /** Where the psk files go (0700 directory, 0600 files); default /run/tenc/psk. */
  pskDir?: string;
  /** How often the psk Secrets are read again (default 30 s; also on any namespace change). */
  pskRefreshMs?: number;
  /** How long a read waits for the first list of every resource (default 10 s). */
  syncTimeoutMs?: number;
  informer?: InformerOptions;
  /**
   * A file rewritten every healthMs (default 10 s) while the event loop runs:
   * {"synced":true|false,"stale":[...],...}; the DaemonSet's probes read it (liveness:
   * fresh; readiness: synced, i.e. every informer listed at least once and none whose
   * lists or watches have kept failing for informer.staleAfterMs, default 120 s: those
   * are named in "stale").
   */
  healthFile?: string;
  healthMs?: number;
  /** This agent's node: named as reportingInstance/source.host of the Events it records (default: the host name). */
  node?: string;
  /** The pod's network namespace (tests; the agent gets it from the CNI registration). */
  netnsOf?: (pod: { project: string; name: string; node: string; uid: string }) => string | null;
}

const str = nonEmpty;

export { isKey32 };

/** "ip:port" or "[ip6]:port" with a port 1-65535, as the pod's parser (parseEndpoint) takes it. */
export function isEndpoint(v: unknown): v is string {
  return parseEndpoint(v).ok;
}

/** What is wrong with a TencPeer's spec, field by field (no values: the line is logged once per problem); null when nothing. */
export function peerProblem(t: TencPeer): string | null {
  const s = t.spec;
  if (!s || typeof s !== 'object') return 'spec is missing';
  const out: string[] = [];
  if (!str(s.nodeName)) out.push('spec.nodeName is missing or empty');
  else if (!isNodeName(s.nodeName)) out.push('spec.nodeName is not a node name');
  if (!isKey32(s.publicKey)) {
    const zero = typeof s.publicKey === 'string' && KEY32_SHAPE.test(s.publicKey) && Buffer.from(s.publicKey, 'base64').equals(Buffer.alloc(32));
    out.push(zero ? 'spec.publicKey is all zeros' : 'spec.publicKey is not a 32-byte key in base64');
  }
  if (!isEndpoint(s.endpoint)) out.push('spec.endpoint is not ip:port');
  return out.length > 0 ? out.join('; ') : null;
}

export class PskError extends Error {
  override name = 'PskError';
}

/** Checks the value of a psk Secret's key: the `wg genpsk` form, one trailing newline allowed. */
export function parsePsk(data: Record<string, string> | undefined, ns: string): string {
  const raw = data?.[PSK_KEY];
  if (raw === undefined) throw new PskError(`Secret ${ns}/${PSK_SECRET} has no key "${PSK_KEY}"`);
  const v = Buffer.from(raw, 'base64').toString('utf8').replace(/\r?\n$/, '');
  if (!KEY32_SHAPE.test(v)) throw new PskError(`Secret ${ns}/${PSK_SECRET} key "${PSK_KEY}" is not a 32-byte key in base64 (wg genpsk form; ${v.length} characters)`);
  if (Buffer.from(v, 'base64').equals(Buffer.alloc(32))) throw new PskError(`Secret ${ns}/${PSK_SECRET} key "${PSK_KEY}" is all zeros`);
  // canonical, as the pods' parser takes it (a last character with stray low bits decodes
  // to the same bytes leniently, and every pod would then refuse the psk file)
  if (!isKey32(v)) throw new PskError(`Secret ${ns}/${PSK_SECRET} key "${PSK_KEY}" is not a canonical base64 key (wg genpsk form)`);
  return v;
}

/** A namespace name (DNS-1123 label), as the API server checks it. */

/**
 * The psk Secret of namespace NS as YAML (`tenc k8s create-psk NS`): key PSK_KEY holds
 * "KEY\n" (the `wg genpsk` form parsePsk reads). For `kubectl create -f -`: apply would
 * copy the whole object, psk included, into its last-applied-configuration annotation.
 */
export function pskSecretManifest(ns: string, psk: string): string {
  if (!NAMESPACE_NAME.test(ns)) throw new RangeError(`namespace ${JSON.stringify(ns)} is not a namespace name (lowercase letters, digits, "-", at most 63)`);
  if (!isKey32(psk)) throw new RangeError('the psk is not a 32-byte base64 key');
  return [
    `# tenc's pre-shared key of namespace ${ns}: pipe into \`kubectl create -f -\` (not apply: see README)`,
    'apiVersion: v1',
    'kind: Secret',
    'metadata:',
    `  name: ${PSK_SECRET}`,
    `  namespace: ${ns}`,
    '  labels:',
    '    app.kubernetes.io/name: tenc',
    '    app.kubernetes.io/component: psk',
    'type: Opaque',
    'data:',
    `  ${PSK_KEY}: ${Buffer.from(`${psk}\n`).toString('base64')}`,
    '',
  ].join('\n');
}

/** Loads KUBECONFIG (a path), or the default chain: $KUBECONFIG, ~/.kube/config, in-cluster. */
export function loadKubeConfig(path?: string): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromDefault();
  if (!kc.getCurrentCluster()) throw new Error(`kubeconfig ${path ?? '(default)'}: no current cluster`);
  return kc;
}

const consoleLog: InformerLog = {
  warn: (f, m) => process.stderr.write(`${m} ${JSON.stringify(f)}\n`),
  info: () => {},
};

export class KubernetesRegistry implements Registry {
  private readonly log: InformerLog;
  private readonly core: CoreV1Api;
  private readonly custom: CustomObjectsApi;
  private readonly ns: Informer<V1Namespace>;
  private readonly podInf: Informer<V1Pod>;
  private readonly svcInf: Informer<V1Service>;
  private readonly epsInf: Informer<V1EndpointSlice>;
  private readonly peerInf: Informer<TencPeer>;
  private readonly policyInf: Informer<KubernetesObject>;
  private readonly all: Informer<any>[];
  private readonly listeners = new Map<string, Set<() => void>>();
  private readonly seen = new Set<string>();
  /** The TencPeers of a project found malformed at its last read, and why (warned once per problem). */
  private readonly badPeers = new Map<string, Map<string, string>>();
  private readonly psk = new Map<string, { value: string } | { error: string }>();
  private readonly pskDir: string;
  private pskTimer: NodeJS.Timeout | undefined;
  private healthTimer: NodeJS.Timeout | undefined;
  private pskRound: Promise<void> | null = null;
  private closed = false;

  constructor(
    readonly kc: KubeConfig,
    private readonly o: KubernetesRegistryOptions = {},
  ) {
    this.log = o.log ?? consoleLog;
    this.pskDir = o.pskDir ?? '/run/tenc/psk';
    this.core = kc.makeApiClient(CoreV1Api);
    this.custom = kc.makeApiClient(CustomObjectsApi);
    const disc = kc.makeApiClient(DiscoveryV1Api);
    const io = o.informer ?? {};
    const touch = (obj: KubernetesObject) => this.changed(obj.metadata?.namespace ?? '');
    this.ns = new Informer<V1Namespace>(
      'namespaces',
      kc,
      '/api/v1/namespaces',
      () => this.core.listNamespace({ labelSelector: `${PROTECT_LABEL}=true` }) as Promise<KubernetesListObject<V1Namespace>>,
      (obj) => {
        this.changed(obj.metadata?.name ?? '');
        this.refreshPsk();
      },
      this.log,
      { ...io, labelSelector: `${PROTECT_LABEL}=true` },
    );
    this.podInf = new Informer<V1Pod>('pods', kc, '/api/v1/pods', () => this.core.listPodForAllNamespaces() as Promise<KubernetesListObject<V1Pod>>, touch, this.log, io);
    this.svcInf = new Informer<V1Service>('services', kc, '/api/v1/services', () => this.core.listServiceForAllNamespaces() as Promise<KubernetesListObject<V1Service>>, touch, this.log, io);
    this.epsInf = new Informer<V1EndpointSlice>(
      'endpointslices',
      kc,
      '/apis/discovery.k8s.io/v1/endpointslices',
      () => disc.listEndpointSliceForAllNamespaces() as Promise<KubernetesListObject<V1EndpointSlice>>,
      touch,
      this.log,
      io,
    );
    this.peerInf = new Informer<TencPeer>(
      'tencpeers',
      kc,
      `/apis/${PEER_GROUP}/${PEER_VERSION}/${PEER_PLURAL}`,
      () => this.custom.listCustomObjectForAllNamespaces({ group: PEER_GROUP, version: PEER_VERSION, plural: PEER_PLURAL }) as Promise<KubernetesListObject<TencPeer>>,
      touch,
      this.log,
      io,
    );
    this.policyInf = new Informer<KubernetesObject>(
      'tencpolicies',
      kc,
      `/apis/${PEER_GROUP}/${PEER_VERSION}/${POLICY_PLURAL}`,
      () => this.custom.listCustomObjectForAllNamespaces({ group: PEER_GROUP, version: PEER_VERSION, plural: POLICY_PLURAL }) as Promise<KubernetesListObject<KubernetesObject>>,
      touch,
      this.log,
      io,
    );
    this.all = [this.ns, this.podInf, this.svcInf, this.epsInf, this.peerInf, this.policyInf];
    for (const i of this.all) i.start();
    this.refreshPsk();
    this.pskTimer = setInterval(() => this.refreshPsk(), o.pskRefreshMs ?? 30_000);
    this.pskTimer.unref?.();
    if (o.healthFile) {
      const write = () => this.writeHealth(o.healthFile!);
      write();
      this.healthTimer = setInterval(write, o.healthMs ?? 10_000);
      this.healthTimer.unref?.();
    }
  }

  private writeHealth(file: string): void {
    const stale = this.all.filter((i) => i.synced && !i.current).map((i) => i.what);
    const synced = this.all.every((i) => i.current);
    const body = JSON.stringify({ synced, ...(stale.length > 0 ? { stale } : {}), time: new Date().toISOString(), informers: this.stats() }) + '\n';
    try {
      const tmp = `${file}.tmp-${process.pid}`;
      writeFileSync(tmp, body, { mode: 0o644 });
      renameSync(tmp, file);
    } catch (e) {
      this.once(`health/${(e as NodeJS.ErrnoException).code}`, { file }, `kubernetes: cannot write the health file ${file}: ${(e as Error).message}`);
    }
  }

  /** Logs once per key. */
  private once(key: string, fields: Record<string, unknown>, msg: string): void {
    if (this.seen.has(key)) return;
    // keys name objects, and objects come and go: bounded, at the cost of a repeated line
    if (this.seen.size >= 1000) this.seen.clear();
    this.seen.add(key);
    this.log.warn(fields, `${msg} (logged once)`);
  }

  /**
   * Records one Warning Event for a missing or malformed psk Secret (called once per namespace and
   * problem, with the log line). core/v1 Event, not events.k8s.io/v1: `kubectl describe secret|namespace`
   * and `kubectl get events` show both, but core/v1 needs no second API group in RBAC or in the client,
   * and its source/reportingComponent fields are accepted by every supported API server.
   * The message names the Secret, the key and the problem, never the psk (PskError messages hold only
   * its length). Best effort: a failed POST is logged once and nothing waits for it.
   */
  private pskEvent(ns: string, problem: string, missing: boolean): void {
    const node = this.o.node ?? hostname();
    const now = new Date();
    const reason = missing ? 'TencPskMissing' : 'TencPskInvalid';
    const body: CoreV1Event = {
      metadata: { generateName: `${PSK_SECRET}.`, namespace: ns },
      involvedObject: missing
        ? { apiVersion: 'v1', kind: 'Namespace', name: ns }
        : { apiVersion: 'v1', kind: 'Secret', namespace: ns, name: PSK_SECRET },
      type: 'Warning',
      reason,
      message: `${problem}: key "${PSK_KEY}" of Secret ${ns}/${PSK_SECRET} is needed; the pods of namespace ${ns} stay closed`.slice(0, 1024),
      source: { component: EVENT_COMPONENT, host: node },
      reportingComponent: EVENT_COMPONENT,
      reportingInstance: `${EVENT_COMPONENT}-${node}`.slice(0, 128),
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    };
    this.core.createNamespacedEvent({ namespace: ns, body }).catch((e) => {
      this.once(`pskevent/${ns}/${errorKind(e)}`, { project: ns, reason }, `kubernetes: recording Event ${reason} in namespace ${ns} failed: ${describe(e)}`);
    });
  }

  private changed(ns: string): void {
    for (const fn of this.listeners.get(ns) ?? []) fn();
  }

  private async synced(...infs: Informer<any>[]): Promise<void> {
    const ms = this.o.syncTimeoutMs ?? 10_000;
    await Promise.all(infs.map((i) => i.waitSynced(ms)));
  }

  /** Informer counters (lists, 410s, errors, malformed events dropped), for tests and status. */
  stats(): Record<string, { lists: number; expired: number; errors: number; dropped: number; resourceVersion: string }> {
    return Object.fromEntries(this.all.map((i) => [i.what, { lists: i.lists, expired: i.expired, errors: i.errors, dropped: i.dropped, resourceVersion: i.resourceVersion() }]));
  }

  /**
   * Namespaces labelled for protection, also while they terminate: a pod sandbox
   * (re)started then must still be protected (a stalled finalizer keeps a namespace
   * terminating for as long as it likes), never passed through as unprotected.
   */
  async projects(): Promise<string[]> {
    await this.synced(this.ns);
    return this.ns
      .list()
      .filter((n) => n.metadata?.labels?.[PROTECT_LABEL] === 'true')
      .map((n) => n.metadata!.name!)
      .sort();
  }

  private podsRaw(project: string): readonly V1Pod[] {
    return this.podInf.list(project);
  }

  /**
   * The objects of one informer and project, read by objects.ts's rules (the etcd and
   * directory backends' too). What is left out in the ordinary course is left out
   * silently; a refused object, or a refused part of one, is logged once per problem;
   * an object whose reading throws is skipped, never the project's other objects.
   */
  private read<K extends KubernetesObject, T>(kind: 'pod' | 'service' | 'EndpointSlice', project: string, list: readonly K[], parse: (project: string, o: K, report: (why: string) => void) => T | string | null): { o: K; v: T }[] {
    const out: { o: K; v: T }[] = [];
    for (const o of list) {
      const name = o.metadata?.name;
      const say = (why: string) => this.once(`${kind}/${project}/${name}/${why}`, { project, [kind.toLowerCase()]: name }, `kubernetes ${kind} ${project}/${name}: ${why}`);
      const v = readObject(project, o, parse, say); // null: not scheduled yet, finished, headless, an FQDN slice, refused...
      if (v !== null) out.push({ o, v });
    }
    return out;
  }

  async pods(project: string): Promise<PodInfo[]> {
    await this.synced(this.podInf);
    return this.read('pod', project, this.podsRaw(project), podFromObject)
      .map(({ o, v }) => ({ ...v, netns: this.o.netnsOf?.({ project, name: v.name, node: v.node, uid: o.metadata?.uid ?? '' }) ?? null }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async services(project: string): Promise<ServiceInfo[]> {
    await this.synced(this.svcInf);
    return this.read('service', project, this.svcInf.list(project), serviceFromObject)
      .map(({ v }) => v)
      .sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /** The slices of one Service merged (the controller splits at 100 endpoints, and lists one slice per family). */
  async endpoints(project: string): Promise<EndpointsInfo[]> {
    await this.synced(this.epsInf);
    const slices = this.read('EndpointSlice', project, this.epsInf.list(project), endpointsFromObject).map(({ v }) => v);
    return mergeEndpoints(slices).sort((a, b) => (a.service < b.service ? -1 : 1));
  }

  async peers(project: string): Promise<PeerInfo[]> {
    await this.synced(this.peerInf, this.podInf);
    const out: PeerInfo[] = [];
    // warned once per TencPeer and problem, not per revision: a node rewriting its own
    // entry with a bad key would otherwise add a line (and a remembered key) each time;
    // what is no longer bad (fixed, deleted) is forgotten, so this stays as small as the
    // set of bad objects
    const wasBad = this.badPeers.get(project);
    const bad = new Map<string, string>();
    for (const t of this.peerInf.list(project)) {
      const name = t.metadata!.name!;
      const problem = peerProblem(t);
      if (problem !== null) {
        bad.set(name, problem);
        if (wasBad?.get(name) !== problem) this.log.warn({ project, tencpeer: name, problem }, `kubernetes TencPeer ${project}/${name}: ${problem}: ignored (logged once per problem)`);
        continue;
      }
      const s = t.spec as { nodeName: string; publicKey: string; endpoint: string }; // checked by peerProblem
      const pod = this.podInf.get(name, project);
      const owner = (t.metadata?.ownerReferences ?? []).find((r) => r?.kind === 'Pod' && r?.name === name);
      if (pod && (!owner || owner.uid !== pod.metadata?.uid)) continue; // left from an earlier pod of that name
      out.push({ project, pod: name, node: s.nodeName, publicKey: s.publicKey, endpoint: s.endpoint });
    }
    if (bad.size > 0) this.badPeers.set(project, bad);
    else this.badPeers.delete(project);
    return out;
  }

  async policies(project: string): Promise<PolicyObject[]> {
    // fails at once while the list fails (the agent keeps the policy set in force and
    // goes on with peers and services): with no TencPolicy CRD every list answers 404,
    // and waiting out syncTimeoutMs would delay every reconcile by that much
    try {
      await this.policyInf.waitSynced(this.o.syncTimeoutMs ?? 10_000, { failFast: true });
    } catch (e) {
      const cause = (e as { cause?: { code?: number; statusCode?: number } }).cause;
      if (cause?.code === 404 || cause?.statusCode === 404) throw new Error(`${(e as Error).message} (is the TencPolicy CRD, deploy/crd-tencpolicy.yaml, installed?)`, { cause });
      throw e;
    }
    return this.policyInf
      .list(project)
      .map((o) => ({ project, name: o.metadata!.name!, object: JSON.parse(JSON.stringify(o)) as unknown }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  private peerPath(project: string) {
    return { group: PEER_GROUP, version: PEER_VERSION, namespace: project, plural: PEER_PLURAL };
  }

  async publishPeer(peer: PeerInfo): Promise<void> {
    await this.synced(this.podInf, this.peerInf);
    if (!isKey32(peer.publicKey)) throw new RangeError('publishPeer: publicKey is not a 32-byte base64 key');
    if (!isEndpoint(peer.endpoint)) throw new RangeError(`publishPeer: endpoint ${JSON.stringify(peer.endpoint)} is not ip:port`);
    const node = parseNodeName(peer.node);
    if (!node.ok) throw new RangeError(`publishPeer: node: ${node.problem}`);
    const pod = this.podInf.get(peer.pod, peer.project);
    const uid = pod?.metadata?.uid;
    if (!pod || !uid) throw new Error(`publishPeer: pod ${peer.project}/${peer.pod} is not known to the API (yet)`);
    const spec = { nodeName: peer.node, publicKey: peer.publicKey, endpoint: peer.endpoint };
    const body = (resourceVersion?: string) => ({
      apiVersion: `${PEER_GROUP}/${PEER_VERSION}`,
      kind: PEER_KIND,
      metadata: {
        name: peer.pod,
        namespace: peer.project,
        ...(resourceVersion ? { resourceVersion } : {}),
        // no label naming the node: a label value holds 63 characters, a node's name 253;
        // the node is spec.nodeName, the field admission checks (kubectl get tp: column Node)
        // no blockOwnerDeletion: setting it would need update on pods/finalizers
        ownerReferences: [{ apiVersion: 'v1', kind: 'Pod', name: peer.pod, uid }],
      },
      spec,
    });
    const cur = this.peerInf.get(peer.pod, peer.project);
    const same = (t: TencPeer | undefined) =>
      !!t && t.spec?.nodeName === spec.nodeName && t.spec?.publicKey === spec.publicKey && t.spec?.endpoint === spec.endpoint && t.metadata?.ownerReferences?.[0]?.uid === uid;
    if (same(cur)) return;
    const p = this.peerPath(peer.project);
    for (let attempt = 0; ; attempt++) {
      try {
        let existing: TencPeer | undefined = attempt === 0 ? cur : undefined;
        if (attempt > 0) {
          try {
            existing = (await this.custom.getNamespacedCustomObject({ ...p, name: peer.pod })) as TencPeer;
          } catch (e) {
            if ((e as { code?: number }).code !== 404) throw e;
          }
        }
        if (existing) {
          if (same(existing)) return;
          await this.custom.replaceNamespacedCustomObject({ ...p, name: peer.pod, body: body(existing.metadata?.resourceVersion) });
        } else {
          await this.custom.createNamespacedCustomObject({ ...p, body: body() });
        }
        return;
      } catch (e) {
        const code = (e as { code?: number }).code;
        // 409: created or changed meanwhile (our cache was behind): read it and try again
        if ((code === 409 || code === 404) && attempt < 3) continue;
        throw new Error(`publishPeer ${peer.project}/${peer.pod}: ${describe(e)}`);
      }
    }
  }

  async withdrawPeer(project: string, node: string, pod: string): Promise<void> {
    await this.synced(this.peerInf);
    let cur = this.peerInf.get(pod, project);
    if (!cur) {
      // the watch may lag behind our own create: ask the server
      try {
        cur = (await this.custom.getNamespacedCustomObject({ ...this.peerPath(project), name: pod })) as TencPeer;
      } catch (e) {
        if ((e as { code?: number }).code === 404) return;
        throw new Error(`withdrawPeer ${project}/${pod}: ${describe(e)}`);
      }
    }
    if (cur.spec?.nodeName !== node) return; // nothing of ours
    try {
      await this.custom.deleteNamespacedCustomObject({ ...this.peerPath(project), name: pod, body: { preconditions: { uid: cur.metadata?.uid } } as any });
    } catch (e) {
      const code = (e as { code?: number }).code;
      if (code === 404 || code === 409) return; // gone already, or replaced by a newer one
      throw new Error(`withdrawPeer ${project}/${pod}: ${describe(e)}`);
    }
  }

  /** Reads every protected namespace's psk Secret again (one round at a time). */
  private refreshPsk(): void {
    if (this.closed || this.pskRound) return;
    this.pskRound = (async () => {
      if (!this.ns.synced) return;
      const names = new Set(this.ns.list().map((n) => n.metadata?.name).filter(str));
      for (const n of [...this.psk.keys()]) if (!names.has(n)) this.psk.delete(n);
      for (const ns of names) {
        let next: { value: string } | { error: string };
        try {
          const s = await this.core.readNamespacedSecret({ name: PSK_SECRET, namespace: ns });
          next = { value: parsePsk(s.data, ns) };
        } catch (e) {
          if (e instanceof PskError) next = { error: e.message };
          else if ((e as { code?: number }).code === 404) next = { error: `Secret ${ns}/${PSK_SECRET} does not exist (tenc k8s create-psk ${ns})` };
          else {
            // the API is unreachable: keep what we had
            this.once(`pskread/${ns}/${errorKind(e)}`, { project: ns }, `kubernetes: reading Secret ${ns}/${PSK_SECRET} failed: ${describe(e)}`);
            continue;
          }
        }
        const prev = this.psk.get(ns);
        if ('error' in next) {
          const key = `psk/${ns}/${next.error}`;
          if (!this.seen.has(key)) this.pskEvent(ns, next.error, next.error.endsWith(`does not exist (tenc k8s create-psk ${ns})`));
          this.once(key, { project: ns }, `kubernetes: ${next.error}: the pods of namespace ${ns} stay closed`);
        }
        this.psk.set(ns, next);
        const was = prev && 'value' in prev ? prev.value : null;
        const now = 'value' in next ? next.value : null;
        if (was !== now) this.changed(ns);
      }
    })().finally(() => {
      this.pskRound = null;
    });
  }

  async pskFile(project: string): Promise<string> {
    await this.synced(this.ns);
    if (!this.psk.has(project)) {
      this.refreshPsk();
      await this.pskRound;
      if (!this.psk.has(project)) {
        this.refreshPsk();
        await this.pskRound;
      }
    }
    const p = this.psk.get(project);
    if (!p) throw new PskError(`namespace ${project} is not protected (label ${PROTECT_LABEL}=true) or its psk was not read yet`);
    if ('error' in p) throw new PskError(p.error);
    mkdirSync(this.pskDir, { recursive: true, mode: 0o700 });
    const file = join(this.pskDir, `${project}.psk`);
    let old: string | null = null;
    try {
      old = readFileSync(file, 'utf8');
    } catch {
      /* not there yet */
    }
    if (old !== `${p.value}\n`) {
      const tmp = `${file}.tmp-${process.pid}`;
      writeFileSync(tmp, `${p.value}\n`, { mode: 0o600 });
      renameSync(tmp, file);
    }
    return file;
  }

  watch(project: string, onChange: () => void): Watch {
    let set = this.listeners.get(project);
    if (!set) this.listeners.set(project, (set = new Set()));
    const fn = () => onChange();
    set.add(fn);
    return {
      close: () => {
        set!.delete(fn);
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.pskTimer);
    clearInterval(this.healthTimer);
    for (const i of this.all) i.stop();
    this.listeners.clear();
    await this.pskRound;
  }
}
