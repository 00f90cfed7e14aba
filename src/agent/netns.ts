/**
 * What the node agent does in a pod's network namespace from outside it (its ip and nft
 * children started in NETNS by runProcess, io/run.ts, as `nsenter --net=NETNS` would): the pod's control socket and resolv.conf paths, making the netns fail
 * closed before its proxy runs (CNI ADD), and removing what tenc left there once the
 * proxy is gone (CNI DEL); the pod's own addresses, for an unchained CNI ADD (no
 * prevResult to take them from). Below proxies.ts and agent.ts; uses control/ and routing/.
 */
import { runNft } from '../io/nft.js';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_INTERFACE, DEFAULT_RULE_PRIORITY, DEFAULT_SOCKET_DIR, DEFAULT_TABLE, type PodConfig } from '../control/config.js';
import { failClosedScripts } from '../control/failclosed.js';
import { tableName } from '../routing/enforce.js';
import { IpCommand, IpCommandError } from '../routing/ip.js';
import { parseAddress } from '../net/address.js';

/**
 * The pod's default control socket (/run/tenc/tenc0-<netns inode>.sock), so that
 * `ip netns exec POD tenc status` finds it like any pod's.
 */
export function podSocket(netns: string): string {
  return join(DEFAULT_SOCKET_DIR, `tenc0-${statSync(netns).ino}.sock`);
}

/** /etc/netns/NAME/resolv.conf for /run/netns/NAME, if it exists. */
export function podResolvConf(netns: string): string | null {
  const m = /^\/run\/netns\/([^/]+)$/.exec(netns);
  if (!m) return null;
  const f = `/etc/netns/${m[1]}/resolv.conf`;
  return existsSync(f) ? f : null;
}

/**
 * Makes a pod's netns fail closed before its proxy runs: failClosedScripts(config)
 * (the rule, the guards and the nftables table the proxy itself would put in place
 * first) applied through one `ip -batch -` per family and one `nft -f -`, each started
 * in NETNS. Returns the number of guard lines.
 */
export async function failClosedIn(netns: string, config: PodConfig): Promise<number> {
  const s = failClosedScripts(config);
  const ip = new IpCommand({ netnsPath: netns });
  await Promise.all([guardBatchIn(ip, 4, s.ip[4]), guardBatchIn(ip, 6, s.ip[6]), runNft('nft', ['-f', '-'], s.nft, netns)]);
  return s.ip[4].length + s.ip[6].length;
}

/** Removes tenc's rule, routes and nft table from a netns whose proxy is gone (defaults of config.ts). */
export async function cleanNetns(netns: string): Promise<void> {
  // each step's failure is expected (nothing to delete) and ignored
  const ip = new IpCommand({ netnsPath: netns });
  const ignore = () => undefined;
  for (const fam of [4, 6] as const) {
    // tenc's rule, and TencPolicy's exempt rules one pref below it (policy-rules.ts): a
    // `rule del` line per rule listed at that priority, in one `ip -batch` per priority
    for (const pref of [DEFAULT_RULE_PRIORITY, DEFAULT_RULE_PRIORITY - 1]) {
      const rules = await ip.json([`-${fam}`, 'rule', 'show', 'pref', String(pref)]).catch(() => []);
      await ip.batch(fam, rules.map(() => `rule del pref ${pref}`)).catch(ignore);
    }
    await ip.run([`-${fam}`, 'route', 'flush', 'table', String(DEFAULT_TABLE)]).catch(ignore);
  }
  await runNft('nft', ['delete', 'table', 'inet', tableName(DEFAULT_INTERFACE)], undefined, netns).catch(ignore);
}

/** Runs a guardBatch() family's lines; a rule that exists already (its last line: "File exists") is fine. */
async function guardBatchIn(ip: IpCommand, fam: 4 | 6, lines: string[]): Promise<void> {
  try {
    await ip.batch(fam, lines);
  } catch (e) {
    if (e instanceof IpCommandError && e.linesDone === lines.length - 1 && /File exists/i.test(e.stderr)) return;
    throw e;
  }
}

/** Why a netns gave no pod address (an unchained ADD before the default network is up, a netns without one). */
export class PodAddressError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PodAddressError';
  }
}

/**
 * The pod's addresses as `ip -j` dumps show them in its netns: per family (IPv4 first,
 * as the pod's primary address), the first global-scope address of the interface that
 * holds that family's default route of the lowest metric (main table; a blackhole,
 * unreachable or prohibit default has no interface and is skipped; a multipath one
 * counts by its first hop's interface). A family without a default route, or whose
 * interface has no global address (a DAD-failed one does not count), gives none.
 * Throws PodAddressError naming `netns` when no family gives one.
 */
export function podAddressesFrom(netns: string, routes: { 4: unknown[]; 6: unknown[] }, links: unknown[]): string[] {
  const out: string[] = [];
  const why: string[] = [];
  for (const fam of [4, 6] as const) {
    // the route the kernel takes: the lowest metric (no metric: 0), the dump's order among equals
    const usable = routes[fam].map((r) => ({ dev: defaultRouteDev(r), metric: routeMetric(r) })).filter((r) => r.dev !== null);
    const dev = usable.length > 0 ? usable.reduce((a, b) => (b.metric < a.metric ? b : a)).dev : null;
    if (dev === null) {
      why.push(`no IPv${fam} default route`);
      continue;
    }
    const link = links.find((l) => (l as { ifname?: unknown } | null)?.ifname === dev) as { addr_info?: unknown } | undefined;
    const info = Array.isArray(link?.addr_info) ? (link.addr_info as Record<string, unknown>[]) : [];
    const a = info.find((x) => x !== null && typeof x === 'object' && x.family === (fam === 4 ? 'inet' : 'inet6') && x.scope === 'global' && x.dadfailed !== true && typeof x.local === 'string');
    const parsed = a ? parseAddress(a.local) : null;
    if (!parsed?.ok) {
      why.push(`no global IPv${fam} address on ${dev}, the interface of its default route`);
      continue;
    }
    out.push(parsed.value);
  }
  if (out.length === 0) throw new PodAddressError(`netns ${netns}: no pod address (${why.join('; ')}): is the pod's network set up?`);
  return out;
}

/** A route's metric as `ip -j` shows it (none: 0). */
function routeMetric(r: unknown): number {
  const m = (r as { metric?: unknown }).metric;
  return typeof m === 'number' ? m : 0;
}

/** The interface of a default route as `ip -j route show default` lists it, or null (not a unicast route through one). */
function defaultRouteDev(r: unknown): string | null {
  if (r === null || typeof r !== 'object') return null;
  const route = r as { dst?: unknown; type?: unknown; dev?: unknown; nexthops?: unknown };
  if (route.dst !== 'default' || (route.type !== undefined && route.type !== 'unicast')) return null;
  if (typeof route.dev === 'string') return route.dev;
  const hop = Array.isArray(route.nexthops) ? (route.nexthops as { dev?: unknown }[]).find((h) => typeof h?.dev === 'string') : undefined;
  return hop ? (hop.dev as string) : null;
}

/**
 * The pod's addresses read in its netns (podAddressesFrom): its default routes of both
 * families and its global addresses, three `ip -j` runs in NETNS at once. A family whose
 * route dump fails (IPv6 off in the kernel) has no default route; `ip` failing for both
 * is an error naming the netns.
 */
export async function podAddressesIn(netns: string, ip: IpCommand = new IpCommand({ netnsPath: netns })): Promise<string[]> {
  // ip.run, not ip.json: a dump that fails (the netns gone) is an error here, not an empty list
  const dump = (args: string[]) =>
    ip.run(['-j', ...args]).then(
      (out) => {
        const v: unknown = out.trim() === '' ? [] : JSON.parse(out);
        return { v: Array.isArray(v) ? (v as unknown[]) : [v], err: null };
      },
      (e: Error) => ({ v: [] as unknown[], err: e.message }),
    );
  const [r4, r6, links] = await Promise.all([dump(['-4', 'route', 'show', 'default']), dump(['-6', 'route', 'show', 'default']), dump(['address', 'show', 'scope', 'global'])]);
  if (links.err !== null || (r4.err !== null && r6.err !== null)) {
    const errs = [r4.err, r6.err, links.err].filter((e) => e !== null);
    throw new PodAddressError(`netns ${netns}: cannot read the pod's addresses: ${errs.join('; ')}`);
  }
  return podAddressesFrom(netns, { 4: r4.v, 6: r6.v }, links.v);
}
