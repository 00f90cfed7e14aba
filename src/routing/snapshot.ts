/**
 * One read of the pod namespace's routing state at start, in two `ip` processes (one
 * `ip -j -4|-6 -force -batch -` per family) instead of one process per dump: the
 * rules, tenc's table, the addresses (with each link's name, flags and MTU), the default
 * routes and the route to the first peer endpoint. Three start steps read it: the MTU
 * (mtu.ts), the routing residue (policy.ts) and the exempt policy rules' residue
 * (policy-rules.ts). Each starting `ip` costs a few ms of CPU on this class of machine
 * (README "density"), and a start made ten of them for these dumps.
 *
 * Nothing changes the namespace between this read and its users: they run after it and
 * before the start's first change. A dump batch that does not line up (an `ip` that
 * prints otherwise) makes each user dump for itself, as without a snapshot.
 */
import { IpCommand, type Family } from './ip.js';
import { addressFamily, type Endpoint } from '../net/address.js';

export interface RoutingSnapshot {
  /** `ip -j rule show` per family. */
  rules: Record<Family, any[]>;
  /** `ip -j route show table T` per family. */
  table: Record<Family, any[]>;
  /** `ip -j addr show` per family (links with an address of that family). */
  addrs: Record<Family, any[]>;
  /** `ip -j route show default` per family. */
  defaults: Record<Family, any[]>;
  /** `ip -j route get ENDPOINT mark M` for the first peer endpoint; [] without one or without a route. */
  endpointRoute: any[];
}

export interface SnapshotOptions {
  table: number;
  fwmark: number;
  endpoints: (Endpoint | null)[];
}

/** Reads the snapshot; null when a batch did not line up (the users then dump for themselves). */
export async function readRoutingSnapshot(ip: IpCommand, o: SnapshotOptions): Promise<RoutingSnapshot | null> {
  const first = o.endpoints.find((e): e is Endpoint => e !== null);
  const underlay: Family | null = first ? (addressFamily(first.address) ?? 4) : null;
  const lines = (fam: Family) => [
    'rule show',
    `route show table ${o.table}`,
    'addr show',
    'route show default',
    ...(first && underlay === fam ? [`route get ${first.address} mark ${o.fwmark}`] : []),
  ];
  let d4: (any[] | null)[];
  let d6: (any[] | null)[];
  try {
    [d4, d6] = await Promise.all([ip.dumps(4, lines(4)), ip.dumps(6, lines(6))]);
  } catch {
    return null;
  }
  const at = (d: (any[] | null)[], i: number) => d[i] ?? [];
  return {
    rules: { 4: at(d4, 0), 6: at(d6, 0) },
    table: { 4: at(d4, 1), 6: at(d6, 1) },
    addrs: { 4: at(d4, 2), 6: at(d6, 2) },
    defaults: { 4: at(d4, 3), 6: at(d6, 3) },
    endpointRoute: underlay === 4 ? at(d4, 4) : underlay === 6 ? at(d6, 4) : [],
  };
}

/** The links of both families' address dumps, merged by name (addr_info of both). */
export function snapshotLinks(s: RoutingSnapshot): any[] {
  const byName = new Map<string, any>();
  for (const fam of [4, 6] as const) {
    for (const l of s.addrs[fam]) {
      const seen = byName.get(l.ifname);
      if (seen) seen.addr_info = [...(seen.addr_info ?? []), ...(l.addr_info ?? [])];
      else byName.set(l.ifname, { ...l, addr_info: [...(l.addr_info ?? [])] });
    }
  }
  return [...byName.values()];
}
