/**
 * The node agent (`tenc agent --node NODE`): one per node, for every protected
 * project (registry.projects(), or only --project). It serves the node socket
 * (default /run/tenc/agent.sock, mode 0600 in a 0700 directory) on which the CNI
 * plugin registers and unregisters pods, and runs one reconciler (agent.ts) per
 * project over the registered pods.
 *
 * Node socket: newline-delimited JSON, one request per line, the control socket's
 * framing ({id, op, ...} -> {id, ok, result} | {id, ok: false, error: {code, message}}):
 *
 *   cni-add    {containerId, netns, ifname, podNamespace, podName, podUid, addresses, timeoutMs}
 *              (no addresses: an unchained plugin, called alone by Multus without prevResult;
 *              the agent reads them in the pod's netns, agent/netns.ts podAddressesIn: the
 *              global address of the default route's interface, one per family, IPv4 first;
 *              none there yet is EADDRNOTAVAIL, code 11 in the plugin: the runtime retries)
 *              -> {protected: false} at once for a namespace that is not protected; else
 *              -> {protected: true} once the pod is fail-closed: the agent itself puts the
 *                 rule, the guards and the nftables table in its netns (Agent.prepare,
 *                 the same state `tenc pod` makes first) and starts the proxy in the
 *                 background (CHECK tells when it runs); with cniWait "proxy", only once
 *                 the proxy answers on its control socket; ETIMEDOUT after timeoutMs
 *              (timeoutMs counts from the request's arrival: a registry or netns slow to
 *              answer before the pod is registered is ETIMEDOUT, nothing registered; a pod
 *              whose earlier sandbox is still registered is EEXIST until that one is DELeted,
 *              unless that sandbox's netns is gone: then it is released here, as a DEL would)
 *              The registration keeps the netns's identity (proxies.ts netnsIdentity): a
 *              namespace found at the path later that is not the registered one (a PID
 *              reused after the pause process died, a netns name made again) counts as
 *              gone: no proxy is started there, nothing cleaned there.
 *   cni-del    {containerId} -> {}: the proxy stopped, the netns cleaned (unknown: {} too);
 *              the registration is kept until that succeeded (a failed release is done
 *              again by the retried DEL, or by the next agent); an ADD of the container
 *              still before its registration gives up (ECANCELED), never registering after
 *   cni-check  {containerId, netns, podNamespace, podName, timeoutMs} -> {} or an error; a
 *              proxy still starting (ADD answers before it runs) is waited for up to timeoutMs
 *   cni-status -> {projects}
 *
 * The registrations (and the pid + start time of each pod's proxy) are kept in
 * RUNDIR/registrations.json (0600, written atomically), so a restarted agent adopts
 * the running proxies and serves DEL for pods registered before it stopped. An entry an
 * older agent saved without the netns's identity keeps the namespace at its path only if
 * that namespace has one of the pod's addresses (proveNetns); else it counts as gone.
 * Stopping the agent leaves every proxy running (fail-closed, keys published).
 */
import { createServer, type Server, type Socket } from 'node:net';
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { idProblem, socketIsLive } from '../control/socket.js';
import { parseAddress } from '../net/address.js';
import { silentLogger, type Logger } from '../log.js';
import { Agent, type AgentOptions } from './agent.js';
import { netnsIdentity, registeredNetns, type ProxyId, type Registration } from './proxies.js';
import { isNamespaceFile } from '../io/nsfs.js';
import { podAddressesIn } from './netns.js';
import { DNS_LABEL as NAME, NAMESPACE_NAME as NAMESPACE } from '../net/names.js';

export const DEFAULT_AGENT_SOCKET = '/run/tenc/agent.sock';
const MAX_LINE = 64 * 1024;
const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$/;
/** A saved Registration.netnsId (proxies.ts netnsIdentity). */
const NETNS_ID = /^\d+:\d+:[cp]\d+$/;

/** The reconcilers' options the node agent passes on to each project's Agent, and its own. */
export interface NodeAgentOptions extends Pick<AgentOptions, 'registry' | 'node' | 'log' | 'tencMain' | 'podLogLevel' | 'dns' | 'classifyCidrs' | 'clusterDns' | 'clusterDomain' | 'hooks'> {
  /** Only these projects (default: every project registry.projects() lists). */
  projects?: string[];
  socket?: string;
  /** Directory (0700) for the state file and, per project, the pods' configs and logs. */
  runDir: string;
  /**
   * When cni-add answers: "fail-closed" (default) once the agent made the pod fail closed
   * itself, the proxy starting in the background; "proxy" once the proxy answers.
   */
  cniWait?: 'fail-closed' | 'proxy';
  /** Makes a project's reconciler (default: an Agent); for the node socket's unit tests. */
  makeAgent?: (o: AgentOptions) => ProjectAgent;
  /**
   * How long a pod of a protected namespace that the registry places on this node (it
   * has an IP: its sandbox exists) may go without a registration before it is reported
   * as running without tenc (default 30 s), and how often that is looked at (10 s).
   */
  unregisteredGraceMs?: number;
  unregisteredEveryMs?: number;
  /** Reads a pod's addresses in its netns for an unchained cni-add (default podAddressesIn); for unit tests. */
  podAddresses?: (netns: string) => Promise<string[]>;
}

export const UNREGISTERED_GRACE_MS = 30_000;

/** What the node socket asks of a project's reconciler (Agent). */
export type ProjectAgent = Pick<Agent, 'start' | 'stop' | 'prepare' | 'release' | 'whenReady' | 'check' | 'proxyIds'>;

class RequestError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** p, or `late()` thrown once the deadline (ms since the epoch) passed; p is then left to settle unheeded. */
function byDeadline<T>(p: Promise<T>, deadline: number, late: () => RequestError): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(late()), Math.max(0, deadline - Date.now()));
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

/** netns paths the runtime makes: /run/netns/NAME, /var/run/netns/NAME, /proc/PID/ns/net; a real nsfs file. */
export function checkNetns(p: unknown): string {
  if (typeof p !== 'string' || !/^(\/var)?\/run\/netns\/[A-Za-z0-9_.-]+$|^\/proc\/\d+\/ns\/net$/.test(p)) {
    throw new RequestError('EINVAL', `netns: ${JSON.stringify(p)} is not /run/netns/NAME, /var/run/netns/NAME or /proc/PID/ns/net`);
  }
  let st;
  try {
    st = statSync(p);
  } catch {
    throw new RequestError('EINVAL', `netns: ${p} does not exist`);
  }
  if (!isNamespaceFile(st)) throw new RequestError('EINVAL', `netns: ${p} is not a network namespace`);
  return p;
}

function str(v: unknown, field: string, re: RegExp, rule = 'is not valid'): string {
  if (typeof v !== 'string' || !re.test(v)) throw new RequestError('EINVAL', `${field}: ${JSON.stringify(v)} ${rule}`);
  return v;
}

/** A registration's addresses: one or two pod addresses, canonical. */
function checkAddresses(v: unknown): string[] {
  if (!Array.isArray(v) || v.length === 0 || v.length > 2) throw new RequestError('EINVAL', 'addresses: one or two pod addresses expected');
  return v.map((a, i) => {
    const r = parseAddress(String(a));
    if (!r.ok) throw new RequestError('EINVAL', `addresses[${i}]: ${r.problem}`);
    return r.value;
  });
}

/** The pod's namespace: asked first, so a pod of an unprotected namespace is passed through whatever else it has. */
const podNamespaceOf = (m: Record<string, unknown>) => str(m.podNamespace, 'podNamespace', NAMESPACE, 'is not a namespace name (lowercase letters, digits, "-", at most 63)');

/**
 * The agent's run directory (registrations, the pods' configs and logs, psk files):
 * made 0700 when missing. One that exists keeps its mode (never changed: --run-dir
 * /tmp must not take /tmp's sticky and world bits away) and is used only when it is a
 * directory of root or this user that neither group nor others may write in; else
 * another user could swap the files the agent starts pods with. Throws naming the
 * directory, its owner or mode.
 */
export function checkRunDir(dir: string): void {
  let made: string | undefined;
  try {
    made = mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e; // a file there: said below
  }
  if (made !== undefined) {
    chmodSync(dir, 0o700); // made here: the umask may have taken the owner's bits
    return;
  }
  const st = statSync(dir);
  const uid = process.getuid?.() ?? 0;
  if (!st.isDirectory()) throw new Error(`run directory ${dir}: not a directory`);
  if (st.uid !== 0 && st.uid !== uid) throw new Error(`run directory ${dir}: owned by uid ${st.uid}, not by root or this user (uid ${uid}): use a directory of your own (--run-dir)`);
  const mode = st.mode & 0o7777;
  if ((mode & 0o022) !== 0) {
    throw new Error(`run directory ${dir}: mode ${mode.toString(8).padStart(4, '0')} lets group or others write in it (they could swap the agent's state and the pods' configs): use a directory only its owner may write in (--run-dir; tenc does not change the mode of a directory it did not make)`);
  }
}

export class NodeAgent {
  private readonly regs = new Map<string, Registration>();
  private readonly agents = new Map<string, ProjectAgent>();
  /**
   * Containers whose DEL came, still registered until their release succeeded: left out
   * of the reconcilers' pods (their proxy is stopped, never started again), and an ADD
   * of the pod's next sandbox is refused meanwhile. `done` while the release runs (a
   * retried DEL waits for it); null after it failed (a retried DEL releases again).
   */
  private readonly releasing = new Map<string, { done: Promise<void> | null }>();
  /** ADDs not answered yet, by container: a DEL of the container marks them deleted, and one not registered yet gives up. */
  private readonly adding = new Map<string, Set<{ deleted: boolean }>>();
  private server: Server | null = null;
  /** Pods of protected namespaces on this node without a registration: since when, and whether said. */
  private readonly unregistered = new Map<string, { since: number; warned: boolean }>();
  private unregisteredTimer: NodeJS.Timeout | null = null;
  private unregisteredProblem = '';
  private readonly log: Logger;
  private readonly socket: string;
  private readonly stateFile: string;
  /** start() took the run directory (checkRunDir). */
  private runDirChecked = false;

  constructor(private readonly o: NodeAgentOptions) {
    this.log = o.log ?? silentLogger;
    this.socket = o.socket ?? DEFAULT_AGENT_SOCKET;
    this.stateFile = join(o.runDir, 'registrations.json');
  }

  async start(): Promise<void> {
    checkRunDir(this.o.runDir);
    this.runDirChecked = true;
    await this.load();
    // reconcilers for the projects of adopted pods first, then the server
    for (const r of this.regs.values()) await this.agentFor(r.podNamespace);
    await this.listen();
    this.unregisteredTimer = setInterval(() => void this.checkUnregistered(), this.o.unregisteredEveryMs ?? 10_000);
    this.unregisteredTimer.unref();
  }

  /**
   * Pods of every protected namespace that the registry places on this node and that
   * never registered (their CNI ADD did not reach tenc: the tenc entry dropped from the
   * node's conflist by the network plugin, a pod that ran before its namespace was
   * protected, a node without the plugin): their traffic is not protected. Each is
   * logged once past the grace, and counted (tenc_agent_pods_unregistered). Every
   * protected project is looked at, also one with no reconciler on this node.
   */
  async checkUnregistered(): Promise<number> {
    const now = Date.now();
    const grace = this.o.unregisteredGraceMs ?? UNREGISTERED_GRACE_MS;
    const seen = new Set<string>();
    let n = 0;
    try {
      for (const project of await this.o.registry.projects()) {
        if (this.o.projects && !this.o.projects.includes(project)) continue;
        const pods = await this.o.registry.pods(project);
        // the project's registrations as they are now (after the read), each counted while
        // its sandbox is there (a stale one, whose DEL never reached tenc, must not hide
        // the pod's next, unprotected sandbox)
        const registered = new Set([...this.regs.values()].filter((r) => r.podNamespace === project && registeredNetns(r)).map((r) => r.podName));
        for (const p of pods) {
          if (p.node !== this.o.node || registered.has(p.name)) continue;
          const id = `${project}/${p.name}`;
          seen.add(id);
          let u = this.unregistered.get(id);
          if (!u) this.unregistered.set(id, (u = { since: now, warned: false }));
          if (now - u.since < grace) continue;
          n++;
          if (!u.warned) {
            u.warned = true;
            this.log.warn({ pod: id, address: p.address, seconds: Math.round((now - u.since) / 1000) }, 'pod runs on this node without tenc: its CNI ADD never reached the agent (is the tenc entry in the node\'s CNI config? on OpenShift, does the pod\'s k8s.v1.cni.cncf.io/networks annotation name tenc\'s NetworkAttachmentDefinition? was the pod started before its namespace was protected?); its traffic is not protected');
          }
        }
      }
      this.unregisteredProblem = '';
    } catch (e) {
      // the registry unreachable: looked at again next time, the count as it was
      const msg = (e as Error).message;
      if (msg !== this.unregisteredProblem) this.log.warn({ err: msg }, 'cannot look for pods running without tenc: tried again');
      this.unregisteredProblem = msg;
      return -1;
    }
    for (const id of [...this.unregistered.keys()]) if (!seen.has(id)) this.unregistered.delete(id);
    this.o.hooks?.unregistered?.(n);
    return n;
  }

  private async load(): Promise<void> {
    if (!existsSync(this.stateFile)) return;
    const st = lstatSync(this.stateFile);
    if (!st.isFile() || (st.mode & 0o077) !== 0 || st.uid !== process.getuid!()) {
      throw new Error(`${this.stateFile}: not a regular file of this user with mode 0600 (mode ${(st.mode & 0o777).toString(8)}): refusing it`);
    }
    const data = JSON.parse(readFileSync(this.stateFile, 'utf8')) as { registrations?: Registration[] };
    const loaded: Registration[] = [];
    for (const r of data.registrations ?? []) {
      try {
        loaded.push(this.validate({ ...r, timeoutMs: 1000 }, r.proxy ?? null, false));
      } catch (e) {
        this.log.warn({ containerId: r.containerId, err: (e as Error).message }, 'saved registration dropped');
      }
    }
    await Promise.all(
      loaded.map(async (reg) => {
        if (reg.netnsId === undefined) reg.netnsId = await this.proveNetns(reg);
      }),
    );
    for (const reg of loaded) this.regs.set(reg.containerId, reg);
    this.log.info({ pods: this.regs.size }, 'registrations loaded');
  }

  /**
   * The netns identity of a registration an older agent saved without one: that of the
   * namespace now at its path if that namespace has one of the pod's addresses (read as
   * for an unchained ADD; no other live pod has them), else null: unknown, the pod counts
   * as gone (no proxy started, nothing cleaned there; its next sandbox's ADD or its DEL
   * releases it). Not the path's identity as found: a PID reused or a netns name made
   * again while no agent ran would give the pod another pod's namespace, or the node's,
   * to start its proxy in and to clean at its DEL.
   */
  private async proveNetns(reg: Registration): Promise<string | null> {
    const id = netnsIdentity(reg.netns);
    let found: string[] = [];
    if (id !== null) {
      try {
        found = await (this.o.podAddresses ?? podAddressesIn)(reg.netns);
      } catch {
        // no address there: not proved
      }
    }
    // the same namespace all along the read
    if (id !== null && found.some((a) => reg.addresses.includes(a)) && netnsIdentity(reg.netns) === id) return id;
    if (id !== null) {
      this.log.warn({ pod: `${reg.podNamespace}/${reg.podName}`, containerId: reg.containerId, netns: reg.netns, found }, 'saved registration without a netns identity: the namespace at its path has none of the pod\'s addresses: counted as gone');
    }
    return null;
  }

  private save(): void {
    const ids = new Map<string, ProxyId | null>();
    for (const a of this.agents.values()) for (const [n, id] of a.proxyIds()) ids.set(n, id);
    for (const r of this.regs.values()) if (ids.has(r.podName)) r.proxy = ids.get(r.podName)!;
    const tmp = `${this.stateFile}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify({ registrations: [...this.regs.values()] }, null, 2) + '\n', { mode: 0o600 });
    renameSync(tmp, this.stateFile);
  }

  private async agentFor(project: string): Promise<ProjectAgent> {
    let a = this.agents.get(project);
    if (a) return a;
    const make = this.o.makeAgent ?? ((o: AgentOptions) => new Agent(o));
    a = make({
      registry: this.o.registry,
      node: this.o.node,
      project,
      registrations: () => [...this.regs.values()].filter((r) => r.podNamespace === project && !this.releasing.has(r.containerId)),
      onProxyChange: () => this.save(),
      runDir: join(this.o.runDir, project),
      log: this.log.child({ project }),
      tencMain: this.o.tencMain,
      podLogLevel: this.o.podLogLevel,
      dns: this.o.dns,
      classifyCidrs: this.o.classifyCidrs,
      clusterDns: this.o.clusterDns,
      clusterDomain: this.o.clusterDomain,
      hooks: this.o.hooks,
    });
    this.agents.set(project, a);
    await a.start();
    return a;
  }

  private async protectedProject(ns: string): Promise<boolean> {
    if (this.o.projects && !this.o.projects.includes(ns)) return false;
    return (await this.o.registry.projects()).includes(ns);
  }

  /**
   * The registration of a cni-add: validate(), and for an unchained one (no addresses in
   * the request) the addresses read in the pod's netns once everything else is valid,
   * checked as a chained ADD's.
   */
  private async registrationOf(m: Record<string, unknown>): Promise<Registration> {
    if (m.addresses !== undefined) return this.validate(m, null);
    const reg = this.validate(m, null, true, false);
    let found: string[];
    try {
      found = await (this.o.podAddresses ?? podAddressesIn)(reg.netns);
    } catch (e) {
      throw new RequestError('EADDRNOTAVAIL', (e as Error).message);
    }
    const addresses = checkAddresses(found);
    this.log.info({ pod: `${reg.podNamespace}/${reg.podName}`, netns: reg.netns, addresses }, 'ADD without addresses (unchained): read in the pod\'s netns');
    return { ...reg, addresses };
  }

  private validate(m: Record<string, unknown>, proxy: ProxyId | null, checkNs = true, withAddresses = true): Registration {
    const containerId = str(m.containerId, 'containerId', CONTAINER_ID);
    const netns = checkNs ? checkNetns(m.netns) : str(m.netns, 'netns', /^\//);
    // taken at ADD (the namespace checkNetns just found); a saved one as saved (load proves a missing one)
    const netnsId = checkNs ? netnsIdentity(netns) : typeof m.netnsId === 'string' && NETNS_ID.test(m.netnsId) ? m.netnsId : undefined;
    if (netnsId === null) throw new RequestError('EINVAL', `netns: ${netns} does not exist`);
    const ifname = str(m.ifname, 'ifname', /^[^/:\s]{1,15}$/);
    const podNamespace = podNamespaceOf(m);
    // a protected pod's name names its TencPeer, its registry entries and its files:
    // lowercase letters, digits and "-", as every pod a Deployment, StatefulSet or Job
    // makes (a name with dots, which Kubernetes allows, is refused here and only in a
    // protected namespace)
    const podName = str(m.podName, 'podName', NAME, 'has characters other than lowercase letters, digits and "-": tenc protects only pods named so');
    const podUid = typeof m.podUid === 'string' && m.podUid.length <= 64 ? m.podUid : '';
    const addresses = withAddresses ? checkAddresses(m.addresses) : [];
    return { containerId, netns, netnsId, ifname, podNamespace, podName, podUid, addresses, proxy };
  }

  private async handle(m: Record<string, unknown>): Promise<unknown> {
    switch (m.op) {
      case 'cni-status':
        return { projects: [...this.agents.keys()] };
      case 'cni-add': {
        // marked deleted by a DEL of the container arriving before this ADD registered it
        const ticket = { deleted: false };
        const id = typeof m.containerId === 'string' ? m.containerId : '';
        let tickets = this.adding.get(id);
        if (!tickets) this.adding.set(id, (tickets = new Set()));
        tickets.add(ticket);
        try {
          return await this.add(m, ticket);
        } finally {
          tickets.delete(ticket);
          if (tickets.size === 0 && this.adding.get(id) === tickets) this.adding.delete(id);
        }
      }
      case 'cni-del': {
        const containerId = str(m.containerId, 'containerId', CONTAINER_ID);
        // an ADD of the container still reading the registry or its netns: it gives up
        // rather than register after this DEL (the plugin gave up on it, the runtime DELs)
        for (const t of this.adding.get(containerId) ?? []) t.deleted = true;
        const reg = await this.release(containerId);
        if (reg) this.log.info({ pod: `${reg.podNamespace}/${reg.podName}`, containerId }, 'DEL: pod released');
        return {};
      }
      case 'cni-check': {
        const containerId = str(m.containerId, 'containerId', CONTAINER_ID);
        const reg = this.regs.get(containerId);
        if (!reg) {
          if (typeof m.podNamespace === 'string' && !(await this.protectedProject(m.podNamespace))) return {};
          throw new RequestError('ENOENT', `container ${containerId} is not registered`);
        }
        const agent = await this.agentFor(reg.podNamespace);
        const timeoutMs = typeof m.timeoutMs === 'number' && m.timeoutMs >= 100 && m.timeoutMs <= 120_000 ? m.timeoutMs : 5000;
        await agent.whenReady(reg.podName, timeoutMs);
        const why = await agent.check(reg.podName);
        if (why) throw new RequestError('EIO', `pod ${reg.podNamespace}/${reg.podName}: ${why}`);
        return {};
      }
      default:
        throw new RequestError('EINVAL', `op: ${JSON.stringify(m.op)} is not one of cni-add, cni-del, cni-check, cni-status`);
    }
  }

  /**
   * cni-add. One deadline, timeoutMs from the request's arrival, for all of it: the
   * registry and the netns read before the registration (the plugin gives up a second
   * after it, and the runtime's DEL then finds nothing to release), and making the pod
   * fail closed after it. Nothing is registered after the deadline or after a DEL of
   * the container (ticket.deleted): such a registration would outlive its sandbox.
   */
  private async add(m: Record<string, unknown>, ticket: { deleted: boolean }): Promise<unknown> {
    const timeoutMs = typeof m.timeoutMs === 'number' && m.timeoutMs >= 100 && m.timeoutMs <= 120_000 ? m.timeoutMs : 5000;
    const deadline = Date.now() + timeoutMs;
    // an unprotected namespace's pod is passed through before anything else of it is
    // checked: tenc's rules for a pod (its name, its addresses) are not that pod's
    const ns = podNamespaceOf(m);
    const shown = `${ns}/${typeof m.podName === 'string' ? m.podName.slice(0, 253) : '?'}`;
    const late = () => new RequestError('ETIMEDOUT', `pod ${shown} not registered within ${timeoutMs} ms (the registry or the pod's netns slow to answer): nothing registered`);
    if (!(await byDeadline(this.protectedProject(ns), deadline, late))) {
      this.log.info({ pod: shown }, 'ADD: namespace not protected, passed through');
      return { protected: false };
    }
    const reg = await byDeadline(this.registrationOf(m), deadline, late);
    const pod = `${reg.podNamespace}/${reg.podName}`;
    const agent = await byDeadline(this.agentFor(reg.podNamespace), deadline, late);
    // the pod's earlier sandbox whose netns is gone (its DEL never reached tenc, or this
    // agent kept it from before a restart): released here as a DEL would, or else it
    // would refuse every later sandbox of the pod. Gone also when its path names another
    // namespace now (registeredNetns), and so also the same container's registration
    // with a namespace since gone: released, then registered with the one it has now
    for (;;) {
      const stale = [...this.regs.values()].find(
        (r) => r.podNamespace === reg.podNamespace && r.podName === reg.podName && !this.releasing.get(r.containerId)?.done && !registeredNetns(r),
      );
      if (!stale) break;
      this.log.warn({ pod, containerId: stale.containerId, netns: stale.netns }, 'ADD: the pod\'s earlier sandbox is still registered but its netns is gone (or its path names another namespace now): released');
      const busy = () => new RequestError('EEXIST', `pod ${pod}: its container ${stale.containerId} (netns ${stale.netns} gone) is still being released: try again`);
      try {
        await byDeadline(this.release(stale.containerId), deadline, busy);
      } catch (e) {
        throw e instanceof RequestError ? e : new RequestError('EEXIST', `pod ${pod}: its container ${stale.containerId} (netns ${stale.netns} gone) could not be released: ${(e as Error).message}: try again`);
      }
    }
    if (ticket.deleted) throw new RequestError('ECANCELED', `container ${reg.containerId}: DELeted before its ADD registered it: not registered`);
    const old = this.regs.get(reg.containerId);
    for (const r of this.regs.values()) {
      if (r.podNamespace !== reg.podNamespace || r.podName !== reg.podName) continue;
      // the pod's last sandbox is still being released (its DEL timed out in the plugin
      // and was answered by a retry, or its release failed): its proxy and namespace
      // are not gone yet (also the same container ADDed again after its DEL: the release
      // would clean what this ADD puts in place)
      if (this.releasing.has(r.containerId)) throw new RequestError('EEXIST', `pod ${pod}: its container ${r.containerId} is still being released: try again`);
      // one sandbox per pod name: a new sandbox of the pod waits (EEXIST, code 11: the
      // runtime retries) until the old one is DELeted
      if (r.containerId !== reg.containerId) throw new RequestError('EEXIST', `pod ${pod} is registered with container ${r.containerId}: DEL it first`);
    }
    if (old && old.netns !== reg.netns) throw new RequestError('EEXIST', `container ${reg.containerId} is registered with netns ${old.netns}`);
    if (!old) {
      this.regs.set(reg.containerId, reg);
      this.save();
    }
    // the agent makes the pod fail closed itself; an error leaves the registration (the runtime's DEL cleans)
    const prepared = agent.prepare(reg).catch((e: Error) => {
      throw new RequestError('EIO', `pod ${pod}: cannot make it fail-closed: ${e.message}`);
    });
    await byDeadline(prepared, deadline, () => new RequestError('ETIMEDOUT', `pod ${pod} not fail-closed within ${timeoutMs} ms`));
    if (this.o.cniWait === 'proxy' && !(await agent.whenReady(reg.podName, Math.max(0, deadline - Date.now())))) {
      throw new RequestError('ETIMEDOUT', `pod ${pod}: proxy not running within ${timeoutMs} ms`);
    }
    this.log.info({ pod, containerId: reg.containerId }, 'ADD: pod fail-closed');
    return { protected: true };
  }

  /**
   * Releases a registered container (CNI DEL, or an ADD finding the pod's earlier sandbox
   * gone): its proxy stopped, its netns cleaned, its key withdrawn. The registration is
   * forgotten only once that succeeded: a release that failed, or that the agent did not
   * live to finish, is done again by the next DEL. A release already running is waited
   * for. The registration released; null when the container is not registered.
   */
  private async release(containerId: string): Promise<Registration | null> {
    const reg = this.regs.get(containerId);
    if (!reg) return null;
    const running = this.releasing.get(containerId)?.done;
    if (running) {
      await running;
      return reg;
    }
    const entry: { done: Promise<void> | null } = { done: null };
    this.releasing.set(containerId, entry);
    const done = this.agentFor(reg.podNamespace)
      .then((a) => a.release(reg.podName, reg))
      .then(
        () => {
          this.regs.delete(containerId);
          this.releasing.delete(containerId);
          this.save();
        },
        (e: Error) => {
          entry.done = null;
          this.log.warn({ pod: `${reg.podNamespace}/${reg.podName}`, containerId, err: e.message }, 'release failed: the pod stays registered, released again by the next DEL');
          throw e;
        },
      );
    entry.done = done;
    await done;
    return reg;
  }

  private async listen(): Promise<void> {
    const dir = dirname(this.socket);
    if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (existsSync(this.socket)) {
      if (await socketIsLive(this.socket)) throw new Error(`${this.socket}: another tenc agent is serving it`);
      unlinkSync(this.socket);
    }
    const server = createServer((c) => this.serve(c));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // 0600 from the start: no window where another user could connect
      const old = process.umask(0o177);
      server.listen(this.socket, () => {
        process.umask(old);
        resolve();
      });
    });
    chmodSync(this.socket, 0o600);
    this.server = server;
  }

  private serve(c: Socket): void {
    let buf = '';
    let refused = false;
    c.setEncoding('utf8');
    c.on('error', () => {});
    c.on('data', (d: string) => {
      if (refused) return; // the rest of an over-long line: read and dropped, so the client's write ends and it reads the answer
      buf += d;
      if (buf.length > MAX_LINE) {
        refused = true;
        buf = '';
        c.end(JSON.stringify({ ok: false, error: { code: 'E2BIG', message: `request over ${MAX_LINE} bytes` } }) + '\n');
        // closed once the client has closed its end (it read the answer), a second at most
        const t = setTimeout(() => c.destroy(), 1000).unref();
        c.once('close', () => clearTimeout(t));
        return;
      }
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let m: Record<string, unknown>;
        try {
          m = JSON.parse(line);
          if (typeof m !== 'object' || m === null || Array.isArray(m)) throw new Error('not an object');
        } catch {
          c.write(JSON.stringify({ ok: false, error: { code: 'EINVAL', message: 'request is not a JSON object' } }) + '\n');
          continue;
        }
        const badId = idProblem(m.id);
        if (badId) {
          c.write(JSON.stringify({ ok: false, error: { code: 'EINVAL', message: badId } }) + '\n');
          continue;
        }
        const t0 = performance.now();
        const op = typeof m.op === 'string' && m.op.startsWith('cni-') ? m.op.slice(4).toUpperCase() : null;
        const done = (result: string) => op !== null && this.o.hooks?.cniRequest?.(op, result, (performance.now() - t0) / 1000);
        this.handle(m).then(
          (result) => {
            done('ok');
            if (c.writable) c.write(JSON.stringify({ id: m.id, ok: true, result }) + '\n');
          },
          (e) => {
            const code = e instanceof RequestError ? e.code : 'EIO';
            done(code);
            if (!(e instanceof RequestError)) this.log.error({ err: (e as Error).message }, 'node socket request failed');
            if (c.writable) c.write(JSON.stringify({ id: m.id, ok: false, error: { code, message: (e as Error).message } }) + '\n');
          },
        ).catch(() => c.destroy()); // an answer that cannot be written ends the connection, never the agent
      }
    });
  }

  /** Stops serving; the proxies stay (fail-closed, published) for the next agent to adopt. */
  async stop(): Promise<void> {
    if (this.unregisteredTimer) clearInterval(this.unregisteredTimer);
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.server = null;
    for (const a of this.agents.values()) await a.stop();
    // a run dir start() refused is not written in
    if (this.runDirChecked && existsSync(this.o.runDir)) this.save();
    this.log.info({ pods: this.regs.size }, 'agent stopped; proxies left running');
  }
}
