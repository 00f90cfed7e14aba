/**
 * Keypair slots (current / previous / next) and limits, WireGuard whitepaper §6.1-§6.3.
 */
import { describe, expect, it } from 'vitest';
import { Keypair, Keypairs } from '../../src/noise/keypairs.js';
import {
  REJECT_AFTER_MESSAGES,
  REJECT_AFTER_TIME,
  REKEY_AFTER_MESSAGES,
  REKEY_AFTER_TIME,
} from '../../src/wire/constants.js';

let nextIndex = 1;
function kp(isInitiator: boolean, createdMs = 0): Keypair {
  const i = nextIndex++;
  return new Keypair(
    {
      sendKey: new Uint8Array(32).fill(i),
      recvKey: new Uint8Array(32).fill(i + 100),
      localIndex: i,
      remoteIndex: 1000 + i,
      isInitiator,
    },
    createdMs,
  );
}
const isZero = (b: Uint8Array): boolean => b.every((x) => x === 0);

describe('keypair slots', () => {
  it('initiator: new keypair becomes current at once, old current becomes previous', () => {
    const s = new Keypairs();
    const a = kp(true);
    expect(s.install(a)).toEqual({ dropped: [], sendChanged: true });
    expect(s.current).toBe(a);
    const b = kp(true);
    const ch = s.install(b);
    expect(ch.sendChanged).toBe(true);
    expect(ch.dropped).toEqual([]);
    expect(s.current).toBe(b);
    expect(s.previous).toBe(a);
    const c = kp(true);
    const ch2 = s.install(c);
    expect(ch2.dropped).toEqual([a]);
    expect(isZero(a.sendKey) && isZero(a.recvKey)).toBe(true);
    expect(a.zeroed).toBe(true);
    expect([s.current, s.previous, s.next]).toEqual([c, b, null]);
  });

  it('responder: new keypair waits in next; current keeps sending', () => {
    const s = new Keypairs();
    const a = kp(true);
    s.install(a);
    const r = kp(false);
    const ch = s.install(r);
    expect(ch.sendChanged).toBe(false);
    expect([s.current, s.previous, s.next]).toEqual([a, null, r]);
    expect(s.sendKeypair(0)).toBe(a);
  });

  it('responder: first authentic packet on next confirms it (previous <- current)', () => {
    const s = new Keypairs();
    const a = kp(false);
    s.install(a);
    expect(s.current).toBe(null);
    expect(s.sendKeypair(0)).toBe(null); // unconfirmed: cannot send
    const c1 = s.received(a.localIndex);
    expect(c1).toEqual({ dropped: [], sendChanged: true, confirmed: true });
    expect(s.current).toBe(a);
    // A later packet on the same keypair changes nothing.
    expect(s.received(a.localIndex).confirmed).toBe(false);
    const b = kp(false);
    s.install(b);
    const c2 = s.received(b.localIndex);
    expect(c2.confirmed).toBe(true);
    expect([s.current, s.previous, s.next]).toEqual([b, a, null]);
    const c = kp(false);
    s.install(c);
    s.received(c.localIndex);
    expect([s.current, s.previous, s.next]).toEqual([c, b, null]);
    expect(a.zeroed).toBe(true);
  });

  it('responder: a second unconfirmed keypair replaces the first; previous is dropped', () => {
    const s = new Keypairs();
    const a = kp(true);
    const b = kp(true);
    s.install(a);
    s.install(b); // previous = a
    const r1 = kp(false);
    const ch1 = s.install(r1);
    expect(ch1.dropped).toEqual([a]);
    const r2 = kp(false);
    const ch2 = s.install(r2);
    expect(ch2.dropped).toEqual([r1]);
    expect(r1.zeroed).toBe(true);
    expect([s.current, s.previous, s.next]).toEqual([b, null, r2]);
  });

  it('initiator install while a next is pending: next becomes previous, old current dropped', () => {
    const s = new Keypairs();
    const a = kp(true);
    s.install(a);
    const r = kp(false);
    s.install(r);
    const i = kp(true);
    const ch = s.install(i);
    expect(ch.dropped).toEqual([a]);
    expect([s.current, s.previous, s.next]).toEqual([i, r, null]);
  });

  it('lookup by local index covers all slots', () => {
    const s = new Keypairs();
    const a = kp(true);
    const b = kp(true);
    const r = kp(false);
    s.install(a);
    s.install(b);
    s.install(r); // drops a (previous)
    expect(s.lookup(b.localIndex)).toBe(b);
    expect(s.lookup(r.localIndex)).toBe(r);
    expect(s.lookup(a.localIndex)).toBe(null);
  });

  it('refuses a duplicate local index and wrong types', () => {
    const s = new Keypairs();
    const a = kp(true);
    s.install(a);
    expect(() => s.install(a)).toThrow(RangeError);
    expect(() => s.install({} as Keypair)).toThrow(TypeError);
  });

  it('clear() zeroes everything', () => {
    const s = new Keypairs();
    const a = kp(true);
    const b = kp(true);
    const r = kp(false);
    s.install(a);
    s.install(b);
    s.install(r);
    const ch = s.clear();
    expect(ch.sendChanged).toBe(true);
    expect(ch.dropped.length).toBe(2);
    expect(b.zeroed && r.zeroed).toBe(true);
    expect(s.all()).toEqual([]);
  });
});

describe('keypair limits', () => {
  it('keys are copied, not aliased', () => {
    const sendKey = new Uint8Array(32).fill(7);
    const k = new Keypair({ sendKey, recvKey: new Uint8Array(32), localIndex: 1, remoteIndex: 2, isInitiator: true }, 0);
    k.zero();
    expect(sendKey[0]).toBe(7);
  });

  it('send counter counts up and stops at REJECT_AFTER_MESSAGES', () => {
    const k = kp(true);
    expect(k.nextSendCounter(0)).toBe(0n);
    expect(k.nextSendCounter(0)).toBe(1n);
    k.setSendCounterForTest(REJECT_AFTER_MESSAGES - 1n);
    expect(k.nextSendCounter(0)).toBe(REJECT_AFTER_MESSAGES - 1n);
    expect(k.nextSendCounter(0)).toBe(null);
    expect(k.canSend(0)).toBe(false);
    expect(k.canReceive(0)).toBe(true);
  });

  it('initiator wants a rekey after REKEY_AFTER_MESSAGES', () => {
    const k = kp(true);
    k.setSendCounterForTest(REKEY_AFTER_MESSAGES - 1n);
    expect(k.wantsRekey(0)).toBe(false);
    k.nextSendCounter(0);
    expect(k.wantsRekey(0)).toBe(true);
  });

  it('initiator wants a rekey after REKEY_AFTER_TIME; the responder never does', () => {
    const i = kp(true, 1000);
    const r = kp(false, 1000);
    expect(i.wantsRekey(1000 + REKEY_AFTER_TIME - 1)).toBe(false);
    expect(i.wantsRekey(1000 + REKEY_AFTER_TIME)).toBe(true);
    expect(r.wantsRekey(1000 + REKEY_AFTER_TIME)).toBe(false);
    r.setSendCounterForTest(REKEY_AFTER_MESSAGES);
    expect(r.wantsRekey(1000)).toBe(false);
  });

  it('REJECT_AFTER_TIME: expire() drops and zeroes old keypairs, current first', () => {
    const s = new Keypairs();
    const a = kp(true, 0);
    const b = kp(true, 60_000);
    s.install(a);
    s.install(b);
    expect(s.sendKeypair(REJECT_AFTER_TIME - 1)).toBe(b);
    expect(s.expire(REJECT_AFTER_TIME - 1)).toEqual({ dropped: [], sendChanged: false });
    const ch = s.expire(REJECT_AFTER_TIME);
    expect(ch).toEqual({ dropped: [a], sendChanged: false });
    expect(isZero(a.sendKey)).toBe(true);
    expect(s.previous).toBe(null);
    expect(b.nextSendCounter(60_000 + REJECT_AFTER_TIME)).toBe(null);
    expect(s.sendKeypair(60_000 + REJECT_AFTER_TIME)).toBe(null);
    const ch2 = s.expire(60_000 + REJECT_AFTER_TIME);
    expect(ch2.sendChanged).toBe(true);
    expect(ch2.dropped).toEqual([b]);
    expect(s.all()).toEqual([]);
  });

  it('bad keys raise typed errors', () => {
    const base = { sendKey: new Uint8Array(32), recvKey: new Uint8Array(32), localIndex: 1, remoteIndex: 2, isInitiator: true };
    expect(() => new Keypair({ ...base, sendKey: new Uint8Array(31) }, 0)).toThrow(RangeError);
    expect(() => new Keypair({ ...base, recvKey: 'x' as unknown as Uint8Array }, 0)).toThrow(TypeError);
    expect(() => new Keypair({ ...base, localIndex: 2 ** 32 }, 0)).toThrow(RangeError);
    expect(() => new Keypair({ ...base, remoteIndex: 1.5 }, 0)).toThrow(TypeError);
  });
});
