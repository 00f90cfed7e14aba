/**
 * Timer state machine (WireGuard whitepaper §6.2 - §6.5) on a hand-moved clock.
 * The harness plays the owner: it ticks every `step` ms, records every action with its
 * time, and reports an initiation as sent (handshakeInitiated) when asked to initiate.
 */
import { describe, expect, it } from 'vitest';
import { Keypair, Keypairs } from '../../src/noise/keypairs.js';
import { ManualClock, PeerTimers, type TimerAction } from '../../src/noise/timers.js';
import {
  KEEPALIVE_TIMEOUT,
  REJECT_AFTER_TIME,
  REKEY_AFTER_MESSAGES,
  REKEY_AFTER_TIME,
  REKEY_ATTEMPT_TIME,
  REKEY_TIMEOUT,
} from '../../src/wire/constants.js';

let idx = 1;
function keypair(isInitiator: boolean, createdMs: number): Keypair {
  const i = idx++;
  return new Keypair(
    { sendKey: new Uint8Array(32).fill(1), recvKey: new Uint8Array(32).fill(2), localIndex: i, remoteIndex: i, isInitiator },
    createdMs,
  );
}

function setup(opts: { jitter?: number; persistentKeepaliveMs?: number } = {}) {
  const clock = new ManualClock(0);
  const keypairs = new Keypairs();
  const timers = new PeerTimers({
    clock,
    keypairs,
    jitter: () => opts.jitter ?? 0,
    persistentKeepaliveMs: opts.persistentKeepaliveMs,
  });
  const log: { t: number; a: TimerAction }[] = [];
  const tick = (): void => {
    for (const a of timers.tick()) {
      log.push({ t: clock.now(), a });
      if (a.type === 'initiate') timers.handshakeInitiated(a.retry);
    }
  };
  /** Advances `ms` in steps of `step`, ticking after each step. */
  const run = (ms: number, step = 100): void => {
    const end = clock.now() + ms;
    while (clock.now() < end) {
      clock.advance(Math.min(step, end - clock.now()));
      tick();
    }
  };
  const times = (type: TimerAction['type']): number[] => log.filter((e) => e.a.type === type).map((e) => e.t);
  return { clock, keypairs, timers, log, tick, run, times };
}

describe('handshake retransmission', () => {
  it('retries every REKEY_TIMEOUT until REKEY_ATTEMPT_TIME, then gives up once', () => {
    const h = setup();
    h.timers.needHandshake();
    h.tick();
    h.run(120_000);
    const inits = h.times('initiate');
    const expected: number[] = [];
    for (let t = 0; t < REKEY_ATTEMPT_TIME; t += REKEY_TIMEOUT) expected.push(t);
    expect(inits).toEqual(expected); // 0, 5 s, ..., 85 s
    expect(h.times('give_up')).toEqual([REKEY_ATTEMPT_TIME]);
    expect(h.log.filter((e) => e.a.type === 'initiate').slice(1).every((e) => e.a.type === 'initiate' && e.a.retry && e.a.reason === 'retransmit')).toBe(true);
    // After giving up, the zero-keys timer is armed.
    expect(h.timers.armed('zeroKeys')).toBe(REKEY_ATTEMPT_TIME + REJECT_AFTER_TIME * 3);
  });

  it('jitter stretches the cadence', () => {
    const h = setup({ jitter: 250 });
    h.timers.needHandshake();
    h.tick();
    h.run(16_000, 50);
    expect(h.times('initiate')).toEqual([0, 5250, 10500, 15750]);
  });

  it('a completed handshake stops the retries', () => {
    const h = setup();
    h.timers.needHandshake();
    h.tick();
    h.run(7_000);
    h.timers.handshakeComplete();
    h.run(100_000);
    expect(h.times('initiate')).toEqual([0, 5000]);
    expect(h.times('give_up')).toEqual([]);
    expect(h.timers.lastHandshakeMs).toBe(7_000);
  });

  it('a new packet after giving up starts a new series', () => {
    const h = setup();
    h.timers.needHandshake();
    h.tick();
    h.run(100_000);
    expect(h.times('give_up')).toEqual([90_000]);
    h.timers.needHandshake();
    h.tick();
    h.run(10_000);
    expect(h.times('initiate').filter((t) => t >= 100_000)).toEqual([100_000, 105_000, 110_000]);
  });

  it('on-demand requests are limited to one per REKEY_TIMEOUT, counting responses we sent', () => {
    const h = setup();
    h.clock.set(1_000);
    h.timers.handshakeResponseSent();
    h.timers.needHandshake();
    h.tick();
    expect(h.times('initiate')).toEqual([]);
    h.run(5_000);
    expect(h.times('initiate')).toEqual([6_000]);
  });
});

describe('keepalive', () => {
  it('passive keepalive KEEPALIVE_TIMEOUT after receiving data when we sent nothing', () => {
    const h = setup();
    h.timers.dataReceived();
    h.run(30_000);
    expect(h.times('keepalive')).toEqual([KEEPALIVE_TIMEOUT]);
  });

  it('no keepalive when we answered', () => {
    const h = setup();
    h.timers.dataReceived();
    h.run(4_000);
    h.timers.dataSent();
    h.timers.anyAuthenticatedPacketSent();
    h.run(30_000);
    expect(h.times('keepalive')).toEqual([]);
  });

  it('one-way traffic keeps producing keepalives every KEEPALIVE_TIMEOUT', () => {
    const h = setup();
    for (let i = 0; i < 30; i++) {
      h.timers.dataReceived();
      h.run(1_000);
    }
    expect(h.times('keepalive')).toEqual([10_000, 20_000, 30_000]);
  });

  it('persistent keepalive every interval of silence', () => {
    const h = setup({ persistentKeepaliveMs: 25_000 });
    h.run(60_000);
    expect(h.times('keepalive')).toEqual([25_000, 50_000]);
    h.timers.anyAuthenticatedPacketTraversal(); // at 60 s
    h.run(30_000);
    expect(h.times('keepalive')).toEqual([25_000, 50_000, 85_000]);
    expect(() => h.timers.setPersistentKeepalive(-1)).toThrow(RangeError);
  });
});

describe('new handshake when the peer went quiet', () => {
  it('sent data, nothing back for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT: initiate', () => {
    const h = setup();
    h.keypairs.install(keypair(true, 0));
    h.timers.dataSent();
    h.run(20_000);
    const first = h.log.find((e) => e.a.type === 'initiate');
    expect(first?.t).toBe(KEEPALIVE_TIMEOUT + REKEY_TIMEOUT);
    expect(first?.a).toEqual({ type: 'initiate', reason: 'no_reply', retry: false });
  });

  it('anything authentic received in time cancels it', () => {
    const h = setup();
    h.timers.dataSent();
    h.run(14_000);
    h.timers.anyAuthenticatedPacketReceived();
    h.run(20_000);
    expect(h.times('initiate')).toEqual([]);
  });
});

describe('key lifetimes', () => {
  it('initiator sending: rekey after REKEY_AFTER_TIME, not before', () => {
    const h = setup();
    h.keypairs.install(keypair(true, 0));
    for (let t = 0; t < REKEY_AFTER_TIME + 2_000; t += 1_000) {
      h.timers.dataSent();
      h.timers.anyAuthenticatedPacketReceived(); // the peer answers, so no 'no_reply'
      h.run(1_000);
    }
    const inits = h.log.filter((e) => e.a.type === 'initiate');
    // dataSent at exactly REKEY_AFTER_TIME; the next tick (100 ms later) initiates.
    expect(inits.map((e) => e.t)).toEqual([REKEY_AFTER_TIME + 100]);
    expect(inits[0].a).toEqual({ type: 'initiate', reason: 'rekey_time', retry: false });
  });

  it('responder sending never rekeys by time', () => {
    const h = setup();
    const r = keypair(false, 0);
    h.keypairs.install(r);
    h.keypairs.received(r.localIndex);
    for (let t = 0; t < 170_000; t += 1_000) {
      h.timers.dataSent();
      h.timers.anyAuthenticatedPacketReceived();
      h.run(1_000);
    }
    expect(h.times('initiate')).toEqual([]);
  });

  it('initiator only receiving: one last-minute handshake before REJECT_AFTER_TIME', () => {
    const h = setup();
    h.keypairs.install(keypair(true, 0));
    for (let t = 0; t < 175_000; t += 1_000) {
      h.timers.dataReceived();
      h.timers.anyAuthenticatedPacketSent(); // we answer, so no passive keepalive noise
      h.run(1_000);
    }
    const inits = h.log.filter((e) => e.a.type === 'initiate');
    expect(inits[0].t).toBe(REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT + 100);
    expect(inits[0].a).toEqual({ type: 'initiate', reason: 'last_minute', retry: false });
    expect(inits.filter((e) => e.a.type === 'initiate' && e.a.reason === 'last_minute').length).toBe(1);
  });

  it('reject after REJECT_AFTER_TIME: the keypair is dropped and zeroed', () => {
    const h = setup();
    const k = keypair(true, 0);
    h.keypairs.install(k);
    h.run(REJECT_AFTER_TIME - 100);
    expect(h.times('expired')).toEqual([]);
    expect(h.keypairs.sendKeypair(h.clock.now())).toBe(k);
    h.run(100);
    const e = h.log.find((x) => x.a.type === 'expired');
    expect(e?.t).toBe(REJECT_AFTER_TIME);
    expect(e?.a).toEqual({ type: 'expired', dropped: [k], sendChanged: true });
    expect(k.sendKey.every((b) => b === 0)).toBe(true);
    expect(h.keypairs.current).toBe(null);
  });

  it('zero all keys REJECT_AFTER_TIME * 3 after the last session', () => {
    const h = setup();
    h.keypairs.install(keypair(true, 0));
    h.timers.sessionDerived();
    h.run(100_000);
    h.keypairs.install(keypair(false, 100_000)); // an unconfirmed next keeps living
    h.timers.sessionDerived();
    h.run(REJECT_AFTER_TIME * 3);
    expect(h.times('zero_keys')).toEqual([100_000 + REJECT_AFTER_TIME * 3]);
    expect(h.keypairs.all()).toEqual([]);
  });

  it('rekey_needed from the data plane: initiator only', () => {
    const h = setup();
    h.keypairs.install(keypair(true, 0));
    h.timers.rekeyNeeded();
    h.tick();
    expect(h.log.map((e) => e.a)).toEqual([{ type: 'initiate', reason: 'rekey_messages', retry: false }]);
    const r = setup();
    const k = keypair(false, 0);
    r.keypairs.install(k);
    r.keypairs.received(k.localIndex);
    r.timers.rekeyNeeded();
    r.tick();
    expect(r.log).toEqual([]);
  });
});

describe('clock', () => {
  it('ManualClock refuses to go back', () => {
    const c = new ManualClock(10);
    expect(() => c.set(5)).toThrow(RangeError);
    expect(() => c.advance(-1)).toThrow(RangeError);
    expect(c.advance(5)).toBe(15);
  });
});

describe('one initiation at a time', () => {
  it('a retransmit and a pending on-demand request in the same tick send one initiation', () => {
    const h = setup();
    h.timers.needHandshake();
    h.tick();
    h.clock.advance(REKEY_TIMEOUT);
    h.timers.needHandshake(); // more packets queued meanwhile
    const actions = h.timers.tick();
    expect(actions).toEqual([{ type: 'initiate', reason: 'retransmit', retry: true }]);
  });
});

describe('on-demand requests and usable keypairs', () => {
  it('an on-demand request is dropped when, by the time it may go out, the current keypair can send', () => {
    const h = setup();
    h.clock.set(1_000);
    h.timers.handshakeResponseSent();
    h.timers.needHandshake(); // raised while the plane had no send keypair for an instant
    h.keypairs.install(keypair(true, 1_000));
    h.run(REKEY_TIMEOUT * 3);
    expect(h.times('initiate')).toEqual([]);
  });

  it('it is served when there is none, or the keypair is past REKEY_AFTER_TIME (ours) or REKEY_AFTER_MESSAGES', () => {
    const none = setup();
    none.timers.needHandshake();
    none.tick();
    expect(none.times('initiate')).toEqual([0]);

    const old = setup();
    old.keypairs.install(keypair(true, 0));
    old.clock.set(REKEY_AFTER_TIME);
    old.timers.needHandshake();
    old.tick();
    expect(old.times('initiate')).toEqual([REKEY_AFTER_TIME]);

    const used = setup();
    const k = keypair(false, 0);
    used.keypairs.install(k);
    used.keypairs.received(k.localIndex);
    k.setSendCounterForTest(REKEY_AFTER_MESSAGES);
    used.timers.needHandshake();
    used.tick();
    expect(used.times('initiate')).toEqual([0]);
  });

  it('a later rekey reason replaces a pending on-demand request; a requested handshake goes out with a usable keypair', () => {
    const h = setup();
    h.keypairs.install(keypair(true, 0));
    h.clock.set(1_000);
    h.timers.handshakeResponseSent();
    h.timers.needHandshake();
    h.timers.rekeyNeeded();
    h.run(REKEY_TIMEOUT);
    expect(h.log.filter((e) => e.a.type === 'initiate').map((e) => e.a)).toEqual([{ type: 'initiate', reason: 'rekey_messages', retry: false }]);

    const r = setup();
    r.keypairs.install(keypair(true, 0));
    r.timers.requestHandshake();
    r.tick();
    expect(r.log.map((e) => e.a)).toEqual([{ type: 'initiate', reason: 'requested', retry: false }]);
  });
});
