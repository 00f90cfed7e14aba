/**
 * What the node agent does in a pod's network namespace from outside it (its ip and nft
 * children started in NETNS by runProcess, io/run.ts, as `nsenter --net=NETNS` would): the pod's control socket and resolv.conf paths, making the netns fail
 * closed before its proxy runs (CNI ADD), and removing what tenc left there once the
 * proxy is gone (CNI DEL). Below proxies.ts and agent.ts; uses control/ and routing/.
 */
import { runNft } from '../io/nft.js';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_INTERFACE, DEFAULT_RULE_PRIORITY, DEFAULT_SOCKET_DIR, DEFAULT_TABLE, type PodConfig } from '../control/config.js';
import { failClosedScripts } from '../control/failclosed.js';
import { tableName } from '../routing/enforce.js';
import { IpCommand, IpCommandError } from '../routing/ip.js';

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
