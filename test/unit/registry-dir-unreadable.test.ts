/**
 * One node's peer directory that cannot be read (EACCES: a directory of another uid,
 * mode 0700) leaves out that node's entries only, reported; before, readdirSync threw
 * out of peers() and the project lost every peer. readdirSync is made to fail for that
 * directory (the tests run as root, for whom a 0700 directory is readable).
 */
import { describe, it, expect, vi, afterEach } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const unreadable = new Set<string>();
vi.mock('node:fs', async (orig) => {
  const fs = await orig<typeof import('node:fs')>();
  const readdirSync = ((p: string, o?: unknown) => {
    if (unreadable.has(String(p))) throw Object.assign(new Error(`EACCES: permission denied, scandir '${p}'`), { code: 'EACCES' });
    return (fs.readdirSync as (p: string, o?: unknown) => unknown)(p, o);
  }) as typeof fs.readdirSync;
  return { ...fs, default: { ...fs, readdirSync }, readdirSync };
});

const { DirectoryRegistry } = await import('../../src/registry/dir.js');

const KEY = (c: string) => c.repeat(42) + 'E=';

describe('directory backend: an unreadable node directory', () => {
  const dirs: string[] = [];
  afterEach(() => {
    unreadable.clear();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('leaves out that node\'s peers only, reported', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tenc-dir-eacces-'));
    dirs.push(dir);
    const problems: string[] = [];
    const reg = new DirectoryRegistry(dir, { onProblem: (f, why) => problems.push(`${f.slice(dir.length + 1)}: ${why}`) });
    await reg.publishPeer({ project: 'alpha', pod: 'web', node: 'n1', publicKey: KEY('A'), endpoint: '10.128.1.10:51820' });
    await reg.publishPeer({ project: 'alpha', pod: 'db', node: 'n2', publicKey: KEY('B'), endpoint: '10.128.2.10:51820' });
    mkdirSync(join(dir, 'peers', 'alpha', 'n3'), { mode: 0o700 });
    unreadable.add(join(dir, 'peers', 'alpha', 'n3'));
    expect((await reg.peers('alpha')).map((p) => `${p.node}/${p.pod}`)).toEqual(['n1/web', 'n2/db']);
    expect(problems).toEqual(['peers/alpha/n3: cannot read the directory (EACCES): its entries ignored']);
  });
});
