/**
 * `npm run bench -- density [--pods=N] [--starts=M] [--idle=S]`: what a node pays per
 * pod, and how fast a pod is protected.
 *
 *   1. Density: N idle `tenc pod` processes (default 10), each in a namespace of its
 *      own on one bridge, started the way the agent starts them (nsenter --net, a
 *      config with enforce and failClosedOnStop); after --idle seconds (default 8)
 *      each one's RSS, PSS, private dirty memory and its parts (V8 heap pages,
 *      malloc heap, file-backed) from /proc/PID/smaps, and the node's total. The
 *      anchor in the same run: one wireguard-go (Debian's) per namespace, idle.
 *   2. Start latency: M starts (default 50), one at a time, warm page cache, each
 *      timed from spawn to the pod's own log lines (pino `time`, ms):
 *        key ready       "public key"            (private key made, public key printed)
 *        fail-closed     "fail closed"           (rule + guards + enforcement in place)
 *        socket ready    "control socket listening"
 *        handshake ready the first set-peer answered on the socket (a peer can be
 *                        handshaken with from here)
 *      reported as p50/p99.
 *
 * Figures are reported, never asserted; run it on an otherwise idle machine.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import type { BenchContext } from './lib/bench.js';
import { numberFlag } from './lib/bench.js';
import { Children, stopChild } from './lib/procs.js';
import { markdownTable } from './lib/table.js';
import { percentile } from './lib/traffic.js';

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
  publicKey: Promise<string | null>;
}

/** Starts `tenc pod` in `ns` as the agent does: nsenter --net, enforce, failClosedOnStop. */
function startPod(dir: string, ns: string, address: string, psk: string, tag: string): Started {
  const socket = join(dir, `${tag}.sock`);
  const config = join(dir, `${tag}.json`);
  const logFile = join(dir, `${tag}.log`);
  writeFileSync(config, JSON.stringify({ addresses: [address], listenPort: 51820, pskFile: psk, controlSocket: socket, enforce: true, failClosedOnStop: false, logLevel: 'info' }), { mode: 0o600 });
  const t0 = Date.now();
  const child = spawn('sh', ['-c', `exec nsenter --net=/run/netns/${ns} -- "${process.execPath}" "${TENC_MAIN}" pod --config "${config}" 2>"${logFile}"`], { stdio: ['ignore', 'pipe', 'ignore'] });
  const publicKey = new Promise<string | null>((resolve) => {
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = /^public-key (\S+)\n/.exec(out);
      if (m) resolve(m[1]);
    });
    child.once('exit', () => resolve(null));
  });
  return { child, t0, logFile, socket, publicKey };
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

export async function run(ctx: BenchContext): Promise<void> {
  const nPods = numberFlag(ctx, 'pods', 10);
  const nStarts = numberFlag(ctx, 'starts', 50);
  const idle = numberFlag(ctx, 'idle', 8);
  if (process.getuid?.() !== 0) throw new Error('density needs root (namespaces)');
  if (!existsSync(TENC_MAIN)) throw new Error(`${TENC_MAIN} not built (npm run build)`);
  const wg = '/usr/bin/wireguard-go';
  if (!existsSync(wg)) throw new Error(`${wg} missing: run bash netns-scripts/deps.sh`);
  for (const ns of readdirSync('/run/netns').filter((n) => n.startsWith(`${PREFIX}-`))) throw new Error(`namespace ${ns} exists: a bench still running, or left over (ip netns del ${ns})`);

  const c = new Children();
  const topo = new Topology(c);
  const dir = mkdtempSync(join(tmpdir(), 'tenc-density-'));
  const psk = join(dir, 'psk');
  writeFileSync(psk, (await c.check(process.execPath, [TENC_MAIN, 'genpsk'])).trim() + '\n', { mode: 0o600 });
  const pods: Started[] = [];
  const wgs: ChildProcess[] = [];
  try {
    await topo.hub();
    const nets: { ns: string; address: string }[] = [];
    for (let i = 1; i <= nPods; i++) nets.push(await topo.pod(i));

    // --- 1. density ---------------------------------------------------------
    ctx.log(`${nPods} idle pods, one namespace each; memory read after ${idle} s idle (KiB from /proc/PID/smaps, shown in MiB)\n`);
    for (const [i, n] of nets.entries()) pods.push(startPod(dir, n.ns, n.address, psk, `pod${i + 1}`));
    for (const p of pods) if ((await p.publicKey) === null) throw new Error(`a pod did not start: ${readFileSync(p.logFile, 'utf8').slice(-400)}`);
    for (const p of pods) await until('control socket', () => controlOk(c, p.socket, ['status']), 15_000);
    for (const [i, n] of nets.entries()) {
      const child = spawn('ip', ['netns', 'exec', n.ns, wg, '-f', `wg${i}`], { stdio: 'ignore', env: { ...process.env, WG_PROCESS_FOREGROUND: '1' } });
      wgs.push(child);
    }
    await sleep(idle * 1000);
    const tencMem = pods.map((p) => smapsOf(p.child.pid!)).filter((m): m is Smaps => m !== undefined);
    const wgMem = wgs.map((w) => smapsOf(w.pid!)).filter((m): m is Smaps => m !== undefined);
    if (tencMem.length !== nPods) throw new Error(`only ${tencMem.length} of ${nPods} pods alive after idling`);
    if (wgMem.length !== nPods) throw new Error(`only ${wgMem.length} of ${nPods} wireguard-go alive after idling`);
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
        ['per process (MiB)', 'RSS', 'PSS', 'private dirty', 'V8 heap pages', 'malloc heap', 'other anon', 'PSS file', `node total PSS (${nPods})`],
        [row('tenc pod', tencMem), row('wireguard-go (Debian)', wgMem)],
      ),
    );
    ctx.log(`\ntenc/wireguard-go PSS per pod: ${(avg(tencMem, 'pss') / avg(wgMem, 'pss')).toFixed(2)}x\n`);
    for (const w of wgs) await stopChild(w, 'SIGTERM', 3000);
    for (const p of pods) await stopChild(p.child, 'SIGTERM', 5000);
    pods.length = 0;

    // --- 2. start latency -----------------------------------------------------
    const ms: Record<'key' | 'failClosed' | 'socket' | 'handshake', number[]> = { key: [], failClosed: [], socket: [], handshake: [] };
    const peerKey = randomBytes(32).toString('base64');
    for (let i = 0; i < nStarts; i++) {
      const n = nets[i % nets.length];
      const p = startPod(dir, n.ns, n.address, psk, `start${i}`);
      if ((await p.publicKey) === null) throw new Error(`start ${i}: pod did not start: ${readFileSync(p.logFile, 'utf8').slice(-400)}`);
      await until('control socket', () => existsSync(p.socket), 15_000);
      await until('set-peer answered', () => controlOk(c, p.socket, ['set-peer', peerKey, '--endpoint', '10.78.0.1:51820', '--allowed-ips', '10.78.0.1/32']), 15_000);
      ms.handshake.push(Date.now() - p.t0);
      const key = logMilestone(p.logFile, 'public key', p.t0);
      const fc = logMilestone(p.logFile, 'fail closed', p.t0);
      const sock = logMilestone(p.logFile, 'control socket listening', p.t0);
      if (key !== undefined) ms.key.push(key);
      if (fc !== undefined) ms.failClosed.push(fc);
      if (sock !== undefined) ms.socket.push(sock);
      await stopChild(p.child, 'SIGTERM', 5000);
    }
    const q = (xs: number[], p: number) => (xs.length ? `${percentile(xs, p)!.toFixed(0)}` : 'n/a');
    ctx.log(`\n${nStarts} starts, one at a time (ms from spawn of nsenter):\n`);
    ctx.log(
      markdownTable(
        ['milestone', 'p50 ms', 'p99 ms', 'samples'],
        [
          ['key ready', q(ms.key, 50), q(ms.key, 99), String(ms.key.length)],
          ['fail-closed', q(ms.failClosed, 50), q(ms.failClosed, 99), String(ms.failClosed.length)],
          ['control socket ready', q(ms.socket, 50), q(ms.socket, 99), String(ms.socket.length)],
          ['first handshake possible (set-peer answered)', q(ms.handshake, 50), q(ms.handshake, 99), String(ms.handshake.length)],
        ],
      ),
    );
  } finally {
    for (const w of wgs) if (w.exitCode === null) w.kill('SIGKILL');
    for (const p of pods) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    c.killAll('SIGKILL');
    await sleep(300);
    await topo.down();
    rmSync(dir, { recursive: true, force: true });
  }
}
