/**
 * IpCommand.dumps (src/routing/ip.ts): one `ip -j -force -batch -` for several dumps.
 * Against the real ip (loopback namespace of this process: read-only) and against fake
 * ip programs whose output does not line up: a failed line is null, output that does
 * not match the lines is an error (the start then dumps one by one), never a wrong
 * assignment of one dump's JSON to another line.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IpCommand, IpCommandError } from '../../src/routing/ip.js';

let dir: string;
beforeAll(() => (dir = mkdtempSync(join(tmpdir(), 'tenc-ipdumps-'))));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A fake ip: prints `stdout` and `stderr`, exits with `code` (whatever its arguments). */
function fake(name: string, stdout: string, stderr: string, code: number): IpCommand {
  const f = join(dir, name);
  writeFileSync(f, `#!/bin/sh\ncat >/dev/null\nprintf '%s' '${stdout}'\nprintf '%s' '${stderr}' >&2\nexit ${code}\n`);
  chmodSync(f, 0o755);
  return new IpCommand({ binary: f });
}

describe('IpCommand.dumps', () => {
  it('the real ip: one JSON array per line; a failing line (no such device) is null, the others keep their place', async () => {
    const ip = new IpCommand();
    const [rules, bad, addrs, link] = await ip.dumps(4, ['rule show', 'addr show dev tenc-no-such0', 'addr show', 'link show dev lo']);
    expect(rules!.some((r) => r.table === 'main')).toBe(true);
    expect(bad).toBeNull();
    expect(addrs!.some((l) => l.ifname === 'lo')).toBe(true);
    expect(link![0].ifname).toBe('lo');
    expect(await ip.dumps(6, [])).toEqual([]);
  });

  it('fake ip: failed lines named on stderr map to null', async () => {
    const ip = fake('ok', '[1]\n[{"a":2}]\n', 'Error\nCommand failed -:2\n', 1);
    expect(await ip.dumps(4, ['x', 'y', 'z'])).toEqual([[1], null, [{ a: 2 }]]);
  });

  it('fake ip: output that does not line up, or is not JSON, or a failure without a line, throws', async () => {
    await expect(fake('short', '[1]\n', '', 0).dumps(4, ['x', 'y'])).rejects.toThrow(/1 outputs for 2 lines/);
    await expect(fake('long', '[1]\n[2]\n[3]\n', 'Command failed -:1\n', 1).dumps(4, ['x', 'y', 'z'])).rejects.toThrow(/3 outputs for 3 lines, 1 failed/);
    await expect(fake('junk', 'nope\n', '', 0).dumps(4, ['x'])).rejects.toThrow(/line 1 \(x\) printed no JSON/);
    await expect(fake('anon', '[1]\n', 'boom\n', 1).dumps(4, ['x'])).rejects.toBeInstanceOf(IpCommandError);
    await expect(new IpCommand({ binary: join(dir, 'missing') }).dumps(4, ['x'])).rejects.toThrow(/cannot run/);
  });
});
