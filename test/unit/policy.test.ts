/**
 * PolicyRouting over a fake `ip` whose batches take time, so concurrent callers
 * (a set-peer on the control socket, a DNS answer, a TTL expiry) interleave.
 */
import { describe, it, expect } from 'vitest';
import { PolicyRouting } from '../../src/routing/policy.js';
import type { IpCommand } from '../../src/routing/ip.js';

function fakeIp(lines: string[]): IpCommand {
  const fake = {
    async json(args: string[]) {
      return args[0] === 'link' ? [{ mtu: 1500, flags: [] }] : [];
    },
    async run(args: string[]) {
      lines.push(`run ${args.join(' ')}`);
    },
    async batch(fam: number, batch: string[]) {
      await new Promise((r) => setTimeout(r, 5));
      for (const l of batch) lines.push(`-${fam} ${l}`);
    },
  };
  return fake as unknown as IpCommand;
}

function routing(lines: string[]): PolicyRouting {
  return new PolicyRouting({ ifname: 'tenc0', table: 52100, priority: 5210, fwmark: 0xcb84, addresses: { v4: '10.1.0.1', v6: null }, ip: fakeIp(lines) });
}

describe('PolicyRouting reference counts under concurrent changes', () => {
  it('race: two concurrent adds of one route keep two references; one remove leaves route and guard', async () => {
    const lines: string[] = [];
    const r = routing(lines);
    await r.install(1420, []);
    await Promise.all([r.addRoutes(['10.0.0.5/32']), r.addRoutes(['10.0.0.5/32'])]);
    lines.length = 0;
    await r.removeRoute('10.0.0.5/32');
    expect(r.routes()).toEqual(['10.0.0.5/32']);
    expect(lines).toEqual([]); // neither the route nor its guard deleted
    await r.removeRoute('10.0.0.5/32');
    expect(r.routes()).toEqual([]);
    expect(lines.filter((l) => l.includes('del')).length).toBe(2); // route and guard
  });

  it('race: a remove racing an add of the same route ends with the route installed (count 1)', async () => {
    const lines: string[] = [];
    const r = routing(lines);
    await r.install(1420, ['10.0.0.6/32']);
    lines.length = 0;
    await Promise.all([r.removeRoute('10.0.0.6/32'), r.addRoutes(['10.0.0.6/32']), r.addRoutes(['10.0.0.7/32'])]);
    expect(r.routes().sort()).toEqual(['10.0.0.6/32', '10.0.0.7/32']);
    // the last word on 10.0.0.6 is a replace (route back after the delete)
    const last = lines.filter((l) => l.includes('10.0.0.6/32 dev')).at(-1);
    expect(last).toMatch(/route replace 10\.0\.0\.6\/32 dev tenc0/);
    await r.removeRoute('10.0.0.6/32');
    await r.removeRoute('10.0.0.7/32');
    expect(r.routes()).toEqual([]);
  });

  it('a failing change does not block the ones queued after it', async () => {
    const lines: string[] = [];
    const r = routing(lines);
    await r.install(1420, []);
    await expect(Promise.all([r.addRoutes(['not-a-cidr']), r.addRoutes(['10.0.0.8/32'])])).rejects.toThrow(TypeError);
    await r.addRoutes(['10.0.0.9/32']);
    expect(r.routes().sort()).toEqual(['10.0.0.8/32', '10.0.0.9/32']);
  });
});
