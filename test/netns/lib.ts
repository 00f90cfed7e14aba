/**
 * The one helper library of the netns tests (root, real tools). Addresses are 10.x / fd00::
 * only. Two ways to build a topology:
 *  - Netns.create(label): a fresh namespace tenc-t<pid>-<n>-<label>, destroyed by
 *    destroyAll() (call it from afterAll); veth(), bridge() and addAddresses() join them;
 *  - Topology.up(prefix): netns-scripts/pods.sh with PODS_PREFIX=prefix, plus extra pods on
 *    the same bridge (addPod), removed by down():
 *
 *   [prefix-a] eth0 10.77.0.1   [prefix-b] eth0 10.77.0.2   [prefix-c] eth0 10.77.0.3 ...
 *        |  veth-a                  |  veth-b                  |  veth-c
 *   [prefix-br] ------------------ br0 10.77.0.254 fd00:77::fe ------------------
 *
 * Then real `tenc pod` processes (startPod, stopAllPods), the `tenc` CLI inside a namespace
 * (tenc, status, control), a project directory with its psk (projectDir), captures
 * (tcpdump: startCapture, and pcapUdp, a small pcap reader that yields UDP datagrams),
 * waiting (until: a condition within a bound, throws; waitFor: the same as a boolean), an
 * echoing TCP connection that must survive churn (echoConnection), and tearDown() for afterAll.
 */
import { expect } from 'vitest';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Address6 } from 'ip-address';
import { ensureBuilt } from '../build.js';
import { readPublicKeyLine } from '../../src/control/keyline.js';
import { holdsNetns, inNetns } from '../../src/agent/proxies.js';

/** Throws a clear error (fails the suite) when a tool is missing. */
export function requireTool(name: string): void {
  const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  if (r.status !== 0) {
    throw new Error(`netns test needs \`${name}\`: run \`bash netns-scripts/deps.sh\` as root`);
  }
}

export function requireRoot(): void {
  if (process.getuid?.() !== 0) throw new Error('netns tests need root (they create network namespaces)');
}

/** Runs a command on the host; returns stdout, throws with stderr on failure. */
export function sh(cmd: string, args: string[], input?: string): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string; status?: number };
    throw new Error(`${cmd} ${args.join(' ')} failed (${err.status}): ${err.stderr ?? ''}`);
  }
}

const created = new Set<string>();
let counter = 0;

export class Netns {
  private constructor(readonly name: string) {}

  /**
   * Creates a fresh namespace named tenc-t<pid>-<n>-<label> with lo up and IPv6
   * duplicate address detection off, so addresses (link-local ones too) are final
   * at once and snapshots do not race with DAD.
   */
  static create(label: string): Netns {
    const name = `tenc-t${process.pid % 100000}-${counter++}-${label}`.slice(0, 40);
    sh('ip', ['netns', 'add', name]);
    created.add(name);
    const ns = new Netns(name);
    ns.ip('link', 'set', 'lo', 'up');
    ns.exec('sysctl', '-qw', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0');
    return ns;
  }

  /**
   * A handle on a namespace made elsewhere (e.g. by netns-scripts/pods.sh); it is
   * not destroyed by destroyAll(), whoever made it removes it.
   */
  static attach(name: string): Netns {
    if (!existsSync(`/run/netns/${name}`)) throw new Error(`no network namespace ${name}`);
    return new Netns(name);
  }

  /** `ip -n NAME ARGS`. */
  ip(...args: string[]): string {
    return sh('ip', ['-n', this.name, ...args]);
  }

  /** `ip -n NAME -batch -`, one command a line. */
  ipBatch(lines: string[]): string {
    return sh('ip', ['-n', this.name, '-batch', '-'], lines.join('\n') + '\n');
  }

  /** Runs a command inside the namespace. */
  exec(cmd: string, ...args: string[]): string {
    return sh('ip', ['netns', 'exec', this.name, cmd, ...args]);
  }

  /** Like exec, but returns the status instead of throwing. */
  tryExec(cmd: string, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
    const r = spawnSync('ip', ['netns', 'exec', this.name, cmd, ...args], { encoding: 'utf8' });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  /** Spawns a long-running command inside the namespace. */
  spawn(cmd: string, args: string[], opts: { stdio?: 'pipe' | 'ignore' } = {}): ChildProcess {
    return spawn('ip', ['netns', 'exec', this.name, cmd, ...args], { stdio: opts.stdio ?? 'pipe' });
  }

  /** Adds addresses (CIDR form) to `dev`; IPv6 ones without duplicate address detection. */
  addAddresses(dev: string, cidrs: string[]): void {
    for (const c of cidrs) {
      if (c.includes(':')) this.ip('-6', 'addr', 'add', c, 'dev', dev, 'nodad');
      else this.ip('addr', 'add', c, 'dev', dev);
    }
  }

  /** The namespace's inode (the <netns inode> in tenc's default control socket path). */
  inode(): number {
    return statSync(`/run/netns/${this.name}`).ino;
  }

  destroy(): void {
    removeNetns(this.name);
  }
}

/** Deletes a namespace and any tenc control socket a killed pod left for it. */
function removeNetns(name: string): void {
  try {
    const ino = statSync(`/run/netns/${name}`).ino;
    for (const f of existsSync('/run/tenc') ? readdirSync('/run/tenc') : []) {
      if (f.endsWith(`-${ino}.sock`)) rmSync(join('/run/tenc', f), { force: true });
    }
  } catch {
    // already gone
  }
  spawnSync('ip', ['netns', 'del', name]);
  created.delete(name);
}

/** Destroys every namespace this process created (afterAll). */
export function destroyAll(): void {
  for (const name of [...created]) removeNetns(name);
}

/** A veth pair between two namespaces (or within one), both ends up. */
export function veth(a: Netns, ifA: string, b: Netns, ifB: string, mtu?: number): void {
  sh('ip', ['-n', a.name, 'link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', b.name]);
  for (const [ns, ifn] of [[a, ifA], [b, ifB]] as const) {
    if (mtu) ns.ip('link', 'set', 'dev', ifn, 'mtu', String(mtu));
    ns.ip('link', 'set', 'dev', ifn, 'up');
  }
}

/**
 * Two fresh namespaces joined by a veth pair named eth0 on both sides, with addresses:
 *
 *   [a] eth0 10.77.0.1/24 fd00:77::1/64 ------ eth0 10.77.0.2/24 fd00:77::2/64 [b]
 */
export function vethPair(
  labelA: string,
  labelB: string,
  addrsA = ['10.77.0.1/24', 'fd00:77::1/64'],
  addrsB = ['10.77.0.2/24', 'fd00:77::2/64'],
): [Netns, Netns] {
  const a = Netns.create(labelA);
  const b = Netns.create(labelB);
  veth(a, 'eth0', b, 'eth0');
  a.addAddresses('eth0', addrsA);
  b.addAddresses('eth0', addrsB);
  return [a, b];
}

/** A bridge in `ns` with the given member interfaces (already in ns), all up. */
export function bridge(ns: Netns, name: string, members: string[]): void {
  ns.ip('link', 'add', name, 'type', 'bridge');
  ns.ip('link', 'set', 'dev', name, 'up');
  for (const m of members) ns.ip('link', 'set', 'dev', m, 'master', name);
}

/**
 * A persistent TUN device (stands in for the one tenc opens; vanishes only when
 * deleted). Brought up and down once so the kernel has attached its qdisc before
 * any snapshot is taken.
 */
export function persistentTun(ns: Netns, name: string): void {
  ns.ip('tuntap', 'add', 'dev', name, 'mode', 'tun');
  ns.ip('link', 'set', 'dev', name, 'up');
  ns.ip('link', 'set', 'dev', name, 'down');
}

export interface NetSnapshot {
  rules4: string;
  rules6: string;
  routes4: string;
  routes6: string;
  addrs: string;
  links: string;
  nft: string;
}

/** The state that tenc may touch, as text, for before/after comparisons. */
export function snapshot(ns: Netns): NetSnapshot {
  const links = ns
    .ip('-o', 'link', 'show')
    .split('\n')
    // interface indexes are identities, not state: a re-created device gets a new one
    .map((l) => l.replace(/^\d+: /, '').replace(/@if\d+:/, '@ifN:').replace(/link-netnsid \d+/, 'link-netnsid N'))
    .join('\n');
  return {
    rules4: ns.ip('-4', 'rule', 'show'),
    rules6: ns.ip('-6', 'rule', 'show'),
    routes4: ns.ip('-4', 'route', 'show', 'table', 'all'),
    routes6: ns.ip('-6', 'route', 'show', 'table', 'all'),
    addrs: ns.ip('-o', 'addr', 'show'),
    links,
    nft: ns.exec('nft', 'list', 'ruleset'),
  };
}

export interface Capture {
  file: string;
  /** Stops tcpdump; resolves with the packets it reported dropped by the kernel (null: no report). */
  stop(): Promise<{ dropped: number | null }>;
  /** tcpdump -r output, one line per packet (-n -tt -v as given). */
  read(extraArgs?: string[]): string[];
  remove(): void;
}

/** Starts tcpdump on `ifname` in `ns` and resolves once it listens. */
export async function startCapture(ns: Netns, ifname: string, filter: string[] = []): Promise<Capture> {
  requireTool('tcpdump');
  const file = join(tmpdir(), `tenc-cap-${process.pid}-${counter++}.pcap`);
  // --immediate-mode: packets reach the file at once, not when a ring block fills or times out
  const child = ns.spawn('tcpdump', ['-i', ifname, '-n', '-U', '--immediate-mode', '-s', '0', '-w', file, ...filter]);
  let err = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tcpdump did not start: ${err}`)), 10_000);
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      if (err.includes('listening on')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`tcpdump exited (${code}): ${err}`));
    });
  });
  child.removeAllListeners('exit');
  return {
    file,
    stop: () =>
      new Promise((resolve) => {
        const report = () => {
          const m = /(\d+) packets? dropped by kernel/.exec(err);
          resolve({ dropped: m ? Number(m[1]) : null });
        };
        if (child.exitCode !== null) return report();
        // tcpdump prints its counts on stderr as it exits: 'close' comes after its streams end
        child.once('close', report);
        child.kill('SIGINT');
      }),
    read: (extraArgs = []) => {
      if (!existsSync(file)) return [];
      const out = sh('tcpdump', ['-r', file, '-n', '-tt', ...extraArgs]);
      return out.split('\n').filter((l) => l.length > 0);
    },
    remove: () => rmSync(file, { force: true }),
  };
}

/** The raw bytes of a capture file (pcap), for tests that parse packets themselves. */
export function readCaptureBytes(c: Capture): Buffer {
  return readFileSync(c.file);
}

// ---------------------------------------------------------------------------
// pods.sh topologies and tenc pods

export const root = fileURLToPath(new URL('../..', import.meta.url));
export const main = join(root, 'dist', 'src', 'cli', 'main.js');
export const tools = join(root, 'test', 'netns', 'accept-tools.mjs');
const podsScript = join(root, 'netns-scripts', 'pods.sh');

/** Root, the tools the file needs, and a fresh build of dist/ (the CLI the pods run). */
export function prepare(extraTools: string[]): void {
  requireRoot();
  for (const t of ['ip', 'node', 'tcpdump', ...extraTools]) requireTool(t);
  ensureBuilt();
}

export const POD_ADDR = (n: number) => ({ v4: `10.77.0.${n}`, v6: `fd00:77::${n}` });
export const GATEWAY = { v4: '10.77.0.254', v6: 'fd00:77::fe' };

/** Started `tenc pod` processes of this test file (stopped in afterAll even after a failure). */
const running = new Set<ChildProcess>();

export class Topology {
  private readonly extras: string[] = [];

  private constructor(readonly prefix: string) {}

  /** pods.sh up with PODS_PREFIX=prefix: namespaces prefix-a, prefix-b, prefix-br. */
  static up(prefix: string): Topology {
    const t = new Topology(prefix);
    const r = spawnSync('bash', [podsScript, 'up'], { env: { ...process.env, PODS_PREFIX: prefix }, encoding: 'utf8' });
    if (r.status !== 0) {
      t.down();
      throw new Error(`pods.sh up failed: ${r.stderr}`);
    }
    return t;
  }

  ns(letter: string): Netns {
    return Netns.attach(`${this.prefix}-${letter}`);
  }

  /** One more pod namespace on the bridge (`pods.sh add`: built as a and b are, 10.77.0.n and fd00:77::n). */
  addPod(letter: string, n: number): Netns {
    const name = `${this.prefix}-${letter}`;
    this.extras.push(name);
    const r = spawnSync('bash', [podsScript, 'add', letter, String(n)], { env: { ...process.env, PODS_PREFIX: this.prefix }, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`pods.sh add ${letter} ${n} failed: ${r.stderr}`);
    return Netns.attach(name);
  }

  /** Stops the pods, removes every namespace and stale control socket; safe to call twice. */
  down(): void {
    for (const name of this.extras.splice(0)) removeNetns(name);
    spawnSync('bash', [podsScript, 'down'], { env: { ...process.env, PODS_PREFIX: this.prefix } });
  }

  /** The namespaces with our prefix that still exist (expected: none after down). */
  leftovers(): string[] {
    return sh('ip', ['netns', 'list'])
      .split('\n')
      .map((l) => l.split(' ')[0])
      .filter((n) => n.startsWith(`${this.prefix}-`));
  }
}

export interface PodProc {
  child: ChildProcess;
  pid: number;
  publicKey: string;
  exit: Promise<number | null>;
  stderr: () => string;
}

/** Starts `tenc pod --config FILE [ARGS]` in ns; resolves once it logs "pod running" (15 s at most). */
export async function startPod(ns: Netns, config: string, args: string[] = []): Promise<PodProc> {
  // ip netns exec execs node in place: child.pid is the pod's pid
  const child = ns.spawn('node', [main, 'pod', '--config', config, ...args]);
  running.add(child);
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exit = new Promise<number | null>((r) =>
    child.on('exit', (code) => {
      running.delete(child);
      r(code);
    }),
  );
  const t0 = Date.now();
  const publicKey = await readPublicKeyLine(child, 15_000);
  if (publicKey instanceof Error) throw new Error(`tenc pod did not start (${publicKey.message}): ${err}`);
  while (!err.includes('"msg":"pod running"')) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`tenc pod exited ${child.exitCode ?? child.signalCode}: ${err}`);
    if (Date.now() - t0 > 15_000) throw new Error(`tenc pod did not start: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, pid: child.pid!, publicKey, exit, stderr: () => err };
}

/** SIGTERM, and the exit code (SIGKILL after 5 s). */
export async function stopPod(p: PodProc): Promise<number | null> {
  if (p.child.exitCode !== null) return p.child.exitCode;
  p.child.kill('SIGTERM');
  const t = setTimeout(() => p.child.kill('SIGKILL'), 5000);
  const code = await p.exit;
  clearTimeout(t);
  return code;
}

/** Stops every pod this file started (afterAll): TERM, then KILL after 3 s. */
export async function stopAllPods(): Promise<void> {
  const exits = [...running].map((c) => new Promise((r) => c.once('exit', r)));
  for (const c of running) c.kill('SIGTERM');
  await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, 3000))]);
  for (const c of running) c.kill('SIGKILL');
}

/** Helper processes of this test file (servers, dnsmasq, pings): stopped by stopHelpers(). */
const helpers = new Set<ChildProcess>();

/** Spawns a helper process in ns; its output is read and dropped. */
export function spawnHelper(ns: Netns, cmd: string, args: string[]): ChildProcess {
  const c = ns.spawn(cmd, args);
  helpers.add(c);
  c.on('exit', () => helpers.delete(c));
  c.stdout?.resume();
  c.stderr?.resume();
  return c;
}

/** An HTTP server in ns on port 80 of `address` that answers every request with `marker`. */
export function httpServer(ns: Netns, marker: string, address = '::'): ChildProcess {
  const js = `require('http').createServer((q,s)=>s.end(${JSON.stringify(marker)})).listen(80,${JSON.stringify(address)},()=>console.log('up'))`;
  return spawnHelper(ns, 'node', ['-e', js]);
}

/** Stops every helper (afterAll): TERM, then KILL after 3 s. */
export async function stopHelpers(): Promise<void> {
  const exits = [...helpers].map((c) => new Promise((r) => c.once('exit', r)));
  for (const c of helpers) c.kill('SIGTERM');
  await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, 3000))]);
  for (const c of helpers) c.kill('SIGKILL');
}

/** `tenc ARGS` inside ns (the CLI finds the pod of the namespace). */
export function tenc(ns: Netns, ...args: string[]): string {
  return ns.exec('node', main, ...args);
}

export function tencHost(...args: string[]): string {
  const r = spawnSync('node', [main, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tenc ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/**
 * A fresh directory (mode 0700) holding the project's pre-shared key as `psk` (mode 0600,
 * from `tenc genpsk`), and more psk files when `extraPsks` names them (another project).
 */
export function projectDir(label: string, extraPsks: string[] = []): string {
  const dir = mkdtempSync(join(tmpdir(), `tenc-${label}-`));
  for (const name of ['psk', ...extraPsks]) writeFileSync(join(dir, name), tencHost('genpsk'), { mode: 0o600 });
  return dir;
}

/** Writes `<dir>/<name>.json` (a pod's config) and returns its path. */
export function writeConfig(dir: string, name: string, config: Record<string, unknown>): string {
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(config));
  return file;
}

/**
 * afterAll of a file that ran pods: stops them (even after a failure), removes the
 * namespaces (the Topology's and every Netns.create one) and the directory, then checks
 * that no namespace of the topology is left.
 */
export async function tearDown(topo: Topology | undefined, dir: string | undefined): Promise<void> {
  await stopAllPods();
  topo?.down();
  destroyAll();
  if (dir) rmSync(dir, { recursive: true, force: true });
  if (topo) expect(topo.leftovers()).toEqual([]);
}

export interface StatusJson {
  publicKey: string;
  listenPort: number;
  dataPlane: string;
  drops: Record<string, number>;
  handshakeFailures: Record<string, number>;
  peers: {
    publicKey: string;
    endpoint: string | null;
    latestHandshake: number | null;
    rxBytes: number;
    txBytes: number;
    drops: Record<string, number>;
  }[];
}

export function status(ns: Netns): StatusJson {
  return JSON.parse(tenc(ns, 'status', '--json')) as StatusJson;
}

/** Peers a and b know each other (set-peer both ways, both families, IPv4 underlay). */
export function pairUp(nsA: Netns, a: PodProc, nA: number, nsB: Netns, b: PodProc, nB: number, port = 51820): void {
  const A = POD_ADDR(nA);
  const B = POD_ADDR(nB);
  tenc(nsA, 'set-peer', b.publicKey, '--endpoint', `${B.v4}:${port}`, '--allowed-ips', `${B.v4}/32,${B.v6}/128`);
  tenc(nsB, 'set-peer', a.publicKey, '--endpoint', `${A.v4}:${port}`, '--allowed-ips', `${A.v4}/32,${A.v6}/128`);
}

export function ping(ns: Netns, dst: string, count = 2): boolean {
  return ns.tryExec('ping', '-c', String(count), '-i', '0.2', '-W', '2', dst).status === 0;
}

/** Pings until one answer (the first packets wait for the handshake), at most `tries` rounds. */
export function pingUntil(ns: Netns, dst: string, tries = 5): boolean {
  for (let i = 0; i < tries; i++) if (ns.tryExec('ping', '-c', '1', '-W', '1', dst).status === 0) return true;
  return false;
}

/** VmRSS of a process in KiB (from /proc/PID/status). */
export function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

export const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** A marker that cannot occur by chance in a capture. */
export function marker(label: string): string {
  return `TENC-${label}-MARKER-${randomBytes(8).toString('hex')}`;
}

// ---------------------------------------------------------------------------
// pcap

export interface UdpDatagram {
  time: number;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  payload: Buffer;
}

/** An IPv6 address's 16 bytes as text (RFC 5952, as tcpdump and inet_ntop print it). */
function ip6ToString(b: Buffer): string {
  return Address6.fromBigInt(BigInt(`0x${b.toString('hex')}`)).correctForm();
}

/**
 * The UDP datagrams in a pcap file (tcpdump -w: microsecond pcap, Ethernet or
 * Linux cooked link types), IPv4 (unfragmented) and IPv6 (UDP directly after the
 * fixed header). Everything else is skipped.
 */
export function pcapUdp(file: Buffer): UdpDatagram[] {
  if (file.length < 24) return [];
  const magic = file.readUInt32LE(0);
  if (magic !== 0xa1b2c3d4 && magic !== 0xa1b23c4d) throw new Error(`not a little-endian pcap file (magic ${magic.toString(16)})`);
  const nano = magic === 0xa1b23c4d;
  const linktype = file.readUInt32LE(20);
  const out: UdpDatagram[] = [];
  for (let off = 24; off + 16 <= file.length; ) {
    const sec = file.readUInt32LE(off);
    const frac = file.readUInt32LE(off + 4);
    const incl = file.readUInt32LE(off + 8);
    const pkt = file.subarray(off + 16, off + 16 + incl);
    off += 16 + incl;
    let l3: number;
    let ethType: number;
    if (linktype === 1) {
      if (pkt.length < 14) continue;
      ethType = pkt.readUInt16BE(12);
      l3 = 14;
    } else if (linktype === 113) {
      if (pkt.length < 16) continue;
      ethType = pkt.readUInt16BE(14);
      l3 = 16;
    } else if (linktype === 276) {
      if (pkt.length < 20) continue;
      ethType = pkt.readUInt16BE(0);
      l3 = 20;
    } else throw new Error(`unsupported pcap link type ${linktype}`);
    let src: string;
    let dst: string;
    let l4: number;
    if (ethType === 0x0800) {
      if (pkt.length < l3 + 20 || pkt[l3 + 9] !== 17) continue;
      if ((pkt.readUInt16BE(l3 + 6) & 0x3fff) !== 0) continue; // a fragment
      src = [...pkt.subarray(l3 + 12, l3 + 16)].join('.');
      dst = [...pkt.subarray(l3 + 16, l3 + 20)].join('.');
      l4 = l3 + (pkt[l3]! & 0x0f) * 4;
    } else if (ethType === 0x86dd) {
      if (pkt.length < l3 + 40 || pkt[l3 + 6] !== 17) continue;
      src = ip6ToString(pkt.subarray(l3 + 8, l3 + 24));
      dst = ip6ToString(pkt.subarray(l3 + 24, l3 + 40));
      l4 = l3 + 40;
    } else continue;
    if (pkt.length < l4 + 8) continue;
    const ulen = pkt.readUInt16BE(l4 + 4);
    out.push({
      time: sec + frac / (nano ? 1e9 : 1e6),
      src,
      dst,
      sport: pkt.readUInt16BE(l4),
      dport: pkt.readUInt16BE(l4 + 2),
      payload: Buffer.from(pkt.subarray(l4 + 8, Math.min(pkt.length, l4 + ulen))),
    });
  }
  return out;
}

/** Runs test/netns/accept-tools.mjs MODE ARGS in ns to completion; parses its last stdout line as JSON. */
export function runTool<T = Record<string, unknown>>(ns: Netns, args: string[], input?: string, timeoutMs = 60_000): T {
  const r = spawnSync('ip', ['netns', 'exec', ns.name, 'node', tools, ...args], {
    encoding: 'utf8',
    input,
    timeout: timeoutMs,
    maxBuffer: 1 << 26,
  });
  if (r.status !== 0) throw new Error(`accept-tools ${args[0]} failed (${r.status ?? r.signal}): ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]!) as T;
}

export { until } from '../until.js';

/**
 * An open TCP connection from the named netns to an echo server at address:port,
 * writing "ping N" every 100 ms (a connection that must survive churn); echoed(): what
 * came back so far; pings(): how many lines. The caller kills the child.
 */
export function echoConnection(netns: string, address: string, port: number): { child: ChildProcess; echoed: () => string; pings: () => number } {
  const child = spawn('ip', ['netns', 'exec', netns, 'node', '-e', `
    const s = require('net').connect(${port}, '${address}'); let n = 0;
    s.setEncoding('utf8'); s.on('data', (d) => process.stdout.write(d));
    setInterval(() => s.write('ping ' + n++ + '\\n'), 100); s.on('error', (e) => { console.error(e.message); process.exit(1); });`]);
  let echoed = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (echoed += d));
  return { child, echoed: () => echoed, pings: () => (echoed.match(/ping/g) ?? []).length };
}

/** Waits until `pred` holds (polling), at most `ms`. */
export async function waitFor(pred: () => boolean, ms = 5000, step = 100): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (pred()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, step));
  }
}

/** One request on the pod's control socket in ns (interface tenc0); the parsed response. */
export function control(ns: Netns, req: Record<string, unknown>): { ok: boolean; result?: any; error?: { code: string; message: string } } {
  const path = `/run/tenc/tenc0-${ns.inode()}.sock`;
  const js =
    `const c = require('net').connect(${JSON.stringify(path)}); let b = '';` +
    `c.on('data', (d) => { b += d; if (b.includes('\\n')) { process.stdout.write(b); c.end(); } });` +
    `c.write(${JSON.stringify(JSON.stringify(req))} + '\\n');`;
  return JSON.parse(ns.exec('node', '-e', js));
}

/**
 * Whether /proc/PID/cmdline is a pod proxy's: `tenc pod --config FILE` (started as a new
 * process), or `tenc pod --standby` (started ahead by the agent and handed its pod:
 * agent/standby.ts). A standby not yet handed a pod lives in the agent's namespace, so
 * `ip netns pids POD_NS` never lists one.
 */
export function isPodProxyCmdline(cmdline: string): boolean {
  return cmdline.includes('\0pod\0--config') || cmdline.includes('\0pod\0--standby') || cmdline.includes('\0pod\0--host');
}

/**
 * The network namespaces (as "dev:ino") a process holds an fd of, apart from its own: a
 * pod host's pods. By stat, not by the link's text: an fd opened through /run/netns/NAME
 * reads as that path.
 */
export function heldNamespaces(pid: string): string[] {
  const key = (st: { dev: number; ino: number }) => `${st.dev}:${st.ino}`;
  const nsfs = statSync('/proc/self/ns/net').dev;
  const own = key(statSync(`/proc/${pid}/ns/net`));
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const st = statSync(`/proc/${pid}/fd/${fd}`);
      const k = key(st);
      if (st.dev === nsfs && k !== own && !out.includes(k)) out.push(k);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/**
 * The pod proxies serving the namespace at nsPath: a `tenc pod` in it, or a pod host
 * (`tenc pod --host`, in the agent's namespace) holding it for one of its pods.
 */
export function podProxies(nsPath: string): string[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((pid) => {
      try {
        return isPodProxyCmdline(readFileSync(`/proc/${pid}/cmdline`, 'utf8')) && (inNetns(Number(pid), nsPath) || holdsNetns(Number(pid), nsPath));
      } catch {
        return false; // gone meanwhile
      }
    });
}

/**
 * The processes of a cluster under `dir` (e.g. its state directory): those whose command
 * line names a path under it, and the pod proxies whose stderr is a file under it (a
 * standby's command line names no path: handed a pod, its stderr is the pod's log; not
 * yet handed, its own `.standby-*.log`). `proxiesOnly`: only pod proxies (started with
 * --config, standbys handed a pod, pod hosts running a pod), not the agents, the standbys
 * still waiting or a host without pods.
 */
export function processesUnder(dir: string, opts: { proxiesOnly?: boolean } = {}): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (isPodProxyCmdline(cmdline)) {
        const err = readlinkSync(`/proc/${pid}/fd/2`);
        // a standby not yet handed a pod, or a pod host running none, serves no pod
        const idle = basename(err).startsWith('.standby-') || (cmdline.includes('\0pod\0--host') && heldNamespaces(pid).length === 0);
        if ((err.startsWith(`${dir}/`) || cmdline.includes(`${dir}/`)) && !(opts.proxiesOnly && idle)) out.push(pid);
      } else if (!opts.proxiesOnly && cmdline.includes(`${dir}/`)) out.push(pid);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** A process for a failure message: its command line, stderr and network namespace. */
export function describeProcess(pid: string): string {
  const read = (f: () => string): string => {
    try {
      return f();
    } catch (e) {
      return `(${(e as NodeJS.ErrnoException).code ?? 'gone'})`;
    }
  };
  return `${read(() => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim())} stderr=${read(() => readlinkSync(`/proc/${pid}/fd/2`))} net=${read(() => readlinkSync(`/proc/${pid}/ns/net`))}`;
}
