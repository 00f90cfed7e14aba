/**
 * Policy routing inside the pod's network namespace.
 *
 *   ip rule:  pref P  not fwmark F  lookup T        (IPv4 and IPv6)
 *   table T:  <project destination> dev tenc0 [src <pod address>]
 *
 * Project destinations (peer allowed IPs, service VIPs, later DNS answers) are
 * routed into tenc0 through tenc's own table T. tenc's UDP socket sets SO_MARK=F,
 * so its own datagrams skip the rule, follow the main table and never loop back
 * into tenc0. A destination not in T finds no route there and falls through to
 * the main table: all other traffic is untouched.
 *
 * Fail closed: each destination also gets `unreachable <dst> metric 4294967295` in
 * table T. While tenc0 exists its route (lower metric) wins; if tenc dies, its TUN
 * and the tenc0 routes vanish with it, the rule stays, and the guard makes project
 * traffic fail with "no route to host" instead of leaving in the clear through the
 * main table. The rule and the guards are never absent while tenc (re)starts:
 *   removeResidue   deletes only what belonged to the dead TUN (its routes and
 *                   addresses); a crashed run's rule and guards are adopted;
 *   guard           adds the rule and guards for the config's destinations
 *                   (no tenc0 needed), before the TUN is opened;
 *   install         adds the tenc0 routes; adopted guards no destination of this
 *                   run needs are then removed;
 *   teardown        removes everything, or with keepGuards everything but the rule
 *                   and guards (a failed start; a stop with failClosedOnStop).
 *
 * Exactness: every change that succeeded is recorded as an undo entry; teardown
 * runs the undo entries in reverse order, and nothing else. Routes carry a
 * reference count so two sources (a peer, a DNS answer) can share one route. A
 * caller that keeps its own account of the references it holds (the pod, per peer
 * and for the services) is told each reference a call took or dropped, also by a
 * call that failed part way (addRoutes onRef, removeRoute onRelease): its retry then
 * asks for exactly what is still missing.
 * Every change (install, add, remove, residue, teardown) runs through one promise
 * chain, one after the other, so concurrent callers (the control socket, DNS
 * answers, TTL expiry) never read a count another change is about to update.
 *
 * Bypass routes (`throw <dst> proto 117` in table T, addBypass/removeBypass): a
 * host inside one of the bypass ranges (dns.classifyCidrs, routed into tenc0 as a
 * whole) that was classified as not project traffic; the lookup leaves T at the
 * throw and continues with the main table. A bypass is refused unless it lies in a
 * bypass range and no other tenc0 route of this run (a peer's allowed IPs, a VIP, a
 * DNS answer) covers it; a tenc0 route added later deletes every bypass it covers
 * first (those packets then meet the range's tenc0 route, never the main table).
 * Bypasses asked for while an earlier change runs are added together, one `ip -batch`
 * per family (a scan of the ranges must not fork one `ip` per address).
 * Added with `add`, never `replace`, so a bypass can never displace a tenc0 route of
 * the same prefix; deleted by its proto, since IPv6 `route del` does not match the
 * route type and would otherwise delete a tenc0 route or a guard of that prefix.
 *
 * Residue of a crashed run (removeResidue, run before guard and install):
 *  - rules (IPv4 and IPv6) whose priority is P and whose table is T: adopted
 *    (one per family; duplicates deleted);
 *  - unreachable routes in table T with the guard metric 4294967295: adopted;
 *  - routes in table T whose device is the interface name (tenc0): deleted;
 *  - throw routes with proto 117 in table T (bypasses): deleted;
 *  - the pod's own addresses as /32 or /128 on that interface, if it still exists: deleted.
 * Routes in T through other devices are left alone (logged), as not ours.
 */
import { Address4, Address6 } from 'ip-address';
import { IpCommand, IpCommandError, type Family } from './ip.js';
import { snapshotLinks, type RoutingSnapshot } from './snapshot.js';
import { addressFamily } from '../net/address.js';
import { silentLogger, type Logger } from '../log.js';

export interface PolicyRoutingOptions {
  ifname: string;
  table: number;
  priority: number;
  fwmark: number;
  /** The pod's own addresses; used as the routes' preferred source. */
  addresses: { v4: string | null; v6: string | null };
  /** Ranges inside which bypasses may be made (dns.classifyCidrs); their own tenc0 routes do not block one. */
  bypassRanges?: string[];
  ip?: IpCommand;
  log?: Logger;
}

/** tenc0's MTU and state before install(): what stop() restores. */
interface LinkBefore {
  mtu: number;
  wasUp: boolean;
}

/** A link of `ip -j link` as it was: its MTU, and whether it was up. */
function linkBefore(link: { mtu: number; flags?: unknown }): LinkBefore {
  return { mtu: link.mtu, wasUp: Array.isArray(link.flags) && link.flags.includes('UP') };
}

type Undo =
  | { kind: 'link'; mtu: number; wasUp: boolean }
  | { kind: 'addr'; family: Family; cidr: string }
  | { kind: 'route'; family: Family; cidr: string }
  | { kind: 'guard'; family: Family; cidr: string }
  | { kind: 'bypass'; family: Family; cidr: string }
  | { kind: 'rule'; family: Family };

export interface ResidueReport {
  /** Rules adopted (kept in place, now owned by this run). */
  rules: number;
  /** Unreachable guards adopted (kept in place, now owned by this run). */
  guards: number;
  /** tenc0 routes and bypass (throw) routes deleted. */
  routes: number;
  /** Pod addresses deleted from the interface. */
  addresses: number;
}

export interface RemoveRouteOptions {
  /**
   * When the last reference goes, delete only the tenc0 route and keep its
   * unreachable guard (a DNS answer's route after its TTL: a client that still uses
   * the cached address meets "no route to host", never the main table). Not kept
   * when another route of this run covers the destination (the guard would shadow
   * it). At most MAX_KEPT_GUARDS are kept, the oldest deleted first.
   */
  keepGuard?: boolean;
  /**
   * Called once the reference is dropped, also when the call fails after that (the
   * route deleted, its guard not): the caller no longer holds it. A call that fails
   * without calling it dropped nothing.
   */
  onRelease?: () => void;
}

export interface AddRoutesOptions {
  /**
   * Called for each reference as it is taken (a cidr listed twice: twice), also by a
   * call that fails later: the references a failed call took are exactly these (a
   * cidr not told took none, though its guard may be in place).
   */
  onRef?: (cidr: string) => void;
}

/** Guards kept by removeRoute({ keepGuard }) at most. */
export const MAX_KEPT_GUARDS = 16384;

export interface TeardownOptions {
  /** Leave the rule and the unreachable guards in place (fail closed). */
  keepGuards?: boolean;
}

/** Routing protocol number of bypass routes: they are found and deleted by it. */
export const BYPASS_PROTO = 117;

/** Does CIDR `outer` contain CIDR `inner` (same family, prefix at least as long)? */
export function cidrCovers(outer: string, inner: string): boolean {
  const [oa, ol] = outer.split('/');
  const [ia, il] = inner.split('/');
  const v6 = oa.includes(':');
  if (v6 !== ia.includes(':')) return false;
  const width = v6 ? 128 : 32;
  const olen = ol === undefined ? width : Number(ol);
  const ilen = il === undefined ? width : Number(il);
  if (ilen < olen) return false;
  const bits = (a: string) => (v6 ? new Address6(a).bigInt() : new Address4(a).bigInt());
  const shift = BigInt(width - olen);
  return bits(oa) >> shift === bits(ia) >> shift;
}

/** Metric of the fail-closed unreachable routes: the largest, so the tenc0 route always wins. */
export const GUARD_METRIC = 4294967295;

/** `ip -j route` prints host routes without a prefix length: give them theirs. */
function withPrefix(dst: string): string {
  if (dst.includes('/')) return dst;
  return `${dst}/${dst.includes(':') ? 128 : 32}`;
}

function familyOf(cidr: string): Family {
  const f = addressFamily(cidr.split('/')[0]);
  if (f === null) throw new TypeError(`not an IPv4/IPv6 CIDR: ${cidr}`);
  return f;
}

/** The `ip -batch` line of a fail-closed guard: `unreachable CIDR` at the largest metric in table T. */
export function guardLine(table: number, cidr: string, op: 'replace' | 'del'): string {
  return `route ${op} unreachable ${cidr} table ${table} metric ${GUARD_METRIC}`;
}

/** The `ip -batch` line of tenc's policy rule (one per family): everything without tenc's fwmark looks up table T. */
export function ruleLine(o: { table: number; priority: number; fwmark: number }): string {
  return `rule add not fwmark 0x${o.fwmark.toString(16)} table ${o.table} pref ${o.priority}`;
}

/**
 * What guard() puts in place, as `ip -batch` lines per family: the guards, then the
 * rule (a family without destinations gets neither). For a caller outside the pod (the
 * node agent makes a pod fail closed before its proxy starts); the proxy's
 * removeResidue() then adopts the rule and the guards. A rule that already exists makes
 * its (last) line fail with "File exists": the guards before it took effect.
 */
export function guardBatch(o: { table: number; priority: number; fwmark: number }, destinations: string[]): Record<Family, string[]> {
  const out: Record<Family, string[]> = { 4: [], 6: [] };
  for (const fam of [4, 6] as const) {
    const list = [...new Set(destinations.filter((c) => familyOf(c) === fam))];
    if (list.length > 0) out[fam] = [...list.map((c) => guardLine(o.table, c, 'replace')), ruleLine(o)];
  }
  return out;
}

export class PolicyRouting {
  private readonly ip: IpCommand;
  private readonly log: Logger;
  private readonly undo: Undo[] = [];
  private readonly refs = new Map<string, number>();
  /** Destinations whose guard is recorded in undo (one entry each). */
  private readonly guarded = new Set<string>();
  /** Bypass (throw) routes installed. */
  private readonly bypassed = new Set<string>();
  /** Guards kept without their route (removeRoute keepGuard), oldest first. */
  private readonly kept = new Set<string>();
  private readonly srcFor: Record<Family, string | null> = { 4: null, 6: null };
  private installed = false;
  /** The start's snapshot (snapshot.ts) removeResidue read; install reads it too. */
  private snap: RoutingSnapshot | null = null;
  /** Every mutation runs after the previous one settled: reference counts are read and written in order. */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: PolicyRoutingOptions) {
    this.ip = opts.ip ?? new IpCommand();
    this.log = opts.log ?? silentLogger;
  }

  private get t(): string {
    return String(this.opts.table);
  }

  /** Runs fn after every mutation queued before it has settled (a promise-chain mutex). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** The routes currently installed (canonical CIDRs). */
  routes(): string[] {
    return [...this.refs.keys()];
  }

  /**
   * Removes what a crashed earlier run with the same table/priority/interface left.
   * With the start's snapshot (snapshot.ts, read just before: nothing changed since) it
   * reads its dumps there instead of running five `ip` processes.
   */
  removeResidue(snap: RoutingSnapshot | null = null): Promise<ResidueReport> {
    return this.serial(() => this.removeResidueNow(snap));
  }

  private async removeResidueNow(snap: RoutingSnapshot | null): Promise<ResidueReport> {
    const { ifname, priority } = this.opts;
    this.snap = snap;
    const report: ResidueReport = { rules: 0, guards: 0, routes: 0, addresses: 0 };
    // the five dumps at once (read-only, independent): one ip process's latency instead of five in a row
    const dump = (args: string[]) => this.ip.json(args).catch(() => []);
    const [rules4, routes4, rules6, routes6, link] = snap
      ? [snap.rules[4], snap.table[4], snap.rules[6], snap.table[6], snapshotLinks(snap).filter((l) => l.ifname === ifname)]
      : await Promise.all([
          dump(['-4', 'rule', 'show']),
          dump(['-4', 'route', 'show', 'table', this.t]),
          dump(['-6', 'rule', 'show']),
          dump(['-6', 'route', 'show', 'table', this.t]),
          dump(['addr', 'show', 'dev', ifname]),
        ]);
    for (const fam of [4, 6] as const) {
      const rules = fam === 4 ? rules4 : rules6;
      const ours = rules.filter((r) => r.priority === priority && r.table === this.t);
      if (ours.length > 0 && !this.undo.some((u) => u.kind === 'rule' && u.family === fam)) {
        this.undo.push({ kind: 'rule', family: fam });
        report.rules++;
      }
      // duplicates (not made by tenc, which adopts): one is enough
      await this.ip.batch(fam, ours.slice(1).map(() => `rule del pref ${priority} table ${this.t}`));

      const routes = fam === 4 ? routes4 : routes6;
      const del: string[] = [];
      for (const r of routes) {
        if (r.type === 'unreachable' && r.metric === GUARD_METRIC) {
          this.recordGuard(fam, withPrefix(r.dst));
          report.guards++;
        } else if (r.dev === ifname && (r.type === undefined || r.type === 'unicast')) {
          del.push(`route del ${r.dst} dev ${ifname} table ${this.t}`);
        } else if (r.type === 'throw' && String(r.protocol) === String(BYPASS_PROTO)) {
          del.push(this.bypassLine(withPrefix(r.dst), 'del'));
        } else this.log.warn({ table: this.opts.table, route: r.dst, dev: r.dev }, 'route in tenc table through another device left alone');
      }
      await this.ip.batch(fam, del);
      report.routes += del.length;
    }
    for (const a of link[0]?.addr_info ?? []) {
      const fam: Family = a.family === 'inet6' ? 6 : 4;
      const own = fam === 4 ? this.opts.addresses.v4 : this.opts.addresses.v6;
      if (own !== null && a.local === own && a.prefixlen === (fam === 4 ? 32 : 128)) {
        await this.ip.run([`-${fam}`, 'addr', 'del', `${own}/${a.prefixlen}`, 'dev', ifname]);
        report.addresses++;
      }
    }
    if (report.rules + report.guards + report.routes + report.addresses > 0) {
      this.log.warn({ residue: report }, 'removed residue of an earlier run (its rule and guards kept, now owned by this run)');
    }
    return report;
  }

  /**
   * Fail closed before tenc0 exists: the rule and an unreachable guard for each
   * destination (no tenc0 routes). install() later adds the routes in front of them.
   */
  guard(destinations: string[]): Promise<void> {
    return this.serial(async () => {
      // each family's guards and then its rule in ONE ip -batch (its lines run in order: the
      // rule never stands without the guards); the two families at once
      const one = async (fam: Family) => {
        const list = [...new Set(destinations.filter((c) => familyOf(c) === fam))];
        if (list.length === 0) return;
        const needRule = !this.undo.some((u) => u.kind === 'rule' && u.family === fam);
        try {
          await this.ip.batch(fam, [...list.map((c) => this.guardLine(c, 'replace')), ...(needRule ? [ruleLine(this.opts)] : [])]);
        } catch (e) {
          const done = e instanceof IpCommandError ? e.linesDone : 0;
          list.slice(0, done).forEach((c) => this.recordGuard(fam, c));
          throw e;
        }
        list.forEach((c) => this.recordGuard(fam, c));
        if (needRule) this.undo.push({ kind: 'rule', family: fam });
      };
      const results = await Promise.allSettled([one(4), one(6)]);
      for (const r of results) if (r.status === 'rejected') throw r.reason;
    });
  }

  private recordGuard(fam: Family, cidr: string): void {
    if (this.guarded.has(cidr)) return;
    this.guarded.add(cidr);
    this.undo.push({ kind: 'guard', family: fam, cidr });
  }

  /** Deletes the guards no route of this run stands in front of (adopted from a crashed run). */
  private async pruneGuards(): Promise<void> {
    for (const fam of [4, 6] as const) {
      const stale = [...this.guarded].filter((c) => !this.refs.has(c) && familyOf(c) === fam);
      if (stale.length === 0) continue;
      await this.ip.batch(fam, stale.map((c) => this.guardLine(c, 'del')));
      for (const c of stale) {
        this.guarded.delete(c);
        const i = this.undo.findIndex((u) => u.kind === 'guard' && u.cidr === c);
        if (i >= 0) this.undo.splice(i, 1);
      }
      this.log.info({ table: this.opts.table, guards: stale }, 'removed guards of an earlier run no destination needs');
    }
  }

  /** Sets tenc0's MTU and brings it up, makes the pod addresses usable as source, adds routes and rules. */
  install(mtu: number, destinations: string[]): Promise<void> {
    return this.serial(() => this.installNow(mtu, destinations));
  }

  private async installNow(mtu: number, destinations: string[]): Promise<void> {
    if (this.installed) throw new Error('PolicyRouting.install called twice');
    this.installed = true;
    const { before, local } = this.snap ? this.linkAndAddressesFromSnapshot(this.snap) : await this.linkAndAddressesNow();
    await this.setLinkAndAddresses(before, local, mtu);
    await this.addRoutesNow(destinations);
    for (const fam of [4, 6] as const) {
      if (this.srcFor[fam] !== null) await this.ensureRule(fam);
    }
    await this.pruneGuards();
    this.log.info({ mtu, table: this.opts.table, priority: this.opts.priority, routes: this.refs.size }, 'routing installed');
  }

  /**
   * tenc0 and the local addresses from the start's snapshot (removeResidue read it;
   * nothing but the residue removal changed the namespace since): tenc0's state before
   * (a TUN made since is new: down, MTU 1500, like every new TUN), and every local
   * address but the pod's own /32 and /128 on tenc0 (residue: removed).
   */
  private linkAndAddressesFromSnapshot(snap: RoutingSnapshot): { before: LinkBefore; local: Set<string> } {
    const { ifname } = this.opts;
    const links = snapshotLinks(snap);
    const link = links.find((l) => l.ifname === ifname);
    const own = new Set([this.opts.addresses.v4, this.opts.addresses.v6]);
    const local = new Set<string>();
    for (const l of links) {
      for (const a of l.addr_info ?? []) {
        if (!(l.ifname === ifname && own.has(a.local) && a.prefixlen === (a.family === 'inet6' ? 128 : 32))) local.add(a.local);
      }
    }
    return { before: linkBefore(link ?? { mtu: 1500 }), local };
  }

  /** The same read now (TENC_START_SNAPSHOT=0): both dumps at once. */
  private async linkAndAddressesNow(): Promise<{ before: LinkBefore; local: Set<string> }> {
    const { ifname } = this.opts;
    const [links, addrs] = await Promise.all([this.ip.json(['link', 'show', 'dev', ifname]), this.ip.json(['addr', 'show'])]);
    if (links.length === 0) throw new Error(`interface ${ifname} does not exist`);
    const local = new Set<string>();
    for (const l of addrs) for (const a of l.addr_info ?? []) local.add(a.local);
    return { before: linkBefore(links[0]), local };
  }

  /**
   * install()'s first step: ONE `ip -batch` per family, tenc0 up with its MTU (in the
   * IPv4 one) and the pod address where it is not local yet (a route's preferred source
   * must be a local address: the pod's own where it is, eth0 in a pod, else on tenc0).
   */
  private async setLinkAndAddresses(before: LinkBefore, local: Set<string>, mtu: number): Promise<void> {
    const { ifname } = this.opts;
    const lines: Record<Family, string[]> = { 4: [`link set dev ${ifname} mtu ${mtu} up`], 6: [] };
    const adds: Record<Family, string | null> = { 4: null, 6: null };
    for (const fam of [4, 6] as const) {
      const own = fam === 4 ? this.opts.addresses.v4 : this.opts.addresses.v6;
      if (own === null) continue;
      if (!local.has(own)) {
        adds[fam] = `${own}/${fam === 4 ? 32 : 128}`;
        lines[fam].push(`addr add ${adds[fam]} dev ${ifname}${fam === 6 ? ' nodad' : ''}`);
      }
    }
    try {
      await this.ip.batch(4, lines[4]);
    } catch (e) {
      const done = e instanceof IpCommandError ? e.linesDone : 0;
      if (done >= 1) this.undo.push({ kind: 'link', ...before });
      throw e;
    }
    this.undo.push({ kind: 'link', ...before });
    if (adds[4]) this.undo.push({ kind: 'addr', family: 4, cidr: adds[4] });
    await this.ip.batch(6, lines[6]);
    if (adds[6]) this.undo.push({ kind: 'addr', family: 6, cidr: adds[6] });
    this.srcFor[4] = this.opts.addresses.v4;
    this.srcFor[6] = this.opts.addresses.v6;
  }

  private async ensureRule(fam: Family): Promise<void> {
    if (this.undo.some((u) => u.kind === 'rule' && u.family === fam)) return;
    await this.ip.run([`-${fam}`, ...ruleLine(this.opts).split(' ')]);
    this.undo.push({ kind: 'rule', family: fam });
  }

  private routeLine(fam: Family, cidr: string, op: 'replace' | 'del'): string {
    const src = op === 'replace' && this.srcFor[fam] !== null ? ` src ${this.srcFor[fam]}` : '';
    return `route ${op} ${cidr} dev ${this.opts.ifname} table ${this.t}${src}`;
  }

  private guardLine(cidr: string, op: 'replace' | 'del'): string {
    return guardLine(this.opts.table, cidr, op);
  }

  private bypassLine(cidr: string, op: 'add' | 'del'): string {
    return `route ${op} throw ${cidr} table ${this.t} proto ${BYPASS_PROTO}`;
  }

  /** The bypass (throw) routes currently installed. */
  bypasses(): string[] {
    return [...this.bypassed];
  }

  hasBypass(cidr: string): boolean {
    return this.bypassed.has(cidr);
  }

  /** Would a bypass of `cidr` be allowed now: inside a bypass range, under no other tenc0 route of this run? */
  private bypassable(cidr: string): boolean {
    const ranges = this.opts.bypassRanges ?? [];
    if (!ranges.some((r) => cidrCovers(r, cidr))) return false;
    for (const route of this.refs.keys()) if (!ranges.includes(route) && cidrCovers(route, cidr)) return false;
    return true;
  }

  /**
   * Adds `throw <cidr>` to table T: traffic to it leaves through the main table.
   * Returns false (and adds nothing) when it is not inside a bypass range, a tenc0
   * route of this run other than the ranges covers it, or the kernel refuses (a
   * route of that prefix exists): a bypass never displaces or undercuts a tunnel route.
   */
  addBypass(cidr: string): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      this.bypassQueue.push({ cidr, resolve, reject });
      // one job takes every bypass queued until it runs: one `ip -batch` per family, not one process per bypass
      if (this.bypassQueue.length === 1) void this.serial(() => this.addBypassesNow()).catch(() => undefined);
    });
  }

  private readonly bypassQueue: { cidr: string; resolve: (ok: boolean) => void; reject: (e: unknown) => void }[] = [];

  private async addBypassesNow(): Promise<void> {
    const queue = this.bypassQueue.splice(0);
    const todo: Record<Family, typeof queue> = { 4: [], 6: [] };
    const again: typeof queue = []; // the same CIDR twice in one batch: answered after it
    for (const q of queue) {
      if (this.bypassed.has(q.cidr)) q.resolve(true);
      else if (!this.bypassable(q.cidr)) q.resolve(false);
      else if ([...todo[4], ...todo[6]].some((x) => x.cidr === q.cidr)) again.push(q);
      else todo[familyOf(q.cidr)].push(q);
    }
    try {
      await this.addBypassBatches(todo);
    } finally {
      for (const q of again) q.resolve(this.bypassed.has(q.cidr));
    }
  }

  private async addBypassBatches(todo: Record<Family, { cidr: string; resolve: (ok: boolean) => void; reject: (e: unknown) => void }[]>): Promise<void> {
    for (const fam of [4, 6] as const) {
      let rest = todo[fam];
      while (rest.length > 0) {
        try {
          await this.ip.batch(fam, rest.map((q) => this.bypassLine(q.cidr, 'add')));
          rest.forEach((q) => this.recordBypass(fam, q));
          rest = [];
        } catch (e) {
          const done = e instanceof IpCommandError ? Math.min(e.linesDone, rest.length - 1) : 0;
          rest.slice(0, done).forEach((q) => this.recordBypass(fam, q));
          const failed = rest[done];
          if (e instanceof IpCommandError && /File exists/i.test(e.stderr)) failed.resolve(false);
          else failed.reject(e);
          rest = rest.slice(done + 1); // the lines after the failing one did not run: try them again
        }
      }
    }
  }

  private recordBypass(fam: Family, q: { cidr: string; resolve: (ok: boolean) => void }): void {
    this.bypassed.add(q.cidr);
    this.undo.push({ kind: 'bypass', family: fam, cidr: q.cidr });
    q.resolve(true);
  }

  /** Removes a bypass added by addBypass (unknown ones are ignored). */
  removeBypass(cidr: string): Promise<void> {
    return this.serial(() => this.removeBypassNow(cidr));
  }

  private async removeBypassNow(cidr: string): Promise<void> {
    if (!this.bypassed.has(cidr)) return;
    try {
      await this.ip.batch(familyOf(cidr), [this.bypassLine(cidr, 'del')]);
    } catch (e) {
      // already gone (an IPv4 `replace` of the same prefix turned it into a tenc0 route)
      if (!(e instanceof IpCommandError && /No such process/i.test(e.stderr))) throw e;
    }
    this.forgetBypass(cidr);
  }

  private forgetBypass(cidr: string): void {
    this.bypassed.delete(cidr);
    const i = this.undo.findIndex((u) => u.kind === 'bypass' && u.cidr === cidr);
    if (i >= 0) this.undo.splice(i, 1);
  }

  /** Adds routes (reference counted) and their guards, `ip -batch` per family. Serialized with every other change. */
  addRoutes(cidrs: string[], opts: AddRoutesOptions = {}): Promise<void> {
    return this.serial(() => this.addRoutesNow(cidrs, opts.onRef));
  }

  private async addRoutesNow(cidrs: string[], onRef?: (cidr: string) => void): Promise<void> {
    const fresh: Record<Family, string[]> = { 4: [], 6: [] };
    const extra = new Map<string, number>(); // further references to a route added by this call
    for (const cidr of cidrs) {
      const n = this.refs.get(cidr);
      if (n !== undefined) {
        this.refs.set(cidr, n + 1);
        onRef?.(cidr);
      } else if (fresh[familyOf(cidr)].includes(cidr)) extra.set(cidr, (extra.get(cidr) ?? 0) + 1);
      else fresh[familyOf(cidr)].push(cidr);
    }
    // bypasses these routes cover go first: their packets meet the range's tenc0 route, never the main table
    const ranges = this.opts.bypassRanges ?? [];
    const tunnel = [...fresh[4], ...fresh[6]].filter((c) => !ranges.includes(c));
    for (const b of [...this.bypassed]) {
      if (tunnel.some((c) => cidrCovers(c, b))) await this.removeBypassNow(b);
    }
    // a kept guard under a new wider route would shadow it (longest prefix): the route takes
    // over, but only once it is in (below): deleted first, the guard's address would meet
    // neither for a moment and leave through the main table
    const shadowed: string[] = [];
    for (const g of [...this.kept]) {
      if (fresh[familyOf(g)].includes(g)) this.kept.delete(g);
      else if ([...fresh[4], ...fresh[6]].some((c) => cidrCovers(c, g))) shadowed.push(g);
    }
    for (const fam of [4, 6] as const) {
      const list = fresh[fam];
      if (list.length === 0) continue;
      if (this.installed) await this.ensureRule(fam);
      // guards first, then the routes, in ONE ip -batch (its lines run in order): there is
      // never a moment a destination could leak; a failing line tells which took effect
      const lines = [...list.map((c) => this.guardLine(c, 'replace')), ...list.map((c) => this.routeLine(fam, c, 'replace'))];
      try {
        await this.ip.batch(fam, lines);
      } catch (e) {
        const done = e instanceof IpCommandError ? e.linesDone : 0;
        list.slice(0, Math.min(done, list.length)).forEach((cidr) => this.recordGuard(fam, cidr));
        list.slice(0, Math.max(0, done - list.length)).forEach((c) => this.recordRoute(fam, c, extra.get(c) ?? 0, onRef));
        throw e;
      }
      list.forEach((cidr) => this.recordGuard(fam, cidr));
      list.forEach((c) => this.recordRoute(fam, c, extra.get(c) ?? 0, onRef));
    }
    for (const g of shadowed) await this.dropKeptGuard(g);
  }

  private recordRoute(fam: Family, cidr: string, extraRefs: number, onRef?: (cidr: string) => void): void {
    this.refs.set(cidr, 1 + extraRefs);
    this.undo.push({ kind: 'route', family: fam, cidr });
    for (let i = 0; i <= extraRefs; i++) onRef?.(cidr);
  }

  async addRoute(cidr: string): Promise<void> {
    await this.addRoutes([cidr]);
  }

  /** Drops one reference; the route goes when the last reference does. Unknown routes are ignored. */
  removeRoute(cidr: string, opts: RemoveRouteOptions = {}): Promise<void> {
    return this.serial(() => this.removeRouteNow(cidr, opts.keepGuard === true, opts.onRelease));
  }

  private async removeRouteNow(cidr: string, keepGuard = false, onRelease?: () => void): Promise<void> {
    const n = this.refs.get(cidr);
    if (n === undefined || n > 1) {
      // none held: nothing to drop; else one of several
      if (n !== undefined) this.refs.set(cidr, n - 1);
      onRelease?.();
      return;
    }
    const fam = familyOf(cidr);
    if (keepGuard && ![...this.refs.keys()].some((r) => r !== cidr && cidrCovers(r, cidr))) {
      await this.ip.batch(fam, [this.routeLine(fam, cidr, 'del')]);
      this.refs.delete(cidr);
      onRelease?.();
      const i = this.undo.findIndex((u) => u.kind === 'route' && u.cidr === cidr);
      if (i >= 0) this.undo.splice(i, 1);
      this.kept.add(cidr);
      while (this.kept.size > MAX_KEPT_GUARDS) await this.dropKeptGuard(this.kept.values().next().value!);
      return;
    }
    const forget = (kind: 'route' | 'guard') => {
      const i = this.undo.findIndex((u) => u.kind === kind && u.cidr === cidr);
      if (i >= 0) this.undo.splice(i, 1);
      if (kind === 'guard') this.guarded.delete(cidr);
    };
    try {
      await this.ip.batch(fam, [this.routeLine(fam, cidr, 'del'), this.guardLine(cidr, 'del')]);
    } catch (e) {
      if (e instanceof IpCommandError && e.linesDone === 1) {
        this.refs.delete(cidr);
        forget('route');
        onRelease?.();
      }
      throw e;
    }
    this.refs.delete(cidr);
    forget('route');
    forget('guard');
    onRelease?.();
  }

  /** The guards kept without a route (removeRoute keepGuard). */
  keptGuards(): string[] {
    return [...this.kept];
  }

  /** Deletes a guard kept without its route. */
  private async dropKeptGuard(cidr: string): Promise<void> {
    this.kept.delete(cidr);
    if (this.refs.has(cidr)) return; // routed again: its guard stands behind the route
    await this.ip.batch(familyOf(cidr), [this.guardLine(cidr, 'del')]);
    this.guarded.delete(cidr);
    const i = this.undo.findIndex((u) => u.kind === 'guard' && u.cidr === cidr);
    if (i >= 0) this.undo.splice(i, 1);
  }

  /** Deletes routes/guards in one batch; a failing line is noted (unless benign) and the rest go on. */
  private async deleteRun(fam: Family, run: Undo[], failures: string[], benign: (e: unknown, u: Undo) => boolean): Promise<void> {
    const line = (u: Undo) =>
      u.kind === 'guard'
        ? this.guardLine(u.cidr, 'del')
        : u.kind === 'bypass'
          ? this.bypassLine(u.cidr, 'del')
          : this.routeLine(fam, (u as { cidr: string }).cidr, 'del');
    for (const u of run) if (u.kind === 'route') this.refs.delete(u.cidr);
    let rest = run;
    while (rest.length > 0) {
      try {
        await this.ip.batch(fam, rest.map(line));
        return;
      } catch (e) {
        const done = e instanceof IpCommandError ? e.linesDone : 0;
        if (!benign(e, rest[done])) failures.push((e as Error).message);
        rest = rest.slice(done + 1);
      }
    }
  }

  /**
   * Undoes everything recorded, newest first. Keeps going past failures; throws them
   * together at the end. With keepGuards the rule and the guards stay (fail closed).
   */
  teardown(opts: TeardownOptions = {}): Promise<void> {
    return this.serial(() => this.teardownNow(opts.keepGuards === true));
  }

  private async teardownNow(keepGuards: boolean): Promise<void> {
    const { ifname } = this.opts;
    const failures: string[] = [];
    if (keepGuards) {
      const rest = this.undo.filter((u) => u.kind !== 'rule' && u.kind !== 'guard');
      this.undo.length = 0;
      this.undo.push(...rest);
    }
    this.guarded.clear();
    this.bypassed.clear();
    this.kept.clear();
    // The interface may already be gone (its TUN closed): its routes and addresses went with it.
    const benign = (e: unknown, u: Undo) =>
      e instanceof IpCommandError && /Cannot find device|No such device|No such process/i.test(e.stderr) && u.kind !== 'rule';
    while (this.undo.length > 0) {
      const u = this.undo[this.undo.length - 1];
      if (u.kind === 'route' || u.kind === 'guard' || u.kind === 'bypass') {
        // the newest run of route/guard/bypass entries of one family: one `ip -batch`
        const run: Undo[] = [];
        while (this.undo.length > 0) {
          const x = this.undo[this.undo.length - 1];
          if ((x.kind !== 'route' && x.kind !== 'guard' && x.kind !== 'bypass') || x.family !== u.family) break;
          run.push(this.undo.pop()!);
        }
        await this.deleteRun(u.family, run, failures, benign);
        continue;
      }
      this.undo.pop();
      try {
        switch (u.kind) {
          case 'rule':
            await this.ip.run([`-${u.family}`, 'rule', 'del', 'pref', String(this.opts.priority), 'table', this.t]);
            break;
          case 'addr':
            await this.ip.run([`-${u.family}`, 'addr', 'del', u.cidr, 'dev', ifname]);
            break;
          case 'link':
            await this.ip.run(['link', 'set', 'dev', ifname, 'mtu', String(u.mtu), ...(u.wasUp ? [] : ['down'])]);
            break;
        }
      } catch (e) {
        if (!benign(e, u)) failures.push((e as Error).message);
      }
    }
    this.refs.clear();
    this.installed = false;
    if (failures.length > 0) throw new Error(`routing teardown incomplete:\n${failures.join('\n')}`);
    this.log.info({ table: this.opts.table, keepGuards }, keepGuards ? 'routing removed, rule and guards kept (fail closed)' : 'routing removed');
  }
}
