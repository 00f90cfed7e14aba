/**
 * Enforcement ("pods reject unencrypted traffic from project pods"): in the pod's
 * network namespace, plaintext that arrives on an ordinary interface from a project
 * pod's address is dropped and counted. Project traffic must come through tenc0,
 * where the engine has authenticated it. The project addresses are the peers'
 * allowed IPs, kept in step with set-peer/remove-peer. One nftables table, removed
 * exactly on stop (a crash leaves it in place: fail closed, removed at next start):
 *
 *   table inet tenc_<ifname> {
 *     counter plaintext_from_project {}
 *     set project4 { type ipv4_addr; flags interval; auto-merge; }
 *     set project6 { type ipv6_addr; flags interval; auto-merge; }
 *     chain input {
 *       type filter hook input priority filter - 10; policy accept;
 *       iifname { "tenc0", "lo" } accept            decrypted (tun or raw injection)
 *       udp dport 51820 accept                      tenc's own datagrams
 *       ip saddr @project4 counter name plaintext_from_project drop
 *       ip6 saddr @project6 counter name plaintext_from_project drop
 *     }
 *   }
 *
 * Traffic from any other source (other projects, outside the cluster, DNS) is
 * untouched. Changes are per configuration change, never per packet.
 */
import { execFileSync, spawn } from 'node:child_process';

export const DROP_REASON = 'plaintext_from_project';

export class NftError extends Error {
  readonly code = 'ERR_TENC_NFT';
  constructor(message: string) {
    super(message);
    this.name = 'NftError';
  }
}

export interface EnforcementOptions {
  ifname: string;
  listenPort: number;
  /** Named network namespace to act in (tests); default the current one. */
  netns?: string;
}

/** nftables table name for an interface: letters, digits and "_" only. */
export function tableName(ifname: string): string {
  if (typeof ifname !== 'string') throw new TypeError('ifname must be a string');
  if (ifname.length === 0 || ifname.length > 15) throw new RangeError('ifname must be 1..15 characters');
  return `tenc_${ifname.replace(/[^A-Za-z0-9_]/g, '_')}`;
}

/** Splits canonical CIDRs (as in PeerConfig.allowedIps) by family. */
export function splitFamilies(cidrs: string[]): { v4: string[]; v6: string[] } {
  const v4: string[] = [];
  const v6: string[] = [];
  for (const c of cidrs) (c.includes(':') ? v6 : v4).push(c);
  return { v4, v6 };
}

/** The nft script that installs the table with the given sources (first install). */
export function installScript(o: EnforcementOptions, sources: string[]): string {
  const t = tableName(o.ifname);
  const iif = JSON.stringify(o.ifname);
  return [
    `table inet ${t} {`,
    `  counter ${DROP_REASON} {}`,
    '  set project4 { type ipv4_addr; flags interval; auto-merge; }',
    '  set project6 { type ipv6_addr; flags interval; auto-merge; }',
    '  chain input {',
    '    type filter hook input priority filter - 10; policy accept;',
    `    iifname { ${iif}, "lo" } accept`,
    `    udp dport ${o.listenPort} accept`,
    `    ip saddr @project4 counter name ${DROP_REASON} drop`,
    `    ip6 saddr @project6 counter name ${DROP_REASON} drop`,
    '  }',
    '}',
    ...elementsScript(t, sources),
  ].join('\n') + '\n';
}

function elementsScript(t: string, sources: string[]): string[] {
  const { v4, v6 } = splitFamilies(sources);
  const out = [`flush set inet ${t} project4`, `flush set inet ${t} project6`];
  if (v4.length > 0) out.push(`add element inet ${t} project4 { ${v4.join(', ')} }`);
  if (v6.length > 0) out.push(`add element inet ${t} project6 { ${v6.join(', ')} }`);
  return out;
}

export class Enforcement {
  readonly table: string;
  private installed = false;
  private lastSources = '';

  constructor(private readonly opts: EnforcementOptions) {
    this.table = tableName(opts.ifname);
  }

  private argv(args: string[]): [string, string[]] {
    return this.opts.netns ? ['ip', ['netns', 'exec', this.opts.netns, 'nft', ...args]] : ['nft', args];
  }

  /** Runs `nft -f -` with the script as one transaction (all or nothing). */
  private run(script: string): Promise<void> {
    const [cmd, args] = this.argv(['-f', '-']);
    return new Promise((resolve, reject) => {
      const child = spawn(cmd, args, { stdio: ['pipe', 'ignore', 'pipe'] });
      let err = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
      child.on('error', (e) => reject(new NftError(`nft: ${e.message}`)));
      child.on('close', (code) => (code === 0 ? resolve() : reject(new NftError(`nft: ${err.trim() || `exit code ${code}`}`))));
      child.stdin.end(script);
    });
  }

  /** Removes the table a crashed earlier run left (a no-op when there is none). */
  async removeResidue(): Promise<void> {
    await this.run(`table inet ${this.table} {}\ndelete table inet ${this.table}\n`);
  }

  async install(sources: string[]): Promise<void> {
    await this.run(installScript(this.opts, sources));
    this.installed = true;
    this.lastSources = sources.join(',');
  }

  /** Replaces the project addresses (one transaction: never a moment without them). */
  async setSources(sources: string[]): Promise<void> {
    if (!this.installed) return;
    const key = sources.join(',');
    if (key === this.lastSources) return;
    await this.run(elementsScript(this.table, sources).join('\n') + '\n');
    this.lastSources = key;
  }

  /** Packets dropped so far (0 when the table is gone or nft fails: status must not fail). */
  dropped(): number {
    if (!this.installed) return 0;
    const [cmd, args] = this.argv(['-j', 'list', 'counter', 'inet', this.table, DROP_REASON]);
    try {
      const out = JSON.parse(execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 2000 }));
      for (const item of out.nftables ?? []) if (item.counter) return Number(item.counter.packets) || 0;
    } catch {
      // table removed from outside, or nft missing
    }
    return 0;
  }

  async teardown(): Promise<void> {
    if (!this.installed) return;
    await this.run(`delete table inet ${this.table}\n`);
    this.installed = false;
  }
}
