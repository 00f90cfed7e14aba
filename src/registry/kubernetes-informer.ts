/**
 * One list+watch cache of one resource (an informer), on the client's ListWatch
 * (@kubernetes/client-node 1.4), with what that ListWatch leaves out put around it.
 *
 * What client-node 1.4 does by itself (read in node_modules/.../dist/cache.js, watch.js):
 *   - lists, then watches from the list's resourceVersion; a watch that ends
 *     without error re-watches from the last resourceVersion it saw (events and
 *     BOOKMARKs both advance it): resumes, nothing lost;
 *   - a 410 Gone (HTTP status of the watch, or an ERROR event with code 410)
 *     clears the resourceVersion, so the next round relists, and the relist
 *     reports objects deleted meanwhile as deletions.
 * Where it falls short, and what this file does about it:
 *   - any other error (connection refused or reset, 5xx, 403, a failed list)
 *     reaches the ERROR callbacks and the ListWatch STOPS for good: here it is
 *     restarted after an exponential back-off with full jitter (start() resumes
 *     from the last resourceVersion, or relists when there is none), and each
 *     kind of error is logged once, not once per retry;
 *   - Watch.watch() builds a 30 s timeout signal and then overwrites it, so a
 *     connection that goes silent (a half-open TCP connection, a hung server)
 *     hangs forever: here the watch asks for timeoutSeconds and
 *     allowWatchBookmarks, and an idle timer aborts a watch that has sent
 *     nothing for longer than that (then resumes as above);
 *   - a watch that the server ends at once, again and again, re-watches in a
 *     hot loop: here a watch starts at most once per minWatchGapMs; the back-off
 *     grows only while watches fail at once (one that carried an event or a
 *     BOOKMARK, or lasted a second, resets it: a connection dropped every few
 *     seconds is retried within backoffMs, not after up to backoffMaxMs);
 *   - an event whose object has no metadata.name is dropped silently (the
 *     exception is swallowed by its line parser): here it is dropped and logged
 *     once, and never reaches the cache;
 *   - an event with no object at all ({"type":"BOOKMARK"}, an ERROR with a null
 *     object) makes its async event handler reject, and nothing catches that
 *     (Node exits on an unhandled rejection): here such events are dropped and
 *     logged once, and a handler or re-watch that fails anyway (a throwing
 *     listener; Watch.watch rejecting when the kubeconfig's exec plugin fails)
 *     ends the watch as an error: retried with back-off like the others;
 *   - a watch whose response headers arrive after it was given up (idle timer)
 *     or after stop() would still feed the cache, next to its replacement (an
 *     older MODIFIED could bring back a deleted object): here it is aborted as
 *     it arrives, and no event of a finished watch reaches the cache.
 */
import { ADD, DELETE, ERROR, ListWatch, UPDATE, Watch, type KubeConfig, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';

export interface InformerLog {
  warn(fields: Record<string, unknown>, msg: string): void;
  info(fields: Record<string, unknown>, msg: string): void;
}

export interface InformerOptions {
  /** Server-side limit of one watch request (the API server closes it after this); default 240 s, jittered. */
  timeoutSeconds?: number;
  /**
   * Abort a watch that has sent nothing for this long (default IDLE_MS, 90 s, or
   * timeoutSeconds + 30 s if shorter): with allowWatchBookmarks the API server sends a
   * BOOKMARK about once a minute, so a watch silent for longer is on a dead connection.
   */
  idleMs?: number;
  /**
   * An informer whose lists or watches have kept failing this long is no longer current
   * (default STALE_AFTER_MS, 120 s): the health file then says synced: false.
   */
  staleAfterMs?: number;
  /** First back-off after an error (default 250 ms), doubling up to backoffMaxMs (default 30 s), full jitter. */
  backoffMs?: number;
  backoffMaxMs?: number;
  /** At most one watch start per this many ms (default 200). */
  minWatchGapMs?: number;
  labelSelector?: string;
}

/** Kinds of error, for "logged once per kind". */
export function errorKind(e: unknown): string {
  const o = e as { statusCode?: number; code?: number | string; name?: string; message?: string } | null;
  if (o && typeof o.statusCode === 'number') return `HTTP ${o.statusCode}`;
  if (o && typeof o.code === 'number') return `HTTP ${o.code}`;
  if (o && typeof o.code === 'string') return o.code;
  if (o && o.name && o.name !== 'Error') return o.name;
  return (o?.message ?? String(e)).slice(0, 80);
}

/** A watch that lasted this long before it ended counts as healthy (back-off reset). */
const HEALTHY_WATCH_MS = 1000;
/** Default idle limit of a watch: the API server sends a BOOKMARK about every minute (bookmarkFrequency). */
export const IDLE_MS = 90_000;
/** Default time the list or watch may keep failing before the informer is not current. */
export const STALE_AFTER_MS = 120_000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref?.());

/** The event types of a watch (API reference, WatchEvent); anything else is dropped. */
const PHASES = new Set(['ADDED', 'MODIFIED', 'DELETED', 'BOOKMARK', 'ERROR']);

/**
 * An API error as one stable line: "HTTP 404: <the Status message>", else the message.
 * Not ApiException's own message: that one carries the response headers (a Date among
 * them), so it differs at every retry and "log when it changes" would log every time.
 */
export function describeError(e: unknown): string {
  const o = e as { code?: number; body?: unknown; message?: string } | null;
  if (typeof o?.code === 'number') {
    let msg = '';
    try {
      const b = typeof o.body === 'string' ? JSON.parse(o.body) : o.body;
      msg = (b as { message?: string })?.message ?? '';
    } catch {
      /* not JSON */
    }
    return `HTTP ${o.code}${msg ? `: ${msg}` : ''}`;
  }
  return o?.message ?? String(e);
}

/**
 * The Watch handed to ListWatch: the client's Watch plus timeoutSeconds,
 * bookmarks, an idle timer, a minimum gap between starts and a name check.
 */
class GuardedWatch {
  private readonly inner: Watch;
  private lastStart = 0;
  closed = false;
  current: AbortController | null = null;
  constructor(
    kc: KubeConfig,
    private readonly inf: Informer<KubernetesObject>,
    private readonly o: Required<Pick<InformerOptions, 'timeoutSeconds' | 'idleMs' | 'minWatchGapMs'>>,
  ) {
    this.inner = new Watch(kc);
  }

  /** Never rejects: a watch that cannot start ends through done(err), as one that breaks. */
  async watch(path: string, query: Record<string, unknown>, cb: (phase: string, obj: any, raw: any) => unknown, done: (err: any) => unknown): Promise<AbortController> {
    this.inf.listed();
    const gap = this.lastStart + this.o.minWatchGapMs - Date.now();
    if (gap > 0) await sleep(gap);
    this.lastStart = Date.now();
    if (this.closed) return new AbortController(); // stopped meanwhile: never calls done
    let finished = false;
    let idle: NodeJS.Timeout | undefined;
    let ctl: AbortController | null = null;
    let gotData = false;
    const started = Date.now();
    const finish = (err: unknown) => {
      if (finished) return;
      finished = true;
      clearTimeout(idle);
      ctl?.abort();
      // a watch that carried data, or lived a while, was healthy: the back-off after
      // its end starts again from the bottom (a watch dropped every few seconds must not
      // climb to the 30 s ceiling and miss changes for that long)
      if (gotData || Date.now() - started >= HEALTHY_WATCH_MS) this.inf.healthy();
      if (this.current === ctl) this.current = null;
      if ((err as { statusCode?: number } | null)?.statusCode === 410) this.inf.expired++;
      // ListWatch's done handler is async (it relists and watches again) and its callers
      // do not catch: a rejection there would be unhandled and leave the cache unwatched
      if (!this.closed) void Promise.resolve().then(() => done(err)).catch((e: unknown) => this.inf.failed(e));
    };
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        const e = new Error(`no data for ${this.o.idleMs} ms`);
        e.name = 'WatchIdle';
        finish(e);
      }, this.o.idleMs);
      idle.unref?.();
    };
    const event = (phase: unknown, obj: unknown, raw: unknown) => {
      // replaced (idle timer) or stopped while this watch's headers were on their way:
      // its events are older than what its replacement brings
      if (finished || this.closed) return;
      arm();
      if (typeof phase !== 'string' || !PHASES.has(phase)) {
        this.inf.drop('malformed event', `an event of type ${JSON.stringify(phase)?.slice(0, 40)}: dropped`);
        return;
      }
      if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
        // the client's handler reads obj.metadata / obj.code: it would reject, unhandled
        this.inf.drop('malformed event', `a ${phase} event whose object is ${obj === null ? 'null' : Array.isArray(obj) ? 'an array' : typeof obj}: dropped`);
        return;
      }
      if (phase === 'ERROR') {
        const code = (obj as { code?: number }).code;
        if (code !== 410) this.inf.problem(`watch ERROR event ${code ?? '?'}`, (obj as { message?: string }).message ?? '');
        else this.inf.expired++;
      } else if (phase !== 'BOOKMARK' && typeof (obj as KubernetesObject).metadata?.name !== 'string') {
        this.inf.drop('malformed object', `a ${phase} event without metadata.name: dropped`);
        return;
      }
      gotData = true;
      if (phase !== 'ERROR') this.inf.alive();
      // ListWatch's handler is async: what throws in it (or in a listener it calls) comes
      // back as a rejected promise; the watch then ends as failed and is retried
      const fail = (e: unknown) => {
        this.inf.problem(`${phase} event handler failed`, `${describeError(e)}; watching again`);
        finish(e);
      };
      try {
        const p = cb(phase, obj, raw);
        if (p instanceof Promise) p.catch(fail);
      } catch (e) {
        fail(e);
      }
    };
    arm();
    // jittered, so the watches of many agents do not all end at once
    const timeoutSeconds = Math.max(1, Math.round(this.o.timeoutSeconds * (0.75 + Math.random() * 0.25)));
    let c: AbortController;
    try {
      c = await this.inner.watch(path, { ...query, allowWatchBookmarks: true, timeoutSeconds }, event, finish);
    } catch (e) {
      // it did not start (the kubeconfig's exec plugin failed, no current cluster): an
      // error like a refused connection, retried with back-off
      finish(e);
      const dead = new AbortController();
      dead.abort();
      return dead;
    }
    ctl = c;
    if (finished || this.closed) {
      // given up (idle timer) or stopped while the headers were on their way: a late
      // answer must not run next to its replacement, or after close
      c.abort();
      finish(null);
      return c;
    }
    this.current = c;
    this.inf.alive(); // the API server answered the watch (200)
    return c;
  }
}

/**
 * A self-healing informer of one resource. `onEvent(obj)` after every add,
 * update or delete (a relist reports what changed meanwhile).
 */
export class Informer<T extends KubernetesObject> {
  private readonly lw: ListWatch<T>;
  private readonly gw: GuardedWatch;
  private readonly seen = new Set<string>();
  private failures = 0;
  private retry: NodeJS.Timeout | undefined;
  private stopped = false;
  private syncedOnce = false;
  /** Since when the lists or watches fail without one that worked (null: working). */
  private failingSince: number | null = null;
  private readonly staleAfterMs: number;
  /** Why the last list failed, while the informer has never listed (else null). */
  private listFailure: unknown = null;
  private readonly syncWaiters = new Set<{ failFast: boolean; ok: () => void; fail: (e: Error) => void }>();
  /** Counters, for tests and status. */
  lists = 0;
  expired = 0;
  errors = 0;
  /** Events dropped as malformed (no object, no metadata.name, an unknown type). */
  dropped = 0;
  lastError = '';

  constructor(
    readonly what: string,
    kc: KubeConfig,
    path: string,
    listFn: () => Promise<KubernetesListObject<T>>,
    onEvent: (obj: T) => void,
    private readonly log: InformerLog,
    private readonly o: InformerOptions = {},
  ) {
    const timeoutSeconds = o.timeoutSeconds ?? 240;
    this.gw = new GuardedWatch(kc, this as Informer<KubernetesObject>, {
      timeoutSeconds,
      idleMs: o.idleMs ?? Math.min((timeoutSeconds + 30) * 1000, IDLE_MS),
      minWatchGapMs: o.minWatchGapMs ?? 200,
    });
    this.staleAfterMs = o.staleAfterMs ?? STALE_AFTER_MS;
    const counted = async () => {
      const l = await listFn();
      this.lists++;
      this.failures = 0;
      this.alive();
      return l;
    };
    this.lw = new ListWatch<T>(path, this.gw as unknown as Watch, counted, false, o.labelSelector);
    for (const verb of [ADD, UPDATE, DELETE] as const) this.lw.on(verb, (obj: T) => onEvent(obj));
    this.lw.on(ERROR, (err: unknown) => this.failed(err));
  }

  start(): void {
    void this.lw.start().catch((e) => this.failed(e));
  }

  /**
   * Called as a watch starts. The first one starts in the same synchronous step in which
   * ListWatch stored the first list's items: readers released here see them (released
   * when listFn returns, as before, a reader could run before the items were stored and
   * see an empty cache).
   */
  listed(): void {
    if (this.syncedOnce) return;
    this.syncedOnce = true;
    this.listFailure = null;
    for (const w of [...this.syncWaiters]) w.ok();
  }

  /** A list or a watch answered: the informer is working (current again). */
  alive(): void {
    this.failingSince = null;
  }

  /** A watch worked (carried data or lived a while): the next error backs off from the start again. */
  healthy(): void {
    this.failures = 0;
  }

  /** Logs a problem once per kind (what + kind). */
  problem(kind: string, detail: string): void {
    const key = `${kind}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.log.warn({ resource: this.what, problem: kind, detail }, `kubernetes ${this.what}: ${kind}${detail ? `: ${detail}` : ''} (logged once)`);
  }

  /** An event dropped as malformed: counted, logged once per kind. */
  drop(kind: string, detail: string): void {
    this.dropped++;
    this.problem(kind, detail);
  }

  /** The list or watch failed (or could not start): restarted after a back-off with full jitter. */
  failed(err: unknown): void {
    if (this.stopped) return;
    this.errors++;
    this.failingSince ??= Date.now();
    const kind = errorKind(err);
    const msg = (err as Error)?.message ?? String(err);
    this.lastError = `${kind}: ${msg}`;
    this.problem(kind, kind === msg ? 'retrying with back-off' : `${msg}; retrying with back-off`); // a kind that is the message: said once
    if (!this.syncedOnce) {
      // nothing is watched before the first list: this is a list that failed
      this.listFailure = err;
      for (const w of [...this.syncWaiters]) if (w.failFast) w.fail(this.notListed(err));
    }
    const base = this.o.backoffMs ?? 250;
    const max = this.o.backoffMaxMs ?? 30_000;
    const ceiling = Math.min(max, base * 2 ** Math.min(this.failures, 20));
    this.failures++;
    const delay = Math.random() * ceiling; // full jitter
    clearTimeout(this.retry);
    this.retry = setTimeout(() => {
      if (!this.stopped) this.start();
    }, delay);
    this.retry.unref?.();
  }

  get synced(): boolean {
    return this.syncedOnce;
  }

  /**
   * Listed once, and its lists or watches have not kept failing for staleAfterMs: the
   * cache follows the API server (a cache whose watch fails for hours is not current,
   * though every read still serves it).
   */
  get current(): boolean {
    return this.syncedOnce && (this.failingSince === null || Date.now() - this.failingSince < this.staleAfterMs);
  }

  /** Sync waiters pending (tests: a timed-out or failed one is not kept). */
  get waiting(): number {
    return this.syncWaiters.size;
  }

  private notListed(err: unknown): Error {
    return new Error(`kubernetes ${this.what}: cannot list: ${describeError(err)}`, { cause: err });
  }

  /**
   * Resolves after the first successful list; rejects after ms. With failFast, rejects
   * at once while the last list failed (and when a list fails meanwhile): for a read
   * the caller can do without, of a resource that may not exist (a CRD not installed
   * answers 404 at every retry, and would cost every read the whole wait).
   */
  waitSynced(ms: number, o: { failFast?: boolean } = {}): Promise<void> {
    if (this.syncedOnce) return Promise.resolve();
    if (this.stopped) return Promise.reject(new Error(`kubernetes ${this.what}: registry closed`));
    if (o.failFast && this.listFailure !== null) return Promise.reject(this.notListed(this.listFailure));
    return new Promise((resolve, reject) => {
      const w = {
        failFast: o.failFast === true,
        ok: () => {
          clearTimeout(t);
          this.syncWaiters.delete(w);
          resolve();
        },
        fail: (e: Error) => {
          clearTimeout(t);
          this.syncWaiters.delete(w);
          reject(e);
        },
      };
      const t = setTimeout(() => w.fail(new Error(`kubernetes ${this.what}: not listed yet after ${ms} ms${this.lastError ? ` (last error: ${this.lastError})` : ''}`)), ms);
      this.syncWaiters.add(w);
    });
  }

  list(namespace?: string): readonly T[] {
    return this.lw.list(namespace);
  }

  get(name: string, namespace?: string): T | undefined {
    return this.lw.get(name, namespace);
  }

  /** The resourceVersion the cache is at. */
  resourceVersion(): string {
    return this.lw.latestResourceVersion();
  }

  stop(): void {
    this.stopped = true;
    this.gw.closed = true;
    clearTimeout(this.retry);
    this.gw.current?.abort();
    void this.lw.stop();
    for (const w of [...this.syncWaiters]) w.fail(new Error(`kubernetes ${this.what}: registry closed`));
  }
}
