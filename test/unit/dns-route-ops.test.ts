/**
 * The proxy's learned-route changes in order, over a slow fake route sink: an answer
 * whose addresses are already routed is not held up behind unrelated route
 * removals (regression: a burst of expiries delayed every project answer), while an
 * answer for an address whose route add is still in flight waits for that add.
 * A scripted UDP upstream on 127.0.0.1 (no mark).
 */
import { describe, it, expect, afterEach } from 'vitest';
import dgram from 'node:dgram';
import dnsPacket from 'dns-packet';
import { DnsProxy, type RouteSink } from '../../src/dns/proxy.js';
import { CidrSet } from '../../src/dns/classify.js';
import { LearnedRoutes } from '../../src/dns/routes.js';

/** An address per name: a0..a19 -> 10.50.0.0..19, held -> 10.50.1.1. */
const addressOf = (name: string) => (name.startsWith('held.') ? '10.50.1.1' : `10.50.0.${Number(/^a(\d+)\./.exec(name)![1])}`);

function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  return { wait, open };
}

const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

async function upstream(): Promise<number> {
  const s = dgram.createSocket('udp4');
  s.on('message', (m, ri) => {
    const q = dnsPacket.decode(m);
    const name = q.questions![0].name;
    s.send(dnsPacket.encode({ type: 'response', id: q.id, flags: dnsPacket.RECURSION_AVAILABLE, questions: q.questions, answers: [{ name, type: 'A', ttl: 60, data: addressOf(name) }] }), ri.port, ri.address);
  });
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  closers.push(() => s.close());
  return s.address().port;
}

async function client(proxy: DnsProxy): Promise<(name: string) => Promise<dnsPacket.Packet>> {
  const c = dgram.createSocket('udp4');
  await new Promise<void>((r) => c.bind(0, '127.0.0.1', () => r()));
  closers.push(() => c.close());
  const waiting = new Map<number, (p: dnsPacket.Packet) => void>();
  c.on('message', (m) => {
    const p = dnsPacket.decode(m);
    waiting.get(p.id!)?.(p);
  });
  let id = 1;
  return (name) =>
    new Promise((resolve) => {
      const qid = id++;
      waiting.set(qid, resolve);
      c.send(dnsPacket.encode({ type: 'query', id: qid, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: 'A', class: 'IN' }] }), proxy.port, '127.0.0.1');
    });
}

/** A proxy for alpha.svc.cluster.local over `sink`, asking a scripted upstream; `onStop` runs before it stops (opens a gate). */
async function startProxy(sink: RouteSink, onStop: () => void, extra: { expireEveryMs?: number; now?: () => number } = {}): Promise<DnsProxy> {
  const port = await upstream();
  const proxy = await DnsProxy.start({
    listen: ['127.0.0.1'],
    port: 0,
    upstream: { servers: [{ address: '127.0.0.1', port }], mark: 0, timeoutMs: 5000, maxInflight: 64 },
    policy: { domain: 'alpha.svc.cluster.local', neverNames: [] },
    neverCidrs: new CidrSet([]),
    maxTtl: 30,
    endpoints: () => undefined,
    routes: { sink, learned: new LearnedRoutes({ graceMs: 0, maxRoutes: 64 }), ...(extra.expireEveryMs !== undefined ? { expireEveryMs: extra.expireEveryMs } : {}) },
    ...(extra.now ? { now: extra.now } : {}),
  });
  closers.push(async () => {
    onStop();
    await proxy.stop();
  });
  return proxy;
}

describe('learned routes: answers wait only for their own route changes', () => {
  it('a query for an already routed name is answered while 20 slow route removals are still running', async () => {
    const events: string[] = [];
    const removals = gate();
    const sink: RouteSink = {
      add: async (cidrs, onRef) => {
        events.push(`add ${cidrs.join(' ')}`);
        for (const c of cidrs) onRef?.(c);
      },
      remove: async (cidr) => {
        events.push(`remove ${cidr}`);
        await removals.wait; // a slow `ip` (or a sink serialized behind other work)
        events.push(`removed ${cidr}`);
      },
    };
    let now = 0;
    const proxy = await startProxy(sink, removals.open, { expireEveryMs: 5, now: () => now });
    const ask = await client(proxy);
    for (let i = 0; i < 20; i++) await ask(`a${i}.alpha.svc.cluster.local`); // routed until 30 s
    now = 20_000;
    await ask('held.alpha.svc.cluster.local'); // routed until 50 s
    now = 31_000; // the 20 expire; their removals start and hang
    while (!events.includes('remove 10.50.0.0/32')) await new Promise((r) => setTimeout(r, 5));

    const reply = ask('held.alpha.svc.cluster.local').then((p) => {
      events.push('reply');
      return p;
    });
    // the removals are let go once the reply is in (or after 2 s, so a reply held behind them does not hang the test)
    await Promise.race([reply, new Promise((r) => setTimeout(r, 2000))]);
    removals.open();
    const p = await reply;
    while (events.filter((e) => e.startsWith('removed')).length < 20) await new Promise((r) => setTimeout(r, 5));

    expect((p.answers![0] as { data: string }).data).toBe('10.50.1.1');
    expect((p as { rcode?: string }).rcode).toBe('NOERROR');
    // the reply came before any removal finished, and no route was added for it again
    expect(events.indexOf('reply')).toBeLessThan(events.indexOf('removed 10.50.0.0/32'));
    expect(events.filter((e) => e.startsWith('add'))).toHaveLength(21);
    expect(events.filter((e) => e.startsWith('removed'))).toHaveLength(20);
  });

  it('a second answer for an address whose route add is still in flight waits for that add (never answered before its route)', async () => {
    const events: string[] = [];
    const adds = gate();
    const sink: RouteSink = {
      add: async (cidrs, onRef) => {
        events.push(`add ${cidrs.join(' ')}`);
        await adds.wait;
        for (const c of cidrs) onRef?.(c);
        events.push(`added ${cidrs.join(' ')}`);
      },
      remove: async () => {},
    };
    const proxy = await startProxy(sink, adds.open);
    const ask = await client(proxy);
    const first = ask('held.alpha.svc.cluster.local').then(() => events.push('reply 1'));
    while (!events.includes('add 10.50.1.1/32')) await new Promise((r) => setTimeout(r, 5));
    const second = ask('held.alpha.svc.cluster.local').then(() => events.push('reply 2'));
    await new Promise((r) => setTimeout(r, 100));
    expect(events).toEqual(['add 10.50.1.1/32']); // neither answered before the route is in
    adds.open();
    await Promise.all([first, second]);
    expect(events[1]).toBe('added 10.50.1.1/32');
    expect(events.slice(2).sort()).toEqual(['reply 1', 'reply 2']);
  });
});
