/**
 * Per-peer timer state machine (WireGuard whitepaper §6.2 - §6.5), driven by an injected
 * clock. No real timers and no I/O: the owner calls the event hooks when things happen and
 * `tick()` regularly; `tick()` returns what must be done now.
 *
 * Timers and what arms / disarms / fires them:
 *   retransmit   armed by handshakeInitiated (REKEY_TIMEOUT + jitter); disarmed by
 *                handshakeComplete. Fires: resend an initiation, unless REKEY_ATTEMPT_TIME
 *                passed since the first attempt of this series: then give up (the owner
 *                drops the queued packets) and arm zeroKeys if it is not armed.
 *   keepalive    armed by dataReceived when not armed (else "need another" is noted);
 *                disarmed by anyAuthenticatedPacketSent. Fires: send a keepalive
 *                (passive keepalive, KEEPALIVE_TIMEOUT); re-arm if "need another".
 *   newHandshake armed by dataSent when not armed (KEEPALIVE_TIMEOUT + REKEY_TIMEOUT +
 *                jitter); disarmed by anyAuthenticatedPacketReceived. Fires: initiate
 *                (we sent data and heard nothing back).
 *   zeroKeys     armed by sessionDerived (REJECT_AFTER_TIME * 3). Fires: zero every keypair
 *                and the handshake in progress.
 *   persistent   armed by anyAuthenticatedPacketTraversal when a persistent keepalive
 *                interval is set. Fires: send a keepalive.
 * Key freshness (checked in hooks and in tick):
 *   dataSent with a current keypair we initiated that is REKEY_AFTER_TIME old -> initiate;
 *   dataReceived with a current keypair we initiated that is REJECT_AFTER_TIME -
 *   KEEPALIVE_TIMEOUT - REKEY_TIMEOUT old -> initiate once ("last minute");
 *   keypairs REJECT_AFTER_TIME old are dropped and zeroed.
 * Initiations that are not retries are at most one per REKEY_TIMEOUT (counting responses
 * we sent); a request made too early is kept and served when allowed. An on-demand request
 * (needHandshake) is dropped instead when, by then, the current keypair can send and is not
 * past a rekey threshold.
 *
 * Hooks take an optional time (clock ms) so a poller can report when something happened.
 * A `keepalive` action is taken as sent when tick() returns it: the owner sends it and does
 * not report it through anyAuthenticatedPacketSent. An `initiate` action is not: the owner
 * calls handshakeInitiated(retry) once the initiation is out.
 */
import {
  KEEPALIVE_TIMEOUT,
  REJECT_AFTER_TIME,
  REKEY_AFTER_TIME,
  REKEY_ATTEMPT_TIME,
  REKEY_TIMEOUT,
  REKEY_TIMEOUT_JITTER_MAX,
} from '../wire/constants.js';
import type { Keypair, Keypairs } from './keypairs.js';
import type { Clock } from './types.js';

/** A clock tests move by hand. */
export class ManualClock implements Clock {
  constructor(private ms = 0) {}
  now(): number {
    return this.ms;
  }
  advance(ms: number): number {
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) throw new RangeError(`clock: cannot advance by ${ms}`);
    this.ms += ms;
    return this.ms;
  }
  set(ms: number): void {
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < this.ms) throw new RangeError(`clock: cannot go back to ${ms}`);
    this.ms = ms;
  }
}

export type InitiateReason =
  | 'on_demand' // a packet is waiting and there is no keypair to send it with (dropped if one is usable by then)
  | 'requested' // asked for by the owner (a forced rekey), with or without a usable keypair
  | 'retransmit' // no response to our initiation within REKEY_TIMEOUT
  | 'rekey_time' // sending with a keypair we initiated REKEY_AFTER_TIME ago
  | 'rekey_messages' // the data plane reported REKEY_AFTER_MESSAGES
  | 'last_minute' // receiving on a keypair about to reach REJECT_AFTER_TIME
  | 'no_reply'; // sent data, heard nothing for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT

export type TimerAction =
  | { type: 'initiate'; reason: InitiateReason; retry: boolean }
  | { type: 'keepalive'; reason: 'passive' | 'persistent' }
  /** REKEY_ATTEMPT_TIME passed without a response: drop the queued packets. */
  | { type: 'give_up' }
  /** Keypairs reached REJECT_AFTER_TIME and were dropped (already zeroed). */
  | { type: 'expired'; dropped: Keypair[]; sendChanged: boolean }
  /** REJECT_AFTER_TIME * 3 without a new session: all keypairs dropped (zeroed); clear the handshake. */
  | { type: 'zero_keys'; dropped: Keypair[]; sendChanged: boolean };

export interface PeerTimersOptions {
  clock: Clock;
  keypairs: Keypairs;
  /** Random extra delay (ms) for retransmits; default uniform in [0, REKEY_TIMEOUT_JITTER_MAX). */
  jitter?: () => number;
  /** Persistent keepalive interval in ms (0 or undefined: off). */
  persistentKeepaliveMs?: number;
}

type TimerName = 'retransmit' | 'keepalive' | 'newHandshake' | 'zeroKeys' | 'persistent';
const TIMER_ORDER: TimerName[] = ['zeroKeys', 'retransmit', 'newHandshake', 'keepalive', 'persistent'];

export class PeerTimers {
  private readonly clock: Clock;
  private readonly keypairs: Keypairs;
  private readonly jitter: () => number;
  private persistentMs: number;
  /** Deadlines (clock ms) of the armed timers; absent when disarmed. */
  private readonly deadlines = new Map<TimerName, number>();
  private needAnotherKeepalive = false;
  /** Clock ms of the last initiation or response we sent, null if none. */
  private lastHandshakeSentMs: number | null = null;
  /** Start of the current series of initiation attempts. */
  private attemptStartMs: number | null = null;
  private sentLastMinuteHandshake = false;
  private wanted: InitiateReason | null = null;
  /** Clock ms of the last completed handshake, null if none. */
  lastHandshakeMs: number | null = null;

  constructor(opts: PeerTimersOptions) {
    if (!opts || typeof opts.clock?.now !== 'function') throw new TypeError('timers: clock with now() required');
    if (!opts.keypairs) throw new TypeError('timers: keypairs required');
    this.clock = opts.clock;
    this.keypairs = opts.keypairs;
    this.jitter = opts.jitter ?? (() => Math.random() * REKEY_TIMEOUT_JITTER_MAX);
    this.persistentMs = 0;
    this.setPersistentKeepalive(opts.persistentKeepaliveMs ?? 0);
  }

  // ---- event hooks ----------------------------------------------------------------------

  /** A data (non-keepalive) transport message was sent. */
  dataSent(at = this.clock.now()): void {
    if (!this.deadlines.has('newHandshake')) this.arm('newHandshake', at + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + this.jitter());
    const cur = this.keypairs.current;
    if (cur && cur.isInitiator && cur.ageMs(at) >= REKEY_AFTER_TIME) this.want('rekey_time');
  }

  /** A data (non-keepalive) transport message was received and authenticated. */
  dataReceived(at = this.clock.now()): void {
    if (!this.deadlines.has('keepalive')) this.arm('keepalive', at + KEEPALIVE_TIMEOUT);
    else this.needAnotherKeepalive = true;
    const cur = this.keypairs.current;
    if (
      cur &&
      cur.isInitiator &&
      !this.sentLastMinuteHandshake &&
      cur.ageMs(at) >= REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
    ) {
      this.sentLastMinuteHandshake = true;
      this.want('last_minute');
    }
  }

  /** Any authenticated message (transport, keepalive, handshake) was sent. */
  anyAuthenticatedPacketSent(_at = this.clock.now()): void {
    this.disarm('keepalive');
  }

  /** Any authenticated message (transport, keepalive, valid handshake) was received. */
  anyAuthenticatedPacketReceived(_at = this.clock.now()): void {
    this.disarm('newHandshake');
  }

  /** Any authenticated message went either way (persistent keepalive restarts). */
  anyAuthenticatedPacketTraversal(at = this.clock.now()): void {
    if (this.persistentMs > 0) this.arm('persistent', at + this.persistentMs);
  }

  /** We sent an initiation (`retry` when answering a retransmit action). */
  handshakeInitiated(retry: boolean, at = this.clock.now()): void {
    this.lastHandshakeSentMs = at;
    if (!retry || this.attemptStartMs === null) this.attemptStartMs = at;
    this.wanted = null;
    this.arm('retransmit', at + REKEY_TIMEOUT + this.jitter());
  }

  /** We sent a response (counts towards the one-handshake-per-REKEY_TIMEOUT limit). */
  handshakeResponseSent(at = this.clock.now()): void {
    this.lastHandshakeSentMs = at;
  }

  /** A handshake finished: we consumed a response, or our response was confirmed. */
  handshakeComplete(at = this.clock.now()): void {
    this.disarm('retransmit');
    this.attemptStartMs = null;
    this.sentLastMinuteHandshake = false;
    this.wanted = null;
    this.lastHandshakeMs = at;
  }

  /** New transport keys were derived (either side). */
  sessionDerived(at = this.clock.now()): void {
    this.arm('zeroKeys', at + REJECT_AFTER_TIME * 3);
  }

  /**
   * A packet waits for a keypair (the data plane's need_handshake). Served only if, when
   * the initiation may go out, there is still no usable send keypair (see usableSendKeypair):
   * a request the plane raised in the instant between two keypairs is dropped.
   */
  needHandshake(): void {
    this.want('on_demand');
  }

  /** The owner asks for a new handshake whatever the keypairs (a forced rekey). */
  requestHandshake(): void {
    this.want('requested');
  }

  /** The data plane reported REKEY_AFTER_MESSAGES on the send keypair. */
  rekeyNeeded(): void {
    const cur = this.keypairs.current;
    if (cur && cur.isInitiator) this.want('rekey_messages');
    // A responder cannot rekey by messages alone; the initiator's counter will trip first
    // or the keypair expires and on-demand handshaking takes over.
  }

  setPersistentKeepalive(ms: number): void {
    if (typeof ms !== 'number' || !Number.isInteger(ms) || ms < 0 || ms > 65535_000) {
      throw new RangeError(`timers: persistent keepalive must be 0 .. 65535000 ms, got ${ms}`);
    }
    this.persistentMs = ms;
    if (ms === 0) this.disarm('persistent');
    else this.arm('persistent', this.clock.now() + ms);
  }

  /** Forgets all timers (peer removed or device down). */
  stop(): void {
    this.deadlines.clear();
    this.wanted = null;
    this.needAnotherKeepalive = false;
    this.attemptStartMs = null;
  }

  // ---- state ----------------------------------------------------------------------------

  armed(name: TimerName): number | undefined {
    return this.deadlines.get(name);
  }

  /** A series of initiation attempts is running. */
  get handshaking(): boolean {
    return this.deadlines.has('retransmit');
  }

  /** Earliest clock ms at which tick() may have something to do. */
  nextDeadline(): number | null {
    let min: number | null = null;
    for (const d of this.deadlines.values()) if (min === null || d < min) min = d;
    for (const kp of this.keypairs.all()) {
      const d = kp.createdMs + REJECT_AFTER_TIME;
      if (min === null || d < min) min = d;
    }
    if (this.wanted !== null) {
      const d = this.lastHandshakeSentMs === null ? this.clock.now() : this.lastHandshakeSentMs + REKEY_TIMEOUT;
      if (min === null || d < min) min = d;
    }
    return min;
  }

  // ---- tick -----------------------------------------------------------------------------

  /** Runs everything due at `now` (default clock.now()) and returns what to do. */
  tick(now = this.clock.now()): TimerAction[] {
    const out: TimerAction[] = [];
    const exp = this.keypairs.expire(now);
    if (exp.dropped.length > 0) out.push({ type: 'expired', dropped: exp.dropped, sendChanged: exp.sendChanged });

    for (const name of TIMER_ORDER) {
      const d = this.deadlines.get(name);
      if (d === undefined || d > now) continue;
      this.deadlines.delete(name);
      this.fire(name, now, out);
    }

    if (this.wanted !== null) {
      if (this.handshaking || out.some((a) => a.type === 'initiate')) {
        this.wanted = null; // the retransmit series will deliver it
      } else if (this.lastHandshakeSentMs === null || now - this.lastHandshakeSentMs >= REKEY_TIMEOUT) {
        // An on-demand request is dropped when a usable keypair came after it: nothing waits.
        if (this.wanted !== 'on_demand' || !this.usableSendKeypair(now)) out.push({ type: 'initiate', reason: this.wanted, retry: false });
        this.wanted = null;
      }
    }
    return out;
  }

  private fire(name: TimerName, now: number, out: TimerAction[]): void {
    switch (name) {
      case 'retransmit': {
        const start = this.attemptStartMs ?? now;
        if (now - start >= REKEY_ATTEMPT_TIME) {
          this.attemptStartMs = null;
          this.disarm('keepalive');
          if (!this.deadlines.has('zeroKeys')) this.arm('zeroKeys', now + REJECT_AFTER_TIME * 3);
          out.push({ type: 'give_up' });
        } else {
          out.push({ type: 'initiate', reason: 'retransmit', retry: true });
        }
        return;
      }
      case 'keepalive':
        out.push({ type: 'keepalive', reason: 'passive' });
        this.keepaliveEmitted(now);
        if (this.needAnotherKeepalive) {
          this.needAnotherKeepalive = false;
          this.arm('keepalive', now + KEEPALIVE_TIMEOUT);
        }
        return;
      case 'newHandshake':
        this.want('no_reply');
        return;
      case 'zeroKeys': {
        const ch = this.keypairs.clear();
        out.push({ type: 'zero_keys', dropped: ch.dropped, sendChanged: ch.sendChanged });
        return;
      }
      case 'persistent':
        out.push({ type: 'keepalive', reason: 'persistent' });
        this.keepaliveEmitted(now);
        return;
    }
  }

  /**
   * A keepalive action counts as sent when emitted: the owner must not report it again
   * through anyAuthenticatedPacketSent (that would cancel a re-armed keepalive timer).
   */
  private keepaliveEmitted(now: number): void {
    this.disarm('keepalive');
    this.anyAuthenticatedPacketTraversal(now);
  }

  /** The first reason is kept, except that any other reason replaces on_demand (which may be dropped). */
  private want(reason: InitiateReason): void {
    if (this.wanted === null || this.wanted === 'on_demand') this.wanted = reason;
  }

  /**
   * The current keypair can send (not expired, counter below REJECT_AFTER_MESSAGES) and is
   * not past a rekey threshold (REKEY_AFTER_MESSAGES; REKEY_AFTER_TIME for one we initiated).
   */
  private usableSendKeypair(now: number): boolean {
    const cur = this.keypairs.sendKeypair(now);
    return cur !== null && !cur.wantsRekey(now) && !cur.rekeyByMessages();
  }

  private arm(name: TimerName, at: number): void {
    this.deadlines.set(name, at);
  }

  private disarm(name: TimerName): void {
    this.deadlines.delete(name);
  }
}
