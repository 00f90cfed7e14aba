/**
 * `tenc pod --standby`: the pod's side of the standby handoff (control/handoff.ts).
 *
 * The process loads everything a pod runs (the pod's modules, the DNS proxy's too),
 * prints `standby ready`, and waits for one handoff line on stdin. Then it enters the
 * pod's network namespace (native/netns.c: setns of the main thread, then of each of
 * libuv's worker threads, and of runProcess's worker again before each child), checks
 * /proc/self/ns/net and every worker's /proc/thread-self/ns/net, points stderr at the
 * pod's log, and returns the config path: from there on it is `tenc pod --config
 * CONFIG`, started in the pod's namespace.
 *
 * Nothing before the handoff touches a namespace, a file of the pod or a secret: the
 * standby runs in the agent's namespace with nothing to protect or to leak. End of
 * stdin before a handoff (the agent is gone) returns null: exit 0.
 */
import { statSync } from 'node:fs';
import { readlink } from 'node:fs/promises';
import { isNamespaceFile } from '../io/nsfs.js';
import { HANDOFF_MAX_BYTES, HandoffError, STANDBY_READY_LINE, parseHandoff, type Handoff } from '../control/handoff.js';

/** The first line of `input`, without its newline; null at end of input before any byte. */
export function readHandoffLine(input: NodeJS.ReadableStream, max = HANDOFF_MAX_BYTES): Promise<string | null> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const done = (f: () => void) => {
      input.off('data', onData);
      input.off('end', onEnd);
      input.off('error', onError);
      input.pause();
      f();
    };
    const onData = (d: Buffer | string) => {
      buf += typeof d === 'string' ? d : d.toString('utf8');
      const nl = buf.indexOf('\n');
      const line = nl >= 0 ? buf.slice(0, nl) : buf;
      if (Buffer.byteLength(line) > max) done(() => reject(new HandoffError(`standby handoff: no newline in the first ${max} bytes`)));
      else if (nl >= 0) done(() => resolve(line));
    };
    const onEnd = () => done(() => (buf === '' ? resolve(null) : reject(new HandoffError('standby handoff: input ended inside the line (no newline)'))));
    const onError = (e: Error) => done(() => reject(new HandoffError(`standby handoff: reading stdin: ${e.message}`)));
    input.on('data', onData);
    input.once('end', onEnd);
    input.once('error', onError);
    input.resume();
  });
}

/**
 * Moves this process to the handed pod: checks that `h.netns` is a network namespace,
 * enters it, checks /proc/self/ns/net, and points stderr at `h.log`. Throws
 * HandoffError (naming the path) before anything is done in the new namespace.
 */
export async function enterHandoff(h: Handoff): Promise<void> {
  const { enterNetns, enterNetnsWorkers, redirectStderr, threadpoolSize } = await import('../native.js');
  let target: { dev: number; ino: number };
  try {
    target = statSync(h.netns);
  } catch (e) {
    throw new HandoffError(`standby handoff: netns ${h.netns}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!isNamespaceFile(target)) throw new HandoffError(`standby handoff: netns ${h.netns} is not a network namespace`);
  try {
    enterNetns(h.netns);
  } catch (e) {
    throw new HandoffError(`standby handoff: ${(e as Error).message}`);
  }
  const now = statSync('/proc/self/ns/net');
  if (now.ino !== target.ino || now.dev !== target.dev) throw new HandoffError(`standby handoff: after setns, /proc/self/ns/net is not ${h.netns}`);
  // libuv's workers ran in the old namespace: each enters the new one, then is checked
  // (a file call runs on a worker: /proc/thread-self is that worker)
  const n = threadpoolSize();
  let w: { entered: number; timedOut: boolean };
  try {
    w = await enterNetnsWorkers(n);
  } catch (e) {
    throw new HandoffError(`standby handoff: ${(e as Error).message}`);
  }
  if (w.timedOut || w.entered !== n) throw new HandoffError(`standby handoff: ${w.entered} of ${n} worker threads entered ${h.netns}${w.timedOut ? ' (timed out)' : ''}`);
  const want = `net:[${target.ino}]`;
  const seen = await Promise.all(Array.from({ length: 4 * n }, () => readlink('/proc/thread-self/ns/net')));
  const other = seen.find((x) => x !== want);
  if (other !== undefined) throw new HandoffError(`standby handoff: a worker thread is still in ${other}, not ${h.netns}`);
  if (h.log !== undefined) {
    try {
      redirectStderr(h.log);
    } catch (e) {
      throw new HandoffError(`standby handoff: log ${h.log}: ${(e as Error).message}`);
    }
  }
}

/**
 * Stands by: `prepare` loads what a pod runs, then `standby ready` goes to stdout and
 * the handoff is read from `input`. Returns the handoff once this process is in the
 * pod's namespace, or null when input ended before one.
 */
export async function standBy(stdout: (t: string) => void, prepare: () => Promise<void>, input: NodeJS.ReadableStream = process.stdin): Promise<Handoff | null> {
  await prepare();
  stdout(STANDBY_READY_LINE);
  const line = await readHandoffLine(input);
  if (line === null) return null;
  const h = parseHandoff(line);
  await enterHandoff(h);
  return h;
}
