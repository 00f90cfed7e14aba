/**
 * A real single-member etcd for tests, on loopback ports chosen free, data in a
 * temporary directory (removed by stop()). A missing etcd binary fails loudly.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../ports.js';

export class EtcdServer {
  child: ChildProcess | null = null;
  readonly dir = mkdtempSync(join(tmpdir(), 'tenc-etcd-'));
  clientPort = 0;
  peerPort = 0;
  log = '';

  get endpoint(): string {
    return `http://127.0.0.1:${this.clientPort}`;
  }

  async start(): Promise<void> {
    if (spawnSync('etcd', ['--version']).status !== 0) throw new Error('etcd not installed (netns-scripts/deps.sh installs etcd-server)');
    if (!this.clientPort) {
      this.clientPort = await freePort();
      this.peerPort = await freePort();
    }
    const peer = `http://127.0.0.1:${this.peerPort}`;
    this.child = spawn('etcd', ['--name', 't', '--data-dir', join(this.dir, 'data'), '--listen-client-urls', this.endpoint, '--advertise-client-urls', this.endpoint,
      '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `t=${peer}`, '--log-level', 'error'], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child.stderr!.on('data', (d) => (this.log = (this.log + d).slice(-4000)));
    for (let i = 0; i < 100; i++) {
      if (this.ctl('endpoint', 'health').status === 0) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`etcd did not start: ${this.log}`);
  }

  /** etcdctl against this member (root user when auth is on: pass --user). */
  ctl(...args: string[]): { status: number | null; stdout: string; stderr: string } {
    const r = spawnSync('etcdctl', ['--endpoints', this.endpoint, '--dial-timeout=2s', '--command-timeout=5s', ...args], { encoding: 'utf8', env: { ...process.env, ETCDCTL_API: '3' } });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  /** A plain client on the member (not through the registry), for writes the test makes. */
  client(r: { client: import("etcd3").Etcd3 }): import("etcd3").Etcd3 {
    return r.client;
  }

  async stop(keepData = false): Promise<void> {
    const c = this.child;
    this.child = null;
    if (c && c.exitCode === null) {
      await new Promise<void>((r) => {
        c.once('exit', () => r());
        c.kill('SIGKILL');
      });
    }
    if (!keepData) rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A TCP relay to a port that the test can cut (close every connection, refuse new ones) and restore. */
export class Relay {
  private server: Server | null = null;
  private readonly socks = new Set<Socket>();
  port = 0;
  constructor(private readonly target: number) {}

  async open(): Promise<void> {
    this.server = createServer((s) => {
      const up = connect(this.target, '127.0.0.1');
      this.socks.add(s).add(up);
      const done = () => {
        s.destroy();
        up.destroy();
        this.socks.delete(s);
        this.socks.delete(up);
      };
      s.on('error', done).on('close', done);
      up.on('error', done).on('close', done);
      s.pipe(up).pipe(s);
    });
    if (!this.port) this.port = await freePort();
    await new Promise<void>((r) => this.server!.listen(this.port, '127.0.0.1', () => r()));
  }

  async cut(): Promise<void> {
    for (const s of this.socks) s.destroy();
    this.socks.clear();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.server = null;
  }
}
