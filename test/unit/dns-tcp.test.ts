/**
 * DNS over TCP on loopback, both sides of the proxy, regressions named after the
 * bug they pin: an upstream connection that went silent without FIN or RST (kept
 * in use, every TCP query SERVFAIL until the kernel gave up), and a client that
 * half-closes after its query (never got the reply). Scripted TCP servers on
 * 127.0.0.1, no mark.
 */
import { describe, it, expect, afterEach } from 'vitest';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import { TcpUpstream } from '../../src/dns/upstream.js';
import { DnsProxy } from '../../src/dns/proxy.js';
import { CidrSet } from '../../src/dns/classify.js';
import { readQuestion } from '../../src/dns/message.js';

const query = (name: string, id = 1) => dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: 'A', class: 'IN' }] });
const answerTo = (m: Buffer) => {
  const q = dnsPacket.decode(m);
  return dnsPacket.encode({ type: 'response', id: q.id, flags: dnsPacket.RECURSION_AVAILABLE, questions: q.questions, answers: [{ name: q.questions![0].name, type: 'A', ttl: 5, data: '10.0.0.1' }] });
};
const frame = (m: Buffer) => Buffer.concat([Buffer.from([m.length >> 8, m.length & 255]), m]);

let server: net.Server | null = null;
const open: { close(): void }[] = [];
afterEach(async () => {
  for (const o of open.splice(0)) o.close();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = null;
});

/**
 * A TCP DNS server: `answer(connection number, query number on it)` decides whether a
 * query is answered (else swallowed; the connection stays open, as behind a blackhole).
 */
async function tcpServer(answer: (conn: number, n: number) => boolean): Promise<{ port: number; conns: net.Socket[] }> {
  const conns: net.Socket[] = [];
  server = net.createServer((s) => {
    const conn = conns.push(s);
    let n = 0;
    let rx = Buffer.alloc(0);
    s.on('error', () => {});
    s.on('data', (d) => {
      rx = Buffer.concat([rx, d]);
      while (rx.length >= 2 && rx.length >= 2 + rx.readUInt16BE(0)) {
        const m = Buffer.from(rx.subarray(2, 2 + rx.readUInt16BE(0)));
        rx = rx.subarray(2 + m.length);
        if (answer(conn, ++n)) s.write(frame(answerTo(m)));
      }
    });
  });
  open.push({ close: () => conns.forEach((c) => c.destroy()) });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
  return { port: (server.address() as net.AddressInfo).port, conns };
}

describe('TcpUpstream: a dead connection is replaced', () => {
  it('answers query 1, then stays silent but open: query 2 times out, query 3 goes over a new connection and is answered (regression: SERVFAIL until the kernel gave up)', async () => {
    const srv = await tcpServer((conn, n) => conn > 1 || n === 1);
    const up = new TcpUpstream({ servers: [{ address: '127.0.0.1', port: srv.port }], mark: 0, timeoutMs: 200, maxInflight: 64 });
    open.push(up);
    const ask = (name: string) => {
      const m = query(name);
      return up.query(m, readQuestion(m)!);
    };
    expect(Buffer.isBuffer(await ask('one.example'))).toBe(true);
    expect(await ask('two.example')).toBeNull(); // swallowed: timeout
    const three = await ask('three.example');
    expect(Buffer.isBuffer(three)).toBe(true);
    expect(dnsPacket.decode(three as Buffer).questions![0].name).toBe('three.example');
    expect(srv.conns).toHaveLength(2);
    expect(up.deadConnections).toBe(1);
    expect(up.counters.timeouts).toBe(1);
  });

  it('a slow answer on a connection that is otherwise answering keeps it (only a silent one is dropped)', async () => {
    // query 2 is swallowed, but query 3 (sent while 2 waits) is answered on the same connection
    const srv = await tcpServer((_conn, n) => n !== 2);
    const up = new TcpUpstream({ servers: [{ address: '127.0.0.1', port: srv.port }], mark: 0, timeoutMs: 300, maxInflight: 64 });
    open.push(up);
    const ask = (name: string) => {
      const m = query(name);
      return up.query(m, readQuestion(m)!);
    };
    expect(Buffer.isBuffer(await ask('one.example'))).toBe(true);
    const two = ask('two.example');
    await new Promise((r) => setTimeout(r, 50));
    expect(Buffer.isBuffer(await ask('three.example'))).toBe(true);
    expect(await two).toBeNull();
    expect(Buffer.isBuffer(await ask('four.example'))).toBe(true);
    expect(srv.conns).toHaveLength(1);
    expect(up.deadConnections).toBe(0);
  });
});

describe('DnsProxy: a TCP client that half-closes', () => {
  it('writes a framed query, then end(): it still gets the answer, then our FIN (regression: no reply)', async () => {
    const srv = await tcpServer(() => true);
    const proxy = await DnsProxy.start({
      listen: ['127.0.0.1'],
      port: 0,
      upstream: { servers: [{ address: '127.0.0.1', port: srv.port }], mark: 0, timeoutMs: 1000, maxInflight: 64 },
      policy: { domain: 'alpha.svc.cluster.local', neverNames: [] },
      neverCidrs: new CidrSet([]),
      maxTtl: 30,
      endpoints: () => undefined,
    });
    open.push({ close: () => void proxy.stop() });
    const got = await new Promise<Buffer>((resolve, reject) => {
      const c = net.connect(proxy.port, '127.0.0.1', () => {
        c.write(Buffer.concat([frame(query('half.example', 0x1234)), frame(query('closed.example', 0x1235))]));
        c.end();
      });
      const parts: Buffer[] = [];
      c.on('data', (d) => parts.push(d));
      c.on('end', () => resolve(Buffer.concat(parts)));
      c.on('error', reject);
    });
    const replies: dnsPacket.Packet[] = [];
    for (let rx = got; rx.length >= 2; rx = rx.subarray(2 + rx.readUInt16BE(0))) replies.push(dnsPacket.decode(rx.subarray(2, 2 + rx.readUInt16BE(0))));
    expect(replies.map((r) => [r.id, r.questions![0].name]).sort()).toEqual([
      [0x1234, 'half.example'],
      [0x1235, 'closed.example'],
    ]);
  });
});
