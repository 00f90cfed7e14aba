/**
 * The pod proxies of one project on this node, as the agent tracks them (agent.ts
 * reconciles them; the node agent saves their pids): starting `tenc pod` in a pod's
 * netns with the config written from the registry's view (the project's standby
 * proxy handed the pod, standby.ts, or else nsenter --net=NETNS),
 * adopting a proxy found running (an agent restart) through its control socket, a
 * proxy lost (exited, socket dead) started again after RESTART_DELAY_MS, and
 * stopping one at CNI DEL.
 *
 * Proxies are tracked by pid and start time (/proc/PID/stat field 22), never by
 * command line. A proxy found running at start is adopted through its control socket
 * and the pid + start time the node agent saved.
 *
 * Below agent.ts; uses desired.ts (the configs' peers) and netns.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync, readFileSync, readdirSync, renameSync, writeFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, DEFAULT_LISTEN_PORT, validateConfig, type PodConfig } from '../control/config.js';
import { readPublicKeyLine } from '../control/keyline.js';
import type { Handoff } from '../control/handoff.js';
import { controlRequest, socketIsLive } from '../control/socket.js';
import type { StatusReport } from '../control/status.js';
import type { AgentHooks } from '../metrics/agent.js';
import { keyFingerprint, silentLogger, type Logger } from '../log.js';
import type { PodInfo, ProjectView, Registry } from '../registry/registry.js';
import { desiredState, type DesiredPeer, type DesiredPod } from './desired.js';
import { podNodeFlags, podSpawnArgs } from './pod-exec.js';
import { Standby, staleStandbyLogs, standbyEnabled, standbyLogName } from './standby.js';
import { cleanNetns, podResolvConf } from './netns.js';
import { HostProcess, hostLogName, podHostEnabled, staleHostLogs } from './host.js';

/** The port every pod proxy listens on: the pods' default (the cluster file's policy check assumes it). */
export const TENC_PORT = DEFAULT_LISTEN_PORT;
export const RESTART_DELAY_MS = 200;
/**
 * How long a starting proxy may take to print its public key, and then to answer on
 * its control socket: about a second on an idle node, several on a loaded one
 * (bench density). A start given up is stopped before the next one.
 */
export const START_TIMEOUT_MS = 15_000;

/** Where a pod's proxy listens: its primary address, tenc's port (what the agent publishes). */
export function tencEndpoint(p: PodInfo): string {
  return `${p.address.includes(':') ? `[${p.address}]` : p.address}:${TENC_PORT}`;
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

/**
 * The process holds an fd of the namespace at `netns` (a pod host does for each pod it
 * runs, from the pod's start to its exit): an adopted host's pod that is still starting.
 */
export function holdsNetns(pid: number, netns: string): boolean {
  let want: { dev: number; ino: number };
  try {
    want = statSync(netns);
  } catch {
    return false;
  }
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        // stat follows the fd to the namespace (its link text is the path it was opened by)
        const st = statSync(`/proc/${pid}/fd/${fd}`);
        if (st.ino === want.ino && st.dev === want.dev) return true;
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    // gone
  }
  return false;
}

/**
 * The identity of the network namespace at a netns path, so that a namespace found at a
 * registration's path later is told from the one the pod was registered with
 * (Registration.netnsId); null when nothing is there. The nsfs file's device and inode
 * number (io/nsfs.ts) do not suffice: the kernel gives a new namespace the lowest free
 * inode number, often that of a namespace just gone (`ip netns del NAME; ip netns add
 * NAME` mostly gives the same one once the old one is freed). So also:
 *  - /proc/PID/ns/net: the start time of PID (processStartTime): a PID reused after the
 *    pod's pause process died names another process, and its namespace;
 *  - any other path (a bind mount: /run/netns/NAME, /var/run/netns/NAME): the change
 *    time of the nsfs inode, set when the kernel made it and kept while the mount holds
 *    it (nsfs refuses chmod and touch); a namespace mounted at the name anew has an
 *    inode made anew.
 * "DEV:INO:pSTART" or "DEV:INO:cCTIME_NS".
 */
export function netnsIdentity(netns: string): string | null {
  const proc = /^\/proc\/(\d+|self)\/ns\/net$/.exec(netns);
  const pid = proc === null ? 0 : proc[1] === 'self' ? process.pid : Number(proc[1]);
  const before = proc === null ? null : processStartTime(pid);
  if (proc !== null && before === null) return null;
  let st;
  try {
    st = statSync(netns, { bigint: true, throwIfNoEntry: false });
  } catch {
    return null;
  }
  if (st === undefined) return null;
  if (proc === null) return `${st.dev}:${st.ino}:c${st.ctimeNs}`;
  // the same process before and after the stat: the namespace is that process's
  return processStartTime(pid) === before ? `${st.dev}:${st.ino}:p${before}` : null;
}

/**
 * The namespace at the registration's path is the one it was registered with: false
 * when the path is gone or names another namespace now (the pod's pause process gone
 * and its PID reused, a netns name made again), or when the identity is unknown (null:
 * an entry of an older state file nothing proved, node.ts). Nothing is done in a pod's
 * namespace unless this holds. A registration without an identity (netnsId absent: an
 * Agent given its registrations directly, in tests and benchmarks) needs its path to
 * exist only.
 */
export function registeredNetns(reg: Pick<Registration, 'netns' | 'netnsId'>): boolean {
  if (reg.netnsId === undefined) return existsSync(reg.netns);
  return reg.netnsId !== null && netnsIdentity(reg.netns) === reg.netnsId;
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
  /** The process is a pod host (agent/host.ts) running this pod among others: never signalled for one pod. */
  hosted?: true;
}

/** A pod started in a pod host: the host and the pod's config path (its name there). */
export interface HostedPod {
  host: HostProcess;
  config: string;
  /** Resolves once the pod has exited (or its host). */
  exited: Promise<void>;
}

/** A pod the CNI plugin registered on this node (the only source of a netns path). */
export interface Registration {
  containerId: string;
  netns: string;
  /**
   * The identity of the namespace at `netns` when the pod was registered (netnsIdentity):
   * a namespace found there later that is not this one counts as gone (registeredNetns):
   * no proxy is started in it and it is not cleaned. null: unknown (an entry of an older
   * state file whose namespace nothing proved, node.ts): the pod counts as gone. Absent:
   * not taken (registrations given to an Agent directly: tests, benchmarks).
   */
  netnsId?: string | null;
  ifname: string;
  podNamespace: string;
  podName: string;
  podUid: string;
  /** The pod's addresses from the CNI prevResult, primary first. */
  addresses: string[];
  /** The proxy the agent started for it (pid + start time), once started. */
  proxy: ProxyId | null;
}

/** One pod's proxy as the agent knows it, and what it was last told. */
export interface Proxy {
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
  /**
   * The last publish that failed: its "key endpoint", its message (logged once) and
   * when it is tried again (back-off 1 s doubling to 60 s, for that key and endpoint
   * only); absent: none since the last success.
   */
  publishFailed?: { mine: string; message: string; retryAt: number; delayMs: number };
  /** JSON of the policies given to the pod (set-policy); null: not yet. */
  policy?: string | null;
  /**
   * The last start failure logged ("why: error") while the proxy has not run since;
   * null: none. A start that keeps failing (a missing psk) is retried every
   * RESTART_DELAY_MS to RECONCILE_MS, but logged once per message (issue 12).
   */
  failure: string | null;
  /** Start failures since the proxy last ran. */
  failures: number;
  /** The pod runs in a pod host this agent started (agent/host.ts); null or absent: not, or not known. */
  hosted?: HostedPod | null;
  /**
   * A pod of this agent's host that was lost (its socket dead) while its copy may still
   * run there: stopped through it at DEL or once the restart gives up waiting, and
   * linked again when the copy answers and is adopted. Cleared by the copy's exit.
   */
  lostHosted?: HostedPod | null;
}

/** The agent's options its proxies use (AgentOptions adds the registrations). */
export interface ProxyOptions {
  registry: Registry;
  node: string;
  project: string;
  /** Called when a proxy's process id changes (the node agent saves its state). */
  onProxyChange?: () => void;
  /** Directory (created 0700) for the pods' configs and logs. */
  runDir: string;
  log?: Logger;
  /** The tenc CLI to start pods with; default this package's dist/src/cli/main.js. */
  tencMain?: string;
  /** Log level of the pod proxies. */
  podLogLevel?: string;
  /** Run the pods' DNS proxy (when /etc/netns/<netns name>/resolv.conf exists, or clusterDns is given); default true. */
  dns?: boolean;
  /** The pods' dns.classifyCidrs (cluster ranges classified on first use); default none. */
  classifyCidrs?: string[];
  /**
   * The cluster DNS service's addresses (kubelet's clusterDNS, e.g. 10.96.0.10): the DNS
   * proxy's upstreams (and the addresses it intercepts) for a pod without
   * /etc/netns/<name>/resolv.conf, which is every pod on Kubernetes (the runtime's netns is
   * /var/run/netns/cni-...). Without them such pods run without the DNS proxy and without
   * classifyCidrs. Default none.
   */
  clusterDns?: string[];
  /** The cluster domain; a project's DNS domain is <project>.svc.<clusterDomain>. Default cluster.local. */
  clusterDomain?: string;
  /** Metrics hooks (src/metrics/agent.ts); default none. */
  hooks?: AgentHooks;
  /** Each of a start's two waits (key line, then control socket); default START_TIMEOUT_MS. */
  startTimeoutMs?: number;
  /** Keep a standby proxy to hand the next pod (agent/standby.ts); default on unless TENC_POD_STANDBY=0. */
  standby?: boolean;
  /** Run the project's pods in one pod host process (agent/host.ts); default on unless TENC_POD_HOST=0. */
  podHost?: boolean;
}

/** Pod hosts that fail to get ready this many times in a row: pods start as processes of their own (logged once). */
export const HOST_MAX_FAILURES = 3;

/** How long a pod asked to stop (host stop line, control socket stop op) may take before the agent goes on. */
const STOP_WAIT_MS = 5000;

/** Standbys that die before they are ready this many times in a row: no more are started (logged once). */
export const STANDBY_MAX_FAILURES = 3;

/** Nothing is known to be applied to the proxy (adopted, or lost): apply() sends everything again. */
export function forgetApplied(px: Proxy): void {
  px.applied = new Map();
  px.services = null;
  px.endpoints = null;
  px.members = null;
  px.policy = null;
}

/** The file names of a pod under runDir (the pod's config and log). */
function podFile(runDir: string, pod: string, ext: string): string {
  return join(runDir, `${pod}.${ext}`);
}

/** The project's proxies on this node, by pod name. */
export class Proxies extends Map<string, Proxy> {
  private readonly log: Logger;
  private readonly main: string;
  /** The standby proxy the next start is handed to (warmStandby); null: none. */
  private standby: Standby | null = null;
  private standbyFailures = 0;
  private standbySeq = 0;
  private standbyClosed = false;
  /** The project's pod host on this node (hosts on); null: none yet, or it exited. */
  private host: HostProcess | null = null;
  private hostStarting: Promise<HostProcess | null> | null = null;
  private hostFailures = 0;
  private hostSeq = 0;

  /** kick: reconcile soon (a lost proxy is started again by the next reconcile). */
  constructor(
    private readonly o: ProxyOptions,
    private readonly kick: () => void,
  ) {
    super();
    this.log = o.log ?? silentLogger;
    this.main = o.tencMain ?? fileURLToPath(new URL('../cli/main.js', import.meta.url));
  }

  /**
   * Writes the pod's config (0600, atomically) for `tenc pod`: its peers, services and
   * members as `view` has them, so the proxy starts with what the agent would send it
   * (and fails closed for all of it from its first step). A config that does not
   * validate with them (never expected) is written without them, and they follow over
   * the control socket.
   */
  async writeConfig(pod: PodInfo, netns: string, socket: string, view: ProjectView): Promise<{ config: PodConfig; want: DesiredPod | null; dns: boolean }> {
    const psk = await this.o.registry.pskFile(this.o.project);
    const file = podFile(this.o.runDir, pod.name, 'json');
    // the DNS proxy, when the pod has a resolv.conf of its own (ip netns exec mounts
    // /etc/netns/NAME/resolv.conf; nsenter --net does not, so the path is given)
    const resolvConf = this.o.dns === false ? null : podResolvConf(netns);
    // else (Kubernetes) the cluster DNS given to the agent: the pod's resolv.conf names it
    const upstreams = this.o.dns === false || resolvConf !== null ? [] : (this.o.clusterDns ?? []);
    const dns = resolvConf !== null || upstreams.length > 0;
    const domain = `${this.o.project}.svc.${this.o.clusterDomain ?? 'cluster.local'}`;
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
      ...(dns
        ? {
            dns: {
              domain,
              ...(resolvConf !== null ? { resolvConf } : { upstreams }),
              classifyCidrs: this.o.classifyCidrs ?? [],
              ...(w ? { endpoints: w.endpoints } : {}),
            },
          }
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
    return { config, want: chosen, dns };
  }

  /**
   * Starts a standby proxy if there is none (the agent calls it when no start is under
   * way: a standby's own start would slow theirs). Does nothing when standbys are off,
   * while pod hosts are on and working (pods start there), after stopStandby(), or
   * after STANDBY_MAX_FAILURES standbys in a row died unready.
   */
  warmStandby(): void {
    if (this.standbyClosed || this.standby !== null || !(this.o.standby ?? standbyEnabled())) return;
    // pods go to the pod host while hosts work: a standby would idle for nothing (~12 MiB)
    if ((this.o.podHost ?? podHostEnabled()) && this.hostFailures < HOST_MAX_FAILURES) return;
    if (this.standbyFailures >= STANDBY_MAX_FAILURES) return;
    if (this.standbySeq === 0) {
      // the logs of standbys an earlier agent process left (killed before it removed them)
      for (const f of staleStandbyLogs(readdirSync(this.o.runDir), process.pid)) rmSync(join(this.o.runDir, f), { force: true });
    }
    const logFile = join(this.o.runDir, standbyLogName(process.pid, ++this.standbySeq));
    let sb: Standby;
    try {
      sb = new Standby({ main: this.main, flags: podNodeFlags(), logFile });
    } catch (e) {
      this.standbyFailed((e as Error).message);
      return;
    }
    this.standby = sb;
    void sb.ready.then((ok) => {
      if (ok) this.standbyFailures = 0;
    });
    void sb.exited.then((how) => {
      if (this.standby !== sb) return; // handed over: its exit is the pod's
      this.standby = null;
      const tail = sb.logTail();
      if (!this.standbyClosed) this.standbyFailed(`exited (${how}) before a pod was handed to it${tail ? `: ${tail}` : ''}`);
    });
  }

  private standbyFailed(why: string): void {
    this.standbyFailures++;
    if (this.standbyFailures < STANDBY_MAX_FAILURES) this.log.warn({ err: why }, 'standby proxy failed: pods start without one until the next is ready');
    else this.log.error({ err: why, failures: this.standbyFailures }, 'standby proxies keep failing: none started any more (pods start as new processes)');
  }

  /** Stops the standby (the agent stops); none is started after this. */
  stopStandby(): void {
    this.standbyClosed = true;
    const sb = this.standby;
    this.standby = null;
    sb?.kill();
    // the host's stdin ends: it runs its pods on (the next agent adopts them) and exits after the last
    this.host?.close();
    this.host = null;
  }

  /** The project's pod host, started when there is none (hosts on); null: hosts off or failing (a process per pod then). */
  private async takeHost(): Promise<HostProcess | null> {
    if (this.standbyClosed || !(this.o.podHost ?? podHostEnabled()) || this.hostFailures >= HOST_MAX_FAILURES) return null;
    if (this.host?.usable()) return this.host;
    if (this.hostStarting) return this.hostStarting;
    this.hostStarting = (async () => {
      // the logs of hosts an earlier agent process left that no host writes any more
      if (this.hostSeq === 0) for (const f of staleHostLogs(this.o.runDir, process.pid)) rmSync(join(this.o.runDir, f), { force: true });
      const logFile = join(this.o.runDir, hostLogName(process.pid, ++this.hostSeq));
      let h: HostProcess;
      try {
        h = new HostProcess({ main: this.main, logFile });
      } catch (e) {
        this.hostFailed((e as Error).message);
        return null;
      }
      if (!(await h.ready)) {
        this.hostFailed(`not ready: ${h.logTail() || 'no output'}`);
        return null;
      }
      if (this.standbyClosed) {
        h.close(); // the agent stopped meanwhile: a host with no pods exits at once
        return null;
      }
      this.hostFailures = 0;
      this.host = h;
      void h.exited.then((how) => {
        if (this.host === h) this.host = null;
        if (how !== '0') this.log.warn({ how, err: h.logTail() }, 'pod host exited: its pods start again');
      });
      this.log.info({ pid: h.child.pid }, 'pod host started');
      return h;
    })().finally(() => (this.hostStarting = null));
    return this.hostStarting;
  }

  private hostFailed(why: string): void {
    this.hostFailures++;
    if (this.hostFailures < HOST_MAX_FAILURES) this.log.warn({ err: why }, 'pod host failed: this pod starts as a process of its own');
    else this.log.error({ err: why, failures: this.hostFailures }, 'pod hosts keep failing: none started any more (pods start as processes of their own)');
  }

  /** The standby, taken for a pod's start, when one is ready; else null. */
  private takeStandby(): Standby | null {
    const sb = this.standby;
    if (sb === null || !sb.usable()) return null;
    this.standby = null;
    return sb;
  }

  /** Adopts a live proxy (agent restart) or starts one; the agent runs one per pod at a time, beside its reconciles. */
  async ensureProxy(px: Proxy, view: ProjectView): Promise<void> {
    px.starting = true;
    try {
      // a pod an earlier agent's host was starting (killed meanwhile): waited for, never started twice;
      // one a host is still tearing down: waited for, never started beside it
      if (!(await this.awaitHostedStart(px))) {
        // a copy lost in this agent's own host that never answers again: the host stops it (the next start waits for its teardown)
        if (px.lostHosted) px.lostHosted.host.stop(px.lostHosted.config);
        throw new Error(`pod host ${px.id?.pid} still holds netns ${px.reg.netns} (its copy of the pod has not stopped)`);
      }
      if (await socketIsLive(px.socket)) await this.adopt(px);
      else await this.startProxy(px, view);
    } catch (e) {
      this.lost(px, 'start failed', (e as Error).message);
    } finally {
      px.starting = false;
    }
    if (px.publicKey === null) return;
    if (px.failure !== null) {
      this.log.info({ pod: px.pod.name, failures: px.failures, last: px.failure }, 'proxy start recovered');
      px.failure = null;
      px.failures = 0;
    }
    for (const f of px.ready.splice(0)) f();
  }

  /**
   * The pod's last known pod host (an earlier agent's, or this agent's after the pod was
   * lost or given up) is the same process and still holds the pod's namespace: its copy
   * of the pod is starting, running or tearing down there.
   */
  private hostHolds(px: Proxy): boolean {
    const id = px.id;
    return id !== null && id.hosted === true && sameProcess(id.pid, id.startTime) && holdsNetns(id.pid, px.reg.netns);
  }

  /**
   * A pod whose last pod host still holds its namespace while its socket does not
   * answer: it is starting there (waited for, then adopted or stopped, never started
   * twice) or tearing down (waited for: a copy started now would have its routes,
   * rules and tables, which have the same names, removed by that teardown). Waits the
   * start timeout at most; false when the host holds the namespace still.
   */
  private async awaitHostedStart(px: Proxy): Promise<boolean> {
    if (px.hosted) return true;
    const end = Date.now() + (this.o.startTimeoutMs ?? START_TIMEOUT_MS);
    while (Date.now() < end && this.hostHolds(px) && !(await socketIsLive(px.socket))) await new Promise((r) => setTimeout(r, 50));
    return !this.hostHolds(px) || (await socketIsLive(px.socket));
  }

  /** Waits until the pod's last host no longer holds its namespace (its copy has torn down), `ms` at most; false if it still does. */
  private async awaitHostRelease(px: Proxy, ms = STOP_WAIT_MS): Promise<boolean> {
    const end = Date.now() + ms;
    while (Date.now() < end && this.hostHolds(px)) await new Promise((r) => setTimeout(r, 20));
    return !this.hostHolds(px);
  }

  private async adopt(px: Proxy): Promise<void> {
    const st = (await controlRequest(px.socket, { op: 'status' })) as StatusReport;
    px.publicKey = st.publicKey;
    // what the proxy has is what was applied: differences are sent, peers no longer wanted removed;
    // its services, endpoints, members and policies are unknown: sent again
    forgetApplied(px);
    px.applied = new Map(
      st.peers.map((p) => [p.publicKey, JSON.stringify({ publicKey: p.publicKey, endpoint: p.endpoint ?? '', allowedIps: p.allowedIps } satisfies DesiredPeer)]),
    );
    // the process: the one the agent started (saved pid + start time), never found by name;
    // without a saved one (an agent killed before it saved), the pid the proxy's own
    // control socket reports (as trusted as the key it reports), if that process is in
    // the pod's netns
    if (px.id !== null && (!sameProcess(px.id.pid, px.id.startTime) || (px.id.hosted === true && !holdsNetns(px.id.pid, px.reg.netns)))) px.id = null;
    if (px.id === null && typeof st.pid === 'number') {
      // the pod's own process in its netns, or a pod host holding the netns (a hosted pod reports the host's pid)
      const inside = inNetns(st.pid, px.reg.netns);
      const hosted = !inside && holdsNetns(st.pid, px.reg.netns);
      const startTime = processStartTime(st.pid);
      if (startTime !== null && (inside || hosted)) {
        px.id = hosted ? { pid: st.pid, startTime, hosted: true } : { pid: st.pid, startTime };
        this.o.onProxyChange?.();
      }
    }
    // a pod lost in this agent's host that answers again: watched through that host's events again
    if (px.lostHosted && px.id?.hosted === true && px.id.pid === px.lostHosted.host.child.pid) px.hosted = px.lostHosted;
    px.lostHosted = null;
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
    const logFile = podFile(this.o.runDir, pod.name, 'log');
    // the project's pod host (one process for the project's pods on this node) unless hosts are off or failing
    const host = await this.takeHost();
    // after the last wait, before the namespace is entered: still the pod's (one made at its
    // path since the pod's went is another pod's, or the node's own)
    if (!registeredNetns(px.reg)) throw new Error(`netns ${netns} is gone or names another namespace than the pod's`);
    if (host !== null) return this.startHosted(px, host, { netns, config, log: logFile }, want, dns);
    // a standby when one is ready (it enters the netns itself), else a new process
    const sb = this.takeStandby();
    let child: ChildProcess;
    if (sb !== null) {
      child = sb.handOff({ netns, config, log: logFile });
    } else {
      const logFd = openSync(logFile, 'a', 0o600);
      // nsenter execs node: the child's pid is the proxy's
      child = spawn('nsenter', podSpawnArgs(netns, this.main, config), {
        stdio: ['ignore', 'pipe', logFd],
        detached: true, // its own process group: a signal to the agent's group does not reach it
      });
      closeSync(logFd);
      child.unref();
    }
    px.child = child;
    // saved at once (nsenter execs node, a standby is node: pid and start time stay): an agent killed while
    // the proxy starts leaves a process the next agent can still stop at DEL
    const startTime = child.pid ? processStartTime(child.pid) : null;
    px.id = child.pid && startTime ? { pid: child.pid, startTime } : null;
    this.o.onProxyChange?.();
    const line = await readPublicKeyLine(child, this.o.startTimeoutMs ?? START_TIMEOUT_MS);
    const key = typeof line === 'string' ? line : null;
    child.once('exit', (code, signal) => {
      if (px.child === child) this.lost(px, `exited (${signal ?? code})`);
    });
    if (key === null || child.exitCode !== null) {
      // a handoff that failed before the pod's log took over said why in the standby's own
      // log; the reason stays 'did not start' (a failure is logged once per reason)
      const tail = sb?.logTail();
      if (tail) this.log.warn({ pod: pod.name, err: tail }, 'standby handoff failed');
      await this.giveUp(px, child, 'did not start');
      return;
    }
    sb?.dropLog();
    // fail-closed once the control socket answers (the guards come before the data plane);
    // the steps between (ip, nft, the data plane, the DNS proxy) take seconds on a loaded node
    const deadline = Date.now() + (this.o.startTimeoutMs ?? START_TIMEOUT_MS);
    while (child.exitCode === null && Date.now() < deadline && !(await socketIsLive(px.socket))) await new Promise((r) => setTimeout(r, 10));
    if (child.exitCode !== null || !(await socketIsLive(px.socket))) {
      await this.giveUp(px, child, 'control socket never answered');
      return;
    }
    this.running(px, key, want, dns);
    this.log.info({ pod: pod.name, publicKey: keyFingerprint(key), pid: child.pid, peers: want?.peers.length ?? 0, standby: sb !== null }, 'proxy started');
    this.o.hooks?.proxyStarted('started');
  }

  /** A started proxy: its key, and what its config gave it counted as applied (the first apply() sends only the differences). */
  private running(px: Proxy, key: string, want: DesiredPod | null, dns: boolean): void {
    px.publicKey = key;
    px.applied = new Map((want?.peers ?? []).map((d) => [d.publicKey, JSON.stringify(d)]));
    px.services = want ? JSON.stringify(want.services) : null;
    px.endpoints = want && dns ? JSON.stringify(want.endpoints) : null;
    px.members = want ? JSON.stringify(want.members) : null;
    px.policy = null;
  }

  /**
   * Starts the pod in the project's pod host: the start line, then its key event and
   * its control socket, each within the start timeout. Its exit (a stop, a failure,
   * the host's end) is the proxy lost. A start given up is stopped through the host
   * first, as giveUp stops a process.
   */
  private async startHosted(px: Proxy, host: HostProcess, h: Handoff, want: DesiredPod | null, dns: boolean): Promise<void> {
    const pod = px.pod;
    let started = false;
    let gone: string | null = null;
    let onKey: (v: string | Error) => void = () => undefined;
    const key = new Promise<string | Error>((r) => (onKey = r));
    let markExited: () => void = () => undefined;
    const ref: HostedPod = { host, config: h.config, exited: new Promise((r) => (markExited = r)) };
    host.start(h, {
      key: (k) => onKey(k),
      exit: (code, error) => {
        gone = code === -1 ? (error ?? 'pod host exited') : `exited (${code})${error ? `: ${error}` : ''}`;
        onKey(new Error(gone));
        markExited();
        if (px.lostHosted === ref) px.lostHosted = null;
        if (started && px.hosted === ref) {
          px.hosted = null;
          this.lost(px, gone);
        }
      },
    });
    px.hosted = ref;
    px.lostHosted = null;
    const startTime = host.child.pid ? processStartTime(host.child.pid) : null;
    px.id = host.child.pid && startTime ? { pid: host.child.pid, startTime, hosted: true } : null;
    this.o.onProxyChange?.();
    const limit = this.o.startTimeoutMs ?? START_TIMEOUT_MS;
    let timer: NodeJS.Timeout | undefined;
    const line = await Promise.race([key, new Promise<Error>((r) => (timer = setTimeout(() => r(new Error(`no public key within ${limit} ms`)), limit)))]);
    clearTimeout(timer);
    if (typeof line !== 'string') {
      this.log.warn({ pod: pod.name, err: line.message }, 'pod host: pod did not start');
      await this.giveUpHosted(px, ref, 'did not start');
      return;
    }
    const deadline = Date.now() + limit;
    while (gone === null && Date.now() < deadline && !(await socketIsLive(px.socket))) await new Promise((r) => setTimeout(r, 10));
    if (gone !== null || !(await socketIsLive(px.socket))) {
      await this.giveUpHosted(px, ref, 'control socket never answered');
      return;
    }
    started = true;
    this.running(px, line, want, dns);
    this.log.info({ pod: pod.name, publicKey: keyFingerprint(line), pid: host.child.pid, peers: want?.peers.length ?? 0, host: true }, 'proxy started');
    this.o.hooks?.proxyStarted('started');
  }

  /** A hosted start given up on: the host stops the pod (it fails closed) before the next start. */
  private async giveUpHosted(px: Proxy, ref: HostedPod, why: string): Promise<void> {
    px.hosted = null;
    await this.stopHosted(ref);
    this.lost(px, why);
  }

  /** Stops a hosted pod through its host's stdin and waits for its exit (STOP_WAIT_MS at most). */
  private async stopHosted(ref: HostedPod): Promise<boolean> {
    ref.host.stop(ref.config);
    let timer: NodeJS.Timeout | undefined;
    const exited = await Promise.race([ref.exited.then(() => true), new Promise<false>((r) => (timer = setTimeout(() => r(false), STOP_WAIT_MS)))]);
    clearTimeout(timer);
    // no exit seen (a start line the host refused unread, or a pod slow to stop): its waiter
    // is dropped, so the next start of the pod is not refused here; the host refuses it
    // while its copy runs, and the next start waits until the host lets the namespace go
    if (!exited) ref.host.forget(ref.config);
    return exited;
  }

  /**
   * Stops a pod through its control socket's stop op (three tries while the socket is
   * there) and waits until the socket is gone (STOP_WAIT_MS at most).
   */
  private async stopBySocket(px: Proxy): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await controlRequest(px.socket, { op: 'stop' });
        break;
      } catch (e) {
        if (!(await socketIsLive(px.socket))) return; // gone already: nothing more to do here
        if (attempt === 3) {
          this.log.warn({ pod: px.pod.name, err: (e as Error).message }, 'pod did not take the stop op: its namespace is cleaned with it running');
          return;
        }
        await new Promise((r) => setTimeout(r, 100 * attempt));
      }
    }
    const end = Date.now() + STOP_WAIT_MS;
    while (Date.now() < end && (await socketIsLive(px.socket))) await new Promise((r) => setTimeout(r, 20));
  }

  /**
   * A start given up on: the child, if it still runs, is stopped first (SIGTERM, then
   * SIGKILL; it fails closed). Left running, it would finish its start after the next
   * one began, and the two would race in the netns: the later one's start removes the
   * rules and routes of an earlier run (routing residue), so the proxy that stays
   * (adopted, its peers listed) would route nothing.
   */
  private async giveUp(px: Proxy, child: ChildProcess, why: string): Promise<void> {
    px.child = null; // its exit is this stop, not a loss of its own
    const id = px.id;
    if (id !== null && child.exitCode === null && child.signalCode === null) {
      this.log.warn({ pod: px.pod.name, pid: id.pid, why }, 'proxy start given up: stopping it before starting another');
      await stopPid(id.pid, id.startTime);
    }
    this.lost(px, why);
  }

  /**
   * The proxy is gone or did not start (err: the error that stopped the start): it is
   * started again. A proxy that ran is always logged; a start that fails again the
   * same way is logged once (counted in px.failures and the metrics).
   */
  lost(px: Proxy, why: string, err?: string): void {
    const failure = px.publicKey === null ? `${why}${err === undefined ? '' : `: ${err}`}` : null;
    if (failure === null || failure !== px.failure) {
      if (err !== undefined) this.log.warn({ pod: px.pod.name, err }, 'proxy start failed');
      this.log.warn({ pod: px.pod.name, why }, 'proxy lost: starting it again');
    }
    if (failure !== null) {
      px.failure = failure;
      px.failures++;
    }
    this.o.hooks?.proxyLost();
    px.child = null;
    // a pod of this agent's host whose socket failed once may still run there: the next start
    // waits for its socket (adopted again) or, past the start timeout, stops it (ensureProxy)
    if (px.hosted) px.lostHosted = px.hosted;
    px.hosted = null;
    // a pod host's id is kept: the next start waits until that host has let the pod's namespace go
    if (px.id?.hosted !== true) px.id = null;
    px.publicKey = null;
    forgetApplied(px);
    px.restartAt = Date.now() + RESTART_DELAY_MS;
    this.o.onProxyChange?.();
    if (this.get(px.pod.name) === px) setTimeout(() => this.kick(), RESTART_DELAY_MS);
  }

  /**
   * Stops the pod's proxy (only the process the agent started), removes what tenc left
   * in its netns, its config and log, and withdraws its key (Agent.release: CNI DEL).
   * keepFailClosed: the pod still runs here (its namespace is registered) although the
   * registry now places it on another node: its proxy stops (fail closed, as every stop
   * of the agent's proxies) and its namespace keeps the guards and the enforcement table.
   * reg: the registration released (a pod made fail closed whose proxy never started has
   * no proxy entry). The namespace is cleaned only while it is the registered one
   * (registeredNetns): one found at the path since the pod's went is not tenc's to clean
   * (the pod's went with its state; the other may be a protected pod's).
   */
  async releaseNow(pod: string, reg?: Pick<Registration, 'netns' | 'netnsId'>, keepFailClosed = false): Promise<void> {
    const px = this.get(pod);
    this.delete(pod);
    if (px) {
      const child = px.child;
      px.child = null;
      // also a copy of a pod lost in this agent's host (its socket dead) that may still run there
      const hosted = px.hosted ?? px.lostHosted ?? null;
      px.hosted = null;
      px.lostHosted = null;
      // a pod host runs other pods too: its pod is stopped through it (or, adopted, its socket), never by a signal
      // a pod told to stop while it starts finishes its start first: its release may take the start timeout
      let releaseMs = STOP_WAIT_MS;
      if (hosted !== null) {
        if (!(await this.stopHosted(hosted))) releaseMs += this.o.startTimeoutMs ?? START_TIMEOUT_MS;
      } else if (px.id !== null && !px.id.hosted && sameProcess(px.id.pid, px.id.startTime)) await stopPid(px.id.pid, px.id.startTime);
      else if (child && child.exitCode === null && child.pid) await stopPid(child.pid, processStartTime(child.pid) ?? '');
      // an adopted pod of a host (still starting there: waited for), or one whose process is not known: its socket's stop op
      // (a pod this agent's host was told to stop above is not waited for as a start)
      if (hosted === null) await this.awaitHostedStart(px);
      if (await socketIsLive(px.socket)) await this.stopBySocket(px);
      // a pod of a host has torn down once the host let its namespace go: only then is the namespace cleaned
      if (!(await this.awaitHostRelease(px, releaseMs))) this.log.warn({ pod, pid: px.id?.pid }, 'pod host still holds the pod\'s namespace: cleaning it anyway');
      rmSync(px.socket, { force: true });
    }
    // the project's last pod here: its host is closed (it exits once its pods have)
    if (this.size === 0 && this.host !== null) {
      this.host.close();
      this.host = null;
    }
    // also a pod made fail closed (prepare) whose proxy never started
    const ns = px?.reg ?? reg;
    if (!keepFailClosed && ns !== undefined) {
      if (registeredNetns(ns)) await cleanNetns(ns.netns);
      else if (existsSync(ns.netns)) this.log.warn({ pod, netns: ns.netns }, 'the pod\'s netns path does not name the namespace it was registered with (or that is not known): not cleaned');
    }
    rmSync(podFile(this.o.runDir, pod, 'json'), { force: true });
    rmSync(podFile(this.o.runDir, pod, 'log'), { force: true });
    await this.o.registry.withdrawPeer(this.o.project, this.o.node, pod);
    this.o.onProxyChange?.();
    if (keepFailClosed) this.log.warn({ pod }, 'proxy stopped: the pod runs here but the registry places it on another node; its namespace stays fail closed');
    else this.log.info({ pod }, 'pod released: proxy stopped, namespace cleaned');
  }
}
