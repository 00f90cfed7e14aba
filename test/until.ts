/**
 * Waiting in tests, one definition for every suite (unit, etcd, netns): a condition
 * polled until it holds, within a bound.
 */

/**
 * Waits until `fn` (sync or async) returns a truthy value, polling every `every` ms
 * (default 100), at most `ms`: that value and how long it took. A throw from `fn`
 * counts as not yet (named in the timeout's error if it was the last answer).
 */
export async function until<T>(what: string, fn: () => Promise<T | null | undefined | false> | T | null | undefined | false, ms = 15_000, every = 100): Promise<{ value: T; elapsed: number }> {
  const t0 = Date.now();
  let last = '';
  for (;;) {
    const v = await Promise.resolve()
      .then(fn)
      .then(
        (x) => {
          last = '';
          return x;
        },
        (e) => {
          last = (e as Error).message;
          return null;
        },
      );
    if (v) return { value: v, elapsed: Date.now() - t0 };
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? ` (last error: ${last})` : ''}`);
    await new Promise((r) => setTimeout(r, every));
  }
}
