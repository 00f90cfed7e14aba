/**
 * PeerIds: not reused until the id space wraps (a plane event still queued for a
 * removed peer must not reach the peer added after it).
 */
import { describe, it, expect } from 'vitest';
import { PeerRegistry, MAX_PEERS } from '../../src/peer/registry.js';
import type { Peer } from '../../src/peer/peer.js';

function fakePeer(id: number): Peer {
  return { id, keyText: `key-${id}`, fingerprint: `fp-${id}` } as unknown as Peer;
}

describe('PeerRegistry ids', () => {
  it('PeerId reuse: a removed peer\'s id is not handed out again until the id space wraps', () => {
    const r = new PeerRegistry();
    const a = fakePeer(r.freeId());
    r.add(a);
    const b = fakePeer(r.freeId());
    r.add(b);
    expect([a.id, b.id]).toEqual([0, 1]);
    r.remove(a);
    expect(r.freeId()).toBe(2); // not 0
    expect(r.freeId()).toBe(3); // each call moves on
  });

  it('wraps at MAX_PEERS to the lowest free id, skipping ids in use; throws when all are used', () => {
    const r = new PeerRegistry();
    for (let i = 0; i < MAX_PEERS; i++) r.add(fakePeer(r.freeId()));
    expect(() => r.freeId()).toThrow(RangeError);
    const p0 = { id: 0, keyText: 'key-0' } as unknown as Peer;
    const p5 = { id: 5, keyText: 'key-5' } as unknown as Peer;
    r.remove(p5);
    r.remove(p0);
    expect(r.freeId()).toBe(0); // wrapped
    r.add(fakePeer(0));
    expect(r.freeId()).toBe(5);
  });
});
