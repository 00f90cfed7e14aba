/**
 * A pod host's copy of a pod and the agent's next start of it (review of the pod host):
 *  - a pod whose last host still holds its namespace (starting or tearing down there,
 *    its socket not answering) is not started again until the host lets the namespace
 *    go, however long past the start timeout that is: a copy started beside the old
 *    one's teardown would have its routes, rules and tables (same names) removed;
 *  - a pod's waiter in HostProcess whose exit never came is dropped (forget), so the
 *    next start of that pod is not refused by the agent's own bookkeeping;
 *  - host logs of earlier agents are removed once no process writes them.
 * The "host" holding the namespace is a node process holding an fd of the test's own
 * namespace (/proc/self/ns/net); the "proxy" a script that notes when it started.
 * nsenter enters the agent's own netns: no namespace is made, nothing is routed.
 */
import { describe, it, expect, afterEach, vi } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Agent } from '../../src/agent/agent.js';
import { HostProcess, staleHostLogs } from '../../src/agent/host.js';
import { holdsNetns, processAlive, processStartTime, type HostedPod, type Proxy, type ProxyId } from '../../src/agent/proxies.js';
import { fakeProxy, stubRegistry } from './agent-fakes.js';
import { requireRoot, requireTool } from '../netns/lib.js';

const cleanup: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function tmp(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tenc-host-release-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function track(child: ChildProcess): ChildProcess {
  cleanup.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return child;
}

/** A process that holds `path` open for `ms` (a "host" holding a pod's namespace); resolves once it does. */
async function holdOpen(path: string, ms = 20_000): Promise<ChildProcess> {
  const holder = track(spawn(process.execPath, ['-e', `require('fs').openSync(${JSON.stringify(path)}, 'r'); process.stdout.write('held\\n'); setTimeout(() => {}, ${ms})`], { stdio: ['ignore', 'pipe', 'inherit'] }));
  await new Promise((r) => holder.stdout!.once('data', r));
  return holder;
}

/** Pod p1 of project alpha as the agent knows it once its proxy ran in a pod host (`hosted`), with the host's id. */
function hostedProxy(dir: string, netns: string, id: ProxyId, hosted: HostedPod): Proxy {
  return {
    pod: { name: 'p1', namespace: 'alpha', node: 'n1', addresses: ['10.128.1.10'] },
    reg: { containerId: 'c1', netns, ifname: 'eth0', podNamespace: 'alpha', podName: 'p1', podUid: 'u1', addresses: ['10.128.1.10'], proxy: id },
    socket: join(dir, 'p1.sock'),
    child: null,
    id,
    publicKey: 'K'.repeat(43) + '=',
    applied: new Map(),
    services: null,
    endpoints: null,
    members: null,
    dns: false,
    starting: false,
    restartAt: 0,
    ready: [],
    published: null,
    failure: null,
    failures: 0,
    hosted,
  } as unknown as Proxy;
}

describe('agent: a pod its last host still holds', () => {
  it('is started again only once the host has let its namespace go (past the start timeout too)', async () => {
    requireRoot();
    requireTool('nsenter');
    const dir = tmp();
    writeFileSync(join(dir, 'psk'), Buffer.alloc(32, 7).toString('base64') + '\n', { mode: 0o600 });
    const starts = join(dir, 'starts');
    const fake = join(dir, 'fake-pod.cjs');
    writeFileSync(fake, `require('fs').appendFileSync(${JSON.stringify(starts)}, Date.now() + '\\n'); process.stdout.write('public-key ' + 'C'.repeat(43) + '=\\n'); setInterval(() => {}, 1000);`);
    // the old host: holds the namespace for 2.5 s (ten start timeouts), its pod's socket never answers
    const holdMs = 2500;
    const holder = await holdOpen('/proc/self/ns/net', holdMs);
    const released = new Promise<number>((r) => holder.once('exit', () => r(Date.now())));
    expect(holdsNetns(holder.pid!, '/proc/self/ns/net')).toBe(true);
    const startTime = processStartTime(holder.pid!)!;
    const reg = { containerId: 'c1', netns: '/proc/self/ns/net', ifname: 'eth0', podNamespace: 'alpha', podName: 'held-1', podUid: 'u1', addresses: ['10.128.1.10'], proxy: { pid: holder.pid!, startTime, hosted: true as const } };
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
    const agent = new Agent({ registry: stubRegistry({ pskFile: async () => join(dir, 'psk') }), node: 'n1', project: 'alpha', registrations: () => [reg], runDir: join(dir, 'run'), tencMain: fake, startTimeoutMs: 250, dns: false, log, standby: false, podHost: false });
    const pids = () => lines.map((l) => JSON.parse(l) as { msg: string; pid?: number }).filter((l) => l.msg === 'proxy started' && typeof l.pid === 'number').map((l) => l.pid!);
    cleanup.push(() => {
      for (const p of pids()) if (processAlive(p)) process.kill(p, 'SIGKILL');
    });
    cleanup.push(() => agent.stop());
    const t0 = Date.now();
    await agent.start();
    const releasedAt = await released;
    await vi.waitFor(() => expect(existsSync(starts)).toBe(true), { timeout: 10_000, interval: 50 });
    const first = Number(readFileSync(starts, 'utf8').split('\n')[0]);
    console.log(`host held the netns ${releasedAt - t0} ms; first start ${first - t0} ms after the agent's`);
    expect(first).toBeGreaterThanOrEqual(releasedAt);
    // the wait was said, naming the host and the namespace
    expect(lines.join('')).toContain(`pod host ${holder.pid} still holds netns /proc/self/ns/net`);
  }, 30_000);
});

describe('HostProcess.forget', () => {
  it("drops a pod's waiter whose exit never came: the pod can be started there again", async () => {
    const dir = tmp();
    // a host that gets ready and never answers a line (a start line it refused unread)
    const main = join(dir, 'host.cjs');
    writeFileSync(main, "process.stdout.write('host ready\\n'); process.stdin.resume(); process.stdin.on('end', () => process.exit(0));");
    const h = new HostProcess({ main, flags: [], logFile: join(dir, '.host-1-1.log') });
    track(h.child);
    expect(await h.ready).toBe(true);
    const exits: number[] = [];
    const w = { key: () => undefined, exit: (code: number) => void exits.push(code) };
    const line = { netns: '/proc/self/ns/net', config: join(dir, 'a.json') };
    h.start(line, w);
    expect(() => h.start(line, w)).toThrow(/is running here already/);
    h.forget(line.config);
    expect(h.size).toBe(0);
    h.start(line, w);
    expect(h.size).toBe(1);
    h.close();
    expect(await h.exited).toBe('0');
    expect(exits).toEqual([-1]); // the one waiter left is told its host exited, once
  });
});

describe('staleHostLogs', () => {
  it("names other agents' host logs no process writes; keeps this agent's and a live host's", async () => {
    const dir = tmp();
    const run = join(dir, 'run');
    mkdirSync(run);
    for (const n of ['.host-1-1.log', `.host-${process.pid}-1.log`, '.host-2-1.log', '.standby-1-1.log', 'pod.log', '.host-x.log']) writeFileSync(join(run, n), '');
    // an earlier agent's host still running: the log is its stderr
    const fd = openSync(join(run, '.host-2-1.log'), 'a');
    const live = track(spawn(process.execPath, ['-e', "process.stdout.write('up\\n'); setTimeout(() => {}, 20000)"], { stdio: ['ignore', 'pipe', fd] }));
    closeSync(fd);
    await new Promise((r) => live.stdout!.once('data', r));
    expect(staleHostLogs(run, process.pid)).toEqual(['.host-1-1.log']);
    live.kill('SIGKILL');
    await new Promise((r) => live.once('exit', r));
    expect(staleHostLogs(run, process.pid).sort()).toEqual(['.host-1-1.log', '.host-2-1.log']);
  });
});

describe('a pod of its own host whose socket is dead', () => {
  it('lost() keeps the host id and stops nothing (a socket that failed once may answer again: adopted then); a start that finds the host still holding the netns past the start timeout has the host stop that copy', async () => {
    requireRoot(); // holdsNetns reads another process's fds
    const { Proxies } = await import('../../src/agent/proxies.js');
    const dir = tmp();
    const proxies = new Proxies({ registry: stubRegistry(), node: 'n1', project: 'alpha', runDir: dir, standby: false, startTimeoutMs: 300 }, () => undefined);
    // the host: holds the pod's namespace (this process's own), its pod's socket never answers
    const holder = await holdOpen('/proc/self/ns/net');
    const stops: string[] = [];
    const host = { stop: (config: string) => void stops.push(config), child: holder } as unknown as HostProcess;
    const id = { pid: holder.pid!, startTime: processStartTime(holder.pid!)!, hosted: true as const };
    const px = hostedProxy(dir, '/proc/self/ns/net', id, { host, config: join(dir, 'p1.json'), exited: new Promise<void>(() => undefined) });
    proxies.set('p1', px);
    const ref = px.hosted;
    proxies.lost(px, 'control socket dead');
    expect(stops).toEqual([]);
    expect(px.hosted).toBeNull();
    expect(px.lostHosted).toBe(ref); // the copy may still run there
    expect(px.id).toEqual(id);
    expect(px.publicKey).toBeNull();
    // the restart: the host holds the namespace, the socket stays dead past the start timeout
    await proxies.ensureProxy(px, {} as Parameters<typeof proxies.ensureProxy>[1]);
    expect(stops).toEqual([join(dir, 'p1.json')]);
    expect(px.failure).toMatch(new RegExp(`pod host ${holder.pid} still holds netns /proc/self/ns/net`));
    expect(px.id).toEqual(id); // and the next start waits again
    // a process's id (not a host's) is forgotten as before
    px.id = { pid: holder.pid!, startTime: id.startTime };
    proxies.lost(px, 'exited (1)');
    expect(px.id).toBeNull();
    proxies.delete('p1');
  });
});

describe('agent: a pod of its own host whose control socket stops answering', () => {
  it('is waited for, then stopped in the host and started there again', async () => {
    requireRoot(); // holdsNetns reads the host's fds
    const dir = tmp();
    writeFileSync(join(dir, 'psk'), Buffer.alloc(32, 7).toString('base64') + '\n', { mode: 0o600 });
    const lines = join(dir, 'host-lines');
    const dead = join(dir, 'dead');
    // a fake pod host: each start line holds the pod's namespace and serves its control socket; a stop line ends that pod
    const fake = join(dir, 'fake-host.cjs');
    writeFileSync(
      fake,
      `const fs = require('fs'), net = require('net');
       const KEY = 'H'.repeat(43) + '=';
       const pods = new Map();
       process.stdout.write('host ready\\n');
       let buf = '';
       process.stdin.setEncoding('utf8').on('data', (d) => {
         buf += d;
         for (let i = buf.indexOf('\\n'); i >= 0; i = buf.indexOf('\\n')) {
           const line = buf.slice(0, i);
           buf = buf.slice(i + 1);
           fs.appendFileSync(${JSON.stringify(lines)}, line + '\\n');
           const m = JSON.parse(line);
           if (m.stop) {
             const p = pods.get(m.stop);
             if (!p) continue;
             pods.delete(m.stop);
             p.srv.close();
             process.stdout.write(JSON.stringify({ pod: m.stop, exited: 0 }) + '\\n');
             fs.closeSync(p.fd);
             continue;
           }
           const cfg = JSON.parse(fs.readFileSync(m.config, 'utf8'));
           const fd = fs.openSync(m.netns, 'r');
           const srv = net.createServer((c) => {
             let b = '';
             c.setEncoding('utf8').on('data', (d) => {
               b += d;
               for (let j = b.indexOf('\\n'); j >= 0; j = b.indexOf('\\n')) {
                 const req = JSON.parse(b.slice(0, j));
                 b = b.slice(j + 1);
                 c.write(JSON.stringify({ id: req.id, ok: true, result: req.op === 'status' ? { publicKey: KEY, peers: [] } : {} }) + '\\n');
               }
             });
             c.on('error', () => {});
           });
           try { fs.unlinkSync(cfg.controlSocket); } catch {}
           srv.listen(cfg.controlSocket, () => process.stdout.write(JSON.stringify({ pod: m.config, publicKey: KEY }) + '\\n'));
           pods.set(m.config, { srv, fd });
         }
       });
       // the test's marker: every pod's control socket stops answering, the pods run on
       setInterval(() => { if (fs.existsSync(${JSON.stringify(dead)})) { fs.unlinkSync(${JSON.stringify(dead)}); for (const p of pods.values()) p.srv.close(); } }, 50);`,
    );
    const reg = { containerId: 'c1', netns: '/proc/self/ns/net', ifname: 'eth0', podNamespace: 'alpha', podName: 'h-1', podUid: 'u1', addresses: ['10.128.1.10'], proxy: null };
    const log: string[] = [];
    const logger = pino({ level: 'info' }, { write: (l: string) => void log.push(l) });
    const agent = new Agent({ registry: stubRegistry({ pskFile: async () => join(dir, 'psk') }), node: 'n1', project: 'alpha', registrations: () => [reg], runDir: join(dir, 'run'), tencMain: fake, startTimeoutMs: 1000, dns: false, log: logger, standby: false, podHost: true });
    cleanup.push(() => agent.stop());
    const hostPids = () => log.map((l) => JSON.parse(l) as { msg: string; pid?: number }).filter((l) => l.msg === 'pod host started').map((l) => l.pid!);
    cleanup.push(() => {
      for (const p of hostPids()) if (processAlive(p)) process.kill(p, 'SIGKILL');
    });
    const sent = () => (existsSync(lines) ? readFileSync(lines, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { stop?: string; config?: string }) : []);
    await agent.start();
    await vi.waitFor(() => expect(log.join('')).toContain('"msg":"proxy started"'), { timeout: 10_000, interval: 50 });
    expect(sent().map((l) => (l.stop ? 'stop' : 'start'))).toEqual(['start']);
    writeFileSync(dead, '');
    // noticed at a reconcile, waited for the start timeout, stopped in the host, then started there again
    await vi.waitFor(() => expect(sent().map((l) => (l.stop ? 'stop' : 'start'))).toEqual(['start', 'stop', 'start']), { timeout: 15_000, interval: 50 });
    await vi.waitFor(() => expect(log.filter((l) => l.includes('"msg":"proxy started"')).length).toBe(2), { timeout: 10_000, interval: 50 });
    expect(hostPids().length).toBe(1); // the same host throughout
    expect(log.join('')).toContain('still holds netns /proc/self/ns/net');
  }, 40_000);
});

describe('a pod lost in its own host, then', () => {
  /** A Proxies whose pod p1 ran in a "host" (a process holding the pod's namespace file) and was lost. */
  async function lostPod(dir: string) {
    const { Proxies } = await import('../../src/agent/proxies.js');
    // a regular file stands for the namespace: holdsNetns compares inodes, and cleanNetns's ip/nft fail on it (ignored)
    const netns = join(dir, 'netns');
    writeFileSync(netns, '');
    const proxies = new Proxies({ registry: stubRegistry(), node: 'n1', project: 'alpha', runDir: dir, standby: false, startTimeoutMs: 300 }, () => undefined);
    const holder = await holdOpen(netns);
    const stops: string[] = [];
    let markExited: () => void = () => undefined;
    const host = {
      child: holder,
      stop: (config: string) => {
        stops.push(config);
        holder.kill('SIGKILL'); // the copy stops: the host lets the namespace go
        holder.once('exit', () => markExited());
      },
      forget: () => undefined,
    } as unknown as HostProcess;
    const id = { pid: holder.pid!, startTime: processStartTime(holder.pid!)!, hosted: true as const };
    const ref = { host, config: join(dir, 'p1.json'), exited: new Promise<void>((r) => (markExited = r)) };
    const px = hostedProxy(dir, netns, id, ref);
    proxies.set('p1', px);
    proxies.lost(px, 'control socket dead');
    return { proxies, px, ref, stops, holder };
  }

  it('deleted (CNI DEL) before its restart: the host is told to stop the copy before the namespace is cleaned', async () => {
    const dir = tmp();
    const { proxies, ref, stops, holder } = await lostPod(dir);
    await proxies.releaseNow('p1');
    expect(stops).toEqual([ref.config]);
    expect(holder.exitCode !== null || holder.signalCode !== null).toBe(true);
    expect(proxies.has('p1')).toBe(false);
  });

  it('answering again: adopted, and linked to its host again (watched through its events)', async () => {
    const dir = tmp();
    const { proxies, px, ref, stops } = await lostPod(dir);
    const server = await fakeProxy(px.socket, 'K'.repeat(43) + '=');
    cleanup.push(() => void server.close());
    await proxies.ensureProxy(px, {} as Parameters<typeof proxies.ensureProxy>[1]);
    expect(px.publicKey).toBe('K'.repeat(43) + '=');
    expect(px.hosted).toBe(ref);
    expect(px.lostHosted).toBeNull();
    expect(stops).toEqual([]);
    proxies.delete('p1');
  });
});
