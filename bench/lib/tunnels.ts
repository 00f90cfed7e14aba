/**
 * The tunnels bench/iperf.ts compares, each set up between the two pod namespaces of
 * netns-scripts/pods.sh (pod a 10.77.0.1 is the client, pod b 10.77.0.2 the server):
 *
 *   plain   no tunnel: straight over the veths and the bridge
 *   wg-deb  Debian's wireguard-go 0.0.20220316 (/usr/bin/wireguard-go)
 *   wg-bpo  wireguard-go 0.0.20231211 with TUN/UDP offloads (bookworm-backports,
 *           fetched by netns-scripts/wggo-backports.sh)
 *   tenc    one `tenc pod` per namespace; keys exchanged with `tenc set-peer`
 *   tenc-host (--pod-host) both pods in one `tenc pod --host` process, each in its
 *           namespace: what the agent runs for a project's pods on one node
 *
 * wireguard-go runs in the foreground (-f) under `ip netns exec`, with an interface name
 * unique to the instance (its UAPI socket /var/run/wireguard/NAME.sock is shared by all
 * namespaces), is configured with `wg set`, and gets an inner address 10.88.N.x/24.
 * tenc's inner addresses are the pods' own: policy routing sends 10.77.0.2 into tenc0.
 * Keys live in the bench's private directory (mode 0700, files 0600) and go with it.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readLines } from '../../src/cli/host.js';
import { readPublicKeyLine } from '../../src/control/keyline.js';
import { stopChild, type Children } from './procs.js';

export interface TunnelEnv {
  /** Client and server pod namespaces. */
  nsA: string;
  nsB: string;
  /** The pods' eth0 addresses. */
  addrA: string;
  addrB: string;
  /** Private directory (0700) for keys and configs. */
  dir: string;
  children: Children;
}

export interface TunnelUp {
  /** Address of pod b that pod a reaches through the tunnel. */
  dst: string;
  /** The tunnel's user-space processes (CPU and memory are measured on them). */
  pids: number[];
  /** Version of the implementation. */
  version: string;
  /** Extra facts (data plane, MTU). */
  description: string;
  /** Pod b's (the server's) WireGuard public key and UDP port, for benches that attack it. */
  server?: { publicKey: string; port: number; pid: number };
}

export interface Tunnel {
  id: string;
  label: string;
  up(env: TunnelEnv): Promise<TunnelUp>;
  /** Stops what up() started, even after a failed up(); returns problems seen on the way. */
  down(): Promise<string[]>;
  /** Last lines the tunnel's processes wrote on stderr (for failure reports). */
  stderrTail(): string[];
  /** Which of the tunnel's processes has ended, and how; undefined while all run. */
  died(): string | undefined;
}

type Proc = { child: ChildProcess; tail: () => string[]; ns: string };

function endedOf(name: string, procs: Proc[]): string | undefined {
  const p = procs.find((x) => x.child.exitCode !== null || x.child.signalCode !== null);
  if (!p) return undefined;
  const how = p.child.signalCode ? `killed by ${p.child.signalCode}` : `exited ${p.child.exitCode}`;
  // the last lines that are not routine (pino info/debug/trace) records
  const last = p.tail().filter((l) => !/"level":("(info|debug|trace)"|[123]0)[,}]/.test(l)).slice(-3);
  return `${name} in ${p.ns} ${how}${last.length ? `: ${last.join(' / ')}` : ''}`;
}

/** Collects a process's stderr, keeping the last lines. */
function tailOf(child: ChildProcess, keep = 40): () => string[] {
  let text = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    text += d;
    if (text.length > 64 * 1024) text = text.slice(-32 * 1024);
  });
  return () =>
    text
      .split('\n')
      .filter((l) => l.trim() !== '')
      .slice(-keep)
      .map((l) => (l.length > 400 ? l.slice(0, 400) + '...' : l));
}

export class PlainTunnel implements Tunnel {
  readonly id = 'plain';
  readonly label = 'plain (no tunnel)';

  async up(env: TunnelEnv): Promise<TunnelUp> {
    return { dst: env.addrB, pids: [], version: 'kernel', description: process.env.TOPOLOGY === 'veth' ? 'one veth pair, MTU 1500' : 'veth + bridge, MTU 1500' };
  }

  async down(): Promise<string[]> {
    return [];
  }

  stderrTail(): string[] {
    return [];
  }

  died(): string | undefined {
    return undefined;
  }
}

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const TENC_MAIN = join(REPO, 'dist', 'src', 'cli', 'main.js');

export interface TencOptions {
  id?: string;
  label?: string;
  /** Extra environment of the pod processes (e.g. TENC_TX_BATCH_KB for an A/B run). */
  env?: Record<string, string>;
  /** Dummy peers configured in both pods besides the real one (no endpoint; allowed IPs 10.100.x.y/32). */
  extraPeers?: number;
  /**
   * TencPolicy exempt policies installed in both pods (control op set-policy): policy i
   * exempts tcp/9100+i of the other pod (ports the bench traffic never uses), so the
   * measured traffic stays protected and meets their ip rules and nft accepts.
   */
  policies?: number;
  /** Both pods in one `tenc pod --host` process (as the agent runs a project's pods on a node) instead of a process each. */
  podHost?: boolean;
}

/** The key of a data-path switch in a pod's status `switches` (TENC_BUSY_POLL_US -> busyPollUs). */
export function engineSwitchKey(name: string): string {
  return name
    .replace(/^TENC_/, '')
    .toLowerCase()
    .replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** `NAME=VALUE` of a column's environment, with the value pod a's engine runs when it is a switch the engine reports (engine_js.c's; not TENC_AEAD or TENC_CSUM). */
export function envNote(name: string, value: string, switches: Record<string, number> | undefined): string {
  const key = engineSwitchKey(name);
  return switches && Object.hasOwn(switches, key) ? `${name}=${value} (engine: ${key} ${switches[key]})` : `${name}=${value}`;
}

/** The lines a child prints on stdout, each handed to the first waiter that takes it (or kept for the next). */
export function stdoutLines(child: ChildProcess): (take: (line: string) => boolean, ms: number, what: string) => Promise<string> {
  const kept: string[] = [];
  const waiters: { take: (line: string) => boolean; done: (line: string) => void }[] = [];
  // 'close', not 'exit': the exit can come before the last lines; a closed child's lines are all read
  let closed = false;
  child.once('close', () => (closed = true));
  const offer = (line: string): void => {
    const i = waiters.findIndex((w) => w.take(line));
    if (i < 0) kept.push(line);
    else waiters.splice(i, 1)[0]!.done(line);
  };
  // an overlong line is no line the bench waits for: a wait for it ends at its deadline
  readLines(child.stdout!, offer, () => undefined, () => undefined);
  return (take, ms, what) => {
    const i = kept.findIndex(take);
    if (i >= 0) return Promise.resolve(kept.splice(i, 1)[0]!);
    const gone = (): string => `${what}: the pod host exited (${child.signalCode ?? child.exitCode})`;
    if (closed) return Promise.reject(new Error(gone()));
    return new Promise((resolve, reject) => {
      const w = {
        take,
        done: (line: string) => {
          clearTimeout(timer);
          child.off('close', onClose);
          resolve(line);
        },
      };
      const fail = (message: string): void => {
        const j = waiters.indexOf(w);
        if (j >= 0) waiters.splice(j, 1);
        child.off('close', onClose);
        reject(new Error(message));
      };
      const timer = setTimeout(() => fail(`${what}: nothing within ${ms} ms`), ms);
      const onClose = (): void => {
        clearTimeout(timer);
        fail(gone());
      };
      child.once('close', onClose);
      waiters.push(w);
    });
  };
}

/** `n` exempt policies on the peer's address, tcp 9100.. (never the iperf3 ports 5201..). */
export function benchPolicies(n: number, peer: string, local: boolean): unknown[] {
  if (!Number.isInteger(n) || n < 0 || n > 256) throw new RangeError(`policies must be 0..256, got ${n}`);
  return Array.from({ length: n }, (_, i) => ({
    name: `bench-${i}`,
    mode: 'exempt',
    target: 'pods bench',
    addresses: [`${peer}/32`],
    ports: [{ protocol: 'tcp', port: 9100 + i, endPort: 9100 + i }],
    local,
  }));
}

/** `n` dummy peers for a pod config file: random public keys, one /32 each in 10.100.0.0/16. */
export function dummyPeers(n: number): { publicKey: string; allowedIps: string[] }[] {
  if (!Number.isInteger(n) || n < 0 || n > 65000) throw new RangeError(`dummy peers must be 0..65000, got ${n}`);
  return Array.from({ length: n }, (_, i) => ({
    publicKey: randomBytes(32).toString('base64'),
    allowedIps: [`10.100.${(i + 1) >> 8}.${(i + 1) & 255}/32`],
  }));
}

export class TencTunnel implements Tunnel {
  readonly id: string;
  readonly label: string;
  private pods: Proc[] = [];

  constructor(private readonly opts: TencOptions = {}) {
    this.id = opts.id ?? 'tenc';
    this.label = opts.label ?? 'tenc';
  }

  async up(env: TunnelEnv): Promise<TunnelUp> {
    const { children } = env;
    if (!existsSync(TENC_MAIN)) throw new Error(`${TENC_MAIN} not built (npm run build)`);
    const node = process.execPath;
    const tenc = (ns: string, ...args: string[]): Promise<string> => children.check('ip', ['netns', 'exec', ns, node, TENC_MAIN, ...args], { timeoutMs: 15_000 });
    const psk = join(env.dir, 'tenc-psk');
    writeFileSync(psk, await children.check(node, [TENC_MAIN, 'genpsk']), { mode: 0o600 });
    const port = 51820;
    // --pod-host: one `tenc pod --host` runs both pods, each in its namespace (the agent's default on a node)
    let hostLine: ReturnType<typeof stdoutLines> | undefined;
    let hostProc: Proc | undefined;
    if (this.opts.podHost) {
      const host = children.spawn(node, [TENC_MAIN, 'pod', '--host'], this.opts.env, { stdin: true });
      const tail = tailOf(host);
      host.stdin!.on('error', () => undefined); // a host that died: its exit fails the wait for its line
      hostProc = { child: host, tail, ns: 'the pod host' };
      this.pods.push(hostProc);
      hostLine = stdoutLines(host);
      await hostLine((l) => l === 'host ready', 15_000, 'tenc pod --host: its ready line').catch((err: Error) => {
        throw new Error(`${err.message}${tail().length ? `: ${tail().slice(-3).join(' / ')}` : ''}`);
      });
    }
    const start = async (ns: string, addr: string, name: string): Promise<string> => {
      const config = join(env.dir, `tenc-${name}.json`);
      const peers = dummyPeers(this.opts.extraPeers ?? 0);
      writeFileSync(config, JSON.stringify({ addresses: [addr], pskFile: psk, listenPort: port, ...(peers.length ? { peers } : {}) }), { mode: 0o600 });
      if (hostLine && hostProc) {
        const host = hostProc;
        host.child.stdin!.write(JSON.stringify({ netns: `/run/netns/${ns}`, config }) + '\n');
        // this pod's key or exit, or the host's answer to a line it could not take (no "pod")
        const mine = (l: string): boolean => {
          try {
            const o = JSON.parse(l) as { pod?: string; error?: string } | null;
            return o !== null && (o.pod === config || (o.pod === undefined && typeof o.error === 'string'));
          } catch {
            return false;
          }
        };
        const line = JSON.parse(await hostLine(mine, 15_000, `tenc pod --host: pod ${ns}`)) as { publicKey?: string; exited?: number; error?: string };
        if (typeof line.publicKey !== 'string') throw new Error(`tenc pod --host: pod ${ns} ${line.exited !== undefined ? `exited ${line.exited}` : 'refused'}${line.error ? `: ${line.error}` : ''}: ${host.tail().slice(-3).join(' / ')}`);
        return line.publicKey;
      }
      const child = children.spawn('ip', ['netns', 'exec', ns, node, TENC_MAIN, 'pod', '--config', config], this.opts.env);
      const tail = tailOf(child);
      this.pods.push({ child, tail, ns });
      const key = await readPublicKeyLine(child, 15_000);
      if (key instanceof Error) throw new Error(`tenc pod in ${ns}: ${key.message}${tail().length ? `: ${tail().slice(-3).join(' / ')}` : ''}`);
      return key;
    };
    const keyA = await start(env.nsA, env.addrA, 'a');
    const keyB = await start(env.nsB, env.addrB, 'b');
    // the control socket serves after the public-key line: wait for an answer
    const status = async (ns: string): Promise<Record<string, any>> => {
      const end = performance.now() + 10_000;
      for (;;) {
        try {
          return JSON.parse(await tenc(ns, 'status', '--json'));
        } catch (err) {
          const dead = this.pods.find((p) => p.child.exitCode !== null || p.child.signalCode !== null);
          if (dead) throw new Error(`tenc pod in ${dead.ns} exited ${dead.child.exitCode ?? dead.child.signalCode}: ${dead.tail().slice(-3).join(' / ')}`);
          if (performance.now() > end) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    };
    await status(env.nsA);
    await status(env.nsB);
    await tenc(env.nsA, 'set-peer', keyB, '--endpoint', `${env.addrB}:${port}`, '--allowed-ips', `${env.addrB}/32`);
    await tenc(env.nsB, 'set-peer', keyA, '--endpoint', `${env.addrA}:${port}`, '--allowed-ips', `${env.addrA}/32`);
    if (this.opts.policies) {
      // as the agent sends them: the client side exempts the server's ports, the server serves them
      const sock = join(REPO, 'dist', 'src', 'control', 'socket.js');
      const send = (ns: string, policies: unknown[]) =>
        children.check('ip', ['netns', 'exec', ns, node, '--input-type=module', '-e',
          `import { controlRequest, defaultSocketPath } from ${JSON.stringify(sock)}; await controlRequest(defaultSocketPath('tenc0'), { op: 'set-policy', policies: ${JSON.stringify(policies)} });`], { timeoutMs: 15_000 });
      await send(env.nsA, benchPolicies(this.opts.policies, env.addrB, false));
      await send(env.nsB, benchPolicies(this.opts.policies, env.addrB, true));
    }
    const st = await status(env.nsA);
    const version = await tencVersion(children);
    const extra = [
      ...(this.opts.podHost ? ['both pods in one pod host'] : []),
      ...(this.opts.policies ? [`${this.opts.policies} exempt policies (${(st.policies as { rules?: number } | undefined)?.rules ?? '?'} ip rules in pod a)`] : []),
      ...(this.opts.extraPeers ? [`${this.opts.extraPeers} dummy peers (${(st.peers as unknown[] | undefined)?.length ?? '?'} peers in status)`] : []),
      ...Object.entries(this.opts.env ?? {}).map(([k, v]) => envNote(k, v, st.switches as Record<string, number> | undefined)),
    ];
    return {
      dst: env.addrB,
      pids: this.pods.map((p) => p.child.pid!).filter((p) => p !== undefined),
      version,
      description: `${st.dataPlane}, MTU ${st.mtu}${extra.length ? `, ${extra.join(', ')}` : ''}`,
      server: { publicKey: keyB, port, pid: this.pods[this.pods.length - 1]!.child.pid! },
    };
  }

  async down(): Promise<string[]> {
    const problems: string[] = [];
    for (const p of this.pods) {
      // a process that ended earlier is reported by up() or died() already
      const gone = p.child.exitCode !== null || p.child.signalCode !== null;
      const code = await stopChild(p.child, 'SIGTERM', 5000);
      const how = p.child.signalCode ? `signal ${p.child.signalCode}` : `exit ${code}`;
      if (code !== 0 && !gone) problems.push(`tenc pod in ${p.ns} stopped with ${how} (not 0): ${p.tail().slice(-2).join(' / ')}`);
    }
    return problems;
  }

  died(): string | undefined {
    return endedOf('tenc pod', this.pods);
  }

  stderrTail(): string[] {
    return this.pods.flatMap((p) => p.tail().slice(-10).map((l) => `${p.ns}: ${l}`));
  }
}

async function tencVersion(children: Children): Promise<string> {
  const rev = await children.run('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD'], { timeoutMs: 5000 });
  const dirty = await children.run('git', ['-C', REPO, 'status', '--porcelain', '--untracked-files=no', 'src', 'native'], { timeoutMs: 5000 });
  const commit = rev.code === 0 ? rev.stdout.trim() : 'unknown';
  return `tenc ${commit}${dirty.code === 0 && dirty.stdout.trim() !== '' ? ' + local changes' : ''}`;
}

export interface WgGoOptions {
  id: string;
  label: string;
  /** The wireguard-go binary, or a function that finds (fetches) it. */
  binary: string | ((children: Children) => Promise<string>);
  /** Interface name prefix; instances are NAME-a and NAME-b (at most 15 characters). */
  ifname: string;
  listenPort: number;
  /** Third octet of the inner addresses 10.88.N.1 (pod a) and 10.88.N.2 (pod b). */
  subnet: number;
}

const UAPI_DIR = '/var/run/wireguard';

export class WgGoTunnel implements Tunnel {
  readonly id: string;
  readonly label: string;
  private procs: (Proc & { ifname: string })[] = [];

  constructor(private readonly opts: WgGoOptions) {
    this.id = opts.id;
    this.label = opts.label;
  }

  /** UAPI socket paths this tunnel may create. */
  socketPaths(): string[] {
    return ['a', 'b'].map((s) => join(UAPI_DIR, `${this.opts.ifname}-${s}.sock`));
  }

  async up(env: TunnelEnv): Promise<TunnelUp> {
    const { children } = env;
    const o = this.opts;
    const bin = typeof o.binary === 'string' ? o.binary : await o.binary(children);
    if (!existsSync(bin)) throw new Error(`${bin} not found`);
    const versionOut = await children.check(bin, ['--version'], { timeoutMs: 5000 });
    const version = versionOut.trim().split('\n')[0] ?? 'unknown';

    const key = async (name: string, cmd: string[], input?: string): Promise<string> => {
      const text = await children.check('wg', cmd, { timeoutMs: 5000, input });
      writeFileSync(join(env.dir, `${o.id}-${name}`), text, { mode: 0o600 });
      return text.trim();
    };
    const privA = await key('a.key', ['genkey']);
    const privB = await key('b.key', ['genkey']);
    const pubA = (await children.check('wg', ['pubkey'], { input: privA + '\n' })).trim();
    const pubB = (await children.check('wg', ['pubkey'], { input: privB + '\n' })).trim();
    await key('psk', ['genpsk']);

    const side = [
      { ns: env.nsA, ifname: `${o.ifname}-a`, key: 'a.key', inner: `10.88.${o.subnet}.1`, peerPub: pubB, peerAddr: env.addrB, peerInner: `10.88.${o.subnet}.2` },
      { ns: env.nsB, ifname: `${o.ifname}-b`, key: 'b.key', inner: `10.88.${o.subnet}.2`, peerPub: pubA, peerAddr: env.addrA, peerInner: `10.88.${o.subnet}.1` },
    ];
    for (const s of side) {
      const child = children.spawn('ip', ['netns', 'exec', s.ns, bin, '-f', s.ifname]);
      child.stdout!.resume();
      const tail = tailOf(child);
      this.procs.push({ child, tail, ns: s.ns, ifname: s.ifname });
      await this.waitSocket(child, join(UAPI_DIR, `${s.ifname}.sock`), tail, 5000);
    }
    for (const s of side) {
      await children.check('ip', ['netns', 'exec', s.ns, 'wg', 'set', s.ifname,
        'private-key', join(env.dir, `${o.id}-${s.key}`), 'listen-port', String(o.listenPort),
        'peer', s.peerPub, 'preshared-key', join(env.dir, `${o.id}-psk`),
        'endpoint', `${s.peerAddr}:${o.listenPort}`, 'allowed-ips', `${s.peerInner}/32`]);
      await children.check('ip', ['-n', s.ns, 'addr', 'add', `${s.inner}/24`, 'dev', s.ifname]);
      await children.check('ip', ['-n', s.ns, 'link', 'set', 'dev', s.ifname, 'mtu', '1420', 'up']);
    }
    return {
      dst: `10.88.${o.subnet}.2`,
      pids: this.procs.map((p) => p.child.pid!).filter((p) => p !== undefined),
      version,
      description: `${bin}, MTU 1420`,
      server: { publicKey: pubB, port: o.listenPort, pid: this.procs[1]!.child.pid! },
    };
  }

  private async waitSocket(child: ChildProcess, path: string, tail: () => string[], ms: number): Promise<void> {
    const end = performance.now() + ms;
    while (!existsSync(path)) {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(`wireguard-go exited ${child.exitCode ?? child.signalCode}: ${tail().slice(-3).join(' / ')}`);
      if (performance.now() > end) throw new Error(`${path} did not appear within ${ms} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async down(): Promise<string[]> {
    const problems: string[] = [];
    for (const p of this.procs) {
      const code = await stopChild(p.child, 'SIGTERM', 3000);
      if (code === null) problems.push(`wireguard-go ${p.ifname} needed SIGKILL`);
    }
    // wireguard-go removes its socket on a clean stop; a killed one leaves it
    if (this.procs.length > 0) for (const path of this.socketPaths()) rmSync(path, { force: true });
    return problems;
  }

  died(): string | undefined {
    return endedOf('wireguard-go', this.procs);
  }

  stderrTail(): string[] {
    return this.procs.flatMap((p) => p.tail().slice(-10).map((l) => `${p.ifname}: ${l}`));
  }
}

/** The backports wireguard-go, fetched on first use by netns-scripts/wggo-backports.sh. */
async function backportsBinary(children: Children): Promise<string> {
  const out = await children.check('bash', [join(REPO, 'netns-scripts', 'wggo-backports.sh')], { timeoutMs: 180_000 });
  const lines = out.trim().split('\n');
  return lines[lines.length - 1];
}

export interface TunnelVariants {
  /** Adds `tenc-peers`: tenc with this many configured peers in all (the real one + dummies). */
  peers?: number;
  /** Adds `tenc-env`: tenc with this extra environment (an A/B of a TENC_* knob). */
  tencEnv?: Record<string, string>;
  /** `tenc-env` runs both pods in one pod host (an A/B against `tenc-host`). */
  tencEnvHost?: boolean;
  /** Adds `tenc-policies`: tenc with this many TencPolicy exempt policies installed (ports the traffic does not use). */
  policies?: number;
  /** Adds `tenc-host`: both pods in one pod host (`tenc pod --host`), as the agent runs them. */
  podHost?: boolean;
}

/** Every tunnel, in report order (baselines first), then the tenc variants asked for. */
export function allTunnels(v: TunnelVariants = {}): Tunnel[] {
  return [
    new PlainTunnel(),
    new WgGoTunnel({ id: 'wg-deb', label: 'wireguard-go 0.0.20220316 (Debian)', binary: '/usr/bin/wireguard-go', ifname: 'wgbdeb', listenPort: 51830, subnet: 1 }),
    new WgGoTunnel({ id: 'wg-bpo', label: 'wireguard-go 0.0.20231211 (backports)', binary: backportsBinary, ifname: 'wgbbpo', listenPort: 51831, subnet: 2 }),
    new TencTunnel(),
    ...(v.tencEnv ? [new TencTunnel({ id: 'tenc-env', label: 'tenc with extra environment', env: v.tencEnv, podHost: v.tencEnvHost })] : []),
    ...(v.peers && v.peers > 1 ? [new TencTunnel({ id: 'tenc-peers', label: `tenc with ${v.peers} peers`, extraPeers: v.peers - 1 })] : []),
    ...(v.policies && v.policies > 0 ? [new TencTunnel({ id: 'tenc-policies', label: `tenc with ${v.policies} exempt policies`, policies: v.policies })] : []),
    ...(v.podHost ? [new TencTunnel({ id: 'tenc-host', label: 'tenc, both pods in one pod host', podHost: true })] : []),
  ];
}
