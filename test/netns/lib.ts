/**
 * Shared helpers for the netns tests (root, real tools). Every namespace a test
 * makes gets a unique name with the prefix "tenc-t" and is destroyed by
 * destroyAll() (call it from afterAll); addresses are 10.x / fd00:: only.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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
  stop(): Promise<void>;
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
  await new Promise<void>((resolve, reject) => {
    let err = '';
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
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
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
