/**
 * runProcess's netns option (io/run.ts, native/spawn.c): a child started in the
 * namespace of a path, without nsenter, the way the node agent now configures a pod's
 * namespace (agent/netns.ts failClosedIn, cleanNetns), in real namespaces:
 *
 *  1. children with and without the option, 40 at once on libuv's pool: each child is
 *     in the namespace it was given (/proc/self/ns/net), the others in this process's;
 *     afterwards every pool thread is back in this process's namespace
 *  2. a path that is not a network namespace (a plain file) or does not exist, and a
 *     relative path: rejected with the errno (EINVAL, ENOENT) or a TypeError, naming
 *     the path; no child ran (a marker file stays absent)
 *  3. TENC_FAST_SPAWN=0 (node's spawn through nsenter): the same namespaces
 *  4. IpCommand({ netnsPath }) and runNft(..., netns): an address and an nft table land
 *     in the given namespace and not in this one
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdtempSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { readlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Netns, destroyAll, requireRoot, requireTool } from './lib.js';
import { ensureBuilt } from '../build.js';
import { runProcess } from '../../src/io/run.js';
import { runNft } from '../../src/io/nft.js';
import { IpCommand } from '../../src/routing/ip.js';

let a: Netns;
let b: Netns;
let dir: string;
const nsOf = (path: string) => `net:[${statSync(path).ino}]`;

beforeAll(() => {
  requireRoot();
  requireTool('nsenter');
  requireTool('nft');
  ensureBuilt();
  a = Netns.create('runa');
  b = Netns.create('runb');
  dir = mkdtempSync(join(tmpdir(), 'tenc-run-netns-'));
});

afterAll(() => {
  destroyAll();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('runProcess in a network namespace', () => {
  it('1. each child in the namespace it was given, the others in ours; the pool threads go back', async () => {
    const self = readlinkSync('/proc/self/ns/net');
    const paths = [`/run/netns/${a.name}`, `/run/netns/${b.name}`, undefined];
    const want = paths.map((p) => (p ? nsOf(p) : self));
    expect(new Set(want).size).toBe(3);
    const runs = Array.from({ length: 40 }, (_, i) => runProcess('readlink', ['/proc/self/ns/net'], { netns: paths[i % 3] }));
    const got = (await Promise.all(runs)).map((r) => r.stdout.trim());
    got.forEach((g, i) => expect(g, `child ${i}`).toBe(want[i % 3]));
    // libuv's pool threads (a file call runs on one: /proc/thread-self is that thread)
    const threads = await Promise.all(Array.from({ length: 32 }, () => readlink('/proc/thread-self/ns/net')));
    expect(new Set(threads)).toEqual(new Set([self]));
    const after = await Promise.all(Array.from({ length: 8 }, () => runProcess('readlink', ['/proc/self/ns/net'])));
    expect(new Set(after.map((r) => r.stdout.trim()))).toEqual(new Set([self]));
  });

  it('2. not a namespace, missing, relative: rejected naming the path, no child ran', async () => {
    const plain = join(dir, 'plain');
    writeFileSync(plain, 'x');
    const marker = join(dir, 'ran');
    const run = (netns: string) => runProcess('touch', [marker], { netns });
    const notNs = await run(plain).catch((e: Error & { code?: string }) => e);
    expect(notNs).toBeInstanceOf(Error);
    expect((notNs as { code?: string }).code).toBe('EINVAL');
    expect((notNs as Error).message).toContain(plain);
    const missing = await run(join(dir, 'no-such-ns')).catch((e: Error & { code?: string }) => e);
    expect((missing as { code?: string }).code).toBe('ENOENT');
    expect((missing as Error).message).toContain('no-such-ns');
    await expect(run('run/netns/x')).rejects.toThrow(/absolute path/);
    expect(existsSync(marker)).toBe(false);
    // and the same call with a namespace runs
    await run(`/run/netns/${a.name}`);
    expect(existsSync(marker)).toBe(true);
  });

  it('3. TENC_FAST_SPAWN=0: through nsenter, the same namespaces', async () => {
    const before = process.env.TENC_FAST_SPAWN;
    process.env.TENC_FAST_SPAWN = '0';
    try {
      const r = await runProcess('readlink', ['/proc/self/ns/net'], { netns: `/run/netns/${b.name}` });
      expect(r.stdout.trim()).toBe(nsOf(`/run/netns/${b.name}`));
      const own = await runProcess('readlink', ['/proc/self/ns/net']);
      expect(own.stdout.trim()).toBe(readlinkSync('/proc/self/ns/net'));
    } finally {
      if (before === undefined) delete process.env.TENC_FAST_SPAWN;
      else process.env.TENC_FAST_SPAWN = before;
    }
  });

  it('4. IpCommand netnsPath and runNft netns configure that namespace only', async () => {
    const ip = new IpCommand({ netnsPath: `/run/netns/${a.name}` });
    await ip.run(['addr', 'add', '10.91.0.1/32', 'dev', 'lo']);
    expect(a.ip('-j', 'addr', 'show', 'dev', 'lo')).toContain('10.91.0.1');
    expect(b.ip('-j', 'addr', 'show', 'dev', 'lo')).not.toContain('10.91.0.1');
    expect((await new IpCommand().json(['addr', 'show', 'dev', 'lo'])).flatMap((l) => l.addr_info.map((x: { local: string }) => x.local))).not.toContain('10.91.0.1');
    await runNft('nft', ['-f', '-'], 'table inet tenc_run_test { }\n', `/run/netns/${b.name}`);
    expect(b.exec('nft', 'list', 'tables')).toContain('tenc_run_test');
    expect(a.exec('nft', 'list', 'tables')).not.toContain('tenc_run_test');
    await expect(runNft('nft', ['delete', 'table', 'inet', 'tenc_run_test_none'], undefined, `/run/netns/${a.name}`)).rejects.toThrow(new RegExp(`\\(in /run/netns/${a.name}\\)`));
  });
});
