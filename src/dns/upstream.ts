/**
 * The proxy's long-lived connections to the real cluster DNS, outside the tunnel:
 * both carry tenc's fwmark (SO_MARK through native/dnsio.c and native/sock.c), so
 * they skip tenc's policy rule and the nftables redirect of port 53.
 *
 *   UdpUpstream  connected UdpBatch sockets per server (queries of one batch leave
 *                with one sendmmsg, answers arrive in batches); each query leaves
 *                from a socket picked at random from a pool (portPool, default 16),
 *                and a socket is replaced by a fresh one (a new random source port
 *                from the kernel) after queriesPerPort (default 8) queries: an
 *                off-path spoofer must guess the port as well as the 16-bit ID
 *                (RFC 5452 9.2/10). A retired socket closes when its queries are
 *                answered or timed out. A query gets a fresh random ID not in
 *                flight; an answer is accepted only on the socket its query left
 *                from, when its ID is in flight AND its question equals the
 *                query's (else counted)
 *   TcpUpstream  one connection per server, reused: queries are pipelined with the
 *                same ID remapping, answers may arrive in any order (RFC 7766 6.2.1);
 *                reconnects on demand and resends what was unanswered once. A
 *                connection on which nothing arrived since a query that timed out
 *                was sent is taken for dead (a path that drops everything, no FIN
 *                or RST) and closed, so the next query opens a new one; a connect
 *                that does not finish within timeoutMs is given up; keepalive on
 *
 * A query not answered within timeoutMs resolves null (the proxy answers
 * SERVFAIL); a server that timed out is skipped for the next queries while
 * another one is configured. In-flight queries are bounded (maxInflight): beyond
 * that query() resolves 'busy' at once.
 */
import net from 'node:net';
import { inScope, type NetnsScope } from '../io/netns.js';
import { randomFillSync } from 'node:crypto';
import { addon } from '../native.js';
import { readHeader, readQuestion, sameQuestion, setId, QR, type Question } from './message.js';
import { UdpBatch, type UdpBatchOptions } from './udpbatch.js';

export interface UpstreamServer {
  address: string;
  port: number;
}

export interface UpstreamCounters {
  sent: number;
  answered: number;
  timeouts: number;
  /** Answers whose ID is not in flight or whose question differs. */
  mismatched: number;
  /** Answers that are not DNS messages. */
  malformed: number;
  busy: number;
  errors: number;
  reconnects: number;
}

export interface UpstreamOptions {
  servers: UpstreamServer[];
  /** SO_MARK of the upstream sockets (0: none, for tests on loopback). */
  mark: number;
  timeoutMs: number;
  maxInflight: number;
  /** UDP sockets (source ports) per server queries are spread over at random (default 16). */
  portPool?: number;
  /** Queries a UDP socket sends before a fresh one (a new port) replaces it (default 8; 1: a port per query). */
  queriesPerPort?: number;
  /** The pod's namespace in a pod host (io/netns.ts): every upstream socket is made there. */
  netns?: NetnsScope;
}

export type UpstreamResult = Buffer | null | 'busy';

interface Pending {
  q: Question;
  clientId: number;
  deadline: number;
  server: number;
  msg: Buffer;
  resolve: (r: UpstreamResult) => void;
  resent?: boolean;
  /** The UDP socket the query left from (only its answers count). */
  sock?: PortSocket;
  /** The TCP connection the query was written to, and how many messages had arrived on it then. */
  conn?: net.Socket;
  rxAtSend?: number;
}

interface PortSocket {
  sock: UdpBatch;
  server: number;
  /** Queries sent from it, and of those not yet answered or timed out. */
  used: number;
  inflight: number;
  retired: boolean;
  closed: boolean;
}

function newCounters(): UpstreamCounters {
  return { sent: 0, answered: 0, timeouts: 0, mismatched: 0, malformed: 0, busy: 0, errors: 0, reconnects: 0 };
}

/** Random 16-bit IDs from the CSPRNG, drawn 4096 at a time (one call per 4096 queries). */
const idPool = new Uint16Array(4096);
let idNext = idPool.length;

/** Picks an ID not in `pending`; random so answers cannot be guessed (RFC 5452 9.2). */
function freeId(pending: Map<number, Pending>): number {
  for (;;) {
    if (idNext === idPool.length) {
      randomFillSync(idPool);
      idNext = 0;
    }
    const id = idPool[idNext++];
    if (!pending.has(id)) return id;
  }
}

abstract class Base {
  readonly counters = newCounters();
  protected readonly pending = new Map<number, Pending>();
  protected current = 0;
  private sweeper: NodeJS.Timeout;
  protected closed = false;

  constructor(protected readonly o: UpstreamOptions) {
    if (o.servers.length === 0) throw new RangeError('upstream: at least one server');
    this.sweeper = setInterval(() => this.sweep(Date.now()), Math.max(20, Math.min(250, o.timeoutMs / 4)));
    this.sweeper.unref();
  }

  /** A copy of the counters. */
  snapshot(): UpstreamCounters {
    return { ...this.counters };
  }

  get inflight(): number {
    return this.pending.size;
  }

  /** Sends `query` (its ID is replaced on the wire); resolves the answer with the client's ID restored. */
  query(query: Uint8Array, q: Question): Promise<UpstreamResult> {
    return new Promise((resolve) => this.ask(query, q, resolve));
  }

  /** query() with a callback (the proxy's hot path): called exactly once. */
  ask(query: Uint8Array, q: Question, done: (r: UpstreamResult) => void): void {
    if (this.closed) return done(null);
    if (this.pending.size >= this.o.maxInflight) {
      this.counters.busy++;
      return done('busy');
    }
    const id = freeId(this.pending);
    const msg = Buffer.from(query);
    const clientId = (msg[0] << 8) | msg[1];
    setId(msg, id);
    const p: Pending = { q, clientId, deadline: Date.now() + this.o.timeoutMs, server: this.current, msg, resolve: done };
    this.pending.set(id, p);
    this.counters.sent++;
    this.send(id, p);
  }

  protected abstract send(id: number, p: Pending): void;

  /** Matches an answer to its query: ID in flight, QR set, same question (and, over UDP, the socket it left from). */
  protected onAnswer(buf: Buffer, from?: PortSocket): void {
    const h = readHeader(buf);
    if (h === null || (h.flags & QR) === 0) {
      this.counters.malformed++;
      return;
    }
    const p = this.pending.get(h.id);
    const q = readQuestion(buf);
    if (!p || q === null || !sameQuestion(p.q, q) || p.sock !== from) {
      this.counters.mismatched++;
      return;
    }
    this.pending.delete(h.id);
    this.settled(p);
    this.counters.answered++;
    setId(buf, p.clientId);
    p.resolve(buf);
  }

  protected fail(id: number, p: Pending): void {
    if (this.pending.get(id) !== p) return;
    this.pending.delete(id);
    this.settled(p);
    p.resolve(null);
  }

  /** A query left the pending set (answered or failed). */
  protected settled(_p: Pending): void {}

  /** A query got no answer in time (already failed). */
  protected timedOut(_p: Pending): void {}

  private sweep(now: number): void {
    // insertion order = deadline order (one timeout for all)
    for (const [id, p] of this.pending) {
      if (p.deadline > now) break;
      this.counters.timeouts++;
      if (p.server === this.current && this.o.servers.length > 1) this.current = (this.current + 1) % this.o.servers.length;
      this.fail(id, p);
      this.timedOut(p);
    }
  }

  close(): void {
    this.closed = true;
    clearInterval(this.sweeper);
    for (const [id, p] of this.pending) this.fail(id, p);
  }
}

export class UdpUpstream extends Base {
  /** Per server: the live sockets queries are spread over. */
  private readonly pools: PortSocket[][] = [];
  /** Retired sockets still waiting for answers. */
  private readonly retired = new Set<PortSocket>();
  private readonly poolSize: number;
  private readonly perPort: number;
  /** Counters of sockets already closed (snapshot() adds the live ones'). */
  private closedErrors = 0;
  /** Sockets opened (the first pools included). */
  portsOpened = 0;

  private constructor(o: UpstreamOptions) {
    super(o);
    this.poolSize = o.portPool ?? 16;
    this.perPort = o.queriesPerPort ?? 8;
    if (!Number.isInteger(this.poolSize) || this.poolSize < 1) throw new RangeError('upstream: portPool must be >= 1');
    if (!Number.isInteger(this.perPort) || this.perPort < 1) throw new RangeError('upstream: queriesPerPort must be >= 1');
  }

  static async open(o: UpstreamOptions): Promise<UdpUpstream> {
    const u = new UdpUpstream(o);
    try {
      for (let server = 0; server < o.servers.length; server++) {
        const pool: PortSocket[] = [];
        u.pools.push(pool);
        for (let i = 0; i < u.poolSize; i++) pool.push(u.openPort(server));
      }
    } catch (e) {
      u.close();
      throw e;
    }
    return u;
  }

  /** A new connected socket to a server, on a port the kernel picks (random for UDP). */
  private openPort(server: number): PortSocket {
    const s = this.o.servers[server];
    const ps: PortSocket = { sock: null as unknown as UdpBatch, server, used: 0, inflight: 0, retired: false, closed: false };
    const opts: UdpBatchOptions = {
      address: s.address.includes(':') ? '::' : '0.0.0.0',
      connect: s,
      mark: this.o.mark, // set before connect: the route is chosen with the mark
      recvBufferBytes: 1 << 18,
      maxDatagram: 65536, // any UDP answer whole (pages of the slab are touched only as used)
      batch: 8,
      sendQueue: 32,
      onBatch: (n) => {
        for (let i = 0; i < n && !ps.closed; i++) this.onAnswer(ps.sock.copy(i), ps);
      },
    };
    ps.sock = inScope(this.o.netns, () => new UdpBatch(opts));
    this.portsOpened++;
    return ps;
  }

  /** The source ports in use now (tests). */
  ports(): number[] {
    return [...this.pools.flat(), ...this.retired].map((p) => p.sock.port);
  }

  /** errors adds the sockets' own: ICMP unreachable (server down; the timeout answers the client) and failed sends. */
  override snapshot(): UpstreamCounters {
    const c = super.snapshot();
    c.errors += this.closedErrors;
    for (const p of [...this.pools.flat(), ...this.retired]) c.errors += errorsOf(p.sock);
    return c;
  }

  protected send(_id: number, p: Pending): void {
    const pool = this.pools[p.server];
    const i = randomIndex(pool.length);
    const ps = pool[i];
    p.sock = ps;
    ps.used++;
    ps.inflight++;
    ps.sock.send(p.msg); // failures are counted by the socket
    if (ps.used >= this.perPort) {
      // retire it: answers still count on it until they are in; the next query gets a new port
      ps.retired = true;
      this.retired.add(ps);
      try {
        pool[i] = this.openPort(p.server);
      } catch {
        // no new socket (out of descriptors): this one carries on (counted)
        this.counters.errors++;
        ps.retired = false;
        ps.used = 0;
        this.retired.delete(ps);
      }
    }
  }

  protected override settled(p: Pending): void {
    const ps = p.sock;
    if (!ps) return;
    ps.inflight--;
    if (ps.retired && ps.inflight === 0 && !this.closed) setImmediate(() => this.closePort(ps)); // not inside its own receive callback
  }

  private closePort(ps: PortSocket): void {
    if (ps.closed) return;
    ps.closed = true;
    this.retired.delete(ps);
    this.closedErrors += errorsOf(ps.sock);
    ps.sock.close();
  }

  override close(): void {
    super.close();
    for (const ps of [...this.pools.flat(), ...this.retired]) this.closePort(ps);
    this.pools.length = 0;
    this.retired.clear();
  }
}

function errorsOf(s: UdpBatch): number {
  const k = s.counters();
  return k.socketErrors + k.recvErrors + k.sendErrors + k.sendDropped;
}

/** Random indexes from the CSPRNG, drawn 1024 at a time. */
const pickPool = new Uint32Array(1024);
let pickNext = pickPool.length;
function randomIndex(n: number): number {
  if (n === 1) return 0;
  if (pickNext === pickPool.length) {
    randomFillSync(pickPool);
    pickNext = 0;
  }
  return pickPool[pickNext++] % n;
}

/** Most bytes buffered from the upstream TCP stream before a message completes. */
const TCP_MAX_BUFFER = 65537 * 2;

/** Idle time (ms) before TCP keepalive probes start on an upstream connection. */
const TCP_KEEPALIVE_MS = 15_000;

export class TcpUpstream extends Base {
  private conn: net.Socket | null = null;
  private connServer = -1;
  private rx: Buffer = Buffer.alloc(0);
  /** Messages received on the current connection. */
  private rxCount = 0;
  /** Connections closed because a query timed out with nothing received (tests). */
  deadConnections = 0;

  constructor(o: UpstreamOptions) {
    super(o);
  }

  private connect(server: number): net.Socket {
    const s = this.o.servers[server];
    const fam = s.address.includes(':') ? 6 : 4;
    // a marked socket, or one made in a pod host's pod namespace, is made natively (node's would be unmarked, and in the host's namespace)
    const sock =
      this.o.mark !== 0 || this.o.netns
        ? new net.Socket({ fd: inScope(this.o.netns, () => addon.sockTcpMarked(fam, this.o.mark) as number), readable: true, writable: true })
        : new net.Socket();
    sock.setNoDelay(true);
    sock.setKeepAlive(true, TCP_KEEPALIVE_MS);
    // a connect that never completes (SYNs dropped) is given up; the queries on it are resent once
    sock.setTimeout(Math.max(1, this.o.timeoutMs), () => sock.destroy());
    sock.once('connect', () => sock.setTimeout(0));
    sock.connect(s.port, s.address);
    this.rx = Buffer.alloc(0);
    this.rxCount = 0;
    sock.on('data', (d: Buffer) => {
      if (this.conn !== sock) return;
      this.rx = this.rx.length === 0 ? d : Buffer.concat([this.rx, d]);
      this.rxCount++;
      while (this.rx.length >= 2) {
        const len = this.rx.readUInt16BE(0);
        if (this.rx.length < 2 + len) break;
        const msg = Buffer.from(this.rx.subarray(2, 2 + len));
        this.rx = this.rx.subarray(2 + len);
        this.onAnswer(msg);
      }
      if (this.rx.length > TCP_MAX_BUFFER) sock.destroy();
    });
    sock.on('error', () => void this.counters.errors++);
    sock.on('close', () => {
      if (this.conn === sock) this.conn = null;
      // resend once what this connection left unanswered; fail what was already resent
      // (not when a live connection to another server replaced it: a resend would close that one)
      const displaced = this.conn !== null && !this.conn.destroyed && this.connServer !== server;
      for (const [id, p] of this.pending) {
        if (p.conn !== sock) continue;
        if (p.resent || this.closed || displaced) this.fail(id, p);
        else {
          p.resent = true;
          this.counters.reconnects++;
          this.send(id, p);
        }
      }
    });
    this.conn = sock;
    this.connServer = server;
    return sock;
  }

  protected send(id: number, p: Pending): void {
    if (this.conn === null || this.connServer !== p.server || this.conn.destroyed) {
      this.conn?.destroy();
      this.conn = null;
      try {
        this.connect(p.server);
      } catch {
        // no socket (out of descriptors, the pod's namespace closed): this query fails
        // (counted); a throw here would end the proxy (in a pod host, every pod of it)
        this.counters.errors++;
        this.fail(id, p);
        return;
      }
    }
    const frame = Buffer.allocUnsafe(2 + p.msg.length);
    frame.writeUInt16BE(p.msg.length, 0);
    p.msg.copy(frame, 2);
    p.conn = this.conn!;
    p.rxAtSend = this.rxCount;
    this.conn!.write(frame);
  }

  /**
   * Nothing arrived on the connection since this query was sent: a dead path (no FIN
   * or RST; the kernel would retransmit for ~15 min). Closed, so the next query opens
   * a new connection; the queries still on it are resent there once.
   */
  protected override timedOut(p: Pending): void {
    if (p.conn === undefined || p.conn !== this.conn || p.conn.destroyed || this.rxCount !== p.rxAtSend) return;
    this.deadConnections++;
    this.conn.destroy();
  }

  override close(): void {
    super.close();
    this.conn?.destroy();
    this.conn = null;
  }
}
