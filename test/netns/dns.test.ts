/**
 * The DNS proxy in a real pod (issue 4 acceptance). Topology: a private copy of
 * netns-scripts/pods.sh (PODS_PREFIX), dnsmasq as the cluster DNS in the bridge
 * namespace, pod a of project alpha with tenc + DNS proxy, pod b (alpha) with tenc
 * and an HTTP server, a "beta" HTTP server on the bridge address:
 *
 *  +-------------------------------+                 +----------------------------+
 *  | <P>-a  10.77.0.1, fd00:77::1  |                 | <P>-b  10.77.0.2 fd00:77::2|
 *  |  resolv.conf: 10.77.0.254,    |                 |  tenc pod                  |
 *  |   search alpha.svc.cluster... |                 |  http :80 "alpha-marker"   |
 *  |  tenc pod + dns proxy         |                 +-------------|--------------+
 *  |  (nft: port 53 -> 127.0.0.1)  |                               |
 *  +--------------|----------------+                               |
 *  +--------------|--------------------- br0 ----------------------|--------------+
 *  | <P>-br  10.77.0.254: dnsmasq (cluster DNS), http :80 "beta-marker"           |
 *  +------------------------------------------------------------------------------+
 *
 * dnsmasq records: web.alpha -> VIP 10.96.0.20 / fd00:96::20 (endpoints: pod b),
 * api.alpha -> VIP 10.96.0.21 (no endpoints), web.beta -> 10.77.0.254,
 * www.example.org -> 10.77.0.254, big.example (TXT > 512 bytes), evil.alpha -> CNAME
 * x.evil.test -> 10.77.0.66 (a tampered answer; the "attacker" HTTP server on br0), TTL 2 s; the rest
 * of alpha.svc.cluster.local is local (NXDOMAIN); fail.example goes nowhere.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  control,
  httpServer,
  Netns,
  prepare,
  projectDir,
  readCaptureBytes,
  snapshot,
  spawnHelper,
  startCapture,
  startPod,
  stopAllPods,
  stopHelpers,
  tenc,
  Topology,
  waitFor,
  writeConfig,
  type NetSnapshot,
  type PodProc,
} from './lib.js';

const PREFIX = `tdns${process.pid % 100000}`;
let topo: Topology;
let a: Netns;
let b: Netns;
let br: Netns;
let dir: string;
let dnsmasq: ChildProcess | null = null;
const BIG = Array.from({ length: 8 }, (_, i) => `"${String(i).repeat(200)}"`).join(',');

function startDnsmasq(): ChildProcess {
  const c = spawnHelper(br, 'dnsmasq', [
    '--conf-file=/dev/null',
    '--no-resolv',
    '--no-hosts',
    '--keep-in-foreground',
    '--pid-file=',
    '--listen-address=10.77.0.254',
    '--listen-address=fd00:77::fe',
    '--bind-interfaces',
    '--local-ttl=2',
    '--local=/alpha.svc.cluster.local/',
    '--address=/web.alpha.svc.cluster.local/10.96.0.20',
    '--address=/web.alpha.svc.cluster.local/fd00:96::20',
    '--address=/api.alpha.svc.cluster.local/10.96.0.21',
    '--address=/web.beta.svc.cluster.local/10.77.0.254',
    '--host-record=www.example.org,10.77.0.254',
    `--txt-record=big.example,${BIG}`,
    '--server=/fail.example/127.0.0.1#9',
    '--ptr-record=21.0.96.10.in-addr.arpa,api.alpha.svc.cluster.local',
    // a tampered answer (issue 19.1): a project name CNAMEd to an outside name at the attacker's address
    '--host-record=x.evil.test,10.77.0.66',
    '--cname=evil.alpha.svc.cluster.local,x.evil.test',
    '--ptr-record=254.0.77.10.in-addr.arpa,web.beta.svc.cluster.local',
  ]);
  return c;
}

function dig(ns: Netns, ...args: string[]): string {
  return ns.tryExec('dig', '+tries=1', '+timeout=3', ...args).stdout;
}

function answerSection(out: string): string[] {
  const i = out.indexOf(';; ANSWER SECTION:');
  if (i < 0) return [];
  return out.slice(i).split('\n').slice(1).filter((l) => l.trim() !== '' && !l.startsWith(';;'));
}

function dnsCounters(): Record<string, any> {
  return JSON.parse(tenc(a, 'status', '--json')).dns.counters;
}


let podA: PodProc;
let podB: PodProc;
let beforeA: NetSnapshot;

beforeAll(async () => {
  prepare(['nft', 'dnsmasq', 'dig', 'curl']);
  topo = Topology.up(PREFIX);
  a = topo.ns('a');
  b = topo.ns('b');
  br = topo.ns('br');
  // `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf: the pod's resolv.conf
  mkdirSync(`/etc/netns/${a.name}`, { recursive: true });
  writeFileSync(`/etc/netns/${a.name}/resolv.conf`, 'nameserver 10.77.0.254\nsearch alpha.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n');
  dir = projectDir('dns');
  writeConfig(dir, 'a', {
    addresses: ['10.77.0.1', 'fd00:77::1'],
    pskFile: 'psk',
    dns: {
      maxTtl: 2,
      routeGrace: 1,
      upstreamTimeout: 500,
      neverTunnelCidrs: ['10.96.9.0/24'],
      endpoints: [
        { vip: '10.96.0.20', addresses: ['10.77.0.2'] },
        { vip: 'fd00:96::20', addresses: ['fd00:77::2'] },
      ],
    },
  });
  writeConfig(dir, 'b', { addresses: ['10.77.0.2', 'fd00:77::2'], pskFile: 'psk' });
  dnsmasq = startDnsmasq();
  httpServer(b, 'alpha-marker-7f3a', '10.77.0.2');
  httpServer(br, 'beta-marker-51c9', '10.77.0.254');
  beforeA = snapshot(a);
  podA = await startPod(a, join(dir, 'a.json'));
  podB = await startPod(b, join(dir, 'b.json'));
  tenc(a, 'set-peer', podB.publicKey, '--endpoint', '10.77.0.2:51820', '--allowed-ips', '10.77.0.2/32,fd00:77::2/128');
  tenc(b, 'set-peer', podA.publicKey, '--endpoint', '10.77.0.1:51820', '--allowed-ips', '10.77.0.1/32,fd00:77::1/128');
}, 120_000);

afterAll(async () => {
  await Promise.all([stopAllPods(), stopHelpers()]);
  topo?.down();
  rmSync(`/etc/netns/${PREFIX}-a`, { recursive: true, force: true });
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('dns proxy in a pod of project alpha', () => {
  it('interception is an nftables table of its own', () => {
    const rules = a.exec('nft', 'list', 'ruleset');
    expect(rules).toContain('table inet tenc_dns_tenc0');
    expect(rules).toMatch(/ip daddr 10\.77\.0\.254 udp dport 53 redirect to :15353/);
    expect(tenc(a, 'status')).toContain('  dns: alpha.svc.cluster.local via 10.77.0.254:53, proxy port 15353\n');
  });

  it('an alpha service resolves to its endpoint pod; beta and external names are upstream answers unchanged', () => {
    expect(answerSection(dig(a, 'web.alpha.svc.cluster.local'))).toEqual([expect.stringMatching(/^web\.alpha\.svc\.cluster\.local\.\s+[0-2]\s+IN\s+A\s+10\.77\.0\.2$/)]);
    for (const name of ['web.beta.svc.cluster.local', 'www.example.org']) {
      const viaProxy = answerSection(dig(a, name));
      const direct = answerSection(dig(br, '@10.77.0.254', name)); // dnsmasq asked without the proxy
      expect(viaProxy.length).toBe(1);
      expect(viaProxy).toEqual(direct);
    }
    // the search list works through the proxy too (resolv.conf untouched)
    expect(dig(a, '+search', '+short', 'web')).toBe('10.77.0.2\n');
  });

  it('AAAA, TCP, NXDOMAIN, REFUSED, SERVFAIL', () => {
    expect(dig(a, '+short', 'AAAA', 'web.alpha.svc.cluster.local')).toBe('fd00:77::2\n');
    expect(dig(a, '+tcp', '+short', 'web.alpha.svc.cluster.local')).toBe('10.77.0.2\n');
    expect(dig(a, '+tcp', '+short', 'web.beta.svc.cluster.local')).toBe('10.77.0.254\n');
    expect(dig(a, 'nope.alpha.svc.cluster.local')).toContain('status: NXDOMAIN');
    expect(dig(a, 'not.configured.test')).toContain('status: REFUSED'); // dnsmasq has no server for it
    const t0 = Date.now();
    expect(dig(a, 'x.fail.example')).toContain('status: SERVFAIL'); // dnsmasq never answers: the proxy does
    expect(Date.now() - t0).toBeLessThan(2500);
  });

  it('truncation: a big answer comes back TC over UDP and whole over TCP (dig retries by itself)', () => {
    const udp = dig(a, '+noedns', '+ignore', 'TXT', 'big.example');
    expect(udp).toMatch(/flags: qr aa tc/);
    const full = answerSection(dig(a, '+noedns', 'TXT', 'big.example'));
    expect(full.length).toBe(1);
    for (let i = 0; i < 8; i++) expect(full[0]).toContain(String(i).repeat(200));
  });

  it('HTTP by name: alpha through tenc0 (ciphertext on the wire), beta in plaintext outside tenc0', async () => {
    const wire = await startCapture(br, 'br0');
    const tun = await startCapture(a, 'tenc0');
    let alpha: string;
    let beta: string;
    try {
      alpha = a.exec('curl', '-sS', '--max-time', '5', 'http://web.alpha.svc.cluster.local/');
      beta = a.exec('curl', '-sS', '--max-time', '5', 'http://web.beta.svc.cluster.local/');
    } finally {
      await wire.stop();
      await tun.stop();
    }
    expect(alpha).toBe('alpha-marker-7f3a');
    expect(beta).toBe('beta-marker-51c9');
    const wireBytes = readCaptureBytes(wire).toString('latin1');
    const tunBytes = readCaptureBytes(tun).toString('latin1');
    expect(wireBytes).not.toContain('alpha-marker-7f3a'); // only ciphertext between the pods
    expect(wireBytes).toContain('beta-marker-51c9'); // beta is not the project's: in the clear
    expect(tunBytes).toContain('alpha-marker-7f3a');
    expect(tunBytes).not.toContain('beta-marker-51c9');
    const wireLines = wire.read();
    expect(wireLines.some((l) => /10\.77\.0\.1\.51820 > 10\.77\.0\.2\.51820: UDP/.test(l))).toBe(true);
    expect(wireLines.some((l) => /10\.77\.0\.2\.80 /.test(l) || /> 10\.77\.0\.2\.80:/.test(l))).toBe(false);
    expect(tun.read().some((l) => /> 10\.77\.0\.2\.80:/.test(l))).toBe(true);
    wire.remove();
    tun.remove();
  });

  it('routes follow TTLs: a VIP learned from DNS is routed into tenc0 and leaves after TTL + grace', async () => {
    const table = () => a.ip('-4', 'route', 'show', 'table', '52100');
    expect(table()).not.toContain('10.96.0.21');
    expect(dig(a, '+short', 'api.alpha.svc.cluster.local')).toBe('10.96.0.21\n'); // no endpoints known: the VIP stays
    expect(table()).toMatch(/10\.96\.0\.21 dev tenc0/); // in place when the answer arrived
    expect(a.ip('route', 'get', '10.96.0.21')).toContain('dev tenc0');
    // TTL 2 s + grace 1 s, expiry checked every 250 ms; the unreachable guard stays (behaviour change,
    // issue 19.1): a client still using the cached address fails closed instead of leaving in plaintext
    expect(await waitFor(() => !/^10\.96\.0\.21 dev tenc0/m.test(table()), 6000)).toBe(true);
    expect(table()).toMatch(/^unreachable 10\.96\.0\.21 /m);
    expect(a.tryExec('ip', 'route', 'get', '10.96.0.21').stderr).toMatch(/No route to host|unreachable/i);
    expect(table()).toContain('10.77.0.2 dev tenc0'); // the peer's own route is untouched
    // beta's answer never entered the table
    expect(table()).not.toContain('10.77.0.254');
  });

  it('a tampered answer (a project name CNAMEd to an attacker address): routed into tenc0 and dropped; no plaintext packet reaches the address, during the TTL or after (issue 19.1)', async () => {
    br.exec('ip', 'addr', 'add', '10.77.0.66/24', 'dev', 'br0');
    const evil = httpServer(br, 'evil-marker-0d1e', '10.77.0.66');
    await new Promise<void>((r) => evil.stdout!.once('data', () => r()));
    const table = () => a.ip('-4', 'route', 'show', 'table', '52100');
    const wire = await startCapture(br, 'br0');
    let first: ReturnType<Netns['tryExec']>;
    let later: ReturnType<Netns['tryExec']>;
    try {
      expect(dig(a, '+short', 'evil.alpha.svc.cluster.local')).toBe('x.evil.test.\n10.77.0.66\n');
      expect(a.ip('route', 'get', '10.77.0.66')).toContain('dev tenc0');
      first = a.tryExec('curl', '-sS', '--max-time', '2', 'http://evil.alpha.svc.cluster.local/');
      expect(await waitFor(() => !/^10\.77\.0\.66 dev tenc0/m.test(table()), 8000)).toBe(true); // TTL 2 + grace 1
      later = a.tryExec('curl', '-sS', '--max-time', '2', '--resolve', 'evil.alpha.svc.cluster.local:80:10.77.0.66', 'http://evil.alpha.svc.cluster.local/'); // the cached address
    } finally {
      await wire.stop();
      evil.kill('SIGTERM');
      br.tryExec('ip', 'addr', 'del', '10.77.0.66/24', 'dev', 'br0');
    }
    expect(first.stdout).not.toContain('evil-marker');
    expect(first.status).not.toBe(0);
    expect(later.stdout).not.toContain('evil-marker');
    expect(later.stderr).toMatch(/No route to host|Couldn't connect|timed out/i);
    const lines = wire.read();
    expect(lines.some((l) => /10\.77\.0\.1\.\d+ > 10\.77\.0\.66\./.test(l))).toBe(false); // nothing from pod a to it
    expect(readCaptureBytes(wire).toString('latin1')).not.toContain('evil-marker');
    wire.remove();
  });

  it('grace: a learned route stays while the peer behind it still sends, and leaves once it stops', async () => {
    const table = () => a.ip('-4', 'route', 'show', 'table', '52100');
    // peer b also carries 10.96.0.0/24: traffic to the VIP moves b's transmit counter
    tenc(a, 'set-peer', podB.publicKey, '--allowed-ips', '10.77.0.2/32,fd00:77::2/128,10.96.0.0/24');
    try {
      expect(dig(a, '+short', 'api.alpha.svc.cluster.local')).toBe('10.96.0.21\n');
      expect(table()).toMatch(/^10\.96\.0\.21 dev tenc0/m);
      const ping = spawnHelper(a, 'ping', ['-i', '0.2', '-w', '6', '10.96.0.21']); // a flow that keeps sending
      await new Promise((r) => setTimeout(r, 5000)); // well past TTL 2 s + grace 1 s
      expect(table()).toMatch(/^10\.96\.0\.21 dev tenc0/m);
      await new Promise((r) => ping.once('exit', r));
      expect(await waitFor(() => !/^10\.96\.0\.21 /m.test(table()), 4000)).toBe(true);
      expect(table()).toMatch(/^10\.96\.0\.0\/24 dev tenc0/m); // the peer's own route stays
    } finally {
      tenc(a, 'set-peer', podB.publicKey, '--allowed-ips', '10.77.0.2/32,fd00:77::2/128');
    }
  });

  it('upstream down and back: SERVFAIL promptly, then answers again', async () => {
    dnsmasq!.kill('SIGTERM');
    await new Promise((r) => dnsmasq!.once('exit', r));
    const t0 = Date.now();
    expect(dig(a, 'web.beta.svc.cluster.local')).toContain('status: SERVFAIL');
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(dig(a, '+tcp', 'web.beta.svc.cluster.local')).toContain('status: SERVFAIL');
    dnsmasq = startDnsmasq();
    expect(await waitFor(() => dig(a, '+short', 'web.alpha.svc.cluster.local') === '10.77.0.2\n', 5000)).toBe(true);
    expect(dig(a, '+tcp', '+short', 'web.beta.svc.cluster.local')).toBe('10.77.0.254\n');
  });

  it('10,000 malformed queries: counted, the proxy stays up and answers correctly afterwards', () => {
    const rcvbufErrors = () => Number(/Udp: (?:\S+ ){4}(\d+)/.exec(a.exec('cat', '/proc/net/snmp').split('\n').filter((l) => l.startsWith('Udp:'))[1])?.[1] ?? NaN);
    const kernelBefore = rcvbufErrors();
    const before = dnsCounters();
    const js = `
      const s = require('dgram').createSocket('udp4');
      let seed = 12345; const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0);
      const msgs = [];
      for (let i = 0; i < 10000; i++) {
        const kind = i % 4;
        let b;
        if (kind === 0) { b = Buffer.alloc(rnd() % 12); }                      // shorter than a header
        else if (kind === 1) { b = Buffer.alloc(12 + rnd() % 300); for (let j = 0; j < b.length; j++) b[j] = rnd() & 255; b[2] &= 0x07; b[4] = 0; b[5] = 1; } // a query header, junk question
        else if (kind === 2) { b = Buffer.from([i >> 8, i & 255, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]); } // a compression loop
        else { b = Buffer.from([i >> 8, i & 255, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 97, 98, 99, 0, 0xff, 0xfe, 0, 1, 0, 9]); } // unknown type, truncated trailer
        msgs.push(b);
      }
      let i = 0;
      // paced (50 per 5 ms) so that most reach the proxy rather than overflow its socket buffer
      const burst = () => { if (i >= msgs.length) return s.close(); let n = 0; const one = () => { if (++n > 50 || i >= msgs.length) return setTimeout(burst, 5); s.send(msgs[i++], 53, '10.77.0.254', one); }; one(); };
      burst();`;
    a.exec('node', '-e', js);
    expect(podA.child.exitCode).toBeNull();
    expect(dig(a, '+short', 'web.alpha.svc.cluster.local')).toBe('10.77.0.2\n');
    expect(dig(a, '+tcp', '+short', 'web.beta.svc.cluster.local')).toBe('10.77.0.254\n');
    const after = dnsCounters();
    // every datagram is accounted for: seen by the proxy, or dropped by the kernel on a full socket buffer
    const seen = after.queriesUdp - before.queriesUdp;
    const kernel = rcvbufErrors() - kernelBefore;
    expect(seen + kernel).toBeGreaterThanOrEqual(10000);
    expect(seen).toBeGreaterThan(2000); // the rest, if any, overflowed the socket buffer (bounded memory)
    const dropped = (k: string) => (after.drops[k] ?? 0) - (before.drops[k] ?? 0);
    expect(dropped('short')).toBeGreaterThan(0);
    expect(dropped('malformed')).toBeGreaterThan(0);
    expect(dropped('short') + dropped('malformed')).toBeGreaterThanOrEqual(Math.floor(seen * 0.4)); // kinds 0 and 2 are half of what was sent
  });

  it('a query of the pod\'s from a port the proxy\'s upstream used before is still redirected (the upstream flows have their own conntrack zone)', async () => {
    const upstreamPorts = () =>
      new Set([...a.exec('ss', '-Hnua').matchAll(/:(\d+)\s+10\.77\.0\.254:53\b/g)].map((m) => Number(m[1])));
    const port = [...upstreamPorts()][0];
    expect(port, 'an upstream socket of the proxy').toBeGreaterThan(0);
    // names of the project domain the proxy has not seen: each goes upstream (dnsmasq: NXDOMAIN),
    // so the proxy's pool rotates (a port every 8 queries) until that port is closed
    const names = join(dir, 'rotate.txt');
    writeFileSync(names, Array.from({ length: 400 }, (_, i) => `r${i}-${Date.now()}.alpha.svc.cluster.local`).join('\n') + '\n');
    for (let i = 0; i < 5 && upstreamPorts().has(port); i++) a.tryExec('dig', '+tries=1', '+timeout=2', '+short', '-f', names);
    expect(upstreamPorts().has(port), `port ${port} still open after the rotation`).toBe(false);
    // its conntrack entry (upstream answers seen) outlives the socket; a query of the pod's from
    // the same port must still be redirected to the proxy (rewritten), not reach dnsmasq (the VIP)
    expect(dig(a, '-b', `10.77.0.1#${port}`, '+short', 'web.alpha.svc.cluster.local')).toBe('10.77.0.2\n');
  });

  it('addresses not learned through DNS: member, PTR into the project domain, never-tunnel CIDR, other', () => {
    const verdict = (address: string) => control(a, { id: 1, op: 'classify-address', address }).result;
    expect(verdict('10.77.0.2')).toEqual({ verdict: 'project', reason: 'member' }); // peer b's allowed IP
    expect(verdict('10.96.0.20')).toEqual({ verdict: 'project', reason: 'member' }); // a VIP with endpoints
    expect(verdict('10.96.0.21')).toEqual({ verdict: 'project', reason: 'reverse' }); // PTR api.alpha.svc.cluster.local
    expect(verdict('10.77.0.254')).toEqual({ verdict: 'other', reason: 'none' }); // PTR web.beta.svc.cluster.local
    expect(verdict('10.96.9.1')).toEqual({ verdict: 'never', reason: 'never-cidr' });
    expect(control(a, { id: 2, op: 'classify-address', address: '10.0.0.300' }).error?.code).toBe('EINVAL');
  });

  it('set-endpoints at run time: the answers carry the new endpoints', async () => {
    const r = control(a, { id: 3, op: 'set-endpoints', endpoints: [{ vip: '10.96.0.20', addresses: ['10.77.0.2', '10.77.0.3'] }] });
    expect(r.ok).toBe(true);
    // polled for up to 3 s: one CI run (of many) saw the VIP alone in the first answer after
    // the change, not explained yet (README "Known limits"); a change that never
    // reaches the answers still fails here
    const got: string[] = [];
    const t0 = Date.now();
    for (;;) {
      got.push(dig(a, '+short', 'web.alpha.svc.cluster.local').split('\n').filter(Boolean).sort().join(','));
      if (got[got.length - 1] === '10.77.0.2,10.77.0.3' || Date.now() - t0 > 3000) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    if (got.length > 1) console.log(`set-endpoints: answers until the new endpoints: ${got.join(' | ')}`);
    expect(got[got.length - 1]).toBe('10.77.0.2,10.77.0.3');
    expect(control(a, { id: 4, op: 'set-endpoints', endpoints: [] }).ok).toBe(true);
    expect(dig(a, '+short', 'web.alpha.svc.cluster.local')).toBe('10.96.0.20\n'); // no endpoints known: the VIP stays
  });

  it('a crash leaves the redirect; the next start removes it first, with or without the proxy', async () => {
    podA.child.kill('SIGKILL');
    await podA.exit;
    expect(a.exec('nft', 'list', 'ruleset')).toContain('table inet tenc_dns_tenc0');
    expect(dig(a, '+short', 'web.alpha.svc.cluster.local')).toMatch(/connection refused|timed out/); // redirected to a closed port
    writeFileSync(join(dir, 'a-nodns.json'), JSON.stringify({ addresses: ['10.77.0.1', 'fd00:77::1'], pskFile: 'psk' }));
    const plain = await startPod(a, join(dir, 'a-nodns.json'));
    expect(a.exec('nft', 'list', 'ruleset')).not.toContain('tenc_dns');
    expect(dig(a, '+short', 'web.alpha.svc.cluster.local')).toBe('10.96.0.20\n'); // dnsmasq itself, nothing rewritten
    plain.child.kill('SIGTERM');
    expect(await plain.exit).toBe(0);
    podA = await startPod(a, join(dir, 'a.json')); // with the proxy again, for the clean stop below
    expect(dig(a, '+short', 'web.alpha.svc.cluster.local')).toBe('10.77.0.2\n');
  });

  it('a clean stop removes the interception and the learned routes: the pod namespace is as before', async () => {
    podA.child.kill('SIGTERM');
    expect(await podA.exit).toBe(0);
    const after = snapshot(a);
    for (const k of Object.keys(beforeA) as (keyof NetSnapshot)[]) expect(after[k], `snapshot field ${k}`).toBe(beforeA[k]);
    expect(after.nft).not.toContain('tenc_dns');
    podB.child.kill('SIGTERM');
    expect(await podB.exit).toBe(0);
  });

  it('an IPv6 cluster DNS: the redirect and the proxy on ::1, UDP and TCP', async () => {
    writeFileSync(`/etc/netns/${a.name}/resolv.conf`, 'nameserver fd00:77::fe\nsearch alpha.svc.cluster.local svc.cluster.local cluster.local\n');
    const before = snapshot(a);
    const pod = await startPod(a, join(dir, 'a.json'));
    try {
      const rules = a.exec('nft', 'list', 'ruleset');
      expect(rules).toMatch(/ip6 daddr fd00:77::fe udp dport 53 redirect to :15353/);
      // no IPv4 redirect: the interception table only (the enforcement table has ip daddr rules of its own)
      expect(a.exec('nft', 'list', 'table', 'inet', 'tenc_dns_tenc0')).not.toMatch(/ip daddr/);
      expect(dig(a, '+short', 'web.alpha.svc.cluster.local')).toBe('10.77.0.2\n');
      expect(dig(a, '+tcp', '+short', 'AAAA', 'web.alpha.svc.cluster.local')).toBe('fd00:77::2\n');
      expect(answerSection(dig(a, 'web.beta.svc.cluster.local'))).toEqual(answerSection(dig(br, '@fd00:77::fe', 'web.beta.svc.cluster.local')));
    } finally {
      pod.child.kill('SIGTERM');
      expect(await pod.exit).toBe(0);
    }
    const after = snapshot(a);
    for (const k of Object.keys(before) as (keyof NetSnapshot)[]) expect(after[k], `snapshot field ${k}`).toBe(before[k]);
  });
});
