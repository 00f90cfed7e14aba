/**
 * Addresses, CIDRs and endpoints as tenc writes them: parse to the canonical form, tell the
 * family, format. Shared by the config file, the control socket, routing, DNS and the
 * agent, so none of them reaches into another's folder for them.
 */
import { Address4, Address6 } from 'ip-address';
import { bad, ok, show, type Parsed } from './parsed.js';

/** A UDP endpoint: where a peer is reached, where a datagram came from. */
export interface Endpoint {
  /** IPv4 or IPv6 literal (no brackets, no zone). */
  address: string;
  port: number;
}

export function addressFamily(address: string): 4 | 6 | null {
  if (Address4.isValid(address)) return 4;
  if (!address.includes('%') && !address.includes('/') && Address6.isValid(address)) return 6;
  return null;
}

/** A plain IPv4/IPv6 address (no prefix, no zone), canonical form. */
export function parseAddress(v: unknown): Parsed<string> {
  if (typeof v !== 'string') return bad(`${show(v)} is not a string`);
  if (v.includes('/')) return bad(`${show(v)} is an address, write it without a prefix length`);
  const fam = addressFamily(v);
  if (fam === 4) return ok(new Address4(v).correctForm());
  if (fam === 6) return ok(new Address6(v).correctForm());
  return bad(`${show(v)} is not an IPv4/IPv6 address`);
}

/** ip:port or [v6]:port. */
export function parseEndpoint(v: unknown): Parsed<Endpoint> {
  if (typeof v !== 'string') return bad(`${show(v)} is not a string`);
  let host: string;
  let portText: string;
  const m6 = /^\[([^\]]*)\]:(\d*)$/.exec(v);
  if (m6) {
    host = m6[1];
    portText = m6[2];
    if (addressFamily(host) !== 6) return bad(`${show(v)} is not an IPv4/IPv6 address`);
  } else {
    const i = v.lastIndexOf(':');
    if (i < 0) return bad(`${show(v)} has no port (write ip:port or [ipv6]:port)`);
    host = v.slice(0, i);
    portText = v.slice(i + 1);
    if (host.includes(':')) return bad(`${show(v)}: put an IPv6 address in brackets, as [addr]:port`);
    if (addressFamily(host) !== 4) return bad(`${show(v)} is not an IPv4/IPv6 address`);
  }
  if (!/^\d{1,5}$/.test(portText)) return bad(`${show(v)} has no valid port`);
  const port = Number(portText);
  if (port < 1 || port > 65535) return bad(`${show(v)}: port ${port} is out of range 1..65535`);
  const address = addressFamily(host) === 4 ? new Address4(host).correctForm() : new Address6(host).correctForm();
  return ok({ address, port });
}

export function formatEndpoint(e: Endpoint): string {
  return e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

/** A CIDR with explicit or implied (/32, /128) prefix; host bits must be zero. Canonical "net/len". */
export function parseCidr(v: unknown): Parsed<string> {
  if (typeof v !== 'string') return bad(`${show(v)} is not a string`);
  const slash = v.indexOf('/');
  const addrText = slash < 0 ? v : v.slice(0, slash);
  const lenText = slash < 0 ? null : v.slice(slash + 1);
  const fam = addressFamily(addrText);
  if (fam === null) return bad(`${show(v)} is not an IPv4/IPv6 CIDR`);
  const max = fam === 4 ? 32 : 128;
  let len = max;
  if (lenText !== null) {
    if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > max) {
      return bad(`${show(v)}: prefix length must be 0..${max}`);
    }
    len = Number(lenText);
  }
  const a = fam === 4 ? new Address4(`${addrText}/${len}`) : new Address6(`${addrText}/${len}`);
  const net = a.startAddress().correctForm();
  const host = (fam === 4 ? new Address4(addrText) : new Address6(addrText)).correctForm();
  if (net !== host) return bad(`${show(v)} has host bits set (did you mean "${net}/${len}"?)`);
  return ok(`${net}/${len}`);
}

/**
 * Which project destination (a peer's allowed IP or a service VIP) covers `address`,
 * as text for a message; null when none does.
 */
export function projectDestinationOf(
  address: string,
  peers: readonly { allowedIps: readonly string[] }[],
  services: readonly { vip: string }[],
): string | null {
  const fam = addressFamily(address);
  if (fam === null) return null;
  const a = fam === 4 ? new Address4(address) : new Address6(address);
  for (const [i, p] of peers.entries()) {
    for (const cidr of p.allowedIps) {
      if (addressFamily(cidr.split('/')[0]) !== fam) continue;
      const net = fam === 4 ? new Address4(cidr) : new Address6(cidr);
      if ((a as Address4).isInSubnet(net as Address4)) return `peers[${i}].allowedIps ${cidr}`;
    }
  }
  for (const [i, s] of services.entries()) {
    if (addressFamily(s.vip) === fam && (fam === 4 ? new Address4(s.vip) : new Address6(s.vip)).correctForm() === a.correctForm()) {
      return `services[${i}].vip ${s.vip}`;
    }
  }
  return null;
}
