/**
 * The device against a scripted data plane (no packets at all): what it asks of the plane
 * for each event, how it turns polled counters into timer hooks (also when the plane's
 * timestamps are on another time base), and that a failing event cannot escape.
 */
import { describe, expect, it } from 'vitest';
import { Device } from '../../src/device/device.js';
import type { DataPlane, Endpoint, PeerId } from '../../src/device/plane.js';
import { StubPlane } from './stub-plane.js';
import { generatePrivateKey, publicKeyFromPrivate } from '../../src/noise/keys.js';
import { ManualClock } from '../../src/noise/timers.js';
import { captureLogger, type LogRecord } from './harness.js';
import { KEEPALIVE_TIMEOUT, MESSAGE_INITIATION_SIZE, REKEY_TIMEOUT } from '../../src/wire/constants.js';

function setup() {
  const clock = new ManualClock(10_000);
  const plane = new StubPlane();
  const logs: LogRecord[] = [];
  const device = new Device({ privateKey: generatePrivateKey(), plane, clock, jitter: () => 0, logger: captureLogger(logs) });
  const peerKey = publicKeyFromPrivate(generatePrivateKey());
  const ep = { address: '10.0.0.2', port: 51820 };
  const id = device.addPeer({ publicKey: peerKey, endpoint: ep, allowedIps: ['10.1.0.2/32'] });
  return { clock, plane, logs, device, peerKey, ep, id };
}

describe('device over a scripted plane', () => {
  it('addPeer configures the plane; need_handshake sends one initiation to the endpoint', () => {
    const { plane, ep, id } = setup();
    expect(plane.calls).toEqual([
      ['addPeer', id, ep],
      ['addAllowedIp', id, '10.1.0.2/32'],
    ]);
    plane.handler!([{ type: 'need_handshake', peer: id }, { type: 'need_handshake', peer: id }]);
    expect(plane.calls.slice(2)).toEqual([['sendHandshake', ep, MESSAGE_INITIATION_SIZE]]);
  });

  it('events for unknown peers or keypairs are ignored; a roaming event updates the status', () => {
    const { plane, device, id } = setup();
    plane.handler!([
      { type: 'need_handshake', peer: 99 },
      { type: 'keypair_confirmed', peer: id, localIndex: 12345 },
      { type: 'rekey_needed', peer: 99, localIndex: 1 },
      { type: 'endpoint', peer: id, endpoint: { address: 'fd00::9', port: 7 } },
    ]);
    expect(plane.calls.length).toBe(2);
    expect(device.status().peers[0].endpoint).toEqual({ address: 'fd00::9', port: 7 });
  });

  it('junk handshake events are counted by reason', () => {
    const { plane, device } = setup();
    const from = { address: '10.0.0.66', port: 1 };
    plane.handler!([
      { type: 'handshake', data: new Uint8Array(3), from },
      { type: 'handshake', data: new Uint8Array(148).fill(1), from },
      { type: 'handshake', data: Object.assign(new Uint8Array(148), { 0: 1 }), from },
    ]);
    expect(device.status().handshakeFailures).toEqual({ bad_length: 1, bad_reserved: 1, bad_mac1: 1 });
  });

  it('polled counters drive the timers even when the plane clock is on another base', () => {
    // A real handshake between two devices, their stub planes wired by hand.
    const clock = new ManualClock(10_000);
    const pa = new StubPlane();
    const pb = new StubPlane();
    const ka = generatePrivateKey();
    const kb = generatePrivateKey();
    const a = new Device({ privateKey: ka, plane: pa, clock, jitter: () => 0 });
    const b = new Device({ privateKey: kb, plane: pb, clock, jitter: () => 0 });
    const epA = { address: '10.0.0.1', port: 51820 };
    const epB = { address: '10.0.0.2', port: 51820 };
    const idB = a.addPeer({ publicKey: publicKeyFromPrivate(kb), endpoint: epB });
    b.addPeer({ publicKey: publicKeyFromPrivate(ka), endpoint: epA });
    pa.handler!([{ type: 'need_handshake', peer: idB }]);
    pb.handler!([{ type: 'handshake', data: pa.sent[0], from: epA }]);
    pa.handler!([{ type: 'handshake', data: pb.sent[0], from: epB }]);
    expect(a.status().peers[0].hasSession).toBe(true);
    // Data arrives at A; its plane stamps it with a time on another base (far ahead).
    Object.assign(pa.counters.get(idB)!, { rxPackets: 1, rxBytes: 100, lastRxMs: 9e12, lastRxDataMs: 9e12 });
    a.tick();
    const keepalives = () => pa.calls.filter((c) => c[0] === 'sendKeepalive').length;
    const k0 = keepalives(); // the one confirming the session
    clock.advance(KEEPALIVE_TIMEOUT - 100);
    a.tick();
    expect(keepalives()).toBe(k0);
    clock.advance(200);
    a.tick();
    expect(keepalives()).toBe(k0 + 1); // due on the device clock, not at 9e12
  });

  it('send errors: a failing initiation send is retried on the retransmit timer; the handshake completes once the plane sends again', () => {
    const clock = new ManualClock(10_000);
    const pa = new StubPlane();
    const pb = new StubPlane();
    const ka = generatePrivateKey();
    const kb = generatePrivateKey();
    const logs: LogRecord[] = [];
    const a = new Device({ privateKey: ka, plane: pa, clock, jitter: () => 0, logger: captureLogger(logs) });
    const b = new Device({ privateKey: kb, plane: pb, clock, jitter: () => 0 });
    const epA = { address: '10.0.0.1', port: 51820 };
    const epB = { address: '10.0.0.2', port: 51820 };
    const idB = a.addPeer({ publicKey: publicKeyFromPrivate(kb), endpoint: epB });
    b.addPeer({ publicKey: publicKeyFromPrivate(ka), endpoint: epA });
    // the plane's script: throw ENETUNREACH, then return false (an io drop), then send
    const script: ('throw' | 'false' | 'send')[] = ['throw', 'throw', 'false'];
    const send = pa.sendHandshake.bind(pa);
    let attempts = 0;
    pa.sendHandshake = ((to: Endpoint, data: Uint8Array) => {
      attempts++;
      const step = script.shift() ?? 'send';
      if (step === 'throw') throw Object.assign(new Error('sendHandshake: Network is unreachable'), { code: 'ENETUNREACH' });
      if (step === 'false') return false;
      send(to, data);
    }) as DataPlane['sendHandshake'];

    // need_handshake comes once (the C side's need_hs_signaled): the device must retry alone
    expect(() => pa.handler!([{ type: 'need_handshake', peer: idB }])).not.toThrow();
    expect(attempts).toBe(1);
    for (let i = 0; i < 3; i++) {
      clock.advance(REKEY_TIMEOUT + 1);
      expect(() => a.tick()).not.toThrow();
    }
    expect(attempts).toBe(4);
    expect(pa.sent.length).toBe(1);
    expect(a.sendErrors).toBe(3);
    expect(a.status().peers[0].initiationsSent).toBe(1);
    expect(logs.filter((r) => (r.obj as { event?: string }).event === 'send_failed').length).toBe(3);

    pb.handler!([{ type: 'handshake', data: pa.sent[0], from: epA }]);
    pa.handler!([{ type: 'handshake', data: pb.sent[0], from: epB }]);
    expect(a.status().peers[0].hasSession).toBe(true);
  });

  it('send errors: a tick whose plane calls throw does not throw (it runs inside setInterval) and serves the other peers', () => {
    const { plane, device, clock, id } = setup();
    const otherKey = publicKeyFromPrivate(generatePrivateKey());
    device.addPeer({ publicKey: otherKey, endpoint: { address: '10.0.0.3', port: 51820 } });
    plane.sendHandshake = () => {
      throw Object.assign(new Error('EAGAIN'), { code: 'EAGAIN' });
    };
    device.initiate(otherKey); // fails: counted, retransmit timer armed
    expect(device.sendErrors).toBe(1);
    const counters = plane.peerCounters.bind(plane);
    plane.peerCounters = (p: PeerId) => {
      if (p === id) throw new Error('EPERM');
      return counters(p);
    };
    clock.advance(REKEY_TIMEOUT + 1);
    expect(() => device.tick()).not.toThrow();
    expect(device.tickErrors).toBe(1); // the first peer
    expect(device.sendErrors).toBe(2); // the other peer's retry still ran
  });

  it('PeerId reuse: a stale endpoint event queued for a removed peer is not applied to the peer added after it', () => {
    const { plane, device, peerKey, id } = setup();
    expect(device.removePeer(peerKey)).toBe(true);
    const newKey = publicKeyFromPrivate(generatePrivateKey());
    const ep = { address: '10.0.0.7', port: 51820 };
    const id2 = device.addPeer({ publicKey: newKey, endpoint: ep });
    expect(id2).not.toBe(id);
    plane.handler!([{ type: 'endpoint', peer: id, endpoint: { address: '10.0.0.66', port: 666 } }]);
    expect(device.status().peers[0].endpoint).toEqual(ep);
  });

  it('psk zeroing: updatePeer and setPsk zero the psk bytes they replace', () => {
    const { device, peerKey } = setup();
    const other = publicKeyFromPrivate(generatePrivateKey());
    device.addPeer({ publicKey: other }); // follows the device psk
    const reg = (device as unknown as { registry: { byPublicKey(k: Uint8Array): { handshake: { psk: Uint8Array } } } }).registry;
    const pskOf = (k: string | Uint8Array) => reg.byPublicKey(typeof k === 'string' ? Buffer.from(k, 'base64') : k).handshake.psk;
    const devicePsk = () => (device as unknown as { devicePsk: Uint8Array }).devicePsk;

    device.updatePeer(peerKey, { psk: new Uint8Array(32).fill(1) });
    const own = pskOf(peerKey);
    expect(own.every((b) => b === 1)).toBe(true);
    device.updatePeer(peerKey, { psk: new Uint8Array(32).fill(2) });
    expect(own.every((b) => b === 0)).toBe(true); // the replaced array, zeroed
    expect(pskOf(peerKey).every((b) => b === 2)).toBe(true);

    device.setPsk(new Uint8Array(32).fill(3));
    const shared = pskOf(other);
    const oldDevice = devicePsk();
    device.setPsk(new Uint8Array(32).fill(4));
    expect(shared.every((b) => b === 0)).toBe(true);
    expect(oldDevice.every((b) => b === 0)).toBe(true);
    expect(pskOf(other).every((b) => b === 4)).toBe(true);
    expect(pskOf(peerKey).every((b) => b === 2)).toBe(true); // its own psk, untouched
  });

  it('removePeer tells the plane; close() removes every peer', async () => {
    const { plane, device, peerKey, id } = setup();
    const other = publicKeyFromPrivate(generatePrivateKey());
    const id2 = device.addPeer({ publicKey: other });
    expect(device.removePeer(peerKey)).toBe(true);
    expect(plane.calls.at(-1)).toEqual(['removePeer', id]);
    await device.close();
    expect(plane.calls.at(-1)).toEqual(['removePeer', id2]);
    expect(() => device.addPeer({ publicKey: peerKey })).toThrow(/closed/);
  });
});
