/**
 * Memory of one tenc pod proxy over a long load (issue 6: at most 64 MiB idle, at
 * most 128 MiB under load, flat over 5 minutes). Builds the two pods of
 * netns-scripts/pods.sh (a private copy, PODS_PREFIX=tencs), starts `tenc pod` in
 * each (bench/lib/tunnels.ts TencTunnel), and samples both processes' VmRSS every
 * --interval seconds (default 5):
 *   1. idle: --idle seconds (default 30) after the handshake, no traffic
 *   2. load: iperf3 TCP pod a -> pod b, -P 4, for --soak seconds (default 300)
 *   3. after: --idle seconds again, no traffic
 * Reported per pod: idle RSS (median of phase 1), max RSS under load, the slope of
 * RSS over the load phase (least squares, MiB per minute, the first minute left out
 * as warm-up when the phase is longer than two), RSS after, VmHWM; with
 * smaps_rollup (anonymous vs file-backed) at the end of each phase, and when each pod
 * left V8 lean mode (src/control/lean.ts: the pod's log record). Written to
 * bench/results/soak-<timestamp>.json too. Flags: --soak=S, --idle=S, --interval=S,
 * --peers=N (N-1 dummy peers configured, as iperf --peers), --prefix=NAME,
 * --tenc-env=TENC_X=V,... (the pods' environment, as iperf --tenc-env; e.g.
 * TENC_V8_LEAN=0 for V8's defaults).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { numberFlag, type BenchContext } from './lib/bench.js';
import { Children, memory } from './lib/procs.js';
import { markdownTable } from './lib/table.js';
import { parseIperfTcp, Traffic } from './lib/traffic.js';
import { parseEnvFlag } from './iperf.js';
import { TencTunnel, type TunnelEnv } from './lib/tunnels.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const PODS_SH = join(REPO, 'netns-scripts', 'pods.sh');
const MIB = 2 ** 20;

export interface Sample {
  /** Seconds since the first sample. */
  t: number;
  phase: 'idle' | 'load' | 'after';
  /** VmRSS per pod process, bytes (undefined when it could not be read). */
  rss: (number | undefined)[];
}

/** Least-squares slope of y over x (per x unit); undefined for fewer than 2 distinct x. */
export function slope(points: [number, number][]): number | undefined {
  const n = points.length;
  if (n < 2) return undefined;
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  let sxx = 0;
  let sxy = 0;
  for (const [x, y] of points) {
    sxx += (x - mx) ** 2;
    sxy += (x - mx) * (y - my);
  }
  return sxx === 0 ? undefined : sxy / sxx;
}

function median(v: number[]): number | undefined {
  if (v.length === 0) return undefined;
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

export interface PodSummary {
  idleMiB?: number;
  loadMaxMiB?: number;
  /** MiB per minute over the load phase (after warm-up). */
  slopeMiBPerMin?: number;
  afterMiB?: number;
}

/** Per-pod figures from the samples (see the header). */
export function summarize(samples: Sample[], pod: number): PodSummary {
  const of = (phase: Sample['phase']): [number, number][] =>
    samples.filter((s) => s.phase === phase && s.rss[pod] !== undefined).map((s) => [s.t, s.rss[pod]! / MIB]);
  const idle = of('idle');
  const load = of('load');
  const after = of('after');
  let trend = load;
  if (load.length > 1 && load[load.length - 1][0] - load[0][0] > 120) trend = load.filter(([t]) => t >= load[0][0] + 60);
  const k = slope(trend);
  return {
    idleMiB: median(idle.map(([, y]) => y)),
    loadMaxMiB: load.length ? Math.max(...load.map(([, y]) => y)) : undefined,
    slopeMiBPerMin: k === undefined ? undefined : k * 60,
    afterMiB: median(after.map(([, y]) => y)),
  };
}

/**
 * The pods' lean-mode records (src/control/lean.ts) among their last stderr lines
 * ("<netns>: <pino JSON>", TencTunnel.stderrTail): "<netns> <time> <msg>".
 */
export function leanRecords(lines: string[]): string[] {
  const out: string[] = [];
  for (const line of lines) {
    const m = /^(\S+): (\{.*\})$/.exec(line);
    if (!m) continue;
    let r: Record<string, unknown>;
    try {
      r = JSON.parse(m[2]);
    } catch {
      continue;
    }
    if (typeof r.msg !== 'string') continue;
    if (r.v8 !== undefined) out.push(`${m[1]} ${r.time} ${r.msg} (v8 ${r.v8})`);
    else if (r.msg.includes('lean mode')) out.push(`${m[1]} ${r.time} ${r.msg}${r.eventLoopUtilization !== undefined ? ` (event loop ${r.eventLoopUtilization})` : ''}`);
  }
  return out;
}

/** /proc/PID/smaps_rollup as { Rss, Anonymous, ... } in KiB. */
function smapsRollup(pid: number): Record<string, number> | undefined {
  try {
    const out: Record<string, number> = {};
    for (const m of readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8').matchAll(/^(\w+):\s+(\d+) kB/gm)) out[m[1]] = Number(m[2]);
    return out;
  } catch {
    return undefined;
  }
}

export async function run(ctx: BenchContext): Promise<void> {
  const soakS = numberFlag(ctx, 'soak', 300);
  const idleS = numberFlag(ctx, 'idle', 30);
  const every = numberFlag(ctx, 'interval', 5);
  const peers = Math.floor(numberFlag(ctx, 'peers', 1));
  const prefix = ctx.flags.get('prefix') ?? 'tencs';
  if (!/^[a-z][a-z0-9]{0,8}$/.test(prefix)) throw new RangeError(`--prefix must be 1..9 lowercase letters/digits, got ${prefix}`);
  if (process.getuid?.() !== 0) throw new Error('must run as root (creates network namespaces)');
  const children = new Children();
  const nsA = `${prefix}-a`;
  const nsB = `${prefix}-b`;
  const existing = (await children.check('ip', ['netns', 'list'])).split('\n').map((l) => l.split(' ')[0]);
  if (existing.includes(nsA) || existing.includes(nsB))
    throw new Error(`namespace ${nsA} exists (another run? PODS_PREFIX=${prefix} netns-scripts/pods.sh down)`);
  const dir = mkdtempSync(join(tmpdir(), 'tenc-soak-bench-'));
  const env: TunnelEnv = { nsA, nsB, addrA: '10.77.0.1', addrB: '10.77.0.2', dir, children };
  const podsSh = (cmd: 'up' | 'down'): Promise<string> => children.check('bash', [PODS_SH, cmd], { timeoutMs: 30_000, env: { PODS_PREFIX: prefix } });
  const tencEnv = ctx.flags.get('tenc-env');
  const tunnel = new TencTunnel({ extraPeers: peers - 1, env: tencEnv === undefined ? undefined : parseEnvFlag(tencEnv) });
  let stopping = false;
  const onSignal = (): void => {
    stopping = true;
    children.killAll('SIGTERM');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const samples: Sample[] = [];
  const rollups: Record<string, (Record<string, number> | undefined)[]> = {};
  let result: { gbps?: number; retransmits?: number; error?: string } = {};
  let pids: number[] = [];
  let lean: string[] = [];
  ctx.log(`idle ${idleS} s, load ${soakS} s (iperf3 -P 4), idle ${idleS} s; RSS every ${every} s; ${peers} peer(s)${tencEnv ? `; pods with ${tencEnv}` : ''}; load average ${loadavg()[0].toFixed(2)}`);
  try {
    await podsSh('up');
    const up = await tunnel.up(env);
    pids = up.pids;
    const traffic = new Traffic(children, nsA, nsB);
    if (!(await traffic.reachable(up.dst, 10_000))) throw new Error(`no ping reply through tenc within 10 s${tunnel.died() ? `; ${tunnel.died()}` : ''}`);
    const t0 = performance.now();
    let phase: Sample['phase'] = 'idle';
    const sample = (): void => {
      samples.push({ t: (performance.now() - t0) / 1000, phase, rss: pids.map((p) => memory(p)?.rss) });
    };
    const timer = setInterval(sample, every * 1000);
    const sleep = (s: number): Promise<void> => new Promise((r) => setTimeout(r, s * 1000));
    try {
      sample();
      await sleep(idleS);
      rollups.idle = pids.map(smapsRollup);
      phase = 'load';
      sample();
      try {
        const [json] = await traffic.iperf(up.dst, 1, soakS, ['-P', '4', '-i', '0'], () => tunnel.died());
        const r = parseIperfTcp(json);
        result = { gbps: r.receiverBps / 1e9, retransmits: r.retransmits };
      } catch (err) {
        result = { error: (err as Error).message };
      }
      sample();
      rollups.load = pids.map(smapsRollup);
      phase = 'after';
      await sleep(idleS);
      sample();
      rollups.after = pids.map(smapsRollup);
    } finally {
      clearInterval(timer);
    }
  } finally {
    lean = leanRecords(tunnel.stderrTail());
    await tunnel.down().catch(() => []);
    children.killAll('SIGTERM');
    await podsSh('down').catch((err: Error) => ctx.log(`cleanup: ${err.message}`));
    rmSync(dir, { recursive: true, force: true });
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (stopping) throw new Error('interrupted');
  const sums = pids.map((_, i) => summarize(samples, i));
  const f = (v: number | undefined, d = 1): string => (v === undefined ? 'n/a' : v.toFixed(d));
  ctx.log(`\nload: ${result.error ? `failed: ${result.error}` : `${f(result.gbps, 2)} Gbit/s, ${result.retransmits} retransmits`}; ${samples.length} samples\n`);
  ctx.log(
    markdownTable(
      ['pod', 'idle RSS (MiB)', 'max RSS under load (MiB)', 'slope under load (MiB/min)', 'RSS after (MiB)', 'anon idle/load (MiB)'],
      sums.map((s, i) => [
        i === 0 ? 'a (client)' : 'b (server)',
        f(s.idleMiB),
        f(s.loadMaxMiB),
        f(s.slopeMiBPerMin, 2),
        f(s.afterMiB),
        `${f((rollups.idle?.[i]?.Anonymous ?? NaN) / 1024)} / ${f((rollups.load?.[i]?.Anonymous ?? NaN) / 1024)}`,
      ]),
    ),
  );
  ctx.log(`\nV8 lean mode (src/control/lean.ts), from the pods' last log lines:\n${lean.length ? lean.map((l) => `  ${l}`).join('\n') : '  no record among the last lines'}`);
  ctx.log('\ntargets (issue 6): idle <= 64 MiB, under load <= 128 MiB, flat (slope near 0)');
  const stamp = new Date().toISOString().replace(/[:]/g, '-').replace(/\.\d+Z$/, 'Z');
  const outDir = join(REPO, 'bench', 'results');
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `soak-${stamp}.json`);
  writeFileSync(file, JSON.stringify({ bench: 'soak', options: { soakS, idleS, every, peers, tencEnv }, load: result, summary: sums, rollups, lean, samples }, null, 2) + '\n');
  ctx.log(`\nwritten: ${file}`);
}
