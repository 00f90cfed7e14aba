/**
 * Issue 12: a pod whose project psk is missing or bad cannot have its proxy started;
 * the agent retries it (every RESTART_DELAY_MS to RECONCILE_MS) but logs each failure
 * once per pod and message, again when the message changes, and once when the proxy
 * runs again. One Agent over a fake registry whose pskFile() throws; the pod's "netns"
 * is a plain file (only its path and inode are used before the psk is read); the
 * recovery is an adoption through a fake control socket at the pod's socket path.
 */
import { describe, it, expect, afterEach, vi } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Agent } from '../../src/agent/agent.js';
import type { AgentHooks } from '../../src/metrics/agent.js';
import { fakePodProxy, stubRegistry } from './agent-fakes.js';

interface Line {
  msg: string;
  pod?: string;
  err?: string;
  failures?: number;
}

/** Polls until cond holds (vitest's waitFor), at most 15 s. */
const until = (cond: () => boolean) => vi.waitFor(() => expect(cond()).toBe(true), { timeout: 15_000, interval: 20 });


describe('agent: a proxy that cannot start (missing psk) is logged once, not every retry', () => {
  const cleanup: (() => void | Promise<void>)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it('one line per pod and message, again when the message changes, once on recovery; the retries go on', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tenc-agent-retry-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const netns = join(dir, 'netns');
    writeFileSync(netns, '');
    const lines: Line[] = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Line) });
    let pskError = 'namespace alpha: no Secret tenc-psk';
    const registry = stubRegistry({
      pskFile: async () => {
        throw new Error(pskError);
      },
    });
    let lost = 0;
    const hooks: AgentHooks = { reconciled: () => {}, proxyStarted: () => {}, proxyLost: () => void lost++, proxies: () => {} };
    const reg = { containerId: 'c1', netns, ifname: 'eth0', podNamespace: 'alpha', podName: 'web-1', podUid: 'u1', addresses: ['10.128.1.10'], proxy: null };
    const agent = new Agent({ registry, node: 'n1', project: 'alpha', registrations: () => [reg], runDir: join(dir, 'run'), log, hooks });
    cleanup.push(() => agent.stop());
    await agent.start();

    const count = (msg: string) => lines.filter((l) => l.msg === msg && l.pod === 'web-1').length;
    await until(() => lost >= 5);
    expect(count('proxy start failed')).toBe(1);
    expect(count('proxy lost: starting it again')).toBe(1);
    expect(lines.find((l) => l.msg === 'proxy start failed')!.err).toBe(pskError);

    // another problem: logged once more
    const before = lost;
    pskError = 'namespace alpha: Secret tenc-psk key "psk" is not a 32-byte key';
    await until(() => lost >= before + 3);
    expect(count('proxy start failed')).toBe(2);
    expect(lines.filter((l) => l.msg === 'proxy start failed').map((l) => l.err)).toEqual(['namespace alpha: no Secret tenc-psk', pskError]);
    expect(agent.isReady('web-1')).toBe(false);

    // a proxy answers on the pod's socket: adopted, and the recovery said once
    await fakePodProxy(netns, 'A'.repeat(43) + '=', [], cleanup);
    expect(await agent.whenReady('web-1', 15_000)).toBe(true);
    await until(() => count('proxy start recovered') === 1);
    const recovered = lines.find((l) => l.msg === 'proxy start recovered')!;
    expect(recovered.failures).toBeGreaterThanOrEqual(8);
    expect(count('proxy start failed')).toBe(2);
    expect(count('running proxy adopted')).toBe(1);
    console.log(`agent retry: ${lost} failed starts, ${count('proxy start failed')} 'proxy start failed' lines`);
  });
});
