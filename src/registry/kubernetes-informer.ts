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
 *     once, and never reaches the cache.
 */
import { ADD, DELETE, ERROR, ListWatch, UPDATE, Watch, type KubeConfig, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';

export interface InformerLog {
  warn(fields: Record<string, unknown>, msg: string): void;
  info(fields: Record<string, unknown>, msg: string): void;
}

export interface InformerOptions {
  /** Server-side limit of one watch request (the API server closes it after this); default 240 s, jittered. */
  timeoutSeconds?: number;
  /** Abort a watch that has sent nothing for this long (default timeoutSeconds + 30 s). */
  idleMs?: number;
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

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref?.());

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

  async watch(path: string, query: Record<string, unknown>, cb: (phase: string, obj: any, raw: any) => void, done: (err: any) => void): Promise<AbortController> {
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
      // a watch that carried data, or lived a while, was healthy: the back-off after
      // its end starts again from the bottom (a watch dropped every few seconds must not
      // climb to the 30 s ceiling and miss changes for that long)
      if (gotData || Date.now() - started >= HEALTHY_WATCH_MS) this.inf.healthy();
      if (this.current === ctl) this.current = null;
      if ((err as { statusCode?: number } | null)?.statusCode === 410) this.inf.expired++;
      if (!this.closed) done(err);
    };
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        const e = new Error(`no data for ${this.o.idleMs} ms`);
        e.name = 'WatchIdle';
        ctl?.abort();
        finish(e);
      }, this.o.idleMs);
      idle.unref?.();
    };
    arm();
    // jittered, so the watches of many agents do not all end at once
    const timeoutSeconds = Math.max(1, Math.round(this.o.timeoutSeconds * (0.75 + Math.random() * 0.25)));
    ctl = await this.inner.watch(
      path,
      { ...query, allowWatchBookmarks: true, timeoutSeconds },
      (phase, obj, raw) => {
        arm();
        gotData = true;
        if (phase === 'ERROR') {
          const code = (obj as { code?: number })?.code;
          if (code !== 410) this.inf.problem(`watch ERROR event ${code ?? '?'}`, (obj as { message?: string })?.message ?? '');
          else this.inf.expired++;
        } else if (phase !== 'BOOKMARK' && typeof (obj as KubernetesObject)?.metadata?.name !== 'string') {
          this.inf.problem('malformed object', `a ${phase} event without metadata.name: dropped`);
          return;
        }
        cb(phase, obj, raw);
      },
      finish,
    );
    if (finished) return ctl;
    this.current = ctl;
    return ctl;
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
  private readonly syncWaiters: { ok: () => void; fail: (e: Error) => void }[] = [];
  /** Counters, for tests and status. */
  lists = 0;
  expired = 0;
  errors = 0;
  lastError = '';

  constructor(
    readonly what: string,
    kc: KubeConfig,
    path: string,
    listFn: () => Promise<KubernetesListObject<T>>,
    onEvent: (obj: T) => void,
    private readonly log: InformerLog,
    o: InformerOptions = {},
  ) {
    const timeoutSeconds = o.timeoutSeconds ?? 240;
    this.gw = new GuardedWatch(kc, this as Informer<KubernetesObject>, {
      timeoutSeconds,
      idleMs: o.idleMs ?? (timeoutSeconds + 30) * 1000,
      minWatchGapMs: o.minWatchGapMs ?? 200,
    });
    const counted = async () => {
      const l = await listFn();
      this.lists++;
      this.failures = 0;
      if (!this.syncedOnce) {
        this.syncedOnce = true;
        for (const w of this.syncWaiters.splice(0)) w.ok();
      }
      return l;
    };
    this.lw = new ListWatch<T>(path, this.gw as unknown as Watch, counted, false, o.labelSelector);
    for (const verb of [ADD, UPDATE, DELETE] as const) this.lw.on(verb, (obj: T) => onEvent(obj));
    this.lw.on(ERROR, (err: unknown) => this.failed(err, o));
  }

  start(): void {
    void this.lw.start().catch((e) => this.failed(e, {}));
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

  private failed(err: unknown, o: InformerOptions): void {
    if (this.stopped) return;
    this.errors++;
    const kind = errorKind(err);
    this.lastError = `${kind}: ${(err as Error)?.message ?? String(err)}`;
    this.problem(kind, `${(err as Error)?.message ?? String(err)}; retrying with back-off`);
    const base = o.backoffMs ?? 250;
    const max = o.backoffMaxMs ?? 30_000;
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

  /** Resolves after the first successful list; rejects after ms. */
  waitSynced(ms: number): Promise<void> {
    if (this.syncedOnce) return Promise.resolve();
    if (this.stopped) return Promise.reject(new Error(`kubernetes ${this.what}: registry closed`));
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`kubernetes ${this.what}: not listed yet after ${ms} ms${this.lastError ? ` (last error: ${this.lastError})` : ''}`)), ms);
      this.syncWaiters.push({
        ok: () => {
          clearTimeout(t);
          resolve();
        },
        fail: (e) => {
          clearTimeout(t);
          reject(e);
        },
      });
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
    for (const w of this.syncWaiters.splice(0)) w.fail(new Error(`kubernetes ${this.what}: registry closed`));
  }
}
