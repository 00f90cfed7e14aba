/**
 * Transparent interception of the pod's DNS inside its network namespace, with
 * nftables: the pod's resolv.conf and image stay as they are.
 *
 *   table inet <name> {
 *     chain output {
 *       type nat hook output priority -100; policy accept;
 *       meta mark <fwmark> return                          # the proxy's own upstream queries
 *       ip  daddr { <cluster DNS v4> } udp/tcp dport 53 redirect to :<port>
 *       ip6 daddr { <cluster DNS v6> } udp/tcp dport 53 redirect to :<port>
 *     }
 *   }
 *
 * `redirect` in the output hook sends the packet to the loopback address of its
 * family (127.0.0.1 / ::1), where the proxy listens; conntrack turns the replies'
 * source back into the cluster DNS address. The table is tenc's alone: removal
 * deletes it whole, and a crashed run's table (same name) is removed before install.
 */
import { runNft } from '../io/nft.js';
import type { Logger } from '../log.js';

export interface InterceptOptions {
  /** nftables table name (family inet). */
  table: string;
  fwmark: number;
  /** The addresses whose port 53 is redirected (the cluster DNS servers). */
  servers: string[];
  port: number;
  /** The nft binary (tests). */
  nft?: string;
}

/** The ruleset text `nft -f -` loads. */
export function interceptRuleset(o: InterceptOptions): string {
  if (!/^[A-Za-z][A-Za-z0-9_]{0,30}$/.test(o.table)) throw new RangeError(`intercept: bad table name ${o.table}`);
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535) throw new RangeError(`intercept: bad port ${o.port}`);
  const v4 = o.servers.filter((s) => !s.includes(':'));
  const v6 = o.servers.filter((s) => s.includes(':'));
  const lines = [
    `table inet ${o.table} {`,
    '  chain output {',
    '    type nat hook output priority -100; policy accept;',
    `    meta mark 0x${o.fwmark.toString(16)} return`,
  ];
  for (const [fam, list] of [['ip', v4], ['ip6', v6]] as const) {
    if (list.length === 0) continue;
    for (const proto of ['udp', 'tcp']) lines.push(`    ${fam} daddr { ${list.join(', ')} } ${proto} dport 53 redirect to :${o.port}`);
  }
  lines.push('  }', '}');
  return lines.join('\n') + '\n';
}

/**
 * Removes the table of a crashed run that had the DNS proxy on, whether or not this
 * run has it (a stale redirect would send the pod's DNS to a closed port). True if
 * there was one.
 */
export async function removeInterceptResidue(table: string, nft = 'nft'): Promise<boolean> {
  const list = await runNft(nft, ['list', 'tables']);
  if (!list.split('\n').some((l) => l.trim() === `table inet ${table}`)) return false;
  await runNft(nft, ['delete', 'table', 'inet', table]);
  return true;
}

export class DnsIntercept {
  private installed = false;
  private readonly nft: string;

  constructor(private readonly o: InterceptOptions) {
    this.nft = o.nft ?? 'nft';
    interceptRuleset(o); // validates
  }

  /** Removes a table of that name left by a crashed earlier run; true if there was one. */
  async removeResidue(): Promise<boolean> {
    return removeInterceptResidue(this.o.table, this.nft);
  }

  async install(): Promise<void> {
    if (this.installed) throw new Error('DnsIntercept.install called twice');
    await runNft(this.nft, ['-f', '-'], interceptRuleset(this.o));
    this.installed = true;
  }

  async remove(): Promise<void> {
    if (!this.installed) return;
    await runNft(this.nft, ['delete', 'table', 'inet', this.o.table]);
    this.installed = false;
  }
}

/** The nftables table of a pod's DNS interception. */
export function interceptTable(ifname: string): string {
  return `tenc_dns_${ifname.replace(/[^A-Za-z0-9_]/g, '_')}`;
}

/**
 * For a pod without the DNS proxy: removes a crashed earlier run's interception, if any
 * (no nft: nothing to do). Here, not in service.ts, so such a pod loads no DNS proxy code.
 */
export async function removeDnsResidue(ifname: string, log: Logger): Promise<void> {
  const table = interceptTable(ifname);
  try {
    if (await removeInterceptResidue(table)) log.warn({ table }, 'dns: removed the nftables table of an earlier run');
  } catch (e) {
    log.debug({ err: (e as Error).message }, 'dns: no nftables to check for residue');
  }
}
