/**
 * `npm run bench -- density [--pods=N] [--starts=M] [--idle=S] [--peers=P] [--prepare=0]
 *  [--ab=FLAGS;FLAGS...] [--ab-env=K=V,K=V;...] [--ab-main=PATH] [--ab-standby] [--standby-workers] [--one-process]`: what a node pays per pod, and how fast a pod
 * is protected.
 *
 *   1. Density: N idle `tenc pod` processes (default 10) per variant, each in a
 *      namespace of its own on one bridge, started the way the agent starts them
 *      (agent/pod-exec.ts: nsenter --net, the pod's node flags; a config with enforce
 *      and P peers, default 8); after --idle seconds (default 8) each one's RSS, PSS,
 *      private dirty memory and its parts (V8 heap pages, malloc heap, file-backed)
 *      from /proc/PID/smaps, and the node's total. Anchors in the same run: one
 *      wireguard-go (Debian's) per namespace, idle, and one bare `node` per namespace
 *      (an idle event loop, nothing loaded: what any node process costs).
 *   2. Start latency: M starts (default 50), one at a time, warm page cache, as the
 *      agent does at CNI ADD: first its prepare step (Agent.prepare: the config's
 *      failClosedScripts through `ip -batch -` per family and one `nft -f -` in the pod's namespace),
 *      timed alone, then the proxy spawned at once, each milestone timed from its spawn
 *      by the pod's own log lines (pino `time`, ms):
 *        key ready       "public key"            (private key made, public key printed)
 *        fail-closed     "fail closed"           (the proxy has adopted/replaced the rule,
 *                                                 guards and enforcement)
 *        socket ready    "control socket listening"
 *        handshake ready the first set-peer answered on the socket (a peer can be
 *                        handshaken with from here)
 *      reported as p50/p99. --prepare=0 skips the prepare step (the proxy makes the
 *      pod fail closed itself, as before the agent did it).
 *   Variants (A/B in one run): the default is the pod as the agent starts it; --ab
 *   adds one variant per ';'-separated node flag list ("none": no flags), --ab-env
 *   one per ';'-separated list of K=V environment variables (e.g. TENC_IDLE_SETTLE=0),
 *   and
 *   --ab-main=PATH one with another build's dist/src/cli/main.js (e.g. a copy of the
 *   previous commit's dist). Memory: every variant's pods idle at the same time;
 *   starts: the variants take turns. As the agent does, pods start as standby proxies
 *   handed their pod (agent/standby.ts; milestones timed from the handoff) unless
 *   TENC_POD_STANDBY=0; --ab-standby adds a variant started the other way.
 *   --standby-workers adds two rows to the memory table, idle at the same time: N
 *   standbys (`tenc pod --standby`, not handed a pod) as N processes, and N standbys as
 *   N worker threads of one node process (its memory / N): whether several pods per
 *   process could share by threads.
 *   --one-process adds one more row, idle at the same time: a pod host (`tenc pod
 *   --host`, started as the agent starts it: agent/host.ts) handed N pods (the same
 *   config, peers and enforcement), each in a namespace of its own; its memory / N,
 *   and each pod's handoff -> key and -> control socket answering (p50/p99).
 *
 * Figures are reported, never asserted; run it on an otherwise idle machine.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import type { BenchContext } from './lib/bench.js';
import { numberFlag } from './lib/bench.js';
import { Children, stopChild } from './lib/procs.js';
import { markdownTable } from './lib/table.js';
import { percentile } from './lib/traffic.js';
import { podNodeFlags, podSpawnArgs } from '../src/agent/pod-exec.js';
import { STANDBY_READY_LINE } from '../src/control/handoff.js';
import { Standby, standbyEnabled } from '../src/agent/standby.js';
import { HostProcess } from '../src/agent/host.js';
import { readPublicKeyLine } from '../src/control/keyline.js';
import { loadConfig } from '../src/control/config.js';
import { failClosedIn } from '../src/agent/netns.js';
import { controlRequest } from '../src/control/socket.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const TENC_MAIN = join(REPO, 'dist', 'src', 'cli', 'main.js');
const PREFIX = 'tdn';
const HUB = `${PREFIX}-hub`;

/** Memory of one process from /proc/PID/smaps, KiB. */
export interface Smaps {
  rss: number;
  pss: number;
  privateDirty: number;
  /** Private dirty pages of anonymous mappings of 256 KiB (V8 heap pages). */
  v8Pages: number;
  /** Private dirty pages of [heap] (malloc). */
  mallocHeap: number;
  /** Other anonymous private dirty memory (thread stacks, mmap'ed malloc arenas, the addon's buffers). */
  otherAnon: number;
  /** PSS of file-backed mappings (the node binary, libraries: shared between the pods). */
  pssFile: number;
}

/** Sums /proc/PID/smaps text into Smaps (KiB). Exported for its unit test. */
export function parseSmaps(text: string): Smaps {
  const out: Smaps = { rss: 0, pss: 0, privateDirty: 0, v8Pages: 0, mallocHeap: 0, otherAnon: 0, pssFile: 0 };
  let name = '';
  let size = 0;
  for (const line of text.split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+(?:\s+(.*))?$/.exec(line);
    if (head) {
      name = head[1] ?? '';
      continue;
    }
    const m = /^(\w+):\s+(\d+) kB$/.exec(line);
    if (!m) continue;
    const v = Number(m[2]);
    switch (m[1]) {
      case 'Size':
        size = v;
        break;
      case 'Rss':
        out.rss += v;
        break;
      case 'Pss':
        out.pss += v;
        if (name.startsWith('/')) out.pssFile += v;
        break;
      case 'Private_Dirty':
        out.privateDirty += v;
        if (name === '[heap]') out.mallocHeap += v;
        else if (name === '' && size === 256) out.v8Pages += v;
        else if (name === '' || name.startsWith('[stack') || name.startsWith('[anon')) out.otherAnon += v;
        break;
    }
  }
  return out;
}

function smapsOf(pid: number): Smaps | undefined {
  try {
    return parseSmaps(readFileSync(`/proc/${pid}/smaps`, 'utf8'));
  } catch {
    return undefined;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The namespaces: a hub with a bridge, and pod namespaces on it (10.78.x.y/16). */
class Topology {
  readonly made: string[] = [];
  constructor(private readonly c: Children) {}

  async hub(): Promise<void> {
    await this.c.check('ip', ['netns', 'add', HUB]);
    this.made.push(HUB);
    await this.c.check('ip', ['-n', HUB, 'link', 'add', 'br0', 'type', 'bridge']);
    await this.c.check('ip', ['-n', HUB, 'link', 'set', 'br0', 'up']);
    await this.c.check('ip', ['-n', HUB, 'addr', 'add', '10.78.0.1/16', 'dev', 'br0']);
  }

  /** Namespace `${PREFIX}-<i>` with eth0 on the hub's bridge; returns its name and address. */
  async pod(i: number): Promise<{ ns: string; address: string }> {
    const ns = `${PREFIX}-${i}`;
    const address = `10.78.${1 + (i >> 8)}.${i & 255}`;
    await this.c.check('ip', ['netns', 'add', ns]);
    this.made.push(ns);
    await this.c.check('ip', ['-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `h${i}`, 'netns', HUB]);
    await this.c.check('ip', ['-n', HUB, 'link', 'set', `h${i}`, 'master', 'br0', 'up']);
    await this.c.check('ip', ['-n', ns, 'addr', 'add', `${address}/16`, 'dev', 'eth0']);
    await this.c.check('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    await this.c.check('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    return { ns, address };
  }

  async down(): Promise<void> {
    for (const ns of this.made.reverse()) await this.c.run('ip', ['netns', 'del', ns]);
    this.made.length = 0;
  }
}

interface Started {
  child: ChildProcess;
  t0: number;
  logFile: string;
  socket: string;
  publicKey: Promise<string | Error>;
}

/** How a pod is started: which build's main.js, with which node flags. */
export interface Variant {
  name: string;
  main: string;
  flags: string[];
  /** Extra environment of the pod process (--ab-env). */
  env?: Record<string, string>;
  /** Started as a standby and handed the pod (agent/standby.ts), as the agent does unless TENC_POD_STANDBY=0. */
  standby?: boolean;
}

/** The variants of a run: a process per pod as the agent starts one with hosts off (TENC_POD_HOST=0) first, then --ab flag lists and --ab-main. Exported for its unit test. */
export function variantsOf(ab: string | undefined, abMain: string | undefined, main: string, agentFlags: string[], abEnv?: string, standby = false, abStandby = false): Variant[] {
  const label = (f: string[]) => (f.length ? f.join(' ') : 'no flags');
  const how = (sb: boolean) => (sb ? 'standby, ' : '');
  const out: Variant[] = [{ name: `process per pod (${how(standby)}${label(agentFlags)})`, main, flags: agentFlags, standby }];
  if (abStandby) out.push({ name: `${standby ? 'new process' : 'standby'} (${label(agentFlags)})`, main, flags: agentFlags, standby: !standby });
  for (const part of (ab ?? '').split(';').map((x) => x.trim()).filter((x) => x !== '')) {
    const flags = part === 'none' ? [] : part.split(/\s+/);
    const bad = flags.find((f) => !f.startsWith('--'));
    if (bad !== undefined) throw new Error(`--ab: "${bad}" is not a node flag (lists of --flags separated by ';', or "none")`);
    out.push({ name: label(flags), main, flags });
  }
  for (const part of (abEnv ?? '').split(';').map((x) => x.trim()).filter((x) => x !== '')) {
    const env: Record<string, string> = {};
    for (const kv of part.split(',').map((x) => x.trim())) {
      const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(kv);
      if (!m) throw new Error(`--ab-env: "${kv}" is not NAME=VALUE (lists of NAME=VALUE separated by ',', variants by ';')`);
      env[m[1]] = m[2];
    }
    out.push({ name: `${how(standby)}${label(agentFlags)}, ${part}`, main, flags: agentFlags, env, standby });
  }
  if (abMain !== undefined) {
    if (!existsSync(abMain)) throw new Error(`--ab-main: ${abMain} does not exist`);
    out.push({ name: `--ab-main (${how(standby)}${label(agentFlags)})`, main: abMain, flags: agentFlags, standby });
  }
  return out;
}

/** The pod config the bench starts: enforce, `peers` peers (allowed IPs 10.79.x.y/32, endpoints on the bridge); `own` overrides (--one-process). */
function podConfig(address: string, psk: string, socket: string, peers: string[], own: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    addresses: [address],
    listenPort: 51820,
    ...own,
    pskFile: psk,
    controlSocket: socket,
    enforce: true,
    failClosedOnStop: false,
    logLevel: 'info',
    peers: peers.map((publicKey, i) => ({ publicKey, endpoint: `10.78.200.${i + 1}:51820`, allowedIps: [`10.79.${i >> 8}.${i & 255}/32`] })),
  };
}

/** Writes the config of pod `tag` (0600); returns its path and socket. */
function writePodConfig(dir: string, address: string, psk: string, tag: string, peers: string[], own: Record<string, unknown> = {}): { config: string; socket: string; logFile: string } {
  const socket = join(dir, `${tag}.sock`);
  const config = join(dir, `${tag}.json`);
  writeFileSync(config, JSON.stringify(podConfig(address, psk, socket, peers, own)), { mode: 0o600 });
  return { config, socket, logFile: join(dir, `${tag}.log`) };
}

/**
 * Starts `tenc pod` in `ns` as the agent does: a standby (agent/standby.ts) started
 * and waited for untimed, t0 at its handoff; or a new process (agent/pod-exec.ts),
 * t0 at its spawn.
 */
async function startPod(v: Variant, ns: string, files: { config: string; socket: string; logFile: string }): Promise<Started> {
  if (v.standby) {
    const sb = new Standby({ main: v.main, flags: v.flags, logFile: `${files.logFile}.standby`, env: v.env ? { ...process.env, ...v.env } : process.env });
    if (!(await sb.ready)) throw new Error(`standby did not get ready (${await sb.exited}): ${sb.logTail()}`);
    const t0 = Date.now();
    const child = sb.handOff({ netns: `/run/netns/${ns}`, config: files.config, log: files.logFile });
    const publicKey = readPublicKeyLine(child, 30_000);
    void publicKey.then(() => sb.dropLog());
    return { child, t0, logFile: files.logFile, socket: files.socket, publicKey };
  }
  const args = podSpawnArgs(`/run/netns/${ns}`, v.main, files.config, v.flags);
  const fd = openSync(files.logFile, 'w', 0o600);
  const t0 = Date.now();
  const child = spawn('nsenter', args, { stdio: ['ignore', 'pipe', fd], env: v.env ? { ...process.env, ...v.env } : process.env });
  closeSync(fd);
  const publicKey = readPublicKeyLine(child, 30_000);
  return { child, t0, logFile: files.logFile, socket: files.socket, publicKey };
}

/**
 * The agent's prepare step (Agent.prepareNow in agent/agent.ts: agent/netns.ts
 * failClosedIn) for a config: its failClosedScripts through `ip -batch -` per family
 * and one `nft -f -`, all three at once, each started in the pod's namespace.
 * Resolves with the ms it took.
 */
async function prepare(ns: string, configFile: string): Promise<number> {
  const t = performance.now();
  await failClosedIn(`/run/netns/${ns}`, loadConfig(configFile));
  return performance.now() - t;
}

/** ms from t0 to the first log line with message `msg`, or undefined. */
function logMilestone(logFile: string, msg: string, t0: number): number | undefined {
  let text = '';
  try {
    text = readFileSync(logFile, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    if (!line.includes(`"msg":"${msg}"`)) continue;
    try {
      const o = JSON.parse(line) as { time: string | number };
      return new Date(o.time).getTime() - t0;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

async function until(what: string, fn: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

async function controlOk(c: Children, socket: string, args: string[]): Promise<boolean> {
  const r = await c.run(process.execPath, [TENC_MAIN, ...args, '--socket', socket], { timeoutMs: 5000 });
  return r.code === 0;
}

const mib = (kib: number) => (kib / 1024).toFixed(1);

/** Resolves once `child` printed `line` first on stdout; rejects on another first line, an exit or `ms`. */
function firstLine(child: ChildProcess, line: string, what: string, ms = 20_000): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`${what}: no "${line.trim()}" within ${ms} ms`)), ms);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      if (buf.includes('\n')) return;
      buf += d;
      if (!buf.includes('\n')) return;
      clearTimeout(timer);
      const first = buf.slice(0, buf.indexOf('\n') + 1);
      if (first === line) resolve();
      else reject(new Error(`${what}: first line ${JSON.stringify(first)}`));
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code})`));
    });
  });
}

/**
 * One node process (the pod's node flags) running n standbys as worker threads: each
 * worker runs main.js `pod --standby` with a stdin of its own that stays open; the
 * process prints "ready" once every worker printed STANDBY_READY_LINE.
 */
async function startWorkerHost(n: number): Promise<ChildProcess> {
  const code = `
const { Worker } = require('node:worker_threads');
const [n, main, want] = [Number(process.argv[1]), process.argv[2], process.argv[3]];
let ready = 0;
for (let i = 0; i < n; i++) {
  const w = new Worker("process.argv.splice(2, Infinity, 'pod', '--standby'); import(" + JSON.stringify(main) + ");", { eval: true, stdin: true, stdout: true });
  let buf = '';
  w.stdout.setEncoding('utf8').on('data', (d) => {
    if (buf === null) return;
    buf += d;
    if (!buf.includes('\\n')) return;
    const first = buf.slice(0, buf.indexOf('\\n') + 1);
    buf = null;
    if (first !== want) { console.log('worker ' + i + ' printed ' + JSON.stringify(first)); process.exit(1); }
    if (++ready === n) console.log('ready');
  });
  w.on('error', (e) => { console.log('worker ' + i + ': ' + e.message); process.exit(1); });
}`;
  const host = spawn(process.execPath, [...podNodeFlags(), '-e', code, String(n), TENC_MAIN, STANDBY_READY_LINE], { stdio: ['ignore', 'pipe', 'inherit'] });
  await firstLine(host, 'ready\n', `${n} standby workers`, 60_000);
  return host;
}

/** Smaps of one process split evenly over n (a worker's share). */
function share(m: Smaps, n: number): Smaps {
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [k, (v as number) / n])) as unknown as Smaps;
}

/**
 * --one-process: a pod host (`tenc pod --host`, agent/host.ts, as the agent starts
 * it: in its own namespace, here the bench's) handed n pods one after another, each in
 * a namespace of its own with the bench's pod config. Each pod's handoff -> key event
 * and handoff -> control socket answering are timed (ms).
 */
async function startPodHost(nets: { ns: string; address: string }[], dir: string, psk: string, peers: string[], anchors: ChildProcess[]): Promise<{ host: HostProcess; key: number[]; socket: number[] }> {
  const host = new HostProcess({ main: TENC_MAIN, logFile: join(dir, 'pod-host.log') });
  anchors.push(host.child); // stopped with the anchors, also when it fails here
  if (!(await host.ready)) throw new Error(`pod host not ready: ${host.logTail()}`);
  const key: number[] = [];
  const socket: number[] = [];
  for (const [i, n] of nets.entries()) {
    const files = writePodConfig(dir, n.address, psk, `hosted${i}`, peers);
    let exited = '';
    const t0 = performance.now();
    const k = new Promise<number>((resolve, reject) =>
      host.start(
        { netns: `/run/netns/${n.ns}`, config: files.config, log: files.logFile },
        { key: () => resolve(performance.now() - t0), exit: (code, error) => ((exited = `exited ${code}: ${error ?? ''}`), reject(new Error(exited))) },
      ),
    );
    try {
      key.push(await k);
    } catch (e) {
      throw new Error(`hosted pod ${i}: ${(e as Error).message} ${existsSync(files.logFile) ? readFileSync(files.logFile, 'utf8').slice(-400) : ''}`);
    }
    let s: { peers?: unknown[] } = {};
    await until(`hosted pod ${i} answering`, () => controlRequest(files.socket, { op: 'status' }).then((r) => ((s = r as typeof s), true), () => false), 15_000);
    socket.push(performance.now() - t0);
    if (s.peers?.length !== peers.length || exited !== '') throw new Error(`hosted pod ${i}: status ${JSON.stringify(s).slice(0, 200)} ${exited}`);
  }
  return { host, key, socket };
}

export async function run(ctx: BenchContext): Promise<void> {
  const nPods = numberFlag(ctx, 'pods', 10);
  const nStarts = numberFlag(ctx, 'starts', 50);
  const idle = numberFlag(ctx, 'idle', 8);
  const nPeers = numberFlag(ctx, 'peers', 8);
  const withPrepare = ctx.flags.get('prepare') !== '0';
  if (process.getuid?.() !== 0) throw new Error('density needs root (namespaces)');
  if (!existsSync(TENC_MAIN)) throw new Error(`${TENC_MAIN} not built (npm run build)`);
  const variants = variantsOf(ctx.flags.get('ab'), ctx.flags.get('ab-main'), TENC_MAIN, podNodeFlags(), ctx.flags.get('ab-env'), standbyEnabled(), ctx.flags.has('ab-standby'));
  const wg = '/usr/bin/wireguard-go';
  if (!existsSync(wg)) throw new Error(`${wg} missing: run bash netns-scripts/deps.sh`);
  for (const ns of (existsSync('/run/netns') ? readdirSync('/run/netns') : []).filter((n) => n.startsWith(`${PREFIX}-`))) throw new Error(`namespace ${ns} exists: a bench still running, or left over (ip netns del ${ns})`);

  const c = new Children();
  const topo = new Topology(c);
  const dir = mkdtempSync(join(tmpdir(), 'tenc-density-'));
  const psk = join(dir, 'psk');
  writeFileSync(psk, (await c.check(process.execPath, [TENC_MAIN, 'genpsk'])).trim() + '\n', { mode: 0o600 });
  const peers = Array.from({ length: nPeers }, () => randomBytes(32).toString('base64'));
  const pods: Started[] = [];
  const anchors: ChildProcess[] = [];
  ctx.log(`variants: ${variants.map((v, i) => `[${i}] ${v.name}${v.main !== TENC_MAIN ? ` = ${v.main}` : ''}`).join('; ')}\n`);
  try {
    await topo.hub();
    const nets: { ns: string; address: string }[] = [];
    for (let i = 1; i <= nPods * variants.length; i++) nets.push(await topo.pod(i));

    // --- 1. density ---------------------------------------------------------
    ctx.log(`${nPods} idle pods per variant (${nPods * variants.length} at once), one namespace each, ${nPeers} peers each; memory read after ${idle} s idle (KiB from /proc/PID/smaps, shown in MiB)\n`);
    const owner: number[] = [];
    for (const [i, n] of nets.entries()) {
      const v = i % variants.length;
      owner.push(v);
      pods.push(await startPod(variants[v], n.ns, writePodConfig(dir, n.address, psk, `pod${i + 1}`, peers)));
    }
    for (const p of pods) {
      const k = await p.publicKey;
      if (k instanceof Error) throw new Error(`a pod did not start (${k.message}): ${readFileSync(p.logFile, 'utf8').slice(-400)}`);
    }
    for (const p of pods) await until('control socket', () => controlOk(c, p.socket, ['status']), 15_000);
    const wgs: ChildProcess[] = [];
    const bare: ChildProcess[] = [];
    for (const [i, n] of nets.slice(0, nPods).entries()) {
      // interface (and so /var/run/wireguard/NAME.sock) names of this bench's own: a wg0 of another run, left over, holds wg0.sock
      wgs.push(spawn('ip', ['netns', 'exec', n.ns, wg, '-f', `${PREFIX}wg${i}`], { stdio: 'ignore', env: { ...process.env, WG_PROCESS_FOREGROUND: '1' } }));
      bare.push(spawn('nsenter', [`--net=/run/netns/${n.ns}`, '--', process.execPath, '-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' }));
    }
    anchors.push(...wgs, ...bare);
    // --standby-workers: n standbys as processes, and as worker threads of one process
    const standbys: ChildProcess[] = [];
    let workerHost: ChildProcess | null = null;
    if (ctx.flags.has('standby-workers')) {
      for (let i = 0; i < nPods; i++) {
        // as the agent starts them (agent/standby.ts), never handed a pod
        const sb = new Standby({ main: TENC_MAIN, flags: podNodeFlags(), logFile: join(dir, `idle-standby-${i}.log`) });
        standbys.push(sb.child);
        anchors.push(sb.child);
        if (!(await sb.ready)) throw new Error(`idle standby ${i} was not ready: ${sb.logTail()}`);
      }
      workerHost = await startWorkerHost(nPods);
      anchors.push(workerHost);
    }
    // --one-process: n pods in one pod host, each in a namespace of its own
    let podHost: ChildProcess | null = null;
    let hostTimes: { key: number[]; socket: number[] } | null = null;
    if (ctx.flags.has('one-process')) {
      const hostNets: { ns: string; address: string }[] = [];
      for (let i = 1; i <= nPods; i++) hostNets.push(await topo.pod(nets.length + i));
      const h = await startPodHost(hostNets, dir, psk, peers, anchors);
      podHost = h.host.child;
      hostTimes = h;
    }
    await sleep(idle * 1000);
    const memOf = (kids: ChildProcess[], what: string) => {
      const m = kids.map((k) => smapsOf(k.pid!)).filter((x): x is Smaps => x !== undefined);
      if (m.length !== kids.length) throw new Error(`only ${m.length} of ${kids.length} ${what} alive after idling`);
      return m;
    };
    const tencMem = variants.map((v, vi) => memOf(pods.filter((_, i) => owner[i] === vi).map((p) => p.child), `pods of ${v.name}`));
    const wgMem = memOf(wgs, 'wireguard-go');
    const bareMem = memOf(bare, 'bare node');
    const avg = (xs: Smaps[], k: keyof Smaps) => xs.reduce((s, x) => s + x[k], 0) / xs.length;
    const sum = (xs: Smaps[], k: keyof Smaps) => xs.reduce((s, x) => s + x[k], 0);
    const row = (label: string, xs: Smaps[]) => [
      label,
      mib(avg(xs, 'rss')),
      mib(avg(xs, 'pss')),
      mib(avg(xs, 'privateDirty')),
      mib(avg(xs, 'v8Pages')),
      mib(avg(xs, 'mallocHeap')),
      mib(avg(xs, 'otherAnon')),
      mib(avg(xs, 'pssFile')),
      mib(sum(xs, 'pss')),
    ];
    ctx.log(
      markdownTable(
        ['per process (MiB)', 'RSS', 'PSS', 'private dirty', 'V8 heap pages', 'malloc heap', 'other anon', 'PSS file', `total PSS (${nPods})`],
        [
          ...variants.map((v, vi) => row(`tenc pod, ${v.name}`, tencMem[vi])),
          row('bare node (idle event loop)', bareMem),
          row('wireguard-go (Debian)', wgMem),
          ...(workerHost
            ? [
                row(`tenc pod --standby, not handed a pod: ${nPods} processes`, memOf(standbys, 'standbys')),
                row(`tenc pod --standby, not handed a pod: ${nPods} worker threads of one node (its memory / ${nPods})`, Array<Smaps>(nPods).fill(share(memOf([workerHost], 'standby workers')[0]!, nPods))),
              ]
            : []),
          ...(podHost ? [row(`tenc pod --host: ${nPods} pods in one node process, a namespace each (its memory / ${nPods})`, Array<Smaps>(nPods).fill(share(memOf([podHost], 'pod host')[0]!, nPods)))] : []),
        ],
      ),
    );
    if (hostTimes) {
      const q = (xs: number[]) => `${(percentile(xs, 50) ?? NaN).toFixed(0)} / ${(percentile(xs, 99) ?? NaN).toFixed(0)}`;
      ctx.log(`
pod host, ${nPods} pods handed one after another (ms from the start line, p50 / p99): key ${q(hostTimes.key)}, control socket answering ${q(hostTimes.socket)}\n`);
    }
    ctx.log(`\ntenc/wireguard-go PSS per pod: ${(avg(tencMem[0], 'pss') / avg(wgMem, 'pss')).toFixed(2)}x; tenc - bare node, private dirty: ${mib(avg(tencMem[0], 'privateDirty') - avg(bareMem, 'privateDirty'))} MiB\n`);
    for (const a of anchors) await stopChild(a, 'SIGTERM', a === podHost ? 10_000 : 3000);
    anchors.length = 0;
    for (const p of pods) await stopChild(p.child, 'SIGTERM', 5000);
    pods.length = 0;

    // --- 2. start latency -----------------------------------------------------
    type Ms = Record<'prepare' | 'key' | 'failClosed' | 'socket' | 'handshake' | 'addToSocket', number[]>;
    const ms: Ms[] = variants.map(() => ({ prepare: [], key: [], failClosed: [], socket: [], handshake: [], addToSocket: [] }));
    const peerKey = randomBytes(32).toString('base64');
    for (let i = 0; i < nStarts; i++) {
      const vi = i % variants.length;
      const n = nets[i % nets.length];
      const files = writePodConfig(dir, n.address, psk, `start${i}`, peers);
      const prep = withPrepare ? await prepare(n.ns, files.config) : 0;
      const p = await startPod(variants[vi], n.ns, files);
      const k = await p.publicKey;
      if (k instanceof Error) throw new Error(`start ${i}: pod did not start (${k.message}): ${readFileSync(p.logFile, 'utf8').slice(-400)}`);
      await until('control socket', () => existsSync(p.socket), 15_000);
      // in process, as the agent asks (a `tenc set-peer` child would add its own node start, ~300 ms loaded)
      const setPeer = { op: 'set-peer', peer: { publicKey: peerKey, endpoint: '10.78.0.1:51820', allowedIps: ['10.78.0.1/32'] } };
      await until('set-peer answered', () => controlRequest(p.socket, setPeer).then(() => true, () => false), 15_000);
      const m = ms[vi];
      m.handshake.push(Date.now() - p.t0);
      if (withPrepare) m.prepare.push(prep);
      const key = logMilestone(p.logFile, 'public key', p.t0);
      const fc = logMilestone(p.logFile, 'fail closed', p.t0);
      const sock = logMilestone(p.logFile, 'control socket listening', p.t0);
      if (key !== undefined) m.key.push(key);
      if (fc !== undefined) m.failClosed.push(fc);
      if (sock !== undefined) {
        m.socket.push(sock);
        m.addToSocket.push(prep + sock);
      }
      await stopChild(p.child, 'SIGTERM', 5000);
    }
    const q = (xs: number[], p: number) => (xs.length ? `${percentile(xs, p)!.toFixed(0)}` : 'n/a');
    ctx.log(`\n${nStarts} starts, one at a time, variants taking turns; ${withPrepare ? "the agent's prepare step first, then the proxy" : 'no prepare step (--prepare=0): the proxy makes the pod fail closed'}:\n`);
    const rows: string[][] = [];
    for (const [vi, v] of variants.entries()) {
      const m = ms[vi];
      const r = (label: string, xs: number[]) => rows.push([v.name, label, q(xs, 50), q(xs, 99), String(xs.length)]);
      if (withPrepare) r('fail-closed by the agent (prepare: ip -batch x2 + nft -f, from its start)', m.prepare);
      const from = v.standby ? 'from its handoff' : 'from its spawn';
      r(`proxy: key ready (${from})`, m.key);
      r(`proxy: fail-closed in place (${from})`, m.failClosed);
      r(`proxy: control socket ready (${from})`, m.socket);
      r(`proxy: first set-peer answered (${from})`, m.handshake);
      if (withPrepare) r('control socket ready from the start of prepare', m.addToSocket);
    }
    ctx.log(markdownTable(['variant', 'milestone', 'p50 ms', 'p99 ms', 'samples'], rows));
  } finally {
    for (const w of anchors) if (w.exitCode === null) w.kill('SIGKILL');
    for (const p of pods) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    c.killAll('SIGKILL');
    await sleep(300);
    await topo.down();
    rmSync(dir, { recursive: true, force: true });
  }
}
