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
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ensureBuilt, root } from '../build.js';
import { leanState, watchLoad } from '../../src/control/lean.js';

const leanJs = pathToFileURL(join(root, 'dist', 'src', 'control', 'lean.js')).href;

/** Runs an ES module in a fresh node with --trace-opt; returns its stdout. */
function child(body: string): string {
  const script = `import { enterLeanMode, leaveLeanMode, leanState, watchLoad } from ${JSON.stringify(leanJs)};\n${body}`;
  const r = spawnSync(process.execPath, ['--trace-opt', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
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
});
