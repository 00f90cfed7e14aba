/**
 * The CNI plugin's skeleton and configuration checks (no agent needed: an
 * unreachable agent must give code 11), the agent's dual-stack desired state
 * and process identity (pid + start time), and the fail-closed state the agent puts
 * in a pod's netns at ADD: the same lines tenc pod's own start runs.
 */
import { describe, it, expect } from 'vitest';
import { spawn } from 'node:child_process';
import { PassThrough } from 'node:stream';
import { runPlugin, parseCniArgs, readStdin, CniCode, CniError } from '../../src/cni/skeleton.js';
import { tencPlugin, prevResultAddresses, parseTencConfig, parseTencConfigForDel } from '../../src/cni/plugin.js';
import { COMMAND_HELP } from '../../src/cli/help.js';
import { desiredState } from '../../src/agent/desired.js';
import { processStartTime, sameProcess } from '../../src/agent/proxies.js';
import type { PodInfo, ProjectView } from '../../src/registry/registry.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, validateConfig } from '../../src/control/config.js';
import { failClosedScripts, failClosedState } from '../../src/control/failclosed.js';
import { PolicyRouting, guardBatch } from '../../src/routing/policy.js';
import type { IpCommand } from '../../src/routing/ip.js';

const env = (o: Record<string, string>) => ({ CNI_CONTAINERID: 'c1', CNI_NETNS: '/run/netns/x', CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin', CNI_ARGS: 'K8S_POD_NAMESPACE=alpha;K8S_POD_NAME=web-1;K8S_POD_UID=u1', ...o });
const prev100 = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: '/run/netns/x' }], ips: [{ address: '10.128.1.10/24', gateway: '10.128.1.1', interface: 0 }] };
const prev040 = { cniVersion: '0.4.0', ips: [{ version: '4', address: '10.128.1.10/24', interface: 0 }, { version: '6', address: 'fd00::a/64' }] };
const conf = (o: Record<string, unknown> = {}) => JSON.stringify({ cniVersion: '1.0.0', name: 'k8s', type: 'tenc', agentSocket: '/nonexistent/tenc-agent.sock', timeoutMs: 500, prevResult: prev100, ...o });

async function run(e: Record<string, string>, stdin: string): Promise<{ code: number; out: any }> {
  let s = '';
  const code = await runPlugin(tencPlugin, { env: e, stdin: async () => stdin, stdout: (x) => (s += x) });
  return { code, out: s === '' ? null : JSON.parse(s) };
}

describe('tenc cni skeleton', () => {
  it('VERSION lists the supported versions', async () => {
    const r = await run({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}');
    expect(r.code).toBe(0);
    expect(r.out.supportedVersions).toEqual(['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
  });
  it.each([
    ['stdin not JSON', { CNI_COMMAND: 'ADD' }, 'not json', CniCode.decodeFailure, /not JSON/],
    ['unknown field', { CNI_COMMAND: 'ADD' }, conf({ bogus: 1 }), CniCode.invalidNetworkConfig, /bogus/],
    ['bad timeoutMs', { CNI_COMMAND: 'ADD' }, conf({ timeoutMs: 'x' }), CniCode.invalidNetworkConfig, /timeoutMs/],
    ['missing prevResult', { CNI_COMMAND: 'ADD' }, conf({ prevResult: undefined }), CniCode.invalidNetworkConfig, /^prevResult: missing .*"unchained": true/],
    ['unchained not a boolean', { CNI_COMMAND: 'ADD' }, conf({ prevResult: undefined, unchained: 'true' }), CniCode.invalidNetworkConfig, /^unchained: "true" is not true or false$/],
    ['agent down on an unchained ADD', { CNI_COMMAND: 'ADD' }, conf({ prevResult: undefined, unchained: true }), CniCode.tryAgainLater, /not reachable/],
    ['missing CNI_NETNS', { CNI_COMMAND: 'ADD', CNI_NETNS: '' }, conf(), CniCode.invalidEnv, /CNI_NETNS/],
    ['bad CNI_COMMAND', { CNI_COMMAND: 'FOO' }, conf(), CniCode.invalidEnv, /CNI_COMMAND/],
    ['unsupported version', { CNI_COMMAND: 'ADD' }, conf({ cniVersion: '0.2.0' }), CniCode.incompatibleVersion, /0\.2\.0/],
    ['no pod args', { CNI_COMMAND: 'ADD', CNI_ARGS: 'IP=10.1.1.1' }, conf(), CniCode.invalidEnv, /K8S_POD_NAMESPACE/],
    ['agent down on ADD', { CNI_COMMAND: 'ADD' }, conf(), CniCode.tryAgainLater, /not reachable/],
    ['agent down on DEL', { CNI_COMMAND: 'DEL' }, conf(), CniCode.tryAgainLater, /not reachable/],
    ['agent down on STATUS', { CNI_COMMAND: 'STATUS' }, conf({ cniVersion: '1.1.0' }), CniCode.pluginNotAvailable, /not reachable/],
    ['GC with a cniVersion before 1.1.0', { CNI_COMMAND: 'GC' }, conf(), CniCode.incompatibleVersion, /^cniVersion: 1\.0\.0 does not allow GC$/],
  ])('%s: error JSON with code %#', async (_n, e, stdin, code, msg) => {
    const r = await run(env(e as Record<string, string>), stdin as string);
    expect(r.code).toBe(1);
    expect(r.out.code).toBe(code);
    expect(r.out.msg).toMatch(msg);
    expect(Object.keys(r.out).sort()).toEqual(['cniVersion', 'code', 'details', 'msg']);
  });
  it('GC of a cniVersion 1.1.0 network: exit 0, nothing printed, no agent needed', async () => {
    const r = await run({ CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' }, conf({ cniVersion: '1.1.0', prevResult: undefined, 'cni.dev/valid-attachments': [] }));
    expect(r).toEqual({ code: 0, out: null });
  });
  it('readStdin: over 1 MiB (bytes) it rejects with code 6 and stops reading a stdin never closed', async () => {
    const bounded = <T>(p: Promise<T>) => Promise.race([p, new Promise<never>((_, j) => setTimeout(() => j(new Error('readStdin still waiting')), 5000))]);
    const never = new PassThrough();
    const p = readStdin(never);
    never.write(Buffer.alloc(1 << 20, 0x20));
    never.write('{}'); // 1 MiB + 2, and no end
    const e = await bounded(p).catch((x) => x);
    expect(e).toBeInstanceOf(CniError);
    expect([e.code, e.message]).toEqual([CniCode.decodeFailure, 'stdin: more than 1 MiB']);
    expect(never.destroyed).toBe(true);
    // 600 000 two-byte characters: under 1 MiB of characters, over 1 MiB of bytes
    const wide = new PassThrough();
    const q = readStdin(wide);
    wide.end('\u00e9'.repeat(600_000));
    await expect(bounded(q)).rejects.toThrow('stdin: more than 1 MiB');
    const ok = new PassThrough();
    const r = readStdin(ok);
    ok.end(Buffer.from('{"name":"n\u00e9t"}'));
    expect(await bounded(r)).toBe('{"name":"n\u00e9t"}');
  });
  it('CNI_ARGS and prevResult in 0.4.0 and 1.0.0 form', () => {
    expect(parseCniArgs('IgnoreUnknown=1;K8S_POD_NAME=a;IP=10.0.0.1')).toEqual({ IgnoreUnknown: '1', K8S_POD_NAME: 'a', IP: '10.0.0.1' });
    expect(prevResultAddresses({ prevResult: prev100 })).toEqual(['10.128.1.10']);
    expect(prevResultAddresses({ prevResult: prev040 })).toEqual(['10.128.1.10', 'fd00::a']);
    expect(() => prevResultAddresses({ prevResult: { ips: [{ address: '10.1.1.1' }] } })).toThrow(/ips\[0\]\.address/);
    expect(parseTencConfig({ type: 'tenc' })).toEqual({ agentSocket: '/run/tenc/agent.sock', timeoutMs: 5000, unchained: false });
    expect(parseTencConfig({ type: 'tenc', unchained: true }).unchained).toBe(true);
    expect(() => parseTencConfig({ type: 'tenc', unchained: null })).toThrow(/^unchained: null is not true or false$/);
    expect(() => parseTencConfig({ type: 'tenc', agentSocket: 'rel.sock' })).toThrow(/agentSocket/);
  });
  it('DEL reads the configuration and CNI_ARGS best effort: unknown fields ignored, an invalid value its default, bad CNI_ARGS parts skipped; "type" still required', async () => {
    const defaults = parseTencConfig({ type: 'tenc' });
    for (const bad of [{ frobnicate: 1 }, { timeoutMs: 0 }, { timeoutMs: 999999 }, { timeoutMs: null }, { agentSocket: 'rel.sock' }, { agentSocket: null }, { unchained: 'yes' }]) {
      expect(() => parseTencConfig({ type: 'tenc', ...bad }), JSON.stringify(bad)).toThrow(new RegExp(`^${Object.keys(bad)[0]}: `));
      expect(parseTencConfigForDel({ type: 'tenc', ...bad }), JSON.stringify(bad)).toEqual(defaults);
    }
    // the valid fields are read as ADD reads them
    const good = { type: 'tenc', agentSocket: '/run/x.sock', timeoutMs: 700, unchained: true, frobnicate: 1 };
    expect(parseTencConfigForDel(good)).toEqual({ agentSocket: '/run/x.sock', timeoutMs: 700, unchained: true });
    expect(() => parseTencConfigForDel({ type: 'bridge' })).toThrow(/^type: "bridge", expected "tenc"$/);
    expect(() => parseTencConfigForDel({})).toThrow(/^type: undefined, expected "tenc"$/);
    expect(() => parseCniArgs('K8S_POD_NAME;=x;A=1')).toThrow(/^CNI_ARGS: "K8S_POD_NAME" is not KEY=VALUE$/);
    expect(parseCniArgs('K8S_POD_NAME;=x;;A=1', false)).toEqual({ A: '1' });
    // through the skeleton: a DEL with all of that gets as far as the agent (down here: code 11, not 7 or 4)
    const r = await run(env({ CNI_COMMAND: 'DEL', CNI_ARGS: 'garbage', CNI_IFNAME: 'eth0:1', CNI_NETNS: 'rel' }), conf({ frobnicate: 1, timeoutMs: 0 }));
    expect([r.code, r.out.code, r.out.msg]).toEqual([1, CniCode.tryAgainLater, 'tenc agent not reachable at /nonexistent/tenc-agent.sock']);
  });
  it("tenc cni --help: its conflist entry is the plugin's defaults, and every field of the plugin's own has a line (unchained had none)", () => {
    const help = COMMAND_HELP.cni!;
    const entry = JSON.parse(/^ {2}(\{"type": "tenc".*\})$/m.exec(help)![1]!) as Record<string, unknown>;
    const fields = Object.keys(parseTencConfig({ type: 'tenc' }));
    expect(fields.length).toBeGreaterThanOrEqual(3);
    expect(Object.keys(entry).sort()).toEqual(['type', ...fields].sort());
    expect(parseTencConfig(entry)).toEqual(parseTencConfig({ type: 'tenc' }));
    for (const f of fields) expect(help, f).toMatch(new RegExp(`^ {2}${f} {2,}\\S`, 'm'));
  });
});

describe('agent: dual-stack pods and process identity', () => {
  it('IPv6 pod addresses become /128 allowed IPs and members', () => {
    const p = (name: string, a: string[]): PodInfo => ({ project: 'alpha', name, node: 'n1', address: a[0], addresses: a, labels: {}, netns: null });
    const pods = [p('a', ['10.128.1.10', 'fd00:128::a']), p('b', ['10.128.1.11', 'fd00:128::b'])];
    const view: ProjectView = {
      pods,
      services: [{ project: 'alpha', name: 's', vip: 'fd00:96::1', ports: [], selector: {} }],
      endpoints: [{ project: 'alpha', service: 's', pods: [{ name: 'b', address: '10.128.1.11', node: 'n1' }] }],
      peers: [{ project: 'alpha', pod: 'b', node: 'n1', publicKey: 'B'.repeat(43) + '=', endpoint: '10.128.1.11:51820' }],
    };
    const d = desiredState(view, pods[0]);
    expect(d.peers[0].allowedIps).toEqual(['10.128.1.11/32', 'fd00:128::b/128', 'fd00:96::1/128']);
    expect(d.members).toEqual(['10.128.1.10/32', '10.128.1.11/32', 'fd00:128::a/128', 'fd00:128::b/128', 'fd00:96::1/128']);
  });
  it('pid + start time name one process: a reaped child is no longer the same', async () => {
    const c = spawn('sleep', ['5']);
    await new Promise((r) => c.once('spawn', r));
    const st = processStartTime(c.pid!);
    expect(st).toMatch(/^\d+$/);
    expect(sameProcess(c.pid!, st!)).toBe(true);
    expect(sameProcess(c.pid!, String(Number(st) + 1))).toBe(false);
    c.kill('SIGKILL');
    await new Promise((r) => c.once('exit', r));
    expect(sameProcess(c.pid!, st!)).toBe(false);
  });
});

describe('the fail-closed state the agent makes at ADD (failClosedScripts)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tenc-fc-'));
  const pskFile = join(dir, 'psk');
  writeFileSync(pskFile, Buffer.alloc(32, 7).toString('base64') + '\n', { mode: 0o600 });
  const key = Buffer.alloc(32, 9).toString('base64');
  const raw = {
    addresses: ['10.128.1.50'],
    pskFile,
    enforce: true,
    failClosedOnStop: true,
    peers: [{ publicKey: key, endpoint: '10.128.1.10:51820', allowedIps: ['10.128.1.10/32'] }],
    services: [{ vip: '10.96.0.20', ports: [{ protocol: 'tcp', port: 80 }] }],
    members: ['10.128.1.11/32', '10.128.1.10/32', 'fd00::b/128'],
    dns: { resolvConf: join(dir, 'resolv.conf'), classifyCidrs: ['10.128.0.0/16'] },
  };

  it('its ip lines are what PolicyRouting.guard runs at the proxy start (guards, then the rule)', async () => {
    const config = validateConfig(raw, join(dir, 'pod.json'));
    const s = failClosedScripts(config);
    const ran: string[] = [];
    const ip = {
      json: async () => [],
      run: async (args: string[]) => void ran.push(args.join(' ')),
      batch: async (fam: number, lines: string[]) => void ran.push(...lines.map((l) => `-${fam} ${l}`)),
    } as unknown as IpCommand;
    await new PolicyRouting({ ifname: 'tenc0', table: config.table, priority: config.rulePriority, fwmark: config.fwmark, addresses: config.addresses, ip }).guard(failClosedState(config).guards);
    expect(s.ip[4].map((l) => `-4 ${l}`)).toEqual(ran);
    expect(s.ip[4]).toEqual([
      'route replace unreachable 10.128.1.10/32 table 52100 metric 4294967295',
      'route replace unreachable 10.96.0.20/32 table 52100 metric 4294967295',
      'route replace unreachable 10.128.0.0/16 table 52100 metric 4294967295',
      'rule add not fwmark 0xcb84 table 52100 pref 5210',
    ]);
    expect(s.ip[6]).toEqual([]); // no IPv6 destination: no IPv6 rule (the member is in nft only)
  });

  it('its nft script replaces the table in one transaction, with the members in the project set', () => {
    const s = failClosedScripts(validateConfig(raw, join(dir, 'pod.json')));
    const lines = s.nft.split('\n');
    expect(lines.slice(0, 3)).toEqual(['table inet tenc_tenc0 {}', 'delete table inet tenc_tenc0', 'table inet tenc_tenc0 {']);
    expect(lines).toContain('add element inet tenc_tenc0 project4 { 10.96.0.20/32, 10.128.1.10/32, 10.128.1.11/32 }');
    expect(lines).toContain('add element inet tenc_tenc0 project6 { fd00::b/128 }');
    expect(lines).toContain('add element inet tenc_tenc0 classify4 { 10.128.0.0/16 }');
    expect(s.nft).toContain('chain input {'); // enforce
  });

  it('without destinations nothing is guarded and no rule is made (as tenc pod)', () => {
    expect(guardBatch({ table: 52100, priority: 5210, fwmark: 0xcb84 }, [])).toEqual({ 4: [], 6: [] });
    expect(guardBatch({ table: 52100, priority: 5210, fwmark: 0xcb84 }, ['fd00::1/128', 'fd00::1/128'])[6]).toEqual([
      'route replace unreachable fd00::1/128 table 52100 metric 4294967295',
      'rule add not fwmark 0xcb84 table 52100 pref 5210',
    ]);
  });

  it('config members: a bad entry is an error naming it', () => {
    expect(() => validateConfig({ ...raw, members: ['10.128.1.11/32', '10.1.1.300/32'] }, 'pod.json')).toThrow(ConfigError);
    expect(() => validateConfig({ ...raw, members: ['10.128.1.11/32', '10.1.1.300/32'] }, 'pod.json')).toThrow(/members\[1\]/);
    expect(() => validateConfig({ ...raw, members: 'all' }, 'pod.json')).toThrow(/members/);
  });
});
