/**
 * The answer transform: pure, message in, message out.
 *
 *   1. the question's name decides (classify.ts): never and other pass untouched
 *   2. project answers are decoded (dns-packet); each A/AAAA record whose address
 *      is a project service VIP with known ready endpoints is replaced by one record
 *      per endpoint of that family (client-side load balancing); a VIP without
 *      endpoints stays
 *   3. every TTL in the answer section is capped at maxTtl
 *   4. every A/AAAA the client may use, in the answer and additional sections
 *      (SRV targets), whatever its owner name, is returned as learned with its
 *      (capped) TTL, for the routes: an answer to a project question leads into the
 *      tunnel, also through a CNAME chain to an outside name (a tampered answer
 *      must not lead project traffic out in plaintext). Not learned: addresses in
 *      the never-tunnel CIDRs, and records owned by a never-tunnel name or by a
 *      name a never-tunnel name leads to through CNAMEs (an ExternalName service is
 *      made plaintext by listing its name in neverTunnelNames)
 *
 * A truncated (TC) answer that carries records is answered with its header and
 * question only (TC kept): the client retries over TCP and learns no address
 * without a route (musl uses the records of a truncated answer). Error answers
 * (non-zero RCODE) that carry addresses are learned like any other. When the
 * rewritten message would not fit the client's UDP limit, fewer endpoints are
 * used, then none (the VIP stays); if even that does not fit re-encoded, the client
 * gets the question only with TC set and asks again over TCP (where, at 65535 bytes,
 * it fits; an answer near 64 KiB that grows re-encoded gets TC there too and fails
 * closed).
 */
import dnsPacket from 'dns-packet';
import type { Question } from './message.js';
import { CLASS_IN, TC, TYPE_A, TYPE_AAAA, readHeader, recordsWellFormed } from './message.js';
import { canonicalAddress, classifyName, type CidrSet, type NamePolicy, type NameVerdict } from './classify.js';

export interface RewriteOptions {
  policy: NamePolicy;
  neverCidrs: CidrSet;
  /** Ready endpoint addresses of a project service VIP (canonical address), or undefined. */
  endpoints: (vip: string) => readonly string[] | undefined;
  /** Seconds. */
  maxTtl: number;
  /** The most bytes the reply may have (the client's UDP limit; 65535 over TCP). */
  limit: number;
}

export interface Learned {
  address: string;
  /** Seconds (already capped). */
  ttl: number;
}

export interface RewriteResult {
  verdict: NameVerdict;
  /** The message to send (ID still upstream's); null: send the original bytes. */
  message: Buffer | null;
  learned: Learned[];
  /** A/AAAA records replaced by endpoint records. */
  rewritten: number;
}

/** Thrown for a response that passed the header gate but does not decode. */
export class MalformedAnswerError extends Error {
  readonly code = 'ERR_TENC_DNS_MALFORMED';
}

type Answer = dnsPacket.Answer & { data?: unknown; ttl?: number };

export function rewriteAnswer(response: Buffer, q: Question, o: RewriteOptions): RewriteResult {
  const verdict = classifyName(q.name, o.policy);
  const unchanged: RewriteResult = { verdict, message: null, learned: [], rewritten: 0 };
  if (verdict !== 'project' || q.class !== CLASS_IN) return unchanged;
  const h = readHeader(response)!;
  if ((h.flags & TC) !== 0) {
    if (h.ancount + h.nscount + h.arcount === 0) return unchanged;
    return { verdict, message: questionOnly(response, q), learned: [], rewritten: 0 };
  }

  if (!recordsWellFormed(response, q)) throw new MalformedAnswerError('answer records do not parse');
  let packet: dnsPacket.Packet;
  try {
    packet = dnsPacket.decode(response);
  } catch (e) {
    throw new MalformedAnswerError(`answer does not decode: ${(e as Error).message}`);
  }
  const answers = (packet.answers ?? []) as Answer[];
  let changed = false;
  let rewritten = 0;
  const fixed: Answer[] = [];
  const expanded: { vipIndex: number; eps: readonly string[] }[] = [];
  for (const a of answers) {
    const ttl = typeof a.ttl === 'number' ? a.ttl : 0;
    if (ttl > o.maxTtl) {
      a.ttl = o.maxTtl;
      changed = true;
    }
    if ((a.type === 'A' || a.type === 'AAAA') && typeof a.data === 'string' && ownedByProject(a, o)) {
      const eps = (o.endpoints(a.data) ?? []).filter((e) => e.includes(':') === (a.type === 'AAAA'));
      if (eps.length > 0) {
        expanded.push({ vipIndex: fixed.length, eps });
        rewritten++;
        changed = true;
      }
    }
    fixed.push(a);
  }
  // SRV and similar answers carry their targets' addresses as additional records: capped and learned too
  const extra = ((packet.additionals ?? []) as Answer[]).filter((a) => a.type === 'A' || a.type === 'AAAA');
  for (const a of extra) {
    if (typeof a.ttl === 'number' && a.ttl > o.maxTtl) {
      a.ttl = o.maxTtl;
      changed = true;
    }
  }
  if (!changed) return { verdict, message: null, learned: learnedOf([...answers, ...extra], o), rewritten: 0 };

  // Endpoint records, as many per VIP as fit the client's limit (at least one, else the VIP stays).
  const epsAt = new Map(expanded.map((e) => [e.vipIndex, e.eps]));
  const build = (perVip: number): Answer[] => {
    const out: Answer[] = [];
    fixed.forEach((a, i) => {
      const eps = epsAt.get(i);
      if (!eps || perVip === 0) out.push(a);
      else for (const ep of eps.slice(0, perVip)) out.push({ ...a, data: ep } as Answer);
    });
    return out;
  };
  const encode = (ans: Answer[]): Buffer => dnsPacket.encode({ ...packet, answers: ans } as dnsPacket.Packet);
  let per = Math.max(...expanded.map((e) => e.eps.length), 0);
  let msg = encode(build(per));
  while (msg.length > o.limit && per > 0) {
    per = per > 1 ? Math.floor(per / 2) : 0;
    msg = encode(build(per));
    if (per === 0) rewritten = 0;
  }
  // even the capped original does not fit re-encoded (dns-packet does not compress): not
  // the original either (its addresses unrouted, its TTLs long), but "truncated", so the
  // client asks again over TCP, where it fits
  if (msg.length > o.limit) return { verdict, message: truncated(response, q), learned: [], rewritten: 0 };
  const final = build(per);
  return { verdict, message: msg, learned: learnedOf([...final, ...extra], o), rewritten };
}

/** The response's header and question, no records (ID, flags and RCODE kept). */
function questionOnly(response: Buffer, q: Question): Buffer {
  const out = Buffer.from(response.subarray(0, q.end));
  out.fill(0, 6, 12); // ancount, nscount, arcount
  return out;
}

/** questionOnly with TC set: "ask again over TCP". */
function truncated(response: Buffer, q: Question): Buffer {
  const out = questionOnly(response, q);
  out.writeUInt16BE(out.readUInt16BE(2) | TC, 2);
  return out;
}

/**
 * Is the record's owner name in the project domain (and not a never-tunnel name)? A
 * project name may be a CNAME to an outside name (an ExternalName service): the
 * outside name's addresses are not the project's.
 */
function ownedByProject(a: Answer, o: RewriteOptions): boolean {
  return typeof a.name === 'string' && classifyName(a.name, o.policy) === 'project';
}

function learnedOf(answers: Answer[], o: RewriteOptions): Learned[] {
  const never = neverOwners(answers, o);
  const out: Learned[] = [];
  const seen = new Set<string>();
  for (const a of answers) {
    if ((a.type !== 'A' && a.type !== 'AAAA') || typeof a.data !== 'string' || typeof a.name !== 'string') continue;
    if (never.has(lower(a.name))) continue;
    const address = unmapped(canonicalAddress(a.data));
    if (address === null || seen.has(address) || o.neverCidrs.has(address)) continue;
    seen.add(address);
    out.push({ address, ttl: Math.min(o.maxTtl, typeof a.ttl === 'number' ? a.ttl : 0) });
  }
  return out;
}

/**
 * An IPv4-mapped IPv6 address (::ffff:a.b.c.d, in an AAAA record) as the IPv4 address
 * it is: a dual-stack socket (or Go, which converts it) sends IPv4 to it, so its route
 * belongs in the IPv4 table; a /128 in the IPv6 table would leave it in plaintext.
 */
function unmapped(address: string | null): string | null {
  const m = address === null ? null : /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(address);
  if (m === null) return address;
  const hi = parseInt(m[1]!, 16);
  const lo = parseInt(m[2]!, 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

function lower(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/**
 * Owner names that are never-tunnel names, or that one leads to through CNAMEs, in
 * any order of the records: the CNAMEs are indexed by owner and walked from each
 * never-tunnel name once (linear: a 64 KiB answer of CNAMEs in reverse order costs
 * one pass, not one per record).
 */
function neverOwners(answers: Answer[], o: RewriteOptions): Set<string> {
  const never = new Set<string>();
  const targets = new Map<string, string[]>(); // CNAME owner -> its targets
  for (const a of answers) {
    if (typeof a.name !== 'string') continue;
    const owner = lower(a.name);
    if (classifyName(a.name, o.policy) === 'never') never.add(owner);
    if (a.type === 'CNAME' && typeof a.data === 'string') {
      const list = targets.get(owner);
      if (list) list.push(lower(a.data));
      else targets.set(owner, [lower(a.data)]);
    }
  }
  const todo = [...never];
  while (todo.length > 0) {
    for (const t of targets.get(todo.pop()!) ?? []) {
      if (never.has(t)) continue;
      never.add(t);
      todo.push(t);
    }
  }
  return never;
}

/** Record types this module looks at (others pass as they are). */
export const REWRITTEN_TYPES = [TYPE_A, TYPE_AAAA] as const;
