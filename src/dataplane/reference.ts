/**
 * Reference data plane: the DataPlane contract in plain TypeScript over the Tun and Bind
 * interfaces of src/io/. Per-packet work happens here in TS, which is fine for the
 * reference and test double; the production path is native. Semantics the native engine
 * must share are marked (same).
 *
 * Send (packets from the TUN), in order:
 *   1. read the inner header: not IP -> drop no_route (nothing to route it by) (same)
 *   2. longer than the MTU -> drop too_big (same)
 *   2b. a reply of a DNATed flow (local service address:port -> client) gets its source
 *      set back to the VIP (same)
 *   3. allowed-IPs longest-prefix match on the destination -> peer, else drop no_route (same)
 *   4. no send keypair or no endpoint: queue (bounded; when full the new packet is dropped
 *      as queue_full) and report need_handshake once, until a send keypair is set or the
 *      queue is flushed (same)
 *   5. take the send counter; exhausted -> drop counter_exhausted (same); using counter
 *      REKEY_AFTER_MESSAGES or above reports rekey_needed once per keypair (same)
 *   6. seal (src/noise/transport.ts), send to the peer's endpoint; failure -> drop io (same)
 * setSendKeypair(kp) sends the queue through kp when the peer has an endpoint (same).
 *
 * Receive (datagrams from the bind), in order:
 *   1. decode gate (src/wire/messages.ts): bad -> drop bad_header (same)
 *   2. handshake types 1-3 -> a 'handshake' event (at most handshakeQueueLimit per batch,
 *      the rest dropped as handshake_queue_full) (same)
 *   3. transport: receiver index -> keypair, else drop unknown_index (same)
 *   4. replay check before decryption -> drop replay (same)
 *   5. open -> drop auth (same)
 *   6. replay commit (a race lost here is a replay) (same)
 *   7. first authentic message on a keypair -> keypair_confirmed; new outer source ->
 *      endpoint updated and reported (roaming) (same)
 *   8. empty plaintext: keepalive, done
 *   9. inner header invalid -> drop bad_inner; inner source not routed to this peer by the
 *      allowed IPs -> drop spoofed_source (same)
 *  10. strip padding; TCP/UDP to a local service's VIP[:port] is DNATed to its local
 *      address (flow remembered for the replies) (same); a new flow the flow table
 *      refuses -> drop nat_table_full or nat_clash (same); write to the TUN
 *
 * DNAT (as native/nat.c): unfragmented TCP/UDP only; IPv4 header and TCP/UDP checksums
 * updated incrementally (RFC 1624); an IPv4 UDP checksum of 0 stays 0; flows are kept in
 * a bounded table and stay live while a packet went either way within their idle
 * timeout (TCP 5 min, 10 s after a FIN or RST; UDP 30 s) (same). A live assured flow
 * (answered; TCP: and acknowledged after) is never replaced: a new flow finding the
 * table full takes the least recently used expired flow's place, else the least
 * recently used unassured one's, or is refused when all are live and assured
 * (nat_table_full; native: the same within the 4 ways of its bucket), and one with the reply tuple of a live flow of
 * another VIP is refused too (nat_clash) (same). New services keep the
 * flows they still DNAT (same VIP, local address, protocol and port) (same).
 */
import {
  DROP_REASONS,
  type DataPlane,
  type DropReason,
  type Endpoint,
  type LocalService,
  type PeerCounters,
  type PeerId,
  type PlaneEvent,
  type PlaneKeypair,
} from '../device/plane.js';
import type { Tun } from '../io/tun.js';
import { sameEndpoint, type Bind, type Datagram } from '../io/bind.js';
import { readInnerHeader } from '../io/ippacket.js';
import { AllowedIps, parseCidr, parseIp } from '../peer/allowedips.js';
import { equalBytes } from '../noise/kdf.js';
import { ReplayWindow } from '../noise/replay.js';
import { openTransport, sealTransport } from '../noise/transport.js';
import type { Clock } from '../noise/types.js';
import { decodeMessage } from '../wire/messages.js';
import { KEY_SIZE, MESSAGE_TRANSPORT, REJECT_AFTER_MESSAGES, REKEY_AFTER_MESSAGES } from '../wire/constants.js';

export interface ReferencePlaneOptions {
  tun: Tun;
  bind: Bind;
  clock: Clock;
  /** Packets held per peer while it has no send keypair (WireGuard keeps 128). */
  queueLimit?: number;
  /** Handshake messages passed up per received batch. */
  handshakeQueueLimit?: number;
  /** Flows the DNAT table holds (default 65536, native/nat.h TENC_NAT_SLOTS); tests make it small to fill it. */
  natMaxFlows?: number;
}

interface RefKeypair {
  peer: PeerId;
  localIndex: number;
  remoteIndex: number;
  sendKey: Uint8Array;
  recvKey: Uint8Array;
  sendCounter: bigint;
  replay: ReplayWindow;
  confirmed: boolean;
  rekeyReported: boolean;
}

interface RefPeer {
  id: PeerId;
  endpoint: Endpoint | null;
  sendKeypair: RefKeypair | null;
  keypairs: Set<number>;
  queue: Uint8Array[];
  /** need_handshake was reported and not yet answered by a send keypair or a flush. */
  needSignaled: boolean;
  counters: PeerCounters;
  drops: Record<DropReason, number>;
}

function zeroDrops(): Record<DropReason, number> {
  return Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>;
}

function assertPeerId(id: unknown): asserts id is PeerId {
  if (typeof id !== 'number' || !Number.isInteger(id)) throw new TypeError('peer id must be an integer');
  if (id < 0 || id > 65535) throw new RangeError(`peer id must be 0 .. 65535, got ${id}`);
}

function assertEndpoint(e: unknown): asserts e is Endpoint {
  if (e === null || typeof e !== 'object') throw new TypeError('endpoint must be an object');
  const { address, port } = e as Endpoint;
  if (typeof address !== 'string' || typeof port !== 'number') throw new TypeError('endpoint needs address and port');
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`endpoint port out of range: ${port}`);
}

export class ReferencePlane implements DataPlane {
  private readonly tun: Tun;
  private readonly bind: Bind;
  private readonly clock: Clock;
  private readonly queueLimit: number;
  private readonly handshakeQueueLimit: number;
  private readonly peers = new Map<PeerId, RefPeer>();
  private readonly byIndex = new Map<number, RefKeypair>();
  private readonly allowed = new AllowedIps<PeerId>();
  private readonly unattributed = zeroDrops();
  private handler: ((events: PlaneEvent[]) => void) | null = null;
  private services: LocalService[] = [];
  private localAddrs: Uint8Array[] = [];
  /** The services' local addresses, parsed once per setLocalServices (not per packet). */
  private serviceLocals: Uint8Array[] = [];
  private readonly nat: ReferenceNat;
  private closed = false;

  constructor(opts: ReferencePlaneOptions) {
    this.tun = opts.tun;
    this.bind = opts.bind;
    this.clock = opts.clock;
    this.queueLimit = opts.queueLimit ?? 128;
    this.nat = new ReferenceNat(opts.natMaxFlows ?? NAT_MAX_FLOWS);
    this.handshakeQueueLimit = opts.handshakeQueueLimit ?? 1024;
    this.tun.onPackets((p) => this.sendPackets(p));
    this.bind.onDatagrams((d) => this.receiveDatagrams(d));
  }

  // ---- control --------------------------------------------------------------------------

  addPeer(peer: PeerId, endpoint: Endpoint | null): void {
    assertPeerId(peer);
    if (endpoint !== null) assertEndpoint(endpoint);
    if (this.peers.has(peer)) throw new Error(`reference plane: peer ${peer} exists`);
    this.peers.set(peer, {
      id: peer,
      endpoint: endpoint ? { ...endpoint } : null,
      sendKeypair: null,
      keypairs: new Set(),
      queue: [],
      needSignaled: false,
      counters: { txBytes: 0, rxBytes: 0, txPackets: 0, rxPackets: 0, lastTxMs: 0, lastRxMs: 0, lastTxDataMs: 0, lastRxDataMs: 0 },
      drops: zeroDrops(),
    });
  }

  removePeer(peer: PeerId): void {
    const p = this.peers.get(peer);
    if (!p) return;
    for (const idx of [...p.keypairs]) this.removeKeypair(idx);
    this.allowed.removeValue(peer);
    p.queue.length = 0;
    this.peers.delete(peer);
  }

  setEndpoint(peer: PeerId, endpoint: Endpoint): void {
    assertEndpoint(endpoint);
    this.peer(peer).endpoint = { ...endpoint };
  }

  addAllowedIp(peer: PeerId, cidr: string): void {
    this.peer(peer);
    this.allowed.insert(parseCidr(cidr), peer);
  }

  removeAllowedIp(peer: PeerId, cidr: string): void {
    this.allowed.remove(parseCidr(cidr), peer);
  }

  addKeypair(peer: PeerId, kp: PlaneKeypair): void {
    const p = this.peer(peer);
    if (kp === null || typeof kp !== 'object') throw new TypeError('keypair must be an object');
    for (const k of [kp.sendKey, kp.recvKey]) {
      if (!(k instanceof Uint8Array)) throw new TypeError('keypair keys must be Uint8Arrays');
      if (k.length !== KEY_SIZE) throw new RangeError(`keypair keys must be ${KEY_SIZE} bytes`);
    }
    if (this.byIndex.has(kp.localIndex)) throw new Error(`reference plane: local index ${kp.localIndex} in use`);
    const rk: RefKeypair = {
      peer,
      localIndex: kp.localIndex,
      remoteIndex: kp.remoteIndex,
      sendKey: Uint8Array.from(kp.sendKey),
      recvKey: Uint8Array.from(kp.recvKey),
      sendCounter: 0n,
      replay: new ReplayWindow(),
      confirmed: false,
      rekeyReported: false,
    };
    this.byIndex.set(kp.localIndex, rk);
    p.keypairs.add(kp.localIndex);
  }

  setSendKeypair(peer: PeerId, localIndex: number | null): void {
    const p = this.peer(peer);
    if (localIndex === null) {
      p.sendKeypair = null;
      return;
    }
    const kp = this.byIndex.get(localIndex);
    if (!kp || kp.peer !== peer) throw new Error(`reference plane: keypair ${localIndex} is not peer ${peer}'s`);
    p.sendKeypair = kp;
    p.needSignaled = false;
    if (!p.endpoint) return;
    const queued = p.queue.splice(0, p.queue.length);
    const events: PlaneEvent[] = [];
    for (const pkt of queued) this.sealAndSend(p, pkt, events);
    this.emit(events);
  }

  removeKeypair(localIndex: number): void {
    const kp = this.byIndex.get(localIndex);
    if (!kp) return;
    kp.sendKey.fill(0);
    kp.recvKey.fill(0);
    this.byIndex.delete(localIndex);
    const p = this.peers.get(kp.peer);
    if (p) {
      p.keypairs.delete(localIndex);
      if (p.sendKeypair === kp) p.sendKeypair = null;
    }
  }

  sendHandshake(to: Endpoint, data: Uint8Array): void {
    assertEndpoint(to);
    if (!(data instanceof Uint8Array)) throw new TypeError('handshake data must be a Uint8Array');
    if (this.bind.send(to, [data]) > 0) this.unattributed.io++;
  }

  sendKeepalive(peer: PeerId): void {
    const p = this.peer(peer);
    if (!p.sendKeypair || !p.endpoint) return;
    const events: PlaneEvent[] = [];
    this.sealAndSend(p, new Uint8Array(0), events);
    this.emit(events);
  }

  flushQueue(peer: PeerId): void {
    const p = this.peer(peer);
    p.drops.no_session += p.queue.length;
    p.queue.length = 0;
    p.needSignaled = false;
  }

  setLocalServices(services: LocalService[]): void {
    if (!Array.isArray(services)) throw new TypeError('services must be an array');
    this.nat.setServices(services);
    this.services = services.map((s) => ({ ...s, ports: s.ports.map((x) => ({ ...x })) }));
    this.serviceLocals = services.map((s) => parseIp(s.localAddress));
  }

  setLocalAddresses(addresses: string[]): void {
    if (!Array.isArray(addresses)) throw new TypeError('addresses must be an array');
    this.localAddrs = addresses.map((a) => parseIp(a));
  }

  /** Destination check after DNAT (same rule as native/engine_rx.c dst_is_local). */
  private isLocal(dst: Uint8Array): boolean {
    const eq = (a: Uint8Array) => a.length === dst.length && a.every((x, i) => x === dst[i]);
    return this.localAddrs.some(eq) || this.serviceLocals.some(eq);
  }

  get localServices(): readonly LocalService[] {
    return this.services;
  }

  peerCounters(peer: PeerId): PeerCounters {
    return { ...this.peer(peer).counters };
  }

  drops(): Record<DropReason, number> {
    const out = { ...this.unattributed };
    for (const p of this.peers.values()) for (const r of DROP_REASONS) out[r] += p.drops[r];
    return out;
  }

  peerDrops(peer: PeerId): Record<DropReason, number> {
    return { ...this.peer(peer).drops };
  }

  onEvents(handler: (events: PlaneEvent[]) => void): void {
    this.handler = handler;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const id of [...this.peers.keys()]) this.removePeer(id);
    this.handler = null;
  }

  /** Packets waiting for a handshake (tests). */
  queued(peer: PeerId): number {
    return this.peer(peer).queue.length;
  }

  // ---- send path --------------------------------------------------------------------------

  private sendPackets(packets: Uint8Array[]): void {
    if (this.closed) return;
    const events: PlaneEvent[] = [];
    for (const pkt of packets) {
      const h = readInnerHeader(pkt);
      if (!h) {
        this.unattributed.no_route++;
        continue;
      }
      if (pkt.length > this.tun.mtu) {
        this.unattributed.too_big++;
        continue;
      }
      this.nat.unsnat(pkt, h.totalLength, this.clock.now());
      const id = this.allowed.lookup(h.dst);
      const p = id === undefined ? undefined : this.peers.get(id);
      if (!p) {
        this.unattributed.no_route++;
        continue;
      }
      if (!p.sendKeypair || !p.endpoint) {
        if (!p.needSignaled) {
          p.needSignaled = true;
          events.push({ type: 'need_handshake', peer: p.id });
        }
        if (p.queue.length >= this.queueLimit) {
          p.drops.queue_full++;
          continue;
        }
        p.queue.push(pkt);
        continue;
      }
      this.sealAndSend(p, pkt, events);
    }
    this.emit(events);
  }

  private sealAndSend(p: RefPeer, pkt: Uint8Array, events: PlaneEvent[]): void {
    const kp = p.sendKeypair;
    if (!kp) return;
    if (!p.endpoint) return; // callers check; kept for safety
    const counter = kp.sendCounter;
    if (!kp.rekeyReported && counter >= REKEY_AFTER_MESSAGES) {
      kp.rekeyReported = true;
      events.push({ type: 'rekey_needed', peer: p.id, localIndex: kp.localIndex });
    }
    if (counter >= REJECT_AFTER_MESSAGES) {
      p.drops.counter_exhausted++;
      return;
    }
    kp.sendCounter++;
    const msg = sealTransport(kp.sendKey, kp.remoteIndex, counter, pkt, this.tun.mtu);
    if (this.bind.send(p.endpoint, [msg]) > 0) {
      p.drops.io++;
      return;
    }
    const now = this.clock.now();
    p.counters.txPackets++;
    p.counters.txBytes += msg.length;
    p.counters.lastTxMs = now;
    if (pkt.length > 0) p.counters.lastTxDataMs = now;
  }

  // ---- receive path -----------------------------------------------------------------------

  private receiveDatagrams(datagrams: Datagram[]): void {
    if (this.closed) return;
    const events: PlaneEvent[] = [];
    let handshakes = 0;
    const toTun: Uint8Array[] = [];
    for (const d of datagrams) {
      const dec = decodeMessage(d.data);
      if (!dec.ok) {
        this.unattributed.bad_header++;
        continue;
      }
      const msg = dec.message;
      if (msg.type !== MESSAGE_TRANSPORT) {
        if (handshakes >= this.handshakeQueueLimit) {
          this.unattributed.handshake_queue_full++;
          continue;
        }
        handshakes++;
        events.push({ type: 'handshake', data: Uint8Array.from(d.data), from: { ...d.from } });
        continue;
      }
      const kp = this.byIndex.get(msg.receiverIndex);
      const p = kp ? this.peers.get(kp.peer) : undefined;
      if (!kp || !p) {
        this.unattributed.unknown_index++;
        continue;
      }
      if (!kp.replay.check(msg.counter)) {
        p.drops.replay++;
        continue;
      }
      const opened = openTransport(kp.recvKey, msg);
      if (!opened.ok) {
        p.drops[opened.reason]++;
        continue;
      }
      if (!kp.replay.commit(msg.counter)) {
        p.drops.replay++;
        continue;
      }
      const now = this.clock.now();
      p.counters.rxPackets++;
      p.counters.rxBytes += d.data.length;
      p.counters.lastRxMs = now;
      if (!kp.confirmed) {
        kp.confirmed = true;
        events.push({ type: 'keypair_confirmed', peer: p.id, localIndex: kp.localIndex });
      }
      if (!sameEndpoint(p.endpoint, d.from)) {
        p.endpoint = { ...d.from };
        events.push({ type: 'endpoint', peer: p.id, endpoint: { ...d.from } });
      }
      const plain = opened.plaintext;
      if (plain.length === 0) continue; // keepalive
      const h = readInnerHeader(plain);
      if (!h) {
        p.drops.bad_inner++;
        continue;
      }
      if (this.allowed.lookup(h.src) !== p.id) {
        p.drops.spoofed_source++;
        continue;
      }
      p.counters.lastRxDataMs = now;
      const inner = plain.subarray(0, h.totalLength);
      const nat = this.nat.dnat(inner, now);
      if (nat === NAT_FULL || nat === NAT_CLASH) {
        p.drops[nat === NAT_FULL ? 'nat_table_full' : 'nat_clash']++;
        continue;
      }
      // h.dst views the packet's bytes, so it already shows the destination DNAT wrote
      if (this.localAddrs.length > 0 && !this.isLocal(h.dst)) {
        p.drops.bad_destination++;
        continue;
      }
      toTun.push(inner);
    }
    if (toTun.length > 0) this.tun.write(toTun);
    this.emit(events);
  }

  // ---- helpers ------------------------------------------------------------------------------

  private peer(id: PeerId): RefPeer {
    assertPeerId(id);
    const p = this.peers.get(id);
    if (!p) throw new Error(`reference plane: no peer ${id}`);
    return p;
  }

  private emit(events: PlaneEvent[]): void {
    if (events.length > 0 && this.handler) this.handler(events);
  }
}

// ---- DNAT of local services (mirrors native/nat.c) ------------------------------------

const TCP = 6;
const UDP = 17;
const NAT_MAX_FLOWS = 65536;
/** Idle timeouts of a flow (native/nat.h TENC_NAT_*_MS). */
const NAT_TCP_IDLE_MS = 300_000;
const NAT_TCP_CLOSING_MS = 10_000;
const NAT_UDP_IDLE_MS = 30_000;
/** dnat's refusals (native/nat.h TENC_NAT_FULL, TENC_NAT_CLASH). */
const NAT_FULL = -1;
const NAT_CLASH = -2;
const TCP_FIN = 0x01;
const TCP_SYN = 0x02;
const TCP_RST = 0x04;

interface NatService {
  vip: Uint8Array;
  local: Uint8Array;
  ports: { proto: number; port: number }[];
}

/** Does the service DNAT this protocol and port: among its ports, or it has none (all of them)? */
const servesPort = (s: NatService, proto: number, port: number): boolean => s.ports.length === 0 || s.ports.some((x) => x.proto === proto && x.port === port);

interface L4View {
  proto: number;
  src: Uint8Array;
  dst: Uint8Array;
  sport: number;
  dport: number;
  /** TCP flags (byte 13 of the TCP header); 0 for UDP. */
  flags: number;
  /** Offset of the TCP/UDP checksum field. */
  sumAt: number;
}

/** A remembered flow: the VIP its replies get back, and what decides whether it is live. */
interface NatFlow {
  vip: Uint8Array;
  local: Uint8Array;
  proto: number;
  lport: number;
  /** TCP: a FIN or RST went either way since the last SYN. */
  closing: boolean;
  /** A reply went back since the last SYN. */
  replied: boolean;
  /** UDP: replied; TCP: a client packet after a reply. Only assured flows are safe from a new flow. */
  assured: boolean;
  /** The last packet either way. */
  lastMs: number;
}

/** Was a packet of the flow seen within its idle timeout (as native/nat.c flow_live)? */
function flowLive(f: NatFlow, now: number): boolean {
  const idle = f.proto === UDP ? NAT_UDP_IDLE_MS : f.closing ? NAT_TCP_CLOSING_MS : NAT_TCP_IDLE_MS;
  return now <= f.lastMs || now - f.lastMs < idle;
}

/** A packet of the flow went by (reply: from the local side): live again; a FIN or RST shortens its timeout until a client's SYN, which also starts assurance over (as flow_touch). */
function flowTouch(f: NatFlow, flags: number, now: number, reply: boolean): void {
  if (now > f.lastMs) f.lastMs = now;
  if (flags & (TCP_FIN | TCP_RST)) f.closing = true;
  else if (flags & TCP_SYN && !reply) f.closing = f.replied = f.assured = false;
  if (reply) {
    f.replied = true;
    if (f.proto === UDP) f.assured = true;
  } else if (f.replied) {
    f.assured = true;
  }
}

/** Unfragmented TCP/UDP over an already validated inner header, or null. */
function l4View(p: Uint8Array, len: number): L4View | null {
  let ihl: number;
  let proto: number;
  let src: Uint8Array;
  let dst: Uint8Array;
  if (p[0] >> 4 === 4) {
    ihl = (p[0] & 15) * 4;
    if (p[6] & 0x3f || p[7]) return null; // MF or fragment offset
    proto = p[9];
    src = p.subarray(12, 16);
    dst = p.subarray(16, 20);
  } else {
    ihl = 40; // extension headers are left alone
    proto = p[6];
    src = p.subarray(8, 24);
    dst = p.subarray(24, 40);
  }
  let sumAt: number;
  if (proto === TCP && len >= ihl + 20) sumAt = ihl + 16;
  else if (proto === UDP && len >= ihl + 8) sumAt = ihl + 6;
  else return null;
  const flags = proto === TCP ? p[ihl + 13] : 0;
  return { proto, src, dst, sport: (p[ihl] << 8) | p[ihl + 1], dport: (p[ihl + 2] << 8) | p[ihl + 3], flags, sumAt };
}

/** RFC 1624 eqn. 3: the checksum at `at` after 16-bit words `from` became `to`. */
function checksumReplace(p: Uint8Array, at: number, from: Uint8Array, to: Uint8Array): void {
  let sum = ~((p[at] << 8) | p[at + 1]) & 0xffff;
  for (let i = 0; i < from.length; i += 2) {
    sum += ~((from[i] << 8) | from[i + 1]) & 0xffff;
    sum += (to[i] << 8) | to[i + 1];
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const r = ~sum & 0xffff;
  p[at] = r >> 8;
  p[at + 1] = r & 0xff;
}

function rewriteAddress(p: Uint8Array, v: L4View, field: Uint8Array, to: Uint8Array): void {
  const old = Uint8Array.from(field);
  field.set(to);
  const v4 = to.length === 4;
  if (v4) checksumReplace(p, 10, old, to);
  if (v.proto === UDP && v4 && p[v.sumAt] === 0 && p[v.sumAt + 1] === 0) return; // no UDP checksum
  checksumReplace(p, v.sumAt, old, to);
  if (v.proto === UDP && p[v.sumAt] === 0 && p[v.sumAt + 1] === 0) {
    p[v.sumAt] = 0xff; // RFC 768: a computed 0 is sent as all ones
    p[v.sumAt + 1] = 0xff;
  }
}

const hexOf = (b: Uint8Array): string => Buffer.from(b).toString('hex');

class ReferenceNat {
  private services: NatService[] = [];
  /** flow key (what a reply carries) -> flow; Map order is least recently used first. */
  private readonly flows = new Map<string, NatFlow>();

  constructor(private readonly maxFlows: number) {}

  setServices(list: LocalService[]): void {
    const out: NatService[] = [];
    for (const s of list) {
      if (s === null || typeof s !== 'object') throw new TypeError('service must be an object');
      const vip = parseIp(s.vip);
      const local = parseIp(s.localAddress);
      if (vip.length !== local.length) throw new RangeError(`service ${s.vip}: vip and localAddress must be the same family`);
      if (!Array.isArray(s.ports)) throw new TypeError('service ports must be an array');
      const ports = s.ports.map((x) => {
        if (x.protocol !== 'tcp' && x.protocol !== 'udp') throw new TypeError(`service port protocol must be tcp or udp`);
        if (!Number.isInteger(x.port) || x.port < 1 || x.port > 65535) throw new RangeError(`service port out of range: ${x.port}`);
        return { proto: x.protocol === 'tcp' ? TCP : UDP, port: x.port };
      });
      out.push({ vip, local, ports });
    }
    this.services = out;
    // Only the flows no service DNATs any more are forgotten: the agent sends the whole
    // list whenever any service changes, and the others' connections must survive that.
    for (const [key, f] of this.flows) {
      const kept = out.some((s) => equalBytes(s.vip, f.vip) && equalBytes(s.local, f.local) && servesPort(s, f.proto, f.lport));
      if (!kept) this.flows.delete(key);
    }
  }

  /** The flow goes to the back of the map's order, which is least recently used first. */
  private lastUsed(key: string, f: NatFlow): void {
    this.flows.delete(key);
    this.flows.set(key, f);
  }

  private static key(proto: number, client: Uint8Array, cport: number, local: Uint8Array, lport: number): string {
    return `${proto}|${hexOf(client)}|${cport}|${hexOf(local)}|${lport}`;
  }

  /**
   * Receive side: to a VIP[:port] -> to the local address. Returns 1 if rewritten, 0 if
   * not to a service, NAT_FULL or NAT_CLASH when the new flow is refused (left alone).
   */
  dnat(p: Uint8Array, now: number): number {
    if (this.services.length === 0) return 0;
    const v = l4View(p, p.length);
    if (!v) return 0;
    for (const s of this.services) {
      if (!equalBytes(s.vip, v.dst) || !servesPort(s, v.proto, v.dport)) continue;
      const key = ReferenceNat.key(v.proto, v.src, v.sport, s.local, v.dport);
      const old = this.flows.get(key);
      if (old && !equalBytes(old.vip, s.vip) && flowLive(old, now)) return NAT_CLASH;
      if (!old && this.flows.size >= this.maxFlows) {
        // the least recently used expired flow gives way, else the least recently used
        // unassured one (native: within the bucket's 4 ways)
        let expired: string | undefined;
        let early: string | undefined;
        for (const [k, f] of this.flows) {
          if (!flowLive(f, now)) {
            expired = k;
            break;
          }
          if (!f.assured && early === undefined) early = k;
        }
        const give = expired ?? early;
        if (give === undefined) return NAT_FULL;
        this.flows.delete(give);
      }
      const f: NatFlow = old ?? { vip: s.vip, local: s.local, proto: v.proto, lport: v.dport, closing: false, replied: false, assured: false, lastMs: now };
      f.vip = s.vip; // an expired flow of another VIP may be taken over
      flowTouch(f, v.flags, now, false);
      this.lastUsed(key, f);
      rewriteAddress(p, v, v.dst, s.local);
      return 1;
    }
    return 0;
  }

  /** Send side: a reply of a known flow gets the VIP back as its source (and keeps the flow live). */
  unsnat(p: Uint8Array, len: number, now: number): boolean {
    if (this.services.length === 0) return false;
    const v = l4View(p, len);
    if (!v) return false;
    if (!this.services.some((s) => equalBytes(s.local, v.src))) return false;
    const key = ReferenceNat.key(v.proto, v.dst, v.dport, v.src, v.sport);
    const f = this.flows.get(key);
    if (!f) return false;
    flowTouch(f, v.flags, now, true);
    this.lastUsed(key, f);
    rewriteAddress(p, v, v.src, f.vip);
    return true;
  }
}
