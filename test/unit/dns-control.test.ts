/** The control socket's set-endpoints op (src/control/socket.ts dispatch) over a fake handler. */
import { describe, it, expect } from 'vitest';
import { dispatch, type ControlHandler } from '../../src/control/socket.js';
import type { ServiceEndpoints } from '../../src/dns/service.js';

function handler(withDns: boolean): ControlHandler & { got: ServiceEndpoints[][] } {
  const got: ServiceEndpoints[][] = [];
  const h: ControlHandler & { got: ServiceEndpoints[][] } = {
    got,
    status: () => ({}) as never,
    setPeer: () => {},
    removePeer: () => true,
    setServices: () => {},
  };
  if (withDns) h.setEndpoints = (e) => void got.push(e);
  return h;
}
const addresses = { v4: '10.77.0.1', v6: null };

describe('control: set-endpoints', () => {
  it('validates and hands canonical endpoints to the pod', async () => {
    const h = handler(true);
    await dispatch(h, addresses, { op: 'set-endpoints', endpoints: [{ vip: '10.96.0.20', addresses: ['10.77.0.2', 'fd00:77:0::2'] }] });
    expect(h.got).toEqual([[{ vip: '10.96.0.20', addresses: ['10.77.0.2', 'fd00:77::2'] }]]);
  });
  it('rejects bad requests with EINVAL and field paths', async () => {
    const h = handler(true);
    await expect(dispatch(h, addresses, { op: 'set-endpoints', endpoints: [{ vip: 'x', addresses: [] }] })).rejects.toMatchObject({
      code: 'EINVAL',
      message: expect.stringContaining('endpoints[0].vip'),
    });
    await expect(dispatch(h, addresses, { op: 'set-endpoints', endpoints: [], extra: 1 })).rejects.toMatchObject({ code: 'EINVAL' });
    expect(h.got).toEqual([]);
  });
  it('a pod without the DNS proxy fails the request', async () => {
    await expect(dispatch(handler(false), addresses, { op: 'set-endpoints', endpoints: [] })).rejects.toThrow(/no DNS proxy/);
  });
});

describe('control: set-members', () => {
  it('validates and hands canonical CIDRs to the pod; bad ones are EINVAL with the index', async () => {
    const got: string[][] = [];
    const h: ControlHandler = { ...handler(true), setMembers: (m) => void got.push(m) };
    await dispatch(h, addresses, { op: 'set-members', members: ['10.128.1.10', '10.96.1.10/32', 'fd00:0::5'] });
    expect(got).toEqual([['10.128.1.10/32', '10.96.1.10/32', 'fd00::5/128']]);
    await expect(dispatch(h, addresses, { op: 'set-members', members: ['10.0.0.1', 'x'] })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringContaining('members[1]') });
    await expect(dispatch(h, addresses, { op: 'set-members', members: '10.0.0.1' })).rejects.toMatchObject({ code: 'EINVAL' });
    expect(got).toHaveLength(1);
    await expect(dispatch(handler(false), addresses, { op: 'set-members', members: [] })).rejects.toThrow(/no DNS proxy/);
  });
});

describe('status: the DNS proxy in the text form', () => {
  it('shows domain, upstreams, counters and drops only when the proxy runs', async () => {
    const { formatStatus } = await import('../../src/control/status.js');
    const base = { interface: 'tenc0', publicKey: 'k', listenPort: 1, fwmark: 1, mtu: 1420, addresses: [], dataPlane: 'x', peers: [], services: [], drops: {}, handshakeFailures: {} };
    expect(formatStatus(base)).not.toContain('dns');
    const text = formatStatus({
      ...base,
      dns: {
        domain: 'alpha.svc.cluster.local',
        upstreams: ['10.96.0.10:53'],
        port: 15353,
        counters: { queriesUdp: 7, queriesTcp: 2, answered: 8, rewritten: 3, servfail: 1, routesHeld: 2, drops: { malformed: 4 } },
      },
    });
    expect(text).toContain('  dns: alpha.svc.cluster.local via 10.96.0.10:53, proxy port 15353\n');
    expect(text).toContain('  dns queries: 7 udp, 2 tcp; 8 answered, 3 rewritten, 1 servfail; 2 learned routes\n');
    expect(text).toMatch(/dns drops: .*malformed/);
  });
});
