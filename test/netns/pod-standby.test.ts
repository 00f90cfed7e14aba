/**
 * A standby `tenc pod` handed its pod (control/handoff.ts, cli/standby.ts,
 * agent/standby.ts, native/netns.c), in real namespaces:
 *
 *   [ ns "home" ]  where the standby starts (the agent's namespace in a node)
 *   [ a ] 10.77.0.1 ---bridge (pods.sh)--- 10.77.0.2 [ b ]
 *
 *  1. a standby started in "home" and handed pod a: its key line follows the
 *     handoff, its process (/proc/PID/ns/net) and tenc0, rule, guards and nftables
 *     table are in a, nothing of tenc's is in "home"; its log goes to the handed log
 *     file ('pod running' with standby: true); a ping from a to b (a cold-started
 *     pod) goes through the tunnel; SIGTERM exits 0 and leaves a clean
 *  2. end of stdin before a handoff (the agent gone): exit 0, nothing done anywhere
 *  3. bad handoffs (not JSON, an unknown field, a relative path, a netns path that is a
 *     plain file or missing, a config that does not load): exit 2 with a message naming the field or
 *     path, and "home" and a untouched; `--standby --config` is a usage error
 *  4. after enterNetns, libuv's workers (started before it: the pool starts all its
 *     threads at first use) are still in the old namespace, yet runProcess's children
 *     are in the new one (native/spawn.c enters it before each child); after
 *     enterNetnsWorkers every worker is in the new one; a second enterNetns is EALREADY
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Netns, POD_ADDR, Topology, main, pairUp, pingUntil, projectDir, requireRoot, requireTool, startPod, status, tearDown, writeConfig, type PodProc } from './lib.js';
import { ensureBuilt } from '../build.js';
import { readPublicKeyLine } from '../../src/control/keyline.js';
import { formatHandoff, STANDBY_READY_LINE } from '../../src/control/handoff.js';

let topo: Topology | undefined;
let home: Netns;
let a: Netns;
let b: Netns;
let dir: string | undefined;
const standbys = new Set<ChildProcess>();

interface StandbyProc {
  child: ChildProcess;
  stderr: () => string;
  exit: Promise<number | null>;
}

/** `tenc pod --standby [args]` in "home"; resolves once it printed `standby ready`. */
async function startStandby(args: string[] = []): Promise<StandbyProc> {
  const child = spawn('nsenter', [`--net=/run/netns/${home.name}`, '--', process.execPath, main, 'pod', '--standby', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  standbys.add(child);
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exit = new Promise<number | null>((r) =>
    child.once('exit', (code) => {
      standbys.delete(child);
      r(code);
    }),
  );
  let out = '';
  const onData = (d: string): void => void (out += d);
  child.stdout!.setEncoding('utf8').on('data', onData);
  const end = Date.now() + 20_000;
  while (out !== STANDBY_READY_LINE) {
    if (child.exitCode !== null || Date.now() > end) throw new Error(`standby not ready (exit ${child.exitCode}; stdout ${JSON.stringify(out)}): ${err}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  child.stdout!.off('data', onData);
  return { child, stderr: () => err, exit };
}

/** What tenc leaves in a namespace: tenc0, rules of tenc's priorities, tenc's nftables tables. */
function tencState(ns: Netns): { tenc0: boolean; rules: string[]; tables: string[] } {
  const tenc0 = ns.tryExec('ip', 'link', 'show', 'tenc0').status === 0;
  const rules = [...ns.ip('-4', 'rule').split('\n'), ...ns.ip('-6', 'rule').split('\n')].filter((l) => /^52\d\d:/.test(l));
  const tables = ns
    .exec('nft', 'list', 'tables')
    .split('\n')
    .filter((l) => l.includes('tenc'));
  return { tenc0, rules, tables };
}

const EMPTY = { tenc0: false, rules: [], tables: [] };

function nsInode(path: string): number {
  return statSync(path).ino;
}

let configA: string;
let logA: string;

beforeAll(() => {
  requireRoot();
  for (const t of ['ip', 'nsenter', 'nft', 'ping']) requireTool(t);
  ensureBuilt();
  topo = Topology.up('tsb');
  a = topo.ns('a');
  b = topo.ns('b');
  home = Netns.create('home');
  dir = projectDir('standby');
  const A = POD_ADDR(1);
  configA = writeConfig(dir, 'a', { addresses: [A.v4, A.v6], pskFile: join(dir, 'psk') });
  logA = join(dir, 'a.log');
}, 60_000);

afterAll(async () => {
  for (const c of standbys) c.kill('SIGKILL');
  await tearDown(topo, dir);
});

describe('tenc pod --standby', () => {
  it('1. handed pod a: runs in a, nothing in home, logs to the handed file; a ping goes through tenc', async () => {
    const sb = await startStandby();
    expect(tencState(home)).toEqual(EMPTY);
    sb.child.stdin!.end(formatHandoff({ netns: `/run/netns/${a.name}`, config: configA, log: logA }));
    const key = await readPublicKeyLine(sb.child, 20_000);
    if (key instanceof Error) throw new Error(`${key.message}: ${sb.stderr()} ${existsSync(logA) ? readFileSync(logA, 'utf8') : ''}`);
    const end = Date.now() + 20_000;
    while (!(existsSync(logA) && readFileSync(logA, 'utf8').includes('"msg":"pod running"'))) {
      if (sb.child.exitCode !== null || Date.now() > end) throw new Error(`handed pod did not run: ${existsSync(logA) ? readFileSync(logA, 'utf8') : sb.stderr()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const running = readFileSync(logA, 'utf8')
      .split('\n')
      .filter((l) => l.includes('"msg":"pod running"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)[0];
    expect(running.standby).toBe(true);
    expect(running.pid).toBe(sb.child.pid);
    expect(sb.stderr()).toBe(''); // nothing went to the standby's own stderr
    // the process, and everything it made, in a
    expect(nsInode(`/proc/${sb.child.pid}/ns/net`)).toBe(nsInode(`/run/netns/${a.name}`));
    const inA = tencState(a);
    expect(inA.tenc0).toBe(true);
    expect(inA.rules.length).toBeGreaterThan(0);
    expect(inA.tables.length).toBeGreaterThan(0);
    expect(tencState(home)).toEqual(EMPTY);
    expect(status(a).publicKey).toBe(key);
    // the data plane: the engine's threads and its UDP socket in a
    const podB: PodProc = await startPod(b, writeConfig(dir!, 'b', { addresses: [POD_ADDR(2).v4, POD_ADDR(2).v6], pskFile: join(dir!, 'psk') }));
    const podA = { child: sb.child, pid: sb.child.pid!, publicKey: key, exit: sb.exit, stderr: sb.stderr } satisfies PodProc;
    pairUp(a, podA, 1, b, podB, 2);
    expect(pingUntil(a, POD_ADDR(2).v4, 10)).toBe(true);
    const peer = status(a).peers.find((p) => p.publicKey === podB.publicKey);
    expect(peer?.latestHandshake).not.toBeNull();
    expect(peer!.rxBytes).toBeGreaterThan(0);
    sb.child.kill('SIGTERM');
    expect(await sb.exit).toBe(0);
    expect(tencState(a)).toEqual(EMPTY);
    expect(tencState(home)).toEqual(EMPTY);
    podB.child.kill('SIGTERM');
    expect(await podB.exit).toBe(0);
  }, 60_000);

  it('2. end of stdin before a handoff: exit 0, nothing done', async () => {
    const sb = await startStandby();
    sb.child.stdin!.end();
    expect(await sb.exit).toBe(0);
    expect(sb.stderr()).toBe('');
    expect(tencState(home)).toEqual(EMPTY);
    expect(tencState(a)).toEqual(EMPTY);
  }, 30_000);

  it('3. bad handoffs: exit 2 naming the field or path, nothing done; --standby --config is a usage error', async () => {
    const plain = join(dir!, 'not-a-netns');
    writeFileSync(plain, 'x');
    const bad = join(dir!, 'bad.json');
    writeFileSync(bad, JSON.stringify({ addresses: ['10.77.0.1'], pskFile: join(dir!, 'psk'), listenPort: 'x' }));
    const cases: [string, RegExp][] = [
      ['{"netns": "/run/netns/x"\n', /standby handoff: not JSON/],
      [JSON.stringify({ netns: `/run/netns/${a.name}`, config: configA, user: 'x' }) + '\n', /unknown field "user"/],
      [JSON.stringify({ netns: `run/netns/${a.name}`, config: configA }) + '\n', /"netns" must be an absolute path/],
      [JSON.stringify({ netns: plain, config: configA }) + '\n', new RegExp(`netns ${plain} is not a network namespace`)],
      [JSON.stringify({ netns: '/run/netns/tenc-no-such-ns', config: configA }) + '\n', /netns \/run\/netns\/tenc-no-such-ns: ENOENT/],
      [JSON.stringify({ netns: `/run/netns/${a.name}`, config: bad }) + '\n', /listenPort/],
    ];
    for (const [line, want] of cases) {
      const sb = await startStandby();
      sb.child.stdin!.end(line);
      expect(await sb.exit, line).toBe(2);
      expect(sb.stderr(), line).toMatch(want);
      expect(tencState(home)).toEqual(EMPTY);
      expect(tencState(a)).toEqual(EMPTY);
    }
    const r = spawnSync(process.execPath, [main, 'pod', '--standby', '--config', configA], { encoding: 'utf8', input: '' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--standby takes no --config/);
  }, 120_000);

  it('4. worker threads older than enterNetns: their children, then they themselves, in the new namespace', () => {
    const nativeJs = join(main, '..', '..', 'native.js');
    const script = `
      const { addon, enterNetns, enterNetnsWorkers, threadpoolSize } = await import(${JSON.stringify(nativeJs)});
      const { readlink } = await import('node:fs/promises');
      const child = async () => (await addon.runProcess('readlink', ['/proc/self/ns/net'], null, 5000)).stdout.trim();
      const worker = () => readlink('/proc/thread-self/ns/net');
      const n = threadpoolSize();
      const before = await Promise.all([...Array.from({ length: 4 }, child), ...Array.from({ length: 4 * n }, worker)]);
      enterNetns(process.argv[1]);
      const workersBefore = await Promise.all(Array.from({ length: 4 * n }, worker));
      const children = await Promise.all(Array.from({ length: 8 }, child));
      const w = await enterNetnsWorkers(n);
      const workersAfter = await Promise.all(Array.from({ length: 4 * n }, worker));
      let again = '';
      try { enterNetns(process.argv[1]); } catch (e) { again = e.code; }
      console.log(JSON.stringify({ before, children, workersBefore, w, n, workersAfter, again }));
    `;
    const r = spawnSync('nsenter', [`--net=/run/netns/${home.name}`, '--', process.execPath, '--input-type=module', '-e', script, `/run/netns/${a.name}`], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const o = JSON.parse(r.stdout) as { before: string[]; children: string[]; workersBefore: string[]; w: { entered: number; timedOut: boolean }; n: number; workersAfter: string[]; again: string };
    const want = (n: Netns) => `net:[${nsInode(`/run/netns/${n.name}`)}]`;
    expect(new Set(o.before)).toEqual(new Set([want(home)]));
    // the workers stay behind (what a DNS lookup on the pool would see) ...
    expect(new Set(o.workersBefore)).toEqual(new Set([want(home)]));
    // ... yet spawn.c enters the namespace before each child, whatever worker runs it
    expect(new Set(o.children)).toEqual(new Set([want(a)]));
    expect(o.w).toEqual({ entered: o.n, timedOut: false });
    expect(new Set(o.workersAfter)).toEqual(new Set([want(a)]));
    expect(o.again).toBe('EALREADY');
    expect(readlinkSync(`/proc/self/ns/net`)).not.toBe(want(a));
  }, 30_000);
});
