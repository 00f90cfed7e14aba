/**
 * V8 lean mode of a real `tenc pod` process (src/control/lean.ts), started the way
 * the agent starts it (src/agent/agent.ts): nsenter --net=NETNS -- node main.js pod.
 *
 *   [ ns "a" ]  eth0 10.77.0.1/24 ---veth--- eth0 10.77.0.2/24  [ ns "b" ]
 *               tenc0 (tenc pod)
 *
 *  1. the pod reports lean mode in its "pod running" record; an idle second keeps
 *     it; status requests from 8 clients at once for a few seconds (a busy event
 *     loop) end it with one "lean mode ends" record; SIGTERM still exits 0
 *  2. TENC_V8_LEAN=0: the pod runs with V8's defaults ("default") and never logs
 *     the end of lean mode
 *  Both check which code ran (cli/pod-bundle.ts): in 1 the pod bundle (dist/bundle/pod.cjs,
 *  which the build makes), in 2, with TENC_POD_BUNDLE=0 as well, dist/src; lean mode
 *  entered by main.ts (dist/src) is seen by the bundle's copy of lean.ts.
 *  In 1 the pod also logs "idle memory settled" once, about 2 s after "pod running"
 *  (control/lean.ts settleIdleMemory); in 2, with TENC_IDLE_SETTLE=0 as well, never.
 * Whether the flags act inside V8 is test/unit/lean.test.ts (--trace-opt); memory is
 * measured by bench soak, never asserted.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { destroyAll, Netns, requireRoot, requireTool, vethPair } from './lib.js';
import { ensureBuilt } from '../build.js';
import { controlRequest } from '../../src/control/socket.js';

let a: Netns;
let dir: string;
let main: string;
const running = new Set<ChildProcess>();

interface Pod {
  child: ChildProcess;
  records: () => Record<string, unknown>[];
  exit: Promise<number | null>;
}

/** Starts a pod as the agent does; resolves once it logs "pod running". */
function startPod(config: string, env: Record<string, string> = {}): Promise<Pod> {
  const child = spawn('nsenter', [`--net=/run/netns/${a.name}`, '--', process.execPath, main, 'pod', '--config', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  running.add(child);
  let err = '';
  child.stdout!.resume();
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const records = (): Record<string, unknown>[] =>
    err
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const exit = new Promise<number | null>((r) =>
    child.once('exit', (code) => {
      running.delete(child);
      r(code);
    }),
  );
  return new Promise((resolve, reject) => {
    const end = Date.now() + 15_000;
    const poll = (): void => {
      if (records().some((r) => r.msg === 'pod running')) resolve({ child, records, exit });
      else if (child.exitCode !== null || Date.now() > end) reject(new Error(`tenc pod did not start: ${err}`));
      else setTimeout(poll, 50);
    };
    poll();
  });
}

async function stop(p: Pod): Promise<number | null> {
  p.child.kill('SIGTERM');
  const t = setTimeout(() => p.child.kill('SIGKILL'), 5000);
  const code = await p.exit;
  clearTimeout(t);
  return code;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const settles = (p: Pod): Record<string, unknown>[] => p.records().filter((r) => r.msg === 'idle memory settled');
const leanEnds = (p: Pod): Record<string, unknown>[] => p.records().filter((r) => typeof r.msg === 'string' && r.msg.includes('lean mode ends'));

beforeAll(() => {
  requireRoot();
  for (const t of ['ip', 'nsenter', 'nft']) requireTool(t);
  main = ensureBuilt();
  [a] = vethPair('a', 'b', ['10.77.0.1/24'], ['10.77.0.2/24']);
  dir = mkdtempSync(join(tmpdir(), 'tenc-lean-'));
  writeFileSync(join(dir, 'psk'), Buffer.alloc(32, 7).toString('base64') + '\n', { mode: 0o600 });
  writeFileSync(join(dir, 'a.json'), JSON.stringify({ addresses: ['10.77.0.1'], pskFile: 'psk', controlSocket: join(dir, 'a.sock') }), { mode: 0o600 });
}, 120_000);

afterAll(async () => {
  for (const c of running) c.kill('SIGKILL');
  await sleep(200);
  destroyAll();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('tenc pod V8 lean mode', () => {
  it('1. lean at start, idle keeps it, a busy event loop ends it once', async () => {
    const pod = await startPod(join(dir, 'a.json'));
    expect(pod.records().find((r) => r.msg === 'pod running')?.v8).toBe('lean');
    expect(pod.records().find((r) => r.msg === 'pod running')?.entry).toBe('bundle');
    expect(pod.records().find((r) => r.msg === 'pod running')?.codeCache).toBe('used');
    expect(pod.records().filter((r) => String(r.msg).startsWith('pod bundle not used'))).toEqual([]);
    await sleep(1500);
    expect(leanEnds(pod)).toEqual([]);
    // 8 clients, each one status request after the other, until the pod reports the end
    const socket = join(dir, 'a.sock');
    const deadline = Date.now() + 20_000;
    let requests = 0;
    const client = async (): Promise<void> => {
      while (leanEnds(pod).length === 0 && Date.now() < deadline) {
        await controlRequest(socket, { op: 'status' });
        requests++;
      }
    };
    await Promise.all(Array.from({ length: 8 }, client));
    const ends = leanEnds(pod);
    expect(ends, `after ${requests} status requests`).toHaveLength(1);
    expect(ends[0].eventLoopUtilization).toBeGreaterThanOrEqual(0.1);
    await sleep(1200);
    expect(leanEnds(pod)).toHaveLength(1);
    // the settle: due 2 s after 'pod running', so by now or soon (a loaded machine)
    for (let i = 0; i < 100 && settles(pod).length === 0; i++) await sleep(100);
    const s = settles(pod);
    expect(s).toHaveLength(1);
    expect(typeof s[0].ms).toBe('number');
    expect(s[0].rssMiB).toHaveLength(2);
    console.log(`idle memory settled in ${String(s[0].ms)} ms, RSS MiB before/after ${JSON.stringify(s[0].rssMiB)}`);
    expect(await stop(pod)).toBe(0);
  });

  it('2. TENC_V8_LEAN=0: V8 defaults, no lean records; TENC_IDLE_SETTLE=0: no settle; TENC_POD_BUNDLE=0: dist/src', async () => {
    const pod = await startPod(join(dir, 'a.json'), { TENC_V8_LEAN: '0', TENC_IDLE_SETTLE: '0', TENC_POD_BUNDLE: '0' });
    expect(pod.records().find((r) => r.msg === 'pod running')?.v8).toBe('default');
    expect(pod.records().find((r) => r.msg === 'pod running')?.entry).toBe('dist');
    expect(pod.records().find((r) => r.msg === 'pod running')?.codeCache).toBe('none');
    expect(pod.records().filter((r) => String(r.msg).startsWith('pod bundle not used'))).toEqual([]);
    const socket = join(dir, 'a.sock');
    const end = Date.now() + 4000;
    const client = async (): Promise<void> => {
      while (Date.now() < end) await controlRequest(socket, { op: 'status' });
    };
    await Promise.all(Array.from({ length: 8 }, client));
    expect(leanEnds(pod)).toEqual([]);
    await sleep(500); // 4.5 s after 'pod running', the settle was due 2.5 s ago
    expect(settles(pod)).toEqual([]);
    expect(await stop(pod)).toBe(0);
  });
});
