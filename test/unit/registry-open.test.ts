/** `tenc agent --registry SPEC`: which backend, and errors that name what is wrong. */
import { describe, it, expect } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openRegistry, RegistrySpecError } from '../../src/registry/open.js';
import { DirectoryRegistry } from '../../src/registry/dir.js';

describe('openRegistry', () => {
  it('dir:PATH and a bare PATH open the directory registry', async () => {
    const d = mkdtempSync(join(tmpdir(), 'tenc-open-'));
    try {
      expect(await openRegistry(`dir:${d}`)).toBeInstanceOf(DirectoryRegistry);
      expect(((await openRegistry(d)) as DirectoryRegistry).dir).toBe(d);
    } finally {
      rmSync(d, { recursive: true });
    }
  });

  it('names the spec and the problem', async () => {
    await expect(openRegistry('dir:/nonexistent/tenc')).rejects.toThrow(/--registry dir:\/nonexistent\/tenc: registry directory \/nonexistent\/tenc does not exist/);
    await expect(openRegistry('dir:')).rejects.toThrow(RegistrySpecError);
    await expect(openRegistry('zookeeper:x')).rejects.toThrow(/unknown backend "zookeeper" \(known: dir/);
  });
});
