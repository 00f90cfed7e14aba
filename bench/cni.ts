/**
 * `cni`: pod creation through the CNI chain (Debian's bridge + host-local, loopback,
 * tenc) on a one-node cluster of netns-scripts/cluster.sh (prefix cb): for --pods=N
 * pods (default 100), one after another,
 *
 *   ADD -> fail-closed     the whole chain's ADD as the runtime sees it (tenc returns only
 *                          once the pod's proxy has its rule, guards and nft table)
 *   ADD -> first encrypted an app already waiting in the pod's netns sends UDP to a project
 *                          pod every 5 ms; the time from ADD's start to its first echo
 *                          (through tenc: the pod is guarded, there is no plaintext path)
 *
 * Baseline in the same run: the same chain for pods of an unprotected namespace (tenc
 * passes prevResult through). p50/p99 of each. Run as root under the netns lock.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { numberFlag, type BenchContext } from './lib/bench.js';
import { markdownTable } from './lib/table.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const tool = join(root, 'dist', 'src', 'agent', 'cluster-tool.js');
const script = join(root, 'netns-scripts', 'cluster.sh');
const PREFIX = 'cb';
const STATE = `/run/tenc-cluster/${PREFIX}`;
const NODE = `${PREFIX}-n-node1`;
const env = { ...process.env, CLUSTER_PREFIX: PREFIX, CLUSTER_PROTECT: 'alpha' };

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

function chain(cmd: 'ADD' | 'DEL', pod: string, address: string, project: string): Promise<number | null> {
  const c = spawn('ip', ['netns', 'exec', NODE, 'node', tool, 'cni', cmd, STATE, PREFIX, pod, JSON.stringify({ node: 'node1', project, address })], { stdio: 'ignore' });
  return new Promise((r) => c.on('exit', (code) => r(code)));
}

function makeNs(ns: string): void {
  spawnSync('ip', ['netns', 'add', ns]);
  spawnSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  mkdirSync(`/etc/netns/${ns}`, { recursive: true });
  writeFileSync(`/etc/netns/${ns}/resolv.conf`, 'nameserver 10.96.0.10\n');
}
function removeNs(ns: string): void {
  spawnSync('ip', ['netns', 'del', ns]);
  rmSync(`/etc/netns/${ns}`, { recursive: true, force: true });
}

/** An app waiting in the netns: sends to the echo server every 5 ms, prints the time of the first echo. */
function waitingApp(ns: string): { ready: Promise<void>; firstEcho: Promise<number | null>; kill: () => void } {
  const c = spawn('ip', ['netns', 'exec', ns, 'node', '-e', `
    const s = require('dgram').createSocket('udp4');
    s.on('message', () => { console.log('echo ' + Date.now()); process.exit(0); });
    s.on('error', () => {});
    s.bind(0, () => { console.log('ready'); setInterval(() => s.send('x', 7000, '10.128.1.10', () => {}), 5); });`], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  let readyF: () => void = () => {};
  const ready = new Promise<void>((r) => (readyF = r));
  const firstEcho = new Promise<number | null>((resolve) => {
    c.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('ready')) readyF();
      const m = /echo (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    c.on('exit', () => resolve(null));
    setTimeout(() => resolve(null), 20_000);
  });
  return { ready, firstEcho, kill: () => c.kill('SIGKILL') };
}

export async function run(ctx: BenchContext): Promise<void> {
  const n = numberFlag(ctx, 'pods', 100);
  const file = `/tmp/${PREFIX}-bench-${process.pid}.json`;
  writeFileSync(
    file,
    JSON.stringify({
      underlay: '10.200.0.0/24',
      overlay: '10.201.0.0/24',
      serviceCidr: '10.96.0.0/16',
      dns: '10.96.0.10',
      nodes: [{ name: 'node1', podCidr: '10.128.1.0/24' }],
      projects: [{ name: 'alpha' }, { name: 'beta' }],
      pods: [{ name: 'alpha-srv', project: 'alpha', node: 'node1', address: '10.128.1.10', labels: {} }],
      services: [],
    }),
  );
  spawnSync('bash', [script, 'down'], { env });
  const up = spawnSync('bash', [script, 'up', file], { env, encoding: 'utf8' });
  if (up.status !== 0) throw new Error(`cluster.sh up: ${up.stderr}`);
  const echo = spawn('ip', ['netns', 'exec', `${PREFIX}-alpha-srv`, 'node', '-e', `
    const s = require('dgram').createSocket('udp4'); s.bind(7000); s.on('message', (m, r) => s.send(m, r.port, r.address));`], { stdio: 'ignore' });
  const addMs: number[] = [];
  const firstMs: number[] = [];
  const baseMs: number[] = [];
  let lost = 0;
  try {
    for (let i = 0; i < n; i++) {
      const address = `10.128.1.${100 + (i % 100)}`;
      for (const [project, out] of [['beta', baseMs], ['alpha', addMs]] as const) {
        const pod = `${project}-b${i}`;
        const ns = `${PREFIX}-${pod}`;
        makeNs(ns);
        const app = project === 'alpha' ? waitingApp(ns) : null;
        await app?.ready;
        const t0 = Date.now();
        const code = await chain('ADD', pod, address, project);
        const t1 = Date.now();
        if (code !== 0) throw new Error(`ADD ${pod} failed (${code})`);
        out.push(t1 - t0);
        if (app) {
          const t = await app.firstEcho;
          if (t === null) lost++;
          else firstMs.push(t - t0);
          app.kill();
        }
        await chain('DEL', pod, address, project);
        removeNs(ns);
      }
    }
  } finally {
    echo.kill('SIGKILL');
    spawnSync('bash', [script, 'down'], { env });
    rmSync(file, { force: true });
  }
  const row = (what: string, xs: number[]) => [what, String(xs.length), pct(xs, 50).toFixed(0), pct(xs, 99).toFixed(0)];
  ctx.log(
    markdownTable(
      ['measure (ms, from the chain ADD start)', 'pods', 'p50', 'p99'],
      [
        row('chain ADD, unprotected namespace (baseline: tenc passes through)', baseMs),
        row('chain ADD, protected: returns when the pod is fail-closed', addMs),
        row('first echo through tenc (app waiting before ADD)', firstMs),
      ],
    ),
  );
  ctx.log(`\nfail-closed p50 added by tenc over the baseline: ${(pct(addMs, 50) - pct(baseMs, 50)).toFixed(0)} ms; pods without an echo within 20 s: ${lost}`);
}
