/**
 * A registration's netns path that names another namespace later (from a review). The
 * CNI plugin may register a pod with /proc/PID/ns/net, and a registration kept the path
 * only: once the pod's pause process died and its PID was reused (or its /run/netns name
 * was made again), the path still existed, so the agent started the pod's proxy in that
 * namespace (another pod's, or the node's own), a DEL cleaned it (tenc's rule, table and
 * nft table: another protected pod's enforcement gone), and the stale registration hid
 * the pod from the check for pods running without tenc and refused its next sandbox.
 * Now a registration keeps the namespace's identity and one found at the path that is
 * not it counts as gone. The device and inode number alone would not do: the kernel
 * gives a new namespace the lowest free inode number, so the namespace found at the path
 * here is made with the number of the one gone where the kernel gives it again (logged;
 * it mostly does), and a check of device and inode alone fails these tests.
 *  1. the node socket, over fake reconcilers: an earlier sandbox whose path names another
 *     namespace now (a PID reused through ns_last_pid; a name made again) no longer counts
 *     as registered, and the next sandbox's ADD releases it as gone; the same container
 *     ADDed again with a namespace since made again is registered anew;
 *  2. an older state file's entries (no identity): kept if the namespace at the path has
 *     the pod's address, else counted as gone;
 *  3. a real reconciler and a fake `tenc pod` noting the interfaces of the namespace it
 *     runs in: no proxy is started in the namespace made again at the pod's path, and the
 *     pod's DEL leaves that namespace's tenc rule, route table and nft table.
 * Root, ip, nft and unshare; every namespace made is named tenc-test-* and deleted after
 * its test, every process made is killed.
 */
import { describe, it, expect, afterEach, vi } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { NodeAgent, type ProjectAgent } from '../../src/agent/node.js';
import { processAlive, processStartTime, sameProcess, type Registration } from '../../src/agent/proxies.js';
import { DEFAULT_INTERFACE, DEFAULT_RULE_PRIORITY, DEFAULT_TABLE } from '../../src/control/config.js';
import { tableName } from '../../src/routing/enforce.js';
import type { PodInfo } from '../../src/registry/registry.js';
import { nodeRequest, stubRegistry, type NodeAnswer } from '../unit/agent-fakes.js';
import { requireRoot, requireTool, sh } from '../netns/lib.js';

const cleanup: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) {
    try {
      await f();
    } catch (e) {
      console.log(`cleanup: ${(e as Error).message}`);
    }
  }
  // the namespaces deleted are freed before the next test makes its own (netnsWithIno)
  await new Promise((r) => setTimeout(r, 300));
});

function needs(): void {
  requireRoot();
  for (const t of ['ip', 'nft', 'unshare', 'nsenter', 'mount']) requireTool(t);
}

/** A temp directory, removed after the test. */
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tenc-netns-id-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A new /run/netns/tenc-test-* namespace (deleted after the test, whatever is at the name then); its path. */
function netnsAdd(): { name: string; path: string } {
  const name = `tenc-test-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  sh('ip', ['netns', 'add', name]);
  cleanup.push(() => {
    if (existsSync(`/run/netns/${name}`)) sh('ip', ['netns', 'del', name]);
  });
  return { name, path: `/run/netns/${name}` };
}

const ino = (path: string) => statSync(path).ino;
const ownIno = ino('/proc/self/ns/net');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A new namespace (netnsAdd) with, where the kernel gives it again, the inode number
 * `want` of one just gone: namespaces and procfs entries take the lowest free numbers of
 * one pool, so a namespace made once that one is freed (a moment after its end) often
 * has it. Tried a few times; logged whether it has. Its path.
 */
async function netnsWithIno(want: number): Promise<string> {
  for (let i = 0; ; i++) {
    await sleep(250);
    const { name, path } = netnsAdd();
    const got = ino(path);
    if (got === want || i === 4) {
      console.log(`netns inode ${want} ${got === want ? 'given again' : `not given again (${got})`}`);
      return path;
    }
    sh('ip', ['netns', 'del', name]);
  }
}

/** Another namespace at the name, with the inode number of the one deleted there (netnsWithIno). */
async function netnsMakeAgain(name: string, before: number): Promise<void> {
  const other = await netnsWithIno(before);
  writeFileSync(`/run/netns/${name}`, '');
  sh('mount', ['--bind', other, `/run/netns/${name}`]);
}

/** The name deleted and made again: another namespace at the same path. */
async function netnsRemake(name: string): Promise<void> {
  const before = ino(`/run/netns/${name}`);
  sh('ip', ['netns', 'del', name]);
  await netnsMakeAgain(name, before);
}

/** Kills the process pid (that one: its start time) after the test if it still runs. */
function killLater(pid: number): void {
  const start = processStartTime(pid);
  cleanup.push(() => {
    if (start !== null && sameProcess(pid, start)) process.kill(pid, 'SIGKILL');
  });
}

/** Waits until pid runs in a network namespace of its own (unshare has made it). */
async function inOwnNetns(pid: number): Promise<void> {
  await vi.waitFor(() => expect(ino(`/proc/${pid}/ns/net`)).not.toBe(ownIno), { timeout: 5000, interval: 10 });
}

/** `unshare -n sleep 60`, a pause process in a network namespace of its own. */
async function sandbox(): Promise<ChildProcess> {
  const c = spawn('unshare', ['-n', 'sleep', '60'], { stdio: 'ignore' });
  killLater(c.pid!);
  await inOwnNetns(c.pid!);
  return c;
}

/**
 * Another pause process (`sleep 60` in the namespace at `netns`) with the PID `pid`, free
 * again: ns_last_pid set to the one before, then a fork; tried again while another
 * process takes the PID first.
 */
async function reusePid(pid: number, netns: string): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const r = spawnSync('sh', ['-c', `echo ${pid - 1} > /proc/sys/kernel/ns_last_pid && { nsenter --net=${netns} sleep 60 </dev/null >/dev/null 2>&1 & echo $!; }`], { encoding: 'utf8' });
    const got = Number(r.stdout.trim());
    if (got > 0) killLater(got);
    if (got === pid) {
      await inOwnNetns(pid);
      return pid;
    }
    if (got > 0 && processAlive(got)) process.kill(got, 'SIGKILL');
  }
  throw new Error(`PID ${pid} not reused in 200 tries`);
}

/** A NodeAgent over fake reconcilers in `dir`; `pods` is what the registry places (for the unregistered check). */
async function fakeNode(dir: string, pods: () => PodInfo[]) {
  const releases: { pod: string; netns?: string; done: () => void }[] = [];
  const prepared: string[] = [];
  const fake: ProjectAgent = {
    start: async () => {},
    stop: async () => {},
    prepare: async (reg) => void prepared.push(`${reg.podName}/${reg.containerId}`),
    release: (pod, reg) => new Promise<void>((done) => releases.push({ pod, netns: reg?.netns, done })),
    whenReady: async () => true,
    check: async () => null,
    proxyIds: () => new Map(),
  };
  const lines: { msg: string; pod?: string }[] = [];
  const node = new NodeAgent({
    registry: stubRegistry({ pods: async () => pods() }),
    node: 'n1',
    socket: join(dir, 'agent.sock'),
    runDir: join(dir, 'run'),
    log: pino({ level: 'info' }, new Writable({ write: (c, _e, cb) => (lines.push(JSON.parse(String(c))), cb()) })),
    unregisteredGraceMs: 0,
    unregisteredEveryMs: 3_600_000, // looked at by the test
    makeAgent: () => fake,
  });
  await node.start();
  cleanup.push(async () => {
    for (const r of releases) r.done();
    await node.stop();
  });
  const request = (m: Record<string, unknown>): Promise<NodeAnswer> => nodeRequest(join(dir, 'agent.sock'), m);
  const saved = () => (existsSync(join(dir, 'run', 'registrations.json')) ? (JSON.parse(readFileSync(join(dir, 'run', 'registrations.json'), 'utf8')).registrations as Registration[]) : []);
  return { node, releases, prepared, lines, request, saved };
}

const add = (containerId: string, netns: string, over: Record<string, unknown> = {}) => ({
  op: 'cni-add',
  containerId,
  netns,
  ifname: 'eth0',
  podNamespace: 'alpha',
  podName: 'web-1',
  addresses: ['10.128.1.10'],
  timeoutMs: 2000,
  ...over,
});

const podOf = (name: string, address: string): PodInfo => ({ project: 'alpha', name, node: 'n1', address, addresses: [address], labels: {}, netns: null });

describe('node socket: an earlier sandbox whose netns path names another namespace now', () => {
  const cases: { what: string; make: () => Promise<{ netns: string; remake: () => Promise<void> }> }[] = [
    {
      what: 'its pause process gone and the PID reused (/proc/PID/ns/net)',
      make: async () => {
        const pause = await sandbox();
        const pid = pause.pid!;
        return {
          netns: `/proc/${pid}/ns/net`,
          remake: async () => {
            const before = ino(`/proc/${pid}/ns/net`);
            pause.kill('SIGKILL');
            await once(pause, 'exit'); // reaped: the PID is free
            // a pause process of another sandbox gets the PID, in a namespace with the inode number of the one gone
            await reusePid(pid, await netnsWithIno(before));
          },
        };
      },
    },
    {
      what: 'its /run/netns name made again',
      make: async () => {
        const { name, path } = netnsAdd();
        return {
          netns: path,
          remake: () => netnsRemake(name),
        };
      },
    },
  ];

  for (const c of cases) {
    it(`${c.what}: no longer counts as registered, and the next sandbox's ADD releases it as gone`, async () => {
      needs();
      const dir = tempDir();
      const { node, releases, prepared, request, saved } = await fakeNode(dir, () => [podOf('web-1', '10.128.1.10')]);
      const { netns, remake } = await c.make();
      expect((await request(add('old', netns))).result).toEqual({ protected: true });
      expect(await node.checkUnregistered()).toBe(0);
      // the old sandbox's namespace is there: the new one waits for its DEL
      const next = add('new', `/proc/${process.pid}/ns/net`);
      expect((await request(next)).error).toEqual({ code: 'EEXIST', message: 'pod alpha/web-1 is registered with container old: DEL it first' });

      await remake();
      expect(existsSync(netns)).toBe(true);
      // the pod runs without tenc as far as this node knows (before: counted as registered)
      expect(await node.checkUnregistered()).toBe(1);
      // the next sandbox releases the old one as gone (before: EEXIST, for as long as the path existed)
      const r = request(next);
      await vi.waitFor(() => expect(releases).toHaveLength(1), { timeout: 5000, interval: 10 });
      expect(releases[0]).toMatchObject({ pod: 'web-1', netns });
      releases[0]!.done();
      expect((await r).result).toEqual({ protected: true });
      expect(prepared).toEqual(['web-1/old', 'web-1/new']);
      expect(saved().map((x) => x.containerId)).toEqual(['new']);
      expect(await node.checkUnregistered()).toBe(0);
    });
  }

  it('the same container ADDed again with its namespace since gone at the same path: released, then registered with the namespace there now', async () => {
    needs();
    const dir = tempDir();
    const { releases, prepared, request, saved } = await fakeNode(dir, () => []);
    const { name, path } = netnsAdd();
    expect((await request(add('c1', path))).result).toEqual({ protected: true });
    const first = saved()[0]!.netnsId;
    // a retry with the same namespace: the same registration, nothing released
    expect((await request(add('c1', path))).result).toEqual({ protected: true });
    expect(releases).toEqual([]);
    await netnsRemake(name);
    const r = request(add('c1', path));
    await vi.waitFor(() => expect(releases).toHaveLength(1), { timeout: 5000, interval: 10 });
    releases[0]!.done();
    expect((await r).result).toEqual({ protected: true });
    expect(prepared).toEqual(['web-1/c1', 'web-1/c1', 'web-1/c1']);
    expect(saved()).toHaveLength(1);
    expect(saved()[0]!.netnsId).not.toBe(first);
  });
});

describe('node agent: an older state file\'s registrations (no netns identity)', () => {
  it('keep the namespace at their path if it has the pod\'s address; else count as gone, nothing done there, released by the next sandbox', async () => {
    needs();
    const dir = tempDir();
    // web-1's namespace, with its address; at web-2's path a namespace with another pod's address
    const a = netnsAdd();
    const b = netnsAdd();
    for (const [ns, address] of [[a.name, '10.128.1.10'], [b.name, '10.128.1.99']] as const) {
      sh('ip', ['-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p']);
      sh('ip', ['-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
      for (const dev of ['eth0', 'eth0p']) sh('ip', ['-n', ns, 'link', 'set', dev, 'up']);
      sh('ip', ['-n', ns, 'route', 'add', 'default', 'via', '10.128.1.1', 'dev', 'eth0']);
    }
    const old = (containerId: string, podName: string, netns: string, address: string) => ({ containerId, netns, ifname: 'eth0', podNamespace: 'alpha', podName, podUid: `u-${podName}`, addresses: [address], proxy: null });
    mkdirSync(join(dir, 'run'), { mode: 0o700 });
    writeFileSync(join(dir, 'run', 'registrations.json'), JSON.stringify({ registrations: [old('c1', 'web-1', a.path, '10.128.1.10'), old('c2', 'web-2', b.path, '10.128.1.11')] }), { mode: 0o600 });
    const { node, releases, request, saved, lines } = await fakeNode(dir, () => [podOf('web-1', '10.128.1.10'), podOf('web-2', '10.128.1.11')]);
    // web-2 runs without tenc as far as this node knows; web-1 is registered
    expect(await node.checkUnregistered()).toBe(1);
    expect(lines.filter((l) => l.msg.startsWith('saved registration without a netns identity')).map((l) => l.pod)).toEqual(['alpha/web-2']);
    // web-1's next sandbox waits for its DEL; web-2's releases the old registration as gone
    expect((await request(add('n1', `/proc/${process.pid}/ns/net`))).error?.code).toBe('EEXIST');
    const r = request(add('n2', `/proc/${process.pid}/ns/net`, { podName: 'web-2', addresses: ['10.128.1.11'] }));
    await vi.waitFor(() => expect(releases).toHaveLength(1), { timeout: 5000, interval: 10 });
    expect(releases[0]).toMatchObject({ pod: 'web-2', netns: b.path });
    releases[0]!.done();
    expect((await r).result).toEqual({ protected: true });
    // saved again: web-1 with the identity proved
    expect(saved().map((x) => [x.containerId, typeof x.netnsId])).toEqual([
      ['c1', 'string'],
      ['n2', 'string'],
    ]);
  });
});

describe('agent: no proxy started in, and no clean-up of, a namespace made again at a pod\'s path', () => {
  it('the proxy stops with the pod\'s namespace, none starts in the one made again at its name, and the DEL leaves that one\'s tenc state', async () => {
    needs();
    const dir = tempDir();
    for (const [k, v] of [['TENC_POD_HOST', '0'], ['TENC_POD_STANDBY', '0']] as const) {
      const was = process.env[k];
      process.env[k] = v;
      cleanup.push(() => void (was === undefined ? delete process.env[k] : (process.env[k] = was)));
    }
    writeFileSync(join(dir, 'psk'), Buffer.alloc(32, 7).toString('base64') + '\n', { mode: 0o600 });
    const starts = join(dir, 'starts');
    writeFileSync(starts, '');
    const key = 'D'.repeat(43) + '=';
    // a `tenc pod`: notes its pid, the interfaces of its namespace (/proc/net is the reader's) and its socket; answers on its control socket
    const fake = join(dir, 'fake-pod.cjs');
    writeFileSync(
      fake,
      `const fs = require('fs'), net = require('net');
       const cfg = JSON.parse(fs.readFileSync(process.argv[process.argv.indexOf('--config') + 1], 'utf8'));
       const devs = fs.readFileSync('/proc/net/dev', 'utf8').split('\\n').slice(2).map((l) => l.split(':')[0].trim()).filter(Boolean);
       fs.appendFileSync(${JSON.stringify(starts)}, JSON.stringify({ pid: process.pid, devs, socket: cfg.controlSocket }) + '\\n');
       fs.rmSync(cfg.controlSocket, { force: true });
       net.createServer((c) => {
         let b = '';
         c.on('error', () => {});
         c.setEncoding('utf8').on('data', (d) => {
           b += d;
           for (let i; (i = b.indexOf('\\n')) >= 0; ) {
             const m = JSON.parse(b.slice(0, i));
             b = b.slice(i + 1);
             const result = m.op === 'status' ? { publicKey: ${JSON.stringify(key)}, peers: [], pid: process.pid } : m.op === 'rekey' ? { peers: [] } : {};
             c.write(JSON.stringify({ id: m.id, ok: true, result }) + '\\n');
             if (m.op === 'stop') setTimeout(() => process.exit(0), 10);
           }
         });
       }).listen(cfg.controlSocket, () => process.stdout.write('public-key ${key}\\n'));`,
    );
    const started = () =>
      readFileSync(starts, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { pid: number; devs: string[]; socket: string });
    cleanup.push(() => {
      for (const s of started()) {
        if (processAlive(s.pid) && readFileSync(`/proc/${s.pid}/cmdline`, 'utf8').includes(fake)) process.kill(s.pid, 'SIGKILL');
        rmSync(s.socket, { force: true });
      }
    });
    const node = new NodeAgent({
      registry: stubRegistry({ pskFile: async () => join(dir, 'psk') }),
      node: 'n1',
      socket: join(dir, 'agent.sock'),
      runDir: join(dir, 'run'),
      tencMain: fake,
      dns: false,
    });
    await node.start();
    cleanup.push(() => node.stop());
    const request = (m: Record<string, unknown>) => nodeRequest(join(dir, 'agent.sock'), m);

    // the pod's namespace (its interface "old0"): made fail closed at ADD, its proxy started there
    const { name, path } = netnsAdd();
    sh('ip', ['-n', name, 'link', 'add', 'old0', 'type', 'veth', 'peer', 'name', 'old0p']);
    expect((await request(add('c1', path, { timeoutMs: 10_000 }))).result).toEqual({ protected: true });
    await vi.waitFor(async () => expect((await request({ op: 'cni-check', containerId: 'c1', timeoutMs: 500 })).ok).toBe(true), { timeout: 20_000, interval: 100 });
    expect(started().map((s) => s.devs.includes('old0'))).toEqual([true]);
    const first = started()[0]!;

    // the pod's sandbox goes (its DEL never reaches tenc): its proxy is stopped with it
    const inode = ino(path);
    sh('ip', ['netns', 'del', name]);
    await vi.waitFor(() => expect(processAlive(first.pid)).toBe(false), { timeout: 10_000, interval: 20 });
    // another namespace at the pod's path (another pod's sandbox, "new0"), made fail closed as tenc makes a protected pod
    await netnsMakeAgain(name, inode);
    sh('ip', ['-n', name, 'link', 'add', 'new0', 'type', 'veth', 'peer', 'name', 'new0p']);
    sh('ip', ['-n', name, 'rule', 'add', 'pref', String(DEFAULT_RULE_PRIORITY), 'table', String(DEFAULT_TABLE)]);
    sh('ip', ['-n', name, 'route', 'add', 'blackhole', 'default', 'table', String(DEFAULT_TABLE)]);
    sh('ip', ['netns', 'exec', name, 'nft', 'add', 'table', 'inet', tableName(DEFAULT_INTERFACE)]);
    const tencState = () => ({
      rules: (JSON.parse(sh('ip', ['-n', name, '-j', 'rule', 'show', 'pref', String(DEFAULT_RULE_PRIORITY)])) as unknown[]).length,
      routes: (JSON.parse(sh('ip', ['-n', name, '-j', 'route', 'show', 'table', String(DEFAULT_TABLE)])) as unknown[]).length,
      nft: spawnSync('ip', ['netns', 'exec', name, 'nft', 'list', 'table', 'inet', tableName(DEFAULT_INTERFACE)]).status === 0,
    });
    expect(tencState()).toEqual({ rules: 1, routes: 1, nft: true });

    // reconciles (every second, restarts after 0.2 s): no proxy started in it (before: one, "new0" in its namespace)
    // (soft: the DEL below is looked at too)
    await sleep(3000);
    expect.soft(started().map((s) => s.devs.includes('new0'))).toEqual([false]);
    expect.soft((await request({ op: 'cni-check', containerId: 'c1', timeoutMs: 300 })).error?.code).toBe('EIO');

    // the pod's DEL: released, its namespace's clean-up not run in the one at its path now (before: its rule, routes and nft table removed)
    expect(await request({ op: 'cni-del', containerId: 'c1' })).toEqual({ id: 1, ok: true, result: {} });
    expect(tencState()).toEqual({ rules: 1, routes: 1, nft: true });
    expect(started()).toHaveLength(1);
  });
});
