/**
 * The pod host's own logic (control/host.ts, cli/host.ts) with a fake runPod: its
 * input lines, its events, refusals, per-pod stop and stop-all. The namespaces are
 * this process's own (opened, never entered: the fake runPod does not make anything);
 * test/netns/pod-host.test.ts runs real pods in real namespaces.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { PodHost, parseHostLine, type HostEvent } from '../../src/control/host.js';
import { readLines } from '../../src/cli/host.js';
import { openNetns } from '../../src/io/netns.js';
import { runProcess } from '../../src/io/run.js';
import { requireRoot } from '../netns/lib.js';
import type { RunPodOptions } from '../../src/control/pod.js';
import type { PodConfig } from '../../src/control/config.js';

let dir: string;
let configA: string;
let configB: string;
const NS = '/proc/self/ns/net';

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tenc-host-'));
  writeFileSync(join(dir, 'psk'), Buffer.alloc(32, 7).toString('base64') + '\n', { mode: 0o600 });
  configA = join(dir, 'a.json');
  configB = join(dir, 'b.json');
  writeFileSync(configA, JSON.stringify({ addresses: ['10.77.0.1'], pskFile: join(dir, 'psk') }));
  writeFileSync(configB, JSON.stringify({ addresses: ['10.77.0.2'], pskFile: join(dir, 'psk'), interface: 'tencb' }));
});

/** A runPod that prints a key, logs one line, waits for its stop and returns `code`. */
function fakeRun(calls: { config: PodConfig; opts: RunPodOptions }[], code = 0) {
  return async (config: PodConfig, opts: RunPodOptions): Promise<number> => {
    calls.push({ config, opts });
    opts.stdout!(`public-key ${'A'.repeat(43)}=\n`);
    opts.log!.info({ secret: 'x' }, 'fake pod running');
    await opts.stopSignal;
    return code;
  };
}

const tick = () => new Promise((r) => setTimeout(r, 10));

describe('parseHostLine', () => {
  it('a handoff starts, {"stop":PATH} stops; anything else is refused naming the fault', () => {
    expect(parseHostLine(JSON.stringify({ netns: NS, config: '/c.json' }))).toEqual({ start: { netns: NS, config: '/c.json' } });
    expect(parseHostLine('{"stop":"/c.json"}')).toEqual({ stop: '/c.json' });
    expect(() => parseHostLine('{"stop":"c.json"}')).toThrow(/"stop" must be the absolute path/);
    expect(() => parseHostLine('{"stop":"/c.json","x":1}')).toThrow(/unknown field "x" in a stop line/);
    expect(() => parseHostLine('{"stop":5}')).toThrow(/"stop" must be/);
    expect(() => parseHostLine('nope')).toThrow(/pod host: not JSON/);
    expect(() => parseHostLine('{"config":"/c.json"}')).toThrow(/"netns"/);
  });
});

describe('readLines', () => {
  it('splits lines across chunks, skips an overlong one up to its newline, gives a last line without newline', async () => {
    const input = new PassThrough();
    const lines: string[] = [];
    let overlong = 0;
    let ended = false;
    readLines(input, (l) => lines.push(l), () => overlong++, () => (ended = true), 10);
    input.write('one\ntw');
    input.write('o\n0123456789abc');
    input.write('def\nthree\nfou');
    input.end('r');
    await tick();
    expect(lines).toEqual(['one', 'two', 'three', 'four']);
    expect(overlong).toBe(1);
    expect(ended).toBe(true);
  });

  it('a character split across two chunks is read whole (also in a last line without newline)', async () => {
    const input = new PassThrough();
    const lines: string[] = [];
    readLines(input, (l) => lines.push(l), () => undefined, () => undefined);
    const b = Buffer.from('{"config":"/run/tenc/é.json"}\nü');
    const cut = b.indexOf(0xc3) + 1; // inside é's two bytes
    input.write(b.subarray(0, cut));
    input.write(b.subarray(cut, b.length - 1)); // and inside ü's
    input.end(b.subarray(b.length - 1));
    await tick();
    expect(lines).toEqual(['{"config":"/run/tenc/é.json"}', 'ü']);
  });
});

describe('PodHost', () => {
  it('starts pods, tells their keys, stops one by its config, then all; each pod gets its namespace and its own log', async () => {
    const events: HostEvent[] = [];
    const calls: { config: PodConfig; opts: RunPodOptions }[] = [];
    const host = new PodHost((e) => events.push(e), fakeRun(calls));
    const logA = join(dir, 'a.log');
    const doneA = host.start({ netns: NS, config: configA, log: logA });
    await tick();
    expect(host.size).toBe(1);
    // children enter the namespace through the host's own fd of it, never by the path again
    const scope = calls[0].opts.netns!;
    expect(scope.name).toBe(NS);
    expect(scope.path).toMatch(new RegExp(`^/proc/${process.pid}/fd/\\d+$`));
    expect(statSync(scope.path).ino).toBe(statSync(NS).ino);
    expect(scope.ino).toBe(statSync(NS).ino);
    expect(calls[0].opts.stopSignal).toBeInstanceOf(Promise);
    expect(events).toEqual([{ pod: configA, publicKey: 'A'.repeat(43) + '=' }]);
    const logged = readFileSync(logA, 'utf8');
    expect(logged).toContain('"msg":"fake pod running"');
    expect(logged).toContain(`"pod":${JSON.stringify(configA)}`);
    expect(logged).not.toContain('"secret":"x"'); // the logger's redaction holds in a host's pod log
    // the same config again, and a second pod in the same namespace: refused, nothing run
    expect(await host.start({ netns: NS, config: configA })).toBe(2);
    expect(await host.start({ netns: NS, config: configB })).toBe(2);
    expect(calls.length).toBe(1);
    expect(events.slice(1)).toEqual([
      { pod: configA, exited: 2, error: `pod host: a pod with config ${configA} is running in this host` },
      { pod: configB, exited: 2, error: `pod host: netns ${NS} has a pod of this host already` },
    ]);
    expect(host.stop(configB)).toBe(false);
    expect(host.stop(configA)).toBe(true);
    expect(await doneA).toBe(0);
    expect(host.size).toBe(0);
    expect(events.at(-1)).toEqual({ pod: configA, exited: 0 });
    // after its exit the config and the namespace are free again
    void host.start({ netns: NS, config: configB });
    await tick();
    expect(host.size).toBe(1);
    expect(await host.stopAll('SIGTERM')).toBe(0);
    expect(events.at(-1)).toEqual({ pod: configB, exited: 0 });
  });

  it('refuses a config that does not load, a netns that is no namespace, a log it cannot open; a pod that throws exits 1', async () => {
    const events: HostEvent[] = [];
    const host = new PodHost((e) => events.push(e), fakeRun([]));
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ addresses: ['10.77.0.1'], pskFile: join(dir, 'psk'), listenPort: 'x' }));
    expect(await host.start({ netns: NS, config: bad })).toBe(2);
    expect(await host.start({ netns: join(dir, 'psk'), config: configA })).toBe(2);
    expect(await host.start({ netns: join(dir, 'missing'), config: configA })).toBe(2);
    expect(await host.start({ netns: NS, config: configA, log: join(dir, 'no-dir', 'a.log') })).toBe(2);
    expect(events.map((e) => (e as { error: string }).error)).toEqual([
      expect.stringMatching(/listenPort/),
      `pod host: netns ${join(dir, 'psk')}: not a namespace file (nsfs)`,
      `pod host: netns ${join(dir, 'missing')}: ENOENT`,
      expect.stringMatching(/ENOENT.*no-dir/),
    ]);
    expect(host.size).toBe(0);
    const throwing = new PodHost(
      (e) => events.push(e),
      async () => {
        throw new Error('engine exploded');
      },
    );
    expect(await throwing.start({ netns: NS, config: configA })).toBe(1);
    expect(events.at(-1)).toEqual({ pod: configA, exited: 1, error: 'engine exploded' });
  });
});

describe('openNetns: a scope held by its children', () => {
  it('a child holds the fd past close(); after the last release it is closed, and no child starts through it any more', async () => {
    requireRoot(); // setns into the namespace
    const s = openNetns(NS);
    const want = statSync(NS).ino;
    // a child started through the scope runs in its namespace
    const r = await runProcess('readlink', ['/proc/self/ns/net'], { netns: s });
    expect(r.stdout.trim()).toBe(`net:[${want}]`);
    const release = s.hold();
    s.close();
    // held: the fd (and its number, which s.path names) stays this namespace's
    expect(statSync(s.path).ino).toBe(want);
    release();
    release(); // twice: once counted
    const after = (() => {
      try {
        return statSync(s.path).ino;
      } catch {
        return null;
      }
    })();
    expect(after).not.toBe(want);
    expect(() => s.hold()).toThrow(/closed \(its pod has stopped\)/);
    await expect(runProcess('true', [], { netns: s })).rejects.toThrow(new RegExp(`cannot run true: netns ${NS}: closed`));
  });
});
