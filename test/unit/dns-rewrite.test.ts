/**
 * The pure DNS transforms: name classification, CIDR sets, the address classifier
 * (injected clock and reverse lookup), answer rewriting (VIP -> endpoints, TTL cap,
 * learned addresses) and the learned-route bookkeeping (TTL, grace, activity).
 * Messages are written with dns-packet (RFC 1035 4.1 layout).
 */
import { describe, it, expect } from 'vitest';
import dnsPacket from 'dns-packet';
import { AddressClassifier, CidrSet, classifyName, inDomain, canonicalAddress, podDomainOf } from '../../src/dns/classify.js';
import { rewriteAnswer, MalformedAnswerError, type RewriteOptions } from '../../src/dns/rewrite.js';
import { LearnedRoutes } from '../../src/dns/routes.js';
import { readQuestion } from '../../src/dns/message.js';
import { parseResolvConf, projectDomainFrom } from '../../src/dns/resolv.js';

const policy = { domain: 'alpha.svc.cluster.local', neverNames: ['db.alpha.svc.cluster.local', 'example.net'] };

describe('classify names', () => {
  const table: [string, string][] = [
    ['web.alpha.svc.cluster.local', 'project'],
    ['WEB.Alpha.svc.cluster.local.', 'project'],
    ['alpha.svc.cluster.local', 'project'],
    ['web.beta.svc.cluster.local', 'other'],
    ['xalpha.svc.cluster.local', 'other'],
    ['example.com', 'other'],
    ['db.alpha.svc.cluster.local', 'never'],
    ['r1.db.alpha.svc.cluster.local', 'never'],
    ['www.example.net', 'never'],
  ];
  it.each(table)('%s -> %s', (name, verdict) => {
    expect(classifyName(name, policy)).toBe(verdict);
  });
  it('inDomain needs a label boundary', () => {
    expect(inDomain('a.b.c', 'b.c')).toBe(true);
    expect(inDomain('ab.c', 'b.c')).toBe(false);
  });
});

describe('CidrSet', () => {
  it('matches by family and prefix', () => {
    const s = new CidrSet(['10.96.0.0/12', 'fd00:96::/64', '192.0.2.7']);
    expect(s.has('10.100.1.1')).toBe(true);
    expect(s.has('10.112.0.1')).toBe(false);
    expect(s.has('fd00:96::1234')).toBe(true);
    expect(s.has('fd00:97::1')).toBe(false);
    expect(s.has('192.0.2.7')).toBe(true);
    expect(s.has('::ffff:10.100.1.1')).toBe(false); // a v6 address never matches a v4 CIDR
    expect(s.has('not an address')).toBe(false);
    expect(() => new CidrSet(['10.0.0.0/33'])).toThrow(RangeError);
    expect(() => new CidrSet(['x/8'])).toThrow(TypeError);
  });
  it('canonical addresses', () => {
    expect(canonicalAddress('fd00:0077:0000::2')).toBe('fd00:77::2');
    expect(canonicalAddress('nope')).toBeNull();
  });
});

describe('AddressClassifier', () => {
  it('PTR names in the project pod domain are project; no PTR is other; no answer is lookup-failed', async () => {
    const answers: Record<string, { names: string[]; ttl: number } | null> = {
      '10.1.128.10.in-addr.arpa': { names: ['10-128-1-10.alpha.pod.cluster.local'], ttl: 30 },
      '20.1.128.10.in-addr.arpa': { names: ['10-128-1-20.beta.pod.cluster.local'], ttl: 30 },
      '30.1.128.10.in-addr.arpa': { names: [], ttl: 0 },
      '40.1.128.10.in-addr.arpa': null,
    };
    const c = new AddressClassifier({ policy, neverCidrs: new CidrSet([]), isMember: () => false, reverse: async (p) => answers[p] ?? null, now: () => 0, cacheSeconds: 30 });
    expect(await c.classify('10.128.1.10')).toEqual({ verdict: 'project', reason: 'reverse' });
    expect(await c.classify('10.128.1.20')).toEqual({ verdict: 'other', reason: 'none' });
    expect(await c.classify('10.128.1.30')).toEqual({ verdict: 'other', reason: 'none' });
    expect(await c.classify('10.128.1.40')).toEqual({ verdict: 'other', reason: 'lookup-failed' });
    expect(podDomainOf('alpha.svc.cluster.local')).toBe('alpha.pod.cluster.local');
    expect(podDomainOf('corp.example')).toBe(null);
  });

  it('never CIDR, member, reverse lookup; verdicts cached for their TTL', async () => {
    let now = 0;
    const lookups: string[] = [];
    const c = new AddressClassifier({
      policy,
      neverCidrs: new CidrSet(['10.99.0.0/16']),
      isMember: (a) => a === '10.77.0.2',
      reverse: async (ptr) => {
        lookups.push(ptr);
        if (ptr === '5.1.96.10.in-addr.arpa') return { names: ['api.alpha.svc.cluster.local'], ttl: 5 };
        if (ptr === '6.1.96.10.in-addr.arpa') throw new Error('upstream down');
        return { names: ['web.beta.svc.cluster.local'], ttl: 5 };
      },
      now: () => now,
      cacheSeconds: 30,
    });
    expect(await c.classify('10.99.1.1')).toEqual({ verdict: 'never', reason: 'never-cidr' });
    expect(await c.classify('10.77.0.2')).toEqual({ verdict: 'project', reason: 'member' });
    expect(await c.classify('10.96.1.5')).toEqual({ verdict: 'project', reason: 'reverse' });
    expect(await c.classify('10.96.1.6')).toEqual({ verdict: 'other', reason: 'lookup-failed' });
    expect(await c.classify('10.96.1.7')).toEqual({ verdict: 'other', reason: 'none' });
    expect(lookups).toHaveLength(3);
    now = 2001; // a failed lookup is remembered 2 s only
    await c.classify('10.96.1.6');
    expect(lookups).toHaveLength(4);
    now = 0;
    await c.classify('10.96.1.5');
    expect(lookups).toHaveLength(4); // cached
    now = 5001;
    await c.classify('10.96.1.5');
    expect(lookups).toHaveLength(5); // PTR TTL 5 s passed
    await expect(c.classify('nope')).rejects.toThrow(TypeError);
  });
});

const answer = (name: string, answers: dnsPacket.Answer[], extra: Partial<dnsPacket.Packet> = {}) =>
  dnsPacket.encode({
    type: 'response',
    id: 7,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
    questions: [{ name, type: 'A', class: 'IN' }],
    answers,
    ...extra,
  });

function opts(over: Partial<RewriteOptions> = {}): RewriteOptions {
  const eps = new Map([['10.96.0.20', ['10.77.0.2', '10.77.0.3', 'fd00:77::2']]]);
  return { policy, neverCidrs: new CidrSet(['10.96.9.0/24']), endpoints: (v) => eps.get(v), maxTtl: 10, limit: 512, ...over };
}

describe('rewriteAnswer', () => {
  it('rewrites a project VIP to its endpoints of that family, caps TTLs, learns the endpoints', () => {
    const r0 = answer('web.alpha.svc.cluster.local', [{ name: 'web.alpha.svc.cluster.local', type: 'A', ttl: 300, data: '10.96.0.20' }], {
      additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232 } as dnsPacket.Answer],
    });
    const r = rewriteAnswer(r0, readQuestion(r0)!, opts());
    expect(r.verdict).toBe('project');
    expect(r.rewritten).toBe(1);
    const d = dnsPacket.decode(r.message!);
    expect(d.id).toBe(7);
    expect(d.answers!.map((a) => [(a as { data: string }).data, (a as { ttl: number }).ttl])).toEqual([
      ['10.77.0.2', 10],
      ['10.77.0.3', 10],
    ]);
    expect(d.additionals![0].type).toBe('OPT'); // EDNS0 kept
    expect(r.learned).toEqual([
      { address: '10.77.0.2', ttl: 10 },
      { address: '10.77.0.3', ttl: 10 },
    ]);
  });

  it('keeps a VIP without endpoints (TTL capped) and learns it; CNAME chains inside the domain count', () => {
    const r0 = answer('api.alpha.svc.cluster.local', [
      { name: 'api.alpha.svc.cluster.local', type: 'CNAME', ttl: 5, data: 'api2.alpha.svc.cluster.local' },
      { name: 'api2.alpha.svc.cluster.local', type: 'A', ttl: 60, data: '10.96.0.21' },
    ]);
    const r = rewriteAnswer(r0, readQuestion(r0)!, opts());
    expect(r.rewritten).toBe(0);
    expect(dnsPacket.decode(r.message!).answers!.map((a) => (a as { data: string }).data)).toEqual(['api2.alpha.svc.cluster.local', '10.96.0.21']);
    expect(r.learned).toEqual([{ address: '10.96.0.21', ttl: 10 }]);
  });

  it('passes a project answer already within the cap unchanged (bytes), still learning', () => {
    const r0 = answer('api.alpha.svc.cluster.local', [{ name: 'api.alpha.svc.cluster.local', type: 'A', ttl: 3, data: '10.96.0.21' }]);
    const r = rewriteAnswer(r0, readQuestion(r0)!, opts());
    expect(r.message).toBeNull();
    expect(r.learned).toEqual([{ address: '10.96.0.21', ttl: 3 }]);
  });

  it('other projects, external names and never-tunnel names pass untouched and learn nothing', () => {
    for (const name of ['web.beta.svc.cluster.local', 'example.com', 'db.alpha.svc.cluster.local']) {
      const r0 = answer(name, [{ name, type: 'A', ttl: 300, data: '10.96.0.20' }]);
      const r = rewriteAnswer(r0, readQuestion(r0)!, opts());
      expect(r.message).toBeNull();
      expect(r.learned).toEqual([]);
    }
  });

  it('SRV answers: the targets\' addresses in the additional section are capped and learned', () => {
    const name = '_http._tcp.web.alpha.svc.cluster.local';
    const r0 = dnsPacket.encode({
      type: 'response',
      id: 9,
      flags: dnsPacket.RECURSION_AVAILABLE,
      questions: [{ name, type: 'SRV', class: 'IN' }],
      answers: [{ name, type: 'SRV', ttl: 5, data: { priority: 0, weight: 0, port: 80, target: 'pod1.web.alpha.svc.cluster.local' } }],
      additionals: [{ name: 'pod1.web.alpha.svc.cluster.local', type: 'A', ttl: 600, data: '10.77.0.9' }],
    });
    const r = rewriteAnswer(r0, readQuestion(r0)!, opts());
    expect(r.learned).toEqual([{ address: '10.77.0.9', ttl: 10 }]);
    expect((dnsPacket.decode(r.message!).additionals![0] as { ttl: number }).ttl).toBe(10);
  });

  it('a CNAME out of the project: the outside addresses are learned (into the tunnel), not rewritten; a never-tunnel name is not', () => {
    // behaviour change (issue 19.1): a tampered answer must not lead a project name to a route-less address
    const r0 = answer('ext.alpha.svc.cluster.local', [
      { name: 'ext.alpha.svc.cluster.local', type: 'CNAME', ttl: 5, data: 'x.evil.example' },
      { name: 'x.evil.example', type: 'A', ttl: 5, data: '10.96.0.20' }, // even if it equals a project VIP
      { name: 'x.evil.example', type: 'AAAA', ttl: 5, data: 'fd00:66::5' },
    ]);
    const r = rewriteAnswer(r0, readQuestion(r0)!, opts());
    expect(r.learned).toEqual([
      { address: '10.96.0.20', ttl: 5 },
      { address: 'fd00:66::5', ttl: 5 },
    ]);
    expect(r.rewritten).toBe(0);
    expect(r.message).toBeNull();
    // ExternalName made plaintext on purpose: the target (or a name it leads to) is a never-tunnel name
    const ext = answer('ext.alpha.svc.cluster.local', [
      { name: 'ext.alpha.svc.cluster.local', type: 'CNAME', ttl: 5, data: 'api.example.net' },
      { name: 'api.example.net', type: 'CNAME', ttl: 5, data: 'edge.cdn.example' },
      { name: 'edge.cdn.example', type: 'A', ttl: 5, data: '10.99.0.5' },
    ]);
    expect(rewriteAnswer(ext, readQuestion(ext)!, opts()).learned).toEqual([]);
  });

  it('never-tunnel CIDRs are not learned', () => {
    const r0 = answer('x.alpha.svc.cluster.local', [{ name: 'x.alpha.svc.cluster.local', type: 'A', ttl: 1, data: '10.96.9.9' }]);
    expect(rewriteAnswer(r0, readQuestion(r0)!, opts()).learned).toEqual([]);
  });

  it('truncated answers: with records, header and question only (TC kept, nothing learned); error answers with records are learned', () => {
    const tc = answer('web.alpha.svc.cluster.local', [], { flags: dnsPacket.TRUNCATED_RESPONSE });
    expect(rewriteAnswer(tc, readQuestion(tc)!, opts()).message).toBeNull(); // no records: as it is
    // behaviour change (issue 19.1): musl uses the records of a truncated answer
    const tcA = answer('web.alpha.svc.cluster.local', [{ name: 'web.alpha.svc.cluster.local', type: 'A', ttl: 5, data: '10.99.0.5' }], {
      flags: dnsPacket.TRUNCATED_RESPONSE,
    });
    const t = rewriteAnswer(tcA, readQuestion(tcA)!, opts());
    expect(t.learned).toEqual([]);
    const d = dnsPacket.decode(t.message!);
    expect(d.flags! & dnsPacket.TRUNCATED_RESPONSE).toBeTruthy();
    expect(d.id).toBe(7);
    expect(d.questions).toHaveLength(1);
    expect(d.answers).toHaveLength(0);
    expect(d.additionals).toHaveLength(0);
    const nx = answer('nope.alpha.svc.cluster.local', [], { rcode: 'NXDOMAIN' } as Partial<dnsPacket.Packet>);
    const r = rewriteAnswer(nx, readQuestion(nx)!, opts());
    expect(r.message).toBeNull();
    expect(r.learned).toEqual([]);
    const nxA = answer('nope.alpha.svc.cluster.local', [{ name: 'x.evil.example', type: 'A', ttl: 5, data: '10.99.0.6' }], {
      rcode: 'NXDOMAIN',
    } as Partial<dnsPacket.Packet>);
    expect(rewriteAnswer(nxA, readQuestion(nxA)!, opts()).learned).toEqual([{ address: '10.99.0.6', ttl: 5 }]);
  });

  it('fits the client limit with fewer endpoints, or keeps the VIP', () => {
    const many = Array.from({ length: 60 }, (_, i) => `10.77.1.${i + 1}`);
    const r0 = answer('web.alpha.svc.cluster.local', [{ name: 'web.alpha.svc.cluster.local', type: 'A', ttl: 5, data: '10.96.0.20' }]);
    const r = rewriteAnswer(r0, readQuestion(r0)!, opts({ endpoints: () => many }));
    expect(r.message!.length).toBeLessThanOrEqual(512);
    const n = dnsPacket.decode(r.message!).answers!.length;
    expect(n).toBeGreaterThan(1);
    expect(n).toBeLessThan(60);
    expect(r.learned).toHaveLength(n);
    // nothing fits re-encoded (dns-packet does not compress): not the original, whose
    // addresses would go unrouted (regression: it passed, learning nothing), but TC, so
    // the client asks again over TCP
    const tiny = rewriteAnswer(r0, readQuestion(r0)!, opts({ endpoints: () => many, limit: 40 }));
    expect(tiny.learned).toEqual([]);
    const t = dnsPacket.decode(tiny.message!);
    expect([t.flag_tc, t.id, t.answers, t.questions![0]!.name]).toEqual([true, 7, [], 'web.alpha.svc.cluster.local']);
    // the same with only TTLs to cap (a CNAME to an outside name and its addresses)
    const far = Array.from({ length: 12 }, (_, i) => ({ name: 'far.example.com', type: 'A', ttl: 3600, data: `203.0.113.${i + 1}` }) as dnsPacket.Answer);
    const r1 = answer('ext.alpha.svc.cluster.local', [{ name: 'ext.alpha.svc.cluster.local', type: 'CNAME', ttl: 3600, data: 'far.example.com' }, ...far]);
    const cut = rewriteAnswer(r1, readQuestion(r1)!, opts({ limit: r1.length - 1 }));
    expect([dnsPacket.decode(cut.message!).flag_tc, cut.learned]).toEqual([true, []]);
    const fits = rewriteAnswer(r1, readQuestion(r1)!, opts({ limit: 4096 }));
    expect(fits.learned.map((l) => l.address)).toEqual(far.map((a) => (a as { data: string }).data));
  });

  it('an IPv4-mapped AAAA address is learned as the IPv4 address a dual-stack socket sends to', () => {
    const q = (ttl: number) =>
      dnsPacket.encode({
        type: 'response',
        id: 9,
        flags: dnsPacket.RECURSION_AVAILABLE,
        questions: [{ name: 'cache.alpha.svc.cluster.local', type: 'AAAA', class: 'IN' }],
        answers: [{ name: 'cache.alpha.svc.cluster.local', type: 'AAAA', ttl, data: '::ffff:203.0.113.5' }, { name: 'cache.alpha.svc.cluster.local', type: 'AAAA', ttl, data: 'fd00:77::9' }],
      });
    for (const ttl of [5, 3600]) {
      const b = q(ttl);
      expect(rewriteAnswer(b, readQuestion(b)!, opts()).learned.map((l) => l.address), `ttl ${ttl}`).toEqual(['203.0.113.5', 'fd00:77::9']);
    }
  });

  it('an answer that passes the gate but does not decode is a typed error', () => {
    const r0 = Buffer.from(answer('web.alpha.svc.cluster.local', [{ name: 'web.alpha.svc.cluster.local', type: 'A', ttl: 5, data: '10.96.0.20' }]));
    const cut = r0.subarray(0, r0.length - 2);
    expect(() => rewriteAnswer(cut, readQuestion(cut)!, opts())).toThrow(MalformedAnswerError);
  });
});

describe('LearnedRoutes', () => {
  it('adds once, extends on a new answer, removes after TTL + grace', () => {
    const r = new LearnedRoutes({ graceMs: 1000, maxRoutes: 10 });
    expect(r.learn('10.96.0.21', 2, 0)).toBe('10.96.0.21/32');
    expect(r.learn('10.96.0.21', 2, 1000)).toBeNull(); // already routed: now until 3000 + 1000
    expect(r.expire(3999)).toEqual([]);
    expect(r.expire(4000)).toEqual(['10.96.0.21/32']);
    expect(r.size).toBe(0);
    expect(r.learn('fd00:96::21', 0, 0)).toBe('fd00:96::21/128');
  });

  it('keeps a route while its activity counter moves, then removes it', () => {
    let tx = 100;
    const r = new LearnedRoutes({ graceMs: 1000, maxRoutes: 10, activity: () => tx });
    r.learn('10.77.0.2', 1, 0);
    tx = 200; // the flow sends
    expect(r.expire(2000)).toEqual([]);
    tx = 300;
    expect(r.expire(3000)).toEqual([]);
    expect(r.expire(4000)).toEqual(['10.77.0.2/32']); // idle for a grace period
  });

  it('bounds the table and counts the overflow', () => {
    const r = new LearnedRoutes({ graceMs: 0, maxRoutes: 2 });
    r.learn('10.0.0.1', 5, 0);
    r.learn('10.0.0.2', 5, 0);
    expect(r.learn('10.0.0.3', 5, 0)).toBeNull();
    expect(r.overflow).toBe(1);
    expect(r.drain().sort()).toEqual(['10.0.0.1/32', '10.0.0.2/32']);
    expect(() => new LearnedRoutes({ graceMs: -1, maxRoutes: 1 })).toThrow(RangeError);
  });
});

describe('resolv.conf', () => {
  it('nameservers, search list, project domain', () => {
    const r = parseResolvConf('# k8s\nnameserver 10.96.0.10\nnameserver fe80::1%eth0\nnameserver fd00:96::a\nsearch alpha.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n');
    expect(r.nameservers).toEqual(['10.96.0.10', 'fd00:96::a']);
    expect(r.search).toEqual(['alpha.svc.cluster.local', 'svc.cluster.local', 'cluster.local']);
    expect(projectDomainFrom(r.search)).toBe('alpha.svc.cluster.local');
    expect(projectDomainFrom(['svc.cluster.local', 'example.com'])).toBeNull();
  });
});
