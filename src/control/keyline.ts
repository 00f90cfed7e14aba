/**
 * The first line `tenc pod` prints on stdout: `public-key <base64>` (its public key,
 * never the private one), written by pod.ts and read by whoever started the pod (the
 * node agent, the benches).
 */
import type { ChildProcess } from 'node:child_process';

/** The line, newline included. */
export function publicKeyLine(publicKey: string): string {
  return `public-key ${publicKey}\n`;
}

/** Resolves with the key of the child's first `public-key <base64>` stdout line, or an Error if it exits or `ms` pass first. */
export function readPublicKeyLine(child: ChildProcess, ms: number): Promise<string | Error> {
  return new Promise((resolve) => {
    let out = '';
    const timer = setTimeout(() => resolve(new Error(`no public-key line within ${ms} ms`)), ms);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = /^public-key (\S+)\n/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.stdout!.resume(); // a standby's stdout was paused at its handoff (agent/standby.ts)
    const exited = () => {
      clearTimeout(timer);
      resolve(new Error(`exited ${child.signalCode ?? child.exitCode} before printing its public key`));
    };
    if (child.exitCode !== null || child.signalCode !== null) exited();
    else child.once('exit', exited);
  });
}
