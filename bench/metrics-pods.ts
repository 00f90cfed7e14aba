/**
 * Stand-in pods for bench/metrics.ts: real control servers (src/control/socket.ts)
 * answering status with a report of N peers and DNS counters.
 * argv: PEERS SOCKET...; sends one IPC message when every socket listens.
 */
import { randomBytes } from 'node:crypto';
import { ControlServer } from '../src/control/socket.js';
import type { StatusReport } from '../src/control/status.js';

const [peersArg, ...sockets] = process.argv.slice(2);
const peers = Number(peersArg);
const started = Date.now();

function report(): StatusReport {
  const now = Date.now();
  return {
    interface: 'tenc0',
    publicKey: randomBytes(32).toString('base64'),
    listenPort: 51820,
    fwmark: 0x1234,
    mtu: 1420,
    addresses: ['10.0.0.1'],
    dataPlane: 'native, inject tun, tun offload on, udp gso on, udp gro on, aead direct-avx2',
    peers: Array.from({ length: peers }, (_, i) => ({
      publicKey: randomBytes(32).toString('base64'),
      endpoint: `10.0.${i >> 8}.${i & 255}:51820`,
      allowedIps: [`10.0.${i >> 8}.${i & 255}/32`],
      latestHandshake: now - i * 1000,
      rxBytes: i * 123456,
      txBytes: i * 654321,
      persistentKeepalive: 0,
      drops: {},
    })),
    services: [],
    drops: { plaintext_from_project: 1, no_peer: 2 },
    handshakeFailures: {},
    dns: { domain: 'bench.svc.cluster.local', upstreams: ['10.0.0.53'], port: 53, counters: { queriesUdp: 1, queriesTcp: 0, answered: 1, rewritten: 0, servfail: 0, routesHeld: 0, drops: {} } },
    pid: process.pid,
    startTime: started,
    enforce: true,
  };
}

const servers = await Promise.all(
  sockets.map((path) => {
    const r = report();
    return ControlServer.start({ path, addresses: { v4: '10.0.0.1', v6: null }, handler: { status: () => r, setPeer: () => {}, removePeer: () => false, setServices: () => {} } });
  }),
);
process.send?.('ready');
process.on('SIGTERM', () => {
  void Promise.all(servers.map((s) => s.close())).then(() => process.exit(0));
});
