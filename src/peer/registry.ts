/**
 * Peers by public key, by PeerId (the data plane's small integer) and by receiver index
 * (our local index in handshakes and keypairs: the number peers put in what they send us).
 * Local indices are random u32s, unique across the device (whitepaper §5.4.2: "randomly
 * generated"), so they reveal nothing about how many sessions exist.
 */
import { randomBytes } from '@noble/hashes/utils.js';
import type { Peer, PeerId } from './peer.js';

export const MAX_PEERS = 65536;

export class PeerRegistry {
  private readonly byKey = new Map<string, Peer>();
  private readonly byId = new Map<PeerId, Peer>();
  private readonly byIndex = new Map<number, Peer>();
  private nextId = 0;

  constructor(private readonly random: (n: number) => Uint8Array = randomBytes) {}

  get size(): number {
    return this.byKey.size;
  }

  /**
   * The next PeerId not in use, counting on from the last one handed out and wrapping at
   * MAX_PEERS: a removed peer's id is not reused until the id space wraps, so a plane
   * event still queued for the removed peer (an `endpoint`, a `need_handshake`) finds
   * no peer instead of being applied to a new one.
   */
  freeId(): PeerId {
    for (let n = 0; n < MAX_PEERS; n++) {
      const i = (this.nextId + n) % MAX_PEERS;
      if (!this.byId.has(i)) {
        this.nextId = (i + 1) % MAX_PEERS;
        return i;
      }
    }
    throw new RangeError(`registry: more than ${MAX_PEERS} peers`);
  }

  add(peer: Peer): void {
    if (this.byKey.has(peer.keyText)) throw new Error(`registry: peer ${peer.fingerprint} exists`);
    if (this.byId.has(peer.id)) throw new Error(`registry: peer id ${peer.id} in use`);
    this.byKey.set(peer.keyText, peer);
    this.byId.set(peer.id, peer);
  }

  /** Removes the peer and every index it holds. */
  remove(peer: Peer): void {
    this.byKey.delete(peer.keyText);
    this.byId.delete(peer.id);
    for (const [idx, p] of this.byIndex) if (p === peer) this.byIndex.delete(idx);
  }

  byPublicKey(key: Uint8Array | string): Peer | undefined {
    const text = typeof key === 'string' ? key : Buffer.from(key).toString('base64');
    return this.byKey.get(text);
  }

  byPeerId(id: PeerId): Peer | undefined {
    return this.byId.get(id);
  }

  byReceiverIndex(index: number): Peer | undefined {
    return this.byIndex.get(index);
  }

  /** A fresh random local index, registered to `peer`. */
  allocateIndex(peer: Peer): number {
    for (let tries = 0; tries < 64; tries++) {
      const b = this.random(4);
      const idx = (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
      if (!this.byIndex.has(idx)) {
        this.byIndex.set(idx, peer);
        return idx;
      }
    }
    throw new Error('registry: no free local index (random source broken?)');
  }

  releaseIndex(index: number): void {
    this.byIndex.delete(index);
  }

  peers(): Peer[] {
    return [...this.byId.values()].sort((a, b) => a.id - b.id);
  }
}
