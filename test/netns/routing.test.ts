/**
 * Policy routing in a real namespace (root, iproute2):
 *
 *   [ ns "rt" ]                                   [ ns "peer" ]
 *     tenc0 (persistent tun, stands in for tenc's)
 *     eth0 10.77.0.1/24 fd00:77::1/64  ---veth---  eth0 10.77.0.2/24 fd00:77::2/64
 *     default via 10.77.0.2 / fd00:77::2
 *
 *  1. the MTU is computed from the egress interface (set to 1400 here, not 1500)
 *  2. install: project destinations go to tenc0, fwmarked packets and everything
 *     else follow the main table; teardown -> rules, routes, addresses, links and
 *     nft ruleset equal the snapshot taken before
 *  3. runtime add/remove with reference counts
 *  4. crash (no teardown): project destinations fail closed (unreachable, never
 *     out of eth0 in the clear); start again: the dead TUN's residue is removed,
 *     the rule and guards are adopted and never absent while the new run starts,
 *     a restart that fails before install leaves them (fail closed), and the
 *     final teardown leaves the namespace as it was
 * Each part twice: the steps dumping for themselves, and reading the start's routing
 * snapshot (src/routing/snapshot.ts: one `ip -batch` per family), as `tenc pod` does.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { Netns, destroyAll, veth, persistentTun, snapshot, requireRoot, requireTool, type NetSnapshot } from './lib.js';
import { IpCommand } from '../../src/routing/ip.js';
import { PolicyRouting } from '../../src/routing/policy.js';
import { computeMtu } from '../../src/routing/mtu.js';
import { readRoutingSnapshot } from '../../src/routing/snapshot.js';
import type { Endpoint } from '../../src/net/address.js';

const TABLE = 52100;
const PRIO = 5210;
const MARK = 0xcb84;
const DESTS = ['10.9.0.0/16', '10.96.0.10/32', 'fd00:9::/64'];
// The v6 pod address is on no interface: routing must put it on tenc0 (and take it away).
const ADDRESSES = { v4: '10.77.0.1', v6: 'fd00:77:1::1' };

let rt: Netns;
let peer: Netns;
let ip: IpCommand;

function routing(): PolicyRouting {
  return new PolicyRouting({ ifname: 'tenc0', table: TABLE, priority: PRIO, fwmark: MARK, addresses: ADDRESSES, ip });
}

function devFor(dst: string, mark?: number): string {
  const args = ['-j', 'route', 'get', dst, ...(mark !== undefined ? ['mark', String(mark)] : [])];
  return JSON.parse(rt.ip(...args))[0].dev;
}

function expectUnreachable(dsts: string[]): void {
  for (const dst of dsts) {
    const r = spawnSync('ip', ['-n', rt.name, 'route', 'get', dst], { encoding: 'utf8' });
    expect(r.status, `${dst}: ${r.stdout}`).not.toBe(0);
    expect(r.stderr).toMatch(/unreachable|No route to host/);
  }
}

function expectSame(after: NetSnapshot, before: NetSnapshot): void {
  for (const k of Object.keys(before) as (keyof NetSnapshot)[]) {
    expect(after[k], `snapshot field ${k}`).toBe(before[k]);
  }
}

beforeAll(() => {
  requireRoot();
  requireTool('ip');
  requireTool('nft');
  rt = Netns.create('rt');
  peer = Netns.create('peer');
  veth(rt, 'eth0', peer, 'eth0', 1400);
  rt.addAddresses('eth0', ['10.77.0.1/24', 'fd00:77::1/64']);
  peer.addAddresses('eth0', ['10.77.0.2/24', 'fd00:77::2/64']);
  rt.ip('route', 'add', 'default', 'via', '10.77.0.2');
  rt.ip('-6', 'route', 'add', 'default', 'via', 'fd00:77::2');
  persistentTun(rt, 'tenc0');
  ip = new IpCommand({ netns: rt.name });
});

afterAll(() => destroyAll());

for (const mode of ['own dumps', 'snapshot'] as const) {
  const snapOf = (endpoints: (Endpoint | null)[]) => (mode === 'snapshot' ? readRoutingSnapshot(ip, { table: TABLE, fwmark: MARK, endpoints }) : Promise.resolve(null));
  const mtuOf = async (endpoints: (Endpoint | null)[], fwmark: number, own: string[] = []) => {
    const snap = await snapOf(endpoints);
    if (mode === 'snapshot') expect(snap).not.toBeNull();
    return computeMtu(ip, endpoints, fwmark, own, snap);
  };
  const residueOf = async (r: PolicyRouting) => {
    const snap = await snapOf([]);
    if (mode === 'snapshot') expect(snap).not.toBeNull();
    return r.removeResidue(snap);
  };

  describe(`MTU (${mode})`, () => {
    it('is the egress MTU minus 60 for an IPv4 underlay', async () => {
      const m = await mtuOf([{ address: '10.77.0.2', port: 51820 }], MARK);
      expect(m).toMatchObject({ mtu: 1340, egress: 'eth0', egressMtu: 1400, underlay: 4 });
    });

    it('is the egress MTU minus 80 for an IPv6 underlay', async () => {
      const m = await mtuOf([null, { address: 'fd00:77::2', port: 51820 }], MARK);
      expect(m).toMatchObject({ mtu: 1320, egress: 'eth0', underlay: 6 });
    });

    it('follows the default route without peers (IPv6 overhead assumed), and tracks a changed egress MTU', async () => {
      rt.ip('link', 'set', 'dev', 'eth0', 'mtu', '1500');
      try {
        expect(await mtuOf([], MARK)).toMatchObject({ mtu: 1420, egress: 'eth0', underlay: 6 });
      } finally {
        rt.ip('link', 'set', 'dev', 'eth0', 'mtu', '1400');
      }
    });

    it('without peers or a default route: the interface holding the pod address', async () => {
      rt.ip('route', 'del', 'default');
      rt.ip('-6', 'route', 'del', 'default');
      try {
        await expect(mtuOf([], MARK)).rejects.toThrow(/cannot compute the MTU/);
        expect(await mtuOf([], MARK, ['10.77.0.1'])).toMatchObject({ mtu: 1320, egress: 'eth0', underlay: 6 });
        // with an endpoint whose route is missing, the pod address's interface and the endpoint's family
        expect(await mtuOf([{ address: '10.200.0.1', port: 1 }], MARK, ['10.77.0.1'])).toMatchObject({ mtu: 1340, underlay: 4 });
      } finally {
        rt.ip('route', 'add', 'default', 'via', '10.77.0.2');
        rt.ip('-6', 'route', 'add', 'default', 'via', 'fd00:77::2');
      }
    });
  });

  describe(`policy routing (${mode})`, () => {
    it('install steers only project destinations into tenc0; teardown restores the namespace exactly', async () => {
      const before = snapshot(rt);
      const r = routing();
      expect(await residueOf(r)).toEqual({ rules: 0, guards: 0, routes: 0, addresses: 0 });
      await r.install(1340, DESTS);

      expect(devFor('10.9.1.1')).toBe('tenc0');
      expect(devFor('10.96.0.10')).toBe('tenc0');
      expect(devFor('fd00:9::5')).toBe('tenc0');
      // tenc's own (marked) datagrams and unrelated traffic follow the main table
      expect(devFor('10.9.1.1', MARK)).toBe('eth0');
      expect(devFor('fd00:9::5', MARK)).toBe('eth0');
      expect(devFor('10.50.0.1')).toBe('eth0');
      expect(devFor('10.96.0.11')).toBe('eth0');
      // source selection: the pod's own addresses
      expect(JSON.parse(rt.ip('-j', 'route', 'get', '10.9.1.1'))[0].prefsrc).toBe('10.77.0.1');
      expect(JSON.parse(rt.ip('-j', 'route', 'get', 'fd00:9::5'))[0].prefsrc).toBe('fd00:77:1::1');
      expect(rt.ip('-4', 'rule', 'show')).toContain(`${PRIO}:\tnot from all fwmark 0x${MARK.toString(16)} lookup ${TABLE}`);
      expect(rt.ip('-6', 'rule', 'show')).toContain(`${PRIO}:\tnot from all fwmark 0x${MARK.toString(16)} lookup ${TABLE}`);
      expect(JSON.parse(rt.ip('-j', 'link', 'show', 'dev', 'tenc0'))[0].mtu).toBe(1340);
      // every destination has its fail-closed guard behind the tenc0 route
      const table = rt.ip('-4', 'route', 'show', 'table', String(TABLE)) + rt.ip('-6', 'route', 'show', 'table', String(TABLE));
      for (const d of DESTS) expect(table).toContain(`unreachable ${d.replace('/32', '')} `);

      await r.teardown();
      expectSame(snapshot(rt), before);
    });

    it('adds and removes routes at runtime, reference counted', async () => {
      const before = snapshot(rt);
      const r = routing();
      await r.install(1340, ['10.9.0.0/16']);
      await r.addRoutes(['10.20.0.5/32', '10.20.0.5/32', 'fd00:20::5/128']);
      expect(devFor('10.20.0.5')).toBe('tenc0');
      await r.removeRoute('10.20.0.5/32'); // one of two references
      expect(devFor('10.20.0.5')).toBe('tenc0');
      await r.removeRoute('10.20.0.5/32');
      expect(devFor('10.20.0.5')).toBe('eth0');
      await r.removeRoute('10.20.0.5/32'); // unknown now: ignored
      expect(devFor('fd00:20::5')).toBe('tenc0');
      expect(r.routes().sort()).toEqual(['10.9.0.0/16', 'fd00:20::5/128']);
      await r.teardown();
      expectSame(snapshot(rt), before);
    });

    it('a crashed run whose TUN vanished leaves rules and guards; the next start adopts them', async () => {
      const before = snapshot(rt);
      await routing().install(1340, DESTS); // never torn down
      // the process died: its TUN closed and took routes and addresses with it
      rt.ip('link', 'del', 'dev', 'tenc0');
      persistentTun(rt, 'tenc0');
      expect(rt.ip('-4', 'rule', 'show')).toContain(`lookup ${TABLE}`);
      // fail closed: project destinations are unreachable, not sent in the clear via eth0
      for (const dst of ['10.9.1.1', '10.96.0.10', 'fd00:9::5']) {
        const r = spawnSync('ip', ['-n', rt.name, 'route', 'get', dst], { encoding: 'utf8' });
        expect(r.status, `${dst}: ${r.stdout}`).not.toBe(0);
        expect(r.stderr).toMatch(/unreachable|No route to host/);
      }
      expect(devFor('10.50.0.1')).toBe('eth0'); // everything else untouched
      expect(devFor('10.9.1.1', MARK)).toBe('eth0'); // and tenc's own datagrams still leave

      const r = routing();
      expect(await residueOf(r)).toEqual({ rules: 2, guards: 3, routes: 0, addresses: 0 });
      expectUnreachable(['10.9.1.1', '10.96.0.10', 'fd00:9::5']); // adopted, not removed
      await r.guard(DESTS);
      await r.install(1340, DESTS);
      await r.teardown();
      expectSame(snapshot(rt), before);
    });

    it('restart fail-open: a restart failing between residue removal and install leaves project traffic unreachable, never out of eth0', async () => {
      const before = snapshot(rt);
      await routing().install(1340, DESTS); // crashed run
      rt.ip('link', 'del', 'dev', 'tenc0'); // its TUN went with it

      const r = routing();
      await residueOf(r);
      expectUnreachable(['10.9.1.1', '10.96.0.10', 'fd00:9::5']);
      await r.guard([...DESTS, '10.33.0.0/24']); // the new config adds a destination
      expectUnreachable(['10.9.1.1', '10.96.0.10', 'fd00:9::5', '10.33.0.7']);
      // opening the TUN fails now: the failed start tears down, keeping rule and guards
      await r.teardown({ keepGuards: true });
      expectUnreachable(['10.9.1.1', '10.96.0.10', 'fd00:9::5', '10.33.0.7']);
      expect(devFor('10.50.0.1')).toBe('eth0');

      // the next start adopts them; its clean stop removes everything
      persistentTun(rt, 'tenc0');
      const next = routing();
      expect(await residueOf(next)).toEqual({ rules: 2, guards: 4, routes: 0, addresses: 0 });
      await next.guard(DESTS);
      await next.install(1340, DESTS); // 10.33.0.0/24 is no destination any more: its guard goes
      expect(devFor('10.33.0.7')).toBe('eth0');
      expect(devFor('10.96.0.10')).toBe('tenc0');
      await next.teardown();
      expectSame(snapshot(rt), before);
    });

    it('failClosedOnStop: a stop with keepGuards leaves exactly the rules and guards', async () => {
      const before = snapshot(rt);
      const r = routing();
      await r.guard(DESTS);
      await r.install(1340, DESTS);
      await r.teardown({ keepGuards: true });
      expectUnreachable(['10.9.1.1', '10.96.0.10', 'fd00:9::5']);
      expect(rt.ip('-4', 'route', 'show', 'table', String(TABLE))).not.toContain('tenc0');
      const next = routing();
      expect(await residueOf(next)).toEqual({ rules: 2, guards: 3, routes: 0, addresses: 0 });
      await next.install(1340, []); // no destinations: the adopted guards go
      await next.teardown();
      expectSame(snapshot(rt), before);
    });

    it('a crashed run whose interface survived leaves rules, routes and addresses; the next start removes the routes and addresses, adopts rules and guards', async () => {
      const before = snapshot(rt);
      const crashed = routing();
      await crashed.install(1340, DESTS);
      await crashed.addRoute('10.30.0.0/24');

      const r = routing();
      expect(await residueOf(r)).toEqual({ rules: 2, guards: 4, routes: 4, addresses: 1 });
      expect(rt.ip('-4', 'rule', 'show')).toContain(`lookup ${TABLE}`); // adopted
      expect(rt.ip('-4', 'route', 'show', 'table', String(TABLE))).not.toContain('tenc0');
      expectUnreachable(['10.9.1.1', '10.30.0.1']);
      await r.guard(DESTS);
      await r.install(1340, DESTS);
      expect(devFor('10.30.0.1')).toBe('eth0'); // the crashed run's extra route is no destination now
      await r.teardown();
      const after = snapshot(rt);
      // tenc0's MTU/up state is what the crashed run left (the real TUN would be a new device)
      const notTenc = (s: string) => s.split('\n').filter((l) => !l.includes('tenc0')).join('\n');
      const strip = (x: NetSnapshot) => ({ ...x, links: notTenc(x.links), routes6: notTenc(x.routes6) });
      expectSame(strip(after), strip(before));
      rt.ip('link', 'del', 'dev', 'tenc0');
      persistentTun(rt, 'tenc0');
    });

    it('teardown goes on past a route someone else already deleted', async () => {
      const before = snapshot(rt);
      const r = routing();
      await r.install(1340, [...DESTS, '10.31.0.0/24', '10.32.0.0/24']);
      rt.ip('route', 'del', '10.31.0.0/24', 'dev', 'tenc0', 'table', String(TABLE));
      await r.teardown();
      expectSame(snapshot(rt), before);
    });

    it('leaves routes of the table through other devices alone', async () => {
      rt.ip('route', 'add', '10.40.0.0/24', 'dev', 'eth0', 'table', String(TABLE));
      try {
        expect(await residueOf(routing())).toEqual({ rules: 0, guards: 0, routes: 0, addresses: 0 });
        expect(rt.ip('-4', 'route', 'show', 'table', String(TABLE))).toContain('10.40.0.0/24 dev eth0');
      } finally {
        rt.ip('route', 'del', '10.40.0.0/24', 'dev', 'eth0', 'table', String(TABLE));
      }
    });
  });
}
