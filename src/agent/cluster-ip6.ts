/**
 * IPv6 arithmetic for the local cluster's file (cluster-config.ts): addresses as
 * bigints, CIDRs, and the canonical text form (RFC 5952: lower case, the longest
 * run of two or more zero groups compressed). Pure. The cluster's IPv6 ranges
 * lie inside fd00::/8 (unique local addresses, never routed outside).
 */
import { isIPv6 } from 'node:net';

export function ip6ToBig(a: string): bigint | null {
  if (!isIPv6(a) || a.includes('%')) return null;
  let groups: string[];
  if (a.includes('.')) return null; // IPv4-mapped forms are not cluster addresses
  if (a.includes('::')) {
    const [l, r] = a.split('::');
    const left = l ? l.split(':') : [];
    const right = r ? r.split(':') : [];
    groups = [...left, ...Array(8 - left.length - right.length).fill('0'), ...right];
  } else groups = a.split(':');
  let n = 0n;
  for (const g of groups) n = (n << 16n) | BigInt(parseInt(g, 16));
  return n;
}

export function bigToIp6(n: bigint): string {
  const parts: string[] = [];
  for (let i = 7; i >= 0; i--) parts.push(((n >> BigInt(i * 16)) & 0xffffn).toString(16));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (parts[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && parts[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return parts.join(':');
  return `${parts.slice(0, best).join(':')}::${parts.slice(best + bestLen).join(':')}`;
}

export interface Cidr6 {
  net: bigint;
  len: number;
  size: bigint;
}

export function parseCidr6(v: string): Cidr6 | string {
  const [a, l, ...rest] = v.split('/');
  const net = ip6ToBig(a);
  if (net === null || l === undefined || rest.length > 0 || !/^\d{1,3}$/.test(l) || Number(l) > 128) {
    return `${JSON.stringify(v)} is not an IPv6 CIDR like "fd00:128:1::/64"`;
  }
  const len = Number(l);
  const size = 1n << BigInt(128 - len);
  if (net % size !== 0n) return `${JSON.stringify(v)} has host bits set`;
  return { net, len, size };
}

export const cidr6Text = (c: Cidr6): string => `${bigToIp6(c.net)}/${c.len}`;

export function inCidr6(a: bigint, c: Cidr6): boolean {
  return a >= c.net && a < c.net + c.size;
}

export function overlaps6(a: Cidr6, b: Cidr6): boolean {
  return a.net < b.net + b.size && b.net < a.net + a.size;
}

/** fd00::/8: the only IPv6 range the cluster's addresses may use. */
export const FD00: Cidr6 = { net: 0xfdn << 120n, len: 8, size: 1n << 120n };

export function insideFd00(c: Cidr6): boolean {
  return c.net >= FD00.net && c.net + c.size <= FD00.net + FD00.size;
}

/** The name Kubernetes gives a pod address under <project>.pod.<domain>: its separators as "-". */
export function podDnsLabel(address: string): string {
  return address.replace(/[.:]/g, '-');
}
