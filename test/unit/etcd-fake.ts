/**
 * A fake etcd member for unit tests of the etcd registry: a gRPC server (etcd3's own
 * rpc.proto) holding keys in memory, with what the registry uses: KV Range/Put/
 * DeleteRange, Lease Grant/Revoke/KeepAlive (no expiry by time: a test revokes or
 * expires a lease; a put under a lease gone is refused as etcd does), Maintenance
 * Status and Watch. A test can have lease grants refused (a member without quorum),
 * sees every watch create request and can answer a create with a refusal (created +
 * canceled, as etcd does for "permission denied") or send a raw response on the open
 * watch streams. No real etcd, no lock, no network beyond loopback.
 */
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);
const proto = join(dirname(require.resolve('etcd3/package.json')), 'proto', 'rpc.proto');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const pb = (grpc.loadPackageDefinition(loadSync(proto, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true })) as any).etcdserverpb;

type Stream = grpc.ServerDuplexStream<any, any>;
export interface Kv {
  key: Buffer;
  value: Buffer;
  mod_revision: string;
  create_revision: string;
  version: string;
  lease: string;
}

export class FakeEtcd {
  private readonly server = new grpc.Server();
  port = 0;
  rev = 1;
  readonly kvs = new Map<string, Kv>();
  readonly leases = new Set<string>();
  /** Every watch create request, in order (start_revision as etcd3 sent it). */
  readonly creates: { start_revision: string }[] = [];
  /** Lease RPCs seen: "grant ID", "grant refused", "revoke ID". */
  readonly leaseCalls: string[] = [];
  /** Lease grants are refused (UNAVAILABLE "etcdserver: no leader", as a member without quorum answers). */
  refuseGrants = false;
  /** The next this many watch creates are refused (created + canceled). */
  refuseCreates = 0;
  /** The next this many watch creates get no answer at all. */
  ignoreCreates = 0;
  /** Watch creates are answered this late (ms; 0: at once). */
  delayCreatesMs = 0;
  private nextLease = 100;
  private nextWatch = 1;
  private readonly watches = new Map<Stream, Set<{ id: string; key: Buffer; end: Buffer }>>();

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  private header(rev = this.rev) {
    return { cluster_id: '1', member_id: '1', revision: String(rev), raft_term: '1' };
  }

  private inRange(k: Buffer, key: Buffer, end: Buffer): boolean {
    if (end.length === 0) return k.equals(key);
    if (end.length === 1 && end[0] === 0) return Buffer.compare(k, key) >= 0;
    return Buffer.compare(k, key) >= 0 && Buffer.compare(k, end) < 0;
  }

  /** Writes a key (a new revision), telling the watches. */
  put(key: string, value: string, lease = '0'): void {
    const rev = String(++this.rev);
    const old = this.kvs.get(key);
    const kv: Kv = { key: Buffer.from(key), value: Buffer.from(value), mod_revision: rev, create_revision: old?.create_revision ?? rev, version: String(Number(old?.version ?? 0) + 1), lease };
    this.kvs.set(key, kv);
    this.notify({ type: 'PUT', kv });
  }

  delete(key: string): void {
    if (!this.kvs.delete(key)) return;
    const rev = String(++this.rev);
    this.notify({ type: 'DELETE', kv: { key: Buffer.from(key), value: Buffer.alloc(0), mod_revision: rev, create_revision: '0', version: '0', lease: '0' } });
  }

  private notify(ev: { type: string; kv: Kv }): void {
    for (const [s, ws] of this.watches) for (const w of ws) if (this.inRange(ev.kv.key, w.key, w.end)) s.write({ header: this.header(), watch_id: w.id, events: [ev] });
  }

  /** The lease expires (its TTL ran out): its keys are deleted, its keep-alives answer TTL 0. */
  expire(id: string): void {
    this.leases.delete(id);
    for (const kv of [...this.kvs.values()]) if (kv.lease === id) this.delete(kv.key.toString());
  }

  /** Sends `res` (watch_id filled in) on every open watch of every stream. */
  sendRaw(res: Record<string, unknown>): void {
    for (const [s, ws] of this.watches) for (const w of ws) s.write({ ...res, watch_id: w.id });
  }

  /** Ends every watch stream (etcd3 then opens a new one and creates its watches again). */
  breakWatches(): void {
    for (const s of [...this.watches.keys()]) {
      this.watches.delete(s);
      s.end();
    }
  }

  get openWatches(): number {
    let n = 0;
    for (const ws of this.watches.values()) n += ws.size;
    return n;
  }

  async start(): Promise<void> {
    const unary = (fn: (req: any) => unknown) => (call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) => {
      try {
        cb(null, fn(call.request));
      } catch (e) {
        cb(e as grpc.ServiceError);
      }
    };
    this.server.addService(pb.KV.service, {
      Range: unary((req) => {
        const kvs = [...this.kvs.values()].filter((kv) => this.inRange(kv.key, req.key, req.range_end)).sort((a, b) => Buffer.compare(a.key, b.key));
        return { header: this.header(), kvs, more: false, count: String(kvs.length) };
      }),
      Put: unary((req) => {
        if (req.lease !== '0' && !this.leases.has(req.lease)) throw Object.assign(new Error('etcdserver: requested lease not found'), { code: grpc.status.NOT_FOUND });
        this.put(req.key.toString(), req.value.toString(), req.lease);
        return { header: this.header() };
      }),
      DeleteRange: unary((req) => {
        const keys = [...this.kvs.values()].filter((kv) => this.inRange(kv.key, req.key, req.range_end)).map((kv) => kv.key.toString());
        for (const k of keys) this.delete(k);
        return { header: this.header(), deleted: String(keys.length) };
      }),
    });
    this.server.addService(pb.Lease.service, {
      LeaseGrant: unary((req) => {
        if (this.refuseGrants) {
          this.leaseCalls.push('grant refused');
          throw Object.assign(new Error('etcdserver: no leader'), { code: grpc.status.UNAVAILABLE });
        }
        const id = String(this.nextLease++);
        this.leases.add(id);
        this.leaseCalls.push(`grant ${id}`);
        return { header: this.header(), ID: id, TTL: req.TTL };
      }),
      LeaseRevoke: unary((req) => {
        this.leaseCalls.push(`revoke ${req.ID}`);
        this.expire(req.ID);
        return { header: this.header() };
      }),
      LeaseKeepAlive: (s: Stream) => {
        s.on('data', (req: { ID: string }) => s.write({ header: this.header(), ID: req.ID, TTL: this.leases.has(req.ID) ? '5' : '0' }));
        s.on('end', () => s.end());
        s.on('error', () => {});
      },
    });
    this.server.addService(pb.Maintenance.service, {
      Status: unary(() => ({ header: this.header(), version: '3.5.0-fake' })),
    });
    this.server.addService(pb.Watch.service, {
      Watch: (s: Stream) => {
        const ws = new Set<{ id: string; key: Buffer; end: Buffer }>();
        this.watches.set(s, ws);
        s.on('data', (req: any) => {
          if (req.create_request) {
            const c = req.create_request;
            this.creates.push({ start_revision: String(c.start_revision) });
            if (this.ignoreCreates > 0) {
              this.ignoreCreates--;
              return;
            }
            if (this.refuseCreates > 0) {
              this.refuseCreates--;
              s.write({ header: this.header(), watch_id: '-1', created: true, canceled: true, cancel_reason: 'etcdserver: permission denied' });
              return;
            }
            const answer = () => {
              if (!this.watches.has(s)) return; // the stream ended meanwhile
              const w = { id: String(this.nextWatch++), key: c.key as Buffer, end: c.range_end as Buffer };
              s.write({ header: this.header(), watch_id: w.id, created: true });
              const from = Number(c.start_revision);
              const past = [...this.kvs.values()].filter((kv) => from > 0 && Number(kv.mod_revision) >= from && this.inRange(kv.key, w.key, w.end));
              if (past.length > 0) s.write({ header: this.header(), watch_id: w.id, events: past.map((kv) => ({ type: 'PUT', kv })) });
              ws.add(w);
            };
            if (this.delayCreatesMs > 0) setTimeout(answer, this.delayCreatesMs);
            else answer();
          } else if (req.cancel_request) {
            const id = String(req.cancel_request.watch_id);
            for (const w of ws) if (w.id === id) ws.delete(w);
            s.write({ header: this.header(), watch_id: id, canceled: true });
          }
        });
        s.on('end', () => {
          this.watches.delete(s);
          s.end();
        });
        s.on('error', () => this.watches.delete(s));
        s.on('cancelled', () => this.watches.delete(s));
      },
    });
    this.port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, port) => (e ? reject(e) : resolve(port))),
    );
  }

  async stop(): Promise<void> {
    this.server.forceShutdown();
  }
}
