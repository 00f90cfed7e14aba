/**
 * What the registry backends say about a bad value (onProblem: every agent logs it):
 * never any part of a psk, and never more than a bounded cut of any value.
 *
 * The etcd backend parses each value once, when it arrives (snapshot or watch):
 * these tests hand values to that gate directly, without an etcd (no call is made
 * before the first read).
 */
import { describe, it, expect, afterEach } from 'vitest';
import { EtcdRegistry } from '../../src/registry/etcd.js';
import { parseEtcdSpec } from '../../src/registry/etcd-client.js';
import { peerFromObject, quote, QUOTE_MAX } from '../../src/registry/objects.js';
import { show, SHOW_MAX } from '../../src/net/parsed.js';

const KEY = 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=';

let open: EtcdRegistry[] = [];
afterEach(() => {
  for (const r of open) r.client.close();
  open = [];
});

/** An etcd registry that records its problems, and its parse-on-arrival gate. */
function etcdRegistry(): { put: (key: string, value: string) => void; problems: string[] } {
  const problems: string[] = [];
  const r = new EtcdRegistry(parseEtcdSpec('http://127.0.0.1:9'), { onProblem: (key, why) => problems.push(`${key}: ${why}`) });
  open.push(r);
  const gate = r as unknown as { put(key: string, value: string): void };
  return { put: (key, value) => gate.put(key, value), problems };
}

/** Every run of `n` characters of `secret` found in `text`. */
function runsOf(secret: string, text: string, n = 4): string[] {
  const out: string[] = [];
  for (let i = 0; i + n <= secret.length; i++) if (text.includes(secret.slice(i, i + n))) out.push(secret.slice(i, i + n));
  return out;
}

describe('registry problems never carry a secret, nor a whole long value', () => {
  it('a raw psk put where the psk Secret goes (etcdctl put /tenc/secrets/alpha/psk "$(cat psk)"): "not JSON", none of the psk', () => {
    const { put, problems } = etcdRegistry();
    const psks = [KEY, 'tXm4Pq0aZ7d2VfL1cR9sY8wE3uB6nJ5kH0gT2iO4yA8=', '1Zq9xW8vU7tS6rR5qP4oO3nN2mM1lL0kK9jJ8iI7hH6=', 'n0tjsonAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='];
    for (const psk of psks) {
      put('/tenc/secrets/alpha/psk', psk);
      put('/tenc/secrets/alpha/psk', `${psk}\n`);
      put('/tenc/secrets/alpha/psk', `{"data": {"psk": "${psk}"`); // cut short
    }
    expect(problems).toHaveLength(psks.length * 3);
    for (const p of problems) expect(p).toBe('/tenc/secrets/alpha/psk: not JSON');
    const text = problems.join('\n');
    for (const psk of psks) expect(runsOf(psk, text), psk).toEqual([]);
  });

  it('other keys still say where JSON.parse stopped (its message quotes at most a few characters)', () => {
    const { put, problems } = etcdRegistry();
    put('/tenc/pods/alpha/web', '{"metadata": ');
    expect(problems).toEqual([expect.stringMatching(/^\/tenc\/pods\/alpha\/web: not JSON: .+/)]);
  });

  it('quote(): a value longer than QUOTE_MAX is cut, with "..." and its full length', () => {
    expect(quote('10.0.0.1')).toBe('"10.0.0.1"');
    const long = 'x'.repeat(1_500_000);
    expect(quote(long)).toBe(`"${'x'.repeat(QUOTE_MAX - 1)}... (1500000 characters)`);
    expect(quote(Array(1000).fill(1))).toMatch(/^\[1,1,.*\.\.\. \(2001 characters of JSON\)$/);
    expect(quote(undefined)).toBe('undefined');
    // every parser's message (net/parsed.ts show): cut at SHOW_MAX, a path still whole
    expect(show('x'.repeat(1000))).toBe(`"${'x'.repeat(SHOW_MAX - 1)}... (1000 characters)`);
    const path = `/var/lib/tenc/${'p'.repeat(150)}/psk`;
    expect(show(path)).toBe(JSON.stringify(path));
  });

  it('a 1.5 MB bad peer value is cut in the problem (peerFromObject, and through the etcd gate)', () => {
    const huge = '1'.repeat(1_500_000);
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ pod: huge, publicKey: KEY, endpoint: '10.0.0.1:1' }, /^pod: "1{63}\.\.\. \(1500000 characters\) differs/],
      [{ pod: 'web', publicKey: Array(500_000).fill(7), endpoint: '10.0.0.1:1' }, /^publicKey: \[7,7,.*\.\.\. \(1000001 characters of JSON\) is not a string$/],
      [{ pod: 'web', publicKey: KEY, endpoint: huge }, /^endpoint: "1{199}\.\.\. \(1500000 characters\) has no port/],
      [{ pod: 'web', publicKey: KEY, endpoint: `10.0.0.1:${huge}` }, /^endpoint: "10\.0\.0\.1:1{190}\.\.\. \(1500009 characters\) has no valid port$/],
      [{ pod: 'web', publicKey: KEY, endpoint: { huge } }, /^endpoint: \{"huge":"1{191}\.\.\. \(1500011 characters of JSON\) is not a string$/],
    ];
    for (const [o, re] of bad) {
      const why = peerFromObject('alpha', 'node1', 'web', o);
      expect(why).toMatch(re);
      expect((why as string).length).toBeLessThan(300); // a pod name cut at QUOTE_MAX, a parser's quote at SHOW_MAX
    }
    // short values are quoted whole, as before
    expect(peerFromObject('alpha', 'node1', 'web', { pod: 'web', publicKey: KEY, endpoint: 'node1:51820' })).toBe('endpoint: "node1:51820" is not an IPv4/IPv6 address');
    const { put, problems } = etcdRegistry();
    put('/tenc/nodes/node1/peers/alpha/web', JSON.stringify({ pod: 'web', publicKey: KEY, endpoint: huge }));
    expect(problems).toHaveLength(1);
    expect(problems[0].length).toBeLessThan(400);
    expect(problems[0]).toMatch(/^\/tenc\/nodes\/node1\/peers\/alpha\/web: not a valid peer: endpoint: "1+\.\.\. \(1500000 characters\)/);
  });
});
