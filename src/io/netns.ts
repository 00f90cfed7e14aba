/**
 * A pod's network namespace as a pod host (control/host.ts) holds it: several pods in
 * one process, each in a namespace of its own, none of them the process's.
 *
 * What a pod makes in its namespace goes through its scope:
 *  - sockets and the TUN device: made by native calls inside run() (native/netns.c
 *    inNetns: the main thread enters the namespace for one synchronous call, then goes
 *    back). node's own dgram and net bind a tick later, outside it, so a pod in a host
 *    makes its listening TCP socket natively too (sock.c sockTcpListen);
 *  - child processes (ip, nft): runProcess's `netns` option, with `path`.
 * A pod run by `tenc pod` (the process in the pod's namespace) has no scope: its
 * calls make everything where the process is, as before.
 */
import { closeSync, fstatSync, openSync } from 'node:fs';
import { addon } from '../native.js';
import { isNamespaceFile } from './nsfs.js';

export interface NetnsScope {
  /**
   * Where children (ip, nft) enter the namespace: the scope's own open fd seen through
   * /proc (/proc/PID/fd/N of this process), never the path it was opened by, which may
   * name another namespace by then (a /proc/PID of a process that has exited, reused).
   */
  readonly path: string;
  /** The path it was opened by (/run/netns/NAME, /proc/PID/ns/net): for messages. */
  readonly name: string;
  /** The namespace's inode number (names it while it exists: the pod's default control socket). */
  readonly ino: number;
  /** Calls fn, which must be synchronous, with the main thread in the namespace. */
  run<T>(fn: () => T): T;
  /**
   * Keeps the scope's fd (and so its number, which `path` names) open until the
   * returned release is called: a child started through `path` (io/run.ts) holds it
   * while it runs, so a scope closed meanwhile cannot hand its fd number to another
   * pod's namespace under it. Throws once the scope is closed (its pod has stopped).
   */
  hold(): () => void;
}

/** Runs fn in the scope's namespace, or where the thread is without one. */
export function inScope<T>(scope: NetnsScope | undefined, fn: () => T): T {
  return scope ? scope.run(fn) : fn();
}

/** A scope over an open namespace file; close() gives its fd back. */
export interface OpenNetns extends NetnsScope {
  /** The nsfs device: with ino, names the namespace (two pods of one host never share one). */
  readonly dev: number;
  close(): void;
}

/** Opens `path` as a network namespace scope; throws naming the path when it is not a namespace file. */
export function openNetns(path: string): OpenNetns {
  let fd = -1;
  let st;
  try {
    fd = openSync(path, 'r');
    st = fstatSync(fd);
  } catch (e) {
    if (fd >= 0) closeSync(fd);
    throw new Error(`netns ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!isNamespaceFile(st)) {
    closeSync(fd);
    throw new Error(`netns ${path}: not a namespace file (nsfs)`);
  }
  let open = true;
  let holds = 0;
  return {
    path: `/proc/${process.pid}/fd/${fd}`,
    name: path,
    ino: st.ino,
    dev: st.dev,
    run<T>(fn: () => T): T {
      if (!open) throw new Error(`netns ${path}: closed`);
      return addon.inNetns(fd, fn) as T;
    },
    hold() {
      if (!open) throw new Error(`netns ${path}: closed (its pod has stopped)`);
      holds++;
      let held = true;
      return () => {
        if (!held) return;
        held = false;
        if (--holds === 0 && !open) closeSync(fd);
      };
    },
    close() {
      if (!open) return;
      open = false;
      if (holds === 0) closeSync(fd); // else the last child's release closes it
    },
  };
}
