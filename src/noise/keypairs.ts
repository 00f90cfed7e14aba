/**
 * Transport keypairs of one peer in three slots, as WireGuard keeps them
 * (whitepaper §6.1 - §6.3; the Linux implementation's noise_keypairs):
 *
 *   current   the keypair packets are sent with (and received with);
 *   previous  the one before, still accepted on receive so packets in flight are not lost;
 *   next      the responder's fresh keypair, received with but not sent with until the
 *             initiator proves it holds it (key confirmation: the first authentic
 *             transport message received with it).
 *
 * Transitions:
 *   install(initiator kp): current <- kp at once; previous <- old current (or, if an
 *                          unconfirmed next existed, previous <- that next and the old
 *                          current is dropped); old previous dropped.
 *   install(responder kp): next <- kp; old next and old previous dropped; current kept.
 *   confirm(next):         previous <- current, current <- next; old previous dropped.
 *
 * Limits: a keypair sends at most REJECT_AFTER_MESSAGES messages and lives
 * REJECT_AFTER_TIME ms; the initiator wants a new one after REKEY_AFTER_MESSAGES or
 * REKEY_AFTER_TIME ms. A dropped keypair's keys are zeroed (fill(0)).
 * Pure: times are clock ms passed in by the caller.
 */
import {
  REJECT_AFTER_MESSAGES,
  REJECT_AFTER_TIME,
  REKEY_AFTER_MESSAGES,
  REKEY_AFTER_TIME,
  KEY_SIZE,
} from '../wire/constants.js';
import { ReplayWindow } from './replay.js';
import type { SessionKeys } from './types.js';

function assertKey(k: unknown, name: string): asserts k is Uint8Array {
  if (!(k instanceof Uint8Array)) throw new TypeError(`${name} must be a Uint8Array`);
  if (k.length !== KEY_SIZE) throw new RangeError(`${name} must be ${KEY_SIZE} bytes, got ${k.length}`);
}

function assertU32(v: unknown, name: string): asserts v is number {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new TypeError(`${name} must be an integer`);
  if (v < 0 || v > 0xffffffff) throw new RangeError(`${name} must be a u32, got ${v}`);
}

export class Keypair {
  readonly localIndex: number;
  readonly remoteIndex: number;
  readonly isInitiator: boolean;
  /** Clock ms when the handshake derived it. */
  readonly createdMs: number;
  /**
   * Own copies of the keys (the caller's arrays are not kept), until releaseKeys(): the
   * device hands them to the data plane, which keeps its own, and zeroes these at once.
   */
  readonly sendKey: Uint8Array;
  readonly recvKey: Uint8Array;
  /** Receive-side replay window. */
  readonly replay = new ReplayWindow();
  private sendCounter = 0n;
  private zeroedFlag = false;

  constructor(keys: SessionKeys, createdMs: number) {
    if (keys === null || typeof keys !== 'object') throw new TypeError('keypair: keys must be an object');
    assertKey(keys.sendKey, 'keypair: sendKey');
    assertKey(keys.recvKey, 'keypair: recvKey');
    assertU32(keys.localIndex, 'keypair: localIndex');
    assertU32(keys.remoteIndex, 'keypair: remoteIndex');
    if (typeof keys.isInitiator !== 'boolean') throw new TypeError('keypair: isInitiator must be a boolean');
    if (typeof createdMs !== 'number' || !Number.isFinite(createdMs)) throw new TypeError('keypair: createdMs must be a finite number');
    this.localIndex = keys.localIndex;
    this.remoteIndex = keys.remoteIndex;
    this.isInitiator = keys.isInitiator;
    this.createdMs = createdMs;
    this.sendKey = Uint8Array.from(keys.sendKey);
    this.recvKey = Uint8Array.from(keys.recvKey);
  }

  get zeroed(): boolean {
    return this.zeroedFlag;
  }

  /** Messages sent so far (the next counter to use). */
  get sent(): bigint {
    return this.sendCounter;
  }

  ageMs(nowMs: number): number {
    return nowMs - this.createdMs;
  }

  /** Too old to send or receive with (REJECT_AFTER_TIME). */
  expired(nowMs: number): boolean {
    return this.zeroedFlag || this.ageMs(nowMs) >= REJECT_AFTER_TIME;
  }

  canSend(nowMs: number): boolean {
    return !this.expired(nowMs) && this.sendCounter < REJECT_AFTER_MESSAGES;
  }

  canReceive(nowMs: number): boolean {
    return !this.expired(nowMs);
  }

  /**
   * Takes the next send counter, or null when the keypair must not send any more
   * (REJECT_AFTER_MESSAGES reached, expired, or zeroed).
   */
  nextSendCounter(nowMs: number): bigint | null {
    if (!this.canSend(nowMs)) return null;
    return this.sendCounter++;
  }

  /** True once the send counter reached REKEY_AFTER_MESSAGES. */
  rekeyByMessages(): boolean {
    return this.sendCounter >= REKEY_AFTER_MESSAGES;
  }

  /** True when the initiator of this keypair should start a new handshake (age or messages). */
  wantsRekey(nowMs: number): boolean {
    return this.isInitiator && (this.ageMs(nowMs) >= REKEY_AFTER_TIME || this.rekeyByMessages());
  }

  /** For tests and the counter-limit edge: jump the send counter. */
  setSendCounterForTest(n: bigint): void {
    this.sendCounter = n;
  }

  /**
   * Zeroes both keys because the data plane now holds them; the keypair keeps its place in
   * the slots (indices, age, send limits) and stays usable as far as this side's bookkeeping goes.
   */
  releaseKeys(): void {
    this.sendKey.fill(0);
    this.recvKey.fill(0);
  }

  /** Zeroes both keys; the keypair can no longer be used. */
  zero(): void {
    this.sendKey.fill(0);
    this.recvKey.fill(0);
    this.zeroedFlag = true;
  }
}

/** Which slots changed: `dropped` keypairs have been zeroed; `sendChanged` if current changed. */
export interface SlotChange {
  dropped: Keypair[];
  sendChanged: boolean;
}

export class Keypairs {
  current: Keypair | null = null;
  previous: Keypair | null = null;
  next: Keypair | null = null;

  /** Adds a keypair fresh from a handshake (see the header for the slot moves). */
  install(kp: Keypair): SlotChange {
    if (!(kp instanceof Keypair)) throw new TypeError('keypairs: install needs a Keypair');
    if (this.lookup(kp.localIndex)) throw new RangeError(`keypairs: local index ${kp.localIndex} already installed`);
    const dropped: Keypair[] = [];
    if (kp.isInitiator) {
      if (this.previous) dropped.push(this.previous);
      if (this.next) {
        // An unconfirmed next keypair is kept as previous (packets may still arrive on
        // it); the old current is dropped.
        this.previous = this.next;
        this.next = null;
        if (this.current) dropped.push(this.current);
      } else {
        this.previous = this.current;
      }
      this.current = kp;
      return { dropped: zeroAll(dropped), sendChanged: true };
    }
    if (this.next) dropped.push(this.next);
    if (this.previous) dropped.push(this.previous);
    this.next = kp;
    this.previous = null;
    return { dropped: zeroAll(dropped), sendChanged: false };
  }

  /**
   * An authentic transport message arrived with the keypair of `localIndex`. If that is
   * the next keypair, it is confirmed and becomes current.
   */
  received(localIndex: number): SlotChange & { confirmed: boolean } {
    if (!this.next || this.next.localIndex !== localIndex) return { dropped: [], sendChanged: false, confirmed: false };
    const dropped = this.previous ? [this.previous] : [];
    this.previous = this.current;
    this.current = this.next;
    this.next = null;
    return { dropped: zeroAll(dropped), sendChanged: true, confirmed: true };
  }

  /** The keypair with this local index, if held in any slot. */
  lookup(localIndex: number): Keypair | null {
    for (const kp of [this.current, this.previous, this.next]) if (kp && kp.localIndex === localIndex) return kp;
    return null;
  }

  /** The keypair to send with, or null (none, expired, or counter exhausted). */
  sendKeypair(nowMs: number): Keypair | null {
    return this.current && this.current.canSend(nowMs) ? this.current : null;
  }

  /** Drops (and zeroes) every keypair older than REJECT_AFTER_TIME. */
  expire(nowMs: number): SlotChange {
    const dropped: Keypair[] = [];
    let sendChanged = false;
    if (this.current && this.current.expired(nowMs)) {
      dropped.push(this.current);
      this.current = null;
      sendChanged = true;
    }
    if (this.previous && this.previous.expired(nowMs)) {
      dropped.push(this.previous);
      this.previous = null;
    }
    if (this.next && this.next.expired(nowMs)) {
      dropped.push(this.next);
      this.next = null;
    }
    return { dropped: zeroAll(dropped), sendChanged };
  }

  /** Drops (and zeroes) everything. */
  clear(): SlotChange {
    const dropped = this.all();
    const sendChanged = this.current !== null;
    this.current = this.previous = this.next = null;
    return { dropped: zeroAll(dropped), sendChanged };
  }

  all(): Keypair[] {
    return [this.current, this.previous, this.next].filter((k): k is Keypair => k !== null);
  }
}

function zeroAll(list: Keypair[]): Keypair[] {
  for (const kp of list) kp.zero();
  return list;
}
