/**
 * The node agent (`tenc agent`): one per node and project. It
 *
 *   1. reads the project's pods, services, endpoints and published peers from the
 *      registry (on every registry change, and every second as a fallback);
 *   2. starts `tenc pod` in the network namespace of each of the project's pods on
 *      its node (nsenter --net=NETNS), with enforcement on; a proxy that dies is
 *      started again (its new public key is published again);
 *   3. publishes each pod's public key and endpoint (never a private key: the pod
 *      proxies generate theirs in memory and print only the public key);
 *   4. gives every local pod its peers (every other project pod with a published
 *      key; allowed IPs: its address, plus the VIPs of services this client reaches
 *      through that endpoint) and its services (the VIPs it serves), over the pod's
 *      control socket: removals first, so a re-keyed pod never clashes with its old key;
 *      to a pod with the DNS proxy also the services' keyed endpoints (set-endpoints)
 *      and the project's members, every pod address and VIP (set-members).
 *
 * A proxy found running at start (the agent was restarted) is adopted through its
 * control socket. SIGTERM stops the proxies this agent started and withdraws them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, openSync, closeSync, readdirSync, readFileSync, writeFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_SOCKET_DIR, type ServiceConfig } from '../control/config.js';
import { controlRequest, socketIsLive } from '../control/socket.js';
import type { StatusReport } from '../control/status.js';
import type { AgentHooks } from '../metrics/agent.js';
import { keyFingerprint, silentLogger, type Logger } from '../log.js';
import { readProjectView, type PodInfo, type ProjectView, type Registry, type Watch } from '../registry/registry.js';

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
    peers.set(p.name, { publicKey: k.publicKey, endpoint: k.endpoint, allowedIps: [`${p.address}/32`] });
  }
  const services: DesiredPod['services'] = [];
  const endpoints: DesiredPod['endpoints'] = [];
  for (const s of view.services) {
    const eps = view.endpoints.find((e) => e.service === s.name)?.pods ?? [];
    const keyedEps = eps.filter((e) => keyed.has(e.name)).map((e) => e.address).sort();
    if (keyedEps.length > 0) endpoints.push({ vip: s.vip, addresses: keyedEps });
    if (eps.some((e) => e.name === pod.name)) {
      services.push({ vip: s.vip, ports: s.ports });
      continue;
    }
    const usable = eps.filter((e) => peers.has(e.name)).sort((a, b) => a.name.localeCompare(b.name));
    if (usable.length === 0) continue;
    peers.get(pick(pod.name, s.name, usable).name)!.allowedIps.push(`${s.vip}/32`);
  }
  const members = [...new Set([...view.pods.map((p) => `${p.address}/32`), ...view.services.map((s) => `${s.vip}/32`)])].sort();
  return { peers: [...peers.values()].sort((a, b) => a.publicKey.localeCompare(b.publicKey)), services, endpoints, members };
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

/** SIGTERM, up to 5 s, then SIGKILL. */
async function stopPid(pid: number): Promise<void> {
  if (!signal(pid, 'SIGTERM')) return;
  for (let i = 0; i < 50 && processAlive(pid); i++) await new Promise((r) => setTimeout(r, 100));
  signal(pid, 'SIGKILL');
}

/**
 * The pid of the `tenc pod --config CONFIG` running in the namespace at `netns`
 * (found through /proc/PID/ns/net and /proc/PID/cmdline), or null.
 */
export function findProxyPid(netns: string, config: string): number | null {
  let ino: number;
  try {
    ino = statSync(netns).ino;
  } catch {
    return null;
  }
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (statSync(`/proc/${d}/ns/net`).ino !== ino) continue;
      const argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      const i = argv.indexOf('pod');
      if (i >= 0 && argv[i + 1] === '--config' && argv[i + 2] === config) return Number(d);
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return null;
}

/** /etc/netns/NAME/resolv.conf for /run/netns/NAME, if it exists. */
export function podResolvConf(netns: string): string | null {
  const m = /^\/run\/netns\/([^/]+)$/.exec(netns);
  if (!m) return null;
  const f = `/etc/netns/${m[1]}/resolv.conf`;
  return existsSync(f) ? f : null;
}

interface Proxy {
  pod: PodInfo;
  socket: string;
  child: ChildProcess | null;
  /** The pid of an adopted proxy (not our child). */
  pid: number | null;
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
}

export interface AgentOptions {
  registry: Registry;
  node: string;
  project: string;
  /** Directory (created 0700) for the pods' configs, sockets and logs. */
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

  constructor(private readonly o: AgentOptions) {
    this.log = o.log ?? silentLogger;
    this.main = o.tencMain ?? fileURLToPath(new URL('../cli/main.js', import.meta.url));
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
        this.o.hooks?.proxies([...this.proxies.values()].filter((p) => p.publicKey !== null).length);
        this.running = false;
        if (this.again) {
          this.again = false;
          setTimeout(() => this.kick(), 20);
        }
      });
  }

  private async reconcile(): Promise<void> {
    const view = await readProjectView(this.o.registry, this.o.project);
    // a pod whose namespace is gone (being deleted) counts as gone
    const local = view.pods.filter((p) => p.node === this.o.node && p.netns !== null && existsSync(p.netns));
    // pods gone from the registry: stop their proxies, withdraw their keys
    for (const [name, px] of this.proxies) {
      if (!local.some((p) => p.name === name)) {
        this.proxies.delete(name);
        px.child?.kill('SIGTERM');
        if (px.pid !== null) signal(px.pid, 'SIGTERM');
        await this.o.registry.withdrawPeer(this.o.project, this.o.node, name);
        this.log.info({ pod: name }, 'pod gone: proxy stopped');
      }
    }
    const starts: Promise<void>[] = [];
    for (const pod of local) {
      let px = this.proxies.get(pod.name);
      if (!px) {
        px = { pod, socket: podSocket(pod.netns!), child: null, pid: null, publicKey: null, applied: new Map(), services: null, endpoints: null, members: null, dns: false, starting: false, restartAt: 0 };
        this.proxies.set(pod.name, px);
      }
      px.pod = pod;
      // an adopted proxy has no child to watch: look at its pid
      if (px.pid !== null && !processAlive(px.pid)) this.lost(px, 'adopted proxy gone');
      if (px.publicKey === null && !px.starting && Date.now() >= px.restartAt) starts.push(this.ensureProxy(px));
    }
    // in parallel: a proxy takes about a second to start
    await Promise.all(starts);
    // publish keys (again, if the file was lost), then peers and services
    const published = new Map(view.peers.map((k) => [k.pod, k]));
    for (const px of this.proxies.values()) {
      if (px.publicKey === null) continue;
      const endpoint = `${px.pod.address}:${TENC_PORT}`;
      const k = published.get(px.pod.name);
      if (!k || k.publicKey !== px.publicKey || k.endpoint !== endpoint || k.node !== this.o.node) {
        await this.o.registry.publishPeer({ project: this.o.project, pod: px.pod.name, node: this.o.node, publicKey: px.publicKey, endpoint });
        this.log.info({ pod: px.pod.name, publicKey: keyFingerprint(px.publicKey) }, 'public key published');
        // the view is stale now: the next run sees the new key
        this.again = true;
      }
    }
    const fresh = view.peers.filter((k) => !this.proxies.has(k.pod) || this.proxies.get(k.pod)!.publicKey === k.publicKey);
    const v2: ProjectView = { ...view, peers: fresh };
    for (const px of this.proxies.values()) {
      if (px.publicKey === null) continue;
      try {
        await this.apply(px, desiredState(v2, px.pod));
      } catch (e) {
        this.log.warn({ pod: px.pod.name, err: (e as Error).message }, 'cannot configure pod proxy');
        // a proxy not answering: check it is alive (an adopted one has no child to watch)
        if (!px.child && !(await socketIsLive(px.socket))) this.lost(px, 'control socket dead');
      }
    }
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
    for (const d of set) {
      await controlRequest(px.socket, { op: 'set-peer', peer: { publicKey: d.publicKey, endpoint: d.endpoint, allowedIps: d.allowedIps } });
      px.applied.set(d.publicKey, JSON.stringify(d));
      this.log.info({ pod: px.pod.name, peer: keyFingerprint(d.publicKey), allowedIps: d.allowedIps }, 'peer set');
    }
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
    if (px.dns && members !== px.members) {
      await controlRequest(px.socket, { op: 'set-members', members: want.members });
      px.members = members;
      this.log.info({ pod: px.pod.name, members: want.members.length }, 'members set');
    }
  }

  /** Adopts a live proxy (agent restart) or starts one. Runs inside reconcile (one at a time). */
  private async ensureProxy(px: Proxy): Promise<void> {
    px.starting = true;
    try {
      if (await socketIsLive(px.socket)) await this.adopt(px);
      else await this.startProxy(px);
    } catch (e) {
      this.log.warn({ pod: px.pod.name, err: (e as Error).message }, 'proxy start failed');
      this.lost(px, 'start failed');
    } finally {
      px.starting = false;
    }
  }

  private async adopt(px: Proxy): Promise<void> {
    {
      const st = (await controlRequest(px.socket, { op: 'status' })) as StatusReport;
      px.publicKey = st.publicKey;
      // what the proxy has now is what was applied
      // what the proxy has is what was applied: differences are sent, peers no longer wanted removed
      px.applied = new Map(
        st.peers.map((p) => [p.publicKey, JSON.stringify({ publicKey: p.publicKey, endpoint: p.endpoint ?? '', allowedIps: p.allowedIps } satisfies DesiredPeer)]),
      );
      px.pid = findProxyPid(px.pod.netns!, join(this.o.runDir, `${px.pod.name}.json`));
      px.services = null;
      px.endpoints = null;
      px.members = null;
      px.dns = (st as unknown as { dns?: unknown }).dns !== undefined && (st as unknown as { dns?: unknown }).dns !== null;
      this.log.info({ pod: px.pod.name, publicKey: keyFingerprint(st.publicKey) }, 'running proxy adopted');
      this.o.hooks?.proxyStarted('adopted');
    }
  }

  private async startProxy(px: Proxy): Promise<void> {
    const pod = px.pod;
    const psk = await this.o.registry.pskFile(this.o.project);
    const config = join(this.o.runDir, `${pod.name}.json`);
    // the DNS proxy, when the pod has a resolv.conf of its own (ip netns exec mounts
    // /etc/netns/NAME/resolv.conf; nsenter --net does not, so the path is given)
    const resolvConf = this.o.dns === false ? null : podResolvConf(pod.netns!);
    px.dns = resolvConf !== null;
    writeFileSync(
      config,
      JSON.stringify({
        addresses: [pod.address],
        listenPort: TENC_PORT,
        pskFile: psk,
        controlSocket: px.socket,
        enforce: true,
        logLevel: this.o.podLogLevel ?? 'info',
        ...(resolvConf ? { dns: { domain: `${this.o.project}.svc.cluster.local`, resolvConf, classifyCidrs: this.o.classifyCidrs ?? [] } } : {}),
      }),
      { mode: 0o600 },
    );
    const logFd = openSync(join(this.o.runDir, `${pod.name}.log`), 'a', 0o600);
    const child = spawn('nsenter', [`--net=${pod.netns}`, '--', process.execPath, this.main, 'pod', '--config', config], {
      stdio: ['ignore', 'pipe', logFd],
    });
    closeSync(logFd);
    px.child = child;
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
    // ready once the control socket answers
    for (let i = 0; i < 100 && !(await socketIsLive(px.socket)); i++) await new Promise((r) => setTimeout(r, 50));
    px.publicKey = key;
    px.applied = new Map();
    px.services = null;
    px.endpoints = null;
    px.members = null;
    this.log.info({ pod: pod.name, publicKey: keyFingerprint(key), pid: child.pid }, 'proxy started');
    this.o.hooks?.proxyStarted('started');
  }

  private lost(px: Proxy, why: string): void {
    this.log.warn({ pod: px.pod.name, why }, 'proxy lost: starting it again');
    this.o.hooks?.proxyLost();
    px.child = null;
    px.pid = null;
    px.publicKey = null;
    px.applied = new Map();
    px.services = null;
    px.endpoints = null;
    px.members = null;
    px.restartAt = Date.now() + RESTART_DELAY_MS;
    if (this.proxies.get(px.pod.name) === px) setTimeout(() => this.kick(), RESTART_DELAY_MS);
  }

  /** Stops the proxies this agent started (SIGTERM, up to 5 s) and withdraws their keys. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.watch?.close();
    if (this.timer) clearInterval(this.timer);
    await this.current;
    const waits: Promise<unknown>[] = [];
    for (const px of this.proxies.values()) {
      await this.o.registry.withdrawPeer(this.o.project, this.o.node, px.pod.name).catch(() => {});
      const child = px.child;
      px.child = null;
      if (px.pid !== null) waits.push(stopPid(px.pid));
      px.pid = null;
      if (child && child.exitCode === null) {
        waits.push(
          new Promise<void>((resolve) => {
            const t = setTimeout(() => {
              child.kill('SIGKILL');
              resolve();
            }, 5000);
            child.once('exit', () => {
              clearTimeout(t);
              resolve();
            });
            child.kill('SIGTERM');
          }),
        );
      }
      rmSync(join(this.o.runDir, `${px.pod.name}.json`), { force: true });
    }
    await Promise.all(waits);
    this.log.info({ pods: this.proxies.size }, 'agent stopped');
  }
}
