/**
 * TencPolicy (issue 15.1): parsing and resolution (src/policy/policy.ts), the agent's
 * all-or-nothing set (src/agent/policies.ts), what a pod makes of it in the kernel
 * (src/routing/policy-rules.ts: ip rules and nft chain rules), the control socket's
 * set-policy gate, the cluster file, and the registries that store the objects
 * (directory, in-test Kubernetes API). The semantics table of README "Policies",
 * case by case.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parsePolicy, resolvePolicies, podPolicies, formatPort, validatePodPolicies, hostCidr, type PolicyView, type ResolvedPolicy } from '../../src/policy/policy.js';
import { ProjectPolicies } from '../../src/agent/policies.js';
import { exemptOf, ruleSpecs, chainRules, PolicyRules } from '../../src/routing/policy-rules.js';
import { dispatch, type ControlHandler } from '../../src/control/socket.js';
import { validateCluster, ClusterConfigError } from '../../src/agent/cluster-config.js';
import { syncRegistry } from '../../src/agent/cluster-tool.js';
import { DirectoryRegistry } from '../../src/registry/dir.js';
import { installScript } from '../../src/routing/enforce.js';
import { formatStatus, type StatusReport } from '../../src/control/status.js';
import type { IpCommand } from '../../src/routing/ip.js';

const view: PolicyView = {
  pods: [
    { name: 'web-1', address: '10.128.1.10', labels: { app: 'web' } },
    { name: 'web-2', address: '10.128.2.10', addresses: ['10.128.2.10', 'fd00:2::10'], labels: { app: 'web' } },
    { name: 'db-1', address: '10.128.2.20', labels: { app: 'db' } },
    { name: 'cli-1', address: '10.128.1.11', labels: { app: 'client' } },
  ],
  services: [
    { name: 'web', vip: '10.96.1.10', ports: [{ protocol: 'tcp', port: 80 }, { protocol: 'tcp', port: 9100 }], selector: { app: 'web' } },
    { name: 'db', vip: '10.96.1.20', ports: [{ protocol: 'tcp', port: 5432 }], selector: { app: 'db' } },
  ],
  endpoints: [
    { service: 'web', pods: [{ name: 'web-1', address: '10.128.1.10' }, { name: 'web-2', address: '10.128.2.10' }] },
    { service: 'db', pods: [{ name: 'db-1', address: '10.128.2.20' }] },
  ],
};

const pol = (name: string, spec: Record<string, unknown>) => ({ apiVersion: 'tenc.io/v1alpha1', kind: 'TencPolicy', metadata: { name, namespace: 'alpha' }, spec });
const metrics = pol('metrics', { service: 'web', ports: [{ protocol: 'TCP', port: 9100 }], mode: 'exempt' });

function resolved(objs: unknown[]): ResolvedPolicy[] {
  const r = resolvePolicies('alpha', objs, view, { listenPort: 51820 });
  if ('problems' in r) throw new Error(JSON.stringify(r.problems));
  return r.policies;
}

function problems(objs: unknown[]): string[] {
  const r = resolvePolicies('alpha', objs, view, { listenPort: 51820 });
  return 'problems' in r ? r.problems.map((p) => `${p.policy}: ${p.field}: ${p.problem}`) : [];
}

describe('TencPolicy: parse', () => {
  it('reads a service policy and a podSelector policy; protocol TCP by default, endPort = port, mode encrypt by default', () => {
    const a = parsePolicy('alpha', metrics);
    expect(a).toEqual({ policy: { project: 'alpha', name: 'metrics', service: 'web', podSelector: null, ports: [{ protocol: 'tcp', port: 9100, endPort: 9100 }], mode: 'exempt' } });
    const b = parsePolicy('alpha', pol('dns', { podSelector: { matchLabels: { app: 'web' } }, ports: [{ protocol: 'UDP', port: 53, endPort: 54 }, { port: 8080 }] }));
    expect(b).toEqual({ policy: { project: 'alpha', name: 'dns', service: null, podSelector: { app: 'web' }, ports: [{ protocol: 'udp', port: 53, endPort: 54 }, { protocol: 'tcp', port: 8080, endPort: 8080 }], mode: 'encrypt' } });
  });

  // each bad input names its field
  const bad: [string, unknown, string][] = [
    ['port 0', pol('p', { service: 'web', ports: [{ port: 0 }] }), 'spec.ports[0].port: 0 is not a port 1..65535'],
    ['port > 65535', pol('p', { service: 'web', ports: [{ port: 65536 }] }), 'spec.ports[0].port: 65536 is not a port'],
    ['endPort < port', pol('p', { service: 'web', ports: [{ port: 9100, endPort: 9099 }] }), 'spec.ports[0].endPort: 9099 is below port 9100'],
    ['bad mode', pol('p', { service: 'web', ports: [{ port: 80 }], mode: 'plain' }), 'spec.mode: "plain" is not one of encrypt, exempt'],
    ['unknown spec field', pol('p', { service: 'web', ports: [{ port: 80 }], tls: true }), 'spec.tls: unknown field'],
    ['unknown port field', pol('p', { service: 'web', ports: [{ port: 80, targetPort: 8080 }] }), 'spec.ports[0].targetPort: unknown field'],
    ['unknown top field', { ...pol('p', { service: 'web', ports: [{ port: 80 }] }), extra: 1 }, 'extra: unknown field'],
    ['bad protocol', pol('p', { service: 'web', ports: [{ protocol: 'SCTP', port: 80 }] }), 'spec.ports[0].protocol: "SCTP" is not TCP or UDP'],
    ['both selectors', pol('p', { service: 'web', podSelector: { matchLabels: { a: 'b' } }, ports: [{ port: 80 }] }), 'spec: give service or podSelector, not both'],
    ['no selector', pol('p', { ports: [{ port: 80 }] }), 'spec: needs service'],
    ['matchExpressions', pol('p', { podSelector: { matchLabels: { a: 'b' }, matchExpressions: [] }, ports: [{ port: 80 }] }), 'spec.podSelector.matchExpressions: unknown field'],
    ['empty matchLabels', pol('p', { podSelector: { matchLabels: {} }, ports: [{ port: 80 }] }), 'spec.podSelector.matchLabels: is required'],
    ['no ports', pol('p', { service: 'web', ports: [] }), 'spec.ports: is required'],
    ['overlapping ports in one policy', pol('p', { service: 'web', ports: [{ port: 80, endPort: 90 }, { port: 85 }] }), 'spec.ports[1]: tcp/85 overlaps spec.ports[0]'],
    ['bad name', pol('P_1', { service: 'web', ports: [{ port: 80 }] }), 'metadata.name: "P_1" is not a name'],
    ['other namespace', { ...metrics, metadata: { name: 'm', namespace: 'beta' } }, 'metadata.namespace: "beta" is not the project alpha'],
    ['not an object', 'x', '(object): must be a JSON object'],
  ];
  for (const [what, o, msg] of bad) {
    it(`refuses ${what}, naming the field`, () => {
      const r = parsePolicy('alpha', o);
      expect('problems' in r).toBe(true);
      const text = 'problems' in r ? r.problems.map((p) => `${p.field}: ${p.problem}`).join('\n') : '';
      expect(text).toContain(msg);
    });
  }
});

describe('TencPolicy: resolve (the semantics table)', () => {
  it('no policy: an empty set (everything project-internal encrypted, as before policies)', () => {
    expect(resolved([])).toEqual([]);
    expect(exemptOf(podPolicies([], 'cli-1'), ['10.128.1.11'])).toEqual({ to: [], local: [] });
  });

  it('exempt service port: the VIP and every endpoint address, client side to them, server side on the endpoints', () => {
    const [m] = resolved([metrics]);
    expect(m).toMatchObject({ name: 'metrics', mode: 'exempt', target: 'service web', pods: ['web-1', 'web-2'] });
    expect(m.addresses).toEqual(['10.128.1.10/32', '10.128.2.10/32', '10.96.1.10/32', 'fd00:2::10/128']);
    // a client: exempt to VIP and endpoints, nothing local
    const cli = exemptOf(podPolicies([m], 'cli-1'), ['10.128.1.11']);
    expect(cli.local).toEqual([]);
    expect(cli.to.map((t) => `${t.cidr} ${t.protocol}/${t.port}`)).toEqual(['10.128.1.10/32 tcp/9100', '10.128.2.10/32 tcp/9100', '10.96.1.10/32 tcp/9100', 'fd00:2::10/128 tcp/9100']);
    // an endpoint: its own port is local; its own address is no destination
    const web = exemptOf(podPolicies([m], 'web-1'), ['10.128.1.10']);
    expect(web.local).toEqual([{ protocol: 'tcp', port: 9100, endPort: 9100 }]);
    expect(web.to.map((t) => t.cidr)).not.toContain('10.128.1.10/32');
    // a pod the policy does not name: other ports and services stay encrypted (no exemption for them)
    expect(cli.to.some((t) => t.cidr === '10.96.1.20/32' || t.port === 80)).toBe(false);
  });

  it('exempt podSelector: the selected pods only, with a port range', () => {
    const [p] = resolved([pol('range', { podSelector: { matchLabels: { app: 'db' } }, ports: [{ protocol: 'UDP', port: 7000, endPort: 7010 }], mode: 'exempt' })]);
    expect(p).toMatchObject({ target: 'pods app=db', addresses: ['10.128.2.20/32'], pods: ['db-1'] });
    expect(exemptOf(podPolicies([p], 'db-1'), ['10.128.2.20']).local).toEqual([{ protocol: 'udp', port: 7000, endPort: 7010 }]);
  });

  it('encrypt policies change nothing in the kernel (they state the default) but are shown', () => {
    const set = resolved([pol('db-enc', { service: 'db', ports: [{ port: 5432 }] })]);
    expect(set[0].mode).toBe('encrypt');
    expect(exemptOf(podPolicies(set, 'cli-1'), ['10.128.1.11'])).toEqual({ to: [], local: [] });
    expect(podPolicies(set, 'db-1')[0]).toMatchObject({ name: 'db-enc', mode: 'encrypt', local: true });
  });

  it('refuses: unknown service, a port the service does not have, overlapping encrypt/exempt, tenc\'s own port, a duplicate name', () => {
    expect(problems([pol('x', { service: 'nope', ports: [{ port: 80 }], mode: 'exempt' })])[0]).toMatch(/TencPolicy alpha\/x: spec.service: nope: no such Service in project alpha/);
    expect(problems([pol('x', { service: 'web', ports: [{ port: 81 }], mode: 'exempt' })])[0]).toMatch(/spec.ports\[0\]: tcp\/81 is not a port of service web/);
    const overlap = problems([metrics, pol('enc', { podSelector: { matchLabels: { app: 'web' } }, ports: [{ port: 9000, endPort: 9200 }] })]);
    expect(overlap).toEqual([expect.stringMatching(/TencPolicy alpha\/metrics: spec.ports\[0\]: tcp\/9100 overlaps tcp\/9000-9200 of encrypt policy enc/)]);
    // the same port under udp, or another pod: no overlap
    expect(problems([metrics, pol('enc', { podSelector: { matchLabels: { app: 'web' } }, ports: [{ protocol: 'UDP', port: 9100 }] })])).toEqual([]);
    expect(problems([metrics, pol('enc', { podSelector: { matchLabels: { app: 'db' } }, ports: [{ port: 9100 }] })])).toEqual([]);
    expect(problems([pol('x', { podSelector: { matchLabels: { app: 'web' } }, ports: [{ protocol: 'UDP', port: 51800, endPort: 51900 }], mode: 'exempt' })])[0]).toMatch(/tenc's own port/);
    expect(problems([metrics, metrics])[0]).toMatch(/metadata.name: listed twice/);
  });

  it('formats ports for status', () => {
    expect(formatPort({ protocol: 'udp', port: 53, endPort: 53 })).toBe('udp/53');
    expect(formatPort({ protocol: 'tcp', port: 9100, endPort: 9102 })).toBe('tcp/9100-9102');
  });
});

describe('TencPolicy: the agent keeps a set all or nothing', () => {
  it('addresses no pod can take are left out of their policy and said once, and again when they change', () => {
    const logs: { level: string; msg: string; f: Record<string, unknown> }[] = [];
    const log = { info: () => {}, warn: (f: Record<string, unknown>, msg: string) => logs.push({ level: 'warn', msg, f }), error: () => {}, debug: () => {} } as any;
    const p = new ProjectPolicies('alpha', 51820, log);
    const mk = (addr: string) => ({
      pods: [{ project: 'alpha', name: 'web-1', node: 'n', address: addr, addresses: [addr], labels: { app: 'web' }, netns: null }],
      services: [],
      endpoints: [],
    });
    const all = { project: 'alpha', name: 'all', object: pol('all', { podSelector: { matchLabels: { app: 'web' } }, ports: [{ protocol: 'UDP', port: 53 }], mode: 'exempt' }) };
    expect(p.update([all], mk('fe80::1%eth0')).map((x) => x.name)).toEqual(['all']);
    expect(p.update([all], mk('fe80::1%eth0')).map((x) => x.name)).toEqual(['all']);
    expect(logs.map((l) => l.msg)).toEqual(['policy addresses left out']);
    expect(String(logs[0]!.f.problems)).toContain('"fe80::1%eth0" (pod web-1) has a zone');
    p.update([all], mk('::ffff:10.0.0.5'));
    expect(logs).toHaveLength(2);
    expect(String(logs[1]!.f.problems)).toContain('IPv4-mapped');
    p.update([all], mk('10.128.1.10')); // nothing left out: nothing said
    expect(logs).toHaveLength(2);
  });

  it('a bad update leaves the previous set in force and says so once; a good one replaces it', () => {
    const logs: { level: string; msg: string; f: Record<string, unknown> }[] = [];
    const log = {
      info: (f: Record<string, unknown>, msg: string) => logs.push({ level: 'info', msg, f }),
      warn: (f: Record<string, unknown>, msg: string) => logs.push({ level: 'warn', msg, f }),
      error: () => {},
      debug: () => {},
    } as any;
    const p = new ProjectPolicies('alpha', 51820, log);
    const obj = (o: unknown, name = 'x') => ({ project: 'alpha', name, object: o });
    const v = { pods: view.pods.map((x) => ({ ...x, project: 'alpha', node: 'n', addresses: x.addresses ?? [x.address], netns: null })), services: view.services.map((s) => ({ ...s, project: 'alpha', ports: s.ports as any })), endpoints: view.endpoints.map((e) => ({ ...e, project: 'alpha', pods: e.pods.map((x) => ({ ...x, node: 'n' })) })) };
    expect(p.update([], v)).toEqual([]);
    expect(p.update([obj(metrics, 'metrics')], v).map((x) => x.name)).toEqual(['metrics']);
    expect(p.accepted).toBe(1);
    // one good and one bad policy: nothing of it is applied
    const bad = pol('bad', { service: 'web', ports: [{ port: 70000 }], mode: 'exempt' });
    const good2 = pol('dns', { podSelector: { matchLabels: { app: 'db' } }, ports: [{ protocol: 'UDP', port: 53 }], mode: 'exempt' });
    expect(p.update([obj(bad, 'bad'), obj(good2, 'dns'), obj(metrics, 'metrics')], v).map((x) => x.name)).toEqual(['metrics']);
    expect(p.update([obj(bad, 'bad'), obj(good2, 'dns'), obj(metrics, 'metrics')], v).map((x) => x.name)).toEqual(['metrics']);
    const refusals = logs.filter((l) => l.level === 'warn');
    expect(refusals).toHaveLength(1); // logged once, not every reconcile
    expect(refusals[0].msg).toBe('policy update refused: the previous policy set stays in force');
    expect(String(refusals[0].f.problems)).toContain('TencPolicy alpha/bad: spec.ports[0].port: 70000 is not a port 1..65535');
    expect(refusals[0].f.inForce).toEqual(['metrics']);
    // an unreadable object refuses the set as well
    expect(p.update([{ project: 'alpha', name: 'broken', object: null, problem: 'not JSON' }], v).map((x) => x.name)).toEqual(['metrics']);
    // fixed: replaced
    expect(p.update([obj(good2, 'dns')], v).map((x) => x.name)).toEqual(['dns']);
    expect(p.forPod('db-1')[0]).toMatchObject({ name: 'dns', local: true, addresses: ['10.128.2.20/32'] });
    // an exempt policy over 4096 address x port pairs (one routing rule each in every pod):
    // refused as a whole like a bad one, the previous set in force
    const many = { ...v, pods: [...v.pods, ...Array.from({ length: 2100 }, (_, i) => ({ ...v.pods[0]!, name: `big-${i}`, labels: { app: 'big' }, address: `10.130.${i >> 8}.${i & 255}`, addresses: [`10.130.${i >> 8}.${i & 255}`] }))] };
    const big = pol('big', { podSelector: { matchLabels: { app: 'big' } }, ports: [{ protocol: 'TCP', port: 80 }, { protocol: 'TCP', port: 443 }], mode: 'exempt' });
    expect(p.update([obj(big, 'big'), obj(good2, 'dns')], many).map((x) => x.name)).toEqual(['dns']);
    expect(String(logs.filter((l) => l.level === 'warn').at(-1)!.f.problems)).toContain('4201 exempt address x port pairs: at most 4096') // 2100 x 2, and dns's 1;
    const bigEnc = pol('big', { podSelector: { matchLabels: { app: 'big' } }, ports: [{ protocol: 'TCP', port: 80 }, { protocol: 'TCP', port: 443 }], mode: 'encrypt' });
    expect(p.update([obj(bigEnc, 'big'), obj(good2, 'dns')], many).map((x) => x.name)).toEqual(['big', 'dns']); // encrypt: no rules
    // but no policy may select more addresses than a pod takes (4096): refused here, not by every pod
    const huge = { ...v, pods: [...v.pods, ...Array.from({ length: 4100 }, (_, i) => ({ ...v.pods[0]!, name: `h-${i}`, labels: { app: 'huge' }, address: `10.131.${i >> 8}.${i & 255}`, addresses: [`10.131.${i >> 8}.${i & 255}`] }))] };
    const hugeEnc = pol('huge', { podSelector: { matchLabels: { app: 'huge' } }, ports: [{ protocol: 'TCP', port: 80 }], mode: 'encrypt' });
    expect(p.update([obj(hugeEnc, 'huge')], huge).map((x) => x.name)).toEqual(['big', 'dns']);
    expect(String(logs.filter((l) => l.level === 'warn').at(-1)!.f.problems)).toContain('TencPolicy alpha/huge: spec: selects 4100 addresses: at most 4096');
    // nor a set larger than one control request carries
    const wide = Array.from({ length: 16 }, (_, k) => obj(pol(`w${k}`, { podSelector: { matchLabels: { app: 'huge' } }, ports: [{ protocol: 'TCP', port: 1000 + k }], mode: 'encrypt' }), `w${k}`));
    const fewer = { ...huge, pods: huge.pods.filter((x) => !/^h-(409[0-9]|4[01]\d\d)$/.test(x.name)) };
    expect(p.update(wide, fewer).map((x) => x.name)).toEqual(['big', 'dns']);
    expect(String(logs.filter((l) => l.level === 'warn').at(-1)!.f.problems)).toMatch(/project alpha: \(policies\): \d+ bytes as sent to a pod: at most 900000/);
  });
});

describe('TencPolicy: kernel rules of a pod', () => {
  const own = { v4: '10.128.1.11', v6: 'fd00:1::11' };
  const set = {
    to: [
      { cidr: '10.96.1.10/32', protocol: 'tcp' as const, port: 9100, endPort: 9100 },
      { cidr: '10.128.1.10/32', protocol: 'tcp' as const, port: 9100, endPort: 9100 },
      { cidr: 'fd00:2::10/128', protocol: 'tcp' as const, port: 9100, endPort: 9100 },
    ],
    local: [{ protocol: 'udp' as const, port: 7000, endPort: 7010 }],
  };

  it('ip rules ahead of tenc\'s (pref P-1): dport to each exempt destination, sport from the own address', () => {
    expect(ruleSpecs(set, own, 5209)).toEqual({
      4: ['pref 5209 to 10.96.1.10/32 ipproto tcp dport 9100 lookup main', 'pref 5209 to 10.128.1.10/32 ipproto tcp dport 9100 lookup main', 'pref 5209 from 10.128.1.11/32 ipproto udp sport 7000-7010 lookup main'],
      6: ['pref 5209 to fd00:2::10/128 ipproto tcp dport 9100 lookup main', 'pref 5209 from fd00:1::11/128 ipproto udp sport 7000-7010 lookup main'],
    });
  });

  it('nft: accepts in the policy chains, one rule per family and port range', () => {
    expect(chainRules('tenc_tenc0', set, own)).toEqual([
      'add rule inet tenc_tenc0 policy_out ip daddr { 10.96.1.10/32, 10.128.1.10/32 } meta l4proto tcp th dport 9100 ct direction original accept',
      'add rule inet tenc_tenc0 policy_in ip saddr { 10.96.1.10/32, 10.128.1.10/32 } meta l4proto tcp th sport 9100 ct direction reply accept',
      'add rule inet tenc_tenc0 policy_out ip6 daddr { fd00:2::10/128 } meta l4proto tcp th dport 9100 ct direction original accept',
      'add rule inet tenc_tenc0 policy_in ip6 saddr { fd00:2::10/128 } meta l4proto tcp th sport 9100 ct direction reply accept',
      'add rule inet tenc_tenc0 policy_out ip saddr 10.128.1.11 meta l4proto udp th sport 7000-7010 ct direction reply accept',
      'add rule inet tenc_tenc0 policy_in ip daddr 10.128.1.11 meta l4proto udp th dport 7000-7010 ct direction original accept',
      'add rule inet tenc_tenc0 policy_out ip6 saddr fd00:1::11 meta l4proto udp th sport 7000-7010 ct direction reply accept',
      'add rule inet tenc_tenc0 policy_in ip6 daddr fd00:1::11 meta l4proto udp th dport 7000-7010 ct direction original accept',
    ]);
  });

  it('the enforcement table jumps to the policy chains before its project drops', () => {
    const s = installScript({ ifname: 'tenc0', listenPort: 51820, fwmark: 0xcb84, input: true }, { project: ['10.128.1.10/32'], classify: [] });
    expect(s.indexOf('jump policy_in')).toBeGreaterThan(0);
    expect(s.indexOf('jump policy_in')).toBeLessThan(s.indexOf('ip saddr @project4 counter name plaintext_from_project drop'));
    expect(s.indexOf('jump policy_out')).toBeLessThan(s.indexOf('ip daddr @project4 counter name plaintext_to_project drop'));
  });

  it('a change: accepts widened first, then rules (deletions first), then accepts narrowed; teardown deletes exactly what it added', async () => {
    const steps: string[] = [];
    const ip = {
      batch: async (f: number, lines: string[]) => void steps.push(`ip -${f} ${lines.join(' | ')}`),
      json: async () => [],
    } as unknown as IpCommand;
    const r = new PolicyRules({ priority: 5209, addresses: { v4: '10.128.1.11', v6: null }, ip, setChains: async (fn) => void steps.push(`nft ${fn('t').length}`) });
    const a = { to: [{ cidr: '10.96.1.10/32', protocol: 'tcp' as const, port: 9100, endPort: 9100 }], local: [] };
    const b = { to: [{ cidr: '10.96.1.20/32', protocol: 'tcp' as const, port: 5432, endPort: 5432 }], local: [] };
    await r.apply(a);
    await r.apply(b);
    expect(steps).toEqual([
      'nft 2',
      'ip -4 rule add pref 5209 to 10.96.1.10/32 ipproto tcp dport 9100 lookup main',
      'nft 2',
      'nft 4', // union of old and new while the rules change
      'ip -4 rule del pref 5209 to 10.96.1.10/32 ipproto tcp dport 9100 lookup main',
      'ip -4 rule add pref 5209 to 10.96.1.20/32 ipproto tcp dport 5432 lookup main',
      'nft 2',
    ]);
    expect(r.ruleCount()).toBe(1);
    steps.length = 0;
    await r.teardown({ keepRules: true });
    expect(steps).toEqual([]);
    await r.teardown();
    expect(steps).toEqual(['ip -4 rule del pref 5209 to 10.96.1.20/32 ipproto tcp dport 5432 lookup main']);
  });
});

describe('TencPolicy: control op set-policy and status', () => {
  const addrs = { v4: '10.128.1.11', v6: null };
  const handler = (got: unknown[]): ControlHandler => ({
    status: () => ({}) as StatusReport,
    setPeer: () => {},
    removePeer: () => true,
    setServices: () => {},
    setPolicy: (p) => void got.push(p),
  });
  const good = { name: 'metrics', mode: 'exempt', target: 'service web', addresses: ['10.96.1.10/32'], ports: [{ protocol: 'tcp', port: 9100, endPort: 9100 }], local: false };

  it('takes a valid set and refuses bad ones with the field', async () => {
    const got: unknown[] = [];
    await dispatch(handler(got), addrs, { op: 'set-policy', policies: [good] });
    expect(got).toEqual([[good]]);
    const bad: [unknown, RegExp][] = [
      [[{ ...good, mode: 'plain' }], /policies\[0\].mode/],
      [[{ ...good, addresses: ['10.96.1.0/24'] }], /policies\[0\].addresses\[0\]: "10.96.1.0\/24" is not a host CIDR/],
      [[{ ...good, ports: [{ protocol: 'tcp', port: 9100, endPort: 9000 }] }], /policies\[0\].ports\[0\].endPort/],
      [[{ ...good, extra: 1 }], /policies\[0\].extra: unknown field/],
      ['x', /policies: must be an array/],
    ];
    for (const [policies, re] of bad) await expect(dispatch(handler(got), addrs, { op: 'set-policy', policies })).rejects.toThrow(re);
    expect(got).toHaveLength(1);
    expect(validatePodPolicies([good], () => true)).toEqual({ policies: [good] });
    // a set whose address x port pairs (one routing rule each) pass 4096: refused whole
    const addresses = Array.from({ length: 4096 }, (_, i) => `10.96.${i >> 8}.${i & 255}/32`);
    const ports = [{ protocol: 'tcp', port: 1, endPort: 1 }, { protocol: 'udp', port: 2, endPort: 2 }];
    expect(validatePodPolicies([{ ...good, mode: 'exempt', addresses, ports }], () => true)).toEqual({ field: 'policies', problem: '8192 exempt address x port pairs, at most 4096 (each is a routing rule)' });
    expect(validatePodPolicies([{ ...good, mode: 'exempt', addresses, ports: ports.slice(0, 1) }], () => true)).toHaveProperty('policies');
    // an encrypt policy makes no rule: not counted
    expect(validatePodPolicies([{ ...good, mode: 'encrypt', addresses, ports }], () => true)).toHaveProperty('policies');
  });

  it('tenc status shows which policy each destination/port follows, and the default', () => {
    const text = formatStatus({
      interface: 'tenc0', publicKey: 'k', listenPort: 51820, fwmark: 0xcb84, mtu: 1420, addresses: [], dataPlane: 'x', peers: [], services: [], drops: {}, handshakeFailures: {},
      policies: { default: 'encrypt', rules: 2, entries: [{ name: 'metrics', mode: 'exempt', target: 'service web', addresses: ['10.96.1.10/32'], ports: ['tcp/9100'], local: true }] },
    });
    expect(text).toContain('policies: 1; every other project destination and port: encrypt (the default)');
    expect(text).toContain('policy metrics: exempt, service web: tcp/9100 to 10.96.1.10/32 (served here: its replies too)');
  });
});

describe('TencPolicy: cluster file and directory registry', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const file = {
    dns: '10.96.0.10',
    nodes: [{ name: 'node1', podCidr: '10.128.1.0/24' }],
    projects: [{ name: 'alpha' }],
    pods: [{ name: 'a-web', project: 'alpha', node: 'node1', address: '10.128.1.10', labels: { app: 'web' } }],
    services: [{ name: 'web', project: 'alpha', vip: '10.96.1.10', ports: [{ protocol: 'tcp', port: 9100 }], selector: { app: 'web' } }],
  };

  it('the cluster file takes policies, refuses bad ones naming policies[i].field, and syncs them to the registry', async () => {
    const c = validateCluster({ ...file, policies: [metrics] }, 'f.json');
    expect(c.policies).toEqual([{ project: 'alpha', name: 'metrics', object: metrics }]);
    // a saved and re-read state validates again
    expect(validateCluster(JSON.parse(JSON.stringify(c)), 'state').policies).toEqual(c.policies);
    const err = (policies: unknown) => {
      try {
        validateCluster({ ...file, policies }, 'f.json');
      } catch (e) {
        return (e as ClusterConfigError).message;
      }
      return '';
    };
    expect(err([pol('x', { service: 'nope', ports: [{ port: 80 }], mode: 'exempt' })])).toContain('f.json: policies[0].spec.service: nope: no such Service');
    expect(err([metrics, pol('y', { service: 'web', ports: [{ port: 0 }] })])).toContain('f.json: policies[1].spec.ports[0].port: 0 is not a port');
    expect(err([{ ...metrics, metadata: { name: 'm', namespace: 'zeta' } }])).toContain('policies[0].metadata.namespace: "zeta" is not a project');
    expect(err('x')).toContain('policies: must be an array');
    // tenc's own port exempt: refused by the file as by every agent (the file used to take it)
    const udp = (ports: unknown[]) => pol('tencport', { podSelector: { matchLabels: { app: 'web' } }, ports, mode: 'exempt' });
    expect(() => validateCluster({ ...file, policies: [udp([{ protocol: 'UDP', port: 51820 }])] }, 'f.json')).toThrow(ClusterConfigError);
    expect(err([udp([{ protocol: 'UDP', port: 51820 }])])).toContain("f.json: policies[0].spec.ports[0]: udp/51820 holds udp/51820, tenc's own port: it cannot be exempt");
    expect(err([udp([{ protocol: 'UDP', port: 53 }, { protocol: 'UDP', port: 51800, endPort: 51900 }])])).toContain("f.json: policies[0].spec.ports[1]: udp/51800-51900 holds udp/51820");
    expect(err([udp([{ protocol: 'TCP', port: 51820 }])])).toBe('');
    const dir = mkdtempSync(join(tmpdir(), 'tenc-pol-'));
    dirs.push(dir);
    const reg = new DirectoryRegistry(dir);
    syncRegistry(c, reg, join(dir, 'psk'), 'tc');
    expect(await reg.policies('alpha')).toEqual([{ project: 'alpha', name: 'metrics', object: metrics }]);
    syncRegistry({ ...c, policies: [] }, reg, join(dir, 'psk'), 'tc');
    expect(await reg.policies('alpha')).toEqual([]);
  });

  it('the directory registry returns an unreadable policy file as a problem (the agent then refuses the set)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tenc-pol-'));
    dirs.push(dir);
    mkdirSync(join(dir, 'policies', 'alpha'), { recursive: true });
    writeFileSync(join(dir, 'policies', 'alpha', 'a.json'), '{"spec": ');
    writeFileSync(join(dir, 'policies', 'alpha', 'b.json'), JSON.stringify({ ...metrics, metadata: { name: 'other' } }));
    const got = await new DirectoryRegistry(dir).policies('alpha');
    expect(got.map((g) => [g.name, g.problem !== undefined])).toEqual([
      ['a', true],
      ['b', true],
    ]);
    expect(got[1].problem).toContain('metadata.name "other" differs');
  });
});

describe('TencPolicy: a registry that cannot read policies', () => {
  it('keeps the previous set in force and says so once (never blocks the rest of the reconcile)', async () => {
    const warns: string[] = [];
    const log = { info: () => {}, warn: (_f: unknown, m: string) => warns.push(m), error: () => {}, debug: () => {} } as any;
    const p = new ProjectPolicies('alpha', 51820, log);
    const v = { pods: view.pods.map((x) => ({ ...x, project: 'alpha', node: 'n', addresses: x.addresses ?? [x.address], netns: null })), services: view.services.map((s) => ({ ...s, project: 'alpha', ports: s.ports as any })), endpoints: view.endpoints.map((e) => ({ ...e, project: 'alpha', pods: e.pods.map((x) => ({ ...x, node: 'n' })) })) };
    expect((await p.refresh(async () => [{ project: 'alpha', name: 'metrics', object: metrics }], v)).map((x) => x.name)).toEqual(['metrics']);
    const fail = async () => {
      throw new Error('kubernetes: tencpolicies not synced within 10000 ms');
    };
    expect((await p.refresh(fail, v)).map((x) => x.name)).toEqual(['metrics']);
    expect((await p.refresh(fail, v)).map((x) => x.name)).toEqual(['metrics']);
    expect(warns).toEqual(['cannot read policies: the previous policy set stays in force']);
    expect(await p.refresh(undefined, v)).toEqual([]); // a backend without policies: none
  });
});

describe('TencPolicy: review findings (regressions)', () => {
  const pod = (name: string, address: string, labels: Record<string, string>, addresses?: string[]) => ({ name, address, ...(addresses ? { addresses } : {}), labels });
  const many = (prefix: string, n: number, app: string, net: number) => Array.from({ length: n }, (_, i) => pod(`${prefix}-${i}`, `10.${net}.${i >> 8}.${i & 255}`, { app }));
  const setPolicy = (policies: unknown) =>
    dispatch({ status: () => ({}) as StatusReport, setPeer: () => {}, removePeer: () => true, setServices: () => {}, setPolicy: () => {} }, { v4: '10.128.1.11', v6: null }, { op: 'set-policy', policies });

  // what node's isIP takes, as a pod's set-policy gate takes it (or why not)
  const hosts: [string, string][] = [
    ['10.0.0.5', '10.0.0.5/32'],
    ['FD00::0A', 'fd00::a/128'],
    ['fd00:0:0:0:0:0:0:1', 'fd00::1/128'],
    ['FD00:0:0:0:1:0:0:0', 'fd00::1:0:0:0/128'],
    ['fd00::1.2.3.4', 'fd00::102:304/128'],
    ['fe80::1%eth0', 'has a zone'],
    ['::ffff:10.0.0.5', 'is IPv4-mapped'],
    ['0:0:0:0:0:ffff:a00:5', 'is IPv4-mapped'],
    ['10.0.0.5/32', 'is not an IPv4/IPv6 address'],
  ];
  it.each(hosts)('host CIDR of %s: %s', async (a, want) => {
    const h = hostCidr(a);
    expect(h.ok ? h.value : h.problem).toBe(want);
    if (h.ok) await expect(setPolicy([{ name: 'm', mode: 'exempt', target: 't', addresses: [h.value], ports: [{ protocol: 'tcp', port: 1, endPort: 1 }], local: false }])).resolves.toBeNull();
  });

  // node's isIP (the registry's only check) takes all of these; a pod's set-policy gate takes
  // only canonical host CIDRs and refuses a whole set for one, so the previous set stayed in
  // force in every pod (a deleted exempt policy kept plaintext going)
  it('registry addresses the gate would refuse: canonicalised, or left out and reported; the set is taken by every pod', async () => {
    const odd: PolicyView = {
      pods: [
        pod('web-1', 'FD00::0A', { app: 'web' }),
        pod('web-2', '10.128.2.10', { app: 'web' }, ['10.128.2.10', 'fd00:0:0:0:0:0:0:1']),
        pod('web-3', 'fe80::1%eth0', { app: 'web' }),
        pod('web-4', '::ffff:10.0.0.5', { app: 'web' }),
      ],
      services: [{ name: 'web', vip: 'FD00:96::A', ports: [{ protocol: 'tcp', port: 9100 }], selector: { app: 'web' } }],
      endpoints: [{ service: 'web', pods: [{ name: 'web-1', address: 'fd00::a' }, { name: 'web-3', address: 'fe80::1%eth0' }, { name: 'web-4', address: '::ffff:10.0.0.5' }] }],
    };
    const reported: string[] = [];
    const r = resolvePolicies('alpha', [metrics, pol('all', { podSelector: { matchLabels: { app: 'web' } }, ports: [{ protocol: 'UDP', port: 53 }], mode: 'exempt' })], odd, {
      listenPort: 51820,
      report: (p) => void reported.push(`${p.policy}: ${p.field}: ${p.problem}`),
    });
    expect(r).toHaveProperty('policies');
    const set = (r as { policies: ResolvedPolicy[] }).policies;
    // what matters: every pod's gate takes the set (it refused the whole set before)
    for (const name of ['web-1', 'web-3', 'cli-1']) await expect(setPolicy(podPolicies(set, name))).resolves.toBeNull();
    expect(set.map((p) => [p.name, p.addresses])).toEqual([
      ['all', ['10.128.2.10/32', 'fd00::1/128', 'fd00::a/128']],
      ['metrics', ['fd00:96::a/128', 'fd00::a/128']],
    ]);
    // the pods stay selected (their server side), only the addresses are left out
    expect(set.find((p) => p.name === 'all')!.pods).toEqual(['web-1', 'web-2', 'web-3', 'web-4']);
    expect(reported).toEqual([
      'TencPolicy alpha/metrics: (addresses): left out 2 address(es) a pod cannot take as a host CIDR: "fe80::1%eth0" (endpoint web-3) has a zone, "::ffff:10.0.0.5" (endpoint web-4) is IPv4-mapped',
      'TencPolicy alpha/all: (addresses): left out 2 address(es) a pod cannot take as a host CIDR: "fe80::1%eth0" (pod web-3) has a zone, "::ffff:10.0.0.5" (pod web-4) is IPv4-mapped',
    ]);
  });

  // the overlap check was find/includes over arrays (|addresses|^2 per policy pair) and ran before
  // the limits; a service policy's endpoint pods were found with includes over the view (pods x
  // endpoints per policy): seconds to minutes of the agent's event loop per reconcile (measured
  // when it was fixed: 128+128 policies over 250 pods each 19 s -> 44 ms; no time is asserted here)
  it('large inputs: the limits are reported, and within them the encrypt/exempt overlap is still found', () => {
    const big: PolicyView = { pods: [...many('x', 250, 'x', 140), ...many('e', 250, 'e', 141)], services: [], endpoints: [] };
    const objs = [
      ...Array.from({ length: 128 }, (_, k) => pol(`x${k}`, { podSelector: { matchLabels: { app: 'x' } }, ports: [{ port: 1000 + k }], mode: 'exempt' })),
      ...Array.from({ length: 128 }, (_, k) => pol(`e${k}`, { podSelector: { matchLabels: { app: 'e' } }, ports: [{ port: 1000 + k }] })),
    ];
    const r = resolvePolicies('alpha', objs, big, { listenPort: 51820 });
    expect('problems' in r && r.problems.map((p) => p.problem)).toEqual(['32000 exempt address x port pairs: at most 4096 (each is a routing rule in every pod)', expect.stringMatching(/bytes as sent to a pod/)]);
    // within the limits the overlap is still found, naming the first shared address, per
    // exempt range and encrypt policy
    const enc = (name: string, ports: unknown[]) => pol(name, { podSelector: { matchLabels: { app: 'web' } }, ports });
    expect(problems([metrics, enc('e1', [{ port: 80 }, { port: 9000, endPort: 9200 }, { protocol: 'UDP', port: 9100 }]), enc('e2', [{ port: 9100 }]), enc('e3', [{ port: 9101 }])])).toEqual([
      'TencPolicy alpha/metrics: spec.ports[0]: tcp/9100 overlaps tcp/9000-9200 of encrypt policy e1 on 10.128.1.10/32: a port is either encrypted or exempt',
      'TencPolicy alpha/metrics: spec.ports[0]: tcp/9100 overlaps tcp/9100 of encrypt policy e2 on 10.128.1.10/32: a port is either encrypted or exempt',
    ]);
  });

  it('large inputs: 200 policies on a service of 4,000 endpoints among 10,000 pods resolve to the size limit', () => {
    // 10,000 pods, a service with 4,000 endpoints, 200 policies on it
    const pods = many('p', 10_000, 'p', 150);
    const svc: PolicyView = { pods, services: [{ name: 'web', vip: '10.96.9.9', ports: [{ protocol: 'tcp', port: 80 }], selector: { app: 'p' } }], endpoints: [{ service: 'web', pods: pods.slice(0, 4000).map((p) => ({ name: p.name, address: p.address })) }] };
    const s = resolvePolicies('alpha', Array.from({ length: 200 }, (_, k) => pol(`s${k}`, { service: 'web', ports: [{ port: 80 }] })), svc, { listenPort: 51820 });
    expect('problems' in s && s.problems.map((p) => p.problem)).toEqual([expect.stringMatching(/bytes as sent to a pod: at most 900000/)]);
  });

  // only "some port of the service in the range" was checked: {1-65535} on a Service of port 80
  // exempted every port the endpoint pods serve (their own outgoing connections then left by the
  // main table and were dropped; replies to encrypted connections left in plaintext)
  it('a service policy\'s port range lies within the service\'s ports, or is refused naming policy and range', () => {
    expect(problems([pol('wide', { service: 'web', ports: [{ port: 1, endPort: 65535 }], mode: 'exempt' })])).toEqual([
      expect.stringMatching(/^TencPolicy alpha\/wide: spec.ports\[0\]: tcp\/1-65535 reaches beyond the ports of service web \(tcp\/80, tcp\/9100\): tcp\/1 is not one of them/),
    ]);
    expect(problems([pol('wide', { service: 'web', ports: [{ port: 80 }, { port: 9100, endPort: 9101 }], mode: 'exempt' })])).toEqual([
      expect.stringMatching(/^TencPolicy alpha\/wide: spec.ports\[1\]: tcp\/9100-9101 reaches beyond the ports of service web \(tcp\/80, tcp\/9100\): tcp\/9101 is not one of them/),
    ]);
    // a range the service's ports fill is taken
    const v = { ...view, services: [{ name: 'mx', vip: '10.96.1.30', ports: [{ protocol: 'tcp', port: 9101 }, { protocol: 'tcp', port: 9100 }, { protocol: 'tcp', port: 9102 }, { protocol: 'udp', port: 9103 }], selector: { app: 'web' } }] };
    const ok = resolvePolicies('alpha', [pol('mx', { service: 'mx', ports: [{ port: 9100, endPort: 9102 }], mode: 'exempt' })], v, { listenPort: 51820 });
    expect(ok).toHaveProperty('policies');
    const no = resolvePolicies('alpha', [pol('mx', { service: 'mx', ports: [{ port: 9100, endPort: 9103 }], mode: 'exempt' })], v, { listenPort: 51820 });
    expect('problems' in no && no.problems[0].problem).toMatch(/tcp\/9100-9103 reaches beyond the ports of service mx \(tcp\/9101, tcp\/9100, tcp\/9102, udp\/9103\): tcp\/9103 is not one of them/);
  });
});
