/**
 * The exempt policy rules' residue (src/routing/policy-rules.ts removeResidue): a new
 * run deletes what a crashed run left at pref P-1, and nothing else at that pref. A
 * plain `rule del pref N` per dumped rule took whatever rule came first there: with
 * rulePriority 1 (P-1 = 0) the kernel's `0: from all lookup local`, in both families.
 */
import { describe, it, expect } from 'vitest';
import { PolicyRules, residueSpec, ruleSpecs } from '../../src/routing/policy-rules.js';
import type { IpCommand } from '../../src/routing/ip.js';
import type { RoutingSnapshot } from '../../src/routing/snapshot.js';

// what `ip -j rule show` prints for the rules ruleSpecs writes (iproute2 6.1)
const dumped4 = [
  { priority: 5209, src: '10.128.1.11', ipproto: 'tcp', sport_start: 9100, sport_end: 9102, table: 'main' },
  { priority: 5209, src: 'all', dst: '10.96.1.10', ipproto: 'udp', dport: 53, table: 'main' },
  { priority: 5209, src: 'all', table: '7' }, // an administrator's rule at the same pref
  { priority: 5209, src: 'all', ipproto: 'tcp', table: 'main' }, // no port: not of this shape
];

function fakeIp(rules: { 4: unknown[]; 6: unknown[] }): { ip: IpCommand; batches: string[] } {
  const batches: string[] = [];
  const ip = {
    batch: async (f: number, lines: string[]) => void batches.push(...lines.map((l) => `-${f} ${l}`)),
    json: async (args: string[]) => (args[0] === '-6' ? rules[6] : rules[4]),
  } as unknown as IpCommand;
  return { ip, batches };
}

describe('exempt policy rules: residue of an earlier run', () => {
  it('deletes each rule of the shape it writes by its own selectors, and leaves any other rule at that pref', async () => {
    const { ip, batches } = fakeIp({ 4: dumped4, 6: [{ priority: 5209, src: 'fd00:77::1', ipproto: 'udp', sport: 5353, table: 'main' }] });
    const r = new PolicyRules({ priority: 5209, addresses: { v4: '10.128.1.11', v6: 'fd00:77::1' }, ip, setChains: async () => {} });
    expect(await r.removeResidue()).toBe(3);
    expect(batches).toEqual([
      '-4 rule del pref 5209 from 10.128.1.11 ipproto tcp sport 9100-9102 lookup main',
      '-4 rule del pref 5209 to 10.96.1.10 ipproto udp dport 53 lookup main',
      '-6 rule del pref 5209 from fd00:77::1 ipproto udp sport 5353 lookup main',
    ]);
  });

  it('at pref 0 the kernel rule `from all lookup local` is never deleted (from the start snapshot too)', async () => {
    const local = [{ priority: 0, src: 'all', table: 'local' }];
    const { ip, batches } = fakeIp({ 4: local, 6: local });
    const r = new PolicyRules({ priority: 0, addresses: { v4: '10.128.1.11', v6: null }, ip, setChains: async () => {} });
    expect(await r.removeResidue()).toBe(0);
    const snap = { rules: { 4: local, 6: local } } as unknown as RoutingSnapshot;
    expect(await r.removeResidue(snap)).toBe(0);
    expect(batches).toEqual([]);
  });

  it('the spec read back from a dump is the one ruleSpecs wrote (prefix lengths as ip prints them)', () => {
    const specs = ruleSpecs(
      { to: [{ cidr: '10.96.1.10/32', protocol: 'tcp', port: 9100, endPort: 9100 }], local: [{ protocol: 'udp', port: 5000, endPort: 5010 }] },
      { v4: '10.128.1.11', v6: null },
      5209,
    );
    expect(specs[4]).toEqual([
      'pref 5209 to 10.96.1.10/32 ipproto tcp dport 9100 lookup main',
      'pref 5209 from 10.128.1.11/32 ipproto udp sport 5000-5010 lookup main',
    ]);
    // ip drops a host prefix length when it prints the rule; the deletion names the same rule
    expect(residueSpec({ priority: 5209, src: 'all', dst: '10.96.1.10', ipproto: 'tcp', dport: 9100, table: 'main' }, 5209)).toBe(
      'pref 5209 to 10.96.1.10 ipproto tcp dport 9100 lookup main',
    );
    expect(residueSpec({ priority: 5209, src: '10.0.0.0', srclen: 8, ipproto: 'tcp', dport: 1, table: 'main' }, 5209)).toBe(
      'pref 5209 from 10.0.0.0/8 ipproto tcp dport 1 lookup main',
    );
    // malformed dumps are not of this shape
    for (const bad of [null, 'x', { priority: 5209, table: 'main', ipproto: 'tcp', dport: '9100' }, { priority: 5209, table: 'main', ipproto: 'tcp', dport: 1, src: '10.0.0.1 table 7' }])
      expect(residueSpec(bad, 5209)).toBeNull();
  });
});
