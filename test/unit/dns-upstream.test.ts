/**
 * UdpUpstream's source ports (issue 19.1): queries leave from random ports that
 * change (not one port for the socket's life), and an answer counts only on the
 * port its query left from. A scripted server on 127.0.0.1 (no mark).
 */
import { describe, it, expect, afterEach } from 'vitest';
import dgram from 'node:dgram';
import dnsPacket from 'dns-packet';
import { TcpUpstream, UdpUpstream } from '../../src/dns/upstream.js';
import { readQuestion } from '../../src/dns/message.js';

let server: dgram.Socket | null = null;
let up: UdpUpstream | null = null;
afterEach(() => {
  up?.close();
  server?.close();
  up = null;
  server = null;
});

const query = (name: string) => dnsPacket.encode({ type: 'query', id: 1, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: 'A', class: 'IN' }] });
const answerTo = (m: Buffer, data: string) => {
  const q = dnsPacket.decode(m);
  return dnsPacket.encode({ type: 'response', id: q.id, flags: dnsPacket.RECURSION_AVAILABLE, questions: q.questions, answers: [{ name: q.questions![0].name, type: 'A', ttl: 5, data }] });
};

async function start(onQuery: (m: Buffer, from: dgram.RemoteInfo) => void): Promise<number> {
  server = dgram.createSocket('udp4');
  server.on('message', onQuery);
  await new Promise<void>((r) => server!.bind(0, '127.0.0.1', () => r()));
  return server.address().port;
}

describe('UdpUpstream source ports', () => {
  it('64 queries leave from at least 8 ports (at most 8 queries a port), all answered', async () => {
    const ports = new Set<number>();
    const port = await start((m, from) => {
      ports.add(from.port);
      server!.send(answerTo(m, '10.0.0.1'), from.port, from.address);
    });
    up = await UdpUpstream.open({ servers: [{ address: '127.0.0.1', port }], mark: 0, timeoutMs: 1000, maxInflight: 64 });
    for (let i = 0; i < 64; i++) {
      const m = query(`q${i}.example`);
      const r = await up.query(m, readQuestion(m)!);
      expect(Buffer.isBuffer(r)).toBe(true);
    }
    expect(ports.size).toBeGreaterThanOrEqual(8); // one port for all of them before
    await new Promise((r) => setImmediate(r));
    expect(up.ports()).toHaveLength(16); // retired ports closed once their queries are answered
  });

  it('an answer with the right ID and question on another of its ports is ignored (counted); the real one is taken', async () => {
    let sent = false;
    const port = await start((m, from) => {
      // a spoofer who knows the ID but not the port: the same answer to every other port first
      for (const p of up!.ports()) if (p !== from.port) server!.send(answerTo(m, '10.66.6.6'), p, '127.0.0.1');
      setTimeout(() => server!.send(answerTo(m, '10.0.0.2'), from.port, from.address), 50);
      sent = true;
    });
    up = await UdpUpstream.open({ servers: [{ address: '127.0.0.1', port }], mark: 0, timeoutMs: 1000, maxInflight: 64 });
    const m = query('db.example');
    const r = await up.query(m, readQuestion(m)!);
    expect(sent).toBe(true);
    expect((dnsPacket.decode(r as Buffer).answers![0] as { data: string }).data).toBe('10.0.0.2');
    expect(up.snapshot().mismatched).toBeGreaterThanOrEqual(15);
  });
});

describe('TcpUpstream without a socket', () => {
  it('a connection that cannot be made fails the query (counted), never throws out of ask()', async () => {
    // a pod host's pod whose namespace scope cannot make a socket (closed, or out of descriptors)
    const netns = {
      path: '/proc/self/ns/net',
      name: '/proc/self/ns/net',
      ino: 0,
      run<T>(): T {
        throw new Error('netns /proc/self/ns/net: closed');
      },
      hold(): () => void {
        throw new Error('netns /proc/self/ns/net: closed');
      },
    };
    const tcp = new TcpUpstream({ servers: [{ address: '127.0.0.1', port: 53 }], mark: 0, timeoutMs: 1000, maxInflight: 8, netns });
    try {
      const q = Buffer.from(query('a.example'));
      const r = await tcp.query(q, readQuestion(q)!);
      expect(r).toBeNull();
      expect(tcp.snapshot().errors).toBe(1);
      expect(tcp.inflight).toBe(0);
      // and the next query too (no connection half made is kept)
      expect(await tcp.query(q, readQuestion(q)!)).toBeNull();
      expect(tcp.snapshot().errors).toBe(2);
    } finally {
      tcp.close();
    }
  });
});
