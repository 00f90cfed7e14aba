/**
 * A batched UDP socket for the DNS proxy's hot path (native/dnsio.c does the I/O;
 * names match one to one). Node's dgram makes one system call and one JS callback
 * per datagram in each direction; here:
 *
 *   receive  the socket is watched on node's own loop and drained with recvmmsg
 *            into this object's slab; onBatch(count) runs once per batch, and
 *            size(i) / view(i) / copy(i) / peer(i) read datagram i during it
 *   send     send(data, to) copies the datagram into the send slab; the queue
 *            goes out with one sendmmsg per batch, flushed in a microtask (after
 *            the current callback: once per receive batch or timer), or at once
 *            when the queue is full
 *
 * Nothing throws per datagram: failures are counted (counters()), and a datagram
 * longer than maxDatagram arrives cut to maxDatagram with truncated(i) true.
 * Wrong argument types throw TypeError, out-of-range values RangeError, system
 * errors at open an Error whose `code` is the errno name.
 */
import { addon } from '../native.js';

interface Layout {
  metaWords: number;
  txMetaWords: number;
  maxSlots: number;
  stats: Record<keyof UdpBatchCounters, number>;
}
const layout: Layout = addon.dnsioLayout();
const MW = layout.metaWords;
const TW = layout.txMetaWords;

/** Largest UDP payload (IPv4: 65535 - 20 - 8). */
export const MAX_UDP_PAYLOAD = 65507;

export interface UdpBatchCounters {
  received: number;
  /** Datagrams longer than maxDatagram (delivered cut, truncated(i) true). */
  truncated: number;
  recvErrors: number;
  batches: number;
  sent: number;
  /** Datagrams the kernel refused (EMSGSIZE, ECONNREFUSED, EPERM, ...) or too long to queue. */
  sendErrors: number;
  /** Datagrams dropped because the socket's send buffer was full. */
  sendDropped: number;
  /** Socket errors reported by the kernel (ICMP unreachable on a connected socket). */
  socketErrors: number;
}

/** A datagram's source or destination, in the form the native side reads (no strings on the hot path). */
export interface UdpPeer {
  family: 4 | 6;
  port: number;
  /** The address as 4 u32 words in memory order (IPv4: w0 only). */
  w0: number;
  w1: number;
  w2: number;
  w3: number;
}

export interface UdpBatchOptions {
  /** Local address to bind (IPv4 or IPv6 literal); its family is the socket's. */
  address: string;
  /** 0 or absent: any free port. */
  port?: number;
  /** Connect to this peer: send(data) without a destination goes there, and only its datagrams arrive. */
  connect?: { address: string; port: number };
  /** SO_MARK (0: none). */
  mark?: number;
  /** SO_RCVBUF (0: the system default). */
  recvBufferBytes?: number;
  /** Datagrams per receive batch (1..1024, default 64). */
  batch?: number;
  /** Bytes kept of each received datagram (512..65536, default 4096). */
  maxDatagram?: number;
  /** Datagrams queued before a send is forced (1..1024, default 64). */
  sendQueue?: number;
  /** Called once per received batch of `count` datagrams (1..batch). */
  onBatch: (count: number) => void;
}

const u32 = new Uint32Array(4);
const u8 = new Uint8Array(u32.buffer);

export class UdpBatch {
  readonly port: number;
  readonly family: 4 | 6;
  readonly maxDatagram: number;
  private handle: unknown;
  private readonly rxSlab: Buffer;
  private readonly rxMeta: Uint32Array;
  private readonly txSlab: Uint8Array;
  private readonly txMeta: Uint32Array;
  private readonly stats: Float64Array;
  private readonly txEntries: number;
  private queued = 0;
  private queuedBytes = 0;
  private flushScheduled = false;
  /** Sends refused before they reached the kernel (too long); added to sendErrors. */
  private refused = 0;
  private closed = false;
  private readonly flushTask = (): void => {
    this.flushScheduled = false;
    this.flush();
  };

  constructor(o: UdpBatchOptions) {
    if (typeof o !== 'object' || o === null) throw new TypeError('UdpBatch: options must be an object');
    if (typeof o.address !== 'string') throw new TypeError('UdpBatch: address must be a string');
    if (typeof o.onBatch !== 'function') throw new TypeError('UdpBatch: onBatch must be a function');
    const batch = intOption(o.batch, 64, 1, layout.maxSlots, 'batch');
    const slot = intOption(o.maxDatagram, 4096, 512, 65536, 'maxDatagram');
    this.txEntries = intOption(o.sendQueue, 64, 1, layout.maxSlots, 'sendQueue');
    this.family = o.address.includes(':') ? 6 : 4;
    this.maxDatagram = slot;
    this.rxSlab = Buffer.alloc(batch * slot);
    this.rxMeta = new Uint32Array(batch * MW);
    // room for a full queue of DNS-sized datagrams, and always for one of the largest
    this.txSlab = new Uint8Array(Math.max(MAX_UDP_PAYLOAD, this.txEntries * 1232));
    this.txMeta = new Uint32Array(this.txEntries * TW);
    this.stats = new Float64Array(Object.keys(layout.stats).length);
    if (o.connect !== undefined && (typeof o.connect !== 'object' || o.connect === null || typeof o.connect.address !== 'string')) {
      throw new TypeError('UdpBatch: connect must be { address, port }');
    }
    const r = addon.dnsioOpen(
      {
        family: this.family,
        address: o.address,
        port: o.port ?? 0,
        mark: o.mark ?? 0,
        recvBufferBytes: o.recvBufferBytes ?? 0,
        connectAddress: o.connect?.address ?? null,
        connectPort: o.connect?.port ?? 0,
        rxSlab: this.rxSlab,
        rxSlotBytes: slot,
        rxMeta: this.rxMeta,
        txSlab: this.txSlab,
        txMeta: this.txMeta,
        stats: this.stats,
      },
      o.onBatch,
    ) as { handle: unknown; port: number };
    this.handle = r.handle;
    this.port = r.port;
  }

  // ---- receive: valid inside onBatch, for i < count ----

  /** Bytes of datagram i held (at most maxDatagram). */
  size(i: number): number {
    return this.rxMeta[i * MW];
  }

  /** Was datagram i longer than maxDatagram (and so cut)? */
  truncated(i: number): boolean {
    return this.rxMeta[i * MW + 1] > this.rxMeta[i * MW];
  }

  /** Datagram i in place: valid only until onBatch returns. */
  view(i: number): Buffer {
    return Buffer.from(this.rxSlab.buffer, this.rxSlab.byteOffset + i * this.maxDatagram, this.rxMeta[i * MW]);
  }

  /** A copy of datagram i, to keep. */
  copy(i: number): Buffer {
    const n = this.rxMeta[i * MW];
    const out = Buffer.allocUnsafe(n); // small ones come from node's pool
    this.rxSlab.copy(out, 0, i * this.maxDatagram, i * this.maxDatagram + n);
    return out;
  }

  /** Where datagram i came from. */
  peer(i: number): UdpPeer {
    const m = this.rxMeta;
    const b = i * MW;
    return { family: m[b + 2] === 6 ? 6 : 4, port: m[b + 3], w0: m[b + 4], w1: m[b + 5], w2: m[b + 6], w3: m[b + 7] };
  }

  // ---- send ----

  /**
   * Queues `data` for `to` (none: the connected peer). The bytes are copied at once;
   * the queue goes out after the current callback (or now, when full). Never throws
   * for a datagram the kernel would refuse: it is counted.
   */
  send(data: Uint8Array, to?: UdpPeer): void {
    if (!(data instanceof Uint8Array)) throw new TypeError('UdpBatch.send: data must be a Uint8Array');
    if (this.closed) return;
    if (data.length > MAX_UDP_PAYLOAD) {
      this.refused++;
      return;
    }
    if (this.queued === this.txEntries || this.queuedBytes + data.length > this.txSlab.length) this.flush();
    const off = this.queuedBytes;
    this.txSlab.set(data, off);
    const m = this.txMeta;
    const b = this.queued * TW;
    m[b] = off;
    m[b + 1] = data.length;
    if (to === undefined) {
      m[b + 2] = 0;
    } else {
      m[b + 2] = to.family;
      m[b + 3] = to.port;
      m[b + 4] = to.w0;
      m[b + 5] = to.w1;
      m[b + 6] = to.w2;
      m[b + 7] = to.w3;
    }
    this.queued++;
    this.queuedBytes += data.length;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(this.flushTask);
    }
  }

  /** Sends what is queued now (one sendmmsg); returns the datagrams the kernel took. */
  flush(): number {
    if (this.queued === 0 || this.closed) return 0;
    const n = this.queued;
    this.queued = 0;
    this.queuedBytes = 0;
    return addon.dnsioSend(this.handle, n) as number;
  }

  counters(): UdpBatchCounters {
    const c = {} as UdpBatchCounters;
    for (const [k, i] of Object.entries(layout.stats)) c[k as keyof UdpBatchCounters] = this.stats[i];
    c.sendErrors += this.refused;
    return c;
  }

  /** Closes the socket (safe inside onBatch); what is still queued is dropped. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.queued = 0;
    this.queuedBytes = 0;
    addon.dnsioClose(this.handle);
  }
}

function intOption(v: unknown, dflt: number, lo: number, hi: number, name: string): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number') throw new TypeError(`UdpBatch: ${name} must be a number`);
  if (!Number.isInteger(v) || v < lo || v > hi) throw new RangeError(`UdpBatch: ${name} must be an integer in [${lo}, ${hi}]`);
  return v;
}

/** A peer from an address literal and port (tests, replies to a known address). */
export function udpPeer(address: string, port: number): UdpPeer {
  u32.fill(0);
  if (address.includes(':')) {
    const b = Buffer.from(expand6(address), 'hex');
    u8.set(b);
    return { family: 6, port, w0: u32[0], w1: u32[1], w2: u32[2], w3: u32[3] };
  }
  const parts = address.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new RangeError(`udpPeer: not an IPv4 address: ${address}`);
  u8.set(parts);
  return { family: 4, port, w0: u32[0], w1: 0, w2: 0, w3: 0 };
}

/** The address literal of a peer (IPv6 in full hex groups, e.g. 0:0:0:0:0:0:0:1). */
export function peerAddress(p: UdpPeer): string {
  u32[0] = p.w0;
  u32[1] = p.w1;
  u32[2] = p.w2;
  u32[3] = p.w3;
  if (p.family === 4) return `${u8[0]}.${u8[1]}.${u8[2]}.${u8[3]}`;
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(((u8[i] << 8) | u8[i + 1]).toString(16));
  return g.join(':');
}

function expand6(address: string): string {
  const [head, tail] = address.includes('::') ? address.split('::') : [address, undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  if (tail === undefined && h.length !== 8) throw new RangeError(`udpPeer: not an IPv6 address: ${address}`);
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  if (groups.length !== 8 || groups.some((x) => !/^[0-9a-f]{1,4}$/i.test(x))) throw new RangeError(`udpPeer: not an IPv6 address: ${address}`);
  return groups.map((x) => x.padStart(4, '0')).join('');
}
