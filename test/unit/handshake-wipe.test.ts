/**
 * The handshake zeroes the chaining keys and keys it derives (every array kdf1/kdf2/kdf3
 * return, recorded here) on every way out: refusals included, and on success all but the
 * chaining key a pending handshake keeps in the peer's state.
 */
import { beforeEach, describe, expect, it, vi } from 'vitest';

const derived = vi.hoisted(() => [] as Uint8Array[]);

vi.mock('../../src/noise/kdf.js', async (importOriginal) => {
  const orig = await importOriginal<typeof import('../../src/noise/kdf.js')>();
  const rec = <T extends Uint8Array | Uint8Array[]>(out: T): T => {
    for (const a of (out instanceof Uint8Array ? [out] : out) as Uint8Array[]) derived.push(a);
    return out;
  };
  return {
    ...orig,
    kdf1: (key: Uint8Array, input: Uint8Array) => rec(orig.kdf1(key, input)),
    kdf2: (key: Uint8Array, input: Uint8Array) => rec(orig.kdf2(key, input)),
    kdf3: (key: Uint8Array, input: Uint8Array) => rec(orig.kdf3(key, input)),
  };
});

import {
  consumeInitiation,
  consumeResponse,
  createInitiation,
  createResponse,
  makeHandshakePeer,
  makeIdentity,
} from '../../src/noise/handshake.js';
import { computeMac1, mac1KeyFor } from '../../src/noise/cookie.js';
import { generatePrivateKey, generatePsk } from '../../src/noise/keys.js';
import type { HandshakePeer, LocalIdentity } from '../../src/noise/types.js';
import { decodeMessage, type InitiationMessage, type ResponseMessage } from '../../src/wire/messages.js';
import { HANDSHAKE_INITIATION_RATE } from '../../src/wire/constants.js';
import { tai64nFromUnixMs } from '../../src/wire/tai64n.js';

interface Side {
  id: LocalIdentity;
  peer: HandshakePeer;
}

function pair(pskB?: Uint8Array): { a: Side; b: Side } {
  const psk = generatePsk();
  const idA = makeIdentity(generatePrivateKey());
  const idB = makeIdentity(generatePrivateKey());
  return {
    a: { id: idA, peer: makeHandshakePeer(idA, idB.publicKey, psk) },
    b: { id: idB, peer: makeHandshakePeer(idB, idA.publicKey, pskB ?? psk) },
  };
}

function decodeInit(bytes: Uint8Array): InitiationMessage {
  const d = decodeMessage(bytes);
  if (!d.ok || d.message.type !== 1) throw new Error('not an initiation');
  return d.message;
}

function decodeResp(bytes: Uint8Array): ResponseMessage {
  const d = decodeMessage(bytes);
  if (!d.ok || d.message.type !== 2) throw new Error('not a response');
  return d.message;
}

const byKey = (s: Side) => (pk: Uint8Array) => (Buffer.from(pk).equals(Buffer.from(s.peer.remoteStatic)) ? s.peer : undefined);
const isZero = (b: Uint8Array) => b.every((x) => x === 0);
/** The recorded arrays that still hold something, other than those listed. */
const leftOver = (...kept: Uint8Array[]) => derived.filter((a) => !kept.includes(a) && !isZero(a));

beforeEach(() => {
  derived.length = 0;
});

describe('handshake: derived secrets are zeroed', () => {
  it('consumeInitiation refusing a replayed timestamp', () => {
    const { a, b } = pair();
    const msg = decodeInit(createInitiation(a.id, a.peer, 1, 0, { timestamp: tai64nFromUnixMs(1_700_000_000_000) }));
    expect(consumeInitiation(b.id, msg, byKey(b), { nowMs: 0 }).ok).toBe(true);
    derived.length = 0;
    const r = consumeInitiation(b.id, msg, byKey(b), { nowMs: HANDSHAKE_INITIATION_RATE * 10 });
    expect(r.ok ? null : r.reason).toBe('replayed_timestamp');
    expect(derived.length).toBe(5); // kdf1 (1) + kdf2 (2) + kdf2 (2)
    expect(leftOver()).toEqual([]);
  });

  it('consumeInitiation refusing a stale timestamp or a flood', () => {
    const { a, b } = pair();
    const t0 = 1_700_000_000_000;
    const first = decodeInit(createInitiation(a.id, a.peer, 1, 0, { timestamp: tai64nFromUnixMs(t0 + 1_000) }));
    const stale = decodeInit(createInitiation(a.id, a.peer, 2, 0, { timestamp: tai64nFromUnixMs(t0) }));
    const soon = decodeInit(createInitiation(a.id, a.peer, 3, 0, { timestamp: tai64nFromUnixMs(t0 + 2_000) }));
    expect(consumeInitiation(b.id, first, byKey(b), { nowMs: 1_000 }).ok).toBe(true);
    derived.length = 0;
    const r1 = consumeInitiation(b.id, stale, byKey(b), { nowMs: 100_000 });
    expect(r1.ok ? null : r1.reason).toBe('stale_timestamp');
    const r2 = consumeInitiation(b.id, soon, byKey(b), { nowMs: 1_001 });
    expect(r2.ok ? null : r2.reason).toBe('flood');
    expect(derived.length).toBe(10);
    expect(leftOver()).toEqual([]);
  });

  it('consumeInitiation refusing an unknown peer or a static key that does not decrypt', () => {
    const { a, b } = pair();
    const msg = decodeInit(createInitiation(a.id, a.peer, 1, 0));
    derived.length = 0;
    const r1 = consumeInitiation(b.id, msg, () => undefined, { nowMs: 0 });
    expect(r1.ok ? null : r1.reason).toBe('unknown_peer');
    // made for another responder, with a mac1 for b
    const other = makeIdentity(generatePrivateKey());
    const bytes = createInitiation(a.id, makeHandshakePeer(a.id, other.publicKey), 2, 0);
    bytes.set(computeMac1(mac1KeyFor(b.id.publicKey), bytes), bytes.length - 32);
    derived.length = 0;
    const r2 = consumeInitiation(b.id, decodeInit(bytes), byKey(b), { nowMs: 0 });
    expect(r2.ok ? null : r2.reason).toBe('decrypt_static');
    expect(derived.length).toBe(3);
    expect(leftOver()).toEqual([]);
  });

  it('createInitiation and consumeInitiation keep only the chaining key of the pending handshake', () => {
    const { a, b } = pair();
    const bytes = createInitiation(a.id, a.peer, 1, 0);
    expect(a.peer.state.kind).toBe('initiation_created');
    const kept = a.peer.state.kind === 'initiation_created' ? a.peer.state.chainingKey : new Uint8Array(0);
    expect(derived).toContain(kept);
    expect(leftOver(kept)).toEqual([]);
    derived.length = 0;
    expect(consumeInitiation(b.id, decodeInit(bytes), byKey(b), { nowMs: 0 }).ok).toBe(true);
    const keptB = b.peer.state.kind === 'initiation_consumed' ? b.peer.state.chainingKey : new Uint8Array(0);
    expect(derived).toContain(keptB);
    expect(leftOver(keptB)).toEqual([]);
  });

  it('createResponse keeps only the session keys; consumeResponse refusing a response leaves the pending state as it was', () => {
    const { a, b } = pair(generatePsk()); // b's psk differs: its response does not decrypt at a
    const init = createInitiation(a.id, a.peer, 1, 0);
    expect(consumeInitiation(b.id, decodeInit(init), byKey(b), { nowMs: 0 }).ok).toBe(true);
    derived.length = 0;
    const { message, keys } = createResponse(b.id, b.peer, 2, 0);
    expect(leftOver(keys.sendKey, keys.recvKey)).toEqual([]);
    const before = a.peer.state.kind === 'initiation_created' ? Uint8Array.from(a.peer.state.chainingKey) : null;
    derived.length = 0;
    const r = consumeResponse(a.id, decodeResp(message), (i) => (i === 1 ? a.peer : undefined), { nowMs: 0 });
    expect(r.ok ? null : r.reason).toBe('decrypt_response');
    expect(derived.length).toBe(6); // kdf1, kdf1, kdf1, kdf3 (3)
    expect(leftOver()).toEqual([]);
    expect(a.peer.state.kind).toBe('initiation_created');
    if (a.peer.state.kind === 'initiation_created') expect(Buffer.from(a.peer.state.chainingKey).equals(Buffer.from(before!))).toBe(true);
  });

  it('consumeResponse on success keeps only the session keys', () => {
    const { a, b } = pair();
    const init = createInitiation(a.id, a.peer, 1, 0);
    expect(consumeInitiation(b.id, decodeInit(init), byKey(b), { nowMs: 0 }).ok).toBe(true);
    const { message } = createResponse(b.id, b.peer, 2, 0);
    derived.length = 0;
    const r = consumeResponse(a.id, decodeResp(message), (i) => (i === 1 ? a.peer : undefined), { nowMs: 0 });
    expect(r.ok).toBe(true);
    if (r.ok) expect(leftOver(r.keys.sendKey, r.keys.recvKey)).toEqual([]);
  });
});
