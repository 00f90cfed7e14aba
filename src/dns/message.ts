/**
 * The DNS wire format the proxy needs on every message, read without building
 * objects (RFC 1035 section 4.1): the header, the single question, and the EDNS0
 * OPT record's UDP payload size (RFC 6891 section 6.1.2). This is the one gate for
 * untrusted bytes: everything returns null on malformed input and never throws or
 * loops (compression pointers must point backwards, at most MAX_POINTERS hops).
 * Full decoding (dns-packet) happens only for answers that are rewritten.
 */

export const HEADER_LEN = 12;
/** RFC 1035 2.3.4: a name is at most 255 octets on the wire. */
export const MAX_NAME_WIRE = 255;
const MAX_POINTERS = 32;

export const QR = 0x8000;
export const TC = 0x0200;
export const RD = 0x0100;
export const RA = 0x0080;
export const RCODE = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
} as const;

export const TYPE_A = 1;
export const TYPE_CNAME = 5;
export const TYPE_PTR = 12;
export const TYPE_AAAA = 28;
export const TYPE_OPT = 41;
export const CLASS_IN = 1;

export interface Header {
  id: number;
  flags: number;
  qdcount: number;
  ancount: number;
  nscount: number;
  arcount: number;
}

export interface Question {
  /** Lower case, no trailing dot; "" for the root. */
  name: string;
  type: number;
  class: number;
  /** Offset just past the question. */
  end: number;
}

export function readHeader(buf: Uint8Array): Header | null {
  if (buf.length < HEADER_LEN) return null;
  return {
    id: (buf[0] << 8) | buf[1],
    flags: (buf[2] << 8) | buf[3],
    qdcount: (buf[4] << 8) | buf[5],
    ancount: (buf[6] << 8) | buf[7],
    nscount: (buf[8] << 8) | buf[9],
    arcount: (buf[10] << 8) | buf[11],
  };
}

export function opcodeOf(flags: number): number {
  return (flags >> 11) & 0xf;
}

export function rcodeOf(flags: number): number {
  return flags & 0xf;
}

/**
 * Reads a (possibly compressed) name at `off`. Returns the lower-case dotted name
 * and the offset after it in the message, or null when malformed.
 */
export function readName(buf: Uint8Array, off: number): { name: string; end: number } | null {
  let pos = off;
  let end = -1;
  let hops = 0;
  let wire = 0;
  let name = '';
  for (;;) {
    if (pos >= buf.length) return null;
    const len = buf[pos];
    if (len === 0) {
      if (end < 0) end = pos + 1;
      break;
    }
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (pos + 1 >= buf.length) return null;
      const target = ((len & 0x3f) << 8) | buf[pos + 1];
      if (end < 0) end = pos + 2;
      // backwards only (no loops), and never into the header: the ID there changes on the
      // way upstream, and the upstream's own question would then be read another way
      if (target >= pos || target < HEADER_LEN || ++hops > MAX_POINTERS) return null;
      pos = target;
      continue;
    }
    if (kind !== 0) return null; // 0x40 / 0x80: extended label types (RFC 6891 9) are not used
    if (pos + 1 + len > buf.length) return null;
    wire += len + 1;
    if (wire + 1 > MAX_NAME_WIRE) return null;
    let label = '';
    for (let i = pos + 1; i <= pos + len; i++) {
      let c = buf[i];
      if (c >= 0x41 && c <= 0x5a) c += 0x20;
      // '.' and '\' inside a label and non-printables are escaped so names never collide
      if (c === 0x2e || c === 0x5c || c < 0x21 || c > 0x7e) label += `\\${c.toString().padStart(3, '0')}`;
      else label += String.fromCharCode(c);
    }
    name += name.length === 0 ? label : `.${label}`;
    pos += 1 + len;
  }
  return { name, end };
}

/** The single question of a query or response; null unless QDCOUNT is 1 and it parses. */
export function readQuestion(buf: Uint8Array): Question | null {
  const h = readHeader(buf);
  if (h === null || h.qdcount !== 1) return null;
  const n = readName(buf, HEADER_LEN);
  if (n === null || n.end + 4 > buf.length) return null;
  const p = n.end;
  return { name: n.name, type: (buf[p] << 8) | buf[p + 1], class: (buf[p + 2] << 8) | buf[p + 3], end: p + 4 };
}

/** Skips one resource record at `off`; returns the offset after it or null. */
function skipRecord(buf: Uint8Array, off: number): { type: number; class: number; ttl: number; rdata: number; end: number } | null {
  const n = readName(buf, off);
  if (n === null || n.end + 10 > buf.length) return null;
  const p = n.end;
  const rdlen = (buf[p + 8] << 8) | buf[p + 9];
  const end = p + 10 + rdlen;
  if (end > buf.length) return null;
  return {
    type: (buf[p] << 8) | buf[p + 1],
    class: (buf[p + 2] << 8) | buf[p + 3],
    ttl: ((buf[p + 4] << 24) | (buf[p + 5] << 16) | (buf[p + 6] << 8) | buf[p + 7]) >>> 0,
    rdata: p + 10,
    end,
  };
}

/**
 * The UDP payload size a query's client accepts: the OPT record's CLASS (RFC 6891
 * 6.2.3, at least 512), or 512 without EDNS0. Null when the sections after the
 * question are malformed.
 */
export function clientUdpLimit(buf: Uint8Array, q: Question): number | null {
  const h = readHeader(buf)!;
  let off = q.end;
  const records = h.ancount + h.nscount + h.arcount;
  let limit = 512;
  for (let i = 0; i < records; i++) {
    const r = skipRecord(buf, off);
    if (r === null) return null;
    if (r.type === TYPE_OPT && i >= h.ancount + h.nscount) limit = Math.max(512, r.class);
    off = r.end;
  }
  return limit;
}

/** Do all records after the question parse, ending exactly at the message's end? */
export function recordsWellFormed(buf: Uint8Array, q: Question): boolean {
  const h = readHeader(buf)!;
  let off = q.end;
  const records = h.ancount + h.nscount + h.arcount;
  for (let i = 0; i < records; i++) {
    const r = skipRecord(buf, off);
    if (r === null) return false;
    off = r.end;
  }
  return off === buf.length;
}

/** Does `response` answer `q` (same name, type and class in its question)? */
export function sameQuestion(a: Question, b: Question): boolean {
  return a.type === b.type && a.class === b.class && a.name === b.name;
}

export function setId(buf: Uint8Array, id: number): void {
  buf[0] = id >> 8;
  buf[1] = id & 0xff;
}

/**
 * A reply without records to `query`: its ID and question (when it has a readable
 * one), QR and RA set, RD copied, the given RCODE. FORMERR without a question when
 * the question is unreadable (RFC 1035 4.1.1).
 */
export function errorReply(query: Uint8Array, rcode: number, q: Question | null): Buffer {
  const qEnd = q === null ? HEADER_LEN : q.end;
  const out = Buffer.alloc(qEnd);
  out.set(query.subarray(0, qEnd));
  const opcode = query[2] & 0x78;
  const rd = query[2] & 0x01;
  out[2] = 0x80 | opcode | rd;
  out[3] = 0x80 | (rcode & 0xf);
  out[4] = 0;
  out[5] = q === null ? 0 : 1;
  out.fill(0, 6, 12);
  return out;
}

/** The PTR name of an address (RFC 1035 3.5 in-addr.arpa, RFC 3596 2.5 ip6.arpa). */
export function ptrName(address: string, expanded6?: string): string {
  if (!address.includes(':')) return `${address.split('.').reverse().join('.')}.in-addr.arpa`;
  const hex = (expanded6 ?? address).replace(/:/g, '');
  if (!/^[0-9a-f]{32}$/i.test(hex)) throw new RangeError(`ptrName: need the fully expanded IPv6 address, got ${address}`);
  return `${hex.toLowerCase().split('').reverse().join('.')}.ip6.arpa`;
}
