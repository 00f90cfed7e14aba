/**
 * RouteMisses (src/dns/misses.ts) over fakes: verdicts -> bypass routes and released
 * packets; expiry keeps a bypass while the verdict holds; the table is bounded.
 * PolicyRouting's bypass lines over a fake `ip`.
 */
import { describe, it, expect } from 'vitest';
import { RouteMisses } from '../../src/dns/misses.js';
import type { AddressVerdict } from '../../src/dns/classify.js';
import { PolicyRouting } from '../../src/routing/policy.js';
import { IpCommandError, type IpCommand } from '../../src/routing/ip.js';

function setup(verdicts: Record<string, AddressVerdict['verdict'] | 'failed'>, opts: { max?: number; refuse?: string[] } = {}) {
  let now = 1000;
  const calls: string[] = [];
  const released: Uint8Array[] = [];
  const m = new RouteMisses({
    inRange: (a) => a.startsWith('10.96.') || a.startsWith('fd00:'),
    classify: async (a) => {
      calls.push(`classify ${a}`);
      const v = verdicts[a];
      if (v === undefined) throw new Error(`lookup failed for ${a}`);
      if (v === 'failed') return { verdict: 'other', reason: 'lookup-failed' };
      return { verdict: v, reason: v === 'project' ? 'member' : 'none' };
    },
    addBypass: async (c) => {
      calls.push(`add ${c}`);
      return !(opts.refuse ?? []).includes(c);
    },
    removeBypass: async (c) => void calls.push(`remove ${c}`),
    release: (p) => released.push(Uint8Array.from(p)),
    now: () => now,
    holdMs: 30_000,
    maxBypasses: opts.max,
  });
  return { m, calls, released, advance: (ms: number) => (now += ms) };
}

const pkt = (b: number) => Uint8Array.from([0x45, 0, 0, 20, b]);

describe('RouteMisses', () => {
  it('other and never verdicts get a bypass and the packet is released once; the caller copy is wiped', async () => {
    const t = setup({ '10.96.0.7': 'other', 'fd00::9': 'never' });
    const p = pkt(7);
    await t.m.miss('10.96.0.7', p);
    await t.m.miss('fd00::9', pkt(9));
    expect(t.calls).toEqual(['classify 10.96.0.7', 'add 10.96.0.7/32', 'classify fd00::9', 'add fd00::9/128']);
    expect(t.released.map((r) => r[4])).toEqual([7, 9]);
    expect([...p]).toEqual([0, 0, 0, 0, 0]);
    expect(t.m.list()).toEqual(['10.96.0.7/32', 'fd00::9/128']);
    expect(t.m.counters).toMatchObject({ misses: 2, bypassed: 2, released: 2, projectUnrouted: 0 });
  });

  it('misses outside the ranges (the kernel multicast out of tenc0) are ignored and counted', async () => {
    const t = setup({ 'ff02::2': 'other' });
    await t.m.miss('ff02::2', pkt(1));
    expect(t.calls).toEqual([]);
    expect(t.m.counters).toMatchObject({ misses: 0, outOfRange: 1 });
  });

  it('a project verdict adds nothing and releases nothing (counted)', async () => {
    const t = setup({ '10.96.0.8': 'project' });
    await t.m.miss('10.96.0.8', pkt(8));
    expect(t.calls).toEqual(['classify 10.96.0.8']);
    expect(t.released).toEqual([]);
    expect(t.m.counters.projectUnrouted).toBe(1);
  });

  it('a failed classification is counted, adds no bypass and leaks nothing', async () => {
    const t = setup({});
    await t.m.miss('10.96.0.66', pkt(1));
    expect(t.released).toEqual([]);
    expect(t.m.list()).toEqual([]);
    expect(t.m.counters.errors).toBe(1);
  });

  it('an unanswered reverse lookup (other/lookup-failed) adds no bypass: the address stays in the tunnel', async () => {
    const t = setup({ '10.96.0.44': 'failed' });
    await t.m.miss('10.96.0.44', pkt(4));
    expect(t.calls).toEqual(['classify 10.96.0.44']);
    expect(t.released).toEqual([]);
    expect(t.m.counters.undecided).toBe(1);
  });

  it('a refused bypass (a tunnel route of that prefix) releases nothing', async () => {
    const t = setup({ '10.96.0.5': 'other' }, { refuse: ['10.96.0.5/32'] });
    await t.m.miss('10.96.0.5', pkt(5));
    expect(t.released).toEqual([]);
    expect(t.m.list()).toEqual([]);
  });

  it('concurrent misses for one address classify once and are all released in order; later ones at once', async () => {
    const t = setup({ '10.96.0.7': 'other' });
    await Promise.all([t.m.miss('10.96.0.7', pkt(1)), t.m.miss('10.96.0.7', pkt(2))]);
    await t.m.miss('10.96.0.7', pkt(3));
    expect(t.calls.filter((c) => c.startsWith('classify'))).toHaveLength(1);
    expect(t.released.map((r) => r[4])).toEqual([1, 2, 3]);
  });

  it('at most 16 packets per address wait for a verdict; held packets of a project address are wiped, not released', async () => {
    const t = setup({ '10.96.0.7': 'other', '10.96.0.8': 'project' });
    const burst = Array.from({ length: 17 }, (_, i) => pkt(i));
    await Promise.all(burst.map((p) => t.m.miss('10.96.0.7', p)));
    expect(t.released).toHaveLength(16);
    expect(t.m.counters.heldDropped).toBe(1);
    const held = [pkt(1), pkt(2)];
    await Promise.all(held.map((p) => t.m.miss('10.96.0.8', p)));
    expect(t.released).toHaveLength(16);
    expect(held.every((p) => p.every((b) => b === 0))).toBe(true);
  });

  it('expiry keeps a bypass whose verdict holds and removes one that became project', async () => {
    const verdicts: Record<string, AddressVerdict['verdict'] | 'failed'> = { '10.96.0.1': 'other', '10.96.0.2': 'other' };
    const t = setup(verdicts);
    await t.m.miss('10.96.0.1', null);
    await t.m.miss('10.96.0.2', null);
    t.advance(10_000);
    await t.m.expire();
    expect(t.calls.filter((c) => c.startsWith('classify'))).toHaveLength(2); // not due yet
    verdicts['10.96.0.2'] = 'project';
    t.advance(25_000);
    await t.m.expire();
    expect(t.m.list()).toEqual(['10.96.0.1/32']);
    expect(t.calls).toContain('remove 10.96.0.2/32');
    expect(t.calls).not.toContain('remove 10.96.0.1/32');
  });

  it('at most 256 addresses are classified at once; more misses are counted busy, not queued', async () => {
    const gates: (() => void)[] = [];
    const m = new RouteMisses({
      inRange: () => true,
      classify: () => new Promise((r) => gates.push(() => r({ verdict: 'other', reason: 'none' }))),
      addBypass: async () => true,
      removeBypass: async () => {},
      release: () => {},
      now: () => 0,
      holdMs: 1000,
    });
    const all = Array.from({ length: 300 }, (_, i) => m.miss(`10.96.${i >> 8}.${i & 255}`, pkt(i & 255)));
    expect(gates).toHaveLength(256);
    expect(m.counters.busy).toBe(44);
    gates.forEach((g) => g());
    await Promise.all(all);
    expect(m.list()).toHaveLength(256);
  });

  it('holds at most maxBypasses: the oldest is removed first', async () => {
    const t = setup({ '10.96.0.1': 'other', '10.96.0.2': 'other', '10.96.0.3': 'other' }, { max: 2 });
    for (const a of ['10.96.0.1', '10.96.0.2', '10.96.0.3']) await t.m.miss(a, null);
    expect(t.m.list()).toEqual(['10.96.0.2/32', '10.96.0.3/32']);
    expect(t.calls).toContain('remove 10.96.0.1/32');
    expect(t.m.counters.evicted).toBe(1);
  });
});

function fakeIp(lines: string[], exists: Set<string>): IpCommand {
  const fake = {
    async json(args: string[]) {
      return args[0] === 'link' ? [{ mtu: 1500, flags: [] }] : [];
    },
    async run(args: string[]) {
      lines.push(`run ${args.join(' ')}`);
    },
    async batch(fam: number, batch: string[]) {
      for (const l of batch) {
        const m = /^route add throw (\S+)/.exec(l);
        if (m && exists.has(m[1])) throw new IpCommandError([`-${fam}`, '-batch'], 'RTNETLINK answers: File exists', 2, 0);
        lines.push(`-${fam} ${l}`);
      }
    },
  };
  return fake as unknown as IpCommand;
}

describe('PolicyRouting bypass routes', () => {
  it('adds throw routes with add, refuses over a tenc0 route, and tears them down', async () => {
    const lines: string[] = [];
    const r = new PolicyRouting({ ifname: 'tenc0', table: 52100, priority: 5210, fwmark: 0xcb84, addresses: { v4: '10.1.0.1', v6: null }, ip: fakeIp(lines, new Set(['10.96.0.9/32'])) });
    await r.install(1420, ['10.96.0.0/12', '10.1.0.5/32']);
    expect(await r.addBypass('10.96.0.7/32')).toBe(true);
    expect(await r.addBypass('10.1.0.5/32')).toBe(false); // a tunnel route of this run
    expect(await r.addBypass('10.96.0.9/32')).toBe(false); // the kernel has one of that prefix
    expect(lines).toContain('-4 route add throw 10.96.0.7/32 table 52100');
    expect(lines.some((l) => l.includes('throw 10.1.0.5'))).toBe(false);
    expect(r.bypasses()).toEqual(['10.96.0.7/32']);
    lines.length = 0;
    await r.teardown();
    expect(lines).toContain('-4 route del throw 10.96.0.7/32 table 52100');
    expect(r.bypasses()).toEqual([]);
  });

  it('a tenc0 route added over a bypass takes its place; removeBypass then deletes nothing', async () => {
    const lines: string[] = [];
    const r = new PolicyRouting({ ifname: 'tenc0', table: 52100, priority: 5210, fwmark: 0xcb84, addresses: { v4: '10.1.0.1', v6: null }, ip: fakeIp(lines, new Set()) });
    await r.install(1420, []);
    await r.addBypass('10.96.0.7/32');
    await r.addRoutes(['10.96.0.7/32']);
    expect(r.bypasses()).toEqual([]);
    lines.length = 0;
    await r.removeBypass('10.96.0.7/32');
    expect(lines).toEqual([]);
    expect(r.routes()).toEqual(['10.96.0.7/32']);
  });
});
