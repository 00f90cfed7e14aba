// The static CNI launcher (cni/tenc-cni.c, what deploy/cni-install.sh puts in
// /opt/cni/bin/tenc) against `tenc cni` (src/cni/): for the same environment, stdin
// and node-socket answers, both send the agent the same request and print the same
// result or the same error (code, msg, details) with the same exit code. The agent
// here is a fake node socket that records requests and answers as told; the real
// agent is test/netns/cluster-k8s.test.ts. Where the process itself matters (stdin), the
// TypeScript plugin runs as a process too: src/cni/main.ts bundled by esbuild.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { buildSync } from 'esbuild';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_AGENT_SOCKET } from '../../src/cni/plugin.js';
import { buildCPlugin, FakeNodeAgent, runProc, runTs as runTsIn, type PluginOut as Out, type ProcOpts } from './cni-fakes.js';

const root = join(__dirname, '../..');
let dir: string;
let bin: string;
/** `tenc cni` as one file (src/cni/main.ts bundled), run by node. */
let tsBin: string;
let sock: string;
/** The fake node agent: its `answer` is how it answers the next request (a JSON answer line, 'silent' (never), 'close' (hang up)). */
let agent: FakeNodeAgent;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tenc-cnil-'));
  bin = buildCPlugin(join(dir, 'tenc-cni'));
  tsBin = join(dir, 'tenc-cni.mjs');
  buildSync({
    stdin: { contents: "import { cniMain } from './src/cni/main.ts';\nprocess.exitCode = await cniMain();\n", resolveDir: root, loader: 'ts' },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outfile: tsBin,
    logLevel: 'silent',
  });
  sock = join(dir, 'agent.sock');
  agent = await FakeNodeAgent.listen(sock);
});

afterAll(async () => {
  await agent.close();
  rmSync(dir, { recursive: true, force: true });
});

const runC = (env: Record<string, string>, stdin: string, o?: ProcOpts) => runProc(agent, bin, [], env, stdin, o);
const runTsProc = (env: Record<string, string>, stdin: string, o?: ProcOpts) => runProc(agent, process.execPath, [tsBin], env, stdin, o);
const runTs = (env: Record<string, string>, stdin: string) => runTsIn(agent, env, stdin);

const prev = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: '/run/netns/x' }], ips: [{ address: '10.128.1.10/24', gateway: '10.128.1.1', interface: 0 }, { address: 'FD00::A/64' }], routes: [{ dst: '0.0.0.0/0' }], dns: {} };
const conf = (extra: Record<string, unknown> = {}) => ({ cniVersion: '1.0.0', name: 'k8s-pod-network', type: 'tenc', agentSocket: sock, timeoutMs: 300, prevResult: prev, ...extra });
const env = (cmd: string, extra: Record<string, string> = {}) => ({
  CNI_COMMAND: cmd,
  CNI_CONTAINERID: 'abc123',
  CNI_NETNS: '/run/netns/cni-1234',
  CNI_IFNAME: 'eth0',
  CNI_PATH: '/opt/cni/bin',
  CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=alpha;K8S_POD_NAME=web-1;K8S_POD_UID=u-1',
  ...extra,
});

/** Both implementations, same input; returns the C one's output after checking they agree. */
async function same(e: Record<string, string>, stdin: string): Promise<Out> {
  const c = await runC(e, stdin);
  const t = await runTs(e, stdin);
  expect(c.code, `exit code (stdout C: ${c.stdout} TS: ${t.stdout})`).toBe(t.code);
  // a JSON syntax error's details are the parser's own words: compared without them
  const norm = (s: string) => {
    if (s.trim() === '') return null;
    const o = JSON.parse(s);
    if (o.msg === 'stdin: the network configuration is not JSON') o.details = typeof o.details === 'string' && o.details !== '';
    return o;
  };
  expect(norm(c.stdout)).toEqual(norm(t.stdout));
  expect(c.requests).toEqual(t.requests);
  return c;
}

describe('the static CNI launcher does what `tenc cni` does', () => {
  it('is one static executable (no interpreter, no shared library)', () => {
    const f = spawnSync('file', ['-b', bin], { encoding: 'utf8' });
    if (f.status !== 0) throw new Error('file(1) is missing');
    expect(f.stdout).toMatch(/statically linked/);
  });

  it('ADD, DEL, CHECK, STATUS: the same requests; ADD prints prevResult unchanged', async () => {
    agent.answer = () => ({ ok: true, result: { protected: true } });
    const add = await same(env('ADD'), JSON.stringify(conf()));
    expect(add.code).toBe(0);
    expect(JSON.parse(add.stdout)).toEqual(prev);
    expect(add.requests).toEqual([
      { id: 1, op: 'cni-add', containerId: 'abc123', netns: '/run/netns/cni-1234', ifname: 'eth0', podNamespace: 'alpha', podName: 'web-1', podUid: 'u-1', addresses: ['10.128.1.10', 'fd00::a'], timeoutMs: 300 },
    ]);
    // DEL without a netns (the sandbox is gone), and without prevResult
    const del = await same(env('DEL', { CNI_NETNS: '' }), JSON.stringify(conf({ prevResult: undefined })));
    expect(del.requests).toEqual([{ id: 1, op: 'cni-del', containerId: 'abc123' }]);
    expect(del.stdout).toBe('');
    const check = await same(env('CHECK'), JSON.stringify(conf()));
    expect(check.requests[0]).toMatchObject({ op: 'cni-check', netns: '/run/netns/cni-1234', podName: 'web-1' });
    const st = await same(env('STATUS'), JSON.stringify(conf()));
    expect(st.requests[0]).toMatchObject({ op: 'cni-status' });
    // 0.4.0, escapes and non-ASCII in strings come through
    const odd = await same(env('ADD', { CNI_ARGS: 'K8S_POD_NAMESPACE=alpha;K8S_POD_NAME=web-2' }), JSON.stringify({ ...conf({ cniVersion: '0.4.0' }), name: 'n\u00e9t "q"\\\u2603' }));
    expect(odd.requests[0]).toMatchObject({ podUid: '' });
  });

  it('unchained ("unchained": true; Multus calls it alone, no prevResult): ADD asks without addresses and prints the empty result of the request\'s cniVersion', async () => {
    agent.answer = () => ({ ok: true, result: { protected: true } });
    // what Multus sends for a NetworkAttachmentDefinition {"type":"tenc","unchained":true}: its
    // own CNI_IFNAME, the pod's sandbox and CNI_ARGS, no prevResult (the default network ran before)
    const unchained = (extra: Record<string, unknown> = {}) => JSON.stringify(conf({ name: 'tenc', unchained: true, prevResult: undefined, ...extra }));
    for (const v of ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']) {
      const add = await same(env('ADD', { CNI_IFNAME: 'net1' }), unchained({ cniVersion: v }));
      expect(add.code, add.stdout).toBe(0);
      // every key the version's result requires, nothing in them: tenc makes no interface and gives no address
      expect(JSON.parse(add.stdout)).toEqual({ cniVersion: v, interfaces: [], ips: [], routes: [], dns: {} });
      // the agent reads the pod's addresses itself: none in the request
      expect(add.requests).toEqual([{ id: 1, op: 'cni-add', containerId: 'abc123', netns: '/run/netns/cni-1234', ifname: 'net1', podNamespace: 'alpha', podName: 'web-1', podUid: 'u-1', timeoutMs: 300 }]);
    }
    // a namespace that is not protected: the same empty result
    agent.answer = () => ({ ok: true, result: { protected: false } });
    expect(JSON.parse((await same(env('ADD', { CNI_IFNAME: 'net1' }), unchained({ cniVersion: '0.4.0' }))).stdout)).toEqual({ cniVersion: '0.4.0', interfaces: [], ips: [], routes: [], dns: {} });
    // a plugin before tenc in the attachment: its result passed on unchanged, its addresses
    // (the attachment's, not the pod's) not read
    agent.answer = () => ({ ok: true, result: { protected: true } });
    const after = await same(env('ADD', { CNI_IFNAME: 'net1' }), unchained({ prevResult: prev }));
    expect(JSON.parse(after.stdout)).toEqual(prev);
    expect(after.requests[0]).not.toHaveProperty('addresses');
    // CHECK: libcni gives back the cached empty result (or nothing): not read; DEL as ever
    const check = await same(env('CHECK', { CNI_IFNAME: 'net1' }), unchained({ prevResult: { cniVersion: '1.0.0', interfaces: [], ips: [], routes: [], dns: {} } }));
    expect([check.code, check.stdout, check.requests]).toEqual([0, '', [{ id: 1, op: 'cni-check', containerId: 'abc123', netns: '/run/netns/cni-1234', podNamespace: 'alpha', podName: 'web-1', podUid: 'u-1', timeoutMs: 300 }]]);
    expect((await same(env('CHECK', { CNI_IFNAME: 'net1' }), unchained())).requests[0]).toMatchObject({ op: 'cni-check' });
    const del = await same(env('DEL', { CNI_IFNAME: 'net1', CNI_NETNS: '' }), unchained());
    expect([del.code, del.stdout, del.requests]).toEqual([0, '', [{ id: 1, op: 'cni-del', containerId: 'abc123' }]]);
    // the agent finding no address in the netns yet (the default network not up): code 11, the runtime retries
    agent.answer = () => ({ ok: false, error: { code: 'EADDRNOTAVAIL', message: 'netns /run/netns/cni-1234: no pod address (no IPv4 default route; no IPv6 default route): is the pod\'s network set up?' } });
    const none = await same(env('ADD', { CNI_IFNAME: 'net1' }), unchained());
    expect(JSON.parse(none.stdout)).toMatchObject({ code: 11, msg: expect.stringMatching(/^tenc agent: netns \/run\/netns\/cni-1234: no pod address/) });
    // a bad opt-in or prevResult: refused before the agent is asked, the same words from both
    agent.answer = () => ({ ok: true, result: { protected: true } });
    for (const [extra, msg] of [
      [{ unchained: 'yes' }, 'unchained: "yes" is not true or false'],
      [{ unchained: null }, 'unchained: null is not true or false'],
      [{ unchained: 1 }, 'unchained: 1 is not true or false'],
      [{ prevResult: [] }, 'prevResult: not an object'],
    ] as [Record<string, unknown>, string][]) {
      for (const cmd of ['ADD', 'CHECK']) {
        const bad = await same(env(cmd), unchained(extra));
        expect([bad.code, JSON.parse(bad.stdout).code, JSON.parse(bad.stdout).msg, bad.requests]).toEqual([1, 7, msg, []]);
      }
    }
  });

  it('without the opt-in a missing prevResult is still code 7 (a chained entry that lost its place fails loudly), and the message names "unchained"', async () => {
    agent.answer = () => ({ ok: true, result: { protected: true } });
    for (const extra of [{}, { unchained: false }]) {
      for (const cmd of ['ADD', 'CHECK']) {
        const o = await same(env(cmd), JSON.stringify(conf({ prevResult: undefined, ...extra })));
        expect(o.code).toBe(1);
        expect(o.requests).toEqual([]);
        expect(JSON.parse(o.stdout)).toEqual({
          cniVersion: '1.0.0',
          code: 7,
          msg: 'prevResult: missing (tenc runs chained: put it after the plugin that gives the pod its address; called alone, as Multus calls the plugin of a NetworkAttachmentDefinition, it needs "unchained": true in its configuration)',
          details: '',
        });
      }
    }
    // chained with "unchained": false and a prevResult: exactly as without the field
    const add = await same(env('ADD'), JSON.stringify(conf({ unchained: false })));
    expect(JSON.parse(add.stdout)).toEqual(prev);
    expect(add.requests[0]).toMatchObject({ addresses: ['10.128.1.10', 'fd00::a'] });
  });

  it('VERSION needs no agent and no valid stdin', async () => {
    const v = await same(env('VERSION'), JSON.stringify({ cniVersion: '1.1.0' }));
    expect(JSON.parse(v.stdout)).toEqual({ cniVersion: '1.1.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
    expect(v.requests).toEqual([]);
    await same(env('VERSION'), 'not json');
  });

  it('the agent down, silent, hanging up, refusing or failing: the same CNI errors (11 = retry, 7 = bad config)', async () => {
    const gone = await same(env('ADD'), JSON.stringify(conf({ agentSocket: join(dir, 'nobody.sock') })));
    expect(JSON.parse(gone.stdout)).toMatchObject({ code: 11, msg: `tenc agent not reachable at ${join(dir, 'nobody.sock')}` });
    agent.answer = () => 'silent';
    const slow = await runC(env('ADD'), JSON.stringify(conf({ timeoutMs: 100 })));
    expect(JSON.parse(slow.stdout)).toMatchObject({ code: 11, msg: `tenc agent: no answer from ${sock} within 1100 ms` });
    agent.answer = () => 'close';
    await same(env('DEL'), JSON.stringify(conf()));
    agent.answer = () => 'this is not json';
    await same(env('DEL'), JSON.stringify(conf()));
    agent.answer = () => ({ ok: false, error: { code: 'EINVAL', message: 'netns: "/run/netns/cni-1234" does not exist' } });
    const inval = await same(env('ADD'), JSON.stringify(conf()));
    expect(JSON.parse(inval.stdout)).toMatchObject({ code: 7, msg: 'tenc agent: netns: "/run/netns/cni-1234" does not exist' });
    agent.answer = () => ({ ok: false, error: { code: 'ETIMEDOUT', message: 'pod alpha/web-1 not fail-closed within 300 ms' } });
    expect(JSON.parse((await same(env('ADD'), JSON.stringify(conf()))).stdout)).toMatchObject({ code: 11 });
    agent.answer = () => ({ ok: false, error: { code: 'EIO', message: 'no running proxy for the pod' } });
    await same(env('CHECK'), JSON.stringify(conf()));
    // STATUS with the agent down: code 50, the errno's words, from both
    const st = await same(env('STATUS'), JSON.stringify(conf({ agentSocket: join(dir, 'nobody.sock') })));
    expect(JSON.parse(st.stdout)).toMatchObject({ code: 50, msg: `tenc agent not reachable at ${join(dir, 'nobody.sock')}: ${join(dir, 'nobody.sock')}: No such file or directory` });
  });

  it('regression: the agent answering ENOENT (CHECK of an unregistered container) is code 3, not "agent not reachable"', async () => {
    // node.ts cni-check answers this for a container of a protected namespace it has no registration for
    agent.answer = () => ({ ok: false, error: { code: 'ENOENT', message: 'container abc123 is not registered' } });
    const check = await same(env('CHECK'), JSON.stringify(conf()));
    expect(check.requests).toHaveLength(1);
    expect(check.code).toBe(1);
    expect(JSON.parse(check.stdout)).toMatchObject({ code: 3, msg: 'tenc agent: container abc123 is not registered' });
    // a connect() that finds no socket (ENOENT too) is still the agent down: 11
    const gone = await same(env('CHECK'), JSON.stringify(conf({ agentSocket: join(dir, 'nobody.sock') })));
    expect(JSON.parse(gone.stdout)).toMatchObject({ code: 11, msg: `tenc agent not reachable at ${join(dir, 'nobody.sock')}` });
  });

  it('regression: GC (CNI 1.1.0) is accepted and does nothing; an older cniVersion is refused with code 1', async () => {
    agent.answer = () => ({ ok: true, result: {} });
    // what libcni sends: CNI_COMMAND and CNI_PATH only, the network's config with the valid attachments
    const gcEnv = { CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' };
    const gcConf = (v: string) => JSON.stringify({ cniVersion: v, name: 'k8s-pod-network', type: 'tenc', agentSocket: sock, 'cni.dev/valid-attachments': [{ containerID: 'abc123', ifname: 'eth0' }] });
    const gc = await same(gcEnv, gcConf('1.1.0'));
    expect([gc.code, gc.stdout, gc.requests]).toEqual([0, '', []]);
    const old = await same(gcEnv, gcConf('1.0.0'));
    expect(old.code).toBe(1);
    expect(JSON.parse(old.stdout)).toEqual({ cniVersion: '1.0.0', code: 1, msg: 'cniVersion: 1.0.0 does not allow GC', details: 'GC needs cniVersion 1.1.0 or later' });
    expect(old.requests).toEqual([]);
  });

  it('regression: an agent that accepts nothing (its listen backlog full) is code 11 within the timeout, not a hang in connect()', async () => {
    // a listener that never accepts: a child that listens with backlog 1, then blocks its own event loop
    const frozen = join(dir, 'frozen.sock');
    const child = spawn(
      process.execPath,
      ['-e', "require('net').createServer().listen({ path: process.argv[1], backlog: 1 }, () => { console.log('ready'); Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); })", frozen],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const held: Socket[] = [];
    try {
      await new Promise<void>((r, j) => {
        child.stdout!.once('data', () => r());
        child.once('exit', (c) => j(new Error(`the frozen listener exited (${c})`)));
      });
      // fill the backlog: connect until the kernel says EAGAIN (a non-blocking unix connect)
      let last = '';
      for (let i = 0; i < 1000 && last !== 'EAGAIN'; i++) {
        last = await new Promise<string>((r) => {
          const s = createConnection(frozen);
          s.once('connect', () => (held.push(s), r('connected')));
          s.once('error', (e: NodeJS.ErrnoException) => r(e.code ?? 'error'));
        });
      }
      expect(last, 'the listen backlog could not be filled').toBe('EAGAIN');
      const input = JSON.stringify(conf({ agentSocket: frozen, timeoutMs: 100 }));
      const c = await runC(env('ADD'), input, { killAfterMs: 15_000 });
      expect(c.code, `C plugin stdout: ${c.stdout}`).toBe(1);
      expect(c.ms).toBeLessThan(10_000); // 1100 ms asked; generous
      expect(JSON.parse(c.stdout)).toMatchObject({ code: 11, msg: `tenc agent: no answer from ${frozen} within 1100 ms` });
      const t = await runTs(env('ADD'), input); // `tenc cni` the same
      expect([t.code, JSON.parse(t.stdout)]).toEqual([c.code, JSON.parse(c.stdout)]);
    } finally {
      for (const s of held) s.destroy();
      child.kill('SIGKILL');
    }
  });

  it('bad environment or configuration: refused before the agent is asked, with the same field named', async () => {
    agent.answer = () => ({ ok: true, result: {} });
    const cases: [Record<string, string>, string][] = [
      [env('FROB'), JSON.stringify(conf())],
      [{ ...env('ADD'), CNI_COMMAND: '' }, JSON.stringify(conf())],
      [env('ADD'), '{"cniVersion": "1.0.0", '],
      [env('ADD'), '[1, 2]'],
      [env('ADD'), JSON.stringify({ ...conf(), cniVersion: 3 })],
      [env('ADD'), JSON.stringify(conf({ cniVersion: '9.9.9' }))],
      [env('ADD', { CNI_CONTAINERID: '-bad id' }), JSON.stringify(conf())],
      [env('ADD', { CNI_IFNAME: 'eth0:1' }), JSON.stringify(conf())],
      [env('ADD', { CNI_IFNAME: '\u00e9'.repeat(8) }), JSON.stringify(conf())], // 16 bytes in 8 characters: `tenc cni` counted characters
      [env('ADD', { CNI_NETNS: 'relative/ns' }), JSON.stringify(conf())],
      [env('ADD', { CNI_NETNS: '' }), JSON.stringify(conf())],
      [env('ADD', { CNI_ARGS: 'K8S_POD_NAME' }), JSON.stringify(conf())],
      [env('ADD', { CNI_ARGS: 'K8S_POD_NAMESPACE=alpha' }), JSON.stringify(conf())],
      [env('ADD'), JSON.stringify(conf({ agentsocket: '/x' }))],
      [env('ADD'), JSON.stringify(conf({ type: 'bridge' }))],
      [env('ADD'), JSON.stringify(conf({ agentSocket: 'relative.sock' }))],
      [env('ADD'), JSON.stringify(conf({ agentSocket: `/${'x'.repeat(120)}` }))],
      [env('ADD'), JSON.stringify(conf({ timeoutMs: 1.5 }))],
      [env('ADD'), JSON.stringify(conf({ timeoutMs: 50 }))],
      [env('ADD'), JSON.stringify(conf({ timeoutMs: '300' }))],
      [env('ADD'), JSON.stringify(conf({ prevResult: undefined }))],
      [env('ADD'), JSON.stringify(conf({ prevResult: [] }))],
      [env('ADD'), JSON.stringify(conf({ prevResult: { ips: [] } }))],
      [env('ADD'), JSON.stringify(conf({ prevResult: { ips: [{ address: 7 }] } }))],
      [env('ADD'), JSON.stringify(conf({ prevResult: { ips: [{ address: '10.0.0.1' }] } }))],
      [env('CHECK'), JSON.stringify(conf({ prevResult: { ips: [{ address: 'x/24' }] } }))],
      [env('STATUS'), JSON.stringify(conf({ type: 'tenc2' }))],
    ];
    for (const [e, stdin] of cases) {
      const o = await same(e, stdin);
      expect(o.code, stdin).toBe(1);
      expect(o.requests, stdin).toEqual([]);
      expect(JSON.parse(o.stdout).code).toBeGreaterThan(0);
    }
  });

  it('regression: DEL reads its configuration and environment best effort (a field ADD refuses made every DEL on the node fail with code 7, so no pod sandbox there was ever removed); ADD and CHECK still refuse it, naming the field', async () => {
    agent.answer = () => ({ ok: true, result: {} });
    const delOk = [{ id: 1, op: 'cni-del', containerId: 'abc123' }];
    // [configuration fields, the message ADD and CHECK refuse it with]
    const configs: [Record<string, unknown>, string][] = [
      [{ frobnicate: true }, "frobnicate: unknown field in the tenc plugin's configuration"], // a field an upgrade added
      [{ timeoutMs: 0 }, 'timeoutMs: 0 is not an integer from 100 to 100000'],
      [{ timeoutMs: 999999 }, 'timeoutMs: 999999 is not an integer from 100 to 100000'],
      [{ timeoutMs: 100001 }, 'timeoutMs: 100001 is not an integer from 100 to 100000'], // the maximum lowered: below kubelet's 2 minutes
      [{ timeoutMs: '300' }, 'timeoutMs: "300" is not an integer from 100 to 100000'],
      [{ timeoutMs: null }, 'timeoutMs: null is not an integer from 100 to 100000'], // `tenc cni` took null for "left out"
      [{ unchained: 'yes' }, 'unchained: "yes" is not true or false'],
    ];
    for (const [extra, msg] of configs) {
      const del = await same(env('DEL', { CNI_NETNS: '' }), JSON.stringify(conf({ prevResult: undefined, ...extra })));
      expect([del.code, del.stdout, del.requests], `DEL ${JSON.stringify(extra)}`).toEqual([0, '', delOk]);
      for (const cmd of ['ADD', 'CHECK']) {
        const o = await same(env(cmd), JSON.stringify(conf(extra)));
        expect([o.code, JSON.parse(o.stdout), o.requests], `${cmd} ${JSON.stringify(extra)}`).toEqual([1, { cniVersion: '1.0.0', code: 7, msg, details: '' }, []]);
      }
    }
    // DEL: the environment it does not need, bad or missing (an ADD refused for it is followed by a DEL with the same)
    const { CNI_IFNAME: _ifname, ...noIfname } = env('DEL');
    for (const e of [env('DEL', { CNI_ARGS: 'K8S_POD_NAME;=x;;garbage' }), env('DEL', { CNI_IFNAME: 'eth0:1' }), env('DEL', { CNI_IFNAME: 'x'.repeat(16) }), noIfname, env('DEL', { CNI_NETNS: 'relative/ns' })]) {
      const del = await same(e, JSON.stringify(conf()));
      expect([del.code, del.stdout, del.requests], JSON.stringify(e)).toEqual([0, '', delOk]);
    }
    const add = await same(env('ADD', { CNI_ARGS: 'K8S_POD_NAME;=x;;garbage' }), JSON.stringify(conf()));
    expect([add.code, JSON.parse(add.stdout).code, JSON.parse(add.stdout).msg, add.requests]).toEqual([1, 4, 'CNI_ARGS: "K8S_POD_NAME" is not KEY=VALUE', []]);
    // the largest timeoutMs still asked for as it is
    const max = await same(env('ADD'), JSON.stringify(conf({ timeoutMs: 100000 })));
    expect([max.code, max.requests[0]?.timeoutMs]).toEqual([0, 100000]);
    // a bad agentSocket: ADD and CHECK refuse it (code 7), DEL asks the default socket instead
    const sockets: [unknown, string][] = [
      ['relative.sock', 'agentSocket: "relative.sock" is not an absolute socket path (at most 107 bytes)'],
      [null, 'agentSocket: null is not an absolute socket path (at most 107 bytes)'], // `tenc cni` took null for "left out"
      [`/${'\u00e9'.repeat(60)}`, `agentSocket: "/${'\u00e9'.repeat(60)}" is not an absolute socket path (at most 107 bytes)`], // 121 bytes in 61 characters: `tenc cni` counted characters
    ];
    for (const [agentSocket, msg] of sockets) {
      for (const cmd of ['ADD', 'CHECK']) {
        const o = await same(env(cmd), JSON.stringify(conf({ agentSocket })));
        expect([o.code, JSON.parse(o.stdout)], `${cmd} ${JSON.stringify(agentSocket)}`).toEqual([1, { cniVersion: '1.0.0', code: 7, msg, details: '' }]);
      }
      const del = await same(env('DEL'), JSON.stringify(conf({ agentSocket })));
      if (!existsSync(DEFAULT_AGENT_SOCKET)) expect(JSON.parse(del.stdout), `DEL ${JSON.stringify(agentSocket)}`).toMatchObject({ code: 11, msg: `tenc agent not reachable at ${DEFAULT_AGENT_SOCKET}` });
      else expect(del.stdout === '' ? 0 : JSON.parse(del.stdout).code).not.toBe(7); // a real agent there: whatever it answers, not the configuration's fault
    }
    // what DEL does need stays required, named: the container id, JSON, cniVersion, "type": "tenc"
    const { CNI_CONTAINERID: _cid, ...noCid } = env('DEL');
    const needed: [Record<string, string>, string, number, string][] = [
      [noCid, JSON.stringify(conf()), 4, 'CNI_CONTAINERID is not set'],
      [env('DEL', { CNI_CONTAINERID: '-bad id' }), JSON.stringify(conf()), 4, 'CNI_CONTAINERID: "-bad id" is not a container id'],
      [env('DEL'), '{"cniVersion": "1.0.0", ', 6, 'stdin: the network configuration is not JSON'],
      [env('DEL'), JSON.stringify({ ...conf(), cniVersion: undefined }), 7, 'cniVersion: missing or not a string'],
      [env('DEL'), JSON.stringify({ ...conf(), type: undefined }), 7, 'type: undefined, expected "tenc"'],
      [env('DEL'), JSON.stringify(conf({ type: 'bridge', frobnicate: 1 })), 7, 'type: "bridge", expected "tenc"'],
    ];
    for (const [e, stdin, code, msg] of needed) {
      const o = await same(e, stdin);
      expect([o.code, JSON.parse(o.stdout).code, JSON.parse(o.stdout).msg, o.requests], stdin).toEqual([1, code, msg, []]);
    }
  });

  it('stdin over 1 MiB and deeply nested JSON are refused, not crashed on', async () => {
    const big = await runC(env('ADD'), JSON.stringify(conf({ runtimeConfig: { pad: 'x'.repeat(1 << 20) } })));
    expect(JSON.parse(big.stdout)).toMatchObject({ code: 6, msg: 'stdin: more than 1 MiB' });
    // regression: both stop reading there and exit, even when the runtime never closes stdin
    // (`tenc cni` used to keep reading until EOF), and both count bytes, not characters
    agent.answer = () => ({ ok: true, result: { protected: true } });
    const open = JSON.stringify(conf({ runtimeConfig: { pad: 'x'.repeat(1 << 20) } }));
    const wide = JSON.stringify(conf({ runtimeConfig: { pad: '\u00e9'.repeat(600_000) } })); // 1.2 MB, 0.6 M characters
    for (const run of [runC, runTsProc]) {
      const o = await run(env('ADD'), open, { keepStdinOpen: true, killAfterMs: 15_000 });
      expect(o.code, `${run === runC ? 'C' : 'TS'}: exit (null: still reading stdin, killed)`).toBe(1);
      expect(JSON.parse(o.stdout)).toEqual({ cniVersion: '1.0.0', code: 6, msg: 'stdin: more than 1 MiB', details: '' });
      const w = await run(env('ADD'), wide);
      expect(w.requests, 'refused before the agent is asked').toEqual([]);
      expect(JSON.parse(w.stdout)).toMatchObject({ code: 6, msg: 'stdin: more than 1 MiB' });
    }
    const deep = await runC(env('ADD'), `{"cniVersion":"1.0.0","args":${'['.repeat(100000)}`);
    expect(deep.code).toBe(1);
    expect(JSON.parse(deep.stdout)).toMatchObject({ code: 6 });
  });
});
