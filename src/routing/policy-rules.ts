/**
 * The data path of TencPolicy `exempt` ports, in the kernel only (per policy change,
 * never per packet): policy routing sends them past tenc's table, and the
 * enforcement table (enforce.ts) lets their plaintext through. Everything else of
 * the project keeps meeting tenc's rule, its tenc0 routes and guards, and the
 * enforcement drops: the fail-safe default.
 *
 *   ip rule (pref P-1, ahead of tenc's `pref P not fwmark F lookup T`):
 *     to <dst>/32 ipproto tcp dport 9100[-9102] lookup main     client side: an exempt
 *                                                               destination (VIP, endpoint)
 *     from <own address> ipproto tcp sport 9100[-9102] lookup main   server side: replies
 *                                                               of the pod's own exempt ports
 *   nft (table inet tenc_<ifname>, chains jumped to before the project drops):
 *     chain policy_out {
 *       ip daddr { dsts } meta l4proto tcp th dport 9100-9102 ct direction original accept
 *       ip saddr <own> meta l4proto tcp th sport 9100-9102 ct direction reply accept
 *     }
 *     chain policy_in {
 *       ip saddr { dsts } meta l4proto tcp th sport 9100-9102 ct direction reply accept   replies of exempt servers
 *       ip daddr <own> meta l4proto tcp th dport 9100-9102 ct direction original accept   the pod's own exempt ports
 *     }
 *
 *   The accepts follow the connection (conntrack), not the port alone: a flow that
 *   STARTS from an exempt port (a socket bound to 9100 connecting to a peer's 7000, or
 *   a packet spoofed from an exempt server's address and port) is not exempt. Ports
 *   alone let it through both ways: the peer accepted it as an exempt server's reply,
 *   and its answer, to destination port 9100, as a request to an exempt server. The
 *   routing cannot see conntrack: such a flow is routed past tenc0 and then dropped
 *   by the enforcement table (fail closed). Conntrack runs in the pod's namespace while
 *   any exemption is in force (nft's ct expression turns it on there).
 *
 * Order of a change (never a moment where plaintext is routed out but dropped, and
 * removals send traffic back into the tunnel before its plaintext is refused):
 * the nft chains get the union of old and new, then the ip rules change (deletions
 * first), then the chains get the new set alone. A failing step leaves the
 * previous accepts in the chains (a superset) and throws: the agent retries.
 *
 * Lifetime: like the routing guards. A stop that keeps the guards (fail closed)
 * keeps the exemptions too (exempt traffic never went through tenc); a clean stop
 * removes them. A new run deletes every rule at pref P-1 first (residue) and its
 * enforcement install starts with empty chains: until the agent sends the policy
 * again, exempt ports are encrypted (the default), never the reverse.
 */
import { IpCommand, IpCommandError, type Family } from './ip.js';
import type { RoutingSnapshot } from './snapshot.js';
import type { PodPolicy, PolicyPort } from '../policy/policy.js';

export interface ExemptTo {
  /** A host CIDR (a VIP, an endpoint or selected pod address). */
  cidr: string;
  protocol: 'tcp' | 'udp';
  port: number;
  endPort: number;
}

export interface ExemptSet {
  /** Exempt destinations and ports this pod reaches (client side). */
  to: ExemptTo[];
  /** The pod's own exempt ports (server side). */
  local: PolicyPort[];
}

const fam = (cidr: string): Family => (cidr.includes(':') ? 6 : 4);
const range = (p: { port: number; endPort: number }) => (p.port === p.endPort ? `${p.port}` : `${p.port}-${p.endPort}`);

/**
 * What a pod's policies mean for its kernel: the exempt policies' addresses and ports
 * (client side; the pod's own addresses left out) and the exempt ports it serves.
 * `encrypt` policies change nothing here (they state the default). Sorted, deduplicated.
 */
export function exemptOf(policies: PodPolicy[], own: string[]): ExemptSet {
  const ownHosts = new Set(own.map((a) => `${a}/${a.includes(':') ? 128 : 32}`));
  const to = new Map<string, ExemptTo>();
  const local = new Map<string, PolicyPort>();
  for (const p of policies) {
    if (p.mode !== 'exempt') continue;
    for (const q of p.ports) {
      if (p.local) local.set(`${q.protocol}/${q.port}/${q.endPort}`, q);
      for (const cidr of p.addresses) if (!ownHosts.has(cidr)) to.set(`${cidr} ${q.protocol}/${q.port}/${q.endPort}`, { cidr, ...q });
    }
  }
  const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  return { to: [...to.entries()].sort(([a], [b]) => cmp(a, b)).map(([, v]) => v), local: [...local.entries()].sort(([a], [b]) => cmp(a, b)).map(([, v]) => v) };
}

/** The ip rule specs (without add/del) of a set, per family. */
export function ruleSpecs(set: ExemptSet, own: { v4: string | null; v6: string | null }, priority: number): { 4: string[]; 6: string[] } {
  const out: { 4: string[]; 6: string[] } = { 4: [], 6: [] };
  for (const t of set.to) out[fam(t.cidr)].push(`pref ${priority} to ${t.cidr} ipproto ${t.protocol} dport ${range(t)} lookup main`);
  for (const q of set.local) {
    if (own.v4) out[4].push(`pref ${priority} from ${own.v4}/32 ipproto ${q.protocol} sport ${range(q)} lookup main`);
    if (own.v6) out[6].push(`pref ${priority} from ${own.v6}/128 ipproto ${q.protocol} sport ${range(q)} lookup main`);
  }
  return out;
}

/** The nft rules of the policy chains (the lines after `flush chain`), one per family, protocol and port range. */
export function chainRules(table: string, set: ExemptSet, own: { v4: string | null; v6: string | null }): string[] {
  const lines: string[] = [];
  const groups = new Map<string, { f: Family; q: ExemptTo; cidrs: string[] }>();
  for (const t of set.to) {
    const k = `${fam(t.cidr)} ${t.protocol} ${range(t)}`;
    const g = groups.get(k) ?? { f: fam(t.cidr), q: t, cidrs: [] };
    g.cidrs.push(t.cidr);
    groups.set(k, g);
  }
  for (const { f, q, cidrs } of groups.values()) {
    const ip = f === 4 ? 'ip' : 'ip6';
    const addrs = `{ ${cidrs.join(', ')} }`;
    lines.push(`add rule inet ${table} policy_out ${ip} daddr ${addrs} meta l4proto ${q.protocol} th dport ${range(q)} ct direction original accept`);
    lines.push(`add rule inet ${table} policy_in ${ip} saddr ${addrs} meta l4proto ${q.protocol} th sport ${range(q)} ct direction reply accept`);
  }
  for (const q of set.local) {
    for (const [ip, a] of [
      ['ip', own.v4],
      ['ip6', own.v6],
    ] as const) {
      if (!a) continue;
      lines.push(`add rule inet ${table} policy_out ${ip} saddr ${a} meta l4proto ${q.protocol} th sport ${range(q)} ct direction reply accept`);
      lines.push(`add rule inet ${table} policy_in ${ip} daddr ${a} meta l4proto ${q.protocol} th dport ${range(q)} ct direction original accept`);
    }
  }
  return lines;
}

/** Union of two sets (the accepts kept while the rules change). */
function union(a: ExemptSet, b: ExemptSet): ExemptSet {
  const key = (t: ExemptTo) => `${t.cidr} ${t.protocol}/${t.port}/${t.endPort}`;
  const lkey = (q: PolicyPort) => `${q.protocol}/${q.port}/${q.endPort}`;
  const to = new Map([...a.to, ...b.to].map((t) => [key(t), t]));
  const local = new Map([...a.local, ...b.local].map((q) => [lkey(q), q]));
  return { to: [...to.values()], local: [...local.values()] };
}

/**
 * The spec (for `ip rule del`) of a dumped rule (`ip -j rule show`) if it has the shape
 * ruleSpecs writes at `priority`: lookup main, an ipproto, a source or destination port
 * (range); null for any other rule.
 */
export function residueSpec(r: unknown, priority: number): string | null {
  if (typeof r !== 'object' || r === null) return null;
  const o = r as Record<string, unknown>;
  if (o.priority !== priority || o.table !== 'main' || (o.ipproto !== 'tcp' && o.ipproto !== 'udp')) return null;
  const port = (k: 'sport' | 'dport'): string | null => {
    const one = o[k];
    const a = o[`${k}_start`];
    const b = o[`${k}_end`];
    if (Number.isInteger(one)) return `${k} ${one as number}`;
    if (Number.isInteger(a) && Number.isInteger(b)) return `${k} ${a as number}-${b as number}`;
    return null;
  };
  const ports = [port('sport'), port('dport')].filter((x): x is string => x !== null);
  if (ports.length === 0) return null;
  const addr = (k: 'src' | 'dst', word: 'from' | 'to'): string | null => {
    const a = o[k];
    if (a === undefined || a === 'all') return '';
    if (typeof a !== 'string' || !/^[0-9a-fA-F.:]+$/.test(a)) return null;
    const len = o[`${k}len`];
    return ` ${word} ${a}${Number.isInteger(len) ? `/${len as number}` : ''}`;
  };
  const from = addr('src', 'from');
  const to = addr('dst', 'to');
  if (from === null || to === null) return null;
  return `pref ${priority}${from}${to} ipproto ${o.ipproto} ${ports.join(' ')} lookup main`;
}

export interface PolicyRulesOptions {
  /** The pref of the exempt rules: tenc's rule priority - 1. */
  priority: number;
  addresses: { v4: string | null; v6: string | null };
  ip?: IpCommand;
  /** Replaces the enforcement table's policy chains (one nft transaction); null: no table. */
  setChains: (rules: (table: string) => string[]) => Promise<void>;
}

export const EMPTY_EXEMPT: ExemptSet = { to: [], local: [] };

export class PolicyRules {
  private readonly ip: IpCommand;
  private current: ExemptSet = EMPTY_EXEMPT;
  /** The rule specs in place, per family (exactly what teardown deletes). */
  private applied: { 4: Set<string>; 6: Set<string> } = { 4: new Set(), 6: new Set() };
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: PolicyRulesOptions) {
    this.ip = o.ip ?? new IpCommand();
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** What is in force now. */
  exempt(): ExemptSet {
    return this.current;
  }

  /** Rule count per family (status, tests). */
  ruleCount(): number {
    return this.applied[4].size + this.applied[6].size;
  }

  /**
   * Deletes the exempt rules at the exempt pref that a crashed or fail-closed earlier
   * run left (residue). Returns how many. Only rules of the shape this class writes
   * (`lookup main` with an ipproto and a port) are touched, each deleted by its own
   * selectors: another rule at that pref (an administrator's, or the kernel's `lookup
   * local` were the pref ever 0) stays.
   */
  removeResidue(snap: RoutingSnapshot | null = null): Promise<number> {
    return this.serial(async () => {
      let n = 0;
      // both dumps at once (read-only), or the start's snapshot (snapshot.ts)
      const dumps = snap
        ? ([4, 6] as const).map((f) => snap.rules[f].filter((r) => r.priority === this.o.priority))
        : await Promise.all(([4, 6] as const).map((f) => this.ip.json([`-${f}`, 'rule', 'show', 'pref', String(this.o.priority)])));
      for (const f of [4, 6] as const) {
        const specs = (dumps[f === 4 ? 0 : 1] as unknown[]).map((r) => residueSpec(r, this.o.priority)).filter((r): r is string => r !== null);
        if (specs.length === 0) continue;
        try {
          await this.ip.batch(f, specs.map((r) => `rule del ${r}`));
        } catch (e) {
          if (!(e instanceof IpCommandError)) throw e;
        }
        n += specs.length;
      }
      return n;
    });
  }

  /** Makes the exemptions `next` (see the header for the order). */
  apply(next: ExemptSet): Promise<void> {
    return this.serial(async () => {
      const own = this.o.addresses;
      await this.o.setChains((t) => chainRules(t, union(this.current, next), own));
      const want = ruleSpecs(next, own, this.o.priority);
      for (const f of [4, 6] as const) {
        const keep = new Set(want[f]);
        const gone = [...this.applied[f]].filter((r) => !keep.has(r));
        const added = want[f].filter((r) => !this.applied[f].has(r));
        for (const r of gone) {
          try {
            await this.ip.batch(f, [`rule del ${r}`]);
          } catch (e) {
            if (!(e instanceof IpCommandError) || !/No such file|not found/i.test(e.stderr)) throw e;
          }
          this.applied[f].delete(r);
        }
        for (const r of added) {
          await this.ip.batch(f, [`rule add ${r}`]);
          this.applied[f].add(r);
        }
      }
      this.current = next;
      await this.o.setChains((t) => chainRules(t, next, own));
    });
  }

  /** Deletes the rules this run added (a clean stop); keepRules: leave them (fail closed). */
  teardown(opts: { keepRules?: boolean } = {}): Promise<void> {
    return this.serial(async () => {
      if (opts.keepRules) return;
      for (const f of [4, 6] as const) {
        for (const r of [...this.applied[f]]) {
          try {
            await this.ip.batch(f, [`rule del ${r}`]);
          } catch {
            // gone already
          }
          this.applied[f].delete(r);
        }
      }
      this.current = EMPTY_EXEMPT;
    });
  }
}
