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
 *      registration, never from the registry), with enforcement on and
 *      failClosedOnStop; a proxy that dies is started again (its new public key is
 *      published again);
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
 * Proxies are tracked by pid and start time (/proc/PID/stat field 22), never by
 * command line. A proxy found running at start (the agent was restarted) is adopted
 * through its control socket and the pid + start time the node agent saved. stop()
 * leaves every proxy running with its key published (the pods stay protected while
 * the agent is away); release() (CNI DEL) stops one pod's proxy and cleans its netns.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, renameSync, writeFileSync, rmSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_INTERFACE, DEFAULT_RULE_PRIORITY, DEFAULT_SOCKET_DIR, DEFAULT_TABLE, ConfigError, validateConfig, type PodConfig, type ServiceConfig } from '../control/config.js';
import { failClosedScripts } from '../control/failclosed.js';
import { podSpawnArgs } from './pod-exec.js';
import { tableName } from '../routing/enforce.js';
import { IpCommand, IpCommandError } from '../routing/ip.js';
import { controlRequest, socketIsLive } from '../control/socket.js';
import type { StatusReport } from '../control/status.js';
import type { AgentHooks } from '../metrics/agent.js';
import { keyFingerprint, silentLogger, type Logger } from '../log.js';
import { mergeEndpoints, readProjectView, type PodInfo, type ProjectView, type Registry, type ServiceInfo, type Watch } from '../registry/registry.js';
import { ProjectPolicies } from './policies.js';

export const TENC_PORT = 51820;
export const RECONCILE_MS = 1000;
export const RESTART_DELAY_MS = 200;

export interface DesiredPeer {
  publicKey: string;
  endpoint: string;
  allowedIps: string[];
}

export interface DesiredPod {
  peers: DesiredPeer[];
  services: { vip: string; ports: ServiceConfig['ports'] }[];
  /** For the pod's DNS proxy: each VIP's endpoints that have a key (the pod itself included). */
  endpoints: { vip: string; addresses: string[] }[];
  /**
   * For the pod's DNS proxy: every project pod address and service VIP, with a key or
   * not (set-members), so first-use classification never takes one for another
   * project's: without a peer it is dropped, not bypassed in plaintext.
   */
  members: string[];
}

/** An address as a host route: /32 for IPv4, /128 for IPv6. */
export function host(addr: string): string {
  return `${addr}/${addr.includes(':') ? 128 : 32}`;
}

/** Where a pod's proxy listens: its primary address, tenc's port (what the agent publishes). */
function tencEndpoint(p: PodInfo): string {
  return `${p.address.includes(':') ? `[${p.address}]` : p.address}:${TENC_PORT}`;
}

/** Every address of a pod (dual-stack: one per family), primary first. */
function podAddresses(p: PodInfo): string[] {
  return p.addresses && p.addresses.length > 0 ? p.addresses : [p.address];
}

function pick<T>(client: string, service: string, items: T[]): T {
  const h = createHash('sha256').update(`${client}/${service}`).digest();
  return items[h.readUInt32BE(0) % items.length];
}

/**
 * What each pod of the project should be told, from one view of the registry. Pure.
 * A service VIP is routed, per client, to one of its endpoints that has a key
 * (spread by a hash of client and service); a pod never routes its own VIP.
 */
export function desiredState(view: ProjectView, pod: PodInfo): DesiredPod {
  const podNames = new Set(view.pods.map((p) => p.name));
  const keyed = new Map(view.peers.filter((k) => podNames.has(k.pod)).map((k) => [k.pod, k]));
  const peers = new Map<string, DesiredPeer>();
  for (const p of view.pods) {
    const k = keyed.get(p.name);
    if (!k || p.name === pod.name) continue;
    peers.set(p.name, { publicKey: k.publicKey, endpoint: k.endpoint, allowedIps: podAddresses(p).map(host) });
  }
  const byName = new Map(view.pods.map((p) => [p.name, p]));
  const services: DesiredPod['services'] = [];
  const endpoints: DesiredPod['endpoints'] = [];
  for (const s of view.services) {
    const eps = mergeEndpoints(view.endpoints.filter((e) => e.service === s.name))[0]?.pods ?? [];
    const vips = serviceVips(s);
    // each VIP's endpoints in its own family (a dual-stack service: the IPv6 VIP leads to the pods' IPv6 addresses)
    for (const vip of vips) {
      const fam = isIP(vip);
      const keyedEps = eps
        .filter((e) => keyed.has(e.name))
        .flatMap((e) => [e.address, ...(byName.get(e.name) ? podAddresses(byName.get(e.name)!) : [])].filter((a) => isIP(a) === fam).slice(0, 1))
        .sort();
      if (keyedEps.length > 0) endpoints.push({ vip, addresses: keyedEps });
    }
    if (eps.some((e) => e.name === pod.name)) {
      // a VIP the pod has no address of its family for is not served (the pod could not answer it)
      for (const vip of vips) if (podAddresses(pod).some((a) => isIP(a) === isIP(vip))) services.push({ vip, ports: s.ports });
      continue;
    }
    const usable = eps.filter((e) => peers.has(e.name)).sort((a, b) => a.name.localeCompare(b.name));
    if (usable.length === 0) continue;
    // every VIP of the service through the same endpoint pod
    peers.get(pick(pod.name, s.name, usable).name)!.allowedIps.push(...vips.map(host));
  }
  const members = [...new Set([...view.pods.flatMap((p) => podAddresses(p).map(host)), ...view.services.flatMap((s) => serviceVips(s).map(host))])].sort();
  return { peers: [...peers.values()].sort((a, b) => a.publicKey.localeCompare(b.publicKey)), services, endpoints, members };
}

/** Every cluster IP of a service, primary first. */
export function serviceVips(s: ServiceInfo): string[] {
  return s.vips && s.vips.length > 0 ? s.vips : [s.vip];
}

/** The control requests that turn `applied` into `desired`: removals first. */
export function peerChanges(applied: Map<string, string>, desired: DesiredPeer[]): { remove: string[]; set: DesiredPeer[] } {
  const want = new Map(desired.map((d) => [d.publicKey, d]));
  const remove = [...applied.keys()].filter((k) => !want.has(k));
  const set = desired.filter((d) => applied.get(d.publicKey) !== JSON.stringify(d));
  return { remove, set };
}

/**
 * The pod's default control socket (/run/tenc/tenc0-<netns inode>.sock), so that
 * `ip netns exec POD tenc status` finds it like any pod's.
 */
export function podSocket(netns: string): string {
  return join(DEFAULT_SOCKET_DIR, `tenc0-${statSync(netns).ino}.sock`);
}

/** process.kill without throwing: true when the signal was delivered (0: the process exists). */
function signal(pid: number, sig: NodeJS.Signals | 0): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** The process exists and is not a zombie (an adopted proxy's parent may not reap it). */
export function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** SIGTERM, up to 5 s, then SIGKILL; each signal only while pid is still the process that had startTime. */
async function stopPid(pid: number, startTime: string): Promise<void> {
  if (!sameProcess(pid, startTime) || !signal(pid, 'SIGTERM')) return;
  for (let i = 0; i < 250 && sameProcess(pid, startTime); i++) await new Promise((r) => setTimeout(r, 20));
  if (sameProcess(pid, startTime)) signal(pid, 'SIGKILL');
  for (let i = 0; i < 50 && sameProcess(pid, startTime); i++) await new Promise((r) => setTimeout(r, 20));
}

/** The process runs in the network namespace of that nsfs path (same inode). */
export function inNetns(pid: number, netns: string): boolean {
  try {
    const a = statSync(`/proc/${pid}/ns/net`);
    const b = statSync(netns);
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}

/** Field 22 of /proc/PID/stat (start time in clock ticks since boot), or null: with the pid it names one process for good. */
export function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // fields after the command name (which may hold spaces and parentheses): field 3 is state
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[22 - 3] ?? null;
  } catch {
    return null;
  }
}

/** The process pid is still the one that had startTime (and is not a zombie). */
export function sameProcess(pid: number, startTime: string): boolean {
  return processAlive(pid) && processStartTime(pid) === startTime;
}

/** A child the agent started, named for good. */
export interface ProxyId {
  pid: number;
  startTime: string;
}

/** /etc/netns/NAME/resolv.conf for /run/netns/NAME, if it exists. */
export function podResolvConf(netns: string): string | null {
  const m = /^\/run\/netns\/([^/]+)$/.exec(netns);
  if (!m) return null;
  const f = `/etc/netns/${m[1]}/resolv.conf`;
  return existsSync(f) ? f : null;
}

/** A pod the CNI plugin registered on this node (the only source of a netns path). */
export interface Registration {
  containerId: string;
  netns: string;
  ifname: string;
  podNamespace: string;
  podName: string;
  podUid: string;
  /** The pod's addresses from the CNI prevResult, primary first. */
  addresses: string[];
  /** The proxy the agent started for it (pid + start time), once started. */
  proxy: ProxyId | null;
}

interface Proxy {
  pod: PodInfo;
  reg: Registration;
  socket: string;
  child: ChildProcess | null;
  /** The proxy's process (our child, or adopted from the saved state); null: unknown. */
  id: ProxyId | null;
  publicKey: string | null;
  /** publicKey -> JSON of what was applied. */
  applied: Map<string, string>;
  services: string | null;
  /** JSON of the endpoints given to the DNS proxy; null: not yet (or the pod runs no DNS proxy: dns false). */
  endpoints: string | null;
  /** JSON of the members given to the DNS proxy (set-members); null: not yet. */
  members: string | null;
  dns: boolean;
  starting: boolean;
  restartAt: number;
  /** Waiters for the pod's fail-closed state (its proxy answers on its control socket). */
  ready: (() => void)[];
  /** "key endpoint" last published for the pod; null: not yet. */
  published: string | null;
  /** JSON of the policies given to the pod (set-policy); null: not yet. */
  policy?: string | null;
}

export interface AgentOptions {
  registry: Registry;
  node: string;
  project: string;
  /** The pods the CNI plugin registered on this node for this project. */
  registrations: () => Registration[];
  /** Called when a proxy's process id changes (the node agent saves its state). */
  onProxyChange?: () => void;
  /** Directory (created 0700) for the pods' configs and logs. */
  runDir: string;
  log?: Logger;
  /** The tenc CLI to start pods with; default this package's dist/src/cli/main.js. */
  tencMain?: string;
  /** Log level of the pod proxies. */
  podLogLevel?: string;
  /** Run the pods' DNS proxy (when /etc/netns/<netns name>/resolv.conf exists); default true. */
  dns?: boolean;
  /** The pods' dns.classifyCidrs (cluster ranges classified on first use); default none. */
  classifyCidrs?: string[];
  /** Metrics hooks (src/metrics/agent.ts); default none. */
  hooks?: AgentHooks;
}

/** The file names of a pod under runDir (the pod's config and log). */
function podFile(runDir: string, pod: string, ext: string): string {
  return join(runDir, `${pod}.${ext}`);
}

export class Agent {
  private readonly proxies = new Map<string, Proxy>();
  private watch: Watch | null = null;
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  /** The reconcile in progress (stop waits for it, so a proxy being adopted or started is stopped too). */
  private current: Promise<void> | null = null;
  private again = false;
  private stopped = false;
  private readonly log: Logger;
  private readonly main: string;
  /** The project as the last reconcile saw it (this node's registered pods included): the configs of new pods. */
  private view: ProjectView | null = null;
  /** Pods being made fail closed by prepare(): their proxy starts after it. */
  private readonly preparing = new Map<string, Promise<void>>();
  /** The project's TencPolicy set in force. */
  readonly policies: ProjectPolicies;

  constructor(private readonly o: AgentOptions) {
    this.log = o.log ?? silentLogger;
    this.main = o.tencMain ?? fileURLToPath(new URL('../cli/main.js', import.meta.url));
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
   * `nsenter --net=NETNS ip -batch -` per family and one `nft -f -`. The proxy is
   * started right after (the next reconcile) and takes that state over. Nothing is
   * done when the pod's proxy runs or starts already (it owns the state: an ADD retry,
   * or a proxy adopted after an agent restart).
   */
  prepare(reg: Registration): Promise<void> {
    const name = reg.podName;
    if (this.proxies.has(name)) return Promise.resolve();
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
    const socket = podSocket(reg.netns);
    if (await socketIsLive(socket)) return; // a proxy answers there: it owns the state
    const base = this.view ?? this.localView(await readProjectView(this.o.registry, this.o.project));
    const known = base.pods.find((p) => p.name === reg.podName);
    const pod = this.podInfo(reg, known);
    const view = { ...base, pods: [...base.pods.filter((p) => p.name !== pod.name), pod] };
    const { config } = await this.writeConfig(pod, reg.netns, socket, view);
    const s = failClosedScripts(config);
    const via = ['nsenter', `--net=${reg.netns}`, '--'];
    const ip = new IpCommand({ via });
    await Promise.all([guardBatchIn(ip, 4, s.ip[4]), guardBatchIn(ip, 6, s.ip[6]), nftIn(via, s.nft)]);
    this.log.info({ pod: pod.name, guards: s.ip[4].length + s.ip[6].length, netns: reg.netns }, 'pod fail-closed (rule, guards, nftables) before its proxy starts');
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
   * Writes the pod's config (0600, atomically) for `tenc pod`: its peers, services and
   * members as `view` has them, so the proxy starts with what the agent would send it
   * (and fails closed for all of it from its first step). A config that does not
   * validate with them (never expected) is written without them, and they follow over
   * the control socket.
   */
  private async writeConfig(pod: PodInfo, netns: string, socket: string, view: ProjectView): Promise<{ config: PodConfig; want: DesiredPod | null; dns: boolean }> {
    const psk = await this.o.registry.pskFile(this.o.project);
    const file = podFile(this.o.runDir, pod.name, 'json');
    // the DNS proxy, when the pod has a resolv.conf of its own (ip netns exec mounts
    // /etc/netns/NAME/resolv.conf; nsenter --net does not, so the path is given)
    const resolvConf = this.o.dns === false ? null : podResolvConf(netns);
    const want = desiredState(view, pod);
    const raw = (w: DesiredPod | null) => ({
      addresses: pod.addresses.slice(0, 2),
      listenPort: TENC_PORT,
      pskFile: psk,
      controlSocket: socket,
      enforce: true,
      // any stop (agent gone, crash, SIGTERM) leaves the rule, guards and enforcement
      failClosedOnStop: true,
      logLevel: this.o.podLogLevel ?? 'info',
      ...(resolvConf
        ? { dns: { domain: `${this.o.project}.svc.cluster.local`, resolvConf, classifyCidrs: this.o.classifyCidrs ?? [], ...(w ? { endpoints: w.endpoints } : {}) } }
        : {}),
      ...(w ? { peers: w.peers, services: w.services, members: w.members } : {}),
    });
    let chosen: DesiredPod | null = want;
    let config: PodConfig;
    try {
      config = validateConfig(raw(want), file);
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      this.log.warn({ pod: pod.name, err: e.message }, 'pod config with its peers does not validate: they follow over the control socket');
      chosen = null;
      config = validateConfig(raw(null), file);
    }
    const tmp = `${file}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify(raw(chosen)), { mode: 0o600 });
    renameSync(tmp, file);
    return { config, want: chosen, dns: resolvConf !== null };
  }

  private localPods(view: ProjectView): { pod: PodInfo; reg: Registration }[] {
    const out: { pod: PodInfo; reg: Registration }[] = [];
    for (const reg of this.o.registrations()) {
      // a pod whose namespace is gone (being deleted) counts as gone
      if (!existsSync(reg.netns)) continue;
      const known = view.pods.find((p) => p.name === reg.podName);
      if (known && known.node !== this.o.node) {
        this.log.warn({ pod: reg.podName, node: known.node }, 'registered here but the registry places the pod on another node: ignored');
        continue;
      }
      out.push({ reg, pod: this.podInfo(reg, known) });
    }
    return out;
  }

  private async reconcile(): Promise<void> {
    const view = await readProjectView(this.o.registry, this.o.project);
    const local = this.localPods(view);
    // pods no longer registered: release() did the work; anything left over is stopped here
    for (const name of [...this.proxies.keys()]) {
      if (!local.some((l) => l.pod.name === name)) await this.releaseNow(name);
    }
    const starts: (() => Promise<void>)[] = [];
    for (const { pod, reg } of local) {
      // being made fail closed by prepare(): started once that is done
      if (this.preparing.has(pod.name)) continue;
      let px = this.proxies.get(pod.name);
      if (!px) {
        px = { pod, reg, socket: podSocket(reg.netns), child: null, id: reg.proxy, publicKey: null, applied: new Map(), services: null, endpoints: null, members: null, dns: false, starting: false, restartAt: 0, ready: [], published: null };
        this.proxies.set(pod.name, px);
      }
      px.pod = pod;
      px.reg = reg;
      // an adopted proxy has no child to watch: look at its pid and start time
      if (px.child === null && px.publicKey !== null && (px.id === null || !sameProcess(px.id.pid, px.id.startTime))) {
        if (px.id !== null || !(await socketIsLive(px.socket))) this.lost(px, 'adopted proxy gone');
      }
      if (px.publicKey === null && !px.starting && Date.now() >= px.restartAt) {
        const p = px;
        starts.push(() => this.ensureProxy(p, this.localView(view)));
      }
    }
    // in parallel: a proxy takes about a second to start
    await Promise.all(starts.map((f) => f()));
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
        px.published = mine;
        await this.o.registry.publishPeer({ project: this.o.project, pod: px.pod.name, node: this.o.node, publicKey: px.publicKey, endpoint });
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
          if (!px.child && !(await socketIsLive(px.socket))) this.lost(px, 'control socket dead');
        }
      }),
    );
  }

  private async apply(px: Proxy, want: DesiredPod): Promise<void> {
    const { remove, set } = peerChanges(px.applied, want.peers);
    for (const key of remove) {
      try {
        await controlRequest(px.socket, { op: 'remove-peer', publicKey: key });
      } catch (e) {
        if ((e as { code?: string }).code !== 'ENOENT') throw e;
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
      if (kept.length < old.length) {
        await controlRequest(px.socket, { op: 'set-peer', peer: { publicKey: d.publicKey, allowedIps: kept } });
        px.applied.set(d.publicKey, JSON.stringify({ ...d, allowedIps: kept }));
      }
    }
    const rekeys: Promise<unknown>[] = [];
    for (const d of set) {
      const fresh = !px.applied.has(d.publicKey);
      await controlRequest(px.socket, { op: 'set-peer', peer: { publicKey: d.publicKey, endpoint: d.endpoint, allowedIps: d.allowedIps } });
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
    if (services !== px.services) {
      await controlRequest(px.socket, { op: 'set-services', services: want.services });
      px.services = services;
      this.log.info({ pod: px.pod.name, services: want.services.map((s) => s.vip) }, 'services set');
    }
    const endpoints = JSON.stringify(want.endpoints);
    if (px.dns && endpoints !== px.endpoints) {
      await controlRequest(px.socket, { op: 'set-endpoints', endpoints: want.endpoints });
      px.endpoints = endpoints;
      this.log.info({ pod: px.pod.name, vips: want.endpoints.length }, 'endpoints set');
    }
    const members = JSON.stringify(want.members);
    if (members !== px.members) {
      await controlRequest(px.socket, { op: 'set-members', members: want.members });
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

  /** Adopts a live proxy (agent restart) or starts one. Runs inside reconcile (one at a time). */
  private async ensureProxy(px: Proxy, view: ProjectView): Promise<void> {
    px.starting = true;
    try {
      if (await socketIsLive(px.socket)) await this.adopt(px);
      else await this.startProxy(px, view);
    } catch (e) {
      this.log.warn({ pod: px.pod.name, err: (e as Error).message }, 'proxy start failed');
      this.lost(px, 'start failed');
    } finally {
      px.starting = false;
    }
    if (px.publicKey !== null) for (const f of px.ready.splice(0)) f();
  }

  private async adopt(px: Proxy): Promise<void> {
    const st = (await controlRequest(px.socket, { op: 'status' })) as StatusReport;
    px.publicKey = st.publicKey;
    // what the proxy has is what was applied: differences are sent, peers no longer wanted removed
    px.applied = new Map(
      st.peers.map((p) => [p.publicKey, JSON.stringify({ publicKey: p.publicKey, endpoint: p.endpoint ?? '', allowedIps: p.allowedIps } satisfies DesiredPeer)]),
    );
    // the process: the one the agent started (saved pid + start time), never found by name;
    // without a saved one (an agent killed before it saved), the pid the proxy's own
    // control socket reports (as trusted as the key it reports), if that process is in
    // the pod's netns
    if (px.id !== null && !sameProcess(px.id.pid, px.id.startTime)) px.id = null;
    if (px.id === null && typeof st.pid === 'number' && inNetns(st.pid, px.reg.netns)) {
      const startTime = processStartTime(st.pid);
      if (startTime !== null) {
        px.id = { pid: st.pid, startTime };
        this.o.onProxyChange?.();
      }
    }
    px.services = null;
    px.endpoints = null;
    px.members = null;
    px.policy = null;
    px.dns = (st as unknown as { dns?: unknown }).dns !== undefined && (st as unknown as { dns?: unknown }).dns !== null;
    this.log.info({ pod: px.pod.name, publicKey: keyFingerprint(st.publicKey), pid: px.id?.pid ?? null }, 'running proxy adopted');
    this.o.hooks?.proxyStarted('adopted');
  }

  private async startProxy(px: Proxy, view: ProjectView): Promise<void> {
    const pod = px.pod;
    const netns = px.reg.netns;
    const config = podFile(this.o.runDir, pod.name, 'json');
    const { want, dns } = await this.writeConfig(pod, netns, px.socket, { ...view, pods: [...view.pods.filter((p) => p.name !== pod.name), pod] });
    px.dns = dns;
    const logFd = openSync(podFile(this.o.runDir, pod.name, 'log'), 'a', 0o600);
    // nsenter execs node: the child's pid is the proxy's
    const child = spawn('nsenter', podSpawnArgs(netns, this.main, config), {
      stdio: ['ignore', 'pipe', logFd],
      detached: true, // its own process group: a signal to the agent's group does not reach it
    });
    closeSync(logFd);
    child.unref();
    px.child = child;
    // saved at once (nsenter execs node: pid and start time stay): an agent killed while
    // the proxy starts leaves a process the next agent can still stop at DEL
    const startTime = child.pid ? processStartTime(child.pid) : null;
    px.id = child.pid && startTime ? { pid: child.pid, startTime } : null;
    this.o.onProxyChange?.();
    const key = await new Promise<string | null>((resolve) => {
      let out = '';
      const timer = setTimeout(() => resolve(null), 15_000);
      child.stdout!.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        const m = /^public-key (\S+)\n/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
      child.once('exit', () => {
        clearTimeout(timer);
        resolve(null);
      });
    });
    child.once('exit', (code, signal) => {
      if (px.child === child) this.lost(px, `exited (${signal ?? code})`);
    });
    if (key === null || child.exitCode !== null) {
      this.lost(px, 'did not start');
      return;
    }
    // fail-closed once the control socket answers (the guards come before the data plane)
    for (let i = 0; i < 300 && !(await socketIsLive(px.socket)); i++) {
      if (child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    if (child.exitCode !== null || !(await socketIsLive(px.socket))) {
      this.lost(px, 'control socket never answered');
      return;
    }
    px.publicKey = key;
    // what the config gave it is applied; the first apply() sends only the differences
    px.applied = new Map((want?.peers ?? []).map((d) => [d.publicKey, JSON.stringify(d)]));
    px.services = want ? JSON.stringify(want.services) : null;
    px.endpoints = want && dns ? JSON.stringify(want.endpoints) : null;
    px.members = want ? JSON.stringify(want.members) : null;
    px.policy = null;
    this.log.info({ pod: pod.name, publicKey: keyFingerprint(key), pid: child.pid, peers: want?.peers.length ?? 0 }, 'proxy started');
    this.o.hooks?.proxyStarted('started');
  }

  private lost(px: Proxy, why: string): void {
    this.log.warn({ pod: px.pod.name, why }, 'proxy lost: starting it again');
    this.o.hooks?.proxyLost();
    px.child = null;
    px.id = null;
    px.publicKey = null;
    px.applied = new Map();
    px.services = null;
    px.endpoints = null;
    px.members = null;
    px.policy = null;
    px.restartAt = Date.now() + RESTART_DELAY_MS;
    this.o.onProxyChange?.();
    if (this.proxies.get(px.pod.name) === px) setTimeout(() => this.kick(), RESTART_DELAY_MS);
  }

  /**
   * CNI DEL: stops the pod's proxy (SIGTERM, up to 5 s, then SIGKILL; only the process
   * the agent started), withdraws its key and removes what tenc left in the netns (the
   * proxy fails closed on stop, so its rule, guards and nft table stay until here).
   */
  async release(pod: string, netns?: string): Promise<void> {
    // let a prepare() or a reconcile that may be starting the proxy finish first
    await this.preparing.get(pod)?.catch(() => undefined);
    while (this.running) await this.current;
    await this.releaseNow(pod, netns);
  }

  private async releaseNow(pod: string, netns?: string): Promise<void> {
    const px = this.proxies.get(pod);
    this.proxies.delete(pod);
    if (px) {
      const child = px.child;
      px.child = null;
      if (px.id !== null && sameProcess(px.id.pid, px.id.startTime)) await stopPid(px.id.pid, px.id.startTime);
      else if (child && child.exitCode === null && child.pid) await stopPid(child.pid, processStartTime(child.pid) ?? '');
      rmSync(px.socket, { force: true });
    }
    // also a pod made fail closed (prepare) whose proxy never started
    const ns = px?.reg.netns ?? netns;
    if (ns !== undefined && existsSync(ns)) await cleanNetns(ns);
    rmSync(podFile(this.o.runDir, pod, 'json'), { force: true });
    rmSync(podFile(this.o.runDir, pod, 'log'), { force: true });
    await this.o.registry.withdrawPeer(this.o.project, this.o.node, pod);
    this.o.onProxyChange?.();
    this.log.info({ pod }, 'pod released: proxy stopped, namespace cleaned');
  }

  /**
   * Stops reconciling. The proxies keep running, fail-closed and with their keys
   * published: a restarted agent adopts them (the node agent saved their pids).
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.watch?.close();
    if (this.timer) clearInterval(this.timer);
    await this.current;
    this.log.info({ pods: this.proxies.size }, 'reconciler stopped; proxies left running');
  }
}

/** Removes tenc's rule, routes and nft table from a netns whose proxy is gone (defaults of config.ts). */
export async function cleanNetns(netns: string): Promise<void> {
  const run = (args: string[]) =>
    new Promise<void>((resolve) => {
      const c = spawn('nsenter', [`--net=${netns}`, '--', ...args], { stdio: 'ignore' });
      c.on('exit', () => resolve());
      c.on('error', () => resolve());
    });
  for (const fam of ['-4', '-6']) {
    // every rule at tenc's priority (one per family, but be thorough: at most a few)
    for (let i = 0; i < 4; i++) await run(['ip', fam, 'rule', 'del', 'pref', String(DEFAULT_RULE_PRIORITY)]);
    // TencPolicy exempt rules (policy-rules.ts): one pref below tenc's rule
    await run(['sh', '-c', `for i in $(seq 1 4096); do ip ${fam} rule del pref ${DEFAULT_RULE_PRIORITY - 1} 2>/dev/null || break; done`]);
    await run(['ip', fam, 'route', 'flush', 'table', String(DEFAULT_TABLE)]);
  }
  await run(['nft', 'delete', 'table', 'inet', tableName(DEFAULT_INTERFACE)]);
}

/** Runs a guardBatch() family's lines; a rule that exists already (its last line: "File exists") is fine. */
async function guardBatchIn(ip: IpCommand, fam: 4 | 6, lines: string[]): Promise<void> {
  try {
    await ip.batch(fam, lines);
  } catch (e) {
    if (e instanceof IpCommandError && e.linesDone === lines.length - 1 && /File exists/i.test(e.stderr)) return;
    throw e;
  }
}

/** `nft -f -` in the netns (one transaction). */
function nftIn(via: string[], script: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = spawn(via[0], [...via.slice(1), 'nft', '-f', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    c.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    c.on('error', (e) => reject(new Error(`nft: ${e.message}`)));
    c.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`nft in the pod's netns: ${err.trim() || `exit code ${code}`}`))));
    c.stdin!.on('error', () => {});
    c.stdin!.end(script);
  });
}
