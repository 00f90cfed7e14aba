// deploy/: every object kustomization.yaml renders is validated offline against the
// Kubernetes schemas (kubernetes-models); the TencPeer CRD's schema against sample
// objects (and against the in-test API server's emulation of it); RBAC and admission
// against what the code does; deploy/cni-install.sh against a temporary CNI directory.
//
// The test renders the kustomizations itself (it needs no kubectl): ./kustomize-lite.ts,
// plain resources, `images` and components of images and strategic merge patches (what
// deploy/ uses; anything else in a kustomization.yaml fails the test).
import { spawn, spawnSync } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { chmodSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync, existsSync, mkdirSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
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
import { DEFAULT_SOCKET_DIR } from '../../src/control/config.js';
import { agentRunDirs } from '../../src/metrics/gather.js';
import { parseListenAddress } from '../../src/metrics/address.js';
import { whileKeeping } from './cni-fakes.js';
import { loadDocs, render, type Obj } from './kustomize-lite.js';

const root = join(__dirname, '../..');
const deploy = join(root, 'deploy');

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

/** The admission policy's match condition (CEL), emulated: is this user the agent? */
const MATCH: Record<string, (username: string) => boolean> = {
  "request.userInfo.username.matches('^system:serviceaccount:[^:]+:tenc-agent$')": (u) => /^system:serviceaccount:[^:]+:tenc-agent$/.test(u),
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
    for (const o of [...objs, ...render(join(deploy, 'uninstall'))]) {
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
    // and its status file, which its readinessProbe reads (the deploy/cni-install.sh tests below)
    expect(keeper.env).toEqual([...spec.initContainers[0].env, { name: 'TENC_CNI_STATUS', value: '/tmp/tenc-cni-status' }]);
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
    expect(MATCH[vap.spec.matchConditions[0].expression], 'the match condition is emulated here').toBeDefined();
    expect(MATCH[vap.spec.matchConditions[0].expression](AGENT_USER)).toBe(true);
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

describe('deploy/: uninstall, run directory, probes, admission, metrics address', () => {
  const spec = () => find('DaemonSet').spec.template.spec;
  const agent = () => spec().containers.find((c: Obj) => c.name === 'agent');
  /** $(VAR) in command and args, as the kubelet expands it from the container's env. */
  const expand = (s: string, env: Record<string, string>) => s.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v) => env[v] ?? m);
  /** The agent's run directory as `tenc agent` makes it from the DaemonSet's args: --run-dir, else DIR/agent-NODE (src/cli/cli.ts). */
  const agentRunDirOf = (node: string) => {
    const args = (agent().args as string[]).map((a) => expand(a, { NODE_NAME: node }));
    const i = args.indexOf('--run-dir');
    return i >= 0 ? args[i + 1] : join(DEFAULT_SOCKET_DIR, `agent-${args[args.indexOf('--node') + 1]}`);
  };
  let dir: string;
  const servers: Server[] = [];
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tenc-deploy-'));
  });
  afterEach(async () => {
    for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
    rmSync(dir, { recursive: true, force: true });
  });
  /** A unix socket someone listens on (closing it removes it). */
  const liveSocket = async (path: string) => {
    const s = createServer((c) => c.end());
    servers.push(s);
    await new Promise<void>((r) => s.listen(path, r));
    return s;
  };
  /** A unix socket nobody listens on any more: its process exited. */
  const staleSocket = (path: string) => {
    const r = spawnSync(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(path)}, () => process.exit(0))`]);
    expect([r.status, statSync(path).isSocket()]).toEqual([0, true]);
  };
  const sh = (script: string, env: Record<string, string> = {}) => {
    const child = spawn('/bin/sh', ['-c', script], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    const code = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    return { out: () => out, code };
  };

  it('the uninstall DaemonSet needs no pod networking (no CNI ADD, which fails once the agent is gone), runs on every node first, from the agent image', () => {
    const un = render(join(deploy, 'uninstall'));
    expect(un.map((o) => `${o.kind}/${o.metadata.namespace}/${o.metadata.name}`)).toEqual(['DaemonSet/kube-system/tenc-cni-uninstall']);
    const s = un[0].spec.template.spec;
    expect(s.hostNetwork).toBe(true);
    expect(s.priorityClassName).toBe('system-node-critical');
    expect(s.tolerations).toEqual([{ operator: 'Exists' }]);
    expect(s.tolerations).toEqual(spec().tolerations); // wherever the agent ran
    // the image: what deploy/ installed, set in one place (deploy/image, a component of both)
    for (const c of [...s.initContainers, ...s.containers]) expect(c.image, c.name).toBe(agent().image);
    for (const d of [deploy, join(deploy, 'uninstall')]) {
      const k = yaml.load(readFileSync(join(d, 'kustomization.yaml'), 'utf8')) as Obj;
      expect([k.images, k.components.map((c: string) => join(d, c))], d).toEqual([undefined, [join(deploy, 'image')]]);
    }
    for (const c of [...spec().initContainers, ...spec().containers]) expect(c.image).toBe('localhost/tenc:dev');
    // no kustomize (kubectl apply -f) would leave an image named "tenc": the file is applied with -k
    expect(readFileSync(join(deploy, 'uninstall/cni-uninstall.yaml'), 'utf8')).toContain('kubectl apply -k deploy/uninstall/');
    // the agent's state is removed (after no agent answers) before the CNI entry is taken out
    expect(s.initContainers.map((c: Obj) => c.name)).toEqual(['remove-state', 'uninstall-cni']);
    expect(s.initContainers[1].command).toEqual(['/opt/tenc/deploy/cni-install.sh', 'uninstall']);
    const runTenc = (p: Obj) => p.volumes.find((v: Obj) => v.name === 'run-tenc').hostPath.path;
    expect(runTenc(s)).toBe(runTenc(spec()));
    expect(s.initContainers[0].volumeMounts).toEqual([{ name: 'run-tenc', mountPath: '/host/run/tenc' }]);
  });

  it("the uninstall removes the agent's state from the node's /run/tenc (its psk files above all), keeps others', and waits while an agent answers", async () => {
    const c = render(join(deploy, 'uninstall'))[0].spec.template.spec.initContainers.find((i: Obj) => i.name === 'remove-state');
    expect(c.command.slice(0, 2)).toEqual(['/bin/sh', '-c']);
    const d = join(dir, 'run-tenc');
    mkdirSync(d);
    const script = (c.command[2] as string).replaceAll('/host/run/tenc', d).replace(/sleep 5$/m, 'sleep 0.1');
    expect(script).toContain(d);
    // /run/tenc as the agent leaves it: its run directory (the DaemonSet's), psk files, pod configs and logs
    const runDir = join(d, relative(DEFAULT_SOCKET_DIR, agentRunDirOf('node1')));
    for (const f of ['registrations.json', 'psk/alpha.psk', 'alpha/web-1.json', 'alpha/web-1.log', 'standby-1.log']) {
      mkdirSync(join(runDir, f, '..'), { recursive: true });
      writeFileSync(join(runDir, f), 'x');
    }
    // an older manifest's --run-dir /run/tenc/agent, the registry's psk default, the health file
    for (const f of ['agent/registrations.json', 'agent/psk/alpha.psk', 'psk/beta.psk', 'k8s-health', 'not-tenc.txt']) {
      mkdirSync(join(d, f, '..'), { recursive: true });
      writeFileSync(join(d, f), 'x');
    }
    staleSocket(join(d, 'tenc0-4026532301.sock')); // a pod's control socket: its proxy stopped with the agent
    await liveSocket(join(d, 'tenc0-4026532999.sock')); // a tenc pod someone runs by hand on the node
    // an agent still answers on the node socket: nothing is removed, the script waits
    const agentSocket = await liveSocket(join(d, 'agent.sock'));
    const run = sh(script);
    await expect.poll(run.out, { timeout: 10_000 }).toContain('an agent still answers');
    expect(existsSync(join(runDir, 'psk/alpha.psk'))).toBe(true);
    await new Promise((r) => agentSocket.close(r)); // the agent stopped (its socket removed)
    expect(await run.code, run.out()).toBe(0);
    expect(readdirSync(d).sort()).toEqual(['not-tenc.txt', 'tenc0-4026532999.sock']);
    // again, with the node socket left behind by an agent killed: removed, not waited for
    staleSocket(join(d, 'agent.sock'));
    const again = sh(script);
    expect(await again.code, again.out()).toBe(0);
    expect(readdirSync(d).sort()).toEqual(['not-tenc.txt', 'tenc0-4026532999.sock']);
  });

  it('`tenc agent status` (and its --node) finds the run directory the DaemonSet gives the agent', () => {
    for (const node of ['node1', 'ip-10-0-1-2.ec2.internal']) {
      const runDir = agentRunDirOf(node);
      // under /run/tenc, the agent container's hostPath mount that `tenc agent status` lists
      const rel = relative(DEFAULT_SOCKET_DIR, runDir);
      expect(rel.startsWith('..') || rel.includes('/'), runDir).toBe(false);
      expect(agent().volumeMounts.find((m: Obj) => m.mountPath === DEFAULT_SOCKET_DIR)?.name).toBe('run-tenc');
      const fake = join(dir, node);
      mkdirSync(join(fake, rel), { recursive: true });
      mkdirSync(join(fake, 'psk'));
      expect(agentRunDirs(fake), `tenc agent status lists ${runDir}`).toEqual([join(fake, rel)]);
      expect(runDir, '--node NODE').toBe(join(DEFAULT_SOCKET_DIR, `agent-${node}`));
    }
    // the node socket the CNI plugin uses stays the default
    const args = agent().args as string[];
    expect(args[args.indexOf('--socket') + 1]).toBe('/run/tenc/agent.sock');
  });

  it('readiness: never from a stale health file (a hung agent; a restarted container, the file being on the hostPath)', () => {
    const a = agent();
    const health = a.env.find((e: Obj) => e.name === 'TENC_HEALTH_FILE').value;
    expect(health.startsWith(DEFAULT_SOCKET_DIR + '/')).toBe(true); // on the hostPath: outlives the container
    const file = join(dir, 'k8s-health');
    const probe = (p: Obj) => {
      expect(p.exec.command.slice(0, 2)).toEqual(['/bin/sh', '-c']);
      return spawnSync('/bin/sh', ['-c', p.exec.command[2].replaceAll(health, file)]).status;
    };
    const write = (synced: boolean, ageS = 0) => {
      writeFileSync(file, JSON.stringify({ synced, time: new Date().toISOString(), informers: {} }) + '\n');
      const t = Date.now() / 1000 - ageS;
      utimesSync(file, t, t);
    };
    write(true);
    expect([probe(a.readinessProbe), probe(a.livenessProbe)]).toEqual([0, 0]);
    write(false);
    expect([probe(a.readinessProbe), probe(a.livenessProbe)]).toEqual([1, 0]);
    write(true, 300); // the agent stopped rewriting it 5 min ago
    expect([probe(a.readinessProbe), probe(a.livenessProbe)]).toEqual([1, 1]);
    rmSync(file);
    expect([probe(a.readinessProbe), probe(a.livenessProbe)]).toEqual([1, 1]);
    // a restarted container: the file the last run left (synced, fresh) is gone before the
    // agent starts, which is the image's entrypoint with the DaemonSet's args
    write(true);
    expect(a.command, 'the agent container removes the health file first').toBeDefined();
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'node'), '#!/bin/sh\nif [ -e "$TENC_HEALTH_FILE" ]; then echo present; else echo absent; fi\necho "$@"\n', { mode: 0o755 });
    const args = (a.args as string[]).map((x) => expand(x, { NODE_NAME: 'node1', HOST_IP: '10.0.0.5' }));
    const r = spawnSync(a.command[0], [...a.command.slice(1), ...args], { env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, TENC_HEALTH_FILE: file }, encoding: 'utf8' });
    const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(readFileSync(join(root, 'Containerfile'), 'utf8'))![1]) as string[];
    expect(entrypoint[0]).toBe('node');
    expect([r.status, r.stdout]).toEqual([0, `absent\n${[...entrypoint.slice(1), ...args].join(' ')}\n`]);
  });

  it("the admission policy holds the agent to its node in whatever namespace a kustomize `namespace:` puts it", () => {
    const isAgent = MATCH[find('ValidatingAdmissionPolicy').spec.matchConditions[0].expression];
    expect(isAgent, 'the match condition is emulated here').toBeDefined();
    const sa = find('ServiceAccount');
    // the account the agent runs as, bound to its ClusterRole (kustomize moves both)
    expect(spec().serviceAccountName).toBe(sa.metadata.name);
    expect(find('ClusterRoleBinding').subjects).toEqual([{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
    for (const ns of [sa.metadata.namespace, 'tenc-prod', 'kube-system', 'a.b']) expect(isAgent(`system:serviceaccount:${ns}:${sa.metadata.name}`), ns).toBe(true);
    for (const u of [
      'kubernetes-admin',
      'system:serviceaccount:kube-system:generic-garbage-collector',
      'system:serviceaccount:kube-system:namespace-controller',
      `system:serviceaccount:${sa.metadata.namespace}:default`,
      `system:serviceaccount:${sa.metadata.namespace}:${sa.metadata.name}-x`,
      `system:serviceaccount:${sa.metadata.namespace}:x-${sa.metadata.name}`,
      'system:node:node1',
    ]) {
      expect(isAgent(u), u).toBe(false);
    }
  });

  it("metrics: on the node's own address only (IPv4 and IPv6 nodes), the port the PodMonitor and the scrape annotations name", () => {
    const a = agent();
    expect(a.env.find((e: Obj) => e.name === 'HOST_IP')?.valueFrom).toEqual({ fieldRef: { fieldPath: 'status.hostIP' } });
    const args = a.args as string[];
    const port = a.ports.find((p: Obj) => p.name === 'metrics').containerPort;
    for (const ip of ['10.0.0.5', 'fd00:10::5']) {
      const addr = parseListenAddress(expand(args[args.indexOf('--metrics-address') + 1], { HOST_IP: ip, NODE_NAME: 'node1' }));
      expect(addr).toEqual({ host: ip, port });
    }
    // scraped at the pod's IP, which with hostNetwork is the node's (status.hostIP)
    expect(spec().hostNetwork).toBe(true);
    const pm = loadDocs(join(deploy, 'monitoring/podmonitor.yaml'))[0];
    expect(pm.spec.podMetricsEndpoints.map((e: Obj) => e.port)).toEqual(['metrics']);
    const ann = loadDocs(join(deploy, 'monitoring/scrape-annotations.yaml'))[0].spec.template.metadata.annotations;
    expect(Number(ann['prometheus.io/port'])).toBe(port);
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
    const kept = await whileKeeping({ ...env }, async (k) => {
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
      await expect.poll(() => k.err(), { timeout: 10_000 }).toContain('the tenc entry was gone (the network plugin rewrote its config): chained again');
      // a config caught half written: reported, tried again once it changes
      writeFileSync(conf(), '{"plugins": [');
      await expect.poll(() => k.err(), { timeout: 10_000 }).toContain('cannot chain the tenc entry now');
      writeFileSync(conf(), JSON.stringify(conflist));
      await expect.poll(types, { timeout: 10_000 }).toEqual(['ptp', 'portmap', 'tenc']);
      // the launcher removed from the host: installed again
      rmSync(join(dir, 'bin', 'tenc'));
      await expect.poll(() => existsSync(join(dir, 'bin', 'tenc')), { timeout: 10_000 }).toBe(true);
      expect(k.exitCode()).toBe(null);
    });
    expect(kept.code).toBe(0);
    expect(kept.err).toContain('stopped');
    // a recheck that is not a number: refused before anything is installed
    const bad = spawnSync('bash', [script, 'keep'], { env: { ...process.env, ...env, CNI_RECHECK: '0' }, encoding: 'utf8' });
    expect([bad.status, bad.stderr]).toEqual([1, expect.stringContaining("CNI_RECHECK: '0'")]);
  });

  it("the cni-keeper's readinessProbe reads keep's status: not Ready while a conflist of a cniVersion the plugin does not speak is refused (the reason in the probe's output), Ready once chained", async () => {
    const keeper = find('DaemonSet').spec.template.spec.containers.find((c: Obj) => c.name === 'cni-keeper');
    const statusFile = keeper.env.find((e: Obj) => e.name === 'TENC_CNI_STATUS').value as string;
    const p = keeper.readinessProbe;
    expect(p.exec.command.slice(0, 2)).toEqual(['/bin/sh', '-c']);
    expect(p.exec.command[2]).toContain(statusFile);
    const mine = join(dir, 'status');
    const probe = () => {
      const r = spawnSync('/bin/sh', ['-c', p.exec.command[2].replaceAll(statusFile, mine)], { encoding: 'utf8' });
      return [r.status, r.stdout.trim()];
    };
    expect(probe()[0], 'no status yet: not ready').toBe(1);
    const old = { ...conflist, cniVersion: '0.2.0' };
    writeFileSync(conf(), JSON.stringify(old));
    // keep as the container runs it: its command, its env (the paths here)
    const kenv = Object.fromEntries(keeper.env.map((e: Obj) => [e.name, e.value]));
    expect(keeper.command).toEqual(['/opt/tenc/deploy/cni-install.sh', 'keep']);
    const kept = await whileKeeping({ ...kenv, ...env, TENC_CNI_STATUS: mine }, async (k) => {
      await expect.poll(probe, { timeout: 10_000 }).toEqual([1, expect.stringContaining(`not ready: tenc not chained: ${conf()}: cniVersion "0.2.0" is not supported by the tenc plugin`)]);
      expect(JSON.parse(readFileSync(conf(), 'utf8'))).toEqual(old);
      writeFileSync(conf(), JSON.stringify(conflist));
      await expect.poll(probe, { timeout: 10_000 }).toEqual([0, '']);
      expect(JSON.parse(readFileSync(conf(), 'utf8')).plugins.map((x: Obj) => x.type)).toEqual(['ptp', 'portmap', 'tenc']);
      // the config gone, then a half-written one: not ready either
      rmSync(conf());
      await expect.poll(probe, { timeout: 10_000 }).toEqual([1, `not ready: tenc not chained: no CNI config in ${env.CNI_CONF_DIR}`]);
      writeFileSync(conf(), '{"plugins": [');
      await expect.poll(probe, { timeout: 10_000 }).toEqual([1, expect.stringContaining(`${conf()}: not JSON`)]);
      expect(k.exitCode()).toBe(null);
    });
    expect(kept.code).toBe(0);
    // unchained (OpenShift: no config is chained): ready
    rmSync(mine);
    const u = spawnSync('bash', [script, 'install'], { env: { ...process.env, ...env, TENC_CNI_STATUS: mine, TENC_CNI_MODE: 'unchained' }, encoding: 'utf8' });
    expect(u.status, u.stderr).toBe(0);
    expect(probe()).toEqual([0, '']);
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
