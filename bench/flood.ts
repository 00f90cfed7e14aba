/**
 * Handshake flood (issues 18 and 19.3): how large a flood of valid-mac1 handshake
 * initiations a tunnel endpoint absorbs while a legitimate TCP flow runs through it, and
 * the CPU it spends, tenc against wireguard-go in the same run.
 *
 * Namespaces of netns-scripts/pods.sh (PODS_PREFIX=tencf): pod a (client) and pod b
 * (server, the victim) plus an attacker pod tencf-x (pods.sh add) on the same bridge with 64
 * addresses (10.77.0.100..163). For each tunnel (wg-deb, tenc; --only=...), and each
 * flood rate (--rates=0,2000,8000,32000 initiations/s over all 64 sources): iperf3 TCP
 * from a to b at up to 200 Mbit/s for --duration seconds (default 8) while
 * test/netns/flood-tool.mjs floods b's UDP port for the same time with initiations that
 * carry a valid mac1 for b's public key and no mac2. Measured: the rate the tool really
 * sent, b's tunnel process CPU (% of one core), the flow's mean and worst-second Mbit/s,
 * and the cookie replies the attacker got back. Output: a Markdown table and the tenc /
 * wireguard-go CPU ratio per rate.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { numberFlag, type BenchContext } from './lib/bench.js';
import { Children, cpuSeconds } from './lib/procs.js';
import { nsRemove } from './lib/netns.js';
import { markdownTable } from './lib/table.js';
import { TencTunnel, WgGoTunnel, type Tunnel, type TunnelEnv } from './lib/tunnels.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const PODS_SH = join(REPO, 'netns-scripts', 'pods.sh');
const FLOOD_TOOL = join(REPO, 'test', 'netns', 'flood-tool.mjs');
const SOURCES = Array.from({ length: 64 }, (_, i) => `10.77.0.${100 + i}`);

interface Row {
  tunnel: string;
  rate: number;
  sent: number;
  cpu: number;
  meanMbit: number;
  minMbit: number;
  cookies: number;
  error?: string;
}

export async function run(ctx: BenchContext): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('must run as root (creates network namespaces)');
  const seconds = numberFlag(ctx, 'duration', 8);
  const rates = (ctx.flags.get('rates') ?? '0,2000,8000,32000').split(',').map(Number);
  if (rates.some((r) => !Number.isInteger(r) || r < 0 || r > 200_000)) throw new Error('--rates: integers 0..200000');
  const only = ctx.flags.get('only')?.split(',');
  const prefix = ctx.flags.get('prefix') ?? 'tencf';
  const tunnels: Tunnel[] = [
    new WgGoTunnel({ id: 'wg-deb', label: 'wireguard-go (Debian)', binary: '/usr/bin/wireguard-go', ifname: 'wgfdeb', listenPort: 51830, subnet: 1 }),
    new TencTunnel(),
  ].filter((t) => !only || only.includes(t.id));
  const children = new Children();
  const dir = mkdtempSync(join(tmpdir(), 'tenc-flood-bench-'));
  const nsA = `${prefix}-a`;
  const nsB = `${prefix}-b`;
  const nsX = `${prefix}-x`;
  const env: TunnelEnv = { nsA, nsB, addrA: '10.77.0.1', addrB: '10.77.0.2', dir, children };
  const oldPrefix = process.env.PODS_PREFIX;
  process.env.PODS_PREFIX = prefix;
  const sh = (cmd: string, args: string[]) => children.check(cmd, args, { timeoutMs: 30_000 });
  const podsUp = async () => {
    await sh('bash', [PODS_SH, 'up']);
    await sh('bash', [PODS_SH, 'add', 'x', '50']); // the attacker, 10.77.0.50 on the bridge
    for (const s of SOURCES) await sh('ip', ['-n', nsX, 'addr', 'add', `${s}/24`, 'dev', 'eth0']);
  };
  const podsDown = async () => {
    nsRemove(nsX);
    await children.run('bash', [PODS_SH, 'down'], { timeoutMs: 30_000 });
  };
  ctx.log(`${seconds} s per rate, rates ${rates.join(', ')}/s from ${SOURCES.length} sources; load ${loadavg().map((x) => x.toFixed(2)).join(' ')}, ${cpus().length} CPUs`);
  const rows: Row[] = [];
  try {
    for (const t of tunnels) {
      await podsDown();
      await podsUp();
      try {
        const up = await t.up(env);
        if (!up.server) throw new Error('tunnel does not report its server key');
        const server = up.server;
        // handshake first
        for (let i = 0; i < 10; i++) if ((await children.run('ip', ['netns', 'exec', nsA, 'ping', '-c', '1', '-W', '1', up.dst])).code === 0) break;
        for (const rate of rates) {
          const srv = children.spawn('ip', ['netns', 'exec', nsB, 'iperf3', '-s', '-1', '-B', up.dst, '-p', '5299']);
          await new Promise((r) => setTimeout(r, 400));
          const cpu0 = cpuSeconds(server.pid) ?? 0;
          const t0 = performance.now();
          const client = children.run('ip', ['netns', 'exec', nsA, 'iperf3', '-c', up.dst, '-p', '5299', '-t', String(seconds), '-b', '200M', '-i', '1', '--json'], { timeoutMs: (seconds + 20) * 1000 });
          const flood = rate > 0
            ? children.run('ip', ['netns', 'exec', nsX, process.execPath, FLOOD_TOOL, env.addrB, String(server.port), server.publicKey, String(rate), String(seconds), SOURCES.join(',')], { timeoutMs: (seconds + 20) * 1000 })
            : Promise.resolve(null);
          const [c, f] = await Promise.all([client, flood]);
          const cpu = ((cpuSeconds(server.pid) ?? 0) - cpu0) / ((performance.now() - t0) / 1000);
          srv.kill('SIGTERM');
          const row: Row = { tunnel: t.id, rate, sent: 0, cpu: cpu * 100, meanMbit: 0, minMbit: 0, cookies: 0 };
          try {
            const ip = JSON.parse(c.stdout) as { intervals: { sum: { bits_per_second: number } }[] };
            const bps = ip.intervals.map((i) => i.sum.bits_per_second / 1e6);
            row.meanMbit = bps.reduce((x, y) => x + y, 0) / Math.max(1, bps.length);
            row.minMbit = Math.min(...bps);
          } catch {
            row.error = `iperf3: ${c.stderr.trim().slice(0, 120) || c.stdout.slice(0, 120)}`;
          }
          if (f) {
            const fl = JSON.parse(f.stdout.trim().split('\n').pop() || '{}') as { sent?: number; seconds?: number; cookieReplies?: number };
            row.sent = Math.round((fl.sent ?? 0) / (fl.seconds || seconds));
            row.cookies = fl.cookieReplies ?? 0;
          }
          rows.push(row);
          ctx.log(`- ${t.id} @ ${rate}/s: sent ${row.sent}/s, server CPU ${row.cpu.toFixed(0)} %, flow ${row.meanMbit.toFixed(0)} Mbit/s (worst second ${row.minMbit.toFixed(0)}), ${row.cookies} cookie replies${row.error ? `, ${row.error}` : ''}`);
        }
      } catch (err) {
        rows.push({ tunnel: t.id, rate: -1, sent: 0, cpu: 0, meanMbit: 0, minMbit: 0, cookies: 0, error: (err as Error).message });
        ctx.log(`- ${t.id}: failed: ${(err as Error).message}; ${t.stderrTail().slice(-3).join(' / ')}`);
      } finally {
        await t.down().catch(() => []);
      }
    }
  } finally {
    children.killAll('SIGTERM');
    await podsDown();
    rmSync(dir, { recursive: true, force: true });
    if (oldPrefix === undefined) delete process.env.PODS_PREFIX;
    else process.env.PODS_PREFIX = oldPrefix;
  }
  ctx.log('');
  ctx.log(
    markdownTable(
      ['tunnel', 'flood asked (/s)', 'flood sent (/s)', 'victim CPU (% of a core)', 'flow mean (Mbit/s)', 'flow worst second (Mbit/s)', 'cookie replies'],
      rows.filter((r) => r.rate >= 0).map((r) => [r.tunnel, String(r.rate), String(r.sent), r.cpu.toFixed(0), r.meanMbit.toFixed(0), r.minMbit.toFixed(0), String(r.cookies)]),
    ),
  );
  const wg = rows.filter((r) => r.tunnel === 'wg-deb');
  const te = rows.filter((r) => r.tunnel === 'tenc');
  for (const r of te) {
    const w = wg.find((x) => x.rate === r.rate);
    if (w && w.cpu > 0) ctx.log(`rate ${r.rate}/s: tenc/wireguard-go victim CPU ${(r.cpu / w.cpu).toFixed(2)}, flow ${(r.meanMbit / Math.max(1, w.meanMbit)).toFixed(2)}`);
  }
}
