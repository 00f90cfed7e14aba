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
 *   cni-del    {containerId} -> {}: the proxy stopped, the netns cleaned (unknown: {} too)
 *   cni-check  {containerId, netns, podNamespace, podName, timeoutMs} -> {} or an error; a
 *              proxy still starting (ADD answers before it runs) is waited for up to timeoutMs
 *   cni-status -> {projects}
 *
 * The registrations (and the pid + start time of each pod's proxy) are kept in
 * RUNDIR/registrations.json (0600, written atomically), so a restarted agent adopts
 * the running proxies and serves DEL for pods registered before it stopped.
 * Stopping the agent leaves every proxy running (fail-closed, keys published).
 */
import { createServer, type Server, type Socket } from 'node:net';
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { idProblem, socketIsLive } from '../control/socket.js';
import { parseAddress } from '../net/address.js';
import { silentLogger, type Logger } from '../log.js';
import { Agent, type AgentOptions } from './agent.js';
import type { ProxyId, Registration } from './proxies.js';
import { isNamespaceFile } from '../io/nsfs.js';
import { podAddressesIn } from './netns.js';
import { DNS_LABEL as NAME, NAMESPACE_NAME as NAMESPACE } from '../net/names.js';

export const DEFAULT_AGENT_SOCKET = '/run/tenc/agent.sock';
const MAX_LINE = 64 * 1024;
const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$/;

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
  /** DELs whose release still runs, by container: a retried DEL waits for it, an ADD of the pod's next sandbox is refused meanwhile. */
  private readonly releasing = new Map<string, { podNamespace: string; podName: string; done: Promise<void> }>();
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
    this.load();
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
        const registered = new Set([...this.regs.values()].filter((r) => r.podNamespace === project && existsSync(r.netns)).map((r) => r.podName));
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

  private load(): void {
    if (!existsSync(this.stateFile)) return;
    const st = lstatSync(this.stateFile);
    if (!st.isFile() || (st.mode & 0o077) !== 0 || st.uid !== process.getuid!()) {
      throw new Error(`${this.stateFile}: not a regular file of this user with mode 0600 (mode ${(st.mode & 0o777).toString(8)}): refusing it`);
    }
    const data = JSON.parse(readFileSync(this.stateFile, 'utf8')) as { registrations?: Registration[] };
    for (const r of data.registrations ?? []) {
      try {
        this.regs.set(r.containerId, this.validate({ ...r, timeoutMs: 1000 }, r.proxy ?? null, false));
      } catch (e) {
        this.log.warn({ containerId: r.containerId, err: (e as Error).message }, 'saved registration dropped');
      }
    }
    this.log.info({ pods: this.regs.size }, 'registrations loaded');
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
      registrations: () => [...this.regs.values()].filter((r) => r.podNamespace === project),
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
    const ifname = str(m.ifname, 'ifname', /^[^/:\s]{1,15}$/);
    const podNamespace = podNamespaceOf(m);
    // a protected pod's name names its TencPeer, its registry entries and its files:
    // lowercase letters, digits and "-", as every pod a Deployment, StatefulSet or Job
    // makes (a name with dots, which Kubernetes allows, is refused here and only in a
    // protected namespace)
    const podName = str(m.podName, 'podName', NAME, 'has characters other than lowercase letters, digits and "-": tenc protects only pods named so');
    const podUid = typeof m.podUid === 'string' && m.podUid.length <= 64 ? m.podUid : '';
    const addresses = withAddresses ? checkAddresses(m.addresses) : [];
    return { containerId, netns, ifname, podNamespace, podName, podUid, addresses, proxy };
  }

  private async handle(m: Record<string, unknown>): Promise<unknown> {
    switch (m.op) {
      case 'cni-status':
        return { projects: [...this.agents.keys()] };
      case 'cni-add': {
        const timeoutMs = typeof m.timeoutMs === 'number' && m.timeoutMs >= 100 && m.timeoutMs <= 120_000 ? m.timeoutMs : 5000;
        // an unprotected namespace's pod is passed through before anything else of it is
        // checked: tenc's rules for a pod (its name, its addresses) are not that pod's
        const ns = podNamespaceOf(m);
        if (!(await this.protectedProject(ns))) {
          this.log.info({ pod: `${ns}/${typeof m.podName === 'string' ? m.podName.slice(0, 253) : '?'}` }, 'ADD: namespace not protected, passed through');
          return { protected: false };
        }
        const reg = await this.registrationOf(m);
        // the pod's last sandbox is still being released (its DEL timed out in the
        // plugin and was answered by a retry): its proxy and namespace are not gone yet
        // (also the same container ADDed again after its DEL: the release would clean what
        // this ADD puts in place)
        for (const [id, r] of this.releasing) {
          if (r.podNamespace === reg.podNamespace && r.podName === reg.podName) {
            throw new RequestError('EEXIST', `pod ${reg.podNamespace}/${reg.podName}: its container ${id} is still being released: try again`);
          }
        }
        const old = this.regs.get(reg.containerId);
        // one sandbox per pod name: a new sandbox of the pod waits (EEXIST, code 11: the runtime
        // retries) until the old one is DELeted
        for (const r of this.regs.values()) {
          if (r.podNamespace === reg.podNamespace && r.podName === reg.podName && r.containerId !== reg.containerId) {
            throw new RequestError('EEXIST', `pod ${reg.podNamespace}/${reg.podName} is registered with container ${r.containerId}: DEL it first`);
          }
        }
        if (old && old.netns !== reg.netns) throw new RequestError('EEXIST', `container ${reg.containerId} is registered with netns ${old.netns}`);
        if (!old) {
          this.regs.set(reg.containerId, reg);
          this.save();
        }
        const agent = await this.agentFor(reg.podNamespace);
        // one deadline for the whole ADD (the plugin waits timeoutMs and a second more)
        const deadline = Date.now() + timeoutMs;
        const late = new Promise<false>((r) => setTimeout(() => r(false), timeoutMs).unref());
        // the agent makes the pod fail closed itself; an error leaves the registration (the runtime's DEL cleans)
        let failed: Error | null = null;
        const prepared = agent.prepare(reg).then(
          () => true as const,
          (e: Error) => ((failed = e), true as const),
        );
        if (!(await Promise.race([prepared, late]))) {
          throw new RequestError('ETIMEDOUT', `pod ${reg.podNamespace}/${reg.podName} not fail-closed within ${timeoutMs} ms`);
        }
        if (failed !== null) throw new RequestError('EIO', `pod ${reg.podNamespace}/${reg.podName}: cannot make it fail-closed: ${(failed as Error).message}`);
        if (this.o.cniWait === 'proxy' && !(await agent.whenReady(reg.podName, Math.max(0, deadline - Date.now())))) {
          throw new RequestError('ETIMEDOUT', `pod ${reg.podNamespace}/${reg.podName}: proxy not running within ${timeoutMs} ms`);
        }
        this.log.info({ pod: `${reg.podNamespace}/${reg.podName}`, containerId: reg.containerId }, 'ADD: pod fail-closed');
        return { protected: true };
      }
      case 'cni-del': {
        const containerId = str(m.containerId, 'containerId', CONTAINER_ID);
        // a DEL retried while the first one still releases (the plugin gave up waiting)
        // waits for that same release: answered only once the pod is really gone
        const busy = this.releasing.get(containerId);
        if (busy) {
          await busy.done;
          return {};
        }
        const reg = this.regs.get(containerId);
        if (!reg) return {};
        const agent = await this.agentFor(reg.podNamespace);
        this.regs.delete(containerId);
        this.save();
        const done = agent.release(reg.podName, reg.netns).finally(() => this.releasing.delete(containerId));
        this.releasing.set(containerId, { podNamespace: reg.podNamespace, podName: reg.podName, done });
        await done;
        this.save();
        this.log.info({ pod: `${reg.podNamespace}/${reg.podName}`, containerId }, 'DEL: pod released');
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
    c.setEncoding('utf8');
    c.on('error', () => {});
    c.on('data', (d: string) => {
      buf += d;
      if (buf.length > MAX_LINE) {
        c.end(JSON.stringify({ ok: false, error: { code: 'E2BIG', message: `request over ${MAX_LINE} bytes` } }) + '\n');
        c.destroy();
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
