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
 * No namespaces: runs without the netns lock.
 */
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DirectoryRegistry, writeJsonAtomic } from '../src/registry/dir.js';
import { EtcdRegistry, parseEtcdSpec } from '../src/registry/etcd.js';
import { readProjectView, type Registry } from '../src/registry/registry.js';
import { EtcdServer } from '../test/etcd/server.js';
import { numberFlag, type BenchContext } from './lib/bench.js';
import { markdownTable } from './lib/table.js';

const key = (i: number) => Buffer.alloc(32, i % 251).toString('base64');
const ip = (i: number) => `10.${128 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
const podObj = (name: string, node: string, i: number) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: 'alpha', labels: { app: 'bench' }, annotations: { 'tenc.io/netns': `/run/netns/${name}` } },
  spec: { nodeName: node },
  status: { podIP: ip(i), podIPs: [{ ip: ip(i) }] },
});

interface Backend {
  name: string;
  /** The API server's write of one pod. */
  writePod(name: string, node: string, i: number): Promise<void>;
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
    writePod: async (name, node, i) => writeJsonAtomic(join(dir, 'pods', 'alpha', `${name}.json`), podObj(name, node, i)),
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
    writePod: async (name, node, i) => {
      await writer.client.put(`/tenc/pods/alpha/${name}`).value(JSON.stringify(podObj(name, node, i)));
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
}
