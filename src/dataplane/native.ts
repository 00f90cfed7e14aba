/**
 * The native data plane: DataPlane (./plane.ts) over native/engine_*.c (engine.h: the pipeline). Per-packet
 * work runs in the engine's two C threads (TUN -> seal -> UDP, UDP -> open ->
 * inject); this wrapper only forwards per-flow control calls, fans out event
 * batches, and reads counters from a shared ArrayBuffer without a native call.
 *
 * Also opens what the engine needs: the TUN device (openTun), the UDP socket
 * (openUdp) and the raw injection sockets (openRaw). Their fds pass to the
 * engine, which closes them on close().
 *
 * Clock: the C side stamps CLOCK_MONOTONIC milliseconds; PeerCounters report them
 * on the performance.now() time base (systemClock in ../noise/types.ts), 0 = never.
 *
 * Use (root, or CAP_NET_ADMIN + CAP_NET_RAW):
 *   const plane = openNativePlane({ device: 'tenc0', listenPort: 51820, fwmark: 0x1e7d, mode: 'raw' });
 *   // then with `ip`: address, `mtu 1420`, `up`, routes / policy rules on plane.tun.name
 *   plane.onEvents((events) => ...);       // handshake messages, need_handshake, ...
 *   plane.addPeer(1, { address: '10.0.0.2', port: 51820 });
 *   plane.addAllowedIp(1, '10.1.0.5/32');
 *   plane.addKeypair(1, keypair); plane.setSendKeypair(1, keypair.localIndex);
 *   await plane.close();                   // joins the threads, zeroes keys, closes the fds
 * Errors thrown by the addon carry `code` = errno name (EPERM, EBUSY, ENOENT for an
 * unknown peer/keypair, EEXIST for a local index in use, ENOKEY for a keypair of
 * another peer); wrong argument types are TypeErrors, bad ranges RangeErrors.
 */
import { addon } from '../native.js';
/** The ChaCha20-Poly1305 backend the engine's threads use ("direct" or "evp"), for the status line. */
export { aeadBackend } from '../native.js';
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

/** TUN_F_* bits (linux/if_tun.h) reported in TunDevice.offloads. */
export const TUN_F = { CSUM: 0x01, TSO4: 0x02, TSO6: 0x04, USO4: 0x20, USO6: 0x40 } as const;

export interface TunDevice {
  fd: number;
  name: string;
  ifindex: number;
  /** Opened with IFF_VNET_HDR (needed for offloads). */
  vnetHdr: boolean;
  /** TUN_F_* bits the kernel accepted (0 without vnetHdr). */
  offloads: number;
}

export interface UdpSocket {
  fd: number;
  port: number;
  /** UDP_SEGMENT usable for sending. */
  gso: boolean;
  /** UDP_GRO enabled for receiving. */
  gro: boolean;
}

function checkInt(name: string, v: unknown, lo: number, hi: number): number {
  if (typeof v !== 'number') throw new TypeError(`${name} must be a number`);
  if (!Number.isInteger(v) || v < lo || v > hi) throw new RangeError(`${name} must be an integer in [${lo}, ${hi}]`);
  return v;
}

/** Opens (creating if needed) the TUN device `name`; `offloads` asks for IFF_VNET_HDR with TSO/USO. */
export function openTun(name = 'tenc0', opts: { offloads?: boolean } = {}): TunDevice {
  if (typeof name !== 'string') throw new TypeError('name must be a string');
  return addon.tunOpen(name, opts.offloads ?? true) as TunDevice;
}

/** Opens the dual-stack UDP socket on `port` (0 = any) with SO_MARK `fwmark` (0 = none). */
export function openUdp(port: number, opts: { fwmark?: number; gro?: boolean } = {}): UdpSocket {
  checkInt('port', port, 0, 65535);
  return addon.udpOpen(port, checkInt('fwmark', opts.fwmark ?? 0, 0, 0xffffffff), opts.gro ?? true) as UdpSocket;
}

/** Opens a raw IPPROTO_RAW socket (header included) for injecting IPv4 or IPv6 packets. */
export function openRaw(family: 4 | 6, fwmark = 0): number {
  if (family !== 4 && family !== 6) throw new RangeError('family must be 4 or 6');
  return addon.rawOpen(family, checkInt('fwmark', fwmark, 0, 0xffffffff)) as number;
}

/**
 * Sends one whole IPv4/IPv6 packet to its own destination through a raw socket from
 * openRaw (header included: the kernel routes it as a local packet). Returns the
 * bytes sent; throws with `code` on a failed send, RangeError when not an IP packet.
 */
export function sendRaw(fd: number, packet: Uint8Array): number {
  checkInt('fd', fd, 0, 2 ** 30);
  if (!(packet instanceof Uint8Array)) throw new TypeError('packet must be a Uint8Array');
  return addon.rawSend(fd, packet) as number;
}

/** Closes an fd that was opened here but never handed to an engine. */
export function closeFd(fd: number): void {
  addon.closeFd(checkInt('fd', fd, 0, 2 ** 30));
}

export interface NativePlaneOptions {
  tun: TunDevice;
  udp: UdpSocket;
  /** 'raw': decrypted packets are injected through raw sockets (raw4/raw6 needed); 'tun': written to the TUN device. */
  mode: 'raw' | 'tun';
  raw4?: number;
  raw6?: number;
  /** Send runs of equal-size datagrams as one UDP GSO send (default: udp.gso). */
  udpGso?: boolean;
  /** Expect coalesced datagrams (default: udp.gro). */
  udpGro?: boolean;
  /** Plaintext packets longer than this are dropped as too_big (0 = no check). */
  mtu?: number;
}

interface Layout {
  globalSlots: number;
  peerSlots: number;
  maxPeers: number;
  dropCount: number;
  peerDrops: number;
  handshakeRx: number;
  keepaliveRx: number;
  queueMax: number;
  handshakeQueueMax: number;
  underLoad: number;
  keyLocked: number;
  keyUnlocked: number;
  ratelimitSources: number;
  siblingRx: number;
  eventsLost: number;
  eventQueueMax: number;
}

const layout: Layout = addon.engineLayout();
if (layout.dropCount !== DROP_REASONS.length) {
  throw new Error(`native engine has ${layout.dropCount} drop reasons, plane.ts ${DROP_REASONS.length}: rebuild the addon`);
}

/** Offset that turns the engine's CLOCK_MONOTONIC ms into performance.now() ms. */
function clockOffset(): number {
  const a = performance.now();
  const m = addon.engineNow() as number;
  const b = performance.now();
  return (a + b) / 2 - m;
}

export class NativePlane implements DataPlane {
  readonly tun: TunDevice;
  readonly udp: UdpSocket;
  readonly mode: 'raw' | 'tun';
  /** Raw counter array (see native/engine.h for the layout); prefer the typed readers. */
  readonly counters: BigUint64Array;
  readonly layout: Layout = layout;
  private handle: unknown;
  /** The engine's switches, read once at create (they never change); undefined from an addon without engineSwitches. */
  private readonly switchValues: Readonly<Record<string, number>> | undefined;
  private handlers: ((events: PlaneEvent[]) => void)[] = [];
  private readonly offset = clockOffset();
  private closed = false;

  constructor(opts: NativePlaneOptions) {
    if (opts.mode !== 'raw' && opts.mode !== 'tun') throw new RangeError("mode must be 'raw' or 'tun'");
    if (opts.mode === 'raw' && (opts.raw4 === undefined || opts.raw6 === undefined)) {
      throw new TypeError("mode 'raw' needs raw4 and raw6 sockets (openRaw)");
    }
    this.tun = opts.tun;
    this.udp = opts.udp;
    this.mode = opts.mode;
    const r = addon.engineCreate(
      {
        tunFd: opts.tun.fd,
        udpFd: opts.udp.fd,
        raw4Fd: opts.raw4 ?? -1,
        raw6Fd: opts.raw6 ?? -1,
        mode: opts.mode,
        vnetHdr: opts.tun.vnetHdr,
        udpGso: opts.udpGso ?? opts.udp.gso,
        udpGro: opts.udpGro ?? opts.udp.gro,
        mtu: opts.mtu ?? 0,
      },
      (events: PlaneEvent[]) => this.dispatch(events),
    );
    this.handle = r.handle;
    this.counters = new BigUint64Array(r.counters as ArrayBuffer);
    // an older build (TENC_ADDON=/old/tenc.node in an A/B run) has no engineSwitches: its status just lacks them
    this.switchValues = typeof addon.engineSwitches === 'function' ? Object.freeze(addon.engineSwitches(this.handle) as Record<string, number>) : undefined;
  }

  private dispatch(events: PlaneEvent[]): void {
    for (const h of this.handlers) h(events);
  }

  addPeer(peer: PeerId, endpoint: Endpoint | null): void {
    addon.engineAddPeer(this.handle, peer, endpoint ? endpoint.address : null, endpoint ? endpoint.port : 0);
  }

  removePeer(peer: PeerId): void {
    addon.engineRemovePeer(this.handle, peer);
  }

  setEndpoint(peer: PeerId, endpoint: Endpoint): void {
    addon.engineSetEndpoint(this.handle, peer, endpoint.address, endpoint.port);
  }

  addAllowedIp(peer: PeerId, cidr: string): void {
    addon.engineAllowedIp(this.handle, peer, cidr, true);
  }

  removeAllowedIp(peer: PeerId, cidr: string): void {
    addon.engineAllowedIp(this.handle, peer, cidr, false);
  }

  addKeypair(peer: PeerId, keypair: PlaneKeypair): void {
    addon.engineAddKeypair(
      this.handle,
      peer,
      keypair.localIndex,
      keypair.remoteIndex,
      keypair.sendKey,
      keypair.recvKey,
    );
  }

  setSendKeypair(peer: PeerId, localIndex: number | null): void {
    addon.engineSetSendKeypair(this.handle, peer, localIndex);
  }

  removeKeypair(localIndex: number): void {
    addon.engineRemoveKeypair(this.handle, localIndex);
  }

  /** Returns false when the send failed (counted as an io drop; the retransmit timer retries). */
  sendHandshake(to: Endpoint, data: Uint8Array): boolean {
    return addon.engineSendHandshake(this.handle, to.address, to.port, data) as boolean;
  }

  /** Returns false when the peer has no send keypair or endpoint (nothing sent). */
  sendKeepalive(peer: PeerId): boolean {
    return addon.engineSendKeepalive(this.handle, peer) as boolean;
  }

  flushQueue(peer: PeerId): void {
    addon.engineFlushQueue(this.handle, peer);
  }

  setLocalServices(services: LocalService[]): void {
    addon.engineSetLocalServices(this.handle, services);
  }

  setLocalAddresses(addresses: string[]): void {
    addon.engineSetLocalAddresses(this.handle, addresses);
  }

  reportRouteMisses(on: boolean): void {
    if (typeof on !== 'boolean') throw new TypeError('reportRouteMisses: on must be a boolean');
    addon.engineReportMisses(this.handle, on);
  }

  private peerBase(peer: PeerId): number {
    checkInt('peer', peer, 0, layout.maxPeers - 1);
    return layout.globalSlots + peer * layout.peerSlots;
  }

  private time(v: bigint): number {
    return v === 0n ? 0 : Number(v) + this.offset;
  }

  peerCounters(peer: PeerId): PeerCounters {
    const b = this.peerBase(peer);
    const c = this.counters;
    return {
      txBytes: Number(c[b]),
      rxBytes: Number(c[b + 1]),
      txPackets: Number(c[b + 2]),
      rxPackets: Number(c[b + 3]),
      lastTxMs: this.time(c[b + 4]),
      lastRxMs: this.time(c[b + 5]),
      lastTxDataMs: this.time(c[b + 6]),
      lastRxDataMs: this.time(c[b + 7]),
    };
  }

  private dropsAt(base: number): Record<DropReason, number> {
    const out = {} as Record<DropReason, number>;
    DROP_REASONS.forEach((r, i) => (out[r] = Number(this.counters[base + i])));
    return out;
  }

  drops(): Record<DropReason, number> {
    return this.dropsAt(0);
  }

  peerDrops(peer: PeerId): Record<DropReason, number> {
    return this.dropsAt(this.peerBase(peer) + layout.peerDrops);
  }

  /** The peer the allowed-IPs table sends `address` to (longest prefix), or null. */
  route(address: string): PeerId | null {
    const r = addon.engineRoute(this.handle, address) as number;
    return r < 0 ? null : r;
  }

  /** Test hook: sets the next send counter of a keypair (REKEY/REJECT_AFTER_MESSAGES tests). */
  testSetSendCounter(localIndex: number, counter: bigint): void {
    addon.engineTestSetSendCounter(this.handle, localIndex, counter);
  }

  /** Test hook: makes a keypair `ms` older (REJECT_AFTER_TIME tests, no 180 s wait). */
  testAgeKeypair(localIndex: number, ms: number): void {
    addon.engineTestAgeKeypair(this.handle, localIndex, ms);
  }

  /** Test hook: the NAT flow table as `buckets` buckets of 4 ways (a power of two; flows forgotten), so a test can fill one. */
  testNatBuckets(buckets: number): void {
    addon.engineTestNatBuckets(this.handle, buckets);
  }

  /** Test hook: makes every NAT flow `ms` older (idle timeout tests without the wait). */
  testAgeFlows(ms: number): void {
    addon.engineTestAgeFlows(this.handle, ms);
  }

  /** Test hook: at most `max` events wait in C for the control plane (full-queue tests; the default is layout.eventQueueMax). */
  testEventCap(max: number): void {
    addon.engineTestEventCap(this.handle, max);
  }

  /** Test hook: while held, events stay queued in C (as while the node thread is busy); released, what piled up is delivered. */
  testHoldEvents(hold: boolean): void {
    addon.engineTestHoldEvents(this.handle, hold);
  }

  setPublicKey(publicKey: Uint8Array): void {
    if (!(publicKey instanceof Uint8Array) || publicKey.length !== 32) throw new TypeError('setPublicKey: 32-byte public key required');
    addon.engineSetPublicKey(this.handle, publicKey);
  }

  /**
   * Global receive-side counts: handshake messages handed to the control plane, keepalives,
   * how often the handshake gate went under load, the source addresses its rate limiter
   * tracks, and the session-key memory locked in RAM or not (mlock refused by
   * RLIMIT_MEMLOCK; either way excluded from core dumps), the receive batches that
   * another engine of this process ran after sending them (the sibling poll of a pod
   * host's pods, TENC_SIBLING_POLL), and the events a full event queue refused
   * (keypair_confirmed, need_handshake, rekey_needed and endpoint are made again by the
   * next packet, each try counted; route misses are not; 0 unless the control plane
   * fell behind by 65536 events).
   */
  stats(): {
    handshakesReceived: number;
    keepalivesReceived: number;
    underLoadEpisodes: number;
    ratelimitSources: number;
    keyBytesLocked: number;
    keyBytesUnlocked: number;
    siblingBatches: number;
    eventsLost: number;
  } {
    return {
      handshakesReceived: Number(this.counters[layout.handshakeRx]),
      keepalivesReceived: Number(this.counters[layout.keepaliveRx]),
      underLoadEpisodes: Number(this.counters[layout.underLoad]),
      ratelimitSources: Number(this.counters[layout.ratelimitSources]),
      keyBytesLocked: Number(this.counters[layout.keyLocked]),
      keyBytesUnlocked: Number(this.counters[layout.keyUnlocked]),
      siblingBatches: Number(this.counters[layout.siblingRx]),
      eventsLost: Number(this.counters[layout.eventsLost]),
    };
  }

  /**
   * The data-path switches (README's switch table, read from the environment when the
   * engine was made) as this engine runs them: the environment's values after their
   * checks (a number above its maximum is the maximum, anything else the default), and
   * as in effect where the engine's mode decides (inlineTx and siblingPoll: TUN
   * injection; groIov: TUN injection with offloads; dataEpoll). 1/0 for on/off. Read
   * once when the engine was made, so also after close(); undefined from an addon
   * built before it reported them.
   */
  switches(): Record<string, number> | undefined {
    return this.switchValues === undefined ? undefined : { ...this.switchValues };
  }

  onEvents(handler: (events: PlaneEvent[]) => void): void {
    this.handlers.push(handler);
  }

  /** Stops the engine threads, zeroes keys, closes the fds. Idempotent. */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      addon.engineClose(this.handle);
      this.handlers = [];
    }
    return Promise.resolve();
  }
}

/**
 * Feeds `counters` in order to a fresh native replay window (native/replay.h) the
 * way the receive path does (check, then commit): 1 = accepted, 0 = rejected.
 * For tests of the window that runs in C.
 */
export function replayRun(counters: bigint[]): Uint8Array {
  return addon.replayRun(BigUint64Array.from(counters)) as Uint8Array;
}

/**
 * Runs a fresh native back-off (native/engine_internal.h: the busy poll's, the inline
 * reply's) through one chance per element of `caught`: 1 where it tried, and a try
 * then catches something when `caught` has 1 there. For tests of the back-off in C.
 */
export function backoffRun(limit: number, caught: number[]): Uint8Array {
  return addon.backoffRun(limit, Uint8Array.from(caught)) as Uint8Array;
}

export interface OpenNativePlaneOptions {
  /** TUN device name (default tenc0). */
  device?: string;
  listenPort: number;
  fwmark?: number;
  mode: 'raw' | 'tun';
  /** Default for the three switches below (default true); false forces the plain path. */
  offloads?: boolean;
  /** IFF_VNET_HDR with TSO/USO on the TUN device; also enables merging received TCP runs before injection. */
  tunOffloads?: boolean;
  /** UDP_SEGMENT on send. */
  udpGso?: boolean;
  /** UDP_GRO on receive. */
  udpGro?: boolean;
  mtu?: number;
}

/** Opens the device and sockets and starts a NativePlane over them (closing them again on failure). */
export function openNativePlane(opts: OpenNativePlaneOptions): NativePlane {
  const offloads = opts.offloads ?? true;
  const fds: number[] = [];
  try {
    const tun = openTun(opts.device ?? 'tenc0', { offloads: opts.tunOffloads ?? offloads });
    fds.push(tun.fd);
    const udp = openUdp(opts.listenPort, { fwmark: opts.fwmark ?? 0, gro: opts.udpGro ?? offloads });
    fds.push(udp.fd);
    let raw4: number | undefined;
    let raw6: number | undefined;
    if (opts.mode === 'raw') {
      raw4 = openRaw(4, opts.fwmark ?? 0);
      fds.push(raw4);
      raw6 = openRaw(6, opts.fwmark ?? 0);
      fds.push(raw6);
    }
    return new NativePlane({
      tun,
      udp,
      mode: opts.mode,
      raw4,
      raw6,
      udpGso: (opts.udpGso ?? offloads) && udp.gso,
      mtu: opts.mtu,
    });
  } catch (err) {
    for (const fd of fds) closeFd(fd);
    throw err;
  }
}
