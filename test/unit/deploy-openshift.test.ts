// deploy/openshift: the component that gives the agent's DaemonSet OpenShift's CNI hook
// (README "OpenShift"), rendered as `kubectl kustomize` does (./kustomize-lite.ts: no
// kubectl needed; it refuses what it does not implement) as the README has it applied
// (deploy/ with `- openshift` added to its components), against deploy/ rendered alone:
// only the CNI containers' mode and SELinux type and the plugin directory differ. The
// NetworkAttachmentDefinition template is a configuration the plugin takes as unchained.
// deploy/cni-install.sh's unchained mode (TENC_CNI_MODE=unchained, what the component
// sets) installs, keeps and removes the binary and never touches a CNI config.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import yaml from 'js-yaml';
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { parseTencConfig, tencPlugin } from '../../src/cni/plugin.js';
import { runPlugin } from '../../src/cni/skeleton.js';
import { whileKeeping } from './cni-fakes.js';
import { render, type Obj } from './kustomize-lite.js';

const root = join(__dirname, '../..');
const deploy = join(root, 'deploy');
const script = join(deploy, 'cni-install.sh');

/** deploy/ as the README has it applied on OpenShift: a copy with `- openshift` added to its components. */
function renderOpenShift(): Obj[] {
  const d = mkdtempSync(join(tmpdir(), 'tenc-os-'));
  try {
    cpSync(deploy, join(d, 'deploy'), { recursive: true });
    const k = join(d, 'deploy', 'kustomization.yaml');
    const text = readFileSync(k, 'utf8');
    expect(text).toMatch(/^components:\n {2}- image\n/m);
    writeFileSync(k, text.replace(/^components:\n {2}- image\n/m, 'components:\n  - image\n  - openshift\n'));
    return render(join(d, 'deploy'));
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
}

const agentDs = (objs: Obj[]) => objs.find((o) => o.kind === 'DaemonSet' && o.metadata.name === 'tenc-agent')!;
const container = (ds: Obj, name: string) => [...ds.spec.template.spec.initContainers, ...ds.spec.template.spec.containers].find((c: Obj) => c.name === name)!;
/** The DaemonSet with its containers, init containers and volumes in name order. */
const byName = (ds: Obj): Obj => {
  const o = structuredClone(ds);
  const spec = o.spec.template.spec;
  for (const k of ['containers', 'initContainers', 'volumes']) spec[k] = [...spec[k]].sort((a: Obj, b: Obj) => a.name.localeCompare(b.name));
  return o;
};
const env = (c: Obj) => Object.fromEntries((c.env ?? []).map((e: Obj) => [e.name, e.value]));

describe('deploy/openshift (rendered as kustomize does: ./kustomize-lite.ts)', () => {
  const base = render(deploy);
  const os = renderOpenShift();
  const ds = agentDs(os);

  it('the CNI containers install the plugin binary only (unchained), into the host\'s /var/lib/cni/bin, as spc_t', () => {
    for (const [name, cmd] of [
      ['install-cni', 'install'],
      ['cni-keeper', 'keep'],
    ]) {
      const c = container(ds, name);
      expect(c.command).toEqual(['/opt/tenc/deploy/cni-install.sh', cmd]);
      expect(env(c)).toEqual({
        TENC_CNI_MODE: 'unchained',
        CNI_BIN_DIR: '/host/opt/cni/bin',
        CNI_CONF_DIR: '/host/etc/cni/net.d',
        // the keeper's status file (its readinessProbe): in unchained mode "ready" once the binary is in place
        ...(name === 'cni-keeper' ? { TENC_CNI_STATUS: '/tmp/tenc-cni-status' } : {}),
      });
      expect(c.securityContext.seLinuxOptions).toEqual({ type: 'spc_t' });
      // no more than before: no privilege, the same three capabilities
      expect(c.securityContext).toMatchObject({ runAsUser: 0, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'], add: ['DAC_OVERRIDE', 'CHOWN', 'FOWNER'] } });
      expect(c.securityContext.privileged).toBeUndefined();
      // CNI_BIN_DIR is where the cni-bin volume is mounted
      expect(c.volumeMounts.find((m: Obj) => m.name === 'cni-bin').mountPath).toBe(env(c).CNI_BIN_DIR);
    }
    const vols = Object.fromEntries(ds.spec.template.spec.volumes.map((v: Obj) => [v.name, v.hostPath]));
    expect(vols['cni-bin']).toEqual({ path: '/var/lib/cni/bin', type: 'DirectoryOrCreate' });
    expect(() => new DaemonSet(ds).validate()).not.toThrow();
  });

  it('nothing else differs from deploy/ rendered alone (the agent container, the other objects)', () => {
    expect(os.map((o) => `${o.kind}/${o.metadata.name}`)).toEqual(base.map((o) => `${o.kind}/${o.metadata.name}`));
    expect(os.filter((o) => o !== ds)).toEqual(base.filter((o) => o !== agentDs(base)));
    // undo the component's fields: the rest is deploy/'s DaemonSet
    const undone = structuredClone(ds);
    for (const name of ['install-cni', 'cni-keeper']) {
      const c = container(undone, name);
      c.env = c.env.filter((e: Obj) => e.name !== 'TENC_CNI_MODE');
      delete c.securityContext.seLinuxOptions;
    }
    undone.spec.template.spec.volumes.find((v: Obj) => v.name === 'cni-bin').hostPath.path = '/opt/cni/bin';
    // the agent's cluster DNS and ranges: OpenShift's install defaults, over kind's
    const env = (d: Obj) => Object.fromEntries(container(d, 'agent').env.filter((e: Obj) => e.value !== undefined).map((e: Obj) => [e.name, e.value]));
    expect(env(ds)).toMatchObject({ TENC_CLUSTER_DNS: '172.30.0.10', TENC_CLASSIFY_CIDRS: '10.128.0.0/14,172.30.0.0/16' });
    expect(env(agentDs(base))).toMatchObject({ TENC_CLUSTER_DNS: '10.96.0.10', TENC_CLASSIFY_CIDRS: '10.244.0.0/16,10.96.0.0/16' });
    for (const e of container(undone, 'agent').env as Obj[]) if (e.name.startsWith('TENC_CL')) e.value = env(agentDs(base))[e.name];
    // a strategic merge may put patched env entries first (the kubelet expands args from the whole env): compared by name
    const sortEnv = (d: Obj) => {
      const c = container(d, 'agent');
      c.env = [...c.env].sort((x: Obj, y: Obj) => String(x.name).localeCompare(String(y.name)));
      return d;
    };
    sortEnv(undone);
    const baseDs = sortEnv(structuredClone(agentDs(base)));
    // a strategic merge may put the patched containers first: compared by name
    expect(byName(undone)).toEqual(byName(baseDs));
  });

  it('the NetworkAttachmentDefinition template: type tenc, unchained, cniVersion 0.4.0, no namespace (applied in each protected one)', () => {
    const docs = yaml.loadAll(readFileSync(join(deploy, 'openshift', 'nad.yaml'), 'utf8')).filter((d): d is Obj => !!d);
    expect(docs).toHaveLength(1);
    const nad = docs[0];
    expect([nad.apiVersion, nad.kind, nad.metadata]).toEqual(['k8s.cni.cncf.io/v1', 'NetworkAttachmentDefinition', { name: 'tenc' }]);
    const config = JSON.parse(nad.spec.config);
    expect(config).toEqual({ cniVersion: '0.4.0', name: 'tenc', type: 'tenc', unchained: true });
    expect(parseTencConfig(config)).toEqual({ agentSocket: '/run/tenc/agent.sock', timeoutMs: 5000, unchained: true });
    // the component is not an object of its own and holds no NAD: the NAD is per namespace
    expect(os.some((o) => o.kind === 'NetworkAttachmentDefinition')).toBe(false);
  });
});

describe('kustomize-lite refuses what it does not implement (never renders something else)', () => {
  /** deploy/ with the openshift component, its kustomization or patch rewritten by `edit`. */
  const renderWith = (edit: (k: string, patch: string) => [string, string]) => {
    const d = mkdtempSync(join(tmpdir(), 'tenc-os-lite-'));
    try {
      cpSync(deploy, join(d, 'deploy'), { recursive: true });
      const k = join(d, 'deploy', 'kustomization.yaml');
      writeFileSync(k, readFileSync(k, 'utf8').replace(/^components:\n {2}- image\n/m, 'components:\n  - image\n  - openshift\n'));
      const ck = join(d, 'deploy', 'openshift', 'kustomization.yaml');
      const p = join(d, 'deploy', 'openshift', 'daemonset-patch.yaml');
      const [a, b] = edit(readFileSync(ck, 'utf8'), readFileSync(p, 'utf8'));
      writeFileSync(ck, a);
      writeFileSync(p, b);
      return render(join(d, 'deploy'));
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  };

  it('the component as it is renders; a target, an inline patch, another field, a directive, a list without a merge key, a null: thrown', () => {
    expect(agentDs(renderWith((k, p) => [k, p]))).toEqual(agentDs(renderOpenShift()));
    const cases: [string, (k: string, p: string) => [string, string], RegExp][] = [
      ['a patch target', (k, p) => [k.replace('  - path: daemonset-patch.yaml', '  - path: daemonset-patch.yaml\n    target: {kind: DaemonSet}'), p], /patches entry: field\(s\) not supported here: target/],
      ['an inline patch', (k, p) => [k.replace('  - path: daemonset-patch.yaml', '  - patch: "{}"'), p], /field\(s\) not supported here: patch/],
      ['namePrefix', (k, p) => [k + 'namePrefix: x-\n', p], /not supported here: namePrefix/],
      ['$patch: replace', (k, p) => [k, p.replace('        - name: cni-bin\n', '        - name: cni-bin\n          $patch: replace\n')], /directive .*\$patch not supported/],
      ['a list without a merge key here', (k, p) => [k, p.replace('      volumes:\n', '      tolerations:\n        - operator: Exists\n      volumes:\n')], /spec\.template\.spec\.tolerations: a list this renderer has no merge key for/],
      ['a null', (k, p) => [k, p.replace('seLinuxOptions: { type: spc_t }', 'seLinuxOptions: null')], /null \(delete\) not supported/],
      ['another resource', (k, p) => [k, p.replace('name: tenc-agent', 'name: tenc-other')], /0 resources match/],
    ];
    for (const [what, edit, err] of cases) expect(() => renderWith(edit), what).toThrow(err);
  });
});

describe('the NAD\'s configuration, as Multus passes it to the plugin', () => {
  let dir: string;
  let server: Server;
  const seen: Obj[] = [];
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tenc-os-sock-'));
    server = createServer((c) => {
      let buf = '';
      c.setEncoding('utf8').on('data', (d: string) => {
        buf += d;
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        const req = JSON.parse(buf.slice(0, nl));
        seen.push(req);
        c.write(JSON.stringify({ id: req.id, ok: true, result: { protected: true } }) + '\n');
      });
      c.on('error', () => {});
    });
    await new Promise<void>((r) => server.listen(join(dir, 'agent.sock'), r));
  });
  afterAll(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('ADD (net1, no prevResult): the agent asked without addresses, the empty 0.4.0 result printed', async () => {
    const nad = yaml.load(readFileSync(join(deploy, 'openshift', 'nad.yaml'), 'utf8')) as Obj;
    const stdin = JSON.stringify({ ...JSON.parse(nad.spec.config), agentSocket: join(dir, 'agent.sock') });
    const cniEnv = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c0ffee', CNI_NETNS: '/proc/4242/ns/net', CNI_IFNAME: 'net1', CNI_PATH: '/var/lib/cni/bin', CNI_ARGS: 'IgnoreUnknown=true;K8S_POD_NAMESPACE=alpha;K8S_POD_NAME=web-1;K8S_POD_UID=u-1' };
    let out = '';
    const code = await runPlugin(tencPlugin, { env: cniEnv, stdin: async () => stdin, stdout: (s) => (out += s) });
    expect([code, JSON.parse(out)]).toEqual([0, { cniVersion: '0.4.0', interfaces: [], ips: [], routes: [], dns: {} }]);
    expect(seen).toEqual([{ id: 1, op: 'cni-add', containerId: 'c0ffee', netns: '/proc/4242/ns/net', ifname: 'net1', podNamespace: 'alpha', podName: 'web-1', podUid: 'u-1', timeoutMs: 5000 }]);
  });
});

describe('deploy/cni-install.sh TENC_CNI_MODE=unchained (what the component sets)', () => {
  let dir: string;
  let e: Record<string, string>;
  const run = (...args: string[]) => spawnSync('bash', [script, ...args], { env: { ...process.env, ...e }, encoding: 'utf8', timeout: 20_000 });
  const bin = () => join(dir, 'bin', 'tenc');
  /** Multus' single-plugin config as the network operator writes it, and a conflist holding a tenc entry. */
  const multus = () => join(dir, 'net.d', '00-multus.conf');
  const other = () => join(dir, 'net.d', '10-other.conflist');
  const configs = () => [multus(), other()].map((f) => [readFileSync(f, 'utf8'), statSync(f).mtimeMs, statSync(f).ino]);

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tenc-os-cni-'));
    mkdirSync(join(dir, 'bin'));
    mkdirSync(join(dir, 'net.d'));
    writeFileSync(join(dir, 'launcher'), '#!/bin/sh\necho tenc\n');
    writeFileSync(multus(), JSON.stringify({ cniVersion: '0.3.1', name: 'multus-cni-network', type: 'multus', delegates: [{ cniVersion: '0.4.0', name: 'ovn-kubernetes', type: 'ovn-k8s-cni-overlay' }] }));
    writeFileSync(other(), JSON.stringify({ cniVersion: '1.0.0', name: 'x', plugins: [{ type: 'bridge' }, { type: 'tenc' }] }));
    // CNI_WAIT is left at its default (300 s): unchained, nothing waits for a config
    e = { CNI_BIN_DIR: join(dir, 'bin'), CNI_CONF_DIR: join(dir, 'net.d'), TENC_CNI_SRC: join(dir, 'launcher'), TENC_CNI_MODE: 'unchained', TENC_CNI_STATUS: join(dir, 'status') };
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('install puts the binary in place and edits no config, Multus\' .conf included; uninstall removes the binary only', () => {
    const before = configs();
    const r = run('install');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain(`installed ${bin()}`);
    expect(r.stderr).toContain('unchained: no CNI config edited');
    // nothing to chain: ready (the cni-keeper's readinessProbe)
    expect(readFileSync(join(dir, 'status'), 'utf8')).toBe(`ready: unchained: ${bin()} installed, no CNI config edited\n`);
    expect(statSync(bin()).mode & 0o777).toBe(0o755);
    expect(readFileSync(bin(), 'utf8')).toBe('#!/bin/sh\necho tenc\n');
    expect(configs()).toEqual(before);
    expect(run('install').stderr).toContain('is current');
    const u = run('uninstall');
    expect(u.status, u.stderr).toBe(0);
    expect(existsSync(bin())).toBe(false);
    expect(configs()).toEqual(before); // not even another conflist's tenc entry
    // no CNI config at all: installed at once, no wait
    rmSync(join(dir, 'net.d'), { recursive: true });
    const t0 = Date.now();
    expect(run('install').status).toBe(0);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(existsSync(bin())).toBe(true);
  });

  it('keep: the binary installed again when it goes, no config touched; exits 0 on SIGTERM; a mode that is not one is refused', async () => {
    const before = configs();
    const kept = await whileKeeping(e, async (k) => {
      await expect.poll(() => existsSync(bin()), { timeout: 10_000 }).toBe(true);
      rmSync(bin());
      await expect.poll(() => k.err(), { timeout: 10_000 }).toContain(`installed ${bin()} again`);
      expect(existsSync(bin())).toBe(true);
      // Multus' config rewritten by the network operator: nothing to do for tenc
      writeFileSync(multus(), readFileSync(multus(), 'utf8'));
      await new Promise((r) => setTimeout(r, 500));
      expect(readFileSync(other(), 'utf8')).toBe(before[1][0]);
      expect(readFileSync(multus(), 'utf8')).toBe(before[0][0]);
      expect(k.err()).not.toMatch(/\bchain|tenc entry/);
    });
    expect(kept.code).toBe(0);
    e.TENC_CNI_MODE = 'multus';
    const bad = run('install');
    expect([bad.status, bad.stderr]).toEqual([1, expect.stringContaining("TENC_CNI_MODE: 'multus' is not chained or unchained")]);
  });
});
