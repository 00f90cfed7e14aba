/**
 * The DNS gate (src/dns/message.ts): header, question, OPT size, error replies,
 * against messages written by dns-packet and hand-made malformed ones
 * (RFC 1035 4.1 layouts, 4.1.4 compression; RFC 6891 6.1.2 OPT).
 */
import { describe, it, expect } from 'vitest';
import dnsPacket from 'dns-packet';
import { readHeader, readQuestion, readName, clientUdpLimit, errorReply, ptrName, sameQuestion, setId, RCODE, TYPE_A } from '../../src/dns/message.js';

const query = (name: string, type: dnsPacket.RecordType = 'A', extra: Partial<dnsPacket.Packet> = {}) =>
  dnsPacket.encode({ type: 'query', id: 0x1234, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }], ...extra });

describe('dns message gate', () => {
  it('reads header and question (lower case, no final dot)', () => {
    const m = query('Web.Alpha.SVC.cluster.local');
    const h = readHeader(m)!;
    expect(h.id).toBe(0x1234);
    expect(h.qdcount).toBe(1);
    const q = readQuestion(m)!;
    expect(q).toEqual({ name: 'web.alpha.svc.cluster.local', type: TYPE_A, class: 1, end: m.length });
  });

  it('follows a backward compression pointer and rejects forward pointers and loops', () => {
    // header + "a.b" at 12, then a name "x" + pointer to 12 at offset 17
    const m = Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0x61, 1, 0x62, 0, 1, 0x78, 0xc0, 12]);
    expect(readName(m, 17)).toEqual({ name: 'x.a.b', end: 21 });
    const loop = Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]);
    expect(readName(loop, 12)).toBeNull(); // points at itself
    const fwd = Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 14, 0, 0, 1, 0, 1]);
    expect(readName(fwd, 12)).toBeNull();
    // a question "a" that ends in a pointer to offset 4 of the header (qdcount 0x00 0x01
    // read as labels) instead of its root byte: refused (the ID and counts change upstream)
    const intoHeader = Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0x61, 0xc0, 4, 0, 1, 0, 1]);
    expect(readName(intoHeader, 12)).toBeNull();
    expect(readQuestion(intoHeader)).toBeNull();
  });

  const bad: [string, Buffer][] = [
    ['empty', Buffer.alloc(0)],
    ['short header', Buffer.alloc(11)],
    ['no question', Buffer.alloc(12)],
    ['two questions', (() => { const m = Buffer.from(query('a.b')); m[5] = 2; return m; })()],
    ['label past the end', Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9, 0x61])],
    ['no type/class', Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0x61, 0, 0, 1])],
    ['extended label type 0x40', Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x41, 0, 0, 1, 0, 1])],
  ];
  it.each(bad)('rejects %s', (_n, m) => {
    expect(readQuestion(m)).toBeNull();
  });

  it('a name of 63-byte labels beyond 255 octets is rejected', () => {
    const labels = Array.from({ length: 5 }, () => 'a'.repeat(63));
    const parts = labels.map((l) => Buffer.concat([Buffer.from([63]), Buffer.from(l)]));
    const m = Buffer.concat([Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), ...parts, Buffer.from([0, 0, 1, 0, 1])]);
    expect(readQuestion(m)).toBeNull();
    const ok = Buffer.concat([Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), ...parts.slice(0, 3), Buffer.from([0, 0, 1, 0, 1])]);
    expect(readQuestion(ok)?.name).toBe(labels.slice(0, 3).join('.'));
  });

  it('escapes dots and bytes inside labels so names cannot collide', () => {
    const m = Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 0x61, 0x2e, 0x62, 0, 0, 1, 0, 1]);
    expect(readQuestion(m)!.name).toBe('a\\046b');
  });

  it('client UDP limit: 512 without EDNS0, the OPT class with it', () => {
    const plain = query('a.b');
    expect(clientUdpLimit(plain, readQuestion(plain)!)).toBe(512);
    const edns = query('a.b', 'A', { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232 } as dnsPacket.Answer] });
    expect(clientUdpLimit(edns, readQuestion(edns)!)).toBe(1232);
    const small = query('a.b', 'A', { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 100 } as dnsPacket.Answer] });
    expect(clientUdpLimit(small, readQuestion(small)!)).toBe(512);
    const cut = edns.subarray(0, edns.length - 3);
    expect(clientUdpLimit(cut, readQuestion(cut)!)).toBeNull();
  });

  it('error replies keep ID, question and RD and set QR, RA and the RCODE', () => {
    const m = query('x.example');
    const r = errorReply(m, RCODE.SERVFAIL, readQuestion(m));
    const d = dnsPacket.decode(r) as dnsPacket.DecodedPacket & { rcode: string };
    expect(d.id).toBe(0x1234);
    expect(d.type).toBe('response');
    expect(d.rcode).toBe('SERVFAIL');
    expect(d.flag_rd).toBe(true);
    expect(d.questions).toEqual([{ name: 'x.example', type: 'A', class: 'IN' }]);
    const f = dnsPacket.decode(errorReply(Buffer.alloc(12), RCODE.FORMERR, null)) as dnsPacket.DecodedPacket & { rcode: string };
    expect(f.rcode).toBe('FORMERR');
    expect(f.questions).toEqual([]);
  });

  it('setId and sameQuestion', () => {
    const m = Buffer.from(query('a.b'));
    setId(m, 0xbeef);
    expect(readHeader(m)!.id).toBe(0xbeef);
    expect(sameQuestion(readQuestion(m)!, readQuestion(query('A.B'))!)).toBe(true);
    expect(sameQuestion(readQuestion(m)!, readQuestion(query('a.b', 'AAAA'))!)).toBe(false);
  });

  it('PTR names (RFC 1035 3.5, RFC 3596 2.5)', () => {
    expect(ptrName('10.77.0.2')).toBe('2.0.77.10.in-addr.arpa');
    expect(ptrName('fd00::2', 'fd00:0000:0000:0000:0000:0000:0000:0002')).toBe('2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa');
    expect(() => ptrName('fd00::2')).toThrow(RangeError);
  });
});
