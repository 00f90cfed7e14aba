// `tenc k8s create-psk NAMESPACE`: a valid Secret (Kubernetes schema), a fresh key the
// registry accepts (round trip through the in-test API server), the key on stdout only,
// usage errors named; `tenc k8s --help`.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import yaml from 'js-yaml';
import { Secret } from 'kubernetes-models/v1';
import { describe, expect, it } from 'vitest';
import { runCli, type CliIo } from '../../src/cli/cli.js';
import { KubernetesRegistry, parsePsk } from '../../src/registry/kubernetes.js';
import { FakeApiServer } from '../k8s/fake-apiserver.js';

async function tenc(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t), readStdin: async () => '' };
  const code = await runCli(argv, io);
  return { code, stdout, stderr };
}

describe('tenc k8s create-psk', () => {
  it('prints a valid Secret with a fresh 32-byte psk, on stdout only; the registry reads it', async () => {
    const a = await tenc('k8s', 'create-psk', 'shop');
    expect(a).toMatchObject({ code: 0, stderr: '' });
    const obj = yaml.load(a.stdout) as Record<string, any>;
    new Secret(obj as any).validate(); // throws on a schema error
    expect(obj).toMatchObject({ apiVersion: 'v1', kind: 'Secret', type: 'Opaque', metadata: { name: 'tenc-psk', namespace: 'shop' } });
    expect(Object.keys(obj.data)).toEqual(['psk']);
    const key = parsePsk(obj.data, 'shop');
    expect(Buffer.from(key, 'base64')).toHaveLength(32);
    const b = await tenc('k8s', 'create-psk', 'shop');
    expect(parsePsk((yaml.load(b.stdout) as any).data, 'shop')).not.toBe(key);
    // what kubectl create would store, read by the agent's registry
    const api = new FakeApiServer();
    await api.start();
    const dir = mkdtempSync(join(tmpdir(), 'tenc-k8scli-'));
    const r = new KubernetesRegistry(api.kubeConfig(api.agentToken('node1')), { pskDir: dir, log: { warn: () => {}, info: () => {} }, syncTimeoutMs: 5000 });
    try {
      api.put('namespaces', { metadata: { name: 'shop', labels: { 'tenc.io/protect': 'true' } } });
      api.put('secrets', obj);
      const f = await r.pskFile('shop');
      expect((await import('node:fs')).readFileSync(f, 'utf8')).toBe(`${key}\n`);
    } finally {
      await r.close();
      await api.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('usage errors name the problem (exit 2); --help', async () => {
    for (const [argv, msg] of [
      [['k8s'], 'missing k8s command'],
      [['k8s', 'frob'], 'unknown k8s command "frob"'],
      [['k8s', 'create-psk'], 'missing argument'],
      [['k8s', 'create-psk', 'Shop_1'], '"Shop_1" is not a namespace name'],
      [['k8s', 'create-psk', 'a'.repeat(64)], 'is not a namespace name'],
      [['k8s', 'create-psk', 'shop', 'more'], 'unexpected argument "more"'],
      [['k8s', 'create-psk', '--force', 'shop'], "Unknown option '--force'"],
    ] as [string[], string][]) {
      const r = await tenc(...argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toContain(msg);
    }
    const h = await tenc('k8s', 'create-psk', '--help');
    expect(h.code).toBe(0);
    expect(h.stdout).toContain('Usage: tenc k8s create-psk NAMESPACE');
    expect(h.stdout).toContain('kubectl create -f -');
    expect((await tenc('k8s', '--help')).stdout).toContain('create-psk NAMESPACE');
    expect((await tenc('help', 'k8s')).stdout).toContain('create-psk NAMESPACE');
    expect((await tenc('--help')).stdout).toContain('tenc k8s create-psk NAMESPACE');
  });
});
