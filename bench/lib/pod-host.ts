/**
 * `bench density --one-process`: N `tenc pod`s in one node process, to measure what
 * "one V8 isolate for several pods" would cost per pod before anyone builds it.
 *
 *   node [pod node flags] dist/bench/lib/pod-host.js CONFIG...
 *
 * Each CONFIG runs as `tenc pod --config CONFIG` would (main.ts: V8 lean mode first,
 * then the pod bundle's podMain), all in this process and in the namespace it was
 * started in, so the configs must not collide: each its own interface, listenPort,
 * fwmark, table, rulePriority and control socket. Prints `ready` once every pod
 * printed its public key, or `pod I exited CODE` first when one did not start.
 * SIGTERM stops them all (each pod's own handler), then the process exits.
 *
 * A measurement aid, not a way to run pods: the pods share this process's
 * namespace, signals, stderr and fate, and nothing here keeps one pod's children or
 * sockets in a namespace of its own (README "density": what a real multi-pod host
 * would need).
 */
import { enterLeanMode } from '../../src/control/lean.js';

const configs = process.argv.slice(2);
if (configs.length === 0) {
  process.stderr.write('usage: pod-host.js CONFIG...\n');
  process.exit(2);
}
if (process.env.TENC_V8_LEAN !== '0') enterLeanMode(); // as main.ts does for `tenc pod`
const { podMain, entry } = await (await import('../../src/cli/pod-bundle.js')).loadPodMain();
let keys = 0;
const codes = await Promise.all(
  configs.map(async (config, i) => {
    const io = {
      stdout: (t: string) => {
        if (t.startsWith('public-key ') && ++keys === configs.length) process.stdout.write('ready\n');
      },
      stderr: (t: string) => void process.stderr.write(`pod ${i}: ${t}`),
    };
    const code = await podMain(['--config', config], io, entry);
    if (code !== 0) process.stdout.write(`pod ${i} exited ${code}\n`);
    return code;
  }),
);
process.exit(codes.some((c) => c !== 0) ? 1 : 0);
