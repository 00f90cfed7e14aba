/**
 * `tenc pod --host`: a pod host (control/host.ts) on stdin and stdout.
 *
 * Loads what a pod runs (the DNS proxy's modules too), prints `host ready`, then
 * reads one line per request on stdin:
 *
 *   {"netns":"/proc/PID/ns/net","config":"/run/tenc/.../pod.json","log":"/run/tenc/.../pod.log"}
 *   {"stop":"/run/tenc/.../pod.json"}
 *
 * and prints one JSON object per line on stdout: {"pod":CONFIG,"publicKey":KEY} once a
 * pod's key is made, {"pod":CONFIG,"exited":CODE[,"error":TEXT]} when it has exited or
 * could not be started (code 2: the line's config, namespace or log at fault), and
 * {"error":TEXT} for a line that is not a request. A bad line never ends the host.
 * SIGTERM or SIGINT stops every pod; at the end of stdin the host runs on and exits
 * when its last pod has (at once with none). Exit code 0 when every pod it ran exited 0
 * (a start it refused ran nothing).
 */
import { StringDecoder } from 'node:string_decoder';
import { HANDOFF_MAX_BYTES } from '../control/handoff.js';
import { HOST_READY_LINE, PodHost, parseHostLine, podEvent, type HostEvent } from '../control/host.js';
import type { PodConfig } from '../control/config.js';
import type { RunPodOptions } from '../control/pod.js';

/** Splits `input` into lines (without newlines); an overlong line is reported and skipped up to its newline. */
export function readLines(input: NodeJS.ReadableStream, onLine: (line: string) => void, onOverlong: () => void, onEnd: () => void, max = HANDOFF_MAX_BYTES): void {
  let buf = '';
  let skipping = false;
  // a character split across two chunks is decoded whole
  const decoder = new StringDecoder('utf8');
  input.on('data', (d: Buffer | string) => {
    buf += typeof d === 'string' ? d : decoder.write(d);
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (skipping) skipping = false;
      else if (Buffer.byteLength(line) > max) onOverlong();
      else onLine(line);
    }
    if (!skipping && Buffer.byteLength(buf) > max) {
      onOverlong();
      skipping = true;
    }
    if (skipping) buf = '';
  });
  input.once('end', () => {
    if (!skipping) buf += decoder.end();
    if (buf !== '' && !skipping) onLine(buf);
    onEnd();
  });
  input.once('error', () => onEnd());
  input.resume();
}

/** Runs the host until its input ends and its last pod exits, or a signal stops it; `io.stdout` takes its lines. */
export async function hostMain(io: { stdout(text: string): void }, entry: RunPodOptions['entry'], logLevel: PodConfig['logLevel'] | undefined, input: NodeJS.ReadableStream = process.stdin): Promise<number> {
  const { runPod, loadDns } = await import('../control/pod.js');
  await loadDns(); // everything a pod may run is loaded before the first pod starts
  // the agent that reads stdout may be gone (its pods run on): a write to the closed pipe is dropped, never a crash
  process.stdout.on('error', () => undefined);
  const emit = (e: HostEvent) => io.stdout(JSON.stringify(e) + '\n');
  const host = new PodHost(emit, runPod, { entry, ...(logLevel !== undefined ? { logLevel } : {}) });
  let worst = 0;
  let ended = false;
  let stopping = false;
  return new Promise<number>((resolve) => {
    const finish = () => {
      process.off('SIGINT', onSig);
      process.off('SIGTERM', onSig);
      resolve(worst === 0 ? 0 : 1);
    };
    const onSig = (s: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      void host.stopAll(s).then(finish);
    };
    process.on('SIGINT', onSig);
    process.on('SIGTERM', onSig);
    readLines(
      input,
      (line) => {
        if (line.trim() === '') return;
        let req;
        try {
          req = parseHostLine(line);
        } catch (e) {
          emit({ error: (e as Error).message });
          return;
        }
        if ('stop' in req) {
          if (!host.stop(req.stop)) emit({ error: `pod host: no pod with config ${req.stop} runs here` });
          return;
        }
        if (stopping) {
          emit(podEvent(req.start, { exited: 2, error: 'pod host: stopping' }));
          return;
        }
        const start = req.start;
        void host
          .start(req.start)
          .catch((e: unknown) => {
            // never expected (start answers what it refuses): the host and its other pods go on
            emit(podEvent(start, { exited: 1, error: `pod host: ${(e as Error).message}` }));
            return 1;
          })
          .then((code) => {
            // a start refused (code 2: the line at fault) started nothing: the host's own exit stays 0
            if (code !== 2) worst = Math.max(worst, code);
            if (ended && host.size === 0 && !stopping) finish();
          });
      },
      () => emit({ error: `pod host: a line longer than ${HANDOFF_MAX_BYTES} bytes, skipped` }),
      () => {
        ended = true;
        if (host.size === 0 && !stopping) finish();
      },
    );
    io.stdout(HOST_READY_LINE);
  });
}
