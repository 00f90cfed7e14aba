/** The nftables ruleset text of the DNS interception (src/dns/intercept.ts) and its argument checks. */
import { describe, it, expect } from 'vitest';
import { interceptRuleset, DnsIntercept } from '../../src/dns/intercept.js';

describe('dns interception ruleset', () => {
  it('marks skip, then redirect per family and protocol; the upstream flows in a conntrack zone of their own', () => {
    const text = interceptRuleset({ table: 'tenc_dns_tenc0', fwmark: 0xcb84, servers: ['10.96.0.10', 'fd00:96::a', '10.96.0.11'], port: 15353 });
    expect(text).toBe(
      [
        'table inet tenc_dns_tenc0 {',
        '  chain output {',
        '    type nat hook output priority -100; policy accept;',
        '    meta mark 0xcb84 return',
        '    ip daddr { 10.96.0.10, 10.96.0.11 } udp dport 53 redirect to :15353',
        '    ip daddr { 10.96.0.10, 10.96.0.11 } tcp dport 53 redirect to :15353',
        '    ip6 daddr { fd00:96::a } udp dport 53 redirect to :15353',
        '    ip6 daddr { fd00:96::a } tcp dport 53 redirect to :15353',
        '  }',
        '  chain upstream_out {',
        '    type filter hook output priority -300; policy accept;',
        '    meta mark 0xcb84 ip daddr { 10.96.0.10, 10.96.0.11 } udp dport 53 ct zone set 53',
        '    meta mark 0xcb84 ip daddr { 10.96.0.10, 10.96.0.11 } tcp dport 53 ct zone set 53',
        '    meta mark 0xcb84 ip6 daddr { fd00:96::a } udp dport 53 ct zone set 53',
        '    meta mark 0xcb84 ip6 daddr { fd00:96::a } tcp dport 53 ct zone set 53',
        '  }',
        '  chain upstream_in {',
        '    type filter hook prerouting priority -300; policy accept;',
        '    ip saddr { 10.96.0.10, 10.96.0.11 } udp sport 53 ct zone set 53',
        '    ip saddr { 10.96.0.10, 10.96.0.11 } tcp sport 53 ct zone set 53',
        '    ip6 saddr { fd00:96::a } udp sport 53 ct zone set 53',
        '    ip6 saddr { fd00:96::a } tcp sport 53 ct zone set 53',
        '  }',
        '}',
        '',
      ].join('\n'),
    );
    expect(interceptRuleset({ table: 't', fwmark: 1, servers: ['10.0.0.1'], port: 53 })).not.toContain('ip6');
  });

  it('rejects table names nft would misread and bad ports', () => {
    expect(() => interceptRuleset({ table: 'a b', fwmark: 1, servers: [], port: 1 })).toThrow(RangeError);
    expect(() => interceptRuleset({ table: 'x; flush ruleset', fwmark: 1, servers: [], port: 1 })).toThrow(RangeError);
    expect(() => new DnsIntercept({ table: 't', fwmark: 1, servers: [], port: 70000 })).toThrow(RangeError);
  });

  it('an nft that fails is a typed error naming the command', async () => {
    const i = new DnsIntercept({ table: 't', fwmark: 1, servers: ['10.0.0.1'], port: 53, nft: 'false' });
    await expect(i.install()).rejects.toMatchObject({ code: 'ERR_TENC_NFT' });
    await expect(i.remove()).resolves.toBeUndefined(); // nothing installed: nothing to remove
  });
});
