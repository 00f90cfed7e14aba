/**
 * A proxy start the agent gives up on is stopped before the next start (the cluster
 * test's setup flake: a pod slow to open its control socket was left running, and the
 * next `tenc pod` in the same netns removed its routes as residue). The "proxy" is a
 * script that prints its key line and never answers on a control socket; it notes at
 * its start whether an earlier one still runs. nsenter enters the agent's own netns
 * (/proc/self/ns/net): no namespace is made, nothing is routed.
 */
import { describe, it, expect, afterEach, vi } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Agent } from '../../src/agent/agent.js';
import { processAlive } from '../../src/agent/proxies.js';
import { stubRegistry } from './agent-fakes.js';
import { requireRoot, requireTool } from '../netns/lib.js';

describe('agent: a start given up is stopped before the next', () => {
  const cleanup: (() => void | Promise<void>)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it('never two starts of one pod at once', async () => {
    requireRoot();
    requireTool('nsenter');
    const dir = mkdtempSync(join(tmpdir(), 'tenc-agent-giveup-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const pids = join(dir, 'pids');
    writeFileSync(pids, '');
    writeFileSync(join(dir, 'psk'), Buffer.alloc(32, 7).toString('base64') + '\n', { mode: 0o600 });
    const fake = join(dir, 'fake-pod.cjs');
    writeFileSync(
      fake,
      `const fs = require('fs');
       const before = fs.readFileSync(${JSON.stringify(pids)}, 'utf8').split('\\n').filter(Boolean).map(Number);
       const running = before.filter((p) => { try { process.kill(p, 0); return true; } catch { return false; } });
       fs.appendFileSync(${JSON.stringify(pids)}, process.pid + '\\n');
       if (running.length > 0) fs.appendFileSync(${JSON.stringify(join(dir, 'overlap'))}, running.join(' ') + '\\n');
       process.stdout.write('public-key ' + 'C'.repeat(43) + '=\\n');
       setInterval(() => {}, 1000);`,
    );
    const registry = stubRegistry({ pskFile: async () => join(dir, 'psk') });
    const reg = { containerId: 'c1', netns: '/proc/self/ns/net', ifname: 'eth0', podNamespace: 'alpha', podName: 'slow-1', podUid: 'u1', addresses: ['10.128.1.10'], proxy: null };
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
    cleanup.push(() => {
      if (started().length < 3) console.log(lines.join(''));
    });
    const agent = new Agent({ registry, node: 'n1', project: 'alpha', registrations: () => [reg], runDir: join(dir, 'run'), tencMain: fake, startTimeoutMs: 300, dns: false, log, standby: false }); // the fake knows no --standby
    const started = () => readFileSync(pids, 'utf8').split('\n').filter(Boolean).map(Number);
    cleanup.push(() => {
      for (const p of started()) if (processAlive(p)) process.kill(p, 'SIGKILL');
    });
    cleanup.push(() => agent.stop());
    await agent.start();
    await vi.waitFor(() => expect(started().length).toBeGreaterThanOrEqual(3), { timeout: 20_000, interval: 50 });
    await agent.stop();
    console.log(`agent give-up: ${started().length} starts, overlaps: ${existsSync(join(dir, 'overlap')) ? readFileSync(join(dir, 'overlap'), 'utf8').trim() : 'none'}`);
    expect(existsSync(join(dir, 'overlap'))).toBe(false);
    expect(started().slice(0, -1).filter(processAlive)).toEqual([]);
  });
});
