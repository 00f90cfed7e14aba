/**
 * A start that fails while its concurrent read-mostly steps (control/pod.ts early():
 * the snapshot, the routing residue, the policy rules' residue, the DNS residue) still
 * run: runPod returns only once they have settled, so no `ip` of this start runs in the
 * pod's namespace after it returned (a pod host may hand that namespace to the next
 * start by then). Fake `ip`; the start fails at its MTU step (no route, no address).
 */
import { describe, it, expect, afterAll } from 'vitest';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runPod } from '../../src/control/pod.js';
import { validateConfig } from '../../src/control/config.js';
import type { IpCommand } from '../../src/routing/ip.js';
import { silentLogger } from '../../src/log.js';

const dir = mkdtempSync(join(tmpdir(), 'tenc-pod-start-early-'));
writeFileSync(join(dir, 'psk'), Buffer.alloc(32, 7).toString('base64') + '\n', { mode: 0o600 });
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('runPod: a failed start', () => {
  it('returns only after its concurrent early steps have settled: no ip command of it after it returned', async () => {
    const calls: string[] = [];
    let release: () => void = () => undefined;
    const held = new Promise<void>((r) => (release = r));
    const ip = {
      // the start's one-process snapshot does not line up: each step dumps for itself
      async dumps() {
        throw new Error('dump batch: does not line up');
      },
      async json(args: string[]) {
        calls.push(`json ${args.join(' ')}`);
        // the routing residue's rule dump waits (a slow ip); it finds a dead tenc0's route to delete
        if (args.join(' ') === '-4 rule show') await held;
        if (args.join(' ') === '-4 route show table 52100') return [{ dst: '10.80.0.1', dev: 'tenc0' }];
        return []; // no default route, no addresses: the MTU step fails
      },
      async run(args: string[]) {
        calls.push(`run ${args.join(' ')}`);
        return '';
      },
      async batch(fam: number, lines: string[]) {
        if (lines.length > 0) calls.push(`batch -${fam} ${lines.join('; ')}`);
      },
    } as unknown as IpCommand;
    const config = validateConfig({ addresses: ['10.77.0.1'], pskFile: 'psk', controlSocket: join(dir, 'pod.sock'), table: 52100 }, join(dir, 'pod.json'));
    const errors: string[] = [];
    let returned: number | null = null;
    let callsAtReturn = -1;
    const run = runPod(config, {
      ip,
      log: silentLogger,
      stdout: () => undefined,
      stderr: (t) => void errors.push(t),
      stopSignal: new Promise(() => undefined),
      openEngine: async () => {
        throw new Error('not reached');
      },
    }).then((code) => {
      returned = code;
      callsAtReturn = calls.length;
      return code;
    });
    await new Promise((r) => setTimeout(r, 100));
    expect(calls).toContain('json -4 rule show'); // the residue step runs, waiting
    expect(returned).toBeNull(); // the MTU step failed long ago; runPod waits for the residue step
    release();
    expect(await run).toBe(1);
    expect(errors.join('')).toMatch(/^tenc pod: mtu: cannot compute the MTU/);
    // the residue's delete ran before runPod returned, and nothing after it
    expect(calls.slice(0, callsAtReturn)).toContain('batch -4 route del 10.80.0.1 dev tenc0 table 52100');
    await new Promise((r) => setTimeout(r, 50));
    expect(calls.length).toBe(callsAtReturn);
  });
});
