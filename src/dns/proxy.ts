/**
 * The DNS proxy: the sockets around the pure transforms. Per client query:
 *
 *   1. gate      header, opcode, the one question (message.ts); malformed input is
 *                dropped or answered FORMERR/NOTIMP, always counted
 *   2. upstream  over the long-lived UDP socket (client came over UDP) or the reused
 *                TCP connection (client came over TCP), ID remapped (upstream.ts);
 *                no answer in time -> SERVFAIL; too many in flight -> counted drop
 *   3. rewrite   project answers: VIP -> ready endpoints, TTL cap (rewrite.ts)
 *   4. routes    learned project addresses get their tenc0 route BEFORE the client
 *                sees the answer (a route that cannot be added -> SERVFAIL, so no
 *                first packet leaves in the clear); an answer whose addresses are all
 *                routed already waits only for their adds still in flight, not behind
 *                other route changes; expiry runs on a timer (routes.ts)
 *   5. reply     the client's ID restored; a truncated project answer goes without
 *                its records (rewrite.ts), so the client retries over TCP; a TCP
 *                client that half-closes gets its replies, then the proxy's FIN
 *
 * UDP goes through UdpBatch (udpbatch.ts, native/dnsio.c) on both sides: queries
 * arrive in batches (one recvmmsg, one JS call), and the replies and upstream
 * queries a batch produces leave with one sendmmsg per socket.
 *
 * Never throws at run time: every failure is a counted reason.
 */
import net from 'node:net';
import { addon } from '../native.js';
import { inScope, type NetnsScope } from '../io/netns.js';
import { silentLogger, type Logger } from '../log.js';
import dnsPacket from 'dns-packet';
import { QR, RCODE, recordsWellFormed, clientUdpLimit, errorReply, opcodeOf, readHeader, readQuestion, type Question } from './message.js';
import { rewriteAnswer, MalformedAnswerError, type Learned, type RewriteResult } from './rewrite.js';
import { classifyName, type CidrSet, type NamePolicy } from './classify.js';
import { LearnedRoutes, hostCidr } from './routes.js';
import { TcpUpstream, UdpUpstream, type UpstreamOptions, type UpstreamCounters } from './upstream.js';
import { UdpBatch, type UdpPeer } from './udpbatch.js';

/** Largest query accepted (a query is one question plus an OPT record). */
export const MAX_QUERY_BYTES = 4096;
/** With port 0: how many kernel-picked ports are tried before EADDRINUSE is thrown. */
const PICK_PORT_ATTEMPTS = 20;
/** Most TCP clients at once, and queries in flight per TCP client. */
const MAX_TCP_CLIENTS = 256;
const MAX_TCP_INFLIGHT = 64;
const TCP_IDLE_MS = 10_000;
/**
 * Backpressure on DNS over TCP (a client that does not read must not grow the
 * proxy's memory): reading from a client pauses while more than TCP_PAUSE_BYTES of
 * its replies are unsent; a client whose unsent replies would pass
 * TCP_CLIENT_MAX_BYTES, or all clients' together TCP_TOTAL_MAX_BYTES, is dropped
 * (counted tcp_slow_client / tcp_memory). A reply is at most 65537 bytes framed.
 */
export const TCP_PAUSE_BYTES = 16 * 1024;
export const TCP_CLIENT_MAX_BYTES = 96 * 1024;
export const TCP_TOTAL_MAX_BYTES = 8 * 1024 * 1024;
const REWRITE_CACHE_ENTRIES = 1024;
const UDP_RECV_BUFFER = 1 << 20;

export interface RouteSink {
  /** onRef: each cidr whose route reference was taken, also by a call that then fails part way. */
  add(cidrs: string[], onRef?: (cidr: string) => void): Promise<void>;
  remove(cidr: string): Promise<void>;
}

export interface DnsProxyOptions {
  /** Local addresses to listen on (UDP and TCP), e.g. 127.0.0.1 and ::1. */
  listen: string[];
  /** 0: any free port (the same one on every address). */
  port: number;
  upstream: UpstreamOptions;
  policy: NamePolicy;
  neverCidrs: CidrSet;
  /** Seconds. */
  maxTtl: number;
  endpoints: (vip: string) => readonly string[] | undefined;
  /** Routes for learned project addresses; none: nothing is routed (bench, tests). */
  routes?: { sink: RouteSink; learned: LearnedRoutes; expireEveryMs?: number };
  /** Backpressure caps of DNS over TCP (bytes; defaults TCP_PAUSE_BYTES, TCP_CLIENT_MAX_BYTES, TCP_TOTAL_MAX_BYTES). */
  tcpLimits?: { pauseBytes?: number; clientMaxBytes?: number; totalMaxBytes?: number };
  log?: Logger;
  now?: () => number;
  /** The pod's namespace in a pod host (io/netns.ts): listeners and upstream sockets are made there. */
  netns?: NetnsScope;
}

export interface DnsCounters {
  queriesUdp: number;
  queriesTcp: number;
  answered: number;
  rewritten: number;
  servfail: number;
  formerr: number;
  notimp: number;
  drops: Record<string, number>;
  routesAdded: number;
  routesRemoved: number;
  routesHeld: number;
  routeFailures: number;
  /** Bytes of replies to TCP clients not yet taken by the kernel, now and at most so far. */
  tcpBuffered: number;
  tcpBufferedPeak: number;
  upstreamUdp: UpstreamCounters;
  upstreamTcp: UpstreamCounters;
}

export class DnsProxy {
  private readonly udp: UdpBatch[] = [];
  private readonly tcp: net.Server[] = [];
  private readonly clients = new Set<net.Socket>();
  private readonly log: Logger;
  private readonly now: () => number;
  private upUdp!: UdpUpstream;
  private upTcp!: TcpUpstream;
  private expireTimer: NodeJS.Timeout | null = null;
  private routeOps: Promise<unknown> = Promise.resolve();
  /** Learned CIDRs whose route add is in flight -> that add (an answer for them waits for it, and only for it). */
  private readonly adding = new Map<string, Promise<boolean>>();
  private readonly rewriteCache = new Map<string, RewriteResult>();
  private stopped = false;
  private tcpPeak = 0;
  port = 0;
  readonly c = {
    queriesUdp: 0,
    queriesTcp: 0,
    answered: 0,
    rewritten: 0,
    servfail: 0,
    formerr: 0,
    notimp: 0,
    routesAdded: 0,
    routesRemoved: 0,
    routeFailures: 0,
  };
  readonly drops: Record<string, number> = {};

  private readonly tcpLimits: { pause: number; client: number; total: number };

  private constructor(private readonly o: DnsProxyOptions) {
    this.tcpLimits = {
      pause: o.tcpLimits?.pauseBytes ?? TCP_PAUSE_BYTES,
      client: o.tcpLimits?.clientMaxBytes ?? TCP_CLIENT_MAX_BYTES,
      total: o.tcpLimits?.totalMaxBytes ?? TCP_TOTAL_MAX_BYTES,
    };
    this.log = o.log ?? silentLogger;
    this.now = o.now ?? Date.now;
  }

  static async start(o: DnsProxyOptions): Promise<DnsProxy> {
    if (o.listen.length === 0) throw new RangeError('DnsProxy: listen on at least one address');
    const p = new DnsProxy(o);
    try {
      p.upUdp = await UdpUpstream.open(o.upstream);
      p.upTcp = new TcpUpstream(o.upstream);
      p.port = await p.listenAll(o.listen, o.port);
      if (o.routes) {
        p.expireTimer = setInterval(() => p.expireRoutes(), o.routes.expireEveryMs ?? 250);
        p.expireTimer.unref();
      }
    } catch (e) {
      await p.stop();
      throw e;
    }
    return p;
  }

  private drop(reason: string): void {
    this.drops[reason] = (this.drops[reason] ?? 0) + 1;
  }

  /**
   * UDP and TCP on every address, one port. With port 0 the kernel picks the UDP port of
   * the first address, and that number can already be taken for TCP or on another address
   * (an outgoing connection may hold it as its local port): then every listener opened so
   * far is closed and the set is tried again with a new port, a few times, before the
   * EADDRINUSE is thrown. A fixed port is tried once.
   */
  private async listenAll(addrs: string[], want: number): Promise<number> {
    for (let attempt = 1; ; attempt++) {
      let port = want;
      try {
        for (const addr of addrs) {
          port = this.listenUdp(addr, port);
          await this.listenTcp(addr, port);
        }
        return port;
      } catch (e) {
        if (want !== 0 || (e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= PICK_PORT_ATTEMPTS) throw e;
        await this.closeListeners();
        this.udp.length = 0;
        this.tcp.length = 0;
      }
    }
  }

  /** Closes every UDP and TCP listener opened so far (their counters stay readable). */
  private async closeListeners(): Promise<void> {
    for (const s of this.udp) s.close();
    await Promise.all(this.tcp.map((t) => new Promise<void>((r) => (t.listening ? t.close(() => r()) : r()))));
  }

  /** A UDP listener (bind errors throw, with the errno name as `code`); returns its port. */
  private listenUdp(addr: string, port: number): number {
    const sock: UdpBatch = inScope(
      this.o.netns,
      () =>
        new UdpBatch({
          address: addr,
          port,
          recvBufferBytes: UDP_RECV_BUFFER,
          maxDatagram: MAX_QUERY_BYTES,
          onBatch: (n) => this.onUdpBatch(sock, n),
        }),
    );
    this.udp.push(sock);
    return sock.port;
  }

  private listenTcp(addr: string, port: number): Promise<void> {
    // half-open: a client that sends its queries and then its FIN still gets the answers (ended after the last one)
    const server = net.createServer({ allowHalfOpen: true }, (s) => this.onTcpClient(s));
    server.maxConnections = MAX_TCP_CLIENTS;
    server.on('drop', () => this.drop('tcp_clients'));
    this.tcp.push(server);
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      const ready = () => {
        server.off('error', reject);
        server.on('error', () => this.drop('tcp_server_error'));
        resolve();
      };
      // in a pod host the socket is made and bound in the pod's namespace now (node's listen binds a tick later)
      if (this.o.netns) server.listen({ fd: this.o.netns.run(() => addon.sockTcpListen(addr, port) as number) }, ready);
      else server.listen(port, addr, ready);
    });
  }

  /** Step 1: the gate. Returns the question, or an immediate reply, or null (drop). */
  private gate(m: Buffer): { q: Question } | { reply: Buffer } | null {
    if (m.length > MAX_QUERY_BYTES) {
      this.drop('oversized');
      return null;
    }
    const h = readHeader(m);
    if (h === null) {
      this.drop('short');
      return null;
    }
    if ((h.flags & QR) !== 0) {
      this.drop('not_a_query');
      return null;
    }
    const q = readQuestion(m);
    if (opcodeOf(h.flags) !== 0) {
      this.c.notimp++;
      return { reply: errorReply(m, RCODE.NOTIMP, q) };
    }
    if (q === null || clientUdpLimit(m, q) === null) {
      this.c.formerr++;
      this.drop('malformed');
      return { reply: errorReply(m, RCODE.FORMERR, q) };
    }
    return { q };
  }

  /** Steps 2-4 for one valid query; `done` gets the reply to send, or null (drop). Callbacks, not promises: this is the hot path. */
  private answer(m: Buffer, q: Question, overTcp: boolean, done: (reply: Buffer | null) => void): void {
    const up = overTcp ? this.upTcp : this.upUdp;
    up.ask(m, q, (r) => {
      if (r === 'busy') {
        this.drop('busy');
        return done(null);
      }
      if (r === null) {
        this.c.servfail++;
        return done(errorReply(m, RCODE.SERVFAIL, q));
      }
      let out: Buffer = r;
      let learned: Learned[] = [];
      try {
        const rw = this.rewrite(r, q, overTcp ? 65535 : (clientUdpLimit(m, q) ?? 512));
        if (rw.message !== null) {
          out = Buffer.from(rw.message); // a copy: the cached one keeps its bytes
          out[0] = r[0];
          out[1] = r[1];
        }
        if (rw.rewritten > 0) this.c.rewritten++;
        learned = rw.learned;
      } catch (e) {
        if (!(e instanceof MalformedAnswerError)) this.log.warn({ err: (e as Error).message }, 'dns rewrite failed');
        this.drop('bad_answer');
        this.c.servfail++;
        return done(errorReply(m, RCODE.SERVFAIL, q));
      }
      if (learned.length === 0 || !this.o.routes) {
        this.c.answered++;
        return done(out);
      }
      void this.learn(learned).then((ok) => {
        if (ok) this.c.answered++;
        else this.c.servfail++;
        done(ok ? out : errorReply(m, RCODE.SERVFAIL, q));
      });
    });
  }

  /**
   * rewriteAnswer, with its results for project answers remembered by the answer's
   * bytes after the ID and the client's limit: the same upstream answer gives the same
   * result until the endpoints change (clearCache). Bounded, oldest out first.
   */
  private rewrite(r: Buffer, q: Question, limit: number): RewriteResult {
    if (classifyName(q.name, this.o.policy) !== 'project') return { verdict: 'other', message: null, learned: [], rewritten: 0 };
    const key = limit + r.toString('latin1', 2);
    const hit = this.rewriteCache.get(key);
    if (hit) return hit;
    const rw = rewriteAnswer(r, q, {
      policy: this.o.policy,
      neverCidrs: this.o.neverCidrs,
      endpoints: this.o.endpoints,
      maxTtl: this.o.maxTtl,
      limit,
    });
    if (rw.verdict === 'project' && r.length <= 1232) {
      if (this.rewriteCache.size >= REWRITE_CACHE_ENTRIES) this.rewriteCache.delete(this.rewriteCache.keys().next().value!);
      this.rewriteCache.set(key, rw);
    }
    return rw;
  }

  /**
   * The proxy's own PTR lookup (address classification) over the upstream UDP socket:
   * the names and the smallest TTL; [] when the name has none (NXDOMAIN, NOERROR
   * without PTR); null when no answer came (timeout, SERVFAIL, REFUSED, malformed).
   */
  async lookupPtr(ptr: string): Promise<{ names: string[]; ttl: number } | null> {
    const m = dnsPacket.encode({ type: 'query', id: 0, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'PTR', name: ptr, class: 'IN' }] });
    const q = readQuestion(m);
    if (q === null) return null;
    const r = await this.upUdp.query(m, q);
    if (r === null || r === 'busy' || !recordsWellFormed(r, q)) return null;
    if (r.length < 4 || (r[2] & 0x02) !== 0) return null; // truncated (TC): a partial answer is no answer
    try {
      const d = dnsPacket.decode(r) as ReturnType<typeof dnsPacket.decode> & { rcode?: string };
      const ptrs = (d.answers ?? []).filter((a) => a.type === 'PTR') as { data: string; ttl?: number }[];
      // a definitive "none" (NXDOMAIN, or NOERROR without PTR) is an answer: []; SERVFAIL, REFUSED, ...: no answer
      if (ptrs.length === 0) return d.rcode === 'NXDOMAIN' || d.rcode === 'NOERROR' ? { names: [], ttl: 0 } : null;
      return { names: ptrs.map((a) => a.data), ttl: Math.min(...ptrs.map((a) => a.ttl ?? 0)) };
    } catch {
      return null;
    }
  }

  /** Forget remembered rewrites (the endpoints changed). */
  clearCache(): void {
    this.rewriteCache.clear();
  }

  private async learn(learned: { address: string; ttl: number }[]): Promise<boolean> {
    const routes = this.o.routes!;
    const now = this.now();
    const fresh: string[] = [];
    for (const l of learned) {
      const cidr = routes.learned.learn(l.address, l.ttl, now);
      if (cidr !== null) fresh.push(cidr);
    }
    // every address of the answer routed, or no answer: one not learned because the table
    // is full, or held by another answer whose route add failed meanwhile, would go out
    // in plaintext
    const allHeld = () => learned.every((l) => routes.learned.has(l.address));
    if (fresh.length === 0) {
      // nothing to add: wait only for the adds of these addresses still in flight (another
      // answer's), not behind unrelated route changes such as a burst of expiries
      const waits = new Set<Promise<boolean>>();
      for (const l of learned) {
        const w = this.adding.get(hostCidr(l.address));
        if (w) waits.add(w);
      }
      return waits.size === 0 ? Promise.resolve(allHeld()) : Promise.all(waits).then(allHeld);
    }
    // after earlier route changes: a new address's route may be going out (expired) just now
    const op = this.routeOps.then(async () => {
      const took = new Set<string>();
      try {
        await routes.sink.add(fresh, (c) => void took.add(c));
        this.c.routesAdded += fresh.length;
      } catch (e) {
        this.c.routeFailures++;
        this.c.routesAdded += took.size;
        // a route whose reference was taken before the failure stays learned (its expiry
        // removes it); the others are forgotten, nothing to remove later
        for (const cidr of fresh) if (!took.has(cidr)) routes.learned.forget(cidr);
        this.log.error({ err: (e as Error).message, routes: fresh.length, held: took.size }, 'dns: adding learned routes failed');
      }
      return allHeld();
    });
    this.routeOps = op;
    for (const cidr of fresh) this.adding.set(cidr, op);
    void op.finally(() => {
      for (const cidr of fresh) if (this.adding.get(cidr) === op) this.adding.delete(cidr);
    });
    return op;
  }

  private expireRoutes(): void {
    const routes = this.o.routes!;
    const gone = routes.learned.expire(this.now());
    if (gone.length === 0) return;
    this.routeOps = this.routeOps.then(async () => {
      for (const cidr of gone) {
        try {
          await routes.sink.remove(cidr);
          this.c.routesRemoved++;
        } catch (e) {
          this.c.routeFailures++;
          this.log.error({ err: (e as Error).message, route: cidr }, 'dns: removing a learned route failed');
        }
      }
    });
  }

  /** One received batch: each query goes through the gate on its own (a copy: it outlives the batch). */
  private onUdpBatch(sock: UdpBatch, n: number): void {
    for (let i = 0; i < n; i++) {
      this.c.queriesUdp++;
      if (sock.truncated(i)) this.drop('oversized'); // longer than MAX_QUERY_BYTES: cut by the socket
      else this.onUdp(sock, sock.copy(i), sock.peer(i));
    }
  }

  private onUdp(sock: UdpBatch, m: Buffer, peer: UdpPeer): void {
    const send = (reply: Buffer | null) => {
      if (reply !== null && !this.stopped) sock.send(reply, peer);
    };
    try {
      const g = this.gate(m);
      if (g === null) return;
      if ('reply' in g) send(g.reply);
      else this.answer(m, g.q, false, send);
    } catch (e) {
      this.drop('internal');
      this.log.error({ err: (e as Error).message }, 'dns: udp query failed');
    }
  }

  private onTcpClient(s: net.Socket): void {
    this.clients.add(s);
    s.setNoDelay(true);
    s.setTimeout(TCP_IDLE_MS, () => s.destroy());
    let rx: Buffer = Buffer.alloc(0);
    let inflight = 0;
    let ended = false; // the client sent its FIN: our side ends once its queries are answered
    s.on('error', () => this.drop('tcp_client_error'));
    s.on('close', () => this.clients.delete(s));
    s.on('drain', () => s.resume());
    s.on('end', () => {
      ended = true;
      if (inflight === 0) s.end();
    });
    s.on('data', (d: Buffer) => {
      rx = rx.length === 0 ? d : Buffer.concat([rx, d]);
      while (rx.length >= 2) {
        const len = rx.readUInt16BE(0);
        if (len > MAX_QUERY_BYTES) {
          this.drop('oversized');
          s.destroy();
          return;
        }
        if (rx.length < 2 + len) break;
        const m = Buffer.from(rx.subarray(2, 2 + len));
        rx = rx.subarray(2 + len);
        if (inflight >= MAX_TCP_INFLIGHT) {
          this.drop('tcp_inflight');
          continue;
        }
        inflight++;
        this.c.queriesTcp++;
        let once = false;
        this.onTcpQuery(s, m, () => {
          if (once) return;
          once = true;
          inflight--;
          if (ended && inflight === 0 && !s.destroyed) s.end();
        });
      }
    });
  }

  /** Unsent reply bytes of all TCP clients. */
  tcpBuffered(): number {
    let n = 0;
    for (const c of this.clients) n += c.writableLength;
    return n;
  }

  /** Queues a framed reply unless that passes a cap (then the client is dropped); pauses reading while much is unsent. */
  private tcpWrite(s: net.Socket, frame: Buffer): void {
    if (s.writableLength + frame.length > this.tcpLimits.client) {
      this.drop('tcp_slow_client');
      s.destroy();
      return;
    }
    const total = this.tcpBuffered() + frame.length;
    if (total > this.tcpLimits.total) {
      this.drop('tcp_memory');
      s.destroy();
      return;
    }
    s.write(frame);
    if (total > this.tcpPeak) this.tcpPeak = total;
    if (s.writableLength > this.tcpLimits.pause) s.pause();
  }

  private onTcpQuery(s: net.Socket, m: Buffer, finished: () => void): void {
    const send = (reply: Buffer | null) => {
      if (reply !== null && !s.destroyed && s.writable) {
        const frame = Buffer.allocUnsafe(2 + reply.length);
        frame.writeUInt16BE(reply.length, 0);
        reply.copy(frame, 2);
        this.tcpWrite(s, frame);
      }
      finished(); // after the write: a half-closed client's side ends behind its last reply
    };
    try {
      const g = this.gate(m);
      if (g === null) return finished();
      if ('reply' in g) send(g.reply);
      else this.answer(m, g.q, true, send);
    } catch (e) {
      finished();
      this.drop('internal');
      this.log.error({ err: (e as Error).message }, 'dns: tcp query failed');
    }
  }

  counters(): DnsCounters {
    const drops: Record<string, number> = {};
    for (const [k, v] of Object.entries(this.drops)) if (v > 0) drops[k] = v;
    let sendFailed = 0; // replies the kernel refused or a full send buffer dropped
    for (const s of this.udp) {
      const c = s.counters();
      sendFailed += c.sendErrors + c.sendDropped;
    }
    if (sendFailed > 0) drops.udp_send = sendFailed;
    return {
      ...this.c,
      drops,
      routesHeld: this.o.routes?.learned.size ?? 0,
      tcpBuffered: this.tcpBuffered(),
      tcpBufferedPeak: this.tcpPeak,
      upstreamUdp: this.upUdp.snapshot(),
      upstreamTcp: this.upTcp.snapshot(),
    };
  }

  /** Closes the sockets and removes every learned route (its own references only). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.expireTimer) clearInterval(this.expireTimer);
    for (const c of this.clients) c.destroy();
    await this.closeListeners();
    this.upUdp?.close();
    this.upTcp?.close();
    const routes = this.o.routes;
    await this.routeOps.catch(() => undefined);
    if (routes) {
      for (const cidr of routes.learned.drain().reverse()) {
        try {
          await routes.sink.remove(cidr);
          this.c.routesRemoved++;
        } catch (e) {
          this.log.error({ err: (e as Error).message, route: cidr }, 'dns: removing a learned route failed');
        }
      }
    }
  }
}

