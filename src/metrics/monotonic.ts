/**
 * Counters that never go backwards while a pod process lives. A pod's counters come
 * from its engine, and a few of them can drop while the process runs on: a peer
 * removed and set again (same key) starts its byte counters at 0, and a peer moving
 * between a series of its own and peer="_other" (only above MAX_PEERS_PER_POD
 * peers) lowers the sum it left. The guard remembers each counter series' last
 * value per pod process (its start time, the epoch) and, when a value is lower than
 * the last, adds the last to an offset kept for the series, as Prometheus's
 * rate() would take a reset: what is exported only grows.
 *
 * A new epoch (the pod restarted: a new process, a new key) drops the offsets: the
 * series restart at the engine's values, which Prometheus sees as one counter reset,
 * and tenc_pod_start_time_seconds changes with it. State is per exporter: an agent
 * restart forgets the offsets (a series that had one is then seen as reset once).
 *
 * Bounded: a series unseen for KEEP_SCRAPES scrapes is forgotten, and past
 * MAX_SERIES remembered series the longest remembered are dropped first.
 */

/** Scrapes a series may miss (its pod not answering, its peer gone) before it is forgotten. */
export const KEEP_SCRAPES = 20;
/** Remembered series at most (1,000 pods of 64 peers: 128,000 peer series, plus reasons). */
export const MAX_SERIES = 500_000;

interface Entry {
  epoch: number;
  last: number;
  offset: number;
  seen: number;
}

export class CounterGuard {
  private readonly series = new Map<string, Entry>();
  private scrape = 0;

  /** Starts a scrape (call before the first value() of it). */
  begin(): void {
    this.scrape++;
  }

  /** The value to export for the counter series `key` of a pod process started at `epoch`. */
  value(key: string, epoch: number, raw: number): number {
    const e = this.series.get(key);
    if (e === undefined || e.epoch !== epoch) {
      if (e !== undefined) this.series.delete(key); // re-inserted at the end: the Map's order is first-remembered first
      this.series.set(key, { epoch, last: raw, offset: 0, seen: this.scrape });
      return raw;
    }
    if (raw < e.last) e.offset += e.last;
    e.last = raw;
    e.seen = this.scrape;
    return raw + e.offset;
  }

  /** Ends a scrape: forgets the series unseen for KEEP_SCRAPES scrapes, and the longest remembered beyond MAX_SERIES. */
  end(): void {
    let over = this.series.size - MAX_SERIES;
    for (const [k, e] of this.series) {
      if (over > 0) {
        this.series.delete(k);
        over--;
      } else if (this.scrape - e.seen >= KEEP_SCRAPES) this.series.delete(k);
    }
  }

  /** Series remembered now. */
  get size(): number {
    return this.series.size;
  }
}
