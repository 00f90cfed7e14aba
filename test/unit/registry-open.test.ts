/** `tenc agent --registry SPEC`: which backend, and errors that name what is wrong. */
import { describe, it, expect } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openRegistry, RegistrySpecError } from '../../src/registry/open.js';
import { DirectoryRegistry } from '../../src/registry/dir.js';
import { parseEtcdSpec, redactCredentials } from '../../src/registry/etcd-client.js';
import { registrySpecProblem } from '../../src/agent/run.js';

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

describe('etcd spec: credentials never in the URL, never shown', () => {
  // https://:PASSWORD@HOST was taken with the password dropped, and the whole spec logged and echoed
  it.each([
    ['a password alone', 'https://:s3cret@h:2379'],
    ['user and password', 'https://u:s3cret@h:2379?ca=/c'],
    ['a user alone', 'https://s3cret@h:2379'],
    ['on the second endpoint', 'https://g:2379,https://u:s3cret@h:2379'],
    ['a password with ","', 'https://u:s3,cret@h:2379'],
    ['a password with "/"', 'https://u:s3/cret@h:2379'],
    ['a password with "?"', 'https://u:s3?cret@h:2379'],
  ])('refuses %s, naming user= and password-file= and showing no endpoint', (_what, spec) => {
    expect(() => parseEtcdSpec(spec)).toThrow('etcd: an endpoint has a user or password in its URL (not shown): give the user as user=NAME and the password in a file, password-file=FILE');
    expect(registrySpecProblem(`etcd:${spec}`)).not.toMatch(/s3|cret/);
    expect(registrySpecProblem(`etcd:${spec}`)).toMatch(/^etcd: an endpoint has a user or password/);
  });

  it('the documented way (user=NAME&password-file=FILE) is taken', () => {
    expect(parseEtcdSpec('https://h:2379?user=node1&password-file=/etc/tenc/etcd-password')).toMatchObject({ endpoints: ['https://h:2379'], user: 'node1', passwordFile: '/etc/tenc/etcd-password' });
  });

  it('redactCredentials masks user info and password= values wherever a spec is shown', () => {
    expect(redactCredentials('--registry etcd:https://u:s3cret@h:2379: etcd: x')).toBe('--registry etcd:https://***@h:2379: etcd: x');
    expect(redactCredentials('etcd:https://:s3@c,r/et@h:2379?ca=/c')).toBe('etcd:https://***@h:2379?ca=/c');
    expect(redactCredentials('etcd:https://g:2379,https://u:p@h:2379')).toBe('etcd:https://***@h:2379'); // everything up to the last user info
    expect(redactCredentials('etcd:https://h:2379?user=u&password=s3cret&ttl=5')).toBe('etcd:https://h:2379?user=u&password=***&ttl=5');
    expect(redactCredentials('dir:/var/lib/tenc/registry')).toBe('dir:/var/lib/tenc/registry');
    expect(redactCredentials('etcd:https://h1:2379,https://h2:2379?user=a@b&password-file=/p')).toBe('etcd:https://h1:2379,https://h2:2379?user=a@b&password-file=/p');
  });
});

describe('registrySpecProblem: the form of --registry SPEC (exit 2), before anything is opened', () => {
  it.each([
    ['bogus:x', 'unknown backend "bogus" (known: dir, etcd, kubernetes)'],
    ['dir:', 'dir: needs a directory'],
    ['etcd:https://h:2379?colour=red', 'etcd: unknown option "colour"'],
    ['etcd:https://h:2379?ttl=1', 'etcd: ttl "1" must be 2..600 seconds'],
  ])('%s: %s', (spec, problem) => {
    expect(registrySpecProblem(spec)).toContain(problem);
  });

  it.each([['/nonexistent/registry'], ['dir:/nonexistent/registry'], ['kubernetes'], ['kubernetes:/nonexistent/kubeconfig'], ['etcd:https://h:2379?ca=/nonexistent/ca.pem']])(
    '%s: well formed (what it names is looked for when the agent starts: exit 1)',
    (spec) => {
      expect(registrySpecProblem(spec)).toBeNull();
    },
  );
});
