/**
 * Allowed-IPs trie: longest-prefix match over IPv4 and IPv6 (WireGuard whitepaper §3),
 * address parsing (RFC 4291 §2.2 text forms) and formatting (RFC 5952 §4).
 */
import { describe, expect, it } from 'vitest';
import { AddressError, AllowedIps, canonicalCidr, formatIp, parseCidr, parseIp } from '../../src/peer/allowedips.js';

describe('address parsing', () => {
  const good: [string, string][] = [
    ['10.1.2.3', '10.1.2.3'],
    ['0.0.0.0', '0.0.0.0'],
    ['255.255.255.255', '255.255.255.255'],
    ['fd00::5', 'fd00::5'],
    ['::', '::'],
    ['::1', '::1'],
    ['FD00:0:0:0:0:0:0:1', 'fd00::1'],
    ['1:0:0:2:0:0:0:3', '1:0:0:2::3'], // longest zero run is compressed
    ['1:0:0:2:0:0:3:4', '1::2:0:0:3:4'], // first on ties
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
    ['1:0:2:3:4:5:6:7', '1:0:2:3:4:5:6:7'], // a single zero group is not compressed
    ['::ffff:10.0.0.1', '::ffff:a00:1'],
    ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
  ];
  for (const [text, canon] of good) {
    it(`parses ${text}`, () => {
      expect(formatIp(parseIp(text))).toBe(canon);
    });
  }
  const bad = ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1.2.3.-4', 'fd00:::1', '1::2::3', '1:2:3:4:5:6:7:8:9', '12345::', 'g::1', '1.2.3.4::', ':1::2', 'fd00::1%eth0', ' 10.0.0.1'];
  for (const text of bad) {
    it(`refuses ${JSON.stringify(text)}`, () => {
      expect(() => parseIp(text)).toThrow(AddressError);
    });
  }
  it('wrong type is a TypeError', () => {
    expect(() => parseIp(5 as unknown as string)).toThrow(TypeError);
    expect(() => parseCidr(null as unknown as string)).toThrow(TypeError);
  });
  it('CIDRs: host bits cleared, bare address is a host route, bad lengths refused', () => {
    expect(canonicalCidr('10.1.2.3/16')).toBe('10.1.0.0/16');
    expect(canonicalCidr('10.1.2.3')).toBe('10.1.2.3/32');
    expect(canonicalCidr('fd00::5')).toBe('fd00::5/128');
    expect(canonicalCidr('fd00:1:ffff:3::5/33')).toBe('fd00:1:8000::/33');
    expect(canonicalCidr('fd00:ffff::/20')).toBe('fd00:f000::/20');
    expect(canonicalCidr('0.0.0.0/0')).toBe('0.0.0.0/0');
    expect(() => parseCidr('10.0.0.0/33')).toThrow(AddressError);
    expect(() => parseCidr('fd00::/129')).toThrow(AddressError);
    expect(() => parseCidr('10.0.0.0/08')).toThrow(AddressError);
    expect(() => parseCidr('10.0.0.0/')).toThrow(AddressError);
  });
});

describe('longest-prefix match', () => {
  const t = new AllowedIps<string>();
  t.insert('0.0.0.0/0', 'default4');
  t.insert('10.0.0.0/8', 'A');
  t.insert('10.1.0.0/16', 'B');
  t.insert('10.1.2.0/24', 'C');
  t.insert('10.1.2.3/32', 'D');
  t.insert('192.168.0.0/24', 'E');
  t.insert('fd00::/8', 'F');
  t.insert('fd00:1::/32', 'G');
  t.insert('fd00:1::5/128', 'H');
  const table: [number, string, string | undefined][] = [
    [1, '10.1.2.3', 'D'],
    [2, '10.1.2.4', 'C'],
    [3, '10.1.3.1', 'B'],
    [4, '10.2.0.1', 'A'],
    [5, '11.0.0.1', 'default4'],
    [6, '192.168.0.255', 'E'],
    [7, '192.168.1.0', 'default4'],
    [8, 'fd00:1::5', 'H'],
    [9, 'fd00:1::6', 'G'],
    [10, 'fd00:2::1', 'F'],
    [11, 'fe80::1', undefined], // no IPv6 default: IPv4's does not leak across families
    [12, '::ffff:10.1.2.3', undefined], // mapped addresses are IPv6
  ];
  for (const [n, addr, want] of table) {
    it(`#${n} ${addr} -> ${want}`, () => {
      expect(t.lookup(addr)).toBe(want);
      expect(t.lookup(parseIp(addr))).toBe(want);
    });
  }
  it('wrong address length is a RangeError', () => {
    expect(() => t.lookup(new Uint8Array(5))).toThrow(RangeError);
  });
});

describe('updates', () => {
  it('a prefix belongs to one peer: inserting it again moves it', () => {
    const t = new AllowedIps<number>();
    t.insert('10.0.0.0/24', 1);
    t.insert('10.0.0.7/24', 2); // same prefix after masking
    expect(t.size).toBe(1);
    expect(t.lookup('10.0.0.9')).toBe(2);
    expect(t.get('10.0.0.0/24')).toBe(2);
  });

  it('remove only the named owner, and prune', () => {
    const t = new AllowedIps<number>();
    t.insert('10.0.0.0/24', 1);
    t.insert('10.0.0.5/32', 2);
    expect(t.remove('10.0.0.5/32', 1)).toBe(false);
    expect(t.lookup('10.0.0.5')).toBe(2);
    expect(t.remove('10.0.0.5/32', 2)).toBe(true);
    expect(t.lookup('10.0.0.5')).toBe(1);
    expect(t.remove('10.0.0.5/32')).toBe(false);
    expect(t.remove('10.0.0.0/24')).toBe(true);
    expect(t.lookup('10.0.0.5')).toBe(undefined);
    expect(t.size).toBe(0);
  });

  it('removeValue drops every prefix of a peer; entries lists canonical text', () => {
    const t = new AllowedIps<number>();
    t.insert('10.0.0.1/32', 1);
    t.insert('fd00::1/128', 1);
    t.insert('10.0.0.2/32', 2);
    t.insert('10.0.0.0/8', 1);
    expect(t.entries()).toEqual([
      { cidr: '10.0.0.0/8', value: 1 },
      { cidr: '10.0.0.1/32', value: 1 },
      { cidr: '10.0.0.2/32', value: 2 },
      { cidr: 'fd00::1/128', value: 1 },
    ]);
    expect(t.removeValue(1)).toBe(3);
    expect(t.entries()).toEqual([{ cidr: '10.0.0.2/32', value: 2 }]);
    expect(t.lookup('10.9.9.9')).toBe(undefined);
  });

  it('randomized: matches a linear scan for the longest covering prefix', () => {
    let s = 12345;
    const rnd = (n: number): number => {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      return (s >>> 8) % n;
    };
    const t = new AllowedIps<number>();
    const model = new Map<string, { bytes: Uint8Array; prefix: number; v: number }>();
    const covers = (p: { bytes: Uint8Array; prefix: number }, a: Uint8Array): boolean => {
      for (let i = 0; i < p.prefix; i++) if (((p.bytes[i >> 3] ^ a[i >> 3]) >> (7 - (i & 7))) & 1) return false;
      return true;
    };
    const randAddr = (v6: boolean): Uint8Array => {
      const b = new Uint8Array(v6 ? 16 : 4);
      b[0] = 10; // keep addresses close so prefixes overlap
      for (let i = 1; i < b.length; i++) b[i] = i < 3 ? rnd(4) : rnd(256);
      return b;
    };
    for (let step = 0; step < 3000; step++) {
      const v6 = rnd(2) === 1;
      const a = randAddr(v6);
      const op = rnd(10);
      if (op < 4) {
        const prefix = rnd(v6 ? 129 : 33);
        const c = parseCidr(`${formatIp(a)}/${prefix}`);
        const v = rnd(5);
        t.insert(c, v);
        model.set(`${formatIp(c.bytes)}/${prefix}`, { bytes: c.bytes, prefix, v });
      } else if (op < 5 && model.size > 0) {
        const keys = [...model.keys()];
        const k = keys[rnd(keys.length)];
        expect(t.remove(k)).toBe(true);
        model.delete(k);
      } else {
        let best: { prefix: number; v: number } | undefined;
        for (const p of model.values()) {
          if (p.bytes.length !== a.length || !covers(p, a)) continue;
          if (!best || p.prefix > best.prefix) best = p;
        }
        expect(t.lookup(a), `step ${step} ${formatIp(a)}`).toBe(best?.v);
      }
    }
    expect(t.size).toBe(model.size);
  });
});
