/**
 * Availability and secrecy of a `tenc pod` under attack (issues 18 and 19.3). Real pods:
 *
 *   [fl-a] 10.77.0.1 (victim)   [fl-b] 10.77.0.2 (legitimate peer)   [fl-x] 10.77.0.50 + 10.77.0.100..163
 *          \__________________________ br0 [fl-br] ______________________/    (attacker)
 *
 *  1. Handshake flood: x sends initiations with a VALID mac1 (it knows a's public key, as
 *     any peer does) and no mac2, from 64 source addresses, bounded (rate x seconds),
 *     while b keeps a TCP flow (iperf3) to a and re-handshakes (`tenc rekey`) in the
 *     middle of it. a must go under load, answer with cookie replies, refuse the excess
 *     per source in C (handshake_ratelimited) and the rest in the control plane
 *     (bad_mac2), keep b's flow moving every second, complete b's re-handshake (with the
 *     cookie, as WireGuard specifies), and keep its memory bounded. Speed and CPU against
 *     wireguard-go: `npm run bench -- flood`, not here.
 *  2. Secrets never leave the process: the pod is non-dumpable, so a SIGABRT with core
 *     dumps enabled (RLIMIT_CORE unlimited, core_pattern into a temporary directory,
 *     restored afterwards) leaves no core file; a dumpable control process under the
 *     same settings does leave one, with its marker secret in it (the check can fail).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Netns } from './lib.js';
import {
  pairUp,
  pingUntil,
  POD_ADDR,
  prepare,
  projectDir,
  root,
  rssKiB,
  startPod,
  status,
  tearDown,
  tenc,
  Topology,
  waitFor,
  writeConfig,
  type PodProc,
} from './lib.js';

const PORT = 51820;
const A = POD_ADDR(1);
const B = POD_ADDR(2);
const floodTool = join(root, 'test', 'netns', 'flood-tool.mjs');
const SOURCES = Array.from({ length: 64 }, (_, i) => `10.77.0.${100 + i}`);
const FLOOD_RATE = 4000; // a second, over all sources
const FLOOD_SECONDS = 10;

let topo: Topology;
let a: Netns;
let b: Netns;
let x: Netns;
let dir: string;
let podA: PodProc;
let podB: PodProc;

function cpuTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return Number(rest[11]) + Number(rest[12]); // utime + stime
}

beforeAll(async () => {
  prepare(['iperf3', 'prlimit']);
  topo = Topology.up(`fl${process.pid % 100000}`);
  a = topo.ns('a');
  b = topo.ns('b');
  x = topo.addPod('x', 50);
  for (const s of SOURCES) x.ip('addr', 'add', `${s}/24`, 'dev', 'eth0');
  dir = projectDir('flood');
  const configA = writeConfig(dir, 'a', { addresses: [A.v4, A.v6], pskFile: 'psk', listenPort: PORT });
  const configB = writeConfig(dir, 'b', { addresses: [B.v4, B.v6], pskFile: 'psk', listenPort: PORT });
  [podA, podB] = await Promise.all([startPod(a, configA), startPod(b, configB)]);
  pairUp(a, podA, 1, b, podB, 2, PORT);
}, 120_000);

afterAll(() => tearDown(topo, dir));

describe('handshake flood with a valid mac1 from 64 addresses', () => {
  it('b keeps its TCP flow and completes a re-handshake; a refuses the excess, counted; memory bounded', async () => {
    expect(pingUntil(b, A.v4, 8)).toBe(true);
    const peerA = () => status(b).peers.find((p) => p.publicKey === podA.publicKey)!;
    const hs0 = peerA().latestHandshake!;
    expect(hs0).toBeGreaterThan(0);
    const rss0 = rssKiB(podA.pid);
    const cpu0 = cpuTicks(podA.pid);

    const server = a.spawn('iperf3', ['-s', '-1', '-B', A.v4, '-p', '5201'], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 500));
    const seconds = FLOOD_SECONDS + 4;
    let iperfOut = '';
    const client = b.spawn('iperf3', ['-c', A.v4, '-p', '5201', '-t', String(seconds), '-b', '20M', '-i', '1', '--json']);
    client.stdout!.setEncoding('utf8').on('data', (d: string) => (iperfOut += d));
    const clientDone = new Promise<number | null>((r) => client.on('exit', r));

    await new Promise((r) => setTimeout(r, 1000));
    let floodOut = '';
    const flood = spawn('ip', ['netns', 'exec', x.name, 'node', floodTool, A.v4, String(PORT), podA.publicKey, String(FLOOD_RATE), String(FLOOD_SECONDS), SOURCES.join(',')]);
    flood.stdout!.setEncoding('utf8').on('data', (d: string) => (floodOut += d));
    const floodDone = new Promise<number | null>((r) => flood.on('exit', r));

    // the flood is on: b starts a new handshake in the middle of it
    await new Promise((r) => setTimeout(r, 2000));
    const rekeyAt = Date.now();
    tenc(b, 'rekey', podA.publicKey);
    // WireGuard under load: a answers b's initiation with a cookie reply; b's retransmission
    // (REKEY_TIMEOUT, 5 s later) carries mac2 with that cookie and is served. The bound
    // allows b three tries (0, 5 and 10 s, each with up to 1/3 s of jitter) and a loaded
    // machine's delay on the last: once in a loaded full run the first two missed and 12 s
    // was too short (not explained yet: README "Known limits"). How long it took is logged.
    const rehandshake = await waitFor(() => (peerA().latestHandshake ?? 0) >= rekeyAt, 20_000, 250);
    const rehandshakeMs = Date.now() - rekeyAt;
    const rssPeak = rssKiB(podA.pid);

    expect(await floodDone).toBe(0);
    expect(await clientDone).toBe(0);
    server.kill();
    const cpu1 = cpuTicks(podA.pid);
    const fl = JSON.parse(floodOut.trim().split('\n').pop()!) as { sent: number; errors: number; cookieReplies: number; seconds: number };
    const ip = JSON.parse(iperfOut) as { intervals: { sum: { bytes: number } }[]; end: { sum_received?: { bytes: number } } };
    const perSecond = ip.intervals.map((i) => i.sum.bytes);
    const st = status(a);
    console.log(
      `flood: sent ${fl.sent} in ${fl.seconds} s (${Math.round(fl.sent / fl.seconds)}/s), ${fl.cookieReplies} cookie replies; ` +
        `a: ratelimited ${st.drops.handshake_ratelimited ?? 0}, queue_full ${st.drops.handshake_queue_full ?? 0}, ` +
        `bad_mac2 ${st.handshakeFailures.bad_mac2 ?? 0}; cpu ${((cpu1 - cpu0) / 100).toFixed(2)} s; ` +
        `rss ${rss0} -> ${rssPeak} KiB; iperf bytes/s ${perSecond.join(',')}; re-handshake ${rehandshake} after ${rehandshakeMs} ms; ` +
        `b: ${JSON.stringify(status(b).handshakeFailures)}`,
    );

    expect(fl.sent).toBe(FLOOD_RATE * FLOOD_SECONDS);
    // the flood reached a and was refused: per source in C, and by mac2 (cookie replies) in the control plane
    expect(st.drops.handshake_ratelimited ?? 0).toBeGreaterThan(fl.sent / 2);
    expect(st.handshakeFailures.bad_mac2 ?? 0).toBeGreaterThan(0);
    expect(fl.cookieReplies).toBeGreaterThan(0);
    // nothing of the flood got past mac1 as a peer: it never becomes a session
    expect(st.handshakeFailures.unknown_peer ?? 0).toBe(0);
    // b's re-handshake completed during the flood, and its flow moved every second
    expect(rehandshake).toBe(true);
    expect(perSecond.length).toBeGreaterThanOrEqual(seconds - 1);
    expect(perSecond.every((n) => n > 0)).toBe(true);
    // memory bounded: the handshake queue and the rate-limit table are fixed-size
    expect(rssPeak - rss0).toBeLessThan(64 * 1024);
    expect(pingUntil(b, A.v4, 3)).toBe(true);
  }, 60_000);
});

describe('secrets never leave the process', () => {
  it('a pod is non-dumpable: SIGABRT with core dumps on leaves no core file (a dumpable control process does)', async () => {
    const cores = mkdtempSync(join(tmpdir(), 'tenc-cores-'));
    const pattern = readFileSync('/proc/sys/kernel/core_pattern', 'utf8').trim();
    const suid = readFileSync('/proc/sys/fs/suid_dumpable', 'utf8').trim();
    // suid_dumpable 0: a non-dumpable process never dumps (1 or 2 would dump it, root-only)
    expect(suid).toBe('0');
    try {
      writeFileSync('/proc/sys/kernel/core_pattern', `${cores}/core.%p`);
      // control: a dumpable node process holding a marker, same limits and pattern
      const secret = `TENC-CORE-MARKER-${process.pid}-${Date.now()}`;
      const ctl = a.spawn('node', ['-e', `globalThis.s = ${JSON.stringify(secret)}.split('').join(''); setInterval(() => {}, 1000); console.log('up')`]);
      await new Promise((r) => ctl.stdout!.once('data', r));
      expect(spawnSync('prlimit', ['--pid', String(ctl.pid), '--core=unlimited:unlimited']).status).toBe(0);
      ctl.kill('SIGABRT');
      await new Promise((r) => ctl.on('exit', r));
      expect(await waitFor(() => existsSync(join(cores, `core.${ctl.pid}`)), 10_000)).toBe(true);
      await new Promise((r) => setTimeout(r, 500)); // the dump is written in full
      expect(readFileSync(join(cores, `core.${ctl.pid}`)).includes(Buffer.from(secret))).toBe(true);

      // the pod, with a live session (keys in its memory)
      expect(pingUntil(b, A.v4, 5)).toBe(true);
      expect(spawnSync('prlimit', ['--pid', String(podA.pid), '--core=unlimited:unlimited']).status).toBe(0);
      podA.child.kill('SIGABRT');
      await podA.exit;
      await new Promise((r) => setTimeout(r, 1500));
      expect(readdirSync(cores).filter((f) => f === `core.${podA.pid}`)).toEqual([]);
    } finally {
      writeFileSync('/proc/sys/kernel/core_pattern', pattern);
      rmSync(cores, { recursive: true, force: true });
    }
    expect(readFileSync('/proc/sys/kernel/core_pattern', 'utf8').trim()).toBe(pattern);
  }, 60_000);
});
