/**
 * The DNS proxy's cost against dnsmasq queried directly, in the same run and the
 * same private network namespace (loopback only):
 *
 *   dnsmasq   127.0.0.1:53     --local-ttl=30, records for one project service and one external name
 *   proxy     127.0.0.1:15353  src/dns/proxy.ts in its own node process, upstream = dnsmasq
 *   latency   a node client, one query outstanding, N queries: p50/p99 (its own cost
 *             is the same for every target, so the difference is the proxy's). Run
 *             with client, dnsmasq and proxy on CPU 0 (taskset): every hop is a
 *             same-CPU wake-up, so the added p50 is the proxy's own cost; and again
 *             unpinned, as the scheduler places them: on this 2-vCPU VM a cross-CPU
 *             wake-up costs 40-120 us and changes from run to run (reported, noisy)
 *   rate      dnsperf (Debian's, C), 64 queries outstanding for S seconds: answers
 *             per second. The same client drives every target; a C client keeps the
 *             client's cost from hiding dnsmasq's own rate (client, proxy and dnsmasq
 *             share the cores). Without dnsperf (or with --client=node) the node
 *             client does it instead, and the report says so.
 *
 * Three targets: dnsmasq direct; the proxy with an external name (pass-through:
 * header + question gate, ID remapping); the proxy with a project service name (the
 * answer is decoded, the VIP rewritten to 3 endpoints and re-encoded). The proxy is
 * queried on its port (the nftables redirect of port 53 is not in the path).
 * Added latency = proxy p50 - direct p50. Targets (issue 4): added p50 <= 0.1 ms,
 * proxy rate >= half of dnsmasq's. Reported, never asserted.
 * Each round measures every target once, in turn; a target's figures are its best
 * over the rounds, and the rate ratio of every round is listed too (the spread).
 * Flags: --queries=N latency samples (3000), --seconds=S per rate run (2), --rounds=R (2),
 * --client=dnsperf|node for the rate (dnsperf when installed).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { numberFlag, type BenchContext } from './lib/bench.js';
import { nsRemove, nsUp } from './lib/netns.js';
import { markdownTable } from './lib/table.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const proxyModule = join(root, 'dist', 'src', 'dns', 'proxy.js');
const classifyModule = join(root, 'dist', 'src', 'dns', 'classify.js');

/** The client: runs in its own process, prints one JSON line. */
const CLIENT_JS = `
const dgram = require('dgram');
const [port, name, mode, count, seconds] = process.argv.slice(1);
const q = (id) => {
  const labels = name.split('.');
  const parts = [Buffer.from([id >> 8, id & 255, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0])];
  for (const l of labels) parts.push(Buffer.from([l.length]), Buffer.from(l));
  parts.push(Buffer.from([0, 0, 1, 0, 1]));
  return Buffer.concat(parts);
};
const s = dgram.createSocket('udp4');
s.bind(0, '127.0.0.1', async () => {
  if (mode === 'latency') {
    const times = [];
    let id = 0, t0 = 0, bad = 0;
    const next = () => { if (times.length >= +count) { s.close(); times.sort((a, b) => a - b); console.log(JSON.stringify({ p50: times[Math.floor(times.length * 0.5)], p99: times[Math.floor(times.length * 0.99)], bad })); return; } id = (id + 1) & 0xffff; t0 = process.hrtime.bigint(); s.send(q(id), +port, '127.0.0.1'); };
    s.on('message', (m) => { if (((m[0] << 8) | m[1]) !== id) return; if ((m[3] & 15) !== 0) bad++; times.push(Number(process.hrtime.bigint() - t0) / 1e6); next(); });
    next();
  } else {
    let answered = 0, sent = 0, bad = 0, stop = false;
    const end = Date.now() + +seconds * 1000;
    const t0 = process.hrtime.bigint();
    const send = () => { if (stop) return; sent++; s.send(q(sent & 0xffff), +port, '127.0.0.1'); };
    s.on('message', (m) => { answered++; if ((m[3] & 15) !== 0) bad++; if (Date.now() >= end) { if (!stop) { stop = true; const secs = Number(process.hrtime.bigint() - t0) / 1e9; console.log(JSON.stringify({ qps: answered / secs, bad, sent })); setTimeout(() => s.close(), 200); } return; } send(); });
    // lost datagrams would stall a closed loop: top up once per 50 ms
    const topUp = setInterval(() => { if (stop) return clearInterval(topUp); while (sent - answered < 64) send(); }, 50);
    for (let i = 0; i < 64; i++) send();
  }
});
`;

function proxyJs(port: number): string {
  return `
import { DnsProxy } from ${JSON.stringify(proxyModule)};
import { CidrSet } from ${JSON.stringify(classifyModule)};
const eps = new Map([['10.96.0.20', ['10.77.0.2', '10.77.0.3', '10.77.0.4']]]);
const p = await DnsProxy.start({
  listen: ['127.0.0.1'], port: ${port},
  upstream: { servers: [{ address: '127.0.0.1', port: 53 }], mark: 0, timeoutMs: 2000, maxInflight: 4096 },
  policy: { domain: 'alpha.svc.cluster.local', neverNames: [] }, neverCidrs: new CidrSet([]),
  maxTtl: 30, endpoints: (v) => eps.get(v),
});
console.log('ready');
process.on('SIGTERM', async () => { console.error(JSON.stringify(p.counters())); await p.stop(); process.exit(0); });
`;
}

function waitLine(child: ChildProcess, text: string, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`no "${text}" within ${ms} ms: ${out}`)), ms);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes(text)) {
        clearTimeout(t);
        resolve();
      }
    });
    child.on('exit', (c) => reject(new Error(`exited ${c}: ${out}`)));
  });
}

/** dnsperf's summary: answers per second, lost queries, answers that are not NOERROR. */
export function parseDnsperf(out: string): { qps: number; lost: number; bad: number } {
  const qps = /Queries per second:\s+([\d.]+)/.exec(out);
  const lost = /Queries lost:\s+(\d+)/.exec(out);
  const codes = /Response codes:\s+(.*)/.exec(out);
  if (!qps || !lost || !codes) throw new Error(`dnsperf printed no summary: ${out.slice(-400)}`);
  let bad = 0;
  for (const m of codes[1].matchAll(/([A-Z]+) (\d+)/g)) if (m[1] !== 'NOERROR') bad += Number(m[2]);
  return { qps: Number(qps[1]), lost: Number(lost[1]), bad };
}

const has = (tool: string) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;

export async function run(ctx: BenchContext): Promise<void> {
  const queries = Math.floor(numberFlag(ctx, 'queries', 3000));
  const seconds = numberFlag(ctx, 'seconds', 2);
  const rounds = Math.floor(numberFlag(ctx, 'rounds', 2));
  for (const tool of ['ip', 'dnsmasq']) {
    if (!has(tool)) throw new Error(`dns bench needs ${tool}: run netns-scripts/deps.sh`);
  }
  const clientFlag = ctx.flags.get('client');
  if (clientFlag !== undefined && clientFlag !== 'dnsperf' && clientFlag !== 'node') throw new RangeError(`--client must be dnsperf or node, got ${clientFlag}`);
  const rateClient = clientFlag ?? (has('dnsperf') ? 'dnsperf' : 'node');
  if (rateClient === 'dnsperf' && !has('dnsperf')) throw new Error('--client=dnsperf: dnsperf is not installed (apt-get install dnsperf)');
  const dataDir = mkdtempSync(join(tmpdir(), 'tenc-bdns-'));
  const ns = `tenc-bdns${process.pid % 100000}`;
  const inNs = (cmd: string, args: string[]) => spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const children: ChildProcess[] = [];
  nsUp(ns);
  try {
    const dnsmasq = inNs('dnsmasq', [
      '--conf-file=/dev/null', '--no-resolv', '--no-hosts', '--keep-in-foreground', '--pid-file=',
      '--listen-address=127.0.0.1', '--bind-interfaces', '--local-ttl=30', '--cache-size=1000',
      '--address=/web.alpha.svc.cluster.local/10.96.0.20', '--address=/www.example.org/10.77.0.254',
    ]);
    children.push(dnsmasq);
    const proxy = inNs('node', ['--input-type=module', '-e', proxyJs(15353)]);
    children.push(proxy);
    let proxyStats = '';
    proxy.stderr!.setEncoding('utf8').on('data', (d: string) => (proxyStats += d));
    await waitLine(proxy, 'ready', 10_000);

    const client = (port: number, name: string, mode: 'latency' | 'rate'): Record<string, number> => {
      if (mode === 'rate' && rateClient === 'dnsperf') {
        const file = join(dataDir, `${name}.txt`);
        writeFileSync(file, `${name} A\n`);
        const args = ['-s', '127.0.0.1', '-p', String(port), '-d', file, '-l', String(seconds), '-q', '64', '-t', '2'];
        const r = spawnSync('ip', ['netns', 'exec', ns, 'dnsperf', ...args], { encoding: 'utf8', timeout: (seconds + 30) * 1000 });
        if (r.status !== 0) throw new Error(`dnsperf failed: ${r.stderr}${r.stdout}`);
        const d = parseDnsperf(r.stdout);
        return { qps: d.qps, bad: d.bad + d.lost };
      }
      const pin = mode === 'latency' && pinned ? ['taskset', '-c', '0'] : [];
      const r = spawnSync('ip', ['netns', 'exec', ns, ...pin, 'node', '-e', CLIENT_JS, String(port), name, mode, String(queries), String(seconds)], {
        encoding: 'utf8',
        timeout: 60_000,
      });
      if (r.status !== 0) throw new Error(`client failed: ${r.stderr}`);
      return JSON.parse(r.stdout.trim().split('\n').pop()!);
    };
    const targets = [
      { label: 'dnsmasq direct', port: 53, name: 'www.example.org' },
      { label: 'proxy, external name (pass-through)', port: 15353, name: 'www.example.org' },
      { label: 'proxy, project service (VIP -> 3 endpoints)', port: 15353, name: 'web.alpha.svc.cluster.local' },
    ];
    // Latency twice: with client, dnsmasq and proxy on one CPU (every hop a same-CPU
    // wake-up: the proxy's own cost) and as the scheduler places them (on this 2-vCPU VM
    // a cross-CPU wake-up costs 40-120 us and moves run to run, so that figure is noisy).
    let pinned = false;
    const allCpus = `0-${Math.max(0, cpus().length - 1)}`;
    const pinAll = (cpus: string) => {
      for (const c of [dnsmasq, proxy]) spawnSync('taskset', ['-pc', cpus, String(c.pid)], { stdio: 'ignore' });
      pinned = cpus === '0';
    };
    const best = targets.map(() => ({ p50: Infinity, p99: Infinity, freeP50: Infinity, qps: 0, bad: 0 }));
    const perRound: number[][] = targets.map(() => []);
    for (let round = 0; round < rounds; round++) {
      targets.forEach((t, i) => {
        pinAll('0');
        const l = client(t.port, t.name, 'latency');
        pinAll(allCpus);
        const f = client(t.port, t.name, 'latency');
        const q = client(t.port, t.name, 'rate');
        best[i].p50 = Math.min(best[i].p50, l.p50);
        best[i].p99 = Math.min(best[i].p99, l.p99);
        best[i].freeP50 = Math.min(best[i].freeP50, f.p50);
        best[i].qps = Math.max(best[i].qps, q.qps);
        best[i].bad += l.bad + f.bad + q.bad;
        perRound[i].push(q.qps);
      });
    }
    const direct = best[0];
    const rows = targets.map((t, i) => {
      const b = best[i];
      const added = i === 0 ? '-' : `${((b.p50 - direct.p50) * 1000).toFixed(0)} µs`;
      const freeAdded = i === 0 ? `(p50 ${(b.freeP50 * 1000).toFixed(0)} µs)` : `${((b.freeP50 - direct.freeP50) * 1000).toFixed(0)} µs`;
      return [t.label, `${(b.p50 * 1000).toFixed(0)} µs`, `${(b.p99 * 1000).toFixed(0)} µs`, added, freeAdded, `${Math.round(b.qps)}`, i === 0 ? '1.00' : (b.qps / direct.qps).toFixed(2), String(b.bad)];
    });
    const rateBy = rateClient === 'dnsperf' ? 'dnsperf' : 'the node client (dnsperf not used)';
    ctx.log(
      `UDP queries over loopback in one namespace; best of ${rounds} rounds; latency: node client, ${queries} sequential queries, ` +
        `client, dnsmasq and proxy on CPU 0 (p50, p99, added p50), and again unpinned (added p50 as scheduled); ` +
        `rate: ${rateBy}, ${seconds} s with 64 outstanding. Non-NOERROR counts answers that are not NOERROR and lost queries.\n`,
    );
    ctx.log(markdownTable(['target', 'p50', 'p99', 'added p50', 'added p50, unpinned', 'answers/s', 'rate vs direct', 'non-NOERROR'], rows));
    const pass = best.slice(1).map((b) => ({ added: (b.p50 - direct.p50) * 1000, ratio: b.qps / direct.qps }));
    ctx.log(
      `\ntargets (issue 4): added p50 <= 100 µs (one CPU): ${pass.map((p) => (p.added <= 100 ? 'met' : 'NOT met')).join(' / ')}; ` +
        `rate >= 0.5 x dnsmasq: ${pass.map((p) => (p.ratio >= 0.5 ? 'met' : 'NOT met')).join(' / ')} (pass-through / rewrite)`,
    );
    const ratios = perRound.slice(1).map((r) => r.map((q, k) => (q / perRound[0][k]).toFixed(2)).join(', '));
    ctx.log(`rate vs direct in each round (same round's dnsmasq): pass-through ${ratios[0]}; rewrite ${ratios[1]}`);
    proxy.kill('SIGTERM');
    await new Promise((r) => proxy.once('exit', r));
    const stats = proxyStats.trim().split('\n').pop();
    if (stats) {
      const c = JSON.parse(stats);
      ctx.log(`\nproxy counters: udp queries ${c.queriesUdp}, answered ${c.answered}, rewritten ${c.rewritten}, servfail ${c.servfail}, drops ${JSON.stringify(c.drops)}`);
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    nsRemove(ns);
  }
}
