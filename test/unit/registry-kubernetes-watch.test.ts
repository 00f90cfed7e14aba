// The Kubernetes registry backend when the API server misbehaves in ways the in-test
// server (test/k8s/fake-apiserver.ts) does not do by itself: a front proxy in this file
// forwards to it and, per path, answers 404 (a CRD not installed), writes malformed watch
// lines first, or holds a watch's response headers until the test releases them.
// Regression tests of a review: malformed watch lines and a watch that cannot start
// crashed the agent (unhandled rejections); a late watch fed the cache after its
// replacement or after close(); a missing TencPolicy CRD cost every policy read the whole
// sync timeout, and timed-out sync waiters were never removed; a bad TencPeer was warned
// (and remembered) once per revision.
import { readFileSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { validateCluster, type ClusterConfig } from '../../src/agent/cluster-config.js';
import { KubernetesRegistry } from '../../src/registry/kubernetes.js';
import { Informer } from '../../src/registry/kubernetes-informer.js';
import { FakeApiServer } from '../k8s/fake-apiserver.js';
import { until as waitUntil } from '../until.js';

const clusterFile = join(__dirname, '../../netns-scripts/cluster-example.json');
const cluster: ClusterConfig = validateCluster(JSON.parse(readFileSync(clusterFile, 'utf8')), clusterFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const until = async <T>(what: string, fn: () => Promise<T | null | false | undefined> | T | null | false | undefined, ms = 8000): Promise<T> => (await waitUntil(what, fn, ms, 25)).value;

const PODS = '/api/v1/pods';
const POLICIES = '/apis/tenc.io/v1alpha1/tencpolicies';

/** A watch whose response the proxy holds: release() sends 200 and these lines (nothing from the API server). */
interface Held {
  path: string;
  closed: boolean;
  release(lines: unknown[]): void;
}

class FrontProxy {
  private server: Server | null = null;
  port = 0;
  /** Paths answered 404 (list and watch), as an API server without that resource. */
  readonly notFound = new Set<string>();
  /** Lines written at the start of every watch of a path, before what the API server sends. */
  readonly inject = new Map<string, string[]>();
  /** How many of the next watches of a path are held (see Held). */
  readonly holdNext = new Map<string, number>();
  readonly held: Held[] = [];

  constructor(private readonly upstream: FakeApiServer) {}

  async start(): Promise<void> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.port = (this.server!.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => this.server?.close(() => r()) ?? r());
  }

  kubeConfig(token: string): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'front', server: `http://127.0.0.1:${this.port}`, skipTLSVerify: true }],
      users: [{ name: 'u', token }],
      contexts: [{ name: 'c', cluster: 'front', user: 'u' }],
      currentContext: 'c',
    });
    return kc;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const path = url.pathname;
    const watch = url.searchParams.get('watch') === 'true';
    if (this.notFound.has(path)) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', reason: 'NotFound', code: 404, message: 'the server could not find the requested resource' }));
      return;
    }
    const hold = this.holdNext.get(path) ?? 0;
    if (watch && hold > 0) {
      this.holdNext.set(path, hold - 1);
      const h: Held = {
        path,
        closed: false,
        release: (lines) => {
          res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
          for (const l of lines) res.write(`${JSON.stringify(l)}\n`);
        },
      };
      res.on('close', () => (h.closed = true));
      this.held.push(h);
      return;
    }
    const up = httpRequest({ host: '127.0.0.1', port: this.upstream.port, method: req.method, path: req.url, headers: req.headers }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      if (watch && ur.statusCode === 200) for (const l of this.inject.get(path) ?? []) res.write(`${l}\n`);
      ur.on('aborted', () => res.destroy());
      ur.on('error', () => res.destroy());
      ur.pipe(res);
    });
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  }
}

let api: FakeApiServer;
let front: FrontProxy;
let dir: string;
const regs: KubernetesRegistry[] = [];
let warnings: string[];
let rejections: unknown[];
const onRejection = (e: unknown) => rejections.push(e);

function open(o: { informer?: object; syncTimeoutMs?: number; kc?: KubeConfig } = {}): KubernetesRegistry {
  const r = new KubernetesRegistry(o.kc ?? front.kubeConfig(api.agentToken('node1')), {
    pskDir: join(dir, 'psk'),
    node: 'node1',
    log: { warn: (_f, m) => warnings.push(m), info: () => {} },
    ...(o.syncTimeoutMs !== undefined ? { syncTimeoutMs: o.syncTimeoutMs } : {}),
    informer: { backoffMs: 20, backoffMaxMs: 200, minWatchGapMs: 10, ...o.informer },
  });
  regs.push(r);
  return r;
}

const podNames = async (r: KubernetesRegistry) => (await r.pods('alpha')).map((p) => p.name);

beforeEach(async () => {
  api = new FakeApiServer();
  api.bookmarkMs = 100;
  await api.start();
  api.loadCluster(cluster);
  front = new FrontProxy(api);
  await front.start();
  dir = mkdtempSync(join(tmpdir(), 'tenc-k8s-watch-'));
  warnings = [];
  // vitest fails the run on an unhandled rejection as well; recorded here so the test
  // that caused it fails by name
  rejections = [];
  process.on('unhandledRejection', onRejection);
});

afterEach(async () => {
  process.off('unhandledRejection', onRejection);
  for (const r of regs.splice(0)) await r.close();
  await front.stop();
  await api.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('kubernetes registry: malformed watch events, a watch that cannot start', () => {
  it('events without an object (or of no known type) are dropped and logged once; later events still arrive; nothing is left unhandled', async () => {
    front.inject.set(PODS, [
      '{"type":"BOOKMARK"}',
      '{"type":"ERROR","object":null}',
      '{"type":"MODIFIED","object":"alpha-web-1"}',
      '{"type":"DELETED","object":[]}',
      '{"object":{"metadata":{"name":"typeless","namespace":"alpha","resourceVersion":"1"}}}',
    ]);
    const r = open();
    expect(await podNames(r)).toContain('alpha-web-1');
    api.dropWatches(); // a second watch of pods: the same lines again
    api.putPod('alpha', 'after-bad', 'node1', '10.128.1.90', {});
    await until('the event after the bad lines', async () => (await podNames(r)).includes('after-bad'));
    await sleep(100);
    expect(rejections).toEqual([]);
    expect(r.stats().pods.dropped).toBeGreaterThanOrEqual(5);
    expect(await podNames(r)).toContain('alpha-web-1'); // the MODIFIED/DELETED without an object changed nothing
    const w = warnings.filter((x) => x.startsWith('kubernetes pods: malformed event'));
    expect(w).toHaveLength(1);
    expect(w[0]).toMatch(/dropped \(logged once\)$/);
  });

  it('a re-watch that cannot start (the exec auth plugin fails) is retried with back-off, not left unhandled', async () => {
    const kc = front.kubeConfig(api.agentToken('node1'));
    const real = kc.applyToFetchOptions.bind(kc);
    let failing = false;
    let failed = 0;
    // Watch.watch awaits this before its request (the lists authenticate another way)
    kc.applyToFetchOptions = async (opts) => {
      if (failing) {
        failed++;
        throw new Error('exec plugin: aws-iam-authenticator: exit status 1');
      }
      return real(opts);
    };
    const r = open({ kc });
    await r.pods('alpha');
    await until('every informer watching', () => api.openWatches === 6);
    failing = true;
    // ended cleanly (ERROR 410, then the end, as after a compaction): ListWatch relists and
    // watches again from its done handler, where a rejection went unhandled
    api.expire();
    await until('the pods re-watch refused', () => failed > 0 && (rejections.length > 0 || warnings.some((x) => x.startsWith('kubernetes pods: exec plugin'))));
    expect(rejections).toEqual([]);
    failing = false;
    api.putPod('alpha', 'after-auth', 'node1', '10.128.1.91', {});
    await until('watching again', async () => (await podNames(r)).includes('after-auth'));
    expect(warnings.filter((x) => x.startsWith('kubernetes pods: exec plugin'))).toEqual(['kubernetes pods: exec plugin: aws-iam-authenticator: exit status 1: retrying with back-off (logged once)']);
  });
});

describe('kubernetes registry: a watch answered late', () => {
  it('given up by the idle timer while its headers were on their way: its late events do not reach the cache (no deleted pod brought back)', async () => {
    front.holdNext.set(PODS, 1);
    const r = open({ informer: { timeoutSeconds: 60, idleMs: 300 } });
    expect(await podNames(r)).toContain('alpha-web-1');
    await until('the held watch replaced', () => (api.counts.watches.get('pods') ?? 0) >= 1);
    const ghost = api.putPod('alpha', 'ghost', 'node1', '10.128.1.92', {});
    await until('ghost seen', async () => (await podNames(r)).includes('ghost'));
    api.remove('pods', 'alpha', 'ghost');
    await until('ghost gone', async () => !(await podNames(r)).includes('ghost'));
    // the first watch's answer arrives now, with an event older than the deletion
    const h = front.held[0];
    h.release([{ type: 'MODIFIED', object: ghost }]);
    await until('late watch closed or ghost back', async () => h.closed || (await podNames(r)).includes('ghost'), 3000);
    await sleep(100);
    expect(await podNames(r)).not.toContain('ghost');
    expect(h.closed).toBe(true); // aborted by the client as it arrived
  });

  it('answered after close(): aborted, the cache does not change', async () => {
    const r = open();
    expect(await podNames(r)).toContain('alpha-web-1');
    front.holdNext.set(PODS, 1);
    api.dropWatches();
    await until('the re-watch held', () => front.held.length === 1);
    await r.close();
    const ghost = { ...api.get('pods', 'alpha', 'alpha-web-1')!, metadata: { ...api.get('pods', 'alpha', 'alpha-web-1')!.metadata, name: 'ghost', uid: 'ghost-uid', resourceVersion: api.resourceVersion } };
    const h = front.held[0];
    h.release([{ type: 'ADDED', object: ghost }]);
    await until('late watch closed or ghost added', async () => h.closed || (await podNames(r)).includes('ghost'), 3000);
    await sleep(100);
    expect(await podNames(r)).not.toContain('ghost');
    expect(h.closed).toBe(true);
  });
});

describe('kubernetes registry: no TencPolicy CRD', () => {
  it('the policy read fails at once with the list error (not after the sync timeout); the rest reads as usual; the CRD installed later is listed', async () => {
    front.notFound.add(POLICIES);
    // the default sync timeout (10 s): a read that waited for it would fail with "not listed yet after 10000 ms"
    const r = open();
    await expect(r.policies('alpha')).rejects.toThrow(/^kubernetes tencpolicies: cannot list: HTTP 404: the server could not find the requested resource \(is the TencPolicy CRD, deploy\/crd-tencpolicy\.yaml, installed\?\)$/);
    expect((await r.pods('alpha')).length).toBeGreaterThan(0);
    expect((await r.services('alpha')).length).toBeGreaterThan(0);
    await r.peers('alpha');
    // the same message every time (the agent logs it when it changes)
    const msgs = new Set<string>();
    for (let i = 0; i < 20; i++) msgs.add(await r.policies('alpha').then(() => 'listed', (e: Error) => e.message));
    expect(msgs.size).toBe(1);
    // another list error: the same, without the CRD hint
    front.notFound.delete(POLICIES);
    api.failLists.set('tencpolicies', 1_000_000);
    await until('HTTP 500', async () => r.policies('alpha').then(() => false, (e: Error) => /cannot list: HTTP 500: etcdserver: request timed out$/.test(e.message)));
    api.failLists.delete('tencpolicies');
    await until('CRD installed', async () => (await r.policies('alpha').catch(() => [])).map((p) => p.name).join() === 'db,web-metrics');
  });

  it('a read waiting for the first list fails as soon as that list fails', async () => {
    front.notFound.add(POLICIES);
    api.delayMs = 200; // the first list is on its way when the read starts
    const r = open();
    await expect(r.policies('alpha')).rejects.toThrow(/cannot list: HTTP 404/);
  });

  it('sync waiters are removed when they time out or fail (they piled up by one per read)', async () => {
    const inf = new Informer(
      'widgets',
      api.kubeConfig(api.agentToken('node1')),
      '/apis/example.com/v1/widgets',
      async () => {
        throw Object.assign(new Error('HTTP-Code: 500'), { code: 500, body: { message: 'etcdserver: request timed out' } });
      },
      () => {},
      { warn: (_f, m) => warnings.push(m), info: () => {} },
      { backoffMs: 20, backoffMaxMs: 50 },
    );
    inf.start();
    try {
      const reads = Array.from({ length: 20 }, () => inf.waitSynced(30));
      for (const p of reads) await expect(p).rejects.toThrow(/widgets: not listed yet after 30 ms \(last error: HTTP 500/);
      expect(inf.waiting).toBe(0);
      await expect(inf.waitSynced(5000, { failFast: true })).rejects.toThrow('kubernetes widgets: cannot list: HTTP 500: etcdserver: request timed out');
      expect(inf.waiting).toBe(0);
    } finally {
      inf.stop();
    }
  });
});

describe('kubernetes registry: a bad TencPeer', () => {
  it('is warned once per problem, not once per revision; again when its problem changes', async () => {
    const r = open({ kc: api.kubeConfig(api.agentToken('node1')) });
    const zero = Buffer.alloc(32).toString('base64');
    const ownerReferences = [{ apiVersion: 'v1', kind: 'Pod', name: 'alpha-web-1', uid: api.get('pods', 'alpha', 'alpha-web-1')!.metadata.uid }];
    const put = (spec: object, i: number) => {
      const o = api.put('tencpeers', { metadata: { name: 'alpha-web-1', namespace: 'alpha', labels: { rev: String(i) }, ownerReferences }, spec: { nodeName: 'node1', endpoint: '10.128.1.10:51820', ...spec } });
      return Number(o.metadata.resourceVersion);
    };
    const read = async (rv: number) => {
      await until(`tencpeers at ${rv}`, () => Number(r.stats().tencpeers.resourceVersion) >= rv);
      return r.peers('alpha');
    };
    const lines = () => warnings.filter((w) => w.includes('TencPeer alpha/alpha-web-1'));
    // the node rewrites its entry with an all-zero key, again and again
    for (let i = 0; i < 20; i++) expect(await read(put({ publicKey: zero }, i))).toEqual([]);
    expect(lines()).toEqual(['kubernetes TencPeer alpha/alpha-web-1: spec.publicKey is all zeros: ignored (logged once per problem)']);
    // another problem: said once more, naming the fields
    for (let i = 20; i < 25; i++) await read(put({ publicKey: 'short', endpoint: 'nope' }, i));
    expect(lines()).toHaveLength(2);
    expect(lines()[1]).toBe('kubernetes TencPeer alpha/alpha-web-1: spec.publicKey is not a 32-byte key in base64; spec.endpoint is not ip:port: ignored (logged once per problem)');
    // fixed, then broken as at first: the first problem is said again
    const good = Buffer.alloc(32, 7).toString('base64');
    expect((await read(put({ publicKey: good }, 25))).map((p) => p.publicKey)).toEqual([good]);
    await read(put({ publicKey: zero }, 26));
    expect(lines()).toHaveLength(3);
    expect(lines()[2]).toContain('spec.publicKey is all zeros');
  });
});

describe('kubernetes registry: a watch that keeps failing after the first list', () => {
  it('the health file says synced: false once it has failed for staleAfterMs, and true again when it works', async () => {
    const file = join(dir, 'health');
    const r = new KubernetesRegistry(front.kubeConfig(api.agentToken('node1')), {
      pskDir: join(dir, 'psk'),
      node: 'node1',
      log: { warn: (_f, m) => warnings.push(m), info: () => {} },
      healthFile: file,
      healthMs: 50,
      informer: { backoffMs: 20, backoffMaxMs: 100, minWatchGapMs: 10, staleAfterMs: 400 },
    });
    regs.push(r);
    const health = () => JSON.parse(readFileSync(file, 'utf8')) as { synced: boolean; stale?: string[] };
    await until('synced', () => health().synced === true);
    // the pods watch ends and every list and watch of pods is refused from now on
    front.notFound.add(PODS);
    api.dropWatches();
    await until('not synced', () => health().synced === false, 5000);
    expect(health().stale).toEqual(['pods']);
    front.notFound.delete(PODS);
    await until('synced again', () => health().synced === true, 5000);
    expect(health().stale).toBeUndefined();
  });

  it('a watch silent for 90 s is given up by default (bookmarks come about every minute), not after timeoutSeconds + 30 s', () => {
    const inf = new Informer('pods', front.kubeConfig('t'), PODS, async () => ({ items: [], metadata: {} }) as never, () => {}, { warn() {}, info() {} });
    expect((inf as unknown as { gw: { o: { idleMs: number } } }).gw.o.idleMs).toBe(90_000);
  });
});

