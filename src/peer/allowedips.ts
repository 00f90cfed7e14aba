/**
 * Allowed IPs: a binary trie per address family mapping prefixes to peers, with
 * longest-prefix match (WireGuard whitepaper §3, cryptokey routing).
 *
 *   send:    destination address -> the peer whose prefix is longest (lookup)
 *   receive: inner source address -> must be the peer the packet authenticated as
 *
 * As in WireGuard, a prefix belongs to one peer at a time: inserting it for another
 * peer moves it. Host bits below the prefix length are cleared (10.1.2.3/16 is stored
 * as 10.1.0.0/16).
 */

export type Family = 4 | 6;

export interface Cidr {
  family: Family;
  /** 4 or 16 bytes, host bits cleared. */
  bytes: Uint8Array;
  prefix: number;
}

export class AddressError extends Error {
  override readonly name = 'AddressError';
}

/** Parses an IPv4 dotted quad (no leading zeros, like inet_pton) into 4 bytes, or null. */
function parseV4(s: string): Uint8Array | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i];
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const v = Number(p);
    if (v > 255) return null;
    out[i] = v;
  }
  return out;
}

/** Parses an IPv6 literal (RFC 4291 §2.2 text forms, no zone) into 16 bytes, or null. */
function parseV6(s: string): Uint8Array | null {
  if (s.length === 0 || s.length > 45) return null;
  const dbl = s.indexOf('::');
  if (dbl !== -1 && s.indexOf('::', dbl + 1) !== -1) return null;
  const toGroups = (part: string, allowV4: boolean): number[] | null => {
    if (part === '') return [];
    const groups: number[] = [];
    const items = part.split(':');
    for (let i = 0; i < items.length; i++) {
      const it = items[i];
      if (allowV4 && i === items.length - 1 && it.includes('.')) {
        const v4 = parseV4(it);
        if (!v4) return null;
        groups.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(it)) return null;
        groups.push(parseInt(it, 16));
      }
    }
    return groups;
  };
  let groups: number[];
  if (dbl === -1) {
    const g = toGroups(s, true);
    if (!g || g.length !== 8) return null;
    groups = g;
  } else {
    const head = toGroups(s.slice(0, dbl), false);
    const tail = toGroups(s.slice(dbl + 2), true);
    if (!head || !tail) return null;
    if (head.length + tail.length > 7) return null;
    groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[2 * i] = groups[i] >> 8;
    out[2 * i + 1] = groups[i] & 0xff;
  }
  return out;
}

/** Parses an IPv4 or IPv6 literal. Throws TypeError / AddressError. */
export function parseIp(text: string): Uint8Array {
  if (typeof text !== 'string') throw new TypeError('address must be a string');
  const b = text.includes(':') ? parseV6(text) : parseV4(text);
  if (!b) throw new AddressError(`not an IP address: ${JSON.stringify(text)}`);
  return b;
}

/** Parses "addr/len" (or a bare address, meaning a host route). Host bits are cleared. */
export function parseCidr(text: string): Cidr {
  if (typeof text !== 'string') throw new TypeError('CIDR must be a string');
  const slash = text.indexOf('/');
  const addr = parseIp(slash === -1 ? text : text.slice(0, slash));
  const family: Family = addr.length === 4 ? 4 : 6;
  const max = family === 4 ? 32 : 128;
  let prefix = max;
  if (slash !== -1) {
    const p = text.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > max) throw new AddressError(`bad prefix length in ${JSON.stringify(text)}`);
    prefix = Number(p);
  }
  maskInPlace(addr, prefix);
  return { family, bytes: addr, prefix };
}

function maskInPlace(b: Uint8Array, prefix: number): void {
  for (let i = 0; i < b.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - 8 * i));
    b[i] &= keep === 8 ? 0xff : (0xff << (8 - keep)) & 0xff;
  }
}

export function formatIp(b: Uint8Array): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (b.length !== 16) throw new RangeError(`address must be 4 or 16 bytes, got ${b.length}`);
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((b[2 * i] << 8) | b[2 * i + 1]);
  // RFC 5952 §4.2: compress the longest run (>= 2) of zero groups, the first one on ties.
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (bestStart === -1) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

export function formatCidr(c: Cidr): string {
  return `${formatIp(c.bytes)}/${c.prefix}`;
}

/** Canonical text of a CIDR (host bits cleared, RFC 5952 for IPv6). */
export function canonicalCidr(text: string): string {
  return formatCidr(parseCidr(text));
}

interface Node<T> {
  child: [Node<T> | null, Node<T> | null];
  value: T | undefined;
  has: boolean;
}

function newNode<T>(): Node<T> {
  return { child: [null, null], value: undefined, has: false };
}

function bitAt(b: Uint8Array, i: number): 0 | 1 {
  return ((b[i >> 3] >> (7 - (i & 7))) & 1) as 0 | 1;
}

export class AllowedIps<T> {
  private readonly root4: Node<T> = newNode();
  private readonly root6: Node<T> = newNode();
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Adds (or moves) a prefix to `value`. */
  insert(cidr: string | Cidr, value: T): void {
    const c = typeof cidr === 'string' ? parseCidr(cidr) : cidr;
    let n = c.family === 4 ? this.root4 : this.root6;
    for (let i = 0; i < c.prefix; i++) {
      const bit = bitAt(c.bytes, i);
      n = n.child[bit] ??= newNode();
    }
    if (!n.has) this.count++;
    n.has = true;
    n.value = value;
  }

  /** Removes a prefix; if `value` is given, only when it belongs to that value. */
  remove(cidr: string | Cidr, value?: T): boolean {
    const c = typeof cidr === 'string' ? parseCidr(cidr) : cidr;
    const path: Node<T>[] = [];
    let n: Node<T> | null = c.family === 4 ? this.root4 : this.root6;
    for (let i = 0; i < c.prefix && n; i++) {
      path.push(n);
      n = n.child[bitAt(c.bytes, i)];
    }
    if (!n || !n.has) return false;
    if (value !== undefined && n.value !== value) return false;
    n.has = false;
    n.value = undefined;
    this.count--;
    // Prune empty leaves back up the path.
    for (let i = path.length - 1; i >= 0; i--) {
      const parent = path[i];
      const bit = bitAt(c.bytes, i);
      const ch = parent.child[bit];
      if (ch && !ch.has && !ch.child[0] && !ch.child[1]) parent.child[bit] = null;
      else break;
    }
    return true;
  }

  /** Removes every prefix of `value`; returns how many. */
  removeValue(value: T): number {
    const list = this.entries().filter((e) => e.value === value);
    for (const e of list) this.remove(e.cidr);
    return list.length;
  }

  /** Longest-prefix match for a 4- or 16-byte address (or its text). */
  lookup(addr: Uint8Array | string): T | undefined {
    const b = typeof addr === 'string' ? parseIp(addr) : addr;
    let n: Node<T> | null;
    if (b.length === 4) n = this.root4;
    else if (b.length === 16) n = this.root6;
    else throw new RangeError(`address must be 4 or 16 bytes, got ${b.length}`);
    let best: T | undefined = undefined;
    const bits = b.length * 8;
    for (let i = 0; n; i++) {
      if (n.has) best = n.value;
      if (i === bits) break;
      n = n.child[bitAt(b, i)];
    }
    return best;
  }

  /** The exact prefix's owner (no longest-match). */
  get(cidr: string | Cidr): T | undefined {
    const c = typeof cidr === 'string' ? parseCidr(cidr) : cidr;
    let n: Node<T> | null = c.family === 4 ? this.root4 : this.root6;
    for (let i = 0; i < c.prefix && n; i++) n = n.child[bitAt(c.bytes, i)];
    return n && n.has ? n.value : undefined;
  }

  /** Every prefix and its owner, IPv4 first, in address order. */
  entries(): { cidr: string; value: T }[] {
    const out: { cidr: string; value: T }[] = [];
    const walk = (n: Node<T>, depth: number, bytes: Uint8Array): void => {
      if (n.has) out.push({ cidr: formatCidr({ family: bytes.length === 4 ? 4 : 6, bytes: Uint8Array.from(bytes), prefix: depth }), value: n.value as T });
      for (const bit of [0, 1] as const) {
        const ch = n.child[bit];
        if (!ch) continue;
        if (bit) bytes[depth >> 3] |= 0x80 >> (depth & 7);
        walk(ch, depth + 1, bytes);
        if (bit) bytes[depth >> 3] &= ~(0x80 >> (depth & 7));
      }
    };
    walk(this.root4, 0, new Uint8Array(4));
    walk(this.root6, 0, new Uint8Array(16));
    return out;
  }

  clear(): void {
    this.root4.child = [null, null];
    this.root4.has = false;
    this.root6.child = [null, null];
    this.root6.has = false;
    this.count = 0;
  }
}
