/**
 * Benchmark dispatcher: `node dist/bench/main.js [--list] [name...] [--flag=value...]`
 * (or `npm run bench -- name`). With no names it runs every registered bench in order.
 *
 * To add a bench, write bench/<name>.ts exporting `run(ctx: BenchContext)` (see
 * bench/lib/bench.ts) and add one entry to BENCHES below. Modules load lazily, so one
 * bench's imports (the addon, a missing tool) never stop another from running.
 */
import type { BenchContext, BenchModule } from './lib/bench.js';

interface BenchEntry {
  name: string;
  summary: string;
  load: () => Promise<BenchModule>;
}

const BENCHES: BenchEntry[] = [
  {
    name: 'aead',
    summary: 'ChaCha20-Poly1305 Gbit/s per core: native batch, node:crypto, @noble/ciphers vs openssl speed',
    load: () => import('./aead.js'),
  },
  { name: 'cni', summary: 'pod creation through the CNI chain: ADD -> fail-closed and ADD -> first encrypted packet, p50/p99 (--pods=N)', load: () => import('./cni.js') },
  { name: 'density', summary: 'N idle pods: RSS/PSS/private memory per pod vs wireguard-go; start latency p50/p99 (--pods=N --starts=M)', load: () => import('./density.js') },
  { name: 'dns', summary: 'DNS proxy vs dnsmasq direct: added latency p50/p99, answers per second (pass-through and rewrite)', load: () => import('./dns.js') },
  { name: 'flood', summary: 'handshake flood (valid mac1, 64 sources) at the server during a TCP flow: victim CPU and flow, tenc vs wireguard-go', load: () => import('./flood.js') },
  { name: 'metrics', summary: "agent /metrics: one scrape of 100 pods' control sockets, p50/p99 vs one at a time and vs 1 pod", load: () => import('./metrics.js') },
  { name: 'iperf', summary: 'pod to pod: plain, wireguard-go (Debian, backports), tenc: iperf3 TCP/UDP, ping, CPU, RSS', load: () => import('./iperf.js') },
  { name: 'registry', summary: 'registry propagation p50/p99 (write -> another agent sees the trusted key), dir vs etcd, 0 and 1,000 pods', load: () => import('./registry.js') },
  { name: 'soak', summary: 'one tenc pod proxy under iperf3 load for 5 minutes: idle RSS, max, slope (--soak=S, --peers=N)', load: () => import('./soak.js') },
];

function usage(): string {
  const names = BENCHES.map((b) => `  ${b.name.padEnd(10)} ${b.summary}`).join('\n');
  return `usage: node dist/bench/main.js [--list] [name...] [--flag=value...]\nbenches:\n${names}`;
}

async function main(argv: string[]): Promise<number> {
  if (argv.includes('--list') || argv.includes('--help') || argv.includes('-h')) {
    console.log(usage());
    return 0;
  }
  const flags = new Map<string, string>();
  const names: string[] = [];
  for (const arg of argv) {
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      if (eq < 0) flags.set(arg.slice(2), 'true');
      else flags.set(arg.slice(2, eq), arg.slice(eq + 1)); // the value may hold '=' (--tenc-env=K=V)
    } else {
      names.push(arg);
    }
  }
  const unknown = names.filter((n) => !BENCHES.some((b) => b.name === n));
  if (unknown.length > 0) {
    console.error(`unknown bench: ${unknown.join(', ')}\n${usage()}`);
    return 2;
  }
  const selected = names.length === 0 ? BENCHES : BENCHES.filter((b) => names.includes(b.name));
  const ctx: BenchContext = { flags, log: (line) => console.log(line) };
  let failed = 0;
  for (const bench of selected) {
    console.log(`\n## ${bench.name}: ${bench.summary}\n`);
    const t0 = performance.now();
    try {
      await (await bench.load()).run(ctx);
    } catch (err) {
      failed++;
      console.error(`bench ${bench.name} failed:`, err);
    }
    console.log(`\n(${bench.name}: ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  }
  return failed === 0 ? 0 : 1;
}

process.exitCode = await main(process.argv.slice(2));
