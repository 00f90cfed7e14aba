/**
 * The `tenc` CLI: in-process through runCli (fake stdio) for every command and
 * error path, then the built executable (node dist/src/cli/main.js) for the
 * shebang, exit codes and stdin handling.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runCli, resolveSocket, type CliIo } from '../../src/cli/cli.js';
import { statSync, mkdirSync } from 'node:fs';
import { COMMAND_HELP, USAGE } from '../../src/cli/help.js';
import { ControlServer, type ControlHandler } from '../../src/control/socket.js';
import type { PeerConfig } from '../../src/control/config.js';
import { formatStatus, formatAgo, formatBytes, type StatusReport } from '../../src/control/status.js';
import { ensureBuilt } from '../build.js';
import { until } from '../until.js';

// RFC 7748 §6.1: Alice's private key and the public key X25519 derives from it.
const ALICE_PRIV = Buffer.from('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', 'hex').toString('base64');
const ALICE_PUB = Buffer.from('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a', 'hex').toString('base64');
// RFC 7748 §6.1: Bob's public key
const BOB_PUB = Buffer.from('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f', 'hex').toString('base64');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(args: string[], stdin = ''): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    stdout: (t) => void (stdout += t),
    stderr: (t) => void (stderr += t),
    readStdin: async () => stdin,
  };
  const code = await runCli(args, io);
  return { code, stdout, stderr };
}

let dir: string;
let psk: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tenc-cli-'));
  psk = join(dir, 'psk');
  writeFileSync(psk, Buffer.alloc(32, 9).toString('base64') + '\n', { mode: 0o600 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('help', () => {
  it('tenc --help lists every command with exit codes, on stdout, exit 0', async () => {
    const r = await cli(['--help']);
    expect(r.code).toBe(0);
    for (const c of ['pod', 'status', 'set-peer', 'remove-peer', 'check-config', 'genkey', 'pubkey', 'genpsk']) {
      expect(r.stdout).toMatch(new RegExp(`^  ${c} `, 'm'));
    }
    // every command the overview lists has a help of its own (`tenc help <command>`, `<command> --help`)
    const listed = [...r.stdout.split('\nCommands:\n')[1]!.split('\n\n')[0]!.matchAll(/^ {2}(\S+) /gm)].map((m) => m[1]!);
    expect(listed).toContain('cni');
    for (const c of listed) expect(COMMAND_HELP[c], c).toBeDefined();
    expect(r.stdout).toContain('Exit codes:');
    expect(r.stderr).toBe('');
  });

  it.each(Object.keys(COMMAND_HELP))('tenc %s --help has synopsis, options, example and exit codes', async (cmd) => {
    const r = await cli([cmd, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout.startsWith(`Usage: tenc ${cmd}`)).toBe(true);
    expect(r.stdout).toMatch(/\nOptions:\n( {2}.*\n)*? {2}-h, --help /);
    expect(r.stdout).toMatch(/\nExample:\n {2}\S/);
    expect(r.stdout).toContain('Exit codes:');
    expect(await cli(['help', cmd])).toEqual(r);
  });

  it.each([
    [['agent', 'status'], 'Usage: tenc agent status'],
    [['k8s', 'create-psk'], 'Usage: tenc k8s create-psk'],
  ])("tenc help %j: a subcommand's help, named in two words", async (words, usage) => {
    const r = await cli(['help', ...words]);
    expect(r.code).toBe(0);
    expect(r.stdout.startsWith(usage)).toBe(true);
    expect(r).toEqual(await cli([...words, '--help']));
  });

  it.each([
    [[], 'no command given', 'Usage: tenc <command>'],
    [['frobnicate'], 'unknown command "frobnicate"', 'Usage: tenc <command>'],
    [['status', '--verbose'], "Unknown option '--verbose'", 'Usage: tenc status'],
    [['genkey', 'extra'], 'unexpected argument "extra"', 'Usage: tenc genkey'],
    [['check-config'], 'missing argument', 'Usage: tenc check-config'],
    [['pod'], '--config FILE (or --standby, or --host) is required', 'Usage: tenc pod'],
    [['pod', '--standby', '--config', 'x.json'], '--standby takes no --config', 'Usage: tenc pod'],
    [['pod', '--config', 'x.json', '--log-level', 'loud'], '--log-level: "loud" is not one of', 'Usage: tenc pod'],
    [['set-peer', BOB_PUB, '--persistent-keepalive', 'often'], 'is not a number of seconds', 'Usage: tenc set-peer'],
    [['help', 'nope'], 'unknown command "nope"', 'Usage: tenc <command>'],
    [['help', 'agent', 'nope'], 'unknown command "agent nope"', 'Usage: tenc <command>'],
    [['help', 'agent', 'status', 'more'], 'unexpected argument "more"', 'Usage: tenc help'],
    [['cni', 'extra'], 'unexpected argument "extra"', 'Usage: tenc cni'],
    [['help', 'constructor'], 'unknown command "constructor"', 'Usage: tenc <command>'],
    [['toString'], 'unknown command "toString"', 'Usage: tenc <command>'],
    [['agent', 'status', '--node', 'n1', '--run-dir', '/tmp/x'], '--node and --run-dir name the same thing', 'Usage: tenc agent status'],
    [['agent', '--registry', '/nonexistent', '--node', 'n1', '--run-dir', ''], '--run-dir: "" is not an absolute path', 'Usage: tenc agent'],
    // a malformed --registry SPEC is a usage error (it was exit 1); a missing directory stays exit 1 (below)
    [['agent', '--registry', 'bogus:x', '--node', 'n1'], '--registry: unknown backend "bogus" (known: dir, etcd, kubernetes)', 'Usage: tenc agent'],
    [['agent', '--registry', 'dir:', '--node', 'n1'], '--registry: dir: needs a directory', 'Usage: tenc agent'],
    [['agent', '--registry', 'etcd:https://h:2379?colour=red', '--node', 'n1'], '--registry: etcd: unknown option "colour"', 'Usage: tenc agent'],
    [['agent', '--registry', 'etcd:https://h:2379?ttl=1', '--node', 'n1'], '--registry: etcd: ttl "1" must be 2..600 seconds', 'Usage: tenc agent'],
    [['agent', '--registry', 'etcd:h:2379', '--node', 'n1'], '--registry: etcd: endpoint "h:2379"', 'Usage: tenc agent'],
    [['agent', '--registry', '/nonexistent', '--node', 'n1', '--run-dir', 'run/n1'], '--run-dir: "run/n1" is not an absolute path', 'Usage: tenc agent'],
  ])('tenc %j: message and usage on stderr, exit 2', async (args, message, usage) => {
    const r = await cli(args as string[]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(message);
    expect(r.stderr).toContain(usage);
  });
});

describe('agent --node: a node name as Kubernetes allows it (DNS-1123 subdomain)', () => {
  /** 253 characters, the most a node's name may have: four parts between dots. */
  const LONG = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`;

  it.each([
    ['capitals', 'A'],
    ['an empty part', 'a..b'],
    ['a leading "-"', '-a'],
    ['a "/"', 'a/b'],
    ['254 characters', `${LONG}x`],
    ['254 characters, no dots', 'a'.repeat(254)],
  ])('refuses %s with a usage error naming --node, exit 2', async (_what, node) => {
    for (const args of [['agent', '--registry', join(dir, 'none'), `--node=${node}`], ['agent', 'status', `--node=${node}`]]) {
      const r = await cli(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/^tenc: --node: ".+ is not a node name/);
      expect(r.stderr).toContain(`Usage: tenc ${args[1] === 'status' ? 'agent status' : 'agent'}`);
    }
  });

  it("the default run dir: /run/tenc/agent-NODE, a name too long for a directory entry cut and ended by its hash", async () => {
    const { agentRunDir } = await import('../../src/metrics/gather.js');
    expect(agentRunDir('ip-10-0-1-2.ec2.internal')).toBe('/run/tenc/agent-ip-10-0-1-2.ec2.internal');
    expect(agentRunDir('a'.repeat(249), dir)).toBe(join(dir, `agent-${'a'.repeat(249)}`));
    const long = agentRunDir(LONG, dir);
    const other = agentRunDir(`${LONG.slice(0, -1)}e`, dir);
    for (const d of [long, other]) {
      expect(d.slice(dir.length + 1).length).toBeLessThanOrEqual(255);
      expect(d).toMatch(new RegExp(`/agent-${LONG.slice(0, 200)}.*-[0-9a-f]{16}$`));
      mkdirSync(d);
    }
    expect(long).not.toBe(other);
  });
});

describe('agent --classify-cidrs: the pods\' dns.classifyCidrs rules, checked before the agent starts', () => {
  // the agent writes the list into every pod's config: a range the config refuses made every pod's start fail
  it.each([
    ['an IPv4 range wider than /4', '10.96.0.0/12,0.0.0.0/2', '--classify-cidrs: 0.0.0.0/2 is too wide'],
    ['an IPv6 range wider than /8', 'fd00::/8,f000::/4', '--classify-cidrs: f000::/4 is too wide'],
    ['65 ranges', Array.from({ length: 65 }, (_, i) => `10.${i}.0.0/16`).join(','), '--classify-cidrs: 65 ranges: at most 64'],
    ['host bits', '10.96.0.1/12', '--classify-cidrs: "10.96.0.1/12" has host bits set'],
  ])('refuses %s: a usage error naming --classify-cidrs, exit 2', async (_what, list, message) => {
    const r = await cli(['agent', '--registry', join(dir, 'none'), '--node', 'n1', '--classify-cidrs', list]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
    expect(r.stderr).toContain('Usage: tenc agent');
  });

  it('takes the widest ranges a pod takes, and 64 (duplicates counted once): the run goes on to the registry', async () => {
    const list = ['16.0.0.0/4', 'fd00::/8', ...Array.from({ length: 62 }, (_, i) => `10.${i}.0.0/16`), '10.0.0.0/16'].join(',');
    const r = await cli(['agent', '--registry', join(dir, 'none'), '--node', 'n1', '--classify-cidrs', list]);
    expect(r.stderr).not.toContain('Usage:');
    expect(r.code).toBe(1); // no registry directory
  });
});

describe('agent --cluster-dns / --cluster-domain: checked before the agent starts', () => {
  it.each([
    ['a range', ['--cluster-dns', '10.96.0.0/16'], '--cluster-dns: "10.96.0.0/16" is an address'],
    ['a name', ['--cluster-dns', 'kube-dns'], '--cluster-dns: "kube-dns" is not an IPv4/IPv6 address'],
    ['four addresses', ['--cluster-dns', '10.96.0.10,10.96.0.11,10.96.0.12,10.96.0.13'], '--cluster-dns: 4 addresses: at most 3'],
    ['a domain with an underscore', ['--cluster-domain', 'my_cluster.local'], '--cluster-domain: "my_cluster.local" is not a domain name'],
  ])('refuses %s: a usage error naming the option, exit 2', async (_what, opts, message) => {
    const r = await cli(['agent', '--registry', join(dir, 'none'), '--node', 'n1', ...opts]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
  });

  it('takes 3 addresses of both families and a domain with a trailing dot: the run goes on to the registry', async () => {
    const r = await cli(['agent', '--registry', join(dir, 'none'), '--node', 'n1', '--cluster-dns', '10.96.0.10,fd00:96::a,10.96.0.10,172.30.0.10', '--cluster-domain', 'Cluster.Local.']);
    expect(r.stderr).not.toContain('Usage:');
    expect(r.code).toBe(1); // no registry directory
  });
});

describe('keys', () => {
  it('pubkey of the RFC 7748 §6.1 private key is the RFC public key', async () => {
    const r = await cli(['pubkey'], ALICE_PRIV + '\n');
    expect(r).toEqual({ code: 0, stdout: ALICE_PUB + '\n', stderr: '' });
  });

  it('genkey prints a clamped key whose pubkey round-trips; genpsk prints 32 random bytes', async () => {
    const k = await cli(['genkey']);
    expect(k.stdout).toMatch(/^[A-Za-z0-9+/]{43}=\n$/);
    const bytes = Buffer.from(k.stdout, 'base64');
    expect(bytes[0] & 7).toBe(0);
    expect(bytes[31] & 0xc0).toBe(0x40);
    expect((await cli(['pubkey'], k.stdout)).stdout).toMatch(/^[A-Za-z0-9+/]{43}=\n$/);
    const p1 = (await cli(['genpsk'])).stdout;
    const p2 = (await cli(['genpsk'])).stdout;
    expect(Buffer.from(p1, 'base64')).toHaveLength(32);
    expect(p1).not.toBe(p2);
  });

  it.each([['', 'must be 44 base64 characters'], ['not-a-key', 'must be 44'], [ALICE_PRIV.slice(0, 43) + '!', "end with exactly one '='"]])(
    'pubkey rejects %j with exit 1',
    async (input, fragment) => {
      const r = await cli(['pubkey'], input);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toContain('private key: ');
      expect(r.stderr).toContain(fragment);
    },
  );
});

describe('check-config', () => {
  it('ok file: "FILE: ok", exit 0', async () => {
    const f = join(dir, 'ok.json');
    writeFileSync(f, JSON.stringify({ addresses: ['10.77.0.1'], pskFile: psk }));
    expect(await cli(['check-config', f])).toEqual({ code: 0, stdout: `${f}: ok\n`, stderr: '' });
  });

  it('bad file: FILE: field: problem lines, exit 2', async () => {
    const f = join(dir, 'pod-a.json');
    writeFileSync(
      f,
      JSON.stringify({ addresses: ['10.77.0.1'], pskFile: psk, peers: [{ publicKey: BOB_PUB }, { publicKey: ALICE_PUB, endpoint: '10.0.0.300:51820' }] }),
    );
    const r = await cli(['check-config', f]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`${f}: peers[1].endpoint: "10.0.0.300:51820" is not an IPv4/IPv6 address\n`);
  });

  it('pod with an invalid config: exit 2 before anything is installed', async () => {
    const f = join(dir, 'bad-pod.json');
    writeFileSync(f, JSON.stringify({ addresses: ['10.77.0.1'], pskFile: join(dir, 'missing-psk') }));
    const r = await cli(['pod', '--config', f]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${f}: pskFile: psk file ${join(dir, 'missing-psk')}: cannot read (ENOENT)`);
    expect(r.stdout).toBe(''); // no public-key line: the pod never started
  });
});

describe('status, set-peer, remove-peer over the control socket', () => {
  const peers = new Map<string, PeerConfig>();
  const report = (): StatusReport => ({
    interface: 'tenc0',
    publicKey: ALICE_PUB,
    listenPort: 51820,
    fwmark: 0xcb84,
    mtu: 1420,
    addresses: ['10.77.0.1'],
    dataPlane: 'fake',
    peers: [...peers.values()].map((p) => ({
      publicKey: p.publicKey,
      endpoint: p.endpoint ? `${p.endpoint.address}:${p.endpoint.port}` : null,
      allowedIps: p.allowedIps,
      latestHandshake: Date.now() - 65_000,
      rxBytes: 1536,
      txBytes: 100,
      persistentKeepalive: p.persistentKeepalive,
      drops: { replay: 2 },
    })),
    services: [],
    drops: { replay: 2, no_route: 1 },
    handshakeFailures: { decrypt_response: 3 },
  });
  const handler: ControlHandler = {
    status: report,
    setPeer: (p) => void peers.set(p.publicKey, { endpoint: null, allowedIps: [], persistentKeepalive: 0, ...p }),
    removePeer: (k) => peers.delete(k),
    setServices: () => {},
  };
  let server: ControlServer;
  let sock: string;

  beforeAll(async () => {
    sock = join(dir, 'sock', 'tenc0-1.sock');
    server = await ControlServer.start({ path: sock, handler, addresses: { v4: '10.77.0.1', v6: null } });
  });
  afterAll(() => server.close());

  it('set-peer, then status shows the peer like wg show; remove-peer removes it', async () => {
    const set = await cli(['set-peer', BOB_PUB, '--endpoint', '10.77.0.2:51820', '--allowed-ips', '10.77.0.2/32, 10.96.0.10', '-k', '25', '--socket', sock]);
    expect(set).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(peers.get(BOB_PUB)?.allowedIps).toEqual(['10.77.0.2/32', '10.96.0.10/32']);

    const st = await cli(['status', '--socket', sock]);
    expect(st.code).toBe(0);
    expect(st.stdout).toContain(`interface: tenc0\n  public key: ${ALICE_PUB}\n  listening port: 51820\n`);
    expect(st.stdout).toContain(`peer: ${BOB_PUB}\n  endpoint: 10.77.0.2:51820\n  allowed ips: 10.77.0.2/32, 10.96.0.10/32\n`);
    expect(st.stdout).toContain('  latest handshake: 1 minute, 5 seconds ago\n');
    expect(st.stdout).toContain('  transfer: 1.50 KiB received, 100 B sent\n');
    expect(st.stdout).toContain('  persistent keepalive: every 25 seconds\n');
    expect(st.stdout).toContain('  drops: replay 2, no_route 1\n  handshake failures: decrypt_response 3\n');

    const js = await cli(['status', '--json', '-s', sock]);
    expect(JSON.parse(js.stdout).peers[0].publicKey).toBe(BOB_PUB);

    expect((await cli(['remove-peer', BOB_PUB, '--socket', sock])).code).toBe(0);
    expect(peers.size).toBe(0);
  });

  it('remove-peer of an unknown key: exit 1; a bad key: exit 2', async () => {
    const r = await cli(['remove-peer', BOB_PUB, '--socket', sock]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('no such peer');
    const b = await cli(['remove-peer', 'xyz', '--socket', sock]);
    expect(b.code).toBe(2);
    expect(b.stderr).toContain('publicKey: is not a base64 32-byte key');
  });

  it('set-peer with a bad endpoint: the pod says why, exit 2', async () => {
    const r = await cli(['set-peer', BOB_PUB, '--endpoint', '10.0.0.300:1', '--socket', sock]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('peer.endpoint: "10.0.0.300:1" is not an IPv4/IPv6 address');
  });

  it('status without a pod: exit 1 with a hint', async () => {
    const r = await cli(['status', '--socket', join(dir, 'nobody.sock')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('no tenc pod listening at');
  });
});

describe('finding the pod socket', () => {
  it('--socket wins, --interface names it, else the only socket of this network namespace', () => {
    const ino = statSync('/proc/self/ns/net').ino;
    const d = join(dir, 'find');
    mkdirSync(d, { recursive: true });
    expect(resolveSocket({ socket: '/x.sock' }, d)).toBe('/x.sock');
    expect(resolveSocket({ interface: 'wg7' }, d)).toBe(join(d, `wg7-${ino}.sock`));
    expect(resolveSocket({}, d)).toBe(join(d, `tenc0-${ino}.sock`)); // none: the default name
    writeFileSync(join(d, `pod9-${ino}.sock`), '');
    writeFileSync(join(d, `other-${ino + 1}.sock`), ''); // another namespace's pod
    expect(resolveSocket({}, d)).toBe(join(d, `pod9-${ino}.sock`));
    writeFileSync(join(d, `pod8-${ino}.sock`), '');
    expect(() => resolveSocket({}, d)).toThrow(/several tenc pods in this network namespace.*pass --interface or --socket/);
  });
});

describe('status formatting', () => {
  it.each([
    [0, 'Now'],
    [1000, '1 second ago'],
    [3_723_000, '1 hour, 2 minutes, 3 seconds ago'],
    [2 * 86400_000, '2 days ago'],
  ])('formatAgo(%i ms) = %s', (ms, s) => {
    expect(formatAgo(1_000_000_000 - ms, 1_000_000_000)).toBe(s);
  });

  it.each([
    [0, '0 B'],
    [1023, '1023 B'],
    [1024, '1.00 KiB'],
    [5 * 1024 ** 3, '5.00 GiB'],
  ])('formatBytes(%i) = %s', (n, s) => {
    expect(formatBytes(n)).toBe(s);
  });

  it('omits what a peer does not have yet', () => {
    const text = formatStatus({
      interface: 'tenc0',
      publicKey: ALICE_PUB,
      listenPort: 1,
      fwmark: 1,
      mtu: 1420,
      addresses: [],
      dataPlane: 'x',
      peers: [{ publicKey: BOB_PUB, endpoint: null, allowedIps: [], latestHandshake: null, rxBytes: 0, txBytes: 0, persistentKeepalive: 0, drops: {} }],
      services: [],
      drops: {},
      handshakeFailures: {},
    });
    expect(text).toContain(`peer: ${BOB_PUB}\n  allowed ips: (none)\n`);
    expect(text).not.toMatch(/endpoint|latest handshake|transfer|keepalive|drops/);
  });
});

describe('the built executable (node dist/src/cli/main.js)', () => {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  const main = join(root, 'dist', 'src', 'cli', 'main.js');

  beforeAll(() => {
    ensureBuilt();
  }, 120_000);

  it('starts with a node shebang', () => {
    expect(readFileSync(main, 'utf8').split('\n')[0]).toBe('#!/usr/bin/env node');
  });

  it('pubkey reads stdin: the RFC 7748 §6.1 vector', () => {
    expect(execFileSync('node', [main, 'pubkey'], { input: ALICE_PRIV + '\n', encoding: 'utf8' })).toBe(ALICE_PUB + '\n');
  });

  it('genkey | pubkey pipeline', () => {
    const k = execFileSync('node', [main, 'genkey'], { encoding: 'utf8' });
    expect(execFileSync('node', [main, 'pubkey'], { input: k, encoding: 'utf8' })).toMatch(/^[A-Za-z0-9+/]{43}=\n$/);
  });

  it('unknown command: exit 2, usage on stderr; --help exit 0', () => {
    const r = spawnSync('node', [main, 'frobnicate'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('Usage: tenc <command>');
    expect(r.stdout).toBe('');
    const h = spawnSync('node', [main, 'pod', '--help'], { encoding: 'utf8' });
    expect(h.status).toBe(0);
    expect(h.stdout).toContain('Usage: tenc pod --config FILE');
    // `tenc cni` alone is the plugin; with --help it is the help, not a plugin run
    const c = spawnSync('node', [main, 'cni', '--help'], { encoding: 'utf8', env: { ...process.env, CNI_COMMAND: 'ADD' } });
    expect(c.status).toBe(0);
    expect(c.stdout).toContain('Usage: tenc cni');
    const v = spawnSync('node', [main, 'cni'], { encoding: 'utf8', input: '', env: { ...process.env, CNI_COMMAND: 'VERSION' } });
    expect(v.status).toBe(0);
    expect(JSON.parse(v.stdout).supportedVersions).toContain('1.0.0');
  });

  it.each([
    ['EKS', 'ip-10-0-1-2.ec2.internal'],
    ['253 characters', `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`],
  ])('agent --node: a node named as on %s is taken (the run goes on to the registry)', (_what, node) => {
    const none = join(dir, 'no-registry');
    const r = spawnSync('node', [main, 'agent', '--registry', none, '--node', node], { encoding: 'utf8' });
    expect(r.stderr).not.toContain('Usage:');
    expect(r.stderr).toContain(`registry directory ${none} does not exist`);
    expect(r.status).toBe(1);
  });

  it('agent --registry: a spec with credentials in a URL is refused without showing them (exit 2); a spec in a message or log line has them masked', async () => {
    for (const spec of ['etcd:https://:s3cret@h:2379', 'etcd:https://u:s3cret@h:2379', 'etcd:https://g:2379,https://u:s3,cret@h:2379', 'etcd:https://u:s3cret@h:2379?ca=/c', 'etcd:https://h:2379?password=s3cret']) {
      // (a spec taken would run the agent: the timeout ends it)
      const r = spawnSync('node', [main, 'agent', '--registry', spec, '--node', 'n1', '--socket', join(dir, 'cred.sock'), '--run-dir', join(dir, 'cred-run')], { encoding: 'utf8', timeout: 15_000 });
      expect(r.status, spec).toBe(2);
      expect(r.stderr, spec).toMatch(/^tenc: --registry: etcd: (an endpoint has a user or password in its URL \(not shown\): give the user as user=NAME and the password in a file, password-file=FILE|unknown option "password")/);
      expect(r.stderr, spec).not.toMatch(/s3/);
    }
    // a spec that is shown (here a directory's path that holds a URL with user info): masked in the
    // start's error message and in the "agent running" line
    const d = mkdtempSync(join(dir, 'cred-'));
    const reg = `dir:${d}/https://u:s3cret@h`;
    const missing = spawnSync('node', [main, 'agent', '--registry', reg, '--node', 'n1'], { encoding: 'utf8', timeout: 15_000 });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain(`tenc agent: --registry dir:${d}/https://***@h: registry directory`);
    expect(missing.stderr).not.toContain('s3cret');
    mkdirSync(`${d}/https://u:s3cret@h`, { recursive: true });
    const agent = spawn('node', [main, 'agent', '--registry', reg, '--node', 'n1', '--socket', join(d, 'agent.sock'), '--run-dir', join(d, 'run')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    agent.stderr!.on('data', (b) => (stderr += b));
    try {
      await until('the agent running', () => stderr.includes('agent running'), 10_000);
    } finally {
      agent.kill('SIGTERM');
      await new Promise((r) => agent.once('exit', r));
    }
    const line = JSON.parse(stderr.split('\n').find((l) => l.includes('agent running'))!);
    expect(line.registry).toBe(`dir:${d}/https://***@h`);
    expect(stderr).not.toContain('s3cret');
  });

  it("tenc --help's example makes a psk file the pod takes, under umask 022 too (a 0644 psk is refused)", () => {
    const example = USAGE.split('\nExample:\n')[1]!.split('\n')[0]!.trim();
    // up to check-config: the pod itself needs root and a network namespace
    const checked = example.replace(/ && tenc pod --config \S+$/, '');
    expect(checked).not.toBe(example);
    const d = mkdtempSync(join(dir, 'example-'));
    const bin = join(d, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'tenc'), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(main)} "$@"\n`, { mode: 0o755 });
    writeFileSync(join(d, 'pod-a.json'), JSON.stringify({ addresses: ['10.77.0.1'], pskFile: 'psk' }));
    const r = spawnSync('sh', ['-c', `umask 022; ${checked}`], { cwd: d, env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('pod-a.json: ok\n');
    expect(r.status).toBe(0);
    expect(statSync(join(d, 'psk')).mode & 0o777).toBe(0o600);
  });

  it('--version prints the package version', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
    expect(execFileSync('node', [main, '--version'], { encoding: 'utf8' })).toBe(`tenc ${pkg.version}\n`);
  });
});
