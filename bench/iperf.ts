/**
 * Pod-to-pod throughput and latency through the namespaces of netns-scripts/pods.sh
 * (a private copy, PODS_PREFIX=tencb), side by side in one run (issue 6):
 * plain veths, Debian's wireguard-go, backports wireguard-go (offloads), tenc.
 *
 * For each tunnel, in turn: build the pods, start the tunnel, ping until the handshake
 * is done, then measure from pod a (client) to pod b (server):
 *   1. ping: RTT p50/p99 of N pings at 10 ms intervals (idle tunnel)
 *   2. iperf3 TCP, 1 stream and 4 streams (-P 4)
 *   3. iperf3 TCP with 1, 5, 10 and 20 clients at once: separate iperf3 client
 *      processes, each against its own server port (not -P); transmitted MB (10^6
 *      bytes) summed over the clients, server (received) and client (sent) MB/s summed
 *   4. iperf3 UDP, 64-byte payloads, unlimited rate (-u -l 64 -b 0): sent and
 *      received packets/s, loss
 * and the CPU time (utime+stime from /proc/PID/stat, % of one core, pods a+b) of the
 * tunnel's processes during each test (and, for the TCP tests, the whole machine's CPU
 * from /proc/stat and that per Gbit/s), and their VmRSS/VmHWM after the tests. Then stop
 * the tunnel and remove the pods. A failing tunnel (or test) is reported as
 * "failed: reason"; the others still run. Everything is removed at the end, on Ctrl-C too.
 *
 * Output: a Markdown table, ratios between every pair of tunnels from this run, and
 * JSON + SVG in bench/results/iperf-<timestamp>.{json,svg}.
 * Flags: --quick (1 s tests, 100 pings), --duration=S (default 8), --only=plain,tenc,...
 * (ids: plain, wg-deb, wg-bpo, tenc; with --peers/--tenc-env/--policies it must name
 * their column too), --pings=N (default 200), --prefix=NAME (tencb),
 * --rounds=N (default 1: the whole sequence N times, every other round reversed; medians),
 * --peers=N (adds tenc-peers: tenc with N configured peers, N-1 of them dummies),
 * --tenc-env=TENC_X=V,... (adds tenc-env: tenc with that environment, for A/B of a knob),
 * --policies=N (adds tenc-policies: tenc with N TencPolicy exempt policies installed on
 * ports the traffic does not use: protected throughput with and without policies),
 * --pod-host (adds tenc-host: both pods in one `tenc pod --host`, as the agent runs them),
 * --tenc-env-host (the tenc-env column's pods in one pod host too: an A/B against tenc-host),
 * --topology=bridge|veth (default bridge: both pods on a bridge in a third namespace, as
 * on a node; veth: the two pods joined by one veth pair, no bridge).
 * Memory is per process (the larger of the two pods), CPU is both pods together.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { numberFlag, type BenchContext } from './lib/bench.js';
import { CpuMeter, Children, MachineCpuMeter, memory, describeFailure } from './lib/procs.js';
import { barChart } from './lib/svg.js';
import { markdownTable } from './lib/table.js';
import { parseIperfTcp, parseIperfUdp, Traffic } from './lib/traffic.js';
import { allTunnels, WgGoTunnel, type Tunnel, type TunnelEnv, type TunnelVariants } from './lib/tunnels.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const PODS_SH = join(REPO, 'netns-scripts', 'pods.sh');
const CLIENT_COUNTS = [1, 5, 10, 20];

interface MetricDef {
  key: string;
  label: string;
  digits: number;
  better: 'higher' | 'lower';
  chart?: boolean;
}

const METRICS: MetricDef[] = [
  { key: 'ping.p50', label: 'ping RTT p50 (ms)', digits: 3, better: 'lower', chart: true },
  { key: 'ping.p99', label: 'ping RTT p99 (ms)', digits: 3, better: 'lower', chart: true },
  { key: 'ping.loss', label: 'ping loss (%)', digits: 1, better: 'lower' },
  { key: 'tcp1.gbps', label: 'TCP 1 stream (Gbit/s)', digits: 2, better: 'higher', chart: true },
  { key: 'tcp1.retr', label: 'TCP 1 stream retransmits', digits: 0, better: 'lower' },
  { key: 'tcp1.cpu', label: 'TCP 1 stream: tunnel CPU (%)', digits: 0, better: 'lower', chart: true },
  { key: 'tcp1.mcpu', label: 'TCP 1 stream: machine CPU (%)', digits: 0, better: 'lower' },
  { key: 'tcp1.cpg', label: 'TCP 1 stream: machine CPU per Gbit/s (%)', digits: 1, better: 'lower' },
  { key: 'tcp4.gbps', label: 'TCP 4 streams (Gbit/s)', digits: 2, better: 'higher', chart: true },
  { key: 'tcp4.retr', label: 'TCP 4 streams retransmits', digits: 0, better: 'lower' },
  { key: 'tcp4.cpu', label: 'TCP 4 streams: tunnel CPU (%)', digits: 0, better: 'lower' },
  { key: 'tcp4.mcpu', label: 'TCP 4 streams: machine CPU (%)', digits: 0, better: 'lower' },
  { key: 'tcp4.cpg', label: 'TCP 4 streams: machine CPU per Gbit/s (%)', digits: 1, better: 'lower' },
  ...CLIENT_COUNTS.flatMap((n): MetricDef[] => [
    { key: `c${n}.mb`, label: `${n} client${n > 1 ? 's' : ''}: transmitted MB`, digits: 0, better: 'higher' },
    { key: `c${n}.server`, label: `${n} client${n > 1 ? 's' : ''}: server MB/s`, digits: 1, better: 'higher', chart: n === 20 },
    { key: `c${n}.client`, label: `${n} client${n > 1 ? 's' : ''}: client MB/s`, digits: 1, better: 'higher' },
  ]),
  { key: 'udp.txkpps', label: 'UDP 64 B: sent (kpps)', digits: 1, better: 'higher' },
  { key: 'udp.rxkpps', label: 'UDP 64 B: received (kpps)', digits: 1, better: 'higher', chart: true },
  { key: 'udp.loss', label: 'UDP 64 B: loss (%)', digits: 1, better: 'lower' },
  { key: 'udp.cpu', label: 'UDP 64 B: tunnel CPU (%)', digits: 0, better: 'lower' },
  { key: 'cpu.all', label: 'tunnel CPU, all tests (%)', digits: 0, better: 'lower' },
  { key: 'mem.rss', label: 'RSS after tests, largest process (MiB)', digits: 1, better: 'lower', chart: true },
  { key: 'mem.hwm', label: 'peak RSS (VmHWM), largest process (MiB)', digits: 1, better: 'lower' },
];

const COLORS: Record<string, string> = { plain: '#9e9e9e', 'wg-deb': '#4e79a7', 'wg-bpo': '#59a14f', tenc: '#e15759', 'tenc-env': '#f28e2b', 'tenc-peers': '#b07aa1', 'tenc-policies': '#76b7b2', 'tenc-host': '#ff9da7' };

export interface TunnelResult {
  id: string;
  label: string;
  version?: string;
  description?: string;
  status: 'ok' | 'failed' | 'skipped';
  error?: string;
  /** Last stderr lines of the tunnel's processes, on failure. */
  stderr?: string[];
  /** Tests that failed (key prefix -> reason) and other remarks. */
  testFailures: Record<string, string>;
  notes: string[];
  metrics: Record<string, number>;
  /** Per-process figures (memory) for the JSON. */
  processes?: { pid: number; rssBytes?: number; hwmBytes?: number }[];
  /** 1-minute load average when the tunnel's measurement started. */
  load?: number;
  /** With --rounds > 1: each round's result (metrics above are the medians). */
  rounds?: TunnelResult[];
}

interface Options {
  seconds: number;
  pings: number;
  rounds: number;
  quick: boolean;
  prefix: string;
  topology: 'bridge' | 'veth';
}

let interrupted: NodeJS.Signals | undefined;

class Interrupted extends Error {
  constructor(signal: NodeJS.Signals) {
    super(`interrupted by ${signal}`);
  }
}

function checkInterrupt(): void {
  if (interrupted) throw new Interrupted(interrupted);
}

export async function run(ctx: BenchContext): Promise<void> {
  const quick = ctx.flags.has('quick');
  const opts: Options = {
    quick,
    seconds: numberFlag(ctx, 'duration', quick ? 1 : 8),
    pings: Math.floor(numberFlag(ctx, 'pings', quick ? 100 : 200)),
    rounds: Math.floor(numberFlag(ctx, 'rounds', 1)),
    prefix: ctx.flags.get('prefix') ?? 'tencb',
    topology: (ctx.flags.get('topology') ?? 'bridge') as Options['topology'],
  };
  if (opts.topology !== 'bridge' && opts.topology !== 'veth') throw new RangeError(`--topology must be bridge or veth, got ${String(opts.topology)}`);
  if (!/^[a-z][a-z0-9]{0,8}$/.test(opts.prefix)) throw new RangeError(`--prefix must be 1..9 lowercase letters/digits, got ${opts.prefix}`);
  const variants: TunnelVariants = {};
  if (ctx.flags.has('peers')) variants.peers = Math.floor(numberFlag(ctx, 'peers', 1000));
  if (ctx.flags.has('policies')) variants.policies = Math.floor(numberFlag(ctx, 'policies', 8));
  if (ctx.flags.has('pod-host')) variants.podHost = true;
  const tencEnv = ctx.flags.get('tenc-env');
  if (tencEnv !== undefined) variants.tencEnv = parseEnvFlag(tencEnv);
  if (ctx.flags.has('tenc-env-host')) {
    if (tencEnv === undefined) throw new RangeError('--tenc-env-host runs the column of --tenc-env in a pod host: give --tenc-env too');
    variants.tencEnvHost = true;
  }
  const tunnelList = (): Tunnel[] => allTunnels(variants);
  let tunnels = tunnelList();
  const only = ctx.flags.get('only');
  if (only !== undefined) {
    const ids = only.split(',').map((s) => s.trim()).filter(Boolean);
    const unknown = ids.filter((id) => !tunnels.some((t) => t.id === id));
    if (unknown.length > 0) throw new RangeError(`--only: unknown tunnel ${unknown.join(', ')} (known: ${tunnels.map((t) => t.id).join(', ')})`);
    tunnels = tunnels.filter((t) => ids.includes(t.id));
    // A variant flag whose column --only leaves out would run nothing of what it asked for.
    const dropped = [['tenc-env', variants.tencEnv], ['tenc-peers', variants.peers], ['tenc-policies', variants.policies], ['tenc-host', variants.podHost]]
      .filter(([id, v]) => v !== undefined && !ids.includes(id as string)).map(([id]) => id as string);
    if (dropped.length > 0) throw new RangeError(`--only leaves out ${dropped.join(', ')}, the column its flag adds (add it to --only)`);
  }
  if (process.getuid?.() !== 0) throw new Error('must run as root (creates network namespaces)');

  const children = new Children();
  for (const tool of ['ip', 'iperf3', 'ping', 'ss', 'wg']) {
    const r = await children.run('sh', ['-c', `command -v ${tool}`], { timeoutMs: 5000 });
    if (r.code !== 0) throw new Error(`${tool} not found (netns-scripts/deps.sh installs the tools)`);
  }
  const nsA = `${opts.prefix}-a`;
  const nsB = `${opts.prefix}-b`;
  const existing = (await children.check('ip', ['netns', 'list'])).split('\n').map((l) => l.split(' ')[0]);
  const taken = [nsA, nsB, `${opts.prefix}-br`].filter((ns) => existing.includes(ns));
  if (taken.length > 0)
    throw new Error(`namespace ${taken.join(', ')} exists (another bench running? remove with PODS_PREFIX=${opts.prefix} netns-scripts/pods.sh down)`);

  const dir = mkdtempSync(join(tmpdir(), 'tenc-iperf-bench-')); // mode 0700
  const podsSh = (cmd: 'up' | 'down'): Promise<string> =>
    children.check('bash', [PODS_SH, cmd], { timeoutMs: 30_000 }).catch((err: Error) => {
      throw new Error(`pods.sh ${cmd}: ${err.message}`);
    });
  const env: TunnelEnv = { nsA, nsB, addrA: '10.77.0.1', addrB: '10.77.0.2', dir, children };
  const oldPrefix = process.env.PODS_PREFIX;
  const oldTopology = process.env.TOPOLOGY;
  process.env.PODS_PREFIX = opts.prefix; // for pods.sh, which the children inherit
  process.env.TOPOLOGY = opts.topology;

  let current: Tunnel | undefined;
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (cleaning ??= (async () => {
      if (current) await current.down().catch(() => []);
      children.killAll('SIGTERM');
      await podsSh('down').catch((err: Error) => ctx.log(`cleanup: ${err.message}`));
      for (const t of tunnels) if (t instanceof WgGoTunnel) for (const p of t.socketPaths()) rmSync(p, { force: true });
      rmSync(dir, { recursive: true, force: true });
    })());
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = signal;
    console.error(`\n${signal}: stopping the tests and removing the namespaces...`);
    children.killAll('SIGTERM');
    void cleanup().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const startedAt = new Date();
  const loadStart = loadavg();
  const perRound: TunnelResult[][] = [];
  ctx.log(
    `topology ${opts.topology === 'veth' ? 'veth (one veth pair, no bridge)' : 'bridge (pods on a bridge, as on a node)'}; ` +
      `${opts.seconds} s per iperf3 test, ${opts.pings} pings, ${opts.rounds} round(s); tunnels: ${tunnels.map((t) => t.id).join(', ')}; ` +
      `load average ${loadStart.map((x) => x.toFixed(2)).join(' ')}, ${cpus().length} CPUs, kernel ${release()}`,
  );
  try {
    for (let round = 0; round < opts.rounds; round++) {
      // fresh tunnel objects each round; every other round in reverse order, so a
      // drifting machine load does not always favour the same tunnel
      const ids = tunnels.map((t) => t.id);
      const order = tunnelList().filter((t) => ids.includes(t.id));
      if (round % 2 === 1) order.reverse();
      const results: TunnelResult[] = [];
      for (const t of order) {
        checkInterrupt();
        current = t;
        const t0 = performance.now();
        const r = await measureTunnel(t, env, opts, children, podsSh);
        current = undefined;
        results.push(r);
        const took = ((performance.now() - t0) / 1000).toFixed(1);
        const tag = opts.rounds > 1 ? ` (round ${round + 1})` : '';
        ctx.log(`- ${t.id}${tag}: ${r.status === 'ok' ? 'ok' : `failed: ${r.error}`} (${took} s)`);
      }
      perRound.push(results);
    }
  } finally {
    await cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (oldPrefix === undefined) delete process.env.PODS_PREFIX;
    else process.env.PODS_PREFIX = oldPrefix;
    if (oldTopology === undefined) delete process.env.TOPOLOGY;
    else process.env.TOPOLOGY = oldTopology;
  }
  checkInterrupt();

  const results = tunnels.map((t) => combine(perRound.map((rs) => rs.find((r) => r.id === t.id)!)));
  report(ctx, results, opts, startedAt, loadStart);
  ctx.log(`\nleft behind: ${await leftovers(children, opts.prefix, dir)}`);
}

/** `--tenc-env=K=V,K2=V2`: TENC_* variables only (what the pod process reads); a value
 * may be a path (TENC_ADDON=/tmp/old/tenc.node: an A/B of two builds of the addon). */
export function parseEnvFlag(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const part of text.split(',').filter(Boolean)) {
    const m = /^(TENC_[A-Z0-9_]+)=([A-Za-z0-9._/-]*)$/.exec(part);
    if (!m) throw new RangeError(`--tenc-env: expected TENC_NAME=value[,...], got ${part}`);
    env[m[1]] = m[2];
  }
  if (Object.keys(env).length === 0) throw new RangeError('--tenc-env: no variables');
  return env;
}

async function measureTunnel(
  t: Tunnel,
  env: TunnelEnv,
  opts: Options,
  children: Children,
  podsSh: (cmd: 'up' | 'down') => Promise<string>,
): Promise<TunnelResult> {
  const res: TunnelResult = { id: t.id, label: t.label, status: 'ok', testFailures: {}, notes: [], metrics: {}, load: loadavg()[0] };
  try {
    await podsSh('up');
    const up = await t.up(env);
    res.version = up.version;
    res.description = up.description;
    checkInterrupt();
    const traffic = new Traffic(children, env.nsA, env.nsB);
    if (!(await traffic.reachable(up.dst, 10_000))) throw new Error(`no ping reply from ${up.dst} through the tunnel within 10 s${t.died() ? `; ${t.died()}` : ''}`);
    const died = (): string | undefined => t.died();
    const all = new CpuMeter(up.pids);
    const m = res.metrics;
    const put = (key: string, v: number | undefined): void => {
      if (v !== undefined && Number.isFinite(v)) m[key] = v;
    };
    /** Runs one test; a failure is recorded for its metrics and the next test runs. */
    const test = async (prefix: string, body: () => Promise<void>): Promise<void> => {
      checkInterrupt();
      try {
        await body();
      } catch (err) {
        if (err instanceof Interrupted || interrupted) throw err;
        res.testFailures[prefix] = (err as Error).message;
      }
      const died = t.died();
      if (died) throw new Error(`during test ${prefix}: ${died}`);
    };

    await test('ping', async () => {
      const p = await traffic.ping(up.dst, opts.pings);
      put('ping.p50', p.p50);
      put('ping.p99', p.p99);
      put('ping.loss', p.lossPercent);
    });
    for (const [prefix, args] of [['tcp1', []], ['tcp4', ['-P', '4']]] as const) {
      await test(prefix, async () => {
        const cpu = new CpuMeter(up.pids);
        const machine = new MachineCpuMeter();
        const [json] = await traffic.iperf(up.dst, 1, opts.seconds, [...args], died);
        put(`${prefix}.cpu`, cpu.percent());
        const busy = machine.percent();
        put(`${prefix}.mcpu`, busy);
        const r = parseIperfTcp(json);
        put(`${prefix}.gbps`, r.receiverBps / 1e9);
        if (busy !== undefined && r.receiverBps > 0) put(`${prefix}.cpg`, busy / (r.receiverBps / 1e9));
        put(`${prefix}.retr`, r.retransmits);
      });
    }
    for (const n of CLIENT_COUNTS) {
      await test(`c${n}`, async () => {
        const outs = await traffic.iperf(up.dst, n, opts.seconds, [], died);
        const rs = outs.map((o, i) => {
          try {
            return parseIperfTcp(o);
          } catch (err) {
            throw new Error(`client ${i + 1} of ${n}: ${(err as Error).message}`);
          }
        });
        put(`c${n}.mb`, rs.reduce((s, r) => s + r.sentBytes, 0) / 1e6);
        put(`c${n}.server`, rs.reduce((s, r) => s + r.receiverBps, 0) / 8e6);
        put(`c${n}.client`, rs.reduce((s, r) => s + r.senderBps, 0) / 8e6);
      });
    }
    await test('udp', async () => {
      const cpu = new CpuMeter(up.pids);
      const [json] = await traffic.iperf(up.dst, 1, opts.seconds, ['-u', '-l', '64', '-b', '0'], died);
      put('udp.cpu', cpu.percent());
      const r = parseIperfUdp(json);
      put('udp.txkpps', r.sentPps / 1e3);
      put('udp.rxkpps', r.receivedPps / 1e3);
      put('udp.loss', r.lossPercent);
    });
    put('cpu.all', all.percent());
    if (up.pids.length > 0) {
      const mems = up.pids.map((pid) => ({ pid, mem: memory(pid) }));
      res.processes = mems.map(({ pid, mem }) => ({ pid, rssBytes: mem?.rss, hwmBytes: mem?.hwm }));
      if (mems.every((x) => x.mem)) {
        put('mem.rss', Math.max(...mems.map((x) => x.mem!.rss)) / 2 ** 20);
        put('mem.hwm', Math.max(...mems.map((x) => x.mem!.hwm)) / 2 ** 20);
      } else {
        res.notes.push('a tunnel process was gone before its memory was read');
      }
    }
    const tests = ['ping', 'tcp1', 'tcp4', ...CLIENT_COUNTS.map((n) => `c${n}`), 'udp'];
    if (tests.every((k) => k in res.testFailures)) {
      res.status = 'failed';
      res.error = `every test failed; first: ${res.testFailures.ping}`;
    }
  } catch (err) {
    if (err instanceof Interrupted || interrupted) throw err;
    res.status = 'failed';
    res.error = (err as Error).message;
  } finally {
    try {
      const problems = await t.down();
      res.notes.push(...problems);
    } catch (err) {
      res.notes.push(`teardown: ${(err as Error).message}`);
    }
    if (res.status === 'failed' || res.notes.length > 0) res.stderr = t.stderrTail();
    try {
      await podsSh('down');
    } catch (err) {
      res.notes.push((err as Error).message);
    }
  }
  return res;
}

/** One result from the rounds of a tunnel: the median of each metric over the rounds that measured it. */
export function combine(rounds: TunnelResult[]): TunnelResult {
  if (rounds.length === 1) return rounds[0];
  const ok = rounds.filter((r) => r.status === 'ok');
  const first = ok[0] ?? rounds[0];
  const out: TunnelResult = {
    id: first.id,
    label: first.label,
    version: first.version,
    description: first.description,
    status: ok.length > 0 ? 'ok' : 'failed',
    error: ok.length > 0 ? undefined : rounds.map((r, i) => `round ${i + 1}: ${r.error}`).join('; '),
    testFailures: {},
    notes: [],
    metrics: {},
    rounds,
  };
  rounds.forEach((r, i) => {
    if (r.status === 'failed' && ok.length > 0) out.notes.push(`round ${i + 1} failed: ${r.error}`);
    for (const [k, v] of Object.entries(r.testFailures)) if (ok.every((o) => k in o.testFailures)) out.testFailures[k] = `round ${i + 1}: ${v}`;
    out.notes.push(...r.notes.map((n) => `round ${i + 1}: ${n}`));
    if (r.stderr?.length) out.stderr = [...(out.stderr ?? []), `round ${i + 1}:`, ...r.stderr];
  });
  for (const d of METRICS) {
    const vs = ok.map((r) => r.metrics[d.key]).filter((v): v is number => v !== undefined).sort((a, b) => a - b);
    if (vs.length > 0) out.metrics[d.key] = vs.length % 2 === 1 ? vs[(vs.length - 1) / 2] : (vs[vs.length / 2 - 1] + vs[vs.length / 2]) / 2;
  }
  return out;
}

function fmt(v: number | undefined, digits: number): string | undefined {
  if (v === undefined) return undefined;
  return v.toFixed(digits);
}

/** The metric's test (key prefix): ping, tcp1, c5, udp, ... */
const testOf = (key: string): string => key.split('.')[0];

/** A cell: the value, "failed" (test failed), "failed: reason" (tunnel failed) or "n/a". */
function cell(r: TunnelResult, def: MetricDef): string {
  const v = fmt(r.metrics[def.key], def.digits);
  if (v !== undefined) return v;
  if (r.status === 'failed') return 'failed';
  if (testOf(def.key) in r.testFailures) return 'failed';
  return 'n/a';
}

const shorten = (s: string, n = 70): string => (s.length > n ? s.slice(0, n - 3) + '...' : s);

/** Ratio pairs "x/y" for every tunnel x after tunnel y in report order, i.e. to plain and to each peer. */
function pairs(results: TunnelResult[]): [TunnelResult, TunnelResult][] {
  const out: [TunnelResult, TunnelResult][] = [];
  results.forEach((x, i) => results.slice(0, i).forEach((y) => out.push([x, y])));
  return out;
}

function ratio(x: TunnelResult, y: TunnelResult, key: string): number | undefined {
  const a = x.metrics[key];
  const b = y.metrics[key];
  if (a === undefined || b === undefined || b === 0) return undefined;
  return a / b;
}

function report(ctx: BenchContext, results: TunnelResult[], opts: Options, startedAt: Date, loadStart: number[]): void {
  const header = ['metric', 'better', ...results.map((r) => r.id)];
  const statusRow = ['status', '', ...results.map((r) => (r.status === 'ok' ? 'ok' : `failed: ${shorten(r.error ?? '?')}`))];
  const rows = [statusRow, ...METRICS.map((d) => [d.label, d.better, ...results.map((r) => cell(r, d))])];
  const load = (l: number[]): string => l.map((x) => x.toFixed(2)).join(' ');
  ctx.log(`\nPod a -> pod b, ${opts.seconds} s per iperf3 test${opts.rounds > 1 ? `, medians of ${opts.rounds} rounds` : ''}, load average ${load(loadStart)} at the start, ${load(loadavg())} at the end.`);
  ctx.log(
    `CPU: % of one core, the tunnel's processes in both pods together (machine CPU: every process and the kernel, ${cpus().length * 100} = all CPUs busy; per Gbit/s: the whole path's work per unit of rate, which bounds the rate on a saturated machine); memory: the larger of the two pods' processes.`,
  );
  ctx.log(`MB = 10^6 bytes; N clients = N iperf3 client processes at once, each to its own server port.\n`);
  ctx.log(markdownTable(header, rows));

  const prs = pairs(results.filter((r) => r.status === 'ok'));
  if (prs.length > 0) {
    ctx.log(`\nRatios (same run; x/y > 1 means x has the larger figure):\n`);
    ctx.log(
      markdownTable(
        ['metric', ...prs.map(([x, y]) => `${x.id}/${y.id}`)],
        METRICS.map((d) => [d.label, ...prs.map(([x, y]) => fmt(ratio(x, y, d.key), 2) ?? 'n/a')]),
      ),
    );
  }
  for (const r of results) {
    const lines = [
      ...(r.version ? [`version: ${r.version}${r.description ? `; ${r.description}` : ''}`] : []),
      ...(r.load !== undefined ? [`load average (1 min) when its tests started: ${r.load.toFixed(2)}`] : []),
      ...(r.rounds ? [`rounds: ${r.rounds.length}, figures are medians; load at the start of each: ${r.rounds.map((x) => x.load?.toFixed(2) ?? '?').join(', ')}`] : []),
      ...(r.error ? [`failed: ${r.error}`] : []),
      ...Object.entries(r.testFailures).map(([k, v]) => `test ${k} failed: ${v}`),
      ...r.notes,
      ...(r.stderr && r.stderr.length > 0 ? ['stderr (last lines):', ...r.stderr.map((l) => `    ${l}`)] : []),
    ];
    if (lines.length > 0) ctx.log(`\n${r.id}:\n${lines.map((l) => `  ${l}`).join('\n')}`);
  }

  const stamp = startedAt.toISOString().replace(/[:]/g, '-').replace(/\.\d+Z$/, 'Z');
  const outDir = join(REPO, 'bench', 'results');
  mkdirSync(outDir, { recursive: true });
  const base = join(outDir, `iperf-${stamp}`);
  const ratios: Record<string, Record<string, number | null>> = {};
  for (const [x, y] of prs) ratios[`${x.id}/${y.id}`] = Object.fromEntries(METRICS.map((d) => [d.key, ratio(x, y, d.key) ?? null]));
  const doc = {
    bench: 'iperf',
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    host: { kernel: release(), cpus: cpus().length, loadavgStart: loadStart, loadavgEnd: loadavg() },
    options: { ...opts, clientCounts: CLIENT_COUNTS },
    method: {
      direction: 'pod a (10.77.0.1) -> pod b (10.77.0.2)',
      clients: 'N separate iperf3 client processes at once, each against its own one-off server port',
      cpu: 'utime+stime of the tunnel processes (both pods) from /proc/PID/stat over the test, % of one core',
      mb: '10^6 bytes',
    },
    metrics: METRICS,
    tunnels: results,
    ratios,
  };
  writeFileSync(`${base}.json`, JSON.stringify(doc, null, 2) + '\n');
  const svg = barChart({
    title: 'tenc bench: pod to pod through network namespaces',
    subtitle: `${startedAt.toISOString()}, ${opts.seconds} s per test, kernel ${release()}, ${cpus().length} CPUs`,
    series: results.map((r) => ({ name: r.id, color: COLORS[r.id] ?? '#333' })),
    panels: METRICS.filter((d) => d.chart).map((d) => ({
      title: `${d.label} (${d.better} is better)`,
      values: results.map((r) => r.metrics[d.key] ?? cell(r, d)),
      format: (v: number) => v.toFixed(d.digits),
      notes: results.map((r) => {
        const base = results.find((b) => b.id === 'plain');
        const x = base && r !== base ? ratio(r, base, d.key) : undefined;
        return x === undefined ? undefined : `(${x.toFixed(2)}x plain)`;
      }),
    })),
  });
  writeFileSync(`${base}.svg`, svg);
  ctx.log(`\nwritten: ${base}.json, ${base}.svg`);
}

/** What of this run is still there: namespaces, processes, sockets, the key directory. */
async function leftovers(children: Children, prefix: string, dir: string): Promise<string> {
  const found: string[] = [];
  const ns = (await children.run('ip', ['netns', 'list'])).stdout
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith(`${prefix}-`));
  if (ns.length > 0) found.push(`namespaces ${ns.join(' ')}`);
  for (const pattern of ['wireguard-go -f wgb(deb|bpo)-[ab]', `tenc-iperf-bench-.*/tenc-`]) {
    const r = await children.run('pgrep', ['-f', pattern]);
    if (r.code === 0) found.push(`processes matching "${pattern}": ${r.stdout.trim().split('\n').join(' ')}`);
    else if (r.code !== 1) found.push(`pgrep -f "${pattern}": ${describeFailure(r)}`);
  }
  for (const t of allTunnels()) if (t instanceof WgGoTunnel) for (const p of t.socketPaths()) if (existsSync(p)) found.push(p);
  if (existsSync(dir)) found.push(dir);
  return found.length === 0 ? 'nothing (namespaces, wireguard-go and tenc pod processes, UAPI sockets, key directory checked)' : found.join('; ');
}
