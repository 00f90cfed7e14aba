/**
 * In-memory fakes of the TUN and UDP interfaces for tests. Nothing is delivered by itself:
 * FakeNetwork queues datagrams until deliver() is called, so a test decides when packets
 * move, can look at every datagram ever sent (log), drop or change them in flight (filter),
 * and put raw datagrams on the wire (inject) to replay or tamper.
 */
import type { Endpoint } from '../net/address.js';
import type { Tun } from './tun.js';
import { endpointKey, type Bind, type Datagram } from './bind.js';

export class FakeTun implements Tun {
  private handler: ((packets: Uint8Array[]) => void) | null = null;
  /** Every packet delivered to the local stack, in order. */
  readonly delivered: Uint8Array[] = [];
  closed = false;

  constructor(readonly mtu = 1420) {}

  onPackets(handler: (packets: Uint8Array[]) => void): void {
    this.handler = handler;
  }

  /** The local stack sends packets into the tunnel (copies them). */
  inject(packets: Uint8Array[]): void {
    if (this.closed) throw new Error('FakeTun: closed');
    if (!this.handler) throw new Error('FakeTun: no reader');
    this.handler(packets.map((p) => Uint8Array.from(p)));
  }

  write(packets: Uint8Array[]): void {
    if (this.closed) return;
    for (const p of packets) this.delivered.push(Uint8Array.from(p));
  }

  /** Takes (and forgets) what was delivered so far. */
  take(): Uint8Array[] {
    return this.delivered.splice(0, this.delivered.length);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.handler = null;
  }
}

export interface WireDatagram {
  from: Endpoint;
  to: Endpoint;
  data: Uint8Array;
}

/** What a filter does with a datagram: pass it, drop it, or pass other bytes instead. */
export type FilterVerdict = 'pass' | 'drop' | Uint8Array;

export class FakeNetwork {
  private readonly binds = new Map<string, FakeBind>();
  private queue: WireDatagram[] = [];
  /** Every datagram sent (before filtering), in order. */
  readonly log: WireDatagram[] = [];
  /** Datagrams to an address nobody is bound to, or dropped by the filter. */
  lost = 0;
  filter: ((d: WireDatagram) => FilterVerdict) | null = null;

  bind(local: Endpoint): FakeBind {
    const key = endpointKey(local);
    if (this.binds.has(key)) throw new Error(`FakeNetwork: ${key} already bound`);
    const b = new FakeBind(this, { ...local });
    this.binds.set(key, b);
    return b;
  }

  /** @internal */
  moveBind(b: FakeBind, from: Endpoint, to: Endpoint): void {
    const key = endpointKey(to);
    if (this.binds.has(key)) throw new Error(`FakeNetwork: ${key} already bound`);
    this.binds.delete(endpointKey(from));
    this.binds.set(key, b);
  }

  /** @internal */
  unbind(local: Endpoint): void {
    this.binds.delete(endpointKey(local));
  }

  /** @internal */
  enqueue(d: WireDatagram): void {
    const copy = { from: { ...d.from }, to: { ...d.to }, data: Uint8Array.from(d.data) };
    this.log.push(copy);
    this.queue.push({ ...copy, data: Uint8Array.from(copy.data) });
  }

  /** Puts raw bytes on the wire as if `from` had sent them (not filtered, logged). */
  inject(from: Endpoint, to: Endpoint, data: Uint8Array): void {
    const d = { from: { ...from }, to: { ...to }, data: Uint8Array.from(data) };
    this.log.push(d);
    this.queue.push({ ...d, data: Uint8Array.from(d.data) });
  }

  get pending(): number {
    return this.queue.length;
  }

  /**
   * Delivers queued datagrams, including those sent while delivering, until the network is
   * quiet. Returns how many were delivered. Throws if it never quiets down (a loop).
   */
  deliver(maxRounds = 1000): number {
    let n = 0;
    for (let round = 0; this.queue.length > 0; round++) {
      if (round >= maxRounds) throw new Error('FakeNetwork: traffic does not settle');
      n += this.step();
    }
    return n;
  }

  /** Delivers what is queued now (not what that causes to be sent). Returns how many. */
  step(): number {
    let n = 0;
    const batch = this.queue;
    this.queue = [];
    // Group datagrams per destination so binds see batches.
    const byDest = new Map<string, { bind: FakeBind; list: Datagram[] }>();
    for (const d of batch) {
      let data = d.data;
      if (this.filter) {
        const v = this.filter(d);
        if (v === 'drop') {
          this.lost++;
          continue;
        }
        if (v instanceof Uint8Array) data = v;
      }
      const key = endpointKey(d.to);
      const b = this.binds.get(key);
      if (!b) {
        this.lost++;
        continue;
      }
      let g = byDest.get(key);
      if (!g) byDest.set(key, (g = { bind: b, list: [] }));
      g.list.push({ data, from: d.from });
    }
    for (const { bind, list } of byDest.values()) {
      n += list.length;
      bind.receive(list);
    }
    return n;
  }
}

export class FakeBind implements Bind {
  private handler: ((d: Datagram[]) => void) | null = null;
  private closed = false;
  /** When set, send() fails for every datagram (counts as not sent). */
  failSends = false;

  constructor(
    private readonly net: FakeNetwork,
    private localEp: Endpoint,
  ) {}

  get local(): Endpoint {
    return { ...this.localEp };
  }

  /** Moves this socket to another address (the peer sees us roam). */
  rebind(to: Endpoint): void {
    this.net.moveBind(this, this.localEp, to);
    this.localEp = { ...to };
  }

  onDatagrams(handler: (d: Datagram[]) => void): void {
    this.handler = handler;
  }

  send(to: Endpoint, datagrams: Uint8Array[]): number {
    if (this.closed || this.failSends) return datagrams.length;
    for (const data of datagrams) this.net.enqueue({ from: this.local, to, data });
    return 0;
  }

  /** @internal */
  receive(list: Datagram[]): void {
    if (!this.closed && this.handler) this.handler(list);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.handler = null;
    this.net.unbind(this.localEp);
  }
}
