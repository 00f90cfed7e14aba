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
  /** The namespace's nsfs path (/run/netns/NAME, /proc/PID/ns/net): children start there. */
  readonly path: string;
  /** Calls fn, which must be synchronous, with the main thread in the namespace. */
  run<T>(fn: () => T): T;
}

/** Runs fn in the scope's namespace, or where the thread is without one. */
export function inScope<T>(scope: NetnsScope | undefined, fn: () => T): T {
  return scope ? scope.run(fn) : fn();
}

/** A scope over an open namespace file; close() gives its fd back. */
export interface OpenNetns extends NetnsScope {
  close(): void;
}

/** Opens `path` as a network namespace scope; throws naming the path when it is not a namespace file. */
export function openNetns(path: string): OpenNetns {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw new Error(`netns ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!isNamespaceFile(fstatSync(fd))) {
    closeSync(fd);
    throw new Error(`netns ${path}: not a namespace file (nsfs)`);
  }
  let open = true;
  return {
    path,
    run<T>(fn: () => T): T {
      if (!open) throw new Error(`netns ${path}: closed`);
      return addon.inNetns(fd, fn) as T;
    },
    close() {
      if (!open) return;
      open = false;
      closeSync(fd);
    },
  };
}
