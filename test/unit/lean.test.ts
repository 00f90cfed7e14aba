/**
 * src/control/lean.ts: the V8 flags set at run time take effect, in a child node
 * (the test's own process keeps V8's defaults):
 *
 *   1. without lean mode a hot function is optimized by TurboFan (--trace-opt shows
 *      it): the check below can see an optimization at all
 *   2. in lean mode it is not; after leaveLeanMode() it is
 *   3. watchLoad: an idle event loop keeps lean mode; `periods` busy periods in a
 *      row end it, once; a watch stopped before that does nothing
 *   4. argument errors are typed; without lean mode watchLoad does nothing
 *   5. settleIdleMemory (the addon's idleMemorySettle, native/idlemem.cc): after 16 MiB
 *      of old-space garbage, the one settle leaves V8's committed heap smaller than a
 *      plain full gc() does; TENC_IDLE_SETTLE=0 and stop() mean it never runs
 *   6. a settle that fails reaches onError, never an unhandled rejection
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ensureBuilt, root } from '../build.js';
import { leanState, settleIdleMemory, watchLoad } from '../../src/control/lean.js';

const leanJs = pathToFileURL(join(root, 'dist', 'src', 'control', 'lean.js')).href;

/** Runs an ES module in a fresh node with --trace-opt; returns its stdout. */
function child(body: string, flags: string[] = ['--trace-opt']): string {
  const script = `import { enterLeanMode, leaveLeanMode, leanState, settleIdleMemory, watchLoad } from ${JSON.stringify(leanJs)};\n${body}`;
  const r = spawnSync(process.execPath, [...flags, '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`child exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

// A loop hot enough for TurboFan within a few milliseconds.
const HOT = `
function hotLoop(n) { let s = 0; for (let i = 0; i < n; i++) s = (s + i * 7) % 1000003; return s; }
const warm = () => { let t = 0; for (let i = 0; i < 3000; i++) t += hotLoop(1000); return t; };
`;

/** Whether --trace-opt reported hotLoop optimized in this part of the output. */
const optimized = (text: string): boolean => /completed (optimizing|compiling) .*hotLoop/.test(text);

beforeAll(() => {
  ensureBuilt();
}, 120_000);

describe('lean mode flags', () => {
  it('1. V8 defaults: the hot loop is optimized', () => {
    const out = child(`${HOT} warm(); console.log('END', leanState());`);
    expect(out).toContain('END default');
    expect(optimized(out)).toBe(true);
  });

  it('2. lean: not optimized; after leaveLeanMode: optimized', () => {
    const out = child(`${HOT}
      enterLeanMode();
      warm();
      console.log('MARK', leanState());
      leaveLeanMode();
      warm();
      console.log('END', leanState());`);
    const [during, after] = out.split(/^MARK lean$/m);
    expect(after, 'MARK line').toBeDefined();
    expect(optimized(during)).toBe(false);
    expect(after).toContain('END busy');
    expect(optimized(after)).toBe(true);
  });

  it('3. watchLoad: idle stays lean, busy periods in a row end it once', () => {
    const out = child(`
      enterLeanMode();
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      const spin = (ms) => { const end = performance.now() + ms; while (performance.now() < end); };
      // a stopped watch never ends lean mode
      const stopped = watchLoad({ intervalMs: 50, busy: 0.5, periods: 1, onBusy: () => console.log('STOPPED-WATCH-FIRED') });
      stopped.stop();
      let calls = 0;
      watchLoad({ intervalMs: 50, busy: 0.5, periods: 3, onBusy: (u) => { calls++; console.log('BUSY', u >= 0.5); } });
      await sleep(400);
      console.log('IDLE', leanState());
      // one busy period, then idle: not enough
      spin(60); await sleep(300);
      console.log('BLIP', leanState());
      // busy for many periods: 45 ms of work per 50 ms
      for (let i = 0; i < 20 && leanState() === 'lean'; i++) { spin(45); await sleep(5); }
      await sleep(200);
      console.log('END', leanState(), calls);`);
    expect(out).toContain('IDLE lean');
    expect(out).toContain('BLIP lean');
    expect(out).toContain('BUSY true');
    expect(out).toContain('END busy 1');
    expect(out).not.toContain('STOPPED-WATCH-FIRED');
  });

  it('4. typed argument errors; without lean mode watchLoad does nothing', () => {
    expect(() => watchLoad({ intervalMs: '1000' as unknown as number })).toThrow(TypeError);
    expect(() => watchLoad({ busy: 0 })).toThrow(RangeError);
    expect(() => watchLoad({ busy: 1.5 })).toThrow(RangeError);
    expect(() => watchLoad({ periods: 0 })).toThrow(RangeError);
    expect(() => watchLoad({ periods: 2.5 })).toThrow(RangeError);
    expect(() => watchLoad({ intervalMs: 5 })).toThrow(RangeError);
    // this process never entered lean mode: no timer, no callback
    let fired = false;
    const w = watchLoad({ intervalMs: 10, busy: 0.01, periods: 1, onBusy: () => (fired = true) });
    w.stop();
    expect(leanState()).toBe('default');
    expect(fired).toBe(false);
  });

  it('5. settleIdleMemory: gives back more than a full gc(); the switch and stop() keep it off', () => {
    const out = child(
      `
      import { getHeapStatistics } from 'node:v8';
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      let junk = [];
      for (let i = 0; i < 16 * 1024; i++) junk.push(new Array(120).fill(i)); // ~16 MiB, promoted to old space
      gc(); gc();
      junk = null;
      gc();
      const afterGc = getHeapStatistics().total_heap_size;
      const off = settleIdleMemory({ delayMs: 0, env: { TENC_IDLE_SETTLE: '0' }, onSettled: () => console.log('OFF-FIRED') });
      const stopped = settleIdleMemory({ delayMs: 0, onSettled: () => console.log('STOPPED-FIRED') });
      stopped.stop();
      let r;
      settleIdleMemory({ delayMs: 10, onSettled: (x) => (r = x) });
      for (let i = 0; i < 300 && !r; i++) await sleep(10);
      const afterSettle = getHeapStatistics().total_heap_size;
      console.log('R', JSON.stringify(r));
      console.log('HEAP', afterGc, afterSettle);`,
      ['--expose-gc'],
    );
    expect(out).not.toContain('OFF-FIRED');
    expect(out).not.toContain('STOPPED-FIRED');
    const r = JSON.parse(/^R (.*)$/m.exec(out)![1]) as { ms: number; trimmed: boolean; rssBefore: number; rssAfter: number };
    expect(r.ms).toBeGreaterThanOrEqual(0);
    expect(typeof r.trimmed).toBe('boolean');
    expect(r.rssBefore).toBeGreaterThan(0);
    expect(r.rssAfter).toBeGreaterThan(0);
    const [afterGc, afterSettle] = /^HEAP (\d+) (\d+)$/m.exec(out)!.slice(1).map(Number);
    console.log(`committed V8 heap: ${(afterGc / 2 ** 20).toFixed(1)} MiB after gc(), ${(afterSettle / 2 ** 20).toFixed(1)} MiB after the settle`);
    expect(afterSettle).toBeLessThan(afterGc);
    expect(() => settleIdleMemory({ delayMs: -1 })).toThrow(RangeError);
  });

  it('6. a settle that throws goes to onError, not to an unhandled rejection (which would end a pod host and all its pods)', () => {
    const out = child(
      `
      process.on('unhandledRejection', () => console.log('UNHANDLED'));
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      let err;
      settleIdleMemory({ delayMs: 0, settle: () => { throw new Error('no addon'); }, onError: (e) => (err = e) });
      for (let i = 0; i < 100 && !err; i++) await sleep(10);
      await sleep(20);
      console.log('ERR', String(err));`,
      [],
    );
    expect(out).not.toContain('UNHANDLED');
    expect(out).toContain('ERR Error: no addon');
  });
});
