/**
 * UdpBatch (src/dns/udpbatch.ts over native/dnsio.c) on loopback: datagrams queued
 * before the socket is read arrive in one batch; one flush sends many; source
 * addresses v4 and v6 and replies to them; a datagram longer than the slot is cut
 * and counted; a connected socket survives ICMP port unreachable; close inside a
 * batch, with sends queued, and twice; no descriptor leaks; bad arguments.
 */
import { describe, it, expect, afterEach } from 'vitest';
import dgram from 'node:dgram';
import { readdirSync } from 'node:fs';
import { UdpBatch, udpPeer, peerAddress, type UdpBatchOptions } from '../../src/dns/udpbatch.js';
import { addon } from '../../src/native.js';
import { until as waitUntil } from '../until.js';

const open: UdpBatch[] = [];
const plain: dgram.Socket[] = [];

afterEach(() => {
  for (const s of open.splice(0)) s.close();
  for (const s of plain.splice(0)) s.close();
});

interface Got {
  data: string;
  from: string;
  port: number;
  truncated: boolean;
  size: number;
}

/** A UdpBatch that records each datagram and each batch's size. */
function receiver(o: Partial<UdpBatchOptions> = {}): { s: UdpBatch; got: Got[]; batches: number[] } {
  const got: Got[] = [];
  const batches: number[] = [];
  const s: UdpBatch = new UdpBatch({
    address: '127.0.0.1',
    ...o,
    onBatch: (n) => {
      batches.push(n);
      for (let i = 0; i < n; i++) {
        const p = s.peer(i);
        got.push({ data: s.copy(i).toString('latin1'), from: peerAddress(p), port: p.port, truncated: s.truncated(i), size: s.size(i) });
      }
      o.onBatch?.(n);
    },
  });
  open.push(s);
  return { s, got, batches };
}

async function plainSocket(type: 'udp4' | 'udp6', address: string): Promise<dgram.Socket> {
  const s = dgram.createSocket(type);
  await new Promise<void>((r) => s.bind(0, address, () => r()));
  plain.push(s);
  return s;
}

const tick = () => new Promise((r) => setImmediate(r));
const until = async (cond: () => boolean, ms = 2000): Promise<void> => void (await waitUntil(String(cond), cond, ms, 5));

describe('UdpBatch', () => {
  it('datagrams waiting in the socket arrive in one batch, in order, from the sender', async () => {
    const { s, got, batches } = receiver();
    const tx = new UdpBatch({ address: '127.0.0.1', onBatch: () => {} });
    open.push(tx);
    const to = udpPeer('127.0.0.1', s.port);
    for (let i = 0; i < 50; i++) tx.send(Buffer.from(`m${i}`), to);
    expect(tx.flush()).toBe(50); // one sendmmsg, synchronously: all 50 wait before the receiver's poll
    await until(() => got.length === 50);
    expect(batches).toEqual([50]);
    expect(got.map((g) => g.data)).toEqual(Array.from({ length: 50 }, (_, i) => `m${i}`));
    expect(new Set(got.map((g) => `${g.from}:${g.port}`))).toEqual(new Set([`127.0.0.1:${tx.port}`]));
    expect(s.counters()).toMatchObject({ received: 50, batches: 1, truncated: 0 });
    expect(tx.counters()).toMatchObject({ sent: 50, sendErrors: 0, sendDropped: 0 });
  });

  it('more datagrams than a batch holds arrive in several batches of at most `batch`', async () => {
    const { s, got, batches } = receiver({ batch: 8 });
    const tx = new UdpBatch({ address: '127.0.0.1', sendQueue: 100, onBatch: () => {} });
    open.push(tx);
    for (let i = 0; i < 20; i++) tx.send(Buffer.from([i]), udpPeer('127.0.0.1', s.port));
    tx.flush();
    await until(() => got.length === 20);
    expect(batches).toEqual([8, 8, 4]);
    expect(got.map((g) => g.data.charCodeAt(0))).toEqual(Array.from({ length: 20 }, (_, i) => i));
  });

  it('queued sends leave in one flush after the current callback; a full queue is sent at once', async () => {
    const sink = await plainSocket('udp4', '127.0.0.1');
    const seen: string[] = [];
    sink.on('message', (m) => seen.push(m.toString()));
    const tx = new UdpBatch({ address: '127.0.0.1', sendQueue: 4, onBatch: () => {} });
    open.push(tx);
    const to = udpPeer('127.0.0.1', sink.address().port);
    for (let i = 0; i < 6; i++) tx.send(Buffer.from(`q${i}`), to);
    expect(tx.counters().sent).toBe(4); // the fifth send found the queue full: the first 4 went then
    await Promise.resolve(); // the microtask flush
    expect(tx.counters().sent).toBe(6);
    await until(() => seen.length === 6);
    expect(seen).toEqual(['q0', 'q1', 'q2', 'q3', 'q4', 'q5']);
  });

  it('IPv6: the source is ::1 with the client port, and a reply to peer(i) reaches the client', async () => {
    const replies: string[] = [];
    const r = receiver({ address: '::1' });
    const echo: UdpBatch = new UdpBatch({
      address: '::1',
      onBatch: (n) => {
        for (let i = 0; i < n; i++) echo.send(Buffer.concat([Buffer.from('re:'), echo.view(i)]), echo.peer(i));
      },
    });
    open.push(echo);
    const c = await plainSocket('udp6', '::1');
    c.on('message', (m, ri) => replies.push(`${m.toString()}@${ri.address}:${ri.port}`));
    c.send('ping6', echo.port, '::1');
    c.send('direct', r.s.port, '::1');
    await until(() => replies.length === 1 && r.got.length === 1);
    expect(replies).toEqual([`re:ping6@::1:${echo.port}`]);
    expect(r.got[0]).toMatchObject({ data: 'direct', from: '0:0:0:0:0:0:0:1', port: c.address().port });
    expect(echo.family).toBe(6);
  });

  it('IPv4: a reply to peer(i) reaches the client from the bound port', async () => {
    const echo: UdpBatch = new UdpBatch({
      address: '127.0.0.1',
      onBatch: (n) => {
        for (let i = 0; i < n; i++) echo.send(echo.copy(i).reverse(), echo.peer(i));
      },
    });
    open.push(echo);
    const c = await plainSocket('udp4', '127.0.0.1');
    const replies: string[] = [];
    c.on('message', (m, ri) => replies.push(`${m.toString()}@${ri.address}:${ri.port}`));
    c.send('abc', echo.port, '127.0.0.1');
    await until(() => replies.length === 1);
    expect(replies).toEqual([`cba@127.0.0.1:${echo.port}`]);
  });

  it('udpPeer and peerAddress convert both ways', () => {
    for (const [a, back] of [
      ['10.1.2.3', '10.1.2.3'],
      ['::1', '0:0:0:0:0:0:0:1'],
      ['fd00::12:3', 'fd00:0:0:0:0:0:12:3'],
      ['fd00:1:2:3:4:5:6:7', 'fd00:1:2:3:4:5:6:7'],
    ]) {
      const p = udpPeer(a, 53);
      expect(peerAddress(p)).toBe(back);
      expect(p.port).toBe(53);
      expect(p.family).toBe(a.includes(':') ? 6 : 4);
    }
    expect(() => udpPeer('10.1.2', 1)).toThrow(RangeError);
    expect(() => udpPeer('10.1.2.256', 1)).toThrow(RangeError);
    expect(() => udpPeer('fd00::g', 1)).toThrow(RangeError);
    expect(() => udpPeer('1:2:3', 1)).toThrow(RangeError);
  });

  it('a datagram longer than maxDatagram arrives cut and counted; its neighbours are intact', async () => {
    const { s, got } = receiver({ maxDatagram: 512 });
    const c = await plainSocket('udp4', '127.0.0.1');
    c.send('before', s.port, '127.0.0.1');
    c.send(Buffer.alloc(600, 0x41), s.port, '127.0.0.1');
    c.send(Buffer.alloc(512, 0x42), s.port, '127.0.0.1'); // exactly the slot: whole
    c.send('after', s.port, '127.0.0.1');
    await until(() => got.length === 4);
    expect(got.map((g) => [g.size, g.truncated])).toEqual([
      [6, false],
      [512, true],
      [512, false],
      [5, false],
    ]);
    expect(got[1].data).toBe('A'.repeat(512));
    expect(got[3].data).toBe('after');
    expect(s.counters().truncated).toBe(1);
  });

  it('a send too long for UDP is counted, not thrown; the kernel refusing one skips only that one', async () => {
    const { s, got } = receiver();
    const tx = new UdpBatch({ address: '127.0.0.1', onBatch: () => {} });
    open.push(tx);
    tx.send(Buffer.alloc(70000), udpPeer('127.0.0.1', s.port));
    tx.send(Buffer.from('one'), udpPeer('127.0.0.1', s.port));
    tx.send(Buffer.from('bad'), udpPeer('127.0.0.1', 0)); // port 0: EINVAL from the kernel
    tx.send(Buffer.from('two'), udpPeer('127.0.0.1', s.port));
    expect(tx.flush()).toBe(2);
    await until(() => got.length === 2);
    expect(got.map((g) => g.data)).toEqual(['one', 'two']);
    expect(tx.counters().sendErrors).toBe(2);
  });

  it('a connected socket: ICMP port unreachable is counted, and it works once the peer is there', async () => {
    // a port that is free now: bound, noted, closed
    const probe = await plainSocket('udp4', '127.0.0.1');
    const port = probe.address().port;
    probe.close();
    plain.splice(plain.indexOf(probe), 1);
    const { s: up, got } = receiver({ connect: { address: '127.0.0.1', port } });
    up.send(Buffer.from('lost'));
    await until(() => up.counters().socketErrors + up.counters().recvErrors > 0);
    const server = await new Promise<dgram.Socket>((r) => {
      const x = dgram.createSocket('udp4');
      x.bind(port, '127.0.0.1', () => r(x));
    });
    plain.push(server);
    server.on('message', (m, ri) => server.send(Buffer.concat([Buffer.from('ok:'), m]), ri.port, ri.address));
    up.send(Buffer.from('again'));
    await until(() => got.length === 1);
    expect(got[0]).toMatchObject({ data: 'ok:again', from: '127.0.0.1', port });
    // a datagram from another socket does not reach a connected socket
    const other = await plainSocket('udp4', '127.0.0.1');
    other.send('stranger', up.port, '127.0.0.1');
    up.send(Buffer.from('third'));
    await until(() => got.length === 2);
    await new Promise((r) => setTimeout(r, 50));
    expect(got.map((g) => g.data)).toEqual(['ok:again', 'ok:third']);
  });

  it('close inside onBatch: no further datagrams of that batch are read, queued sends dropped, the port is free again', async () => {
    const sink = await plainSocket('udp4', '127.0.0.1');
    let sinkGot = 0;
    sink.on('message', () => sinkGot++);
    let calls = 0;
    const s: UdpBatch = new UdpBatch({
      address: '127.0.0.1',
      batch: 4,
      onBatch: () => {
        calls++;
        s.send(Buffer.from('x'), udpPeer('127.0.0.1', sink.address().port));
        s.close();
        s.close(); // idempotent
        s.send(Buffer.from('y'), udpPeer('127.0.0.1', sink.address().port)); // no-op after close
      },
    });
    const tx = new UdpBatch({ address: '127.0.0.1', onBatch: () => {} });
    open.push(tx);
    for (let i = 0; i < 20; i++) tx.send(Buffer.from([i]), udpPeer('127.0.0.1', s.port));
    tx.flush();
    await until(() => calls > 0);
    await new Promise((r) => setTimeout(r, 50));
    expect(calls).toBe(1);
    expect(sinkGot).toBe(0);
    expect(s.flush()).toBe(0);
    // the descriptor is closed (in uv_close's callback): the same port binds again
    await tick();
    const again = new UdpBatch({ address: '127.0.0.1', port: s.port, onBatch: () => {} });
    open.push(again);
    expect(again.port).toBe(s.port);
  });

  it('opening and closing leaks no descriptors', async () => {
    const fds = () => readdirSync('/proc/self/fd').length;
    await new Promise((r) => setTimeout(r, 20)); // earlier tests' sockets finish closing
    const before = fds();
    const socks: UdpBatch[] = [];
    for (let i = 0; i < 50; i++) {
      const s = new UdpBatch({ address: i % 2 ? '::1' : '127.0.0.1', onBatch: () => {} });
      s.send(Buffer.from('z'), udpPeer('127.0.0.1', 9));
      socks.push(s);
    }
    expect(fds()).toBe(before + 50);
    for (const s of socks) s.close();
    await tick();
    await tick();
    expect(fds()).toBe(before);
  });

  it('bind conflicts are errors with the errno name as code', () => {
    const { s } = receiver();
    expect(() => new UdpBatch({ address: '127.0.0.1', port: s.port, onBatch: () => {} })).toThrow(
      expect.objectContaining({ code: 'EADDRINUSE' }),
    );
  });

  it('bad arguments: TypeError for types, RangeError for values', () => {
    const ok = { address: '127.0.0.1', onBatch: () => {} };
    const bad: [Record<string, unknown>, ErrorConstructor][] = [
      [{ ...ok, address: 5 }, TypeError],
      [{ ...ok, onBatch: 'f' }, TypeError],
      [{ ...ok, batch: '4' }, TypeError],
      [{ ...ok, batch: 0 }, RangeError],
      [{ ...ok, batch: 2000 }, RangeError],
      [{ ...ok, maxDatagram: 100 }, RangeError],
      [{ ...ok, maxDatagram: 1.5 }, RangeError],
      [{ ...ok, sendQueue: 0 }, RangeError],
      [{ ...ok, port: 70000 }, RangeError],
      [{ ...ok, port: '53' }, TypeError],
      [{ ...ok, mark: -1 }, RangeError],
      [{ ...ok, address: 'localhost' }, RangeError],
      [{ ...ok, address: '::1', connect: { address: '127.0.0.1', port: 53 } }, RangeError],
      [{ ...ok, connect: { address: '127.0.0.1', port: 0 } }, RangeError],
      [{ ...ok, connect: 'x' }, TypeError],
    ];
    for (const [o, E] of bad) expect(() => new UdpBatch(o as unknown as UdpBatchOptions), JSON.stringify(o)).toThrow(E);
    const { s } = receiver();
    expect(() => s.send('text' as unknown as Uint8Array)).toThrow(TypeError);
    // the native layer checks on its own too
    expect(() => addon.dnsioOpen(null, () => {})).toThrow(TypeError);
    expect(() => addon.dnsioOpen({}, () => {})).toThrow(TypeError);
    expect(() => addon.dnsioSend({}, 1)).toThrow(TypeError);
    expect(() => addon.dnsioClose(3)).toThrow(TypeError);
    const slab = new Uint8Array(512);
    const base = {
      family: 4, address: '127.0.0.1', port: 0, mark: 0, recvBufferBytes: 0, connectAddress: null, connectPort: 0,
      rxSlab: slab, rxSlotBytes: 512, rxMeta: new Uint32Array(8), txSlab: new Uint8Array(64), txMeta: new Uint32Array(8), stats: new Float64Array(8),
    };
    expect(() => addon.dnsioOpen({ ...base, rxMeta: new Uint32Array(4) }, () => {})).toThrow(RangeError);
    expect(() => addon.dnsioOpen({ ...base, rxMeta: new Uint8Array(32) }, () => {})).toThrow(TypeError);
    expect(() => addon.dnsioOpen({ ...base, stats: new Float64Array(2) }, () => {})).toThrow(RangeError);
    expect(() => addon.dnsioOpen({ ...base, family: 5 }, () => {})).toThrow(RangeError);
    const r = addon.dnsioOpen(base, () => {});
    try {
      expect(() => addon.dnsioSend(r.handle, 2)).toThrow(RangeError); // txMeta holds one entry
      base.txMeta.set([60, 10, 4, 9, 0x0100007f]); // bytes 60..70 of a 64-byte slab
      expect(() => addon.dnsioSend(r.handle, 1)).toThrow(RangeError);
      base.txMeta.set([0, 10, 5, 9]);
      expect(() => addon.dnsioSend(r.handle, 1)).toThrow(RangeError);
      base.txMeta.set([0, 10, 4, 9]);
      expect(addon.dnsioSend(r.handle, 1)).toBe(1);
      // a dnsio handle is never taken for an engine's (it was freed as one; from a review)
      expect(() => addon.engineClose(r.handle)).toThrow(TypeError);
      expect(() => addon.engineRoute(r.handle, '10.0.0.1')).toThrow(TypeError);
    } finally {
      addon.dnsioClose(r.handle);
    }
  });
});
