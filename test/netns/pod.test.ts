/**
 * The pod lifecycle (src/control/pod.ts) in a real namespace, with a fake engine
 * that owns a TUN device like the real one (it appears on open and goes on close):
 *
 *   [ ns "pod" ]  eth0 10.77.0.1/24 ---veth--- eth0 10.77.0.2/24  [ ns "peer" ]
 *
 *  1. start: public-key line first on stdout, routes and rules in, control socket
 *     answers; set-peer / remove-peer change routes at run time; stop: the
 *     namespace equals its snapshot from before, the socket file is gone
 *  2. a failing step during start undoes the earlier ones (exit 1) but leaves the
 *     rule and unreachable guards (fail closed, said on stderr); the next start
 *     adopts them and its clean stop leaves the snapshot equal; failClosedOnStop
 *  3. no secret in the logs
 */
import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { destroyAll, Netns, requireRoot, requireTool, snapshot, vethPair, type NetSnapshot } from './lib.js';
import { IpCommand } from '../../src/routing/ip.js';
import { runPod, type Pod } from '../../src/control/pod.js';
import { validateConfig, type PeerConfig, type PodConfig } from '../../src/control/config.js';
import { controlRequest } from '../../src/control/socket.js';
import type { EngineOpener, PodEngine } from '../../src/control/engine.js';
import type { StatusReport } from '../../src/control/status.js';
import { createLogger } from '../../src/log.js';

// RFC 7748 §6.1 public keys of Alice and Bob, base64
const ALICE_PUB = Buffer.from('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a', 'hex').toString('base64');
const BOB_PUB = Buffer.from('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f', 'hex').toString('base64');
const PSK = Buffer.alloc(32, 0x5a).toString('base64');

let pod: Netns;
let dir: string;

beforeAll(() => {
  requireRoot();
  requireTool('ip');
  [pod] = vethPair('pod', 'peer', ['10.77.0.1/24'], ['10.77.0.2/24']);
  pod.ip('route', 'add', 'default', 'via', '10.77.0.2');
  dir = mkdtempSync(join(tmpdir(), 'tenc-pod-'));
  writeFileSync(join(dir, 'psk'), PSK + '\n', { mode: 0o600 });
});

afterAll(() => {
  destroyAll();
  rmSync(dir, { recursive: true, force: true });
});

function config(extra: Record<string, unknown> = {}): PodConfig {
  return validateConfig(
    {
      addresses: ['10.77.0.1'],
      pskFile: 'psk',
      peers: [{ publicKey: ALICE_PUB, endpoint: '10.77.0.2:51820', allowedIps: ['10.77.0.2/32', '10.96.0.0/24'] }],
      services: [{ vip: '10.96.1.10', ports: [{ protocol: 'tcp', port: 80 }] }],
      controlSocket: join(dir, 'run', 'tenc0.sock'),
      ...extra,
    },
    join(dir, 'pod.json'),
  );
}

/** An engine that records calls and owns a TUN named like the config's interface. */
class FakeEngine implements PodEngine {
  readonly description = 'fake';
  readonly peers = new Map<string, PeerConfig>();
  closed = false;
  psk: Uint8Array | null = null;
  constructor(private readonly ifname: string) {
    pod.ip('tuntap', 'add', 'dev', ifname, 'mode', 'tun');
  }
  setPeer(p: PeerConfig): void {
    this.peers.set(p.publicKey, p);
  }
  removePeer(k: string): boolean {
    return this.peers.delete(k);
  }
  setServices(): void {}
  peerStatuses() {
    return new Map([...this.peers.keys()].map((k) => [k, { endpoint: null, latestHandshake: 1, rxBytes: 10, txBytes: 20, drops: {} }]));
  }
  drops() {
    return {};
  }
  handshakeFailures() {
    return { bad_mac1: 1 };
  }
  async close(): Promise<void> {
    this.closed = true;
    pod.ip('link', 'del', 'dev', this.ifname);
  }
}

function devFor(dst: string): string {
  return JSON.parse(pod.ip('-j', 'route', 'get', dst))[0].dev;
}

/** Project destinations of config(): unreachable, never out of eth0 in the clear. */
function expectFailClosed(): void {
  for (const dst of ['10.77.0.2', '10.96.0.9', '10.96.1.10']) {
    expect(() => pod.ip('route', 'get', dst), dst).toThrow(/unreachable|No route to host/);
  }
  expect(devFor('10.50.0.1')).toBe('eth0');
}

/** Runs a pod that stops as soon as it is ready; returns its exit code. */
async function startStop(cfg: PodConfig): Promise<number> {
  let stop!: () => void;
  const stopSignal = new Promise<void>((r) => (stop = r));
  return runPod(cfg, {
    stdout: () => {},
    log: createLogger({ level: 'silent' }),
    openEngine: async (o) => new FakeEngine(o.config.interface),
    ip: new IpCommand({ netns: pod.name }),
    stopSignal,
    onReady: () => stop(),
  });
}

/** Runs a failing start, returning its exit code and what it wrote to stderr. */
async function failingStart(run: () => Promise<number>): Promise<{ code: number; stderr: string }> {
  let stderr = '';
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((t) => ((stderr += String(t)), true));
  try {
    return { code: await run(), stderr };
  } finally {
    spy.mockRestore();
  }
}

function expectSame(after: NetSnapshot, before: NetSnapshot): void {
  for (const k of Object.keys(before) as (keyof NetSnapshot)[]) expect(after[k], `snapshot field ${k}`).toBe(before[k]);
}

describe('pod lifecycle', () => {
  it('starts, serves the control socket, changes routes at run time, and stops leaving nothing behind', async () => {
    const before = snapshot(pod);
    let engine: FakeEngine | undefined;
    const open: EngineOpener = async (o) => {
      expect(Buffer.from(o.psk).toString('base64')).toBe(PSK);
      expect(o.mtu).toBe(1440); // veth 1500 - 60 (IPv4 underlay)
      engine = new FakeEngine(o.config.interface);
      return engine;
    };
    let out = '';
    const logs = new PassThrough();
    let logText = '';
    logs.on('data', (d) => (logText += d));
    let stop!: () => void;
    const stopSignal = new Promise<void>((r) => (stop = r));
    let ready!: (p: Pod) => void;
    const readyP = new Promise<Pod>((r) => (ready = r));
    const cfg = config();
    const done = runPod(cfg, {
      stdout: (t) => (out += t),
      log: createLogger({ level: 'debug', destination: logs }),
      openEngine: open,
      ip: new IpCommand({ netns: pod.name }),
      stopSignal,
      onReady: ready,
    });
    await Promise.race([readyP, done.then((c) => Promise.reject(new Error(`pod exited ${c}`)))]);
    try {
      await checkRunningPod();
    } finally {
      stop();
    }
    expect(await done).toBe(0);
    expect(engine!.closed).toBe(true);
    expect(existsSync(cfg.controlSocket!)).toBe(false);
    expectSame(snapshot(pod), before);

    const publicKey = out.split('\n')[0].split(' ')[1];
    expect(logText).toContain(publicKey);
    expect(logText).not.toContain(PSK);
    expect(logText).not.toContain(ALICE_PUB); // peers appear as fingerprints only

    async function checkRunningPod(): Promise<void> {

    expect(out).toMatch(/^public-key [A-Za-z0-9+/]{43}=\n/);
    const publicKey = out.split('\n')[0].split(' ')[1];
    expect(devFor('10.77.0.2')).toBe('tenc0');
    expect(devFor('10.96.0.7')).toBe('tenc0');
    expect(devFor('10.96.1.10')).toBe('tenc0');
    expect(devFor('10.96.1.11')).toBe('eth0');
    expect(engine!.peers.has(ALICE_PUB)).toBe(true);

    const sock = cfg.controlSocket!;
    const st = (await controlRequest(sock, { op: 'status' })) as StatusReport;
    expect(st).toMatchObject({ interface: 'tenc0', publicKey, mtu: 1440, listenPort: 51820, dataPlane: 'fake' });
    // the engine knows no endpoint yet: the configured one is shown
    expect(st.peers[0]).toMatchObject({ publicKey: ALICE_PUB, endpoint: '10.77.0.2:51820', allowedIps: ['10.77.0.2/32', '10.96.0.0/24'], rxBytes: 10 });
    expect(st.handshakeFailures).toEqual({ bad_mac1: 1 });
    expect(JSON.stringify(st)).not.toContain(PSK);

    await controlRequest(sock, { op: 'set-peer', peer: { publicKey: BOB_PUB, allowedIps: ['10.50.0.0/16'] } });
    expect(devFor('10.50.1.1')).toBe('tenc0');
    // update Alice: one allowed IP dropped, one kept
    await controlRequest(sock, { op: 'set-peer', peer: { publicKey: ALICE_PUB, endpoint: '10.77.0.2:51820', allowedIps: ['10.77.0.2/32'] } });
    expect(devFor('10.96.0.7')).toBe('eth0');
    expect(devFor('10.77.0.2')).toBe('tenc0');
    // an update without endpoint/allowedIps keeps them (wg set semantics)
    await controlRequest(sock, { op: 'set-peer', peer: { publicKey: ALICE_PUB, persistentKeepalive: 25 } });
    expect(engine!.peers.get(ALICE_PUB)).toEqual({
      publicKey: ALICE_PUB,
      endpoint: { address: '10.77.0.2', port: 51820 },
      allowedIps: ['10.77.0.2/32'],
      persistentKeepalive: 25,
    });
    // a clash with another peer's allowed IP is refused, nothing changes
    await expect(controlRequest(sock, { op: 'set-peer', peer: { publicKey: BOB_PUB, allowedIps: ['10.77.0.2/32'] } })).rejects.toThrow(/already claimed/);
    expect(devFor('10.50.1.1')).toBe('tenc0');
    await controlRequest(sock, { op: 'remove-peer', publicKey: BOB_PUB });
    expect(devFor('10.50.1.1')).toBe('eth0');
    expect(engine!.peers.has(BOB_PUB)).toBe(false);
    await controlRequest(sock, { op: 'set-services', services: [{ vip: '10.96.1.20', ports: [] }] });
    expect(devFor('10.96.1.10')).toBe('eth0');
    expect(devFor('10.96.1.20')).toBe('tenc0');
    // extra destinations share routes with peers: removing the extra keeps the peer's route
    const p = await readyP;
    await p.addDestinations(['10.60.0.0/24', '10.77.0.2/32']);
    expect(devFor('10.60.0.9')).toBe('tenc0');
    await p.removeDestination('10.77.0.2/32');
    expect(devFor('10.77.0.2')).toBe('tenc0');
    await p.removeDestination('10.60.0.0/24');
    // a removed learned destination keeps its unreachable guard (issue 19 item 1: a
    // client may still use the cached answer, so it must not fall back to the main
    // table in plaintext); the stop removes it with the other guards
    expect(() => pod.ip('route', 'get', '10.60.0.9')).toThrow(/unreachable|No route to host/);
    }
  });

  it('a failing control socket undoes routing and the engine: exit 1, fail closed; the next start and stop restore the namespace', async () => {
    const before = snapshot(pod);
    const blocker = join(dir, 'blocker');
    mkdirSync(blocker, { recursive: true }); // a directory where the socket should go
    let engine: FakeEngine | undefined;
    const { code, stderr } = await failingStart(() =>
      runPod(config({ controlSocket: blocker }), {
        stdout: () => {},
        log: createLogger({ level: 'silent' }),
        openEngine: async (o) => (engine = new FakeEngine(o.config.interface)),
        ip: new IpCommand({ netns: pod.name }),
        stopSignal: new Promise(() => {}),
      }),
    );
    expect(code).toBe(1);
    expect(engine!.closed).toBe(true);
    expect(stderr).toMatch(/control socket: .*fail closed/);
    expectFailClosed();
    expect(await startStop(config())).toBe(0);
    expectSame(snapshot(pod), before);
  });

  it('failClosedOnStop: a clean stop keeps the rule and guards; without it a stop removes everything', async () => {
    const before = snapshot(pod);
    expect(await startStop(config({ failClosedOnStop: true }))).toBe(0);
    expectFailClosed();
    expect(await startStop(config())).toBe(0);
    expectSame(snapshot(pod), before);
  });

  // each start switch at its non-default value: the same lifecycle (residue adopted, fail closed, namespace restored)
  for (const [name, what] of [
    ['TENC_START_CONCURRENT', 'the start steps one after another, as before'],
    ['TENC_START_SNAPSHOT', 'each start step dumps for itself, as before'],
    ['TENC_FAST_SPAWN', "ip and nft through node's spawn, as before"],
  ] as const) {
    it(`${name}=0 (${what}): residue adopted and removed the same, fail closed, namespace restored`, async () => {
      const before = snapshot(pod);
      vi.stubEnv(name, '0');
      try {
        expect(await startStop(config({ failClosedOnStop: true }))).toBe(0);
        expectFailClosed();
        expect(await startStop(config())).toBe(0);
      } finally {
        vi.unstubAllEnvs();
      }
      expectSame(snapshot(pod), before);
    });
  }

  it('a second pod on the same control socket refuses to start and touches nothing', async () => {
    let ready!: () => void;
    const readyP = new Promise<void>((r) => (ready = r));
    let stop!: () => void;
    const first = runPod(config(), {
      stdout: () => {},
      log: createLogger({ level: 'silent' }),
      openEngine: async (o) => new FakeEngine(o.config.interface),
      ip: new IpCommand({ netns: pod.name }),
      stopSignal: new Promise<void>((r) => (stop = r)),
      onReady: () => ready(),
    });
    await readyP;
    try {
      const during = snapshot(pod);
      let out = '';
      let opened = false;
      const code = await runPod(config(), {
        stdout: (t) => (out += t),
        log: createLogger({ level: 'silent' }),
        openEngine: async () => {
          opened = true;
          throw new Error('must not be reached');
        },
        ip: new IpCommand({ netns: pod.name }),
        stopSignal: new Promise(() => {}),
      });
      expect(code).toBe(1);
      expect(opened).toBe(false);
      expect(out).toBe('');
      expectSame(snapshot(pod), during); // the first pod's rules and routes are intact
    } finally {
      stop();
    }
    expect(await first).toBe(0);
  });

  it('restart fail-open: an engine that cannot open: exit 1, only the rule and guards installed (fail closed)', async () => {
    const before = snapshot(pod);
    const { code, stderr } = await failingStart(() =>
      runPod(config(), {
        stdout: () => {},
        log: createLogger({ level: 'silent' }),
        openEngine: async () => {
          throw new Error('data plane not available: test');
        },
        ip: new IpCommand({ netns: pod.name }),
        stopSignal: new Promise(() => {}),
      }),
    );
    expect(code).toBe(1);
    expect(stderr).toMatch(/data plane: data plane not available: test \(fail closed: .*unreachable/);
    expectFailClosed();
    expect(pod.ip('link', 'show')).not.toContain('tenc0');
    expect(await startStop(config())).toBe(0);
    expectSame(snapshot(pod), before);
  });
});
