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
 *     chain upstream_out {
 *       type filter hook output priority -300; policy accept;
 *       meta mark <fwmark> ip daddr { <cluster DNS v4> } udp/tcp dport 53 ct zone set 53   (and ip6)
 *     }
 *     chain upstream_in {
 *       type filter hook prerouting priority -300; policy accept;
 *       ip saddr { <cluster DNS v4> } udp/tcp sport 53 ct zone set 53                    (and ip6)
 *     }
 *   }
 *
 * `redirect` in the output hook sends the packet to the loopback address of its
 * family (127.0.0.1 / ::1), where the proxy listens; conntrack turns the replies'
 * source back into the cluster DNS address. The table is tenc's alone: removal
 * deletes it whole, and a crashed run's table (same name) is removed before install.
 *
 * The proxy's own upstream flows are tracked in a conntrack zone of their own
 * (UPSTREAM_CT_ZONE), set before conntrack sees the packet (priority raw): nat rules
 * apply only to a connection's first packet, so in the pod's zone an entry of a
 * proxy upstream port that the proxy has since closed (alive up to 120 s after its
 * last answer) would match a query of the pod's that happens to leave from the same
 * port, and send it to the cluster DNS unredirected, past the proxy (its answer not
 * rewritten, its addresses not routed into tenc0: issue 19.1's protection lost).
 * With the proxy rotating a port every 8 queries that was no rare event: ~5,000
 * upstream queries made ~600 such entries, a 2% chance for each query of the pod's
 * over the next two minutes (seen in CI). Every packet from a cluster DNS server's
 * port 53 is an answer to the proxy (the pod's own queries never reach a server).
 */
import { runNft } from '../io/nft.js';
import type { NetnsScope } from '../io/netns.js';
import type { Logger } from '../log.js';

/** The conntrack zone of the proxy's upstream flows (the pod's own are in zone 0). */
export const UPSTREAM_CT_ZONE = 53;

export interface InterceptOptions {
  /** nftables table name (family inet). */
  table: string;
  fwmark: number;
  /** The addresses whose port 53 is redirected (the cluster DNS servers). */
  servers: string[];
  port: number;
  /** The nft binary (tests). */
  nft?: string;
  /** A namespace to run nft in (a path, or a pod host's pod's scope); default the process's. */
  netns?: string | NetnsScope;
}

/** The ruleset text `nft -f -` loads. */
export function interceptRuleset(o: InterceptOptions): string {
  if (!/^[A-Za-z][A-Za-z0-9_]{0,30}$/.test(o.table)) throw new RangeError(`intercept: bad table name ${o.table}`);
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535) throw new RangeError(`intercept: bad port ${o.port}`);
  const v4 = o.servers.filter((s) => !s.includes(':'));
  const v6 = o.servers.filter((s) => s.includes(':'));
  const mark = `meta mark 0x${o.fwmark.toString(16)}`;
  const families = ([['ip', v4], ['ip6', v6]] as const).filter(([, list]) => list.length > 0);
  /** One rule per server family and protocol. */
  const perServer = (rule: (fam: string, servers: string, proto: string) => string) =>
    families.flatMap(([fam, list]) => ['udp', 'tcp'].map((proto) => `    ${rule(fam, `{ ${list.join(', ')} }`, proto)}`));
  return [
    `table inet ${o.table} {`,
    '  chain output {',
    '    type nat hook output priority -100; policy accept;',
    `    ${mark} return`,
    ...perServer((fam, servers, proto) => `${fam} daddr ${servers} ${proto} dport 53 redirect to :${o.port}`),
    '  }',
    '  chain upstream_out {',
    '    type filter hook output priority -300; policy accept;',
    ...perServer((fam, servers, proto) => `${mark} ${fam} daddr ${servers} ${proto} dport 53 ct zone set ${UPSTREAM_CT_ZONE}`),
    '  }',
    '  chain upstream_in {',
    '    type filter hook prerouting priority -300; policy accept;',
    ...perServer((fam, servers, proto) => `${fam} saddr ${servers} ${proto} sport 53 ct zone set ${UPSTREAM_CT_ZONE}`),
    '  }',
    '}',
    '',
  ].join('\n');
}

/**
 * Removes the table of a crashed run that had the DNS proxy on, whether or not this
 * run has it (a stale redirect would send the pod's DNS to a closed port). True if
 * there was one.
 */
export async function removeInterceptResidue(table: string, nft = 'nft', netns?: string | NetnsScope): Promise<boolean> {
  const list = await runNft(nft, ['list', 'tables'], undefined, netns);
  if (!list.split('\n').some((l) => l.trim() === `table inet ${table}`)) return false;
  await runNft(nft, ['delete', 'table', 'inet', table], undefined, netns);
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
    return removeInterceptResidue(this.o.table, this.nft, this.o.netns);
  }

  async install(): Promise<void> {
    if (this.installed) throw new Error('DnsIntercept.install called twice');
    await runNft(this.nft, ['-f', '-'], interceptRuleset(this.o), this.o.netns);
    this.installed = true;
  }

  async remove(): Promise<void> {
    if (!this.installed) return;
    await runNft(this.nft, ['delete', 'table', 'inet', this.o.table], undefined, this.o.netns);
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
export async function removeDnsResidue(ifname: string, log: Logger, netns?: string | NetnsScope): Promise<void> {
  const table = interceptTable(ifname);
  try {
    if (await removeInterceptResidue(table, 'nft', netns)) log.warn({ table }, 'dns: removed the nftables table of an earlier run');
  } catch (e) {
    log.debug({ err: (e as Error).message }, 'dns: no nftables to check for residue');
  }
}
