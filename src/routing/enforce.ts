/**
 * Enforcement in the pod's network namespace, one nftables table per interface,
 * both directions; changes are per configuration change, never per packet.
 *
 * Input ("pods reject unencrypted traffic from project pods", config "enforce"):
 * plaintext that arrives on an ordinary interface from a project address is dropped
 * and counted. Project traffic must come through tenc0, where the engine has
 * authenticated it.
 *
 * Output (always, whenever the routing guards exist): a packet to a project
 * destination or into dns.classifyCidrs that leaves through any interface but tenc0
 * without tenc's fwmark is dropped and counted. Policy routing alone does not stop a
 * socket that picks its interface itself (SO_BINDTODEVICE, IP_PKTINFO /
 * IP_UNICAST_IF, SO_DONTROUTE): those skip the tenc0 routes and the unreachable
 * guards. tenc's own UDP and the DNS proxy's upstream queries carry the fwmark
 * (SO_MARK, which needs CAP_NET_ADMIN/CAP_NET_RAW). Bypassed hosts of the
 * classify ranges (not project traffic, see policy.ts) are let through; a bypass
 * never lets a project address through.
 *
 * The project addresses are the peers' allowed IPs, the service VIPs and the
 * project's members (set-members: pods whose key may not be known yet), kept in
 * step at run time.
 *
 *   table inet tenc_<ifname> {
 *     counter plaintext_from_project {}
 *     counter plaintext_to_project {}
 *     set project4 / project6   { flags interval; }   peers, VIPs, members
 *     set classify4 / classify6 { flags interval; }   dns.classifyCidrs
 *     set bypass4 / bypass6     { flags interval; }   bypassed hosts
 *     chain input {                                   (only with "enforce")
 *       type filter hook input priority filter - 10; policy accept;
 *       iifname { "tenc0", "lo" } accept              decrypted (tun or raw injection)
 *       udp dport 51820 accept                        tenc's own datagrams
 *       icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept
 *       jump policy_in                                TencPolicy exempt ports (policy-rules.ts)
 *       ip saddr @project4 counter name plaintext_from_project drop
 *       ip6 saddr @project6 counter name plaintext_from_project drop
 *     }
 *     chain output {
 *       type filter hook output priority filter - 10; policy accept;
 *       oifname { "tenc0", "lo" } accept
 *       meta mark 0xcb84 accept                       tenc's UDP, DNS proxy upstreams
 *       icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept
 *       jump policy_out                               TencPolicy exempt ports (policy-rules.ts)
 *       ip daddr @project4 counter name plaintext_to_project drop      (and ip6)
 *       ip daddr @bypass4 accept                                        (and ip6)
 *       ip daddr @classify4 counter name plaintext_to_project drop     (and ip6)
 *     }
 *   }
 *
 * Lifetime (fail closed, like the guards): installed right after the routing
 * guards; a clean stop deletes it only when the guards go too. A crash, a failed
 * start or a stop with failClosedOnStop leaves it; the next start replaces it in one
 * transaction (the old table deleted and the new one made atomically: never a
 * moment without it, never two).
 */
import { runProcess } from '../io/run.js';
import { runNft } from '../io/nft.js';
import type { NetnsScope } from '../io/netns.js';
import { Address4, Address6 } from 'ip-address';

/** Counter of plaintext from a project address dropped on input. */
export const DROP_REASON = 'plaintext_from_project';
/** Counter of packets to a project destination dropped on output (not via tenc0, no fwmark). */
export const EGRESS_DROP_REASON = 'plaintext_to_project';

export interface EnforcementOptions {
  ifname: string;
  listenPort: number;
  /** tenc's fwmark (SO_MARK of its UDP socket and the DNS proxy's upstream sockets). */
  fwmark: number;
  /** Drop plaintext from project addresses on input (config "enforce"); output is always on. */
  input: boolean;
  /** Named network namespace to act in (tests, through `ip netns exec`); default the current one. */
  netns?: string;
  /** A namespace to run nft in (a path, or a pod host's pod's scope: runProcess enters it, no ip process). */
  netnsPath?: string | NetnsScope;
}

export interface EnforcementSets {
  /** Project addresses: peers' allowed IPs, service VIPs, members (canonical CIDRs). */
  project: string[];
  /** dns.classifyCidrs: dropped on output outside tenc0 unless bypassed. */
  classify: string[];
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

/**
 * The CIDRs without duplicates and without those another one covers (CIDRs either
 * nest or are disjoint): what an interval set takes without overlap errors.
 * O(n log n); the input order does not matter; the output is sorted.
 */
export function coverMinimal(cidrs: string[]): string[] {
  const parsed = new Map<string, { start: bigint; end: bigint; v6: boolean }>();
  for (const c of cidrs) {
    if (parsed.has(c)) continue;
    const [a, l] = c.split('/');
    const v6 = a.includes(':');
    const width = v6 ? 128 : 32;
    const len = l === undefined ? width : Number(l);
    const bits = v6 ? new Address6(a).bigInt() : new Address4(a).bigInt();
    const span = 1n << BigInt(width - len);
    const start = (bits / span) * span;
    parsed.set(c, { start, end: start + span - 1n, v6 });
  }
  const list = [...parsed.entries()].sort(([, x], [, y]) =>
    x.v6 !== y.v6 ? (x.v6 ? 1 : -1) : x.start !== y.start ? (x.start < y.start ? -1 : 1) : x.end > y.end ? -1 : x.end < y.end ? 1 : 0,
  );
  const out: string[] = [];
  let last: { end: bigint; v6: boolean } | null = null;
  for (const [c, r] of list) {
    if (last !== null && last.v6 === r.v6 && r.end <= last.end) continue;
    out.push(c);
    last = r;
  }
  return out;
}

const ND = 'icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept';

/** The table's definition, without elements. */
function tableScript(o: EnforcementOptions): string[] {
  const t = tableName(o.ifname);
  const dev = JSON.stringify(o.ifname);
  const set = (name: string, type: string) => `  set ${name} { type ${type}; flags interval; auto-merge; }`;
  const input = o.input
    ? [
        '  chain input {',
        '    type filter hook input priority filter - 10; policy accept;',
        `    iifname { ${dev}, "lo" } accept`,
        `    udp dport ${o.listenPort} accept`,
        // an IPv6 fragment after the first has no transport header to match: without
        // conntrack (whose defrag runs before this hook) it meets this chain alone, and
        // IPv6 reassembles only after it. Let it by: the first fragment decides (a
        // datagram whose first fragment is dropped is never reassembled), as for IPv4,
        // which reassembles before this hook.
        '    frag frag-off != 0 accept',
        `    ${ND}`,
        '    jump policy_in',
        `    ip saddr @project4 counter name ${DROP_REASON} drop`,
        `    ip6 saddr @project6 counter name ${DROP_REASON} drop`,
        '  }',
      ]
    : [];
  return [
    `table inet ${t} {`,
    `  counter ${DROP_REASON} {}`,
    `  counter ${EGRESS_DROP_REASON} {}`,
    set('project4', 'ipv4_addr'),
    set('project6', 'ipv6_addr'),
    set('classify4', 'ipv4_addr'),
    set('classify6', 'ipv6_addr'),
    set('bypass4', 'ipv4_addr'),
    set('bypass6', 'ipv6_addr'),
    // TencPolicy exempt ports (policy-rules.ts fills them; empty: nothing exempt)
    '  chain policy_in {',
    '  }',
    '  chain policy_out {',
    '  }',
    ...input,
    '  chain output {',
    '    type filter hook output priority filter - 10; policy accept;',
    `    oifname { ${dev}, "lo" } accept`,
    `    meta mark 0x${o.fwmark.toString(16)} accept`,
    `    ${ND}`,
    '    jump policy_out',
    `    ip daddr @project4 counter name ${EGRESS_DROP_REASON} drop`,
    `    ip6 daddr @project6 counter name ${EGRESS_DROP_REASON} drop`,
    '    ip daddr @bypass4 accept',
    '    ip6 daddr @bypass6 accept',
    `    ip daddr @classify4 counter name ${EGRESS_DROP_REASON} drop`,
    `    ip6 daddr @classify6 counter name ${EGRESS_DROP_REASON} drop`,
    '  }',
    '}',
  ];
}

/** Flushes the named set pair and fills it (one transaction with whatever runs with it). */
function elementsScript(t: string, base: string, cidrs: string[]): string[] {
  const { v4, v6 } = splitFamilies(coverMinimal(cidrs));
  const out = [`flush set inet ${t} ${base}4`, `flush set inet ${t} ${base}6`];
  // bounded lines: nft reads long element lists fine, but one line per 4096 keeps errors readable
  for (const [fam, list] of [
    ['4', v4],
    ['6', v6],
  ] as const) {
    for (let i = 0; i < list.length; i += 4096) out.push(`add element inet ${t} ${base}${fam} { ${list.slice(i, i + 4096).join(', ')} }`);
  }
  return out;
}

/**
 * The nft script of a (re)install: any table of this name (a crashed, failed or
 * fail-closed earlier run) is deleted and the new one made, in one transaction.
 */
export function installScript(o: EnforcementOptions, sets: EnforcementSets, bypasses: string[] = [], alsoRemove: string[] = []): string {
  const t = tableName(o.ifname);
  return [
    ...alsoRemove.flatMap((x) => [`table inet ${x} {}`, `delete table inet ${x}`]),
    `table inet ${t} {}`,
    `delete table inet ${t}`,
    ...tableScript(o),
    ...elementsScript(t, 'project', sets.project),
    ...elementsScript(t, 'classify', sets.classify),
    ...elementsScript(t, 'bypass', bypasses),
  ].join('\n') + '\n';
}

export class Enforcement {
  readonly table: string;
  private installed = false;
  private lastProject = '';
  private readonly bypassed = new Set<string>();
  /** Every change runs after the previous one settled (set flushes must not interleave). */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: EnforcementOptions) {
    this.table = tableName(opts.ifname);
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private argv(args: string[]): [string, string[]] {
    return this.opts.netns ? ['ip', ['netns', 'exec', this.opts.netns, 'nft', ...args]] : ['nft', args];
  }

  /** Runs `nft -f -` with the script as one transaction (all or nothing). */
  private async run(script: string): Promise<void> {
    const [cmd, args] = this.argv(['-f', '-']);
    await runNft(cmd, args, script, this.opts.netnsPath);
  }

  /**
   * Installs the table, replacing one an earlier run left (one transaction). The inet
   * tables named in alsoRemove (a crashed run's DNS interception) go in the same
   * transaction, whether or not they exist: one `nft` process instead of a listing and a
   * delete.
   */
  install(sets: EnforcementSets, alsoRemove: string[] = []): Promise<void> {
    for (const x of alsoRemove) if (!/^[A-Za-z][A-Za-z0-9_]{0,30}$/.test(x)) throw new RangeError(`enforcement: bad table name ${x}`);
    return this.serial(async () => {
      await this.run(installScript(this.opts, sets, [], alsoRemove));
      this.installed = true;
      this.lastProject = coverMinimal(sets.project).join(',');
      this.bypassed.clear();
    });
  }

  /** Replaces the project addresses (one transaction: never a moment without them). */
  setProject(cidrs: string[]): Promise<void> {
    return this.serial(async () => {
      if (!this.installed) return;
      const key = coverMinimal(cidrs).join(',');
      if (key === this.lastProject) return;
      await this.run(elementsScript(this.table, 'project', cidrs).join('\n') + '\n');
      this.lastProject = key;
    });
  }

  /**
   * Replaces the policy chains' rules (TencPolicy exempt ports, policy-rules.ts) in one
   * transaction; `rules` gets the table name. Nothing happens before install.
   */
  setPolicyChains(rules: (table: string) => string[]): Promise<void> {
    return this.serial(async () => {
      if (!this.installed) return;
      const t = this.table;
      await this.run([`flush chain inet ${t} policy_in`, `flush chain inet ${t} policy_out`, ...rules(t)].join('\n') + '\n');
    });
  }

  /** Lets a bypassed host of the classify ranges out (before its throw route goes in). */
  addBypass(cidr: string): Promise<void> {
    return this.serial(async () => {
      if (!this.installed || this.bypassed.has(cidr)) return;
      await this.run(`add element inet ${this.table} bypass${cidr.includes(':') ? 6 : 4} { ${cidr} }\n`);
      this.bypassed.add(cidr);
    });
  }

  /** Closes a bypass again (after its throw route is gone). */
  removeBypass(cidr: string): Promise<void> {
    return this.serial(async () => {
      if (!this.installed || !this.bypassed.has(cidr)) return;
      await this.run(`delete element inet ${this.table} bypass${cidr.includes(':') ? 6 : 4} { ${cidr} }\n`);
      this.bypassed.delete(cidr);
    });
  }

  /**
   * Packets dropped so far by each counter (0 when the table is gone or nft fails: status
   * must not fail). One `nft -j list counters` through runProcess: a status request or a
   * metrics scrape no longer blocks the event loop for two synchronous `nft` children.
   */
  async dropped(): Promise<{ [DROP_REASON]: number; [EGRESS_DROP_REASON]: number }> {
    const none = { [DROP_REASON]: 0, [EGRESS_DROP_REASON]: 0 };
    if (!this.installed) return none;
    const [cmd, args] = this.argv(['-j', 'list', 'counters', 'table', 'inet', this.table]);
    const packets = new Map<string, number>();
    try {
      const r = await runProcess(cmd, args, { timeoutMs: 2000, netns: this.opts.netnsPath });
      if (r.code !== 0) return none; // table removed from outside
      for (const item of JSON.parse(r.stdout).nftables ?? []) {
        if (item.counter && typeof item.counter.name === 'string') packets.set(item.counter.name, Number(item.counter.packets) || 0);
      }
    } catch {
      return none; // nft missing, or output that is not JSON
    }
    return {
      [DROP_REASON]: this.opts.input ? (packets.get(DROP_REASON) ?? 0) : 0,
      [EGRESS_DROP_REASON]: packets.get(EGRESS_DROP_REASON) ?? 0,
    };
  }

  /** Deletes the table (a clean stop that also removes the guards). */
  teardown(): Promise<void> {
    return this.serial(async () => {
      if (!this.installed) return;
      await this.run(`table inet ${this.table} {}\ndelete table inet ${this.table}\n`);
      this.installed = false;
      this.bypassed.clear();
    });
  }

  /** Forgets the table without deleting it (fail closed: it stays after this process). */
  abandon(): void {
    this.installed = false;
  }
}
