/**
 * Routes that follow DNS answers. Each learned project address holds one
 * reference on a tenc0 route (Pod.addDestinations) while its TTL lasts; an answer
 * for the same address again extends it. After the TTL a grace period runs; at its
 * end the route is removed unless the address is still in use (its activity
 * counter, e.g. the transmit bytes of the peer that carries it, moved since the
 * last look), in which case it gets another grace period. So a flow that is still
 * sending is never cut, and an idle address leaves the table TTL + grace after the
 * last answer. Leaving the table never means plaintext: the pod removes the tenc0
 * route but keeps its unreachable guard (PolicyRouting removeRoute keepGuard), so a
 * client that still uses the cached address fails closed until it asks again.
 * Inside dns.classifyCidrs no guard stays (the range's tenc0 route covers the
 * address), and the address meets first-use classification: so an expired address
 * is remembered (rememberMs, at most maxRoutes of them, oldest out first) and
 * known() counts it as named by a project answer, which makes it project whatever
 * its PTR says (classify.ts), never a bypass. Pure bookkeeping on an injected
 * clock; the caller applies the add/remove lists (in order) and calls expire()
 * periodically.
 */

export interface LearnedRoutesOptions {
  /** Milliseconds after the TTL before a route is removed. */
  graceMs: number;
  /** The most addresses held (further ones are not routed and counted). */
  maxRoutes: number;
  /** An activity counter for an address (null: unknown = idle). */
  activity?: (address: string) => number | null;
  /** Milliseconds an expired address is still known() (default REMEMBER_EXPIRED_MS). */
  rememberMs?: number;
}

/** How long an expired learned address still counts as named by a project answer. */
export const REMEMBER_EXPIRED_MS = 15 * 60_000;

interface Entry {
  cidr: string;
  /** TTL end (ms). */
  expires: number;
  /** Last time we looked at the activity counter, and its value then. */
  lastActivity: number | null;
  /** Removal deadline once the TTL ended (expires + grace, extended while active). */
  removeAt: number;
}

export function hostCidr(address: string): string {
  return `${address}/${address.includes(':') ? 128 : 32}`;
}

export class LearnedRoutes {
  private readonly entries = new Map<string, Entry>();
  /** Expired CIDRs -> until when they are remembered (insertion order = expiry order). */
  private readonly expired = new Map<string, number>();
  private readonly rememberMs: number;
  /** Learned addresses not routed because the table was full. */
  overflow = 0;

  constructor(private readonly o: LearnedRoutesOptions) {
    if (!Number.isFinite(o.graceMs) || o.graceMs < 0) throw new RangeError('LearnedRoutes: graceMs must be >= 0');
    if (!Number.isInteger(o.maxRoutes) || o.maxRoutes < 1) throw new RangeError('LearnedRoutes: maxRoutes must be >= 1');
    this.rememberMs = o.rememberMs ?? REMEMBER_EXPIRED_MS;
    if (!Number.isFinite(this.rememberMs) || this.rememberMs < 0) throw new RangeError('LearnedRoutes: rememberMs must be >= 0');
  }

  /**
   * Records an answer's address for ttl seconds at `now`. Returns the CIDR to add
   * when it is new (the caller adds the route before the client gets the answer),
   * else null.
   */
  learn(address: string, ttlSeconds: number, now: number): string | null {
    const cidr = hostCidr(address);
    const expires = now + Math.max(0, ttlSeconds) * 1000;
    const e = this.entries.get(cidr);
    if (e) {
      e.expires = Math.max(e.expires, expires);
      e.removeAt = Math.max(e.removeAt, e.expires + this.o.graceMs);
      return null;
    }
    if (this.entries.size >= this.o.maxRoutes) {
      this.overflow++;
      return null;
    }
    this.entries.set(cidr, { cidr, expires, lastActivity: this.o.activity?.(address) ?? null, removeAt: expires + this.o.graceMs });
    this.expired.delete(cidr);
    return cidr;
  }

  /** The CIDRs whose time is up at `now` (removed from the bookkeeping; the caller removes the routes). */
  expire(now: number): string[] {
    const out: string[] = [];
    for (const e of this.entries.values()) {
      if (now < e.removeAt) continue;
      const address = e.cidr.slice(0, e.cidr.indexOf('/'));
      const current = this.o.activity?.(address) ?? null;
      if (current !== null && e.lastActivity !== null && current !== e.lastActivity) {
        e.lastActivity = current; // still sending: another grace period
        e.removeAt = now + this.o.graceMs;
        continue;
      }
      this.entries.delete(e.cidr);
      out.push(e.cidr);
      this.expired.set(e.cidr, now + this.rememberMs);
    }
    for (const [cidr, until] of this.expired) {
      if (this.expired.size <= this.o.maxRoutes && until > now) break;
      this.expired.delete(cidr);
    }
    return out;
  }

  /** Drops the bookkeeping of a CIDR whose route could not be added. */
  forget(cidr: string): void {
    this.entries.delete(cidr);
  }

  /** Everything held (for teardown). */
  drain(): string[] {
    const all = [...this.entries.keys()];
    this.entries.clear();
    return all;
  }

  get size(): number {
    return this.entries.size;
  }

  has(address: string): boolean {
    return this.entries.has(hostCidr(address));
  }

  /** Did a project answer name the address (canonical): held now, or expired less than rememberMs before `now`? */
  known(address: string, now: number): boolean {
    const cidr = hostCidr(address);
    return this.entries.has(cidr) || (this.expired.get(cidr) ?? -Infinity) > now;
  }
}
