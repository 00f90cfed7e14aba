/**
 * Debian's wireguard-go as the other end of interop.test.ts: one foreground process per
 * interface, configured with `wg set` (wireguard-tools), verbose log kept for checks.
 *
 * The UAPI socket /var/run/wireguard/NAME.sock is shared by every namespace, so each
 * interface needs a name unique on the host; stop() (and stopAllWireguardGo() from
 * afterAll) kills the process and removes the socket file even after a failure.
 * Reading state goes through `wg show NAME dump`, of which only public fields are kept
 * (never the private key or the psk).
 */
import { rmSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import type { Netns } from './lib.js';

export interface WgPeerState {
  publicKey: string;
  endpoint: string | null;
  allowedIps: string[];
  /** Unix seconds of the latest handshake, 0 if none. */
  latestHandshake: number;
  rxBytes: number;
  txBytes: number;
}

const running = new Set<WireguardGo>();

export class WireguardGo {
  private logText = '';
  private readonly exited: Promise<void>;

  private constructor(
    readonly ns: Netns,
    readonly name: string,
    private readonly child: ChildProcess,
  ) {
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (this.logText += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.logText += d));
    this.exited = new Promise((r) => child.once('exit', () => r()));
  }

  /** Starts `wireguard-go -f NAME` in ns (LOG_LEVEL=verbose) and waits for the interface. */
  static async start(ns: Netns, name: string): Promise<WireguardGo> {
    if (name.length > 15) throw new RangeError(`interface name ${name} is longer than 15 characters`);
    rmSync(`/var/run/wireguard/${name}.sock`, { force: true });
    const child = ns.spawn('env', ['LOG_LEVEL=verbose', 'wireguard-go', '-f', name]);
    const wg = new WireguardGo(ns, name, child);
    running.add(wg);
    for (let i = 0; i < 100; i++) {
      if (child.exitCode !== null) throw new Error(`wireguard-go ${name} exited ${child.exitCode}: ${wg.logText}`);
      if (ns.tryExec('wg', 'show', name).status === 0) return wg;
      await new Promise((r) => setTimeout(r, 50));
    }
    await wg.stop();
    throw new Error(`wireguard-go ${name} did not come up: ${wg.logText}`);
  }

  /** `wg set NAME ARGS...` (keys only as file names). */
  set(...args: string[]): void {
    this.ns.exec('wg', 'set', this.name, ...args);
  }

  /** The peers of `wg show NAME dump` without their psk. */
  peers(): WgPeerState[] {
    const lines = this.ns.exec('wg', 'show', this.name, 'dump').trim().split('\n').slice(1); // line 1: the interface, with the private key
    return lines
      .filter((l) => l !== '')
      .map((l) => {
        const [publicKey, , endpoint, allowedIps, latest, rx, tx] = l.split('\t');
        return {
          publicKey,
          endpoint: endpoint === '(none)' ? null : endpoint,
          allowedIps: allowedIps === '(none)' ? [] : allowedIps.split(','),
          latestHandshake: Number(latest),
          rxBytes: Number(rx),
          txBytes: Number(tx),
        };
      });
  }

  peer(publicKey: string): WgPeerState {
    const p = this.peers().find((x) => x.publicKey === publicKey);
    if (!p) throw new Error(`wireguard-go ${this.name} has no peer ${publicKey}`);
    return p;
  }

  /** Everything wireguard-go logged so far (verbose: handshake messages sent and received). */
  log(): string {
    return this.logText;
  }

  /** SIGTERM (SIGKILL after 2 s), then the UAPI socket file goes. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      const t = setTimeout(() => this.child.kill('SIGKILL'), 2000);
      await this.exited;
      clearTimeout(t);
    }
    rmSync(`/var/run/wireguard/${this.name}.sock`, { force: true });
    running.delete(this);
  }
}

/** Stops every wireguard-go this process started (afterAll). */
export async function stopAllWireguardGo(): Promise<void> {
  await Promise.all([...running].map((w) => w.stop()));
}
