/**
 * The directory and etcd backends take the objects the Kubernetes backend takes, with
 * its rules (objects.ts), so the agent never tells a pod a value it refuses:
 *  - a headless Service (clusterIP "None") is left out, not routed as VIP "None" (the
 *    pod refused the set-peer with "None/32" in its allowed IPs, and apply() stopped
 *    there for every client pod); a clusterIP that is not an IP is refused, reported;
 *  - a pod finished (Succeeded, Failed) or being deleted is left out; an address that
 *    is not an IP is refused, reported; "" is no address yet;
 *  - an endpoint whose address is not an IP is left out, reported; ports outside
 *    1-65535 or listed twice are dropped;
 *  - the etcd backend's psk Secret must be canonical base64 and not all zeros.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DirectoryRegistry } from '../../src/registry/dir.js';
import { EtcdRegistry } from '../../src/registry/etcd.js';
import { parseEtcdSpec } from '../../src/registry/etcd-client.js';
import { FakeEtcd } from './etcd-fake.js';
import { podFromObject, serviceFromObject } from '../../src/registry/objects.js';
import type { PodInfo, ServiceInfo } from '../../src/registry/registry.js';

const cleanup: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function dirWith(objects: Record<string, unknown>): { reg: DirectoryRegistry; problems: string[] } {
  const dir = mkdtempSync(join(tmpdir(), 'tenc-objects-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  for (const [rel, o] of Object.entries(objects)) {
    mkdirSync(join(dir, rel, '..'), { recursive: true });
    writeFileSync(join(dir, rel), JSON.stringify(o));
  }
  const problems: string[] = [];
  return { reg: new DirectoryRegistry(dir, { onProblem: (f, why) => problems.push(`${f.slice(dir.length + 1)}: ${why}`) }), problems };
}

const svc = (name: string, clusterIP: unknown, ports: unknown[] = [{ protocol: 'TCP', port: 80 }]) => ({ metadata: { name }, spec: { clusterIP, ports, selector: { app: name } } });
const pod = (name: string, status: Record<string, unknown>, meta: Record<string, unknown> = {}) => ({ metadata: { name, ...meta }, spec: { nodeName: 'n1' }, status });

describe('directory backend: the Kubernetes backend\'s rules', () => {
  it('a headless Service (clusterIP "None") is left out, not given VIP "None"; a clusterIP that is not an IP is reported', async () => {
    const { reg, problems } = dirWith({
      'services/alpha/web.json': svc('web', '10.96.0.10'),
      'services/alpha/db.json': svc('db', 'None'),
      'services/alpha/ext.json': { metadata: { name: 'ext' }, spec: { type: 'ExternalName', ports: [] } },
      'services/alpha/bad.json': svc('bad', 'ten.96.0.1'),
    });
    expect((await reg.services('alpha')).map((s) => [s.name, s.vip])).toEqual([['web', '10.96.0.10']]);
    expect(problems).toEqual(['services/alpha/bad.json: spec.clusterIP: "ten.96.0.1" is not an IP address: ignored']);
  });

  it('ports outside 1-65535 or listed twice are dropped (the pod refuses them in set-services)', async () => {
    const { reg } = dirWith({
      'services/alpha/web.json': svc('web', '10.96.0.10', [{ protocol: 'TCP', port: 80 }, { protocol: 'TCP', port: 80 }, { protocol: 'UDP', port: 0 }, { protocol: 'UDP', port: 70000 }, { port: 443 }, { protocol: 'SCTP', port: 9 }]),
    });
    expect((await reg.services('alpha'))[0]!.ports).toEqual([{ protocol: 'tcp', port: 80 }, { protocol: 'tcp', port: 443 }]);
  });

  it('pods: finished or being deleted left out; an address that is not an IP reported; "" is no address yet', async () => {
    const { reg, problems } = dirWith({
      'pods/alpha/web.json': pod('web', { phase: 'Running', podIP: '10.128.1.10', podIPs: [{ ip: '10.128.1.10' }, { ip: 'fd00::a' }, { ip: 'fd00::a' }] }),
      'pods/alpha/done.json': pod('done', { phase: 'Succeeded', podIP: '10.128.1.11' }),
      'pods/alpha/failed.json': pod('failed', { phase: 'Failed', podIP: '10.128.1.12' }),
      'pods/alpha/going.json': pod('going', { phase: 'Running', podIP: '10.128.1.13' }, { deletionTimestamp: '2025-01-01T00:00:00Z' }),
      'pods/alpha/pending.json': pod('pending', { phase: 'Pending', podIP: '' }),
      'pods/alpha/junk.json': pod('junk', { phase: 'Running', podIP: 'not-an-ip' }),
    });
    expect((await reg.pods('alpha')).map((p) => [p.name, p.addresses])).toEqual([['web', ['10.128.1.10', 'fd00::a']]]);
    expect(problems).toEqual(['pods/alpha/junk.json: status.podIP(s): "not-an-ip" not an IP address: ignored']);
  });

  it('an endpoint whose address is not an IP is left out and reported; the others kept', async () => {
    const { reg, problems } = dirWith({
      'endpointslices/alpha/web.json': {
        metadata: { name: 'web', labels: { 'kubernetes.io/service-name': 'web' } },
        addressType: 'IPv4',
        endpoints: [
          { addresses: ['10.128.1.10'], targetRef: { kind: 'Pod', name: 'web-1' }, nodeName: 'n1' },
          { addresses: ['web-2.example'], targetRef: { kind: 'Pod', name: 'web-2' }, nodeName: 'n1' },
        ],
      },
      'endpointslices/alpha/fqdn.json': { metadata: { name: 'fqdn', labels: { 'kubernetes.io/service-name': 'x' } }, addressType: 'FQDN', endpoints: [{ addresses: ['a.example'], targetRef: { name: 'a' } }] },
    });
    expect(await reg.endpoints('alpha')).toEqual([{ project: 'alpha', service: 'web', pods: [{ name: 'web-1', address: '10.128.1.10', node: 'n1' }] }]);
    expect(problems).toEqual(['endpointslices/alpha/web.json: endpoint address "web-2.example" is not an IP address: that endpoint ignored']);
  });
});

describe('objects: a bad part is left out and reported, never thrown or the whole object', () => {
  it('serviceFromObject: a port entry that is not an object (null, a number, a string) is dropped and reported, not thrown', () => {
    const problems: string[] = [];
    const s = serviceFromObject('alpha', svc('web', '10.96.0.10', [null, 7, 'x', { protocol: 'TCP', port: 80 }]), (why) => problems.push(why));
    expect((s as ServiceInfo).ports).toEqual([{ protocol: 'tcp', port: 80 }]);
    expect(problems).toEqual(['spec.ports: entry null is not an object: that port ignored', 'spec.ports: entry 7 is not an object: that port ignored', 'spec.ports: entry "x" is not an object: that port ignored']);
    // nothing usable left (every entry bad, or SCTP only): refused, never "no ports", which a
    // pod reads as every TCP and UDP port of the VIP
    expect(serviceFromObject('alpha', svc('web', '10.96.0.10', [null]))).toBe('spec.ports: no TCP or UDP port 1..65535');
    const sctp: string[] = [];
    expect(serviceFromObject('alpha', svc('diameter', '10.96.0.11', [{ protocol: 'SCTP', port: 3868 }]), (why) => sctp.push(why))).toBe('spec.ports: no TCP or UDP port 1..65535');
    expect(sctp).toEqual(['spec.ports: protocol "SCTP" of port 3868 is not TCP or UDP: that port ignored']);
    const mixed: string[] = [];
    expect((serviceFromObject('alpha', svc('m', '10.96.0.12', [{ protocol: 'SCTP', port: 1 }, { port: 70000 }, { protocol: 'UDP', port: 53 }]), (why) => mixed.push(why)) as ServiceInfo).ports).toEqual([{ protocol: 'udp', port: 53 }]);
    expect(mixed).toEqual(['spec.ports: protocol "SCTP" of port 1 is not TCP or UDP: that port ignored', 'spec.ports: port 70000 is not a port 1..65535: ignored']);
  });

  it('a directory Service file with ports [null]: the project\'s services are still read, the entry reported', async () => {
    const { reg, problems } = dirWith({
      'services/alpha/web.json': svc('web', '10.96.0.10', [null, { protocol: 'UDP', port: 53 }]),
      'services/alpha/db.json': svc('db', '10.96.0.20'),
    });
    expect((await reg.services('alpha')).map((s) => [s.name, s.ports])).toEqual([
      ['db', [{ protocol: 'tcp', port: 80 }]],
      ['web', [{ protocol: 'udp', port: 53 }]],
    ]);
    expect(problems).toEqual(['services/alpha/web.json: spec.ports: entry null is not an object: that port ignored']);
  });

  it('a directory object whose reading throws (any shape not foreseen) is reported and skipped, the others read', async () => {
    const { reg, problems } = dirWith({ 'services/alpha/a.json': svc('a', '10.96.0.10'), 'services/alpha/b.json': svc('b', '10.96.0.11') });
    const parsed = (reg as unknown as { parsed: (kind: string, project: string, parse: (p: string, o: { metadata: { name: string } }) => unknown) => unknown[] }).parsed.bind(reg);
    const out = parsed('services', 'alpha', (_p, o) => {
      if (o.metadata.name === 'a') throw new Error('not foreseen');
      return { name: o.metadata.name };
    });
    expect(out).toEqual([{ name: 'b' }]);
    expect(problems).toEqual(['services/alpha/a.json: cannot be read (not foreseen): ignored']);
  });

  it('a pod with one bad podIPs entry is kept with its good addresses, the bad one reported (as the Kubernetes backend)', async () => {
    const status = { phase: 'Running', podIP: '10.128.1.10', podIPs: [{ ip: '10.128.1.10' }, { ip: 'fd00::zz' }, { ip: 'fd00::a' }] };
    const problems: string[] = [];
    expect((podFromObject('alpha', pod('web', status), (why) => problems.push(why)) as PodInfo).addresses).toEqual(['10.128.1.10', 'fd00::a']);
    expect(problems).toEqual(['status.podIP(s): "fd00::zz" not an IP address: those addresses ignored']);
    const d = dirWith({ 'pods/alpha/web.json': pod('web', status) });
    expect((await d.reg.pods('alpha')).map((p) => [p.name, p.address, p.addresses])).toEqual([['web', '10.128.1.10', ['10.128.1.10', 'fd00::a']]]);
    expect(d.problems).toEqual(['pods/alpha/web.json: status.podIP(s): "fd00::zz" not an IP address: those addresses ignored']);
  });

  it('a Service without a selector is left out and reported (as the Kubernetes backend)', async () => {
    const noSel = (name: string, selector: unknown) => ({ metadata: { name }, spec: { clusterIP: '10.96.0.30', ports: [{ port: 80 }], ...(selector === undefined ? {} : { selector }) } });
    for (const sel of [undefined, null, {}]) {
      const problems: string[] = [];
      expect(serviceFromObject('alpha', noSel('ext', sel), (why) => problems.push(why))).toBeNull();
      expect(problems).toEqual(['no selector: left out (tenc routes only services that select pods)']);
    }
    const { reg, problems } = dirWith({ 'services/alpha/ext.json': noSel('ext', undefined), 'services/alpha/web.json': svc('web', '10.96.0.10') });
    expect((await reg.services('alpha')).map((s) => s.name)).toEqual(['web']);
    expect(problems).toEqual(['services/alpha/ext.json: no selector: left out (tenc routes only services that select pods)']);
  });
});

describe('etcd backend: the psk Secret', () => {
  it('is refused when all zeros or not canonical base64 (as the pods parse it), taken when canonical', async () => {
    const etcd = new FakeEtcd();
    await etcd.start();
    cleanup.push(() => etcd.stop());
    const secretDir = mkdtempSync(join(tmpdir(), 'tenc-objects-psk-'));
    cleanup.push(() => rmSync(secretDir, { recursive: true, force: true }));
    const psk = (v: string) => JSON.stringify({ data: { psk: Buffer.from(`${v}\n`).toString('base64') } });
    for (const p of ['zero', 'loose', 'good']) etcd.put(`/tenc/projects/${p}`, '{}');
    etcd.put('/tenc/secrets/zero/psk', psk(Buffer.alloc(32).toString('base64')));
    // "...B=": the last character carries bits a canonical key has as zero (decodes leniently to the bytes of "...A=")
    etcd.put('/tenc/secrets/loose/psk', psk('A'.repeat(42) + 'B='));
    etcd.put('/tenc/secrets/good/psk', psk('A'.repeat(42) + 'E='));
    const problems: string[] = [];
    const r = new EtcdRegistry(parseEtcdSpec(etcd.endpoint), { secretDir, onProblem: (k, why) => problems.push(`${k}: ${why}`) });
    cleanup.push(() => r.close());
    await expect(r.pskFile('zero')).rejects.toThrow(/no valid psk Secret/);
    await expect(r.pskFile('loose')).rejects.toThrow(/no valid psk Secret/);
    expect(await r.pskFile('good')).toBe(join(secretDir, 'good.psk'));
    expect(problems.filter((p) => /secrets\/(zero|loose)\/psk: not a valid psk Secret/.test(p))).toHaveLength(2);
  });
});
