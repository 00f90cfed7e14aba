/**
 * What a value parser returns: the canonical value, or a problem string for a message
 * (`FILE: field: problem`, `EINVAL` on the control socket). Parsers never throw on bad input.
 */

export type Parsed<T> = { ok: true; value: T } | { ok: false; problem: string };
export const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
export const bad = <T>(problem: string): Parsed<T> => ({ ok: false, problem });

/** A value as a message quotes it. */
export function show(v: unknown): string {
  return JSON.stringify(v) ?? String(v);
}
