/**
 * Replay window (WireGuard whitepaper §5.4.6, RFC 6479): the shared numbered table,
 * then properties the table cannot show (check is pure, commit re-checks, bad args),
 * then a randomized run against a plain set-based model of the same rule.
 */
import { describe, expect, it } from 'vitest';
import { REPLAY_TABLE, ReplayWindow } from '../../src/noise/replay.js';
import { REJECT_AFTER_MESSAGES, REPLAY_WINDOW_SIZE } from '../../src/wire/constants.js';

describe('replay window: numbered table', () => {
  const w = new ReplayWindow();
  for (const step of REPLAY_TABLE) {
    it(`#${step.n} ${step.counter} -> ${step.accept ? 'accept' : 'reject'} (${step.why})`, () => {
      const checked = w.check(step.counter);
      const committed = checked ? w.commit(step.counter) : false;
      expect(checked).toBe(step.accept);
      expect(committed).toBe(step.accept);
    });
  }
  it('table is numbered 1..n without gaps', () => {
    expect(REPLAY_TABLE.map((s) => s.n)).toEqual(REPLAY_TABLE.map((_, i) => i + 1));
  });
});

describe('replay window: check and commit', () => {
  it('check() changes nothing', () => {
    const w = new ReplayWindow();
    expect(w.check(10)).toBe(true);
    expect(w.check(10)).toBe(true);
    expect(w.greatest).toBe(-1n);
    expect(w.check(REPLAY_WINDOW_SIZE + 100)).toBe(true);
    expect(w.check(0)).toBe(true); // nothing committed, so 0 is still fine
  });

  it('commit() refuses what check() would refuse (two packets racing with one counter)', () => {
    const w = new ReplayWindow();
    expect(w.check(7)).toBe(true);
    expect(w.check(7)).toBe(true);
    expect(w.commit(7)).toBe(true);
    expect(w.commit(7)).toBe(false);
    expect(w.greatest).toBe(7n);
  });

  it('a refused commit leaves the window as it was', () => {
    const w = new ReplayWindow();
    expect(w.commit(REJECT_AFTER_MESSAGES)).toBe(false);
    expect(w.greatest).toBe(-1n);
    expect(w.commit(0)).toBe(true);
  });

  it('reset() forgets everything', () => {
    const w = new ReplayWindow();
    w.commit(5);
    w.reset();
    expect(w.commit(5)).toBe(true);
    expect(w.greatest).toBe(5n);
  });

  it('numbers and bigints agree', () => {
    const w = new ReplayWindow();
    w.commit(1234);
    expect(w.check(1234n)).toBe(false);
    expect(w.greatest).toBe(1234n);
  });

  it('bad arguments raise typed errors', () => {
    const w = new ReplayWindow();
    expect(() => w.check(-1)).toThrow(RangeError);
    expect(() => w.check(1.5)).toThrow(RangeError);
    expect(() => w.check(2 ** 60)).toThrow(RangeError); // not a safe integer
    expect(() => w.check(-1n)).toThrow(RangeError);
    expect(() => w.check(1n << 64n)).toThrow(RangeError);
    expect(() => w.check('1' as unknown as number)).toThrow(TypeError);
  });
});

describe('replay window: randomized against a model', () => {
  it('matches "unseen and >= greatest - window" over 20000 counters', () => {
    // Small deterministic PRNG (xorshift32) so a failure is reproducible.
    let s = 0x9e3779b9;
    const rnd = (): number => {
      s ^= s << 13;
      s >>>= 0;
      s ^= s >>> 17;
      s ^= s << 5;
      s >>>= 0;
      return s;
    };
    const w = new ReplayWindow();
    const seen = new Set<bigint>();
    let greatest = -1n;
    const W = BigInt(REPLAY_WINDOW_SIZE);
    for (let i = 0; i < 20000; i++) {
      const r = rnd() % 100;
      let c: bigint;
      if (r < 50) c = greatest + 1n + BigInt(rnd() % 4); // mostly forward
      else if (r < 90) c = greatest - BigInt(rnd() % (REPLAY_WINDOW_SIZE + 200)); // around the edge
      else c = greatest + BigInt(rnd() % 20000); // jumps
      if (c < 0n) c = 0n;
      const expected = !seen.has(c) && c + W >= greatest;
      expect(w.check(c), `step ${i} counter ${c}`).toBe(expected);
      if (expected) {
        expect(w.commit(c)).toBe(true);
        seen.add(c);
        if (c > greatest) greatest = c;
      }
    }
  });
});
