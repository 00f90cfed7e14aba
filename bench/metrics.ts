/**
 * The agent's /metrics with many pods: one scrape asks every pod's control socket
 * for its status (src/metrics/gather.ts), renders and serves the text. The pods are
 * stand-ins (the real control server, src/control/socket.ts, with a status report of
 * --peers peers and DNS counters) spread over --procs child processes, as real pods
 * are separate processes. Reported: HTTP scrape time p50/p99 for --pods pods, and as
 * baselines in the same run the same gathering one request at a time (parallel=1)
 * and a scrape of a single pod. Nothing is asserted.
 *
 *   node dist/bench/main.js metrics [--pods=100] [--peers=10] [--procs=4] [--scrapes=50]
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { numberFlag, type BenchContext } from './lib/bench.js';
import { markdownTable } from './lib/table.js';
import { MetricsServer } from '../src/metrics/server.js';
import { gatherStatus, type PodTarget } from '../src/metrics/gather.js';
import { Exposition, renderPods } from '../src/metrics/render.js';
import { CounterGuard } from '../src/metrics/monotonic.js';

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

async function timeScrapes(url: string, n: number): Promise<{ ms: number[]; bytes: number }> {
  const ms: number[] = [];
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const text = await (await fetch(url)).text();
    ms.push(performance.now() - t0);
    bytes = text.length;
  }
  return { ms, bytes };
}

export async function run(ctx: BenchContext): Promise<void> {
  const pods = numberFlag(ctx, 'pods', 100);
  const peers = numberFlag(ctx, 'peers', 10);
  const procs = Math.min(pods, numberFlag(ctx, 'procs', 4));
  const scrapes = numberFlag(ctx, 'scrapes', 50);
  const dir = mkdtempSync(join(tmpdir(), 'tenc-bench-metrics-'));
  const children: ChildProcess[] = [];
  const servers: MetricsServer[] = [];
  try {
    const child = fileURLToPath(new URL('./metrics-pods.js', import.meta.url));
    const targets: PodTarget[] = [];
    const ready: Promise<void>[] = [];
    for (let p = 0; p < procs; p++) {
      const ids = Array.from({ length: pods }, (_, i) => i).filter((i) => i % procs === p);
      const sockets = ids.map((i) => join(dir, `pod-${i}.sock`));
      for (const [k, i] of ids.entries()) targets.push({ namespace: 'bench', pod: `pod-${i}`, socket: sockets[k] });
      const c = fork(child, [String(peers), ...sockets], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
      children.push(c);
      ready.push(new Promise((resolve, reject) => {
        c.once('message', () => resolve());
        c.once('exit', (code) => reject(new Error(`stand-in pods exited (${code})`)));
      }));
    }
    await Promise.all(ready);
    const all = new MetricsServer({ address: '127.0.0.1:0', targets: () => targets });
    const one = new MetricsServer({ address: '127.0.0.1:0', targets: () => targets.slice(0, 1) });
    servers.push(all, one);
    const pAll = (await all.listen()).port;
    const pOne = (await one.listen()).port;
    await timeScrapes(`http://127.0.0.1:${pAll}/metrics`, 5); // warm up
    const a = await timeScrapes(`http://127.0.0.1:${pAll}/metrics`, scrapes);
    const o = await timeScrapes(`http://127.0.0.1:${pOne}/metrics`, scrapes);
    const seq: number[] = [];
    for (let i = 0; i < Math.min(scrapes, 10); i++) seq.push((await gatherStatus(targets, { parallel: 1 })).seconds * 1000);
    const par: number[] = [];
    for (let i = 0; i < Math.min(scrapes, 10); i++) par.push((await gatherStatus(targets)).seconds * 1000);
    // rendering alone (the text of the gathered reports, counters through the guard as a scrape does)
    const samples = (await gatherStatus(targets)).samples;
    const guard = new CounterGuard();
    const render: number[] = [];
    for (let i = 0; i < scrapes; i++) {
      const t0 = performance.now();
      guard.begin();
      renderPods(samples, new Exposition(guard)).text();
      guard.end();
      render.push(performance.now() - t0);
    }
    const f = (x: number): string => x.toFixed(1);
    ctx.log(`${pods} stand-in pods with ${peers} peers each in ${procs} processes; ${scrapes} scrapes\n`);
    ctx.log(
      markdownTable(
        ['what', 'p50 ms', 'p99 ms', 'x one pod (p50)'],
        [
          [`HTTP scrape, ${pods} pods (${a.bytes} bytes)`, f(pct(a.ms, 50)), f(pct(a.ms, 99)), (pct(a.ms, 50) / pct(o.ms, 50)).toFixed(1)],
          [`gather only, ${pods} pods, 32 in parallel`, f(pct(par, 50)), f(pct(par, 99)), ''],
          [`gather only, ${pods} pods, one at a time (baseline)`, f(pct(seq, 50)), f(pct(seq, 99)), ''],
          [`render only, ${pods} pods (counter guard on)`, f(pct(render, 50)), f(pct(render, 99)), ''],
          [`HTTP scrape, 1 pod (baseline, ${o.bytes} bytes)`, f(pct(o.ms, 50)), f(pct(o.ms, 99)), '1.0'],
        ],
      ),
    );
  } finally {
    for (const s of servers) await s.close();
    for (const c of children) c.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}
