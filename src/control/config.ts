/**
 * The pod's JSON config file: parsing and validation at one gate. Everything past
 * loadConfig() is trusted. Every problem is reported as `FILE: field: problem`
 * (all problems of the file, not just the first), and unknown fields are errors so
 * a typo is never silently ignored. The format is documented in README.md
 * ("Config file").
 */
import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Address4, Address6 } from 'ip-address';
import { LOG_LEVELS, type LogLevel } from '../log.js';
import { parseKey, KeyFormatError } from '../noise/keys.js';
import { addressFamily, parseAddress, parseCidr, parseEndpoint, projectDestinationOf, type Endpoint } from '../net/address.js';
import { bad, ok, show, type Parsed } from '../net/parsed.js';
import type { DnsConfig, ServiceEndpoints } from '../dns/service.js';

export const DEFAULT_INTERFACE = 'tenc0';
export const DEFAULT_LISTEN_PORT = 51820;
/** Marks tenc's own UDP datagrams (SO_MARK) so the policy rule skips them. */
export const DEFAULT_FWMARK = 0xcb84; // 52100
export const DEFAULT_TABLE = 52100;
/** Between the local table (0) and main (32766). */
export const DEFAULT_RULE_PRIORITY = 5210;
export const DEFAULT_SOCKET_DIR = '/run/tenc';

export type InjectMode = 'raw' | 'tun';

export interface PeerConfig {
  /** Base64 of the 32-byte Curve25519 public key, as `wg pubkey` prints it. */
  publicKey: string;
  endpoint: Endpoint | null;
  /** Canonical CIDRs (network address, explicit prefix). */
  allowedIps: string[];
  /** Seconds; 0 = off. */
  persistentKeepalive: number;
}

export interface ServicePort {
  protocol: 'tcp' | 'udp';
  port: number;
}

export interface ServiceConfig {
  vip: string;
  /** The pod's own address of the VIP's family, unless given. */
  localAddress: string;
  /** Empty = every tcp and udp port. */
  ports: ServicePort[];
}

export interface DataPlaneOptions {
  inject: InjectMode;
  tunOffload: boolean;
  udpGso: boolean;
  udpGro: boolean;
}

export interface PodConfig {
  /** The path the config was read from (for messages). */
  file: string;
  interface: string;
  /** The pod's own addresses, at most one per family. */
  addresses: { v4: string | null; v6: string | null };
  listenPort: number;
  fwmark: number;
  table: number;
  rulePriority: number;
  /** Absolute path (relative paths are resolved against the config file's directory). */
  pskFile: string;
  peers: PeerConfig[];
  services: ServiceConfig[];
  dataPlane: DataPlaneOptions;
  logLevel: LogLevel;
  /** Absolute (relative paths are resolved like pskFile); null: the default, /run/tenc/<interface>-<netns inode>.sock, chosen at start. */
  controlSocket: string | null;
  dns: DnsConfig;
  /** Drop plaintext from project pod addresses (the peers' allowed IPs) arriving outside tenc0 (src/routing/enforce.ts). */
  enforce: boolean;
  /** Keep the ip rule and unreachable guards after a clean stop (fail closed); default false: a stop removes everything. */
  failClosedOnStop: boolean;
  /**
   * The project's member addresses at start (canonical CIDRs; what the control op
   * set-members replaces later): enforcement drops plaintext to and from them outside
   * tenc0 from the start, even before their key is known. Default none.
   */
  members: string[];
}

export const DEFAULT_DNS_PORT = 15353;
export const DNS_DEFAULTS = { maxTtl: 30, routeGrace: 30, upstreamTimeout: 2000, resolvConf: '/etc/resolv.conf' } as const;

export interface ConfigProblem {
  field: string;
  problem: string;
}

/** Validation failed; `message` holds one `FILE: field: problem` line per problem. */
export class ConfigError extends Error {
  readonly code = 'ERR_TENC_CONFIG';
  constructor(
    readonly file: string,
    readonly problems: ConfigProblem[],
  ) {
    super(problems.map((p) => `${file}: ${p.field}: ${p.problem}`).join('\n'));
    this.name = 'ConfigError';
  }
}

// ---------------------------------------------------------------------------
// Value parsers of the config's own fields (addresses, CIDRs and endpoints: src/net/address.ts).
// parseKey32 also serves the control socket.

/** Standard padded base64 of exactly 32 bytes, as strict as wg (src/noise/keys.ts parseKey). */
export function parseKey32(v: unknown): Parsed<Uint8Array> {
  if (typeof v !== 'string') return bad(`${show(v)} is not a string`);
  try {
    return ok(parseKey(v, 'key'));
  } catch (e) {
    const detail = e instanceof KeyFormatError ? e.message.replace(/^key: /, '') : (e as Error).message;
    return bad(`is not a base64 32-byte key as wg prints it (${detail})`);
  }
}

/** The Linux rules for an interface name (IFNAMSIZ 16 with the NUL). */
export function parseInterfaceName(v: unknown): Parsed<string> {
  if (typeof v !== 'string') return bad(`${show(v)} is not a string`);
  if (v.length === 0 || v.length > 15) return bad(`${show(v)} must be 1..15 characters`);
  // also no quote or backslash: the name is quoted in the nft rule text, which has no escapes
  if (v === '.' || v === '..' || /[\s/:%"'\\]/.test(v)) return bad(`${show(v)} is not a valid interface name`);
  return ok(v);
}

function parseInteger(v: unknown, min: number, max: number): Parsed<number> {
  if (typeof v !== 'number' || !Number.isInteger(v)) return bad(`${show(v)} is not an integer`);
  if (v < min || v > max) return bad(`${v} is out of range ${min}..${max}`);
  return ok(v);
}

function parseBool(v: unknown): Parsed<boolean> {
  return typeof v === 'boolean' ? ok(v) : bad(`${show(v)} is not true or false`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

// ---------------------------------------------------------------------------

/** Collects problems while walking one object. */
class Checker {
  readonly problems: ConfigProblem[] = [];
  add(field: string, problem: string): void {
    this.problems.push({ field, problem });
  }
  /** Reports fields not in `known`. */
  unknown(obj: Record<string, unknown>, prefix: string, known: readonly string[]): void {
    for (const k of Object.keys(obj)) {
      if (!known.includes(k)) {
        this.add(prefix + k, `unknown field (known: ${known.join(', ')})`);
      }
    }
  }
  take<T>(field: string, r: Parsed<T>, fallback: T): T {
    if (r.ok) return r.value;
    this.add(field, r.problem);
    return fallback;
  }
}

export const TOP_FIELDS = [
  'interface',
  'addresses',
  'listenPort',
  'fwmark',
  'table',
  'rulePriority',
  'pskFile',
  'peers',
  'services',
  'dataPlane',
  'logLevel',
  'controlSocket',
  'enforce',
  'failClosedOnStop',
  'dns',
  'members',
] as const;
/** Services the data plane's table holds (native/nat.h TENC_NAT_MAX_SERVICES; engine rejects more). */
export const MAX_SERVICES = 256;
/** Ports per service (native/nat.h TENC_NAT_MAX_PORTS). */
export const MAX_SERVICE_PORTS = 64;
/** Peers (native/engine.h TENC_MAX_PEERS, src/peer/registry.ts MAX_PEERS). */
export const MAX_PEERS = 65536;
/**
 * Allowed IPs per peer, and over all peers: each is a route and a guard in the pod's
 * table and a node in the allowed-IPs trie, installed at start. Generous for a pod
 * (a peer is a pod with one or two addresses, or a node with its pod CIDRs), small
 * enough that start stays within seconds.
 */
export const MAX_PEER_ALLOWED_IPS = 1024;
export const MAX_ALLOWED_IPS = 65536;
export const PEER_FIELDS = ['publicKey', 'endpoint', 'allowedIps', 'persistentKeepalive'] as const;
const SERVICE_FIELDS = ['vip', 'localAddress', 'ports'] as const;
const PORT_FIELDS = ['protocol', 'port'] as const;
const DATAPLANE_FIELDS = ['inject', 'tunOffload', 'udpGso', 'udpGro'] as const;
const DNS_FIELDS = [
  'enabled',
  'domain',
  'upstreams',
  'neverTunnelNames',
  'neverTunnelCidrs',
  'classifyCidrs',
  'maxTtl',
  'routeGrace',
  'upstreamTimeout',
  'listenPort',
  'resolvConf',
  'endpoints',
] as const;
const ENDPOINTS_FIELDS = ['vip', 'addresses'] as const;

/** A DNS name as written in config: letters, digits, '-', '_' labels; normalized to lower case without the final dot. */
function parseDnsName(v: unknown): Parsed<string> {
  if (typeof v !== 'string') return bad(`${show(v)} is not a string`);
  const n = v.toLowerCase().replace(/\.$/, '');
  if (n.length === 0 || n.length > 253 || !n.split('.').every((l) => /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/.test(l))) {
    return bad(`${show(v)} is not a DNS name`);
  }
  return ok(n);
}

/** The cluster DNS as "ip", "ip:port" or "[v6]:port" (port 53 by default). */
function parseUpstream(v: unknown): Parsed<Endpoint> {
  const a = parseAddress(v);
  if (a.ok) return ok({ address: a.value, port: 53 });
  const e = parseEndpoint(v);
  return e.ok ? e : bad(`${show(v)} is not an address or ip:port`);
}

function checkEndpointsList(c: Checker, v: unknown, prefix: string): ServiceEndpoints[] {
  const out: ServiceEndpoints[] = [];
  if (!Array.isArray(v)) {
    c.add(prefix, 'must be an array of {"vip", "addresses"}');
    return out;
  }
  const vips = new Set<string>();
  v.forEach((e, i) => {
    const p = `${prefix}[${i}]`;
    if (!isObject(e)) return c.add(p, 'must be an object like {"vip": "10.96.0.20", "addresses": ["10.77.0.2"]}');
    c.unknown(e, `${p}.`, ENDPOINTS_FIELDS);
    const before = c.problems.length;
    const vip = e.vip === undefined ? (c.add(`${p}.vip`, 'is required'), '') : c.take(`${p}.vip`, parseAddress(e.vip), '');
    if (vip && vips.has(vip)) c.add(`${p}.vip`, `${show(e.vip)} is listed twice`);
    vips.add(vip);
    const addresses: string[] = [];
    if (!Array.isArray(e.addresses)) c.add(`${p}.addresses`, 'must be an array of addresses (the ready endpoints)');
    else {
      e.addresses.forEach((a, j) => {
        const r = parseAddress(a);
        if (!r.ok) c.add(`${p}.addresses[${j}]`, r.problem);
        else if (!addresses.includes(r.value)) addresses.push(r.value);
      });
    }
    if (c.problems.length === before) out.push({ vip, addresses });
  });
  return out;
}

/** Validates an endpoints list outside a config file (control socket `set-endpoints`). */
export function validateEndpoints(v: unknown): { endpoints: ServiceEndpoints[] } | { problems: ConfigProblem[] } {
  const c = new Checker();
  const endpoints = checkEndpointsList(c, v, 'endpoints');
  return c.problems.length > 0 ? { problems: c.problems } : { endpoints };
}

/** At most this many dns.classifyCidrs ranges (after duplicates are dropped). */
export const MAX_CLASSIFY_CIDRS = 64;

/**
 * One dns.classifyCidrs range, canonical: a CIDR no wider than /4 (IPv4) or /8
 * (IPv6). Also `tenc agent --classify-cidrs` (the agent writes it into every pod's
 * config), so a value the pods would refuse is refused when the agent starts.
 */
export function parseClassifyCidr(v: unknown): Parsed<string> {
  const r = parseCidr(v);
  if (!r.ok) return r;
  const len = Number(r.value.split('/')[1]);
  if (len < (r.value.includes(':') ? 8 : 4)) return bad(`${r.value} is too wide: it would route (nearly) every address into the tunnel`);
  return r;
}

function checkDns(c: Checker, v: unknown, file: string): DnsConfig {
  const d: DnsConfig = {
    enabled: false,
    domain: null,
    upstreams: [],
    neverTunnelNames: [],
    neverTunnelCidrs: [],
    classifyCidrs: [],
    maxTtl: DNS_DEFAULTS.maxTtl,
    routeGrace: DNS_DEFAULTS.routeGrace,
    upstreamTimeout: DNS_DEFAULTS.upstreamTimeout,
    listenPort: DEFAULT_DNS_PORT,
    resolvConf: DNS_DEFAULTS.resolvConf,
    endpoints: [],
  };
  if (v === undefined) return d;
  if (!isObject(v)) {
    c.add('dns', 'must be an object');
    return d;
  }
  c.unknown(v, 'dns.', DNS_FIELDS);
  d.enabled = v.enabled === undefined ? true : c.take('dns.enabled', parseBool(v.enabled), false);
  if (v.domain !== undefined && v.domain !== null) d.domain = c.take('dns.domain', parseDnsName(v.domain), null);
  const list = (field: string, x: unknown, each: (y: unknown, f: string) => void) => {
    if (x === undefined) return;
    if (!Array.isArray(x)) return c.add(`dns.${field}`, 'must be an array');
    x.forEach((y, i) => each(y, `dns.${field}[${i}]`));
  };
  list('upstreams', v.upstreams, (y, f) => {
    const r = c.take(f, parseUpstream(y), null);
    if (r) d.upstreams.push(r);
  });
  if (d.upstreams.length > 3) c.add('dns.upstreams', 'at most 3 servers (as resolv.conf)');
  list('neverTunnelNames', v.neverTunnelNames, (y, f) => {
    const r = c.take(f, parseDnsName(y), '');
    if (r && !d.neverTunnelNames.includes(r)) d.neverTunnelNames.push(r);
  });
  list('neverTunnelCidrs', v.neverTunnelCidrs, (y, f) => {
    const r = c.take(f, parseCidr(y), '');
    if (r && !d.neverTunnelCidrs.includes(r)) d.neverTunnelCidrs.push(r);
  });
  list('classifyCidrs', v.classifyCidrs, (y, f) => {
    const r = c.take(f, parseClassifyCidr(y), '');
    if (r && !d.classifyCidrs.includes(r)) d.classifyCidrs.push(r);
  });
  if (d.classifyCidrs.length > MAX_CLASSIFY_CIDRS) c.add('dns.classifyCidrs', `at most ${MAX_CLASSIFY_CIDRS} ranges`);
  if (v.maxTtl !== undefined) d.maxTtl = c.take('dns.maxTtl', parseInteger(v.maxTtl, 0, 86400), 0);
  if (v.routeGrace !== undefined) d.routeGrace = c.take('dns.routeGrace', parseInteger(v.routeGrace, 0, 86400), 0);
  if (v.upstreamTimeout !== undefined) d.upstreamTimeout = c.take('dns.upstreamTimeout', parseInteger(v.upstreamTimeout, 50, 30000), 0);
  if (v.listenPort !== undefined) d.listenPort = c.take('dns.listenPort', parseInteger(v.listenPort, 1, 65535), 0);
  if (v.resolvConf !== undefined) {
    if (typeof v.resolvConf !== 'string' || v.resolvConf === '') c.add('dns.resolvConf', `${show(v.resolvConf)} is not a path`);
    else d.resolvConf = resolve(dirname(resolve(file)), v.resolvConf);
  }
  if (v.endpoints !== undefined) d.endpoints = checkEndpointsList(c, v.endpoints, 'dns.endpoints');
  return d;
}

/**
 * Validates one peer object (config file entry or control-socket request).
 * `prefix` is the field path, e.g. "peers[1]." or "".
 */
function checkPeer(c: Checker, v: unknown, prefix: string): PeerConfig | null {
  if (!isObject(v)) {
    c.add(prefix.replace(/\.$/, '') || 'peer', 'must be an object');
    return null;
  }
  c.unknown(v, prefix, PEER_FIELDS);
  const before = c.problems.length;
  let publicKey = '';
  if (v.publicKey === undefined) c.add(`${prefix}publicKey`, 'is required');
  else {
    const k = parseKey32(v.publicKey);
    if (!k.ok) c.add(`${prefix}publicKey`, k.problem);
    else if (k.value.every((b) => b === 0)) c.add(`${prefix}publicKey`, 'is the all-zero key');
    else publicKey = Buffer.from(k.value).toString('base64');
  }
  let endpoint: Endpoint | null = null;
  if (v.endpoint !== undefined && v.endpoint !== null) {
    endpoint = c.take(`${prefix}endpoint`, parseEndpoint(v.endpoint), null);
  }
  const allowedIps: string[] = [];
  if (v.allowedIps !== undefined) {
    if (!Array.isArray(v.allowedIps)) c.add(`${prefix}allowedIps`, 'must be an array of CIDR strings');
    else if (v.allowedIps.length > MAX_PEER_ALLOWED_IPS) {
      c.add(`${prefix}allowedIps`, `${v.allowedIps.length} entries: at most ${MAX_PEER_ALLOWED_IPS} per peer`);
    } else {
      v.allowedIps.forEach((x, i) => {
        const r = parseCidr(x);
        if (!r.ok) c.add(`${prefix}allowedIps[${i}]`, r.problem);
        else if (allowedIps.includes(r.value)) c.add(`${prefix}allowedIps[${i}]`, `${show(x)} is listed twice`);
        else allowedIps.push(r.value);
      });
    }
  }
  let persistentKeepalive = 0;
  if (v.persistentKeepalive !== undefined) {
    persistentKeepalive = c.take(`${prefix}persistentKeepalive`, parseInteger(v.persistentKeepalive, 0, 65535), 0);
  }
  if (c.problems.length !== before) return null;
  return { publicKey, endpoint, allowedIps, persistentKeepalive };
}

/** Validates a peer object outside a config file (control socket, CLI). */
export function validatePeer(v: unknown): { peer: PeerConfig } | { problems: ConfigProblem[] } {
  const c = new Checker();
  const peer = checkPeer(c, v, '');
  if (peer === null || c.problems.length > 0) return { problems: c.problems };
  return { peer };
}

function checkServices(
  c: Checker,
  v: unknown,
  prefix: string,
  addresses: { v4: string | null; v6: string | null },
): ServiceConfig[] {
  const out: ServiceConfig[] = [];
  if (!Array.isArray(v)) {
    c.add(prefix || 'services', 'must be an array');
    return out;
  }
  if (v.length > MAX_SERVICES) {
    c.add(prefix || 'services', `${v.length} services: at most ${MAX_SERVICES} (the data plane's service table)`);
    return out;
  }
  const vips = new Set<string>();
  v.forEach((s, i) => {
    const p = `${prefix}[${i}]`;
    if (!isObject(s)) {
      c.add(p, 'must be an object');
      return;
    }
    c.unknown(s, `${p}.`, SERVICE_FIELDS);
    const before = c.problems.length;
    let vip = '';
    if (s.vip === undefined) c.add(`${p}.vip`, 'is required');
    else vip = c.take(`${p}.vip`, parseAddress(s.vip), '');
    if (vip && vips.has(vip)) c.add(`${p}.vip`, `${show(s.vip)} is listed twice`);
    vips.add(vip);
    const fam = vip ? addressFamily(vip) : null;
    let localAddress = '';
    if (s.localAddress !== undefined) {
      localAddress = c.take(`${p}.localAddress`, parseAddress(s.localAddress), '');
      if (localAddress && fam && addressFamily(localAddress) !== fam) {
        c.add(`${p}.localAddress`, `${show(s.localAddress)} is not of the VIP's address family`);
      }
    } else if (fam) {
      const own = fam === 4 ? addresses.v4 : addresses.v6;
      if (own === null) c.add(`${p}.vip`, `the pod has no IPv${fam} address in "addresses" to serve ${vip} on`);
      else localAddress = own;
    }
    const ports: ServicePort[] = [];
    if (s.ports === undefined) c.add(`${p}.ports`, 'is required (an empty array means every tcp and udp port)');
    else if (!Array.isArray(s.ports)) c.add(`${p}.ports`, 'must be an array of {"protocol", "port"}');
    else if (s.ports.length > MAX_SERVICE_PORTS) c.add(`${p}.ports`, `${s.ports.length} ports: at most ${MAX_SERVICE_PORTS} per service`);
    else {
      s.ports.forEach((q, j) => {
        const pp = `${p}.ports[${j}]`;
        if (!isObject(q)) {
          c.add(pp, 'must be an object like {"protocol": "tcp", "port": 80}');
          return;
        }
        c.unknown(q, `${pp}.`, PORT_FIELDS);
        let protocol: 'tcp' | 'udp' = 'tcp';
        if (q.protocol !== 'tcp' && q.protocol !== 'udp') c.add(`${pp}.protocol`, `${show(q.protocol)} is not "tcp" or "udp"`);
        else protocol = q.protocol;
        const port = q.port === undefined ? (c.add(`${pp}.port`, 'is required'), 0) : c.take(`${pp}.port`, parseInteger(q.port, 1, 65535), 0);
        if (ports.some((x) => x.protocol === protocol && x.port === port)) c.add(pp, `${protocol}/${port} is listed twice`);
        ports.push({ protocol, port });
      });
    }
    if (c.problems.length === before) out.push({ vip, localAddress, ports });
  });
  return out;
}

/** Validates a services array outside a config file (control socket `set-services`). */
export function validateServices(
  v: unknown,
  addresses: { v4: string | null; v6: string | null },
): { services: ServiceConfig[] } | { problems: ConfigProblem[] } {
  const c = new Checker();
  const services = checkServices(c, v, 'services', addresses);
  return c.problems.length > 0 ? { problems: c.problems } : { services };
}

/** Validates a parsed JSON value; `file` names the source in messages and anchors a relative pskFile. */
export function validateConfig(raw: unknown, file: string): PodConfig {
  const c = new Checker();
  if (!isObject(raw)) throw new ConfigError(file, [{ field: '(top level)', problem: 'must be a JSON object' }]);
  c.unknown(raw, '', TOP_FIELDS);

  const iface = raw.interface === undefined ? DEFAULT_INTERFACE : c.take('interface', parseInterfaceName(raw.interface), DEFAULT_INTERFACE);

  const addresses: { v4: string | null; v6: string | null } = { v4: null, v6: null };
  if (raw.addresses === undefined) c.add('addresses', 'is required (the pod\'s own IPv4 and/or IPv6 address)');
  else if (!Array.isArray(raw.addresses) || raw.addresses.length === 0 || raw.addresses.length > 2) {
    c.add('addresses', 'must be an array of one IPv4 and/or one IPv6 address');
  } else {
    raw.addresses.forEach((a, i) => {
      const r = parseAddress(a);
      if (!r.ok) return c.add(`addresses[${i}]`, r.problem);
      const fam = addressFamily(r.value) === 4 ? 'v4' : 'v6';
      if (addresses[fam] !== null) return c.add(`addresses[${i}]`, `a second IP${fam} address (at most one per family)`);
      const unusable = fam === 'v4' ? new Address4(r.value) : new Address6(r.value);
      if (unusable.isMulticast() || r.value === '0.0.0.0' || r.value === '::') {
        return c.add(`addresses[${i}]`, `${show(a)} is not a unicast address`);
      }
      addresses[fam] = r.value;
    });
  }

  const listenPort = raw.listenPort === undefined ? DEFAULT_LISTEN_PORT : c.take('listenPort', parseInteger(raw.listenPort, 1, 65535), 0);

  let fwmark = DEFAULT_FWMARK;
  if (raw.fwmark !== undefined) {
    let v: unknown = raw.fwmark;
    if (typeof v === 'string' && /^0x[0-9a-fA-F]{1,8}$/.test(v)) v = Number(v);
    fwmark = c.take('fwmark', parseInteger(v, 1, 0xffffffff), 0);
  }

  let table = DEFAULT_TABLE;
  if (raw.table !== undefined) {
    table = c.take('table', parseInteger(raw.table, 1, 0xffffffff), 0);
    if ([253, 254, 255].includes(table)) c.add('table', `${table} is a reserved table (default/main/local)`);
  }

  // 2 at least: the exempt policy rules sit at rulePriority - 1, and pref 0 is the
  // kernel's `lookup local` rule
  const rulePriority =
    raw.rulePriority === undefined ? DEFAULT_RULE_PRIORITY : c.take('rulePriority', parseInteger(raw.rulePriority, 2, 32765), 0);

  let pskFile = '';
  if (raw.pskFile === undefined) c.add('pskFile', 'is required (a file holding `wg genpsk` output)');
  else if (typeof raw.pskFile !== 'string' || raw.pskFile === '') c.add('pskFile', `${show(raw.pskFile)} is not a file path`);
  else {
    pskFile = resolve(dirname(resolve(file)), raw.pskFile);
    try {
      readPskFile(pskFile).fill(0);
    } catch (e) {
      c.add('pskFile', (e as Error).message);
    }
  }

  const peers: PeerConfig[] = [];
  if (raw.peers !== undefined) {
    if (!Array.isArray(raw.peers)) c.add('peers', 'must be an array');
    else if (raw.peers.length > MAX_PEERS) c.add('peers', `${raw.peers.length} peers: at most ${MAX_PEERS}`);
    else {
      const seenKeys = new Map<string, number>();
      const seenIps = new Map<string, number>();
      raw.peers.forEach((p, i) => {
        const peer = checkPeer(c, p, `peers[${i}].`);
        if (peer === null) return;
        const dupKey = seenKeys.get(peer.publicKey);
        if (dupKey !== undefined) c.add(`peers[${i}].publicKey`, `same key as peers[${dupKey}]`);
        seenKeys.set(peer.publicKey, i);
        if (seenIps.size + peer.allowedIps.length > MAX_ALLOWED_IPS) {
          c.add(`peers[${i}].allowedIps`, `more than ${MAX_ALLOWED_IPS} allowed IPs over all peers`);
          return;
        }
        peer.allowedIps.forEach((ip, j) => {
          const other = seenIps.get(ip);
          if (other !== undefined) c.add(`peers[${i}].allowedIps[${j}]`, `${ip} is also claimed by peers[${other}]`);
          seenIps.set(ip, i);
        });
        peers.push(peer);
      });
    }
  }

  const services = raw.services === undefined ? [] : checkServices(c, raw.services, 'services', addresses);

  const dataPlane: DataPlaneOptions = { inject: 'tun', tunOffload: true, udpGso: true, udpGro: true };
  if (raw.dataPlane !== undefined) {
    if (!isObject(raw.dataPlane)) c.add('dataPlane', 'must be an object');
    else {
      const d = raw.dataPlane;
      c.unknown(d, 'dataPlane.', DATAPLANE_FIELDS);
      if (d.inject !== undefined) {
        if (d.inject !== 'raw' && d.inject !== 'tun') c.add('dataPlane.inject', `${show(d.inject)} is not "raw" or "tun"`);
        else dataPlane.inject = d.inject;
      }
      for (const k of ['tunOffload', 'udpGso', 'udpGro'] as const) {
        if (d[k] !== undefined) dataPlane[k] = c.take(`dataPlane.${k}`, parseBool(d[k]), true);
      }
    }
  }

  let logLevel: LogLevel = 'info';
  if (raw.logLevel !== undefined) {
    if (typeof raw.logLevel !== 'string' || !(LOG_LEVELS as readonly string[]).includes(raw.logLevel)) {
      c.add('logLevel', `${show(raw.logLevel)} is not one of ${LOG_LEVELS.join(', ')}`);
    } else logLevel = raw.logLevel as LogLevel;
  }

  let controlSocket: string | null = null;
  if (raw.controlSocket !== undefined && raw.controlSocket !== null) {
    if (typeof raw.controlSocket !== 'string' || raw.controlSocket === '') c.add('controlSocket', `${show(raw.controlSocket)} is not a path`);
    else {
      const abs = resolve(dirname(resolve(file)), raw.controlSocket);
      if (Buffer.byteLength(abs) > 107) c.add('controlSocket', `${abs} is longer than a unix socket path may be (107 bytes)`);
      else controlSocket = abs;
    }
  }

  const dns = checkDns(c, raw.dns, file);
  if (dns.enabled && dns.listenPort === listenPort) c.add('dns.listenPort', `${dns.listenPort} is also the tunnel's listenPort`);
  if (dns.enabled) {
    dns.upstreams.forEach((u, i) => {
      const why = projectDestinationOf(u.address, peers, services);
      if (why !== null) {
        c.add(
          `dns.upstreams[${i}]`,
          `${u.address} is a project destination (${why}): the proxy's upstream queries carry the fwmark and would bypass the tunnel in plaintext`,
        );
      }
    });
  }

  const enforce = raw.enforce === undefined ? false : c.take('enforce', parseBool(raw.enforce), false);
  const failClosedOnStop = raw.failClosedOnStop === undefined ? false : c.take('failClosedOnStop', parseBool(raw.failClosedOnStop), false);

  const members: string[] = [];
  const seenMembers = new Set<string>();
  if (raw.members !== undefined) {
    if (!Array.isArray(raw.members)) c.add('members', 'must be an array of CIDRs');
    else if (raw.members.length > MAX_ALLOWED_IPS) c.add('members', `${raw.members.length} members: at most ${MAX_ALLOWED_IPS}`);
    else
      raw.members.forEach((m, i) => {
        const r = c.take(`members[${i}]`, parseCidr(m), '');
        if (r && !seenMembers.has(r)) members.push(r);
        seenMembers.add(r);
      });
  }

  if (c.problems.length > 0) throw new ConfigError(file, c.problems);
  return {
    file,
    interface: iface,
    addresses,
    listenPort,
    fwmark,
    table,
    rulePriority,
    pskFile,
    peers,
    services,
    dataPlane,
    logLevel,
    controlSocket,
    dns,
    enforce,
    failClosedOnStop,
    members,
  };
}

/** Reads and validates a config file. Throws ConfigError (also for unreadable files and bad JSON). */
export function loadConfig(file: string): PodConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(file, [{ field: '(file)', problem: `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` }]);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(file, [{ field: '(file)', problem: `not valid JSON: ${(e as Error).message}` }]);
  }
  return validateConfig(raw, file);
}

/**
 * Reads the project's pre-shared key: one line of standard base64 (32 bytes), as
 * `wg genpsk` prints, in a file no group or other user may access (mode 0600 or
 * stricter). Errors name the file (and its mode) but never echo its content.
 * The caller zeroes the returned bytes when done.
 */
export function readPskFile(path: string): Uint8Array {
  let text: string;
  let mode = 0;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'not a regular file' });
    mode = st.mode & 0o7777;
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new Error(`psk file ${path}: cannot read (${code})`);
  }
  // a secret other users can read (or replace) is no secret: refuse it before parsing
  if ((mode & 0o077) !== 0) {
    throw new Error(`psk file ${path}: mode ${mode.toString(8).padStart(4, '0')} gives group or others access; it must be 0600 or stricter (chmod 600 ${path})`);
  }
  const r = parseKey32(text.trim());
  if (!r.ok) throw new Error(`psk file ${path}: is not a base64 32-byte key as \`wg genpsk\` prints`);
  return r.value;
}
