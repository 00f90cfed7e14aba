/**
 * The enforcement table's nft script (src/routing/enforce.ts): the output chain, the
 * input chain only with "enforce", atomic replacement of an earlier run's table, and
 * the set elements without overlaps.
 */
import { describe, it, expect } from 'vitest';
import { coverMinimal, installScript, Enforcement } from '../../src/routing/enforce.js';

const OPTS = { ifname: 'tenc0', listenPort: 51820, fwmark: 0xcb84 };

describe('enforcement table', () => {
  it('output chain: tenc0, lo and the fwmark pass; project destinations, then the classify ranges (bypasses excepted) drop and count', () => {
    const s = installScript({ ...OPTS, input: false }, { project: ['10.128.1.10/32', 'fd00::1/128'], classify: ['10.0.0.0/8'] });
    const out = s.slice(s.indexOf('chain output'));
    const lines = out.split('\n').map((l) => l.trim());
    const at = (l: string) => {
      const i = lines.indexOf(l);
      expect(i, l).toBeGreaterThan(0);
      return i;
    };
    expect(out).toContain('type filter hook output priority filter - 10; policy accept;');
    const oif = at('oifname { "tenc0", "lo" } accept');
    const mark = at('meta mark 0xcb84 accept');
    const p4 = at('ip daddr @project4 counter name plaintext_to_project drop');
    const p6 = at('ip6 daddr @project6 counter name plaintext_to_project drop');
    const b4 = at('ip daddr @bypass4 accept');
    const c4 = at('ip daddr @classify4 counter name plaintext_to_project drop');
    at('ip6 daddr @classify6 counter name plaintext_to_project drop');
    // a bypass never lets a project address out; the classify drop comes after the bypasses
    expect(oif < mark && mark < p4 && p4 < p6 && p6 < b4 && b4 < c4).toBe(true);
    expect(s).toContain('add element inet tenc_tenc0 classify4 { 10.0.0.0/8 }');
    expect(s).not.toContain('chain input');
  });

  it('input chain with enforce; the earlier table is deleted in the same transaction (no doubling, no gap)', () => {
    const s = installScript({ ...OPTS, input: true }, { project: ['10.128.1.10/32'], classify: [] });
    expect(s).toContain('chain input');
    expect(s).toContain('ip saddr @project4 counter name plaintext_from_project drop');
    const lines = s.split('\n');
    expect(lines.slice(0, 3)).toEqual(['table inet tenc_tenc0 {}', 'delete table inet tenc_tenc0', 'table inet tenc_tenc0 {']);
  });

  it('alsoRemove: the DNS interception table goes in the same transaction, before the enforcement table; a bad name is refused', () => {
    const s = installScript({ ...OPTS, input: true }, { project: ['10.128.1.10/32'], classify: [] }, [], ['tenc_dns_tenc0']).split('\n');
    expect(s.slice(0, 2)).toEqual(['table inet tenc_dns_tenc0 {}', 'delete table inet tenc_dns_tenc0']);
    expect(s.filter((l) => l.includes('tenc_dns'))).toHaveLength(2);
    expect(() => new Enforcement({ ...OPTS, input: true }).install({ project: [], classify: [] }, ['x; flush ruleset'])).toThrow(RangeError);
  });

  it('set elements: duplicates and covered CIDRs go (interval sets refuse overlaps)', () => {
    expect(coverMinimal(['10.1.0.5/32', '10.1.0.0/16', '10.1.0.5/32', 'fd00::1/128', 'fd00::/64', '10.2.0.1/32', 'fd01::1/128'])).toEqual([
      '10.1.0.0/16',
      '10.2.0.1/32',
      'fd00::/64',
      'fd01::1/128',
    ]);
    const s = installScript({ ...OPTS, input: true }, { project: ['10.96.0.10/32', '10.128.1.10/32', '10.128.1.10/32'], classify: [] });
    expect(s).toContain('add element inet tenc_tenc0 project4 { 10.96.0.10/32, 10.128.1.10/32 }');
  });
});
