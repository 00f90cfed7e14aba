/**
 * `cni`: pod creation through the CNI chain (Debian's bridge + host-local, loopback,
 * tenc) on a one-node cluster of netns-scripts/cluster.sh (prefix cb): for --pods=N
 * pods (default 100), one after another,
 *
 *   tenc ADD -> fail-closed   tenc's own step of the chain, as the runtime sees it: the
 *                             plugin's start to its exit (the static cni/tenc-cni.c
 *                             binary cluster.sh installs; the agent's node socket,
 *                             the rule, guards and nft table in the pod's netns);
 *                             timed by a wrapper around the plugin
 *   chain ADD                 the whole chain (bridge, loopback, tenc) through the
 *                             cluster's runtime stand-in (cluster-tool cni)
 *   ADD -> first encrypted    an app created in the pod's netns before ADD (a container
 *                             not started yet) starts sending UDP to a project pod every
 *                             5 ms the moment ADD returns; the time from tenc's ADD start
 *                             to the first echo. The pods are in the registry first (as
 *                             the API server knows a pod before its sandbox), so the
 *                             echo server's proxy drops their plaintext: an echo is
 *                             encrypted both ways
 *
 * Baseline in the same run: the same chain for pods of an unprotected namespace (tenc
 * passes prevResult through after asking the agent). p50/p99 of each. Progress every
 * 10 pods; three pods in a row without an echo stop the run with the agent's log.
 * Run as root under the netns lock.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { numberFlag, type BenchContext } from './lib/bench.js';
import { nsRemove, nsUp } from './lib/netns.js';
import { markdownTable } from './lib/table.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const tool = join(root, 'dist', 'src', 'agent', 'cluster-tool.js');
const script = join(root, 'netns-scripts', 'cluster.sh');
const PREFIX = 'cb';
const STATE = `/run/tenc-cluster/${PREFIX}`;
const NODE = `${PREFIX}-n-node1`;
const SERVER = '10.128.1.10';
const env = { ...process.env, CLUSTER_PREFIX: PREFIX, CLUSTER_PROTECT: 'alpha' };
const CHAIN_TIMEOUT_MS = 30_000;
const ECHO_TIMEOUT_MS = 15_000;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

function chain(cmd: 'ADD' | 'DEL', pod: string, address: string, project: string): Promise<number | null> {
  const c = spawn('ip', ['netns', 'exec', NODE, 'node', tool, 'cni', cmd, STATE, PREFIX, pod, JSON.stringify({ node: 'node1', project, address })], { stdio: 'ignore' });
  const t = setTimeout(() => c.kill('SIGKILL'), CHAIN_TIMEOUT_MS);
  return new Promise((r) => c.on('exit', (code) => (clearTimeout(t), r(code))));
}

function makeNs(ns: string): void {
  nsUp(ns);
  mkdirSync(`/etc/netns/${ns}`, { recursive: true });
  writeFileSync(`/etc/netns/${ns}/resolv.conf`, 'nameserver 10.96.0.10\n');
}
function removeNs(ns: string): void {
  nsRemove(ns);
  rmSync(`/etc/netns/${ns}`, { recursive: true, force: true });
}

/** An app in the netns, started before ADD: sends to the echo server every 5 ms once told to (go()), prints the time of the first echo. */
function waitingApp(ns: string): { ready: Promise<boolean>; go: () => void; firstEcho: Promise<number | null>; kill: () => void } {
  const c: ChildProcess = spawn('ip', ['netns', 'exec', ns, 'node', '-e', `
    const s = require('dgram').createSocket('udp4');
    s.on('message', () => { console.log('echo ' + Date.now()); process.exit(0); });
    s.on('error', () => {});
    s.bind(0, () => console.log('ready'));
    process.stdin.once('data', () => setInterval(() => s.send('x', 7000, '${SERVER}', () => {}), 5));`], { stdio: ['pipe', 'pipe', 'ignore'] });
  let out = '';
  let readyF: (ok: boolean) => void = () => {};
  const ready = new Promise<boolean>((r) => (readyF = r));
  const firstEcho = new Promise<number | null>((resolve) => {
    const t = setTimeout(() => resolve(null), ECHO_TIMEOUT_MS + 5000);
    c.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('ready')) readyF(true);
      const m = /echo (\d+)/.exec(out);
      if (m) {
        clearTimeout(t);
        resolve(Number(m[1]));
      }
    });
    c.on('exit', () => {
      clearTimeout(t);
      readyF(false); // an app that never got ready must not hang the run
      resolve(null);
    });
  });
  c.stdin!.on('error', () => {});
  return { ready, go: () => c.stdin!.write('go\n'), firstEcho, kill: () => c.kill('SIGKILL') };
}

/** Wraps the cluster's tenc launcher: each call appends "COMMAND CONTAINERID START_NS END_NS RC" to `times`. */
function timeLauncher(times: string): void {
  // the plugin (cni/tenc-cni.c, static) moves next to its wrapper, which runs it with the same stdin and env
  const launcher = join(STATE, 'cni', 'bin', 'tenc');
  const plugin = join(STATE, 'cni', 'tenc-plugin');
  if (!existsSync(launcher)) throw new Error(`${launcher}: no tenc plugin to wrap`);
  renameSync(launcher, plugin);
  writeFileSync(
    launcher,
    ['#!/bin/sh', 't0=$(date +%s%N)', JSON.stringify(plugin), 'rc=$?', `echo "$CNI_COMMAND $CNI_CONTAINERID $t0 $(date +%s%N) $rc" >> ${times}`, 'exit $rc', ''].join('\n'),
    { mode: 0o700 },
  );
}

/** tenc's ADD of the container: [start, end] in ms since the epoch. */
function tencAdd(times: string, containerId: string): [number, number] | null {
  const line = readFileSync(times, 'utf8')
    .split('\n')
    .reverse()
    .find((l) => l.startsWith(`ADD ${containerId} `));
  if (!line) return null;
  const [, , a, b] = line.split(' ');
  return [Number(BigInt(a) / 1000n) / 1000, Number(BigInt(b) / 1000n) / 1000];
}

function tool_(...args: string[]): void {
  const r = spawnSync('node', [tool, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cluster-tool ${args[0]}: ${r.stderr}`);
}

export async function run(ctx: BenchContext): Promise<void> {
  const n = numberFlag(ctx, 'pods', 100);
  if (n > 100) throw new RangeError('--pods: at most 100 (one /24 of addresses)');
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
      pods: [{ name: 'alpha-srv', project: 'alpha', node: 'node1', address: SERVER, labels: {} }],
      services: [],
    }),
  );
  spawnSync('bash', [script, 'down'], { env });
  const up = spawnSync('bash', [script, 'up', file], { env, encoding: 'utf8' });
  if (up.status !== 0) throw new Error(`cluster.sh up: ${up.stderr}`);
  const times = join(STATE, 'cni', 'tenc-times');
  timeLauncher(times);
  const echo = spawn('ip', ['netns', 'exec', `${PREFIX}-alpha-srv`, 'node', '-e', `
    const s = require('dgram').createSocket('udp4'); s.bind(7000); s.on('message', (m, r) => s.send(m, r.port, r.address));`], { stdio: 'ignore' });
  const address = (i: number) => `10.128.1.${100 + i}`;
  const chainMs: Record<'alpha' | 'beta', number[]> = { alpha: [], beta: [] };
  const tencMs: Record<'alpha' | 'beta', number[]> = { alpha: [], beta: [] };
  const firstMs: number[] = [];
  let lost = 0;
  let lostInARow = 0;
  const t00 = Date.now();
  try {
    // the registry knows the protected pods before their sandboxes (their peers trust their keys)
    for (let i = 0; i < n; i++) tool_('add-pod', STATE, PREFIX, JSON.stringify({ name: `alpha-b${i}`, project: 'alpha', node: 'node1', address: address(i), labels: {} }));
    tool_('sync', STATE, PREFIX);
    for (let i = 0; i < n; i++) {
      for (const project of ['beta', 'alpha'] as const) {
        const pod = `${project}-b${i}`;
        const ns = `${PREFIX}-${pod}`;
        makeNs(ns);
        const app = project === 'alpha' ? waitingApp(ns) : null;
        if (app && !(await app.ready)) throw new Error(`the app in ${ns} did not start`);
        const t0 = Date.now();
        const code = await chain('ADD', pod, address(i), project);
        const t1 = Date.now();
        app?.go();
        if (code !== 0) throw new Error(`ADD ${pod} failed (${code})`);
        chainMs[project].push(t1 - t0);
        const tenc = tencAdd(times, `${PREFIX}-${pod}`);
        if (!tenc) throw new Error(`ADD ${pod}: the tenc launcher did not run`);
        tencMs[project].push(tenc[1] - tenc[0]);
        if (app) {
          const t = await app.firstEcho;
          app.kill();
          if (t === null) {
            lost++;
            lostInARow++;
          } else {
            lostInARow = 0;
            firstMs.push(t - tenc[0]);
          }
          if (lostInARow >= 3) {
            const log = existsSync(join(STATE, 'agents', 'node1.log')) ? readFileSync(join(STATE, 'agents', 'node1.log'), 'utf8').split('\n').slice(-30).join('\n') : '(no agent log)';
            throw new Error(`no echo within ${ECHO_TIMEOUT_MS / 1000} s for 3 pods in a row (last ${pod}); the agent's log ends:\n${log}`);
          }
        }
        if ((await chain('DEL', pod, address(i), project)) !== 0) throw new Error(`DEL ${pod} failed`);
        removeNs(ns);
      }
      if ((i + 1) % 10 === 0) ctx.log(`  ${i + 1}/${n} pods (${((Date.now() - t00) / 1000).toFixed(0)} s): tenc ADD p50 ${pct(tencMs.alpha, 50).toFixed(0)} ms, first echo p50 ${firstMs.length ? pct(firstMs, 50).toFixed(0) : '-'} ms`);
    }
  } finally {
    echo.kill('SIGKILL');
    spawnSync('bash', [script, 'down'], { env });
    rmSync(file, { force: true });
  }
  const row = (what: string, xs: number[]) => [what, String(xs.length), pct(xs, 50).toFixed(0), pct(xs, 99).toFixed(0)];
  ctx.log(
    markdownTable(
      ['measure (ms)', 'pods', 'p50', 'p99'],
      [
        row('tenc ADD, unprotected namespace (baseline: asks the agent, passes through)', tencMs.beta),
        row('tenc ADD, protected: returns when the pod is fail-closed', tencMs.alpha),
        row('chain ADD (bridge, loopback, tenc), unprotected namespace', chainMs.beta),
        row('chain ADD (bridge, loopback, tenc), protected', chainMs.alpha),
        row('tenc ADD start -> first echo through tenc (app sends from ADD return)', firstMs),
      ],
    ),
  );
  ctx.log(`\nfail-closed p50 added by tenc over the baseline: ${(pct(tencMs.alpha, 50) - pct(tencMs.beta, 50)).toFixed(0)} ms; pods without an echo within ${ECHO_TIMEOUT_MS / 1000} s: ${lost}`);
}
