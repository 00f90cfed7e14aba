/**
 * A data plane that does nothing but record what the device asks of it (`calls`) and the
 * handshake messages it is given to send (`sent`, their endpoints in `sentTo`); `handler`
 * is the device's event handler, called by hand. Shared by the device tests.
 */
import { DROP_REASONS, type DataPlane, type DropReason, type Endpoint, type PeerCounters, type PeerId, type PlaneEvent, type PlaneKeypair } from '../../src/device/plane.js';

export type Call = [string, ...unknown[]];

export class StubPlane implements DataPlane {
  calls: Call[] = [];
  counters = new Map<PeerId, PeerCounters>();
  handler: ((e: PlaneEvent[]) => void) | null = null;
  protected rec(...c: Call): void {
    this.calls.push(c);
  }
  addPeer(peer: PeerId, endpoint: Endpoint | null): void {
    this.rec('addPeer', peer, endpoint);
    this.counters.set(peer, { txBytes: 0, rxBytes: 0, txPackets: 0, rxPackets: 0, lastTxMs: 0, lastRxMs: 0, lastTxDataMs: 0, lastRxDataMs: 0 });
  }
  removePeer(peer: PeerId): void {
    this.rec('removePeer', peer);
  }
  setEndpoint(peer: PeerId, e: Endpoint): void {
    this.rec('setEndpoint', peer, e);
  }
  addAllowedIp(peer: PeerId, cidr: string): void {
    this.rec('addAllowedIp', peer, cidr);
  }
  removeAllowedIp(peer: PeerId, cidr: string): void {
    this.rec('removeAllowedIp', peer, cidr);
  }
  addKeypair(peer: PeerId, kp: PlaneKeypair): void {
    this.rec('addKeypair', peer, kp.localIndex);
  }
  setSendKeypair(peer: PeerId, i: number | null): void {
    this.rec('setSendKeypair', peer, i);
  }
  removeKeypair(i: number): void {
    this.rec('removeKeypair', i);
  }
  sent: Uint8Array[] = [];
  sentTo: Endpoint[] = [];
  sendHandshake(to: Endpoint, data: Uint8Array): void {
    this.rec('sendHandshake', to, data.length);
    this.sent.push(Uint8Array.from(data));
    this.sentTo.push(to);
  }
  sendKeepalive(peer: PeerId): void {
    this.rec('sendKeepalive', peer);
  }
  flushQueue(peer: PeerId): void {
    this.rec('flushQueue', peer);
  }
  setLocalServices(): void {}
  setLocalAddresses(): void {}
  peerCounters(peer: PeerId): PeerCounters {
    return { ...this.counters.get(peer)! };
  }
  drops(): Record<DropReason, number> {
    return Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>;
  }
  peerDrops(): Record<DropReason, number> {
    return this.drops();
  }
  onEvents(h: (e: PlaneEvent[]) => void): void {
    this.handler = h;
  }
  async close(): Promise<void> {}
}
