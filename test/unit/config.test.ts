/**
 * Config validation: a table of one bad value per field, each with the exact field
 * path and a fragment of the problem, plus defaults, canonical forms and the psk file.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, writeFileSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  loadConfig,
  validateConfig,
  ConfigError,
  readPskFile,
  validatePeer,
  validateServices,
  validateEndpoints,
  DEFAULT_FWMARK,
  DEFAULT_TABLE,
  DEFAULT_RULE_PRIORITY,
} from '../../src/control/config.js';
import { parseCidr, parseEndpoint } from '../../src/net/address.js';

const KEY_A = 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo='; // RFC 7748 §6.1 Alice's public key, base64
const KEY_B = '3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08='; // RFC 7748 §6.1 Bob's public key, base64
const PSK = Buffer.alloc(32, 7).toString('base64');

let dir: string;
let pskPath: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tenc-config-'));
  pskPath = join(dir, 'psk');
  writeFileSync(pskPath, PSK + '\n', { mode: 0o600 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function good(): Record<string, unknown> {
  return {
    interface: 'tenc0',
    addresses: ['10.77.0.1', 'fd00:77::1'],
    listenPort: 51820,
    pskFile: pskPath,
    peers: [
      { publicKey: KEY_A, endpoint: '10.77.0.2:51820', allowedIps: ['10.77.0.2/32', '10.96.0.10'] },
      { publicKey: KEY_B, endpoint: '[fd00:77::3]:51820', allowedIps: ['fd00:77::3/128'], persistentKeepalive: 25 },
    ],
    services: [{ vip: '10.96.0.20', ports: [{ protocol: 'tcp', port: 80 }] }],
    dataPlane: { inject: 'raw', tunOffload: false, udpGso: true, udpGro: false },
    logLevel: 'debug',
  };
}

/** Sets `path` (dotted, with [i]) in a fresh good config to `value` (undefined deletes). */
function withField(path: string, value: unknown): Record<string, unknown> {
  const cfg = good();
  const parts = path.replace(/\[(\d+)\]/g, '.$1').split('.');
  let obj: any = cfg;
  for (const p of parts.slice(0, -1)) obj = obj[p];
  const last = parts[parts.length - 1];
  if (value === undefined) delete obj[last];
  else obj[last] = value;
  return cfg;
}

function problemsOf(raw: unknown): string[] {
  try {
    validateConfig(raw, 'pod-a.json');
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message.split('\n');
  }
  return [];
}

describe('config: valid file', () => {
  it('accepts the good config and canonicalizes', () => {
    const cfg = validateConfig(good(), join(dir, 'pod-a.json'));
    expect(cfg.interface).toBe('tenc0');
    expect(cfg.addresses).toEqual({ v4: '10.77.0.1', v6: 'fd00:77::1' });
    expect(cfg.peers[0].endpoint).toEqual({ address: '10.77.0.2', port: 51820 });
    expect(cfg.peers[0].allowedIps).toEqual(['10.77.0.2/32', '10.96.0.10/32']);
    expect(cfg.peers[0].persistentKeepalive).toBe(0);
    expect(cfg.peers[1].endpoint).toEqual({ address: 'fd00:77::3', port: 51820 });
    expect(cfg.peers[1].persistentKeepalive).toBe(25);
    expect(cfg.services).toEqual([{ vip: '10.96.0.20', localAddress: '10.77.0.1', ports: [{ protocol: 'tcp', port: 80 }] }]);
    expect(cfg.dataPlane).toEqual({ inject: 'raw', tunOffload: false, udpGso: true, udpGro: false });
    expect(cfg.logLevel).toBe('debug');
  });

  it('fills defaults for optional fields', () => {
    const cfg = validateConfig({ addresses: ['10.77.0.1'], pskFile: pskPath }, 'x.json');
    expect(cfg.interface).toBe('tenc0');
    expect(cfg.listenPort).toBe(51820);
    expect(cfg.fwmark).toBe(DEFAULT_FWMARK);
    expect(cfg.table).toBe(DEFAULT_TABLE);
    expect(cfg.rulePriority).toBe(DEFAULT_RULE_PRIORITY);
    expect(cfg.peers).toEqual([]);
    expect(cfg.services).toEqual([]);
    expect(cfg.dataPlane).toEqual({ inject: 'tun', tunOffload: true, udpGso: true, udpGro: true });
    expect(cfg.logLevel).toBe('info');
    expect(cfg.controlSocket).toBeNull();
    expect(cfg.addresses.v6).toBeNull();
  });

  it('accepts fwmark as a hex string', () => {
    expect(validateConfig({ ...good(), fwmark: '0x1f' }, 'x.json').fwmark).toBe(31);
  });

  it('resolves a relative pskFile and controlSocket against the config file directory', () => {
    const cfgPath = join(dir, 'rel.json');
    writeFileSync(cfgPath, JSON.stringify({ addresses: ['10.77.0.1'], pskFile: 'psk', controlSocket: 'run/a.sock' }));
    const cfg = loadConfig(cfgPath);
    expect(cfg.pskFile).toBe(pskPath);
    expect(cfg.controlSocket).toBe(join(dir, 'run', 'a.sock'));
  });
});

// [field path, bad value (undefined = delete), expected field in message, fragment of the problem]
const BAD: [string, unknown, string, string][] = [
  ['interface', '', 'interface', '1..15 characters'],
  ['interface', 'a-very-long-interface', 'interface', '1..15 characters'],
  ['interface', 'ten c0', 'interface', 'not a valid interface name'],
  ['interface', 'a/b', 'interface', 'not a valid interface name'],
  // quoted in nft rule text, which has no escapes
  ['interface', 'a"b', 'interface', 'not a valid interface name'],
  ['interface', 'a\\b', 'interface', 'not a valid interface name'],
  ["interface", "a'b", 'interface', 'not a valid interface name'],
  ['interface', 7, 'interface', 'not a string'],
  ['addresses', undefined, 'addresses', 'is required'],
  ['addresses', [], 'addresses', 'one IPv4 and/or one IPv6'],
  ['addresses', '10.77.0.1', 'addresses', 'one IPv4 and/or one IPv6'],
  ['addresses', ['10.77.0.1', '10.77.0.2'], 'addresses[1]', 'at most one per family'],
  ['addresses', ['10.77.0.256'], 'addresses[0]', 'is not an IPv4/IPv6 address'],
  ['addresses', ['10.77.0.1/24'], 'addresses[0]', 'without a prefix length'],
  ['addresses', ['224.0.0.1'], 'addresses[0]', 'not a unicast address'],
  ['addresses', ['::'], 'addresses[0]', 'not a unicast address'],
  ['listenPort', 0, 'listenPort', 'out of range 1..65535'],
  ['listenPort', 65536, 'listenPort', 'out of range 1..65535'],
  ['listenPort', '51820', 'listenPort', 'not an integer'],
  ['listenPort', 1.5, 'listenPort', 'not an integer'],
  ['fwmark', 0, 'fwmark', 'out of range'],
  ['fwmark', '0xzz', 'fwmark', 'not an integer'],
  ['fwmark', 2 ** 32, 'fwmark', 'out of range'],
  ['table', 254, 'table', 'reserved table'],
  ['table', 0, 'table', 'out of range'],
  ['rulePriority', 0, 'rulePriority', 'out of range 2..32765'],
  // the exempt rules sit at rulePriority - 1: at 0 their residue removal took the kernel's `lookup local` rule
  ['rulePriority', 1, 'rulePriority', 'out of range 2..32765'],
  ['rulePriority', 32766, 'rulePriority', 'out of range 2..32765'],
  ['pskFile', undefined, 'pskFile', 'is required'],
  ['pskFile', 42, 'pskFile', 'not a file path'],
  ['pskFile', '/nonexistent/tenc/psk', 'pskFile', 'psk file /nonexistent/tenc/psk: cannot read (ENOENT)'],
  ['peers', {}, 'peers', 'must be an array'],
  ['peers[0]', 'x', 'peers[0]', 'must be an object'],
  ['peers[0].publicKey', undefined, 'peers[0].publicKey', 'is required'],
  ['peers[0].publicKey', 'abc', 'peers[0].publicKey', 'not a base64 32-byte key'],
  ['peers[0].publicKey', KEY_A.slice(0, 40), 'peers[0].publicKey', 'not a base64 32-byte key'],
  ['peers[0].publicKey', Buffer.alloc(32).toString('base64'), 'peers[0].publicKey', 'all-zero key'],
  ['peers[1].publicKey', KEY_A, 'peers[1].publicKey', 'same key as peers[0]'],
  ['peers[1].endpoint', '10.0.0.300:51820', 'peers[1].endpoint', '"10.0.0.300:51820" is not an IPv4/IPv6 address'],
  ['peers[1].endpoint', 'example.com:51820', 'peers[1].endpoint', 'is not an IPv4/IPv6 address'],
  ['peers[1].endpoint', '10.0.0.3', 'peers[1].endpoint', 'has no port'],
  ['peers[1].endpoint', '10.0.0.3:0', 'peers[1].endpoint', 'out of range'],
  ['peers[1].endpoint', '10.0.0.3:70000', 'peers[1].endpoint', 'out of range'],
  ['peers[1].endpoint', 'fd00::3:51820', 'peers[1].endpoint', 'in brackets'],
  ['peers[1].endpoint', '[10.0.0.3]:51820', 'peers[1].endpoint', 'is not an IPv4/IPv6 address'],
  ['peers[1].endpoint', 51820, 'peers[1].endpoint', 'not a string'],
  ['peers[0].allowedIps', '10.0.0.0/8', 'peers[0].allowedIps', 'must be an array'],
  ['peers[0].allowedIps', ['10.0.0.1/8'], 'peers[0].allowedIps[0]', 'host bits set (did you mean "10.0.0.0/8"?)'],
  ['peers[0].allowedIps', ['10.0.0.0/33'], 'peers[0].allowedIps[0]', 'prefix length must be 0..32'],
  ['peers[0].allowedIps', ['fd00::/129'], 'peers[0].allowedIps[0]', 'prefix length must be 0..128'],
  ['peers[0].allowedIps', ['10.0.0.x/8'], 'peers[0].allowedIps[0]', 'not an IPv4/IPv6 CIDR'],
  ['peers[0].allowedIps', ['10.0.0.0/8', '10.0.0.0/8'], 'peers[0].allowedIps[1]', 'listed twice'],
  ['peers[1].allowedIps', ['10.77.0.2/32'], 'peers[1].allowedIps[0]', 'also claimed by peers[0]'],
  ['peers[0].persistentKeepalive', -1, 'peers[0].persistentKeepalive', 'out of range 0..65535'],
  ['peers[0].persistentKeepalive', '25', 'peers[0].persistentKeepalive', 'not an integer'],
  ['peers[0].publicKye', KEY_B, 'peers[0].publicKye', 'unknown field'],
  ['services', {}, 'services', 'must be an array'],
  ['services[0]', 3, 'services[0]', 'must be an object'],
  ['services[0].vip', undefined, 'services[0].vip', 'is required'],
  ['services[0].vip', '10.96.0.0/16', 'services[0].vip', 'without a prefix length'],
  ['services[0].localAddress', 'fd00:77::1', 'services[0].localAddress', "not of the VIP's address family"],
  ['services[0].ports', undefined, 'services[0].ports', 'is required'],
  ['services[0].ports', [{ protocol: 'sctp', port: 80 }], 'services[0].ports[0].protocol', 'is not "tcp" or "udp"'],
  ['services[0].ports', [{ protocol: 'tcp', port: 0 }], 'services[0].ports[0].port', 'out of range'],
  ['services[0].ports', [{ protocol: 'tcp' }], 'services[0].ports[0].port', 'is required'],
  ['services[0].ports', [{ protocol: 'tcp', port: 80, proto: 'x' }], 'services[0].ports[0].proto', 'unknown field'],
  ['services[0].ports', [{ protocol: 'tcp', port: 80 }, { protocol: 'tcp', port: 80 }], 'services[0].ports[1]', 'listed twice'],
  ['services[0].viP', '10.96.0.21', 'services[0].viP', 'unknown field'],
  ['dataPlane', 'fast', 'dataPlane', 'must be an object'],
  ['dataPlane.inject', 'tap', 'dataPlane.inject', 'is not "raw" or "tun"'],
  ['dataPlane.tunOffload', 'yes', 'dataPlane.tunOffload', 'not true or false'],
  ['dataPlane.udpGso', 1, 'dataPlane.udpGso', 'not true or false'],
  ['dataPlane.udpGro', null, 'dataPlane.udpGro', 'not true or false'],
  ['dataPlane.gso', true, 'dataPlane.gso', 'unknown field'],
  ['logLevel', 'verbose', 'logLevel', 'is not one of fatal, error, warn, info, debug, trace, silent'],
  ['controlSocket', '', 'controlSocket', 'is not a path'],
  ['controlSocket', '/run/' + 'x'.repeat(120), 'controlSocket', 'longer than a unix socket path'],
  ['listenport', 51820, 'listenport', 'unknown field'],
];

describe('config: one bad field at a time', () => {
  it.each(BAD)('%s = %j -> %s: %s', (path, value, field, fragment) => {
    const lines = problemsOf(withField(path, value));
    const hit = lines.find((l) => l.startsWith(`pod-a.json: ${field}: `));
    expect(hit, `got: ${lines.join(' | ')}`).toBeDefined();
    expect(hit).toContain(fragment);
  });

  it('an IPv6 VIP without an IPv6 pod address is an error', () => {
    const cfg = good();
    cfg.addresses = ['10.77.0.1'];
    cfg.services = [{ vip: 'fd00:96::1', ports: [] }];
    expect(problemsOf(cfg)).toContain('pod-a.json: services[0].vip: the pod has no IPv6 address in "addresses" to serve fd00:96::1 on');
  });

  it('reports every problem, not just the first', () => {
    const cfg = good();
    cfg.listenPort = 0;
    cfg.logLevel = 'loud';
    expect(problemsOf(cfg)).toHaveLength(2);
  });

  it('rejects a non-object top level', () => {
    expect(problemsOf([])).toEqual(['pod-a.json: (top level): must be a JSON object']);
  });
});

describe('config: files', () => {
  it('names a missing config file', () => {
    expect(() => loadConfig(join(dir, 'nope.json'))).toThrow(/nope\.json: \(file\): cannot read: ENOENT/);
  });

  it('names the file on bad JSON', () => {
    const p = join(dir, 'bad.json');
    writeFileSync(p, '{"addresses": [');
    expect(() => loadConfig(p)).toThrow(/bad\.json: \(file\): not valid JSON/);
  });

  it.each([
    ['not base64', 'not a key!!', /is not a base64 32-byte key/],
    ['16 bytes', Buffer.alloc(16, 1).toString('base64'), /is not a base64 32-byte key/],
    ['empty', '', /is not a base64 32-byte key/],
  ])('psk file with %s is rejected, naming the file, not echoing it', (_name, content, re) => {
    const p = join(dir, 'psk-bad');
    writeFileSync(p, content, { mode: 0o600 });
    let msg = '';
    try {
      readPskFile(p);
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(re);
    expect(msg).toContain(p);
    if (content) expect(msg).not.toContain(content);
  });

  it('psk file that is a directory is rejected', () => {
    expect(() => readPskFile(dir)).toThrow(/cannot read \(not a regular file\)/);
  });

  it('psk file with mode 000: rejected for non-root, readable for root (CAP_DAC_OVERRIDE)', () => {
    const p = join(dir, 'psk-locked');
    writeFileSync(p, PSK);
    chmodSync(p, 0o000);
    if (process.getuid?.() === 0) {
      // root bypasses permission bits; the read succeeds and yields the key.
      expect(Buffer.from(readPskFile(p)).toString('base64')).toBe(PSK);
    } else {
      expect(() => readPskFile(p)).toThrow(/EACCES/);
    }
  });

  it.each(['0644', '0640', '0604', '0660', '0602'])('psk file with mode %s (group/others have access) is refused, naming the file and its mode', (text) => {
    const mode = parseInt(text, 8);
    const p = join(dir, `psk-${mode.toString(8)}`);
    writeFileSync(p, PSK + '\n');
    chmodSync(p, mode);
    let msg = '';
    try {
      readPskFile(p);
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toContain(`psk file ${p}: mode 0${mode.toString(8)} gives group or others access`);
    expect(msg).not.toContain(PSK);
    chmodSync(p, 0o400);
    expect(Buffer.from(readPskFile(p)).toString('base64')).toBe(PSK);
  });

  it('reads a good psk', () => {
    expect(Buffer.from(readPskFile(pskPath)).toString('base64')).toBe(PSK);
  });
});

describe('config: shared parsers', () => {
  it.each([
    ['10.0.0.1:1', { address: '10.0.0.1', port: 1 }],
    ['[fd00::0001]:65535', { address: 'fd00::1', port: 65535 }],
  ])('parseEndpoint(%s)', (s, want) => {
    expect(parseEndpoint(s)).toEqual({ ok: true, value: want });
  });

  it.each([
    ['10.0.0.0/8', '10.0.0.0/8'],
    ['10.1.2.3', '10.1.2.3/32'],
    ['fd00:0::/64', 'fd00::/64'],
    ['0.0.0.0/0', '0.0.0.0/0'],
  ])('parseCidr(%s) = %s', (s, want) => {
    expect(parseCidr(s)).toEqual({ ok: true, value: want });
  });

  it('validatePeer reports problems without a prefix', () => {
    const r = validatePeer({ publicKey: KEY_A, endpoint: 'nope' });
    expect('problems' in r && r.problems[0].field).toBe('endpoint');
    const g = validatePeer({ publicKey: KEY_A, allowedIps: ['10.1.0.0/16'] });
    expect('peer' in g && g.peer.allowedIps).toEqual(['10.1.0.0/16']);
  });
});

describe('config: dns section', () => {
  const withDns = (dns: unknown) => ({ ...good(), dns });
  const problemsOf = (raw: unknown): string[] => {
    try {
      validateConfig(raw, 'pod.json');
      return [];
    } catch (e) {
      return (e as Error).message.split('\n');
    }
  };

  it('is off without a dns section, with its defaults', () => {
    const c = validateConfig(good(), 'pod.json');
    expect(c.dns.enabled).toBe(false);
    expect(c.dns.listenPort).toBe(15353);
    expect(c.dns.maxTtl).toBe(30);
    expect(c.dns.resolvConf).toBe('/etc/resolv.conf');
  });

  it('is on with an empty section; canonical names, upstreams and CIDRs', () => {
    const c = validateConfig(
      withDns({
        domain: 'Alpha.svc.cluster.local.',
        upstreams: ['10.96.0.53', '[fd00:96::a]:5353'],
        neverTunnelNames: ['Example.COM'],
        neverTunnelCidrs: ['10.96.5.0/24', 'fd00:0:0::1'],
        classifyCidrs: ['10.96.0.0/12', 'fd00:77:0::/64', '10.96.0.0/12'],
        endpoints: [{ vip: '10.96.0.20', addresses: ['10.77.0.2', 'fd00:77:0::2'] }],
        resolvConf: 'resolv.conf',
      }),
      join(dir, 'pod.json'),
    );
    expect(c.dns.enabled).toBe(true);
    expect(c.dns.domain).toBe('alpha.svc.cluster.local');
    expect(c.dns.upstreams).toEqual([
      { address: '10.96.0.53', port: 53 },
      { address: 'fd00:96::a', port: 5353 },
    ]);
    expect(c.dns.neverTunnelNames).toEqual(['example.com']);
    expect(c.dns.neverTunnelCidrs).toEqual(['10.96.5.0/24', 'fd00::1/128']);
    expect(c.dns.classifyCidrs).toEqual(['10.96.0.0/12', 'fd00:77::/64']);
    expect(c.dns.endpoints).toEqual([{ vip: '10.96.0.20', addresses: ['10.77.0.2', 'fd00:77::2'] }]);
    expect(c.dns.resolvConf).toBe(join(dir, 'resolv.conf'));
    expect(validateConfig(withDns({}), 'pod.json').dns.enabled).toBe(true);
    expect(validateConfig(withDns({ enabled: false }), 'pod.json').dns.enabled).toBe(false);
  });

  const cases: [string, unknown, string][] = [
    ['dns', [], 'pod.json: dns: must be an object'],
    ['dns.enabled', 'yes', 'pod.json: dns.enabled: "yes" is not true or false'],
    ['dns.domain', 'bad domain', 'pod.json: dns.domain: "bad domain" is not a DNS name'],
    ['dns.upstreams', '10.0.0.1', 'pod.json: dns.upstreams: must be an array'],
    ['dns.upstreams', ['10.0.0.300'], 'pod.json: dns.upstreams[0]: "10.0.0.300" is not an address or ip:port'],
    ['dns.upstreams', ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'], 'pod.json: dns.upstreams: at most 3 servers'],
    ['dns.neverTunnelNames', ['a..b'], 'pod.json: dns.neverTunnelNames[0]: "a..b" is not a DNS name'],
    ['dns.neverTunnelCidrs', ['10.0.0.1/8'], 'pod.json: dns.neverTunnelCidrs[0]: "10.0.0.1/8" has host bits set'],
    ['dns.classifyCidrs', ['0.0.0.0/2'], 'pod.json: dns.classifyCidrs[0]: 0.0.0.0/2 is too wide'],
    ['dns.classifyCidrs', ['f000::/4'], 'pod.json: dns.classifyCidrs[0]: f000::/4 is too wide'],
    ['dns.classifyCidrs', ['10.96.0.1/12'], 'pod.json: dns.classifyCidrs[0]: "10.96.0.1/12" has host bits set'],
    ['dns.classifyCidrs', Array.from({ length: 65 }, (_, i) => `10.${i}.0.0/16`), 'pod.json: dns.classifyCidrs: at most 64 ranges'],
    ['dns.maxTtl', -1, 'pod.json: dns.maxTtl: -1 is out of range 0..86400'],
    ['dns.routeGrace', 1.5, 'pod.json: dns.routeGrace: 1.5 is not an integer'],
    ['dns.upstreamTimeout', 10, 'pod.json: dns.upstreamTimeout: 10 is out of range 50..30000'],
    ['dns.listenPort', 51820, "pod.json: dns.listenPort: 51820 is also the tunnel's listenPort"],
    ['dns.resolvConf', '', 'pod.json: dns.resolvConf: "" is not a path'],
    ['dns.endpoints', [{ vip: '10.96.0.20' }], 'pod.json: dns.endpoints[0].addresses: must be an array'],
    ['dns.endpoints', [{ vip: 'x', addresses: [] }], 'pod.json: dns.endpoints[0].vip: "x" is not an IPv4/IPv6 address'],
    ['dns.endpoints', [{ vip: '10.96.0.20', addresses: ['10.0.0.1/32'] }], 'pod.json: dns.endpoints[0].addresses[0]: "10.0.0.1/32" is an address'],
    ['dns.upstream', ['10.0.0.1'], 'pod.json: dns.upstream: unknown field (known: enabled, domain, upstreams'],
  ];
  it.each(cases)('%s = %j', (field, value, message) => {
    const key = field.split('.')[1];
    const raw = field === 'dns' ? withDns(value) : withDns({ [key]: value });
    const lines = problemsOf(raw);
    expect(lines.length, lines.join('\n')).toBe(1);
    expect(lines[0].startsWith(message), lines[0]).toBe(true);
  });

  it('validateEndpoints checks a control-socket list', () => {
    expect(validateEndpoints([{ vip: '10.96.0.20', addresses: ['10.77.0.2'] }])).toEqual({ endpoints: [{ vip: '10.96.0.20', addresses: ['10.77.0.2'] }] });
    const r = validateEndpoints([{ vip: '10.96.0.20', addresses: 'x' }]);
    expect('problems' in r && r.problems[0].field).toBe('endpoints[0].addresses');
  });
});

describe('config: limits (the engine refuses more than it holds)', () => {
  const svc = (i: number) => ({ vip: `10.96.${i >> 8}.${i & 255}`, ports: [] });
  const key = (i: number) => Buffer.alloc(32, 0).fill(i & 255, 0, 1).fill((i >> 8) + 1, 1, 2).toString('base64');

  it('services: at most 256 (native/nat.h), checked in the config, not first by the engine', () => {
    const ok = { ...good(), services: Array.from({ length: 256 }, (_, i) => svc(i + 1)) };
    expect(validateConfig(ok, 'pod-a.json').services.length).toBe(256);
    expect(problemsOf({ ...good(), services: Array.from({ length: 257 }, (_, i) => svc(i + 1)) })).toEqual([
      'pod-a.json: services: 257 services: at most 256 (the data plane\'s service table)',
    ]);
    expect(validateServices(Array.from({ length: 257 }, (_, i) => svc(i + 1)), { v4: '10.77.0.1', v6: null })).toEqual({
      problems: [{ field: 'services', problem: "257 services: at most 256 (the data plane's service table)" }],
    });
  });

  it('ports: at most 64 per service (native/nat.h)', () => {
    const ports = (n: number) => Array.from({ length: n }, (_, i) => ({ protocol: 'tcp', port: 1000 + i }));
    expect(validateConfig(withField('services[0].ports', ports(64)), 'pod-a.json').services[0].ports.length).toBe(64);
    expect(problemsOf(withField('services[0].ports', ports(65)))).toEqual(['pod-a.json: services[0].ports: 65 ports: at most 64 per service']);
  });

  it('allowedIps: at most 1024 per peer, also for a control-socket peer', () => {
    const ips = (n: number) => Array.from({ length: n }, (_, i) => `10.${100 + (i >> 8)}.${i & 255}.0/24`);
    expect(validateConfig(withField('peers[0].allowedIps', ips(1024)), 'pod-a.json').peers[0].allowedIps.length).toBe(1024);
    expect(problemsOf(withField('peers[0].allowedIps', ips(1025)))).toEqual(['pod-a.json: peers[0].allowedIps: 1025 entries: at most 1024 per peer']);
    expect(validatePeer({ publicKey: KEY_A, allowedIps: ips(1025) })).toEqual({
      problems: [{ field: 'allowedIps', problem: '1025 entries: at most 1024 per peer' }],
    });
  });

  it('peers: at most 65536; allowed IPs over all peers: at most 65536', () => {
    expect(problemsOf({ ...good(), peers: new Array(65537).fill({}) })).toEqual(['pod-a.json: peers: 65537 peers: at most 65536']);
    const peers = Array.from({ length: 65 }, (_, i) => ({
      publicKey: key(i + 1),
      allowedIps: Array.from({ length: 1024 }, (_, j) => `10.${i}.${j >> 2}.${(j & 3) * 64}/26`),
    }));
    expect(problemsOf({ ...good(), peers })).toEqual(['pod-a.json: peers[64].allowedIps: more than 65536 allowed IPs over all peers']);
  });
});

describe('config: DNS upstreams that are project destinations', () => {
  // good(): peers[0].allowedIps has 10.96.0.10/32, peers[1] fd00:77::3/128, services[0] is 10.96.0.20
  const leak = 'the proxy\'s upstream queries carry the fwmark and would bypass the tunnel in plaintext';

  it('upstream leak: an upstream inside a peer\'s allowed IPs or equal to a service VIP is refused', () => {
    expect(problemsOf({ ...good(), dns: { domain: 'alpha.svc.cluster.local', upstreams: ['10.96.0.10', '10.96.0.20:5353', '[fd00:77::3]:53'] } })).toEqual([
      `pod-a.json: dns.upstreams[0]: 10.96.0.10 is a project destination (peers[0].allowedIps 10.96.0.10/32): ${leak}`,
      `pod-a.json: dns.upstreams[1]: 10.96.0.20 is a project destination (services[0].vip 10.96.0.20): ${leak}`,
      `pod-a.json: dns.upstreams[2]: fd00:77::3 is a project destination (peers[1].allowedIps fd00:77::3/128): ${leak}`,
    ]);
    const wide = withField('peers[0].allowedIps', ['10.96.0.0/16']);
    expect(problemsOf({ ...wide, dns: { domain: 'alpha.svc.cluster.local', upstreams: ['10.96.200.1'] } })).toEqual([
      `pod-a.json: dns.upstreams[0]: 10.96.200.1 is a project destination (peers[0].allowedIps 10.96.0.0/16): ${leak}`,
    ]);
  });

  it('an upstream outside every project destination, or a disabled proxy, is accepted', () => {
    const cfg = validateConfig({ ...good(), dns: { domain: 'alpha.svc.cluster.local', upstreams: ['10.96.0.11', 'fd00:77::4'] } }, 'pod-a.json');
    expect(cfg.dns.upstreams.map((u) => u.address)).toEqual(['10.96.0.11', 'fd00:77::4']);
    expect(validateConfig({ ...good(), dns: { enabled: false, upstreams: ['10.96.0.10'] } }, 'pod-a.json').dns.enabled).toBe(false);
  });

  it('failClosedOnStop: default false, a boolean', () => {
    expect(validateConfig(good(), 'pod-a.json').failClosedOnStop).toBe(false);
    expect(validateConfig({ ...good(), failClosedOnStop: true }, 'pod-a.json').failClosedOnStop).toBe(true);
    expect(problemsOf({ ...good(), failClosedOnStop: 'yes' })[0]).toMatch(/^pod-a\.json: failClosedOnStop: /);
  });
});
