/**
 * The etcd client layer of the etcd registry (etcd.ts): the `etcd:ENDPOINTS[?OPTIONS]`
 * spec, an etcd3 client with TLS, auth and call deadlines, the order in which its
 * calls and streams try the endpoints (the node's own member first, failed ones
 * last), and the lease under which an agent's keys are written (kept alive on the
 * endpoint calls go to now, replaced when lost, its keys written again).
 *
 * Nothing here knows the key layout or the registry objects: etcd.ts reads and
 * watches the prefix and says which keys to publish or withdraw.
 */
import { readFileSync } from 'node:fs';
import { circuitBreaker, ConsecutiveBreaker, handleWhen } from 'cockatiel';
import { Etcd3, EtcdLeaseInvalidError, isRecoverableError, type IOptions, type Lease } from 'etcd3';

export const DEFAULT_PREFIX = '/tenc/';
/** Seconds: the keys of a dead agent vanish this long after its last keep-alive. */
export const LEASE_TTL_S = 5;
/** Backoff of the snapshot re-read after a watch error, and of lease re-grants. */
export const RETRY_MIN_MS = 100;
export const RETRY_MAX_MS = 1000;
/**
 * A unary call that takes longer fails, so the next endpoint is tried: a member that
 * lost quorum holds a write until it fails, and a partitioned one never answers. The
 * snapshot (a range of the whole prefix) gets longer.
 */
export const CALL_TIMEOUT_MS = 1500;
export const SNAPSHOT_TIMEOUT_MS = 5000;
/** How often a watch away from the first endpoint checks whether it can go back. */
export const HOME_CHECK_MS = 2000;
/**
 * An endpoint whose calls failed 3 times in a row is skipped for this long (etcd3's
 * circuit breaker per endpoint). Its default of 5 s held writes back for 4-5 s after
 * a lost quorum returned: every member's breaker had opened on the failed tries while
 * there was no leader (seen: the pod written meanwhile landed 4.3 s after the
 * election, and 5.1 s in CI).
 */
export const ENDPOINT_BREAK_MS = 1000;
/** Largest gRPC message accepted from etcd (a snapshot, a watch catch-up): clientv3's default, 2 GiB - 1. */
export const MAX_RECEIVE_BYTES = 2 ** 31 - 1;


export class EtcdSpecError extends Error {
  override name = 'EtcdSpecError';
}

export interface EtcdConnection {
  /** Client URLs: http://host:port or https://host:port. */
  endpoints: string[];
  /** Key prefix, starting and ending with "/". */
  prefix: string;
  /** TLS files (PEM): the CA that signed the members' certificates, this client's certificate and key. */
  ca?: string;
  cert?: string;
  key?: string;
  /** etcd auth user and the file holding its password (or the client certificate's CN, with client-cert-auth). */
  user?: string;
  passwordFile?: string;
  /** Lease TTL of published peers, seconds. */
  ttl: number;
}

const SPEC_OPTIONS = ['ca', 'cert', 'key', 'prefix', 'user', 'password-file', 'ttl'];

/**
 * TEXT (a registry spec, or a message that holds one) with the credentials a spec must
 * not carry masked: a URL's user info (`https://user:password@host` -> `https://***@host`;
 * with several endpoints, all up to the last such host) and the value of a password
 * option (`password=...`). For every log line and message that shows a spec: such a spec
 * is refused, but not before it was shown.
 */
export function redactCredentials(text: string): string {
  // up to the last "@" before a query, fragment or blank: a password may hold "@", "," and "/"
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/)[^?#\s]*@/gi, '$1***@').replace(/([?&]password=)[^&\s]*/gi, '$1***');
}

/**
 * Parses the part after `etcd:`: ENDPOINTS[?ca=FILE&cert=FILE&key=FILE&prefix=/tenc/&user=NAME&password-file=FILE&ttl=S]
 * with ENDPOINTS comma-separated URLs. Errors name the part that is wrong.
 */
export function parseEtcdSpec(rest: string): EtcdConnection {
  const q = rest.indexOf('?');
  const list = q < 0 ? rest : rest.slice(0, q);
  const hosts = list.split(',').filter((h) => h !== '');
  const params = new URLSearchParams(q < 0 ? '' : rest.slice(q + 1));
  // user info (https://USER:PASSWORD@HOST): refused without showing any endpoint, as a
  // password in it may hold ",", "/" or "?" (it would reach logs, messages and ps)
  if (list.includes('@') || [...params.keys()].some((k) => k.includes('@'))) {
    throw new EtcdSpecError('etcd: an endpoint has a user or password in its URL (not shown): give the user as user=NAME and the password in a file, password-file=FILE');
  }
  if (hosts.length === 0) throw new EtcdSpecError('etcd: needs at least one endpoint (etcd:https://HOST:2379,...)');
  for (const k of params.keys()) if (!SPEC_OPTIONS.includes(k)) throw new EtcdSpecError(`etcd: unknown option "${k}" (known: ${SPEC_OPTIONS.join(', ')})`);
  const endpoints = hosts.map((h) => {
    let u: URL;
    try {
      u = new URL(h);
    } catch {
      throw new EtcdSpecError(`etcd: endpoint "${h}" is not a URL (http://HOST:PORT or https://HOST:PORT)`);
    }
    if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.port === '' || (u.pathname !== '/' && u.pathname !== '') || u.search) {
      throw new EtcdSpecError(`etcd: endpoint "${h}" must be http(s)://HOST:PORT`);
    }
    return `${u.protocol}//${u.host}`;
  });
  const tls = endpoints.filter((e) => e.startsWith('https:')).length;
  if (tls !== 0 && tls !== endpoints.length) throw new EtcdSpecError('etcd: endpoints mix http and https');
  const c: EtcdConnection = { endpoints, prefix: params.get('prefix') ?? DEFAULT_PREFIX, ttl: LEASE_TTL_S };
  if (!/^\/([-a-zA-Z0-9_.]+\/)*$/.test(c.prefix)) throw new EtcdSpecError(`etcd: prefix "${c.prefix}" must start and end with "/" (e.g. /tenc/)`);
  for (const [opt, field] of [['ca', 'ca'], ['cert', 'cert'], ['key', 'key'], ['user', 'user'], ['password-file', 'passwordFile']] as const) {
    const v = params.get(opt);
    if (v === null) continue;
    if (v === '') throw new EtcdSpecError(`etcd: option ${opt} is empty`);
    c[field] = v;
  }
  if ((c.cert === undefined) !== (c.key === undefined)) throw new EtcdSpecError('etcd: cert and key go together');
  if ((c.ca || c.cert) && tls === 0) throw new EtcdSpecError('etcd: TLS files given but the endpoints are http://');
  if ((c.user === undefined) !== (c.passwordFile === undefined)) throw new EtcdSpecError('etcd: user and password-file go together');
  if (c.user && tls === 0 && !endpoints.every((e) => /^http:\/\/(127\.|\[::1\]|localhost)/.test(e))) {
    throw new EtcdSpecError('etcd: a password is not sent over http:// to another host (use https:// endpoints with ca=)');
  }
  const ttl = params.get('ttl');
  if (ttl !== null) {
    if (!/^[0-9]+$/.test(ttl) || Number(ttl) < 2 || Number(ttl) > 600) throw new EtcdSpecError(`etcd: ttl "${ttl}" must be 2..600 seconds`);
    c.ttl = Number(ttl);
  }
  return c;
}

function readFile(what: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new EtcdSpecError(`etcd: cannot read the ${what} file ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/**
 * An etcd3 client for the connection: TLS and auth as given, unary calls time out
 * after `callTimeoutMs` (a writer that retries anyway uses a shorter one).
 */
export function etcdClient(c: EtcdConnection, callTimeoutMs = CALL_TIMEOUT_MS): Etcd3 {
  const o: IOptions = {
    hosts: c.endpoints,
    dialTimeout: CALL_TIMEOUT_MS,
    // a member that vanished without a reset (host down, partition) is noticed by
    // HTTP/2 pings, so the watch moves to another endpoint (etcd allows one per 5 s)
    // and no 4 MiB cap on what etcd sends (gRPC's default): the snapshot is one range of
    // the whole prefix and a watch catch-up sends up to 1000 revisions at once, so a
    // cluster of a few thousand pods was refused (RESOURCE_EXHAUSTED) and the agent
    // learnt nothing; etcd's own client (clientv3) allows math.MaxInt32 too
    grpcOptions: {
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5000,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.max_receive_message_length': MAX_RECEIVE_BYTES,
    },
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
    faultHandling: { host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: ENDPOINT_BREAK_MS, breaker: new ConsecutiveBreaker(3) }) },
  };
  if (c.ca || c.cert) {
    o.credentials = {
      rootCertificate: c.ca ? readFile('ca', c.ca) : (undefined as unknown as Buffer),
      ...(c.cert ? { certChain: readFile('cert', c.cert), privateKey: readFile('key', c.key!) } : {}),
    };
  }
  if (c.user) o.auth = { username: c.user, password: readFile('password', c.passwordFile!).toString('utf8').trim() };
  const client = new Etcd3(o);
  orders.set(client, inOrder(client));
  return client;
}

/** An endpoint whose call or stream failed is tried after the others for this long. */
const FAILED_ENDPOINT_MS = 5000;

/**
 * etcd3 spreads calls and streams over the endpoints at random. A node's agent should
 * use its own member (the spec lists it first) and go to the others only when it
 * fails: with a random one, a partition of a third node leaves the agents of the two
 * healthy nodes with their watch or lease stream on the cut-off member, where it
 * stalls silently until HTTP/2 pings notice (15 s), their leases expire meanwhile and
 * the pods of healthy nodes lose their peers. So every call and stream starts at the
 * first endpoint that has not failed in the last FAILED_ENDPOINT_MS (a refused
 * connection, a deadline, a stream error), then the next ones; the failed ones come
 * last. (etcd3's own circuit breaker does not count the errors of streams, so a watch
 * would go back to a dead first member for ever.)
 */
export type Host = { resetAllServices: () => void };

/** Where a client's calls go: the first endpoint, and the one used now. */
export interface EndpointOrder {
  /** The spec's first endpoint (the node's own member). */
  readonly primary: Host;
  /** The endpoint the next call or stream goes to. */
  current(): Host;
  /** Did the endpoint fail in the last FAILED_ENDPOINT_MS? */
  failed(h: Host): boolean;
  /** Marks an endpoint failed (a call to it timed out). */
  fail(h: Host): void;
}

const orders = new WeakMap<Etcd3, EndpointOrder>();

/** The endpoint order of a client made by etcdClient(). */
export function endpointOrder(client: Etcd3): EndpointOrder {
  const o = orders.get(client);
  if (!o) throw new Error('etcd: client not made by etcdClient(): its endpoints are not ordered');
  return o;
}

function inOrder(client: Etcd3): EndpointOrder {
  const pool = (client as unknown as { pool: { hosts: Host[]; shuffledHosts: () => Generator<Host>; markFailed: (h: Host, e: Error) => void } }).pool;
  if (!Array.isArray(pool?.hosts) || typeof pool.shuffledHosts !== 'function' || typeof pool.markFailed !== 'function') {
    throw new Error('etcd3: connection pool not as expected (etcd3 upgraded?): cannot order the endpoints');
  }
  const failedAt = new Map<Host, number>();
  const markFailed = pool.markFailed.bind(pool);
  pool.markFailed = (h, e) => {
    failedAt.set(h, Date.now());
    markFailed(h, e);
  };
  for (const h of pool.hosts) {
    // called by etcd3 when a unary call on the host failed in a way worth another host
    const reset = h.resetAllServices.bind(h);
    h.resetAllServices = () => {
      failedAt.set(h, Date.now());
      reset();
    };
  }
  const failed = (h: Host) => Date.now() - (failedAt.get(h) ?? -Infinity) < FAILED_ENDPOINT_MS;
  const order = () => [...pool.hosts.filter((h) => !failed(h)), ...pool.hosts.filter(failed)];
  pool.shuffledHosts = function* () {
    for (;;) yield* order();
  };
  return {
    primary: pool.hosts[0],
    current: () => order()[0],
    failed,
    fail: (h) => failedAt.set(h, Date.now()),
  };
}

/**
 * The keys an agent publishes, written under one lease of this client (TTL a few
 * seconds, kept alive), so they vanish by themselves when the agent dies. A lease
 * that is lost (expired while etcd was unreachable) is replaced and every key is
 * written again under the new one.
 *
 * A lease is lost once: counted (onLost) and logged when a granted lease is found
 * expired. A grant that fails is no lost lease, though etcd3 emits 'lost' for it too
 * (Lease's constructor: a failed LeaseGrant calls emitLoss): a first grant's error goes
 * to put()'s caller, and the round that writes the keys again after a loss retries
 * with backoff, logging its first failure and, once it worked, how long it took.
 */
export class LeasedKeys {
  private lease: Promise<Lease> | null = null;
  private republishing = false;
  /** The round of writing every key again after a loss: since when, attempts, next backoff. */
  private round: { since: number; attempts: number; delay: number } | null = null;
  /** The round's next attempt (backoff after a failed one). */
  private retry: NodeJS.Timeout | null = null;
  private closed = false;
  /** What this agent published (full key -> value), written again under a new lease. */
  private readonly owned = new Map<string, string>();

  constructor(
    private readonly client: Etcd3,
    private readonly ttl: number,
    private readonly onEvent: (what: string, detail: Record<string, unknown>) => void,
    /** Called when a lease was lost (before its keys are written again). */
    private readonly onLost: () => void,
  ) {}

  private get order(): EndpointOrder {
    return endpointOrder(this.client);
  }

  /** Writes the key under the lease (granted first if there is none). */
  async put(key: string, value: string): Promise<void> {
    this.owned.set(key, value);
    // a grant started while etcd had no quorum may fail just after it is back: one
    // more (fresh) grant then, rather than the agent's next reconcile a second later
    const lease = await this.getLease().catch(() => this.getLease());
    await lease.put(key).value(value).exec();
  }

  /**
   * Deletes the key; when etcd cannot be reached it is deleted later (retried with
   * backoff until it works or this agent publishes it again), so a pod removed during
   * an outage leaves no key behind. Resolves after the first attempt.
   */
  async delete(key: string): Promise<void> {
    this.owned.delete(key);
    const attempt = (delay: number): Promise<void> =>
      this.client
        .delete()
        .key(key)
        .exec()
        .then(
          () => {},
          (e) => {
            if (this.closed || this.owned.has(key)) return;
            if (delay === RETRY_MIN_MS) this.onEvent('withdraw failed: retrying', { key, err: (e as Error).message });
            setTimeout(() => void attempt(Math.min(delay * 2, RETRY_MAX_MS)), delay).unref();
          },
        );
    await attempt(RETRY_MIN_MS);
  }

  private getLease(): Promise<Lease> {
    if (this.closed) return Promise.reject(new Error('registry closed'));
    if (!this.lease) {
      // kept alive here, one short stream per keep-alive (keepLease), not by etcd3's one
      // long stream: a long stream stays on the endpoint it was opened on
      const l = this.client.lease(this.ttl, { autoKeepAlive: false });
      let granted = false;
      const p: Promise<Lease> = l.grant().then(
        () => {
          granted = true;
          this.keepLease(l, p);
          return l;
        },
        (e) => {
          if (this.lease === p) this.lease = null;
          l.release();
          throw e;
        },
      );
      this.lease = p;
      l.on('lost', (e) => {
        // a failed grant emits 'lost' too (before grant() rejects): no lease was lost,
        // its error goes to the caller (put(), or the republish round that retries)
        if (!granted || this.lease !== p || this.closed) return;
        this.lease = null;
        this.onLost();
        this.onEvent('lease lost: publishing again under a new one', { err: (e as Error).message, keys: this.owned.size });
        this.republish();
      });
    }
    return this.lease;
  }

  /**
   * Keeps the lease alive: a keep-alive every TTL/3 on the endpoint calls go to now
   * (the node's own member while it answers), each with its own deadline; one that
   * fails marks its endpoint failed and is tried again at once on the next. etcd
   * answering that the lease expired fires 'lost' (getLease: a new lease, everything
   * published again). While no keep-alive gets through (no quorum, this node cut off)
   * the lease is kept trying: etcd extends leases when a leader is elected again.
   */
  private keepLease(l: Lease, p: Promise<Lease>): void {
    const tick = () => {
      if (this.lease !== p || this.closed || l.revoked()) return;
      const on = this.order.current();
      l.keepaliveOnce({ deadline: Date.now() + CALL_TIMEOUT_MS }).then(
        () => setTimeout(tick, (this.ttl * 1000) / 3).unref(),
        (e) => {
          if (e instanceof EtcdLeaseInvalidError) return; // 'lost' was emitted
          this.order.fail(on);
          setTimeout(tick, RETRY_MIN_MS).unref();
        },
      );
    };
    setTimeout(tick, (this.ttl * 1000) / 3).unref();
  }

  /**
   * Writes every owned key under a (new) lease, retrying with backoff (RETRY_MIN_MS
   * doubling up to RETRY_MAX_MS) until it works. One round from the loss to success:
   * its first failure is logged, the others not (etcd still unreachable: one a
   * second), and a success after failures says how many attempts it took. A lease
   * lost during the backoff starts the next attempt at once.
   */
  private republish(): void {
    if (this.republishing || this.closed) return;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    this.republishing = true;
    const round = (this.round ??= { since: Date.now(), attempts: 0, delay: RETRY_MIN_MS });
    round.attempts++;
    const run = async () => {
      const lease = await this.getLease();
      // all at once: one after the other, each a raft round trip, took 0.35 s a key under load
      const keys = [...this.owned];
      await Promise.all(keys.map(([k, v]) => lease.put(k).value(v).exec()));
      // withdrawn meanwhile: its delete may have landed before the put
      for (const [k] of keys) if (!this.owned.has(k)) void this.delete(k);
      return keys.length;
    };
    run().then(
      (keys) => {
        this.republishing = false;
        this.round = null;
        if (round.attempts > 1) this.onEvent('published again under a new lease', { keys, attempts: round.attempts, ms: Date.now() - round.since });
      },
      (e) => {
        this.republishing = false;
        if (this.closed) return;
        if (round.attempts === 1) this.onEvent('publishing again failed: retrying', { err: (e as Error).message });
        const delay = round.delay;
        round.delay = Math.min(delay * 2, RETRY_MAX_MS);
        this.retry = setTimeout(() => {
          this.retry = null;
          this.republish();
        }, delay).unref();
      },
    );
  }

  /**
   * Stops keeping the lease alive, never revokes it: the keys stay published until the
   * lease's TTL runs out (an agent that stops leaves its proxies running with their keys
   * published; the next agent adopts them and publishes again under a lease of its own),
   * and vanish by themselves if no agent comes back. Nothing is written after.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    const lease = this.lease;
    this.lease = null;
    // release() only stops etcd3's side (no call to etcd); the keep-alive timer ends at its
    // next tick (closed)
    if (lease) await lease.then((l) => l.release()).catch(() => {});
  }
}
