/**
 * A pod whose DNS proxy sends to an upstream that a set-peer or set-services would make
 * a project destination: refused (the upstream sockets carry the fwmark, so those
 * queries would leave outside the tunnel in plaintext). Fakes for engine and routing.
 */
import { describe, it, expect, afterAll } from 'vitest';
import { Pod } from '../../src/control/pod.js';
import { interceptTable } from '../../src/dns/intercept.js';
import { validateConfig } from '../../src/control/config.js';
import type { PodEngine } from '../../src/control/engine.js';
import type { PolicyRouting } from '../../src/routing/policy.js';
import type { DnsService } from '../../src/dns/service.js';
import { silentLogger } from '../../src/log.js';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = mkdtempSync(join(tmpdir(), 'tenc-pod-upstream-'));
writeFileSync(join(dir, 'psk'), Buffer.alloc(32, 7).toString('base64') + '\n', { mode: 0o600 });
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const KEY_A = 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo='; // RFC 7748 §6.1 Alice's public key, base64

function pod(upstreams: string[]): { pod: Pod; calls: string[] } {
  const calls: string[] = [];
  const engine = {
    description: 'fake',
    setPeer: () => void calls.push('engine.setPeer'),
    removePeer: () => true,
    setServices: () => void calls.push('engine.setServices'),
    peerStatuses: () => new Map(),
    drops: () => ({}),
    handshakeFailures: () => ({}),
    close: async () => {},
  } satisfies PodEngine;
  const routing = {
    addRoutes: async (c: string[]) => void calls.push(`addRoutes ${c.join(',')}`),
    removeRoute: async () => {},
  } as unknown as PolicyRouting;
  const config = validateConfig({ addresses: ['10.77.0.1', 'fd00:77::1'], pskFile: 'psk' }, join(dir, 'pod.json'));
  const p = new Pod(config, KEY_A, 1420, engine, routing, silentLogger);
  p.dns = { upstreams, membershipChanged: () => {} } as unknown as DnsService;
  return { pod: p, calls };
}

describe('pod: a DNS upstream never becomes a project destination', () => {
  it('upstream leak: set-peer whose allowed IPs cover an upstream (resolv.conf or config) is refused, nothing changed', async () => {
    const { pod: p, calls } = pod(['10.96.0.10:53', 'fd00:96::a:53']);
    await expect(p.setPeer({ publicKey: KEY_A, allowedIps: ['10.77.0.2/32', '10.96.0.0/24'] })).rejects.toThrow(
      /^allowedIps: DNS upstream 10\.96\.0\.10 would be a project destination \(allowedIps 10\.96\.0\.0\/24\): .*plaintext/,
    );
    await expect(p.setPeer({ publicKey: KEY_A, allowedIps: ['fd00:96::/64'] })).rejects.toThrow(/DNS upstream fd00:96::a /);
    expect(calls).toEqual([]);
    expect(p.peers.size).toBe(0);
    await p.setPeer({ publicKey: KEY_A, allowedIps: ['10.77.0.2/32'] });
    expect(calls).toEqual(['engine.setPeer', 'addRoutes 10.77.0.2/32']);
  });

  it('upstream leak: set-services with an upstream as VIP is refused', async () => {
    const { pod: p, calls } = pod(['10.96.0.10:53']);
    const svc = (vip: string) => ({ vip, localAddress: '10.77.0.1', ports: [] });
    await expect(p.setServices([svc('10.96.0.20'), svc('10.96.0.10')])).rejects.toThrow(/^services: DNS upstream 10\.96\.0\.10 .*\(vip 10\.96\.0\.10\)/);
    expect(calls).toEqual([]);
    await p.setServices([svc('10.96.0.20')]);
    expect(p.services.length).toBe(1);
  });

  it('without a DNS proxy nothing is refused', async () => {
    const { pod: p } = pod([]);
    p.dns = null;
    await p.setPeer({ publicKey: KEY_A, allowedIps: ['10.96.0.0/24'] });
    expect(p.peers.size).toBe(1);
  });
});

describe('pod without DNS: the interception residue table name', () => {
  it('interceptTable (dns/intercept.ts: the proxy and the residue cleanup of a pod without DNS) names the table', () => {
    const names = ['tenc0', 'tenc-1', 'a.b', 'x_y9'].map(interceptTable);
    expect(names).toEqual(['tenc_dns_tenc0', 'tenc_dns_tenc_1', 'tenc_dns_a_b', 'tenc_dns_x_y9']);
    expect(interceptTable('tenc-1')).toBe('tenc_dns_tenc_1');
  });
});
