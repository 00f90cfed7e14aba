// deploy/: every object kustomization.yaml renders is validated offline against the
// Kubernetes schemas (kubernetes-models); the TencPeer CRD's schema against sample
// objects (and against the in-test API server's emulation of it); RBAC and admission
// against what the code does; deploy/cni-install.sh against a temporary CNI directory.
//
// `kubectl kustomize` is not installed here (Debian's kubernetes-client is kubectl 1.20,
// too old to trust for this), so the test renders the kustomization itself: it is a
// list of plain resources plus one `images` rewrite, which is all render() supports
// (anything else in kustomization.yaml fails the test).
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Ajv from 'ajv';
import yaml from 'js-yaml';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding } from 'kubernetes-models/admissionregistration.k8s.io/v1';
import { CustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1';
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { ClusterRole, ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { Namespace, ServiceAccount } from 'kubernetes-models/v1';
import { AGENT_USER, FakeApiServer, NODE_EXTRA } from '../k8s/fake-apiserver.js';
import { parsePolicy } from '../../src/policy/policy.js';

const root = join(__dirname, '../..');
const deploy = join(root, 'deploy');
type Obj = Record<string, any>;

const MODELS: Record<string, new (o: any) => { validate(): void }> = {
  'v1/Namespace': Namespace,
  'v1/ServiceAccount': ServiceAccount,
  'apps/v1/DaemonSet': DaemonSet,
  'rbac.authorization.k8s.io/v1/ClusterRole': ClusterRole,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding,
  'apiextensions.k8s.io/v1/CustomResourceDefinition': CustomResourceDefinition,
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy': ValidatingAdmissionPolicy,
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding': ValidatingAdmissionPolicyBinding,
};

function loadDocs(file: string): Obj[] {
  return yaml.loadAll(readFileSync(file, 'utf8')).filter((d): d is Obj => !!d);
}

/** kustomize build for a kustomization of plain resources and `images` (and nothing else). */
function render(dir: string): Obj[] {
  const k = yaml.load(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as Obj;
  const extra = Object.keys(k).filter((f) => !['apiVersion', 'kind', 'resources', 'images'].includes(f));
  if (extra.length) throw new Error(`render(): kustomization fields not supported here: ${extra.join(', ')}`);
  const objs = (k.resources as string[]).flatMap((r) => loadDocs(join(dir, r)));
  for (const o of objs) {
    const pod = o.spec?.template?.spec;
    for (const c of [...(pod?.containers ?? []), ...(pod?.initContainers ?? [])]) {
      const img = (k.images ?? []).find((i: Obj) => i.name === c.image);
      if (img) c.image = `${img.newName ?? img.name}:${img.newTag ?? 'latest'}`;
    }
  }
  return objs;
}

const objs = render(deploy);
const find = (kind: string, name?: string) => objs.find((o) => o.kind === kind && (!name || o.metadata.name === name))!;

/**
 * The schema as the API server applies it with kubectl's default strict field
 * validation: an unknown field is an error (ajv: additionalProperties false on every
 * object schema that lists its properties).
 */
function strict(schema: Obj): Obj {
  const s = structuredClone(schema);
  const walk = (n: Obj) => {
    if (!n || typeof n !== 'object') return;
    if (n.properties && n.additionalProperties === undefined) n.additionalProperties = false;
    for (const v of Object.values(n.properties ?? {})) walk(v as Obj);
    if (n.items) walk(n.items);
  };
  walk(s);
  return s;
}

/** The CRD's CEL rules (x-kubernetes-validations), emulated: ajv has no CEL. */
const CEL: Record<string, (self: Obj) => boolean> = {
  'has(self.service) != has(self.podSelector)': (self) => ('service' in self) !== ('podSelector' in self),
  '!has(self.endPort) || self.endPort >= self.port': (self) => !('endPort' in self) || self.endPort >= self.port,
};

function celRules(schema: Obj): { path: string; rule: string }[] {
  const out: { path: string; rule: string }[] = [];
  const walk = (n: Obj, path: string) => {
    for (const v of n['x-kubernetes-validations'] ?? []) out.push({ path, rule: v.rule });
    for (const [k, v] of Object.entries(n.properties ?? {})) walk(v as Obj, `${path}.${k}`);
    if (n.items) walk(n.items, `${path}[]`);
  };
  walk(schema, '');
  return out;
}

function celOk(schema: Obj, o: Obj): boolean {
  const at = (v: any, path: string): any[] => {
    if (path === '') return [v];
    const m = /^\.([A-Za-z]+)(\[\])?(.*)$/.exec(path)!;
    const x = v?.[m[1]];
    if (x === undefined) return [];
    return m[2] ? (Array.isArray(x) ? x.flatMap((e) => at(e, m[3])) : []) : at(x, m[3]);
  };
  return celRules(schema).every(({ path, rule }) => at(o, path).every((self) => CEL[rule](self)));
}

describe('deploy/ manifests', () => {
  it('every rendered object is a known kind and valid against the Kubernetes schema', () => {
    expect(objs.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual([
      'ClusterRole/tenc-agent',
      'ClusterRoleBinding/tenc-agent',
      'CustomResourceDefinition/tencpeers.tenc.io',
      'CustomResourceDefinition/tencpolicies.tenc.io',
      'DaemonSet/tenc-agent',
      'Namespace/tenc-system',
      'ServiceAccount/tenc-agent',
      'ValidatingAdmissionPolicy/tenc-peer-node',
      'ValidatingAdmissionPolicyBinding/tenc-peer-node',
    ]);
    for (const o of [...objs, ...loadDocs(join(deploy, 'uninstall/cni-uninstall.yaml'))]) {
      const M = MODELS[`${o.apiVersion}/${o.kind}`];
      expect(M, `${o.apiVersion}/${o.kind} has a model`).toBeDefined();
      expect(() => new M(o).validate(), `${o.kind}/${o.metadata.name}`).not.toThrow();
    }
  });

  it('the schema check catches a typo (the test can fail)', () => {
    const ds = structuredClone(find('DaemonSet'));
    ds.spec.template.spec.containers[0].volumeMounts[0].mountPath = 42;
    expect(() => new DaemonSet(ds).validate()).toThrow();
    const crd = structuredClone(find('CustomResourceDefinition'));
    delete crd.spec.names.plural;
    expect(() => new CustomResourceDefinition(crd as any).validate()).toThrow(/plural/);
  });

  it('the DaemonSet: image rewritten, host namespaces, no privileged, the mounts, probes on the health file', () => {
    const ds = find('DaemonSet');
    const spec = ds.spec.template.spec;
    expect(spec.serviceAccountName).toBe(find('ServiceAccount').metadata.name);
    expect(ds.metadata.namespace).toBe('tenc-system');
    expect([spec.hostNetwork, spec.hostPID]).toEqual([true, true]);
    const agent = spec.containers[0];
    expect(agent.image).toBe('localhost/tenc:dev');
    expect(spec.initContainers[0].image).toBe('localhost/tenc:dev');
    expect(agent.securityContext.privileged).toBe(false);
    expect(agent.securityContext.capabilities.add.sort()).toEqual(['NET_ADMIN', 'NET_RAW', 'SYS_ADMIN', 'SYS_PTRACE']);
    const mounts = Object.fromEntries(agent.volumeMounts.map((m: Obj) => [m.mountPath, m.name]));
    for (const p of ['/run/netns', '/var/run/netns', '/run/tenc', '/opt/cni/bin', '/etc/cni/net.d']) expect(mounts[p], p).toBeDefined();
    const vols = new Set(spec.volumes.map((v: Obj) => v.name));
    for (const m of [...agent.volumeMounts, ...spec.initContainers[0].volumeMounts]) expect(vols.has(m.name), m.name).toBe(true);
    const health = agent.env.find((e: Obj) => e.name === 'TENC_HEALTH_FILE').value;
    expect(agent.livenessProbe.exec.command.join(' ')).toContain(health);
    expect(agent.readinessProbe.exec.command.join(' ')).toContain(health);
    expect(agent.args.slice(0, 3)).toEqual(['agent', '--registry', 'kubernetes']);
    for (const c of [agent, spec.initContainers[0]]) expect(c.resources.limits.memory).toBeDefined();
    expect(spec.initContainers[0].command).toEqual(['/opt/tenc/deploy/cni-install.sh', 'install']);
    // the entry is kept chained while the agent runs (a network plugin's restart rewrites its conflist)
    const keeper = spec.containers.find((c: Obj) => c.name === 'cni-keeper');
    expect(keeper.command).toEqual(['/opt/tenc/deploy/cni-install.sh', 'keep']);
    expect(keeper.image).toBe('localhost/tenc:dev');
    expect(keeper.env).toEqual(spec.initContainers[0].env);
    expect(keeper.volumeMounts).toEqual(spec.initContainers[0].volumeMounts);
    expect(keeper.securityContext.capabilities).toEqual(spec.initContainers[0].securityContext.capabilities);
    expect(keeper.resources.limits.memory).toBeDefined();
  });

  it("the TencPolicy CRD's schema (strict field validation and its CEL rules) and the agent's parser agree case by case", () => {
    const crd = find('CustomResourceDefinition', 'tencpolicies.tenc.io');
    const v = crd.spec.versions[0];
    expect([crd.spec.group, v.name, crd.spec.names.plural, crd.spec.names.kind, crd.spec.scope]).toEqual(['tenc.io', 'v1alpha1', 'tencpolicies', 'TencPolicy', 'Namespaced']);
    const schema = v.schema.openAPIV3Schema;
    // every CEL rule of the CRD is emulated here (a new rule fails this until it is)
    for (const r of celRules(schema)) expect(CEL[r.rule], r.rule).toBeDefined();
    const ajv = new (Ajv as unknown as typeof Ajv.default)({ strict: false });
    const check = ajv.compile(strict(schema));
    const schemaOk = (o: Obj) => check(o) && celOk(schema, o);
    const good = {
      apiVersion: 'tenc.io/v1alpha1',
      kind: 'TencPolicy',
      metadata: { name: 'metrics', namespace: 'alpha', uid: 'u', resourceVersion: '7' },
      spec: { service: 'web', ports: [{ protocol: 'TCP', port: 9100, endPort: 9102 }], mode: 'exempt' },
    };
    const agentOk = (o: Obj) => 'policy' in parsePolicy('alpha', o);
    expect(schemaOk(good), JSON.stringify(check.errors)).toBe(true);
    expect(agentOk(good)).toBe(true);
    const variants: [string, Obj, boolean][] = [
      ['podSelector instead of service', { ...good, spec: { podSelector: { matchLabels: { app: 'web' } }, ports: [{ port: 53, protocol: 'UDP' }] } }, true],
      ['mode left out (encrypt)', { ...good, spec: { service: 'web', ports: [{ port: 80 }] } }, true],
      ['port 0', { ...good, spec: { ...good.spec, ports: [{ port: 0 }] } }, false],
      ['port 65536', { ...good, spec: { ...good.spec, ports: [{ port: 65536 }] } }, false],
      ['endPort < port', { ...good, spec: { ...good.spec, ports: [{ port: 9100, endPort: 9000 }] } }, false],
      ['bad mode', { ...good, spec: { ...good.spec, mode: 'plaintext' } }, false],
      ['bad protocol', { ...good, spec: { ...good.spec, ports: [{ protocol: 'ICMP', port: 1 }] } }, false],
      ['unknown field in spec', { ...good, spec: { ...good.spec, encrypted: false } }, false],
      ['unknown field in a port', { ...good, spec: { ...good.spec, ports: [{ port: 80, targetPort: 8080 }] } }, false],
      ['both service and podSelector', { ...good, spec: { ...good.spec, podSelector: { matchLabels: { app: 'web' } } } }, false],
      ['neither service nor podSelector', { ...good, spec: { ports: [{ port: 80 }] } }, false],
      ['empty matchLabels', { ...good, spec: { podSelector: { matchLabels: {} }, ports: [{ port: 80 }] } }, false],
      ['no ports', { ...good, spec: { service: 'web', ports: [] } }, false],
      ['no spec', { ...good, spec: undefined }, false],
    ];
    for (const [what, o, ok] of variants) {
      expect(schemaOk(o), `schema: ${what}`).toBe(ok);
      expect(agentOk(o), `agent: ${what}`).toBe(ok);
    }
  });

  it('RBAC is what the code uses: read-only on pods, tencpeers CRUD, only the Secret named tenc-psk, by get', () => {
    const rules = find('ClusterRole').rules as Obj[];
    const verbsOf = (group: string, res: string) => rules.filter((r) => r.apiGroups.includes(group) && r.resources.includes(res)).flatMap((r) => r.verbs).sort();
    for (const r of ['namespaces', 'pods', 'services']) expect(verbsOf('', r)).toEqual(['get', 'list', 'watch']);
    expect(verbsOf('discovery.k8s.io', 'endpointslices')).toEqual(['get', 'list', 'watch']);
    expect(verbsOf('tenc.io', 'tencpeers')).toEqual(['create', 'delete', 'get', 'list', 'update', 'watch']);
    expect(verbsOf('tenc.io', 'tencpolicies')).toEqual(['get', 'list', 'watch']);
    const sec = rules.filter((r) => r.resources.includes('secrets'));
    expect(sec).toEqual([{ apiGroups: [''], resources: ['secrets'], resourceNames: ['tenc-psk'], verbs: ['get'] }]);
    expect(rules.filter((r) => r.resources.includes('events'))).toEqual([{ apiGroups: [''], resources: ['events'], verbs: ['create'] }]);
    expect(rules.some((r) => r.verbs.includes('*') || r.resources.includes('*') || r.verbs.includes('patch'))).toBe(false);
    const b = find('ClusterRoleBinding');
    expect(b.subjects).toEqual([{ kind: 'ServiceAccount', name: 'tenc-agent', namespace: 'tenc-system' }]);
  });

  it('the admission policy matches the agent and the node claim the in-test API server emulates', () => {
    const vap = find('ValidatingAdmissionPolicy');
    const sa = find('ServiceAccount');
    expect(AGENT_USER).toBe(`system:serviceaccount:${sa.metadata.namespace}:${sa.metadata.name}`);
    expect(vap.spec.matchConditions[0].expression).toContain(`'${AGENT_USER}'`);
    expect(vap.spec.variables[0].expression).toContain(`'${NODE_EXTRA}'`);
    expect(vap.spec.matchConstraints.resourceRules[0].operations.sort()).toEqual(['CREATE', 'DELETE', 'UPDATE']);
    const exprs = vap.spec.validations.map((v: Obj) => v.expression).join('\n');
    expect(exprs).toContain('object.spec.nodeName == variables.node');
    expect(exprs).toContain('oldObject.spec.nodeName == variables.node');
    expect(find('ValidatingAdmissionPolicyBinding').spec).toEqual({ policyName: vap.metadata.name, validationActions: ['Deny'] });
    // the emulation's verdicts on the cases the expressions name
    const agent = (node?: string) => ({ username: AGENT_USER, extra: (node ? { [NODE_EXTRA]: [node] } : {}) as Record<string, string[]> });
    const peer = (node: string) => ({ spec: { nodeName: node } });
    expect(FakeApiServer.admitTencPeer('CREATE', agent('n1'), peer('n1'), null)).toBeNull();
    expect(FakeApiServer.admitTencPeer('CREATE', agent('n2'), peer('n1'), null)).toMatch(/must be the node/);
    expect(FakeApiServer.admitTencPeer('CREATE', agent(), peer('n1'), null)).toMatch(/node-bound/);
    expect(FakeApiServer.admitTencPeer('UPDATE', agent('n1'), peer('n1'), peer('n2'))).toMatch(/only the agent of node n2/);
    expect(FakeApiServer.admitTencPeer('DELETE', agent('n1'), null, peer('n2'))).toMatch(/only the agent of node n2/);
    expect(FakeApiServer.admitTencPeer('DELETE', { username: 'kubernetes-admin' }, null, peer('n2'))).toBeNull();
  });

  it("the CRD's schema accepts a TencPeer as the agent writes it and refuses malformed ones, as the in-test server does", () => {
    const crd = find('CustomResourceDefinition', 'tencpeers.tenc.io');
    const v = crd.spec.versions[0];
    expect([crd.spec.group, v.name, crd.spec.names.plural, crd.spec.names.kind, crd.spec.scope]).toEqual(['tenc.io', 'v1alpha1', 'tencpeers', 'TencPeer', 'Namespaced']);
    const ajv = new (Ajv as unknown as typeof Ajv.default)({ strict: false });
    const check = ajv.compile(v.schema.openAPIV3Schema);
    const good = {
      apiVersion: 'tenc.io/v1alpha1',
      kind: 'TencPeer',
      metadata: { name: 'web-1', namespace: 'alpha', ownerReferences: [{ apiVersion: 'v1', kind: 'Pod', name: 'web-1', uid: 'u' }] },
      spec: { nodeName: 'node1', publicKey: Buffer.alloc(32, 7).toString('base64'), endpoint: '10.128.1.10:51820' },
    };
    expect(check(good), JSON.stringify(check.errors)).toBe(true);
    expect(check({ ...good, spec: { ...good.spec, endpoint: '[fd00::1]:51820' } })).toBe(true);
    expect(FakeApiServer.validateTencPeer(good)).toBeNull();
    const bad = [
      { ...good, spec: { ...good.spec, publicKey: 'AAAA' } },
      { ...good, spec: { publicKey: good.spec.publicKey, endpoint: good.spec.endpoint } },
      { ...good, spec: { ...good.spec, nodeName: '' } },
      { ...good, spec: undefined },
    ];
    for (const b of bad) {
      expect(check(b), JSON.stringify(b.spec)).toBe(false);
      expect(FakeApiServer.validateTencPeer(b), JSON.stringify(b.spec)).not.toBeNull();
    }
    expect(check({ ...good, spec: { ...good.spec, endpoint: 'web:80' } })).toBe(false);
  });
});

describe('deploy/cni-install.sh', () => {
  const script = join(deploy, 'cni-install.sh');
  let dir: string;
  let env: Record<string, string>;
  const conflist = {
    cniVersion: '0.3.1',
    name: 'kindnet',
    plugins: [
      { type: 'ptp', ipMasq: false, ipam: { type: 'host-local', dataDir: '/run/cni-ipam-state', ranges: [[{ subnet: '10.244.0.0/24' }]] }, mtu: 1500 },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  };
  const run = (...args: string[]) => spawnSync('bash', [script, ...args], { env: { ...process.env, ...env }, encoding: 'utf8' });
  const conf = () => join(dir, 'net.d', '10-kindnet.conflist');

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tenc-cni-'));
    mkdirSync(join(dir, 'bin'));
    mkdirSync(join(dir, 'net.d'));
    writeFileSync(join(dir, 'launcher'), '#!/bin/sh\necho tenc\n');
    writeFileSync(conf(), JSON.stringify(conflist, null, 2), { mode: 0o644 });
    env = { CNI_BIN_DIR: join(dir, 'bin'), CNI_CONF_DIR: join(dir, 'net.d'), TENC_CNI_SRC: join(dir, 'launcher'), CNI_WAIT: '0' };
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('install chains the entry last and installs the launcher; again: nothing changes; uninstall restores', () => {
    const r = run('install');
    expect(r.status, r.stderr).toBe(0);
    const after = JSON.parse(readFileSync(conf(), 'utf8'));
    expect(after.plugins.map((p: Obj) => p.type)).toEqual(['ptp', 'portmap', 'tenc']);
    expect({ ...after, plugins: after.plugins.slice(0, 2) }).toEqual(conflist);
    expect(statSync(join(dir, 'bin', 'tenc')).mode & 0o777).toBe(0o755);
    expect(statSync(conf()).mode & 0o777).toBe(0o644);
    const bytes = readFileSync(conf(), 'utf8');
    const again = run('install');
    expect(again.status).toBe(0);
    expect(again.stderr).toContain('tenc entry unchanged');
    expect(again.stderr).toContain('is current');
    expect(readFileSync(conf(), 'utf8')).toBe(bytes);
    // a changed entry (upgrade) replaces the old one, never a second one
    env.TENC_CNI_ENTRY = '{"type":"tenc","logLevel":"debug"}';
    expect(run('install').status).toBe(0);
    const up = JSON.parse(readFileSync(conf(), 'utf8'));
    expect(up.plugins.filter((p: Obj) => p.type === 'tenc')).toEqual([{ type: 'tenc', logLevel: 'debug' }]);
    const u = run('uninstall');
    expect(u.status, u.stderr).toBe(0);
    expect(JSON.parse(readFileSync(conf(), 'utf8'))).toEqual(conflist);
    expect(existsSync(join(dir, 'bin', 'tenc'))).toBe(false);
    expect(run('uninstall').status).toBe(0); // idempotent
  });

  it('keep: chains the entry again when the network plugin rewrites its config, rides out a broken one, exits 0 on SIGTERM', async () => {
    const child = spawn('bash', [script, 'keep'], { env: { ...process.env, ...env, CNI_RECHECK: '0.1' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      const types = () => {
        try {
          return JSON.parse(readFileSync(conf(), 'utf8')).plugins.map((p: Obj) => p.type);
        } catch {
          return null;
        }
      };
      await expect.poll(types, { timeout: 10_000 }).toEqual(['ptp', 'portmap', 'tenc']);
      // kindnetd restarts and writes its conflist again (a new file renamed over it)
      writeFileSync(conf() + '.new', JSON.stringify(conflist, null, 2), { mode: 0o644 });
      renameSync(conf() + '.new', conf());
      await expect.poll(types, { timeout: 10_000 }).toEqual(['ptp', 'portmap', 'tenc']);
      await expect.poll(() => err, { timeout: 10_000 }).toContain('the tenc entry was gone (the network plugin rewrote its config): chained again');
      // a config caught half written: reported, tried again once it changes
      writeFileSync(conf(), '{"plugins": [');
      await expect.poll(() => err, { timeout: 10_000 }).toContain('cannot chain the tenc entry now');
      writeFileSync(conf(), JSON.stringify(conflist));
      await expect.poll(types, { timeout: 10_000 }).toEqual(['ptp', 'portmap', 'tenc']);
      // the launcher removed from the host: installed again
      rmSync(join(dir, 'bin', 'tenc'));
      await expect.poll(() => existsSync(join(dir, 'bin', 'tenc')), { timeout: 10_000 }).toBe(true);
      expect(child.exitCode).toBe(null);
    } catch (e) {
      throw new Error(`${(e as Error).message}\ncni-install.sh keep said:\n${err}`);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(err).toContain('stopped');
    // a recheck that is not a number: refused before anything is installed
    const bad = spawnSync('bash', [script, 'keep'], { env: { ...process.env, ...env, CNI_RECHECK: '0' }, encoding: 'utf8' });
    expect([bad.status, bad.stderr]).toEqual([1, expect.stringContaining("CNI_RECHECK: '0'")]);
  });

  it('refuses clearly: no launcher, no config, a .conf, broken JSON, bad entry, usage', () => {
    chmodSync(join(dir, 'launcher'), 0o644);
    rmSync(join(dir, 'launcher'));
    let r = run('install');
    expect([r.status, r.stderr]).toEqual([1, expect.stringContaining('launcher')]);
    writeFileSync(join(dir, 'launcher'), 'x');
    rmSync(conf());
    r = run('install');
    expect([r.status, r.stderr]).toEqual([1, expect.stringContaining('no CNI config')]);
    writeFileSync(join(dir, 'net.d', '05-bridge.conf'), JSON.stringify({ cniVersion: '0.3.1', name: 'b', type: 'bridge' }));
    r = run('install');
    expect([r.status, r.stderr]).toEqual([1, expect.stringContaining('05-bridge.conf')]);
    rmSync(join(dir, 'net.d', '05-bridge.conf'));
    writeFileSync(conf(), '{"plugins": [');
    r = run('install');
    expect([r.status, r.stderr]).toEqual([1, expect.stringContaining('10-kindnet.conflist: not JSON')]);
    writeFileSync(conf(), JSON.stringify(conflist));
    env.TENC_CNI_ENTRY = '{"type":"bridge"}';
    r = run('install');
    expect([r.status, r.stderr]).toEqual([1, expect.stringContaining('TENC_CNI_ENTRY')]);
    expect(JSON.parse(readFileSync(conf(), 'utf8'))).toEqual(conflist);
    expect(run().status).toBe(2);
  });
});
