/**
 * What a value parser returns: the canonical value, or a problem string for a message
 * (`FILE: field: problem`, `EINVAL` on the control socket). Parsers never throw on bad input.
 */

export type Parsed<T> = { ok: true; value: T } | { ok: false; problem: string };
export const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
export const bad = <T>(problem: string): Parsed<T> => ({ ok: false, problem });

/** The most of a value a message quotes (a path fits; a 1.5 MB bad value is not logged whole). */
export const SHOW_MAX = 200;

/** A value as a message quotes it, cut to `max` characters with its full length. */
export function show(v: unknown, max = SHOW_MAX): string {
  const s = JSON.stringify(v) ?? String(v);
  if (s.length <= max) return s;
  const size = typeof v === 'string' ? `${v.length} characters` : `${s.length} characters of JSON`;
  return `${s.slice(0, max)}... (${size})`;
}
