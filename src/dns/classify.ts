/**
 * Which names and addresses belong to the pod's project. Pure: no I/O, the clock
 * and the reverse lookup are injected.
 *
 *   classifyName(name)      project | never | other
 *     - never:   the name is, or is under, a never-tunnel name (wins over all)
 *     - project: the name is under the project domain (<project>.svc.cluster.local)
 *                or the project's pod domain (<project>.pod.<cluster domain>, the
 *                names Kubernetes gives pod addresses)
 *     - other:   everything else (other projects, external names): passed untouched
 *
 *   AddressClassifier       for addresses not learned through DNS (a raw IP):
 *     never-tunnel CIDR -> never; a known member (peer allowed IPs, service VIPs,
 *     endpoints) -> project; else a PTR lookup whose names fall in the project
 *     domain or the project's pod domain (<project>.pod.<cluster domain>, the names
 *     Kubernetes gives pod addresses) -> project; no PTR -> other; a lookup that got
 *     no answer -> other with reason lookup-failed (cached briefly: callers that
 *     would act on "other", like a bypass route, must not). Any verdict but project
 *     (cached ones too) becomes project with reason learned when a project answer
 *     named the address (its learned route held, or expired not long ago: routes.ts
 *     known): an expired DNS route must not turn into a bypass. Verdicts are cached for their TTL;
 *     clear() forgets them, and a lookup that was under way when clear() ran is
 *     not cached (its answer may be stale: membership changed meanwhile).
 */
import { Address4, Address6 } from 'ip-address';
import { ptrName } from './message.js';

export type NameVerdict = 'project' | 'never' | 'other';

/** Lower case, no trailing dot. */
export function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/** Is `name` equal to `domain` or below it? Both normalized. */
export function inDomain(name: string, domain: string): boolean {
  if (domain === '') return true;
  return name === domain || (name.length > domain.length && name.endsWith(domain) && name[name.length - domain.length - 1] === '.');
}

export interface NamePolicy {
  /** The project domain, e.g. "alpha.svc.cluster.local" (normalized). */
  domain: string;
  /** Names (and everything below them) that are never tunneled. */
  neverNames: readonly string[];
}

export function classifyName(name: string, policy: NamePolicy): NameVerdict {
  const n = normalizeName(name);
  for (const never of policy.neverNames) if (inDomain(n, never)) return 'never';
  if (inDomain(n, policy.domain)) return 'project';
  const pod = podDomainFor(policy.domain);
  return pod !== null && inDomain(n, pod) ? 'project' : 'other';
}

/** podDomainOf, remembered for the last domain asked (one policy per process: no regex per name). */
let podMemo: { domain: string; pod: string | null } = { domain: '', pod: null };
function podDomainFor(domain: string): string | null {
  if (podMemo.domain !== domain) podMemo = { domain, pod: podDomainOf(domain) };
  return podMemo.pod;
}

/** An address as a bigint with its family (null if not an address). */
export function addressBits(address: string): { family: 4 | 6; bits: bigint; expanded: string } | null {
  if (Address4.isValid(address) && !address.includes('/')) {
    const a = new Address4(address);
    return { family: 4, bits: a.bigInt(), expanded: a.correctForm() };
  }
  if (!address.includes('/') && !address.includes('%') && Address6.isValid(address)) {
    const a = new Address6(address);
    return { family: 6, bits: a.bigInt(), expanded: a.canonicalForm() };
  }
  return null;
}

/** The canonical text of an address whose bits `a` are (addressBits). */
const canonicalOf = (address: string, a: NonNullable<ReturnType<typeof addressBits>>): string => (a.family === 4 ? a.expanded : new Address6(address).correctForm());

/** The canonical text of an address (ip-address correctForm, as the config and routes use), or null. */
export function canonicalAddress(address: string): string | null {
  const a = addressBits(address);
  return a === null ? null : canonicalOf(address, a);
}

/** A set of CIDRs with a membership test (linear: the lists are short). */
export class CidrSet {
  private readonly nets: { family: 4 | 6; net: bigint; mask: bigint }[] = [];

  constructor(cidrs: readonly string[]) {
    for (const c of cidrs) this.add(c);
  }

  add(cidr: string): void {
    const [addr, lenText] = cidr.split('/');
    const a = addressBits(addr);
    if (a === null) throw new TypeError(`CidrSet: not an IPv4/IPv6 CIDR: ${cidr}`);
    const width = a.family === 4 ? 32 : 128;
    const len = lenText === undefined ? width : Number(lenText);
    if (!Number.isInteger(len) || len < 0 || len > width) throw new RangeError(`CidrSet: bad prefix length in ${cidr}`);
    const all = (1n << BigInt(width)) - 1n;
    const mask = all ^ ((1n << BigInt(width - len)) - 1n);
    this.nets.push({ family: a.family, net: a.bits & mask, mask });
  }

  has(address: string): boolean {
    const a = addressBits(address);
    if (a === null) return false;
    return this.nets.some((n) => n.family === a.family && (a.bits & n.mask) === n.net);
  }

  get size(): number {
    return this.nets.length;
  }
}

export type AddressVerdict = { verdict: 'project' | 'never' | 'other'; reason: 'never-cidr' | 'learned' | 'member' | 'reverse' | 'none' | 'lookup-failed' };

/** The pod domain of a project domain: "alpha.svc.cluster.local" -> "alpha.pod.cluster.local" (null if not that shape). */
export function podDomainOf(domain: string): string | null {
  const m = /^([^.]+)\.svc\.(.+)$/.exec(domain);
  return m ? `${m[1]}.pod.${m[2]}` : null;
}

/** Seconds a failed reverse lookup is remembered. */
const FAILED_LOOKUP_SECONDS = 2;

export interface AddressClassifierOptions {
  policy: NamePolicy;
  neverCidrs: CidrSet;
  /** Known project members: peers' allowed IPs, service VIPs and endpoints. */
  isMember: (address: string) => boolean;
  /**
   * Did a project answer name this address (canonical; its learned route held or
   * recently expired)? Then it is project whatever the PTR says: an expired DNS
   * route inside classifyCidrs must not turn into a bypass.
   */
  learned?: (address: string) => boolean;
  /** PTR names for the reverse name of an address ([] when it has none: NXDOMAIN or no PTR); null (or a rejection) when no answer came. */
  reverse: (ptr: string) => Promise<{ names: string[]; ttl: number } | null>;
  now: () => number;
  /** Cache lifetime (s) of a verdict without a TTL of its own (members, failures). */
  cacheSeconds: number;
  /** Most verdicts kept (oldest evicted first). */
  maxEntries?: number;
}

export class AddressClassifier {
  private readonly cache = new Map<string, { v: AddressVerdict; until: number }>();
  private readonly max: number;
  /** Bumped by clear(): a lookup that began before it caches nothing. */
  private epoch = 0;

  constructor(private readonly o: AddressClassifierOptions) {
    this.max = o.maxEntries ?? 4096;
  }

  async classify(address: string): Promise<AddressVerdict> {
    const a = addressBits(address);
    if (a === null) throw new TypeError(`AddressClassifier.classify: not an address: ${address}`);
    const key = a.expanded;
    if (this.o.neverCidrs.has(address)) return { verdict: 'never', reason: 'never-cidr' };
    if (this.o.isMember(address)) return { verdict: 'project', reason: 'member' };
    // a project answer named it: project, also over a verdict cached before that answer
    // (the canonical text only when there is something to ask: not for a project verdict)
    const learned = (v: AddressVerdict): AddressVerdict => (v.verdict !== 'project' && this.o.learned?.(canonicalOf(address, a)) ? { verdict: 'project', reason: 'learned' } : v);
    const hit = this.cache.get(key);
    const now = this.o.now();
    if (hit && hit.until > now) return learned(hit.v);
    let ttl = this.o.cacheSeconds;
    const epoch = this.epoch;
    const r = await this.o.reverse(ptrName(a.family === 4 ? key : address, a.family === 6 ? key : undefined)).catch(() => null);
    const names = r?.names ?? [];
    const verdicts = names.map((n) => classifyName(n, this.o.policy));
    let v: AddressVerdict;
    if (verdicts.includes('never')) v = { verdict: 'never', reason: 'reverse' };
    else if (verdicts.includes('project')) v = { verdict: 'project', reason: 'reverse' };
    else if (r === null) v = { verdict: 'other', reason: 'lookup-failed' };
    else v = { verdict: 'other', reason: 'none' };
    if (r === null) ttl = Math.min(ttl, FAILED_LOOKUP_SECONDS);
    else if (names.length > 0) ttl = Math.min(ttl, r.ttl);
    if (epoch !== this.epoch) {
      // clear() ran during the lookup (membership changed): not cached, and a new member wins
      return this.o.isMember(address) ? { verdict: 'project', reason: 'member' } : learned(v);
    }
    if (this.cache.size >= this.max) this.cache.delete(this.cache.keys().next().value!);
    this.cache.delete(key);
    this.cache.set(key, { v, until: now + ttl * 1000 });
    return learned(v);
  }

  /** Forget cached verdicts (membership changed). */
  clear(): void {
    this.cache.clear();
    this.epoch++;
  }
}
