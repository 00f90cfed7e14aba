/**
 * The MTU of tenc0: the MTU of the egress interface toward the peers minus the
 * WireGuard overhead on that underlay (whitepaper §6 / wg-quick):
 *   IPv4 20 + UDP 8 + transport header 16 + tag 16 = 60
 *   IPv6 40 + UDP 8 + transport header 16 + tag 16 = 80
 * The egress interface is the one `ip route get` picks for the first peer's endpoint
 * (with tenc's fwmark, as tenc's own datagrams carry it), else the interface of the
 * default route, else the interface holding the pod's own address (a pod's eth0).
 * Without a peer endpoint the underlay family is unknown (peers may come later,
 * over either family): the larger IPv6 overhead is assumed, as wg-quick does.
 */
import { IpCommand, type Family } from './ip.js';
import { snapshotLinks, type RoutingSnapshot } from './snapshot.js';
import { addressFamily, type Endpoint } from '../net/address.js';

export const UNDERLAY_OVERHEAD: Record<Family, number> = { 4: 20 + 8 + 32, 6: 40 + 8 + 32 };
/** Below this IPv4 itself breaks (RFC 791 minimum reassembly size). */
export const MIN_TUNNEL_MTU = 576;

export interface MtuChoice {
  mtu: number;
  egress: string;
  egressMtu: number;
  /** The family whose overhead was subtracted. */
  underlay: Family;
  /** What picked the egress interface. */
  reason: string;
}

export class MtuError extends Error {
  readonly code = 'ERR_TENC_MTU';
  constructor(message: string) {
    super(message);
    this.name = 'MtuError';
  }
}

export async function computeMtu(
  ip: IpCommand,
  endpoints: (Endpoint | null)[],
  fwmark: number,
  ownAddresses: string[] = [],
  /** The start's routing snapshot (snapshot.ts): its dumps instead of `ip` processes of its own. */
  snap: RoutingSnapshot | null = null,
): Promise<MtuChoice> {
  const snapLinks = snap ? snapshotLinks(snap) : null;
  let egress: string | undefined;
  let underlay: Family = 4;
  let reason = '';
  const first = endpoints.find((e): e is Endpoint => e !== null);
  if (first) {
    underlay = addressFamily(first.address) ?? 4;
    const r = snap ? snap.endpointRoute : await ip.json([`-${underlay}`, 'route', 'get', first.address, 'mark', String(fwmark)]).catch(() => []);
    egress = r[0]?.dev;
    reason = `route to ${first.address}`;
  }
  if (!egress) {
    for (const fam of [4, 6] as const) {
      const r = snap ? snap.defaults[fam] : await ip.json([`-${fam}`, 'route', 'show', 'default']).catch(() => []);
      if (r[0]?.dev) {
        egress = r[0].dev;
        reason = `IPv${fam} default route`;
        break;
      }
    }
  }
  if (!egress) {
    const links = snapLinks ?? (await ip.json(['addr', 'show']).catch(() => []));
    for (const own of ownAddresses) {
      const l = links.find((x) => (x.addr_info ?? []).some((a: { local?: string }) => a.local === own));
      if (l?.ifname) {
        egress = l.ifname;
        reason = `interface holding ${own}`;
        break;
      }
    }
  }
  if (!egress) {
    throw new MtuError('cannot compute the MTU: no route to the first peer endpoint, no default route, no interface with the pod address');
  }
  if (!first) {
    underlay = 6;
    reason += ', no peer endpoint yet: IPv6 overhead assumed';
  }
  // the snapshot's address dumps carry each link's MTU (a link without any address: its own dump)
  const known = snapLinks?.find((l) => l.ifname === egress && typeof l.mtu === 'number');
  const link = known ? [known] : await ip.json(['link', 'show', 'dev', egress]);
  const egressMtu = link[0]?.mtu;
  if (typeof egressMtu !== 'number') throw new MtuError(`cannot compute the MTU: no MTU for egress interface ${egress}`);
  const mtu = egressMtu - UNDERLAY_OVERHEAD[underlay];
  if (mtu < MIN_TUNNEL_MTU) {
    throw new MtuError(`egress interface ${egress} has MTU ${egressMtu}: too small for a tunnel (${mtu} < ${MIN_TUNNEL_MTU})`);
  }
  return { mtu, egress, egressMtu, underlay, reason };
}
