/**
 * One side of the engine netns test (test/netns/engine.test.ts), run inside a
 * namespace with `ip netns exec NS node --import engine-register.mjs engine-child.ts CONFIG`.
 * Opens tenc0 + UDP (+ raw) sockets and a NativePlane with a STATIC keypair (no
 * handshake), prints one JSON line {ready, tun, udp}, then answers JSON line
 * commands on stdin:
 *   {cmd:'stats'}            -> {peer, drops, peerDrops, stats, events}
 *   {cmd:'send', hex}        -> sends raw bytes from the engine's UDP socket to the peer endpoint
 *   {cmd:'keepalive'}        -> {sent}
 *   {cmd:'services', services} -> setLocalServices(services)
 *   {cmd:'setSend', localIndex} -> setSendKeypair (null stops sending)
 *   {cmd:'flush'}            -> flushQueue
 *   {cmd:'setEndpoint', address, port} -> setEndpoint
 *   {cmd:'close'}            -> closes the plane and exits 0
 */
import { createInterface } from 'node:readline';
import { openNativePlane } from '../../src/dataplane/native.js';
import type { LocalService, PlaneEvent } from '../../src/device/plane.js';

interface KeypairHex {
  localIndex: number;
  remoteIndex: number;
  sendKey: string;
  recvKey: string;
}
export interface ChildConfig {
  mode: 'raw' | 'tun';
  offloads: boolean;
  listenPort: number;
  fwmark: number;
  peer: { id: number; endpoint: { address: string; port: number }; allowedIps: string[] };
  keypair: KeypairHex;
  /** Extra receive-only keypairs of the same peer (for crafted datagrams). */
  extra: KeypairHex[];
  /** Install the keypair but do not make it the send keypair (packets queue). */
  noSend?: boolean;
}

const cfg = JSON.parse(process.argv[2] ?? '') as ChildConfig;
const out = (o: unknown): void => {
  process.stdout.write(JSON.stringify(o) + '\n');
};
const kp = (k: KeypairHex) => ({
  localIndex: k.localIndex,
  remoteIndex: k.remoteIndex,
  sendKey: Buffer.from(k.sendKey, 'hex'),
  recvKey: Buffer.from(k.recvKey, 'hex'),
});

const plane = openNativePlane({
  listenPort: cfg.listenPort,
  fwmark: cfg.fwmark,
  mode: cfg.mode,
  offloads: cfg.offloads,
});
const events: PlaneEvent[] = [];
plane.onEvents((evs) => events.push(...evs));
plane.addPeer(cfg.peer.id, cfg.peer.endpoint);
for (const c of cfg.peer.allowedIps) plane.addAllowedIp(cfg.peer.id, c);
plane.addKeypair(cfg.peer.id, kp(cfg.keypair));
for (const k of cfg.extra) plane.addKeypair(cfg.peer.id, kp(k));
if (!cfg.noSend) plane.setSendKeypair(cfg.peer.id, cfg.keypair.localIndex);
out({ ready: true, tun: plane.tun, udp: plane.udp });

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const m = JSON.parse(line) as {
    cmd: string;
    hex?: string;
    services?: LocalService[];
    localIndex?: number | null;
    address?: string;
    port?: number;
  };
  try {
    if (m.cmd === 'stats') {
      out({
        peer: plane.peerCounters(cfg.peer.id),
        drops: plane.drops(),
        peerDrops: plane.peerDrops(cfg.peer.id),
        stats: plane.stats(),
        events: events.map((e) => (e.type === 'handshake' ? { ...e, data: Buffer.from(e.data).toString('hex') } : e)),
      });
    } else if (m.cmd === 'send') {
      plane.sendHandshake(cfg.peer.endpoint, Buffer.from(m.hex ?? '', 'hex'));
      out({ ok: true });
    } else if (m.cmd === 'services') {
      plane.setLocalServices(m.services ?? []);
      out({ ok: true });
    } else if (m.cmd === 'setSend') {
      plane.setSendKeypair(cfg.peer.id, m.localIndex ?? null);
      out({ ok: true });
    } else if (m.cmd === 'setEndpoint') {
      plane.setEndpoint(cfg.peer.id, { address: m.address ?? '', port: m.port ?? 0 });
      out({ ok: true });
    } else if (m.cmd === 'flush') {
      plane.flushQueue(cfg.peer.id);
      out({ ok: true });
    } else if (m.cmd === 'keepalive') {
      out({ sent: plane.sendKeepalive(cfg.peer.id) });
    } else if (m.cmd === 'close') {
      void plane.close().then(() => {
        out({ closed: true });
        process.exit(0);
      });
    } else {
      out({ error: `unknown command ${m.cmd}` });
    }
  } catch (err) {
    out({ error: String(err), code: (err as { code?: string }).code });
  }
});
rl.on('close', () => {
  void plane.close().then(() => process.exit(0));
});
