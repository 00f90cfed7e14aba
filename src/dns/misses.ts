/**
 * Addresses not learned through DNS, classified on first use (a client dialing a
 * raw IP). The pod's cluster ranges (dns.classifyCidrs) are routed into tenc0, so
 * nothing inside them leaves in plaintext before it is classified. A packet to an
 * address no peer claims is dropped by the data plane, which reports it once per
 * destination per second as a route_miss event with a copy of the packet. Here:
 *
 *   classify (AddressClassifier: never-tunnel CIDR, membership, PTR into the project domain)
 *     lookup failed -> nothing (the address stays in tenc0; its next miss asks again)
 *     never / other -> a bypass (`throw <addr>` in tenc's table): the address leaves
 *                      through the main table from now on, and the reported packets
 *                      (up to 16 per address per second, kept while it was being
 *                      classified) are released (sent again through a raw socket),
 *                      so the first packets of a flow (a TCP SYN, a UDP burst) are
 *                      not lost
 *     project       -> stays in tenc0: without a peer for it, its packets are dropped
 *                      (counted), never sent in plaintext
 *
 * A bypass lasts as long as its verdict (the classifier's TTL); when it ends the
 * address is classified again and the bypass is kept when the verdict is unchanged,
 * so a flow in progress is never cut; it is removed when the verdict became
 * project. At most maxBypasses are held; beyond that the oldest is removed (its next
 * packet is reported again). When membership changes (revoke), the bypasses of
 * addresses that are now project members go at once, and classifications under way
 * add no bypass (their verdict may be stale), and a bypass whose route was going in
 * while revoke() ran is removed again: the next packet is tunnelled or dropped.
 * At most maxPerSecond misses are taken up per second (a scan of the ranges by the
 * pod's app); the rest are counted (rateLimited) and their packets dropped: the
 * address stays in tenc0 (fail closed) and is reported again. Pure bookkeeping over injected parts; no timers of its
 * own: the caller runs expire() periodically.
 */
import type { AddressVerdict } from './classify.js';
import { hostCidr } from './routes.js';

export interface RouteMissOptions {
  /** Is the address inside the classified ranges? Misses outside them (e.g. the kernel's own multicast out of tenc0) are ignored. */
  inRange: (address: string) => boolean;
  classify: (address: string) => Promise<AddressVerdict>;
  /** Adds `throw <cidr>`; false when refused (a tunnel route covers it). */
  addBypass: (cidr: string) => Promise<boolean>;
  removeBypass: (cidr: string) => Promise<void>;
  /** Is the bypass still installed? The routing deletes one a new tunnel route covers. */
  hasBypass: (cidr: string) => boolean;
  /**
   * A bypass the routing deleted itself (a new tunnel route covers it): what else let
   * it out goes too (the enforcement table's bypass element, which accepts its
   * plaintext ahead of the classify drop). Called by expire().
   */
  forgetBypass?: (cidr: string) => Promise<void>;
  /** Sends the reported packet again through the kernel's routing (after the bypass). */
  release: (packet: Uint8Array) => void;
  now: () => number;
  /** How long a verdict holds a bypass before it is checked again (ms). */
  holdMs: number;
  maxBypasses?: number;
  /** Misses taken up per second (default 200); more are counted drops. */
  maxPerSecond?: number;
  onError?: (what: string, err: unknown) => void;
}

export interface RouteMissCounters {
  /** route_miss events handled (inside the ranges). */
  misses: number;
  /** route_miss events outside the ranges: ignored. */
  outOfRange: number;
  /** Bypasses added (other/never verdicts). */
  bypassed: number;
  /** Misses for project addresses no peer serves: kept in the tunnel, dropped. */
  projectUnrouted: number;
  /** Misses whose reverse lookup got no answer: kept in the tunnel (asked again at the next miss). */
  undecided: number;
  /** Packets released after a bypass, and releases that failed. */
  released: number;
  /** Reported packets not kept while their address was classified (over the bounds). */
  heldDropped: number;
  releaseErrors: number;
  /** Bypasses removed because the table was full (oldest first). */
  evicted: number;
  /** Bypasses classified again when their verdict time ended. */
  rechecked: number;
  /** Classification or route changes that failed. */
  errors: number;
  /** Misses not taken up because 256 addresses were already being classified. */
  busy: number;
  /** Misses not taken up because more than maxPerSecond came in the last second. */
  rateLimited: number;
  /** Bypasses removed because their address became a project member. */
  revoked: number;
}

/** Packets kept per address while it is classified (the engine reports up to 16 per second), and in all. */
const MAX_HELD_PER_ADDRESS = 16;
const MAX_HELD = 1024;
/** Addresses classified at once; further misses wait for their next report. */
const MAX_PENDING = 256;
/** Bypasses checked again per expire() call (the rest on the next calls). */
const EXPIRE_BATCH = 32;

interface Bypass {
  until: number;
  checking: boolean;
}

export class RouteMisses {
  private readonly bypasses = new Map<string, Bypass>();
  /** Addresses being classified, with the packets reported meanwhile (released together after a bypass). */
  private readonly pending = new Map<string, Uint8Array[]>();
  private buffered = 0;
  private stopped = false;
  private readonly max: number;
  private readonly perSecond: number;
  private windowStart = -Infinity;
  private windowCount = 0;
  /** Bumped by revoke(): a classification that began before it adds no bypass. */
  private generation = 0;
  readonly counters: RouteMissCounters = { misses: 0, outOfRange: 0, bypassed: 0, projectUnrouted: 0, undecided: 0, released: 0, heldDropped: 0, releaseErrors: 0, evicted: 0, rechecked: 0, errors: 0, busy: 0, rateLimited: 0, revoked: 0 };

  constructor(private readonly o: RouteMissOptions) {
    if (!Number.isFinite(o.holdMs) || o.holdMs <= 0) throw new RangeError('RouteMisses: holdMs must be > 0');
    this.max = o.maxBypasses ?? 4096;
    if (!Number.isInteger(this.max) || this.max < 1) throw new RangeError('RouteMisses: maxBypasses must be >= 1');
    this.perSecond = o.maxPerSecond ?? 200;
    if (!Number.isInteger(this.perSecond) || this.perSecond < 1) throw new RangeError('RouteMisses: maxPerSecond must be >= 1');
  }

  /** Counts a miss to classify against the per-second cap: false when over it. */
  private admit(): boolean {
    const now = this.o.now();
    if (now - this.windowStart >= 1000) {
      this.windowStart = now;
      this.windowCount = 0;
    }
    if (this.windowCount >= this.perSecond) return false;
    this.windowCount++;
    return true;
  }

  /**
   * Membership changed: removes at once every bypass whose address `isProject` now
   * claims (its next packet meets the range's tenc0 route), and makes classifications
   * under way add no bypass. Resolves when the routes are gone (never rejects).
   */
  async revoke(isProject: (address: string) => boolean): Promise<void> {
    this.generation++;
    const gone = [...this.bypasses.keys()].filter((cidr) => isProject(cidr.slice(0, cidr.lastIndexOf('/'))));
    await Promise.all(
      gone.map(async (cidr) => {
        try {
          await this.o.removeBypass(cidr);
          this.bypasses.delete(cidr);
          this.counters.revoked++;
        } catch (e) {
          this.fail('revoke', e);
        }
      }),
    );
  }

  /** Removes a bypass added while revoke() ran (the stale verdict's); on failure it stays tracked (expiry checks it again). */
  private async dropRevoked(cidr: string): Promise<void> {
    const b = this.bypasses.get(cidr);
    if (b) b.until = -Infinity; // due at the next expire() should the removal fail
    await this.o.removeBypass(cidr);
    if (this.bypasses.get(cidr) === b) this.bypasses.delete(cidr);
    this.counters.revoked++;
  }

  /** The addresses currently bypassed (host CIDRs). */
  list(): string[] {
    return [...this.bypasses.keys()];
  }

  /** One route_miss event. Resolves when it is handled (never rejects). */
  async miss(destination: string, packet: Uint8Array | null): Promise<void> {
    if (!this.o.inRange(destination)) {
      this.counters.outOfRange++;
      packet?.fill(0);
      return;
    }
    this.counters.misses++;
    const cidr = hostCidr(destination);
    if (this.stopped) {
      packet?.fill(0);
      return;
    }
    // a bypass in place (its packet raced the route): release; a classification under way: wait with it
    if (this.bypasses.has(cidr)) {
      if (this.o.hasBypass(cidr)) return this.releaseNow(packet);
      this.bypasses.delete(cidr); // a tunnel route took its place and may have gone again: classify afresh
    }
    const waiting = this.pending.get(cidr);
    if (waiting) {
      this.hold(waiting, packet);
      return;
    }
    if (!this.admit()) {
      this.counters.rateLimited++;
      packet?.fill(0);
      return;
    }
    if (this.pending.size >= MAX_PENDING) {
      // a scan of the ranges: bounded work; the address is reported again within a second
      this.counters.busy++;
      packet?.fill(0);
      return;
    }
    const held: Uint8Array[] = [];
    this.hold(held, packet);
    this.pending.set(cidr, held);
    let bypassed = false;
    const generation = this.generation;
    try {
      const v = await this.o.classify(destination);
      if (v.verdict === 'project') this.counters.projectUnrouted++;
      else if (v.reason === 'lookup-failed') this.counters.undecided++;
      else if (!this.stopped && generation === this.generation) {
        bypassed = await this.add(cidr);
        // revoke() ran while the route went in: it could not see this bypass yet, so it goes now
        if (bypassed && generation !== this.generation) {
          bypassed = false;
          await this.dropRevoked(cidr);
        }
      }
    } catch (e) {
      this.fail('miss', e);
    } finally {
      this.pending.delete(cidr);
      this.buffered -= held.length;
      for (const p of held) {
        if (bypassed && !this.stopped) this.releaseNow(p);
        else p.fill(0);
      }
    }
  }

  /** Keeps a reported packet until its address is classified (bounded: beyond it the packet is dropped). */
  private hold(list: Uint8Array[], packet: Uint8Array | null): void {
    if (packet === null || packet.length === 0) return;
    if (list.length >= MAX_HELD_PER_ADDRESS || this.buffered >= MAX_HELD) {
      this.counters.heldDropped++;
      packet.fill(0);
      return;
    }
    list.push(packet);
    this.buffered++;
  }

  private async add(cidr: string): Promise<boolean> {
    while (this.bypasses.size >= this.max) {
      const oldest = this.bypasses.keys().next().value!;
      const b = this.bypasses.get(oldest)!;
      this.bypasses.delete(oldest);
      try {
        await this.o.removeBypass(oldest);
      } catch (e) {
        this.bypasses.set(oldest, b); // still installed: keep tracking it, add nothing
        throw e;
      }
      this.counters.evicted++;
    }
    if (!(await this.o.addBypass(cidr))) return false;
    this.bypasses.set(cidr, { until: this.o.now() + this.o.holdMs, checking: false });
    this.counters.bypassed++;
    return true;
  }

  private releaseNow(packet: Uint8Array | null): void {
    if (packet === null || packet.length === 0) return;
    try {
      this.o.release(packet);
      this.counters.released++;
    } catch (e) {
      this.counters.releaseErrors++;
      this.o.onError?.('release', e);
    }
    packet.fill(0);
  }

  /** Classifies expired bypasses again (at most 32 per call): kept while still not project, else removed. */
  async expire(): Promise<void> {
    if (this.stopped) return;
    const now = this.o.now();
    const taken: string[] = [];
    for (const [cidr] of this.bypasses)
      if (!this.o.hasBypass(cidr)) {
        this.bypasses.delete(cidr); // taken over by a tunnel route
        taken.push(cidr);
      }
    for (const cidr of taken) {
      try {
        await this.o.forgetBypass?.(cidr);
      } catch (e) {
        this.fail('expire', e);
      }
    }
    const due = [...this.bypasses].filter(([, b]) => b.until <= now && !b.checking).slice(0, EXPIRE_BATCH);
    await Promise.all(
      due.map(async ([cidr, b]) => {
        b.checking = true;
        try {
          const generation = this.generation;
          const v = await this.o.classify(cidr.slice(0, cidr.lastIndexOf('/')));
          this.counters.rechecked++;
          if (this.bypasses.get(cidr) !== b) return; // evicted or removed meanwhile
          if (v.verdict !== 'project' && generation === this.generation) {
            // kept while not project; a failed lookup keeps it too and is asked again soon
            b.until = this.o.now() + (v.reason === 'lookup-failed' ? Math.min(this.o.holdMs, 2000) : this.o.holdMs);
            return;
          }
          await this.o.removeBypass(cidr);
          if (this.bypasses.get(cidr) === b) this.bypasses.delete(cidr); // only once it is gone
        } catch (e) {
          this.fail('expire', e);
          b.until = this.o.now() + this.o.holdMs; // try again later; never cut a flow on an error
        } finally {
          b.checking = false;
        }
      }),
    );
  }

  /**
   * Stops: later misses are wiped and ignored, classifications under way add no
   * bypass and release nothing. The routing teardown removes the routes themselves.
   */
  stop(): void {
    this.stopped = true;
    this.bypasses.clear();
  }

  private fail(what: string, e: unknown): void {
    this.counters.errors++;
    this.o.onError?.(what, e);
  }
}
