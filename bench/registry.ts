/**
 * Registry propagation: from a registry write (a pod added on node2 and its key
 * published by node2's agent) to the moment another node's agent sees the pod with a
 * trusted key (its watch fired and readProjectView returns it: the point where it
 * sends set-peer to its pods), p50/p99 over N changes (--changes=100), for the
 * directory backend and for etcd (one real member on loopback), with 0 and
 * --registered=1000 other pods (with keys) in the registry. Also: the time of one
 * full read of the project view at that size, and the observer's heap before and
 * after the changes (a copy that grows without bound would show here).
 *
 * Not included: starting the new pod's proxy and the set-peer round trip to the
 * other pods (the netns test measures the end-to-end figure on the local cluster).
 *
 * Then the agent itself (--agent, root: writes a control socket in /run/tenc): a real
 * `Agent` on node1 with one local pod whose proxy is a fake control server (it
 * answers status and counts what it is sent), --registered pods with keys on node2;
 * per change (a pod written and its key published on node2): the time until its
 * set-peer reaches the local pod (the moment a handshake to it could start), the
 * control requests the reconcile sent, the process CPU per change, and the heap.
 * No namespaces: runs without the netns lock.
 */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DirectoryRegistry, writeJsonAtomic } from '../src/registry/dir.js';
import { EtcdRegistry } from '../src/registry/etcd.js';
import { parseEtcdSpec } from '../src/registry/etcd-client.js';
import { readProjectView, type Registry } from '../src/registry/registry.js';
import { Agent } from '../src/agent/agent.js';
import { podSocket } from '../src/agent/netns.js';
import { createLogger } from '../src/log.js';
import { ControlServer } from '../src/control/socket.js';
import type { StatusReport } from '../src/control/status.js';
import { EtcdServer } from '../test/etcd/server.js';
import { numberFlag, type BenchContext } from './lib/bench.js';
import { markdownTable } from './lib/table.js';

const key = (i: number) => {
  const b = Buffer.alloc(32, 7);
  b.writeUInt32BE(i + 1, 0);
  return b.toString('base64');
};
const ip = (i: number) => `10.${128 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
const podObj = (name: string, node: string, i: number, netns = `/run/netns/${name}`) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: 'alpha', labels: { app: 'bench' }, annotations: { 'tenc.io/netns': netns } },
  spec: { nodeName: node },
  status: { podIP: ip(i), podIPs: [{ ip: ip(i) }] },
});

interface Backend {
  name: string;
  /** The API server's write of one pod. */
  writePod(name: string, node: string, i: number, netns?: string): Promise<void>;
  /** node2's agent (the publisher) and node1's agent (the observer). */
  publisher: Registry;
  observer: Registry;
  close(): Promise<void>;
}

async function dirBackend(): Promise<Backend> {
  const dir = mkdtempSync(join(tmpdir(), 'tenc-bench-reg-'));
  mkdirSync(join(dir, 'pods', 'alpha'), { recursive: true });
  const publisher = new DirectoryRegistry(dir);
  const observer = new DirectoryRegistry(dir);
  return {
    name: 'dir',
    writePod: async (name, node, i, netns) => writeJsonAtomic(join(dir, 'pods', 'alpha', `${name}.json`), podObj(name, node, i, netns)),
    publisher,
    observer,
    close: async () => rmSync(dir, { recursive: true, force: true }),
  };
}

async function etcdBackend(): Promise<Backend> {
  const server = new EtcdServer();
  await server.start();
  const c = parseEtcdSpec(server.endpoint);
  const writer = new EtcdRegistry(c);
  const publisher = new EtcdRegistry(c);
  const observer = new EtcdRegistry(c);
  return {
    name: 'etcd',
    writePod: async (name, node, i, netns) => {
      await writer.client.put(`/tenc/pods/alpha/${name}`).value(JSON.stringify(podObj(name, node, i, netns)));
    },
    publisher,
    observer,
    close: async () => {
      for (const r of [writer, publisher, observer]) await r.close();
      await server.stop();
    },
  };
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

async function measure(b: Backend, registered: number, changes: number) {
  for (let i = 0; i < registered; i++) {
    await b.writePod(`pre-${i}`, 'node2', i);
    await b.publisher.publishPeer({ project: 'alpha', pod: `pre-${i}`, node: 'node2', publicKey: key(i), endpoint: `${ip(i)}:51820` });
  }
  // the observer has read everything before the clock starts
  for (let t = Date.now(); (await b.observer.pods('alpha')).length < registered && Date.now() - t < 30_000; ) await new Promise((r) => setTimeout(r, 50));
  let t0 = performance.now();
  const v0 = await readProjectView(b.observer, 'alpha');
  const readMs = performance.now() - t0;
  if (v0.peers.length !== registered) throw new Error(`${b.name}: observer sees ${v0.peers.length} of ${registered} keys`);
  globalThis.gc?.();
  const heap0 = process.memoryUsage().heapUsed;
  let waiting: { pod: string; done: () => void } | null = null;
  const w = b.observer.watch('alpha', () => {
    const cur = waiting;
    if (!cur) return;
    void readProjectView(b.observer, 'alpha').then((v) => {
      if (waiting === cur && v.peers.some((k) => k.pod === cur.pod)) cur.done();
    });
  });
  const lat: number[] = [];
  for (let i = 0; i < changes; i++) {
    const name = `new-${i}`;
    const n = registered + i;
    const seen = new Promise<void>((resolve) => (waiting = { pod: name, done: resolve }));
    t0 = performance.now();
    await b.writePod(name, 'node2', n);
    await b.publisher.publishPeer({ project: 'alpha', pod: name, node: 'node2', publicKey: key(n), endpoint: `${ip(n)}:51820` });
    await seen;
    lat.push(performance.now() - t0);
    waiting = null;
  }
  w.close();
  globalThis.gc?.();
  const heap1 = process.memoryUsage().heapUsed;
  return { p50: pct(lat, 50), p99: pct(lat, 99), readMs, heap0, heap1 };
}

/** One Agent on node1 with one local pod served by a fake proxy; `registered` pods on node2. */
async function measureAgent(b: Backend, registered: number, changes: number) {
  for (let i = 0; i < registered; i++) {
    await b.writePod(`pre-${i}`, 'node2', i);
    await b.publisher.publishPeer({ project: 'alpha', pod: `pre-${i}`, node: 'node2', publicKey: key(i), endpoint: `${ip(i)}:51820` });
  }
  const tmp = mkdtempSync(join(tmpdir(), 'tenc-bench-agent-'));
  const netns = join(tmp, 'netns'); // stands for the pod's netns file: the agent needs it to exist, and its inode names the socket
  writeFileSync(netns, '');
  const sent = new Map<string, number>();
  let onSetPeer: (k: string) => void = () => {};
  const count = (op: string) => sent.set(op, (sent.get(op) ?? 0) + 1);
  const fake = await ControlServer.start({
    path: podSocket(netns),
    addresses: { v4: '10.128.1.10', v6: null },
    handler: {
      status: () => ({ interface: 'tenc0', publicKey: key(250), listenPort: 51820, fwmark: 0, mtu: 1420, addresses: ['10.128.1.10'], dataPlane: 'fake', peers: [], services: [], drops: {}, handshakeFailures: {} }) as StatusReport,
      setPeer: (c) => {
        count('set-peer');
        onSetPeer(c.publicKey);
      },
      removePeer: () => (count('remove-peer'), true),
      // the agent makes a pod initiate at once with a key new to it
      rekey: () => (count('rekey'), []),
      setServices: () => void count('set-services'),
    },
  });
  await b.writePod('local', 'node1', 250 << 8, netns);
  // the local pod as the CNI plugin registers it (the agent's only source of a netns path)
  const registration = { containerId: 'bench', netns, ifname: 'eth0', podNamespace: 'alpha', podName: 'local', podUid: 'bench', addresses: ['10.128.1.10'], proxy: null };
  const agent = new Agent({ registry: b.observer, node: 'node1', project: 'alpha', registrations: () => [registration], runDir: join(tmp, 'run'), dns: false, ...(process.env.BENCH_DEBUG ? { log: createLogger({ level: 'debug' }) } : {}) });
  const all = new Promise<void>((resolve) => {
    onSetPeer = () => {
      if ((sent.get('set-peer') ?? 0) >= registered) resolve();
    };
  });
  await agent.start();
  await all;
  await new Promise((r) => setTimeout(r, 1500)); // settle: the agent's own publish and its echo
  globalThis.gc?.();
  const heap0 = process.memoryUsage().heapUsed;
  const lat: number[] = [];
  const perChange: number[] = [];
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < changes; i++) {
    const n = registered + i;
    const before = [...sent.values()].reduce((a, x) => a + x, 0);
    const got = new Promise<void>((resolve) => (onSetPeer = (k) => k === key(n) && resolve()));
    const t0 = performance.now();
    await b.writePod(`new-${i}`, 'node2', n);
    await b.publisher.publishPeer({ project: 'alpha', pod: `new-${i}`, node: 'node2', publicKey: key(n) , endpoint: `${ip(n)}:51820` });
    await got;
    lat.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 30));
    perChange.push([...sent.values()].reduce((a, x) => a + x, 0) - before);
  }
  const cpu = process.cpuUsage(cpu0);
  globalThis.gc?.();
  const heap1 = process.memoryUsage().heapUsed;
  await agent.stop();
  await fake.close();
  rmSync(tmp, { recursive: true, force: true });
  return { p50: pct(lat, 50), p99: pct(lat, 99), requests: pct(perChange, 50), requestsMax: Math.max(...perChange), cpuMs: (cpu.user + cpu.system) / 1000 / changes, heap0, heap1 };
}

export async function run(ctx: BenchContext): Promise<void> {
  const changes = numberFlag(ctx, 'changes', 100);
  const registered = numberFlag(ctx, 'registered', 1000);
  const rows: string[][] = [];
  for (const size of [0, registered]) {
    for (const make of [dirBackend, etcdBackend]) {
      const b = await make();
      try {
        const r = await measure(b, size, changes);
        rows.push([b.name, String(size), r.p50.toFixed(1), r.p99.toFixed(1), r.readMs.toFixed(1), `${(r.heap0 / 2 ** 20).toFixed(1)} -> ${(r.heap1 / 2 ** 20).toFixed(1)}`]);
      } finally {
        await b.close();
      }
    }
  }
  ctx.log(`${changes} changes (a pod written, its key published by node2's agent) until node1's agent sees the pod with a trusted key:\n`);
  ctx.log(markdownTable(['backend', 'pods registered', 'p50 ms', 'p99 ms', 'full view read ms', 'heap MiB before -> after'], rows));
  if (!ctx.flags.has('agent')) return;
  const arows: string[][] = [];
  for (const make of [dirBackend, etcdBackend]) {
    const b = await make();
    try {
      const r = await measureAgent(b, registered, changes);
      arows.push([b.name, String(registered), r.p50.toFixed(1), r.p99.toFixed(1), `${r.requests} (max ${r.requestsMax})`, r.cpuMs.toFixed(1), `${(r.heap0 / 2 ** 20).toFixed(1)} -> ${(r.heap1 / 2 ** 20).toFixed(1)}`]);
    } finally {
      await b.close();
    }
  }
  ctx.log(`\nA real Agent on node1 (one local pod, a fake proxy), ${changes} changes on node2: until the new pod's set-peer reaches the local pod:\n`);
  ctx.log(markdownTable(['backend', 'pods registered', 'p50 ms', 'p99 ms', 'control requests per change', 'CPU ms per change', 'heap MiB before -> after'], arows));
}
