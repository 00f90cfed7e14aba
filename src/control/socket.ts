/**
 * The pod's control socket: a local unix stream socket speaking newline-delimited
 * JSON, one request per line, one response line per request, in order.
 *
 *   request:  {"id": 1, "op": "status"}
 *             {"id": 2, "op": "set-peer", "peer": {"publicKey": "...", "endpoint": "10.0.0.2:51820", "allowedIps": ["10.0.0.2/32"]}}
 *             {"id": 3, "op": "remove-peer", "publicKey": "..."}
 *             {"id": 4, "op": "set-services", "services": [{"vip": "10.96.0.10", "ports": [{"protocol": "tcp", "port": 80}]}]}
 *             {"id": 5, "op": "rekey", "publicKey": "..."}        (publicKey left out: every peer)
 *             {"id": 6, "op": "set-policy", "policies": [{"name": "metrics", "mode": "exempt", "target": "service web",
 *                       "addresses": ["10.96.1.10/32"], "ports": [{"protocol": "tcp", "port": 9100, "endPort": 9100}], "local": false}]}
 *   response: {"id": 1, "ok": true, "result": {...}}
 *             {"id": 2, "ok": false, "error": {"code": "EINVAL", "message": "peer.endpoint: ..."}}
 *
 * Requests are validated here (same rules as the config file, unknown fields are
 * errors); the handler receives trusted values. No request or response carries a
 * private key or the psk. Default path: /run/tenc/<ifname>-<netns inode>.sock, so
 * several pods on one host never collide and `tenc status` run in a pod's network
 * namespace (ip netns exec) finds that pod's socket. The directory is mode 0700, the
 * socket 0600; a stale socket file is removed at start and ours at close.
 */
import { createServer, createConnection, type Server, type Socket } from 'node:net';
import { chmodSync, lstatSync, mkdirSync, statSync, unlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import {
  DEFAULT_SOCKET_DIR,
  parseKey32,
  validatePeer,
  validateServices,
  validateEndpoints,
  MAX_ALLOWED_IPS,
  type PeerConfig,
  type ServiceConfig,
} from './config.js';
import { parseAddress, parseCidr } from '../net/address.js';
import type { ServiceEndpoints } from '../dns/service.js';
import type { StatusReport } from './status.js';
import { validatePodPolicies, type PodPolicy } from '../policy/policy.js';
import { silentLogger, type Logger } from '../log.js';

/**
 * Why a request's `id` cannot be echoed back, or null. A plain value only: a deeply
 * nested one parses, then cannot be written (JSON.stringify runs out of stack). The
 * node agent's socket uses it too.
 */
export function idProblem(v: unknown): string | null {
  if (v === undefined || v === null || typeof v === 'number' || (typeof v === 'string' && v.length <= 256)) return null;
  return 'id: must be a number, a string (at most 256 characters) or null';
}

/** Requests of one connection waiting for their turn (the agent sends one at a time). */
const MAX_QUEUED = 256;
export const MAX_REQUEST_BYTES = 1 << 20;

export type ControlOp = 'status' | 'set-peer' | 'remove-peer' | 'set-services' | 'rekey' | 'set-endpoints' | 'set-members' | 'classify-address' | 'set-policy' | 'stop';
export const CONTROL_OPS: readonly ControlOp[] = ['status', 'set-peer', 'remove-peer', 'set-services', 'rekey', 'set-endpoints', 'set-members', 'classify-address', 'set-policy', 'stop'];

/**
 * A set-peer request: the public key and the fields the request gave. For a new
 * peer, absent fields take their defaults (no endpoint, no allowed IPs, keepalive
 * off); for an existing peer they stay as they are (as with `wg set`).
 */
export type PeerChange = Pick<PeerConfig, 'publicKey'> & Partial<Omit<PeerConfig, 'publicKey'>>;

/**
 * What a rekey request did for one peer: `sent`, the initiation went out now;
 * `pending`, it waits for the protocol's limit of one initiation per REKEY_TIMEOUT
 * (5 s) or for an endpoint, and goes out then.
 */
export interface RekeyResult {
  publicKey: string;
  initiation: 'sent' | 'pending';
}

export interface ControlHandler {
  status(): StatusReport | Promise<StatusReport>;
  /** Adds the peer, or changes the given fields of the peer with that key. */
  setPeer(change: PeerChange): void | Promise<void>;
  /** Returns false when no peer has that key. */
  removePeer(publicKey: string): boolean | Promise<boolean>;
  setServices(services: ServiceConfig[]): void | Promise<void>;
  /**
   * Starts a new handshake with the peer with that key (null: with every peer) although
   * its session may be current; one result per peer, none when the key is unknown.
   * Optional: a handler without it answers rekey requests with EIO.
   */
  rekey?(publicKey: string | null): RekeyResult[] | Promise<RekeyResult[]>;
  /** Replaces the project services' ready endpoints the DNS proxy rewrites VIPs to. Optional: without it, EIO. */
  setEndpoints?(endpoints: ServiceEndpoints[]): void | Promise<void>;
  /**
   * Replaces the project's member addresses (every project pod, with a key or not):
   * first-use classification calls them project whatever DNS says. Optional: without it, EIO.
   */
  setMembers?(cidrs: string[]): void | Promise<void>;
  /** The DNS proxy's verdict on an address not learned through DNS. Optional: without it, EIO. */
  classifyAddress?(address: string): Promise<{ verdict: string; reason: string }>;
  /** Replaces the project's TencPolicy set as it concerns this pod (all or nothing). Optional: without it, EIO. */
  setPolicy?(policies: PodPolicy[]): void | Promise<void>;
  /**
   * Stops the pod as SIGTERM would, after the answer is sent: how the agent stops a pod
   * of a pod host (control/host.ts), whose process it must not signal. Optional: without it, EIO.
   */
  stop?(): void;
}

export interface ControlError {
  /** EINVAL (bad request), ENOENT (no such peer), EIO (the handler failed). */
  code: string;
  message: string;
}

export type ControlResponse = { id?: unknown; ok: true; result: unknown } | { id?: unknown; ok: false; error: ControlError };

/** The network namespace's inode number: the same for every process in it. */
export function netnsInode(): number {
  return statSync('/proc/self/ns/net').ino;
}

/** The socket of the pod on `ifname` in the namespace with inode `ino` (default: this process's). */
export function defaultSocketPath(ifname: string, dir = DEFAULT_SOCKET_DIR, ino = netnsInode()): string {
  return join(dir, `${ifname}-${ino}.sock`);
}

class RequestError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function onlyFields(req: Record<string, unknown>, allowed: string[]): void {
  for (const k of Object.keys(req)) {
    if (!allowed.includes(k)) throw new RequestError('EINVAL', `${k}: unknown field for op ${String(req.op)}`);
  }
}

/** Validates a request and calls the handler. Exported for tests and in-process use. */
export async function dispatch(
  handler: ControlHandler,
  addresses: { v4: string | null; v6: string | null },
  req: unknown,
): Promise<unknown> {
  if (!isObject(req)) throw new RequestError('EINVAL', 'request must be a JSON object');
  switch (req.op) {
    case 'status':
      onlyFields(req, ['id', 'op']);
      return await handler.status();
    case 'set-peer': {
      onlyFields(req, ['id', 'op', 'peer']);
      const r = validatePeer(req.peer);
      if ('problems' in r) throw new RequestError('EINVAL', r.problems.map((p) => `peer.${p.field}: ${p.problem}`).join('; '));
      const given = req.peer as Record<string, unknown>;
      const change: PeerChange = { publicKey: r.peer.publicKey };
      if (given.endpoint !== undefined) change.endpoint = r.peer.endpoint;
      if (given.allowedIps !== undefined) change.allowedIps = r.peer.allowedIps;
      if (given.persistentKeepalive !== undefined) change.persistentKeepalive = r.peer.persistentKeepalive;
      await handler.setPeer(change);
      return null;
    }
    case 'remove-peer': {
      onlyFields(req, ['id', 'op', 'publicKey']);
      const k = parseKey32(req.publicKey);
      if (!k.ok) throw new RequestError('EINVAL', `publicKey: ${k.problem}`);
      const removed = await handler.removePeer(Buffer.from(k.value).toString('base64'));
      if (!removed) throw new RequestError('ENOENT', 'publicKey: no such peer');
      return null;
    }
    case 'set-services': {
      onlyFields(req, ['id', 'op', 'services']);
      const r = validateServices(req.services, addresses);
      if ('problems' in r) throw new RequestError('EINVAL', r.problems.map((p) => `${p.field}: ${p.problem}`).join('; '));
      await handler.setServices(r.services);
      return null;
    }
    case 'rekey': {
      onlyFields(req, ['id', 'op', 'publicKey']);
      let key: string | null = null;
      if (req.publicKey !== undefined) {
        const k = parseKey32(req.publicKey);
        if (!k.ok) throw new RequestError('EINVAL', `publicKey: ${k.problem}`);
        key = Buffer.from(k.value).toString('base64');
      }
      if (!handler.rekey) throw new Error('this pod cannot rekey');
      const peers = await handler.rekey(key);
      if (key !== null && peers.length === 0) throw new RequestError('ENOENT', 'publicKey: no such peer');
      return { peers };
    }
    case 'set-endpoints': {
      onlyFields(req, ['id', 'op', 'endpoints']);
      const r = validateEndpoints(req.endpoints);
      if ('problems' in r) throw new RequestError('EINVAL', r.problems.map((p) => `${p.field}: ${p.problem}`).join('; '));
      if (!handler.setEndpoints) throw new Error('this pod runs no DNS proxy');
      await handler.setEndpoints(r.endpoints);
      return null;
    }
    case 'set-members': {
      onlyFields(req, ['id', 'op', 'members']);
      if (!Array.isArray(req.members)) throw new RequestError('EINVAL', 'members: must be an array of CIDRs');
      if (req.members.length > MAX_ALLOWED_IPS) throw new RequestError('EINVAL', `members: at most ${MAX_ALLOWED_IPS}`);
      const members: string[] = [];
      for (const [i, m] of (req.members as unknown[]).entries()) {
        const c = parseCidr(m);
        if (!c.ok) throw new RequestError('EINVAL', `members[${i}]: ${c.problem}`);
        members.push(c.value);
      }
      if (!handler.setMembers) throw new Error('this pod runs no DNS proxy');
      await handler.setMembers(members);
      return null;
    }
    case 'classify-address': {
      onlyFields(req, ['id', 'op', 'address']);
      const a = parseAddress(req.address);
      if (!a.ok) throw new RequestError('EINVAL', `address: ${a.problem}`);
      if (!handler.classifyAddress) throw new Error('this pod runs no DNS proxy');
      return await handler.classifyAddress(a.value);
    }
    case 'set-policy': {
      onlyFields(req, ['id', 'op', 'policies']);
      const r = validatePodPolicies(req.policies, (c) => {
        const p = parseCidr(c);
        return p.ok && p.value === c && /\/(32|128)$/.test(c) && (c.includes(':') ? c.endsWith('/128') : c.endsWith('/32'));
      });
      if ('problem' in r) throw new RequestError('EINVAL', `${r.field}: ${r.problem}`);
      if (!handler.setPolicy) throw new Error('this pod cannot apply policies');
      await handler.setPolicy(r.policies);
      return null;
    }
    case 'stop':
      onlyFields(req, ['id', 'op']);
      if (!handler.stop) throw new Error('this pod cannot be stopped over its socket');
      handler.stop();
      return null;
    default:
      throw new RequestError('EINVAL', `op: ${JSON.stringify(req.op)} is not one of ${CONTROL_OPS.join(', ')}`);
  }
}

export interface ControlServerOptions {
  path: string;
  handler: ControlHandler;
  /** The pod's own addresses (default localAddress of services). */
  addresses: { v4: string | null; v6: string | null };
  log?: Logger;
}

export class ControlServer {
  private readonly conns = new Set<Socket>();
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly server: Server,
    private readonly opts: ControlServerOptions,
    private readonly log: Logger,
  ) {
    server.on('connection', (s) => this.serve(s));
  }

  /** Creates the directory (0700) when missing, removes a stale socket file, listens (0600). */
  static async start(opts: ControlServerOptions): Promise<ControlServer> {
    const log = opts.log ?? silentLogger;
    const dir = dirname(opts.path);
    // Only a directory tenc creates is made 0700 (umask aside); an existing one (/tmp,
    // /run) is the administrator's and keeps its mode: the socket itself is 0600.
    const created = mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (created !== undefined) {
      for (let d = dir; d.length >= created.length; d = dirname(d)) {
        chmodSync(d, 0o700);
        if (d === created) break;
      }
    }
    await removeStale(opts.path, log);
    const server = createServer();
    await new Promise<void>((resolveP, rejectP) => {
      server.once('error', rejectP);
      server.listen(opts.path, () => {
        server.off('error', rejectP);
        resolveP();
      });
    });
    chmodSync(opts.path, 0o600);
    log.info({ socket: opts.path }, 'control socket listening');
    return new ControlServer(opts.path, server, opts, log);
  }

  private serve(sock: Socket): void {
    this.conns.add(sock);
    sock.on('close', () => this.conns.delete(sock));
    sock.on('error', () => sock.destroy());
    sock.setEncoding('utf8');
    let buf = '';
    let chain = Promise.resolve();
    let queued = 0;
    let cut = false; // this side ended the connection: what is still queued is not run
    const tooLong = () => {
      cut = true;
      sock.removeAllListeners('data');
      sock.end(JSON.stringify({ ok: false, error: { code: 'EINVAL', message: `request longer than ${MAX_REQUEST_BYTES} bytes` } }) + '\n');
      buf = '';
    };
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.length > MAX_REQUEST_BYTES && !buf.includes('\n')) return tooLong();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        if (nl > MAX_REQUEST_BYTES) return tooLong(); // each line, also one that came with its newline
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line === '') continue;
        // a client that sends without reading the answers: its requests are not queued without end
        if (++queued > MAX_QUEUED) {
          cut = true;
          sock.destroy();
          return;
        }
        // one at a time, in order; a failure to answer ends this connection, never the process
        chain = chain
          .then(() => (cut ? undefined : this.answer(sock, line)))
          .catch(() => void sock.destroy())
          .finally(() => queued--);
      }
    });
  }

  private async answer(sock: Socket, line: string): Promise<void> {
    let id: unknown;
    let resp: ControlResponse;
    try {
      let req: unknown;
      try {
        req = JSON.parse(line);
      } catch {
        throw new RequestError('EINVAL', 'request is not valid JSON');
      }
      if (isObject(req)) {
        const bad = idProblem(req.id);
        if (bad) throw new RequestError('EINVAL', bad);
        id = req.id;
      }
      const result = await dispatch(this.opts.handler, this.opts.addresses, req);
      resp = { id, ok: true, result };
      this.log.debug({ op: (req as { op: string }).op }, 'control request');
    } catch (e) {
      const code = e instanceof RequestError ? e.code : 'EIO';
      const message = (e as Error).message;
      if (code === 'EIO') this.log.error({ err: message }, 'control request failed');
      resp = { id, ok: false, error: { code, message } };
    }
    if (!sock.destroyed) sock.write(JSON.stringify(resp) + '\n');
  }

  /** Stops listening, closes connections, removes the socket file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const c of this.conns) c.destroy();
    await new Promise<void>((resolveP) => this.server.close(() => resolveP()));
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
    this.log.info({ socket: this.path }, 'control socket closed');
  }
}

/** True when a process accepts connections on the unix socket at `path`. */
export function socketIsLive(path: string): Promise<boolean> {
  return new Promise<boolean>((resolveP) => {
    const c = createConnection(path);
    c.once('connect', () => {
      c.destroy();
      resolveP(true);
    });
    c.once('error', () => resolveP(false));
  });
}

/** A socket file nobody listens on is stale and removed; a live one means another pod uses the path. */
async function removeStale(path: string, log: Logger): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`control socket path ${path} exists and is not a socket`);
  if (await socketIsLive(path)) throw new Error(`control socket ${path} is in use by a running tenc pod`);
  unlinkSync(path);
  log.warn({ socket: path }, 'removed stale control socket');
}

export { ControlClientError, controlRequest } from './client.js';
