/**
 * The etcd registry against a real etcd (one member on loopback, no namespaces):
 *
 *  1. spec: every option, and errors naming what is wrong
 *  2. snapshot then watch: the cluster tool's objects read back in the directory
 *     backend's shapes; a change calls the watcher; a bad value is reported and skipped
 *  3. peers: the publisher is the node of the key, never a field of the value
 *  4. the psk Secret handed out as a 0600 file (never in an error message)
 *  5. lease: the keys of an agent killed with SIGKILL (built dist/ needed) vanish within
 *     TTL + 5 s; a lease revoked under a live agent is replaced and its keys come back;
 *     close() leaves the keys published until the lease's TTL runs out (never revoked)
 *  5b. more than 4 MiB below the prefix (gRPC's default receive limit) is read
 *  6. connection lost while the history is compacted: the watch is cancelled, the
 *     snapshot read again, and no change is missed
 *  7. auth on: node2's user cannot write below node1's prefix, can below its own
 *  8. endpoints in the order given (the node's own member first), the next on failure
 *  9. a member back after its calls failed (its circuit breaker open) is used within
 *     ENDPOINT_BREAK_MS, not etcd3's default 5 s
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EtcdRegistry, EtcdRegistryWriter } from '../../src/registry/etcd.js';
import { CALL_TIMEOUT_MS, ENDPOINT_BREAK_MS, etcdClient, parseEtcdSpec, type EtcdConnection } from '../../src/registry/etcd-client.js';
import { isBrokenCircuitError } from 'cockatiel';
import { openRegistry } from '../../src/registry/open.js';
import { trustedPeers } from '../../src/registry/registry.js';
import { EtcdServer, Relay } from './server.js';
import { until as waitUntil } from '../until.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const KEY_A = 'A'.repeat(42) + 'E='; // canonical base64, not all zeros (peerFromObject checks keys as the pod does)
const KEY_B = 'B'.repeat(42) + 'A=';
const PSK = 'c'.repeat(43) + '=';

/** Waits for fn (polled every 25 ms), at most ms; how long it took. */
const until = async (what: string, fn: () => Promise<boolean> | boolean, ms = 10_000): Promise<number> => (await waitUntil(what, fn, ms, 25)).elapsed;

const pod = (name: string, node: string, ip: string) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: 'alpha', labels: { app: name }, annotations: { 'tenc.io/netns': `/run/netns/${name}` } },
  spec: { nodeName: node },
  status: { podIP: ip, podIPs: [{ ip }] },
});

describe('spec', () => {
  it('reads endpoints and options', () => {
    const c = parseEtcdSpec('https://10.0.0.1:2379,https://10.0.0.2:2379?ca=/c&cert=/x&key=/y&prefix=/t/&user=node1&password-file=/p&ttl=7');
    expect(c).toEqual({ endpoints: ['https://10.0.0.1:2379', 'https://10.0.0.2:2379'], prefix: '/t/', ca: '/c', cert: '/x', key: '/y', user: 'node1', passwordFile: '/p', ttl: 7 });
    expect(parseEtcdSpec('http://127.0.0.1:2379')).toMatchObject({ prefix: '/tenc/', ttl: 5 });
  });

  it.each([
    ['', /at least one endpoint/],
    ['10.0.0.1:2379', /is not a URL|must be http/],
    ['ftp://h:1', /must be http\(s\)/],
    ['http://h', /must be http\(s\)/],
    ['http://h:1,https://g:1', /mix http and https/],
    ['https://h:1?cert=/x', /cert and key go together/],
    ['http://h:1?ca=/c', /TLS files given but the endpoints are http/],
    ['http://10.0.0.1:1?user=u&password-file=/p', /password is not sent over http/],
    ['https://h:1?user=u', /user and password-file go together/],
    ['https://h:1?prefix=tenc', /prefix "tenc" must start and end/],
    ['https://h:1?ttl=1', /ttl "1" must be 2..600/],
    ['https://h:1?colour=red', /unknown option "colour"/],
  ])('%s: %s', (spec, re) => {
    expect(() => parseEtcdSpec(spec)).toThrow(re);
  });

  it('open names the spec; unreadable TLS files are named', async () => {
    await expect(openRegistry('etcd:')).rejects.toThrow(/--registry etcd:: etcd: needs at least one endpoint/);
    await expect(openRegistry('etcd:https://h:1?ca=/nonexistent/ca.pem')).rejects.toThrow(/cannot read the ca file \/nonexistent\/ca.pem \(ENOENT\)/);
  });
});

describe('etcd registry (real etcd)', () => {
  const etcd = new EtcdServer();
  const tmp = mkdtempSync(join(tmpdir(), 'tenc-etcd-reg-'));
  const open: { close(): Promise<void> | void }[] = [];
  let conn: EtcdConnection;
  const reg = (o: Partial<EtcdConnection> = {}, problems: string[] = []) => {
    const r = new EtcdRegistry({ ...conn, ...o }, { secretDir: join(tmp, 'secrets'), onProblem: (k, why) => problems.push(`${k}: ${why}`) });
    open.push(r);
    return r;
  };

  beforeAll(async () => {
    await etcd.start();
    conn = parseEtcdSpec(`${etcd.endpoint}?ttl=2`);
  });
  afterAll(async () => {
    for (const r of open) await r.close();
    await etcd.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('snapshot then watch: the objects in the directory backend shapes; a bad value is skipped and reported', async () => {
    writeFileSync(join(tmp, 'psk'), PSK + '\n');
    const w = new EtcdRegistryWriter(conn);
    w.putProject('alpha', join(tmp, 'psk'));
    w.replaceObjects('pods', 'alpha', new Map([['web', pod('web', 'node1', '10.128.1.10')], ['db', pod('db', 'node2', '10.128.2.10')]]));
    w.replaceObjects('services', 'alpha', new Map([['web', { metadata: { name: 'web' }, spec: { clusterIP: '10.96.1.10', ports: [{ protocol: 'TCP', port: 80 }], selector: { app: 'web' } } }]]));
    w.replaceObjects('endpointslices', 'alpha', new Map([['web', { metadata: { name: 'web', labels: { 'kubernetes.io/service-name': 'web' } }, endpoints: [{ addresses: ['10.128.1.10'], nodeName: 'node1', targetRef: { name: 'web' } }] }]]));
    await w.flush();
    const problems: string[] = [];
    const r = reg({}, problems);
    expect(await r.projects()).toEqual(['alpha']);
    expect((await r.pods('alpha')).sort((a, b) => a.name.localeCompare(b.name))).toEqual([
      // the tenc.io/netns annotation the objects carry is never believed: the netns comes from the CNI registration
      { project: 'alpha', name: 'db', node: 'node2', address: '10.128.2.10', addresses: ['10.128.2.10'], labels: { app: 'db' }, netns: null },
      { project: 'alpha', name: 'web', node: 'node1', address: '10.128.1.10', addresses: ['10.128.1.10'], labels: { app: 'web' }, netns: null },
    ]);
    expect(await r.services('alpha')).toEqual([{ project: 'alpha', name: 'web', vip: '10.96.1.10', ports: [{ protocol: 'tcp', port: 80 }], selector: { app: 'web' } }]);
    expect(await r.endpoints('alpha')).toEqual([{ project: 'alpha', service: 'web', pods: [{ name: 'web', address: '10.128.1.10', node: 'node1' }] }]);
    expect(r.stats.snapshots).toBe(1);

    let calls = 0;
    const watch = r.watch('alpha', () => calls++);
    // a pod removed, one added, one bad value: the replace writes only the difference
    w.replaceObjects('pods', 'alpha', new Map([['web', pod('web', 'node1', '10.128.1.10')], ['cache', pod('cache', 'node2', '10.128.2.11')]]));
    await w.flush();
    await etcd.client(r).put('/tenc/pods/alpha/junk').value('{not json');
    await etcd.client(r).put('/tenc/pods/alpha/Bad_Name').value('{}');
    await until('the watch to deliver', async () => (await r.pods('alpha')).map((p) => p.name).sort().join() === 'cache,web' && problems.length >= 2);
    expect(calls).toBeGreaterThan(0);
    expect(problems.join('\n')).toMatch(/\/tenc\/pods\/alpha\/junk: not JSON/);
    expect(problems.join('\n')).toMatch(/\/tenc\/pods\/alpha\/Bad_Name: a name in the key is not a valid name/);
    expect(r.stats.events).toBe(4); // put cache, delete db, junk, Bad_Name: web unchanged was not rewritten
    watch.close();
    w.close();
  });

  it('policies: /tenc/policies/<project>/<name> as stored; a value that is not JSON comes back as a problem (the agent refuses the set)', async () => {
    const w = new EtcdRegistryWriter(conn);
    const obj = { apiVersion: 'tenc.io/v1alpha1', kind: 'TencPolicy', metadata: { name: 'metrics', namespace: 'alpha' }, spec: { service: 'web', ports: [{ port: 9100 }], mode: 'exempt' } };
    w.replaceObjects('policies', 'alpha', new Map([['metrics', obj]]));
    await w.flush();
    const r = reg();
    expect(await r.policies('alpha')).toEqual([{ project: 'alpha', name: 'metrics', object: obj }]);
    await etcd.client(r).put('/tenc/policies/alpha/broken').value('{not json');
    await until('the broken policy', async () => (await r.policies('alpha')).length === 2);
    expect((await r.policies('alpha')).map((p) => [p.name, p.problem ?? null])).toEqual([
      ['broken', '/tenc/policies/alpha/broken: not JSON'],
      ['metrics', null],
    ]);
    await etcd.client(r).delete().key('/tenc/policies/alpha/broken');
    w.replaceObjects('policies', 'alpha', new Map());
    await w.flush();
    await until('no policies', async () => (await r.policies('alpha')).length === 0);
    w.close();
  });

  it('peers: the publisher is the node of the key, never a field of the value', async () => {
    const r1 = reg();
    await r1.publishPeer({ project: 'alpha', pod: 'web', node: 'node1', publicKey: KEY_A, endpoint: '10.128.1.10:51820' });
    // node2 writes for a pod of node1, claiming node1 in the value
    await etcd.client(r1).put('/tenc/nodes/node2/peers/alpha/web').value(JSON.stringify({ pod: 'web', node: 'node1', publicKey: KEY_B, endpoint: '10.128.2.66:51820' }));
    // a value naming another pod than its key
    await etcd.client(r1).put('/tenc/nodes/node2/peers/alpha/cache').value(JSON.stringify({ pod: 'web', publicKey: KEY_B, endpoint: '10.128.2.66:51820' }));
    // a key the pod would refuse (non-canonical last character: the same bytes to a lenient decoder)
    await etcd.client(r1).put('/tenc/nodes/node2/peers/alpha/db').value(JSON.stringify({ pod: 'db', publicKey: KEY_B.slice(0, 42) + 'B=', endpoint: '10.128.2.67:51820' }));
    const problems: string[] = [];
    const r2 = reg({}, problems);
    const peers = await r2.peers('alpha');
    expect(peers.map((p) => `${p.node}/${p.pod}/${p.publicKey[0]}`).sort()).toEqual(['node1/web/A', 'node2/web/B']);
    expect(problems.join()).toMatch(/nodes\/node2\/peers\/alpha\/cache: not a valid peer: pod: "web" differs/);
    expect(problems.join()).toMatch(/nodes\/node2\/peers\/alpha\/db: not a valid peer: publicKey: .*canonical/);
    const rejected: string[] = [];
    const trusted = trustedPeers(await r2.pods('alpha'), peers, (p, why) => rejected.push(`${p.node}: ${why}`));
    expect(trusted).toEqual([{ project: 'alpha', pod: 'web', node: 'node1', publicKey: KEY_A, endpoint: '10.128.1.10:51820' }]);
    expect(rejected).toEqual(['node2: published by node node2, but the pod runs on node1']);
    await r1.withdrawPeer('alpha', 'node1', 'web');
    await until('the withdrawal', async () => !(await r2.peers('alpha')).some((p) => p.node === 'node1'));
    await etcd.client(r1).delete().prefix('/tenc/nodes/');
  });

  it('the psk Secret becomes a 0600 file; a bad one is refused without showing it', async () => {
    const r = reg();
    const f = await r.pskFile('alpha');
    expect(readFileSync(f, 'utf8')).toBe(PSK + '\n');
    expect(statSync(f).mode & 0o777).toBe(0o600);
    expect(statSync(join(tmp, 'secrets')).mode & 0o777).toBe(0o700);
    const bad = 'x'.repeat(20);
    await etcd.client(r).put('/tenc/secrets/beta/psk').value(JSON.stringify({ data: { psk: Buffer.from(bad).toString('base64') } }));
    const problems: string[] = [];
    const r2 = reg({}, problems);
    await expect(r2.pskFile('beta')).rejects.toThrow(/project beta: no valid psk Secret at \/tenc\/secrets\/beta\/psk/);
    expect(problems.join()).toMatch(/secrets\/beta\/psk: not a valid psk Secret/);
    expect(problems.join()).not.toContain(bad);
    await expect(r2.pskFile('gamma')).rejects.toThrow(/no valid psk Secret/);
  });

  it('lease: a dead agent\'s keys vanish within TTL + 5 s; a revoked lease is replaced and the keys return; close() does not revoke', async () => {
    const watcher = reg();
    // an agent in a process of its own publishes, then is killed with SIGKILL
    const agent = spawn(process.execPath, ['--input-type=module', '-e', `
      const { EtcdRegistry } = await import(${JSON.stringify(join(root, 'dist', 'src', 'registry', 'etcd.js'))});
      const { parseEtcdSpec } = await import(${JSON.stringify(join(root, 'dist', 'src', 'registry', 'etcd-client.js'))});
      const r = new EtcdRegistry(parseEtcdSpec('${etcd.endpoint}?ttl=2'));
      await r.publishPeer({ project: 'alpha', pod: 'web', node: 'node1', publicKey: '${KEY_A}', endpoint: '10.128.1.10:51820' });
      console.log('published');`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      agent.stdout!.on('data', (d) => String(d).includes('published') && resolve());
      agent.once('exit', (c) => reject(new Error(`agent exited ${c}`)));
    });
    await until('the peer to be seen', async () => (await watcher.peers('alpha')).length === 1);
    agent.kill('SIGKILL');
    const gone = await until('the dead agent\'s key to vanish', async () => (await watcher.peers('alpha')).length === 0, 2000 + 5000);
    expect(gone).toBeLessThan(7000);

    const live = reg();
    await live.publishPeer({ project: 'alpha', pod: 'db', node: 'node2', publicKey: KEY_B, endpoint: '10.128.2.10:51820' });
    await until('the peer to be seen', async () => (await watcher.peers('alpha')).length === 1);
    // the lease the key was written under
    const id = BigInt(/"lease":(\d+)/.exec(etcd.ctl('get', '/tenc/nodes/node2/peers/alpha/db', '-w', 'json').stdout)![1]).toString(16);
    expect(etcd.ctl('lease', 'revoke', id).status).toBe(0);
    await until('the key to be deleted with its lease', async () => (await watcher.peers('alpha')).length === 0, 5000);
    await until('the agent to publish again under a new lease', async () => (await watcher.peers('alpha')).length === 1, 10_000);
    expect(live.stats.leasesLost).toBe(1);
    await live.close();
    // a clean stop leaves the key published (the agent's proxies keep running): read back
    // from a second client, it is still there; it goes only when the lease's TTL runs out
    const reader = etcdClient(conn);
    expect(await reader.get('/tenc/nodes/node2/peers/alpha/db').string()).toContain(KEY_B);
    reader.close();
    expect((await watcher.peers('alpha')).length).toBe(1);
    await until('the closed agent\'s key to expire with its lease', async () => (await watcher.peers('alpha')).length === 0, 2000 + 5000);
  });

  it('more than 4 MiB of objects (gRPC\'s default receive limit): the snapshot is read', async () => {
    const big = { ...conn, prefix: '/big/' };
    const pad = 'x'.repeat(1000);
    const pods = (n: number, from = 0) => new Map(Array.from({ length: n }, (_, i) => [`p${from + i}`, { ...pod(`p${from + i}`, 'node1', `10.129.${(from + i) >> 8}.${(from + i) & 255}`), metadata: { name: `p${from + i}`, labels: { pad } } }]));
    const w = new EtcdRegistryWriter(big);
    w.putProject('alpha', join(tmp, 'psk'));
    w.replaceObjects('pods', 'alpha', pods(5500));
    await w.flush(60_000);
    const r = reg({ prefix: '/big/' });
    expect(await r.projects()).toEqual(['alpha']);
    expect((await r.pods('alpha')).length).toBe(5500);
    await r.close();
    w.close();
  }, 120_000);

  it('connection lost while the history is compacted: snapshot read again, nothing missed', async () => {
    const relay = new Relay(etcd.clientPort);
    await relay.open();
    const r = reg({ endpoints: [`http://127.0.0.1:${relay.port}`] });
    expect((await r.pods('alpha')).length).toBe(2);
    let calls = 0;
    r.watch('alpha', () => calls++);
    await relay.cut();
    // meanwhile: a pod added, one deleted, then the history compacted away
    const w = new EtcdRegistryWriter(conn);
    w.replaceObjects('pods', 'alpha', new Map([['web', pod('web', 'node1', '10.128.1.10')], ['late', pod('late', 'node1', '10.128.1.12')]]));
    await w.flush();
    w.close();
    const rev = JSON.parse(etcd.ctl('endpoint', 'status', '-w', 'json').stdout)[0].Status.header.revision;
    expect(etcd.ctl('compaction', String(rev)).status).toBe(0);
    // still the old copy while cut off
    expect((await r.pods('alpha')).map((p) => p.name).sort()).toEqual(['cache', 'web']);
    calls = 0;
    await relay.open();
    await until('the registry to catch up', async () => (await r.pods('alpha')).map((p) => p.name).sort().join() === 'late,web', 20_000);
    expect(r.stats.watchErrors).toBeGreaterThanOrEqual(1);
    expect(r.stats.snapshots).toBeGreaterThanOrEqual(2);
    expect(calls).toBeGreaterThan(0);
    await r.close();
    await relay.cut();
  });

  it('auth: node2 cannot write below node1\'s prefix, can below its own; reads everything', async () => {
    const pw = join(tmp, 'pw');
    writeFileSync(pw, 'secret-node2\n', { mode: 0o600 });
    const c = (...a: string[]) => {
      const x = etcd.ctl(...a);
      if (x.status !== 0) throw new Error(`etcdctl ${a.join(' ')}: ${x.stderr}`);
    };
    c('user', 'add', 'root:rootpw');
    c('role', 'add', 'node2');
    c('role', 'grant-permission', 'node2', '--prefix=true', 'readwrite', '/tenc/nodes/node2/');
    c('role', 'grant-permission', 'node2', '--prefix=true', 'read', '/tenc/');
    c('user', 'add', 'node2:secret-node2');
    c('user', 'grant-role', 'node2', 'node2');
    c('auth', 'enable');
    try {
      const r = new EtcdRegistry(parseEtcdSpec(`${etcd.endpoint}?user=node2&password-file=${pw}`), {});
      open.push(r);
      expect((await r.pods('alpha')).length).toBe(2);
      await r.publishPeer({ project: 'alpha', pod: 'cache', node: 'node2', publicKey: KEY_B, endpoint: '10.128.2.11:51820' });
      await expect(r.publishPeer({ project: 'alpha', pod: 'web', node: 'node1', publicKey: KEY_B, endpoint: '10.128.2.66:51820' })).rejects.toThrow(/permission denied/);
      await expect(r.client.put('/tenc/pods/alpha/evil').value('{}').exec()).rejects.toThrow(/permission denied/);
      await until('its own key', async () => (await r.peers('alpha')).map((p) => `${p.node}/${p.pod}`).join() === 'node2/cache');
      await r.close();
    } finally {
      etcd.ctl('--user', 'root:rootpw', 'auth', 'disable');
    }
  });
});

describe('endpoint order (two separate members, each with its own value of one key)', () => {
  const a = new EtcdServer();
  const b = new EtcdServer();
  beforeAll(async () => {
    await Promise.all([a.start(), b.start()]);
    expect(a.ctl('put', '/order', 'a').status).toBe(0);
    expect(b.ctl('put', '/order', 'b').status).toBe(0);
  }, 30_000);
  afterAll(async () => {
    await Promise.all([a.stop(), b.stop()]);
  });

  it('every call and watch goes to the first endpoint; the next one is used only when it fails', async () => {
    const read = async (spec: string, n: number) => {
      const c = etcdClient(parseEtcdSpec(spec));
      try {
        const got: string[] = [];
        for (let i = 0; i < n; i++) got.push((await c.get('/order').string()) ?? 'none');
        // a watch stream too: it sees the put on the member it is on
        const w = await c.watch().key('/order-w').create();
        const seen = new Promise<string>((r) => w.on('put', (kv) => r(kv.value.toString())));
        const first = spec.split(',')[0];
        await (first === a.endpoint ? a : b).ctl('put', '/order-w', 'on-first');
        const v = await Promise.race([seen, new Promise<string>((r) => setTimeout(() => r('not seen'), 3000))]);
        await w.cancel();
        return { got: [...new Set(got)], watch: v };
      } finally {
        c.close();
      }
    };
    // random spreading would give both values in 20 calls (p = 2^-19 of one only)
    expect(await read(`${a.endpoint},${b.endpoint}`, 20)).toEqual({ got: ['a'], watch: 'on-first' });
    expect(await read(`${b.endpoint},${a.endpoint}`, 20)).toEqual({ got: ['b'], watch: 'on-first' });
    await a.stop(true);
    try {
      const c = etcdClient(parseEtcdSpec(`${a.endpoint},${b.endpoint}`));
      const t0 = Date.now();
      expect(await c.get('/order').string()).toBe('b');
      expect(Date.now() - t0).toBeLessThan(CALL_TIMEOUT_MS * 2);
      c.close();
    } finally {
      await a.start();
    }
  }, 30_000);

  it('a watch moves to the next endpoint when its member dies (stream errors count), and back when it returns', async () => {
    // separate members: the watch resumed on the other one from this one's revision sees
    // its next change only if that one's history is ahead, so each is bumped in turn
    const bump = async (m: EtcdServer, n: number) => {
      const c = etcdClient(parseEtcdSpec(m.endpoint));
      for (let i = 0; i < n; i++) await c.put(`/bump/${i}`).value('x');
      c.close();
    };
    await bump(b, 30);
    const events: string[] = [];
    const r = new EtcdRegistry(parseEtcdSpec(`${a.endpoint},${b.endpoint}`), { onEvent: (w) => events.push(w) });
    const seen = (name: string) => until(`pod ${name}`, async () => (await r.pods('alpha')).some((p) => p.name === name), 8000);
    try {
      r.watch('alpha', () => {});
      expect(await r.pods('alpha')).toEqual([]);
      await a.stop(true);
      expect(b.ctl('put', '/tenc/pods/alpha/moved', JSON.stringify(pod('moved', 'node1', '10.128.1.50'))).status).toBe(0);
      console.log(`endpoint order: watch moved to the second member and delivered in ${await seen('moved')} ms`);
      await a.start();
      await bump(a, 60);
      const back = await until('the watch back on the first member', () => events.includes('watch back on the first endpoint'), 10_000);
      expect(a.ctl('put', '/tenc/pods/alpha/home', JSON.stringify(pod('home', 'node1', '10.128.1.51'))).status).toBe(0);
      console.log(`endpoint order: watch back on the first member ${back} ms after its restart, delivered in ${await seen('home')} ms`);
    } finally {
      await r.close();
      if (!a.child) await a.start();
    }
  }, 40_000);
});

describe('a member back after calls to it failed', () => {
  const m = new EtcdServer();
  beforeAll(() => m.start(), 30_000);
  afterAll(() => m.stop());

  it(`its calls go through within ENDPOINT_BREAK_MS (${ENDPOINT_BREAK_MS} ms) of its return, not etcd3's 5 s`, async () => {
    expect(m.ctl('put', '/back', 'yes').status).toBe(0);
    await m.stop(true);
    const c = etcdClient(parseEtcdSpec(m.endpoint));
    try {
      // while it is down: the calls fail, and after 3 failures in a row its breaker is open
      // (a call then fails at once, without trying the member)
      for (let i = 0; i < 4; i++) await expect(c.get('/back').string()).rejects.toThrow();
      const broken = await c.get('/back').string().catch((e: Error) => e);
      expect(isBrokenCircuitError(broken), String(broken)).toBe(true);
      await m.start();
      let value: string | null = null;
      const elapsed = await until('the member answers again', async () => (value = await c.get('/back').string().catch(() => null)) !== null);
      expect(value).toBe('yes');
      // etcd3's default breaker (5 s) would hold the calls back 4-5 s after the member answered
      expect(elapsed).toBeLessThan(ENDPOINT_BREAK_MS + 1000);
    } finally {
      c.close();
    }
  }, 30_000);
});
