/**
 * What a benchmark module exports, so bench/main.ts can run it by name.
 * A bench prints its own report (Markdown) through `ctx.log` and returns nothing;
 * figures are reported against a baseline measured in the same run, never asserted.
 */
export interface BenchContext {
  /** Arguments after the bench names that start with `--` (e.g. `--seconds=0.5`), for the bench to read. */
  flags: Map<string, string>;
  log(line: string): void;
}

export interface BenchModule {
  run(ctx: BenchContext): Promise<void>;
}

/** A numeric `--name=value` flag, or `fallback`. */
export function numberFlag(ctx: BenchContext, name: string, fallback: number): number {
  const raw = ctx.flags.get(name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new RangeError(`--${name} must be a positive number, got ${raw}`);
  return n;
}
