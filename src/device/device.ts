/**
 * The control plane of one tenc interface: our identity, the peers, and the protocol that
 * runs between them (handshakes, keypair slots, timers), driving a DataPlane that moves the
 * packets. Per handshake and per tick, never per packet.
 *
 * Inputs:
 *   plane events   handshake    -> decode gate -> consume -> respond / install keys
 *                  need_handshake, rekey_needed -> timer hooks -> initiate when allowed
 *                  keypair_confirmed -> next keypair becomes current (responder)
 *                  endpoint     -> record the peer's new address (roaming)
 *   tick()         polls each peer's counters, turns changes into timer hooks (data
 *                  sent/received), runs the timers, carries out their actions
 *   API            add/update/remove peers at runtime, status
 *
 * Under load (more than `underLoadThreshold` handshake messages in a second, and for
 * UNDER_LOAD_AFTER_TIME after), initiations and responses need a valid mac2 and get a cookie
 * reply otherwise (whitepaper §5.3). Only initiations and responses of the right size whose
 * mac1 is made with our public key count toward that load: cookie replies never, nor
 * messages refused before (bad length/type/reserved bytes, bad mac1, each a counted failure),
 * so junk from spoofed sources that knows nothing of us cannot make real peers wait.
 *
 * Logs carry fixed keys and key fingerprints, never keys. What it takes and reports (options,
 * peer config, status) and the checks of a caller's arguments are in api.ts; the DataPlane
 * it drives is plane.ts.
 */
import { randomBytes } from '@noble/hashes/utils.js';
import {
  DROP_REASONS,
  type DataPlane,
  type DropReason,
  type Endpoint,
  type PeerCounters,
  type PeerId,
  type PlaneEvent,
} from './plane.js';
import {
  HANDSHAKE_FAILURES,
  checkEndpoint,
  checkKeepalive,
  checkPsk,
  nonZero,
  toKeyBytes,
  type DeviceOptions,
  type DeviceStatus,
  type HandshakeFailure,
  type LoggerLike,
  type PeerConfig,
  type PeerStatus,
  type PeerUpdate,
} from './api.js';
import {
  clearHandshake,
  consumeCookieReply,
  consumeInitiation,
  consumeResponse,
  createInitiation,
  createResponse,
  endpointBytes,
  makeHandshakePeer,
  makeIdentity,
  type HandshakeReason,
} from '../noise/handshake.js';
import { verifyMac1 } from '../noise/cookie.js';
import { Keypair, type SlotChange } from '../noise/keypairs.js';
import type { TimerAction } from '../noise/timers.js';
import { systemClock, type Clock, type LocalIdentity } from '../noise/types.js';
import { AllowedIps, canonicalCidr } from '../peer/allowedips.js';
import { Peer } from '../peer/peer.js';
import { PeerRegistry } from '../peer/registry.js';
import { decodeMessage } from '../wire/messages.js';
import {
  KEY_SIZE,
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  UNDER_LOAD_AFTER_TIME,
} from '../wire/constants.js';
import { keyFingerprint } from '../log.js';

const NOOP_LOGGER: LoggerLike = { info() {}, warn() {}, debug() {} };
const ZERO_PSK = new Uint8Array(KEY_SIZE);

export class Device {
  readonly publicKey: Uint8Array;
  readonly fingerprint: string;
  private readonly local: LocalIdentity;
  private readonly plane: DataPlane;
  private readonly clock: Clock;
  private readonly wallClock: () => number;
  private readonly log: LoggerLike;
  private readonly jitter: (() => number) | undefined;
  private devicePsk: Uint8Array;
  private readonly registry: PeerRegistry;
  private readonly allowed = new AllowedIps<Peer>();
  private readonly failures = Object.fromEntries(HANDSHAKE_FAILURES.map((r) => [r, 0])) as Record<HandshakeFailure, number>;
  private readonly underLoadThreshold: number;
  private loadWindowStart = 0;
  private loadCount = 0;
  private underLoadUntil = -Infinity;
  private lastPollMs: number;
  /** Handshake/keepalive sends the plane refused (threw or returned false); the timers retry. */
  sendErrors = 0;
  /** Peers whose tick threw (a bug, or a plane call failing): logged, the next tick goes on. */
  tickErrors = 0;
  private interval: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(opts: DeviceOptions) {
    if (opts === null || typeof opts !== 'object') throw new TypeError('device: options required');
    const priv = toKeyBytes(opts.privateKey, 'device: privateKey');
    if (!opts.plane || typeof opts.plane.onEvents !== 'function') throw new TypeError('device: a DataPlane is required');
    const random = opts.random ?? randomBytes;
    this.local = makeIdentity(priv, { random });
    this.publicKey = this.local.publicKey;
    this.fingerprint = keyFingerprint(this.publicKey);
    this.plane = opts.plane;
    this.clock = opts.clock ?? systemClock;
    this.wallClock = opts.wallClock ?? Date.now;
    this.log = opts.logger ?? NOOP_LOGGER;
    this.jitter = opts.jitter;
    this.devicePsk = opts.psk === undefined ? Uint8Array.from(ZERO_PSK) : Uint8Array.from(checkPsk(opts.psk, 'device: psk'));
    this.registry = new PeerRegistry(random);
    const t = opts.underLoadThreshold ?? 64;
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 0) throw new RangeError('device: underLoadThreshold must be a non-negative integer');
    this.underLoadThreshold = t;
    this.lastPollMs = this.clock.now();
    this.plane.onEvents((events) => this.handleEvents(events));
    // mac1 is checked in the plane (C) before a handshake message costs this thread anything.
    this.plane.setPublicKey?.(this.publicKey);
  }

  // ---- peers ------------------------------------------------------------------------------

  addPeer(cfg: PeerConfig): PeerId {
    this.assertOpen();
    if (cfg === null || typeof cfg !== 'object') throw new TypeError('peer config must be an object');
    const publicKey = toKeyBytes(cfg.publicKey, 'peer publicKey');
    if (this.registry.byPublicKey(publicKey)) throw new Error(`peer ${keyFingerprint(publicKey)} already exists`);
    if (Buffer.from(publicKey).equals(Buffer.from(this.publicKey))) throw new RangeError('peer publicKey is our own key');
    const endpoint = checkEndpoint(cfg.endpoint);
    const keepalive = checkKeepalive(cfg.persistentKeepalive);
    const ownPsk = cfg.psk !== undefined;
    const psk = cfg.psk === undefined ? this.devicePsk : cfg.psk === null ? ZERO_PSK : checkPsk(cfg.psk, 'peer psk');
    const cidrs = (cfg.allowedIps ?? []).map((c) => canonicalCidr(c));
    const handshake = makeHandshakePeer(this.local, publicKey, psk); // RangeError for a low-order key
    const peer = new Peer({
      id: this.registry.freeId(),
      publicKey,
      handshake,
      endpoint,
      clock: this.clock,
      jitter: this.jitter,
      persistentKeepaliveMs: keepalive * 1000,
      ownPsk,
    });
    this.registry.add(peer);
    this.plane.addPeer(peer.id, endpoint);
    for (const c of cidrs) this.addAllowedIp(peer, c);
    peer.lastCounters = this.plane.peerCounters(peer.id);
    this.log.info({ event: 'peer_added', peer: peer.fingerprint, peerId: peer.id, allowedIps: cidrs.length }, 'peer added');
    return peer.id;
  }

  updatePeer(publicKey: Uint8Array | string, upd: PeerUpdate): void {
    this.assertOpen();
    const peer = this.mustFind(publicKey);
    if (upd === null || typeof upd !== 'object') throw new TypeError('peer update must be an object');
    if (upd.endpoint !== undefined) {
      const e = checkEndpoint(upd.endpoint);
      peer.endpoint = e;
      if (e) this.plane.setEndpoint(peer.id, e);
      if (e && peer.initiationBlocked) peer.timers.requestHandshake();
    }
    if (upd.allowedIps !== undefined) {
      const want = new Set(upd.allowedIps.map((c) => canonicalCidr(c)));
      for (const c of [...peer.allowedIps]) if (!want.has(c)) this.removeAllowedIp(peer, c);
      for (const c of want) if (!peer.allowedIps.has(c)) this.addAllowedIp(peer, c);
    }
    if (upd.psk !== undefined) {
      const psk = upd.psk === null ? ZERO_PSK : checkPsk(upd.psk, 'peer psk');
      const old = peer.handshake.psk;
      peer.handshake.psk = Uint8Array.from(psk);
      old.fill(0);
      peer.ownPsk = true;
    }
    if (upd.persistentKeepalive !== undefined) {
      const s = checkKeepalive(upd.persistentKeepalive);
      peer.persistentKeepaliveMs = s * 1000;
      peer.timers.setPersistentKeepalive(s * 1000);
    }
    this.log.info({ event: 'peer_updated', peer: peer.fingerprint, peerId: peer.id }, 'peer updated');
    this.service(peer);
  }

  /** Replaces the device psk for every peer that has no psk of its own. */
  setPsk(psk: Uint8Array): void {
    const fresh = Uint8Array.from(checkPsk(psk, 'device psk'));
    this.devicePsk.fill(0);
    this.devicePsk = fresh;
    for (const p of this.registry.peers()) {
      if (p.ownPsk) continue;
      const old = p.handshake.psk;
      p.handshake.psk = Uint8Array.from(this.devicePsk);
      old.fill(0);
    }
  }

  removePeer(publicKey: Uint8Array | string): boolean {
    const peer = this.registry.byPublicKey(toKeyBytes(publicKey, 'peer publicKey'));
    if (!peer) return false;
    peer.timers.stop();
    peer.keypairs.clear();
    clearHandshake(peer.handshake);
    peer.handshake.psk.fill(0);
    peer.handshake.staticStatic.fill(0);
    for (const c of [...peer.allowedIps]) this.allowed.remove(c, peer);
    this.registry.remove(peer);
    this.plane.removePeer(peer.id);
    this.log.info({ event: 'peer_removed', peer: peer.fingerprint, peerId: peer.id }, 'peer removed');
    return true;
  }

  peerId(publicKey: Uint8Array | string): PeerId | undefined {
    return this.registry.byPublicKey(toKeyBytes(publicKey, 'peer publicKey'))?.id;
  }

  /** Starts a handshake with the peer now (subject to the one-per-REKEY_TIMEOUT limit). */
  initiate(publicKey: Uint8Array | string): void {
    const peer = this.mustFind(publicKey);
    peer.timers.requestHandshake();
    this.service(peer);
  }

  // ---- status -----------------------------------------------------------------------------

  peerStatus(peer: Peer): PeerStatus {
    const c = this.plane.peerCounters(peer.id);
    return {
      id: peer.id,
      publicKey: peer.keyText,
      fingerprint: peer.fingerprint,
      endpoint: peer.endpoint ? { ...peer.endpoint } : null,
      allowedIps: [...peer.allowedIps],
      latestHandshakeMs: peer.latestHandshakeMs,
      latestHandshakeUnixMs: peer.latestHandshakeUnixMs,
      rxBytes: c.rxBytes,
      txBytes: c.txBytes,
      rxPackets: c.rxPackets,
      txPackets: c.txPackets,
      persistentKeepalive: peer.persistentKeepaliveMs / 1000,
      hasSession: peer.keypairs.sendKeypair(this.clock.now()) !== null,
      drops: nonZero(this.plane.peerDrops(peer.id)),
      initiationsSent: peer.stats.initiationsSent,
      handshakesCompleted: peer.stats.handshakesCompleted,
    };
  }

  status(): DeviceStatus {
    return {
      publicKey: Buffer.from(this.publicKey).toString('base64'),
      fingerprint: this.fingerprint,
      underLoad: this.clock.now() < this.underLoadUntil,
      peers: this.registry.peers().map((p) => this.peerStatus(p)),
      handshakeFailures: nonZero(this.failures),
      drops: nonZero(this.plane.drops()),
      ...(this.plane.stats ? { plane: this.plane.stats() } : {}),
    };
  }

  handshakeFailures(): Record<HandshakeFailure, number> {
    return { ...this.failures };
  }

  // ---- running ----------------------------------------------------------------------------

  /** Polls counters and runs every peer's timers. Call regularly (start() does). */
  tick(): void {
    if (this.closed) return;
    const now = this.clock.now();
    // Runs from setInterval: nothing may escape (an uncaught exception ends the pod).
    for (const peer of this.registry.peers()) {
      try {
        this.poll(peer, now);
        this.service(peer);
      } catch (err) {
        this.tickErrors++;
        this.log.warn({ event: 'tick_failed', peer: peer.fingerprint, peerId: peer.id, err: (err as Error).message }, 'peer tick failed');
      }
    }
    this.lastPollMs = now;
  }

  /** Ticks on a real interval (unref'd). */
  start(intervalMs = 250): void {
    if (this.interval) return;
    this.interval = setInterval(() => this.tick(), intervalMs);
    this.interval.unref();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (this.interval) clearInterval(this.interval);
    this.interval = null;
    for (const p of this.registry.peers()) this.removePeer(p.publicKey);
    this.local.privateKey.fill(0);
    this.devicePsk.fill(0);
    this.closed = true;
  }

  // ---- counters -> timer hooks ------------------------------------------------------------

  /**
   * Turns counter changes since the last poll into timer hooks, in time order; at equal
   * times arming hooks run before disarming ones, so traffic both ways in the same instant
   * leaves neither a keepalive nor a new handshake pending.
   */
  private poll(peer: Peer, now: number): void {
    const c = this.plane.peerCounters(peer.id);
    const last: PeerCounters = peer.lastCounters ?? c;
    peer.lastCounters = c;
    const own = peer.ownKeepalives;
    peer.ownKeepalives = 0;
    const at = (t: number): number => (t >= this.lastPollMs && t <= now ? t : now);
    const hooks: { t: number; order: number; run: () => void }[] = [];
    const tm = peer.timers;
    if (c.txPackets - last.txPackets > own) {
      const t = at(c.lastTxMs);
      hooks.push({ t, order: 1, run: () => tm.anyAuthenticatedPacketSent(t) });
      hooks.push({ t, order: 0, run: () => tm.anyAuthenticatedPacketTraversal(t) });
    }
    if (c.lastTxDataMs !== last.lastTxDataMs) {
      const t = at(c.lastTxDataMs);
      hooks.push({ t, order: 0, run: () => tm.dataSent(t) });
    }
    if (c.rxPackets !== last.rxPackets) {
      const t = at(c.lastRxMs);
      hooks.push({ t, order: 1, run: () => tm.anyAuthenticatedPacketReceived(t) });
      hooks.push({ t, order: 0, run: () => tm.anyAuthenticatedPacketTraversal(t) });
    }
    if (c.lastRxDataMs !== last.lastRxDataMs) {
      const t = at(c.lastRxDataMs);
      hooks.push({ t, order: 0, run: () => tm.dataReceived(t) });
    }
    hooks.sort((a, b) => a.t - b.t || a.order - b.order);
    for (const h of hooks) h.run();
  }

  /** Runs the peer's timers and carries out what they ask. */
  private service(peer: Peer): void {
    if (this.closed || this.registry.byPeerId(peer.id) !== peer) return;
    for (const a of peer.timers.tick(this.clock.now())) this.act(peer, a);
  }

  private act(peer: Peer, a: TimerAction): void {
    switch (a.type) {
      case 'initiate':
        this.sendInitiation(peer, a.retry, a.reason);
        return;
      case 'keepalive':
        if (peer.keypairs.sendKeypair(this.clock.now()) && this.trySend(peer, 'keepalive', () => this.plane.sendKeepalive(peer.id))) {
          peer.ownKeepalives++;
          peer.stats.keepalivesSent++;
        }
        return;
      case 'give_up':
        this.log.info({ event: 'handshake_gave_up', peer: peer.fingerprint, peerId: peer.id }, 'no handshake response, dropping queued packets');
        this.plane.flushQueue(peer.id);
        this.forgetHandshake(peer);
        return;
      case 'expired':
        this.applySlots(peer, a);
        this.log.debug({ event: 'keypairs_expired', peer: peer.fingerprint, count: a.dropped.length }, 'keypairs expired');
        return;
      case 'zero_keys':
        this.applySlots(peer, a);
        this.forgetHandshake(peer);
        this.log.info({ event: 'keys_zeroed', peer: peer.fingerprint, peerId: peer.id }, 'session keys zeroed after inactivity');
        return;
    }
  }

  /**
   * Mirrors a slot change into the data plane (dropped keypairs are already zeroed). The new
   * send keypair is set before the dropped ones are removed: removing the send keypair first
   * would leave the plane without one for a moment, queueing packets and raising a
   * need_handshake that arrives after the handshake completed.
   */
  private applySlots(peer: Peer, ch: SlotChange): void {
    if (ch.sendChanged) {
      const cur = peer.keypairs.sendKeypair(this.clock.now());
      this.plane.setSendKeypair(peer.id, cur ? cur.localIndex : null);
    }
    for (const kp of ch.dropped) {
      this.plane.removeKeypair(kp.localIndex);
      this.registry.releaseIndex(kp.localIndex);
    }
  }

  /**
   * Gives a fresh keypair's keys to the plane, which keeps its own copy (the native engine in
   * its key vault, the reference plane in its keypair), and zeroes every copy on this side:
   * the handshake's SessionKeys and the Keypair's (which from then on only keeps the slots).
   */
  private handKeysToPlane(peer: Peer, kp: Keypair, keys: { sendKey: Uint8Array; recvKey: Uint8Array }): void {
    keys.sendKey.fill(0);
    keys.recvKey.fill(0);
    try {
      this.plane.addKeypair(peer.id, { localIndex: kp.localIndex, remoteIndex: kp.remoteIndex, sendKey: kp.sendKey, recvKey: kp.recvKey });
    } finally {
      kp.releaseKeys();
    }
  }

  private forgetHandshake(peer: Peer): void {
    clearHandshake(peer.handshake);
    if (peer.handshakeIndex !== null && !peer.keypairs.lookup(peer.handshakeIndex)) this.registry.releaseIndex(peer.handshakeIndex);
    peer.handshakeIndex = null;
  }

  private sendInitiation(peer: Peer, retry: boolean, reason: string): void {
    if (!peer.endpoint) {
      peer.initiationBlocked = true; // retried when an endpoint is configured
      this.log.debug({ event: 'initiation_skipped', peer: peer.fingerprint, reason: 'no_endpoint' }, 'no endpoint');
      return;
    }
    peer.initiationBlocked = false;
    const now = this.clock.now();
    this.forgetHandshake(peer);
    const index = this.registry.allocateIndex(peer);
    peer.handshakeIndex = index;
    const msg = createInitiation(this.local, peer.handshake, index, now);
    const endpoint = peer.endpoint;
    const sent = this.trySend(peer, 'initiation', () => this.plane.sendHandshake(endpoint, msg));
    if (sent) peer.stats.initiationsSent++;
    // Armed even when the send failed: the plane reports need_handshake once until a
    // session or a flush, so the retransmit timer is what tries again.
    peer.timers.handshakeInitiated(retry, now);
    if (!sent) return;
    peer.timers.anyAuthenticatedPacketSent(now);
    peer.timers.anyAuthenticatedPacketTraversal(now);
    this.log.debug({ event: 'initiation_sent', peer: peer.fingerprint, peerId: peer.id, reason, retry }, 'handshake initiation sent');
  }

  /**
   * Runs one plane send; a send that throws (ENETUNREACH, EPERM, ...) or returns false
   * is counted and logged, and reported as not sent. The protocol timers retry.
   */
  private trySend(peer: Peer | undefined, what: string, send: () => unknown): boolean {
    let ok: boolean;
    let err: string | undefined;
    try {
      ok = send() !== false;
    } catch (e) {
      ok = false;
      err = (e as Error).message;
    }
    if (!ok) {
      this.sendErrors++;
      this.log.warn({ event: 'send_failed', what, peer: peer?.fingerprint, peerId: peer?.id, err }, 'plane send failed');
    }
    return ok;
  }

  // ---- plane events -----------------------------------------------------------------------

  private handleEvents(events: PlaneEvent[]): void {
    if (this.closed) return;
    for (const ev of events) {
      try {
        this.handleEvent(ev);
      } catch (err) {
        // A bug here must not take the data plane's callback down with it.
        this.log.warn({ event: 'event_failed', type: ev.type, err: (err as Error).message }, 'plane event failed');
      }
    }
  }

  private handleEvent(ev: PlaneEvent): void {
    switch (ev.type) {
      case 'handshake':
        this.receiveHandshake(ev.data, ev.from);
        return;
      case 'need_handshake': {
        const peer = this.registry.byPeerId(ev.peer);
        if (!peer) return;
        peer.timers.needHandshake();
        this.service(peer);
        return;
      }
      case 'rekey_needed': {
        const peer = this.registry.byPeerId(ev.peer);
        if (!peer) return;
        peer.timers.rekeyNeeded();
        this.service(peer);
        return;
      }
      case 'keypair_confirmed': {
        const peer = this.registry.byPeerId(ev.peer);
        if (!peer) return;
        const ch = peer.keypairs.received(ev.localIndex);
        if (!ch.confirmed) return;
        this.applySlots(peer, ch);
        this.handshakeDone(peer, 'responder');
        return;
      }
      case 'endpoint': {
        const peer = this.registry.byPeerId(ev.peer);
        if (!peer) return;
        peer.endpoint = { ...ev.endpoint };
        this.log.debug({ event: 'endpoint_changed', peer: peer.fingerprint, peerId: peer.id }, 'peer roamed');
        return;
      }
    }
  }

  private fail(reason: HandshakeFailure, from: Endpoint, peer?: Peer): void {
    this.failures[reason]++;
    this.log.debug({ event: 'handshake_failed', reason, peer: peer?.fingerprint, from: `${from.address}:${from.port}` }, 'handshake message refused');
  }

  /**
   * Counts a handshake message toward load (per one-second window); returns whether we are
   * under load. Called only for initiations and responses with a valid mac1.
   */
  private noteHandshakeLoad(now: number): boolean {
    if (now - this.loadWindowStart >= 1000) {
      this.loadWindowStart = now;
      this.loadCount = 0;
    }
    this.loadCount++;
    if (this.loadCount > this.underLoadThreshold) this.underLoadUntil = now + UNDER_LOAD_AFTER_TIME;
    return now < this.underLoadUntil;
  }

  private receiveHandshake(data: Uint8Array, from: Endpoint): void {
    const now = this.clock.now();
    const dec = decodeMessage(data);
    if (!dec.ok) return this.fail(dec.reason, from);
    const msg = dec.message;
    let underLoad = false;
    if (msg.type === MESSAGE_INITIATION || msg.type === MESSAGE_RESPONSE) {
      // mac1 before the load count: only a message made for our public key counts.
      if (!verifyMac1(this.local, msg.bytes)) {
        return this.fail('bad_mac1', from, msg.type === MESSAGE_RESPONSE ? this.registry.byReceiverIndex(msg.receiverIndex) : undefined);
      }
      underLoad = this.noteHandshakeLoad(now);
    }
    const ctx = { nowMs: now, underLoad, source: endpointBytes(from.address, from.port) };
    const byIndex = (i: number) => this.registry.byReceiverIndex(i)?.handshake;
    switch (msg.type) {
      case MESSAGE_INITIATION: {
        const res = consumeInitiation(this.local, msg, (k) => this.registry.byPublicKey(k)?.handshake, ctx);
        if (!res.ok) {
          if (res.cookieReply) this.trySend(undefined, 'cookie_reply', () => this.plane.sendHandshake(from, res.cookieReply!));
          return this.fail(res.reason, from);
        }
        const peer = this.registry.byPublicKey(res.peer.remoteStatic);
        if (!peer) return this.fail('unknown_peer', from);
        this.authenticatedFrom(peer, from, now);
        const index = this.registry.allocateIndex(peer);
        const { message, keys } = createResponse(this.local, peer.handshake, index, now);
        const kp = new Keypair(keys, now);
        this.handKeysToPlane(peer, kp, keys);
        this.applySlots(peer, peer.keypairs.install(kp));
        // Our own initiation in flight (if any) lost the race; its index is no longer needed.
        if (peer.handshakeIndex !== null) this.registry.releaseIndex(peer.handshakeIndex);
        peer.handshakeIndex = null;
        // Not sent: the initiator retransmits, and gets a response then.
        if (this.trySend(peer, 'response', () => this.plane.sendHandshake(peer.endpoint ?? from, message))) peer.stats.responsesSent++;
        peer.timers.handshakeResponseSent(now);
        peer.timers.anyAuthenticatedPacketSent(now);
        peer.timers.anyAuthenticatedPacketTraversal(now);
        peer.timers.sessionDerived(now);
        this.log.debug({ event: 'response_sent', peer: peer.fingerprint, peerId: peer.id }, 'handshake response sent');
        this.service(peer);
        return;
      }
      case MESSAGE_RESPONSE: {
        const res = consumeResponse(this.local, msg, byIndex, ctx);
        if (!res.ok) {
          if (res.cookieReply) this.trySend(undefined, 'cookie_reply', () => this.plane.sendHandshake(from, res.cookieReply!));
          return this.fail(res.reason, from, this.registry.byReceiverIndex(msg.receiverIndex));
        }
        const peer = this.registry.byReceiverIndex(res.keys.localIndex);
        if (!peer || peer.handshake !== res.peer) return this.fail('unknown_index', from);
        peer.handshakeIndex = null; // the index now names the keypair
        this.authenticatedFrom(peer, from, now);
        const kp = new Keypair(res.keys, now);
        this.handKeysToPlane(peer, kp, res.keys);
        this.applySlots(peer, peer.keypairs.install(kp));
        peer.timers.sessionDerived(now);
        this.handshakeDone(peer, 'initiator');
        // Confirm the session at once: queued packets went out with setSendKeypair; a
        // keepalive covers the case where none were waiting.
        if (this.trySend(peer, 'keepalive', () => this.plane.sendKeepalive(peer.id))) peer.ownKeepalives++;
        peer.timers.anyAuthenticatedPacketSent(now);
        peer.timers.anyAuthenticatedPacketTraversal(now);
        this.service(peer);
        return;
      }
      case MESSAGE_COOKIE_REPLY: {
        const res = consumeCookieReply(msg, byIndex, now);
        if (!res.ok) return this.fail(res.reason, from, this.registry.byReceiverIndex(msg.receiverIndex));
        this.log.debug({ event: 'cookie_received', peer: this.registry.byReceiverIndex(msg.receiverIndex)?.fingerprint }, 'cookie reply accepted');
        return;
      }
      default:
        return this.fail('not_handshake', from);
    }
  }

  /** A handshake message from `peer` authenticated: timers, and roaming to its source. */
  private authenticatedFrom(peer: Peer, from: Endpoint, now: number): void {
    peer.timers.anyAuthenticatedPacketReceived(now);
    peer.timers.anyAuthenticatedPacketTraversal(now);
    if (!peer.endpoint || peer.endpoint.address !== from.address || peer.endpoint.port !== from.port) {
      peer.endpoint = { ...from };
      this.plane.setEndpoint(peer.id, from);
    }
  }

  private handshakeDone(peer: Peer, role: 'initiator' | 'responder'): void {
    const now = this.clock.now();
    peer.timers.handshakeComplete(now);
    peer.latestHandshakeMs = now;
    peer.latestHandshakeUnixMs = this.wallClock();
    peer.stats.handshakesCompleted++;
    this.log.info({ event: 'handshake_complete', peer: peer.fingerprint, peerId: peer.id, role }, 'session established');
  }

  // ---- helpers ------------------------------------------------------------------------------

  private addAllowedIp(peer: Peer, cidr: string): void {
    const prev = this.allowed.get(cidr);
    if (prev && prev !== peer) {
      prev.allowedIps.delete(cidr);
      this.plane.removeAllowedIp(prev.id, cidr);
      this.log.info({ event: 'allowed_ip_moved', cidr, from: prev.fingerprint, to: peer.fingerprint }, 'allowed IP moved to another peer');
    }
    this.allowed.insert(cidr, peer);
    peer.allowedIps.add(cidr);
    this.plane.addAllowedIp(peer.id, cidr);
  }

  private removeAllowedIp(peer: Peer, cidr: string): void {
    this.allowed.remove(cidr, peer);
    peer.allowedIps.delete(cidr);
    this.plane.removeAllowedIp(peer.id, cidr);
  }

  private mustFind(publicKey: Uint8Array | string): Peer {
    const peer = this.registry.byPublicKey(toKeyBytes(publicKey, 'peer publicKey'));
    if (!peer) throw new Error('no such peer');
    return peer;
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('device closed');
  }
}

export { DROP_REASONS };
export type { HandshakeReason };
