// The cniVersions tenc's CNI plugins speak, and what deploy/cni-install.sh chains tenc
// into. kindnet (kind's default CNI), flannel and Calico write conflists of cniVersion
// 0.3.1: a plugin that refused it failed every pod ADD on a node whose conflist
// cni-install.sh had chained it into. Here the static C plugin (cni/tenc-cni.c, built by
// cni/build.sh: what nodes run) and `tenc cni` (src/cni/) run the commands a runtime
// sends for such a chain, against a fake node socket that records requests; the chain
// itself is the one cni-install.sh makes of kindnet's conflist.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { SUPPORTED_VERSIONS } from '../../src/cni/skeleton.js';
import { buildCPlugin, FakeNodeAgent, runProc, runTs as runTsIn, whileKeeping, type PluginOut as Out } from './cni-fakes.js';

type Obj = Record<string, unknown>;

const root = join(__dirname, '../..');
const script = join(root, 'deploy/cni-install.sh');
let dir: string;
let bin: string;
let sock: string;
/** The fake node agent: its `answer` is its answer to the next request. */
let agent: FakeNodeAgent;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tenc-cniv-'));
  bin = buildCPlugin(join(dir, 'tenc-cni'));
  sock = join(dir, 'agent.sock');
  agent = await FakeNodeAgent.listen(sock);
  agent.answer = () => ({ ok: true, result: { protected: true } });
});

afterAll(async () => {
  await agent.close();
  rmSync(dir, { recursive: true, force: true });
});

const runC = (env: Record<string, string>, stdin: string) => runProc(agent, bin, [], env, stdin);
const runTs = (env: Record<string, string>, stdin: string) => runTsIn(agent, env, stdin);

/** Both plugins, same input: the same exit code, output and requests; the C one's. */
async function both(env: Record<string, string>, stdin: string): Promise<Out> {
  const c = await runC(env, stdin);
  const t = await runTs(env, stdin);
  expect(c.code, `exit code (stdout C: ${c.stdout} TS: ${t.stdout})`).toBe(t.code);
  const parse = (s: string) => (s.trim() === '' ? null : JSON.parse(s));
  expect(parse(c.stdout)).toEqual(parse(t.stdout));
  expect(c.requests).toEqual(t.requests);
  return c;
}

const env = (cmd: string, extra: Record<string, string> = {}): Record<string, string> => ({
  CNI_COMMAND: cmd,
  CNI_CONTAINERID: 'f00dcafe',
  CNI_NETNS: '/var/run/netns/cni-8f4c1d2e',
  CNI_IFNAME: 'eth0',
  CNI_PATH: '/opt/cni/bin',
  CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=alpha;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=f00dcafe;K8S_POD_UID=u-1',
  ...extra,
});

/** kindnetd's conflist (kind's default CNI; dual-stack ranges), as it writes it. */
const kindnet = {
  cniVersion: '0.3.1',
  name: 'kindnet',
  plugins: [
    {
      type: 'ptp',
      ipMasq: false,
      ipam: {
        type: 'host-local',
        dataDir: '/run/cni-ipam-state',
        routes: [{ dst: '0.0.0.0/0' }, { dst: '::/0' }],
        ranges: [[{ subnet: '10.244.1.0/24' }], [{ subnet: 'fd00:10:244:1::/64' }]],
      },
      mtu: 1500,
    },
    { type: 'portmap', capabilities: { portMappings: true } },
  ],
};

/** What ptp + host-local answer for a 0.3.1 network, portmap passes on: ips[] carry "version". */
const prev031 = {
  cniVersion: '0.3.1',
  interfaces: [
    { name: 'veth6a1b2c3d', mac: '2a:9e:11:22:33:44' },
    { name: 'eth0', mac: '6e:01:02:03:04:05', sandbox: '/var/run/netns/cni-8f4c1d2e' },
  ],
  ips: [
    { version: '4', interface: 1, address: '10.244.1.5/24', gateway: '10.244.1.1' },
    { version: '6', interface: 1, address: 'FD00:10:244:1::5/64', gateway: 'fd00:10:244:1::1' },
  ],
  routes: [{ dst: '0.0.0.0/0' }, { dst: '::/0' }],
  dns: {},
};

/** cni-install.sh's chain of kindnet's conflist, made in a directory of its own. */
function chained(list: Obj): Obj {
  const d = mkdtempSync(join(dir, 'chain-'));
  mkdirSync(join(d, 'bin'));
  mkdirSync(join(d, 'net.d'));
  writeFileSync(join(d, 'launcher'), '#!/bin/sh\n');
  const file = join(d, 'net.d', '10-kindnet.conflist');
  writeFileSync(file, JSON.stringify(list, null, 2));
  const r = spawnSync('bash', [script, 'install'], {
    env: { ...process.env, CNI_BIN_DIR: join(d, 'bin'), CNI_CONF_DIR: join(d, 'net.d'), TENC_CNI_SRC: join(d, 'launcher'), CNI_WAIT: '0', TENC_CNI_ENTRY: JSON.stringify({ type: 'tenc', agentSocket: sock, timeoutMs: 500 }) },
    encoding: 'utf8',
  });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(readFileSync(file, 'utf8')) as Obj;
}

/** The configuration libcni gives the list's i-th plugin: the list's name and cniVersion, prevResult when there is one. */
function pluginConf(list: Obj, i: number, prevResult?: Obj): string {
  const p = (list.plugins as Obj[])[i];
  return JSON.stringify({ ...p, name: list.name, cniVersion: list.cniVersion, ...(prevResult ? { prevResult } : {}) });
}

describe('cniVersion 0.3.0 and 0.3.1 (kindnet, flannel, Calico): both plugins', () => {
  it('a kindnet chain (0.3.1): ADD passes the 0.3.1 prevResult on unchanged, DEL (no prevResult before 0.4.0) unregisters', async () => {
    const list = chained(kindnet);
    expect((list.plugins as Obj[]).map((p) => p.type)).toEqual(['ptp', 'portmap', 'tenc']);
    agent.answer = () => ({ ok: true, result: { protected: true } });
    const add = await both(env('ADD'), pluginConf(list, 2, prev031));
    expect(add.code, add.stdout).toBe(0);
    expect(JSON.parse(add.stdout)).toEqual(prev031);
    expect(add.requests).toEqual([
      { id: 1, op: 'cni-add', containerId: 'f00dcafe', netns: '/var/run/netns/cni-8f4c1d2e', ifname: 'eth0', podNamespace: 'alpha', podName: 'web-1', podUid: 'u-1', addresses: ['10.244.1.5', 'fd00:10:244:1::5'], timeoutMs: 500 },
    ]);
    // libcni sends a 0.3.x DEL without prevResult, and the netns may be gone
    const del = await both(env('DEL', { CNI_NETNS: '' }), pluginConf(list, 2));
    expect([del.code, del.stdout, del.requests]).toEqual([0, '', [{ id: 1, op: 'cni-del', containerId: 'f00dcafe' }]]);
    // 0.3.0 too (its results have the same ips[] as 0.3.1's, as libcni's plugins write them)
    const v030 = { ...list, cniVersion: '0.3.0' };
    const add030 = await both(env('ADD'), pluginConf(v030, 2, { ...prev031, cniVersion: '0.3.0' }));
    expect(add030.code, add030.stdout).toBe(0);
    expect(add030.requests[0]).toMatchObject({ op: 'cni-add', addresses: ['10.244.1.5', 'fd00:10:244:1::5'] });
    expect((await both(env('DEL'), pluginConf(v030, 2))).code).toBe(0);
  });

  it('VERSION lists 0.3.0 and 0.3.1 and answers in the request\'s cniVersion', async () => {
    for (const v of ['0.3.0', '0.3.1']) {
      const r = await both(env('VERSION'), JSON.stringify({ cniVersion: v }));
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual({ cniVersion: v, supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
      expect(r.requests).toEqual([]);
    }
  });

  it('CHECK (0.4.0 and later) and GC (1.1.0) of a 0.3.x configuration: code 1, as pkg/skel, the agent not asked', async () => {
    const list = chained(kindnet);
    for (const v of ['0.3.0', '0.3.1']) {
      const check = await both(env('CHECK'), pluginConf({ ...list, cniVersion: v }, 2, { ...prev031, cniVersion: v }));
      expect(check.code).toBe(1);
      expect(JSON.parse(check.stdout)).toEqual({ cniVersion: v, code: 1, msg: `cniVersion: ${v} does not allow CHECK`, details: 'CHECK needs cniVersion 0.4.0 or later' });
      expect(check.requests).toEqual([]);
    }
    const gc = await both({ CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' }, pluginConf(list, 2));
    expect(JSON.parse(gc.stdout)).toEqual({ cniVersion: '0.3.1', code: 1, msg: 'cniVersion: 0.3.1 does not allow GC', details: 'GC needs cniVersion 1.1.0 or later' });
    // a 0.4.0 CHECK still reaches the agent
    agent.answer = () => ({ ok: true, result: {} });
    const c040 = await both(env('CHECK'), pluginConf({ ...list, cniVersion: '0.4.0' }, 2, { ...prev031, cniVersion: '0.4.0' }));
    expect([c040.code, c040.requests[0]?.op]).toEqual([0, 'cni-check']);
  });

  it('errors of a 0.3.1 request carry cniVersion 0.3.1', async () => {
    const list = chained(kindnet);
    agent.answer = () => ({ ok: false, error: { code: 'EINVAL', message: 'netns: "/var/run/netns/cni-8f4c1d2e" does not exist' } });
    const inval = await both(env('ADD'), pluginConf(list, 2, prev031));
    expect(JSON.parse(inval.stdout)).toMatchObject({ cniVersion: '0.3.1', code: 7 });
    const gone = await both(env('ADD'), JSON.stringify({ ...JSON.parse(pluginConf(list, 2, prev031)), agentSocket: join(dir, 'nobody.sock') }));
    expect(JSON.parse(gone.stdout)).toMatchObject({ cniVersion: '0.3.1', code: 11 });
    const noPrev = await both(env('ADD'), pluginConf(list, 2));
    expect(JSON.parse(noPrev.stdout)).toMatchObject({ cniVersion: '0.3.1', code: 7, msg: expect.stringMatching(/^prevResult: missing/) });
    // regression: an error of the skeleton's own checks (CNI_*), after the version's, too
    // (`tenc cni` printed those as 1.0.0, the C plugin in the request's version)
    for (const v of ['0.3.1', '0.4.0']) {
      const bad = await both(env('ADD', { CNI_CONTAINERID: '-bad id' }), pluginConf({ ...list, cniVersion: v }, 2, prev031));
      expect(JSON.parse(bad.stdout)).toMatchObject({ cniVersion: v, code: 4 });
    }
  });

  it('0.1.0 and 0.2.0 (no chained plugins, ip4/ip6 results) are refused with code 1 naming the version and why', async () => {
    agent.answer = () => ({ ok: true, result: { protected: true } });
    for (const v of ['0.1.0', '0.2.0']) {
      const r = await both(env('ADD'), JSON.stringify({ cniVersion: v, name: 'old', type: 'tenc', agentSocket: sock, prevResult: { cniVersion: v, ip4: { ip: '10.244.1.5/24' } } }));
      expect(r.code).toBe(1);
      expect(JSON.parse(r.stdout)).toEqual({
        cniVersion: '1.0.0',
        code: 1,
        msg: `cniVersion: ${v} is not supported`,
        details: 'supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0; 0.1.0 and 0.2.0 have no chained plugins (no prevResult) and results of another form (ip4, ip6)',
      });
      expect(r.requests).toEqual([]);
    }
    const future = await both(env('ADD'), JSON.stringify({ cniVersion: '1.2.0', name: 'n', type: 'tenc', agentSocket: sock, prevResult: prev031 }));
    expect(JSON.parse(future.stdout)).toMatchObject({ code: 1, msg: 'cniVersion: 1.2.0 is not supported', details: 'supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0' });
  });

  it('deploy/cni-install.sh, the C plugin and `tenc cni` know the same versions', async () => {
    const m = /^readonly PLUGIN_VERSIONS='([^']*)'$/m.exec(readFileSync(script, 'utf8'));
    expect(m?.[1].split(' ')).toEqual([...SUPPORTED_VERSIONS]);
    const c = await runC(env('VERSION'), '{"cniVersion":"1.0.0"}');
    expect(JSON.parse(c.stdout).supportedVersions).toEqual([...SUPPORTED_VERSIONS]);
  });
});

describe('deploy/cni-install.sh: no chain into a conflist of a cniVersion the plugin does not speak (and no stop of the agent)', () => {
  let d: string;
  let e: Record<string, string>;
  const file = () => join(d, 'net.d', '10-old.conflist');
  const status = () => readFileSync(join(d, 'status'), 'utf8');
  const run = (...args: string[]) => spawnSync('bash', [script, ...args], { env: { ...process.env, ...e }, encoding: 'utf8' });
  const list = (o: Obj) => JSON.stringify({ name: 'old', plugins: [{ type: 'bridge', bridge: 'cni0', ipam: { type: 'host-local', subnet: '10.22.0.0/16' } }], ...o }, null, 2);

  beforeEach(() => {
    d = mkdtempSync(join(dir, 'install-'));
    mkdirSync(join(d, 'bin'));
    mkdirSync(join(d, 'net.d'));
    writeFileSync(join(d, 'launcher'), '#!/bin/sh\n');
    e = { CNI_BIN_DIR: join(d, 'bin'), CNI_CONF_DIR: join(d, 'net.d'), TENC_CNI_SRC: join(d, 'launcher'), CNI_WAIT: '0', TENC_CNI_STATUS: join(d, 'status') };
  });
  afterEach(() => rmSync(d, { recursive: true, force: true }));

  /**
   * install refuses naming the file and `said`, and exits 0 (install-cni is the
   * DaemonSet's init container: a failure would keep the agent from running on the
   * node); the file keeps its bytes and mode; the status file says not ready, why.
   */
  function refused(text: string, said: string): string {
    writeFileSync(file(), text, { mode: 0o640 });
    const before = statSync(file());
    const r = run('install');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain(`tenc cni-install: ${file()}: ${said}`);
    expect(r.stderr).toContain('not chaining tenc into it, the plugin would fail every pod ADD on the node (supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0)');
    expect(r.stderr).toContain(`tenc cni-install: ${file()}: tenc NOT chained: pods that start on this node run without tenc`);
    expect(status()).toBe(`not ready: tenc not chained: ${file()}: ${r.stderr.split(`tenc cni-install: ${file()}: `)[1].split('\n')[0]}\n`);
    expect(status()).toMatch(new RegExp(`^not ready: tenc not chained: ${file().replace(/[.]/g, '\\.')}: ${said.replace(/[.()"]/g, '\\$&')}`));
    expect(readFileSync(file(), 'utf8')).toBe(text);
    const after = statSync(file());
    expect([after.ino, after.mode & 0o777, after.mtimeMs]).toEqual([before.ino, 0o640, before.mtimeMs]);
    return r.stderr;
  }

  it('a 0.2.0 conflist: refused, named, untouched', () => {
    refused(list({ cniVersion: '0.2.0' }), 'cniVersion "0.2.0" is not supported by the tenc plugin');
  });

  it('no cniVersion, a number, a cniVersions the plugin does not all speak: refused alike', () => {
    refused(list({}), 'cniVersion: missing');
    refused(list({ cniVersion: 1 }), 'cniVersion 1 is not supported by the tenc plugin');
    refused(list({ cniVersion: '1.0.0', cniVersions: ['1.0.0', '1.2.0'] }), 'cniVersions: "1.2.0" not supported by the tenc plugin');
  });

  it('a tenc entry already in such a conflist is named (it fails every pod now); uninstall still removes it', () => {
    const text = list({ cniVersion: '0.2.0', plugins: [{ type: 'bridge' }, { type: 'tenc' }] });
    const said = refused(text, 'cniVersion "0.2.0" is not supported by the tenc plugin');
    expect(said).toContain('it already holds a tenc entry, which fails them now: remove that entry');
    const u = run('uninstall');
    expect(u.status, u.stderr).toBe(0);
    expect(JSON.parse(readFileSync(file(), 'utf8')).plugins).toEqual([{ type: 'bridge' }]);
  });

  it('the versions the plugin speaks are chained as before, the status file saying so', () => {
    for (const v of ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']) {
      writeFileSync(file(), list({ cniVersion: v }));
      const r = run('install');
      expect(r.status, `${v}: ${r.stderr}`).toBe(0);
      expect(JSON.parse(readFileSync(file(), 'utf8')).plugins.map((p: Obj) => p.type)).toEqual(['bridge', 'tenc']);
      expect(status()).toBe(`ready: chained into ${file()}\n`);
    }
    writeFileSync(file(), list({ cniVersion: '1.0.0', cniVersions: ['0.3.1', '1.0.0', '1.1.0'] }));
    expect(run('install').status).toBe(0);
  });

  it('other failures keep exit 1 (a broken JSON file): not ready, why', () => {
    writeFileSync(file(), '{"plugins": [');
    const r = run('install');
    expect([r.status, r.stderr]).toEqual([1, expect.stringContaining(`${file()}: not JSON`)]);
    expect(status()).toMatch(new RegExp(`^not ready: tenc not chained: ${file().replace(/[.]/g, '\\.')}: not JSON`));
    rmSync(file());
    const none = run('install');
    expect([none.status, status()]).toEqual([1, `not ready: no CNI config in ${join(d, 'net.d')} after 0s (is the cluster's network plugin installed?)\n`]);
  });

  it('keep, started on such a conflist: keeps running, not ready; chains once the conflist is rewritten in a version the plugin speaks', async () => {
    const text = list({ cniVersion: '0.2.0' });
    writeFileSync(file(), text);
    const types = () => {
      try {
        return (JSON.parse(readFileSync(file(), 'utf8')).plugins as Obj[]).map((p) => p.type);
      } catch {
        return null;
      }
    };
    const kept = await whileKeeping(e, async (k) => {
      await expect.poll(() => k.err(), { timeout: 10_000 }).toContain('tenc NOT chained');
      await new Promise((r) => setTimeout(r, 500)); // a few looks
      expect(k.exitCode()).toBe(null);
      expect(readFileSync(file(), 'utf8')).toBe(text);
      expect(status()).toMatch(/^not ready: tenc not chained: .*cniVersion "0\.2\.0" is not supported/);
      // the network plugin's config upgraded to one the plugin speaks: chained, ready
      writeFileSync(file(), list({ cniVersion: '0.3.1' }));
      await expect.poll(types, { timeout: 10_000 }).toEqual(['bridge', 'tenc']);
      await expect.poll(status, { timeout: 10_000 }).toBe(`ready: chained into ${file()}\n`);
      // and back to one it does not: refused again, said, not ready (the entry stays: uninstall removes it)
      writeFileSync(file(), list({ cniVersion: '1.2.0' }));
      await expect.poll(status, { timeout: 10_000 }).toMatch(/^not ready: tenc not chained: .*cniVersion "1\.2\.0" is not supported/);
      expect(k.err()).toContain('cannot chain the tenc entry now: tried again when it changes');
      expect(k.exitCode()).toBe(null);
    });
    expect(kept.code).toBe(0);
  });
});
