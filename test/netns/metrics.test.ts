/**
 * `tenc pod --metrics-address` (a pod where no agent runs) and `tenc agent status`,
 * scraped directly (the real Prometheus, iperf3 and the attack through the node
 * agents of the local cluster are in metrics-cluster.test.ts):
 *
 *   [ ns "a": tenc pod (enforce), /metrics on 127.0.0.1:9586 ]
 *        eth0 10.79.0.1/24 ---veth--- eth0 10.79.0.2/24
 *   [ ns "b": tenc pod; the "attacker" sends with tenc's fwmark ]
 *
 *  1. ping a -> b: between two scrapes a's tenc_peer_sent_bytes_total and b's
 *     peer's handshake appear and grow; tenc_peers_live is 1
 *  2. plaintext from b's address that bypasses b's tunnel (ping -m FWMARK): a's
 *     tenc_drops_total{reason="plaintext_from_project"} counts it; junk UDP to a's
 *     port: a drop reason from the engine appears too
 *  3. `promtool check metrics` over a scrape passes; the scrape holds neither the
 *     psk (base64, hex) nor either pod's public key (base64, hex)
 *  4. the test dir as an agent run directory: `tenc agent status --json` lists both
 *     pods (pid, fingerprint, live peer, drops, fail-closed), and as a table
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { main, Netns, projectDir, requireRoot, requireTool, startPod, tearDown, tenc, vethPair, type PodProc } from './lib.js';
import { ensureBuilt } from '../build.js';
import { keyFingerprint } from '../../src/log.js';

let a: Netns;
let b: Netns;
let dir: string;
let podA: PodProc;
let podB: PodProc;
const FWMARK = 0xcb84;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const scrape = () => a.exec('curl', '-sf', 'http://127.0.0.1:9586/metrics');

/** Every series of a metric in a scrape: labels text -> value. */
function series(text: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const l of text.split('\n')) if (l.startsWith(name + '{')) out.set(l.slice(name.length, l.lastIndexOf(' ')), Number(l.slice(l.lastIndexOf(' ') + 1)));
  return out;
}

/** Scrapes until `ok` holds for the text (bounded: 10 s). */
async function scrapeUntil(what: string, ok: (text: string) => boolean): Promise<string> {
  let text = '';
  for (let i = 0; i < 40; i++) {
    text = scrape();
    if (ok(text)) return text;
    await sleep(250);
  }
  throw new Error(`no scrape with ${what}:\n${text}`);
}

beforeAll(async () => {
  requireRoot();
  for (const t of ['ip', 'curl', 'promtool', 'ping', 'python3']) requireTool(t);
  ensureBuilt();
  [a, b] = vethPair('a', 'b', ['10.79.0.1/24'], ['10.79.0.2/24']);
  dir = projectDir('metrics');
  // dir doubles as an agent run directory: <pod>.json naming each pod's control socket
  writeFileSync(join(dir, 'a.json'), JSON.stringify({ addresses: ['10.79.0.1'], pskFile: 'psk', enforce: true, controlSocket: join(dir, 'a.sock') }));
  writeFileSync(join(dir, 'b.json'), JSON.stringify({ addresses: ['10.79.0.2'], pskFile: 'psk', controlSocket: join(dir, 'b.sock') }));
  podA = await startPod(a, join(dir, 'a.json'), ['--metrics-address', '127.0.0.1:9586']);
  podB = await startPod(b, join(dir, 'b.json'));
  tenc(b, 'set-peer', podA.publicKey, '--endpoint', '10.79.0.1:51820', '--allowed-ips', '10.79.0.1/32', '--socket', join(dir, 'b.sock'));
  tenc(a, 'set-peer', podB.publicKey, '--endpoint', '10.79.0.2:51820', '--allowed-ips', '10.79.0.2/32', '--socket', join(dir, 'a.sock'));
}, 60_000);

afterAll(() => tearDown(undefined, dir));

describe('tenc pod --metrics-address', () => {
  it('1. bytes appear and grow with traffic; the handshake and the live session show', async () => {
    expect(a.tryExec('ping', '-c', '1', '-W', '2', '10.79.0.2').status).toBe(0);
    const fp = keyFingerprint(podB.publicKey);
    // the pod's series: namespace "" and pod = the host name (no TENC_POD_* here), b's key as a fingerprint
    const sent = (t: string) => [...series(t, 'tenc_peer_sent_bytes_total')].find(([l]) => l.endsWith(`,peer="${fp}"}`))?.[1] ?? 0;
    const first = await scrapeUntil('sent bytes', (t) => sent(t) > 0);
    expect(a.tryExec('ping', '-c', '3', '-i', '0.2', '-s', '1000', '10.79.0.2').status).toBe(0);
    // three 1000-byte pings more, each at least 1000 bytes on the wire
    const second = await scrapeUntil('more sent bytes', (t) => sent(t) >= sent(first) + 3000);
    expect(sent(second) - sent(first)).toBeLessThan(3 * 1200 + 1000);
    expect([...series(second, 'tenc_peer_received_bytes_total').values()][0]).toBeGreaterThan(3000);
    expect([...series(second, 'tenc_peer_latest_handshake_seconds').values()][0]).toBeGreaterThan(Date.now() / 1000 - 60);
    expect([...series(second, 'tenc_peers_live').values()]).toEqual([1]);
    expect([...series(second, 'tenc_pod_up').values()]).toEqual([1]);
  });

  it('2. an attack shows up as drops by reason', async () => {
    // plaintext from b's address, marked so that it bypasses b's tunnel
    b.tryExec('ping', '-c', '5', '-i', '0.2', '-W', '1', '-m', String(FWMARK), '10.79.0.1');
    const plain = (t: string) => [...series(t, 'tenc_drops_total')].find(([l]) => l.includes('reason="plaintext_from_project"'))?.[1] ?? 0;
    const t1 = await scrapeUntil('plaintext_from_project drops', (t) => plain(t) >= 5);
    expect([...series(t1, 'tenc_plaintext_from_project_total').values()][0]).toBeGreaterThanOrEqual(5);
    // junk to a's WireGuard port: the engine counts it under a reason of its own
    b.exec('python3', '-c', `import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.SOL_SOCKET,36,${FWMARK})\nfor i in range(20): s.sendto(b'\\x07junk'*8,('10.79.0.1',51820))`);
    const other = (t: string) => [...series(t, 'tenc_drops_total')].filter(([l]) => !l.includes('reason="plaintext_from_project"')).reduce((n, [, v]) => n + v, 0);
    await scrapeUntil('an engine drop reason', (t) => other(t) >= 20);
  });

  it('3. a scrape passes promtool and holds no secret and no full key', () => {
    const text = scrape();
    const r = a.tryExec('sh', '-c', `curl -sf http://127.0.0.1:9586/metrics | promtool check metrics`);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout + r.stderr).toBe('');
    expect(text).toContain('tenc_peer_sent_bytes_total{');
    expect(text).toMatch(/^process_resident_memory_bytes \d+/m);
    const psk = readFileSync(join(dir, 'psk'), 'utf8').trim();
    for (const k of [psk, podA.publicKey, podB.publicKey]) {
      const raw = Buffer.from(k, 'base64');
      expect(raw.length).toBe(32);
      for (const form of [k, raw.toString('hex'), raw.toString('base64url'), k.slice(0, 16), raw.toString('hex').slice(0, 24)]) expect(text).not.toContain(form);
    }
  });

  it('4. tenc agent status over a run directory', async () => {
    const st = spawnSync('node', [main, 'agent', 'status', '--run-dir', dir, '--json'], { encoding: 'utf8', timeout: 20_000 });
    expect(st.status, st.stderr).toBe(0);
    const rows = (JSON.parse(st.stdout) as { pods: { pod: string; pid: number; fingerprint: string; livePeers: number; drops: number; failClosed: boolean }[] }).pods;
    expect(rows.map((r) => r.pod)).toEqual(['a', 'b']);
    expect(rows[0]).toMatchObject({ pid: podA.pid, fingerprint: keyFingerprint(podA.publicKey), livePeers: 1, failClosed: true });
    expect(rows[0].drops).toBeGreaterThanOrEqual(5);
    expect(rows[1]).toMatchObject({ pid: podB.pid, failClosed: false });
    const table = spawnSync('node', [main, 'agent', 'status', '--run-dir', dir], { encoding: 'utf8', timeout: 20_000 }).stdout;
    expect(table).toMatch(new RegExp(`\\sa\\s+${podA.pid}\\s+\\S+\\s+1\\s+1\\s+(.*ago|Now)\\s+\\d+\\s+yes`));
  });
});
