/**
 * Regressions of the DNS proxy's pure parts, each named after the bug it pins:
 * pod-domain answers that passed unrouted, an expired learned route that became a
 * bypass, stale verdicts and bypasses from races with membership changes, and
 * quadratic work on large answers. Injected clocks and deferred fakes, no sockets.
 */
import { describe, it, expect } from 'vitest';
import dnsPacket from 'dns-packet';
import { AddressClassifier, CidrSet, classifyName, type AddressVerdict } from '../../src/dns/classify.js';
import { rewriteAnswer, type RewriteOptions } from '../../src/dns/rewrite.js';
import { LearnedRoutes } from '../../src/dns/routes.js';
import { RouteMisses } from '../../src/dns/misses.js';
import { readQuestion } from '../../src/dns/message.js';

const policy = { domain: 'alpha.svc.cluster.local', neverNames: ['example.net', 'legacy.alpha.pod.cluster.local'] };

function opts(over: Partial<RewriteOptions> = {}): RewriteOptions {
  return { policy, neverCidrs: new CidrSet([]), endpoints: () => undefined, maxTtl: 10, limit: 65535, ...over };
}

function answer(name: string, answers: dnsPacket.Answer[]): Buffer {
  return dnsPacket.encode({ type: 'response', id: 7, flags: dnsPacket.RECURSION_AVAILABLE, questions: [{ name, type: 'A', class: 'IN' }], answers });
}

/** A promise with its resolve handle (a fake that answers when the test says so). */
function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('pod-domain names are project names (regression: an answer for <addr>.<project>.pod.<domain> went unrouted, in plaintext)', () => {
  it('rewriteAnswer: 10-128-1-10.alpha.pod.cluster.local is project, its TTL capped and its address learned', () => {
    const name = '10-128-1-10.alpha.pod.cluster.local';
    const r0 = answer(name, [{ name, type: 'A', ttl: 300, data: '10.128.1.10' }]);
    const r = rewriteAnswer(r0, readQuestion(r0)!, opts());
    expect(r.verdict).toBe('project');
    expect(r.learned).toEqual([{ address: '10.128.1.10', ttl: 10 }]);
    expect((dnsPacket.decode(r.message!).answers![0] as { ttl: number }).ttl).toBe(10);
  });

  it('classifyName: the own pod domain is project, another project\'s is other, a never-tunnel name still wins', () => {
    expect(classifyName('10-128-1-10.Alpha.pod.cluster.local.', policy)).toBe('project');
    expect(classifyName('10-128-1-20.beta.pod.cluster.local', policy)).toBe('other');
    expect(classifyName('x.legacy.alpha.pod.cluster.local', policy)).toBe('never');
    expect(classifyName('10-128-1-10.alpha.pod.other.local', policy)).toBe('other');
    expect(classifyName('web.corp.example', { domain: 'corp.example', neverNames: [] })).toBe('project'); // no pod domain for that shape
  });
});

describe('an expired learned route inside classifyCidrs is not bypassed (regression: it became `other` and left in plaintext)', () => {
  it('learn 10.244.1.5 from a project answer, expire it; a miss with PTR NXDOMAIN keeps it project, no bypass', async () => {
    let now = 1_000_000;
    const routes = new LearnedRoutes({ graceMs: 5000, maxRoutes: 16 });
    const name = 'api.alpha.svc.cluster.local';
    const r0 = answer(name, [{ name, type: 'A', ttl: 30, data: '10.244.1.5' }]);
    const rw = rewriteAnswer(r0, readQuestion(r0)!, opts());
    for (const l of rw.learned) expect(routes.learn(l.address, l.ttl, now)).toBe('10.244.1.5/32');
    now += 10_000 + 5000;
    expect(routes.expire(now)).toEqual(['10.244.1.5/32']); // the route and (inside the range) its guard go

    const lookups: string[] = [];
    const classifier = new AddressClassifier({
      policy,
      neverCidrs: new CidrSet([]),
      isMember: () => false,
      learned: (a) => routes.known(a, now),
      reverse: async (ptr) => {
        lookups.push(ptr);
        return { names: [], ttl: 0 }; // NXDOMAIN
      },
      now: () => now,
      cacheSeconds: 30,
    });
    const added: string[] = [];
    const misses = new RouteMisses({
      inRange: (a) => a.startsWith('10.244.'),
      classify: (a) => classifier.classify(a),
      addBypass: async (c) => {
        added.push(c);
        return true;
      },
      removeBypass: async () => {},
      hasBypass: (c) => added.includes(c),
      release: () => {},
      now: () => now,
      holdMs: 30_000,
    });
    await misses.miss('10.244.1.5', null);
    expect(added).toEqual([]);
    expect(misses.counters.projectUnrouted).toBe(1);
    expect(await classifier.classify('10.244.1.5')).toEqual({ verdict: 'project', reason: 'learned' });
    expect(lookups).toEqual(['5.1.244.10.in-addr.arpa']); // NXDOMAIN, then overridden (and cached as it was)
    // an address no answer named is still classified by its PTR
    await misses.miss('10.244.1.6', null);
    expect(added).toEqual(['10.244.1.6/32']);
  });

  it('a verdict cached before a project answer named the address gives way to it; the memory is bounded in time and size', async () => {
    let now = 0;
    const routes = new LearnedRoutes({ graceMs: 0, maxRoutes: 2, rememberMs: 60_000 });
    const c = new AddressClassifier({
      policy,
      neverCidrs: new CidrSet([]),
      isMember: () => false,
      learned: (a) => routes.known(a, now),
      reverse: async () => ({ names: [], ttl: 0 }),
      now: () => now,
      cacheSeconds: 600,
    });
    expect(await c.classify('10.244.1.7')).toEqual({ verdict: 'other', reason: 'none' }); // cached for 600 s
    routes.learn('10.244.1.7', 5, now);
    expect(await c.classify('10.244.1.7')).toEqual({ verdict: 'project', reason: 'learned' });
    now += 5000;
    routes.expire(now);
    expect(routes.known('10.244.1.7', now + 59_000)).toBe(true);
    expect(routes.known('10.244.1.7', now + 60_000)).toBe(false);
    for (const a of ['10.244.1.8', '10.244.1.9']) routes.learn(a, 0, now);
    routes.expire(now); // three remembered at most maxRoutes (2): the oldest goes
    expect(['10.244.1.7', '10.244.1.8', '10.244.1.9'].map((a) => routes.known(a, now))).toEqual([false, true, true]);
  });
});

describe('races with membership changes', () => {
  it('a PTR lookup under way when clear() runs caches nothing: the next classification sees the new member (regression: `other` cached under the new membership)', async () => {
    const members = new Set<string>();
    const ptr = deferred<{ names: string[]; ttl: number } | null>();
    let lookups = 0;
    const c = new AddressClassifier({
      policy,
      neverCidrs: new CidrSet([]),
      isMember: (a) => members.has(a),
      reverse: () => {
        lookups++;
        return ptr.promise;
      },
      now: () => 0,
      cacheSeconds: 600,
    });
    const first = c.classify('10.244.2.1');
    await tick();
    members.add('10.244.2.1'); // set-members / set-endpoints
    c.clear();
    ptr.resolve({ names: [], ttl: 0 }); // NXDOMAIN, answered for the old membership
    expect((await first).verdict).toBe('project');
    expect(await c.classify('10.244.2.1')).toEqual({ verdict: 'project', reason: 'member' });
    expect(lookups).toBe(1);
  });

  it('a lookup under way when clear() runs is not cached: the next classification asks again', async () => {
    const ptrs = [deferred<{ names: string[]; ttl: number } | null>(), deferred<{ names: string[]; ttl: number } | null>()];
    let lookups = 0;
    const c = new AddressClassifier({ policy, neverCidrs: new CidrSet([]), isMember: () => false, reverse: () => ptrs[lookups++].promise, now: () => 0, cacheSeconds: 600 });
    const first = c.classify('10.244.2.2');
    await tick();
    c.clear();
    ptrs[0].resolve({ names: [], ttl: 0 }); // answered for the membership before the change
    expect(await first).toEqual({ verdict: 'other', reason: 'none' });
    const second = c.classify('10.244.2.2');
    await tick();
    expect(lookups).toBe(2); // not served from a cache filled by the stale lookup
    ptrs[1].resolve({ names: ['10-244-2-2.alpha.pod.cluster.local'], ttl: 30 });
    expect(await second).toEqual({ verdict: 'project', reason: 'reverse' });
  });

  it('revoke() while the bypass route goes in: the bypass is removed again, nothing released (regression: it survived the revoke)', async () => {
    const installed = new Set<string>();
    const calls: string[] = [];
    const adding = deferred<void>();
    const released: Uint8Array[] = [];
    const m = new RouteMisses({
      inRange: (a) => a.startsWith('10.244.'),
      classify: async (): Promise<AddressVerdict> => ({ verdict: 'other', reason: 'none' }),
      addBypass: async (cidr) => {
        calls.push(`add ${cidr}`);
        await adding.promise; // `ip` (and nft) still running
        installed.add(cidr);
        return true;
      },
      removeBypass: async (cidr) => {
        calls.push(`remove ${cidr}`);
        installed.delete(cidr);
      },
      hasBypass: (cidr) => installed.has(cidr),
      release: (p) => released.push(p),
      now: () => 0,
      holdMs: 30_000,
    });
    const during = m.miss('10.244.3.1', Uint8Array.from([0x45, 0, 0, 20, 1]));
    await tick();
    expect(calls).toEqual(['add 10.244.3.1/32']);
    await m.revoke((a) => a === '10.244.3.1'); // the address became a member
    adding.resolve();
    await during;
    expect(installed.has('10.244.3.1/32')).toBe(false);
    expect(m.list()).toEqual([]);
    expect(released).toEqual([]);
    expect(calls).toEqual(['add 10.244.3.1/32', 'remove 10.244.3.1/32']);
    expect(m.counters.revoked).toBe(1);
  });
});

/**
 * A response with name compression (RFC 1035 4.1.4: a name ends in a pointer to a
 * suffix written earlier), as a server writes it; dns-packet does not compress, and
 * 3000 CNAMEs fit 64 KiB only compressed.
 */
function compressed(qname: string, records: { name: string; type: 'CNAME' | 'A'; data: string; ttl: number }[]): Buffer {
  const parts: Buffer[] = [];
  let len = 0;
  const seen = new Map<string, number>();
  const put = (b: Buffer) => {
    parts.push(b);
    len += b.length;
  };
  const name = (n: string) => {
    const labels = n.toLowerCase().split('.');
    for (let i = 0; i < labels.length; i++) {
      const suffix = labels.slice(i).join('.');
      const at = seen.get(suffix);
      if (at !== undefined) return put(Buffer.from([0xc0 | (at >> 8), at & 255]));
      if (len < 0x3fff) seen.set(suffix, len);
      put(Buffer.concat([Buffer.from([labels[i].length]), Buffer.from(labels[i])]));
    }
    put(Buffer.from([0]));
  };
  const header = Buffer.alloc(12);
  header.writeUInt16BE(7, 0);
  header.writeUInt16BE(0x8180, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(records.length, 6);
  put(header);
  name(qname);
  put(Buffer.from([0, 1, 0, 1]));
  for (const r of records) {
    name(r.name);
    const fixed = Buffer.alloc(10);
    fixed.writeUInt16BE(r.type === 'A' ? 1 : 5, 0);
    fixed.writeUInt16BE(1, 2);
    fixed.writeUInt32BE(r.ttl, 4);
    if (r.type === 'A') {
      fixed.writeUInt16BE(4, 8);
      put(fixed);
      put(Buffer.from(r.data.split('.').map(Number)));
    } else {
      const lenAt = parts.length;
      put(fixed);
      const before = len;
      name(r.data);
      parts[lenAt].writeUInt16BE(len - before, 8);
    }
  }
  return Buffer.concat(parts);
}

describe('large answers take linear work (regression: a 64 KiB TCP answer of CNAMEs in reverse order cost one pass per record)', () => {
  /** ext.alpha... -> head -> c1 -> ... -> c3000 -> A 10.96.0.5 (short one-label names, base 36), the records listed from the end of the chain. */
  function chain(head: string): Buffer {
    const n = 3000;
    const c = (i: number) => `c${i.toString(36)}`;
    const recs: { name: string; type: 'CNAME' | 'A'; data: string; ttl: number }[] = [{ name: c(n), type: 'A', data: '10.96.0.5', ttl: 5 }];
    for (let i = n - 1; i >= 1; i--) recs.push({ name: c(i), type: 'CNAME', data: c(i + 1), ttl: 5 });
    recs.push({ name: head, type: 'CNAME', data: c(1), ttl: 5 });
    recs.push({ name: 'ext.alpha.svc.cluster.local', type: 'CNAME', data: head, ttl: 5 });
    return compressed('ext.alpha.svc.cluster.local', recs);
  }

  it('3000 CNAMEs in reverse order headed by a never-tunnel name: nothing learned; headed by another name: the address learned once', () => {
    const never = chain('api.example.net');
    expect(never.length).toBeLessThanOrEqual(65535);
    const r = rewriteAnswer(never, readQuestion(never)!, opts());
    expect(r.verdict).toBe('project');
    expect(r.message).toBeNull(); // TTLs within the cap: passed as it came
    expect(r.learned).toEqual([]);

    const other = chain('cdn.example.org');
    expect(rewriteAnswer(other, readQuestion(other)!, opts()).learned).toEqual([{ address: '10.96.0.5', ttl: 5 }]);
  });

  it('4000 A records of one address and of distinct addresses: each address learned once, in order', () => {
    const name = 'many.alpha.svc.cluster.local';
    const same = compressed(name, Array.from({ length: 4000 }, () => ({ name, type: 'A' as const, data: '10.96.0.7', ttl: 5 })));
    expect(rewriteAnswer(same, readQuestion(same)!, opts()).learned).toEqual([{ address: '10.96.0.7', ttl: 5 }]);
    const distinct = compressed(name, Array.from({ length: 4000 }, (_, i) => ({ name, type: 'A' as const, data: `10.97.${i >> 8}.${i & 255}`, ttl: 5 })));
    const learned = rewriteAnswer(distinct, readQuestion(distinct)!, opts()).learned;
    expect(learned).toHaveLength(4000);
    expect(learned[3999]).toEqual({ address: '10.97.15.159', ttl: 5 });
  });
});
