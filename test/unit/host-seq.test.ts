/**
 * A pod host's events of a copy the agent stopped waiting for (HostProcess.forget,
 * after stopHosted timed out) never reach the next start of the same config: each
 * start line carries a seq that the pod's events echo (review of the pod lifecycle).
 * The agent's side over a fake child (PassThrough stdio), and the host's side
 * (PodHost, parseHostLine) with a fake runPod.
 */
import { describe, it, expect, afterAll } from 'vitest';
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { HostProcess } from '../../src/agent/host.js';
import { PodHost, formatHostStart, parseHostLine, type HostEvent } from '../../src/control/host.js';
import type { RunPodOptions } from '../../src/control/pod.js';

const dir = mkdtempSync(join(tmpdir(), 'tenc-host-seq-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const tick = () => new Promise((r) => setTimeout(r, 10));
const KEY = 'K'.repeat(43) + '=';

/** A child process as HostProcess uses it: stdin, stdout, exit. */
class FakeChild extends EventEmitter {
  readonly stdin = new PassThrough();
  readonly stdout = new PassThrough();
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  readonly pid = 4242;
  kill(): boolean {
    this.signalCode = 'SIGKILL';
    this.emit('exit', null, 'SIGKILL');
    return true;
  }
}

async function readyHost() {
  const child = new FakeChild();
  const lines: string[] = [];
  let buf = '';
  child.stdin.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  const h = new HostProcess({ main: '/nonexistent/main.js', logFile: join(dir, '.host-1-1.log'), readyTimeoutMs: 0, spawn: () => child as unknown as ChildProcess });
  child.stdout.write('host ready\n');
  expect(await h.ready).toBe(true);
  const event = async (e: HostEvent) => {
    child.stdout.write(JSON.stringify(e) + '\n');
    await tick();
  };
  return { h, child, lines, event };
}

function waiter() {
  const keys: string[] = [];
  const exits: number[] = [];
  return { keys, exits, w: { key: (k: string) => void keys.push(k), exit: (c: number) => void exits.push(c) } };
}

describe('HostProcess: events are matched to the start they belong to', () => {
  it("after forget(A) and a new start of A, the old copy's late exit is ignored; the new copy's key and exit arrive", async () => {
    const { h, lines, event } = await readyHost();
    const config = join(dir, 'a.json');
    const start = { netns: '/proc/self/ns/net', config };
    const w1 = waiter();
    h.start(start, w1.w);
    h.forget(config); // stopHosted saw no exit in time
    const w2 = waiter();
    h.start(start, w2.w);
    await tick();
    const [s1, s2] = lines.map((l) => parseHostLine(l)).map((l) => ('start' in l ? l.start : null));
    expect(s1).toEqual({ ...start, seq: expect.any(Number) });
    expect(s2!.seq).not.toBe(s1!.seq);
    // the old copy's teardown ends: its exit line comes late
    await event({ pod: config, seq: s1!.seq, exited: 0 });
    expect(w2.exits).toEqual([]);
    expect(w1.exits).toEqual([]);
    expect(h.size).toBe(1);
    await event({ pod: config, seq: s2!.seq, publicKey: KEY });
    expect(w2.keys).toEqual([KEY]);
    await event({ pod: config, seq: s2!.seq, exited: 1 });
    expect(w2.exits).toEqual([1]);
    expect(h.size).toBe(0);
  });

  it('an event without seq (the host refusing a line itself) goes to the waiter of that config', async () => {
    const { h, event } = await readyHost();
    const config = join(dir, 'b.json');
    const w = waiter();
    h.start({ netns: '/proc/self/ns/net', config }, w.w);
    await event({ pod: config, exited: 2, error: 'pod host: stopping' });
    expect(w.exits).toEqual([2]);
  });
});

describe('PodHost: the seq of a start line is echoed in its pod events', () => {
  it('key, exit and refusal carry the seq of their start line; a line without seq gets events without it', async () => {
    writeFileSync(join(dir, 'psk'), Buffer.alloc(32, 7).toString('base64') + '\n', { mode: 0o600 });
    const config = join(dir, 'c.json');
    writeFileSync(config, JSON.stringify({ addresses: ['10.77.0.1'], pskFile: join(dir, 'psk') }));
    const events: HostEvent[] = [];
    const host = new PodHost(
      (e) => events.push(e),
      async (_c, opts: RunPodOptions) => {
        opts.stdout!(`public-key ${KEY}\n`);
        await opts.stopSignal;
        return 0;
      },
    );
    const line = parseHostLine(formatHostStart({ netns: '/proc/self/ns/net', config }, 7).trimEnd());
    expect(line).toEqual({ start: { netns: '/proc/self/ns/net', config, seq: 7 } });
    const done = host.start((line as { start: Parameters<PodHost['start']>[0] }).start);
    await tick();
    expect(await host.start({ netns: '/proc/self/ns/net', config, seq: 8 })).toBe(2);
    host.stop(config);
    expect(await done).toBe(0);
    expect(events).toEqual([
      { pod: config, seq: 7, publicKey: KEY },
      { pod: config, seq: 8, exited: 2, error: `pod host: a pod with config ${config} is running in this host` },
      { pod: config, seq: 7, exited: 0 },
    ]);
    expect(() => parseHostLine(JSON.stringify({ netns: '/proc/self/ns/net', config, seq: -1 }))).toThrow(/"seq" must be a non-negative integer/);
    expect(() => parseHostLine(JSON.stringify({ netns: '/proc/self/ns/net', config, seq: 1, x: 1 }))).toThrow(/unknown field "x"/);
    expect(parseHostLine(JSON.stringify({ netns: '/proc/self/ns/net', config }))).toEqual({ start: { netns: '/proc/self/ns/net', config } });
  });
});
