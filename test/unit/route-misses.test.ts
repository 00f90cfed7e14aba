/**
 * RouteMisses (src/dns/misses.ts) over fakes: verdicts -> bypass routes and released
 * packets; expiry keeps a bypass while the verdict holds; the table is bounded.
 * PolicyRouting's bypass lines over a fake `ip`.
 */
import { describe, it, expect } from 'vitest';
import { RouteMisses } from '../../src/dns/misses.js';
import type { AddressVerdict } from '../../src/dns/classify.js';
import { PolicyRouting, cidrCovers } from '../../src/routing/policy.js';
import { IpCommandError, type IpCommand } from '../../src/routing/ip.js';

function setup(verdicts: Record<string, AddressVerdict['verdict'] | 'failed'>, opts: { max?: number; refuse?: string[] } = {}) {
  let now = 1000;
  const calls: string[] = [];
  const released: Uint8Array[] = [];
  const installed = new Set<string>();
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
      if ((opts.refuse ?? []).includes(c)) return false;
      installed.add(c);
      return true;
    },
    removeBypass: async (c) => {
      calls.push(`remove ${c}`);
      installed.delete(c);
    },
    hasBypass: (c) => installed.has(c),
    release: (p) => released.push(Uint8Array.from(p)),
    now: () => now,
    holdMs: 30_000,
    maxBypasses: opts.max,
  });
  return { m, calls, released, installed, advance: (ms: number) => (now += ms) };
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
      hasBypass: () => true,
      release: () => {},
      now: () => 0,
      holdMs: 1000,
      maxPerSecond: 1000, // the rate cap is tested on its own
    });
    const all = Array.from({ length: 300 }, (_, i) => m.miss(`10.96.${i >> 8}.${i & 255}`, pkt(i & 255)));
    expect(gates).toHaveLength(256);
    expect(m.counters.busy).toBe(44);
    gates.forEach((g) => g());
    await Promise.all(all);
    expect(m.list()).toHaveLength(256);
  });

  it('a scan of the ranges: at most maxPerSecond misses a second are classified, the rest counted and wiped (issue 19.8)', async () => {
    const verdicts: Record<string, AddressVerdict['verdict']> = {};
    for (let i = 0; i < 500; i++) verdicts[`10.96.${i >> 8}.${i & 255}`] = 'other';
    const t = setup(verdicts);
    const packets = Object.keys(verdicts).map((_, i) => pkt(i & 255));
    await Promise.all(Object.keys(verdicts).map((a, i) => t.m.miss(a, packets[i])));
    expect(t.calls.filter((c) => c.startsWith('classify'))).toHaveLength(200);
    expect(t.m.counters.rateLimited).toBe(300);
    expect(t.released).toHaveLength(200);
    expect(packets.slice(200).every((p) => p.every((b) => b === 0))).toBe(true); // dropped, not leaked
    t.advance(1000); // a new second: the next misses are taken up again
    await t.m.miss('10.96.1.200', pkt(1));
    expect(t.calls.at(-1)).toBe('add 10.96.1.200/32');
  });

  it('revoke: bypasses of addresses that became members go at once; a classification under way adds none (issue 19.6)', async () => {
    const t = setup({ '10.96.0.1': 'other', '10.96.0.2': 'other', '10.96.0.3': 'other' });
    await t.m.miss('10.96.0.1', null);
    await t.m.miss('10.96.0.2', null);
    const members = new Set(['10.96.0.1']);
    const during = t.m.miss('10.96.0.3', pkt(3)); // classified before the change, finishes after
    await t.m.revoke((a) => members.has(a));
    await during;
    expect(t.calls).toContain('remove 10.96.0.1/32');
    expect(t.m.list()).toEqual(['10.96.0.2/32']);
    expect(t.installed.has('10.96.0.3/32')).toBe(false);
    expect(t.released).toHaveLength(0);
    expect(t.m.counters.revoked).toBe(1);
    await t.m.miss('10.96.0.3', null); // its next miss is classified afresh
    expect(t.m.list()).toEqual(['10.96.0.2/32', '10.96.0.3/32']);
  });

  it('holds at most maxBypasses: the oldest is removed first', async () => {
    const t = setup({ '10.96.0.1': 'other', '10.96.0.2': 'other', '10.96.0.3': 'other' }, { max: 2 });
    for (const a of ['10.96.0.1', '10.96.0.2', '10.96.0.3']) await t.m.miss(a, null);
    expect(t.m.list()).toEqual(['10.96.0.2/32', '10.96.0.3/32']);
    expect(t.calls).toContain('remove 10.96.0.1/32');
    expect(t.m.counters.evicted).toBe(1);
  });
});

/**
 * A fake `ip` over a model of one routing table per family, with the kernel's rules
 * that matter here: `replace` matches prefix + metric; `add` fails with EEXIST on the
 * same prefix + metric; IPv4 `del` matches the type, IPv6 `del` does not (only the
 * proto, when given); lookup = longest prefix, then lowest metric.
 */
interface KRoute {
  fam: 4 | 6;
  type: 'unicast' | 'throw' | 'unreachable';
  dst: string;
  metric: number;
  proto: string;
  dev: string;
}

function fakeKernel(lines: string[], failOnce: RegExp[] = []) {
  const table: KRoute[] = [];
  const parse = (fam: 4 | 6, l: string) => {
    const w = l.split(' ');
    const op = w[1];
    let k = 2;
    let type: KRoute['type'] = 'unicast';
    if (w[k] === 'throw' || w[k] === 'unreachable') type = w[k++] as KRoute['type'];
    const dst = w[k];
    const at = (name: string) => (w.includes(name) ? w[w.indexOf(name) + 1] : undefined);
    const metric = Number(at('metric') ?? (fam === 6 ? 1024 : 0));
    const dev = at('dev') ?? (type === 'unicast' ? '?' : 'lo');
    return { op, r: { fam, type, dst, metric, proto: at('proto') ?? 'boot', dev } as KRoute, protoGiven: at('proto') !== undefined, devGiven: at('dev') !== undefined };
  };
  const err = (msg: string, done: number) => new IpCommandError(['-batch'], `RTNETLINK answers: ${msg}`, 2, done);
  const ip = {
    async json(args: string[]) {
      return args[0] === 'link' ? [{ mtu: 1500, flags: [] }] : [];
    },
    async run(args: string[]) {
      lines.push(`run ${args.join(' ')}`);
    },
    async batch(fam: 4 | 6, batch: string[]) {
      for (const [n, l] of batch.entries()) {
        const f = failOnce.findIndex((re) => re.test(l));
        if (f >= 0) {
          failOnce.splice(f, 1);
          throw err('Operation not permitted', n);
        }
        if (!l.startsWith('route ')) {
          lines.push(`-${fam} ${l}`); // install()'s link and address lines: not modelled
          continue;
        }
        const { op, r, protoGiven, devGiven } = parse(fam, l);
        const same = (x: KRoute) => x.fam === fam && x.dst === r.dst && x.metric === r.metric;
        if (op === 'replace') {
          const i = table.findIndex(same);
          if (i >= 0) table[i] = r;
          else table.push(r);
        } else if (op === 'add') {
          if (table.some(same)) throw err('File exists', n);
          table.push(r);
        } else if (op === 'del') {
          const i = table.findIndex(
            (x) =>
              x.fam === fam &&
              x.dst === r.dst &&
              (fam === 6 || x.type === r.type) &&
              (!protoGiven || x.proto === r.proto) &&
              (!devGiven || x.dev === r.dev) &&
              (r.type !== 'unreachable' || x.metric === r.metric),
          );
          if (i < 0) throw err('No such process', n);
          table.splice(i, 1);
        }
        lines.push(`-${fam} ${l}`);
      }
    },
  };
  const lookup = (addr: string): KRoute['type'] | 'main' => {
    const fam = addr.includes(':') ? 6 : 4;
    const host = `${addr}/${fam === 4 ? 32 : 128}`;
    const hits = table.filter((x) => x.fam === fam && cidrCovers(x.dst, host));
    if (hits.length === 0) return 'main';
    hits.sort((a, b) => Number(b.dst.split('/')[1]) - Number(a.dst.split('/')[1]) || a.metric - b.metric);
    return hits[0].type === 'throw' ? 'main' : hits[0].type;
  };
  return { ip: ip as unknown as IpCommand, table, lookup };
}

function routingOver(k: ReturnType<typeof fakeKernel>, ranges = ['10.96.0.0/12', 'fd00:96::/64']): PolicyRouting {
  return new PolicyRouting({ ifname: 'tenc0', table: 52100, priority: 5210, fwmark: 0xcb84, addresses: { v4: '10.1.0.1', v6: 'fd00::1' }, bypassRanges: ranges, ip: k.ip });
}

describe('PolicyRouting bypass routes (over a model of the kernel table)', () => {
  it('removeRoute keepGuard (a DNS answer after its TTL): outside the ranges the guard stays (unreachable, never the main table); inside, the range route takes over (issue 19.1)', async () => {
    const k = fakeKernel([]);
    const r = routingOver(k);
    await r.install(1420, ['10.96.0.0/12', 'fd00:96::/64']);
    await r.addRoutes(['10.200.0.5/32', 'fd00:99::5/128', '10.96.0.5/32']);
    for (const c of ['10.200.0.5/32', 'fd00:99::5/128', '10.96.0.5/32']) await r.removeRoute(c, { keepGuard: true });
    expect(k.lookup('10.200.0.5')).toBe('unreachable');
    expect(k.lookup('fd00:99::5')).toBe('unreachable');
    expect(k.lookup('10.96.0.5')).toBe('unicast'); // the range's tenc0 route, no guard in front of it
    expect(r.keptGuards()).toEqual(['10.200.0.5/32', 'fd00:99::5/128']);
    await r.addRoutes(['10.200.0.5/32']); // answered again: routed again
    expect(k.lookup('10.200.0.5')).toBe('unicast');
    await r.removeRoute('10.200.0.5/32', { keepGuard: true });
    // a wider route (a peer) is not shadowed by the kept guard, and the guard goes only once
    // the route is in: after every ip call the address meets the guard or the route, never
    // neither (from a review: the guard was deleted first)
    const seen: string[] = [];
    const batch = k.ip.batch.bind(k.ip);
    k.ip.batch = async (...a: Parameters<typeof k.ip.batch>) => {
      try {
        return await batch(...a);
      } finally {
        seen.push(k.lookup('10.200.0.5'));
      }
    };
    await r.addRoutes(['10.200.0.0/24']);
    expect(seen.length).toBeGreaterThan(1);
    expect(seen.filter((s) => s !== 'unreachable' && s !== 'unicast')).toEqual([]);
    expect(k.lookup('10.200.0.5')).toBe('unicast');
    await r.teardown();
    expect(k.table).toEqual([]);
  });

  it('bypasses asked for together go in one `ip -batch` per family; a line the kernel refuses answers false, the rest still go (issue 19.8)', async () => {
    const lines: string[] = [];
    const k = fakeKernel(lines);
    const r = routingOver(k);
    await r.install(1420, ['10.96.0.0/12', 'fd00:96::/64']);
    k.table.push({ fam: 4, type: 'throw', dst: '10.96.0.20/32', metric: 0, proto: 'x', dev: '' }); // not ours: `add` gets File exists
    let batches = 0;
    const batch = k.ip.batch.bind(k.ip);
    k.ip.batch = (fam, l) => (batches++, batch(fam, l));
    const cidrs = [...Array.from({ length: 40 }, (_, i) => `10.96.0.${i + 1}/32`), 'fd00:96::7/128', 'fd00:96::8/128'];
    const ok = await Promise.all(cidrs.map((c) => r.addBypass(c)));
    expect(ok.filter((x) => !x)).toHaveLength(1);
    expect(ok[19]).toBe(false); // 10.96.0.20
    expect(batches).toBeLessThanOrEqual(3); // IPv4 (split once at the refused line) and IPv6; not one process each
    for (const c of cidrs) if (c !== '10.96.0.20/32') expect(k.lookup(c.split('/')[0])).toBe('main');
    expect(r.bypasses()).toHaveLength(41);
  });

  it('adds throw routes with add and proto 117 inside the ranges only, never over or under a tenc0 route', async () => {
    const lines: string[] = [];
    const k = fakeKernel(lines);
    const r = routingOver(k);
    await r.install(1420, ['10.96.0.0/12', 'fd00:96::/64', '10.96.5.0/24', '10.96.0.9/32']);
    expect(await r.addBypass('10.96.0.7/32')).toBe(true);
    expect(k.lookup('10.96.0.7')).toBe('main');
    expect(k.lookup('10.96.0.8')).toBe('unicast'); // the range: into tenc0 until classified
    expect(await r.addBypass('10.96.0.9/32')).toBe(false); // a tenc0 route of that prefix
    expect(await r.addBypass('10.96.5.3/32')).toBe(false); // under a wider tenc0 route (a peer's allowed IPs)
    expect(await r.addBypass('10.50.0.1/32')).toBe(false); // outside the ranges
    expect(lines).toContain('-4 route add throw 10.96.0.7/32 table 52100 proto 117');
    expect(r.bypasses()).toEqual(['10.96.0.7/32']);
    lines.length = 0;
    await r.teardown();
    expect(lines).toContain('-4 route del throw 10.96.0.7/32 table 52100 proto 117');
    expect(k.table).toEqual([]);
  });

  it('a tenc0 route added later deletes every bypass it covers before it is added (IPv4 and IPv6)', async () => {
    const lines: string[] = [];
    const k = fakeKernel(lines);
    const r = routingOver(k);
    await r.install(1420, ['10.96.0.0/12', 'fd00:96::/64']);
    for (const b of ['10.96.0.3/32', '10.96.0.4/32', '10.96.1.4/32', 'fd00:96::3/128']) expect(await r.addBypass(b)).toBe(true);
    await r.addRoutes(['10.96.0.0/28', 'fd00:96::3/128']); // a peer's allowed IPs
    expect(k.lookup('10.96.0.3')).toBe('unicast');
    expect(k.lookup('10.96.0.4')).toBe('unicast');
    expect(k.lookup('fd00:96::3')).toBe('unicast');
    expect(k.lookup('10.96.1.4')).toBe('main'); // not covered: kept
    expect(r.bypasses()).toEqual(['10.96.1.4/32']);
    const delAt = lines.findIndex((l) => l.includes('del throw 10.96.0.3/32'));
    const addAt = lines.findIndex((l) => l.includes('replace 10.96.0.0/28 dev tenc0'));
    expect(delAt).toBeGreaterThanOrEqual(0);
    expect(delAt).toBeLessThan(addAt);
  });

  it('IPv6: deleting a bypass by proto never deletes the tenc0 route or the guard of its prefix', async () => {
    const lines: string[] = [];
    const k = fakeKernel(lines);
    const r = routingOver(k);
    await r.install(1420, ['fd00:96::/64']);
    expect(await r.addBypass('fd00:96::5/128')).toBe(true);
    await r.addRoutes(['fd00:96::5/128']); // deletes the bypass first, then adds route + guard
    await r.removeBypass('fd00:96::5/128'); // a stale caller: nothing to do
    expect(k.lookup('fd00:96::5')).toBe('unicast');
    expect(k.table.filter((x) => x.dst === 'fd00:96::5/128').map((x) => x.type).sort()).toEqual(['unicast', 'unreachable']);
  });
});

describe('RouteMisses over PolicyRouting', () => {
  function wire(k: ReturnType<typeof fakeKernel>, verdicts: Record<string, AddressVerdict['verdict']>) {
    const r = routingOver(k);
    let now = 0;
    const released: number[] = [];
    const m = new RouteMisses({
      inRange: (a) => a.startsWith('10.96.') || a.startsWith('fd00:96:'),
      classify: async (a) => ({ verdict: verdicts[a] ?? 'other', reason: verdicts[a] === 'project' ? 'member' : 'none' }),
      addBypass: (c) => r.addBypass(c),
      removeBypass: (c) => r.removeBypass(c),
      hasBypass: (c) => r.hasBypass(c),
      forgetBypass: async (c) => void forgotten.push(c),
      release: (p) => released.push(p[4]),
      now: () => now,
      holdMs: 30_000,
    });
    const forgotten: string[] = [];
    return { r, m, released, forgotten, advance: (ms: number) => (now += ms) };
  }

  it('a bypass a tunnel route took over is forgotten by what else let it out (the enforcement element), once', async () => {
    const k = fakeKernel([]);
    const w = wire(k, { '10.96.0.3': 'other', '10.96.0.4': 'other' });
    await w.r.install(1420, ['10.96.0.0/12']);
    await w.m.miss('10.96.0.3', pkt(1));
    await w.m.miss('10.96.0.4', pkt(2));
    await w.m.expire();
    expect(w.forgotten).toEqual([]); // both still bypassed
    await w.r.addRoutes(['10.96.0.3/32']); // a project route over one of them (a set-peer, a DNS answer)
    await w.m.expire();
    expect(w.forgotten).toEqual(['10.96.0.3/32']);
    expect(w.m.list()).toEqual(['10.96.0.4/32']);
    await w.m.expire();
    expect(w.forgotten).toEqual(['10.96.0.3/32']);
  });

  it('a peer added over a bypass, then removed: the address is classified afresh and bypassed again (no stale record)', async () => {
    const k = fakeKernel([]);
    const verdicts: Record<string, AddressVerdict['verdict']> = { '10.96.0.3': 'other' };
    const w = wire(k, verdicts);
    await w.r.install(1420, ['10.96.0.0/12']);
    await w.m.miss('10.96.0.3', pkt(1));
    expect(k.lookup('10.96.0.3')).toBe('main');
    await w.r.addRoutes(['10.96.0.0/28']); // set-peer with a wider prefix
    expect(k.lookup('10.96.0.3')).toBe('unicast');
    await w.m.expire();
    expect(w.m.list()).toEqual([]); // the record went with the route
    await w.r.removeRoute('10.96.0.0/28'); // remove-peer
    await w.m.miss('10.96.0.3', pkt(2));
    expect(k.lookup('10.96.0.3')).toBe('main');
    expect(w.released).toEqual([1, 2]);
  });

  it('a verdict that became project removes the bypass; a failed removal keeps the record and is retried', async () => {
    const k = fakeKernel([], [/del throw 10\.96\.0\.3/]);
    const verdicts: Record<string, AddressVerdict['verdict']> = { '10.96.0.3': 'other' };
    const w = wire(k, verdicts);
    await w.r.install(1420, ['10.96.0.0/12']);
    await w.m.miss('10.96.0.3', null);
    verdicts['10.96.0.3'] = 'project';
    w.advance(31_000);
    await w.m.expire(); // the `ip` call fails once
    expect(k.lookup('10.96.0.3')).toBe('main');
    expect(w.m.list()).toEqual(['10.96.0.3/32']);
    w.advance(31_000);
    await w.m.expire();
    expect(k.lookup('10.96.0.3')).toBe('unicast');
    expect(w.m.list()).toEqual([]);
  });

  it('after stop(), a classification under way adds no bypass and releases nothing', async () => {
    const k = fakeKernel([]);
    const w = wire(k, {});
    await w.r.install(1420, ['10.96.0.0/12']);
    const p = pkt(9);
    const pending = w.m.miss('10.96.0.9', p);
    w.m.stop();
    await pending;
    expect(k.lookup('10.96.0.9')).toBe('unicast');
    expect(w.released).toEqual([]);
    expect([...p].every((b) => b === 0)).toBe(true);
  });
});
