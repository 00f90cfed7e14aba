/**
 * netns-scripts/pods.sh: `up` builds the two-pod topology and is idempotent,
 * both pods reach each other and the gateway over IPv4 and IPv6 at the full MTU,
 * `down` stops what runs inside and leaves nothing behind. A private prefix keeps
 * it apart from a demo that may be running.
 */
import { describe, it, expect, afterAll } from 'vitest';
import { spawnSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { requireRoot, requireTool } from './lib.js';

const script = fileURLToPath(new URL('../../netns-scripts/pods.sh', import.meta.url));
const prefix = `tenc-ps${process.pid % 100000}`;
const env = { ...process.env, PODS_PREFIX: prefix };

function pods(cmd: string, extra: Record<string, string> = {}): { status: number | null; stderr: string } {
  const r = spawnSync('bash', [script, cmd], { env: { ...env, ...extra }, encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
}

function namespaces(): string[] {
  return spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .stdout.split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith(prefix));
}

function inNs(ns: string, ...cmd: string[]): number | null {
  return spawnSync('ip', ['netns', 'exec', `${prefix}-${ns}`, ...cmd]).status;
}

afterAll(() => {
  pods('down');
});

describe('pods.sh', () => {
  it('up twice, reachability at full MTU, down removes everything', async () => {
    requireRoot();
    requireTool('ping');
    expect(pods('up')).toMatchObject({ status: 0 });
    expect(pods('up')).toMatchObject({ status: 0, stderr: '' }); // idempotent
    expect(namespaces().sort()).toEqual([`${prefix}-a`, `${prefix}-b`, `${prefix}-br`]);

    expect(inNs('a', 'ping', '-c1', '-W2', '10.77.0.2')).toBe(0);
    expect(inNs('b', 'ping', '-c1', '-W2', 'fd00:77::1')).toBe(0);
    expect(inNs('a', 'ping', '-c1', '-W2', '10.77.0.254')).toBe(0);
    expect(inNs('a', 'ping', '-c1', '-W2', '-M', 'do', '-s', '1472', '10.77.0.2')).toBe(0); // 1500 bytes
    expect(inNs('a', 'ping', '-c1', '-W2', '-M', 'do', '-s', '1473', '10.77.0.2')).not.toBe(0);

    // something running inside a pod is stopped by down
    const sleeper = spawn('ip', ['netns', 'exec', `${prefix}-a`, 'sleep', '60'], { stdio: 'ignore' });
    const gone = new Promise((r) => sleeper.on('exit', r));
    await new Promise((r) => setTimeout(r, 200));
    expect(pods('down')).toMatchObject({ status: 0 });
    await gone;
    expect(namespaces()).toEqual([]);
    expect(pods('down')).toMatchObject({ status: 0 }); // idempotent
  });

  it('TOPOLOGY=veth: the two pods on one veth pair, no bridge namespace; a bad TOPOLOGY is refused', () => {
    requireRoot();
    expect(pods('up', { TOPOLOGY: 'veth' })).toMatchObject({ status: 0 });
    expect(pods('up', { TOPOLOGY: 'veth' })).toMatchObject({ status: 0, stderr: '' }); // idempotent
    expect(namespaces().sort()).toEqual([`${prefix}-a`, `${prefix}-b`]);
    // a's eth0 is b's eth0's peer: same link, both families, full MTU
    expect(spawnSync('ip', ['-n', `${prefix}-a`, '-d', 'link', 'show', 'eth0'], { encoding: 'utf8' }).stdout).toContain('veth');
    expect(inNs('a', 'ping', '-c1', '-W2', '10.77.0.2')).toBe(0);
    expect(inNs('b', 'ping', '-c1', '-W2', 'fd00:77::1')).toBe(0);
    expect(inNs('a', 'ping', '-c1', '-W2', '-M', 'do', '-s', '1472', '10.77.0.2')).toBe(0);
    expect(pods('down')).toMatchObject({ status: 0 });
    expect(namespaces()).toEqual([]);
    const bad = pods('up', { TOPOLOGY: 'mesh' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('TOPOLOGY must be bridge or veth, got mesh');
    expect(namespaces()).toEqual([]);
  });
});
