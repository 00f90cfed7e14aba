/**
 * The pod's resolv.conf (resolv.conf(5)): its nameservers are the cluster DNS
 * the proxy forwards to, and its search list names the project domain: in a
 * Kubernetes pod the first entry is "<namespace>.svc.<cluster domain>".
 * Pure: parses text.
 */
import { parseAddress } from '../net/address.js';

export interface ResolvConf {
  /** Canonical addresses, in file order (zone-scoped ones are skipped). */
  nameservers: string[];
  /** Lower case, without the final dot. */
  search: string[];
}

export function parseResolvConf(text: string): ResolvConf {
  const out: ResolvConf = { nameservers: [], search: [] };
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    if (line === '') continue;
    const [key, ...args] = line.split(/\s+/);
    if (key === 'nameserver' && args.length > 0) {
      const a = parseAddress(args[0]);
      if (a.ok && !out.nameservers.includes(a.value)) out.nameservers.push(a.value);
    } else if (key === 'search' || key === 'domain') {
      // the last search/domain line wins (resolv.conf(5))
      out.search = args.map((s) => s.toLowerCase().replace(/\.$/, '')).filter((s) => s.length > 0);
    }
  }
  return out;
}

/** The project domain from a search list: the first "<name>.svc.<domain>" entry, else null. */
export function projectDomainFrom(search: readonly string[]): string | null {
  return search.find((s) => /^[a-z0-9]([a-z0-9-]*[a-z0-9])?\.svc\.[a-z0-9.-]+$/.test(s)) ?? null;
}
