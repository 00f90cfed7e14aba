/**
 * IPv6 arithmetic for the local cluster's file (cluster-config.ts): addresses as
 * bigints, CIDRs, and the canonical text form (RFC 5952: lower case, the longest
 * run of two or more zero groups compressed). Pure. The cluster's IPv6 ranges
 * lie inside fd00::/8 (unique local addresses, never routed outside).
 */
import { isIPv6 } from 'node:net';
import { Address6 } from 'ip-address';

export function ip6ToBig(a: string): bigint | null {
  if (!isIPv6(a) || a.includes('%')) return null;
  if (a.includes('.')) return null; // IPv4-mapped forms are not cluster addresses
  return new Address6(a).bigInt();
}

/** The canonical text (RFC 5952), by the ip-address package the routing code uses too. */
export const bigToIp6 = (n: bigint): string => Address6.fromBigInt(n).correctForm();

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
