/**
 * The local cluster on a real 3-member etcd (cluster.sh up cluster-etcd-example.json
 * --registry etcd): one member per node namespace on the underlay, TLS, auth with a
 * role per node; `tenc agent` for alpha in each node's namespace.
 *
 *   node1: alpha-web-1 (svc web)  alpha-client-1      etcd node1  10.200.0.1
 *   node2: alpha-db-1  (svc db)                       etcd node2  10.200.0.2
 *   node3: alpha-client-3  alpha-cache-3 (added)      etcd node3  10.200.0.3
 *
 *  1. traffic across nodes through tenc; etcd holds one peer key per pod, under the
 *     node's prefix; node2's agent certificate cannot write below node1's prefix
 *  2. kill -9 a follower member, then the leader: traffic carries on; a pod added while
 *     quorum holds is known to every alpha pod within 5 s, one added without quorum
 *     within 5 s after the members are back (restarted with their data)
 *  3. node3 partitioned (nftables drops its underlay): its pods keep talking encrypted to
 *     each other; its keys vanish for the others (lease); after the heal its agent
 *     catches up: no missed pod, no stale peer, one key per pod
 *  4. kill -9 an agent: its pods' keys vanish from etcd and from the other pods within
 *     TTL + 5 s; restarted, it adopts its running proxies and publishes again
 *  5. the history compacted under the agents' watches: a pod added next is known in 5 s
 *  6. down: members stopped, data and namespaces gone
 *
 * Every test captures the underlay and checks that no project packet crossed it in
 * plaintext (the marker never appears; VXLAN carries only tenc UDP). Times are printed.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { controlRequest } from '../../src/control/socket.js';
import { podSocket } from '../../src/agent/agent.js';
import { Netns, requireRoot, requireTool, sh, startCapture, readCaptureBytes, type Capture } from './lib.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const main = join(root, 'dist', 'src', 'cli', 'main.js');
const script = join(root, 'netns-scripts', 'cluster.sh');
const etcdScript = join(root, 'netns-scripts', 'etcd.sh');
const example = join(root, 'netns-scripts', 'cluster-etcd-example.json');
const PREFIX = `ce${process.pid % 100000}`;
const STATE = `/run/tenc-cluster/${PREFIX}`;
const env = { ...process.env, CLUSTER_PREFIX: PREFIX };
const marker = `TENC-ETCD-MARKER-${process.pid}`;
const TTL = 5;
const children = new Set<ChildProcess>();

function run(file: string, ...args: string[]) {
  const r = spawnSync('bash', [file, ...args], { env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
const cluster = (...a: string[]) => run(script, ...a);
const etcd = (...a: string[]) => run(etcdScript, ...a);
const ns = (pod: string) => `${PREFIX}-${pod}`;

function curl(pod: string, url: string, timeout = 3): string | null {
  const r = spawnSync('ip', ['netns', 'exec', ns(pod), 'curl', '-s', '-m', String(timeout), '--data', marker, url], { encoding: 'utf8', timeout: 20_000 });
  return r.status === 0 ? r.stdout : null;
}

function serve(pod: string, port: number): void {
  const c = spawn('ip', ['netns', 'exec', ns(pod), 'node', '-e', `require('http').createServer((q, r) => { let b = ''; q.on('data', (d) => (b += d)); q.on('end', () => r.end('${pod} got: ' + b)); }).listen(${port});`], { stdio: 'ignore' });
  children.add(c);
}

interface PodStatus {
  publicKey: string;
  peers: { publicKey: string }[];
}
async function podStatus(pod: string): Promise<PodStatus | null> {
  try {
    return (await controlRequest(podSocket(`/run/netns/${ns(pod)}`), { op: 'status' })) as unknown as PodStatus;
  } catch {
    return null;
  }
}

async function until<T>(what: string, fn: () => Promise<T | null | undefined | false> | T | null | undefined | false, ms = 15_000): Promise<{ value: T; elapsed: number }> {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return { value: v, elapsed: Date.now() - t0 };
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

let alpha = ['alpha-web-1', 'alpha-client-1', 'alpha-db-1', 'alpha-client-3'];

/** Every pod in `pods` has every other one's current key as a peer, and no other peer. */
async function meshComplete(pods = alpha): Promise<boolean> {
  const st = await Promise.all(pods.map(podStatus));
  if (st.some((s) => s === null)) return false;
  const keys = st.map((s) => s!.publicKey);
  return st.every((s, i) => {
    const have = new Set(s!.peers.map((p) => p.publicKey));
    return have.size === pods.length - 1 && keys.every((k, j) => j === i || have.has(k));
  });
}

/** The alpha peer keys in etcd: node/pod per key. */
function etcdPeerKeys(): string[] {
  const r = etcd('ctl', 'get', '--prefix', '--keys-only', '/tenc/nodes/');
  if (r.status !== 0) throw new Error(`etcdctl: ${r.stderr}`);
  return r.stdout
    .split('\n')
    .filter((l) => l.includes('/peers/alpha/'))
    .map((l) => l.replace(/^\/tenc\/nodes\/([^/]+)\/peers\/alpha\/(.+)$/, '$1/$2'))
    .sort();
}

/** Runs fn with the underlay captured; then: no marker in the clear, VXLAN carries only tenc UDP. */
async function noPlaintext(fn: () => Promise<void>): Promise<void> {
  const c: Capture = await startCapture(Netns.attach(`${PREFIX}-ul`), 'ul0');
  try {
    await fn();
  } finally {
    await c.stop();
  }
  const inner = c.read(['udp port 4789']).filter((l) => !l.includes('VXLAN'));
  const notTenc = inner.filter((l) => !/\.51820 > .*\.51820: UDP/.test(l) && !/ARP/.test(l));
  expect(notTenc, notTenc.join('\n')).toEqual([]);
  expect(readCaptureBytes(c).includes(Buffer.from(marker))).toBe(false);
  c.remove();
}

function addPod(name: string, node: string, address: string, app = 'extra') {
  return cluster('add-pod', JSON.stringify({ name, project: 'alpha', node, address, labels: { app } }));
}

beforeAll(async () => {
  requireRoot();
  for (const t of ['ip', 'nft', 'nsenter', 'dnsmasq', 'tcpdump', 'curl', 'etcd', 'etcdctl', 'openssl']) requireTool(t);
  if (!existsSync(main)) throw new Error(`${main} missing: run npm run build first`);
  const up = cluster('up', example, '--registry', 'etcd');
  if (up.status !== 0) throw new Error(`cluster.sh up --registry etcd failed: ${up.stderr}`);
  serve('alpha-web-1', 80);
  serve('alpha-db-1', 5432);
  const r = cluster('agent-start', 'alpha');
  if (r.status !== 0) throw new Error(`agent-start: ${r.stderr}`);
  await until('every alpha pod configured with every other', () => meshComplete(), 40_000);
  await until('web through tenc', () => curl('alpha-client-3', 'http://web/', 1));
}, 120_000);

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  spawnSync('ip', ['netns', 'exec', `${PREFIX}-n-node3`, 'nft', 'delete', 'table', 'inet', 'tenc_partition']);
  cluster('down');
});

describe('local cluster on etcd', () => {
  it('1. traffic through tenc across nodes; one key per pod below its node; a node cannot write below another', async () => {
    await noPlaintext(async () => {
      expect(curl('alpha-client-3', 'http://web/')).toBe(`alpha-web-1 got: ${marker}`); // node3 -> node1
      expect(curl('alpha-client-1', 'http://db:5432/')).toBe(`alpha-db-1 got: ${marker}`); // node1 -> node2
    });
    expect(etcdPeerKeys()).toEqual(['node1/alpha-client-1', 'node1/alpha-web-1', 'node2/alpha-db-1', 'node3/alpha-client-3']);
    // node2's agent certificate (CN node-node2): its own prefix yes, node1's no
    const spec = readFileSync(join(STATE, 'etcd', 'spec-node2'), 'utf8');
    const q = new URLSearchParams(spec.slice(spec.indexOf('?') + 1));
    const eps = spec.slice(5, spec.indexOf('?'));
    const put = (key: string) =>
      spawnSync('ip', ['netns', 'exec', `${PREFIX}-n-node2`, 'etcdctl', '--endpoints', eps, '--cacert', q.get('ca')!, '--cert', q.get('cert')!, '--key', q.get('key')!, 'put', key, '{}'], {
        encoding: 'utf8',
        env: { ...process.env, ETCDCTL_API: '3' },
      });
    expect(put('/tenc/nodes/node1/peers/alpha/alpha-web-1').stderr).toMatch(/permission denied/);
    const own = put('/tenc/nodes/node2/probe');
    expect(own.status, own.stderr).toBe(0);
    expect(etcd('ctl', 'del', '/tenc/nodes/node2/probe').status).toBe(0);
  });

  it('2. a follower killed, then the leader: traffic carries on; pods added are known within 5 s (after quorum is back)', async () => {
    await noPlaintext(async () => {
      const l = etcd('leader');
      expect(l.status, l.stderr).toBe(0);
      const leader = l.stdout.trim();
      expect(['node1', 'node2', 'node3']).toContain(leader);
      const follower = ['node1', 'node2', 'node3'].find((n) => n !== leader)!;
      console.log(`etcd fault: leader ${leader}, killing ${follower} first`);
      expect(etcd('member-stop', follower, 'KILL').status).toBe(0);
      expect(addPod('alpha-extra-1', 'node2', '10.128.2.20').status).toBe(0);
      alpha = [...alpha, 'alpha-extra-1'];
      const withQuorum = await until('the pod added with 2 of 3 members known to every pod', () => meshComplete(), 5000);
      console.log(`etcd fault: pod added with one member down known everywhere in ${withQuorum.elapsed} ms`);
      expect(curl('alpha-client-3', 'http://web/')).toBe(`alpha-web-1 got: ${marker}`);

      expect(etcd('member-stop', leader, 'KILL').status).toBe(0);
      // no quorum: the agents keep what they have
      expect(curl('alpha-client-3', 'http://web/')).toBe(`alpha-web-1 got: ${marker}`);
      expect(curl('alpha-client-1', 'http://db:5432/')).toBe(`alpha-db-1 got: ${marker}`);
      // a pod added now: the cluster tool's write waits for quorum
      const adding = spawn('bash', [script, 'add-pod', JSON.stringify({ name: 'alpha-extra-3', project: 'alpha', node: 'node3', address: '10.128.3.20', labels: { app: 'extra' } })], { env, stdio: 'ignore' });
      children.add(adding);
      await new Promise((r) => setTimeout(r, 1500));
      expect(await podStatus('alpha-extra-3')).toBeNull(); // no proxy: nothing was learnt without quorum
      expect(etcd('member-start', leader).status).toBe(0);
      expect(etcd('member-start', follower).status).toBe(0);
      await until('quorum back', () => etcd('ctl', 'endpoint', 'health').status === 0, 20_000);
      const t0 = Date.now();
      const code = await new Promise<number | null>((r) => (adding.exitCode !== null ? r(adding.exitCode) : adding.once('exit', r)));
      expect(code).toBe(0);
      alpha = [...alpha, 'alpha-extra-3'];
      await until('the pod added without quorum known to every pod', () => meshComplete(), 5000 + 60_000);
      const after = Date.now() - t0;
      console.log(`etcd fault: pod added without quorum known everywhere ${after} ms after quorum was back`);
      expect(after).toBeLessThan(5000);
      expect(curl('alpha-extra-3', 'http://web/')).toBe(`alpha-web-1 got: ${marker}`);
    });
  }, 120_000);

  it('3. node3 partitioned: its pods keep talking encrypted among themselves; after the heal its agent catches up', async () => {
    const node3 = Netns.attach(`${PREFIX}-n-node3`);
    serve('alpha-extra-3', 8080);
    await noPlaintext(async () => {
      const br = await startCapture(node3, 'br0');
      sh('ip', ['netns', 'exec', node3.name, 'nft', '-f', '-'], [
        'table inet tenc_partition {',
        '  chain i {',
        '    type filter hook input priority -300; policy accept;',
        '    iifname "ul0" drop',
        '  }',
        '  chain o {',
        '    type filter hook output priority -300; policy accept;',
        '    oifname "ul0" drop',
        '  }',
        '}',
        '',
      ].join('\n'));
      const t0 = Date.now();
      try {
        // the majority side changes meanwhile: a pod removed on node2, one added on node1
        expect(cluster('remove-pod', 'alpha-extra-1').status).toBe(0);
        expect(addPod('alpha-extra-4', 'node1', '10.128.1.40').status).toBe(0);
        // node3's keys vanish for the others once its lease expires
        const gone = await until('node3 pods dropped by node1', async () => {
          const s = await podStatus('alpha-web-1');
          const k3 = await podStatus('alpha-client-3');
          return s && k3 && !s.peers.some((p) => p.publicKey === k3.publicKey);
        }, (TTL + 10) * 1000);
        console.log(`etcd partition: node3's keys gone from node1's pods ${Date.now() - t0} ms after the partition (lease TTL ${TTL} s)`);
        expect(gone.elapsed).toBeLessThan((TTL + 5) * 1000 + 5000);
        // on node3: still talking, encrypted, to the peer it knows
        const r = curl('alpha-client-3', 'http://10.128.3.20:8080/');
        expect(r).toBe(`alpha-extra-3 got: ${marker}`);
      } finally {
        await br.stop();
        node3.exec('nft', 'delete', 'table', 'inet', 'tenc_partition');
      }
      const inner = br.read(['host 10.128.3.10 and host 10.128.3.20']);
      expect(inner.filter((l) => !/\.51820 > .*\.51820: UDP/.test(l) && !/ARP/.test(l))).toEqual([]);
      expect(readCaptureBytes(br).includes(Buffer.from(marker))).toBe(false);
      br.remove();
      const healed = Date.now();
      alpha = alpha.filter((p) => p !== 'alpha-extra-1').concat('alpha-extra-4');
      await until('every pod with every other again (no missed pod, no stale peer)', () => meshComplete(), 30_000);
      console.log(`etcd partition: caught up ${Date.now() - healed} ms after the heal`);
      expect(etcdPeerKeys()).toEqual(['node1/alpha-client-1', 'node1/alpha-extra-4', 'node1/alpha-web-1', 'node2/alpha-db-1', 'node3/alpha-client-3', 'node3/alpha-extra-3']);
    });
  }, 90_000);

  it('4. kill -9 an agent: its keys vanish within TTL + 5 s; restarted, it adopts and publishes again', async () => {
    await noPlaintext(async () => {
      const before = (await podStatus('alpha-db-1'))!.publicKey;
      const pid = Number(readFileSync(join(STATE, 'agents', 'alpha-node2.pid'), 'utf8'));
      process.kill(pid, 'SIGKILL');
      const gone = await until('node2 keys gone from etcd and from the other pods', async () => {
        if (etcdPeerKeys().some((k) => k.startsWith('node2/'))) return false;
        const s = await podStatus('alpha-web-1');
        return s && !s.peers.some((p) => p.publicKey === before);
      }, (TTL + 5) * 1000);
      console.log(`etcd agent kill: keys gone from etcd and the other pods in ${gone.elapsed} ms (TTL ${TTL} s)`);
      expect(cluster('agent-start', 'alpha').status).toBe(0);
      const back = await until('the restarted agent to publish again', () => meshComplete(), 20_000);
      console.log(`etcd agent kill: mesh complete ${back.elapsed} ms after the restart`);
      expect((await podStatus('alpha-db-1'))!.publicKey).toBe(before); // adopted, not restarted
      expect(curl('alpha-client-1', 'http://db:5432/')).toBe(`alpha-db-1 got: ${marker}`);
    });
  }, 60_000);

  it('5. the history compacted under the watches: the next pod is known within 5 s', async () => {
    await noPlaintext(async () => {
      const st = etcd('ctl', 'endpoint', 'status', '-w', 'json');
      const rev = /"revision":(\d+)/.exec(st.stdout)![1];
      expect(etcd('ctl', 'compaction', '--physical', rev).status).toBe(0);
      expect(addPod('alpha-extra-5', 'node2', '10.128.2.50').status).toBe(0);
      alpha = [...alpha, 'alpha-extra-5'];
      const t = await until('the pod known everywhere', () => meshComplete(), 5000);
      console.log(`etcd compaction: pod known everywhere in ${t.elapsed} ms`);
      expect(curl('alpha-extra-5', 'http://web/')).toBe(`alpha-web-1 got: ${marker}`);
    });
  }, 30_000);

  it('6. down: members stopped, data and namespaces gone', () => {
    expect(cluster('down').status).toBe(0);
    expect(existsSync(STATE)).toBe(false);
    expect(spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout).not.toContain(PREFIX);
    expect(spawnSync('pgrep', ['-f', `etcd --name .*tenc-${PREFIX}|${STATE}/etcd`], { encoding: 'utf8' }).stdout).toBe('');
  });
});
