/**
 * The agent's standby proxy (agent/standby.ts, Proxies.warmStandby), with fake pod
 * mains (no namespace, no root): the real `tenc pod --standby` is
 * test/netns/pod-standby.test.ts, and the agent using it the cluster tests.
 *
 *  1. a standby that printed `standby ready` is usable; handOff writes the handoff
 *     line to its stdin and closes it, and its next stdout line (the key) reaches
 *     readPublicKeyLine although the stream was paused at the handoff
 *  2. kill() stops a standby never handed a pod; its log file is removed at once; one
 *     not ready within its time, or printing another first line, is killed; the logs
 *     of another agent process's standbys are found (the agent removes them)
 *  3. standbys that die before they are ready: a warning each, and after
 *     STANDBY_MAX_FAILURES in a row an error and no more standbys
 */
import { describe, it, expect, afterEach, vi } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Standby, staleStandbyLogs, standbyLogName } from '../../src/agent/standby.js';
import { Proxies, STANDBY_MAX_FAILURES } from '../../src/agent/proxies.js';
import { formatHandoff } from '../../src/control/handoff.js';
import { readPublicKeyLine } from '../../src/control/keyline.js';
import { stubRegistry } from './agent-fakes.js';

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanup.splice(0).reverse()) f();
});

function tmp(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tenc-standby-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A fake main: `standby ready`, then the handoff line read back as `public-key base64(line)`. */
function echoMain(dir: string): string {
  const f = join(dir, 'echo.cjs');
  writeFileSync(
    f,
    `if (process.argv.slice(2).join(' ') !== 'pod --standby') process.exit(9);
     process.stdout.write('standby ready\\n');
     let s = '';
     process.stdin.setEncoding('utf8').on('data', (d) => (s += d)).on('end', () => {
       process.stdout.write('public-key ' + Buffer.from(s).toString('base64') + '\\n');
       setInterval(() => {}, 1000);
     });`,
  );
  return f;
}

describe('agent standby proxy', () => {
  it('1. handOff: the line on its stdin, then its key line read as a pod start reads it', async () => {
    const dir = tmp();
    const sb = new Standby({ main: echoMain(dir), flags: [], logFile: join(dir, 'sb.log') });
    cleanup.push(() => sb.child.kill('SIGKILL'));
    expect(sb.usable()).toBe(false);
    expect(await sb.ready).toBe(true);
    expect(sb.usable()).toBe(true);
    expect(existsSync(join(dir, 'sb.log'))).toBe(true);
    const h = { netns: '/run/netns/x', config: '/run/tenc/x.json', log: '/run/tenc/x.log' };
    const child = sb.handOff(h);
    expect(sb.usable()).toBe(false);
    expect(() => sb.handOff(h)).toThrow(/not ready for a handoff/);
    await new Promise((r) => setTimeout(r, 100)); // the key line may arrive while stdout is paused
    const key = await readPublicKeyLine(child, 10_000);
    expect(typeof key).toBe('string');
    expect(Buffer.from(key as string, 'base64').toString()).toBe(formatHandoff(h));
    sb.kill(); // handed: no longer the standby's to kill
    await new Promise((r) => setTimeout(r, 100));
    expect(child.exitCode).toBeNull();
    sb.dropLog();
    expect(existsSync(join(dir, 'sb.log'))).toBe(false);
  });

  it('2. kill(): a standby never handed a pod stops, its log file goes at once', async () => {
    const dir = tmp();
    const sb = new Standby({ main: echoMain(dir), flags: [], logFile: join(dir, 'sb.log') });
    expect(await sb.ready).toBe(true);
    sb.kill();
    expect(existsSync(join(dir, 'sb.log'))).toBe(false); // before its exit: an agent may exit first
    expect(await sb.exited).toBe('SIGKILL');
    expect(sb.usable()).toBe(false);
  });

  it('2b. never ready in time, or another first line: killed, ready false; stale logs of other agents are found', async () => {
    const dir = tmp();
    const silent = join(dir, 'silent.cjs');
    writeFileSync(silent, `setInterval(() => {}, 1000);`);
    const slow = new Standby({ main: silent, flags: [], logFile: join(dir, 'slow.log'), readyTimeoutMs: 300 });
    expect(await slow.ready).toBe(false);
    expect(await slow.exited).toBe('SIGKILL');
    const other = join(dir, 'other.cjs');
    writeFileSync(other, `process.stdout.write('public-key ' + 'C'.repeat(43) + '=\\n'); setInterval(() => {}, 1000);`);
    const wrong = new Standby({ main: other, flags: [], logFile: join(dir, 'wrong.log') });
    expect(await wrong.ready).toBe(false);
    expect(await wrong.exited).toBe('SIGKILL');
    expect(standbyLogName(42, 3)).toBe('.standby-42-3.log');
    expect(staleStandbyLogs(['.standby-42-3.log', '.standby-7-1.log', 'standby-7-1.log', 'pod-a.log', '.standby-7-x.log'], 42)).toEqual(['.standby-7-1.log']);
  });

  it('3. standbys dying unready: warned each, and none after STANDBY_MAX_FAILURES in a row', async () => {
    const dir = tmp();
    const dies = join(dir, 'dies.cjs');
    const count = join(dir, 'count');
    writeFileSync(count, '');
    writeFileSync(dies, `require('fs').appendFileSync(${JSON.stringify(count)}, 'x'); process.stderr.write('boom: no addon\\n'); process.exit(1);`);
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    const proxies = new Proxies({ registry: stubRegistry(), node: 'n1', project: 'alpha', runDir: dir, tencMain: dies, standby: true, podHost: false, log }, () => undefined);
    cleanup.push(() => proxies.stopStandby());
    const spawned = (): number => (existsSync(count) ? readFileSync(count, 'utf8').length : 0);
    for (let i = 0; i < STANDBY_MAX_FAILURES + 2; i++) {
      proxies.warmStandby();
      await vi.waitFor(() => expect(lines.length).toBeGreaterThanOrEqual(Math.min(i + 1, STANDBY_MAX_FAILURES)), { timeout: 10_000, interval: 20 });
    }
    await new Promise((r) => setTimeout(r, 300));
    expect(spawned()).toBe(STANDBY_MAX_FAILURES);
    const warns = lines.filter((l) => l.msg === 'standby proxy failed: pods start without one until the next is ready');
    const errors = lines.filter((l) => String(l.msg).startsWith('standby proxies keep failing'));
    expect(warns).toHaveLength(STANDBY_MAX_FAILURES - 1);
    expect(errors).toHaveLength(1);
    expect(String(errors[0].err)).toMatch(/exited \(1\) before a pod was handed to it: boom: no addon/);
  });
});
