/**
 * The node agent's run directory (`tenc agent --run-dir`, default /run/tenc/agent-NODE):
 * made 0700 when missing; an existing one is never chmodded (start() used to force it to
 * 0700, so `--run-dir /tmp` took /tmp's sticky and world bits away) and is refused, naming
 * it and its owner or mode, when another user owns it or group or others may write in it.
 * A refused directory is not written in, not even by the stop after the failed start.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeAgent, checkRunDir, type ProjectAgent } from '../../src/agent/node.js';
import { stubRegistry } from './agent-fakes.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tenc-run-dir-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const modeOf = (p: string) => statSync(p).mode & 0o7777;

/** A node agent on runDir whose reconcilers do nothing (no pod is started). */
function nodeAgent(runDir: string): NodeAgent {
  const fake = (project: string): ProjectAgent => ({
    start: async () => {},
    stop: async () => {},
    prepare: async () => {},
    release: async () => {},
    whenReady: async () => true,
    check: async () => null,
    proxyIds: () => new Map(),
    ...{ project },
  });
  return new NodeAgent({ registry: stubRegistry(), node: 'n1', socket: join(dir, 'agent.sock'), runDir, makeAgent: (o) => fake(o.project) });
}

describe("the agent's run directory", () => {
  it('a missing one is made 0700, its missing parents too', async () => {
    const run = join(dir, 'a', 'agent-n1');
    const agent = nodeAgent(run);
    await agent.start();
    await agent.stop();
    expect(modeOf(run)).toBe(0o700);
    expect(modeOf(join(dir, 'a'))).toBe(0o700);
    expect(readdirSync(run)).toEqual(['registrations.json']);
  });

  it('an existing one of this user that only its owner may write in is used with its mode kept (0755 stays 0755)', async () => {
    const run = join(dir, 'run');
    mkdirSync(run);
    chmodSync(run, 0o755);
    const agent = nodeAgent(run);
    await agent.start();
    await agent.stop();
    expect(modeOf(run)).toBe(0o755);
    expect(existsSync(join(run, 'registrations.json'))).toBe(true);
  });

  it.each([
    ['a shared directory like /tmp (1777)', 0o1777, '1777'],
    ['a group-writable one (0770)', 0o770, '0770'],
    ['an other-writable one (0703)', 0o703, '0703'],
  ])('refuses %s naming it and its mode; its mode and content stay as they were', async (_what, mode, text) => {
    const run = join(dir, 'shared');
    mkdirSync(run);
    chmodSync(run, mode);
    const agent = nodeAgent(run);
    await expect(agent.start()).rejects.toThrow(`run directory ${run}: mode ${text} lets group or others write in it`);
    await agent.stop(); // as runAgent does after a failed start
    expect(modeOf(run)).toBe(mode);
    expect(readdirSync(run)).toEqual([]);
    expect(existsSync(join(dir, 'agent.sock'))).toBe(false);
  });

  it.skipIf(process.getuid?.() !== 0)("refuses another user's directory (as root: one of nobody's), naming the owner", () => {
    const run = join(dir, 'nobody');
    mkdirSync(run, { mode: 0o700 });
    chownSync(run, 65534, 65534);
    expect(() => checkRunDir(run)).toThrow(`run directory ${run}: owned by uid 65534, not by root or this user (uid 0)`);
    expect(modeOf(run)).toBe(0o700);
  });

  it('refuses a file in its place', () => {
    const run = join(dir, 'file');
    writeFileSync(run, '');
    expect(() => checkRunDir(run)).toThrow(`run directory ${run}: not a directory`);
  });
});
