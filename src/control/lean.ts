/**
 * Lean mode: V8 tuned for an idle `tenc pod` until the pod gets busy.
 *
 * An idle pod proxy runs little JavaScript (timers, a handshake every two minutes,
 * the odd control request). Two V8 defaults cost it memory all the same:
 *   - TurboFan: its first compilation pages in about 4 MiB of the node binary's
 *     code, and its zones, allocated on V8's worker threads, stay in malloc arenas;
 *   - the young generation grows from 1 to 8 MiB during the start's allocations and
 *     is given back only by the memory reducer, 10-30 s later and in steps.
 * Busy JavaScript needs both: the DNS proxy answered about 30% fewer queries per
 * second without TurboFan (bench dns with node --no-opt). So:
 *
 *   1. enterLeanMode(): first thing in the process (src/cli/main.ts), before the
 *      modules load: v8.setFlagsFromString('--no-opt') (the interpreter and the
 *      baseline compiler Sparkplug run the code) and '--semi-space-growth-factor=1'.
 *   2. watchLoad(): once a second the event loop utilization (perf_hooks) of the
 *      last second; `periods` (default 3) seconds in a row at least `busy` (default
 *      10%) busy leave lean mode for good: '--opt' and the default growth factor 2.
 *      Hot functions are optimized from then on. One busy second (the start, a burst
 *      of set-peer calls; an interpreted handshake takes 5-8 ms) is not load that
 *      TurboFan would pay off.
 *
 * Only flags V8 reads at each decision are set this way (tier-up, new space growth).
 * Heap limits and threads are fixed when the isolate is created: --max-semi-space-size
 * set here has no effect and --single-threaded aborts node (both measured).
 *
 *   3. settleIdleMemory(): once, `delayMs` (default 2000) after 'pod running' (called
 *      by pod.ts), the addon's idleMemorySettle (native/idlemem.cc): V8's
 *      memory-reducing collection (compacts old space, shrinks the young generation,
 *      unmaps free pages) and malloc_trim(0). The start leaves about 3 MiB of V8
 *      pages and malloc memory that V8's own memory reducer gives back only 10-30 s
 *      later; a node starting many pods at once holds it for all of them (README
 *      "density"). 10-45 ms of the event loop (measured), once. TENC_IDLE_SETTLE=0: never.
 */
import { setFlagsFromString } from 'node:v8';
import { performance, type EventLoopUtilization } from 'node:perf_hooks';

/** TENC_IDLE_SETTLE=0 turns settleIdleMemory off. */
export function idleSettleEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.TENC_IDLE_SETTLE !== '0';
}

export interface IdleSettle {
  /** ms the collection and the trim took. */
  ms: number;
  /** Whether malloc_trim gave memory back. */
  trimmed: boolean;
  /** Resident set size before and after, bytes. */
  rssBefore: number;
  rssAfter: number;
}

/**
 * Once, after `delayMs`: V8's memory-reducing collection and malloc_trim (see the
 * header, 3). `settle` is the addon's idleMemorySettle (loaded on first use, when the
 * pod's modules have long loaded it); tests pass their own. Does nothing when
 * TENC_IDLE_SETTLE=0. The timer does not keep the process alive; stop() cancels it.
 * A failure (the addon's call, its import) goes to onError, never to an unhandled
 * rejection: in a pod host that would end every pod of the host.
 */
export function settleIdleMemory(
  opts: { delayMs?: number; onSettled?: (r: IdleSettle) => void; onError?: (e: unknown) => void; settle?: () => { ms: number; trimmed: boolean }; env?: NodeJS.ProcessEnv } = {},
): { stop(): void } {
  const delayMs = opts.delayMs ?? 2000;
  if (typeof delayMs !== 'number' || !(delayMs >= 0 && delayMs <= 600_000)) throw new RangeError(`settleIdleMemory: delayMs must be 0..600000, got ${delayMs}`);
  if (!idleSettleEnabled(opts.env)) return { stop: () => {} };
  let stopped = false;
  const timer = setTimeout(() => {
    void (async () => {
      const settle = opts.settle ?? ((await import('../native.js')).addon.idleMemorySettle as () => { ms: number; trimmed: boolean });
      if (stopped) return;
      const rssBefore = process.memoryUsage.rss();
      const r = settle();
      opts.onSettled?.({ ms: r.ms, trimmed: r.trimmed, rssBefore, rssAfter: process.memoryUsage.rss() });
    })().catch((e: unknown) => opts.onError?.(e));
  }, delayMs);
  timer.unref();
  return {
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

/** default: never entered (tests, other commands); lean; busy: left for good. */
export type LeanState = 'default' | 'lean' | 'busy';

/**
 * The state is the process's, not this module's: main.ts enters lean mode from
 * dist/src before the pod bundle (cli/pod-bundle.ts) loads its own copy of this file.
 */
/** How the pod bundle was compiled (src/cli/pod-bundle.ts): said in the `pod running` record. */
export type CodeCacheState = 'used' | 'rejected' | 'stale' | 'none';
const CODE_CACHE = Symbol.for('tenc.codeCache');

/** Per process like the lean state: the bundle's own copy of this module must see what main.ts's set. */
export function setCodeCacheState(s: CodeCacheState): void {
  (globalThis as unknown as { [CODE_CACHE]?: CodeCacheState })[CODE_CACHE] = s;
}

/** 'none' also when dist/src runs (no bundle). */
export function codeCacheState(): CodeCacheState {
  return (globalThis as unknown as { [CODE_CACHE]?: CodeCacheState })[CODE_CACHE] ?? 'none';
}

const STATE = Symbol.for('tenc.leanState');
const slot = globalThis as unknown as { [STATE]?: LeanState };

export function leanState(): LeanState {
  return slot[STATE] ?? 'default';
}

/** TurboFan off and no young-generation growth for this process (see the header). */
export function enterLeanMode(): void {
  if (leanState() !== 'default') return;
  setFlagsFromString('--no-opt');
  setFlagsFromString('--semi-space-growth-factor=1');
  slot[STATE] = 'lean';
}

/** V8's defaults back (no-op unless lean). */
export function leaveLeanMode(): void {
  if (leanState() !== 'lean') return;
  setFlagsFromString('--opt');
  setFlagsFromString('--semi-space-growth-factor=2');
  slot[STATE] = 'busy';
}

export interface LoadWatchOptions {
  /** Sampling period, ms (default 1000). */
  intervalMs?: number;
  /** Event loop utilization over one period, 0..1, that counts as busy (default 0.1). */
  busy?: number;
  /** Busy periods in a row that end lean mode (default 3). */
  periods?: number;
  /** Called once when lean mode ends, with the utilization of the last period. */
  onBusy?: (utilization: number) => void;
}

export interface LoadWatch {
  stop(): void;
}

/** Ends lean mode when the event loop is busy (see the header); does nothing unless lean. */
export function watchLoad(opts: LoadWatchOptions = {}): LoadWatch {
  const intervalMs = opts.intervalMs ?? 1000;
  const busy = opts.busy ?? 0.1;
  const periods = opts.periods ?? 3;
  for (const [k, v] of [['intervalMs', intervalMs], ['busy', busy], ['periods', periods]] as const) {
    if (typeof v !== 'number') throw new TypeError(`watchLoad: ${k} must be a number`);
  }
  if (!(intervalMs >= 10 && intervalMs <= 60_000)) throw new RangeError(`watchLoad: intervalMs must be 10..60000, got ${intervalMs}`);
  if (!(busy > 0 && busy <= 1)) throw new RangeError(`watchLoad: busy must be in (0, 1], got ${busy}`);
  if (!(Number.isInteger(periods) && periods >= 1 && periods <= 60)) throw new RangeError(`watchLoad: periods must be an integer 1..60, got ${periods}`);
  if (leanState() !== 'lean') return { stop: () => {} };
  let last: EventLoopUtilization = performance.eventLoopUtilization();
  let inARow = 0;
  const timer = setInterval(() => {
    if (leanState() !== 'lean') return void clearInterval(timer);
    const now = performance.eventLoopUtilization();
    const u = performance.eventLoopUtilization(now, last).utilization;
    last = now;
    inARow = u >= busy ? inARow + 1 : 0;
    if (inARow < periods) return;
    clearInterval(timer);
    leaveLeanMode();
    opts.onBusy?.(u);
  }, intervalMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
