/**
 * One project's reconciler inside the node agent (node.ts serves the node socket
 * and runs one of these per protected project). It
 *
 *   1. reads the project's pods, services, endpoints and published peers from the
 *      registry (on every registry change, and every second as a fallback);
 *   2. at CNI ADD makes the pod fail closed itself (prepare(): the rule, guards and
 *      nft table of failClosedScripts, from the config the pod will start with), then
 *      starts `tenc pod` in the network namespace of each pod the CNI plugin
 *      registered on this node (nsenter --net=NETNS; the netns comes only from the
 *      registration, never from the registry, and is entered only while the namespace
 *      at that path is the one registered: proxies.ts registeredNetns), with
 *      enforcement on and failClosedOnStop; a proxy that dies is started again (its new
 *      public key is published again);
 *   3. publishes each pod's public key and endpoint (never a private key: the pod
 *      proxies generate theirs in memory and print only the public key);
 *   4. gives every local pod its peers (every other project pod with a published
 *      key; allowed IPs: its addresses, /32 and /128 on a dual-stack cluster, plus
 *      every VIP of the services this client reaches through that endpoint) and its
 *      services (the VIPs it serves, each of a family it has an address of), over the pod's
 *      control socket: removals first, so a re-keyed pod never clashes with its old key;
 *      a key new to a pod makes it initiate a handshake at once (the new pod's own first
 *      initiation came before this pod knew it; the protocol retries only after 5 s);
 *      to a pod with the DNS proxy also the services' keyed endpoints (set-endpoints)
 *      and the project's members, every pod address and VIP (set-members);
 *   5. gives every local pod the project's TencPolicy set (set-policy), resolved and
 *      validated all or nothing by policies.ts (a refused update keeps the previous set).
 *
 * stop() leaves every proxy running with its key published (the pods stay protected
 * while the agent is away); release() (CNI DEL) stops one pod's proxy and cleans its netns.
 *
 * The parts, each a file below this one: desired.ts (what each pod should be told,
 * pure), proxies.ts (starting, adopting, restarting and stopping the pods' proxies,
 * tracked by pid and start time), netns.ts (fail closed before a proxy, clean after
 * it), policies.ts (the project's TencPolicy set).
 */
import { mkdirSync } from 'node:fs';
import { ControlClientError, controlRequest, socketIsLive } from '../control/socket.js';
import { keyFingerprint, silentLogger, type Logger } from '../log.js';
import { readProjectView, type PeerInfo, type PodInfo, type ProjectView, type Watch } from '../registry/registry.js';
import { desiredState, peerChanges, type DesiredPeer, type DesiredPod } from './desired.js';
import { failClosedIn, podSocket } from './netns.js';
import { ProjectPolicies } from './policies.js';
import { Proxies, TENC_PORT, registeredNetns, sameProcess, tencEndpoint, type Proxy, type ProxyId, type ProxyOptions, type Registration } from './proxies.js';

export const RECONCILE_MS = 1000;

/** ProxyOptions (proxies.ts) and where the pods come from. */
export interface AgentOptions extends ProxyOptions {
  /** The pods the CNI plugin registered on this node for this project. */
  registrations: () => Registration[];
}

type PublishFailed = NonNullable<Proxy['publishFailed']>;

/** Whether a publish of `mine` ("key endpoint") waits out the back-off of the last failure: only one of the same key and endpoint does. */
export function publishWaits(failed: PublishFailed | undefined, mine: string, now: number): boolean {
  return failed !== undefined && failed.mine === mine && now < failed.retryAt;
}

/** The back-off after a failed publish of `mine`: 1 s, doubling to 60 s while the same key and endpoint keep failing. */
export function publishFailure(prev: PublishFailed | undefined, mine: string, message: string, now: number): PublishFailed {
  const delayMs = prev?.mine === mine ? Math.min(60_000, prev.delayMs * 2) : 1000;
  return { mine, message, retryAt: now + delayMs, delayMs };
}

export class Agent {
  private readonly proxies: Proxies;
  private watch: Watch | null = null;
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  /** The reconcile in progress (stop waits for it, so a proxy being adopted or started is stopped too). */
  private current: Promise<void> | null = null;
  private again = false;
  private stopped = false;
  private readonly log: Logger;
  /** The project as the last reconcile saw it (this node's registered pods included): the configs of new pods. */
  private view: ProjectView | null = null;
  /** Pods being made fail closed by prepare(): their proxy starts after it. */
  private readonly preparing = new Map<string, Promise<void>>();
  /** Proxies being started (not adopted), by pod: the reconciles go on meanwhile (release and stop wait for them). */
  private readonly starting = new Map<string, Promise<void>>();
  /** Rejected published keys already reported (pod, node, reason): each logged and counted once. */
  private readonly rejectedSeen = new Set<string>();
  /** A published key not believed (a node publishing for another node's pod: threat T7): logged and counted once. */
  private readonly rejected = (k: PeerInfo, why: string): void => {
    const id = `${k.pod} ${k.node} ${why}`;
    if (this.rejectedSeen.has(id)) return;
    if (this.rejectedSeen.size >= 1024) this.rejectedSeen.clear(); // bounded: a flood is reported again, never kept
    this.rejectedSeen.add(id);
    let publicKey: string;
    try {
      publicKey = keyFingerprint(k.publicKey);
    } catch {
      publicKey = '(not a key)';
    }
    this.log.warn({ pod: k.pod, node: k.node, publicKey, why }, 'published key not believed');
    this.o.hooks?.peerRejected?.();
  };
  /**
   * Requests a pod refused, already logged (pod, op, peer, message): each logged once,
   * until that pod's op (for that peer) succeeds: a refusal coming back after that is
   * logged again.
   */
  private readonly refusedSeen = new Set<string>();
  /** The project's TencPolicy set in force. */
  readonly policies: ProjectPolicies;

  constructor(private readonly o: AgentOptions) {
    this.log = o.log ?? silentLogger;
    this.proxies = new Proxies(o, () => this.kick());
    this.policies = new ProjectPolicies(o.project, TENC_PORT, this.log);
  }

  async start(): Promise<void> {
    mkdirSync(this.o.runDir, { recursive: true, mode: 0o700 });
    this.watch = this.o.registry.watch(this.o.project, () => this.kick());
    this.timer = setInterval(() => this.kick(), RECONCILE_MS);
    this.kick();
  }

  /** Reconciles soon; calls arriving meanwhile collapse into one more run. */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    const t0 = performance.now();
    this.current = this.reconcile()
      .then(() => this.o.hooks?.reconciled(true, (performance.now() - t0) / 1000))
      .catch((e) => {
        this.o.hooks?.reconciled(false, (performance.now() - t0) / 1000);
        this.log.error({ err: (e as Error).message }, 'reconcile failed');
      })
      .finally(() => {
        this.o.hooks?.proxies([...this.proxies.values()].filter((p) => p.publicKey !== null).length, this.o.project);
        this.running = false;
        // a standby for the next pod, started when no start runs (it would slow them)
        if (!this.stopped && this.starting.size === 0) this.proxies.warmStandby();
        if (this.again) {
          this.again = false;
          setTimeout(() => this.kick(), 20);
        }
      });
  }

  /** The pod's proxy answers on its control socket: its rule, guards and enforcement are in place. */
  isReady(pod: string): boolean {
    const px = this.proxies.get(pod);
    return px !== undefined && px.publicKey !== null;
  }

  /** Resolves true once the pod is fail-closed, false after timeoutMs. */
  whenReady(pod: string, timeoutMs: number): Promise<boolean> {
    if (this.isReady(pod)) return Promise.resolve(true);
    return new Promise((resolve) => {
      let settled = false;
      const t = setTimeout(() => {
        settled = true;
        const px = this.proxies.get(pod);
        if (px) px.ready = px.ready.filter((f) => f !== done);
        resolve(false);
      }, timeoutMs);
      const done = () => {
        settled = true;
        clearTimeout(t);
        resolve(true);
      };
      // the proxy entry is made by the next reconcile: wait for it (not past the timeout)
      const attach = () => {
        if (settled) return;
        const px = this.proxies.get(pod);
        if (this.isReady(pod)) done();
        else if (px) px.ready.push(done);
        else if (!this.stopped) setTimeout(attach, 10);
      };
      attach();
      this.kick();
    });
  }

  /** The proxies' process ids, by pod (for the node agent's state file). */
  proxyIds(): Map<string, ProxyId | null> {
    return new Map([...this.proxies].map(([n, px]) => [n, px.id]));
  }

  /** The proxy's process and socket answer (CNI CHECK). */
  async check(pod: string): Promise<string | null> {
    const px = this.proxies.get(pod);
    if (!px || px.publicKey === null) return 'no running proxy for the pod';
    if (px.id !== null && !sameProcess(px.id.pid, px.id.startTime)) return `proxy pid ${px.id.pid} is gone`;
    if (!(await socketIsLive(px.socket))) return `proxy control socket ${px.socket} does not answer`;
    return null;
  }

  /**
   * CNI ADD: makes the pod fail closed in its netns before its proxy runs: the pod's
   * config is written, and failClosedScripts(config) (the rule, the guards and the
   * nftables table the proxy itself would put in place first) applied through one
   * `ip -batch -` per family and one `nft -f -`, started in NETNS (agent/netns.ts). The proxy is
   * started right after (the next reconcile) and takes that state over. Nothing is
   * done when the pod's proxy runs (it owns the state: an ADD retry, or a proxy adopted
   * after an agent restart). A proxy entry without a running proxy proves nothing (a
   * start that failed, waiting to be retried, may never have put anything in place):
   * a start under way is waited for, then the pod is made fail closed as at a first ADD.
   */
  prepare(reg: Registration): Promise<void> {
    const name = reg.podName;
    const px = this.proxies.get(name);
    if (px && px.reg.containerId !== reg.containerId) {
      // the proxy of the pod's last sandbox: its state is not this namespace's, and
      // nothing here would be fail-closed (the node agent refuses such an ADD first)
      return Promise.reject(new Error(`the proxy of its container ${px.reg.containerId} still runs: try again once it is released`));
    }
    if (this.isReady(name)) return Promise.resolve();
    const busy = this.preparing.get(name);
    if (busy) return busy;
    const p = this.prepareNow(reg).finally(() => {
      this.preparing.delete(name);
      this.kick();
    });
    this.preparing.set(name, p);
    return p;
  }

  private async prepareNow(reg: Registration): Promise<void> {
    // a start under way writes the config and puts its own state in place: not done beside it
    await this.starting.get(reg.podName);
    if (this.isReady(reg.podName)) return;
    const socket = podSocket(reg.netns);
    if (await socketIsLive(socket)) return; // a proxy answers there: it owns the state
    const base = this.view ?? this.localView(await readProjectView(this.o.registry, this.o.project, this.rejected));
    const known = base.pods.find((p) => p.name === reg.podName);
    const pod = this.podInfo(reg, known);
    const view = { ...base, pods: [...base.pods.filter((p) => p.name !== pod.name), pod] };
    const { config } = await this.proxies.writeConfig(pod, reg.netns, socket, view);
    // after the waits, before anything is put in the namespace: still the one registered
    if (!registeredNetns(reg)) throw new Error(`netns ${reg.netns} is gone or names another namespace than the pod's`);
    const guards = await failClosedIn(reg.netns, config);
    this.log.info({ pod: pod.name, guards, netns: reg.netns }, 'pod fail-closed (rule, guards, nftables) before its proxy starts');
  }

  /** The registry's view of the project with this node's running or starting pods as this agent knows them. */
  private localView(view: ProjectView): ProjectView {
    // a local pod's key: the one its running proxy has, as this agent knows it, whatever
    // the registry says (an old key there is not a peer; a key the registry lost, e.g. a
    // lease that expired while this node was cut off, does not part this node's pods)
    const own = [...this.proxies.values()]
      .filter((px) => px.publicKey !== null)
      .map((px) => ({ project: this.o.project, pod: px.pod.name, node: this.o.node, publicKey: px.publicKey!, endpoint: tencEndpoint(px.pod) }));
    const fresh = [...view.peers.filter((k) => !this.proxies.has(k.pod)), ...own];
    // this node's registered pods are members even before the registry lists them
    const pods = [...view.pods.filter((p) => !this.proxies.has(p.name)), ...[...this.proxies.values()].map((px) => px.pod)];
    return { ...view, pods, peers: fresh };
  }

  private podInfo(reg: Registration, known: PodInfo | undefined): PodInfo {
    return { project: this.o.project, name: reg.podName, node: this.o.node, address: reg.addresses[0], addresses: reg.addresses, labels: known?.labels ?? {}, netns: reg.netns };
  }

  /**
   * The pods registered here whose namespace is there (the registered one: registeredNetns),
   * and of those the ones the registry places on another node (displaced: left out of local).
   */
  private localPods(view: ProjectView): { local: { pod: PodInfo; reg: Registration }[]; displaced: Set<string> } {
    const local: { pod: PodInfo; reg: Registration }[] = [];
    const displaced = new Set<string>();
    for (const reg of this.o.registrations()) {
      // a pod whose namespace is gone (being deleted) counts as gone, and so does one whose
      // path names another namespace now (its pause process gone and the PID reused, its
      // netns name made again): no proxy is started or kept there
      if (!registeredNetns(reg)) continue;
      const known = view.pods.find((p) => p.name === reg.podName);
      if (known && known.node !== this.o.node) {
        this.log.warn({ pod: reg.podName, node: known.node }, 'registered here but the registry places the pod on another node: ignored');
        displaced.add(reg.podName);
        continue;
      }
      local.push({ reg, pod: this.podInfo(reg, known) });
    }
    return { local, displaced };
  }

  private async reconcile(): Promise<void> {
    const view = await readProjectView(this.o.registry, this.o.project, this.rejected);
    // a displaced pod, still registered here (its namespace exists) but placed on another node
    // by the registry (e.g. force-deleted while its containers still run here): its proxy
    // stops, but its namespace stays fail closed, never cleaned while the pod may still send
    const { local, displaced } = this.localPods(view);
    // pods no longer registered: release() did the work; anything left over is stopped here
    for (const name of [...this.proxies.keys()]) {
      if (local.some((l) => l.pod.name === name)) continue;
      await this.starting.get(name);
      await this.proxies.releaseNow(name, undefined, displaced.has(name));
    }
    const adoptions: Promise<void>[] = [];
    for (const { pod, reg } of local) {
      // being made fail closed by prepare(): started once that is done
      if (this.preparing.has(pod.name)) continue;
      let px = this.proxies.get(pod.name);
      if (!px) {
        px = { pod, reg, socket: podSocket(reg.netns), child: null, id: reg.proxy, publicKey: null, applied: new Map(), services: null, endpoints: null, members: null, dns: false, starting: false, restartAt: 0, ready: [], published: null, failure: null, failures: 0 };
        this.proxies.set(pod.name, px);
      }
      px.pod = pod;
      px.reg = reg;
      // an adopted proxy has no child to watch: look at its pid and start time, and at the
      // socket of one without a pid or in a pod host (the host lives on after one pod's exit);
      // a pod of a host this agent started is watched through the host's events for its exit,
      // and through its socket for a control plane that stopped answering while it runs (the
      // restart waits the start timeout for it to answer again, then has the host stop it)
      if (px.child === null && px.publicKey !== null) {
        if (px.hosted) {
          if (!(await socketIsLive(px.socket))) this.proxies.lost(px, 'control socket dead');
        } else {
          const idGone = px.id !== null && !sameProcess(px.id.pid, px.id.startTime);
          if (idGone || ((px.id === null || px.id.hosted === true) && !(await socketIsLive(px.socket)))) this.proxies.lost(px, 'adopted proxy gone');
        }
      }
      if (px.publicKey === null && !px.starting && !this.starting.has(pod.name) && Date.now() >= px.restartAt) {
        // a proxy found running (an agent restart) is adopted in this reconcile: its key,
        // still the registry's, must not drop out of the other pods' peers while it is
        if (await socketIsLive(px.socket)) adoptions.push(this.proxies.ensureProxy(px, this.localView(view)));
        else this.startProxy(px, view);
      }
    }
    await Promise.all(adoptions);
    // publish keys (again, if the file was lost), then peers and services
    const published = new Map(view.peers.map((k) => [k.pod, k]));
    for (const px of this.proxies.values()) {
      if (px.publicKey === null) continue;
      const endpoint = tencEndpoint(px.pod);
      const k = published.get(px.pod.name);
      const mine = `${px.publicKey} ${endpoint}`;
      // published again when it changed, or when the registry knows the pod but lost or
      // altered its entry; a pod the registry does not list yet is not retried in a loop
      const known = view.pods.some((p) => p.name === px.pod.name);
      if (px.published !== mine || (known && (!k || k.publicKey !== px.publicKey || k.endpoint !== endpoint || k.node !== this.o.node))) {
        // the back-off is for this key and endpoint: a new key (a restarted proxy) goes at once
        if (publishWaits(px.publishFailed, mine, Date.now())) continue;
        // one pod's refused publish (a 403 on a TencPeer another node holds, the registry
        // down) holds up neither the other pods' publishes nor the peers, services and
        // policies below (the registry's errors are counted: tenc_agent_registry_errors_total)
        try {
          await this.o.registry.publishPeer({ project: this.o.project, pod: px.pod.name, node: this.o.node, publicKey: px.publicKey, endpoint });
        } catch (e) {
          const message = (e as Error).message;
          if (px.publishFailed?.message !== message) this.log.warn({ pod: px.pod.name, err: message }, 'cannot publish the pod\'s public key: tried again with back-off');
          px.publishFailed = publishFailure(px.publishFailed, mine, message, Date.now());
          continue;
        }
        px.published = mine;
        px.publishFailed = undefined;
        this.log.info({ pod: px.pod.name, publicKey: keyFingerprint(px.publicKey) }, 'public key published');
        // the view is stale now: the next run sees the new key
        this.again = true;
      }
    }
    const v2 = this.localView(view);
    this.view = v2;
    await this.policies.refresh(this.o.registry.policies && (() => this.o.registry.policies!(this.o.project)), v2);
    // every pod at once: each pod's requests stay in order, but one pod's round trips
    // (a proxy slow to answer on a loaded node) do not delay the next pod's new peer
    await Promise.all(
      [...this.proxies.values()].map(async (px) => {
        if (px.publicKey === null) return;
        try {
          await this.apply(px, desiredState(v2, px.pod));
          await this.applyPolicy(px);
        } catch (e) {
          this.log.warn({ pod: px.pod.name, err: (e as Error).message }, 'cannot configure pod proxy');
          // a proxy not answering: check it is alive (an adopted one has no child to watch)
          if (!px.child && !(await socketIsLive(px.socket))) this.proxies.lost(px, 'control socket dead');
        }
      }),
    );
  }

  /**
   * Starts the pod's proxy without holding up this reconcile (a pod being started has no
   * key in localView: its old one, if any, was a lost proxy's): a start takes
   * about a second (seconds on a loaded node, up to START_TIMEOUT_MS twice), and meanwhile the
   * node's other pods are still told their new peers. The next reconcile, kicked when
   * it is done, publishes its key and configures it.
   */
  private startProxy(px: Proxy, view: ProjectView): void {
    const name = px.pod.name;
    const p = this.proxies
      .ensureProxy(px, this.localView(view))
      .catch((e) => this.log.error({ pod: name, err: (e as Error).message }, 'proxy start failed'))
      .finally(() => {
        this.starting.delete(name);
        this.kick();
      });
    this.starting.set(name, p);
  }

  /**
   * Sends the pod what changed. A request the pod refuses (it answered with an error: a
   * value it does not take) holds up nothing else: it is logged once and left unapplied
   * (tried again at the next reconcile), and the other peers, the services, endpoints and
   * members still go. A socket that fails (the proxy gone or silent) ends apply() as before.
   */
  private async apply(px: Proxy, want: DesiredPod): Promise<void> {
    const { remove, set } = peerChanges(px.applied, want.peers);
    /** What a refusal's id starts with: the pod, the op, the peer. */
    const refusedAt = (op: string, peer?: string): string => `${px.pod.name} ${op} ${peer ?? ''} `;
    /** The op succeeded: its refusals (for that peer) are forgotten, logged again if they return. */
    const accepted = (op: string, peer?: string): void => {
      if (this.refusedSeen.size === 0) return;
      const at = refusedAt(op, peer);
      for (const id of this.refusedSeen) if (id.startsWith(at)) this.refusedSeen.delete(id);
    };
    /** A request the pod answered with an error: logged once; anything else (the socket failed) is thrown. */
    const refused = (e: unknown, op: string, peer?: string): void => {
      if (!(e instanceof ControlClientError) || !e.answered) throw e;
      const id = `${refusedAt(op, peer)}${e.code} ${e.message}`;
      if (this.refusedSeen.has(id)) return;
      if (this.refusedSeen.size >= 1024) this.refusedSeen.clear(); // bounded: logged again, never kept
      this.refusedSeen.add(id);
      this.log.warn({ pod: px.pod.name, op, ...(peer ? { peer: keyFingerprint(peer) } : {}), code: e.code, err: e.message }, 'pod refused a request: the others still go (logged once)');
    };
    /** Sends a request; false when the pod refused it. */
    const send = async (req: { op: string } & Record<string, unknown>, peer?: string): Promise<boolean> => {
      try {
        await controlRequest(px.socket, req);
        accepted(req.op, peer);
        return true;
      } catch (e) {
        refused(e, req.op, peer);
        return false;
      }
    };
    for (const key of remove) {
      try {
        await controlRequest(px.socket, { op: 'remove-peer', publicKey: key });
        accepted('remove-peer', key);
      } catch (e) {
        // ENOENT: the pod has no such peer (gone already)
        if ((e as { code?: string }).code !== 'ENOENT') {
          refused(e, 'remove-peer', key);
          continue;
        }
      }
      px.applied.delete(key);
      this.log.info({ pod: px.pod.name, peer: keyFingerprint(key) }, 'peer removed');
    }
    // an allowed IP (a VIP) moving from one peer to another: first take it from the
    // old one, else the new one's set-peer would clash with it
    for (const d of set) {
      const before = px.applied.get(d.publicKey);
      if (!before) continue;
      const old = (JSON.parse(before) as DesiredPeer).allowedIps;
      const kept = old.filter((ip) => d.allowedIps.includes(ip));
      if (kept.length < old.length && (await send({ op: 'set-peer', peer: { publicKey: d.publicKey, allowedIps: kept } }, d.publicKey))) {
        px.applied.set(d.publicKey, JSON.stringify({ ...d, allowedIps: kept }));
      }
    }
    const rekeys: Promise<unknown>[] = [];
    for (const d of set) {
      const fresh = !px.applied.has(d.publicKey);
      if (!(await send({ op: 'set-peer', peer: { publicKey: d.publicKey, endpoint: d.endpoint, allowedIps: d.allowedIps } }, d.publicKey))) continue;
      px.applied.set(d.publicKey, JSON.stringify(d));
      this.log.info({ pod: px.pod.name, peer: keyFingerprint(d.publicKey), allowedIps: d.allowedIps }, 'peer set');
      // A key new to this pod is usually a pod that just started with its peers in its
      // config: its first initiation reached this pod before this pod knew it and was
      // dropped, and the protocol lets it retry only after REKEY_TIMEOUT (5 s). This
      // pod initiates now instead (one handshake; ignored if it cannot), without
      // holding up the next peer's set-peer (awaited below, before apply returns).
      if (fresh) rekeys.push(controlRequest(px.socket, { op: 'rekey', publicKey: d.publicKey }).catch(() => undefined));
    }
    await Promise.all(rekeys);
    const services = JSON.stringify(want.services);
    if (services !== px.services && (await send({ op: 'set-services', services: want.services }))) {
      px.services = services;
      this.log.info({ pod: px.pod.name, services: want.services.map((s) => s.vip) }, 'services set');
    }
    const endpoints = JSON.stringify(want.endpoints);
    if (px.dns && endpoints !== px.endpoints && (await send({ op: 'set-endpoints', endpoints: want.endpoints }))) {
      px.endpoints = endpoints;
      this.log.info({ pod: px.pod.name, vips: want.endpoints.length }, 'endpoints set');
    }
    const members = JSON.stringify(want.members);
    if (members !== px.members && (await send({ op: 'set-members', members: want.members }))) {
      px.members = members;
      this.log.info({ pod: px.pod.name, members: want.members.length }, 'members set');
    }
  }

  /** The policy set in force, as this pod is told it (set-policy when it changed). */
  private async applyPolicy(px: Proxy): Promise<void> {
    const policies = this.policies.forPod(px.pod.name);
    const json = JSON.stringify(policies);
    if (json === px.policy) return;
    await controlRequest(px.socket, { op: 'set-policy', policies });
    px.policy = json;
    this.log.info({ pod: px.pod.name, policies: policies.map((p) => p.name) }, 'policies set');
  }

  /**
   * CNI DEL: stops the pod's proxy (SIGTERM, up to 5 s, then SIGKILL; only the process
   * the agent started), withdraws its key and removes what tenc left in the netns (the
   * proxy fails closed on stop, so its rule, guards and nft table stay until here), if
   * the netns at the registration's path is still the registered one.
   */
  async release(pod: string, reg?: Pick<Registration, 'netns' | 'netnsId'>): Promise<void> {
    // let a prepare() or a reconcile that may be starting the proxy finish first
    await this.preparing.get(pod)?.catch(() => undefined);
    while (this.running) await this.current;
    await this.starting.get(pod);
    await this.proxies.releaseNow(pod, reg);
  }

  /**
   * Stops reconciling. The proxies keep running, fail-closed and with their keys
   * published: a restarted agent adopts them (the node agent saved their pids).
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.proxies.stopStandby();
    this.watch?.close();
    if (this.timer) clearInterval(this.timer);
    await this.current;
    // a proxy being started: its pid is saved (onProxyChange) before the agent goes
    await Promise.all(this.starting.values());
    this.log.info({ pods: this.proxies.size }, 'reconciler stopped; proxies left running');
  }
}
