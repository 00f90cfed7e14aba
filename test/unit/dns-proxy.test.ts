/**
 * The proxy's sockets on loopback against a scripted upstream (UDP and TCP on
 * 127.0.0.1, no mark): ID remapping under concurrency with answers out of order,
 * answers matched to questions, SERVFAIL on a silent upstream and recovery,
 * bounded in-flight queries, junk, TCP pipelining over one reused upstream
 * connection, truncation passed through, routes added before the client's answer.
 */
import { describe, it, expect, afterEach } from 'vitest';
import dgram from 'node:dgram';
import net from 'node:net';
import { spawn } from 'node:child_process';
import dnsPacket from 'dns-packet';
import { DnsProxy, TCP_PAUSE_BYTES, type DnsProxyOptions } from '../../src/dns/proxy.js';
import { CidrSet } from '../../src/dns/classify.js';
import { LearnedRoutes } from '../../src/dns/routes.js';

/** dns-packet's decoded form has these too (its types leave them out). */
type Reply = dnsPacket.Packet & { rcode?: string; flag_tc?: boolean };

type Mode = { big?: number; silent?: boolean; reverse?: number; spoofFirst?: boolean; truncate?: boolean; tcpDropFirst?: boolean };

/** A scripted upstream: answers A queries with 10.0.<len>.<id&255> style data derived from the name. */
class FakeUpstream {
  udp!: dgram.Socket;
  tcp!: net.Server;
  port = 0;
  mode: Mode = {};
  tcpConnections = 0;
  private held: { m: Buffer; reply: (b: Buffer) => void }[] = [];

  /**
   * UDP and TCP on one port: the UDP port is picked by the kernel, and TCP on the same
   * number can be taken (an outgoing connection may hold it as its local port), so a
   * failed listen retries with a new port instead of waiting forever (regression: a
   * 60 s hang in the full suite).
   */
  static async start(): Promise<FakeUpstream> {
    for (let attempt = 1; ; attempt++) {
      const f = new FakeUpstream();
      try {
        await f.open();
        return f;
      } catch (e) {
        f.udp?.close();
        if (attempt >= 20) throw e;
      }
    }
  }

  private async open(): Promise<void> {
    const f = this;
    f.udp = dgram.createSocket('udp4');
    await new Promise<void>((r) => f.udp.bind(0, '127.0.0.1', () => r()));
    f.port = f.udp.address().port;
    f.udp.on('message', (m, ri) => f.handle(m, (b) => f.udp.send(b, ri.port, ri.address)));
    f.tcp = net.createServer((s) => {
      f.tcpConnections++;
      const n = f.tcpConnections;
      let rx = Buffer.alloc(0);
      s.on('data', (d) => {
        if (f.mode.tcpDropFirst && n === 1) return void s.destroy(); // a server that closes with queries unanswered
        rx = Buffer.concat([rx, d]);
        while (rx.length >= 2 && rx.length >= 2 + rx.readUInt16BE(0)) {
          const m = rx.subarray(2, 2 + rx.readUInt16BE(0));
          rx = rx.subarray(2 + m.length);
          f.handle(Buffer.from(m), (b) => {
            const len = Buffer.alloc(2);
            len.writeUInt16BE(b.length);
            s.write(Buffer.concat([len, b]));
          });
        }
      });
      s.on('error', () => {});
    });
    await new Promise<void>((resolve, reject) => {
      f.tcp.once('error', reject);
      f.tcp.listen(f.port, '127.0.0.1', () => {
        f.tcp.off('error', reject);
        resolve();
      });
    });
  }

  private bigAnswers = new Map<string, Buffer>();

  private handle(m: Buffer, reply: (b: Buffer) => void): void {
    if (this.mode.silent) return;
    const q = dnsPacket.decode(m);
    if (this.mode.big && q.questions![0].name.startsWith('big')) {
      // `big` A records (16 bytes each), encoded once per name; only the ID differs
      const qname = q.questions![0].name;
      let b = this.bigAnswers.get(qname);
      if (!b) {
        const answers = Array.from({ length: this.mode.big }, (_, i) => ({ name: qname, type: 'A' as const, ttl: 60, data: `10.9.${i >> 8}.${i & 255}` }));
        b = dnsPacket.encode({ type: 'response', id: 0, flags: dnsPacket.RECURSION_AVAILABLE, questions: [{ name: qname, type: 'A', class: 'IN' }], answers });
        this.bigAnswers.set(qname, b);
      }
      const out = Buffer.from(b);
      out.writeUInt16BE(q.id!, 0);
      return reply(out);
    }
    const name = q.questions![0].name;
    const answer = (qname: string) =>
      dnsPacket.encode({
        type: 'response',
        id: q.id,
        flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (this.mode.truncate ? dnsPacket.TRUNCATED_RESPONSE : 0),
        questions: [{ name: qname, type: 'A', class: 'IN' }],
        answers: this.mode.truncate ? [] : [{ name: qname, type: 'A', ttl: 60, data: addressFor(qname) }],
      });
    if (this.mode.spoofFirst) reply(answer(`spoof.${name}`)); // right ID, wrong question
    if (this.mode.reverse) {
      this.held.push({ m: answer(name), reply });
      if (this.held.length >= this.mode.reverse) for (const h of this.held.splice(0).reverse()) h.reply(h.m);
      return;
    }
    reply(answer(name));
  }

  close(): void {
    this.udp.close();
    this.tcp.close();
  }
}

function addressFor(name: string): string {
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return `10.${(h >> 16) & 255}.${(h >> 8) & 255}.${h & 255}`;
}

let up: FakeUpstream;
let proxy: DnsProxy;
const sockets: dgram.Socket[] = [];

async function setup(over: Partial<DnsProxyOptions> = {}, upOver: { timeoutMs?: number; maxInflight?: number } = {}): Promise<void> {
  up = await FakeUpstream.start();
  proxy = await DnsProxy.start({
    listen: ['127.0.0.1'],
    port: 0,
    upstream: { servers: [{ address: '127.0.0.1', port: up.port }], mark: 0, timeoutMs: 300, maxInflight: 1024, ...upOver },
    policy: { domain: 'alpha.svc.cluster.local', neverNames: [] },
    neverCidrs: new CidrSet([]),
    maxTtl: 30,
    endpoints: () => undefined,
    ...over,
  });
}

afterEach(async () => {
  for (const s of sockets.splice(0)) s.close();
  await proxy?.stop();
  up?.close();
});

async function client(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  sockets.push(s);
  return s;
}

function query(name: string, id: number): Buffer {
  return dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: 'A', class: 'IN' }] });
}

/** Sends and collects replies until `n` arrived or `ms` passed. */
function exchange(s: dgram.Socket, msgs: Buffer[], n: number, ms = 2000): Promise<Reply[]> {
  return new Promise((resolve) => {
    const got: Reply[] = [];
    const done = () => {
      s.off('message', on);
      clearTimeout(t);
      resolve(got);
    };
    const on = (m: Buffer) => {
      got.push(dnsPacket.decode(m));
      if (got.length >= n) done();
    };
    const t = setTimeout(done, ms);
    s.on('message', on);
    for (const m of msgs) s.send(m, proxy.port, '127.0.0.1');
  });
}

describe('dns proxy sockets', () => {
  it('concurrent clients with equal IDs get their own answers although upstream answers out of order', async () => {
    await setup();
    up.mode = { reverse: 8 };
    const clients = await Promise.all([client(), client(), client(), client()]);
    const results = await Promise.all(
      clients.map((c, ci) => exchange(c, Array.from({ length: 8 }, (_, i) => query(`n${i}.c${ci}.example`, 42)), 8)),
    );
    results.forEach((got, ci) => {
      expect(got).toHaveLength(8);
      for (const p of got) {
        expect(p.id).toBe(42);
        const name = p.questions![0].name;
        expect(name.endsWith(`.c${ci}.example`)).toBe(true);
        expect((p.answers![0] as { data: string }).data).toBe(addressFor(name));
      }
    });
    expect(proxy.counters().upstreamUdp.answered).toBe(32);
  });

  it('port 0: a kernel-picked port already taken for TCP is given up (UDP closed too) and another is tried (regression: EADDRINUSE in a full run)', async () => {
    const proto = DnsProxy.prototype as unknown as { listenTcp(addr: string, port: number): Promise<void> };
    const real = proto.listenTcp;
    const refused: number[] = [];
    proto.listenTcp = function (this: unknown, addr: string, port: number) {
      if (refused.length === 0) {
        refused.push(port);
        const e = Object.assign(new Error(`listen EADDRINUSE: address already in use ${addr}:${port}`), { code: 'EADDRINUSE' });
        return Promise.reject(e);
      }
      return real.call(this, addr, port);
    };
    try {
      await setup();
    } finally {
      proto.listenTcp = real;
    }
    expect(refused).toHaveLength(1);
    expect(proxy.port).not.toBe(refused[0]);
    const [p] = await exchange(await client(), [query('again.example', 3)], 1);
    expect(p.rcode).toBe('NOERROR');
    // the first attempt's UDP socket was closed: its port can be bound again
    const probe = dgram.createSocket('udp4');
    sockets.push(probe);
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject);
      probe.bind(refused[0], '127.0.0.1', () => resolve());
    });
  });

  it('a fixed port that is taken fails at once with EADDRINUSE, nothing left open', async () => {
    const holder = dgram.createSocket('udp4');
    sockets.push(holder);
    await new Promise<void>((r) => holder.bind(0, '127.0.0.1', () => r()));
    up = await FakeUpstream.start();
    await expect(
      DnsProxy.start({
        listen: ['127.0.0.1'],
        port: holder.address().port,
        upstream: { servers: [{ address: '127.0.0.1', port: up.port }], mark: 0, timeoutMs: 300, maxInflight: 8 },
        policy: { domain: 'alpha.svc.cluster.local', neverNames: [] },
        neverCidrs: new CidrSet([]),
        maxTtl: 30,
        endpoints: () => undefined,
      }),
    ).rejects.toMatchObject({ code: 'EADDRINUSE' });
  });

  it('an answer with the right ID but another question is ignored and counted', async () => {
    await setup();
    up.mode = { spoofFirst: true };
    const [p] = await exchange(await client(), [query('real.example', 1)], 1);
    expect(p.questions![0].name).toBe('real.example');
    expect((p.answers![0] as { data: string }).data).toBe(addressFor('real.example'));
    expect(proxy.counters().upstreamUdp.mismatched).toBe(1);
  });

  it('a silent upstream gives SERVFAIL promptly; answers again when it is back', async () => {
    await setup();
    up.mode = { silent: true };
    const c = await client();
    const t0 = Date.now();
    const [p] = await exchange(c, [query('a.example', 5)], 1);
    expect(p.rcode).toBe('SERVFAIL');
    expect(Date.now() - t0).toBeLessThan(1000);
    up.mode = {};
    const [q] = await exchange(c, [query('a.example', 6)], 1);
    expect(q.rcode).toBe('NOERROR');
    expect(proxy.counters().servfail).toBe(1);
  });

  it('in-flight queries are bounded: the rest are counted drops', async () => {
    await setup({ upstream: { servers: [{ address: '127.0.0.1', port: 1 }], mark: 0, timeoutMs: 300, maxInflight: 5 } });
    const c = await client();
    const got = await exchange(c, Array.from({ length: 12 }, (_, i) => query(`b${i}.example`, i)), 12, 1000);
    expect(got.filter((p) => p.rcode === 'SERVFAIL')).toHaveLength(5);
    expect(proxy.counters().drops.busy).toBe(7);
  });

  it('junk never kills it: short, responses, garbage questions; a good query works afterwards', async () => {
    await setup();
    const c = await client();
    const junk: Buffer[] = [Buffer.alloc(0), Buffer.alloc(5), Buffer.alloc(5000)];
    for (let i = 0; i < 500; i++) {
      const b = Buffer.from(query(`x${i}.example`, i));
      b[12 + (i % 10)] = (i * 37) & 255; // corrupt the name
      junk.push(b);
    }
    const resp = Buffer.from(query('y.example', 1));
    resp[2] |= 0x80;
    junk.push(resp);
    // in chunks, so none is lost to a full socket buffer while the proxy catches up
    for (let i = 0; i < junk.length; i += 25) {
      for (const m of junk.slice(i, i + 25)) c.send(m, proxy.port, '127.0.0.1');
      await new Promise((r) => setTimeout(r, 10));
    }
    await new Promise((r) => setTimeout(r, 200));
    const [p] = await exchange(await client(), [query('ok.example', 9)], 1); // a fresh socket: no late junk replies
    expect(p.id).toBe(9);
    expect(p.rcode).toBe('NOERROR');
    const k = proxy.counters();
    expect(k.drops.short).toBe(2);
    expect(k.drops.oversized).toBe(1);
    expect(k.drops.not_a_query).toBe(1);
    expect(k.formerr).toBeGreaterThan(0);
  });

  it('TCP: pipelined queries in one write, answered over one reused upstream connection', async () => {
    await setup();
    const s = net.connect(proxy.port, '127.0.0.1');
    const frames = ['t1.example', 't2.example', 't3.example'].map((n, i) => {
      const m = query(n, 100 + i);
      const len = Buffer.alloc(2);
      len.writeUInt16BE(m.length);
      return Buffer.concat([len, m]);
    });
    const got = await new Promise<dnsPacket.Packet[]>((resolve) => {
      let rx = Buffer.alloc(0);
      const out: dnsPacket.Packet[] = [];
      s.on('data', (d) => {
        rx = Buffer.concat([rx, d]);
        while (rx.length >= 2 && rx.length >= 2 + rx.readUInt16BE(0)) {
          out.push(dnsPacket.decode(rx.subarray(2, 2 + rx.readUInt16BE(0))));
          rx = rx.subarray(2 + rx.readUInt16BE(0));
        }
        if (out.length === 3) resolve(out);
      });
      s.write(Buffer.concat(frames));
    });
    s.destroy();
    expect(got.map((p) => p.id).sort()).toEqual([100, 101, 102]);
    for (const p of got) expect((p.answers![0] as { data: string }).data).toBe(addressFor(p.questions![0].name));
    expect(up.tcpConnections).toBe(1);
    expect(proxy.counters().queriesTcp).toBe(3);
  });

  it('TCP backpressure: 256 clients (the most per listener) that never read, 16 of them asking for 54 KB answers every 20 ms: buffered bytes stay under the caps, slow clients dropped, others answered', async () => {
    const totalMax = 128 * 1024; // a total cap below the default, held too
    await setup({ tcpLimits: { totalMaxBytes: totalMax } }, { timeoutMs: 3000, maxInflight: 256 * 64 });
    up.mode = { big: 2000 }; // ~54 KB per answer
    // The clients: python3 sockets with a 2 KiB receive buffer set before connect, so the kernel
    // takes less of what the proxy sends (node's net cannot set SO_RCVBUF). 240 clients send one
    // query; 16 send 64 pipelined queries every 20 ms for 1.5 s. None ever reads.
    const frameOf = (m: Buffer) => Buffer.concat([Buffer.from([m.length >> 8, m.length & 255]), m]).toString('hex');
    const script = [
      'import socket, sys, time',
      'port, n, heavy = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])',
      'burst, one = bytes.fromhex(sys.argv[4]) * 64, bytes.fromhex(sys.argv[5])',
      'cs = []',
      'for i in range(n):',
      '    c = socket.socket()',
      '    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)',
      '    c.connect(("127.0.0.1", port))',
      '    c.setblocking(False)',
      '    c.send(one)',
      '    cs.append(c)',
      'print("connected", flush=True)',
      'end = time.time() + 1.5',
      'while time.time() < end:',
      '    for c in cs[:heavy]:',
      '        try: c.send(burst)',
      '        except OSError: pass',
      '    time.sleep(0.02)',
      'print("done", flush=True)',
      'sys.stdin.read()', // connections stay open (unread) until the test has looked
    ].join('\n');
    const args = ['-c', script, String(proxy.port), '256', '16', frameOf(query('big.example', 1)), frameOf(query('small.example', 2))];
    const py = spawn('python3', args, { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    py.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    const exited = new Promise<number | null>((r) => {
      py.on('error', (e) => {
        out += `cannot run python3: ${e.message}`;
        r(-1);
      });
      py.on('close', (c) => r(c));
    });
    for (let i = 0; i < 400 && !out.includes('done') && !out.includes('cannot run'); i++) await new Promise((r) => setTimeout(r, 25));
    expect(out, 'python3 is needed for clients with a small receive buffer').toContain('done');
    // every query sent upstream answered (or timed out), bounded
    for (let i = 0; i < 200; i++) {
      const u = proxy.counters().upstreamTcp;
      if (u.answered + u.timeouts >= u.sent) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const k = proxy.counters();
    py.stdin!.end();
    expect(await exited).toBe(0);
    expect(k.queriesTcp).toBeGreaterThan(256);
    expect(k.drops.tcp_slow_client).toBeGreaterThan(0); // clients got to the per-client cap
    expect(k.tcpBufferedPeak).toBeGreaterThan(TCP_PAUSE_BYTES);
    expect(k.tcpBufferedPeak).toBeLessThanOrEqual(totalMax);
    expect(k.tcpBuffered).toBeLessThanOrEqual(totalMax);
    // the proxy still answers others
    const [p] = await exchange(await client(), [query('after.example', 9)], 1);
    expect(p.id).toBe(9);
  }, 30_000);

  it('UDP: a query of exactly 4096 bytes is answered, one of 4097 is an oversized drop (the socket keeps 4096)', async () => {
    await setup();
    /** A query padded with an EDNS0 PADDING option (RFC 7830) to `size` bytes. */
    const padded = (id: number, size: number) => {
      const opt = (n: number) =>
        dnsPacket.encode({
          type: 'query',
          id,
          flags: dnsPacket.RECURSION_DESIRED,
          questions: [{ name: 'pad.example', type: 'A', class: 'IN' }],
          additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 4096, flags: 0, options: [{ code: 12, data: Buffer.alloc(n) }] }],
        } as dnsPacket.Packet);
      const m = opt(size - opt(0).length);
      expect(m.length).toBe(size);
      return m;
    };
    const got = await exchange(await client(), [padded(1, 4097), padded(2, 4096)], 2, 500);
    expect(got.map((p) => [p.id, p.rcode])).toEqual([[2, 'NOERROR']]);
    expect((got[0].answers![0] as { data: string }).data).toBe(addressFor('pad.example'));
    expect(proxy.counters().drops.oversized).toBe(1);
    expect(proxy.counters().queriesUdp).toBe(2);
  });

  it('UDP on IPv4 and IPv6 listeners at once: each client is answered at its own address', async () => {
    await setup({ listen: ['127.0.0.1', '::1'] });
    const c4 = await client();
    const c6 = dgram.createSocket('udp6');
    await new Promise<void>((r) => c6.bind(0, '::1', () => r()));
    sockets.push(c6);
    const got6 = new Promise<Reply>((r) => c6.once('message', (m) => r(dnsPacket.decode(m))));
    c6.send(query('six.example', 6), proxy.port, '::1');
    const [p4] = await exchange(c4, [query('four.example', 4)], 1);
    const p6 = await got6;
    expect([p4.id, p4.questions![0].name, (p4.answers![0] as { data: string }).data]).toEqual([4, 'four.example', addressFor('four.example')]);
    expect([p6.id, p6.questions![0].name, (p6.answers![0] as { data: string }).data]).toEqual([6, 'six.example', addressFor('six.example')]);
  });

  it('a truncated UDP answer passes through with TC set', async () => {
    await setup();
    up.mode = { truncate: true };
    const [p] = await exchange(await client(), [query('big.alpha.svc.cluster.local', 3)], 1);
    expect(p.flag_tc).toBe(true);
    expect(p.answers).toEqual([]);
  });

  it('a project answer gets its route before the client sees it; rewritten to endpoints', async () => {
    const events: string[] = [];
    const vipName = 'web.alpha.svc.cluster.local';
    await setup({
      endpoints: (vip) => (vip === addressFor(vipName) ? ['10.77.0.2'] : undefined),
      routes: {
        sink: {
          add: async (c) => {
            await new Promise((r) => setTimeout(r, 50));
            events.push(`add ${c.join(',')}`);
          },
          remove: async (c) => void events.push(`remove ${c}`),
        },
        learned: new LearnedRoutes({ graceMs: 0, maxRoutes: 10 }),
      },
    });
    const c = await client();
    const [p] = await exchange(c, [query(vipName, 4)], 1);
    events.push('answer');
    expect((p.answers![0] as { data: string }).data).toBe('10.77.0.2');
    expect(events).toEqual(['add 10.77.0.2/32', 'answer']);
    expect(proxy.counters().rewritten).toBe(1);
    await proxy.stop();
    expect(events).toContain('remove 10.77.0.2/32');
  });

  it('a route that cannot be added: SERVFAIL (no answer to use in the clear), nothing to remove later', async () => {
    const removed: string[] = [];
    await setup({
      routes: {
        sink: { add: async () => Promise.reject(new Error('ip: no such table')), remove: async (c) => void removed.push(c) },
        learned: new LearnedRoutes({ graceMs: 0, maxRoutes: 10 }),
      },
    });
    const [p] = await exchange(await client(), [query('api.alpha.svc.cluster.local', 8)], 1);
    expect(p.rcode).toBe('SERVFAIL');
    expect(proxy.counters().routeFailures).toBe(1);
    expect(proxy.counters().routesHeld).toBe(0);
    await proxy.stop();
    expect(removed).toEqual([]);
  });

  it('a route add that fails after taking its reference: the route stays learned and is removed at its expiry, never leaked', async () => {
    // from a review: a failed add forgot every route of the answer, also one whose reference
    // it had taken (an ip batch that failed in its second family), which then stayed until teardown
    const removed: string[] = [];
    await setup({
      routes: {
        sink: {
          add: async (c, onRef) => {
            onRef?.(c[0]!);
            throw new Error('ip: the IPv6 batch failed');
          },
          remove: async (c) => void removed.push(c),
        },
        learned: new LearnedRoutes({ graceMs: 0, maxRoutes: 10 }),
      },
    });
    const [p] = await exchange(await client(), [query('api.alpha.svc.cluster.local', 8)], 1);
    expect(p.rcode).toBe('NOERROR'); // its address is routed: the answer is safe to give
    expect(proxy.counters().routeFailures).toBe(1);
    expect(proxy.counters().routesHeld).toBe(1);
    await proxy.stop();
    expect(removed).toEqual([`${(p.answers![0] as { data: string }).data}/32`]);
  });

  it('an answer whose address is not routed (the learned-route table full): SERVFAIL, never the answer in the clear', async () => {
    const added: string[] = [];
    await setup({
      routes: { sink: { add: async (c) => void added.push(...c), remove: async () => {} }, learned: new LearnedRoutes({ graceMs: 0, maxRoutes: 1 }) },
    });
    const c = await client();
    const [a] = await exchange(c, [query('api.alpha.svc.cluster.local', 8)], 1);
    expect(a.rcode).toBe('NOERROR');
    expect(added).toHaveLength(1);
    // regression: the second answer's address found the table full, was not learned, and
    // the client got the answer anyway
    const [b] = await exchange(c, [query('db.alpha.svc.cluster.local', 9)], 1);
    expect(b.rcode).toBe('SERVFAIL');
    expect(b.answers).toEqual([]);
    expect(added).toHaveLength(1);
    // the first name again: its address is held, answered
    const [a2] = await exchange(c, [query('api.alpha.svc.cluster.local', 10)], 1);
    expect(a2.rcode).toBe('NOERROR');
    await proxy.stop();
  });

  it('TCP: queries a closing upstream connection left unanswered are resent once on a new one', async () => {
    await setup();
    up.mode = { tcpDropFirst: true };
    const s = net.connect(proxy.port, '127.0.0.1');
    const m = query('again.example', 77);
    const len = Buffer.alloc(2);
    len.writeUInt16BE(m.length);
    const got = await new Promise<Reply>((resolve) => {
      let rx = Buffer.alloc(0);
      s.on('data', (d) => {
        rx = Buffer.concat([rx, d]);
        if (rx.length >= 2 && rx.length >= 2 + rx.readUInt16BE(0)) resolve(dnsPacket.decode(rx.subarray(2, 2 + rx.readUInt16BE(0))) as Reply);
      });
      s.write(Buffer.concat([len, m]));
    });
    s.destroy();
    expect(got.id).toBe(77);
    expect(got.rcode).toBe('NOERROR');
    expect((got.answers![0] as { data: string }).data).toBe(addressFor('again.example'));
    expect(up.tcpConnections).toBe(2);
    expect(proxy.counters().upstreamTcp.reconnects).toBe(1);
  });

  it('two upstream servers: after a timeout the next queries go to the other one', async () => {
    const silent = await FakeUpstream.start();
    silent.mode = { silent: true };
    const second = await FakeUpstream.start();
    try {
      await setup({
        upstream: {
          servers: [
            { address: '127.0.0.1', port: silent.port },
            { address: '127.0.0.1', port: second.port },
          ],
          mark: 0,
          timeoutMs: 300,
          maxInflight: 100,
        },
      });
    } catch (e) {
      silent.close();
      second.close();
      throw e;
    }
    try {
      const c = await client();
      const [first] = await exchange(c, [query('one.example', 1)], 1);
      expect(first.rcode).toBe('SERVFAIL');
      const [next] = await exchange(c, [query('two.example', 2)], 1);
      expect(next.rcode).toBe('NOERROR');
      expect((next.answers![0] as { data: string }).data).toBe(addressFor('two.example'));
      expect(proxy.counters().upstreamUdp.timeouts).toBe(1);
    } finally {
      silent.close();
      second.close();
    }
  });
});
